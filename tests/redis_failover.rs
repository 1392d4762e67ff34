//! Redis failures under load, through the real broker over HTTP: the master
//! of a real Sentinel group is killed, and the master of a real Redis
//! Cluster's busiest slot is killed and later restarted. While readers fetch
//! tokens over the runtime API and writers store new ones, requests fail
//! only with 503 and only during the failover, recover without restarting
//! the broker, and every token whose write was acknowledged is served
//! afterwards. Each test prints its figures (run with `--nocapture`).
#![allow(
    clippy::disallowed_methods,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code
)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::*;
use tokio::sync::mpsc;

const READERS: usize = 6;
const WRITERS: usize = 2;
const SEEDED: usize = 20;
/// Successful reads in a row that count as "recovered".
const RECOVERED_AFTER: usize = 100;

#[derive(Debug)]
enum Event {
    Read {
        at: Instant,
        status: u16,
        latency: Duration,
    },
    Write {
        at: Instant,
        user: String,
        token: String,
        ok: bool,
    },
}

/// The load: readers GET seeded users' tokens over HTTP, writers store
/// tokens for new users through the broker's lifecycle (as the OAuth
/// callback does); every outcome is sent to the test.
struct Load {
    stop: Arc<AtomicBool>,
    events: mpsc::UnboundedReceiver<Event>,
    tasks: tokio::task::JoinSet<()>,
}

impl Load {
    fn start(h: &Harness, seeded: &[(String, String)]) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, events) = mpsc::unbounded_channel();
        let mut tasks = tokio::task::JoinSet::new();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap();
        for r in 0..READERS {
            let (stop, tx, http) = (stop.clone(), tx.clone(), http.clone());
            let users: Vec<String> = seeded.iter().map(|(u, _)| u.clone()).collect();
            let url = h.url.clone();
            tasks.spawn(async move {
                let mut i = r;
                while !stop.load(Ordering::Relaxed) {
                    let user = &users[i % users.len()];
                    i += 1;
                    let started = Instant::now();
                    let status = http
                        .get(format!(
                            "{url}/api/v1/runtimes/acme-prod/users/{user}/token"
                        ))
                        .bearer_auth(credential("acme-prod"))
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0);
                    let _ = tx.send(Event::Read {
                        at: Instant::now(),
                        status,
                        latency: started.elapsed(),
                    });
                }
            });
        }
        for w in 0..WRITERS {
            let (stop, tx, state) = (stop.clone(), tx.clone(), h.state.clone());
            tasks.spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let user = format!("writer-{w}-{n:05}");
                    let token = format!("gho_failover_{w}_{n:05}");
                    n += 1;
                    let ok = try_assign(&state, &user, &token).await;
                    let _ = tx.send(Event::Write {
                        at: Instant::now(),
                        user,
                        token,
                        ok,
                    });
                }
            });
        }
        Load {
            stop,
            events,
            tasks,
        }
    }

    async fn next(&mut self) -> Event {
        tokio::time::timeout(Duration::from_secs(30), self.events.recv())
            .await
            .expect("the load made no progress for 30 s")
            .expect("load tasks ended")
    }

    async fn stop(mut self) -> Vec<Event> {
        self.stop.store(true, Ordering::Relaxed);
        tokio::time::timeout(Duration::from_secs(30), async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await
        .expect("load tasks did not stop within 30 s");
        let mut rest = Vec::new();
        while let Ok(e) = self.events.try_recv() {
            rest.push(e);
        }
        rest
    }
}

