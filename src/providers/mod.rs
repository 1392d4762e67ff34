//! What gitbroker knows about each Git provider. One module per provider
//! holds all of its knowledge (endpoints, scope names and implications,
//! response quirks, identity, revocation, Git username); the rest of the
//! broker talks to providers only through [`GitProvider`].

mod bitbucket_cloud;
mod bitbucket_dc;
mod gitea;
mod github;
pub mod github_app;
pub mod github_app_user;
mod gitlab;
pub mod http;
pub mod token_endpoint;

pub use http::ProviderClient;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use oauth2::HttpResponse;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use url::Url;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// github.com (`base_url` omitted) or GitHub Enterprise Server (`base_url` set).
    Github,
    /// GitHub Enterprise Server: `base_url` required, API under `/api/v3`.
    GithubEnterprise,
    /// gitlab.com (`base_url` omitted or set, e.g. for GitLab Dedicated).
    Gitlab,
    /// A self-managed GitLab instance: `base_url` required.
    GitlabSelfManaged,
    /// bitbucket.org (`base_url` omitted) or a stand-in serving the same paths.
    BitbucketCloud,
    /// Bitbucket Data Center or Server (`base_url` required).
    BitbucketDataCenter,
    /// A Gitea or Forgejo instance (`base_url` required); Forgejo serves
    /// the same endpoints (`forgejo` is accepted as another name).
    #[serde(alias = "forgejo")]
    Gitea,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Github => "github",
            Self::GithubEnterprise => "github_enterprise",
            Self::Gitlab => "gitlab",
            Self::GitlabSelfManaged => "gitlab_self_managed",
            Self::BitbucketCloud => "bitbucket_cloud",
            Self::BitbucketDataCenter => "bitbucket_data_center",
            Self::Gitea => "gitea",
        }
    }
}

/// What kind of client an `[[oauth_apps]]` entry is at its provider.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AppKind {
    /// An OAuth app (GitHub), application (GitLab) or consumer (Bitbucket):
    /// tokens carry the scopes the app asks for.
    #[default]
    OauthApp,
    /// A GitHub App that users authorize (GitHub and GitHub Enterprise
    /// only): expiring `ghu_` user tokens with rotating refresh tokens, no
    /// OAuth scopes (the App's permissions instead), reaching only where
    /// the App is installed.
    GithubApp,
}

impl AppKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OauthApp => "oauth_app",
            Self::GithubApp => "github_app",
        }
    }

    pub fn is_default(&self) -> bool {
        *self == Self::OauthApp
    }
}

/// The URLs of one OAuth app at its provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub authorize: Url,
    pub token: Url,
    pub api: Url,
}

/// Who a token belongs to, as the provider says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub login: String,
    /// Scopes the provider reports for the token, when it reports them.
    pub scopes: Option<Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider says the token is not valid (revoked, expired, unknown).
    #[error("the provider rejected the token")]
    InvalidToken,
    /// Temporary: network, timeout, 5xx, rate limit. Never a verdict on the token.
    #[error("the provider could not be reached or is failing: {0}")]
    Unavailable(String),
    /// The provider answered something we do not understand.
    #[error("unexpected answer from the provider: {0}")]
    Protocol(String),
}

impl ProviderError {
    /// Classifies a transport error of the provider HTTP client.
    pub fn from_transport(e: &reqwest::Error) -> Self {
        if e.is_timeout() {
            Self::Unavailable("timed out".into())
        } else if e.is_connect() {
            Self::Unavailable("connection failed".into())
        } else {
            Self::Unavailable("request failed".into())
        }
    }
}

/// What revoking a token at its provider achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Revocation {
    /// The provider revoked it.
    Revoked,
    /// The provider says it was no longer valid: the goal is reached.
    AlreadyInvalid,
    /// The provider documents no way to revoke it (Bitbucket): the user
    /// removes the authorization at the provider.
    Unsupported,
}

/// What a token is for: the two scope tables of the product documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenPurpose {
    /// A Git user token: one per (user, runtime), the user's own Git actions.
    User,
    /// The Git Runtime token: one per runtime, clone/pull and webhooks.
    Runtime,
}

