//! Git user tokens from a GitHub App, against the mock GitHub on loopback:
//! authorizing the App (`ghu_` tokens), the refresh with rotating `ghr_`
//! refresh tokens (one refresh across two replicas on real Redis, the old
//! refresh token refused afterwards), serving narrowed to the runtime's
//! repositories (checked at the mock), "not installed" at the end of the
//! flow and on the page, temporary and permanent failures, and no token in
//! the logs or in Debug output.
#![allow(
    clippy::disallowed_methods,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code
)]

mod support;

use gitbroker::clock::ManualClock;
use secrecy::ExposeSecret;
use serde_json::Value;
use std::sync::Arc;
use support::*;

const ALICE: &str = "u-1001";
async fn fetch(url: &str, runtime: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!(
            "{url}/api/v1/runtimes/{runtime}/users/{ALICE}/token"
        ))
        .bearer_auth(credential(runtime))
        .send()
        .await
        .unwrap()
}

async fn token_of(url: &str, runtime: &str) -> String {
    let r = fetch(url, runtime).await;
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{runtime}: {v}");
    v["token"].as_str().unwrap().to_owned()
}

async fn stored(h: &Harness, runtime: &str) -> gitbroker::tokens::Grant {
    h.state
        .lifecycle
        .assigned_grant(runtime, ALICE)
        .await
        .unwrap()
        .expect("a grant is assigned")
        .0
}

