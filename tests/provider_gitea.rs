//! The Gitea (and Forgejo) provider against the mock's `gitea` flavour over
//! real HTTP: access tokens validated for their scopes by asking Gitea (the
//! scope check it makes before anything else), the configuration's view of
//! Gitea apps, the OAuth flow with PKCE end to end through the broker,
//! refresh with rotation, what revocation can and cannot do, and provider
//! failures: temporary ones lose nothing, permanent ones get their status.
#![allow(
    clippy::disallowed_methods,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code
)]

mod support;

use chrono::Utc;
use gitbroker::clock::ManualClock;
use gitbroker::config::Settings;
use gitbroker::mock::{Flavour, MockConfig, MockOAuthApp, MockProvider, PatSpec, RunningMock};
use gitbroker::providers::{
    self, Endpoints, GitAuth, PatError, PatInput, ProviderError, ProviderKind, Revocation,
    TokenPurpose, TokenReport,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use std::sync::Arc;
use support::*;
use url::Url;

const ALICE: &str = "u-1001";

const USER_HELP: &str = "Create one in Gitea (or Forgejo) under Settings > Applications > Manage Access Tokens: enter a token name, choose the repository access \"All (public, private, and limited)\", under Select permissions set `repository` to Read and Write and `user` to Read (the scopes `write:repository` and `read:user`), generate the token, and paste it here.";

struct Gt {
    mock: RunningMock,
    endpoints: Endpoints,
    http: providers::ProviderClient,
}

fn http(connect_ms: u64, total_ms: u64) -> providers::ProviderClient {
    providers::http_client(
        std::time::Duration::from_millis(connect_ms),
        std::time::Duration::from_millis(total_ms),
    )
    .unwrap()
}

async fn gitea() -> Gt {
    let mock = MockProvider::start(MockConfig::demo(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let base = Url::parse(&format!("{}/gitea", mock.base_url)).unwrap();
    let endpoints = providers::provider(ProviderKind::Gitea)
        .endpoints(Some(&base), None)
        .unwrap();
    Gt {
        mock,
        endpoints,
        http: http(2000, 5000),
    }
}

fn spec(owner: &str, kind: &str, scopes: &[&str]) -> PatSpec {
    PatSpec {
        flavour: Flavour::Gitea,
        owner: owner.into(),
        kind: kind.into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        expires_at: None,
        repositories: Vec::new(),
        email: None,
    }
}

impl Gt {
    fn pat(&self, owner: &str, scopes: &[&str]) -> String {
        self.mock
            .provider
            .create_pat(spec(owner, "personal", scopes))
    }

    async fn validate(&self, token: &str, purpose: TokenPurpose) -> Result<TokenReport, PatError> {
        let input = PatInput::new(token, None, None);
        providers::provider(ProviderKind::Gitea)
            .validate_pat(&self.http, &self.endpoints, &input, purpose, Utc::now())
            .await
    }
}

// ---------------------------------------------------------------------------
// Access tokens.

#[tokio::test]
async fn access_tokens_with_the_scopes_are_accepted_for_both_purposes() {
    let gt = gitea().await;
    for purpose in [TokenPurpose::User, TokenPurpose::Runtime] {
        let token = gt.pat("alice", &["write:repository", "read:user"]);
        let report = gt.validate(&token, purpose).await.unwrap();
        assert_eq!(report.login, "alice");
        assert_eq!(report.git_username, "alice");
        assert_eq!(report.git_auth, GitAuth::basic("alice"));
        assert_eq!(report.kind, "access token");
        // what Gitea's answers proved
        assert_eq!(report.scopes, vec!["read:user", "write:repository"]);
        assert_eq!(report.expires_at, None, "Gitea access tokens do not expire");
    }
    // broader scopes cover them: `all`, and write:user for read:user
    for scopes in [&["all"][..], &["write:repository", "write:user"]] {
        let token = gt.pat("bob", scopes);
        let report = gt.validate(&token, TokenPurpose::User).await.unwrap();
        assert_eq!(report.login, "bob", "{scopes:?}");
    }
    // two API calls per validation, and each carried the token
    let token = gt.pat("carol", &["all"]);
    gt.validate(&token, TokenPurpose::User).await.unwrap();
    assert_eq!(gt.mock.provider.api_calls_for(&token), 2);
}

#[tokio::test]
async fn missing_scopes_are_named_with_the_how_to() {
    let gt = gitea().await;
    for (scopes, missing) in [
        (&["read:repository", "read:user"][..], "write:repository"),
        (&["write:repository"], "read:user"),
        (&["read:repository"], "write:repository, read:user"),
        (
            &["public-only", "read:issue"],
            "write:repository, read:user",
        ),
    ] {
        let token = gt.pat("alice", scopes);
        let e = gt.validate(&token, TokenPurpose::User).await.unwrap_err();
        assert!(matches!(e, PatError::MissingScopes { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!("This token lacks the required scopes: {missing}. {USER_HELP}"),
            "{scopes:?}"
        );
        assert!(
            !e.to_string().contains(&token),
            "the refusal quotes no token"
        );
    }
}

#[tokio::test]
async fn unknown_revoked_and_expired_tokens_are_refused() {
    let gt = gitea().await;
    let revoked = gt.pat("alice", &["all"]);
    gt.mock.provider.revoke_pat(&revoked);
    let expired = gt.pat("alice", &["all"]);
    gt.mock.provider.expire_pat(&expired);
    for token in [
        "3f786850e387550fdab836ed7e6dc881de23001b",
        &revoked,
        &expired,
    ] {
        let e = gt.validate(token, TokenPurpose::User).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "Gitea does not accept this token: it is revoked, expired or mistyped. {USER_HELP}"
            )
        );
    }
}

#[tokio::test]
async fn an_oauth_token_pasted_is_the_wrong_kind_and_costs_no_request() {
    let gt = gitea().await;
    let token = gt
        .mock
        .provider
        .create_pat(spec("alice", "oauth", &["all"]));
    let e = gt.validate(&token, TokenPurpose::User).await.unwrap_err();
    assert!(matches!(e, PatError::WrongKind { .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with("This is an OAuth access token of an application, not an access token"),
        "{e}"
    );
    assert_eq!(gt.mock.provider.api_calls_for(&token), 0);
}

/// A Gitea where the probed repository exists (or that stopped checking):
/// the write went through, which tells nothing about the scope.
#[tokio::test]
async fn a_probe_that_succeeds_is_never_counted_as_granted() {
    let gt = gitea().await;
    gt.mock.provider.switches().set_probes_succeed(true);
    let token = gt.pat("alice", &["write:repository", "read:user"]);
    let e = gt.validate(&token, TokenPurpose::User).await.unwrap_err();
    assert!(matches!(e, PatError::ProbeAccepted { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.starts_with(
            "Gitea accepted a request gitbroker sends only to check a permission (PATCH /api/v1/repos/alice/gitbroker-scope-check-"
        ),
        "{text}"
    );
    // the scope check still comes first: without the scope it is a refusal
    let weak = gt.pat("alice", &["read:repository", "read:user"]);
    let e = gt.validate(&weak, TokenPurpose::User).await.unwrap_err();
    assert!(matches!(e, PatError::MissingScopes { .. }), "{e:?}");
}

fn assert_unavailable(e: &PatError, detail: &str) {
    assert!(
        matches!(e, PatError::Unavailable { .. }),
        "temporary failures are never a verdict: {e:?}"
    );
    let text = e.to_string();
    assert!(
        text.starts_with("Gitea could not validate the token right now"),
        "{text}"
    );
    assert!(text.contains(detail), "{text}");
}

#[tokio::test]
async fn outages_are_unavailable_never_invalid() {
    let gt = gitea().await;
    let token = gt.pat("alice", &["all"]);
    for (status, detail) in [(500, "HTTP 500"), (502, "HTTP 502"), (503, "HTTP 503")] {
        gt.mock
            .provider
            .switches()
            .set_user_api_status(Some(status));
        let e = gt.validate(&token, TokenPurpose::User).await.unwrap_err();
        assert_unavailable(&e, detail);
    }
    gt.mock.provider.switches().set_user_api_status(Some(429));
    let e = gt.validate(&token, TokenPurpose::User).await.unwrap_err();
    assert_unavailable(&e, "rate limited");
    gt.mock.provider.switches().set_user_api_status(None);
    // with a client that has not seen the 429, Gitea is fine again
    let fresh = Gt {
        http: http(2000, 5000),
        ..gt
    };
    assert!(fresh.validate(&token, TokenPurpose::User).await.is_ok());

    // hanging: a timeout, well within the client's bound
    let slow = Gt {
        http: http(1000, 400),
        ..fresh
    };
    slow.mock.provider.switches().set_api_hang(true);
    let started = std::time::Instant::now();
    let e = slow.validate(&token, TokenPurpose::User).await.unwrap_err();
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    assert_unavailable(&e, "timed out");
    slow.mock.provider.switches().set_api_hang(false);

    // down
    let endpoints = slow.endpoints.clone();
    slow.mock.shutdown().await;
    let input = PatInput::new(&token, None, None);
    let e = providers::provider(ProviderKind::Gitea)
        .validate_pat(
            &slow.http,
            &endpoints,
            &input,
            TokenPurpose::User,
            Utc::now(),
        )
        .await
        .unwrap_err();
    assert_unavailable(&e, "connection failed");
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
id = "gt"
client_id = "cid"
client_secret = "csecret"
{app}
"#
    )
}

#[test]
fn configuration_of_gitea_apps() {
    // self-hosted only: the URL is required, and the refusal names the key
    let e = Settings::from_toml_str(&config(
        "provider = \"gitea\"\nscopes = [\"write:repository\", \"read:user\"]",
    ))
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("oauth_apps[0].base_url:"), "{e}");
    assert!(e.contains("base_url is required for gitea"), "{e}");
    let s = Settings::from_toml_str(&config(
        "provider = \"gitea\"\nbase_url = \"https://gitea.example.com\"\nscopes = [\"write:repository\", \"read:user\"]",
    ))
    .unwrap();
    assert_eq!(s.oauth_apps[0].provider, ProviderKind::Gitea);
    // Forgejo is the same kind
    let s = Settings::from_toml_str(&config(
        "provider = \"forgejo\"\nbase_url = \"https://codeberg.example.org\"\nscopes = [\"all\"]",
    ))
    .unwrap();
    assert_eq!(s.oauth_apps[0].provider, ProviderKind::Gitea);
    // the user-token scopes are required, through write-implies-read
    let e = Settings::from_toml_str(&config(
        "provider = \"gitea\"\nbase_url = \"https://gitea.example.com\"\nscopes = [\"read:repository\", \"write:user\"]",
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("oauth_apps[0].scopes:") && e.contains("missing: write:repository"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------
// The OAuth flow through the broker.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_flow_with_pkce_end_to_end() {
    let h = Harness::start(Backend::Embedded).await;
    let alice = h.signed_in("alice").await;
    let provider_page = alice.start_authorize("gitea-rt").await;
    assert_eq!(provider_page.status, 200, "{}", provider_page.body);
    assert!(provider_page.body.contains("Mock Gitea"));
    assert!(provider_page.url.contains("/gitea/login/oauth/authorize"));
    assert_eq!(
        query_param(&provider_page.url, "scope").as_deref(),
        Some("write:repository read:user")
    );
    assert_eq!(
        query_param(&provider_page.url, "code_challenge_method").as_deref(),
        Some("S256")
    );
    let back = alice.provider_decision(&provider_page, "approve").await;
    let page = alice.follow(back).await;
    assert!(
        page.body
            .contains("Access to Gitea authorized as alice for runtime gitea-rt"),
        "{}",
        page.body
    );

    let r = h.runtime_get("gitea-rt", "gitea-rt", ALICE).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let token = body["token"].as_str().unwrap();
    assert_eq!(body["provider"], "gitea");
    assert_eq!(body["username"], "alice");
    assert_eq!(
        body["auth"],
        json!({ "scheme": "basic", "username": "alice" })
    );
    // no `scope` in Gitea's answer: the requested ones
    assert_eq!(body["scopes"], json!(["write:repository", "read:user"]));
    assert!(body.get("refresh_token").is_none());
    let expires_at: chrono::DateTime<Utc> =
        serde_json::from_value(body["expires_at"].clone()).unwrap();
    let ahead = expires_at - Utc::now();
    assert!(
        ahead > chrono::Duration::minutes(58) && ahead <= chrono::Duration::hours(1),
        "expires in {ahead}"
    );
    // the served token works at Gitea's API
    let user: Value = reqwest::Client::new()
        .get(format!("{}/gitea/api/v1/user", h.mock.base_url))
        .header("authorization", format!("token {token}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(user["login"], "alice");
    assert_eq!(h.mock.provider.stats().token_requests, 1);
}

/// The mock checks PKCE as Gitea does: the verifier must hash to the
/// challenge, and a verifier without a challenge (a downgrade) is refused.
#[tokio::test]
async fn the_mock_verifies_pkce_s256() {
    let gt = gitea().await;
    gt.mock.provider.add_oauth_app(MockOAuthApp {
        name: "direct".into(),
        client_id: "direct-client".into(),
        client_secret: "direct-secret".into(),
        callback_url: "http://rp.test/cb".into(),
    });
    gt.mock.provider.switches().set_auto_approve(Some("alice"));
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    let code = |pkce: bool| {
        let c = no_redirects.clone();
        let url = gt.endpoints.authorize.clone();
        async move {
            let mut q = vec![
                ("client_id", "direct-client"),
                ("redirect_uri", "http://rp.test/cb"),
                ("response_type", "code"),
                ("scope", "write:repository read:user"),
            ];
            if pkce {
                q.extend([
                    ("code_challenge", challenge),
                    ("code_challenge_method", "S256"),
                ]);
            }
            let r = c.get(url).query(&q).send().await.unwrap();
            query_param(r.headers()["location"].to_str().unwrap(), "code").unwrap()
        }
    };
    let exchange = |code: String, verifier: Option<&'static str>| {
        let c = no_redirects.clone();
        let url = gt.endpoints.token.clone();
        async move {
            let mut form = vec![
                ("grant_type", "authorization_code".to_owned()),
                ("client_id", "direct-client".to_owned()),
                ("client_secret", "direct-secret".to_owned()),
                ("code", code),
                ("redirect_uri", "http://rp.test/cb".to_owned()),
            ];
            if let Some(v) = verifier {
                form.push(("code_verifier", v.to_owned()));
            }
            let r = c.post(url).form(&form).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let refused = json!({ "error": "unauthorized_client", "error_description": "failed PKCE code challenge" });
    let wrong = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXK";
    assert_eq!(
        exchange(code(true).await, Some(wrong)).await,
        (400, refused.clone())
    );
    assert_eq!(
        exchange(code(true).await, None).await,
        (400, refused.clone())
    );
    assert_eq!(
        exchange(code(false).await, Some(verifier)).await,
        (400, refused)
    );
    let (status, ok) = exchange(code(true).await, Some(verifier)).await;
    assert_eq!(status, 200, "{ok}");
    assert_eq!(ok["token_type"], "bearer");
    assert_eq!(ok["expires_in"], 3600);
    assert!(ok.get("scope").is_none(), "Gitea names no scope: {ok}");
    assert!(ok["refresh_token"].is_string());
}

async fn fetch(url: &str, runtime: &str, user: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!(
            "{url}/api/v1/runtimes/{runtime}/users/{user}/token"
        ))
        .bearer_auth(credential(runtime))
        .send()
        .await
        .unwrap()
}

async fn served_token(url: &str) -> String {
    let r = fetch(url, "gitea-rt", ALICE).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["token"].as_str().unwrap().to_owned()
}

async fn stored(h: &Harness) -> gitbroker::tokens::Grant {
    h.state
        .lifecycle
        .assigned_grant("gitea-rt", ALICE)
        .await
        .unwrap()
        .expect("a grant is assigned")
        .0
}

/// Uses a refresh token at the mock directly: does it still work?
async fn refresh_works(h: &Harness, refresh: &str) -> bool {
    let r = reqwest::Client::new()
        .post(format!(
            "{}/gitea/login/oauth/access_token",
            h.mock.base_url
        ))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", "gitea-client-id"),
            ("client_secret", APP_SECRET),
        ])
        .send()
        .await
        .unwrap();
    r.status() == 200
}

async fn on_manual_clock(lifecycle: &str) -> (Harness, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let h = Harness::start_with(
        Backend::Embedded,
        Options {
            clock: Some(clock.clone()),
            lifecycle: lifecycle.to_owned(),
            ..Options::default()
        },
    )
    .await;
    (h, clock)
}

/// Near expiry the broker refreshes once; Gitea's new refresh token is
/// stored and the old one is dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_rotates_the_pair() {
    let (h, clock) = on_manual_clock("").await;
    let alice = h.signed_in("alice").await;
    alice.authorize("gitea-rt").await;
    let first = served_token(&h.url).await;
    let before = stored(&h).await;
    let old_refresh = before.refresh_token.unwrap().expose_secret().to_owned();
    clock.advance(chrono::Duration::minutes(59));
    let now = served_token(&h.url).await;
    assert_ne!(now, first);
    let traffic = h.mock.provider.traffic_stats();
    assert_eq!(traffic.refresh_successes_by_flavour.gitea, 1);
    assert_eq!(traffic.refresh_successes, 1);
    let after = stored(&h).await;
    let new_refresh = after.refresh_token.unwrap().expose_secret().to_owned();
    assert_ne!(new_refresh, old_refresh, "rotated");
    assert!(
        !refresh_works(&h, &old_refresh).await,
        "the old one is dead"
    );
    assert!(
        refresh_works(&h, &new_refresh).await,
        "the stored one works"
    );
}

/// Gitea failing during a refresh: nothing lost, 503 with Retry-After once
/// the token has expired, refreshed when Gitea is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitea_down_during_refresh_loses_nothing() {
    let (h, clock) = on_manual_clock("refresh_cooldown_secs = 20\n").await;
    let alice = h.signed_in("alice").await;
    alice.authorize("gitea-rt").await;
    let first = served_token(&h.url).await;
    let kept = stored(&h)
        .await
        .refresh_token
        .unwrap()
        .expose_secret()
        .to_owned();
    h.mock.provider.switches().set_refresh_status(Some(503));
    clock.advance(chrono::Duration::minutes(55));
    assert_eq!(served_token(&h.url).await, first, "still valid: served");
    clock.advance(chrono::Duration::minutes(6));
    let r = fetch(&h.url, "gitea-rt", ALICE).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "urn:gitbroker:problem:provider-unavailable");
    let g = stored(&h).await;
    assert!(g.status.state.servable(), "{:?}", g.status);
    assert_eq!(g.refresh_token.unwrap().expose_secret(), kept);
    h.mock.provider.switches().set_refresh_status(None);
    clock.advance(chrono::Duration::minutes(1));
    assert_ne!(served_token(&h.url).await, first);
}

/// Gitea refusing the refresh for good: the user must authorize again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_refresh_needs_reauthorization() {
    let (h, clock) = on_manual_clock("").await;
    let alice = h.signed_in("alice").await;
    alice.authorize("gitea-rt").await;
    clock.advance(chrono::Duration::minutes(59));
    h.mock
        .provider
        .switches()
        .set_refresh_error(Some("unauthorized_client"));
    let r = fetch(&h.url, "gitea-rt", ALICE).await;
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["type"], "urn:gitbroker:problem:user-token-reauthorize",
        "{v}"
    );
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("unauthorized_client"),
        "{v}"
    );
}

// ---------------------------------------------------------------------------
// Identity and revocation.

#[tokio::test]
async fn identify_reads_the_owner_and_revocation_is_unsupported() {
    let gt = gitea().await;
    let p = providers::provider(ProviderKind::Gitea);
    let token = gt.mock.provider.issue_oauth_token(
        Flavour::Gitea,
        "alice",
        "any-client",
        &["write:repository", "read:user"],
    );
    let secret = SecretString::from(token.clone());
    let identity = p.identify(&gt.http, &gt.endpoints, &secret).await.unwrap();
    assert_eq!(identity.login, "alice");
    assert_eq!(identity.scopes, None, "Gitea reports no OAuth scopes");
    // Gitea has no revocation endpoint: nothing is sent, the token lives
    let client_secret = SecretString::from("s".to_owned());
    let before = gt.mock.provider.traffic_stats().api_requests;
    let r = p
        .revoke(
            &gt.http,
            &gt.endpoints,
            "any-client",
            &client_secret,
            &secret,
        )
        .await
        .unwrap();
    assert_eq!(r, Revocation::Unsupported);
    assert_eq!(gt.mock.provider.traffic_stats().api_requests, before);
    assert!(p.identify(&gt.http, &gt.endpoints, &secret).await.is_ok());
    // the user revokes it in Gitea's settings: then it is invalid
    assert!(gt.mock.provider.revoke(&token));
    let e = p
        .identify(&gt.http, &gt.endpoints, &secret)
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::InvalidToken), "{e:?}");
    // a token without read:user cannot be identified: not "invalid"
    let narrow = gt.mock.provider.issue_oauth_token(
        Flavour::Gitea,
        "alice",
        "any-client",
        &["write:repository"],
    );
    let e = p
        .identify(&gt.http, &gt.endpoints, &SecretString::from(narrow))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ProviderError::Protocol(m) if m.contains("read:user")),
        "{e:?}"
    );
}

