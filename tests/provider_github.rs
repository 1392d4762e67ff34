//! GitHub and GitHub Enterprise Server personal access tokens validated over
//! real HTTP against the mock provider: classic tokens by their scopes,
//! fine-grained and GitHub App user tokens by permission probes, and every
//! temporary failure kept apart from a verdict on the token. Each scenario
//! runs for both provider kinds (`github` with a base_url override, and
//! `github_enterprise`).

#![allow(
    clippy::disallowed_methods,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

mod mock_common;

use chrono::{Duration, Utc};
use gitbroker::mock::{Flavour, PatSpec, RunningMock};
use gitbroker::providers::{
    self, Endpoints, GitProvider, PatError, PatInput, ProviderKind, TokenPurpose, TokenReport,
};

use serde_json::{Value, json};
use url::Url;

const USER: TokenPurpose = TokenPurpose::User;
const RUNTIME: TokenPurpose = TokenPurpose::Runtime;

struct Setup {
    mock: RunningMock,
    kind: ProviderKind,
    endpoints: Endpoints,
}

impl Setup {
    async fn start(kind: ProviderKind) -> Setup {
        let mock = mock_common::start().await;
        let base = Url::parse(&mock.base_url).unwrap();
        let endpoints = providers::provider(kind)
            .endpoints(Some(&base), None)
            .unwrap();
        assert_eq!(endpoints.api.as_str(), mock.github_api_url());
        Setup {
            mock,
            kind,
            endpoints,
        }
    }

    fn provider(&self) -> &'static dyn GitProvider {
        providers::provider(self.kind)
    }

    fn name(&self) -> &'static str {
        self.provider().display_name()
    }

    fn help(&self, purpose: TokenPurpose) -> &'static str {
        self.provider().token_help(purpose)
    }

    fn pat(&self, kind: &str, scopes: &[&str]) -> String {
        self.pat_with(kind, scopes, |_| {})
    }

    fn pat_with(&self, kind: &str, scopes: &[&str], change: impl FnOnce(&mut PatSpec)) -> String {
        let mut spec = PatSpec {
            flavour: Flavour::Github,
            owner: "alice".into(),
            kind: kind.into(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            expires_at: None,
            repositories: Vec::new(),
            email: None,
        };
        change(&mut spec);
        self.mock.provider.create_pat(spec)
    }

    async fn validate(&self, token: &str, purpose: TokenPurpose) -> Result<TokenReport, PatError> {
        self.validate_at(token, purpose, Utc::now()).await
    }

    async fn validate_at(
        &self,
        token: &str,
        purpose: TokenPurpose,
        now: chrono::DateTime<Utc>,
    ) -> Result<TokenReport, PatError> {
        let http = providers::http_client(
            std::time::Duration::from_secs(2),
            std::time::Duration::from_secs(2),
        )
        .unwrap();
        let input = PatInput::new(token, None, None);
        self.provider()
            .validate_pat(&http, &self.endpoints, &input, purpose, now)
            .await
    }

    fn invalid_message(&self, purpose: TokenPurpose) -> String {
        format!(
            "{} does not accept this token: it is revoked, expired or mistyped. {}",
            self.name(),
            self.help(purpose)
        )
    }
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| (*x).to_owned()).collect()
}

