//! Personal access tokens (and their look-alikes) that tests create with
//! chosen owner, kind, scopes, expiry and repositories, for every flavour.
//! The flavours' APIs look tokens up here as well as in their OAuth books.

use super::lock;
use super::oauth::random_alnum;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;

/// Which provider flavour a token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flavour {
    Github,
    Gitlab,
    BitbucketCloud,
    BitbucketDataCenter,
    /// Gitea and Forgejo.
    Gitea,
}

/// What a test asks for. `kind` is flavour-specific:
/// - github: `classic` (ghp_), `fine_grained` (github_pat_), `installation` (ghs_), `oauth` (gho_),
///   `app_user` (ghu_, a GitHub App user token: permissions like `fine_grained`)
/// - gitlab: `personal`, `project`, `group` (the last two belong to bot users),
///   `fine_grained` (a fine-grained personal access token: `granular_scopes`)
/// - bitbucket_cloud: `api_token` (ATATT…), `app_password`, `repo_access_token`
/// - bitbucket_data_center: `personal`, `project`, `repository` (HTTP access tokens)
/// - gitea: `personal` (an access token: 40 hex characters, Gitea scopes such as
///   `write:repository`, `read:user`, `all`; no expiry unless `expires_at` is set),
///   `oauth` (shaped like Gitea's OAuth access tokens, a JWT)
///
/// `scopes` are scope names, or `name:level` permissions for tokens that
/// have permissions (GitHub fine-grained: `contents:write`, `metadata:read`,
/// `administration:write`, `webhooks:write`; Bitbucket Data Center:
/// `REPO_READ`, `REPO_WRITE`, `REPO_ADMIN`, `PROJECT_…`). GitHub fine-grained
/// tokens also take `repository_access:public`: "Public repositories"
/// access, which reaches none of the mock's (private) repositories.
/// GitLab fine-grained tokens take `permission:access` (`read_repository:
/// all_memberships`, `read_user:user`, `write_repository:selected_memberships`
/// with the projects in `repositories`), answered as `granular_scopes`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PatSpec {
    pub flavour: Flavour,
    pub owner: String,
    pub kind: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Repositories the token can reach, `owner/name` (fine-grained tokens,
    /// project/repository tokens). Empty: the owner's demo repository.
    #[serde(default)]
    pub repositories: Vec<String>,
    /// Bitbucket Cloud API tokens: the Atlassian account email for Basic auth.
    #[serde(default)]
    pub email: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Pat {
    pub spec: PatSpec,
    pub revoked: bool,
    /// The token this one was rotated into (GitLab self-rotation).
    pub successor: Option<String>,
}

/// What rotating a token with itself did.
#[derive(Debug)]
pub(crate) enum Rotation {
    /// A new token; the old one is revoked.
    Rotated(String),
    /// The token was already rotated: as GitLab does (gitlab-org/gitlab
    /// #524639), every live successor was revoked and nothing was issued.
    Reused,
    /// Unknown, revoked without a successor, or of another flavour.
    Refused,
}

impl Pat {
    pub fn live(&self, now: DateTime<Utc>) -> bool {
        !self.revoked && self.spec.expires_at.is_none_or(|e| now < e)
    }
}

#[derive(Default)]
pub(crate) struct PatBook {
    tokens: Mutex<HashMap<String, Pat>>,
}

fn shape(spec: &PatSpec) -> String {
    match (spec.flavour, spec.kind.as_str()) {
        (Flavour::Github, "fine_grained") => format!("github_pat_{}", random_alnum(82)),
        (Flavour::Github, "installation") => format!("ghs_{}", random_alnum(36)),
        (Flavour::Github, "oauth") => format!("gho_{}", random_alnum(36)),
        (Flavour::Github, "app_user") => format!("ghu_{}", random_alnum(36)),
        (Flavour::Github, _) => format!("ghp_{}", random_alnum(36)),
        (Flavour::Gitlab, _) => format!("glpat-{}", random_alnum(20)),
        (Flavour::BitbucketCloud, "api_token") => format!("ATATT{}", random_alnum(180)),
        (Flavour::BitbucketCloud, "repo_access_token") => format!("ATCTT{}", random_alnum(180)),
        (Flavour::BitbucketCloud, _) => random_alnum(20),
        (Flavour::BitbucketDataCenter, _) => format!("BBDC-{}", random_alnum(44)),
        // SHA-1 sized, hex, no prefix: Gitea's access tokens look like this
        (Flavour::Gitea, "oauth") => format!("{}{}", super::gitea::JWT_START, random_alnum(64)),
        (Flavour::Gitea, _) => hex::encode(rand::random::<[u8; 20]>()),
    }
}

impl PatBook {
    pub fn create(&self, spec: PatSpec) -> String {
        let token = shape(&spec);
        lock(&self.tokens).insert(
            token.clone(),
            Pat {
                spec,
                revoked: false,
                successor: None,
            },
        );
        token
    }

    /// The token of `flavour`, live or not (callers tell expired from revoked).
    pub fn find(&self, flavour: Flavour, token: &str) -> Option<Pat> {
        lock(&self.tokens)
            .get(token)
            .filter(|p| p.spec.flavour == flavour)
            .cloned()
    }

    /// Rotates `token` in one step under the book's lock: a new token with
    /// the same spec expiring at `expires_at`, the old one revoked. A token
    /// already rotated revokes its successors instead.
    pub fn rotate(&self, flavour: Flavour, token: &str, expires_at: DateTime<Utc>) -> Rotation {
        let mut book = lock(&self.tokens);
        let Some(old) = book
            .get(token)
            .filter(|p| p.spec.flavour == flavour)
            .cloned()
        else {
            return Rotation::Refused;
        };
        if old.revoked {
            let Some(mut next) = old.successor else {
                return Rotation::Refused;
            };
            // the whole chain after it dies
            while let Some(p) = book.get_mut(&next) {
                p.revoked = true;
                match p.successor.clone() {
                    Some(n) => next = n,
                    None => break,
                }
            }
            return Rotation::Reused;
        }
        let mut spec = old.spec.clone();
        spec.expires_at = Some(expires_at);
        let new = shape(&spec);
        book.insert(
            new.clone(),
            Pat {
                spec,
                revoked: false,
                successor: None,
            },
        );
        if let Some(p) = book.get_mut(token) {
            p.revoked = true;
            p.successor = Some(new.clone());
        }
        Rotation::Rotated(new)
    }

    pub fn revoke(&self, token: &str) -> bool {
        match lock(&self.tokens).get_mut(token) {
            Some(p) if !p.revoked => {
                p.revoked = true;
                true
            }
            _ => false,
        }
    }

    /// Replaces a token's scopes (or permissions), as its owner would by
    /// editing it. Returns whether it was found.
    pub fn set_scopes(&self, token: &str, scopes: Vec<String>) -> bool {
        match lock(&self.tokens).get_mut(token) {
            Some(p) => {
                p.spec.scopes = scopes;
                true
            }
            None => false,
        }
    }

    /// Makes a token expire at `now`. Returns whether it was found.
    pub fn expire(&self, token: &str, now: DateTime<Utc>) -> bool {
        match lock(&self.tokens).get_mut(token) {
            Some(p) => {
                p.spec.expires_at = Some(now);
                true
            }
            None => false,
        }
    }

    pub fn clear(&self) {
        lock(&self.tokens).clear();
    }
}
