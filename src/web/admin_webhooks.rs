//! Webhook endpoints and their deliveries in the admin API. Signing
//! secrets are write-only: a generated one is shown once, in the answer
//! that created it.

use super::AppState;
use super::admin_api::Admin;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use crate::config::WebhookFields;
use crate::webhooks::{Delivery, DeliveryState, Endpoint, WebhookError};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/webhooks", get(list).post(create))
        .route("/webhooks/{id}", delete(remove))
        .route("/webhook-deliveries", get(deliveries))
        .route("/webhook-deliveries/{id}/replay", post(replay))
}

fn view(e: &Endpoint) -> Value {
    let s = &e.settings;
    json!({
        "id": s.id,
        "url": s.url.as_str(),
        "events": s.events.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
        "max_attempts": s.max_attempts,
        "timeout_secs": s.timeout.as_secs(),
        "backoff_initial_ms": s.backoff_initial.as_millis() as u64,
        "backoff_max_secs": s.backoff_max.as_secs(),
        "secrets": s.secrets.len(),
        "origin": e.origin,
    })
}

fn delivery_view(d: &Delivery) -> Value {
    json!({
        "id": d.id,
        "endpoint": d.endpoint,
        "webhook_id": d.message_id,
        "type": d.action.as_str(),
        "state": d.state,
        "attempts": d.attempts,
        "last_error": d.last_error,
        "last_status": d.last_status,
        "created_at": d.created_at,
        "next_attempt_at": d.next_attempt_at,
        "finished_at": d.finished_at,
    })
}

fn webhook_error(e: WebhookError) -> ApiError {
    match e {
        WebhookError::Store(e) => e.into(),
        WebhookError::Invalid(m) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "Invalid input",
            m,
        ),
        e @ WebhookError::NotFound(_) => ApiError::not_found(e.to_string()),
        WebhookError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", "Conflict", m),
    }
}

#[utoipa::path(get, path = "/api/v1/admin/webhooks", tag = "admin",
    security(("admin_token" = []), ("session" = [])),
    responses(
        (status = 200, description = "Webhook endpoints from the file and the API (never their secrets): `{\"webhooks\": [...]}`", body = Object),
        (status = 401, description = "No or wrong admin credentials", body = ApiError, content_type = "application/problem+json"),
        (status = 403, description = "A session outside the admin group, or without X-CSRF-Token on a change", body = ApiError, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = ApiError, content_type = "application/problem+json"),
    ))]
