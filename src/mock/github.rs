//! The `github` flavour: GitHub's OAuth app flow (consent page, token
//! endpoint with its HTTP-200 errors and comma-separated scopes) and the bits
//! of the REST API, GitHub Enterprise style under `/api/v3`, that the broker
//! reads: `/user` with its scope headers, the applications API that checks
//! and revokes tokens, and what the broker probes fine-grained tokens with:
//! `/user/repos` and three repository writes (`POST …/git/blobs`,
//! `POST …/hooks`, `PATCH /repos/{owner}/{repo}`) that check the token's
//! scope or permission before the body, as GitHub does, and store nothing.

use super::book::{Grant, Issued, Lifetimes, TokenStyle};
use super::consent::{self, Consent, Refusal};
use super::control::Counters;
use super::oauth::{
    AuthMethod, CodeRefused, SPACE_OR_COMMA, TokenPages, authenticate, authorization_token,
    basic_auth, exchange_code, header_pair, parse_form, parse_scopes, refresh_grant, secrets_equal,
    token_endpoint, wants_json, with_headers,
};
use super::pages::Wording;
use super::pats::Flavour;
use super::{MockGitUser, MockOAuthApp, Shared};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::sync::Arc;

pub(crate) const TOKEN_STYLE: TokenStyle = TokenStyle::new(("gho_", 36), ("ghr_", 76), 20);

/// GitHub's expiring user tokens: 8 hours, refresh tokens 6 months.
const ACCESS_SECONDS: i64 = 28_800;
const REFRESH_SECONDS: i64 = 15_897_600;
const LIFETIMES: Lifetimes = Lifetimes {
    access: Duration::seconds(ACCESS_SECONDS),
    refresh: Some(Duration::seconds(REFRESH_SECONDS)),
};
const RATE_LIMIT: u64 = 5_000;

const TROUBLESHOOT_TOKEN: &str = "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/";
const REST_DOCS: &str = "https://docs.github.com/rest";
const BANNER: &str = "Mock GitHub";

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/login/oauth/authorize", consent::route(&CONSENT))
        .route("/login/oauth/access_token", post(access_token))
}

/// The REST API under `/api/v3`.
pub(crate) fn api_routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/v3/user", get(user))
        .route("/api/v3/user/repos", get(user_repos))
        .route("/api/v3/repos/{owner}/{repo}", patch(update_repo))
        .route("/api/v3/repos/{owner}/{repo}/git/blobs", post(create_blob))
        .route("/api/v3/repos/{owner}/{repo}/hooks", post(create_hook))
        .route(
            "/api/v3/applications/{client_id}/token",
            post(check_token).delete(delete_token),
        )
        .route(
            "/api/v3/applications/{client_id}/grant",
            delete(delete_grant),
        )
}

/// A token outside any flow, for tests (`issue_token`, `/__mock/tokens`).
pub(crate) fn issue_direct(
    s: &Shared,
    login: &str,
    client_id: &str,
    scopes: Vec<String>,
) -> String {
    let lifetimes = s.github_expiring().then(|| Lifetimes {
        refresh: None,
        ..s.lifetimes(LIFETIMES)
    });
    s.github
        .issue(login, client_id, scopes, s.now(), lifetimes)
        .access_token
}

// ---------------------------------------------------------------------------
// Authorization: the consent page and its decision.

const CONSENT: Consent = Consent {
    banner: BANNER,
    wording: Wording {
        heading: "",
        lead: "",
        asks: "would like permission to:",
        no_scopes: "Access public information (read-only).",
        user_prefix: "",
        approve: "Approve",
        redirect_note: "Authorizing will redirect to",
    },
    book: |s| &s.github,
    unknown_client: (
        StatusCode::NOT_FOUND,
        "Unknown OAuth application",
        "No OAuth application is registered with this client_id.",
    ),
    redirect_required: false,
    bad_redirect: (
        "Redirect URI mismatch",
        "The redirect_uri MUST match the registered callback URL for this application.",
    ),
    bad_callback: (
        "Invalid callback URL",
        "The application's callback URL is not an absolute URL.",
    ),
    response_type: None,
    scopes: |scope| Ok(parse_scopes(scope, SPACE_OR_COMMA)),
    scopes_first: false,
    bad_challenge: Refusal::Page(
        "Invalid code_challenge",
        "An S256 code_challenge is 43 characters of base64url.",
    ),
    bad_method: Refusal::Page(
        "Unsupported code_challenge_method",
        "Only code_challenge_method=S256 is supported, together with a code_challenge.",
    ),
    no_login: "No login was chosen.",
    bad_decision: "decision must be approve or deny.",
    no_user: "There is no GitHub user with that login.",
    denied: &[
        (
            "error_description",
            "The user has denied your application access.",
        ),
        (
            "error_uri",
            "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-authorization-request-errors/#access-denied",
        ),
    ],
};

