//! The signed-in user's API, for the same actions as the page: list my
//! runtimes and tokens (with their statuses), paste a personal access
//! token, use an existing authorization for another runtime, delete a token.
//! Session cookie; changes need the `X-CSRF-Token` header.

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath};
use super::limits::Limit;
use super::security::{csrf_ok, session_cookie_name};
use crate::auth::Session;
use crate::providers::PatInput;
use crate::tokens::{AssignError, Released, TokenInfo, TokenSlot};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use axum_extra::extract::cookie::CookieJar;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

/// `token_check` limits the pasted-token route per client address.
pub fn router<L>(token_check: L) -> Router<AppState>
where
    L: tower::Layer<axum::routing::Route> + Clone + Send + Sync + 'static,
    L::Service: tower::Service<axum::extract::Request, Error = std::convert::Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    <L::Service as tower::Service<axum::extract::Request>>::Response:
        axum::response::IntoResponse + 'static,
    <L::Service as tower::Service<axum::extract::Request>>::Future: Send + 'static,
{
    Router::new()
        .route("/tokens", get(list))
        .route(
            "/runtimes/{runtime}/token",
            put(put_pat).route_layer(token_check).delete(delete),
        )
        .route("/runtimes/{runtime}/token/reuse", post(reuse))
        .route("/notifications", get(notifications).put(set_notifications))
        .route(
            "/runtimes/{runtime}/notifications",
            put(set_runtime_notifications),
        )
}

