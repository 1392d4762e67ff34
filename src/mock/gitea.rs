//! The `gitea` flavour, served under `/gitea` (so a broker's `base_url` is
//! `<mock>/gitea`): Gitea's OAuth2 provider (consent page, PKCE S256
//! verified when the authorization request had a challenge, JSON token
//! answers without `scope`, one-hour access tokens, refresh tokens that
//! rotate on every use, `/login/oauth/userinfo`; no revocation endpoint, as
//! in Gitea) and the bits of API v1 the broker uses: `GET /api/v1/user`
//! and `GET|PATCH /api/v1/repos/{owner}/{repo}`, with Gitea's scope check
//! (read for GET, write for other methods) made before anything else and
//! refused with its 403 `token does not have at least one of required
//! scope(s): [...]`. Forgejo answers the same.
//!
//! Gitea users are the mock's GitHub users under the same logins. Access
//! tokens come from the shared `PatBook` (flavour `gitea`, kind `personal`:
//! 40 hex characters, scopes such as `write:repository`, `read:user`, `all`;
//! kind `oauth`: shaped like an OAuth access token, for pasting the wrong
//! kind).
//! An OAuth grant whose scopes name no Gitea scope (only `openid`,
//! `profile`, `email`, `groups`, or none) has full access, as Gitea grants
//! it. Git over HTTPS (module `git`) takes the token as the password of
//! HTTP Basic with any username.

use super::book::{Issued, Lifetimes, TokenStyle};
use super::consent::{self, Consent, Refusal, known_scopes};
use super::control::Counters;
use super::oauth::{
    AuthMethod, CodeRefused, TokenPages, authenticate, exchange_code, parse_form, parse_scopes,
    presented_token, refresh_grant, token_endpoint,
};
use super::pages::Wording;
use super::pats::Flavour;
use super::{MockGitUser, Shared};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use std::sync::Arc;

/// Gitea's OAuth access and refresh tokens are signed JWTs; the mock's
/// start like one (a JWS header and a dot), then are opaque, which is all
/// the broker looks at.
pub(crate) const JWT_START: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6Im1vY2siLCJ0eXAiOiJKV1QifQ.";
pub(crate) const TOKEN_STYLE: TokenStyle = TokenStyle::new((JWT_START, 64), (JWT_START, 64), 32);

/// Gitea's defaults: `ACCESS_TOKEN_EXPIRATION_TIME = 3600` seconds,
/// `REFRESH_TOKEN_EXPIRATION_TIME = 730` hours.
const ACCESS_SECONDS: i64 = 3_600;
const REFRESH_DAYS: i64 = 30;
pub(crate) const LIFETIMES: Lifetimes = Lifetimes::new(ACCESS_SECONDS, REFRESH_DAYS);
const BANNER: &str = "Mock Gitea";

/// Gitea's scope categories (`models/auth/access_token_scope.go`).
const CATEGORIES: &[&str] = &[
    "activitypub",
    "admin",
    "issue",
    "misc",
    "notification",
    "organization",
    "package",
    "repository",
    "user",
];

/// The OpenID scopes, which alone leave a grant with full access.
const OPENID_SCOPES: &[&str] = &["openid", "profile", "email", "groups"];

/// Scopes an authorization request may name.
const KNOWN_SCOPES: &[&str] = &[
    "openid",
    "profile",
    "email",
    "groups",
    "all",
    "public-only",
    "read:activitypub",
    "write:activitypub",
    "read:admin",
    "write:admin",
    "read:issue",
    "write:issue",
    "read:misc",
    "write:misc",
    "read:notification",
    "write:notification",
    "read:organization",
    "write:organization",
    "read:package",
    "write:package",
    "read:repository",
    "write:repository",
    "read:user",
    "write:user",
];

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/login/oauth/authorize", consent::route(&CONSENT))
        .route("/login/oauth/access_token", post(token))
}

