//! The Redis backend of [`Store`]: ephemeral values are plain keys with a TTL,
//! durable records live in one hash per collection, and every compare-and-swap
//! is a Lua script so it is atomic on the server (and on a single cluster slot).
//! Every command touches exactly one key, so the same layout serves one
//! server, a Sentinel group and a Cluster ([`RedisTopology`]).

use super::redis_conn::{Conn, SentinelConn};
use super::{
    Collection, DumpEntry, EphemeralKey, Expect, LogAppend, LogId, LogRetention, Store, StoreError,
    Versioned, redis_log,
};
use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
use redis::{AsyncConnectionConfig, ConnectionAddr, RedisError, Script, TlsCertificates, Value};
use secrecy::{ExposeSecret, SecretString};
use std::future::Future;
use std::time::Duration;

/// Default time allowed to open a TCP (and TLS) connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default time allowed for one command's reply.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Compare-and-delete for lease release: only the holder's value is removed.
const REMOVE_IF_EQ: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Versions are 8-byte big-endian strings; incrementing them byte-wise keeps
/// the whole u64 range exact (Lua numbers are doubles).
const LUA_INCR: &str = r"
local function incr(v)
  local b = {string.byte(v, 1, 8)}
  local i = 8
  while i >= 1 do
    if b[i] < 255 then
      b[i] = b[i] + 1
      return string.char(unpack(b))
    end
    b[i] = 0
    i = i - 1
  end
  return nil
end
";

/// KEYS[1] = collection hash, ARGV = id, mode, expected version (8 bytes), payload.
/// Replies `{1, new_version}`, `{0, ''}` on a failed precondition, `{-1, ''}` when
/// the stored value is too short to hold a version.
const RECORD_PUT_BODY: &str = r"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local mode = ARGV[2]
local nextv
if cur then
  if string.len(cur) < 8 then return {-1, ''} end
  if mode == 'absent' then return {0, ''} end
  local v = string.sub(cur, 1, 8)
  if mode == 'version' and v ~= ARGV[3] then return {0, ''} end
  nextv = incr(v)
  if not nextv then return {-1, ''} end
else
  if mode == 'version' then return {0, ''} end
  nextv = '\0\0\0\0\0\0\0\1'
end
redis.call('HSET', KEYS[1], ARGV[1], nextv .. ARGV[4])
return {1, nextv}
";

/// KEYS[1] = collection hash, ARGV = id, mode, expected version (8 bytes).
/// Replies 1 deleted, 0 nothing there, -1 failed precondition, -2 corrupt value.
const RECORD_DELETE: &str = r"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local mode = ARGV[2]
if not cur then
  if mode == 'version' then return -1 end
  return 0
end
if mode == 'absent' then return -1 end
if mode == 'version' then
  if string.len(cur) < 8 then return -2 end
  if string.sub(cur, 1, 8) ~= ARGV[3] then return -1 end
end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
";

/// How Redis is run.
#[derive(Clone)]
pub enum RedisTopology {
    /// One server: a `redis://` or `rediss://` URL, credentials and database included.
    Standalone { url: SecretString },
    /// A master found through Redis Sentinel. `sentinels` are
    /// `redis://host:port` or `rediss://host:port` (all the same scheme, which
    /// also decides TLS to the master and replicas), without credentials.
    Sentinel {
        sentinels: Vec<NodeAddr>,
        master_name: String,
        db: i64,
    },
    /// A Redis Cluster, reached through any of these seed nodes (the rest are
    /// discovered).
    Cluster { nodes: Vec<NodeAddr> },
}

/// `host:port` of a Sentinel or Cluster node, and whether it speaks TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddr {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl NodeAddr {
    fn connection_addr(&self) -> ConnectionAddr {
        if self.tls {
            ConnectionAddr::TcpTls {
                host: self.host.clone(),
                port: self.port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(self.host.clone(), self.port)
        }
    }
}

/// Everything [`RedisStore::open`] needs.
#[derive(Clone)]
pub struct RedisOptions {
    pub topology: RedisTopology,
    /// ACL user and password for the data nodes (Sentinel and Cluster; a
    /// standalone server takes them in its URL).
    pub username: Option<String>,
    pub password: Option<SecretString>,
    /// ACL user and password for the sentinels themselves, if they need one.
    pub sentinel_username: Option<String>,
    pub sentinel_password: Option<SecretString>,
    /// PEM certificates to trust for `rediss://` instead of the bundled
    /// public roots.
    pub ca_pem: Option<Vec<u8>>,
    pub key_prefix: String,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    /// After each durable write, wait until this many replicas have it
    /// (`WAIT`); 0 does not wait.
    pub wait_replicas: u32,
    pub wait_timeout: Duration,
}

