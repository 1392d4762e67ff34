//! GitLab, on gitlab.com and self-managed: the same paths on every host
//! (`/oauth/*`, API under `/api/v4`), space-separated scopes, RFC 6749
//! token-endpoint errors, 2-hour OAuth tokens with rotating refresh tokens,
//! RFC 7009 revocation, and a PAT endpoint that describes the token itself.
//!
//! Fine-grained personal access tokens (GA in GitLab 19.2) answer
//! `granular_scopes` instead of `scopes` in `personal_access_tokens/self`:
//! each entry an `access` boundary (`all_memberships`, `personal_projects`,
//! `selected_memberships` with one `project_id`/`group_id`, `user`,
//! `instance`) and the `permissions` it grants there. They are checked
//! against [`required_permissions`], a permission counting only under a
//! boundary it applies to. PATs rotate themselves with
//! `POST /personal_access_tokens/self/rotate`.

use super::{
    Endpoints, GitAuth, GitProvider, Identity, PatError, PatInput, ProviderClient, ProviderError,
    ProviderKind, Revocation, RotateError, RotatedPat, TokenPurpose, TokenReport, join,
    missing_scopes, owned,
};
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

/// GitLab for one [`ProviderKind`]: the two kinds differ only in whether
/// the host has a default.
pub struct GitLab {
    kind: ProviderKind,
}

pub static GITLAB_COM: GitLab = GitLab {
    kind: ProviderKind::Gitlab,
};

pub static GITLAB_SELF_MANAGED: GitLab = GitLab {
    kind: ProviderKind::GitlabSelfManaged,
};

const DISPLAY_NAME: &str = "GitLab";
const GITLAB_COM_URL: &str = "https://gitlab.com";

/// Scope names the product documents misspell, and GitLab's names for them.
/// Applied wherever scopes are parsed, so an admin who copied the documents
/// still requests a scope GitLab knows (GitLab refuses unknown scopes).
const SCOPE_ALIASES: &[(&str, &str)] = &[("api_read", "read_api")];

/// Prefixes of GitLab tokens that are not user access tokens, and what they
/// are; pasting one is a mistake worth naming precisely.
const OTHER_TOKEN_PREFIXES: &[(&str, &str)] = &[
    ("gloas-", "an OAuth application secret"),
    ("gldt-", "a deploy token"),
    ("glrt-", "a runner authentication token"),
    ("glrtr-", "a runner registration token"),
    ("glptt-", "a pipeline trigger token"),
    ("glft-", "a feed token"),
    ("glcbt-", "a CI/CD job token"),
    ("glimt-", "an incoming email token"),
    ("glagent-", "a Kubernetes agent token"),
    ("glsoat-", "a SCIM token"),
];

/// Where a granular scope applies, as far as gitbroker's needs go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Boundary {
    /// Groups and projects: `all_memberships`, `personal_projects`, or
    /// `selected_memberships` (the runtime's projects must be among them).
    Projects,
    /// The token's own user (`user`).
    User,
}

impl Boundary {
    fn covers(self, access: &str) -> bool {
        match self {
            Self::Projects => matches!(
                access,
                "all_memberships" | "personal_projects" | "selected_memberships"
            ),
            Self::User => access == "user",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Projects => "group and project access",
            Self::User => "user access",
        }
    }
}

/// A fine-grained permission a token must hold, under a boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Needed {
    permission: &'static str,
    boundary: Boundary,
}

const fn needed(permission: &'static str, boundary: Boundary) -> Needed {
    Needed {
        permission,
        boundary,
    }
}

/// The classic scopes of the product documents, as fine-grained
/// permissions: Git over HTTPS (`read_repository`, `write_repository`), the
/// runtime's webhooks (what `api` is needed for), and reading the token's
/// user (`GET /user`, what `read_api` is needed for).
fn required_permissions(purpose: TokenPurpose) -> &'static [Needed] {
    const USER: &[Needed] = &[
        needed("read_repository", Boundary::Projects),
        needed("write_repository", Boundary::Projects),
        needed("read_user", Boundary::User),
    ];
    const RUNTIME: &[Needed] = &[
        needed("read_repository", Boundary::Projects),
        needed("create_webhook", Boundary::Projects),
        needed("read_webhook", Boundary::Projects),
        needed("delete_webhook", Boundary::Projects),
        needed("read_user", Boundary::User),
    ];
    match purpose {
        TokenPurpose::User => USER,
        TokenPurpose::Runtime => RUNTIME,
    }
}

