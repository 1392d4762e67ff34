//! GitHub Apps that users authorize, in the `github` flavour: such an app's
//! client gets `ghu_` user tokens (8 h) with rotating `ghr_` refresh tokens
//! (the old one refused after use) from the same consent page and token
//! endpoint as OAuth apps, and the REST API adds what GitHub has for them:
//! `GET /user/installations`, `GET /user/installations/{id}/repositories`
//! and `POST /applications/{client_id}/token/scoped`, which refuses
//! repositories the user cannot reach through an installation.
//!
//! A user token reaches the repositories of the App's installations the
//! user can reach (the installation's account, or one of its `members`); a
//! narrowed token only the repositories it was narrowed to. The mock knows
//! repositories by name only, so an installation lists them; with
//! `all_repositories` it reports `repository_selection: "all"`.
//!
//! Installations live behind [`Realm::installations_for`], the one function
//! the user endpoints ask, so they can be pointed at another source.

use super::book::TokenStyle;
use super::oauth::{basic_auth, secrets_equal};
use super::{Shared, lock, read, write};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// GitHub App user tokens and their refresh tokens.
pub(crate) const TOKEN_STYLE: TokenStyle = TokenStyle::new(("ghu_", 36), ("ghr_", 76), 20);
/// What every mock App may do on a repository: what a Git user token needs.
pub(crate) const PERMISSIONS: [&str; 2] = ["contents:write", "metadata:read"];

const SCOPED_DOCS: &str = "https://docs.github.com/rest/apps/apps#create-a-scoped-access-token";
const INSTALLATIONS_DOCS: &str = "https://docs.github.com/rest/apps/installations#list-app-installations-accessible-to-the-user-access-token";

/// A GitHub App users authorize: its OAuth client (registered as a
/// [`super::MockOAuthApp`] with the same `client_id`) and its slug.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MockGithubApp {
    pub client_id: String,
    /// The name in `https://github.com/apps/<slug>`.
    pub slug: String,
}

/// An installation of a GitHub App on a user or organization account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MockUserInstallation {
    pub id: u64,
    /// The App's client id.
    pub client_id: String,
    /// The account it is installed on (a user's or an organization's login).
    pub account: String,
    /// `owner/name` of the repositories it covers.
    #[serde(default)]
    pub repositories: Vec<String>,
    /// Reported as `repository_selection: "all"` (else `"selected"`).
    #[serde(default)]
    pub all_repositories: bool,
    /// Users besides `account` who reach it (an organization's members).
    #[serde(default)]
    pub members: Vec<String>,
}

impl MockUserInstallation {
    fn reached_by(&self, login: &str) -> bool {
        self.account.eq_ignore_ascii_case(login)
            || self.members.iter().any(|m| m.eq_ignore_ascii_case(login))
    }
}

/// The GitHub Apps of the mock, their installations and narrowed tokens.
#[derive(Default)]
pub(crate) struct Realm {
    apps: RwLock<Vec<MockGithubApp>>,
    installations: RwLock<Vec<MockUserInstallation>>,
    /// Narrowed token → the repositories it reaches.
    scoped: Mutex<HashMap<String, Vec<String>>>,
    /// Answers of `POST /applications/{client_id}/token/scoped` that made a token.
    scoped_issued: AtomicU64,
}

impl Realm {
    pub(crate) fn new(apps: Vec<MockGithubApp>, installations: Vec<MockUserInstallation>) -> Self {
        Self {
            apps: RwLock::new(apps),
            installations: RwLock::new(installations),
            ..Self::default()
        }
    }

    pub(crate) fn apps(&self) -> Vec<MockGithubApp> {
        read(&self.apps).clone()
    }

    pub(crate) fn is_app(&self, client_id: &str) -> bool {
        read(&self.apps).iter().any(|a| a.client_id == client_id)
    }

    pub(crate) fn add_app(&self, app: MockGithubApp) {
        let mut apps = write(&self.apps);
        apps.retain(|a| a.client_id != app.client_id);
        apps.push(app);
    }

