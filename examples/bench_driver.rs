//! The benchmark's helpers, run by `scripts/bench.sh` around the real
//! `gitbroker serve` binary (not in-process, so logging, the server and the
//! store are the production ones):
//!
//! - `mock LISTEN CONFIG PEER_CALLBACK USERS`: the mock provider and mock
//!   identity provider for the bench configuration, with USERS extra people
//!   `bench-0…` (account `acme`), and an OAuth app `peer-client` whose
//!   callback is PEER_CALLBACK (the Node peer's);
//! - `seed CONFIG RUNTIMES PREFIX COUNT`: stores COUNT OAuth tokens, for
//!   users PREFIX0…, on each runtime of the comma-separated RUNTIMES,
//!   through the lifecycle as the OAuth callback stores them (run before the
//!   broker starts: the embedded store is one process's);
//! - `seed-page CONFIG SUB RUNTIMES GRANTS`: gives user SUB a token on
//!   each runtime of RUNTIMES from GRANTS authorizations, the others using
//!   them again as the page's "use my existing authorization" does (a user
//!   under GitHub's cap of ten tokens per app);
//! - `session URL USERNAME`: signs in through the mock identity provider
//!   and prints the session's `Cookie` header;
//! - `flow gitbroker|peer URL USERS SECS`: USERS clients, each signed in
//!   once, run whole OAuth flows (page → start → provider → callback →
//!   code exchange → stored → page) for SECS seconds; prints flows/s and
//!   the flows' p50/p90/p99.
#![allow(
    clippy::disallowed_methods,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code
)]

#[path = "../tests/support/mod.rs"]
mod support;

use gitbroker::mock::{MockConfig, MockIdpClient, MockIdpUser, MockOAuthApp, MockProvider};
use secrecy::ExposeSecret;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::Browser;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a = |i: usize| args.get(i).cloned().unwrap_or_default();
    match a(0).as_str() {
        "mock" => mock(&a(1), &a(2), &a(3), a(4).parse().unwrap_or(32)).await,
        "seed" => seed(&a(1), &a(2), &a(3), a(4).parse().unwrap()).await,
        "seed-page" => seed_page(&a(1), &a(2), &a(3), a(4).parse().unwrap()).await,
        "session" => session(&a(1), &a(2)).await,
        "flow" => flow(&a(1), &a(2), a(3).parse().unwrap(), a(4).parse().unwrap()).await,
        other => panic!("unknown command `{other}`: mock, seed, session or flow"),
    }
}

async fn mock(listen: &str, config: &str, peer_callback: &str, users: usize) {
    let settings = gitbroker::config::Settings::load(std::path::Path::new(config)).unwrap();
    let mut c = MockConfig::demo();
    for app in &settings.oauth_apps {
        c.oauth_apps.push(MockOAuthApp {
            name: app.name.clone(),
            client_id: app.client_id.clone(),
            client_secret: app.client_secret.expose_secret().to_owned(),
            callback_url: settings
                .public_url
                .join(&format!("/oauth/callback/{}", app.id))
                .unwrap()
                .to_string(),
        });
    }
    c.oauth_apps.push(MockOAuthApp {
        name: "grant peer".into(),
        client_id: "peer-client".into(),
        client_secret: "peer-client-secret".into(),
        callback_url: peer_callback.to_owned(),
    });
    c.idp_clients.push(MockIdpClient {
        client_id: settings.oidc.client_id.clone(),
        client_secret: settings.oidc.client_secret.expose_secret().to_owned(),
        redirect_uris: vec![
            settings
                .public_url
                .join("/auth/callback")
                .unwrap()
                .to_string(),
        ],
    });
    for i in 0..users {
        c.idp_users.push(MockIdpUser {
            sub: format!("sub-bench-{i}"),
            username: format!("bench-{i}"),
            name: format!("Bench {i}"),
            email: format!("bench-{i}@example.com"),
            groups: vec!["acme-devs".into()],
        });
    }
    let running = MockProvider::start(c, listen.parse().unwrap())
        .await
        .unwrap();
    eprintln!("mock provider on {}", running.base_url);
    std::future::pending::<()>().await;
}

