//! When background work is due, shared by every replica through the store.
//!
//! The due index: one collection per minute (`due`, minute number), holding
//! an entry per token whose next wake-up falls in that minute. Every write of
//! a grant or runtime token first writes the entry for its next wake-up, so
//! no token is ever without one; entries for wake-ups that moved are found
//! stale and dropped. A cursor record says which minutes are known empty.
//! Workers take each token's lease before working on it and skip tokens
//! whose wake-up already moved past now, so two replicas reading the same
//! minute never both check one token.
//!
//! The revocation queue: tokens to revoke at their provider whose first
//! attempt failed, sealed, retried with backoff until the provider revokes
//! them or says they are no longer valid.

use super::TokenError;
use super::repo::GrantRepo;
use crate::crypto::{self, Keyring};
use crate::providers::ProviderKind;
use crate::store::{Collection, Expect, Store, StoreError};
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

const DUE: &str = "due";
const CURSOR: &str = "due_cursor";
const REVOCATION: &str = "revocation";

/// What an entry of the due index wakes up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DueKey {
    Grant { user: String, id: String },
    RuntimeToken { runtime: String },
}

const SEP: char = '\u{1f}';

impl DueKey {
    fn encode(&self) -> String {
        match self {
            Self::Grant { user, id } => format!("g{SEP}{id}{SEP}{user}"),
            Self::RuntimeToken { runtime } => format!("r{SEP}{runtime}"),
        }
    }

    fn decode(s: &str) -> Option<Self> {
        let mut parts = s.splitn(3, SEP);
        match (parts.next()?, parts.next(), parts.next()) {
            ("g", Some(id), Some(user)) => Some(Self::Grant {
                user: user.to_owned(),
                id: id.to_owned(),
            }),
            ("r", Some(runtime), None) => Some(Self::RuntimeToken {
                runtime: runtime.to_owned(),
            }),
            _ => None,
        }
    }
}

pub fn minute(t: DateTime<Utc>) -> i64 {
    t.timestamp().div_euclid(60)
}

fn bucket(m: i64) -> Collection {
    Collection::new(DUE, format!("{m:012}"))
}

fn cursor() -> Collection {
    Collection::new(CURSOR, "all")
}

#[derive(Serialize, Deserialize)]
struct Entry {
    at: DateTime<Utc>,
}

/// A due entry as read.
pub struct DueEntry {
    pub key: DueKey,
    pub at: DateTime<Utc>,
    pub minute: i64,
    version: u64,
}

pub struct Schedule {
    store: Arc<dyn Store>,
}

