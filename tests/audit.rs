//! The audit log end to end: what the lifecycle does lands in the store's
//! append-only log (a Redis stream, a redb table) and admins query it with
//! filters and cursors, or export it as JSON lines — never a secret.
#![allow(
    clippy::disallowed_methods,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code
)]

mod support;

use gitbroker::audit_log::{AuditLog, LOG};
use gitbroker::clock::ManualClock;
use gitbroker::config::AuditSettings;
use gitbroker::events::{Action, Actor, Event, EventSink};
use reqwest::Method;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

const ALICE: &str = "u-1001";

async fn audit(h: &Harness, query: &str) -> Value {
    h.state.audit.as_ref().unwrap().flush().await;
    let r = h
        .admin_request(Method::GET, &format!("/audit{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{query}: {}", r.text().await.unwrap());
    r.json().await.unwrap()
}

fn actions(v: &Value) -> Vec<String> {
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect()
}

async fn records_queries_and_exports(backend: Backend) {
    let h = Harness::start(backend).await;
    let mut secrets = vec![
        ADMIN_TOKEN.to_owned(),
        credential("acme-prod"),
        APP_SECRET.to_owned(),
    ];
    let alice = h.signed_in("alice").await;
    alice.authorize("acme-prod").await;
    for _ in 0..3 {
        let r = h.runtime_get("acme-prod", "acme-prod", ALICE).await;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        secrets.push(v["token"].as_str().unwrap().to_owned());
    }
    let pat = h.github_pat("dave", &["repo", "admin:repo_hook"]);
    secrets.push(pat.clone());
    let r = h
        .admin_request(Method::PUT, "/runtimes/acme-staging/git-token")
        .json(&serde_json::json!({ "token": pat }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page = alice.get("/tokens").await;
    alice.submit(&page, "sign-out").await;

    // everything, oldest first
    let all = audit(&h, "").await;
    assert_eq!(
        actions(&all),
        [
            "session.signed_in",
            "user_token.assigned",
            "user_token.read",
            "user_token.read",
            "user_token.read",
            "runtime_token.rotated",
            "session.signed_out"
        ]
    );
    assert!(all["next_cursor"].is_null());
    let assigned = &all["entries"][1];
    assert_eq!(assigned["actor"]["kind"], "user");
    assert_eq!(assigned["actor"]["id"], ALICE);
    assert_eq!(assigned["runtime"], "acme-prod");
    assert_eq!(assigned["user"], ALICE);
    assert_eq!(assigned["provider"], "github");
    assert_eq!(assigned["login"], "alice");
    assert_eq!(assigned["fingerprint"].as_str().unwrap().len(), 12);
    assert!(assigned["at"].as_str().is_some() && assigned["log_id"].as_str().is_some());
    assert_eq!(all["entries"][5]["actor"]["kind"], "admin");

    // filters
    let reads = audit(
        &h,
        "?runtime=acme-prod&user=u-1001&actor=runtime:acme-prod&action=user_token.read",
    )
    .await;
    assert_eq!(actions(&reads).len(), 3);
    let sessions = audit(&h, "?action=session.signed_in,session.signed_out").await;
    assert_eq!(
        actions(&sessions),
        ["session.signed_in", "session.signed_out"]
    );
    assert_eq!(
        actions(&audit(&h, "?actor=admin").await),
        ["runtime_token.rotated"]
    );
    assert_eq!(
        actions(&audit(&h, "?runtime=acme-staging").await),
        ["runtime_token.rotated"]
    );
    assert!(actions(&audit(&h, "?user=nobody").await).is_empty());
    let at = all["entries"][2]["at"].as_str().unwrap().to_owned();
    let since = audit(&h, &format!("?since={}", urlencode(&at))).await;
    assert!(
        actions(&since).len() >= 5 && actions(&since)[0] == "user_token.read",
        "{since}"
    );
    let until = audit(&h, "?until=2000-01-01T00:00:00Z").await;
    assert!(actions(&until).is_empty());

    // pages of two, by cursor, add up to everything
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = audit(&h, &format!("?limit=2{cursor}")).await;
        assert!(page["entries"].as_array().unwrap().len() <= 2);
        seen.extend(actions(&page));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, actions(&all));

    // the JSON lines export, by Accept header or by format
    for (accept, query) in [("application/x-ndjson", ""), ("*/*", "?format=jsonl")] {
        let r = h
            .admin_request(Method::GET, &format!("/audit{query}"))
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/x-ndjson");
        let body = r.text().await.unwrap();
        let lines: Vec<Value> = body
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 7);
        assert_eq!(lines[1], all["entries"][1]);
        for s in &secrets {
            assert!(!body.contains(s.as_str()), "a secret in the export");
        }
    }

    // ... and none in the store either
    let raw = h
        .store
        .log_read(
            LOG,
            gitbroker::store::LogId::MIN,
            gitbroker::store::LogId::MAX,
            1000,
        )
        .await
        .unwrap();
    assert_eq!(raw.len(), 7);
    for (_, bytes) in &raw {
        let text = String::from_utf8_lossy(bytes);
        for s in &secrets {
            assert!(!text.contains(s.as_str()));
        }
    }
}

fn urlencode(s: &str) -> String {
    s.replace(':', "%3A").replace('+', "%2B")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_queries_and_exports_on_embedded() {
    records_queries_and_exports(Backend::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_queries_and_exports_on_redis() {
    records_queries_and_exports(Backend::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_queries_are_400_problems_naming_the_parameter() {
    let h = Harness::start(Backend::Embedded).await;
    for (query, param) in [
        ("?limit=0", "limit"),
        ("?limit=1001", "limit"),
        ("?limit=ten", "limit"),
        ("?cursor=abc", "cursor"),
        ("?action=user_token.stolen", "action"),
        ("?actor=robot", "actor"),
        ("?since=yesterday", "since"),
        (
            "?since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z",
            "since",
        ),
        ("?format=xml", "format"),
        ("?colour=red", "colour"),
    ] {
        let r = h
            .admin_request(Method::GET, &format!("/audit{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{query}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let v: Value = r.json().await.unwrap();
        assert!(
            v["detail"].as_str().unwrap().contains(param),
            "{query}: {v}"
        );
    }
    let r = reqwest::Client::new()
        .get(format!("{}/api/v1/admin/audit", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = reqwest::Client::new()
        .get(format!("{}/api/v1/admin/audit", h.url))
        .bearer_auth(credential("acme-prod"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_is_a_503_and_loses_no_entry() {
    let mut h = Harness::start(Backend::Redis).await;
    let audit_log = h.state.audit.clone().unwrap();
    let ev = |i: usize| {
        Event::new(
            Action::RuntimeTokenRead,
            Actor::runtime("acme-prod"),
            chrono::Utc::now(),
        )
        .runtime("acme-prod")
        .outcome(format!("n{i}"))
    };
    audit_log.record(&ev(0)).await;
    audit_log.flush().await;
    let redis = h.redis.as_mut().unwrap();
    redis.kill();
    for path in [
        "/audit",
        "/audit?format=jsonl",
        "/webhooks",
        "/webhook-deliveries",
    ] {
        let r = h.admin_request(Method::GET, path).send().await.unwrap();
        assert_eq!(r.status(), 503, "{path}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
    // recorded while the store is down: kept in the buffer, retried
    for i in 1..=5 {
        audit_log.record(&ev(i)).await;
    }
    let flushed = tokio::spawn({
        let a = audit_log.clone();
        async move { a.flush().await }
    });
    while audit_log
        .stats()
        .retries
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0
    {
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    h.redis.as_mut().unwrap().restart(); // empty: the first entry was in memory only
    flushed.await.unwrap();
    let v = audit(&h, "").await;
    let outcomes: Vec<_> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["outcome"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(outcomes, ["n1", "n2", "n3", "n4", "n5"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_trims_by_count_and_by_age() {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let h = Harness::start_with(
        Backend::Embedded,
        Options {
            clock: Some(clock.clone()),
            extra_toml: "[audit]\nretention_days = 1\nmax_entries = 100\n".into(),
            ..Options::default()
        },
    )
    .await;
    h.assign_oauth_as(ALICE, "acme-prod", "gho_retention_token")
        .await;
    for _ in 0..150 {
        assert_eq!(
            h.runtime_get("acme-prod", "acme-prod", ALICE)
                .await
                .status(),
            200
        );
    }
    h.state.audit.as_ref().unwrap().flush().await;
    assert_eq!(h.store.log_len(LOG).await.unwrap(), 100);
    // two days later, one new entry: the old ones are past retention
    clock.advance(chrono::Duration::days(2));
    assert_eq!(
        h.runtime_get("acme-prod", "acme-prod", ALICE)
            .await
            .status(),
        200
    );
    let v = audit(&h, "").await;
    assert_eq!(actions(&v), ["user_token.read"]);
    assert_eq!(h.store.log_len(LOG).await.unwrap(), 1);
}

/// How many events a second the writer puts in the store (printed; the
/// figure is in BENCHMARKS.md), and that none is lost on the way.
async fn writer_throughput(backend: Backend) {
    let h = Harness::start(backend).await;
    let audit = Arc::new(AuditLog::start(
        h.store.clone(),
        h.clock.clone(),
        AuditSettings {
            max_entries: 10_000_000,
            ..AuditSettings::default()
        },
    ));
    const N: usize = 20_000;
    let before = h.store.log_len(LOG).await.unwrap();
    let start = Instant::now();
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let audit = audit.clone();
            tokio::spawn(async move {
                for i in 0..N / 8 {
                    let e = Event::new(
                        Action::UserTokenRead,
                        Actor::runtime("acme-prod"),
                        chrono::Utc::now(),
                    )
                    .runtime("acme-prod")
                    .user(format!("u-{t}-{i}"))
                    .provider("github")
                    .fingerprint("0123456789ab");
                    audit.record(&e).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    audit.flush().await;
    let took = start.elapsed();
    assert_eq!(h.store.log_len(LOG).await.unwrap() - before, N as u64);
    println!(
        "audit writer on {backend:?}: {N} events in {took:?} = {:.0} events/s",
        N as f64 / took.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_throughput_on_embedded() {
    writer_throughput(Backend::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_throughput_on_redis() {
    writer_throughput(Backend::Redis).await;
}

/// What the audit log adds to a runtime token fetch: the same fetches with
/// and without it, back to back (debug build; printed for BENCHMARKS.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_cost_of_the_audit_log() {
    const N: usize = 1500;
    let mut rates = Vec::new();
    for enabled in [false, true] {
        let h = Harness::start_with(
            Backend::Redis,
            Options {
                extra_toml: format!("[audit]\nenabled = {enabled}\n"),
                ..Options::default()
            },
        )
        .await;
        assert_eq!(h.state.audit.is_some(), enabled);
        h.assign_oauth_as(ALICE, "acme-prod", "gho_fetch_cost_token")
            .await;
        let client = reqwest::Client::new();
        let url = format!("{}/api/v1/runtimes/acme-prod/users/{ALICE}/token", h.url);
        let start = Instant::now();
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (client, url) = (client.clone(), url.clone());
                tokio::spawn(async move {
                    for _ in 0..N / 8 {
                        let r = client
                            .get(&url)
                            .bearer_auth(credential("acme-prod"))
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(r.status(), 200);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let took = start.elapsed();
        if let Some(a) = &h.state.audit {
            a.flush().await;
            // the assignment and every read
            assert_eq!(
                h.store.log_len(LOG).await.unwrap(),
                N as u64 - N as u64 % 8 + 1
            );
        } else {
            assert_eq!(h.store.log_len(LOG).await.unwrap(), 0);
        }
        rates.push(N as f64 / took.as_secs_f64());
    }
    println!(
        "runtime token fetches on Redis (debug build, 8 clients): {:.0}/s without the audit log, {:.0}/s with it",
        rates[0], rates[1]
    );
}

/// Admin changes to OAuth apps and runtimes, and checks, are in the log
/// too, with the admin as actor and without the client secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_changes_and_checks_are_recorded() {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let h = Harness::start_with(
        Backend::Embedded,
        Options {
            clock: Some(clock.clone()),
            ..Options::default()
        },
    )
    .await;
    let base = h.mock.base_url.trim_end_matches('/').to_owned();
    let secret = "very-secret-client-secret-of-gh2";
    let app = serde_json::json!({"id": "gh2", "provider": "github", "base_url": base,
        "client_id": "cid-2", "client_secret": secret, "scopes": ["repo"]});
    let r = h
        .admin_request(Method::POST, "/oauth-apps")
        .json(&app)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = h
        .admin_request(Method::PUT, "/oauth-apps/gh2")
        .json(&app)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = h
        .admin_request(Method::DELETE, "/oauth-apps/gh2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = h
        .admin_request(Method::PUT, "/runtimes/acme-staging")
        .json(&serde_json::json!({"id": "acme-staging", "account": "acme", "git_host": "github.com", "oauth_app": "github-app"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let token = h.mock.provider.issue_oauth_token(
        gitbroker::mock::Flavour::Github,
        "alice",
        "test-client-id",
        &["repo"],
    );
    h.assign_oauth_as(ALICE, "acme-prod", &token).await;
    clock.advance(chrono::Duration::hours(5));
    assert!(h.state.lifecycle.run_due().await.checked >= 1);
    let v = audit(&h, "?actor=admin").await;
    assert_eq!(
        actions(&v),
        [
            "oauth_app.created",
            "oauth_app.updated",
            "oauth_app.deleted",
            "runtime.updated"
        ]
    );
    assert_eq!(v["entries"][0]["outcome"], "gh2");
    assert_eq!(v["entries"][0]["actor"]["id"], "admin-api-token");
    assert_eq!(v["entries"][3]["runtime"], "acme-staging");
    let checks = audit(&h, "?action=user_token.checked").await;
    assert_eq!(actions(&checks), ["user_token.checked"]);
    assert_eq!(checks["entries"][0]["outcome"], "valid");
    assert_eq!(checks["entries"][0]["actor"]["kind"], "system");
    let all = h
        .admin_request(Method::GET, "/audit?format=jsonl")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!all.contains(secret) && !all.contains(&token));
}
