//! GitHub and GitHub Enterprise Server: OAuth endpoints under the web host,
//! the REST API at api.github.com or `HOST/api/v3`, comma-separated scopes,
//! token-endpoint errors sent with HTTP 200, scopes read from `X-OAuth-Scopes`.
//!
//! # Fine-grained tokens: permissions found by probing
//!
//! Fine-grained personal access tokens (`github_pat_`) and GitHub App user
//! tokens (`ghu_`) carry permissions, not scopes, and GitHub has no endpoint
//! that tells a token its own permissions. The broker finds them out with
//! requests that cannot change anything:
//!
//! 1. `GET /user/repos?per_page=1` lists a repository the token reaches
//!    (Metadata: Read-only). An empty list means the token reaches no
//!    repository: the user chose "Public repositories" or selected none, and
//!    a runtime could do nothing with it. A 403 means Metadata is missing.
//! 2. On that repository, one deliberately invalid write request per write
//!    permission the purpose needs. GitHub checks permissions before it
//!    validates the body, so the status tells the permission apart without
//!    anything being written:
//!    - Contents: `POST /repos/{o}/{r}/git/blobs` with `{}`;
//!    - Webhooks (runtime): `POST /repos/{o}/{r}/hooks` with `{}`;
//!    - Administration (runtime): `PATCH /repos/{o}/{r}` with `{"name": ""}`.
//!
//!    422 (or 409, an empty repository) means the request got past the
//!    permission check: granted. A 2xx means GitHub accepted the body after
//!    all and may have written something: logged as an error naming the
//!    request, and the token is refused (`PatError::ProbeAccepted`), never
//!    counted as granted. 403 (with `X-Accepted-GitHub-Permissions`
//!    naming what was wanted) or 404 means not granted. 401 means the token
//!    is invalid; 429, a 403 with `X-RateLimit-Remaining: 0` or `Retry-After`,
//!    5xx and timeouts mean GitHub could not answer now, never a verdict.
//!
//! A fine-grained token has one set of permissions for all the repositories
//! it reaches, so one repository stands for all of them. What one repository
//! cannot show: the owner's own role on other repositories (a token never
//! exceeds its owner), and archived repositories, which refuse writes with
//! 403 whatever the token — both end in a refusal that names the permission,
//! never in accepting a token that cannot work.

use super::{
    Endpoints, GitAuth, GitProvider, Identity, PatError, PatInput, ProviderClient, ProviderError,
    ProviderKind, Revocation, TokenPurpose, TokenReport, join, missing_scopes, owned, split_scopes,
};
use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use oauth2::HttpResponse;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use url::Url;

/// github.com (or a GHES host given as `base_url`), and GitHub Enterprise
/// Server proper, which has no default host. Same API, same code.
pub struct GitHub {
    enterprise: bool,
}

pub(super) static GITHUB: GitHub = GitHub { enterprise: false };
pub(super) static GITHUB_ENTERPRISE: GitHub = GitHub { enterprise: true };

const API_VERSION: &str = "2022-11-28";

#[async_trait]
impl GitProvider for GitHub {
    fn kind(&self) -> ProviderKind {
        if self.enterprise {
            ProviderKind::GithubEnterprise
        } else {
            ProviderKind::Github
        }
    }

