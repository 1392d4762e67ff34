//! Test control: switches that make the mock misbehave on purpose, counters
//! of what it was asked, and the `/__mock` routes that expose both to test
//! suites running outside the process.
//!
//! [`SwitchState`] holds every switch (docs/api.md has the table): the
//! authorization and token-endpoint ones (`deny`, `auto_approve`,
//! `token_error`, `token_status`, `token_hang`, `grant_scopes`), the API
//! ones (`user_api_status`, `api_hang`), and, grouped, the token-lifecycle
//! and load ones: `refresh_error`, `refresh_status`, `refresh_hang` (refresh
//! requests only), `access_token_secs`, `github_expiring_tokens`,
//! `api_delay_ms`, `api_rate_limit` ([`RateLimit`]) and
//! `rate_limit_status`; GitLab's self-rotation ones, `pat_rotate_status`
//! and `pat_rotate_lose_answer`. `POST /__mock/switches` takes any subset (`null`
//! clears) and refuses bad values with 400.
//!
//! Counters: [`Stats`] (unchanged since the first mock, so older suites
//! keep reading it) and [`TrafficStats`] (refreshes, API requests, the
//! in-flight gauge and its peak, rate-limited answers, the per-token call
//! histogram); `GET /__mock/stats` answers both in one object. Per-token
//! counts are kept by the token's SHA-256 and never shown; one token's
//! count comes from `POST /__mock/stats/api_calls`.
//!
//! Routes that change issued tokens: `/__mock/tokens/{scopes,expire,revoke}`
//! for OAuth tokens of every Git flavour, `/__mock/pats/{revoke,scopes,expire}`
//! for personal access tokens. `/__mock/repos` creates a repository for the
//! Git routes (module `git`); their requests count in [`TrafficStats`]'s
//! `git_requests` and `git_auth_failures`.

use super::pats::Flavour;
use super::{Shared, lock};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

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
    // --- Token lifecycle (refresh, lifetimes). Every field here is
    // `#[serde(default)]`, so older JSON still reads. ---
    /// `grant_type=refresh_token` requests at every flavour's token endpoint
    /// are answered with this OAuth `error`, in the flavour's wire format
    /// (GitHub: HTTP 200; the others: RFC 6749 JSON with HTTP 400, 401 for
    /// `invalid_client`). The refresh token is not consumed. Code exchanges
    /// are not affected.
    #[serde(default)]
    pub refresh_error: Option<String>,
    /// Refresh requests are answered with this HTTP status: an HTML error
    /// page, except 429 (with `Retry-After`) and, on the GitHub flavour, 403
    /// (a rate limit: `X-RateLimit-Remaining: 0`). Not consumed either.
    #[serde(default)]
    pub refresh_status: Option<u16>,
    /// Refresh requests are carried out (the token pair rotates: the new
    /// pair is issued, the old one dies), then the answer is held back for
    /// [`TOKEN_HANG`] or until the switch is turned off; a client that gives
    /// up meanwhile never learns the new pair.
    #[serde(default)]
    pub refresh_hang: bool,
    /// Lifetime in seconds of access tokens issued from now on (code
    /// exchange and refresh) in the realms whose tokens expire: GitLab,
    /// Bitbucket Cloud, Bitbucket Data Center, and GitHub while expiring
    /// tokens are on. Also what `expires_in` says. `0` issues tokens that are
    /// already expired.
    #[serde(default)]
    pub access_token_secs: Option<i64>,
    /// Overrides [`super::MockConfig::expiring_tokens`]: GitHub's expiring
    /// user tokens (8 h, with rotating refresh tokens) on or off.
    #[serde(default)]
    pub github_expiring_tokens: Option<bool>,
    /// Every API request (see [`TrafficStats::api_requests`]) waits this
    /// many milliseconds (tokio time) before it is handled. Turning the
    /// switch off releases the requests waiting.
    #[serde(default)]
    pub api_delay_ms: Option<u64>,
    /// A host-wide limit on API requests (like an IP-based one), in fixed
    /// windows: the first request after a window ended (or after the limit
    /// changed) starts a new one of `window_ms`, on the mock's clock. Every
    /// API answer then carries the flavour's rate-limit headers and the
    /// mock's `X-RateLimit-Reset-Ms`; over the limit GitHub answers 403 (or
    /// `rate_limit_status`), GitLab and Bitbucket 429 with `Retry-After`.
    #[serde(default)]
    pub api_rate_limit: Option<RateLimit>,
    /// GitHub's answer over `api_rate_limit`: 403 (the default) or 429
    /// (which adds `Retry-After`).
    #[serde(default)]
    pub rate_limit_status: Option<u16>,
    // --- end of token lifecycle ---
    /// The API endpoints that read a token (identity, scopes, probes) hang
    /// for [`TOKEN_HANG`] or until the switch is turned off.
    #[serde(default)]
    pub api_hang: bool,
    /// The GitHub repository writes the broker uses as permission probes
    /// (`…/git/blobs`, `…/hooks`, `PATCH /repos/…`) answer 201 once the
    /// permission check passes, whatever the body: a GitHub that stopped
    /// refusing the probes' invalid bodies. Gitea's
    /// `PATCH /api/v1/repos/…` answers 200 instead of 404 once the scope
    /// check passes, as if the probed repository existed.
    #[serde(default)]
    pub probes_succeed: bool,
    /// GitLab's `POST /personal_access_tokens/self/rotate` answers this
    /// status without rotating (as `user_api_status` answers it: 429 with
    /// GitLab's throttle headers, 5xx as its error pages).
    #[serde(default)]
    pub pat_rotate_status: Option<u16>,
    /// GitLab's self-rotation is carried out (new token issued, old one
    /// revoked), then answered with a 502 error page: the answer is lost.
    #[serde(default)]
    pub pat_rotate_lose_answer: bool,
}

