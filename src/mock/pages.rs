//! The mock's HTML pages (templates under `templates/mock/`, escaped by
//! askama): the Git flavours' consent page, the identity provider's sign-in
//! page and an error page for requests that must not be redirected anywhere.

use super::{MockGitUser, MockIdpUser};
use askama::Template;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// A flavour's wording of its consent page.
pub(crate) struct Wording {
    /// After "Authorize <app>" in the heading.
    pub heading: &'static str,
    /// The request: `lead`, the app's name, then `asks`.
    pub lead: &'static str,
    pub asks: &'static str,
    /// In place of an empty scope list.
    pub no_scopes: &'static str,
    /// Before each login in the user picker.
    pub user_prefix: &'static str,
    pub approve: &'static str,
    /// Before the callback URL, at the bottom.
    pub redirect_note: &'static str,
}

/// The consent page of the Git flavours.
#[derive(Template)]
#[template(path = "mock/authorize.html")]
pub(crate) struct AuthorizePage<'a> {
    pub banner: &'a str,
    pub wording: &'a Wording,
    pub app_name: &'a str,
    pub scopes: &'a [String],
    pub users: &'a [MockGitUser],
    pub redirect_uri: &'a str,
    /// The authorization request, carried through the form.
    pub hidden: Vec<(&'static str, String)>,
}

#[derive(Template)]
#[template(path = "mock/idp_signin.html")]
pub(crate) struct IdpSignIn<'a> {
    pub client_id: &'a str,
    pub users: &'a [MockIdpUser],
    pub redirect_uri: &'a str,
    pub hidden: Vec<(&'static str, String)>,
}

#[derive(Template)]
#[template(path = "mock/error.html")]
struct ErrorPage<'a> {
    banner: &'a str,
    title: &'a str,
    message: &'a str,
}

/// Renders a page with the headers any page of ours should carry.
pub(crate) fn html(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(body) => (
            status,
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                ),
                (
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(
                        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
                    ),
                ),
                (
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
            body,
        )
            .into_response(),
        Err(err) => {
            tracing::error!(%err, "mock page failed to render");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// An error shown to the user instead of a redirect, for requests whose
/// redirect target cannot be trusted.
pub(crate) fn error(banner: &str, status: StatusCode, title: &str, message: &str) -> Response {
    html(
        status,
        &ErrorPage {
            banner,
            title,
            message,
        },
    )
}
