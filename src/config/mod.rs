//! Configuration: a TOML file, overridden by `GITBROKER_…` environment
//! variables (`__` separates nesting levels), with secrets given inline, in a
//! file or in an environment variable. Unknown keys are errors. [`Settings`]
//! is the validated form the rest of the broker uses; every validation error
//! names the key at fault.

pub mod github_apps;
pub mod notifications;
mod raw;
mod secret;

pub use raw::RawConfig;
pub use secret::SecretSource;

use crate::providers::ProviderKind;
use base64::Engine;
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use url::Url;

/// A configuration problem, always naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Parse(String),
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// Where durable and ephemeral state lives.
#[derive(Debug, Clone)]
pub enum StoreSettings {
    Embedded { path: PathBuf },
    Redis(Box<crate::store::redis::RedisOptions>),
}

/// One AEAD key of the keyring.
pub struct KeySettings {
    pub id: String,
    pub key: SecretBox<[u8; 32]>,
}

impl std::fmt::Debug for KeySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySettings")
            .field("id", &self.id)
            .field("key", &"[redacted]")
            .finish()
    }
}

#[derive(Debug)]
pub struct OidcSettings {
    /// Exactly as configured: OpenID Connect Discovery §4.3 compares the
    /// provider's published `issuer` with this string, so it is validated
    /// as an absolute URL but never normalised (`Url` would add a `/` to a
    /// bare origin such as `https://accounts.google.com`).
    pub issuer: String,
    pub client_id: String,
    pub client_secret: SecretString,
    pub scopes: Vec<String>,
    pub groups_claim: String,
}

#[derive(Debug, Clone)]
pub struct AccountSettings {
    pub id: String,
    pub name: String,
    pub groups: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct OAuthAppSettings {
    pub id: String,
    pub name: String,
    pub provider: ProviderKind,
    pub base_url: Option<Url>,
    pub api_url: Option<Url>,
    pub client_id: String,
    pub client_secret: SecretString,
    pub kind: crate::providers::AppKind,
    /// GitHub App only: the name in its page URL, for the install link.
    pub app_slug: Option<String>,
    pub scopes: Vec<String>,
    pub token_lifetime: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    pub id: String,
    pub account: String,
    pub git_host: String,
    pub oauth_app: Option<String>,
    pub provider: Option<ProviderKind>,
    pub base_url: Option<Url>,
    /// SHA-256 of the runtime credential.
    pub credential_sha256: [u8; 32],
    /// Git Runtime tokens minted from this GitHub App installation.
    pub github_app: Option<github_apps::RuntimeGithubApp>,
    /// `owner/name` of the repositories the runtime works on: its GitHub
    /// App installation tokens and the GitHub App user tokens served to it
    /// are narrowed to them.
    pub repositories: Vec<String>,
    /// Rotate its (GitLab) Git Runtime token before it expires.
    pub rotate_runtime_token: bool,
}

/// Refresh, checks and revocation retries (`[lifecycle]`).
#[derive(Debug, Clone)]
pub struct LifecycleSettings {
    pub background: bool,
    pub refresh_margin: Duration,
    pub refresh_keepalive: Duration,
    pub refresh_cooldown: Duration,
    pub refresh_cooldown_max: Duration,
    pub check_interval: Duration,
    pub check_jitter_percent: u64,
    pub check_concurrency: usize,
    pub rate_limit_reserve: u64,
    pub expiring_soon: Duration,
    pub revocation_retry_max: Duration,
    pub tick: Duration,
    pub wait_max: Duration,
    pub wait_max_requests: usize,
    /// How long before its expiry a Git Runtime token that rotates itself
    /// is rotated.
    pub runtime_token_rotate_margin: Duration,
    /// The lifetime, in days, of the token it rotates into.
    pub rotated_runtime_token_days: u32,
}

impl Default for LifecycleSettings {
    fn default() -> Self {
        // the defaults of the file format are valid by construction
        lifecycle_settings(&raw::RawLifecycle::default()).unwrap_or_else(|_| Self {
            background: true,
            refresh_margin: Duration::from_secs(600),
            refresh_keepalive: Duration::from_secs(24 * 3600),
            refresh_cooldown: Duration::from_secs(30),
            refresh_cooldown_max: Duration::from_secs(900),
            check_interval: Duration::from_secs(4 * 3600),
            check_jitter_percent: 10,
            check_concurrency: 4,
            rate_limit_reserve: 10,
            expiring_soon: Duration::from_secs(7 * 86400),
            revocation_retry_max: Duration::from_secs(6 * 3600),
            tick: Duration::from_secs(10),
            wait_max: Duration::from_secs(30),
            wait_max_requests: 1000,
            runtime_token_rotate_margin: Duration::from_secs(7 * 86400),
            rotated_runtime_token_days: 90,
        })
    }
}

/// Validates `[lifecycle]`; every error names its key.
fn lifecycle_settings(l: &raw::RawLifecycle) -> Result<LifecycleSettings, ConfigError> {
    let range = |key: &str, v: u64, lo: u64, hi: u64, unit: &str| {
        if (lo..=hi).contains(&v) {
            Ok(v)
        } else {
            Err(invalid(
                format!("lifecycle.{key}"),
                format!("must be between {lo} and {hi} {unit}"),
            ))
        }
    };
    let margin = range(
        "refresh_margin_secs",
        l.refresh_margin_secs,
        60,
        86_400,
        "seconds",
    )?;
    let cooldown = range(
        "refresh_cooldown_secs",
        l.refresh_cooldown_secs,
        1,
        3600,
        "seconds",
    )?;
    let cooldown_max = range(
        "refresh_cooldown_max_secs",
        l.refresh_cooldown_max_secs,
        cooldown,
        86_400,
        "seconds (and at least refresh_cooldown_secs)",
    )?;
    let interval = range(
        "check_interval_secs",
        l.check_interval_secs,
        60,
        30 * 86_400,
        "seconds",
    )?;
    let rotate_days = range(
        "runtime_token_rotate_days",
        l.runtime_token_rotate_days,
        1,
        180,
        "days",
    )?;
    // the rotated token must start outside the margin, or it would rotate
    // again at once
    let rotated_days = range(
        "rotated_runtime_token_days",
        l.rotated_runtime_token_days,
        rotate_days + 1,
        365,
        "days (and more than runtime_token_rotate_days)",
    )?;
    Ok(LifecycleSettings {
        runtime_token_rotate_margin: Duration::from_secs(86_400 * rotate_days),
        rotated_runtime_token_days: u32::try_from(rotated_days).unwrap_or(90),
        background: l.background,
        refresh_margin: Duration::from_secs(margin),
        refresh_keepalive: Duration::from_secs(
            3600 * range(
                "refresh_keepalive_hours",
                l.refresh_keepalive_hours,
                1,
                24 * 90,
                "hours",
            )?,
        ),
        refresh_cooldown: Duration::from_secs(cooldown),
        refresh_cooldown_max: Duration::from_secs(cooldown_max),
        check_interval: Duration::from_secs(interval),
        check_jitter_percent: range(
            "check_jitter_percent",
            l.check_jitter_percent,
            0,
            50,
            "percent",
        )?,
        check_concurrency: usize::try_from(range(
            "check_concurrency",
            l.check_concurrency,
            1,
            256,
            "concurrent checks per provider host",
        )?)
        .unwrap_or(4),
        rate_limit_reserve: l.rate_limit_reserve,
        expiring_soon: Duration::from_secs(
            86_400 * range("expiring_soon_days", l.expiring_soon_days, 0, 365, "days")?,
        ),
        revocation_retry_max: Duration::from_secs(range(
            "revocation_retry_max_secs",
            l.revocation_retry_max_secs,
            60,
            7 * 86_400,
            "seconds",
        )?),
        tick: Duration::from_secs(range("tick_secs", l.tick_secs, 1, 3600, "seconds")?),
        wait_max: Duration::from_secs(range("wait_max_secs", l.wait_max_secs, 1, 3600, "seconds")?),
        wait_max_requests: usize::try_from(range(
            "wait_max_requests",
            l.wait_max_requests,
            1,
            1_000_000,
            "requests",
        )?)
        .unwrap_or(1000),
    })
}

/// The audit log (`[audit]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditSettings {
    /// Record events in the store's audit log (the `gitbroker::audit` log
    /// lines are written either way).
    pub enabled: bool,
    /// Entries older than this are trimmed.
    pub retention: Duration,
    /// At most this many entries are kept (the oldest go first).
    pub max_entries: u64,
    /// Events waiting to be written; when it is full, emitters wait.
    pub buffer: usize,
}

