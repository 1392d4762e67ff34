//! The configuration file as written, before validation.

use super::SecretSource;
use crate::providers::ProviderKind;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub public_url: String,
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default = "yes")]
    pub secure_cookies: bool,
    #[serde(default)]
    pub allow_insecure_http: bool,
    #[serde(default = "default_flow_ttl")]
    pub flow_ttl_secs: u64,
    #[serde(default)]
    pub log: RawLog,
    pub store: RawStore,
    pub encryption: RawEncryption,
    pub oidc: RawOidc,
    #[serde(default)]
    pub session: RawSession,
    #[serde(default)]
    pub provider: RawProvider,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub lifecycle: RawLifecycle,
    #[serde(default)]
    pub notifications: super::notifications::RawNotifications,
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub rate_limit: RawRateLimit,
    #[serde(default)]
    pub audit: RawAudit,
    #[serde(default)]
    pub webhooks: Vec<RawWebhook>,
    #[serde(default)]
    pub metrics: RawMetrics,
    #[serde(default)]
    pub accounts: Vec<RawAccount>,
    #[serde(default)]
    pub oauth_apps: Vec<RawOAuthApp>,
    #[serde(default)]
    pub github_apps: Vec<super::github_apps::RawGithubApp>,
    #[serde(default)]
    pub runtimes: Vec<RawRuntime>,
    pub demo: Option<RawDemo>,
}

