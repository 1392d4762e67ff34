//! GitHub Apps in the `github` flavour, one model for both sides of an
//! App: an App record (App id, optional OAuth client id, optional slug,
//! optional public key) and one book of installations (account,
//! permissions, repositories or all of them, suspended or not, and the
//! users besides the account who reach it). The App API under `/api/v3`
//! authenticates with the App's JWT (RS256 signature, `iss`, `iat`/`exp`
//! window on the mock's clock, as GitHub checks them):
//!
//! - `GET /app/installations`, `GET /app/installations/{id}`,
//!   `GET /orgs/{org}/installation`, `GET /users/{user}/installation`;
//! - `POST /app/installations/{id}/access_tokens`: a `ghs_` token for one
//!   hour, narrowed by `repositories` (names) and `permissions`; anything
//!   beyond the installation is refused with 422, a suspended installation
//!   with 403. Tokens are personal-access-token look-alikes of kind
//!   `installation`, so the mock's Git routes take them (Basic
//!   `x-access-token:<token>`) and reach exactly their repositories.
//!
//! The user side (module `github_app_user`: `ghu_` user tokens,
//! `/user/installations`, scoped tokens) reads the same book through
//! [`AppBook::installations_for`]: a suspended installation reaches no user.
//!
//! Control, for tests (Rust API on [`MockProvider`], or HTTP):
//! - `GET /__mock/github_apps` → `{"apps", "installations", "mints",
//!   "scoped_tokens_issued"}`;
//! - `POST /__mock/github_apps` `{"app_id"?, "client_id"?, "slug"?,
//!   "public_key_pem"?}` → `{"app_id"}` (registers or updates an App);
//! - `GET`, `POST`, `PUT /__mock/github_apps/installations`: list, add one
//!   (`{"app_id", "account", …}` → `{"id"}`), replace every installation;
//! - `POST /__mock/github_apps/installations/{id}/suspend` `{"suspended"}`,
//!   `DELETE /__mock/github_apps/installations/{id}` (its tokens stop working);
//! - `POST /__mock/github_apps/fail` `{"status": 503 | null}`: every App API
//!   call answers that status until cleared (a temporary outage);
//! - `GET /__mock/github_apps/stats` → `{"mints", "scoped_tokens_issued"}`.

use super::pats::{Flavour, PatSpec};
use super::{MockProvider, Shared, lock};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
const TOKEN_SECONDS: i64 = 3600;
/// Where the ids the mock chooses for Apps registered without one start.
const FIRST_CHOSEN_APP_ID: u64 = 900_000;

/// A GitHub App: one identity for its JWT (App id and public key) and for
/// the users who authorize it (OAuth client id, registered as a
/// [`super::MockOAuthApp`] with the same `client_id`, and slug).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MockGithubApp {
    /// Chosen by the mock when 0 / absent.
    #[serde(default)]
    pub app_id: u64,
    /// Its OAuth client: its users' tokens are `ghu_`/`ghr_` user tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The name in `https://github.com/apps/<slug>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slug: Option<String>,
    /// SPKI or PKCS#1 PEM: what its JWTs are verified with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_pem: Option<String>,
}

/// An installation of an App on a user or organization account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MockInstallation {
    /// Chosen by the mock when 0 / absent.
    #[serde(default)]
    pub id: u64,
    /// The App's [`MockGithubApp::app_id`].
    pub app_id: u64,
    /// The organisation or user login it is installed on.
    pub account: String,
    /// e.g. `{"contents": "write", "metadata": "read"}`; empty: what a Git
    /// user token needs (`contents: write`, `metadata: read`).
    #[serde(default)]
    pub permissions: BTreeMap<String, String>,
    /// `owner/name` of the repositories it covers (the mock knows
    /// repositories by name only); empty: all of the account's.
    #[serde(default)]
    pub repositories: Vec<String>,
    /// Reported as `repository_selection: "all"` (as is an empty
    /// `repositories`), else `"selected"`.
    #[serde(default)]
    pub all_repositories: bool,
    #[serde(default)]
    pub suspended: bool,
    /// Users besides `account` who reach it (an organization's members).
    #[serde(default)]
    pub members: Vec<String>,
}

