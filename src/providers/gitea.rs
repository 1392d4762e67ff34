//! Gitea and Forgejo (one kind: Forgejo serves the same endpoints), always
//! self-hosted: OAuth2 with PKCE at `/login/oauth/*` (JSON token answers
//! without a `scope` field, one-hour access tokens, refresh tokens renewed
//! on every use), API v1 under `/api/v1`, and scoped access tokens whose
//! scopes no endpoint reports: Gitea checks a token's scope before anything
//! else a route does and names the missing one in its 403, so the scopes are
//! learned by asking routes that need them.

use super::{
    Endpoints, GitAuth, GitProvider, Identity, PatError, PatInput, ProviderClient, ProviderError,
    ProviderKind, TokenPurpose, TokenReport, join, missing_scopes, owned,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

pub struct Gitea;

pub static GITEA: Gitea = Gitea;

const DISPLAY_NAME: &str = "Gitea";

/// Gitea's scope categories; each has `read:` and `write:`, and write
/// implies read (`models/auth/access_token_scope.go`).
const CATEGORIES: &[&str] = &[
    "activitypub",
    "admin",
    "issue",
    "misc",
    "notification",
    "organization",
    "package",
    "repository",
    "user",
];

/// What `all` covers: every `read:` and `write:` scope.
const ALL_COVERS: &[&str] = &[
    "read:activitypub",
    "write:activitypub",
    "read:admin",
    "write:admin",
    "read:issue",
    "write:issue",
    "read:misc",
    "write:misc",
    "read:notification",
    "write:notification",
    "read:organization",
    "write:organization",
    "read:package",
    "write:package",
    "read:repository",
    "write:repository",
    "read:user",
    "write:user",
];

/// The product documents' two scope tables in Gitea's terms. Git over
/// HTTPS needs `read:repository` to fetch and `write:repository` to push;
/// repository webhooks (the runtime's) are repository routes too, so
/// `write:repository` covers them (Gitea asks for repository admin rights
/// besides, which is a permission of the account, not a token scope).
/// `read:user` is what `GET /api/v1/user` needs to tell whose token it is.
const USER_SCOPES: &[&str] = &["write:repository", "read:user"];
const RUNTIME_SCOPES: &[&str] = &["write:repository", "read:user"];

/// The marker of Gitea's scope refusal: `token does not have at least one of
/// required scope(s): [write:repository]` (HTTP 403).
const SCOPE_REFUSAL: &str = "required scope";

#[async_trait]
impl GitProvider for Gitea {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Gitea
    }

    fn display_name(&self) -> &'static str {
        DISPLAY_NAME
    }

    fn endpoints(
        &self,
        base_url: Option<&Url>,
        api_url: Option<&Url>,
    ) -> Result<Endpoints, String> {
        let Some(base) = base_url else {
            return Err(
                "base_url is required for gitea: the URL of the Gitea or Forgejo instance, e.g. https://gitea.example.com"
                    .into(),
            );
        };
        // A path is allowed (ROOT_URL may have one).
        super::endpoints_under(
            base,
            api_url,
            [
                "/login/oauth/authorize",
                "/login/oauth/access_token",
                "/api/v1",
            ],
            "must be the Gitea URL without query or fragment, e.g. https://gitea.example.com",
        )
    }

    fn parse_scopes(&self, raw: &str) -> Vec<String> {
        // Comma-separated in token records, space-separated in OAuth requests.
        super::split_scopes(raw)
    }

    fn implied_by(&self, scope: &str) -> &'static [&'static str] {
        if scope == "all" {
            return ALL_COVERS;
        }
        // write:<category> covers read:<category>, nothing else does
        match scope.strip_prefix("write:") {
            Some(category) if CATEGORIES.contains(&category) => ALL_COVERS
                .iter()
                .position(|s| s.strip_prefix("read:") == Some(category))
                .map_or(&[], |i| &ALL_COVERS[i..=i]),
            _ => &[],
        }
    }

    fn required_scopes(&self, purpose: TokenPurpose) -> &'static [&'static str] {
        match purpose {
            TokenPurpose::User => USER_SCOPES,
            TokenPurpose::Runtime => RUNTIME_SCOPES,
        }
    }

    fn token_help(&self, purpose: TokenPurpose) -> &'static str {
        match purpose {
            TokenPurpose::User => {
                "Create one in Gitea (or Forgejo) under Settings > Applications > Manage Access Tokens: enter a token name, choose the repository access \"All (public, private, and limited)\", under Select permissions set `repository` to Read and Write and `user` to Read (the scopes `write:repository` and `read:user`), generate the token, and paste it here."
            }
            TokenPurpose::Runtime => {
                "Create it, preferably for a service account with admin rights on the repositories, in Gitea (or Forgejo) under Settings > Applications > Manage Access Tokens: enter a token name, choose the repository access \"All (public, private, and limited)\", under Select permissions set `repository` to Read and Write and `user` to Read (the scopes `write:repository` and `read:user`), generate the token, and paste it here."
            }
        }
    }

    async fn validate_pat(
        &self,
        http: &ProviderClient,
        endpoints: &Endpoints,
        input: &PatInput,
        purpose: TokenPurpose,
        _now: DateTime<Utc>,
    ) -> Result<TokenReport, PatError> {
        let help = self.token_help(purpose);
        let token = &input.token;
        if looks_like_oauth_token(token.expose_secret()) {
            return Err(PatError::WrongKind {
                reason: format!(
                    "This is an OAuth access token of an application, not an access token: it expires within an hour and only that application can renew it. Create an access token instead. {help}"
                ),
            });
        }
        let pat_error = |e: ProviderError| PatError::from_provider(DISPLAY_NAME, e, help);

        // The owner first: it needs `read:user`, and a refusal names it.
        let mut granted: Vec<String> = Vec::new();
        let mut refused: Vec<String> = Vec::new();
        let login = match get_user(http, endpoints, token).await {
            Ok(user) => {
                granted.push("read:user".into());
                Some(user.login)
            }
            Err(ApiError::MissingScope(_)) => {
                refused.push("read:user".into());
                None
            }
            Err(ApiError::Forbidden(message)) => {
                return Err(PatError::WrongKind {
                    reason: format!(
                        "Gitea refused to describe this token's owner (HTTP 403: {message}). {help}"
                    ),
                });
            }
            Err(ApiError::Provider(e)) => return Err(pat_error(e)),
        };

        // Then `write:repository`, which no read route can show: a write
        // to a repository that does not exist. Gitea checks the scope
        // before it looks for the repository, so the answer is 403 without
        // the scope and 404 with it; nothing can be changed either way.
        let owner = login.as_deref().unwrap_or("gitbroker-scope-check");
        match probe_repository_write(http, endpoints, token, owner).await {
            Ok(Probe::Granted) => granted.push("write:repository".into()),
            Ok(Probe::Accepted(request)) => {
                return Err(PatError::ProbeAccepted {
                    provider: DISPLAY_NAME,
                    request,
                });
            }
            Err(ApiError::MissingScope(_)) => refused.push("write:repository".into()),
            Err(ApiError::Forbidden(message)) => {
                return Err(PatError::WrongKind {
                    reason: format!(
                        "Gitea refused this token for repositories (HTTP 403: {message}). {help}"
                    ),
                });
            }
            Err(ApiError::Provider(e)) => return Err(pat_error(e)),
        }

        let missing = missing_scopes(self, &granted, &owned(self.required_scopes(purpose)));
        if !missing.is_empty() {
            return Err(PatError::MissingScopes {
                what: "the required scopes",
                missing,
                help: help.to_owned(),
            });
        }
        let login = login.ok_or_else(|| pat_error(ProviderError::InvalidToken))?;
        Ok(TokenReport {
            git_username: self.git_username(&login),
            git_auth: GitAuth::basic(self.git_username(&login)),
            login,
            kind: "access token".into(),
            scopes: granted,
            // Gitea and Forgejo access tokens do not expire.
            expires_at: None,
        })
    }

    async fn identify(
        &self,
        http: &ProviderClient,
        endpoints: &Endpoints,
        token: &SecretString,
    ) -> Result<Identity, ProviderError> {
        let user = get_user(http, endpoints, token)
            .await
            .map_err(ApiError::into_provider)?;
        // Gitea reports no scopes for an OAuth token (neither in the token
        // response nor anywhere else); since 1.23 it grants what was asked.
        Ok(Identity {
            login: user.login,
            scopes: None,
        })
    }

    // Gitea has no revocation endpoint for OAuth tokens (no RFC 7009);
    // deleting an access token needs the owner's password
    // (`DELETE /api/v1/users/{user}/tokens/{id}`, Basic auth only). The
    // user revokes the grant under Settings > Applications > Authorized
    // OAuth2 Applications.
    // (revoke: the trait's default, Revocation::Unsupported)

    fn git_username(&self, identity_login: &str) -> String {
        // Gitea ignores the username when the password is a token; the
        // login is what its documents show and what Forgejo expects too.
        identity_login.to_owned()
    }
}

