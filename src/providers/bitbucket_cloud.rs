//! Bitbucket Cloud: OAuth consumers whose scopes are set on the consumer
//! (not per request), client authentication by HTTP Basic, 2-hour access
//! tokens; the REST API 2.0 at api.bitbucket.org; and API tokens (`ATATT…`),
//! the personal credential that replaced app passwords.
//!
//! Two scope families exist. OAuth consumers (and the old app passwords and
//! access tokens) use the legacy names (`account`, `team`, `repository:write`,
//! …), some of which imply others. API tokens use names of the form
//! `read:repository:bitbucket`, which imply nothing: "write" does not even
//! include "read", so a requirement written for API tokens lists both.

use super::{
    Endpoints, GitAuth, GitProvider, Identity, PatError, PatInput, ProviderClient, ProviderError,
    ProviderKind, TokenPurpose, TokenReport, join, missing_scopes, owned, split_scopes,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use oauth2::HttpResponse;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

pub struct BitbucketCloud;

const PROVIDER: &str = "Bitbucket Cloud";

/// The Git username Bitbucket Cloud documents for OAuth access tokens.
const OAUTH_GIT_USERNAME: &str = "x-token-auth";

/// Repository, project and workspace access tokens. They belong to a
/// repository, project or workspace, not to a person.
const ACCESS_TOKEN_PREFIX: &str = "ATCTT";
/// API tokens of an Atlassian account.
const API_TOKEN_PREFIX: &str = "ATATT";

/// Legacy scopes (OAuth consumers) the product documents ask for.
const LEGACY_USER: &[&str] = &["account", "team", "repository:write"];
const LEGACY_RUNTIME: &[&str] = &[
    "account",
    "team",
    "webhook",
    "repository:write",
    "repository:admin",
];

/// The same requirements in API-token names. No API-token scope implies
/// another, so "Repositories: Write" needs read and write, "Webhooks: Read
/// and write" needs both webhook scopes.
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

/// The scope `GET /2.0/user` needs, per family.
const LEGACY_ACCOUNT: &str = "account";
const API_ACCOUNT: &str = "read:user:bitbucket";

const HELP_USER: &str = "Create an API token in Bitbucket: Personal settings > Atlassian account settings > Security > Create and manage API tokens > Create API token with scopes. Name it, set an expiry (at most one year), choose the Bitbucket app, and select read:user:bitbucket, read:workspace:bitbucket, read:repository:bitbucket and write:repository:bitbucket. Paste the token (it starts with ATATT) together with your Atlassian account email and your Bitbucket username (Personal settings > Account settings).";
const HELP_RUNTIME: &str = "Create an API token, preferably for a service account, in Bitbucket: Personal settings > Atlassian account settings > Security > Create and manage API tokens > Create API token with scopes. Name it, set an expiry (at most one year), choose the Bitbucket app, and select read:user:bitbucket, read:workspace:bitbucket, read:repository:bitbucket, write:repository:bitbucket, admin:repository:bitbucket, read:webhook:bitbucket and write:webhook:bitbucket. Paste the token (it starts with ATATT) together with the account's Atlassian email and Bitbucket username.";

const APP_PASSWORD_REMOVED: &str = "This looks like a Bitbucket app password. Bitbucket Cloud stopped creating app passwords on 2025-09-09 and removed them on 2026-07-28, so it can no longer be used. Use an API token instead.";

/// The two scope vocabularies; a token's report says which one it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Legacy,
    ApiToken,
}

impl Family {
    /// API-token scopes all end in `:bitbucket`; anything else reported is
    /// legacy. With nothing reported, `fallback` decides.
    fn of(granted: &[String], fallback: Family) -> Family {
        if granted.iter().any(|s| s.ends_with(":bitbucket")) {
            Family::ApiToken
        } else if granted.is_empty() {
            fallback
        } else {
            Family::Legacy
        }
    }