/// A pasted personal access token and what the form sent with it, in the
/// one normal form every path uses: trimmed, empty fields absent. Built only
/// by [`PatInput::new`], so what is validated is exactly what is stored.
// a private field, not #[non_exhaustive]: that would still let this crate
// build it unnormalized
#[allow(clippy::manual_non_exhaustive)]
pub struct PatInput {
    pub token: SecretString,
    /// Bitbucket: the Bitbucket username (Git over HTTPS, app passwords).
    pub username: Option<String>,
    /// Bitbucket Cloud API tokens: the Atlassian account email (REST API).
    pub email: Option<String>,
    _normalized: (),
}

impl PatInput {
    pub fn new(token: &str, username: Option<&str>, email: Option<&str>) -> Self {
        let field = |v: Option<&str>| {
            v.map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        Self {
            token: SecretString::from(token.trim().to_owned()),
            username: field(username),
            email: field(email),
            _normalized: (),
        }
    }

    pub fn is_empty(&self) -> bool {
        secrecy::ExposeSecret::expose_secret(&self.token).is_empty()
    }

    /// Refuses what no provider issues, before anything is sent: tokens are
    /// printable ASCII without spaces (anything else cannot even go into an
    /// HTTP header), usernames and emails have no control characters.
    pub fn check(&self) -> Result<(), PatError> {
        let token = secrecy::ExposeSecret::expose_secret(&self.token);
        if token.len() > 1024 || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(PatError::BadInput(
                "that is not a token: tokens are at most 1024 printable ASCII characters, without spaces".into(),
            ));
        }
        for (name, value) in [("username", &self.username), ("email", &self.email)] {
            if let Some(v) = value
                && (v.len() > 256 || v.chars().any(char::is_control))
            {
                return Err(PatError::BadInput(format!(
                    "the {name} must be at most 256 characters, without control characters"
                )));
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for PatInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatInput")
            .field("token", &"[redacted]")
            .field("username", &self.username)
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

/// How a runtime presents a token to Git over HTTPS, as the provider
/// requires it for that kind of token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "scheme", rename_all = "snake_case")]
pub enum GitAuth {
    /// HTTP Basic with this username and the token as the password.
    Basic { username: String },
    /// `Authorization: Bearer <token>`, with no username. The only form
    /// Bitbucket Data Center takes for project and repository tokens.
    Bearer,
}

impl GitAuth {
    pub fn basic(username: impl Into<String>) -> Self {
        Self::Basic {
            username: username.into(),
        }
    }

    /// The username to use, for Basic.
    pub fn username(&self) -> Option<&str> {
        match self {
            Self::Basic { username } => Some(username),
            Self::Bearer => None,
        }
    }
}

/// What the provider said about a token that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenReport {
    /// The owner's login at the provider.
    pub login: String,
    /// The username a runtime uses with this token for Git over HTTPS.
    pub git_username: String,
    /// How a runtime presents it to Git.
    pub git_auth: GitAuth,
    /// Human-readable kind, e.g. "classic personal access token".
    pub kind: String,
    /// Granted scopes, or permissions written `name:level` for tokens that
    /// have permissions instead of scopes.
    pub scopes: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Why a pasted token was refused. Every message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum PatError {
    #[error("{provider} does not accept this token: it is revoked, expired or mistyped. {help}")]
    Invalid {
        provider: &'static str,
        help: String,
    },
    #[error("This token expired on {at}. {help}")]
    Expired { at: String, help: String },
    #[error("This token was revoked at {provider}. {help}")]
    Revoked {
        provider: &'static str,
        help: String,
    },
    #[error("This token lacks {what}: {}. {help}", .missing.join(", "))]
    MissingScopes {
        /// "the required scopes" or "the required permissions"
        what: &'static str,
        missing: Vec<String>,
        help: String,
    },
    #[error("{reason}")]
    WrongKind { reason: String },
    #[error("{0}")]
    BadInput(String),
    /// A request sent only to learn a permission, which the provider should
    /// have refused, succeeded: it may have changed something, and the
    /// answer tells nothing about the permission. Never counted as granted.
    #[error(
        "{provider} accepted a request gitbroker sends only to check a permission ({request}); it may have created or changed something, so the token's permissions cannot be checked safely and it was not stored. Tell your gitbroker administrator, or use a classic token."
    )]
    ProbeAccepted {
        provider: &'static str,
        request: String,
    },
    /// Temporary: never a verdict on the token.
    #[error(
        "{provider} could not validate the token right now ({detail}). Nothing was changed; try again in a moment."
    )]
    Unavailable {
        provider: &'static str,
        detail: String,
    },
}

