//! Webhooks end to end: change events from the durable outbox, signed per
//! Standard Webhooks and verified by an independent implementation (the
//! `standardwebhooks` package from PyPI, in tests/webhook_receiver.py, run
//! from the virtualenv scripts/test.sh creates), retried with backoff,
//! given up, replayed, and delivered by another replica when the first dies
//! mid-delivery.
#![allow(
    clippy::disallowed_methods,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code
)]

mod support;

use gitbroker::webhooks::WebhookSecret;
use reqwest::Method;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const ALICE: &str = "u-1001";

/// The Python receiver, a real process on a loopback port.
struct Receiver {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    url: String,
}

fn python() -> PathBuf {
    let py = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/py/bin/python");
    assert!(
        py.exists(),
        "{} is missing: run scripts/test.sh once (it creates the virtualenv with standardwebhooks)",
        py.display()
    );
    py
}

impl Receiver {
    async fn start(secret: &str, args: &[&str]) -> Receiver {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/webhook_receiver.py");
        let mut child = Command::new(python())
            .arg(script)
            .arg("--secret")
            .arg(secret)
            .args(args)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the webhook receiver starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first: Value = serde_json::from_str(
            &tokio::time::timeout(Duration::from_secs(20), lines.next_line())
                .await
                .expect("the receiver reports its port")
                .unwrap()
                .expect("the receiver reports its port (is standardwebhooks installed? run scripts/test.sh)"),
        )
        .unwrap();
        let url = format!("http://127.0.0.1:{}/hook", first["port"]);
        Receiver { child, lines, url }
    }

    /// The next request the receiver got.
    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(20), self.lines.next_line())
            .await
            .expect("a webhook within 20 s")
            .unwrap()
            .expect("the receiver is running");
        serde_json::from_str(&line).unwrap()
    }
}

fn webhook_toml(id: &str, url: &str, secrets: &[&str], more: &str) -> String {
    let secrets: Vec<String> = secrets.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "[[webhooks]]\nid = \"{id}\"\nurl = \"{url}\"\nsecrets = [{}]\n{more}\n",
        secrets.join(", ")
    )
}

