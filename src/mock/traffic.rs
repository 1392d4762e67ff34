//! What every flavour's API shares, around its handlers: a middleware
//! ([`layer`]) that counts the token each request presents, keeps the
//! in-flight gauge and applies the `api_delay_ms` switch.

use super::Shared;
use super::oauth::presented_token;
use super::pats::Flavour;
use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;

/// `router`'s routes as API routes of `flavour`. Only the matched routes
/// are wrapped (`route_layer`), so unknown paths are not API requests.
pub(crate) fn layer(
    router: Router<Arc<Shared>>,
    s: &Arc<Shared>,
    flavour: Flavour,
) -> Router<Arc<Shared>> {
    router.route_layer(axum::middleware::from_fn_with_state(
        (s.clone(), flavour),
        api,
    ))
}

async fn api(
    State((s, flavour)): State<(Arc<Shared>, Flavour)>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(token) = presented_token(flavour, req.headers()) {
        s.counters.api_call(&token);
    }
    let _in_flight = s.counters.enter_api();
    s.switches.api_delay_wait().await;
    next.run(req).await
}
