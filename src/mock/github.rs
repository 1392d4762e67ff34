//! The `github` flavour: GitHub's OAuth app flow (consent page, token
//! endpoint with its HTTP-200 errors and comma-separated scopes) and the bits
//! of the REST API, GitHub Enterprise style under `/api/v3`, that the broker
//! reads: `/user` with its scope headers, and the applications API that
//! checks and revokes tokens.

use super::book::{CodeGrant, Grant, Issued, Lifetimes, TokenStyle};
use super::control::{Counters, SwitchState, TOKEN_HANG};
use super::oauth::{
    authorization_token, basic_auth, client_credentials, found, parse_form, parse_scopes,
    pkce_s256_matches, redirect_url, secrets_equal, valid_pkce_string, wants_json,
};
use super::pages::{self, GithubAuthorize};
use super::pats::Flavour;
use super::{MockGitUser, MockOAuthApp, Shared};
use axum::body::Bytes;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;

pub(crate) const TOKEN_STYLE: TokenStyle = TokenStyle {
    access_prefix: "gho_",
    access_len: 36,
    refresh_prefix: "ghr_",
    refresh_len: 76,
    code_len: 20,
};

/// GitHub's expiring user tokens: 8 hours, refresh tokens 6 months.
const ACCESS_SECONDS: i64 = 28_800;
const REFRESH_SECONDS: i64 = 15_897_600;
const CODE_MINUTES: i64 = 10;
const RATE_LIMIT: u64 = 5_000;

const TROUBLESHOOT_TOKEN: &str = "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/";
const TROUBLESHOOT_AUTHORIZE: &str = "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-authorization-request-errors/";
const REST_DOCS: &str = "https://docs.github.com/rest";
const BANNER: &str = "Mock GitHub";

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route(
            "/login/oauth/authorize",
            get(authorize_page).post(authorize_decision),
        )
        .route("/login/oauth/access_token", post(access_token))
        .route("/api/v3/user", get(user))
        .route(
            "/api/v3/applications/{client_id}/token",
            post(check_token).delete(delete_token),
        )
        .route(
            "/api/v3/applications/{client_id}/grant",
            delete(delete_grant),
        )
}

fn github_lifetimes(with_refresh: bool) -> Lifetimes {
    Lifetimes {
        access: Duration::seconds(ACCESS_SECONDS),
        refresh: with_refresh.then(|| Duration::seconds(REFRESH_SECONDS)),
    }
}

/// A token outside any flow, for tests (`issue_token`, `/__mock/tokens`).
pub(crate) fn issue_direct(
    s: &Shared,
    login: &str,
    client_id: &str,
    scopes: Vec<String>,
) -> String {
    let lifetimes = s.expiring_tokens.then(|| github_lifetimes(false));
    s.github
        .issue(login, client_id, scopes, s.now(), lifetimes)
        .access_token
}

// ---------------------------------------------------------------------------
// Authorization: the consent page and its decision.

#[derive(Deserialize)]
struct AuthorizeParams {
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    /// The decision form only: who approves, and what they decided.
    login: Option<String>,
    decision: Option<String>,
}

/// An authorization request that passed the checks that come before any
/// redirect can be trusted.
struct AuthRequest {
    app: MockOAuthApp,
    /// Where to send the user back: the registered callback.
    redirect_to: String,
    requested_redirect: Option<String>,
    scope: Option<String>,
    scopes: Vec<String>,
    state: Option<String>,
    code_challenge: Option<String>,
}

