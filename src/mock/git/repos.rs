//! Where each flavour's repositories live on disk and in URLs, and how a
//! test creates one: a bare repository made by the real `git`, with one
//! commit on `main` holding a `README.md`.
//!
//! Layout: `<git_root>/<flavour dir>/<path, lowercased>.git`, the flavour
//! dirs being `github`, `gitlab`, `bitbucket` and `bitbucket-dc`. Paths are
//! compared without case, as the providers compare owners, namespaces,
//! workspaces, project keys and slugs.

use super::super::pats::Flavour;
use chrono::{DateTime, Utc};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::AsyncWriteExt;

/// A repository's path as a flavour names it, checked and lowercased:
/// `owner/repo` (GitHub), `group/…/project` (GitLab), `workspace/repo`
/// (Bitbucket Cloud), `PROJECT/repo` or `~user/repo` (Bitbucket Data
/// Center). Never contains `..`, `%`, a backslash or an empty segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RepoPath(String);

impl RepoPath {
    /// The lowercased path, without `.git`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first segment: owner, top-level group, workspace or project.
    pub fn first(&self) -> &str {
        self.0.split('/').next().unwrap_or_default()
    }
}

/// GitHub owners that would collide with the mock's own routes at `/`.
const GITHUB_RESERVED: &[&str] = &[
    "api",
    "login",
    "idp",
    "gitlab",
    "bitbucket",
    "bitbucket-dc",
    "__mock",
];

fn segment_ok(segment: &str, allow_tilde: bool) -> bool {
    let body = match segment.strip_prefix('~') {
        Some(rest) if allow_tilde => rest,
        _ => segment,
    };
    !body.is_empty()
        && body != "."
        && body != ".."
        && body.len() <= 100
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Checks `path` (with or without a trailing `.git`) against what
/// `flavour` allows; `Err` says why not.
pub(crate) fn parse(flavour: Flavour, path: &str) -> Result<RepoPath, String> {
    let path = path.trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    let segments: Vec<&str> = path.split('/').collect();
    let (min, max, shape) = match flavour {
        Flavour::Github => (2, 2, "owner/repo"),
        Flavour::Gitlab => (2, 20, "namespace/project (namespaces may nest)"),
        Flavour::BitbucketCloud => (2, 2, "workspace/repo"),
        Flavour::BitbucketDataCenter => (2, 2, "PROJECT/repo or ~user/repo"),
        Flavour::Gitea => (2, 2, "owner/repo"),
    };
    if !(min..=max).contains(&segments.len()) {
        return Err(format!("a {flavour:?} repository path is {shape}"));
    }
    for (i, segment) in segments.iter().enumerate() {
        let tilde = flavour == Flavour::BitbucketDataCenter && i == 0;
        if !segment_ok(segment, tilde) {
            return Err(format!(
                "`{segment}` is not a valid path segment (letters, digits, `-`, `_`, `.`)"
            ));
        }
    }
    let lowered = path.to_ascii_lowercase();
    if flavour == Flavour::Github
        && GITHUB_RESERVED.contains(&segments[0].to_ascii_lowercase().as_str())
    {
        return Err(format!(
            "the mock serves its own routes under /{}; choose another owner",
            segments[0]
        ));
    }
    Ok(RepoPath(lowered))
}

/// The directory under the Git root that holds a flavour's repositories
/// (`GIT_PROJECT_ROOT` of its `git http-backend`).
pub(crate) fn flavour_dir(flavour: Flavour) -> &'static str {
    match flavour {
        Flavour::Github => "github",
        Flavour::Gitlab => "gitlab",
        Flavour::BitbucketCloud => "bitbucket",
        Flavour::BitbucketDataCenter => "bitbucket-dc",
        Flavour::Gitea => "gitea",
    }
}

/// `<root>/<flavour dir>`.
pub(crate) fn project_root(root: &Path, flavour: Flavour) -> PathBuf {
    root.join(flavour_dir(flavour))
}

/// `<root>/<flavour dir>/<path>.git`.
pub(crate) fn repo_dir(root: &Path, flavour: Flavour, path: &RepoPath) -> PathBuf {
    project_root(root, flavour).join(format!("{}.git", path.as_str()))
}

/// The URL `git clone` takes, as each provider lays it out.
pub(crate) fn clone_url(base: &str, flavour: Flavour, path: &str) -> String {
    let path = path.trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    match flavour {
        Flavour::Github => format!("{base}/{path}.git"),
        Flavour::Gitlab => format!("{base}/gitlab/{path}.git"),
        Flavour::BitbucketCloud => format!("{base}/bitbucket/{path}.git"),
        Flavour::BitbucketDataCenter => format!("{base}/bitbucket-dc/scm/{path}.git"),
        Flavour::Gitea => format!("{base}/gitea/{path}.git"),
    }
}

/// Why a repository could not be created.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// The mock was started without [`super::super::MockConfig::git_root`].
    #[error("the mock serves no Git repositories: it was started without a git_root")]
    NoGitRoot,
    #[error("invalid repository path: {0}")]
    InvalidPath(String),
    #[error("the repository already exists")]
    AlreadyExists,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// `git` failed; the message is its standard error.
    #[error("git {command} failed: {stderr}")]
    Git { command: String, stderr: String },
}

