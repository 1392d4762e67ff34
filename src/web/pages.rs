//! The browser side: sign-in and sign-out, the Git Personal Access Token
//! page, and the forms that start an authorization or delete a token.

use super::AppState;
use super::error::{MessagePage, PageError};
use super::extract::{PageForm, PagePath, PageQuery};
use super::limits::Limit;
use super::security::{cookie, csrf_ok, removal, safe_return_path, session_cookie_name};
use crate::auth::{Flash, FlashKind, Session};
use crate::events::{Action, Actor, Event};
use crate::oauth::{CallbackParams, FlowError, flow_cookie_name};
use crate::providers::{self, PatInput};
use crate::tokens::{
    AssignError, Released, State as TokenState, TokenInfo, TokenSlot, TokenSource,
};
use askama::Template;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::CookieJar;
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
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

/// The session of a form post, when its `csrf` field is the session's;
/// `None` without a session (the caller sends the browser to sign in).
async fn form_session(
    state: &AppState,
    jar: &CookieJar,
    csrf: &str,
) -> Result<Option<Session>, PageError> {
    let Some(session) = current_session(state, jar).await? else {
        return Ok(None);
    };
    if !csrf_ok(&session.csrf, csrf) {
        return Err(csrf_error());
    }
    Ok(Some(session))
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
    let (id, session, return_to) = state
        .logins
        .complete(&login_state, q.code, q.error, binding.as_deref())
        .await?;
    if let Some(prev) = previous {
        state.sessions.destroy(&prev).await?;
    }
    session_event(&state, Action::SignedIn, &session.user.sub).await;
    state.notifier.remember(&session.user).await;
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
    session_event(&state, Action::SignedOut, &session.user.sub).await;
    let jar = jar.add(removal(
        session_cookie_name(state.secure_cookies).to_owned(),
        state.secure_cookies,
    ));
    Ok((jar, Redirect::to("/signed-out")).into_response())
}

async fn session_event(state: &AppState, action: Action, sub: &str) {
    let event = Event::new(action, Actor::user(sub), state.clock.now()).user(sub);
    state.lifecycle.events().emit(event).await;
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
    /// The status's machine name, for styling and tests.
    status: &'static str,
    status_text: String,
    /// Why, when the status is not plainly valid.
    reason: Option<String>,
    login: String,
    scopes: String,
    expires: String,
    added: String,
    method: &'static str,
    /// Other runtimes using this same authorization.
    shared_with: String,
    /// Where to install the GitHub App, for a `not_installed` token.
    install_url: Option<String>,
}

/// Text escaped for HTML once, when made: for what the token page repeats
/// (the CSRF token in each form, a provider's help on each row, an offer
/// on each other row), which askama would otherwise escape again at every
/// occurrence. Only [`Escaped::new`] makes one, so what it holds is always
/// escaped; askama writes it as it is (`HtmlSafe`).
#[derive(Clone)]
pub struct Escaped(std::sync::Arc<str>);

impl Escaped {
    fn new(text: &str) -> Self {
        let escaped = match askama::filters::escape(text, askama::filters::Html) {
            Ok(e) => e.to_string(),
            Err(never) => match never {},
        };
        Self(escaped.into())
    }
}

impl std::fmt::Display for Escaped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl askama::filters::HtmlSafe for Escaped {}

/// Shared, not copied: each grant is offered on every other runtime of its
/// app (fifty runtimes, a few grants: hundreds of offers).
#[derive(Clone)]
pub struct ReuseView {
    grant: Escaped,
    /// The button's text when it is the runtime's only offer.
    label: Escaped,
    /// The option's text among several: "as alice (used by …)".
    choice: Escaped,
}

/// A grant's runtimes named in its offer: a few, then how many more. Every
/// offer appears on each other runtime of its app, so a full list would make
/// the page grow with runtimes × runtimes; each row says who shares its own
/// token ("Also used by") in full.
const OFFER_NAMES: usize = 3;