/// Stores an OAuth token for `user` on acme-prod as the callback would;
/// `false` when the broker refused (the store was unavailable).
async fn try_assign(state: &gitbroker::AppState, user: &str, token: &str) -> bool {
    let Ok(Some(app)) = state.registry.app("github-app").await else {
        return false;
    };
    let Ok(Some(rt)) = state.registry.runtime("acme-prod").await else {
        return false;
    };
    state
        .lifecycle
        .assign_oauth(
            &Harness::acme_user(user),
            "acme-prod",
            &rt.incarnation,
            &app,
            gitbroker::tokens::OAuthTokens {
                issued: gitbroker::providers::token_endpoint::IssuedTokens {
                    access_token: secrecy::SecretString::from(token.to_owned()),
                    refresh_token: None,
                    scopes: None,
                    expires_at: None,
                },
                scopes: vec!["repo".into()],
                login: user.to_owned(),
            },
        )
        .await
        .is_ok()
}

/// What happened around the fault.
#[derive(Default, Debug)]
struct Tally {
    reads_ok: usize,
    reads_failed: usize,
    /// Failed reads by status (0 = no HTTP answer).
    failed_statuses: BTreeMap<u16, usize>,
    writes_ok: usize,
    writes_failed: usize,
    first_failure: Option<Instant>,
    last_failure: Option<Instant>,
    max_latency: Duration,
    /// Successful reads since the last failure.
    ok_streak: usize,
    acked: Vec<(String, String)>,
    unacked: Vec<(String, String)>,
}

impl Tally {
    fn add(&mut self, e: Event) {
        match e {
            Event::Read {
                at,
                status,
                latency,
            } => {
                self.max_latency = self.max_latency.max(latency);
                if status == 200 {
                    self.reads_ok += 1;
                    self.ok_streak += 1;
                } else {
                    self.reads_failed += 1;
                    *self.failed_statuses.entry(status).or_default() += 1;
                    self.failed(at);
                }
            }
            Event::Write {
                at,
                user,
                token,
                ok,
            } => {
                if ok {
                    self.writes_ok += 1;
                    self.acked.push((user, token));
                } else {
                    self.writes_failed += 1;
                    self.unacked.push((user, token));
                    self.failed(at);
                }
            }
        }
    }

    fn failed(&mut self, at: Instant) {
        self.ok_streak = 0;
        self.first_failure.get_or_insert(at);
        self.last_failure = Some(at);
    }

    fn failures(&self) -> usize {
        self.reads_failed + self.writes_failed
    }

    /// From the first to the last failed request.
    fn outage(&self) -> Duration {
        match (self.first_failure, self.last_failure) {
            (Some(a), Some(b)) => b - a,
            _ => Duration::ZERO,
        }
    }
}

async fn seed(h: &Harness) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for i in 0..SEEDED {
        let user = format!("seeded-{i:03}");
        let token = format!("gho_seeded_{i:03}");
        assign_oauth_with(&h.state, &user, "acme-prod", &token).await;
        out.push((user, token));
    }
    out
}

/// Runs the load until `n` requests succeeded, failing on any failure.
async fn steady(load: &mut Load, n: usize, phase: &str) -> Tally {
    let mut t = Tally::default();
    while t.reads_ok < n {
        t.add(load.next().await);
    }
    assert_eq!(t.failures(), 0, "{phase}: requests failed: {t:?}");
    t
}

async fn get_token(h: &Harness, user: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!(
            "{}/api/v1/runtimes/acme-prod/users/{user}/token",
            h.url
        ))
        .bearer_auth(credential("acme-prod"))
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .unwrap()
}

/// Every acknowledged token is served as stored; an unacknowledged write is
/// either absent or complete, never anything else.
async fn check_no_token_lost(
    h: &Harness,
    acked: &[(String, String)],
    unacked: &[(String, String)],
) {
    for (user, token) in acked {
        let r = get_token(h, user).await;
        assert_eq!(r.status(), 200, "acknowledged token of {user} is gone");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["token"], token.as_str(), "token of {user}");
    }
    for (user, token) in unacked {
        let r = get_token(h, user).await;
        match r.status().as_u16() {
            404 => {}
            200 => {
                let body: serde_json::Value = r.json().await.unwrap();
                assert_eq!(body["token"], token.as_str(), "token of {user}");
            }
            other => panic!("unacknowledged write of {user}: {other}"),
        }
    }
}

