//! The mock's `gitlab` flavour on the wire: what a GitLab client sees from
//! the authorize endpoint, the token endpoint (RFC 6749 errors, rotation),
//! token info, revocation and API v4, including the switches.
#![allow(
    clippy::disallowed_methods,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code
)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gitbroker::mock::{Flavour, MockConfig, MockOAuthApp, MockProvider, PatSpec, RunningMock};
use serde_json::Value;
use sha2::{Digest, Sha256};

const CLIENT_ID: &str = "gl-client";
const SECRET: &str = "gl-secret";
const CALLBACK: &str = "http://rp.test/oauth/callback/gl";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

async fn mock() -> RunningMock {
    let mut config = MockConfig::demo();
    for (id, secret) in [(CLIENT_ID, SECRET), ("other-client", "other-secret")] {
        config.oauth_apps.push(MockOAuthApp {
            name: id.into(),
            client_id: id.into(),
            client_secret: secret.into(),
            callback_url: CALLBACK.into(),
        });
    }
    MockProvider::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn gl(m: &RunningMock, path: &str) -> String {
    format!("{}/gitlab{path}", m.base_url)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn query(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn authorize(m: &RunningMock, scope: &str) -> reqwest::Response {
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(VERIFIER.as_bytes()));
    client()
        .get(gl(m, "/oauth/authorize"))
        .query(&[
            ("client_id", CLIENT_ID),
            ("redirect_uri", CALLBACK),
            ("response_type", "code"),
            ("scope", scope),
            ("state", "st"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .unwrap()
}

/// A code for alice, through the auto-approve switch.
async fn code(m: &RunningMock, scope: &str) -> String {
    m.provider.switches().set_auto_approve(Some("alice"));
    let r = authorize(m, scope).await;
    m.provider.switches().set_auto_approve(None);
    assert_eq!(r.status(), 302);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(CALLBACK), "{location}");
    assert_eq!(query(&location, "state").as_deref(), Some("st"));
    query(&location, "code").unwrap()
}

async fn token_request(m: &RunningMock, form: &[(&str, &str)]) -> (u16, Value) {
    let r = client()
        .post(gl(m, "/oauth/token"))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn exchange(m: &RunningMock, code: &str) -> (u16, Value) {
    token_request(
        m,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
            ("code", code),
            ("redirect_uri", CALLBACK),
            ("code_verifier", VERIFIER),
        ],
    )
    .await
}

async fn refresh(m: &RunningMock, refresh_token: &str) -> (u16, Value) {
    token_request(
        m,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
            ("refresh_token", refresh_token),
            ("redirect_uri", CALLBACK),
        ],
    )
    .await
}

async fn get(m: &RunningMock, path: &str, token: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    let r = client()
        .get(gl(m, path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn code_exchange_and_token_shape() {
    let m = mock().await;
    let code = code(&m, "write_repository read_api").await;
    let (status, body) = exchange(&m, &code).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 7200);
    assert_eq!(body["scope"], "write_repository read_api");
    assert!(body["created_at"].as_i64().unwrap() > 1_600_000_000);
    assert_eq!(body["access_token"].as_str().unwrap().len(), 64);
    assert_eq!(body["refresh_token"].as_str().unwrap().len(), 64);

    // codes are single-use
    let (status, body) = exchange(&m, &code).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_grant");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("The provided authorization grant is invalid")
    );

    let access = body_str(&exchange_fresh(&m).await, "access_token");
    let (status, _, info) = get(&m, "/oauth/token/info", &access).await;
    assert_eq!(status, 200);
    assert_eq!(info["scope"], serde_json::json!(["api"]));
    assert_eq!(info["resource_owner_id"], 1001);
    assert_eq!(info["application"]["uid"], CLIENT_ID);
    assert!(info["expires_in"].as_i64().unwrap() > 7100);

    let (status, headers, user) = get(&m, "/api/v4/user", &access).await;
    assert_eq!(status, 200);
    assert_eq!(user["username"], "alice");
    assert_eq!(user["id"], 1001);
    assert_eq!(user["bot"], false);
    assert!(headers.contains_key("ratelimit-remaining"));
    // an OAuth token has no personal access token record
    let (status, _, _) = get(&m, "/api/v4/personal_access_tokens/self", &access).await;
    assert_eq!(status, 404);
}

fn body_str(v: &Value, field: &str) -> String {
    v[field].as_str().unwrap().to_owned()
}

async fn exchange_fresh(m: &RunningMock) -> Value {
    let code = code(m, "api").await;
    let (status, body) = exchange(m, &code).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn token_endpoint_errors() {
    let m = mock().await;
    let code = code(&m, "api").await;
    // wrong client secret: 401 invalid_client, and the code survives
    let (status, body) = token_request(
        &m,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", CLIENT_ID),
            ("client_secret", "wrong"),
            ("code", &code),
            ("redirect_uri", CALLBACK),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "invalid_client");
    // wrong PKCE verifier
    let (status, body) = token_request(
        &m,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
            ("code", &code),
            ("redirect_uri", CALLBACK),
            ("code_verifier", &VERIFIER.replace('d', "e")),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    // missing parameters and unknown grant types
    let (status, body) =
        token_request(&m, &[("client_id", CLIENT_ID), ("client_secret", SECRET)]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );
    let (status, body) = token_request(
        &m,
        &[
            ("grant_type", "password"),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );

    // switches: token_error, token_status
    m.provider.switches().set_token_error(Some("invalid_grant"));
    let (status, body) = refresh(&m, "whatever").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    m.provider.switches().set_token_error(None);
    m.provider.switches().set_token_status(Some(502));
    let r = client()
        .post(gl(&m, "/oauth/token"))
        .form(&[("grant_type", "refresh_token")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert!(r.text().await.unwrap().contains("GitLab"));
    m.provider.switches().set_token_status(None);
    assert_eq!(m.provider.stats().token_requests, 6);
}

#[tokio::test]
async fn refresh_rotates_and_kills_the_old_pair() {
    let m = mock().await;
    let first = exchange_fresh(&m).await;
    let (status, second) = refresh(&m, &body_str(&first, "refresh_token")).await;
    assert_eq!(status, 200, "{second}");
    assert_ne!(second["access_token"], first["access_token"]);
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    assert_eq!(second["scope"], "api");
    // the old access token and the old refresh token are dead
    let (status, _, body) = get(&m, "/api/v4/user", &body_str(&first, "access_token")).await;
    assert_eq!(status, 401);
    assert_eq!(body["message"], "401 Unauthorized");
    let (status, body) = refresh(&m, &body_str(&first, "refresh_token")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (status, _, _) = get(&m, "/api/v4/user", &body_str(&second, "access_token")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn revocation_rfc7009() {
    let m = mock().await;
    let tokens = exchange_fresh(&m).await;
    let access = body_str(&tokens, "access_token");
    let revoke = |client_id: &'static str, secret: &'static str, token: String| {
        let url = gl(&m, "/oauth/revoke");
        async move {
            let r = client()
                .post(url)
                .form(&[
                    ("client_id", client_id),
                    ("client_secret", secret),
                    ("token", &token),
                ])
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        }
    };
    // another application may not revoke it
    assert_eq!(
        revoke("other-client", "other-secret", access.clone()).await,
        403
    );
    assert_eq!(revoke(CLIENT_ID, "wrong", access.clone()).await, 401);
    assert_eq!(revoke(CLIENT_ID, SECRET, access.clone()).await, 200);
    assert_eq!(m.provider.stats().revocations, 1);
    let (status, _, info) = get(&m, "/oauth/token/info", &access).await;
    assert_eq!(status, 401);
    assert_eq!(info["error"], "invalid_token");
    // the refresh token died with it
    let (status, _) = refresh(&m, &body_str(&tokens, "refresh_token")).await;
    assert_eq!(status, 400);
    // unknown and already revoked tokens: 200 all the same
    assert_eq!(revoke(CLIENT_ID, SECRET, access).await, 200);
    assert_eq!(revoke(CLIENT_ID, SECRET, "nope".into()).await, 200);
    assert_eq!(m.provider.stats().revocations, 1);
}

#[tokio::test]
async fn authorize_errors_and_denial() {
    let m = mock().await;
    // unknown scopes go back to the client as invalid_scope
    let r = authorize(&m, "write_repository api_read").await;
    assert_eq!(r.status(), 302);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(query(&location, "error").as_deref(), Some("invalid_scope"));
    assert_eq!(query(&location, "state").as_deref(), Some("st"));
    // the consent page
    let r = authorize(&m, "api").await;
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(page.contains("Mock GitLab") && page.contains("id=\"approve\""));
    assert!(page.contains("id=\"deny\"") && page.contains("<code>api</code>"));
    // deny switch
    m.provider.switches().set_deny(true);
    let r = authorize(&m, "api").await;
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(query(&location, "error").as_deref(), Some("access_denied"));
    m.provider.switches().set_deny(false);
    // a wrong redirect URI is never redirected to
    let r = client()
        .get(gl(&m, "/oauth/authorize"))
        .query(&[
            ("client_id", CLIENT_ID),
            ("redirect_uri", "http://evil.test/cb"),
            ("response_type", "code"),
            ("scope", "api"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(!r.headers().contains_key("location"));
    assert_eq!(m.provider.stats().authorize_requests, 4);
}

fn pat(m: &RunningMock, kind: &str, scopes: &[&str], days: i64) -> String {
    m.provider.create_pat(PatSpec {
        flavour: Flavour::Gitlab,
        owner: "bob".into(),
        kind: kind.into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        expires_at: Some(chrono::Utc::now() + chrono::Duration::days(days)),
        repositories: Vec::new(),
        email: None,
    })
}

#[tokio::test]
async fn personal_access_tokens_and_their_401s() {
    let m = mock().await;
    let token = pat(&m, "personal", &["read_api", "write_repository"], 30);
    assert!(token.starts_with("glpat-"));
    let (status, _, me) = get(&m, "/api/v4/personal_access_tokens/self", &token).await;
    assert_eq!(status, 200);
    assert_eq!(
        me["scopes"],
        serde_json::json!(["read_api", "write_repository"])
    );
    assert_eq!(me["active"], true);
    assert_eq!(me["revoked"], false);
    assert_eq!(me["user_id"], 1002);
    let date = (chrono::Utc::now() + chrono::Duration::days(30)).date_naive();
    assert_eq!(me["expires_at"], date.format("%Y-%m-%d").to_string());
    // PRIVATE-TOKEN works too
    let r = client()
        .get(gl(&m, "/api/v4/user"))
        .header("PRIVATE-TOKEN", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["username"], "bob");

    // /user wants an API scope; the token's own record does not
    let narrow = pat(&m, "personal", &["write_repository"], 30);
    let (status, _, body) = get(&m, "/api/v4/user", &narrow).await;
    assert_eq!(status, 403);
    assert_eq!(body["error"], "insufficient_scope");
    let (status, _, _) = get(&m, "/api/v4/personal_access_tokens/self", &narrow).await;
    assert_eq!(status, 200);

    // project tokens belong to a bot user
    let project = pat(&m, "project", &["api"], 30);
    let (_, _, bot) = get(&m, "/api/v4/user", &project).await;
    assert_eq!(bot["bot"], true);
    let name = bot["username"].as_str().unwrap();
    assert!(
        name.starts_with("project_") && name.contains("_bot_"),
        "{name}"
    );
    assert_eq!(name.rsplit('_').next().unwrap().len(), 32);

    // GitLab's 401 bodies
    let expired = pat(&m, "personal", &["api"], -1);
    let (status, _, body) = get(&m, "/api/v4/personal_access_tokens/self", &expired).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "invalid_token");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("Token is expired.")
    );
    m.provider.revoke_pat(&token);
    let (status, _, body) = get(&m, "/api/v4/user", &token).await;
    assert_eq!(status, 401);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("Token was revoked.")
    );
    let (status, _, body) = get(&m, "/api/v4/user", "glpat-unknown").await;
    assert_eq!(status, 401);
    assert_eq!(body["message"], "401 Unauthorized");
}

#[tokio::test]
async fn api_switches_and_unknown_paths() {
    let m = mock().await;
    let token = pat(&m, "personal", &["api"], 30);
    m.provider.switches().set_user_api_status(Some(429));
    let r = client()
        .get(gl(&m, "/api/v4/user"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "60");
    assert_eq!(r.headers()["ratelimit-remaining"], "0");
    assert!(r.headers().contains_key("ratelimit-reset"));
    m.provider.switches().set_user_api_status(Some(500));
    let (status, _, body) = get(&m, "/api/v4/personal_access_tokens/self", &token).await;
    assert_eq!(status, 500);
    assert_eq!(body["message"], "500 Internal Server Error");
    m.provider.switches().set_user_api_status(None);
    assert_eq!(m.provider.stats().user_requests, 1);

    let (status, _, body) = get(&m, "/api/v4/projects/1", &token).await;
    assert_eq!(status, 404);
    assert_eq!(body["message"], "404 Not Found");

    // reset forgets GitLab's OAuth tokens too
    let tokens = exchange_fresh(&m).await;
    m.provider.reset();
    let (status, _, _) = get(&m, "/api/v4/user", &body_str(&tokens, "access_token")).await;
    assert_eq!(status, 401);
}

// --- fine-grained PATs and self-rotation, driven as another project's
// test suite would: over /__mock and the GitLab API only.

async fn create_pat_http(m: &RunningMock, spec: Value) -> String {
    let r = client()
        .post(format!("{}/__mock/pats", m.base_url))
        .json(&spec)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["token"].as_str().unwrap().to_owned()
}

async fn pat_self_of(m: &RunningMock, token: &str) -> (u16, Value) {
    let r = client()
        .get(gl(m, "/api/v4/personal_access_tokens/self"))
        .header("PRIVATE-TOKEN", token)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn rotate_http(m: &RunningMock, token: &str, body: Value) -> (u16, Value) {
    let r = client()
        .post(gl(m, "/api/v4/personal_access_tokens/self/rotate"))
        .header("PRIVATE-TOKEN", token)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn fine_grained_pats_answer_granular_scopes() {
    let m = mock().await;
    let token = create_pat_http(
        &m,
        serde_json::json!({
            "flavour": "gitlab",
            "owner": "alice",
            "kind": "fine_grained",
            "scopes": [
                "read_repository:selected_memberships",
                "write_repository:selected_memberships",
                "read_user:user",
            ],
            "repositories": ["alice/demo", "acme/app"],
            "expires_at": "2099-01-01T00:00:00Z",
        }),
    )
    .await;
    assert!(token.starts_with("glpat-"));
    let (status, v) = pat_self_of(&m, &token).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["scopes"], serde_json::json!([]));
    let scopes = v["granular_scopes"].as_array().unwrap();
    // one entry per selected project, one for the user boundary
    assert_eq!(scopes.len(), 3, "{v}");
    assert_eq!(scopes[0]["access"], "selected_memberships");
    assert_eq!(
        scopes[0]["permissions"],
        serde_json::json!(["read_repository", "write_repository"])
    );
    assert!(scopes[0]["project_id"].is_u64());
    assert_ne!(scopes[0]["project_id"], scopes[1]["project_id"]);
    assert!(scopes[0]["group_id"].is_null());
    assert_eq!(scopes[2]["access"], "user");
    assert!(scopes[2]["project_id"].is_null());
    // GET /user needs the User permission read_user
    let r = client()
        .get(gl(&m, "/api/v4/user"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let no_user = create_pat_http(
        &m,
        serde_json::json!({
            "flavour": "gitlab", "owner": "alice", "kind": "fine_grained",
            "scopes": ["read_repository:all_memberships"],
        }),
    )
    .await;
    let r = client()
        .get(gl(&m, "/api/v4/user"))
        .bearer_auth(&no_user)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // a classic PAT has no granular_scopes
    let classic = create_pat_http(
        &m,
        serde_json::json!({ "flavour": "gitlab", "owner": "alice", "kind": "personal", "scopes": ["api"] }),
    )
    .await;
    let (_, v) = pat_self_of(&m, &classic).await;
    assert_eq!(v["scopes"], serde_json::json!(["api"]));
    assert!(v.get("granular_scopes").is_none(), "{v}");
}

#[tokio::test]
async fn self_rotation_revokes_the_old_token_and_reuse_revokes_the_successor() {
    let m = mock().await;
    let old = create_pat_http(
        &m,
        serde_json::json!({ "flavour": "gitlab", "owner": "alice", "kind": "personal", "scopes": ["api"] }),
    )
    .await;
    let in_30_days = (chrono::Utc::now() + chrono::Duration::days(30)).date_naive();
    let (status, v) = rotate_http(
        &m,
        &old,
        serde_json::json!({ "expires_at": in_30_days.format("%Y-%m-%d").to_string() }),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let new = v["token"].as_str().unwrap().to_owned();
    assert!(new.starts_with("glpat-"));
    assert_ne!(new, old);
    assert_eq!(v["scopes"], serde_json::json!(["api"]));
    assert_eq!(v["expires_at"], in_30_days.format("%Y-%m-%d").to_string());
    assert_eq!(v["active"], true);
    let (status, v) = pat_self_of(&m, &old).await;
    assert_eq!(status, 401);
    assert_eq!(
        v["error_description"],
        "Token was revoked. You have to re-authorize from the user."
    );
    assert_eq!(pat_self_of(&m, &new).await.0, 200);
    // without expires_at: one week, as GitLab does
    let (status, v) = rotate_http(&m, &new, serde_json::json!({})).await;
    assert_eq!(status, 200, "{v}");
    let newest = v["token"].as_str().unwrap().to_owned();
    let week = (chrono::Utc::now() + chrono::Duration::days(7)).date_naive();
    assert_eq!(v["expires_at"], week.format("%Y-%m-%d").to_string());
    // reuse of the first token: 401, and every successor dies
    let (status, _) = rotate_http(&m, &old, serde_json::json!({})).await;
    assert_eq!(status, 401);
    assert_eq!(pat_self_of(&m, &newest).await.0, 401);
    let stats: Value = client()
        .get(format!("{}/__mock/stats", m.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["pat_rotate_requests"], 3, "{stats}");
    assert_eq!(stats["pat_rotations"], 2, "{stats}");
}

#[tokio::test]
async fn self_rotation_refusals_and_switches() {
    let m = mock().await;
    let pat = |scopes: Value| serde_json::json!({ "flavour": "gitlab", "owner": "alice", "kind": "personal", "scopes": scopes });
    // needs api or self_rotate
    let read_only = create_pat_http(&m, pat(serde_json::json!(["read_api"]))).await;
    let (status, v) = rotate_http(&m, &read_only, serde_json::json!({})).await;
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["error"], "insufficient_scope");
    let token = create_pat_http(
        &m,
        pat(serde_json::json!(["self_rotate", "read_repository"])),
    )
    .await;
    // a date in the past, or beyond a year
    for bad in ["2000-01-01", "2999-01-01", "not-a-date"] {
        let (status, v) = rotate_http(&m, &token, serde_json::json!({ "expires_at": bad })).await;
        assert_eq!(status, 400, "{bad}: {v}");
        assert!(
            v["message"]
                .as_str()
                .unwrap()
                .starts_with("400 Bad request - ")
        );
    }
    assert_eq!(
        pat_self_of(&m, &token).await.0,
        200,
        "refusals rotate nothing"
    );
    // pat_rotate_status: answered without rotating
    let r = client()
        .post(format!("{}/__mock/switches", m.base_url))
        .json(&serde_json::json!({ "pat_rotate_status": 503 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, _) = rotate_http(&m, &token, serde_json::json!({})).await;
    assert_eq!(status, 503);
    assert_eq!(pat_self_of(&m, &token).await.0, 200);
    // pat_rotate_lose_answer: rotated, answered 502
    client()
        .post(format!("{}/__mock/switches", m.base_url))
        .json(&serde_json::json!({ "pat_rotate_status": null, "pat_rotate_lose_answer": true }))
        .send()
        .await
        .unwrap();
    let (status, _) = rotate_http(&m, &token, serde_json::json!({})).await;
    assert_eq!(status, 502);
    assert_eq!(pat_self_of(&m, &token).await.0, 401, "it was rotated");
    let t = m.provider.traffic_stats();
    assert_eq!((t.pat_rotate_requests, t.pat_rotations), (6, 1));
    // a bad status is refused
    let r = client()
        .post(format!("{}/__mock/switches", m.base_url))
        .json(&serde_json::json!({ "pat_rotate_status": 1000 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}
