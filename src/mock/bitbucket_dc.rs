//! The `bitbucket_data_center` flavour, nested under `/bitbucket-dc`: the
//! OAuth 2.0 provider (`/rest/oauth2/latest/authorize` with the request's
//! space-separated scopes, `/rest/oauth2/latest/token` with client
//! credentials in the body or by HTTP Basic) and the parts of REST API 1.0
//! the broker reads:
//! - `/rest/api/1.0/application-properties`, with `X-AUSERNAME` naming the
//!   caller (absent for an anonymous call);
//! - `/rest/api/1.0/repos?permission=…`, the repositories the caller can
//!   use with that permission (the broker's probe);
//! - `/rest/api/1.0/users/{slug}`, `"type": "NORMAL"` or `"SERVICE"`.
//!
//! Callers: OAuth access tokens and HTTP access tokens as Bearer tokens;
//! personal HTTP access tokens also as Basic with the token owner's name.
//! Project and repository tokens are Bearer-only (Basic with one is 401, as
//! Atlassian documents for 7.17–9.1) and act as a service user named by the
//! token's `owner`. Git over HTTPS (`/scm/…`, module `git`) follows the
//! same rules.
//!
//! Counters: authorize page and token endpoint as for every flavour;
//! `application-properties` counts as `user_requests`.

use super::Shared;
use super::bitbucket_cloud::{self, Realm, token_request};
use super::book::{Lifetimes, TokenStyle};
use super::consent::{self, Consent, known_scopes};
use super::control::Counters;
use super::oauth::{
    AuthMethod, SPACE_OR_COMMA, authorization_token, basic_auth, header_pair, parse_scopes,
};
use super::pats::Flavour;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

pub(crate) const TOKEN_STYLE: TokenStyle = TokenStyle::new(("", 44), ("", 44), 32);

/// Data Center's defaults: access tokens one hour, refresh tokens 90 days.
const ACCESS_SECONDS: i64 = 3_600;
const REFRESH_DAYS: i64 = 90;
pub(crate) const LIFETIMES: Lifetimes = Lifetimes::new(ACCESS_SECONDS, REFRESH_DAYS);

const SCOPES: &[&str] = &[
    "PUBLIC_REPOS",
    "ACCOUNT_WRITE",
    "REPO_READ",
    "REPO_WRITE",
    "REPO_ADMIN",
    "PROJECT_ADMIN",
    "ADMIN",
    "SYSTEM_ADMIN",
];

const CONSENT: Consent = Consent {
    banner: "Mock Bitbucket Data Center",
    book: |s| &s.bitbucket_dc,
    // the request's, each one Data Center knows
    scopes: |scope| {
        let asked = parse_scopes(scope, SPACE_OR_COMMA);
        known_scopes(asked, SCOPES, "unknown scope requested")
    },
    ..bitbucket_cloud::CONSENT
};

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/rest/oauth2/latest/authorize", consent::route(&CONSENT))
        .route("/rest/oauth2/latest/token", post(token))
}

/// The REST API 1.0.
pub(crate) fn api_routes() -> Router<Arc<Shared>> {
    Router::new()
        .route(
            "/rest/api/1.0/application-properties",
            get(application_properties),
        )
        .route("/rest/api/1.0/repos", get(repos))
        .route("/rest/api/1.0/users/{slug}", get(user))
}

async fn token(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    token_request(
        &s,
        &headers,
        &body,
        &[AuthMethod::Post, AuthMethod::Basic],
        Realm {
            flavour: Flavour::BitbucketDataCenter,
            book: &s.bitbucket_dc,
            lifetimes: LIFETIMES,
        },
        |issued, _| {
            json!({
                "scope": issued.grant.scopes.join(" "),
                "access_token": issued.access_token,
                "token_type": "bearer",
                "expires_in": issued.grant.expires_in(),
            })
        },
    )
    .await
}

// ---------------------------------------------------------------------------
// The REST API.

fn api_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({ "errors": [{ "context": null, "message": message, "exceptionName": null }] })),
    )
        .into_response()
}

