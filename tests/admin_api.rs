//! The admin API: authentication, OAuth apps with write-only secrets,
//! runtimes with a credential shown once, validation messages, deletion
//! cascading to tokens, persistence across replicas.
#![allow(
    clippy::disallowed_methods,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code
)]

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use support::*;

fn app_body(id: &str, base: &str) -> Value {
    json!({
        "id": id, "provider": "github", "base_url": base,
        "client_id": "cid-2", "client_secret": "very-secret-client-secret-2",
        "scopes": ["repo"], "token_lifetime_secs": 3600
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_authentication() {
    let h = Harness::start(Backend::Embedded).await;
    let url = format!("{}/api/v1/admin/runtimes", h.url);
    let c = reqwest::Client::new();
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert_eq!(
        c.get(&url)
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        h.admin_request(Method::GET, "/runtimes")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // a session in the admin group (alice) may; bob may not
    let bob = h.signed_in("bob").await;
    assert_eq!(bob.client.get(&url).send().await.unwrap().status(), 403);
    let alice = h.signed_in("alice").await;
    assert_eq!(alice.client.get(&url).send().await.unwrap().status(), 200);
    // changes through a session need the CSRF header
    let body = json!({"id": "s-rt", "account": "acme", "git_host": "github.com", "oauth_app": "github-app",
        "git_token": {"token": h.github_pat("alice", &["repo", "admin:repo_hook"])}});
    let r = alice.client.post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let tokens = alice.get("/tokens").await;
    let csrf = &tokens.csrf();
    let r = alice
        .client
        .post(&url)
        .header("x-csrf-token", csrf)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_app_secrets_are_write_only() {
    let h = Harness::start(Backend::Embedded).await;
    let base = h.mock.base_url.trim_end_matches('/').to_owned();
    let r = h
        .admin_request(Method::POST, "/oauth-apps")
        .json(&app_body("gh2", &base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let text = r.text().await.unwrap();
    assert!(!text.contains("very-secret-client-secret-2"));
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["client_secret_set"], true);
    assert_eq!(v["callback_url"], format!("{}/oauth/callback/gh2", h.url));

    let list = h
        .admin_request(Method::GET, "/oauth-apps")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(list.contains("gh2") && list.contains("github-app"));
    assert!(!list.contains("very-secret-client-secret-2") && !list.contains(APP_SECRET));

    // at rest, sealed
    let raw = h
        .store
        .record_list(&gitbroker::store::Collection::new("oauth_app", "all"))
        .await
        .unwrap();
    let all: String = raw
        .iter()
        .map(|(_, v)| String::from_utf8_lossy(&v.value).into_owned())
        .collect();
    assert!(all.contains("cid-2"));
    assert!(!all.contains("very-secret-client-secret-2") && !all.contains(APP_SECRET));

    // update without a secret keeps it; the app still works for a flow
    let mut upd = app_body("gh2", &base);
    upd.as_object_mut().unwrap().remove("client_secret");
    upd["name"] = json!("renamed");
    let r = h
        .admin_request(Method::PUT, "/oauth-apps/gh2")
        .json(&upd)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let app = h.state.registry.app("gh2").await.unwrap().unwrap();
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&app.client_secret),
        "very-secret-client-secret-2"
    );
    assert_eq!(app.name, "renamed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_errors_name_the_field() {
    let h = Harness::start(Backend::Embedded).await;
    let base = h.mock.base_url.trim_end_matches('/').to_owned();
    let send = |body: Value| {
        h.admin_request(Method::POST, "/oauth-apps")
            .json(&body)
            .send()
    };

    let mut bad = app_body("x1", "ftp://example.com");
    let r = send(bad.clone()).await.unwrap();
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("base_url"));

    bad = app_body("x2", &base);
    bad["scopes"] = json!(["public_repo"]);
    let r = send(bad).await.unwrap();
    assert_eq!(r.status(), 422);
    let t = r.text().await.unwrap();
    assert!(t.contains("scopes") && t.contains("missing: repo"), "{t}");

    bad = app_body("x3", &base);
    bad["colour"] = json!("red");
    let r = send(bad).await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("colour"));

    bad = app_body("bad id!", &base);
    let r = send(bad).await.unwrap();
    assert_eq!(r.status(), 422);

    let r = send(app_body("github-app", &base)).await.unwrap();
    assert_eq!(r.status(), 409, "duplicate id");

    let r = h
        .admin_request(Method::POST, "/runtimes")
        .json(&json!({"id": "r9", "account": "nope", "git_host": "github.com", "oauth_app": "github-app",
            "git_token": {"token": h.github_pat("alice", &["repo", "admin:repo_hook"])}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("account"));

    let r = h
        .admin_request(Method::POST, "/runtimes")
        .body("{not json")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let r = h
        .admin_request(Method::DELETE, "/oauth-apps/github-app")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "in use by runtimes");
    assert!(r.text().await.unwrap().contains("acme-prod"));
    let r = h
        .admin_request(Method::GET, "/runtimes/nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_credential_shown_once_and_deletion_cascades() {
    let h = Harness::start(Backend::Embedded).await;
    let r = h.admin_request(Method::POST, "/runtimes")
        .json(&json!({"id": "new-rt", "account": "acme", "git_host": "github.com", "oauth_app": "github-app",
            "git_token": {"token": h.github_pat("alice", &["repo", "admin:repo_hook"])}}))
        .send().await.unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let v: Value = r.json().await.unwrap();
    let credential = v["credential"].as_str().unwrap().to_owned();
    assert!(credential.starts_with("gbrt_") && credential.len() > 40);

    let got = h
        .admin_request(Method::GET, "/runtimes/new-rt")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!got.contains(&credential) && !got.contains("credential"));
    let again = h
        .admin_request(Method::POST, "/runtimes")
        .json(&json!({"id": "new-rt", "account": "acme", "git_host": "github.com", "oauth_app": "github-app",
            "git_token": {"token": h.github_pat("alice", &["repo", "admin:repo_hook"])}}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);

    // a user authorizes the new runtime; the runtime reads the token with its credential
    let alice = h.signed_in("alice").await;
    let page = alice.authorize("new-rt").await;
    assert!(page.body.contains("authorized"), "{}", page.body);
    let api = |cred: String| {
        let url = format!("{}/api/v1/runtimes/new-rt/users/u-1001/token", h.url);
        async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(cred)
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(api(credential.clone()).await.status(), 200);

    // another replica on the same store sees the API-made runtime and its token
    let replica = h.another_replica().await;
    assert!(replica.registry.runtime("new-rt").await.unwrap().is_some());
    assert!(
        replica
            .lifecycle
            .assigned_grant("new-rt", "u-1001")
            .await
            .unwrap()
            .is_some()
    );

    let r = h
        .admin_request(Method::DELETE, "/runtimes/new-rt")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        api(credential).await.status(),
        401,
        "the credential died with the runtime"
    );
    assert!(
        h.state
            .lifecycle
            .assigned_grant("new-rt", "u-1001")
            .await
            .unwrap()
            .is_none(),
        "tokens deleted"
    );
    // the grant had no other runtime: it is gone too
    let rest = h
        .store
        .record_list(&gitbroker::store::Collection::new("grant", "u-1001"))
        .await
        .unwrap();
    assert!(rest.is_empty());
    // other runtimes untouched
    assert!(
        h.state
            .registry
            .runtime("acme-prod")
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_app_scopes_requires_reauthorization() {
    let h = Harness::start(Backend::Embedded).await;
    let alice = h.signed_in("alice").await;
    alice.authorize("acme-prod").await;
    assert_eq!(
        h.runtime_get("acme-prod", "acme-prod", "u-1001")
            .await
            .status(),
        200
    );
    let base = h.mock.base_url.trim_end_matches('/').to_owned();
    let mut body = app_body("github-app", &base);
    body["client_id"] = json!("test-client-id");
    body["scopes"] = json!(["repo", "admin:repo_hook"]);
    body.as_object_mut().unwrap().remove("client_secret");
    let r = h
        .admin_request(Method::PUT, "/oauth-apps/github-app")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = h.runtime_get("acme-prod", "acme-prod", "u-1001").await;
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "urn:gitbroker:problem:user-token-missing-scopes");
    assert!(v["detail"].as_str().unwrap().contains("admin:repo_hook"));
    let page = alice.get("/tokens").await;
    assert!(page.body.contains("Missing scopes"), "{}", page.body);
    assert!(page.body.contains("data-status=\"missing_scopes\""));
}

/// Key rotation: a new active key seals new writes, old keys still open old
/// records; a retired key leaves its records unreadable, shown as such.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encryption_key_rotation() {
    let h = Harness::start(Backend::Embedded).await;
    let alice = h.signed_in("alice").await;
    alice.authorize("acme-prod").await;
    let old_token = h
        .runtime_get("acme-prod", "acme-prod", "u-1001")
        .await
        .json::<Value>()
        .await
        .unwrap()["token"]
        .clone();
    const K2: &str = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY=";
    let rotated = h
        .replica_with(|t| t.replace(
            &format!("keys = [{{ id = \"k1\", key = \"{KEY}\" }}]"),
            &format!("active_key = \"k2\"\nkeys = [{{ id = \"k1\", key = \"{KEY}\" }}, {{ id = \"k2\", key = \"{K2}\" }}]"),
        ))
        .await;
    let (t, _) = rotated
        .lifecycle
        .assigned_grant("acme-prod", "u-1001")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&t.access_token),
        old_token.as_str().unwrap()
    );
    rotated
        .lifecycle
        .grants()
        .put(&t, gitbroker::store::Expect::Any)
        .await
        .unwrap();
    let raw = h
        .store
        .record_get(&gitbroker::store::Collection::new("grant", "u-1001"), &t.id)
        .await
        .unwrap()
        .unwrap();
    assert!(
        gitbroker::crypto::envelope_key_id(&raw.value) == Some("k2"),
        "re-sealed under the new key"
    );

    // k2 retired: the record does not open; page and runtime API say so
    let (_, url) = h
        .serve_replica(|t| {
            t.replace(
                &format!("key = \"{KEY}\""),
                &format!("key = \"{KEY}\" }}, {{ id = \"k0\", key = \"{K2}\""),
            )
            .replace("[encryption]", "[encryption]\nactive_key = \"k1\"")
        })
        .await;
    let r = reqwest::Client::new()
        .get(format!(
            "{url}/api/v1/runtimes/acme-prod/users/u-1001/token"
        ))
        .bearer_auth(credential("acme-prod"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "urn:gitbroker:problem:user-token-unreadable");
    let b = Browser::new(&url);
    b.sign_in("alice").await;
    let page = b.get("/tokens").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Unreadable"), "{}", page.body);
}

/// Deleting a runtime revokes its users' OAuth tokens at the provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_runtime_revokes_its_oauth_tokens() {
    let h = Harness::start(Backend::Embedded).await;
    let alice = h.signed_in("alice").await;
    alice.authorize("acme-staging").await;
    let token: Value = h
        .runtime_get("acme-staging", "acme-staging", "u-1001")
        .await
        .json()
        .await
        .unwrap();
    let token = token["token"].as_str().unwrap().to_owned();
    let r = h
        .admin_request(Method::DELETE, "/runtimes/acme-staging")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let url = format!("{}/api/v3/user", h.mock.base_url.trim_end_matches('/'));
    let mut revoked = false;
    for _ in 0..40 {
        let s = reqwest::Client::new()
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status();
        if s == 401 {
            revoked = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        revoked,
        "the deleted runtime's OAuth token is revoked at GitHub"
    );
}

/// A runtime's provider host cannot change under tokens it issued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_host_cannot_change_under_stored_tokens() {
    let h = Harness::start(Backend::Embedded).await;
    let to_gitlab = json!({"id": "acme-staging", "account": "acme", "git_host": "gitlab.com", "oauth_app": "gitlab-app"});
    // no tokens yet: the host may change
    let r = h
        .admin_request(Method::PUT, "/runtimes/acme-staging")
        .json(&to_gitlab)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let back = json!({"id": "acme-staging", "account": "acme", "git_host": "github.com", "oauth_app": "github-app"});
    assert_eq!(
        h.admin_request(Method::PUT, "/runtimes/acme-staging")
            .json(&back)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // with a user token: refused, and the token keeps being served
    let alice = h.signed_in("alice").await;
    alice.authorize("acme-staging").await;
    let r = h
        .admin_request(Method::PUT, "/runtimes/acme-staging")
        .json(&to_gitlab)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("register a new runtime"),
        "{v}"
    );
    assert_eq!(
        h.runtime_get("acme-staging", "acme-staging", "u-1001")
            .await
            .status(),
        200
    );
    // other changes are fine
    let renamed_host = json!({"id": "acme-staging", "account": "acme", "git_host": "GitHub.com", "oauth_app": "github-app"});
    assert_eq!(
        h.admin_request(Method::PUT, "/runtimes/acme-staging")
            .json(&renamed_host)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

/// Each replica serves runtime credentials and OAuth app requirements from
/// its own copy of the registry; an admin change made through another
/// replica reaches it within the cache's lifetime (half a second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_changes_reach_other_replicas_within_a_second() {
    let h = Harness::start(Backend::Redis).await;
    let (_, other) = h.serve_replica(|t| t).await;
    let alice = h.signed_in("alice").await;
    alice.authorize("acme-prod").await;
    let fetch = |base: String| async move {
        reqwest::Client::new()
            .get(format!(
                "{base}/api/v1/runtimes/acme-prod/users/u-1001/token"
            ))
            .bearer_auth(credential("acme-prod"))
            .send()
            .await
            .unwrap()
    };
    assert_eq!(
        fetch(other.clone()).await.status(),
        200,
        "the other replica has it cached"
    );
    // the app now requires more: the other replica refuses the token soon after
    let base = h.mock.base_url.trim_end_matches('/').to_owned();
    let mut body = app_body("github-app", &base);
    body["client_id"] = json!("test-client-id");
    body["scopes"] = json!(["repo", "admin:repo_hook"]);
    body.as_object_mut().unwrap().remove("client_secret");
    let changed = std::time::Instant::now();
    let r = h
        .admin_request(Method::PUT, "/oauth-apps/github-app")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // the replica that made the change sees it at once
    assert_eq!(fetch(h.url.clone()).await.status(), 404);
    let seen = loop {
        if fetch(other.clone()).await.status() == 404 {
            break changed.elapsed();
        }
        assert!(
            changed.elapsed() < std::time::Duration::from_secs(3),
            "never reached the other replica"
        );
        tokio::task::yield_now().await;
    };
    assert!(seen < std::time::Duration::from_secs(1), "took {seen:?}");
    // a deleted runtime's credential stops working there too
    let changed = std::time::Instant::now();
    let r = h
        .admin_request(Method::DELETE, "/runtimes/acme-prod")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let seen = loop {
        if fetch(other.clone()).await.status() == 401 {
            break changed.elapsed();
        }
        assert!(
            changed.elapsed() < std::time::Duration::from_secs(3),
            "never reached the other replica"
        );
        tokio::task::yield_now().await;
    };
    assert!(seen < std::time::Duration::from_secs(1), "took {seen:?}");
}

/// The token page lists runtimes and apps from its replica's copy of the
/// registry: a runtime an admin adds or deletes through another replica
/// appears and disappears there within a second; and the page's forms do
/// not trust that copy — a runtime deleted elsewhere is refused at once,
/// even while a stale page could still show it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_page_on_other_replicas_follows_admin_changes_within_a_second() {
    let h = Harness::start(Backend::Redis).await;
    let (_, other) = h.serve_replica(|t| t).await;
    let alice = h.signed_in("alice").await;
    let row = "id=\"runtime-page-rt\"";
    let page = alice.get(&format!("{other}/tokens")).await;
    assert_eq!(
        page.status, 200,
        "the session is the store's: {}",
        page.body
    );
    assert!(
        !page.body.contains(row),
        "the other replica has the runtimes cached"
    );
    // polls the other replica's page until `shows` holds; returns how long
    let until = |shows: bool| {
        let alice = &alice;
        let other = &other;
        async move {
            let changed = std::time::Instant::now();
            loop {
                let page = alice.get(&format!("{other}/tokens")).await;
                assert_eq!(page.status, 200);
                if page.body.contains(row) == shows {
                    break changed.elapsed();
                }
                assert!(
                    changed.elapsed() < std::time::Duration::from_secs(3),
                    "never reached the other replica"
                );
                tokio::task::yield_now().await;
            }
        }
    };

    let r = h
        .admin_request(Method::POST, "/runtimes")
        .json(&json!({"id": "page-rt", "account": "acme", "git_host": "github.com", "oauth_app": "github-app",
            "git_token": {"token": h.github_pat("alice", &["repo", "admin:repo_hook"])}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // the replica that made the change shows it at once
    assert!(alice.get("/tokens").await.body.contains(row));
    let seen = until(true).await;
    assert!(seen < std::time::Duration::from_secs(1), "took {seen:?}");
    assert!(
        alice
            .get(&format!("{other}/tokens"))
            .await
            .body
            .contains("name=\"runtimes\" value=\"page-rt\""),
        "and in github.com's shared form"
    );

    let csrf = alice.get(&format!("{other}/tokens")).await.csrf();
    let r = h
        .admin_request(Method::DELETE, "/runtimes/page-rt")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    // the other replica's forms read the store: refused before its page catches up
    let pasted = alice
        .post(
            &format!("{other}/tokens/page-rt/pat"),
            &[
                ("csrf".into(), csrf),
                ("token".into(), h.github_pat("alice", &["repo"])),
            ],
        )
        .await;
    assert_eq!(pasted.status, 404, "{}", pasted.body);
    let seen = until(false).await;
    assert!(seen < std::time::Duration::from_secs(1), "took {seen:?}");
}
