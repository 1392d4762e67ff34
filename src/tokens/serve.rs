//! Serving tokens to runtimes, and refreshing them.
//!
//! "May this token be served?" is decided here and nowhere else. A token
//! whose access token ends within the refresh margin is refreshed first:
//! one refresh per grant at a time — callers in this process share one
//! run (a task of its own, so a client disconnect cannot cancel it), and
//! replicas take the grant's lease in the store, re-reading after they get
//! it because another replica may have refreshed already. The rotated pair
//! is written (compare-and-swap on the record's version, retried until the
//! store takes it) before anything else can fail.

use super::TokenError;
use super::grant::{Grant, RefreshFailure, State, fingerprint};
use super::lifecycle::Lifecycle;
use crate::providers::token_endpoint::{self, AppCredentials, RefreshError};
use crate::providers::{self, ProviderKind};
use crate::registry::Runtime;
use crate::store::{Expect, StoreError};
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use std::time::Duration;

/// A token handed to a runtime.
pub struct Served {
    pub token: SecretString,
    pub username: String,
    /// How to present it to Git.
    pub auth: crate::providers::GitAuth,
    /// The runtime's Git host.
    pub git_host: String,
    pub provider: ProviderKind,
    pub scopes: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Why a runtime gets no token.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("no token")]
    Absent,
    #[error("the token can no longer be decrypted (its key was retired)")]
    Unreadable,
    #[error("{0}")]
    Expired(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    MissingScopes(String),
    #[error("{0}")]
    Reauthorize(String),
    /// A GitHub App user token that cannot reach the runtime's
    /// repositories: the App is not installed there.
    #[error("{0}")]
    NotInstalled(String),
    /// The token has expired and could not be refreshed right now.
    #[error("{detail}")]
    Unavailable {
        detail: String,
        retry_after: Duration,
    },
    #[error(transparent)]
    Store(#[from] TokenError),
}

impl From<StoreError> for ServeError {
    fn from(e: StoreError) -> Self {
        Self::Store(e.into())
    }
}

/// What a refresh is for.
#[derive(Debug, Clone, Copy)]
pub(super) enum Why {
    /// The access token ends within this margin.
    Expiry(chrono::Duration),
    /// Background work: ahead of expiry by twice the margin (so runtimes
    /// seldom wait for a refresh), or the refresh token is due to be used
    /// to keep it alive.
    Background,
}

impl Why {
    fn applies(self, g: &Grant, now: DateTime<Utc>, l: &Lifecycle) -> bool {
        match self {
            Self::Expiry(margin) => g.needs_refresh(now, margin),
            Self::Background => {
                g.keepalive_due(now, l.timing().keepalive)
                    || g.needs_refresh(now, l.timing().refresh_margin * 2)
            }
        }
    }
}

/// How long to poll for another replica's refresh.
const POLL: Duration = Duration::from_millis(50);
/// How long to keep trying to store a rotated pair the provider issued.
const PERSIST_FOR: Duration = Duration::from_secs(30);

fn same_secret(a: &Option<SecretString>, b: &Option<SecretString>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => {
            crate::crypto::ct_eq(a.expose_secret().as_bytes(), b.expose_secret().as_bytes())
        }
        (None, None) => true,
        _ => false,
    }
}

