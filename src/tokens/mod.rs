//! Git user tokens, one per (runtime, user). Public facts (provider, login,
//! scopes, dates) are stored in clear for the page; the access and refresh
//! tokens are sealed with associated data naming the runtime and the user.
//! Every write bumps the record's version so updates can compare-and-swap.

pub mod runtime;
pub mod service;

use crate::crypto::{self, Keyring, Sealed};
use crate::providers::ProviderKind;
use crate::store::{Collection, Expect, Store, StoreError};
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored token does not open: {0}")]
    Crypto(#[from] crypto::CryptoError),
}

/// How the token was added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum TokenSource {
    OAuth { app: String },
    Pat,
}

#[derive(Clone)]
pub struct UserToken {
    pub runtime: String,
    pub user: String,
    pub access_token: SecretString,
    pub refresh_token: Option<SecretString>,
    pub git_username: String,
    pub provider: ProviderKind,
    pub provider_login: String,
    pub scopes: Vec<String>,
    pub issued_at: DateTime<Utc>,
    /// The earlier of the provider's expiry and the admin-set lifetime.
    pub expires_at: Option<DateTime<Utc>>,
    pub source: TokenSource,
}

impl std::fmt::Debug for UserToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserToken")
            .field("runtime", &self.runtime)
            .field("user", &self.user)
            .field("provider", &self.provider)
            .field("provider_login", &self.provider_login)
            .field("scopes", &self.scopes)
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl UserToken {
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|e| now >= e)
    }
}

#[derive(Serialize, Deserialize)]
struct StoredToken {
    provider: ProviderKind,
    provider_login: String,
    git_username: String,
    scopes: Vec<String>,
    issued_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    source: TokenSource,
    secrets: Sealed,
}

#[derive(Serialize, Deserialize)]
struct Secrets {
    access_token: String,
    refresh_token: Option<String>,
}

pub const KIND: &str = "user_token";

/// The collection holding every user token of one runtime.
pub fn runtime_collection(runtime: &str) -> Collection {
    Collection::new(KIND, runtime)
}

fn aad(runtime: &str, user: &str) -> Vec<u8> {
    crypto::associated_data(KIND, &[runtime, user])
}

pub struct TokenRepo {
    store: Arc<dyn Store>,
    keyring: Arc<Keyring>,
}

impl TokenRepo {
    pub fn new(store: Arc<dyn Store>, keyring: Arc<Keyring>) -> Self {
        Self { store, keyring }
    }

    /// The token and its version.
    pub async fn get(
        &self,
        runtime: &str,
        user: &str,
    ) -> Result<Option<(UserToken, u64)>, TokenError> {
        let Some(rec) = self
            .store
            .record_get(&runtime_collection(runtime), user)
            .await?
        else {
            return Ok(None);
        };
        let stored: StoredToken = serde_json::from_slice(&rec.value)
            .map_err(|e| StoreError::corrupt("user token", &e))?;
        let plain = self.keyring.open(&aad(runtime, user), &stored.secrets)?;
        let secrets: Secrets = serde_json::from_slice(&plain)
            .map_err(|_| StoreError::Corrupt("user token secrets".into()))?;
        Ok(Some((
            UserToken {
                runtime: runtime.to_owned(),
                user: user.to_owned(),
                access_token: SecretString::from(secrets.access_token),
                refresh_token: secrets.refresh_token.map(SecretString::from),
                git_username: stored.git_username,
                provider: stored.provider,
                provider_login: stored.provider_login,
                scopes: stored.scopes,
                issued_at: stored.issued_at,
                expires_at: stored.expires_at,
                source: stored.source,
            },
            rec.version,
        )))
    }

    /// Writes the token if `expect` holds; returns the new version.
    pub async fn put(&self, token: &UserToken, expect: Expect) -> Result<u64, TokenError> {
        let secrets = Secrets {
            access_token: token.access_token.expose_secret().to_owned(),
            refresh_token: token
                .refresh_token
                .as_ref()
                .map(|r| r.expose_secret().to_owned()),
        };
        let plain = serde_json::to_vec(&secrets)
            .map_err(|e| StoreError::corrupt("user token secrets", &e))?;
        let stored = StoredToken {
            provider: token.provider,
            provider_login: token.provider_login.clone(),
            git_username: token.git_username.clone(),
            scopes: token.scopes.clone(),
            issued_at: token.issued_at,
            expires_at: token.expires_at,
            source: token.source.clone(),
            secrets: self
                .keyring
                .seal(&aad(&token.runtime, &token.user), &plain)?,
        };
        let bytes =
            serde_json::to_vec(&stored).map_err(|e| StoreError::corrupt("user token", &e))?;
        Ok(self
            .store
            .record_put(
                &runtime_collection(&token.runtime),
                &token.user,
                &bytes,
                expect,
            )
            .await?)
    }

    /// Every user token of a runtime that still opens; records that do not
    /// (retired key, corrupt bytes) are logged and skipped.
    pub async fn list(&self, runtime: &str) -> Result<Vec<UserToken>, TokenError> {
        let mut out = Vec::new();
        for (user, _) in self.store.record_list(&runtime_collection(runtime)).await? {
            match self.get(runtime, &user).await {
                Ok(Some((t, _))) => out.push(t),
                Ok(None) => {}
                // one bad record must not block the rest (deleting a runtime)
                Err(e @ (TokenError::Crypto(_) | TokenError::Store(StoreError::Corrupt(_)))) => {
                    tracing::warn!(runtime = %runtime, error = %e, "a stored user token does not open");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Deletes one user's token for one runtime; `true` when there was one.
    pub async fn delete(&self, runtime: &str, user: &str) -> Result<bool, TokenError> {
        Ok(self
            .store
            .record_delete(&runtime_collection(runtime), user, Expect::Any)
            .await?)
    }
}
