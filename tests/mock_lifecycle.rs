//! The mock's token-lifecycle and load switches, over real HTTP against a
//! started mock, in every flavour: refreshes made to fail (without spending
//! the refresh token) or to hang after rotating, short-lived tokens on the
//! mock's clock, refresh counters; API calls counted per token, the
//! in-flight gauge with `api_delay_ms`, the host-wide rate limit with each
//! flavour's headers; OAuth tokens and personal access tokens narrowed,
//! expired and revoked at run time; and how the tests wait for the mock
//! (`MockProvider::wait_until`) instead of sleeping.

#![allow(
    clippy::disallowed_methods,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use gitbroker::clock::ManualClock;
use gitbroker::mock::{
    Flavour, MockConfig, MockOAuthApp, MockProvider, PatSpec, PerFlavour, RateLimit, RunningMock,
    Stats, TrafficStats,
};
use reqwest::header::{ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const CLIENT_ID: &str = "lifecycle-client";
const SECRET: &str = "lifecycle-secret";
const CALLBACK: &str = "http://broker.test/oauth/callback";

/// The four provider flavours, as a client sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum F {
    GitHub,
    GitLab,
    Cloud,
    Dc,
}

const ALL: [F; 4] = [F::GitHub, F::GitLab, F::Cloud, F::Dc];
/// The flavours whose tokens always expire.
const EXPIRING: [F; 3] = [F::GitLab, F::Cloud, F::Dc];

impl F {
    fn prefix(self) -> &'static str {
        match self {
            F::GitHub => "",
            F::GitLab => "/gitlab",
            F::Cloud => "/bitbucket",
            F::Dc => "/bitbucket-dc",
        }
    }

    fn authorize_path(self) -> &'static str {
        match self {
            F::GitHub => "/login/oauth/authorize",
            F::GitLab => "/oauth/authorize",
            F::Cloud => "/site/oauth2/authorize",
            F::Dc => "/rest/oauth2/latest/authorize",
        }
    }

    fn token_path(self) -> &'static str {
        match self {
            F::GitHub => "/login/oauth/access_token",
            F::GitLab => "/oauth/token",
            F::Cloud => "/site/oauth2/access_token",
            F::Dc => "/rest/oauth2/latest/token",
        }
    }

    fn scope(self) -> &'static str {
        match self {
            F::GitHub => "repo",
            F::GitLab => "read_api write_repository",
            F::Cloud => "",
            F::Dc => "REPO_WRITE",
        }
    }

    /// The endpoint that tells who a token belongs to.
    fn identity_path(self) -> &'static str {
        match self {
            F::GitHub => "/api/v3/user",
            F::GitLab => "/api/v4/user",
            F::Cloud => "/2.0/user",
            F::Dc => "/rest/api/1.0/application-properties",
        }
    }

    fn url(self, m: &RunningMock, path: &str) -> String {
        format!("{}{}{path}", m.base_url, self.prefix())
    }

    fn count(self, p: &PerFlavour) -> u64 {
        match self {
            F::GitHub => p.github,
            F::GitLab => p.gitlab,
            F::Cloud => p.bitbucket_cloud,
            F::Dc => p.bitbucket_data_center,
        }
    }
}

fn config(expiring_tokens: bool) -> MockConfig {
    let mut config = MockConfig::demo();
    config.expiring_tokens = expiring_tokens;
    config.oauth_apps.push(MockOAuthApp {
        name: "Lifecycle".into(),
        client_id: CLIENT_ID.into(),
        client_secret: SECRET.into(),
        callback_url: CALLBACK.into(),
    });
    config
}

