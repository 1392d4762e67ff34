//! Where grants and assignments live in the store.
//!
//! - A grant is one sealed record in the collection of its user
//!   (`grant`, user), under a random id. The associated data names the
//!   record kind, the user and the id, so a ciphertext moved elsewhere does
//!   not open.
//! - An assignment says which grant a runtime serves for a user: a small
//!   record (ids only, no secret) in the collection of the runtime's
//!   *incarnation* (`assignment`, `runtime#incarnation`), keyed by user. A
//!   runtime deleted and registered again has another incarnation, hence
//!   another, empty collection: nothing written for the old one can ever be
//!   read for the new one. The grant itself lists the runtimes it may be
//!   served to, inside the seal; the index only finds it.

use super::TokenError;
use super::grant::Grant;
use crate::crypto::{self, Keyring};
use crate::store::{Collection, Expect, Store, StoreError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub const GRANT: &str = "grant";
pub const ASSIGNMENT: &str = "assignment";

pub fn grant_collection(user: &str) -> Collection {
    Collection::new(GRANT, user)
}

pub fn assignment_collection(runtime: &str, incarnation: &str) -> Collection {
    Collection::new(ASSIGNMENT, format!("{runtime}#{incarnation}"))
}

pub(crate) fn grant_aad(user: &str, id: &str) -> Vec<u8> {
    crypto::associated_data(GRANT, &[user, id])
}

/// Which grant a runtime serves for one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub grant: String,
    pub assigned_at: DateTime<Utc>,
}

pub struct GrantRepo {
    store: Arc<dyn Store>,
    keyring: Arc<Keyring>,
}

impl GrantRepo {
    pub fn new(store: Arc<dyn Store>, keyring: Arc<Keyring>) -> Self {
        Self { store, keyring }
    }

    pub(super) fn seal<T: Serialize>(
        keyring: &Keyring,
        aad: &[u8],
        value: &T,
    ) -> Result<Vec<u8>, TokenError> {
        // serializing our own types cannot quote a stored value
        let plain =
            serde_json::to_vec(value).map_err(|e| StoreError::corrupt("sealed record", &e))?;
        Ok(keyring.seal_envelope(aad, &plain)?)
    }

    pub(super) fn open<T: for<'de> Deserialize<'de>>(
        keyring: &Keyring,
        aad: &[u8],
        bytes: &[u8],
        what: &str,
    ) -> Result<T, TokenError> {
        if crypto::envelope_key_id(bytes).is_none() {
            return Err(StoreError::Corrupt(format!("{what}: not a sealed record")).into());
        }
        let plain = keyring.open_envelope(aad, bytes)?;
        Ok(serde_json::from_slice(&plain).map_err(|e| StoreError::corrupt(what, &e))?)
    }

    fn decode(&self, user: &str, id: &str, bytes: &[u8]) -> Result<Grant, TokenError> {
        let grant: Grant = Self::open(&self.keyring, &grant_aad(user, id), bytes, "grant")?;
        if grant.id != id || grant.user != user {
            return Err(StoreError::Corrupt("grant filed under another id".into()).into());
        }
        Ok(grant)
    }

    /// The grant and its version.
    pub async fn get(&self, user: &str, id: &str) -> Result<Option<(Grant, u64)>, TokenError> {
        match self.store.record_get(&grant_collection(user), id).await? {
            Some(rec) => Ok(Some((self.decode(user, id, &rec.value)?, rec.version))),
            None => Ok(None),
        }
    }

    /// Writes the grant if `expect` holds; returns the new version.
    pub async fn put(&self, grant: &Grant, expect: Expect) -> Result<u64, TokenError> {
        let bytes = Self::seal(&self.keyring, &grant_aad(&grant.user, &grant.id), grant)?;
        Ok(self
            .store
            .record_put(&grant_collection(&grant.user), &grant.id, &bytes, expect)
            .await?)
    }

    pub async fn delete(&self, user: &str, id: &str, expect: Expect) -> Result<bool, TokenError> {
        Ok(self
            .store
            .record_delete(&grant_collection(user), id, expect)
            .await?)
    }