/// Gitea's OAuth access tokens are JWTs (`eyJ…` segments joined by dots);
/// its access tokens are 40 hex characters.
fn looks_like_oauth_token(token: &str) -> bool {
    token.starts_with("eyJ") && token.contains('.')
}

/// What a Gitea API call answered, finer than [`ProviderError`].
#[derive(Debug)]
enum ApiError {
    /// 403 naming a scope the token lacks (Gitea's `tokenRequiresScopes`).
    MissingScope(String),
    /// Another 403, with Gitea's message.
    Forbidden(String),
    Provider(ProviderError),
}

impl ApiError {
    fn into_provider(self) -> ProviderError {
        match self {
            Self::MissingScope(m) | Self::Forbidden(m) => {
                ProviderError::Protocol(format!("HTTP 403: {m}"))
            }
            Self::Provider(e) => e,
        }
    }
}

#[derive(Deserialize)]
struct ApiMessage {
    #[serde(default)]
    message: String,
}

/// Gitea's `message` as untrusted text for an error: bounded, no controls.
fn message_of(body: Option<ApiMessage>) -> String {
    body.map(|b| b.message)
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect()
}

/// Classifies an answer that is not a success: 401 invalid, 429 and 5xx
/// temporary, 403 a scope refusal or another refusal.
async fn classify(resp: reqwest::Response, what: &str) -> ApiError {
    match resp.status().as_u16() {
        401 => ApiError::Provider(ProviderError::InvalidToken),
        429 => ApiError::Provider(ProviderError::Unavailable("rate limited".into())),
        s if s >= 500 => ApiError::Provider(ProviderError::Unavailable(format!("HTTP {s}"))),
        403 => {
            let message = message_of(resp.json().await.ok());
            if message.contains(SCOPE_REFUSAL) {
                ApiError::MissingScope(message)
            } else {
                ApiError::Forbidden(message)
            }
        }
        s => ApiError::Provider(ProviderError::Protocol(format!("{what} answered HTTP {s}"))),
    }
}

