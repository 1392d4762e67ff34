//! One behavioural suite for every `Store` backend: each case is written once
//! against `Arc<dyn Store>` and run on Redis (a fresh redis-server per test),
//! on Redis Sentinel and on Redis Cluster (one real group and one real
//! 3-master cluster shared by the binary's tests, each test under its own key
//! prefix) and on the embedded redb store (a fresh file per test), plus
//! backend-only extras.
#![allow(
    clippy::disallowed_methods,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code
)]

mod support;

use gitbroker::clock::{ManualClock, SystemClock};
use gitbroker::store::embedded::EmbeddedStore;
use gitbroker::store::redis::RedisStore;
use gitbroker::store::redis::{NodeAddr, RedisOptions, RedisTopology};
use gitbroker::store::{
    Collection, EphemeralKey, Expect, LogAppend, LogId, LogRetention, Store, StoreError, Versioned,
};
use std::any::Any;
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use support::{MASTER_NAME, RedisCluster, RedisSentinelGroup, RedisServer};

const PREFIX: &str = "gbtest";

/// Keeps a backend's resources (server, directory) alive for one test.
type Guard = Box<dyn Any + Send>;

async fn redis_factory() -> (Arc<dyn Store>, Guard) {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url(), PREFIX).await.unwrap();
    (Arc::new(store), Box::new(server))
}

fn loopback(port: u16) -> NodeAddr {
    NodeAddr {
        host: "127.0.0.1".into(),
        port,
        tls: false,
    }
}

/// One sentinel group for the whole binary: a master, a replica, three sentinels.
fn sentinel_group() -> &'static RedisSentinelGroup {
    static GROUP: OnceLock<RedisSentinelGroup> = OnceLock::new();
    GROUP.get_or_init(|| RedisSentinelGroup::start(1))
}

/// One 3-master cluster for the whole binary.
fn cluster() -> &'static RedisCluster {
    static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| RedisCluster::start(3, 0))
}

/// Through the sentinels, waiting for the replica on every durable write.
async fn sentinel_factory() -> (Arc<dyn Store>, Guard) {
    let group = tokio::task::spawn_blocking(sentinel_group).await.unwrap();
    let mut options = RedisOptions::new(
        RedisTopology::Sentinel {
            sentinels: group.sentinels.iter().map(|s| loopback(s.port)).collect(),
            master_name: MASTER_NAME.into(),
            db: 0,
        },
        &support::unique_prefix(PREFIX),
    );
    options.wait_replicas = 1;
    let store = RedisStore::open(&options).await.unwrap();
    (Arc::new(store), Box::new(()))
}

async fn cluster_factory() -> (Arc<dyn Store>, Guard) {
    let cluster = tokio::task::spawn_blocking(cluster).await.unwrap();
    let options = RedisOptions::new(
        RedisTopology::Cluster {
            nodes: cluster.nodes.iter().map(|n| loopback(n.port)).collect(),
        },
        &support::unique_prefix(PREFIX),
    );
    let store = RedisStore::open(&options).await.unwrap();
    (Arc::new(store), Box::new(()))
}

async fn embedded_factory() -> (Arc<dyn Store>, Guard) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("store.redb"), Arc::new(SystemClock)).unwrap();
    (Arc::new(store), Box::new(dir))
}

/// The metrics decorator the broker installs, around the embedded store:
/// it must pass every case through unchanged.
async fn instrumented_factory() -> (Arc<dyn Store>, Guard) {
    let (inner, guard) = embedded_factory().await;
    let metrics = Arc::new(gitbroker::metrics::Metrics::new());
    let store = gitbroker::store::instrumented::InstrumentedStore::new(inner, metrics);
    (Arc::new(store), guard)
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod redis_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let (store, _guard) = super::redis_factory().await;
                    super::$case(store).await;
                }
            )*
        }
        mod redis_sentinel_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let (store, _guard) = super::sentinel_factory().await;
                    super::$case(store).await;
                }
            )*
        }
        mod redis_cluster_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let (store, _guard) = super::cluster_factory().await;
                    super::$case(store).await;
                }
            )*
        }
        mod embedded_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let (store, _guard) = super::embedded_factory().await;
                    super::$case(store).await;
                }
            )*
        }
        mod instrumented_embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let (store, _guard) = super::instrumented_factory().await;
                    super::$case(store).await;
                }
            )*
        }
    };
}

conformance!(
    ping_answers,
    put_new_refuses_a_second_put_new,
    missing_ephemeral_keys_read_as_absent,
    put_replaces_the_value,
    take_returns_the_value_once,
    concurrent_takes_yield_exactly_one_value,
    concurrent_put_new_admits_exactly_one,
    values_expire_after_their_ttl,
    put_renews_the_ttl,
    replace_only_updates_a_live_value,
    replace_renews_the_ttl_and_never_revives_an_expired_value,
    replace_never_resurrects_a_removed_value,
    remove_if_eq_needs_the_matching_value,
    ephemeral_namespaces_are_independent,
    record_versions_count_writes,
    record_get_many_reads_each_in_order,
    record_put_absent_twice_conflicts,
    record_put_with_wrong_version_conflicts_and_keeps_the_value,
    concurrent_cas_writers_lose_no_update,
    record_delete_honours_expect,
    record_list_is_ordered_and_isolated,
    collection_delete_removes_only_that_collection,
    missing_records_read_as_absent,
    arbitrary_ids_round_trip,
    record_groups_name_every_collection_of_a_kind,
    log_appends_in_order_and_reads_from_a_cursor,
    log_ids_only_grow_even_when_time_steps_back,
    log_trims_by_count_and_by_age,
    logs_are_independent,
    concurrent_log_appends_lose_nothing,
);

fn key(id: &str) -> EphemeralKey {
    EphemeralKey::new("flow", id)
}

const TTL: Duration = Duration::from_secs(60);

async fn ping_answers(store: Arc<dyn Store>) {
    store.ping().await.unwrap();
}

async fn put_new_refuses_a_second_put_new(store: Arc<dyn Store>) {
    assert!(store.put_new(&key("a"), b"first", TTL).await.unwrap());
    assert!(!store.put_new(&key("a"), b"second", TTL).await.unwrap());
    assert_eq!(store.get(&key("a")).await.unwrap(), Some(b"first".to_vec()));
}

async fn missing_ephemeral_keys_read_as_absent(store: Arc<dyn Store>) {
    assert_eq!(store.get(&key("nope")).await.unwrap(), None);
    assert_eq!(store.take(&key("nope")).await.unwrap(), None);
    assert!(!store.remove(&key("nope")).await.unwrap());
    assert!(!store.remove_if_eq(&key("nope"), b"x").await.unwrap());
}