    fn display_name(&self) -> &'static str {
        if self.enterprise {
            "GitHub Enterprise"
        } else {
            "GitHub"
        }
    }

    fn endpoints(
        &self,
        base_url: Option<&Url>,
        api_url: Option<&Url>,
    ) -> Result<Endpoints, String> {
        let github_com = Url::parse("https://github.com").map_err(|e| e.to_string())?;
        let web = match base_url {
            Some(web) => web,
            None if !self.enterprise => &github_com,
            // GitHub Enterprise Server has no default host to fall back on
            None => {
                return Err(
                    "base_url is required for GitHub Enterprise Server: the host users sign in at, e.g. https://github.example.com".into(),
                );
            }
        };
        if web.path() != "/" {
            return Err("must be the GitHub host only, e.g. https://github.example.com".into());
        }
        let api = match api_url {
            Some(api) => api.clone(),
            None if !self.enterprise && web.host_str() == Some("github.com") => {
                Url::parse("https://api.github.com").map_err(|e| e.to_string())?
            }
            // GitHub Enterprise Server serves its REST API under /api/v3
            None => join(web, "/api/v3")?,
        };
        Ok(Endpoints {
            authorize: join(web, "/login/oauth/authorize")?,
            token: join(web, "/login/oauth/access_token")?,
            api,
        })
    }

    fn parse_scopes(&self, raw: &str) -> Vec<String> {
        split_scopes(raw)
    }

    fn implied_by(&self, scope: &str) -> &'static [&'static str] {
        match scope {
            "repo" => &[
                "repo:status",
                "repo_deployment",
                "public_repo",
                "repo:invite",
                "security_events",
            ],
            "admin:repo_hook" => &["write:repo_hook", "read:repo_hook"],
            "write:repo_hook" => &["read:repo_hook"],
            "admin:org" => &["write:org", "read:org"],
            "write:org" => &["read:org"],
            "admin:public_key" => &["write:public_key", "read:public_key"],
            "write:public_key" => &["read:public_key"],
            "user" => &["read:user", "user:email", "user:follow"],
            "write:packages" => &["read:packages"],
            "admin:gpg_key" => &["write:gpg_key", "read:gpg_key"],
            "write:gpg_key" => &["read:gpg_key"],
            "write:discussion" => &["read:discussion"],
            "project" => &["read:project"],
            _ => &[],
        }
    }

    fn required_scopes(&self, purpose: TokenPurpose) -> &'static [&'static str] {
        match purpose {
            TokenPurpose::User => &["repo"],
            TokenPurpose::Runtime => &["repo", "admin:repo_hook"],
        }
    }

    fn token_help(&self, purpose: TokenPurpose) -> &'static str {
        match purpose {
            TokenPurpose::User => {
                "Create one in GitHub under Settings > Developer settings > Personal access tokens > Tokens (classic) > Generate new token: set a name and an expiration, select the `repo` scope, generate, and paste it here. A fine-grained token also works: Repository access All or Only select repositories; Repository permissions Contents: Read and write, Metadata: Read-only."
            }
            TokenPurpose::Runtime => {
                "Create it, preferably for a service account, in GitHub under Settings > Developer settings > Personal access tokens > Tokens (classic) > Generate new token: select the `repo` and `admin:repo_hook` scopes. A fine-grained token also works: Repository access All or Only select repositories; Repository permissions Administration: Read and write, Contents: Read and write, Metadata: Read-only, Webhooks: Read and write."
            }
        }
    }

    async fn validate_pat(
        &self,
        http: &ProviderClient,
        endpoints: &Endpoints,
        input: &PatInput,
        purpose: TokenPurpose,
        now: DateTime<Utc>,
    ) -> Result<TokenReport, PatError> {
        let help = self.token_help(purpose);
        let provider = self.display_name();
        let token = SecretString::from(input.token.expose_secret().trim().to_owned());
        let kind = match token_kind(token.expose_secret()) {
            Kind::Installation => {
                return Err(PatError::WrongKind {
                    reason: format!(
                        "This is a GitHub App installation token (ghs_): it acts as the app, not as a person, and expires within an hour. {help}"
                    ),
                });
            }
            Kind::Refresh => {
                return Err(PatError::WrongKind {
                    reason: format!(
                        "This is a GitHub refresh token (ghr_), not an access token. {help}"
                    ),
                });
            }
            k => k,
        };
        let user = match user_call(http, endpoints, &token).await {
            Ok(user) => user,
            // Only tokens that act as an app, not a person, are refused
            // `/user`; the prefix check above catches the usual ones, this
            // the tokens of older GHES versions that carry no prefix.
            Err(Failure::Denied) => {
                return Err(PatError::WrongKind {
                    reason: format!(
                        "{provider} does not say who owns this token: it acts as an app, not as a person. {help}"
                    ),
                });
            }
            Err(Failure::Provider(e)) => return Err(PatError::from_provider(provider, e, help)),
        };
        if let Some(at) = user.expires_at
            && at <= now
        {
            return Err(PatError::Expired {
                at: at.format("%Y-%m-%d %H:%M UTC").to_string(),
                help: help.to_owned(),
            });
        }
        let granted = match kind {
            // Fine-grained and GitHub App user tokens have permissions, not
            // scopes, and no endpoint lists them: probe.
            Kind::FineGrained | Kind::AppUser => {
                probe_permissions(http, endpoints, &token, purpose)
                    .await
                    .map_err(|e| e.into_pat_error(provider, help))?
            }
            _ => {
                let granted = user.scopes.unwrap_or_default();
                let missing = missing_scopes(self, &granted, &owned(self.required_scopes(purpose)));
                if !missing.is_empty() {
                    return Err(PatError::MissingScopes {
                        what: "the required scopes",
                        missing,
                        help: help.to_owned(),
                    });
                }
                granted
            }
        };
        Ok(TokenReport {
            git_username: self.git_username(&user.login),
            // any non-empty username works with every GitHub token a person holds
            git_auth: GitAuth::basic(self.git_username(&user.login)),
            login: user.login,
            kind: kind.describe().to_owned(),
            scopes: granted,
            expires_at: user.expires_at,
        })
    }

    /// GitHub answers token-endpoint errors with HTTP 200 and an `error`
    /// field; turn those into the 400 that RFC 6749 §5.2 specifies so the
    /// `oauth2` crate reports them as errors rather than parse failures.
    fn normalize_token_response(&self, mut response: HttpResponse) -> HttpResponse {
        if response.status() == http::StatusCode::OK {
            let is_error = serde_json::from_slice::<serde_json::Value>(response.body())
                .ok()
                .and_then(|v| v.get("error").cloned())
                .is_some_and(|e| e.is_string());
            if is_error {
                *response.status_mut() = http::StatusCode::BAD_REQUEST;
            }
        }
        response
    }

    async fn identify(
        &self,
        http: &ProviderClient,
        endpoints: &Endpoints,
        token: &SecretString,
    ) -> Result<Identity, ProviderError> {
        let user = user_call(http, endpoints, token)
            .await
            .map_err(Failure::into_provider_error)?;
        Ok(Identity {
            login: user.login,
            scopes: user.scopes,
        })
    }

    async fn revoke(
        &self,
        http: &ProviderClient,
        endpoints: &Endpoints,
        client_id: &str,
        client_secret: &SecretString,
        token: &SecretString,
    ) -> Result<Revocation, ProviderError> {
        let url = join(&endpoints.api, &format!("/applications/{client_id}/token"))
            .map_err(ProviderError::Protocol)?;
        let request = http
            .delete(url)
            .basic_auth(client_id, Some(client_secret.expose_secret()))
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", API_VERSION)
            .json(&serde_json::json!({ "access_token": token.expose_secret() }));
        let resp = http.send(request).await?;
        match resp.status().as_u16() {
            204 | 200 => Ok(Revocation::Revoked),
            // 404 is both "no such token" and "wrong app credentials or API
            // URL": ask the token itself which one it is.
            404 | 422 => match user_call(http, endpoints, token).await {
                Err(Failure::Provider(ProviderError::InvalidToken)) => {
                    Ok(Revocation::AlreadyInvalid)
                }
                Err(Failure::Provider(e @ ProviderError::Unavailable(_))) => Err(e),
                Ok(_) | Err(_) => Err(ProviderError::Protocol(
                    "GitHub refused the revocation (HTTP 404) although the token still works: check the OAuth app's client id and secret and the API URL".into(),
                )),
            },
            s if s >= 500 || s == 429 => Err(ProviderError::Unavailable(format!("HTTP {s}"))),
            s => Err(ProviderError::Protocol(format!(
                "revocation answered HTTP {s}"
            ))),
        }
    }

    fn git_username(&self, identity_login: &str) -> String {
        // GitHub accepts any non-empty username with a token; the login
        // makes the runtime's Git logs readable. Without one (the owner could
        // not be read), GitHub's documented placeholder.
        if identity_login.is_empty() {
            "x-access-token".to_owned()
        } else {
            identity_login.to_owned()
        }
    }
}