impl Lifecycle {
    /// The Git user token of `user` for `runtime`, as the runtime `caller`
    /// may have it: refreshed when it ends within the margin, never dead.
    pub async fn serve_user_token(
        self: &Arc<Self>,
        caller: &Runtime,
        runtime: &str,
        user: &str,
    ) -> Result<Served, ServeError> {
        if caller.id != runtime {
            tracing::warn!(caller = %caller.id, requested = %runtime, "runtime asked for another runtime's token");
            return Err(ServeError::Absent);
        }
        let mut g = self.served_grant(caller, user).await?;
        let app = match g.source.app() {
            Some(id) => self
                .registry
                // this replica's copy, at most `CACHE_TTL` behind an admin change
                .app_requirements_cached(id)
                .await
                .map_err(|e| match e {
                    crate::registry::RegistryError::Store(s) => ServeError::from(s),
                    other => ServeError::Store(StoreError::Corrupt(other.to_string()).into()),
                })?,
            None => None,
        };
        let now = self.clock.now();
        self.verdict(&g, app.as_ref(), now)?;
        let margin = self.timing().refresh_margin;
        if g.needs_refresh(now, margin) {
            match self.refresh_shared(user, &g.id, Why::Expiry(margin)).await {
                Ok(fresh) => {
                    g = fresh;
                    self.verdict(&g, app.as_ref(), self.clock.now())?;
                }
                Err(RefreshFailure::Temporary {
                    detail,
                    retry_after,
                }) => {
                    if g.expired(self.clock.now()) {
                        return Err(ServeError::Unavailable {
                            detail: format!(
                                "the Git user token of `{user}` for runtime `{runtime}` has expired and the provider could not refresh it right now ({detail}); retry shortly"
                            ),
                            retry_after,
                        });
                    }
                    // still valid: serve it, the refresh is tried again later
                    tracing::warn!(runtime = %runtime, user = %user, %detail, "refresh failed for now; serving the still-valid token");
                }
                Err(RefreshFailure::NeedsReauthorization(reason)) => {
                    return Err(ServeError::Reauthorize(reason));
                }
                Err(RefreshFailure::Gone) => return Err(ServeError::Absent),
            }
        }
        if g.expired(self.clock.now()) {
            return Err(ServeError::Expired(
                "the token expired; the user must authorize access again".into(),
            ));
        }
        let (token, expires_at) = match self.narrowed_for(caller, &g, app.as_ref()).await? {
            Some(n) => (n.token, n.expires_at),
            None => (g.access_token.clone(), g.expires_at()),
        };
        let print = fingerprint(&token);
        tracing::info!(target: "gitbroker::audit", action = "user_token.read", runtime = %runtime, user = %user, fingerprint = %print, "user token served to its runtime");
        self.events
            .emit(
                self.event(
                    crate::events::Action::UserTokenRead,
                    crate::events::Actor::runtime(runtime),
                )
                .runtime(runtime)
                .user(user)
                .grant(&g.id)
                .provider(g.provider.as_str())
                .fingerprint(print),
            )
            .await;
        Ok(Served {
            username: g.git_username.clone(),
            auth: g.git_auth(),
            git_host: caller.git_host.clone(),
            provider: g.provider,
            scopes: g.scopes.clone(),
            expires_at,
            token,
        })
    }

    /// The grant the runtime's assignment for `user` names, read from the
    /// store, sealed for this runtime incarnation. The pointer to it may
    /// come from this replica's cache; a grant that is gone or no longer
    /// lists the runtime sends it back to the assignment itself.
    async fn served_grant(&self, caller: &Runtime, user: &str) -> Result<Grant, ServeError> {
        let (rt, inc) = (caller.id.as_str(), caller.incarnation.as_str());
        loop {
            let Some((id, cached)) = self.grants.assigned_grant(rt, inc, user).await? else {
                return Err(ServeError::Absent);
            };
            let g = match self.grants.get(user, &id).await {
                Ok(found) => found.map(|(g, _)| g),
                Err(TokenError::Crypto(e)) => {
                    tracing::error!(runtime = %rt, user = %user, error = %e, "stored user token does not open");
                    return Err(ServeError::Unreadable);
                }
                Err(e) => return Err(e.into()),
            };
            match g {
                Some(g) if g.assigned_to(rt, inc) => return Ok(g),
                // the pointer may be older than the assignment: read it
                _ if cached => self.grants.forget_pointer(rt, inc, user),
                None => return Err(ServeError::Absent),
                Some(_) => {
                    tracing::warn!(runtime = %rt, user = %user, "an assignment points at a grant not sealed for this runtime; not served");
                    return Err(ServeError::Absent);
                }
            }
        }
    }

