//! Tracing context for every request: a request id (the proxy's
//! `X-Request-Id` when it is a plain token, else a fresh one), put in the
//! request's span so that every log line of the request carries it, and
//! sent back in the response; and the trace id of a W3C `traceparent`, when
//! one comes, so that logs join the caller's distributed trace. The same
//! layer times the request for the metrics.

use crate::metrics::Metrics;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The request's id, in its extensions for the span.
#[derive(Clone, Debug)]
pub struct RequestId(pub HeaderValue);

/// An id worth keeping: 1 to 64 of `A-Z a-z 0-9 . _ -` (nothing that could
/// forge a log line or carry a secret's worth of text).
fn acceptable(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

fn fresh() -> HeaderValue {
    let id = format!("{:032x}", rand::random::<u128>());
    HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("-"))
}

/// The trace id of a well-formed `traceparent` (version 00:
/// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, not all zero).
pub fn trace_id(headers: &axum::http::HeaderMap) -> Option<&str> {
    let v = headers.get(TRACEPARENT)?.to_str().ok()?;
    let mut parts = v.split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    };
    (version == "00"
        && parts.next().is_none()
        && hex(trace, 32)
        && hex(parent, 16)
        && hex(flags, 2)
        && trace.bytes().any(|c| c != b'0')
        && parent.bytes().any(|c| c != b'0'))
    .then_some(trace)
}

/// Middleware (outside the request span, on the router where the matched
/// route is known): fixes the request id and echoes it, and counts and
/// times the request for the metrics; one layer for both, since this is
/// every request's path.
pub async fn context(
    State(metrics): State<Arc<Metrics>>,
    mut req: Request,
    next: Next,
) -> Response {
    let timing = metrics.begin(&req);
    let id = match req.headers().get(&REQUEST_ID) {
        Some(v) if acceptable(v) => v.clone(),
        _ => fresh(),
    };
    req.headers_mut().insert(REQUEST_ID, id.clone());
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut resp = next.run(req).await;
    metrics.end(timing, resp.status().as_u16());
    resp.headers_mut().insert(REQUEST_ID, id);
    resp
}

/// The request's span: method, path (never the query: it carries codes and
/// states), request id and, when the caller sent one, its trace id.
pub fn span<B>(req: &axum::http::Request<B>) -> tracing::Span {
    let id = req
        .extensions()
        .get::<RequestId>()
        .and_then(|r| r.0.to_str().ok())
        .unwrap_or("-");
    let span = tracing::info_span!(
        "request",
        method = %req.method(),
        path = %req.uri().path(),
        request_id = %id,
        trace_id = tracing::field::Empty,
    );
    if let Some(trace) = trace_id(req.headers()) {
        span.record("trace_id", trace);
    }
    span
}

/// Marks a response whose `finished processing request` line is logged
/// at `debug`: a token served to a runtime (200), which its audit line
/// (`user_token.read`, `runtime_token.read`) already records with the
/// runtime, the user and the token's fingerprint, and the metrics count
/// with its latency. Two lines per fetch were a tenth of its CPU; every
/// other response, and every fetch that is refused or fails, keeps its
/// line at `info`.
#[derive(Clone, Copy, Debug)]
pub struct AuditedRead;

/// The response line (`tower_http`'s own, at `info` or, for an
/// [`AuditedRead`] that succeeded, at `debug`).
#[derive(Clone, Copy, Debug)]
pub struct Finished;

impl<B> tower_http::trace::OnResponse<B> for Finished {
    fn on_response(
        self,
        response: &axum::http::Response<B>,
        latency: std::time::Duration,
        span: &tracing::Span,
    ) {
        let quiet =
            response.status().is_success() && response.extensions().get::<AuditedRead>().is_some();
        let level = if quiet {
            tracing::Level::DEBUG
        } else {
            tracing::Level::INFO
        };
        tower_http::trace::DefaultOnResponse::new()
            .level(level)
            .on_response(response, latency, span);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_ids_are_kept() {
        assert!(acceptable(&HeaderValue::from_static("req-42.a_b")));
        assert!(!acceptable(&HeaderValue::from_static("")));
        assert!(!acceptable(&HeaderValue::from_static("a b")));
        assert!(!acceptable(&HeaderValue::from_static("x\"} forged=1")));
        assert!(!acceptable(
            &HeaderValue::from_str(&"a".repeat(65)).unwrap_or(fresh())
        ));
        let f = fresh();
        assert!(acceptable(&f) && f.len() == 32);
        assert_ne!(fresh(), fresh());
    }

    #[test]
    fn trace_ids_come_from_well_formed_traceparents_only() {
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            TRACEPARENT,
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        assert_eq!(trace_id(&h), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "garbage",
        ] {
            h.insert(TRACEPARENT, HeaderValue::from_static(bad));
            assert_eq!(trace_id(&h), None, "{bad}");
        }
    }

    /// Which response lines reach a log at `info`: a token served to a
    /// runtime (200, audited where it was served) does not; its refusals,
    /// failures and every other response do.
    #[test]
    fn served_tokens_log_their_response_line_at_debug_only() {
        use std::sync::{Arc, Mutex};
        use tower_http::trace::OnResponse;
        #[derive(Clone, Default)]
        struct Capture(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Capture {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines_at = |level: &str, status: u16, audited: bool| {
            let out = Capture::default();
            let w = out.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_env_filter(level)
                .with_writer(move || w.clone())
                .finish();
            tracing::subscriber::with_default(subscriber, || {
                let mut r = axum::http::Response::new(());
                *r.status_mut() = axum::http::StatusCode::from_u16(status).unwrap_or_default();
                if audited {
                    r.extensions_mut().insert(AuditedRead);
                }
                Finished.on_response(
                    &r,
                    std::time::Duration::from_millis(1),
                    &tracing::Span::none(),
                );
            });
            let text = String::from_utf8_lossy(&out.0.lock().unwrap_or_else(|p| p.into_inner()))
                .into_owned();
            text.matches("finished processing request").count()
        };
        assert_eq!(lines_at("info", 200, true), 0);
        assert_eq!(lines_at("debug", 200, true), 1);
        assert_eq!(lines_at("info", 404, true), 1);
        assert_eq!(lines_at("info", 503, true), 1);
        assert_eq!(lines_at("info", 200, false), 1);
        assert_eq!(lines_at("info", 302, false), 1);
    }
}