/// `POST /repos/{repo}/git/blobs {}` at the mock with `token`: 422 where the
/// token reaches the repository with Contents write, 404 where it does not.
async fn blob_probe(h: &Harness, token: &str, repo: &str) -> u16 {
    reqwest::Client::new()
        .post(format!(
            "{}/api/v3/repos/{repo}/git/blobs",
            h.mock.base_url.trim_end_matches('/')
        ))
        .bearer_auth(token)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn refresh_token_works(h: &Harness, refresh: &str) -> bool {
    let r = reqwest::Client::new()
        .post(format!(
            "{}/login/oauth/access_token",
            h.mock.base_url.trim_end_matches('/')
        ))
        .header("accept", "application/json")
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", CLIENT_ID),
            ("client_secret", APP_SECRET),
        ])
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap_or_default();
    v.get("access_token").is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorizing_the_app_serves_a_token_narrowed_to_the_runtime() {
    let h = Harness::start(Backend::Embedded).await;
    with_github_app(&h).await;
    let alice = h.signed_in("alice").await;
    let page = alice.authorize("acme-app").await;
    assert!(
        page.flash()
            .contains("Access to GitHub authorized as alice for runtime acme-app."),
        "{}",
        page.flash()
    );
    let grant = stored(&h, "acme-app").await;
    let parent = grant.access_token.expose_secret().to_owned();
    assert!(parent.starts_with("ghu_"), "a GitHub App user token");
    assert!(
        grant
            .refresh_token
            .as_ref()
            .is_some_and(|r| r.expose_secret().starts_with("ghr_")),
        "with its refresh token"
    );
    assert_eq!(grant.status.state, gitbroker::tokens::State::Valid);
    assert!(
        grant.scopes.is_empty(),
        "no OAuth scopes, and none required"
    );

    // GitHub cannot narrow right now: 503, nothing changed, no token
    h.mock.provider.switches().set_user_api_status(Some(503));
    let r = fetch(&h.url, "acme-app").await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().await.unwrap();
    assert!(
        v["type"]
            .as_str()
            .unwrap()
            .ends_with("provider-unavailable"),
        "{v}"
    );
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("GitHub could not narrow the Git user token to the repositories of runtime `acme-app` right now"),
        "{v}"
    );
    h.mock.provider.switches().set_user_api_status(None);
    let after = stored(&h, "acme-app").await;
    assert_eq!(after.access_token.expose_secret(), parent, "nothing lost");
    assert_eq!(after.status.state, gitbroker::tokens::State::Valid);

    let served = token_of(&h.url, "acme-app").await;
    assert!(served.starts_with("ghu_"));
    assert_ne!(
        served, parent,
        "the runtime gets a narrowed token, never the user's own"
    );
    assert_eq!(
        h.mock.provider.github_app_token_reach(&served),
        vec!["acme/app"]
    );
    assert_eq!(
        h.mock.provider.github_app_token_reach(&parent),
        vec!["acme/app", "acme/infra"]
    );
    assert_eq!(
        blob_probe(&h, &served, "acme/app").await,
        422,
        "reaches acme/app"
    );
    assert_eq!(
        blob_probe(&h, &served, "acme/infra").await,
        404,
        "not acme/infra"
    );
    assert_eq!(blob_probe(&h, &parent, "acme/infra").await, 422);

    // the narrowed token is reused until near its expiry: one scoped call
    let issued = h.mock.provider.github_scoped_tokens_issued();
    assert_eq!(token_of(&h.url, "acme-app").await, served);
    assert_eq!(h.mock.provider.github_scoped_tokens_issued(), issued);
    assert_eq!(issued, 1);

    // a runtime that names no repositories gets the user's token as it is
    alice.authorize("acme-any").await;
    let any_parent = stored(&h, "acme-any")
        .await
        .access_token
        .expose_secret()
        .to_owned();
    assert_eq!(token_of(&h.url, "acme-any").await, any_parent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_installed_shows_the_install_link_and_is_not_served() {
    let h = Harness::start(Backend::Embedded).await;
    with_github_app(&h).await;
    h.mock.provider.set_installations(Vec::new());
    let alice = h.signed_in("alice").await;
    let page = alice.authorize("acme-app").await;
    let link = format!(
        "{}/github-apps/{SLUG}/installations/new",
        h.mock.base_url.trim_end_matches('/')
    );
    let flash = page.flash();
    assert!(
        flash.contains("authorized as alice for runtime acme-app, but the token cannot reach anything yet: the GitHub App is not installed on any account or organization you can reach"),
        "{flash}"
    );
    assert!(flash.contains(&link), "{flash}");
    assert!(
        page.body.contains("data-status=\"not_installed\""),
        "{}",
        page.body
    );
    assert!(page.body.contains("id=\"install-acme-app\""));
    assert!(page.body.contains(&format!("href=\"{link}\"")));
    assert_eq!(
        stored(&h, "acme-app").await.status.state,
        gitbroker::tokens::State::NotInstalled,
        "stored, but marked"
    );
    let r = fetch(&h.url, "acme-app").await;
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["type"]
            .as_str()
            .unwrap()
            .ends_with("user-token-not-installed"),
        "{v}"
    );
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("the user or an owner must install the GitHub App there"),
        "{v}"
    );
    // the install page the link leads to exists
    let install_page = reqwest::get(&link).await.unwrap();
    assert_eq!(install_page.status(), 200);

    // installed, but not on the runtime's repository: still not installed
    install_github_app(&h, &["acme/infra"]);
    let page = alice.get("/tokens").await;
    assert!(page.body.contains("data-status=\"not_installed\""));
    assert!(
        page.body.contains(
            "the GitHub App is not installed on acme/app (the repositories this runtime works on)"
        ),
        "{}",
        page.body
    );

    // installed there: the page's reload sees it, and the runtime is served
    install_github_app(&h, &["acme/app", "acme/infra"]);
    let page = alice.get("/tokens").await;
    assert!(page.body.contains("data-status=\"valid\""), "{}", page.body);
    assert!(!page.body.contains("id=\"install-acme-app\""));
    let served = token_of(&h.url, "acme-app").await;
    assert_eq!(
        h.mock.provider.github_app_token_reach(&served),
        vec!["acme/app"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repositories_out_of_reach_at_serve_time_are_refused_for_good() {
    let h = Harness::start(Backend::Embedded).await;
    with_github_app(&h).await;
    let alice = h.signed_in("alice").await;
    alice.authorize("acme-app").await;
    // an owner removes acme/app from the installation after the authorization
    install_github_app(&h, &["acme/infra"]);
    let r = fetch(&h.url, "acme-app").await;
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["type"]
            .as_str()
            .unwrap()
            .ends_with("user-token-not-installed"),
        "{v}"
    );
    let detail = v["detail"].as_str().unwrap();
    assert!(
        detail.contains("GitHub would not narrow the token to acme/app"),
        "{detail}"
    );
    assert!(!detail.contains("ghu_"), "no token in the answer");
    // a revoked token: the runtime is told so
    install_github_app(&h, &["acme/app"]);
    let parent = stored(&h, "acme-app").await.access_token;
    assert!(h.mock.provider.revoke(parent.expose_secret()));
    let r = fetch(&h.url, "acme-app").await;
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["type"].as_str().unwrap().ends_with("user-token-revoked"),
        "{v}"
    );
}

