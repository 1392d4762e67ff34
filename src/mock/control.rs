//! Test control: switches that make the mock misbehave on purpose, counters
//! of what it was asked, and the `/__mock` routes that expose both to test
//! suites running outside the process.

use super::{Shared, github, lock};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Deserializer, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The switches' values; `Default` is a well-behaved provider.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchState {
    /// The authorize page redirects straight back with `access_denied`.
    pub deny: bool,
    /// The authorize page redirects straight back with a code for this login,
    /// as GitHub does when the user already granted the app.
    pub auto_approve: Option<String>,
    /// The token endpoint answers HTTP 200 with this `error`.
    pub token_error: Option<String>,
    /// The token endpoint answers this HTTP status with an HTML body.
    pub token_status: Option<u16>,
    /// The token endpoint does its work, then holds the answer back for
    /// [`TOKEN_HANG`] or until the switch is turned off.
    pub token_hang: bool,
    /// The code exchange grants these scopes instead of the requested ones.
    pub grant_scopes: Option<Vec<String>>,
    /// `GET /api/v3/user` (and the other GitHub API endpoints that read a
    /// token) answers this status (403 and 429 come with rate-limit
    /// headers, as GitHub sends them).
    pub user_api_status: Option<u16>,
    /// The API endpoints that read a token (identity, scopes, probes) hang
    /// for [`TOKEN_HANG`] or until the switch is turned off.
    #[serde(default)]
    pub api_hang: bool,
    /// The GitHub repository writes the broker uses as permission probes
    /// (`…/git/blobs`, `…/hooks`, `PATCH /repos/…`) answer 201 once the
    /// permission check passes, whatever the body: a GitHub that stopped
    /// refusing the probes' invalid bodies.
    #[serde(default)]
    pub probes_succeed: bool,
}

/// How long the token endpoint hangs when `token_hang` is on.
pub const TOKEN_HANG: std::time::Duration = std::time::Duration::from_secs(300);

/// The mock's switches, shared by the Rust API and `/__mock/switches`.
#[derive(Debug, Default)]
pub struct Switches(Mutex<SwitchState>);

impl Switches {
    /// The current values, read once so a request sees a consistent set.
    pub fn get(&self) -> SwitchState {
        lock(&self.0).clone()
    }

    pub fn update(&self, change: impl FnOnce(&mut SwitchState)) {
        change(&mut lock(&self.0));
    }

    pub fn reset(&self) {
        *lock(&self.0) = SwitchState::default();
    }

    pub fn set_deny(&self, on: bool) {
        self.update(|s| s.deny = on);
    }

    pub fn set_auto_approve(&self, login: Option<&str>) {
        self.update(|s| s.auto_approve = login.map(str::to_owned));
    }

    pub fn set_token_error(&self, error: Option<&str>) {
        self.update(|s| s.token_error = error.map(str::to_owned));
    }

    pub fn set_token_status(&self, status: Option<u16>) {
        self.update(|s| s.token_status = status);
    }

    pub fn set_token_hang(&self, on: bool) {
        self.update(|s| s.token_hang = on);
    }

    pub fn set_grant_scopes(&self, scopes: Option<&[&str]>) {
        self.update(|s| {
            s.grant_scopes = scopes.map(|v| v.iter().map(|x| (*x).to_owned()).collect());
        });
    }

    pub fn set_user_api_status(&self, status: Option<u16>) {
        self.update(|s| s.user_api_status = status);
    }

    pub fn set_api_hang(&self, on: bool) {
        self.update(|s| s.api_hang = on);
    }

    pub fn set_probes_succeed(&self, on: bool) {
        self.update(|s| s.probes_succeed = on);
    }

    /// Waits while `api_hang` is on (at most [`TOKEN_HANG`]); API handlers
    /// call this first.
    pub async fn api_hang_wait(&self) {
        self.hang_while(|s| s.api_hang).await;
    }

    /// Waits while `token_hang` is on (at most [`TOKEN_HANG`]). Token
    /// endpoints call this once their answer is decided, in a way a client
    /// disconnect cannot cancel: like a provider that issued the token but
    /// whose answer never arrived, which is what makes retrying a code
    /// exchange wrong.
    pub(crate) async fn token_hang_wait(&self) {
        self.hang_while(|s| s.token_hang).await;
    }

