//! What every flavour's API shares, around its handlers: a middleware
//! ([`layer`]) that counts the token each request presents, keeps the
//! in-flight gauge, applies the `api_delay_ms` switch and then the
//! host-wide `api_rate_limit` (a delayed request takes its place in the
//! window when its delay is over) with each flavour's rate-limit headers:
//!
//! - GitHub: `X-RateLimit-Limit`, `-Remaining`, `-Used`, `-Reset` (unix
//!   seconds, rounded up), `X-RateLimit-Resource: core`; over the limit 403
//!   "API rate limit exceeded." (or 429 with `Retry-After`, by
//!   `rate_limit_status`).
//! - GitLab: `RateLimit-Name`, `RateLimit-Limit`, `RateLimit-Observed`,
//!   `RateLimit-Remaining`, `RateLimit-Reset` (unix seconds),
//!   `RateLimit-ResetTime` (HTTP date); over the limit 429 "Retry later"
//!   with `Retry-After`.
//! - Bitbucket Cloud: what Atlassian documents, `X-RateLimit-Limit`,
//!   `X-RateLimit-Resource: api`, `X-RateLimit-NearLimit` (`true` below
//!   20 % remaining); over the limit 429 with `Retry-After`.
//! - Bitbucket Data Center: Atlassian's Data Center rate-limiting headers,
//!   `X-RateLimit-Limit`, `X-RateLimit-Remaining`,
//!   `X-RateLimit-Interval-Seconds`, `X-RateLimit-FillRate` (the window's
//!   allowance) and `Retry-After` (0 while requests remain); over the limit
//!   429.
//! - Every flavour, a mock extension: `X-RateLimit-Reset-Ms`, the epoch
//!   milliseconds at which the window ends, for sub-second windows.

use super::control::RateLimit;
use super::oauth::{header_pair, presented_token};
use super::pats::Flavour;
use super::{Shared, bitbucket_cloud, bitbucket_dc, gitea, github, gitlab, lock};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use chrono::{DateTime, Utc};
use std::sync::{Arc, Mutex};

/// `router`'s routes as API routes of `flavour`. Only the matched routes
/// are wrapped (`route_layer`), so unknown paths are not API requests.
pub(crate) fn layer(
    router: Router<Arc<Shared>>,
    s: &Arc<Shared>,
    flavour: Flavour,
) -> Router<Arc<Shared>> {
    router.route_layer(axum::middleware::from_fn_with_state(
        (s.clone(), flavour),
        api,
    ))
}

