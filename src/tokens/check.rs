//! Background work: checking every stored token at the provider on an
//! interval, refreshing ahead of expiry and keeping refresh tokens alive,
//! cleaning up grants no runtime uses any more, and retrying revocations.
//!
//! Work is driven by the shared due index (`schedule`), so each token is
//! looked at once per interval whichever replica gets to it; each check
//! holds the grant's lease, and a token whose wake-up already moved past
//! now is skipped, so two replicas never check the same token. Provider
//! calls take one of a bounded number of permits per provider host and wait
//! out the host's rate-limit pauses (`providers::http`).

use super::TokenError;
use super::grant::RefreshFailure;
use super::grant::{Grant, State, TokenSource};
use super::lifecycle::{Lifecycle, RevokeAttempt, RevokeReport};
use super::schedule::{DueEntry, DueKey};
use super::serve::Why;
use crate::providers::http::host_key;
use crate::providers::{self, PatError, PatInput, ProviderError, TokenPurpose, github_app_user};
use crate::store::{Expect, StoreError};
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use url::Url;

/// What one pass over the due work did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    pub checked: usize,
    pub refreshed: usize,
    pub skipped: usize,
    pub deleted: usize,
    pub revocations: usize,
}

impl std::ops::AddAssign for SweepReport {
    fn add_assign(&mut self, o: Self) {
        self.checked += o.checked;
        self.refreshed += o.refreshed;
        self.skipped += o.skipped;
        self.deleted += o.deleted;
        self.revocations += o.revocations;
    }
}

/// A provider's verdict on a token.
pub(super) enum Verdict {
    Valid {
        scopes: Option<Vec<String>>,
        expires_at: Option<Option<DateTime<Utc>>>,
    },
    State(State, String),
    /// Could not tell (temporary): never a reason to stop serving it.
    Unknown(String),
}

impl Verdict {
    /// The result label of a check: the token's state, or `unknown`.
    fn result(&self) -> &'static str {
        match self {
            Verdict::Valid { .. } => "valid",
            Verdict::State(state, _) => state.as_str(),
            Verdict::Unknown(_) => "unknown",
        }
    }
}

/// How many due tokens one replica works on at once (provider calls are
/// bounded further, per host).
const IN_FLIGHT: usize = 256;

