//! The `gitlab` flavour, served under `/gitlab` (so a broker's `base_url` is
//! `<mock>/gitlab`): GitLab's OAuth provider (Doorkeeper: consent page,
//! RFC 6749 token endpoint with JSON errors and HTTP 400/401, 2-hour access
//! tokens with rotating refresh tokens, `/oauth/token/info`, RFC 7009
//! `/oauth/revoke`) and the bits of API v4 the broker reads: `/user` and
//! `/personal_access_tokens/self`, with GitLab's 401 bodies.
//!
//! GitLab users are the mock's GitHub users under the same logins.
//! Personal access tokens come from the shared `PatBook` (flavour `gitlab`):
//! kind `personal` belongs to its owner, `project` and `group` to a bot user,
//! `fine_grained` to its owner with `granular_scopes` (spec scopes written
//! `permission:access`). `POST /api/v4/personal_access_tokens/self/rotate`
//! rotates a PAT with itself as GitLab does: the new token inherits the old
//! one's scopes, expires on the requested `expires_at` (default one week),
//! and the old one is revoked; presenting a rotated token again revokes its
//! successor (gitlab-org/gitlab #524639).

use super::book::{Issued, Lifetimes, TokenStyle};
use super::consent::{self, Consent, Refusal, known_scopes};
use super::control::Counters;
use super::oauth::{
    AuthMethod, TokenPages, authenticate, authorization_token, exchange_code, header_pair,
    parse_form, parse_scopes, presented_token, refresh_grant, token_endpoint, with_headers,
};
use super::pages::Wording;
use super::pats::{Flavour, Pat, Rotation};
use super::{MockGitUser, MockOAuthApp, Shared};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Duration, NaiveDate, SecondsFormat, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;

/// GitLab's OAuth tokens and codes: 64 hex-like characters, no prefix
/// (only personal access tokens have one, `glpat-`).
pub(crate) const TOKEN_STYLE: TokenStyle = TokenStyle::new(("", 64), ("", 64), 64);

/// OAuth access tokens live 2 hours on every GitLab since 15.0.
const ACCESS_SECONDS: i64 = 7_200;
/// GitLab refresh tokens do not expire with time; the book needs a lifetime.
const REFRESH_DAYS: i64 = 3_650;
pub(crate) const LIFETIMES: Lifetimes = Lifetimes::new(ACCESS_SECONDS, REFRESH_DAYS);
const RATE_LIMIT: u64 = 2_000;
const RETRY_AFTER_SECONDS: i64 = 60;
const BANNER: &str = "Mock GitLab";

/// Scopes GitLab knows; an authorization request for any other is refused.
const KNOWN_SCOPES: &[&str] = &[
    "api",
    "read_api",
    "read_user",
    "create_runner",
    "manage_runner",
    "k8s_proxy",
    "read_repository",
    "write_repository",
    "read_registry",
    "write_registry",
    "read_virtual_registry",
    "write_virtual_registry",
    "read_observability",
    "write_observability",
    "ai_features",
    "sudo",
    "admin_mode",
    "read_service_ping",
    "openid",
    "profile",
    "email",
];

// Doorkeeper's wording, as GitLab sends it.
const INVALID_GRANT: &str = "The provided authorization grant is invalid, expired, revoked, does not match the redirection URI used in the authorization request, or was issued to another client.";
const INVALID_CLIENT: &str = "Client authentication failed due to unknown client, no client authentication included, or unsupported authentication method.";
const UNSUPPORTED_GRANT_TYPE: &str =
    "The authorization grant type is not supported by the authorization server.";
const ACCESS_DENIED: &str = "The resource owner or authorization server denied the request.";
const INVALID_SCOPE: &str = "The requested scope is invalid, unknown, or malformed.";
const UNSUPPORTED_RESPONSE_TYPE: &str =
    "The authorization server does not support this response type.";
const TOKEN_EXPIRED: &str =
    "Token is expired. You can either do re-authorization or token refresh.";
const TOKEN_REVOKED: &str = "Token was revoked. You have to re-authorize from the user.";

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/oauth/authorize", consent::route(&CONSENT))
        .route("/oauth/token", post(token))
        .route("/oauth/revoke", post(revoke))
        .fallback(not_found)
}