async fn put_replaces_the_value(store: Arc<dyn Store>) {
    store.put(&key("a"), b"one", TTL).await.unwrap();
    store.put(&key("a"), b"two", TTL).await.unwrap();
    assert_eq!(store.get(&key("a")).await.unwrap(), Some(b"two".to_vec()));
    assert!(store.remove(&key("a")).await.unwrap());
    assert!(!store.remove(&key("a")).await.unwrap());
    assert_eq!(store.get(&key("a")).await.unwrap(), None);
}

async fn take_returns_the_value_once(store: Arc<dyn Store>) {
    store.put(&key("once"), b"v", TTL).await.unwrap();
    assert_eq!(store.take(&key("once")).await.unwrap(), Some(b"v".to_vec()));
    assert_eq!(store.take(&key("once")).await.unwrap(), None);
    assert_eq!(store.get(&key("once")).await.unwrap(), None);
}

async fn concurrent_takes_yield_exactly_one_value(store: Arc<dyn Store>) {
    store.put(&key("code"), b"secret", TTL).await.unwrap();
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.take(&key("code")).await.unwrap() })
        })
        .collect();
    let mut got = Vec::new();
    for t in tasks {
        if let Some(v) = t.await.unwrap() {
            got.push(v);
        }
    }
    assert_eq!(got, vec![b"secret".to_vec()]);
}

async fn concurrent_put_new_admits_exactly_one(store: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..100u32)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let won = store
                    .put_new(&key("lock"), &i.to_be_bytes(), TTL)
                    .await
                    .unwrap();
                won.then_some(i)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        winners.extend(t.await.unwrap());
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let stored = store.get(&key("lock")).await.unwrap().unwrap();
    assert_eq!(stored, winners[0].to_be_bytes().to_vec());
}

async fn values_expire_after_their_ttl(store: Arc<dyn Store>) {
    let ttl = Duration::from_millis(300);
    assert!(store.put_new(&key("short"), b"v", ttl).await.unwrap());
    store.put(&key("short2"), b"v", ttl).await.unwrap();
    assert_eq!(store.get(&key("short")).await.unwrap(), Some(b"v".to_vec()));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(store.get(&key("short")).await.unwrap(), None);
    assert_eq!(store.take(&key("short")).await.unwrap(), None);
    assert!(!store.remove(&key("short2")).await.unwrap());
    // An expired key is free again.
    assert!(store.put_new(&key("short"), b"w", TTL).await.unwrap());
    assert_eq!(store.get(&key("short")).await.unwrap(), Some(b"w".to_vec()));
}

async fn put_renews_the_ttl(store: Arc<dyn Store>) {
    let ttl = Duration::from_millis(500);
    store.put(&key("r"), b"1", ttl).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    store.put(&key("r"), b"2", ttl).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // 600 ms after the first put: alive only because the second put renewed it.
    assert_eq!(store.get(&key("r")).await.unwrap(), Some(b"2".to_vec()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(store.get(&key("r")).await.unwrap(), None);
}

async fn replace_only_updates_a_live_value(store: Arc<dyn Store>) {
    assert!(!store.replace(&key("s"), b"ghost", TTL).await.unwrap());
    assert_eq!(store.get(&key("s")).await.unwrap(), None);
    store.put(&key("s"), b"one", TTL).await.unwrap();
    assert!(store.replace(&key("s"), b"two", TTL).await.unwrap());
    assert_eq!(store.get(&key("s")).await.unwrap(), Some(b"two".to_vec()));
    assert!(store.remove(&key("s")).await.unwrap());
    assert!(!store.replace(&key("s"), b"three", TTL).await.unwrap());
    assert_eq!(store.get(&key("s")).await.unwrap(), None);
}

async fn replace_renews_the_ttl_and_never_revives_an_expired_value(store: Arc<dyn Store>) {
    let ttl = Duration::from_millis(500);
    store.put(&key("r"), b"1", ttl).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(store.replace(&key("r"), b"2", ttl).await.unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // alive only because the replace renewed it
    assert_eq!(store.get(&key("r")).await.unwrap(), Some(b"2".to_vec()));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!store.replace(&key("r"), b"3", ttl).await.unwrap());
    assert_eq!(store.get(&key("r")).await.unwrap(), None);
}

/// Sign-out racing requests that write the session back: once the remove
/// has returned, no writer can bring the value back.
async fn replace_never_resurrects_a_removed_value(store: Arc<dyn Store>) {
    for round in 0..5 {
        let k = key(&format!("session-{round}"));
        store.put(&k, b"live", TTL).await.unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writers: Vec<_> = (0..8)
            .map(|i| {
                let (store, k, stop) = (store.clone(), k.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut replaced = 0u32;
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                        if store
                            .replace(&k, format!("w{i}").as_bytes(), TTL)
                            .await
                            .unwrap()
                        {
                            replaced += 1;
                        }
                        tokio::task::yield_now().await;
                    }
                    replaced
                })
            })
            .collect();
        // let the writers run against the live value, then remove it under them
        while store.get(&k).await.unwrap().as_deref() == Some(b"live".as_slice()) {
            tokio::task::yield_now().await;
        }
        assert!(store.remove(&k).await.unwrap());
        for _ in 0..20 {
            assert_eq!(store.get(&k).await.unwrap(), None, "round {round}");
            tokio::task::yield_now().await;
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut total = 0;
        for w in writers {
            total += w.await.unwrap();
        }
        assert!(
            total > 0,
            "the writers replaced the live value at least once"
        );
        assert_eq!(store.get(&k).await.unwrap(), None, "round {round}");
    }
}

async fn remove_if_eq_needs_the_matching_value(store: Arc<dyn Store>) {
    store.put(&key("lease"), b"holder-a", TTL).await.unwrap();
    assert!(
        !store
            .remove_if_eq(&key("lease"), b"holder-b")
            .await
            .unwrap()
    );
    assert!(!store.remove_if_eq(&key("lease"), b"holder").await.unwrap());
    assert_eq!(
        store.get(&key("lease")).await.unwrap(),
        Some(b"holder-a".to_vec())
    );
    assert!(
        store
            .remove_if_eq(&key("lease"), b"holder-a")
            .await
            .unwrap()
    );
    assert_eq!(store.get(&key("lease")).await.unwrap(), None);
    assert!(
        !store
            .remove_if_eq(&key("lease"), b"holder-a")
            .await
            .unwrap()
    );
}

async fn ephemeral_namespaces_are_independent(store: Arc<dyn Store>) {
    let flow = EphemeralKey::new("flow", "x");
    let session = EphemeralKey::new("session", "x");
    store.put(&flow, b"f", TTL).await.unwrap();
    assert_eq!(store.get(&session).await.unwrap(), None);
    assert!(store.put_new(&session, b"s", TTL).await.unwrap());
    assert_eq!(store.take(&flow).await.unwrap(), Some(b"f".to_vec()));
    assert_eq!(store.get(&session).await.unwrap(), Some(b"s".to_vec()));
}

fn coll(group: &str) -> Collection {
    Collection::new("user_token", group)
}

async fn record_versions_count_writes(store: Arc<dyn Store>) {
    let c = coll("rt-1");
    assert_eq!(
        store
            .record_put(&c, "r", b"v1", Expect::Absent)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .record_put(&c, "r", b"v2", Expect::Version(1))
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store.record_put(&c, "r", b"v3", Expect::Any).await.unwrap(),
        3
    );
    assert_eq!(
        store
            .record_put(&c, "r", b"v4", Expect::Version(3))
            .await
            .unwrap(),
        4
    );
    assert_eq!(
        store.record_get(&c, "r").await.unwrap(),
        Some(Versioned {
            version: 4,
            value: b"v4".to_vec()
        })
    );
    // Any on a missing record creates it at version 1.
    assert_eq!(
        store.record_put(&c, "s", b"x", Expect::Any).await.unwrap(),
        1
    );
}

/// Records of several collections at once, in the order asked, missing
/// ones as `None`, each with its version; as many reads as keys, repeats
/// included.
async fn record_get_many_reads_each_in_order(store: Arc<dyn Store>) {
    let (a, b) = (coll("rt-a"), coll("rt-b"));
    store.record_put(&a, "u", b"a1", Expect::Any).await.unwrap();
    store.record_put(&a, "u", b"a2", Expect::Any).await.unwrap();
    store.record_put(&b, "u", b"b1", Expect::Any).await.unwrap();
    let keys = [
        (b.clone(), "u".to_owned()),
        (a.clone(), "nobody".to_owned()),
        (coll("rt-none"), "u".to_owned()),
        (a.clone(), "u".to_owned()),
        (b.clone(), "u".to_owned()),
    ];
    let got = store.record_get_many(&keys).await.unwrap();
    let b1 = Some(Versioned {
        version: 1,
        value: b"b1".to_vec(),
    });
    let a2 = Some(Versioned {
        version: 2,
        value: b"a2".to_vec(),
    });
    assert_eq!(got, [b1.clone(), None, None, a2, b1]);
    assert_eq!(store.record_get_many(&[]).await.unwrap(), []);
    let one = store.record_get_many(&keys[..1]).await.unwrap();
    assert_eq!(one, [store.record_get(&b, "u").await.unwrap()]);
}

async fn record_put_absent_twice_conflicts(store: Arc<dyn Store>) {
    let c = coll("rt-1");
    store
        .record_put(&c, "r", b"first", Expect::Absent)
        .await
        .unwrap();
    let err = store
        .record_put(&c, "r", b"second", Expect::Absent)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict), "{err:?}");
    let got = store.record_get(&c, "r").await.unwrap().unwrap();
    assert_eq!((got.version, got.value), (1, b"first".to_vec()));
}

