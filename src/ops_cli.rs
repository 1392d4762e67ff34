//! Operator commands around a deployment: `healthcheck` (the container's
//! health check), `rotate-keys`, and the embedded store's `backup`,
//! `restore` and `migrate --to redis`. Each prints one summary and exits 0,
//! or 1 with the reason.

use crate::cli::Remote;
use gitbroker::clock::{Clock, SystemClock};
use gitbroker::config::{LogFormat, Settings, StoreSettings};
use gitbroker::store::embedded::EmbeddedStore;
use gitbroker::store::redis::RedisStore;
use gitbroker::store::{DumpEntry, StoreError};
use indicatif::{ProgressBar, ProgressStyle};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("gitbroker: {message}");
    ExitCode::from(1)
}

/// A wildcard listen address is probed on loopback.
fn probe_addr(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

pub async fn healthcheck(
    url: Option<String>,
    config: Option<&Path>,
    live: bool,
    timeout_secs: u64,
) -> ExitCode {
    let base = match (url, config) {
        (Some(url), _) => url,
        (None, Some(path)) => match Settings::listen_of(path) {
            Ok(addr) => format!("http://{}", probe_addr(addr)),
            Err(e) => return fail(format!("healthcheck: {}: {e}", path.display())),
        },
        (None, None) => "http://127.0.0.1:8080".to_owned(),
    };
    let (path, what) = if live {
        ("/healthz", "alive")
    } else {
        ("/readyz", "ready")
    };
    let target = format!("{}{path}", base.trim_end_matches('/'));
    let client = match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(timeout_secs.max(1)))
        .build()
    {
        Ok(c) => c,
        Err(e) => return fail(format!("healthcheck: {e}")),
    };
    match client.get(&target).send().await {
        Ok(resp) if resp.status() == reqwest::StatusCode::OK => {
            println!("{what}: {target} answered 200");
            ExitCode::SUCCESS
        }
        Ok(resp) => {
            let status = resp.status().as_u16();
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            let detail = body["detail"]
                .as_str()
                .map(|d| format!(": {}", d.chars().take(200).collect::<String>()))
                .unwrap_or_default();
            fail(format!("not {what}: {target} answered {status}{detail}"))
        }
        Err(e) => {
            let why = if e.is_timeout() {
                format!("no answer within {timeout_secs} s")
            } else if e.is_connect() {
                "cannot connect".to_owned()
            } else {
                "request failed".to_owned()
            };
            fail(format!("not {what}: {target}: {why}"))
        }
    }
}

