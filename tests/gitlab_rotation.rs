//! Git Runtime tokens that are GitLab PATs rotating themselves before they
//! expire (`rotate_runtime_token`), end to end: the admin API opts a
//! runtime in, the broker (on a manual clock) rotates at fetch and in the
//! background with `POST /personal_access_tokens/self/rotate` at the mock
//! over real HTTP, and the mock's GitLab semantics (old token revoked, a
//! rotated token rotated again revokes its successor) judge the result.
#![allow(
    clippy::disallowed_methods,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code
)]

mod support;

use chrono::{Duration, Utc};
use gitbroker::clock::{Clock, ManualClock};
use gitbroker::mock::{Flavour, PatSpec};
use serde_json::Value;
use std::sync::Arc;
use support::*;

async fn start(backend: Backend) -> (Harness, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let h = Harness::start_with(
        backend,
        Options {
            clock: Some(clock.clone()),
            ..Options::default()
        },
    )
    .await;
    (h, clock)
}

/// A GitLab PAT of `bob` at the mock, expiring in `days` (real time).
fn gitlab_pat(h: &Harness, kind: &str, scopes: &[&str], days: i64) -> String {
    h.mock.provider.create_pat(PatSpec {
        flavour: Flavour::Gitlab,
        owner: "bob".into(),
        kind: kind.into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        expires_at: Some(Utc::now() + Duration::days(days)),
        repositories: Vec::new(),
        email: None,
    })
}

/// Registers runtime `id` on the mock's GitLab through the admin API and
/// returns its credential.
async fn register(h: &Harness, id: &str, token: &str, rotate: bool) -> String {
    let r = h
        .admin_request(reqwest::Method::POST, "/runtimes")
        .json(&serde_json::json!({
            "id": id,
            "account": "acme",
            "git_host": "gitlab.com",
            "provider": "gitlab",
            "base_url": format!("{}/gitlab", h.mock.base_url.trim_end_matches('/')),
            "rotate_runtime_token": rotate,
            "git_token": { "token": token },
        }))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["rotate_runtime_token"], rotate, "{v}");
    v["credential"].as_str().unwrap().to_owned()
}

async fn fetch_at(url: &str, id: &str, credential: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{url}/api/v1/runtimes/{id}/token"))
        .bearer_auth(credential)
        .send()
        .await
        .unwrap()
}

async fn served(url: &str, id: &str, credential: &str) -> String {
    let r = fetch_at(url, id, credential).await;
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{v}");
    v["token"].as_str().unwrap().to_owned()
}