#[derive(Deserialize)]
struct User {
    login: String,
}

/// `GET /api/v1/user` (needs `read:user`).
async fn get_user(
    http: &ProviderClient,
    endpoints: &Endpoints,
    token: &SecretString,
) -> Result<User, ApiError> {
    let what = "GET /api/v1/user";
    let url = join(&endpoints.api, "/user")
        .map_err(|e| ApiError::Provider(ProviderError::Protocol(e)))?;
    let request = http
        .get(url)
        .bearer_auth(token.expose_secret())
        .header("Accept", "application/json");
    let resp = http.send(request).await.map_err(ApiError::Provider)?;
    if !resp.status().is_success() {
        return Err(classify(resp, what).await);
    }
    resp.json().await.map_err(|e| {
        ApiError::Provider(if e.is_timeout() {
            ProviderError::Unavailable("timed out".into())
        } else {
            ProviderError::Protocol(format!("{what} returned an unreadable body"))
        })
    })
}

enum Probe {
    Granted,
    /// The write went through (the request, for the message).
    Accepted(String),
}

/// A repository name no one has: the probe must hit no repository.
fn probe_repository() -> String {
    use rand::Rng;
    let suffix: String = rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(20)
        .map(char::from)
        .collect();
    format!("gitbroker-scope-check-{}", suffix.to_ascii_lowercase())
}

