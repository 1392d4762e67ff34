//! Server-side sessions. The browser holds a random 256-bit id; the store
//! holds the session under the id's SHA-256 (a store reader cannot replay
//! it), with idle and absolute expiry. A new id is issued at every sign-in.

use crate::clock::Clock;
use crate::crypto;
use crate::store::{EphemeralKey, Store, StoreError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

const NS: &str = "session";
/// Don't rewrite the session on every request: only when this much idle
/// time has passed since the last write.
const TOUCH_AFTER_SECS: i64 = 60;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionUser {
    /// Identity-provider subject; with the issuer, the user's identity.
    pub sub: String,
    pub iss: String,
    pub name: String,
    /// Only when the identity provider says it is verified.
    pub email: Option<String>,
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FlashKind {
    Success,
    Error,
}

/// A one-time message shown on the next page view.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Flash {
    pub kind: FlashKind,
    pub text: String,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct Session {
    pub user: SessionUser,
    /// Synchronizer token for this session's forms.
    pub csrf: String,
    pub created_at: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    #[serde(default)]
    pub flash: Option<Flash>,
    /// SHA-256 (hex) of the session id: the store key. Not serialized.
    #[serde(skip)]
    pub key: String,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("user", &self.user.sub)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

pub struct SessionStore {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    idle: Duration,
    absolute: Duration,
}

fn corrupt(e: serde_json::Error) -> StoreError {
    StoreError::corrupt("session", &e)
}

impl SessionStore {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        idle: Duration,
        absolute: Duration,
    ) -> Self {
        Self {
            store,
            clock,
            idle,
            absolute,
        }
    }

    fn ttl(&self, s: &Session, now: DateTime<Utc>) -> Option<Duration> {
        let absolute_end = s.created_at + chrono::Duration::from_std(self.absolute).ok()?;
        let left = (absolute_end - now).to_std().ok()?;
        (!left.is_zero()).then(|| left.min(self.idle))
    }

    /// Creates a session; returns the id for the cookie and the session.
    pub async fn create(&self, user: SessionUser) -> Result<(String, Session), StoreError> {
        let now = self.clock.now();
        let id = crypto::random_string(32);
        let session = Session {
            user,
            csrf: crypto::random_string(32),
            created_at: now,
            last_seen: now,
            flash: None,
            key: crypto::sha256_hex(id.as_bytes()),
        };
        let bytes = serde_json::to_vec(&session).map_err(corrupt)?;
        let stored = self
            .store
            .put_new(
                &EphemeralKey::new(NS, session.key.clone()),
                &bytes,
                self.idle,
            )
            .await?;
        if !stored {
            return Err(StoreError::Conflict);
        }
        Ok((id, session))
    }

    /// The live session for a cookie id, extending its idle expiry.
    pub async fn load(&self, id: &str) -> Result<Option<Session>, StoreError> {
        if id.len() > 128 {
            return Ok(None);
        }
        let key = crypto::sha256_hex(id.as_bytes());
        let ek = EphemeralKey::new(NS, key.clone());
        let Some(bytes) = self.store.get(&ek).await? else {
            return Ok(None);
        };
        let mut session: Session = serde_json::from_slice(&bytes).map_err(corrupt)?;
        session.key = key;
        let now = self.clock.now();
        let idle = chrono::Duration::from_std(self.idle).unwrap_or(chrono::Duration::MAX);
        let Some(ttl) = self.ttl(&session, now) else {
            self.store.remove(&ek).await?;
            return Ok(None);
        };
        if now - session.last_seen >= idle {
            self.store.remove(&ek).await?;
            return Ok(None);
        }
        if (now - session.last_seen).num_seconds() >= TOUCH_AFTER_SECS {
            session.last_seen = now;
            // ended (signed out) between our read and this write: it stays ended
            if !self.save_with_ttl(&session, ttl).await? {
                return Ok(None);
            }
        }
        Ok(Some(session))
    }

    /// Writes the session back only while it still exists (`SET XX`): a
    /// request in flight when the user signs out, or signs in again, can
    /// never bring the ended session back. `false` when it had ended.
    async fn save_with_ttl(&self, session: &Session, ttl: Duration) -> Result<bool, StoreError> {
        let bytes = serde_json::to_vec(session).map_err(corrupt)?;
        self.store
            .replace(&EphemeralKey::new(NS, session.key.clone()), &bytes, ttl)
            .await
    }

    /// Writes the session back (for example after setting a flash message);
    /// `false` when the session has ended meanwhile (nothing is written).
    pub async fn save(&self, session: &Session) -> Result<bool, StoreError> {
        let now = self.clock.now();
        match self.ttl(session, now) {
            Some(ttl) => self.save_with_ttl(session, ttl).await,
            None => Ok(false),
        }
    }

    /// Sets a one-time message on the session.
    pub async fn flash(
        &self,
        session: &mut Session,
        kind: FlashKind,
        text: impl Into<String>,
    ) -> Result<(), StoreError> {
        session.flash = Some(Flash {
            kind,
            text: text.into(),
        });
        self.save(session).await.map(|_| ())
    }

    /// Removes and returns the flash message, if any.
    pub async fn take_flash(&self, session: &mut Session) -> Result<Option<Flash>, StoreError> {
        let flash = session.flash.take();
        if flash.is_some() {
            self.save(session).await?;
        }
        Ok(flash)
    }

    pub async fn destroy(&self, session: &Session) -> Result<(), StoreError> {
        self.store
            .remove(&EphemeralKey::new(NS, session.key.clone()))
            .await
            .map(|_| ())
    }
}
