//! The embedded backend of [`Store`]: one redb file, for single-instance
//! deployments without Redis. Expiry uses the injected [`Clock`]; every write is
//! one redb write transaction (redb has one writer at a time), so CAS is atomic.

use super::{
    Collection, DumpEntry, EphemeralKey, Expect, LogAppend, LogId, LogRetention, Store, StoreError,
    Versioned,
};
use crate::clock::Clock;
use async_trait::async_trait;
use redb::{Database, DatabaseError, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// `namespace \0 id` → (expires-at in unix milliseconds, value).
/// What the embedded store keeps in memory at most (redb's page cache).
const CACHE_BYTES: usize = 64 * 1024 * 1024;

const EPHEMERAL: TableDefinition<&str, (i64, &[u8])> = TableDefinition::new("ephemeral");
/// (expires-at, ephemeral key) → (): lets the sweeper find expired entries
/// without scanning every live one.
const EXPIRY: TableDefinition<(i64, &str), ()> = TableDefinition::new("ephemeral_expiry");
/// (kind, group, id) → (version, value). Tuples order element-wise, so one
/// collection is one contiguous range.
const RECORDS: TableDefinition<(&str, &str, &str), (u64, &[u8])> = TableDefinition::new("records");
/// (log, ms, seq) → payload: one log is one contiguous range, in id order.
const LOG: TableDefinition<(&str, u64, u64), &[u8]> = TableDefinition::new("log");
/// log → (entries held, last id's ms, last id's seq): ids never go back,
/// even after the entries holding them are trimmed.
const LOG_META: TableDefinition<&str, (u64, u64, u64)> = TableDefinition::new("log_meta");

/// A [`Store`] in a local redb file. Clones share the open database.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    clock: Arc<dyn Clock>,
    path: PathBuf,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

fn storage_error(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Unavailable(format!("embedded store: {}", e.into()))
}

fn ephemeral_key(key: &EphemeralKey) -> String {
    format!("{}\0{}", key.namespace, key.id)
}

/// Milliseconds, rounded up and at least 1, the same rule as the Redis backend.
fn ttl_millis(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_nanos().div_ceil(1_000_000).max(1)).unwrap_or(i64::MAX)
}

