//! A runtime that needs a user's token that is not there yet waits for it
//! (`?wait=`) instead of polling: released within a second when the user
//! authorizes — on another replica, through Redis pub/sub — or ended with
//! the usual 404; bounded in time and in number; a client that goes away
//! leaves nothing behind.
#![allow(
    clippy::disallowed_methods,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code
)]

mod support;

use gitbroker::providers::PatInput;
use serde_json::Value;
use std::time::{Duration, Instant};
use support::*;

const ALICE: &str = "u-1001";

fn wait_url(base: &str, runtime: &str, user: &str, wait: &str) -> String {
    format!("{base}/api/v1/runtimes/{runtime}/users/{user}/token?wait={wait}")
}

fn fetch(url: String, runtime: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .get(url)
        .bearer_auth(credential(runtime))
}

/// Until `state` has `n` requests waiting (an internal state with no event
/// to await: looked at every 5 ms, for at most 10 s).
async fn until_waiting(state: &gitbroker::AppState, n: usize) {
    let start = Instant::now();
    while state.signals.waiting() != n {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{} waiting, not {n}",
            state.signals.waiting()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn released_across_replicas_when_the_user_authorizes() {
    let h = Harness::start(Backend::Redis).await;
    let other = h.another_replica().await;
    let waiter =
        tokio::spawn(fetch(wait_url(&h.url, "acme-prod", ALICE, "20s"), "acme-prod").send());
    until_waiting(&h.state, 1).await;
    // the user authorizes through the other replica
    let pat = h.github_pat("alice", &["repo"]);
    let authorized = Instant::now();
    other
        .lifecycle
        .assign_pat(
            &Harness::acme_user(ALICE),
            "acme-prod",
            &[],
            PatInput::new(&pat, None, None),
        )
        .await
        .unwrap();
    let r = waiter.await.unwrap().unwrap();
    let released = authorized.elapsed();
    eprintln!("wait released {released:?} after the assignment on the other replica");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["token"], pat.as_str());
    assert!(
        released < Duration::from_secs(1),
        "released after {released:?}"
    );
    assert_eq!(h.state.signals.waiting(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_ends_with_the_usual_404() {
    let h = Harness::start(Backend::Embedded).await;
    let started = Instant::now();
    let r = fetch(wait_url(&h.url, "acme-prod", ALICE, "300ms"), "acme-prod")
        .send()
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "urn:gitbroker:problem:no-user-token");
    // released in-process on the embedded store
    let waiter = tokio::spawn(
        fetch(
            wait_url(&h.url, "acme-staging", ALICE, "20s"),
            "acme-staging",
        )
        .send(),
    );
    until_waiting(&h.state, 1).await;
    let alice = h.signed_in("alice").await;
    alice.authorize("acme-staging").await;
    let r = waiter.await.unwrap().unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_are_bounded_and_cancelled_with_their_client() {
    let h = Harness::start_with(
        Backend::Embedded,
        Options {
            lifecycle: "wait_max_requests = 2".into(),
            ..Options::default()
        },
    )
    .await;
    let a = tokio::spawn(fetch(wait_url(&h.url, "acme-prod", ALICE, "20s"), "acme-prod").send());
    let b = tokio::spawn(fetch(wait_url(&h.url, "acme-prod", "u-1002", "20s"), "acme-prod").send());
    until_waiting(&h.state, 2).await;
    let r = fetch(wait_url(&h.url, "acme-prod", "u-1003", "20s"), "acme-prod")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "urn:gitbroker:problem:too-many-waiting");
    // the clients go away: their waits end with them
    a.abort();
    b.abort();
    until_waiting(&h.state, 0).await;
    assert_eq!(h.state.waiting.available_permits(), 2);
    // and a new wait is taken again
    let r = fetch(wait_url(&h.url, "acme-prod", ALICE, "100ms"), "acme-prod")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // a wait never outlasts the configured maximum (capped, not refused)
    assert!(h.state.wait_max() <= Duration::from_secs(30));
    // bad waits are 400s that say why
    for (wait, said) in [("ten", "duration"), ("5h", "unit")] {
        let r = fetch(wait_url(&h.url, "acme-prod", ALICE, wait), "acme-prod")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let v: Value = r.json().await.unwrap();
        assert!(v["detail"].as_str().unwrap().contains(said), "{v}");
    }
    let r = fetch(
        format!("{}/api/v1/runtimes/acme-prod/token?wait=5s", h.url),
        "acme-prod",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
}