impl MockInstallation {
    fn reached_by(&self, login: &str) -> bool {
        self.account.eq_ignore_ascii_case(login)
            || self.members.iter().any(|m| m.eq_ignore_ascii_case(login))
    }

    pub(crate) fn selection(&self) -> &'static str {
        if self.all_repositories || self.repositories.is_empty() {
            "all"
        } else {
            "selected"
        }
    }

    /// Its permissions, as GitHub reports them.
    pub(crate) fn granted(&self) -> BTreeMap<String, String> {
        if self.permissions.is_empty() {
            super::github_app_user::PERMISSIONS
                .iter()
                .filter_map(|p| p.split_once(':'))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        } else {
            self.permissions.clone()
        }
    }
}

struct App {
    record: MockGithubApp,
    key: Option<rsa::RsaPublicKey>,
}

/// The mock's GitHub Apps and the one book of their installations.
#[derive(Default)]
pub(crate) struct AppBook {
    apps: Mutex<Vec<App>>,
    /// Installation id → the installation and the tokens minted from it.
    installations: Mutex<BTreeMap<u64, (MockInstallation, Vec<String>)>>,
    next_id: AtomicU64,
    next_app_id: AtomicU64,
    mints: AtomicU64,
    fail: AtomicU16,
}

impl AppBook {
    pub(crate) fn clear(&self) {
        self.mints.store(0, Ordering::SeqCst);
        self.fail.store(0, Ordering::SeqCst);
    }

    pub(crate) fn apps(&self) -> Vec<MockGithubApp> {
        lock(&self.apps).iter().map(|a| a.record.clone()).collect()
    }

    pub(crate) fn installations(&self) -> Vec<MockInstallation> {
        lock(&self.installations)
            .values()
            .map(|(i, _)| i.clone())
            .collect()
    }

    fn app_ids_of_client(&self, client_id: &str) -> Vec<u64> {
        lock(&self.apps)
            .iter()
            .filter(|a| a.record.client_id.as_deref() == Some(client_id))
            .map(|a| a.record.app_id)
            .collect()
    }

    /// Whether OAuth client `client_id` is a GitHub App's.
    pub(crate) fn is_user_app(&self, client_id: &str) -> bool {
        !self.app_ids_of_client(client_id).is_empty()
    }

    pub(crate) fn slug_of(&self, client_id: &str) -> Option<String> {
        lock(&self.apps)
            .iter()
            .find(|a| a.record.client_id.as_deref() == Some(client_id))
            .and_then(|a| a.record.slug.clone())
    }

    pub(crate) fn has_slug(&self, slug: &str) -> bool {
        lock(&self.apps)
            .iter()
            .any(|a| a.record.slug.as_deref() == Some(slug))
    }

    /// The installations of the App of OAuth client `client_id` that
    /// `login` can reach (not suspended; on their account, or `login` is a
    /// member): the one place the user endpoints learn about installations.
    pub(crate) fn installations_for(&self, client_id: &str, login: &str) -> Vec<MockInstallation> {
        let apps = self.app_ids_of_client(client_id);
        lock(&self.installations)
            .values()
            .map(|(i, _)| i)
            .filter(|i| apps.contains(&i.app_id) && !i.suspended && i.reached_by(login))
            .cloned()
            .collect()
    }

    fn key_of(&self, app_id: u64) -> Option<rsa::RsaPublicKey> {
        lock(&self.apps)
            .iter()
            .find(|a| a.record.app_id == app_id)
            .and_then(|a| a.key.clone())
    }
}

pub(crate) fn api_routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/v3/app/installations", get(list))
        .route("/api/v3/app/installations/{id}", get(one))
        .route(
            "/api/v3/app/installations/{id}/access_tokens",
            post(access_tokens),
        )
        .route("/api/v3/orgs/{login}/installation", get(of_account))
        .route("/api/v3/users/{login}/installation", get(of_account))
}

