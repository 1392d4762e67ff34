//! Git Runtime tokens that rotate themselves before they expire (GitLab
//! PATs, `POST /personal_access_tokens/self/rotate`), for runtimes that opt
//! in with `rotate_runtime_token`.
//!
//! A rotation kills the old token, and GitLab answers a second rotation of
//! the same old token by revoking the new one too, so each old token is
//! presented for rotation at most once, ever:
//! - one rotation per runtime at a time: the runtime token's lease (the one
//!   its checks take), re-reading under it, in a task of its own so that a
//!   runtime going away mid-request cannot cancel it between the provider's
//!   answer and the write;
//! - an intent (`rotation.started_at`) is stored, sealed, before the
//!   provider is asked; the new token is stored (CAS, retried) before
//!   anything else happens, and that write clears the intent;
//! - an intent found set means an answer that was lost (a timeout, a 5xx
//!   after the work, a crash before the write). The old token is then asked
//!   about, never rotated: alive, nothing happened and rotation starts
//!   afresh; revoked, the new token is lost and the runtime token is marked
//!   invalid for an admin to replace, with a status change event — never a
//!   loop.

use super::TokenError;
use super::grant::State;
use super::lifecycle::Lifecycle;
use super::runtime::RuntimeToken;
use crate::events::{Action, Actor};
use crate::providers::{self, PatError, PatInput, RotateError, TokenPurpose};
use crate::registry::Runtime;
use crate::store::{Expect, StoreError};
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use std::sync::Arc;
use std::time::Duration;

/// How long to poll while another replica rotates.
const POLL: Duration = Duration::from_millis(50);
/// How long to keep trying to store a token the provider issued.
const PERSIST_FOR: Duration = Duration::from_secs(30);

/// What an attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Rotation {
    /// Nothing to do (not due, not opted in, or another worker did it).
    NotDue,
    Rotated,
    /// Try again later; the token as stored is still the one to serve.
    Temporary(String),
    /// Stopped for good: the status says what the admin must do.
    Stopped(String),
}

