//! Background checks of every stored token: 10,000 tokens on Redis, two
//! replicas, a mock that counts concurrency and enforces a rate limit. Each
//! token is checked exactly once per interval, provider calls stay within
//! the configured concurrency and the rate limit, and every token ends with
//! the status the provider's answer calls for.
#![allow(
    clippy::disallowed_methods,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code
)]

mod support;

use gitbroker::clock::ManualClock;
use gitbroker::mock::RateLimit;
use gitbroker::tokens::{State, TokenSlot};
use std::collections::HashMap;
use std::sync::Arc;
use support::*;
use tokio::task::JoinSet;

const CONCURRENCY: usize = 8;

fn lifecycle_toml() -> String {
    format!(
        "check_interval_secs = 3600\ncheck_concurrency = {CONCURRENCY}\nrate_limit_reserve = {}\n",
        2 * CONCURRENCY
    )
}

/// What a token was made to be at the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Valid,
    Revoked,
    Narrowed,
    Expiring,
}

/// `n` users of acme, each with one token on `acme-prod`, of these kinds
/// (in turn): OAuth tokens (valid, revoked, narrowed at the provider) and
/// pasted tokens that expire in three days.
async fn populate(h: &Harness, n: usize) -> Vec<(String, String, Kind)> {
    let mut set = JoinSet::new();
    let mut out = Vec::new();
    for i in 0..n {
        let kind = match i % 20 {
            0 | 1 => Kind::Revoked,
            2 | 3 => Kind::Narrowed,
            4..=6 => Kind::Expiring,
            _ => Kind::Valid,
        };
        let user = format!("sweep-user-{i:05}");
        let (state, mock) = (h.state.clone(), h.mock.provider.clone());
        let expiring = (kind == Kind::Expiring).then(|| {
            h.pat(
                "alice",
                "classic",
                &["repo"],
                Some(chrono::Utc::now() + chrono::Duration::days(3)),
            )
        });
        set.spawn(async move {
            let me = Harness::acme_user(&user);
            let token = match expiring {
                Some(pat) => {
                    state
                        .lifecycle
                        .assign_pat(
                            &me,
                            "acme-prod",
                            &[],
                            gitbroker::providers::PatInput::new(&pat, None, None),
                        )
                        .await
                        .unwrap();
                    pat
                }
                None => {
                    let token = mock.issue_token("alice", "test-client-id", &["repo"]);
                    assign_oauth_with(&state, &user, "acme-prod", &token).await;
                    match kind {
                        Kind::Revoked => assert!(mock.revoke(&token)),
                        Kind::Narrowed => assert!(mock.set_token_scopes(&token, &["public_repo"])),
                        _ => {}
                    }
                    token
                }
            };
            (user, token, kind)
        });
        while set.len() >= 32 {
            out.push(set.join_next().await.unwrap().unwrap());
        }
    }
    while let Some(done) = set.join_next().await {
        out.push(done.unwrap());
    }
    out
}

fn expected(kind: Kind) -> State {
    match kind {
        Kind::Valid => State::Valid,
        Kind::Revoked => State::Invalid,
        Kind::Narrowed => State::MissingScopes,
        Kind::Expiring => State::ExpiringSoon,
    }
}

async fn statuses(h: &Harness) -> HashMap<String, State> {
    let rt = h
        .state
        .registry
        .runtime("acme-prod")
        .await
        .unwrap()
        .unwrap();
    h.state
        .lifecycle
        .runtime_user_tokens(&rt)
        .await
        .unwrap()
        .into_iter()
        .map(|(user, info)| (user, info.map_or(State::Unreadable, |i| i.status.state)))
        .collect()
}

