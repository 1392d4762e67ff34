//! Git Runtime tokens, one per runtime, managed by admins. Kept apart from
//! user tokens: another collection and another associated-data kind, so a
//! runtime token can never be read or decrypted as a user token, nor the
//! other way round.

use super::TokenError;
use crate::crypto::{self, Keyring, Sealed};
use crate::providers::ProviderKind;
use crate::store::{Collection, Expect, Store, StoreError};
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub const KIND: &str = "runtime_token";

/// What may be shown about a runtime token: everything but its value.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RuntimeTokenStatus {
    pub runtime: String,
    pub provider: ProviderKind,
    pub provider_login: String,
    pub git_username: String,
    /// e.g. "classic personal access token"
    pub kind: String,
    pub scopes: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
    /// When an admin set or rotated it (and gitbroker validated it).
    pub set_at: DateTime<Utc>,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    #[serde(flatten)]
    status: RuntimeTokenStatus,
    token: Sealed,
}

fn aad(runtime: &str) -> Vec<u8> {
    crypto::associated_data(KIND, &[runtime])
}

fn all() -> Collection {
    Collection::new(KIND, "all")
}

pub struct RuntimeTokenRepo {
    store: Arc<dyn Store>,
    keyring: Arc<Keyring>,
}

impl RuntimeTokenRepo {
    pub fn new(store: Arc<dyn Store>, keyring: Arc<Keyring>) -> Self {
        Self { store, keyring }
    }

    pub async fn put(
        &self,
        status: &RuntimeTokenStatus,
        token: &SecretString,
    ) -> Result<u64, TokenError> {
        let stored = Stored {
            status: status.clone(),
            token: self
                .keyring
                .seal(&aad(&status.runtime), token.expose_secret().as_bytes())?,
        };
        let bytes =
            serde_json::to_vec(&stored).map_err(|e| StoreError::corrupt("runtime token", &e))?;
        Ok(self
            .store
            .record_put(&all(), &status.runtime, &bytes, Expect::Any)
            .await?)
    }

    pub async fn status(&self, runtime: &str) -> Result<Option<RuntimeTokenStatus>, TokenError> {
        Ok(self.load(runtime).await?.map(|s| s.status))
    }

    /// The status and the token itself, for the runtime API.
    pub async fn get(
        &self,
        runtime: &str,
    ) -> Result<Option<(RuntimeTokenStatus, SecretString)>, TokenError> {
        let Some(stored) = self.load(runtime).await? else {
            return Ok(None);
        };
        let plain = self.keyring.open(&aad(runtime), &stored.token)?;
        let token =
            String::from_utf8(plain).map_err(|_| StoreError::Corrupt("runtime token".into()))?;
        Ok(Some((stored.status, SecretString::from(token))))
    }

    async fn load(&self, runtime: &str) -> Result<Option<Stored>, TokenError> {
        let Some(rec) = self.store.record_get(&all(), runtime).await? else {
            return Ok(None);
        };
        let stored: Stored = serde_json::from_slice(&rec.value)
            .map_err(|e| StoreError::corrupt("runtime token", &e))?;
        if stored.status.runtime != runtime {
            return Err(
                StoreError::Corrupt("runtime token filed under another runtime".into()).into(),
            );
        }
        Ok(Some(stored))
    }

    pub async fn delete(&self, runtime: &str) -> Result<bool, TokenError> {
        Ok(self
            .store
            .record_delete(&all(), runtime, Expect::Any)
            .await?)
    }
}
