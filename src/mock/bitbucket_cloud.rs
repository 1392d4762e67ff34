//! The `bitbucket_cloud` flavour, nested under `/bitbucket`: an OAuth
//! consumer flow whose scopes come from the consumer, not the request
//! (`/site/oauth2/authorize`, `/site/oauth2/access_token` with HTTP Basic
//! client authentication and a JSON answer), and `GET /2.0/user` with the
//! `X-OAuth-Scopes` and `X-Credential-Type` headers.
//!
//! Credentials `/2.0/user` understands: OAuth access tokens (Bearer), API
//! tokens (Basic with the Atlassian account email), repository access
//! tokens (Bearer, answered as an app user). App passwords always get 401
//! with a body saying they are no longer supported.
//!
//! The consent page (`consent`) and the code exchange's checks (`oauth`)
//! are every flavour's; the wording of this one's, and its token endpoint,
//! are shared with the Data Center flavour (`bitbucket_dc`), which differs
//! in where scopes come from and how the token answer looks.
//!
//! Counters: the authorize page counts as `authorize_requests`, the token
//! endpoint as `token_requests`, `/2.0/user` as `user_requests`.

use super::book::{Issued, Lifetimes, TokenBook, TokenStyle};
use super::consent::{self, Consent, Refusal};
use super::control::Counters;
use super::oauth::{
    AuthMethod, CodeRefused, TokenPages, authenticate, authorization_token, basic_auth,
    exchange_code, header_pair, parse_form, refresh_grant, token_endpoint, with_headers,
};
use super::pages::Wording;
use super::pats::Flavour;
use super::{MockGitUser, Shared};
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::sync::Arc;

pub(crate) const TOKEN_STYLE: TokenStyle = TokenStyle::new(("", 128), ("", 24), 18);

/// Bitbucket Cloud's access tokens live two hours. Refresh tokens do not
/// expire as far as the documentation says; ten years stands for that.
const ACCESS_SECONDS: i64 = 7_200;
const REFRESH_DAYS: i64 = 3_650;
pub(crate) const LIFETIMES: Lifetimes = Lifetimes::new(ACCESS_SECONDS, REFRESH_DAYS);

/// The permissions every mock consumer is configured with: the ones
/// docs/providers.md tells admins to tick for Git user tokens. The
/// `grant_scopes` switch stands for a consumer configured otherwise.
const CONSUMER_SCOPES: &[&str] = &["account", "team", "repository:write"];

const BANNER: &str = "Mock Bitbucket Cloud";

const APP_PASSWORDS_GONE: &str = "App passwords are no longer supported: Bitbucket Cloud removed them on 2026-07-28. Use an API token instead (Personal settings > Atlassian account settings > Security > Create API token with scopes).";

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/site/oauth2/authorize", consent::route(&CONSENT))
        .route("/site/oauth2/access_token", post(access_token))
}

/// The REST API 2.0.
pub(crate) fn api_routes() -> Router<Arc<Shared>> {
    Router::new().route("/2.0/user", get(user))
}

// ---------------------------------------------------------------------------
// Authorization: Data Center's is the same but for its scopes.

const INVALID_PKCE: Refusal = Refusal::Back(
    "invalid_request",
    "code_challenge must be an S256 challenge with code_challenge_method=S256",
);
const BAD_DECISION: &str = "Choose a user, then grant or deny access.";

pub(crate) const CONSENT: Consent = Consent {
    banner: BANNER,
    wording: Wording {
        heading: "",
        lead: "",
        asks: "is requesting access to your account:",
        no_scopes: "Public projects and repositories (read-only).",
        user_prefix: "",
        approve: "Grant access",
        redirect_note: "Granting access will redirect to",
    },
    book: |s| &s.bitbucket_cloud,
    unknown_client: (
        StatusCode::BAD_REQUEST,
        "Invalid client_id",
        "No OAuth consumer is registered with this key.",
    ),
    redirect_required: false,
    bad_redirect: (
        "Invalid redirect_uri",
        "The redirect_uri does not match the consumer's callback URL.",
    ),
    bad_callback: (
        "Invalid callback URL",
        "The consumer's callback URL is not an absolute URL.",
    ),
    response_type: Some(Refusal::Back(
        "unsupported_response_type",
        "response_type must be code",
    )),
    // the consumer's, whatever the request says
    scopes: |_| Ok(CONSUMER_SCOPES.iter().map(|x| (*x).to_owned()).collect()),
    scopes_first: false,
    bad_challenge: INVALID_PKCE,
    bad_method: INVALID_PKCE,
    no_login: BAD_DECISION,
    bad_decision: BAD_DECISION,
    no_user: "There is no user with that name.",
    denied: &[("error_description", "The user denied access.")],
};

// ---------------------------------------------------------------------------
// The token endpoint, shared with the Data Center flavour: RFC 6749 errors.

struct OAuthError {
    status: StatusCode,
    error: String,
    description: &'static str,
}

impl OAuthError {
    fn new(status: StatusCode, error: &str, description: &'static str) -> Self {
        Self {
            status,
            error: error.to_owned(),
            description,
        }
    }