async fn deliveries(h: &Harness, query: &str) -> Vec<Value> {
    let r = h
        .admin_request(Method::GET, &format!("/webhook-deliveries{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["deliveries"].as_array().unwrap().clone()
}

/// Deliveries matching `query` once `done` holds for them: the state is
/// written just after the receiver answers.
async fn settled(h: &Harness, query: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let d = deliveries(h, query).await;
        if done(&d) {
            return d;
        }
        assert!(Instant::now() < deadline, "deliveries never settled: {d:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn delivered_and_verified(backend: Backend) {
    let (old, old_text) = WebhookSecret::generate();
    drop(old);
    let (_, new_text) = WebhookSecret::generate();
    // the receiver knows only the new secret; gitbroker signs with both
    let mut rx = Receiver::start(&new_text, &[]).await;
    let mut only_deletes = Receiver::start(&new_text, &[]).await;
    let h = Harness::start_with(
        backend,
        Options {
            extra_toml: format!(
                "{}{}",
                webhook_toml("ops", &rx.url, &[&old_text, &new_text], ""),
                webhook_toml(
                    "deletes",
                    &only_deletes.url,
                    &[&new_text],
                    "events = [\"runtime.deleted\"]"
                )
            ),
            ..Options::default()
        },
    )
    .await;
    let mut secrets = vec![old_text.clone(), new_text.clone()];

    let alice = h.signed_in("alice").await;
    // every change without an `events` filter, sign-ins included
    let signed_in = rx.next().await;
    assert_eq!(signed_in["payload"]["type"], "session.signed_in");
    assert_eq!(signed_in["verified"], true);
    let start = Instant::now();
    alice.authorize("acme-prod").await;
    let got = rx.next().await;
    let first_latency = start.elapsed();
    assert_eq!(got["verified"], true, "{got}");
    assert_eq!(got["attempt"], 1);
    let p = &got["payload"];
    assert_eq!(p["type"], "user_token.assigned");
    assert_eq!(p["data"]["runtime"], "acme-prod");
    assert_eq!(p["data"]["user"], ALICE);
    assert_eq!(p["data"]["provider"], "github");
    assert_eq!(p["data"]["login"], "alice");
    assert_eq!(p["data"]["fingerprint"].as_str().unwrap().len(), 12);
    assert_eq!(got["id"], p["data"]["id"], "webhook-id is the event id");
    assert_eq!(got["signature"].as_str().unwrap().split(' ').count(), 2);

    // a read is no change: nothing is sent for it; the next change is
    let r = h.runtime_get("acme-prod", "acme-prod", ALICE).await;
    let token = r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    secrets.push(token);
    let pat = h.github_pat("dave", &["repo", "admin:repo_hook"]);
    secrets.push(pat.clone());
    let start = Instant::now();
    let r = h
        .admin_request(Method::POST, "/runtimes")
        .json(
            &json!({"id": "hooked-rt", "account": "acme", "git_host": "github.com",
            "oauth_app": "github-app", "git_token": {"token": pat}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    secrets.push(
        r.json::<Value>().await.unwrap()["credential"]
            .as_str()
            .unwrap()
            .to_owned(),
    );
    let mut types = Vec::new();
    let mut latencies = vec![first_latency];
    for _ in 0..2 {
        let got = rx.next().await;
        latencies.push(start.elapsed());
        assert_eq!(got["verified"], true);
        types.push(got["payload"]["type"].as_str().unwrap().to_owned());
    }
    types.sort();
    assert_eq!(types, ["runtime.created", "runtime_token.set"]);
    let r = h
        .admin_request(Method::DELETE, "/runtimes/hooked-rt")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let got = rx.next().await;
    assert_eq!(got["payload"]["type"], "runtime.deleted");
    let filtered = only_deletes.next().await;
    assert_eq!(filtered["payload"]["type"], "runtime.deleted", "{filtered}");
    assert_eq!(filtered["verified"], true);
    // no secret in any body the receivers got
    for body in [&got, &filtered] {
        for s in &secrets {
            assert!(!body["body"].as_str().unwrap().contains(s.as_str()));
        }
    }

    // the id and the time are signed: the same request with another
    // timestamp does not verify (a captured request cannot be re-dated)
    let ts: i64 = got["timestamp"].as_str().unwrap().parse().unwrap();
    let r = reqwest::Client::new()
        .post(&rx.url)
        .header("webhook-id", got["id"].as_str().unwrap())
        .header("webhook-timestamp", (ts + 1).to_string())
        .header("webhook-signature", got["signature"].as_str().unwrap())
        .body(got["body"].as_str().unwrap().to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(rx.next().await["verified"], false);
    let r = reqwest::Client::new()
        .post(&rx.url)
        .header("webhook-id", "evt_another")
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", got["signature"].as_str().unwrap())
        .body(got["body"].as_str().unwrap().to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(rx.next().await["verified"], false);

    // the admin API lists them delivered, one attempt each
    let ops = settled(&h, "?endpoint=ops", |d| {
        d.iter().all(|d| d["state"] == "delivered")
    })
    .await;
    assert_eq!(ops.len(), 5, "{ops:?}");
    assert!(
        ops.iter()
            .all(|d| d["state"] == "delivered" && d["attempts"] == 1)
    );
    assert_eq!(deliveries(&h, "?endpoint=deletes").await.len(), 1);
    latencies.sort();
    println!(
        "webhook delivery latency on {backend:?} (change answered or started -> received): {latencies:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_signed_and_verified_on_embedded() {
    delivered_and_verified(Backend::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_signed_and_verified_on_redis() {
    delivered_and_verified(Backend::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_receivers_are_retried_given_up_and_replayed() {
    let (_, secret) = WebhookSecret::generate();
    let mut flaky = Receiver::start(&secret, &["--fail-first", "2"]).await;
    let mut down = Receiver::start(&secret, &["--fail-first", "1000"]).await;
    let h = Harness::start_with(
        Backend::Redis,
        Options {
            extra_toml: format!(
                "{}{}",
                webhook_toml("flaky", &flaky.url, &[&secret], "backoff_initial_ms = 100\nevents = [\"runtime_token.rotated\"]"),
                webhook_toml(
                    "down",
                    &down.url,
                    &[&secret],
                    "backoff_initial_ms = 50\nmax_attempts = 3\nevents = [\"runtime_token.rotated\"]"
                )
            ),
            ..Options::default()
        },
    )
    .await;
    let pat = h.github_pat("dave", &["repo", "admin:repo_hook"]);
    let start = Instant::now();
    let r = h
        .admin_request(Method::PUT, "/runtimes/acme-prod/git-token")
        .json(&json!({ "token": pat }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // 500, 500 (100 ms later), 204 (200 ms after that)
    let mut times = Vec::new();
    for attempt in 1..=3 {
        let got = flaky.next().await;
        times.push(start.elapsed());
        assert_eq!(got["attempt"], attempt);
        assert_eq!(got["verified"], true);
        assert_eq!(
            got["answer"],
            if attempt < 3 { json!(500) } else { json!(204) }
        );
    }
    assert!(
        times[1] - times[0] >= Duration::from_millis(90),
        "{times:?}"
    );
    assert!(
        times[2] - times[1] >= Duration::from_millis(190),
        "{times:?}"
    );
    for attempt in 1..=3 {
        assert_eq!(down.next().await["attempt"], attempt);
    }
    // the state is written just after the answer: wait for it
    let failed = settled(&h, "?endpoint=down&state=failed", |d| !d.is_empty()).await;
    assert_eq!(failed[0]["attempts"], 3);
    assert_eq!(failed[0]["last_status"], 500);
    assert_eq!(failed[0]["last_error"], "the endpoint answered HTTP 500");
    assert!(failed[0]["next_attempt_at"].is_null());
    let flaky_done = settled(&h, "?endpoint=flaky", |d| d[0]["state"] == "delivered").await;
    assert_eq!(flaky_done[0]["state"], "delivered");
    assert_eq!(flaky_done[0]["attempts"], 3);

    // replay: the same message again, from a first attempt
    let id = failed[0]["id"].as_str().unwrap();
    let r = h
        .admin_request(Method::POST, &format!("/webhook-deliveries/{id}/replay"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let again = down.next().await;
    assert_eq!(again["id"], failed[0]["webhook_id"]);
    assert_eq!(
        again["attempt"], 4,
        "the receiver's fourth sight of this id"
    );
    let r = h
        .admin_request(Method::POST, "/webhook-deliveries/nope/replay")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_dying_mid_delivery_leaves_it_to_another() {
    let (_, secret) = WebhookSecret::generate();
    // the first attempt of each message gets no answer
    let mut rx = Receiver::start(&secret, &["--hang-first", "1"]).await;
    let h = Harness::start_with(
        Backend::Redis,
        Options {
            extra_toml: webhook_toml("ops", &rx.url, &[&secret], "timeout_secs = 1"),
            ..Options::default()
        },
    )
    .await;
    let start = Instant::now();
    let r = h
        .admin_request(Method::DELETE, "/runtimes/globex-prod")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    // answered at once, whatever the receiver does
    assert!(
        start.elapsed() < Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
    let first = rx.next().await;
    assert_eq!(first["answer"], "hang");
    // the replica dies while the receiver holds its request
    h.state.webhooks.stop_worker();
    let died = Instant::now();
    // another replica (or the same one restarted) on the same store
    let other = h.another_replica().await;
    let second = rx.next().await;
    let took = died.elapsed();
    assert_eq!(second["id"], first["id"], "the same message, at least once");
    assert_eq!(second["attempt"], 2);
    assert_eq!(second["verified"], true);
    assert_eq!(second["answer"], 204);
    // not before the first replica's lease (timeout 1 s + 2 s) ran out
    assert!(took >= Duration::from_millis(1500), "{took:?}");
    println!("redelivered by another replica {took:?} after the first died");
    other.webhooks.stop_worker();
}

/// The same with a real broker process, SIGKILLed while the receiver holds
/// its request: the delivery is finished by the test's broker on the same
/// Redis once the dead process's lease runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_process_killed_mid_delivery() {
    let (_, secret) = WebhookSecret::generate();
    let mut rx = Receiver::start(&secret, &["--hang-first", "1"]).await;
    let hook = webhook_toml("ops", &rx.url, &[&secret], "timeout_secs = 1");
    let h = Harness::start_with(
        Backend::Redis,
        Options {
            extra_toml: hook.clone(),
            ..Options::default()
        },
    )
    .await;
    // this broker only records; the process below delivers
    h.state.webhooks.stop_worker();
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("broker.toml");
    std::fs::write(
        &config,
        format!(
            "public_url = \"http://127.0.0.1:{port}\"\nlisten = \"127.0.0.1:{port}\"\nsecure_cookies = false\nallow_insecure_http = true\n\
             [log]\nformat = \"pretty\"\n[store]\nbackend = \"redis\"\nredis_url = \"{}\"\n\
             [encryption]\nkeys = [{{ id = \"k1\", key = \"{KEY}\" }}]\n\
             [oidc]\nissuer = \"http://127.0.0.1:9/idp\"\nclient_id = \"c\"\nclient_secret = \"s\"\n\
             [lifecycle]\nbackground = false\n{hook}",
            h.redis.as_ref().unwrap().url()
        ),
    )
    .unwrap();
    let mut broker = Command::new(env!("CARGO_BIN_EXE_gitbroker"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut log = BufReader::new(broker.stdout.take().unwrap()).lines();
    let mut errors = BufReader::new(broker.stderr.take().unwrap()).lines();
    // serving means built, and the delivery worker is running
    let ready = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            tokio::select! {
                Ok(Some(l)) = log.next_line() => if l.contains("gitbroker serving") { return; },
                Ok(Some(l)) = errors.next_line() => if l.contains("gitbroker serving") { return; }
                    else if l.contains("cannot") { panic!("broker failed: {l}"); },
            }
        }
    })
    .await;
    assert!(ready.is_ok(), "the broker process did not start");
    let r = h
        .admin_request(Method::DELETE, "/runtimes/globex-prod")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let first = rx.next().await;
    assert_eq!(first["answer"], "hang");
    assert_eq!(first["payload"]["type"], "runtime.deleted");
    broker.start_kill().unwrap(); // SIGKILL
    broker.wait().await.unwrap();
    let died = Instant::now();
    h.state.webhooks.spawn_worker();
    let second = rx.next().await;
    assert_eq!(second["id"], first["id"]);
    assert_eq!(second["attempt"], 2);
    assert_eq!(second["verified"], true);
    assert_eq!(second["answer"], 204);
    assert!(
        died.elapsed() >= Duration::from_millis(1000),
        "{:?}",
        died.elapsed()
    );
    let done = settled(&h, "?endpoint=ops", |d| {
        d.iter().all(|d| d["state"] == "delivered")
    })
    .await;
    assert_eq!(done.len(), 1);
    // the killed attempt never recorded itself: this one is the first counted
    assert_eq!(done[0]["attempts"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_through_the_admin_api() {
    let h = Harness::start(Backend::Redis).await;
    let r = h
        .admin_request(Method::GET, "/webhooks")
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["webhooks"], json!([]));
    // created without a secret: one is generated and shown once
    let r = h
        .admin_request(Method::POST, "/webhooks")
        .json(&json!({"id": "api-hook", "url": "http://127.0.0.1:9/x", "events": ["user_token.assigned"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let created: Value = r.json().await.unwrap();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    assert_eq!(created["origin"], "api");
    // never again, and not in the store in plain text
    let listed = h
        .admin_request(Method::GET, "/webhooks")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!listed.contains(&secret) && !listed.contains(&secret[6..]));
    assert!(listed.contains("\"secrets\":1"), "{listed}");
    let raw: std::collections::HashMap<String, Vec<u8>> = redis::cmd("HGETALL")
        .arg("gitbroker:r:{webhook_endpoint:all}")
        .query(&mut h.redis.as_ref().unwrap().client().get_connection().unwrap())
        .unwrap();
    assert_eq!(raw.len(), 1, "{:?}", raw.keys());
    let key_b64 = &secret[6..];
    let key = base64_decode(key_b64);
    for v in raw.values() {
        let text = String::from_utf8_lossy(v);
        assert!(!text.contains(key_b64));
        assert!(!v.windows(key.len()).any(|w| w == key.as_slice()));
    }
    // invalid input names the field
    for (body, field) in [
        (json!({"id": "x", "url": "ftp://h/"}), "url"),
        (json!({"id": "x", "url": "http://h/?token=1"}), "url"),
        (
            json!({"id": "x", "url": "http://h/", "events": ["user_token.read"]}),
            "events",
        ),
        (
            json!({"id": "x", "url": "http://h/", "max_attempts": 0}),
            "max_attempts",
        ),
        (
            json!({"id": "x", "url": "http://h/", "secrets": ["nope"]}),
            "secrets[0]",
        ),
        (json!({"id": "bad id!", "url": "http://h/"}), "id"),
    ] {
        let r = h
            .admin_request(Method::POST, "/webhooks")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "{body}");
        let v: Value = r.json().await.unwrap();
        assert!(v["detail"].as_str().unwrap().contains(field), "{body}: {v}");
        assert!(!v["detail"].as_str().unwrap().contains("nope"), "{v}");
    }
    let r = h
        .admin_request(Method::POST, "/webhooks")
        .json(&json!({"id": "api-hook", "url": "http://127.0.0.1:9/x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    // an API endpoint receives, signed with its secret
    let mut rx = Receiver::start(&secret, &[]).await;
    let r = h
        .admin_request(Method::DELETE, "/webhooks/api-hook")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = h
        .admin_request(Method::POST, "/webhooks")
        .json(
            &json!({"id": "api-hook", "url": rx.url, "secrets": [secret],
            "events": ["user_token.assigned"]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert!(r.json::<Value>().await.unwrap().get("secret").is_none());
    h.assign_oauth_as(ALICE, "acme-prod", "gho_api_hook_token")
        .await;
    let got = rx.next().await;
    assert_eq!(got["verified"], true);
    assert_eq!(got["payload"]["type"], "user_token.assigned");
    assert!(!got["body"].as_str().unwrap().contains("gho_api_hook_token"));
    let r = h
        .admin_request(Method::DELETE, "/webhooks/nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = reqwest::Client::new()
        .get(format!("{}/api/v1/admin/webhooks", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

#[test]
fn configuration_errors_name_the_key() {
    let base = "public_url = \"https://b.example.com\"\n[store]\nbackend = \"embedded\"\npath = \"/tmp/x.redb\"\n[encryption]\nkeys = [{ id = \"k1\", key = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\" }]\n[oidc]\nissuer = \"https://idp.example.com\"\nclient_id = \"c\"\nclient_secret = \"s\"\n";
    let (_, secret) = WebhookSecret::generate();
    let ok = format!(
        "{base}{}",
        webhook_toml("w", "https://hooks.example.com/in", &[&secret], "")
    );
    let s = gitbroker::config::Settings::from_toml_str(&ok).unwrap();
    assert_eq!(s.webhooks.len(), 1);
    assert_eq!(s.webhooks[0].max_attempts, 10);
    assert!(
        !format!("{s:?}").contains(&secret[6..]),
        "Debug shows no secret"
    );
    for (toml, key) in [
        (
            webhook_toml("w", "http://hooks.example.com/", &[&secret], ""),
            "webhooks[0].url",
        ),
        (
            webhook_toml("w", "https://hooks.example.com/", &[], ""),
            "webhooks[0].secrets",
        ),
        (
            webhook_toml("w", "https://hooks.example.com/", &["whsec_short"], ""),
            "webhooks[0].secrets[0]",
        ),
        (
            webhook_toml(
                "w",
                "https://hooks.example.com/",
                &[&secret],
                "events = [\"nope\"]",
            ),
            "webhooks[0].events",
        ),
        (
            webhook_toml(
                "w",
                "https://hooks.example.com/",
                &[&secret],
                "max_attempts = 0",
            ),
            "webhooks[0].max_attempts",
        ),
        (
            webhook_toml(
                "w",
                "https://hooks.example.com/",
                &[&secret],
                "backoff_initial_ms = 1",
            ),
            "webhooks[0].backoff_initial_ms",
        ),
        (
            format!(
                "{}{}",
                webhook_toml("w", "https://a.example.com/", &[&secret], ""),
                webhook_toml("w", "https://b.example.com/", &[&secret], "")
            ),
            "webhooks[1].id",
        ),
    ] {
        let e = gitbroker::config::Settings::from_toml_str(&format!("{base}{toml}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(key), "{key}: {e}");
        assert!(!e.contains(&secret[6..]));
    }
    let e = gitbroker::config::Settings::from_toml_str(&format!(
        "{base}[[webhooks]]\nid = \"w\"\nurl = \"https://h.example.com/\"\nsecrets = [{{ env = \"GB_TEST_NO_SUCH_VAR\" }}]\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("webhooks[0].secrets[0]") && e.contains("GB_TEST_NO_SUCH_VAR"),
        "{e}"
    );
}

/// An event whose outbox entry cannot be written (the store is down) is
/// kept and written, then delivered, once the store is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_write_during_a_store_outage_is_delivered_after_it() {
    let (_, secret) = WebhookSecret::generate();
    let mut rx = Receiver::start(&secret, &[]).await;
    let mut h = Harness::start_with(
        Backend::Redis,
        Options {
            extra_toml: webhook_toml("ops", &rx.url, &[&secret], ""),
            ..Options::default()
        },
    )
    .await;
    h.redis.as_mut().unwrap().kill();
    let event = gitbroker::events::Event::new(
        gitbroker::events::Action::RuntimeDeleted,
        gitbroker::events::Actor::system(),
        chrono::Utc::now(),
    )
    .runtime("gone-rt");
    let start = Instant::now();
    gitbroker::events::EventSink::record(h.state.webhooks.as_ref(), &event).await;
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    h.redis.as_mut().unwrap().restart();
    let got = rx.next().await;
    assert_eq!(got["id"], event.id.as_str());
    assert_eq!(got["payload"]["data"]["runtime"], "gone-rt");
    assert_eq!(got["verified"], true);
}
