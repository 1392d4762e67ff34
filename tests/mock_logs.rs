//! Secrets stay out of the mock's logs. This test has a binary of its own:
//! its subscriber is process-wide, and tracing's per-callsite caching makes a
//! thread-local subscriber miss events when other tests run in parallel.

#![allow(
    clippy::disallowed_methods,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

mod mock_common;

use mock_common::*;
use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_full_flow_logs_no_secret() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        // The mock's own logs, not those of the test's HTTP client, which
        // puts the authorization request's state in its URLs.
        .with_env_filter("gitbroker=trace,axum=trace,tower_http=trace")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let mock = start_expiring().await;
    let first = consent(&mock, "repo", "alice", "approve").await;
    let wrong = exchange(&mock, &first["code"], &"x".repeat(43)).await;
    assert_github_error(&wrong, "bad_verification_code");
    let code = code_for(&mock, "repo").await;
    let token = exchange(&mock, &code, VERIFIER).await;
    let access = token["access_token"].as_str().unwrap().to_owned();
    let refresh = token["refresh_token"].as_str().unwrap().to_owned();
    get_user(&mock, &format!("Bearer {access}")).await;

    // Git over HTTPS: accepted, refused and pushed-to tokens stay out too
    let root = tempfile::tempdir().unwrap();
    let mut config = config(false);
    config.git_root = Some(root.path().to_path_buf());
    let git = gitbroker::mock::MockProvider::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let repo = git
        .provider
        .create_repo(gitbroker::mock::Flavour::Github, "alice/demo")
        .await
        .unwrap();
    let git_token = git.provider.issue_token("alice", CLIENT_ID, &["repo"]);
    let refs = format!("{}/info/refs?service=git-receive-pack", repo.clone_url);
    for (user, password) in [
        ("x-access-token", git_token.as_str()),
        ("x", "not-a-token-0123"),
    ] {
        let r = http()
            .get(&refs)
            .basic_auth(user, Some(password))
            .send()
            .await
            .unwrap();
        assert!(r.status() == 200 || r.status() == 401, "{}", r.status());
    }
    let r = http()
        .post(format!("{}/git-receive-pack", repo.clone_url))
        .bearer_auth(&git_token)
        .header("content-type", "application/x-git-receive-pack-request")
        .body("0000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("/login/oauth/access_token"), "{logs}");
    assert!(logs.contains("bad_verification_code"), "{logs}");
    assert!(logs.contains("/alice/demo.git/info/refs"), "{logs}");
    for secret in [
        git_token.as_str(),
        "not-a-token-0123",
        first["code"].as_str(),
        code.as_str(),
        access.as_str(),
        refresh.as_str(),
        CLIENT_SECRET,
        VERIFIER,
        "state-123",
    ] {
        assert!(!logs.contains(secret), "{secret} leaked into the logs");
    }
}
