//! GitHub Apps as the source of Git Runtime tokens: the App's private key
//! (which never leaves this process), the JWT that authenticates as the App
//! (RS256, `iat` 60 s in the past, `exp` 9 min ahead, `iss` = App id), and
//! the three calls the broker makes with it: read an installation, find an
//! owner's installation, and mint an installation token
//! (`POST /app/installations/{id}/access_tokens`), optionally narrowed to
//! repositories and permissions.
//!
//! The JWS is put together here rather than with a JWT crate: it is one
//! fixed header, three claims and one RS256 signature, made with the `rsa`
//! and `sha2` crates the broker already builds (a JWT crate would bring a
//! second RSA implementation for the same three lines).

use super::{ProviderClient, ProviderError};
use base64::Engine;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use url::Url;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Git over HTTPS takes an installation token as Basic `x-access-token:<token>`.
pub const GIT_USERNAME: &str = "x-access-token";

/// What a Git Runtime token must be allowed, as GitHub App permissions:
/// (API name, level, what the App settings page calls it).
pub const RUNTIME_PERMISSIONS: [(&str, &str, &str); 4] = [
    ("administration", "write", "Administration: Read and write"),
    ("contents", "write", "Contents: Read and write"),
    ("repository_hooks", "write", "Webhooks: Read and write"),
    ("metadata", "read", "Metadata: Read-only"),
];

/// The App's private key. Its `Debug` prints nothing of it.
#[derive(Clone)]
pub struct AppKey(rsa::RsaPrivateKey);

impl std::fmt::Debug for AppKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppKey([redacted])")
    }
}

impl AppKey {
    /// Reads a PEM private key as GitHub hands it out (PKCS#1, `BEGIN RSA
    /// PRIVATE KEY`) or in PKCS#8 (`BEGIN PRIVATE KEY`). The error never
    /// quotes the key.
    pub fn from_pem(pem: &SecretString) -> Result<Self, String> {
        use rsa::pkcs1::DecodeRsaPrivateKey;
        use rsa::pkcs8::DecodePrivateKey;
        let text = pem.expose_secret().trim();
        rsa::RsaPrivateKey::from_pkcs1_pem(text)
            .or_else(|_| rsa::RsaPrivateKey::from_pkcs8_pem(text))
            .map(Self)
            .map_err(|_| {
                "is not an RSA private key in PEM form (the .pem file GitHub offers under the App's settings > Private keys > Generate a private key)".to_owned()
            })
    }

    /// A fresh 2048-bit key: the demo's App key, made at start, kept in memory.
    pub fn generate() -> Result<Self, String> {
        rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048)
            .map(Self)
            .map_err(|e| format!("cannot generate a key: {e}"))
    }

    /// A JWT for the App `app_id`, valid from a minute before `now` (clock
    /// drift) for ten minutes at most, as GitHub requires.
    pub fn jwt(&self, app_id: &str, now: DateTime<Utc>) -> Result<SecretString, ProviderError> {
        #[derive(Serialize)]
        struct Claims {
            iat: i64,
            exp: i64,
            iss: serde_json::Value,
        }
        // the App ID as GitHub's own examples send it: a number (a client
        // id, which GitHub also takes, stays a string)
        let iss = app_id
            .parse::<u64>()
            .map_or_else(|_| serde_json::Value::from(app_id), serde_json::Value::from);
        let header = B64.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let claims = serde_json::to_vec(&Claims {
            iat: now.timestamp() - 60,
            exp: now.timestamp() + 9 * 60,
            iss,
        })
        .map_err(|_| ProviderError::Protocol("could not encode the App's JWT".into()))?;
        let signing_input = format!("{header}.{}", B64.encode(claims));
        let digest = crate::config::sha256(signing_input.as_bytes());
        let signature = self
            .0
            .sign(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &digest)
            .map_err(|_| ProviderError::Protocol("could not sign the App's JWT".into()))?;
        Ok(SecretString::from(format!(
            "{signing_input}.{}",
            B64.encode(signature)
        )))
    }

    /// The public half, PEM (SPKI), to register the App at the mock.
    pub fn public_pem(&self) -> Result<String, String> {
        use rsa::pkcs8::EncodePublicKey;
        self.0
            .to_public_key()
            .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
            .map_err(|e| e.to_string())
    }
}

/// One configured GitHub App, as the token lifecycle needs it.
#[derive(Debug, Clone)]
pub struct GithubApp {
    pub name: String,
    pub app_id: String,
    pub key: AppKey,
    /// `https://api.github.com`, or `<base>/api/v3` for GitHub Enterprise Server.
    pub api: Url,
}

