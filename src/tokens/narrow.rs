//! GitHub App user tokens: narrowing at serve time and the installation
//! check. A runtime that names its repositories is served a token narrowed
//! to them (`POST /applications/{client_id}/token/scoped`), so one user's
//! authorization never gives a runtime more than its repositories.
//!
//! Narrowed tokens are kept in this process, per (grant, the grant's
//! current access token, runtime incarnation, repositories), until the
//! refresh margin before their expiry: GitHub counts every token it
//! creates against the App's per-user limits, and narrowing on every fetch
//! would add a provider round trip to each one. They are never stored:
//! a replica that restarts narrows again. A rotated parent token (refresh)
//! or a changed repository list is another key, so a stale narrowed token
//! is never served.

use super::bounded::Bounded;
use super::grant::{Grant, fingerprint};
use super::lifecycle::Lifecycle;
use super::serve::ServeError;
use crate::providers::AppKind;
use crate::providers::github_app_user::{self, NarrowError, Narrowed, Reach};
use crate::registry::{AppRequirements, OAuthApp, Runtime};
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use std::sync::Arc;

/// How many narrowed tokens a process keeps at most; past it the expired
/// ones go, then everything (the next fetches narrow again).
const CACHE_MAX: usize = 10_000;

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    grant: String,
    /// Fingerprint of the parent access token: a refresh makes a new key.
    parent: String,
    incarnation: String,
    repositories: Vec<String>,
}

struct Entry {
    token: SecretString,
    expires_at: Option<DateTime<Utc>>,
}

/// The narrowed tokens of this process.
pub(crate) struct NarrowCache {
    entries: Bounded<Key, Entry>,
    /// Calls to the provider's scoped-token endpoint (tests and metrics).
    narrowed: std::sync::atomic::AtomicU64,
}

impl Default for NarrowCache {
    fn default() -> Self {
        Self {
            entries: Bounded::new(CACHE_MAX),
            narrowed: Default::default(),
        }
    }
}

impl NarrowCache {
    fn get(&self, key: &Key, fresh_until: DateTime<Utc>) -> Option<Narrowed> {
        self.entries.get(key, |e| {
            e.expires_at
                .is_none_or(|at| at > fresh_until)
                .then(|| Narrowed {
                    token: e.token.clone(),
                    expires_at: e.expires_at,
                })
        })
    }

    fn put(&self, key: Key, n: &Narrowed, now: DateTime<Utc>) {
        // a grant's older narrowed tokens (before a refresh) are dead weight
        self.entries
            .retain(|k, _| !(k.grant == key.grant && k.parent != key.parent));
        let entry = Entry {
            token: n.token.clone(),
            expires_at: n.expires_at,
        };
        self.entries
            .insert(key, entry, |e| e.expires_at.is_some_and(|at| at > now));
    }

    /// Forgets every narrowed token of a grant (deleted or replaced).
    pub(crate) fn forget(&self, grant: &str) {
        self.entries.retain(|k, _| k.grant != grant);
    }

