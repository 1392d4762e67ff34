//! The browser side: sign-in and sign-out, the Git Personal Access Token
//! page, and the forms that start an authorization or delete a token.

use super::AppState;
use super::error::{MessagePage, PageError};
use super::extract::{PageForm, PagePath, PageQuery};
use super::limits::Limit;
use super::security::{cookie, csrf_ok, removal, safe_return_path, session_cookie_name};
use crate::auth::{Flash, FlashKind, Session};
use crate::oauth::{CallbackParams, FlowError, flow_cookie_name};
use crate::providers::{self, PatInput};
use crate::tokens::service::AssignError;
use crate::tokens::{TokenError, TokenSource};
use askama::Template;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::CookieJar;
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use secrecy::SecretString;
use serde::Deserialize;

async fn current_session(state: &AppState, jar: &CookieJar) -> Result<Option<Session>, PageError> {
    let Some(c) = jar.get(session_cookie_name(state.secure_cookies)) else {
        return Ok(None);
    };
    Ok(state.sessions.load(c.value()).await?)
}

fn to_login(next: &str) -> Response {
    let next: String = form_urlencoded::byte_serialize(next.as_bytes()).collect();
    Redirect::to(&format!("/login?next={next}")).into_response()
}

pub async fn home() -> Redirect {
    Redirect::to("/tokens")
}

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

pub async fn login(
    State(state): State<AppState>,
    jar: CookieJar,
    PageQuery(q): PageQuery<LoginQuery>,
) -> Result<Response, PageError> {
    let return_to = q
        .next
        .as_deref()
        .and_then(safe_return_path)
        .unwrap_or_else(|| "/tokens".into());
    let started = state.logins.begin(return_to).await?;
    let jar = jar.add(cookie(
        started.cookie_name,
        started.binding.expose_secret().to_owned(),
        state.secure_cookies,
        Some(started.ttl),
    ));
    Ok((jar, Redirect::to(started.url.as_str())).into_response())
}

#[derive(Deserialize)]
pub struct OidcCallback {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
}

pub async fn login_callback(
    State(state): State<AppState>,
    jar: CookieJar,
    PageQuery(q): PageQuery<OidcCallback>,
) -> Result<Response, PageError> {
    let login_state = q.state.unwrap_or_default();
    let cookie_name = crate::auth::login::login_cookie_name(&login_state, state.secure_cookies);
    let binding = jar.get(&cookie_name).map(|c| c.value().to_owned());
    let jar = jar.add(removal(cookie_name, state.secure_cookies));
    // a session that existed before sign-in is ended: a new id at login
    let previous = current_session(&state, &jar).await.ok().flatten();
    let (id, _session, return_to) = state
        .logins
        .complete(&login_state, q.code, q.error, binding.as_deref())
        .await?;
    if let Some(prev) = previous {
        state.sessions.destroy(&prev).await?;
    }
    let jar = jar.add(cookie(
        session_cookie_name(state.secure_cookies).to_owned(),
        id,
        state.secure_cookies,
        None,
    ));
    Ok((jar, Redirect::to(&return_to)).into_response())
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

pub async fn logout(
    State(state): State<AppState>,
    jar: CookieJar,
    PageForm(form): PageForm<CsrfForm>,
) -> Result<Response, PageError> {
    let Some(session) = current_session(&state, &jar).await? else {
        return Ok(Redirect::to("/signed-out").into_response());
    };
    if !csrf_ok(&session.csrf, &form.csrf) {
        return Err(csrf_error());
    }
    state.sessions.destroy(&session).await?;
    let jar = jar.add(removal(
        session_cookie_name(state.secure_cookies).to_owned(),
        state.secure_cookies,
    ));
    Ok((jar, Redirect::to("/signed-out")).into_response())
}

pub async fn signed_out() -> Result<Html<String>, PageError> {
    render(&MessagePage {
        title: "Signed out",
        message: "You have signed out of gitbroker.",
        is_error: false,
        link: Some(("/login", "Sign in again")),
    })
}

fn csrf_error() -> PageError {
    PageError::new(
        StatusCode::FORBIDDEN,
        "Request refused",
        "The form was stale or did not come from this site. Reload the page and try again.",
    )
}

fn render<T: Template>(t: &T) -> Result<Html<String>, PageError> {
    t.render().map(Html).map_err(|e| {
        tracing::error!(error = %e, "template failed");
        PageError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "The page could not be rendered.",
        )
    })
}