impl ReuseView {
    fn new(g: &crate::tokens::Reusable) -> Self {
        let who = if g.login.is_empty() {
            String::new()
        } else {
            format!(" as {}", g.login)
        };
        let mut used_by = g
            .used_by
            .iter()
            .take(OFFER_NAMES)
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        if g.used_by.len() > OFFER_NAMES {
            used_by.push_str(&format!(" and {} more", g.used_by.len() - OFFER_NAMES));
        }
        let choice = format!("{who} (used by {used_by})");
        Self {
            grant: Escaped::new(&g.grant_id),
            label: Escaped::new(&format!(
                "Use my existing authorization{who} (used by {used_by})"
            )),
            choice: Escaped::new(choice.trim_start()),
        }
    }
}

pub struct RuntimeView {
    id: String,
    git_host: String,
    provider_name: &'static str,
    can_oauth: bool,
    token: Option<TokenView>,
    needs_username: bool,
    needs_email: bool,
    token_help: Escaped,
    /// The one existing authorization of this runtime's OAuth app to use
    /// here: a button.
    reuse_one: Option<ReuseView>,
    /// Two or more of them: one form, a choice.
    reuse_choices: Vec<ReuseView>,
    cap_warning: Option<String>,
    /// The token needs attention and the user is alerted (badge).
    attention: bool,
    /// The user hid this runtime's notifications.
    hidden: bool,
    /// The shared form (`PatGroup::n`) of this runtime's provider host, when
    /// the user has other runtimes there.
    several: Option<usize>,
}

/// The user's runtimes on one provider host (same kind and API URL), where
/// one pasted token can serve them all: one form for the whole group, each
/// runtime listed once, instead of each runtime listing all the others.
pub struct PatGroup {
    /// Its place on the page (`#pat-several-{n}`).
    n: usize,
    git_host: String,
    provider_name: &'static str,
    needs_username: bool,
    needs_email: bool,
    token_help: Escaped,
    runtimes: Vec<PatGroupRuntime>,
}

pub struct PatGroupRuntime {
    id: String,
    account: String,
}

pub struct BannerItem {
    runtime: String,
    text: String,
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

/// Whitespace around template tags minimized: the page repeats its row
/// fifty times and more, and indentation was a fifth of it.
#[derive(Template)]
#[template(path = "tokens.html", whitespace = "minimize")]
struct TokensPage {
    user_name: String,
    user_id: String,
    /// In every form: escaped once.
    csrf: Escaped,
    flash: Option<Flash>,
    accounts: Vec<AccountView>,
    notifications_on: bool,
    /// Runtimes needing attention, hidden ones left out.
    banner: Vec<BannerItem>,
    /// One shared "several runtimes" form per provider host with two or
    /// more of the user's runtimes.
    pat_groups: Vec<PatGroup>,
    /// The user is in more than one account: the shared forms say which
    /// runtime is whose.
    multi_account: bool,
}

/// `2026-12-01 19:05 UTC`, written directly: chrono's `format` parses its
/// pattern on every call, several times per runtime on the token page.
fn when(t: DateTime<Utc>) -> String {
    use chrono::{Datelike, Timelike};
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute()
    )
}

fn status_text(state: TokenState) -> &'static str {
    match state {
        TokenState::Valid => "Valid",
        TokenState::ExpiringSoon => "Expiring soon",
        TokenState::Expired => "Expired — authorize again",
        TokenState::Invalid => "Revoked or invalid — authorize again",
        TokenState::MissingScopes => "Missing scopes — authorize again",
        TokenState::NeedsReauthorization => "Needs re-authorization",
        TokenState::NotInstalled => "GitHub App not installed — install it, then reload",
        TokenState::Unknown => "Valid (last check could not reach the provider)",
        TokenState::Unreadable => {
            "Unreadable (its encryption key was retired) — add the token again"
        }
    }
}

