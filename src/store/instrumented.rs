//! A [`Store`] that times every operation of the store it wraps and counts
//! its failures, by operation (never by key: keys hold user and runtime ids).

use super::{
    Collection, EphemeralKey, Expect, LogAppend, LogId, LogRetention, Store, StoreError, Versioned,
};
use crate::metrics::Metrics;
use async_trait::async_trait;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub struct InstrumentedStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl InstrumentedStore {
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    async fn timed<T>(
        &self,
        op: &'static str,
        f: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = tokio::time::Instant::now();
        let result = f.await;
        let error = result.as_ref().err().map(|e| match e {
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Conflict => "conflict",
            StoreError::Corrupt(_) => "corrupt",
        });
        self.metrics.store_op(op, started.elapsed(), error);
        result
    }
}

#[async_trait]
impl Store for InstrumentedStore {
    async fn put_new(
        &self,
        key: &EphemeralKey,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.timed("put_new", self.inner.put_new(key, value, ttl))
            .await
    }
    async fn put(&self, key: &EphemeralKey, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        self.timed("put", self.inner.put(key, value, ttl)).await
    }
    async fn replace(
        &self,
        key: &EphemeralKey,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.timed("replace", self.inner.replace(key, value, ttl))
            .await
    }
    async fn get(&self, key: &EphemeralKey) -> Result<Option<Vec<u8>>, StoreError> {
        self.timed("get", self.inner.get(key)).await
    }
    async fn take(&self, key: &EphemeralKey) -> Result<Option<Vec<u8>>, StoreError> {
        self.timed("take", self.inner.take(key)).await
    }
    async fn remove(&self, key: &EphemeralKey) -> Result<bool, StoreError> {
        self.timed("remove", self.inner.remove(key)).await
    }
    async fn remove_if_eq(&self, key: &EphemeralKey, value: &[u8]) -> Result<bool, StoreError> {
        self.timed("remove_if_eq", self.inner.remove_if_eq(key, value))
            .await
    }
    async fn record_get(
        &self,
        coll: &Collection,
        id: &str,
    ) -> Result<Option<Versioned>, StoreError> {
        self.timed("record_get", self.inner.record_get(coll, id))
            .await
    }
    async fn record_get_many(
        &self,
        keys: &[(Collection, String)],
    ) -> Result<Vec<Option<Versioned>>, StoreError> {
        self.timed("record_get_many", self.inner.record_get_many(keys))
            .await
    }
    async fn record_put(
        &self,
        coll: &Collection,
        id: &str,
        value: &[u8],
        expect: Expect,
    ) -> Result<u64, StoreError> {
        self.timed("record_put", self.inner.record_put(coll, id, value, expect))
            .await
    }
    async fn record_delete(
        &self,
        coll: &Collection,
        id: &str,
        expect: Expect,
    ) -> Result<bool, StoreError> {
        self.timed("record_delete", self.inner.record_delete(coll, id, expect))
            .await
    }
    async fn record_list(&self, coll: &Collection) -> Result<Vec<(String, Versioned)>, StoreError> {
        self.timed("record_list", self.inner.record_list(coll))
            .await
    }
    async fn collection_delete(&self, coll: &Collection) -> Result<(), StoreError> {
        self.timed("collection_delete", self.inner.collection_delete(coll))
            .await
    }
    async fn record_groups(&self, kind: &'static str) -> Result<Vec<String>, StoreError> {
        self.timed("record_groups", self.inner.record_groups(kind))
            .await
    }
    async fn log_append(
        &self,
        log: &'static str,
        entries: &[LogAppend],
        retention: LogRetention,
    ) -> Result<Vec<LogId>, StoreError> {
        self.timed("log_append", self.inner.log_append(log, entries, retention))
            .await
    }
    async fn log_read(
        &self,
        log: &'static str,
        after: LogId,
        until: LogId,
        limit: usize,
    ) -> Result<Vec<(LogId, Vec<u8>)>, StoreError> {
        self.timed("log_read", self.inner.log_read(log, after, until, limit))
            .await
    }
    async fn log_len(&self, log: &'static str) -> Result<u64, StoreError> {
        self.timed("log_len", self.inner.log_len(log)).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.timed("ping", self.inner.ping()).await
    }
    async fn backup(&self) -> Result<Option<std::fs::File>, StoreError> {
        self.timed("backup", self.inner.backup()).await
    }
}