/// The routes that read a token.
pub(crate) fn api_routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/login/oauth/userinfo", get(userinfo))
        .route("/api/v1/user", get(user))
        .route(
            "/api/v1/repos/{owner}/{repo}",
            get(repository).patch(repository),
        )
}

/// Whether scopes `held` (a token's or a grant's) cover `wanted`
/// (`read:…` or `write:…`): `all`, the scope itself, or for a read its
/// write.
pub(crate) fn covers(held: &[String], wanted: &str) -> bool {
    // a grant that names no Gitea scope has full access
    let full = held.iter().all(|h| OPENID_SCOPES.contains(&h.as_str()));
    full || held.iter().any(|h| {
        h == "all"
            || h == wanted
            || wanted
                .strip_prefix("read:")
                .is_some_and(|cat| h.strip_prefix("write:") == Some(cat))
    })
}

// ---------------------------------------------------------------------------
// Authorization.

const INVALID_PKCE: Refusal = Refusal::Back(
    "invalid_request",
    "unsupported code challenge method or invalid code challenge",
);

const CONSENT: Consent = Consent {
    banner: BANNER,
    wording: Wording {
        heading: "",
        lead: "",
        asks: "would like to access your account. If you grant access, it will be able to:",
        no_scopes: "Access all of your public and private resources.",
        user_prefix: "",
        approve: "Grant Application Access",
        redirect_note: "You will be redirected to",
    },
    book: |s| &s.gitea,
    unknown_client: (
        StatusCode::BAD_REQUEST,
        "Not Found",
        "Client ID not registered",
    ),
    redirect_required: true,
    bad_redirect: ("Unregistered Redirect URI", "Unregistered Redirect URI"),
    bad_callback: (
        "Unregistered Redirect URI",
        "The application's redirect URI is not an absolute URL.",
    ),
    response_type: Some(Refusal::Back(
        "unsupported_response_type",
        "Only code response type is supported.",
    )),
    // space-separated, each one Gitea knows
    scopes: |scope| {
        known_scopes(
            parse_scopes(scope, &[' ']),
            KNOWN_SCOPES,
            "invalid access token scope",
        )
    },
    scopes_first: false,
    bad_challenge: INVALID_PKCE,
    bad_method: INVALID_PKCE,
    no_login: "No user was chosen.",
    bad_decision: "decision must be approve or deny.",
    no_user: "There is no Gitea user with that name.",
    denied: &[("error_description", "the request is denied")],
};

// ---------------------------------------------------------------------------
// The token endpoint: Gitea answers every error with HTTP 400 and
// `{"error", "error_description"}`.

fn token_error(error: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

/// Gitea's 5xx pages are HTML.
fn error_page(status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        format!(
            "<!DOCTYPE html>\n<html><head><title>{} - Gitea</title></head><body><p>{}</p></body></html>\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("Error")
        ),
    )
        .into_response()
}

