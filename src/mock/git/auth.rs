//! Who may use Git over HTTPS, flavour by flavour, against the mock's own
//! token books (OAuth tokens the flows issued, [`super::super::MockProvider::issue_oauth_token`])
//! and personal access tokens (`create_pat`), respecting revocation,
//! expiry, narrowed scopes and each token's owner:
//!
//! | flavour | accepted |
//! |---|---|
//! | GitHub | Basic with any non-empty username and the token as password; `Bearer` |
//! | GitLab | Basic with any username and the token as password (no `Bearer`); a token without `read_repository`, `write_repository` or `api` is refused like a wrong one (GitLab's "improperly scoped") |
//! | Bitbucket Cloud | Basic only: OAuth and repository access tokens with username `x-token-auth`; API tokens with the owner's username or `x-bitbucket-api-token-auth`; app passwords never |
//! | Bitbucket Data Center | `Bearer` with OAuth, personal, project and repository tokens; Basic only with a personal token and its owner's username (project and repository tokens are Bearer-only) |
//!
//! What a token reaches: tokens that act as a person (OAuth, classic and
//! personal tokens, API tokens) reach that person's own repositories
//! (`<login>/…`, Data Center `~<login>/…`) and every repository whose first
//! segment is not another mock user's (an organisation, group, workspace
//! or project); tokens bound to repositories (GitHub fine-grained, GitHub
//! App user and installation tokens, GitLab project tokens, Bitbucket
//! repository access tokens, Data Center repository tokens) reach their
//! `repositories` (by default `<owner>/demo`, Data Center `PROJ/demo`);
//! GitLab group tokens and Data Center project tokens reach every
//! repository under the namespaces or projects of their `repositories`.

use super::super::Shared;
use super::super::bitbucket_dc::covers;
use super::super::gitea;
use super::super::github::PUBLIC_ONLY;
use super::super::gitlab::pat_expired;
use super::super::oauth::{authorization_token, basic_auth};
use super::super::pats::{Flavour, Pat};
use super::repos::RepoPath;
use axum::http::HeaderMap;

/// What an accepted credential may do.
#[derive(Debug)]
pub(crate) struct GitCaller {
    /// `REMOTE_USER` for `git http-backend`: the token's owner (never a
    /// secret).
    pub user: String,
    pub read: bool,
    pub write: bool,
    pub reach: Reach,
}

/// Which repositories a credential reaches.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reach {
    /// A person's token: their own and every shared repository.
    Person(String),
    /// Exactly these paths (lowercase, no `.git`).
    Repositories(Vec<String>),
    /// Everything under these namespaces or projects (lowercase).
    Under(Vec<String>),
}

/// Why a request gets 401.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Nothing presented: git's first request, before it asks its helper.
    NoCredentials,
    /// Credentials the flavour does not take, or does not know: the
    /// flavour's usual 401.
    Rejected,
    /// Refused with this message instead of the usual one.
    Told(&'static str),
}

impl Refused {
    pub fn presented(&self) -> bool {
        !matches!(self, Self::NoCredentials)
    }
}

enum Presented {
    None,
    Basic {
        user: String,
        secret: String,
    },
    Bearer(String),
    /// An `Authorization` header of another scheme, or one that does not decode.
    Other,
}

fn presented(headers: &HeaderMap) -> Presented {
    match basic_auth(headers) {
        Some(Ok((user, secret))) => Presented::Basic { user, secret },
        Some(Err(())) => Presented::Other,
        None => match authorization_token(headers, &["bearer"]) {
            Some(token) => Presented::Bearer(token),
            None if headers.contains_key(axum::http::header::AUTHORIZATION) => Presented::Other,
            None => Presented::None,
        },
    }
}

fn has_any(held: &[String], wanted: &[&str]) -> bool {
    held.iter().any(|h| wanted.contains(&h.as_str()))
}

fn lower(list: &[String]) -> Vec<String> {
    list.iter()
        .map(|r| {
            let r = r.trim_matches('/').to_ascii_lowercase();
            r.strip_suffix(".git").map(str::to_owned).unwrap_or(r)
        })
        .collect()
}