/// Token kinds by prefix (GitHub's token formats of 2021).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Classic,
    FineGrained,
    OAuth,
    AppUser,
    Installation,
    Refresh,
    /// No known prefix: older GitHub Enterprise Server tokens.
    Legacy,
}

impl Kind {
    fn describe(self) -> &'static str {
        match self {
            Self::Classic => "classic personal access token",
            Self::FineGrained => "fine-grained personal access token",
            Self::OAuth => "OAuth app token",
            Self::AppUser => "GitHub App user token",
            Self::Installation => "GitHub App installation token",
            Self::Refresh => "refresh token",
            Self::Legacy => "personal access token",
        }
    }
}

fn token_kind(token: &str) -> Kind {
    if token.starts_with("github_pat_") {
        Kind::FineGrained
    } else if token.starts_with("ghp_") {
        Kind::Classic
    } else if token.starts_with("gho_") {
        Kind::OAuth
    } else if token.starts_with("ghu_") {
        Kind::AppUser
    } else if token.starts_with("ghs_") {
        Kind::Installation
    } else if token.starts_with("ghr_") {
        Kind::Refresh
    } else {
        Kind::Legacy
    }
}

/// How GitHub answered an API request, as far as judging a token goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// 2xx.
    Success,
    /// 401: revoked, expired or mistyped.
    Invalid,
    /// Rate limits, 5xx: GitHub could not answer now.
    Unavailable(String),
    /// 403 or 404: the token may not do this (GitHub hides what a token
    /// cannot reach behind 404).
    Denied,
    /// 409 or 422: the request passed the permission check and failed on
    /// its content.
    Rejected,
    /// Anything else: not something the broker understands.
    Other(u16),
}

