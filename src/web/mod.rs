//! The HTTP edge: thin axum handlers over the domain services, the pages,
//! the runtime and admin APIs, health checks, security headers and request
//! logging that never prints a query string.

mod admin_api;
mod admin_audit;
mod admin_webhooks;
mod error;
pub mod extract;
pub mod limits;
mod me_api;
pub mod openapi;
mod pages;
mod runtime_api;
mod security;
mod serve;
pub mod trace;

pub use error::{ApiError, PageError};
pub use security::safe_return_path;
pub use serve::serve;

use crate::auth::SessionStore;
use crate::auth::login::Logins;
use crate::clock::Clock;
use crate::oauth::Flows;
use crate::registry::Registry;
use crate::store::Store;
use crate::tokens::Lifecycle;
use axum::Router;
use axum::routing::{get, post};
use std::sync::Arc;
use tower_http::trace::TraceLayer;

/// Everything a handler may need. Cheap to clone.
#[derive(Clone)]
pub struct AppState(pub Arc<Services>);

pub struct Services {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub registry: Arc<Registry>,
    pub lifecycle: Arc<Lifecycle>,
    pub notifier: Arc<crate::notify::Notifier>,
    /// Wake-ups across replicas (runtimes waiting for a user's token).
    pub signals: Arc<crate::store::signal::Signals>,
    /// Permits for runtime requests waiting at once (`?wait=`).
    pub waiting: Arc<tokio::sync::Semaphore>,
    /// The keys, for `POST /api/v1/admin/rotate-keys`.
    pub keyring: Arc<crate::crypto::Keyring>,
    pub sessions: Arc<SessionStore>,
    pub logins: Logins,
    pub flows: Flows,
    pub secure_cookies: bool,
    pub admin_group: Option<String>,
    pub admin_api_token_sha256: Option<[u8; 32]>,
    pub public_url: url::Url,
    /// Rate limits: per client address on the routes (see [`router`]),
    /// per user through [`limits::RateLimits::check_user`] in handlers.
    pub limits: Arc<limits::RateLimits>,
    pub request_timeout: std::time::Duration,
    pub provider_timeout: std::time::Duration,
    /// The audit log writer (`None` with `[audit] enabled = false`).
    pub audit: Option<Arc<crate::audit_log::AuditLog>>,
    /// Webhook endpoints, outbox and this replica's delivery worker.
    pub webhooks: Arc<crate::webhooks::Webhooks>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// `GET /metrics` on the main listener (else on `[metrics] listen`,
    /// or nowhere when metrics are off).
    pub metrics_on_main_listener: bool,
}

impl Services {
    /// The longest a runtime's `?wait=` holds its request: the configured
    /// maximum, kept within the request timeout with room for one serve
    /// (which may refresh the token at the provider).
    pub fn wait_max(&self) -> std::time::Duration {
        let room = self
            .request_timeout
            .saturating_sub(self.provider_timeout + std::time::Duration::from_secs(1));
        self.lifecycle.settings().wait_max.min(room)
    }

    pub fn waiting_limit(&self) -> usize {
        self.lifecycle.settings().wait_max_requests
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.0
    }
}

pub fn router(state: AppState) -> Router {
    use limits::Limit;
    let per_ip =
        |limit: Limit| axum::middleware::from_fn_with_state((state.clone(), limit), limits::per_ip);
    let mut router = Router::new();
    if state.metrics_on_main_listener {
        router = router.route(
            "/metrics",
            get(crate::metrics::scrape).with_state(state.metrics.clone()),
        );
    }
    router
        .route("/", get(pages::home))
        .route(
            "/login",
            get(pages::login).route_layer(per_ip(Limit::SignIn)),
        )
        .route("/auth/callback", get(pages::login_callback))
        .route("/logout", post(pages::logout))
        .route("/signed-out", get(pages::signed_out))
        .route("/tokens", get(pages::tokens_page))
        .route(
            "/tokens/{runtime}/authorize",
            post(pages::authorize).route_layer(per_ip(Limit::FlowStart)),
        )
        .route("/tokens/{runtime}/delete", post(pages::delete_token))
        .route(
            "/tokens/pat",
            post(pages::add_pat_several).route_layer(per_ip(Limit::TokenCheck)),
        )
        .route(
            "/tokens/{runtime}/pat",
            post(pages::add_pat).route_layer(per_ip(Limit::TokenCheck)),
        )
        .route("/tokens/{runtime}/reuse", post(pages::reuse_grant))
        .route(
            "/tokens/{runtime}/notifications",
            post(pages::runtime_notifications),
        )
        .route("/notifications", post(pages::all_notifications))
        .route("/oauth/callback/{app}", get(pages::oauth_callback))
        .route("/assets/style.css", get(pages::stylesheet))
        .route(
            "/api/v1/runtimes/{runtime}/users/{user}/token",
            get(runtime_api::user_token),
        )
        .route(
            "/api/v1/runtimes/{runtime}/token",
            get(runtime_api::runtime_token),
        )
        .nest("/api/v1/me", me_api::router(per_ip(Limit::TokenCheck)))
        .nest("/api/v1/admin", admin_api::router())
        .route("/openapi.json", get(openapi::serve))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(security::headers))
        .layer(
            TraceLayer::new_for_http()
                // path only: query strings carry codes and states
                .make_span_with(trace::span)
                .on_response(trace::Finished),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            trace::context,
        ))
        .with_state(state)
}

/// No such route: problem+json under `/api/`, the HTML page elsewhere.
async fn fallback(uri: axum::http::Uri) -> axum::response::Response {
    use axum::response::IntoResponse;
    if serve::is_api(uri.path()) {
        ApiError::not_found("there is no API route at this path").into_response()
    } else {
        pages::not_found().await.into_response()
    }
}

/// A route that exists, with another method.
async fn method_not_allowed(uri: axum::http::Uri) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    if serve::is_api(uri.path()) {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            "this API route does not take that method",
        )
        .into_response()
    } else {
        PageError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "Not allowed",
            "This page cannot be used that way.",
        )
        .into_response()
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Result<&'static str, ApiError> {
    state.store.ping().await.map_err(ApiError::from)?;
    Ok("ready\n")
}