/// 60 concurrent fetches over two replicas on real Redis of a token about
/// to expire: one refresh at GitHub, the rotated pair stored, the old
/// refresh token refused by the mock afterwards, and every runtime served
/// a token narrowed from the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_rotating_refresh_for_concurrent_fetches_on_two_replicas() {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let h = Harness::start_with(
        Backend::Redis,
        Options {
            clock: Some(clock.clone()),
            ..Options::default()
        },
    )
    .await;
    with_github_app(&h).await;
    let (_, url2) = h.serve_replica(|t| t).await;
    let alice = h.signed_in("alice").await;
    alice.authorize("acme-app").await;
    let before = stored(&h, "acme-app").await;
    let old_refresh = before
        .refresh_token
        .clone()
        .unwrap()
        .expose_secret()
        .to_owned();
    assert!(
        before.access_expires_at.is_some(),
        "ghu_ tokens expire (8 h)"
    );
    let refreshes = h.mock.provider.traffic_stats().refresh_requests;
    clock.advance(chrono::Duration::hours(8) - chrono::Duration::seconds(1));
    let mut tasks = Vec::new();
    for i in 0..60 {
        let url = if i % 2 == 0 {
            h.url.clone()
        } else {
            url2.clone()
        };
        tasks.push(tokio::spawn(
            async move { token_of(&url, "acme-app").await },
        ));
    }
    let mut served = Vec::new();
    for t in tasks {
        served.push(t.await.unwrap());
    }
    assert_eq!(
        h.mock.provider.traffic_stats().refresh_requests - refreshes,
        1,
        "exactly one refresh at GitHub"
    );
    let after = stored(&h, "acme-app").await;
    let new_parent = after.access_token.expose_secret().to_owned();
    assert_ne!(new_parent, before.access_token.expose_secret().to_owned());
    let new_refresh = after.refresh_token.unwrap().expose_secret().to_owned();
    assert!(new_refresh.starts_with("ghr_"));
    assert_ne!(new_refresh, old_refresh, "the refresh token rotated");
    for t in &served {
        assert_ne!(*t, new_parent, "narrowed, not the user's own token");
        assert_eq!(h.mock.provider.github_app_token_reach(t), vec!["acme/app"]);
    }
    assert!(
        !refresh_token_works(&h, &old_refresh).await,
        "the old refresh token is refused after use"
    );
    assert!(
        refresh_token_works(&h, &new_refresh).await,
        "the stored one works"
    );
}

/// Through authorize, narrowing and not-installed, at debug level: neither
/// the user token, its refresh token nor the narrowed token is logged or
/// printed by Debug.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_github_app_token_in_logs_or_debug() {
    let capture = LogCapture::install("debug,cookie_store=off");
    let h = Harness::start(Backend::Embedded).await;
    with_github_app(&h).await;
    let alice = h.signed_in("alice").await;
    alice.authorize("acme-app").await;
    let served = token_of(&h.url, "acme-app").await;
    let grant = stored(&h, "acme-app").await;
    let parent = grant.access_token.expose_secret().to_owned();
    let refresh = grant
        .refresh_token
        .clone()
        .unwrap()
        .expose_secret()
        .to_owned();
    h.mock.provider.set_installations(Vec::new());
    alice.authorize("acme-any").await;
    let app = h.state.registry.app("ghapp").await.unwrap().unwrap();
    let debug = format!("{grant:?} {app:?}");
    let logs = capture.text();
    assert!(
        logs.contains("narrowed"),
        "the narrowing was logged (by fingerprint)"
    );
    for secret in [&served, &parent, &refresh, &APP_SECRET.to_owned()] {
        assert!(!logs.contains(secret.as_str()), "a secret reached the logs");
        assert!(!debug.contains(secret.as_str()), "a secret in Debug output");
    }
}