/// The routes that read a token: API v4 and Doorkeeper's token info.
pub(crate) fn api_routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/oauth/token/info", get(token_info))
        .route("/api/v4/user", get(user))
        .route("/api/v4/personal_access_tokens/self", get(pat_self))
        .route(
            "/api/v4/personal_access_tokens/self/rotate",
            post(pat_self_rotate),
        )
}

// ---------------------------------------------------------------------------
// Authorization: the consent page and its decision. Errors about the client
// or the redirect URI are shown as a page; the others go back to the client,
// as Doorkeeper does.

const INVALID_PKCE: Refusal = Refusal::Back(
    "invalid_request",
    "The request is missing a required parameter, includes an unsupported parameter value, or is otherwise malformed. Only code_challenge_method=S256 with a valid code_challenge is supported.",
);

const CONSENT: Consent = Consent {
    banner: BANNER,
    wording: Wording {
        heading: " to use your account?",
        lead: "An application called ",
        asks: "is requesting access to your GitLab account. This application will be able to:",
        no_scopes: "Use the application's default scopes.",
        user_prefix: "@",
        approve: "Authorize",
        redirect_note: "You will then be redirected to",
    },
    book: |s| &s.gitlab,
    unknown_client: (
        StatusCode::UNAUTHORIZED,
        "An error has occurred",
        INVALID_CLIENT,
    ),
    redirect_required: true,
    bad_redirect: (
        "An error has occurred",
        "The redirect URI included is not valid.",
    ),
    bad_callback: (
        "An error has occurred",
        "The application's redirect URI is not an absolute URL.",
    ),
    response_type: Some(Refusal::Back(
        "unsupported_response_type",
        UNSUPPORTED_RESPONSE_TYPE,
    )),
    // Space-separated; GitLab does not split on commas.
    scopes: |scope| known_scopes(parse_scopes(scope, &[' ']), KNOWN_SCOPES, INVALID_SCOPE),
    scopes_first: true,
    bad_challenge: INVALID_PKCE,
    bad_method: INVALID_PKCE,
    no_login: "No user was chosen.",
    bad_decision: "decision must be approve or deny.",
    no_user: "There is no GitLab user with that username.",
    denied: &[("error_description", ACCESS_DENIED)],
};

// ---------------------------------------------------------------------------
// The token endpoint.

/// An RFC 6749 §5.2 error, as Doorkeeper answers it: JSON, HTTP 400, or
/// 401 for `invalid_client`.
struct TokenError {
    error: String,
    description: String,
}

impl TokenError {
    fn new(error: &str, description: &str) -> Self {
        Self {
            error: error.to_owned(),
            description: description.to_owned(),
        }
    }

    fn invalid_grant() -> Self {
        Self::new("invalid_grant", INVALID_GRANT)
    }

    fn missing(parameter: &str) -> Self {
        Self::new(
            "invalid_request",
            &format!("Missing required parameter: {parameter}."),
        )
    }

    fn into_response(self) -> Response {
        let status = if self.error == "invalid_client" {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::BAD_REQUEST
        };
        let mut response = (
            status,
            no_store(),
            Json(json!({ "error": self.error, "error_description": self.description })),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            let challenge = format!(
                "Bearer realm=\"Doorkeeper\", error=\"invalid_client\", error_description=\"{INVALID_CLIENT}\""
            );
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
        }
        response
    }
}

fn no_store() -> [(HeaderName, HeaderValue); 2] {
    [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (header::PRAGMA, HeaderValue::from_static("no-cache")),
    ]
}

const TOKEN_PAGES: TokenPages = TokenPages {
    flavour: Flavour::Gitlab,
    error_page,
    // 429 as GitLab's throttle answers it, anything else as its error page
    refresh_status: |s, status| match status {
        429 => switched_status(s, status),
        _ => error_page(status),
    },
};

async fn token(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    token_endpoint(&s, &TOKEN_PAGES, &body, |told| {
        token_response(&s, &headers, &body, told)
    })
    .await
}

