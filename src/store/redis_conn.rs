//! The connection under [`super::redis::RedisStore`], for each way of
//! running Redis: one server (the crate's `ConnectionManager`), a Sentinel
//! group (a multiplexed connection to the master the sentinels name, found
//! again whenever it fails) and a Cluster (the crate's cluster connection,
//! which follows slot moves and failovers itself).

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::sentinel::SentinelClient;
use redis::{AsyncConnectionConfig, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, Value};
use std::sync::{Arc, Mutex, MutexGuard};

/// One connection handle; clones share the underlying connection(s).
#[derive(Clone)]
pub(crate) enum Conn {
    Standalone(ConnectionManager),
    Sentinel(Arc<SentinelConn>),
    Cluster(ClusterConnection),
}

impl Conn {
    /// `WAIT replicas timeout` on the connection that carried the write to
    /// `key` (in a cluster: the master of the key's slot). Returns how many
    /// replicas acknowledged every write sent before it on that connection.
    pub(crate) async fn wait_for_replicas(
        &mut self,
        key: &str,
        replicas: u32,
        timeout_ms: u64,
    ) -> Result<i64, RedisError> {
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(replicas).arg(timeout_ms);
        match self {
            Conn::Cluster(c) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                    Route::with_key(key, SlotAddr::Master),
                ));
                let reply = c.route_command(cmd, routing).await?;
                Ok(redis::from_redis_value(reply)?)
            }
            other => cmd.query_async(other).await,
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Standalone(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Sentinel(s) => {
                let s = s.clone();
                Box::pin(async move { s.command(cmd).await })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Standalone(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Sentinel(s) => {
                let s = s.clone();
                Box::pin(async move { s.pipeline(pipeline, offset, count).await })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Standalone(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Sentinel(s) => s.db,
        }
    }
}

/// The current master's connection, asked of the sentinels when there is
/// none or when the one we had failed.
///
/// A connection is dropped (and the next call asks the sentinels again) on
/// any I/O error or timeout, and on `READONLY` (the server we reached was
/// demoted to a replica) or `MASTERDOWN`/`LOADING`. A command refused with
/// `READONLY` was not executed, so it is sent once more to the new master;
/// any other failure is returned as it is (a write whose reply was lost may
/// or may not have been applied, and is never sent twice).
pub(crate) struct SentinelConn {
    sentinel: tokio::sync::Mutex<SentinelClient>,
    current: Mutex<Current>,
    config: AsyncConnectionConfig,
    db: i64,
}

#[derive(Default)]
struct Current {
    /// Bumped on every new connection, so that a late failure of an old
    /// connection does not drop a newer one.
    generation: u64,
    conn: Option<MultiplexedConnection>,
}

impl SentinelConn {
    pub(crate) fn new(sentinel: SentinelClient, config: AsyncConnectionConfig, db: i64) -> Self {
        Self {
            sentinel: tokio::sync::Mutex::new(sentinel),
            current: Mutex::new(Current::default()),
            config,
            db,
        }
    }

    fn current(&self) -> MutexGuard<'_, Current> {
        // Nothing can panic while the lock is held; a poisoned lock still
        // holds a consistent value.
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The current master connection, connecting through the sentinels if
    /// there is none.
    pub(crate) async fn connection(&self) -> Result<(u64, MultiplexedConnection), RedisError> {
        if let Some(conn) = self.cached() {
            return Ok(conn);
        }
        // One lookup at a time: callers arriving meanwhile take its result.
        let mut sentinel = self.sentinel.lock().await;
        if let Some(conn) = self.cached() {
            return Ok(conn);
        }
        let conn = sentinel
            .get_async_connection_with_config(&self.config)
            .await?;
        let mut current = self.current();
        current.generation += 1;
        current.conn = Some(conn.clone());
        Ok((current.generation, conn))
    }

    /// A client for the master the sentinels name now (for a connection of
    /// its own, such as pub/sub).
    pub(crate) async fn master_client(&self) -> Result<redis::Client, RedisError> {
        self.sentinel.lock().await.async_get_client().await
    }

    fn cached(&self) -> Option<(u64, MultiplexedConnection)> {
        let current = self.current();
        current.conn.clone().map(|c| (current.generation, c))
    }

    fn forget(&self, generation: u64) {
        let mut current = self.current();
        if current.generation == generation {
            current.conn = None;
        }
    }

    async fn command(&self, cmd: &Cmd) -> Result<Value, RedisError> {
        let mut retried = false;
        loop {
            let (generation, mut conn) = self.connection().await?;
            match conn.send_packed_command(cmd).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    if drops_connection(&e) {
                        self.forget(generation);
                    }
                    if is_read_only(&e) && !retried {
                        retried = true;
                        continue;
                    }
                    return Err(e);
                }
            }
        }
    }

    async fn pipeline(
        &self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> Result<Vec<Value>, RedisError> {
        let (generation, mut conn) = self.connection().await?;
        conn.send_packed_commands(pipeline, offset, count)
            .await
            .inspect_err(|e| {
                if drops_connection(e) {
                    self.forget(generation);
                }
            })
    }
}

fn is_read_only(e: &RedisError) -> bool {
    e.kind() == ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
}

/// Errors after which this connection is not trusted to reach the master.
pub(crate) fn drops_connection(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_unrecoverable_error()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                redis::ServerErrorKind::ReadOnly
                    | redis::ServerErrorKind::MasterDown
                    | redis::ServerErrorKind::BusyLoading
            )
        )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn which_errors_drop_the_master_connection() {
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(drops_connection(&io));
        let timeout = RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert!(drops_connection(&timeout));
        let script = RedisError::from((ErrorKind::Server(redis::ServerErrorKind::NoScript), "x"));
        assert!(!drops_connection(&script));
        let ro = RedisError::from((ErrorKind::Server(redis::ServerErrorKind::ReadOnly), "x"));
        assert!(drops_connection(&ro) && is_read_only(&ro));
        let other = RedisError::from((
            ErrorKind::Server(redis::ServerErrorKind::ResponseError),
            "x",
        ));
        assert!(!drops_connection(&other) && !is_read_only(&other));
    }
}
