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
use crate::providers::ProviderKind;
use crate::tokens::{AssignError, Released, TokenInfo, TokenSlot};
use crate::tokens::{State as TokenState, Status};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use axum_extra::extract::cookie::CookieJar;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

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
#[utoipa::path(get, path = "/api/v1/me/notifications", tag = "user",
    security(("session" = [])),
    responses(
        (status = 200, description = "What needs attention, the last 50 notifications, the settings", body = crate::notify::Overview),
        (status = 401, description = "Not signed in", body = ApiError, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = ApiError, content_type = "application/problem+json"),
    ))]
pub(super) async fn notifications(
    State(state): State<AppState>,
    Me(session): Me,
) -> Result<Json<crate::notify::Overview>, ApiError> {
    Ok(Json(state.notifier.overview(&session.user).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct EnabledBody {
    /// `false` turns all notifications off (statuses stay visible).
    enabled: bool,
}

#[derive(Serialize, ToSchema)]
pub(super) struct NotificationSettings {
    enabled: bool,
    /// Runtimes whose notifications are hidden.
    hidden: Vec<String>,
}

/// Turns all of the user's notifications on or off.
#[utoipa::path(put, path = "/api/v1/me/notifications", tag = "user",
    security(("session" = [])),
    params(("X-CSRF-Token" = String, Header, description = "The session's CSRF token")),
    request_body = EnabledBody,
    responses(
        (status = 200, description = "The settings now", body = NotificationSettings),
        (status = 400, description = "Malformed request", body = ApiError, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = ApiError, content_type = "application/problem+json"),
        (status = 403, description = "No or wrong X-CSRF-Token", body = ApiError, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = ApiError, content_type = "application/problem+json"),
    ))]
pub(super) async fn set_notifications(
    State(state): State<AppState>,
    Me(session): Me,
    ApiJson(body): ApiJson<EnabledBody>,
) -> Result<Json<NotificationSettings>, ApiError> {
    let prefs = state
        .notifier
        .set_enabled(&session.user, body.enabled)
        .await?;
    Ok(Json(NotificationSettings {
        enabled: prefs.enabled.unwrap_or(body.enabled),
        hidden: prefs.hidden.into_iter().collect(),
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct HiddenBody {
    /// `true` hides the runtime's notifications, `false` shows them.
    hidden: bool,
}

#[derive(Serialize, ToSchema)]
pub(super) struct RuntimeNotifications {
    runtime: String,
    hidden: bool,
}

/// Hides or shows one runtime's notifications (its status stays visible).
#[utoipa::path(put, path = "/api/v1/me/runtimes/{runtime}/notifications", tag = "user",
    security(("session" = [])),
    params(("runtime" = String, Path, description = "Runtime id", example = "acme-prod"), ("X-CSRF-Token" = String, Header, description = "The session's CSRF token")),
    request_body = HiddenBody,
    responses(
        (status = 200, description = "Hidden or shown", body = RuntimeNotifications),
        (status = 400, description = "Malformed request", body = ApiError, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = ApiError, content_type = "application/problem+json"),
        (status = 403, description = "No or wrong X-CSRF-Token", body = ApiError, content_type = "application/problem+json"),
        (status = 404, description = "Not one of the user's runtimes", body = ApiError, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = ApiError, content_type = "application/problem+json"),
    ))]
pub(super) async fn set_runtime_notifications(
    State(state): State<AppState>,
    Me(session): Me,
    ApiPath(runtime): ApiPath<String>,
    ApiJson(body): ApiJson<HiddenBody>,
) -> Result<Json<RuntimeNotifications>, ApiError> {
    let prefs = state
        .notifier
        .set_hidden(&session.user, &runtime, body.hidden)
        .await?;
    Ok(Json(RuntimeNotifications {
        hidden: prefs.hidden.contains(&runtime),
        runtime,
    }))
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

/// A Git user token as the user and admin APIs show it (never its value).
#[derive(Serialize, ToSchema)]
pub struct TokenView {
    /// The grant (one authorization, possibly used by several runtimes).
    pub grant: String,
    pub provider: ProviderKind,
    pub provider_login: String,
    pub scopes: Vec<String>,
    pub issued_at: DateTime<Utc>,
    pub authorized_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    /// When the authorization ends (refreshable OAuth tokens); `null`: never.
    pub authorization_expires_at: Option<DateTime<Utc>>,
    pub last_refreshed_at: Option<DateTime<Utc>>,
    pub refreshed_automatically: bool,
    /// `oauth` or `pat`.
    #[schema(value_type = String, example = "oauth")]
    pub method: &'static str,
    pub status: Status,
    /// The user's other runtimes this same grant serves.
    pub shared_with: Vec<String>,
}

impl From<&TokenInfo> for TokenView {
    fn from(t: &TokenInfo) -> Self {
        Self {
            grant: t.grant_id.clone(),
            provider: t.provider,
            provider_login: t.login.clone(),
            scopes: t.scopes.clone(),
            issued_at: t.issued_at,
            authorized_at: t.authorized_at,
            expires_at: t.expires_at,
            authorization_expires_at: t.usable_until,
            last_refreshed_at: t.last_refreshed_at,
            refreshed_automatically: t.refreshable,
            method: t.source.method(),
            status: t.status.clone(),
            shared_with: t.shared_with.clone(),
        }
    }
}

/// Only a token's state (a token that no longer decrypts).
#[derive(Serialize, ToSchema)]
pub struct StateOnly {
    pub state: TokenState,
}

/// A token whose encryption key was retired: listed, not readable.
#[derive(Serialize, ToSchema)]
pub struct UnreadableToken {
    /// Always `true`.
    pub unreadable: bool,
    pub status: StateOnly,
}

#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum MyToken {
    Present(Box<TokenView>),
    Unreadable(UnreadableToken),
}

#[derive(Serialize, ToSchema)]
pub struct ReusableAuthorization {
    pub grant: String,
    pub provider_login: String,
    pub used_by: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct MyRuntime {
    pub runtime: String,
    pub account: String,
    pub git_host: String,
    /// `null` when the user has no token for this runtime.
    pub token: Option<MyToken>,
    pub reusable_authorizations: Vec<ReusableAuthorization>,
    /// Set when one more authorization would pass GitHub's cap of tokens per user and app.
    pub token_cap_warning: Option<String>,
}

/// `GET /api/v1/me/tokens`.
#[derive(Serialize, ToSchema)]
pub struct MyTokens {
    /// The signed-in user's id (the identity provider's subject).
    pub user: String,
    pub runtimes: Vec<MyRuntime>,
}

/// List my runtimes, each with its token's status (never its value).
#[utoipa::path(get, path = "/api/v1/me/tokens", tag = "user",
    security(("session" = [])),
    responses(
        (status = 200, description = "The signed-in user's runtimes and tokens", body = MyTokens),
        (status = 401, description = "Not signed in", body = ApiError, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = ApiError, content_type = "application/problem+json"),
    ))]
pub(super) async fn list(
    State(state): State<AppState>,
    Me(session): Me,
) -> Result<Json<MyTokens>, ApiError> {
    let mut out = Vec::new();
    for (account, runtimes) in state
        .lifecycle
        .user_runtimes(&session.user)
        .await
        .map_err(assign_error)?
    {
        for r in runtimes {
            let token = match &r.token {
                TokenSlot::None => None,
                // its encryption key was retired: say so, don't fail the list
                TokenSlot::Unreadable => Some(MyToken::Unreadable(UnreadableToken {
                    unreadable: true,
                    status: StateOnly {
                        state: TokenState::Unreadable,
                    },
                })),
                TokenSlot::Present(t) => Some(MyToken::Present(Box::new(TokenView::from(&**t)))),
            };
            out.push(MyRuntime {
                runtime: r.runtime.id.clone(),
                account: account.id.clone(),
                git_host: r.runtime.git_host.clone(),
                token,
                reusable_authorizations: r
                    .reusable
                    .iter()
                    .map(|g| ReusableAuthorization {
                        grant: g.grant_id.clone(),
                        provider_login: g.login.clone(),
                        used_by: g.used_by.to_vec(),
                    })
                    .collect(),
                token_cap_warning: r.cap_warning.clone(),
            });
        }
    }
    Ok(Json(MyTokens {
        user: session.user.sub,
        runtimes: out,
    }))
}

/// A personal access token pasted for a runtime.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PatBody {
    #[schema(value_type = String, write_only)]
    token: SecretString,
    /// Bitbucket: the username that goes with the token.
    username: Option<String>,
    /// Bitbucket Cloud API tokens: the Atlassian account email.
    email: Option<String>,
    /// More of the user's runtimes on the same provider host to use it for.
    #[serde(default)]
    also: Vec<String>,
}

/// What a pasted token was stored as.
#[derive(Serialize, ToSchema)]
pub struct PatAssigned {
    pub runtimes: Vec<String>,
    /// Runtimes that changed while the token was being added (not assigned).
    pub skipped: Vec<String>,
    pub provider_login: String,
    /// e.g. "classic personal access token".
    pub kind: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Paste a personal access token for a runtime: validated at the provider first.
#[utoipa::path(put, path = "/api/v1/me/runtimes/{runtime}/token", tag = "user",
    security(("session" = [])),
    params(("runtime" = String, Path, description = "Runtime id", example = "acme-prod"), ("X-CSRF-Token" = String, Header, description = "The session's CSRF token")),
    request_body = PatBody,
    responses(
        (status = 200, description = "Validated and stored", body = PatAssigned),
        (status = 400, description = "Malformed request", body = ApiError, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = ApiError, content_type = "application/problem+json"),
        (status = 403, description = "No or wrong X-CSRF-Token", body = ApiError, content_type = "application/problem+json"),
        (status = 404, description = "No such runtime among the user's", body = ApiError, content_type = "application/problem+json"),
        (status = 409, description = "The runtime changed meanwhile", body = ApiError, content_type = "application/problem+json"),
        (status = 422, description = "The provider refused the token (scopes, kind, owner) or another host", body = ApiError, content_type = "application/problem+json"),
        (status = 429, description = "Too many token checks", body = ApiError, content_type = "application/problem+json"),
        (status = 503, description = "Provider or store unavailable", body = ApiError, content_type = "application/problem+json"),
    ))]