impl Default for AuditSettings {
    fn default() -> Self {
        let raw = raw::RawAudit::default();
        Self {
            enabled: raw.enabled,
            retention: Duration::from_secs(raw.retention_days * 86_400),
            max_entries: raw.max_entries,
            buffer: raw.buffer as usize,
        }
    }
}

fn webhook_settings(
    raw: &[raw::RawWebhook],
    allow_http: bool,
    base_dir: Option<&Path>,
) -> Result<Vec<WebhookSettings>, ConfigError> {
    let mut ids = BTreeSet::new();
    let mut out = Vec::new();
    for (i, w) in raw.iter().enumerate() {
        let key = format!("webhooks[{i}]");
        let fields = WebhookFields {
            id: w.id.clone(),
            url: w.url.clone(),
            events: w.events.clone(),
            max_attempts: w.max_attempts,
            timeout_secs: w.timeout_secs,
            backoff_initial_ms: w.backoff_initial_ms,
            backoff_max_secs: w.backoff_max_secs,
        };
        let (url, events, max_attempts, timeout, backoff_initial, backoff_max) =
            validate_webhook(&key, &fields, allow_http)?;
        if !ids.insert(w.id.clone()) {
            return Err(invalid(
                format!("{key}.id"),
                format!("duplicate webhook `{}`", w.id),
            ));
        }
        if w.secrets.is_empty() {
            return Err(invalid(
                format!("{key}.secrets"),
                "must list at least one signing secret (whsec_…)",
            ));
        }
        let secrets = w
            .secrets
            .iter()
            .enumerate()
            .map(|(j, s)| {
                let k = format!("{key}.secrets[{j}]");
                let text = s.resolve(&k, base_dir)?;
                crate::webhooks::WebhookSecret::parse(text.expose_secret())
                    .map_err(|m| invalid(k, m))
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.push(WebhookSettings {
            id: w.id.clone(),
            url,
            secrets,
            events,
            max_attempts,
            timeout,
            backoff_initial,
            backoff_max,
        });
    }
    Ok(out)
}

/// Validates `[audit]`; every error names its key.
fn audit_settings(a: &raw::RawAudit) -> Result<AuditSettings, ConfigError> {
    let range = |key: &str, v: u64, lo: u64, hi: u64| {
        if (lo..=hi).contains(&v) {
            Ok(v)
        } else {
            Err(invalid(
                format!("audit.{key}"),
                format!("must be between {lo} and {hi}"),
            ))
        }
    };
    Ok(AuditSettings {
        enabled: a.enabled,
        retention: Duration::from_secs(
            range("retention_days", a.retention_days, 1, 36_500)? * 86_400,
        ),
        max_entries: range("max_entries", a.max_entries, 100, 1_000_000_000)?,
        buffer: usize::try_from(range("buffer", a.buffer, 16, 1_000_000)?).unwrap_or(8192),
    })
}

/// One webhook endpoint (`[[webhooks]]`, or created with the admin API).
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub id: String,
    pub url: Url,
    /// Every message is signed with each (rotation: old and new at once).
    pub secrets: Vec<crate::webhooks::WebhookSecret>,
    /// The change events it receives; empty = every change.
    pub events: Vec<crate::events::Action>,
    /// Attempts before a delivery is given up (`failed`).
    pub max_attempts: u32,
    /// One attempt's time limit.
    pub timeout: Duration,
    /// The wait after the first failed attempt, doubled after each, up to
    /// `backoff_max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

/// Validates the fields an endpoint has wherever it comes from; errors
/// name `{key}.field`.
/// An endpoint's fields besides its secrets, as written (config or API).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookFields {
    pub id: String,
    pub url: String,
    #[serde(default)]
    pub events: Vec<String>,
    #[serde(default = "raw::default_max_attempts")]
    pub max_attempts: u64,
    #[serde(default = "raw::default_webhook_timeout")]
    pub timeout_secs: u64,
    #[serde(default = "raw::default_backoff_initial")]
    pub backoff_initial_ms: u64,
    #[serde(default = "raw::default_backoff_max")]
    pub backoff_max_secs: u64,
}

/// Validated [`WebhookFields`]: url, events, max attempts, timeout,
/// initial and longest backoff.
pub type ValidWebhook = (
    Url,
    Vec<crate::events::Action>,
    u32,
    Duration,
    Duration,
    Duration,
);

pub fn validate_webhook(
    key: &str,
    f: &WebhookFields,
    allow_http: bool,
) -> Result<ValidWebhook, ConfigError> {
    let (id, url, events) = (&f.id, &f.url, &f.events);
    let (max_attempts, timeout_secs, backoff_initial_ms, backoff_max_secs) = (
        f.max_attempts,
        f.timeout_secs,
        f.backoff_initial_ms,
        f.backoff_max_secs,
    );
    check_id(&format!("{key}.id"), id)?;
    let url = parse_url(&format!("{key}.url"), url, allow_http)?;
    let events = events
        .iter()
        .map(|e| match crate::events::Action::parse(e) {
            Some(a) if a.is_change() => Ok(a),
            Some(_) => Err(invalid(
                format!("{key}.events"),
                format!("`{e}` is not a change; webhooks receive changes only"),
            )),
            None => Err(invalid(
                format!("{key}.events"),
                format!("unknown event `{}`", e.chars().take(64).collect::<String>()),
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let range = |field: &str, v: u64, lo: u64, hi: u64| {
        if (lo..=hi).contains(&v) {
            Ok(v)
        } else {
            Err(invalid(
                format!("{key}.{field}"),
                format!("must be between {lo} and {hi}"),
            ))
        }
    };
    let attempts = range("max_attempts", max_attempts, 1, 100)?;
    let timeout = range("timeout_secs", timeout_secs, 1, 120)?;
    let initial = range("backoff_initial_ms", backoff_initial_ms, 10, 3_600_000)?;
    let max = range("backoff_max_secs", backoff_max_secs, 1, 7 * 86_400)?;
    Ok((
        url,
        events,
        u32::try_from(attempts).unwrap_or(100),
        Duration::from_secs(timeout),
        Duration::from_millis(initial),
        Duration::from_secs(max),
    ))
}

/// How `web::serve` serves connections.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// A connection must send a request's complete headers within this
    /// (also the idle limit between requests on a kept-alive connection).
    pub header_read_timeout: Duration,
    /// A request must be answered within this, body reading included.
    pub request_timeout: Duration,
    /// A request body may pause this long between two chunks.
    pub body_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// After SIGTERM, requests in flight get this long to finish.
    pub shutdown_grace: Duration,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        let raw = raw::RawServer::default();
        Self {
            header_read_timeout: Duration::from_secs(raw.header_read_timeout_secs),
            request_timeout: Duration::from_secs(raw.request_timeout_secs),
            body_timeout: Duration::from_secs(raw.body_timeout_secs),
            max_connections: raw.max_connections as usize,
            shutdown_grace: Duration::from_secs(raw.shutdown_grace_secs),
            trusted_proxies: Vec::new(),
        }
    }
}

/// Requests per minute for each limited action; `None` is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitSettings {
    pub sign_in_per_ip: Option<std::num::NonZeroU32>,
    pub flow_start_per_ip: Option<std::num::NonZeroU32>,
    pub flow_start_per_user: Option<std::num::NonZeroU32>,
    pub token_check_per_ip: Option<std::num::NonZeroU32>,
    pub token_check_per_user: Option<std::num::NonZeroU32>,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self::from_raw(&raw::RawRateLimit::default())
    }
}

impl RateLimitSettings {
    fn from_raw(r: &raw::RawRateLimit) -> Self {
        let n = std::num::NonZeroU32::new;
        Self {
            sign_in_per_ip: n(r.sign_in_per_ip),
            flow_start_per_ip: n(r.flow_start_per_ip),
            flow_start_per_user: n(r.flow_start_per_user),
            token_check_per_ip: n(r.token_check_per_ip),
            token_check_per_user: n(r.token_check_per_user),
        }
    }
}

#[derive(Debug, Clone)]
pub struct DemoSettings {
    /// Serve the mock provider and mock identity provider in-process here.
    pub mock_provider_listen: SocketAddr,
}

/// The validated configuration.
#[derive(Debug)]
pub struct Settings {
    pub public_url: Url,
    pub listen: SocketAddr,
    pub secure_cookies: bool,
    pub allow_insecure_http: bool,
    pub log_format: LogFormat,
    pub log_level: String,
    pub store: StoreSettings,
    pub active_key: String,
    pub keys: Vec<KeySettings>,
    pub oidc: OidcSettings,
    pub session_idle: Duration,
    pub session_absolute: Duration,
    pub flow_ttl: Duration,
    pub provider_connect_timeout: Duration,
    pub provider_timeout: Duration,
    pub admin_group: Option<String>,
    pub admin_api_token_sha256: Option<[u8; 32]>,
    pub lifecycle: LifecycleSettings,
    pub notifications: notifications::NotificationSettings,
    pub server: ServerSettings,
    pub rate_limits: RateLimitSettings,
    pub audit: AuditSettings,
    pub webhooks: Vec<WebhookSettings>,
    pub metrics: MetricsSettings,
    pub accounts: Vec<AccountSettings>,
    pub oauth_apps: Vec<OAuthAppSettings>,
    pub github_apps: Vec<crate::providers::github_app::GithubApp>,
    pub runtimes: Vec<RuntimeSettings>,
    pub demo: Option<DemoSettings>,
}

/// `[metrics]`: whether `GET /metrics` is served, and where: on `listen`
/// of its own, else on the main listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSettings {
    pub enabled: bool,
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

impl Settings {
    /// Reads `path`, applies `GITBROKER_…` overrides from the process
    /// environment, resolves secrets and validates.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        if !path.exists() {
            return Err(ConfigError::Parse(format!(
                "configuration file {} does not exist",
                path.display()
            )));
        }
        let figment = Figment::new()
            .merge(Toml::file_exact(path))
            // GITBROKER_CONFIG/_URL/_ADMIN_TOKEN belong to the command line
            .merge(
                Env::prefixed("GITBROKER_")
                    .ignore(&["CONFIG", "URL", "ADMIN_TOKEN", "MIGRATE_REDIS_URL"])
                    .split("__"),
            );
        Self::from_figment(figment, path.parent())
    }

    /// Only the `listen` address of a configuration file (with
    /// `GITBROKER_LISTEN` applied), without resolving secrets or validating
    /// the rest: `gitbroker healthcheck` finds the broker with it.
    pub fn listen_of(path: &Path) -> Result<SocketAddr, ConfigError> {
        if !path.exists() {
            return Err(ConfigError::Parse(format!(
                "configuration file {} does not exist",
                path.display()
            )));
        }
        let figment = Figment::new()
            .merge(Toml::file_exact(path))
            .merge(Env::prefixed("GITBROKER_").only(&["LISTEN"]));
        let listen: String = match figment.find_value("listen") {
            Ok(v) => v
                .into_string()
                .ok_or_else(|| invalid("listen", "must be a string \"address:port\""))?,
            Err(e) if e.missing() => raw::default_listen(),
            Err(e) => return Err(ConfigError::Parse(describe_figment_error(&e))),
        };
        listen
            .parse()
            .map_err(|_| invalid("listen", format!("`{listen}` is not an address:port")))
    }

    /// Parses TOML text (no environment); for tests.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        Self::from_figment(Figment::new().merge(Toml::string(text)), None)
    }

    fn from_figment(figment: Figment, base_dir: Option<&Path>) -> Result<Self, ConfigError> {
        let raw: RawConfig = figment.extract().map_err(|e| {
            // figment names the key path; keep every error it found
            let all: Vec<String> = e.into_iter().map(|e| describe_figment_error(&e)).collect();
            ConfigError::Parse(all.join("; "))
        })?;
        validate(raw, base_dir)
    }
}