/// Figures for the choice to cache narrowed tokens (run by hand:
/// `cargo test --test github_app_user -- --ignored --nocapture`): a fetch
/// served from the cache, a fetch of a runtime that is not narrowed, and
/// one scoped-token call at the mock, each averaged over 200 runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn narrowing_cost() {
    let h = Harness::start(Backend::Embedded).await;
    with_github_app(&h).await;
    let alice = h.signed_in("alice").await;
    alice.authorize("acme-app").await;
    alice.authorize("acme-any").await;
    let parent = stored(&h, "acme-app").await.access_token;
    token_of(&h.url, "acme-app").await;
    const N: u32 = 200;
    let t = std::time::Instant::now();
    for _ in 0..N {
        token_of(&h.url, "acme-app").await;
    }
    let cached = t.elapsed() / N;
    let t = std::time::Instant::now();
    for _ in 0..N {
        token_of(&h.url, "acme-any").await;
    }
    let plain = t.elapsed() / N;
    let http = reqwest::Client::new();
    let url = format!(
        "{}/api/v3/applications/{CLIENT_ID}/token/scoped",
        h.mock.base_url.trim_end_matches('/')
    );
    let t = std::time::Instant::now();
    for _ in 0..N {
        let r = http
            .post(&url)
            .basic_auth(CLIENT_ID, Some(APP_SECRET))
            .json(&serde_json::json!({
                "access_token": parent.expose_secret(),
                "target": "acme",
                "repositories": ["app"],
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let scoped = t.elapsed() / N;
    println!(
        "fetch, narrowed token from the cache: {cached:?}; fetch, not narrowed: {plain:?}; one scoped-token call at the mock on loopback: {scoped:?}; scoped calls made by the broker: {}",
        h.state.lifecycle.narrow_calls()
    );
    assert_eq!(h.state.lifecycle.narrow_calls(), 1);
}

/// The admin API takes a GitHub App (`kind`, `app_slug`, no scopes) and a
/// runtime's `repositories`, with the same checks as the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_takes_github_apps_and_runtime_repositories() {
    let h = Harness::start(Backend::Embedded).await;
    let base = h.mock.base_url.trim_end_matches('/').to_owned();
    let app = |extra: Value| {
        let mut body = serde_json::json!({
            "id": "ghapp2", "provider": "github", "base_url": base,
            "client_id": "ghapp2-client", "client_secret": "ghapp2-secret",
            "kind": "github_app", "app_slug": "second-app",
        });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let post = |path: &'static str, body: Value| {
        h.admin_request(reqwest::Method::POST, path)
            .json(&body)
            .send()
    };
    let problem = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap();
        (status, v["detail"].as_str().unwrap_or_default().to_owned())
    };
    let (s, d) = problem(
        post("/oauth-apps", app(serde_json::json!({"scopes": ["repo"]})))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, d.as_str()),
        (
            422,
            "scopes: must be empty (or omitted) for a GitHub App: its user tokens carry the App's permissions, not OAuth scopes"
        )
    );
    let (s, d) = problem(
        post("/oauth-apps", app(serde_json::json!({"app_slug": null})))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 422);
    assert!(
        d.starts_with("app_slug: is required for a GitHub App"),
        "{d}"
    );
    let (s, d) = problem(
        post(
            "/oauth-apps",
            app(serde_json::json!({"provider": "gitlab", "base_url": format!("{base}/gitlab")})),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(s, 422);
    assert!(
        d.starts_with("kind: `github_app` is for provider github or github_enterprise"),
        "{d}"
    );

    let r = post("/oauth-apps", app(serde_json::json!({})))
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["kind"], "github_app");
    assert_eq!(v["app_slug"], "second-app");
    assert_eq!(v["scopes"], serde_json::json!([]));

    let runtime = |repos: Value| {
        serde_json::json!({
            "id": "ghapp-rt", "account": "acme", "git_host": "github.com", "oauth_app": "ghapp2",
            "repositories": repos,
            "git_token": {"token": h.github_pat("dave", &["repo", "admin:repo_hook"])},
        })
    };
    let (s, d) = problem(
        post(
            "/runtimes",
            runtime(serde_json::json!(["acme/app", "globex/site"])),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(s, 422);
    assert!(
        d.starts_with(
            "repositories: a GitHub App user token is narrowed to the repositories of one owner"
        ),
        "{d}"
    );
    let (s, d) = problem(
        post("/runtimes", runtime(serde_json::json!(["acme"])))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 422);
    assert!(
        d.contains("`acme` is not a repository written owner/name"),
        "{d}"
    );
    let r = post(
        "/runtimes",
        runtime(serde_json::json!(["acme/app", "acme/infra"])),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["repositories"],
        serde_json::json!(["acme/app", "acme/infra"])
    );
    let rt = h.state.registry.runtime("ghapp-rt").await.unwrap().unwrap();
    assert_eq!(rt.repositories, ["acme/app", "acme/infra"]);

    // a GitHub App that issued stored tokens cannot become an OAuth app
    with_github_app(&h).await;
    h.signed_in("alice").await.authorize("acme-app").await;
    let r = h
        .admin_request(reqwest::Method::PUT, "/oauth-apps/ghapp")
        .json(&serde_json::json!({
            "id": "ghapp", "provider": "github", "base_url": base,
            "client_id": CLIENT_ID, "kind": "oauth_app", "scopes": ["repo"],
        }))
        .send()
        .await
        .unwrap();
    let (s, d) = problem(r).await;
    assert_eq!(s, 409);
    assert!(
        d.contains("issued 1 stored tokens as kind `github_app`; create a new OAuth app of kind `oauth_app` instead"),
        "{d}"
    );
}

/// The background check of a GitHub App user token asks where the App is
/// installed: removed from the runtime's repository, the token becomes
/// `not_installed` and is no longer served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_checks_see_the_app_removed() {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let h = Harness::start_with(
        Backend::Embedded,
        Options {
            clock: Some(clock.clone()),
            ..Options::default()
        },
    )
    .await;
    with_github_app(&h).await;
    h.signed_in("alice").await.authorize("acme-app").await;
    token_of(&h.url, "acme-app").await;
    install_github_app(&h, &["acme/infra"]);
    clock.advance(chrono::Duration::hours(5));
    assert!(h.state.lifecycle.run_due().await.checked >= 1);
    let g = stored(&h, "acme-app").await;
    assert_eq!(g.status.state, gitbroker::tokens::State::NotInstalled);
    let reason = g.status.reason.unwrap();
    assert!(
        reason.contains("the GitHub App is not installed on acme/app")
            && reason.contains(&format!("/github-apps/{SLUG}/installations/new")),
        "{reason}"
    );
    let r = fetch(&h.url, "acme-app").await;
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["type"]
            .as_str()
            .unwrap()
            .ends_with("user-token-not-installed"),
        "{v}"
    );
}

