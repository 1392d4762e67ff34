//! Every token gitbroker serves says how to present it to Git — HTTP Basic
//! with a username, or Bearer — as its provider requires for that kind of
//! token; and gitbroker answers in the shapes runtimes consume as they are:
//! Argo CD repository credentials, Flux `GitRepository` secrets, and git's
//! credential-helper protocol (`gitbroker credential`, run by the real git).
#![allow(
    clippy::disallowed_methods,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code
)]

mod support;

use gitbroker::mock::{Flavour, PatSpec};
use gitbroker::providers::PatInput;
use serde_json::{Value, json};
use support::*;

const ALICE: &str = "u-1001";

fn spec(flavour: Flavour, owner: &str, kind: &str, scopes: &[&str]) -> PatSpec {
    PatSpec {
        flavour,
        owner: owner.into(),
        kind: kind.into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        expires_at: None,
        repositories: Vec::new(),
        email: None,
    }
}

async fn served(h: &Harness, runtime: &str, user: &str) -> Value {
    let r = h.runtime_get(runtime, runtime, user).await;
    assert_eq!(r.status(), 200, "{runtime}/{user}");
    r.json().await.unwrap()
}

async fn served_runtime_token(h: &Harness, runtime: &str, format: &str) -> Value {
    let r = reqwest::Client::new()
        .get(format!("{}/api/v1/runtimes/{runtime}/token{format}", h.url))
        .bearer_auth(credential(runtime))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn paste(
    h: &Harness,
    runtime: &str,
    token: &str,
    username: Option<&str>,
    email: Option<&str>,
) {
    h.state
        .lifecycle
        .assign_pat(
            &Harness::acme_user(ALICE),
            runtime,
            &[],
            PatInput::new(token, username, email),
        )
        .await
        .unwrap();
}

async fn set_runtime_token(h: &Harness, runtime: &str, token: &str, username: Option<&str>) {
    let r = h
        .admin_request(
            reqwest::Method::PUT,
            &format!("/runtimes/{runtime}/git-token"),
        )
        .json(&json!({ "token": token, "username": username }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

/// Each provider × token kind, with the scheme its provider documents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_token_says_how_to_present_it() {
    let h = Harness::start(Backend::Embedded).await;
    let alice = h.signed_in("alice").await;
    let mock = &h.mock.provider;
    let basic = |u: &str| json!({ "scheme": "basic", "username": u });
    let bearer = json!({ "scheme": "bearer" });

    // GitHub: any non-empty username; gitbroker names the owner
    alice.authorize("acme-prod").await;
    assert_eq!(served(&h, "acme-prod", ALICE).await["auth"], basic("alice"));
    paste(
        &h,
        "acme-staging",
        &h.github_pat("alice", &["repo"]),
        None,
        None,
    )
    .await;
    assert_eq!(
        served(&h, "acme-staging", ALICE).await["auth"],
        basic("alice")
    );
    let fine = h.pat(
        "alice",
        "fine_grained",
        &["contents:write", "metadata:read"],
        None,
    );
    paste(&h, "acme-staging", &fine, None, None).await;
    assert_eq!(
        served(&h, "acme-staging", ALICE).await["auth"],
        basic("alice")
    );

    // GitLab: `oauth2` for OAuth and personal access tokens alike
    alice.authorize("gitlab-rt").await;
    assert_eq!(
        served(&h, "gitlab-rt", ALICE).await["auth"],
        basic("oauth2")
    );
    let glpat = mock.create_pat(spec(
        Flavour::Gitlab,
        "alice",
        "personal",
        &["read_api", "write_repository"],
    ));
    paste(&h, "gitlab-rt", &glpat, None, None).await;
    assert_eq!(
        served(&h, "gitlab-rt", ALICE).await["auth"],
        basic("oauth2")
    );

    // Gitea: the login, for OAuth and access tokens alike
    alice.authorize("gitea-rt").await;
    assert_eq!(served(&h, "gitea-rt", ALICE).await["auth"], basic("alice"));
    let gitea = mock.create_pat(spec(
        Flavour::Gitea,
        "alice",
        "personal",
        &["write:repository", "read:user"],
    ));
    paste(&h, "gitea-rt", &gitea, None, None).await;
    assert_eq!(served(&h, "gitea-rt", ALICE).await["auth"], basic("alice"));

    // Bitbucket Cloud: OAuth tokens with `x-token-auth`, API tokens with the
    // Bitbucket username
    alice.authorize("bbc-rt").await;
    assert_eq!(
        served(&h, "bbc-rt", ALICE).await["auth"],
        basic("x-token-auth")
    );
    let api = mock.create_pat(spec(
        Flavour::BitbucketCloud,
        "alice",
        "api_token",
        &[
            "read:user:bitbucket",
            "read:workspace:bitbucket",
            "read:repository:bitbucket",
            "write:repository:bitbucket",
        ],
    ));
    paste(&h, "bbc-rt", &api, Some("alice"), Some("alice@example.com")).await;
    assert_eq!(served(&h, "bbc-rt", ALICE).await["auth"], basic("alice"));

    // Bitbucket Data Center: OAuth tokens as Bearer, personal tokens as the
    // owner's password, project and repository tokens only as Bearer
    alice.authorize("bbdc-rt").await;
    assert_eq!(served(&h, "bbdc-rt", ALICE).await["auth"], bearer);
    let personal = mock.create_pat(spec(
        Flavour::BitbucketDataCenter,
        "alice",
        "personal",
        &["REPO_WRITE"],
    ));
    paste(&h, "bbdc-rt", &personal, Some("alice"), None).await;
    assert_eq!(served(&h, "bbdc-rt", ALICE).await["auth"], basic("alice"));
    for kind in ["project", "repository"] {
        let service = mock.create_pat(spec(
            Flavour::BitbucketDataCenter,
            "acme-deployer",
            kind,
            &["REPO_ADMIN"],
        ));
        set_runtime_token(&h, "bbdc-rt", &service, Some("acme-deployer")).await;
        let v = served_runtime_token(&h, "bbdc-rt", "").await;
        assert_eq!(v["auth"], bearer, "{kind}");
        assert_eq!(v["git_host"], "bitbucket.example.com");
    }
    // a Git Runtime token of GitHub: Basic with its owner
    set_runtime_token(
        &h,
        "acme-prod",
        &h.github_pat("dave", &["repo", "admin:repo_hook"]),
        None,
    )
    .await;
    assert_eq!(
        served_runtime_token(&h, "acme-prod", "").await["auth"],
        basic("dave")
    );
}

/// The documents Argo CD and Flux take as they are, with their own field
/// names: `username`/`password` for Basic, `bearerToken` for Bearer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argo_cd_and_flux_documents() {
    let h = Harness::start(Backend::Embedded).await;
    let alice = h.signed_in("alice").await;
    alice.authorize("acme-prod").await;
    let plain = served(&h, "acme-prod", ALICE).await;
    let token = plain["token"].as_str().unwrap();
    let get = |path: String| {
        reqwest::Client::new()
            .get(format!("{}{path}", h.url))
            .bearer_auth(credential("acme-prod"))
            .send()
    };
    let argo: Value = get(format!(
        "/api/v1/runtimes/acme-prod/users/{ALICE}/token?format=argocd"
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(argo["apiVersion"], "v1");
    assert_eq!(argo["kind"], "Secret");
    assert_eq!(
        argo["metadata"]["labels"]["argocd.argoproj.io/secret-type"],
        "repo-creds"
    );
    assert_eq!(argo["metadata"]["name"], "gitbroker-acme-prod-u-1001");
    assert_eq!(
        argo["stringData"],
        json!({ "type": "git", "url": "https://github.com", "username": "alice", "password": token })
    );
    let flux: Value = get(format!(
        "/api/v1/runtimes/acme-prod/users/{ALICE}/token?format=flux"
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(flux["kind"], "Secret");
    assert_eq!(
        flux["stringData"],
        json!({ "username": "alice", "password": token })
    );
    // Bearer tokens as `bearerToken`, never with a username
    let service = h.mock.provider.create_pat(spec(
        Flavour::BitbucketDataCenter,
        "acme-deployer",
        "project",
        &["REPO_ADMIN"],
    ));
    set_runtime_token(&h, "bbdc-rt", &service, Some("acme-deployer")).await;
    let argo = served_runtime_token(&h, "bbdc-rt", "?format=argocd").await;
    assert_eq!(
        argo["stringData"],
        json!({ "type": "git", "url": "https://bitbucket.example.com", "bearerToken": service })
    );
    let flux = served_runtime_token(&h, "bbdc-rt", "?format=flux").await;
    assert_eq!(flux["stringData"], json!({ "bearerToken": service }));
    // an unknown format is a clear 400
    let r = get("/api/v1/runtimes/acme-prod/token?format=jenkins".into())
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(v["detail"].as_str().unwrap().contains("format"), "{v}");
}

/// Runs `git credential fill` with `gitbroker credential` as the only
/// helper, in an empty home; returns git's output.
fn git_credential_fill(h: &Harness, helper_args: &str, input: &str) -> (bool, String, String) {
    let home = tempfile::tempdir().unwrap();
    let cred = home.path().join("credential");
    std::fs::write(&cred, credential(helper_args.split(' ').next().unwrap())).unwrap();
    let helper = format!(
        "!{} credential --url {} --credential-file {} --runtime {helper_args}",
        env!("CARGO_BIN_EXE_gitbroker"),
        h.url,
        cred.display()
    );
    let mut child = std::process::Command::new("git")
        .args([
            "-c",
            "credential.helper=",
            "-c",
            &format!("credential.helper={helper}"),
        ])
        .args(["credential", "fill"])
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GITBROKER_RUNTIME_CREDENTIAL")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The real git asks `gitbroker credential`: Basic tokens as username and
/// password with their expiry; Bearer tokens as `authtype=Bearer` when git
/// announces it can take them; other hosts are left alone; a missing token
/// stops git rather than letting it fall back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_credential_fill_through_the_helper() {
    let h = std::sync::Arc::new(
        Harness::start_with(
            Backend::Embedded,
            Options {
                token_lifetime_secs: Some(3600),
                ..Options::default()
            },
        )
        .await,
    );
    let alice = h.signed_in("alice").await;
    alice.authorize("acme-prod").await;
    let plain = served(&h, "acme-prod", ALICE).await;
    let expiry: chrono::DateTime<chrono::Utc> =
        plain["expires_at"].as_str().unwrap().parse().unwrap();
    let hh = h.clone();
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        git_credential_fill(
            &hh,
            &format!("acme-prod --user {ALICE}"),
            "protocol=https\nhost=github.com\npath=acme/app.git\n\n",
        )
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    assert!(out.contains("username=alice\n"), "{out}");
    assert!(
        out.contains(&format!("password={}\n", plain["token"].as_str().unwrap())),
        "{out}"
    );
    assert!(
        out.contains(&format!("password_expiry_utc={}\n", expiry.timestamp())),
        "{out}"
    );

    // another host: not ours, git goes on (and, with no other helper, fails)
    let hh = h.clone();
    let (ok, out, _) = tokio::task::spawn_blocking(move || {
        git_credential_fill(
            &hh,
            &format!("acme-prod --user {ALICE}"),
            "protocol=https\nhost=gitlab.com\n\n",
        )
    })
    .await
    .unwrap();
    assert!(!ok && !out.contains("password="), "{out}");

    // a Bearer-only token
    let service = h.mock.provider.create_pat(spec(
        Flavour::BitbucketDataCenter,
        "acme-deployer",
        "repository",
        &["REPO_ADMIN"],
    ));
    set_runtime_token(&h, "bbdc-rt", &service, Some("acme-deployer")).await;
    let hh = h.clone();
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        git_credential_fill(
            &hh,
            "bbdc-rt",
            "capability[]=authtype\nprotocol=https\nhost=bitbucket.example.com\n\n",
        )
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    assert!(out.contains("authtype=Bearer\n"), "{out}");
    assert!(out.contains(&format!("credential={service}\n")), "{out}");
    assert!(!out.contains("password="), "{out}");
    // a git that cannot take Bearer from a helper is told how, and stops
    let hh = h.clone();
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        git_credential_fill(
            &hh,
            "bbdc-rt",
            "protocol=https\nhost=bitbucket.example.com\n\n",
        )
    })
    .await
    .unwrap();
    assert!(!ok && !out.contains(&service), "{out}");
    assert!(err.contains("http.extraHeader"), "{err}");

    // no token for the user: git is stopped, with the broker's reason
    let hh = h.clone();
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        git_credential_fill(
            &hh,
            "acme-staging --user u-1002",
            "protocol=https\nhost=github.com\n\n",
        )
    })
    .await
    .unwrap();
    assert!(!ok && !out.contains("password="), "{out}");
    assert!(err.contains("has no Git user token"), "{err}");
}

/// Runtimes whose Git host is the mock's (any port: the helper matches the
/// host name), one per provider of the harness.
fn local_runtimes() -> String {
    [
        ("gh-local", "github-app"),
        ("gl-local", "gitlab-app"),
        ("bbc-local", "bbc-app"),
        ("bbdc-local", "bbdc-app"),
        ("gitea-local", "gitea-app"),
    ]
    .iter()
    .map(|(id, app)| {
        format!(
            "[[runtimes]]\nid = \"{id}\"\naccount = \"acme\"\ngit_host = \"127.0.0.1\"\noauth_app = \"{app}\"\ncredential = \"{}\"\n",
            credential(id)
        )
    })
    .collect()
}

/// How a runtime hands the token to git.
enum Present<'a> {
    /// `gitbroker credential` as git's only credential helper, for the
    /// runtime token or, with a user, that user's token.
    Helper {
        runtime: &'a str,
        user: Option<&'a str>,
    },
    /// A helper answering this username and password (what Argo CD and
    /// Flux do with `username`/`password`).
    Basic(&'a str, &'a str),
    /// `http.extraHeader=Authorization: Bearer …` (what Argo CD and Flux do
    /// with `bearerToken`).
    BearerHeader(&'a str),
}

/// `git clone` of `url` into a fresh directory, in a clean environment;
/// whether it worked, and git's standard error.
async fn clone(h: &Harness, how: Present<'_>, url: &str) -> (bool, String) {
    use std::os::unix::fs::PermissionsExt;
    let home = tempfile::tempdir().unwrap();
    let mut config = vec!["credential.helper=".to_owned()];
    match how {
        Present::Helper { runtime, user } => {
            let cred = home.path().join("credential");
            std::fs::write(&cred, credential(runtime)).unwrap();
            let user = user.map(|u| format!(" --user {u}")).unwrap_or_default();
            config.push(format!(
                "credential.helper=!{} credential --url {} --credential-file {} --runtime {runtime}{user}",
                env!("CARGO_BIN_EXE_gitbroker"),
                h.url,
                cred.display()
            ));
        }
        Present::Basic(username, password) => {
            let script = home.path().join("helper");
            std::fs::write(
                &script,
                format!(
                    "#!/bin/sh\ncat >/dev/null\ntest \"$1\" = get || exit 0\nprintf 'username=%s\\npassword=%s\\n' '{username}' '{password}'\n"
                ),
            )
            .unwrap();
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).unwrap();
            config.push(format!("credential.helper={}", script.display()));
        }
        Present::BearerHeader(token) => {
            config.push(format!("http.extraHeader=Authorization: Bearer {token}"));
        }
    }
    let mut git = tokio::process::Command::new("git");
    for c in &config {
        git.arg("-c").arg(c);
    }
    let dir = home.path().join("clone");
    let out = git
        .args(["clone", url, dir.to_str().unwrap()])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path().join(".config"))
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let cloned = dir.join("README.md").exists();
    assert_eq!(out.status.success(), cloned, "{err}");
    (cloned, err)
}