fn describe_figment_error(e: &figment::Error) -> String {
    let path = e.path.join(".");
    let mut kind = e.kind.to_string();
    // figment's text for a wrong variant lists Rust-ish names; keep it short
    if kind.len() > 300 {
        kind.truncate(300);
    }
    if path.is_empty() {
        format!("configuration: {kind}")
    } else {
        format!("{path}: {kind}")
    }
}

fn parse_url(key: &str, value: &str, allow_http: bool) -> Result<Url, ConfigError> {
    let url = Url::parse(value).map_err(|e| invalid(key, format!("not an absolute URL ({e})")))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_http => {}
        "http" => {
            return Err(invalid(
                key,
                "must be an https URL (plain http is allowed only with allow_insecure_http = true, for local tests)",
            ));
        }
        other => return Err(invalid(key, format!("unsupported URL scheme `{other}`"))),
    }
    if url.host_str().is_none() {
        return Err(invalid(key, "URL has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(key, "URL must not contain credentials"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(key, "URL must not have a query or fragment"));
    }
    Ok(url)
}

/// `localhost` or a loopback address.
fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Ids appear in URLs and store keys: keep them to a safe alphabet.
fn check_id(key: &str, id: &str) -> Result<(), ConfigError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!(
                "`{id}` is not a valid id: use 1-64 characters from a-z, A-Z, 0-9, '-', '_', '.'"
            ),
        ))
    }
}