/// A token's `repositories`, or `default` when it lists none.
fn listed(pat: &Pat, default: String) -> Vec<String> {
    if pat.spec.repositories.is_empty() {
        vec![default.to_ascii_lowercase()]
    } else {
        lower(&pat.spec.repositories)
    }
}

/// The credential of a Git request to `flavour`, checked.
pub(crate) fn authenticate(
    s: &Shared,
    flavour: Flavour,
    headers: &HeaderMap,
) -> Result<GitCaller, Refused> {
    let credential = presented(headers);
    if let Presented::None = credential {
        return Err(Refused::NoCredentials);
    }
    match flavour {
        Flavour::Github => github(s, credential),
        Flavour::Gitlab => gitlab(s, credential),
        Flavour::BitbucketCloud => bitbucket_cloud(s, credential),
        Flavour::BitbucketDataCenter => bitbucket_dc(s, credential),
        Flavour::Gitea => gitea(s, credential),
    }
}

fn gitea(s: &Shared, credential: Presented) -> Result<GitCaller, Refused> {
    // any username with the token as password, or the token as username
    // with an empty password (or `x-oauth-basic`), as Gitea's Basic auth
    // reads it; OAuth and access tokens alike
    let token = match credential {
        Presented::Basic { user, secret } if secret.is_empty() || secret == "x-oauth-basic" => user,
        Presented::Basic { secret, .. } => secret,
        Presented::Bearer(token) => token,
        _ => return Err(Refused::Rejected),
    };
    let caller = gitea::caller_of(s, &token).ok_or(Refused::Rejected)?;
    Ok(GitCaller {
        read: gitea::covers(&caller.scopes, "read:repository"),
        write: gitea::covers(&caller.scopes, "write:repository"),
        reach: Reach::Person(caller.user.login.to_ascii_lowercase()),
        user: caller.user.login.clone(),
    })
}

fn github(s: &Shared, credential: Presented) -> Result<GitCaller, Refused> {
    let token = match credential {
        Presented::Basic { user, secret } if !user.is_empty() => secret,
        Presented::Bearer(token) => token,
        _ => return Err(Refused::Rejected),
    };
    let now = s.now();
    if let Some(grant) = s.github.find(&token, now) {
        // the mock's repositories are private: `repo` reads and writes them
        let repo = has_any(&grant.scopes, &["repo"]);
        return Ok(GitCaller {
            user: grant.subject.clone(),
            read: repo,
            write: repo,
            reach: Reach::Person(grant.subject.to_ascii_lowercase()),
        });
    }
    let pat = s
        .pats
        .find(Flavour::Github, &token)
        .filter(|p| p.live(now))
        .ok_or(Refused::Rejected)?;
    let owner = pat.spec.owner.clone();
    let held = &pat.spec.scopes;
    Ok(match pat.spec.kind.as_str() {
        "fine_grained" | "app_user" | "installation" => {
            let reach = if held.iter().any(|p| p == PUBLIC_ONLY) {
                Vec::new()
            } else {
                listed(&pat, format!("{owner}/demo"))
            };
            GitCaller {
                read: has_any(held, &["contents:read", "contents:write", "contents:admin"]),
                write: has_any(held, &["contents:write", "contents:admin"]),
                reach: Reach::Repositories(reach),
                user: owner,
            }
        }
        _ => {
            let repo = has_any(held, &["repo"]);
            GitCaller {
                read: repo,
                write: repo,
                reach: Reach::Person(owner.to_ascii_lowercase()),
                user: owner,
            }
        }
    })
}

