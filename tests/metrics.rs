//! `/metrics`, end to end: scraped over HTTP from a running broker on Redis
//! after real flows, fetches, refreshes, checks and provider and store
//! failures; checked with `promtool check metrics`; counting what happened
//! under route templates and fixed outcome names, never an id, a token or a
//! path; and served on a listener of its own by the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

mod support;

use gitbroker::clock::ManualClock;
use std::sync::Arc;
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const ALICE: &str = "u-1001";

async fn scrape(url: &str) -> String {
    let r = reqwest::get(format!("{url}/metrics")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    r.text().await.unwrap()
}

/// `promtool check metrics` (Debian's `prometheus` package) on `text`:
/// no parse error, no lint problem.
async fn promtool_check(text: &str) {
    let mut child = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed (scripts/test.sh installs Debian's prometheus package)");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of the sample `series` (name and labels exactly as exposed).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

fn at_least(text: &str, series: &str, min: f64) {
    let v = sample(text, series).unwrap_or_else(|| panic!("no sample {series} in\n{text}"));
    assert!(v >= min, "{series} = {v}, expected at least {min}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_broker_counts_what_happened_and_passes_promtool() {
    let clock = Arc::new(ManualClock::new(gitbroker::clock::wall_now()));
    let mut h = Harness::start_with(
        Backend::Redis,
        Options {
            clock: Some(clock.clone()),
            expiring_tokens: true,
            ..Options::default()
        },
    )
    .await;
    let client = reqwest::Client::new();

    // an OAuth flow that completes, and a callback whose state is unknown
    let alice = h.signed_in("alice").await;
    alice.authorize("gitlab-rt").await;
    let bogus = alice
        .get(&format!(
            "{}/oauth/callback/gitlab-app?state=bogus-state-1234&code=c0de",
            h.url
        ))
        .await;
    assert_eq!(bogus.status, 400);

    // fetches: served, absent, unauthorized, the runtime's own (absent)
    let served = h.runtime_get("gitlab-rt", "gitlab-rt", ALICE).await;
    assert_eq!(served.status(), 200);
    let token: serde_json::Value = served.json().await.unwrap();
    let token = token["token"].as_str().unwrap().to_owned();
    assert_eq!(
        h.runtime_get("gitlab-rt", "gitlab-rt", "u-4242")
            .await
            .status(),
        404
    );
    let wrong = h
        .runtime_get_with("not-the-credential-0123456789", "acme-prod", ALICE)
        .await;
    assert_eq!(wrong.status(), 401);
    let own = client
        .get(format!("{}/api/v1/runtimes/acme-prod/token", h.url))
        .bearer_auth(credential("acme-prod"))
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 404);

    // a refresh on fetch: GitLab tokens live 2 hours
    clock.advance(chrono::Duration::hours(2) - chrono::Duration::seconds(1));
    let refreshed = h.runtime_get("gitlab-rt", "gitlab-rt", ALICE).await;
    assert_eq!(refreshed.status(), 200);

    // a pasted token, validated at the mock GitHub; then the API failing
    let pat = h.github_pat("bob", &["repo"]);
    h.assign_pat_as("u-1002", "acme-prod", &pat).await;
    h.mock.provider.switches().set_user_api_status(Some(502));
    let failing = h
        .state
        .lifecycle
        .assign_pat(
            &Harness::acme_user("u-1003"),
            "acme-staging",
            &[],
            gitbroker::providers::PatInput::new(&h.github_pat("carol", &["repo"]), None, None),
        )
        .await;
    assert!(failing.is_err());
    h.mock.provider.switches().set_user_api_status(None);

    // background checks, hours later
    clock.advance(chrono::Duration::hours(5));
    assert!(h.state.lifecycle.run_due().await.checked >= 1);

    // a path that matches no route, holding something secret-looking
    let nowhere = client
        .get(format!("{}/api/v1/nowhere/secret-path-4711?code=q", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(nowhere.status(), 404);

    let text = scrape(&h.url).await;
    promtool_check(&text).await;

    at_least(
        &text,
        r#"gitbroker_http_requests_total{method="GET",route="/api/v1/runtimes/{runtime}/users/{user}/token",status="200"}"#,
        2.0,
    );
    at_least(
        &text,
        r#"gitbroker_http_requests_total{method="GET",route="/api/v1/runtimes/{runtime}/users/{user}/token",status="401"}"#,
        1.0,
    );
    at_least(
        &text,
        r#"gitbroker_http_requests_total{method="GET",route="unmatched",status="404"}"#,
        1.0,
    );
    at_least(
        &text,
        r#"gitbroker_http_request_duration_seconds_count{method="GET",route="/api/v1/runtimes/{runtime}/token"}"#,
        1.0,
    );
    at_least(
        &text,
        r#"gitbroker_oauth_flows_started_total{provider="gitlab"}"#,
        1.0,
    );
    at_least(
        &text,
        r#"gitbroker_oauth_flows_completed_total{provider="gitlab"}"#,
        1.0,
    );
    at_least(
        &text,
        r#"gitbroker_oauth_flows_failed_total{reason="unknown_state"}"#,
        1.0,
    );
    for outcome in ["served", "absent", "unauthorized"] {
        at_least(
            &text,
            &format!(r#"gitbroker_token_fetches_total{{token="user",outcome="{outcome}"}}"#),
            1.0,
        );
    }
    at_least(
        &text,
        r#"gitbroker_token_fetches_total{token="runtime",outcome="absent"}"#,
        1.0,
    );
    at_least(
        &text,
        r#"gitbroker_token_refreshes_total{provider="gitlab",result="success"}"#,
        1.0,
    );
    at_least(
        &text,
        r#"gitbroker_token_validations_total{provider="github",result="valid"}"#,
        1.0,
    );
    at_least(
        &text,
        r#"gitbroker_provider_request_duration_seconds_count{provider="github"}"#,
        2.0,
    );
    at_least(
        &text,
        r#"gitbroker_provider_request_duration_seconds_count{provider="gitlab"}"#,
        2.0,
    );
    at_least(
        &text,
        r#"gitbroker_provider_request_errors_total{provider="github",error="http_5xx"}"#,
        1.0,
    );
    assert!(
        !text.contains(r#"provider="unknown""#),
        "every provider call is labelled:\n{text}"
    );
    at_least(
        &text,
        r#"gitbroker_store_operation_duration_seconds_count{op="record_get"}"#,
        1.0,
    );
    at_least(
        &text,
        r#"gitbroker_store_operation_duration_seconds_count{op="take"}"#,
        1.0,
    );
    for process in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "process_threads",
    ] {
        at_least(&text, process, 0.0);
    }
    // no ids, tokens, credentials or paths in any label
    for private in [
        "gitlab-rt",
        "acme-prod",
        ALICE,
        "u-4242",
        "alice",
        "bob",
        token.as_str(),
        pat.as_str(),
        &credential("gitlab-rt"),
        "bogus-state-1234",
        "secret-path-4711",
        "nowhere",
    ] {
        assert!(!text.contains(private), "{private} in the metrics:\n{text}");
    }

    // Prometheus asks for OpenMetrics
    let om = client
        .get(format!("{}/metrics", h.url))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        om.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let om = om.text().await.unwrap();
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(
        om.contains("# TYPE gitbroker_token_fetches counter"),
        "{om}"
    );

    // Redis gone: the fetch answers 503, the store's failures are counted
    h.redis.as_mut().unwrap().kill();
    let down = h.runtime_get("gitlab-rt", "gitlab-rt", ALICE).await;
    assert_eq!(down.status(), 503);
    let text = scrape(&h.url).await;
    promtool_check(&text).await;
    let unavailable: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("gitbroker_store_errors_total{") && l.contains(r#"error="unavailable""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(unavailable >= 1.0, "{text}");
    at_least(
        &text,
        r#"gitbroker_http_requests_total{method="GET",route="/api/v1/runtimes/{runtime}/users/{user}/token",status="503"}"#,
        1.0,
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The real binary with `[metrics] listen`: `/metrics` is there, and not on
/// the main listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_metrics_on_their_own_listener() {
    let dir = tempfile::tempdir().unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let config = format!(
        r#"public_url = "http://127.0.0.1:{port}"
listen = "127.0.0.1:{port}"
secure_cookies = false
allow_insecure_http = true
[log]
format = "pretty"
[store]
backend = "embedded"
path = "{store}"
[encryption]
keys = [{{ id = "k1", key = "{KEY}" }}]
[oidc]
issuer = "http://127.0.0.1:9/idp"
client_id = "gitbroker-tests"
client_secret = "{OIDC_SECRET}"
[metrics]
listen = "127.0.0.1:{metrics_port}"
"#,
        store = dir.path().join("store.redb").display(),
    );
    let path = dir.path().join("gitbroker.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_gitbroker"));
    for (k, _) in std::env::vars() {
        if k.starts_with("GITBROKER_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("gitbroker serving") {
                return;
            }
        }
        panic!("the broker exited before serving");
    })
    .await
    .expect("the broker serves within a minute");

    let main = format!("http://127.0.0.1:{port}");
    assert_eq!(
        reqwest::get(format!("{main}/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        reqwest::get(format!("{main}/metrics"))
            .await
            .unwrap()
            .status(),
        404
    );
    let text = scrape(&format!("http://127.0.0.1:{metrics_port}")).await;
    promtool_check(&text).await;
    at_least(
        &text,
        r#"gitbroker_http_requests_total{method="GET",route="/healthz",status="200"}"#,
        1.0,
    );
    at_least(
        &text,
        r#"gitbroker_http_requests_total{method="GET",route="unmatched",status="404"}"#,
        1.0,
    );
    at_least(&text, "process_start_time_seconds", 1.0);
    // the metrics listener serves nothing else
    assert_eq!(
        reqwest::get(format!("http://127.0.0.1:{metrics_port}/healthz"))
            .await
            .unwrap()
            .status(),
        404
    );
}