/// `git clone` through `gitbroker credential` for `runtime` (and `user`)
/// works.
async fn clones_through_helper(h: &Harness, runtime: &str, user: Option<&str>, url: &str) {
    let (ok, err) = clone(h, Present::Helper { runtime, user }, url).await;
    assert!(ok, "{runtime} {user:?}: {err}");
}

/// The real git clones from the mock's smart-HTTP server — which takes each
/// token only the way its provider does — with every kind of token exactly
/// as gitbroker serves it: through `gitbroker credential`, and as Argo CD
/// and Flux would use their documents. The same Bearer-only token presented
/// as Basic is refused, so a wrong scheme in the answer would fail here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clones_with_every_token_as_served() {
    let h = Harness::start_with(
        Backend::Embedded,
        Options {
            git: true,
            extra_toml: local_runtimes(),
            ..Options::default()
        },
    )
    .await;
    let mock = &h.mock.provider;
    let alice = h.signed_in("alice").await;
    let repo = |flavour, path: &'static str| mock.create_repo(flavour, path);
    let github = repo(Flavour::Github, "acme/demo").await.unwrap();
    let gitlab = repo(Flavour::Gitlab, "acme/demo").await.unwrap();
    let bbc = repo(Flavour::BitbucketCloud, "acme/demo").await.unwrap();
    let bbdc = repo(Flavour::BitbucketDataCenter, "PROJ/demo")
        .await
        .unwrap();
    let gitea = repo(Flavour::Gitea, "acme/demo").await.unwrap();

    // user tokens from OAuth, one provider each, through the helper
    for (runtime, url, auth) in [
        (
            "gh-local",
            &github.clone_url,
            json!({"scheme": "basic", "username": "alice"}),
        ),
        (
            "gl-local",
            &gitlab.clone_url,
            json!({"scheme": "basic", "username": "oauth2"}),
        ),
        (
            "bbc-local",
            &bbc.clone_url,
            json!({"scheme": "basic", "username": "x-token-auth"}),
        ),
        ("bbdc-local", &bbdc.clone_url, json!({"scheme": "bearer"})),
        (
            "gitea-local",
            &gitea.clone_url,
            json!({"scheme": "basic", "username": "alice"}),
        ),
    ] {
        alice.authorize(runtime).await;
        assert_eq!(served(&h, runtime, ALICE).await["auth"], auth, "{runtime}");
        clones_through_helper(&h, runtime, Some(ALICE), url).await;
    }

    // pasted tokens: GitLab PAT, Bitbucket Cloud API token, Data Center
    // personal token (Basic with its owner)
    let glpat = mock.create_pat(spec(
        Flavour::Gitlab,
        "alice",
        "personal",
        &["read_api", "write_repository"],
    ));
    paste(&h, "gl-local", &glpat, None, None).await;
    let api = mock.create_pat(spec(
        Flavour::BitbucketCloud,
        "alice",
        "api_token",
        &[
            "read:user:bitbucket",
            "read:workspace:bitbucket",
            "read:repository:bitbucket",
            "write:repository:bitbucket",
        ],
    ));
    paste(
        &h,
        "bbc-local",
        &api,
        Some("alice"),
        Some("alice@example.com"),
    )
    .await;
    let personal = mock.create_pat(spec(
        Flavour::BitbucketDataCenter,
        "alice",
        "personal",
        &["REPO_WRITE"],
    ));
    paste(&h, "bbdc-local", &personal, Some("alice"), None).await;
    let gitea_token = mock.create_pat(spec(
        Flavour::Gitea,
        "alice",
        "personal",
        &["write:repository", "read:user"],
    ));
    paste(&h, "gitea-local", &gitea_token, None, None).await;
    for (runtime, url) in [
        ("gl-local", &gitlab.clone_url),
        ("bbc-local", &bbc.clone_url),
        ("bbdc-local", &bbdc.clone_url),
        ("gitea-local", &gitea.clone_url),
    ] {
        let v = served(&h, runtime, ALICE).await;
        assert_eq!(v["auth"]["scheme"], "basic", "{runtime}: {v}");
        clones_through_helper(&h, runtime, Some(ALICE), url).await;
    }

    // GitHub personal access tokens: classic, and fine-grained for the repository
    let classic = h.github_pat("alice", &["repo"]);
    paste(&h, "gh-local", &classic, None, None).await;
    clones_through_helper(&h, "gh-local", Some(ALICE), &github.clone_url).await;
    let mut fine = spec(
        Flavour::Github,
        "alice",
        "fine_grained",
        &["contents:write", "metadata:read"],
    );
    fine.repositories = vec!["acme/demo".into()];
    let fine = mock.create_pat(fine);
    paste(&h, "gh-local", &fine, None, None).await;
    let v = served(&h, "gh-local", ALICE).await;
    assert_eq!(v["token"], fine.as_str());
    clones_through_helper(&h, "gh-local", Some(ALICE), &github.clone_url).await;

    // a Data Center repository token as the Git Runtime token: Bearer only
    let mut repository = spec(
        Flavour::BitbucketDataCenter,
        "acme-deployer",
        "repository",
        &["REPO_ADMIN"],
    );
    repository.repositories = vec!["PROJ/demo".into()];
    let repository = mock.create_pat(repository);
    set_runtime_token(&h, "bbdc-local", &repository, Some("acme-deployer")).await;
    clones_through_helper(&h, "bbdc-local", None, &bbdc.clone_url).await;
    let (ok, _) = clone(
        &h,
        Present::Basic("acme-deployer", &repository),
        &bbdc.clone_url,
    )
    .await;
    assert!(!ok, "a repository token taken as Basic");

    // a Data Center project token as the Git Runtime token: Bearer only
    let mut project = spec(
        Flavour::BitbucketDataCenter,
        "acme-deployer",
        "project",
        &["REPO_ADMIN"],
    );
    project.repositories = vec!["PROJ/demo".into()];
    let project = mock.create_pat(project);
    set_runtime_token(&h, "bbdc-local", &project, Some("acme-deployer")).await;
    clones_through_helper(&h, "bbdc-local", None, &bbdc.clone_url).await;
    // presented the way the old answer suggested (username and password),
    // the provider refuses it
    let (ok, err) = clone(
        &h,
        Present::Basic("acme-deployer", &project),
        &bbdc.clone_url,
    )
    .await;
    assert!(!ok, "a Bearer-only token taken as Basic");
    assert!(
        err.contains("Authentication failed") || err.contains("401"),
        "{err}"
    );

    // Argo CD and Flux: the fields of their documents, used as they use them
    for format in ["argocd", "flux"] {
        let doc = served_runtime_token(&h, "bbdc-local", &format!("?format={format}")).await;
        let data = &doc["stringData"];
        assert!(
            data.get("username").is_none() && data.get("password").is_none(),
            "{doc}"
        );
        let bearer = data["bearerToken"].as_str().unwrap();
        let (ok, err) = clone(&h, Present::BearerHeader(bearer), &bbdc.clone_url).await;
        assert!(ok, "{format} bearerToken: {err}");

        let r = reqwest::Client::new()
            .get(format!(
                "{}/api/v1/runtimes/gl-local/users/{ALICE}/token?format={format}",
                h.url
            ))
            .bearer_auth(credential("gl-local"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let doc: Value = r.json().await.unwrap();
        let data = &doc["stringData"];
        assert!(data.get("bearerToken").is_none(), "{doc}");
        let (user, pass) = (
            data["username"].as_str().unwrap(),
            data["password"].as_str().unwrap(),
        );
        let (ok, err) = clone(&h, Present::Basic(user, pass), &gitlab.clone_url).await;
        assert!(ok, "{format} username/password: {err}");
    }
}
