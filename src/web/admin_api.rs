//! The admin API: OAuth apps and runtimes. Callers are an admin-group
//! session (with `X-CSRF-Token` on changes) or the admin API token from the
//! configuration. Client secrets are write-only; a runtime's credential is
//! shown once, when the runtime is created.

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath};
use super::me_api::{Me, StateOnly, TokenView, UnreadableToken};
use super::runtime_api::bearer;
use super::security::session_cookie_name;
use crate::crypto;
use crate::providers::PatInput;
use crate::providers::ProviderKind;
use crate::registry::{OAuthApp, OAuthAppInput, Origin, Runtime, RuntimeInput};
use crate::tokens::{RuntimeTokenStatus, State as TokenState};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use axum_extra::extract::cookie::CookieJar;
use secrecy::ExposeSecret;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use url::Url;
use utoipa::ToSchema;

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
#[utoipa::path(get, path = "/api/v1/admin/notifications", tag = "admin",
    security(("admin_token" = []), ("session" = [])),
    responses(
        (status = 200, description = "Git Runtime tokens needing attention; per runtime, users' tokens needing attention", body = crate::notify::AdminOverview),
        (status = 401, description = "Not an admin", body = ApiError, content_type = "application/problem+json"),
        (status = 403, description = "Signed in, but not in the admin group", body = ApiError, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = ApiError, content_type = "application/problem+json"),
    ))]
pub(super) async fn notifications(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<crate::notify::AdminOverview>, ApiError> {
    Ok(Json(state.notifier.admin_overview().await?))
}

/// Re-seals the store's sealed records under the active key, in this
/// broker (`gitbroker rotate-keys --url`): the way for an embedded store
/// while it serves. Answers the summary once done.
#[utoipa::path(post, path = "/api/v1/admin/rotate-keys", tag = "admin",
    security(("admin_token" = []), ("session" = [])),
    responses(
        (status = 200, description = "Every sealed record re-sealed under the active key; the summary per record kind", body = Object),
        (status = 401, description = "No or wrong admin credentials", body = ApiError, content_type = "application/problem+json"),
        (status = 403, description = "A session outside the admin group, or without X-CSRF-Token on a change", body = ApiError, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = ApiError, content_type = "application/problem+json"),
    ))]
pub(super) async fn rotate_keys(
    State(state): State<AppState>,
    admin: Admin,
) -> Result<Response, ApiError> {
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
#[utoipa::path(get, path = "/api/v1/admin/backup", tag = "admin",
    security(("admin_token" = []), ("session" = [])),
    responses(
        (status = 200, description = "A consistent copy of the embedded store (a redb file)", content_type = "application/octet-stream"),
        (status = 409, description = "The Redis store: back it up with Redis's own persistence", body = ApiError, content_type = "application/problem+json"),
        (status = 401, description = "No or wrong admin credentials", body = ApiError, content_type = "application/problem+json"),
        (status = 403, description = "A session outside the admin group, or without X-CSRF-Token on a change", body = ApiError, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = ApiError, content_type = "application/problem+json"),
    ))]
