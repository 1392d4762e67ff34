//! Assembles the broker from validated settings: opens the store, builds
//! the keyring, the provider HTTP client and the domain services, and loads
//! the file's OAuth apps and runtimes into the store.

use crate::auth::SessionStore;
use crate::auth::login::Logins;
use crate::auth::oidc::Oidc;
use crate::clock::Clock;
use crate::config::{Settings, StoreSettings};
use crate::crypto::Keyring;
use crate::metrics::Metrics;
use crate::oauth::Flows;
use crate::providers;
use crate::registry::Registry;
use crate::store::embedded::EmbeddedStore;
use crate::store::instrumented::InstrumentedStore;
use crate::store::redis::RedisStore;
use crate::store::{Store, StoreError};
use crate::tokens::{Lifecycle, TokenError};
use crate::web::{AppState, Services};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("encryption: {0}")]
    Crypto(#[from] crate::crypto::CryptoError),
    #[error("HTTP client: {0}")]
    Http(String),
    #[error("loading OAuth apps and runtimes: {0}")]
    Registry(#[from] crate::registry::RegistryError),
    #[error("{0}")]
    Config(String),
    #[error("preparing stored tokens: {0}")]
    Tokens(#[from] TokenError),
}

/// Opens the configured store backend.
pub async fn open_store(
    settings: &Settings,
    clock: Arc<dyn Clock>,
) -> Result<Arc<dyn Store>, StoreError> {
    match &settings.store {
        StoreSettings::Embedded { path } => {
            let store = EmbeddedStore::open(path, clock)?;
            store.spawn_sweeper(std::time::Duration::from_secs(60));
            Ok(Arc::new(store))
        }
        StoreSettings::Redis(options) => Ok(Arc::new(RedisStore::open(options).await?)),
    }
}

/// Builds the application state on `store` and loads the file's objects.
pub async fn build(
    settings: Settings,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
) -> Result<AppState, StartError> {
    let keyring = Arc::new(Keyring::new(&settings.active_key, &settings.keys)?);
    let metrics = Arc::new(Metrics::new());
    let store: Arc<dyn Store> = Arc::new(InstrumentedStore::new(store, metrics.clone()));
    let http = providers::http_client(settings.provider_connect_timeout, settings.provider_timeout)
        .map_err(|e| StartError::Http(e.to_string()))?
        .with_pacing(
            settings.lifecycle.check_concurrency,
            settings.lifecycle.rate_limit_reserve,
        )
        .with_metrics(metrics.clone());
    let registry = Arc::new(Registry::new(store.clone(), keyring.clone(), &settings));
    let lifecycle = Arc::new(Lifecycle::new(
        store.clone(),
        keyring.clone(),
        registry.clone(),
        http.clone(),
        clock.clone(),
        settings.lifecycle.clone(),
        settings.provider_timeout,
        metrics.clone(),
    ));
    lifecycle
        .check_file_runtimes(&settings.runtimes)
        .await
        .map_err(|(i, m)| StartError::Config(format!("runtimes[{i}].account: {m}")))?;
    lifecycle
        .forget_stale_file_installation_tokens(&settings.runtimes)
        .await?;
    registry.load_from_config(&settings).await?;
    lifecycle
        .check_file_app_runtimes(&settings.runtimes)
        .await
        .map_err(|(i, m)| StartError::Config(format!("runtimes[{i}].github_app: {m}")))?;
    let audit = settings.audit.enabled.then(|| {
        Arc::new(crate::audit_log::AuditLog::start(
            store.clone(),
            clock.clone(),
            settings.audit,
        ))
    });
    if let Some(audit) = &audit {
        lifecycle.events().add(audit.clone());
    }
    let webhooks = Arc::new(
        crate::webhooks::Webhooks::new(
            store.clone(),
            keyring.clone(),
            clock.clone(),
            settings.webhooks.clone(),
            settings.allow_insecure_http,
        )
        .map_err(StartError::Http)?,
    );
    lifecycle.events().add(webhooks.clone());
    webhooks.spawn_worker();
    lifecycle.start().await?;
    if settings.lifecycle.background {
        lifecycle.spawn_background();
    }
    let notifier = crate::notify::Notifier::start(
        store.clone(),
        keyring.clone(),
        lifecycle.clone(),
        registry.clone(),
        clock.clone(),
        settings.notifications.clone(),
        &settings.public_url,
    )
    .map_err(StartError::Config)?;
    let signals = Arc::new(match &settings.store {
        // a connection of its own: publishing never queues behind store traffic
        StoreSettings::Redis(options) => crate::store::signal::Signals::redis(
            crate::store::redis::RedisStore::open(options).await?,
            &options.key_prefix,
        ),
        StoreSettings::Embedded { .. } => crate::store::signal::Signals::local(),
    });
    lifecycle
        .events()
        .add(Arc::new(crate::tokens::WakeOnAssign(signals.clone())));
    let waiting = Arc::new(tokio::sync::Semaphore::new(
        settings.lifecycle.wait_max_requests,
    ));
    let request_timeout = settings.server.request_timeout;
    let provider_timeout = settings.provider_timeout;
    let sessions = Arc::new(SessionStore::new(
        store.clone(),
        clock.clone(),
        settings.session_idle,
        settings.session_absolute,
    ));
    let oidc_redirect = settings
        .public_url
        .join("/auth/callback")
        .map_err(|e| StartError::Http(e.to_string()))?;
    let limits = Arc::new(crate::web::limits::RateLimits::new(
        &settings.rate_limits,
        settings.server.trusted_proxies.clone(),
        clock.clone(),
    ));
    limits.spawn_sweeper();
    let Settings {
        public_url,
        secure_cookies,
        oidc,
        flow_ttl,
        admin_group,
        admin_api_token_sha256,
        metrics: metrics_settings,
        ..
    } = settings;
    let oidc = Arc::new(Oidc::new(oidc, oidc_redirect, http.reqwest().clone()));
    let logins = Logins::new(
        keyring.clone(),
        clock.clone(),
        oidc,
        sessions.clone(),
        flow_ttl,
        secure_cookies,
    );
    let flows = Flows::new(
        store.clone(),
        registry.clone(),
        lifecycle.clone(),
        http,
        clock.clone(),
        public_url.clone(),
        flow_ttl,
        secure_cookies,
        metrics.clone(),
    );
    Ok(AppState(Arc::new(Services {
        store,
        clock,
        registry,
        lifecycle,
        notifier,
        keyring,
        sessions,
        logins,
        flows,
        secure_cookies,
        admin_group,
        admin_api_token_sha256,
        public_url,
        limits,
        signals,
        waiting,
        request_timeout,
        provider_timeout,
        audit,
        webhooks,
        metrics,
        metrics_on_main_listener: metrics_settings.enabled && metrics_settings.listen.is_none(),
    })))
}
