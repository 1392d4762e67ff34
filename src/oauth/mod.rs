//! The Git OAuth2 authorization code flow that assigns a Git user token to
//! a runtime: start (flow record with PKCE verifier, bound to the browser
//! and the session) → provider → callback checks in the order of the
//! security checklist §3 → code exchange → scope check → the token
//! lifecycle stores it for the runtime (incarnation) the flow started for.

use crate::auth::Session;
use crate::clock::Clock;
use crate::crypto;
use crate::metrics::Metrics;
use crate::providers::token_endpoint::{AppClient, AppCredentials, IssuedTokens, ProviderHttp};
use crate::providers::{self, ProviderClient, ProviderKind};
use crate::registry::{OAuthApp, Registry, RegistryError};
use crate::store::{EphemeralKey, Store, StoreError};
use crate::tokens::{AssignError, Lifecycle, OAuthTokens, TokenError};
use chrono::{DateTime, Utc};
use oauth2::basic::BasicTokenType;
use oauth2::{
    AuthorizationCode, CsrfToken, PkceCodeChallenge, PkceCodeVerifier, RequestTokenError, Scope,
    TokenResponse,
};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use url::Url;

const NS: &str = "flow";

/// Why a flow could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("the callback has no state parameter")]
    MissingState,
    #[error("this authorization request is unknown, expired or already used; start again")]
    UnknownState,
    #[error("this authorization was started in another browser or by another user")]
    Forbidden,
    #[error("the callback does not belong to this authorization's OAuth app")]
    WrongApp,
    #[error("the callback's issuer does not match the OAuth app's provider")]
    WrongIssuer,
    #[error("runtime not found")]
    RuntimeNotFound,
    #[error("runtime `{0}` has no OAuth app configured; add a personal access token instead")]
    NoOAuthApp(String),
    /// The flow reached the provider and came back bound to the right user;
    /// the outcome is shown on the page.
    #[error("{failure}")]
    Outcome {
        runtime: String,
        return_to: String,
        failure: Failure,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("OAuth app misconfigured: {0}")]
    AppConfig(String),
}

impl FlowError {
    /// A fixed name for the metrics' `reason` label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingState => "missing_state",
            Self::UnknownState => "unknown_state",
            Self::Forbidden => "binding_mismatch",
            Self::WrongApp => "wrong_app",
            Self::WrongIssuer => "wrong_issuer",
            Self::RuntimeNotFound => "runtime_not_found",
            Self::NoOAuthApp(_) => "no_oauth_app",
            Self::Outcome { failure, .. } => match failure {
                Failure::Denied { .. } => "denied",
                Failure::ProviderUnavailable { .. } => "provider_unavailable",
                Failure::ProviderRejected { .. } => "provider_rejected",
                Failure::MissingScopes { .. } => "missing_scopes",
                Failure::RuntimeChanged { .. } => "runtime_changed",
            },
            Self::Store(_) => "store_error",
            Self::Registry(_) => "registry_error",
            Self::Token(_) => "token_error",
            Self::AppConfig(_) => "app_misconfigured",
        }
    }
}

/// A failed outcome after the callback was bound to the right user.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("Authorization was denied at {provider}{}", .description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Denied {
        provider: &'static str,
        description: Option<String>,
    },
    #[error(
        "{provider} could not be reached or failed ({detail}). Nothing was changed; try again in a moment."
    )]
    ProviderUnavailable {
        provider: &'static str,
        detail: String,
    },
    #[error("{provider} refused the authorization ({code}). Nothing was changed; start again.")]
    ProviderRejected {
        provider: &'static str,
        code: String,
    },
    #[error("The token {provider} granted lacks required scopes: {}. Nothing was stored; ask your admin to check the OAuth app, then authorize again.", .missing.join(", "))]
    MissingScopes {
        provider: &'static str,
        missing: Vec<String>,
    },
    #[error(
        "The runtime was deleted or moved to another account while you were authorizing. Nothing was stored. {revocation}"
    )]
    RuntimeChanged { revocation: String },
}

/// The server-side record of a flow in progress.
#[derive(Serialize, Deserialize)]
struct FlowRecord {
    user_sub: String,
    session_key: String,
    runtime: String,
    /// The runtime's incarnation at the start: the token is stored only
    /// for that same runtime, never for one registered later under its id.
    /// (Flows started before incarnations existed have none and are refused
    /// at the callback like a runtime that changed.)
    #[serde(default)]
    runtime_incarnation: String,
    app: String,
    pkce_verifier: String,
    binding_sha256: String,
    return_to: String,
    created_at: DateTime<Utc>,
}