fn token_response(s: &Shared, headers: &HeaderMap, body: &[u8], told: Option<&str>) -> Response {
    if let Some(code) = told {
        let description = match code {
            "invalid_grant" => INVALID_GRANT,
            "invalid_client" => INVALID_CLIENT,
            _ => "The mock provider was told to fail this request.",
        };
        return TokenError::new(code, description).into_response();
    }
    match token_grant(s, headers, body) {
        Ok(issued) => token_success(&issued),
        Err(err) => {
            tracing::debug!(error = %err.error, "mock gitlab token request refused");
            err.into_response()
        }
    }
}

fn token_grant(s: &Shared, headers: &HeaderMap, body: &[u8]) -> Result<Issued, TokenError> {
    let form = parse_form(body).ok_or_else(|| {
        TokenError::new(
            "invalid_request",
            "The request is missing a required parameter, includes an unsupported parameter value, or is otherwise malformed.",
        )
    })?;
    let app = client(s, headers, &form)?;
    match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            // both required, and checked before the code is spent
            for parameter in ["code", "redirect_uri"] {
                if !form.contains_key(parameter) {
                    return Err(TokenError::missing(parameter));
                }
            }
            exchange_code(s, &s.gitlab, &app, &form, Some(LIFETIMES))
                .map_err(|_| TokenError::invalid_grant())
        }
        Some("refresh_token") => {
            let refresh_token = form
                .get("refresh_token")
                .ok_or_else(|| TokenError::missing("refresh_token"))?;
            // Rotation: the old access and refresh tokens die here.
            refresh_grant(
                s,
                Flavour::Gitlab,
                &s.gitlab,
                &app.client_id,
                refresh_token,
                LIFETIMES,
            )
            .ok_or_else(TokenError::invalid_grant)
        }
        Some(_) => Err(TokenError::new(
            "unsupported_grant_type",
            UNSUPPORTED_GRANT_TYPE,
        )),
        None => Err(TokenError::missing("grant_type")),
    }
}

/// The OAuth application behind the request's client credentials (HTTP
/// Basic or form, both accepted by GitLab).
fn client(
    s: &Shared,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<MockOAuthApp, TokenError> {
    authenticate(s, headers, form, &[AuthMethod::Basic, AuthMethod::Post])
        .ok_or_else(|| TokenError::new("invalid_client", INVALID_CLIENT))
}

fn token_success(issued: &Issued) -> Response {
    let body = json!({
        "access_token": issued.access_token,
        "token_type": "Bearer",
        "expires_in": issued.grant.expires_in(),
        "refresh_token": issued.refresh_token,
        "scope": issued.grant.scopes.join(" "),
        "created_at": issued.grant.created_at.timestamp(),
    });
    (no_store(), Json(body)).into_response()
}

/// GitLab's error pages are HTML, whatever the client accepts.
fn error_page(status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let message = match status.as_u16() {
        502 | 504 => "Whoops, GitLab is taking too much time to respond.",
        503 => "GitLab is not responding.",
        _ => "We're sorry, something went wrong on our end.",
    };
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        format!(
            "<!DOCTYPE html>\n<html><head><title>Something went wrong ({})</title></head>\
             <body><h1>{}</h1><h3>{message}</h3></body></html>\n",
            status.as_u16(),
            status.as_u16()
        ),
    )
        .into_response()
}

// ---------------------------------------------------------------------------
// Token info and revocation (Doorkeeper endpoints, outside API v4).

fn oauth_invalid_token(description: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"Doorkeeper\", error=\"invalid_token\""),
        )],
        Json(json!({
            "error": "invalid_token",
            "error_description": description,
            "state": "unauthorized",
        })),
    )
        .into_response()
}