/// What needs attention now, the recent notifications, and the settings.
async fn notifications(
    State(state): State<AppState>,
    Me(session): Me,
) -> Result<Json<Value>, ApiError> {
    let o = state.notifier.overview(&session.user).await?;
    Ok(Json(json!(o)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnabledBody {
    enabled: bool,
}

/// Turns all of the user's notifications on or off.
async fn set_notifications(
    State(state): State<AppState>,
    Me(session): Me,
    ApiJson(body): ApiJson<EnabledBody>,
) -> Result<Json<Value>, ApiError> {
    let prefs = state
        .notifier
        .set_enabled(&session.user, body.enabled)
        .await?;
    Ok(Json(json!({
        "enabled": prefs.enabled.unwrap_or(body.enabled),
        "hidden": prefs.hidden,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HiddenBody {
    hidden: bool,
}

/// Hides or shows one runtime's notifications (its status stays visible).
async fn set_runtime_notifications(
    State(state): State<AppState>,
    Me(session): Me,
    ApiPath(runtime): ApiPath<String>,
    ApiJson(body): ApiJson<HiddenBody>,
) -> Result<Json<Value>, ApiError> {
    let prefs = state
        .notifier
        .set_hidden(&session.user, &runtime, body.hidden)
        .await?;
    Ok(Json(json!({
        "runtime": runtime,
        "hidden": prefs.hidden.contains(&runtime),
    })))
}

/// The signed-in user of a session cookie; changes (any method but GET)
/// also need the session's CSRF token in `X-CSRF-Token`.
pub struct Me(pub Session);

impl FromRequestParts<AppState> for Me {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let jar = CookieJar::from_headers(&parts.headers);
        let cookie = jar
            .get(session_cookie_name(state.secure_cookies))
            .ok_or_else(|| ApiError::unauthorized("sign in first"))?;
        let session = state
            .sessions
            .load(cookie.value())
            .await?
            .ok_or_else(|| ApiError::unauthorized("the session has expired; sign in again"))?;
        if parts.method != Method::GET {
            let given = parts
                .headers
                .get("x-csrf-token")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !csrf_ok(&session.csrf, given) {
                return Err(ApiError::forbidden(
                    "changes through a session need the X-CSRF-Token header",
                ));
            }
        }
        Ok(Me(session))
    }
}

/// A token as the user and admin APIs show it (never its value).
pub fn token_json(t: &TokenInfo) -> Value {
    json!({
        "grant": t.grant_id,
        "provider": t.provider.as_str(),
        "provider_login": t.login,
        "scopes": t.scopes,
        "issued_at": t.issued_at,
        "authorized_at": t.authorized_at,
        "expires_at": t.expires_at,
        "authorization_expires_at": t.usable_until,
        "last_refreshed_at": t.last_refreshed_at,
        "refreshed_automatically": t.refreshable,
        "method": t.source.method(),
        "status": {
            "state": t.status.state.as_str(),
            "since": t.status.since,
            "checked_at": t.status.checked_at,
            "reason": t.status.reason,
        },
        "shared_with": t.shared_with,
    })
}

async fn list(State(state): State<AppState>, Me(session): Me) -> Result<Json<Value>, ApiError> {
    let mut out = Vec::new();
    for (account, runtimes) in state
        .lifecycle
        .user_runtimes(&session.user)
        .await
        .map_err(assign_error)?
    {
        for r in runtimes {
            let token = match &r.token {
                TokenSlot::None => Value::Null,
                // its encryption key was retired: say so, don't fail the list
                TokenSlot::Unreadable => {
                    json!({ "unreadable": true, "status": { "state": "unreadable" } })
                }
                TokenSlot::Present(t) => token_json(t),
            };
            let reusable: Vec<Value> = r
                .reusable
                .iter()
                .map(|g| json!({ "grant": g.grant_id, "provider_login": g.login, "used_by": g.used_by }))
                .collect();
            out.push(json!({
                "runtime": r.runtime.id,
                "account": account.id,
                "git_host": r.runtime.git_host,
                "token": token,
                "reusable_authorizations": reusable,
                "token_cap_warning": r.cap_warning,
            }));
        }
    }
    Ok(Json(json!({ "user": session.user.sub, "runtimes": out })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatBody {
    token: SecretString,
    username: Option<String>,
    email: Option<String>,
    #[serde(default)]
    also: Vec<String>,
}

async fn put_pat(
    State(state): State<AppState>,
    Me(session): Me,
    ApiPath(runtime): ApiPath<String>,
    ApiJson(body): ApiJson<PatBody>,
) -> Result<Json<Value>, ApiError> {
    state
        .limits
        .check_user(Limit::TokenCheck, &session.user.sub)?;
    let input = PatInput::new(
        body.token.expose_secret(),
        body.username.as_deref(),
        body.email.as_deref(),
    );
    match state
        .lifecycle
        .assign_pat(&session.user, &runtime, &body.also, input)
        .await
    {
        Ok(done) => {
            let report = done.report.as_ref();
            Ok(Json(json!({
                "runtimes": done.runtimes,
                "skipped": done.skipped,
                "provider_login": done.login,
                "kind": report.map(|r| r.kind.clone()),
                "scopes": report.map(|r| r.scopes.clone()),
                "expires_at": report.and_then(|r| r.expires_at),
            })))
        }
        Err(e) => Err(assign_error(e)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReuseBody {
    /// The grant to use, from `reusable_authorizations` of the list.
    grant: String,
}

/// "Use my existing authorization": assigns one of the user's grants from
/// the runtime's OAuth app to this runtime, without a new provider token.
async fn reuse(
    State(state): State<AppState>,
    Me(session): Me,
    ApiPath(runtime): ApiPath<String>,
    ApiJson(body): ApiJson<ReuseBody>,
) -> Result<Json<Value>, ApiError> {
    let done = state
        .lifecycle
        .reuse_grant(&session.user, &runtime, &body.grant)
        .await
        .map_err(assign_error)?;
    Ok(Json(json!({
        "runtimes": done.runtimes,
        "grant": body.grant,
        "provider_login": done.login,
    })))
}

/// Maps a refusal to the status a client can act on.
pub fn assign_error(e: AssignError) -> ApiError {
    use crate::providers::PatError;
    let msg = e.to_string();
    match e {
        AssignError::RuntimeNotFound(_) => ApiError::not_found(msg),
        AssignError::Conflict(_) | AssignError::RuntimeChanged { .. } => {
            ApiError::new(StatusCode::CONFLICT, "conflict", "Conflict", msg)
        }
        AssignError::DifferentHost(_) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "different-host",
            "Different provider host",
            msg,
        ),
        AssignError::NoOAuthApp(_) | AssignError::GrantUnusable(_) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "grant-unusable",
            "Authorization cannot be used",
            msg,
        ),
        AssignError::Pat(PatError::Unavailable { .. }) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "provider-unavailable",
            "Provider unavailable",
            msg,
        ),
        AssignError::Pat(PatError::BadInput(_)) => ApiError::bad_request(msg),
        AssignError::Pat(_) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "token-refused",
            "Token refused",
            msg,
        ),
        AssignError::Registry(r) => r.into(),
        AssignError::Token(t) => t.into(),
    }
}

async fn delete(
    State(state): State<AppState>,
    Me(session): Me,
    ApiPath(runtime): ApiPath<String>,
) -> Result<Response, ApiError> {
    match state
        .lifecycle
        .unassign(&session.user, &runtime)
        .await
        .map_err(assign_error)?
    {
        Some(released) => {
            let body = match released {
                Released::StillUsed { runtimes } => json!({
                    "deleted": true,
                    "revocation": "not_revoked",
                    "still_used_by": runtimes,
                }),
                Released::Deleted(report) => json!({
                    "deleted": true,
                    "revocation": report.as_str(),
                    "detail": report.describe(),
                }),
                Released::Missing => json!({ "deleted": true, "revocation": "not_revoked" }),
            };
            Ok(Json(body).into_response())
        }
        None => Err(ApiError::not_found(format!(
            "you have no token for runtime `{runtime}`"
        ))),
    }
}