async fn record_put_with_wrong_version_conflicts_and_keeps_the_value(store: Arc<dyn Store>) {
    let c = coll("rt-1");
    store
        .record_put(&c, "r", b"v1", Expect::Absent)
        .await
        .unwrap();
    store
        .record_put(&c, "r", b"v2", Expect::Version(1))
        .await
        .unwrap();
    for stale in [0, 1, 3, u64::MAX] {
        let err = store
            .record_put(&c, "r", b"lost", Expect::Version(stale))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict), "{stale}: {err:?}");
    }
    let got = store.record_get(&c, "r").await.unwrap().unwrap();
    assert_eq!((got.version, got.value), (2, b"v2".to_vec()));
    // Expecting a version of a record that does not exist is a conflict too.
    let err = store
        .record_put(&c, "missing", b"x", Expect::Version(1))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict), "{err:?}");
    assert_eq!(store.record_get(&c, "missing").await.unwrap(), None);
}

async fn concurrent_cas_writers_lose_no_update(store: Arc<dyn Store>) {
    let c = coll("counter");
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let store = store.clone();
            let c = c.clone();
            tokio::spawn(async move {
                loop {
                    let current = store.record_get(&c, "n").await.unwrap();
                    let (expect, next) = match current {
                        None => (Expect::Absent, 1u64),
                        Some(v) => {
                            let n: u64 = std::str::from_utf8(&v.value).unwrap().parse().unwrap();
                            (Expect::Version(v.version), n + 1)
                        }
                    };
                    match store
                        .record_put(&c, "n", next.to_string().as_bytes(), expect)
                        .await
                    {
                        Ok(_) => return,
                        Err(StoreError::Conflict) => tokio::task::yield_now().await,
                        Err(e) => panic!("unexpected error: {e:?}"),
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let got = store.record_get(&c, "n").await.unwrap().unwrap();
    assert_eq!(got.value, b"100".to_vec());
    assert_eq!(got.version, 100);
}

async fn record_delete_honours_expect(store: Arc<dyn Store>) {
    let c = coll("rt-1");
    store
        .record_put(&c, "r", b"v1", Expect::Absent)
        .await
        .unwrap();
    store
        .record_put(&c, "r", b"v2", Expect::Version(1))
        .await
        .unwrap();

    let err = store
        .record_delete(&c, "r", Expect::Version(1))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict), "{err:?}");
    let err = store
        .record_delete(&c, "r", Expect::Absent)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict), "{err:?}");
    assert!(store.record_get(&c, "r").await.unwrap().is_some());

    assert!(
        store
            .record_delete(&c, "r", Expect::Version(2))
            .await
            .unwrap()
    );
    assert_eq!(store.record_get(&c, "r").await.unwrap(), None);

    store
        .record_put(&c, "s", b"x", Expect::Absent)
        .await
        .unwrap();
    assert!(store.record_delete(&c, "s", Expect::Any).await.unwrap());
    assert!(!store.record_delete(&c, "s", Expect::Any).await.unwrap());
    // Recreated after a delete, a record starts over at version 1.
    assert_eq!(
        store
            .record_put(&c, "s", b"y", Expect::Absent)
            .await
            .unwrap(),
        1
    );
}

