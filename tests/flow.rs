//! The OAuth flow, the runtime API and the pages against the mock provider
//! on real loopback ports — each case on both store backends.
#![allow(
    clippy::disallowed_methods,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code
)]

mod support;

use std::time::Duration;
use support::*;

const ALICE: &str = "u-1001";
const BOB: &str = "u-1002";

fn switches(h: &Harness) -> &gitbroker::mock::Switches {
    h.mock.provider.switches()
}

async fn token_json(h: &Harness, runtime: &str, user: &str) -> serde_json::Value {
    let r = h.runtime_get(runtime, runtime, user).await;
    assert_eq!(r.status(), 200, "runtime API for {runtime}/{user}");
    r.json().await.unwrap()
}

async fn has_no_token(h: &Harness, runtime: &str, user: &str) {
    let r = h.runtime_get(runtime, runtime, user).await;
    assert_eq!(r.status(), 404, "{runtime}/{user} should have no token");
}

/// Every stored byte of the users' grants, for at-rest checks.
async fn raw_store_dump(h: &Harness) -> String {
    let mut out = String::new();
    for user in [ALICE, BOB] {
        for (id, v) in h
            .store
            .record_list(&gitbroker::store::Collection::new("grant", user))
            .await
            .unwrap()
        {
            out.push_str(&id);
            out.push_str(&String::from_utf8_lossy(&v.value));
        }
    }
    out
}

