//! The token lifecycle at scale, over real loopback HTTP against the mock
//! provider and a real redis-server:
//! - a background sweep over BENCH_TOKENS stored tokens (default 100,000):
//!   wall time, provider calls per second, peak RSS, Redis memory per token;
//! - the latency a refresh adds to a runtime fetch that triggers one
//!   (p50/p99 over BENCH_REFRESHES fetches, default 200), against fetches
//!   that need none.
//!
//! `cargo bench --bench lifecycle` (optional: BENCH_TOKENS, BENCH_REFRESHES,
//! BENCH_CONCURRENCY — provider calls in flight per host, default 4).
#![allow(
    clippy::disallowed_methods,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code
)]

#[path = "../tests/support/mod.rs"]
mod support;

use gitbroker::clock::ManualClock;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;
use tokio::task::JoinSet;

fn proc_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).map(|v| v.parse().unwrap_or(0)))
        })
        .unwrap_or(0)
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn redis_used_memory(h: &Harness) -> u64 {
    let mut conn = h.redis.as_ref().unwrap().client().get_connection().unwrap();
    let info: String = redis::cmd("INFO").arg("memory").query(&mut conn).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

async fn sweep(tokens: usize, concurrency: usize) {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let h = Harness::start_with(
        Backend::Redis,
        Options {
            clock: Some(clock.clone()),
            lifecycle: format!("check_interval_secs = 3600\ncheck_concurrency = {concurrency}\n"),
            ..Options::default()
        },
    )
    .await;
    let memory_before = redis_used_memory(&h);
    let started = Instant::now();
    let mut set = JoinSet::new();
    for i in 0..tokens {
        let (state, mock) = (h.state.clone(), h.mock.provider.clone());
        set.spawn(async move {
            let token = mock.issue_token("alice", "test-client-id", &["repo"]);
            assign_oauth_with(&state, &format!("bench-user-{i:06}"), "acme-prod", &token).await;
        });
        while set.len() >= 64 {
            set.join_next().await.unwrap().unwrap();
        }
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    let populated = started.elapsed();
    let memory_after = redis_used_memory(&h);
    h.mock.provider.reset_counters();
    // The mock's GitHub counts its default 5,000-request budget for the
    // whole process, and every token here is alice's: a generous host-wide
    // budget stands in for the per-user ones real tokens would each have.
    h.mock
        .provider
        .switches()
        .set_api_rate_limit(Some(gitbroker::mock::RateLimit {
            limit: 1_000_000_000,
            window_ms: 60_000,
        }));
    let rss_before = proc_kib("VmRSS:");
    clock.advance(chrono::Duration::minutes(70));
    let started = Instant::now();
    let report = h.state.lifecycle.run_due().await;
    let wall = started.elapsed();
    let calls = h.mock.provider.traffic_stats().api_requests;
    println!(
        "sweep: {tokens} tokens stored in {:.1} s; checked {} in {:.1} s = {:.0} provider calls/s ({} calls, {concurrency} in flight per host); Redis {:.0} bytes per token (grant + assignment + due entry); RSS {} MiB before the sweep, peak {} MiB (whole process: broker, mock, driver)",
        populated.as_secs_f64(),
        report.checked,
        wall.as_secs_f64(),
        calls as f64 / wall.as_secs_f64(),
        calls,
        (memory_after.saturating_sub(memory_before)) as f64 / tokens as f64,
        rss_before / 1024,
        proc_kib("VmHWM:") / 1024,
    );
}

async fn refresh_latency(n: usize) {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let h = Harness::start_with(
        Backend::Redis,
        Options {
            clock: Some(clock.clone()),
            ..Options::default()
        },
    )
    .await;
    let alice = h.signed_in("alice").await;
    alice.authorize("gitlab-rt").await;
    let client = reqwest::Client::new();
    let url = format!("{}/api/v1/runtimes/gitlab-rt/users/u-1001/token", h.url);
    let get = || async {
        let t = Instant::now();
        let r = client
            .get(&url)
            .bearer_auth(credential("gitlab-rt"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let _ = r.bytes().await.unwrap();
        t.elapsed()
    };
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..n {
        clock.advance(chrono::Duration::hours(2) - chrono::Duration::seconds(1));
        with.push(get().await);
        without.push(get().await);
    }
    assert_eq!(h.mock.provider.traffic_stats().refresh_requests, n as u64);
    with.sort();
    without.sort();
    println!(
        "refresh on fetch: {n} fetches that refresh: p50 {:.2} ms, p99 {:.2} ms; fetches that do not: p50 {:.2} ms, p99 {:.2} ms; added by the refresh: p50 {:.2} ms, p99 {:.2} ms",
        pct(&with, 0.5),
        pct(&with, 0.99),
        pct(&without, 0.5),
        pct(&without, 0.99),
        pct(&with, 0.5) - pct(&without, 0.5),
        pct(&with, 0.99) - pct(&without, 0.99),
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        refresh_latency(env("BENCH_REFRESHES", 200)).await;
        sweep(env("BENCH_TOKENS", 100_000), env("BENCH_CONCURRENCY", 4)).await;
    });
}
