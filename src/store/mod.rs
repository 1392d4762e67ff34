//! The storage seam. Two real backends — Redis (`redis`) and an embedded,
//! file-backed one (`embedded`, on redb) — implement the same [`Store`]
//! primitives; typed repositories (sessions, flows, tokens, admin records)
//! are built on top and never branch on the backend.
//!
//! Two families of data:
//! - **ephemeral values** (flows, sessions, leases): opaque bytes under a
//!   `(namespace, id)` key, always with a TTL; `put_new` is `SET NX PX`,
//!   `replace` is `SET XX PX`, `take` is an atomic `GETDEL`, so a one-time
//!   value is consumed once and a deleted one is never resurrected.
//! - **durable records** (tokens, OAuth apps, runtimes): opaque bytes in a
//!   collection `(kind, group)` under an id, each with a version that every
//!   write bumps, so updates can be compare-and-swap.
//! - **append-only logs** (the audit log): entries appended in batches under
//!   ids that only grow ([`LogId`], milliseconds and a sequence number, like
//!   a Redis stream id), read in id order from a cursor, trimmed by age and
//!   count. On Redis a stream (one key per log), on redb a table.

pub mod embedded;
pub mod instrumented;
pub mod redis;
mod redis_conn;
mod redis_log;
pub mod signal;

use async_trait::async_trait;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend could not be reached or failed; callers answer 503.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A compare-and-swap precondition did not hold.
    #[error("version conflict")]
    Conflict,
    /// Bytes in the store are not what this version of gitbroker wrote.
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// A record that does not (de)serialize. Only the error's category and
    /// position are kept: serde's message can quote a value, and records
    /// hold secrets (CSRF tokens, PKCE verifiers, nonces).
    pub fn corrupt(what: &str, e: &serde_json::Error) -> Self {
        Self::Corrupt(format!(
            "{what}: {:?} error at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        ))
    }
}

/// Key of an ephemeral value. `namespace` is a fixed name chosen by the
/// caller (`"flow"`, `"session"`, …); `id` is arbitrary text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EphemeralKey {
    pub namespace: &'static str,
    pub id: String,
}

impl EphemeralKey {
    pub fn new(namespace: &'static str, id: impl Into<String>) -> Self {
        Self {
            namespace,
            id: id.into(),
        }
    }
}

/// A collection of durable records: all records of one `kind` (a fixed name
/// such as `"user_token"`) in one `group` (for example a runtime id). Deleting
/// a collection deletes every record in it; listing is per collection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Collection {
    pub kind: &'static str,
    pub group: String,
}

impl Collection {
    pub fn new(kind: &'static str, group: impl Into<String>) -> Self {
        Self {
            kind,
            group: group.into(),
        }
    }
}

/// Precondition of a durable write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The record must not exist.
    Absent,
    /// The record must exist with exactly this version.
    Version(u64),
    /// No precondition.
    Any,
}

/// A durable record and its version (1 for the first write, +1 per write).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub version: u64,
    pub value: Vec<u8>,
}

/// Id of a log entry: the entry's time in unix milliseconds (never earlier
/// than the entry before it: a clock that steps back does not reorder the
/// log) and a sequence number among entries of the same millisecond.
/// Written `ms-seq`, as a Redis stream id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogId {
    pub ms: u64,
    pub seq: u64,
}

impl LogId {
    pub const MIN: LogId = LogId { ms: 0, seq: 0 };
    pub const MAX: LogId = LogId {
        ms: u64::MAX,
        seq: u64::MAX,
    };
}

impl std::fmt::Display for LogId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl std::str::FromStr for LogId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let (ms, seq) = s.split_once('-').ok_or(())?;
        Ok(Self {
            ms: ms.parse().map_err(|_| ())?,
            seq: seq.parse().map_err(|_| ())?,
        })
    }
}

/// One entry to append: its time (unix milliseconds) and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogAppend {
    pub at_ms: u64,
    pub value: Vec<u8>,
}