const TOKEN_PAGES: TokenPages = TokenPages {
    flavour: Flavour::Gitea,
    error_page,
    refresh_status: |_, status| match status {
        429 => api_message(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests"),
        _ => error_page(status),
    },
};

async fn token(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    token_endpoint(&s, &TOKEN_PAGES, &body, |told| {
        if let Some(code) = told {
            return token_error(code, "The mock provider was told to fail this request.");
        }
        match grant(&s, &headers, &body) {
            Ok(issued) => token_success(&issued),
            Err(response) => response,
        }
    })
    .await
}

fn grant(s: &Shared, headers: &HeaderMap, body: &[u8]) -> Result<Issued, Response> {
    let form = parse_form(body)
        .ok_or_else(|| token_error("invalid_request", "cannot parse the request body"))?;
    // client_secret_post or client_secret_basic, both taken by Gitea
    let app = authenticate(s, headers, &form, &[AuthMethod::Post, AuthMethod::Basic])
        .ok_or_else(|| token_error("unauthorized_client", "invalid client secret"))?;
    match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => exchange_code(s, &s.gitea, &app, &form, Some(LIFETIMES))
            .map_err(|refused| match refused {
                CodeRefused::BadCode => {
                    token_error("unauthorized_client", "client is not authorized")
                }
                CodeRefused::RedirectMismatch => {
                    token_error("unauthorized_client", "unexpected redirect URI")
                }
                CodeRefused::Verifier => {
                    token_error("unauthorized_client", "failed PKCE code challenge")
                }
            }),
        Some("refresh_token") => {
            let refresh = form.get("refresh_token").ok_or_else(|| {
                token_error("unauthorized_client", "unable to parse refresh token")
            })?;
            // Rotation: the old pair dies (INVALIDATE_REFRESH_TOKENS = true).
            refresh_grant(
                s,
                Flavour::Gitea,
                &s.gitea,
                &app.client_id,
                refresh,
                LIFETIMES,
            )
            .ok_or_else(|| token_error("invalid_grant", "client is not authorized"))
        }
        Some(_) | None => Err(token_error(
            "unsupported_grant_type",
            "Only refresh_token or authorization_code grant type is supported",
        )),
    }
}

fn token_success(issued: &Issued) -> Response {
    // no `scope`: Gitea grants what was asked and does not say so
    let body = json!({
        "access_token": issued.access_token,
        "token_type": "bearer",
        "expires_in": issued.grant.expires_in(),
        "refresh_token": issued.refresh_token,
    });
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(body),
    )
        .into_response()
}

// ---------------------------------------------------------------------------
// API v1.

fn api_message(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({ "message": message, "url": "/api/swagger" })),
    )
        .into_response()
}

pub(crate) async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "errors": null, "message": "The target couldn't be found.", "url": "/api/swagger" })),
    )
        .into_response()
}

/// The body of a Gitea that limits requests (Gitea has no API rate limit
/// of its own: a proxy in front of it answers this).
pub(crate) fn rate_limited() -> Response {
    api_message(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests")
}

fn unauthorized() -> Response {
    api_message(StatusCode::UNAUTHORIZED, "token is required")
}

/// Who a token acts as and what it may do.
pub(crate) struct Caller<'a> {
    pub user: &'a MockGitUser,
    pub scopes: Vec<String>,
    /// OAuth access tokens (not access tokens pasted by a person).
    pub oauth: bool,
}

/// The caller of a token, live OAuth grant or access token.
pub(crate) fn caller_of<'a>(s: &'a Shared, token: &str) -> Option<Caller<'a>> {
    let now = s.now();
    if let Some(grant) = s.gitea.find(token, now) {
        return Some(Caller {
            user: s.github_user(&grant.subject)?,
            scopes: grant.scopes,
            oauth: true,
        });
    }
    let pat = s.pats.find(Flavour::Gitea, token).filter(|p| p.live(now))?;
    Some(Caller {
        user: s.github_user(&pat.spec.owner)?,
        scopes: pat.spec.scopes,
        oauth: false,
    })
}

/// The common start of every API handler: the hang and status switches,
/// then the caller, then Gitea's scope check for `category` at the level
/// the method asks (read for GET, write otherwise).
async fn api_caller<'a>(
    s: &'a Shared,
    headers: &HeaderMap,
    method: &Method,
    category: &str,
) -> Result<Caller<'a>, Response> {
    s.switches.api_hang_wait().await;
    if let Some(status) = s.switches.get().user_api_status {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Err(match status.as_u16() {
            429 => rate_limited(),
            s if s >= 500 => error_page(s),
            _ => api_message(status, status.canonical_reason().unwrap_or("Error")),
        });
    }
    let token = presented_token(Flavour::Gitea, headers).ok_or_else(unauthorized)?;
    let caller = caller_of(s, &token).ok_or_else(unauthorized)?;
    debug_assert!(CATEGORIES.contains(&category));
    let level = if *method == Method::GET || *method == Method::HEAD {
        "read"
    } else {
        "write"
    };
    let wanted = format!("{level}:{category}");
    if !covers(&caller.scopes, &wanted) {
        return Err(api_message(
            StatusCode::FORBIDDEN,
            &format!("token does not have at least one of required scope(s): [{wanted}]"),
        ));
    }
    Ok(caller)
}

