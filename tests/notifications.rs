//! People learn that a Git user token needs attention — on the page (a
//! banner and a badge per row), in the API, and by one mail per batch of
//! changes through a real SMTP server (aiosmtpd, started by the test) — and
//! when it works again; never for runtimes whose notifications they hid,
//! never for a temporary check failure, never with a token in it. Admins
//! see Git Runtime tokens needing attention and per runtime the users'
//! tokens that do, and get a mail when a Git Runtime token breaks.
#![allow(
    clippy::disallowed_methods,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code
)]

mod support;

use gitbroker::clock::ManualClock;
use serde_json::{Value, json};
use std::io::BufRead;
use std::path::PathBuf;
use std::sync::Arc;
use support::*;

const ALICE: &str = "u-1001";

/// aiosmtpd on a loopback port, writing each message it accepts to a file.
struct Smtp {
    child: std::process::Child,
    port: u16,
    file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Smtp {
    fn start() -> Smtp {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = root.join("target/py/bin/python");
        assert!(
            python.exists(),
            "{} is missing: run scripts/test.sh, which creates it with aiosmtpd",
            python.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mails.jsonl");
        let mut child = std::process::Command::new(python)
            .arg(root.join("tests/smtp_sink.py"))
            .arg(&file)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the SMTP sink prints its port");
        Smtp {
            child,
            port,
            file,
            _dir: dir,
        }
    }

    fn mails(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.file)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn toml(&self, extra: &str) -> String {
        format!(
            "[notifications]\ndigest_delay_secs = 1\n{extra}\n[notifications.smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nfrom = \"gitbroker <gitbroker@example.com>\"\n",
            self.port
        )
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The decoded subject and body of a mail.
fn subject_and_body(mail: &Value) -> (String, String) {
    let data = mail["data"].as_str().unwrap();
    let (head, body) = data
        .split_once("\r\n\r\n")
        .or_else(|| data.split_once("\n\n"))
        .unwrap();
    let subject = head
        .lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .unwrap()
        .to_owned();
    // plain text, quoted-printable for long lines: undo soft breaks
    let body = body
        .replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=");
    (subject, body)
}

async fn start(backend: Backend, smtp: &Smtp, extra: &str) -> (Harness, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let h = Harness::start_with(
        backend,
        Options {
            clock: Some(clock.clone()),
            extra_toml: smtp.toml(extra),
            ..Options::default()
        },
    )
    .await;
    (h, clock)
}

async fn token_of(h: &Harness, runtime: &str) -> String {
    let r = h.runtime_get(runtime, runtime, ALICE).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["token"].as_str().unwrap().to_owned()
}

async fn me_notifications(alice: &Browser, h: &Harness) -> Value {
    let r = alice
        .client
        .get(format!("{}/api/v1/me/notifications", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn users_are_notified(backend: Backend) {
    let smtp = Smtp::start();
    let (h, clock) = start(backend, &smtp, "").await;
    let notifier = h.state.notifier.clone();
    let alice = h.signed_in("alice").await;
    alice.authorize("acme-prod").await;
    alice.authorize("acme-staging").await;
    notifier.settled().await;
    assert!(smtp.mails().is_empty(), "valid tokens: nothing to say");
    let prod = token_of(&h, "acme-prod").await;
    let staging = token_of(&h, "acme-staging").await;
    assert_ne!(prod, staging);

    // a temporary failure of the provider during the check says nothing
    h.mock.provider.switches().set_user_api_status(Some(503));
    clock.advance(chrono::Duration::hours(5));
    h.state.lifecycle.run_due().await;
    notifier.settled().await;
    h.mock.provider.switches().set_user_api_status(None);
    assert!(smtp.mails().is_empty(), "{:?}", smtp.mails());
    let v = me_notifications(&alice, &h).await;
    assert_eq!(v["attention"], json!([]), "{v}");

    // both revoked at the provider: one mail for both
    assert!(h.mock.provider.revoke(&prod));
    assert!(h.mock.provider.revoke(&staging));
    clock.advance(chrono::Duration::hours(5));
    h.state.lifecycle.run_due().await;
    notifier.settled().await;
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_eq!(mails[0]["to"], json!(["alice@example.com"]));
    assert_eq!(mails[0]["from"], "gitbroker@example.com");
    let (subject, body) = subject_and_body(&mails[0]);
    assert_eq!(subject, "gitbroker: 2 of your Git tokens need attention");
    assert!(
        body.contains("- runtime acme-prod: revoked or invalid"),
        "{body}"
    );
    assert!(
        body.contains("- runtime acme-staging: revoked or invalid"),
        "{body}"
    );
    assert!(body.contains(&format!("{}/tokens", h.url)), "{body}");
    let raw = mails[0].to_string();
    assert!(!raw.contains(&prod) && !raw.contains(&staging));

    // the API: what needs attention, and what was notified
    let v = me_notifications(&alice, &h).await;
    assert_eq!(v["enabled"], true);
    assert_eq!(v["email"], "alice@example.com");
    let attention: Vec<_> = v["attention"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["runtime"].as_str().unwrap(), a["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        attention,
        [("acme-prod", "invalid"), ("acme-staging", "invalid")]
    );
    assert_eq!(v["recent"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["recent"][0]["mailed"], true, "{v}");

    // the page: a banner naming both, a badge on each row
    let page = alice.get("/tokens").await;
    assert!(
        page.body.contains("2 Git user tokens need your attention"),
        "{}",
        page.body
    );
    assert_eq!(page.body.matches("class=\"badge attention\"").count(), 2);

    // acme-staging hidden (through the API, with the CSRF header)
    let csrf = page.csrf();
    let r = alice
        .client
        .put(format!(
            "{}/api/v1/me/runtimes/acme-staging/notifications",
            h.url
        ))
        .header("x-csrf-token", &csrf)
        .json(&json!({ "hidden": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page = alice.get("/tokens").await;
    assert!(
        page.body.contains("A Git user token needs your attention"),
        "{}",
        page.body
    );
    assert_eq!(page.body.matches("class=\"badge attention\"").count(), 1);
    assert!(page.body.contains("Notifications hidden"), "{}", page.body);
    assert!(
        page.body.contains("Revoked or invalid"),
        "hidden is not invisible: the status stays"
    );
    // a runtime that is not hers is refused
    let r = alice
        .client
        .put(format!(
            "{}/api/v1/me/runtimes/globex-prod/notifications",
            h.url
        ))
        .header("x-csrf-token", &csrf)
        .json(&json!({ "hidden": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // authorized again: "works again", mailed for acme-prod only
    alice.authorize("acme-prod").await;
    alice.authorize("acme-staging").await;
    notifier.settled().await;
    let mails = smtp.mails();
    assert_eq!(mails.len(), 2, "{mails:?}");
    let (subject, body) = subject_and_body(&mails[1]);
    assert_eq!(subject, "gitbroker: your Git token works again");
    assert!(body.contains("- runtime acme-prod: works again"), "{body}");
    assert!(!body.contains("acme-staging"), "hidden: {body}");
    let v = me_notifications(&alice, &h).await;
    assert_eq!(v["attention"], json!([]));
    let kinds: Vec<_> = v["recent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["runtime"].as_str().unwrap(),
                n["kind"].as_str().unwrap(),
                n["hidden"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds[..2],
        [
            ("acme-staging", "recovered", true),
            ("acme-prod", "recovered", false)
        ]
    );

    // all off: nothing mailed
    let r = alice
        .client
        .put(format!("{}/api/v1/me/notifications", h.url))
        .header("x-csrf-token", &csrf)
        .json(&json!({ "enabled": false }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let prod = token_of(&h, "acme-prod").await;
    assert!(h.mock.provider.revoke(&prod));
    clock.advance(chrono::Duration::hours(5));
    h.state.lifecycle.run_due().await;
    notifier.settled().await;
    assert_eq!(smtp.mails().len(), 2, "notifications off: no mail");
    let page = alice.get("/tokens").await;
    assert!(
        !page.body.contains("need your attention"),
        "no banner when off"
    );
    assert!(page.body.contains("Notifications are off."));
    assert!(page.body.contains("Revoked or invalid"), "statuses stay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_notified_embedded() {
    users_are_notified(Backend::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_notified_redis() {
    users_are_notified(Backend::Redis).await;
}

/// Two replicas see the same change: one notification, one mail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_notify_once() {
    let smtp = Smtp::start();
    let (h, clock) = start(Backend::Redis, &smtp, "").await;
    let other = h.another_replica().await;
    let alice = h.signed_in("alice").await;
    alice.authorize("acme-prod").await;
    // the other replica learns of alice from her sign-in record in the store
    let prod = token_of(&h, "acme-prod").await;
    assert!(h.mock.provider.revoke(&prod));
    clock.advance(chrono::Duration::hours(5));
    // both replicas check (each claims what is due; both then look at alice)
    let (a, b) = tokio::join!(h.state.lifecycle.run_due(), other.lifecycle.run_due());
    assert!(a.checked + b.checked >= 1);
    // and both are asked to look at alice at once
    h.state.notifier.look_at(ALICE);
    other.notifier.look_at(ALICE);
    h.state.notifier.settled().await;
    other.notifier.settled().await;
    let v = me_notifications(&alice, &h).await;
    assert_eq!(v["recent"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(smtp.mails().len(), 1, "{:?}", smtp.mails());
}

/// Admins: the Git Runtime tokens needing attention and per runtime how
/// many users' tokens do, and a mail when a Git Runtime token breaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_are_notified() {
    let smtp = Smtp::start();
    let (h, clock) = start(
        Backend::Embedded,
        &smtp,
        "admin_email = \"platform@example.com\"",
    )
    .await;
    let alice = h.signed_in("alice").await;
    alice.authorize("acme-prod").await;
    let pat = h.github_pat("dave", &["repo", "admin:repo_hook"]);
    let r = h
        .admin_request(reqwest::Method::PUT, "/runtimes/acme-prod/git-token")
        .json(&json!({ "token": pat }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    h.state.notifier.settled().await;
    let before = smtp.mails().len();
    let overview = |h: &Harness| {
        h.admin_request(reqwest::Method::GET, "/notifications")
            .send()
    };
    let v: Value = overview(&h).await.unwrap().json().await.unwrap();
    let prod = v["user_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["runtime"] == "acme-prod")
        .unwrap()
        .clone();
    assert_eq!(
        prod,
        json!({"runtime": "acme-prod", "needing_attention": 0, "total": 1})
    );
    assert!(
        !v["runtime_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["runtime"] == "acme-prod"),
        "{v}"
    );

    assert!(h.mock.provider.revoke_pat(&pat));
    let user = token_of(&h, "acme-prod").await;
    assert!(h.mock.provider.revoke(&user));
    clock.advance(chrono::Duration::hours(5));
    h.state.lifecycle.run_due().await;
    h.state.notifier.settled().await;
    let v: Value = overview(&h).await.unwrap().json().await.unwrap();
    let rt = v["runtime_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["runtime"] == "acme-prod")
        .unwrap()
        .clone();
    assert_eq!(rt["state"], "invalid", "{v}");
    let counts = v["user_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["runtime"] == "acme-prod")
        .unwrap()
        .clone();
    assert_eq!(counts["needing_attention"], 1);
    let mails = smtp.mails();
    let admin: Vec<_> = mails[before..]
        .iter()
        .filter(|m| m["to"] == json!(["platform@example.com"]))
        .collect();
    assert_eq!(admin.len(), 1, "{mails:?}");
    let (subject, body) = subject_and_body(admin[0]);
    assert!(subject.contains("Git Runtime token"), "{subject}");
    assert!(
        body.contains("Git Runtime token of acme-prod: revoked or invalid"),
        "{body}"
    );
    assert!(!admin[0].to_string().contains(&pat));
    // not for admins' eyes without the admin token
    let r = reqwest::Client::new()
        .get(format!("{}/api/v1/admin/notifications", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

/// Bad configuration is refused with the key named.
#[test]
fn bad_notification_settings_name_their_key() {
    use gitbroker::config::Settings;
    let base =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/demo.toml")).unwrap();
    for (extra, key) in [
        (
            "[notifications.smtp]\nhost = \"smtp.example.com\"\ntls = \"none\"\nfrom = \"a@example.com\"\n",
            "notifications.smtp.tls",
        ),
        (
            "[notifications.smtp]\nhost = \"smtp.example.com\"\nfrom = \"not an address\"\n",
            "notifications.smtp.from",
        ),
        (
            "[notifications.smtp]\nhost = \"smtp://x\"\nfrom = \"a@example.com\"\n",
            "notifications.smtp.host",
        ),
        (
            "[notifications.smtp]\nhost = \"smtp.example.com\"\nfrom = \"a@example.com\"\nusername = \"u\"\n",
            "notifications.smtp.password",
        ),
        (
            "[notifications]\nadmin_email = \"ops@example.com\"\n",
            "notifications.admin_email",
        ),
    ] {
        let err = Settings::from_toml_str(&format!("{base}\n{extra}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{extra} → {err}");
    }
}