    /// Refuses a token whose status says it cannot be used.
    fn verdict(
        &self,
        g: &Grant,
        app: Option<&crate::registry::AppRequirements>,
        now: DateTime<Utc>,
    ) -> Result<(), ServeError> {
        let status = g.effective_status(now, &self.missing_for(g, app), self.timing());
        let reason = || status.reason.clone().unwrap_or_default();
        match status.state {
            State::Invalid => Err(ServeError::Invalid(reason())),
            State::NeedsReauthorization => Err(ServeError::Reauthorize(reason())),
            State::MissingScopes => Err(ServeError::MissingScopes(reason())),
            State::NotInstalled => Err(ServeError::NotInstalled(reason())),
            State::Expired => Err(ServeError::Expired(reason())),
            State::Unreadable => Err(ServeError::Unreadable),
            State::Valid | State::ExpiringSoon | State::Unknown => Ok(()),
        }
    }

    /// The runtime's own Git Runtime token; one that rotates itself and is
    /// within its rotation margin is rotated first (the old one is served
    /// while a rotation fails for now).
    pub async fn serve_runtime_token(
        self: &Arc<Self>,
        caller: &Runtime,
        runtime: &str,
    ) -> Result<Served, ServeError> {
        if caller.id != runtime {
            tracing::warn!(caller = %caller.id, requested = %runtime, "runtime asked for another runtime's runtime token");
            return Err(ServeError::Absent);
        }
        if caller.github_app.is_some() {
            return self.serve_installation_token(caller).await;
        }
        let read = || async {
            match self
                .runtime_tokens
                .get(&caller.id, &caller.incarnation)
                .await
            {
                Ok(Some((t, _))) => Ok(t),
                Ok(None) => Err(ServeError::Absent),
                Err(TokenError::Crypto(_)) => Err(ServeError::Unreadable),
                Err(e) => Err(ServeError::from(e)),
            }
        };
        let mut t = read().await?;
        if self.rotation_due(caller, &t, self.clock.now()) {
            let outcome = self.rotate_runtime_token_if_due(caller).await;
            if let super::rotation::Rotation::Temporary(detail) = &outcome {
                tracing::warn!(runtime = %runtime, %detail, "rotation failed for now; serving the still-valid Git Runtime token");
            }
            t = read().await?;
        }
        let status = t.effective_status(self.clock.now(), self.timing().expiring_soon);
        let reason = status.reason.clone().unwrap_or_default();
        match status.state {
            State::Expired => return Err(ServeError::Expired(reason)),
            State::Invalid => return Err(ServeError::Invalid(reason)),
            State::MissingScopes => return Err(ServeError::MissingScopes(reason)),
            _ => {}
        }
        tracing::info!(target: "gitbroker::audit", action = "runtime_token.read", runtime = %runtime, actor = %format!("runtime:{runtime}"), fingerprint = %fingerprint(&t.token), "runtime token served to its runtime");
        self.events
            .emit(self.runtime_token_event(
                crate::events::Action::RuntimeTokenRead,
                crate::events::Actor::runtime(runtime),
                &t,
            ))
            .await;
        Ok(Served {
            auth: t.git_auth(),
            git_host: caller.git_host.clone(),
            username: t.info.git_username,
            provider: t.info.provider,
            scopes: t.info.scopes,
            expires_at: t.info.expires_at,
            token: t.token,
        })
    }

    /// One refresh of a grant for every caller in this process, in a task
    /// of its own.
    pub(super) async fn refresh_shared(
        self: &Arc<Self>,
        user: &str,
        id: &str,
        why: Why,
    ) -> Result<Grant, RefreshFailure> {
        // keyed by the grant (user and id), never by a token value
        let key = format!("{user}\u{1f}{id}");
        let this = self.clone();
        let (u, i) = (user.to_owned(), id.to_owned());
        self.flights
            .run(&key, move || async move {
                this.refresh_with_lease(&u, &i, why).await
            })
            .await
            .unwrap_or_else(|| {
                Err(RefreshFailure::Temporary {
                    detail: "the refresh stopped unexpectedly".into(),
                    retry_after: Duration::from_secs(1),
                })
            })
    }