/// What a log keeps: at most `max_entries` entries (the oldest go first),
/// none older than `min_ms` (unix milliseconds). Applied by every append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogRetention {
    pub max_entries: Option<u64>,
    pub min_ms: Option<u64>,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores `value` only if `key` holds nothing live. `true` when stored.
    async fn put_new(
        &self,
        key: &EphemeralKey,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError>;
    /// Stores `value`, replacing what was there, with a fresh TTL.
    async fn put(&self, key: &EphemeralKey, value: &[u8], ttl: Duration) -> Result<(), StoreError>;
    /// Replaces the value, with a fresh TTL, only while `key` holds something
    /// live (`SET XX PX`): a value deleted meanwhile (a session ended by
    /// sign-out) is never brought back. `true` when replaced.
    async fn replace(
        &self,
        key: &EphemeralKey,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError>;
    async fn get(&self, key: &EphemeralKey) -> Result<Option<Vec<u8>>, StoreError>;
    /// Atomically reads and deletes: of many concurrent callers, one gets the value.
    async fn take(&self, key: &EphemeralKey) -> Result<Option<Vec<u8>>, StoreError>;
    /// Deletes; `true` when something live was there.
    async fn remove(&self, key: &EphemeralKey) -> Result<bool, StoreError>;
    /// Deletes only if the value equals `value` (lease release). `true` when deleted.
    async fn remove_if_eq(&self, key: &EphemeralKey, value: &[u8]) -> Result<bool, StoreError>;

    async fn record_get(
        &self,
        coll: &Collection,
        id: &str,
    ) -> Result<Option<Versioned>, StoreError>;
    /// Several records, possibly of different collections, in the order
    /// asked (`None` where there is none). Not a snapshot: each record is
    /// read as `record_get` would. On Redis one pipelined round trip (the
    /// token page reads one assignment per runtime).
    async fn record_get_many(
        &self,
        keys: &[(Collection, String)],
    ) -> Result<Vec<Option<Versioned>>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for (coll, id) in keys {
            out.push(self.record_get(coll, id).await?);
        }
        Ok(out)
    }
    /// Writes a record if `expect` holds (else `StoreError::Conflict`); returns the new version.
    async fn record_put(
        &self,
        coll: &Collection,
        id: &str,
        value: &[u8],
        expect: Expect,
    ) -> Result<u64, StoreError>;
    /// Deletes a record if `expect` holds (else `Conflict`); `false` when it did not exist
    /// (with `Expect::Any`).
    async fn record_delete(
        &self,
        coll: &Collection,
        id: &str,
        expect: Expect,
    ) -> Result<bool, StoreError>;
    /// Every record of the collection, in id order.
    async fn record_list(&self, coll: &Collection) -> Result<Vec<(String, Versioned)>, StoreError>;
    /// Deletes every record of the collection.
    async fn collection_delete(&self, coll: &Collection) -> Result<(), StoreError>;

    /// The groups that hold at least one record of `kind`, in order: how
    /// whole-store tools (`gitbroker rotate-keys`) find every collection.
    async fn record_groups(&self, kind: &'static str) -> Result<Vec<String>, StoreError>;
    /// Appends `entries` to the log `log` (a fixed name such as `"audit"`)
    /// in one round trip / one transaction, in order, then trims it to
    /// `retention`; returns the entries' ids. An empty batch only trims.
    async fn log_append(
        &self,
        log: &'static str,
        entries: &[LogAppend],
        retention: LogRetention,
    ) -> Result<Vec<LogId>, StoreError>;
    /// Up to `limit` entries with `after < id <= until`, in id order.
    async fn log_read(
        &self,
        log: &'static str,
        after: LogId,
        until: LogId,
        limit: usize,
    ) -> Result<Vec<(LogId, Vec<u8>)>, StoreError>;
    /// How many entries the log holds.
    async fn log_len(&self, log: &'static str) -> Result<u64, StoreError>;

    /// Answers when the backend is reachable (readiness).
    async fn ping(&self) -> Result<(), StoreError>;

    /// A consistent copy of the whole store, taken while it serves, as an
    /// embedded-store (redb) file opened for reading; the file has no name
    /// left on disk, so it disappears when closed. `None` when the backend is
    /// backed up with its own tools (Redis: RDB snapshots or AOF).
    async fn backup(&self) -> Result<Option<std::fs::File>, StoreError> {
        Ok(None)
    }
}

/// Everything a store holds, as plain values: what `gitbroker migrate`
/// copies from one backend to another.
#[derive(Clone, PartialEq, Eq)]
pub enum DumpEntry {
    /// An ephemeral value and when it expires (unix milliseconds).
    Ephemeral {
        namespace: String,
        id: String,
        expires_at_ms: i64,
        value: Vec<u8>,
    },
    Record {
        kind: String,
        group: String,
        id: String,
        version: u64,
        value: Vec<u8>,
    },
}

// Values are sealed or session records: never printed.
impl std::fmt::Debug for DumpEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ephemeral { namespace, .. } => f
                .debug_struct("Ephemeral")
                .field("namespace", namespace)
                .finish_non_exhaustive(),
            Self::Record {
                kind,
                group,
                id,
                version,
                ..
            } => f
                .debug_struct("Record")
                .field("kind", kind)
                .field("group", group)
                .field("id", id)
                .field("version", version)
                .finish_non_exhaustive(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn corrupt_records_never_quote_their_values() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Record {
            verifier: u64,
        }
        let e = serde_json::from_str::<Record>(r#"{"verifier":"s3cret-verifier"}"#).unwrap_err();
        assert!(
            e.to_string().contains("s3cret-verifier"),
            "serde quotes values"
        );
        let msg = StoreError::corrupt("flow record", &e).to_string();
        assert!(!msg.contains("s3cret"), "{msg}");
        assert!(
            msg.contains("flow record") && msg.contains("line 1"),
            "{msg}"
        );
    }
}