impl RedisOptions {
    /// A standalone server with the default timeouts and no `WAIT`.
    pub fn standalone(url: &str, key_prefix: &str) -> Self {
        Self::new(
            RedisTopology::Standalone {
                url: SecretString::from(url.to_owned()),
            },
            key_prefix,
        )
    }

    pub fn new(topology: RedisTopology, key_prefix: &str) -> Self {
        Self {
            topology,
            username: None,
            password: None,
            sentinel_username: None,
            sentinel_password: None,
            ca_pem: None,
            key_prefix: key_prefix.to_owned(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            wait_replicas: 0,
            wait_timeout: DEFAULT_WAIT_TIMEOUT,
        }
    }

    fn mode(&self) -> &'static str {
        match self.topology {
            RedisTopology::Standalone { .. } => "standalone",
            RedisTopology::Sentinel { .. } => "sentinel",
            RedisTopology::Cluster { .. } => "cluster",
        }
    }
}

impl std::fmt::Debug for RedisOptions {
    // The URL and passwords are secrets; the shape of the setup is not.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("RedisOptions");
        d.field("mode", &self.mode());
        match &self.topology {
            RedisTopology::Standalone { .. } => d.field("url", &"[redacted]"),
            RedisTopology::Sentinel {
                sentinels,
                master_name,
                db,
            } => d
                .field("sentinels", sentinels)
                .field("master_name", master_name)
                .field("db", db),
            RedisTopology::Cluster { nodes } => d.field("nodes", nodes),
        };
        d.field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("sentinel_username", &self.sentinel_username)
            .field(
                "sentinel_password",
                &self.sentinel_password.as_ref().map(|_| "[redacted]"),
            )
            .field("ca_pem", &self.ca_pem.as_ref().map(|p| p.len()))
            .field("key_prefix", &self.key_prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("wait_replicas", &self.wait_replicas)
            .field("wait_timeout", &self.wait_timeout)
            .finish()
    }
}

/// Where [`RedisStore::pubsub_client`] finds a server.
#[derive(Clone)]
enum PubSubSource {
    Standalone(Box<redis::Client>),
    /// The master the sentinels name at the time.
    Sentinel(std::sync::Arc<SentinelConn>),
    /// Any node: classic pub/sub messages reach every node of a cluster.
    Cluster(Vec<redis::Client>),
}

/// Default bound of a `WAIT` for replicas.
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_millis(500);

/// A [`Store`] on Redis: one server, a Sentinel group or a Cluster.
///
/// Clones share the connection(s), which reconnect by themselves after a
/// server comes back or a failover; meanwhile every call fails with
/// [`StoreError::Unavailable`] within about the configured timeouts.
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    pubsub: PubSubSource,
    connect_timeout: Duration,
    prefix: String,
    /// Upper bound for a whole call, reconnect attempts included.
    deadline: Duration,
    wait_replicas: u32,
    wait_timeout: Duration,
    remove_if_eq: Script,
    record_put: Script,
    record_delete: Script,
    log_append: Script,
}

impl std::fmt::Debug for RedisStore {
    // The connection manager holds the connection info, password included;
    // only the prefix is safe and useful to show.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to one server with the default timeouts (2 s to connect, 2 s per reply).
    pub async fn connect(url: &str, key_prefix: &str) -> Result<Self, StoreError> {
        Self::open(&RedisOptions::standalone(url, key_prefix)).await
    }

    /// Connects to one server with these timeouts.
    pub async fn connect_with_timeouts(
        url: &str,
        key_prefix: &str,
        connect: Duration,
        response: Duration,
    ) -> Result<Self, StoreError> {
        let mut options = RedisOptions::standalone(url, key_prefix);
        options.connect_timeout = connect;
        options.response_timeout = response;
        Self::open(&options).await
    }