pub(super) async fn backup(
    State(state): State<AppState>,
    admin: Admin,
) -> Result<Response, ApiError> {
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

/// An OAuth app as admins see it: the client secret is write-only.
#[derive(Serialize, ToSchema)]
pub struct OAuthAppView {
    pub id: String,
    pub name: String,
    pub provider: ProviderKind,
    #[schema(value_type = Option<String>)]
    pub base_url: Option<Url>,
    #[schema(value_type = Option<String>)]
    pub api_url: Option<Url>,
    pub client_id: String,
    pub client_secret_set: bool,
    pub kind: crate::providers::AppKind,
    /// GitHub App: the name in its page URL.
    pub app_slug: Option<String>,
    pub scopes: Vec<String>,
    pub token_lifetime_secs: Option<u64>,
    /// The redirect URI to register at the provider.
    pub callback_url: String,
    pub origin: Origin,
}

#[derive(Serialize, ToSchema)]
pub struct OAuthAppList {
    pub oauth_apps: Vec<OAuthAppView>,
}

fn app_view(state: &AppState, app: &OAuthApp) -> OAuthAppView {
    let callback = state
        .flows
        .redirect_uri(&app.id)
        .map(|u| u.to_string())
        .unwrap_or_default();
    OAuthAppView {
        id: app.id.clone(),
        name: app.name.clone(),
        provider: app.provider,
        base_url: app.base_url.clone(),
        api_url: app.api_url.clone(),
        client_id: app.client_id.clone(),
        client_secret_set: !app.client_secret.expose_secret().is_empty(),
        kind: app.kind,
        app_slug: app.app_slug.clone(),
        scopes: app.scopes.clone(),
        token_lifetime_secs: app.token_lifetime_secs,
        callback_url: callback,
        origin: app.origin,
    }
}

/// A runtime (never its credential, which is shown once, at registration).
#[derive(Serialize, ToSchema)]
pub struct RuntimeView {
    pub id: String,
    pub account: String,
    pub git_host: String,
    pub oauth_app: Option<String>,
    /// Its own provider kind; `null`: its OAuth app's.
    pub provider: Option<ProviderKind>,
    #[schema(value_type = Option<String>)]
    pub base_url: Option<Url>,
    /// `owner/name` of the repositories the runtime works on; a GitHub App
    /// user token served to it is narrowed to them.
    pub repositories: Vec<String>,
    pub origin: Origin,
    /// The GitHub App installation its Git Runtime token is minted from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub github_app: Option<crate::config::github_apps::RuntimeGithubApp>,
    /// Its Git Runtime token (GitLab) rotates itself before it expires.
    pub rotate_runtime_token: bool,
}

fn runtime_view(rt: &Runtime) -> RuntimeView {
    RuntimeView {
        id: rt.id.clone(),
        account: rt.account.clone(),
        git_host: rt.git_host.clone(),
        oauth_app: rt.oauth_app.clone(),
        provider: rt.provider,
        base_url: rt.base_url.clone(),
        repositories: rt.repositories.clone(),
        origin: rt.origin,
        github_app: rt.github_app.clone(),
        rotate_runtime_token: rt.rotate_runtime_token,
    }
}

/// A runtime with its Git Runtime token's status and its number of user tokens.
#[derive(Serialize, ToSchema)]
pub struct RuntimeDetail {
    #[serde(flatten)]
    pub runtime: RuntimeView,
    /// `null` while the runtime has no Git Runtime token.
    pub git_token: Option<RuntimeTokenStatus>,
    pub user_tokens: usize,
}

#[derive(Serialize, ToSchema)]
pub struct RuntimeList {
    pub runtimes: Vec<RuntimeDetail>,
}

/// A runtime just registered, with its credential: shown this once only.
#[derive(Serialize, ToSchema)]
pub struct RegisteredRuntime {
    #[serde(flatten)]
    pub runtime: RuntimeView,
    pub git_token: RuntimeTokenStatus,
    /// The runtime credential (`Authorization: Bearer …` on the runtime API).
    pub credential: String,
}

async fn runtime_detail(state: &AppState, rt: &Runtime) -> Result<RuntimeDetail, ApiError> {
    Ok(RuntimeDetail {
        runtime: runtime_view(rt),
        git_token: state.lifecycle.runtime_token_status(rt).await?,
        user_tokens: state.lifecycle.user_token_count(rt).await?,
    })
}

/// A Git token as an admin sends it (the Git Runtime token).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GitTokenBody {
    #[schema(value_type = String, write_only)]
    token: SecretString,
    /// Bitbucket: the username that goes with the token.
    username: Option<String>,
    /// Bitbucket Cloud API tokens: the Atlassian account email.
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    id: String,
    account: String,
    git_host: String,
    oauth_app: Option<String>,
    provider: Option<ProviderKind>,
    base_url: Option<String>,
    /// GitLab only: rotate the Git Runtime token before it expires.
    #[serde(default)]
    rotate_runtime_token: bool,
    /// `owner/name` of the repositories the runtime works on; its GitHub
    /// App installation tokens and GitHub App user tokens are narrowed to them.
    #[serde(default)]
    repositories: Vec<String>,
    /// The Git Runtime token: mandatory, unless `github_app` is given.
    git_token: Option<GitTokenBody>,
    /// Mint the Git Runtime token from this GitHub App installation
    /// instead (no `git_token` then).
    github_app: Option<crate::config::github_apps::RuntimeGithubApp>,
}

