//! Captures every log line the broker, the mock provider and their
//! libraries emit (at debug level) through whole flows, and asserts that no
//! token, code, state, verifier, cookie or client secret appears in them.
//! Its own test binary: the log subscriber is process-wide.
#![allow(
    clippy::disallowed_methods,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code
)]

mod support;

use secrecy::ExposeSecret;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_logs() {
    // cookie_store is the test browser's cookie jar (not used by the
    // broker), which logs the cookies it receives at debug level
    let capture = LogCapture::install("debug,cookie_store=off");

    let h = Harness::start(Backend::Embedded).await;
    let alice = h.signed_in("alice").await;
    let mut secrets: Vec<String> = vec![
        KEY.into(),
        ADMIN_TOKEN.into(),
        OIDC_SECRET.into(),
        APP_SECRET.into(),
        credential("acme-prod"),
    ];

    // a full flow, capturing the state, code and cookies it used
    let provider = alice.start_authorize("acme-prod").await;
    secrets.push(query_param(&provider.url, "state").unwrap());
    secrets.push(query_param(&provider.url, "code_challenge").unwrap());
    let flow_cookies: Vec<(String, String)> = alice
        .cookies(&h.url)
        .into_iter()
        .filter(|(k, _)| k.starts_with("gb_flow_"))
        .collect();
    assert_eq!(flow_cookies.len(), 1, "one flow cookie per flow");
    let back = alice.provider_decision(&provider, "approve").await;
    let callback = back.location.clone().unwrap();
    secrets.push(query_param(&callback, "code").unwrap());
    let page = alice.follow(back).await;
    assert!(page.body.contains("authorized"));

    // a replayed callback and a denied one also go through the logging paths
    alice.get(&callback).await;
    let provider = alice.start_authorize("acme-staging").await;
    secrets.push(query_param(&provider.url, "state").unwrap());
    alice
        .follow(alice.provider_decision(&provider, "deny").await)
        .await;

    // the token served to the runtime
    let r = h.runtime_get("acme-prod", "acme-prod", "u-1001").await;
    let body: serde_json::Value = r.json().await.unwrap();
    let token = body["token"].as_str().unwrap().to_owned();
    secrets.push(token.clone());

    // a failing exchange (provider error) and a revocation
    h.mock
        .provider
        .switches()
        .set_token_error(Some("bad_verification_code"));
    alice.authorize("acme-staging").await;
    h.mock.provider.switches().set_token_error(None);
    let tokens = alice.get("/tokens").await;
    alice
        .follow(
            alice
                .submit_action(&tokens, "/tokens/acme-prod/delete")
                .await,
        )
        .await;

    // Gitea: the OAuth flow (PKCE, rotating refresh token), then a pasted
    // access token over it
    alice.authorize("gitea-rt").await;
    let gitea = h
        .state
        .lifecycle
        .assigned_grant("gitea-rt", "u-1001")
        .await
        .unwrap()
        .expect("the Gitea token is stored")
        .0;
    secrets.push(gitea.access_token.expose_secret().to_owned());
    secrets.push(gitea.refresh_token.unwrap().expose_secret().to_owned());
    let gitea_pat = h.mock.provider.create_pat(gitbroker::mock::PatSpec {
        flavour: gitbroker::mock::Flavour::Gitea,
        owner: "alice".into(),
        kind: "personal".into(),
        scopes: vec!["write:repository".into(), "read:user".into()],
        expires_at: None,
        repositories: Vec::new(),
        email: None,
    });
    secrets.push(gitea_pat.clone());
    let tokens = alice.get("/tokens").await;
    let page = alice
        .follow(
            alice
                .post(
                    "/tokens/gitea-rt/pat",
                    &[("csrf".into(), tokens.csrf()), ("token".into(), gitea_pat)],
                )
                .await,
        )
        .await;
    assert!(
        page.flash().contains("added to runtime gitea-rt"),
        "{}",
        page.flash()
    );

    // the admin API registering a runtime with its Git Runtime token (the
    // runtime credential is shown once), and the runtime reading that token
    let runtime_git_token = h.github_pat("alice", &["repo", "admin:repo_hook"]);
    secrets.push(runtime_git_token.clone());
    // a pasted personal access token
    let pat = h.github_pat("alice", &["repo"]);
    secrets.push(pat.clone());
    let tokens = alice.get("/tokens").await;
    let csrf = tokens.csrf();
    let page = alice
        .follow(
            alice
                .post(
                    "/tokens/acme-staging/pat",
                    &[("csrf".into(), csrf), ("token".into(), pat)],
                )
                .await,
        )
        .await;
    assert!(
        page.body.contains("added to runtime acme-staging"),
        "{}",
        page.body
    );
    // the shared "several runtimes" form: one token for two runtimes, and
    // one refused before the provider is asked (nothing checked)
    let shared = h.github_pat("alice", &["repo"]);
    secrets.push(shared.clone());
    let csrf = alice.get("/tokens").await.csrf();
    let page = alice
        .follow(
            alice
                .post(
                    "/tokens/pat",
                    &[
                        ("csrf".into(), csrf.clone()),
                        ("token".into(), shared),
                        ("runtimes".into(), "acme-prod".into()),
                        ("runtimes".into(), "acme-staging".into()),
                    ],
                )
                .await,
        )
        .await;
    assert!(
        page.flash()
            .contains("added to runtime acme-prod, acme-staging"),
        "{}",
        page.flash()
    );
    let unchecked = h.github_pat("alice", &["repo"]);
    secrets.push(unchecked.clone());
    let refused = alice
        .post(
            "/tokens/pat",
            &[("csrf".into(), csrf), ("token".into(), unchecked.clone())],
        )
        .await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(!refused.body.contains(&unchecked), "{}", refused.body);
    let created: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/api/v1/admin/runtimes", h.url))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"id": "new-rt", "account": "acme", "git_host": "github.com", "oauth_app": "github-app",
            "git_token": {"token": runtime_git_token}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let runtime_credential = created["credential"].as_str().unwrap().to_owned();
    secrets.push(runtime_credential.clone());
    let r = reqwest::Client::new()
        .get(format!("{}/api/v1/runtimes/new-rt/token", h.url))
        .bearer_auth(&runtime_credential)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // a permission probe GitHub answers 2xx: refused, logged by request
    h.mock.provider.switches().set_probes_succeed(true);
    let fine = h.pat(
        "alice",
        "fine_grained",
        &["contents:write", "metadata:read"],
        None,
    );
    secrets.push(fine.clone());
    let tokens = alice.get("/tokens").await;
    let page = alice
        .follow(
            alice
                .post(
                    "/tokens/acme-prod/pat",
                    &[("csrf".into(), tokens.csrf()), ("token".into(), fine)],
                )
                .await,
        )
        .await;
    assert!(page.flash().contains("was not stored"), "{}", page.flash());
    h.mock.provider.switches().set_probes_succeed(false);

    // session and flow cookies, taken before the flow completes too
    let cookies = alice.cookies(&h.url);
    assert!(
        cookies.iter().any(|(k, _)| k == "gitbroker_session"),
        "{cookies:?}"
    );
    secrets.extend(cookies.into_iter().map(|(_, v)| v));
    secrets.extend(flow_cookies.into_iter().map(|(_, v)| v));

    drop(alice);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let logs = capture.text();
    assert!(
        logs.len() > 1000,
        "logs were captured ({} bytes)",
        logs.len()
    );
    assert!(
        logs.contains("user token stored"),
        "the flow logged its outcome"
    );
    // each use of either kind of token is recorded for audit
    assert!(
        logs.contains("\"action\":\"user_token.read\"") && logs.contains("\"user\":\"u-1001\""),
        "user token reads are audited with the user"
    );
    assert!(
        logs.contains("\"action\":\"runtime_token.read\"")
            && logs.contains("\"actor\":\"runtime:new-rt\""),
        "runtime token reads are audited as process-level actions"
    );
    let probe_line = logs
        .lines()
        .find(|l| l.contains("accepted a permission probe"))
        .expect("a probe answered 2xx is logged");
    assert!(probe_line.contains("\"level\":\"ERROR\""), "{probe_line}");
    assert!(
        probe_line.contains("\"request\":\"POST /repos/alice/"),
        "{probe_line}"
    );
    for s in &secrets {
        assert!(!s.is_empty());
        if let Some(i) = logs.find(s.as_str()) {
            let line_start = logs[..i].rfind('\n').map_or(0, |p| p + 1);
            let line_end = logs[i..].find('\n').map_or(logs.len(), |p| i + p);
            panic!(
                "secret {}… found in the logs:\n{}",
                &s[..6.min(s.len())],
                &logs[line_start..line_end].replace(s.as_str(), "<SECRET>")
            );
        }
    }
    // nothing that looks like a GitHub token at all
    assert!(
        !logs.contains("gho_"),
        "an OAuth token prefix appears in the logs"
    );
    assert!(
        !logs.contains("code="),
        "a query string with a code appears in the logs"
    );
}
