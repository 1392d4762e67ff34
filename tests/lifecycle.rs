//! The token lifecycle against the mock provider on real loopback ports:
//! refresh (one per grant across replicas, never lost), its failures, the
//! admin's lifetime cap, one grant for several runtimes, and runtimes that
//! change while a token is being added.
#![allow(
    clippy::disallowed_methods,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code
)]

mod support;

use gitbroker::clock::{Clock, ManualClock};
use secrecy::ExposeSecret;
use serde_json::Value;
use std::sync::Arc;
use support::*;

const ALICE: &str = "u-1001";

/// A broker on a manual clock (the mock keeps real time), GitHub's
/// expiring tokens on, with `lifecycle` extra settings.
async fn start(
    backend: Backend,
    lifetime: Option<u64>,
    lifecycle: &str,
) -> (Harness, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let h = Harness::start_with(
        backend,
        Options {
            clock: Some(clock.clone()),
            expiring_tokens: true,
            token_lifetime_secs: lifetime,
            lifecycle: lifecycle.to_owned(),
            ..Options::default()
        },
    )
    .await;
    (h, clock)
}

/// A runtime on github.com through the harness's GitHub OAuth app.
fn github_runtime(id: &str, account: &str) -> gitbroker::registry::RuntimeInput {
    gitbroker::registry::RuntimeInput {
        id: id.into(),
        account: account.into(),
        git_host: "github.com".into(),
        oauth_app: Some("github-app".into()),
        provider: None,
        base_url: None,
        github_app: None,
        repositories: Vec::new(),
        rotate_runtime_token: false,
    }
}

async fn fetch(url: &str, runtime: &str, user: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!(
            "{url}/api/v1/runtimes/{runtime}/users/{user}/token"
        ))
        .bearer_auth(credential(runtime))
        .send()
        .await
        .unwrap()
}

async fn token_of(url: &str, runtime: &str, user: &str) -> String {
    let r = fetch(url, runtime, user).await;
    assert_eq!(r.status(), 200, "{runtime}/{user}");
    let v: Value = r.json().await.unwrap();
    v["token"].as_str().unwrap().to_owned()
}

async fn stored(h: &Harness, runtime: &str, user: &str) -> gitbroker::tokens::Grant {
    h.state
        .lifecycle
        .assigned_grant(runtime, user)
        .await
        .unwrap()
        .expect("a grant is assigned")
        .0
}

fn refreshes(h: &Harness) -> u64 {
    h.mock.provider.traffic_stats().refresh_requests
}

/// Uses a refresh token at the mock directly: does it still work?
async fn refresh_token_works(h: &Harness, runtime: &str, refresh: &str) -> bool {
    let base = h.mock.base_url.trim_end_matches('/').to_owned();
    let (url, id, secret) = match runtime {
        "gitlab-rt" => (
            format!("{base}/gitlab/oauth/token"),
            "gitlab-test-client-id",
            GITLAB_APP_SECRET,
        ),
        _ => (
            format!("{base}/login/oauth/access_token"),
            "test-client-id",
            APP_SECRET,
        ),
    };
    let r = reqwest::Client::new()
        .post(url)
        .header("accept", "application/json")
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", id),
            ("client_secret", secret),
        ])
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap_or_default();
    v.get("access_token").is_some()
}

/// Access-token lifetimes of the mock's realms.
fn lifetime_of(runtime: &str) -> chrono::Duration {
    match runtime {
        "gitlab-rt" => chrono::Duration::hours(2),
        _ => chrono::Duration::hours(8),
    }
}