    fn required(self, purpose: TokenPurpose) -> &'static [&'static str] {
        match (self, purpose) {
            (Family::Legacy, TokenPurpose::User) => LEGACY_USER,
            (Family::Legacy, TokenPurpose::Runtime) => LEGACY_RUNTIME,
            (Family::ApiToken, TokenPurpose::User) => API_USER,
            (Family::ApiToken, TokenPurpose::Runtime) => API_RUNTIME,
        }
    }

    fn account_scope(self) -> &'static str {
        match self {
            Family::Legacy => LEGACY_ACCOUNT,
            Family::ApiToken => API_ACCOUNT,
        }
    }
}

#[async_trait]
impl GitProvider for BitbucketCloud {
    fn kind(&self) -> ProviderKind {
        ProviderKind::BitbucketCloud
    }

    fn display_name(&self) -> &'static str {
        PROVIDER
    }

    fn endpoints(
        &self,
        base_url: Option<&Url>,
        api_url: Option<&Url>,
    ) -> Result<Endpoints, String> {
        let bitbucket_org = Url::parse("https://bitbucket.org").map_err(|e| e.to_string())?;
        let web = base_url.unwrap_or(&bitbucket_org);
        if web.query().is_some() || web.fragment().is_some() {
            return Err(
                "must be a URL without query or fragment, e.g. https://bitbucket.org".into(),
            );
        }
        let api = match api_url {
            Some(api) => api.clone(),
            // bitbucket.org serves its API from another host
            None if web.host_str() == Some("bitbucket.org") => {
                Url::parse("https://api.bitbucket.org/2.0").map_err(|e| e.to_string())?
            }
            // a stand-in (tests, the mock) serves everything under one base
            None => join(web, "/2.0")?,
        };
        Ok(Endpoints {
            authorize: join(web, "/site/oauth2/authorize")?,
            token: join(web, "/site/oauth2/access_token")?,
            api,
        })
    }

    /// The token response writes scopes space-separated, the
    /// `X-OAuth-Scopes` header comma-separated.
    fn parse_scopes(&self, raw: &str) -> Vec<String> {
        split_scopes(raw)
    }

    /// Legacy names only; API-token scopes imply nothing.
    fn implied_by(&self, scope: &str) -> &'static [&'static str] {
        match scope {
            "repository:admin" => &["repository:write", "repository"],
            "repository:write" => &["repository"],
            "pullrequest:write" => &["pullrequest", "repository:write", "repository"],
            "pullrequest" => &["repository"],
            "account:write" => &["account"],
            "team:write" => &["team"],
            "issue:write" => &["issue"],
            "snippet:write" => &["snippet"],
            "pipeline:write" => &["pipeline"],
            "runner:write" => &["runner"],
            _ => &[],
        }
    }

    /// In legacy names, which is what OAuth consumers are configured with;
    /// API tokens are checked against their own table in `validate_pat`.
    fn required_scopes(&self, purpose: TokenPurpose) -> &'static [&'static str] {
        Family::Legacy.required(purpose)
    }

    fn token_help(&self, purpose: TokenPurpose) -> &'static str {
        match purpose {
            TokenPurpose::User => HELP_USER,
            TokenPurpose::Runtime => HELP_RUNTIME,
        }
    }

    fn needs_email(&self) -> bool {
        true
    }

    fn needs_username(&self) -> bool {
        true
    }

    fn oauth_sends_scopes(&self) -> bool {
        false
    }

    fn oauth_auth_type(&self) -> oauth2::AuthType {
        oauth2::AuthType::BasicAuth
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
                "Paste a Bitbucket API token. {help}"
            )));
        }
        if token.starts_with(ACCESS_TOKEN_PREFIX) {
            return Err(access_token_refused(help));
        }
        if !token.starts_with(API_TOKEN_PREFIX) {
            // Every Bitbucket Cloud credential a person can paste that is
            // neither an API token nor an access token is an app password
            // (or an OAuth token, which nobody is asked to paste).
            return Err(PatError::WrongKind {
                reason: format!("{APP_PASSWORD_REMOVED} {help}"),
            });
        }
        let username = non_empty(input.username.as_deref());
        let email = non_empty(input.email.as_deref());
        let mut absent = Vec::new();
        if email.is_none() {
            absent.push(
                "your Atlassian account email (the REST API authenticates with it and the token)",
            );
        }
        if username.is_none() {
            absent.push("your Bitbucket username (Git over HTTPS uses it with the token; it is under Personal settings > Account settings)");
        }
        let (Some(username), Some(email)) = (username, email) else {
            return Err(PatError::BadInput(format!(
                "A Bitbucket Cloud API token needs {}.",
                absent.join(" and ")
            )));
        };
        if !email.contains('@') {
            return Err(PatError::BadInput(
                "The email must be the address of your Atlassian account, e.g. name@example.com."
                    .into(),
            ));
        }
        let answer = get_user(http, endpoints, Auth::Basic(email, token))
            .await
            .map_err(|e| {
                let help = format!(
                    "Check that the email is your Atlassian account's and that the token was copied whole. {help}"
                );
                PatError::from_provider(PROVIDER, e, &help)
            })?;
        if let Some(kind) = answer.credential_type.as_deref() {
            // The header's values are not documented everywhere: refuse only
            // the kinds known to be wrong, never an unknown spelling.
            if kind.contains("access_token") {
                return Err(access_token_refused(help));
            }
            if kind.contains("app_password") {
                return Err(PatError::WrongKind {
                    reason: format!("{APP_PASSWORD_REMOVED} {help}"),
                });
            }
        }
        let Some(granted) = answer.scopes else {
            return Err(PatError::WrongKind {
                reason: format!(
                    "Bitbucket Cloud did not report the scopes of this token, so gitbroker cannot check them. {help}"
                ),
            });
        };
        let family = Family::of(&granted, Family::ApiToken);
        let mut missing = missing_scopes(self, &granted, &owned(family.required(purpose)));
        if answer.login.is_none() {
            // 403: the token could not read its own account
            let account = family.account_scope().to_owned();
            if !missing.contains(&account) {
                missing.insert(0, account);
            }
        }
        if !missing.is_empty() {
            return Err(PatError::MissingScopes {
                what: "the required scopes",
                missing,
                help: help.to_owned(),
            });
        }
        let login = match answer.login {
            Some(Some(login)) => {
                if !login.eq_ignore_ascii_case(username) {
                    return Err(PatError::BadInput(format!(
                        "This API token belongs to the Bitbucket user `{login}`, not `{username}`: enter the username of the token's owner, or that owner's token."
                    )));
                }
                login
            }
            // the account had no username to show: trust the one entered
            _ => username.to_owned(),
        };
        Ok(TokenReport {
            login,
            git_username: username.to_owned(),
            // API tokens: the Bitbucket username (not the account email)
            git_auth: GitAuth::basic(username),
            kind: "API token".into(),
            scopes: granted,
            // Bitbucket does not report an API token's expiry
            expires_at: None,
        })
    }

    /// Bitbucket Cloud names the granted scopes `scopes`; RFC 6749 and the
    /// `oauth2` crate read `scope`. Copy it over so the broker checks what
    /// was granted rather than what it asked for.
    fn normalize_token_response(&self, mut response: HttpResponse) -> HttpResponse {
        if response.status() != http::StatusCode::OK {
            return response;
        }
        let Ok(serde_json::Value::Object(mut body)) =
            serde_json::from_slice::<serde_json::Value>(response.body())
        else {
            return response;
        };
        if body.contains_key("scope") {
            return response;
        }
        let Some(scopes) = body.get("scopes").and_then(|v| v.as_str()) else {
            return response;
        };
        let scope = self.parse_scopes(scopes).join(" ");
        body.insert("scope".into(), serde_json::Value::String(scope));
        if let Ok(bytes) = serde_json::to_vec(&body) {
            *response.body_mut() = bytes;
            // the length changed; let the body speak for itself
            response.headers_mut().remove(http::header::CONTENT_LENGTH);
        }
        response
    }

    async fn identify(
        &self,
        http: &ProviderClient,
        endpoints: &Endpoints,
        token: &SecretString,
    ) -> Result<Identity, ProviderError> {
        let answer = get_user(http, endpoints, Auth::Bearer(token.expose_secret())).await?;
        match answer.login {
            Some(Some(login)) => Ok(Identity {
                login,
                scopes: answer.scopes,
            }),
            Some(None) => Err(ProviderError::Protocol(
                "GET /2.0/user returned no username".into(),
            )),
            None => Err(ProviderError::Protocol(
                "the token cannot read its account (scope `account` missing)".into(),
            )),
        }
    }

    // Bitbucket Cloud documents no endpoint that revokes an OAuth access
    // or refresh token: the user removes the grant under Personal settings
    // > App authorizations. Access tokens die after two hours anyway, so
    // deleting the local record is all that can be done.
    // (revoke: the trait's default, Revocation::Unsupported)

    /// For OAuth tokens; API tokens use the username the user entered,
    /// which `validate_pat` reports.
    fn git_username(&self, _identity_login: &str) -> String {
        OAUTH_GIT_USERNAME.to_owned()
    }
}