fn unauthorized() -> Response {
    api_error(
        StatusCode::UNAUTHORIZED,
        "Authentication failed. Please check your credentials and try again.",
    )
}

/// The body of Data Center's 429, without its headers.
pub(crate) fn rate_limited() -> Response {
    api_error(StatusCode::TOO_MANY_REQUESTS, "Rate limit exceeded")
}

/// The identity a token acts as, and what it may do.
struct Caller {
    username: String,
    permissions: Vec<String>,
    /// Project and repository tokens act as a service user.
    service: bool,
    repositories: Vec<String>,
}

/// `Ok(None)`: no credentials, an anonymous call.
fn caller(s: &Shared, headers: &HeaderMap) -> Result<Option<Caller>, Response> {
    let now = s.now();
    let (token, basic_user) = match basic_auth(headers) {
        Some(Ok((user, secret))) => (secret, Some(user)),
        Some(Err(())) => return Err(unauthorized()),
        None => match authorization_token(headers, &["bearer"]) {
            Some(t) => (t, None),
            None if headers.contains_key(header::AUTHORIZATION) => return Err(unauthorized()),
            None => return Ok(None),
        },
    };
    if basic_user.is_none()
        && let Some(grant) = s.bitbucket_dc.find(&token, now)
    {
        return Ok(Some(Caller {
            repositories: vec![format!("~{}/demo", grant.subject.to_uppercase())],
            username: grant.subject,
            permissions: grant.scopes,
            service: false,
        }));
    }
    let Some(pat) = s
        .pats
        .find(Flavour::BitbucketDataCenter, &token)
        .filter(|p| p.live(now))
    else {
        return Err(unauthorized());
    };
    let owner = pat.spec.owner.clone();
    let service = pat.spec.kind != "personal";
    // Atlassian: project and repository tokens work "only with Bearer
    // authentication. Don't use this token with a username in Basic
    // authentication"
    if basic_user.is_some_and(|u| service || !u.eq_ignore_ascii_case(&owner)) {
        return Err(unauthorized());
    }
    if !service && s.github_user(&owner).is_none() {
        return Err(unauthorized());
    }
    let repositories = if pat.spec.repositories.is_empty() {
        vec![if service {
            "PROJ/demo".to_owned()
        } else {
            format!("~{}/demo", owner.to_uppercase())
        }]
    } else {
        pat.spec.repositories.clone()
    };
    Ok(Some(Caller {
        username: owner,
        permissions: pat.spec.scopes.clone(),
        service,
        repositories,
    }))
}

/// Whether `held` permissions include the repository permission `wanted`:
/// higher levels include lower ones, a project permission applies to the
/// project's repositories, global admins may do anything.
pub(crate) fn covers(held: &[String], wanted: &str) -> bool {
    let level = |p: &str| match p {
        "READ" => 1,
        "WRITE" => 2,
        "ADMIN" => 3,
        _ => 0,
    };
    let Some(want) = wanted.strip_prefix("REPO_").map(level) else {
        return false;
    };
    held.iter().any(|h| match h.as_str() {
        "ADMIN" | "SYSTEM_ADMIN" => true,
        h => h
            .strip_prefix("REPO_")
            .or_else(|| h.strip_prefix("PROJECT_"))
            .is_some_and(|l| level(l) >= want),
    })
}

/// Every API answer starts here: the hang and status switches, then the
/// caller.
async fn api_prelude(s: &Shared, headers: &HeaderMap) -> Result<Option<Caller>, Response> {
    s.switches.api_hang_wait().await;
    if let Some(status) = s.switches.get().user_api_status {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Err(match status {
            StatusCode::UNAUTHORIZED => unauthorized(),
            StatusCode::TOO_MANY_REQUESTS => {
                let mut r = rate_limited();
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
                r
            }
            _ => api_error(status, status.canonical_reason().unwrap_or("Error")),
        });
    }
    caller(s, headers)
}

