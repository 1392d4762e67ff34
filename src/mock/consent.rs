//! The authorization step every Git flavour shares: checking the
//! authorization request (client, exact redirect URI, state, PKCE S256,
//! scopes), the consent page with `#approve` and `#deny`, and its decision,
//! which puts a code in the flavour's book. A [`Consent`] holds what differs
//! between the flavours: wording, status codes and where errors go.

use super::book::{CodeGrant, TokenBook};
use super::control::Counters;
use super::oauth::{found, redirect_url, valid_pkce_string};
use super::pages::{self, AuthorizePage, Wording};
use super::{MockOAuthApp, Shared};
use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{MethodRouter, get};
use serde::Deserialize;
use std::sync::Arc;

/// How a flavour refuses an authorization request once its redirect URI
/// can be trusted.
#[derive(Clone, Copy)]
pub(crate) enum Refusal {
    /// An error page (HTTP 400): title, message.
    Page(&'static str, &'static str),
    /// Back to the client, as RFC 6749 §4.1.2.1 says: error, description.
    Back(&'static str, &'static str),
}

/// What one flavour's authorization step looks like on the wire.
pub(crate) struct Consent {
    pub banner: &'static str,
    pub wording: Wording,
    /// The realm its codes go to.
    pub book: fn(&Shared) -> &TokenBook,
    /// The page for an unknown `client_id`: status, title, message.
    pub unknown_client: (StatusCode, &'static str, &'static str),
    /// GitLab insists on a `redirect_uri`; the others use the callback.
    pub redirect_required: bool,
    /// The page (HTTP 400) for a `redirect_uri` other than the callback:
    /// title, message.
    pub bad_redirect: (&'static str, &'static str),
    /// The page (HTTP 400) for a callback that is not an absolute URL.
    pub bad_callback: (&'static str, &'static str),
    /// The refusal of a `response_type` other than `code`; `None`: the
    /// flavour does not look at it (GitHub).
    pub response_type: Option<Refusal>,
    /// The scopes granted for the request's `scope`, or the description of
    /// an `invalid_scope` error.
    pub scopes: fn(Option<&str>) -> Result<Vec<String>, &'static str>,
    /// Whether scopes are checked before PKCE (GitLab) or after.
    pub scopes_first: bool,
    /// The refusals of an S256 challenge that is no S256 challenge, and of
    /// any other method (or a method without a challenge, or the reverse).
    pub bad_challenge: Refusal,
    pub bad_method: Refusal,
    /// Bad decisions: approval without a login, neither approve nor deny,
    /// a login no user has.
    pub no_login: &'static str,
    pub bad_decision: &'static str,
    pub no_user: &'static str,
    /// What follows `error=access_denied` when the user denies.
    pub denied: &'static [(&'static str, &'static str)],
}

/// `scopes` if each is one of `known`, else `Err(description)`.
pub(crate) fn known_scopes(
    scopes: Vec<String>,
    known: &[&str],
    description: &'static str,
) -> Result<Vec<String>, &'static str> {
    if scopes.iter().all(|s| known.contains(&s.as_str())) {
        Ok(scopes)
    } else {
        Err(description)
    }
}

/// The authorize route: the consent page, and the decision posted from it.
pub(crate) fn route(c: &'static Consent) -> MethodRouter<Arc<Shared>> {
    get(
        move |State(s): State<Arc<Shared>>, Query(p): Query<AuthorizeParams>| async move {
            page(&s, c, &p)
        },
    )
    .post(
        move |State(s): State<Arc<Shared>>, Form(p): Form<AuthorizeParams>| async move {
            decision(&s, c, &p)
        },
    )
}

#[derive(Deserialize)]
pub(crate) struct AuthorizeParams {
    client_id: Option<String>,
    redirect_uri: Option<String>,
    response_type: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    /// The decision form only: who approves, and what they decided.
    login: Option<String>,
    decision: Option<String>,
}

/// An authorization request that passed every check.
struct AuthRequest {
    app: MockOAuthApp,
    /// Where to send the user back: the registered callback.
    redirect_to: String,
    requested_redirect: Option<String>,
    scopes: Vec<String>,
    code_challenge: Option<String>,
}