#[utoipa::path(get, path = "/api/v1/admin/runtimes/{id}/git-token", tag = "admin",
    security(("admin_token" = []), ("session" = [])),
    params(("id" = String, Path, description = "Runtime id", example = "acme-prod")),
    responses(
        (status = 200, description = "The Git Runtime token's status (never its value)", body = RuntimeTokenStatus),
        (status = 400, description = "Malformed request", body = ApiError, content_type = "application/problem+json"),
        (status = 404, description = "No such runtime, or it has no Git Runtime token", body = ApiError, content_type = "application/problem+json"),
        (status = 401, description = "No or wrong admin credentials", body = ApiError, content_type = "application/problem+json"),
        (status = 403, description = "A session outside the admin group, or without X-CSRF-Token on a change", body = ApiError, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = ApiError, content_type = "application/problem+json"),
    ))]
async fn get_runtime_token(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<RuntimeTokenStatus>, ApiError> {
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
    Ok(Json(status))
}

/// A user's token on a runtime (no value).
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum UserTokenView {
    Present {
        user: String,
        #[serde(flatten)]
        token: Box<TokenView>,
    },
    /// Its encryption key was retired.
    Unreadable {
        user: String,
        #[serde(flatten)]
        token: UnreadableToken,
    },
}

#[derive(Serialize, ToSchema)]
pub struct UserTokenList {
    pub runtime: String,
    pub user_tokens: Vec<UserTokenView>,
}

/// The runtime's users and the status of each one's token (no secrets).
#[utoipa::path(get, path = "/api/v1/admin/runtimes/{id}/user-tokens", tag = "admin",
    security(("admin_token" = []), ("session" = [])),
    params(("id" = String, Path, description = "Runtime id", example = "acme-prod")),
    responses(
        (status = 200, description = "The runtime's user tokens", body = UserTokenList),
        (status = 400, description = "Malformed request", body = ApiError, content_type = "application/problem+json"),
        (status = 404, description = "No such runtime", body = ApiError, content_type = "application/problem+json"),
        (status = 401, description = "No or wrong admin credentials", body = ApiError, content_type = "application/problem+json"),
        (status = 403, description = "A session outside the admin group, or without X-CSRF-Token on a change", body = ApiError, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = ApiError, content_type = "application/problem+json"),
    ))]
async fn list_user_tokens(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<UserTokenList>, ApiError> {
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
    let user_tokens = tokens
        .iter()
        .map(|(user, info)| match info {
            Some(t) => UserTokenView::Present {
                user: user.clone(),
                token: Box::new(TokenView::from(t)),
            },
            None => UserTokenView::Unreadable {
                user: user.clone(),
                token: UnreadableToken {
                    unreadable: true,
                    status: StateOnly {
                        state: TokenState::Unreadable,
                    },
                },
            },
        })
        .collect();
    Ok(Json(UserTokenList {
        runtime: rt.id,
        user_tokens,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct UserTokensDeleted {
    pub runtime: String,
    pub deleted: usize,
}

/// Removes every user token of the runtime (it stays registered).
#[utoipa::path(delete, path = "/api/v1/admin/runtimes/{id}/user-tokens", tag = "admin",
    security(("admin_token" = []), ("session" = [])),
    params(("id" = String, Path, description = "Runtime id", example = "acme-prod")),
    responses(
        (status = 200, description = "How many were deleted", body = UserTokensDeleted),
        (status = 400, description = "Malformed request", body = ApiError, content_type = "application/problem+json"),
        (status = 404, description = "No such runtime", body = ApiError, content_type = "application/problem+json"),
        (status = 409, description = "The runtime changed meanwhile", body = ApiError, content_type = "application/problem+json"),
        (status = 401, description = "No or wrong admin credentials", body = ApiError, content_type = "application/problem+json"),
        (status = 403, description = "A session outside the admin group, or without X-CSRF-Token on a change", body = ApiError, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = ApiError, content_type = "application/problem+json"),
    ))]
async fn delete_user_tokens(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<UserTokensDeleted>, ApiError> {
    let deleted = state
        .lifecycle
        .delete_user_tokens(&id, &admin.who)
        .await
        .map_err(super::me_api::assign_error)?;
    Ok(Json(UserTokensDeleted {
        runtime: id,
        deleted,
    }))
}

/// Replace the runtime's Git Runtime token (validated at the provider first).
#[utoipa::path(put, path = "/api/v1/admin/runtimes/{id}/git-token", tag = "admin",
    security(("admin_token" = []), ("session" = [])),
    params(("id" = String, Path, description = "Runtime id", example = "acme-prod")),
    request_body = GitTokenBody,
    responses(
        (status = 200, description = "Validated and stored", body = RuntimeTokenStatus),
        (status = 400, description = "Malformed request", body = ApiError, content_type = "application/problem+json"),
        (status = 404, description = "No such runtime", body = ApiError, content_type = "application/problem+json"),
        (status = 409, description = "The runtime changed meanwhile", body = ApiError, content_type = "application/problem+json"),
        (status = 422, description = "The provider refused the token", body = ApiError, content_type = "application/problem+json"),
        (status = 401, description = "No or wrong admin credentials", body = ApiError, content_type = "application/problem+json"),
        (status = 403, description = "A session outside the admin group, or without X-CSRF-Token on a change", body = ApiError, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = ApiError, content_type = "application/problem+json"),
    ))]
async fn rotate_runtime_token(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(id): ApiPath<String>,
    ApiJson(token): ApiJson<GitTokenBody>,
) -> Result<Json<RuntimeTokenStatus>, ApiError> {
    let status = state
        .lifecycle
        .rotate_runtime_token(&id, token.into(), &admin.who)
        .await
        .map_err(super::me_api::assign_error)?;
    tracing::info!(admin = %admin.who, runtime = %id, "Git Runtime token rotated");
    Ok(Json(status))
}

#[utoipa::path(get, path = "/api/v1/admin/oauth-apps", tag = "admin",
    security(("admin_token" = []), ("session" = [])),
    responses(
        (status = 200, description = "Every OAuth app", body = OAuthAppList),
        (status = 401, description = "No or wrong admin credentials", body = ApiError, content_type = "application/problem+json"),
        (status = 403, description = "A session outside the admin group, or without X-CSRF-Token on a change", body = ApiError, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = ApiError, content_type = "application/problem+json"),
    ))]
