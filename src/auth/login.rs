//! The sign-in round trip, without server-side state: what the callback
//! needs (nonce, PKCE verifier, where to go next, expiry) is sealed with
//! the keyring into the browser's binding cookie, bound by associated data
//! to the state's digest. `GET /login` stores nothing, so anonymous sign-in
//! starts cannot fill the store. At the callback the cookie is removed and
//! opened, the ID token is checked and a fresh session is created (a new
//! id at every login). A replayed callback finds no cookie, and its code
//! is spent at the identity provider anyway.

use super::oidc::{Oidc, OidcError};
use super::{Session, SessionStore};
use crate::clock::Clock;
use crate::crypto::{self, Keyring, Sealed};
use crate::store::StoreError;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("this sign-in is unknown, expired or already used; sign in again")]
    UnknownState,
    #[error("this sign-in was started in another browser; sign in again")]
    Forbidden,
    #[error("the identity provider refused the sign-in: {0}")]
    Denied(String),
    #[error(transparent)]
    Oidc(#[from] OidcError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("sealing the sign-in: {0}")]
    Seal(#[from] crypto::CryptoError),
}

/// Sealed into the cookie: short field names keep the cookie small.
#[derive(Serialize, Deserialize)]
struct LoginRecord {
    #[serde(rename = "n")]
    nonce: String,
    #[serde(rename = "v")]
    pkce_verifier: String,
    #[serde(rename = "r")]
    return_to: String,
    /// Unix seconds, from the injected clock.
    #[serde(rename = "e")]
    expires_at: i64,
}

fn aad(state: &str) -> Vec<u8> {
    crypto::associated_data("login", &[&crypto::sha256_hex(state.as_bytes())])
}

/// `kid:nonce:ct` — the key id alphabet has no `:`, base64url neither.
fn cookie_value(sealed: &Sealed) -> String {
    format!("{}:{}:{}", sealed.kid, sealed.nonce, sealed.ct)
}

fn parse_cookie(value: &str) -> Option<Sealed> {
    let mut parts = value.splitn(3, ':');
    let (kid, nonce, ct) = (parts.next()?, parts.next()?, parts.next()?);
    Some(Sealed {
        kid: kid.to_owned(),
        nonce: nonce.to_owned(),
        ct: ct.to_owned(),
    })
}

pub struct StartedLogin {
    pub url: url::Url,
    pub cookie_name: String,
    pub binding: SecretString,
    pub ttl: Duration,
}

pub fn login_cookie_name(state: &str, secure: bool) -> String {
    crypto::binding_cookie_name("login", state, secure)
}

pub struct Logins {
    keyring: Arc<Keyring>,
    clock: Arc<dyn Clock>,
    oidc: Arc<Oidc>,
    sessions: Arc<SessionStore>,
    ttl: Duration,
    secure_cookies: bool,
}

impl Logins {
    pub fn new(
        keyring: Arc<Keyring>,
        clock: Arc<dyn Clock>,
        oidc: Arc<Oidc>,
        sessions: Arc<SessionStore>,
        ttl: Duration,
        secure_cookies: bool,
    ) -> Self {
        Self {
            keyring,
            clock,
            oidc,
            sessions,
            ttl,
            secure_cookies,
        }
    }

    /// `return_to` must already be a checked same-origin path. The
    /// returned `binding` is the cookie value: the sealed record.
    pub async fn begin(&self, return_to: String) -> Result<StartedLogin, LoginError> {
        let challenge = self.oidc.begin().await?;
        let ttl = chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::minutes(10));
        let record = LoginRecord {
            nonce: challenge.nonce,
            pkce_verifier: challenge.pkce_verifier,
            return_to,
            expires_at: (self.clock.now() + ttl).timestamp(),
        };
        let bytes =
            serde_json::to_vec(&record).map_err(|e| StoreError::corrupt("sign-in record", &e))?;
        let sealed = self.keyring.seal(&aad(&challenge.state), &bytes)?;
        Ok(StartedLogin {
            url: challenge.url,
            cookie_name: login_cookie_name(&challenge.state, self.secure_cookies),
            binding: SecretString::from(cookie_value(&sealed)),
            ttl: self.ttl,
        })
    }

    /// Returns the new session's cookie id, the session and where to go.
    pub async fn complete(
        &self,
        state: &str,
        code: Option<String>,
        error: Option<String>,
        binding: Option<&str>,
    ) -> Result<(String, Session, String), LoginError> {
        if state.is_empty() || state.len() > 512 {
            return Err(LoginError::UnknownState);
        }
        // no cookie: never started here, already completed, or expired
        let sealed = binding
            .and_then(parse_cookie)
            .ok_or(LoginError::UnknownState)?;
        let bytes = self
            .keyring
            .open(&aad(state), &sealed)
            .map_err(|e| match e {
                // sealed for another state, or tampered with
                crypto::CryptoError::Open => LoginError::Forbidden,
                _ => LoginError::UnknownState,
            })?;
        let record: LoginRecord = serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::corrupt("sign-in record", &e))?;
        if self.clock.now().timestamp() >= record.expires_at {
            return Err(LoginError::UnknownState);
        }
        if let Some(error) = error {
            return Err(LoginError::Denied(
                error.chars().filter(|c| !c.is_control()).take(64).collect(),
            ));
        }
        let code = code.ok_or_else(|| LoginError::Denied("no authorization code".into()))?;
        let user = self
            .oidc
            .complete(code, record.nonce, record.pkce_verifier)
            .await?;
        let (id, session) = self.sessions.create(user).await?;
        tracing::info!(user = %session.user.sub, "signed in");
        Ok((id, session, record.return_to))
    }
}
