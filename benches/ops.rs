//! Operator commands at scale: BENCH_TOKENS (default 20,000) Git user
//! tokens stored through the lifecycle, then
//! - key rotation (`rotate::rotate`, what `gitbroker rotate-keys` runs) on
//!   Redis and on the embedded store: the first run re-seals everything, the
//!   second finds nothing to do;
//! - a backup of the embedded store while it serves (time, size);
//! - `migrate --to redis` of that backup: dump, pipelined import, read-back.
//!
//! `cargo bench --bench ops` (release); `cargo test --bench ops` runs the
//! same in a debug build.
#![allow(
    clippy::disallowed_methods,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code
)]

#[path = "../tests/support/mod.rs"]
mod support;

use base64::Engine;
use gitbroker::crypto::Keyring;
use gitbroker::store::embedded::EmbeddedStore;
use gitbroker::store::redis::RedisStore;
use std::sync::Arc;
use std::time::Instant;
use support::*;
use tokio::task::JoinSet;

const KEY2: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";

fn keyring() -> Keyring {
    let keys: Vec<gitbroker::config::KeySettings> = [("k1", KEY), ("k2", KEY2)]
        .iter()
        .map(|(id, key)| gitbroker::config::KeySettings {
            id: (*id).to_owned(),
            key: secrecy::SecretBox::new(Box::new(
                base64::engine::general_purpose::STANDARD
                    .decode(key)
                    .unwrap()
                    .try_into()
                    .unwrap(),
            )),
        })
        .collect();
    Keyring::new("k2", &keys).unwrap()
}

async fn seed(h: &Harness, tokens: usize) {
    let started = Instant::now();
    let mut set = JoinSet::new();
    for i in 0..tokens {
        let state = h.state.clone();
        set.spawn(async move {
            assign_oauth_with(
                &state,
                &format!("u-{i:06}"),
                "acme-prod",
                &format!("gho_{i}"),
            )
            .await;
        });
        while set.len() >= 32 {
            set.join_next().await.unwrap().unwrap();
        }
    }
    while set.join_next().await.is_some() {}
    println!(
        "  seeded {tokens} tokens in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

async fn rotate_twice(h: &Harness, tokens: usize) {
    let ring = keyring();
    for run in ["first run", "second run"] {
        let started = Instant::now();
        let report =
            gitbroker::rotate::rotate(h.store.as_ref(), &ring, &h.state.registry, &mut |_, _| {})
                .await
                .unwrap();
        let secs = started.elapsed().as_secs_f64();
        let grants = &report.kinds[0].1;
        assert_eq!(grants.records as usize, tokens);
        assert_eq!(report.left(), 0);
        println!(
            "  rotate-keys, {run}: {} records, {} re-sealed in {secs:.2} s ({:.0} records/s)",
            report.kinds.iter().map(|(_, k)| k.records).sum::<u64>(),
            report.resealed(),
            grants.records as f64 / secs
        );
    }
}

async fn embedded(tokens: usize) {
    println!("embedded store (redb):");
    let h = Harness::start(Backend::Embedded).await;
    seed(&h, tokens).await;

    let started = Instant::now();
    let file = h.store.backup().await.unwrap().unwrap();
    let secs = started.elapsed().as_secs_f64();
    let bytes = file.metadata().unwrap().len();
    println!(
        "  backup while serving: {:.1} MiB in {secs:.2} s",
        bytes as f64 / 1048576.0
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("backup.redb");
    std::io::copy(
        &mut std::io::BufReader::new(file),
        &mut std::fs::File::create(&path).unwrap(),
    )
    .unwrap();

    let started = Instant::now();
    let copy = EmbeddedStore::open(&path, Arc::new(gitbroker::clock::SystemClock)).unwrap();
    let entries = copy.dump().await.unwrap();
    let dumped = started.elapsed().as_secs_f64();
    let redis = RedisServer::start();
    let target = RedisStore::connect(&redis.url(), "gitbroker")
        .await
        .unwrap();
    let started = Instant::now();
    let (records, _) = target
        .import(&entries, copy.now_ms(), |_| {})
        .await
        .unwrap();
    let imported = started.elapsed().as_secs_f64();
    let started = Instant::now();
    assert_eq!(target.differing_records(&entries).await.unwrap(), 0);
    let checked = started.elapsed().as_secs_f64();
    println!(
        "  migrate --to redis: {records} records; dump {dumped:.2} s, import {imported:.2} s ({:.0} records/s), read-back {checked:.2} s",
        records as f64 / imported
    );

    rotate_twice(&h, tokens).await;
}

async fn on_redis(tokens: usize) {
    println!("Redis:");
    let h = Harness::start(Backend::Redis).await;
    seed(&h, tokens).await;
    rotate_twice(&h, tokens).await;
}

fn main() {
    let tokens = std::env::var("BENCH_TOKENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        on_redis(tokens).await;
        embedded(tokens).await;
    });
}