fn gitlab(s: &Shared, credential: Presented) -> Result<GitCaller, Refused> {
    // any username, the token as password; GitLab's Git endpoint takes Basic only
    let Presented::Basic { secret: token, .. } = credential else {
        return Err(Refused::Rejected);
    };
    let now = s.now();
    let read_scopes = ["api", "read_repository", "write_repository"];
    let write_scopes = ["api", "write_repository"];
    let caller = if let Some(grant) = s.gitlab.find(&token, now) {
        GitCaller {
            read: has_any(&grant.scopes, &read_scopes),
            write: has_any(&grant.scopes, &write_scopes),
            reach: Reach::Person(grant.subject.to_ascii_lowercase()),
            user: grant.subject,
        }
    } else {
        let pat = s
            .pats
            .find(Flavour::Gitlab, &token)
            .filter(|p| !p.revoked && !pat_expired(p, now))
            .ok_or(Refused::Rejected)?;
        let owner = pat.spec.owner.clone();
        let (user, reach) = match pat.spec.kind.as_str() {
            "project" => (
                "project_bot".to_owned(),
                Reach::Repositories(listed(&pat, format!("{owner}/demo"))),
            ),
            "group" => {
                let namespaces = listed(&pat, format!("{owner}/demo"))
                    .iter()
                    .map(|r| {
                        r.rsplit_once('/')
                            .map_or(r.as_str(), |(ns, _)| ns)
                            .to_owned()
                    })
                    .collect();
                ("group_bot".to_owned(), Reach::Under(namespaces))
            }
            _ => (owner.clone(), Reach::Person(owner.to_ascii_lowercase())),
        };
        GitCaller {
            read: has_any(&pat.spec.scopes, &read_scopes),
            write: has_any(&pat.spec.scopes, &write_scopes),
            user,
            reach,
        }
    };
    if !caller.read {
        // GitLab: "… or improperly scoped", a 401 like a wrong token
        return Err(Refused::Rejected);
    }
    Ok(caller)
}

/// What Bitbucket Cloud tells a Git client that sends an app password.
pub(crate) const APP_PASSWORD_GONE: &str = "App passwords are no longer supported: Bitbucket Cloud removed them on 2026-07-28. Use an API token instead.";

fn bitbucket_cloud(s: &Shared, credential: Presented) -> Result<GitCaller, Refused> {
    let Presented::Basic { user, secret } = credential else {
        return Err(Refused::Rejected);
    };
    let now = s.now();
    let pat = s.pats.find(Flavour::BitbucketCloud, &secret);
    if pat.as_ref().is_some_and(|p| p.spec.kind == "app_password") {
        return Err(Refused::Told(APP_PASSWORD_GONE));
    }
    // legacy (OAuth, repository access token) and API-token scope names
    let read = [
        "repository",
        "repository:write",
        "read:repository:bitbucket",
        "write:repository:bitbucket",
    ];
    let write = ["repository:write", "write:repository:bitbucket"];
    if user == "x-token-auth" {
        if let Some(grant) = s.bitbucket_cloud.find(&secret, now) {
            return Ok(GitCaller {
                read: has_any(&grant.scopes, &read),
                write: has_any(&grant.scopes, &write),
                reach: Reach::Person(grant.subject.to_ascii_lowercase()),
                user: grant.subject,
            });
        }
        return match pat {
            Some(p) if p.spec.kind == "repo_access_token" && p.live(now) => Ok(GitCaller {
                read: has_any(&p.spec.scopes, &read),
                write: has_any(&p.spec.scopes, &write),
                reach: Reach::Repositories(listed(&p, format!("{}/demo", p.spec.owner))),
                user: "x-token-auth".to_owned(),
            }),
            _ => Err(Refused::Rejected),
        };
    }
    match pat {
        Some(p)
            if p.spec.kind == "api_token"
                && p.live(now)
                && (user == "x-bitbucket-api-token-auth"
                    || user.eq_ignore_ascii_case(&p.spec.owner)) =>
        {
            Ok(GitCaller {
                read: has_any(&p.spec.scopes, &read),
                write: has_any(&p.spec.scopes, &write),
                reach: Reach::Person(p.spec.owner.to_ascii_lowercase()),
                user: p.spec.owner.clone(),
            })
        }
        _ => Err(Refused::Rejected),
    }
}