    pub(crate) fn set_installations(&self, installations: Vec<MockUserInstallation>) {
        *write(&self.installations) = installations;
    }

    pub(crate) fn installations(&self) -> Vec<MockUserInstallation> {
        read(&self.installations).clone()
    }

    /// The installations of App `client_id` that `login` can reach: the
    /// one place the user endpoints learn about installations.
    pub(crate) fn installations_for(
        &self,
        client_id: &str,
        login: &str,
    ) -> Vec<MockUserInstallation> {
        read(&self.installations)
            .iter()
            .filter(|i| i.client_id == client_id && i.reached_by(login))
            .cloned()
            .collect()
    }

    /// `owner/name` of every repository a user token of App `client_id`
    /// held by `login` reaches: the narrowed set for a narrowed token,
    /// else everything its installations cover — and never more than the
    /// installations cover now.
    pub(crate) fn reachable(&self, client_id: &str, login: &str, token: &str) -> Vec<String> {
        let mut through: Vec<String> = self
            .installations_for(client_id, login)
            .into_iter()
            .flat_map(|i| i.repositories)
            .collect();
        if let Some(narrowed) = lock(&self.scoped).get(token) {
            through.retain(|r| narrowed.iter().any(|n| n.eq_ignore_ascii_case(r)));
        }
        through.sort_by_key(|r| r.to_lowercase());
        through.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
        through
    }

    pub(crate) fn scoped_issued(&self) -> u64 {
        self.scoped_issued.load(Ordering::Relaxed)
    }

    /// Keeps apps and installations; forgets narrowed tokens (the token
    /// book is cleared alongside).
    pub(crate) fn clear(&self) {
        lock(&self.scoped).clear();
        self.scoped_issued.store(0, Ordering::Relaxed);
    }
}

/// The REST API routes, under `/api/v3`.
pub(crate) fn api_routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/v3/user/installations", get(user_installations))
        .route(
            "/api/v3/user/installations/{id}/repositories",
            get(installation_repositories),
        )
        .route(
            "/api/v3/applications/{client_id}/token/scoped",
            post(scoped_token),
        )
}

/// The install pages a user is sent to (github.com and GHES forms).
pub(crate) fn web_routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/apps/{slug}/installations/new", get(install_page))
        .route("/github-apps/{slug}/installations/new", get(install_page))
}

/// Under `/__mock`: `GET /github-apps` (apps, installations, how many
/// scoped tokens were issued), `POST /github-apps` (register an App),
/// `PUT /github-apps/installations` (replace every installation).
pub(crate) fn control_routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/github-apps", get(control_list).post(control_add_app))
        .route(
            "/github-apps/installations",
            get(control_installations).put(control_set_installations),
        )
}

fn api_error(status: StatusCode, message: &str, docs: &str) -> Response {
    (
        status,
        Json(json!({
            "message": message,
            "documentation_url": docs,
            "status": status.as_u16().to_string(),
        })),
    )
        .into_response()
}

/// The App user token presenting this request, and its holder.
fn app_user(s: &Shared, headers: &HeaderMap) -> Result<(String, String, String), Response> {
    let Some(token) = super::oauth::authorization_token(headers, &["bearer", "token"]) else {
        return Err(api_error(
            StatusCode::UNAUTHORIZED,
            "Requires authentication",
            INSTALLATIONS_DOCS,
        ));
    };
    s.counters.api_call(&token);
    match s.github.find(&token, s.now()) {
        Some(g) if s.github_app_users.is_app(&g.client_id) => Ok((token, g.client_id, g.subject)),
        // an OAuth app's token: GitHub answers 403 for these endpoints
        Some(_) => Err(api_error(
            StatusCode::FORBIDDEN,
            "You must authenticate with an access token authorized to a GitHub App in order to list installations",
            INSTALLATIONS_DOCS,
        )),
        None => Err(api_error(
            StatusCode::UNAUTHORIZED,
            "Bad credentials",
            INSTALLATIONS_DOCS,
        )),
    }
}