async fn token_info(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    s.switches.api_hang_wait().await;
    let Some(token) = authorization_token(&headers, &["bearer"]) else {
        return oauth_invalid_token("The access token is invalid");
    };
    let now = s.now();
    let Some(grant) = s.gitlab.find(&token, now) else {
        return oauth_invalid_token("The access token is invalid");
    };
    let owner_id = s.github_user(&grant.subject).map(|u| u.id);
    let expires_in = grant.expires_at.map(|at| (at - now).num_seconds().max(0));
    Json(json!({
        "resource_owner_id": owner_id,
        "scope": grant.scopes,
        "expires_in": expires_in,
        "application": { "uid": grant.client_id },
        "created_at": grant.created_at.timestamp(),
        // deprecated duplicates GitLab still sends
        "scopes": grant.scopes,
        "expires_in_seconds": expires_in,
    }))
    .into_response()
}

/// RFC 7009: 200 with `{}` for revoked and unknown tokens alike; 403 for a
/// token of another application, as Doorkeeper answers.
async fn revoke(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(form) = parse_form(&body) else {
        return TokenError::new("invalid_request", "The request is malformed.").into_response();
    };
    let app = match client(&s, &headers, &form) {
        Ok(app) => app,
        Err(err) => return err.into_response(),
    };
    let Some(token) = form.get("token") else {
        return Json(json!({})).into_response();
    };
    if let Some(grant) = s.gitlab.find(token, s.now())
        && grant.client_id != app.client_id
    {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({
                "error": "unauthorized_client",
                "error_description": "You are not authorized to revoke this token",
            })),
        )
            .into_response();
    }
    if s.gitlab.revoke(token) {
        Counters::bump(&s.counters.revocations);
    }
    Json(json!({})).into_response()
}

// ---------------------------------------------------------------------------
// API v4.

fn api_message(status: StatusCode) -> Response {
    let message = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    (status, Json(json!({ "message": message }))).into_response()
}

pub(crate) async fn not_found() -> Response {
    api_message(StatusCode::NOT_FOUND)
}

fn api_invalid_token(description: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({ "error": "invalid_token", "error_description": description })),
    )
        .into_response()
}

/// GitLab.com's `RateLimit-*` headers for the authenticated API throttle.
fn rate_limit_headers(observed: u64, reset: DateTime<Utc>) -> Vec<(HeaderName, HeaderValue)> {
    [
        header_pair("ratelimit-name", "throttle_authenticated_api"),
        header_pair("ratelimit-limit", &RATE_LIMIT.to_string()),
        header_pair("ratelimit-observed", &observed.to_string()),
        header_pair(
            "ratelimit-remaining",
            &RATE_LIMIT.saturating_sub(observed).to_string(),
        ),
        header_pair("ratelimit-reset", &reset.timestamp().to_string()),
        header_pair(
            "ratelimit-resettime",
            &reset.format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
        ),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The answer `user_api_status` asks for: 429 as GitLab's throttle sends it
/// (plain text, `Retry-After`, exhausted `RateLimit-*`), 5xx as its error
/// pages, anything else as an API message.
fn switched_status(s: &Shared, status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let reset = s.now() + Duration::seconds(RETRY_AFTER_SECONDS);
    match status.as_u16() {
        429 => {
            let mut headers = rate_limit_headers(RATE_LIMIT + 1, reset);
            headers.extend(header_pair("retry-after", &RETRY_AFTER_SECONDS.to_string()));
            with_headers(headers, throttled())
        }
        502..=504 => error_page(status.as_u16()),
        _ => api_message(status),
    }
}

/// The body of GitLab's throttle (HTTP 429), without its headers.
pub(crate) fn throttled() -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"))],
        "Retry later\n",
    )
        .into_response()
}

/// Who a token acts as.
enum Owner<'a> {
    User(&'a MockGitUser),
    /// The bot user of a project or group access token.
    Bot {
        id: u64,
        username: String,
        name: String,
    },
}

struct Caller<'a> {
    owner: Owner<'a>,
    scopes: Vec<String>,
    /// Set for personal (and project/group) access tokens.
    pat: Option<(String, Pat)>,
}

/// A GitLab token's last day: it stops working at 00:00 UTC of its
/// `expires_at` date, which is all GitLab stores.
fn expiry_date(pat: &Pat) -> Option<NaiveDate> {
    pat.spec.expires_at.map(|at| at.date_naive())
}

pub(crate) fn pat_expired(pat: &Pat, now: DateTime<Utc>) -> bool {
    expiry_date(pat).is_some_and(|d| d.and_time(chrono::NaiveTime::MIN).and_utc() <= now)
}