/// 401 is invalid; 429, and 403 with no remaining rate limit or with a
/// `Retry-After` (secondary rate limit), are rate limits, not refusals.
fn classify(status: StatusCode, headers: &HeaderMap) -> Answer {
    let rate_limited = headers
        .get("x-ratelimit-remaining")
        .is_some_and(|v| v.as_bytes() == b"0")
        || headers.contains_key("retry-after");
    match status.as_u16() {
        200..=299 => Answer::Success,
        401 => Answer::Invalid,
        429 => Answer::Unavailable("rate limited".into()),
        403 if rate_limited => Answer::Unavailable("rate limited".into()),
        403 | 404 => Answer::Denied,
        409 | 422 => Answer::Rejected,
        s if s >= 500 => Answer::Unavailable(format!("HTTP {s}")),
        s => Answer::Other(s),
    }
}

/// Why `GET /user` gave no owner.
enum Failure {
    Provider(ProviderError),
    /// 403: a token that acts as an app (installation tokens).
    Denied,
}

impl Failure {
    fn into_provider_error(self) -> ProviderError {
        match self {
            Self::Provider(e) => e,
            Self::Denied => ProviderError::Protocol("GET /user answered HTTP 403".into()),
        }
    }
}

impl From<ProviderError> for Failure {
    fn from(e: ProviderError) -> Self {
        Self::Provider(e)
    }
}

/// The API URL of `segments` below the API base, each segment escaped.
fn api_url(api: &Url, segments: &[&str]) -> Result<Url, ProviderError> {
    let mut url = api.clone();
    url.path_segments_mut()
        .map_err(|()| ProviderError::Protocol("the API URL cannot have a path".into()))?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

/// Sends one authenticated API request; transport errors are `Unavailable`.
async fn send(
    http: &ProviderClient,
    method: Method,
    url: Url,
    token: &SecretString,
    body: Option<&serde_json::Value>,
) -> Result<reqwest::Response, ProviderError> {
    let mut request = http
        .request(method, url)
        .bearer_auth(token.expose_secret())
        .header("Accept", "application/vnd.github+json")
        .header("X-GitHub-Api-Version", API_VERSION);
    if let Some(body) = body {
        request = request.json(body);
    }
    http.send(request).await
}

struct User {
    login: String,
    scopes: Option<Vec<String>>,
    expires_at: Option<DateTime<Utc>>,
}

/// `GET /user`: the owner, `X-OAuth-Scopes` and the expiry header.
async fn user_call(
    http: &ProviderClient,
    endpoints: &Endpoints,
    token: &SecretString,
) -> Result<User, Failure> {
    let url = api_url(&endpoints.api, &["user"])?;
    let resp = send(http, Method::GET, url, token, None).await?;
    match classify(resp.status(), resp.headers()) {
        Answer::Success => {}
        Answer::Invalid => return Err(ProviderError::InvalidToken.into()),
        Answer::Unavailable(detail) => return Err(ProviderError::Unavailable(detail).into()),
        Answer::Denied if resp.status() == StatusCode::FORBIDDEN => return Err(Failure::Denied),
        _ => {
            return Err(ProviderError::Protocol(format!(
                "GET /user answered HTTP {}",
                resp.status().as_u16()
            ))
            .into());
        }
    }
    let scopes = resp
        .headers()
        .get("x-oauth-scopes")
        .and_then(|v| v.to_str().ok())
        .map(split_scopes);
    let expires_at = resp
        .headers()
        .get("github-authentication-token-expiration")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_expiration);
    #[derive(serde::Deserialize)]
    struct Body {
        login: String,
    }
    let body: Body = resp
        .json()
        .await
        .map_err(|_| ProviderError::Protocol("GET /user returned no login".into()))?;
    Ok(User {
        login: body.login,
        scopes,
        expires_at,
    })
}

