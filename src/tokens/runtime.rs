//! Git Runtime tokens, one per runtime, managed by admins. Kept apart from
//! user tokens: another collection and another associated-data kind (which
//! also names the runtime's incarnation), so a runtime token can never be
//! read or decrypted as a user token, nor by a later runtime of the same id.

use super::TokenError;
use super::grant::{State, Status};
use super::repo::GrantRepo;
use crate::crypto::{self, Keyring};
use crate::providers::{GitAuth, ProviderKind};
use crate::store::{Collection, Expect, Store};
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub const KIND: &str = "runtime_token";

/// What may be shown about a runtime token: everything but its value.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
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
    /// The last verdict of a check.
    pub status: Status,
}

/// A runtime token as sealed in the store.
#[derive(Clone, Serialize, Deserialize)]
pub struct RuntimeToken {
    pub incarnation: String,
    /// The provider API it was validated against.
    pub api: String,
    #[serde(flatten)]
    pub info: RuntimeTokenStatus,
    #[serde(with = "secret")]
    pub token: SecretString,
    pub pat_username: Option<String>,
    pub pat_email: Option<String>,
    pub next_check_at: DateTime<Utc>,
    /// How to present it to Git (absent: Basic with `git_username`).
    #[serde(default)]
    pub git_auth: Option<GitAuth>,
}

impl RuntimeToken {
    pub fn git_auth(&self) -> GitAuth {
        self.git_auth
            .clone()
            .unwrap_or_else(|| GitAuth::basic(self.info.git_username.clone()))
    }
}

impl std::fmt::Debug for RuntimeToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeToken")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl RuntimeToken {
    /// The status as of `now` (expiry overrides a stored "valid").
    pub fn effective_status(&self, now: DateTime<Utc>, expiring_soon: chrono::Duration) -> Status {
        let mut s = self.info.status.clone();
        if !s.state.servable() {
            return s;
        }
        match self.info.expires_at {
            Some(at) if at <= now => {
                s.set(
                    State::Expired,
                    at,
                    Some("the token expired; an admin must rotate it".into()),
                );
                s.since = at;
            }
            Some(at) if at - now < expiring_soon => s.set(
                State::ExpiringSoon,
                now,
                Some(format!("it expires on {}", at.format("%Y-%m-%d %H:%M UTC"))),
            ),
            _ => {}
        }
        s
    }
}

mod secret {
    use secrecy::{ExposeSecret, SecretString};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &SecretString, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.expose_secret())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SecretString, D::Error> {
        Ok(SecretString::from(String::deserialize(d)?))
    }
}

pub(crate) fn aad(runtime: &str, incarnation: &str) -> Vec<u8> {
    crypto::associated_data(KIND, &[runtime, incarnation])
}

pub fn collection() -> Collection {
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

    pub async fn put(&self, t: &RuntimeToken, expect: Expect) -> Result<u64, TokenError> {
        let bytes = GrantRepo::seal(&self.keyring, &aad(&t.info.runtime, &t.incarnation), t)?;
        Ok(self
            .store
            .record_put(&collection(), &t.info.runtime, &bytes, expect)
            .await?)
    }

    /// The token of the runtime's current incarnation. A token stored for
    /// an earlier incarnation does not open and reads as absent.
    pub async fn get(
        &self,
        runtime: &str,
        incarnation: &str,
    ) -> Result<Option<(RuntimeToken, u64)>, TokenError> {
        let Some(rec) = self.store.record_get(&collection(), runtime).await? else {
            return Ok(None);
        };
        match GrantRepo::open::<RuntimeToken>(
            &self.keyring,
            &aad(runtime, incarnation),
            &rec.value,
            "runtime token",
        ) {
            Ok(t) if t.info.runtime == runtime && t.incarnation == incarnation => {
                Ok(Some((t, rec.version)))
            }
            Ok(_) => Ok(None),
            Err(TokenError::Crypto(crypto::CryptoError::Open)) => {
                // sealed for another incarnation (or tampered): not this runtime's
                tracing::warn!(runtime = %runtime, "a stored runtime token does not belong to this runtime");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    pub async fn delete(&self, runtime: &str) -> Result<bool, TokenError> {
        Ok(self
            .store
            .record_delete(&collection(), runtime, Expect::Any)
            .await?)
    }
}