pub(crate) fn control_routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/__mock/github_apps", get(control_list).post(register_app))
        .route(
            "/__mock/github_apps/installations",
            get(control_installations)
                .post(add_installation)
                .put(set_installations_route),
        )
        .route(
            "/__mock/github_apps/installations/{id}",
            axum::routing::delete(delete_installation),
        )
        .route(
            "/__mock/github_apps/installations/{id}/suspend",
            post(suspend_installation),
        )
        .route("/__mock/github_apps/fail", post(set_fail))
        .route("/__mock/github_apps/stats", get(stats))
}

fn message(status: StatusCode, m: &str) -> Response {
    (
        status,
        Json(json!({"message": m, "documentation_url": "https://docs.github.com/rest/apps/apps"})),
    )
        .into_response()
}

fn view(i: &MockInstallation) -> serde_json::Value {
    json!({
        "id": i.id,
        "app_id": i.app_id,
        "account": {"login": i.account, "type": "Organization"},
        "target_type": "Organization",
        "repository_selection": i.selection(),
        "permissions": i.granted(),
        "suspended_at": if i.suspended { Some("2026-01-01T00:00:00Z") } else { None },
    })
}

/// The App a request's JWT proves, or GitHub's 401.
fn authenticate_app(s: &Shared, headers: &HeaderMap) -> Result<u64, Response> {
    let fail = s.github_apps.fail.load(Ordering::SeqCst);
    if fail != 0 {
        let status = StatusCode::from_u16(fail).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return Err(message(status, "mock GitHub App API failure"));
    }
    let refuse = |m: &str| Err(message(StatusCode::UNAUTHORIZED, m));
    let Some(jwt) = super::oauth::authorization_token(headers, &["bearer"]) else {
        return refuse("A JSON web token could not be decoded");
    };
    let parts: Vec<&str> = jwt.split('.').collect();
    let [h, c, sig] = parts[..] else {
        return refuse("A JSON web token could not be decoded");
    };
    let decode = |p: &str| -> Option<serde_json::Value> {
        serde_json::from_slice(&B64.decode(p).ok()?).ok()
    };
    let (Some(header), Some(claims), Ok(signature)) = (decode(h), decode(c), B64.decode(sig))
    else {
        return refuse("A JSON web token could not be decoded");
    };
    if header["alg"] != "RS256" {
        return refuse("A JSON web token could not be decoded");
    }
    let iss = match &claims["iss"] {
        serde_json::Value::String(s) => s.parse::<u64>().ok(),
        serde_json::Value::Number(n) => n.as_u64(),
        _ => None,
    };
    let Some(app_id) = iss else {
        return refuse("'Issuer' claim ('iss') must be an Integer");
    };
    let Some(key) = s.github_apps.key_of(app_id) else {
        return refuse("Integration not found");
    };
    let digest = <sha2::Sha256 as sha2::Digest>::digest(format!("{h}.{c}").as_bytes());
    if key
        .verify(
            rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
            &digest,
            &signature,
        )
        .is_err()
    {
        return refuse("A JSON web token could not be decoded");
    }
    let now = s.now().timestamp();
    let (Some(iat), Some(exp)) = (claims["iat"].as_i64(), claims["exp"].as_i64()) else {
        return refuse("Missing 'issued at' or 'expiration time' claim");
    };
    if iat > now + 60 {
        return refuse(
            "'Issued at' claim ('iat') must be an Integer representing a time in the past",
        );
    }
    if exp <= now {
        return refuse(
            "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires",
        );
    }
    if exp > now + 600 {
        return refuse("'Expiration time' claim ('exp') is too far in the future");
    }
    Ok(app_id)
}

fn installation_of_app(s: &Shared, app: u64, id: u64) -> Option<MockInstallation> {
    lock(&s.github_apps.installations)
        .get(&id)
        .filter(|(i, _)| i.app_id == app)
        .map(|(i, _)| i.clone())
}