fn assert_unavailable(result: Result<TokenReport, PatError>, name: &str) {
    match result {
        Err(e @ PatError::Unavailable { .. }) => {
            let message = e.to_string();
            assert!(
                message.starts_with(&format!("{name} could not validate the token right now (")),
                "{message}"
            );
            assert!(message.ends_with("Nothing was changed; try again in a moment."));
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Classic tokens: scopes from `X-OAuth-Scopes`, no probing.

async fn classic_valid_user(kind: ProviderKind) {
    let t = Setup::start(kind).await;
    let expires = Utc::now() + Duration::days(30);
    let token = t.pat_with("classic", &["repo"], |p| p.expires_at = Some(expires));
    let report = t.validate(&token, USER).await.unwrap();
    assert_eq!(report.login, "alice");
    assert_eq!(report.git_username, "alice");
    assert_eq!(report.kind, "classic personal access token");
    assert_eq!(report.scopes, s(&["repo"]));
    // the header has whole seconds
    assert_eq!(report.expires_at.unwrap().timestamp(), expires.timestamp());
    let stats = t.mock.provider.stats();
    assert_eq!(stats.user_requests, 1);
    assert_eq!(stats.repo_requests, 0, "classic tokens are not probed");
}

async fn classic_valid_runtime(kind: ProviderKind) {
    let t = Setup::start(kind).await;
    let token = t.pat("classic", &["repo", "admin:repo_hook"]);
    let report = t.validate(&token, RUNTIME).await.unwrap();
    assert_eq!(report.scopes, s(&["repo", "admin:repo_hook"]));
    assert_eq!(report.expires_at, None);
}

async fn classic_broader_scopes_accepted(kind: ProviderKind) {
    let t = Setup::start(kind).await;
    let scopes = ["repo", "admin:repo_hook", "admin:org", "workflow", "gist"];
    let token = t.pat("classic", &scopes);
    assert_eq!(t.validate(&token, USER).await.unwrap().scopes, s(&scopes));
    assert_eq!(
        t.validate(&token, RUNTIME).await.unwrap().scopes,
        s(&scopes)
    );
}

async fn classic_missing_one_scope(kind: ProviderKind) {
    let t = Setup::start(kind).await;
    // write:repo_hook is narrower than the admin:repo_hook the documents ask for
    let token = t.pat("classic", &["repo", "write:repo_hook"]);
    let err = t.validate(&token, RUNTIME).await.unwrap_err();
    assert!(matches!(err, PatError::MissingScopes { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "This token lacks the required scopes: admin:repo_hook. {}",
            t.help(RUNTIME)
        )
    );
    let token = t.pat("classic", &["public_repo"]);
    let err = t.validate(&token, USER).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "This token lacks the required scopes: repo. {}",
            t.help(USER)
        )
    );
}

async fn oauth_app_token_read_like_classic(kind: ProviderKind) {
    let t = Setup::start(kind).await;
    let token = t.pat("oauth", &["repo"]);
    let report = t.validate(&token, USER).await.unwrap();
    assert_eq!(report.kind, "OAuth app token");
    assert_eq!(report.scopes, s(&["repo"]));
}

// ---------------------------------------------------------------------------
// Expired, revoked, and tokens of the wrong kind.

async fn expired(kind: ProviderKind) {
    let t = Setup::start(kind).await;
    // GitHub answers 401 for an expired token, like for any invalid one
    let token = t.pat_with("classic", &["repo"], |p| {
        p.expires_at = Some(Utc::now() - Duration::hours(1));
    });
    let err = t.validate(&token, USER).await.unwrap_err();
    assert!(matches!(err, PatError::Invalid { .. }), "{err:?}");
    assert_eq!(err.to_string(), t.invalid_message(USER));

    // GitHub still accepts it, but by the broker's clock it has expired
    let at = Utc::now() + Duration::minutes(5);
    let token = t.pat_with("fine_grained", &["contents:write", "metadata:read"], |p| {
        p.expires_at = Some(at);
    });
    let err = t
        .validate_at(&token, USER, at + Duration::minutes(1))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "This token expired on {}. {}",
            at.format("%Y-%m-%d %H:%M UTC"),
            t.help(USER)
        )
    );
    assert_eq!(t.mock.provider.stats().repo_requests, 0);
}

async fn revoked(kind: ProviderKind) {
    let t = Setup::start(kind).await;
    for token in [
        t.pat("classic", &["repo"]),
        t.pat("fine_grained", &["contents:write", "metadata:read"]),
    ] {
        assert!(t.validate(&token, USER).await.is_ok());
        assert!(t.mock.provider.revoke_pat(&token));
        let err = t.validate(&token, USER).await.unwrap_err();
        assert!(matches!(err, PatError::Invalid { .. }), "{err:?}");
        assert_eq!(err.to_string(), t.invalid_message(USER));
    }
}