async fn case_happy_path(h: Harness) {
    let alice = h.signed_in("alice").await;
    let page = alice.authorize("acme-prod").await;
    assert_eq!(page.status, 200);
    assert!(
        page.body
            .contains("Access to GitHub authorized as alice for runtime acme-prod"),
        "{}",
        page.body
    );
    assert!(page.body.contains("data-status=\"valid\""));

    let r = h.runtime_get("acme-prod", "acme-prod", ALICE).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: serde_json::Value = r.json().await.unwrap();
    let token = body["token"].as_str().unwrap();
    assert!(token.starts_with("gho_"), "{body}");
    assert_eq!(body["username"], "alice");
    assert_eq!(body["provider"], "github");
    assert_eq!(body["scopes"], serde_json::json!(["repo"]));
    assert!(body.get("refresh_token").is_none());

    // the served token is the one the provider issued, and it works there
    let user = reqwest::Client::new()
        .get(format!(
            "{}/api/v3/user",
            h.mock.base_url.trim_end_matches('/')
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(user.status(), 200);

    // at rest: no plaintext token
    let dump = raw_store_dump(&h).await;
    assert!(
        dump.contains("GB1\u{2}k1"),
        "a sealed grant is stored: {dump}"
    );
    assert!(!dump.contains(token), "token stored in plain text");
    // its metadata is sealed too: nobody with write access to the store can
    // extend an expiry or widen the runtimes it is served to
    for clear in ["alice", "expires", "scopes", "repo", "acme-prod"] {
        assert!(!dump.contains(clear), "`{clear}` stored in clear: {dump}");
    }

    // the runtime's other users and the user's other runtimes are untouched
    has_no_token(&h, "acme-staging", ALICE).await;
    has_no_token(&h, "acme-prod", BOB).await;
    let stats = h.mock.provider.stats();
    assert_eq!(stats.token_requests, 1);
}

async fn case_replace_token(h: Harness) {
    let alice = h.signed_in("alice").await;
    alice.authorize("acme-prod").await;
    let first = token_json(&h, "acme-prod", ALICE).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let page = alice.authorize("acme-prod").await;
    assert!(page.body.contains("authorized"), "{}", page.body);
    let second = token_json(&h, "acme-prod", ALICE).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(first, second);
}

async fn case_delete_token(h: Harness) {
    let alice = h.signed_in("alice").await;
    alice.authorize("acme-prod").await;
    alice.authorize("acme-staging").await;
    let bob = h.signed_in("bob").await;
    bob.authorize("acme-prod").await;
    let token = token_json(&h, "acme-prod", ALICE).await["token"]
        .as_str()
        .unwrap()
        .to_owned();

    let tokens = alice.get("/tokens").await;
    let page = alice
        .follow(
            alice
                .submit_action(&tokens, "/tokens/acme-prod/delete")
                .await,
        )
        .await;
    assert!(
        page.body.contains("Token deleted for runtime acme-prod"),
        "{}",
        page.body
    );
    has_no_token(&h, "acme-prod", ALICE).await;
    // the runtime, the user's other runtime and the runtime's other user remain
    token_json(&h, "acme-staging", ALICE).await;
    token_json(&h, "acme-prod", BOB).await;
    assert!(
        h.state
            .registry
            .runtime("acme-prod")
            .await
            .unwrap()
            .is_some()
    );
    // revoked at the provider
    assert!(h.mock.provider.stats().revocations >= 1);
    let user = reqwest::Client::new()
        .get(format!(
            "{}/api/v3/user",
            h.mock.base_url.trim_end_matches('/')
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(user.status(), 401);
}

async fn case_denied_at_provider(h: Harness) {
    let alice = h.signed_in("alice").await;
    let provider = alice.start_authorize("acme-prod").await;
    let back = alice.provider_decision(&provider, "deny").await;
    let page = alice.follow(back).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("Authorization was denied at GitHub"),
        "{}",
        page.body
    );
    has_no_token(&h, "acme-prod", ALICE).await;
    assert_eq!(h.mock.provider.stats().token_requests, 0);
}

async fn case_denial_text_is_escaped(h: Harness) {
    let alice = h.signed_in("alice").await;
    let provider = alice.start_authorize("acme-prod").await;
    let state = query_param(&provider.url, "state").unwrap();
    let evil = "<script>alert(1)</script>";
    let cb = format!(
        "/oauth/callback/github-app?state={state}&error=access_denied&error_description={}",
        urlencode(evil)
    );
    let page = alice.follow(alice.get(&cb).await).await;
    assert!(!page.body.contains(evil), "provider text must be escaped");
    assert!(
        page.body.contains("&#60;script&#62;") || page.body.contains("&lt;script&gt;"),
        "{}",
        page.body
    );
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn case_missing_forged_replayed_state(h: Harness) {
    let alice = h.signed_in("alice").await;
    let missing = alice.get("/oauth/callback/github-app?code=abc").await;
    assert_eq!(missing.status, 400);
    let forged = alice
        .get("/oauth/callback/github-app?code=abc&state=forged-state-value")
        .await;
    assert_eq!(forged.status, 400);
    assert!(forged.body.contains("unknown, expired or already used"));
    assert_eq!(h.mock.provider.stats().token_requests, 0);

    // replay: the provider's redirect used twice
    let provider = alice.start_authorize("acme-prod").await;
    let back = alice.provider_decision(&provider, "approve").await;
    let callback = back.location.clone().unwrap();
    alice.follow(back).await;
    let token = token_json(&h, "acme-prod", ALICE).await["token"].clone();
    let replay = alice.get(&callback).await;
    assert_eq!(replay.status, 400);
    assert_eq!(
        h.mock.provider.stats().token_requests,
        1,
        "no second exchange"
    );
    assert_eq!(token_json(&h, "acme-prod", ALICE).await["token"], token);
}

async fn case_cross_user_callback_refused(h: Harness) {
    // alice starts, and sends the provider URL (carrying her state) to bob;
    // the provider approves silently as bob's provider account
    let alice = h.signed_in("alice").await;
    let provider = alice.start_authorize("acme-prod").await;
    let authorize_url = provider.url.clone();
    switches(&h).set_auto_approve(Some("bob"));
    let bob = h.signed_in("bob").await;
    let back = bob.get(&authorize_url).await;
    assert!((300..400).contains(&back.status), "auto approval redirects");
    let landed = bob.follow(back).await;
    assert_eq!(landed.status, 403, "{}", landed.body);
    has_no_token(&h, "acme-prod", ALICE).await;
    has_no_token(&h, "acme-prod", BOB).await;
    assert_eq!(h.mock.provider.stats().token_requests, 0);

    // the same with a browser that is not signed in at all
    switches(&h).set_auto_approve(None);
    let provider = alice.start_authorize("acme-prod").await;
    assert_eq!(
        provider.status, 200,
        "alice is at the provider's consent page"
    );
    switches(&h).set_auto_approve(Some("bob"));
    let stranger = h.browser();
    let landed = stranger.follow(stranger.get(&provider.url).await).await;
    assert_eq!(landed.status, 403);
    has_no_token(&h, "acme-prod", ALICE).await;
}

async fn case_same_user_other_browser_refused(h: Harness) {
    // the flow cookie binds the flow to the browser that started it
    let alice = h.signed_in("alice").await;
    let provider = alice.start_authorize("acme-prod").await;
    switches(&h).set_auto_approve(Some("alice"));
    let alice2 = h.signed_in("alice").await;
    let landed = alice2.follow(alice2.get(&provider.url).await).await;
    assert_eq!(landed.status, 403);
    has_no_token(&h, "acme-prod", ALICE).await;
}

async fn case_other_account_runtime_refused(h: Harness) {
    let alice = h.signed_in("alice").await;
    let tokens = alice.get("/tokens").await;
    assert!(
        !tokens.body.contains("globex-prod"),
        "other accounts' runtimes are not listed"
    );
    let csrf = tokens.csrf();
    let r = alice
        .post(
            "/tokens/globex-prod/authorize",
            &[("csrf".into(), csrf.clone())],
        )
        .await;
    assert_eq!(r.status, 404);
    let r = alice
        .post(
            "/tokens/no-such-runtime/authorize",
            &[("csrf".into(), csrf.clone())],
        )
        .await;
    assert_eq!(r.status, 404);
    let r = alice
        .post("/tokens/globex-prod/delete", &[("csrf".into(), csrf)])
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(h.mock.provider.stats().authorize_requests, 0);
}

async fn case_csrf_required(h: Harness) {
    let alice = h.signed_in("alice").await;
    let r = alice
        .post(
            "/tokens/acme-prod/authorize",
            &[("csrf".into(), "wrong".into())],
        )
        .await;
    assert_eq!(r.status, 403);
    let r = alice.post("/tokens/acme-prod/authorize", &[]).await;
    assert!((400..500).contains(&r.status));
    assert_eq!(h.mock.provider.stats().authorize_requests, 0);
}

async fn case_provider_200_with_error(h: Harness) {
    switches(&h).set_token_error(Some("bad_verification_code"));
    let alice = h.signed_in("alice").await;
    let page = alice.authorize("acme-prod").await;
    assert!(
        page.body
            .contains("GitHub refused the authorization (bad_verification_code)"),
        "{}",
        page.body
    );
    has_no_token(&h, "acme-prod", ALICE).await;
}

async fn case_provider_5xx_keeps_old_token(h: Harness) {
    let alice = h.signed_in("alice").await;
    alice.authorize("acme-prod").await;
    let before = token_json(&h, "acme-prod", ALICE).await;
    switches(&h).set_token_status(Some(502));
    let page = alice.authorize("acme-prod").await;
    assert!(
        page.body
            .contains("GitHub could not be reached or failed (HTTP 502)"),
        "{}",
        page.body
    );
    assert_eq!(
        token_json(&h, "acme-prod", ALICE).await,
        before,
        "no token lost"
    );
}

async fn case_provider_hang(h: Harness) {
    switches(&h).set_token_hang(true);
    let alice = h.signed_in("alice").await;
    let started = std::time::Instant::now();
    let page = alice.authorize("acme-prod").await;
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(
        page.body
            .contains("could not be reached or failed (timed out)"),
        "{}",
        page.body
    );
    has_no_token(&h, "acme-prod", ALICE).await;
    assert_eq!(
        h.mock.provider.stats().token_requests,
        1,
        "a code exchange is never retried"
    );
}

async fn case_fewer_scopes_granted(h: Harness) {
    switches(&h).set_grant_scopes(Some(&["public_repo"]));
    let alice = h.signed_in("alice").await;
    let page = alice.authorize("acme-prod").await;
    assert!(
        page.body.contains("lacks required scopes: repo"),
        "{}",
        page.body
    );
    has_no_token(&h, "acme-prod", ALICE).await;
}

async fn case_runtime_isolation(h: Harness) {
    let alice = h.signed_in("alice").await;
    alice.authorize("acme-prod").await;
    // runtime B's credential asking for runtime A's user token
    let r = h.runtime_get("acme-staging", "acme-prod", ALICE).await;
    assert_eq!(r.status(), 404);
    let body = r.text().await.unwrap();
    assert!(!body.contains("gho_"));
    // no credential, a wrong one, a malformed header
    let url = format!("{}/api/v1/runtimes/acme-prod/users/{ALICE}/token", h.url);
    let c = reqwest::Client::new();
    assert_eq!(c.get(&url).send().await.unwrap().status(), 401);
    assert_eq!(
        c.get(&url)
            .bearer_auth("nope")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let r = c
        .get(&url)
        .header("authorization", "Basic eDp5")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    // the user with no token: 404 saying to authorize
    let r = h.runtime_get("acme-prod", "acme-prod", BOB).await;
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("must authorize"));
}

async fn case_expired_flow(h: Harness) {
    // flows live 600 s; an expired flow looks exactly like an unknown one,
    // so removing the record is the same as waiting for its TTL
    let alice = h.signed_in("alice").await;
    let provider = alice.start_authorize("acme-prod").await;
    let state = query_param(&provider.url, "state").unwrap();
    let key = gitbroker::store::EphemeralKey::new(
        "flow",
        gitbroker::crypto::sha256_hex(state.as_bytes()),
    );
    assert!(
        h.store.get(&key).await.unwrap().is_some(),
        "flow record stored under the state digest"
    );
    assert!(h.store.remove(&key).await.unwrap());
    let back = alice.provider_decision(&provider, "approve").await;
    let landed = alice.follow(back).await;
    assert_eq!(landed.status, 400);
    assert!(landed.body.contains("expired"));
    has_no_token(&h, "acme-prod", ALICE).await;
}

async fn case_page_security_headers(h: Harness) {
    let alice = h.signed_in("alice").await;
    let r = alice
        .client
        .get(format!("{}/tokens", h.url))
        .send()
        .await
        .unwrap();
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("frame-ancestors 'none'"));
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(r.headers()["cache-control"], "no-store");
    // signed out: the page sends you to sign in
    let anon = h.browser().get("/tokens").await;
    assert_eq!(anon.status, 303);
    assert!(anon.location.unwrap().starts_with("/login"));
}

async fn case_sign_out(h: Harness) {
    let alice = h.signed_in("alice").await;
    let tokens = alice.get("/tokens").await;
    let out = alice.submit(&tokens, "sign-out").await;
    assert_eq!(out.status, 303);
    let again = alice.get("/tokens").await;
    assert_eq!(again.status, 303, "session destroyed");
}

/// Requests in flight with a copied cookie while the user signs out: the
/// session stays ended (each write-back only updates a session that still
/// exists), so afterwards the copied cookie is refused every time.
async fn case_sign_out_ends_a_session_in_use(h: Harness) {
    for trial in 0..5 {
        let alice = h.signed_in("alice").await;
        let cookie = session_cookie(&alice, &h);
        let tokens = alice.get("/tokens").await;
        let csrf = tokens.csrf();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (started_tx, mut started_rx) = tokio::sync::mpsc::channel::<()>(8);
        let loops: Vec<_> = (0..8)
            .map(|_| {
                let stolen = Browser::new(&h.url);
                stolen.jar.add_cookie_str(
                    &format!("gitbroker_session={cookie}"),
                    &url::Url::parse(&h.url).unwrap(),
                );
                let (stop, csrf, started) = (stop.clone(), csrf.clone(), started_tx.clone());
                tokio::spawn(async move {
                    let mut first = true;
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                        // each delete writes a flash message into the session
                        let form = vec![("csrf".to_owned(), csrf.clone())];
                        stolen.post("/tokens/acme-prod/delete", &form).await;
                        stolen.get("/tokens").await;
                        if first {
                            first = false;
                            let _ = started.send(()).await;
                        }
                    }
                })
            })
            .collect();
        for _ in 0..8 {
            started_rx.recv().await.unwrap();
        }
        let page = alice.get("/tokens").await;
        let out = alice.submit(&page, "sign-out").await;
        assert_eq!(out.status, 303);
        // the loops keep writing for a while after the sign-out
        for _ in 0..5 {
            tokio::task::yield_now().await;
            alice.get("/signed-out").await;
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for l in loops {
            l.await.unwrap();
        }
        let stolen = Browser::new(&h.url);
        stolen.jar.add_cookie_str(
            &format!("gitbroker_session={cookie}"),
            &url::Url::parse(&h.url).unwrap(),
        );
        for _ in 0..10 {
            assert_eq!(
                stolen.get("/tokens").await.status,
                303,
                "trial {trial}: the ended session came back"
            );
            let api = stolen.get("/api/v1/me/tokens").await;
            assert_eq!(api.status, 401, "trial {trial}: {}", api.body);
        }
    }
}

async fn case_flows_in_two_tabs(h: Harness) {
    let alice = h.signed_in("alice").await;
    let p1 = alice.start_authorize("acme-prod").await;
    let p2 = alice.start_authorize("acme-staging").await;
    let b2 = alice.provider_decision(&p2, "approve").await;
    let b1 = alice.provider_decision(&p1, "approve").await;
    assert_eq!(alice.follow(b1).await.status, 200);
    assert_eq!(alice.follow(b2).await.status, 200);
    token_json(&h, "acme-prod", ALICE).await;
    token_json(&h, "acme-staging", ALICE).await;
}

/// Start and finish on different replicas sharing the store.
async fn case_start_and_callback_on_different_replicas(h: Harness) {
    let replica = h.another_replica().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        axum::serve(listener, gitbroker::router(replica))
            .await
            .unwrap();
    });
    let alice = h.signed_in("alice").await;
    let provider = alice.start_authorize("acme-prod").await;
    let back = alice.provider_decision(&provider, "approve").await;
    // the provider sends the browser to the other replica (same public URL in
    // production; here, another port with the same cookies)
    let loc = back
        .location
        .clone()
        .unwrap()
        .replace(&h.url, &format!("http://127.0.0.1:{port}"));
    let landed = alice.get(&loc).await;
    assert_eq!(landed.status, 303, "{}", landed.body);
    token_json(&h, "acme-prod", ALICE).await;
}

async fn case_new_session_id_at_login(h: Harness) {
    let b = h.signed_in("alice").await;
    let first = session_cookie(&b, &h);
    b.sign_in("alice").await;
    let second = session_cookie(&b, &h);
    assert_ne!(first, second, "a new session id at every sign-in");
    // the old id no longer works
    let old = Browser::new(&h.url);
    old.jar.add_cookie_str(
        &format!("gitbroker_session={first}"),
        &url::Url::parse(&h.url).unwrap(),
    );
    assert_eq!(old.get("/tokens").await.status, 303);
}

fn session_cookie(b: &Browser, h: &Harness) -> String {
    b.cookies(&h.url)
        .into_iter()
        .find(|(k, _)| k == "gitbroker_session")
        .unwrap()
        .1
}

macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() { super::$case(Harness::start(Backend::Embedded).await).await }
            )*
        }
        mod redis {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() { super::$case(Harness::start(Backend::Redis).await).await }
            )*
        }
        /// The identity provider's issuer a bare origin (`http://127.0.0.1:PORT`,
        /// no path, like `https://accounts.google.com`): sign-in must not
        /// turn it into `…/` and fail discovery.
        mod bare_issuer {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let opts = Options { idp_at_origin: true, ..Options::default() };
                    super::$case(Harness::start_with(Backend::Embedded, opts).await).await
                }
            )*
        }
    };
}