fn token_view(t: &TokenInfo) -> TokenView {
    TokenView {
        status: t.status.state.as_str(),
        status_text: status_text(t.status.state).to_owned(),
        reason: t.status.reason.clone(),
        login: if t.login.is_empty() {
            "—".into()
        } else {
            t.login.clone()
        },
        scopes: t.scopes.join(", "),
        // a refreshed token's own expiry does not matter to the user: its
        // authorization's end does
        expires: if t.refreshable {
            format!(
                "{} (refreshed automatically)",
                t.usable_until.map(when).unwrap_or_else(|| "never".into())
            )
        } else {
            t.expires_at.map(when).unwrap_or_else(|| "never".into())
        },
        added: when(t.authorized_at),
        method: match t.source {
            TokenSource::OAuth { .. } => "OAuth",
            TokenSource::Pat { .. } => "personal access token",
        },
        shared_with: t.shared_with.join(", "),
        install_url: None,
    }
}

fn unreadable_view() -> TokenView {
    TokenView {
        status: "unreadable",
        status_text: status_text(TokenState::Unreadable).to_owned(),
        reason: None,
        login: "—".into(),
        scopes: String::new(),
        expires: "—".into(),
        added: "—".into(),
        method: "unknown",
        shared_with: String::new(),
        install_url: None,
    }
}

pub async fn tokens_page(
    State(state): State<AppState>,
    jar: CookieJar,
) -> Result<Response, PageError> {
    let Some(mut session) = current_session(&state, &jar).await? else {
        return Ok(to_login("/tokens"));
    };
    let flash = state.sessions.take_flash(&mut session).await?;
    let (prefs, _) = state
        .notifier
        .prefs(&session.user.sub)
        .await
        .map_err(notify_page_error)?;
    let notifications_on = prefs.enabled.unwrap_or(state.notifier.default_enabled());
    let mut banner = Vec::new();
    let mut accounts = Vec::new();
    let mut offers: std::collections::HashMap<String, ReuseView> = std::collections::HashMap::new();
    let mut helps = Vec::new();
    let listed = state
        .lifecycle
        .user_runtimes(&session.user)
        .await
        .map_err(assign_page_error)?;
    let multi_account = listed.len() > 1;
    let (pat_groups, several) = pat_groups(&listed);
    for (account, runtimes) in listed {
        let views = runtimes
            .into_iter()
            .map(|r| {
                let provider = r
                    .provider
                    .as_ref()
                    .map(|(kind, _)| providers::provider(*kind));
                let hidden = prefs.hidden.contains(&r.runtime.id);
                let attention = match &r.token {
                    TokenSlot::Present(t) if crate::notify::needs_attention(t.status.state) => {
                        if notifications_on && !hidden {
                            banner.push(BannerItem {
                                runtime: r.runtime.id.clone(),
                                text: status_text(t.status.state).to_owned(),
                            });
                        }
                        notifications_on && !hidden
                    }
                    _ => false,
                };
                RuntimeView {
                    attention,
                    hidden,
                    id: r.runtime.id.clone(),
                    git_host: r.runtime.git_host.clone(),
                    provider_name: provider.map_or("Git provider", |p| p.display_name()),
                    can_oauth: r.app.is_some(),
                    token: match &r.token {
                        TokenSlot::None => None,
                        TokenSlot::Unreadable => Some(unreadable_view()),
                        TokenSlot::Present(t) => {
                            let github_app = r
                                .app
                                .as_ref()
                                .filter(|a| a.kind == providers::AppKind::GithubApp);
                            let view = token_view(t);
                            Some(TokenView {
                                install_url: (t.status.state == TokenState::NotInstalled)
                                    .then(|| github_app.and_then(|a| a.install_url()))
                                    .flatten(),
                                // a GitHub App user token has the App's
                                // permissions, not scopes
                                scopes: match github_app {
                                    Some(_) if view.scopes.is_empty() => {
                                        "none (the GitHub App's permissions apply)".into()
                                    }
                                    _ => view.scopes.clone(),
                                },
                                ..view
                            })
                        }
                    },
                    needs_username: provider.is_some_and(|p| p.needs_username()),
                    needs_email: provider.is_some_and(|p| p.needs_email()),
                    token_help: help(&mut helps, provider),
                    several: several.get(r.runtime.id.as_str()).copied(),
                    reuse_one: match r.reusable.as_slice() {
                        [g] => Some(offer(&mut offers, g)),
                        _ => None,
                    },
                    reuse_choices: if r.reusable.len() > 1 {
                        r.reusable.iter().map(|g| offer(&mut offers, g)).collect()
                    } else {
                        Vec::new()
                    },
                    cap_warning: r.cap_warning,
                }
            })
            .collect();
        accounts.push(AccountView {
            name: account.name,
            runtimes: views,
        });
    }
    let page = TokensPage {
        user_name: session.user.name.clone(),
        user_id: session.user.sub.clone(),
        csrf: Escaped::new(&session.csrf),
        flash,
        accounts,
        notifications_on,
        banner,
        pat_groups,
        multi_account,
    };
    Ok(render(&page)?.into_response())
}

