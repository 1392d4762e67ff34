//! The GitLab provider against the mock's `gitlab` flavour over real HTTP:
//! personal access token validation for both kinds (gitlab.com and
//! self-managed), the configuration's view of GitLab apps, and the OAuth
//! flow end to end through the broker.
#![allow(
    clippy::disallowed_methods,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code
)]

mod support;

use chrono::{Duration, Utc};
use gitbroker::config::Settings;
use gitbroker::mock::{Flavour, MockConfig, MockProvider, PatSpec, RunningMock};
use gitbroker::providers::{
    self, Endpoints, PatError, PatInput, ProviderKind, TokenPurpose, TokenReport,
};
use secrecy::SecretString;
use support::*;
use url::Url;

const KINDS: [ProviderKind; 2] = [ProviderKind::Gitlab, ProviderKind::GitlabSelfManaged];

const USER_HELP: &str = "Create one in GitLab under User settings > Access tokens > Add new token: enter a token name, set an expiration date (GitLab requires one), select the scopes `read_api`, `read_repository` and `write_repository`, create the token, and paste it here.";
const RUNTIME_HELP: &str = "Create it, preferably for a service account, in GitLab under User settings > Access tokens > Add new token: enter a token name, set an expiration date (GitLab requires one), select the scopes `api` and `read_repository`, create the token, and paste it here.";

struct Gl {
    mock: RunningMock,
    kind: ProviderKind,
    endpoints: Endpoints,
    http: providers::ProviderClient,
}