/// A repository permission of fine-grained tokens, at the level the product
/// documents require.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Permission {
    AdministrationWrite,
    ContentsWrite,
    MetadataRead,
    WebhooksWrite,
}

impl Permission {
    /// As reported in [`TokenReport::scopes`]: `name:level`.
    fn name(self) -> &'static str {
        match self {
            Self::AdministrationWrite => "administration:write",
            Self::ContentsWrite => "contents:write",
            Self::MetadataRead => "metadata:read",
            Self::WebhooksWrite => "webhooks:write",
        }
    }

    /// As GitHub's token page shows it, so that the user finds the setting.
    fn label(self) -> &'static str {
        match self {
            Self::AdministrationWrite => "Administration: Read and write",
            Self::ContentsWrite => "Contents: Read and write",
            Self::MetadataRead => "Metadata: Read-only",
            Self::WebhooksWrite => "Webhooks: Read and write",
        }
    }

    /// The request that shows this permission on `owner/repo` without
    /// changing anything: a write whose body GitHub refuses only after the
    /// permission check. `None` for Metadata, which listing repositories shows.
    fn probe(self, owner: &str, repo: &str) -> Option<(Method, Vec<String>, serde_json::Value)> {
        let base = ["repos", owner, repo].map(str::to_owned);
        let (method, tail, body): (Method, &[&str], serde_json::Value) = match self {
            Self::ContentsWrite => (Method::POST, &["git", "blobs"], json!({})),
            Self::WebhooksWrite => (Method::POST, &["hooks"], json!({})),
            // an empty name is never a valid rename
            Self::AdministrationWrite => (Method::PATCH, &[], json!({ "name": "" })),
            Self::MetadataRead => return None,
        };
        let mut path = base.to_vec();
        path.extend(tail.iter().map(|s| (*s).to_owned()));
        Some((method, path, body))
    }
}

/// The fine-grained permissions the product documents require, in the order
/// GitHub's token page lists them.
fn required_permissions(purpose: TokenPurpose) -> &'static [Permission] {
    match purpose {
        TokenPurpose::User => &[Permission::ContentsWrite, Permission::MetadataRead],
        TokenPurpose::Runtime => &[
            Permission::AdministrationWrite,
            Permission::ContentsWrite,
            Permission::MetadataRead,
            Permission::WebhooksWrite,
        ],
    }
}

/// Why probing refused a token.
#[derive(Debug)]
enum ProbeError {
    Provider(ProviderError),
    NoRepositories,
    Missing(Vec<Permission>),
    /// A probe answered 2xx: `METHOD /path` (never the token).
    Accepted(String),
}

impl From<ProviderError> for ProbeError {
    fn from(e: ProviderError) -> Self {
        Self::Provider(e)
    }
}

impl ProbeError {
    fn into_pat_error(self, provider: &'static str, help: &str) -> PatError {
        match self {
            Self::Provider(e) => PatError::from_provider(provider, e, help),
            Self::NoRepositories => PatError::WrongKind {
                reason: format!(
                    "This token has access to no repositories; choose All repositories or select the repositories your runtime uses. {help}"
                ),
            },
            Self::Accepted(request) => PatError::ProbeAccepted { provider, request },
            Self::Missing(missing) => PatError::MissingScopes {
                what: "the required permissions",
                missing: missing.iter().map(|p| p.label().to_owned()).collect(),
                help: help.to_owned(),
            },
        }
    }
}

/// An answer of a probe that is no verdict on the permission.
fn not_a_verdict(answer: Answer, what: &str) -> ProviderError {
    match answer {
        Answer::Invalid => ProviderError::InvalidToken,
        Answer::Unavailable(detail) => ProviderError::Unavailable(detail),
        Answer::Other(status) => ProviderError::Protocol(format!("{what} answered HTTP {status}")),
        // callers handle the verdicts themselves
        Answer::Success | Answer::Rejected | Answer::Denied => {
            ProviderError::Protocol(format!("{what} answered unexpectedly"))
        }
    }
}

