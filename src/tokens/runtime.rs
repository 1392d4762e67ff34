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
    /// When gitbroker last rotated it by itself (GitLab), if it did.
    #[serde(default)]
    pub rotated_at: Option<DateTime<Utc>>,
    /// Why the automatic rotation stopped for good, if it did: an admin
    /// must set a new token (before it expires).
    #[serde(default)]
    pub rotation_error: Option<String>,
}

/// Where an automatic rotation stands (sealed with the token).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RotationState {
    /// Set, before the provider is asked, when a rotation starts; cleared
    /// when its answer is stored or known to have rotated nothing. Found
    /// set, it means an answer that was never stored: the token is never
    /// rotated again before its fate is known (GitLab revokes the successor
    /// of a token rotated twice).
    pub started_at: Option<DateTime<Utc>>,
    /// No new attempt before this (after a temporary failure).
    pub retry_at: Option<DateTime<Utc>>,
    /// Temporary failures in a row.
    pub failures: u32,
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
    #[serde(default)]
    pub rotation: RotationState,
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
    /// When background work should next look at it: its check, or the
    /// start of its rotation margin (or the end of a rotation's pause).
    /// Tokens of runtimes that do not rotate wake once more, for nothing.
    pub fn next_wake(&self, rotate_margin: chrono::Duration) -> DateTime<Utc> {
        let mut at = self.next_check_at;
        if self.info.rotation_error.is_none()
            && let Some(expires) = self.info.expires_at
        {
            let due = match self.rotation.retry_at {
                Some(retry) => (expires - rotate_margin).max(retry),
                None => expires - rotate_margin,
            };
            at = at.min(due);
        }
        at
    }

    /// The status as of `now` (expiry overrides a stored "valid").
    pub fn effective_status(&self, now: DateTime<Utc>, expiring_soon: chrono::Duration) -> Status {
        let mut s = self.effective_status_inner(now, expiring_soon);
        if s.state.servable()
            && let Some(e) = &self.info.rotation_error
        {
            s.reason = Some(match s.reason {
                Some(r) => format!("{r}; automatic rotation stopped: {e}"),
                None => format!("automatic rotation stopped: {e}"),
            });
        }
        s
    }

    fn effective_status_inner(
        &self,
        now: DateTime<Utc>,
        expiring_soon: chrono::Duration,
    ) -> Status {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn token(now: DateTime<Utc>, expires_in_days: i64) -> RuntimeToken {
        RuntimeToken {
            incarnation: "inc".into(),
            api: "https://gitlab.example.com/api/v4".into(),
            info: RuntimeTokenStatus {
                runtime: "rt".into(),
                provider: ProviderKind::Gitlab,
                provider_login: "bob".into(),
                git_username: "oauth2".into(),
                kind: "personal access token".into(),
                scopes: vec!["api".into()],
                expires_at: Some(now + chrono::Duration::days(expires_in_days)),
                set_at: now,
                status: Status::new(State::Valid, now, None),
                rotated_at: None,
                rotation_error: None,
            },
            token: SecretString::from("glpat-secret-value".to_owned()),
            pat_username: None,
            pat_email: None,
            next_check_at: now + chrono::Duration::hours(4),
            git_auth: None,
            rotation: RotationState::default(),
        }
    }

    #[test]
    fn wakes_at_the_check_or_the_start_of_the_rotation_margin() {
        let now = at();
        let margin = chrono::Duration::days(7);
        // far from expiry: the check comes first
        let t = token(now, 30);
        assert_eq!(t.next_wake(margin), t.next_check_at);
        // the margin starts before the next check
        let t = token(now, 7);
        assert_eq!(t.next_wake(margin), now);
        // a paused rotation wakes at the end of its pause
        let mut t = token(now, 5);
        t.rotation.retry_at = Some(now + chrono::Duration::minutes(1));
        assert_eq!(t.next_wake(margin), now + chrono::Duration::minutes(1));
        // a stopped rotation wakes only for its check
        t.info.rotation_error = Some("refused".into());
        assert_eq!(t.next_wake(margin), t.next_check_at);
        // no expiry: only the check
        let mut t = token(now, 5);
        t.info.expires_at = None;
        assert_eq!(t.next_wake(margin), t.next_check_at);
    }

    #[test]
    fn a_stopped_rotation_shows_in_the_status_reason() {
        let now = at();
        let mut t = token(now, 5);
        t.info.rotation_error = Some("GitLab refused to rotate the token (HTTP 403)".into());
        let s = t.effective_status(now, chrono::Duration::days(7));
        assert_eq!(s.state, State::ExpiringSoon);
        let reason = s.reason.unwrap();
        assert!(reason.starts_with("it expires on "), "{reason}");
        assert!(
            reason.ends_with(
                "; automatic rotation stopped: GitLab refused to rotate the token (HTTP 403)"
            ),
            "{reason}"
        );
        // an unusable token keeps its own reason
        t.info
            .status
            .set(State::Invalid, now, Some("revoked".into()));
        assert_eq!(
            t.effective_status(now, chrono::Duration::days(7))
                .reason
                .as_deref(),
            Some("revoked")
        );
    }

    #[test]
    fn the_rotation_state_is_sealed_with_the_token_and_read_by_older_records() {
        let now = at();
        let mut t = token(now, 5);
        t.rotation.started_at = Some(now);
        let json = serde_json::to_string(&t).unwrap();
        let back: RuntimeToken = serde_json::from_str(&json).unwrap();
        assert_eq!(back.rotation, t.rotation);
        // a record written before rotation existed reads with none
        let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let o = v.as_object_mut().unwrap();
        for k in ["rotation", "rotated_at", "rotation_error"] {
            o.remove(k);
        }
        let old: RuntimeToken = serde_json::from_value(v).unwrap();
        assert_eq!(old.rotation, RotationState::default());
        assert!(old.info.rotation_error.is_none());
        assert!(!format!("{old:?}").contains("glpat-secret-value"));
    }
}
