//! The one home of the token lifecycle: every path that assigns, replaces,
//! reuses, deletes, serves, refreshes, revokes or checks a token goes
//! through [`Lifecycle`] — the OAuth callback, pasted tokens, the page, the
//! user and admin APIs, the runtime API and the background work.
//!
//! Writes follow one discipline: the runtime is re-checked (exists, same
//! incarnation, still in the user's accounts) right before a token is
//! written for it and again right after; a write that lost that race is
//! undone (and an OAuth token revoked), and since assignments live in the
//! collection of the runtime's incarnation, a late write can never reach a
//! runtime registered later under the same id.

use super::TokenError;
use super::grant::{
    AssignmentRef, Grant, RefreshFailure, State, Status, Timing, TokenSource, fingerprint,
};
use super::lease::{Leases, SingleFlight};
use super::repo::{Assignment, GrantRepo};
use super::runtime::{RuntimeToken, RuntimeTokenRepo, RuntimeTokenStatus};
use super::schedule::{DueKey, RevocationJob, RevocationQueue, Schedule};
use crate::auth::SessionUser;
use crate::clock::Clock;
use crate::config::{AccountSettings, LifecycleSettings};
use crate::crypto::{self, Keyring};
use crate::events::Actor;
use crate::metrics::Metrics;
use crate::providers::github_app_user;
use crate::providers::token_endpoint::IssuedTokens;
use crate::providers::{
    self, Endpoints, PatError, PatInput, ProviderClient, ProviderError, ProviderKind, Revocation,
    TokenPurpose, TokenReport,
};
use crate::registry::{
    AppRequirements, AppSummary, AppUpdate, OAuthApp, OAuthAppInput, Registry, RegistryError,
    Runtime, RuntimeInput,
};
use crate::store::{Expect, Store, StoreError};
use chrono::{DateTime, Utc};
use rand::Rng;
use secrecy::SecretString;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum AssignError {
    #[error("runtime `{0}` does not exist or is not in one of your accounts")]
    RuntimeNotFound(String),
    #[error("{0}")]
    DifferentHost(String),
    /// A change refused because tokens are stored (409).
    #[error("{0}")]
    Conflict(String),
    /// The runtime was deleted, registered again or moved while the token
    /// was being obtained: nothing was stored (and an OAuth token revoked).
    #[error(
        "runtime `{runtime}` was deleted or moved to another account while the token was being added; nothing was stored{}",
        .revocation.as_ref().map(|r| format!(". {}", r.describe())).unwrap_or_default()
    )]
    RuntimeChanged {
        runtime: String,
        /// What became of an OAuth token obtained for it.
        revocation: Option<RevokeReport>,
    },
    #[error("runtime `{0}` has no OAuth app configured; add a personal access token instead")]
    NoOAuthApp(String),
    #[error("{0}")]
    GrantUnusable(String),
    #[error(transparent)]
    Pat(#[from] PatError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Token(#[from] TokenError),
}

impl From<StoreError> for AssignError {
    fn from(e: StoreError) -> Self {
        Self::Token(e.into())
    }
}

/// What happened at the provider to a token gitbroker no longer holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeReport {
    Revoked,
    AlreadyInvalid,
    /// The provider has no way to revoke it; the user can at the provider.
    Unsupported {
        provider: &'static str,
    },
    /// A pasted token belongs to the user, who may use it elsewhere.
    KeptPat,
    /// Could not revoke now; queued and retried until it is.
    Queued {
        reason: String,
    },
    /// Could not revoke and cannot retry (its OAuth app is gone).
    Failed {
        reason: String,
    },
}

impl RevokeReport {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Revoked => "revoked",
            Self::AlreadyInvalid => "already_invalid",
            Self::Unsupported { .. } => "unsupported",
            Self::KeptPat => "kept",
            Self::Queued { .. } => "queued",
            Self::Failed { .. } => "failed",
        }
    }

    /// A sentence for the person who deleted the token.
    pub fn describe(&self) -> String {
        match self {
            Self::Revoked => "It was revoked at the provider.".into(),
            Self::AlreadyInvalid => "The provider said it was no longer valid.".into(),
            Self::Unsupported { provider } => format!(
                "{provider} offers no way to revoke it from here; you can remove the authorization in your {provider} account settings."
            ),
            Self::KeptPat => "Personal access tokens stay valid at the provider; revoke it there if you no longer use it.".into(),
            Self::Queued { reason } => format!(
                "The provider could not revoke it right now ({reason}); gitbroker keeps trying."
            ),
            Self::Failed { reason } => format!(
                "It could not be revoked ({reason}); revoke it at the provider yourself."
            ),
        }
    }
}

/// What removing one runtime's assignment did to its grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Released {
    /// Other runtimes still use the grant: it stays, unrevoked.
    StillUsed { runtimes: Vec<String> },
    /// That was the last runtime: the grant is gone.
    Deleted(RevokeReport),
    /// The grant had already gone.
    Missing,
}

impl Released {
    /// For events: `still_used`, `missing`, or the revocation's outcome.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::StillUsed { .. } => "still_used",
            Self::Deleted(r) => r.as_str(),
            Self::Missing => "missing",
        }
    }
}

/// The result of assigning a token.
#[derive(Debug)]
pub struct Assigned {
    pub runtimes: Vec<String>,
    pub provider: &'static str,
    pub login: String,
    pub report: Option<TokenReport>,
    /// Runtimes that changed while the token was being added.
    pub skipped: Vec<String>,
    /// A GitHub App user token stored as `not_installed`: why, and where
    /// to install the App.
    pub not_installed: Option<String>,
}

/// A Git user token as the user sees it: everything but its value.
#[derive(Debug, Clone)]
pub struct TokenInfo {
    pub grant_id: String,
    pub status: Status,
    pub provider: ProviderKind,
    pub login: String,
    pub scopes: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
    /// When the authorization ends (the admin's lifetime for refreshable
    /// OAuth tokens); `None`: never.
    pub usable_until: Option<DateTime<Utc>>,
    pub authorized_at: DateTime<Utc>,
    pub issued_at: DateTime<Utc>,
    pub last_refreshed_at: Option<DateTime<Utc>>,
    /// Whether gitbroker refreshes it (an OAuth grant with a refresh token).
    pub refreshable: bool,
    pub source: TokenSource,
    /// Other runtimes this same grant is assigned to.
    pub shared_with: Vec<String>,
}

#[derive(Debug, Clone)]
pub enum TokenSlot {
    None,
    /// It no longer decrypts (its key was retired).
    Unreadable,
    Present(Box<TokenInfo>),
}

/// An existing authorization the user could use for a runtime.
#[derive(Debug, Clone)]
pub struct Reusable {
    pub grant_id: String,
    pub login: String,
    /// Shared by every runtime the grant is offered on.
    pub used_by: Arc<[String]>,
}

/// One runtime of the user, with its token and the choices it offers.
#[derive(Debug, Clone)]
pub struct UserRuntime {
    pub runtime: Runtime,
    pub provider: Option<(ProviderKind, Endpoints)>,
    pub app: Option<AppSummary>,
    pub token: TokenSlot,
    /// The user's valid grants from this runtime's OAuth app, assigned to
    /// other runtimes ("use my existing authorization"); each made once
    /// per listing and shared by the runtimes it is offered on.
    pub reusable: Vec<Arc<Reusable>>,
    /// Set when one more authorization would pass GitHub's token cap.
    pub cap_warning: Option<String>,
}

