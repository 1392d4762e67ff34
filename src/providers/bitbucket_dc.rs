//! Bitbucket Data Center (and Server): an OAuth 2.0 provider under
//! `{base}/rest/oauth2/latest`, the REST API under `{base}/rest/api/1.0`,
//! and HTTP access tokens (personal, project or repository).
//!
//! Nothing tells a token its own permissions. Who it acts as comes from the
//! `X-AUSERNAME` header Bitbucket adds to every authenticated answer; what
//! it may do is found by probing: listing one repository the token reaches
//! with the permission in question.

use super::bitbucket_cloud::check_status;
use super::{
    Endpoints, GitAuth, GitProvider, Identity, PatError, PatInput, ProviderClient, ProviderError,
    ProviderKind, TokenPurpose, TokenReport, join, missing_scopes, owned, split_scopes,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use url::Url;

pub struct BitbucketDataCenter;

const PROVIDER: &str = "Bitbucket Data Center";

const HELP_USER: &str = "Create a personal HTTP access token in Bitbucket Data Center: your avatar > Manage account > HTTP access tokens > Create token. Name it, set Repository permissions to Write (Project permissions may stay Read), choose an expiry, create it, and paste it here with your Bitbucket username.";
const HELP_RUNTIME: &str = "Create an HTTP access token, preferably for a service account, in Bitbucket Data Center: avatar > Manage account > HTTP access tokens > Create token. Set Repository permissions to Admin (or Project permissions to Admin), choose an expiry, create it, and paste it here with the account's Bitbucket username.";

/// Why a probe can come back empty even for a good token.
const PROBE_NOTE: &str = "Bitbucket Data Center does not tell a token its permissions, so gitbroker looked for a repository this token can use with them and found none: either the token lacks them or your account has no such repository.";

#[async_trait]
impl GitProvider for BitbucketDataCenter {
    fn kind(&self) -> ProviderKind {
        ProviderKind::BitbucketDataCenter
    }

    fn display_name(&self) -> &'static str {
        PROVIDER
    }

    fn endpoints(
        &self,
        base_url: Option<&Url>,
        api_url: Option<&Url>,
    ) -> Result<Endpoints, String> {
        let Some(base) = base_url else {
            return Err(
                "is required for Bitbucket Data Center: the server's URL with its context path, if any, e.g. https://bitbucket.example.com"
                    .into(),
            );
        };
        super::endpoints_under(
            base,
            api_url,
            [
                "/rest/oauth2/latest/authorize",
                "/rest/oauth2/latest/token",
                "/rest/api/1.0",
            ],
            "must be a URL without query or fragment, e.g. https://bitbucket.example.com",
        )
    }

    fn parse_scopes(&self, raw: &str) -> Vec<String> {
        split_scopes(raw)
    }

    /// OAuth scopes and HTTP access token permissions share these names.
    /// A project permission applies to every repository of the project, a
    /// higher level includes the lower ones, and global admin includes all.
    fn implied_by(&self, scope: &str) -> &'static [&'static str] {
        match scope {
            "REPO_READ" => &["PUBLIC_REPOS"],
            "REPO_WRITE" => &["REPO_READ", "PUBLIC_REPOS"],
            "REPO_ADMIN" => &["REPO_WRITE", "REPO_READ", "PUBLIC_REPOS"],
            "PROJECT_READ" => &["REPO_READ", "PUBLIC_REPOS"],
            "PROJECT_WRITE" => &["PROJECT_READ", "REPO_WRITE", "REPO_READ", "PUBLIC_REPOS"],
            "PROJECT_ADMIN" => &[
                "PROJECT_WRITE",
                "PROJECT_READ",
                "REPO_ADMIN",
                "REPO_WRITE",
                "REPO_READ",
                "PUBLIC_REPOS",
            ],
            "ADMIN" | "SYSTEM_ADMIN" => &[
                "PROJECT_ADMIN",
                "PROJECT_WRITE",
                "PROJECT_READ",
                "REPO_ADMIN",
                "REPO_WRITE",
                "REPO_READ",
                "PUBLIC_REPOS",
            ],
            _ => &[],
        }
    }

    /// The documents' "Repositories: Write" (user) and "Write, Admin"
    /// (runtime); Data Center has no separate account, workspace or webhook
    /// scopes: repository admins manage webhooks.
    fn required_scopes(&self, purpose: TokenPurpose) -> &'static [&'static str] {
        match purpose {
            TokenPurpose::User => &["REPO_WRITE"],
            TokenPurpose::Runtime => &["REPO_ADMIN"],
        }
    }

    fn token_help(&self, purpose: TokenPurpose) -> &'static str {
        match purpose {
            TokenPurpose::User => HELP_USER,
            TokenPurpose::Runtime => HELP_RUNTIME,
        }
    }

    /// The documents ask for it, and Git over HTTPS sends it with the token
    /// (Bitbucket also accepts the token as a bearer token).
    fn needs_username(&self) -> bool {
        true
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
        let token = input.token.expose_secret().trim();
        if token.is_empty() {
            return Err(PatError::BadInput(format!(
                "Paste a Bitbucket HTTP access token. {help}"
            )));
        }
        let Some(username) = input
            .username
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
        else {
            return Err(PatError::BadInput(
                "Enter your Bitbucket username: Git over HTTPS uses it with the token.".into(),
            ));
        };
        let unavailable = |e| PatError::from_provider(PROVIDER, e, help);
        let login = who_am_i(http, endpoints, token)
            .await
            .map_err(unavailable)?;
        let service = is_service_user(http, endpoints, token, &login)
            .await
            .map_err(unavailable)?;
        if service && purpose == TokenPurpose::User {
            return Err(PatError::WrongKind {
                reason: format!(
                    "This is a project or repository HTTP access token: it acts as the service user `{login}`, not as you. Use a personal HTTP access token. {help}"
                ),
            });
        }
        // A project or repository token's service user is named by
        // Bitbucket; nobody can be expected to type that name.
        if !service && !login.eq_ignore_ascii_case(username) {
            return Err(PatError::BadInput(format!(
                "This token belongs to the Bitbucket user `{login}`, not `{username}`: enter the username of the token's owner, or that owner's token."
            )));
        }
        let required = owned(self.required_scopes(purpose));
        let mut granted = Vec::new();
        for permission in &required {
            if reaches_a_repository(http, endpoints, token, permission)
                .await
                .map_err(unavailable)?
            {
                granted.push(permission.clone());
            }
        }
        let missing = missing_scopes(self, &granted, &required);
        if !missing.is_empty() {
            return Err(PatError::MissingScopes {
                what: "the required permissions",
                missing,
                help: format!("{PROBE_NOTE} {help}"),
            });
        }
        Ok(TokenReport {
            git_username: login.clone(),
            // "you can use the project and repository level token only with
            // Bearer authentication" (Atlassian, HTTP access tokens); personal
            // tokens also work as the owner's password
            git_auth: if service {
                GitAuth::Bearer
            } else {
                GitAuth::basic(login.clone())
            },
            login,
            kind: if service {
                "project or repository HTTP access token".into()
            } else {
                "personal HTTP access token".into()
            },
            scopes: granted,
            // not readable through the API; an expired token answers 401
            expires_at: None,
        })
    }

    async fn identify(
        &self,
        http: &ProviderClient,
        endpoints: &Endpoints,
        token: &SecretString,
    ) -> Result<Identity, ProviderError> {
        let login = who_am_i(http, endpoints, token.expose_secret()).await?;
        // scopes are in the token response; the API does not repeat them
        Ok(Identity {
            login,
            scopes: None,
        })
    }

    // Bitbucket Data Center documents no endpoint that revokes an OAuth
    // token; users revoke the grant under Manage account > Authorized
    // applications. Access tokens expire after an hour by default.
    // (revoke: the trait's default, Revocation::Unsupported)

    fn git_username(&self, identity_login: &str) -> String {
        identity_login.to_owned()
    }

    /// Data Center's OAuth 2.0 access tokens are bearer tokens (verify
    /// Basic on a live server): Bearer is the form documented for them.
    fn oauth_git_auth(&self, _identity_login: &str) -> GitAuth {
        GitAuth::Bearer
    }
}

