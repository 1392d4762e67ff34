//! Every provider kind through the broker, the way a person uses it: the
//! OAuth flow from the page, and pasted personal access tokens (valid,
//! missing one scope, expired, revoked, of the wrong kind), each outcome
//! and message checked on the page and at the runtime API.
#![allow(
    clippy::disallowed_methods,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code
)]

mod support;

use chrono::{Duration, Utc};
use gitbroker::mock::{Flavour, PatSpec};
use serde_json::Value;
use support::*;

const ALICE: &str = "u-1001";

struct Case {
    runtime: &'static str,
    kind: &'static str,
    flavour: Flavour,
    /// Expected Git username with an OAuth token.
    oauth_username: &'static str,
    pat_kind: &'static str,
    valid: &'static [&'static str],
    missing_one: &'static [&'static str],
    missing_text: &'static str,
    wrong_kind: &'static str,
    wrong_text: &'static str,
    username: bool,
    email: bool,
}

const CASES: &[Case] = &[
    Case {
        runtime: "acme-prod",
        kind: "github",
        flavour: Flavour::Github,
        oauth_username: "alice",
        pat_kind: "classic",
        valid: &["repo"],
        missing_one: &["public_repo"],
        missing_text: "This token lacks the required scopes: repo.",
        wrong_kind: "installation",
        wrong_text: "GitHub App installation token",
        username: false,
        email: false,
    },
    Case {
        runtime: "ghes-rt",
        kind: "github_enterprise",
        flavour: Flavour::Github,
        oauth_username: "alice",
        pat_kind: "classic",
        valid: &["repo"],
        missing_one: &["public_repo"],
        missing_text: "This token lacks the required scopes: repo.",
        wrong_kind: "installation",
        wrong_text: "GitHub App installation token",
        username: false,
        email: false,
    },
    Case {
        runtime: "gitlab-rt",
        kind: "gitlab",
        flavour: Flavour::Gitlab,
        oauth_username: "oauth2",
        pat_kind: "personal",
        valid: &["write_repository", "read_api"],
        missing_one: &["write_repository"],
        missing_text: "This token lacks the required scopes: read_api.",
        wrong_kind: "project",
        wrong_text: "project or group access token",
        username: false,
        email: false,
    },
    Case {
        runtime: "glsm-rt",
        kind: "gitlab_self_managed",
        flavour: Flavour::Gitlab,
        oauth_username: "oauth2",
        pat_kind: "personal",
        valid: &["write_repository", "read_api"],
        missing_one: &["read_api", "read_repository"],
        missing_text: "This token lacks the required scopes: write_repository.",
        wrong_kind: "group",
        wrong_text: "project or group access token",
        username: false,
        email: false,
    },
    Case {
        runtime: "bbc-rt",
        kind: "bitbucket_cloud",
        flavour: Flavour::BitbucketCloud,
        oauth_username: "x-token-auth",
        pat_kind: "api_token",
        valid: &[
            "read:user:bitbucket",
            "read:workspace:bitbucket",
            "read:repository:bitbucket",
            "write:repository:bitbucket",
        ],
        missing_one: &[
            "read:user:bitbucket",
            "read:workspace:bitbucket",
            "read:repository:bitbucket",
        ],
        missing_text: "write:repository:bitbucket",
        wrong_kind: "repo_access_token",
        wrong_text: "access token",
        username: true,
        email: true,
    },
    Case {
        runtime: "bbdc-rt",
        kind: "bitbucket_data_center",
        flavour: Flavour::BitbucketDataCenter,
        oauth_username: "alice",
        pat_kind: "personal",
        valid: &["REPO_WRITE"],
        missing_one: &["REPO_READ"],
        missing_text: "This token lacks the required permissions: REPO_WRITE.",
        wrong_kind: "project",
        wrong_text: "project",
        username: true,
        email: false,
    },
    Case {
        runtime: "gitea-rt",
        kind: "gitea",
        flavour: Flavour::Gitea,
        oauth_username: "alice",
        pat_kind: "personal",
        valid: &["write:repository", "read:user"],
        missing_one: &["read:repository", "read:user"],
        missing_text: "This token lacks the required scopes: write:repository.",
        wrong_kind: "oauth",
        wrong_text: "OAuth access token of an application",
        username: false,
        email: false,
    },
];

fn spec(
    c: &Case,
    kind: &str,
    scopes: &[&str],
    expires_at: Option<chrono::DateTime<Utc>>,
) -> PatSpec {
    PatSpec {
        flavour: c.flavour,
        owner: "alice".into(),
        kind: kind.into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        expires_at,
        repositories: Vec::new(),
        email: None,
    }
}

async fn paste(b: &Browser, c: &Case, token: &str) -> String {
    let tokens = b.get("/tokens").await;
    let mut form = vec![
        ("csrf".to_owned(), tokens.csrf()),
        ("token".to_owned(), token.to_owned()),
    ];
    if c.username {
        form.push(("username".into(), "alice".into()));
    }
    if c.email {
        form.push(("email".into(), "alice@example.com".into()));
    }
    let page = b
        .follow(b.post(&format!("/tokens/{}/pat", c.runtime), &form).await)
        .await;
    page.flash()
}

