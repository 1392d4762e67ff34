//! The lifecycle tells what happens: every change and every read of a token
//! is an event handed to the sinks (audit log, webhooks, notifications),
//! with ids, provider, login and fingerprint — never the token.
#![allow(
    clippy::disallowed_methods,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code
)]

mod support;

use async_trait::async_trait;
use gitbroker::clock::ManualClock;
use gitbroker::events::{Action, ActorKind, Event, EventSink};
use std::sync::{Arc, Mutex};
use support::*;

const ALICE: &str = "u-1001";

#[derive(Default)]
struct Collect(Mutex<Vec<Event>>);

#[async_trait]
impl EventSink for Collect {
    async fn record(&self, event: &Event) {
        self.0.lock().unwrap().push(event.clone());
    }
}

impl Collect {
    fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

fn actions(events: &[Event]) -> Vec<(&'static str, Option<&str>)> {
    events
        .iter()
        .map(|e| (e.action.as_str(), e.runtime.as_deref()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_and_read_is_an_event_without_a_secret() {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let h = Harness::start_with(
        Backend::Embedded,
        Options {
            clock: Some(clock.clone()),
            ..Options::default()
        },
    )
    .await;
    let sink = Arc::new(Collect::default());
    h.state.lifecycle.events().add(sink.clone());
    let everything = Arc::new(Collect::default());
    h.state.lifecycle.events().add(everything.clone());
    let mut secrets = Vec::new();

    let alice = h.signed_in("alice").await;
    let e = sink.take();
    assert_eq!(actions(&e), [("session.signed_in", None)]);
    assert_eq!(e[0].actor.kind, ActorKind::User);
    assert_eq!(e[0].user.as_deref(), Some(ALICE));

    alice.authorize("acme-prod").await;
    let e = sink.take();
    assert_eq!(actions(&e), [("user_token.assigned", Some("acme-prod"))]);
    let assigned = &e[0];
    assert_eq!(assigned.user.as_deref(), Some(ALICE));
    assert_eq!(assigned.provider.as_deref(), Some("github"));
    assert_eq!(assigned.login.as_deref(), Some("alice"));
    assert_eq!(assigned.outcome.as_deref(), Some("oauth"));
    let fp = assigned.fingerprint.clone().unwrap();
    assert_eq!(fp.len(), 12);

    let r = h.runtime_get("acme-prod", "acme-prod", ALICE).await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    let token = v["token"].as_str().unwrap().to_owned();
    secrets.push(token.clone());
    let e = sink.take();
    assert_eq!(actions(&e), [("user_token.read", Some("acme-prod"))]);
    assert_eq!(e[0].actor.kind, ActorKind::Runtime);
    assert_eq!(e[0].actor.id, "acme-prod");
    assert_eq!(e[0].fingerprint.as_deref(), Some(fp.as_str()));

    // one grant for a second runtime
    let page = alice.get("/tokens").await;
    alice
        .submit_action(&page, "/tokens/acme-staging/reuse")
        .await;
    let e = sink.take();
    assert_eq!(actions(&e), [("user_token.reused", Some("acme-staging"))]);

    // revoked at the provider: the check changes its status, for each of
    // its runtimes
    assert!(h.mock.provider.revoke(&token));
    clock.advance(chrono::Duration::hours(5));
    assert!(h.state.lifecycle.run_due().await.checked >= 1);
    let e = sink.take();
    let mut changed: Vec<_> = e
        .iter()
        .filter(|e| e.action == Action::UserTokenStatusChanged)
        .map(|e| e.runtime.clone().unwrap())
        .collect();
    changed.sort();
    assert_eq!(changed, ["acme-prod", "acme-staging"], "{e:?}");
    let first = e
        .iter()
        .find(|e| e.action == Action::UserTokenStatusChanged)
        .unwrap();
    let status = first.status.as_ref().unwrap();
    assert_eq!(
        (status.from.as_str(), status.to.as_str()),
        ("valid", "invalid")
    );
    assert_eq!(first.actor.kind, ActorKind::System);
    // the check itself, once per grant, with what it found
    let checked: Vec<_> = e
        .iter()
        .filter(|e| e.action == Action::UserTokenChecked)
        .collect();
    assert_eq!(checked.len(), 1, "{e:?}");
    assert_eq!(checked[0].outcome.as_deref(), Some("invalid"));
    assert_eq!(checked[0].fingerprint.as_deref(), Some(fp.as_str()));
    assert!(!checked[0].action.is_change());

    // deleting one, then the other
    let page = alice.get("/tokens").await;
    let page = alice
        .follow(alice.submit_action(&page, "/tokens/acme-prod/delete").await)
        .await;
    let e = sink.take();
    assert_eq!(actions(&e), [("user_token.deleted", Some("acme-prod"))]);
    assert_eq!(e[0].outcome.as_deref(), Some("still_used"));
    alice
        .submit_action(&page, "/tokens/acme-staging/delete")
        .await;
    let e = sink.take();
    let names: Vec<_> = e.iter().map(|e| e.action.as_str()).collect();
    assert!(names.contains(&"user_token.deleted"), "{names:?}");
    assert!(names.contains(&"user_token.revoked"), "{names:?}");

    // Git Runtime tokens: set by an admin, read by the runtime, checked
    let pat = h.github_pat("dave", &["repo", "admin:repo_hook"]);
    secrets.push(pat.clone());
    let r = h
        .admin_request(reqwest::Method::PUT, "/runtimes/acme-prod/git-token")
        .json(&serde_json::json!({ "token": pat }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let e = sink.take();
    assert_eq!(actions(&e), [("runtime_token.rotated", Some("acme-prod"))]);
    assert_eq!(e[0].actor.kind, ActorKind::Admin);
    assert_eq!(e[0].login.as_deref(), Some("dave"));
    let r = reqwest::Client::new()
        .get(format!("{}/api/v1/runtimes/acme-prod/token", h.url))
        .bearer_auth(credential("acme-prod"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        actions(&sink.take()),
        [("runtime_token.read", Some("acme-prod"))]
    );
    assert!(h.mock.provider.revoke_pat(&pat));
    clock.advance(chrono::Duration::hours(5));
    h.state.lifecycle.run_due().await;
    let e = sink.take();
    let runtime_changes: Vec<_> = e
        .iter()
        .filter(|e| e.action == Action::RuntimeTokenStatusChanged)
        .collect();
    assert_eq!(runtime_changes.len(), 1, "{e:?}");
    assert_eq!(runtime_changes[0].status.as_ref().unwrap().to, "invalid");

    // deleting the runtime
    let r = h
        .admin_request(reqwest::Method::DELETE, "/runtimes/globex-prod")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(
        actions(&sink.take()),
        [("runtime.deleted", Some("globex-prod"))]
    );

    let page = alice.get("/tokens").await;
    alice.submit(&page, "sign-out").await;
    let e = sink.take();
    assert_eq!(actions(&e), [("session.signed_out", None)]);

    // and no event ever carried a secret
    let all = everything.take();
    // 14 changes and reads, and the two checks
    assert_eq!(all.len(), 16, "{all:?}");
    assert!(
        all.iter().any(
            |e| e.action == Action::UserTokenChecked && e.outcome.as_deref() == Some("invalid")
        )
    );
    let json = serde_json::to_string(&all).unwrap();
    let debug = format!("{all:?}");
    for s in &secrets {
        assert!(!json.contains(s.as_str()) && !debug.contains(s.as_str()));
    }
    // ids are unique
    let mut ids: Vec<_> = all.iter().map(|e| e.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), all.len());
}