/// Validates an object id (OAuth app, runtime, account) for the admin API too.
pub fn validate_id(key: &str, id: &str) -> Result<(), ConfigError> {
    check_id(key, id)
}

/// Validates an OAuth app's base URL for the admin API too.
pub fn validate_provider_url(key: &str, value: &str, allow_http: bool) -> Result<Url, ConfigError> {
    parse_url(key, value, allow_http)
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

fn parse_sha256_hex(key: &str, value: &str) -> Result<[u8; 32], ConfigError> {
    let bytes = hex::decode(value.trim()).map_err(|_| invalid(key, "not a hex string"))?;
    bytes
        .try_into()
        .map_err(|_| invalid(key, "must be 64 hex characters (a SHA-256 digest)"))
}

fn validate(raw: RawConfig, base_dir: Option<&Path>) -> Result<Settings, ConfigError> {
    let allow_http = raw.allow_insecure_http;
    let public_url = parse_url("public_url", &raw.public_url, allow_http)?;
    if public_url.path() != "/" {
        return Err(invalid(
            "public_url",
            "must be the origin only (no path), e.g. https://gitbroker.example.com",
        ));
    }
    let listen: SocketAddr = raw
        .listen
        .parse()
        .map_err(|_| invalid("listen", format!("`{}` is not an address:port", raw.listen)))?;
    if !raw.secure_cookies && public_url.scheme() == "https" {
        return Err(invalid(
            "secure_cookies",
            "is false but public_url is https: cookies would lose Secure and the __Host- prefix for no reason; remove secure_cookies (it defaults to true)",
        ));
    }
    if raw.secure_cookies && public_url.scheme() != "https" {
        return Err(invalid(
            "secure_cookies",
            "is true but public_url is plain http: browsers would drop the cookies; set secure_cookies = false for local plain-http use only",
        ));
    }
    let log_format = match raw.log.format.as_str() {
        "json" => LogFormat::Json,
        "pretty" => LogFormat::Pretty,
        other => {
            return Err(invalid(
                "log.format",
                format!("`{other}` is not one of: json, pretty"),
            ));
        }
    };

    let store = match raw.store.backend.as_str() {
        "embedded" => {
            let path = raw.store.path.clone().ok_or_else(|| {
                invalid(
                    "store.path",
                    "is required when store.backend = \"embedded\"",
                )
            })?;
            let path = match base_dir {
                Some(dir) if path.is_relative() => dir.join(path),
                _ => path,
            };
            StoreSettings::Embedded { path }
        }
        "redis" => StoreSettings::Redis(Box::new(redis_options(&raw.store, base_dir)?)),
        other => {
            return Err(invalid(
                "store.backend",
                format!("`{other}` is not one of: embedded, redis"),
            ));
        }
    };

    // Encryption keys: mandatory, 32 bytes each, active one present.
    let mut keys = Vec::new();
    let mut key_ids = BTreeSet::new();
    for (i, k) in raw.encryption.keys.iter().enumerate() {
        let key_name = format!("encryption.keys[{i}]");
        check_id(&format!("{key_name}.id"), &k.id)?;
        if !key_ids.insert(k.id.clone()) {
            return Err(invalid(
                format!("{key_name}.id"),
                format!("duplicate key id `{}`", k.id),
            ));
        }
        let secret = k.key.resolve(&format!("{key_name}.key"), base_dir)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(secret.expose_secret().trim())
            .map_err(|_| invalid(format!("{key_name}.key"), "is not base64"))?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| {
            invalid(
                format!("{key_name}.key"),
                "must decode to exactly 32 bytes (generate one with `gitbroker generate-key`)",
            )
        })?;
        keys.push(KeySettings {
            id: k.id.clone(),
            key: SecretBox::new(Box::new(arr)),
        });
    }
    if keys.is_empty() {
        return Err(invalid(
            "encryption.keys",
            "at least one encryption key is required: tokens are encrypted at rest (generate one with `gitbroker generate-key`)",
        ));
    }
    let active_key = match &raw.encryption.active_key {
        Some(id) if key_ids.contains(id) => id.clone(),
        Some(id) => {
            return Err(invalid(
                "encryption.active_key",
                format!("`{id}` is not the id of any entry of encryption.keys"),
            ));
        }
        None if keys.len() == 1 => keys[0].id.clone(),
        None => {
            return Err(invalid(
                "encryption.active_key",
                "is required when several keys are configured",
            ));
        }
    };

    let oidc = {
        let o = &raw.oidc;
        parse_url("oidc.issuer", &o.issuer, allow_http)?;
        let issuer = o.issuer.clone();
        if o.client_id.trim().is_empty() {
            return Err(invalid("oidc.client_id", "must not be empty"));
        }
        let client_secret = o.client_secret.resolve("oidc.client_secret", base_dir)?;
        let mut scopes = o.scopes.clone();
        if !scopes.iter().any(|s| s == "openid") {
            scopes.insert(0, "openid".into());
        }
        if o.groups_claim.trim().is_empty() {
            return Err(invalid("oidc.groups_claim", "must not be empty"));
        }
        OidcSettings {
            issuer,
            client_id: o.client_id.clone(),
            client_secret,
            scopes,
            groups_claim: o.groups_claim.clone(),
        }
    };

    if raw.session.idle_timeout_secs == 0 {
        return Err(invalid(
            "session.idle_timeout_secs",
            "must be greater than 0",
        ));
    }
    if raw.session.absolute_timeout_secs < raw.session.idle_timeout_secs {
        return Err(invalid(
            "session.absolute_timeout_secs",
            "must be at least session.idle_timeout_secs",
        ));
    }
    if !(60..=3600).contains(&raw.flow_ttl_secs) {
        return Err(invalid(
            "flow_ttl_secs",
            "must be between 60 and 3600 seconds",
        ));
    }
    if raw.provider.timeout_secs == 0 {
        return Err(invalid("provider.timeout_secs", "must be greater than 0"));
    }
    if raw.provider.connect_timeout_secs == 0 {
        return Err(invalid(
            "provider.connect_timeout_secs",
            "must be greater than 0",
        ));
    }

    let server = validate_server(&raw.server, raw.provider.timeout_secs)?;
    let rate_limits = RateLimitSettings::from_raw(&raw.rate_limit);
    let metrics = validate_metrics(&raw.metrics, listen)?;

    let admin_api_token_sha256 = match &raw.admin.api_token {
        Some(src) => {
            let token = src.resolve("admin.api_token", base_dir)?;
            if token.expose_secret().len() < 32 {
                return Err(invalid(
                    "admin.api_token",
                    "must be at least 32 characters (generate one with `gitbroker generate-key`)",
                ));
            }
            Some(sha256(token.expose_secret().as_bytes()))
        }
        None => None,
    };

    let mut accounts = Vec::new();
    let mut account_ids = BTreeSet::new();
    for (i, a) in raw.accounts.iter().enumerate() {
        check_id(&format!("accounts[{i}].id"), &a.id)?;
        if !account_ids.insert(a.id.clone()) {
            return Err(invalid(
                format!("accounts[{i}].id"),
                format!("duplicate account `{}`", a.id),
            ));
        }
        if a.groups.is_empty() {
            return Err(invalid(
                format!("accounts[{i}].groups"),
                "must name at least one identity-provider group",
            ));
        }
        accounts.push(AccountSettings {
            id: a.id.clone(),
            name: a.name.clone().unwrap_or_else(|| a.id.clone()),
            groups: a.groups.clone(),
        });
    }

    let mut oauth_apps = Vec::new();
    let mut app_ids = BTreeMap::new();
    for (i, a) in raw.oauth_apps.iter().enumerate() {
        let key = format!("oauth_apps[{i}]");
        check_id(&format!("{key}.id"), &a.id)?;
        if app_ids.insert(a.id.clone(), (a.provider, a.kind)).is_some() {
            return Err(invalid(
                format!("{key}.id"),
                format!("duplicate OAuth app `{}`", a.id),
            ));
        }
        let base_url = a
            .base_url
            .as_deref()
            .map(|u| parse_url(&format!("{key}.base_url"), u, allow_http))
            .transpose()?;
        let api_url = a
            .api_url
            .as_deref()
            .map(|u| parse_url(&format!("{key}.api_url"), u, allow_http))
            .transpose()?;
        if a.client_id.trim().is_empty() {
            return Err(invalid(format!("{key}.client_id"), "must not be empty"));
        }
        let client_secret = a
            .client_secret
            .resolve(&format!("{key}.client_secret"), base_dir)?;
        let token_lifetime = match a.token_lifetime_secs {
            Some(0) => {
                return Err(invalid(
                    format!("{key}.token_lifetime_secs"),
                    "must be greater than 0 (omit it for no admin-set expiry)",
                ));
            }
            Some(s) => Some(Duration::from_secs(s)),
            None => None,
        };
        let app = OAuthAppSettings {
            id: a.id.clone(),
            name: a.name.clone().unwrap_or_else(|| a.id.clone()),
            provider: a.provider,
            base_url,
            api_url,
            client_id: a.client_id.clone(),
            client_secret,
            kind: a.kind,
            app_slug: a.app_slug.clone(),
            // the provider's spelling (GitLab: `api_read` → `read_api`)
            scopes: crate::providers::provider(a.provider).parse_scopes(&a.scopes.join(" ")),
            token_lifetime,
        };
        crate::providers::validate_app(
            app.provider,
            app.kind,
            app.app_slug.as_deref(),
            app.base_url.as_ref(),
            app.api_url.as_ref(),
            &app.scopes,
        )
        .map_err(|(field, msg)| invalid(format!("{key}.{field}"), msg))?;
        oauth_apps.push(app);
    }

    let demo_on = raw.demo.as_ref().is_some_and(|d| d.enabled);
    let github_apps = github_apps::settings(&raw.github_apps, allow_http, demo_on, base_dir)?;
    let mut runtimes = Vec::new();
    let mut runtime_ids = BTreeSet::new();
    let mut credential_hashes = BTreeSet::new();
    for (i, r) in raw.runtimes.iter().enumerate() {
        let key = format!("runtimes[{i}]");
        check_id(&format!("{key}.id"), &r.id)?;
        if !runtime_ids.insert(r.id.clone()) {
            return Err(invalid(
                format!("{key}.id"),
                format!("duplicate runtime `{}`", r.id),
            ));
        }
        if !account_ids.contains(&r.account) {
            return Err(invalid(
                format!("{key}.account"),
                format!("`{}` is not the id of any entry of accounts", r.account),
            ));
        }
        let app_kind = match &r.oauth_app {
            Some(app) => Some(*app_ids.get(app).ok_or_else(|| {
                invalid(
                    format!("{key}.oauth_app"),
                    format!("`{app}` is not the id of any entry of oauth_apps"),
                )
            })?),
            None => None,
        };
        crate::providers::github_app_user::check_repositories(
            &r.repositories,
            app_kind.is_some_and(|(_, k)| k == crate::providers::AppKind::GithubApp),
        )
        .map_err(|m| invalid(format!("{key}.repositories"), m))?;
        let app_kind = app_kind.map(|(p, _)| p);
        // a GitHub App runtime is on the App's GitHub unless it says otherwise
        let app_of_runtime = match &r.github_app {
            Some(ga) => {
                github_apps::validate_runtime_app(&key, ga, &github_apps)?;
                github_apps.iter().find(|a| a.name == ga.app)
            }
            None => None,
        };
        let (provider, runtime_base) = match (r.provider, app_kind, app_of_runtime) {
            (None, None, Some(a)) => {
                let web = a.api.as_str().strip_suffix("/api/v3").map(str::to_owned);
                let web = match web {
                    Some(w) => Some(parse_url(&format!("{key}.github_app"), &w, allow_http)?),
                    None => None,
                };
                (Some(github_apps::kind_of(web.as_ref())), web)
            }
            (p, _, _) => (p, None),
        };
        match (provider, app_kind) {
            (None, None) => {
                return Err(invalid(
                    format!("{key}.provider"),
                    "is required when the runtime has no oauth_app",
                ));
            }
            (Some(p), Some(a)) if p != a => {
                return Err(invalid(
                    format!("{key}.provider"),
                    format!(
                        "is `{}` but its OAuth app is for `{}`",
                        p.as_str(),
                        a.as_str()
                    ),
                ));
            }
            _ => {}
        }
        if r.github_app.is_some()
            && !matches!(
                provider.or(app_kind),
                Some(ProviderKind::Github | ProviderKind::GithubEnterprise)
            )
        {
            return Err(invalid(
                format!("{key}.github_app"),
                "a GitHub App installation serves only a runtime on GitHub (provider github or github_enterprise)",
            ));
        }
        let base_url = r
            .base_url
            .as_deref()
            .map(|u| parse_url(&format!("{key}.base_url"), u, allow_http))
            .transpose()?
            .or(runtime_base);
        if let Some(kind) = provider
            && r.oauth_app.is_none()
        {
            crate::providers::provider(kind)
                .endpoints(base_url.as_ref(), None)
                .map_err(|m| invalid(format!("{key}.base_url"), m))?;
        }
        if r.rotate_runtime_token
            && let Some(kind) = r.provider.or(app_kind)
            && !crate::providers::provider(kind).rotates_pats()
        {
            return Err(invalid(
                format!("{key}.rotate_runtime_token"),
                format!(
                    "only GitLab Git Runtime tokens can rotate themselves; this runtime's provider is `{}`",
                    kind.as_str()
                ),
            ));
        }
        if r.git_host.trim().is_empty() || r.git_host.contains('/') {
            return Err(invalid(
                format!("{key}.git_host"),
                "must be a host name such as github.com (no scheme, no path)",
            ));
        }
        let credential_sha256 = match (&r.credential, &r.credential_sha256) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    format!("{key}.credential"),
                    "give either credential or credential_sha256, not both",
                ));
            }
            (Some(src), None) => {
                let c = src.resolve(&format!("{key}.credential"), base_dir)?;
                if c.expose_secret().len() < 32 {
                    return Err(invalid(
                        format!("{key}.credential"),
                        "must be at least 32 characters",
                    ));
                }
                sha256(c.expose_secret().as_bytes())
            }
            (None, Some(h)) => parse_sha256_hex(&format!("{key}.credential_sha256"), h)?,
            (None, None) => {
                return Err(invalid(
                    format!("{key}.credential_sha256"),
                    "each runtime needs its runtime credential: credential_sha256 (preferred) or credential",
                ));
            }
        };
        if !credential_hashes.insert(credential_sha256) {
            return Err(invalid(
                format!("{key}.credential"),
                "two runtimes share one credential; each runtime needs its own",
            ));
        }
        runtimes.push(RuntimeSettings {
            id: r.id.clone(),
            account: r.account.clone(),
            git_host: r.git_host.trim().to_ascii_lowercase(),
            oauth_app: r.oauth_app.clone(),
            provider,
            base_url,
            credential_sha256,
            github_app: r.github_app.clone(),
            repositories: r.repositories.clone(),
            rotate_runtime_token: r.rotate_runtime_token,
        });
    }

    let demo = match &raw.demo {
        Some(d) if d.enabled => {
            if raw.secure_cookies {
                return Err(invalid(
                    "demo.enabled",
                    "demo mode (mock Git providers and a mock identity provider that signs anyone in) is refused with secure_cookies = true, a production setting; the demo runs on plain http with secure_cookies = false",
                ));
            }
            if public_url.scheme() == "https" && !is_loopback_host(&public_url) {
                return Err(invalid(
                    "demo.enabled",
                    format!(
                        "demo mode is refused with public_url {public_url}: an https URL that is not localhost or a loopback address looks like a real deployment"
                    ),
                ));
            }
            Some(DemoSettings {
                mock_provider_listen: d.mock_provider_listen.parse().map_err(|_| {
                    invalid(
                        "demo.mock_provider_listen",
                        format!("`{}` is not an address:port", d.mock_provider_listen),
                    )
                })?,
            })
        }
        _ => None,
    };

    Ok(Settings {
        public_url,
        listen,
        secure_cookies: raw.secure_cookies,
        allow_insecure_http: allow_http,
        log_format,
        log_level: raw.log.level.clone(),
        store,
        active_key,
        keys,
        oidc,
        session_idle: Duration::from_secs(raw.session.idle_timeout_secs),
        session_absolute: Duration::from_secs(raw.session.absolute_timeout_secs),
        flow_ttl: Duration::from_secs(raw.flow_ttl_secs),
        provider_connect_timeout: Duration::from_secs(raw.provider.connect_timeout_secs),
        provider_timeout: Duration::from_secs(raw.provider.timeout_secs),
        admin_group: raw.admin.group.clone(),
        admin_api_token_sha256,
        lifecycle: lifecycle_settings(&raw.lifecycle)?,
        notifications: notifications::settings(&raw.notifications, base_dir)?,
        server,
        rate_limits,
        audit: audit_settings(&raw.audit)?,
        webhooks: webhook_settings(&raw.webhooks, allow_http, base_dir)?,
        metrics,
        accounts,
        oauth_apps,
        github_apps,
        runtimes,
        demo,
    })
}