// ---------------------------------------------------------------------------
// The token endpoint.

/// One of GitHub's token-endpoint error codes, answered with HTTP 200.
struct TokenError(String);

const BAD_VERIFICATION_CODE: &str = "bad_verification_code";
const INCORRECT_CLIENT_CREDENTIALS: &str = "incorrect_client_credentials";
const REDIRECT_URI_MISMATCH: &str = "redirect_uri_mismatch";
const BAD_REFRESH_TOKEN: &str = "bad_refresh_token";
const UNSUPPORTED_GRANT_TYPE: &str = "unsupported_grant_type";

impl TokenError {
    fn new(code: &str) -> Self {
        Self(code.to_owned())
    }

    /// GitHub's wording, and the anchor of its troubleshooting page.
    fn description_and_anchor(&self) -> (&'static str, &'static str) {
        match self.0.as_str() {
            BAD_VERIFICATION_CODE => (
                "The code passed is incorrect or expired.",
                "#bad-verification-code",
            ),
            INCORRECT_CLIENT_CREDENTIALS => (
                "The client_id and/or client_secret passed are incorrect.",
                "#incorrect-client-credentials",
            ),
            REDIRECT_URI_MISMATCH => (
                "The redirect_uri MUST match the registered callback URL for this application.",
                "#redirect-uri-mismatch2",
            ),
            BAD_REFRESH_TOKEN => (
                "The refresh token passed is incorrect or expired.",
                "#bad-refresh-token",
            ),
            UNSUPPORTED_GRANT_TYPE => (
                "The grant type is not supported.",
                "#unsupported-grant-type",
            ),
            _ => ("The mock provider was told to fail this request.", ""),
        }
    }

    fn into_response(self, json: bool) -> Response {
        let (description, anchor) = self.description_and_anchor();
        let uri = format!("{TROUBLESHOOT_TOKEN}{anchor}");
        oauth_body(
            json,
            &[
                ("error", Field::Str(&self.0)),
                ("error_description", Field::Str(description)),
                ("error_uri", Field::Str(&uri)),
            ],
        )
    }
}

enum Field<'a> {
    Str(&'a str),
    Num(i64),
}

/// A token-endpoint body, JSON or form-encoded as the client's `Accept`
/// asked; always HTTP 200, errors included, as GitHub does.
fn oauth_body(json: bool, fields: &[(&str, Field<'_>)]) -> Response {
    let no_store = (header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if json {
        let body: serde_json::Map<String, Value> = fields
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Field::Str(s) => Value::from(*s),
                    Field::Num(n) => Value::from(*n),
                };
                ((*k).to_owned(), v)
            })
            .collect();
        ([no_store], Json(Value::Object(body))).into_response()
    } else {
        let mut body = form_urlencoded::Serializer::new(String::new());
        for (k, v) in fields {
            match v {
                Field::Str(s) => body.append_pair(k, s),
                Field::Num(n) => body.append_pair(k, &n.to_string()),
            };
        }
        (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
                ),
                no_store,
            ],
            body.finish(),
        )
            .into_response()
    }
}

const TOKEN_PAGES: TokenPages = TokenPages {
    flavour: Flavour::Github,
    error_page: unicorn,
    refresh_status: refresh_status_page,
};

/// What `refresh_status` answers: 403 and 429 as a primary rate limit
/// (429 also with `Retry-After`), anything else as the unicorn page.
fn refresh_status_page(s: &Shared, status: u16) -> Response {
    match status {
        403 | 429 => {
            let mut response = switched_user_status(status, s.now() + Duration::hours(1));
            if status == 429 {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
            }
            response
        }
        _ => unicorn(status),
    }
}

async fn access_token(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    token_endpoint(&s, &TOKEN_PAGES, &body, |told| {
        token_response(&s, &headers, &body, told)
    })
    .await
}

fn token_response(s: &Shared, headers: &HeaderMap, body: &[u8], told: Option<&str>) -> Response {
    let json = wants_json(headers);
    if let Some(code) = told {
        return TokenError::new(code).into_response(json);
    }
    match token_grant(s, headers, body) {
        Ok(issued) => token_success(json, &issued),
        Err(err) => {
            tracing::debug!(error = %err.0, "mock github token request refused");
            err.into_response(json)
        }
    }
}