async fn list(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let app = match authenticate_app(&s, &headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let all: Vec<_> = lock(&s.github_apps.installations)
        .values()
        .filter(|(i, _)| i.app_id == app)
        .map(|(i, _)| view(i))
        .collect();
    Json(all).into_response()
}

async fn one(State(s): State<Arc<Shared>>, headers: HeaderMap, Path(id): Path<u64>) -> Response {
    let app = match authenticate_app(&s, &headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    match installation_of_app(&s, app, id) {
        Some(i) => Json(view(&i)).into_response(),
        None => message(StatusCode::NOT_FOUND, "Not Found"),
    }
}

async fn of_account(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(login): Path<String>,
) -> Response {
    let app = match authenticate_app(&s, &headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let found = lock(&s.github_apps.installations)
        .values()
        .find(|(i, _)| i.app_id == app && i.account.eq_ignore_ascii_case(&login))
        .map(|(i, _)| view(i));
    match found {
        Some(v) => Json(v).into_response(),
        None => message(StatusCode::NOT_FOUND, "Not Found"),
    }
}

#[derive(Deserialize, Default)]
struct TokenRequest {
    #[serde(default)]
    repositories: Vec<String>,
    #[serde(default)]
    permissions: BTreeMap<String, String>,
}

fn rank(level: &str) -> u8 {
    match level {
        "admin" => 3,
        "write" => 2,
        "read" => 1,
        _ => 0,
    }
}

async fn access_tokens(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
    body: axum::body::Bytes,
) -> Response {
    let app = match authenticate_app(&s, &headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let req: TokenRequest = if body.is_empty() {
        TokenRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(_) => return message(StatusCode::BAD_REQUEST, "Problems parsing JSON"),
        }
    };
    let Some(inst) = installation_of_app(&s, app, id) else {
        return message(StatusCode::NOT_FOUND, "Not Found");
    };
    if inst.suspended {
        return message(
            StatusCode::FORBIDDEN,
            "This installation has been suspended",
        );
    }
    let granted = inst.granted();
    let all = inst.all_repositories || inst.repositories.is_empty();
    let permissions = if req.permissions.is_empty() {
        granted
    } else {
        for (name, level) in &req.permissions {
            if granted.get(name).map_or(0, |g| rank(g)) < rank(level) || rank(level) == 0 {
                return message(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "The permissions requested are not granted to this installation.",
                );
            }
        }
        req.permissions.clone()
    };
    let account = inst.account.to_ascii_lowercase();
    let repositories: Vec<String> = if req.repositories.is_empty() {
        if all {
            Vec::new()
        } else {
            inst.repositories.clone()
        }
    } else {
        let mut out = Vec::new();
        for name in &req.repositories {
            let full = format!("{}/{}", inst.account, name);
            let allowed = all
                || inst
                    .repositories
                    .iter()
                    .any(|r| r.eq_ignore_ascii_case(&full));
            if !allowed || name.contains('/') {
                return message(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "There is at least one repository that does not exist or is not accessible to the parent installation.",
                );
            }
            out.push(full.to_ascii_lowercase());
        }
        out
    };
    let expires_at = s.now() + chrono::Duration::seconds(TOKEN_SECONDS);
    let token = s.pats.create(PatSpec {
        flavour: Flavour::Github,
        owner: account.clone(),
        kind: "installation".into(),
        scopes: permissions
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect(),
        expires_at: Some(expires_at),
        repositories: repositories.clone(),
        email: None,
    });
    if let Some((_, tokens)) = lock(&s.github_apps.installations).get_mut(&id) {
        tokens.push(token.clone());
    }
    s.github_apps.mints.fetch_add(1, Ordering::SeqCst);
    let repos: Vec<_> = repositories
        .iter()
        .map(|r| json!({"full_name": r, "name": r.rsplit_once('/').map_or(r.as_str(), |(_, n)| n)}))
        .collect();
    (
        StatusCode::CREATED,
        Json(json!({
            "token": token,
            "expires_at": expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "permissions": permissions,
            "repository_selection": if repositories.is_empty() { "all" } else { "selected" },
            "repositories": repos,
        })),
    )
        .into_response()
}

// --- control ---

async fn register_app(State(s): State<Arc<Shared>>, Json(app): Json<MockGithubApp>) -> Response {
    if let Some(client_id) = &app.client_id
        && s.oauth_app(client_id).is_none()
    {
        return message(
            StatusCode::NOT_FOUND,
            "no OAuth client with this client_id: register it first (MockConfig.oauth_apps)",
        );
    }
    match add_app(&s, app) {
        Ok(app_id) => Json(json!({"app_id": app_id})).into_response(),
        Err(m) => message(StatusCode::BAD_REQUEST, &m),
    }
}

async fn control_list(State(s): State<Arc<Shared>>) -> Json<serde_json::Value> {
    Json(json!({
        "apps": s.github_apps.apps(),
        "installations": s.github_apps.installations(),
        "mints": s.github_apps.mints.load(Ordering::SeqCst),
        "scoped_tokens_issued": s.github_app_users.scoped_issued(),
    }))
}

async fn control_installations(State(s): State<Arc<Shared>>) -> Json<Vec<MockInstallation>> {
    Json(s.github_apps.installations())
}

async fn set_installations_route(
    State(s): State<Arc<Shared>>,
    Json(all): Json<Vec<MockInstallation>>,
) -> StatusCode {
    set_installations(&s, all);
    StatusCode::NO_CONTENT
}

async fn add_installation(
    State(s): State<Arc<Shared>>,
    Json(i): Json<MockInstallation>,
) -> Response {
    Json(json!({"id": install(&s, i)})).into_response()
}

async fn delete_installation(State(s): State<Arc<Shared>>, Path(id): Path<u64>) -> Response {
    if uninstall(&s, id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        message(StatusCode::NOT_FOUND, "Not Found")
    }
}

#[derive(Deserialize)]
struct Suspend {
    suspended: bool,
}

async fn suspend_installation(
    State(s): State<Arc<Shared>>,
    Path(id): Path<u64>,
    Json(b): Json<Suspend>,
) -> Response {
    if suspend(&s, id, b.suspended) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        message(StatusCode::NOT_FOUND, "Not Found")
    }
}

#[derive(Deserialize)]
struct Fail {
    status: Option<u16>,
}

async fn set_fail(State(s): State<Arc<Shared>>, Json(b): Json<Fail>) -> Response {
    s.github_apps
        .fail
        .store(b.status.unwrap_or(0), Ordering::SeqCst);
    StatusCode::NO_CONTENT.into_response()
}

async fn stats(State(s): State<Arc<Shared>>) -> Response {
    Json(json!({
        "mints": s.github_apps.mints.load(Ordering::SeqCst),
        "scoped_tokens_issued": s.github_app_users.scoped_issued(),
    }))
    .into_response()
}

/// Registers `app`, or updates the App with its `app_id` (or, without
/// one, with its `client_id`): the fields it gives replace those known.
pub(crate) fn add_app(s: &Shared, app: MockGithubApp) -> Result<u64, String> {
    use rsa::pkcs1::DecodeRsaPublicKey;
    use rsa::pkcs8::DecodePublicKey;
    let key = match &app.public_key_pem {
        Some(pem) => Some(
            rsa::RsaPublicKey::from_public_key_pem(pem.trim())
                .or_else(|_| rsa::RsaPublicKey::from_pkcs1_pem(pem.trim()))
                .map_err(|_| "public_key_pem is not an RSA public key in PEM form".to_owned())?,
        ),
        None => None,
    };
    if let Some(client_id) = &app.client_id {
        s.github
            .set_client_style(client_id, super::github_app_user::TOKEN_STYLE);
    }
    let mut apps = lock(&s.github_apps.apps);
    let existing = apps.iter_mut().find(|a| {
        if app.app_id != 0 {
            a.record.app_id == app.app_id
        } else {
            app.client_id.is_some() && a.record.client_id == app.client_id
        }
    });
    if let Some(known) = existing {
        let r = &mut known.record;
        if app.client_id.is_some() {
            r.client_id = app.client_id;
        }
        if app.slug.is_some() {
            r.slug = app.slug;
        }
        if key.is_some() {
            r.public_key_pem = app.public_key_pem;
            known.key = key;
        }
        return Ok(r.app_id);
    }
    let mut record = app;
    if record.app_id == 0 {
        record.app_id =
            FIRST_CHOSEN_APP_ID + s.github_apps.next_app_id.fetch_add(1, Ordering::SeqCst);
    }
    let app_id = record.app_id;
    apps.push(App { record, key });
    Ok(app_id)
}

fn install(s: &Shared, mut i: MockInstallation) -> u64 {
    if i.id == 0 {
        i.id = 1000 + s.github_apps.next_id.fetch_add(1, Ordering::SeqCst);
    }
    let id = i.id;
    lock(&s.github_apps.installations).insert(id, (i, Vec::new()));
    id
}

/// Replaces every installation; the tokens of those gone stop working.
fn set_installations(s: &Shared, all: Vec<MockInstallation>) {
    let mut book = lock(&s.github_apps.installations);
    let mut kept = BTreeMap::new();
    let mut gone = Vec::new();
    for mut i in all {
        if i.id == 0 {
            i.id = 1000 + s.github_apps.next_id.fetch_add(1, Ordering::SeqCst);
        }
        let tokens = book.remove(&i.id).map(|(_, t)| t).unwrap_or_default();
        kept.insert(i.id, (i, tokens));
    }
    for (_, (_, tokens)) in std::mem::replace(&mut *book, kept) {
        gone.extend(tokens);
    }
    drop(book);
    revoke_tokens(s, &gone);
}

/// Its tokens stop working, as at GitHub.
fn revoke_tokens(s: &Shared, tokens: &[String]) {
    for t in tokens {
        s.pats.revoke(t);
    }
}

fn uninstall(s: &Shared, id: u64) -> bool {
    let removed = lock(&s.github_apps.installations).remove(&id);
    match removed {
        Some((_, tokens)) => {
            revoke_tokens(s, &tokens);
            true
        }
        None => false,
    }
}

fn suspend(s: &Shared, id: u64, suspended: bool) -> bool {
    let tokens = match lock(&s.github_apps.installations).get_mut(&id) {
        Some((i, tokens)) => {
            i.suspended = suspended;
            std::mem::take(tokens)
        }
        None => return false,
    };
    if suspended {
        revoke_tokens(s, &tokens);
    }
    true
}

impl MockProvider {
    /// Registers a GitHub App (same as `POST /__mock/github_apps`), or
    /// updates the one with its `app_id` (without one: its `client_id`);
    /// returns its App id. With a `client_id` (an OAuth app registered
    /// alongside), that client's new tokens are `ghu_` user tokens with
    /// rotating `ghr_` refresh tokens; with a public key (PEM, SPKI or
    /// PKCS#1), its JWTs are taken by the App API.
    pub fn add_github_app(&self, app: MockGithubApp) -> Result<u64, String> {
        add_app(&self.shared, app)
    }

    /// Every registered GitHub App.
    pub fn github_apps(&self) -> Vec<MockGithubApp> {
        self.shared.github_apps.apps()
    }

    /// Installs an App on an account; returns the installation id.
    pub fn add_installation(&self, installation: MockInstallation) -> u64 {
        install(&self.shared, installation)
    }

    /// Replaces every installation (same as
    /// `PUT /__mock/github_apps/installations`); the tokens of those gone
    /// stop working.
    pub fn set_installations(&self, installations: Vec<MockInstallation>) {
        set_installations(&self.shared, installations);
    }

    /// Every installation.
    pub fn installations(&self) -> Vec<MockInstallation> {
        self.shared.github_apps.installations()
    }

    /// Suspends (or unsuspends) an installation; a suspension revokes its
    /// tokens, and users no longer reach it.
    pub fn suspend_installation(&self, id: u64, suspended: bool) -> bool {
        suspend(&self.shared, id, suspended)
    }

    /// Uninstalls; its tokens stop working.
    pub fn delete_installation(&self, id: u64) -> bool {
        uninstall(&self.shared, id)
    }

    /// Makes every App API call answer `status` (e.g. 503) until `None`.
    pub fn fail_github_apps(&self, status: Option<u16>) {
        self.shared
            .github_apps
            .fail
            .store(status.unwrap_or(0), Ordering::SeqCst);
    }

    /// Installation tokens minted so far.
    pub fn installation_mints(&self) -> u64 {
        self.shared.github_apps.mints.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::providers::github_app::AppKey;
    use secrecy::ExposeSecret;

    fn refused(s: &Shared, jwt: &str) -> String {
        let mut headers = HeaderMap::new();
        headers.insert(
            axum::http::header::AUTHORIZATION,
            format!("Bearer {jwt}").parse().unwrap(),
        );
        match authenticate_app(s, &headers) {
            Ok(app) => format!("accepted {app}"),
            Err(r) => format!("{}", r.status().as_u16()),
        }
    }

    /// Signature, issuer and the iat/exp window, on the mock's clock.
    #[tokio::test]
    async fn jwts_are_checked_as_github_does() {
        let clock = Arc::new(ManualClock::new(crate::clock::wall_now()));
        let mock = MockProvider::with_clock(super::super::MockConfig::default(), clock.clone());
        let key = AppKey::generate().unwrap();
        mock.add_github_app(MockGithubApp {
            app_id: 17,
            public_key_pem: Some(key.public_pem().unwrap()),
            ..MockGithubApp::default()
        })
        .unwrap();
        let s = &mock.shared;
        let now = clock.now();
        let jwt = |app: &str, at| key.jwt(app, at).unwrap().expose_secret().to_owned();
        assert_eq!(refused(s, &jwt("17", now)), "accepted 17");
        // issued in the future (beyond a minute of drift)
        assert_eq!(
            refused(s, &jwt("17", now + chrono::Duration::minutes(3))),
            "401"
        );
        // expired
        assert_eq!(
            refused(s, &jwt("17", now - chrono::Duration::minutes(10))),
            "401"
        );
        // expiring more than ten minutes ahead
        assert_eq!(
            refused(s, &jwt("17", now + chrono::Duration::minutes(2))),
            "401"
        );
        // another App id, another key, garbage
        assert_eq!(refused(s, &jwt("18", now)), "401");
        let other = AppKey::generate().unwrap();
        let forged = other.jwt("17", now).unwrap();
        assert_eq!(refused(s, forged.expose_secret()), "401");
        assert_eq!(refused(s, "a.b.c"), "401");
        // a temporary outage answers its status
        mock.fail_github_apps(Some(502));
        assert_eq!(refused(s, &jwt("17", now)), "502");
    }

    /// One App (id, client id, slug, key) and one installation book: what
    /// the App API lists is what users reach, and a suspension hides it
    /// from both.
    #[tokio::test]
    async fn one_app_and_one_book_serve_both_sides() {
        let mock = MockProvider::new(super::super::MockConfig::default());
        let key = AppKey::generate().unwrap();
        let app_id = mock
            .add_github_app(MockGithubApp {
                client_id: Some("cid".into()),
                slug: Some("acme-app".into()),
                ..MockGithubApp::default()
            })
            .unwrap();
        assert!(app_id >= FIRST_CHOSEN_APP_ID);
        // the key arrives later, for the same App (found by its client id)
        let same = mock
            .add_github_app(MockGithubApp {
                client_id: Some("cid".into()),
                public_key_pem: Some(key.public_pem().unwrap()),
                ..MockGithubApp::default()
            })
            .unwrap();
        assert_eq!(same, app_id);
        assert_eq!(mock.github_apps().len(), 1);
        let s = &mock.shared;
        assert!(s.github_apps.is_user_app("cid"));
        assert_eq!(s.github_apps.slug_of("cid").as_deref(), Some("acme-app"));
        assert!(s.github_apps.key_of(app_id).is_some());
        let id = mock.add_installation(MockInstallation {
            app_id,
            account: "acme".into(),
            repositories: vec!["acme/app".into()],
            members: vec!["alice".into()],
            ..MockInstallation::default()
        });
        assert_eq!(s.github_apps.installations_for("cid", "alice").len(), 1);
        assert_eq!(s.github_apps.installations_for("cid", "ACME").len(), 1);
        assert!(s.github_apps.installations_for("cid", "carol").is_empty());
        assert!(s.github_apps.installations_for("other", "alice").is_empty());
        assert!(mock.suspend_installation(id, true));
        assert!(s.github_apps.installations_for("cid", "alice").is_empty());
        assert!(mock.suspend_installation(id, false));
        assert_eq!(mock.installations()[0].granted().len(), 2);
        mock.set_installations(Vec::new());
        assert!(s.github_apps.installations_for("cid", "alice").is_empty());
        assert!(!mock.delete_installation(id));
    }
}