async fn get(
    http: &ProviderClient,
    url: Url,
    token: &str,
) -> Result<reqwest::Response, ProviderError> {
    http.send(
        http.get(url)
            .bearer_auth(token)
            .header("Accept", "application/json"),
    )
    .await
}

/// `GET /application-properties` answers anyone; with a token that works,
/// `X-AUSERNAME` names its user. No header: the request ran anonymously.
async fn who_am_i(
    http: &ProviderClient,
    endpoints: &Endpoints,
    token: &str,
) -> Result<String, ProviderError> {
    let url = join(&endpoints.api, "/application-properties").map_err(ProviderError::Protocol)?;
    let resp = get(http, url, token).await?;
    check_status(&resp, "GET /application-properties")?;
    resp.headers()
        .get("x-ausername")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .ok_or(ProviderError::InvalidToken)
}

/// Project and repository tokens act as service users
/// (`GET /users/{slug}` → `"type": "SERVICE"`).
async fn is_service_user(
    http: &ProviderClient,
    endpoints: &Endpoints,
    token: &str,
    login: &str,
) -> Result<bool, ProviderError> {
    let mut url = join(&endpoints.api, "/users").map_err(ProviderError::Protocol)?;
    url.path_segments_mut()
        .map_err(|()| ProviderError::Protocol("API URL cannot take a path".into()))?
        .push(&login.to_lowercase());
    let resp = get(http, url, token).await?;
    if resp.status() == reqwest::StatusCode::NOT_FOUND {
        // a user who cannot look themselves up is not something we can
        // classify; the permission probes still decide
        return Ok(false);
    }
    check_status(&resp, "GET /users/{slug}")?;
    #[derive(serde::Deserialize)]
    struct User {
        #[serde(rename = "type")]
        kind: Option<String>,
    }
    let user: User = resp
        .json()
        .await
        .map_err(|_| ProviderError::Protocol("GET /users/{slug} returned no user".into()))?;
    Ok(user.kind.as_deref() == Some("SERVICE"))
}

