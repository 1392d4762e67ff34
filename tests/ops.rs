//! Operator commands, with the real binary against real brokers on loopback
//! ports, a real redis-server and real redb files: `healthcheck` (ready, not
//! ready, unreachable), `backup` while serving and `restore`, `migrate --to
//! redis`, and `rotate-keys` while a replica serves and writes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

mod support;

use gitbroker::crypto::{Keyring, envelope_key_id};
use gitbroker::store::{Collection, Expect, Store};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use support::*;

/// Users whose tokens the rotation re-seals, and those a replica keeps
/// refreshing meanwhile (listed last, so they change after being listed).
const BULK: usize = 300;
const HOT: usize = 4;

const KEY2: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";

#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs the binary with a clean environment plus `envs`.
async fn run(args: &[&str], envs: &[(&str, &str)]) -> Out {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_gitbroker"));
    for (k, _) in std::env::vars() {
        if k.starts_with("GITBROKER_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.args(args).envs(envs.iter().copied());
    cmd.stdin(std::process::Stdio::null());
    let out = cmd.output().await.unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn write(path: &Path, text: &str) -> PathBuf {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, text).unwrap();
    path.to_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The harness configuration with another `[store]` table body.
fn with_store(toml: &str, store: &str) -> String {
    let start = toml.find("[store]\n").unwrap() + "[store]\n".len();
    let end = start + toml[start..].find("\n[lifecycle]").unwrap();
    format!("{}{store}{}", &toml[..start], &toml[end..])
}

/// A broker on `toml`, served on a loopback port.
async fn serve_toml(toml: &str) -> (gitbroker::AppState, String) {
    let settings = gitbroker::config::Settings::from_toml_str(toml).unwrap();
    let server = settings.server.clone();
    let clock: Arc<dyn gitbroker::clock::Clock> = Arc::new(gitbroker::clock::SystemClock);
    let store = gitbroker::app::open_store(&settings, clock.clone())
        .await
        .unwrap();
    let state = gitbroker::app::build(settings, store, clock).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    drop(serve_in_background(
        listener,
        gitbroker::router(state.clone()),
        &server,
    ));
    (state, url)
}

/// The user token a runtime API at `url` serves, or its status.
async fn token_at(url: &str, runtime: &str, user: &str) -> Result<String, u16> {
    let r = reqwest::Client::new()
        .get(format!(
            "{url}/api/v1/runtimes/{runtime}/users/{user}/token"
        ))
        .bearer_auth(credential(runtime))
        .send()
        .await
        .unwrap();
    match r.status().as_u16() {
        200 => Ok(r.json::<serde_json::Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned()),
        status => Err(status),
    }
}

async fn pasted_tokens(h: &Harness, n: usize, runtime: &str) -> Vec<(String, String)> {
    let mut saved = Vec::new();
    for i in 0..n {
        let sub = format!("u-{i}");
        let pat = h.github_pat("alice", &["repo"]);
        h.assign_pat_as(&sub, runtime, &pat).await;
        saved.push((sub, pat));
    }
    saved
}

// ------------------------------------------------------------- healthcheck

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn healthcheck_answers_for_ready_not_ready_and_absent_brokers() {
    let mut h = Harness::start(Backend::Redis).await;
    let dir = tempfile::tempdir().unwrap();

    let out = run(&["healthcheck", "--url", &h.url], &[]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout.trim(),
        format!("ready: {}/readyz answered 200", h.url)
    );

    // the image's way: the `listen` of $GITBROKER_CONFIG, a wildcard probed on loopback
    let port = h.url.rsplit(':').next().unwrap().to_owned();
    let cfg = write(
        &dir.path().join("a.toml"),
        &format!("listen = \"0.0.0.0:{port}\"\n"),
    );
    let out = run(&["healthcheck"], &[("GITBROKER_CONFIG", s(&cfg))]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains(&format!("http://127.0.0.1:{port}/readyz"))
    );
    // GITBROKER_LISTEN overrides the file, as for `serve`
    let other = write(&dir.path().join("b.toml"), "listen = \"127.0.0.1:1\"\n");
    let listen = format!("0.0.0.0:{port}");
    let out = run(
        &["healthcheck", "--config", s(&other)],
        &[("GITBROKER_LISTEN", &listen)],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    let bad = write(&dir.path().join("c.toml"), "listen = \"nowhere\"\n");
    let out = run(&["healthcheck", "--config", s(&bad)], &[]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("listen: `nowhere`"), "{out:?}");

    // backups are for the embedded store
    let out = run(
        &[
            "backup",
            "--url",
            &h.url,
            "--out",
            s(&dir.path().join("x.redb")),
        ],
        &[("GITBROKER_ADMIN_TOKEN", ADMIN_TOKEN)],
    )
    .await;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("409") && out.stderr.contains("Redis's own persistence"),
        "{out:?}"
    );
    assert!(!dir.path().join("x.redb").exists());

    // Redis gone: not ready (503), still alive
    h.redis.as_mut().unwrap().kill();
    let out = run(
        &["healthcheck", "--url", &h.url, "--timeout-secs", "20"],
        &[],
    )
    .await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("not ready: {}/readyz answered 503", h.url)),
        "{out:?}"
    );
    let out = run(&["healthcheck", "--url", &h.url, "--live"], &[]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.starts_with("alive: "), "{out:?}");

    // nothing listening
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = run(
        &["healthcheck", "--url", &format!("http://127.0.0.1:{free}")],
        &[],
    )
    .await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("cannot connect"), "{out:?}");
}