impl PatError {
    /// Maps an error of a provider call made while validating.
    pub fn from_provider(provider: &'static str, e: ProviderError, help: &str) -> Self {
        match e {
            ProviderError::InvalidToken => Self::Invalid {
                provider,
                help: help.to_owned(),
            },
            ProviderError::Unavailable(detail) => Self::Unavailable { provider, detail },
            ProviderError::Protocol(detail) => Self::Unavailable { provider, detail },
        }
    }
}

/// A personal access token the provider issued in place of the one that
/// asked to be rotated (which the provider revoked).
pub struct RotatedPat {
    pub token: SecretString,
    pub expires_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for RotatedPat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotatedPat")
            .field("token", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Why a token could not rotate itself. Only `Unknown` leaves open whether
/// the provider rotated it: the other answers left the old token as it was
/// (or say it is dead).
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// The provider has no way for a token to rotate itself.
    #[error("{0}")]
    Unsupported(String),
    /// The provider rejected the token (revoked or expired): rotating an
    /// already rotated GitLab token lands here, and kills its successor.
    #[error("the provider rejected the token")]
    InvalidToken,
    /// Refused for good (a missing scope, a date the instance does not
    /// allow): the old token is untouched.
    #[error("{0}")]
    Refused(String),
    /// No usable answer (network, timeout, 5xx, 429, an unreadable 2xx):
    /// the provider may or may not have rotated the token.
    #[error("{0}")]
    Unknown(String),
}

#[async_trait]
pub trait GitProvider: Send + Sync + 'static {
    fn kind(&self) -> ProviderKind;
    /// Human name, as in "Authorize Access to GitHub".
    fn display_name(&self) -> &'static str;
    fn endpoints(&self, base_url: Option<&Url>, api_url: Option<&Url>)
    -> Result<Endpoints, String>;
    /// Splits a scope string as this provider writes it.
    fn parse_scopes(&self, raw: &str) -> Vec<String>;
    /// Scopes that `scope` covers (not including itself).
    fn implied_by(&self, scope: &str) -> &'static [&'static str];
    /// The scopes the product documents require of a token for `purpose`
    /// (classic scopes; tokens with permissions are checked by the provider).
    fn required_scopes(&self, purpose: TokenPurpose) -> &'static [&'static str];
    /// How to create a token for `purpose` at this provider, step by step.
    fn token_help(&self, purpose: TokenPurpose) -> &'static str;
    /// Whether the personal-access-token form must ask for a username.
    fn needs_username(&self) -> bool {
        false
    }
    /// Whether the form asks for an account email (Bitbucket Cloud API tokens).
    fn needs_email(&self) -> bool {
        false
    }
    /// Whether the authorize request carries scopes (Bitbucket Cloud sets
    /// them on the OAuth consumer instead).
    fn oauth_sends_scopes(&self) -> bool {
        true
    }
    /// How the client authenticates at the token endpoint.
    fn oauth_auth_type(&self) -> oauth2::AuthType {
        oauth2::AuthType::RequestBody
    }
    /// Asks the provider whether a pasted token is valid for `purpose`:
    /// owner, kind, scopes or permissions, expiry.
    async fn validate_pat(
        &self,
        http: &ProviderClient,
        endpoints: &Endpoints,
        input: &PatInput,
        purpose: TokenPurpose,
        now: DateTime<Utc>,
    ) -> Result<TokenReport, PatError>;
    /// Rewrites a token-endpoint response so that `oauth2` parses it right
    /// (for example GitHub's errors sent with HTTP 200).
    fn normalize_token_response(&self, response: HttpResponse) -> HttpResponse {
        response
    }
    /// Reads the token's owner and, where the provider reports them, its scopes.
    async fn identify(
        &self,
        http: &ProviderClient,
        endpoints: &Endpoints,
        token: &SecretString,
    ) -> Result<Identity, ProviderError>;
    /// Revokes an OAuth token at the provider and says what really
    /// happened; an error when it could not (temporary, or refused).
    /// By default the provider documents no way to revoke a token from
    /// here (Bitbucket, Gitea): the user removes the grant at the provider.
    async fn revoke(
        &self,
        _http: &ProviderClient,
        _endpoints: &Endpoints,
        _client_id: &str,
        _client_secret: &SecretString,
        _token: &SecretString,
    ) -> Result<Revocation, ProviderError> {
        Ok(Revocation::Unsupported)
    }
    /// Whether a personal access token of this provider can rotate itself
    /// (GitLab's `POST /personal_access_tokens/self/rotate`).
    fn rotates_pats(&self) -> bool {
        false
    }
    /// Rotates a personal access token with itself: the provider issues a
    /// new one expiring on `expires_on` and revokes `token`. Never retried
    /// by the caller with the same `token` (GitLab then revokes the new one).
    async fn rotate_pat(
        &self,
        _http: &ProviderClient,
        _endpoints: &Endpoints,
        _token: &SecretString,
        _expires_on: chrono::NaiveDate,
    ) -> Result<RotatedPat, RotateError> {
        Err(RotateError::Unsupported(format!(
            "{} tokens cannot rotate themselves",
            self.display_name()
        )))
    }
    /// The username a runtime should use with this token for Git over HTTPS.
    fn git_username(&self, identity_login: &str) -> String;
    /// How a runtime presents an OAuth token of this provider to Git.
    fn oauth_git_auth(&self, identity_login: &str) -> GitAuth {
        GitAuth::basic(self.git_username(identity_login))
    }
}