/// An installation, as GitHub describes it.
#[derive(Debug, Clone, Deserialize)]
pub struct Installation {
    pub id: u64,
    pub account: Account,
    #[serde(default)]
    pub permissions: BTreeMap<String, String>,
    #[serde(default)]
    pub repository_selection: Option<String>,
    #[serde(default)]
    pub suspended_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Account {
    pub login: String,
}

/// An installation token as minted.
#[derive(Clone)]
pub struct Minted {
    pub token: SecretString,
    pub expires_at: DateTime<Utc>,
    pub permissions: BTreeMap<String, String>,
    /// `owner/name` of the repositories it is limited to; empty with
    /// `repository_selection` `all`.
    pub repositories: Vec<String>,
}

impl std::fmt::Debug for Minted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minted")
            .field("expires_at", &self.expires_at)
            .field("permissions", &self.permissions)
            .field("repositories", &self.repositories)
            .finish_non_exhaustive()
    }
}

/// Why an App call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppError {
    /// GitHub said no, and asking again will not change that (installation
    /// gone or suspended, the App's key or id refused, permissions or
    /// repositories beyond the installation).
    #[error("{0}")]
    Permanent(String),
    /// Network, timeout, 5xx, rate limit: try again later.
    #[error("{detail}")]
    Temporary {
        detail: String,
        retry_after: Duration,
    },
}

fn temporary(detail: impl Into<String>) -> AppError {
    AppError::Temporary {
        detail: detail.into(),
        retry_after: Duration::from_secs(5),
    }
}

impl From<ProviderError> for AppError {
    fn from(e: ProviderError) -> Self {
        temporary(e.to_string())
    }
}

fn join(api: &Url, path: &str) -> Result<Url, AppError> {
    let base = api.as_str().trim_end_matches('/');
    Url::parse(&format!("{base}{path}"))
        .map_err(|_| AppError::Permanent(format!("bad API URL {api}")))
}

/// GitHub's `message` from an error body, never more than a line.
async fn message_of(resp: reqwest::Response) -> String {
    #[derive(Deserialize)]
    struct Body {
        message: Option<String>,
    }
    let text = resp.text().await.unwrap_or_default();
    serde_json::from_str::<Body>(&text)
        .ok()
        .and_then(|b| b.message)
        .map(|m| m.chars().take(200).collect())
        .unwrap_or_default()
}

/// Classifies a non-success answer of an App call.
async fn failure(app: &GithubApp, what: &str, resp: reqwest::Response) -> AppError {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let message = message_of(resp).await;
    let said = if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    };
    match status {
        401 => AppError::Permanent(format!(
            "GitHub refused the JWT of GitHub App `{}` (app_id {}){said}; check app_id and that private_key is a current key of that App",
            app.name, app.app_id
        )),
        403 if message.to_ascii_lowercase().contains("rate limit") => AppError::Temporary {
            detail: format!("GitHub rate-limited {what}{said}"),
            retry_after: Duration::from_secs(retry_after.unwrap_or(60)),
        },
        403 => AppError::Permanent(format!("GitHub refused {what} (403){said}")),
        404 => AppError::Permanent(format!("{what}: not found (404){said}")),
        422 => AppError::Permanent(format!("GitHub refused {what} (422){said}")),
        429 => AppError::Temporary {
            detail: format!("GitHub rate-limited {what}"),
            retry_after: Duration::from_secs(retry_after.unwrap_or(60)),
        },
        s => temporary(format!("GitHub answered {s} to {what}{said}")),
    }
}

fn api_request(
    http: &ProviderClient,
    method: reqwest::Method,
    url: Url,
    jwt: &SecretString,
) -> reqwest::RequestBuilder {
    http.request(method, url)
        .header(reqwest::header::ACCEPT, "application/vnd.github+json")
        .header("X-GitHub-Api-Version", "2022-11-28")
        .bearer_auth(jwt.expose_secret())
}

/// `GET /app/installations/{id}`.
pub async fn installation(
    http: &ProviderClient,
    app: &GithubApp,
    id: u64,
    now: DateTime<Utc>,
) -> Result<Installation, AppError> {
    let jwt = app.key.jwt(&app.app_id, now)?;
    let url = join(&app.api, &format!("/app/installations/{id}"))?;
    let resp = http
        .send(api_request(http, reqwest::Method::GET, url, &jwt))
        .await?;
    if !resp.status().is_success() {
        let what = format!("installation {id} of GitHub App `{}`", app.name);
        return Err(failure(app, &what, resp).await);
    }
    resp.json::<Installation>()
        .await
        .map_err(|_| temporary("unexpected installation answer from GitHub"))
}

/// The App's installation on the account `owner`: `GET /orgs/{owner}/installation`,
/// then `GET /users/{owner}/installation` for a personal account.
pub async fn installation_of(
    http: &ProviderClient,
    app: &GithubApp,
    owner: &str,
    now: DateTime<Utc>,
) -> Result<Installation, AppError> {
    if owner.is_empty() || !owner.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(AppError::Permanent(format!(
            "`{owner}` is not a GitHub account login"
        )));
    }
    let jwt = app.key.jwt(&app.app_id, now)?;
    for kind in ["orgs", "users"] {
        let url = join(&app.api, &format!("/{kind}/{owner}/installation"))?;
        let resp = http
            .send(api_request(http, reqwest::Method::GET, url, &jwt))
            .await?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            continue;
        }
        if !resp.status().is_success() {
            let what = format!("the installation of GitHub App `{}` on `{owner}`", app.name);
            return Err(failure(app, &what, resp).await);
        }
        return resp
            .json::<Installation>()
            .await
            .map_err(|_| temporary("unexpected installation answer from GitHub"));
    }
    Err(AppError::Permanent(format!(
        "GitHub App `{}` is not installed on the account `{owner}`; install it there first",
        app.name
    )))
}

