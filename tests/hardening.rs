//! Server-level hardening, end to end: `check-config` against a live
//! identity provider, the real binary's signals and logs, timeouts, rate
//! limits and rejection bodies on real loopback ports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

mod support;

use gitbroker::mock::{MockConfig, MockProvider, RunningMock};
use std::path::Path;
use std::process::Output;
use support::*;

/// A minimal valid configuration with `issuer`, plus `extra` top-level keys
/// (before any table) and `tables` at the end.
fn config_text(dir: &Path, issuer: &str, extra: &str, tables: &str) -> String {
    format!(
        r#"public_url = "http://localhost:1"
secure_cookies = false
allow_insecure_http = true
{extra}
[store]
backend = "embedded"
path = "{store}"
[encryption]
keys = [{{ id = "k1", key = "{KEY}" }}]
[oidc]
issuer = "{issuer}"
client_id = "gitbroker-tests"
client_secret = "{OIDC_SECRET}"
[provider]
connect_timeout_secs = 2
timeout_secs = 3
{tables}
"#,
        store = dir.join("store.redb").display(),
    )
}

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("gitbroker.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The binary with a clean environment: no stray `GITBROKER_…` variable.
fn gitbroker() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_gitbroker"));
    for (k, _) in std::env::vars() {
        if k.starts_with("GITBROKER_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.stdin(std::process::Stdio::null());
    cmd
}

async fn check_config(path: &Path) -> Output {
    gitbroker()
        .arg("check-config")
        .arg("--config")
        .arg(path)
        .output()
        .await
        .unwrap()
}

async fn bare_origin_idp() -> RunningMock {
    let mut config = MockConfig::demo();
    config.idp_at_origin = true;
    MockProvider::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_accepts_the_exact_bare_origin_issuer() {
    let mock = bare_origin_idp().await;
    let issuer = mock.issuer_url();
    assert!(
        !issuer.ends_with('/') && !issuer.ends_with("/idp"),
        "{issuer}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &config_text(dir.path(), &issuer, "", ""));
    let out = check_config(&path).await;
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("publishes exactly this issuer"),
        "{}",
        text(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_names_the_form_the_provider_publishes() {
    let mock = bare_origin_idp().await;
    let published = mock.issuer_url();
    let dir = tempfile::tempdir().unwrap();
    let configured = format!("{published}/");
    let path = write_config(dir.path(), &config_text(dir.path(), &configured, "", ""));
    let out = check_config(&path).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(err.contains("oidc.issuer:"), "{err}");
    assert!(
        err.contains(&format!("publishes its issuer as `{published}`")),
        "{err}"
    );
    assert!(
        err.contains(&format!("oidc.issuer = \"{published}\"")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_without_the_provider_says_so_and_passes() {
    // a port nothing listens on
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let issuer = format!("http://127.0.0.1:{port}");
    let path = write_config(dir.path(), &config_text(dir.path(), &issuer, "", ""));
    let out = check_config(&path).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("could not be reached to check oidc.issuer"),
        "{}",
        text(&out.stdout)
    );
}

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Reads until the server closes the connection; what it sent, if anything.
async fn read_to_close(stream: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    // a guard against a test that would hang, not a timing assertion
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        stream.read_to_end(&mut got),
    )
    .await
    .expect("the server never closed the connection");
    match read {
        Ok(_) => got,
        // a reset is a close too
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => got,
        Err(e) => panic!("reading: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_closed_at_the_header_timeout() {
    let h = Harness::start_with(
        Backend::Embedded,
        Options {
            extra_toml: "[server]\nheader_read_timeout_secs = 1\n".into(),
            ..Options::default()
        },
    )
    .await;
    let addr = h.url.trim_start_matches("http://").to_owned();
    // half a request: the headers never end
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n")
        .await
        .unwrap();
    // and a connection that never sends anything
    let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let answer = read_to_close(&mut slow).await;
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    read_to_close(&mut silent).await;
    // whole requests are still served
    let ok = reqwest::get(format!("{}/healthz", h.url)).await.unwrap();
    assert_eq!(ok.status(), 200);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The binary, serving `config`; stderr lines arrive on the channel.
struct Running {
    child: tokio::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn serve(config: &Path) -> Running {
        Self::serve_with_env(config, &[])
    }

    fn serve_with_env(config: &Path, env: &[(&str, &str)]) -> Running {
        let mut child = gitbroker()
            .envs(env.iter().copied())
            .arg("serve")
            .arg("--config")
            .arg(config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a log line containing `needle`.
    async fn wait_for(&mut self, needle: &str) -> String {
        let found = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            while let Some(line) = self.lines.recv().await {
                self.seen.push(line.clone());
                if line.contains(needle) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            _ => panic!(
                "no log line with {needle:?}; got:\n{}",
                self.seen.join("\n")
            ),
        }
    }

    fn signal(&self, name: &str) {
        let pid = self.child.id().unwrap().to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    async fn exit_code(&mut self) -> Option<i32> {
        tokio::time::timeout(std::time::Duration::from_secs(60), self.child.wait())
            .await
            .expect("the process did not exit")
            .unwrap()
            .code()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_request_in_flight_finish_then_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("listen = \"127.0.0.1:{port}\"");
    let extra = "[log]\nformat = \"pretty\"\nlevel = \"info,tower_http=debug\"\n[server]\nshutdown_grace_secs = 60\nbody_timeout_secs = 60\n";
    let text = config_text(dir.path(), "http://127.0.0.1:9/idp", &listen, extra)
        .replace("http://localhost:1", &format!("http://127.0.0.1:{port}"));
    let path = write_config(dir.path(), &text);
    let mut broker = Running::serve(&path);
    broker.wait_for("gitbroker serving").await;

    // a request whose body is still on its way
    let mut slow = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    slow.write_all(
        b"POST /logout HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 10\r\nConnection: close\r\n\r\ncsrf=",
    )
    .await
    .unwrap();
    broker.wait_for("started processing request").await;

    broker.signal("TERM");
    broker.wait_for("no longer accepting connections").await;
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "new connections are refused once shutdown began"
    );
    slow.write_all(b"abcde").await.unwrap();
    let answer = String::from_utf8(read_to_close(&mut slow).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 303"), "{answer}");
    assert!(answer.contains("location: /signed-out"), "{answer}");
    assert_eq!(
        broker.exit_code().await,
        Some(0),
        "{}",
        broker.seen.join("\n")
    );
}

/// Tracing context, through the real binary's JSON logs: every log line of a
/// request names its request id (the proxy's when plain, else a fresh one,
/// echoed in `X-Request-Id`) and the trace id of the caller's `traceparent`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_carry_the_request_id_and_the_callers_trace_id() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("listen = \"127.0.0.1:{port}\"");
    let extra = "[log]\nformat = \"json\"\nlevel = \"info\"\n";
    let text = config_text(dir.path(), "http://127.0.0.1:9/idp", &listen, extra)
        .replace("http://localhost:1", &format!("http://127.0.0.1:{port}"));
    let path = write_config(dir.path(), &text);
    let mut broker = Running::serve(&path);
    broker.wait_for("gitbroker serving").await;
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/api/v1/runtimes/x/token");

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = client
        .get(&url)
        .header("x-request-id", "proxy-req-4711")
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["x-request-id"], "proxy-req-4711");
    let line = broker.wait_for("proxy-req-4711").await;
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["span"]["request_id"], "proxy-req-4711", "{line}");
    assert_eq!(v["span"]["trace_id"], trace, "{line}");

    // an id that could forge a log line is replaced, and the new one echoed
    let r = client
        .get(&url)
        .header("x-request-id", "x\" forged=\"1")
        .send()
        .await
        .unwrap();
    let fresh = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(fresh.len(), 32, "{fresh}");
    assert!(fresh.bytes().all(|b| b.is_ascii_hexdigit()), "{fresh}");
    let line = broker.wait_for(&fresh).await;
    assert!(!line.contains("forged"), "{line}");
}

/// Behind a trusted proxy on loopback; `limits` is the `[rate_limit]` table.
async fn limited(backend: Backend, limits: &str) -> Harness {
    Harness::start_with(
        backend,
        Options {
            extra_toml: format!(
                "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n[rate_limit]\n{limits}\n"
            ),
            ..Options::default()
        },
    )
    .await
}

async fn redis_keys(h: &Harness) -> usize {
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
    keys.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_flood_gets_429_stores_nothing_and_others_sign_in() {
    let h = limited(Backend::Redis, "sign_in_per_ip = 5").await;
    let before = redis_keys(&h).await;
    let flooder = Browser::behind_proxy(&h.url, "203.0.113.7");
    let mut statuses = Vec::new();
    for _ in 0..40 {
        let r = flooder
            .client
            .get(format!("{}/login", h.url))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            assert!(r.headers().contains_key("retry-after"));
            assert!(
                r.headers()["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("text/html"),
                "pages get the HTML error page"
            );
            let body = r.text().await.unwrap();
            assert!(body.contains("Too many sign-in attempts"), "{body}");
        }
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 303).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 35);
    // sign-in starts keep nothing server-side
    assert_eq!(redis_keys(&h).await, before, "the store did not grow");

    // meanwhile a person behind the same proxy, from another address
    let alice = Browser::behind_proxy(&h.url, "198.51.100.20");
    alice.sign_in("alice").await;
    let page = alice.authorize("acme-prod").await;
    assert!(
        page.body
            .contains("authorized as alice for runtime acme-prod"),
        "{}",
        page.body
    );
    // the flooder's own X-Forwarded-For prefix is not believed: the proxy
    // appends the real address, and that one is limited
    let spoofed = Browser::behind_proxy(&h.url, "198.51.100.20, 203.0.113.7");
    assert_eq!(spoofed.get("/login").await.status, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_peers_cannot_choose_their_address() {
    // no trusted proxy: X-Forwarded-For is ignored, the peer is counted
    let h = Harness::start_with(
        Backend::Embedded,
        Options {
            extra_toml: "[rate_limit]\nsign_in_per_ip = 2\n".into(),
            ..Options::default()
        },
    )
    .await;
    for (i, client) in ["192.0.2.1", "192.0.2.2", "192.0.2.3"].iter().enumerate() {
        let status = Browser::behind_proxy(&h.url, client)
            .get("/login")
            .await
            .status;
        assert_eq!(status, if i < 2 { 303 } else { 429 }, "{client}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pasted_tokens_and_flow_starts_are_limited_per_user() {
    let h = limited(
        Backend::Embedded,
        "token_check_per_user = 2\nflow_start_per_user = 2",
    )
    .await;
    let alice = Browser::behind_proxy(&h.url, "198.51.100.20");
    alice.sign_in("alice").await;
    let csrf = alice.get("/tokens").await.csrf();
    let put = || {
        alice
            .client
            .put(format!("{}/api/v1/me/runtimes/acme-prod/token", h.url))
            .header("x-csrf-token", &csrf)
            .json(&serde_json::json!({ "token": "ghp_not-a-token-at-the-mock" }))
            .send()
    };
    for _ in 0..2 {
        assert_eq!(put().await.unwrap().status(), 422);
    }
    let r = put().await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["type"], "urn:gitbroker:problem:rate-limited");
    assert_eq!(body["status"], 429);
    assert!(
        body["detail"].as_str().unwrap().contains("your account"),
        "{body}"
    );
    // the same account from another address is the same user
    let elsewhere = Browser::behind_proxy(&h.url, "198.51.100.99");
    elsewhere.sign_in("alice").await;
    let page = elsewhere.get("/tokens").await;
    let pasted = elsewhere
        .submit_action(&page, "/tokens/acme-prod/pat")
        .await;
    assert_eq!(pasted.status, 429, "{}", pasted.body);
    assert!(
        pasted.body.contains("Too many tokens checked"),
        "{}",
        pasted.body
    );

    for _ in 0..2 {
        let provider = alice.start_authorize("acme-prod").await;
        assert_eq!(provider.status, 200, "{}", provider.body);
    }
    let tokens = alice.get("/tokens").await;
    let refused = alice
        .submit_action(&tokens, "/tokens/acme-prod/authorize")
        .await;
    assert_eq!(refused.status, 429);
    assert!(
        refused.body.contains("Too many authorizations started"),
        "{}",
        refused.body
    );
    // bob is not affected
    let bob = Browser::behind_proxy(&h.url, "198.51.100.20");
    bob.sign_in("bob").await;
    assert_eq!(bob.start_authorize("acme-prod").await.status, 200);
}

fn serving_config(dir: &Path, tables: &str) -> std::path::PathBuf {
    let port = free_port();
    let listen = format!("listen = \"127.0.0.1:{port}\"");
    let text = config_text(dir, "http://127.0.0.1:9/idp", &listen, tables)
        .replace("http://localhost:1", &format!("http://localhost:{port}"));
    write_config(dir, &text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_mode_is_loud_in_check_config_and_the_first_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = serving_config(
        dir.path(),
        "[demo]\nenabled = true\nmock_provider_listen = \"127.0.0.1:0\"\n",
    );
    let out = check_config(&path).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("DEMO MODE"),
        "{}",
        text(&out.stdout)
    );
    let mut broker = Running::serve(&path);
    let first = broker.wait_for("").await;
    assert!(first.contains("DEMO MODE"), "first line: {first}");
    broker.wait_for("gitbroker serving").await;
    assert!(
        broker
            .seen
            .iter()
            .any(|l| l.contains("mock provider listening")),
        "{}",
        broker.seen.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stray_demo_variable_starts_no_mock() {
    let dir = tempfile::tempdir().unwrap();
    let path = serving_config(dir.path(), "");
    let env = [("GITBROKER_DEMO__MOCK_PROVIDER_LISTEN", "127.0.0.1:0")];
    let out = gitbroker()
        .envs(env)
        .arg("check-config")
        .arg("--config")
        .arg(&path)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains("DEMO"), "{}", text(&out.stdout));
    let mut broker = Running::serve_with_env(&path, &env);
    broker.wait_for("gitbroker serving").await;
    let log = broker.seen.join("\n");
    assert!(
        !log.contains("DEMO MODE") && !log.contains("mock provider"),
        "{log}"
    );
}

fn content_type(r: &reqwest::Response) -> String {
    r.headers()["content-type"].to_str().unwrap().to_owned()
}

async fn assert_page(r: reqwest::Response, status: u16) {
    assert_eq!(r.status(), status);
    assert!(
        content_type(&r).starts_with("text/html"),
        "{}",
        content_type(&r)
    );
    let body = r.text().await.unwrap();
    assert!(
        body.contains("Back to Git Personal Access Tokens"),
        "{body}"
    );
}

async fn assert_problem(r: reqwest::Response, status: u16) -> serde_json::Value {
    assert_eq!(r.status(), status);
    assert_eq!(content_type(&r), "application/problem+json");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:gitbroker:problem:")
    );
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_are_error_pages_on_pages() {
    let h = Harness::start(Backend::Embedded).await;
    let alice = h.signed_in("alice").await;
    let c = &alice.client;
    // a form without its csrf field
    for path in [
        "/logout",
        "/tokens/acme-prod/authorize",
        "/tokens/acme-prod/delete",
        "/tokens/acme-prod/pat",
    ] {
        let r = c
            .post(format!("{}{path}", h.url))
            .form(&[("token", "x")])
            .send()
            .await
            .unwrap();
        assert_page(r, 400).await;
    }
    // not a form at all
    let r = c
        .post(format!("{}/logout", h.url))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_page(r, 400).await;
    // a query string that does not parse, a path segment that is not UTF-8
    let r = c
        .get(format!("{}/login?next=/a&next=/b", h.url))
        .send()
        .await
        .unwrap();
    assert_page(r, 400).await;
    let r = c
        .get(format!("{}/oauth/callback/%FF?state=x", h.url))
        .send()
        .await
        .unwrap();
    assert_page(r, 400).await;
    let r = c.put(format!("{}/tokens", h.url)).send().await.unwrap();
    assert_page(r, 405).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_are_problems_on_apis() {
    let h = Harness::start(Backend::Embedded).await;
    let alice = h.signed_in("alice").await;
    let csrf = alice.get("/tokens").await.csrf();
    let me = format!("{}/api/v1/me/runtimes/acme-prod/token", h.url);
    let put = |body: &'static str, ct: &'static str| {
        alice
            .client
            .put(&me)
            .header("x-csrf-token", &csrf)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    assert_problem(put("{not json", "application/json").await.unwrap(), 400).await;
    assert_problem(put("{}", "text/plain").await.unwrap(), 400).await;
    // a value of the wrong type is not echoed: it may be a token
    let body = assert_problem(
        put(
            r#"{"token":"ghp_first","also":"ghp_echoed_secret"}"#,
            "application/json",
        )
        .await
        .unwrap(),
        400,
    )
    .await;
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("also"), "{detail}");
    assert!(!detail.contains("ghp_echoed_secret"), "{detail}");

    let admin = h
        .admin_request(reqwest::Method::POST, "/oauth-apps")
        .header("content-type", "application/json")
        .body("[1,2]")
        .send()
        .await
        .unwrap();
    assert_problem(admin, 400).await;
    let r = reqwest::Client::new()
        .get(format!("{}/api/v1/runtimes/%FF/token", h.url))
        .bearer_auth(credential("acme-prod"))
        .send()
        .await
        .unwrap();
    assert_problem(r, 400).await;
    let r = reqwest::get(format!("{}/api/v1/nothing-here", h.url))
        .await
        .unwrap();
    assert_problem(r, 404).await;
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/me/tokens", h.url))
        .send()
        .await
        .unwrap();
    assert_problem(r, 405).await;
}