fn bar(what: &str) -> ProgressBar {
    // drawn on standard error, and only when it is a terminal
    let bar = ProgressBar::new(0);
    if let Ok(style) = ProgressStyle::with_template(&format!(
        "{what} [{{bar:40}}] {{pos}}/{{len}} ({{per_sec}}, {{eta}} left)"
    )) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn embedded_path(settings: &Settings, config: &Path) -> Result<PathBuf, ExitCode> {
    match &settings.store {
        StoreSettings::Embedded { path } => Ok(path.clone()),
        StoreSettings::Redis { .. } => Err(fail(format!(
            "{}: store.backend is \"redis\"; this command is for the embedded store (back Redis up with its own persistence: RDB snapshots or AOF)",
            config.display()
        ))),
    }
}

/// Opens a store file, saying what to do when its broker holds it.
fn open_embedded(path: &Path, hint: &str) -> Result<EmbeddedStore, ExitCode> {
    if !path.exists() {
        return Err(fail(format!("{} does not exist", path.display())));
    }
    EmbeddedStore::open(path, Arc::new(SystemClock)).map_err(|e| match e {
        StoreError::Unavailable(m) if m.contains("in use") => fail(format!("{m}: {hint}")),
        e => fail(e),
    })
}

fn counts(entries: &[DumpEntry]) -> (usize, usize) {
    let records = entries
        .iter()
        .filter(|e| matches!(e, DumpEntry::Record { .. }))
        .count();
    (records, entries.len() - records)
}

pub async fn rotate_keys(config: &Path) -> ExitCode {
    let settings = match super::load(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let _log = super::init_logging(LogFormat::Pretty, "warn");
    let store = match gitbroker::app::open_store(&settings, Arc::new(SystemClock)).await {
        Ok(s) => s,
        Err(e) => {
            let hint = if e.to_string().contains("in use") {
                ": the broker holds it; ask it to re-seal its own store with --url (or stop it first)"
            } else {
                ""
            };
            return fail(format!("cannot open the store: {e}{hint}"));
        }
    };
    let keyring = match gitbroker::crypto::Keyring::new(&settings.active_key, &settings.keys) {
        Ok(k) => Arc::new(k),
        Err(e) => return fail(format!("encryption: {e}")),
    };
    let registry = gitbroker::registry::Registry::new(store.clone(), keyring.clone(), &settings);
    let progress = bar("re-sealing");
    let report =
        gitbroker::rotate::rotate(store.as_ref(), &keyring, &registry, &mut |done, total| {
            progress.set_length(total);
            progress.set_position(done);
        })
        .await;
    progress.finish_and_clear();
    match report {
        Ok(r) => print_rotation(&gitbroker::rotate::RotateSummary::from(&r)),
        Err(e) => fail(format!(
            "rotation stopped: {e}; what was re-sealed stays so, run it again to go on"
        )),
    }
}

/// `rotate-keys --url`: the broker re-seals its own store; a spinner meanwhile.
pub async fn rotate_keys_remote(url: &str) -> ExitCode {
    let token = match crate::runtime_cli::admin_token() {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let client = match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(std::time::Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let target = format!("{}/api/v1/admin/rotate-keys", url.trim_end_matches('/'));
    let spinner = ProgressBar::new_spinner();
    spinner.set_message("the broker is re-sealing its store");
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let resp = client.post(&target).bearer_auth(token).send().await;
    spinner.finish_and_clear();
    let resp = match resp {
        Ok(r) => r,
        Err(e) => return fail(format!("{target}: {e}")),
    };
    let status = resp.status();
    if !status.is_success() {
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        return fail(format!(
            "the broker answered {}: {}; what was re-sealed stays so, run it again to go on",
            status.as_u16(),
            body["detail"].as_str().unwrap_or("(no detail)")
        ));
    }
    match resp.json::<gitbroker::rotate::RotateSummary>().await {
        Ok(summary) => print_rotation(&summary),
        Err(e) => fail(format!(
            "the broker's answer is not a rotation summary: {e}"
        )),
    }
}

fn print_rotation(report: &gitbroker::rotate::RotateSummary) -> ExitCode {
    println!("active key: {}", report.active_key);
    println!(
        "{:<14} {:>8} {:>10} {:>8} {:>5} {:>10} {:>5} {:>9}",
        "kind", "records", "re-sealed", "current", "gone", "unreadable", "busy", "conflicts"
    );
    for k in &report.kinds {
        let (kind, r) = (&k.kind, &k.report);
        println!(
            "{kind:<14} {:>8} {:>10} {:>8} {:>5} {:>10} {:>5} {:>9}",
            r.records, r.resealed, r.current, r.gone, r.unreadable, r.busy, r.conflicts
        );
    }
    if report.left == 0 {
        println!(
            "re-sealed {}; every sealed record is under key `{}`: other keys can be removed from encryption.keys",
            report.resealed, report.active_key
        );
        return ExitCode::SUCCESS;
    }
    for k in &report.kinds {
        for (kid, n) in &k.report.left_under {
            eprintln!(
                "gitbroker: {n} {} record(s) under key `{kid}` were left as they are",
                k.kind
            );
        }
    }
    fail(format!(
        "re-sealed {}; {} record(s) are not under `{}`: busy ones change on the next run, unreadable ones (a key no longer configured, or left behind by a deleted runtime) stay unreadable; keep the keys they name until they are gone",
        report.resealed, report.left, report.active_key
    ))
}

pub async fn backup(remote: &Remote, config: Option<&Path>, out: &Path) -> ExitCode {
    if out.exists() {
        return fail(format!("{} already exists", out.display()));
    }
    if let Some(config) = config {
        let settings = match super::load(config) {
            Ok(s) => s,
            Err(code) => return code,
        };
        let path = match embedded_path(&settings, config) {
            Ok(p) => p,
            Err(code) => return code,
        };
        let store = match open_embedded(
            &path,
            "the broker is running; back up through it instead (without --config)",
        ) {
            Ok(s) => s,
            Err(code) => return code,
        };
        return match store.backup_to(out).await {
            Ok(c) => {
                println!(
                    "backup written to {}: {} records, {} ephemeral values",
                    out.display(),
                    c.records,
                    c.ephemeral
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        };
    }
    match fetch_backup(remote, out).await {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// Downloads the broker's backup next to `out`, checks that it opens as a
/// store, then gives it its name.
async fn fetch_backup(remote: &Remote, out: &Path) -> Result<String, String> {
    use tokio::io::AsyncWriteExt;
    let token = crate::runtime_cli::admin_token()?;
    let url = format!("{}/api/v1/admin/backup", remote.url.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let mut resp = client
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if !resp.status().is_success() {
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        return Err(format!(
            "the broker answered {status}: {}",
            body["detail"].as_str().unwrap_or("(no detail)")
        ));
    }
    let partial = PathBuf::from(format!("{}.partial", out.display()));
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options
        .open(&partial)
        .await
        .map_err(|e| format!("cannot create {}: {e}", partial.display()))?;
    let written: Result<u64, String> = async {
        let mut n = 0u64;
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("downloading the backup: {e}"))?
        {
            file.write_all(&chunk)
                .await
                .map_err(|e| format!("writing {}: {e}", partial.display()))?;
            n += chunk.len() as u64;
        }
        file.sync_all()
            .await
            .map_err(|e| format!("writing {}: {e}", partial.display()))?;
        Ok(n)
    }
    .await;
    drop(file);
    let checked = match written {
        Ok(bytes) => match EmbeddedStore::open(&partial, Arc::new(SystemClock)) {
            Ok(store) => store
                .dump()
                .await
                .map(|entries| (bytes, counts(&entries)))
                .map_err(|e| format!("the downloaded backup does not read back: {e}")),
            Err(e) => Err(format!("the downloaded backup does not open: {e}")),
        },
        Err(e) => Err(e),
    };
    let (bytes, (records, ephemeral)) = match checked {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    std::fs::rename(&partial, out).map_err(|e| format!("naming {}: {e}", out.display()))?;
    Ok(format!(
        "backup written to {}: {bytes} bytes, {records} records, {ephemeral} ephemeral values",
        out.display()
    ))
}

pub async fn restore(config: &Path, from: &Path, replace: bool) -> ExitCode {
    let settings = match super::load(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let target = match embedded_path(&settings, config) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let backup = match open_embedded(from, "a backup must not be in use") {
        Ok(s) => s,
        Err(code) => return code,
    };
    let kept = PathBuf::from(format!("{}.before-restore", target.display()));
    if target.exists() {
        if !replace {
            return fail(format!(
                "store.path {} already exists; pass --replace to replace it (it is kept as {})",
                target.display(),
                kept.display()
            ));
        }
        // a broker holding the file would go on writing to the replaced one
        match open_embedded(&target, "stop the broker before restoring") {
            Ok(current) => drop(current),
            Err(code) => return code,
        }
    } else if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
        let mut dirs = std::fs::DirBuilder::new();
        dirs.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut dirs, 0o700);
        if let Err(e) = dirs.create(parent) {
            return fail(format!("cannot create {}: {e}", parent.display()));
        }
    }
    let restoring = PathBuf::from(format!("{}.restoring", target.display()));
    let _ = std::fs::remove_file(&restoring);
    let copied = match backup.backup_to(&restoring).await {
        Ok(c) => c,
        Err(e) => return fail(format!("copying {}: {e}", from.display())),
    };
    if target.exists()
        && let Err(e) = std::fs::rename(&target, &kept)
    {
        let _ = std::fs::remove_file(&restoring);
        return fail(format!("cannot keep {}: {e}", target.display()));
    }
    if let Err(e) = std::fs::rename(&restoring, &target) {
        return fail(format!("cannot put the restored store in place: {e}"));
    }
    let kept_note = if kept.exists() && replace {
        format!("; the previous file is kept as {}", kept.display())
    } else {
        String::new()
    };
    println!(
        "store {} restored from {}: {} records, {} ephemeral values{kept_note}",
        target.display(),
        from.display(),
        copied.records,
        copied.ephemeral
    );
    ExitCode::SUCCESS
}

fn redis_url(file: Option<&Path>) -> Result<String, String> {
    let url = match file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        None => std::env::var("GITBROKER_MIGRATE_REDIS_URL").map_err(|_| {
            "give the Redis URL in a file (--redis-url-file) or in GITBROKER_MIGRATE_REDIS_URL"
                .to_owned()
        })?,
    };
    let url = url.trim().to_owned();
    if url.is_empty() {
        return Err("the Redis URL is empty".into());
    }
    Ok(url)
}

pub async fn migrate(
    config: &Path,
    from: Option<&Path>,
    redis_url_file: Option<&Path>,
    key_prefix: &str,
) -> ExitCode {
    let settings = match super::load(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let source = match (from, &settings.store) {
        (Some(p), _) => p.to_owned(),
        (None, StoreSettings::Embedded { path }) => path.clone(),
        (None, StoreSettings::Redis { .. }) => {
            return fail(format!(
                "{}: store.backend is already \"redis\"; give the embedded store file with --from",
                config.display()
            ));
        }
    };
    let url = match redis_url(redis_url_file) {
        Ok(u) => u,
        Err(e) => return fail(e),
    };
    let src = match open_embedded(
        &source,
        "stop the broker first (or take a backup and migrate --from it, losing what changes after the backup)",
    ) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let dst = match RedisStore::connect(&url, key_prefix).await {
        Ok(d) => d,
        Err(e) => return fail(format!("cannot open the target store: {e}")),
    };
    match dst.is_empty().await {
        Ok(true) => {}
        Ok(false) => {
            return fail(format!(
                "Redis already holds keys under the prefix `{key_prefix}`; migrate only into an empty prefix (another --key-prefix, or another database)"
            ));
        }
        Err(e) => return fail(e),
    }
    let entries = match src.dump().await {
        Ok(e) => e,
        Err(e) => return fail(format!("reading {}: {e}", source.display())),
    };
    let progress = bar("copying");
    progress.set_length(entries.len() as u64);
    let now = SystemClock.now().timestamp_millis();
    let imported = dst.import(&entries, now, |n| progress.inc(n)).await;
    progress.finish_and_clear();
    let (records, ephemeral) = match imported {
        Ok(c) => c,
        Err(e) => {
            return fail(format!(
                "copy interrupted: {e}; empty the prefix `{key_prefix}` and run it again"
            ));
        }
    };
    let (_, all_ephemeral) = counts(&entries);
    match dst.differing_records(&entries).await {
        Ok(0) => {}
        Ok(n) => return fail(format!("{n} records do not read back identical from Redis")),
        Err(e) => return fail(format!("checking the copy: {e}")),
    }
    println!(
        "copied {} into Redis (prefix `{key_prefix}`): {records} records (each read back identical), {ephemeral} ephemeral values with the time they had left ({} already expired, skipped)",
        source.display(),
        all_ephemeral as u64 - ephemeral
    );
    println!(
        "next: set [store] backend = \"redis\", redis_url and key_prefix = \"{key_prefix}\" in the configuration, and start the broker"
    );
    ExitCode::SUCCESS
}