/// Finds the permissions of a fine-grained (or GitHub App user) token for
/// `purpose` as the module documentation describes; the granted ones as
/// `name:level`, or every missing one.
async fn probe_permissions(
    http: &ProviderClient,
    endpoints: &Endpoints,
    token: &SecretString,
    purpose: TokenPurpose,
) -> Result<Vec<String>, ProbeError> {
    let mut url = api_url(&endpoints.api, &["user", "repos"])?;
    url.set_query(Some("per_page=1"));
    let resp = send(http, Method::GET, url, token, None).await?;
    match classify(resp.status(), resp.headers()) {
        Answer::Success => {}
        Answer::Denied => return Err(ProbeError::Missing(vec![Permission::MetadataRead])),
        other => return Err(not_a_verdict(other, "GET /user/repos").into()),
    }
    #[derive(serde::Deserialize)]
    struct Owner {
        login: String,
    }
    #[derive(serde::Deserialize)]
    struct Repo {
        name: String,
        owner: Owner,
    }
    let repos: Vec<Repo> = resp
        .json()
        .await
        .map_err(|_| ProviderError::Protocol("GET /user/repos returned no list".into()))?;
    let Some(repo) = repos.into_iter().next() else {
        return Err(ProbeError::NoRepositories);
    };
    let mut granted = Vec::new();
    let mut missing = Vec::new();
    for &permission in required_permissions(purpose) {
        let Some((method, path, body)) = permission.probe(&repo.owner.login, &repo.name) else {
            // shown by the listing above
            granted.push(permission);
            continue;
        };
        let what = format!("{method} /{}", path.join("/"));
        let segments: Vec<&str> = path.iter().map(String::as_str).collect();
        let url = api_url(&endpoints.api, &segments)?;
        let resp = send(http, method, url, token, Some(&body)).await?;
        let answer = classify(resp.status(), resp.headers());
        tracing::debug!(
            permission = permission.name(),
            ?answer,
            "github permission probe"
        );
        match answer {
            Answer::Rejected => granted.push(permission),
            // GitHub no longer refused the deliberately invalid body: the
            // request may have written something, and proves nothing
            Answer::Success => {
                tracing::error!(
                    request = %what,
                    permission = permission.name(),
                    "GitHub accepted a permission probe that it must refuse; something may have been created or changed; token refused"
                );
                return Err(ProbeError::Accepted(what));
            }
            Answer::Denied => missing.push(permission),
            other => return Err(not_a_verdict(other, &what).into()),
        }
    }
    if !missing.is_empty() {
        return Err(ProbeError::Missing(missing));
    }
    Ok(granted.iter().map(|p| p.name().to_owned()).collect())
}

