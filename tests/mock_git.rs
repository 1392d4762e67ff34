//! Git over smart HTTP against the mock provider, with the real `git`
//! binary and real HTTP on loopback: each flavour serves clones and pushes
//! of repositories the test creates, and refuses credentials presented the
//! way that provider does not take them. Credentials are given the way
//! runtimes will give them: a credential helper answering a username and
//! password, `http.extraHeader=Authorization: Bearer …`, or a credential
//! helper answering `authtype=Bearer` (git ≥ 2.46). Nothing global is read:
//! HOME and XDG_CONFIG_HOME point into a temporary directory, no system
//! configuration, no prompts.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod mock_common;

use gitbroker::mock::{Flavour, MockProvider, MockRepo, PatSpec, RunningMock, TrafficStats};
use mock_common::CLIENT_ID;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use tempfile::TempDir;

/// A mock serving Git from a temporary root, and a temporary home for the
/// git client.
struct World {
    mock: RunningMock,
    _root: TempDir,
    home: TempDir,
    scripts: AtomicUsize,
}

async fn world() -> World {
    let root = tempfile::tempdir().unwrap();
    let mut config = mock_common::config(false);
    config.git_root = Some(root.path().to_path_buf());
    let mock = MockProvider::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    World {
        mock,
        _root: root,
        home: tempfile::tempdir().unwrap(),
        scripts: AtomicUsize::new(0),
    }
}