suite!(
    case_happy_path,
    case_replace_token,
    case_delete_token,
    case_denied_at_provider,
    case_denial_text_is_escaped,
    case_missing_forged_replayed_state,
    case_cross_user_callback_refused,
    case_same_user_other_browser_refused,
    case_other_account_runtime_refused,
    case_csrf_required,
    case_provider_200_with_error,
    case_provider_5xx_keeps_old_token,
    case_provider_hang,
    case_fewer_scopes_granted,
    case_runtime_isolation,
    case_expired_flow,
    case_page_security_headers,
    case_sign_out,
    case_sign_out_ends_a_session_in_use,
    case_flows_in_two_tabs,
    case_start_and_callback_on_different_replicas,
    case_new_session_id_at_login,
);

/// Cases that need a clock the test moves, or a backend failure.
mod clocked {
    use super::*;
    use gitbroker::clock::ManualClock;
    use std::sync::Arc;

    async fn with_clock(backend: Backend, lifetime: Option<u64>) -> (Harness, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
        let h = Harness::start_with(
            backend,
            Options {
                clock: Some(clock.clone()),
                token_lifetime_secs: lifetime,
                ..Options::default()
            },
        )
        .await;
        (h, clock)
    }

    async fn admin_lifetime_expiry(backend: Backend) {
        let (h, clock) = with_clock(backend, Some(3600)).await;
        let alice = h.signed_in("alice").await;
        alice.authorize("acme-prod").await;
        let body = token_json(&h, "acme-prod", ALICE).await;
        assert!(
            body["expires_at"].is_string(),
            "admin lifetime sets an expiry: {body}"
        );
        clock.advance(chrono::Duration::minutes(59));
        token_json(&h, "acme-prod", ALICE).await;
        clock.advance(chrono::Duration::minutes(2));
        let r = h.runtime_get("acme-prod", "acme-prod", ALICE).await;
        assert_eq!(r.status(), 404);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["type"], "urn:gitbroker:problem:user-token-expired");
        let page = alice.get("/tokens").await;
        assert!(page.body.contains("Expired"), "{}", page.body);
    }

    async fn session_idle_expiry(backend: Backend) {
        let (h, clock) = with_clock(backend, None).await;
        let alice = h.signed_in("alice").await;
        clock.advance(chrono::Duration::hours(7));
        assert_eq!(
            alice.get("/tokens").await.status,
            200,
            "activity within the idle timeout"
        );
        clock.advance(chrono::Duration::hours(7));
        assert_eq!(
            alice.get("/tokens").await.status,
            200,
            "idle timer was renewed"
        );
        clock.advance(chrono::Duration::hours(9));
        assert_eq!(
            alice.get("/tokens").await.status,
            303,
            "idle timeout ends the session"
        );
    }

    async fn session_absolute_expiry(backend: Backend) {
        let (h, clock) = with_clock(backend, None).await;
        let alice = h.signed_in("alice").await;
        for _ in 0..3 {
            clock.advance(chrono::Duration::hours(6));
            assert_eq!(alice.get("/tokens").await.status, 200);
        }
        clock.advance(chrono::Duration::hours(5));
        assert_eq!(
            alice.get("/tokens").await.status,
            200,
            "23 h: still within the absolute timeout"
        );
        clock.advance(chrono::Duration::hours(1));
        assert_eq!(
            alice.get("/tokens").await.status,
            303,
            "absolute timeout (24 h) ends the session"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn admin_lifetime_expiry_embedded() {
        admin_lifetime_expiry(Backend::Embedded).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn admin_lifetime_expiry_redis() {
        admin_lifetime_expiry(Backend::Redis).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn session_idle_expiry_embedded() {
        session_idle_expiry(Backend::Embedded).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn session_idle_expiry_redis() {
        session_idle_expiry(Backend::Redis).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn session_absolute_expiry_embedded() {
        session_absolute_expiry(Backend::Embedded).await
    }

    /// Redis down: fail closed with 503, never skip a check; healthz stays up.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_outage_answers_503() {
        // appendfsync always: the restarted server has what was written
        let mut h = Harness::start_with(
            Backend::Redis,
            Options {
                redis_args: vec!["--appendonly", "yes", "--appendfsync", "always"],
                ..Options::default()
            },
        )
        .await;
        let alice = h.signed_in("alice").await;
        alice.authorize("acme-prod").await;
        h.redis.as_mut().unwrap().kill();
        let page = alice.get("/tokens").await;
        assert_eq!(page.status, 503, "{}", page.body);
        assert!(page.body.contains("Nothing was changed"));
        let r = h.runtime_get("acme-prod", "acme-prod", ALICE).await;
        assert_eq!(r.status(), 503);
        assert!(r.headers().contains_key("retry-after"));
        let body = r.text().await.unwrap();
        assert!(
            !body.contains("redis://"),
            "no connection details in the body"
        );
        let c = reqwest::Client::new();
        assert_eq!(
            c.get(format!("{}/readyz", h.url))
                .send()
                .await
                .unwrap()
                .status(),
            503
        );
        assert_eq!(
            c.get(format!("{}/healthz", h.url))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        let cb = alice.get("/oauth/callback/github-app?state=x&code=y").await;
        assert_eq!(cb.status, 503);
        // back up: the token is still there
        h.redis.as_mut().unwrap().restart();
        let mut ok = false;
        for _ in 0..50 {
            if h.runtime_get("acme-prod", "acme-prod", ALICE)
                .await
                .status()
                == 200
            {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ok, "service recovers when Redis is back");
    }
}