/// Creates `dir` and its missing parents as 0700 (existing ones untouched).
fn owner_only_dirs(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Creates `path` empty as 0600 if it does not exist (redb initialises an
/// empty file); warns about an existing one that others may read.
fn owner_only_file(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(path)?.permissions().mode();
                if mode & 0o077 != 0 {
                    tracing::warn!(
                        path = %path.display(),
                        mode = format!("{:o}", mode & 0o777),
                        "the embedded store file is readable or writable by others; chmod 600 it"
                    );
                }
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the database file, creating parent directories.
    /// What it creates is owner-only: directories 0700, the file 0600 (it
    /// holds sessions and sealed tokens). An existing file readable by
    /// others is opened as it is, with a warning.
    ///
    /// The file is locked while open: a second opener, in this process or
    /// another, gets [`StoreError::Unavailable`].
    pub fn open(path: &Path, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            owner_only_dirs(parent).map_err(|e| {
                StoreError::Unavailable(format!(
                    "embedded store: cannot create {}: {e}",
                    parent.display()
                ))
            })?;
        }
        owner_only_file(path).map_err(|e| {
            StoreError::Unavailable(format!(
                "embedded store: cannot create {}: {e}",
                path.display()
            ))
        })?;
        // redb caches up to 1 GiB by default, and keeps what was written
        // (the audit log grows with every token read): a bound keeps the
        // single-machine broker small; pages past it are read back from
        // the operating system's page cache.
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| match e {
                DatabaseError::DatabaseAlreadyOpen => StoreError::Unavailable(format!(
                    "embedded store: {} is in use by another process",
                    path.display()
                )),
                e => StoreError::Unavailable(format!(
                    "embedded store: cannot open {}: {e}",
                    path.display()
                )),
            })?;
        // Create the tables up front so read transactions never meet a missing one.
        let txn = db.begin_write().map_err(storage_error)?;
        txn.open_table(EPHEMERAL).map_err(storage_error)?;
        txn.open_table(EXPIRY).map_err(storage_error)?;
        txn.open_table(RECORDS).map_err(storage_error)?;
        txn.open_table(LOG).map_err(storage_error)?;
        txn.open_table(LOG_META).map_err(storage_error)?;
        txn.commit().map_err(storage_error)?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                clock,
                path: path.to_owned(),
            }),
        })
    }

    /// Deletes expired ephemeral entries every `every`. Reads already treat
    /// them as absent; this only reclaims space. The task holds the database
    /// weakly and ends once every `EmbeddedStore` clone is dropped, so it never
    /// keeps the file locked.
    pub fn spawn_sweeper(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let swept = tokio::task::spawn_blocking(move || inner.sweep()).await;
                match swept {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "embedded store: sweep failed"),
                    Err(e) => tracing::warn!(error = %e, "embedded store: sweep task failed"),
                }
            }
        })
    }

    /// Writes a consistent copy of the whole store to a new file `dest`
    /// (created 0600; refused if it exists), from one read transaction, so
    /// it can run while the store serves: writes committed after the copy
    /// began are not in it, none is half in it. Returns what was copied.
    pub async fn backup_to(&self, dest: &Path) -> Result<BackupCounts, StoreError> {
        let dest = dest.to_owned();
        self.blocking(move |inner| inner.copy_into(&dest)).await
    }

    /// Every entry of the store, from one read transaction (for
    /// `gitbroker migrate`). Expired ephemeral entries not yet swept are
    /// included; the caller skips them.
    pub async fn dump(&self) -> Result<Vec<DumpEntry>, StoreError> {
        self.blocking(|inner| inner.dump()).await
    }

    /// The broker's clock, as the store reads it (milliseconds).
    pub fn now_ms(&self) -> i64 {
        self.inner.now_ms()
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Deletes expired ephemeral entries now; returns how many.
    pub async fn sweep_expired(&self) -> Result<usize, StoreError> {
        self.blocking(|inner| inner.sweep()).await
    }

    /// Stores `value` only if a live value is there (`present`) or is not
    /// (`!present`), in one write transaction; `true` when stored.
    async fn put_if(
        &self,
        key: &EphemeralKey,
        value: &[u8],
        ttl: Duration,
        present: bool,
    ) -> Result<bool, StoreError> {
        let key = ephemeral_key(key);
        let value = value.to_vec();
        self.blocking(move |inner| {
            inner.write(|txn| {
                let now = inner.now_ms();
                let expires_at = now.saturating_add(ttl_millis(ttl));
                let mut eph = txn.open_table(EPHEMERAL).map_err(storage_error)?;
                let mut exp = txn.open_table(EXPIRY).map_err(storage_error)?;
                let holds = eph
                    .get(key.as_str())
                    .map_err(storage_error)?
                    .is_some_and(|g| live(g.value(), now).is_some());
                if holds != present {
                    return Ok((false, false));
                }
                insert_entry(&mut eph, &mut exp, &key, expires_at, &value)?;
                Ok((true, true))
            })
        })
        .await
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StoreError::Unavailable(format!("embedded store: task failed: {e}")))?
    }
}

/// What a backup copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackupCounts {
    pub records: u64,
    pub ephemeral: u64,
}

