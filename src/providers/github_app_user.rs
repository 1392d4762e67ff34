//! GitHub App user tokens (`ghu_`): what an OAuth app of kind `github_app`
//! needs beyond GitHub's OAuth app flow. Such a token acts as the user, but
//! only where the App is installed and only with the App's permissions; it
//! has no OAuth scopes. So instead of scopes the broker asks
//! `GET /user/installations` whether the App reaches the runtime's
//! repositories, and narrows the token a runtime is served to the runtime's
//! repositories with `POST /applications/{client_id}/token/scoped`.

use super::{Endpoints, ProviderClient, ProviderError, ProviderKind, join};
use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

const API_VERSION: &str = "2022-11-28";
/// GitHub's largest page; more installations than this for one user and
/// App would be unusual, and the check then errs towards "not installed"
/// only for repositories it did not see.
const PER_PAGE: &str = "100";

/// Where the App reaches, as far as one runtime is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// Installed where the runtime needs it (somewhere at all, for a
    /// runtime that names no repositories).
    Installed,
    /// Not installed anywhere useful: why, in words for the user.
    NotInstalled(String),
}

/// The link where the user (or an owner) installs the App.
pub fn install_url(kind: ProviderKind, endpoints: &Endpoints, slug: &str) -> String {
    let web = endpoints.authorize.origin().ascii_serialization();
    let github_com =
        kind == ProviderKind::Github && endpoints.authorize.host_str() == Some("github.com");
    if github_com {
        format!("https://github.com/apps/{slug}/installations/new")
    } else {
        // GitHub Enterprise Server (and stand-ins for it) serve Apps here
        format!("{web}/github-apps/{slug}/installations/new")
    }
}

#[derive(Deserialize)]
struct Account {
    login: String,
}

#[derive(Deserialize)]
struct Installation {
    id: u64,
    account: Account,
    /// `all` or `selected`.
    repository_selection: String,
}

#[derive(Deserialize)]
struct Installations {
    installations: Vec<Installation>,
}

#[derive(Deserialize)]
struct Repository {
    full_name: String,
}

#[derive(Deserialize)]
struct Repositories {
    repositories: Vec<Repository>,
}

/// Maps the status of an API call made with the user's token.
fn check_status(status: StatusCode, what: &str) -> Result<(), ProviderError> {
    match status.as_u16() {
        200..=299 => Ok(()),
        401 => Err(ProviderError::InvalidToken),
        429 => Err(ProviderError::Unavailable("rate limited".into())),
        s if s >= 500 => Err(ProviderError::Unavailable(format!("HTTP {s}"))),
        s => Err(ProviderError::Protocol(format!("{what} answered HTTP {s}"))),
    }
}

async fn get_json<T: serde::de::DeserializeOwned>(
    http: &ProviderClient,
    url: Url,
    token: &SecretString,
    what: &str,
) -> Result<T, ProviderError> {
    let request = http
        .get(url)
        .bearer_auth(token.expose_secret())
        .header("Accept", "application/vnd.github+json")
        .header("X-GitHub-Api-Version", API_VERSION);
    let resp = http.send(request).await?;
    let status = resp.status();
    // a 403 that carries rate-limit headers is a pause, not a verdict
    if status == StatusCode::FORBIDDEN
        && (resp.headers().contains_key("retry-after")
            || resp
                .headers()
                .get("x-ratelimit-remaining")
                .is_some_and(|v| v.as_bytes() == b"0"))
    {
        return Err(ProviderError::Unavailable("rate limited".into()));
    }
    check_status(status, what)?;
    resp.json()
        .await
        .map_err(|_| ProviderError::Protocol(format!("{what} answered an unreadable body")))
}