/// Tokens obtained by the OAuth flow, checked and ready to store.
pub struct OAuthTokens {
    pub issued: IssuedTokens,
    pub scopes: Vec<String>,
    pub login: String,
}

/// GitHub keeps at most this many OAuth tokens per (user, app, scopes).
const GITHUB_TOKEN_CAP: usize = 10;

pub struct Lifecycle {
    pub(super) store: Arc<dyn Store>,
    pub(super) keyring: Arc<Keyring>,
    pub(super) registry: Arc<Registry>,
    pub(super) grants: GrantRepo,
    pub(super) runtime_tokens: RuntimeTokenRepo,
    pub(super) schedule: Schedule,
    pub(super) revocations: RevocationQueue,
    pub(super) leases: Leases,
    pub(super) flights: SingleFlight<Result<Grant, RefreshFailure>>,
    /// Installation-token mints, one per runtime at a time.
    pub(super) mint_flights: SingleFlight<Result<RuntimeToken, super::installation::MintFailure>>,
    pub(super) http: ProviderClient,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) settings: LifecycleSettings,
    pub(super) timing: Timing,
    pub(super) lease_ttl: Duration,
    pub(super) events: crate::events::Events,
    pub(super) metrics: Arc<Metrics>,
    /// GitHub App user tokens narrowed to runtimes' repositories.
    pub(super) narrow_cache: super::narrow::NarrowCache,
    pub(super) narrow_flights: SingleFlight<super::narrow::NarrowOutcome>,
}