/// Deleting an OAuth token says where to revoke it; nothing is queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_oauth_token_says_where_to_revoke_it() {
    let h = Harness::start(Backend::Embedded).await;
    let alice = h.signed_in("alice").await;
    alice.authorize("gitea-rt").await;
    let token = served_token(&h.url).await;
    let csrf = alice.get("/tokens").await.csrf();
    let r = alice
        .client
        .delete(format!("{}/api/v1/me/runtimes/gitea-rt/token", h.url))
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["deleted"], true);
    assert_eq!(v["revocation"], "unsupported", "{v}");
    assert_eq!(fetch(&h.url, "gitea-rt", ALICE).await.status(), 404);
    // still valid at Gitea, which is what the message tells the user
    let r = reqwest::Client::new()
        .get(format!("{}/gitea/api/v1/user", h.mock.base_url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(h.mock.provider.stats().revocations, 0);
}

// ---------------------------------------------------------------------------
// Pasted through the broker's API: the exact refusal, and outages.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pasted_through_the_api() {
    let h = Harness::start(Backend::Embedded).await;
    let alice = h.signed_in("alice").await;
    let csrf = alice.get("/tokens").await.csrf();
    let url = format!("{}/api/v1/me/runtimes/gitea-rt/token", h.url);
    let put = |token: String| {
        let r = alice
            .client
            .put(&url)
            .header("x-csrf-token", &csrf)
            .json(&json!({ "token": token }));
        async move { r.send().await.unwrap() }
    };
    let good = h.mock.provider.create_pat(spec(
        "alice",
        "personal",
        &["write:repository", "read:user"],
    ));
    let r = put(good.clone()).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["provider_login"], "alice");
    assert!(!v.to_string().contains(&good), "the token is not echoed");

    let weak =
        h.mock
            .provider
            .create_pat(spec("alice", "personal", &["read:repository", "read:user"]));
    let r = put(weak).await;
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["detail"],
        format!("This token lacks the required scopes: write:repository. {USER_HELP}")
    );

    h.mock.provider.switches().set_user_api_status(Some(503));
    let another = h
        .mock
        .provider
        .create_pat(spec("alice", "personal", &["all"]));
    let r = put(another).await;
    h.mock.provider.switches().set_user_api_status(None);
    assert_eq!(r.status(), 503);
    // nothing lost: the good token is still the one served
    let r = h.runtime_get("gitea-rt", "gitea-rt", ALICE).await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["token"], good.as_str());
    assert_eq!(v["auth"], json!({ "scheme": "basic", "username": "alice" }));
}

