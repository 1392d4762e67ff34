//! Errors at the HTTP edge: problem+json (RFC 9457) for the APIs, an HTML
//! page for the browser. 5xx bodies are generic; the cause is logged once,
//! inside the request's span.

use crate::auth::login::LoginError;
use crate::oauth::FlowError;
use crate::registry::RegistryError;
use crate::store::StoreError;
use crate::tokens::TokenError;
use askama::Template;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Serialize;

/// A problem (RFC 9457), sent as `application/problem+json`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Problem)]
pub struct ApiError {
    #[serde(skip)]
    pub status: StatusCode,
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    /// RFC 9457 `status`.
    #[serde(rename = "status")]
    pub status_code: u16,
    pub detail: String,
    /// Send `Retry-After` with this many seconds (temporary failures).
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &str, title: &str, detail: impl Into<String>) -> Self {
        Self {
            status,
            kind: format!("urn:gitbroker:problem:{kind}"),
            title: title.to_owned(),
            status_code: status.as_u16(),
            detail: detail.into(),
            retry_after: (status == StatusCode::SERVICE_UNAVAILABLE).then_some(5),
        }
    }

    /// Sets `Retry-After` (whole seconds, at least 1).
    pub fn retry_after(mut self, after: std::time::Duration) -> Self {
        self.retry_after = Some(after.as_secs_f64().ceil().max(1.0) as u64);
        self
    }

    /// Sends `Retry-After: secs`.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub fn unauthorized(detail: &str) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            detail,
        )
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "Bad request",
            detail,
        )
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
    }

    fn unavailable(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "service unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
            "a backing service is unavailable; try again shortly",
        )
    }

    fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "internal error",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(&self)).into_response();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => Self::unavailable(&e),
            _ => Self::internal(&e),
        }
    }
}

impl From<crate::notify::NotifyError> for ApiError {
    fn from(e: crate::notify::NotifyError) -> Self {
        use crate::notify::NotifyError;
        match e {
            NotifyError::Store(s) => s.into(),
            NotifyError::UnknownRuntime(r) => {
                Self::not_found(format!("no runtime `{r}` among yours"))
            }
            NotifyError::Tokens(_) => Self::unavailable(&e),
            NotifyError::Crypto(_) => Self::internal(&e),
        }
    }
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Store(s) => s.into(),
            TokenError::Crypto(_) => Self::internal(&e),
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::NotFound(what) => Self::not_found(format!("{what} does not exist")),
            RegistryError::AlreadyExists(what) => Self::new(
                StatusCode::CONFLICT,
                "conflict",
                "Conflict",
                format!("{what} already exists"),
            ),
            RegistryError::InUse(m) => Self::new(StatusCode::CONFLICT, "conflict", "Conflict", m),
            RegistryError::Invalid { key, message } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                "Invalid input",
                format!("{key}: {message}"),
            ),
            RegistryError::Store(s) => s.into(),
            RegistryError::Crypto(_) => Self::internal(&e),
        }
    }
}

/// An error shown to a person in the browser.
#[derive(Debug)]
pub struct PageError {
    pub status: StatusCode,
    pub title: String,
    pub message: String,
    /// `Retry-After` in seconds (rate limits); 503 sends 5 without it.
    pub retry_after_secs: Option<u64>,
}

#[derive(Template)]
#[template(path = "message.html")]
pub struct MessagePage<'a> {
    pub title: &'a str,
    pub message: &'a str,
    pub is_error: bool,
    pub link: Option<(&'a str, &'a str)>,
}

impl PageError {
    pub fn new(status: StatusCode, title: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            title: title.to_owned(),
            message: message.into(),
            retry_after_secs: None,
        }
    }

    /// Sends `Retry-After: secs`.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    fn unavailable(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "service unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Temporarily unavailable",
            "gitbroker cannot reach a service it depends on. Nothing was changed; try again in a moment.",
        )
    }

    fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "An internal error occurred. Nothing was changed.",
        )
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let page = MessagePage {
            title: &self.title,
            message: &self.message,
            is_error: true,
            link: Some(("/tokens", "Back to Git Personal Access Tokens")),
        };
        let body = page.render().unwrap_or_else(|_| "error".into());
        let mut resp = (self.status, Html(body)).into_response();
        let retry_after = match self.retry_after_secs {
            Some(secs) => Some(secs),
            None if self.status == StatusCode::SERVICE_UNAVAILABLE => Some(5),
            None => None,
        };
        if let Some(secs) = retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => Self::unavailable(&e),
            _ => Self::internal(&e),
        }
    }
}

impl From<TokenError> for PageError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Store(s) => s.into(),
            TokenError::Crypto(_) => Self::internal(&e),
        }
    }
}

impl From<RegistryError> for PageError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Store(s) => s.into(),
            RegistryError::NotFound(w) => Self::new(
                StatusCode::NOT_FOUND,
                "Not found",
                format!("{w} does not exist"),
            ),
            other => Self::internal(&other),
        }
    }
}

impl From<FlowError> for PageError {
    fn from(e: FlowError) -> Self {
        let msg = e.to_string();
        match e {
            FlowError::MissingState
            | FlowError::UnknownState
            | FlowError::WrongApp
            | FlowError::WrongIssuer => {
                Self::new(StatusCode::BAD_REQUEST, "Authorization failed", msg)
            }
            FlowError::Forbidden => Self::new(StatusCode::FORBIDDEN, "Authorization refused", msg),
            FlowError::RuntimeNotFound => Self::new(
                StatusCode::NOT_FOUND,
                "Runtime not found",
                "That runtime does not exist or is not in one of your accounts.",
            ),
            FlowError::NoOAuthApp(_) => Self::new(StatusCode::BAD_REQUEST, "No OAuth app", msg),
            FlowError::Outcome { .. } => {
                Self::new(StatusCode::BAD_REQUEST, "Authorization failed", msg)
            }
            FlowError::Store(s) => s.into(),
            FlowError::Registry(r) => r.into(),
            FlowError::Token(t) => t.into(),
            FlowError::AppConfig(_) => Self::internal(&e),
        }
    }
}

impl From<LoginError> for PageError {
    fn from(e: LoginError) -> Self {
        let msg = e.to_string();
        match e {
            LoginError::UnknownState => Self::new(StatusCode::BAD_REQUEST, "Sign-in failed", msg),
            LoginError::Forbidden => Self::new(StatusCode::FORBIDDEN, "Sign-in refused", msg),
            LoginError::Denied(_) => Self::new(StatusCode::FORBIDDEN, "Sign-in refused", msg),
            LoginError::Oidc(crate::auth::oidc::OidcError::Unavailable(_)) => Self::unavailable(&e),
            LoginError::Oidc(crate::auth::oidc::OidcError::Rejected(_)) => {
                tracing::warn!(error = %e, "sign-in rejected");
                Self::new(
                    StatusCode::FORBIDDEN,
                    "Sign-in refused",
                    "The identity provider's answer did not pass verification; sign in again.",
                )
            }
            LoginError::Oidc(_) | LoginError::Seal(_) => Self::internal(&e),
            LoginError::Store(s) => s.into(),
        }
    }
}
