//! Rate limits on the requests anyone can send to make gitbroker work or
//! write: sign-in starts, authorization-flow starts and pasted-token
//! validation, per client address and, once signed in, per user. GCRA
//! (`governor`) in memory, per process, on the injected clock.
//!
//! The client address is the peer's, unless the peer is one of the
//! configured trusted proxies: then it is the right-most address of
//! `X-Forwarded-For` that is not a trusted proxy (the left part of that
//! header is whatever the client chose to write). IPv6 clients are counted
//! per /64, the block one host usually has.

use super::AppState;
use super::error::{ApiError, PageError};
use super::serve::is_api;
use crate::clock::Clock;
use crate::config::RateLimitSettings;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::Clock as _;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

/// What is being limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `GET /login`.
    SignIn,
    /// `POST /tokens/{runtime}/authorize`.
    FlowStart,
    /// Validating a pasted token at its provider (page and user API).
    TokenCheck,
}

impl Limit {
    fn what(self) -> &'static str {
        match self {
            Self::SignIn => "sign-in attempts",
            Self::FlowStart => "authorizations started",
            Self::TokenCheck => "tokens checked",
        }
    }
}

/// Refused by a rate limit; try again after `retry_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    pub limit: Limit,
    pub per_user: bool,
    pub retry_after: Duration,
}

impl RateLimited {
    /// Whole seconds for `Retry-After`, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        let s = self.retry_after.as_secs();
        if self.retry_after.subsec_nanos() > 0 || s == 0 {
            s + 1
        } else {
            s
        }
    }

    fn detail(&self) -> String {
        let who = if self.per_user {
            "your account"
        } else {
            "your network address"
        };
        format!(
            "too many {} from {who}; try again in {} seconds",
            self.limit.what(),
            self.retry_after_secs()
        )
    }
}

impl From<RateLimited> for ApiError {
    fn from(r: RateLimited) -> Self {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too many requests",
            r.detail(),
        )
        .with_retry_after(r.retry_after_secs())
    }
}

impl From<RateLimited> for PageError {
    fn from(r: RateLimited) -> Self {
        let mut detail = r.detail();
        if let Some(first) = detail.get_mut(0..1) {
            first.make_ascii_uppercase();
        }
        PageError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many requests",
            format!("{detail}. Nothing was changed."),
        )
        .with_retry_after(r.retry_after_secs())
    }
}

/// Governor's time source on top of the broker's clock: time since the
/// Unix epoch (a clock before 1970 reads as the epoch).
#[derive(Clone)]
struct BrokerClock(Arc<dyn Clock>);

impl governor::clock::Clock for BrokerClock {
    type Instant = Duration;
    fn now(&self) -> Duration {
        let nanos = self.0.now().timestamp_nanos_opt().unwrap_or(0);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(0))
    }
}

type Keyed<K> = RateLimiter<K, DashMapStateStore<K>, BrokerClock, NoOpMiddleware<Duration>>;

fn limiter<K: std::hash::Hash + Eq + Clone>(
    per_minute: Option<NonZeroU32>,
    clock: &BrokerClock,
) -> Option<Keyed<K>> {
    // a full minute's worth at once, refilled evenly over the minute
    per_minute.map(|n| RateLimiter::dashmap_with_clock(Quota::per_minute(n), clock.clone()))
}

/// The limiters of one process.
pub struct RateLimits {
    clock: BrokerClock,
    trusted_proxies: Vec<ipnet::IpNet>,
    sign_in_ip: Option<Keyed<IpAddr>>,
    flow_ip: Option<Keyed<IpAddr>>,
    flow_user: Option<Keyed<String>>,
    token_ip: Option<Keyed<IpAddr>>,
    token_user: Option<Keyed<String>>,
}

impl RateLimits {
    pub fn new(
        settings: &RateLimitSettings,
        trusted_proxies: Vec<ipnet::IpNet>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let clock = BrokerClock(clock);
        Self {
            sign_in_ip: limiter(settings.sign_in_per_ip, &clock),
            flow_ip: limiter(settings.flow_start_per_ip, &clock),
            flow_user: limiter(settings.flow_start_per_user, &clock),
            token_ip: limiter(settings.token_check_per_ip, &clock),
            token_user: limiter(settings.token_check_per_user, &clock),
            trusted_proxies,
            clock,
        }
    }

    fn check<K: std::hash::Hash + Eq + Clone>(
        &self,
        limiter: Option<&Keyed<K>>,
        key: &K,
        limit: Limit,
        per_user: bool,
    ) -> Result<(), RateLimited> {
        let Some(limiter) = limiter else {
            return Ok(());
        };
        limiter.check_key(key).map_err(|not_until| RateLimited {
            limit,
            per_user,
            retry_after: not_until.wait_time_from(self.clock.now()),
        })
    }

    /// Counts one `limit` action of the client at `ip`.
    pub fn check_ip(&self, limit: Limit, ip: IpAddr) -> Result<(), RateLimited> {
        let key = ip_key(ip);
        let limiter = match limit {
            Limit::SignIn => self.sign_in_ip.as_ref(),
            Limit::FlowStart => self.flow_ip.as_ref(),
            Limit::TokenCheck => self.token_ip.as_ref(),
        };
        self.check(limiter, &key, limit, false)
    }