/// `[metrics]`: `listen` an address:port other than the main `listen`.
fn validate_metrics(
    r: &raw::RawMetrics,
    main_listen: SocketAddr,
) -> Result<MetricsSettings, ConfigError> {
    let listen = match &r.listen {
        None => None,
        Some(text) => {
            let addr: SocketAddr = text.trim().parse().map_err(|_| {
                invalid(
                    "metrics.listen",
                    format!("`{text}` is not an address:port (e.g. 127.0.0.1:9090)"),
                )
            })?;
            if addr == main_listen
                || (addr.port() == main_listen.port()
                    && addr.port() != 0
                    && (addr.ip().is_unspecified() || main_listen.ip().is_unspecified()))
            {
                return Err(invalid(
                    "metrics.listen",
                    format!(
                        "`{text}` is the main listen address; give the metrics their own port, or remove metrics.listen to serve /metrics on the main one"
                    ),
                ));
            }
            if !r.enabled {
                return Err(invalid(
                    "metrics.listen",
                    "is set but metrics.enabled is false; remove one of them",
                ));
            }
            Some(addr)
        }
    };
    Ok(MetricsSettings {
        enabled: r.enabled,
        listen,
    })
}

/// `[server]`: timeouts within sane bounds, the connection limit, and the
/// trusted proxies as CIDRs (a bare address is a /32 or /128).
fn validate_server(
    r: &raw::RawServer,
    provider_timeout: u64,
) -> Result<ServerSettings, ConfigError> {
    let secs = |key: &str, v: u64, max: u64| {
        if (1..=max).contains(&v) {
            Ok(Duration::from_secs(v))
        } else {
            Err(invalid(
                format!("server.{key}"),
                format!("must be between 1 and {max} seconds"),
            ))
        }
    };
    let header_read_timeout = secs("header_read_timeout_secs", r.header_read_timeout_secs, 300)?;
    let request_timeout = secs("request_timeout_secs", r.request_timeout_secs, 3600)?;
    if r.request_timeout_secs <= provider_timeout {
        return Err(invalid(
            "server.request_timeout_secs",
            format!(
                "must be longer than provider.timeout_secs ({provider_timeout}): a request may wait for a provider call"
            ),
        ));
    }
    let body_timeout = secs("body_timeout_secs", r.body_timeout_secs, 300)?;
    let shutdown_grace = secs("shutdown_grace_secs", r.shutdown_grace_secs, 3600)?;
    if !(1..=1_000_000).contains(&r.max_connections) {
        return Err(invalid(
            "server.max_connections",
            "must be between 1 and 1000000",
        ));
    }
    let mut trusted_proxies = Vec::new();
    for (i, p) in r.trusted_proxies.iter().enumerate() {
        let net = p
            .trim()
            .parse::<ipnet::IpNet>()
            .or_else(|_| p.trim().parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| {
                invalid(
                    format!("server.trusted_proxies[{i}]"),
                    format!("`{p}` is not an IP address or CIDR (e.g. 10.0.0.0/8, 192.0.2.7, ::1)"),
                )
            })?;
        trusted_proxies.push(net.trunc());
    }
    Ok(ServerSettings {
        header_read_timeout,
        request_timeout,
        body_timeout,
        max_connections: r.max_connections as usize,
        shutdown_grace,
        trusted_proxies,
    })
}