fn access_token_refused(help: &str) -> PatError {
    PatError::WrongKind {
        reason: format!(
            "This is a Bitbucket repository, project or workspace access token: it belongs to a repository, project or workspace rather than to a person, and cannot read an account. Use an API token. {help}"
        ),
    }
}

fn non_empty(v: Option<&str>) -> Option<&str> {
    v.map(str::trim).filter(|v| !v.is_empty())
}

enum Auth<'a> {
    Bearer(&'a str),
    /// Atlassian account email and API token.
    Basic(&'a str, &'a str),
}

struct UserAnswer {
    /// `None`: HTTP 403, the credential may not read its account;
    /// `Some(None)`: read, but no username in it.
    login: Option<Option<String>>,
    scopes: Option<Vec<String>>,
    credential_type: Option<String>,
}

/// `GET /2.0/user`: the account, `X-OAuth-Scopes` and `X-Credential-Type`.
async fn get_user(
    http: &ProviderClient,
    endpoints: &Endpoints,
    auth: Auth<'_>,
) -> Result<UserAnswer, ProviderError> {
    let url = join(&endpoints.api, "/user").map_err(ProviderError::Protocol)?;
    let request = http.get(url).header("Accept", "application/json");
    let request = match auth {
        Auth::Bearer(token) => request.bearer_auth(token),
        Auth::Basic(email, token) => request.basic_auth(email, Some(token)),
    };
    let resp = http.send(request).await?;
    let scopes = resp
        .headers()
        .get("x-oauth-scopes")
        .and_then(|v| v.to_str().ok())
        .map(|v| BitbucketCloud.parse_scopes(v));
    let credential_type = resp
        .headers()
        .get("x-credential-type")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    if resp.status() == reqwest::StatusCode::FORBIDDEN {
        // "Your credentials lack one or more required privilege scopes":
        // the body lists what was granted when the header does not.
        let scopes = match scopes {
            Some(s) => Some(s),
            None => resp
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|b| granted_from_error(&b)),
        };
        return Ok(UserAnswer {
            login: None,
            scopes,
            credential_type,
        });
    }
    check_status(&resp, "GET /2.0/user")?;
    #[derive(serde::Deserialize)]
    struct Body {
        username: Option<String>,
    }
    let body: Body = resp
        .json()
        .await
        .map_err(|_| ProviderError::Protocol("GET /2.0/user returned no account".into()))?;
    Ok(UserAnswer {
        login: Some(body.username.filter(|u| !u.is_empty())),
        scopes,
        credential_type,
    })
}