impl Schedule {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Starts the cursor at `now` if no replica did yet: every entry is
    /// scheduled at or after the time it is written.
    pub async fn init(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        match self
            .store
            .record_put(
                &cursor(),
                "cursor",
                minute(now).to_string().as_bytes(),
                Expect::Absent,
            )
            .await
        {
            Ok(_) | Err(StoreError::Conflict) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Wakes `key` at `at` (never earlier than the current minute).
    pub async fn wake(
        &self,
        key: &DueKey,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let m = minute(at).max(minute(now));
        let bytes =
            serde_json::to_vec(&Entry { at }).map_err(|e| StoreError::corrupt("due entry", &e))?;
        self.store
            .record_put(&bucket(m), &key.encode(), &bytes, Expect::Any)
            .await
            .map(|_| ())
    }

    async fn cursor(&self) -> Result<(i64, u64), StoreError> {
        match self.store.record_get(&cursor(), "cursor").await? {
            Some(v) => Ok((
                String::from_utf8_lossy(&v.value)
                    .parse()
                    .map_err(|_| StoreError::Corrupt("due cursor".into()))?,
                v.version,
            )),
            None => Ok((i64::MIN, 0)),
        }
    }

    /// The minutes that may hold due entries: from the cursor to now.
    pub async fn due_minutes(&self, now: DateTime<Utc>) -> Result<Vec<i64>, StoreError> {
        let (from, _) = self.cursor().await?;
        let to = minute(now);
        let from = if from == i64::MIN { to } else { from };
        Ok((from..=to).collect())
    }

    /// The entries of one minute.
    pub async fn entries(&self, m: i64) -> Result<Vec<DueEntry>, StoreError> {
        let mut out = Vec::new();
        for (id, rec) in self.store.record_list(&bucket(m)).await? {
            let (Some(key), Ok(entry)) = (
                DueKey::decode(&id),
                serde_json::from_slice::<Entry>(&rec.value),
            ) else {
                tracing::warn!(minute = m, "dropping an unreadable due entry");
                let _ = self.store.record_delete(&bucket(m), &id, Expect::Any).await;
                continue;
            };
            out.push(DueEntry {
                key,
                at: entry.at,
                minute: m,
                version: rec.version,
            });
        }
        Ok(out)
    }

    /// Drops an entry that was handled, unless it was written again meanwhile.
    pub async fn done(&self, e: &DueEntry) -> Result<(), StoreError> {
        match self
            .store
            .record_delete(
                &bucket(e.minute),
                &e.key.encode(),
                Expect::Version(e.version),
            )
            .await
        {
            Ok(_) | Err(StoreError::Conflict) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Moves the cursor past minutes that are empty and over (one minute of
    /// slack for replicas whose clocks differ a little).
    pub async fn advance(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        let (mut at, version) = self.cursor().await?;
        if at == i64::MIN {
            return Ok(());
        }
        let start = at;
        let limit = minute(now) - 1;
        while at < limit && self.store.record_list(&bucket(at)).await?.is_empty() {
            self.store.collection_delete(&bucket(at)).await?;
            at += 1;
        }
        if at != start {
            match self
                .store
                .record_put(
                    &cursor(),
                    "cursor",
                    at.to_string().as_bytes(),
                    Expect::Version(version),
                )
                .await
            {
                Ok(_) | Err(StoreError::Conflict) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// A token waiting to be revoked at its provider.
#[derive(Clone, Serialize, Deserialize)]
pub struct RevocationJob {
    pub id: String,
    pub provider: ProviderKind,
    /// The OAuth app whose credentials revoke it.
    pub app: String,
    #[serde(with = "secret")]
    pub token: SecretString,
    pub fingerprint: String,
    pub user: String,
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
}

impl std::fmt::Debug for RevocationJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationJob")
            .field("id", &self.id)
            .field("app", &self.app)
            .field("fingerprint", &self.fingerprint)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
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

pub(crate) fn queue() -> Collection {
    Collection::new(REVOCATION, "queue")
}

pub(crate) fn revocation_aad(id: &str) -> Vec<u8> {
    crypto::associated_data(REVOCATION, &[id])
}

pub struct RevocationQueue {
    store: Arc<dyn Store>,
    keyring: Arc<Keyring>,
}

impl RevocationQueue {
    pub fn new(store: Arc<dyn Store>, keyring: Arc<Keyring>) -> Self {
        Self { store, keyring }
    }

    pub async fn put(&self, job: &RevocationJob, expect: Expect) -> Result<u64, TokenError> {
        let bytes = GrantRepo::seal(&self.keyring, &revocation_aad(&job.id), job)?;
        Ok(self
            .store
            .record_put(&queue(), &job.id, &bytes, expect)
            .await?)
    }

    /// Every queued job that opens, with its version.
    pub async fn list(&self) -> Result<Vec<(RevocationJob, u64)>, TokenError> {
        let mut out = Vec::new();
        for (id, rec) in self.store.record_list(&queue()).await? {
            match GrantRepo::open::<RevocationJob>(
                &self.keyring,
                &revocation_aad(&id),
                &rec.value,
                "revocation job",
            ) {
                Ok(job) => out.push((job, rec.version)),
                Err(e) => {
                    tracing::error!(job = %id, error = %e, "a queued revocation does not open; dropping it");
                    let _ = self.store.record_delete(&queue(), &id, Expect::Any).await;
                }
            }
        }
        Ok(out)
    }

    pub async fn remove(&self, id: &str, version: u64) -> Result<(), TokenError> {
        match self
            .store
            .record_delete(&queue(), id, Expect::Version(version))
            .await
        {
            Ok(_) | Err(StoreError::Conflict) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn due_keys_round_trip() {
        for k in [
            DueKey::Grant {
                user: "u-1:odd\u{1f}user".into(),
                id: "g1".into(),
            },
            DueKey::RuntimeToken {
                runtime: "acme-prod".into(),
            },
        ] {
            assert_eq!(DueKey::decode(&k.encode()), Some(k));
        }
        assert_eq!(DueKey::decode("x"), None);
    }

    #[test]
    fn minutes_are_whole_and_ordered() {
        let t = DateTime::from_timestamp(120, 0).unwrap();
        assert_eq!(minute(t), 2);
        assert_eq!(minute(DateTime::from_timestamp(179, 0).unwrap()), 2);
        assert!(format!("{:012}", 9) < format!("{:012}", 10));
    }
}