async fn api(
    State((s, flavour)): State<(Arc<Shared>, Flavour)>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(token) = presented_token(flavour, req.headers()) {
        s.counters.api_call(&token);
    }
    let _in_flight = s.counters.enter_api();
    s.switches.api_delay_wait().await;
    let switches = s.switches.get();
    let Some(limit) = switches.api_rate_limit else {
        return next.run(req).await;
    };
    let now = s.now();
    let window = s.rate_window.take(limit, now);
    let mut response = if window.allowed {
        next.run(req).await
    } else {
        s.counters.rate_limited();
        over_limit(flavour, switches.rate_limit_status)
    };
    // A handler's own rate limit (`user_api_status` 403 or 429) keeps the
    // headers it chose.
    let handler_limited = window.allowed
        && (response.status() == StatusCode::TOO_MANY_REQUESTS
            || (response.status() == StatusCode::FORBIDDEN
                && response
                    .headers()
                    .get("x-ratelimit-remaining")
                    .is_some_and(|v| v.as_bytes() == b"0")));
    if !handler_limited {
        // GitHub's primary limit (403) says when it resets, not how long
        // to wait; its 429 and the other flavours' do.
        let refused = match (window.allowed, flavour) {
            (true, _) => Refused::No,
            (false, Flavour::Github) if switches.rate_limit_status != Some(429) => {
                Refused::WithoutRetryAfter
            }
            (false, _) => Refused::WithRetryAfter,
        };
        for (name, value) in headers(flavour, &window, now, refused) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// The fixed window of `api_rate_limit`, shared by every flavour.
#[derive(Default)]
pub(crate) struct RateWindow(Mutex<Option<Window>>);

struct Window {
    limit: RateLimit,
    ends_ms: i64,
    used: u64,
}

/// One request's place in the window.
struct Taken {
    allowed: bool,
    limit: u64,
    /// Requests allowed in this window so far, this one included.
    used: u64,
    remaining: u64,
    /// Epoch milliseconds at which the window ends.
    reset_ms: i64,
    window_ms: u64,
}

impl RateWindow {
    fn take(&self, limit: RateLimit, now: DateTime<Utc>) -> Taken {
        let now_ms = now.timestamp_millis();
        let window_ms = limit.window_ms.clamp(1, super::control::MAX_WINDOW_MS);
        let mut guard = lock(&self.0);
        let window = match guard.take() {
            Some(w) if w.limit == limit && now_ms < w.ends_ms => w,
            _ => Window {
                limit,
                ends_ms: now_ms.saturating_add(i64::try_from(window_ms).unwrap_or(i64::MAX)),
                used: 0,
            },
        };
        let window = guard.insert(window);
        let allowed = window.used < limit.limit;
        if allowed {
            window.used += 1;
        }
        Taken {
            allowed,
            limit: limit.limit,
            used: window.used,
            remaining: limit.limit - window.used,
            reset_ms: window.ends_ms,
            window_ms,
        }
    }

    pub fn clear(&self) {
        *lock(&self.0) = None;
    }
}

fn ceil_div(n: i64, d: i64) -> i64 {
    n.div_euclid(d) + i64::from(n.rem_euclid(d) != 0)
}

/// Seconds until the window ends, rounded up, at least 1.
fn retry_after(t: &Taken, now: DateTime<Utc>) -> i64 {
    ceil_div(t.reset_ms - now.timestamp_millis(), 1000).max(1)
}

fn over_limit(flavour: Flavour, github_status: Option<u16>) -> Response {
    match flavour {
        Flavour::Github => github::rate_limit_exceeded(match github_status {
            Some(429) => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::FORBIDDEN,
        }),
        Flavour::Gitlab => gitlab::throttled(),
        Flavour::BitbucketCloud => bitbucket_cloud::rate_limited(),
        Flavour::BitbucketDataCenter => bitbucket_dc::rate_limited(),
        Flavour::Gitea => gitea::rate_limited(),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Refused {
    No,
    WithoutRetryAfter,
    WithRetryAfter,
}

/// The rate-limit headers of `flavour` for a request in window `t`.
fn headers(
    flavour: Flavour,
    t: &Taken,
    now: DateTime<Utc>,
    refused: Refused,
) -> Vec<(HeaderName, HeaderValue)> {
    let limited = refused != Refused::No;
    let reset_secs = ceil_div(t.reset_ms, 1000).to_string();
    // Data Center sends it always: 0 while requests remain
    let wait = match refused {
        Refused::No if flavour == Flavour::BitbucketDataCenter && t.remaining > 0 => {
            Some("0".to_owned())
        }
        Refused::No if flavour == Flavour::BitbucketDataCenter => {
            Some(retry_after(t, now).to_string())
        }
        Refused::WithRetryAfter => Some(retry_after(t, now).to_string()),
        Refused::No | Refused::WithoutRetryAfter => None,
    };
    let mut out = vec![
        header_pair("x-ratelimit-reset-ms", &t.reset_ms.to_string()),
        wait.and_then(|w| header_pair("retry-after", &w)),
    ];
    match flavour {
        Flavour::Github => out.extend([
            header_pair("x-ratelimit-limit", &t.limit.to_string()),
            header_pair("x-ratelimit-remaining", &t.remaining.to_string()),
            header_pair("x-ratelimit-used", &t.used.to_string()),
            header_pair("x-ratelimit-reset", &reset_secs),
            header_pair("x-ratelimit-resource", "core"),
        ]),
        Flavour::Gitlab => {
            let reset_time = DateTime::from_timestamp_millis(t.reset_ms)
                .map(|at| at.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
                .unwrap_or_default();
            let observed = t.used + u64::from(limited);
            out.extend([
                header_pair("ratelimit-name", "throttle_authenticated_api"),
                header_pair("ratelimit-limit", &t.limit.to_string()),
                header_pair("ratelimit-observed", &observed.to_string()),
                header_pair("ratelimit-remaining", &t.remaining.to_string()),
                header_pair("ratelimit-reset", &reset_secs),
                header_pair("ratelimit-resettime", &reset_time),
            ]);
        }
        Flavour::BitbucketCloud => {
            let near = t.remaining.saturating_mul(5) < t.limit;
            out.extend([
                header_pair("x-ratelimit-limit", &t.limit.to_string()),
                header_pair("x-ratelimit-resource", "api"),
                header_pair("x-ratelimit-nearlimit", if near { "true" } else { "false" }),
            ]);
        }
        Flavour::BitbucketDataCenter => {
            let interval = t.window_ms.div_ceil(1000).to_string();
            out.extend([
                header_pair("x-ratelimit-limit", &t.limit.to_string()),
                header_pair("x-ratelimit-remaining", &t.remaining.to_string()),
                header_pair("x-ratelimit-interval-seconds", &interval),
                header_pair("x-ratelimit-fillrate", &t.limit.to_string()),
            ]);
        }
        // Gitea has no API rate limit of its own, hence no headers: only
        // the mock's and `Retry-After`
        Flavour::Gitea => {}
    }
    out.into_iter().flatten().collect()
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;

    #[test]
    fn ceil_div_rounds_up() {
        assert_eq!(ceil_div(1500, 1000), 2);
        assert_eq!(ceil_div(2000, 1000), 2);
        assert_eq!(ceil_div(1, 1000), 1);
        assert_eq!(ceil_div(0, 1000), 0);
    }

    #[test]
    fn windows_are_fixed() {
        let w = RateWindow::default();
        let limit = RateLimit {
            limit: 2,
            window_ms: 1000,
        };
        let t0 = Utc::now();
        let a = w.take(limit, t0);
        let b = w.take(limit, t0 + chrono::Duration::milliseconds(999));
        let c = w.take(limit, t0 + chrono::Duration::milliseconds(999));
        assert!(a.allowed && b.allowed && !c.allowed);
        assert_eq!((b.used, b.remaining, c.remaining), (2, 0, 0));
        assert_eq!(a.reset_ms, c.reset_ms);
        let d = w.take(limit, t0 + chrono::Duration::milliseconds(1000));
        assert!(d.allowed);
        assert_eq!((d.used, d.reset_ms), (1, a.reset_ms + 1000));
        // another limit starts another window
        let e = w.take(
            RateLimit { limit: 5, ..limit },
            t0 + chrono::Duration::milliseconds(1001),
        );
        assert_eq!((e.used, e.remaining), (1, 4));
    }
}