/// Permissions that cover others, as `write_repository` covers
/// `read_repository` among the classic scopes.
fn permission_implies(permission: &str) -> &'static [&'static str] {
    match permission {
        "write_repository" => &["read_repository"],
        _ => &[],
    }
}

fn fine_grained_help(purpose: TokenPurpose) -> &'static str {
    match purpose {
        TokenPurpose::User => {
            "For a fine-grained token: in GitLab under User settings > Access tokens > Generate token > Fine-grained token, give it Group and project access to the projects you work on with the permissions `read_repository` and `write_repository`, and the User permission `read_user`; or create a legacy token with the scopes `read_api`, `read_repository` and `write_repository`."
        }
        TokenPurpose::Runtime => {
            "For a fine-grained token: in GitLab under User settings > Access tokens > Generate token > Fine-grained token, give it Group and project access to the runtime's projects with the permissions `read_repository`, `create_webhook`, `read_webhook` and `delete_webhook`, and the User permission `read_user`; or create a legacy token with the scopes `api` and `read_repository`."
        }
    }
}

/// The required permissions that `granted` does not hold under a boundary
/// they apply to, written `permission (boundary)`.
fn missing_permissions(granted: &[GranularScope], purpose: TokenPurpose) -> Vec<String> {
    required_permissions(purpose)
        .iter()
        .filter(|n| {
            !granted.iter().any(|g| {
                n.boundary.covers(&g.access)
                    && g.permissions
                        .iter()
                        .any(|p| p == n.permission || permission_implies(p).contains(&n.permission))
            })
        })
        .map(|n| format!("{} ({})", n.permission, n.boundary.label()))
        .collect()
}

/// A fine-grained token's permissions as reported: `permission:access`.
fn granted_permissions(granted: &[GranularScope]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for g in granted {
        for p in &g.permissions {
            let label = format!("{p}:{}", g.access);
            if !out.contains(&label) {
                out.push(label);
            }
        }
    }
    out
}

#[async_trait]
impl GitProvider for GitLab {
    fn kind(&self) -> ProviderKind {
        self.kind
    }