fn user_json(s: &Shared, u: &MockGitUser) -> serde_json::Value {
    let base = format!("{}/gitea", s.base_url());
    json!({
        "id": u.id,
        "login": u.login,
        "login_name": "",
        "source_id": 0,
        "full_name": u.name,
        "email": format!("{}@example.com", u.login),
        "avatar_url": format!("{base}/avatars/{}", u.id),
        "html_url": format!("{base}/{}", u.login),
        "language": "en-US",
        "is_admin": false,
        "last_login": "2026-01-01T00:00:00Z",
        "created": "2020-01-01T00:00:00Z",
        "restricted": false,
        "active": true,
        "prohibit_login": false,
        "location": "",
        "website": "",
        "description": "",
        "visibility": "public",
        "followers_count": 0,
        "following_count": 0,
        "starred_repos_count": 0,
        "username": u.login,
    })
}

async fn user(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    Counters::bump(&s.counters.user_requests);
    match api_caller(&s, &headers, &Method::GET, "user").await {
        Ok(caller) => Json(user_json(&s, caller.user)).into_response(),
        Err(response) => response,
    }
}

/// `GET` or `PATCH /api/v1/repos/{owner}/{repo}`: the scope check, then
/// the repository, which the API of the mock does not know: 404 (the
/// broker's `write:repository` probe names a repository nobody has), or
/// with `probes_succeed` an edit that went through.
async fn repository(
    State(s): State<Arc<Shared>>,
    method: Method,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    Counters::bump(&s.counters.repo_requests);
    if let Err(response) = api_caller(&s, &headers, &method, "repository").await {
        return response;
    }
    if method == Method::PATCH && s.switches.get().probes_succeed {
        return Json(json!({ "full_name": format!("{owner}/{repo}"), "name": repo }))
            .into_response();
    }
    not_found().await
}

/// OpenID Connect userinfo: OAuth access tokens only.
async fn userinfo(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    s.switches.api_hang_wait().await;
    let caller = presented_token(Flavour::Gitea, &headers)
        .and_then(|t| caller_of(&s, &t))
        .filter(|c| c.oauth);
    let Some(caller) = caller else {
        return (
            StatusCode::UNAUTHORIZED,
            [(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"\", error=\"invalid_token\""),
            )],
            Json(json!({ "error": "invalid_token", "error_description": "invalid token" })),
        )
            .into_response();
    };
    let u = caller.user;
    Json(json!({
        "sub": u.id.to_string(),
        "name": u.name,
        "preferred_username": u.login,
        "email": format!("{}@example.com", u.login),
        "email_verified": true,
        "picture": format!("{}/gitea/avatars/{}", s.base_url(), u.id),
        "groups": [],
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn scope_check_as_gitea_makes_it() {
        assert!(covers(&s(&["write:repository"]), "read:repository"));
        assert!(covers(&s(&["write:repository"]), "write:repository"));
        assert!(!covers(&s(&["read:repository"]), "write:repository"));
        assert!(!covers(&s(&["write:repository"]), "read:user"));
        assert!(covers(&s(&["all"]), "write:admin"));
        // an OAuth grant with only OpenID scopes, or none, has full access
        assert!(covers(&s(&["openid", "profile"]), "write:repository"));
        assert!(covers(&[], "read:user"));
        assert!(!covers(&s(&["openid", "read:user"]), "read:repository"));
        assert!(!covers(&s(&["public-only"]), "read:repository"));
    }
}
