//! Git Runtime tokens minted from a GitHub App installation.
//!
//! Nothing long-lived is stored for such a runtime: its token is an
//! installation token (1 h) minted on demand with a JWT signed by the App's
//! key, sealed in the runtime-token collection like any runtime token,
//! served until [`MARGIN`] before its `expires_at`, then minted again. One
//! mint per runtime at a time: callers in this process share one run (in a
//! task of its own), replicas take the runtime token's lease (the same one
//! the background check takes) and re-read after getting it; a replica
//! waiting for the lease polls the record until the new token is there.
//!
//! A temporary failure (network, 5xx, rate limit) changes nothing stored:
//! a still-valid token is served, else 503. A permanent one (installation
//! gone or suspended, JWT refused, narrowing refused) is recorded as the
//! token's status (`invalid`, with GitHub's reason), which the background
//! check clears once the installation works again.

use super::TokenError;
use super::grant::{State, Status, fingerprint};
use super::lifecycle::{AssignError, Lifecycle};
use super::runtime::{RuntimeToken, RuntimeTokenStatus};
use super::serve::{ServeError, Served};
use crate::config::github_apps::RuntimeGithubApp;
use crate::events::Actor;
use crate::providers::github_app::{self, AppError, GithubApp, Installation};
use crate::providers::{GitAuth, PatError};
use crate::registry::{Runtime, RuntimeInput};
use crate::store::Expect;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use std::time::Duration;

/// A minted token is re-minted this long before it expires, so a runtime
/// never gets one about to die.
pub const MARGIN: chrono::Duration = chrono::Duration::minutes(5);
/// How often a replica waiting for another's mint looks at the record.
const POLL: Duration = Duration::from_millis(50);
const KIND: &str = "GitHub App installation token";

/// Why no new installation token could be had.
#[derive(Debug, Clone)]
pub enum MintFailure {
    Temporary {
        detail: String,
        retry_after: Duration,
    },
    Permanent(String),
}

impl From<AppError> for MintFailure {
    fn from(e: AppError) -> Self {
        match e {
            AppError::Permanent(m) => Self::Permanent(m),
            AppError::Temporary {
                detail,
                retry_after,
            } => Self::Temporary {
                detail,
                retry_after,
            },
        }
    }
}

fn store_failure(e: impl std::fmt::Display) -> MintFailure {
    MintFailure::Temporary {
        detail: e.to_string(),
        retry_after: Duration::from_secs(5),
    }
}

/// Whether a stored token may still be handed out without minting.
fn fresh(t: &RuntimeToken, now: DateTime<Utc>) -> bool {
    !t.token.expose_secret().is_empty() && t.info.expires_at.is_some_and(|e| e - now > MARGIN)
}

pub(super) fn app_error(e: AppError) -> AssignError {
    match e {
        AppError::Permanent(reason) => PatError::WrongKind { reason }.into(),
        AppError::Temporary { detail, .. } => PatError::Unavailable {
            provider: "GitHub",
            detail,
        }
        .into(),
    }
}

fn permissions_as_scopes(p: &std::collections::BTreeMap<String, String>) -> Vec<String> {
    p.iter().map(|(k, v)| format!("{k}:{v}")).collect()
}

impl Lifecycle {
    fn github_app_of(&self, ga: &RuntimeGithubApp) -> Result<GithubApp, AppError> {
        self.registry.github_app(&ga.app).cloned().ok_or_else(|| {
            AppError::Permanent(format!(
                "GitHub App `{}` is not configured (github_apps)",
                ga.app
            ))
        })
    }

    async fn find_installation(
        &self,
        app: &GithubApp,
        ga: &RuntimeGithubApp,
    ) -> Result<Installation, AppError> {
        let http = self
            .http
            .for_provider(crate::providers::ProviderKind::Github);
        let now = self.clock.now();
        match (ga.installation_id, &ga.owner) {
            (Some(id), _) => github_app::installation(&http, app, id, now).await,
            (None, Some(owner)) => github_app::installation_of(&http, app, owner, now).await,
            (None, None) => Err(AppError::Permanent(
                "give installation_id or owner (the account the App is installed on)".into(),
            )),
        }
    }