    /// Connects and waits for the first connection, so a wrong URL, an
    /// unreachable server, no sentinel that knows the master or no cluster
    /// node answering fails at startup instead of at the first request.
    pub async fn open(options: &RedisOptions) -> Result<Self, StoreError> {
        // A brace in the prefix would become the cluster hash tag of every key.
        if options.key_prefix.contains(['{', '}']) {
            return Err(StoreError::Unavailable(
                "redis: key prefix must not contain '{' or '}'".into(),
            ));
        }
        let connect = options.connect_timeout;
        let response = options.response_timeout;
        let certs = options.ca_pem.as_ref().map(|pem| TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.clone()),
        });
        let wait = if options.wait_replicas > 0 {
            options.wait_timeout
        } else {
            Duration::ZERO
        };
        // Connecting may take two attempts (a Sentinel lookup, then the master),
        // then one reply, then the WAIT.
        let deadline = connect
            .saturating_mul(2)
            .saturating_add(response)
            .saturating_add(wait)
            .saturating_add(Duration::from_millis(250));
        let (conn, pubsub) = match &options.topology {
            RedisTopology::Standalone { url } => {
                let url = url.expose_secret();
                let client = match certs {
                    Some(certs) => redis::Client::build_with_tls(url, certs),
                    None => redis::Client::open(url),
                }
                .map_err(|e| {
                    // The parse error may quote the URL; only its kind is reported.
                    StoreError::Unavailable(format!("redis: invalid URL ({})", e.category()))
                })?;
                if matches!(
                    client.get_connection_info().addr(),
                    ConnectionAddr::TcpTls { .. }
                ) {
                    ensure_rustls_provider();
                }
                let pubsub = PubSubSource::Standalone(Box::new(client.clone()));
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(connect))
                    .set_response_timeout(Some(response))
                    // Few, short retries: a caller waiting on a dead server should get its
                    // 503 within seconds; the manager tries again on the next call anyway.
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_millis(250));
                (
                    Conn::Standalone(
                        with_deadline(deadline, ConnectionManager::new_with_config(client, config))
                            .await?,
                    ),
                    pubsub,
                )
            }
            RedisTopology::Sentinel {
                sentinels,
                master_name,
                db,
            } => {
                let tls = sentinels.first().is_some_and(|n| n.tls);
                if tls {
                    ensure_rustls_provider();
                }
                let mut builder = SentinelClientBuilder::new(
                    sentinels.iter().map(NodeAddr::connection_addr),
                    master_name,
                    SentinelServerType::Master,
                )
                .map_err(unavailable)?
                .set_client_to_redis_db(*db);
                if tls {
                    builder = builder.set_client_to_redis_tls_mode(redis::TlsMode::Secure);
                }
                if let Some(user) = &options.username {
                    builder = builder.set_client_to_redis_username(user);
                }
                if let Some(pw) = &options.password {
                    builder = builder.set_client_to_redis_password(pw.expose_secret());
                }
                if let Some(user) = &options.sentinel_username {
                    builder = builder.set_client_to_sentinel_username(user);
                }
                if let Some(pw) = &options.sentinel_password {
                    builder = builder.set_client_to_sentinel_password(pw.expose_secret());
                }
                if let Some(certs) = certs {
                    builder = builder
                        .set_client_to_redis_certificates(certs.clone())
                        .set_client_to_sentinel_certificates(certs);
                }
                let client = builder.build().map_err(unavailable)?;
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(connect))
                    .set_response_timeout(Some(response));
                let sentinel = std::sync::Arc::new(SentinelConn::new(client, config, *db));
                with_deadline(deadline, sentinel.connection()).await?;
                (
                    Conn::Sentinel(sentinel.clone()),
                    PubSubSource::Sentinel(sentinel),
                )
            }
            RedisTopology::Cluster { nodes } => {
                let tls = nodes.first().is_some_and(|n| n.tls);
                if tls {
                    ensure_rustls_provider();
                }
                let mut builder = redis::cluster::ClusterClientBuilder::new(
                    nodes.iter().map(NodeAddr::connection_addr),
                )
                .connection_timeout(connect)
                .response_timeout(response)
                // Retries (redirects, reconnects, a failover's CLUSTERDOWN) stay
                // within one call's deadline; the caller gets its 503 after that.
                .overall_response_timeout(Some(deadline))
                .retries(4)
                .min_retry_wait(50)
                .max_retry_wait(400);
                if let Some(user) = &options.username {
                    builder = builder.username(user);
                }
                if let Some(pw) = &options.password {
                    builder = builder.password(pw.expose_secret());
                }
                let mut redis_info = redis::RedisConnectionInfo::default();
                if let Some(user) = &options.username {
                    redis_info = redis_info.set_username(user);
                }
                if let Some(pw) = &options.password {
                    redis_info = redis_info.set_password(pw.expose_secret());
                }
                let node_clients = nodes
                    .iter()
                    .map(|n| {
                        let info =
                            redis::IntoConnectionInfo::into_connection_info(n.connection_addr())?
                                .set_redis_settings(redis_info.clone());
                        match &certs {
                            Some(certs) => redis::Client::build_with_tls(info, certs.clone()),
                            None => redis::Client::open(info),
                        }
                    })
                    .collect::<Result<Vec<_>, RedisError>>()
                    .map_err(unavailable)?;
                if let Some(certs) = certs {
                    builder = builder.certs(certs);
                }
                let client = builder.build().map_err(unavailable)?;
                (
                    Conn::Cluster(with_deadline(deadline, client.get_async_connection()).await?),
                    PubSubSource::Cluster(node_clients),
                )
            }
        };
        Ok(Self {
            conn,
            pubsub,
            connect_timeout: connect,
            prefix: options.key_prefix.clone(),
            deadline,
            wait_replicas: options.wait_replicas,
            wait_timeout: options.wait_timeout,
            remove_if_eq: Script::new(REMOVE_IF_EQ),
            record_put: Script::new(&format!("{LUA_INCR}{RECORD_PUT_BODY}")),
            record_delete: Script::new(RECORD_DELETE),
            log_append: redis_log::append_script(),
        })
    }

    /// `PUBLISH channel message` on the store's connection (in a cluster,
    /// any node: classic pub/sub reaches every node).
    pub async fn publish(&self, channel: &str, message: &[u8]) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _receivers: i64 = self
            .run(
                redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(message)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(())
    }

    /// A client to open a pub/sub connection with, hearing every
    /// [`Self::publish`]: the standalone server; the master the sentinels
    /// name now (ask again after that connection drops: a failover moved
    /// it); in a cluster, the first seed node that answers.
    pub async fn pubsub_client(&self) -> Result<redis::Client, StoreError> {
        match &self.pubsub {
            PubSubSource::Standalone(client) => Ok((**client).clone()),
            PubSubSource::Sentinel(sentinel) => {
                with_deadline(self.deadline, sentinel.master_client()).await
            }
            PubSubSource::Cluster(clients) => {
                for client in clients {
                    let config = AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(self.connect_timeout))
                        .set_response_timeout(Some(self.connect_timeout));
                    let ping = async {
                        let mut c = client
                            .get_multiplexed_async_connection_with_config(&config)
                            .await?;
                        redis::cmd("PING").exec_async(&mut c).await
                    };
                    if with_deadline(self.deadline, ping).await.is_ok() {
                        return Ok(client.clone());
                    }
                }
                Err(StoreError::Unavailable(
                    "redis: no cluster node answered".into(),
                ))
            }
        }
    }

    /// After a durable write to `key`: with `wait_replicas` set, waits until
    /// that many replicas have every write sent so far on the key's
    /// connection; fewer within `wait_timeout` is [`StoreError::Unavailable`]
    /// (the write may be on the master only and would not survive a failover).
    async fn replicated(&self, key: &str) -> Result<(), StoreError> {
        if self.wait_replicas == 0 {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let acked = self
            .run(conn.wait_for_replicas(key, self.wait_replicas, ttl_millis(self.wait_timeout)))
            .await?;
        if acked < i64::from(self.wait_replicas) {
            return Err(StoreError::Unavailable(format!(
                "redis: write reached {acked} of {} replica(s) in time",
                self.wait_replicas
            )));
        }
        Ok(())
    }

    fn ephemeral_key(&self, key: &EphemeralKey) -> String {
        ephemeral_key(&self.prefix, key.namespace, &key.id)
    }

    /// Every key under the prefix matching `pattern` (a glob after
    /// `{prefix}:`), with `SCAN`, which never blocks the server.
    async fn scan(&self, pattern: &str, stop_at_first: bool) -> Result<Vec<String>, StoreError> {
        let pattern = format!("{}:{pattern}", glob_escape(&self.prefix));
        if let Conn::Cluster(cluster) = &self.conn {
            return self
                .scan_cluster(cluster.clone(), &pattern, stop_at_first)
                .await;
        }
        let mut conn = self.conn.clone();
        let mut cursor: u64 = 0;
        let mut keys = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = self
                .run(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut conn),
                )
                .await?;
            keys.extend(batch);
            if next == 0 || (stop_at_first && !keys.is_empty()) {
                return Ok(keys);
            }
            cursor = next;
        }
    }

    /// SCAN on every master of the cluster (a SCAN sent to the cluster
    /// connection visits one node only); the masters from `CLUSTER NODES`.
    async fn scan_cluster(
        &self,
        mut conn: redis::cluster_async::ClusterConnection,
        pattern: &str,
        stop_at_first: bool,
    ) -> Result<Vec<String>, StoreError> {
        use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
        let nodes: String = self
            .run(redis::cmd("CLUSTER").arg("NODES").query_async(&mut conn))
            .await?;
        let masters: Vec<(String, u16)> = nodes
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let flags = fields.get(2)?;
                if !flags.contains("master") || flags.contains("fail") || flags.contains("noaddr") {
                    return None;
                }
                // ip:port@cport[,hostname]
                let addr = fields.get(1)?.split('@').next()?;
                let (host, port) = addr.rsplit_once(':')?;
                Some((host.trim_matches(['[', ']']).to_owned(), port.parse().ok()?))
            })
            .collect();
        if masters.is_empty() {
            return Err(StoreError::Unavailable(
                "redis: the cluster names no master".into(),
            ));
        }
        let mut keys = Vec::new();
        for (host, port) in masters {
            let mut cursor: u64 = 0;
            loop {
                let mut cmd = redis::cmd("SCAN");
                cmd.arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(1000);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port,
                });
                let value = self.run(conn.route_command(cmd, routing)).await?;
                let (next, batch): (u64, Vec<String>) =
                    redis::FromRedisValue::from_redis_value(value)
                        .map_err(|_| StoreError::Corrupt("redis: unexpected SCAN reply".into()))?;
                keys.extend(batch);
                if stop_at_first && !keys.is_empty() {
                    return Ok(keys);
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(keys)
    }

    /// Whether nothing is stored under this prefix.
    pub async fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.scan("*", true).await?.is_empty())
    }

    /// The records of `entries` that Redis does not hold exactly (same
    /// version, same bytes): 0 after a complete import.
    pub async fn differing_records(&self, entries: &[DumpEntry]) -> Result<u64, StoreError> {
        let mut differing = 0;
        let records: Vec<(&str, &str, &str, u64, &[u8])> = entries
            .iter()
            .filter_map(|e| match e {
                DumpEntry::Record {
                    kind,
                    group,
                    id,
                    version,
                    value,
                } => Some((
                    kind.as_str(),
                    group.as_str(),
                    id.as_str(),
                    *version,
                    value.as_slice(),
                )),
                DumpEntry::Ephemeral { .. } => None,
            })
            .collect();
        for chunk in records.chunks(500) {
            let mut pipe = redis::pipe();
            for (kind, group, id, _, _) in chunk {
                pipe.cmd("HGET")
                    .arg(collection_key_of(&self.prefix, kind, group))
                    .arg(*id);
            }
            let mut conn = self.conn.clone();
            let got: Vec<Option<Vec<u8>>> = self.run(pipe.query_async(&mut conn)).await?;
            for ((_, _, _, version, value), stored) in chunk.iter().zip(got) {
                if stored.as_deref() != Some(frame(*version, value).as_slice()) {
                    differing += 1;
                }
            }
        }
        Ok(differing)
    }

    /// Writes `entries` as they are, versions included; an ephemeral value
    /// gets the time it had left at `now_ms` (those already expired are
    /// skipped). Pipelined, a few hundred entries per round trip. Returns
    /// (records, ephemeral values) written.
    pub async fn import(
        &self,
        entries: &[DumpEntry],
        now_ms: i64,
        mut progress: impl FnMut(u64),
    ) -> Result<(u64, u64), StoreError> {
        let (mut records, mut ephemeral) = (0u64, 0u64);
        for chunk in entries.chunks(500) {
            let mut pipe = redis::pipe();
            for entry in chunk {
                match entry {
                    DumpEntry::Ephemeral {
                        namespace,
                        id,
                        expires_at_ms,
                        value,
                    } => {
                        let left = expires_at_ms.saturating_sub(now_ms);
                        if left <= 0 {
                            continue;
                        }
                        pipe.cmd("SET")
                            .arg(ephemeral_key(&self.prefix, namespace, id))
                            .arg(value.as_slice())
                            .arg("PX")
                            .arg(left)
                            .ignore();
                        ephemeral += 1;
                    }
                    DumpEntry::Record {
                        kind,
                        group,
                        id,
                        version,
                        value,
                    } => {
                        pipe.cmd("HSET")
                            .arg(collection_key_of(&self.prefix, kind, group))
                            .arg(id)
                            .arg(frame(*version, value))
                            .ignore();
                        records += 1;
                    }
                }
            }
            let mut conn = self.conn.clone();
            self.run(pipe.exec_async(&mut conn)).await?;
            progress(chunk.len() as u64);
        }
        Ok((records, ephemeral))
    }

    fn collection_key(&self, coll: &Collection) -> String {
        collection_key(&self.prefix, coll)
    }

    /// `SET key value NX|XX PX ttl`: `true` when the condition held and the
    /// value was stored.
    async fn set_if(
        &self,
        key: &EphemeralKey,
        value: &[u8],
        ttl: Duration,
        condition: &'static str,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let reply: Value = self
            .run(
                redis::cmd("SET")
                    .arg(self.ephemeral_key(key))
                    .arg(value)
                    .arg(condition)
                    .arg("PX")
                    .arg(ttl_millis(ttl))
                    .query_async(&mut conn),
            )
            .await?;
        Ok(!matches!(reply, Value::Nil))
    }

    async fn run<T>(
        &self,
        fut: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, StoreError> {
        with_deadline(self.deadline, fut).await
    }
}