async fn list_apps(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<OAuthAppList>, ApiError> {
    let apps = state.registry.apps().await?;
    Ok(Json(OAuthAppList {
        oauth_apps: apps.iter().map(|a| app_view(&state, a)).collect(),
    }))
}

#[utoipa::path(get, path = "/api/v1/admin/oauth-apps/{id}", tag = "admin",
    security(("admin_token" = []), ("session" = [])),
    params(("id" = String, Path, description = "OAuth app id", example = "github-demo")),
    responses(
        (status = 200, description = "The OAuth app", body = OAuthAppView),
        (status = 400, description = "Malformed request", body = ApiError, content_type = "application/problem+json"),
        (status = 404, description = "No such OAuth app", body = ApiError, content_type = "application/problem+json"),
        (status = 401, description = "No or wrong admin credentials", body = ApiError, content_type = "application/problem+json"),
        (status = 403, description = "A session outside the admin group, or without X-CSRF-Token on a change", body = ApiError, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = ApiError, content_type = "application/problem+json"),
    ))]
async fn get_app(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<OAuthAppView>, ApiError> {
    let app = state
        .registry
        .app(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("OAuth app `{id}` does not exist")))?;
    Ok(Json(app_view(&state, &app)))
}

#[utoipa::path(post, path = "/api/v1/admin/oauth-apps", tag = "admin",
    security(("admin_token" = []), ("session" = [])),
    request_body = OAuthAppInput,
    responses(
        (status = 201, description = "Created", body = OAuthAppView),
        (status = 400, description = "Malformed request", body = ApiError, content_type = "application/problem+json"),
        (status = 409, description = "An OAuth app with this id exists", body = ApiError, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = ApiError, content_type = "application/problem+json"),
        (status = 401, description = "No or wrong admin credentials", body = ApiError, content_type = "application/problem+json"),
        (status = 403, description = "A session outside the admin group, or without X-CSRF-Token on a change", body = ApiError, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = ApiError, content_type = "application/problem+json"),
    ))]
async fn create_app(
    State(state): State<AppState>,
    admin: Admin,
    ApiJson(input): ApiJson<OAuthAppInput>,
) -> Result<(StatusCode, Json<OAuthAppView>), ApiError> {
    let app = state.registry.create_app(input).await?;
    tracing::info!(admin = %admin.who, app = %app.id, "OAuth app created");
    admin_event(
        &state,
        &admin,
        crate::events::Action::OAuthAppCreated,
        |e| e.provider(app.provider.as_str()).outcome(&app.id),
    )
    .await;
    Ok((StatusCode::CREATED, Json(app_view(&state, &app))))
}

