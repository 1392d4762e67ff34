//! Personal access tokens pasted on the page and through the user API, and
//! the Git Runtime token an admin registers and rotates — against the mock
//! GitHub over real HTTP, on both store backends where the store matters.
#![allow(
    clippy::disallowed_methods,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code
)]

mod support;

use chrono::{Duration, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use support::*;

const ALICE: &str = "u-1001";

/// Pastes `token` for `runtime` with the row's form, or with the host's
/// shared form ("several runtimes", `POST /tokens/pat`) when `also` names
/// others.
async fn paste(b: &Browser, runtime: &str, token: &str, also: &[&str]) -> Page {
    let tokens = b.get("/tokens").await;
    let mut form = vec![
        ("csrf".to_owned(), tokens.csrf()),
        ("token".to_owned(), token.to_owned()),
    ];
    if also.is_empty() {
        return b
            .follow(b.post(&format!("/tokens/{runtime}/pat"), &form).await)
            .await;
    }
    form.extend(
        std::iter::once(&runtime)
            .chain(also)
            .map(|r| ("runtimes".to_owned(), (*r).to_owned())),
    );
    b.follow(b.post("/tokens/pat", &form).await).await
}

/// How often `needle` occurs in `haystack`.
fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

async fn pat_cases(backend: Backend) {
    let h = Harness::start(backend).await;
    let alice = h.signed_in("alice").await;
    let tokens = alice.get("/tokens").await;
    assert!(tokens.body.contains("Advanced authorization options"));
    // one shared form per host, each runtime in it once; the rows' forms
    // take their own runtime only (the page grows with runtimes, not with
    // runtimes squared)
    assert_eq!(
        count(
            &tokens.body,
            "Add one personal access token to several runtimes on github.com"
        ),
        1,
        "{}",
        tokens.body
    );
    assert_eq!(
        count(&tokens.body, "action=\"/tokens/pat\""),
        count(&tokens.body, "class=\"card pat-several\"")
    );
    assert_eq!(
        count(&tokens.body, "name=\"runtimes\" value=\"acme-prod\""),
        1
    );
    assert_eq!(
        count(&tokens.body, "name=\"runtimes\" value=\"acme-staging\""),
        1
    );
    assert_eq!(count(&tokens.body, "name=\"also\""), 0);
    assert!(
        !tokens
            .body
            .contains("name=\"runtimes\" value=\"globex-prod\""),
        "a runtime of another account is not offered"
    );

    // valid classic token, also assigned to another runtime on the same host
    let pat = h.github_pat("alice", &["repo", "gist"]);
    let page = paste(&alice, "acme-prod", &pat, &["acme-staging"]).await;
    assert_eq!(
        page.flash(),
        "GitHub token of alice (classic personal access token) added to runtime acme-prod, acme-staging."
    );
    for rt in ["acme-prod", "acme-staging"] {
        let r = h.runtime_get(rt, rt, ALICE).await;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["token"], pat.as_str());
        assert_eq!(v["username"], "alice");
    }
    assert!(
        page.body.contains("personal access token"),
        "the page says how it was added"
    );

    // missing scope: exact message, nothing changed
    let weak = h.github_pat("alice", &["public_repo"]);
    let page = paste(&alice, "acme-prod", &weak, &[]).await;
    let msg = page.flash();
    assert!(msg.starts_with("Runtime acme-prod: This token lacks the required scopes: repo. Create one in GitHub under Settings > Developer settings"), "{msg}");
    let v: Value = h
        .runtime_get("acme-prod", "acme-prod", ALICE)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["token"], pat.as_str(), "the old token stays");

    // expired, revoked, wrong kind
    let expired = h.pat(
        "alice",
        "classic",
        &["repo"],
        Some(Utc::now() - Duration::days(1)),
    );
    let msg = paste(&alice, "acme-prod", &expired, &[]).await.flash();
    assert!(
        msg.contains("GitHub does not accept this token: it is revoked, expired or mistyped."),
        "{msg}"
    );
    let revoked = h.github_pat("alice", &["repo"]);
    h.mock.provider.revoke_pat(&revoked);
    let msg = paste(&alice, "acme-prod", &revoked, &[]).await.flash();
    assert!(msg.contains("does not accept this token"), "{msg}");
    let installation = h.pat("alice", "installation", &[], None);
    let msg = paste(&alice, "acme-prod", &installation, &[]).await.flash();
    assert!(
        msg.contains("GitHub App installation token (ghs_): it acts as the app, not as a person"),
        "{msg}"
    );

    // expiring token: expiry read from the provider's header
    let at = (Utc::now() + Duration::days(30))
        .date_naive()
        .and_hms_opt(10, 0, 0)
        .unwrap()
        .and_utc();
    let expiring = h.pat("alice", "classic", &["repo"], Some(at));
    paste(&alice, "acme-prod", &expiring, &[]).await;
    let v: Value = h
        .runtime_get("acme-prod", "acme-prod", ALICE)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["expires_at"], json!(at));

    // provider failures while validating: "try again", never "invalid"; nothing lost
    h.mock.provider.switches().set_user_api_status(Some(502));
    let msg = paste(&alice, "acme-prod", &h.github_pat("alice", &["repo"]), &[])
        .await
        .flash();
    assert!(
        msg.contains("GitHub could not validate the token right now"),
        "{msg}"
    );
    assert!(!msg.contains("does not accept"), "{msg}");
    h.mock.provider.switches().set_user_api_status(None);
    h.mock.provider.switches().set_api_hang(true);
    let msg = paste(&alice, "acme-prod", &h.github_pat("alice", &["repo"]), &[])
        .await
        .flash();
    assert!(
        msg.contains("could not validate the token right now (timed out)"),
        "{msg}"
    );
    h.mock.provider.switches().set_api_hang(false);
    // a rate limit is honoured: after it, gitbroker does not ask GitHub
    // again until the reset, and says so at once
    h.mock.provider.switches().set_user_api_status(Some(429));
    let msg = paste(&alice, "acme-prod", &h.github_pat("alice", &["repo"]), &[])
        .await
        .flash();
    assert!(
        msg.contains("GitHub could not validate the token right now (rate limited)"),
        "{msg}"
    );
    h.mock.provider.switches().set_user_api_status(None);
    let before = h.mock.provider.stats().user_requests;
    let msg = paste(&alice, "acme-prod", &h.github_pat("alice", &["repo"]), &[])
        .await
        .flash();
    assert!(msg.contains("rate limited; retry in"), "{msg}");
    assert_eq!(
        h.mock.provider.stats().user_requests,
        before,
        "GitHub was not asked"
    );
    let v: Value = h
        .runtime_get("acme-prod", "acme-prod", ALICE)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["token"], expiring.as_str(), "no token lost");

    // a runtime of another account, or of another host, in "also"
    let r = alice
        .post(
            "/tokens/acme-prod/pat",
            &[
                ("csrf".into(), alice.get("/tokens").await.csrf()),
                ("token".into(), h.github_pat("alice", &["repo"])),
                ("also".into(), "globex-prod".into()),
            ],
        )
        .await;
    assert_eq!(r.status, 404);

    // the shared form refuses, as a whole and before GitHub is asked:
    // nothing checked, a runtime not the user's, runtimes of two hosts
    let csrf = alice.get("/tokens").await.csrf();
    let several = |runtimes: &[&str]| {
        let mut form = vec![
            ("csrf".to_owned(), csrf.clone()),
            ("token".to_owned(), h.github_pat("alice", &["repo"])),
        ];
        form.extend(
            runtimes
                .iter()
                .map(|r| ("runtimes".to_owned(), (*r).to_owned())),
        );
        form
    };
    let asked = h.mock.provider.stats().user_requests;
    let r = alice.post("/tokens/pat", &several(&[])).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("Check at least one runtime"), "{}", r.body);
    let r = alice
        .post("/tokens/pat", &several(&["acme-prod", "globex-prod"]))
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.body.contains("not in one of your accounts"), "{}", r.body);
    let r = alice
        .post("/tokens/pat", &several(&["acme-prod", "gitlab-rt"]))
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body
            .contains("runtime `gitlab-rt` is on another Git provider host"),
        "{}",
        r.body
    );
    assert_eq!(
        h.mock.provider.stats().user_requests,
        asked,
        "GitHub was not asked"
    );
    let v: Value = h
        .runtime_get("acme-prod", "acme-prod", ALICE)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["token"], expiring.as_str(), "no token changed");
    let r = alice
        .post(
            "/tokens/pat",
            &[
                ("csrf".into(), "x".into()),
                ("token".into(), pat.clone()),
                ("runtimes".into(), "acme-prod".into()),
            ],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    // CSRF
    let r = alice
        .post(
            "/tokens/acme-prod/pat",
            &[("csrf".into(), "x".into()), ("token".into(), pat.clone())],
        )
        .await;
    assert_eq!(r.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pasted_tokens_embedded() {
    pat_cases(Backend::Embedded).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pasted_tokens_redis() {
    pat_cases(Backend::Redis).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_api_paste_and_delete() {
    let h = Harness::start(Backend::Embedded).await;
    let alice = h.signed_in("alice").await;
    let csrf = alice.get("/tokens").await.csrf();
    let url = format!("{}/api/v1/me/runtimes/acme-prod/token", h.url);
    let pat = h.github_pat("alice", &["repo"]);
    let r = alice
        .client
        .put(&url)
        .json(&json!({"token": pat}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "CSRF header required");
    let r = alice
        .client
        .put(&url)
        .header("x-csrf-token", &csrf)
        .json(&json!({"token": pat}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["provider_login"], "alice");
    assert!(!v.to_string().contains(&pat), "the token is not echoed");
    // one normal form on every path: what was validated (trimmed) is what is served
    let padded = h.github_pat("alice", &["repo"]);
    let r = alice
        .client
        .put(&url)
        .header("x-csrf-token", &csrf)
        .json(&json!({"token": format!("  {padded}\n"), "username": "  "}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let served: Value = h
        .runtime_get("acme-prod", "acme-prod", ALICE)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(served["token"], padded.as_str(), "served trimmed");
    let weak = h.github_pat("alice", &["public_repo"]);
    let r = alice
        .client
        .put(&url)
        .header("x-csrf-token", &csrf)
        .json(&json!({"token": weak}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("lacks the required scopes: repo")
    );
    h.mock.provider.switches().set_user_api_status(Some(503));
    let r = alice
        .client
        .put(&url)
        .header("x-csrf-token", &csrf)
        .json(&json!({"token": pat}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    h.mock.provider.switches().set_user_api_status(None);
    let list: Value = alice
        .client
        .get(format!("{}/api/v1/me/tokens", h.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let runtimes = list["runtimes"].as_array().unwrap();
    assert!(
        runtimes.iter().all(|r| r["account"] == "acme") && runtimes.len() >= 2,
        "only alice's accounts: {list}"
    );
    assert!(
        runtimes
            .iter()
            .any(|r| r["runtime"] == "acme-prod" && r["token"]["method"] == "pat"),
        "{list}"
    );
    let r = alice
        .client
        .delete(&url)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["deleted"], true);
    // a pasted token belongs to the user: not revoked
    assert_eq!(v["revocation"], "kept", "{v}");
    assert_eq!(
        h.runtime_get("acme-prod", "acme-prod", ALICE)
            .await
            .status(),
        404
    );
    let r = alice
        .client
        .get(format!("{}/api/v1/me/tokens", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        reqwest::Client::new()
            .get(format!("{}/api/v1/me/tokens", h.url))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

async fn register(h: &Harness, id: &str, token: Option<&str>) -> reqwest::Response {
    let mut body =
        json!({"id": id, "account": "acme", "git_host": "github.com", "oauth_app": "github-app"});
    if let Some(t) = token {
        body["git_token"] = json!({ "token": t });
    }
    h.admin_request(Method::POST, "/runtimes")
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn runtime_token_cases(backend: Backend) {
    let h = Harness::start(backend).await;
    // mandatory
    let r = register(&h, "rt-a", None).await;
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("git_token"));
    // insufficient: the exact missing scope; nothing created
    let weak = h.github_pat("carol", &["repo"]);
    let r = register(&h, "rt-a", Some(&weak)).await;
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .starts_with("This token lacks the required scopes: admin:repo_hook."),
        "{v}"
    );
    assert!(h.state.registry.runtime("rt-a").await.unwrap().is_none());
    // the provider down: 503, nothing created
    h.mock.provider.switches().set_user_api_status(Some(503));
    let good = h.github_pat("alice", &["repo", "admin:repo_hook"]);
    assert_eq!(register(&h, "rt-a", Some(&good)).await.status(), 503);
    assert!(h.state.registry.runtime("rt-a").await.unwrap().is_none());
    h.mock.provider.switches().set_user_api_status(None);
    // sufficient (a broader scope than required is fine)
    let good = h.github_pat("alice", &["repo", "admin:repo_hook", "admin:org"]);
    let r = register(&h, "rt-a", Some(&good)).await;
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    let rt_credential = v["credential"].as_str().unwrap().to_owned();
    assert_eq!(v["git_token"]["provider_login"], "alice");
    assert!(
        !v.to_string().contains(&good),
        "the token value is never returned"
    );

    // status, never the value
    let st = h
        .admin_request(Method::GET, "/runtimes/rt-a/git-token")
        .send()
        .await
        .unwrap();
    assert_eq!(st.status(), 200);
    let text = st.text().await.unwrap();
    assert!(text.contains("classic personal access token") && !text.contains(&good));

    // the runtime reads its own runtime token
    let read = |cred: String, rt: &'static str| {
        let url = format!("{}/api/v1/runtimes/{rt}/token", h.url);
        async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(cred)
                .send()
                .await
                .unwrap()
        }
    };
    let r = read(rt_credential.clone(), "rt-a").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["token"], good.as_str());
    // another runtime's credential: 404; none: 401
    assert_eq!(read(credential("acme-prod"), "rt-a").await.status(), 404);
    assert_eq!(
        reqwest::Client::new()
            .get(format!("{}/api/v1/runtimes/rt-a/token", h.url))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    // the stores stay apart: no user token for anyone, and a runtime without one answers 404
    assert_eq!(
        h.runtime_get_with(&rt_credential, "rt-a", ALICE)
            .await
            .status(),
        404
    );
    assert_eq!(
        read(credential("acme-prod"), "acme-prod").await.status(),
        404
    );

    // rotation: an insufficient token is refused and the old one stays
    let r = h
        .admin_request(Method::PUT, "/runtimes/rt-a/git-token")
        .json(&json!({"token": weak}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(
        read(rt_credential.clone(), "rt-a")
            .await
            .json::<Value>()
            .await
            .unwrap()["token"],
        good.as_str()
    );
    let newer = h.github_pat("bob", &["repo", "admin:repo_hook"]);
    let r = h
        .admin_request(Method::PUT, "/runtimes/rt-a/git-token")
        .json(&json!({"token": newer}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["provider_login"], "bob");
    assert_eq!(
        read(rt_credential.clone(), "rt-a")
            .await
            .json::<Value>()
            .await
            .unwrap()["token"],
        newer.as_str()
    );

    // a runtime token copied into the user-token collection does not open there
    let rec = h
        .store
        .record_get(
            &gitbroker::store::Collection::new("runtime_token", "all"),
            "rt-a",
        )
        .await
        .unwrap()
        .unwrap();
    h.store
        .record_put(
            &gitbroker::store::Collection::new("grant", ALICE),
            "copied",
            &rec.value,
            gitbroker::store::Expect::Any,
        )
        .await
        .unwrap();
    assert!(
        h.state
            .lifecycle
            .grants()
            .get(ALICE, "copied")
            .await
            .is_err(),
        "never opens as a user token"
    );

    // a fine-grained token with the runtime permissions registers a runtime;
    // one without Webhooks write is refused by name
    let fine = |perms: &[&str]| h.pat("alice", "fine_grained", perms, None);
    let r = register(
        &h,
        "rt-fine",
        Some(&fine(&[
            "administration:write",
            "contents:write",
            "metadata:read",
        ])),
    )
    .await;
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("This token lacks the required permissions: Webhooks: Read and write."),
        "{v}"
    );
    let r = register(
        &h,
        "rt-fine",
        Some(&fine(&[
            "administration:write",
            "contents:write",
            "metadata:read",
            "webhooks:write",
        ])),
    )
    .await;
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["git_token"]["kind"], "fine-grained personal access token");

    // deleting the runtime deletes its runtime token
    assert_eq!(
        h.admin_request(Method::DELETE, "/runtimes/rt-a")
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert!(
        h.store
            .record_get(
                &gitbroker::store::Collection::new("runtime_token", "all"),
                "rt-a"
            )
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_tokens_embedded() {
    runtime_token_cases(Backend::Embedded).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_tokens_redis() {
    runtime_token_cases(Backend::Redis).await
}

/// A pasted token that replaces an OAuth token revokes that OAuth token at
/// the provider; the pasted token itself is never revoked by gitbroker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pasting_over_an_oauth_token_revokes_it() {
    let h = Harness::start(Backend::Embedded).await;
    let alice = h.signed_in("alice").await;
    alice.authorize("acme-prod").await;
    let oauth: Value = h
        .runtime_get("acme-prod", "acme-prod", ALICE)
        .await
        .json()
        .await
        .unwrap();
    let oauth = oauth["token"].as_str().unwrap().to_owned();
    let pat = h.github_pat("alice", &["repo"]);
    paste(&alice, "acme-prod", &pat, &[]).await;
    let user_api = |t: String| {
        let url = format!("{}/api/v3/user", h.mock.base_url.trim_end_matches('/'));
        async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(t)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let mut revoked = false;
    for _ in 0..40 {
        if user_api(oauth.clone()).await == 401 {
            revoked = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        revoked,
        "the replaced OAuth token is revoked at the provider"
    );
    assert_eq!(
        user_api(pat.clone()).await,
        200,
        "the pasted token stays valid"
    );
    // deleting a pasted token leaves it valid at the provider
    let tokens = alice.get("/tokens").await;
    alice
        .follow(
            alice
                .submit_action(&tokens, "/tokens/acme-prod/delete")
                .await,
        )
        .await;
    assert_eq!(user_api(pat).await, 200);
}