/// `PATCH /api/v1/repos/{owner}/{random name}` with an empty edit:
/// 404 when the token has `write:repository`, 403 naming it when not.
async fn probe_repository_write(
    http: &ProviderClient,
    endpoints: &Endpoints,
    token: &SecretString,
    owner: &str,
) -> Result<Probe, ApiError> {
    let path = format!("/repos/{owner}/{}", probe_repository());
    let what = format!("PATCH /api/v1{path}");
    let url =
        join(&endpoints.api, &path).map_err(|e| ApiError::Provider(ProviderError::Protocol(e)))?;
    let request = http
        .request(reqwest::Method::PATCH, url)
        .bearer_auth(token.expose_secret())
        .header("Accept", "application/json")
        .json(&serde_json::json!({}));
    let resp = http.send(request).await.map_err(ApiError::Provider)?;
    match resp.status().as_u16() {
        404 => Ok(Probe::Granted),
        s if (200..300).contains(&s) => {
            // an operator must hear of it: the write may have changed a
            // repository, and the token is refused for it
            tracing::error!(
                request = %what,
                "Gitea accepted a permission probe that it must refuse; something may have been changed; token refused"
            );
            Ok(Probe::Accepted(what))
        }
        _ => Err(classify(resp, &what).await),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn endpoints_need_the_instance_url() {
        let err = GITEA.endpoints(None, None).unwrap_err();
        assert!(err.contains("base_url is required for gitea"), "{err}");
        let base = Url::parse("https://git.example.com/").unwrap();
        let e = GITEA.endpoints(Some(&base), None).unwrap();
        assert_eq!(
            e.authorize.as_str(),
            "https://git.example.com/login/oauth/authorize"
        );
        assert_eq!(
            e.token.as_str(),
            "https://git.example.com/login/oauth/access_token"
        );
        assert_eq!(e.api.as_str(), "https://git.example.com/api/v1");
        // under a sub-path (ROOT_URL https://example.com/gitea/)
        let sub = Url::parse("https://example.com/gitea/").unwrap();
        let e = GITEA.endpoints(Some(&sub), None).unwrap();
        assert_eq!(e.api.as_str(), "https://example.com/gitea/api/v1");
        let q = Url::parse("https://git.example.com/?x=1").unwrap();
        assert!(GITEA.endpoints(Some(&q), None).is_err());
    }

    #[test]
    fn kind_name_and_username() {
        assert_eq!(ProviderKind::Gitea.as_str(), "gitea");
        let k: ProviderKind = serde_json::from_str("\"gitea\"").unwrap();
        assert_eq!(k, ProviderKind::Gitea);
        let k: ProviderKind = serde_json::from_str("\"forgejo\"").unwrap();
        assert_eq!(k, ProviderKind::Gitea);
        assert_eq!(serde_json::to_string(&k).unwrap(), "\"gitea\"");
        assert_eq!(GITEA.display_name(), "Gitea");
        assert_eq!(GITEA.git_username("alice"), "alice");
        assert_eq!(GITEA.oauth_git_auth("alice"), GitAuth::basic("alice"));
    }

    #[test]
    fn scopes_split_on_commas_and_spaces() {
        assert_eq!(
            GITEA.parse_scopes("read:user,write:repository"),
            s(&["read:user", "write:repository"])
        );
        assert_eq!(
            GITEA.parse_scopes(" write:repository read:user write:repository"),
            s(&["write:repository", "read:user"])
        );
        assert!(GITEA.parse_scopes("").is_empty());
    }

    #[test]
    fn write_implies_read_and_all_implies_everything() {
        let p = &GITEA;
        assert!(missing_scopes(p, &s(&["write:repository"]), &s(&["read:repository"])).is_empty());
        assert!(missing_scopes(p, &s(&["write:user"]), &s(&["read:user"])).is_empty());
        assert_eq!(
            missing_scopes(p, &s(&["read:repository"]), &s(&["write:repository"])),
            s(&["write:repository"])
        );
        assert_eq!(
            missing_scopes(p, &s(&["write:repository"]), &s(&["read:user"])),
            s(&["read:user"])
        );
        for purpose in [TokenPurpose::User, TokenPurpose::Runtime] {
            assert!(missing_scopes(p, &s(&["all"]), &owned(p.required_scopes(purpose))).is_empty());
        }
        assert!(p.implied_by("public-only").is_empty());
        assert!(p.implied_by("write:nonsense").is_empty());
        assert_eq!(p.implied_by("write:issue"), &["read:issue"]);
    }

    #[test]
    fn required_scope_tables() {
        assert_eq!(
            GITEA.required_scopes(TokenPurpose::User),
            &["write:repository", "read:user"]
        );
        assert_eq!(
            GITEA.required_scopes(TokenPurpose::Runtime),
            &["write:repository", "read:user"]
        );
    }

    #[test]
    fn help_names_the_page_and_the_scopes() {
        for purpose in [TokenPurpose::User, TokenPurpose::Runtime] {
            let help = GITEA.token_help(purpose);
            assert!(help.contains("Settings > Applications > Manage Access Tokens"));
            assert!(help.contains("`write:repository`") && help.contains("`read:user`"));
            assert!(help.contains("Forgejo"));
        }
    }

    #[test]
    fn oauth_tokens_are_told_from_access_tokens() {
        assert!(looks_like_oauth_token(
            "eyJhbGciOiJSUzI1NiJ9.eyJ0dCI6MH0.c2lnbmF0dXJl"
        ));
        assert!(!looks_like_oauth_token(
            "3f786850e387550fdab836ed7e6dc881de23001b"
        ));
        assert!(!looks_like_oauth_token("eyJnodots"));
    }

    #[test]
    fn probe_names_are_fresh_and_valid() {
        let a = probe_repository();
        assert_ne!(a, probe_repository());
        assert!(a.starts_with("gitbroker-scope-check-") && a.len() == 42);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        );
    }
}