/// Which of the runtime permissions `granted` lacks, as the App settings
/// page names them.
pub fn missing_runtime_permissions(granted: &BTreeMap<String, String>) -> Vec<&'static str> {
    let rank = |level: &str| match level {
        "admin" => 3,
        "write" => 2,
        "read" => 1,
        _ => 0,
    };
    RUNTIME_PERMISSIONS
        .iter()
        .filter(|(name, level, _)| granted.get(*name).map_or(0, |g| rank(g)) < rank(level))
        .map(|(_, _, label)| *label)
        .collect()
}

/// `POST /app/installations/{id}/access_tokens`, narrowed to `repositories`
/// (`owner/name`; GitHub takes the names, all under the installation's
/// account) and `permissions` when given.
pub async fn mint(
    http: &ProviderClient,
    app: &GithubApp,
    installation: u64,
    repositories: &[String],
    permissions: &BTreeMap<String, String>,
    now: DateTime<Utc>,
) -> Result<Minted, AppError> {
    #[derive(Serialize)]
    struct Body<'a> {
        #[serde(skip_serializing_if = "Vec::is_empty")]
        repositories: Vec<&'a str>,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        permissions: &'a BTreeMap<String, String>,
    }
    #[derive(Deserialize)]
    struct Answer {
        token: String,
        expires_at: DateTime<Utc>,
        #[serde(default)]
        permissions: BTreeMap<String, String>,
        #[serde(default)]
        repositories: Vec<Repo>,
    }
    #[derive(Deserialize)]
    struct Repo {
        full_name: String,
    }
    let names = repositories
        .iter()
        .map(|r| r.rsplit_once('/').map_or(r.as_str(), |(_, name)| name))
        .collect();
    let jwt = app.key.jwt(&app.app_id, now)?;
    let url = join(
        &app.api,
        &format!("/app/installations/{installation}/access_tokens"),
    )?;
    let resp = http
        .send(
            api_request(http, reqwest::Method::POST, url, &jwt).json(&Body {
                repositories: names,
                permissions,
            }),
        )
        .await?;
    if !resp.status().is_success() {
        let what = format!(
            "an installation token for installation {installation} of GitHub App `{}`",
            app.name
        );
        return Err(failure(app, &what, resp).await);
    }
    let a: Answer = resp
        .json()
        .await
        .map_err(|_| temporary("unexpected access_tokens answer from GitHub"))?;
    Ok(Minted {
        token: SecretString::from(a.token),
        expires_at: a.expires_at,
        permissions: a.permissions,
        repositories: a.repositories.into_iter().map(|r| r.full_name).collect(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use rsa::pkcs1::EncodeRsaPrivateKey;

    fn key() -> (AppKey, rsa::RsaPrivateKey) {
        let private = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
        let pem = private.to_pkcs1_pem(rsa::pkcs1::LineEnding::LF).unwrap();
        (
            AppKey::from_pem(&SecretString::from(pem.to_string())).unwrap(),
            private,
        )
    }

    #[test]
    fn jwt_is_rs256_with_github_claims_and_verifies() {
        let (k, private) = key();
        let now = DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let jwt = k.jwt("12345", now).unwrap();
        let parts: Vec<&str> = jwt.expose_secret().split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value =
            serde_json::from_slice(&B64.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "RS256");
        let claims: serde_json::Value =
            serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["iss"], 12345);
        assert_eq!(claims["iat"], now.timestamp() - 60);
        assert_eq!(claims["exp"], now.timestamp() + 540);
        let digest = <sha2::Sha256 as sha2::Digest>::digest(format!("{}.{}", parts[0], parts[1]));
        private
            .to_public_key()
            .verify(
                rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
                &digest,
                &B64.decode(parts[2]).unwrap(),
            )
            .expect("signature verifies with the public key");
    }

    #[test]
    fn a_bad_key_is_refused_without_quoting_it_and_debug_hides_it() {
        let e = AppKey::from_pem(&SecretString::from(
            "-----BEGIN RSA PRIVATE KEY-----\nsecretbits\n-----END RSA PRIVATE KEY-----".to_owned(),
        ))
        .unwrap_err();
        assert!(!e.contains("secretbits"), "{e}");
        let (k, _) = key();
        assert_eq!(format!("{k:?}"), "AppKey([redacted])");
    }

    #[test]
    fn missing_permissions_are_named_as_github_shows_them() {
        let granted: BTreeMap<String, String> = [
            ("contents", "write"),
            ("metadata", "read"),
            ("administration", "read"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
        assert_eq!(
            missing_runtime_permissions(&granted),
            vec!["Administration: Read and write", "Webhooks: Read and write"]
        );
    }
}