/// A number derived from the token, stable for its lifetime: ids and bot
/// user names.
fn digest_hex(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn digest_number(token: &str, modulo: u64) -> u64 {
    let d = Sha256::digest(token.as_bytes());
    let mut n = 0u64;
    for b in d.iter().take(8) {
        n = (n << 8) | u64::from(*b);
    }
    n % modulo
}

/// The caller of an API v4 request: `PRIVATE-TOKEN` or a bearer token, an
/// OAuth token from the book or a personal access token from the PAT book.
fn caller<'a>(s: &'a Shared, headers: &HeaderMap) -> Result<Caller<'a>, Response> {
    let Some(token) = presented_token(Flavour::Gitlab, headers) else {
        return Err(api_message(StatusCode::UNAUTHORIZED));
    };
    let now = s.now();
    if let Some(grant) = s.gitlab.find(&token, now) {
        let user = s
            .github_user(&grant.subject)
            .ok_or_else(|| api_message(StatusCode::UNAUTHORIZED))?;
        return Ok(Caller {
            owner: Owner::User(user),
            scopes: grant.scopes,
            pat: None,
        });
    }
    let Some(pat) = s.pats.find(Flavour::Gitlab, &token) else {
        return Err(api_message(StatusCode::UNAUTHORIZED));
    };
    if pat.revoked {
        return Err(api_invalid_token(TOKEN_REVOKED));
    }
    if pat_expired(&pat, now) {
        return Err(api_invalid_token(TOKEN_EXPIRED));
    }
    let owner = match pat.spec.kind.as_str() {
        kind @ ("project" | "group") => {
            let n = digest_number(
                &format!("{}/{:?}", pat.spec.owner, pat.spec.repositories),
                100_000,
            ) + 1;
            let hash = digest_hex(&token);
            Owner::Bot {
                id: 5_000_000 + digest_number(&token, 1_000_000),
                username: format!("{kind}_{n}_bot_{}", &hash[..32]),
                name: format!("{kind} access token bot"),
            }
        }
        _ => Owner::User(
            s.github_user(&pat.spec.owner)
                .ok_or_else(|| api_message(StatusCode::UNAUTHORIZED))?,
        ),
    };
    Ok(Caller {
        owner,
        scopes: pat.spec.scopes.clone(),
        pat: Some((token, pat)),
    })
}

impl Owner<'_> {
    fn id(&self) -> u64 {
        match self {
            Self::User(u) => u.id,
            Self::Bot { id, .. } => *id,
        }
    }
}

fn user_json(s: &Shared, owner: &Owner<'_>) -> Value {
    let base = format!("{}/gitlab", s.base_url());
    let (id, username, name, bot) = match owner {
        Owner::User(u) => (u.id, u.login.as_str(), u.name.as_str(), false),
        Owner::Bot { id, username, name } => (*id, username.as_str(), name.as_str(), true),
    };
    json!({
        "id": id,
        "username": username,
        "name": name,
        "state": "active",
        "locked": false,
        "avatar_url": format!("{base}/uploads/-/system/user/avatar/{id}/avatar.png"),
        "web_url": format!("{base}/{username}"),
        "created_at": "2020-01-01T00:00:00.000Z",
        "bio": "",
        "location": "",
        "public_email": null,
        "bot": bot,
        "two_factor_enabled": false,
        "external": false,
        "private_profile": false,
    })
}

/// The common start of every API v4 handler: the hang and status
/// switches, then the caller.
async fn api_caller<'a>(s: &'a Shared, headers: &HeaderMap) -> Result<Caller<'a>, Response> {
    s.switches.api_hang_wait().await;
    if let Some(status) = s.switches.get().user_api_status {
        return Err(switched_status(s, status));
    }
    caller(s, headers)
}