// ---------------------------------------------------------------------------
// The mock flavour over HTTP, as other projects' suites use it.

/// `POST /__mock/pats` and `/__mock/repos` with `"flavour": "gitea"`, then
/// Gitea's scope rules on its API and on Git over smart HTTP.
#[tokio::test]
async fn the_mock_flavour_over_http() {
    let root = tempfile::tempdir().unwrap();
    let mock = MockProvider::start(
        MockConfig {
            git_root: Some(root.path().to_owned()),
            ..MockConfig::demo()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let base = mock.base_url.trim_end_matches('/').to_owned();
    let c = reqwest::Client::new();
    let pat = |scopes: Value| {
        let r = c.post(format!("{base}/__mock/pats")).json(
            &json!({ "flavour": "gitea", "owner": "alice", "kind": "personal", "scopes": scopes }),
        );
        async move {
            let v: Value = r.send().await.unwrap().json().await.unwrap();
            v["token"].as_str().unwrap().to_owned()
        }
    };
    let full = pat(json!(["write:repository", "read:user"])).await;
    assert!(
        full.len() == 40 && full.bytes().all(|b| b.is_ascii_hexdigit()),
        "shaped like Gitea's: {full}"
    );
    let read_only = pat(json!(["read:repository"])).await;
    let user_only = pat(json!(["read:user"])).await;

    // API v1: `token` or Bearer; the scope check names what is missing
    let r = c
        .get(format!("{base}/gitea/api/v1/user"))
        .header("authorization", format!("token {full}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["login"], "alice");
    let r = c
        .get(format!("{base}/gitea/api/v1/user"))
        .bearer_auth(&read_only)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.json::<Value>().await.unwrap()["message"],
        "token does not have at least one of required scope(s): [read:user]"
    );
    let r = c
        .get(format!("{base}/gitea/api/v1/user"))
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Git: a repository made over HTTP, any username with the token
    let r = c
        .post(format!("{base}/__mock/repos"))
        .json(&json!({ "flavour": "gitea", "path": "acme/app" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let repo: Value = r.json().await.unwrap();
    let clone_url = repo["clone_url"].as_str().unwrap().to_owned();
    assert_eq!(clone_url, format!("{base}/gitea/acme/app.git"));
    let refs = |service: &'static str, user: &'static str, token: String| {
        let r = c
            .get(format!("{clone_url}/info/refs?service={service}"))
            .basic_auth(user, Some(token));
        async move {
            let r = r.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(refs("git-upload-pack", "anyone", full.clone()).await.0, 200);
    assert_eq!(refs("git-receive-pack", "alice", full.clone()).await.0, 200);
    assert_eq!(
        refs("git-upload-pack", "alice", read_only.clone()).await.0,
        200
    );
    assert_eq!(
        refs("git-receive-pack", "alice", read_only).await,
        (403, "User permission denied\n".to_owned())
    );
    assert_eq!(
        refs("git-upload-pack", "alice", user_only).await,
        (403, "User permission denied\n".to_owned())
    );
    assert_eq!(
        refs("git-upload-pack", "alice", "0".repeat(40)).await.0,
        401
    );
    let traffic = mock.provider.traffic_stats();
    assert_eq!(traffic.git_requests_by_flavour.gitea, 6);
    assert_eq!(traffic.git_auth_failures_by_flavour.gitea, 1);
}

// ---------------------------------------------------------------------------
// More failures through the broker: the code exchange and the Git Runtime
// token.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_refusals_and_outages_through_the_broker() {
    let h = Harness::start(Backend::Embedded).await;
    let alice = h.signed_in("alice").await;
    // denied on Gitea's consent page
    let provider_page = alice.start_authorize("gitea-rt").await;
    let back = alice.provider_decision(&provider_page, "deny").await;
    let page = alice.follow(back).await;
    assert!(
        page.body
            .contains("Authorization was denied at Gitea: the request is denied"),
        "{}",
        page.body
    );
    // an OAuth error (HTTP 400 JSON) is a refusal: start again
    h.mock
        .provider
        .switches()
        .set_token_error(Some("unauthorized_client"));
    let page = alice.authorize("gitea-rt").await;
    assert!(
        page.body
            .contains("Gitea refused the authorization (unauthorized_client)."),
        "{}",
        page.body
    );
    h.mock.provider.switches().set_token_error(None);
    // a 5xx is an outage, not a verdict
    h.mock.provider.switches().set_token_status(Some(502));
    let page = alice.authorize("gitea-rt").await;
    assert!(
        page.body
            .contains("Gitea could not be reached or failed (HTTP 502)."),
        "{}",
        page.body
    );
    h.mock.provider.switches().set_token_status(None);
    assert_eq!(fetch(&h.url, "gitea-rt", ALICE).await.status(), 404);
    // and then it works
    let page = alice.authorize("gitea-rt").await;
    assert!(page.body.contains("Access to Gitea authorized as alice"));
    assert_eq!(fetch(&h.url, "gitea-rt", ALICE).await.status(), 200);
    assert_eq!(h.mock.provider.stats().token_requests, 3);
}

const RUNTIME_HELP: &str = "Create it, preferably for a service account with admin rights on the repositories, in Gitea (or Forgejo) under Settings > Applications > Manage Access Tokens: enter a token name, choose the repository access \"All (public, private, and limited)\", under Select permissions set `repository` to Read and Write and `user` to Read (the scopes `write:repository` and `read:user`), generate the token, and paste it here.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_git_runtime_token_through_the_admin_api() {
    let h = Harness::start(Backend::Embedded).await;
    let set = |token: String| {
        h.admin_request(reqwest::Method::PUT, "/runtimes/gitea-rt/git-token")
            .json(&json!({ "token": token }))
            .send()
    };
    let good =
        h.mock
            .provider
            .create_pat(spec("dave", "personal", &["write:repository", "read:user"]));
    let r = set(good.clone()).await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let weak = h
        .mock
        .provider
        .create_pat(spec("dave", "personal", &["write:repository"]));
    let r = set(weak).await.unwrap();
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["detail"],
        format!("This token lacks the required scopes: read:user. {RUNTIME_HELP}")
    );
    h.mock.provider.switches().set_api_hang(true);
    let r = set(h
        .mock
        .provider
        .create_pat(spec("dave", "personal", &["all"])))
    .await
    .unwrap();
    h.mock.provider.switches().set_api_hang(false);
    assert_eq!(r.status(), 503);
    // nothing lost: the good token is served, with its owner as username
    let r = reqwest::Client::new()
        .get(format!("{}/api/v1/runtimes/gitea-rt/token", h.url))
        .bearer_auth(credential("gitea-rt"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["token"], good.as_str());
    assert_eq!(v["auth"], json!({ "scheme": "basic", "username": "dave" }));
    assert_eq!(v["provider"], "gitea");
}
