//! The admin API: OAuth apps and runtimes. Callers are an admin-group
//! session (with `X-CSRF-Token` on changes) or the admin API token from the
//! configuration. Client secrets are write-only; a runtime's credential is
//! shown once, when the runtime is created.

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath};
use super::me_api::Me;
use super::runtime_api::bearer;
use super::security::session_cookie_name;
use crate::crypto;
use crate::providers::PatInput;
use crate::registry::{OAuthApp, OAuthAppInput, Runtime, RuntimeInput};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use axum_extra::extract::cookie::CookieJar;
use secrecy::ExposeSecret;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{Value, json};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/oauth-apps", get(list_apps).post(create_app))
        .route(
            "/oauth-apps/{id}",
            get(get_app).put(update_app).delete(delete_app),
        )
        .route("/runtimes", get(list_runtimes).post(create_runtime))
        .route(
            "/runtimes/{id}",
            get(get_runtime).put(update_runtime).delete(delete_runtime),
        )
        .route(
            "/runtimes/{id}/git-token",
            get(get_runtime_token).put(rotate_runtime_token),
        )
        .route(
            "/runtimes/{id}/user-tokens",
            get(list_user_tokens).delete(delete_user_tokens),
        )
        .route("/notifications", get(notifications))
        .route("/backup", get(backup))
        .route("/rotate-keys", axum::routing::post(rotate_keys))
        .route("/audit", get(super::admin_audit::query))
        .merge(super::admin_webhooks::router())
}

/// Git Runtime tokens needing attention (invalid, expired, expiring soon,
/// missing scopes, missing), and per runtime how many of its users' tokens
/// need attention — as of now.
async fn notifications(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(state.notifier.admin_overview().await?)))
}

/// Re-seals the store's sealed records under the active key, in this
/// broker (`gitbroker rotate-keys --url`): the way for an embedded store
/// while it serves. Answers the summary once done.
async fn rotate_keys(State(state): State<AppState>, admin: Admin) -> Result<Response, ApiError> {
    let report = crate::rotate::rotate(
        state.store.as_ref(),
        &state.keyring,
        &state.registry,
        &mut |_, _| {},
    )
    .await
    .map_err(|e| match e {
        crate::rotate::RotateError::Store(e) => ApiError::from(e),
        crate::rotate::RotateError::Registry(e) => ApiError::from(e),
    })?;
    tracing::info!(target: "gitbroker::audit", action = "keys.rotate", actor = %admin.who, active_key = %report.active_key, resealed = report.resealed(), left = report.left(), "sealed records re-sealed under the active key");
    Ok(Json(crate::rotate::RotateSummary::from(&report)).into_response())
}

/// A consistent copy of the embedded store, taken while serving, as a redb
/// file (`gitbroker backup` saves it). The Redis store is backed up with
/// Redis's own persistence: 409.
async fn backup(State(state): State<AppState>, admin: Admin) -> Result<Response, ApiError> {
    let Some(file) = state.store.backup().await? else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "backup-unsupported",
            "Backup not available",
            "this broker uses the Redis store; back it up with Redis's own persistence (RDB snapshots or AOF) instead",
        ));
    };
    let size = file.metadata().map(|m| m.len()).ok();
    tracing::info!(target: "gitbroker::audit", action = "store.backup", actor = %admin.who, bytes = size, "store backed up");
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(
        tokio::fs::File::from_std(file),
    ));
    let mut resp = (StatusCode::OK, body).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"gitbroker-backup.redb\""),
    );
    if let Some(size) = size {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    }
    Ok(resp)
}

/// Records an admin change as an event (audit log, webhooks).
async fn admin_event(
    state: &AppState,
    admin: &Admin,
    action: crate::events::Action,
    f: impl FnOnce(crate::events::Event) -> crate::events::Event,
) {
    let actor = crate::events::Actor::parse(&format!("admin:{}", admin.who));
    let event = crate::events::Event::new(action, actor, state.clock.now());
    state.lifecycle.events().emit(f(event)).await;
}

