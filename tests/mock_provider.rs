//! The mock provider, driven over real HTTP the way the broker and a browser
//! would drive it. Each test starts its own mock on a free loopback port.
//!
//! The identity-provider tests use `openidconnect`'s own client: they are the
//! reference for how gitbroker's sign-in talks to an OpenID provider.

#![allow(
    clippy::disallowed_methods,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

mod mock_common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gitbroker::clock::ManualClock;
use gitbroker::mock::{MockProvider, RunningMock, Stats, SwitchState};
use mock_common::*;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE, LOCATION};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

// ---------------------------------------------------------------------------
// GitHub: the authorization page.

#[tokio::test]
async fn consent_page_shows_app_scopes_and_users() {
    let mock = start().await;
    let response = http()
        .get(authorize_url(&mock, "repo admin:repo_hook", "s"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(csp.contains("frame-ancestors 'none'"));
    let html = response.text().await.unwrap();
    // The app name is escaped, not interpreted.
    assert!(unescape(&html).contains("<title>Authorize Gitbroker <test></title>"));
    assert!(!html.contains("<test>"));
    assert!(html.contains("<code>repo</code>"));
    assert!(html.contains("<code>admin:repo_hook</code>"));
    assert!(html.contains(r#"<select name="login""#));
    assert!(html.contains(r#"<option value="alice" selected>"#));
    assert!(html.contains(r#"<option value="bob">"#));
    assert!(html.contains(r#"id="approve""#));
    assert!(html.contains(r#"id="deny""#));
    let fields: HashMap<_, _> = hidden_fields(&html).into_iter().collect();
    assert_eq!(fields["state"], "s");
    assert_eq!(fields["scope"], "repo admin:repo_hook");
    assert_eq!(fields["code_challenge"], CHALLENGE);
    assert_eq!(mock.provider.stats().authorize_requests, 1);
}

#[tokio::test]
async fn bad_authorization_requests_get_an_error_page_not_a_redirect() {
    let mock = start().await;
    let base = format!("{}/login/oauth/authorize", mock.base_url);
    let cases = [
        format!("{base}?client_id=nope&redirect_uri={CALLBACK}"),
        format!("{base}?client_id={CLIENT_ID}&redirect_uri=http://evil.test/cb"),
        format!(
            "{base}?client_id={CLIENT_ID}&code_challenge={CHALLENGE}&code_challenge_method=plain"
        ),
        format!("{base}?client_id={CLIENT_ID}&code_challenge={CHALLENGE}"),
    ];
    for url in cases {
        let response = http().get(&url).send().await.unwrap();
        assert!(response.status().is_client_error(), "{url}");
        assert!(response.headers().get(LOCATION).is_none());
        let html = response.text().await.unwrap();
        assert!(html.contains("id=\"error\""), "{html}");
    }
}

#[tokio::test]
async fn deny_redirects_with_access_denied() {
    let mock = start().await;
    let query = consent(&mock, "repo", "alice", "deny").await;
    assert_eq!(query["error"], "access_denied");
    assert_eq!(
        query["error_description"],
        "The user has denied your application access."
    );
    assert!(query["error_uri"].starts_with("https://docs.github.com/"));
    assert_eq!(query["state"], "state-123");
    assert!(!query.contains_key("code"));
    // GitHub's exact encoding, spaces as '+'.
    let raw = http()
        .post(format!("{}/login/oauth/authorize", mock.base_url))
        .form(&[
            ("client_id", CLIENT_ID),
            ("state", "x"),
            ("decision", "deny"),
        ])
        .send()
        .await
        .unwrap();
    assert!(location(&raw).contains(
        "error=access_denied&error_description=The+user+has+denied+your+application+access.&error_uri="
    ));
}

// ---------------------------------------------------------------------------
// GitHub: the token endpoint.

#[tokio::test]
async fn approve_then_exchange_with_pkce() {
    let mock = start().await;
    let query = consent(&mock, "repo gist", "bob", "approve").await;
    assert_eq!(query["state"], "state-123");
    let token = exchange(&mock, &query["code"], VERIFIER).await;
    let access = token["access_token"].as_str().unwrap();
    assert!(access.starts_with("gho_") && access.len() == 40, "{access}");
    assert!(access[4..].chars().all(|c| c.is_ascii_alphanumeric()));
    assert_eq!(token["token_type"], "bearer");
    assert_eq!(token["scope"], "repo,gist");
    assert!(token.get("refresh_token").is_none());
    assert!(token.get("expires_in").is_none());

    let user = get_user(&mock, &format!("Bearer {access}")).await;
    assert_eq!(user.status(), StatusCode::OK);
    assert_eq!(user.headers()["x-oauth-scopes"], "repo, gist");
    assert!(user.headers().contains_key("x-accepted-oauth-scopes"));
    assert_eq!(user.headers()["x-ratelimit-limit"], "5000");
    assert_eq!(user.headers()["x-ratelimit-remaining"], "4999");
    assert!(user.headers().contains_key("x-ratelimit-reset"));
    let body: Value = user.json().await.unwrap();
    assert_eq!(body["login"], "bob");
    assert_eq!(body["id"], 1002);
    assert_eq!(body["name"], "Bob Baker");
    assert!(body.get("email").is_some());

    // GitHub's older scheme works as well.
    let user = get_user(&mock, &format!("token {access}")).await;
    assert_eq!(user.status(), StatusCode::OK);

    assert_eq!(
        mock.provider.stats(),
        Stats {
            authorize_requests: 1,
            token_requests: 1,
            user_requests: 2,
            repo_requests: 0,
            revocations: 0,
            idp_token_requests: 0,
        }
    );
}

#[tokio::test]
async fn wrong_verifier_is_bad_verification_code_and_spends_the_code() {
    let mock = start().await;
    let code = code_for(&mock, "repo").await;
    let wrong = URL_SAFE_NO_PAD.encode([7u8; 32]);
    assert_github_error(
        &exchange(&mock, &code, &wrong).await,
        "bad_verification_code",
    );
    assert_github_error(
        &exchange(&mock, &code, VERIFIER).await,
        "bad_verification_code",
    );
}

#[tokio::test]
async fn a_verifier_is_required_when_a_challenge_was_sent() {
    let mock = start().await;
    let code = code_for(&mock, "repo").await;
    let body = token_request(
        &mock,
        &[
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("code", &code),
            ("redirect_uri", CALLBACK),
        ],
    )
    .await;
    assert_github_error(&body, "bad_verification_code");
}

#[tokio::test]
async fn codes_are_single_use() {
    let mock = start().await;
    let code = code_for(&mock, "repo").await;
    let first = exchange(&mock, &code, VERIFIER).await;
    assert!(first["access_token"].is_string());
    assert_github_error(
        &exchange(&mock, &code, VERIFIER).await,
        "bad_verification_code",
    );
    assert_eq!(mock.provider.stats().token_requests, 2);
}

#[tokio::test]
async fn wrong_client_secret_is_incorrect_client_credentials() {
    let mock = start().await;
    let code = code_for(&mock, "repo").await;
    let body = token_request(
        &mock,
        &[
            ("client_id", CLIENT_ID),
            ("client_secret", "wrong"),
            ("code", &code),
            ("redirect_uri", CALLBACK),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_github_error(&body, "incorrect_client_credentials");
    // Client authentication comes first: the code survived, and HTTP Basic
    // works as well as form fields.
    let response = http()
        .post(format!("{}/login/oauth/access_token", mock.base_url))
        .header(ACCEPT, "application/json")
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[
            ("code", code.as_str()),
            ("redirect_uri", CALLBACK),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert!(body["access_token"].is_string(), "{body}");
}

#[tokio::test]
async fn redirect_uri_must_match_the_authorization_request() {
    let mock = start().await;
    let code = code_for(&mock, "repo").await;
    let body = token_request(
        &mock,
        &[
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("code", &code),
            ("redirect_uri", "http://broker.test/elsewhere"),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_github_error(&body, "redirect_uri_mismatch");
}

#[tokio::test]
async fn form_encoded_unless_json_is_accepted() {
    let mock = start().await;
    let code = code_for(&mock, "repo gist").await;
    let form = [
        ("client_id", CLIENT_ID),
        ("client_secret", CLIENT_SECRET),
        ("code", code.as_str()),
        ("redirect_uri", CALLBACK),
        ("code_verifier", VERIFIER),
    ];
    let post = || {
        http()
            .post(format!("{}/login/oauth/access_token", mock.base_url))
            .form(&form)
    };
    let response = post().send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/x-www-form-urlencoded")
    );
    let text = response.text().await.unwrap();
    let fields: HashMap<String, String> = url::form_urlencoded::parse(text.as_bytes())
        .into_owned()
        .collect();
    assert!(fields["access_token"].starts_with("gho_"));
    assert_eq!(fields["token_type"], "bearer");
    assert_eq!(fields["scope"], "repo,gist");
    assert!(text.contains("scope=repo%2Cgist"), "{text}");

    // Errors too.
    let text = post().send().await.unwrap().text().await.unwrap();
    let fields: HashMap<String, String> = url::form_urlencoded::parse(text.as_bytes())
        .into_owned()
        .collect();
    assert_eq!(fields["error"], "bad_verification_code");
}

#[tokio::test]
async fn unknown_grant_types_are_refused() {
    let mock = start().await;
    let body = token_request(
        &mock,
        &[
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("grant_type", "password"),
        ],
    )
    .await;
    assert_github_error(&body, "unsupported_grant_type");
}

#[tokio::test]
async fn expiring_tokens_refresh_and_rotate() {
    let mock = start_expiring().await;
    let code = code_for(&mock, "repo").await;
    let first = exchange(&mock, &code, VERIFIER).await;
    assert_eq!(first["expires_in"], 28800);
    assert_eq!(first["refresh_token_expires_in"], 15897600);
    let refresh = first["refresh_token"].as_str().unwrap();
    assert!(refresh.starts_with("ghr_"));
    let old_access = first["access_token"].as_str().unwrap();

    let refresh_form = |token: &str| {
        vec![
            ("client_id", CLIENT_ID.to_owned()),
            ("client_secret", CLIENT_SECRET.to_owned()),
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", token.to_owned()),
        ]
    };
    let form = refresh_form(refresh);
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let second = token_request(&mock, &form).await;
    let new_access = second["access_token"].as_str().unwrap();
    assert_ne!(new_access, old_access);
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    assert_eq!(second["scope"], "repo");
    assert_eq!(second["expires_in"], 28800);

    assert_eq!(
        get_user(&mock, &format!("Bearer {old_access}"))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get_user(&mock, &format!("Bearer {new_access}"))
            .await
            .status(),
        StatusCode::OK
    );
    // The old refresh token died with the rotation.
    assert_github_error(&token_request(&mock, &form).await, "bad_refresh_token");
}

#[tokio::test]
async fn concurrent_refreshes_have_exactly_one_winner() {
    let mock = start_expiring().await;
    let code = code_for(&mock, "repo").await;
    let first = exchange(&mock, &code, VERIFIER).await;
    let refresh = first["refresh_token"].as_str().unwrap();
    let form = [
        ("client_id", CLIENT_ID),
        ("client_secret", CLIENT_SECRET),
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh),
    ];
    let answers = tokio::join!(token_request(&mock, &form), token_request(&mock, &form));
    let winners = [&answers.0, &answers.1]
        .into_iter()
        .filter(|a| a["access_token"].is_string())
        .count();
    assert_eq!(winners, 1, "{answers:?}");
    let loser = if answers.0["access_token"].is_string() {
        &answers.1
    } else {
        &answers.0
    };
    assert_github_error(loser, "bad_refresh_token");
}

#[tokio::test]
async fn codes_and_tokens_expire_on_the_mocks_clock() {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let provider = MockProvider::with_clock(config(true), clock.clone());
    let mock = provider
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();

    let code = code_for(&mock, "repo").await;
    clock.advance(chrono::Duration::minutes(10));
    assert_github_error(
        &exchange(&mock, &code, VERIFIER).await,
        "bad_verification_code",
    );

    let code = code_for(&mock, "repo").await;
    let token = exchange(&mock, &code, VERIFIER).await;
    let access = format!("Bearer {}", token["access_token"].as_str().unwrap());
    clock.advance(chrono::Duration::hours(8) - chrono::Duration::seconds(1));
    assert_eq!(get_user(&mock, &access).await.status(), StatusCode::OK);
    clock.advance(chrono::Duration::seconds(1));
    assert_eq!(
        get_user(&mock, &access).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

// ---------------------------------------------------------------------------
// GitHub: the API.

#[tokio::test]
async fn bad_tokens_get_bad_credentials() {
    let mock = start().await;
    let response = get_user(&mock, "Bearer gho_notarealtokennotarealtokennotareal").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({
            "message": "Bad credentials",
            "documentation_url": "https://docs.github.com/rest",
            "status": "401",
        })
    );
    let response = http()
        .get(format!("{}/user", mock.github_api_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn applications_api_checks_and_revokes_tokens() {
    let mock = start_expiring().await;
    let token = mock
        .provider
        .issue_token("alice", CLIENT_ID, &["repo", "gist"]);

    let check = http()
        .post(app_api(&mock, "token"))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .json(&json!({ "access_token": token }))
        .send()
        .await
        .unwrap();
    assert_eq!(check.status(), StatusCode::OK);
    let body: Value = check.json().await.unwrap();
    assert_eq!(body["token"], token.as_str());
    assert_eq!(body["scopes"], json!(["repo", "gist"]));
    assert_eq!(body["user"]["login"], "alice");
    assert!(body["id"].is_u64());
    assert!(body["expires_at"].as_str().unwrap().ends_with('Z'));

    // Wrong app credentials.
    let refused = http()
        .post(app_api(&mock, "token"))
        .basic_auth(CLIENT_ID, Some("wrong"))
        .json(&json!({ "access_token": token }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);

    let revoke = http()
        .delete(app_api(&mock, "token"))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .json(&json!({ "access_token": token }))
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), StatusCode::NO_CONTENT);
    assert_eq!(mock.provider.stats().revocations, 1);

    let user = get_user(&mock, &format!("Bearer {token}")).await;
    assert_eq!(user.status(), StatusCode::UNAUTHORIZED);
    let check = http()
        .post(app_api(&mock, "token"))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .json(&json!({ "access_token": token }))
        .send()
        .await
        .unwrap();
    assert_eq!(check.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn deleting_the_grant_revokes_all_of_the_users_tokens_for_the_app() {
    let mock = start().await;
    let first = mock.provider.issue_token("alice", CLIENT_ID, &["repo"]);
    let second = mock.provider.issue_token("alice", CLIENT_ID, &["repo"]);
    let other_user = mock.provider.issue_token("bob", CLIENT_ID, &["repo"]);
    let revoke = http()
        .delete(app_api(&mock, "grant"))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .json(&json!({ "access_token": first }))
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), StatusCode::NO_CONTENT);
    for (token, status) in [
        (first, StatusCode::UNAUTHORIZED),
        (second, StatusCode::UNAUTHORIZED),
        (other_user, StatusCode::OK),
    ] {
        assert_eq!(
            get_user(&mock, &format!("Bearer {token}")).await.status(),
            status
        );
    }
}

#[tokio::test]
async fn revoking_at_the_provider_invalidates_silently() {
    let mock = start().await;
    let token = mock.provider.issue_token("carol", CLIENT_ID, &["repo"]);
    assert_eq!(
        get_user(&mock, &format!("Bearer {token}")).await.status(),
        StatusCode::OK
    );
    mock.provider.revoke(&token);
    assert_eq!(
        get_user(&mock, &format!("Bearer {token}")).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(mock.provider.stats().revocations, 0);
}

#[tokio::test]
async fn a_caller_can_serve_the_router_itself() {
    let provider = MockProvider::new(config(false));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    provider.set_base_url(format!("{base}/"));
    let router = provider.router();
    tokio::spawn(async move { axum::serve(listener, router).await });

    assert_eq!(provider.base_url(), base);
    let config: Value = http()
        .get(format!("{base}/idp/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config["issuer"], format!("{base}/idp"));
    assert_eq!(config["token_endpoint"], format!("{base}/idp/token"));
}

// ---------------------------------------------------------------------------
// Switches.

#[tokio::test]
async fn switch_deny_redirects_at_once() {
    let mock = start().await;
    mock.provider.switches().set_deny(true);
    let response = http()
        .get(authorize_url(&mock, "repo", "st"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    let query = query_of(&location(&response));
    assert_eq!(query["error"], "access_denied");
    assert_eq!(query["state"], "st");
}

#[tokio::test]
async fn switch_auto_approve_redirects_with_a_code_for_that_login() {
    let mock = start().await;
    mock.provider.switches().set_auto_approve(Some("carol"));
    let response = http()
        .get(authorize_url(&mock, "repo", "someone-elses-state"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    let query = query_of(&location(&response));
    assert_eq!(query["state"], "someone-elses-state");
    let token = exchange(&mock, &query["code"], VERIFIER).await;
    let user = get_user(
        &mock,
        &format!("Bearer {}", token["access_token"].as_str().unwrap()),
    )
    .await;
    let body: Value = user.json().await.unwrap();
    assert_eq!(body["login"], "carol");
}

#[tokio::test]
async fn switch_token_error_answers_200_with_that_error() {
    let mock = start().await;
    let code = code_for(&mock, "repo").await;
    mock.provider
        .switches()
        .set_token_error(Some("bad_verification_code"));
    assert_github_error(
        &exchange(&mock, &code, VERIFIER).await,
        "bad_verification_code",
    );
    mock.provider.switches().set_token_error(Some("slow_down"));
    assert_github_error(&exchange(&mock, &code, VERIFIER).await, "slow_down");
    // The switch answered before the code was looked at.
    mock.provider.switches().set_token_error(None);
    assert!(exchange(&mock, &code, VERIFIER).await["access_token"].is_string());
}

#[tokio::test]
async fn switch_token_status_answers_html() {
    let mock = start().await;
    mock.provider.switches().set_token_status(Some(502));
    let response = http()
        .post(format!("{}/login/oauth/access_token", mock.base_url))
        .header(ACCEPT, "application/json")
        .form(&[("code", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert!(
        response.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
}

#[tokio::test]
async fn switch_token_hang_spends_the_code_but_withholds_the_answer() {
    let mock = start().await;
    let code = code_for(&mock, "repo").await;
    mock.provider.switches().set_token_hang(true);
    let started = std::time::Instant::now();
    let result = http()
        .post(format!("{}/login/oauth/access_token", mock.base_url))
        .timeout(Duration::from_millis(300))
        .form(&[
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("code", &code),
            ("redirect_uri", CALLBACK),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await;
    assert!(result.unwrap_err().is_timeout());
    assert!(started.elapsed() < Duration::from_secs(5));

    // Turning the switch off releases waiting requests; the code was used by
    // the request that timed out, so retrying the exchange fails.
    mock.provider.switches().set_token_hang(false);
    assert_github_error(
        &exchange(&mock, &code, VERIFIER).await,
        "bad_verification_code",
    );
    assert_eq!(mock.provider.stats().token_requests, 2);
}

#[tokio::test]
async fn switch_grant_scopes_overrides_the_request() {
    let mock = start().await;
    mock.provider
        .switches()
        .set_grant_scopes(Some(&["read:user"]));
    let code = code_for(&mock, "repo admin:repo_hook").await;
    let token = exchange(&mock, &code, VERIFIER).await;
    assert_eq!(token["scope"], "read:user");
    let user = get_user(
        &mock,
        &format!("Bearer {}", token["access_token"].as_str().unwrap()),
    )
    .await;
    assert_eq!(user.headers()["x-oauth-scopes"], "read:user");
}

#[tokio::test]
async fn switch_user_api_status() {
    let mock = start().await;
    let token = format!(
        "Bearer {}",
        mock.provider.issue_token("alice", CLIENT_ID, &["repo"])
    );
    mock.provider.switches().set_user_api_status(Some(403));
    let limited = get_user(&mock, &token).await;
    assert_eq!(limited.status(), StatusCode::FORBIDDEN);
    assert_eq!(limited.headers()["x-ratelimit-remaining"], "0");

    mock.provider.switches().set_user_api_status(Some(401));
    let response = get_user(&mock, &token).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["message"], "Bad credentials");

    mock.provider.switches().set_user_api_status(Some(503));
    assert_eq!(
        get_user(&mock, &token).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );

    mock.provider.switches().set_user_api_status(None);
    assert_eq!(get_user(&mock, &token).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn http_control_endpoints() {
    let mock = start().await;
    let control = |path: &str| format!("{}/__mock/{path}", mock.base_url);

    let state: SwitchState = http()
        .post(control("switches"))
        .json(&json!({ "deny": true, "token_status": 500, "grant_scopes": ["repo"] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(state.deny);
    assert_eq!(state.token_status, Some(500));
    assert_eq!(mock.provider.switches().get(), state);

    // null clears, absent leaves alone.
    let state: SwitchState = http()
        .post(control("switches"))
        .json(&json!({ "token_status": null }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(state.deny);
    assert_eq!(state.token_status, None);
    assert_eq!(state.grant_scopes, Some(vec!["repo".to_owned()]));

    let bad = http()
        .post(control("switches"))
        .json(&json!({ "user_api_status": 42 }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);

    let issued: Value = http()
        .post(control("tokens"))
        .json(&json!({ "login": "dave", "scopes": ["repo"] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = issued["token"].as_str().unwrap();
    let user = get_user(&mock, &format!("Bearer {token}")).await;
    assert_eq!(user.headers()["x-oauth-scopes"], "repo");

    let stats: Stats = http()
        .get(control("stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats.user_requests, 1);

    let reset = http().post(control("reset")).send().await.unwrap();
    assert_eq!(reset.status(), StatusCode::NO_CONTENT);
    assert_eq!(mock.provider.switches().get(), SwitchState::default());
    assert_eq!(mock.provider.stats(), Stats::default());
    assert_eq!(
        get_user(&mock, &format!("Bearer {token}")).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

// ---------------------------------------------------------------------------
// The OpenID Connect provider, through `openidconnect`'s client.

mod idp {
    use super::*;
    use openidconnect::core::{
        CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType,
        CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm,
        CoreJwsSigningAlgorithm, CoreProviderMetadata, CoreRevocableToken,
        CoreRevocationErrorResponse, CoreTokenIntrospectionResponse, CoreTokenType,
    };
    use openidconnect::{
        AdditionalClaims, AuthType, AuthorizationCode, Client, ClientId, ClientSecret, CsrfToken,
        EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet, IdTokenFields,
        IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, RedirectUrl, Scope,
        StandardErrorResponse, StandardTokenResponse, TokenResponse, UserInfoClaims,
    };
    use serde::{Deserialize, Serialize};

    /// The claim gitbroker reads beyond the standard ones.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct Groups {
        #[serde(default)]
        groups: Vec<String>,
    }
    impl AdditionalClaims for Groups {}

    type TokenFields = IdTokenFields<
        Groups,
        EmptyExtraTokenFields,
        CoreGenderClaim,
        CoreJweContentEncryptionAlgorithm,
        CoreJwsSigningAlgorithm,
    >;
    type SignInClient = Client<
        Groups,
        CoreAuthDisplay,
        CoreGenderClaim,
        CoreJweContentEncryptionAlgorithm,
        CoreJsonWebKey,
        CoreAuthPrompt,
        StandardErrorResponse<CoreErrorResponseType>,
        StandardTokenResponse<TokenFields, CoreTokenType>,
        CoreTokenIntrospectionResponse,
        CoreRevocableToken,
        CoreRevocationErrorResponse,
        EndpointSet,
        EndpointNotSet,
        EndpointNotSet,
        EndpointNotSet,
        EndpointMaybeSet,
        EndpointMaybeSet,
    >;

    async fn client(mock: &RunningMock, secret: &str) -> SignInClient {
        let issuer = IssuerUrl::new(mock.issuer_url()).unwrap();
        let metadata = CoreProviderMetadata::discover_async(issuer, &http())
            .await
            .unwrap();
        SignInClient::from_provider_metadata(
            metadata,
            ClientId::new(IDP_CLIENT.into()),
            Some(ClientSecret::new(secret.into())),
        )
        .set_redirect_uri(RedirectUrl::new(IDP_CALLBACK.into()).unwrap())
    }

    struct Started {
        url: url::Url,
        state: CsrfToken,
        nonce: Nonce,
        verifier: openidconnect::PkceCodeVerifier,
    }

    fn begin(client: &SignInClient) -> Started {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("profile".into()))
            .add_scope(Scope::new("email".into()))
            .add_scope(Scope::new("groups".into()))
            .set_pkce_challenge(challenge)
            .url();
        Started {
            url,
            state,
            nonce,
            verifier,
        }
    }

    /// Opens the sign-in page and presses `username`'s button.
    async fn sign_in(url: &url::Url, username: &str) -> HashMap<String, String> {
        let page = http().get(url.as_str()).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        let html = page.text().await.unwrap();
        let button = format!("id=\"signin-{username}\"");
        let form_start = html[..html.find(&button).expect("a sign-in button")]
            .rfind("<form")
            .unwrap();
        let mut form = hidden_fields(&html[form_start..html.find(&button).unwrap()]);
        form.push(("username".into(), username.into()));
        // The form posts to a relative `authorize`.
        let action = url.join("authorize").unwrap();
        let response = http().post(action).form(&form).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::FOUND);
        let location = location(&response);
        assert!(location.starts_with(IDP_CALLBACK), "{location}");
        query_of(&location)
    }

    #[tokio::test]
    async fn sign_in_end_to_end_with_openidconnect() {
        let mock = start().await;
        let client = client(&mock, IDP_SECRET).await;
        let started = begin(&client);
        let query = sign_in(&started.url, "alice").await;
        assert_eq!(&query["state"], started.state.secret());
        assert_eq!(query["iss"], mock.issuer_url());

        let response = client
            .exchange_code(AuthorizationCode::new(query["code"].clone()))
            .unwrap()
            .set_pkce_verifier(started.verifier)
            .request_async(&http())
            .await
            .unwrap();
        assert!(
            response
                .token_type()
                .as_ref()
                .eq_ignore_ascii_case("bearer")
        );
        let id_token = response.id_token().expect("an ID token");
        let claims = id_token
            .claims(&client.id_token_verifier(), &started.nonce)
            .unwrap();
        assert_eq!(claims.issuer().as_str(), mock.issuer_url());
        assert_eq!(claims.subject().as_str(), "u-1001");
        assert_eq!(claims.preferred_username().unwrap().as_str(), "alice");
        assert_eq!(claims.email().unwrap().as_str(), "alice@example.com");
        assert_eq!(
            claims.name().unwrap().get(None).unwrap().as_str(),
            "Alice Archer"
        );
        assert_eq!(
            claims.additional_claims().groups,
            vec!["acme-devs", "gitbroker-admins"]
        );

        // The nonce check is the verifier's: a different nonce fails.
        assert!(
            id_token
                .claims(&client.id_token_verifier(), &Nonce::new_random())
                .is_err()
        );

        let userinfo: UserInfoClaims<Groups, CoreGenderClaim> = client
            .user_info(
                response.access_token().clone(),
                Some(claims.subject().clone()),
            )
            .unwrap()
            .request_async(&http())
            .await
            .unwrap();
        assert_eq!(
            userinfo.additional_claims().groups,
            claims.additional_claims().groups
        );
        assert_eq!(mock.provider.stats().idp_token_requests, 1);
    }

    #[tokio::test]
    async fn client_secret_post_works_and_codes_are_single_use() {
        let mock = start().await;
        let client = client(&mock, IDP_SECRET)
            .await
            .set_auth_type(AuthType::RequestBody);
        let started = begin(&client);
        let query = sign_in(&started.url, "carol").await;
        let code = AuthorizationCode::new(query["code"].clone());
        let verifier = started.verifier.secret().clone();
        let response = client
            .exchange_code(code.clone())
            .unwrap()
            .set_pkce_verifier(openidconnect::PkceCodeVerifier::new(verifier.clone()))
            .request_async(&http())
            .await
            .unwrap();
        let claims = response
            .id_token()
            .unwrap()
            .claims(&client.id_token_verifier(), &started.nonce)
            .unwrap();
        assert_eq!(claims.additional_claims().groups, vec!["globex-devs"]);

        let again = client
            .exchange_code(code)
            .unwrap()
            .set_pkce_verifier(openidconnect::PkceCodeVerifier::new(verifier))
            .request_async(&http())
            .await;
        let Err(openidconnect::RequestTokenError::ServerResponse(err)) = again else {
            panic!("a reused code must be refused");
        };
        assert_eq!(*err.error(), CoreErrorResponseType::InvalidGrant);
    }

    #[tokio::test]
    async fn wrong_secret_and_wrong_verifier_are_refused() {
        let mock = start().await;
        let bad_client = client(&mock, "wrong").await;
        let started = begin(&bad_client);
        let query = sign_in(&started.url, "bob").await;
        let result = bad_client
            .exchange_code(AuthorizationCode::new(query["code"].clone()))
            .unwrap()
            .set_pkce_verifier(started.verifier)
            .request_async(&http())
            .await;
        let Err(openidconnect::RequestTokenError::ServerResponse(err)) = result else {
            panic!("a wrong client secret must be refused");
        };
        assert_eq!(*err.error(), CoreErrorResponseType::InvalidClient);

        let good_client = client(&mock, IDP_SECRET).await;
        let started = begin(&good_client);
        let query = sign_in(&started.url, "bob").await;
        let result = good_client
            .exchange_code(AuthorizationCode::new(query["code"].clone()))
            .unwrap()
            .set_pkce_verifier(openidconnect::PkceCodeVerifier::new(VERIFIER.into()))
            .request_async(&http())
            .await;
        let Err(openidconnect::RequestTokenError::ServerResponse(err)) = result else {
            panic!("a wrong verifier must be refused");
        };
        assert_eq!(*err.error(), CoreErrorResponseType::InvalidGrant);
    }

    #[tokio::test]
    async fn authorization_requests_must_carry_state_nonce_and_pkce() {
        let mock = start().await;
        let authorize = format!("{}/authorize", mock.issuer_url());
        let base = [
            ("response_type", "code"),
            ("client_id", IDP_CLIENT),
            ("redirect_uri", IDP_CALLBACK),
            ("scope", "openid"),
            ("state", "st"),
            ("nonce", "n"),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
        ];
        let without = |name: &str| -> Vec<(&str, &str)> {
            base.iter().copied().filter(|(k, _)| *k != name).collect()
        };
        for missing in ["nonce", "code_challenge", "state", "scope"] {
            let response = http()
                .get(&authorize)
                .query(&without(missing))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::FOUND, "without {missing}");
            let query = query_of(&location(&response));
            assert!(
                ["invalid_request", "invalid_scope"].contains(&query["error"].as_str()),
                "without {missing}: {query:?}"
            );
            assert_eq!(query["iss"], mock.issuer_url());
        }
        // An unregistered redirect_uri is never redirected to.
        let mut evil = without("redirect_uri");
        evil.push(("redirect_uri", "http://evil.test/cb"));
        let response = http().get(&authorize).query(&evil).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(response.headers().get(LOCATION).is_none());

        let page = http().get(&authorize).query(&base).send().await.unwrap();
        let html = page.text().await.unwrap();
        for user in ["alice", "bob", "carol", "dave"] {
            assert!(html.contains(&format!("id=\"signin-{user}\"")), "{user}");
        }
    }

    #[tokio::test]
    async fn discovery_and_jwks() {
        let mock = start().await;
        let config: Value = http()
            .get(format!(
                "{}/.well-known/openid-configuration",
                mock.issuer_url()
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(config["issuer"], mock.issuer_url());
        assert_eq!(config["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(
            config["id_token_signing_alg_values_supported"],
            json!(["RS256"])
        );
        let jwks: Value = http()
            .get(config["jwks_uri"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let key = &jwks["keys"][0];
        assert_eq!(key["kty"], "RSA");
        assert!(key["kid"].is_string());
        // A 2048-bit modulus.
        let n = URL_SAFE_NO_PAD.decode(key["n"].as_str().unwrap()).unwrap();
        assert_eq!(n.len(), 256);
    }

    #[tokio::test]
    async fn userinfo_needs_a_live_idp_token() {
        let mock = start().await;
        let github_token = mock.provider.issue_token("alice", CLIENT_ID, &["repo"]);
        let response = http()
            .get(format!("{}/userinfo", mock.issuer_url()))
            .bearer_auth(github_token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(response.headers().contains_key("www-authenticate"));
    }
}