fn token_grant(s: &Shared, headers: &HeaderMap, body: &[u8]) -> Result<Issued, TokenError> {
    // GitHub has no error for a malformed body; a code it cannot read is a
    // bad code.
    let form = parse_form(body).ok_or_else(|| TokenError::new(BAD_VERIFICATION_CODE))?;
    let app = authenticate(s, headers, &form, &[AuthMethod::Basic, AuthMethod::Post])
        .ok_or_else(|| TokenError::new(INCORRECT_CLIENT_CREDENTIALS))?;
    match form.get("grant_type").map(String::as_str) {
        None | Some("authorization_code") => {
            // a GitHub App's user tokens always expire (the App setting
            // "Expire user authorization tokens" is on)
            let lifetimes = (s.github_expiring() || s.github_apps.is_user_app(&app.client_id))
                .then_some(LIFETIMES);
            exchange_code(s, &s.github, &app, &form, lifetimes).map_err(|refused| {
                TokenError::new(match refused {
                    CodeRefused::RedirectMismatch => REDIRECT_URI_MISMATCH,
                    CodeRefused::BadCode | CodeRefused::Verifier => BAD_VERIFICATION_CODE,
                })
            })
        }
        Some("refresh_token") => {
            let refresh_token = form
                .get("refresh_token")
                .ok_or_else(|| TokenError::new(BAD_REFRESH_TOKEN))?;
            refresh_grant(
                s,
                Flavour::Github,
                &s.github,
                &app.client_id,
                refresh_token,
                LIFETIMES,
            )
            .ok_or_else(|| TokenError::new(BAD_REFRESH_TOKEN))
        }
        Some(_) => Err(TokenError::new(UNSUPPORTED_GRANT_TYPE)),
    }
}

fn token_success(json: bool, issued: &Issued) -> Response {
    let scope = issued.grant.scopes.join(",");
    let mut fields = vec![("access_token", Field::Str(&issued.access_token))];
    if let Some(seconds) = issued.grant.expires_in() {
        fields.push(("expires_in", Field::Num(seconds)));
    }
    if let Some(refresh) = &issued.refresh_token {
        fields.push(("refresh_token", Field::Str(refresh)));
        fields.push(("refresh_token_expires_in", Field::Num(REFRESH_SECONDS)));
    }
    fields.push(("token_type", Field::Str("bearer")));
    fields.push(("scope", Field::Str(&scope)));
    oauth_body(json, &fields)
}

/// GitHub's 5xx page is HTML, whatever the client accepts.
fn unicorn(status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        "<!DOCTYPE html>\n<html><head><title>Unicorn! &middot; GitHub</title></head>\
         <body><p>We had issues producing the response to your request.</p></body></html>\n",
    )
        .into_response()
}

// ---------------------------------------------------------------------------
// The REST API.

fn api_error(status: StatusCode, message: &str, documentation_url: &str) -> Response {
    (
        status,
        Json(json!({
            "message": message,
            "documentation_url": documentation_url,
            "status": status.as_u16().to_string(),
        })),
    )
        .into_response()
}

fn bad_credentials() -> Response {
    api_error(StatusCode::UNAUTHORIZED, "Bad credentials", REST_DOCS)
}

pub(crate) async fn not_found() -> Response {
    api_error(StatusCode::NOT_FOUND, "Not Found", REST_DOCS)
}