    /// Every grant of a user: those that open, and the ids of those that
    /// do not (retired key, corrupt bytes).
    pub async fn list_user(
        &self,
        user: &str,
    ) -> Result<(Vec<(Grant, u64)>, Vec<String>), TokenError> {
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for (id, rec) in self.store.record_list(&grant_collection(user)).await? {
            match self.decode(user, &id, &rec.value) {
                Ok(g) => good.push((g, rec.version)),
                Err(e @ (TokenError::Crypto(_) | TokenError::Store(StoreError::Corrupt(_)))) => {
                    tracing::warn!(user = %user, grant = %id, error = %e, "a stored grant does not open");
                    bad.push(id);
                }
                Err(e) => return Err(e),
            }
        }
        Ok((good, bad))
    }

    // --- assignments ---

    pub async fn assignment(
        &self,
        runtime: &str,
        incarnation: &str,
        user: &str,
    ) -> Result<Option<(Assignment, u64)>, TokenError> {
        let Some(rec) = self
            .store
            .record_get(&assignment_collection(runtime, incarnation), user)
            .await?
        else {
            return Ok(None);
        };
        let a: Assignment = serde_json::from_slice(&rec.value)
            .map_err(|e| StoreError::corrupt("assignment", &e))?;
        Ok(Some((a, rec.version)))
    }

    /// `user`'s assignment on each of `runtimes` (id, incarnation), in
    /// order: one store round trip on Redis.
    pub async fn user_assignments(
        &self,
        runtimes: &[(&str, &str)],
        user: &str,
    ) -> Result<Vec<Option<(Assignment, u64)>>, TokenError> {
        let keys: Vec<_> = runtimes
            .iter()
            .map(|(rt, inc)| (assignment_collection(rt, inc), user.to_owned()))
            .collect();
        self.store
            .record_get_many(&keys)
            .await?
            .into_iter()
            .map(|rec| {
                rec.map(|rec| {
                    let a: Assignment = serde_json::from_slice(&rec.value)
                        .map_err(|e| StoreError::corrupt("assignment", &e))?;
                    Ok((a, rec.version))
                })
                .transpose()
            })
            .collect()
    }

    pub async fn put_assignment(
        &self,
        runtime: &str,
        incarnation: &str,
        user: &str,
        a: &Assignment,
        expect: Expect,
    ) -> Result<u64, TokenError> {
        let bytes = serde_json::to_vec(a).map_err(|e| StoreError::corrupt("assignment", &e))?;
        Ok(self
            .store
            .record_put(
                &assignment_collection(runtime, incarnation),
                user,
                &bytes,
                expect,
            )
            .await?)
    }

    pub async fn delete_assignment(
        &self,
        runtime: &str,
        incarnation: &str,
        user: &str,
        expect: Expect,
    ) -> Result<bool, TokenError> {
        Ok(self
            .store
            .record_delete(&assignment_collection(runtime, incarnation), user, expect)
            .await?)
    }

    /// Every (user, assignment) of one runtime incarnation.
    pub async fn assignments(
        &self,
        runtime: &str,
        incarnation: &str,
    ) -> Result<Vec<(String, Assignment)>, TokenError> {
        let mut out = Vec::new();
        for (user, rec) in self
            .store
            .record_list(&assignment_collection(runtime, incarnation))
            .await?
        {
            match serde_json::from_slice::<Assignment>(&rec.value) {
                Ok(a) => out.push((user, a)),
                Err(e) => {
                    tracing::warn!(runtime = %runtime, error = %StoreError::corrupt("assignment", &e), "skipping a corrupt assignment");
                }
            }
        }
        Ok(out)
    }

    pub async fn drop_assignments(
        &self,
        runtime: &str,
        incarnation: &str,
    ) -> Result<(), TokenError> {
        Ok(self
            .store
            .collection_delete(&assignment_collection(runtime, incarnation))
            .await?)
    }
}