type Table<'txn, K, V> = redb::Table<'txn, K, V>;
type EphemeralTable<'txn> = Table<'txn, &'static str, (i64, &'static [u8])>;
type ExpiryTable<'txn> = Table<'txn, (i64, &'static str), ()>;

impl Inner {
    fn now_ms(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }

    /// Runs `f` in one write transaction; commits only when `f` asks to, so
    /// refused CAS attempts and no-op takes cost no fsync. Callers read the
    /// clock inside `f`, once the writer lock is held, so time spent waiting
    /// for it cannot make an entry look fresher than it is.
    fn write<T>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(T, bool), StoreError>,
    ) -> Result<T, StoreError> {
        let txn = self.db.begin_write().map_err(storage_error)?;
        let (out, commit) = match f(&txn) {
            Ok(done) => done,
            Err(e) => {
                // The caller's error (usually Conflict) matters more than an abort failure.
                let _ = txn.abort();
                return Err(e);
            }
        };
        if commit {
            txn.commit().map_err(storage_error)?;
        } else {
            txn.abort().map_err(storage_error)?;
        }
        Ok(out)
    }

    /// Reads a live ephemeral value (expired counts as absent).
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(storage_error)?;
        let table = txn.open_table(EPHEMERAL).map_err(storage_error)?;
        let now = self.now_ms();
        Ok(table
            .get(key)
            .map_err(storage_error)?
            .and_then(|g| live(g.value(), now)))
    }

    fn copy_into(&self, dest: &Path) -> Result<BackupCounts, StoreError> {
        let cannot = |e: std::io::Error| {
            StoreError::Unavailable(format!(
                "embedded store: cannot create {}: {e}",
                dest.display()
            ))
        };
        // the snapshot first: everything below copies exactly this state
        let read = self.db.begin_read().map_err(storage_error)?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        drop(options.open(dest).map_err(cannot)?);
        let copied = (|| {
            let out = Database::create(dest).map_err(storage_error)?;
            let txn = out.begin_write().map_err(storage_error)?;
            let mut counts = BackupCounts::default();
            {
                let mut eph = txn.open_table(EPHEMERAL).map_err(storage_error)?;
                for row in read
                    .open_table(EPHEMERAL)
                    .map_err(storage_error)?
                    .iter()
                    .map_err(storage_error)?
                {
                    let (k, v) = row.map_err(storage_error)?;
                    eph.insert(k.value(), v.value()).map_err(storage_error)?;
                    counts.ephemeral += 1;
                }
                let mut exp = txn.open_table(EXPIRY).map_err(storage_error)?;
                for row in read
                    .open_table(EXPIRY)
                    .map_err(storage_error)?
                    .iter()
                    .map_err(storage_error)?
                {
                    let (k, _) = row.map_err(storage_error)?;
                    exp.insert(k.value(), ()).map_err(storage_error)?;
                }
                let mut rec = txn.open_table(RECORDS).map_err(storage_error)?;
                for row in read
                    .open_table(RECORDS)
                    .map_err(storage_error)?
                    .iter()
                    .map_err(storage_error)?
                {
                    let (k, v) = row.map_err(storage_error)?;
                    rec.insert(k.value(), v.value()).map_err(storage_error)?;
                    counts.records += 1;
                }
            }
            txn.commit().map_err(storage_error)?;
            Ok(counts)
        })();
        if copied.is_err() {
            let _ = std::fs::remove_file(dest);
        }
        copied
    }

    fn dump(&self) -> Result<Vec<DumpEntry>, StoreError> {
        let txn = self.db.begin_read().map_err(storage_error)?;
        let mut out = Vec::new();
        for row in txn
            .open_table(EPHEMERAL)
            .map_err(storage_error)?
            .iter()
            .map_err(storage_error)?
        {
            let (k, v) = row.map_err(storage_error)?;
            let (namespace, id) = k.value().split_once('\0').ok_or_else(|| {
                StoreError::Corrupt("embedded store: ephemeral key without namespace".into())
            })?;
            let (expires_at_ms, value) = v.value();
            out.push(DumpEntry::Ephemeral {
                namespace: namespace.to_owned(),
                id: id.to_owned(),
                expires_at_ms,
                value: value.to_vec(),
            });
        }
        for row in txn
            .open_table(RECORDS)
            .map_err(storage_error)?
            .iter()
            .map_err(storage_error)?
        {
            let (k, v) = row.map_err(storage_error)?;
            let (kind, group, id) = k.value();
            let (version, value) = v.value();
            out.push(DumpEntry::Record {
                kind: kind.to_owned(),
                group: group.to_owned(),
                id: id.to_owned(),
                version,
                value: value.to_vec(),
            });
        }
        Ok(out)
    }

    fn record_groups(&self, kind: &str) -> Result<Vec<String>, StoreError> {
        let txn = self.db.begin_read().map_err(storage_error)?;
        let table = txn.open_table(RECORDS).map_err(storage_error)?;
        let mut groups: Vec<String> = Vec::new();
        for row in table
            .range::<(&str, &str, &str)>((kind, "", "")..)
            .map_err(storage_error)?
        {
            let (k, _) = row.map_err(storage_error)?;
            let (k_kind, group, _) = k.value();
            if k_kind != kind {
                break;
            }
            if groups.last().map(String::as_str) != Some(group) {
                groups.push(group.to_owned());
            }
        }
        Ok(groups)
    }

    fn sweep(&self) -> Result<usize, StoreError> {
        self.write(|txn| {
            let now = self.now_ms();
            let mut eph = txn.open_table(EPHEMERAL).map_err(storage_error)?;
            let mut exp = txn.open_table(EXPIRY).map_err(storage_error)?;
            // (now + 1, "") is the first key past every entry expiring at or before `now`.
            let mut due = Vec::new();
            for entry in exp
                .range::<(i64, &str)>(..(now.saturating_add(1), ""))
                .map_err(storage_error)?
            {
                let (k, _) = entry.map_err(storage_error)?;
                due.push(k.value().1.to_owned());
            }
            for key in &due {
                remove_entry(&mut eph, &mut exp, key)?;
            }
            let n = due.len();
            Ok((n, n > 0))
        })
    }
}