fn bitbucket_dc(s: &Shared, credential: Presented) -> Result<GitCaller, Refused> {
    let now = s.now();
    let (token, basic_user) = match credential {
        Presented::Bearer(token) => (token, None),
        Presented::Basic { user, secret } => (secret, Some(user)),
        _ => return Err(Refused::Rejected),
    };
    if basic_user.is_none()
        && let Some(grant) = s.bitbucket_dc.find(&token, now)
    {
        return Ok(GitCaller {
            read: covers(&grant.scopes, "REPO_READ"),
            write: covers(&grant.scopes, "REPO_WRITE"),
            reach: Reach::Person(grant.subject.to_ascii_lowercase()),
            user: grant.subject,
        });
    }
    let pat = s
        .pats
        .find(Flavour::BitbucketDataCenter, &token)
        .filter(|p| p.live(now))
        .ok_or(Refused::Rejected)?;
    let owner = pat.spec.owner.clone();
    let perms = &pat.spec.scopes;
    let reach = match pat.spec.kind.as_str() {
        "personal" => {
            if s.github_user(&owner).is_none() {
                return Err(Refused::Rejected);
            }
            Reach::Person(owner.to_ascii_lowercase())
        }
        // project and repository tokens only as Bearer tokens (Atlassian:
        // "Don't use this token with a username in Basic authentication")
        _ if basic_user.is_some() => return Err(Refused::Rejected),
        "project" => Reach::Under(
            listed(&pat, "PROJ/demo".to_owned())
                .iter()
                .map(|r| r.split('/').next().unwrap_or_default().to_owned())
                .collect(),
        ),
        _ => Reach::Repositories(listed(&pat, "PROJ/demo".to_owned())),
    };
    if basic_user.is_some_and(|u| !u.eq_ignore_ascii_case(&owner)) {
        return Err(Refused::Rejected);
    }
    Ok(GitCaller {
        read: covers(perms, "REPO_READ"),
        write: covers(perms, "REPO_WRITE"),
        reach,
        user: owner,
    })
}

impl GitCaller {
    /// Whether the credential reaches `path` of `flavour`; `logins` are
    /// the mock's users (lowercase), whose personal namespaces are theirs
    /// alone.
    pub fn reaches(&self, flavour: Flavour, path: &RepoPath, logins: &[String]) -> bool {
        match &self.reach {
            Reach::Person(login) => {
                let first = path.first();
                match flavour {
                    Flavour::BitbucketDataCenter => match first.strip_prefix('~') {
                        Some(user) => user == login,
                        None => true,
                    },
                    _ => first == login || !logins.iter().any(|l| l == first),
                }
            }
            Reach::Repositories(paths) => paths.iter().any(|p| p == path.as_str()),
            Reach::Under(prefixes) => prefixes.iter().any(|p| {
                path.as_str()
                    .strip_prefix(p.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::repos::parse;
    use super::*;

    fn caller(reach: Reach) -> GitCaller {
        GitCaller {
            user: "alice".into(),
            read: true,
            write: true,
            reach,
        }
    }

    #[test]
    fn reach() {
        let logins = vec!["alice".to_owned(), "bob".to_owned()];
        let path = |f, p| parse(f, p).unwrap();
        let alice = caller(Reach::Person("alice".into()));
        let gh = Flavour::Github;
        assert!(alice.reaches(gh, &path(gh, "Alice/demo"), &logins));
        assert!(alice.reaches(gh, &path(gh, "acme/app"), &logins));
        assert!(!alice.reaches(gh, &path(gh, "bob/demo"), &logins));
        let dc = Flavour::BitbucketDataCenter;
        assert!(alice.reaches(dc, &path(dc, "~ALICE/repo"), &logins));
        assert!(!alice.reaches(dc, &path(dc, "~bob/repo"), &logins));
        assert!(alice.reaches(dc, &path(dc, "PROJ/repo"), &logins));
        let listed = caller(Reach::Repositories(vec!["acme/app".into()]));
        assert!(listed.reaches(gh, &path(gh, "ACME/app.git"), &logins));
        assert!(!listed.reaches(gh, &path(gh, "acme/other"), &logins));
        let gl = Flavour::Gitlab;
        let group = caller(Reach::Under(vec!["acme".into()]));
        assert!(group.reaches(gl, &path(gl, "acme/sub/app"), &logins));
        assert!(!group.reaches(gl, &path(gl, "acmex/app"), &logins));
    }
}
