//! Bitbucket Cloud and Data Center: personal token validation over real
//! HTTP against the mock flavours, and the OAuth flow through the broker.
#![allow(
    clippy::disallowed_methods,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code
)]

mod support;

use gitbroker::mock::{Flavour, MockConfig, MockProvider, PatSpec, RunningMock};
use gitbroker::providers::{
    self, Endpoints, GitProvider, PatError, PatInput, ProviderKind, TokenPurpose, TokenReport,
};

use std::time::Duration;
use support::*;
use url::Url;

const ALICE: &str = "u-1001";

const API_USER: &[&str] = &[
    "read:user:bitbucket",
    "read:workspace:bitbucket",
    "read:repository:bitbucket",
    "write:repository:bitbucket",
];
const API_RUNTIME: &[&str] = &[
    "read:user:bitbucket",
    "read:workspace:bitbucket",
    "read:repository:bitbucket",
    "write:repository:bitbucket",
    "admin:repository:bitbucket",
    "read:webhook:bitbucket",
    "write:webhook:bitbucket",
];

async fn start() -> RunningMock {
    MockProvider::start(MockConfig::demo(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn p(kind: ProviderKind) -> &'static dyn GitProvider {
    providers::provider(kind)
}

fn endpoints(mock: &RunningMock, kind: ProviderKind) -> Endpoints {
    let path = match kind {
        ProviderKind::BitbucketCloud => "bitbucket",
        ProviderKind::BitbucketDataCenter => "bitbucket-dc",
        other => panic!("not a Bitbucket kind: {other:?}"),
    };
    let base = Url::parse(&format!("{}/{path}", mock.base_url)).unwrap();
    p(kind).endpoints(Some(&base), None).unwrap()
}

fn spec(flavour: Flavour, owner: &str, kind: &str, scopes: &[&str]) -> PatSpec {
    PatSpec {
        flavour,
        owner: owner.into(),
        kind: kind.into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        expires_at: None,
        repositories: Vec::new(),
        email: None,
    }
}

fn api_token(mock: &RunningMock, scopes: &[&str]) -> String {
    mock.provider
        .create_pat(spec(Flavour::BitbucketCloud, "alice", "api_token", scopes))
}

fn dc_token(mock: &RunningMock, owner: &str, kind: &str, scopes: &[&str]) -> String {
    mock.provider
        .create_pat(spec(Flavour::BitbucketDataCenter, owner, kind, scopes))
}

async fn validate(
    mock: &RunningMock,
    kind: ProviderKind,
    token: &str,
    username: Option<&str>,
    email: Option<&str>,
    purpose: TokenPurpose,
) -> Result<TokenReport, PatError> {
    // short, so that the hang cases end quickly
    let http = providers::http_client(Duration::from_secs(1), Duration::from_secs(2)).unwrap();
    let input = PatInput::new(token, username, email);
    p(kind)
        .validate_pat(
            &http,
            &endpoints(mock, kind),
            &input,
            purpose,
            chrono::Utc::now(),
        )
        .await
}

async fn cloud(
    mock: &RunningMock,
    token: &str,
    purpose: TokenPurpose,
) -> Result<TokenReport, PatError> {
    validate(
        mock,
        ProviderKind::BitbucketCloud,
        token,
        Some("alice"),
        Some("alice@example.com"),
        purpose,
    )
    .await
}

async fn dc(
    mock: &RunningMock,
    token: &str,
    username: &str,
    purpose: TokenPurpose,
) -> Result<TokenReport, PatError> {
    validate(
        mock,
        ProviderKind::BitbucketDataCenter,
        token,
        Some(username),
        None,
        purpose,
    )
    .await
}

fn assert_unavailable(r: Result<TokenReport, PatError>, detail: &str) {
    match r {
        Err(e @ PatError::Unavailable { .. }) => {
            let m = e.to_string();
            assert!(m.contains("could not validate the token right now"), "{m}");
            assert!(m.contains(detail), "{m}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

fn assert_invalid(r: Result<TokenReport, PatError>) {
    assert!(matches!(r, Err(PatError::Invalid { .. })), "{r:?}");
}

// ---------------------------------------------------------------------------
// Bitbucket Cloud API tokens.

#[tokio::test]
async fn cloud_valid_user_and_runtime_tokens() {
    let mock = start().await;
    let token = api_token(&mock, API_USER);
    let report = cloud(&mock, &token, TokenPurpose::User).await.unwrap();
    assert_eq!(report.login, "alice");
    assert_eq!(report.git_username, "alice");
    assert_eq!(report.kind, "API token");
    assert_eq!(report.scopes, API_USER);
    assert_eq!(report.expires_at, None);

    let token = api_token(&mock, API_RUNTIME);
    let report = cloud(&mock, &token, TokenPurpose::Runtime).await.unwrap();
    assert_eq!(report.scopes, API_RUNTIME);
    assert_eq!(mock.provider.stats().user_requests, 2);
}

#[tokio::test]
async fn cloud_missing_one_scope_is_named_with_the_steps() {
    let mock = start().await;
    let help = p(ProviderKind::BitbucketCloud).token_help(TokenPurpose::User);
    assert!(help.contains("Personal settings > Atlassian account settings > Security"));
    assert!(help.contains("at most one year"));
    // write does not include read for API tokens
    let token = api_token(
        &mock,
        &[
            "read:user:bitbucket",
            "read:workspace:bitbucket",
            "write:repository:bitbucket",
        ],
    );
    let err = cloud(&mock, &token, TokenPurpose::User).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("This token lacks the required scopes: read:repository:bitbucket. {help}")
    );

    // without read:user:bitbucket, Bitbucket answers 403 to /2.0/user
    let token = api_token(&mock, &API_USER[1..]);
    let err = cloud(&mock, &token, TokenPurpose::User).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("This token lacks the required scopes: read:user:bitbucket. {help}")
    );

    // a user token is not enough for a runtime
    let token = api_token(&mock, API_USER);
    let help = p(ProviderKind::BitbucketCloud).token_help(TokenPurpose::Runtime);
    let err = cloud(&mock, &token, TokenPurpose::Runtime)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "This token lacks the required scopes: admin:repository:bitbucket, read:webhook:bitbucket, write:webhook:bitbucket. {help}"
        )
    );
}

#[tokio::test]
async fn cloud_expired_revoked_and_wrong_email_are_invalid() {
    let mock = start().await;
    let mut expired = spec(Flavour::BitbucketCloud, "alice", "api_token", API_USER);
    expired.expires_at = Some(chrono::Utc::now() - chrono::Duration::days(1));
    let token = mock.provider.create_pat(expired);
    assert_invalid(cloud(&mock, &token, TokenPurpose::User).await);

    let token = api_token(&mock, API_USER);
    assert!(mock.provider.revoke_pat(&token));
    let err = cloud(&mock, &token, TokenPurpose::User).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("Bitbucket Cloud does not accept this token"),
        "{err}"
    );

    let token = api_token(&mock, API_USER);
    let r = validate(
        &mock,
        ProviderKind::BitbucketCloud,
        &token,
        Some("alice"),
        Some("bob@example.com"),
        TokenPurpose::User,
    )
    .await;
    assert_invalid(r);
}

#[tokio::test]
async fn cloud_access_tokens_are_the_wrong_kind() {
    let mock = start().await;
    let token = mock.provider.create_pat(spec(
        Flavour::BitbucketCloud,
        "acme/site",
        "repo_access_token",
        &["repository:write"],
    ));
    assert!(token.starts_with("ATCTT"));
    for purpose in [TokenPurpose::User, TokenPurpose::Runtime] {
        match cloud(&mock, &token, purpose).await {
            Err(PatError::WrongKind { reason }) => {
                assert!(reason.contains("repository, project or workspace access token"));
            }
            other => panic!("{other:?}"),
        }
    }
    // nothing was asked of Bitbucket: the prefix says it all
    assert_eq!(mock.provider.stats().user_requests, 0);
}

#[tokio::test]
async fn cloud_app_passwords_are_refused_as_removed() {
    let mock = start().await;
    let password = mock.provider.create_pat(spec(
        Flavour::BitbucketCloud,
        "alice",
        "app_password",
        &["account", "team", "repository:write"],
    ));
    let err = cloud(&mock, &password, TokenPurpose::User)
        .await
        .unwrap_err();
    let PatError::WrongKind { reason } = &err else {
        panic!("{err:?}");
    };
    assert!(reason.contains("app password"), "{reason}");
    assert!(reason.contains("removed them on 2026-07-28"), "{reason}");
    assert!(reason.contains("Create API token with scopes"), "{reason}");
    assert!(reason.contains("at most one year"), "{reason}");

    // the mock says the same to whoever still sends one
    let r = reqwest::Client::new()
        .get(format!("{}/bitbucket/2.0/user", mock.base_url))
        .basic_auth("alice", Some(&password))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("no longer supported"));
}