/// An entry is live while `now < expires_at`.
fn live((expires_at, value): (i64, &[u8]), now: i64) -> Option<Vec<u8>> {
    (now < expires_at).then(|| value.to_vec())
}

/// Removes an ephemeral entry and its expiry index row; returns its value
/// and expiry if it was there.
fn remove_entry(
    eph: &mut EphemeralTable<'_>,
    exp: &mut ExpiryTable<'_>,
    key: &str,
) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
    let old = eph.remove(key).map_err(storage_error)?.map(|g| {
        let (at, v) = g.value();
        (at, v.to_vec())
    });
    if let Some((at, _)) = &old {
        exp.remove((*at, key)).map_err(storage_error)?;
    }
    Ok(old)
}

fn insert_entry(
    eph: &mut EphemeralTable<'_>,
    exp: &mut ExpiryTable<'_>,
    key: &str,
    expires_at: i64,
    value: &[u8],
) -> Result<(), StoreError> {
    remove_entry(eph, exp, key)?;
    eph.insert(key, (expires_at, value))
        .map_err(storage_error)?;
    exp.insert((expires_at, key), ()).map_err(storage_error)?;
    Ok(())
}

/// Whether `expect` holds for a record currently at `current` (None = absent).
fn expect_holds(expect: Expect, current: Option<u64>) -> bool {
    match (expect, current) {
        (Expect::Any, _) | (Expect::Absent, None) => true,
        (Expect::Version(want), Some(have)) => want == have,
        (Expect::Absent, Some(_)) | (Expect::Version(_), None) => false,
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn put_new(
        &self,
        key: &EphemeralKey,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.put_if(key, value, ttl, false).await
    }

    async fn put(&self, key: &EphemeralKey, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let key = ephemeral_key(key);
        let value = value.to_vec();
        self.blocking(move |inner| {
            inner.write(|txn| {
                let expires_at = inner.now_ms().saturating_add(ttl_millis(ttl));
                let mut eph = txn.open_table(EPHEMERAL).map_err(storage_error)?;
                let mut exp = txn.open_table(EXPIRY).map_err(storage_error)?;
                insert_entry(&mut eph, &mut exp, &key, expires_at, &value)?;
                Ok(((), true))
            })
        })
        .await
    }

    async fn replace(
        &self,
        key: &EphemeralKey,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.put_if(key, value, ttl, true).await
    }

    async fn get(&self, key: &EphemeralKey) -> Result<Option<Vec<u8>>, StoreError> {
        // inline, as `record_get`: a read never waits for a writer
        self.inner.get(&ephemeral_key(key))
    }

    async fn take(&self, key: &EphemeralKey) -> Result<Option<Vec<u8>>, StoreError> {
        let key = ephemeral_key(key);
        self.blocking(move |inner| {
            inner.write(|txn| {
                let now = inner.now_ms();
                let mut eph = txn.open_table(EPHEMERAL).map_err(storage_error)?;
                let mut exp = txn.open_table(EXPIRY).map_err(storage_error)?;
                match remove_entry(&mut eph, &mut exp, &key)? {
                    // An expired leftover is dropped too, but reads as absent.
                    Some((at, value)) => Ok((live((at, &value), now), true)),
                    None => Ok((None, false)),
                }
            })
        })
        .await
    }

    async fn remove(&self, key: &EphemeralKey) -> Result<bool, StoreError> {
        Ok(self.take(key).await?.is_some())
    }

    async fn remove_if_eq(&self, key: &EphemeralKey, value: &[u8]) -> Result<bool, StoreError> {
        let key = ephemeral_key(key);
        let value = value.to_vec();
        self.blocking(move |inner| {
            inner.write(|txn| {
                let now = inner.now_ms();
                let mut eph = txn.open_table(EPHEMERAL).map_err(storage_error)?;
                let mut exp = txn.open_table(EXPIRY).map_err(storage_error)?;
                let matches = eph
                    .get(key.as_str())
                    .map_err(storage_error)?
                    .and_then(|g| live(g.value(), now))
                    .is_some_and(|current| current == value);
                if matches {
                    remove_entry(&mut eph, &mut exp, &key)?;
                }
                Ok((matches, matches))
            })
        })
        .await
    }

    async fn record_get(
        &self,
        coll: &Collection,
        id: &str,
    ) -> Result<Option<Versioned>, StoreError> {
        // Inline, not on the blocking pool: a read transaction never waits
        // for a writer (redb keeps the last committed version for readers)
        // and reads a few cached pages, far less than the hop to the pool
        // (the runtime API's hot path makes two such reads per fetch).
        let txn = self.inner.db.begin_read().map_err(storage_error)?;
        let table = txn.open_table(RECORDS).map_err(storage_error)?;
        Ok(table
            .get((coll.kind, coll.group.as_str(), id))
            .map_err(storage_error)?
            .map(|g| {
                let (version, value) = g.value();
                Versioned {
                    version,
                    value: value.to_vec(),
                }
            }))
    }

    async fn record_put(
        &self,
        coll: &Collection,
        id: &str,
        value: &[u8],
        expect: Expect,
    ) -> Result<u64, StoreError> {
        let (kind, group, id) = (coll.kind, coll.group.clone(), id.to_owned());
        let value = value.to_vec();
        self.blocking(move |inner| {
            inner.write(|txn| {
                let mut table = txn.open_table(RECORDS).map_err(storage_error)?;
                let key = (kind, group.as_str(), id.as_str());
                let current = table.get(key).map_err(storage_error)?.map(|g| g.value().0);
                if !expect_holds(expect, current) {
                    return Err(StoreError::Conflict);
                }
                let version = current.unwrap_or(0).checked_add(1).ok_or_else(|| {
                    StoreError::Corrupt(format!("embedded store: version of {id:?} overflows"))
                })?;
                table
                    .insert(key, (version, value.as_slice()))
                    .map_err(storage_error)?;
                Ok((version, true))
            })
        })
        .await
    }

    async fn record_delete(
        &self,
        coll: &Collection,
        id: &str,
        expect: Expect,
    ) -> Result<bool, StoreError> {
        let (kind, group, id) = (coll.kind, coll.group.clone(), id.to_owned());
        self.blocking(move |inner| {
            inner.write(|txn| {
                let mut table = txn.open_table(RECORDS).map_err(storage_error)?;
                let key = (kind, group.as_str(), id.as_str());
                let current = table.get(key).map_err(storage_error)?.map(|g| g.value().0);
                if !expect_holds(expect, current) {
                    return Err(StoreError::Conflict);
                }
                if current.is_none() {
                    return Ok((false, false));
                }
                table.remove(key).map_err(storage_error)?;
                Ok((true, true))
            })
        })
        .await
    }

    async fn record_list(&self, coll: &Collection) -> Result<Vec<(String, Versioned)>, StoreError> {
        let (kind, group) = (coll.kind, coll.group.clone());
        self.blocking(move |inner| {
            let txn = inner.db.begin_read().map_err(storage_error)?;
            let table = txn.open_table(RECORDS).map_err(storage_error)?;
            let mut out = Vec::new();
            for entry in table
                .range::<(&str, &str, &str)>((kind, group.as_str(), "")..)
                .map_err(storage_error)?
            {
                let (k, v) = entry.map_err(storage_error)?;
                let (k_kind, k_group, id) = k.value();
                if k_kind != kind || k_group != group {
                    break;
                }
                let (version, value) = v.value();
                out.push((
                    id.to_owned(),
                    Versioned {
                        version,
                        value: value.to_vec(),
                    },
                ));
            }
            Ok(out)
        })
        .await
    }

    async fn collection_delete(&self, coll: &Collection) -> Result<(), StoreError> {
        let (kind, group) = (coll.kind, coll.group.clone());
        self.blocking(move |inner| {
            inner.write(|txn| {
                let mut table = txn.open_table(RECORDS).map_err(storage_error)?;
                let mut ids = Vec::new();
                for entry in table
                    .range::<(&str, &str, &str)>((kind, group.as_str(), "")..)
                    .map_err(storage_error)?
                {
                    let (k, _) = entry.map_err(storage_error)?;
                    let (k_kind, k_group, id) = k.value();
                    if k_kind != kind || k_group != group {
                        break;
                    }
                    ids.push(id.to_owned());
                }
                for id in &ids {
                    table
                        .remove((kind, group.as_str(), id.as_str()))
                        .map_err(storage_error)?;
                }
                Ok(((), !ids.is_empty()))
            })
        })
        .await
    }

    async fn record_groups(&self, kind: &'static str) -> Result<Vec<String>, StoreError> {
        self.blocking(move |inner| inner.record_groups(kind)).await
    }

    async fn backup(&self) -> Result<Option<std::fs::File>, StoreError> {
        self.blocking(|inner| {
            let name = format!(
                "{}.backup-{}.partial",
                inner
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                crate::crypto::random_string(9)
            );
            let tmp = inner.path.with_file_name(name);
            inner.copy_into(&tmp)?;
            let opened = std::fs::File::open(&tmp);
            // unlinked at once: the open handle keeps the data until it is closed
            let _ = std::fs::remove_file(&tmp);
            opened.map(Some).map_err(|e| {
                StoreError::Unavailable(format!("embedded store: reading the backup: {e}"))
            })
        })
        .await
    }

    async fn log_append(
        &self,
        log: &'static str,
        entries: &[LogAppend],
        retention: LogRetention,
    ) -> Result<Vec<LogId>, StoreError> {
        let entries = entries.to_vec();
        self.blocking(move |inner| {
            inner.write(|txn| {
                let mut table = txn.open_table(LOG).map_err(storage_error)?;
                let mut meta = txn.open_table(LOG_META).map_err(storage_error)?;
                let (mut len, mut last) = match meta.get(log).map_err(storage_error)? {
                    Some(g) => {
                        let (len, ms, seq) = g.value();
                        (len, Some(LogId { ms, seq }))
                    }
                    None => (0, None),
                };
                let mut ids = Vec::with_capacity(entries.len());
                for e in &entries {
                    let id = match last {
                        Some(l) if e.at_ms <= l.ms => LogId {
                            ms: l.ms,
                            seq: l.seq.saturating_add(1),
                        },
                        _ => LogId {
                            ms: e.at_ms,
                            seq: 0,
                        },
                    };
                    table
                        .insert((log, id.ms, id.seq), e.value.as_slice())
                        .map_err(storage_error)?;
                    len += 1;
                    last = Some(id);
                    ids.push(id);
                }
                // trim from the oldest: past the count, or older than min_ms
                let max = retention.max_entries.unwrap_or(u64::MAX);
                let min_ms = retention.min_ms.unwrap_or(0);
                let mut doomed = Vec::new();
                for row in table
                    .range((log, 0, 0)..=(log, u64::MAX, u64::MAX))
                    .map_err(storage_error)?
                {
                    let (k, _) = row.map_err(storage_error)?;
                    let (_, ms, seq) = k.value();
                    if len.saturating_sub(doomed.len() as u64) > max || ms < min_ms {
                        doomed.push((ms, seq));
                    } else {
                        break;
                    }
                }
                for (ms, seq) in &doomed {
                    table.remove((log, *ms, *seq)).map_err(storage_error)?;
                }
                len = len.saturating_sub(doomed.len() as u64);
                let changed = !ids.is_empty() || !doomed.is_empty();
                if let Some(l) = last.filter(|_| changed) {
                    meta.insert(log, (len, l.ms, l.seq))
                        .map_err(storage_error)?;
                }
                Ok((ids, changed))
            })
        })
        .await
    }

    async fn log_read(
        &self,
        log: &'static str,
        after: LogId,
        until: LogId,
        limit: usize,
    ) -> Result<Vec<(LogId, Vec<u8>)>, StoreError> {
        if limit == 0 || after >= until {
            return Ok(Vec::new());
        }
        self.blocking(move |inner| {
            let txn = inner.db.begin_read().map_err(storage_error)?;
            let table = txn.open_table(LOG).map_err(storage_error)?;
            let mut out = Vec::new();
            for row in table
                .range((log, after.ms, after.seq)..=(log, until.ms, until.seq))
                .map_err(storage_error)?
            {
                let (k, v) = row.map_err(storage_error)?;
                let (_, ms, seq) = k.value();
                let id = LogId { ms, seq };
                if id == after {
                    continue;
                }
                out.push((id, v.value().to_vec()));
                if out.len() >= limit {
                    break;
                }
            }
            Ok(out)
        })
        .await
    }

    async fn log_len(&self, log: &'static str) -> Result<u64, StoreError> {
        self.blocking(move |inner| {
            let txn = inner.db.begin_read().map_err(storage_error)?;
            let meta = txn.open_table(LOG_META).map_err(storage_error)?;
            Ok(meta
                .get(log)
                .map_err(storage_error)?
                .map_or(0, |g| g.value().0))
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.blocking(|inner| {
            inner.db.begin_read().map_err(storage_error)?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use chrono::{TimeZone, Utc};

    fn setup() -> (tempfile::TempDir, Arc<ManualClock>, EmbeddedStore) {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(
            Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap(),
        ));
        let store = EmbeddedStore::open(&dir.path().join("db.redb"), clock.clone()).unwrap();
        (dir, clock, store)
    }

    fn raw_counts(store: &EmbeddedStore) -> (u64, u64) {
        use redb::ReadableTableMetadata;
        let txn = store.inner.db.begin_read().unwrap();
        let eph = txn.open_table(EPHEMERAL).unwrap().len().unwrap();
        let exp = txn.open_table(EXPIRY).unwrap().len().unwrap();
        (eph, exp)
    }

    #[cfg(unix)]
    #[test]
    fn created_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("var/lib/gitbroker/db.redb");
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let store = EmbeddedStore::open(&path, clock).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600, "the file");
        for d in ["var", "var/lib", "var/lib/gitbroker"] {
            assert_eq!(mode(&dir.path().join(d)), 0o700, "{d}");
        }
        drop(store);
        // reopening an existing database works and keeps the mode
        EmbeddedStore::open(&path, Arc::new(ManualClock::new(Utc::now()))).unwrap();
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn expect_table() {
        assert!(expect_holds(Expect::Any, None));
        assert!(expect_holds(Expect::Any, Some(3)));
        assert!(expect_holds(Expect::Absent, None));
        assert!(!expect_holds(Expect::Absent, Some(1)));
        assert!(expect_holds(Expect::Version(2), Some(2)));
        assert!(!expect_holds(Expect::Version(2), Some(3)));
        assert!(!expect_holds(Expect::Version(1), None));
    }

    #[test]
    fn ttl_rounds_up() {
        assert_eq!(ttl_millis(Duration::ZERO), 1);
        assert_eq!(ttl_millis(Duration::from_micros(1001)), 2);
        assert_eq!(ttl_millis(Duration::from_secs(1)), 1000);
    }

    #[tokio::test]
    async fn sweep_removes_only_expired_entries_and_their_index_rows() {
        let (_dir, clock, store) = setup();
        let short = EphemeralKey::new("t", "short");
        let long = EphemeralKey::new("t", "long");
        store
            .put(&short, b"a", Duration::from_secs(1))
            .await
            .unwrap();
        store
            .put(&long, b"b", Duration::from_secs(60))
            .await
            .unwrap();
        // Re-putting replaces the index row rather than adding a second one.
        store
            .put(&short, b"a", Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(raw_counts(&store), (2, 2));

        assert_eq!(store.sweep_expired().await.unwrap(), 0);
        clock.advance(chrono::Duration::seconds(2));
        assert_eq!(store.sweep_expired().await.unwrap(), 1);
        assert_eq!(raw_counts(&store), (1, 1));
        assert_eq!(store.get(&long).await.unwrap(), Some(b"b".to_vec()));
    }

    #[tokio::test]
    async fn take_and_remove_keep_the_index_in_step() {
        let (_dir, _clock, store) = setup();
        let a = EphemeralKey::new("t", "a");
        store.put(&a, b"1", Duration::from_secs(5)).await.unwrap();
        assert_eq!(store.take(&a).await.unwrap(), Some(b"1".to_vec()));
        store.put(&a, b"2", Duration::from_secs(5)).await.unwrap();
        assert!(store.remove_if_eq(&a, b"2").await.unwrap());
        assert_eq!(raw_counts(&store), (0, 0));
    }

    #[tokio::test]
    async fn spawned_sweeper_reclaims_and_stops_with_the_store() {
        let (_dir, clock, store) = setup();
        store
            .put(
                &EphemeralKey::new("t", "x"),
                b"v",
                Duration::from_millis(10),
            )
            .await
            .unwrap();
        clock.advance(chrono::Duration::seconds(1));
        let handle = store.spawn_sweeper(Duration::from_millis(10));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while raw_counts(&store) != (0, 0) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "sweeper did not run"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(store);
        tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .expect("sweeper should end once the store is dropped")
            .unwrap();
    }
}