    /// How many times this process asked the provider to narrow a token.
    pub(crate) fn provider_calls(&self) -> u64 {
        self.narrowed.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Why narrowing gave no token, as concurrent callers share it.
#[derive(Clone)]
pub(crate) enum NarrowFailure {
    Unavailable(String),
    Invalid,
    Refused(String),
    /// The app record could not be read.
    Store(String),
    Gone,
}

pub(crate) type NarrowOutcome = Result<(SecretString, Option<DateTime<Utc>>), NarrowFailure>;

impl Lifecycle {
    /// The token `g` narrowed to `caller`'s repositories, when `g` comes
    /// from a GitHub App and the runtime names repositories; `None` means
    /// "serve `g` as it is". Callers in this process asking for the same
    /// narrowing share one provider call.
    pub(super) async fn narrowed_for(
        self: &Arc<Self>,
        caller: &Runtime,
        g: &Grant,
        app: Option<&AppRequirements>,
    ) -> Result<Option<Narrowed>, ServeError> {
        if caller.repositories.is_empty() || !app.is_some_and(|a| a.kind == AppKind::GithubApp) {
            return Ok(None);
        }
        let Some(app_id) = g.source.app() else {
            return Ok(None);
        };
        let key = Key {
            grant: g.id.clone(),
            parent: fingerprint(&g.access_token),
            incarnation: caller.incarnation.clone(),
            repositories: caller.repositories.clone(),
        };
        let fresh_until = self.clock.now() + self.timing().refresh_margin;
        if let Some(hit) = self.narrow_cache.get(&key, fresh_until) {
            return Ok(Some(hit));
        }
        let flight = format!(
            "{}\u{1f}{}\u{1f}{}\u{1f}{}",
            key.grant,
            key.parent,
            key.incarnation,
            key.repositories.join(",")
        );
        let this = self.clone();
        let (app_id, token, expires_at) =
            (app_id.to_owned(), g.access_token.clone(), g.expires_at());
        let outcome = self
            .narrow_flights
            .run(&flight, move || async move {
                this.narrow_now(&app_id, key, token, expires_at).await
            })
            .await
            .unwrap_or_else(|| {
                Err(NarrowFailure::Unavailable(
                    "the narrowing stopped unexpectedly".into(),
                ))
            });
        let runtime = &caller.id;
        match outcome {
            Ok((token, expires_at)) => Ok(Some(Narrowed { token, expires_at })),
            Err(NarrowFailure::Unavailable(detail)) => Err(ServeError::Unavailable {
                detail: format!(
                    "GitHub could not narrow the Git user token to the repositories of runtime `{runtime}` right now ({detail}); nothing was changed, retry shortly"
                ),
                retry_after: self.settings().refresh_cooldown,
            }),
            Err(NarrowFailure::Invalid) => Err(ServeError::Invalid(
                "GitHub no longer accepts the token (revoked or expired); the user must authorize access again".into(),
            )),
            Err(NarrowFailure::Refused(message)) => Err(ServeError::NotInstalled(message)),
            Err(NarrowFailure::Store(m)) => Err(ServeError::Store(
                crate::store::StoreError::Unavailable(m).into(),
            )),
            Err(NarrowFailure::Gone) => Err(ServeError::Absent),
        }
    }

    /// One call to the provider's scoped-token endpoint (unless a run that
    /// just ended filled the cache), its answer cached.
    async fn narrow_now(
        &self,
        app_id: &str,
        key: Key,
        token: SecretString,
        parent_expires_at: Option<DateTime<Utc>>,
    ) -> NarrowOutcome {
        let now = self.clock.now();
        if let Some(hit) = self
            .narrow_cache
            .get(&key, now + self.timing().refresh_margin)
        {
            return Ok((hit.token, hit.expires_at));
        }
        let app = match self.registry.app(app_id).await {
            Ok(Some(app)) => app,
            Ok(None) => return Err(NarrowFailure::Gone),
            Err(e) => return Err(NarrowFailure::Store(e.to_string())),
        };
        let endpoints = app.endpoints().map_err(NarrowFailure::Refused)?;
        let http = self.http.for_provider(app.provider);
        self.narrow_cache
            .narrowed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let grant = key.grant.clone();
        match github_app_user::narrow(
            &http,
            &endpoints,
            &app.client_id,
            &app.client_secret,
            &token,
            &key.repositories,
        )
        .await
        {
            Ok(mut n) => {
                // never later than the token it was made from
                n.expires_at = match (n.expires_at, parent_expires_at) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                tracing::info!(grant = %grant, fingerprint = %fingerprint(&n.token), "GitHub App user token narrowed to the runtime's repositories");
                self.narrow_cache.put(key, &n, now);
                Ok((n.token, n.expires_at))
            }
            Err(NarrowError::Unavailable(detail)) => {
                tracing::warn!(grant = %grant, %detail, "could not narrow the token for now");
                Err(NarrowFailure::Unavailable(detail))
            }
            Err(NarrowError::InvalidToken) => Err(NarrowFailure::Invalid),
            Err(NarrowError::Refused(message)) => {
                tracing::warn!(grant = %grant, %message, "GitHub refused to narrow the token");
                Err(NarrowFailure::Refused(message))
            }
        }
    }

    /// Whether the GitHub App that issued `token` reaches `runtime`'s
    /// repositories, as the user's installations show. `Ok(None)` for
    /// OAuth apps; an error when GitHub could not say now.
    pub async fn installation_reach(
        &self,
        app: &OAuthApp,
        runtime: &Runtime,
        token: &SecretString,
    ) -> Result<Option<Reach>, crate::providers::ProviderError> {
        if app.kind != AppKind::GithubApp {
            return Ok(None);
        }
        let endpoints = app
            .endpoints()
            .map_err(crate::providers::ProviderError::Protocol)?;
        let http = self.http.for_provider(app.provider);
        github_app_user::reach(&http, &endpoints, token, &runtime.repositories)
            .await
            .map(Some)
    }
}