/// Proof that the caller is an admin.
pub struct Admin {
    pub who: String,
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(token) = bearer(&parts.headers) {
            let ok = state
                .admin_api_token_sha256
                .is_some_and(|h| crypto::ct_eq(&crate::config::sha256(token.as_bytes()), &h));
            return if ok {
                Ok(Admin {
                    who: "admin-api-token".into(),
                })
            } else {
                Err(ApiError::unauthorized("the admin API token is not valid"))
            };
        }
        let jar = CookieJar::from_headers(&parts.headers);
        if jar.get(session_cookie_name(state.secure_cookies)).is_none() {
            return Err(ApiError::unauthorized(
                "sign in as an admin or send the admin API token as a bearer token",
            ));
        }
        // the same session and CSRF-header check as the user API
        let Me(session) = Me::from_request_parts(parts, state).await?;
        let is_admin = state
            .admin_group
            .as_ref()
            .is_some_and(|g| session.user.groups.contains(g));
        if !is_admin {
            return Err(ApiError::forbidden("you are not in the admin group"));
        }
        Ok(Admin {
            who: session.user.sub,
        })
    }
}

fn app_view(state: &AppState, app: &OAuthApp) -> Value {
    let callback = state
        .flows
        .redirect_uri(&app.id)
        .map(|u| u.to_string())
        .unwrap_or_default();
    json!({
        "id": app.id,
        "name": app.name,
        "provider": app.provider.as_str(),
        "base_url": app.base_url,
        "api_url": app.api_url,
        "client_id": app.client_id,
        "client_secret_set": !app.client_secret.expose_secret().is_empty(),
        "scopes": app.scopes,
        "token_lifetime_secs": app.token_lifetime_secs,
        "callback_url": callback,
        "origin": app.origin,
    })
}

fn runtime_view(rt: &Runtime) -> Value {
    json!({
        "id": rt.id,
        "account": rt.account,
        "git_host": rt.git_host,
        "oauth_app": rt.oauth_app,
        "provider": rt.provider.map(|p| p.as_str()),
        "base_url": rt.base_url,
        "origin": rt.origin,
    })
}

/// A Git token as an admin sends it (the Git Runtime token).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitTokenBody {
    token: SecretString,
    username: Option<String>,
    email: Option<String>,
}

impl From<GitTokenBody> for PatInput {
    fn from(b: GitTokenBody) -> Self {
        PatInput::new(
            b.token.expose_secret(),
            b.username.as_deref(),
            b.email.as_deref(),
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    id: String,
    account: String,
    git_host: String,
    oauth_app: Option<String>,
    provider: Option<crate::providers::ProviderKind>,
    base_url: Option<String>,
    /// The Git Runtime token: mandatory.
    git_token: Option<GitTokenBody>,
}

async fn get_runtime_token(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let Some(rt) = state.registry.runtime(&id).await? else {
        return Err(ApiError::not_found(format!(
            "runtime `{id}` does not exist"
        )));
    };
    let status = state
        .lifecycle
        .runtime_token_status(&rt)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("runtime `{id}` has no Git Runtime token")))?;
    Ok(Json(json!(status)))
}

/// The runtime's users and the status of each one's token (no secrets).
async fn list_user_tokens(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let Some(rt) = state.registry.runtime(&id).await? else {
        return Err(ApiError::not_found(format!(
            "runtime `{id}` does not exist"
        )));
    };
    let tokens = state
        .lifecycle
        .runtime_user_tokens(&rt)
        .await
        .map_err(super::me_api::assign_error)?;
    let users: Vec<Value> = tokens
        .iter()
        .map(|(user, info)| match info {
            Some(t) => {
                let mut v = super::me_api::token_json(t);
                v["user"] = json!(user);
                v
            }
            None => json!({ "user": user, "status": { "state": "unreadable" } }),
        })
        .collect();
    Ok(Json(json!({ "runtime": rt.id, "user_tokens": users })))
}

/// Removes every user token of the runtime (it stays registered).
async fn delete_user_tokens(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let n = state
        .lifecycle
        .delete_user_tokens(&id, &admin.who)
        .await
        .map_err(super::me_api::assign_error)?;
    Ok(Json(json!({ "runtime": id, "deleted": n })))
}

async fn rotate_runtime_token(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(id): ApiPath<String>,
    ApiJson(token): ApiJson<GitTokenBody>,
) -> Result<Json<Value>, ApiError> {
    let status = state
        .lifecycle
        .rotate_runtime_token(&id, token.into(), &admin.who)
        .await
        .map_err(super::me_api::assign_error)?;
    tracing::info!(admin = %admin.who, runtime = %id, "Git Runtime token rotated");
    Ok(Json(json!(status)))
}

async fn list_apps(State(state): State<AppState>, _admin: Admin) -> Result<Json<Value>, ApiError> {
    let apps = state.registry.apps().await?;
    Ok(Json(
        json!({ "oauth_apps": apps.iter().map(|a| app_view(&state, a)).collect::<Vec<_>>() }),
    ))
}