    /// What registration checks (file at start, admin API): the
    /// installation exists, is not suspended, is on the account of every
    /// listed repository and grants what a Git Runtime token needs.
    pub async fn check_installation(
        &self,
        ga: &RuntimeGithubApp,
        repositories: &[String],
    ) -> Result<Installation, AppError> {
        let app = self.github_app_of(ga)?;
        let inst = self.find_installation(&app, ga).await?;
        let login = &inst.account.login;
        if let Some(owner) = &ga.owner
            && !owner.eq_ignore_ascii_case(login)
        {
            return Err(AppError::Permanent(format!(
                "installation {} of GitHub App `{}` is on `{login}`, not on `{owner}`",
                inst.id, app.name
            )));
        }
        if inst.suspended_at.is_some() {
            return Err(AppError::Permanent(format!(
                "installation {} of GitHub App `{}` on `{login}` is suspended; unsuspend it in the account's settings (Applications > Installed GitHub Apps)",
                inst.id, app.name
            )));
        }
        if let Some(r) = repositories.iter().find(|r| {
            r.split_once('/')
                .is_none_or(|(o, _)| !o.eq_ignore_ascii_case(login))
        }) {
            return Err(AppError::Permanent(format!(
                "repositories: `{r}` is not under `{login}`, the account installation {} is on",
                inst.id
            )));
        }
        let missing = github_app::missing_runtime_permissions(&inst.permissions);
        if !missing.is_empty() {
            return Err(AppError::Permanent(format!(
                "installation {} of GitHub App `{}` on `{login}` lacks permissions a Git Runtime token needs: {}. Add them in the App's settings (Permissions & events), then accept the new permissions on the installation",
                inst.id,
                app.name,
                missing.join(", ")
            )));
        }
        Ok(inst)
    }

    /// Registers a runtime whose Git Runtime token comes from a GitHub App
    /// installation: checks the installation, creates the runtime (with
    /// the installation id found), and mints its first token; if that
    /// fails, the runtime is removed again and nothing is left behind.
    pub async fn register_app_runtime(
        self: &Arc<Self>,
        mut input: RuntimeInput,
        actor: &str,
    ) -> Result<(Runtime, SecretString, RuntimeTokenStatus), AssignError> {
        self.registry.check_runtime_input(&input).await?;
        let Some(ga) = input.github_app.as_mut() else {
            return Err(PatError::BadInput("github_app is required".into()).into());
        };
        let inst = self
            .check_installation(ga, &input.repositories)
            .await
            .map_err(app_error)?;
        ga.installation_id = Some(inst.id);
        let (rt, credential) = self.registry.create_runtime(input).await?;
        let t = match self.mint_shared(&rt).await {
            Ok(t) => t,
            Err(e) => {
                let _ = self.registry.delete_runtime(&rt.id).await;
                let _ = self.runtime_tokens.delete(&rt.id).await;
                return Err(match e {
                    MintFailure::Permanent(m) => app_error(AppError::Permanent(m)),
                    MintFailure::Temporary {
                        detail,
                        retry_after,
                    } => app_error(AppError::Temporary {
                        detail,
                        retry_after,
                    }),
                });
            }
        };
        tracing::info!(target: "gitbroker::audit", action = "runtime_token.set", runtime = %rt.id, actor = %actor, installation = inst.id, "runtime registered with a GitHub App installation");
        self.events
            .emit(
                self.event(crate::events::Action::RuntimeCreated, Actor::parse(actor))
                    .runtime(&rt.id)
                    .provider(t.info.provider.as_str()),
            )
            .await;
        Ok((rt, credential, t.info))
    }

