//! Extractors whose rejections speak the edge's two languages: the HTML
//! error page (`PageError`) on pages, problem+json (`ApiError`) on the
//! APIs, instead of axum's plain-text bodies. Rejection texts are passed
//! through [`redact`] first: serde quotes the offending value ("invalid
//! type: string \"ghp_…\""), and that value may be a token.

use super::error::{ApiError, PageError};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// A JSON body; rejections are 400 `bad-request` problems.
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        axum::Json::<T>::from_request(req, state)
            .await
            .map(|axum::Json(v)| Self(v))
            .map_err(|e| ApiError::bad_request(format!("request body: {}", redact(&e.body_text()))))
    }
}

/// Path parameters of an API route; rejections are 400 problems.
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(Self(v)),
            Err(e) if e.status().is_server_error() => {
                tracing::error!(error = %redact(&e.body_text()), "route has no such path parameters");
                Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "Internal error",
                    "internal error",
                ))
            }
            Err(e) => Err(ApiError::bad_request(format!(
                "path: {}",
                redact(&e.body_text())
            ))),
        }
    }
}

/// The query string of an API route; rejections are 400 problems.
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Self(v))
            .map_err(|e| ApiError::bad_request(format!("query: {}", redact(&e.body_text()))))
    }
}

fn bad_page(what: &str, detail: &str) -> PageError {
    tracing::debug!(detail = %redact(detail), "page request refused: {what}");
    PageError::new(
        StatusCode::BAD_REQUEST,
        "Bad request",
        format!("The {what} was incomplete or malformed. Reload the page and try again."),
    )
}

/// A form body (repeated keys allowed, for checkbox lists); rejections are
/// the 400 error page.
pub struct PageForm<T>(pub T);

impl<T, S> FromRequest<S> for PageForm<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = PageError;

    async fn from_request(req: Request, state: &S) -> Result<Self, PageError> {
        axum_extra::extract::Form::<T>::from_request(req, state)
            .await
            .map(|axum_extra::extract::Form(v)| Self(v))
            .map_err(|e| bad_page("form", &e.body_text()))
    }
}

/// The query string of a page; rejections are the 400 error page.
pub struct PageQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for PageQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, PageError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Self(v))
            .map_err(|e| bad_page("address", &e.body_text()))
    }
}

/// Path parameters of a page; rejections are the 400 error page.
pub struct PagePath<T>(pub T);

impl<T, S> FromRequestParts<S> for PagePath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, PageError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| Self(v))
            .map_err(|e| bad_page("address", &e.body_text()))
    }
}

/// Replaces the values serde quotes in its messages — `"…"` strings, and
/// the `` `…` `` after `integer`, `floating point`, `char` or `string` —
/// keeping field names, types and positions.
pub fn redact(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find(['"', '`']) {
        let (before, from) = rest.split_at(i);
        out.push_str(before);
        let quote = if from.starts_with('"') { '"' } else { '`' };
        let value_follows = quote == '"'
            || ["integer ", "point ", "char ", "string "]
                .iter()
                .any(|w| out.ends_with(w));
        let Some(end) = from[1..].find(quote) else {
            // unbalanced: drop the rest rather than risk a value
            if value_follows {
                out.push(quote);
                out.push('…');
            } else {
                out.push_str(from);
            }
            return out;
        };
        let quoted = &from[..end + 2];
        if value_follows {
            out.push(quote);
            out.push('…');
            out.push(quote);
        } else {
            out.push_str(quoted);
        }
        rest = &from[end + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn values_are_redacted_field_names_kept() {
        assert_eq!(
            redact(
                "also: invalid type: string \"ghp_secret\", expected a sequence at line 1 column 30"
            ),
            "also: invalid type: string \"…\", expected a sequence at line 1 column 30"
        );
        assert_eq!(
            redact("token: invalid type: integer `123456`, expected a string"),
            "token: invalid type: integer `…`, expected a string"
        );
        assert_eq!(
            redact("unknown field `tokn`, expected one of `token`, `username`"),
            "unknown field `tokn`, expected one of `token`, `username`"
        );
        assert_eq!(redact("missing field `csrf`"), "missing field `csrf`");
        assert_eq!(redact("bad \"unterminated"), "bad \"…");
    }
}
