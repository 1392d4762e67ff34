//! The sign-in round trip: a login record (nonce, PKCE verifier, where to
//! go next) stored one-time under the state's digest and bound to the
//! browser by a cookie; at the callback it is consumed, the ID token is
//! checked and a fresh session is created (a new id at every login).

use super::oidc::{Oidc, OidcError};
use super::{Session, SessionStore};
use crate::crypto;
use crate::store::{EphemeralKey, Store, StoreError};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

const NS: &str = "login";

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
}

#[derive(Serialize, Deserialize)]
struct LoginRecord {
    nonce: String,
    pkce_verifier: String,
    binding_sha256: String,
    return_to: String,
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
    store: Arc<dyn Store>,
    oidc: Arc<Oidc>,
    sessions: Arc<SessionStore>,
    ttl: Duration,
    secure_cookies: bool,
}

impl Logins {
    pub fn new(
        store: Arc<dyn Store>,
        oidc: Arc<Oidc>,
        sessions: Arc<SessionStore>,
        ttl: Duration,
        secure_cookies: bool,
    ) -> Self {
        Self {
            store,
            oidc,
            sessions,
            ttl,
            secure_cookies,
        }
    }

    /// `return_to` must already be a checked same-origin path.
    pub async fn begin(&self, return_to: String) -> Result<StartedLogin, LoginError> {
        let challenge = self.oidc.begin().await?;
        let binding = crypto::random_string(32);
        let record = LoginRecord {
            nonce: challenge.nonce,
            pkce_verifier: challenge.pkce_verifier,
            binding_sha256: crypto::sha256_hex(binding.as_bytes()),
            return_to,
        };
        let bytes =
            serde_json::to_vec(&record).map_err(|e| StoreError::corrupt("sign-in record", &e))?;
        let key = EphemeralKey::new(NS, crypto::sha256_hex(challenge.state.as_bytes()));
        if !self.store.put_new(&key, &bytes, self.ttl).await? {
            return Err(StoreError::Conflict.into());
        }
        Ok(StartedLogin {
            url: challenge.url,
            cookie_name: login_cookie_name(&challenge.state, self.secure_cookies),
            binding: SecretString::from(binding),
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
        let key = EphemeralKey::new(NS, crypto::sha256_hex(state.as_bytes()));
        let bytes = self
            .store
            .take(&key)
            .await?
            .ok_or(LoginError::UnknownState)?;
        let record: LoginRecord = serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::corrupt("sign-in record", &e))?;
        if !crypto::binding_matches(binding, &record.binding_sha256) {
            return Err(LoginError::Forbidden);
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