    /// A runtime's installation, repositories or permissions changed (file
    /// at start, admin update): its cached token was minted for the old
    /// ones and is dropped, so the next fetch mints for the new ones.
    pub(super) async fn forget_stale_installation_token(
        &self,
        old: &Runtime,
        github_app: Option<&RuntimeGithubApp>,
        repositories: &[String],
    ) -> Result<(), TokenError> {
        if old.github_app.is_none() {
            return Ok(());
        }
        let same_app = match (old.github_app.as_ref(), github_app) {
            (Some(a), Some(b)) => {
                a.app == b.app
                    && a.permissions == b.permissions
                    && (a.installation_id == b.installation_id || b.installation_id.is_none())
                    && (a.owner == b.owner || b.owner.is_none())
            }
            _ => false,
        };
        if !same_app || old.repositories != repositories {
            tracing::info!(runtime = %old.id, "GitHub App settings changed; the cached installation token is dropped");
            self.runtime_tokens.delete(&old.id).await?;
        }
        Ok(())
    }

    /// Before the file's runtimes are written: drops cached installation
    /// tokens of runtimes whose GitHub App settings changed.
    pub async fn forget_stale_file_installation_tokens(
        &self,
        runtimes: &[crate::config::RuntimeSettings],
    ) -> Result<(), TokenError> {
        for r in runtimes {
            let old = match self.registry.runtime(&r.id).await {
                Ok(Some(old)) => old,
                Ok(None) => continue,
                Err(e) => {
                    return Err(crate::store::StoreError::Unavailable(e.to_string()).into());
                }
            };
            self.forget_stale_installation_token(&old, r.github_app.as_ref(), &r.repositories)
                .await?;
        }
        Ok(())
    }

    /// For the file's GitHub App runtimes at start: a refusal (no such
    /// installation, missing permissions) stops the start naming the
    /// runtime; GitHub unreachable only logs, and the first fetch mints.
    pub async fn check_file_app_runtimes(
        &self,
        runtimes: &[crate::config::RuntimeSettings],
    ) -> Result<(), (usize, String)> {
        for (i, r) in runtimes.iter().enumerate() {
            let Some(ga) = &r.github_app else { continue };
            match self.check_installation(ga, &r.repositories).await {
                Ok(inst) => {
                    tracing::info!(runtime = %r.id, installation = inst.id, account = %inst.account.login, "GitHub App installation checked");
                }
                Err(AppError::Permanent(m)) => return Err((i, m)),
                Err(AppError::Temporary { detail, .. }) => {
                    tracing::warn!(runtime = %r.id, %detail, "could not check the GitHub App installation now; its Git Runtime token is minted at the first fetch");
                }
            }
        }
        Ok(())
    }

    /// The Git Runtime token of a GitHub App runtime: the cached
    /// installation token while fresh, else a new one.
    pub(super) async fn serve_installation_token(
        self: &Arc<Self>,
        caller: &Runtime,
    ) -> Result<Served, ServeError> {
        let cached = match self
            .runtime_tokens
            .get(&caller.id, &caller.incarnation)
            .await
        {
            Ok(found) => found.map(|(t, _)| t),
            Err(TokenError::Crypto(_)) => return Err(ServeError::Unreadable),
            Err(e) => return Err(e.into()),
        };
        let now = self.clock.now();
        if let Some(t) = &cached {
            if !t.info.status.state.servable() {
                return Err(ServeError::Invalid(
                    t.info.status.reason.clone().unwrap_or_default(),
                ));
            }
            if fresh(t, now) {
                return Ok(self.hand_out(caller, t.clone()).await);
            }
        }
        match self.mint_shared(caller).await {
            Ok(t) => Ok(self.hand_out(caller, t).await),
            Err(MintFailure::Temporary {
                detail,
                retry_after,
            }) => match cached {
                Some(t)
                    if !t.token.expose_secret().is_empty()
                        && t.info.expires_at.is_some_and(|e| e > self.clock.now()) =>
                {
                    tracing::warn!(runtime = %caller.id, %detail, "minting an installation token failed for now; serving the still-valid one");
                    Ok(self.hand_out(caller, t).await)
                }
                _ => Err(ServeError::Unavailable {
                    detail: format!(
                        "GitHub could not mint the Git Runtime token of runtime `{}` right now ({detail}); retry shortly",
                        caller.id
                    ),
                    retry_after,
                }),
            },
            Err(MintFailure::Permanent(reason)) => Err(ServeError::Invalid(reason)),
        }
    }