/// How the runtime presents the token to git.
#[derive(Clone, Copy)]
enum Cred<'a> {
    None,
    /// A credential helper answering `username=` and `password=`.
    Basic(&'a str, &'a str),
    /// `http.extraHeader=Authorization: Bearer <token>`.
    BearerHeader(&'a str),
    /// A credential helper answering `authtype=Bearer` and `credential=`
    /// when git announces `capability[]=authtype`.
    BearerHelper(&'a str),
}

fn pat(flavour: Flavour, owner: &str, kind: &str, scopes: &[&str], repos: &[&str]) -> PatSpec {
    PatSpec {
        flavour,
        owner: owner.into(),
        kind: kind.into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        expires_at: None,
        repositories: repos.iter().map(|s| (*s).to_owned()).collect(),
        email: None,
    }
}

impl World {
    fn provider(&self) -> &MockProvider {
        &self.mock.provider
    }

    fn traffic(&self) -> TrafficStats {
        self.provider().traffic_stats()
    }

    async fn repo(&self, flavour: Flavour, path: &str) -> MockRepo {
        self.provider().create_repo(flavour, path).await.unwrap()
    }

    fn fresh(&self, name: &str) -> PathBuf {
        let n = self.scripts.fetch_add(1, Ordering::Relaxed);
        self.home.path().join(format!("{name}-{n}"))
    }

    /// Writes an executable helper script into the temporary home.
    fn script(&self, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.fresh("helper");
        std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
        path
    }

    /// What the Bearer helper was told by git, one `get` after the other.
    fn helper_log(&self) -> PathBuf {
        self.home.path().join("helper.log")
    }

    /// `git` with a clean environment and `cred`'s configuration.
    fn git(&self, cred: Cred<'_>, cwd: &Path, args: &[&str]) -> tokio::process::Command {
        let mut config: Vec<String> = vec![
            // no helper from anywhere else
            "credential.helper=".into(),
            "init.defaultBranch=main".into(),
        ];
        match cred {
            Cred::None => {}
            Cred::Basic(user, token) => {
                let helper = self.script(&format!(
                    "cat >/dev/null\ntest \"$1\" = get || exit 0\nprintf 'username=%s\\npassword=%s\\n' '{user}' '{token}'\n"
                ));
                config.push(format!("credential.helper={}", helper.display()));
            }
            Cred::BearerHeader(token) => {
                config.push(format!("http.extraHeader=Authorization: Bearer {token}"));
            }
            Cred::BearerHelper(token) => {
                let helper = self.script(&format!(
                    "input=$(cat)\n\
                     test \"$1\" = get || exit 0\n\
                     printf '%s\\n--\\n' \"$input\" >> '{log}'\n\
                     case \"$input\" in *'capability[]=authtype'*) ;; *) exit 0 ;; esac\n\
                     printf 'capability[]=authtype\\nauthtype=Bearer\\ncredential=%s\\nephemeral=1\\n' '{token}'\n",
                    log = self.helper_log().display()
                ));
                config.push(format!("credential.helper={}", helper.display()));
            }
        }
        let mut command = tokio::process::Command::new("git");
        for c in &config {
            command.arg("-c").arg(c);
        }
        command
            .args(args)
            .current_dir(cwd)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path().join(".config"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("LC_ALL", "C")
            .env("GIT_AUTHOR_NAME", "Runtime")
            .env("GIT_AUTHOR_EMAIL", "runtime@example.com")
            .env("GIT_COMMITTER_NAME", "Runtime")
            .env("GIT_COMMITTER_EMAIL", "runtime@example.com")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    async fn run(&self, cred: Cred<'_>, cwd: &Path, args: &[&str]) -> Output {
        self.git(cred, cwd, args).output().await.unwrap()
    }

    /// `git clone url`; the work tree and git's output.
    async fn clone(&self, cred: Cred<'_>, url: &str) -> (PathBuf, Output) {
        let dir = self.fresh("clone");
        let out = self
            .run(
                cred,
                self.home.path(),
                &["clone", url, dir.to_str().unwrap()],
            )
            .await;
        (dir, out)
    }

    async fn clone_ok(&self, cred: Cred<'_>, url: &str) -> PathBuf {
        let (dir, out) = self.clone(cred, url).await;
        assert!(
            out.status.success(),
            "clone of {url} failed: {}",
            stderr(&out)
        );
        let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
        assert!(readme.starts_with("# "), "{readme}");
        dir
    }

    /// A clone that fails; git's standard error.
    async fn clone_fails(&self, cred: Cred<'_>, url: &str) -> String {
        let (dir, out) = self.clone(cred, url).await;
        assert!(!out.status.success(), "clone of {url} should fail");
        assert!(!dir.join("README.md").exists());
        stderr(&out)
    }

    /// Commits a new file in the clone `dir` and pushes `main`.
    async fn push(&self, cred: Cred<'_>, dir: &Path, file: &str) -> Output {
        std::fs::write(dir.join(file), "pushed by a runtime\n").unwrap();
        let add = self.run(Cred::None, dir, &["add", file]).await;
        assert!(add.status.success(), "{}", stderr(&add));
        let commit = self
            .run(Cred::None, dir, &["commit", "-q", "-m", file])
            .await;
        assert!(commit.status.success(), "{}", stderr(&commit));
        self.run(cred, dir, &["push", "origin", "main"]).await
    }

    /// How many commits `main` of the served repository has.
    async fn commits(&self, repo: &MockRepo) -> u32 {
        let git_dir = format!("--git-dir={}", repo.dir.display());
        let out = self
            .run(
                Cred::None,
                self.home.path(),
                &[&git_dir, "rev-list", "--count", "main"],
            )
            .await;
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `git --version` as (major, minor).
async fn git_version() -> (u32, u32) {
    let out = tokio::process::Command::new("git")
        .arg("--version")
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let version = text.trim().trim_start_matches("git version ");
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

#[tokio::test]
async fn github_clone_push_and_refusals() {
    let w = world().await;
    let repo = w.repo(Flavour::Github, "alice/demo").await;
    assert_eq!(
        repo.clone_url,
        format!("{}/alice/demo.git", w.mock.base_url)
    );
    assert_eq!(w.commits(&repo).await, 1);
    let oauth = w.provider().issue_token("alice", CLIENT_ID, &["repo"]);

    // Basic with any non-empty username: clone and push
    let dir = w
        .clone_ok(Cred::Basic("x-access-token", &oauth), &repo.clone_url)
        .await;
    let push = w
        .push(Cred::Basic("x-access-token", &oauth), &dir, "one.txt")
        .await;
    assert!(push.status.success(), "{}", stderr(&push));
    assert_eq!(w.commits(&repo).await, 2);
    // Bearer too, as a header and through the helper's authtype
    w.clone_ok(Cred::BearerHeader(&oauth), &repo.clone_url)
        .await;
    assert!(
        git_version().await >= (2, 46),
        "the authtype helper needs git 2.46"
    );
    let dir = w
        .clone_ok(Cred::BearerHelper(&oauth), &repo.clone_url)
        .await;
    assert!(dir.join("one.txt").exists());
    let told = std::fs::read_to_string(w.helper_log()).unwrap();
    assert!(told.contains("capability[]=authtype"), "{told}");
    assert!(told.contains("wwwauth[]=Basic realm=\"GitHub\""), "{told}");
    assert_eq!(w.traffic().git_auth_failures, 0);

    // a read-only fine-grained token clones but cannot push
    let read_only = w.provider().create_pat(pat(
        Flavour::Github,
        "alice",
        "fine_grained",
        &["contents:read", "metadata:read"],
        &["alice/demo"],
    ));
    let dir = w
        .clone_ok(Cred::Basic("alice", &read_only), &repo.clone_url)
        .await;
    let push = w
        .push(Cred::Basic("alice", &read_only), &dir, "two.txt")
        .await;
    assert!(!push.status.success());
    let said = stderr(&push);
    assert!(said.contains("403"), "{said}");
    assert!(
        said.contains("Permission to alice/demo.git denied to alice."),
        "{said}"
    );
    assert_eq!(w.commits(&repo).await, 2);
    // a classic token with write access pushes
    let classic = w
        .provider()
        .create_pat(pat(Flavour::Github, "alice", "classic", &["repo"], &[]));
    let push = w
        .push(Cred::Basic("alice", &classic), &dir, "three.txt")
        .await;
    assert!(push.status.success(), "{}", stderr(&push));
    // the refused commit went along with it
    assert_eq!(w.commits(&repo).await, 4);

    // nothing presented: git has nothing to answer the challenge with
    let said = w.clone_fails(Cred::None, &repo.clone_url).await;
    assert!(said.contains("could not read Username"), "{said}");
    assert_eq!(w.traffic().git_auth_failures, 0);
    // another user's token does not see alice's repository
    let bob = w.provider().issue_token("bob", CLIENT_ID, &["repo"]);
    let said = w
        .clone_fails(Cred::Basic("bob", &bob), &repo.clone_url)
        .await;
    assert!(said.contains("Repository not found."), "{said}");
    // a token without `repo` does not either (the repository is private)
    let no_repo = w.provider().issue_token("alice", CLIENT_ID, &["read:user"]);
    let said = w
        .clone_fails(Cred::Basic("alice", &no_repo), &repo.clone_url)
        .await;
    assert!(said.contains("Repository not found."), "{said}");
    // revoked and expired tokens are wrong credentials
    assert!(w.provider().revoke(&oauth));
    let said = w
        .clone_fails(Cred::Basic("x-access-token", &oauth), &repo.clone_url)
        .await;
    assert!(said.contains("Authentication failed"), "{said}");
    assert!(w.provider().expire_pat(&classic));
    w.clone_fails(Cred::BearerHeader(&classic), &repo.clone_url)
        .await;
    let traffic = w.traffic();
    assert_eq!(traffic.git_auth_failures_by_flavour.github, 2);
    assert_eq!(traffic.git_auth_failures, 2);
    assert!(traffic.git_requests_by_flavour.github > 10);
    // Git requests are not API requests
    assert_eq!(traffic.api_requests, 0);
    assert_eq!(w.provider().api_calls_for(&oauth), 0);
}

#[tokio::test]
async fn gitlab_nested_namespaces_basic_only() {
    let w = world().await;
    let repo = w.repo(Flavour::Gitlab, "acme/platform/app").await;
    assert_eq!(
        repo.clone_url,
        format!("{}/gitlab/acme/platform/app.git", w.mock.base_url)
    );
    let personal = w.provider().create_pat(pat(
        Flavour::Gitlab,
        "alice",
        "personal",
        &["read_api", "write_repository"],
        &[],
    ));
    // any username: `oauth2` by convention, or another one
    let dir = w
        .clone_ok(Cred::Basic("oauth2", &personal), &repo.clone_url)
        .await;
    w.clone_ok(Cred::Basic("anything", &personal), &repo.clone_url)
        .await;
    let push = w
        .push(Cred::Basic("oauth2", &personal), &dir, "one.txt")
        .await;
    assert!(push.status.success(), "{}", stderr(&push));
    assert_eq!(w.commits(&repo).await, 2);

    // an OAuth token with read_repository clones; its push is refused
    let oauth =
        w.provider()
            .issue_oauth_token(Flavour::Gitlab, "alice", CLIENT_ID, &["read_repository"]);
    let dir = w
        .clone_ok(Cred::Basic("oauth2", &oauth), &repo.clone_url)
        .await;
    let push = w.push(Cred::Basic("oauth2", &oauth), &dir, "two.txt").await;
    assert!(!push.status.success());
    let said = stderr(&push);
    assert!(said.contains("403"), "{said}");
    assert!(
        said.contains("You are not allowed to push code to this project."),
        "{said}"
    );
    // narrowed to no repository scope: GitLab's 401, "improperly scoped"
    assert!(w.provider().set_token_scopes(&oauth, &["read_api"]));
    let said = w
        .clone_fails(Cred::Basic("oauth2", &oauth), &repo.clone_url)
        .await;
    assert!(said.contains("Authentication failed"), "{said}");
    // GitLab's Git endpoint takes no Bearer
    w.clone_fails(Cred::BearerHeader(&personal), &repo.clone_url)
        .await;
    assert_eq!(w.traffic().git_auth_failures_by_flavour.gitlab, 2);

    // a group token reaches the group's projects, a project token its own
    let group = w.provider().create_pat(pat(
        Flavour::Gitlab,
        "alice",
        "group",
        &["read_repository"],
        &["acme/platform/other"],
    ));
    w.clone_ok(Cred::Basic("oauth2", &group), &repo.clone_url)
        .await;
    let project = w.provider().create_pat(pat(
        Flavour::Gitlab,
        "alice",
        "project",
        &["read_repository"],
        &["acme/platform/other"],
    ));
    let said = w
        .clone_fails(Cred::Basic("oauth2", &project), &repo.clone_url)
        .await;
    assert!(said.contains("could not be found"), "{said}");
}

#[tokio::test]
async fn bitbucket_cloud_usernames() {
    let w = world().await;
    let repo = w.repo(Flavour::BitbucketCloud, "acme/app").await;
    assert_eq!(
        repo.clone_url,
        format!("{}/bitbucket/acme/app.git", w.mock.base_url)
    );
    let oauth = w.provider().issue_oauth_token(
        Flavour::BitbucketCloud,
        "alice",
        CLIENT_ID,
        &["account", "team", "repository:write"],
    );
    // OAuth tokens: username x-token-auth, and nothing else
    let dir = w
        .clone_ok(Cred::Basic("x-token-auth", &oauth), &repo.clone_url)
        .await;
    let push = w
        .push(Cred::Basic("x-token-auth", &oauth), &dir, "one.txt")
        .await;
    assert!(push.status.success(), "{}", stderr(&push));
    assert_eq!(w.commits(&repo).await, 2);
    let said = w
        .clone_fails(Cred::Basic("alice", &oauth), &repo.clone_url)
        .await;
    assert!(said.contains("Authentication failed"), "{said}");
    w.clone_fails(Cred::BearerHeader(&oauth), &repo.clone_url)
        .await;
    assert_eq!(w.traffic().git_auth_failures_by_flavour.bitbucket_cloud, 2);

    // API tokens: the owner's username or x-bitbucket-api-token-auth
    let api = w.provider().create_pat(pat(
        Flavour::BitbucketCloud,
        "alice",
        "api_token",
        &["read:repository:bitbucket"],
        &[],
    ));
    w.clone_ok(Cred::Basic("alice", &api), &repo.clone_url)
        .await;
    let dir = w
        .clone_ok(
            Cred::Basic("x-bitbucket-api-token-auth", &api),
            &repo.clone_url,
        )
        .await;
    let push = w
        .push(
            Cred::Basic("x-bitbucket-api-token-auth", &api),
            &dir,
            "two.txt",
        )
        .await;
    assert!(!push.status.success());
    assert!(stderr(&push).contains("403"), "{}", stderr(&push));
    // not with the account email (that is for the REST API), nor x-token-auth
    w.clone_fails(Cred::Basic("alice@example.com", &api), &repo.clone_url)
        .await;
    w.clone_fails(Cred::Basic("x-token-auth", &api), &repo.clone_url)
        .await;
    // app passwords are gone
    let app_password = w.provider().create_pat(pat(
        Flavour::BitbucketCloud,
        "alice",
        "app_password",
        &["repository:write"],
        &[],
    ));
    let said = w
        .clone_fails(Cred::Basic("alice", &app_password), &repo.clone_url)
        .await;
    assert!(said.contains("no longer supported"), "{said}");
    assert_eq!(w.traffic().git_auth_failures_by_flavour.bitbucket_cloud, 5);
}

#[tokio::test]
async fn bitbucket_data_center_project_tokens_are_bearer_only() {
    let w = world().await;
    let repo = w.repo(Flavour::BitbucketDataCenter, "PROJ/app").await;
    assert_eq!(
        repo.clone_url,
        format!("{}/bitbucket-dc/scm/PROJ/app.git", w.mock.base_url)
    );
    let project = w.provider().create_pat(pat(
        Flavour::BitbucketDataCenter,
        "acme-deployer",
        "project",
        &["REPO_WRITE"],
        &["PROJ/app"],
    ));
    // Bearer: as a header, and through the credential helper
    let dir = w
        .clone_ok(Cred::BearerHeader(&project), &repo.clone_url)
        .await;
    let push = w.push(Cred::BearerHeader(&project), &dir, "one.txt").await;
    assert!(push.status.success(), "{}", stderr(&push));
    assert_eq!(w.commits(&repo).await, 2);
    assert!(
        git_version().await >= (2, 46),
        "the authtype helper needs git 2.46"
    );
    let dir = w
        .clone_ok(Cred::BearerHelper(&project), &repo.clone_url)
        .await;
    let told = std::fs::read_to_string(w.helper_log()).unwrap();
    assert!(told.contains("capability[]=authtype"), "{told}");
    assert!(
        told.contains("wwwauth[]=Bearer realm=\"Atlassian Bitbucket\""),
        "{told}"
    );
    let push = w.push(Cred::BearerHelper(&project), &dir, "two.txt").await;
    assert!(push.status.success(), "{}", stderr(&push));
    assert_eq!(w.traffic().git_auth_failures, 0);
    // Basic with a project token is refused, whatever the username
    let said = w
        .clone_fails(Cred::Basic("acme-deployer", &project), &repo.clone_url)
        .await;
    assert!(said.contains("Authentication failed"), "{said}");
    assert_eq!(
        w.traffic()
            .git_auth_failures_by_flavour
            .bitbucket_data_center,
        1
    );

    // a read-only repository token clones and cannot push
    let read_only = w.provider().create_pat(pat(
        Flavour::BitbucketDataCenter,
        "app-reader",
        "repository",
        &["REPO_READ"],
        &["PROJ/app"],
    ));
    let dir = w
        .clone_ok(Cred::BearerHeader(&read_only), &repo.clone_url)
        .await;
    let push = w
        .push(Cred::BearerHeader(&read_only), &dir, "three.txt")
        .await;
    assert!(!push.status.success());
    assert!(stderr(&push).contains("403"), "{}", stderr(&push));
    w.clone_fails(Cred::Basic("app-reader", &read_only), &repo.clone_url)
        .await;

    // personal tokens: Basic with the owner's username, or Bearer
    let personal = w.provider().create_pat(pat(
        Flavour::BitbucketDataCenter,
        "alice",
        "personal",
        &["REPO_WRITE"],
        &[],
    ));
    let dir = w
        .clone_ok(Cred::Basic("alice", &personal), &repo.clone_url)
        .await;
    w.clone_ok(Cred::BearerHeader(&personal), &repo.clone_url)
        .await;
    w.clone_fails(Cred::Basic("bob", &personal), &repo.clone_url)
        .await;
    let push = w
        .push(Cred::Basic("alice", &personal), &dir, "four.txt")
        .await;
    assert!(push.status.success(), "{}", stderr(&push));
    // OAuth tokens as Bearer tokens
    let oauth = w.provider().issue_oauth_token(
        Flavour::BitbucketDataCenter,
        "alice",
        CLIENT_ID,
        &["REPO_READ"],
    );
    w.clone_ok(Cred::BearerHeader(&oauth), &repo.clone_url)
        .await;
    w.clone_fails(Cred::Basic("alice", &oauth), &repo.clone_url)
        .await;
    assert_eq!(
        w.traffic()
            .git_auth_failures_by_flavour
            .bitbucket_data_center,
        4
    );
}

#[tokio::test]
async fn repositories_from_outside_the_process() {
    let w = world().await;
    let http = reqwest::Client::new();
    let repos = format!("{}/__mock/repos", w.mock.base_url);
    let create = |flavour: &str, path: &str| {
        http.post(&repos)
            .json(&serde_json::json!({ "flavour": flavour, "path": path }))
            .send()
    };
    let r = create("bitbucket_data_center", "~alice/notes")
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let body: serde_json::Value = r.json().await.unwrap();
    let url = body["clone_url"].as_str().unwrap().to_owned();
    assert_eq!(
        url,
        format!("{}/bitbucket-dc/scm/~alice/notes.git", w.mock.base_url)
    );
    let personal = w.provider().create_pat(pat(
        Flavour::BitbucketDataCenter,
        "alice",
        "personal",
        &["REPO_READ"],
        &[],
    ));
    w.clone_ok(Cred::Basic("alice", &personal), &url).await;
    // a personal project is its owner's alone
    let bobs = w.provider().create_pat(pat(
        Flavour::BitbucketDataCenter,
        "bob",
        "personal",
        &["REPO_ADMIN"],
        &[],
    ));
    w.clone_fails(Cred::Basic("bob", &bobs), &url).await;

    let r = create("bitbucket_data_center", "~ALICE/notes.git")
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["clone_url"]
            .as_str()
            .unwrap()
            .ends_with("/scm/~ALICE/notes.git")
    );
    let r = create("github", "acme/a/b").await.unwrap();
    assert_eq!(r.status(), 400);
    let r = create("github", "../etc").await.unwrap();
    assert_eq!(r.status(), 400);
    let r = create("gitlab", "acme/deep/down/app").await.unwrap();
    assert_eq!(r.status(), 201);

    // without a Git root: no repositories, and the Git routes are 404
    let bare = MockProvider::start(mock_common::config(false), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let r = http
        .post(format!("{}/__mock/repos", bare.base_url))
        .json(&serde_json::json!({ "flavour": "github", "path": "alice/demo" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let token = bare.provider.issue_token("alice", CLIENT_ID, &["repo"]);
    for url in [
        bare.provider.clone_url(Flavour::Github, "alice/demo"),
        bare.provider.clone_url(Flavour::Gitlab, "acme/app"),
        bare.provider.clone_url(Flavour::BitbucketCloud, "acme/app"),
        bare.provider
            .clone_url(Flavour::BitbucketDataCenter, "PROJ/app"),
    ] {
        let r = http
            .get(format!("{url}/info/refs?service=git-upload-pack"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{url}");
        let said = w.clone_fails(Cred::Basic("alice", &token), &url).await;
        assert!(said.contains("not found"), "{said}");
    }
    // the other routes are as they were
    let r = http
        .get(format!("{}/gitlab/api/v4/nothing", bare.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["message"],
        "404 Not Found"
    );
}

/// Runs `program` with `input` on its standard input; its output.
async fn pipe(program: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success());
    out.stdout
}

#[tokio::test]
async fn protocol_v2_and_gzip_request_bodies() {
    let w = world().await;
    let repo = w.repo(Flavour::Github, "alice/demo").await;
    let token = w.provider().issue_token("alice", CLIENT_ID, &["repo"]);
    let http = reqwest::Client::new();
    let refs = format!("{}/info/refs?service=git-upload-pack", repo.clone_url);

    // the Git-Protocol header reaches the backend
    let r = http
        .get(&refs)
        .basic_auth("x-access-token", Some(&token))
        .header("git-protocol", "version=2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "application/x-git-upload-pack-advertisement"
    );
    let body = r.text().await.unwrap();
    assert!(body.contains("version 2"), "{body}");

    // protocol v0: the advertisement names main's commit
    let r = http
        .get(&refs)
        .basic_auth("x-access-token", Some(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    let line = body
        .lines()
        .find(|l| l.contains("refs/heads/main"))
        .unwrap_or_else(|| panic!("{body}"));
    // `<pkt-len><oid> <ref>`, after a flush-pkt on the first ref's line
    let first = line.split(' ').next().unwrap();
    let oid = &first[first.len() - 40..];
    assert!(oid.bytes().all(|b| b.is_ascii_hexdigit()), "{line}");

    // a gzip-compressed upload-pack request, as git sends large ones
    let want = format!("want {oid}\n");
    let request = format!("{:04x}{want}00000009done\n", want.len() + 4);
    let gzipped = pipe("gzip", &["-c"], request.as_bytes()).await;
    let r = http
        .post(format!("{}/git-upload-pack", repo.clone_url))
        .basic_auth("x-access-token", Some(&token))
        .header("content-type", "application/x-git-upload-pack-request")
        .header("content-encoding", "gzip")
        .body(gzipped)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "application/x-git-upload-pack-result"
    );
    let pack = r.bytes().await.unwrap();
    assert!(pack.windows(4).any(|w| w == b"PACK"), "{pack:?}");

    // dumb HTTP is not served; unknown encodings are refused
    let r = http
        .get(format!("{}/info/refs", repo.clone_url))
        .basic_auth("x-access-token", Some(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http
        .post(format!("{}/git-upload-pack", repo.clone_url))
        .basic_auth("x-access-token", Some(&token))
        .header("content-type", "application/x-git-upload-pack-request")
        .header("content-encoding", "br")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let r = http.get(&refs).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Basic realm=\"GitHub\"");
    let r = http.post(&refs).send().await.unwrap();
    assert_eq!(r.status(), 405);
}