/// `{"type":"error","error":{"detail":{"granted":[…],"required":[…]}}}`
fn granted_from_error(body: &serde_json::Value) -> Option<Vec<String>> {
    let granted = body.pointer("/error/detail/granted")?.as_array()?;
    Some(
        granted
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
    )
}

/// 401 is invalid; 429 and 5xx are temporary (with the wait Bitbucket asks
/// for, when it says); anything else unexpected.
pub(super) fn check_status(resp: &reqwest::Response, what: &str) -> Result<(), ProviderError> {
    let status = resp.status();
    if status == reqwest::StatusCode::UNAUTHORIZED {
        return Err(ProviderError::InvalidToken);
    }
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        let wait = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        return Err(ProviderError::Unavailable(match wait {
            Some(s) => format!("rate limited; retry after {s} s"),
            None => "rate limited".into(),
        }));
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn endpoints_for_bitbucket_org_and_a_stand_in() {
        let e = BitbucketCloud.endpoints(None, None).unwrap();
        assert_eq!(
            e.authorize.as_str(),
            "https://bitbucket.org/site/oauth2/authorize"
        );
        assert_eq!(
            e.token.as_str(),
            "https://bitbucket.org/site/oauth2/access_token"
        );
        assert_eq!(e.api.as_str(), "https://api.bitbucket.org/2.0");
        let org = Url::parse("https://bitbucket.org/").unwrap();
        let e = BitbucketCloud.endpoints(Some(&org), None).unwrap();
        assert_eq!(e.api.as_str(), "https://api.bitbucket.org/2.0");

        let mock = Url::parse("http://127.0.0.1:9/bitbucket").unwrap();
        let e = BitbucketCloud.endpoints(Some(&mock), None).unwrap();
        assert_eq!(
            e.authorize.as_str(),
            "http://127.0.0.1:9/bitbucket/site/oauth2/authorize"
        );
        assert_eq!(
            e.token.as_str(),
            "http://127.0.0.1:9/bitbucket/site/oauth2/access_token"
        );
        assert_eq!(e.api.as_str(), "http://127.0.0.1:9/bitbucket/2.0");
        let api = Url::parse("https://api.example.com/2.0").unwrap();
        let e = BitbucketCloud.endpoints(Some(&mock), Some(&api)).unwrap();
        assert_eq!(e.api, api);
        let odd = Url::parse("https://bitbucket.org/?x=1").unwrap();
        assert!(BitbucketCloud.endpoints(Some(&odd), None).is_err());
    }

    #[test]
    fn oauth_settings() {
        assert!(BitbucketCloud.needs_username());
        assert!(!BitbucketCloud.oauth_sends_scopes());
        assert!(matches!(
            BitbucketCloud.oauth_auth_type(),
            oauth2::AuthType::BasicAuth
        ));
        assert_eq!(BitbucketCloud.git_username("alice"), "x-token-auth");
        assert_eq!(ProviderKind::BitbucketCloud.as_str(), "bitbucket_cloud");
    }

    #[test]
    fn scopes_split_on_spaces_and_commas() {
        assert_eq!(
            BitbucketCloud.parse_scopes("account team repository:write"),
            s(&["account", "team", "repository:write"])
        );
        assert_eq!(
            BitbucketCloud.parse_scopes("read:user:bitbucket, write:repository:bitbucket"),
            s(&["read:user:bitbucket", "write:repository:bitbucket"])
        );
        assert!(BitbucketCloud.parse_scopes(" , ").is_empty());
    }

    #[test]
    fn legacy_implications() {
        let p = &BitbucketCloud;
        let rows: &[(&str, &[&str])] = &[
            ("repository:admin", &["repository:write", "repository"]),
            ("repository:write", &["repository"]),
            (
                "pullrequest:write",
                &["pullrequest", "repository:write", "repository"],
            ),
            ("pullrequest", &["repository"]),
            ("account:write", &["account"]),
            ("team:write", &["team"]),
            ("issue:write", &["issue"]),
            ("snippet:write", &["snippet"]),
            ("pipeline:write", &["pipeline"]),
            ("runner:write", &["runner"]),
        ];
        for (scope, implied) in rows {
            assert_eq!(p.implied_by(scope), *implied, "{scope}");
            assert!(missing_scopes(p, &s(&[scope]), &s(implied)).is_empty());
        }
        // and not the other way round
        assert_eq!(
            missing_scopes(p, &s(&["repository"]), &s(&["repository:write"])),
            s(&["repository:write"])
        );
        assert_eq!(
            missing_scopes(p, &s(&["repository:write"]), &s(&["repository:admin"])),
            s(&["repository:admin"])
        );
        for scope in ["account", "team", "webhook", "repository", "email"] {
            assert!(p.implied_by(scope).is_empty(), "{scope}");
        }
    }

    #[test]
    fn api_token_scopes_imply_nothing() {
        let p = &BitbucketCloud;
        for scope in API_RUNTIME {
            assert!(p.implied_by(scope).is_empty(), "{scope}");
        }
        assert_eq!(
            missing_scopes(
                p,
                &s(&["write:repository:bitbucket"]),
                &s(&["read:repository:bitbucket"])
            ),
            s(&["read:repository:bitbucket"])
        );
        assert_eq!(
            missing_scopes(
                p,
                &s(&["admin:repository:bitbucket"]),
                &s(&["write:repository:bitbucket"])
            ),
            s(&["write:repository:bitbucket"])
        );
        assert_eq!(
            missing_scopes(
                p,
                &s(&["write:webhook:bitbucket"]),
                &s(&["read:webhook:bitbucket"])
            ),
            s(&["read:webhook:bitbucket"])
        );
    }

    #[test]
    fn required_tables() {
        let p = &BitbucketCloud;
        assert_eq!(
            p.required_scopes(TokenPurpose::User),
            &["account", "team", "repository:write"]
        );
        assert_eq!(
            p.required_scopes(TokenPurpose::Runtime),
            &[
                "account",
                "team",
                "webhook",
                "repository:write",
                "repository:admin"
            ]
        );
        assert_eq!(Family::ApiToken.required(TokenPurpose::User), API_USER);
        assert_eq!(
            Family::ApiToken.required(TokenPurpose::Runtime),
            API_RUNTIME
        );
        // every user requirement is part of the runtime requirement
        for family in [Family::Legacy, Family::ApiToken] {
            for scope in family.required(TokenPurpose::User) {
                assert!(family.required(TokenPurpose::Runtime).contains(scope));
            }
        }
        // a consumer with the documents' user permissions passes; one
        // without workspace membership does not
        assert!(missing_scopes(p, &s(LEGACY_USER), &s(LEGACY_USER)).is_empty());
        assert_eq!(
            missing_scopes(p, &s(&["account", "repository:admin"]), &s(LEGACY_USER)),
            s(&["team"])
        );
        assert_eq!(
            missing_scopes(
                p,
                &s(&["account", "team", "repository:admin", "webhook"]),
                &s(LEGACY_RUNTIME)
            ),
            Vec::<String>::new()
        );
    }

    #[test]
    fn family_follows_the_reported_names() {
        assert_eq!(
            Family::of(&s(&["read:user:bitbucket"]), Family::Legacy),
            Family::ApiToken
        );
        assert_eq!(
            Family::of(&s(&["account", "team"]), Family::ApiToken),
            Family::Legacy
        );
        assert_eq!(Family::of(&[], Family::ApiToken), Family::ApiToken);
    }

    #[test]
    fn token_response_scopes_become_scope() {
        let body = br#"{"access_token":"a","token_type":"bearer","expires_in":7200,"refresh_token":"r","scopes":"account team"}"#.to_vec();
        let resp = http::Response::builder().status(200).body(body).unwrap();
        let out = BitbucketCloud.normalize_token_response(resp);
        let v: serde_json::Value = serde_json::from_slice(out.body()).unwrap();
        assert_eq!(v["scope"], "account team");
        let err = br#"{"error":"invalid_grant"}"#.to_vec();
        let resp = http::Response::builder()
            .status(400)
            .body(err.clone())
            .unwrap();
        assert_eq!(BitbucketCloud.normalize_token_response(resp).body(), &err);
    }

    #[test]
    fn granted_scopes_from_a_403_body() {
        let body = serde_json::json!({"type": "error", "error": {
            "message": "Your credentials lack one or more required privilege scopes.",
            "detail": {"granted": ["repository"], "required": ["account"]}}});
        assert_eq!(granted_from_error(&body), Some(s(&["repository"])));
        assert_eq!(granted_from_error(&serde_json::json!({})), None);
    }
}