async fn gitlab(kind: ProviderKind) -> Gl {
    let mock = MockProvider::start(MockConfig::demo(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let base = Url::parse(&format!("{}/gitlab", mock.base_url)).unwrap();
    let endpoints = providers::provider(kind)
        .endpoints(Some(&base), None)
        .unwrap();
    let http = providers::http_client(
        std::time::Duration::from_secs(2),
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    Gl {
        mock,
        kind,
        endpoints,
        http,
    }
}

impl Gl {
    fn pat(&self, kind: &str, owner: &str, scopes: &[&str], expires_in_days: i64) -> String {
        self.mock.provider.create_pat(PatSpec {
            flavour: Flavour::Gitlab,
            owner: owner.into(),
            kind: kind.into(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            expires_at: Some(Utc::now() + Duration::days(expires_in_days)),
            repositories: Vec::new(),
            email: None,
        })
    }

    async fn validate_at(
        &self,
        token: &str,
        purpose: TokenPurpose,
        now: chrono::DateTime<Utc>,
    ) -> Result<TokenReport, PatError> {
        let input = PatInput::new(token, None, None);
        providers::provider(self.kind)
            .validate_pat(&self.http, &self.endpoints, &input, purpose, now)
            .await
    }

    async fn validate(&self, token: &str, purpose: TokenPurpose) -> Result<TokenReport, PatError> {
        self.validate_at(token, purpose, Utc::now()).await
    }
}

#[tokio::test]
async fn valid_personal_tokens_for_both_purposes() {
    for kind in KINDS {
        let gl = gitlab(kind).await;
        let user_token = gl.pat(
            "personal",
            "alice",
            &["read_api", "read_repository", "write_repository"],
            30,
        );
        let report = gl.validate(&user_token, TokenPurpose::User).await.unwrap();
        assert_eq!(report.login, "alice");
        assert_eq!(report.git_username, "oauth2");
        assert_eq!(report.kind, "personal access token");
        assert_eq!(
            report.scopes,
            vec!["read_api", "read_repository", "write_repository"]
        );
        // GitLab stores a date: the token stops at 00:00 UTC of that day
        let expected = (Utc::now() + Duration::days(30))
            .date_naive()
            .and_time(chrono::NaiveTime::MIN)
            .and_utc();
        assert_eq!(report.expires_at, Some(expected));

        let runtime_token = gl.pat("personal", "bob", &["api", "read_repository"], 90);
        let report = gl
            .validate(&runtime_token, TokenPurpose::Runtime)
            .await
            .unwrap();
        assert_eq!(report.login, "bob");
        assert_eq!(report.git_username, "oauth2");

        // the user token is not enough for a runtime
        let e = gl
            .validate(&user_token, TokenPurpose::Runtime)
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("This token lacks the required scopes: api. {RUNTIME_HELP}")
        );
    }
}

#[tokio::test]
async fn broader_scope_is_accepted_for_the_user_token() {
    for kind in KINDS {
        let gl = gitlab(kind).await;
        let token = gl.pat("personal", "carol", &["api"], 10);
        let report = gl.validate(&token, TokenPurpose::User).await.unwrap();
        assert_eq!(report.login, "carol");
        assert_eq!(report.scopes, vec!["api"]);
        // and `api` alone does for a runtime too: it covers read_repository
        assert!(gl.validate(&token, TokenPurpose::Runtime).await.is_ok());
    }
}

#[tokio::test]
async fn missing_scope_is_named_with_the_how_to() {
    for kind in KINDS {
        let gl = gitlab(kind).await;
        // no API scope at all: GitLab's /user answers 403, the verdict is the scopes
        let token = gl.pat("personal", "alice", &["write_repository"], 10);
        let e = gl.validate(&token, TokenPurpose::User).await.unwrap_err();
        assert!(matches!(e, PatError::MissingScopes { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!("This token lacks the required scopes: read_api. {USER_HELP}")
        );
        let token = gl.pat("personal", "alice", &["read_api", "read_repository"], 10);
        let e = gl.validate(&token, TokenPurpose::User).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("This token lacks the required scopes: write_repository. {USER_HELP}")
        );
        let token = gl.pat("personal", "alice", &["read_user"], 10);
        let e = gl.validate(&token, TokenPurpose::User).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "This token lacks the required scopes: write_repository, read_api. {USER_HELP}"
            )
        );
    }
}

#[tokio::test]
async fn expired_tokens() {
    for kind in KINDS {
        let gl = gitlab(kind).await;
        // GitLab answers 401 "Token is expired" and no longer says when
        let token = gl.pat("personal", "alice", &["api"], -2);
        let e = gl.validate(&token, TokenPurpose::User).await.unwrap_err();
        assert!(matches!(e, PatError::Expired { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!(
                "This token expired on an earlier date (GitLab does not say which). {USER_HELP}"
            )
        );
        // GitLab still accepts it, but by our clock its date has come
        let token = gl.pat("personal", "alice", &["api"], 10);
        let later = Utc::now() + Duration::days(30);
        let date = (Utc::now() + Duration::days(10)).date_naive();
        let e = gl
            .validate_at(&token, TokenPurpose::User, later)
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "This token expired on {}. {USER_HELP}",
                date.format("%Y-%m-%d")
            )
        );
    }
}

#[tokio::test]
async fn revoked_and_unknown_tokens() {
    for kind in KINDS {
        let gl = gitlab(kind).await;
        let token = gl.pat("personal", "alice", &["api"], 10);
        assert!(gl.mock.provider.revoke_pat(&token));
        let e = gl.validate(&token, TokenPurpose::User).await.unwrap_err();
        assert!(matches!(e, PatError::Revoked { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!("This token was revoked at GitLab. {USER_HELP}")
        );
        let e = gl
            .validate("glpat-notARealToken0123", TokenPurpose::User)
            .await
            .unwrap_err();
        assert!(matches!(e, PatError::Invalid { .. }), "{e:?}");
        assert!(
            e.to_string()
                .starts_with("GitLab does not accept this token")
        );
    }
}

#[tokio::test]
async fn project_and_group_tokens_are_the_wrong_kind() {
    for kind in KINDS {
        let gl = gitlab(kind).await;
        for token_kind in ["project", "group"] {
            let token = gl.pat(token_kind, "alice", &["api", "write_repository"], 10);
            let e = gl.validate(&token, TokenPurpose::User).await.unwrap_err();
            let PatError::WrongKind { reason } = &e else {
                panic!("{token_kind}: {e:?}");
            };
            assert!(
                reason.starts_with(
                    "This is a project or group access token: it belongs to a bot user of GitLab"
                ),
                "{reason}"
            );
            assert!(reason.contains(&format!("({token_kind}_")), "{reason}");
            assert!(reason.contains("not to you"), "{reason}");
            assert!(reason.ends_with(USER_HELP), "{reason}");
        }
        // other GitLab token types are named by their prefix, without asking GitLab
        let before = gl.mock.provider.stats().user_requests;
        let e = gl
            .validate("gldt-0123456789abcdefghij", TokenPurpose::User)
            .await
            .unwrap_err();
        assert!(e.to_string().starts_with("This is a deploy token"), "{e}");
        assert_eq!(gl.mock.provider.stats().user_requests, before);
    }
}

fn assert_unavailable(e: &PatError, detail: &str) {
    assert!(
        matches!(e, PatError::Unavailable { .. }),
        "temporary failures are never a verdict: {e:?}"
    );
    let text = e.to_string();
    assert!(
        text.starts_with("GitLab could not validate the token right now"),
        "{text}"
    );
    assert!(text.contains(detail), "{text}");
}

#[tokio::test]
async fn outages_are_unavailable_never_invalid() {
    for kind in KINDS {
        let gl = gitlab(kind).await;
        let token = gl.pat("personal", "alice", &["api"], 10);
        let switches = gl.mock.provider.switches();
        for (status, detail) in [
            (500, "HTTP 500"),
            (502, "HTTP 502"),
            (503, "HTTP 503"),
            (429, "rate limited"),
        ] {
            switches.set_user_api_status(Some(status));
            let e = gl.validate(&token, TokenPurpose::User).await.unwrap_err();
            assert_unavailable(&e, detail);
        }
        switches.set_user_api_status(None);
        // after the 429 the client honours the rate limit: the host is
        // paused, and a request fails fast instead of reaching GitLab
        let e = gl.validate(&token, TokenPurpose::User).await.unwrap_err();
        assert_unavailable(&e, "rate limited; retry in");
        // a client without that pause sees GitLab is fine again
        let mut fresh = gl;
        fresh.http = providers::http_client(
            std::time::Duration::from_secs(2),
            std::time::Duration::from_secs(5),
        )
        .unwrap();
        assert!(fresh.validate(&token, TokenPurpose::User).await.is_ok());
    }
}

#[tokio::test]
async fn a_hanging_gitlab_is_unavailable() {
    for kind in KINDS {
        let mut gl = gitlab(kind).await;
        gl.http = providers::http_client(
            std::time::Duration::from_secs(1),
            std::time::Duration::from_millis(500),
        )
        .unwrap();
        let token = gl.pat("personal", "alice", &["api"], 10);
        gl.mock.provider.switches().set_api_hang(true);
        let started = std::time::Instant::now();
        let e = gl.validate(&token, TokenPurpose::User).await.unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(3));
        assert_unavailable(&e, "timed out");
        gl.mock.provider.switches().set_api_hang(false);
    }
}

#[tokio::test]
async fn a_gitlab_that_is_down_is_unavailable() {
    for kind in KINDS {
        let gl = gitlab(kind).await;
        let token = gl.pat("personal", "alice", &["api"], 10);
        let endpoints = gl.endpoints.clone();
        gl.mock.shutdown().await;
        let input = PatInput::new(&token, None, None);
        let e = providers::provider(kind)
            .validate_pat(&gl.http, &endpoints, &input, TokenPurpose::User, Utc::now())
            .await
            .unwrap_err();
        assert_unavailable(&e, "connection failed");
    }
}

// ---------------------------------------------------------------------------
// Configuration.

fn config(app: &str) -> String {
    format!(
        r#"
public_url = "https://broker.example.com"
[store]
backend = "embedded"
path = "/tmp/x.redb"
[encryption]
keys = [{{ id = "k1", key = "{KEY}" }}]
[oidc]
issuer = "https://idp.example.com"
client_id = "gitbroker"
client_secret = "s3cret"
[[accounts]]
id = "acme"
groups = ["acme-devs"]
[[oauth_apps]]
id = "gl"
client_id = "cid"
client_secret = "csecret"
{app}
"#
    )
}

#[test]
fn configuration_of_gitlab_apps() {
    // the documents' spelling becomes GitLab's
    let s = Settings::from_toml_str(&config(
        "provider = \"gitlab\"\nscopes = [\"write_repository\", \"api_read\"]",
    ))
    .unwrap();
    assert_eq!(s.oauth_apps[0].scopes, vec!["write_repository", "read_api"]);
    assert_eq!(s.oauth_apps[0].provider, ProviderKind::Gitlab);

    // self-managed needs its URL
    let e = Settings::from_toml_str(&config(
        "provider = \"gitlab_self_managed\"\nscopes = [\"api\"]",
    ))
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("oauth_apps[0].base_url:"), "{e}");
    assert!(e.contains("gitlab_self_managed"), "{e}");
    let s = Settings::from_toml_str(&config(
        "provider = \"gitlab_self_managed\"\nbase_url = \"https://git.example.com\"\nscopes = [\"api\"]",
    ))
    .unwrap();
    assert_eq!(s.oauth_apps[0].provider, ProviderKind::GitlabSelfManaged);

    // the user-token scopes are required, through the implication table
    let e = Settings::from_toml_str(&config(
        "provider = \"gitlab\"\nscopes = [\"read_repository\", \"read_api\"]",
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("oauth_apps[0].scopes:") && e.contains("missing: write_repository"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------
// The OAuth flow through the broker.

const ALICE: &str = "u-1001";

#[tokio::test]
async fn oauth_flow_end_to_end() {
    let h = Harness::start(Backend::Embedded).await;
    let alice = h.signed_in("alice").await;
    let provider_page = alice.start_authorize("gitlab-rt").await;
    assert_eq!(provider_page.status, 200, "{}", provider_page.body);
    assert!(provider_page.body.contains("Mock GitLab"));
    assert!(provider_page.url.contains("/gitlab/oauth/authorize"));
    // space-separated scopes and PKCE S256 on the authorize request
    assert_eq!(
        query_param(&provider_page.url, "scope").as_deref(),
        Some("write_repository read_api")
    );
    assert_eq!(
        query_param(&provider_page.url, "code_challenge_method").as_deref(),
        Some("S256")
    );
    let back = alice.provider_decision(&provider_page, "approve").await;
    let page = alice.follow(back).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body
            .contains("Access to GitLab authorized as alice for runtime gitlab-rt"),
        "{}",
        page.body
    );

    let r = h.runtime_get("gitlab-rt", "gitlab-rt", ALICE).await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    let token = body["token"].as_str().unwrap();
    assert!(!token.is_empty() && !token.starts_with("gho_"), "{body}");
    assert_eq!(body["username"], "oauth2");
    assert_eq!(body["provider"], "gitlab");
    assert_eq!(
        body["scopes"],
        serde_json::json!(["write_repository", "read_api"])
    );
    assert!(body.get("refresh_token").is_none());
    let expires_at: chrono::DateTime<Utc> =
        serde_json::from_value(body["expires_at"].clone()).unwrap();
    let ahead = expires_at - Utc::now();
    assert!(
        ahead > Duration::minutes(118) && ahead <= Duration::hours(2),
        "expires in {ahead}"
    );

    // the served token works at GitLab's API
    let user: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/gitlab/api/v4/user", h.mock.base_url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(user["username"], "alice");
    assert_eq!(user["bot"], false);

    // the GitHub runtimes are untouched
    let r = h.runtime_get("acme-prod", "acme-prod", ALICE).await;
    assert_eq!(r.status(), 404);
    let stats = h.mock.provider.stats();
    assert_eq!(stats.token_requests, 1);
}

#[tokio::test]
async fn oauth_denied_at_gitlab() {
    let h = Harness::start(Backend::Embedded).await;
    let alice = h.signed_in("alice").await;
    let provider_page = alice.start_authorize("gitlab-rt").await;
    let back = alice.provider_decision(&provider_page, "deny").await;
    assert_eq!(
        query_param(back.location.as_deref().unwrap(), "error").as_deref(),
        Some("access_denied")
    );
    let page = alice.follow(back).await;
    assert!(
        page.body.contains(
            "Authorization was denied at GitLab: The resource owner or authorization server denied the request."
        ),
        "{}",
        page.body
    );
    let r = h.runtime_get("gitlab-rt", "gitlab-rt", ALICE).await;
    assert_eq!(r.status(), 404);
    assert_eq!(h.mock.provider.stats().token_requests, 0);
}

#[tokio::test]
async fn oauth_fewer_scopes_than_asked() {
    let h = Harness::start(Backend::Embedded).await;
    h.mock
        .provider
        .switches()
        .set_grant_scopes(Some(&["read_api", "read_repository"]));
    let alice = h.signed_in("alice").await;
    let page = alice.authorize("gitlab-rt").await;
    assert!(
        page.body
            .contains("The token GitLab granted lacks required scopes: write_repository."),
        "{}",
        page.body
    );
    let r = h.runtime_get("gitlab-rt", "gitlab-rt", ALICE).await;
    assert_eq!(r.status(), 404);
    // the refused token is revoked at GitLab (RFC 7009), in the background
    for _ in 0..50 {
        if h.mock.provider.stats().revocations == 1 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the refused token was not revoked");
}

// ---------------------------------------------------------------------------
// identify and revoke, for OAuth tokens.

/// An OAuth token for alice with `scope`, through the mock's own flow.
async fn oauth_token(gl: &Gl, scope: &str) -> String {
    use gitbroker::mock::MockOAuthApp;
    gl.mock.provider.add_oauth_app(MockOAuthApp {
        name: "direct".into(),
        client_id: "direct-client".into(),
        client_secret: "direct-secret".into(),
        callback_url: "http://rp.test/cb".into(),
    });
    gl.mock.provider.switches().set_auto_approve(Some("alice"));
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirects
        .get(gl.endpoints.authorize.clone())
        .query(&[
            ("client_id", "direct-client"),
            ("redirect_uri", "http://rp.test/cb"),
            ("response_type", "code"),
            ("scope", scope),
        ])
        .send()
        .await
        .unwrap();
    gl.mock.provider.switches().set_auto_approve(None);
    let code = query_param(r.headers()["location"].to_str().unwrap(), "code").unwrap();
    let body: serde_json::Value = no_redirects
        .post(gl.endpoints.token.clone())
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", "direct-client"),
            ("client_secret", "direct-secret"),
            ("code", code.as_str()),
            ("redirect_uri", "http://rp.test/cb"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn identify_and_revoke_oauth_tokens() {
    for kind in KINDS {
        let gl = gitlab(kind).await;
        let p = providers::provider(kind);
        let token = SecretString::from(oauth_token(&gl, "read_api write_repository").await);
        let identity = p.identify(&gl.http, &gl.endpoints, &token).await.unwrap();
        assert_eq!(identity.login, "alice");
        // from /oauth/token/info
        assert_eq!(
            identity.scopes,
            Some(vec!["read_api".to_owned(), "write_repository".to_owned()])
        );
        // an OAuth token pasted as a personal access token is named for what it is
        let input = PatInput::new(secrecy::ExposeSecret::expose_secret(&token), None, None);
        let e = p
            .validate_pat(
                &gl.http,
                &gl.endpoints,
                &input,
                TokenPurpose::User,
                Utc::now(),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, PatError::WrongKind { .. }), "{e:?}");

        // RFC 7009 revocation, then the token is dead; revoking again is fine
        let secret = SecretString::from("direct-secret".to_owned());
        p.revoke(&gl.http, &gl.endpoints, "direct-client", &secret, &token)
            .await
            .unwrap();
        assert_eq!(gl.mock.provider.stats().revocations, 1);
        let e = p
            .identify(&gl.http, &gl.endpoints, &token)
            .await
            .unwrap_err();
        assert!(matches!(e, providers::ProviderError::InvalidToken), "{e:?}");
        p.revoke(&gl.http, &gl.endpoints, "direct-client", &secret, &token)
            .await
            .unwrap();
        // a wrong client secret is not "already revoked"
        let wrong = SecretString::from("wrong".to_owned());
        assert!(
            p.revoke(&gl.http, &gl.endpoints, "direct-client", &wrong, &token)
                .await
                .is_err()
        );
        // a GitLab that is failing is temporary
        gl.mock.provider.switches().set_api_hang(true);
        let slow = providers::http_client(
            std::time::Duration::from_secs(1),
            std::time::Duration::from_millis(300),
        )
        .unwrap();
        let fresh = SecretString::from(oauth_token(&gl, "api").await);
        let e = p.identify(&slow, &gl.endpoints, &fresh).await.unwrap_err();
        assert!(
            matches!(e, providers::ProviderError::Unavailable(_)),
            "{e:?}"
        );
        gl.mock.provider.switches().set_api_hang(false);
    }
}

#[tokio::test]
async fn oauth_token_endpoint_errors_through_the_broker() {
    let h = Harness::start(Backend::Embedded).await;
    let alice = h.signed_in("alice").await;
    // an RFC 6749 error (HTTP 400 JSON) is a refusal: start again
    h.mock
        .provider
        .switches()
        .set_token_error(Some("invalid_grant"));
    let page = alice.authorize("gitlab-rt").await;
    assert!(
        page.body
            .contains("GitLab refused the authorization (invalid_grant)."),
        "{}",
        page.body
    );
    h.mock.provider.switches().set_token_error(None);
    // a 5xx is an outage, not a verdict
    h.mock.provider.switches().set_token_status(Some(503));
    let page = alice.authorize("gitlab-rt").await;
    assert!(
        page.body
            .contains("GitLab could not be reached or failed (HTTP 503)."),
        "{}",
        page.body
    );
    h.mock.provider.switches().set_token_status(None);
    let r = h.runtime_get("gitlab-rt", "gitlab-rt", ALICE).await;
    assert_eq!(r.status(), 404);
    // and then it works
    let page = alice.authorize("gitlab-rt").await;
    assert!(page.body.contains("Access to GitLab authorized as alice"));
    assert_eq!(h.mock.provider.stats().token_requests, 3);
}

// --- fine-grained personal access tokens (`granular_scopes`)

const FINE_USER_HELP: &str = "For a fine-grained token: in GitLab under User settings > Access tokens > Generate token > Fine-grained token, give it Group and project access to the projects you work on with the permissions `read_repository` and `write_repository`, and the User permission `read_user`; or create a legacy token with the scopes `read_api`, `read_repository` and `write_repository`.";
const FINE_RUNTIME_HELP: &str = "For a fine-grained token: in GitLab under User settings > Access tokens > Generate token > Fine-grained token, give it Group and project access to the runtime's projects with the permissions `read_repository`, `create_webhook`, `read_webhook` and `delete_webhook`, and the User permission `read_user`; or create a legacy token with the scopes `api` and `read_repository`.";

const FINE_RUNTIME: &[&str] = &[
    "read_repository:selected_memberships",
    "create_webhook:selected_memberships",
    "read_webhook:selected_memberships",
    "delete_webhook:selected_memberships",
    "read_user:user",
];

#[tokio::test]
async fn fine_grained_tokens_are_accepted_for_both_purposes() {
    for kind in KINDS {
        let gl = gitlab(kind).await;
        let user = gl.pat(
            "fine_grained",
            "alice",
            &["write_repository:all_memberships", "read_user:user"],
            30,
        );
        let report = gl.validate(&user, TokenPurpose::User).await.unwrap();
        assert_eq!(report.login, "alice");
        assert_eq!(report.git_username, "oauth2");
        assert_eq!(report.kind, "fine-grained personal access token");
        assert_eq!(
            report.scopes,
            vec!["write_repository:all_memberships", "read_user:user"]
        );
        let runtime = gl.pat("fine_grained", "bob", FINE_RUNTIME, 30);
        let report = gl.validate(&runtime, TokenPurpose::Runtime).await.unwrap();
        assert_eq!(report.login, "bob");
        assert_eq!(report.kind, "fine-grained personal access token");
    }
}

#[tokio::test]
async fn fine_grained_tokens_are_refused_naming_each_missing_permission() {
    let gl = gitlab(ProviderKind::Gitlab).await;
    // read only, and read_user under the wrong boundary
    let token = gl.pat(
        "fine_grained",
        "alice",
        &[
            "read_repository:personal_projects",
            "read_user:all_memberships",
        ],
        30,
    );
    let e = gl.validate(&token, TokenPurpose::User).await.unwrap_err();
    assert!(matches!(
        e,
        PatError::MissingScopes {
            what: "the required permissions",
            ..
        }
    ));
    assert_eq!(
        e.to_string(),
        format!(
            "This token lacks the required permissions: write_repository (group and project access), read_user (user access). {FINE_USER_HELP}"
        )
    );
    // a user token is not a runtime token
    let user = gl.pat(
        "fine_grained",
        "alice",
        &["write_repository:all_memberships", "read_user:user"],
        30,
    );
    let e = gl.validate(&user, TokenPurpose::Runtime).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "This token lacks the required permissions: create_webhook (group and project access), read_webhook (group and project access), delete_webhook (group and project access). {FINE_RUNTIME_HELP}"
        )
    );
    // nothing granted at all
    let empty = gl.pat("fine_grained", "alice", &[], 30);
    let e = gl.validate(&empty, TokenPurpose::User).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "This token lacks the required permissions: read_repository (group and project access), write_repository (group and project access), read_user (user access). {FINE_USER_HELP}"
        )
    );
    // expired and revoked fine-grained tokens are told as such
    let expired = gl.pat("fine_grained", "alice", FINE_RUNTIME, 30);
    assert!(gl.mock.provider.expire_pat(&expired));
    assert!(matches!(
        gl.validate(&expired, TokenPurpose::Runtime)
            .await
            .unwrap_err(),
        PatError::Expired { .. }
    ));
    let revoked = gl.pat("fine_grained", "alice", FINE_RUNTIME, 30);
    assert!(gl.mock.provider.revoke_pat(&revoked));
    assert!(matches!(
        gl.validate(&revoked, TokenPurpose::Runtime)
            .await
            .unwrap_err(),
        PatError::Revoked { .. }
    ));
}

#[tokio::test]
async fn a_failing_gitlab_is_no_verdict_on_a_fine_grained_token() {
    let gl = gitlab(ProviderKind::GitlabSelfManaged).await;
    let token = gl.pat("fine_grained", "alice", FINE_RUNTIME, 30);
    gl.mock.provider.switches().set_user_api_status(Some(503));
    let e = gl
        .validate(&token, TokenPurpose::Runtime)
        .await
        .unwrap_err();
    assert!(matches!(e, PatError::Unavailable { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("Nothing was changed; try again in a moment."),
        "{e}"
    );
    gl.mock.provider.switches().set_user_api_status(None);
    assert!(gl.validate(&token, TokenPurpose::Runtime).await.is_ok());
}

/// Through the broker: a fine-grained runtime token registered with the
/// admin API, a refused one answered 422 with the message, and a
/// fine-grained user token pasted for a GitLab runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fine_grained_tokens_through_the_broker() {
    let h = Harness::start(Backend::Embedded).await;
    let gl_pat = |owner: &str, scopes: &[&str]| {
        h.mock.provider.create_pat(PatSpec {
            flavour: Flavour::Gitlab,
            owner: owner.into(),
            kind: "fine_grained".into(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            expires_at: Some(Utc::now() + Duration::days(60)),
            repositories: Vec::new(),
            email: None,
        })
    };
    let register = |id: &str, token: String| {
        h.admin_request(reqwest::Method::POST, "/runtimes")
            .json(&serde_json::json!({
                "id": id,
                "account": "acme",
                "git_host": "gitlab.com",
                "provider": "gitlab",
                "base_url": format!("{}/gitlab", h.mock.base_url.trim_end_matches('/')),
                "git_token": { "token": token },
            }))
            .send()
    };
    let r = register("fg-ok", gl_pat("bob", FINE_RUNTIME))
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        v["git_token"]["kind"], "fine-grained personal access token",
        "{v}"
    );
    let r = register("fg-no", gl_pat("bob", &["read_repository:all_memberships"]))
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(
        v["detail"].as_str().unwrap().contains("This token lacks the required permissions: create_webhook (group and project access), read_webhook (group and project access), delete_webhook (group and project access), read_user (user access)."),
        "{v}"
    );
    // a pasted Git user token
    let user = gl_pat(
        "alice",
        &["write_repository:all_memberships", "read_user:user"],
    );
    let assigned = h.assign_pat_as("u-fg", "gitlab-rt", &user).await;
    let _ = assigned;
    let r = h.runtime_get("gitlab-rt", "gitlab-rt", "u-fg").await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["token"], user);
}