    async fn hang_while(&self, on: fn(&SwitchState) -> bool) {
        let started = std::time::Instant::now();
        while on(&self.get()) && started.elapsed() < TOKEN_HANG {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// What the mock has been asked so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// `GET /login/oauth/authorize`.
    pub authorize_requests: u64,
    /// `POST /login/oauth/access_token`, code exchanges and refreshes alike.
    pub token_requests: u64,
    /// `GET /api/v3/user`.
    pub user_requests: u64,
    /// GitHub `GET /api/v3/user/repos` and the repository writes
    /// (`…/git/blobs`, `…/hooks`, `PATCH /api/v3/repos/…`).
    #[serde(default)]
    pub repo_requests: u64,
    /// Successful revocations through the applications API (`DELETE …/token`
    /// or `…/grant`); [`super::MockProvider::revoke`] does not count.
    pub revocations: u64,
    /// `POST /idp/token`.
    pub idp_token_requests: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub authorize_requests: AtomicU64,
    pub token_requests: AtomicU64,
    pub user_requests: AtomicU64,
    pub repo_requests: AtomicU64,
    pub revocations: AtomicU64,
    pub idp_token_requests: AtomicU64,
}

impl Counters {
    pub fn bump(counter: &AtomicU64) -> u64 {
        counter.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn snapshot(&self) -> Stats {
        Stats {
            authorize_requests: self.authorize_requests.load(Ordering::Relaxed),
            token_requests: self.token_requests.load(Ordering::Relaxed),
            user_requests: self.user_requests.load(Ordering::Relaxed),
            repo_requests: self.repo_requests.load(Ordering::Relaxed),
            revocations: self.revocations.load(Ordering::Relaxed),
            idp_token_requests: self.idp_token_requests.load(Ordering::Relaxed),
        }
    }

    pub fn reset(&self) {
        for c in [
            &self.authorize_requests,
            &self.token_requests,
            &self.user_requests,
            &self.repo_requests,
            &self.revocations,
            &self.idp_token_requests,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }
}

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/stats", get(stats))
        .route("/switches", get(switches).post(set_switches))
        .route("/reset", post(reset))
        .route("/tokens", post(issue_token))
        .route("/pats", post(create_pat))
        .route("/pats/revoke", post(revoke_pat))
}

/// `POST /__mock/pats` with a [`super::PatSpec`] → `{"token": …}`.
async fn create_pat(
    State(s): State<Arc<Shared>>,
    Json(spec): Json<super::PatSpec>,
) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "token": s.pats.create(spec) }))
}

#[derive(serde::Deserialize)]
struct RevokeRequest {
    token: String,
}

/// `POST /__mock/pats/revoke` with `{"token": …}` → `{"revoked": bool}`.
async fn revoke_pat(
    State(s): State<Arc<Shared>>,
    Json(req): Json<RevokeRequest>,
) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "revoked": s.pats.revoke(&req.token) }))
}

async fn stats(State(s): State<Arc<Shared>>) -> Json<Stats> {
    Json(s.counters.snapshot())
}

async fn switches(State(s): State<Arc<Shared>>) -> Json<SwitchState> {
    Json(s.switches.get())
}

/// A partial update: an absent field is `None` (leave alone), a `null` one is
/// `Some(None)` (clear).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchUpdate {
    #[serde(default, deserialize_with = "present")]
    deny: Option<Option<bool>>,
    #[serde(default, deserialize_with = "present")]
    auto_approve: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    token_error: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    token_status: Option<Option<u16>>,
    #[serde(default, deserialize_with = "present")]
    token_hang: Option<Option<bool>>,
    #[serde(default, deserialize_with = "present")]
    grant_scopes: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "present")]
    user_api_status: Option<Option<u16>>,
    #[serde(default, deserialize_with = "present")]
    api_hang: Option<Option<bool>>,
    #[serde(default, deserialize_with = "present")]
    probes_succeed: Option<Option<bool>>,
}

fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

async fn set_switches(State(s): State<Arc<Shared>>, Json(update): Json<SwitchUpdate>) -> Response {
    for status in [update.token_status, update.user_api_status]
        .into_iter()
        .flatten()
        .flatten()
    {
        if StatusCode::from_u16(status).is_err() {
            return (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({ "error": format!("{status} is not an HTTP status") })),
            )
                .into_response();
        }
    }
    s.switches.update(|state| {
        if let Some(v) = update.deny {
            state.deny = v.unwrap_or(false);
        }
        if let Some(v) = update.auto_approve {
            state.auto_approve = v;
        }
        if let Some(v) = update.token_error {
            state.token_error = v;
        }
        if let Some(v) = update.token_status {
            state.token_status = v;
        }
        if let Some(v) = update.token_hang {
            state.token_hang = v.unwrap_or(false);
        }
        if let Some(v) = update.grant_scopes {
            state.grant_scopes = v;
        }
        if let Some(v) = update.user_api_status {
            state.user_api_status = v;
        }
        if let Some(v) = update.api_hang {
            state.api_hang = v.unwrap_or(false);
        }
        if let Some(v) = update.probes_succeed {
            state.probes_succeed = v.unwrap_or(false);
        }
    });
    Json(s.switches.get()).into_response()
}

async fn reset(State(s): State<Arc<Shared>>) -> StatusCode {
    s.reset();
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct TokenRequest {
    login: String,
    #[serde(default)]
    scopes: Vec<String>,
    client_id: Option<String>,
}

async fn issue_token(State(s): State<Arc<Shared>>, Json(req): Json<TokenRequest>) -> Response {
    if s.github_user(&req.login).is_none() {
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({ "error": "unknown login" })),
        )
            .into_response();
    }
    let client_id = req.client_id.unwrap_or_else(|| {
        super::read(&s.oauth_apps)
            .first()
            .map(|a| a.client_id.clone())
            .unwrap_or_default()
    });
    let token = github::issue_direct(&s, &req.login, &client_id, req.scopes);
    Json(serde_json::json!({ "token": token })).into_response()
}

/// Logs method, path and status; never the query string, which carries
/// codes and state.
pub(crate) async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let response = next.run(req).await;
    tracing::debug!(%method, %path, status = response.status().as_u16(), "mock provider");
    response
}
