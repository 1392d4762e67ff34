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