async fn installation_token_is_wrong_kind(kind: ProviderKind) {
    let t = Setup::start(kind).await;
    let token = t.pat("installation", &["contents:write", "metadata:read"]);
    let err = t.validate(&token, USER).await.unwrap_err();
    assert!(matches!(err, PatError::WrongKind { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "This is a GitHub App installation token (ghs_): it acts as the app, not as a person, and expires within an hour. {}",
            t.help(USER)
        )
    );
    // known by its prefix: not even sent to GitHub
    assert_eq!(t.mock.provider.stats().user_requests, 0);

    // and GitHub would refuse it `/user` anyway
    let resp = mock_common::get_user(&t.mock, &format!("Bearer {token}")).await;
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["message"], "Resource not accessible by integration");
}

async fn refresh_token_is_wrong_kind(kind: ProviderKind) {
    let t = Setup::start(kind).await;
    let token = format!("ghr_{}", "A1b2".repeat(19));
    let err = t.validate(&token, RUNTIME).await.unwrap_err();
    assert!(matches!(err, PatError::WrongKind { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "This is a GitHub refresh token (ghr_), not an access token. {}",
            t.help(RUNTIME)
        )
    );
    assert_eq!(t.mock.provider.stats().user_requests, 0);
}

// ---------------------------------------------------------------------------
// Fine-grained and GitHub App user tokens: permissions by probing.

async fn fine_grained_valid_user(kind: ProviderKind) {
    let t = Setup::start(kind).await;
    let expires = Utc::now() + Duration::days(7);
    let token = t.pat_with("fine_grained", &["contents:write", "metadata:read"], |p| {
        p.expires_at = Some(expires);
    });
    let report = t.validate(&token, USER).await.unwrap();
    assert_eq!(report.login, "alice");
    assert_eq!(report.kind, "fine-grained personal access token");
    assert_eq!(report.scopes, s(&["contents:write", "metadata:read"]));
    assert_eq!(report.expires_at.unwrap().timestamp(), expires.timestamp());
    // the repository list and the Contents probe
    assert_eq!(t.mock.provider.stats().repo_requests, 2);
}

async fn fine_grained_valid_runtime(kind: ProviderKind) {
    let t = Setup::start(kind).await;
    let all = [
        "administration:write",
        "contents:write",
        "metadata:read",
        "webhooks:write",
    ];
    // selected repositories, not the owner's own: the probes follow the list
    let token = t.pat_with("fine_grained", &all, |p| {
        p.repositories = s(&["acme/infra", "acme/apps"]);
    });
    let report = t.validate(&token, RUNTIME).await.unwrap();
    assert_eq!(report.scopes, s(&all));
    assert_eq!(t.mock.provider.stats().repo_requests, 4);
}

async fn app_user_token_probed_like_fine_grained(kind: ProviderKind) {
    let t = Setup::start(kind).await;
    let token = t.pat("app_user", &["contents:write", "metadata:read"]);
    assert!(token.starts_with("ghu_"));
    let report = t.validate(&token, USER).await.unwrap();
    assert_eq!(report.kind, "GitHub App user token");
    assert_eq!(report.scopes, s(&["contents:write", "metadata:read"]));
    let err = t.validate(&token, RUNTIME).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "This token lacks the required permissions: Administration: Read and write, Webhooks: Read and write. {}",
            t.help(RUNTIME)
        )
    );
}

async fn fine_grained_missing_contents_write(kind: ProviderKind) {
    let t = Setup::start(kind).await;
    let token = t.pat("fine_grained", &["contents:read", "metadata:read"]);
    let err = t.validate(&token, USER).await.unwrap_err();
    match &err {
        PatError::MissingScopes { what, missing, .. } => {
            assert_eq!(*what, "the required permissions");
            assert_eq!(missing, &s(&["Contents: Read and write"]));
        }
        other => panic!("expected MissingScopes, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        format!(
            "This token lacks the required permissions: Contents: Read and write. {}",
            t.help(USER)
        )
    );
}