/// `{prefix}:r:{kind:group}`: the braces make `kind:group` the Redis Cluster hash
/// tag. Redis takes the tag up to the first `}`, so `{`, `}` (and `%`, to keep the
/// encoding reversible) are percent-encoded in both parts, and `:` in the kind,
/// so that the first `:` inside the tag always ends the kind.
fn collection_key(prefix: &str, coll: &Collection) -> String {
    collection_key_of(prefix, coll.kind, &coll.group)
}

fn collection_key_of(prefix: &str, kind: &str, group: &str) -> String {
    format!(
        "{prefix}:r:{{{}:{}}}",
        encode_component(kind, true),
        encode_component(group, false)
    )
}

fn ephemeral_key(prefix: &str, namespace: &str, id: &str) -> String {
    format!("{prefix}:e:{namespace}:{id}")
}

/// The stored form of a record: its version, then the payload.
fn frame(version: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + value.len());
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// Reverses [`encode_component`]; `None` for text it cannot have written.
fn decode_component(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 3)?;
        out.push(match code {
            "25" => '%',
            "7B" => '{',
            "7D" => '}',
            "3A" => ':',
            _ => return None,
        });
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// `s` with the glob characters of `SCAN MATCH` escaped.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn encode_component(s: &str, colon: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            ':' if colon => out.push_str("%3A"),
            c => out.push(c),
        }
    }
    out
}