/// A provider's help for pasting a user token, escaped once per page.
fn help(
    helps: &mut Vec<(&'static str, Escaped)>,
    provider: Option<&'static dyn providers::GitProvider>,
) -> Escaped {
    let text = provider.map_or("", |p| p.token_help(providers::TokenPurpose::User));
    if let Some((_, e)) = helps.iter().find(|(t, _)| *t == text) {
        return e.clone();
    }
    let e = Escaped::new(text);
    helps.push((text, e.clone()));
    e
}

/// A grant's offer, made once per page and shared by every row offering it.
fn offer(
    offers: &mut std::collections::HashMap<String, ReuseView>,
    g: &crate::tokens::Reusable,
) -> ReuseView {
    if let Some(made) = offers.get(&g.grant_id) {
        return made.clone();
    }
    let made = ReuseView::new(g);
    offers.insert(g.grant_id.clone(), made.clone());
    made
}

/// The shared "several runtimes" forms: the user's runtimes grouped by
/// provider kind and API URL (what a pasted token is valid for, as
/// `Lifecycle::assign_pat` checks), groups of one left out; and each
/// runtime's group.
fn pat_groups(
    listed: &[(
        crate::config::AccountSettings,
        Vec<crate::tokens::UserRuntime>,
    )],
) -> (Vec<PatGroup>, std::collections::HashMap<String, usize>) {
    let mut keys: Vec<(providers::ProviderKind, &url::Url)> = Vec::new();
    let mut groups: Vec<PatGroup> = Vec::new();
    for (account, runtimes) in listed {
        for r in runtimes {
            let Some((kind, endpoints)) = &r.provider else {
                continue;
            };
            let member = PatGroupRuntime {
                id: r.runtime.id.clone(),
                account: account.name.clone(),
            };
            match keys
                .iter()
                .position(|(k, api)| k == kind && *api == &endpoints.api)
            {
                Some(i) => groups[i].runtimes.push(member),
                None => {
                    let p = providers::provider(*kind);
                    keys.push((*kind, &endpoints.api));
                    groups.push(PatGroup {
                        n: 0,
                        git_host: r.runtime.git_host.clone(),
                        provider_name: p.display_name(),
                        needs_username: p.needs_username(),
                        needs_email: p.needs_email(),
                        token_help: Escaped::new(p.token_help(providers::TokenPurpose::User)),
                        runtimes: vec![member],
                    });
                }
            }
        }
    }
    groups.retain(|g| g.runtimes.len() > 1);
    let mut of = std::collections::HashMap::new();
    for (n, g) in groups.iter_mut().enumerate() {
        g.n = n + 1;
        for r in &g.runtimes {
            of.insert(r.id.clone(), g.n);
        }
    }
    (groups, of)
}

fn assign_page_error(e: AssignError) -> PageError {
    match e {
        AssignError::RuntimeNotFound(_) => PageError::from(FlowError::RuntimeNotFound),
        AssignError::Registry(e) => e.into(),
        AssignError::Token(e) => e.into(),
        other => PageError::new(StatusCode::CONFLICT, "Not possible", other.to_string()),
    }
}

pub async fn authorize(
    State(state): State<AppState>,
    jar: CookieJar,
    PagePath(runtime): PagePath<String>,
    PageForm(form): PageForm<CsrfForm>,
) -> Result<Response, PageError> {
    let Some(mut session) = form_session(&state, &jar, &form.csrf).await? else {
        return Ok(to_login("/tokens"));
    };
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
            match &done.not_installed {
                Some(why) => {
                    let text = format!(
                        "Access to {} authorized{who} for runtime {}, but the token cannot reach anything yet: {why}.",
                        done.provider, done.runtime
                    );
                    (session, FlashKind::Error, text, done.return_to)
                }
                None => {
                    let text = format!(
                        "Access to {} authorized{who} for runtime {}.",
                        done.provider, done.runtime
                    );
                    (session, FlashKind::Success, text, done.return_to)
                }
            }
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
    let Some(mut session) = form_session(&state, &jar, &form.csrf).await? else {
        return Ok(to_login("/tokens"));
    };
    let text = match state
        .lifecycle
        .unassign(&session.user, &runtime)
        .await
        .map_err(assign_page_error)?
    {
        Some(Released::StillUsed { runtimes }) => format!(
            "Token deleted for runtime {runtime}. The same authorization stays in use for {}, so it was not revoked.",
            runtimes.join(", ")
        ),
        Some(Released::Deleted(report)) => {
            format!("Token deleted for runtime {runtime}. {}", report.describe())
        }
        Some(Released::Missing) => format!("Token deleted for runtime {runtime}."),
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

/// "Advanced authorization options": a pasted personal access token,
/// validated at the provider, assigned to this runtime and the chosen others.
pub async fn add_pat(
    State(state): State<AppState>,
    jar: CookieJar,
    PagePath(runtime): PagePath<String>,
    PageForm(form): PageForm<PatForm>,
) -> Result<Response, PageError> {
    let Some(mut session) = form_session(&state, &jar, &form.csrf).await? else {
        return Ok(to_login("/tokens"));
    };
    state
        .limits
        .check_user(Limit::TokenCheck, &session.user.sub)?;
    let input = PatInput::new(&form.token, Some(&form.username), Some(&form.email));
    let (kind, text) = match pat_outcome(&state, &session, &runtime, &form.also, input).await? {
        Ok(text) => (FlashKind::Success, text),
        Err(text) => (FlashKind::Error, text),
    };
    state.sessions.flash(&mut session, kind, text).await?;
    Ok(Redirect::to("/tokens").into_response())
}

#[derive(Deserialize)]
pub struct SeveralPatForm {
    csrf: String,
    token: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    email: String,
    /// The checked runtimes: one `runtimes=` field each.
    #[serde(default)]
    runtimes: Vec<String>,
}

/// The shared form of a provider host: one pasted token, validated once,
/// for each checked runtime. Nothing checked, or a runtime that is not the
/// user's or not on the others' host, is refused as a whole (4xx) before
/// the provider is asked.
pub async fn add_pat_several(
    State(state): State<AppState>,
    jar: CookieJar,
    PageForm(form): PageForm<SeveralPatForm>,
) -> Result<Response, PageError> {
    let Some(mut session) = form_session(&state, &jar, &form.csrf).await? else {
        return Ok(to_login("/tokens"));
    };
    let Some((first, others)) = form.runtimes.split_first() else {
        return Err(PageError::new(
            StatusCode::BAD_REQUEST,
            "No runtime checked",
            "Check at least one runtime to add the token to.",
        ));
    };
    state
        .limits
        .check_user(Limit::TokenCheck, &session.user.sub)?;
    let input = PatInput::new(&form.token, Some(&form.username), Some(&form.email));
    let (kind, text) = match pat_outcome(&state, &session, first, others, input).await? {
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
    if input.is_empty() {
        return Ok(Err(format!(
            "Runtime {runtime}: paste a personal access token first."
        )));
    }
    match state
        .lifecycle
        .assign_pat(&session.user, runtime, also, input)
        .await
    {
        Ok(done) => {
            let kind = done.report.as_ref().map_or("token", |r| r.kind.as_str());
            let mut text = format!(
                "{} token of {} ({kind}) added to runtime {}.",
                done.provider,
                done.login,
                done.runtimes.join(", ")
            );
            if !done.skipped.is_empty() {
                text.push_str(&format!(
                    " Not added to {}: deleted or moved meanwhile.",
                    done.skipped.join(", ")
                ));
            }
            Ok(Ok(text))
        }
        Err(AssignError::RuntimeNotFound(_)) => Err(PageError::from(FlowError::RuntimeNotFound)),
        Err(AssignError::Pat(e)) => Ok(Err(format!("Runtime {runtime}: {e}"))),
        // the form offers only runtimes of one host together: a mix is a
        // crafted or stale form, refused before the provider is asked
        Err(e @ AssignError::DifferentHost(_)) => Err(PageError::new(
            StatusCode::BAD_REQUEST,
            "Not on one host",
            e.to_string(),
        )),
        Err(AssignError::Registry(e)) => Err(e.into()),
        Err(AssignError::Token(e)) => Err(e.into()),
        Err(other) => Ok(Err(other.to_string())),
    }
}

#[derive(Deserialize)]
pub struct ReuseForm {
    csrf: String,
    grant: String,
}

/// "Use my existing authorization" for a runtime.
pub async fn reuse_grant(
    State(state): State<AppState>,
    jar: CookieJar,
    PagePath(runtime): PagePath<String>,
    PageForm(form): PageForm<ReuseForm>,
) -> Result<Response, PageError> {
    let Some(mut session) = form_session(&state, &jar, &form.csrf).await? else {
        return Ok(to_login("/tokens"));
    };
    let (kind, text) = match state
        .lifecycle
        .reuse_grant(&session.user, &runtime, &form.grant)
        .await
    {
        Ok(done) => (
            FlashKind::Success,
            format!(
                "Your existing {} authorization{} is now also used for runtime {runtime}.",
                done.provider,
                if done.login.is_empty() {
                    String::new()
                } else {
                    format!(" as {}", done.login)
                }
            ),
        ),
        Err(AssignError::RuntimeNotFound(_)) => {
            return Err(PageError::from(FlowError::RuntimeNotFound));
        }
        Err(AssignError::Registry(e)) => return Err(e.into()),
        Err(AssignError::Token(e)) => return Err(e.into()),
        Err(other) => (FlashKind::Error, format!("Runtime {runtime}: {other}")),
    };
    state.sessions.flash(&mut session, kind, text).await?;
    Ok(Redirect::to("/tokens").into_response())
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

fn notify_page_error(e: crate::notify::NotifyError) -> PageError {
    tracing::warn!(error = %e, "notification settings unavailable");
    PageError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "Temporarily unavailable",
        "Your notification settings could not be read. Try again in a moment.",
    )
}

#[derive(Deserialize)]
pub struct NotificationsForm {
    csrf: String,
    /// `1` to hide (a runtime) or turn on (all), `0` for the opposite.
    value: String,
}

fn flag(v: &str) -> Result<bool, PageError> {
    match v {
        "1" => Ok(true),
        "0" => Ok(false),
        _ => Err(PageError::new(
            StatusCode::BAD_REQUEST,
            "Bad request",
            "The form's value must be 1 or 0.",
        )),
    }
}

/// The row menu's "Hide notifications" / "Show notifications".
pub async fn runtime_notifications(
    State(state): State<AppState>,
    jar: CookieJar,
    PagePath(runtime): PagePath<String>,
    PageForm(form): PageForm<NotificationsForm>,
) -> Result<Response, PageError> {
    let Some(mut session) = form_session(&state, &jar, &form.csrf).await? else {
        return Ok(to_login("/tokens"));
    };
    let hide = flag(&form.value)?;
    let text = match state
        .notifier
        .set_hidden(&session.user, &runtime, hide)
        .await
    {
        Ok(_) if hide => format!(
            "Notifications hidden for runtime {runtime}. Its token's status stays visible here."
        ),
        Ok(_) => format!("Notifications shown again for runtime {runtime}."),
        Err(crate::notify::NotifyError::UnknownRuntime(_)) => {
            return Err(PageError::new(
                StatusCode::NOT_FOUND,
                "No such runtime",
                "That runtime is not one of yours.",
            ));
        }
        Err(e) => return Err(notify_page_error(e)),
    };
    state
        .sessions
        .flash(&mut session, FlashKind::Success, text)
        .await?;
    Ok(Redirect::to("/tokens").into_response())
}

/// Turns all of the user's notifications on or off.
pub async fn all_notifications(
    State(state): State<AppState>,
    jar: CookieJar,
    PageForm(form): PageForm<NotificationsForm>,
) -> Result<Response, PageError> {
    let Some(mut session) = form_session(&state, &jar, &form.csrf).await? else {
        return Ok(to_login("/tokens"));
    };
    let on = flag(&form.value)?;
    state
        .notifier
        .set_enabled(&session.user, on)
        .await
        .map_err(notify_page_error)?;
    let text = if on {
        "Notifications are on."
    } else {
        "Notifications are off: no banner, no badges, no mail. Statuses stay visible."
    };
    state
        .sessions
        .flash(&mut session, FlashKind::Success, text.to_owned())
        .await?;
    Ok(Redirect::to("/tokens").into_response())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn an_offer_names_a_few_runtimes_then_counts_the_rest() {
        let offer = |login: &str, n: usize| {
            ReuseView::new(&crate::tokens::Reusable {
                grant_id: "g1".into(),
                login: login.into(),
                used_by: (1..=n)
                    .map(|i| format!("rt-{i}"))
                    .collect::<Vec<_>>()
                    .into(),
            })
        };
        let one = offer("alice", 1);
        assert_eq!(
            one.label.to_string(),
            "Use my existing authorization as alice (used by rt-1)"
        );
        assert_eq!(one.choice.to_string(), "as alice (used by rt-1)");
        let three = offer("alice", 3);
        assert_eq!(
            three.choice.to_string(),
            "as alice (used by rt-1, rt-2, rt-3)"
        );
        let many = offer("", 10);
        assert_eq!(
            many.label.to_string(),
            "Use my existing authorization (used by rt-1, rt-2, rt-3 and 7 more)"
        );
        assert_eq!(
            many.choice.to_string(),
            "(used by rt-1, rt-2, rt-3 and 7 more)"
        );
        // a provider login is the provider's to choose: escaped
        let odd = offer("<img src=x onerror=alert(1)>&\"'", 1);
        assert_eq!(
            odd.choice.to_string(),
            "as &#60;img src=x onerror=alert(1)&#62;&#38;&#34;&#39; (used by rt-1)"
        );
    }

    /// What is escaped once is written once escaped: neither raw nor twice.
    #[test]
    fn escaped_text_is_written_as_escaped_once() {
        #[derive(Template)]
        #[template(source = "<p title=\"{{ a }}\">{{ a }}|{{ b }}</p>", ext = "html")]
        struct T {
            a: Escaped,
            b: String,
        }
        let html = T {
            a: Escaped::new("<b>\"x\" & 'y'</b>"),
            b: "<b>".into(),
        }
        .render()
        .unwrap();
        let once = "&#60;b&#62;&#34;x&#34; &#38; &#39;y&#39;&#60;/b&#62;";
        assert_eq!(html, format!("<p title=\"{once}\">{once}|&#60;b&#62;</p>"));
    }

    #[test]
    fn dates_read_as_chrono_formats_them() {
        for t in [
            Utc.with_ymd_and_hms(2026, 12, 1, 19, 5, 59).unwrap(),
            Utc.with_ymd_and_hms(999, 1, 9, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2030, 10, 31, 23, 59, 1).unwrap(),
        ] {
            assert_eq!(when(t), t.format("%Y-%m-%d %H:%M UTC").to_string());
        }
    }
}