/// 10,000 tokens, two replicas sweeping at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_tokens_two_replicas() {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let h = Harness::start_with(
        Backend::Redis,
        Options {
            clock: Some(clock.clone()),
            lifecycle: lifecycle_toml(),
            ..Options::default()
        },
    )
    .await;
    let replica = h.another_replica().await;
    let tokens = populate(&h, 10_000).await;
    assert_eq!(tokens.len(), 10_000);
    // only the sweep is counted from here on
    h.mock.provider.reset_counters();
    h.mock.provider.switches().set_api_delay_ms(Some(2));
    h.mock
        .provider
        .switches()
        .set_api_rate_limit(Some(RateLimit {
            limit: 400,
            window_ms: 200,
        }));
    // nothing is due before the interval
    assert_eq!(h.state.lifecycle.run_due().await.checked, 0);
    clock.advance(chrono::Duration::minutes(70));
    let (a, b) = tokio::join!(h.state.lifecycle.run_due(), replica.lifecycle.run_due());
    // what one replica skipped while the other held it is only stale now
    let c = h.state.lifecycle.run_due().await;
    assert_eq!(
        a.checked + b.checked + c.checked,
        10_000,
        "{a:?} {b:?} {c:?}"
    );
    assert!(
        a.checked > 0 && b.checked > 0,
        "both replicas took part: {a:?} {b:?}"
    );

    let traffic = h.mock.provider.traffic_stats();
    assert!(
        traffic.api_max_in_flight <= (2 * CONCURRENCY) as u64,
        "{} concurrent provider calls for 2 replicas × {CONCURRENCY}",
        traffic.api_max_in_flight
    );
    assert_eq!(
        traffic.rate_limited_responses, 0,
        "the rate limit was honoured"
    );
    // exactly one provider call per token in this interval
    let histogram = traffic.api_calls_histogram.clone();
    assert_eq!(histogram.len(), 1, "{histogram:?}");
    assert_eq!(histogram.get(&1), Some(&10_000), "{histogram:?}");
    for (_, token, _) in tokens.iter().step_by(97) {
        assert_eq!(h.mock.provider.api_calls_for(token), 1);
    }
    // every token has the status the provider's answer calls for
    let got = statuses(&h).await;
    let mut wrong = Vec::new();
    for (user, _, kind) in &tokens {
        if got.get(user) != Some(&expected(*kind)) {
            wrong.push((user.clone(), *kind, got.get(user).copied()));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    // and nothing more is due in this interval, on either replica
    assert_eq!(h.state.lifecycle.run_due().await.checked, 0);
    assert_eq!(replica.lifecycle.run_due().await.checked, 0);
    // a revoked token is no longer served; a narrowed one says why
    let revoked = tokens.iter().find(|t| t.2 == Kind::Revoked).unwrap();
    let r = h.runtime_get("acme-prod", "acme-prod", &revoked.0).await;
    assert_eq!(r.status(), 404);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["type"], "urn:gitbroker:problem:user-token-revoked");
    let narrowed = tokens.iter().find(|t| t.2 == Kind::Narrowed).unwrap();
    let v: serde_json::Value = h
        .runtime_get("acme-prod", "acme-prod", &narrowed.0)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["type"], "urn:gitbroker:problem:user-token-missing-scopes");
    let expiring = tokens.iter().find(|t| t.2 == Kind::Expiring).unwrap();
    assert_eq!(
        h.runtime_get("acme-prod", "acme-prod", &expiring.0)
            .await
            .status(),
        200,
        "expiring soon is still served"
    );
}

/// One replica: the configured concurrency per provider host is never
/// exceeded, and a token that works again is valid again ("recovered").
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrency_bound_and_recovery() {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let h = Harness::start_with(
        Backend::Embedded,
        Options {
            clock: Some(clock.clone()),
            lifecycle: lifecycle_toml(),
            ..Options::default()
        },
    )
    .await;
    let tokens = populate(&h, 200).await;
    h.mock.provider.reset_counters();
    h.mock.provider.switches().set_api_delay_ms(Some(5));
    clock.advance(chrono::Duration::minutes(70));
    let report = h.state.lifecycle.run_due().await;
    assert_eq!(report.checked, 200);
    let traffic = h.mock.provider.traffic_stats();
    assert!(
        traffic.api_max_in_flight <= CONCURRENCY as u64,
        "{}",
        traffic.api_max_in_flight
    );

    // a temporary failure of the provider never makes a token invalid
    h.mock.provider.switches().set_user_api_status(Some(502));
    clock.advance(chrono::Duration::minutes(70));
    assert_eq!(h.state.lifecycle.run_due().await.checked, 200);
    let got = statuses(&h).await;
    for (user, _, kind) in &tokens {
        let s = got[user];
        match kind {
            Kind::Valid | Kind::Expiring => assert!(
                s == State::Unknown || s == State::ExpiringSoon,
                "{user}: {s:?}"
            ),
            other => assert_eq!(s, expected(*other), "{user}"),
        }
    }
    let valid = tokens.iter().find(|t| t.2 == Kind::Valid).unwrap();
    assert_eq!(
        h.runtime_get("acme-prod", "acme-prod", &valid.0)
            .await
            .status(),
        200,
        "unknown is still served"
    );
    // a check without a verdict is tried again within minutes, not an
    // interval; the provider is back: valid again
    h.mock.provider.switches().set_user_api_status(None);
    clock.advance(chrono::Duration::minutes(6));
    let retried = h.state.lifecycle.run_due().await;
    assert_eq!(
        retried.checked, 200,
        "every check that reached no verdict is retried"
    );
    // and then, with verdicts, not again before the interval
    clock.advance(chrono::Duration::minutes(6));
    assert_eq!(h.state.lifecycle.run_due().await.checked, 0);
    let got = statuses(&h).await;
    assert_eq!(got[&valid.0], State::Valid);
    let page_user = Harness::acme_user(&valid.0);
    let views = h.state.lifecycle.user_runtimes(&page_user).await.unwrap();
    let prod = views[0]
        .1
        .iter()
        .find(|r| r.runtime.id == "acme-prod")
        .unwrap();
    let TokenSlot::Present(info) = &prod.token else {
        panic!("a token")
    };
    assert_eq!(
        info.status.reason.as_deref(),
        Some("recovered: the provider accepts it again")
    );
}