fn validate(s: &Shared, p: &AuthorizeParams) -> Result<AuthRequest, Response> {
    let Some(app) = p.client_id.as_deref().and_then(|id| s.oauth_app(id)) else {
        return Err(pages::error(
            BANNER,
            StatusCode::NOT_FOUND,
            "Unknown OAuth application",
            "No OAuth application is registered with this client_id.",
        ));
    };
    // GitHub also allows sub-paths of the callback; the mock is stricter so
    // that a broker sending a wrong callback finds out.
    let redirect_to = match p.redirect_uri.as_deref() {
        None => app.callback_url.clone(),
        Some(r) if r == app.callback_url => r.to_owned(),
        Some(_) => {
            return Err(pages::error(
                BANNER,
                StatusCode::BAD_REQUEST,
                "Redirect URI mismatch",
                "The redirect_uri MUST match the registered callback URL for this application.",
            ));
        }
    };
    let code_challenge = match (
        p.code_challenge.as_deref(),
        p.code_challenge_method.as_deref(),
    ) {
        (None, None) => None,
        (Some(c), Some("S256")) if c.len() == 43 && valid_pkce_string(c) => Some(c.to_owned()),
        (Some(_), Some("S256")) => {
            return Err(pages::error(
                BANNER,
                StatusCode::BAD_REQUEST,
                "Invalid code_challenge",
                "An S256 code_challenge is 43 characters of base64url.",
            ));
        }
        _ => {
            return Err(pages::error(
                BANNER,
                StatusCode::BAD_REQUEST,
                "Unsupported code_challenge_method",
                "Only code_challenge_method=S256 is supported, together with a code_challenge.",
            ));
        }
    };
    Ok(AuthRequest {
        redirect_to,
        requested_redirect: p.redirect_uri.clone(),
        scope: p.scope.clone(),
        scopes: parse_scopes(p.scope.as_deref()),
        state: p.state.clone(),
        code_challenge,
        app,
    })
}

async fn authorize_page(
    State(s): State<Arc<Shared>>,
    Query(params): Query<AuthorizeParams>,
) -> Response {
    Counters::bump(&s.counters.authorize_requests);
    let req = match validate(&s, &params) {
        Ok(req) => req,
        Err(page) => return page,
    };
    let switches = s.switches.get();
    if switches.deny {
        return denied(&req);
    }
    if let Some(login) = switches.auto_approve {
        return approve(&s, req, &login);
    }
    let hidden = [
        ("client_id", Some(req.app.client_id.clone())),
        ("redirect_uri", req.requested_redirect.clone()),
        ("scope", req.scope.clone()),
        ("state", req.state.clone()),
        ("code_challenge", req.code_challenge.clone()),
        (
            "code_challenge_method",
            req.code_challenge.as_ref().map(|_| "S256".to_owned()),
        ),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.map(|v| (name, v)))
    .collect();
    pages::html(
        StatusCode::OK,
        &GithubAuthorize {
            app_name: &req.app.name,
            scopes: &req.scopes,
            users: &s.github_users,
            redirect_uri: &req.redirect_to,
            hidden,
        },
    )
}

async fn authorize_decision(
    State(s): State<Arc<Shared>>,
    Form(params): Form<AuthorizeParams>,
) -> Response {
    let req = match validate(&s, &params) {
        Ok(req) => req,
        Err(page) => return page,
    };
    match params.decision.as_deref() {
        Some("approve") => match params.login.as_deref() {
            Some(login) => approve(&s, req, login),
            None => bad_decision("No login was chosen."),
        },
        Some("deny") => denied(&req),
        _ => bad_decision("decision must be approve or deny."),
    }
}

fn bad_decision(message: &str) -> Response {
    pages::error(BANNER, StatusCode::BAD_REQUEST, "Bad request", message)
}

fn approve(s: &Shared, req: AuthRequest, login: &str) -> Response {
    if s.github_user(login).is_none() {
        return bad_decision("There is no GitHub user with that login.");
    }
    let code = s.github.put_code(CodeGrant {
        client_id: req.app.client_id.clone(),
        redirect_uri: req.requested_redirect,
        subject: login.to_owned(),
        scopes: req.scopes,
        code_challenge: req.code_challenge,
        nonce: None,
        issued_at: s.now(),
    });
    let mut params = vec![("code", code.as_str())];
    params.extend(req.state.as_deref().map(|st| ("state", st)));
    redirect_back(&req.redirect_to, &params)
}

fn denied(req: &AuthRequest) -> Response {
    let error_uri = format!("{TROUBLESHOOT_AUTHORIZE}#access-denied");
    let mut params = vec![
        ("error", "access_denied"),
        (
            "error_description",
            "The user has denied your application access.",
        ),
        ("error_uri", error_uri.as_str()),
    ];
    params.extend(req.state.as_deref().map(|st| ("state", st)));
    redirect_back(&req.redirect_to, &params)
}

fn redirect_back(redirect_to: &str, params: &[(&str, &str)]) -> Response {
    match redirect_url(redirect_to, params) {
        Some(url) => found(&url),
        None => pages::error(
            BANNER,
            StatusCode::BAD_REQUEST,
            "Invalid callback URL",
            "The application's callback URL is not an absolute URL.",
        ),
    }
}

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