pub fn provider(kind: ProviderKind) -> &'static dyn GitProvider {
    match kind {
        ProviderKind::Github => &github::GITHUB,
        ProviderKind::GithubEnterprise => &github::GITHUB_ENTERPRISE,
        ProviderKind::Gitlab => &gitlab::GITLAB_COM,
        ProviderKind::GitlabSelfManaged => &gitlab::GITLAB_SELF_MANAGED,
        ProviderKind::BitbucketCloud => &bitbucket_cloud::BitbucketCloud,
        ProviderKind::BitbucketDataCenter => &bitbucket_dc::BitbucketDataCenter,
        ProviderKind::Gitea => &gitea::GITEA,
    }
}

/// `base` with `path` appended (no double slash), as an endpoint URL.
pub(crate) fn join(base: &Url, path: &str) -> Result<Url, String> {
    let mut s = base.as_str().trim_end_matches('/').to_owned();
    s.push_str(path);
    Url::parse(&s).map_err(|e| format!("cannot build endpoint URL: {e}"))
}

/// The endpoints of an instance served under `base` (which may carry a
/// path, for installs under a relative URL, but no query or fragment:
/// those cannot be joined): `paths` are the authorize, token and API paths;
/// an explicit `api_url` wins over the last. `refusal` says why `base`
/// is refused.
pub(crate) fn endpoints_under(
    base: &Url,
    api_url: Option<&Url>,
    [authorize, token, api]: [&str; 3],
    refusal: &str,
) -> Result<Endpoints, String> {
    if base.query().is_some() || base.fragment().is_some() {
        return Err(refusal.to_owned());
    }
    Ok(Endpoints {
        authorize: join(base, authorize)?,
        token: join(base, token)?,
        api: match api_url {
            Some(api) => api.clone(),
            None => join(base, api)?,
        },
    })
}

/// Scopes written with commas or white space (`repo,gist`, `repo, gist`,
/// `a b`), each once, in the order written.
pub(crate) fn split_scopes(raw: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in raw.split([',', ' ', '\t', '\n']).filter(|s| !s.is_empty()) {
        if !out.iter().any(|have| have == s) {
            out.push(s.to_owned());
        }
    }
    out
}

/// `required` as owned strings.
pub fn owned(scopes: &[&str]) -> Vec<String> {
    scopes.iter().map(|s| (*s).to_owned()).collect()
}

/// The required scopes that `granted` does not cover, through the
/// provider's implication table.
pub fn missing_scopes(
    provider: &dyn GitProvider,
    granted: &[String],
    required: &[String],
) -> Vec<String> {
    let mut covered: BTreeSet<&str> = BTreeSet::new();
    for g in granted {
        covered.insert(g.as_str());
        covered.extend(provider.implied_by(g));
    }
    required
        .iter()
        .filter(|r| !covered.contains(r.as_str()))
        .cloned()
        .collect()
}