/// 100 concurrent fetches, split over two replicas on one store, of a token
/// one second before it expires: exactly one refresh at the provider, every
/// answer carries the new token, and the stored refresh token is the newest.
async fn one_refresh_for_a_hundred_fetches(backend: Backend, runtime: &str) {
    let (h, clock) = start(backend, None, "").await;
    let (_, url2) = h.serve_replica(|t| t).await;
    let alice = h.signed_in("alice").await;
    alice.authorize(runtime).await;
    let first = token_of(&h.url, runtime, ALICE).await;
    let before = stored(&h, runtime, ALICE).await;
    assert!(before.refresh_token.is_some());
    clock.advance(lifetime_of(runtime) - chrono::Duration::seconds(1));
    let mut tasks = Vec::new();
    for i in 0..100 {
        let url = if i % 2 == 0 {
            h.url.clone()
        } else {
            url2.clone()
        };
        let rt = runtime.to_owned();
        tasks.push(tokio::spawn(
            async move { token_of(&url, &rt, ALICE).await },
        ));
    }
    let mut tokens = Vec::new();
    for t in tasks {
        tokens.push(t.await.unwrap());
    }
    assert_eq!(refreshes(&h), 1, "exactly one refresh at the provider");
    let after = stored(&h, runtime, ALICE).await;
    let newest = after.access_token.expose_secret().to_owned();
    assert_ne!(newest, first);
    assert!(
        tokens.iter().all(|t| *t == newest),
        "every answer carries the new token"
    );
    let refresh = after.refresh_token.unwrap().expose_secret().to_owned();
    assert_ne!(
        refresh,
        before.refresh_token.unwrap().expose_secret().to_owned(),
        "rotated"
    );
    assert!(after.access_expires_at.unwrap() > clock.now() + chrono::Duration::hours(1));
    assert!(
        refresh_token_works(&h, runtime, &refresh).await,
        "the stored refresh token is the newest and works"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_refresh_for_a_hundred_fetches_redis_gitlab() {
    one_refresh_for_a_hundred_fetches(Backend::Redis, "gitlab-rt").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_refresh_for_a_hundred_fetches_redis_github() {
    one_refresh_for_a_hundred_fetches(Backend::Redis, "acme-prod").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_refresh_for_a_hundred_fetches_embedded() {
    one_refresh_for_a_hundred_fetches(Backend::Embedded, "gitlab-rt").await;
}

/// The runtime gives up while the refresh is at the provider: the rotated
/// pair is stored anyway, and the next fetch needs no second refresh.
async fn client_disconnect_keeps_the_refresh(backend: Backend) {
    let (h, clock) = start(backend, None, "").await;
    let alice = h.signed_in("alice").await;
    alice.authorize("gitlab-rt").await;
    let first = token_of(&h.url, "gitlab-rt", ALICE).await;
    clock.advance(lifetime_of("gitlab-rt") - chrono::Duration::seconds(30));
    h.mock.provider.switches().set_refresh_hang(true);
    let impatient = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(300))
        .build()
        .unwrap();
    let gave_up = impatient
        .get(format!(
            "{}/api/v1/runtimes/gitlab-rt/users/{ALICE}/token",
            h.url
        ))
        .bearer_auth(credential("gitlab-rt"))
        .send()
        .await;
    assert!(gave_up.is_err(), "the client timed out");
    h.mock
        .provider
        .wait_until(|_, t| t.refresh_successes == 1)
        .await;
    h.mock.provider.switches().set_refresh_hang(false);
    let now = token_of(&h.url, "gitlab-rt", ALICE).await;
    assert_ne!(now, first);
    assert_eq!(
        refreshes(&h),
        1,
        "the disconnected refresh was stored, not repeated"
    );
    let g = stored(&h, "gitlab-rt", ALICE).await;
    assert_eq!(g.access_token.expose_secret(), now);
    assert!(refresh_token_works(&h, "gitlab-rt", g.refresh_token.unwrap().expose_secret()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_disconnect_keeps_the_refresh_redis() {
    client_disconnect_keeps_the_refresh(Backend::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_disconnect_keeps_the_refresh_embedded() {
    client_disconnect_keeps_the_refresh(Backend::Embedded).await;
}

/// Our refresh is refused (`invalid_grant`) because another worker rotated
/// the pair first: its result is used, and the token is not marked as
/// needing re-authorization.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_grant_after_another_worker_won_is_not_a_verdict() {
    let (h, clock) = start(Backend::Redis, None, "").await;
    let alice = h.signed_in("alice").await;
    alice.authorize("gitlab-rt").await;
    let g = stored(&h, "gitlab-rt", ALICE).await;
    let old_refresh = g.refresh_token.clone().unwrap().expose_secret().to_owned();
    // the "other worker" rotates at the provider…
    let base = h.mock.base_url.trim_end_matches('/').to_owned();
    let won: Value = reqwest::Client::new()
        .post(format!("{base}/gitlab/oauth/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", old_refresh.as_str()),
            ("client_id", "gitlab-test-client-id"),
            ("client_secret", GITLAB_APP_SECRET),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let winner = won["access_token"].as_str().unwrap().to_owned();
    // …and stores its result only while our refresh is at the provider
    clock.advance(lifetime_of("gitlab-rt") - chrono::Duration::seconds(30));
    h.mock.provider.switches().set_token_hang(true);
    let url = h.url.clone();
    let fetching = tokio::spawn(async move { fetch(&url, "gitlab-rt", ALICE).await });
    h.mock
        .provider
        .wait_until(|_, t| t.refresh_requests == 2)
        .await;
    let mut theirs = g.clone();
    theirs.access_token = secrecy::SecretString::from(winner.clone());
    theirs.refresh_token = Some(secrecy::SecretString::from(
        won["refresh_token"].as_str().unwrap().to_owned(),
    ));
    theirs.access_expires_at = Some(clock.now() + chrono::Duration::hours(2));
    h.state
        .lifecycle
        .grants()
        .put(&theirs, gitbroker::store::Expect::Any)
        .await
        .unwrap();
    h.mock.provider.switches().set_token_hang(false);
    let r = fetching.await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["token"], winner.as_str(), "the winner's token is served");
    let g = stored(&h, "gitlab-rt", ALICE).await;
    assert_ne!(
        g.status.state,
        gitbroker::tokens::State::NeedsReauthorization
    );
}

/// `invalid_grant` with nobody else refreshing: the user must authorize again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_refresh_needs_reauthorization() {
    let (h, clock) = start(Backend::Embedded, None, "").await;
    let alice = h.signed_in("alice").await;
    alice.authorize("gitlab-rt").await;
    clock.advance(lifetime_of("gitlab-rt") - chrono::Duration::seconds(30));
    h.mock
        .provider
        .switches()
        .set_refresh_error(Some("invalid_grant"));
    let r = fetch(&h.url, "gitlab-rt", ALICE).await;
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["type"], "urn:gitbroker:problem:user-token-reauthorize",
        "{v}"
    );
    assert!(
        v["detail"].as_str().unwrap().contains("invalid_grant"),
        "{v}"
    );
    let page = alice.get("/tokens").await;
    assert!(
        page.body.contains("data-status=\"needs_reauthorization\""),
        "{}",
        page.body
    );
    // no second attempt with a refresh token the provider refused
    h.mock.provider.switches().set_refresh_error(None);
    assert_eq!(fetch(&h.url, "gitlab-rt", ALICE).await.status(), 404);
    assert_eq!(refreshes(&h), 1);
}

/// The provider is down during a refresh: a token that is still valid is
/// served; an expired one gets 503 with `Retry-After`; nothing is marked
/// invalid and the refresh token is kept; once the provider is back (and the
/// cooldown over) the refresh succeeds.
async fn provider_down_during_refresh(backend: Backend) {
    let (h, clock) = start(backend, None, "refresh_cooldown_secs = 20\n").await;
    let alice = h.signed_in("alice").await;
    alice.authorize("gitlab-rt").await;
    let first = token_of(&h.url, "gitlab-rt", ALICE).await;
    let kept = stored(&h, "gitlab-rt", ALICE)
        .await
        .refresh_token
        .unwrap()
        .expose_secret()
        .to_owned();
    h.mock.provider.switches().set_refresh_status(Some(503));
    // five minutes left: served as is
    clock.advance(lifetime_of("gitlab-rt") - chrono::Duration::minutes(5));
    assert_eq!(token_of(&h.url, "gitlab-rt", ALICE).await, first);
    assert_eq!(refreshes(&h), 1);
    // in the cooldown nobody hammers the provider
    assert_eq!(token_of(&h.url, "gitlab-rt", ALICE).await, first);
    assert_eq!(refreshes(&h), 1, "cooldown");
    // expired: 503 with Retry-After
    clock.advance(chrono::Duration::minutes(6));
    let r = fetch(&h.url, "gitlab-rt", ALICE).await;
    assert_eq!(r.status(), 503);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=40).contains(&retry), "{retry}");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "urn:gitbroker:problem:provider-unavailable");
    let g = stored(&h, "gitlab-rt", ALICE).await;
    assert!(
        g.status.state.servable(),
        "not marked invalid: {:?}",
        g.status
    );
    assert_eq!(
        g.refresh_token.unwrap().expose_secret(),
        kept,
        "no refresh token lost"
    );
    // back up, cooldown over: refreshed
    h.mock.provider.switches().set_refresh_status(None);
    clock.advance(chrono::Duration::minutes(2));
    let now = token_of(&h.url, "gitlab-rt", ALICE).await;
    assert_ne!(now, first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_down_during_refresh_redis() {
    provider_down_during_refresh(Backend::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_down_during_refresh_embedded() {
    provider_down_during_refresh(Backend::Embedded).await;
}

/// The admin's `token_lifetime_secs` caps the authorization: refreshes
/// happen inside it, never past it, and after it the user must authorize.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_lifetime_caps_refreshes() {
    // GitHub's expiring tokens live 8 h; the admin allows 20 h
    let (h, clock) = start(Backend::Embedded, Some(20 * 3600), "").await;
    let alice = h.signed_in("alice").await;
    alice.authorize("acme-prod").await;
    let cap = stored(&h, "acme-prod", ALICE).await.cap_at.unwrap();
    // two refreshes fit
    clock.advance(chrono::Duration::hours(8) - chrono::Duration::seconds(1));
    token_of(&h.url, "acme-prod", ALICE).await;
    assert_eq!(refreshes(&h), 1);
    clock.advance(chrono::Duration::hours(8));
    let r = fetch(&h.url, "acme-prod", ALICE).await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(refreshes(&h), 2);
    // the served expiry is the cap, not the provider's 8 h
    let served: chrono::DateTime<chrono::Utc> = v["expires_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(served, cap);
    // within the margin of the cap a refresh would not help: none is made
    clock.set(cap - chrono::Duration::minutes(5));
    assert_eq!(fetch(&h.url, "acme-prod", ALICE).await.status(), 200);
    assert_eq!(refreshes(&h), 2);
    clock.set(cap + chrono::Duration::seconds(1));
    let r = fetch(&h.url, "acme-prod", ALICE).await;
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "urn:gitbroker:problem:user-token-expired");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("lifetime the admin set"),
        "{v}"
    );
    assert_eq!(refreshes(&h), 2, "no refresh past the admin's lifetime");
}

/// One grant for two runtimes: reusing mints no token, deleting one
/// runtime's token keeps the other working, deleting the last revokes.
async fn one_grant_two_runtimes(backend: Backend) {
    let h = Harness::start(backend).await;
    let alice = h.signed_in("alice").await;
    alice.authorize("acme-prod").await;
    let token = token_of(&h.url, "acme-prod", ALICE).await;
    let minted = h.mock.provider.stats().token_requests;
    let page = alice.get("/tokens").await;
    assert!(
        page.body
            .contains("Use my existing authorization as alice (used by acme-prod)"),
        "{}",
        page.body
    );
    let reused = alice
        .submit_action(&page, "/tokens/acme-staging/reuse")
        .await;
    let page = alice.follow(reused).await;
    assert!(
        page.flash().contains(
            "Your existing GitHub authorization as alice is now also used for runtime acme-staging."
        ),
        "{}",
        page.flash()
    );
    assert_eq!(
        token_of(&h.url, "acme-staging", ALICE).await,
        token,
        "the same grant"
    );
    assert_eq!(
        h.mock.provider.stats().token_requests,
        minted,
        "no new provider token"
    );
    assert!(page.body.contains("Also used by"), "{}", page.body);
    // deleting one assignment keeps the other and revokes nothing
    let gone = alice.submit_action(&page, "/tokens/acme-prod/delete").await;
    let page = alice.follow(gone).await;
    assert!(
        page.flash()
            .contains("stays in use for acme-staging, so it was not revoked"),
        "{}",
        page.flash()
    );
    assert_eq!(fetch(&h.url, "acme-prod", ALICE).await.status(), 404);
    assert_eq!(token_of(&h.url, "acme-staging", ALICE).await, token);
    assert_eq!(h.mock.provider.stats().revocations, 0);
    // deleting the last revokes the single token (never the whole grant)
    let gone = alice
        .submit_action(&page, "/tokens/acme-staging/delete")
        .await;
    let page = alice.follow(gone).await;
    assert!(
        page.flash().contains("It was revoked at the provider."),
        "{}",
        page.flash()
    );
    assert_eq!(h.mock.provider.stats().revocations, 1);
    assert_eq!(fetch(&h.url, "acme-staging", ALICE).await.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_grant_two_runtimes_redis() {
    one_grant_two_runtimes(Backend::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_grant_two_runtimes_embedded() {
    one_grant_two_runtimes(Backend::Embedded).await;
}

/// Refresh updates the grant once for every runtime it is assigned to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_serves_every_runtime_of_the_grant() {
    let (h, clock) = start(Backend::Redis, None, "").await;
    let alice = h.signed_in("alice").await;
    alice.authorize("acme-prod").await;
    let g = stored(&h, "acme-prod", ALICE).await;
    let me = Harness::acme_user(ALICE);
    h.state
        .lifecycle
        .reuse_grant(&me, "acme-staging", &g.id)
        .await
        .unwrap();
    clock.advance(chrono::Duration::hours(8) - chrono::Duration::seconds(1));
    let a = token_of(&h.url, "acme-prod", ALICE).await;
    let b = token_of(&h.url, "acme-staging", ALICE).await;
    assert_eq!(a, b);
    assert_ne!(a, g.access_token.expose_secret());
    assert_eq!(refreshes(&h), 1);
}

/// Registers `tmp-rt` in `account` through the admin API, with a Git
/// Runtime token.
fn register_tmp_rt(h: &Harness, account: &str, runtime_token: &str) -> reqwest::RequestBuilder {
    h.admin_request(reqwest::Method::POST, "/runtimes")
        .json(&serde_json::json!({
            "id": "tmp-rt",
            "account": account,
            "git_host": "github.com",
            "oauth_app": "github-app",
            "git_token": { "token": runtime_token },
        }))
}

/// The reported race: alice starts authorizing `tmp-rt` (acme); an admin
/// deletes it and registers `tmp-rt` in globex; alice's callback stores
/// nothing, revokes the token, and the new runtime never reads it.
async fn a_runtime_replaced_during_the_flow_gets_nothing(backend: Backend) {
    let h = Harness::start(backend).await;
    let runtime_token = h.github_pat("dave", &["repo", "admin:repo_hook"]);
    let register = |account: &str| register_tmp_rt(&h, account, &runtime_token);
    assert_eq!(register("acme").send().await.unwrap().status(), 201);
    let alice = h.signed_in("alice").await;
    let provider = alice.start_authorize("tmp-rt").await;
    assert_eq!(provider.status, 200);
    let r = h
        .admin_request(reqwest::Method::DELETE, "/runtimes/tmp-rt")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = register("globex").send().await.unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    let globex_credential = v["credential"].as_str().unwrap().to_owned();
    let back = alice.provider_decision(&provider, "approve").await;
    let page = alice.follow(back).await;
    assert!(
        page.flash().contains("was deleted or moved to another account while you were authorizing. Nothing was stored."),
        "{}",
        page.flash()
    );
    assert!(
        page.flash().contains("It was revoked at the provider."),
        "{}",
        page.flash()
    );
    assert_eq!(h.mock.provider.stats().revocations, 1);
    let r = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/runtimes/tmp-rt/users/{ALICE}/token",
            h.url
        ))
        .bearer_auth(&globex_credential)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "the new runtime reads nothing of alice's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_replaced_during_the_flow_gets_nothing_redis() {
    a_runtime_replaced_during_the_flow_gets_nothing(Backend::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_replaced_during_the_flow_gets_nothing_embedded() {
    a_runtime_replaced_during_the_flow_gets_nothing(Backend::Embedded).await;
}

/// The same race on the pasted-token path: the runtime is replaced while
/// the provider validates the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_replaced_during_pat_validation_gets_nothing() {
    let h = Harness::start(Backend::Redis).await;
    let runtime_token = h.github_pat("dave", &["repo", "admin:repo_hook"]);
    let register = |account: &str| register_tmp_rt(&h, account, &runtime_token);
    assert_eq!(register("acme").send().await.unwrap().status(), 201);
    let alice = h.signed_in("alice").await;
    let page = alice.get("/tokens").await;
    let csrf = page.csrf();
    let pat = h.github_pat("alice", &["repo"]);
    h.mock.provider.switches().set_api_hang(true);
    let base = h.url.clone();
    let cookies = alice.cookies(&h.url);
    let pasting = tokio::spawn(async move {
        let b = Browser::new(&base);
        for (k, v) in cookies {
            b.jar
                .add_cookie_str(&format!("{k}={v}"), &url::Url::parse(&base).unwrap());
        }
        let posted = b
            .post(
                "/tokens/tmp-rt/pat",
                &[("csrf".into(), csrf), ("token".into(), pat)],
            )
            .await;
        b.follow(posted).await
    });
    h.mock
        .provider
        .wait_until(|_, t| t.api_in_flight >= 1)
        .await;
    assert_eq!(
        h.admin_request(reqwest::Method::DELETE, "/runtimes/tmp-rt")
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    // registered again in globex while the provider still hangs (straight in
    // the registry: the API would validate its runtime token at the same
    // hanging provider)
    let (_, globex_credential) = h
        .state
        .registry
        .create_runtime(github_runtime("tmp-rt", "globex"))
        .await
        .unwrap();
    let globex_credential = globex_credential.expose_secret().to_owned();
    h.mock.provider.switches().set_api_hang(false);
    let done = pasting.await.unwrap();
    assert!(
        done.flash().contains("runtime `tmp-rt` was deleted or moved to another account while the token was being added; nothing was stored"),
        "{}",
        done.flash()
    );
    let r = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/runtimes/tmp-rt/users/{ALICE}/token",
            h.url
        ))
        .bearer_auth(&globex_credential)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // and nothing of it is left in alice's grants
    let left = h
        .store
        .record_list(&gitbroker::store::Collection::new("grant", ALICE))
        .await
        .unwrap();
    assert!(left.is_empty(), "{} grants left", left.len());
}

/// Moving a runtime to another account, or an OAuth app to another host,
/// while tokens are stored for it: 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_that_would_hand_tokens_over_are_refused() {
    let h = Harness::start(Backend::Embedded).await;
    let alice = h.signed_in("alice").await;
    alice.authorize("acme-prod").await;
    let r = h
        .admin_request(reqwest::Method::PUT, "/runtimes/acme-prod")
        .json(&serde_json::json!({
            "id": "acme-prod", "account": "globex", "git_host": "github.com", "oauth_app": "github-app"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("would hand them to another account"),
        "{v}"
    );
    let base = h.mock.base_url.trim_end_matches('/').to_owned();
    let r = h
        .admin_request(reqwest::Method::PUT, "/oauth-apps/github-app")
        .json(&serde_json::json!({
            "id": "github-app", "provider": "github", "base_url": "https://github.example.org",
            "client_id": "test-client-id", "scopes": ["repo"]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "{}", r.text().await.unwrap());
    // the same host with other settings is fine
    let r = h
        .admin_request(reqwest::Method::PUT, "/oauth-apps/github-app")
        .json(&serde_json::json!({
            "id": "github-app", "name": "renamed", "provider": "github", "base_url": base,
            "client_id": "test-client-id", "scopes": ["repo"]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // with the user tokens deleted, the move is allowed
    let r = h
        .admin_request(reqwest::Method::DELETE, "/runtimes/acme-prod/user-tokens")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = h
        .admin_request(reqwest::Method::PUT, "/runtimes/acme-prod")
        .json(&serde_json::json!({
            "id": "acme-prod", "account": "globex", "git_host": "github.com", "oauth_app": "github-app"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Revocation says what really happened: "no longer valid" when the
/// provider says so; "could not revoke" (queued, retried) when GitHub
/// answers 404 for a token that still works — wrong app credentials look
/// like that — and the retry revokes it once the app is fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_reports_what_happened_and_retries() {
    let (h, clock) = start(Backend::Redis, None, "").await;
    let alice = h.signed_in("alice").await;
    // already revoked at the provider
    alice.authorize("acme-prod").await;
    let token = token_of(&h.url, "acme-prod", ALICE).await;
    assert!(h.mock.provider.revoke(&token));
    let page = alice.get("/tokens").await;
    let page = alice
        .follow(alice.submit_action(&page, "/tokens/acme-prod/delete").await)
        .await;
    assert!(
        page.flash()
            .contains("The provider said it was no longer valid."),
        "{}",
        page.flash()
    );
    assert_eq!(h.mock.provider.stats().revocations, 0);

    // the app's client id is wrong: GitHub answers 404 although the token works
    alice.authorize("acme-prod").await;
    let token = token_of(&h.url, "acme-prod", ALICE).await;
    let base = h.mock.base_url.trim_end_matches('/').to_owned();
    let app = |client_id: &str| {
        serde_json::json!({
            "id": "github-app", "name": "gitbroker tests", "provider": "github", "base_url": base,
            "client_id": client_id, "scopes": ["repo"], "token_lifetime_secs": null
        })
    };
    let r = h
        .admin_request(reqwest::Method::PUT, "/oauth-apps/github-app")
        .json(&app("no-such-client"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page = alice.get("/tokens").await;
    let page = alice
        .follow(alice.submit_action(&page, "/tokens/acme-prod/delete").await)
        .await;
    let flash = page.flash();
    assert!(flash.contains("could not revoke it right now"), "{flash}");
    assert!(
        flash.contains("check the OAuth app's client id and secret"),
        "{flash}"
    );
    assert!(!flash.contains("was revoked"), "{flash}");
    assert_eq!(
        fetch(&h.url, "acme-prod", ALICE).await.status(),
        404,
        "gone locally at once"
    );
    let queue = gitbroker::store::Collection::new("revocation", "queue");
    assert_eq!(h.store.record_list(&queue).await.unwrap().len(), 1);
    let queued = String::from_utf8_lossy(&h.store.record_list(&queue).await.unwrap()[0].1.value)
        .into_owned();
    assert!(!queued.contains(&token), "the queued token is sealed");
    // fixed by the admin; the retry (after its backoff) revokes it
    let r = h
        .admin_request(reqwest::Method::PUT, "/oauth-apps/github-app")
        .json(&app("test-client-id"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        h.state.lifecycle.run_due().await.revocations,
        0,
        "not before its backoff"
    );
    clock.advance(chrono::Duration::minutes(2));
    assert_eq!(h.state.lifecycle.run_due().await.revocations, 1);
    assert_eq!(h.mock.provider.stats().revocations, 1);
    assert!(h.store.record_list(&queue).await.unwrap().is_empty());
    let user = reqwest::Client::new()
        .get(format!("{base}/api/v3/user"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(user.status(), 401, "revoked at the provider");
}

/// A token nobody fetches for a week still works: background work refreshes
/// it ahead of expiry, keeping the rotating refresh token alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfetched_tokens_stay_fresh_for_a_week() {
    let (h, clock) = start(Backend::Embedded, None, "").await;
    let alice = h.signed_in("alice").await;
    alice.authorize("gitlab-rt").await;
    for _ in 0..(7 * 24) {
        clock.advance(chrono::Duration::hours(1));
        h.state.lifecycle.run_due().await;
    }
    let background = refreshes(&h);
    // a 2-hour token refreshed twenty minutes before it expires: ~100 times
    assert!(
        (80..=170).contains(&background),
        "{background} refreshes in a week"
    );
    let g = stored(&h, "gitlab-rt", ALICE).await;
    assert!(g.access_expires_at.unwrap() > clock.now() + chrono::Duration::minutes(10));
    let token = token_of(&h.url, "gitlab-rt", ALICE).await;
    assert_eq!(token, g.access_token.expose_secret());
    assert_eq!(refreshes(&h), background, "the fetch needed no refresh");
    // it works at the provider
    let base = h.mock.base_url.trim_end_matches('/').to_owned();
    let user = reqwest::Client::new()
        .get(format!("{base}/gitlab/api/v4/user"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(user.status(), 200);
}

/// The background loop runs by itself: a token close to expiry is
/// refreshed without any fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_loop_refreshes_by_itself() {
    let h = Harness::start_with(
        Backend::Redis,
        Options {
            lifecycle: "background = true\ntick_secs = 1\n".into(),
            ..Options::default()
        },
    )
    .await;
    // issued with 15 minutes to live: inside twice the 10-minute margin
    h.mock.provider.switches().set_access_token_secs(Some(900));
    let alice = h.signed_in("alice").await;
    alice.authorize("gitlab-rt").await;
    h.mock.provider.switches().set_access_token_secs(None);
    let first = stored(&h, "gitlab-rt", ALICE).await;
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        h.mock.provider.wait_until(|_, t| t.refresh_successes >= 1),
    )
    .await
    .expect("the background refreshed within 30 s");
    let token = token_of(&h.url, "gitlab-rt", ALICE).await;
    assert_ne!(token, first.access_token.expose_secret());
}

/// Git Runtime tokens are checked too: one revoked at the provider is no
/// longer served, and admins see why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_tokens_are_checked() {
    let (h, clock) = start(Backend::Embedded, None, "").await;
    let pat = h.github_pat("dave", &["repo", "admin:repo_hook"]);
    let r = h
        .admin_request(reqwest::Method::PUT, "/runtimes/acme-prod/git-token")
        .json(&serde_json::json!({ "token": pat }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let get = || {
        reqwest::Client::new()
            .get(format!("{}/api/v1/runtimes/acme-prod/token", h.url))
            .bearer_auth(credential("acme-prod"))
            .send()
    };
    assert_eq!(get().await.unwrap().status(), 200);
    assert!(h.mock.provider.revoke_pat(&pat));
    clock.advance(chrono::Duration::hours(5));
    assert!(h.state.lifecycle.run_due().await.checked >= 1);
    let r = get().await.unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "urn:gitbroker:problem:runtime-token-revoked");
    let v: Value = h
        .admin_request(reqwest::Method::GET, "/runtimes/acme-prod/git-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["status"]["state"], "invalid", "{v}");
    assert!(
        v["status"]["reason"].as_str().unwrap().contains("revoked"),
        "{v}"
    );
}

/// Records written before grants existed (per-runtime user tokens with
/// clear metadata; runtime tokens sealed to the runtime alone; runtimes
/// without an incarnation) are moved at start, and keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_the_previous_format_are_migrated() {
    use base64::Engine;
    let h = Harness::start(Backend::Redis).await;
    let key: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(KEY)
        .unwrap()
        .try_into()
        .unwrap();
    let keyring = gitbroker::crypto::Keyring::new(
        "k1",
        &[gitbroker::config::KeySettings {
            id: "k1".into(),
            key: secrecy::SecretBox::new(Box::new(key)),
        }],
    )
    .unwrap();
    // acme-staging as stored before incarnations
    let runtimes = gitbroker::store::Collection::new("runtime", "all");
    let rec = h
        .store
        .record_get(&runtimes, "acme-staging")
        .await
        .unwrap()
        .unwrap();
    let mut rt: Value = serde_json::from_slice(&rec.value).unwrap();
    rt.as_object_mut().unwrap().remove("incarnation");
    h.store
        .record_put(
            &runtimes,
            "acme-staging",
            &serde_json::to_vec(&rt).unwrap(),
            gitbroker::store::Expect::Any,
        )
        .await
        .unwrap();
    let oauth = h
        .mock
        .provider
        .issue_token("alice", "test-client-id", &["repo"]);
    let secrets = keyring
        .seal(
            &gitbroker::crypto::associated_data("user_token", &["acme-staging", ALICE]),
            serde_json::json!({ "access_token": oauth, "refresh_token": null })
                .to_string()
                .as_bytes(),
        )
        .unwrap();
    let old_user_token = serde_json::json!({
        "provider": "github", "provider_login": "alice", "git_username": "alice",
        "scopes": ["repo"], "issued_at": chrono::Utc::now(), "expires_at": null,
        "source": { "method": "o_auth", "app": "github-app" }, "secrets": secrets,
    });
    h.store
        .record_put(
            &gitbroker::store::Collection::new("user_token", "acme-staging"),
            ALICE,
            &serde_json::to_vec(&old_user_token).unwrap(),
            gitbroker::store::Expect::Any,
        )
        .await
        .unwrap();
    let pat = h.github_pat("dave", &["repo", "admin:repo_hook"]);
    let sealed = keyring
        .seal(
            &gitbroker::crypto::associated_data("runtime_token", &["acme-staging"]),
            pat.as_bytes(),
        )
        .unwrap();
    let old_runtime_token = serde_json::json!({
        "runtime": "acme-staging", "provider": "github", "provider_login": "dave", "git_username": "dave",
        "kind": "classic personal access token", "scopes": ["repo", "admin:repo_hook"],
        "expires_at": null, "set_at": chrono::Utc::now(), "token": sealed,
    });
    h.store
        .record_put(
            &gitbroker::store::Collection::new("runtime_token", "all"),
            "acme-staging",
            &serde_json::to_vec(&old_runtime_token).unwrap(),
            gitbroker::store::Expect::Any,
        )
        .await
        .unwrap();
    // the upgrade: a broker starts on this store
    let (_, url) = h.serve_replica(|t| t).await;
    assert_eq!(token_of(&url, "acme-staging", ALICE).await, oauth);
    let r = reqwest::Client::new()
        .get(format!("{url}/api/v1/runtimes/acme-staging/token"))
        .bearer_auth(credential("acme-staging"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["token"], pat.as_str());
    // nothing of the old format is left
    let old = h
        .store
        .record_list(&gitbroker::store::Collection::new(
            "user_token",
            "acme-staging",
        ))
        .await
        .unwrap();
    assert!(old.is_empty());
    let rt: Value = serde_json::from_slice(
        &h.store
            .record_get(&runtimes, "acme-staging")
            .await
            .unwrap()
            .unwrap()
            .value,
    )
    .unwrap();
    assert!(!rt["incarnation"].as_str().unwrap().is_empty());
}

/// GitHub keeps 10 tokens per user and app: with 10 held, the page warns
/// before an 11th authorization would silently revoke the oldest, and
/// offers the existing authorizations instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_warns_before_githubs_token_cap() {
    let h = Harness::start(Backend::Embedded).await;
    let alice = h.signed_in("alice").await;
    for i in 0..10 {
        let (rt, _) = h
            .state
            .registry
            .create_runtime(github_runtime(&format!("cap-rt-{i}"), "acme"))
            .await
            .unwrap();
        if i == 9 {
            let page = alice.get("/tokens").await;
            assert!(
                !page.body.contains("cap-warning"),
                "nine held: no warning yet"
            );
        }
        let token = h
            .mock
            .provider
            .issue_token("alice", "test-client-id", &["repo"]);
        h.assign_oauth_as(ALICE, &rt.id, &token).await;
    }
    let page = alice.get("/tokens").await;
    assert!(
        page.body
            .contains("You already hold 10 GitHub tokens of this OAuth app."),
        "{}",
        page.body
    );
    // nine other authorizations on each row: one choice among them, each
    // named by a few of its runtimes
    assert!(
        page.body.contains("<option value=\"")
            && page.body.contains(">as alice (used by cap-rt-0)</option>"),
        "{}",
        page.body
    );
    assert_eq!(
        page.body
            .matches("action=\"/tokens/cap-rt-0/reuse\"")
            .count(),
        1
    );
}

/// The values of the `<option>`s of the first `<select name="grant">` in
/// the form posting to `action`, with their texts.
fn reuse_choices(body: &str, action: &str) -> Vec<(String, String)> {
    let start = body
        .find(&format!("action=\"{action}\""))
        .unwrap_or_else(|| panic!("no form to {action}:\n{body}"));
    let form = &body[start..start + body[start..].find("</form>").unwrap()];
    form.split("<option value=\"")
        .skip(1)
        .map(|o| {
            let (value, rest) = o.split_once("\">").unwrap();
            let text = &rest[..rest.find("</option>").unwrap()];
            (value.to_owned(), text.to_owned())
        })
        .collect()
}

/// Two authorizations of one OAuth app: a runtime with neither offers both
/// in one form (a choice), the runtimes holding one offer the other as a
/// button; choosing one serves that authorization's token, and a choice
/// that is not the user's is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_authorizations_are_one_choice_per_row() {
    let h = Harness::start(Backend::Embedded).await;
    let alice = h.signed_in("alice").await;
    let a = h
        .mock
        .provider
        .issue_token("alice", "test-client-id", &["repo"]);
    let b = h
        .mock
        .provider
        .issue_token("alice", "test-client-id", &["repo"]);
    h.assign_oauth_as(ALICE, "acme-prod", &a).await;
    h.assign_oauth_as(ALICE, "acme-staging", &b).await;
    let (_, third) = h
        .state
        .registry
        .create_runtime(github_runtime("third-rt", "acme"))
        .await
        .unwrap();
    let page = alice.get("/tokens").await;
    assert_eq!(
        page.body
            .matches("action=\"/tokens/third-rt/reuse\"")
            .count(),
        1,
        "one form for both offers"
    );
    let choices = reuse_choices(&page.body, "/tokens/third-rt/reuse");
    let texts: Vec<&str> = choices.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(
        texts,
        [
            "as alice (used by acme-prod)",
            "as alice (used by acme-staging)"
        ],
        "{}",
        page.body
    );
    assert!(page.body.contains(
        "<button type=\"submit\" class=\"reuse-grant\">Use my existing authorization as alice (used by acme-staging)</button>"
    ));
    let staging_grant = &choices[1].0;

    // the second choice: acme-staging's authorization now serves third-rt
    let minted = h.mock.provider.stats().token_requests;
    let done = alice
        .follow(
            alice
                .post(
                    "/tokens/third-rt/reuse",
                    &[
                        ("csrf".into(), page.csrf()),
                        ("grant".into(), staging_grant.clone()),
                    ],
                )
                .await,
        )
        .await;
    assert!(
        done.flash()
            .contains("is now also used for runtime third-rt"),
        "{}",
        done.flash()
    );
    let v: Value = h
        .runtime_get_with(third.expose_secret(), "third-rt", ALICE)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["token"], b.as_str());
    assert_eq!(
        h.mock.provider.stats().token_requests,
        minted,
        "no token minted"
    );

    // a grant that is not one of the offers: refused, nothing changed
    let bob = h.signed_in("bob").await;
    let refused = bob
        .follow(
            bob.post(
                "/tokens/acme-prod/reuse",
                &[
                    ("csrf".into(), bob.get("/tokens").await.csrf()),
                    ("grant".into(), staging_grant.clone()),
                ],
            )
            .await,
        )
        .await;
    assert!(
        refused.flash().contains("does not exist"),
        "another user's grant id is not found among bob's: {}",
        refused.flash()
    );
    let r = h.runtime_get("acme-prod", "acme-prod", "u-1002").await;
    assert_eq!(r.status(), 404, "bob still has no token on acme-prod");
}

/// The page grows with the user's runtimes, not with their square: every
/// runtime on one host used to list all the others (the "also use for"
/// checkboxes) and every other authorization as a form of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_page_grows_linearly_with_runtimes() {
    let h = Harness::start(Backend::Embedded).await;
    let alice = h.signed_in("alice").await;
    for rt in ["acme-prod", "acme-staging"] {
        let t = h
            .mock
            .provider
            .issue_token("alice", "test-client-id", &["repo"]);
        h.assign_oauth_as(ALICE, rt, &t).await;
    }
    let mut sizes = Vec::new();
    let mut made = 0;
    for n in [10, 20, 40] {
        while made < n {
            h.state
                .registry
                // same length of id for every runtime
                .create_runtime(github_runtime(&format!("grow-{made:03}"), "acme"))
                .await
                .unwrap();
            made += 1;
        }
        let page = alice.get("/tokens").await;
        assert_eq!(page.status, 200);
        assert_eq!(
            page.body.matches("name=\"runtimes\" value=\"grow-").count(),
            n,
            "each runtime once in github.com's shared form"
        );
        sizes.push(page.body.len() as f64);
    }
    // bytes per added runtime, 10 → 20 and 20 → 40: the same when linear
    // (twice as many when each runtime lists the others)
    let first = (sizes[1] - sizes[0]) / 10.0;
    let second = (sizes[2] - sizes[1]) / 20.0;
    assert!(
        (second / first - 1.0).abs() < 0.05,
        "bytes per runtime {first:.0} then {second:.0}: {sizes:?}"
    );
}

/// A replica keeps the grant id an assignment named (`POINTER_TTL`), never
/// the grant: a token replaced or deleted through another replica is
/// refused by this one at once, and a token of a grant still shared with
/// another runtime keeps being served there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_and_deleted_tokens_reach_a_replica_that_keeps_pointers_at_once() {
    let h = Harness::start(Backend::Redis).await;
    let other = h.another_replica().await;
    let alice = Harness::acme_user(ALICE);
    let first = h.github_pat("alice", &["repo"]);
    other
        .lifecycle
        .assign_pat(
            &alice,
            "acme-prod",
            &["acme-staging".to_owned()],
            gitbroker::providers::PatInput::new(&first, None, None),
        )
        .await
        .unwrap();
    // this replica reads both assignments and keeps their pointers
    assert_eq!(token_of(&h.url, "acme-prod", ALICE).await, first);
    assert_eq!(token_of(&h.url, "acme-staging", ALICE).await, first);
    // …so that a fetch reads the store once (the grant), not twice: 20
    // fetches, 20 reads, and at most two of the registry's version checks
    let hget = |r: &RedisServer| {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut r.client().get_connection().unwrap())
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("cmdstat_hget:calls="))
            .and_then(|v| v.split(',').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let redis = h.redis.as_ref().unwrap();
    let before = hget(redis);
    for _ in 0..20 {
        assert_eq!(token_of(&h.url, "acme-prod", ALICE).await, first);
    }
    let reads = hget(redis) - before;
    assert!((20..=22).contains(&reads), "{reads} reads for 20 fetches");

    // replaced on the other replica: the old grant no longer lists acme-prod
    let second = h.github_pat("alice", &["repo"]);
    other
        .lifecycle
        .assign_pat(
            &alice,
            "acme-prod",
            &[],
            gitbroker::providers::PatInput::new(&second, None, None),
        )
        .await
        .unwrap();
    assert_eq!(token_of(&h.url, "acme-prod", ALICE).await, second);
    assert_eq!(token_of(&h.url, "acme-staging", ALICE).await, first);

    // deleted on the other replica, for one runtime and then the other
    other.lifecycle.unassign(&alice, "acme-prod").await.unwrap();
    assert_eq!(fetch(&h.url, "acme-prod", ALICE).await.status(), 404);
    assert_eq!(token_of(&h.url, "acme-staging", ALICE).await, first);
    other
        .lifecycle
        .unassign(&alice, "acme-staging")
        .await
        .unwrap();
    assert_eq!(fetch(&h.url, "acme-staging", ALICE).await.status(), 404);
}

/// The one case a pointer can be behind: the assignment moved to another
/// grant while the old grant still lists the runtime (a detach that has
/// not happened, or failed). It lasts at most `POINTER_TTL`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pointer_behind_its_assignment_lasts_at_most_its_ttl() {
    use gitbroker::store::Expect;
    use gitbroker::tokens::repo::{Assignment, POINTER_TTL};
    let h = Harness::start(Backend::Redis).await;
    let other = h.another_replica().await;
    let alice = Harness::acme_user(ALICE);
    let (old, new) = (
        h.github_pat("alice", &["repo"]),
        h.github_pat("alice", &["repo"]),
    );
    for (rt, pat) in [("acme-prod", &old), ("acme-staging", &new)] {
        other
            .lifecycle
            .assign_pat(
                &alice,
                rt,
                &[],
                gitbroker::providers::PatInput::new(pat, None, None),
            )
            .await
            .unwrap();
    }
    assert_eq!(token_of(&h.url, "acme-prod", ALICE).await, old);
    // on the other replica, by hand: the new grant also lists acme-prod and
    // the assignment names it, the old grant is left as it was
    let prod = other.registry.runtime("acme-prod").await.unwrap().unwrap();
    let (mut g, v) = other
        .lifecycle
        .assigned_grant("acme-staging", ALICE)
        .await
        .unwrap()
        .unwrap();
    g.assignments.push(gitbroker::tokens::grant::AssignmentRef {
        runtime: prod.id.clone(),
        incarnation: prod.incarnation.clone(),
        assigned_at: chrono::Utc::now(),
    });
    let repo = other.lifecycle.grants();
    repo.put(&g, Expect::Version(v)).await.unwrap();
    let moved = std::time::Instant::now();
    repo.put_assignment(
        &prod.id,
        &prod.incarnation,
        ALICE,
        &Assignment {
            grant: g.id.clone(),
            assigned_at: chrono::Utc::now(),
        },
        Expect::Any,
    )
    .await
    .unwrap();
    // every answer is one of the two; the new one within the TTL (and the
    // time a loaded machine takes to answer)
    loop {
        let t = token_of(&h.url, "acme-prod", ALICE).await;
        if t == new {
            break;
        }
        assert_eq!(t, old);
        assert!(
            moved.elapsed() < POINTER_TTL + std::time::Duration::from_secs(1),
            "still the old grant {:?} after the assignment moved",
            moved.elapsed()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(moved.elapsed() < POINTER_TTL + std::time::Duration::from_secs(1));
}