/// `GET /repos?permission=P&limit=1`: a non-empty page means the token can
/// use at least one repository with `permission`.
async fn reaches_a_repository(
    http: &ProviderClient,
    endpoints: &Endpoints,
    token: &str,
    permission: &str,
) -> Result<bool, ProviderError> {
    let mut url = join(&endpoints.api, "/repos").map_err(ProviderError::Protocol)?;
    url.query_pairs_mut()
        .append_pair("permission", permission)
        .append_pair("limit", "1");
    let resp = get(http, url, token).await?;
    check_status(&resp, "GET /repos")?;
    #[derive(serde::Deserialize)]
    struct Page {
        #[serde(default)]
        values: Vec<serde_json::Value>,
    }
    let page: Page = resp
        .json()
        .await
        .map_err(|_| ProviderError::Protocol("GET /repos returned no page".into()))?;
    Ok(!page.values.is_empty())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn endpoints_need_a_base_url() {
        let p = &BitbucketDataCenter;
        assert!(p.endpoints(None, None).is_err());
        let base = Url::parse("https://git.example.com/bitbucket").unwrap();
        let e = p.endpoints(Some(&base), None).unwrap();
        assert_eq!(
            e.authorize.as_str(),
            "https://git.example.com/bitbucket/rest/oauth2/latest/authorize"
        );
        assert_eq!(
            e.token.as_str(),
            "https://git.example.com/bitbucket/rest/oauth2/latest/token"
        );
        assert_eq!(
            e.api.as_str(),
            "https://git.example.com/bitbucket/rest/api/1.0"
        );
        let api = Url::parse("https://api.example.com/rest/api/1.0").unwrap();
        assert_eq!(p.endpoints(Some(&base), Some(&api)).unwrap().api, api);
        let odd = Url::parse("https://git.example.com/?a=b").unwrap();
        assert!(p.endpoints(Some(&odd), None).is_err());
    }

    #[test]
    fn oauth_settings() {
        let p = &BitbucketDataCenter;
        assert!(p.needs_username());
        assert!(p.oauth_sends_scopes());
        assert!(matches!(p.oauth_auth_type(), oauth2::AuthType::RequestBody));
        assert_eq!(p.git_username("alice"), "alice");
        assert_eq!(
            ProviderKind::BitbucketDataCenter.as_str(),
            "bitbucket_data_center"
        );
    }

    #[test]
    fn scopes_are_space_separated() {
        assert_eq!(
            BitbucketDataCenter.parse_scopes("PUBLIC_REPOS REPO_WRITE"),
            s(&["PUBLIC_REPOS", "REPO_WRITE"])
        );
        assert!(BitbucketDataCenter.parse_scopes("").is_empty());
    }

    #[test]
    fn implications() {
        let p = &BitbucketDataCenter;
        let rows: &[(&str, &[&str])] = &[
            ("REPO_READ", &["PUBLIC_REPOS"]),
            ("REPO_WRITE", &["REPO_READ", "PUBLIC_REPOS"]),
            ("REPO_ADMIN", &["REPO_WRITE", "REPO_READ", "PUBLIC_REPOS"]),
            ("PROJECT_READ", &["REPO_READ", "PUBLIC_REPOS"]),
            (
                "PROJECT_WRITE",
                &["PROJECT_READ", "REPO_WRITE", "REPO_READ", "PUBLIC_REPOS"],
            ),
            (
                "PROJECT_ADMIN",
                &[
                    "PROJECT_WRITE",
                    "PROJECT_READ",
                    "REPO_ADMIN",
                    "REPO_WRITE",
                    "REPO_READ",
                    "PUBLIC_REPOS",
                ],
            ),
        ];
        for (scope, implied) in rows {
            assert_eq!(p.implied_by(scope), *implied, "{scope}");
            assert!(missing_scopes(p, &s(&[scope]), &s(implied)).is_empty());
        }
        for admin in ["ADMIN", "SYSTEM_ADMIN"] {
            assert!(
                missing_scopes(p, &s(&[admin]), &s(&["PROJECT_ADMIN", "REPO_ADMIN"])).is_empty()
            );
        }
        assert!(p.implied_by("PUBLIC_REPOS").is_empty());
        assert_eq!(
            missing_scopes(p, &s(&["REPO_WRITE"]), &s(&["REPO_ADMIN"])),
            s(&["REPO_ADMIN"])
        );
        assert_eq!(
            missing_scopes(p, &s(&["REPO_ADMIN"]), &s(&["PROJECT_ADMIN"])),
            s(&["PROJECT_ADMIN"])
        );
        assert_eq!(
            missing_scopes(p, &s(&["PUBLIC_REPOS"]), &s(&["REPO_READ"])),
            s(&["REPO_READ"])
        );
    }

    #[test]
    fn required_tables() {
        let p = &BitbucketDataCenter;
        assert_eq!(p.required_scopes(TokenPurpose::User), &["REPO_WRITE"]);
        assert_eq!(p.required_scopes(TokenPurpose::Runtime), &["REPO_ADMIN"]);
        // the runtime requirement covers the user's
        assert!(
            missing_scopes(
                p,
                &owned(p.required_scopes(TokenPurpose::Runtime)),
                &owned(p.required_scopes(TokenPurpose::User))
            )
            .is_empty()
        );
    }
}