/// A stored record is an 8-byte big-endian version, then the payload (the
/// scripts build it server-side).
fn unframe(mut stored: Vec<u8>) -> Result<Versioned, StoreError> {
    let version = version_of(stored.get(..8))?;
    stored.drain(..8);
    Ok(Versioned {
        version,
        value: stored,
    })
}

fn version_of(bytes: Option<&[u8]>) -> Result<u64, StoreError> {
    bytes
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt("redis: record shorter than its 8-byte version".into()))
}

/// Redis takes whole milliseconds and refuses 0; round up so a TTL is never shorter
/// than asked.
fn ttl_millis(ttl: Duration) -> u64 {
    let ms = ttl.as_nanos().div_ceil(1_000_000).max(1);
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// (mode, expected version bytes) as the scripts take them.
fn expect_args(expect: Expect) -> (&'static str, [u8; 8]) {
    match expect {
        Expect::Absent => ("absent", [0; 8]),
        Expect::Version(v) => ("version", v.to_be_bytes()),
        Expect::Any => ("any", [0; 8]),
    }
}

async fn with_deadline<T>(
    deadline: Duration,
    fut: impl Future<Output = Result<T, RedisError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(deadline, fut).await {
        Ok(result) => result.map_err(unavailable),
        Err(_) => Err(StoreError::Unavailable("redis: timed out".into())),
    }
}

/// Only the error's kind is reported: its text may include the address, and the
/// URL it came from may carry a password.
fn unavailable(e: RedisError) -> StoreError {
    let what = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connection_refusal() {
        "connection refused".to_owned()
    } else if e.is_connection_dropped() {
        "connection dropped".to_owned()
    } else if let Some(code) = e.code() {
        format!("{} ({code})", e.category())
    } else {
        e.category().to_owned()
    };
    StoreError::Unavailable(format!("redis: {what}"))
}

/// rustls needs a process-wide crypto provider when more than one is compiled in
/// (as happens when other dependencies enable both ring and aws-lc-rs); without
/// one, building a TLS config panics. Installing one is harmless if it is unused,
/// and a provider someone installed first is kept.
pub(crate) fn ensure_rustls_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Err only means another thread installed one in between.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn put_new(
        &self,
        key: &EphemeralKey,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.set_if(key, value, ttl, "NX").await
    }

    async fn put(&self, key: &EphemeralKey, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        self.run(
            redis::cmd("SET")
                .arg(self.ephemeral_key(key))
                .arg(value)
                .arg("PX")
                .arg(ttl_millis(ttl))
                .exec_async(&mut conn),
        )
        .await
    }

    async fn replace(
        &self,
        key: &EphemeralKey,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.set_if(key, value, ttl, "XX").await
    }

    async fn get(&self, key: &EphemeralKey) -> Result<Option<Vec<u8>>, StoreError> {
        let mut conn = self.conn.clone();
        self.run(
            redis::cmd("GET")
                .arg(self.ephemeral_key(key))
                .query_async(&mut conn),
        )
        .await
    }

    async fn take(&self, key: &EphemeralKey) -> Result<Option<Vec<u8>>, StoreError> {
        let mut conn = self.conn.clone();
        let k = self.ephemeral_key(key);
        let value: Option<Vec<u8>> = self
            .run(redis::cmd("GETDEL").arg(&k).query_async(&mut conn))
            .await?;
        // A consumed one-time value must not come back after a failover.
        if value.is_some() {
            self.replicated(&k).await?;
        }
        Ok(value)
    }

    async fn remove(&self, key: &EphemeralKey) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let k = self.ephemeral_key(key);
        let n: i64 = self
            .run(redis::cmd("DEL").arg(&k).query_async(&mut conn))
            .await?;
        // A removed value (an ended session) must not come back after a failover.
        if n > 0 {
            self.replicated(&k).await?;
        }
        Ok(n > 0)
    }

    async fn remove_if_eq(&self, key: &EphemeralKey, value: &[u8]) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let n: i64 = self
            .run(
                self.remove_if_eq
                    .key(self.ephemeral_key(key))
                    .arg(value)
                    .invoke_async(&mut conn),
            )
            .await?;
        Ok(n > 0)
    }

    async fn record_get(
        &self,
        coll: &Collection,
        id: &str,
    ) -> Result<Option<Versioned>, StoreError> {
        let mut conn = self.conn.clone();
        let stored: Option<Vec<u8>> = self
            .run(
                redis::cmd("HGET")
                    .arg(self.collection_key(coll))
                    .arg(id)
                    .query_async(&mut conn),
            )
            .await?;
        stored.map(unframe).transpose()
    }

    async fn record_get_many(
        &self,
        keys: &[(Collection, String)],
    ) -> Result<Vec<Option<Versioned>>, StoreError> {
        // a cluster pipeline must stay on one slot: there, one read per
        // record, all in flight at once
        if matches!(self.conn, Conn::Cluster(_)) || keys.len() < 2 {
            return futures_util::future::try_join_all(
                keys.iter().map(|(coll, id)| self.record_get(coll, id)),
            )
            .await;
        }
        let mut pipe = redis::pipe();
        for (coll, id) in keys {
            pipe.cmd("HGET").arg(self.collection_key(coll)).arg(id);
        }
        let mut conn = self.conn.clone();
        let stored: Vec<Option<Vec<u8>>> = self.run(pipe.query_async(&mut conn)).await?;
        if stored.len() != keys.len() {
            return Err(StoreError::Corrupt(format!(
                "redis: {} answers to {} reads",
                stored.len(),
                keys.len()
            )));
        }
        stored
            .into_iter()
            .map(|s| s.map(unframe).transpose())
            .collect()
    }

    async fn record_put(
        &self,
        coll: &Collection,
        id: &str,
        value: &[u8],
        expect: Expect,
    ) -> Result<u64, StoreError> {
        let (mode, expected) = expect_args(expect);
        let mut conn = self.conn.clone();
        let k = self.collection_key(coll);
        let (status, version): (i64, Vec<u8>) = self
            .run(
                self.record_put
                    .key(&k)
                    .arg(id)
                    .arg(mode)
                    .arg(&expected[..])
                    .arg(value)
                    .invoke_async(&mut conn),
            )
            .await?;
        match status {
            1 => {
                let version = version_of(Some(&version))?;
                self.replicated(&k).await?;
                Ok(version)
            }
            0 => Err(StoreError::Conflict),
            _ => Err(StoreError::Corrupt(format!(
                "redis: record {id:?} has no valid version"
            ))),
        }
    }

    async fn record_delete(
        &self,
        coll: &Collection,
        id: &str,
        expect: Expect,
    ) -> Result<bool, StoreError> {
        let (mode, expected) = expect_args(expect);
        let mut conn = self.conn.clone();
        let k = self.collection_key(coll);
        let status: i64 = self
            .run(
                self.record_delete
                    .key(&k)
                    .arg(id)
                    .arg(mode)
                    .arg(&expected[..])
                    .invoke_async(&mut conn),
            )
            .await?;
        match status {
            1 => {
                self.replicated(&k).await?;
                Ok(true)
            }
            0 => Ok(false),
            -1 => Err(StoreError::Conflict),
            _ => Err(StoreError::Corrupt(format!(
                "redis: record {id:?} has no valid version"
            ))),
        }
    }

    async fn record_list(&self, coll: &Collection) -> Result<Vec<(String, Versioned)>, StoreError> {
        let mut conn = self.conn.clone();
        let all: Vec<(Vec<u8>, Vec<u8>)> = self
            .run(
                redis::cmd("HGETALL")
                    .arg(self.collection_key(coll))
                    .query_async(&mut conn),
            )
            .await?;
        let mut out = all
            .into_iter()
            .map(|(id, stored)| {
                let id = String::from_utf8(id)
                    .map_err(|_| StoreError::Corrupt("redis: record id is not UTF-8".into()))?;
                Ok((id, unframe(stored)?))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    async fn collection_delete(&self, coll: &Collection) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let k = self.collection_key(coll);
        self.run(redis::cmd("DEL").arg(&k).exec_async(&mut conn))
            .await?;
        self.replicated(&k).await
    }

    async fn record_groups(&self, kind: &'static str) -> Result<Vec<String>, StoreError> {
        let head = format!("r:{{{}:", encode_component(kind, true));
        let full_head = format!("{}:{head}", self.prefix);
        let mut groups = Vec::new();
        for key in self
            .scan(&format!("{}*", glob_escape(&head)), false)
            .await?
        {
            let group = key
                .strip_prefix(&full_head)
                .and_then(|rest| rest.strip_suffix('}'))
                .and_then(decode_component)
                .ok_or_else(|| StoreError::Corrupt("redis: unexpected collection key".into()))?;
            groups.push(group);
        }
        groups.sort();
        groups.dedup();
        Ok(groups)
    }

    async fn log_append(
        &self,
        log: &'static str,
        entries: &[LogAppend],
        retention: LogRetention,
    ) -> Result<Vec<LogId>, StoreError> {
        let mut conn = self.conn.clone();
        let key = redis_log::key(&self.prefix, log);
        self.run(redis_log::append(
            &mut conn,
            &self.log_append,
            &key,
            entries,
            retention,
        ))
        .await?
    }

    async fn log_read(
        &self,
        log: &'static str,
        after: LogId,
        until: LogId,
        limit: usize,
    ) -> Result<Vec<(LogId, Vec<u8>)>, StoreError> {
        let mut conn = self.conn.clone();
        let key = redis_log::key(&self.prefix, log);
        self.run(redis_log::read(&mut conn, &key, after, until, limit))
            .await?
    }

    async fn log_len(&self, log: &'static str) -> Result<u64, StoreError> {
        let mut conn = self.conn.clone();
        let key = redis_log::key(&self.prefix, log);
        self.run(redis_log::len(&mut conn, &key)).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        self.run(redis::cmd("PING").exec_async(&mut conn)).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn components_decode_back_and_globs_are_escaped() {
        for s in ["plain", "a{b}c%:d", "%7B", "u-1:odd", ""] {
            for colon in [true, false] {
                assert_eq!(
                    decode_component(&encode_component(s, colon)).as_deref(),
                    Some(s)
                );
            }
        }
        assert_eq!(decode_component("%zz"), None);
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    #[test]
    fn collection_key_is_a_hash_tag_per_collection() {
        let key = collection_key("gb", &Collection::new("user_token", "rt-1"));
        assert_eq!(key, "gb:r:{user_token:rt-1}");
    }

    #[test]
    fn braces_and_percent_in_group_are_encoded() {
        let key = collection_key("gb", &Collection::new("k", "a{b}c%:d"));
        assert_eq!(key, "gb:r:{k:a%7Bb%7Dc%25:d}");
        // The hash tag (first '{' to the next '}') is the whole kind:group.
        let open = key.find('{').unwrap();
        let close = key[open..].find('}').unwrap() + open;
        assert_eq!(close, key.len() - 1);
    }

    #[test]
    fn encoding_is_injective_across_kind_and_group() {
        let a = collection_key("p", &Collection::new("a:b", "c"));
        let b = collection_key("p", &Collection::new("a", "b:c"));
        assert_ne!(a, b);
        let c = collection_key("p", &Collection::new("k", "%7B"));
        let d = collection_key("p", &Collection::new("k", "{"));
        assert_ne!(c, d);
    }

    #[test]
    fn framing_round_trips() {
        let stored = frame(258, b"payload");
        assert_eq!(&stored[..8], &[0, 0, 0, 0, 0, 0, 1, 2]);
        let v = unframe(stored).unwrap();
        assert_eq!(v.version, 258);
        assert_eq!(v.value, b"payload");
        assert_eq!(unframe(frame(7, b"")).unwrap().value, b"");
    }

    #[test]
    fn short_values_are_corrupt() {
        assert!(matches!(
            unframe(vec![1, 2, 3]),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(unframe(Vec::new()), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn ttl_rounds_up_to_whole_milliseconds() {
        assert_eq!(ttl_millis(Duration::ZERO), 1);
        assert_eq!(ttl_millis(Duration::from_micros(1)), 1);
        assert_eq!(ttl_millis(Duration::from_micros(1500)), 2);
        assert_eq!(ttl_millis(Duration::from_millis(300)), 300);
    }

    #[tokio::test]
    async fn invalid_url_error_does_not_echo_the_url() {
        let err = RedisStore::connect("redis://:s3cret@[bad", "p")
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, StoreError::Unavailable(_)));
        assert!(!text.contains("s3cret"), "{text}");
    }

    #[tokio::test]
    async fn braces_in_prefix_are_refused() {
        let err = RedisStore::connect("redis://127.0.0.1:1", "a{b}")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("prefix"), "{err}");
    }
}