/// Checks an OAuth app's provider-specific settings; `Err((field, message))`.
/// The one check of the file loader and the admin API.
pub fn validate_app(
    kind: ProviderKind,
    app_kind: AppKind,
    app_slug: Option<&str>,
    base_url: Option<&Url>,
    api_url: Option<&Url>,
    scopes: &[String],
) -> Result<(), (&'static str, String)> {
    let p = provider(kind);
    p.endpoints(base_url, api_url)
        .map_err(|m| ("base_url", m))?;
    match app_kind {
        AppKind::GithubApp => {
            if !matches!(kind, ProviderKind::Github | ProviderKind::GithubEnterprise) {
                return Err((
                    "kind",
                    format!(
                        "`github_app` is for provider github or github_enterprise, not {}",
                        kind.as_str()
                    ),
                ));
            }
            // GitHub App user tokens have no OAuth scopes: permissions are
            // set on the App, so asking for scopes would only mislead.
            if !scopes.is_empty() {
                return Err((
                    "scopes",
                    "must be empty (or omitted) for a GitHub App: its user tokens carry the App's permissions, not OAuth scopes".into(),
                ));
            }
            let slug_ok = app_slug.is_some_and(|s| {
                !s.is_empty()
                    && s.len() <= 100
                    && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
            if !slug_ok {
                return Err((
                    "app_slug",
                    "is required for a GitHub App: the name in its public page URL (https://github.com/apps/<app_slug>), letters, digits and `-`".into(),
                ));
            }
            Ok(())
        }
        AppKind::OauthApp => {
            if app_slug.is_some() {
                return Err(("app_slug", "is only for kind = \"github_app\"".into()));
            }
            if scopes.is_empty() {
                return Err(("scopes", "must list the scopes to request".into()));
            }
            let required = owned(p.required_scopes(TokenPurpose::User));
            let missing = missing_scopes(p, scopes, &required);
            if !missing.is_empty() {
                return Err((
                    "scopes",
                    format!(
                        "must cover the Git user token scopes of {} ({}); missing: {}",
                        p.display_name(),
                        required.join(", "),
                        missing.join(", ")
                    ),
                ));
            }
            Ok(())
        }
    }
}

/// The provider HTTP client: no redirects (SSRF), connect and total
/// timeouts, rate-limit pacing per host.
pub fn http_client(
    connect_timeout: std::time::Duration,
    timeout: std::time::Duration,
) -> Result<ProviderClient, reqwest::Error> {
    ProviderClient::new(connect_timeout, timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_no_provider_issues_are_refused_before_sending() {
        assert!(
            PatInput::new("ghp_abc123", Some("alice"), None)
                .check()
                .is_ok()
        );
        for bad in ["ghp_\u{3e5f}", "gh p", "a\u{7f}b", &"x".repeat(1025)] {
            let refused = PatInput::new(bad, None, None).check();
            assert!(matches!(refused, Err(PatError::BadInput(_))), "{bad:?}");
            if let Err(e) = refused {
                assert!(!e.to_string().contains(bad), "the refusal quotes no token");
            }
        }
        assert!(PatInput::new("tok", Some("al\nice"), None).check().is_err());
        assert!(
            PatInput::new("tok", None, Some("\u{3e5f}@example.com"))
                .check()
                .is_ok()
        );
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn implication_covers_narrower_scopes() {
        let gh = provider(ProviderKind::Github);
        assert!(missing_scopes(gh, &s(&["repo"]), &s(&["public_repo", "repo:status"])).is_empty());
        assert_eq!(
            missing_scopes(gh, &s(&["public_repo"]), &s(&["repo"])),
            s(&["repo"])
        );
        assert!(missing_scopes(gh, &s(&["admin:repo_hook"]), &s(&["read:repo_hook"])).is_empty());
        assert_eq!(
            missing_scopes(gh, &s(&["repo"]), &s(&["repo", "admin:repo_hook"])),
            s(&["admin:repo_hook"])
        );
    }
}