pub struct TokenView {
    status: &'static str,
    status_text: &'static str,
    login: String,
    scopes: String,
    expires: String,
    added: String,
    method: &'static str,
}

pub struct RuntimeView {
    id: String,
    git_host: String,
    provider_name: &'static str,
    can_oauth: bool,
    token: Option<TokenView>,
    needs_username: bool,
    needs_email: bool,
    token_help: &'static str,
    /// The user's other runtimes on the same provider host.
    same_host: Vec<String>,
}

/// A runtime whose stored token cannot be decrypted any more.
fn unreadable_view(rt: &crate::registry::Runtime, can_oauth: bool) -> RuntimeView {
    RuntimeView {
        id: rt.id.clone(),
        git_host: rt.git_host.clone(),
        provider_name: "Git provider",
        can_oauth,
        token: Some(TokenView {
            status: "reauthorize",
            status_text: "Unreadable (its encryption key was retired) — add the token again",
            login: "—".into(),
            scopes: String::new(),
            expires: "—".into(),
            added: "—".into(),
            method: "unknown",
        }),
        needs_username: false,
        needs_email: false,
        token_help: "",
        same_host: Vec::new(),
    }
}

pub struct AccountView {
    name: String,
    runtimes: Vec<RuntimeView>,
}

impl Flash {
    fn kind_class(&self) -> &'static str {
        match self.kind {
            FlashKind::Success => "success",
            FlashKind::Error => "error",
        }
    }
}

#[derive(Template)]
#[template(path = "tokens.html")]
struct TokensPage {
    user_name: String,
    user_id: String,
    csrf: String,
    flash: Option<Flash>,
    accounts: Vec<AccountView>,
}

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