    async fn hand_out(&self, caller: &Runtime, t: RuntimeToken) -> Served {
        tracing::info!(target: "gitbroker::audit", action = "runtime_token.read", runtime = %caller.id, actor = %format!("runtime:{}", caller.id), fingerprint = %fingerprint(&t.token), "runtime token served to its runtime");
        self.events
            .emit(self.runtime_token_event(
                crate::events::Action::RuntimeTokenRead,
                Actor::runtime(&caller.id),
                &t,
            ))
            .await;
        Served {
            auth: t.git_auth(),
            git_host: caller.git_host.clone(),
            username: t.info.git_username,
            provider: t.info.provider,
            scopes: t.info.scopes,
            expires_at: t.info.expires_at,
            token: t.token,
        }
    }

    /// One mint per runtime for every caller in this process, in a task of
    /// its own (a client going away cannot cancel it).
    pub(super) async fn mint_shared(
        self: &Arc<Self>,
        rt: &Runtime,
    ) -> Result<RuntimeToken, MintFailure> {
        // keyed by the runtime incarnation, never by a token
        let key = format!("{}\u{1f}{}", rt.id, rt.incarnation);
        let this = self.clone();
        let rt = rt.clone();
        self.mint_flights
            .run(&key, move || async move { this.mint_with_lease(&rt).await })
            .await
            .unwrap_or_else(|| {
                Err(MintFailure::Temporary {
                    detail: "the mint stopped unexpectedly".into(),
                    retry_after: Duration::from_secs(1),
                })
            })
    }