#[utoipa::path(put, path = "/api/v1/admin/oauth-apps/{id}", tag = "admin",
    security(("admin_token" = []), ("session" = [])),
    params(("id" = String, Path, description = "OAuth app id", example = "github-demo")),
    request_body = OAuthAppInput,
    responses(
        (status = 200, description = "Updated", body = OAuthAppView),
        (status = 400, description = "Malformed request", body = ApiError, content_type = "application/problem+json"),
        (status = 404, description = "No such OAuth app", body = ApiError, content_type = "application/problem+json"),
        (status = 409, description = "Conflicting change", body = ApiError, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = ApiError, content_type = "application/problem+json"),
        (status = 401, description = "No or wrong admin credentials", body = ApiError, content_type = "application/problem+json"),
        (status = 403, description = "A session outside the admin group, or without X-CSRF-Token on a change", body = ApiError, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = ApiError, content_type = "application/problem+json"),
    ))]
async fn update_app(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(id): ApiPath<String>,
    ApiJson(input): ApiJson<OAuthAppInput>,
) -> Result<Json<OAuthAppView>, ApiError> {
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

#[utoipa::path(delete, path = "/api/v1/admin/oauth-apps/{id}", tag = "admin",
    security(("admin_token" = []), ("session" = [])),
    params(("id" = String, Path, description = "OAuth app id", example = "github-demo")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Malformed request", body = ApiError, content_type = "application/problem+json"),
        (status = 404, description = "No such OAuth app", body = ApiError, content_type = "application/problem+json"),
        (status = 409, description = "Runtimes still use it", body = ApiError, content_type = "application/problem+json"),
        (status = 401, description = "No or wrong admin credentials", body = ApiError, content_type = "application/problem+json"),
        (status = 403, description = "A session outside the admin group, or without X-CSRF-Token on a change", body = ApiError, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = ApiError, content_type = "application/problem+json"),
    ))]
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

#[utoipa::path(get, path = "/api/v1/admin/runtimes", tag = "admin",
    security(("admin_token" = []), ("session" = [])),
    responses(
        (status = 200, description = "Every runtime with its Git Runtime token status", body = RuntimeList),
        (status = 401, description = "No or wrong admin credentials", body = ApiError, content_type = "application/problem+json"),
        (status = 403, description = "A session outside the admin group, or without X-CSRF-Token on a change", body = ApiError, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = ApiError, content_type = "application/problem+json"),
    ))]
async fn list_runtimes(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<RuntimeList>, ApiError> {
    let mut runtimes = Vec::new();
    for rt in state.registry.runtimes().await? {
        // admins see which runtimes still need their Git Runtime token
        runtimes.push(runtime_detail(&state, &rt).await?);
    }
    Ok(Json(RuntimeList { runtimes }))
}

#[utoipa::path(get, path = "/api/v1/admin/runtimes/{id}", tag = "admin",
    security(("admin_token" = []), ("session" = [])),
    params(("id" = String, Path, description = "Runtime id", example = "acme-prod")),
    responses(
        (status = 200, description = "The runtime", body = RuntimeDetail),
        (status = 400, description = "Malformed request", body = ApiError, content_type = "application/problem+json"),
        (status = 404, description = "No such runtime", body = ApiError, content_type = "application/problem+json"),
        (status = 401, description = "No or wrong admin credentials", body = ApiError, content_type = "application/problem+json"),
        (status = 403, description = "A session outside the admin group, or without X-CSRF-Token on a change", body = ApiError, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = ApiError, content_type = "application/problem+json"),
    ))]
async fn get_runtime(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<RuntimeDetail>, ApiError> {
    let rt = state
        .registry
        .runtime(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("runtime `{id}` does not exist")))?;
    Ok(Json(runtime_detail(&state, &rt).await?))
}

