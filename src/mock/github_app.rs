//! GitHub Apps in the `github` flavour: Apps registered with their public
//! key, installations (account login, permissions, repositories, suspended
//! or not), and the App API under `/api/v3` that authenticates with the
//! App's JWT (RS256 signature, `iss`, `iat`/`exp` window on the mock's
//! clock, as GitHub checks them):
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
//! Control, for tests (Rust API on [`MockProvider`], or HTTP):
//! - `POST /__mock/github_apps` `{"app_id", "public_key_pem"}`;
//! - `POST /__mock/github_apps/installations` `{"app_id", "account",
//!   "permissions": {…}, "repositories": ["owner/name", …], "id"?}` → `{"id"}`;
//! - `POST /__mock/github_apps/installations/{id}/suspend` `{"suspended"}`,
//!   `DELETE /__mock/github_apps/installations/{id}` (its tokens stop working);
//! - `POST /__mock/github_apps/fail` `{"status": 503 | null}`: every App API
//!   call answers that status until cleared (a temporary outage);
//! - `GET /__mock/github_apps/stats` → `{"mints"}`: tokens minted so far.

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
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
const TOKEN_SECONDS: i64 = 3600;

/// An installation as a test describes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MockInstallation {
    /// Chosen by the mock when 0 / absent.
    #[serde(default)]
    pub id: u64,
    pub app_id: u64,
    /// The organisation or user login it is installed on.
    pub account: String,
    /// e.g. `{"contents": "write", "metadata": "read"}`.
    #[serde(default)]
    pub permissions: BTreeMap<String, String>,
    /// `owner/name`; empty: all of the account's repositories.
    #[serde(default)]
    pub repositories: Vec<String>,
    #[serde(default)]
    pub suspended: bool,
}

#[derive(Default)]
pub(crate) struct AppBook {
    apps: Mutex<HashMap<u64, rsa::RsaPublicKey>>,
    installations: Mutex<BTreeMap<u64, (MockInstallation, Vec<String>)>>,
    next_id: AtomicU64,
    mints: AtomicU64,
    fail: AtomicU16,
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
        .route("/__mock/github_apps", post(register_app))
        .route("/__mock/github_apps/installations", post(add_installation))
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
        "repository_selection": if i.repositories.is_empty() { "all" } else { "selected" },
        "permissions": i.permissions,
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
    let Some(key) = lock(&s.github_apps.apps).get(&app_id).cloned() else {
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
    let permissions = if req.permissions.is_empty() {
        inst.permissions.clone()
    } else {
        for (name, level) in &req.permissions {
            if inst.permissions.get(name).map_or(0, |g| rank(g)) < rank(level) || rank(level) == 0 {
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
        inst.repositories.clone()
    } else {
        let mut out = Vec::new();
        for name in &req.repositories {
            let full = format!("{}/{}", inst.account, name);
            let allowed = inst.repositories.is_empty()
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

#[derive(Deserialize)]
struct RegisterApp {
    app_id: u64,
    public_key_pem: String,
}

async fn register_app(State(s): State<Arc<Shared>>, Json(b): Json<RegisterApp>) -> Response {
    match add_app(&s, b.app_id, &b.public_key_pem) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(m) => message(StatusCode::BAD_REQUEST, &m),
    }
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
    Json(json!({"mints": s.github_apps.mints.load(Ordering::SeqCst)})).into_response()
}

fn add_app(s: &Shared, app_id: u64, pem: &str) -> Result<(), String> {
    use rsa::pkcs1::DecodeRsaPublicKey;
    use rsa::pkcs8::DecodePublicKey;
    let key = rsa::RsaPublicKey::from_public_key_pem(pem.trim())
        .or_else(|_| rsa::RsaPublicKey::from_pkcs1_pem(pem.trim()))
        .map_err(|_| "public_key_pem is not an RSA public key in PEM form".to_owned())?;
    lock(&s.github_apps.apps).insert(app_id, key);
    Ok(())
}

fn install(s: &Shared, mut i: MockInstallation) -> u64 {
    if i.id == 0 {
        i.id = 1000 + s.github_apps.next_id.fetch_add(1, Ordering::SeqCst);
    }
    let id = i.id;
    lock(&s.github_apps.installations).insert(id, (i, Vec::new()));
    id
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

impl AppBook {
    pub(crate) fn clear(&self) {
        self.mints.store(0, Ordering::SeqCst);
        self.fail.store(0, Ordering::SeqCst);
    }
}

impl MockProvider {
    /// Registers a GitHub App by its id and public key (PEM, SPKI or PKCS#1).
    pub fn add_github_app(&self, app_id: u64, public_key_pem: &str) -> Result<(), String> {
        add_app(&self.shared, app_id, public_key_pem)
    }

    /// Installs an App on an account; returns the installation id.
    pub fn add_installation(&self, installation: MockInstallation) -> u64 {
        install(&self.shared, installation)
    }

    /// Suspends (or unsuspends) an installation; a suspension revokes its tokens.
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
        mock.add_github_app(17, &key.public_pem().unwrap()).unwrap();
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
}
