//! Git Runtime tokens minted from a GitHub App installation, against the
//! mock GitHub App over loopback HTTP (JWT verified with the App's public
//! key, on the broker's injected clock): mint, reuse, re-mint after the
//! margin, narrowing, registration refusals, temporary and permanent
//! failures, a real clone, and one mint for 100 concurrent fetches on two
//! replicas sharing a real Redis.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use gitbroker::clock::{Clock, ManualClock};
use gitbroker::mock::{
    Flavour, MockConfig, MockGithubApp, MockInstallation, MockProvider, RunningMock,
};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::EncodePublicKey;
use std::collections::BTreeMap;
use std::sync::Arc;
use support::{ADMIN_TOKEN, Backend, Harness, LogCapture, Options, credential};

const APP_ID: u64 = 4242;
const RT: &str = "app-rt";

fn perms(list: &[(&str, &str)]) -> BTreeMap<String, String> {
    list.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

fn runtime_perms() -> BTreeMap<String, String> {
    perms(&[
        ("administration", "write"),
        ("contents", "write"),
        ("repository_hooks", "write"),
        ("metadata", "read"),
    ])
}

fn key_pair() -> (String, String) {
    let private = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
    let pem = private
        .to_pkcs1_pem(rsa::pkcs1::LineEnding::LF)
        .unwrap()
        .to_string();
    let public = private
        .to_public_key()
        .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
        .unwrap();
    (pem, public)
}

struct World {
    h: Harness,
    gh: RunningMock,
    clock: Arc<ManualClock>,
    installation: u64,
    private_pem: String,
    key_file: std::path::PathBuf,
    _dir: tempfile::TempDir,
    _git: tempfile::TempDir,
}

impl World {
    async fn start(backend: Backend) -> World {
        let clock = Arc::new(ManualClock::new(gitbroker::clock::wall_now()));
        let git = tempfile::tempdir().unwrap();
        let config = MockConfig {
            git_root: Some(git.path().to_owned()),
            ..MockConfig::demo()
        };
        // the mock GitHub on the broker's clock: JWT windows and token expiry agree
        let gh = MockProvider::with_clock(config, clock.clone())
            .serve("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let (private_pem, public_pem) = key_pair();
        gh.provider
            .add_github_app(MockGithubApp {
                app_id: APP_ID,
                public_key_pem: Some(public_pem.clone()),
                ..MockGithubApp::default()
            })
            .unwrap();
        let installation = gh.provider.add_installation(MockInstallation {
            id: 0,
            app_id: APP_ID,
            account: "acme".into(),
            permissions: runtime_perms(),
            repositories: vec!["acme/app".into(), "acme/infra".into()],
            ..MockInstallation::default()
        });
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("app.pem");
        std::fs::write(&key_file, &private_pem).unwrap();
        let h = Harness::start_with(
            backend,
            Options {
                clock: Some(clock.clone() as Arc<dyn Clock>),
                ..Options::default()
            },
        )
        .await;
        World {
            h,
            gh,
            clock,
            installation,
            private_pem,
            key_file,
            _dir: dir,
            _git: git,
        }
    }

    /// The broker's configuration with the App and one App runtime.
    fn toml(&self, runtime_extra: &str) -> impl FnOnce(String) -> String + use<> {
        let extra = format!(
            r#"
[[github_apps]]
name = "acme-app"
app_id = {APP_ID}
private_key = {{ file = "{key}" }}
base_url = "{base}"
[[runtimes]]
id = "{RT}"
account = "acme"
# the mock's host: `gitbroker credential` answers for it only
git_host = "127.0.0.1"
credential = "{cred}"
{runtime_extra}
[runtimes.github_app]
app = "acme-app"
installation_id = {inst}
"#,
            key = self.key_file.display(),
            base = self.gh.base_url,
            cred = credential(RT),
            inst = self.installation,
        );
        move |t| format!("{t}\n{extra}")
    }

    async fn replica(&self, runtime_extra: &str) -> (gitbroker::AppState, String) {
        self.h.serve_replica(self.toml(runtime_extra)).await
    }
}

async fn fetch(url: &str, format: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{url}/api/v1/runtimes/{RT}/token{format}"))
        .bearer_auth(credential(RT))
        .send()
        .await
        .unwrap()
}

async fn token_of(url: &str) -> String {
    let r = fetch(url, "").await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let v: serde_json::Value = r.json().await.unwrap();
    v["token"].as_str().unwrap().to_owned()
}

/// Mint on the first fetch, the same token while fresh, a new one once
/// within five minutes of `expires_at`; served as Basic `x-access-token`
/// (JSON, Argo CD) and cloned with by the real git; the private key
/// appears in no answer and no Debug output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mints_reuses_and_remints_after_the_margin() {
    let w = World::start(Backend::Embedded).await;
    let (state, url) = w.replica("").await;
    w.gh.provider
        .create_repo(Flavour::Github, "acme/app")
        .await
        .unwrap();
    w.gh.provider
        .create_repo(Flavour::Github, "acme/secret")
        .await
        .unwrap();
    assert_eq!(w.gh.provider.installation_mints(), 0);

    let r = fetch(&url, "").await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    let first = v["token"].as_str().unwrap().to_owned();
    assert!(first.starts_with("ghs_"), "{v}");
    assert_eq!(v["username"], "x-access-token", "{v}");
    assert!(v["expires_at"].is_string(), "{v}");
    assert_eq!(w.gh.provider.installation_mints(), 1);

    let argo: serde_json::Value = fetch(&url, "?format=argocd").await.json().await.unwrap();
    let argo = argo.to_string();
    assert!(argo.contains("\"username\":\"x-access-token\""), "{argo}");
    assert!(argo.contains(&first), "{argo}");
    assert_eq!(token_of(&url).await, first);
    assert_eq!(w.gh.provider.installation_mints(), 1, "reused while fresh");

    // the real git through `gitbroker credential`: Basic x-access-token:<token>
    let url_app = w.gh.provider.clone_url(Flavour::Github, "acme/app");
    let (cloned, err) = git_clone(&url, &url_app).await;
    assert!(cloned, "clone with the installation token: {err}");
    // narrowed to the installation's repositories: acme/secret is not among them
    let url_secret = w.gh.provider.clone_url(Flavour::Github, "acme/secret");
    let (cloned, err) = git_clone(&url, &url_secret).await;
    assert!(!cloned, "{err}");
    assert_eq!(w.gh.provider.installation_mints(), 1);

    // 54 minutes on: still more than the margin left
    w.clock.advance(chrono::Duration::minutes(54));
    assert_eq!(token_of(&url).await, first);
    assert_eq!(w.gh.provider.installation_mints(), 1);
    // 56 minutes on: within five minutes of expiry, minted again
    w.clock.advance(chrono::Duration::minutes(2));
    let second = token_of(&url).await;
    assert_ne!(second, first);
    assert_eq!(w.gh.provider.installation_mints(), 2);

    // the status admins see
    let st: serde_json::Value =
        w.h.admin_request(reqwest::Method::GET, &format!("/runtimes/{RT}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(
        st["git_token"]["kind"], "GitHub App installation token",
        "{st}"
    );
    assert_eq!(st["git_token"]["status"]["state"], "valid", "{st}");
    assert_eq!(st["git_token"]["provider_login"], "acme", "{st}");
    assert_eq!(st["github_app"]["app"], "acme-app", "{st}");

    // the private key: in no answer, no Debug output
    let body = w.private_pem.lines().nth(3).unwrap().to_owned();
    assert!(!st.to_string().contains(&body));
    assert!(!argo.contains(&body));
    let settings =
        gitbroker::config::Settings::from_toml_str(&(w.toml(""))(w.h.config_toml().to_owned()))
            .unwrap();
    let dbg = format!("{settings:?}");
    assert!(
        dbg.contains("AppKey([redacted])"),
        "the App is in the settings"
    );
    assert!(!dbg.contains(&body));
    drop(state);
}

/// Registration (admin API and file) checks the installation and names
/// what is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_refusals_name_what_is_wrong() {
    let w = World::start(Backend::Embedded).await;
    let (_state, url) = w.replica("").await;
    let lacking = w.gh.provider.add_installation(MockInstallation {
        id: 0,
        app_id: APP_ID,
        account: "globex".into(),
        permissions: perms(&[("contents", "write"), ("metadata", "read")]),
        repositories: Vec::new(),
        ..MockInstallation::default()
    });
    let register = |body: serde_json::Value| {
        let url = url.clone();
        async move {
            let r = reqwest::Client::new()
                .post(format!("{url}/api/v1/admin/runtimes"))
                .bearer_auth(ADMIN_TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let v: serde_json::Value = r.json().await.unwrap();
            (status, v)
        }
    };
    let body = |ga: serde_json::Value| serde_json::json!({"id": "new-rt", "account": "acme", "git_host": "github.com", "github_app": ga});

    let (s, v) = register(body(
        serde_json::json!({"app": "acme-app", "installation_id": lacking}),
    ))
    .await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(
        v["detail"],
        format!(
            "installation {lacking} of GitHub App `acme-app` on `globex` lacks permissions a Git Runtime token needs: Administration: Read and write, Webhooks: Read and write. Add them in the App's settings (Permissions & events), then accept the new permissions on the installation"
        ),
        "{v}"
    );

    let (s, v) = register(body(
        serde_json::json!({"app": "acme-app", "installation_id": 999_999}),
    ))
    .await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(
        v["detail"], "installation 999999 of GitHub App `acme-app`: not found (404): Not Found",
        "{v}"
    );

    let (s, v) = register(body(serde_json::json!({"app": "nope", "owner": "acme"}))).await;
    assert_eq!(s, 422, "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("github_app.app: `nope` is not the name of any entry of github_apps"),
        "{v}"
    );

    let (s, v) = register(body(
        serde_json::json!({"app": "acme-app", "owner": "initech"}),
    ))
    .await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(
        v["detail"],
        "GitHub App `acme-app` is not installed on the account `initech`; install it there first",
        "{v}"
    );

    // narrowing beyond the installation: refused by GitHub at the first mint
    let mut b = body(serde_json::json!({"app": "acme-app", "owner": "acme"}));
    b["repositories"] = serde_json::json!(["acme/elsewhere"]);
    let (s, v) = register(b).await;
    assert_eq!(s, 422, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("There is at least one repository that does not exist or is not accessible to the parent installation."), "{v}");
    // permissions beyond the installation: refused the same way
    let b = body(
        serde_json::json!({"app": "acme-app", "owner": "acme", "permissions": {"issues": "write"}}),
    );
    let (s, v) = register(b).await;
    assert_eq!(s, 422, "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .ends_with("(422): The permissions requested are not granted to this installation."),
        "{v}"
    );
    // nothing was left behind
    let r =
        w.h.admin_request(reqwest::Method::GET, "/runtimes/new-rt")
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 404);

    // found by owner, narrowed to one repository and to contents: registered
    let mut b = body(
        serde_json::json!({"app": "acme-app", "owner": "acme", "permissions": {"contents": "write", "metadata": "read"}}),
    );
    b["repositories"] = serde_json::json!(["acme/app"]);
    let (s, v) = register(b).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["github_app"]["installation_id"], w.installation, "{v}");
    assert_eq!(
        v["git_token"]["scopes"],
        serde_json::json!(["contents:write", "metadata:read"]),
        "{v}"
    );

    // the runtime's repositories change: the cached token was for the old
    // ones, so the next fetch mints for the new ones
    let cred = v["credential"].as_str().unwrap().to_owned();
    let fetch_new = || async {
        let r = reqwest::Client::new()
            .get(format!("{url}/api/v1/runtimes/new-rt/token"))
            .bearer_auth(&cred)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json::<serde_json::Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let before = fetch_new().await;
    let mints = w.gh.provider.installation_mints();
    assert_eq!(fetch_new().await, before, "reused");
    let r = reqwest::Client::new()
        .put(format!("{url}/api/v1/admin/runtimes/new-rt"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"id": "new-rt", "account": "acme", "git_host": "github.com", "github_app": {"app": "acme-app", "installation_id": w.installation}, "repositories": ["acme/infra"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_ne!(fetch_new().await, before, "minted for the new repositories");
    // an update to an installation without the permissions: refused, named
    let r = reqwest::Client::new()
        .put(format!("{url}/api/v1/admin/runtimes/new-rt"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"id": "new-rt", "account": "acme", "git_host": "github.com", "github_app": {"app": "acme-app", "installation_id": lacking}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["detail"].as_str().unwrap().contains("lacks permissions a Git Runtime token needs: Administration: Read and write, Webhooks: Read and write"), "{v}");
    assert_eq!(w.gh.provider.installation_mints(), mints + 1);

    // the same through `gitbroker runtime register --github-app` (no token on stdin)
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_gitbroker"))
        .args([
            "runtime",
            "register",
            "--url",
            &url,
            "--id",
            "cli-rt",
            "--account",
            "acme",
        ])
        .args([
            "--git-host",
            "github.com",
            "--github-app",
            "acme-app",
            "--owner",
            "acme",
        ])
        .args(["--repository", "acme/app"])
        .env("GITBROKER_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{printed} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        printed.starts_with("runtime cli-rt registered; Git Runtime token of acme (GitHub App installation token) accepted\nruntime credential (shown once, store it in the runtime's secret): gbrt_"),
        "{printed}"
    );

    // a wrong key: the mock refuses the JWT
    let (_, other_public) = key_pair();
    w.gh.provider
        .add_github_app(MockGithubApp {
            app_id: APP_ID,
            public_key_pem: Some(other_public.clone()),
            ..MockGithubApp::default()
        })
        .unwrap();
    let (s, v) = register(body(
        serde_json::json!({"app": "acme-app", "installation_id": w.installation}),
    ))
    .await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(
        v["detail"],
        "GitHub refused the JWT of GitHub App `acme-app` (app_id 4242): A JSON web token could not be decoded; check app_id and that private_key is a current key of that App",
        "{v}"
    );

    // the file: a broker refuses to start, naming the runtime
    let toml = (w.toml(""))(w.h.config_toml().to_owned());
    let settings = gitbroker::config::Settings::from_toml_str(&toml).unwrap();
    let err = match gitbroker::app::build(settings, w.h.store.clone(), w.h.clock.clone()).await {
        Ok(_) => panic!("a broker started with a key GitHub refuses"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("runtimes[") && err.contains("].github_app: GitHub refused the JWT"),
        "{err}"
    );
}

/// GitHub failing for now: the still-valid token is served, an expired one
/// gets 503 with Retry-After, and nothing stored changes; back up, a new
/// token is minted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_failures_serve_the_cached_token_or_503() {
    let w = World::start(Backend::Embedded).await;
    let (_state, url) = w.replica("").await;
    let first = token_of(&url).await;
    w.gh.provider.fail_github_apps(Some(503));
    w.clock.advance(chrono::Duration::minutes(57));
    assert_eq!(token_of(&url).await, first, "still valid: served");
    w.clock.advance(chrono::Duration::minutes(4));
    let r = fetch(&url, "").await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        v["type"], "urn:gitbroker:problem:provider-unavailable",
        "{v}"
    );
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("GitHub could not mint the Git Runtime token of runtime `app-rt` right now"),
        "{v}"
    );
    assert_eq!(w.gh.provider.installation_mints(), 1);

    // registering while GitHub fails: 503, and no runtime is left behind
    let r = reqwest::Client::new()
        .post(format!("{url}/api/v1/admin/runtimes"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"id": "late-rt", "account": "acme", "git_host": "github.com", "github_app": {"app": "acme-app", "installation_id": w.installation}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        v["type"], "urn:gitbroker:problem:provider-unavailable",
        "{v}"
    );
    let r =
        w.h.admin_request(reqwest::Method::GET, "/runtimes/late-rt")
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 404);
    // a replica starting while GitHub fails starts (the check is logged)
    let (_late, late_url) = w.replica("").await;
    assert_eq!(fetch(&late_url, "").await.status(), 503);

    w.gh.provider.fail_github_apps(None);
    let again = token_of(&url).await;
    assert_ne!(again, first);
    assert_eq!(w.gh.provider.installation_mints(), 2);
    assert_eq!(
        token_of(&late_url).await,
        again,
        "the other replica reads it"
    );
}

/// A suspended installation: the fetch is refused with GitHub's reason and
/// the runtime token's status says so; unsuspended, the background check
/// clears it and the next fetch mints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_installation_is_the_token_status() {
    let w = World::start(Backend::Embedded).await;
    let (state, url) = w.replica("").await;
    token_of(&url).await;
    assert!(w.gh.provider.suspend_installation(w.installation, true));
    w.clock.advance(chrono::Duration::minutes(58));
    let r = fetch(&url, "").await;
    assert_eq!(r.status(), 404);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        v["type"], "urn:gitbroker:problem:runtime-token-revoked",
        "{v}"
    );
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("This installation has been suspended"),
        "{v}"
    );
    let st: serde_json::Value =
        w.h.admin_request(reqwest::Method::GET, &format!("/runtimes/{RT}/git-token"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(st["status"]["state"], "invalid", "{st}");
    // no more calls to GitHub while refused
    let mints = w.gh.provider.installation_mints();
    assert_eq!(fetch(&url, "").await.status(), 404);
    assert_eq!(w.gh.provider.installation_mints(), mints);

    // unsuspended: the background check sees it, the next fetch mints
    assert!(w.gh.provider.suspend_installation(w.installation, false));
    w.clock.advance(chrono::Duration::hours(13));
    state.lifecycle.run_due().await;
    let st: serde_json::Value =
        w.h.admin_request(reqwest::Method::GET, &format!("/runtimes/{RT}/git-token"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(st["status"]["state"], "valid", "{st}");
    token_of(&url).await;
    assert_eq!(w.gh.provider.installation_mints(), mints + 1);
}

/// 100 concurrent fetches spread over two replicas sharing a real Redis,
/// with no token cached: exactly one installation token is minted, and
/// every fetch gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_fetches_on_two_replicas_mint_once() {
    let w = World::start(Backend::Redis).await;
    let (_a, url_a) = w.replica("").await;
    let (_b, url_b) = w.replica("").await;
    // slow GitHub down so that the fetches really overlap the mint
    w.gh.provider.switches().set_api_delay_ms(Some(200));
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for i in 0..100 {
        let url = if i % 2 == 0 {
            url_a.clone()
        } else {
            url_b.clone()
        };
        tasks.push(tokio::spawn(async move { token_of(&url).await }));
    }
    let mut tokens = std::collections::BTreeSet::new();
    for t in tasks {
        tokens.insert(t.await.unwrap());
    }
    eprintln!(
        "100 concurrent first fetches on two replicas (GitHub answering in 200 ms): {:?}",
        started.elapsed()
    );
    assert_eq!(tokens.len(), 1, "every fetch got the one token");
    assert_eq!(w.gh.provider.installation_mints(), 1);

    // the store holds the token sealed, and nothing of the App's key
    let everything = redis_contents(&w.h).await;
    assert!(!everything.is_empty());
    let token = tokens.into_iter().next().unwrap();
    assert!(
        !contains(&everything, token.as_bytes()),
        "token in the store in plain text"
    );
    for line in w.private_pem.lines().skip(1).take(3) {
        assert!(
            !contains(&everything, line.as_bytes()),
            "App key in the store"
        );
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Every value in the Redis store, read by type (no compressed dumps).
async fn redis_contents(h: &Harness) -> Vec<u8> {
    let mut conn = h
        .redis
        .as_ref()
        .unwrap()
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut out = Vec::new();
    for k in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&k)
            .query_async(&mut conn)
            .await
            .unwrap();
        let mut cmd = match kind.as_str() {
            "string" => redis::cmd("GET"),
            "hash" => redis::cmd("HGETALL"),
            "list" => redis::cmd("LRANGE"),
            "set" => redis::cmd("SMEMBERS"),
            "zset" => redis::cmd("ZRANGE"),
            "stream" => redis::cmd("XRANGE"),
            other => panic!("unexpected Redis type {other}"),
        };
        cmd.arg(&k);
        match kind.as_str() {
            "list" | "zset" => {
                cmd.arg(0).arg(-1);
            }
            "stream" => {
                cmd.arg("-").arg("+");
            }
            _ => {}
        }
        let value: redis::Value = cmd.query_async(&mut conn).await.unwrap();
        out.extend(k.as_bytes());
        flatten(&value, &mut out);
    }
    out
}

fn flatten(v: &redis::Value, out: &mut Vec<u8>) {
    match v {
        redis::Value::BulkString(b) => out.extend(b),
        redis::Value::SimpleString(s) => out.extend(s.as_bytes()),
        redis::Value::Array(items) | redis::Value::Set(items) => {
            items.iter().for_each(|i| flatten(i, out))
        }
        redis::Value::Map(pairs) => pairs.iter().for_each(|(a, b)| {
            flatten(a, out);
            flatten(b, out);
        }),
        _ => {}
    }
}

/// `git clone` with `gitbroker credential` as git's only credential
/// helper, asking the broker at `broker` for the runtime token.
async fn git_clone(broker: &str, url: &str) -> (bool, String) {
    let home = tempfile::tempdir().unwrap();
    let cred = home.path().join("credential");
    std::fs::write(&cred, credential(RT)).unwrap();
    let dir = home.path().join("clone");
    let out = tokio::process::Command::new("git")
        .arg("-c")
        .arg("credential.helper=")
        .arg("-c")
        .arg(format!(
            "credential.helper=!{} credential --url {broker} --credential-file {} --runtime {RT}",
            env!("CARGO_BIN_EXE_gitbroker"),
            cred.display()
        ))
        .args(["clone", url, dir.to_str().unwrap()])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (dir.join("README.md").exists() && out.status.success(), err)
}

/// Every log line of the broker and the mock (debug level) through mint,
/// reuse, registration and refusal: no installation token, no JWT, no line
/// of the App's private key. The subscriber is the process's (the only
/// test here that sets one): lines of the other tests land in it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_app_secret_reaches_the_logs() {
    let capture = LogCapture::install("debug");

    let w = World::start(Backend::Embedded).await;
    let (_state, url) = w.replica("").await;
    let first = token_of(&url).await;
    w.clock.advance(chrono::Duration::minutes(56));
    let second = token_of(&url).await;
    let r = reqwest::Client::new()
        .post(format!("{url}/api/v1/admin/runtimes"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"id": "other-rt", "account": "acme", "git_host": "github.com", "github_app": {"app": "acme-app", "owner": "acme"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert!(w.gh.provider.suspend_installation(w.installation, true));
    w.clock.advance(chrono::Duration::minutes(56));
    assert_eq!(fetch(&url, "").await.status(), 404);

    let logs = capture.text();
    assert!(
        logs.contains("installation token minted"),
        "the mints are logged"
    );
    assert!(
        logs.contains("GitHub refused to mint"),
        "the refusal is logged"
    );
    for token in [&first, &second] {
        assert!(
            !logs.contains(token.as_str()),
            "an installation token was logged"
        );
    }
    // every JWT starts with this encoded header
    assert!(
        !logs.contains("eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9"),
        "a JWT was logged"
    );
    for line in w.private_pem.lines().skip(1).take(5) {
        assert!(!logs.contains(line), "the App's private key was logged");
    }
}
