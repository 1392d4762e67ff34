//! The one HTTP client every provider call goes through: no redirects
//! (SSRF), connect and total timeouts, and a pacer per provider host that
//! honours what the provider says about its rate limits.
//!
//! - A hard pause follows a refusal: 429, or 403 with `X-RateLimit-Remaining:
//!   0` or `Retry-After`. It lasts until `Retry-After`, the reset time, or a
//!   minute when the provider names neither. Every call to that host waits
//!   out a short pause; one longer than [`INTERACTIVE_WAIT`] fails at once
//!   with "rate limited" rather than hold a person's request.
//! - A soft pause follows a response that reports its remaining budget at or
//!   under the reserve: background work (token checks) waits until the reset
//!   time, at most a minute; people's requests go ahead, since such budgets
//!   are often one user's.
//! - Background work also takes one of a bounded number of permits per host.
//!
//! Pauses are per process: each replica paces what it sends itself.

use super::{ProviderError, ProviderKind};
use crate::metrics::Metrics;
use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder, Response};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use url::Url;

/// The longest a person's request waits out a rate-limit pause.
pub const INTERACTIVE_WAIT: Duration = Duration::from_secs(2);
/// A refusal that names no retry time pauses the host this long.
const DEFAULT_PAUSE: Duration = Duration::from_secs(60);
/// Pauses are capped: a provider asking for more is asked again after this.
const MAX_PAUSE: Duration = Duration::from_secs(3600);
/// A soft pause lasts at most this long. A nearly used budget may be one
/// token's own (GitHub and GitLab count per user): waiting a whole reset
/// window for it would stall every other token's checks, while a host-wide
/// budget that is still low simply pauses again.
const MAX_SOFT_PAUSE: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct ProviderClient {
    inner: reqwest::Client,
    pacer: Arc<Pacer>,
    metrics: Arc<Metrics>,
    /// The provider kind this handle's calls are counted under.
    provider: &'static str,
}

impl std::fmt::Debug for ProviderClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderClient").finish_non_exhaustive()
    }
}

impl ProviderClient {
    pub fn new(connect_timeout: Duration, timeout: Duration) -> Result<Self, reqwest::Error> {
        let inner = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(connect_timeout)
            .timeout(timeout)
            .user_agent(concat!("gitbroker/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            inner,
            pacer: Arc::new(Pacer::new(4, 0)),
            metrics: Arc::new(Metrics::new()),
            provider: "unknown",
        })
    }

    /// Records provider calls in `metrics` (a private set otherwise).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The same client, its calls counted under provider `kind`.
    pub fn for_provider(&self, kind: ProviderKind) -> Self {
        Self {
            provider: kind.as_str(),
            ..self.clone()
        }
    }

    /// Sets the background permits per host and the soft-pause reserve.
    pub fn with_pacing(mut self, background_per_host: usize, reserve: u64) -> Self {
        self.pacer = Arc::new(Pacer::new(background_per_host, reserve));
        self
    }

    pub fn request(&self, method: Method, url: Url) -> RequestBuilder {
        self.inner.request(method, url)
    }

    pub fn get(&self, url: Url) -> RequestBuilder {
        self.inner.get(url)
    }

    pub fn post(&self, url: Url) -> RequestBuilder {
        self.inner.post(url)
    }

    pub fn delete(&self, url: Url) -> RequestBuilder {
        self.inner.delete(url)
    }

    /// The plain client, for callers outside the providers (OpenID Connect
    /// sign-in) that speak to services with no provider rate limits.
    pub fn reqwest(&self) -> &reqwest::Client {
        &self.inner
    }

    pub fn pacer(&self) -> &Pacer {
        &self.pacer
    }

    /// Sends a request built from this client: waits out a short pause of
    /// its host, refuses during a long one, and learns from the answer.
    pub async fn send(&self, request: RequestBuilder) -> Result<Response, ProviderError> {
        let request = request
            .build()
            .map_err(|_| ProviderError::Protocol("could not build the request".into()))?;
        self.execute(request).await
    }

    /// Like [`Self::send`], for an already built request.
    pub async fn execute(&self, request: reqwest::Request) -> Result<Response, ProviderError> {
        let host = host_key(request.url());
        if let Err(e) = self.pacer.wait_hard(&host, INTERACTIVE_WAIT).await {
            self.metrics.provider_error(self.provider, "rate_limited");
            return Err(e);
        }
        let started = Instant::now();
        let sent = self.inner.execute(request).await;
        self.metrics.provider_call(self.provider, started.elapsed());
        let response = sent.map_err(|e| {
            let kind = if e.is_timeout() {
                "timeout"
            } else {
                "transport"
            };
            self.metrics.provider_error(self.provider, kind);
            ProviderError::from_transport(&e)
        })?;
        let status = response.status().as_u16();
        if status == 429 {
            self.metrics.provider_error(self.provider, "http_429");
        } else if status >= 500 {
            self.metrics.provider_error(self.provider, "http_5xx");
        }
        self.pacer.observe(&host, status, response.headers());
        Ok(response)
    }
}