impl Lifecycle {
    fn rotate_margin(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.settings().runtime_token_rotate_margin)
            .unwrap_or(chrono::Duration::days(7))
    }

    /// Whether `t` of `rt` should be rotated (or its lost rotation looked
    /// into) now.
    pub(super) fn rotation_due(&self, rt: &Runtime, t: &RuntimeToken, now: DateTime<Utc>) -> bool {
        if !rt.rotate_runtime_token
            || !providers::provider(t.info.provider).rotates_pats()
            || t.info.rotation_error.is_some()
            || !t.info.status.state.servable()
            || t.rotation.retry_at.is_some_and(|at| at > now)
        {
            return false;
        }
        if t.rotation.started_at.is_some() {
            return true;
        }
        // an expired token cannot rotate itself
        t.info
            .expires_at
            .is_some_and(|at| at > now && at - now <= self.rotate_margin())
    }

    /// Rotates the runtime's token if it is due, once across replicas; the
    /// work runs in a task of its own.
    pub(super) async fn rotate_runtime_token_if_due(self: &Arc<Self>, rt: &Runtime) -> Rotation {
        let this = self.clone();
        let rt = rt.clone();
        match tokio::spawn(async move { this.rotate_with_lease(&rt).await }).await {
            Ok(r) => r,
            Err(_) => Rotation::Temporary("the rotation stopped unexpectedly".into()),
        }
    }

    async fn rotate_with_lease(&self, rt: &Runtime) -> Rotation {
        let deadline = tokio::time::Instant::now() + self.lease_ttl;
        let lease_name = format!("runtime-token:{}", rt.id);
        loop {
            match self.runtime_tokens.get(&rt.id, &rt.incarnation).await {
                Ok(Some((t, _))) if self.rotation_due(rt, &t, self.clock.now()) => {}
                Ok(_) => return Rotation::NotDue,
                Err(e) => return Rotation::Temporary(e.to_string()),
            }
            match self.leases.try_acquire(&lease_name, self.lease_ttl).await {
                Ok(Some(lease)) => {
                    let result = self.rotate_locked(rt).await;
                    self.leases.release(lease).await;
                    return result;
                }
                // another replica checks or rotates it: wait for its result
                Ok(None) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(POLL).await;
                }
                Ok(None) => {
                    return Rotation::Temporary(
                        "another replica is still working on this token".into(),
                    );
                }
                Err(e) => return Rotation::Temporary(e.to_string()),
            }
        }
    }

    /// Rotates a runtime token whose lease the caller holds.
    pub(super) async fn rotate_locked(&self, rt: &Runtime) -> Rotation {
        let (mut t, mut version) = match self.runtime_tokens.get(&rt.id, &rt.incarnation).await {
            Ok(Some(found)) => found,
            Ok(None) => return Rotation::NotDue,
            Err(e) => return Rotation::Temporary(e.to_string()),
        };
        let now = self.clock.now();
        // re-read under the lease: another replica may have rotated already
        if !self.rotation_due(rt, &t, now) {
            return Rotation::NotDue;
        }
        let kind = t.info.provider;
        let provider = providers::provider(kind);
        let http = self.http.for_provider(kind);
        let endpoints = match self.registry.provider_of(rt).await {
            Ok((_, e)) => e,
            Err(e) => return Rotation::Temporary(e.to_string()),
        };

        if t.rotation.started_at.is_some() {
            // an earlier rotation's answer was never stored: ask about the
            // old token, never rotate it again
            let input = PatInput::new(
                t.token.expose_secret(),
                t.pat_username.as_deref(),
                t.pat_email.as_deref(),
            );
            match provider
                .validate_pat(&http, &endpoints, &input, TokenPurpose::Runtime, now)
                .await
            {
                Err(PatError::Unavailable { detail, .. }) => {
                    return self
                        .rotation_pause(
                            rt,
                            format!("could not learn what became of the last rotation: {detail}"),
                        )
                        .await;
                }
                Err(
                    PatError::Revoked { .. } | PatError::Invalid { .. } | PatError::Expired { .. },
                ) => {
                    let reason = format!(
                        "gitbroker rotated this Git Runtime token at {} but never received the new token (the answer was lost); the old one is revoked, so an admin must set a new Git Runtime token",
                        provider.display_name()
                    );
                    return self.rotation_stop(rt, State::Invalid, reason).await;
                }
                // alive (whatever its scopes): the rotation never happened
                _ => {
                    tracing::info!(runtime = %rt.id, "the last rotation of the Git Runtime token did not happen; rotating afresh");
                }
            }
        }

        // the intent first: from here on the old token may die
        t.rotation.started_at = Some(now);
        match self.save_runtime_token(&t, Expect::Version(version)).await {
            Ok(v) => version = v,
            Err(TokenError::Store(StoreError::Conflict)) => {
                return Rotation::Temporary("the token changed meanwhile".into());
            }
            Err(e) => return Rotation::Temporary(e.to_string()),
        }
        let expires_on = now.date_naive()
            + chrono::Duration::days(i64::from(self.settings().rotated_runtime_token_days));
        let started = std::time::Instant::now();
        let outcome = provider
            .rotate_pat(&http, &endpoints, &t.token, expires_on)
            .await;
        match outcome {
            Ok(rotated) => {
                let old_fingerprint = super::grant::fingerprint(&t.token);
                let mut fresh = t.clone();
                fresh.token = rotated.token;
                fresh.info.expires_at = rotated
                    .expires_at
                    .or_else(|| Some(expires_on.and_time(chrono::NaiveTime::MIN).and_utc()));
                fresh.info.rotated_at = Some(now);
                fresh.rotation = Default::default();
                fresh
                    .info
                    .status
                    .set(State::Valid, now, Some("rotated automatically".into()));
                let Some(stored) = self.persist_rotated(fresh, version, &t).await else {
                    return Rotation::Temporary("the rotated token could not be stored".into());
                };
                tracing::info!(target: "gitbroker::audit", action = "runtime_token.rotate", runtime = %rt.id, actor = "system", from = %old_fingerprint, fingerprint = %super::grant::fingerprint(&stored.token), millis = started.elapsed().as_millis() as u64, "Git Runtime token rotated automatically");
                self.events
                    .emit(self.runtime_token_event(
                        Action::RuntimeTokenRotated,
                        Actor::system(),
                        &stored,
                    ))
                    .await;
                Rotation::Rotated
            }
            Err(RotateError::Unknown(detail)) => {
                // the intent stays: the next attempt asks what happened
                tracing::warn!(runtime = %rt.id, %detail, "rotating the Git Runtime token got no usable answer; it is looked into before any new rotation");
                self.rotation_pause(rt, detail).await
            }
            Err(RotateError::InvalidToken) => {
                let reason = format!(
                    "{} rejected the Git Runtime token when gitbroker rotated it: it was revoked or expired (rotating an already rotated token revokes its successor too); an admin must set a new Git Runtime token",
                    provider.display_name()
                );
                self.rotation_stop(rt, State::Invalid, reason).await
            }
            Err(RotateError::Refused(m) | RotateError::Unsupported(m)) => {
                // the old token is untouched and still served until it expires
                let reason = format!(
                    "{m}; an admin must set a new Git Runtime token before this one expires"
                );
                self.rotation_stop(rt, State::Valid, reason).await
            }
        }
    }

    /// Stores the rotated token. The provider already revoked the old one,
    /// so this write is retried (CAS on the version; an unavailable store
    /// for a while). A token an admin replaced meanwhile wins: ours is
    /// dropped (and logged by fingerprint, for revocation at the provider).
    async fn persist_rotated(
        &self,
        fresh: RuntimeToken,
        mut version: u64,
        old: &RuntimeToken,
    ) -> Option<RuntimeToken> {
        let started = tokio::time::Instant::now();
        let mut pending = fresh;
        let mut pause = Duration::from_millis(50);
        loop {
            match self
                .save_runtime_token(&pending, Expect::Version(version))
                .await
            {
                Ok(_) => return Some(pending),
                Err(TokenError::Store(StoreError::Conflict)) => {
                    match self
                        .runtime_tokens
                        .get(&pending.info.runtime, &pending.incarnation)
                        .await
                    {
                        Ok(Some((latest, v)))
                            if crate::crypto::ct_eq(
                                latest.token.expose_secret().as_bytes(),
                                old.token.expose_secret().as_bytes(),
                            ) =>
                        {
                            // another worker wrote meanwhile (a check; or, had our
                            // lease run out, one that found our intent and judged the
                            // rotation lost): the token GitLab issued last wins
                            let mut next = latest;
                            next.token = pending.token.clone();
                            next.info.expires_at = pending.info.expires_at;
                            next.info.rotated_at = pending.info.rotated_at;
                            next.info.status = pending.info.status.clone();
                            next.info.rotation_error = None;
                            next.rotation = Default::default();
                            pending = next;
                            version = v;
                        }
                        Ok(_) => {
                            tracing::warn!(runtime = %pending.info.runtime, fingerprint = %super::grant::fingerprint(&pending.token), "the Git Runtime token was replaced while it rotated; the rotated token was dropped (revoke it at the provider)");
                            return None;
                        }
                        Err(e) if started.elapsed() < PERSIST_FOR => {
                            tracing::warn!(error = %e, "re-reading a rotated Git Runtime token failed; retrying");
                            tokio::time::sleep(pause).await;
                            pause = (pause * 2).min(Duration::from_secs(2));
                        }
                        Err(e) => {
                            tracing::error!(runtime = %pending.info.runtime, error = %e, "a rotated Git Runtime token could not be stored; its intent stays, so it is looked into before any new rotation");
                            return None;
                        }
                    }
                }
                Err(e) if started.elapsed() < PERSIST_FOR => {
                    tracing::error!(runtime = %pending.info.runtime, error = %e, "storing a rotated Git Runtime token failed; retrying (the provider already rotated it)");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    tracing::error!(runtime = %pending.info.runtime, error = %e, "a rotated Git Runtime token could not be stored; its intent stays, so it is looked into before any new rotation");
                    return None;
                }
            }
        }
    }

    /// A temporary failure: no new attempt before a pause that doubles
    /// from `refresh_cooldown` up to `refresh_cooldown_max`.
    async fn rotation_pause(&self, rt: &Runtime, detail: String) -> Rotation {
        let now = self.clock.now();
        let base = self.settings().refresh_cooldown;
        let max = self.settings().refresh_cooldown_max;
        let result = self
            .update_runtime_token(rt, |t| {
                t.rotation.failures = t.rotation.failures.saturating_add(1);
                let factor = 1u32 << t.rotation.failures.saturating_sub(1).min(16);
                let pause = base.saturating_mul(factor).min(max);
                t.rotation.retry_at = Some(
                    now + chrono::Duration::from_std(pause)
                        .unwrap_or(chrono::Duration::seconds(30)),
                );
            })
            .await;
        if let Err(e) = result {
            tracing::warn!(runtime = %rt.id, error = %e, "could not record a failed rotation");
        }
        Rotation::Temporary(detail)
    }

    /// Stops rotating for good: `reason` goes into the status, which becomes
    /// `state` when that is a problem (the old token is dead), and an
    /// event tells admins and webhooks.
    async fn rotation_stop(&self, rt: &Runtime, state: State, reason: String) -> Rotation {
        let now = self.clock.now();
        let mut from = State::Valid;
        let result = self
            .update_runtime_token(rt, |t| {
                from = t.info.status.state;
                t.rotation = Default::default();
                t.info.rotation_error = Some(reason.clone());
                if state != State::Valid {
                    t.info.status.checked_at = Some(now);
                    t.info.status.set(state, now, Some(reason.clone()));
                }
            })
            .await;
        match result {
            Ok(Some(t)) => {
                tracing::warn!(target: "gitbroker::audit", action = "runtime_token.status", runtime = %rt.id, from = from.as_str(), to = t.info.status.state.as_str(), reason = %reason, "automatic rotation of the Git Runtime token stopped");
                self.events
                    .emit(
                        self.runtime_token_event(
                            Action::RuntimeTokenStatusChanged,
                            Actor::system(),
                            &t,
                        )
                        .status(
                            from.as_str(),
                            t.info.status.state.as_str(),
                            Some(&reason),
                        ),
                    )
                    .await;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(runtime = %rt.id, error = %e, "could not record that the rotation stopped");
            }
        }
        Rotation::Stopped(reason)
    }

    /// Applies `change` to the latest version of the runtime's token (CAS,
    /// retried).
    async fn update_runtime_token(
        &self,
        rt: &Runtime,
        mut change: impl FnMut(&mut RuntimeToken),
    ) -> Result<Option<RuntimeToken>, TokenError> {
        for _ in 0..20 {
            let Some((mut t, v)) = self.runtime_tokens.get(&rt.id, &rt.incarnation).await? else {
                return Ok(None);
            };
            change(&mut t);
            match self.save_runtime_token(&t, Expect::Version(v)).await {
                Ok(_) => return Ok(Some(t)),
                Err(TokenError::Store(StoreError::Conflict)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict.into())
    }
}