/// Feeds events into `t` until `done` (checked on a blocking thread every
/// 100 events or 50 ms) holds and the last `RECOVERED_AFTER` reads
/// succeeded.
async fn until_recovered<F>(load: &mut Load, t: &mut Tally, done: F)
where
    F: Fn() -> bool + Send + Sync + 'static,
{
    let done = Arc::new(done);
    let mut settled = false;
    let mut last_check = Instant::now();
    loop {
        t.add(load.next().await);
        if !settled && last_check.elapsed() > Duration::from_millis(50) {
            let d = done.clone();
            settled = tokio::task::spawn_blocking(move || d()).await.unwrap();
            last_check = Instant::now();
        }
        if settled && t.ok_streak >= RECOVERED_AFTER {
            return;
        }
    }
}

fn report(what: &str, during: &Tally, acked_total: usize) {
    eprintln!(
        "FIGURES {what}: outage {:.2} s (first to last failed request), {} failed requests \
         ({} reads {:?}, {} writes) of {} during the fault, max read latency {:.2} s, \
         {acked_total} acknowledged tokens all served afterwards",
        during.outage().as_secs_f64(),
        during.failures(),
        during.reads_failed,
        during.failed_statuses,
        during.writes_failed,
        during.reads_ok + during.reads_failed + during.writes_ok + during.writes_failed,
        during.max_latency.as_secs_f64(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sentinel_master_killed_under_load() {
    // Two replicas: with one gone, each write still reaches one (WAIT 1).
    let group = tokio::task::spawn_blocking(|| RedisSentinelGroup::start(2))
        .await
        .unwrap();
    let h = Harness::start_with(
        Backend::Redis,
        Options {
            store_toml: Some(format!(
                "backend = \"redis\"\nredis_mode = \"sentinel\"\nredis_sentinels = {}\n\
                 redis_master_name = \"{MASTER_NAME}\"\nredis_wait_replicas = 1\n",
                group.sentinels_toml()
            )),
            ..Options::default()
        },
    )
    .await;
    let seeded = seed(&h).await;
    let mut load = Load::start(&h, &seeded);
    let before = steady(&mut load, 300, "before the kill").await;

    let group = Arc::new(std::sync::Mutex::new(group));
    eprintln!("phase: steady before the kill: {before:?}");
    let old_master = group.lock().unwrap().master().unwrap();
    let killed_at = Instant::now();
    group.lock().unwrap().data[old_master].kill();

    let mut during = Tally::default();
    let g = group.clone();
    until_recovered(&mut load, &mut during, move || {
        g.lock().unwrap().master().is_some_and(|m| m != old_master)
    })
    .await;
    let failover_seen = killed_at.elapsed();
    eprintln!("phase: recovered after {failover_seen:?}");
    let mut after = steady(&mut load, 300, "after the failover").await;
    eprintln!("phase: steady after");
    for e in load.stop().await {
        after.add(e);
    }
    assert_eq!(after.failures(), 0, "after the failover: {after:?}");
    assert!(during.failures() > 0, "killing the master went unnoticed");
    assert_eq!(
        during.failed_statuses.keys().copied().collect::<Vec<_>>(),
        if during.reads_failed > 0 {
            vec![503]
        } else {
            vec![]
        },
        "reads failed otherwise than with 503: {during:?}"
    );
    assert!(
        during.outage() < Duration::from_secs(15),
        "outage {:?}",
        during.outage()
    );
    let mut acked = seeded.clone();
    for t in [&before, &during, &after] {
        acked.extend(t.acked.iter().cloned());
    }
    let unacked: Vec<_> = [&before, &during, &after]
        .iter()
        .flat_map(|t| t.unacked.iter().cloned())
        .collect();
    check_no_token_lost(&h, &acked, &unacked).await;
    // The broker (not restarted) now writes to the promoted replica.
    let new_master = group.lock().unwrap().master().unwrap();
    assert_ne!(new_master, old_master);
    report("sentinel master killed", &during, acked.len());
    eprintln!(
        "FIGURES sentinel: new master named by the sentinels and {RECOVERED_AFTER} reads in a row served {:.2} s after the kill",
        failover_seen.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_master_killed_and_restarted_under_load() {
    // Two replicas per master: after a failover, each write still reaches one (WAIT 1).
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3, 2))
        .await
        .unwrap();
    let h = Harness::start_with(
        Backend::Redis,
        Options {
            store_toml: Some(format!(
                "backend = \"redis\"\nredis_mode = \"cluster\"\nredis_nodes = {}\n\
                 redis_wait_replicas = 1\n",
                cluster.nodes_toml()
            )),
            ..Options::default()
        },
    )
    .await;
    let seeded = seed(&h).await;
    // Every read needs acme-prod's assignments: kill the master of that hash.
    let keys = cluster.keys_matching("gitbroker:r:{assignment:acme-prod#*");
    assert_eq!(keys.len(), 1, "{keys:?}");
    let victim = cluster.master_of(&keys[0]);

    let mut load = Load::start(&h, &seeded);
    let before = steady(&mut load, 300, "before the kill").await;
    eprintln!("phase: steady before the kill: {} ok", before.reads_ok);
    let mut cluster = cluster;
    let killed_at = Instant::now();
    cluster.nodes[victim].kill();
    let cluster = Arc::new(std::sync::Mutex::new(cluster));

    // 1. The replica takes over.
    let mut during = Tally::default();
    let c = cluster.clone();
    let key = keys[0].clone();
    until_recovered(&mut load, &mut during, move || {
        let c = c.lock().unwrap();
        c.converged() && c.master_of(&key) != victim
    })
    .await;
    let failover_seen = killed_at.elapsed();
    eprintln!("phase: failed over after {failover_seen:?}");

    // 2. The killed node comes back and rejoins as a replica.
    let restarted_at = Instant::now();
    cluster.lock().unwrap().nodes[victim].restart();
    let mut rejoin = Tally::default();
    let c = cluster.clone();
    until_recovered(&mut load, &mut rejoin, move || {
        let c = c.lock().unwrap();
        c.converged() && !c.is_master(victim)
    })
    .await;
    let rejoined = restarted_at.elapsed();
    eprintln!("phase: rejoined after {rejoined:?}");
    let mut after = steady(&mut load, 300, "after the rejoin").await;
    for e in load.stop().await {
        after.add(e);
    }
    assert_eq!(after.failures(), 0, "after the rejoin: {after:?}");

    assert!(during.failures() > 0, "killing the master went unnoticed");
    assert_eq!(
        during.failed_statuses.keys().copied().collect::<Vec<_>>(),
        if during.reads_failed > 0 {
            vec![503]
        } else {
            vec![]
        },
        "reads failed otherwise than with 503: {during:?}"
    );
    assert!(
        during.outage() < Duration::from_secs(15),
        "outage {:?}",
        during.outage()
    );
    assert_eq!(
        rejoin.failures(),
        0,
        "the restarted node's return made requests fail: {rejoin:?}"
    );
    let all = [&before, &during, &rejoin, &after];
    let mut acked = seeded.clone();
    acked.extend(all.iter().flat_map(|t| t.acked.iter().cloned()));
    let unacked: Vec<_> = all.iter().flat_map(|t| t.unacked.iter().cloned()).collect();
    check_no_token_lost(&h, &acked, &unacked).await;
    report("cluster master killed", &during, acked.len());
    eprintln!(
        "FIGURES cluster: replica promoted and {RECOVERED_AFTER} reads in a row served {:.2} s after the kill; \
         the restarted node rejoined as a replica {:.2} s after its restart with {} failed requests",
        failover_seen.as_secs_f64(),
        rejoined.as_secs_f64(),
        rejoin.failures()
    );
}