pub(super) async fn put_pat(
    State(state): State<AppState>,
    Me(session): Me,
    ApiPath(runtime): ApiPath<String>,
    ApiJson(body): ApiJson<PatBody>,
) -> Result<Json<PatAssigned>, ApiError> {
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
            Ok(Json(PatAssigned {
                kind: report.map(|r| r.kind.clone()),
                scopes: report.map(|r| r.scopes.clone()),
                expires_at: report.and_then(|r| r.expires_at),
                runtimes: done.runtimes,
                skipped: done.skipped,
                provider_login: done.login,
            }))
        }
        Err(e) => Err(assign_error(e)),
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ReuseBody {
    /// The grant to use, from `reusable_authorizations` of the list.
    grant: String,
}

#[derive(Serialize, ToSchema)]
pub struct Reused {
    pub runtimes: Vec<String>,
    pub grant: String,
    pub provider_login: String,
}

/// "Use my existing authorization": assigns one of the user's grants from
/// the runtime's OAuth app to this runtime, without a new provider token.
#[utoipa::path(post, path = "/api/v1/me/runtimes/{runtime}/token/reuse", tag = "user",
    security(("session" = [])),
    params(("runtime" = String, Path, description = "Runtime id", example = "acme-prod"), ("X-CSRF-Token" = String, Header, description = "The session's CSRF token")),
    request_body = ReuseBody,
    responses(
        (status = 200, description = "Assigned", body = Reused),
        (status = 400, description = "Malformed request", body = ApiError, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = ApiError, content_type = "application/problem+json"),
        (status = 403, description = "No or wrong X-CSRF-Token", body = ApiError, content_type = "application/problem+json"),
        (status = 404, description = "No such runtime or grant", body = ApiError, content_type = "application/problem+json"),
        (status = 409, description = "The runtime changed meanwhile", body = ApiError, content_type = "application/problem+json"),
        (status = 422, description = "That authorization cannot serve this runtime", body = ApiError, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = ApiError, content_type = "application/problem+json"),
    ))]