/// `[store]` with `backend = "redis"`: the mode's keys are required, the
/// other modes' keys are refused, so a half-edited file does not start.
fn redis_options(
    st: &raw::RawStore,
    base_dir: Option<&Path>,
) -> Result<crate::store::redis::RedisOptions, ConfigError> {
    use crate::store::redis::{RedisOptions, RedisTopology};
    let mode = st.redis_mode.as_deref().unwrap_or("standalone");
    let only = |key: &str, set: bool, modes: &str| -> Result<(), ConfigError> {
        if set {
            Err(invalid(
                format!("store.{key}"),
                format!("is only for store.redis_mode = {modes} (redis_mode is \"{mode}\")"),
            ))
        } else {
            Ok(())
        }
    };
    let required = |key: &str| {
        invalid(
            format!("store.{key}"),
            format!("is required when store.redis_mode = \"{mode}\""),
        )
    };
    let topology = match mode {
        "standalone" => {
            only(
                "redis_sentinels",
                st.redis_sentinels.is_some(),
                "\"sentinel\"",
            )?;
            only(
                "redis_master_name",
                st.redis_master_name.is_some(),
                "\"sentinel\"",
            )?;
            only("redis_db", st.redis_db.is_some(), "\"sentinel\"")?;
            only("redis_nodes", st.redis_nodes.is_some(), "\"cluster\"")?;
            let standalone_note = "\"sentinel\" or \"cluster\"; a standalone server takes its user and password in store.redis_url";
            only(
                "redis_username",
                st.redis_username.is_some(),
                standalone_note,
            )?;
            only(
                "redis_password",
                st.redis_password.is_some(),
                standalone_note,
            )?;
            let url = st
                .redis_url
                .as_ref()
                .ok_or_else(|| required("redis_url"))?
                .resolve("store.redis_url", base_dir)?;
            let parsed = Url::parse(url.expose_secret())
                .map_err(|_| invalid("store.redis_url", "is not a URL"))?;
            if !matches!(parsed.scheme(), "redis" | "rediss") {
                return Err(invalid(
                    "store.redis_url",
                    "must start with redis:// or rediss://",
                ));
            }
            RedisTopology::Standalone { url }
        }
        "sentinel" => {
            only("redis_url", st.redis_url.is_some(), "\"standalone\"")?;
            only("redis_nodes", st.redis_nodes.is_some(), "\"cluster\"")?;
            let sentinels = node_list(
                "redis_sentinels",
                st.redis_sentinels
                    .as_deref()
                    .ok_or_else(|| required("redis_sentinels"))?,
            )?;
            let master_name = st
                .redis_master_name
                .clone()
                .ok_or_else(|| required("redis_master_name"))?;
            if master_name.is_empty() || master_name.chars().any(char::is_whitespace) {
                return Err(invalid(
                    "store.redis_master_name",
                    "must be a non-empty name without spaces (the sentinels' `sentinel monitor` name)",
                ));
            }
            let db = st.redis_db.unwrap_or(0);
            if !(0..=1_000_000).contains(&db) {
                return Err(invalid(
                    "store.redis_db",
                    "must be a database number (0 or more)",
                ));
            }
            RedisTopology::Sentinel {
                sentinels,
                master_name,
                db,
            }
        }
        "cluster" => {
            only("redis_url", st.redis_url.is_some(), "\"standalone\"")?;
            only(
                "redis_sentinels",
                st.redis_sentinels.is_some(),
                "\"sentinel\"",
            )?;
            only(
                "redis_master_name",
                st.redis_master_name.is_some(),
                "\"sentinel\"",
            )?;
            if st.redis_db.is_some() {
                return Err(invalid(
                    "store.redis_db",
                    "is only for store.redis_mode = \"sentinel\" (a Redis Cluster has database 0 only)",
                ));
            }
            let nodes = node_list(
                "redis_nodes",
                st.redis_nodes
                    .as_deref()
                    .ok_or_else(|| required("redis_nodes"))?,
            )?;
            RedisTopology::Cluster { nodes }
        }
        other => {
            return Err(invalid(
                "store.redis_mode",
                format!("`{other}` is not one of: standalone, sentinel, cluster"),
            ));
        }
    };
    if mode != "sentinel" {
        only(
            "redis_sentinel_username",
            st.redis_sentinel_username.is_some(),
            "\"sentinel\"",
        )?;
        only(
            "redis_sentinel_password",
            st.redis_sentinel_password.is_some(),
            "\"sentinel\"",
        )?;
    }
    let mut options = RedisOptions::new(topology, &st.key_prefix);
    if st.key_prefix.contains(['{', '}']) {
        return Err(invalid("store.key_prefix", "must not contain '{' or '}'"));
    }
    options.username = st.redis_username.clone();
    options.password = st
        .redis_password
        .as_ref()
        .map(|p| p.resolve("store.redis_password", base_dir))
        .transpose()?;
    options.sentinel_username = st.redis_sentinel_username.clone();
    options.sentinel_password = st
        .redis_sentinel_password
        .as_ref()
        .map(|p| p.resolve("store.redis_sentinel_password", base_dir))
        .transpose()?;
    if let Some(file) = &st.redis_ca_file {
        let path = match base_dir {
            Some(dir) if file.is_relative() => dir.join(file),
            _ => file.clone(),
        };
        let pem = std::fs::read(&path).map_err(|e| {
            invalid(
                "store.redis_ca_file",
                format!("cannot read {}: {}", path.display(), e.kind()),
            )
        })?;
        if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
            return Err(invalid(
                "store.redis_ca_file",
                format!("{} holds no PEM certificate", path.display()),
            ));
        }
        options.ca_pem = Some(pem);
    }
    if st.redis_wait_replicas > 16 {
        return Err(invalid(
            "store.redis_wait_replicas",
            "must be at most 16 (the replicas each write waits for)",
        ));
    }
    options.wait_replicas = st.redis_wait_replicas;
    if !(1..=60_000).contains(&st.redis_wait_timeout_ms) {
        return Err(invalid(
            "store.redis_wait_timeout_ms",
            "must be between 1 and 60000",
        ));
    }
    options.wait_timeout = Duration::from_millis(st.redis_wait_timeout_ms);
    Ok(options)
}