// ------------------------------------------------------- backup and restore

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_while_serving_and_writing_then_restore_for_a_new_broker() {
    let h = Harness::start(Backend::Embedded).await;
    let dir = tempfile::tempdir().unwrap();
    let saved = pasted_tokens(&h, 4, "acme-prod").await;

    // a writer stores one token after another while the backup is taken
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (state, stop) = (h.state.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) || n < 20 {
                let token = format!("gho_writer_{n}");
                assign_oauth_with(&state, &format!("w-{n}"), "acme-staging", &token).await;
                n += 1;
            }
            n
        })
    };
    let backup = dir.path().join("backup.redb");
    let admin = [("GITBROKER_ADMIN_TOKEN", ADMIN_TOKEN)];
    let out = run(&["backup", "--url", &h.url, "--out", s(&backup)], &admin).await;
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.unwrap();
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.starts_with("backup written to"), "{out:?}");
    let bytes = std::fs::read(&backup).unwrap();
    for (_, pat) in &saved {
        assert!(
            !bytes.windows(pat.len()).any(|w| w == pat.as_bytes()),
            "tokens stay sealed in a backup"
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&backup).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let out = run(&["backup", "--url", &h.url, "--out", s(&backup)], &admin).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("already exists"), "{out:?}");
    let other = dir.path().join("other.redb");
    let out = run(
        &["backup", "--url", &h.url, "--out", s(&other)],
        &[(
            "GITBROKER_ADMIN_TOKEN",
            "not-the-admin-token-0123456789abcdef",
        )],
    )
    .await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("401"), "{out:?}");
    assert!(!other.exists() && !dir.path().join("other.redb.partial").exists());

    // the live store cannot be restored over, nor read directly, while served
    let live = write(&dir.path().join("live.toml"), h.config_toml());
    let out = run(
        &[
            "restore",
            "--config",
            s(&live),
            "--from",
            s(&backup),
            "--replace",
        ],
        &[],
    )
    .await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("stop the broker"), "{out:?}");
    let out = run(&["backup", "--config", s(&live), "--out", s(&other)], &[]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("back up through it"), "{out:?}");

    // restore for a new broker
    let restored = dir.path().join("restored").join("store.redb");
    let toml = with_store(
        h.config_toml(),
        &format!("backend = \"embedded\"\npath = \"{}\"", restored.display()),
    );
    let cfg = write(&dir.path().join("restored.toml"), &toml);
    let out = run(&["restore", "--config", s(&cfg), "--from", s(&backup)], &[]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let out = run(&["restore", "--config", s(&cfg), "--from", s(&backup)], &[]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("--replace"), "{out:?}");
    let out = run(
        &[
            "restore",
            "--config",
            s(&cfg),
            "--from",
            s(&backup),
            "--replace",
        ],
        &[],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("kept as"), "{out:?}");
    assert!(
        dir.path()
            .join("restored")
            .join("store.redb.before-restore")
            .exists()
    );
    // a stopped broker's file can also be backed up directly
    let direct = dir.path().join("direct.redb");
    let out = run(&["backup", "--config", s(&cfg), "--out", s(&direct)], &[]).await;
    assert_eq!(out.code, 0, "{out:?}");

    let (_state, url) = serve_toml(&toml).await;
    for (sub, pat) in &saved {
        assert_eq!(token_at(&url, "acme-prod", sub).await, Ok(pat.clone()));
    }
    // the copy is of one instant: the writer's tokens in it are those
    // written before some point, each whole; none is unreadable
    let mut statuses = Vec::new();
    for n in 0..written {
        statuses.push(
            match token_at(&url, "acme-staging", &format!("w-{n}")).await {
                Ok(token) => {
                    assert_eq!(token, format!("gho_writer_{n}"));
                    200
                }
                Err(status) => status,
            },
        );
    }
    let first_missing = statuses.iter().position(|s| *s != 200).unwrap_or(written);
    assert!(
        statuses[first_missing..].iter().all(|s| *s == 404),
        "{statuses:?}"
    );
    // while this broker holds the restored file, restoring over it is refused
    let out = run(
        &[
            "restore",
            "--config",
            s(&cfg),
            "--from",
            s(&backup),
            "--replace",
        ],
        &[],
    )
    .await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("stop the broker"), "{out:?}");
}

