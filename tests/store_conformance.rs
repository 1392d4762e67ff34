//! One behavioural suite for every `Store` backend: each case is written once
//! against `Arc<dyn Store>` and run on Redis (a fresh redis-server per test) and
//! on the embedded redb store (a fresh file per test), plus backend-only extras.
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
use gitbroker::store::{Collection, EphemeralKey, Expect, Store, StoreError, Versioned};
use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::RedisServer;

const PREFIX: &str = "gbtest";

/// Keeps a backend's resources (server, directory) alive for one test.
type Guard = Box<dyn Any + Send>;

async fn redis_factory() -> (Arc<dyn Store>, Guard) {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url(), PREFIX).await.unwrap();
    (Arc::new(store), Box::new(server))
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
    record_put_absent_twice_conflicts,
    record_put_with_wrong_version_conflicts_and_keeps_the_value,
    concurrent_cas_writers_lose_no_update,
    record_delete_honours_expect,
    record_list_is_ordered_and_isolated,
    collection_delete_removes_only_that_collection,
    missing_records_read_as_absent,
    arbitrary_ids_round_trip,
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