    /// Takes the grant's lease (waiting while another replica holds it),
    /// then refreshes if it still needs it.
    async fn refresh_with_lease(
        &self,
        user: &str,
        id: &str,
        why: Why,
    ) -> Result<Grant, RefreshFailure> {
        let deadline = tokio::time::Instant::now() + self.lease_ttl;
        let lease_name = Self::grant_lease(user, id);
        loop {
            let now = self.clock.now();
            let g = self.read(user, id).await?;
            if !why.applies(&g, now, self) {
                return Ok(g);
            }
            if let Some(until) = g.refresh_cooldown_until
                && until > now
            {
                return Err(RefreshFailure::Temporary {
                    detail: "the last refresh failed; cooling down".into(),
                    retry_after: (until - now).to_std().unwrap_or(Duration::from_secs(1)),
                });
            }
            match self.leases.try_acquire(&lease_name, self.lease_ttl).await {
                Ok(Some(lease)) => {
                    let result = self.refresh_locked(user, id, why).await;
                    self.leases.release(lease).await;
                    return result;
                }
                Ok(None) if tokio::time::Instant::now() < deadline => {
                    // another replica works on this grant: wait for its result
                    tokio::time::sleep(POLL).await;
                }
                Ok(None) => {
                    return Err(RefreshFailure::Temporary {
                        detail: "another replica is still refreshing this token".into(),
                        retry_after: Duration::from_secs(1),
                    });
                }
                Err(e) => {
                    return Err(RefreshFailure::Temporary {
                        detail: e.to_string(),
                        retry_after: Duration::from_secs(5),
                    });
                }
            }
        }
    }

    async fn read(&self, user: &str, id: &str) -> Result<Grant, RefreshFailure> {
        match self.grants.get(user, id).await {
            Ok(Some((g, _))) => Ok(g),
            Ok(None) => Err(RefreshFailure::Gone),
            Err(e) => Err(RefreshFailure::Temporary {
                detail: e.to_string(),
                retry_after: Duration::from_secs(5),
            }),
        }
    }

