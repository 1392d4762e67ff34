//! What one `gitbroker credential get` costs a runtime: the helper process
//! on its own, and `git credential fill` with the helper (what git does once
//! per operation), against a running broker on loopback.
//!
//! `cargo bench --bench credential` (optional: BENCH_RUNS, default 200).
#![allow(
    clippy::disallowed_methods,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code
)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

fn pct(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

fn run(mut cmd: Command, input: &str) -> Duration {
    let t = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("password="));
    t.elapsed()
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let h = rt.block_on(Harness::start(Backend::Redis));
    let pat = h.github_pat("dave", &["repo", "admin:repo_hook"]);
    rt.block_on(async {
        let r = h
            .admin_request(reqwest::Method::PUT, "/runtimes/acme-prod/git-token")
            .json(&serde_json::json!({ "token": pat }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    });
    let home = tempfile::tempdir().unwrap();
    let helper = |op: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_gitbroker"));
        c.args(["credential", "--url", &h.url, "--runtime", "acme-prod", op])
            .env("GITBROKER_RUNTIME_CREDENTIAL", credential("acme-prod"));
        c
    };
    let input = "protocol=https\nhost=github.com\n\n";
    let mut alone: Vec<Duration> = (0..runs).map(|_| run(helper("get"), input)).collect();
    let config = format!(
        "!{} credential --url {} --runtime acme-prod",
        env!("CARGO_BIN_EXE_gitbroker"),
        h.url
    );
    let git = || {
        let mut c = Command::new("git");
        c.args([
            "-c",
            &format!("credential.helper={config}"),
            "credential",
            "fill",
        ])
        .env("HOME", home.path())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GITBROKER_RUNTIME_CREDENTIAL", credential("acme-prod"));
        c
    };
    let mut through_git: Vec<Duration> = (0..runs).map(|_| run(git(), input)).collect();
    alone.sort();
    through_git.sort();
    println!(
        "credential helper: {runs} runs of `gitbroker credential get`: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms; `git credential fill` with the helper: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms (one broker request each)",
        pct(&alone, 0.5),
        pct(&alone, 0.9),
        pct(&alone, 0.99),
        pct(&through_git, 0.5),
        pct(&through_git, 0.9),
        pct(&through_git, 0.99),
    );
}