/// Checks an authorization request. Problems with the client or its
/// redirect URI get an error page (nothing can be trusted to redirect to);
/// the others are refused as the flavour does.
fn validate(s: &Shared, c: &Consent, p: &AuthorizeParams) -> Result<AuthRequest, Response> {
    let Some(app) = p.client_id.as_deref().and_then(|id| s.oauth_app(id)) else {
        let (status, title, message) = c.unknown_client;
        return Err(pages::error(c.banner, status, title, message));
    };
    // GitHub also allows sub-paths of the callback; the mock is stricter
    // so that a broker sending a wrong callback finds out.
    let redirect_to = match p.redirect_uri.as_deref() {
        None if !c.redirect_required => app.callback_url.clone(),
        Some(r) if r == app.callback_url => r.to_owned(),
        _ => return Err(bad_request(c, c.bad_redirect)),
    };
    let refuse = |refusal| match refusal {
        Refusal::Page(title, message) => bad_request(c, (title, message)),
        Refusal::Back(error, description) => redirect_back(
            c,
            &redirect_to,
            p.state.as_deref(),
            &[("error", error), ("error_description", description)],
        ),
    };
    if let Some(refusal) = c.response_type
        && p.response_type.as_deref() != Some("code")
    {
        return Err(refuse(refusal));
    }
    let scopes = (c.scopes)(p.scope.as_deref())
        .map_err(|description| refuse(Refusal::Back("invalid_scope", description)));
    let scopes = match scopes {
        Err(refused) if c.scopes_first => return Err(refused),
        scopes => scopes,
    };
    let code_challenge = match (
        p.code_challenge.as_deref(),
        p.code_challenge_method.as_deref(),
    ) {
        (None, None) => None,
        (Some(ch), Some("S256")) if ch.len() == 43 && valid_pkce_string(ch) => Some(ch.to_owned()),
        (Some(_), Some("S256")) => return Err(refuse(c.bad_challenge)),
        _ => return Err(refuse(c.bad_method)),
    };
    Ok(AuthRequest {
        scopes: scopes?,
        redirect_to,
        requested_redirect: p.redirect_uri.clone(),
        code_challenge,
        app,
    })
}

fn page(s: &Shared, c: &Consent, p: &AuthorizeParams) -> Response {
    Counters::bump(&s.counters.authorize_requests);
    let req = match validate(s, c, p) {
        Ok(req) => req,
        Err(response) => return response,
    };
    let switches = s.switches.get();
    if switches.deny {
        return denied(c, &req, p);
    }
    if let Some(login) = switches.auto_approve {
        return approve(s, c, req, p, &login);
    }
    let hidden = [
        ("client_id", Some(req.app.client_id.clone())),
        ("response_type", c.response_type.map(|_| "code".to_owned())),
        ("redirect_uri", req.requested_redirect.clone()),
        ("scope", p.scope.clone()),
        ("state", p.state.clone()),
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
        &AuthorizePage {
            banner: c.banner,
            wording: &c.wording,
            app_name: &req.app.name,
            scopes: &req.scopes,
            users: &s.github_users,
            redirect_uri: &req.redirect_to,
            hidden,
        },
    )
}

fn decision(s: &Shared, c: &Consent, p: &AuthorizeParams) -> Response {
    let req = match validate(s, c, p) {
        Ok(req) => req,
        Err(response) => return response,
    };
    match (p.decision.as_deref(), p.login.as_deref()) {
        (Some("approve"), Some(login)) => approve(s, c, req, p, login),
        (Some("approve"), None) => bad_request(c, ("Bad request", c.no_login)),
        (Some("deny"), _) => denied(c, &req, p),
        _ => bad_request(c, ("Bad request", c.bad_decision)),
    }
}

fn approve(
    s: &Shared,
    c: &Consent,
    req: AuthRequest,
    p: &AuthorizeParams,
    login: &str,
) -> Response {
    if s.github_user(login).is_none() {
        return bad_request(c, ("Bad request", c.no_user));
    }
    let code = (c.book)(s).put_code(CodeGrant {
        client_id: req.app.client_id.clone(),
        redirect_uri: req.requested_redirect,
        subject: login.to_owned(),
        scopes: req.scopes,
        code_challenge: req.code_challenge,
        nonce: None,
        issued_at: s.now(),
    });
    redirect_back(c, &req.redirect_to, p.state.as_deref(), &[("code", &code)])
}

fn denied(c: &Consent, req: &AuthRequest, p: &AuthorizeParams) -> Response {
    let mut params = vec![("error", "access_denied")];
    params.extend_from_slice(c.denied);
    redirect_back(c, &req.redirect_to, p.state.as_deref(), &params)
}

/// A redirect to `redirect_to` with `params`, then `state` if there is one.
fn redirect_back(
    c: &Consent,
    redirect_to: &str,
    state: Option<&str>,
    params: &[(&str, &str)],
) -> Response {
    let mut params = params.to_vec();
    params.extend(state.map(|st| ("state", st)));
    match redirect_url(redirect_to, &params) {
        Some(url) => found(&url),
        None => bad_request(c, c.bad_callback),
    }
}

fn bad_request(c: &Consent, (title, message): (&str, &str)) -> Response {
    pages::error(c.banner, StatusCode::BAD_REQUEST, title, message)
}