    fn display_name(&self) -> &'static str {
        DISPLAY_NAME
    }

    fn endpoints(
        &self,
        base_url: Option<&Url>,
        api_url: Option<&Url>,
    ) -> Result<Endpoints, String> {
        let default;
        let base = match (base_url, self.kind) {
            (Some(base), _) => base,
            (None, ProviderKind::GitlabSelfManaged) => {
                return Err(
                    "base_url is required for gitlab_self_managed: the URL of the GitLab instance, e.g. https://gitlab.example.com"
                        .into(),
                );
            }
            (None, _) => {
                default = Url::parse(GITLAB_COM_URL).map_err(|e| e.to_string())?;
                &default
            }
        };
        // A path is allowed: GitLab can be installed under a relative URL
        // (https://example.com/gitlab).
        super::endpoints_under(
            base,
            api_url,
            ["/oauth/authorize", "/oauth/token", "/api/v4"],
            "must be the GitLab URL without query or fragment, e.g. https://gitlab.example.com",
        )
    }

    fn parse_scopes(&self, raw: &str) -> Vec<String> {
        // Space-separated on the wire; commas tolerated for hand-written lists.
        let mut out: Vec<String> = Vec::new();
        for s in raw.split([' ', ',', '\t', '\n']).filter(|s| !s.is_empty()) {
            let s = SCOPE_ALIASES
                .iter()
                .find(|(alias, _)| *alias == s)
                .map_or(s, |(_, name)| name);
            if !out.iter().any(|have| have == s) {
                out.push(s.to_owned());
            }
        }
        out
    }

    fn implied_by(&self, scope: &str) -> &'static [&'static str] {
        match scope {
            "api" => &["read_api", "read_repository", "write_repository"],
            "write_repository" => &["read_repository"],
            // `sudo` and `admin_mode` change who or how, not what: they
            // grant nothing on their own.
            _ => &[],
        }
    }

    fn required_scopes(&self, purpose: TokenPurpose) -> &'static [&'static str] {
        match purpose {
            TokenPurpose::User => &["write_repository", "read_api"],
            TokenPurpose::Runtime => &["api", "read_repository"],
        }
    }

    fn token_help(&self, purpose: TokenPurpose) -> &'static str {
        match purpose {
            TokenPurpose::User => {
                "Create one in GitLab under User settings > Access tokens > Add new token: enter a token name, set an expiration date (GitLab requires one), select the scopes `read_api`, `read_repository` and `write_repository`, create the token, and paste it here."
            }
            TokenPurpose::Runtime => {
                "Create it, preferably for a service account, in GitLab under User settings > Access tokens > Add new token: enter a token name, set an expiration date (GitLab requires one), select the scopes `api` and `read_repository`, create the token, and paste it here."
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
        let raw = input.token.expose_secret().trim();
        if let Some((_, what)) = OTHER_TOKEN_PREFIXES
            .iter()
            .find(|(prefix, _)| raw.starts_with(prefix))
        {
            return Err(PatError::WrongKind {
                reason: format!(
                    "This is {what}, not a personal access token: it cannot act for you at GitLab. {help}"
                ),
            });
        }
        let token = SecretString::from(raw.to_owned());

        // The token's own record first: it answers whatever the token's
        // scopes, while /user needs `read_api`, `api` or `read_user`.
        let pat = get_pat_self(http, endpoints, &token)
            .await
            .map_err(|e| self.pat_error(e, help))?;
        if pat.revoked {
            return Err(PatError::Revoked {
                provider: DISPLAY_NAME,
                help: help.to_owned(),
            });
        }
        let expires_at = pat
            .expires_at
            .map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc());
        // GitLab tokens stop working at 00:00 UTC of their expiry date.
        if let Some(at) = expires_at
            && at <= now
        {
            return Err(PatError::Expired {
                at: at.format("%Y-%m-%d").to_string(),
                help: help.to_owned(),
            });
        }
        if !pat.active {
            return Err(PatError::Invalid {
                provider: DISPLAY_NAME,
                help: help.to_owned(),
            });
        }
        let fine_grained = pat.granular_scopes.is_some();
        let granted = match &pat.granular_scopes {
            Some(g) => granted_permissions(g),
            None => self.parse_scopes(&pat.scopes.join(" ")),
        };

        // Asked before the scope verdict, so that a project or group token
        // is called what it is even when its scopes are also wrong; a token
        // without an API scope gets 403 here and is judged on its scopes.
        let user = get_user(http, endpoints, &token).await;
        if let Ok(user) = &user
            && user.bot
        {
            return Err(PatError::WrongKind {
                reason: format!(
                    "This is a project or group access token: it belongs to a bot user of GitLab ({}), not to you, so Git actions would not be yours. Use a personal access token instead. {help}",
                    user.username
                ),
            });
        }
        if let Some(scopes) = &pat.granular_scopes {
            let missing = missing_permissions(scopes, purpose);
            if !missing.is_empty() {
                return Err(PatError::MissingScopes {
                    what: "the required permissions",
                    missing,
                    help: fine_grained_help(purpose).to_owned(),
                });
            }
        } else {
            let missing = missing_scopes(self, &granted, &owned(self.required_scopes(purpose)));
            if !missing.is_empty() {
                return Err(PatError::MissingScopes {
                    what: "the required scopes",
                    missing,
                    help: help.to_owned(),
                });
            }
        }
        let user = user.map_err(|e| self.pat_error(e, help))?;
        Ok(TokenReport {
            git_username: self.git_username(&user.username),
            git_auth: GitAuth::basic(self.git_username(&user.username)),
            login: user.username,
            kind: if fine_grained {
                "fine-grained personal access token".into()
            } else {
                "personal access token".into()
            },
            scopes: granted,
            expires_at,
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
        // The scopes are a second opinion (the token response already has
        // them): a failure here does not make the identity unknown.
        let scopes = match get_token_info(http, endpoints, token).await {
            Ok(info) => Some(self.parse_scopes(&info.scope.join(" "))),
            Err(ApiError::Provider(ProviderError::Unavailable(_) | ProviderError::Protocol(_))) => {
                None
            }
            Err(e) => return Err(e.into_provider()),
        };
        Ok(Identity {
            login: user.username,
            scopes,
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
        // `/oauth/revoke` sits next to `/oauth/token`, wherever GitLab lives.
        let url = endpoints
            .token
            .join("revoke")
            .map_err(|e| ProviderError::Protocol(format!("cannot build revocation URL: {e}")))?;
        let request = http.post(url).header("Accept", "application/json").form(&[
            ("client_id", client_id),
            ("client_secret", client_secret.expose_secret()),
            ("token", token.expose_secret()),
        ]);
        let resp = http.send(request).await?;
        // RFC 7009 §2.2: 200 also for tokens that were already invalid, so
        // GitLab never tells the two apart.
        match resp.status().as_u16() {
            200 => Ok(Revocation::Revoked),
            s if s >= 500 || s == 429 => Err(ProviderError::Unavailable(format!("HTTP {s}"))),
            s => Err(ProviderError::Protocol(format!(
                "revocation answered HTTP {s}"
            ))),
        }
    }

    fn rotates_pats(&self) -> bool {
        true
    }

    async fn rotate_pat(
        &self,
        http: &ProviderClient,
        endpoints: &Endpoints,
        token: &SecretString,
        expires_on: NaiveDate,
    ) -> Result<RotatedPat, RotateError> {
        let what = "POST /api/v4/personal_access_tokens/self/rotate";
        let url = join(&endpoints.api, "/personal_access_tokens/self/rotate")
            .map_err(RotateError::Refused)?;
        let request = http
            .post(url)
            .bearer_auth(token.expose_secret())
            .header("Accept", "application/json")
            .json(&serde_json::json!({ "expires_at": expires_on.format("%Y-%m-%d").to_string() }));
        // sent once: whatever goes wrong from here on may have rotated it
        let resp = http
            .send(request)
            .await
            .map_err(|e| RotateError::Unknown(e.to_string()))?;
        let status = resp.status().as_u16();
        match status {
            200 | 201 => {
                let body: Rotated = resp.json().await.map_err(|_| {
                    RotateError::Unknown(format!(
                        "{what} answered HTTP {status} with an unreadable body"
                    ))
                })?;
                if body.token.trim().is_empty() {
                    return Err(RotateError::Unknown(format!(
                        "{what} answered HTTP {status} without a token"
                    )));
                }
                Ok(RotatedPat {
                    token: SecretString::from(body.token),
                    expires_at: body
                        .expires_at
                        .map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc()),
                })
            }
            401 => Err(RotateError::InvalidToken),
            429 => Err(RotateError::Unknown("rate limited".into())),
            s if s >= 500 => Err(RotateError::Unknown(format!("{what} answered HTTP {s}"))),
            s => {
                // GitLab's API errors are `{"message": …}`; the message names
                // the problem (a date the instance does not allow, a scope)
                let message = resp
                    .json::<serde_json::Value>()
                    .await
                    .ok()
                    .and_then(|v| match v.get("message") {
                        Some(serde_json::Value::String(m)) => Some(m.clone()),
                        Some(other) => Some(other.to_string()),
                        None => v.get("error").map(|e| e.to_string()),
                    })
                    .map(|m| m.chars().take(200).collect::<String>());
                Err(RotateError::Refused(match message {
                    Some(m) => format!("GitLab refused to rotate the token (HTTP {s}: {m})"),
                    None => format!("GitLab refused to rotate the token (HTTP {s})"),
                }))
            }
        }
    }

    fn git_username(&self, _identity_login: &str) -> String {
        // GitLab ignores the username when the password is a token; `oauth2`
        // is the convention Argo CD and GitLab's own docs use.
        "oauth2".to_owned()
    }
}

impl GitLab {
    fn pat_error(&self, e: ApiError, help: &str) -> PatError {
        match e {
            ApiError::Expired => PatError::Expired {
                // GitLab no longer shows an expired token's record.
                at: "an earlier date (GitLab does not say which)".into(),
                help: help.to_owned(),
            },
            ApiError::Revoked => PatError::Revoked {
                provider: DISPLAY_NAME,
                help: help.to_owned(),
            },
            ApiError::NotPat => PatError::WrongKind {
                reason: format!(
                    "GitLab has no personal access token record for this token: it may be an OAuth token, or the GitLab instance is older than 15.5. Paste a personal access token. {help}"
                ),
            },
            ApiError::Forbidden => PatError::WrongKind {
                reason: format!("GitLab refused to describe this token's owner (HTTP 403). {help}"),
            },
            ApiError::Provider(e) => PatError::from_provider(DISPLAY_NAME, e, help),
        }
    }
}

/// What a GitLab API call can answer, finer than [`ProviderError`]: the
/// 401 body tells an expired token from a revoked one.
#[derive(Debug)]
enum ApiError {
    Expired,
    Revoked,
    /// 404 from `/personal_access_tokens/self`.
    NotPat,
    /// 403 that is not a rate limit: usually a token without an API scope.
    Forbidden,
    Provider(ProviderError),
}

impl ApiError {
    fn into_provider(self) -> ProviderError {
        match self {
            Self::Expired | Self::Revoked => ProviderError::InvalidToken,
            Self::NotPat => ProviderError::Protocol("no such token record".into()),
            Self::Forbidden => ProviderError::Protocol("HTTP 403".into()),
            Self::Provider(e) => e,
        }
    }
}

#[derive(Deserialize)]
struct OAuthErrorBody {
    error: Option<String>,
    error_description: Option<String>,
}

/// Sends an authenticated GET and classifies the answer: 401 invalid
/// (expired and revoked told apart by GitLab's `error_description`), 429 and
/// 5xx temporary, 403 forbidden, 404 not found.
async fn api_get(
    http: &ProviderClient,
    url: Url,
    token: &SecretString,
    what: &str,
) -> Result<reqwest::Response, ApiError> {
    let request = http
        .get(url)
        .bearer_auth(token.expose_secret())
        .header("Accept", "application/json");
    let resp = http.send(request).await.map_err(ApiError::Provider)?;
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    match status.as_u16() {
        401 => {
            let body: Option<OAuthErrorBody> = resp.json().await.ok();
            let description = body
                .filter(|b| b.error.as_deref() == Some("invalid_token"))
                .and_then(|b| b.error_description)
                .unwrap_or_default();
            Err(if description.starts_with("Token is expired") {
                ApiError::Expired
            } else if description.starts_with("Token was revoked") {
                ApiError::Revoked
            } else {
                ApiError::Provider(ProviderError::InvalidToken)
            })
        }
        // GitLab's rate limits answer 429; a 403 never means "slow down".
        429 => Err(ApiError::Provider(ProviderError::Unavailable(
            "rate limited".into(),
        ))),
        s if s >= 500 => Err(ApiError::Provider(ProviderError::Unavailable(format!(
            "HTTP {s}"
        )))),
        403 => Err(ApiError::Forbidden),
        404 => Err(ApiError::NotPat),
        s => Err(ApiError::Provider(ProviderError::Protocol(format!(
            "{what} answered HTTP {s}"
        )))),
    }
}

async fn read_json<T: serde::de::DeserializeOwned>(
    resp: reqwest::Response,
    what: &str,
) -> Result<T, ApiError> {
    resp.json().await.map_err(|e| {
        ApiError::Provider(if e.is_timeout() {
            ProviderError::Unavailable("timed out".into())
        } else {
            ProviderError::Protocol(format!("{what} returned an unreadable body"))
        })
    })
}

#[derive(Deserialize)]
struct User {
    username: String,
    #[serde(default)]
    bot: bool,
}

/// `GET /api/v4/user`: the owner, and whether it is a bot user.
async fn get_user(
    http: &ProviderClient,
    endpoints: &Endpoints,
    token: &SecretString,
) -> Result<User, ApiError> {
    let what = "GET /api/v4/user";
    let url = join(&endpoints.api, "/user")
        .map_err(|e| ApiError::Provider(ProviderError::Protocol(e)))?;
    let resp = match api_get(http, url, token, what).await {
        // /user always exists: a 404 is not "no PAT record"
        Err(ApiError::NotPat) => {
            return Err(ApiError::Provider(ProviderError::Protocol(format!(
                "{what} answered HTTP 404"
            ))));
        }
        other => other?,
    };
    read_json(resp, what).await
}

/// One entry of a fine-grained token's `granular_scopes`.
#[derive(Debug, Clone, Deserialize)]
struct GranularScope {
    access: String,
    #[serde(default)]
    permissions: Vec<String>,
}

/// The answer of `POST /personal_access_tokens/self/rotate`: the new
/// token's record, with its value.
#[derive(Deserialize)]
struct Rotated {
    token: String,
    expires_at: Option<NaiveDate>,
}

#[derive(Deserialize)]
struct PatSelf {
    #[serde(default)]
    scopes: Vec<String>,
    /// Present (and `scopes` empty) for fine-grained tokens only.
    #[serde(default)]
    granular_scopes: Option<Vec<GranularScope>>,
    #[serde(default = "yes")]
    active: bool,
    #[serde(default)]
    revoked: bool,
    expires_at: Option<NaiveDate>,
}

fn yes() -> bool {
    true
}

/// `GET /api/v4/personal_access_tokens/self` (GitLab 15.5+).
async fn get_pat_self(
    http: &ProviderClient,
    endpoints: &Endpoints,
    token: &SecretString,
) -> Result<PatSelf, ApiError> {
    let what = "GET /api/v4/personal_access_tokens/self";
    let url = join(&endpoints.api, "/personal_access_tokens/self")
        .map_err(|e| ApiError::Provider(ProviderError::Protocol(e)))?;
    let resp = api_get(http, url, token, what).await?;
    read_json(resp, what).await
}

#[derive(Deserialize)]
struct TokenInfo {
    #[serde(default)]
    scope: Vec<String>,
}

/// `GET /oauth/token/info`: an OAuth token's scopes (and expiry, unused:
/// the token response already gave `expires_in`).
async fn get_token_info(
    http: &ProviderClient,
    endpoints: &Endpoints,
    token: &SecretString,
) -> Result<TokenInfo, ApiError> {
    let what = "GET /oauth/token/info";
    let url = endpoints
        .token
        .join("token/info")
        .map_err(|e| ApiError::Provider(ProviderError::Protocol(e.to_string())))?;
    let resp = api_get(http, url, token, what).await?;
    read_json(resp, what).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn endpoints_for_gitlab_com() {
        let e = GITLAB_COM.endpoints(None, None).unwrap();
        assert_eq!(e.authorize.as_str(), "https://gitlab.com/oauth/authorize");
        assert_eq!(e.token.as_str(), "https://gitlab.com/oauth/token");
        assert_eq!(e.api.as_str(), "https://gitlab.com/api/v4");
        assert_eq!(
            e.token.join("revoke").unwrap().as_str(),
            "https://gitlab.com/oauth/revoke"
        );
        assert_eq!(
            e.token.join("token/info").unwrap().as_str(),
            "https://gitlab.com/oauth/token/info"
        );
    }

    #[test]
    fn endpoints_for_self_managed() {
        let err = GITLAB_SELF_MANAGED.endpoints(None, None).unwrap_err();
        assert!(err.contains("base_url"), "{err}");
        let base = Url::parse("https://git.example.com/").unwrap();
        let e = GITLAB_SELF_MANAGED.endpoints(Some(&base), None).unwrap();
        assert_eq!(
            e.authorize.as_str(),
            "https://git.example.com/oauth/authorize"
        );
        assert_eq!(e.token.as_str(), "https://git.example.com/oauth/token");
        assert_eq!(e.api.as_str(), "https://git.example.com/api/v4");
        // installed under a relative URL
        let sub = Url::parse("https://example.com/gitlab/").unwrap();
        let e = GITLAB_SELF_MANAGED.endpoints(Some(&sub), None).unwrap();
        assert_eq!(e.token.as_str(), "https://example.com/gitlab/oauth/token");
        assert_eq!(
            e.token.join("revoke").unwrap().as_str(),
            "https://example.com/gitlab/oauth/revoke"
        );
        assert_eq!(e.api.as_str(), "https://example.com/gitlab/api/v4");
        // api_url overrides
        let api = Url::parse("https://api.example.com/v4").unwrap();
        let e = GITLAB_SELF_MANAGED
            .endpoints(Some(&base), Some(&api))
            .unwrap();
        assert_eq!(e.api, api);
        // gitlab.com kind with a base_url (a mock, a dedicated instance)
        let e = GITLAB_COM.endpoints(Some(&sub), None).unwrap();
        assert_eq!(e.api.as_str(), "https://example.com/gitlab/api/v4");
        let q = Url::parse("https://git.example.com/?x=1").unwrap();
        assert!(GITLAB_SELF_MANAGED.endpoints(Some(&q), None).is_err());
    }

    #[test]
    fn kinds_and_names() {
        assert_eq!(GITLAB_COM.kind(), ProviderKind::Gitlab);
        assert_eq!(GITLAB_SELF_MANAGED.kind(), ProviderKind::GitlabSelfManaged);
        assert_eq!(ProviderKind::Gitlab.as_str(), "gitlab");
        assert_eq!(
            ProviderKind::GitlabSelfManaged.as_str(),
            "gitlab_self_managed"
        );
        assert_eq!(GITLAB_SELF_MANAGED.display_name(), "GitLab");
        assert_eq!(GITLAB_COM.git_username("alice"), "oauth2");
        let k: ProviderKind = serde_json::from_str("\"gitlab_self_managed\"").unwrap();
        assert_eq!(k, ProviderKind::GitlabSelfManaged);
        let k: ProviderKind = serde_json::from_str("\"gitlab\"").unwrap();
        assert_eq!(k, ProviderKind::Gitlab);
    }

    #[test]
    fn space_separated_scopes() {
        assert_eq!(
            GITLAB_COM.parse_scopes("api read_user"),
            s(&["api", "read_user"])
        );
        assert_eq!(
            GITLAB_COM.parse_scopes(" write_repository  read_api "),
            s(&["write_repository", "read_api"])
        );
        assert_eq!(
            GITLAB_COM.parse_scopes("api,read_repository api"),
            s(&["api", "read_repository"])
        );
        assert!(GITLAB_COM.parse_scopes("").is_empty());
    }

    #[test]
    fn api_read_is_normalized_to_read_api() {
        assert_eq!(
            GITLAB_COM.parse_scopes("write_repository api_read"),
            s(&["write_repository", "read_api"])
        );
        // no duplicate when both spellings are given
        assert_eq!(
            GITLAB_SELF_MANAGED.parse_scopes("api_read read_api"),
            s(&["read_api"])
        );
    }

    #[test]
    fn implication_rows() {
        let p = &GITLAB_COM;
        for implied in ["read_api", "read_repository", "write_repository"] {
            assert!(
                missing_scopes(p, &s(&["api"]), &s(&[implied])).is_empty(),
                "api covers {implied}"
            );
        }
        assert!(missing_scopes(p, &s(&["write_repository"]), &s(&["read_repository"])).is_empty());
        // and not the other way round
        assert_eq!(
            missing_scopes(p, &s(&["read_repository"]), &s(&["write_repository"])),
            s(&["write_repository"])
        );
        assert_eq!(
            missing_scopes(p, &s(&["read_api"]), &s(&["api"])),
            s(&["api"])
        );
        assert_eq!(
            missing_scopes(p, &s(&["write_repository"]), &s(&["read_api"])),
            s(&["read_api"])
        );
        for nothing in ["sudo", "admin_mode", "read_user"] {
            assert!(p.implied_by(nothing).is_empty(), "{nothing}");
        }
    }

    #[test]
    fn required_scope_tables() {
        for p in [&GITLAB_COM, &GITLAB_SELF_MANAGED] {
            assert_eq!(
                p.required_scopes(TokenPurpose::User),
                &["write_repository", "read_api"]
            );
            assert_eq!(
                p.required_scopes(TokenPurpose::Runtime),
                &["api", "read_repository"]
            );
            // the documents' user-token selection passes
            let docs = p.parse_scopes("read_api read_repository write_repository");
            assert!(
                missing_scopes(p, &docs, &owned(p.required_scopes(TokenPurpose::User))).is_empty()
            );
            // and so does the other document's spelling
            let docs = p.parse_scopes("write_repository api_read");
            assert!(
                missing_scopes(p, &docs, &owned(p.required_scopes(TokenPurpose::User))).is_empty()
            );
            // `api` alone is enough for both purposes
            for purpose in [TokenPurpose::User, TokenPurpose::Runtime] {
                assert!(
                    missing_scopes(p, &s(&["api"]), &owned(p.required_scopes(purpose))).is_empty()
                );
            }
            assert_eq!(
                missing_scopes(
                    p,
                    &s(&["read_repository"]),
                    &owned(p.required_scopes(TokenPurpose::Runtime))
                ),
                s(&["api"])
            );
        }
    }

    fn scope(access: &str, permissions: &[&str]) -> GranularScope {
        GranularScope {
            access: access.into(),
            permissions: s(permissions),
        }
    }

    #[test]
    fn fine_grained_permissions_are_checked_under_their_boundary() {
        let user_ok = [
            scope("all_memberships", &["write_repository"]),
            scope("user", &["read_user"]),
        ];
        // write covers read
        assert!(missing_permissions(&user_ok, TokenPurpose::User).is_empty());
        let runtime_ok = [
            scope(
                "selected_memberships",
                &[
                    "read_repository",
                    "create_webhook",
                    "read_webhook",
                    "delete_webhook",
                ],
            ),
            scope("user", &["read_user"]),
        ];
        assert!(missing_permissions(&runtime_ok, TokenPurpose::Runtime).is_empty());
        // a permission under the wrong boundary does not count
        let wrong = [
            scope("user", &["write_repository"]),
            scope("personal_projects", &["read_user"]),
        ];
        assert_eq!(
            missing_permissions(&wrong, TokenPurpose::User),
            s(&[
                "read_repository (group and project access)",
                "write_repository (group and project access)",
                "read_user (user access)"
            ])
        );
        // read does not cover write
        let read_only = [
            scope("all_memberships", &["read_repository"]),
            scope("user", &["read_user"]),
        ];
        assert_eq!(
            missing_permissions(&read_only, TokenPurpose::User),
            s(&["write_repository (group and project access)"])
        );
        assert_eq!(
            missing_permissions(&[], TokenPurpose::Runtime).len(),
            required_permissions(TokenPurpose::Runtime).len()
        );
        assert_eq!(
            granted_permissions(&user_ok),
            s(&["write_repository:all_memberships", "read_user:user"])
        );
    }

    #[test]
    fn self_answers_with_granular_scopes_parse() {
        let fine: PatSelf = serde_json::from_str(
            r#"{"id":1,"scopes":[],"granular_scopes":[{"access":"selected_memberships","permissions":["read_repository"],"project_id":7,"group_id":null}],"active":true,"revoked":false,"expires_at":"2027-01-01"}"#,
        )
        .unwrap();
        let g = fine.granular_scopes.unwrap();
        assert_eq!(g[0].access, "selected_memberships");
        assert_eq!(g[0].permissions, s(&["read_repository"]));
        let classic: PatSelf =
            serde_json::from_str(r#"{"scopes":["api"],"active":true,"expires_at":null}"#).unwrap();
        assert!(classic.granular_scopes.is_none());
    }

    #[test]
    fn rotated_pat_debug_hides_the_token() {
        let r = RotatedPat {
            token: SecretString::from("glpat-supersecret".to_owned()),
            expires_at: None,
        };
        assert!(!format!("{r:?}").contains("supersecret"));
        assert!(GITLAB_COM.rotates_pats());
    }

    #[test]
    fn help_names_the_scopes_and_the_page() {
        let user = GITLAB_COM.token_help(TokenPurpose::User);
        assert!(user.contains("User settings > Access tokens"));
        for scope in ["`read_api`", "`read_repository`", "`write_repository`"] {
            assert!(user.contains(scope), "{scope}");
        }
        assert!(user.contains("expiration date"));
        let rt = GITLAB_COM.token_help(TokenPurpose::Runtime);
        assert!(rt.contains("`api`") && rt.contains("`read_repository`"));
    }
}
