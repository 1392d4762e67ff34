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
use super::bounded::{self, Bounded};
use super::grant::Grant;
use crate::crypto::{self, Keyring};
use crate::store::{Collection, Expect, Store, StoreError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Instant;

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
    /// key(runtime, incarnation, user) → the grant id its assignment
    /// named, and when it was read
    pointers: Bounded<String, (Arc<str>, Instant)>,
    /// key(user, id) → the SHA-256 of the sealed bytes and the grant they
    /// opened to
    opened: Bounded<String, ([u8; 32], Grant)>,
}

/// Grants opened recently, keyed by (user, id) and the SHA-256 of the
/// sealed bytes they were opened from: a fetch still reads the record from
/// the store every time, and only skips the decryption and the JSON decode
/// (a tenth of a fetch's CPU) when those bytes are exactly the ones opened
/// before. Any write seals with a fresh random nonce, hence other bytes.
/// The opened grant holds its tokens in memory, as serving them does
/// anyway; at most this many entries (about 1.2 KiB each).
const OPENED_CAPACITY: usize = 2048;

/// How long a replica trusts the grant id it read from an assignment
/// before reading the assignment again. Only the *pointer* is kept: the
/// grant it names is read from the store on every fetch and must still
/// list the runtime (inside its seal), so a token that was deleted,
/// replaced and detached, or revoked is refused at once on every replica.
/// A pointer that outlives its assignment can only matter while the grant
/// it names still lists the runtime — the moments between moving an
/// assignment and detaching the old grant, or a detach that failed — and
/// for at most this long.
pub const POINTER_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// Pointers kept per replica (about 150 bytes each: ~2.5 MiB at most).
/// Reaching it prunes the expired ones — a replica serving 10,000 fetches
/// a second holds at most that many live ones — and if that frees
/// nothing, all go (a burst of assignment reads, never a wrong answer).
const POINTER_CAPACITY: usize = 16_384;

fn pointer_alive(&(_, at): &(Arc<str>, Instant)) -> bool {
    at.elapsed() < POINTER_TTL
}

impl GrantRepo {
    pub fn new(store: Arc<dyn Store>, keyring: Arc<Keyring>) -> Self {
        Self {
            store,
            keyring,
            pointers: Bounded::new(POINTER_CAPACITY),
            opened: Bounded::new(OPENED_CAPACITY),
        }
    }

    /// The grant id the runtime's assignment for `user` names, from this
    /// replica's pointers (at most [`POINTER_TTL`] old) or the store.
    /// `cached` says which: a caller that finds the grant gone or no
    /// longer listing the runtime calls [`Self::forget_pointer`] and asks
    /// again, which then reads the store.
    pub async fn assigned_grant(
        &self,
        runtime: &str,
        incarnation: &str,
        user: &str,
    ) -> Result<Option<(Arc<str>, bool)>, TokenError> {
        let key = bounded::key(&[runtime, incarnation, user]);
        if let Some(id) = self.pointer(&key) {
            return Ok(Some((id, true)));
        }
        let Some((a, _)) = self.assignment(runtime, incarnation, user).await? else {
            return Ok(None);
        };
        let id: Arc<str> = Arc::from(a.grant.as_str());
        self.remember_pointer(key, id.clone());
        Ok(Some((id, false)))
    }

    fn pointer(&self, key: &str) -> Option<Arc<str>> {
        self.pointers
            .get(key, |p| pointer_alive(p).then(|| p.0.clone()))
    }

    fn remember_pointer(&self, key: String, grant: Arc<str>) {
        self.pointers
            .insert(key, (grant, Instant::now()), pointer_alive);
    }

    /// Drops this replica's pointer for (runtime, incarnation, user).
    pub fn forget_pointer(&self, runtime: &str, incarnation: &str, user: &str) {
        self.pointers
            .remove(bounded::key(&[runtime, incarnation, user]).as_str());
    }

    /// Drops this replica's pointers of a runtime incarnation.
    fn forget_pointers_of(&self, runtime: &str, incarnation: &str) {
        let prefix = bounded::key(&[runtime, incarnation]);
        self.pointers.retain(|k, _| !k.starts_with(&prefix));
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
        let key = bounded::key(&[user, id]);
        let Some(rec) = self.store.record_get(&grant_collection(user), id).await? else {
            self.opened.remove(key.as_str());
            return Ok(None);
        };
        let d = crate::config::sha256(&rec.value);
        let same = |(opened, g): &([u8; 32], Grant)| crypto::ct_eq(opened, &d).then(|| g.clone());
        if let Some(g) = self.opened.get(key.as_str(), same) {
            return Ok(Some((g, rec.version)));
        }
        let g = self.decode(user, id, &rec.value)?;
        self.opened.insert(key, (d, g.clone()), |_| false);
        Ok(Some((g, rec.version)))
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
        let deleted = self
            .store
            .record_delete(&grant_collection(user), id, expect)
            .await;
        self.opened.remove(bounded::key(&[user, id]).as_str());
        Ok(deleted?)
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
        self.forget_pointer(runtime, incarnation, user);
        let written = self
            .store
            .record_put(
                &assignment_collection(runtime, incarnation),
                user,
                &bytes,
                expect,
            )
            .await;
        // again after the write: a fetch racing it may have read the old one
        self.forget_pointer(runtime, incarnation, user);
        Ok(written?)
    }