async fn get_app(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let app = state
        .registry
        .app(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("OAuth app `{id}` does not exist")))?;
    Ok(Json(app_view(&state, &app)))
}

async fn create_app(
    State(state): State<AppState>,
    admin: Admin,
    ApiJson(input): ApiJson<OAuthAppInput>,
) -> Result<Response, ApiError> {
    let app = state.registry.create_app(input).await?;
    tracing::info!(admin = %admin.who, app = %app.id, "OAuth app created");
    admin_event(
        &state,
        &admin,
        crate::events::Action::OAuthAppCreated,
        |e| e.provider(app.provider.as_str()).outcome(&app.id),
    )
    .await;
    Ok((StatusCode::CREATED, Json(app_view(&state, &app))).into_response())
}

async fn update_app(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(id): ApiPath<String>,
    ApiJson(input): ApiJson<OAuthAppInput>,
) -> Result<Json<Value>, ApiError> {
    let app = state
        .lifecycle
        .update_app(&id, input)
        .await
        .map_err(super::me_api::assign_error)?;
    tracing::info!(admin = %admin.who, app = %app.id, "OAuth app updated");
    admin_event(
        &state,
        &admin,
        crate::events::Action::OAuthAppUpdated,
        |e| e.provider(app.provider.as_str()).outcome(&app.id),
    )
    .await;
    Ok(Json(app_view(&state, &app)))
}

async fn delete_app(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    state.registry.delete_app(&id).await?;
    tracing::info!(admin = %admin.who, app = %id, "OAuth app deleted");
    admin_event(
        &state,
        &admin,
        crate::events::Action::OAuthAppDeleted,
        |e| e.outcome(&id),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_runtimes(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<Value>, ApiError> {
    let mut out = Vec::new();
    for rt in state.registry.runtimes().await? {
        let mut view = runtime_view(&rt);
        // admins see which runtimes still need their Git Runtime token
        view["git_token"] = json!(state.lifecycle.runtime_token_status(&rt).await?);
        view["user_tokens"] = json!(state.lifecycle.user_token_count(&rt).await?);
        out.push(view);
    }
    Ok(Json(json!({ "runtimes": out })))
}

async fn get_runtime(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let rt = state
        .registry
        .runtime(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("runtime `{id}` does not exist")))?;
    let mut view = runtime_view(&rt);
    view["git_token"] = json!(state.lifecycle.runtime_token_status(&rt).await?);
    view["user_tokens"] = json!(state.lifecycle.user_token_count(&rt).await?);
    Ok(Json(view))
}

async fn create_runtime(
    State(state): State<AppState>,
    admin: Admin,
    ApiJson(b): ApiJson<RegisterBody>,
) -> Result<Response, ApiError> {
    let token = b.git_token.ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "Invalid input",
            "git_token: the Git Runtime token is mandatory when registering a runtime: {\"token\": …} (Bitbucket also \"username\")",
        )
    })?;
    let input = RuntimeInput {
        id: b.id,
        account: b.account,
        git_host: b.git_host,
        oauth_app: b.oauth_app,
        provider: b.provider,
        base_url: b.base_url,
    };
    let (rt, credential, status) = state
        .lifecycle
        .register_runtime(input, token.into(), &admin.who)
        .await
        .map_err(super::me_api::assign_error)?;
    tracing::info!(admin = %admin.who, runtime = %rt.id, "runtime created");
    let mut view = runtime_view(&rt);
    view["git_token"] = json!(status);
    view["credential"] = Value::String(credential.expose_secret().to_owned());
    let mut resp = (StatusCode::CREATED, Json(view)).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

async fn update_runtime(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(id): ApiPath<String>,
    ApiJson(input): ApiJson<RuntimeInput>,
) -> Result<Json<Value>, ApiError> {
    let rt = state
        .lifecycle
        .update_runtime(&id, input)
        .await
        .map_err(super::me_api::assign_error)?;
    tracing::info!(admin = %admin.who, runtime = %rt.id, "runtime updated");
    admin_event(&state, &admin, crate::events::Action::RuntimeUpdated, |e| {
        let e = e.runtime(&rt.id);
        match rt.provider {
            Some(p) => e.provider(p.as_str()),
            None => e,
        }
    })
    .await;
    Ok(Json(runtime_view(&rt)))
}

async fn delete_runtime(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    state
        .lifecycle
        .delete_runtime(&id, &admin.who)
        .await
        .map_err(super::me_api::assign_error)?;
    tracing::info!(admin = %admin.who, runtime = %id, "runtime and its user tokens deleted");
    Ok(StatusCode::NO_CONTENT)
}