#[tokio::test]
async fn cloud_missing_username_or_email_is_bad_input() {
    let mock = start().await;
    let token = api_token(&mock, API_USER);
    let kind = ProviderKind::BitbucketCloud;
    let user = TokenPurpose::User;
    let cases: [(Option<&str>, Option<&str>, &[&str]); 4] = [
        (Some("alice"), None, &["Atlassian account email"]),
        (None, Some("alice@example.com"), &["Bitbucket username"]),
        (
            Some(" "),
            None,
            &["Atlassian account email", "Bitbucket username"],
        ),
        (Some("alice"), Some("alice"), &["email"]),
    ];
    for (username, email, words) in cases {
        match validate(&mock, kind, &token, username, email, user).await {
            Err(PatError::BadInput(m)) => {
                for w in words {
                    assert!(m.contains(w), "{m}");
                }
            }
            other => panic!("{other:?}"),
        }
    }
    // someone else's username
    match validate(
        &mock,
        kind,
        &token,
        Some("bob"),
        Some("alice@example.com"),
        user,
    )
    .await
    {
        Err(PatError::BadInput(m)) => assert!(m.contains("`alice`, not `bob`"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(mock.provider.stats().user_requests, 1);
}

#[tokio::test]
async fn cloud_outages_are_unavailable_not_invalid() {
    let mock = start().await;
    let token = api_token(&mock, API_USER);
    let switches = mock.provider.switches();
    for (status, detail) in [
        (500, "HTTP 500"),
        (503, "HTTP 503"),
        (429, "retry after 30 s"),
    ] {
        switches.set_user_api_status(Some(status));
        assert_unavailable(cloud(&mock, &token, TokenPurpose::User).await, detail);
    }
    switches.set_user_api_status(None);
    switches.set_api_hang(true);
    assert_unavailable(cloud(&mock, &token, TokenPurpose::User).await, "timed out");
    switches.set_api_hang(false);
    assert!(cloud(&mock, &token, TokenPurpose::User).await.is_ok());
}

// ---------------------------------------------------------------------------
// Bitbucket Data Center HTTP access tokens.

#[tokio::test]
async fn dc_valid_user_and_runtime_tokens() {
    let mock = start().await;
    let token = dc_token(&mock, "alice", "personal", &["REPO_WRITE"]);
    let report = dc(&mock, &token, "alice", TokenPurpose::User)
        .await
        .unwrap();
    assert_eq!(report.login, "alice");
    assert_eq!(report.git_username, "alice");
    assert_eq!(report.kind, "personal HTTP access token");
    assert_eq!(report.scopes, ["REPO_WRITE"]);
    // usernames are case-insensitive
    assert!(dc(&mock, &token, "Alice", TokenPurpose::User).await.is_ok());

    for held in ["REPO_ADMIN", "PROJECT_ADMIN"] {
        let token = dc_token(&mock, "alice", "personal", &[held]);
        let report = dc(&mock, &token, "alice", TokenPurpose::Runtime)
            .await
            .unwrap();
        assert_eq!(report.scopes, ["REPO_ADMIN"], "{held}");
    }
    // a project token suits a runtime: it acts as its service user
    let token = dc_token(&mock, "acme-deployer", "project", &["PROJECT_ADMIN"]);
    let report = dc(&mock, &token, "whoever", TokenPurpose::Runtime)
        .await
        .unwrap();
    assert_eq!(report.git_username, "acme-deployer");
    assert_eq!(report.kind, "project or repository HTTP access token");
}

#[tokio::test]
async fn dc_missing_permission_is_named_with_the_steps() {
    let mock = start().await;
    let token = dc_token(&mock, "alice", "personal", &["REPO_READ"]);
    let help = p(ProviderKind::BitbucketDataCenter).token_help(TokenPurpose::User);
    assert!(help.contains("Manage account > HTTP access tokens > Create token"));
    let err = dc(&mock, &token, "alice", TokenPurpose::User)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "This token lacks the required permissions: REPO_WRITE. Bitbucket Data Center does not tell a token its permissions, so gitbroker looked for a repository this token can use with them and found none: either the token lacks them or your account has no such repository. {help}"
        )
    );

    let token = dc_token(&mock, "alice", "personal", &["REPO_WRITE"]);
    let err = dc(&mock, &token, "alice", TokenPurpose::Runtime)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("This token lacks the required permissions: REPO_ADMIN. "),
        "{err}"
    );
}