async fn user(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let observed = Counters::bump(&s.counters.user_requests);
    let caller = match api_caller(&s, &headers).await {
        Ok(c) => c,
        Err(response) => return response,
    };
    // GET /user takes any of these scopes (read_api and api cover every GET);
    // a fine-grained token, the User permission read_user.
    let allowed = if is_fine_grained(&caller) {
        caller.scopes.iter().any(|sc| sc == "read_user:user")
    } else {
        caller
            .scopes
            .iter()
            .any(|sc| matches!(sc.as_str(), "api" | "read_api" | "read_user"))
    };
    if !allowed {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({
                "error": "insufficient_scope",
                "error_description": "The request requires higher privileges than provided by the access token.",
                "scope": "api read_api read_user",
            })),
        )
            .into_response();
    }
    let reset = s.now() + Duration::seconds(RETRY_AFTER_SECONDS);
    with_headers(
        rate_limit_headers(observed, reset),
        Json(user_json(&s, &caller.owner)).into_response(),
    )
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn is_fine_grained(caller: &Caller<'_>) -> bool {
    caller
        .pat
        .as_ref()
        .is_some_and(|(_, p)| p.spec.kind == "fine_grained")
}

/// A fine-grained token's `granular_scopes`, from its `permission:access`
/// spec scopes: one entry per access boundary, and per project for
/// `selected_memberships` (the spec's repositories, or its owner's demo one).
fn granular_scopes(pat: &Pat) -> Vec<Value> {
    let mut by_access: Vec<(String, Vec<String>)> = Vec::new();
    for sc in &pat.spec.scopes {
        let (permission, access) = sc
            .split_once(':')
            .unwrap_or((sc.as_str(), "all_memberships"));
        match by_access.iter_mut().find(|(a, _)| a == access) {
            Some((_, ps)) => ps.push(permission.to_owned()),
            None => by_access.push((access.to_owned(), vec![permission.to_owned()])),
        }
    }
    let mut out = Vec::new();
    for (access, permissions) in by_access {
        if access == "selected_memberships" {
            let projects = if pat.spec.repositories.is_empty() {
                vec![format!("{}/demo", pat.spec.owner)]
            } else {
                pat.spec.repositories.clone()
            };
            for project in projects {
                out.push(json!({
                    "access": access,
                    "permissions": permissions,
                    "project_id": digest_number(&project, 1_000_000) + 1,
                    "group_id": null,
                }));
            }
        } else {
            out.push(json!({
                "access": access,
                "permissions": permissions,
                "project_id": null,
                "group_id": null,
            }));
        }
    }
    out
}

/// A PAT's record as `personal_access_tokens/self` (and rotation) show it.
fn pat_record(token: &str, pat: &Pat, user_id: u64, now: DateTime<Utc>) -> Value {
    let mut record = json!({
        "id": digest_number(token, 1_000_000) + 1,
        "name": format!("{} token", pat.spec.kind),
        "revoked": pat.revoked,
        "created_at": timestamp(now - Duration::days(1)),
        "description": null,
        "scopes": pat.spec.scopes,
        "user_id": user_id,
        "last_used_at": timestamp(now),
        "active": !pat.revoked && !pat_expired(pat, now),
        "expires_at": expiry_date(pat).map(|d| d.format("%Y-%m-%d").to_string()),
    });
    if pat.spec.kind == "fine_grained" {
        record["scopes"] = json!([]);
        record["granular_scopes"] = Value::Array(granular_scopes(pat));
    }
    record
}

/// Any token may read its own record, whatever its scopes. OAuth tokens
/// have none here.
async fn pat_self(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let caller = match api_caller(&s, &headers).await {
        Ok(c) => c,
        Err(response) => return response,
    };
    let Some((token, pat)) = &caller.pat else {
        return api_message(StatusCode::NOT_FOUND);
    };
    Json(pat_record(token, pat, caller.owner.id(), s.now())).into_response()
}

/// How long a rotated token lives when the request names no `expires_at`
/// (GitLab's `PersonalAccessTokens::RotateService::EXPIRATION_PERIOD`).
const ROTATED_DEFAULT_DAYS: i64 = 7;
/// The latest `expires_at` GitLab accepts by default: a year from today.
const MAX_LIFETIME_DAYS: i64 = 365;

fn bad_request(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "message": format!("400 Bad request - {message}") })),
    )
        .into_response()
}