/// Whether the App `token` belongs to is installed where a runtime that
/// works on `repositories` (`owner/name`; empty = any) needs it.
pub async fn reach(
    http: &ProviderClient,
    endpoints: &Endpoints,
    token: &SecretString,
    repositories: &[String],
) -> Result<Reach, ProviderError> {
    let mut url = join(&endpoints.api, "/user/installations").map_err(ProviderError::Protocol)?;
    url.query_pairs_mut().append_pair("per_page", PER_PAGE);
    let found: Installations = get_json(http, url, token, "GET /user/installations").await?;
    if found.installations.is_empty() {
        return Ok(Reach::NotInstalled(
            "the GitHub App is not installed on any account or organization you can reach".into(),
        ));
    }
    if repositories.is_empty() {
        return Ok(Reach::Installed);
    }
    let mut missing = Vec::new();
    let mut listed: Vec<(u64, Vec<String>)> = Vec::new();
    for wanted in repositories {
        let owner = wanted.split('/').next().unwrap_or_default();
        let Some(inst) = found
            .installations
            .iter()
            .find(|i| i.account.login.eq_ignore_ascii_case(owner))
        else {
            missing.push(wanted.clone());
            continue;
        };
        if inst.repository_selection == "all" {
            continue;
        }
        let names = match listed.iter().find(|(id, _)| *id == inst.id) {
            Some((_, names)) => names.clone(),
            None => {
                let mut url = join(
                    &endpoints.api,
                    &format!("/user/installations/{}/repositories", inst.id),
                )
                .map_err(ProviderError::Protocol)?;
                url.query_pairs_mut().append_pair("per_page", PER_PAGE);
                let repos: Repositories = get_json(
                    http,
                    url,
                    token,
                    "GET /user/installations/{id}/repositories",
                )
                .await?;
                let names: Vec<String> = repos
                    .repositories
                    .into_iter()
                    .map(|r| r.full_name)
                    .collect();
                listed.push((inst.id, names.clone()));
                names
            }
        };
        if !names.iter().any(|n| n.eq_ignore_ascii_case(wanted)) {
            missing.push(wanted.clone());
        }
    }
    if missing.is_empty() {
        Ok(Reach::Installed)
    } else {
        Ok(Reach::NotInstalled(format!(
            "the GitHub App is not installed on {} (the repositories this runtime works on)",
            missing.join(", ")
        )))
    }
}