/// What the web layer needs to send the browser to the provider.
pub struct StartedFlow {
    pub authorize_url: Url,
    pub cookie_name: String,
    /// Secret for the flow cookie that binds the flow to this browser.
    pub binding: SecretString,
    pub ttl: Duration,
}

/// Query parameters of the provider's redirect back.
#[derive(Default, Deserialize)]
pub struct CallbackParams {
    pub state: Option<String>,
    pub code: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
    pub iss: Option<String>,
}

pub struct Completed {
    pub runtime: String,
    pub return_to: String,
    pub provider: &'static str,
    pub kind: ProviderKind,
    pub provider_login: String,
    /// A GitHub App user token whose App is not installed where the
    /// runtime needs it: why, and the install link.
    pub not_installed: Option<String>,
}

/// The flow cookie's name for a flow: one cookie per flow, so several tabs
/// can run flows at once. Derived from the state's digest, not the state.
pub fn flow_cookie_name(state: &str, secure: bool) -> String {
    crypto::binding_cookie_name("flow", state, secure)
}

pub struct Flows {
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    lifecycle: Arc<Lifecycle>,
    http: ProviderClient,
    clock: Arc<dyn Clock>,
    public_url: Url,
    ttl: Duration,
    secure_cookies: bool,
    metrics: Arc<Metrics>,
}