async fn stored_token(h: &Harness, runtime: &str) -> Option<Value> {
    let r = h.runtime_get(runtime, runtime, ALICE).await;
    (r.status() == 200)
        .then_some(())
        .map(|_| r)?
        .json()
        .await
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_provider_oauth_and_pasted_tokens() {
    let h = Harness::start(Backend::Embedded).await;
    let alice = h.signed_in("alice").await;
    let page = alice.get("/tokens").await;
    for c in CASES {
        // the form asks exactly for what the provider needs
        let row_start = page
            .body
            .find(&format!("id=\"runtime-{}\"", c.runtime))
            .unwrap();
        let row = &page.body[row_start..row_start + page.body[row_start..].find("</tr>").unwrap()];
        assert_eq!(
            row.contains("name=\"username\""),
            c.username,
            "{}: username field",
            c.kind
        );
        assert_eq!(
            row.contains("name=\"email\""),
            c.email,
            "{}: email field",
            c.kind
        );

        // OAuth
        let done = alice.authorize(c.runtime).await;
        assert!(
            done.flash().contains("authorized"),
            "{}: {}",
            c.kind,
            done.flash()
        );
        let v = stored_token(&h, c.runtime)
            .await
            .unwrap_or_else(|| panic!("{}: OAuth token served", c.kind));
        assert_eq!(v["provider"], c.kind);
        assert_eq!(v["username"], c.oauth_username, "{}", c.kind);
        let oauth_token = v["token"].clone();

        // a valid PAT replaces it
        let pat = h
            .mock
            .provider
            .create_pat(spec(c, c.pat_kind, c.valid, None));
        let msg = paste(&alice, c, &pat).await;
        assert!(
            msg.contains(&format!("added to runtime {}", c.runtime)),
            "{}: {msg}",
            c.kind
        );
        let v = stored_token(&h, c.runtime).await.unwrap();
        assert_eq!(v["token"], pat.as_str(), "{}", c.kind);
        assert_ne!(v["token"], oauth_token);

        // refusals: the message, and the stored token untouched
        let refusals: Vec<(String, String, &str)> = vec![
            (
                h.mock
                    .provider
                    .create_pat(spec(c, c.pat_kind, c.missing_one, None)),
                c.missing_text.to_owned(),
                "missing one scope",
            ),
            (
                h.mock.provider.create_pat(spec(
                    c,
                    c.pat_kind,
                    c.valid,
                    Some(Utc::now() - Duration::days(2)),
                )),
                String::new(),
                "expired",
            ),
            (
                {
                    let t = h
                        .mock
                        .provider
                        .create_pat(spec(c, c.pat_kind, c.valid, None));
                    h.mock.provider.revoke_pat(&t);
                    t
                },
                String::new(),
                "revoked",
            ),
            (
                {
                    // Data Center project tokens act as a service user of their own
                    let mut wrong = spec(c, c.wrong_kind, c.valid, None);
                    if c.flavour == Flavour::BitbucketDataCenter {
                        wrong.owner = "acme-deployer".into();
                    }
                    h.mock.provider.create_pat(wrong)
                },
                c.wrong_text.to_owned(),
                "wrong kind",
            ),
        ];
        for (token, expected, what) in refusals {
            let msg = paste(&alice, c, &token).await;
            assert!(
                msg.starts_with(&format!("Runtime {}: ", c.runtime)),
                "{} {what}: {msg}",
                c.kind
            );
            if expected.is_empty() {
                assert!(
                    msg.contains("expired")
                        || msg.contains("revoked")
                        || msg.contains("does not accept"),
                    "{} {what}: {msg}",
                    c.kind
                );
            } else {
                assert!(msg.contains(&expected), "{} {what}: {msg}", c.kind);
            }
            assert!(
                !msg.contains("could not validate"),
                "{} {what} is a verdict, not an outage: {msg}",
                c.kind
            );
            let v = stored_token(&h, c.runtime).await.unwrap();
            assert_eq!(
                v["token"],
                pat.as_str(),
                "{} {what}: nothing replaced",
                c.kind
            );
        }

        // the provider failing while validating: try again, never "invalid"
        h.mock.provider.switches().set_user_api_status(Some(503));
        let another = h
            .mock
            .provider
            .create_pat(spec(c, c.pat_kind, c.valid, None));
        let msg = paste(&alice, c, &another).await;
        h.mock.provider.switches().set_user_api_status(None);
        assert!(
            msg.contains("could not validate the token right now"),
            "{}: {msg}",
            c.kind
        );
        assert_eq!(
            stored_token(&h, c.runtime).await.unwrap()["token"],
            pat.as_str()
        );
    }
}