/// `limit` API requests per window of `window_ms` milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub limit: u64,
    pub window_ms: u64,
}

/// How long the token endpoint hangs when `token_hang` is on.
pub const TOKEN_HANG: std::time::Duration = std::time::Duration::from_secs(300);

/// The mock's switches, shared by the Rust API and `/__mock/switches`.
#[derive(Debug, Default)]
pub struct Switches {
    state: Mutex<SwitchState>,
    /// Woken at every change, so hanging requests notice at once.
    changed: Notify,
}

impl Switches {
    /// The current values, read once so a request sees a consistent set.
    pub fn get(&self) -> SwitchState {
        lock(&self.state).clone()
    }

    pub fn update(&self, change: impl FnOnce(&mut SwitchState)) {
        change(&mut lock(&self.state));
        self.changed.notify_waiters();
    }

    pub fn reset(&self) {
        self.update(|s| *s = SwitchState::default());
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

    /// GitLab self-rotation answers `status` without rotating.
    pub fn set_pat_rotate_status(&self, status: Option<u16>) {
        self.update(|s| s.pat_rotate_status = status);
    }

    /// GitLab self-rotation rotates, then answers 502 (the answer is lost).
    pub fn set_pat_rotate_lose_answer(&self, on: bool) {
        self.update(|s| s.pat_rotate_lose_answer = on);
    }

    pub fn set_user_api_status(&self, status: Option<u16>) {
        self.update(|s| s.user_api_status = status);
    }

    pub fn set_refresh_error(&self, error: Option<&str>) {
        self.update(|s| s.refresh_error = error.map(str::to_owned));
    }

    pub fn set_refresh_status(&self, status: Option<u16>) {
        self.update(|s| s.refresh_status = status);
    }

    pub fn set_refresh_hang(&self, on: bool) {
        self.update(|s| s.refresh_hang = on);
    }

    pub fn set_access_token_secs(&self, secs: Option<i64>) {
        self.update(|s| s.access_token_secs = secs);
    }

    pub fn set_github_expiring_tokens(&self, on: Option<bool>) {
        self.update(|s| s.github_expiring_tokens = on);
    }

    pub fn set_api_delay_ms(&self, ms: Option<u64>) {
        self.update(|s| s.api_delay_ms = ms);
    }

    pub fn set_api_rate_limit(&self, limit: Option<RateLimit>) {
        self.update(|s| s.api_rate_limit = limit);
    }

    pub fn set_rate_limit_status(&self, status: Option<u16>) {
        self.update(|s| s.rate_limit_status = status);
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

    /// Waits `api_delay_ms` (tokio time), or until the switch is turned
    /// off; API requests call this first.
    pub(crate) async fn api_delay_wait(&self) {
        let Some(ms) = self.get().api_delay_ms else {
            return;
        };
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(ms);
        loop {
            let changed = self.changed.notified();
            if self.get().api_delay_ms.is_none() {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return;
            }
        }
    }

    /// Waits while `refresh_hang` is on (at most [`TOKEN_HANG`]); called
    /// like [`Switches::token_hang_wait`], once a refresh has rotated.
    pub(crate) async fn refresh_hang_wait(&self) {
        self.hang_while(|s| s.refresh_hang).await;
    }

    /// Returns once `on` is false or [`TOKEN_HANG`] has passed (tokio
    /// time), woken by every switch change.
    async fn hang_while(&self, on: fn(&SwitchState) -> bool) {
        let deadline = tokio::time::Instant::now() + TOKEN_HANG;
        loop {
            // Registered before the check: a change in between still wakes.
            let changed = self.changed.notified();
            if !on(&self.get()) {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return;
            }
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

/// Counters of the token lifecycle and of API traffic, next to [`Stats`]
/// (`GET /__mock/stats` answers both in one object). Reset with the other
/// counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrafficStats {
    /// `grant_type=refresh_token` requests received at any flavour's token
    /// endpoint, whatever their outcome.
    pub refresh_requests: u64,
    /// Refreshes that issued a new token pair (also those whose answer
    /// `refresh_hang` held back).
    pub refresh_successes: u64,
    pub refresh_requests_by_flavour: PerFlavour,
    pub refresh_successes_by_flavour: PerFlavour,
    /// API requests received, every flavour: GitHub `/api/v3/…` (the
    /// applications API included), GitLab `/api/v4/…` and
    /// `/oauth/token/info`, Bitbucket Cloud `/2.0/…`, Data Center
    /// `/rest/api/1.0/…`.
    pub api_requests: u64,
    /// API requests being handled now (waiting out `api_delay_ms` or
    /// `api_hang` included). Not reset: it is a gauge.
    pub api_in_flight: u64,
    /// The most API requests in flight at once since the counters were
    /// last reset (a reset starts it from `api_in_flight`).
    pub api_max_in_flight: u64,
    /// API requests answered by `api_rate_limit` (403 or 429) instead of
    /// the endpoint; those reach no endpoint counter (`user_requests`, …).
    pub rate_limited_responses: u64,
    /// How many tokens (`value`) the API was asked about exactly `key`
    /// times: `{"1": 9998, "2": 2}`. A token counts when an API request
    /// presents it (Bearer, `token`, `PRIVATE-TOKEN`, the password of
    /// Basic auth, as the flavour reads it) or names it in the body of
    /// GitHub's `POST /applications/{client_id}/token`; any answer counts,
    /// rate-limited and refused ones too. The tokens themselves are never
    /// shown; ask [`super::MockProvider::api_calls_for`] about one.
    pub api_calls_histogram: BTreeMap<u64, u64>,
    /// Requests to the Git smart-HTTP routes (`…/info/refs`,
    /// `…/git-upload-pack`, `…/git-receive-pack`) of every flavour,
    /// whatever the answer. Not API requests: they count nowhere else.
    pub git_requests: u64,
    pub git_requests_by_flavour: PerFlavour,
    /// Git requests that presented credentials and were answered 401
    /// (wrong scheme, wrong username, unknown, revoked or expired token).
    /// git's first request of a clone carries none and gets a 401 that only
    /// asks for them; it does not count here.
    pub git_auth_failures: u64,
    pub git_auth_failures_by_flavour: PerFlavour,
    /// `POST /api/v4/personal_access_tokens/self/rotate` requests (GitLab),
    /// whatever their outcome.
    #[serde(default)]
    pub pat_rotate_requests: u64,
    /// Rotations that issued a new token (also those whose answer
    /// `pat_rotate_lose_answer` replaced with a 502).
    #[serde(default)]
    pub pat_rotations: u64,
}

/// One count per provider flavour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PerFlavour {
    pub github: u64,
    pub gitlab: u64,
    pub bitbucket_cloud: u64,
    pub bitbucket_data_center: u64,
    pub gitea: u64,
}

impl PerFlavour {
    fn from_counters(c: &[AtomicU64; FLAVOURS]) -> Self {
        let get = |f: Flavour| c[flavour_index(f)].load(Ordering::Relaxed);
        Self {
            github: get(Flavour::Github),
            gitlab: get(Flavour::Gitlab),
            bitbucket_cloud: get(Flavour::BitbucketCloud),
            bitbucket_data_center: get(Flavour::BitbucketDataCenter),
            gitea: get(Flavour::Gitea),
        }
    }
}

fn flavour_index(f: Flavour) -> usize {
    match f {
        Flavour::Github => 0,
        Flavour::Gitlab => 1,
        Flavour::BitbucketCloud => 2,
        Flavour::BitbucketDataCenter => 3,
        Flavour::Gitea => 4,
    }
}

/// How many Git flavours there are.
const FLAVOURS: usize = 5;

#[derive(Default)]
pub(crate) struct Counters {
    pub authorize_requests: AtomicU64,
    pub token_requests: AtomicU64,
    pub user_requests: AtomicU64,
    pub repo_requests: AtomicU64,
    pub revocations: AtomicU64,
    pub idp_token_requests: AtomicU64,
    refresh_requests: [AtomicU64; FLAVOURS],
    refresh_successes: [AtomicU64; FLAVOURS],
    api_requests: AtomicU64,
    api_in_flight: AtomicU64,
    api_max_in_flight: AtomicU64,
    rate_limited_responses: AtomicU64,
    git_requests: [AtomicU64; FLAVOURS],
    git_auth_failures: [AtomicU64; FLAVOURS],
    pub pat_rotate_requests: AtomicU64,
    pub pat_rotations: AtomicU64,
    /// API calls per token, by the token's SHA-256 (no second copy of the
    /// secrets).
    api_calls: Mutex<HashMap<[u8; 32], u64>>,
    /// Woken when a [`TrafficStats`] figure changes, for
    /// [`super::MockProvider::wait_until`].
    changed: Notify,
}

impl Counters {
    pub fn bump(counter: &AtomicU64) -> u64 {
        counter.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Wakes [`super::MockProvider::wait_until`] callers to look again.
    pub fn touch(&self) {
        self.changed.notify_waiters();
    }

    pub fn refresh_requested(&self, flavour: Flavour) {
        Self::bump(&self.refresh_requests[flavour_index(flavour)]);
        self.changed.notify_waiters();
    }

    pub fn refresh_succeeded(&self, flavour: Flavour) {
        Self::bump(&self.refresh_successes[flavour_index(flavour)]);
        self.changed.notify_waiters();
    }

    /// A request to a Git route of `flavour`.
    pub fn git_request(&self, flavour: Flavour) {
        Self::bump(&self.git_requests[flavour_index(flavour)]);
        self.changed.notify_waiters();
    }

    /// A Git request of `flavour` whose credentials were refused (401).
    pub fn git_auth_failure(&self, flavour: Flavour) {
        Self::bump(&self.git_auth_failures[flavour_index(flavour)]);
        self.changed.notify_waiters();
    }

    /// Counts one API request presenting (or naming) `token`.
    pub fn api_call(&self, token: &str) {
        *lock(&self.api_calls).entry(digest(token)).or_default() += 1;
    }

    pub fn api_calls_for(&self, token: &str) -> u64 {
        lock(&self.api_calls)
            .get(&digest(token))
            .copied()
            .unwrap_or(0)
    }

    /// An API request begins; it ends when the guard drops (also when the
    /// client goes away and the request's future is dropped).
    pub fn rate_limited(&self) {
        Self::bump(&self.rate_limited_responses);
        self.changed.notify_waiters();
    }

    pub fn enter_api(&self) -> InFlight<'_> {
        Self::bump(&self.api_requests);
        let now = Self::bump(&self.api_in_flight);
        self.api_max_in_flight.fetch_max(now, Ordering::Relaxed);
        self.changed.notify_waiters();
        InFlight(self)
    }

    pub fn traffic(&self) -> TrafficStats {
        let requests = PerFlavour::from_counters(&self.refresh_requests);
        let successes = PerFlavour::from_counters(&self.refresh_successes);
        let git = PerFlavour::from_counters(&self.git_requests);
        let git_failures = PerFlavour::from_counters(&self.git_auth_failures);
        let sum = |p: PerFlavour| {
            p.github + p.gitlab + p.bitbucket_cloud + p.bitbucket_data_center + p.gitea
        };
        TrafficStats {
            refresh_requests: sum(requests),
            refresh_successes: sum(successes),
            refresh_requests_by_flavour: requests,
            refresh_successes_by_flavour: successes,
            api_requests: self.api_requests.load(Ordering::Relaxed),
            api_in_flight: self.api_in_flight.load(Ordering::Relaxed),
            api_max_in_flight: self.api_max_in_flight.load(Ordering::Relaxed),
            rate_limited_responses: self.rate_limited_responses.load(Ordering::Relaxed),
            api_calls_histogram: lock(&self.api_calls).values().fold(
                BTreeMap::new(),
                |mut histogram, calls| {
                    *histogram.entry(*calls).or_default() += 1;
                    histogram
                },
            ),
            git_requests: sum(git),
            git_requests_by_flavour: git,
            git_auth_failures: sum(git_failures),
            git_auth_failures_by_flavour: git_failures,
            pat_rotate_requests: self.pat_rotate_requests.load(Ordering::Relaxed),
            pat_rotations: self.pat_rotations.load(Ordering::Relaxed),
        }
    }

    /// A future that resolves at the next change of the traffic figures;
    /// take it before looking at them.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
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
        ]
        .into_iter()
        .chain(&self.refresh_requests)
        .chain(&self.refresh_successes)
        .chain(&self.git_requests)
        .chain(&self.git_auth_failures)
        .chain([
            &self.api_requests,
            &self.rate_limited_responses,
            &self.pat_rotate_requests,
            &self.pat_rotations,
        ]) {
            c.store(0, Ordering::Relaxed);
        }
        // a gauge: requests in flight stay counted, and the peak starts there
        self.api_max_in_flight.store(
            self.api_in_flight.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        lock(&self.api_calls).clear();
        self.changed.notify_waiters();
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// An API request in flight; see [`Counters::enter_api`].
pub(crate) struct InFlight<'a>(&'a Counters);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.api_in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.changed.notify_waiters();
    }
}

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/stats", get(stats))
        .route("/stats/reset", post(reset_counters))
        .route("/stats/api_calls", post(api_calls))
        .route("/switches", get(switches).post(set_switches))
        .route("/reset", post(reset))
        .route("/tokens", post(issue_token))
        .route("/tokens/revoke", post(revoke_token))
        .route("/tokens/expire", post(expire_token))
        .route("/tokens/scopes", post(set_token_scopes))
        .route("/pats", post(create_pat))
        .route("/pats/revoke", post(revoke_pat))
        .route("/pats/expire", post(expire_pat))
        .route("/pats/scopes", post(set_pat_scopes))
        .route("/repos", post(create_repo))
}