pub(super) async fn list(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<Value>, ApiError> {
    let endpoints = state.webhooks.endpoints().await?;
    Ok(Json(
        json!({ "webhooks": endpoints.iter().map(view).collect::<Vec<_>>() }),
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    id: String,
    url: String,
    #[serde(default)]
    events: Vec<String>,
    max_attempts: Option<u64>,
    timeout_secs: Option<u64>,
    backoff_initial_ms: Option<u64>,
    backoff_max_secs: Option<u64>,
    /// `whsec_…`; omitted: one is generated and returned once.
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    secrets: Vec<SecretString>,
}

#[utoipa::path(post, path = "/api/v1/admin/webhooks", tag = "admin",
    security(("admin_token" = []), ("session" = [])),
    request_body = CreateBody,
    responses(
        (status = 201, description = "Created; a generated secret is returned once", body = Object),
        (status = 400, description = "Malformed request", body = ApiError, content_type = "application/problem+json"),
        (status = 409, description = "An endpoint with this id exists", body = ApiError, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field (named)", body = ApiError, content_type = "application/problem+json"),
        (status = 401, description = "No or wrong admin credentials", body = ApiError, content_type = "application/problem+json"),
        (status = 403, description = "A session outside the admin group, or without X-CSRF-Token on a change", body = ApiError, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = ApiError, content_type = "application/problem+json"),
    ))]
pub(super) async fn create(
    State(state): State<AppState>,
    admin: Admin,
    ApiJson(b): ApiJson<CreateBody>,
) -> Result<Response, ApiError> {
    let defaults: WebhookFields = serde_json::from_value(json!({ "id": "", "url": "" }))
        .map_err(|_| ApiError::bad_request("defaults"))?;
    let fields = WebhookFields {
        id: b.id,
        url: b.url,
        events: b.events,
        max_attempts: b.max_attempts.unwrap_or(defaults.max_attempts),
        timeout_secs: b.timeout_secs.unwrap_or(defaults.timeout_secs),
        backoff_initial_ms: b.backoff_initial_ms.unwrap_or(defaults.backoff_initial_ms),
        backoff_max_secs: b.backoff_max_secs.unwrap_or(defaults.backoff_max_secs),
    };
    let secrets = b
        .secrets
        .iter()
        .map(|s| s.expose_secret().to_owned())
        .collect();
    let (endpoint, generated) = state
        .webhooks
        .create(fields, secrets)
        .await
        .map_err(webhook_error)?;
    tracing::info!(admin = %admin.who, webhook = %endpoint.settings.id, "webhook endpoint created");
    let mut v = view(&endpoint);
    if let Some(secret) = generated {
        v["secret"] = Value::String(secret);
    }
    let mut resp = (StatusCode::CREATED, Json(v)).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

#[utoipa::path(delete, path = "/api/v1/admin/webhooks/{id}", tag = "admin",
    security(("admin_token" = []), ("session" = [])),
    params(("id" = String, Path, description = "Endpoint id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Malformed request", body = ApiError, content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint", body = ApiError, content_type = "application/problem+json"),
        (status = 409, description = "Configured in the file: not deletable here", body = ApiError, content_type = "application/problem+json"),
        (status = 401, description = "No or wrong admin credentials", body = ApiError, content_type = "application/problem+json"),
        (status = 403, description = "A session outside the admin group, or without X-CSRF-Token on a change", body = ApiError, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = ApiError, content_type = "application/problem+json"),
    ))]
pub(super) async fn remove(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    state.webhooks.delete(&id).await.map_err(webhook_error)?;
    tracing::info!(admin = %admin.who, webhook = %id, "webhook endpoint deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    state: Option<String>,
    endpoint: Option<String>,
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/v1/admin/webhook-deliveries", tag = "admin",
    security(("admin_token" = []), ("session" = [])),
    params(DeliveryQuery),
    responses(
        (status = 200, description = "Deliveries with state, attempts, last error and next attempt: `{\"deliveries\": [...]}`", body = Object),
        (status = 400, description = "Malformed request", body = ApiError, content_type = "application/problem+json"),
        (status = 401, description = "No or wrong admin credentials", body = ApiError, content_type = "application/problem+json"),
        (status = 403, description = "A session outside the admin group, or without X-CSRF-Token on a change", body = ApiError, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = ApiError, content_type = "application/problem+json"),
    ))]
pub(super) async fn deliveries(
    State(state): State<AppState>,
    _admin: Admin,
    ApiQuery(q): ApiQuery<DeliveryQuery>,
) -> Result<Json<Value>, ApiError> {
    let wanted = q
        .state
        .as_deref()
        .map(|s| {
            DeliveryState::parse(s)
                .ok_or_else(|| ApiError::bad_request("state: must be pending, delivered or failed"))
        })
        .transpose()?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(
            "limit: must be a number from 1 to 1000",
        ));
    }
    let all = state.webhooks.deliveries().await?;
    let shown: Vec<Value> = all
        .iter()
        .filter(|d| wanted.is_none_or(|w| d.state == w))
        .filter(|d| q.endpoint.as_ref().is_none_or(|e| *e == d.endpoint))
        .take(limit)
        .map(delivery_view)
        .collect();
    Ok(Json(json!({ "deliveries": shown })))
}

#[utoipa::path(post, path = "/api/v1/admin/webhook-deliveries/{id}/replay", tag = "admin",
    security(("admin_token" = []), ("session" = [])),
    params(("id" = String, Path, description = "Delivery id")),
    responses(
        (status = 202, description = "Queued again", body = Object),
        (status = 400, description = "Malformed request", body = ApiError, content_type = "application/problem+json"),
        (status = 404, description = "No such delivery", body = ApiError, content_type = "application/problem+json"),
        (status = 401, description = "No or wrong admin credentials", body = ApiError, content_type = "application/problem+json"),
        (status = 403, description = "A session outside the admin group, or without X-CSRF-Token on a change", body = ApiError, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = ApiError, content_type = "application/problem+json"),
    ))]
pub(super) async fn replay(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let d = state.webhooks.replay(&id).await.map_err(|e| match e {
        WebhookError::NotFound(id) => {
            ApiError::not_found(format!("delivery `{id}` does not exist"))
        }
        e => webhook_error(e),
    })?;
    tracing::info!(admin = %admin.who, delivery = %id, "webhook delivery replayed");
    Ok((StatusCode::ACCEPTED, Json(delivery_view(&d))).into_response())
}
