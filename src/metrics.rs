//! Prometheus metrics: requests by route template, OAuth flows, token
//! fetches, refreshes and checks, store and provider calls, and the
//! process. Every family is registered up front and every label value is
//! a fixed name (a route template, a provider kind, an outcome), never a
//! runtime id, a user id or anything a client sent, so cardinality is
//! bounded and nothing private reaches a scraper.

mod process;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Seconds: from half a millisecond (a cached token fetch) to the longest
/// provider timeout worth telling apart.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// A route template (`/api/v1/runtimes/{runtime}/token`), shared rather
/// than copied per request.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Route(Arc<str>);

impl EncodeLabelValue for Route {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&&*self.0, encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: Route,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: Route,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FetchLabels {
    token: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    provider: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpErrorLabels {
    op: &'static str,
    error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderErrorLabels {
    provider: &'static str,
    error: &'static str,
}

/// Which token a runtime fetched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchKind {
    User,
    Runtime,
}

/// The metrics of one broker process. Cheap to share (`Arc`); recording
/// is a label lookup under a read lock and an atomic add (histograms: a
/// short mutex).
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Histograms<RouteLabels>,
    flows_started: Family<ProviderLabels, Counter>,
    flows_completed: Family<ProviderLabels, Counter>,
    flows_failed: Family<ReasonLabels, Counter>,
    token_fetches: Family<FetchLabels, Counter>,
    refreshes: Family<ResultLabels, Counter>,
    validations: Family<ResultLabels, Counter>,
    store_duration: Histograms<OpLabels>,
    store_errors: Family<OpErrorLabels, Counter>,
    provider_duration: Histograms<ProviderLabels>,
    provider_errors: Family<ProviderErrorLabels, Counter>,
    /// Route templates seen so far: bounded by the router's routes.
    routes: RwLock<HashMap<Box<str>, Route>>,
    unmatched: Route,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::default();
        registry.register(
            "gitbroker_http_requests",
            "HTTP requests answered, by method, route template and status",
            requests.clone(),
        );
        let request_duration = Histograms::new_with_constructor(histogram as fn() -> Histogram);
        registry.register_with_unit(
            "gitbroker_http_request_duration",
            "Time to answer an HTTP request, by method and route template",
            Unit::Seconds,
            request_duration.clone(),
        );
        let flows_started = Family::default();
        registry.register(
            "gitbroker_oauth_flows_started",
            "OAuth authorization flows started (the user sent to the provider), by provider kind",
            flows_started.clone(),
        );
        let flows_completed = Family::default();
        registry.register(
            "gitbroker_oauth_flows_completed",
            "OAuth authorization flows completed with a stored token, by provider kind",
            flows_completed.clone(),
        );
        let flows_failed = Family::default();
        registry.register(
            "gitbroker_oauth_flows_failed",
            "OAuth authorization callbacks that stored no token, by reason",
            flows_failed.clone(),
        );
        let token_fetches = Family::default();
        registry.register(
            "gitbroker_token_fetches",
            "Token fetches on the runtime API, by token (user, runtime) and outcome",
            token_fetches.clone(),
        );
        let refreshes = Family::default();
        registry.register(
            "gitbroker_token_refreshes",
            "OAuth token refreshes at the provider, by provider kind and result",
            refreshes.clone(),
        );
        let validations = Family::default();
        registry.register(
            "gitbroker_token_validations",
            "Background token checks at the provider, by provider kind and result (the token's state, or unknown)",
            validations.clone(),
        );
        let store_duration = Histograms::new_with_constructor(histogram as fn() -> Histogram);
        registry.register_with_unit(
            "gitbroker_store_operation_duration",
            "Time of one store operation, by operation",
            Unit::Seconds,
            store_duration.clone(),
        );
        let store_errors = Family::default();
        registry.register(
            "gitbroker_store_errors",
            "Store operations that failed, by operation and error (unavailable, corrupt; conflict is a lost compare-and-swap)",
            store_errors.clone(),
        );
        let provider_duration = Histograms::new_with_constructor(histogram as fn() -> Histogram);
        registry.register_with_unit(
            "gitbroker_provider_request_duration",
            "Time of one HTTP request to a Git provider, by provider kind",
            Unit::Seconds,
            provider_duration.clone(),
        );
        let provider_errors = Family::default();
        registry.register(
            "gitbroker_provider_request_errors",
            "HTTP requests to a Git provider that failed (timeout, transport, rate_limited, http_429, http_5xx), by provider kind",
            provider_errors.clone(),
        );
        registry.register_collector(Box::new(process::ProcessCollector));
        Self {
            registry,
            requests,
            request_duration,
            flows_started,
            flows_completed,
            flows_failed,
            token_fetches,
            refreshes,
            validations,
            store_duration,
            store_errors,
            provider_duration,
            provider_errors,
            routes: RwLock::new(HashMap::new()),
            unmatched: Route(Arc::from("unmatched")),
        }
    }

    /// The shared label value of a matched route template.
    fn route(&self, template: &str) -> Route {
        if let Some(r) = self
            .routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(template)
        {
            return r.clone();
        }
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        routes
            .entry(template.into())
            .or_insert_with(|| Route(Arc::from(template)))
            .clone()
    }