async fn application_properties(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    Counters::bump(&s.counters.user_requests);
    let c = match api_prelude(&s, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let mut r = Json(json!({
        "version": "8.19.1",
        "buildNumber": "8019001",
        "buildDate": "1717000000000",
        "displayName": "Bitbucket",
    }))
    .into_response();
    if let Some(c) = c {
        r.headers_mut()
            .extend(header_pair("x-ausername", &c.username));
    }
    r
}

#[derive(Deserialize)]
struct ReposQuery {
    permission: Option<String>,
    limit: Option<usize>,
}

async fn repos(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<ReposQuery>,
) -> Response {
    let c = match api_prelude(&s, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let permission = q.permission.as_deref().unwrap_or("REPO_READ");
    if !matches!(permission, "REPO_READ" | "REPO_WRITE" | "REPO_ADMIN") {
        return api_error(
            StatusCode::BAD_REQUEST,
            "permission must be REPO_READ, REPO_WRITE or REPO_ADMIN",
        );
    }
    let limit = q.limit.unwrap_or(25).clamp(1, 1000);
    // an anonymous caller sees public repositories, and the mock has none
    let all: Vec<Value> = c
        .filter(|c| covers(&c.permissions, permission))
        .map(|c| c.repositories.iter().map(|r| repo_json(r)).collect())
        .unwrap_or_default();
    let values: Vec<Value> = all.iter().take(limit).cloned().collect();
    let last = values.len() == all.len();
    let mut page = json!({
        "size": values.len(),
        "limit": limit,
        "isLastPage": last,
        "start": 0,
        "values": values,
    });
    if !last && let Some(map) = page.as_object_mut() {
        map.insert("nextPageStart".into(), Value::from(limit));
    }
    Json(page).into_response()
}

fn repo_json(full: &str) -> Value {
    let (project, slug) = full.split_once('/').unwrap_or(("PROJ", full));
    json!({
        "slug": slug,
        "name": slug,
        "scmId": "git",
        "state": "AVAILABLE",
        "public": false,
        "project": { "key": project, "name": project },
    })
}

async fn user(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(slug): Path<String>,
) -> Response {
    let c = match api_prelude(&s, &headers).await {
        Ok(Some(c)) => c,
        Ok(None) => return unauthorized(),
        Err(r) => return r,
    };
    let slug = slug.to_lowercase();
    if let Some(u) = s
        .github_users
        .iter()
        .find(|u| u.login.to_lowercase() == slug)
    {
        return Json(json!({
            "name": u.login,
            "emailAddress": format!("{}@example.com", u.login),
            "id": u.id,
            "displayName": u.name,
            "active": true,
            "slug": slug,
            "type": "NORMAL",
        }))
        .into_response();
    }
    // service users are visible to themselves (the mock knows no others)
    if c.service && c.username.to_lowercase() == slug {
        return Json(json!({
            "name": c.username,
            "id": 90001,
            "displayName": format!("{} access token", c.username),
            "active": true,
            "slug": slug,
            "type": "SERVICE",
        }))
        .into_response();
    }
    api_error(
        StatusCode::NOT_FOUND,
        &format!("User {slug} does not exist."),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn permission_coverage() {
        assert!(covers(&s(&["REPO_WRITE"]), "REPO_READ"));
        assert!(covers(&s(&["REPO_WRITE"]), "REPO_WRITE"));
        assert!(!covers(&s(&["REPO_WRITE"]), "REPO_ADMIN"));
        assert!(covers(&s(&["PROJECT_ADMIN"]), "REPO_ADMIN"));
        assert!(covers(&s(&["PROJECT_READ"]), "REPO_READ"));
        assert!(!covers(&s(&["PROJECT_READ"]), "REPO_WRITE"));
        assert!(covers(&s(&["SYSTEM_ADMIN"]), "REPO_ADMIN"));
        assert!(!covers(&s(&["PUBLIC_REPOS"]), "REPO_READ"));
        assert!(!covers(&[], "REPO_READ"));
    }
}