fn rate_limit_headers(used: u64, reset: DateTime<Utc>) -> Vec<(HeaderName, HeaderValue)> {
    let used = used.min(RATE_LIMIT);
    [
        header_pair("x-ratelimit-limit", &RATE_LIMIT.to_string()),
        header_pair("x-ratelimit-remaining", &(RATE_LIMIT - used).to_string()),
        header_pair("x-ratelimit-reset", &reset.timestamp().to_string()),
        header_pair("x-ratelimit-used", &used.to_string()),
        header_pair("x-ratelimit-resource", "core"),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// What a bearer token may do, as the API sees it.
enum Access {
    /// OAuth app and classic tokens: scopes, reported in `X-OAuth-Scopes`.
    Scopes(Vec<String>),
    /// Fine-grained and GitHub App user tokens: `name:level` permissions.
    Permissions(Vec<String>),
    /// Installation tokens: permissions too, but they act as the app, so
    /// the user endpoints refuse them.
    Installation(Vec<String>),
}

/// The owner of a live token and what it reaches.
struct Caller {
    subject: String,
    access: Access,
    /// `owner/name` of every repository the token reaches, sorted.
    repositories: Vec<String>,
    expires_at: Option<DateTime<Utc>>,
}

/// `repository_access:public` among a fine-grained token's permissions:
/// GitHub's "Public repositories (read-only)" access. Every repository of
/// the mock is private, so such a token reaches none.
pub(crate) const PUBLIC_ONLY: &str = "repository_access:public";

/// Looks the bearer token up: OAuth tokens from the book, personal access
/// tokens made by tests. GitHub answers 401 for expired and revoked tokens
/// alike.
fn caller(s: &Shared, headers: &HeaderMap, docs: &str) -> Result<Caller, Response> {
    let Some(token) = authorization_token(headers, &["bearer", "token"]) else {
        return Err(api_error(
            StatusCode::UNAUTHORIZED,
            "Requires authentication",
            docs,
        ));
    };
    let now = s.now();
    if let Some(grant) = s.github.find(&token, now) {
        // a GitHub App's user token: the App's permissions, where the App
        // is installed (and, narrowed, only there)
        if s.github_apps.is_user_app(&grant.client_id) {
            let repositories =
                super::github_app_user::reachable(s, &grant.client_id, &grant.subject, &token);
            return Ok(Caller {
                subject: grant.subject,
                access: Access::Permissions(
                    super::github_app_user::PERMISSIONS
                        .iter()
                        .map(|p| (*p).to_owned())
                        .collect(),
                ),
                repositories,
                expires_at: None,
            });
        }
        let repositories = vec![format!("{}/demo", grant.subject)];
        return Ok(Caller {
            subject: grant.subject,
            access: Access::Scopes(grant.scopes),
            repositories,
            expires_at: None,
        });
    }
    let Some(pat) = s.pats.find(Flavour::Github, &token).filter(|p| p.live(now)) else {
        return Err(bad_credentials());
    };
    let spec = pat.spec;
    let scopes = spec.scopes;
    let access = match spec.kind.as_str() {
        "fine_grained" | "app_user" => Access::Permissions(scopes),
        "installation" => Access::Installation(scopes),
        _ => Access::Scopes(scopes),
    };
    let mut repositories = if spec.repositories.is_empty() {
        vec![format!("{}/demo", spec.owner)]
    } else {
        spec.repositories
    };
    if matches!(&access, Access::Permissions(p) if p.iter().any(|x| x == PUBLIC_ONLY)) {
        repositories.clear();
    }
    repositories.sort_by_key(|r| r.to_lowercase());
    Ok(Caller {
        subject: spec.owner,
        access,
        repositories,
        expires_at: spec.expires_at,
    })
}

impl Caller {
    /// The headers GitHub sends about the token itself.
    fn headers(&self, accepted_scopes: &str) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = Vec::new();
        if let Access::Scopes(scopes) = &self.access {
            out.extend(header_pair("x-oauth-scopes", &scopes.join(", ")));
            out.extend(header_pair("x-accepted-oauth-scopes", accepted_scopes));
        }
        if let Some(at) = self.expires_at {
            out.extend(header_pair(
                "github-authentication-token-expiration",
                &at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            ));
        }
        out.extend(header_pair("x-github-media-type", "github.v3; format=json"));
        out
    }

    /// The repository as the token names it, if it reaches it (GitHub
    /// compares owner and name without case).
    fn reaches(&self, owner: &str, repo: &str) -> Option<String> {
        let wanted = format!("{owner}/{repo}").to_lowercase();
        self.repositories
            .iter()
            .find(|r| r.to_lowercase() == wanted)
            .cloned()
    }

    /// Whether a scoped token holds one of `any_of`. Callers list every
    /// scope that would do: the mock's repositories are all private, so
    /// `public_repo` never does.
    fn has_scope(&self, any_of: &[&str]) -> bool {
        match &self.access {
            Access::Scopes(scopes) => scopes.iter().any(|s| any_of.contains(&s.as_str())),
            _ => false,
        }
    }

    /// Whether a token with permissions holds `name` at `write` or above.
    fn can_write(&self, name: &str) -> bool {
        let perms = match &self.access {
            Access::Permissions(p) | Access::Installation(p) => p,
            Access::Scopes(_) => return false,
        };
        perms
            .iter()
            .any(|p| *p == format!("{name}:write") || *p == format!("{name}:admin"))
    }
}

/// The API switches every token-reading endpoint honours: `api_hang`, then
/// `user_api_status`.
pub(crate) async fn api_switches(s: &Shared) -> Option<Response> {
    s.switches.api_hang_wait().await;
    let reset = s.now() + Duration::hours(1);
    s.switches
        .get()
        .user_api_status
        .map(|status| switched_user_status(status, reset))
}

async fn user(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let used = Counters::bump(&s.counters.user_requests);
    if let Some(switched) = api_switches(&s).await {
        return switched;
    }
    let reset = s.now() + Duration::hours(1);
    let caller = match caller(&s, &headers, USER_DOCS) {
        Ok(c) => c,
        Err(response) => return response,
    };
    if let Access::Installation(_) = caller.access {
        // an installation acts as the app: there is no authenticated user
        return with_headers(
            rate_limit_headers(used, reset),
            api_error(
                StatusCode::FORBIDDEN,
                "Resource not accessible by integration",
                USER_DOCS,
            ),
        );
    }
    let Some(user) = s.github_user(&caller.subject) else {
        return bad_credentials();
    };
    let mut out = rate_limit_headers(used, reset);
    out.extend(caller.headers("user"));
    with_headers(out, Json(user_json(&s, user)).into_response())
}

const USER_DOCS: &str = "https://docs.github.com/rest/users/users#get-the-authenticated-user";
const LIST_REPOS_DOCS: &str =
    "https://docs.github.com/rest/repos/repos#list-repositories-for-the-authenticated-user";
const BLOB_DOCS: &str = "https://docs.github.com/rest/git/blobs#create-a-blob";
const HOOK_DOCS: &str = "https://docs.github.com/rest/repos/webhooks#create-a-repository-webhook";
const UPDATE_REPO_DOCS: &str = "https://docs.github.com/rest/repos/repos#update-a-repository";

fn repo_json(s: &Shared, full_name: &str) -> Value {
    let base = s.base_url();
    let (owner, name) = full_name.split_once('/').unwrap_or((full_name, full_name));
    let owner_id = s.github_user(owner).map_or(0, |u| u.id);
    // a stable id per repository, without a repository table
    let digest = Sha256::digest(full_name.to_lowercase().as_bytes());
    let id = u64::from_be_bytes([
        0, 0, 0, digest[0], digest[1], digest[2], digest[3], digest[4],
    ]);
    json!({
        "id": id,
        "node_id": format!("R_mock{id}"),
        "name": name,
        "full_name": full_name,
        "private": true,
        "visibility": "private",
        "owner": {
            "login": owner,
            "id": owner_id,
            "type": "User",
            "url": format!("{base}/api/v3/users/{owner}"),
        },
        "html_url": format!("{base}/{full_name}"),
        "url": format!("{base}/api/v3/repos/{full_name}"),
        "clone_url": format!("{base}/{full_name}.git"),
        "default_branch": "main",
        "archived": false,
        "permissions": { "admin": true, "maintain": true, "push": true, "triage": true, "pull": true },
    })
}

#[derive(Deserialize)]
struct Page {
    per_page: Option<String>,
    page: Option<String>,
}

/// `GET /user/repos`: the repositories the token reaches, sorted by full
/// name, paginated like GitHub (`per_page` up to 100, `Link` to the next page).
async fn user_repos(
    State(s): State<Arc<Shared>>,
    Query(page): Query<Page>,
    headers: HeaderMap,
) -> Response {
    let used = Counters::bump(&s.counters.repo_requests);
    if let Some(switched) = api_switches(&s).await {
        return switched;
    }
    let reset = s.now() + Duration::hours(1);
    let caller = match caller(&s, &headers, LIST_REPOS_DOCS) {
        Ok(c) => c,
        Err(response) => return response,
    };
    let mut out = rate_limit_headers(used, reset);
    out.extend(caller.headers(""));
    let visible: &[String] = match &caller.access {
        Access::Installation(_) => {
            return with_headers(
                out,
                api_error(
                    StatusCode::FORBIDDEN,
                    "Resource not accessible by integration",
                    LIST_REPOS_DOCS,
                ),
            );
        }
        // A public-only token has no repository permissions to select, so
        // it is not held to Metadata.
        Access::Permissions(p) if !p.iter().any(|x| x == "metadata:read" || x == PUBLIC_ONLY) => {
            out.extend(header_pair(
                "x-accepted-github-permissions",
                "metadata=read",
            ));
            return with_headers(out, not_accessible(LIST_REPOS_DOCS));
        }
        Access::Permissions(_) => &caller.repositories,
        // without `repo` a classic token sees public repositories only, and
        // the mock has none
        Access::Scopes(_) if caller.has_scope(&["repo"]) => &caller.repositories,
        Access::Scopes(_) => &[],
    };
    let per_page = page
        .per_page
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let number = page
        .page
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let start = (number - 1).saturating_mul(per_page);
    let items: Vec<Value> = visible
        .iter()
        .skip(start)
        .take(per_page)
        .map(|r| repo_json(&s, r))
        .collect();
    if start.saturating_add(per_page) < visible.len() {
        let next = format!(
            "<{}/api/v3/user/repos?per_page={per_page}&page={}>; rel=\"next\"",
            s.base_url(),
            number + 1
        );
        out.extend(header_pair("link", &next));
    }
    with_headers(out, Json(Value::Array(items)).into_response())
}

/// A fine-grained token lacking a permission.
fn not_accessible(docs: &str) -> Response {
    api_error(
        StatusCode::FORBIDDEN,
        "Resource not accessible by personal access token",
        docs,
    )
}

/// What a repository write needs of each kind of token.
struct WriteNeeds {
    /// Classic scopes, any of which will do.
    scopes: &'static [&'static str],
    /// The permission of fine-grained and installation tokens (at write).
    permission: &'static str,
    /// How GitHub names that permission in `X-Accepted-GitHub-Permissions`.
    accepted: &'static str,
    docs: &'static str,
}