    /// Counts one `limit` action of the signed-in user `sub`. Handlers call
    /// this once they know the user (sign-in starts have no user).
    pub fn check_user(&self, limit: Limit, sub: &str) -> Result<(), RateLimited> {
        let limiter = match limit {
            Limit::SignIn => None,
            Limit::FlowStart => self.flow_user.as_ref(),
            Limit::TokenCheck => self.token_user.as_ref(),
        };
        self.check(limiter, &sub.to_owned(), limit, true)
    }

    /// The client's address: the peer's, or behind trusted proxies the
    /// right-most untrusted `X-Forwarded-For` entry.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.is_trusted(peer) {
            return peer;
        }
        let mut client = peer;
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("").split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        for hop in hops.iter().rev() {
            let Ok(ip) = hop.parse::<IpAddr>().map(|ip| ip.to_canonical()) else {
                // unreadable: the hop that wrote it is the last one we know
                return client;
            };
            client = ip;
            if !self.is_trusted(ip) {
                return ip;
            }
        }
        client
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// Forgets clients whose limits are full again, so memory follows the
    /// number of recent clients.
    pub fn forget_idle(&self) {
        fn sweep<K: std::hash::Hash + Eq + Clone>(l: &Option<Keyed<K>>) {
            if let Some(l) = l {
                l.retain_recent();
                l.shrink_to_fit();
            }
        }
        sweep(&self.sign_in_ip);
        sweep(&self.flow_ip);
        sweep(&self.flow_user);
        sweep(&self.token_ip);
        sweep(&self.token_user);
    }

    /// Sweeps every minute until the limits are dropped.
    pub fn spawn_sweeper(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            tick.tick().await;
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(limits) => limits.forget_idle(),
                    None => return,
                }
            }
        });
    }
}

/// IPv6 hosts usually own a /64: count the block, not each address.
fn ip_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// Route middleware: counts the request against `limit` for its client
/// address; over the limit it answers 429 (problem+json on `/api/…`, the
/// HTML error page elsewhere) without running the handler.
pub(super) async fn per_ip(
    State((state, limit)): State<(AppState, Limit)>,
    req: Request,
    next: Next,
) -> Response {
    // without a peer address (the router used in-process) nothing is counted
    let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>().copied() else {
        return next.run(req).await;
    };
    let ip = state.limits.client_ip(peer.ip(), req.headers());
    match state.limits.check_ip(limit, ip) {
        Ok(()) => next.run(req).await,
        Err(limited) => {
            tracing::warn!(client = %ip, action = ?limit, "rate limited");
            if is_api(req.uri().path()) {
                ApiError::from(limited).into_response()
            } else {
                PageError::from(limited).into_response()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::disallowed_methods)]
    use super::*;
    use crate::clock::ManualClock;

    fn limits(trusted: &[&str]) -> (RateLimits, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
        let settings = RateLimitSettings {
            sign_in_per_ip: NonZeroU32::new(3),
            flow_start_per_ip: None,
            flow_start_per_user: NonZeroU32::new(2),
            token_check_per_ip: None,
            token_check_per_user: None,
        };
        let trusted = trusted.iter().map(|t| t.parse().unwrap()).collect();
        (RateLimits::new(&settings, trusted, clock.clone()), clock)
    }

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", v.parse().unwrap());
        h
    }

    #[test]
    fn quota_refills_on_the_injected_clock() {
        let (l, clock) = limits(&[]);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            l.check_ip(Limit::SignIn, ip).unwrap();
        }
        let refused = l.check_ip(Limit::SignIn, ip).unwrap_err();
        assert_eq!(refused.retry_after_secs(), 20);
        // another client is not affected
        l.check_ip(Limit::SignIn, "192.0.2.2".parse().unwrap())
            .unwrap();
        clock.advance(chrono::Duration::seconds(20));
        l.check_ip(Limit::SignIn, ip).unwrap();
        // unlimited actions
        for _ in 0..100 {
            l.check_ip(Limit::TokenCheck, ip).unwrap();
        }
    }

    #[test]
    fn per_user_limits_are_per_user() {
        let (l, _) = limits(&[]);
        l.check_user(Limit::FlowStart, "u-1").unwrap();
        l.check_user(Limit::FlowStart, "u-1").unwrap();
        assert!(l.check_user(Limit::FlowStart, "u-1").unwrap_err().per_user);
        l.check_user(Limit::FlowStart, "u-2").unwrap();
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let (l, _) = limits(&["10.0.0.0/8", "::1/128"]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // an untrusted peer's header is ignored
        assert_eq!(
            l.client_ip(ip("192.0.2.9"), &xff("203.0.113.5")),
            ip("192.0.2.9")
        );
        // right-most untrusted entry; what the client wrote on the left is not believed
        assert_eq!(
            l.client_ip(ip("10.0.0.1"), &xff("1.1.1.1, 203.0.113.5, 10.0.0.2")),
            ip("203.0.113.5")
        );
        // IPv4-mapped peers are IPv4
        assert_eq!(
            l.client_ip(ip("::ffff:10.0.0.1"), &xff("203.0.113.5")),
            ip("203.0.113.5")
        );
        // no header: the proxy itself
        assert_eq!(l.client_ip(ip("::1"), &HeaderMap::new()), ip("::1"));
        // garbage stops the walk at the last known hop
        assert_eq!(
            l.client_ip(ip("10.0.0.1"), &xff("203.0.113.5, bogus, 10.0.0.3")),
            ip("10.0.0.3")
        );
    }

    #[test]
    fn ipv6_counted_per_64() {
        assert_eq!(
            ip_key("2001:db8:1:2:3:4:5:6".parse().unwrap()),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
    }
}