pub(super) fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn yes() -> bool {
    true
}
fn default_flow_ttl() -> u64 {
    600
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    #[serde(default = "default_log_format")]
    pub format: String,
    #[serde(default = "default_log_level")]
    pub level: String,
}
fn default_log_format() -> String {
    "json".into()
}
fn default_log_level() -> String {
    "info".into()
}
impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: default_log_format(),
            level: default_log_level(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub backend: String,
    pub path: Option<PathBuf>,
    pub redis_url: Option<SecretSource>,
    #[serde(default = "default_prefix")]
    pub key_prefix: String,
    /// "standalone" (default), "sentinel" or "cluster".
    pub redis_mode: Option<String>,
    pub redis_sentinels: Option<Vec<String>>,
    pub redis_master_name: Option<String>,
    pub redis_db: Option<i64>,
    pub redis_nodes: Option<Vec<String>>,
    pub redis_username: Option<String>,
    pub redis_password: Option<SecretSource>,
    pub redis_sentinel_username: Option<String>,
    pub redis_sentinel_password: Option<SecretSource>,
    pub redis_ca_file: Option<PathBuf>,
    #[serde(default)]
    pub redis_wait_replicas: u32,
    #[serde(default = "default_wait_timeout_ms")]
    pub redis_wait_timeout_ms: u64,
}
fn default_wait_timeout_ms() -> u64 {
    500
}
fn default_prefix() -> String {
    "gitbroker".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEncryption {
    pub active_key: Option<String>,
    #[serde(default)]
    pub keys: Vec<RawKey>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    pub id: String,
    pub key: SecretSource,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOidc {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: SecretSource,
    #[serde(default = "default_oidc_scopes")]
    pub scopes: Vec<String>,
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
}
fn default_oidc_scopes() -> Vec<String> {
    vec!["openid".into(), "profile".into(), "email".into()]
}
fn default_groups_claim() -> String {
    "groups".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSession {
    #[serde(default = "default_idle")]
    pub idle_timeout_secs: u64,
    #[serde(default = "default_absolute")]
    pub absolute_timeout_secs: u64,
}
fn default_idle() -> u64 {
    8 * 3600
}
fn default_absolute() -> u64 {
    24 * 3600
}
impl Default for RawSession {
    fn default() -> Self {
        Self {
            idle_timeout_secs: default_idle(),
            absolute_timeout_secs: default_absolute(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}
fn default_connect_timeout() -> u64 {
    5
}
fn default_timeout() -> u64 {
    15
}
impl Default for RawProvider {
    fn default() -> Self {
        Self {
            connect_timeout_secs: default_connect_timeout(),
            timeout_secs: default_timeout(),
        }
    }
}

/// What happens to stored tokens over time: refresh, checks, revocation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLifecycle {
    /// Background refresh, checks and revocation retries on this replica.
    pub background: bool,
    pub refresh_margin_secs: u64,
    pub refresh_keepalive_hours: u64,
    pub refresh_cooldown_secs: u64,
    pub refresh_cooldown_max_secs: u64,
    pub check_interval_secs: u64,
    pub check_jitter_percent: u64,
    pub check_concurrency: u64,
    pub rate_limit_reserve: u64,
    pub expiring_soon_days: u64,
    pub revocation_retry_max_secs: u64,
    pub tick_secs: u64,
    /// The longest `?wait=` a runtime may ask for on a missing user token.
    pub wait_max_secs: u64,
    /// Requests waiting at once on this replica; more get 503.
    pub wait_max_requests: u64,
    /// Git Runtime tokens that rotate themselves do so this many days
    /// before they expire.
    pub runtime_token_rotate_days: u64,
    /// …and the token they rotate into expires this many days later.
    pub rotated_runtime_token_days: u64,
}

impl Default for RawLifecycle {
    fn default() -> Self {
        Self {
            background: true,
            refresh_margin_secs: 600,
            refresh_keepalive_hours: 24,
            refresh_cooldown_secs: 30,
            refresh_cooldown_max_secs: 900,
            check_interval_secs: 4 * 3600,
            check_jitter_percent: 10,
            check_concurrency: 4,
            rate_limit_reserve: 10,
            expiring_soon_days: 7,
            revocation_retry_max_secs: 6 * 3600,
            tick_secs: 10,
            wait_max_secs: 30,
            wait_max_requests: 1000,
            runtime_token_rotate_days: 7,
            rotated_runtime_token_days: 90,
        }
    }
}

/// How connections are served. Defaults in [`RawServer::default`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    pub header_read_timeout_secs: u64,
    pub request_timeout_secs: u64,
    pub body_timeout_secs: u64,
    pub max_connections: u64,
    pub shutdown_grace_secs: u64,
    pub trusted_proxies: Vec<String>,
}
impl Default for RawServer {
    fn default() -> Self {
        Self {
            header_read_timeout_secs: 10,
            request_timeout_secs: 60,
            body_timeout_secs: 15,
            max_connections: 1024,
            shutdown_grace_secs: 30,
            trusted_proxies: Vec::new(),
        }
    }
}

/// `GET /metrics`: on or off, and on the main listener or its own.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMetrics {
    pub enabled: bool,
    pub listen: Option<String>,
}
impl Default for RawMetrics {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: None,
        }
    }
}

/// Requests per minute; 0 turns a limit off.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRateLimit {
    pub sign_in_per_ip: u32,
    pub flow_start_per_ip: u32,
    pub flow_start_per_user: u32,
    pub token_check_per_ip: u32,
    pub token_check_per_user: u32,
}
impl Default for RawRateLimit {
    fn default() -> Self {
        // far above what a person does, even many people behind one NAT
        Self {
            sign_in_per_ip: 120,
            flow_start_per_ip: 240,
            flow_start_per_user: 30,
            token_check_per_ip: 120,
            token_check_per_user: 20,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub group: Option<String>,
    pub api_token: Option<SecretSource>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccount {
    pub id: String,
    pub name: Option<String>,
    pub groups: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOAuthApp {
    pub id: String,
    pub name: Option<String>,
    pub provider: ProviderKind,
    pub base_url: Option<String>,
    pub api_url: Option<String>,
    pub client_id: String,
    pub client_secret: SecretSource,
    /// `oauth_app` (default) or `github_app`.
    #[serde(default)]
    pub kind: crate::providers::AppKind,
    /// GitHub App: the name in its page URL, for the install link.
    pub app_slug: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    pub token_lifetime_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuntime {
    pub id: String,
    pub account: String,
    pub git_host: String,
    pub oauth_app: Option<String>,
    /// Provider kind; taken from the OAuth app when omitted.
    pub provider: Option<ProviderKind>,
    /// Provider base URL for self-hosted kinds; from the OAuth app when omitted.
    pub base_url: Option<String>,
    /// `owner/name` of the repositories the runtime works on.
    #[serde(default)]
    pub repositories: Vec<String>,
    pub credential: Option<SecretSource>,
    pub credential_sha256: Option<String>,
    /// Its Git Runtime token is minted from this GitHub App installation.
    pub github_app: Option<super::github_apps::RuntimeGithubApp>,
    /// GitLab only: rotate the Git Runtime token before it expires.
    #[serde(default)]
    pub rotate_runtime_token: bool,
}

/// Demo mode is on only with `enabled = true`: a stray
/// `GITBROKER_DEMO__…` variable or an empty `[demo]` does not turn it on.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDemo {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "default_mock_listen")]
    pub mock_provider_listen: String,
}
fn default_mock_listen() -> String {
    "127.0.0.1:8081".into()
}

/// The audit log (`[audit]`). Defaults in [`RawAudit::default`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAudit {
    pub enabled: bool,
    pub retention_days: u64,
    pub max_entries: u64,
    pub buffer: u64,
}

impl Default for RawAudit {
    fn default() -> Self {
        Self {
            enabled: true,
            retention_days: 90,
            max_entries: 1_000_000,
            buffer: 8192,
        }
    }
}

/// One `[[webhooks]]` endpoint.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    pub id: String,
    pub url: String,
    pub secrets: Vec<SecretSource>,
    #[serde(default)]
    pub events: Vec<String>,
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u64,
    #[serde(default = "default_webhook_timeout")]
    pub timeout_secs: u64,
    #[serde(default = "default_backoff_initial")]
    pub backoff_initial_ms: u64,
    #[serde(default = "default_backoff_max")]
    pub backoff_max_secs: u64,
}

pub(super) fn default_max_attempts() -> u64 {
    10
}
pub(super) fn default_webhook_timeout() -> u64 {
    10
}
pub(super) fn default_backoff_initial() -> u64 {
    5000
}
pub(super) fn default_backoff_max() -> u64 {
    3600
}