#[derive(Deserialize)]
struct RepoRequest {
    flavour: Flavour,
    path: String,
}

/// `POST /__mock/repos` with `{"flavour", "path"}` → 201
/// `{"clone_url", "path"}`; 409 (with the `clone_url`) if it exists, 400
/// for a path the flavour does not allow, 404 without a Git root.
async fn create_repo(State(s): State<Arc<Shared>>, Json(req): Json<RepoRequest>) -> Response {
    use super::RepoError;
    let error = |status: StatusCode, message: String| {
        (status, Json(serde_json::json!({ "error": message }))).into_response()
    };
    match super::git::create_repo(&s, req.flavour, &req.path).await {
        Ok(repo) => (
            StatusCode::CREATED,
            Json(serde_json::json!({ "clone_url": repo.clone_url, "path": repo.path })),
        )
            .into_response(),
        Err(RepoError::AlreadyExists) => (
            StatusCode::CONFLICT,
            Json(serde_json::json!({
                "error": "the repository already exists",
                "clone_url": super::git::clone_url(&s, req.flavour, &req.path),
            })),
        )
            .into_response(),
        Err(e @ RepoError::InvalidPath(_)) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e @ RepoError::NoGitRoot) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e) => {
            tracing::error!(err = %e, "mock git: cannot create a repository");
            error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}