/// A clean environment for the `git` the mock runs: no system or global
/// configuration, no prompts, identity and dates fixed.
fn git_command(home: &Path, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("git");
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Runs git with `input` on its standard input; its trimmed standard output.
async fn git(
    mut command: tokio::process::Command,
    what: &str,
    input: Option<&[u8]>,
) -> Result<String, RepoError> {
    if input.is_some() {
        command.stdin(Stdio::piped());
    }
    let mut child = command.spawn()?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(input).await?;
        drop(stdin);
    }
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        return Err(RepoError::Git {
            command: what.to_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Creates the bare repository `dir` with one commit on `main` (dated
/// `now`) whose tree holds `README.md`. `dir` must not exist; its parent
/// directories are created.
pub(crate) async fn create(
    root: &Path,
    dir: &Path,
    title: &str,
    now: DateTime<Utc>,
) -> Result<(), RepoError> {
    if let Some(parent) = dir.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    // atomic: of two requests for the same path, one wins
    match tokio::fs::create_dir(dir).await {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(RepoError::AlreadyExists);
        }
        other => other?,
    }
    let result = fill(root, dir, title, now).await;
    if result.is_err() {
        // leave nothing half made behind
        let _ = tokio::fs::remove_dir_all(dir).await;
    }
    result
}

async fn fill(root: &Path, dir: &Path, title: &str, now: DateTime<Utc>) -> Result<(), RepoError> {
    let dir_str = dir.to_string_lossy().into_owned();
    let git_dir = format!("--git-dir={dir_str}");
    git(
        git_command(
            root,
            &[
                "init",
                "--bare",
                "--quiet",
                "--initial-branch=main",
                &dir_str,
            ],
        ),
        "init",
        None,
    )
    .await?;
    let readme = format!("# {title}\n\nA repository served by gitbroker's mock Git provider.\n");
    let blob = git(
        git_command(root, &[&git_dir, "hash-object", "-w", "--stdin"]),
        "hash-object",
        Some(readme.as_bytes()),
    )
    .await?;
    let tree = git(
        git_command(root, &[&git_dir, "mktree"]),
        "mktree",
        Some(format!("100644 blob {blob}\tREADME.md\n").as_bytes()),
    )
    .await?;
    let date = format!("{} +0000", now.timestamp());
    let mut commit = git_command(
        root,
        &[&git_dir, "commit-tree", &tree, "-m", "Initial commit"],
    );
    commit
        .env("GIT_AUTHOR_NAME", "Mock Git Provider")
        .env("GIT_AUTHOR_EMAIL", "mock@gitbroker.invalid")
        .env("GIT_AUTHOR_DATE", &date)
        .env("GIT_COMMITTER_NAME", "Mock Git Provider")
        .env("GIT_COMMITTER_EMAIL", "mock@gitbroker.invalid")
        .env("GIT_COMMITTER_DATE", &date);
    let commit = git(commit, "commit-tree", None).await?;
    git(
        git_command(root, &[&git_dir, "update-ref", "refs/heads/main", &commit]),
        "update-ref",
        None,
    )
    .await?;
    Ok(())
}

/// The directory `git --exec-path` names, where `git-http-backend` lives.
pub(crate) async fn exec_path(home: &Path) -> Result<PathBuf, RepoError> {
    git(git_command(home, &["--exec-path"]), "--exec-path", None)
        .await
        .map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_per_flavour() {
        let ok = |f, p: &str| parse(f, p).map(|r| r.as_str().to_owned());
        assert_eq!(
            ok(Flavour::Github, "Alice/Demo.git").as_deref(),
            Ok("alice/demo")
        );
        assert_eq!(
            ok(Flavour::Github, "/acme/.github/").as_deref(),
            Ok("acme/.github")
        );
        assert!(ok(Flavour::Github, "acme/a/b").is_err());
        assert!(ok(Flavour::Github, "acme").is_err());
        assert!(ok(Flavour::Github, "api/x").is_err());
        assert!(ok(Flavour::Github, "acme/..").is_err());
        assert!(ok(Flavour::Github, "acme/a%2fb").is_err());
        assert!(ok(Flavour::Github, "acme//b").is_err());
        assert_eq!(
            ok(Flavour::Gitlab, "group/sub/project").as_deref(),
            Ok("group/sub/project")
        );
        assert_eq!(
            ok(Flavour::BitbucketDataCenter, "~ALICE/repo").as_deref(),
            Ok("~alice/repo")
        );
        assert!(ok(Flavour::BitbucketDataCenter, "PROJ/~repo").is_err());
        assert!(ok(Flavour::BitbucketCloud, "~ws/repo").is_err());
    }

    #[test]
    fn clone_urls() {
        let base = "http://127.0.0.1:1";
        assert_eq!(
            clone_url(base, Flavour::Github, "a/b"),
            "http://127.0.0.1:1/a/b.git"
        );
        assert_eq!(
            clone_url(base, Flavour::Gitlab, "g/s/p.git"),
            "http://127.0.0.1:1/gitlab/g/s/p.git"
        );
        assert_eq!(
            clone_url(base, Flavour::BitbucketCloud, "w/r"),
            "http://127.0.0.1:1/bitbucket/w/r.git"
        );
        assert_eq!(
            clone_url(base, Flavour::BitbucketDataCenter, "PROJ/r"),
            "http://127.0.0.1:1/bitbucket-dc/scm/PROJ/r.git"
        );
    }
}