pub(super) async fn reuse(
    State(state): State<AppState>,
    Me(session): Me,
    ApiPath(runtime): ApiPath<String>,
    ApiJson(body): ApiJson<ReuseBody>,
) -> Result<Json<Reused>, ApiError> {
    let done = state
        .lifecycle
        .reuse_grant(&session.user, &runtime, &body.grant)
        .await
        .map_err(assign_error)?;
    Ok(Json(Reused {
        runtimes: done.runtimes,
        grant: body.grant,
        provider_login: done.login,
    }))
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

/// What deleting a token did.
#[derive(Serialize, ToSchema)]
pub struct TokenDeleted {
    /// Always `true`.
    pub deleted: bool,
    /// `revoked`, `already_invalid`, `unsupported`, `kept`, `queued`,
    /// `failed`, or `not_revoked` (still used by other runtimes).
    #[schema(value_type = String)]
    pub revocation: &'static str,
    /// The other runtimes the same authorization still serves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub still_used_by: Option<Vec<String>>,
    /// What happened at the provider, in a sentence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Delete my token for a runtime (revoked at the provider when no other runtime uses it).
#[utoipa::path(delete, path = "/api/v1/me/runtimes/{runtime}/token", tag = "user",
    security(("session" = [])),
    params(("runtime" = String, Path, description = "Runtime id", example = "acme-prod"), ("X-CSRF-Token" = String, Header, description = "The session's CSRF token")),
    responses(
        (status = 200, description = "Deleted", body = TokenDeleted),
        (status = 400, description = "Malformed request", body = ApiError, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = ApiError, content_type = "application/problem+json"),
        (status = 403, description = "No or wrong X-CSRF-Token", body = ApiError, content_type = "application/problem+json"),
        (status = 404, description = "No token for this runtime", body = ApiError, content_type = "application/problem+json"),
        (status = 409, description = "The runtime changed meanwhile", body = ApiError, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = ApiError, content_type = "application/problem+json"),
    ))]
pub(super) async fn delete(
    State(state): State<AppState>,
    Me(session): Me,
    ApiPath(runtime): ApiPath<String>,
) -> Result<Json<TokenDeleted>, ApiError> {
    let released = state
        .lifecycle
        .unassign(&session.user, &runtime)
        .await
        .map_err(assign_error)?
        .ok_or_else(|| ApiError::not_found(format!("you have no token for runtime `{runtime}`")))?;
    let deleted = |revocation, still_used_by, detail| TokenDeleted {
        deleted: true,
        revocation,
        still_used_by,
        detail,
    };
    Ok(Json(match released {
        Released::StillUsed { runtimes } => deleted("not_revoked", Some(runtimes), None),
        Released::Deleted(report) => deleted(report.as_str(), None, Some(report.describe())),
        Released::Missing => deleted("not_revoked", None, None),
    }))
}