/// A mock whose GitHub flavour issues expiring tokens too.
async fn start() -> RunningMock {
    MockProvider::start(config(true), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// Where the tests' clock starts: a whole second, so that rate-limit
/// resets are easy to read.
const T0_MS: i64 = 1_800_000_000_000;

/// A mock on a clock the test moves, starting at [`T0_MS`].
async fn start_with_clock(expiring: bool) -> (RunningMock, Arc<ManualClock>) {
    let start = chrono::DateTime::from_timestamp_millis(T0_MS).unwrap();
    let clock = Arc::new(ManualClock::new(start));
    let mock = MockProvider::with_clock(config(expiring), clock.clone())
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    (mock, clock)
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A code for alice, through the `auto_approve` switch.
async fn code(m: &RunningMock, f: F) -> String {
    m.provider.switches().set_auto_approve(Some("alice"));
    let response = http()
        .get(f.url(m, f.authorize_path()))
        .query(&[
            ("client_id", CLIENT_ID),
            ("redirect_uri", CALLBACK),
            ("response_type", "code"),
            ("scope", f.scope()),
            ("state", "st"),
        ])
        .send()
        .await
        .unwrap();
    m.provider.switches().set_auto_approve(None);
    assert_eq!(response.status(), 302, "{f:?}");
    let location = response.headers()["location"].to_str().unwrap();
    url::Url::parse(location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("{f:?}: no code in {location}"))
}

/// A token-endpoint answer: status, headers, body (JSON, or the text).
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
    text: String,
}

impl Answer {
    fn ok(&self) -> bool {
        self.status == 200 && self.body["access_token"].is_string()
    }

    fn access(&self) -> String {
        self.body["access_token"].as_str().unwrap().to_owned()
    }

    fn refresh(&self) -> String {
        self.body["refresh_token"].as_str().unwrap().to_owned()
    }
}

/// Posts `form` to `f`'s token endpoint with HTTP Basic client
/// authentication (which every flavour accepts), asking for JSON.
async fn token_request(m: &RunningMock, f: F, form: &[(&str, &str)]) -> Answer {
    let response = http()
        .post(f.url(m, f.token_path()))
        .basic_auth(CLIENT_ID, Some(SECRET))
        .header(ACCEPT, "application/json")
        .form(form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    Answer {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    }
}

async fn exchange(m: &RunningMock, f: F, code: &str) -> Answer {
    token_request(
        m,
        f,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", CALLBACK),
        ],
    )
    .await
}

/// A fresh token pair for alice.
async fn tokens(m: &RunningMock, f: F) -> Answer {
    let code = code(m, f).await;
    let answer = exchange(m, f, &code).await;
    assert!(answer.ok(), "{f:?}: {}", answer.text);
    answer
}

async fn refresh(m: &RunningMock, f: F, refresh_token: &str) -> Answer {
    token_request(
        m,
        f,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
    )
    .await
}

/// The status of `f`'s identity endpoint for a bearer token.
async fn identity(m: &RunningMock, f: F, token: &str) -> u16 {
    http()
        .get(f.url(m, f.identity_path()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The flavour's way of saying "this refresh was refused with `error`".
fn assert_refused(f: F, answer: &Answer, error: &str) {
    assert!(!answer.ok(), "{f:?}: {}", answer.text);
    assert_eq!(answer.body["error"], error, "{f:?}: {}", answer.text);
    let status = if f == F::GitHub { 200 } else { 400 };
    assert_eq!(answer.status, status, "{f:?}: {}", answer.text);
}

fn refused_error(f: F) -> &'static str {
    if f == F::GitHub {
        "bad_refresh_token"
    } else {
        "invalid_grant"
    }
}

/// The mock reaching a state: a guard against a test that would wait for
/// ever, not a timing assertion.
async fn eventually(m: &RunningMock, done: impl Fn(&Stats, &TrafficStats) -> bool) {
    tokio::time::timeout(Duration::from_secs(120), m.provider.wait_until(done))
        .await
        .expect("the mock never reached the awaited state");
}

async fn switches(m: &RunningMock, body: Value) -> reqwest::Response {
    http()
        .post(format!("{}/__mock/switches", m.base_url))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn http_stats(m: &RunningMock) -> Value {
    http()
        .get(format!("{}/__mock/stats", m.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

// ---------------------------------------------------------------------------
// Refresh switches.

#[tokio::test]
async fn refresh_error_fails_refreshes_only_and_spends_nothing() {
    let m = start().await;
    for f in ALL {
        m.provider
            .switches()
            .set_refresh_error(Some("invalid_grant"));
        // code exchanges are not affected
        let first = tokens(&m, f).await;
        let failed = refresh(&m, f, &first.refresh()).await;
        assert_refused(f, &failed, "invalid_grant");
        // the pair still works: the refresh token was not consumed
        assert_eq!(identity(&m, f, &first.access()).await, 200, "{f:?}");
        m.provider.switches().set_refresh_error(None);
        let second = refresh(&m, f, &first.refresh()).await;
        assert!(second.ok(), "{f:?}: {}", second.text);
        assert_ne!(second.access(), first.access());
        assert_eq!(identity(&m, f, &second.access()).await, 200, "{f:?}");
        assert_eq!(identity(&m, f, &first.access()).await, 401, "{f:?}");
    }
    // GitHub's wording for its own error code, HTTP 200 as GitHub answers
    m.provider
        .switches()
        .set_refresh_error(Some("bad_refresh_token"));
    let first = tokens(&m, F::GitHub).await;
    let failed = refresh(&m, F::GitHub, &first.refresh()).await;
    assert_refused(F::GitHub, &failed, "bad_refresh_token");
    assert_eq!(
        failed.body["error_description"],
        "The refresh token passed is incorrect or expired."
    );

    let traffic = m.provider.traffic_stats();
    assert_eq!(traffic.refresh_requests, 9);
    assert_eq!(traffic.refresh_successes, 4);
    for f in ALL {
        let want = if f == F::GitHub { 3 } else { 2 };
        assert_eq!(f.count(&traffic.refresh_requests_by_flavour), want, "{f:?}");
        assert_eq!(f.count(&traffic.refresh_successes_by_flavour), 1, "{f:?}");
    }
    assert_eq!(m.provider.stats().token_requests, 14);
}

#[tokio::test]
async fn refresh_status_answers_that_status_and_spends_nothing() {
    let m = start().await;
    for f in ALL {
        let first = tokens(&m, f).await;
        for status in [502, 503] {
            m.provider.switches().set_refresh_status(Some(status));
            let failed = refresh(&m, f, &first.refresh()).await;
            assert_eq!(failed.status, status, "{f:?}");
            assert!(
                failed.headers[CONTENT_TYPE]
                    .to_str()
                    .unwrap()
                    .starts_with("text/html"),
                "{f:?}"
            );
        }
        m.provider.switches().set_refresh_status(Some(429));
        let limited = refresh(&m, f, &first.refresh()).await;
        assert_eq!(limited.status, 429, "{f:?}");
        let wait: u64 = limited.headers[RETRY_AFTER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(wait > 0, "{f:?}");
        if f == F::GitHub {
            m.provider.switches().set_refresh_status(Some(403));
            let limited = refresh(&m, f, &first.refresh()).await;
            assert_eq!(limited.status, 403);
            assert_eq!(limited.headers["x-ratelimit-remaining"], "0");
        }
        // code exchanges are not affected
        let other = tokens(&m, f).await;
        assert_eq!(identity(&m, f, &other.access()).await, 200);

        m.provider.switches().set_refresh_status(None);
        let second = refresh(&m, f, &first.refresh()).await;
        assert!(second.ok(), "{f:?}: {}", second.text);
    }
    assert_eq!(m.provider.traffic_stats().refresh_successes, 4);
}

#[tokio::test]
async fn refresh_switches_over_http() {
    let m = start().await;
    let state: Value = switches(
        &m,
        json!({ "refresh_error": "invalid_grant", "refresh_status": 503, "refresh_hang": true,
                "access_token_secs": 60, "github_expiring_tokens": false }),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(state["refresh_error"], "invalid_grant");
    assert_eq!(state["refresh_status"], 503);
    assert_eq!(state["refresh_hang"], true);
    assert_eq!(state["access_token_secs"], 60);
    assert_eq!(state["github_expiring_tokens"], false);
    assert_eq!(
        m.provider.switches().get().refresh_error.as_deref(),
        Some("invalid_grant")
    );
    let state: Value = switches(&m, json!({ "refresh_hang": null, "refresh_status": null }))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(state["refresh_hang"], false);
    assert_eq!(state["refresh_status"], Value::Null);
    assert_eq!(state["refresh_error"], "invalid_grant");

    for bad in [
        json!({ "refresh_status": 42 }),
        json!({ "access_token_secs": -1 }),
    ] {
        assert_eq!(switches(&m, bad.clone()).await.status(), 400, "{bad}");
    }

    // The refresh counters are in /__mock/stats, next to the old ones.
    m.provider.switches().set_refresh_error(None);
    let first = tokens(&m, F::GitLab).await;
    assert!(refresh(&m, F::GitLab, &first.refresh()).await.ok());
    let stats = http_stats(&m).await;
    assert_eq!(stats["token_requests"], 2);
    assert_eq!(stats["refresh_requests"], 1);
    assert_eq!(stats["refresh_successes"], 1);
    assert_eq!(stats["refresh_requests_by_flavour"]["gitlab"], 1);
    assert_eq!(stats["refresh_successes_by_flavour"]["github"], 0);
    let parsed: TrafficStats = serde_json::from_value(stats.clone()).unwrap();
    assert_eq!(parsed, m.provider.traffic_stats());
    let parsed: Stats = serde_json::from_value(stats).unwrap();
    assert_eq!(parsed, m.provider.stats());

    let reset = http()
        .post(format!("{}/__mock/stats/reset", m.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 204);
    assert_eq!(m.provider.traffic_stats(), TrafficStats::default());
    assert_eq!(m.provider.stats(), Stats::default());
    // switches stay
    assert_eq!(m.provider.switches().get().access_token_secs, Some(60));
}

#[tokio::test]
async fn refresh_hang_rotates_then_withholds_the_answer_until_turned_off() {
    let m = start().await;
    for f in ALL {
        m.provider.reset_counters();
        let first = tokens(&m, f).await;
        m.provider.switches().set_refresh_hang(true);
        let waiting = tokio::spawn({
            let url = f.url(&m, f.token_path());
            let old = first.refresh();
            async move {
                http()
                    .post(url)
                    .basic_auth(CLIENT_ID, Some(SECRET))
                    .header(ACCEPT, "application/json")
                    .form(&[("grant_type", "refresh_token"), ("refresh_token", &old)])
                    .send()
                    .await
                    .unwrap()
                    .json::<Value>()
                    .await
                    .unwrap()
            }
        });
        // Rotated: the old access token died, though no answer came yet.
        eventually(&m, |_, t| t.refresh_successes == 1).await;
        assert_eq!(identity(&m, f, &first.access()).await, 401, "{f:?}");
        assert!(!waiting.is_finished(), "{f:?}");
        // code exchanges do not hang
        let other = tokens(&m, f).await;
        assert_eq!(identity(&m, f, &other.access()).await, 200);

        m.provider.switches().set_refresh_hang(false);
        let answer = waiting.await.unwrap();
        let new_access = answer["access_token"].as_str().unwrap();
        assert_eq!(identity(&m, f, new_access).await, 200, "{f:?}");
        // the refresh token was spent by the held-back request
        let again = refresh(&m, f, &first.refresh()).await;
        assert_refused(f, &again, refused_error(f));
    }
}

#[tokio::test]
async fn a_client_giving_up_on_a_hanging_refresh_does_not_undo_it() {
    let m = start().await;
    let first = tokens(&m, F::GitLab).await;
    m.provider.switches().set_refresh_hang(true);
    let url = F::GitLab.url(&m, F::GitLab.token_path());
    let old = first.refresh();
    let waiting = tokio::spawn(async move {
        let _ = http()
            .post(url)
            .basic_auth(CLIENT_ID, Some(SECRET))
            .form(&[("grant_type", "refresh_token"), ("refresh_token", &old)])
            .send()
            .await;
    });
    eventually(&m, |_, t| t.refresh_successes == 1).await;
    // the client goes away (its connection is dropped)
    waiting.abort();
    let _ = waiting.await;
    m.provider.switches().set_refresh_hang(false);
    // Neither the old pair nor the old refresh token work: the answer with
    // the new pair is lost, and the user must authorize again.
    assert_eq!(identity(&m, F::GitLab, &first.access()).await, 401);
    let again = refresh(&m, F::GitLab, &first.refresh()).await;
    assert_refused(F::GitLab, &again, "invalid_grant");
}

// ---------------------------------------------------------------------------
// Access-token lifetimes.

#[tokio::test]
async fn access_token_secs_sets_expires_in_and_expiry_on_the_mocks_clock() {
    let (m, clock) = start_with_clock(true).await;
    m.provider.switches().set_access_token_secs(Some(90));
    for f in ALL {
        let first = tokens(&m, f).await;
        assert_eq!(first.body["expires_in"], 90, "{f:?}: {}", first.text);
        let second = refresh(&m, f, &first.refresh()).await;
        assert_eq!(second.body["expires_in"], 90, "{f:?}: {}", second.text);
        clock.advance(chrono::Duration::seconds(89));
        assert_eq!(identity(&m, f, &second.access()).await, 200, "{f:?}");
        clock.advance(chrono::Duration::seconds(1));
        assert_eq!(identity(&m, f, &second.access()).await, 401, "{f:?}");
        // the refresh token outlives it
        let third = refresh(&m, f, &second.refresh()).await;
        assert!(third.ok(), "{f:?}: {}", third.text);
        assert_eq!(identity(&m, f, &third.access()).await, 200, "{f:?}");
    }
    // GitLab's token info agrees.
    let first = tokens(&m, F::GitLab).await;
    clock.advance(chrono::Duration::seconds(30));
    let info: Value = http()
        .get(F::GitLab.url(&m, "/oauth/token/info"))
        .bearer_auth(first.access())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["expires_in"], 60);

    // Zero: issued already expired.
    m.provider.switches().set_access_token_secs(Some(0));
    for f in EXPIRING {
        let first = tokens(&m, f).await;
        assert_eq!(first.body["expires_in"], 0, "{f:?}");
        assert_eq!(identity(&m, f, &first.access()).await, 401, "{f:?}");
    }
    // Cleared: the flavours' own lifetimes again.
    m.provider.switches().set_access_token_secs(None);
    for (f, secs) in [
        (F::GitHub, 28_800),
        (F::GitLab, 7_200),
        (F::Cloud, 7_200),
        (F::Dc, 3_600),
    ] {
        assert_eq!(tokens(&m, f).await.body["expires_in"], secs, "{f:?}");
    }
}

#[tokio::test]
async fn github_expiring_tokens_can_be_switched_at_run_time() {
    let (m, clock) = start_with_clock(false).await;
    let plain = tokens(&m, F::GitHub).await;
    assert!(plain.body.get("expires_in").is_none());
    assert!(plain.body.get("refresh_token").is_none());
    // access_token_secs does not touch tokens that never expire
    m.provider.switches().set_access_token_secs(Some(60));
    let plain = tokens(&m, F::GitHub).await;
    assert!(plain.body.get("expires_in").is_none());

    m.provider.switches().set_github_expiring_tokens(Some(true));
    let expiring = tokens(&m, F::GitHub).await;
    assert_eq!(expiring.body["expires_in"], 60);
    assert!(expiring.refresh().starts_with("ghr_"));
    // so do tokens made through the control API
    let direct = m.provider.issue_token("bob", CLIENT_ID, &["repo"]);
    clock.advance(chrono::Duration::seconds(60));
    assert_eq!(identity(&m, F::GitHub, &expiring.access()).await, 401);
    assert_eq!(identity(&m, F::GitHub, &direct).await, 401);
    assert_eq!(identity(&m, F::GitHub, &plain.access()).await, 200);
    let refreshed = refresh(&m, F::GitHub, &expiring.refresh()).await;
    assert_eq!(refreshed.body["expires_in"], 60);

    let (m, _) = start_with_clock(true).await;
    m.provider
        .switches()
        .set_github_expiring_tokens(Some(false));
    let plain = tokens(&m, F::GitHub).await;
    assert!(plain.body.get("refresh_token").is_none());
}

// ---------------------------------------------------------------------------
// Per-token API call counts, in-flight gauge, api_delay_ms.

fn pat(m: &RunningMock, flavour: Flavour, kind: &str, scopes: &[&str]) -> String {
    m.provider.create_pat(PatSpec {
        flavour,
        owner: "alice".into(),
        kind: kind.into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        expires_at: None,
        repositories: vec![],
        email: None,
    })
}

#[tokio::test]
async fn api_calls_are_counted_per_token_with_a_histogram() {
    let m = start().await;
    let mut oauth = Vec::new();
    for f in ALL {
        let t = tokens(&m, f).await.access();
        for _ in 0..2 {
            assert_eq!(identity(&m, f, &t).await, 200, "{f:?}");
        }
        oauth.push(t);
    }
    // GitLab reads PRIVATE-TOKEN; its token info and PAT record count too.
    let glpat = pat(&m, Flavour::Gitlab, "personal", &["read_api"]);
    for path in ["/api/v4/user", "/api/v4/personal_access_tokens/self"] {
        let r = http()
            .get(F::GitLab.url(&m, path))
            .header("PRIVATE-TOKEN", &glpat)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let info = http()
        .get(F::GitLab.url(&m, "/oauth/token/info"))
        .bearer_auth(&oauth[1])
        .send()
        .await
        .unwrap();
    assert_eq!(info.status(), 200);
    // Bitbucket Cloud API tokens come as the password of Basic auth.
    let api_token = pat(
        &m,
        Flavour::BitbucketCloud,
        "api_token",
        &["read:user:bitbucket"],
    );
    let r = http()
        .get(F::Cloud.url(&m, "/2.0/user"))
        .basic_auth("alice@example.com", Some(&api_token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // GitHub's applications API names the token in its body.
    let check = http()
        .post(format!(
            "{}/applications/{CLIENT_ID}/token",
            m.github_api_url()
        ))
        .basic_auth(CLIENT_ID, Some(SECRET))
        .json(&json!({ "access_token": oauth[0] }))
        .send()
        .await
        .unwrap();
    assert_eq!(check.status(), 200);
    // Refused requests count as well: a token nobody issued.
    assert_eq!(identity(&m, F::GitHub, "gho_unknown").await, 401);

    assert_eq!(m.provider.api_calls_for(&oauth[0]), 3);
    assert_eq!(m.provider.api_calls_for(&oauth[1]), 3);
    assert_eq!(m.provider.api_calls_for(&oauth[2]), 2);
    assert_eq!(m.provider.api_calls_for(&oauth[3]), 2);
    assert_eq!(m.provider.api_calls_for(&glpat), 2);
    assert_eq!(m.provider.api_calls_for(&api_token), 1);
    assert_eq!(m.provider.api_calls_for("gho_unknown"), 1);
    assert_eq!(m.provider.api_calls_for("never-seen"), 0);
    // token endpoints and the control API are no API calls
    let traffic = m.provider.traffic_stats();
    assert_eq!(traffic.api_requests, 14);
    let histogram: Vec<(u64, u64)> = traffic.api_calls_histogram.into_iter().collect();
    assert_eq!(histogram, vec![(1, 2), (2, 3), (3, 2)]);

    // The same from outside the process, never naming a token.
    let stats = http_stats(&m).await;
    assert_eq!(
        stats["api_calls_histogram"],
        json!({ "1": 2, "2": 3, "3": 2 })
    );
    let parsed: TrafficStats = serde_json::from_value(stats.clone()).unwrap();
    assert_eq!(parsed, m.provider.traffic_stats());
    let body = stats.to_string();
    for t in oauth.iter().chain([&glpat, &api_token]) {
        assert!(!body.contains(t.as_str()));
    }
    let calls: Value = http()
        .post(format!("{}/__mock/stats/api_calls", m.base_url))
        .json(&json!({ "token": oauth[0] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(calls, json!({ "calls": 3 }));

    m.provider.reset_counters();
    assert_eq!(m.provider.api_calls_for(&oauth[0]), 0);
    assert!(m.provider.traffic_stats().api_calls_histogram.is_empty());
}

#[tokio::test]
async fn in_flight_peak_with_api_delay() {
    let m = start().await;
    let mut held = Vec::new();
    let mut requests = Vec::new();
    for f in ALL {
        let t = tokens(&m, f).await.access();
        requests.push((f, t.clone()));
        requests.push((f, t));
    }
    let n = requests.len() as u64;
    // Long enough that nothing finishes before the switch is turned off.
    let state: Value = switches(&m, json!({ "api_delay_ms": 600_000 }))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(state["api_delay_ms"], 600_000);
    for (f, t) in requests {
        let url = f.url(&m, f.identity_path());
        held.push(tokio::spawn(async move {
            http()
                .get(url)
                .bearer_auth(t)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    eventually(&m, |_, t| t.api_in_flight == n).await;
    let traffic = m.provider.traffic_stats();
    assert_eq!(traffic.api_max_in_flight, n);
    // No handler ran yet: the identity counters have not moved.
    assert_eq!(m.provider.stats().user_requests, 0);
    // A reset while they wait starts the peak from those in flight.
    m.provider.reset_counters();
    assert_eq!(m.provider.traffic_stats().api_max_in_flight, n);
    assert_eq!(m.provider.traffic_stats().api_in_flight, n);

    // Turning the switch off releases them.
    m.provider.switches().set_api_delay_ms(None);
    for h in held {
        assert_eq!(h.await.unwrap(), 200);
    }
    eventually(&m, |_, t| t.api_in_flight == 0).await;
    assert_eq!(m.provider.traffic_stats().api_max_in_flight, n);
    assert_eq!(m.provider.stats().user_requests, n);

    // One request at a time peaks at one; a short delay still answers.
    m.provider.reset_counters();
    m.provider.switches().set_api_delay_ms(Some(5));
    let t = tokens(&m, F::GitLab).await.access();
    for _ in 0..3 {
        assert_eq!(identity(&m, F::GitLab, &t).await, 200);
    }
    let traffic = m.provider.traffic_stats();
    assert_eq!((traffic.api_requests, traffic.api_max_in_flight), (3, 1));
}

// ---------------------------------------------------------------------------
// Rate limiting.

/// A GET of `f`'s identity endpoint: status, headers, body text.
async fn identity_full(
    m: &RunningMock,
    f: F,
    token: &str,
) -> (u16, reqwest::header::HeaderMap, String) {
    let r = http()
        .get(f.url(m, f.identity_path()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap())
}

fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    h.get(name)
        .unwrap_or_else(|| panic!("no {name} in {h:?}"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn rate_limit_headers_and_answers_in_every_flavour() {
    let (m, clock) = start_with_clock(true).await;
    let limit = RateLimit {
        limit: 3,
        window_ms: 1500,
    };
    m.provider.switches().set_api_rate_limit(Some(limit));
    let ms = chrono::Duration::milliseconds;
    for (i, f) in ALL.into_iter().enumerate() {
        let token = tokens(&m, f).await.access();
        // each flavour in a window of its own (the window is host-wide)
        clock.advance(ms(1500));
        let start = T0_MS + 1500 * (i as i64 + 1);
        let reset_ms = (start + 1500).to_string();
        // unix seconds, rounded up (T0 + 3 s, then T0 + 4.5 s → 5 s, …)
        let reset_secs = (start + 1500 + 999).div_euclid(1000);
        for n in 1..=3u64 {
            let (status, h, _) = identity_full(&m, f, &token).await;
            assert_eq!(status, 200, "{f:?}");
            assert_eq!(header(&h, "x-ratelimit-reset-ms"), reset_ms, "{f:?}");
            let remaining = (3 - n).to_string();
            match f {
                F::GitHub => {
                    assert_eq!(header(&h, "x-ratelimit-limit"), "3");
                    assert_eq!(header(&h, "x-ratelimit-remaining"), remaining);
                    assert_eq!(header(&h, "x-ratelimit-used"), n.to_string());
                    assert_eq!(header(&h, "x-ratelimit-reset"), reset_secs.to_string());
                    assert_eq!(header(&h, "x-ratelimit-resource"), "core");
                }
                F::GitLab => {
                    assert_eq!(header(&h, "ratelimit-limit"), "3");
                    assert_eq!(header(&h, "ratelimit-remaining"), remaining);
                    assert_eq!(header(&h, "ratelimit-observed"), n.to_string());
                    assert_eq!(header(&h, "ratelimit-reset"), reset_secs.to_string());
                    let reset_time = chrono::DateTime::from_timestamp_millis(start + 1500)
                        .unwrap()
                        .format("%a, %d %b %Y %H:%M:%S GMT")
                        .to_string();
                    assert_eq!(header(&h, "ratelimit-resettime"), reset_time);
                }
                F::Cloud => {
                    assert_eq!(header(&h, "x-ratelimit-limit"), "3");
                    assert_eq!(header(&h, "x-ratelimit-resource"), "api");
                    let near = if n == 3 { "true" } else { "false" };
                    assert_eq!(header(&h, "x-ratelimit-nearlimit"), near);
                    assert!(h.get("x-ratelimit-remaining").is_none());
                }
                F::Dc => {
                    assert_eq!(header(&h, "x-ratelimit-limit"), "3");
                    assert_eq!(header(&h, "x-ratelimit-remaining"), remaining);
                    assert_eq!(header(&h, "x-ratelimit-interval-seconds"), "2");
                    assert_eq!(header(&h, "x-ratelimit-fillrate"), "3");
                    let wait = if n == 3 { "2" } else { "0" };
                    assert_eq!(header(&h, "retry-after"), wait);
                }
            }
            if f != F::Dc {
                assert!(h.get("retry-after").is_none(), "{f:?}");
            }
        }
        // over the limit
        let (status, h, body) = identity_full(&m, f, &token).await;
        assert_eq!(header(&h, "x-ratelimit-reset-ms"), reset_ms, "{f:?}");
        match f {
            F::GitHub => {
                assert_eq!(status, 403);
                assert_eq!(header(&h, "x-ratelimit-remaining"), "0");
                assert!(h.get("retry-after").is_none());
                let body: Value = serde_json::from_str(&body).unwrap();
                assert!(
                    body["message"]
                        .as_str()
                        .unwrap()
                        .starts_with("API rate limit exceeded")
                );
                // and 429 with Retry-After when told so
                m.provider.switches().set_rate_limit_status(Some(429));
                let (status, h, _) = identity_full(&m, f, &token).await;
                assert_eq!(status, 429);
                assert_eq!(header(&h, "retry-after"), "2");
                assert_eq!(header(&h, "x-ratelimit-remaining"), "0");
                m.provider.switches().set_rate_limit_status(None);
            }
            F::GitLab => {
                assert_eq!(status, 429);
                assert_eq!(body, "Retry later\n");
                assert_eq!(header(&h, "retry-after"), "2");
                assert_eq!(header(&h, "ratelimit-remaining"), "0");
            }
            F::Cloud => {
                assert_eq!(status, 429);
                assert_eq!(header(&h, "retry-after"), "2");
                assert!(body.contains("Rate limit for this resource has been exceeded"));
            }
            F::Dc => {
                assert_eq!(status, 429);
                assert_eq!(header(&h, "retry-after"), "2");
                assert_eq!(header(&h, "x-ratelimit-remaining"), "0");
            }
        }
    }
    let traffic = m.provider.traffic_stats();
    assert_eq!(traffic.rate_limited_responses, 5);
    assert_eq!(traffic.api_requests, 17);
    // refused requests never reached the endpoints, but count per token
    assert_eq!(m.provider.stats().user_requests, 12);
    assert_eq!(traffic.api_calls_histogram.get(&4), Some(&3));
    assert_eq!(traffic.api_calls_histogram.get(&5), Some(&1));

    // Fixed windows: refused up to the window's end, then a new window.
    clock.advance(ms(1499));
    let token = tokens(&m, F::GitHub).await.access();
    assert_eq!(identity(&m, F::GitHub, &token).await, 403);
    clock.advance(ms(1));
    let (status, h, _) = identity_full(&m, F::GitHub, &token).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "x-ratelimit-remaining"), "2");
    let next = T0_MS + 1500 * 6;
    assert_eq!(header(&h, "x-ratelimit-reset-ms"), next.to_string());
}

#[tokio::test]
async fn rate_limit_over_http_with_sub_second_windows() {
    let (m, clock) = start_with_clock(true).await;
    let token = tokens(&m, F::GitHub).await.access();
    let state: Value = switches(
        &m,
        json!({ "api_rate_limit": { "limit": 1, "window_ms": 250 }, "rate_limit_status": 429 }),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        state["api_rate_limit"],
        json!({ "limit": 1, "window_ms": 250 })
    );
    assert_eq!(state["rate_limit_status"], 429);

    let (status, h, _) = identity_full(&m, F::GitHub, &token).await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&h, "x-ratelimit-reset-ms"),
        (T0_MS + 250).to_string()
    );
    assert_eq!(
        header(&h, "x-ratelimit-reset"),
        (T0_MS / 1000 + 1).to_string()
    );
    let (status, h, _) = identity_full(&m, F::GitHub, &token).await;
    assert_eq!(status, 429);
    assert_eq!(header(&h, "retry-after"), "1");
    // Refused answers of another kind carry the headers too.
    let (status, h, _) = identity_full(&m, F::GitHub, "gho_unknown").await;
    assert_eq!(status, 429);
    assert_eq!(header(&h, "x-ratelimit-remaining"), "0");
    clock.advance(chrono::Duration::milliseconds(249));
    assert_eq!(identity(&m, F::GitHub, &token).await, 429);
    clock.advance(chrono::Duration::milliseconds(1));
    let (status, h, _) = identity_full(&m, F::GitHub, "gho_unknown").await;
    assert_eq!(status, 401);
    assert_eq!(header(&h, "x-ratelimit-remaining"), "0");
    assert_eq!(header(&h, "x-ratelimit-used"), "1");

    let stats = http_stats(&m).await;
    assert_eq!(stats["rate_limited_responses"], 3);

    // A handler's own rate limit (user_api_status) keeps its headers.
    clock.advance(chrono::Duration::milliseconds(250));
    m.provider.switches().set_user_api_status(Some(403));
    let (status, h, _) = identity_full(&m, F::GitHub, &token).await;
    assert_eq!(status, 403);
    assert_eq!(header(&h, "x-ratelimit-remaining"), "0");
    m.provider.switches().set_user_api_status(None);

    for bad in [
        json!({ "api_rate_limit": { "limit": 1, "window_ms": 0 } }),
        json!({ "rate_limit_status": 500 }),
    ] {
        assert_eq!(switches(&m, bad.clone()).await.status(), 400, "{bad}");
    }
    for bad in [
        json!({ "api_rate_limit": { "limit": 1 } }),
        json!({ "api_rate_limit": { "limit": 1, "window_ms": 5, "burst": 2 } }),
    ] {
        assert_eq!(switches(&m, bad.clone()).await.status(), 422, "{bad}");
    }

    // Cleared: no limit, GitHub's usual headers again.
    switches(&m, json!({ "api_rate_limit": null })).await;
    for _ in 0..3 {
        let (status, h, _) = identity_full(&m, F::GitHub, &token).await;
        assert_eq!(status, 200);
        assert!(h.get("x-ratelimit-reset-ms").is_none());
        assert_eq!(header(&h, "x-ratelimit-limit"), "5000");
    }
}

// ---------------------------------------------------------------------------
// Changing issued tokens at run time.

async fn get_json(
    m: &RunningMock,
    f: F,
    path: &str,
    token: &str,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let r = http()
        .get(f.url(m, path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.json().await.unwrap_or(Value::Null))
}

async fn control(m: &RunningMock, path: &str, body: Value) -> Value {
    let r = http()
        .post(format!("{}/__mock/{path}", m.base_url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

/// What `f`'s API says a token's scopes are.
async fn reported_scopes(m: &RunningMock, f: F, token: &str) -> String {
    match f {
        F::GitHub | F::Cloud => {
            let (status, h, _) = get_json(m, f, f.identity_path(), token).await;
            assert_eq!(status, 200, "{f:?}");
            header(&h, "x-oauth-scopes").to_owned()
        }
        F::GitLab => {
            let (status, _, info) = get_json(m, f, "/oauth/token/info", token).await;
            assert_eq!(status, 200);
            let scopes: Vec<&str> = info["scope"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            scopes.join(", ")
        }
        F::Dc => {
            let mut held = Vec::new();
            for p in ["REPO_READ", "REPO_WRITE", "REPO_ADMIN"] {
                let (status, _, page) =
                    get_json(m, f, &format!("/rest/api/1.0/repos?permission={p}"), token).await;
                assert_eq!(status, 200);
                if page["size"] != 0 {
                    held.push(p);
                }
            }
            held.join(", ")
        }
    }
}

#[tokio::test]
async fn oauth_tokens_narrowed_expired_and_revoked_in_every_flavour() {
    let m = start().await;
    for (f, before, narrowed, after) in [
        (F::GitHub, "repo", "read:user", "read:user"),
        (
            F::GitLab,
            "read_api, write_repository",
            "read_api",
            "read_api",
        ),
        (
            F::Cloud,
            "account, team, repository:write",
            "account",
            "account",
        ),
        (F::Dc, "REPO_READ, REPO_WRITE", "REPO_READ", "REPO_READ"),
    ] {
        let first = tokens(&m, f).await;
        assert_eq!(
            reported_scopes(&m, f, &first.access()).await,
            before,
            "{f:?}"
        );
        assert!(m.provider.set_token_scopes(&first.access(), &[narrowed]));
        assert_eq!(
            reported_scopes(&m, f, &first.access()).await,
            after,
            "{f:?}"
        );
        // refreshes carry the narrowed grant on
        let second = refresh(&m, f, &first.refresh()).await;
        assert!(second.ok(), "{f:?}: {}", second.text);
        assert_eq!(
            reported_scopes(&m, f, &second.access()).await,
            after,
            "{f:?}"
        );
        // a refresh token names its grant too
        assert!(m.provider.set_token_scopes(&second.refresh(), &[]));
        let (status, _, _) = get_json(&m, f, f.identity_path(), &second.access()).await;
        let want = match f {
            // GitHub's /user and Data Center's properties need no scope
            F::GitHub | F::Dc => 200,
            F::GitLab | F::Cloud => 403,
        };
        assert_eq!(status, want, "{f:?}");

        // Expired now: the access token stops working, its refresh token not.
        let third = tokens(&m, f).await;
        assert!(m.provider.expire_token(&third.access()));
        assert_eq!(identity(&m, f, &third.access()).await, 401, "{f:?}");
        let fourth = refresh(&m, f, &third.refresh()).await;
        assert!(fourth.ok(), "{f:?}: {}", fourth.text);
        // An expired refresh token is refused.
        assert!(m.provider.expire_token(&fourth.refresh()));
        assert_refused(
            f,
            &refresh(&m, f, &fourth.refresh()).await,
            refused_error(f),
        );
        assert_eq!(identity(&m, f, &fourth.access()).await, 200, "{f:?}");

        // Revoked: the pair dies.
        let fifth = tokens(&m, f).await;
        assert!(m.provider.revoke(&fifth.access()));
        assert!(!m.provider.revoke(&fifth.access()));
        assert_eq!(identity(&m, f, &fifth.access()).await, 401, "{f:?}");
        assert_refused(f, &refresh(&m, f, &fifth.refresh()).await, refused_error(f));
    }
    // GitHub's applications API reports narrowed scopes as well.
    let t = tokens(&m, F::GitHub).await.access();
    m.provider.set_token_scopes(&t, &["read:user", "gist"]);
    let check: Value = http()
        .post(format!(
            "{}/applications/{CLIENT_ID}/token",
            m.github_api_url()
        ))
        .basic_auth(CLIENT_ID, Some(SECRET))
        .json(&json!({ "access_token": t }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(check["scopes"], json!(["read:user", "gist"]));
    for unknown in ["gho_nope", ""] {
        assert!(!m.provider.set_token_scopes(unknown, &["repo"]));
        assert!(!m.provider.expire_token(unknown));
        assert!(!m.provider.revoke(unknown));
    }
    // silent: not API revocations
    assert_eq!(m.provider.stats().revocations, 0);
}

#[tokio::test]
async fn oauth_tokens_issued_directly_in_every_flavour() {
    let (m, clock) = start_with_clock(false).await;
    let flavour = |f: F| match f {
        F::GitHub => Flavour::Github,
        F::GitLab => Flavour::Gitlab,
        F::Cloud => Flavour::BitbucketCloud,
        F::Dc => Flavour::BitbucketDataCenter,
    };
    let scopes = |f: F| -> Vec<&'static str> {
        match f {
            F::GitHub => vec!["repo"],
            F::GitLab => vec!["read_api", "write_repository"],
            F::Cloud => vec!["account", "repository:write"],
            F::Dc => vec!["REPO_WRITE"],
        }
    };
    for f in ALL {
        let token = m
            .provider
            .issue_oauth_token(flavour(f), "alice", CLIENT_ID, &scopes(f));
        assert_eq!(identity(&m, f, &token).await, 200, "{f:?}");
        assert!(!reported_scopes(&m, f, &token).await.is_empty(), "{f:?}");
        // the same over HTTP, naming the flavour
        let body = control(
            &m,
            "tokens",
            json!({ "login": "bob", "scopes": scopes(f), "flavour": flavour(f) }),
        )
        .await;
        let token = body["token"].as_str().unwrap().to_owned();
        assert_eq!(identity(&m, f, &token).await, 200, "{f:?}");
        // tokens of a realm whose tokens expire expire like the flow's
        if EXPIRING.contains(&f) {
            clock.advance(chrono::Duration::hours(3));
            assert_eq!(identity(&m, f, &token).await, 401, "{f:?}");
            clock.advance(-chrono::Duration::hours(3));
        }
    }
    // without a flavour, GitHub as before
    let body = control(
        &m,
        "tokens",
        json!({ "login": "alice", "scopes": ["repo"] }),
    )
    .await;
    assert!(body["token"].as_str().unwrap().starts_with("gho_"));
}

#[tokio::test]
async fn oauth_token_changes_over_http() {
    let (m, _) = start_with_clock(true).await;
    let gl = tokens(&m, F::GitLab).await;
    let body = control(
        &m,
        "tokens/scopes",
        json!({ "token": gl.access(), "scopes": ["write_repository"] }),
    )
    .await;
    assert_eq!(body, json!({ "updated": true }));
    let (status, _, err) = get_json(&m, F::GitLab, "/api/v4/user", &gl.access()).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (403, Some("insufficient_scope"))
    );

    let gh = tokens(&m, F::GitHub).await;
    let body = control(&m, "tokens/expire", json!({ "token": gh.access() })).await;
    assert_eq!(body, json!({ "expired": true }));
    assert_eq!(identity(&m, F::GitHub, &gh.access()).await, 401);
    assert!(refresh(&m, F::GitHub, &gh.refresh()).await.ok());

    let bb = tokens(&m, F::Cloud).await;
    let body = control(&m, "tokens/revoke", json!({ "token": bb.refresh() })).await;
    assert_eq!(body, json!({ "revoked": true }));
    assert_eq!(identity(&m, F::Cloud, &bb.access()).await, 401);
    let body = control(&m, "tokens/revoke", json!({ "token": bb.refresh() })).await;
    assert_eq!(body, json!({ "revoked": false }));
    for path in ["tokens/expire", "tokens/revoke"] {
        let body = control(&m, path, json!({ "token": "unknown" })).await;
        assert_eq!(
            body.as_object().unwrap().values().next(),
            Some(&json!(false))
        );
    }
    let body = control(
        &m,
        "tokens/scopes",
        json!({ "token": "unknown", "scopes": [] }),
    )
    .await;
    assert_eq!(body, json!({ "updated": false }));
}

#[tokio::test]
async fn personal_access_tokens_narrowed_and_expired() {
    let (m, _) = start_with_clock(true).await;
    // GitHub classic: X-OAuth-Scopes follows the change.
    let ghp = pat(&m, Flavour::Github, "classic", &["repo", "admin:repo_hook"]);
    assert_eq!(
        reported_scopes(&m, F::GitHub, &ghp).await,
        "repo, admin:repo_hook"
    );
    assert!(m.provider.set_pat_scopes(&ghp, &["repo"]));
    assert_eq!(reported_scopes(&m, F::GitHub, &ghp).await, "repo");
    let body = control(
        &m,
        "pats/scopes",
        json!({ "token": ghp, "scopes": ["read:user"] }),
    )
    .await;
    assert_eq!(body, json!({ "updated": true }));
    assert_eq!(reported_scopes(&m, F::GitHub, &ghp).await, "read:user");
    assert!(m.provider.expire_pat(&ghp));
    assert_eq!(identity(&m, F::GitHub, &ghp).await, 401);

    // GitLab: its token record shows the scopes; expired says so.
    let glpat = pat(&m, Flavour::Gitlab, "personal", &["api", "read_repository"]);
    let body = control(
        &m,
        "pats/scopes",
        json!({ "token": glpat, "scopes": ["read_api"] }),
    )
    .await;
    assert_eq!(body, json!({ "updated": true }));
    let (status, _, record) =
        get_json(&m, F::GitLab, "/api/v4/personal_access_tokens/self", &glpat).await;
    assert_eq!(status, 200);
    assert_eq!(record["scopes"], json!(["read_api"]));
    let body = control(&m, "pats/expire", json!({ "token": glpat })).await;
    assert_eq!(body, json!({ "expired": true }));
    let (status, _, err) = get_json(&m, F::GitLab, "/api/v4/user", &glpat).await;
    assert_eq!(status, 401);
    assert!(
        err["error_description"]
            .as_str()
            .unwrap()
            .contains("expired")
    );

    // Bitbucket Cloud API token and Data Center HTTP token.
    let api_token = pat(
        &m,
        Flavour::BitbucketCloud,
        "api_token",
        &["read:user:bitbucket"],
    );
    let cloud_user = || {
        http()
            .get(F::Cloud.url(&m, "/2.0/user"))
            .basic_auth("alice@example.com", Some(&api_token))
            .send()
    };
    assert_eq!(cloud_user().await.unwrap().status(), 200);
    assert!(
        m.provider
            .set_pat_scopes(&api_token, &["read:repository:bitbucket"])
    );
    assert_eq!(cloud_user().await.unwrap().status(), 403);
    assert!(m.provider.expire_pat(&api_token));
    assert_eq!(cloud_user().await.unwrap().status(), 401);

    let bbdc = pat(
        &m,
        Flavour::BitbucketDataCenter,
        "personal",
        &["REPO_WRITE"],
    );
    assert_eq!(
        reported_scopes(&m, F::Dc, &bbdc).await,
        "REPO_READ, REPO_WRITE"
    );
    assert!(m.provider.set_pat_scopes(&bbdc, &["REPO_READ"]));
    assert_eq!(reported_scopes(&m, F::Dc, &bbdc).await, "REPO_READ");
    assert!(m.provider.expire_pat(&bbdc));
    assert_eq!(identity(&m, F::Dc, &bbdc).await, 401);

    // Revocation was there already.
    let ghp = pat(&m, Flavour::Github, "classic", &["repo"]);
    let body = control(&m, "pats/revoke", json!({ "token": ghp })).await;
    assert_eq!(body, json!({ "revoked": true }));
    assert_eq!(identity(&m, F::GitHub, &ghp).await, 401);
    assert!(!m.provider.set_pat_scopes("nope", &[]));
    assert!(!m.provider.expire_pat("nope"));
    let body = control(&m, "pats/expire", json!({ "token": "nope" })).await;
    assert_eq!(body, json!({ "expired": false }));
}