async fn record_list_is_ordered_and_isolated(store: Arc<dyn Store>) {
    let a = Collection::new("user_token", "g1");
    let b = Collection::new("user_token", "g2");
    let other_kind = Collection::new("oauth_app", "g1");
    for id in ["m", "a", "z", "b"] {
        store
            .record_put(&a, id, format!("a-{id}").as_bytes(), Expect::Absent)
            .await
            .unwrap();
    }
    store
        .record_put(&b, "a", b"b-a", Expect::Absent)
        .await
        .unwrap();
    store
        .record_put(&other_kind, "a", b"k-a", Expect::Absent)
        .await
        .unwrap();
    store
        .record_put(&a, "m", b"a-m2", Expect::Version(1))
        .await
        .unwrap();

    let listed = store.record_list(&a).await.unwrap();
    let ids: Vec<_> = listed.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "m", "z"]);
    assert_eq!(
        listed[2].1,
        Versioned {
            version: 2,
            value: b"a-m2".to_vec()
        }
    );

    // The same id in another group or another kind is a different record.
    let in_b = store.record_list(&b).await.unwrap();
    assert_eq!(in_b.len(), 1);
    assert_eq!(in_b[0].1.value, b"b-a".to_vec());
    assert_eq!(in_b[0].1.version, 1);
    let in_kind = store.record_get(&other_kind, "a").await.unwrap().unwrap();
    assert_eq!(in_kind.value, b"k-a".to_vec());
    assert_eq!(
        store.record_get(&a, "a").await.unwrap().unwrap().value,
        b"a-a".to_vec()
    );

    // A group that is a prefix of another does not see its records.
    let prefix = Collection::new("user_token", "g");
    assert!(store.record_list(&prefix).await.unwrap().is_empty());
}

async fn collection_delete_removes_only_that_collection(store: Arc<dyn Store>) {
    let a = Collection::new("user_token", "g1");
    let b = Collection::new("user_token", "g2");
    let other_kind = Collection::new("oauth_app", "g1");
    for c in [&a, &b, &other_kind] {
        for id in ["x", "y"] {
            store.record_put(c, id, b"v", Expect::Absent).await.unwrap();
        }
    }
    store.put(&key("g1"), b"ephemeral", TTL).await.unwrap();

    store.collection_delete(&a).await.unwrap();
    assert!(store.record_list(&a).await.unwrap().is_empty());
    assert_eq!(store.record_get(&a, "x").await.unwrap(), None);
    assert_eq!(store.record_list(&b).await.unwrap().len(), 2);
    assert_eq!(store.record_list(&other_kind).await.unwrap().len(), 2);
    assert!(store.get(&key("g1")).await.unwrap().is_some());

    // Deleting an empty or missing collection is fine, and it can be refilled.
    store.collection_delete(&a).await.unwrap();
    assert_eq!(
        store
            .record_put(&a, "x", b"new", Expect::Absent)
            .await
            .unwrap(),
        1
    );
}

async fn missing_records_read_as_absent(store: Arc<dyn Store>) {
    let c = coll("empty");
    assert_eq!(store.record_get(&c, "x").await.unwrap(), None);
    assert!(store.record_list(&c).await.unwrap().is_empty());
    assert!(!store.record_delete(&c, "x", Expect::Any).await.unwrap());
    assert!(!store.record_delete(&c, "x", Expect::Absent).await.unwrap());
    let err = store
        .record_delete(&c, "x", Expect::Version(1))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict), "{err:?}");
    store.collection_delete(&c).await.unwrap();
}

const ODD_IDS: &[&str] = &[
    "",
    "a:b:c",
    "{x}",
    "}{",
    "%7B",
    "user@example.com/ø/日本語/🦀",
    "with space\tand\nnewline",
    "nul\0inside",
];

async fn arbitrary_ids_round_trip(store: Arc<dyn Store>) {
    let groups = ["plain", "{tag}", "a:b", "%", "ü"];
    for group in groups {
        let c = coll(group);
        for (i, id) in ODD_IDS.iter().enumerate() {
            let value = format!("{group}/{i}");
            store
                .record_put(&c, id, value.as_bytes(), Expect::Absent)
                .await
                .unwrap();
        }
    }
    for group in groups {
        let c = coll(group);
        for (i, id) in ODD_IDS.iter().enumerate() {
            let got = store.record_get(&c, id).await.unwrap().unwrap();
            assert_eq!(
                got.value,
                format!("{group}/{i}").into_bytes(),
                "{group:?}/{id:?}"
            );
        }
        let listed: Vec<String> = store
            .record_list(&c)
            .await
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let mut expected: Vec<String> = ODD_IDS.iter().map(|s| (*s).to_owned()).collect();
        expected.sort();
        assert_eq!(listed, expected, "group {group:?}");
    }
    // Empty payloads are values too.
    store
        .record_put(&coll("plain"), "empty", b"", Expect::Absent)
        .await
        .unwrap();
    assert_eq!(
        store
            .record_get(&coll("plain"), "empty")
            .await
            .unwrap()
            .unwrap()
            .value,
        Vec::<u8>::new()
    );

    for (i, id) in ODD_IDS.iter().enumerate() {
        let k = key(id);
        assert!(
            store.put_new(&k, &[i as u8, 0, 255], TTL).await.unwrap(),
            "{id:?}"
        );
    }
    for (i, id) in ODD_IDS.iter().enumerate() {
        assert_eq!(
            store.take(&key(id)).await.unwrap(),
            Some(vec![i as u8, 0, 255])
        );
    }
    store.put(&key("empty-value"), b"", TTL).await.unwrap();
    assert_eq!(
        store.get(&key("empty-value")).await.unwrap(),
        Some(Vec::new())
    );
}

async fn record_groups_name_every_collection_of_a_kind(store: Arc<dyn Store>) {
    assert!(store.record_groups("grant").await.unwrap().is_empty());
    // groups with the characters the Redis layout encodes, and a kind that
    // is a prefix of another
    let groups = ["u-1", "u:2{x}%", "u-3*?[]"];
    for g in groups {
        for id in ["a", "b"] {
            store
                .record_put(&Collection::new("grant", g), id, b"v", Expect::Absent)
                .await
                .unwrap();
        }
    }
    store
        .record_put(
            &Collection::new("grants", "other"),
            "a",
            b"v",
            Expect::Absent,
        )
        .await
        .unwrap();
    store
        .record_put(&Collection::new("gran", "other"), "a", b"v", Expect::Absent)
        .await
        .unwrap();
    store
        .put(&EphemeralKey::new("grant", "not-a-record"), b"v", TTL)
        .await
        .unwrap();
    let mut want: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
    want.sort();
    assert_eq!(store.record_groups("grant").await.unwrap(), want);
    assert_eq!(store.record_groups("grants").await.unwrap(), vec!["other"]);
    // an emptied collection is not listed
    store
        .collection_delete(&Collection::new("grant", "u-1"))
        .await
        .unwrap();
    want.retain(|g| g != "u-1");
    assert_eq!(store.record_groups("grant").await.unwrap(), want);
}

// ---------------------------------------------------------------- embedded only