/// The checks every repository write makes before it looks at the body:
/// switches, authentication, reach (404, as GitHub hides repositories),
/// then scope (404) or permission (403 naming the permission). `Ok` carries
/// the repository's name as stored and the headers to send.
async fn repo_write(
    s: &Shared,
    headers: &HeaderMap,
    owner: &str,
    repo: &str,
    needs: &WriteNeeds,
) -> Result<(String, Vec<(HeaderName, HeaderValue)>), Response> {
    let used = Counters::bump(&s.counters.repo_requests);
    if let Some(switched) = api_switches(s).await {
        return Err(switched);
    }
    let reset = s.now() + Duration::hours(1);
    let caller = caller(s, headers, needs.docs)?;
    let mut out = rate_limit_headers(used, reset);
    out.extend(caller.headers(&needs.scopes.join(", ")));
    let not_found = |out| {
        with_headers(
            out,
            api_error(StatusCode::NOT_FOUND, "Not Found", needs.docs),
        )
    };
    let Some(full_name) = caller.reaches(owner, repo) else {
        return Err(not_found(out));
    };
    match &caller.access {
        Access::Scopes(_) if caller.has_scope(needs.scopes) => {}
        Access::Scopes(_) => return Err(not_found(out)),
        Access::Permissions(_) | Access::Installation(_) if caller.can_write(needs.permission) => {}
        Access::Permissions(_) => {
            out.extend(header_pair("x-accepted-github-permissions", needs.accepted));
            return Err(with_headers(out, not_accessible(needs.docs)));
        }
        Access::Installation(_) => {
            out.extend(header_pair("x-accepted-github-permissions", needs.accepted));
            return Err(with_headers(
                out,
                api_error(
                    StatusCode::FORBIDDEN,
                    "Resource not accessible by integration",
                    needs.docs,
                ),
            ));
        }
    }
    if s.switches.get().probes_succeed {
        return Err(with_headers(
            out,
            (StatusCode::CREATED, Json(json!({ "full_name": full_name }))).into_response(),
        ));
    }
    Ok((full_name, out))
}