/// `POST /__mock/pats` with a [`super::PatSpec`] → `{"token": …}`.
async fn create_pat(
    State(s): State<Arc<Shared>>,
    Json(spec): Json<super::PatSpec>,
) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "token": s.pats.create(spec) }))
}

/// A request body naming one token.
#[derive(serde::Deserialize)]
struct NamedToken {
    token: String,
}

/// `POST /__mock/pats/revoke` with `{"token": …}` → `{"revoked": bool}`.
async fn revoke_pat(
    State(s): State<Arc<Shared>>,
    Json(req): Json<NamedToken>,
) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "revoked": s.pats.revoke(&req.token) }))
}

/// `GET /__mock/stats`: [`Stats`] and [`TrafficStats`] in one object.
#[derive(Serialize)]
struct StatsBody {
    #[serde(flatten)]
    counters: Stats,
    #[serde(flatten)]
    traffic: TrafficStats,
}

async fn stats(State(s): State<Arc<Shared>>) -> Json<StatsBody> {
    Json(StatsBody {
        counters: s.counters.snapshot(),
        traffic: s.counters.traffic(),
    })
}

/// A request body naming a token and its new scopes.
#[derive(serde::Deserialize)]
struct NewScopes {
    token: String,
    scopes: Vec<String>,
}