/// A user token narrowed to some repositories.
pub struct Narrowed {
    pub token: SecretString,
    pub expires_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for Narrowed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Narrowed")
            .field("token", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Why a token could not be narrowed.
#[derive(Debug, thiserror::Error)]
pub enum NarrowError {
    /// Network, timeout, 5xx, rate limit: try again later.
    #[error("GitHub could not narrow the token right now ({0})")]
    Unavailable(String),
    /// GitHub says the token is not valid (it answers 404 for that).
    #[error("GitHub does not know the token any more (revoked or expired)")]
    InvalidToken,
    /// GitHub refused for good: the repositories are out of the App's
    /// reach, or the App's credentials are wrong. The message says which.
    #[error("{0}")]
    Refused(String),
}

/// `POST /applications/{client_id}/token/scoped`: a new token for the same
/// user that reaches only `repositories` (all of one owner, `owner/name`).
pub async fn narrow(
    http: &ProviderClient,
    endpoints: &Endpoints,
    client_id: &str,
    client_secret: &SecretString,
    token: &SecretString,
    repositories: &[String],
) -> Result<Narrowed, NarrowError> {
    let Some(owner) = repositories.first().and_then(|r| r.split('/').next()) else {
        return Err(NarrowError::Refused("no repositories to narrow to".into()));
    };
    let names: Vec<&str> = repositories
        .iter()
        .filter_map(|r| r.split_once('/').map(|(_, name)| name))
        .collect();
    let url = join(
        &endpoints.api,
        &format!("/applications/{client_id}/token/scoped"),
    )
    .map_err(NarrowError::Refused)?;
    let request = http
        .post(url)
        .basic_auth(client_id, Some(client_secret.expose_secret()))
        .header("Accept", "application/vnd.github+json")
        .header("X-GitHub-Api-Version", API_VERSION)
        .json(&serde_json::json!({
            "access_token": token.expose_secret(),
            "target": owner,
            "repositories": names,
        }));
    let resp = http.send(request).await.map_err(|e| match e {
        ProviderError::Unavailable(d) | ProviderError::Protocol(d) => NarrowError::Unavailable(d),
        ProviderError::InvalidToken => NarrowError::InvalidToken,
    })?;
    let status = resp.status().as_u16();
    let rate_limited = resp.headers().contains_key("retry-after")
        || resp
            .headers()
            .get("x-ratelimit-remaining")
            .is_some_and(|v| v.as_bytes() == b"0");
    match status {
        200 | 201 => {}
        404 => return Err(NarrowError::InvalidToken),
        401 => {
            return Err(NarrowError::Refused(
                "GitHub refused the GitHub App's client id or secret when narrowing the token; the administrator must check the OAuth app".into(),
            ));
        }
        403 if rate_limited => return Err(NarrowError::Unavailable("rate limited".into())),
        429 => return Err(NarrowError::Unavailable("rate limited".into())),
        s if s >= 500 => return Err(NarrowError::Unavailable(format!("HTTP {s}"))),
        s => {
            #[derive(Deserialize)]
            struct Message {
                message: Option<String>,
            }
            let message = resp
                .json::<Message>()
                .await
                .ok()
                .and_then(|m| m.message)
                .map(|m| m.chars().filter(|c| !c.is_control()).take(200).collect())
                .unwrap_or_else(|| format!("HTTP {s}"));
            return Err(NarrowError::Refused(format!(
                "GitHub would not narrow the token to {} ({message}): the GitHub App is not installed on them, or the user cannot reach them",
                repositories.join(", ")
            )));
        }
    }
    #[derive(Deserialize)]
    struct Body {
        token: String,
        expires_at: Option<DateTime<Utc>>,
    }
    let body: Body = resp
        .json()
        .await
        .map_err(|_| NarrowError::Unavailable("the scoped-token answer had no token".into()))?;
    Ok(Narrowed {
        token: SecretString::from(body.token),
        expires_at: body.expires_at,
    })
}

/// Checks a runtime's `repositories` (`owner/name` each); for a runtime
/// whose user tokens come from a GitHub App they must share one owner,
/// because one scoped token targets one account.
pub fn check_repositories(repositories: &[String], github_app: bool) -> Result<(), String> {
    let valid_part = |p: &str| {
        !p.is_empty()
            && p.len() <= 100
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    let mut seen = std::collections::BTreeSet::new();
    for r in repositories {
        let ok = r
            .split_once('/')
            .is_some_and(|(o, n)| valid_part(o) && valid_part(n));
        if !ok {
            return Err(format!(
                "`{}` is not a repository written owner/name (letters, digits, `-`, `_`, `.`)",
                r.chars()
                    .filter(|c| !c.is_control())
                    .take(120)
                    .collect::<String>()
            ));
        }
        if !seen.insert(r.to_ascii_lowercase()) {
            return Err(format!("`{r}` is listed twice"));
        }
    }
    if github_app {
        let mut owners = repositories
            .iter()
            .filter_map(|r| r.split('/').next())
            .map(str::to_ascii_lowercase)
            .collect::<Vec<_>>();
        owners.sort();
        owners.dedup();
        if owners.len() > 1 {
            return Err(
                "a GitHub App user token is narrowed to the repositories of one owner: list repositories of one account or organization only, or use one runtime per owner"
                    .into(),
            );
        }
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
    fn repositories_are_owner_slash_name_of_one_owner_for_apps() {
        assert!(check_repositories(&s(&["acme/api", "Acme/web"]), true).is_ok());
        assert!(check_repositories(&[], true).is_ok());
        let e = check_repositories(&s(&["acme"]), false).unwrap_err();
        assert!(
            e.contains("`acme` is not a repository written owner/name"),
            "{e}"
        );
        assert!(check_repositories(&s(&["acme/a/b"]), false).is_err());
        assert!(
            check_repositories(&s(&["acme/a", "ACME/A"]), false)
                .unwrap_err()
                .contains("twice")
        );
        assert!(check_repositories(&s(&["acme/a", "other/b"]), false).is_ok());
        let e = check_repositories(&s(&["acme/a", "other/b"]), true).unwrap_err();
        assert!(e.contains("one owner"), "{e}");
    }

    #[test]
    fn install_links_for_github_com_and_enterprise() {
        let gh = super::super::provider(ProviderKind::Github)
            .endpoints(None, None)
            .unwrap();
        assert_eq!(
            install_url(ProviderKind::Github, &gh, "my-app"),
            "https://github.com/apps/my-app/installations/new"
        );
        let base = Url::parse("https://ghe.example.com").unwrap();
        let ghe = super::super::provider(ProviderKind::GithubEnterprise)
            .endpoints(Some(&base), None)
            .unwrap();
        assert_eq!(
            install_url(ProviderKind::GithubEnterprise, &ghe, "my-app"),
            "https://ghe.example.com/github-apps/my-app/installations/new"
        );
    }
}