    fn invalid_grant(description: &'static str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", description)
    }

    fn invalid_client() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Invalid OAuth client credentials",
        )
    }

    fn into_response(self) -> Response {
        (
            self.status,
            [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
            Json(json!({ "error": self.error, "error_description": self.description })),
        )
            .into_response()
    }
}

/// What the `token_status` switch answers.
fn error_page(status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        "<!DOCTYPE html>\n<html><head><title>Something went wrong</title></head>\
         <body><p>Something went wrong. Try again later.</p></body></html>\n",
    )
        .into_response()
}

/// What `refresh_status` answers: 429 as the API's rate limit (with
/// `Retry-After`), anything else as the HTML error page.
fn refresh_status_page(_: &Shared, status: u16) -> Response {
    match status {
        429 => switched_user_status(status),
        _ => error_page(status),
    }
}

/// A token request of `flavour`, against its realm.
pub(crate) struct Realm<'a> {
    pub flavour: Flavour,
    pub book: &'a TokenBook,
    pub lifetimes: Lifetimes,
}

/// Both flavours' token endpoint: the switches, then the client
/// authenticated as `methods` allow, then `grant_type=authorization_code`
/// or `refresh_token` against the realm's book. The answer is `fields`
/// (given the grant type) and the refresh token.
pub(crate) async fn token_request(
    s: &Shared,
    headers: &HeaderMap,
    body: &[u8],
    methods: &[AuthMethod],
    realm: Realm<'_>,
    fields: fn(&Issued, &str) -> Value,
) -> Response {
    let pages = TokenPages {
        flavour: realm.flavour,
        error_page,
        refresh_status: refresh_status_page,
    };
    token_endpoint(s, &pages, body, |told| {
        if let Some(code) = told {
            let told = "The mock provider was told to fail this request.";
            return OAuthError::new(StatusCode::BAD_REQUEST, code, told).into_response();
        }
        match grant(s, headers, body, methods, &realm) {
            Ok((issued, grant_type)) => {
                let mut answer = fields(&issued, grant_type);
                if let (Some(refresh), Some(map)) = (&issued.refresh_token, answer.as_object_mut())
                {
                    map.insert("refresh_token".into(), Value::from(refresh.as_str()));
                }
                (
                    [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
                    Json(answer),
                )
                    .into_response()
            }
            Err(e) => e.into_response(),
        }
    })
    .await
}

fn grant(
    s: &Shared,
    headers: &HeaderMap,
    body: &[u8],
    methods: &[AuthMethod],
    realm: &Realm<'_>,
) -> Result<(Issued, &'static str), OAuthError> {
    let form = parse_form(body).ok_or_else(|| {
        OAuthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "The request body is not a valid form.",
        )
    })?;
    let app = authenticate(s, headers, &form, methods).ok_or_else(OAuthError::invalid_client)?;
    match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            let issued = exchange_code(s, realm.book, &app, &form, Some(realm.lifetimes)).map_err(
                |refused| {
                    OAuthError::invalid_grant(match refused {
                        CodeRefused::BadCode => "The authorization code is invalid or expired.",
                        CodeRefused::RedirectMismatch => {
                            "redirect_uri does not match the authorization request"
                        }
                        CodeRefused::Verifier => "code_verifier does not match",
                    })
                },
            )?;
            Ok((issued, "authorization_code"))
        }
        Some("refresh_token") => {
            let refresh = form
                .get("refresh_token")
                .ok_or_else(|| OAuthError::invalid_grant("refresh_token is missing"))?;
            let issued = refresh_grant(
                s,
                realm.flavour,
                realm.book,
                &app.client_id,
                refresh,
                realm.lifetimes,
            )
            .ok_or_else(|| OAuthError::invalid_grant("Invalid refresh_token"))?;
            Ok((issued, "refresh_token"))
        }
        _ => Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type must be authorization_code or refresh_token",
        )),
    }
}