    /// Refreshes a grant whose lease the caller holds.
    pub(super) async fn refresh_locked(
        &self,
        user: &str,
        id: &str,
        why: Why,
    ) -> Result<Grant, RefreshFailure> {
        let (g, version) = match self.grants.get(user, id).await {
            Ok(Some(found)) => found,
            Ok(None) => return Err(RefreshFailure::Gone),
            Err(e) => {
                return Err(RefreshFailure::Temporary {
                    detail: e.to_string(),
                    retry_after: Duration::from_secs(5),
                });
            }
        };
        let now = self.clock.now();
        // re-read under the lease: another replica may have refreshed already
        if !why.applies(&g, now, self) {
            return Ok(g);
        }
        let Some(app_id) = g.source.app().map(str::to_owned) else {
            return Ok(g);
        };
        let Some(used) = g.refresh_token.clone() else {
            return Ok(g);
        };
        let app = match self.registry.app(&app_id).await {
            Ok(Some(app)) => app,
            Ok(None) => {
                let reason = format!("its OAuth app `{app_id}` was deleted; authorize again");
                self.mark_reauthorize(user, id, &reason).await;
                return Err(RefreshFailure::NeedsReauthorization(reason));
            }
            Err(e) => {
                return Err(RefreshFailure::Temporary {
                    detail: e.to_string(),
                    retry_after: Duration::from_secs(5),
                });
            }
        };
        let endpoints = match app.endpoints() {
            Ok(e) => e,
            Err(m) => {
                return Err(RefreshFailure::Temporary {
                    detail: m,
                    retry_after: Duration::from_secs(60),
                });
            }
        };
        let creds = AppCredentials {
            kind: app.provider,
            endpoints: &endpoints,
            client_id: &app.client_id,
            client_secret: &app.client_secret,
        };
        let started = std::time::Instant::now();
        let outcome = token_endpoint::refresh(&self.http, &creds, &used, now).await;
        self.metrics.refresh(
            app.provider.as_str(),
            match &outcome {
                Ok(_) => "success",
                Err(RefreshError::Permanent(_)) => "refused",
                Err(RefreshError::Temporary { .. }) => "failed_temporarily",
            },
        );
        match outcome {
            Ok(issued) => {
                let mut fresh = g.clone();
                fresh.access_token = issued.access_token;
                // a response without a refresh token keeps the old one
                if let Some(r) = issued.refresh_token {
                    fresh.refresh_token = Some(r);
                }
                // granted scopes recorded at every refresh (providers narrow silently)
                if let Some(s) = issued.scopes {
                    fresh.scopes = s;
                }
                fresh.issued_at = now;
                fresh.access_expires_at = issued.expires_at;
                fresh.last_refreshed_at = Some(now);
                fresh.refresh_failures = 0;
                fresh.refresh_cooldown_until = None;
                if matches!(fresh.status.state, State::Unknown | State::Invalid) {
                    fresh.status.set(
                        State::Valid,
                        now,
                        Some("recovered: the provider refreshed it".into()),
                    );
                }
                let from = g.status.state;
                let stored = self.persist_refreshed(fresh, version, &used).await?;
                tracing::info!(target: "gitbroker::audit", action = "user_token.refresh", user = %user, grant = %id, provider = app.provider.as_str(), fingerprint = %fingerprint(&stored.access_token), millis = started.elapsed().as_millis() as u64, "user token refreshed");
                for a in &stored.assignments {
                    self.events
                        .emit(
                            self.event(
                                crate::events::Action::UserTokenRefreshed,
                                crate::events::Actor::system(),
                            )
                            .runtime(&a.runtime)
                            .user(user)
                            .grant(id)
                            .provider(app.provider.as_str())
                            .login(Some(&stored.provider_login))
                            .fingerprint(fingerprint(&stored.access_token)),
                        )
                        .await;
                }
                self.emit_status_change(&stored, from).await;
                Ok(stored)
            }
            Err(RefreshError::Permanent(code)) => {
                // re-read first: another worker may have rotated the pair
                if let Ok(Some((latest, _))) = self.grants.get(user, id).await
                    && !same_secret(&latest.refresh_token, &Some(used.clone()))
                {
                    tracing::info!(user = %user, grant = %id, "refresh refused, but another worker had rotated the token: using its result");
                    return Ok(latest);
                }
                let reason = format!(
                    "{} refused to refresh the token ({code}); the user must authorize again",
                    providers::provider(app.provider).display_name()
                );
                self.mark_reauthorize(user, id, &reason).await;
                tracing::warn!(target: "gitbroker::audit", action = "user_token.refresh", user = %user, grant = %id, outcome = "needs_reauthorization", code = %code, "refresh refused for good");
                Err(RefreshFailure::NeedsReauthorization(reason))
            }
            Err(RefreshError::Temporary {
                detail,
                retry_after,
            }) => {
                let cooldown = self.note_refresh_failure(user, id, retry_after).await;
                tracing::warn!(user = %user, grant = %id, %detail, cooldown_secs = cooldown.as_secs(), "refresh failed for now");
                Err(RefreshFailure::Temporary {
                    detail,
                    retry_after: cooldown,
                })
            }
        }
    }

    /// Stores a refreshed grant. The provider already rotated the pair, so
    /// losing this write would lose the grant: on a version conflict the new
    /// tokens are applied to the latest record, and an unavailable store is
    /// retried for a while.
    async fn persist_refreshed(
        &self,
        fresh: Grant,
        mut version: u64,
        used: &SecretString,
    ) -> Result<Grant, RefreshFailure> {
        let started = tokio::time::Instant::now();
        let mut pending = fresh;
        let mut pause = Duration::from_millis(50);
        loop {
            match self.save_grant(&pending, Expect::Version(version)).await {
                Ok(_) => return Ok(pending),
                Err(TokenError::Store(StoreError::Conflict)) => {
                    match self.grants.get(&pending.user, &pending.id).await {
                        Ok(Some((mut latest, v))) => {
                            if !same_secret(&latest.refresh_token, &Some(used.clone())) {
                                tracing::warn!(grant = %pending.id, "the grant's refresh token changed while we refreshed; keeping ours, which the provider issued last");
                            }
                            latest.access_token = pending.access_token.clone();
                            latest.refresh_token = pending.refresh_token.clone();
                            latest.scopes = pending.scopes.clone();
                            latest.issued_at = pending.issued_at;
                            latest.access_expires_at = pending.access_expires_at;
                            latest.last_refreshed_at = pending.last_refreshed_at;
                            latest.refresh_failures = 0;
                            latest.refresh_cooldown_until = None;
                            pending = latest;
                            version = v;
                        }
                        Ok(None) => {
                            // deleted meanwhile: the fresh token has no home; revoke it
                            if let Some(app) = pending.source.app() {
                                self.revoke_token(
                                    pending.provider,
                                    app,
                                    pending.access_token.clone(),
                                    &pending.user,
                                )
                                .await;
                            }
                            return Err(RefreshFailure::Gone);
                        }
                        Err(e) if started.elapsed() < PERSIST_FOR => {
                            tracing::warn!(error = %e, "re-reading a refreshed grant failed; retrying");
                            tokio::time::sleep(pause).await;
                            pause = (pause * 2).min(Duration::from_secs(2));
                        }
                        Err(e) => {
                            return Err(RefreshFailure::Temporary {
                                detail: e.to_string(),
                                retry_after: Duration::from_secs(5),
                            });
                        }
                    }
                }
                Err(e) if started.elapsed() < PERSIST_FOR => {
                    tracing::error!(grant = %pending.id, error = %e, "storing a refreshed token failed; retrying (the provider already rotated it)");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    tracing::error!(grant = %pending.id, error = %e, "a refreshed token could not be stored; the user may have to authorize again");
                    return Err(RefreshFailure::Temporary {
                        detail: e.to_string(),
                        retry_after: Duration::from_secs(5),
                    });
                }
            }
        }
    }