/// `host:port` of a URL: what a provider's limits apply to.
pub fn host_key(url: &Url) -> String {
    format!(
        "{}:{}",
        url.host_str().unwrap_or(""),
        url.port_or_known_default().unwrap_or(0)
    )
}

#[derive(Default)]
struct HostState {
    hard_until: Option<Instant>,
    soft_until: Option<Instant>,
    permits: Option<Arc<Semaphore>>,
}

/// Per-host pauses and background permits.
pub struct Pacer {
    hosts: Mutex<HashMap<String, HostState>>,
    background_per_host: usize,
    reserve: u64,
}

impl Pacer {
    fn new(background_per_host: usize, reserve: u64) -> Self {
        Self {
            hosts: Mutex::new(HashMap::new()),
            background_per_host: background_per_host.max(1),
            reserve,
        }
    }

    fn with_host<T>(&self, host: &str, f: impl FnOnce(&mut HostState) -> T) -> T {
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        f(hosts.entry(host.to_owned()).or_default())
    }

    /// How long the host is refused for, if it is.
    pub fn hard_pause(&self, host: &str) -> Option<Duration> {
        let now = Instant::now();
        self.with_host(host, |h| h.hard_until)
            .filter(|u| *u > now)
            .map(|u| u - now)
    }

    async fn wait_hard(&self, host: &str, max_wait: Duration) -> Result<(), ProviderError> {
        if let Some(left) = self.hard_pause(host) {
            if left > max_wait {
                return Err(ProviderError::Unavailable(format!(
                    "rate limited; retry in {} s",
                    left.as_secs().max(1)
                )));
            }
            tokio::time::sleep(left).await;
        }
        Ok(())
    }

    /// For background work: waits out every pause of the host (hard and
    /// soft), then takes one of the host's background permits.
    pub async fn background_slot(&self, host: &str) -> OwnedSemaphorePermit {
        loop {
            let now = Instant::now();
            let until = self.with_host(host, |h| {
                [h.hard_until, h.soft_until]
                    .into_iter()
                    .flatten()
                    .filter(|u| *u > now)
                    .max()
            });
            match until {
                Some(u) => tokio::time::sleep_until(u).await,
                None => break,
            }
        }
        let permits = self.with_host(host, |h| {
            h.permits
                .get_or_insert_with(|| Arc::new(Semaphore::new(self.background_per_host)))
                .clone()
        });
        loop {
            if let Ok(p) = permits.clone().acquire_owned().await {
                // a pause may have begun while we queued for the permit
                match self.hard_pause(host) {
                    Some(left) => {
                        drop(p);
                        tokio::time::sleep(left).await;
                    }
                    None => return p,
                }
            }
        }
    }

    /// Learns from one answer of `host`.
    pub fn observe(&self, host: &str, status: u16, headers: &HeaderMap) {
        let limit = RateLimit::read(headers);
        let refused = status == 429
            || (status == 403 && (limit.remaining == Some(0) || limit.retry_after.is_some()));
        let now_wall = crate::clock::wall_now();
        let now = Instant::now();
        if refused {
            let pause = limit.wait(now_wall).unwrap_or(DEFAULT_PAUSE).min(MAX_PAUSE);
            tracing::warn!(host = %host, pause_secs = pause.as_secs_f64(), status, "provider rate limit: pausing requests to this host");
            self.with_host(host, |h| {
                let until = now + pause;
                h.hard_until = Some(h.hard_until.map_or(until, |u| u.max(until)));
            });
        } else if let Some(remaining) = limit.remaining
            && remaining <= self.reserve
            && let Some(pause) = limit.wait(now_wall)
        {
            let pause = pause.min(MAX_SOFT_PAUSE);
            tracing::debug!(host = %host, remaining, pause_secs = pause.as_secs_f64(), "provider rate limit nearly used: pausing background work");
            self.with_host(host, |h| {
                let until = now + pause;
                h.soft_until = Some(h.soft_until.map_or(until, |u| u.max(until)));
            });
        }
    }
}

/// What a response says about the provider's rate limit: GitHub and
/// Bitbucket `X-RateLimit-*`, GitLab `RateLimit-*`, `Retry-After`, and the
/// mock's millisecond reset `X-RateLimit-Reset-Ms`.
#[derive(Debug, Default, PartialEq, Eq)]
struct RateLimit {
    remaining: Option<u64>,
    reset_at: Option<DateTime<Utc>>,
    retry_after: Option<Duration>,
}

