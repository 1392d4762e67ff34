//! The runtime API: a runtime, authenticated by its own credential, reads
//! the Git user token of one of its users. Never the refresh token; never
//! another runtime's tokens (those answer 404, as if absent).

use super::AppState;
use super::error::ApiError;
use super::extract::ApiPath;
use crate::providers;
use crate::registry::Runtime;
use crate::tokens::TokenSource;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;

/// The bearer credential of the `Authorization` header, if well formed.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= 512)
        .then_some(token.trim())
}

/// The runtime whose credential came as the bearer token; 401 otherwise.
pub struct RuntimeCaller(pub Runtime);

impl FromRequestParts<AppState> for RuntimeCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let credential = bearer(&parts.headers).ok_or_else(|| {
            ApiError::unauthorized(
                "send the runtime credential as `Authorization: Bearer <credential>`",
            )
        })?;
        state
            .registry
            .runtime_for_credential(credential)
            .await?
            .map(RuntimeCaller)
            .ok_or_else(|| ApiError::unauthorized("the runtime credential is not valid"))
    }
}

pub async fn user_token(
    State(state): State<AppState>,
    ApiPath((runtime, user)): ApiPath<(String, String)>,
    RuntimeCaller(caller): RuntimeCaller,
) -> Result<Response, ApiError> {
    let absent = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no-user-token",
            "No Git user token",
            format!(
                "user `{user}` has no Git user token for runtime `{runtime}`; the user must authorize access on the Git Personal Access Token page"
            ),
        )
    };
    if caller.id != runtime {
        tracing::warn!(caller = %caller.id, requested = %runtime, "runtime asked for another runtime's token");
        return Err(absent());
    }
    let token = match state.tokens.get(&runtime, &user).await {
        Ok(Some((token, _))) => token,
        Ok(None) => return Err(absent()),
        Err(crate::tokens::TokenError::Crypto(e)) => {
            tracing::error!(runtime = %runtime, user = %user, error = %e, "stored user token does not open");
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "user-token-unreadable",
                "Git user token unreadable",
                format!(
                    "the Git user token of `{user}` for runtime `{runtime}` can no longer be decrypted (its key was retired); the user must authorize access again"
                ),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let now = state.clock.now();
    if token.is_expired(now) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "user-token-expired",
            "Git user token expired",
            format!(
                "the Git user token of `{user}` for runtime `{runtime}` has expired; the user must authorize access again"
            ),
        ));
    }
    if let TokenSource::OAuth { app } = &token.source
        && let Some(app) = state.registry.app(app).await?
    {
        {
            let missing = providers::missing_scopes(
                providers::provider(app.provider),
                &token.scopes,
                &app.scopes,
            );
            if !missing.is_empty() {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "user-token-reauthorize",
                    "Git user token needs re-authorization",
                    format!(
                        "the OAuth app now requires scopes the token lacks ({}); the user must authorize access again",
                        missing.join(", ")
                    ),
                ));
            }
        }
    }
    tracing::info!(target: "gitbroker::audit", action = "user_token.read", runtime = %runtime, user = %user, "user token served to its runtime");
    let body = serde_json::json!({
        "token": token.access_token.expose_secret(),
        "username": token.git_username,
        "provider": token.provider.as_str(),
        "scopes": token.scopes,
        "expires_at": token.expires_at,
    });
    let mut resp = axum::Json(body).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

/// `GET /api/v1/runtimes/{runtime}/token`: the runtime's own Git Runtime
/// token. A process-level action, audited as such.
pub async fn runtime_token(
    State(state): State<AppState>,
    ApiPath(runtime): ApiPath<String>,
    RuntimeCaller(caller): RuntimeCaller,
) -> Result<Response, ApiError> {
    let absent = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no-runtime-token",
            "No Git Runtime token",
            format!("runtime `{runtime}` has no Git Runtime token; an admin must register one"),
        )
    };
    if caller.id != runtime {
        tracing::warn!(caller = %caller.id, requested = %runtime, "runtime asked for another runtime's runtime token");
        return Err(absent());
    }
    let Some((status, token)) = state.runtime_tokens.get(&runtime).await? else {
        return Err(absent());
    };
    if status.expires_at.is_some_and(|e| state.clock.now() >= e) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "runtime-token-expired",
            "Git Runtime token expired",
            format!("the Git Runtime token of `{runtime}` has expired; an admin must rotate it"),
        ));
    }
    tracing::info!(target: "gitbroker::audit", action = "runtime_token.read", runtime = %runtime, actor = %format!("runtime:{runtime}"), "runtime token served to its runtime");
    let body = serde_json::json!({
        "token": token.expose_secret(),
        "username": status.git_username,
        "provider": status.provider.as_str(),
        "scopes": status.scopes,
        "expires_at": status.expires_at,
    });
    let mut resp = axum::Json(body).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}