/// `POST /__mock/pats/expire` with `{"token": …}` → `{"expired": bool}`.
async fn expire_pat(
    State(s): State<Arc<Shared>>,
    Json(req): Json<NamedToken>,
) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "expired": s.pats.expire(&req.token, s.now()) }))
}

/// `POST /__mock/pats/scopes` with `{"token", "scopes": […]}` →
/// `{"updated": bool}`.
async fn set_pat_scopes(
    State(s): State<Arc<Shared>>,
    Json(req): Json<NewScopes>,
) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "updated": s.pats.set_scopes(&req.token, req.scopes) }))
}

/// `POST /__mock/tokens/revoke` with `{"token": …}` → `{"revoked": bool}`:
/// an OAuth token of any Git flavour, silently (not a `revocations` count).
async fn revoke_token(
    State(s): State<Arc<Shared>>,
    Json(req): Json<NamedToken>,
) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "revoked": s.revoke_oauth(&req.token) }))
}

/// `POST /__mock/tokens/expire` with `{"token": …}` → `{"expired": bool}`.
async fn expire_token(
    State(s): State<Arc<Shared>>,
    Json(req): Json<NamedToken>,
) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "expired": s.expire_oauth(&req.token) }))
}

/// `POST /__mock/tokens/scopes` with `{"token", "scopes": […]}` →
/// `{"updated": bool}`.
async fn set_token_scopes(
    State(s): State<Arc<Shared>>,
    Json(req): Json<NewScopes>,
) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "updated": s.set_oauth_scopes(&req.token, req.scopes) }))
}