async fn git_token_status(h: &Harness, id: &str) -> Value {
    h.admin_request(reqwest::Method::GET, &format!("/runtimes/{id}/git-token"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// What the mock's GitLab says about a token: HTTP status and body of
/// `GET /api/v4/personal_access_tokens/self`.
async fn at_gitlab(h: &Harness, token: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(format!(
            "{}/gitlab/api/v4/personal_access_tokens/self",
            h.mock.base_url.trim_end_matches('/')
        ))
        .header("PRIVATE-TOKEN", token)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn rotations(h: &Harness) -> (u64, u64) {
    let t = h.mock.provider.traffic_stats();
    (t.pat_rotate_requests, t.pat_rotations)
}

/// Inside the default 7-day margin of a token that expires in 9 days (and
/// a short walk for the background's minute-by-minute due index).
const INTO_MARGIN: Duration = Duration::days(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_inside_its_margin_rotates_at_fetch() {
    let (h, clock) = start(Backend::Embedded).await;
    let old = gitlab_pat(&h, "personal", &["api", "read_repository"], 9);
    let credential = register(&h, "gl-rot", &old, true).await;

    // outside the margin: served as it is
    assert_eq!(served(&h.url, "gl-rot", &credential).await, old);
    assert_eq!(rotations(&h), (0, 0));

    clock.advance(INTO_MARGIN);
    let new = served(&h.url, "gl-rot", &credential).await;
    assert_ne!(new, old);
    assert!(new.starts_with("glpat-"));
    assert_eq!(rotations(&h), (1, 1));
    // GitLab's side: the old token is revoked, the new one works
    let (status, body) = at_gitlab(&h, &old).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("Token was revoked"),
        "{body}"
    );
    let (status, body) = at_gitlab(&h, &new).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["active"], true);
    // it expires rotated_runtime_token_days (90) after the rotation
    let expected = (clock.now() + Duration::days(90)).date_naive();
    assert_eq!(body["expires_at"], expected.format("%Y-%m-%d").to_string());
    let v = git_token_status(&h, "gl-rot").await;
    assert_eq!(v["status"]["state"], "valid", "{v}");
    assert!(v["rotated_at"].is_string(), "{v}");
    assert!(v["rotation_error"].is_null(), "{v}");
    assert!(
        v["expires_at"]
            .as_str()
            .unwrap()
            .starts_with(&expected.format("%Y-%m-%d").to_string()),
        "{v}"
    );

    // served again without another rotation
    assert_eq!(served(&h.url, "gl-rot", &credential).await, new);
    assert_eq!(rotations(&h), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_rotates_ahead_of_the_fetch() {
    let (h, clock) = start(Backend::Embedded).await;
    let old = gitlab_pat(&h, "personal", &["api"], 9);
    let credential = register(&h, "gl-bg", &old, true).await;
    assert_eq!(h.state.lifecycle.run_due().await.refreshed, 0);
    clock.advance(INTO_MARGIN);
    let report = h.state.lifecycle.run_due().await;
    assert_eq!(report.refreshed, 1, "{report:?}");
    assert_eq!(rotations(&h), (1, 1));
    let new = served(&h.url, "gl-bg", &credential).await;
    assert_ne!(new, old);
    assert_eq!(at_gitlab(&h, &new).await.0, 200);
    // nothing more to do
    assert_eq!(h.state.lifecycle.run_due().await.refreshed, 0);
    assert_eq!(rotations(&h), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtimes_that_do_not_opt_in_never_rotate() {
    let (h, clock) = start(Backend::Embedded).await;
    let old = gitlab_pat(&h, "personal", &["api"], 9);
    let credential = register(&h, "gl-still", &old, false).await;
    clock.advance(INTO_MARGIN);
    h.state.lifecycle.run_due().await;
    assert_eq!(served(&h.url, "gl-still", &credential).await, old);
    assert_eq!(rotations(&h), (0, 0));
}

/// A provider that fails for now: nothing is lost, the old token is served,
/// the rotation pauses and is retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temporary_failure_keeps_the_old_token_and_retries() {
    let (h, clock) = start(Backend::Embedded).await;
    let old = gitlab_pat(&h, "personal", &["api", "read_repository"], 9);
    let credential = register(&h, "gl-tmp", &old, true).await;
    h.mock.provider.switches().set_pat_rotate_status(Some(503));
    clock.advance(INTO_MARGIN);
    assert_eq!(served(&h.url, "gl-tmp", &credential).await, old);
    assert_eq!(rotations(&h), (1, 0));
    // paused: the next fetches do not ask again
    assert_eq!(served(&h.url, "gl-tmp", &credential).await, old);
    assert_eq!(rotations(&h), (1, 0));
    assert_eq!(
        at_gitlab(&h, &old).await.0,
        200,
        "the old token still works"
    );
    let v = git_token_status(&h, "gl-tmp").await;
    assert!(v["rotation_error"].is_null(), "{v}");

    h.mock.provider.switches().set_pat_rotate_status(None);
    clock.advance(Duration::minutes(1));
    let new = served(&h.url, "gl-tmp", &credential).await;
    assert_ne!(new, old);
    assert_eq!(rotations(&h), (2, 1));
    assert_eq!(at_gitlab(&h, &new).await.0, 200);
}

/// GitLab rotated, but the answer never arrived: the old token is never
/// rotated again (that would revoke the lost successor's replacement too);
/// once GitLab says the old one is revoked, the runtime token is invalid
/// with a reason for the admin, and the broker stops asking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_is_looked_into_never_rotated_twice() {
    let (h, clock) = start(Backend::Embedded).await;
    let old = gitlab_pat(&h, "personal", &["api", "read_repository"], 9);
    let credential = register(&h, "gl-lost", &old, true).await;
    h.mock.provider.switches().set_pat_rotate_lose_answer(true);
    clock.advance(INTO_MARGIN);
    // the broker cannot know yet: the stored token is still served
    assert_eq!(served(&h.url, "gl-lost", &credential).await, old);
    assert_eq!(rotations(&h), (1, 1));
    h.mock.provider.switches().set_pat_rotate_lose_answer(false);

    clock.advance(Duration::minutes(1));
    let r = fetch_at(&h.url, "gl-lost", &credential).await;
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["type"], "urn:gitbroker:problem:runtime-token-revoked",
        "{v}"
    );
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("never received the new token"),
        "{v}"
    );
    let v = git_token_status(&h, "gl-lost").await;
    assert_eq!(v["status"]["state"], "invalid", "{v}");
    assert_eq!(
        v["rotation_error"],
        "gitbroker rotated this Git Runtime token at GitLab but never received the new token (the answer was lost); the old one is revoked, so an admin must set a new Git Runtime token",
        "{v}"
    );
    // no second rotation with the old token, however often it is asked for
    for _ in 0..3 {
        clock.advance(Duration::hours(1));
        h.state.lifecycle.run_due().await;
        assert_eq!(fetch_at(&h.url, "gl-lost", &credential).await.status(), 404);
    }
    assert_eq!(rotations(&h), (1, 1));

    // an admin sets a new token: served, and it rotates again in its time
    let replacement = gitlab_pat(&h, "personal", &["api"], 120);
    let r = h
        .admin_request(reqwest::Method::PUT, "/runtimes/gl-lost/git-token")
        .json(&serde_json::json!({ "token": replacement }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(served(&h.url, "gl-lost", &credential).await, replacement);
    let v = git_token_status(&h, "gl-lost").await;
    assert!(v["rotation_error"].is_null(), "{v}");
}

/// Someone rotated the token by hand: GitLab answers the broker's rotation
/// with 401 and revokes the hand-made successor too. The runtime token is
/// then invalid, with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_rotated_elsewhere_is_refused_with_the_right_status() {
    let (h, clock) = start(Backend::Embedded).await;
    let old = gitlab_pat(&h, "personal", &["api", "read_repository"], 9);
    let credential = register(&h, "gl-reuse", &old, true).await;
    let r = reqwest::Client::new()
        .post(format!(
            "{}/gitlab/api/v4/personal_access_tokens/self/rotate",
            h.mock.base_url.trim_end_matches('/')
        ))
        .header("PRIVATE-TOKEN", &old)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let by_hand: Value = r.json().await.unwrap();
    let by_hand = by_hand["token"].as_str().unwrap().to_owned();
    assert_eq!(at_gitlab(&h, &by_hand).await.0, 200);

    clock.advance(INTO_MARGIN);
    let r = fetch_at(&h.url, "gl-reuse", &credential).await;
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["type"], "urn:gitbroker:problem:runtime-token-revoked",
        "{v}"
    );
    let v = git_token_status(&h, "gl-reuse").await;
    assert_eq!(v["status"]["state"], "invalid", "{v}");
    assert_eq!(
        v["status"]["reason"],
        "GitLab rejected the Git Runtime token when gitbroker rotated it: it was revoked or expired (rotating an already rotated token revokes its successor too); an admin must set a new Git Runtime token",
        "{v}"
    );
    // GitLab's reuse detection: the hand-made successor is dead too
    assert_eq!(at_gitlab(&h, &by_hand).await.0, 401);
    assert_eq!(rotations(&h), (2, 1));
}

/// A refusal that leaves the old token alive (here GitLab's 403): it is
/// still served until it expires, the admin sees why rotation stopped, and
/// the broker does not ask again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_rotation_keeps_serving_and_tells_the_admin() {
    let (h, clock) = start(Backend::Embedded).await;
    let old = gitlab_pat(&h, "personal", &["api", "read_repository"], 9);
    let credential = register(&h, "gl-403", &old, true).await;
    h.mock.provider.switches().set_pat_rotate_status(Some(403));
    clock.advance(INTO_MARGIN);
    assert_eq!(served(&h.url, "gl-403", &credential).await, old);
    let v = git_token_status(&h, "gl-403").await;
    assert_eq!(
        v["rotation_error"],
        "GitLab refused to rotate the token (HTTP 403: 403 Forbidden); an admin must set a new Git Runtime token before this one expires",
        "{v}"
    );
    assert_eq!(v["status"]["state"], "expiring_soon", "{v}");
    assert!(
        v["status"]["reason"]
            .as_str()
            .unwrap()
            .contains("automatic rotation stopped: GitLab refused"),
        "{v}"
    );
    h.mock.provider.switches().set_pat_rotate_status(None);
    clock.advance(Duration::hours(1));
    h.state.lifecycle.run_due().await;
    assert_eq!(served(&h.url, "gl-403", &credential).await, old);
    assert_eq!(rotations(&h), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_is_refused_for_runtimes_not_on_gitlab() {
    let (h, _clock) = start(Backend::Embedded).await;
    let pat = h.github_pat("dave", &["repo", "admin:repo_hook"]);
    let r = h
        .admin_request(reqwest::Method::POST, "/runtimes")
        .json(&serde_json::json!({
            "id": "gh-rot",
            "account": "acme",
            "git_host": "github.com",
            "oauth_app": "github-app",
            "rotate_runtime_token": true,
            "git_token": { "token": pat },
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["detail"].as_str().unwrap().contains(
            "rotate_runtime_token: only GitLab Git Runtime tokens can rotate themselves; this runtime's provider is `github`"
        ),
        "{v}"
    );
    // and the configuration file refuses to start, naming the key
    let toml = h.config_toml().replacen(
        "oauth_app = \"github-app\"\ncredential",
        "oauth_app = \"github-app\"\nrotate_runtime_token = true\ncredential",
        1,
    );
    let e = match gitbroker::config::Settings::from_toml_str(&toml) {
        Ok(_) => panic!("a GitHub runtime that rotates its token was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("runtimes[0].rotate_runtime_token"), "{e}");
    assert!(
        e.contains("only GitLab Git Runtime tokens can rotate themselves"),
        "{e}"
    );
}

/// Two replicas on one Redis, many concurrent fetches and background passes
/// inside the margin: exactly one rotation at GitLab, and every answer, on
/// both replicas, is the new token.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_rotate_exactly_once() {
    let (h, clock) = start(Backend::Redis).await;
    let old = gitlab_pat(&h, "personal", &["api", "read_repository"], 9);
    let credential = register(&h, "gl-ha", &old, true).await;
    let (replica, replica_url) = h.serve_replica(|t| t).await;
    // each GitLab API call takes a while, so the replicas overlap
    h.mock
        .provider
        .switches()
        .update(|s| s.api_delay_ms = Some(50));
    clock.advance(INTO_MARGIN);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let url = if i % 2 == 0 {
            h.url.clone()
        } else {
            replica_url.clone()
        };
        let credential = credential.clone();
        tasks.spawn(async move { served(&url, "gl-ha", &credential).await });
    }
    let (a, b) = (h.state.lifecycle.clone(), replica.lifecycle.clone());
    let passes = tokio::spawn(async move { tokio::join!(a.run_due(), b.run_due()) });
    let mut seen = std::collections::BTreeSet::new();
    while let Some(t) = tasks.join_next().await {
        seen.insert(t.unwrap());
    }
    passes.await.unwrap();
    assert_eq!(seen.len(), 1, "every answer is the same token");
    let new = seen.into_iter().next().unwrap();
    assert_ne!(new, old);
    assert_eq!(rotations(&h), (1, 1));
    h.mock.provider.switches().update(|s| s.api_delay_ms = None);
    assert_eq!(served(&replica_url, "gl-ha", &credential).await, new);
    assert_eq!(served(&h.url, "gl-ha", &credential).await, new);
    assert_eq!(at_gitlab(&h, &new).await.0, 200);
    assert_eq!(at_gitlab(&h, &old).await.0, 401);
}

/// Every log line of a rotation (at the broker and the mock, at debug
/// level), a lost answer and its inquiry included: neither the old nor
/// the new token appears, the audit line names them by fingerprint.
/// The subscriber is process-wide: the other tests of this binary log into
/// it too, which only adds lines to search.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_tokens_never_reach_the_logs() {
    let capture = LogCapture::install("debug,cookie_store=off");
    let (h, clock) = start(Backend::Embedded).await;
    let old = gitlab_pat(&h, "personal", &["api", "read_repository"], 9);
    let credential = register(&h, "gl-logs", &old, true).await;
    clock.advance(INTO_MARGIN);
    let new = served(&h.url, "gl-logs", &credential).await;
    assert_ne!(new, old);
    // a second runtime whose rotation answer is lost, then looked into
    let lost = gitlab_pat(&h, "personal", &["api", "read_repository"], 9);
    let lost_credential = register(&h, "gl-logs-lost", &lost, true).await;
    h.mock.provider.switches().set_pat_rotate_lose_answer(true);
    served(&h.url, "gl-logs-lost", &lost_credential).await;
    h.mock.provider.switches().set_pat_rotate_lose_answer(false);
    clock.advance(Duration::minutes(1));
    h.state.lifecycle.run_due().await;
    assert_eq!(
        fetch_at(&h.url, "gl-logs-lost", &lost_credential)
            .await
            .status(),
        404
    );
    let logs = capture.text();
    assert!(
        logs.contains("Git Runtime token rotated automatically"),
        "the rotation was logged ({} bytes)",
        logs.len()
    );
    for secret in [&old, &new, &lost, &credential, &lost_credential] {
        assert!(!logs.contains(secret.as_str()), "a token reached the logs");
        // nor the part after the prefix, cut anywhere
        assert!(!logs.contains(&secret[6..]), "a token reached the logs");
    }
}

/// The store stops taking writes between GitLab's answer and the write of
/// the new token (Redis `CLIENT PAUSE … WRITE`): the write is retried until
/// the store takes it, and the new token is served — nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_stalls_after_the_rotation_loses_nothing() {
    let (h, clock) = start(Backend::Redis).await;
    let old = gitlab_pat(&h, "personal", &["api", "read_repository"], 9);
    let credential = register(&h, "gl-stall", &old, true).await;
    clock.advance(INTO_MARGIN);
    // hold the rotation request at the mock until the store is paused
    h.mock
        .provider
        .switches()
        .update(|s| s.api_delay_ms = Some(60_000));
    let url = h.url.clone();
    let c = credential.clone();
    let fetch = tokio::spawn(async move { served(&url, "gl-stall", &c).await });
    // the intent is written before the request is sent
    h.mock
        .provider
        .wait_until(|_, t| t.api_in_flight >= 1)
        .await;
    let mut redis = h
        .redis
        .as_ref()
        .unwrap()
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(3_000)
        .arg("WRITE")
        .query_async(&mut redis)
        .await
        .unwrap();
    h.mock.provider.switches().update(|s| s.api_delay_ms = None);
    let new = fetch.await.unwrap();
    assert_ne!(new, old);
    assert_eq!(rotations(&h), (1, 1));
    assert_eq!(at_gitlab(&h, &new).await.0, 200);
    assert_eq!(served(&h.url, "gl-stall", &credential).await, new);
    let v = git_token_status(&h, "gl-stall").await;
    assert_eq!(v["status"]["state"], "valid", "{v}");
    assert!(v["rotated_at"].is_string(), "{v}");
}

/// `gitbroker runtime register --rotate-runtime-token` opts the runtime in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_cli_opts_in() {
    use tokio::io::AsyncWriteExt;
    let (h, _clock) = start(Backend::Embedded).await;
    let token = gitlab_pat(&h, "personal", &["api"], 60);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_gitbroker"))
        .args([
            "runtime",
            "register",
            "--url",
            &h.url,
            "--id",
            "gl-cli",
            "--account",
            "acme",
            "--git-host",
            "gitlab.com",
            "--provider",
            "gitlab",
            "--base-url",
            &format!("{}/gitlab", h.mock.base_url.trim_end_matches('/')),
            "--rotate-runtime-token",
        ])
        .env("GITBROKER_ADMIN_TOKEN", ADMIN_TOKEN)
        .env_remove("GITBROKER_CONFIG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(token.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("runtime gl-cli registered"), "{stdout}");
    let v: Value = h
        .admin_request(reqwest::Method::GET, "/runtimes/gl-cli")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["rotate_runtime_token"], true, "{v}");
}
