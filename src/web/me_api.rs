//! The signed-in user's API, for the same actions as the page: list my
//! runtimes and tokens, paste a personal access token, delete a token.
//! Session cookie; changes need the `X-CSRF-Token` header.

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath};
use super::limits::Limit;
use super::security::{csrf_ok, session_cookie_name};
use crate::auth::Session;
use crate::providers::PatInput;
use crate::tokens::TokenSource;
use crate::tokens::service::AssignError;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::routing::{get, put};
use axum::{Json, Router};
use axum_extra::extract::cookie::CookieJar;
use secrecy::SecretString;
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
    Router::new().route("/tokens", get(list)).route(
        "/runtimes/{runtime}/token",
        put(put_pat).route_layer(token_check).delete(delete),
    )
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

async fn list(State(state): State<AppState>, Me(session): Me) -> Result<Json<Value>, ApiError> {
    let mut out = Vec::new();
    let mine = state.registry.accounts_for_groups(&session.user.groups);
    for rt in state.registry.runtimes().await? {
        if !mine.iter().any(|a| a.id == rt.account) {
            continue;
        }
        let token = match state.tokens.get(&rt.id, &session.user.sub).await {
            Ok(stored) => stored.map(|(t, _)| {
                json!({
                    "provider": t.provider.as_str(),
                    "provider_login": t.provider_login,
                    "scopes": t.scopes,
                    "issued_at": t.issued_at,
                    "expires_at": t.expires_at,
                    "method": match t.source { TokenSource::OAuth { .. } => "oauth", TokenSource::Pat => "pat" },
                })
            }),
            // its encryption key was retired: say so, don't fail the list
            Err(crate::tokens::TokenError::Crypto(_)) => Some(json!({ "unreadable": true })),
            Err(e) => return Err(e.into()),
        };
        out.push(json!({ "runtime": rt.id, "account": rt.account, "git_host": rt.git_host, "token": token }));
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
    let input = PatInput {
        token: body.token,
        username: body.username.filter(|u| !u.trim().is_empty()),
        email: body.email.filter(|e| !e.trim().is_empty()),
    };
    match state
        .token_service
        .assign_pat(&session.user, &runtime, &body.also, input)
        .await
    {
        Ok(done) => Ok(Json(json!({
            "runtimes": done.runtimes,
            "provider_login": done.report.login,
            "kind": done.report.kind,
            "scopes": done.report.scopes,
            "expires_at": done.report.expires_at,
        }))),
        Err(e) => Err(assign_error(e)),
    }
}

/// Maps a refusal to the status a client can act on.
pub fn assign_error(e: AssignError) -> ApiError {
    use crate::providers::PatError;
    let msg = e.to_string();
    match e {
        AssignError::RuntimeNotFound(_) => ApiError::not_found(msg),
        AssignError::HostChange(_) => {
            ApiError::new(StatusCode::CONFLICT, "conflict", "Conflict", msg)
        }
        AssignError::DifferentHost(_) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "different-host",
            "Different provider host",
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
) -> Result<StatusCode, ApiError> {
    state
        .token_service
        .user_runtime(&session.user, &runtime)
        .await
        .map_err(assign_error)?;
    if let Some((token, _)) = state.tokens.get(&runtime, &session.user.sub).await?
        && let Err(e) = state.flows.revoke(&token).await
    {
        tracing::warn!(runtime = %runtime, error = %e, "revocation at the provider failed; deleted locally");
    }
    if state.tokens.delete(&runtime, &session.user.sub).await? {
        tracing::info!(target: "gitbroker::audit", action = "user_token.delete", runtime = %runtime, user = %session.user.sub, "user token deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "you have no token for runtime `{runtime}`"
        )))
    }
}