impl Flows {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn Store>,
        registry: Arc<Registry>,
        lifecycle: Arc<Lifecycle>,
        http: ProviderClient,
        clock: Arc<dyn Clock>,
        public_url: Url,
        ttl: Duration,
        secure_cookies: bool,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            metrics,
            store,
            registry,
            lifecycle,
            http,
            clock,
            public_url,
            ttl,
            secure_cookies,
        }
    }

    /// The callback URL of an OAuth app: one path per app (mix-up defence),
    /// always from the configured public URL, never from request headers.
    pub fn redirect_uri(&self, app_id: &str) -> Result<Url, FlowError> {
        self.public_url
            .join(&format!("/oauth/callback/{app_id}"))
            .map_err(|e| FlowError::AppConfig(e.to_string()))
    }

    fn oauth_client(&self, app: &OAuthApp) -> Result<AppClient, FlowError> {
        let endpoints = app.endpoints().map_err(FlowError::AppConfig)?;
        let creds = AppCredentials {
            kind: app.provider,
            endpoints: &endpoints,
            client_id: &app.client_id,
            client_secret: &app.client_secret,
        };
        Ok(creds.client(Some(self.redirect_uri(&app.id)?)))
    }

    /// Starts a flow for `runtime_id` on behalf of the session's user.
    pub async fn start(
        &self,
        session: &Session,
        runtime_id: &str,
    ) -> Result<StartedFlow, FlowError> {
        // IDOR check: the runtime must belong to one of the user's accounts;
        // "not yours" and "does not exist" look the same.
        let runtime = self
            .registry
            .runtime_for_groups(&session.user.groups, runtime_id)
            .await?
            .ok_or(FlowError::RuntimeNotFound)?;
        let app_id = runtime
            .oauth_app
            .clone()
            .ok_or_else(|| FlowError::NoOAuthApp(runtime.id.clone()))?;
        let app =
            self.registry.app(&app_id).await?.ok_or_else(|| {
                FlowError::AppConfig(format!("OAuth app `{app_id}` does not exist"))
            })?;
        let client = self.oauth_client(&app)?;

        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let state = crypto::random_string(32);
        let binding = crypto::random_string(32);
        let mut request = client
            .authorize_url(|| CsrfToken::new(state.clone()))
            .set_pkce_challenge(challenge);
        if providers::provider(app.provider).oauth_sends_scopes() {
            // scopes only ever come from the admin's OAuth app
            request = request.add_scopes(app.scopes.iter().cloned().map(Scope::new));
        }
        let (authorize_url, _) = request.url();
        let record = FlowRecord {
            user_sub: session.user.sub.clone(),
            session_key: session.key.clone(),
            runtime: runtime.id.clone(),
            runtime_incarnation: runtime.incarnation.clone(),
            app: app.id.clone(),
            pkce_verifier: verifier.secret().to_owned(),
            binding_sha256: crypto::sha256_hex(binding.as_bytes()),
            return_to: "/tokens".into(),
            created_at: self.clock.now(),
        };
        let bytes =
            serde_json::to_vec(&record).map_err(|e| StoreError::corrupt("flow record", &e))?;
        let key = EphemeralKey::new(NS, crypto::sha256_hex(state.as_bytes()));
        if !self.store.put_new(&key, &bytes, self.ttl).await? {
            // 256 random bits collided: refuse rather than overwrite
            return Err(StoreError::Conflict.into());
        }
        tracing::info!(runtime = %runtime.id, app = %app.id, "authorization flow started");
        self.metrics.flow_started(app.provider.as_str());
        Ok(StartedFlow {
            authorize_url,
            cookie_name: flow_cookie_name(&state, self.secure_cookies),
            binding: SecretString::from(binding),
            ttl: self.ttl,
        })
    }

    /// Finishes a flow at the callback of OAuth app `app_path`.
    /// `binding` is the flow cookie's value, read by the web layer from
    /// the cookie named [`flow_cookie_name`] of the state.
    pub async fn complete(
        &self,
        app_path: &str,
        params: CallbackParams,
        session: Option<&Session>,
        binding: Option<&str>,
    ) -> Result<Completed, FlowError> {
        let result = self.complete_flow(app_path, params, session, binding).await;
        match &result {
            Ok(done) => self.metrics.flow_completed(done.kind.as_str()),
            Err(e) => self.metrics.flow_failed(e.reason()),
        }
        result
    }

    async fn complete_flow(
        &self,
        app_path: &str,
        params: CallbackParams,
        session: Option<&Session>,
        binding: Option<&str>,
    ) -> Result<Completed, FlowError> {
        // 1. state: present, known, live, unused — consumed atomically.
        let state = params
            .state
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or(FlowError::MissingState)?;
        if state.len() > 512 {
            return Err(FlowError::UnknownState);
        }
        let key = EphemeralKey::new(NS, crypto::sha256_hex(state.as_bytes()));
        let bytes = self
            .store
            .take(&key)
            .await?
            .ok_or(FlowError::UnknownState)?;
        let record: FlowRecord =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::corrupt("flow record", &e))?;

        // 2. binding: same browser (flow cookie) and same signed-in user and session.
        let browser_ok = crypto::binding_matches(binding, &record.binding_sha256);
        let session_ok =
            session.is_some_and(|s| s.user.sub == record.user_sub && s.key == record.session_key);
        if !(browser_ok && session_ok) {
            tracing::warn!(runtime = %record.runtime, browser_ok, session_ok, "authorization callback refused: binding mismatch");
            return Err(FlowError::Forbidden);
        }

        // 3. the callback path's app is the record's; iss, when sent, is the provider's.
        if app_path != record.app {
            return Err(FlowError::WrongApp);
        }
        let app = self.registry.app(&record.app).await?.ok_or_else(|| {
            FlowError::AppConfig(format!("OAuth app `{}` was deleted", record.app))
        })?;
        let provider = providers::provider(app.provider);
        let endpoints = app.endpoints().map_err(FlowError::AppConfig)?;
        if let Some(iss) = params.iss.as_deref() {
            let expected = endpoints.authorize.origin().ascii_serialization();
            if iss.trim_end_matches('/') != expected {
                return Err(FlowError::WrongIssuer);
            }
        }
        let outcome = |failure: Failure| FlowError::Outcome {
            runtime: record.runtime.clone(),
            return_to: record.return_to.clone(),
            failure,
        };

        // 4. the provider's own error: no token request.
        if let Some(error) = params.error.as_deref() {
            tracing::info!(runtime = %record.runtime, error = %truncate(error, 64), "authorization denied at the provider");
            return Err(outcome(Failure::Denied {
                provider: provider.display_name(),
                description: params
                    .error_description
                    .as_deref()
                    .map(|d| truncate(d, 300))
                    .or_else(|| Some(truncate(error, 64))),
            }));
        }
        let code = params
            .code
            .filter(|c| !c.is_empty() && c.len() <= 1024)
            .ok_or_else(|| {
                outcome(Failure::ProviderRejected {
                    provider: provider.display_name(),
                    code: "no authorization code".into(),
                })
            })?;

        // 5. exchange once (codes are single-use: never retried).
        let client = self.oauth_client(&app)?;
        let http = self.http.for_provider(app.provider);
        let exchanger = ProviderHttp::new(&http, provider);
        let response = client
            .exchange_code(AuthorizationCode::new(code))
            .set_pkce_verifier(PkceCodeVerifier::new(record.pkce_verifier.clone()))
            .request_async(&exchanger)
            .await
            .map_err(|e| {
                let failure = match e {
                    RequestTokenError::ServerResponse(r) => Failure::ProviderRejected {
                        provider: provider.display_name(),
                        code: truncate(r.error().as_ref(), 64),
                    },
                    RequestTokenError::Request(e) => Failure::ProviderUnavailable {
                        provider: provider.display_name(),
                        detail: e.to_string(),
                    },
                    RequestTokenError::Parse(_, _) | RequestTokenError::Other(_) => {
                        Failure::ProviderRejected {
                            provider: provider.display_name(),
                            code: "unreadable token response".into(),
                        }
                    }
                };
                tracing::warn!(runtime = %record.runtime, %failure, "code exchange failed");
                outcome(failure)
            })?;

        // 6. validate the response.
        if *response.token_type() != BasicTokenType::Bearer {
            return Err(outcome(Failure::ProviderRejected {
                provider: provider.display_name(),
                code: "token type is not bearer".into(),
            }));
        }
        let access_token = SecretString::from(response.access_token().secret().to_owned());
        let refresh_token = response
            .refresh_token()
            .map(|r| SecretString::from(r.secret().to_owned()));
        let mut granted: Vec<String> = match response.scopes() {
            Some(scopes) => provider.parse_scopes(
                &scopes
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            // RFC 6749 §5.1: no scope in the response means the requested ones
            None => app.scopes.clone(),
        };
        let identity = match provider.identify(&http, &endpoints, &access_token).await {
            Ok(identity) => Some(identity),
            Err(e) => {
                // The code is spent; keep the token rather than lose it.
                tracing::warn!(runtime = %record.runtime, error = %e, "could not read the token owner");
                None
            }
        };
        if let Some(scopes) = identity.as_ref().and_then(|i| i.scopes.clone()) {
            granted = scopes;
        }
        let missing = providers::missing_scopes(provider, &granted, &app.scopes);
        if !missing.is_empty() {
            let report = self
                .lifecycle
                .revoke_refused(&app, access_token, &record.user_sub)
                .await;
            tracing::info!(runtime = %record.runtime, revocation = report.as_str(), "granted token lacks scopes; refused");
            return Err(outcome(Failure::MissingScopes {
                provider: provider.display_name(),
                missing,
            }));
        }

        // 7. the lifecycle re-checks the runtime and stores the grant.
        let now = self.clock.now();
        let login = identity.map(|i| i.login).unwrap_or_default();
        let tokens = OAuthTokens {
            issued: IssuedTokens {
                access_token,
                refresh_token,
                scopes: None,
                expires_at: response
                    .expires_in()
                    .and_then(|d| chrono::Duration::from_std(d).ok())
                    .map(|d| now + d),
            },
            scopes: granted,
            login: login.clone(),
        };
        let Some(session) = session else {
            return Err(FlowError::Forbidden);
        };
        let assigned = match self
            .lifecycle
            .assign_oauth(
                &session.user,
                &record.runtime,
                &record.runtime_incarnation,
                &app,
                tokens,
            )
            .await
        {
            Ok(assigned) => assigned,
            Err(AssignError::RuntimeChanged { revocation, .. }) => {
                return Err(outcome(Failure::RuntimeChanged {
                    revocation: revocation.map(|r| r.describe()).unwrap_or_default(),
                }));
            }
            Err(AssignError::Token(e)) => return Err(e.into()),
            Err(AssignError::Registry(e)) => return Err(e.into()),
            Err(e) => return Err(FlowError::AppConfig(e.to_string())),
        };
        tracing::info!(runtime = %record.runtime, app = %app.id, "user token stored");
        Ok(Completed {
            runtime: record.runtime,
            return_to: record.return_to,
            provider: provider.display_name(),
            kind: app.provider,
            provider_login: login,
            not_installed: assigned.not_installed,
        })
    }
}

/// Provider-supplied text is untrusted: cap its length (escaping is the
/// template's job).
fn truncate(s: &str, max: usize) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(max).collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7636 Appendix B.
    #[test]
    fn pkce_s256_rfc7636_appendix_b() {
        let verifier = PkceCodeVerifier::new("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into());
        let challenge = PkceCodeChallenge::from_code_verifier_sha256(&verifier);
        assert_eq!(
            challenge.as_str(),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert_eq!(challenge.method().as_str(), "S256");
    }

    #[test]
    fn flow_cookie_name_is_prefixed_and_hides_the_state() {
        let n = flow_cookie_name("some-state", true);
        assert!(n.starts_with("__Host-gb_flow_"));
        assert!(!n.contains("some-state"));
        assert!(flow_cookie_name("some-state", false).starts_with("gb_flow_"));
        assert_ne!(n, flow_cookie_name("other", true));
    }

    #[test]
    fn truncate_strips_control_characters() {
        assert_eq!(truncate("a\nb\u{7}c", 10), "abc");
        assert_eq!(truncate("abcdef", 3), "abc…");
    }
}