fn installation_json(s: &Shared, slug: &str, i: &MockUserInstallation) -> serde_json::Value {
    json!({
        "id": i.id,
        "account": { "login": i.account, "type": "User" },
        "app_slug": slug,
        "client_id": i.client_id,
        "repository_selection": if i.all_repositories { "all" } else { "selected" },
        "permissions": { "contents": "write", "metadata": "read" },
        "html_url": format!("{}/settings/installations/{}", s.base_url(), i.id),
        "target_type": "User",
    })
}

async fn user_installations(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(switched) = super::github::api_switches(&s).await {
        return switched;
    }
    let (_, client_id, login) = match app_user(&s, &headers) {
        Ok(found) => found,
        Err(r) => return r,
    };
    let slug = s
        .github_app_users
        .apps()
        .into_iter()
        .find(|a| a.client_id == client_id)
        .map(|a| a.slug)
        .unwrap_or_default();
    let found = s.github_app_users.installations_for(&client_id, &login);
    let list: Vec<_> = found
        .iter()
        .map(|i| installation_json(&s, &slug, i))
        .collect();
    Json(json!({ "total_count": list.len(), "installations": list })).into_response()
}

async fn installation_repositories(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(switched) = super::github::api_switches(&s).await {
        return switched;
    }
    let (token, client_id, login) = match app_user(&s, &headers) {
        Ok(found) => found,
        Err(r) => return r,
    };
    let Some(inst) = s
        .github_app_users
        .installations_for(&client_id, &login)
        .into_iter()
        .find(|i| i.id.to_string() == id)
    else {
        return api_error(StatusCode::NOT_FOUND, "Not Found", INSTALLATIONS_DOCS);
    };
    let reach = s.github_app_users.reachable(&client_id, &login, &token);
    let repos: Vec<_> = inst
        .repositories
        .iter()
        .filter(|r| reach.iter().any(|x| x.eq_ignore_ascii_case(r)))
        .map(|r| {
            let (owner, name) = r.split_once('/').unwrap_or((r.as_str(), ""));
            json!({ "full_name": r, "name": name, "owner": { "login": owner }, "private": true })
        })
        .collect();
    Json(json!({
        "total_count": repos.len(),
        "repository_selection": if inst.all_repositories { "all" } else { "selected" },
        "repositories": repos,
    }))
    .into_response()
}

#[derive(Deserialize)]
struct ScopeRequest {
    access_token: Option<String>,
    target: Option<String>,
    target_id: Option<u64>,
    repositories: Option<Vec<String>>,
    repository_ids: Option<Vec<u64>>,
}