impl RateLimit {
    fn read(headers: &HeaderMap) -> Self {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let number = |name: &str| text(name).and_then(|v| v.trim().parse::<u64>().ok());
        let remaining = number("x-ratelimit-remaining").or_else(|| number("ratelimit-remaining"));
        let reset_at = number("x-ratelimit-reset-ms")
            .and_then(|ms| DateTime::from_timestamp_millis(i64::try_from(ms).ok()?))
            .or_else(|| {
                number("x-ratelimit-reset")
                    .or_else(|| number("ratelimit-reset"))
                    .and_then(|s| DateTime::from_timestamp(i64::try_from(s).ok()?, 0))
            });
        let retry_after = text("retry-after").and_then(|v| {
            v.trim()
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs)
                .or_else(|| {
                    DateTime::parse_from_rfc2822(v.trim()).ok().and_then(|at| {
                        (at.with_timezone(&Utc) - crate::clock::wall_now())
                            .to_std()
                            .ok()
                    })
                })
        });
        Self {
            remaining,
            reset_at,
            retry_after,
        }
    }

    /// How long to wait: `Retry-After`, else until the reset time.
    fn wait(&self, now: DateTime<Utc>) -> Option<Duration> {
        self.retry_after.or_else(|| {
            self.reset_at
                .map(|at| (at - now).to_std().unwrap_or(Duration::ZERO))
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use reqwest::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    HeaderName::from_static(k),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn reads_github_gitlab_and_retry_after() {
        let gh = RateLimit::read(&headers(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "2000000000"),
        ]));
        assert_eq!(gh.remaining, Some(0));
        assert_eq!(gh.reset_at.unwrap().timestamp(), 2_000_000_000);
        let gl = RateLimit::read(&headers(&[
            ("ratelimit-remaining", "7"),
            ("retry-after", "30"),
        ]));
        assert_eq!(gl.remaining, Some(7));
        assert_eq!(gl.retry_after, Some(Duration::from_secs(30)));
        assert_eq!(
            gl.wait(crate::clock::wall_now()),
            Some(Duration::from_secs(30))
        );
        let ms = RateLimit::read(&headers(&[("x-ratelimit-reset-ms", "1700000000123")]));
        assert_eq!(ms.reset_at.unwrap().timestamp_millis(), 1_700_000_000_123);
    }

    #[tokio::test]
    async fn a_refusal_pauses_the_host_and_long_pauses_fail_fast() {
        let pacer = Pacer::new(2, 0);
        pacer.observe("h:443", 200, &headers(&[("x-ratelimit-remaining", "10")]));
        assert!(pacer.hard_pause("h:443").is_none());
        pacer.observe("h:443", 429, &headers(&[("retry-after", "120")]));
        let left = pacer.hard_pause("h:443").unwrap();
        assert!(left > Duration::from_secs(100), "{left:?}");
        assert!(pacer.hard_pause("other:443").is_none());
        let err = pacer
            .wait_hard("h:443", INTERACTIVE_WAIT)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("rate limited"), "{err}");
        // a 403 is a refusal only when it says so
        pacer.observe("g:443", 403, &HeaderMap::new());
        assert!(pacer.hard_pause("g:443").is_none());
        pacer.observe("g:443", 403, &headers(&[("x-ratelimit-remaining", "0")]));
        assert!(pacer.hard_pause("g:443").is_some());
    }

    #[test]
    fn a_nearly_used_budget_pauses_background_work_a_minute_at_most() {
        let pacer = Pacer::new(2, 10);
        let in_an_hour = (crate::clock::wall_now() + chrono::Duration::hours(1)).timestamp();
        pacer.observe(
            "h:443",
            200,
            &headers(&[
                ("x-ratelimit-remaining", "3"),
                ("x-ratelimit-reset", &in_an_hour.to_string()),
            ]),
        );
        let now = Instant::now();
        let soft = pacer.with_host("h:443", |h| h.soft_until).unwrap();
        assert!(soft - now <= MAX_SOFT_PAUSE, "{:?}", soft - now);
        assert!(soft - now > Duration::from_secs(50));
        // people's requests are not held by it
        assert!(pacer.hard_pause("h:443").is_none());
    }

    #[tokio::test]
    async fn background_permits_are_bounded_per_host() {
        let pacer = Pacer::new(2, 0);
        let a = pacer.background_slot("h:1").await;
        let _b = pacer.background_slot("h:1").await;
        // another host has its own permits
        let _c = pacer.background_slot("k:1").await;
        let waiting =
            tokio::time::timeout(Duration::from_millis(50), pacer.background_slot("h:1")).await;
        assert!(waiting.is_err(), "a third permit for h:1 must wait");
        drop(a);
        let _d = pacer.background_slot("h:1").await;
    }
}