/// GitHub's API down while the flow ends: the token is kept (the code is
/// spent), with the status `unknown` and a reason, and served once GitHub
/// answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installations_unreachable_at_the_end_of_the_flow_loses_nothing() {
    let h = Harness::start(Backend::Embedded).await;
    with_github_app(&h).await;
    let alice = h.signed_in("alice").await;
    let consent = alice.start_authorize("acme-app").await;
    h.mock.provider.switches().set_user_api_status(Some(502));
    let back = alice.provider_decision(&consent, "approve").await;
    let page = alice.follow(back).await;
    assert!(
        page.flash().contains("Access to GitHub authorized"),
        "{}",
        page.flash()
    );
    let g = stored(&h, "acme-app").await;
    assert_eq!(g.status.state, gitbroker::tokens::State::Unknown);
    assert!(
        g.status
            .reason
            .as_deref()
            .unwrap_or_default()
            .starts_with("could not check where the GitHub App is installed yet"),
        "{:?}",
        g.status.reason
    );
    h.mock.provider.switches().set_user_api_status(None);
    let served = token_of(&h.url, "acme-app").await;
    assert_eq!(
        h.mock.provider.github_app_token_reach(&served),
        vec!["acme/app"]
    );
}

/// 40 concurrent first fetches split over two replicas: each replica asks
/// GitHub to narrow once (single-flight, then the cache), and every answer
/// reaches only the runtime's repository.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_fetches_narrow_once_per_replica() {
    let h = Harness::start(Backend::Embedded).await;
    with_github_app(&h).await;
    let (replica, url2) = h.serve_replica(|t| t).await;
    h.signed_in("alice").await.authorize("acme-app").await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let url = if i % 2 == 0 {
            h.url.clone()
        } else {
            url2.clone()
        };
        tasks.push(tokio::spawn(
            async move { token_of(&url, "acme-app").await },
        ));
    }
    let mut served = std::collections::BTreeSet::new();
    for t in tasks {
        served.insert(t.await.unwrap());
    }
    assert_eq!(
        h.state.lifecycle.narrow_calls(),
        1,
        "one call on the first replica"
    );
    assert_eq!(
        replica.lifecycle.narrow_calls(),
        1,
        "one call on the second"
    );
    assert_eq!(h.mock.provider.github_scoped_tokens_issued(), 2);
    assert_eq!(served.len(), 2, "one narrowed token per replica");
    for t in &served {
        assert_eq!(h.mock.provider.github_app_token_reach(t), vec!["acme/app"]);
    }
}