    fn request(&self, method: &'static str, route: Route, status: u16, took: Duration) {
        self.request_duration
            .get_or_create(&RouteLabels {
                method,
                route: route.clone(),
            })
            .observe(took.as_secs_f64());
        self.requests
            .get_or_create(&RequestLabels {
                method,
                route,
                status,
            })
            .inc();
    }

    pub fn flow_started(&self, provider: &'static str) {
        self.flows_started
            .get_or_create(&ProviderLabels { provider })
            .inc();
    }

    pub fn flow_completed(&self, provider: &'static str) {
        self.flows_completed
            .get_or_create(&ProviderLabels { provider })
            .inc();
    }

    pub fn flow_failed(&self, reason: &'static str) {
        self.flows_failed
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn token_fetch(&self, kind: FetchKind, outcome: &'static str) {
        let token = match kind {
            FetchKind::User => "user",
            FetchKind::Runtime => "runtime",
        };
        self.token_fetches
            .get_or_create(&FetchLabels { token, outcome })
            .inc();
    }

    pub fn refresh(&self, provider: &'static str, result: &'static str) {
        self.refreshes
            .get_or_create(&ResultLabels { provider, result })
            .inc();
    }

    pub fn validation(&self, provider: &'static str, result: &'static str) {
        self.validations
            .get_or_create(&ResultLabels { provider, result })
            .inc();
    }

    pub fn store_op(&self, op: &'static str, took: Duration, error: Option<&'static str>) {
        self.store_duration
            .get_or_create(&OpLabels { op })
            .observe(took.as_secs_f64());
        if let Some(error) = error {
            self.store_errors
                .get_or_create(&OpErrorLabels { op, error })
                .inc();
        }
    }

    pub fn provider_call(&self, provider: &'static str, took: Duration) {
        self.provider_duration
            .get_or_create(&ProviderLabels { provider })
            .observe(took.as_secs_f64());
    }

    pub fn provider_error(&self, provider: &'static str, error: &'static str) {
        self.provider_errors
            .get_or_create(&ProviderErrorLabels { provider, error })
            .inc();
    }

    /// The OpenMetrics text exposition.
    pub fn openmetrics(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // writing into a String cannot fail
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The Prometheus text format (0.0.4), for scrapers and tools
    /// (`promtool check metrics`) that do not ask for OpenMetrics.
    pub fn prometheus_text(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// A request being timed, under its route template (never its path).
pub struct Timing {
    started: tokio::time::Instant,
    method: &'static str,
    route: Route,
}

impl Metrics {
    /// Starts timing `req`; call from a layer of the router, where the
    /// matched route is known.
    pub fn begin(&self, req: &Request) -> Timing {
        Timing {
            started: tokio::time::Instant::now(),
            method: method_label(req.method()),
            route: match req.extensions().get::<MatchedPath>() {
                Some(p) => self.route(p.as_str()),
                None => self.unmatched.clone(),
            },
        }
    }

    /// Counts and times the answered request.
    pub fn end(&self, t: Timing, status: u16) {
        self.request(t.method, t.route, status, t.started.elapsed());
    }
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /metrics`: OpenMetrics when the scraper asks for it (Prometheus
/// does), the Prometheus text format otherwise.
pub async fn scrape(State(metrics): State<Arc<Metrics>>, headers: HeaderMap) -> Response {
    let wants_openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let (body, content_type) = if wants_openmetrics {
        (metrics.openmetrics(), OPENMETRICS)
    } else {
        (metrics.prometheus_text(), PROMETHEUS_TEXT)
    };
    let mut resp = body.into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The router of the separate metrics listener (`[metrics] listen`).
pub fn router(metrics: Arc<Metrics>) -> axum::Router {
    axum::Router::new()
        .route("/metrics", axum::routing::get(scrape))
        .with_state(metrics)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn both_formats_name_counters_as_their_format_wants() {
        let m = Metrics::new();
        m.flow_failed("denied");
        m.store_op("get", Duration::from_millis(2), None);
        let om = m.openmetrics();
        assert!(
            om.contains("# TYPE gitbroker_oauth_flows_failed counter"),
            "{om}"
        );
        assert!(om.ends_with("# EOF\n"), "{om}");
        let text = m.prometheus_text();
        assert!(
            text.contains("# TYPE gitbroker_oauth_flows_failed_total counter"),
            "{text}"
        );
        assert!(
            text.contains("# HELP gitbroker_oauth_flows_failed_total OAuth"),
            "{text}"
        );
        assert!(
            text.contains("gitbroker_oauth_flows_failed_total{reason=\"denied\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE gitbroker_store_operation_duration_seconds histogram"),
            "{text}"
        );
        assert!(
            !text.contains("# UNIT") && !text.contains("# EOF"),
            "{text}"
        );
    }

    #[test]
    fn route_templates_are_shared_not_copied() {
        let m = Metrics::new();
        let a = m.route("/api/v1/runtimes/{runtime}/token");
        let b = m.route("/api/v1/runtimes/{runtime}/token");
        assert!(Arc::ptr_eq(&a.0, &b.0));
        assert_eq!(m.routes.read().unwrap().len(), 1);
    }

    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(
            method_label(&Method::from_bytes(b"SECRETMETHOD").unwrap()),
            "other"
        );
    }
}