async fn access_token(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    // Bitbucket's documentation authenticates consumers with HTTP Basic;
    // the mock insists, so a broker sending the secret in the body finds out.
    token_request(
        &s,
        &headers,
        &body,
        &[AuthMethod::Basic],
        Realm {
            flavour: Flavour::BitbucketCloud,
            book: &s.bitbucket_cloud,
            lifetimes: LIFETIMES,
        },
        |issued, grant_type| {
            // `scopes` (not `scope`), and a `state` that names the grant type
            json!({
                "access_token": issued.access_token,
                "scopes": issued.grant.scopes.join(" "),
                "token_type": "bearer",
                "expires_in": issued.grant.expires_in(),
                "state": grant_type,
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
        Json(json!({ "type": "error", "error": { "message": message } })),
    )
        .into_response()
}

fn unauthorized() -> Response {
    api_error(StatusCode::UNAUTHORIZED, "Invalid credentials")
}

/// What `user_api_status` asks for; 429 says how long to wait.
fn switched_user_status(status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match status {
        StatusCode::UNAUTHORIZED => unauthorized(),
        StatusCode::TOO_MANY_REQUESTS => {
            let mut r = rate_limited();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
            r
        }
        _ => api_error(status, status.canonical_reason().unwrap_or("Error")),
    }
}

/// The body of Bitbucket Cloud's 429, without its headers.
pub(crate) fn rate_limited() -> Response {
    api_error(
        StatusCode::TOO_MANY_REQUESTS,
        "Rate limit for this resource has been exceeded",
    )
}

/// Who is calling, with what.
struct Caller {
    /// A person's username; `None` for an access token's app user.
    login: Option<String>,
    /// Repository access token: the repository it belongs to.
    owner: String,
    scopes: Vec<String>,
    credential: &'static str,
}

fn caller(s: &Shared, headers: &HeaderMap) -> Result<Caller, Response> {
    let now = s.now();
    if let Some(Ok((user, secret))) = basic_auth(headers) {
        return match s.pats.find(Flavour::BitbucketCloud, &secret) {
            // whoever sends an app password learns it is gone, live or not
            Some(pat) if pat.spec.kind == "app_password" => {
                Err(api_error(StatusCode::UNAUTHORIZED, APP_PASSWORDS_GONE))
            }
            Some(pat) if pat.spec.kind == "api_token" && pat.live(now) => {
                let email = pat
                    .spec
                    .email
                    .clone()
                    .unwrap_or_else(|| format!("{}@example.com", pat.spec.owner));
                if !user.eq_ignore_ascii_case(&email) {
                    return Err(unauthorized());
                }
                Ok(Caller {
                    login: Some(pat.spec.owner.clone()),
                    owner: pat.spec.owner.clone(),
                    scopes: pat.spec.scopes.clone(),
                    credential: "api_token",
                })
            }
            _ => Err(unauthorized()),
        };
    }
    let Some(token) = authorization_token(headers, &["bearer"]) else {
        return Err(unauthorized());
    };
    if let Some(grant) = s.bitbucket_cloud.find(&token, now) {
        return Ok(Caller {
            login: Some(grant.subject.clone()),
            owner: grant.subject,
            scopes: grant.scopes,
            credential: "oauth2",
        });
    }
    match s.pats.find(Flavour::BitbucketCloud, &token) {
        Some(pat) if pat.spec.kind == "repo_access_token" && pat.live(now) => Ok(Caller {
            login: None,
            owner: pat.spec.owner.clone(),
            scopes: pat.spec.scopes.clone(),
            credential: "repo_access_token",
        }),
        _ => Err(unauthorized()),
    }
}

/// Reading the account takes `account` (or `account:write`) for OAuth
/// tokens, `read:user:bitbucket` for API tokens.
fn may_read_account(c: &Caller) -> bool {
    c.login.is_none()
        || c.scopes.iter().any(|x| {
            matches!(
                x.as_str(),
                "account" | "account:write" | "read:user:bitbucket"
            )
        })
}

async fn user(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    Counters::bump(&s.counters.user_requests);
    s.switches.api_hang_wait().await;
    if let Some(status) = s.switches.get().user_api_status {
        return switched_user_status(status);
    }
    let c = match caller(&s, &headers) {
        Ok(c) => c,
        Err(response) => return response,
    };
    let out: Vec<_> = [
        header_pair("x-oauth-scopes", &c.scopes.join(", ")),
        header_pair("x-credential-type", c.credential),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !may_read_account(&c) {
        let required = if c.credential == "api_token" {
            "read:user:bitbucket"
        } else {
            "account"
        };
        let body = json!({ "type": "error", "error": {
            "message": "Your credentials lack one or more required privilege scopes.",
            "detail": { "granted": c.scopes, "required": [required] },
        }});
        return with_headers(out, (StatusCode::FORBIDDEN, Json(body)).into_response());
    }
    let body = match &c.login {
        Some(login) => match s.github_user(login) {
            Some(u) => user_json(&s, u),
            None => return unauthorized(),
        },
        None => json!({
            "type": "app_user",
            "kind": "repository_access_token",
            "display_name": format!("{} access token", c.owner),
            "uuid": "{00000000-0000-4000-8000-00000000a0a0}",
        }),
    };
    with_headers(out, Json(body).into_response())
}

fn user_json(s: &Shared, u: &MockGitUser) -> Value {
    let base = format!("{}/bitbucket", s.base_url());
    let uuid = format!("{{00000000-0000-4000-8000-{:012}}}", u.id);
    json!({
        "type": "user",
        "username": u.login,
        "nickname": u.login,
        "display_name": u.name,
        "uuid": uuid,
        "account_id": format!("557058:mock-{}", u.id),
        "account_status": "active",
        "is_staff": false,
        "has_2fa_enabled": null,
        "created_on": "2020-01-01T00:00:00.000000+00:00",
        "links": {
            "self": { "href": format!("{base}/2.0/users/{uuid}") },
            "html": { "href": format!("{base}/{}/", u.login) },
            "avatar": { "href": format!("{base}/account/{}/avatar", u.login) },
        },
    })
}