// ---------------------------------------------------------------- migrate

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrate_copies_an_embedded_store_into_redis_with_ttls_and_versions() {
    let h = Harness::start(Backend::Embedded).await;
    let dir = tempfile::tempdir().unwrap();
    let saved = pasted_tokens(&h, 3, "acme-prod").await;
    let alice = h.signed_in("alice").await;
    assert_eq!(alice.get("/tokens").await.status, 200);
    let backup = dir.path().join("backup.redb");
    let out = run(
        &["backup", "--url", &h.url, "--out", s(&backup)],
        &[("GITBROKER_ADMIN_TOKEN", ADMIN_TOKEN)],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");

    let redis = RedisServer::start();
    let url_file = write(&dir.path().join("redis-url"), &format!("{}\n", redis.url()));
    // the serving broker's file is refused
    let live = write(&dir.path().join("live.toml"), h.config_toml());
    let out = run(
        &[
            "migrate",
            "--config",
            s(&live),
            "--to",
            "redis",
            "--redis-url-file",
            s(&url_file),
        ],
        &[],
    )
    .await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("stop the broker first"), "{out:?}");

    // a stopped broker's store (here restored from the backup)
    let stopped = dir.path().join("stopped.redb");
    let toml = with_store(
        h.config_toml(),
        &format!("backend = \"embedded\"\npath = \"{}\"", stopped.display()),
    );
    let cfg = write(&dir.path().join("stopped.toml"), &toml);
    let out = run(&["restore", "--config", s(&cfg), "--from", s(&backup)], &[]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let migrate = |prefix: &'static str| {
        let (cfg, url_file) = (cfg.clone(), url_file.clone());
        async move {
            run(
                &[
                    "migrate",
                    "--config",
                    s(&cfg),
                    "--to",
                    "redis",
                    "--redis-url-file",
                    s(&url_file),
                    "--key-prefix",
                    prefix,
                ],
                &[],
            )
            .await
        }
    };
    let out = migrate("gbm").await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("each read back identical"), "{out:?}");
    let out = migrate("gbm").await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("already holds keys"), "{out:?}");
    let out = run(&["migrate", "--config", s(&cfg), "--to", "redis"], &[]).await;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("GITBROKER_MIGRATE_REDIS_URL"),
        "{out:?}"
    );
    // from a backup file, the URL in the environment
    let out = run(
        &[
            "migrate",
            "--config",
            s(&cfg),
            "--from",
            s(&backup),
            "--to",
            "redis",
            "--key-prefix",
            "gbm2",
        ],
        &[("GITBROKER_MIGRATE_REDIS_URL", &redis.url())],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");

    // sessions keep the time they had left
    let mut conn = redis.client().get_connection().unwrap();
    let sessions: Vec<String> = redis::cmd("KEYS")
        .arg("gbm:e:session:*")
        .query(&mut conn)
        .unwrap();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&sessions[0])
        .query(&mut conn)
        .unwrap();
    assert!(pttl > 0 && pttl <= 24 * 3600 * 1000, "{pttl}");

    // a broker on Redis serves the same tokens, and alice stays signed in
    let redis_toml = with_store(
        h.config_toml(),
        &format!(
            "backend = \"redis\"\nredis_url = \"{}\"\nkey_prefix = \"gbm\"",
            redis.url()
        ),
    );
    let (state, url) = serve_toml(&redis_toml).await;
    for (sub, pat) in &saved {
        assert_eq!(token_at(&url, "acme-prod", sub).await, Ok(pat.clone()));
    }
    let page = alice.get(&format!("{url}/tokens")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("u-1001"), "alice's own page");
    // versions came along: a compare-and-swap on the old version still holds
    let grants = h
        .store
        .record_list(&Collection::new("grant", "u-0"))
        .await
        .unwrap();
    let copied = state
        .store
        .record_list(&Collection::new("grant", "u-0"))
        .await
        .unwrap();
    assert_eq!(grants, copied);
    let (id, rec) = &copied[0];
    state
        .store
        .record_put(
            &Collection::new("grant", "u-0"),
            id,
            &rec.value,
            Expect::Version(rec.version),
        )
        .await
        .unwrap();
}