    /// Applies `change` to the latest version of a grant (CAS, retried).
    pub(super) async fn update_grant(
        &self,
        user: &str,
        id: &str,
        change: impl Fn(&mut Grant),
    ) -> Result<Option<Grant>, TokenError> {
        for _ in 0..20 {
            let Some((mut g, v)) = self.grants.get(user, id).await? else {
                return Ok(None);
            };
            change(&mut g);
            match self.save_grant(&g, Expect::Version(v)).await {
                Ok(_) => return Ok(Some(g)),
                Err(TokenError::Store(StoreError::Conflict)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict.into())
    }

    async fn mark_reauthorize(&self, user: &str, id: &str, reason: &str) {
        let now = self.clock.now();
        let was = std::sync::Mutex::new(State::NeedsReauthorization);
        let result = self
            .update_grant(user, id, |g| {
                let from = g.status.state;
                if let Ok(mut w) = was.lock() {
                    *w = from;
                }
                g.status.set(State::NeedsReauthorization, now, Some(reason.to_owned()));
                if from != State::NeedsReauthorization {
                    tracing::info!(target: "gitbroker::audit", action = "user_token.status", user = %user, grant = %id, from = from.as_str(), to = "needs_reauthorization", "user token status changed");
                }
            })
            .await;
        match result {
            Ok(Some(g)) => {
                let from = was
                    .lock()
                    .map(|w| *w)
                    .unwrap_or(State::NeedsReauthorization);
                self.emit_status_change(&g, from).await;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(grant = %id, error = %e, "could not record that the token needs re-authorization");
            }
        }
    }

    /// Records a temporary refresh failure and returns the cooldown:
    /// doubling from the configured start up to its maximum, at least what
    /// the provider asked for.
    async fn note_refresh_failure(
        &self,
        user: &str,
        id: &str,
        asked: Option<Duration>,
    ) -> Duration {
        let now = self.clock.now();
        let base = self.settings().refresh_cooldown;
        let max = self.settings().refresh_cooldown_max;
        let mut cooldown = base;
        let result = self
            .update_grant(user, id, |g| {
                g.refresh_failures = g.refresh_failures.saturating_add(1);
                let factor = 1u32 << g.refresh_failures.saturating_sub(1).min(16);
                let c = base
                    .saturating_mul(factor)
                    .min(max)
                    .max(asked.unwrap_or_default());
                g.refresh_cooldown_until = Some(
                    now + chrono::Duration::from_std(c).unwrap_or(chrono::Duration::seconds(30)),
                );
            })
            .await;
        if let Ok(Some(g)) = result
            && let Some(until) = g.refresh_cooldown_until
        {
            cooldown = (until - now).to_std().unwrap_or(base);
        }
        cooldown
    }
}
