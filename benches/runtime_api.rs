//! Throughput, latency percentiles and memory of the runtime API — the hot
//! path: a runtime fetching a user's token (credential check, store read,
//! decryption) — on both store backends, over real loopback HTTP.
//!
//! `cargo bench --bench runtime_api` (optional: BENCH_SECS, BENCH_CONCURRENCY).
#![allow(
    clippy::disallowed_methods,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code
)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};
use support::*;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|v| v.parse().unwrap_or(0)))
        })
        .unwrap_or(0)
}

async fn run(backend: Backend, secs: u64, concurrency: usize) {
    let h = Harness::start(backend).await;
    // 50 users with tokens on one runtime
    let users: Vec<String> = (0..50).map(|i| format!("bench-user-{i}")).collect();
    for u in &users {
        let pat = h.github_pat("alice", &["repo"]);
        h.assign_pat_as(u, "acme-prod", &pat).await;
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let rss_before = rss_kib();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let client = client.clone();
        let url = h.url.clone();
        let users = users.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = w;
            while Instant::now() < deadline {
                let u = &users[i % users.len()];
                i += 1;
                let t = Instant::now();
                let r = client
                    .get(format!("{url}/api/v1/runtimes/acme-prod/users/{u}/token"))
                    .bearer_auth(credential("acme-prod"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                let _ = r.bytes().await.unwrap();
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    let n = all.len();
    let pct = |p: f64| all[((n as f64 * p) as usize).min(n - 1)].as_secs_f64() * 1000.0;
    println!(
        "{backend:?}: {n} requests in {secs} s, concurrency {concurrency}: {:.0} req/s; latency ms p50 {:.2} p90 {:.2} p99 {:.2} max {:.2}; RSS {} MiB -> {} MiB (whole process: broker, mock, client)",
        n as f64 / secs as f64,
        pct(0.50),
        pct(0.90),
        pct(0.99),
        all[n - 1].as_secs_f64() * 1000.0,
        rss_before / 1024,
        rss_kib() / 1024,
    );
}

fn main() {
    let secs: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let concurrency: usize = std::env::var("BENCH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        run(Backend::Embedded, secs, concurrency).await;
        run(Backend::Redis, secs, concurrency).await;
    });
}