    /// Takes the runtime token's lease (waiting while another replica holds
    /// it, reading what it stored), then mints if still needed.
    async fn mint_with_lease(&self, rt: &Runtime) -> Result<RuntimeToken, MintFailure> {
        let deadline = tokio::time::Instant::now() + self.lease_ttl;
        let lease_name = format!("runtime-token:{}", rt.id);
        let mut first = true;
        loop {
            // another replica may have minted (or failed for good) meanwhile
            if !first {
                match self.runtime_tokens.get(&rt.id, &rt.incarnation).await {
                    Ok(Some((t, _))) if fresh(&t, self.clock.now()) => return Ok(t),
                    Ok(Some((t, _))) if !t.info.status.state.servable() => {
                        return Err(MintFailure::Permanent(
                            t.info.status.reason.unwrap_or_default(),
                        ));
                    }
                    Ok(_) => {}
                    Err(e) => return Err(store_failure(e)),
                }
            }
            first = false;
            match self.leases.try_acquire(&lease_name, self.lease_ttl).await {
                Ok(Some(lease)) => {
                    let result = self.mint_locked(rt).await;
                    self.leases.release(lease).await;
                    return result;
                }
                Ok(None) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(POLL).await;
                }
                Ok(None) => {
                    return Err(MintFailure::Temporary {
                        detail: "another replica is still minting this runtime's token".into(),
                        retry_after: Duration::from_secs(1),
                    });
                }
                Err(e) => return Err(store_failure(e)),
            }
        }
    }

    /// Mints and stores a token for a runtime whose lease the caller holds.
    async fn mint_locked(&self, rt: &Runtime) -> Result<RuntimeToken, MintFailure> {
        let current = self
            .runtime_tokens
            .get(&rt.id, &rt.incarnation)
            .await
            .map_err(store_failure)?;
        let now = self.clock.now();
        if let Some((t, _)) = &current
            && fresh(t, now)
        {
            return Ok(t.clone());
        }
        let Some(ga) = &rt.github_app else {
            return Err(MintFailure::Permanent(format!(
                "runtime `{}` has no GitHub App installation",
                rt.id
            )));
        };
        let outcome = self.mint_at_github(rt, ga, now).await;
        self.metrics.refresh(
            "github_app",
            match &outcome {
                Ok(_) => "success",
                Err(AppError::Permanent(_)) => "refused",
                Err(AppError::Temporary { .. }) => "failed_temporarily",
            },
        );
        let (minted, login, api) = match outcome {
            Ok(found) => found,
            Err(AppError::Temporary {
                detail,
                retry_after,
            }) => {
                tracing::warn!(runtime = %rt.id, %detail, "minting an installation token failed for now");
                return Err(MintFailure::Temporary {
                    detail,
                    retry_after,
                });
            }
            Err(AppError::Permanent(reason)) => {
                self.record_refusal(rt, current.map(|(t, _)| t), &reason)
                    .await;
                return Err(MintFailure::Permanent(reason));
            }
        };
        let from = current.as_ref().map(|(t, _)| t.info.status.state);
        let recovered = from.is_some_and(|s| s != State::Valid);
        let kind = match rt.provider {
            Some(k) => k,
            None => self
                .registry
                .provider_of(rt)
                .await
                .map_or(crate::providers::ProviderKind::Github, |(k, _)| k),
        };
        let t = RuntimeToken {
            incarnation: rt.incarnation.clone(),
            rotation: Default::default(),
            api,
            info: RuntimeTokenStatus {
                runtime: rt.id.clone(),
                provider: kind,
                provider_login: login,
                git_username: github_app::GIT_USERNAME.to_owned(),
                kind: KIND.to_owned(),
                scopes: permissions_as_scopes(&minted.permissions),
                expires_at: Some(minted.expires_at),
                set_at: now,
                rotated_at: None,
                rotation_error: None,
                status: Status::new(
                    State::Valid,
                    now,
                    recovered.then(|| "recovered: GitHub minted a new token".to_owned()),
                ),
            },
            token: minted.token,
            pat_username: None,
            pat_email: None,
            next_check_at: self.next_check(now),
            git_auth: Some(GitAuth::basic(github_app::GIT_USERNAME)),
        };
        // under the lease nobody else writes it; a failed write only means
        // the next fetch mints again
        if let Err(e) = self.save_runtime_token(&t, Expect::Any).await {
            tracing::warn!(runtime = %rt.id, error = %e, "a minted installation token could not be stored; served uncached");
        }
        tracing::info!(target: "gitbroker::audit", action = "runtime_token.mint", runtime = %rt.id, fingerprint = %fingerprint(&t.token), expires_at = %minted.expires_at, repositories = ?minted.repositories, "installation token minted");
        if let Some(from) = from
            && from != State::Valid
        {
            self.events
                .emit(
                    self.runtime_token_event(
                        crate::events::Action::RuntimeTokenStatusChanged,
                        Actor::system(),
                        &t,
                    )
                    .status(
                        from.as_str(),
                        "valid",
                        t.info.status.reason.as_deref(),
                    ),
                )
                .await;
        }
        Ok(t)
    }

    /// The call to GitHub: finds the installation if only its owner is
    /// known, then mints, narrowed to the runtime's repositories and
    /// permissions. Returns the token, the account login and the API URL.
    async fn mint_at_github(
        &self,
        rt: &Runtime,
        ga: &RuntimeGithubApp,
        now: DateTime<Utc>,
    ) -> Result<(github_app::Minted, String, String), AppError> {
        let app = self.github_app_of(ga)?;
        let http = self
            .http
            .for_provider(crate::providers::ProviderKind::Github);
        let (id, login) = match ga.installation_id {
            Some(id) => (id, ga.owner.clone()),
            None => {
                let inst = self.find_installation(&app, ga).await?;
                (inst.id, Some(inst.account.login))
            }
        };
        let minted =
            github_app::mint(&http, &app, id, &rt.repositories, &ga.permissions, now).await?;
        let login = login
            .or_else(|| {
                minted
                    .repositories
                    .first()
                    .and_then(|r| r.split_once('/').map(|(o, _)| o.to_owned()))
            })
            .unwrap_or_else(|| format!("installation {id}"));
        Ok((minted, login, app.api.to_string()))
    }

    /// Records GitHub's refusal as the runtime token's status: the cached
    /// token (if any) stays sealed but is no longer served.
    async fn record_refusal(&self, rt: &Runtime, current: Option<RuntimeToken>, reason: &str) {
        let now = self.clock.now();
        let from = current.as_ref().map(|t| t.info.status.state);
        let mut t = current.unwrap_or_else(|| RuntimeToken {
            incarnation: rt.incarnation.clone(),
            rotation: Default::default(),
            api: String::new(),
            info: RuntimeTokenStatus {
                runtime: rt.id.clone(),
                provider: rt
                    .provider
                    .unwrap_or(crate::providers::ProviderKind::Github),
                provider_login: rt
                    .github_app
                    .as_ref()
                    .and_then(|g| g.owner.clone())
                    .unwrap_or_default(),
                git_username: github_app::GIT_USERNAME.to_owned(),
                kind: KIND.to_owned(),
                scopes: Vec::new(),
                expires_at: None,
                set_at: now,
                rotated_at: None,
                rotation_error: None,
                status: Status::new(State::Unknown, now, None),
            },
            // nothing to serve: a placeholder that only carries the status
            token: SecretString::from(String::new()),
            pat_username: None,
            pat_email: None,
            next_check_at: self.next_check(now),
            git_auth: Some(GitAuth::basic(github_app::GIT_USERNAME)),
        });
        t.info.status.checked_at = Some(now);
        t.info
            .status
            .set(State::Invalid, now, Some(reason.to_owned()));
        t.next_check_at = self.next_check(now);
        if let Err(e) = self.save_runtime_token(&t, Expect::Any).await {
            tracing::warn!(runtime = %rt.id, error = %e, "could not record GitHub's refusal");
            return;
        }
        tracing::warn!(target: "gitbroker::audit", action = "runtime_token.status", runtime = %rt.id, from = from.map_or("none", |s| s.as_str()), to = "invalid", reason = %reason, "GitHub refused to mint the Git Runtime token");
        if from != Some(State::Invalid) {
            self.events
                .emit(
                    self.runtime_token_event(
                        crate::events::Action::RuntimeTokenStatusChanged,
                        Actor::system(),
                        &t,
                    )
                    .status(
                        from.map_or("unknown", |s| s.as_str()),
                        "invalid",
                        Some(reason),
                    ),
                )
                .await;
        }
    }

    /// The background check's verdict on a GitHub App runtime: the
    /// installation as GitHub describes it now (never `/user`, which an
    /// installation token may not call).
    pub(super) async fn installation_verdict(&self, rt: &Runtime) -> super::check::Verdict {
        use super::check::Verdict;
        let Some(ga) = &rt.github_app else {
            return Verdict::Unknown("not a GitHub App runtime".into());
        };
        match self.check_installation(ga, &rt.repositories).await {
            // the scopes stay those of the minted token
            Ok(_) => Verdict::Valid {
                scopes: None,
                expires_at: None,
            },
            Err(AppError::Permanent(m)) => Verdict::State(State::Invalid, m),
            Err(AppError::Temporary { detail, .. }) => Verdict::Unknown(detail),
        }
    }
}