fn chrono_of(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl Lifecycle {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn Store>,
        keyring: Arc<Keyring>,
        registry: Arc<Registry>,
        http: ProviderClient,
        clock: Arc<dyn Clock>,
        settings: LifecycleSettings,
        provider_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        let timing = Timing {
            refresh_margin: chrono_of(settings.refresh_margin),
            keepalive: chrono_of(settings.refresh_keepalive),
            check_interval: chrono_of(settings.check_interval),
            expiring_soon: chrono_of(settings.expiring_soon),
        };
        Self {
            store: store.clone(),
            keyring: keyring.clone(),
            registry,
            grants: GrantRepo::new(store.clone(), keyring.clone()),
            runtime_tokens: RuntimeTokenRepo::new(store.clone(), keyring.clone()),
            schedule: Schedule::new(store.clone()),
            revocations: RevocationQueue::new(store.clone(), keyring),
            leases: Leases::new(store),
            flights: SingleFlight::default(),
            mint_flights: SingleFlight::default(),
            http,
            clock,
            settings,
            timing,
            // longer than one provider call plus the retried store write
            lease_ttl: provider_timeout * 2 + Duration::from_secs(30),
            events: crate::events::Events::default(),
            metrics,
            narrow_cache: super::narrow::NarrowCache::default(),
            narrow_flights: SingleFlight::default(),
        }
    }

    /// Starts the shared schedule and moves records of earlier versions
    /// into today's form; run once at start.
    pub async fn start(&self) -> Result<(), TokenError> {
        self.schedule.init(self.clock.now()).await?;
        super::migrate::run(self).await
    }

    /// How many times this process asked GitHub to narrow a token.
    pub fn narrow_calls(&self) -> u64 {
        self.narrow_cache.provider_calls()
    }

    pub fn timing(&self) -> &Timing {
        &self.timing
    }

    pub fn settings(&self) -> &LifecycleSettings {
        &self.settings
    }

    /// The grant store, for inspection (tests, tools); changes go through
    /// the lifecycle's own methods.
    pub fn grants(&self) -> &GrantRepo {
        &self.grants
    }

    pub fn http(&self) -> &ProviderClient {
        &self.http
    }

    /// Where the lifecycle's events go (the audit log, webhooks,
    /// notifications add their sinks here at start).
    pub fn events(&self) -> &crate::events::Events {
        &self.events
    }

    /// A new event at the clock's time.
    pub(super) fn event(
        &self,
        action: crate::events::Action,
        actor: crate::events::Actor,
    ) -> crate::events::Event {
        crate::events::Event::new(action, actor, self.clock.now())
    }

    pub(super) fn runtime_token_event(
        &self,
        action: crate::events::Action,
        actor: Actor,
        t: &RuntimeToken,
    ) -> crate::events::Event {
        self.event(action, actor)
            .runtime(&t.info.runtime)
            .provider(t.info.provider.as_str())
            .login(Some(&t.info.provider_login))
            .fingerprint(fingerprint(&t.token))
    }

    /// A grant's status changed from `from` to its current state: one
    /// `user_token.status_changed` per runtime it is assigned to (what
    /// people and webhooks see, runtime by runtime), and a
    /// `user_token.recovered` too when a problem ended.
    pub(super) async fn emit_status_change(&self, g: &Grant, from: State) {
        let to = g.status.state;
        if from == to {
            return;
        }
        let problem = |s: State| !matches!(s, State::Valid | State::Unknown);
        let base = |action| {
            self.event(action, Actor::system())
                .user(&g.user)
                .grant(&g.id)
                .provider(g.provider.as_str())
                .login(Some(&g.provider_login))
                .fingerprint(fingerprint(&g.access_token))
        };
        for a in &g.assignments {
            self.events
                .emit(
                    base(crate::events::Action::UserTokenStatusChanged)
                        .runtime(&a.runtime)
                        .status(from.as_str(), to.as_str(), g.status.reason.as_deref()),
                )
                .await;
            if to == State::Valid && problem(from) {
                self.events
                    .emit(
                        base(crate::events::Action::UserTokenRecovered)
                            .runtime(&a.runtime)
                            .status(from.as_str(), to.as_str(), g.status.reason.as_deref()),
                    )
                    .await;
            }
        }
    }

    /// The next check: one interval from now, give or take the jitter.
    pub(super) fn next_check(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let interval = self.timing.check_interval;
        let spread = interval.num_seconds()
            * i64::try_from(self.settings.check_jitter_percent).unwrap_or(0)
            / 100;
        let jitter = if spread > 0 {
            rand::thread_rng().gen_range(-spread..=spread)
        } else {
            0
        };
        now + interval + chrono::Duration::seconds(jitter)
    }

    pub(super) fn grant_lease(user: &str, id: &str) -> String {
        format!("grant:{}:{id}", crypto::sha256_hex(user.as_bytes()))
    }

    /// Every write of a grant: its wake-up first, so none is ever without.
    pub(super) async fn save_grant(&self, g: &Grant, expect: Expect) -> Result<u64, TokenError> {
        let key = DueKey::Grant {
            user: g.user.clone(),
            id: g.id.clone(),
        };
        self.schedule
            .wake(&key, g.next_wake(&self.timing), self.clock.now())
            .await?;
        self.grants.put(g, expect).await
    }

    pub(super) async fn save_runtime_token(
        &self,
        t: &RuntimeToken,
        expect: Expect,
    ) -> Result<u64, TokenError> {
        let key = DueKey::RuntimeToken {
            runtime: t.info.runtime.clone(),
        };
        let margin = chrono_of(self.settings.runtime_token_rotate_margin);
        self.schedule
            .wake(&key, t.next_wake(margin), self.clock.now())
            .await?;
        self.runtime_tokens.put(t, expect).await
    }

    /// A runtime that must exist (admin operations): 404 otherwise.
    async fn existing_runtime(&self, id: &str) -> Result<Runtime, AssignError> {
        Ok(self
            .registry
            .runtime(id)
            .await?
            .ok_or_else(|| RegistryError::NotFound(format!("runtime `{id}`")))?)
    }

    /// A runtime of one of the user's accounts; anything else looks absent.
    pub async fn user_runtime(&self, user: &SessionUser, id: &str) -> Result<Runtime, AssignError> {
        self.registry
            .runtime_for_groups(&user.groups, id)
            .await?
            .ok_or_else(|| AssignError::RuntimeNotFound(id.to_owned()))
    }

    /// The runtime, if it still is the same incarnation and (for a user)
    /// still in one of the user's accounts.
    async fn still_current(
        &self,
        runtime: &str,
        incarnation: &str,
        groups: Option<&[String]>,
    ) -> Result<Option<Runtime>, RegistryError> {
        let rt = match groups {
            Some(g) => self.registry.runtime_for_groups(g, runtime).await?,
            None => self.registry.runtime(runtime).await?,
        };
        Ok(rt.filter(|r| r.incarnation == incarnation))
    }

    // ------------------------------------------------------------------
    // Assigning

    /// Stores the tokens of a finished OAuth flow for the runtime the flow
    /// was started for (that incarnation). If the runtime changed
    /// meanwhile, nothing is stored and the token is revoked.
    pub async fn assign_oauth(
        &self,
        user: &SessionUser,
        runtime: &str,
        incarnation: &str,
        app: &OAuthApp,
        tokens: OAuthTokens,
    ) -> Result<Assigned, AssignError> {
        let provider = providers::provider(app.provider);
        let endpoints = app.endpoints().map_err(|m| RegistryError::Invalid {
            key: "base_url".into(),
            message: m,
        })?;
        let Some(rt) = self
            .still_current(runtime, incarnation, Some(&user.groups))
            .await?
        else {
            let report = self
                .revoke_token(app.provider, &app.id, tokens.issued.access_token, &user.sub)
                .await;
            return Err(AssignError::RuntimeChanged {
                runtime: runtime.to_owned(),
                revocation: Some(report),
            });
        };
        let now = self.clock.now();
        let cap_at = app
            .token_lifetime_secs
            .and_then(|s| i64::try_from(s).ok())
            .map(|s| now + chrono::Duration::seconds(s));
        // A GitHub App user token reaches only where the App is installed:
        // one that reaches nothing the runtime needs is kept (the user may
        // install the App next) but not served.
        let mut next_check_at = self.next_check(now);
        let status = match self
            .installation_reach(app, &rt, &tokens.issued.access_token)
            .await
        {
            Ok(Some(github_app_user::Reach::NotInstalled(why))) => Status::new(
                State::NotInstalled,
                now,
                Some(super::check::not_installed_reason(app, &why)),
            ),
            Ok(_) => Status::new(State::Valid, now, None),
            Err(e) => {
                tracing::warn!(runtime = %runtime, error = %e, "could not check where the GitHub App is installed");
                next_check_at = self.retry_check(now);
                Status::new(
                    State::Unknown,
                    now,
                    Some(format!(
                        "could not check where the GitHub App is installed yet ({e})"
                    )),
                )
            }
        };
        let not_installed = (status.state == State::NotInstalled)
            .then(|| status.reason.clone().unwrap_or_default());
        let grant = Grant {
            id: crypto::random_string(16),
            user: user.sub.clone(),
            provider: app.provider,
            api: endpoints.api.to_string(),
            source: TokenSource::OAuth {
                app: app.id.clone(),
            },
            access_token: tokens.issued.access_token,
            refresh_token: tokens.issued.refresh_token,
            pat_username: None,
            pat_email: None,
            git_username: provider.git_username(&tokens.login),
            git_auth: Some(provider.oauth_git_auth(&tokens.login)),
            provider_login: tokens.login.clone(),
            scopes: tokens.scopes,
            authorized_at: now,
            issued_at: now,
            access_expires_at: tokens.issued.expires_at,
            cap_at,
            last_refreshed_at: None,
            refresh_failures: 0,
            refresh_cooldown_until: None,
            assignments: Vec::new(),
            status,
            next_check_at,
        };
        let (runtimes, skipped, revocation) = self.attach_new(user, vec![rt], grant).await?;
        if runtimes.is_empty() {
            return Err(AssignError::RuntimeChanged {
                runtime: runtime.to_owned(),
                revocation,
            });
        }
        Ok(Assigned {
            runtimes,
            provider: provider.display_name(),
            login: tokens.login,
            report: None,
            skipped,
            not_installed,
        })
    }

    /// Validates a pasted token once and assigns it, as one grant, to
    /// `runtime` and each of `also` (runtimes of the user on the same host).
    pub async fn assign_pat(
        &self,
        user: &SessionUser,
        runtime: &str,
        also: &[String],
        input: PatInput,
    ) -> Result<Assigned, AssignError> {
        if input.is_empty() {
            return Err(PatError::BadInput("paste a personal access token first".into()).into());
        }
        input.check()?;
        let primary = self.user_runtime(user, runtime).await?;
        let (kind, endpoints) = self.registry.provider_of(&primary).await?;
        let mut targets = vec![primary];
        for id in also.iter().filter(|id| id.as_str() != runtime) {
            if targets.iter().any(|t| &t.id == id) {
                continue;
            }
            let rt = self.user_runtime(user, id).await?;
            let (k, e) = self.registry.provider_of(&rt).await?;
            if k != kind || e.api != endpoints.api {
                return Err(AssignError::DifferentHost(format!(
                    "runtime `{}` is on another Git provider host than `{runtime}`; a token serves one host",
                    rt.id
                )));
            }
            targets.push(rt);
        }
        let provider = providers::provider(kind);
        let now = self.clock.now();
        let report = provider
            .validate_pat(
                &self.http.for_provider(kind),
                &endpoints,
                &input,
                TokenPurpose::User,
                now,
            )
            .await?;
        let grant = Grant {
            id: crypto::random_string(16),
            user: user.sub.clone(),
            provider: kind,
            api: endpoints.api.to_string(),
            source: TokenSource::Pat {
                kind: report.kind.clone(),
            },
            access_token: input.token,
            refresh_token: None,
            pat_username: input.username,
            pat_email: input.email,
            git_username: report.git_username.clone(),
            git_auth: Some(report.git_auth.clone()),
            provider_login: report.login.clone(),
            scopes: report.scopes.clone(),
            authorized_at: now,
            issued_at: now,
            access_expires_at: report.expires_at,
            cap_at: None,
            last_refreshed_at: None,
            refresh_failures: 0,
            refresh_cooldown_until: None,
            assignments: Vec::new(),
            status: Status::new(State::Valid, now, None),
            next_check_at: self.next_check(now),
        };
        let (runtimes, skipped, _) = self.attach_new(user, targets, grant).await?;
        if runtimes.is_empty() {
            return Err(AssignError::RuntimeChanged {
                runtime: runtime.to_owned(),
                revocation: None,
            });
        }
        Ok(Assigned {
            runtimes,
            provider: provider.display_name(),
            login: report.login.clone(),
            report: Some(report),
            skipped,
            not_installed: None,
        })
    }

    /// "Use my existing authorization": assigns a grant the user already
    /// has, from this runtime's OAuth app on the same host, to `runtime`.
    /// No new provider token is minted.
    pub async fn reuse_grant(
        &self,
        user: &SessionUser,
        runtime: &str,
        grant_id: &str,
    ) -> Result<Assigned, AssignError> {
        let rt = self.user_runtime(user, runtime).await?;
        let app_id = rt
            .oauth_app
            .clone()
            .ok_or_else(|| AssignError::NoOAuthApp(rt.id.clone()))?;
        let (_, endpoints) = self.registry.provider_of(&rt).await?;
        let app = self.registry.app(&app_id).await?;
        let unusable = |why: &str| {
            AssignError::GrantUnusable(format!(
                "that authorization cannot be used for runtime `{runtime}`: {why}"
            ))
        };
        loop {
            let Some((mut g, version)) = self.grants.get(&user.sub, grant_id).await? else {
                return Err(unusable("it does not exist (any more)"));
            };
            if g.source.app() != Some(app_id.as_str()) || g.api != endpoints.api.as_str() {
                return Err(unusable("it comes from another OAuth app or provider host"));
            }
            let now = self.clock.now();
            let missing = self.missing_for(&g, app.as_ref().map(AppRequirements::from).as_ref());
            let status = g.effective_status(now, &missing, &self.timing);
            if !status.state.servable() {
                return Err(unusable(
                    status.reason.as_deref().unwrap_or(status.state.as_str()),
                ));
            }
            if g.assigned_to(&rt.id, &rt.incarnation) {
                break;
            }
            g.assignments.push(AssignmentRef {
                runtime: rt.id.clone(),
                incarnation: rt.incarnation.clone(),
                assigned_at: now,
            });
            match self.save_grant(&g, Expect::Version(version)).await {
                Ok(_) => break,
                Err(TokenError::Store(StoreError::Conflict)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let login = self
            .grants
            .get(&user.sub, grant_id)
            .await?
            .map(|(g, _)| g.provider_login)
            .unwrap_or_default();
        if let Err(released) = self.point_and_verify(user, &rt, grant_id).await? {
            return Err(AssignError::RuntimeChanged {
                runtime: rt.id,
                revocation: match released {
                    Released::Deleted(r) => Some(r),
                    _ => None,
                },
            });
        }
        tracing::info!(target: "gitbroker::audit", action = "user_token.reuse", runtime = %rt.id, user = %user.sub, grant = %grant_id, "existing authorization assigned to another runtime");
        self.events
            .emit(
                self.event(
                    crate::events::Action::UserTokenReused,
                    Actor::user(&user.sub),
                )
                .runtime(&rt.id)
                .user(&user.sub)
                .grant(grant_id)
                .login(Some(&login)),
            )
            .await;
        Ok(Assigned {
            runtimes: vec![rt.id],
            provider: providers::provider(
                app.as_ref().map_or(ProviderKind::Github, |a| a.provider),
            )
            .display_name(),
            login,
            report: None,
            skipped: Vec::new(),
            not_installed: None,
        })
    }

    /// Writes a new grant for `targets` and points each at it. Returns the
    /// runtimes it was assigned to, those that changed meanwhile, and what
    /// became of the token if no runtime took it.
    async fn attach_new(
        &self,
        user: &SessionUser,
        targets: Vec<Runtime>,
        mut grant: Grant,
    ) -> Result<(Vec<String>, Vec<String>, Option<RevokeReport>), AssignError> {
        let now = self.clock.now();
        // right before the write: each runtime is still this incarnation, still the user's
        let mut live = Vec::new();
        let mut skipped = Vec::new();
        for rt in targets {
            match self
                .still_current(&rt.id, &rt.incarnation, Some(&user.groups))
                .await?
            {
                Some(rt) => live.push(rt),
                None => skipped.push(rt.id),
            }
        }
        if live.is_empty() {
            let report = self.discard(&grant).await;
            return Ok((Vec::new(), skipped, report));
        }
        grant.assignments = live
            .iter()
            .map(|rt| AssignmentRef {
                runtime: rt.id.clone(),
                incarnation: rt.incarnation.clone(),
                assigned_at: now,
            })
            .collect();
        self.save_grant(&grant, Expect::Absent).await?;
        let mut assigned = Vec::new();
        let mut revocation = None;
        for rt in &live {
            match self.point_and_verify(user, rt, &grant.id).await? {
                Ok(()) => {
                    tracing::info!(target: "gitbroker::audit", action = "user_token.assign", runtime = %rt.id, user = %user.sub, method = grant.source.method(), fingerprint = %fingerprint(&grant.access_token), "user token assigned");
                    self.events
                        .emit(
                            self.event(
                                crate::events::Action::UserTokenAssigned,
                                Actor::user(&user.sub),
                            )
                            .runtime(&rt.id)
                            .user(&user.sub)
                            .grant(&grant.id)
                            .provider(grant.provider.as_str())
                            .login(Some(&grant.provider_login))
                            .outcome(grant.source.method())
                            .fingerprint(fingerprint(&grant.access_token)),
                        )
                        .await;
                    assigned.push(rt.id.clone());
                }
                Err(released) => {
                    if let Released::Deleted(r) = released {
                        revocation = Some(r);
                    }
                    skipped.push(rt.id.clone());
                }
            }
        }
        Ok((assigned, skipped, revocation))
    }

    /// Points the runtime's assignment for the user at `grant_id`, then
    /// checks the runtime once more. If it changed, the assignment is undone.
    /// The grant it replaced loses this runtime (and is revoked when no
    /// runtime uses it any more). `Err` (what undoing did to the grant)
    /// when the runtime changed.
    async fn point_and_verify(
        &self,
        user: &SessionUser,
        rt: &Runtime,
        grant_id: &str,
    ) -> Result<Result<(), Released>, AssignError> {
        let now = self.clock.now();
        let (replaced, version) = loop {
            let current = self
                .grants
                .assignment(&rt.id, &rt.incarnation, &user.sub)
                .await?;
            let (expect, old) = match &current {
                Some((a, v)) => (Expect::Version(*v), Some(a.grant.clone())),
                None => (Expect::Absent, None),
            };
            let a = Assignment {
                grant: grant_id.to_owned(),
                assigned_at: now,
            };
            match self
                .grants
                .put_assignment(&rt.id, &rt.incarnation, &user.sub, &a, expect)
                .await
            {
                Ok(v) => break (old, v),
                Err(TokenError::Store(StoreError::Conflict)) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        // right after the write: a delete that began meanwhile either saw
        // this assignment (and dropped it) or is seen here
        if self
            .still_current(&rt.id, &rt.incarnation, Some(&user.groups))
            .await?
            .is_none()
        {
            let _ = self
                .grants
                .delete_assignment(&rt.id, &rt.incarnation, &user.sub, Expect::Version(version))
                .await;
            let released = self
                .detach(&user.sub, grant_id, &rt.id, &rt.incarnation)
                .await?;
            tracing::warn!(runtime = %rt.id, user = %user.sub, ?released, "runtime changed while a token was assigned; assignment undone");
            return Ok(Err(released));
        }
        if let Some(old) = replaced
            && old != grant_id
        {
            let released = self
                .detach(&user.sub, &old, &rt.id, &rt.incarnation)
                .await?;
            tracing::info!(target: "gitbroker::audit", action = "user_token.replace", runtime = %rt.id, user = %user.sub, outcome = ?released, "previous user token replaced");
            self.events
                .emit(
                    self.event(
                        crate::events::Action::UserTokenReplaced,
                        Actor::user(&user.sub),
                    )
                    .runtime(&rt.id)
                    .user(&user.sub)
                    .grant(&old)
                    .outcome(released.outcome()),
                )
                .await;
        }
        Ok(Ok(()))
    }

    /// A grant that never got assigned: its OAuth token is revoked.
    async fn discard(&self, g: &Grant) -> Option<RevokeReport> {
        match &g.source {
            TokenSource::OAuth { app } => Some(
                self.revoke_token(g.provider, app, g.access_token.clone(), &g.user)
                    .await,
            ),
            TokenSource::Pat { .. } => None,
        }
    }

    /// Revokes a token the flow obtained but refused (it lacked scopes).
    pub async fn revoke_refused(
        &self,
        app: &OAuthApp,
        token: SecretString,
        user: &str,
    ) -> RevokeReport {
        self.revoke_token(app.provider, &app.id, token, user).await
    }

    /// Removes one runtime from a grant; deletes the grant, and revokes its
    /// OAuth token, when no runtime uses it any more.
    pub(super) async fn detach(
        &self,
        user: &str,
        grant_id: &str,
        runtime: &str,
        incarnation: &str,
    ) -> Result<Released, TokenError> {
        loop {
            let Some((mut g, version)) = self.grants.get(user, grant_id).await? else {
                return Ok(Released::Missing);
            };
            g.assignments
                .retain(|a| !(a.runtime == runtime && a.incarnation == incarnation));
            if !g.assignments.is_empty() {
                match self.save_grant(&g, Expect::Version(version)).await {
                    Ok(_) => {
                        return Ok(Released::StillUsed {
                            runtimes: g.assignments.iter().map(|a| a.runtime.clone()).collect(),
                        });
                    }
                    Err(TokenError::Store(StoreError::Conflict)) => continue,
                    Err(e) => return Err(e),
                }
            }
            match self
                .grants
                .delete(user, grant_id, Expect::Version(version))
                .await
            {
                // serving reads the grant first, so a narrowed copy of it
                // can no longer be served anywhere; this only frees memory
                Ok(_) => self.narrow_cache.forget(grant_id),
                Err(TokenError::Store(StoreError::Conflict)) => continue,
                Err(e) => return Err(e),
            }
            let report = match &g.source {
                TokenSource::OAuth { app } => {
                    self.revoke_token(g.provider, app, g.access_token.clone(), user)
                        .await
                }
                TokenSource::Pat { .. } => RevokeReport::KeptPat,
            };
            return Ok(Released::Deleted(report));
        }
    }

    /// Deletes the user's token for one runtime (page, user API). Only that
    /// runtime's assignment goes; the grant is revoked only when no other
    /// runtime uses it. `None` when there was no token.
    pub async fn unassign(
        &self,
        user: &SessionUser,
        runtime: &str,
    ) -> Result<Option<Released>, AssignError> {
        let rt = self.user_runtime(user, runtime).await?;
        loop {
            let Some((a, version)) = self
                .grants
                .assignment(&rt.id, &rt.incarnation, &user.sub)
                .await?
            else {
                return Ok(None);
            };
            match self
                .grants
                .delete_assignment(&rt.id, &rt.incarnation, &user.sub, Expect::Version(version))
                .await
            {
                Ok(_) => {}
                Err(TokenError::Store(StoreError::Conflict)) => continue,
                Err(e) => return Err(e.into()),
            }
            let released = self
                .detach(&user.sub, &a.grant, &rt.id, &rt.incarnation)
                .await?;
            tracing::info!(target: "gitbroker::audit", action = "user_token.delete", runtime = %rt.id, user = %user.sub, outcome = ?released, "user token deleted");
            self.events
                .emit(
                    self.event(
                        crate::events::Action::UserTokenDeleted,
                        Actor::user(&user.sub),
                    )
                    .runtime(&rt.id)
                    .user(&user.sub)
                    .grant(&a.grant)
                    .outcome(released.outcome()),
                )
                .await;
            return Ok(Some(released));
        }
    }

    // ------------------------------------------------------------------
    // Revocation

    /// Revokes an OAuth token now, or queues it for retries. Never says
    /// "revoked" unless the provider did.
    pub(super) async fn revoke_token(
        &self,
        kind: ProviderKind,
        app_id: &str,
        token: SecretString,
        user: &str,
    ) -> RevokeReport {
        let fp = fingerprint(&token);
        let report = match self.try_revoke(app_id, &token).await {
            Ok(r) => r,
            Err(RevokeAttempt::Retry(reason)) => {
                let now = self.clock.now();
                let job = RevocationJob {
                    id: crypto::random_string(16),
                    provider: kind,
                    app: app_id.to_owned(),
                    token,
                    fingerprint: fp.clone(),
                    user: user.to_owned(),
                    attempts: 1,
                    created_at: now,
                    next_attempt_at: now + chrono::Duration::seconds(60),
                    last_error: Some(reason.clone()),
                };
                match self.revocations.put(&job, Expect::Absent).await {
                    Ok(_) => RevokeReport::Queued { reason },
                    Err(e) => {
                        tracing::error!(app = %app_id, fingerprint = %fp, error = %e, "could not queue a revocation");
                        RevokeReport::Failed {
                            reason: format!("{reason}; and it could not be queued"),
                        }
                    }
                }
            }
            Err(RevokeAttempt::Give(reason)) => RevokeReport::Failed { reason },
        };
        tracing::info!(target: "gitbroker::audit", action = "user_token.revoke", app = %app_id, user = %user, fingerprint = %fp, outcome = report.as_str(), "revocation at the provider");
        self.events
            .emit(
                self.event(crate::events::Action::UserTokenRevoked, Actor::system())
                    .user(user)
                    .outcome(report.as_str())
                    .fingerprint(fp),
            )
            .await;
        report
    }

    pub(super) async fn try_revoke(
        &self,
        app_id: &str,
        token: &SecretString,
    ) -> Result<RevokeReport, RevokeAttempt> {
        let app = match self.registry.app(app_id).await {
            Ok(Some(app)) => app,
            Ok(None) => {
                return Err(RevokeAttempt::Give(format!(
                    "its OAuth app `{app_id}` no longer exists"
                )));
            }
            Err(e) => return Err(RevokeAttempt::Retry(format!("OAuth app unavailable: {e}"))),
        };
        let endpoints = app.endpoints().map_err(RevokeAttempt::Give)?;
        let p = providers::provider(app.provider);
        match p
            .revoke(
                &self.http.for_provider(app.provider),
                &endpoints,
                &app.client_id,
                &app.client_secret,
                token,
            )
            .await
        {
            Ok(Revocation::Revoked) => Ok(RevokeReport::Revoked),
            Ok(Revocation::AlreadyInvalid) => Ok(RevokeReport::AlreadyInvalid),
            Ok(Revocation::Unsupported) => Ok(RevokeReport::Unsupported {
                provider: p.display_name(),
            }),
            Err(ProviderError::InvalidToken) => Ok(RevokeReport::AlreadyInvalid),
            Err(e) => {
                tracing::warn!(app = %app_id, error = %e, "revocation failed");
                Err(RevokeAttempt::Retry(e.to_string()))
            }
        }
    }

    // ------------------------------------------------------------------
    // What the user sees

    pub(super) fn missing_for(&self, g: &Grant, app: Option<&AppRequirements>) -> Vec<String> {
        match (&g.source, app) {
            (TokenSource::OAuth { .. }, Some(app)) => {
                providers::missing_scopes(providers::provider(app.provider), &g.scopes, &app.scopes)
            }
            _ => Vec::new(),
        }
    }

    fn info(
        &self,
        g: &Grant,
        app: Option<&AppSummary>,
        runtime: &str,
        now: DateTime<Utc>,
    ) -> TokenInfo {
        TokenInfo {
            grant_id: g.id.clone(),
            status: g.effective_status(
                now,
                &self.missing_for(g, app.map(AppRequirements::from).as_ref()),
                &self.timing,
            ),
            provider: g.provider,
            login: g.provider_login.clone(),
            scopes: g.scopes.clone(),
            expires_at: g.expires_at(),
            usable_until: g.usable_until(),
            authorized_at: g.authorized_at,
            issued_at: g.issued_at,
            last_refreshed_at: g.last_refreshed_at,
            refreshable: g.refreshable(),
            source: g.source.clone(),
            shared_with: g
                .assignments
                .iter()
                .filter(|a| a.runtime != runtime)
                .map(|a| a.runtime.clone())
                .collect(),
        }
    }

    /// The user's accounts and their runtimes, each with its token and what
    /// the user can do (reuse an authorization; runtimes whose `provider`
    /// is the same kind and API URL can share one pasted token).
    pub async fn user_runtimes(
        &self,
        user: &SessionUser,
    ) -> Result<Vec<(AccountSettings, Vec<UserRuntime>)>, AssignError> {
        let (mut grants, mut unreadable) = self.grants.list_user(&user.sub).await?;
        if self.recheck_not_installed(&grants).await? {
            (grants, unreadable) = self.grants.list_user(&user.sub).await?;
        }
        let now = self.clock.now();
        // Display only, from this replica's snapshot (at most CACHE_TTL
        // behind an admin change elsewhere): every action the page offers
        // reads the runtime from the store again before it writes.
        let listing = self.registry.listing_cached().await?;
        let runtimes = &listing.runtimes;
        // the page never needs a client secret: none is opened
        let apps = &listing.apps;
        let accounts: Vec<AccountSettings> = self
            .registry
            .accounts_for_groups(&user.groups)
            .into_iter()
            .cloned()
            .collect();
        let mine: Vec<&Runtime> = runtimes
            .iter()
            .filter(|r| accounts.iter().any(|a| a.id == r.account))
            .collect();
        // endpoints parsed once per distinct (kind, base URL, app), not per runtime
        type ProviderKey<'a> = (Option<ProviderKind>, Option<&'a url::Url>, Option<&'a str>);
        let mut parsed: Vec<(ProviderKey, Option<(ProviderKind, Endpoints)>)> = Vec::new();
        let mut resolved: std::collections::HashMap<&str, (ProviderKind, Endpoints)> =
            std::collections::HashMap::new();
        for rt in &mine {
            let key = (rt.provider, rt.base_url.as_ref(), rt.oauth_app.as_deref());
            let found = match parsed.iter().find(|(k, _)| *k == key) {
                Some((_, p)) => p.clone(),
                None => {
                    let p = self.registry.provider_of_with(rt, apps).ok();
                    parsed.push((key, p.clone()));
                    p
                }
            };
            if let Some(p) = found {
                resolved.insert(rt.id.as_str(), p);
            }
        }
        // whether each grant could be served now, once per grant (the
        // runtimes below ask for every grant of their app)
        let servable: std::collections::HashMap<&str, bool> = grants
            .iter()
            .map(|(g, _)| {
                let app = g
                    .source
                    .app()
                    .and_then(|id| apps.iter().find(|a| a.id == id));
                let ok = g
                    .effective_status(
                        now,
                        &self.missing_for(g, app.map(AppRequirements::from).as_ref()),
                        &self.timing,
                    )
                    .state
                    .servable();
                (g.id.as_str(), ok)
            })
            .collect();
        // each grant's offer, once: every other runtime of its app offers it
        let offers: std::collections::HashMap<&str, Arc<Reusable>> = grants
            .iter()
            .map(|(g, _)| {
                let offer = Reusable {
                    grant_id: g.id.clone(),
                    login: g.provider_login.clone(),
                    used_by: g.assignments.iter().map(|a| a.runtime.clone()).collect(),
                };
                (g.id.as_str(), Arc::new(offer))
            })
            .collect();
        // Only the assignments that can hold a token are read: those of
        // runtimes one of the user's grants is sealed for (a token is
        // served only when both agree), or all of them when a grant does
        // not open and could be behind any. All at once: on Redis, one
        // pipeline.
        let candidates: Vec<&Runtime> = mine
            .iter()
            .copied()
            .filter(|rt| {
                !unreadable.is_empty()
                    || grants
                        .iter()
                        .any(|(g, _)| g.assigned_to(&rt.id, &rt.incarnation))
            })
            .collect();
        let keys: Vec<(&str, &str)> = candidates
            .iter()
            .map(|rt| (rt.id.as_str(), rt.incarnation.as_str()))
            .collect();
        let assigned = self.grants.user_assignments(&keys, &user.sub).await?;
        let assigned: std::collections::HashMap<&str, Option<(Assignment, u64)>> = candidates
            .iter()
            .map(|rt| rt.id.as_str())
            .zip(assigned)
            .collect();
        let mut out = Vec::new();
        for account in accounts {
            let mut views = Vec::new();
            for rt in mine.iter().filter(|r| r.account == account.id) {
                let app = rt
                    .oauth_app
                    .as_ref()
                    .and_then(|id| apps.iter().find(|a| &a.id == id));
                let here = resolved.get(rt.id.as_str()).cloned();
                let token = match assigned.get(rt.id.as_str()).and_then(Option::as_ref) {
                    None => TokenSlot::None,
                    Some((a, _)) => match grants.iter().find(|(g, _)| g.id == a.grant) {
                        Some((g, _)) if g.assigned_to(&rt.id, &rt.incarnation) => {
                            let app = g
                                .source
                                .app()
                                .and_then(|id| apps.iter().find(|x| x.id == id));
                            TokenSlot::Present(Box::new(self.info(g, app, &rt.id, now)))
                        }
                        // the index points at a grant that does not open or is not ours
                        _ => TokenSlot::Unreadable,
                    },
                };
                let current_grant = match &token {
                    TokenSlot::Present(t) => Some(t.grant_id.clone()),
                    _ => None,
                };
                let mut reusable = Vec::new();
                let mut cap_warning = None;
                if let (Some(app), Some((_, endpoints))) = (app, &here) {
                    let from_app: Vec<&Grant> = grants
                        .iter()
                        .map(|(g, _)| g)
                        .filter(|g| g.source.app() == Some(app.id.as_str()))
                        .collect();
                    for g in &from_app {
                        if servable.get(g.id.as_str()).copied().unwrap_or(false)
                            && g.api == endpoints.api.as_str()
                            && Some(&g.id) != current_grant.as_ref()
                            && let Some(offer) = offers.get(g.id.as_str())
                        {
                            reusable.push(offer.clone());
                        }
                    }
                    // grants list in id order, which is random: offered by
                    // the runtimes they serve instead, the same on each render
                    reusable.sort_by(|a, b| a.used_by.cmp(&b.used_by));
                    if matches!(
                        app.provider,
                        ProviderKind::Github | ProviderKind::GithubEnterprise
                    ) {
                        let live = from_app
                            .iter()
                            .filter(|g| {
                                !matches!(
                                    g.status.state,
                                    State::Invalid | State::NeedsReauthorization
                                )
                            })
                            .count();
                        if live >= GITHUB_TOKEN_CAP {
                            cap_warning = Some(format!(
                                "You already hold {live} GitHub tokens of this OAuth app. GitHub keeps at most {GITHUB_TOKEN_CAP} per user and app and silently revokes the oldest when an 11th is created, which would break another runtime. Use your existing authorization instead."
                            ));
                        }
                    }
                }
                views.push(UserRuntime {
                    runtime: (*rt).clone(),
                    provider: here,
                    app: app.cloned(),
                    token,
                    reusable,
                    cap_warning,
                });
            }
            out.push((account, views));
        }
        Ok(out)
    }

    // ------------------------------------------------------------------
    // Runtimes and their Git Runtime tokens (admin)

    async fn validate_runtime_token(
        &self,
        kind: ProviderKind,
        endpoints: &Endpoints,
        rt_id: &str,
        incarnation: &str,
        input: PatInput,
    ) -> Result<RuntimeToken, AssignError> {
        if input.is_empty() {
            return Err(PatError::BadInput("the Git Runtime token is empty".into()).into());
        }
        input.check()?;
        let now = self.clock.now();
        let report = providers::provider(kind)
            .validate_pat(
                &self.http.for_provider(kind),
                endpoints,
                &input,
                TokenPurpose::Runtime,
                now,
            )
            .await?;
        Ok(RuntimeToken {
            incarnation: incarnation.to_owned(),
            api: endpoints.api.to_string(),
            info: RuntimeTokenStatus {
                runtime: rt_id.to_owned(),
                provider: kind,
                provider_login: report.login.clone(),
                git_username: report.git_username.clone(),
                kind: report.kind.clone(),
                scopes: report.scopes.clone(),
                expires_at: report.expires_at,
                set_at: now,
                status: Status::new(State::Valid, now, None),
                rotated_at: None,
                rotation_error: None,
            },
            token: input.token,
            pat_username: input.username,
            pat_email: input.email,
            next_check_at: self.next_check(now),
            git_auth: Some(report.git_auth),
            rotation: Default::default(),
        })
    }

    /// Registers a runtime: its Git Runtime token is mandatory and must
    /// pass the runtime-token scope check before anything is created.
    pub async fn register_runtime(
        &self,
        input: RuntimeInput,
        token: PatInput,
        actor: &str,
    ) -> Result<(Runtime, SecretString, RuntimeTokenStatus), AssignError> {
        let (kind, endpoints) = self.registry.check_runtime_input(&input).await?;
        // validated against a placeholder incarnation, re-sealed below
        let mut t = self
            .validate_runtime_token(kind, &endpoints, &input.id, "", token)
            .await?;
        let (rt, credential) = self.registry.create_runtime(input).await?;
        t.incarnation = rt.incarnation.clone();
        if let Err(e) = self.save_runtime_token(&t, Expect::Any).await {
            // no runtime without its token: undo the registration
            let _ = self.registry.delete_runtime(&rt.id).await;
            return Err(e.into());
        }
        tracing::info!(target: "gitbroker::audit", action = "runtime_token.set", runtime = %rt.id, actor = %actor, fingerprint = %fingerprint(&t.token), "runtime registered with its Git Runtime token");
        self.events
            .emit(
                self.event(crate::events::Action::RuntimeCreated, Actor::parse(actor))
                    .runtime(&rt.id)
                    .provider(t.info.provider.as_str()),
            )
            .await;
        self.events
            .emit(self.runtime_token_event(
                crate::events::Action::RuntimeTokenSet,
                Actor::parse(actor),
                &t,
            ))
            .await;
        Ok((rt, credential, t.info))
    }

    /// Replaces a runtime's Git Runtime token after validating the new one.
    pub async fn rotate_runtime_token(
        &self,
        runtime: &str,
        token: PatInput,
        actor: &str,
    ) -> Result<RuntimeTokenStatus, AssignError> {
        let rt = self.existing_runtime(runtime).await?;
        if let Some(ga) = &rt.github_app {
            return Err(PatError::BadInput(format!(
                "runtime `{runtime}` mints its Git Runtime token from GitHub App `{}`; it takes no pasted token",
                ga.app
            ))
            .into());
        }
        let (kind, endpoints) = self.registry.provider_of(&rt).await?;
        let t = self
            .validate_runtime_token(kind, &endpoints, runtime, &rt.incarnation, token)
            .await?;
        if self
            .still_current(&rt.id, &rt.incarnation, None)
            .await?
            .is_none()
        {
            return Err(AssignError::RuntimeChanged {
                runtime: rt.id,
                revocation: None,
            });
        }
        self.save_runtime_token(&t, Expect::Any).await?;
        tracing::info!(target: "gitbroker::audit", action = "runtime_token.rotate", runtime = %runtime, actor = %actor, fingerprint = %fingerprint(&t.token), "Git Runtime token rotated");
        self.events
            .emit(self.runtime_token_event(
                crate::events::Action::RuntimeTokenRotated,
                Actor::parse(actor),
                &t,
            ))
            .await;
        Ok(t.info)
    }

    /// The Git Runtime token's status as of now (never its value).
    pub async fn runtime_token_status(
        &self,
        rt: &Runtime,
    ) -> Result<Option<RuntimeTokenStatus>, TokenError> {
        let now = self.clock.now();
        Ok(self
            .runtime_tokens
            .get(&rt.id, &rt.incarnation)
            .await?
            .map(|(t, _)| {
                let mut info = t.info.clone();
                // an installation token's expiry is routine: it is minted again
                if rt.github_app.is_none() {
                    info.status = t.effective_status(now, self.timing.expiring_soon);
                }
                info
            }))
    }

    /// The grant a runtime's current incarnation serves for `user`, if any
    /// (for inspection: admin tools and tests).
    pub async fn assigned_grant(
        &self,
        runtime: &str,
        user: &str,
    ) -> Result<Option<(Grant, u64)>, AssignError> {
        let Some(rt) = self.registry.runtime(runtime).await? else {
            return Ok(None);
        };
        let Some((a, _)) = self
            .grants
            .assignment(&rt.id, &rt.incarnation, user)
            .await?
        else {
            return Ok(None);
        };
        Ok(self
            .grants
            .get(user, &a.grant)
            .await?
            .filter(|(g, _)| g.assigned_to(&rt.id, &rt.incarnation)))
    }

    /// How many users have a token assigned to the runtime.
    pub async fn user_token_count(&self, rt: &Runtime) -> Result<usize, TokenError> {
        Ok(self
            .grants
            .assignments(&rt.id, &rt.incarnation)
            .await?
            .len())
    }

    /// The statuses of a runtime's user tokens, for admins (no secrets).
    pub async fn runtime_user_tokens(
        &self,
        rt: &Runtime,
    ) -> Result<Vec<(String, Option<TokenInfo>)>, AssignError> {
        let now = self.clock.now();
        let apps = self.registry.app_summaries().await?;
        let mut out = Vec::new();
        for (user, a) in self.grants.assignments(&rt.id, &rt.incarnation).await? {
            let info = match self.grants.get(&user, &a.grant).await {
                Ok(Some((g, _))) if g.assigned_to(&rt.id, &rt.incarnation) => {
                    let app = g
                        .source
                        .app()
                        .and_then(|id| apps.iter().find(|x| x.id == id));
                    Some(self.info(&g, app, &rt.id, now))
                }
                Ok(_) | Err(TokenError::Crypto(_)) => None,
                Err(e) => return Err(e.into()),
            };
            out.push((user, info));
        }
        Ok(out)
    }

    /// Changes a runtime. Its provider host cannot change while tokens are
    /// stored for it (they were issued by the old host), nor its account
    /// while user tokens are (they were given to it in that account).
    pub async fn update_runtime(
        &self,
        id: &str,
        mut input: RuntimeInput,
    ) -> Result<Runtime, AssignError> {
        let current = self.existing_runtime(id).await?;
        let (old_kind, old_endpoints) = self.registry.provider_of(&current).await?;
        let (new_kind, new_endpoints) = self.registry.check_runtime_input(&input).await?;
        // a new installation is checked as at registration
        if let Some(ga) = input.github_app.as_mut() {
            let inst = self
                .check_installation(ga, &input.repositories)
                .await
                .map_err(super::installation::app_error)?;
            ga.installation_id = Some(inst.id);
        }
        let user_tokens = self.user_token_count(&current).await?;
        if (old_kind, &old_endpoints.api) != (new_kind, &new_endpoints.api) {
            let has_runtime_token = self
                .runtime_tokens
                .get(&current.id, &current.incarnation)
                .await?
                .is_some();
            if has_runtime_token || user_tokens > 0 {
                return Err(AssignError::Conflict(format!(
                    "runtime `{id}` has tokens issued by its current provider host ({} user tokens{}); register a new runtime for the new host instead",
                    user_tokens,
                    if has_runtime_token {
                        " and its Git Runtime token"
                    } else {
                        ""
                    }
                )));
            }
        }
        if input.account != current.account && user_tokens > 0 {
            return Err(AssignError::Conflict(format!(
                "runtime `{id}` holds {user_tokens} user tokens given to it in account `{}`; moving it to `{}` would hand them to another account. Delete its user tokens first (DELETE /api/v1/admin/runtimes/{id}/user-tokens)",
                current.account, input.account
            )));
        }
        let (github_app, repositories) = (input.github_app.clone(), input.repositories.clone());
        let updated = self.registry.update_runtime(id, input).await?;
        self.forget_stale_installation_token(&current, github_app.as_ref(), &repositories)
            .await?;
        Ok(updated)
    }

    /// Changes an OAuth app. Its provider host cannot change while tokens
    /// it issued are stored.
    pub async fn update_app(
        &self,
        id: &str,
        input: OAuthAppInput,
    ) -> Result<OAuthApp, AssignError> {
        let update: AppUpdate = self.registry.prepare_app_update(id, input).await?;
        let old = (
            update.old.provider,
            update.old.endpoints().ok().map(|e| e.api),
        );
        let new = (
            update.new.provider,
            update.new.endpoints().ok().map(|e| e.api),
        );
        if old != new {
            let issued = self.grants_of_app(id).await?;
            if issued > 0 {
                return Err(AssignError::Conflict(format!(
                    "OAuth app `{id}` issued {issued} stored tokens at its current provider host; create a new OAuth app for the new host instead"
                )));
            }
        }
        // An OAuth app's tokens are not a GitHub App's (no narrowing, no
        // installations) and the other way round.
        if update.old.kind != update.new.kind {
            let issued = self.grants_of_app(id).await?;
            if issued > 0 {
                return Err(AssignError::Conflict(format!(
                    "OAuth app `{id}` issued {issued} stored tokens as kind `{}`; create a new OAuth app of kind `{}` instead",
                    update.old.kind.as_str(),
                    update.new.kind.as_str()
                )));
            }
        }
        Ok(self.registry.commit_app_update(update).await?)
    }

    /// How many stored grants an OAuth app issued.
    async fn grants_of_app(&self, app: &str) -> Result<usize, AssignError> {
        let mut seen = std::collections::HashSet::new();
        for rt in self.registry.runtimes().await? {
            for (user, a) in self.grants.assignments(&rt.id, &rt.incarnation).await? {
                if seen.contains(&(user.clone(), a.grant.clone())) {
                    continue;
                }
                if let Ok(Some((g, _))) = self.grants.get(&user, &a.grant).await
                    && g.source.app() == Some(app)
                {
                    seen.insert((user, a.grant));
                }
            }
        }
        Ok(seen.len())
    }

    /// Deletes a runtime, then its Git Runtime token and its users' tokens
    /// (revoking OAuth grants no other runtime uses). The runtime goes
    /// first, so no token can be added to it from then on.
    pub async fn delete_runtime(&self, id: &str, actor: &str) -> Result<usize, AssignError> {
        let rt = self.registry.delete_runtime(id).await?;
        let n = self.drop_user_tokens(&rt, actor).await?;
        self.runtime_tokens.delete(&rt.id).await?;
        tracing::info!(target: "gitbroker::audit", action = "runtime.delete", runtime = %id, actor = %actor, user_tokens = n, "runtime and its tokens deleted");
        self.events
            .emit(
                self.event(crate::events::Action::RuntimeDeleted, Actor::parse(actor))
                    .runtime(id)
                    .outcome(format!("{n} user tokens deleted")),
            )
            .await;
        Ok(n)
    }

    /// Removes every user token of a runtime (the runtime stays).
    pub async fn delete_user_tokens(&self, id: &str, actor: &str) -> Result<usize, AssignError> {
        let rt = self.existing_runtime(id).await?;
        let n = self.drop_user_tokens(&rt, actor).await?;
        tracing::info!(target: "gitbroker::audit", action = "runtime.user_tokens_delete", runtime = %id, actor = %actor, user_tokens = n, "runtime's user tokens deleted");
        self.events
            .emit(
                self.event(
                    crate::events::Action::RuntimeUserTokensDeleted,
                    Actor::parse(actor),
                )
                .runtime(id)
                .outcome(format!("{n} user tokens deleted")),
            )
            .await;
        Ok(n)
    }

    async fn drop_user_tokens(&self, rt: &Runtime, actor: &str) -> Result<usize, AssignError> {
        let assignments = self.grants.assignments(&rt.id, &rt.incarnation).await?;
        let n = assignments.len();
        for (user, a) in assignments {
            match self.detach(&user, &a.grant, &rt.id, &rt.incarnation).await {
                Ok(released) => {
                    tracing::info!(target: "gitbroker::audit", action = "user_token.delete", runtime = %rt.id, user = %user, outcome = ?released, "user token deleted with its runtime");
                    self.events
                        .emit(
                            self.event(
                                crate::events::Action::UserTokenDeleted,
                                Actor::parse(actor),
                            )
                            .runtime(&rt.id)
                            .user(&user)
                            .grant(&a.grant)
                            .outcome(released.outcome()),
                        )
                        .await;
                }
                Err(e) => {
                    // the grant loses this runtime at its next check
                    tracing::warn!(runtime = %rt.id, user = %user, error = %e, "could not release a grant; its next check will");
                }
            }
        }
        self.grants
            .drop_assignments(&rt.id, &rt.incarnation)
            .await?;
        Ok(n)
    }

    /// For the file's runtimes at start: refuses to move one that holds
    /// user tokens to another account. `Err((index, message))`.
    pub async fn check_file_runtimes(
        &self,
        runtimes: &[crate::config::RuntimeSettings],
    ) -> Result<(), (usize, String)> {
        for (i, r) in runtimes.iter().enumerate() {
            let Ok(Some(old)) = self.registry.runtime(&r.id).await else {
                continue;
            };
            if old.account == r.account || old.incarnation.is_empty() {
                continue;
            }
            let n = self.user_token_count(&old).await.unwrap_or(0);
            if n > 0 {
                return Err((
                    i,
                    format!(
                        "runtime `{}` holds {n} user tokens given to it in account `{}`; moving it to `{}` would hand them to another account. Keep its account, or delete its user tokens first (DELETE /api/v1/admin/runtimes/{}/user-tokens)",
                        r.id, old.account, r.account, r.id
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Why a revocation attempt did not finish.
pub(super) enum RevokeAttempt {
    /// Worth trying again later.
    Retry(String),
    /// Cannot succeed.
    Give(String),
}