async fn scoped_token(
    State(s): State<Arc<Shared>>,
    Path(client_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(switched) = super::github::api_switches(&s).await {
        return switched;
    }
    // client authentication first, as GitHub does
    let Some(app) = s
        .oauth_app(&client_id)
        .filter(|_| s.github_app_users.is_app(&client_id))
    else {
        return api_error(StatusCode::NOT_FOUND, "Not Found", SCOPED_DOCS);
    };
    match basic_auth(&headers) {
        Some(Ok((id, secret)))
            if id == app.client_id && secrets_equal(&secret, &app.client_secret) => {}
        _ => return api_error(StatusCode::UNAUTHORIZED, "Bad credentials", SCOPED_DOCS),
    }
    let unprocessable = |m: &str| api_error(StatusCode::UNPROCESSABLE_ENTITY, m, SCOPED_DOCS);
    let Ok(req) = serde_json::from_slice::<ScopeRequest>(&body) else {
        return unprocessable("Problems parsing JSON");
    };
    let Some(parent) = req.access_token else {
        return unprocessable("Invalid request.\n\n\"access_token\" wasn't supplied.");
    };
    s.counters.api_call(&parent);
    let now = s.now();
    let Some(grant) = s
        .github
        .find(&parent, now)
        .filter(|g| g.client_id == client_id)
    else {
        // GitHub: invalid tokens return 404
        return api_error(StatusCode::NOT_FOUND, "Not Found", SCOPED_DOCS);
    };
    if req.repository_ids.is_some() || req.target_id.is_some() {
        return unprocessable(
            "The mock provider takes `target` and `repositories` (names), not ids.",
        );
    }
    let Some(target) = req.target else {
        return unprocessable("Invalid request.\n\n\"target\" or \"target_id\" must be supplied.");
    };
    let wanted: Vec<String> = req
        .repositories
        .unwrap_or_default()
        .into_iter()
        .map(|name| format!("{target}/{name}"))
        .collect();
    let reach = s
        .github_app_users
        .reachable(&client_id, &grant.subject, &parent);
    let all_reachable = wanted
        .iter()
        .all(|w| reach.iter().any(|r| r.eq_ignore_ascii_case(w)));
    let target_reachable = s
        .github_app_users
        .installations_for(&client_id, &grant.subject)
        .iter()
        .any(|i| i.account.eq_ignore_ascii_case(&target));
    if !target_reachable || !all_reachable {
        return unprocessable(
            "There is at least one repository that does not exist or is not accessible to the parent installation.",
        );
    }
    let narrowed: Vec<String> = if wanted.is_empty() {
        reach
            .into_iter()
            .filter(|r| {
                r.split('/')
                    .next()
                    .is_some_and(|o| o.eq_ignore_ascii_case(&target))
            })
            .collect()
    } else {
        wanted
    };
    let issued = s
        .github
        .issue_until(&grant.subject, &client_id, now, grant.expires_at);
    lock(&s.github_app_users.scoped).insert(issued.access_token.clone(), narrowed.clone());
    s.github_app_users
        .scoped_issued
        .fetch_add(1, Ordering::Relaxed);
    let token = issued.access_token;
    let last_eight: String = token
        .chars()
        .rev()
        .take(8)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    Json(json!({
        "id": issued.grant.id,
        "url": format!("{}/api/v3/authorizations/{}", s.base_url(), issued.grant.id),
        "app": { "name": app.name, "url": app.callback_url, "client_id": app.client_id },
        "token": token,
        "token_last_eight": last_eight,
        "note": null,
        "note_url": null,
        "fingerprint": null,
        "created_at": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "updated_at": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "expires_at": issued.grant.expires_at.map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        "scopes": [],
        "user": { "login": grant.subject },
        "repositories": narrowed,
    }))
    .into_response()
}

async fn install_page(State(s): State<Arc<Shared>>, Path(slug): Path<String>) -> Response {
    let known = s.github_app_users.apps().iter().any(|a| a.slug == slug);
    if !known {
        return (StatusCode::NOT_FOUND, Html("<h1>Not Found</h1>".to_owned())).into_response();
    }
    let slug = html_escape(&slug);
    Html(format!(
        "<!DOCTYPE html><html><head><title>Install {slug} · Mock GitHub</title></head>\
         <body><h1 id=\"install-app\">Install {slug}</h1>\
         <p>Mock GitHub: installations are set with <code>PUT /__mock/github-apps/installations</code>.</p>\
         </body></html>"
    ))
    .into_response()
}

fn html_escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '&' => "&amp;".to_owned(),
            '"' => "&quot;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

async fn control_list(State(s): State<Arc<Shared>>) -> Json<serde_json::Value> {
    Json(json!({
        "apps": s.github_app_users.apps(),
        "installations": s.github_app_users.installations(),
        "scoped_tokens_issued": s.github_app_users.scoped_issued(),
    }))
}

async fn control_add_app(State(s): State<Arc<Shared>>, Json(app): Json<MockGithubApp>) -> Response {
    if s.oauth_app(&app.client_id).is_none() {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": "no OAuth client with this client_id: register it first (MockConfig.oauth_apps)" })),
        )
            .into_response();
    }
    s.add_github_app(app);
    StatusCode::NO_CONTENT.into_response()
}

async fn control_installations(State(s): State<Arc<Shared>>) -> Json<Vec<MockUserInstallation>> {
    Json(s.github_app_users.installations())
}

async fn control_set_installations(
    State(s): State<Arc<Shared>>,
    Json(installations): Json<Vec<MockUserInstallation>>,
) -> StatusCode {
    s.github_app_users.set_installations(installations);
    StatusCode::NO_CONTENT
}