    pub async fn delete_assignment(
        &self,
        runtime: &str,
        incarnation: &str,
        user: &str,
        expect: Expect,
    ) -> Result<bool, TokenError> {
        let deleted = self
            .store
            .record_delete(&assignment_collection(runtime, incarnation), user, expect)
            .await;
        self.forget_pointer(runtime, incarnation, user);
        Ok(deleted?)
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
        let dropped = self
            .store
            .collection_delete(&assignment_collection(runtime, incarnation))
            .await;
        self.forget_pointers_of(runtime, incarnation);
        Ok(dropped?)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The opened-grant cache never answers for bytes it did not open: a
    /// new seal is opened again, bytes that do not open are refused (not
    /// masked by what was cached), a deleted grant is gone.
    #[tokio::test]
    async fn opened_grants_are_reused_only_for_the_same_bytes() {
        use secrecy::ExposeSecret;
        let (_dir, repo) = repo();
        let (store, keyring) = (repo.store.clone(), repo.keyring.clone());
        let now = crate::clock::Clock::now(&crate::clock::SystemClock);
        let mut g = crate::tokens::grant::tests::grant(now);
        let v = repo.put(&g, Expect::Absent).await.unwrap();
        let (first, _) = repo.get(&g.user, &g.id).await.unwrap().unwrap();
        assert_eq!(repo.opened.len(), 1);
        let (again, _) = repo.get(&g.user, &g.id).await.unwrap().unwrap();
        assert_eq!(
            again.access_token.expose_secret(),
            first.access_token.expose_secret()
        );

        // written elsewhere (another replica): new bytes, opened again
        g.access_token = secrecy::SecretString::from("the-new-token");
        let other = GrantRepo::new(store.clone(), keyring);
        other.put(&g, Expect::Version(v)).await.unwrap();
        let (fresh, _) = repo.get(&g.user, &g.id).await.unwrap().unwrap();
        assert_eq!(fresh.access_token.expose_secret(), "the-new-token");

        // bytes that do not open are refused, whatever was cached
        store
            .record_put(
                &grant_collection(&g.user),
                &g.id,
                b"GB1\x01kxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
                Expect::Any,
            )
            .await
            .unwrap();
        assert!(repo.get(&g.user, &g.id).await.is_err());

        other.delete(&g.user, &g.id, Expect::Any).await.unwrap();
        assert!(repo.get(&g.user, &g.id).await.unwrap().is_none());
        assert_eq!(repo.opened.len(), 0);
    }

    fn repo() -> (tempfile::TempDir, GrantRepo) {
        let dir = tempfile::tempdir().unwrap();
        let clock: Arc<dyn crate::clock::Clock> = Arc::new(crate::clock::SystemClock);
        let store: Arc<dyn Store> = Arc::new(
            crate::store::embedded::EmbeddedStore::open(&dir.path().join("s.redb"), clock).unwrap(),
        );
        let keyring = Keyring::new(
            "k",
            &[crate::config::KeySettings {
                id: "k".into(),
                key: secrecy::SecretBox::new(Box::new([7u8; 32])),
            }],
        )
        .unwrap();
        (dir, GrantRepo::new(store, Arc::new(keyring)))
    }

    #[test]
    fn pointers_are_forgotten_one_by_one_and_by_incarnation() {
        let (_dir, p) = repo();
        let k = |rt: &str, inc: &str, user: &str| bounded::key(&[rt, inc, user]);
        p.remember_pointer(k("rt", "i1", "alice"), "g1".into());
        p.remember_pointer(k("rt", "i1", "bob"), "g2".into());
        p.remember_pointer(k("rt", "i2", "alice"), "g3".into());
        p.remember_pointer(k("other", "i1", "alice"), "g4".into());
        assert_eq!(p.pointer(&k("rt", "i1", "alice")).as_deref(), Some("g1"));
        p.forget_pointer("rt", "i1", "alice");
        assert_eq!(p.pointer(&k("rt", "i1", "alice")), None);
        p.forget_pointers_of("rt", "i1");
        assert_eq!(p.pointer(&k("rt", "i1", "bob")), None);
        assert_eq!(p.pointer(&k("rt", "i2", "alice")).as_deref(), Some("g3"));
        assert_eq!(p.pointer(&k("other", "i1", "alice")).as_deref(), Some("g4"));
    }

    #[test]
    fn the_pointer_cache_stays_within_its_capacity() {
        let (_dir, p) = repo();
        for i in 0..POINTER_CAPACITY * 3 {
            p.remember_pointer(bounded::key(&["rt", "i", &format!("u{i}")]), "g".into());
            assert!(p.pointers.len() <= POINTER_CAPACITY);
        }
        // the newest is always kept
        let last = format!("u{}", POINTER_CAPACITY * 3 - 1);
        assert!(p.pointer(&bounded::key(&["rt", "i", &last])).is_some());
    }
}