async fn access_token(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    Counters::bump(&s.counters.token_requests);
    let switches = s.switches.get();
    // Decided before hanging, and in a way a client disconnect cannot cancel:
    // like a provider that issued the token but whose answer never arrived,
    // which is what makes retrying a code exchange wrong.
    let response = token_response(&s, &headers, &body, &switches);
    if switches.token_hang {
        hang(&s).await;
    }
    response
}

/// Waits out [`TOKEN_HANG`], or until the switch is turned off.
async fn hang(s: &Shared) {
    let started = tokio::time::Instant::now();
    while started.elapsed() < TOKEN_HANG && s.switches.get().token_hang {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn token_response(
    s: &Shared,
    headers: &HeaderMap,
    body: &[u8],
    switches: &SwitchState,
) -> Response {
    if let Some(status) = switches.token_status {
        return unicorn(status);
    }
    let json = wants_json(headers);
    if let Some(code) = &switches.token_error {
        return TokenError::new(code).into_response(json);
    }
    match token_grant(s, headers, body, switches.grant_scopes.clone()) {
        Ok(issued) => token_success(json, &issued),
        Err(err) => {
            tracing::debug!(error = %err.0, "mock github token request refused");
            err.into_response(json)
        }
    }
}

fn token_grant(
    s: &Shared,
    headers: &HeaderMap,
    body: &[u8],
    grant_scopes: Option<Vec<String>>,
) -> Result<Issued, TokenError> {
    // GitHub has no error for a malformed body; a code it cannot read is a
    // bad code.
    let form = parse_form(body).ok_or_else(|| TokenError::new(BAD_VERIFICATION_CODE))?;
    let app = authenticate(s, headers, &form)?;
    match form.get("grant_type").map(String::as_str) {
        None | Some("authorization_code") => exchange_code(s, &app, &form, grant_scopes),
        Some("refresh_token") => {
            let refresh_token = form
                .get("refresh_token")
                .ok_or_else(|| TokenError::new(BAD_REFRESH_TOKEN))?;
            s.github
                .refresh(
                    refresh_token,
                    &app.client_id,
                    s.now(),
                    github_lifetimes(true),
                )
                .ok_or_else(|| TokenError::new(BAD_REFRESH_TOKEN))
        }
        Some(_) => Err(TokenError::new(UNSUPPORTED_GRANT_TYPE)),
    }
}

fn authenticate(
    s: &Shared,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<MockOAuthApp, TokenError> {
    let refused = || TokenError::new(INCORRECT_CLIENT_CREDENTIALS);
    let creds = client_credentials(headers, form).map_err(|_| refused())?;
    let app = s.oauth_app(&creds.id).ok_or_else(refused)?;
    if secrets_equal(&creds.secret, &app.client_secret) {
        Ok(app)
    } else {
        Err(refused())
    }
}

fn exchange_code(
    s: &Shared,
    app: &MockOAuthApp,
    form: &HashMap<String, String>,
    grant_scopes: Option<Vec<String>>,
) -> Result<Issued, TokenError> {
    let bad_code = || TokenError::new(BAD_VERIFICATION_CODE);
    let code = form.get("code").ok_or_else(bad_code)?;
    // Taken before any other check: a code that reached the endpoint once is
    // spent, whatever else was wrong with the request.
    let grant = s.github.take_code(code).ok_or_else(bad_code)?;
    let now = s.now();
    if grant.client_id != app.client_id || now - grant.issued_at >= Duration::minutes(CODE_MINUTES)
    {
        return Err(bad_code());
    }
    // RFC 6749 §4.1.3: the same redirect_uri as the authorization request,
    // and none if it had none.
    let redirect_ok = match form.get("redirect_uri") {
        Some(r) => {
            *r == grant
                .redirect_uri
                .unwrap_or_else(|| app.callback_url.clone())
        }
        None => grant.redirect_uri.is_none(),
    };
    if !redirect_ok {
        return Err(TokenError::new(REDIRECT_URI_MISMATCH));
    }
    // A verifier without a challenge is refused too (RFC 9700 §2.1.1: PKCE
    // downgrade).
    let pkce_ok = match (&grant.code_challenge, form.get("code_verifier")) {
        (Some(challenge), Some(verifier)) => pkce_s256_matches(challenge, verifier),
        (None, None) => true,
        _ => false,
    };
    if !pkce_ok {
        return Err(bad_code());
    }
    let scopes = grant_scopes.unwrap_or(grant.scopes);
    let lifetimes = s.expiring_tokens.then(|| github_lifetimes(true));
    Ok(s.github
        .issue(&grant.subject, &app.client_id, scopes, now, lifetimes))
}

fn token_success(json: bool, issued: &Issued) -> Response {
    let scope = issued.grant.scopes.join(",");
    let mut fields = vec![("access_token", Field::Str(&issued.access_token))];
    if issued.grant.expires_at.is_some() {
        fields.push(("expires_in", Field::Num(ACCESS_SECONDS)));
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

fn header(name: &'static str, value: &str) -> Option<(HeaderName, HeaderValue)> {
    HeaderValue::from_str(value)
        .ok()
        .map(|v| (HeaderName::from_static(name), v))
}

fn rate_limit_headers(used: u64, reset: DateTime<Utc>) -> Vec<(HeaderName, HeaderValue)> {
    let used = used.min(RATE_LIMIT);
    [
        header("x-ratelimit-limit", &RATE_LIMIT.to_string()),
        header("x-ratelimit-remaining", &(RATE_LIMIT - used).to_string()),
        header("x-ratelimit-reset", &reset.timestamp().to_string()),
        header("x-ratelimit-used", &used.to_string()),
        header("x-ratelimit-resource", "core"),
    ]
    .into_iter()
    .flatten()
    .collect()
}

fn with_headers(headers: Vec<(HeaderName, HeaderValue)>, response: Response) -> Response {
    let mut response = response;
    response.headers_mut().extend(headers);
    response
}

async fn user(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let used = Counters::bump(&s.counters.user_requests);
    s.switches.api_hang_wait().await;
    let reset = s.now() + Duration::hours(1);
    if let Some(status) = s.switches.get().user_api_status {
        return switched_user_status(status, reset);
    }
    let Some(token) = authorization_token(&headers, &["bearer", "token"]) else {
        return api_error(
            StatusCode::UNAUTHORIZED,
            "Requires authentication",
            "https://docs.github.com/rest/users/users#get-the-authenticated-user",
        );
    };
    let now = s.now();
    // OAuth tokens from the book; personal access tokens made by tests
    let (subject, scopes, expires_at) = match s.github.find(&token, now) {
        Some(grant) => (grant.subject, Some(grant.scopes), None),
        None => match s.pats.find(Flavour::Github, &token) {
            // GitHub answers 401 for expired and revoked tokens alike
            Some(pat) if pat.live(now) => {
                // fine-grained and installation tokens have permissions, not scopes
                let scoped = matches!(pat.spec.kind.as_str(), "classic" | "oauth");
                (
                    pat.spec.owner.clone(),
                    scoped.then(|| pat.spec.scopes.clone()),
                    pat.spec.expires_at,
                )
            }
            _ => return bad_credentials(),
        },
    };
    let Some(user) = s.github_user(&subject) else {
        return bad_credentials();
    };
    let mut out = rate_limit_headers(used, reset);
    if let Some(scopes) = scopes {
        out.extend(header("x-oauth-scopes", &scopes.join(", ")));
    }
    if let Some(at) = expires_at {
        out.extend(header(
            "github-authentication-token-expiration",
            &at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        ));
    }
    out.extend(header("x-accepted-oauth-scopes", "user"));
    out.extend(header("x-github-media-type", "github.v3; format=json"));
    with_headers(out, Json(user_json(&s, user)).into_response())
}

fn switched_user_status(status: u16, reset: DateTime<Utc>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match status {
        StatusCode::UNAUTHORIZED => bad_credentials(),
        // What a primary rate limit looks like: the remaining count is what
        // tells it apart from a permission problem.
        StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS => with_headers(
            rate_limit_headers(RATE_LIMIT, reset),
            api_error(
                status,
                "API rate limit exceeded.",
                "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
            ),
        ),
        _ => api_error(
            status,
            status.canonical_reason().unwrap_or("Error"),
            REST_DOCS,
        ),
    }
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
