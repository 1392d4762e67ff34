//! Assigning tokens that people paste: a Git user token for one or several
//! of the user's runtimes (validated once at the provider, stored per
//! runtime), and the Git Runtime token that registering a runtime requires.

use super::runtime::{RuntimeTokenRepo, RuntimeTokenStatus};
use super::{TokenError, TokenRepo, TokenSource, UserToken};
use crate::auth::SessionUser;
use crate::clock::Clock;
use crate::providers::{self, PatError, PatInput, ProviderKind, TokenPurpose, TokenReport};
use crate::registry::{Registry, RegistryError, Runtime, RuntimeInput};
use crate::store::Expect;
use secrecy::SecretString;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum AssignError {
    #[error("runtime `{0}` does not exist or is not in one of your accounts")]
    RuntimeNotFound(String),
    #[error("{0}")]
    DifferentHost(String),
    #[error("{0}")]
    HostChange(String),
    #[error(transparent)]
    Pat(#[from] PatError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Token(#[from] TokenError),
}

/// The result of assigning a pasted user token.
#[derive(Debug)]
pub struct Assigned {
    pub runtimes: Vec<String>,
    pub provider: &'static str,
    pub report: TokenReport,
}

pub struct TokenService {
    registry: Arc<Registry>,
    tokens: Arc<TokenRepo>,
    runtime_tokens: Arc<RuntimeTokenRepo>,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
}

impl TokenService {
    pub fn new(
        registry: Arc<Registry>,
        tokens: Arc<TokenRepo>,
        runtime_tokens: Arc<RuntimeTokenRepo>,
        http: reqwest::Client,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            registry,
            tokens,
            runtime_tokens,
            http,
            clock,
        }
    }

    /// A runtime of one of the user's accounts; anything else looks absent.
    pub async fn user_runtime(&self, user: &SessionUser, id: &str) -> Result<Runtime, AssignError> {
        self.registry
            .runtime_for_groups(&user.groups, id)
            .await?
            .ok_or_else(|| AssignError::RuntimeNotFound(id.to_owned()))
    }

    /// Validates a pasted token once and assigns it to `runtime` and each of
    /// `also` (runtimes of the user on the same provider host), individually.
    pub async fn assign_pat(
        &self,
        user: &SessionUser,
        runtime: &str,
        also: &[String],
        input: PatInput,
    ) -> Result<Assigned, AssignError> {
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
            .validate_pat(&self.http, &endpoints, &input, TokenPurpose::User, now)
            .await?;
        for rt in &targets {
            let replaced = self
                .tokens
                .get(&rt.id, &user.sub)
                .await
                .ok()
                .flatten()
                .map(|(t, _)| t);
            let token = UserToken {
                runtime: rt.id.clone(),
                user: user.sub.clone(),
                access_token: input.token.clone(),
                refresh_token: None,
                git_username: report.git_username.clone(),
                provider: kind,
                provider_login: report.login.clone(),
                scopes: report.scopes.clone(),
                issued_at: now,
                expires_at: report.expires_at,
                source: TokenSource::Pat,
            };
            self.tokens.put(&token, Expect::Any).await?;
            tracing::info!(target: "gitbroker::audit", action = "user_token.assign", runtime = %rt.id, user = %user.sub, method = "pat", "user token assigned");
            // an OAuth token it replaces is revoked at its provider
            if let Some(old) = replaced
                && matches!(old.source, TokenSource::OAuth { .. })
            {
                let (registry, http) = (self.registry.clone(), self.http.clone());
                tokio::spawn(async move {
                    if let Err(e) = crate::oauth::revoke_at_provider(&registry, &http, &old).await {
                        tracing::warn!(runtime = %old.runtime, error = %e, "could not revoke a replaced OAuth token");
                    }
                });
            }
        }
        Ok(Assigned {
            runtimes: targets.into_iter().map(|t| t.id).collect(),
            provider: provider.display_name(),
            report,
        })
    }

    async fn validate_runtime_token(
        &self,
        kind: ProviderKind,
        endpoints: &providers::Endpoints,
        runtime: &str,
        input: &PatInput,
    ) -> Result<RuntimeTokenStatus, AssignError> {
        let now = self.clock.now();
        let report = providers::provider(kind)
            .validate_pat(&self.http, endpoints, input, TokenPurpose::Runtime, now)
            .await?;
        Ok(RuntimeTokenStatus {
            runtime: runtime.to_owned(),
            provider: kind,
            provider_login: report.login,
            git_username: report.git_username,
            kind: report.kind,
            scopes: report.scopes,
            expires_at: report.expires_at,
            set_at: now,
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
        let status = self
            .validate_runtime_token(kind, &endpoints, &input.id, &token)
            .await?;
        let (rt, credential) = self.registry.create_runtime(input).await?;
        if let Err(e) = self.runtime_tokens.put(&status, &token.token).await {
            // no runtime without its token: undo the registration
            let _ = self.registry.delete_runtime(&rt.id).await;
            return Err(e.into());
        }
        tracing::info!(target: "gitbroker::audit", action = "runtime_token.set", runtime = %rt.id, actor = %actor, "runtime registered with its Git Runtime token");
        Ok((rt, credential, status))
    }

    /// Replaces a runtime's Git Runtime token after validating the new one.
    pub async fn rotate_runtime_token(
        &self,
        runtime: &str,
        token: PatInput,
        actor: &str,
    ) -> Result<RuntimeTokenStatus, AssignError> {
        let rt = self
            .registry
            .runtime(runtime)
            .await?
            .ok_or_else(|| RegistryError::NotFound(format!("runtime `{runtime}`")))?;
        let (kind, endpoints) = self.registry.provider_of(&rt).await?;
        let status = self
            .validate_runtime_token(kind, &endpoints, runtime, &token)
            .await?;
        self.runtime_tokens.put(&status, &token.token).await?;
        tracing::info!(target: "gitbroker::audit", action = "runtime_token.rotate", runtime = %runtime, actor = %actor, "Git Runtime token rotated");
        Ok(status)
    }

    /// Changes a runtime. Its provider host cannot change while tokens are
    /// stored for it: they were issued by the old host.
    pub async fn update_runtime(
        &self,
        id: &str,
        input: RuntimeInput,
    ) -> Result<Runtime, AssignError> {
        let current = self
            .registry
            .runtime(id)
            .await?
            .ok_or_else(|| RegistryError::NotFound(format!("runtime `{id}`")))?;
        let (old_kind, old_endpoints) = self.registry.provider_of(&current).await?;
        let (new_kind, new_endpoints) = self.registry.check_runtime_input(&input).await?;
        if (old_kind, &old_endpoints.api) != (new_kind, &new_endpoints.api) {
            let has_runtime_token = self.runtime_tokens.status(id).await?.is_some();
            let user_tokens = self.tokens.list(id).await?.len();
            if has_runtime_token || user_tokens > 0 {
                return Err(AssignError::HostChange(format!(
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
        Ok(self.registry.update_runtime(id, input).await?)
    }

    /// Deletes a runtime, its Git Runtime token and its users' tokens, and
    /// revokes the OAuth ones at their provider (in the background: the
    /// runtime is gone even when a provider is down).
    pub async fn delete_runtime(&self, id: &str, actor: &str) -> Result<(), AssignError> {
        let tokens = self.tokens.list(id).await?;
        self.registry.delete_runtime(id).await?;
        tracing::info!(target: "gitbroker::audit", action = "runtime.delete", runtime = %id, actor = %actor, user_tokens = tokens.len(), "runtime and its tokens deleted");
        let oauth: Vec<UserToken> = tokens
            .into_iter()
            .filter(|t| matches!(t.source, TokenSource::OAuth { .. }))
            .collect();
        if !oauth.is_empty() {
            let (registry, http) = (self.registry.clone(), self.http.clone());
            tokio::spawn(async move {
                for t in oauth {
                    if let Err(e) = crate::oauth::revoke_at_provider(&registry, &http, &t).await {
                        tracing::warn!(runtime = %t.runtime, error = %e, "could not revoke a deleted runtime's OAuth token");
                    }
                }
            });
        }
        Ok(())
    }
}