async fn fine_grained_missing_webhooks_write_for_runtime(kind: ProviderKind) {
    let t = Setup::start(kind).await;
    let token = t.pat(
        "fine_grained",
        &[
            "administration:write",
            "contents:write",
            "metadata:read",
            "webhooks:read",
        ],
    );
    // enough for a user token
    assert!(t.validate(&token, USER).await.is_ok());
    let err = t.validate(&token, RUNTIME).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "This token lacks the required permissions: Webhooks: Read and write. {}",
            t.help(RUNTIME)
        )
    );
}

async fn fine_grained_missing_metadata(kind: ProviderKind) {
    let t = Setup::start(kind).await;
    let token = t.pat("fine_grained", &["contents:write"]);
    let err = t.validate(&token, USER).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "This token lacks the required permissions: Metadata: Read-only. {}",
            t.help(USER)
        )
    );
}

async fn fine_grained_with_no_repositories(kind: ProviderKind) {
    let t = Setup::start(kind).await;
    let token = t.pat("fine_grained", &["repository_access:public"]);
    for purpose in [USER, RUNTIME] {
        let err = t.validate(&token, purpose).await.unwrap_err();
        assert!(matches!(err, PatError::WrongKind { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "This token has access to no repositories; choose All repositories or select the repositories your runtime uses. {}",
                t.help(purpose)
            )
        );
    }
    // nothing was probed past the empty list
    assert_eq!(t.mock.provider.stats().repo_requests, 2);
}

// ---------------------------------------------------------------------------
// GitHub unavailable: never a verdict on the token.

/// A probe GitHub answers 2xx may have written something and proves
/// nothing: the token is refused, never counted as granted.
async fn fine_grained_probe_answering_2xx_is_refused(kind: ProviderKind) {
    let t = Setup::start(kind).await;
    t.mock.provider.switches().set_probes_succeed(true);
    let token = t.pat("fine_grained", &["contents:write", "metadata:read"]);
    let err = t.validate(&token, USER).await.unwrap_err();
    match &err {
        PatError::ProbeAccepted { request, .. } => {
            assert!(request.starts_with("POST /repos/alice/"), "{request}");
            assert!(request.ends_with("/git/blobs"), "{request}");
        }
        other => panic!("expected ProbeAccepted, got {other:?}"),
    }
    assert!(!err.to_string().contains(&token));
    // classic tokens are judged on their scopes, without probes
    let classic = t.pat("classic", &["repo"]);
    t.validate(&classic, USER).await.unwrap();
}

async fn unavailable_statuses(kind: ProviderKind) {
    let t = Setup::start(kind).await;
    let classic = t.pat("classic", &["repo"]);
    let fine = t.pat("fine_grained", &["contents:write", "metadata:read"]);
    // 403 and 429 come with `X-RateLimit-Remaining: 0`, as GitHub sends them
    for status in [500, 502, 503, 429, 403] {
        t.mock.provider.switches().set_user_api_status(Some(status));
        for token in [&classic, &fine] {
            assert_unavailable(t.validate(token, USER).await, t.name());
        }
    }
    t.mock.provider.switches().set_user_api_status(None);
    assert!(t.validate(&classic, USER).await.is_ok());
    assert!(t.validate(&fine, USER).await.is_ok());
}

async fn hang_is_unavailable(kind: ProviderKind) {
    let t = Setup::start(kind).await;
    let token = t.pat("fine_grained", &["contents:write", "metadata:read"]);
    t.mock.provider.switches().set_api_hang(true);
    let started = std::time::Instant::now();
    assert_unavailable(t.validate(&token, USER).await, t.name());
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    t.mock.provider.switches().set_api_hang(false);
    assert!(t.validate(&token, USER).await.is_ok());
}

macro_rules! for_both_kinds {
    ($($name:ident),* $(,)?) => {
        mod github {
            use gitbroker::providers::ProviderKind;
            $(#[tokio::test]
            async fn $name() {
                super::$name(ProviderKind::Github).await;
            })*
        }
        mod github_enterprise {
            use gitbroker::providers::ProviderKind;
            $(#[tokio::test]
            async fn $name() {
                super::$name(ProviderKind::GithubEnterprise).await;
            })*
        }
    };
}

for_both_kinds!(
    classic_valid_user,
    classic_valid_runtime,
    classic_broader_scopes_accepted,
    classic_missing_one_scope,
    oauth_app_token_read_like_classic,
    expired,
    revoked,
    installation_token_is_wrong_kind,
    refresh_token_is_wrong_kind,
    fine_grained_valid_user,
    fine_grained_valid_runtime,
    app_user_token_probed_like_fine_grained,
    fine_grained_missing_contents_write,
    fine_grained_missing_webhooks_write_for_runtime,
    fine_grained_missing_metadata,
    fine_grained_with_no_repositories,
    fine_grained_probe_answering_2xx_is_refused,
    unavailable_statuses,
    hang_is_unavailable,
);

// ---------------------------------------------------------------------------
// Failures in the middle of probing, from a scripted GitHub: the mock's
// switches act on `/user` first, so they cannot reach this stage.

mod scripted {
    use super::*;
    use axum::Router;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::{get, post};

    /// `/user` and `/user/repos` answer normally; the Contents probe answers
    /// `status` with `headers`, or never when `status` is 0.
    async fn serve(status: u16, headers: &'static [(&'static str, &'static str)]) -> Url {
        let blob = move || async move {
            if status == 0 {
                tokio::time::sleep(std::time::Duration::from_secs(30)).await;
            }
            let mut h = HeaderMap::new();
            for (k, v) in headers {
                h.insert(*k, v.parse().unwrap());
            }
            (
                StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
                h,
                axum::Json(json!({ "message": "scripted" })),
            )
                .into_response()
        };
        let app = Router::new()
            .route(
                "/api/v3/user",
                get(|| async { axum::Json(json!({ "login": "alice" })) }),
            )
            .route(
                "/api/v3/user/repos",
                get(|| async {
                    axum::Json(json!([{ "name": "demo", "owner": { "login": "alice" } }]))
                }),
            )
            .route("/api/v3/repos/alice/demo/git/blobs", post(blob));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Url::parse(&format!("http://{addr}")).unwrap()
    }

    async fn validate(kind: ProviderKind, base: &Url) -> Result<TokenReport, PatError> {
        let p = providers::provider(kind);
        let endpoints = p.endpoints(Some(base), None).unwrap();
        let http = providers::http_client(
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(1),
        )
        .unwrap();
        let input = PatInput::new(&format!("github_pat_{}", "x".repeat(82)), None, None);
        p.validate_pat(&http, &endpoints, &input, USER, Utc::now())
            .await
    }

    #[tokio::test]
    async fn probe_failures_are_unavailable_never_a_verdict() {
        let cases: [(u16, &'static [(&'static str, &'static str)]); 6] = [
            (500, &[]),
            (503, &[]),
            (429, &[]),
            (403, &[("x-ratelimit-remaining", "0")]),
            // a secondary rate limit
            (403, &[("retry-after", "60")]),
            // no answer: the client's timeout
            (0, &[]),
        ];
        for kind in [ProviderKind::Github, ProviderKind::GithubEnterprise] {
            for (status, headers) in cases {
                let base = serve(status, headers).await;
                let name = providers::provider(kind).display_name();
                assert_unavailable(validate(kind, &base).await, name);
            }
        }
    }

    #[tokio::test]
    async fn probe_verdicts() {
        let kind = ProviderKind::GithubEnterprise;
        // 422 and 409 (an empty repository): past the permission check
        for status in [422, 409] {
            let base = serve(status, &[]).await;
            let report = validate(kind, &base).await.unwrap();
            assert_eq!(report.scopes, s(&["contents:write", "metadata:read"]));
        }
        let base = serve(403, &[("x-accepted-github-permissions", "contents=write")]).await;
        assert!(matches!(
            validate(kind, &base).await,
            Err(PatError::MissingScopes { .. })
        ));
        let base = serve(404, &[]).await;
        assert!(matches!(
            validate(kind, &base).await,
            Err(PatError::MissingScopes { .. })
        ));
        // revoked between two requests
        let base = serve(401, &[]).await;
        assert!(matches!(
            validate(kind, &base).await,
            Err(PatError::Invalid { .. })
        ));
    }
}

// ---------------------------------------------------------------------------
// The mock's repository endpoints, as GitHub answers them.

mod mock_endpoints {
    use super::*;

    async fn call(
        t: &Setup,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Value,
    ) -> (u16, HeaderMapLite, Value) {
        let resp = mock_common::http()
            .request(method, format!("{}{path}", t.mock.github_api_url()))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let headers = HeaderMapLite(resp.headers().clone());
        let body = resp.json().await.unwrap_or(Value::Null);
        (status, headers, body)
    }

    struct HeaderMapLite(reqwest::header::HeaderMap);

    impl HeaderMapLite {
        fn get(&self, name: &str) -> Option<&str> {
            self.0.get(name).and_then(|v| v.to_str().ok())
        }
    }

    use reqwest::Method;

    #[tokio::test]
    async fn fine_grained_permission_before_body() {
        let t = Setup::start(ProviderKind::Github).await;
        let reader = t.pat("fine_grained", &["contents:read", "metadata:read"]);
        let writer = t.pat(
            "fine_grained",
            &["contents:write", "metadata:read", "webhooks:write"],
        );
        let blobs = "/repos/alice/demo/git/blobs";
        let (status, headers, body) = call(&t, Method::POST, blobs, &reader, json!({})).await;
        assert_eq!(status, 403);
        assert_eq!(
            body["message"],
            "Resource not accessible by personal access token"
        );
        assert_eq!(
            headers.get("x-accepted-github-permissions"),
            Some("contents=write")
        );
        assert!(headers.get("x-oauth-scopes").is_none());

        let (status, _, body) = call(&t, Method::POST, blobs, &writer, json!({})).await;
        assert_eq!(status, 422);
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .starts_with("Invalid request.")
        );
        let (status, _, body) = call(
            &t,
            Method::POST,
            blobs,
            &writer,
            json!({ "content": "hello" }),
        )
        .await;
        assert_eq!(status, 201);
        assert_eq!(body["sha"].as_str().unwrap().len(), 40);

        let hooks = "/repos/alice/demo/hooks";
        let (status, headers, _) = call(&t, Method::POST, hooks, &reader, json!({})).await;
        assert_eq!(status, 403);
        assert_eq!(
            headers.get("x-accepted-github-permissions"),
            Some("repository_hooks=write")
        );
        let (status, _, _) = call(&t, Method::POST, hooks, &writer, json!({})).await;
        assert_eq!(status, 422);

        let repo = "/repos/alice/demo";
        let (status, headers, _) =
            call(&t, Method::PATCH, repo, &writer, json!({ "name": "" })).await;
        assert_eq!(status, 403);
        assert_eq!(
            headers.get("x-accepted-github-permissions"),
            Some("administration=write")
        );

        // a repository the token does not reach is hidden
        let (status, _, body) = call(
            &t,
            Method::POST,
            "/repos/bob/demo/git/blobs",
            &writer,
            json!({}),
        )
        .await;
        assert_eq!((status, body["message"].as_str()), (404, Some("Not Found")));
    }

    #[tokio::test]
    async fn classic_scopes_hide_the_repository() {
        let t = Setup::start(ProviderKind::Github).await;
        let repo_only = t.pat("classic", &["repo"]);
        let hook_only = t.pat("classic", &["write:repo_hook"]);
        let blobs = "/repos/alice/demo/git/blobs";
        let hooks = "/repos/alice/demo/hooks";
        let (status, headers, _) = call(&t, Method::POST, blobs, &repo_only, json!({})).await;
        assert_eq!(status, 422);
        assert_eq!(headers.get("x-oauth-scopes"), Some("repo"));
        assert_eq!(headers.get("x-accepted-oauth-scopes"), Some("repo"));
        let (status, _, _) = call(&t, Method::POST, hooks, &repo_only, json!({})).await;
        assert_eq!(status, 404);
        let (status, _, _) = call(&t, Method::POST, hooks, &hook_only, json!({})).await;
        assert_eq!(status, 422);
        let (status, _, _) = call(&t, Method::POST, blobs, &hook_only, json!({})).await;
        assert_eq!(status, 404);
        let (status, _, _) = call(
            &t,
            Method::PATCH,
            "/repos/alice/demo",
            &repo_only,
            json!({ "name": "" }),
        )
        .await;
        assert_eq!(status, 422);
        let (status, _, body) = call(&t, Method::POST, blobs, "ghp_unknown", json!({})).await;
        assert_eq!(
            (status, body["message"].as_str()),
            (401, Some("Bad credentials"))
        );
    }

    #[tokio::test]
    async fn user_repos_lists_and_paginates() {
        let t = Setup::start(ProviderKind::Github).await;
        let token = t.pat_with("fine_grained", &["metadata:read"], |p| {
            p.repositories = s(&["acme/zeta", "acme/alpha", "acme/mid"]);
        });
        let (status, headers, body) = call(
            &t,
            Method::GET,
            "/user/repos?per_page=2",
            &token,
            Value::Null,
        )
        .await;
        assert_eq!(status, 200);
        let names: Vec<&str> = body
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["full_name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["acme/alpha", "acme/mid"]);
        assert_eq!(body[0]["owner"]["login"], "acme");
        assert!(headers.get("link").unwrap().contains("page=2"));
        let (_, headers, body) = call(
            &t,
            Method::GET,
            "/user/repos?per_page=2&page=2",
            &token,
            Value::Null,
        )
        .await;
        assert_eq!(body[0]["full_name"], "acme/zeta");
        assert!(headers.get("link").is_none());

        let installation = t.pat("installation", &["metadata:read"]);
        let (status, _, body) =
            call(&t, Method::GET, "/user/repos", &installation, Value::Null).await;
        assert_eq!(status, 403);
        assert_eq!(body["message"], "Resource not accessible by integration");
        assert_eq!(t.mock.provider.stats().repo_requests, 3);
    }

    #[tokio::test]
    async fn switches_apply_to_the_repository_endpoints() {
        let t = Setup::start(ProviderKind::Github).await;
        let token = t.pat("fine_grained", &["contents:write", "metadata:read"]);
        t.mock.provider.switches().set_user_api_status(Some(503));
        let (status, _, _) = call(&t, Method::GET, "/user/repos", &token, Value::Null).await;
        assert_eq!(status, 503);
        t.mock.provider.switches().set_user_api_status(Some(429));
        let (status, headers, _) = call(
            &t,
            Method::POST,
            "/repos/alice/demo/git/blobs",
            &token,
            json!({}),
        )
        .await;
        assert_eq!(status, 429);
        assert_eq!(headers.get("x-ratelimit-remaining"), Some("0"));
        t.mock.provider.switches().set_user_api_status(None);
        t.mock.provider.switches().set_api_hang(true);
        let hung = tokio::time::timeout(
            std::time::Duration::from_millis(300),
            call(&t, Method::PATCH, "/repos/alice/demo", &token, json!({})),
        )
        .await;
        assert!(hung.is_err(), "PATCH answered while api_hang was on");
        t.mock.provider.switches().set_api_hang(false);
    }
}