/// `2026-12-01 10:00:00 UTC` (also accepts a numeric offset).
fn parse_expiration(v: &str) -> Option<DateTime<Utc>> {
    let v = v.trim();
    if let Some(naive) = v.strip_suffix(" UTC") {
        return NaiveDateTime::parse_from_str(naive, "%Y-%m-%d %H:%M:%S")
            .ok()
            .map(|n| n.and_utc());
    }
    DateTime::parse_from_str(v, "%Y-%m-%d %H:%M:%S %z")
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::providers::provider;

    #[test]
    fn endpoints_for_github_com_and_ghes() {
        let e = GITHUB.endpoints(None, None).unwrap();
        assert_eq!(
            e.authorize.as_str(),
            "https://github.com/login/oauth/authorize"
        );
        assert_eq!(
            e.token.as_str(),
            "https://github.com/login/oauth/access_token"
        );
        assert_eq!(e.api.as_str(), "https://api.github.com/");
        let ghes = Url::parse("https://git.example.com").unwrap();
        let e = GITHUB.endpoints(Some(&ghes), None).unwrap();
        assert_eq!(e.api.as_str(), "https://git.example.com/api/v3");
        assert!(
            GITHUB
                .endpoints(Some(&Url::parse("https://x.com/sub").unwrap()), None)
                .is_err()
        );
    }

    #[test]
    fn enterprise_requires_base_url() {
        let err = GITHUB_ENTERPRISE.endpoints(None, None).unwrap_err();
        assert!(err.contains("base_url"), "{err}");
        let ghes = Url::parse("https://git.example.com").unwrap();
        let e = GITHUB_ENTERPRISE.endpoints(Some(&ghes), None).unwrap();
        assert_eq!(
            e.authorize.as_str(),
            "https://git.example.com/login/oauth/authorize"
        );
        assert_eq!(
            e.token.as_str(),
            "https://git.example.com/login/oauth/access_token"
        );
        assert_eq!(e.api.as_str(), "https://git.example.com/api/v3");
        // a GHES API elsewhere (a proxy) can still be named
        let api = Url::parse("https://api.git.example.com/").unwrap();
        let e = GITHUB_ENTERPRISE
            .endpoints(Some(&ghes), Some(&api))
            .unwrap();
        assert_eq!(e.api, api);
        assert!(
            GITHUB_ENTERPRISE
                .endpoints(Some(&Url::parse("https://x.com/sub").unwrap()), None)
                .is_err()
        );
    }

    #[test]
    fn kinds_names_and_serde() {
        for (kind, name, display) in [
            (ProviderKind::Github, "github", "GitHub"),
            (
                ProviderKind::GithubEnterprise,
                "github_enterprise",
                "GitHub Enterprise",
            ),
        ] {
            assert_eq!(kind.as_str(), name);
            assert_eq!(serde_json::to_value(kind).unwrap(), json!(name));
            assert_eq!(
                serde_json::from_value::<ProviderKind>(json!(name)).unwrap(),
                kind
            );
            let p = provider(kind);
            assert_eq!(p.kind(), kind);
            assert_eq!(p.display_name(), display);
            // same scopes and help for both: same API
            assert_eq!(p.required_scopes(TokenPurpose::User), &["repo"]);
            assert_eq!(
                p.required_scopes(TokenPurpose::Runtime),
                &["repo", "admin:repo_hook"]
            );
        }
    }

    #[test]
    fn expiration_header() {
        let t = parse_expiration("2026-12-01 10:00:00 UTC").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-12-01T10:00:00+00:00");
        let t = parse_expiration("2026-12-01 10:00:00 +0200").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-12-01T08:00:00+00:00");
        assert!(parse_expiration("soon").is_none());
    }

    #[test]
    fn kinds_by_prefix() {
        assert_eq!(token_kind("ghp_x"), Kind::Classic);
        assert_eq!(token_kind("github_pat_x"), Kind::FineGrained);
        assert_eq!(token_kind("gho_x"), Kind::OAuth);
        assert_eq!(token_kind("ghu_x"), Kind::AppUser);
        assert_eq!(token_kind("ghs_x"), Kind::Installation);
        assert_eq!(token_kind("ghr_x"), Kind::Refresh);
        assert_eq!(token_kind("0123abcd"), Kind::Legacy);
    }

    #[test]
    fn comma_separated_scopes() {
        assert_eq!(GITHUB.parse_scopes("repo,gist"), vec!["repo", "gist"]);
        assert_eq!(
            GITHUB.parse_scopes("repo, admin:repo_hook"),
            vec!["repo", "admin:repo_hook"]
        );
        assert!(GITHUB.parse_scopes("").is_empty());
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    /// One row of the implication table: `scope` covers each of `implied`,
    /// none of them covers `scope`, and the row is exactly that.
    fn row(scope: &str, implied: &[&str]) {
        for p in [&GITHUB, &GITHUB_ENTERPRISE] {
            assert_eq!(p.implied_by(scope), implied, "row {scope}");
            assert!(
                missing_scopes(p, &s(&[scope]), &s(implied)).is_empty(),
                "{scope} covers {implied:?}"
            );
            for narrower in implied {
                assert_eq!(
                    missing_scopes(p, &s(&[narrower]), &s(&[scope])),
                    s(&[scope]),
                    "{narrower} does not cover {scope}"
                );
            }
        }
    }

    #[test]
    fn implication_repo() {
        row(
            "repo",
            &[
                "repo:status",
                "repo_deployment",
                "public_repo",
                "repo:invite",
                "security_events",
            ],
        );
    }

    #[test]
    fn implication_repo_hook() {
        row("admin:repo_hook", &["write:repo_hook", "read:repo_hook"]);
        row("write:repo_hook", &["read:repo_hook"]);
    }

    #[test]
    fn implication_org() {
        row("admin:org", &["write:org", "read:org"]);
        row("write:org", &["read:org"]);
    }

    #[test]
    fn implication_public_key() {
        row("admin:public_key", &["write:public_key", "read:public_key"]);
        row("write:public_key", &["read:public_key"]);
    }

    #[test]
    fn implication_user() {
        row("user", &["read:user", "user:email", "user:follow"]);
    }

    #[test]
    fn implication_packages() {
        row("write:packages", &["read:packages"]);
    }

    #[test]
    fn implication_gpg_key() {
        row("admin:gpg_key", &["write:gpg_key", "read:gpg_key"]);
        row("write:gpg_key", &["read:gpg_key"]);
    }

    #[test]
    fn implication_discussion_and_project() {
        row("write:discussion", &["read:discussion"]);
        row("project", &["read:project"]);
    }

    #[test]
    fn implication_leaves_and_unknown_scopes_imply_nothing() {
        for leaf in [
            "read:repo_hook",
            "public_repo",
            "gist",
            "workflow",
            "delete_repo",
            "admin:repo_hook:typo",
        ] {
            assert!(GITHUB.implied_by(leaf).is_empty(), "{leaf}");
        }
        // neither required scope implies the other
        assert_eq!(
            missing_scopes(&GITHUB, &s(&["admin:repo_hook"]), &s(&["repo"])),
            s(&["repo"])
        );
        assert_eq!(
            missing_scopes(&GITHUB, &s(&["repo"]), &s(&["admin:repo_hook"])),
            s(&["admin:repo_hook"])
        );
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn probe_answers() {
        let none = HeaderMap::new();
        let st = |c: u16| StatusCode::from_u16(c).unwrap();
        assert_eq!(classify(st(200), &none), Answer::Success);
        assert_eq!(classify(st(201), &none), Answer::Success);
        assert_eq!(classify(st(422), &none), Answer::Rejected);
        assert_eq!(classify(st(409), &none), Answer::Rejected);
        assert_eq!(classify(st(401), &none), Answer::Invalid);
        let accepted = headers(&[("x-accepted-github-permissions", "contents=write")]);
        assert_eq!(classify(st(403), &accepted), Answer::Denied);
        assert_eq!(classify(st(404), &none), Answer::Denied);
        // rate limits are never a refusal
        let exhausted = headers(&[("x-ratelimit-remaining", "0")]);
        assert!(matches!(
            classify(st(403), &exhausted),
            Answer::Unavailable(_)
        ));
        let secondary = headers(&[("retry-after", "60")]);
        assert!(matches!(
            classify(st(403), &secondary),
            Answer::Unavailable(_)
        ));
        assert!(matches!(classify(st(429), &none), Answer::Unavailable(_)));
        assert!(matches!(classify(st(502), &none), Answer::Unavailable(_)));
        assert_eq!(classify(st(400), &none), Answer::Other(400));
    }

    #[test]
    fn probes_cannot_change_anything() {
        let probe = |p: Permission| p.probe("acme", "demo");
        let (m, path, body) = probe(Permission::ContentsWrite).unwrap();
        assert_eq!(
            (m, path.join("/")),
            (Method::POST, "repos/acme/demo/git/blobs".into())
        );
        assert_eq!(body, json!({}));
        let (m, path, body) = probe(Permission::WebhooksWrite).unwrap();
        assert_eq!(
            (m, path.join("/")),
            (Method::POST, "repos/acme/demo/hooks".into())
        );
        assert_eq!(body, json!({}));
        let (m, path, body) = probe(Permission::AdministrationWrite).unwrap();
        assert_eq!(
            (m, path.join("/")),
            (Method::PATCH, "repos/acme/demo".into())
        );
        assert_eq!(body, json!({ "name": "" }));
        assert!(probe(Permission::MetadataRead).is_none());
    }

    #[test]
    fn permissions_per_purpose() {
        let names = |p: TokenPurpose| -> Vec<&str> {
            required_permissions(p).iter().map(|x| x.name()).collect()
        };
        assert_eq!(
            names(TokenPurpose::User),
            ["contents:write", "metadata:read"]
        );
        assert_eq!(
            names(TokenPurpose::Runtime),
            [
                "administration:write",
                "contents:write",
                "metadata:read",
                "webhooks:write"
            ]
        );
    }

    #[test]
    fn api_urls_escape_segments() {
        let api = Url::parse("https://api.github.com/").unwrap();
        assert_eq!(
            api_url(&api, &["repos", "a", "b c"]).unwrap().as_str(),
            "https://api.github.com/repos/a/b%20c"
        );
        let ghes = Url::parse("https://git.example.com/api/v3").unwrap();
        assert_eq!(
            api_url(&ghes, &["user", "repos"]).unwrap().as_str(),
            "https://git.example.com/api/v3/user/repos"
        );
    }

    #[test]
    fn error_with_200_becomes_400() {
        let body = br#"{"error":"bad_verification_code","error_description":"x"}"#.to_vec();
        let resp = http::Response::builder().status(200).body(body).unwrap();
        assert_eq!(GITHUB.normalize_token_response(resp).status(), 400);
        let ok = br#"{"access_token":"gho_x","token_type":"bearer","scope":"repo"}"#.to_vec();
        let resp = http::Response::builder().status(200).body(ok).unwrap();
        assert_eq!(GITHUB.normalize_token_response(resp).status(), 200);
    }
}