async fn seed(config: &str, runtimes: &str, prefix: &str, count: usize) {
    let settings = gitbroker::config::Settings::load(std::path::Path::new(config)).unwrap();
    let clock: Arc<dyn gitbroker::clock::Clock> = Arc::new(gitbroker::clock::SystemClock);
    let store = gitbroker::app::open_store(&settings, clock.clone())
        .await
        .unwrap();
    let state = gitbroker::app::build(settings, store, clock).await.unwrap();
    let app = Arc::new(state.registry.app("github-app").await.unwrap().unwrap());
    let started = Instant::now();
    for runtime in runtimes.split(',') {
        let rt = state.registry.runtime(runtime).await.unwrap().unwrap();
        let gate = Arc::new(tokio::sync::Semaphore::new(32));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..count {
            let permit = gate.clone().acquire_owned().await.unwrap();
            let (state, app, rt) = (state.clone(), app.clone(), rt.clone());
            let sub = format!("{prefix}{i}");
            tasks.spawn(async move {
                let mut user = support::Harness::acme_user(&sub);
                user.iss = "bench".into();
                state
                    .lifecycle
                    .assign_oauth(
                        &user,
                        &rt.id,
                        &rt.incarnation,
                        &app,
                        gitbroker::tokens::OAuthTokens {
                            issued: gitbroker::providers::token_endpoint::IssuedTokens {
                                access_token: secrecy::SecretString::from(format!(
                                    "gho_bench{i:031}"
                                )),
                                refresh_token: None,
                                scopes: None,
                                expires_at: None,
                            },
                            scopes: vec!["repo".into()],
                            login: "alice".into(),
                        },
                    )
                    .await
                    .unwrap();
                drop(permit);
            });
            while tasks.try_join_next().is_some() {}
        }
        while tasks.join_next().await.is_some() {}
    }
    eprintln!(
        "seeded {count} tokens on {runtimes} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

async fn seed_page(config: &str, sub: &str, runtimes: &str, grants: usize) {
    let settings = gitbroker::config::Settings::load(std::path::Path::new(config)).unwrap();
    let clock: Arc<dyn gitbroker::clock::Clock> = Arc::new(gitbroker::clock::SystemClock);
    let store = gitbroker::app::open_store(&settings, clock.clone())
        .await
        .unwrap();
    let state = gitbroker::app::build(settings, store, clock).await.unwrap();
    let app = state.registry.app("github-app").await.unwrap().unwrap();
    let mut user = support::Harness::acme_user(sub);
    user.iss = "bench".into();
    let runtimes: Vec<&str> = runtimes.split(',').collect();
    for (i, id) in runtimes.iter().take(grants).enumerate() {
        let rt = state.registry.runtime(id).await.unwrap().unwrap();
        state
            .lifecycle
            .assign_oauth(
                &user,
                &rt.id,
                &rt.incarnation,
                &app,
                gitbroker::tokens::OAuthTokens {
                    issued: gitbroker::providers::token_endpoint::IssuedTokens {
                        access_token: secrecy::SecretString::from(format!("gho_page{i:032}")),
                        refresh_token: None,
                        scopes: None,
                        expires_at: None,
                    },
                    scopes: vec!["repo".into()],
                    login: "alice".into(),
                },
            )
            .await
            .unwrap();
    }
    let mut grant_of = std::collections::HashMap::new();
    for (_, views) in state.lifecycle.user_runtimes(&user).await.unwrap() {
        for v in views {
            if let gitbroker::tokens::TokenSlot::Present(t) = v.token {
                grant_of.insert(v.runtime.id, t.grant_id);
            }
        }
    }
    for (i, id) in runtimes.iter().enumerate().skip(grants) {
        let grant = &grant_of[runtimes[i % grants]];
        state.lifecycle.reuse_grant(&user, id, grant).await.unwrap();
    }
}

async fn session(url: &str, username: &str) {
    let b = Browser::new(url);
    b.sign_in(username).await;
    let cookies: Vec<String> = b
        .cookies(url)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    println!("{}", cookies.join("; "));
}

/// One whole flow; the final page must be the token page (gitbroker) or
/// the peer's page, answered 200.
async fn one_flow(kind: &str, b: &Browser) -> bool {
    match kind {
        "gitbroker" => {
            let page = b.get("/tokens").await;
            if page.status != 200 {
                return false;
            }
            let started = b.submit_action(&page, "/tokens/acme-prod/authorize").await;
            let end = b.follow(started).await;
            end.status == 200 && end.url.ends_with("/tokens")
        }
        _ => {
            let page = b.get("/page").await;
            if page.status != 200 {
                return false;
            }
            let end = b.follow(b.get("/connect/github").await).await;
            end.status == 200 && end.body.contains("token stored")
        }
    }
}

async fn flow(kind: &str, url: &str, users: usize, secs: u64) {
    let mut browsers = Vec::new();
    for i in 0..users {
        let b = Browser::new(url);
        if kind == "gitbroker" {
            b.sign_in(&format!("bench-{i}")).await;
        } else {
            assert_eq!(b.get(&format!("/login?user=bench-{i}")).await.status, 200);
        }
        browsers.push(b);
    }
    // one warm-up flow each, then the measured window
    for b in &browsers {
        assert!(one_flow(kind, b).await, "{kind}: a warm-up flow failed");
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for b in browsers {
        let kind = kind.to_owned();
        tasks.spawn(async move {
            let mut lat = Vec::new();
            let mut failed = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                if one_flow(&kind, &b).await {
                    lat.push(t.elapsed());
                } else {
                    failed += 1;
                }
            }
            (lat, failed)
        });
    }
    let mut all = Vec::new();
    let mut failed = 0;
    while let Some(r) = tasks.join_next().await {
        let (l, f) = r.unwrap();
        all.extend(l);
        failed += f;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "flows={} failed={failed} secs={elapsed:.1} flows_per_s={:.0} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2}",
        all.len(),
        all.len() as f64 / elapsed,
        pct(0.50),
        pct(0.90),
        pct(0.99)
    );
}