pub async fn tokens_page(
    State(state): State<AppState>,
    jar: CookieJar,
) -> Result<Response, PageError> {
    let Some(mut session) = current_session(&state, &jar).await? else {
        return Ok(to_login("/tokens"));
    };
    let flash = state.sessions.take_flash(&mut session).await?;
    let now = state.clock.now();
    let runtimes = state.registry.runtimes().await?;
    let apps = state.registry.apps().await?;
    let my_accounts = state.registry.accounts_for_groups(&session.user.groups);
    // each runtime's provider, resolved once: the page groups runtimes by host
    let resolved: std::collections::HashMap<&str, (providers::ProviderKind, providers::Endpoints)> =
        runtimes
            .iter()
            .filter_map(|rt| {
                let r = state.registry.provider_of_with(rt, &apps).ok()?;
                Some((rt.id.as_str(), r))
            })
            .collect();
    let mut accounts = Vec::new();
    for account in &my_accounts {
        let mut views = Vec::new();
        for rt in runtimes.iter().filter(|r| r.account == account.id) {
            let app = rt
                .oauth_app
                .as_ref()
                .and_then(|id| apps.iter().find(|a| &a.id == id));
            let stored = match state.tokens.get(&rt.id, &session.user.sub).await {
                Ok(stored) => stored,
                // an encryption key was removed: show it, don't fail the page
                Err(TokenError::Crypto(e)) => {
                    tracing::error!(runtime = %rt.id, error = %e, "stored user token does not open");
                    views.push(unreadable_view(rt, app.is_some()));
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let token = stored.map(|(t, _)| {
                let needs_reauth = match (&t.source, app) {
                    (TokenSource::OAuth { .. }, Some(app)) => !providers::missing_scopes(
                        providers::provider(app.provider),
                        &t.scopes,
                        &app.scopes,
                    )
                    .is_empty(),
                    _ => false,
                };
                let (status, status_text) = if t.is_expired(now) {
                    ("expired", "Expired — authorize again")
                } else if needs_reauth {
                    ("reauthorize", "Scopes changed — authorize again")
                } else {
                    ("valid", "Valid")
                };
                TokenView {
                    status,
                    status_text,
                    login: if t.provider_login.is_empty() {
                        "—".into()
                    } else {
                        t.provider_login.clone()
                    },
                    scopes: t.scopes.join(", "),
                    expires: t.expires_at.map(when).unwrap_or_else(|| "never".into()),
                    added: when(t.issued_at),
                    method: match t.source {
                        TokenSource::OAuth { .. } => "OAuth",
                        TokenSource::Pat => "personal access token",
                    },
                }
            });
            let here = resolved.get(rt.id.as_str());
            let provider = here.map(|(kind, _)| providers::provider(*kind));
            // the user's other runtimes on the same provider host
            let same_host: Vec<String> = match here {
                Some((kind, endpoints)) => runtimes
                    .iter()
                    .filter(|o| o.id != rt.id && my_accounts.iter().any(|a| a.id == o.account))
                    .filter(|o| {
                        resolved
                            .get(o.id.as_str())
                            .is_some_and(|(k, e)| k == kind && e.api == endpoints.api)
                    })
                    .map(|o| o.id.clone())
                    .collect(),
                None => Vec::new(),
            };
            views.push(RuntimeView {
                id: rt.id.clone(),
                git_host: rt.git_host.clone(),
                provider_name: provider.map_or("Git provider", |p| p.display_name()),
                can_oauth: app.is_some(),
                token,
                needs_username: provider.is_some_and(|p| p.needs_username()),
                needs_email: provider.is_some_and(|p| p.needs_email()),
                token_help: provider.map_or("", |p| p.token_help(providers::TokenPurpose::User)),
                same_host,
            });
        }
        accounts.push(AccountView {
            name: account.name.clone(),
            runtimes: views,
        });
    }
    let page = TokensPage {
        user_name: session.user.name.clone(),
        user_id: session.user.sub.clone(),
        csrf: session.csrf.clone(),
        flash,
        accounts,
    };
    Ok(render(&page)?.into_response())
}

pub async fn authorize(
    State(state): State<AppState>,
    jar: CookieJar,
    PagePath(runtime): PagePath<String>,
    PageForm(form): PageForm<CsrfForm>,
) -> Result<Response, PageError> {
    let Some(mut session) = current_session(&state, &jar).await? else {
        return Ok(to_login("/tokens"));
    };
    if !csrf_ok(&session.csrf, &form.csrf) {
        return Err(csrf_error());
    }
    state
        .limits
        .check_user(Limit::FlowStart, &session.user.sub)?;
    match state.flows.start(&session, &runtime).await {
        Ok(started) => {
            let jar = jar.add(cookie(
                started.cookie_name,
                started.binding.expose_secret().to_owned(),
                state.secure_cookies,
                Some(started.ttl),
            ));
            Ok((jar, Redirect::to(started.authorize_url.as_str())).into_response())
        }
        Err(FlowError::NoOAuthApp(rt)) => {
            state
                .sessions
                .flash(&mut session, FlashKind::Error, format!("Runtime {rt} has no OAuth app configured; add a personal access token instead."))
                .await?;
            Ok(Redirect::to("/tokens").into_response())
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn oauth_callback(
    State(state): State<AppState>,
    jar: CookieJar,
    PagePath(app): PagePath<String>,
    PageQuery(params): PageQuery<CallbackParams>,
) -> Result<Response, PageError> {
    let session = current_session(&state, &jar).await?;
    let flow_state = params.state.clone().unwrap_or_default();
    let cookie_name = flow_cookie_name(&flow_state, state.secure_cookies);
    let binding = jar.get(&cookie_name).map(|c| c.value().to_owned());
    let jar = jar.add(removal(cookie_name, state.secure_cookies));
    let result = state
        .flows
        .complete(&app, params, session.as_ref(), binding.as_deref())
        .await;
    let (mut session, kind, text, return_to) = match (result, session) {
        (Ok(done), Some(session)) => {
            let who = if done.provider_login.is_empty() {
                String::new()
            } else {
                format!(" as {}", done.provider_login)
            };
            let text = format!(
                "Access to {} authorized{who} for runtime {}.",
                done.provider, done.runtime
            );
            (session, FlashKind::Success, text, done.return_to)
        }
        (
            Err(FlowError::Outcome {
                runtime,
                return_to,
                failure,
            }),
            Some(session),
        ) => (
            session,
            FlashKind::Error,
            format!("Runtime {runtime}: {failure}"),
            return_to,
        ),
        (Err(e), _) => return Ok((jar, PageError::from(e)).into_response()),
        // a completed flow always has a session: the binding check requires it
        (Ok(_), None) => return Err(PageError::from(FlowError::Forbidden)),
    };
    state.sessions.flash(&mut session, kind, text).await?;
    // 303 to a clean URL: the code leaves the address bar
    Ok((jar, Redirect::to(&return_to)).into_response())
}

pub async fn delete_token(
    State(state): State<AppState>,
    jar: CookieJar,
    PagePath(runtime): PagePath<String>,
    PageForm(form): PageForm<CsrfForm>,
) -> Result<Response, PageError> {
    let Some(mut session) = current_session(&state, &jar).await? else {
        return Ok(to_login("/tokens"));
    };
    if !csrf_ok(&session.csrf, &form.csrf) {
        return Err(csrf_error());
    }
    if state
        .registry
        .runtime_for_groups(&session.user.groups, &runtime)
        .await?
        .is_none()
    {
        return Err(PageError::from(FlowError::RuntimeNotFound));
    }
    let text = match state.tokens.get(&runtime, &session.user.sub).await? {
        Some((token, _)) => {
            let revoked = state.flows.revoke(&token).await;
            state.tokens.delete(&runtime, &session.user.sub).await?;
            tracing::info!(target: "gitbroker::audit", action = "user_token.delete", runtime = %runtime, user = %session.user.sub, "user token deleted");
            match revoked {
                Ok(()) => format!("Token deleted for runtime {runtime}."),
                Err(e) => {
                    tracing::warn!(runtime = %runtime, error = %e, "revocation at the provider failed; deleted locally");
                    format!(
                        "Token deleted for runtime {runtime}. The provider could not be reached to revoke it; you may revoke it there yourself."
                    )
                }
            }
        }
        None => format!("Runtime {runtime} had no token."),
    };
    state
        .sessions
        .flash(&mut session, FlashKind::Success, text)
        .await?;
    Ok(Redirect::to("/tokens").into_response())
}

#[derive(Deserialize)]
pub struct PatForm {
    csrf: String,
    token: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    also: Vec<String>,
}

fn non_empty(s: String) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

/// "Advanced authorization options": a pasted personal access token,
/// validated at the provider, assigned to this runtime and the chosen others.
pub async fn add_pat(
    State(state): State<AppState>,
    jar: CookieJar,
    PagePath(runtime): PagePath<String>,
    PageForm(form): PageForm<PatForm>,
) -> Result<Response, PageError> {
    let Some(mut session) = current_session(&state, &jar).await? else {
        return Ok(to_login("/tokens"));
    };
    if !csrf_ok(&session.csrf, &form.csrf) {
        return Err(csrf_error());
    }
    state
        .limits
        .check_user(Limit::TokenCheck, &session.user.sub)?;
    let input = PatInput {
        token: SecretString::from(form.token.trim().to_owned()),
        username: non_empty(form.username),
        email: non_empty(form.email),
    };
    let (kind, text) = match pat_outcome(&state, &session, &runtime, &form.also, input).await? {
        Ok(text) => (FlashKind::Success, text),
        Err(text) => (FlashKind::Error, text),
    };
    state.sessions.flash(&mut session, kind, text).await?;
    Ok(Redirect::to("/tokens").into_response())
}

/// `Ok(Ok(message))` on success, `Ok(Err(message))` for a refusal to show.
pub(super) async fn pat_outcome(
    state: &AppState,
    session: &Session,
    runtime: &str,
    also: &[String],
    input: PatInput,
) -> Result<Result<String, String>, PageError> {
    if secrecy::ExposeSecret::expose_secret(&input.token).is_empty() {
        return Ok(Err(format!(
            "Runtime {runtime}: paste a personal access token first."
        )));
    }
    match state
        .token_service
        .assign_pat(&session.user, runtime, also, input)
        .await
    {
        Ok(done) => Ok(Ok(format!(
            "{} token of {} ({}) added to runtime {}.",
            done.provider,
            done.report.login,
            done.report.kind,
            done.runtimes.join(", ")
        ))),
        Err(AssignError::RuntimeNotFound(_)) => Err(PageError::from(FlowError::RuntimeNotFound)),
        Err(AssignError::Pat(e)) => Ok(Err(format!("Runtime {runtime}: {e}"))),
        Err(AssignError::DifferentHost(m) | AssignError::HostChange(m)) => Ok(Err(m)),
        Err(AssignError::Registry(e)) => Err(e.into()),
        Err(AssignError::Token(e)) => Err(e.into()),
    }
}

pub async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../assets/style.css"),
    )
}

pub async fn not_found() -> PageError {
    PageError::new(
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no page at this address.",
    )
}