mod embedded_only {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn manual_clock() -> Arc<ManualClock> {
        Arc::new(ManualClock::new(
            Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap(),
        ))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_backup_is_a_consistent_store_taken_while_writers_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("s.redb"), Arc::new(SystemClock)).unwrap();
        store.put(&key("session"), b"live", TTL).await.unwrap();
        // each write moves "a" and "b" together: a torn copy would show them apart
        let writer = {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..200u32 {
                    let n = i.to_be_bytes();
                    for id in ["a", "b"] {
                        store
                            .record_put(&coll("pair"), id, &n, Expect::Any)
                            .await
                            .unwrap();
                    }
                }
            })
        };
        let mut copies = Vec::new();
        for i in 0..5 {
            let dest = dir.path().join(format!("backup-{i}.redb"));
            let counts = store.backup_to(&dest).await.unwrap();
            copies.push((dest, counts));
        }
        let file = store
            .backup()
            .await
            .unwrap()
            .expect("the embedded store backs up");
        writer.await.unwrap();
        assert!(file.metadata().unwrap().len() > 0);
        assert!(
            std::fs::read_dir(dir.path()).unwrap().all(|e| !e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".partial")),
            "the served backup leaves no file behind"
        );
        for (dest, counts) in copies {
            assert_eq!(counts.ephemeral, 1);
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&dest).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "a backup holds what the store holds");
            }
            let copy = EmbeddedStore::open(&dest, Arc::new(SystemClock)).unwrap();
            let pair = copy.record_list(&coll("pair")).await.unwrap();
            assert_eq!(pair.len() as u64, counts.records);
            if let [(_, a), (_, b)] = pair.as_slice() {
                // a was written first: b is either the same write or one behind
                assert!(
                    a.value == b.value || a.version == b.version + 1,
                    "torn copy: {a:?} / {b:?}"
                );
            }
            assert_eq!(
                copy.get(&key("session")).await.unwrap(),
                Some(b"live".to_vec())
            );
            assert!(store.backup_to(&dest).await.is_err(), "never overwrites");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn data_survives_closing_and_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dirs/store.redb");
        let clock = manual_clock();
        let c = coll("rt-1");
        {
            let store = EmbeddedStore::open(&path, clock.clone()).unwrap();
            store
                .record_put(&c, "r", b"v1", Expect::Absent)
                .await
                .unwrap();
            store
                .record_put(&c, "r", b"v2", Expect::Version(1))
                .await
                .unwrap();
            store.put(&key("session"), b"s", TTL).await.unwrap();
        }
        let store = EmbeddedStore::open(&path, clock).unwrap();
        assert_eq!(
            store.record_get(&c, "r").await.unwrap(),
            Some(Versioned {
                version: 2,
                value: b"v2".to_vec()
            })
        );
        assert_eq!(
            store.get(&key("session")).await.unwrap(),
            Some(b"s".to_vec())
        );
        assert_eq!(
            store
                .record_put(&c, "r", b"v3", Expect::Version(2))
                .await
                .unwrap(),
            3
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn ephemeral_expiry_follows_the_injected_clock() {
        let dir = tempfile::tempdir().unwrap();
        let clock = manual_clock();
        let store = EmbeddedStore::open(&dir.path().join("s.redb"), clock.clone()).unwrap();
        let ttl = Duration::from_secs(10);
        assert!(store.put_new(&key("a"), b"v", ttl).await.unwrap());
        store.put(&key("b"), b"v", ttl).await.unwrap();

        clock.advance(chrono::Duration::milliseconds(9_999));
        assert_eq!(store.get(&key("a")).await.unwrap(), Some(b"v".to_vec()));
        assert!(!store.put_new(&key("a"), b"w", ttl).await.unwrap());

        clock.advance(chrono::Duration::milliseconds(1));
        assert_eq!(store.get(&key("a")).await.unwrap(), None);
        assert_eq!(store.take(&key("a")).await.unwrap(), None);
        assert!(!store.remove(&key("b")).await.unwrap());
        assert!(!store.remove_if_eq(&key("b"), b"v").await.unwrap());
        assert!(store.put_new(&key("a"), b"w", ttl).await.unwrap());
        assert_eq!(store.get(&key("a")).await.unwrap(), Some(b"w".to_vec()));

        // `put` restarts the TTL from the clock's now.
        clock.advance(chrono::Duration::seconds(8));
        store.put(&key("a"), b"x", ttl).await.unwrap();
        clock.advance(chrono::Duration::seconds(8));
        assert_eq!(store.get(&key("a")).await.unwrap(), Some(b"x".to_vec()));
        // Records never expire.
        store
            .record_put(&coll("g"), "r", b"v", Expect::Absent)
            .await
            .unwrap();
        clock.advance(chrono::Duration::days(3650));
        assert!(store.record_get(&coll("g"), "r").await.unwrap().is_some());
        assert_eq!(store.sweep_expired().await.unwrap(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_second_open_of_the_same_file_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let _first = EmbeddedStore::open(&path, manual_clock()).unwrap();
        let err = EmbeddedStore::open(&path, manual_clock()).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(text.contains("in use by another process"), "{text}");
        assert!(text.contains("s.redb"), "{text}");
    }
}

// ---------------------------------------------------------------- redis only

mod redis_only {
    use super::*;

    /// Nothing listens on a port we just bound and released.
    fn dead_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn connecting_to_nothing_fails_fast_and_quietly() {
        let url = format!("redis://:hunter2@127.0.0.1:{}/", dead_port());
        let started = Instant::now();
        let err = RedisStore::connect(&url, PREFIX).await.unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let text = err.to_string();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(text.contains("redis:"), "{text}");
        assert!(
            !text.contains("hunter2") && !text.contains("127.0.0.1"),
            "{text}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn connecting_to_a_silent_server_times_out() {
        // Accepts TCP but never answers: only the timeouts can end the wait.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let started = Instant::now();
        let err = RedisStore::connect_with_timeouts(
            &format!("redis://127.0.0.1:{port}/"),
            PREFIX,
            Duration::from_millis(500),
            Duration::from_millis(500),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        drop(listener);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn rediss_to_a_plain_server_fails_closed() {
        let server = RedisServer::start();
        let url = format!("rediss://127.0.0.1:{}/", server.port());
        let started = Instant::now();
        // redis-server reads the ClientHello as an unfinished inline command and
        // waits, so this ends by the connect timeout (short here to keep the suite fast).
        let err = RedisStore::connect_with_timeouts(
            &url,
            PREFIX,
            Duration::from_millis(500),
            Duration::from_millis(500),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_killed_server_makes_calls_unavailable_then_recovers() {
        let password = "s3cret-pw";
        let mut server = RedisServer::start_with_args(&["--requirepass", password]);
        let url = format!("redis://:{password}@127.0.0.1:{}/", server.port());
        let store = RedisStore::connect(&url, PREFIX).await.unwrap();
        store.put(&key("a"), b"v", TTL).await.unwrap();
        store
            .record_put(&coll("g"), "r", b"v", Expect::Absent)
            .await
            .unwrap();

        server.kill();
        for _ in 0..3 {
            let started = Instant::now();
            let errors = [
                store.get(&key("a")).await.unwrap_err(),
                store.put_new(&key("b"), b"v", TTL).await.unwrap_err(),
                store
                    .record_put(&coll("g"), "r", b"w", Expect::Version(1))
                    .await
                    .unwrap_err(),
                store.ping().await.unwrap_err(),
            ];
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{:?}",
                started.elapsed()
            );
            for err in errors {
                let text = err.to_string();
                assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
                assert!(!text.contains(password) && !text.contains(&url), "{text}");
            }
        }

        // A new (empty) server on the same address: the same store reconnects.
        server.restart();
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.ping().await.is_err() {
            assert!(Instant::now() < deadline, "store did not reconnect");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(store.get(&key("a")).await.unwrap(), None);
        assert!(store.put_new(&key("a"), b"again", TTL).await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn keys_follow_the_documented_layout() {
        let server = RedisServer::start();
        let store = RedisStore::connect(&server.url(), PREFIX).await.unwrap();
        store.put(&key("f:1"), b"v", TTL).await.unwrap();
        store
            .record_put(
                &Collection::new("user_token", "rt:{1}%"),
                "id:{x}",
                b"v",
                Expect::Absent,
            )
            .await
            .unwrap();
        store
            .record_put(
                &Collection::new("oauth_app", "default"),
                "a",
                b"v",
                Expect::Absent,
            )
            .await
            .unwrap();

        let mut conn = server.client().get_connection().unwrap();
        let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
        keys.sort();
        assert_eq!(
            keys,
            [
                "gbtest:e:flow:f:1",
                "gbtest:r:{oauth_app:default}",
                "gbtest:r:{user_token:rt:%7B1%7D%25}",
            ]
        );
        let hash_type: String = redis::cmd("TYPE")
            .arg("gbtest:r:{oauth_app:default}")
            .query(&mut conn)
            .unwrap();
        assert_eq!(hash_type, "hash");
        // Value framing: 8-byte big-endian version, then the payload.
        let raw: Vec<u8> = redis::cmd("HGET")
            .arg("gbtest:r:{oauth_app:default}")
            .arg("a")
            .query(&mut conn)
            .unwrap();
        assert_eq!(raw, [0, 0, 0, 0, 0, 0, 0, 1, b'v']);
        let pttl: i64 = redis::cmd("PTTL")
            .arg("gbtest:e:flow:f:1")
            .query(&mut conn)
            .unwrap();
        assert!(pttl > 0 && pttl <= 60_000, "{pttl}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn values_too_short_for_a_version_are_corrupt() {
        let server = RedisServer::start();
        let store = RedisStore::connect(&server.url(), PREFIX).await.unwrap();
        let c = Collection::new("user_token", "g");
        let mut conn = server.client().get_connection().unwrap();
        let _: () = redis::cmd("HSET")
            .arg("gbtest:r:{user_token:g}")
            .arg("bad")
            .arg(&b"\x00\x01"[..])
            .query(&mut conn)
            .unwrap();

        let is_corrupt = |r: Result<_, StoreError>| matches!(r, Err(StoreError::Corrupt(_)));
        assert!(is_corrupt(store.record_get(&c, "bad").await.map(|_| ())));
        assert!(is_corrupt(store.record_list(&c).await.map(|_| ())));
        assert!(is_corrupt(
            store
                .record_put(&c, "bad", b"x", Expect::Any)
                .await
                .map(|_| ())
        ));
        assert!(is_corrupt(
            store
                .record_put(&c, "bad", b"x", Expect::Version(1))
                .await
                .map(|_| ())
        ));
        assert!(is_corrupt(
            store
                .record_delete(&c, "bad", Expect::Version(1))
                .await
                .map(|_| ())
        ));
        // An unconditional delete can still clear it.
        assert!(store.record_delete(&c, "bad", Expect::Any).await.unwrap());
    }
}

fn entry(at_ms: u64, value: &str) -> LogAppend {
    LogAppend {
        at_ms,
        value: value.as_bytes().to_vec(),
    }
}

async fn log_values(store: &Arc<dyn Store>, log: &'static str) -> Vec<String> {
    store
        .log_read(log, LogId::MIN, LogId::MAX, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, v)| String::from_utf8(v).unwrap())
        .collect()
}

async fn log_appends_in_order_and_reads_from_a_cursor(store: Arc<dyn Store>) {
    assert_eq!(store.log_len("audit").await.unwrap(), 0);
    assert!(
        store
            .log_read("audit", LogId::MIN, LogId::MAX, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let none = LogRetention::default();
    let ids = store
        .log_append(
            "audit",
            &[entry(1000, "a"), entry(1000, "b"), entry(2000, "c")],
            none,
        )
        .await
        .unwrap();
    assert_eq!(
        ids,
        [
            LogId { ms: 1000, seq: 0 },
            LogId { ms: 1000, seq: 1 },
            LogId { ms: 2000, seq: 0 }
        ]
    );
    assert_eq!(ids[1].to_string(), "1000-1");
    assert_eq!("1000-1".parse::<LogId>(), Ok(ids[1]));
    store
        .log_append("audit", &[entry(3000, "d")], none)
        .await
        .unwrap();
    assert_eq!(store.log_len("audit").await.unwrap(), 4);
    // pages of two from a cursor, the cursor itself excluded
    let page = store
        .log_read("audit", LogId::MIN, LogId::MAX, 2)
        .await
        .unwrap();
    assert_eq!(page.len(), 2);
    assert_eq!(page[1].0, ids[1]);
    let rest = store
        .log_read("audit", page[1].0, LogId::MAX, 2)
        .await
        .unwrap();
    let rest: Vec<_> = rest.iter().map(|(_, v)| v.as_slice()).collect();
    assert_eq!(rest, [b"c".as_slice(), b"d".as_slice()]);
    // an upper bound is inclusive
    let until = store
        .log_read("audit", LogId::MIN, ids[2], 10)
        .await
        .unwrap();
    assert_eq!(until.len(), 3);
    assert_eq!(until[2].0, ids[2]);
    // binary payloads round-trip
    let bin = vec![0u8, 255, 10, 13, 0];
    let id = store
        .log_append(
            "audit",
            &[LogAppend {
                at_ms: 4000,
                value: bin.clone(),
            }],
            none,
        )
        .await
        .unwrap();
    let got = store
        .log_read("audit", ids[2], LogId::MAX, 10)
        .await
        .unwrap();
    assert_eq!(got.last().unwrap(), &(id[0], bin));
}

async fn log_ids_only_grow_even_when_time_steps_back(store: Arc<dyn Store>) {
    let none = LogRetention::default();
    let first = store
        .log_append("audit", &[entry(5000, "late")], none)
        .await
        .unwrap();
    let second = store
        .log_append("audit", &[entry(4000, "early"), entry(4500, "x")], none)
        .await
        .unwrap();
    assert!(first[0] < second[0] && second[0] < second[1], "{second:?}");
    assert_eq!(second[0].ms, 5000);
    // even once every entry is trimmed away
    let all = LogRetention {
        max_entries: None,
        min_ms: Some(10_000),
    };
    store.log_append("audit", &[], all).await.unwrap();
    assert_eq!(store.log_len("audit").await.unwrap(), 0);
    let third = store
        .log_append("audit", &[entry(1, "after trim")], none)
        .await
        .unwrap();
    assert!(third[0] > second[1], "{third:?}");
    assert_eq!(log_values(&store, "audit").await, ["after trim"]);
}

async fn log_trims_by_count_and_by_age(store: Arc<dyn Store>) {
    let keep3 = LogRetention {
        max_entries: Some(3),
        min_ms: None,
    };
    let batch: Vec<_> = (1..=5).map(|i| entry(i * 1000, &format!("e{i}"))).collect();
    store.log_append("audit", &batch, keep3).await.unwrap();
    assert_eq!(log_values(&store, "audit").await, ["e3", "e4", "e5"]);
    assert_eq!(store.log_len("audit").await.unwrap(), 3);
    // by age: nothing older than 4500 ms, applied even by an empty batch
    let young = LogRetention {
        max_entries: Some(3),
        min_ms: Some(4500),
    };
    store.log_append("audit", &[], young).await.unwrap();
    assert_eq!(log_values(&store, "audit").await, ["e5"]);
    store
        .log_append("audit", &[entry(6000, "e6")], young)
        .await
        .unwrap();
    assert_eq!(log_values(&store, "audit").await, ["e5", "e6"]);
    assert_eq!(store.log_len("audit").await.unwrap(), 2);
}

async fn logs_are_independent(store: Arc<dyn Store>) {
    let none = LogRetention::default();
    store
        .log_append("audit", &[entry(1, "a")], none)
        .await
        .unwrap();
    store
        .log_append("other", &[entry(1, "o1"), entry(2, "o2")], none)
        .await
        .unwrap();
    let keep1 = LogRetention {
        max_entries: Some(1),
        min_ms: None,
    };
    store.log_append("other", &[], keep1).await.unwrap();
    assert_eq!(log_values(&store, "audit").await, ["a"]);
    assert_eq!(log_values(&store, "other").await, ["o2"]);
}

async fn concurrent_log_appends_lose_nothing(store: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..20)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                let batch: Vec<_> = (0..10).map(|i| entry(7, &format!("{t}-{i}"))).collect();
                store
                    .log_append("audit", &batch, LogRetention::default())
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.extend(t.await.unwrap());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 200);
    let read = store
        .log_read("audit", LogId::MIN, LogId::MAX, 1000)
        .await
        .unwrap();
    let read_ids: Vec<_> = read.iter().map(|(id, _)| *id).collect();
    assert_eq!(read_ids, ids);
}

// ---------------------------------------------------------------- redis TLS

/// `rediss://` on each topology, against servers that speak only TLS with a
/// certificate from a private CA (`store.redis_ca_file`).
mod redis_tls {
    use super::*;
    use support::{Node, TestTls};

    fn tls_addr(port: u16) -> NodeAddr {
        NodeAddr {
            host: "127.0.0.1".into(),
            port,
            tls: true,
        }
    }

    /// A few of the suite's cases, enough to show commands, scripts and
    /// (where set) WAIT all work over TLS; each on a store of its own prefix.
    async fn exercise(mut options: RedisOptions) {
        let mut open = || {
            options.key_prefix = support::unique_prefix(PREFIX);
            let options = options.clone();
            async move { Arc::new(RedisStore::open(&options).await.unwrap()) as Arc<dyn Store> }
        };
        super::ping_answers(open().await).await;
        super::take_returns_the_value_once(open().await).await;
        super::record_versions_count_writes(open().await).await;
        super::concurrent_cas_writers_lose_no_update(open().await).await;
        super::record_delete_honours_expect(open().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn standalone_rediss_trusts_the_configured_ca_and_only_it() {
        let (node, tls, _dir) = tokio::task::spawn_blocking(|| {
            let tls = TestTls::generate();
            let dir = tempfile::tempdir().unwrap();
            (
                Node::standalone(dir.path().join("n"), Some(tls.clone())),
                tls,
                dir,
            )
        })
        .await
        .unwrap();
        let url = format!("rediss://127.0.0.1:{}/", node.port);
        let mut options = RedisOptions::standalone(&url, PREFIX);
        options.connect_timeout = Duration::from_millis(500);
        options.response_timeout = Duration::from_millis(500);
        // The bundled public roots do not know the private CA: refused.
        let err = RedisStore::open(&options).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        options.ca_pem = Some(tls.ca_pem());
        exercise(options).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sentinel_over_tls() {
        let (group, tls) = tokio::task::spawn_blocking(|| {
            let tls = TestTls::generate();
            (RedisSentinelGroup::start_with(1, Some(tls.clone())), tls)
        })
        .await
        .unwrap();
        let mut options = RedisOptions::new(
            RedisTopology::Sentinel {
                sentinels: group.sentinels.iter().map(|s| tls_addr(s.port)).collect(),
                master_name: MASTER_NAME.into(),
                db: 0,
            },
            PREFIX,
        );
        options.ca_pem = Some(tls.ca_pem());
        options.wait_replicas = 1;
        exercise(options).await;
        drop(group);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn cluster_over_tls() {
        let (cluster, tls) = tokio::task::spawn_blocking(|| {
            let tls = TestTls::generate();
            (RedisCluster::start_with(3, 0, Some(tls.clone())), tls)
        })
        .await
        .unwrap();
        let mut options = RedisOptions::new(
            RedisTopology::Cluster {
                nodes: cluster.nodes.iter().map(|n| tls_addr(n.port)).collect(),
            },
            PREFIX,
        );
        options.ca_pem = Some(tls.ca_pem());
        exercise(options).await;
        drop(cluster);
    }
}

// ------------------------------------------------ redis HA, failure modes

mod redis_ha_failures {
    use super::*;

    fn dead_addr() -> NodeAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        loopback(l.local_addr().unwrap().port())
    }

    fn assert_quiet_unavailable(err: StoreError, started: Instant, secret: &str) {
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{:?}",
            started.elapsed()
        );
        let text = err.to_string();
        assert!(
            !text.contains(secret) && !text.contains("127.0.0.1"),
            "{text}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn no_sentinel_or_cluster_node_answering_fails_fast_and_quietly() {
        let mut sentinel = RedisOptions::new(
            RedisTopology::Sentinel {
                sentinels: vec![dead_addr(), dead_addr()],
                master_name: "m".into(),
                db: 0,
            },
            PREFIX,
        );
        sentinel.password = Some("hunter2".to_owned().into());
        let started = Instant::now();
        let err = RedisStore::open(&sentinel).await.unwrap_err();
        assert_quiet_unavailable(err, started, "hunter2");

        let mut cluster = RedisOptions::new(
            RedisTopology::Cluster {
                nodes: vec![dead_addr(), dead_addr()],
            },
            PREFIX,
        );
        cluster.password = Some("hunter2".to_owned().into());
        let started = Instant::now();
        let err = RedisStore::open(&cluster).await.unwrap_err();
        assert_quiet_unavailable(err, started, "hunter2");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sentinels_that_do_not_know_the_master_name_are_refused() {
        let group = tokio::task::spawn_blocking(sentinel_group).await.unwrap();
        let options = RedisOptions::new(
            RedisTopology::Sentinel {
                sentinels: group.sentinels.iter().map(|s| loopback(s.port)).collect(),
                master_name: "no-such-master".into(),
                db: 0,
            },
            PREFIX,
        );
        let err = RedisStore::open(&options).await.unwrap_err();
        assert!(err.to_string().contains("master name not found"), "{err}");
    }

    /// `WAIT` is real: with the only replica gone, durable writes answer
    /// `Unavailable` after the wait timeout (reads and TTL-bound writes go on),
    /// and succeed again once a replica is back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn writes_that_no_replica_acknowledges_are_unavailable() {
        let master = RedisServer::start();
        let port = master.port().to_string();
        let mut replica = RedisServer::start_with_args(&["--replicaof", "127.0.0.1", &port]);
        let replica_linked = |r: &RedisServer| {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut r.client().get_connection().unwrap())
                .unwrap();
            info.contains("master_link_status:up")
        };
        support::wait_until("the replica to link", Duration::from_secs(10), || {
            replica_linked(&replica)
        });
        let mut options = RedisOptions::standalone(&master.url(), PREFIX);
        options.wait_replicas = 1;
        options.wait_timeout = Duration::from_millis(300);
        let store = RedisStore::open(&options).await.unwrap();
        let c = coll("g");
        assert_eq!(
            store
                .record_put(&c, "a", b"v1", Expect::Absent)
                .await
                .unwrap(),
            1
        );

        replica.kill();
        let started = Instant::now();
        let err = store
            .record_put(&c, "a", b"v2", Expect::Version(1))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("write reached 0 of 1 replica(s)"),
            "{err}"
        );
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(matches!(
            store.record_delete(&c, "a", Expect::Any).await,
            Err(StoreError::Unavailable(_))
        ));
        // Ephemeral writes do not wait; reads go on.
        store.put(&key("s"), b"x", TTL).await.unwrap();
        assert!(store.record_get(&c, "a").await.unwrap().is_none());

        replica.restart();
        support::wait_until("the replica to link again", Duration::from_secs(10), || {
            replica_linked(&replica)
        });
        assert_eq!(
            store
                .record_put(&c, "a", b"v3", Expect::Absent)
                .await
                .unwrap(),
            1
        );
    }
}

// ----------------------------------------------------- redis pub/sub

/// What a subscriber on [`RedisStore::pubsub_client`] hears of
/// [`RedisStore::publish`], on each topology.
mod redis_pubsub {
    use super::*;

    /// Subscribes (on a blocking thread) to `<prefix>:signal:*` through the
    /// store's pub/sub client, publishes `n` messages on distinct channels
    /// through the store, and returns the channels the subscriber heard.
    async fn heard(store: RedisStore, prefix: &str, n: usize) -> Vec<String> {
        let client = store.pubsub_client().await.unwrap();
        let pattern = format!("{prefix}:signal:*");
        let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
        let listener = tokio::task::spawn_blocking(move || {
            let mut conn = client.get_connection().unwrap();
            let mut pubsub = conn.as_pubsub();
            pubsub.psubscribe(&pattern).unwrap();
            pubsub
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            subscribed_tx.send(()).unwrap();
            let mut got = Vec::new();
            while got.len() < n {
                match pubsub.get_message() {
                    Ok(msg) => got.push(msg.get_channel_name().to_owned()),
                    Err(_) => break,
                }
            }
            got
        });
        subscribed_rx.await.unwrap();
        for i in 0..n {
            store
                .publish(&format!("{prefix}:signal:ch-{i}"), b"1")
                .await
                .unwrap();
        }
        let mut got = listener.await.unwrap();
        got.sort();
        got
    }

    fn expected(prefix: &str, n: usize) -> Vec<String> {
        let mut v: Vec<String> = (0..n).map(|i| format!("{prefix}:signal:ch-{i}")).collect();
        v.sort();
        v
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn on_standalone() {
        let server = RedisServer::start();
        let store = RedisStore::connect(&server.url(), PREFIX).await.unwrap();
        assert_eq!(heard(store, PREFIX, 5).await, expected(PREFIX, 5));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn on_sentinel() {
        let group = tokio::task::spawn_blocking(sentinel_group).await.unwrap();
        let prefix = support::unique_prefix(PREFIX);
        let options = RedisOptions::new(
            RedisTopology::Sentinel {
                sentinels: group.sentinels.iter().map(|s| loopback(s.port)).collect(),
                master_name: MASTER_NAME.into(),
                db: 0,
            },
            &prefix,
        );
        let store = RedisStore::open(&options).await.unwrap();
        assert_eq!(heard(store, &prefix, 5).await, expected(&prefix, 5));
    }

    /// Publishes go to any node; the subscriber, on one node, hears them all
    /// over the cluster bus.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn on_cluster() {
        let cluster = tokio::task::spawn_blocking(cluster).await.unwrap();
        let prefix = support::unique_prefix(PREFIX);
        let options = RedisOptions::new(
            RedisTopology::Cluster {
                nodes: cluster.nodes.iter().map(|n| loopback(n.port)).collect(),
            },
            &prefix,
        );
        let store = RedisStore::open(&options).await.unwrap();
        assert_eq!(heard(store, &prefix, 20).await, expected(&prefix, 20));
    }
}
