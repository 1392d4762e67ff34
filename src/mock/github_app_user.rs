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
//! Apps and installations are those of module `github_app` (one App record,
//! one installation book for the App-JWT and the user side): the user
//! endpoints ask them only through [`super::github_app::AppBook::installations_for`],
//! which leaves out suspended installations.

use super::book::TokenStyle;
use super::github_app::MockInstallation;
use super::oauth::{basic_auth, secrets_equal};
use super::{Shared, lock};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// GitHub App user tokens and their refresh tokens.
pub(crate) const TOKEN_STYLE: TokenStyle = TokenStyle::new(("ghu_", 36), ("ghr_", 76), 20);
/// What every mock App may do on a repository: what a Git user token needs.
pub(crate) const PERMISSIONS: [&str; 2] = ["contents:write", "metadata:read"];

const SCOPED_DOCS: &str = "https://docs.github.com/rest/apps/apps#create-a-scoped-access-token";
const INSTALLATIONS_DOCS: &str = "https://docs.github.com/rest/apps/installations#list-app-installations-accessible-to-the-user-access-token";

/// Narrowed (scoped) tokens of GitHub App users.
#[derive(Default)]
pub(crate) struct Realm {
    /// Narrowed token → the repositories it reaches.
    scoped: Mutex<HashMap<String, Vec<String>>>,
    /// Answers of `POST /applications/{client_id}/token/scoped` that made a token.
    scoped_issued: AtomicU64,
}

impl Realm {
    pub(crate) fn scoped_issued(&self) -> u64 {
        self.scoped_issued.load(Ordering::Relaxed)
    }

    /// Forgets narrowed tokens (the token book is cleared alongside); Apps
    /// and installations stay.
    pub(crate) fn clear(&self) {
        lock(&self.scoped).clear();
        self.scoped_issued.store(0, Ordering::Relaxed);
    }
}

/// `owner/name` of every repository a user token of App `client_id` held
/// by `login` reaches: the narrowed set for a narrowed token, else
/// everything its installations cover — and never more than the
/// installations cover now.
pub(crate) fn reachable(s: &Shared, client_id: &str, login: &str, token: &str) -> Vec<String> {
    let mut through: Vec<String> = s
        .github_apps
        .installations_for(client_id, login)
        .into_iter()
        .flat_map(|i| i.repositories)
        .collect();
    if let Some(narrowed) = lock(&s.github_app_users.scoped).get(token) {
        through.retain(|r| narrowed.iter().any(|n| n.eq_ignore_ascii_case(r)));
    }
    through.sort_by_key(|r| r.to_lowercase());
    through.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
    through
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
        Some(g) if s.github_apps.is_user_app(&g.client_id) => Ok((token, g.client_id, g.subject)),
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

fn installation_json(
    s: &Shared,
    slug: &str,
    client_id: &str,
    i: &MockInstallation,
) -> serde_json::Value {
    json!({
        "id": i.id,
        "account": { "login": i.account, "type": "User" },
        "app_slug": slug,
        "app_id": i.app_id,
        "client_id": client_id,
        "repository_selection": i.selection(),
        "permissions": i.granted(),
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
    let slug = s.github_apps.slug_of(&client_id).unwrap_or_default();
    let found = s.github_apps.installations_for(&client_id, &login);
    let list: Vec<_> = found
        .iter()
        .map(|i| installation_json(&s, &slug, &client_id, i))
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
        .github_apps
        .installations_for(&client_id, &login)
        .into_iter()
        .find(|i| i.id.to_string() == id)
    else {
        return api_error(StatusCode::NOT_FOUND, "Not Found", INSTALLATIONS_DOCS);
    };
    let reach = reachable(&s, &client_id, &login, &token);
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
        "repository_selection": inst.selection(),
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
        .filter(|_| s.github_apps.is_user_app(&client_id))
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
    let reach = reachable(&s, &client_id, &grant.subject, &parent);
    let all_reachable = wanted
        .iter()
        .all(|w| reach.iter().any(|r| r.eq_ignore_ascii_case(w)));
    let target_reachable = s
        .github_apps
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
    let known = s.github_apps.has_slug(&slug);
    if !known {
        return (StatusCode::NOT_FOUND, Html("<h1>Not Found</h1>".to_owned())).into_response();
    }
    let slug = html_escape(&slug);
    Html(format!(
        "<!DOCTYPE html><html><head><title>Install {slug} · Mock GitHub</title></head>\
         <body><h1 id=\"install-app\">Install {slug}</h1>\
         <p>Mock GitHub: installations are set with <code>PUT /__mock/github_apps/installations</code>.</p>\
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