impl Lifecycle {
    /// Runs the background loop until the process ends: every tick
    /// (jittered), the due work and the revocation queue.
    pub fn spawn_background(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let tick = this.settings().tick;
                let jitter =
                    rand::Rng::gen_range(&mut rand::thread_rng(), 0..=tick.as_millis() as u64 / 5);
                tokio::time::sleep(tick + Duration::from_millis(jitter)).await;
                let report = this.run_due().await;
                if report != SweepReport::default() {
                    tracing::debug!(?report, "background token work");
                }
            }
        })
    }

    /// Does the work that is due now: checks, refreshes, clean-up and
    /// revocation retries. Safe to run on every replica at once.
    pub async fn run_due(self: &Arc<Self>) -> SweepReport {
        let mut report = SweepReport::default();
        let now = self.clock.now();
        let minutes = match self.schedule.due_minutes(now).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "background work: the schedule is unavailable");
                return report;
            }
        };
        let mut tasks: JoinSet<SweepReport> = JoinSet::new();
        for m in minutes {
            let entries = match self.schedule.entries(m).await {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(error = %e, "background work: the schedule is unavailable");
                    return report;
                }
            };
            for entry in entries.into_iter().filter(|e| e.at <= now) {
                while tasks.len() >= IN_FLIGHT {
                    if let Some(Ok(r)) = tasks.join_next().await {
                        report += r;
                    }
                }
                let this = self.clone();
                tasks.spawn(async move { this.handle_due(entry).await });
            }
        }
        while let Some(done) = tasks.join_next().await {
            if let Ok(r) = done {
                report += r;
            }
        }
        if let Err(e) = self.schedule.advance(self.clock.now()).await {
            tracing::warn!(error = %e, "background work: could not advance the schedule");
        }
        report.revocations = self.retry_revocations().await;
        report
    }

    async fn handle_due(self: Arc<Self>, entry: DueEntry) -> SweepReport {
        let result = match &entry.key {
            DueKey::Grant { user, id } => self.wake_grant(user, id).await,
            DueKey::RuntimeToken { runtime } => self.wake_runtime_token(runtime).await,
        };
        match result {
            Ok((report, done)) => {
                if done && let Err(e) = self.schedule.done(&entry).await {
                    tracing::warn!(error = %e, "could not drop a handled due entry");
                }
                report
            }
            Err(e) => {
                tracing::warn!(error = %e, "background work on a token failed; it stays due");
                SweepReport {
                    skipped: 1,
                    ..SweepReport::default()
                }
            }
        }
    }

    /// One due grant. `Ok((report, true))` when the entry is handled (the
    /// grant was rescheduled, or is gone); `false` leaves it for later.
    async fn wake_grant(
        self: &Arc<Self>,
        user: &str,
        id: &str,
    ) -> Result<(SweepReport, bool), TokenError> {
        let mut report = SweepReport::default();
        let Some((g, _)) = self.grants.get(user, id).await? else {
            return Ok((report, true));
        };
        if g.next_wake(self.timing()) > self.clock.now() {
            // already handled (by another replica, or rescheduled): stale entry
            return Ok((report, true));
        }
        // bounded per provider host, and out of the host's rate-limit pauses;
        // taken before the lease so waiting never outlives a lease
        let host = Url::parse(&g.api).map(|u| host_key(&u)).unwrap_or_default();
        let _permit = self.http.pacer().background_slot(&host).await;
        let Some(lease) = self
            .leases
            .try_acquire(&Self::grant_lease(user, id), self.lease_ttl)
            .await?
        else {
            report.skipped += 1;
            return Ok((report, false));
        };
        let outcome = self.wake_grant_locked(user, id, &mut report).await;
        self.leases.release(lease).await;
        outcome.map(|()| (report, true))
    }

    async fn wake_grant_locked(
        self: &Arc<Self>,
        user: &str,
        id: &str,
        report: &mut SweepReport,
    ) -> Result<(), TokenError> {
        let Some((mut g, version)) = self.grants.get(user, id).await? else {
            return Ok(());
        };
        let now = self.clock.now();
        if g.next_wake(self.timing()) > now {
            return Ok(());
        }
        // runtimes that no longer hold this grant (deleted, re-registered,
        // reassigned) are dropped; a grant nobody holds is deleted
        let before = g.assignments.len();
        let mut live = Vec::new();
        for a in &g.assignments {
            let current = self
                .registry
                .runtime(&a.runtime)
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?
                .filter(|rt| rt.incarnation == a.incarnation);
            let points_here = match current {
                Some(_) => self
                    .grants
                    .assignment(&a.runtime, &a.incarnation, user)
                    .await?
                    .is_some_and(|(x, _)| x.grant == g.id),
                None => false,
            };
            if points_here {
                live.push(a.clone());
            }
        }
        if live.is_empty() {
            match self.grants.delete(user, id, Expect::Version(version)).await {
                Ok(_) => self.narrow_cache.forget(id),
                Err(TokenError::Store(StoreError::Conflict)) => return Ok(()),
                Err(e) => return Err(e),
            }
            let revoked = match &g.source {
                TokenSource::OAuth { app } => {
                    self.revoke_token(g.provider, app, g.access_token.clone(), user)
                        .await
                }
                TokenSource::Pat { .. } => RevokeReport::KeptPat,
            };
            tracing::info!(target: "gitbroker::audit", action = "user_token.delete", user = %user, grant = %id, outcome = revoked.as_str(), "a grant no runtime uses any more was deleted");
            self.events
                .emit(
                    self.event(
                        crate::events::Action::UserTokenDeleted,
                        crate::events::Actor::system(),
                    )
                    .user(user)
                    .grant(id)
                    .provider(g.provider.as_str())
                    .outcome(revoked.as_str()),
                )
                .await;
            report.deleted += 1;
            return Ok(());
        }
        if live.len() != before {
            g.assignments = live;
            match self.save_grant(&g, Expect::Version(version)).await {
                Ok(_) => {}
                Err(TokenError::Store(StoreError::Conflict)) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        // refresh ahead of expiry, or to keep the refresh token alive
        let refresh_due = g.needs_refresh(now, self.timing().refresh_margin * 2)
            || g.keepalive_due(now, self.timing().keepalive);
        if refresh_due && g.status.state != State::NeedsReauthorization {
            match self.refresh_locked(user, id, Why::Background).await {
                Ok(_) => report.refreshed += 1,
                Err(RefreshFailure::Gone) => return Ok(()),
                Err(RefreshFailure::NeedsReauthorization(_)) => {}
                Err(RefreshFailure::Temporary { .. }) => {}
            }
        }
        let Some((g, _)) = self.grants.get(user, id).await? else {
            return Ok(());
        };
        let now = self.clock.now();
        if g.next_check_at <= now {
            let verdict = self.verdict_for(&g, now).await;
            self.metrics
                .validation(g.provider.as_str(), verdict.result());
            self.record_verdict(&g, verdict, now).await?;
            report.checked += 1;
        } else if g.next_wake(self.timing()) <= now {
            // nothing more can be done before the next check (a failed
            // refresh in cooldown): wake at the check, or the cooldown's end
            let next = g
                .refresh_cooldown_until
                .unwrap_or(g.next_check_at)
                .min(g.next_check_at);
            self.update_grant(user, id, |x| {
                if x.next_wake(self.timing()) <= now {
                    x.refresh_cooldown_until = Some(next.max(now + chrono::Duration::seconds(1)));
                }
            })
            .await?;
        }
        Ok(())
    }

    /// Asks the provider about a grant's token.
    async fn verdict_for(self: &Arc<Self>, g: &Grant, now: DateTime<Utc>) -> Verdict {
        let provider = providers::provider(g.provider);
        let http = self.http.for_provider(g.provider);
        let Ok(api) = Url::parse(&g.api) else {
            return Verdict::Unknown("the stored provider URL does not parse".into());
        };
        match &g.source {
            TokenSource::OAuth { app } => {
                if g.refreshable() && g.expired(now) {
                    // its access token lapsed and the refresh could not run
                    return Verdict::Unknown(
                        "the access token expired and could not be refreshed yet".into(),
                    );
                }
                let mut github_app = None;
                let endpoints = match self.registry.app(app).await {
                    Ok(Some(a)) => match a.endpoints() {
                        Ok(e) => {
                            github_app =
                                Some(a).filter(|a| a.kind == providers::AppKind::GithubApp);
                            e
                        }
                        Err(m) => return Verdict::Unknown(m),
                    },
                    Ok(None) => match provider.endpoints(None, Some(&api)) {
                        Ok(e) => e,
                        Err(m) => return Verdict::Unknown(m),
                    },
                    Err(e) => return Verdict::Unknown(e.to_string()),
                };
                let mut attempt = provider.identify(&http, &endpoints, &g.access_token).await;
                // a token minted seconds ago can be unknown to a read replica
                if matches!(attempt, Err(ProviderError::InvalidToken))
                    && g.last_refreshed_at
                        .is_some_and(|r| now - r < chrono::Duration::seconds(10))
                {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    attempt = provider.identify(&http, &endpoints, &g.access_token).await;
                }
                match attempt {
                    // a GitHub App user token has no scopes to judge: what
                    // is checked is that the App reaches the runtime
                    Ok(_) if github_app.is_some() => {
                        self.user_reach_verdict(g, github_app.as_ref()).await
                    }
                    Ok(identity) => Verdict::Valid {
                        scopes: identity.scopes,
                        expires_at: None,
                    },
                    Err(ProviderError::InvalidToken) => Verdict::State(
                        State::Invalid,
                        format!(
                            "{} rejects the token: it was revoked or expired; authorize again",
                            provider.display_name()
                        ),
                    ),
                    Err(e) => Verdict::Unknown(e.to_string()),
                }
            }
            TokenSource::Pat { .. } => {
                let endpoints = match self.pat_endpoints(g, &api).await {
                    Ok(e) => e,
                    Err(m) => return Verdict::Unknown(m),
                };
                let input = PatInput::new(
                    g.access_token.expose_secret(),
                    g.pat_username.as_deref(),
                    g.pat_email.as_deref(),
                );
                match provider
                    .validate_pat(&http, &endpoints, &input, TokenPurpose::User, now)
                    .await
                {
                    Ok(r) => Verdict::Valid {
                        scopes: Some(r.scopes),
                        expires_at: Some(r.expires_at),
                    },
                    Err(e) => pat_verdict(e),
                }
            }
        }
    }

    /// The verdict on a working GitHub App user token: valid when the App
    /// is installed where each runtime it serves needs it.
    async fn user_reach_verdict(
        &self,
        g: &Grant,
        app: Option<&crate::registry::OAuthApp>,
    ) -> Verdict {
        let Some(app) = app else {
            return Verdict::Unknown("no GitHub App".into());
        };
        for a in &g.assignments {
            let rt = match self.registry.runtime(&a.runtime).await {
                Ok(Some(rt)) if rt.incarnation == a.incarnation => rt,
                Ok(_) => continue,
                Err(e) => return Verdict::Unknown(e.to_string()),
            };
            match self.installation_reach(app, &rt, &g.access_token).await {
                Ok(Some(github_app_user::Reach::NotInstalled(why))) => {
                    return Verdict::State(State::NotInstalled, not_installed_reason(app, &why));
                }
                Ok(_) => {}
                Err(ProviderError::InvalidToken) => {
                    return Verdict::State(
                        State::Invalid,
                        "GitHub rejects the token: it was revoked or expired; authorize again"
                            .into(),
                    );
                }
                Err(e) => return Verdict::Unknown(e.to_string()),
            }
        }
        Verdict::Valid {
            scopes: None,
            expires_at: None,
        }
    }

    /// The page's re-check: `user`'s grants in `not_installed` are asked
    /// again now, since the user comes back to the page after installing
    /// the App. A check that reaches no verdict keeps the stored one.
    /// `grants` are the user's, as just listed (the page lists them once);
    /// returns whether a verdict was recorded, so that the caller lists
    /// them again only then.
    pub(super) async fn recheck_not_installed(
        &self,
        grants: &[(Grant, u64)],
    ) -> Result<bool, TokenError> {
        let mut recorded = false;
        for (g, _) in grants
            .iter()
            .filter(|(g, _)| g.status.state == State::NotInstalled)
        {
            let Some(app_id) = g.source.app() else {
                continue;
            };
            let Ok(Some(app)) = self.registry.app(app_id).await else {
                continue;
            };
            let now = self.clock.now();
            let verdict = self.user_reach_verdict(g, Some(&app)).await;
            if !matches!(verdict, Verdict::Unknown(_)) {
                self.record_verdict(g, verdict, now).await?;
                recorded = true;
            }
        }
        Ok(recorded)
    }

    /// The endpoints a pasted token was validated against: those of a
    /// runtime it is assigned to, which share its API URL.
    async fn pat_endpoints(&self, g: &Grant, api: &Url) -> Result<providers::Endpoints, String> {
        for a in &g.assignments {
            if let Ok(Some(rt)) = self.registry.runtime(&a.runtime).await
                && let Ok((_, e)) = self.registry.provider_of(&rt).await
                && e.api == *api
            {
                return Ok(e);
            }
        }
        providers::provider(g.provider).endpoints(None, Some(api))
    }

    async fn record_verdict(
        &self,
        g: &Grant,
        verdict: Verdict,
        now: DateTime<Utc>,
    ) -> Result<(), TokenError> {
        // a check that reached no verdict is tried again soon, not in an interval
        let next = match verdict {
            Verdict::Unknown(_) => self.retry_check(now),
            _ => self.next_check(now),
        };
        let from = g.status.state;
        let updated = self
            .update_grant(&g.user, &g.id, |x| {
                x.next_check_at = next;
                match &verdict {
                    Verdict::Valid { scopes, expires_at } => {
                        if let Some(s) = scopes {
                            x.scopes = s.clone();
                        }
                        if let Some(e) = expires_at {
                            x.access_expires_at = *e;
                        }
                        x.status.checked_at = Some(now);
                        let recovered = !matches!(x.status.state, State::Valid);
                        // an unusable state the refresh machinery set stays
                        if x.status.state != State::NeedsReauthorization {
                            x.status.set(
                                State::Valid,
                                now,
                                recovered
                                    .then(|| "recovered: the provider accepts it again".to_owned()),
                            );
                        }
                    }
                    Verdict::State(state, reason) => {
                        x.status.checked_at = Some(now);
                        x.status.set(*state, now, Some(reason.clone()));
                    }
                    Verdict::Unknown(reason) => {
                        // a temporary failure never makes a token invalid
                        if x.status.state.servable() {
                            x.status.set(
                                State::Unknown,
                                now,
                                Some(format!("could not check: {reason}")),
                            );
                        }
                    }
                }
            })
            .await?;
        if let Some(x) = &updated {
            self.events
                .emit(
                    self.event(
                        crate::events::Action::UserTokenChecked,
                        crate::events::Actor::system(),
                    )
                    .user(&x.user)
                    .grant(&x.id)
                    .provider(x.provider.as_str())
                    .login(Some(&x.provider_login))
                    .outcome(x.status.state.as_str())
                    .fingerprint(crate::tokens::grant::fingerprint(&x.access_token)),
                )
                .await;
        }
        if let Some(x) = &updated
            && x.status.state != from
        {
            tracing::info!(target: "gitbroker::audit", action = "user_token.status", user = %x.user, grant = %x.id, from = from.as_str(), to = x.status.state.as_str(), reason = x.status.reason.as_deref().unwrap_or(""), runtimes = ?x.assignments.iter().map(|a| a.runtime.as_str()).collect::<Vec<_>>(), "user token status changed");
            self.emit_status_change(x, from).await;
        }
        Ok(())
    }

    async fn wake_runtime_token(
        self: &Arc<Self>,
        runtime: &str,
    ) -> Result<(SweepReport, bool), TokenError> {
        let mut report = SweepReport::default();
        let Some(rt) = self
            .registry
            .runtime(runtime)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?
        else {
            return Ok((report, true));
        };
        let Some((t, _)) = self.runtime_tokens.get(&rt.id, &rt.incarnation).await? else {
            return Ok((report, true));
        };
        let now = self.clock.now();
        let rotate = self.rotation_due(&rt, &t, now);
        if t.next_check_at > now && !rotate {
            return Ok((report, true));
        }
        let host = Url::parse(&t.api).map(|u| host_key(&u)).unwrap_or_default();
        let _permit = self.http.pacer().background_slot(&host).await;
        let Some(lease) = self
            .leases
            .try_acquire(&format!("runtime-token:{runtime}"), self.lease_ttl)
            .await?
        else {
            report.skipped += 1;
            return Ok((report, false));
        };
        if rotate && self.rotate_locked(&rt).await == super::rotation::Rotation::Rotated {
            report.refreshed += 1;
        }
        let result = self.check_runtime_token_locked(&rt).await;
        self.leases.release(lease).await;
        if result? {
            report.checked += 1;
        }
        Ok((report, true))
    }

    /// Checks the runtime's token if its check is due; whether it did.
    async fn check_runtime_token_locked(
        &self,
        rt: &crate::registry::Runtime,
    ) -> Result<bool, TokenError> {
        for _ in 0..10 {
            let Some((mut t, version)) = self.runtime_tokens.get(&rt.id, &rt.incarnation).await?
            else {
                return Ok(false);
            };
            let now = self.clock.now();
            if t.next_check_at > now {
                return Ok(false);
            }
            let verdict = match self.registry.provider_of(rt).await {
                // an installation token is checked through its installation
                Ok(_) if rt.github_app.is_some() => self.installation_verdict(rt).await,
                Ok((kind, endpoints)) => {
                    let input = PatInput::new(
                        t.token.expose_secret(),
                        t.pat_username.as_deref(),
                        t.pat_email.as_deref(),
                    );
                    let verdict = match providers::provider(kind)
                        .validate_pat(
                            &self.http.for_provider(kind),
                            &endpoints,
                            &input,
                            TokenPurpose::Runtime,
                            now,
                        )
                        .await
                    {
                        Ok(r) => Verdict::Valid {
                            scopes: Some(r.scopes),
                            expires_at: Some(r.expires_at),
                        },
                        Err(e) => pat_verdict(e),
                    };
                    self.metrics.validation(kind.as_str(), verdict.result());
                    verdict
                }
                Err(e) => Verdict::Unknown(e.to_string()),
            };
            let from = t.info.status.state;
            t.next_check_at = match verdict {
                Verdict::Unknown(_) => self.retry_check(now),
                _ => self.next_check(now),
            };
            match verdict {
                Verdict::Valid { scopes, expires_at } => {
                    if let Some(s) = scopes {
                        t.info.scopes = s;
                    }
                    if let Some(e) = expires_at {
                        t.info.expires_at = e;
                    }
                    t.info.status.checked_at = Some(now);
                    let recovered = from != State::Valid;
                    t.info
                        .status
                        .set(State::Valid, now, recovered.then(|| "recovered".to_owned()));
                }
                Verdict::State(state, reason) => {
                    t.info.status.checked_at = Some(now);
                    t.info.status.set(state, now, Some(reason));
                }
                Verdict::Unknown(reason) => {
                    if t.info.status.state.servable() {
                        t.info.status.set(
                            State::Unknown,
                            now,
                            Some(format!("could not check: {reason}")),
                        );
                    }
                }
            }
            match self.save_runtime_token(&t, Expect::Version(version)).await {
                Ok(_) => {
                    self.events
                        .emit(
                            self.runtime_token_event(
                                crate::events::Action::RuntimeTokenChecked,
                                crate::events::Actor::system(),
                                &t,
                            )
                            .outcome(t.info.status.state.as_str()),
                        )
                        .await;
                    if t.info.status.state != from {
                        tracing::info!(target: "gitbroker::audit", action = "runtime_token.status", runtime = %rt.id, from = from.as_str(), to = t.info.status.state.as_str(), reason = t.info.status.reason.as_deref().unwrap_or(""), "Git Runtime token status changed");
                        let reason = t.info.status.reason.as_deref();
                        self.events
                            .emit(
                                self.runtime_token_event(
                                    crate::events::Action::RuntimeTokenStatusChanged,
                                    crate::events::Actor::system(),
                                    &t,
                                )
                                .status(
                                    from.as_str(),
                                    t.info.status.state.as_str(),
                                    reason,
                                ),
                            )
                            .await;
                    }
                    return Ok(true);
                }
                Err(TokenError::Store(StoreError::Conflict)) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// Retries queued revocations that are due; returns how many finished.
    async fn retry_revocations(&self) -> usize {
        let jobs = match self.revocations.list().await {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(error = %e, "revocation queue unavailable");
                return 0;
            }
        };
        let mut finished = 0;
        let now = self.clock.now();
        for (mut job, version) in jobs.into_iter().filter(|(j, _)| j.next_attempt_at <= now) {
            let Ok(Some(lease)) = self
                .leases
                .try_acquire(&format!("revocation:{}", job.id), self.lease_ttl)
                .await
            else {
                continue;
            };
            let outcome = self.try_revoke(&job.app, &job.token).await;
            match outcome {
                Ok(report) => {
                    let _ = self.revocations.remove(&job.id, version).await;
                    tracing::info!(target: "gitbroker::audit", action = "user_token.revoke", app = %job.app, user = %job.user, fingerprint = %job.fingerprint, outcome = report.as_str(), attempts = job.attempts + 1, "queued revocation finished");
                    self.events
                        .emit(
                            self.event(
                                crate::events::Action::UserTokenRevoked,
                                crate::events::Actor::system(),
                            )
                            .user(&job.user)
                            .outcome(report.as_str())
                            .fingerprint(&job.fingerprint),
                        )
                        .await;
                    finished += 1;
                }
                Err(RevokeAttempt::Give(reason)) => {
                    let _ = self.revocations.remove(&job.id, version).await;
                    tracing::error!(target: "gitbroker::audit", action = "user_token.revoke", app = %job.app, user = %job.user, fingerprint = %job.fingerprint, outcome = "failed", %reason, "queued revocation cannot succeed; dropped");
                    self.events
                        .emit(
                            self.event(
                                crate::events::Action::UserTokenRevoked,
                                crate::events::Actor::system(),
                            )
                            .user(&job.user)
                            .outcome("failed")
                            .fingerprint(&job.fingerprint),
                        )
                        .await;
                    finished += 1;
                }
                Err(RevokeAttempt::Retry(reason)) => {
                    job.attempts = job.attempts.saturating_add(1);
                    let backoff = Duration::from_secs(60)
                        .saturating_mul(1u32 << job.attempts.min(16))
                        .min(self.settings().revocation_retry_max);
                    job.next_attempt_at = now
                        + chrono::Duration::from_std(backoff).unwrap_or(chrono::Duration::hours(1));
                    job.last_error = Some(reason);
                    let _ = self.revocations.put(&job, Expect::Version(version)).await;
                }
            }
            self.leases.release(lease).await;
        }
        finished
    }
}

/// A check that could not reach a verdict is retried after this long (or the
/// check interval, if shorter).
const RETRY_CHECK: chrono::Duration = chrono::Duration::minutes(5);

impl Lifecycle {
    pub(super) fn retry_check(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + RETRY_CHECK.min(self.timing().check_interval)
    }
}

fn pat_verdict(e: PatError) -> Verdict {
    let reason = e.to_string();
    match e {
        // missing input (a username never stored) says nothing about the token
        PatError::Unavailable { .. } | PatError::BadInput(_) => Verdict::Unknown(reason),
        PatError::Expired { .. } => Verdict::State(State::Expired, reason),
        PatError::MissingScopes { .. } => Verdict::State(State::MissingScopes, reason),
        PatError::Invalid { .. }
        | PatError::Revoked { .. }
        | PatError::WrongKind { .. }
        | PatError::ProbeAccepted { .. } => Verdict::State(State::Invalid, reason),
    }
}

/// The stored reason of a `not_installed` status: why, and where to install.
pub(crate) fn not_installed_reason(app: &crate::registry::OAuthApp, why: &str) -> String {
    match app.install_url() {
        Some(url) => format!("{why}; install it at {url}, then reload the page"),
        None => why.to_owned(),
    }
}