/// Register a runtime with its (mandatory) Git Runtime token; answers its credential once.
#[utoipa::path(post, path = "/api/v1/admin/runtimes", tag = "admin",
    security(("admin_token" = []), ("session" = [])),
    request_body = RegisterBody,
    responses(
        (status = 201, description = "Registered", body = RegisteredRuntime),
        (status = 400, description = "Malformed request", body = ApiError, content_type = "application/problem+json"),
        (status = 404, description = "No such account or OAuth app", body = ApiError, content_type = "application/problem+json"),
        (status = 409, description = "A runtime with this id exists", body = ApiError, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field, or the provider refused the Git Runtime token", body = ApiError, content_type = "application/problem+json"),
        (status = 401, description = "No or wrong admin credentials", body = ApiError, content_type = "application/problem+json"),
        (status = 403, description = "A session outside the admin group, or without X-CSRF-Token on a change", body = ApiError, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = ApiError, content_type = "application/problem+json"),
    ))]
async fn create_runtime(
    State(state): State<AppState>,
    admin: Admin,
    ApiJson(b): ApiJson<RegisterBody>,
) -> Result<Response, ApiError> {
    let invalid = |m: &str| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "Invalid input",
            m,
        )
    };
    let input = RuntimeInput {
        id: b.id,
        account: b.account,
        git_host: b.git_host,
        oauth_app: b.oauth_app,
        provider: b.provider,
        base_url: b.base_url,
        github_app: b.github_app,
        repositories: b.repositories,
        rotate_runtime_token: b.rotate_runtime_token,
    };
    let registered = match (b.git_token, input.github_app.is_some()) {
        (Some(_), true) => {
            return Err(invalid(
                "git_token: a GitHub App runtime takes no Git Runtime token: it is minted from its installation",
            ));
        }
        (None, true) => {
            state
                .lifecycle
                .register_app_runtime(input, &admin.who)
                .await
        }
        (Some(token), false) => {
            state
                .lifecycle
                .register_runtime(input, token.into(), &admin.who)
                .await
        }
        (None, false) => {
            return Err(invalid(
                "git_token: the Git Runtime token is mandatory when registering a runtime: {\"token\": …} (Bitbucket also \"username\"), or github_app: {\"app\", \"installation_id\" or \"owner\"}",
            ));
        }
    };
    let (rt, credential, status) = registered.map_err(super::me_api::assign_error)?;
    tracing::info!(admin = %admin.who, runtime = %rt.id, "runtime created");
    let body = RegisteredRuntime {
        runtime: runtime_view(&rt),
        git_token: status,
        credential: credential.expose_secret().to_owned(),
    };
    let mut resp = (StatusCode::CREATED, Json(body)).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

#[utoipa::path(put, path = "/api/v1/admin/runtimes/{id}", tag = "admin",
    security(("admin_token" = []), ("session" = [])),
    params(("id" = String, Path, description = "Runtime id", example = "acme-prod")),
    request_body = RuntimeInput,
    responses(
        (status = 200, description = "Updated", body = RuntimeView),
        (status = 400, description = "Malformed request", body = ApiError, content_type = "application/problem+json"),
        (status = 404, description = "No such runtime", body = ApiError, content_type = "application/problem+json"),
        (status = 409, description = "Conflicting change", body = ApiError, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = ApiError, content_type = "application/problem+json"),
        (status = 401, description = "No or wrong admin credentials", body = ApiError, content_type = "application/problem+json"),
        (status = 403, description = "A session outside the admin group, or without X-CSRF-Token on a change", body = ApiError, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = ApiError, content_type = "application/problem+json"),
    ))]
async fn update_runtime(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(id): ApiPath<String>,
    ApiJson(input): ApiJson<RuntimeInput>,
) -> Result<Json<RuntimeView>, ApiError> {
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

/// Remove a runtime: its user tokens, its Git Runtime token and its credential go with it.
#[utoipa::path(delete, path = "/api/v1/admin/runtimes/{id}", tag = "admin",
    security(("admin_token" = []), ("session" = [])),
    params(("id" = String, Path, description = "Runtime id", example = "acme-prod")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Malformed request", body = ApiError, content_type = "application/problem+json"),
        (status = 404, description = "No such runtime", body = ApiError, content_type = "application/problem+json"),
        (status = 409, description = "Conflicting change", body = ApiError, content_type = "application/problem+json"),
        (status = 401, description = "No or wrong admin credentials", body = ApiError, content_type = "application/problem+json"),
        (status = 403, description = "A session outside the admin group, or without X-CSRF-Token on a change", body = ApiError, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = ApiError, content_type = "application/problem+json"),
    ))]
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