/// `expires_at` from a JSON or form body, or the query string.
fn requested_expiry(query: Option<&str>, body: &[u8]) -> Result<Option<NaiveDate>, Response> {
    let raw = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v.get("expires_at")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .or_else(|| parse_form(body).and_then(|f| f.get("expires_at").cloned()))
        .or_else(|| {
            query
                .and_then(|q| parse_form(q.as_bytes()))
                .and_then(|f| f.get("expires_at").cloned())
        });
    match raw {
        None => Ok(None),
        Some(r) if r.is_empty() => Ok(None),
        Some(r) => NaiveDate::parse_from_str(&r, "%Y-%m-%d")
            .map(Some)
            .map_err(|_| bad_request("expires_at is invalid")),
    }
}

/// `POST /api/v4/personal_access_tokens/self/rotate`: the presented PAT
/// rotates itself (scope `api` or `self_rotate`; a fine-grained token, the
/// permission `self_rotate`). A rotated token presented again gets 401 and
/// its successor is revoked.
async fn pat_self_rotate(
    State(s): State<Arc<Shared>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    Counters::bump(&s.counters.pat_rotate_requests);
    s.counters.touch();
    s.switches.api_hang_wait().await;
    let switches = s.switches.get();
    if let Some(status) = switches.pat_rotate_status {
        return switched_status(&s, status);
    }
    let Some(token) = presented_token(Flavour::Gitlab, &headers) else {
        return api_message(StatusCode::UNAUTHORIZED);
    };
    let now = s.now();
    let Some(pat) = s.pats.find(Flavour::Gitlab, &token) else {
        return api_message(StatusCode::UNAUTHORIZED);
    };
    if pat.revoked {
        // reuse detection: a rotated token kills the token it became
        if let Rotation::Reused = s.pats.rotate(Flavour::Gitlab, &token, now) {
            tracing::debug!(
                "mock gitlab: a rotated token was rotated again; its successor is revoked"
            );
        }
        return api_invalid_token(TOKEN_REVOKED);
    }
    if pat_expired(&pat, now) {
        return api_invalid_token(TOKEN_EXPIRED);
    }
    let may_rotate = if pat.spec.kind == "fine_grained" {
        pat.spec
            .scopes
            .iter()
            .any(|sc| sc.split(':').next() == Some("self_rotate"))
    } else {
        pat.spec
            .scopes
            .iter()
            .any(|sc| matches!(sc.as_str(), "api" | "self_rotate"))
    };
    if !may_rotate {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({
                "error": "insufficient_scope",
                "error_description": "The request requires higher privileges than provided by the access token.",
                "scope": "api self_rotate",
            })),
        )
            .into_response();
    }
    let today = now.date_naive();
    let expires_on = match requested_expiry(uri.query(), &body) {
        Ok(Some(d)) if d <= today => return bad_request("expires_at must be in the future"),
        Ok(Some(d)) if d > today + Duration::days(MAX_LIFETIME_DAYS) => {
            return bad_request(&format!(
                "expires_at must be at most {MAX_LIFETIME_DAYS} days from today"
            ));
        }
        Ok(Some(d)) => d,
        Ok(None) => today + Duration::days(ROTATED_DEFAULT_DAYS),
        Err(response) => return response,
    };
    let expires_at = expires_on.and_time(chrono::NaiveTime::MIN).and_utc();
    let Rotation::Rotated(new) = s.pats.rotate(Flavour::Gitlab, &token, expires_at) else {
        return api_invalid_token(TOKEN_REVOKED);
    };
    Counters::bump(&s.counters.pat_rotations);
    s.counters.touch();
    if switches.pat_rotate_lose_answer {
        return error_page(502);
    }
    let Some(fresh) = s.pats.find(Flavour::Gitlab, &new) else {
        return api_message(StatusCode::INTERNAL_SERVER_ERROR);
    };
    let owner_id = s.github_user(&fresh.spec.owner).map(|u| u.id).unwrap_or(0);
    let mut record = pat_record(&new, &fresh, owner_id, now);
    record["token"] = Value::String(new);
    Json(record).into_response()
}