/// A request body GitHub would refuse: 400 for JSON it cannot read, 422
/// for JSON that does not fit the endpoint.
fn json_object(body: &[u8], docs: &str) -> Result<serde_json::Map<String, Value>, Response> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(invalid_request(
            "Invalid request.\n\nBody must be a JSON object.",
            docs,
        )),
        Err(_) => Err(api_error(
            StatusCode::BAD_REQUEST,
            "Problems parsing JSON",
            docs,
        )),
    }
}

fn invalid_request(message: &str, docs: &str) -> Response {
    api_error(StatusCode::UNPROCESSABLE_ENTITY, message, docs)
}

fn missing_field(field: &str, docs: &str) -> Response {
    invalid_request(
        &format!("Invalid request.\n\n\"{field}\" wasn't supplied."),
        docs,
    )
}

/// `POST /repos/{owner}/{repo}/git/blobs` (Contents: write, classic `repo`).
/// Nothing is stored: the mock keeps no Git objects.
async fn create_blob(
    State(s): State<Arc<Shared>>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    const NEEDS: WriteNeeds = WriteNeeds {
        scopes: &["repo"],
        permission: "contents",
        accepted: "contents=write",
        docs: BLOB_DOCS,
    };
    let (full_name, out) = match repo_write(&s, &headers, &owner, &repo, &NEEDS).await {
        Ok(ok) => ok,
        Err(response) => return response,
    };
    let result = json_object(&body, BLOB_DOCS).and_then(|map| {
        let Some(content) = map.get("content").and_then(Value::as_str) else {
            return Err(missing_field("content", BLOB_DOCS));
        };
        match map.get("encoding").and_then(Value::as_str) {
            None | Some("utf-8" | "base64") => Ok(content.to_owned()),
            Some(_) => Err(invalid_request(
                "Invalid request.\n\nencoding must be utf-8 or base64.",
                BLOB_DOCS,
            )),
        }
    });
    let response = match result {
        Ok(content) => {
            // Git names a blob by the SHA-1 of its header and content; the
            // mock has no SHA-1 and shortens a SHA-256 to the same shape.
            let mut hasher = Sha256::new();
            hasher.update(format!("blob {}\0", content.len()));
            hasher.update(content.as_bytes());
            let sha: String = hex_of(&hasher.finalize())[..40].to_owned();
            (
                StatusCode::CREATED,
                Json(json!({
                    "url": format!("{}/api/v3/repos/{full_name}/git/blobs/{sha}", s.base_url()),
                    "sha": sha,
                })),
            )
                .into_response()
        }
        Err(response) => response,
    };
    with_headers(out, response)
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `POST /repos/{owner}/{repo}/hooks` (Webhooks: write, classic
/// `admin:repo_hook` or `write:repo_hook`). Nothing is stored.
async fn create_hook(
    State(s): State<Arc<Shared>>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    const NEEDS: WriteNeeds = WriteNeeds {
        scopes: &["admin:repo_hook", "write:repo_hook"],
        permission: "webhooks",
        accepted: "repository_hooks=write",
        docs: HOOK_DOCS,
    };
    let (full_name, out) = match repo_write(&s, &headers, &owner, &repo, &NEEDS).await {
        Ok(ok) => ok,
        Err(response) => return response,
    };
    let result = json_object(&body, HOOK_DOCS).and_then(|map| {
        let Some(config) = map.get("config").and_then(Value::as_object) else {
            return Err(missing_field("config", HOOK_DOCS));
        };
        let Some(url) = config.get("url").and_then(Value::as_str) else {
            return Err(missing_field("config.url", HOOK_DOCS));
        };
        let events = map
            .get("events")
            .cloned()
            .unwrap_or_else(|| json!(["push"]));
        Ok((url.to_owned(), events))
    });
    let response = match result {
        Ok((url, events)) => {
            let base = s.base_url();
            (
                StatusCode::CREATED,
                Json(json!({
                    "type": "Repository",
                    "id": 1,
                    "name": "web",
                    "active": true,
                    "events": events,
                    // GitHub never echoes a webhook secret
                    "config": { "url": url, "content_type": "form", "insecure_ssl": "0" },
                    "url": format!("{base}/api/v3/repos/{full_name}/hooks/1"),
                })),
            )
                .into_response()
        }
        Err(response) => response,
    };
    with_headers(out, response)
}

/// `PATCH /repos/{owner}/{repo}` (Administration: write, classic `repo`).
/// Nothing is stored: the answer shows the repository as it would become.
async fn update_repo(
    State(s): State<Arc<Shared>>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    const NEEDS: WriteNeeds = WriteNeeds {
        scopes: &["repo"],
        permission: "administration",
        accepted: "administration=write",
        docs: UPDATE_REPO_DOCS,
    };
    let (full_name, out) = match repo_write(&s, &headers, &owner, &repo, &NEEDS).await {
        Ok(ok) => ok,
        Err(response) => return response,
    };
    let result = json_object(&body, UPDATE_REPO_DOCS).and_then(|map| match map.get("name") {
        None => Ok(None),
        Some(Value::String(name)) if !name.is_empty() => Ok(Some(name.clone())),
        Some(_) => Err(invalid_request(
            "Invalid request.\n\nFor 'properties/name', \"\" is too short (minimum 1).",
            UPDATE_REPO_DOCS,
        )),
    });
    let response = match result {
        Ok(rename) => {
            let mut json = repo_json(&s, &full_name);
            if let Some(name) = rename {
                json["name"] = json!(name);
                json["full_name"] = json!(format!("{owner}/{name}"));
            }
            Json(json).into_response()
        }
        Err(response) => response,
    };
    with_headers(out, response)
}

fn switched_user_status(status: u16, reset: DateTime<Utc>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match status {
        StatusCode::UNAUTHORIZED => bad_credentials(),
        // What a primary rate limit looks like: the remaining count is what
        // tells it apart from a permission problem.
        StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS => with_headers(
            rate_limit_headers(RATE_LIMIT, reset),
            rate_limit_exceeded(status),
        ),
        _ => api_error(
            status,
            status.canonical_reason().unwrap_or("Error"),
            REST_DOCS,
        ),
    }
}

/// The body of a primary rate limit (403 or 429), without its headers.
pub(crate) fn rate_limit_exceeded(status: StatusCode) -> Response {
    api_error(
        status,
        "API rate limit exceeded.",
        "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
    )
}

fn user_json(s: &Shared, user: &MockGitUser) -> Value {
    let base = s.base_url();
    let (login, id, name) = (&user.login, user.id, &user.name);
    json!({
        "login": login,
        "id": id,
        "node_id": format!("U_mock{id}"),
        "avatar_url": format!("{base}/avatars/{login}"),
        "url": format!("{base}/api/v3/users/{login}"),
        "html_url": format!("{base}/{login}"),
        "type": "User",
        "site_admin": false,
        "name": name,
        "company": null,
        "blog": "",
        "location": null,
        "email": null,
        "bio": null,
        "public_repos": 0,
        "followers": 0,
        "following": 0,
        "created_at": "2020-01-01T00:00:00Z",
        "updated_at": "2020-01-01T00:00:00Z",
    })
}

/// Basic authentication as the app named in the path.
fn app_auth(s: &Shared, client_id: &str, headers: &HeaderMap) -> Result<MockOAuthApp, Response> {
    let app = s
        .oauth_app(client_id)
        .ok_or_else(|| api_error(StatusCode::NOT_FOUND, "Not Found", REST_DOCS))?;
    match basic_auth(headers) {
        Some(Ok((id, secret)))
            if id == app.client_id && secrets_equal(&secret, &app.client_secret) =>
        {
            Ok(app)
        }
        _ => Err(bad_credentials()),
    }
}

#[derive(Deserialize)]
struct TokenBody {
    access_token: String,
}

/// The app's live grant for the token named in the body.
fn app_token(s: &Shared, app: &MockOAuthApp, body: &[u8]) -> Result<(String, Grant), Response> {
    let Ok(TokenBody { access_token }) = serde_json::from_slice::<TokenBody>(body) else {
        return Err(api_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid request.\n\n\"access_token\" wasn't supplied.",
            REST_DOCS,
        ));
    };
    match s.github.find(&access_token, s.now()) {
        Some(grant) if grant.client_id == app.client_id => Ok((access_token, grant)),
        _ => Err(api_error(StatusCode::NOT_FOUND, "Not Found", REST_DOCS)),
    }
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

async fn check_token(
    State(s): State<Arc<Shared>>,
    Path(client_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // a check of the token named in the body, as far as the per-token
    // counts go, whoever asks
    if let Ok(TokenBody { access_token }) = serde_json::from_slice::<TokenBody>(&body) {
        s.counters.api_call(&access_token);
    }
    let result = app_auth(&s, &client_id, &headers)
        .and_then(|app| app_token(&s, &app, &body).map(|found| (app, found)));
    let (app, (token, grant)) = match result {
        Ok(ok) => ok,
        Err(response) => return response,
    };
    let user = match s.github_user(&grant.subject) {
        Some(u) => user_json(&s, u),
        None => json!({ "login": grant.subject }),
    };
    let last_eight = token
        .char_indices()
        .rev()
        .nth(7)
        .map_or(token.as_str(), |(i, _)| &token[i..]);
    Json(json!({
        "id": grant.id,
        "url": format!("{}/api/v3/authorizations/{}", s.base_url(), grant.id),
        "app": { "name": app.name, "url": app.callback_url, "client_id": app.client_id },
        "token": token,
        "hashed_token": STANDARD.encode(Sha256::digest(token.as_bytes())),
        "token_last_eight": last_eight,
        "note": null,
        "note_url": null,
        "fingerprint": null,
        "created_at": timestamp(grant.created_at),
        "updated_at": timestamp(grant.created_at),
        "expires_at": grant.expires_at.map(timestamp),
        "scopes": grant.scopes,
        "user": user,
    }))
    .into_response()
}

async fn delete_token(
    State(s): State<Arc<Shared>>,
    Path(client_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = app_auth(&s, &client_id, &headers).and_then(|app| app_token(&s, &app, &body));
    match result {
        Ok((token, _)) => {
            s.github.revoke(&token);
            Counters::bump(&s.counters.revocations);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(response) => response,
    }
}

async fn delete_grant(
    State(s): State<Arc<Shared>>,
    Path(client_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = app_auth(&s, &client_id, &headers).and_then(|app| app_token(&s, &app, &body));
    match result {
        Ok((_, grant)) => {
            s.github.revoke_all(&grant.subject, &grant.client_id);
            Counters::bump(&s.counters.revocations);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(response) => response,
    }
}
