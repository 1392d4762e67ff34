//! GitHub and GitHub Enterprise Server: OAuth endpoints under the web host,
//! the REST API at api.github.com or `HOST/api/v3`, comma-separated scopes,
//! token-endpoint errors sent with HTTP 200, scopes read from `X-OAuth-Scopes`.

use super::{
    Endpoints, GitProvider, Identity, PatError, PatInput, ProviderError, ProviderKind,
    TokenPurpose, TokenReport, missing_scopes, owned,
};
use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use oauth2::HttpResponse;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

pub struct GitHub;

const API_VERSION: &str = "2022-11-28";

fn join(base: &Url, path: &str) -> Result<Url, String> {
    let mut s = base.as_str().trim_end_matches('/').to_owned();
    s.push_str(path);
    Url::parse(&s).map_err(|e| format!("cannot build endpoint URL: {e}"))
}

#[async_trait]
impl GitProvider for GitHub {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Github
    }

    fn display_name(&self) -> &'static str {
        "GitHub"
    }

    fn endpoints(
        &self,
        base_url: Option<&Url>,
        api_url: Option<&Url>,
    ) -> Result<Endpoints, String> {
        let github_com = Url::parse("https://github.com").map_err(|e| e.to_string())?;
        let web = base_url.unwrap_or(&github_com);
        if web.path() != "/" {
            return Err("must be the GitHub host only, e.g. https://github.example.com".into());
        }
        let api = match api_url {
            Some(api) => api.clone(),
            None if web.host_str() == Some("github.com") => {
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
        raw.split([',', ' '])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
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
        http: &reqwest::Client,
        endpoints: &Endpoints,
        input: &PatInput,
        purpose: TokenPurpose,
        now: DateTime<Utc>,
    ) -> Result<TokenReport, PatError> {
        let help = self.token_help(purpose);
        let token = input.token.expose_secret().trim();
        let kind = match token_kind(token) {
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
        let user = get_user(http, endpoints, &SecretString::from(token.to_owned()))
            .await
            .map_err(|e| PatError::from_provider("GitHub", e, help))?;
        if let Some(at) = user.expires_at
            && at <= now
        {
            return Err(PatError::Expired {
                at: at.format("%Y-%m-%d %H:%M UTC").to_string(),
                help: help.to_owned(),
            });
        }
        let granted = match (kind, user.scopes) {
            (_, Some(scopes)) => scopes,
            // fine-grained and GitHub App user tokens have permissions, not scopes
            (Kind::FineGrained | Kind::AppUser, None) => {
                return Err(PatError::WrongKind {
                    reason: format!(
                        "gitbroker cannot read the permissions of this {} yet; use a classic token. {help}",
                        kind.describe()
                    ),
                });
            }
            (_, None) => Vec::new(),
        };
        let missing = missing_scopes(self, &granted, &owned(self.required_scopes(purpose)));
        if !missing.is_empty() {
            return Err(PatError::MissingScopes {
                what: "the required scopes",
                missing,
                help: help.to_owned(),
            });
        }
        Ok(TokenReport {
            git_username: self.git_username(&user.login),
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
        http: &reqwest::Client,
        endpoints: &Endpoints,
        token: &SecretString,
    ) -> Result<Identity, ProviderError> {
        let user = get_user(http, endpoints, token).await?;
        Ok(Identity {
            login: user.login,
            scopes: user.scopes,
        })
    }

    async fn revoke(
        &self,
        http: &reqwest::Client,
        endpoints: &Endpoints,
        client_id: &str,
        client_secret: &SecretString,
        token: &SecretString,
    ) -> Result<(), ProviderError> {
        let url = join(&endpoints.api, &format!("/applications/{client_id}/token"))
            .map_err(ProviderError::Protocol)?;
        let resp = http
            .delete(url)
            .basic_auth(client_id, Some(client_secret.expose_secret()))
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", API_VERSION)
            .json(&serde_json::json!({ "access_token": token.expose_secret() }))
            .send()
            .await
            .map_err(|e| ProviderError::from_transport(&e))?;
        match resp.status().as_u16() {
            // 404/422: the token is already invalid — the goal is reached
            204 | 200 | 404 | 422 => Ok(()),
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

struct User {
    login: String,
    scopes: Option<Vec<String>>,
    expires_at: Option<DateTime<Utc>>,
}

/// `GET /user`: the owner, `X-OAuth-Scopes` and the expiry header.
async fn get_user(
    http: &reqwest::Client,
    endpoints: &Endpoints,
    token: &SecretString,
) -> Result<User, ProviderError> {
    let url = join(&endpoints.api, "/user").map_err(ProviderError::Protocol)?;
    let resp = http
        .get(url)
        .bearer_auth(token.expose_secret())
        .header("Accept", "application/vnd.github+json")
        .header("X-GitHub-Api-Version", API_VERSION)
        .send()
        .await
        .map_err(|e| ProviderError::from_transport(&e))?;
    check_status(&resp, "GET /user")?;
    let scopes = resp
        .headers()
        .get("x-oauth-scopes")
        .and_then(|v| v.to_str().ok())
        .map(|v| GitHub.parse_scopes(v));
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

/// 401 is invalid; 403/429 with no remaining rate limit, and 5xx, are
/// temporary; anything else unexpected.
fn check_status(resp: &reqwest::Response, what: &str) -> Result<(), ProviderError> {
    let status = resp.status();
    let rate_limited = resp
        .headers()
        .get("x-ratelimit-remaining")
        .is_some_and(|v| v.as_bytes() == b"0");
    if status == reqwest::StatusCode::UNAUTHORIZED {
        return Err(ProviderError::InvalidToken);
    }
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || (status == reqwest::StatusCode::FORBIDDEN && rate_limited)
    {
        return Err(ProviderError::Unavailable("rate limited".into()));
    }
    if status.is_server_error() {
        return Err(ProviderError::Unavailable(format!(
            "HTTP {}",
            status.as_u16()
        )));
    }
    if !status.is_success() {
        return Err(ProviderError::Protocol(format!(
            "{what} answered HTTP {}",
            status.as_u16()
        )));
    }
    Ok(())
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

    #[test]
    fn endpoints_for_github_com_and_ghes() {
        let e = GitHub.endpoints(None, None).unwrap();
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
        let e = GitHub.endpoints(Some(&ghes), None).unwrap();
        assert_eq!(e.api.as_str(), "https://git.example.com/api/v3");
        assert!(
            GitHub
                .endpoints(Some(&Url::parse("https://x.com/sub").unwrap()), None)
                .is_err()
        );
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
        assert_eq!(token_kind("ghs_x"), Kind::Installation);
        assert_eq!(token_kind("0123abcd"), Kind::Legacy);
    }

    #[test]
    fn comma_separated_scopes() {
        assert_eq!(GitHub.parse_scopes("repo,gist"), vec!["repo", "gist"]);
        assert_eq!(
            GitHub.parse_scopes("repo, admin:repo_hook"),
            vec!["repo", "admin:repo_hook"]
        );
        assert!(GitHub.parse_scopes("").is_empty());
    }

    #[test]
    fn error_with_200_becomes_400() {
        let body = br#"{"error":"bad_verification_code","error_description":"x"}"#.to_vec();
        let resp = http::Response::builder().status(200).body(body).unwrap();
        assert_eq!(GitHub.normalize_token_response(resp).status(), 400);
        let ok = br#"{"access_token":"gho_x","token_type":"bearer","scope":"repo"}"#.to_vec();
        let resp = http::Response::builder().status(200).body(ok).unwrap();
        assert_eq!(GitHub.normalize_token_response(resp).status(), 200);
    }
}