/// `POST /__mock/stats/api_calls` with `{"token": …}` → `{"calls": n}`,
/// the API requests that presented that token. (A POST, so the token is in
/// no URL and no log line.)
async fn api_calls(
    State(s): State<Arc<Shared>>,
    Json(req): Json<NamedToken>,
) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "calls": s.counters.api_calls_for(&req.token) }))
}

/// `POST /__mock/stats/reset`: counters only; switches and tokens stay.
async fn reset_counters(State(s): State<Arc<Shared>>) -> StatusCode {
    s.counters.reset();
    StatusCode::NO_CONTENT
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
    // token lifecycle
    #[serde(default, deserialize_with = "present")]
    refresh_error: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    refresh_status: Option<Option<u16>>,
    #[serde(default, deserialize_with = "present")]
    refresh_hang: Option<Option<bool>>,
    #[serde(default, deserialize_with = "present")]
    access_token_secs: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    github_expiring_tokens: Option<Option<bool>>,
    #[serde(default, deserialize_with = "present")]
    api_delay_ms: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    api_rate_limit: Option<Option<RateLimit>>,
    #[serde(default, deserialize_with = "present")]
    rate_limit_status: Option<Option<u16>>,
    // end of token lifecycle
    #[serde(default, deserialize_with = "present")]
    api_hang: Option<Option<bool>>,
    #[serde(default, deserialize_with = "present")]
    probes_succeed: Option<Option<bool>>,
    #[serde(default, deserialize_with = "present")]
    pat_rotate_status: Option<Option<u16>>,
    #[serde(default, deserialize_with = "present")]
    pat_rotate_lose_answer: Option<Option<bool>>,
}

fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

fn bad_switch(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}

async fn set_switches(State(s): State<Arc<Shared>>, Json(update): Json<SwitchUpdate>) -> Response {
    for status in [
        update.token_status,
        update.user_api_status,
        update.pat_rotate_status,
    ]
    .into_iter()
    .flatten()
    .flatten()
    {
        if StatusCode::from_u16(status).is_err() {
            return bad_switch(format!("{status} is not an HTTP status"));
        }
    }
    if let Some(message) = lifecycle_refusal(&update) {
        return bad_switch(message);
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
        if let Some(v) = update.refresh_error {
            state.refresh_error = v;
        }
        if let Some(v) = update.refresh_status {
            state.refresh_status = v;
        }
        if let Some(v) = update.refresh_hang {
            state.refresh_hang = v.unwrap_or(false);
        }
        if let Some(v) = update.access_token_secs {
            state.access_token_secs = v;
        }
        if let Some(v) = update.github_expiring_tokens {
            state.github_expiring_tokens = v;
        }
        if let Some(v) = update.api_delay_ms {
            state.api_delay_ms = v;
        }
        if let Some(v) = update.api_rate_limit {
            state.api_rate_limit = v;
        }
        if let Some(v) = update.rate_limit_status {
            state.rate_limit_status = v;
        }
        if let Some(v) = update.api_hang {
            state.api_hang = v.unwrap_or(false);
        }
        if let Some(v) = update.probes_succeed {
            state.probes_succeed = v.unwrap_or(false);
        }
        if let Some(v) = update.pat_rotate_status {
            state.pat_rotate_status = v;
        }
        if let Some(v) = update.pat_rotate_lose_answer {
            state.pat_rotate_lose_answer = v.unwrap_or(false);
        }
    });
    Json(s.switches.get()).into_response()
}

/// Why the token-lifecycle part of an update is refused, if it is.
fn lifecycle_refusal(update: &SwitchUpdate) -> Option<String> {
    if let Some(Some(status)) = update.refresh_status
        && StatusCode::from_u16(status).is_err()
    {
        return Some(format!("{status} is not an HTTP status"));
    }
    if let Some(Some(secs)) = update.access_token_secs
        && !(0..=MAX_ACCESS_TOKEN_SECS).contains(&secs)
    {
        return Some(format!(
            "access_token_secs must be between 0 and {MAX_ACCESS_TOKEN_SECS}"
        ));
    }
    if let Some(Some(limit)) = update.api_rate_limit
        && !(1..=MAX_WINDOW_MS).contains(&limit.window_ms)
    {
        return Some(format!(
            "api_rate_limit.window_ms must be between 1 and {MAX_WINDOW_MS}"
        ));
    }
    if let Some(Some(status)) = update.rate_limit_status
        && !matches!(status, 403 | 429)
    {
        return Some("rate_limit_status must be 403 or 429".into());
    }
    None
}

/// The longest rate-limit window: a year. Longer windows (and `0`) set
/// through the Rust API are clamped to 1 ms … a year.
pub const MAX_WINDOW_MS: u64 = 365 * 24 * 3600 * 1000;

/// The longest `access_token_secs`: 100 years. Longer values are clamped
/// to it when set through the Rust API.
pub const MAX_ACCESS_TOKEN_SECS: i64 = 100 * 365 * 24 * 3600;

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
    /// Default: GitHub.
    #[serde(default)]
    flavour: Option<Flavour>,
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
    let flavour = req.flavour.unwrap_or(Flavour::Github);
    let token = s.issue_oauth(flavour, &req.login, &client_id, req.scopes);
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