// ------------------------------------------------------------- rotate-keys

fn ring(ids: &[(&str, &str)], active: &str) -> Keyring {
    use base64::Engine;
    let keys: Vec<gitbroker::config::KeySettings> = ids
        .iter()
        .map(|(id, key)| {
            let bytes: [u8; 32] = base64::engine::general_purpose::STANDARD
                .decode(key)
                .unwrap()
                .try_into()
                .unwrap();
            gitbroker::config::KeySettings {
                id: (*id).to_owned(),
                key: secrecy::SecretBox::new(Box::new(bytes)),
            }
        })
        .collect();
    Keyring::new(active, &keys).unwrap()
}

/// Key ids of every sealed record in the store, per kind.
async fn key_ids(store: &dyn Store) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for user in store.record_groups("grant").await.unwrap() {
        for (_, rec) in store
            .record_list(&Collection::new("grant", user))
            .await
            .unwrap()
        {
            out.push(("grant".into(), envelope_key_id(&rec.value).unwrap().into()));
        }
    }
    for (kind, group) in [("runtime_token", "all"), ("revocation", "queue")] {
        for (_, rec) in store
            .record_list(&Collection::new(kind, group))
            .await
            .unwrap()
        {
            out.push((kind.into(), envelope_key_id(&rec.value).unwrap().into()));
        }
    }
    for (_, rec) in store
        .record_list(&Collection::new("oauth_app", "all"))
        .await
        .unwrap()
    {
        let v: serde_json::Value = serde_json::from_slice(&rec.value).unwrap();
        out.push((
            "oauth_app".into(),
            v["client_secret"]["kid"].as_str().unwrap().into(),
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotate_keys_reseals_everything_while_a_replica_serves_and_writes() {
    let h = Harness::start(Backend::Redis).await;
    let dir = tempfile::tempdir().unwrap();
    // under k1: user tokens, a Git Runtime token, a queued revocation, the OAuth apps
    let saved = pasted_tokens(&h, 12, "acme-prod").await;
    for i in 0..BULK {
        h.assign_oauth_as(
            &format!("b-{i:03}"),
            "acme-staging",
            &format!("gho_bulk_{i}"),
        )
        .await;
    }
    for i in 0..HOT {
        h.assign_oauth_as(&format!("z-hot-{i}"), "acme-staging", "gho_hot_initial")
            .await;
    }
    let runtime_pat = h.github_pat("dave", &["repo", "admin:repo_hook"]);
    let r = h
        .admin_request(reqwest::Method::PUT, "/runtimes/acme-prod/git-token")
        .json(&serde_json::json!({ "token": runtime_pat }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let k1 = Arc::new(ring(&[("k1", KEY)], "k1"));
    let far = chrono::DateTime::from_timestamp(4_000_000_000, 0).unwrap();
    gitbroker::tokens::schedule::RevocationQueue::new(h.store.clone(), k1)
        .put(
            &gitbroker::tokens::schedule::RevocationJob {
                id: "job-1".into(),
                provider: gitbroker::providers::ProviderKind::Github,
                app: "github-app".into(),
                token: secrecy::SecretString::from("gho_to_revoke".to_owned()),
                fingerprint: "f".into(),
                user: "u-0".into(),
                attempts: 0,
                created_at: far,
                next_attempt_at: far,
                last_error: None,
            },
            Expect::Absent,
        )
        .await
        .unwrap();
    let before = key_ids(h.store.as_ref()).await;
    assert!(before.iter().all(|(_, kid)| kid == "k1"));
    for kind in ["grant", "runtime_token", "revocation", "oauth_app"] {
        assert!(before.iter().any(|(k, _)| k == kind), "{kind}");
    }

    // step 2 of a rotation: every replica knows k2 and seals with it
    let both = |t: String| {
        t.replace(
            &format!("keys = [{{ id = \"k1\", key = \"{KEY}\" }}]"),
            &format!(
                "active_key = \"k2\"\nkeys = [{{ id = \"k1\", key = \"{KEY}\" }}, {{ id = \"k2\", key = \"{KEY2}\" }}]"
            ),
        )
    };
    let rotated_toml = both(h.config_toml().to_owned());
    assert!(rotated_toml.contains("active_key = \"k2\""));
    let cfg = write(&dir.path().join("rotated.toml"), &rotated_toml);
    let (replica, replica_url) = h.serve_replica(both).await;
    // a replica keeps refreshing the tokens of "hot" users (read, replace the
    // access token, compare-and-swap) and adding users while the rotation runs
    let k1k2 = Arc::new(ring(&[("k1", KEY), ("k2", KEY2)], "k2"));
    let repo = gitbroker::tokens::repo::GrantRepo::new(h.store.clone(), k1k2);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (state, stop, store) = (replica.clone(), stop.clone(), h.store.clone());
        tokio::spawn(async move {
            // start once the rotation has listed everything and re-sealed its
            // first grant: every write below comes between its read of a hot
            // grant and its compare-and-swap
            let first = Collection::new("grant", "b-000");
            let started = std::time::Instant::now();
            loop {
                let listed = store.record_list(&first).await.unwrap();
                if envelope_key_id(&listed[0].1.value) == Some("k2") {
                    break;
                }
                assert!(
                    started.elapsed().as_secs() < 60,
                    "the rotation never started"
                );
                tokio::task::yield_now().await;
            }
            let mut last = vec![String::new(); HOT];
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) || n < 50 {
                let i = n % HOT;
                let user = format!("z-hot-{i}");
                let (grants, _) = repo.list_user(&user).await.unwrap();
                let (mut grant, version) = grants.into_iter().next().unwrap();
                let token = format!("gho_hot_{i}_{n}");
                grant.access_token = secrecy::SecretString::from(token.clone());
                match repo.put(&grant, Expect::Version(version)).await {
                    Ok(_) => last[i] = token,
                    Err(gitbroker::tokens::TokenError::Store(
                        gitbroker::store::StoreError::Conflict,
                    )) => {}
                    Err(e) => panic!("{e}"),
                }
                if n.is_multiple_of(10) {
                    assign_oauth_with(&state, &format!("n-{n}"), "acme-staging", "gho_new").await;
                }
                n += 1;
            }
            last
        })
    };
    let out = run(&["rotate-keys", "--config", s(&cfg)], &[]).await;
    stop.store(true, Ordering::Relaxed);
    let last = writer.await.unwrap();
    assert_eq!(out.code, 0, "{out:?}");
    for (_, pat) in &saved {
        assert!(!out.stdout.contains(pat) && !out.stderr.contains(pat));
    }
    assert!(out.stdout.contains("active key: k2"), "{out:?}");
    assert!(
        out.stdout
            .contains("other keys can be removed from encryption.keys"),
        "{out:?}"
    );
    // kind, records, re-sealed, current, gone, unreadable, busy, conflicts
    let row = |kind: &str| -> Vec<u64> {
        let line = out
            .stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(kind))
            .unwrap_or_else(|| panic!("{kind}: {out:?}"));
        line.split_whitespace()
            .skip(1)
            .map(|c| c.parse().unwrap())
            .collect()
    };
    let grants = row("grant");
    assert_eq!(grants[0], (12 + BULK + HOT) as u64, "{grants:?}");
    assert_eq!(
        grants[1] + grants[2],
        (12 + BULK + HOT) as u64,
        "{grants:?}"
    );
    assert_eq!((grants[4], grants[5]), (0, 0), "{grants:?}");
    assert!(
        grants[6] >= 1,
        "the hot grants changed after they were listed: {out:?}"
    );
    assert_eq!(row("runtime_token"), [1, 1, 0, 0, 0, 0, 0]);
    assert_eq!(row("revocation"), [1, 1, 0, 0, 0, 0, 0]);
    // the replica sealed the file's apps under k2 when it started
    assert_eq!(row("oauth_app")[..3], [7, 0, 7]);

    let after = key_ids(h.store.as_ref()).await;
    assert!(
        after.iter().all(|(_, kid)| kid == "k2"),
        "{:?}",
        after.iter().filter(|(_, k)| k != "k2").collect::<Vec<_>>()
    );
    // idempotent: a second run finds nothing to do
    let out = run(&["rotate-keys", "--config", s(&cfg)], &[]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("re-sealed 0;"), "{out:?}");

    // k1 retired: everything still opens
    let only_k2 = |t: String| {
        t.replace(
            &format!("keys = [{{ id = \"k1\", key = \"{KEY}\" }}]"),
            &format!("active_key = \"k2\"\nkeys = [{{ id = \"k2\", key = \"{KEY2}\" }}]"),
        )
    };
    let (retired, url) = h.serve_replica(only_k2).await;
    for (sub, pat) in &saved {
        assert_eq!(token_at(&url, "acme-prod", sub).await, Ok(pat.clone()));
    }
    for i in 0..BULK {
        assert_eq!(
            token_at(&url, "acme-staging", &format!("b-{i:03}")).await,
            Ok(format!("gho_bulk_{i}"))
        );
    }
    // no refresh the replica made during the rotation was lost
    for (i, token) in last.iter().enumerate() {
        assert!(
            token.starts_with("gho_hot_"),
            "hot user {i} was never refreshed"
        );
        assert_eq!(
            token_at(&url, "acme-staging", &format!("z-hot-{i}")).await,
            Ok(token.clone())
        );
    }
    let r = reqwest::Client::new()
        .get(format!("{url}/api/v1/runtimes/acme-prod/token"))
        .bearer_auth(credential("acme-prod"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["token"],
        runtime_pat.as_str()
    );
    let k2 = Arc::new(ring(&[("k2", KEY2)], "k2"));
    let jobs = gitbroker::tokens::schedule::RevocationQueue::new(h.store.clone(), k2)
        .list()
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1, "the queued revocation opens with k2 alone");
    // every OAuth app's client secret opens with k2 alone
    assert_eq!(retired.registry.apps().await.unwrap().len(), 7);
    drop(replica_url);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotate_keys_through_a_serving_broker_on_the_embedded_store() {
    let h = Harness::start(Backend::Embedded).await;
    let dir = tempfile::tempdir().unwrap();
    let saved = pasted_tokens(&h, 3, "acme-prod").await;
    let both = |t: String| {
        t.replace(
            &format!("keys = [{{ id = \"k1\", key = \"{KEY}\" }}]"),
            &format!(
                "active_key = \"k2\"\nkeys = [{{ id = \"k1\", key = \"{KEY}\" }}, {{ id = \"k2\", key = \"{KEY2}\" }}]"
            ),
        )
    };
    // the file is the serving broker's: opening it directly is refused
    let cfg = write(
        &dir.path().join("rotated.toml"),
        &both(h.config_toml().to_owned()),
    );
    let out = run(&["rotate-keys", "--config", s(&cfg)], &[]).await;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("in use") && out.stderr.contains("--url"),
        "{out:?}"
    );

    let (_replica, url) = h.serve_replica(both).await;
    let admin = [("GITBROKER_ADMIN_TOKEN", ADMIN_TOKEN)];
    let out = run(&["rotate-keys", "--url", &url], &admin).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("active key: k2"), "{out:?}");
    assert!(out.stdout.contains("re-sealed 3;"), "{out:?}");
    assert!(
        key_ids(h.store.as_ref())
            .await
            .iter()
            .all(|(_, k)| k == "k2")
    );
    let out = run(&["rotate-keys", "--url", &url], &admin).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("re-sealed 0;"), "{out:?}");
    // the admin API token is required
    let out = run(
        &["rotate-keys", "--url", &url],
        &[(
            "GITBROKER_ADMIN_TOKEN",
            "not-the-admin-token-0123456789abcdef",
        )],
    )
    .await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("401"), "{out:?}");

    let (_retired, url) = h
        .serve_replica(|t| {
            t.replace(
                &format!("keys = [{{ id = \"k1\", key = \"{KEY}\" }}]"),
                &format!("active_key = \"k2\"\nkeys = [{{ id = \"k2\", key = \"{KEY2}\" }}]"),
            )
        })
        .await;
    for (sub, pat) in &saved {
        assert_eq!(token_at(&url, "acme-prod", sub).await, Ok(pat.clone()));
    }
}