#[tokio::test]
async fn dc_expired_and_revoked_are_invalid() {
    let mock = start().await;
    let mut expired = spec(
        Flavour::BitbucketDataCenter,
        "alice",
        "personal",
        &["REPO_WRITE"],
    );
    expired.expires_at = Some(chrono::Utc::now() - chrono::Duration::hours(1));
    let token = mock.provider.create_pat(expired);
    assert_invalid(dc(&mock, &token, "alice", TokenPurpose::User).await);

    let token = dc_token(&mock, "alice", "personal", &["REPO_WRITE"]);
    assert!(mock.provider.revoke_pat(&token));
    assert_invalid(dc(&mock, &token, "alice", TokenPurpose::User).await);
    assert_invalid(dc(&mock, "BBDC-not-a-token", "alice", TokenPurpose::User).await);
}

#[tokio::test]
async fn dc_project_and_repository_tokens_are_the_wrong_kind_for_users() {
    let mock = start().await;
    for kind in ["project", "repository"] {
        let token = dc_token(&mock, "acme-bot", kind, &["REPO_WRITE"]);
        match dc(&mock, &token, "alice", TokenPurpose::User).await {
            Err(PatError::WrongKind { reason }) => {
                assert!(reason.contains("service user `acme-bot`"), "{reason}");
                assert!(reason.contains("personal HTTP access token"), "{reason}");
            }
            other => panic!("{kind}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn dc_missing_or_wrong_username_is_bad_input() {
    let mock = start().await;
    let token = dc_token(&mock, "alice", "personal", &["REPO_WRITE"]);
    let kind = ProviderKind::BitbucketDataCenter;
    for username in [None, Some(""), Some("  ")] {
        match validate(&mock, kind, &token, username, None, TokenPurpose::User).await {
            Err(PatError::BadInput(m)) => assert!(m.contains("Bitbucket username"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(mock.provider.stats().user_requests, 0);
    match dc(&mock, &token, "bob", TokenPurpose::User).await {
        Err(PatError::BadInput(m)) => assert!(m.contains("`alice`, not `bob`"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn dc_outages_are_unavailable_not_invalid() {
    let mock = start().await;
    let token = dc_token(&mock, "alice", "personal", &["REPO_WRITE"]);
    let switches = mock.provider.switches();
    for (status, detail) in [
        (500, "HTTP 500"),
        (502, "HTTP 502"),
        (429, "retry after 30 s"),
    ] {
        switches.set_user_api_status(Some(status));
        assert_unavailable(dc(&mock, &token, "alice", TokenPurpose::User).await, detail);
    }
    switches.set_user_api_status(None);
    switches.set_api_hang(true);
    assert_unavailable(
        dc(&mock, &token, "alice", TokenPurpose::User).await,
        "timed out",
    );
    switches.set_api_hang(false);
    assert!(dc(&mock, &token, "alice", TokenPurpose::User).await.is_ok());
}

// ---------------------------------------------------------------------------
// The mock's token endpoints, as the broker's OAuth client meets them.

#[tokio::test]
async fn cloud_token_endpoint_wants_basic_auth_and_answers_scopes() {
    let mock = start().await;
    mock.provider.add_oauth_app(gitbroker::mock::MockOAuthApp {
        name: "t".into(),
        client_id: "cid".into(),
        client_secret: "csecret".into(),
        callback_url: "http://broker.test/cb".into(),
    });
    mock.provider.switches().set_auto_approve(Some("alice"));
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let code = || async {
        let r = http
            .get(format!(
                "{}/bitbucket/site/oauth2/authorize?client_id=cid&response_type=code&state=s",
                mock.base_url
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302);
        let loc = Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
        loc.query_pairs()
            .find(|(k, _)| k == "code")
            .unwrap()
            .1
            .into_owned()
    };
    let url = format!("{}/bitbucket/site/oauth2/access_token", mock.base_url);
    // the secret in the body is refused
    let c = code().await;
    let r = http
        .post(&url)
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", c.as_str()),
            ("client_id", "cid"),
            ("client_secret", "csecret"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // an unauthenticated client cannot spend the code; the right one can, once
    let exchange = |c: String| {
        let http = http.clone();
        let url = url.clone();
        async move {
            http.post(&url)
                .basic_auth("cid", Some("csecret"))
                .form(&[("grant_type", "authorization_code"), ("code", c.as_str())])
                .send()
                .await
                .unwrap()
        }
    };
    let r = exchange(c.clone()).await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 7200);
    assert_eq!(body["scopes"], "account team repository:write");
    assert!(body["refresh_token"].is_string());
    let again = exchange(c).await;
    assert_eq!(again.status(), 400);
    let error: serde_json::Value = again.json().await.unwrap();
    assert_eq!(error["error"], "invalid_grant");

    // the token reads the account, with its scopes and kind in headers
    let r = http
        .get(format!("{}/bitbucket/2.0/user", mock.base_url))
        .bearer_auth(body["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["x-oauth-scopes"],
        "account, team, repository:write"
    );
    assert_eq!(r.headers()["x-credential-type"], "oauth2");
    let user: serde_json::Value = r.json().await.unwrap();
    assert_eq!(user["username"], "alice");

    // refresh works once
    let refresh = body["refresh_token"].as_str().unwrap();
    for expected in [200, 400] {
        let r = http
            .post(&url)
            .basic_auth("cid", Some("csecret"))
            .form(&[("grant_type", "refresh_token"), ("refresh_token", refresh)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), expected);
    }
    assert_eq!(mock.provider.stats().authorize_requests, 1);
}

// ---------------------------------------------------------------------------
// The OAuth flow through the broker.

async fn case_bitbucket_cloud_oauth(h: Harness) {
    let alice = h.signed_in("alice").await;
    let provider_page = alice.start_authorize("bbc-rt").await;
    assert_eq!(provider_page.status, 200, "{}", provider_page.body);
    assert!(provider_page.body.contains("Mock Bitbucket Cloud"));
    // scopes live on the consumer: the authorize URL carries none
    assert!(
        !provider_page.url.contains("scope="),
        "{}",
        provider_page.url
    );
    let back = alice.provider_decision(&provider_page, "approve").await;
    let page = alice.follow(back).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body
            .contains("Access to Bitbucket Cloud authorized as alice for runtime bbc-rt"),
        "{}",
        page.body
    );

    let r = h.runtime_get("bbc-rt", "bbc-rt", ALICE).await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["username"], "x-token-auth");
    assert_eq!(body["provider"], "bitbucket_cloud");
    assert_eq!(
        body["scopes"],
        serde_json::json!(["account", "team", "repository:write"])
    );
    assert!(body.get("refresh_token").is_none());
    let expires_at = body["expires_at"].as_str().expect("a 2-hour token expires");
    let expires_at = chrono::DateTime::parse_from_rfc3339(expires_at).unwrap();
    let left = expires_at.signed_duration_since(chrono::Utc::now());
    assert!(left > chrono::Duration::minutes(110) && left <= chrono::Duration::hours(2));

    // the served token works at the provider
    let user = reqwest::Client::new()
        .get(format!("{}/bitbucket/2.0/user", h.mock.base_url))
        .bearer_auth(body["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(user.status(), 200);
    let stats = h.mock.provider.stats();
    assert_eq!(stats.token_requests, 1);
    assert_eq!(stats.user_requests, 2);
}

async fn case_bitbucket_cloud_consumer_without_workspace_scope(h: Harness) {
    h.mock
        .provider
        .switches()
        .set_grant_scopes(Some(&["account", "repository:write"]));
    let alice = h.signed_in("alice").await;
    let page = alice.authorize("bbc-rt").await;
    assert!(
        page.body.contains("lacks required scopes: team"),
        "{}",
        page.body
    );
    let r = h.runtime_get("bbc-rt", "bbc-rt", ALICE).await;
    assert_eq!(r.status(), 404);
}

async fn case_bitbucket_cloud_token_endpoint_down(h: Harness) {
    h.mock.provider.switches().set_token_status(Some(503));
    let alice = h.signed_in("alice").await;
    let page = alice.authorize("bbc-rt").await;
    assert!(
        page.body
            .contains("Bitbucket Cloud could not be reached or failed"),
        "{}",
        page.body
    );
    let r = h.runtime_get("bbc-rt", "bbc-rt", ALICE).await;
    assert_eq!(r.status(), 404);
}

async fn case_bitbucket_dc_oauth(h: Harness) {
    let alice = h.signed_in("alice").await;
    let provider_page = alice.start_authorize("bbdc-rt").await;
    assert_eq!(provider_page.status, 200, "{}", provider_page.body);
    assert!(provider_page.body.contains("Mock Bitbucket Data Center"));
    assert!(provider_page.body.contains("<code>REPO_WRITE</code>"));
    let back = alice.provider_decision(&provider_page, "approve").await;
    let page = alice.follow(back).await;
    assert!(
        page.body
            .contains("Access to Bitbucket Data Center authorized as alice for runtime bbdc-rt"),
        "{}",
        page.body
    );
    let r = h.runtime_get("bbdc-rt", "bbdc-rt", ALICE).await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["username"], "alice");
    assert_eq!(body["provider"], "bitbucket_data_center");
    assert_eq!(body["scopes"], serde_json::json!(["REPO_WRITE"]));

    // the served token is the provider's: it names alice
    let props = reqwest::Client::new()
        .get(format!(
            "{}/bitbucket-dc/rest/api/1.0/application-properties",
            h.mock.base_url
        ))
        .bearer_auth(body["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(props.headers()["x-ausername"], "alice");
}

async fn case_bitbucket_dc_denied(h: Harness) {
    let alice = h.signed_in("alice").await;
    let provider_page = alice.start_authorize("bbdc-rt").await;
    let back = alice.provider_decision(&provider_page, "deny").await;
    let page = alice.follow(back).await;
    assert!(
        page.body
            .contains("Authorization was denied at Bitbucket Data Center"),
        "{}",
        page.body
    );
    assert_eq!(h.mock.provider.stats().token_requests, 0);
}

macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() { super::$case(Harness::start(Backend::Embedded).await).await }
            )*
        }
    };
}

suite!(
    case_bitbucket_cloud_oauth,
    case_bitbucket_cloud_consumer_without_workspace_scope,
    case_bitbucket_cloud_token_endpoint_down,
    case_bitbucket_dc_oauth,
    case_bitbucket_dc_denied,
);

#[tokio::test]
async fn dc_rest_takes_project_and_repository_tokens_as_bearer_only() {
    let mock = start().await;
    let url = format!(
        "{}/bitbucket-dc/rest/api/1.0/application-properties",
        mock.base_url
    );
    let http = reqwest::Client::new();
    for kind in ["project", "repository"] {
        let token = dc_token(&mock, "acme-deployer", kind, &["REPO_READ"]);
        // Atlassian: "Don't use this token with a username in Basic authentication"
        for user in ["acme-deployer", "x-token-auth", ""] {
            let r = http
                .get(&url)
                .basic_auth(user, Some(&token))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 401, "{kind} as Basic with {user:?}");
        }
        let r = http.get(&url).bearer_auth(&token).send().await.unwrap();
        assert_eq!(r.status(), 200, "{kind}");
        assert_eq!(r.headers()["x-ausername"], "acme-deployer");
    }
    // personal tokens: Basic with the owner's name, or Bearer
    let token = dc_token(&mock, "alice", "personal", &["REPO_READ"]);
    for (user, status) in [("alice", 200), ("ALICE", 200), ("bob", 401)] {
        let r = http
            .get(&url)
            .basic_auth(user, Some(&token))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "personal token as Basic with {user}");
    }
    let r = http.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.headers()["x-ausername"], "alice");
}