/// `redis://host:port` or `rediss://host:port` entries: no credentials (they
/// go in redis_password, a secret), no database or path, one scheme for all.
fn node_list(
    key: &str,
    entries: &[String],
) -> Result<Vec<crate::store::redis::NodeAddr>, ConfigError> {
    if entries.is_empty() {
        return Err(invalid(
            format!("store.{key}"),
            "must list at least one address",
        ));
    }
    let mut out: Vec<crate::store::redis::NodeAddr> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let k = format!("store.{key}[{i}]");
        // Never echo the entry: a misplaced password would land in the log.
        let url = Url::parse(entry)
            .map_err(|_| invalid(&k, "is not a redis://host:port or rediss://host:port URL"))?;
        let tls = match url.scheme() {
            "redis" => false,
            "rediss" => true,
            _ => return Err(invalid(&k, "must start with redis:// or rediss://")),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(
                &k,
                "must not carry a user or password; set store.redis_username and store.redis_password (or the redis_sentinel_… keys)",
            ));
        }
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err(invalid(
                &k,
                "must be only redis[s]://host:port (no database, path, query or fragment)",
            ));
        }
        let host = match url.host() {
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            Some(h) => h.to_string(),
            None => return Err(invalid(&k, "has no host")),
        };
        let port = url.port().unwrap_or(6379);
        if let Some(first) = out.first()
            && first.tls != tls
        {
            return Err(invalid(
                &k,
                "mixes redis:// and rediss://; use one scheme for every address",
            ));
        }
        out.push(crate::store::redis::NodeAddr { host, port, tls });
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
