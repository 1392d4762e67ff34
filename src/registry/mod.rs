//! Accounts, OAuth apps and runtimes. Accounts come from the configuration
//! file; OAuth apps and runtimes come from the file (loaded at start) and
//! from the admin API, and persist in the store. Client secrets are sealed
//! at rest and never leave through the API; runtime credentials are kept
//! only as SHA-256 digests and compared in constant time.

use crate::config::{self, AccountSettings, OAuthAppSettings, RuntimeSettings, Settings};
use crate::crypto::{self, Keyring, Sealed};
use crate::providers::{self, AppKind, Endpoints, ProviderKind};
use crate::store::{Collection, Expect, Store, StoreError};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use url::Url;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
    #[error("{0}")]
    InUse(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored secret does not open: {0}")]
    Crypto(#[from] crypto::CryptoError),
}

fn invalid(key: &str, message: impl Into<String>) -> RegistryError {
    RegistryError::Invalid {
        key: key.to_owned(),
        message: message.into(),
    }
}

impl From<config::ConfigError> for RegistryError {
    fn from(e: config::ConfigError) -> Self {
        match e {
            config::ConfigError::Invalid { key, message } => Self::Invalid { key, message },
            config::ConfigError::Parse(m) => Self::Invalid {
                key: "body".into(),
                message: m,
            },
        }
    }
}

/// Where an object was defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    File,
    Api,
}

#[derive(Clone)]
pub struct OAuthApp {
    pub id: String,
    pub name: String,
    pub provider: ProviderKind,
    pub base_url: Option<Url>,
    pub api_url: Option<Url>,
    pub client_id: String,
    pub client_secret: SecretString,
    /// An OAuth app, or a GitHub App that users authorize.
    pub kind: AppKind,
    /// GitHub App: the name in its page URL, for the install link.
    pub app_slug: Option<String>,
    pub scopes: Vec<String>,
    pub token_lifetime_secs: Option<u64>,
    pub origin: Origin,
}

impl std::fmt::Debug for OAuthApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthApp")
            .field("id", &self.id)
            .field("provider", &self.provider)
            .field("base_url", &self.base_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field("kind", &self.kind)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

impl OAuthApp {
    pub fn endpoints(&self) -> Result<Endpoints, String> {
        providers::provider(self.provider).endpoints(self.base_url.as_ref(), self.api_url.as_ref())
    }

    /// Where a user installs this GitHub App; `None` for OAuth apps.
    pub fn install_url(&self) -> Option<String> {
        install_url(
            self.provider,
            self.kind,
            self.app_slug.as_deref(),
            AppUrls::of(self),
        )
    }
}

/// Where a user installs a GitHub App (`kind` GitHub App with a slug).
fn install_url(
    provider: ProviderKind,
    kind: AppKind,
    slug: Option<&str>,
    urls: AppUrls<'_>,
) -> Option<String> {
    let slug = slug.filter(|_| kind == AppKind::GithubApp)?;
    let endpoints = providers::provider(provider)
        .endpoints(urls.base_url, urls.api_url)
        .ok()?;
    Some(providers::github_app_user::install_url(
        provider, &endpoints, slug,
    ))
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Runtime {
    pub id: String,
    pub account: String,
    pub git_host: String,
    pub oauth_app: Option<String>,
    /// The Git provider; when `None`, the OAuth app's.
    #[serde(default)]
    pub provider: Option<ProviderKind>,
    /// The provider's base URL for self-hosted kinds; when `None`, the OAuth app's.
    #[serde(default)]
    pub base_url: Option<Url>,
    /// `owner/name` of the repositories the runtime works on; its GitHub App
    /// installation tokens and the GitHub App user tokens served to it are
    /// narrowed to them. Empty: not narrowed.
    #[serde(default)]
    pub repositories: Vec<String>,
    /// Hex SHA-256 of the runtime credential.
    pub credential_sha256: String,
    pub origin: Origin,
    /// A random id fixed when the runtime is created: a runtime deleted and
    /// registered again under the same id is another incarnation, and
    /// nothing stored for the old one (flows, tokens) reaches the new one.
    /// Empty only in records written before incarnations existed, until
    /// [`Registry::load_from_config`] gives them one.
    #[serde(default)]
    pub incarnation: String,
    /// Its Git Runtime token is minted on demand from this GitHub App
    /// installation (the id found at registration when `owner` was given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github_app: Option<crate::config::github_apps::RuntimeGithubApp>,
    /// Rotate its Git Runtime token (a GitLab PAT) before it expires.
    #[serde(default)]
    pub rotate_runtime_token: bool,
}

/// A fresh runtime incarnation: 128 random bits.
pub fn new_incarnation() -> String {
    crypto::random_string(16)
}

/// An OAuth app without its client secret, which is not even opened: what
/// the token page needs of every app on each render.
#[derive(Debug, Clone)]
pub struct AppSummary {
    pub id: String,
    pub provider: ProviderKind,
    pub kind: AppKind,
    pub app_slug: Option<String>,
    pub base_url: Option<Url>,
    pub api_url: Option<Url>,
    pub scopes: Vec<String>,
}

impl AppSummary {
    fn urls(&self) -> AppUrls<'_> {
        AppUrls {
            provider: self.provider,
            base_url: self.base_url.as_ref(),
            api_url: self.api_url.as_ref(),
        }
    }

    /// Where a user installs this GitHub App; `None` for OAuth apps.
    pub fn install_url(&self) -> Option<String> {
        install_url(
            self.provider,
            self.kind,
            self.app_slug.as_deref(),
            self.urls(),
        )
    }
}

impl From<&AppSummary> for AppRequirements {
    fn from(a: &AppSummary) -> Self {
        Self {
            provider: a.provider,
            kind: a.kind,
            scopes: a.scopes.clone(),
        }
    }
}

/// What resolving a runtime's provider reads of its OAuth app.
#[derive(Clone, Copy)]
struct AppUrls<'a> {
    provider: ProviderKind,
    base_url: Option<&'a Url>,
    api_url: Option<&'a Url>,
}

impl<'a> AppUrls<'a> {
    fn of(a: &'a OAuthApp) -> Self {
        Self {
            provider: a.provider,
            base_url: a.base_url.as_ref(),
            api_url: a.api_url.as_ref(),
        }
    }
}

/// What an OAuth app requires of the tokens it issued.
#[derive(Debug, Clone)]
pub struct AppRequirements {
    pub provider: ProviderKind,
    pub kind: AppKind,
    pub scopes: Vec<String>,
}

impl From<&OAuthApp> for AppRequirements {
    fn from(a: &OAuthApp) -> Self {
        Self {
            provider: a.provider,
            kind: a.kind,
            scopes: a.scopes.clone(),
        }
    }
}

/// A checked, not yet written, change of an OAuth app.
pub struct AppUpdate {
    pub old: OAuthApp,
    pub new: OAuthApp,
    version: u64,
}

/// What the admin API accepts to create or replace an OAuth app.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuthAppInput {
    pub id: String,
    pub name: Option<String>,
    pub provider: ProviderKind,
    pub base_url: Option<String>,
    pub api_url: Option<String>,
    pub client_id: String,
    /// Required on create; on update, omitted keeps the current secret.
    #[schema(value_type = Option<String>, write_only)]
    pub client_secret: Option<SecretString>,
    /// `oauth_app` (default) or `github_app`.
    #[serde(default)]
    pub kind: AppKind,
    /// Required for `github_app`: the name in the App's page URL.
    pub app_slug: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    pub token_lifetime_secs: Option<u64>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuntimeInput {
    pub id: String,
    pub account: String,
    pub git_host: String,
    pub oauth_app: Option<String>,
    pub provider: Option<ProviderKind>,
    pub base_url: Option<String>,
    /// Mint its Git Runtime token from this GitHub App installation
    /// instead of taking one from the admin.
    #[serde(default)]
    pub github_app: Option<crate::config::github_apps::RuntimeGithubApp>,
    /// `owner/name` repositories its tokens are narrowed to.
    #[serde(default)]
    pub repositories: Vec<String>,
    /// GitLab only: rotate the Git Runtime token (with
    /// `POST /personal_access_tokens/self/rotate`) before it expires.
    #[serde(default)]
    pub rotate_runtime_token: bool,
}

#[derive(Serialize, Deserialize)]
struct StoredApp {
    id: String,
    name: String,
    provider: ProviderKind,
    base_url: Option<Url>,
    api_url: Option<Url>,
    client_id: String,
    client_secret: Sealed,
    #[serde(default, skip_serializing_if = "AppKind::is_default")]
    kind: AppKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    app_slug: Option<String>,
    scopes: Vec<String>,
    token_lifetime_secs: Option<u64>,
    origin: Origin,
}

pub(crate) const APPS: &str = "oauth_app";
const RUNTIMES: &str = "runtime";
const CREDENTIALS: &str = "runtime_credential";
/// One record whose version every registry write bumps: replicas compare it
/// to know their cached copy is stale.
const GENERATION: &str = "registry_generation";

/// How long a replica trusts its cached runtimes and apps before asking
/// whether they changed: admin changes reach every replica within this.
pub const CACHE_TTL: std::time::Duration = std::time::Duration::from_millis(500);

/// A replica's copy of every runtime and the apps' requirements, for the
/// runtime API's hot path and what the token page shows. Checks that decide
/// whether a token may be *written* never use it: they read the store.
struct Snapshot {
    generation: u64,
    runtimes: std::collections::HashMap<String, Runtime>,
    /// credential SHA-256 (hex) → runtime id
    by_credential: std::collections::HashMap<String, String>,
    apps: std::collections::HashMap<String, AppRequirements>,
    listing: Arc<Listing>,
    checked: std::sync::Mutex<std::time::Instant>,
}

/// Every runtime and every app (without its client secret), in the store's
/// order, as a replica's snapshot holds them: what the token page lists.
/// Shared, not copied, between the renders of one snapshot's lifetime.
#[derive(Debug)]
pub struct Listing {
    pub runtimes: Vec<Runtime>,
    pub apps: Vec<AppSummary>,
}

pub(crate) fn all(kind: &'static str) -> Collection {
    Collection::new(kind, "all")
}

fn corrupt(e: serde_json::Error) -> RegistryError {
    RegistryError::Store(StoreError::corrupt("registry record", &e))
}

pub struct Registry {
    store: Arc<dyn Store>,
    keyring: Arc<Keyring>,
    cache: std::sync::RwLock<Option<Arc<Snapshot>>>,
    accounts: Vec<AccountSettings>,
    allow_http: bool,
    /// The file's GitHub Apps, private keys included: never stored, never
    /// sent anywhere but GitHub (as signatures).
    github_apps: Vec<providers::github_app::GithubApp>,
}

impl Registry {
    pub fn new(store: Arc<dyn Store>, keyring: Arc<Keyring>, settings: &Settings) -> Self {
        Self {
            store,
            keyring,
            cache: std::sync::RwLock::new(None),
            accounts: settings.accounts.clone(),
            allow_http: settings.allow_insecure_http,
            github_apps: settings.github_apps.clone(),
        }
    }

    /// A configured GitHub App by name.
    pub fn github_app(&self, name: &str) -> Option<&providers::github_app::GithubApp> {
        self.github_apps.iter().find(|a| a.name == name)
    }

    /// Writes the file's OAuth apps and runtimes into the store (the file
    /// wins for ids it names); objects created through the API stay. A file
    /// runtime keeps its incarnation while it stays in its account; moved to
    /// another account it becomes a new incarnation (the caller refuses the
    /// move while tokens are stored). Runtimes stored before incarnations
    /// existed get one.
    pub async fn load_from_config(&self, settings: &Settings) -> Result<(), RegistryError> {
        for app in &settings.oauth_apps {
            self.write_app(&app_from_settings(app), Expect::Any).await?;
        }
        for rt in &settings.runtimes {
            let mut runtime = runtime_from_settings(rt);
            runtime.incarnation = match self.runtime(&rt.id).await? {
                Some(old) if old.account == rt.account && !old.incarnation.is_empty() => {
                    old.incarnation
                }
                _ => new_incarnation(),
            };
            self.write_runtime(&runtime, Expect::Any).await?;
        }
        for (id, v) in self.store.record_list(&all(RUNTIMES)).await? {
            let mut rt: Runtime = serde_json::from_slice(&v.value).map_err(corrupt)?;
            if rt.incarnation.is_empty() {
                rt.incarnation = new_incarnation();
                let bytes = serde_json::to_vec(&rt).map_err(corrupt)?;
                match self
                    .store
                    .record_put(&all(RUNTIMES), &id, &bytes, Expect::Version(v.version))
                    .await
                {
                    // another replica gave it one first: keep theirs
                    Ok(_) | Err(StoreError::Conflict) => {}
                    Err(e) => return Err(e.into()),
                }
                self.changed().await?;
            }
        }
        Ok(())
    }

    pub fn accounts(&self) -> &[AccountSettings] {
        &self.accounts
    }

    pub fn account(&self, id: &str) -> Option<&AccountSettings> {
        self.accounts.iter().find(|a| a.id == id)
    }

    /// A runtime of one of the accounts `groups` belong to. `None` both when
    /// it does not exist and when it is not the user's: the two look the
    /// same to the user (no IDOR oracle).
    pub async fn runtime_for_groups(
        &self,
        groups: &[String],
        id: &str,
    ) -> Result<Option<Runtime>, RegistryError> {
        Ok(self.runtime(id).await?.filter(|rt| {
            self.accounts_for_groups(groups)
                .iter()
                .any(|a| a.id == rt.account)
        }))
    }

    /// The accounts whose groups intersect `groups`.
    pub fn accounts_for_groups(&self, groups: &[String]) -> Vec<&AccountSettings> {
        self.accounts
            .iter()
            .filter(|a| a.groups.iter().any(|g| groups.contains(g)))
            .collect()
    }

    // --- OAuth apps ---

    pub(crate) fn app_aad(id: &str) -> Vec<u8> {
        crypto::associated_data("oauth_app_secret", &[id])
    }

    async fn write_app(&self, app: &OAuthApp, expect: Expect) -> Result<(), RegistryError> {
        let stored = StoredApp {
            id: app.id.clone(),
            name: app.name.clone(),
            provider: app.provider,
            base_url: app.base_url.clone(),
            api_url: app.api_url.clone(),
            client_id: app.client_id.clone(),
            client_secret: self.keyring.seal(
                &Self::app_aad(&app.id),
                app.client_secret.expose_secret().as_bytes(),
            )?,
            kind: app.kind,
            app_slug: app.app_slug.clone(),
            scopes: app.scopes.clone(),
            token_lifetime_secs: app.token_lifetime_secs,
            origin: app.origin,
        };
        let bytes = serde_json::to_vec(&stored).map_err(corrupt)?;
        self.store
            .record_put(&all(APPS), &app.id, &bytes, expect)
            .await
            .map_err(|e| match e {
                StoreError::Conflict => {
                    RegistryError::AlreadyExists(format!("OAuth app `{}`", app.id))
                }
                e => e.into(),
            })?;
        self.changed().await
    }

    fn decode_app(&self, bytes: &[u8]) -> Result<OAuthApp, RegistryError> {
        let s: StoredApp = serde_json::from_slice(bytes).map_err(corrupt)?;
        let secret = self.keyring.open(&Self::app_aad(&s.id), &s.client_secret)?;
        let secret = String::from_utf8(secret)
            .map_err(|_| RegistryError::Store(StoreError::Corrupt("client secret".into())))?;
        Ok(OAuthApp {
            id: s.id,
            name: s.name,
            provider: s.provider,
            base_url: s.base_url,
            api_url: s.api_url,
            client_id: s.client_id,
            client_secret: SecretString::from(secret),
            kind: s.kind,
            app_slug: s.app_slug,
            scopes: s.scopes,
            token_lifetime_secs: s.token_lifetime_secs,
            origin: s.origin,
        })
    }

    /// What an OAuth app requires of its tokens — its provider and scopes —
    /// without opening its client secret (the runtime API's hot path).
    pub async fn app_requirements(
        &self,
        id: &str,
    ) -> Result<Option<AppRequirements>, RegistryError> {
        match self.store.record_get(&all(APPS), id).await? {
            Some(v) => {
                let s: StoredApp = serde_json::from_slice(&v.value).map_err(corrupt)?;
                Ok(Some(AppRequirements {
                    provider: s.provider,
                    kind: s.kind,
                    scopes: s.scopes,
                }))
            }
            None => Ok(None),
        }
    }

    pub async fn app(&self, id: &str) -> Result<Option<OAuthApp>, RegistryError> {
        match self.store.record_get(&all(APPS), id).await? {
            Some(v) => Ok(Some(self.decode_app(&v.value)?)),
            None => Ok(None),
        }
    }

    /// Every OAuth app without opening its client secret.
    pub async fn app_summaries(&self) -> Result<Vec<AppSummary>, RegistryError> {
        self.store
            .record_list(&all(APPS))
            .await?
            .into_iter()
            .map(|(_, v)| {
                let s: StoredApp = serde_json::from_slice(&v.value).map_err(corrupt)?;
                Ok(AppSummary {
                    id: s.id,
                    provider: s.provider,
                    kind: s.kind,
                    app_slug: s.app_slug,
                    base_url: s.base_url,
                    api_url: s.api_url,
                    scopes: s.scopes,
                })
            })
            .collect()
    }

    pub async fn apps(&self) -> Result<Vec<OAuthApp>, RegistryError> {
        self.store
            .record_list(&all(APPS))
            .await?
            .into_iter()
            .map(|(_, v)| self.decode_app(&v.value))
            .collect()
    }

    fn app_from_input(
        &self,
        input: OAuthAppInput,
        secret: SecretString,
    ) -> Result<OAuthApp, RegistryError> {
        config::validate_id("id", &input.id)?;
        let base_url = input
            .base_url
            .as_deref()
            .map(|u| config::validate_provider_url("base_url", u, self.allow_http))
            .transpose()?;
        let api_url = input
            .api_url
            .as_deref()
            .map(|u| config::validate_provider_url("api_url", u, self.allow_http))
            .transpose()?;
        if input.client_id.trim().is_empty() {
            return Err(invalid("client_id", "must not be empty"));
        }
        if secret.expose_secret().is_empty() {
            return Err(invalid("client_secret", "must not be empty"));
        }
        if input.token_lifetime_secs == Some(0) {
            return Err(invalid("token_lifetime_secs", "must be greater than 0"));
        }
        let settings = OAuthAppSettings {
            id: input.id.clone(),
            name: input.name.clone().unwrap_or_else(|| input.id.clone()),
            provider: input.provider,
            base_url,
            api_url,
            client_id: input.client_id,
            client_secret: secret,
            kind: input.kind,
            app_slug: input.app_slug.clone(),
            // the provider's spelling (GitLab: `api_read` → `read_api`)
            scopes: providers::provider(input.provider).parse_scopes(&input.scopes.join(" ")),
            token_lifetime: input
                .token_lifetime_secs
                .map(std::time::Duration::from_secs),
        };
        providers::validate_app(
            settings.provider,
            settings.kind,
            settings.app_slug.as_deref(),
            settings.base_url.as_ref(),
            settings.api_url.as_ref(),
            &settings.scopes,
        )
        .map_err(|(field, m)| invalid(field, m))?;
        let mut app = app_from_settings(&settings);
        app.origin = Origin::Api;
        Ok(app)
    }

    pub async fn create_app(&self, mut input: OAuthAppInput) -> Result<OAuthApp, RegistryError> {
        let secret = input
            .client_secret
            .take()
            .ok_or_else(|| invalid("client_secret", "is required"))?;
        let app = self.app_from_input(input, secret)?;
        self.write_app(&app, Expect::Absent).await?;
        Ok(app)
    }

    /// Checks an update of an OAuth app without writing it: the app as it
    /// is, as it would be, and the version to write over.
    pub async fn prepare_app_update(
        &self,
        id: &str,
        mut input: OAuthAppInput,
    ) -> Result<AppUpdate, RegistryError> {
        if input.id != id {
            return Err(invalid("id", "must equal the id in the path"));
        }
        let current = self
            .store
            .record_get(&all(APPS), id)
            .await?
            .ok_or_else(|| RegistryError::NotFound(format!("OAuth app `{id}`")))?;
        let old = self.decode_app(&current.value)?;
        let secret = match input.client_secret.take() {
            Some(s) => s,
            None => old.client_secret.clone(),
        };
        let new = self.app_from_input(input, secret)?;
        Ok(AppUpdate {
            old,
            new,
            version: current.version,
        })
    }

    /// Writes a prepared update, unless the app changed meanwhile.
    pub async fn commit_app_update(&self, update: AppUpdate) -> Result<OAuthApp, RegistryError> {
        let id = update.new.id.clone();
        self.write_app(&update.new, Expect::Version(update.version))
            .await
            .map_err(|e| match e {
                RegistryError::AlreadyExists(_) => {
                    RegistryError::InUse(format!("OAuth app `{id}` changed meanwhile; retry"))
                }
                e => e,
            })?;
        Ok(update.new)
    }

    pub async fn delete_app(&self, id: &str) -> Result<(), RegistryError> {
        let users: Vec<String> = self
            .runtimes()
            .await?
            .into_iter()
            .filter(|r| r.oauth_app.as_deref() == Some(id))
            .map(|r| r.id)
            .collect();
        if !users.is_empty() {
            return Err(RegistryError::InUse(format!(
                "OAuth app `{id}` is used by runtimes: {}",
                users.join(", ")
            )));
        }
        if !self
            .store
            .record_delete(&all(APPS), id, Expect::Any)
            .await?
        {
            return Err(RegistryError::NotFound(format!("OAuth app `{id}`")));
        }
        self.changed().await
    }

    // --- runtimes ---

    async fn write_runtime(&self, rt: &Runtime, expect: Expect) -> Result<(), RegistryError> {
        let previous = self.runtime(&rt.id).await?;
        let bytes = serde_json::to_vec(rt).map_err(corrupt)?;
        self.store
            .record_put(&all(RUNTIMES), &rt.id, &bytes, expect)
            .await
            .map_err(|e| match e {
                StoreError::Conflict => {
                    RegistryError::AlreadyExists(format!("runtime `{}`", rt.id))
                }
                e => e.into(),
            })?;
        if let Some(prev) = previous
            && prev.credential_sha256 != rt.credential_sha256
        {
            self.store
                .record_delete(&all(CREDENTIALS), &prev.credential_sha256, Expect::Any)
                .await?;
        }
        self.store
            .record_put(
                &all(CREDENTIALS),
                &rt.credential_sha256,
                rt.id.as_bytes(),
                Expect::Any,
            )
            .await?;
        self.changed().await
    }

    pub async fn runtime(&self, id: &str) -> Result<Option<Runtime>, RegistryError> {
        match self.store.record_get(&all(RUNTIMES), id).await? {
            Some(v) => Ok(Some(serde_json::from_slice(&v.value).map_err(corrupt)?)),
            None => Ok(None),
        }
    }

    pub async fn runtimes(&self) -> Result<Vec<Runtime>, RegistryError> {
        self.store
            .record_list(&all(RUNTIMES))
            .await?
            .into_iter()
            .map(|(_, v)| serde_json::from_slice(&v.value).map_err(corrupt))
            .collect()
    }

    /// The runtime's provider and its endpoints: the runtime's own kind and
    /// base URL, else its OAuth app's.
    pub async fn provider_of(
        &self,
        rt: &Runtime,
    ) -> Result<(ProviderKind, Endpoints), RegistryError> {
        let app = match &rt.oauth_app {
            Some(id) => self.app(id).await?,
            None => None,
        };
        self.resolve_provider(
            rt.provider,
            rt.base_url.as_ref(),
            app.as_ref().map(AppUrls::of),
        )
    }

    /// Like [`Registry::provider_of`], with the OAuth apps already loaded.
    pub fn provider_of_with(
        &self,
        rt: &Runtime,
        apps: &[AppSummary],
    ) -> Result<(ProviderKind, Endpoints), RegistryError> {
        let app = rt
            .oauth_app
            .as_ref()
            .and_then(|id| apps.iter().find(|a| &a.id == id));
        self.resolve_provider(rt.provider, rt.base_url.as_ref(), app.map(AppSummary::urls))
    }

    fn resolve_provider(
        &self,
        kind: Option<ProviderKind>,
        base_url: Option<&Url>,
        app: Option<AppUrls<'_>>,
    ) -> Result<(ProviderKind, Endpoints), RegistryError> {
        let kind = kind
            .or(app.map(|a| a.provider))
            .ok_or_else(|| invalid("provider", "is required when the runtime has no oauth_app"))?;
        let same_app = app.filter(|a| a.provider == kind);
        let base = base_url.or(same_app.and_then(|a| a.base_url));
        let api = same_app
            .filter(|a| base_url.is_none() || a.base_url == base_url)
            .and_then(|a| a.api_url);
        let endpoints = providers::provider(kind)
            .endpoints(base, api)
            .map_err(|m| invalid("base_url", m))?;
        Ok((kind, endpoints))
    }

    /// Checks a runtime's input and returns its provider and endpoints.
    pub async fn check_runtime_input(
        &self,
        input: &RuntimeInput,
    ) -> Result<(ProviderKind, Endpoints), RegistryError> {
        config::validate_id("id", &input.id)?;
        if self.account(&input.account).is_none() {
            return Err(invalid(
                "account",
                format!("`{}` is not a configured account", input.account),
            ));
        }
        if input.git_host.trim().is_empty() || input.git_host.contains(['/', ' ']) {
            return Err(invalid(
                "git_host",
                "must be a host name such as github.com",
            ));
        }
        let app = match &input.oauth_app {
            Some(id) => Some(self.app(id).await?.ok_or_else(|| {
                invalid("oauth_app", format!("`{id}` is not a configured OAuth app"))
            })?),
            None => None,
        };
        if let (Some(kind), Some(app)) = (input.provider, app.as_ref())
            && kind != app.provider
        {
            return Err(invalid(
                "provider",
                format!(
                    "is `{}` but OAuth app `{}` is for `{}`",
                    kind.as_str(),
                    app.id,
                    app.provider.as_str()
                ),
            ));
        }
        providers::github_app_user::check_repositories(
            &input.repositories,
            app.as_ref().is_some_and(|a| a.kind == AppKind::GithubApp),
        )
        .map_err(|m| invalid("repositories", m))?;
        if let Some(ga) = &input.github_app {
            config::github_apps::validate_runtime_app("runtime", ga, &self.github_apps)
                .map_err(strip_prefix)?;
        }
        let (kind, base_url) = self.runtime_provider(input)?;
        if input.github_app.is_some() {
            let resolved = kind.or(app.as_ref().map(|a| a.provider));
            if !matches!(
                resolved,
                Some(ProviderKind::Github | ProviderKind::GithubEnterprise)
            ) {
                return Err(invalid(
                    "github_app",
                    "a GitHub App installation serves only a runtime on GitHub (provider github or github_enterprise)",
                ));
            }
        }
        let (kind, endpoints) =
            self.resolve_provider(kind, base_url.as_ref(), app.as_ref().map(AppUrls::of))?;
        if input.rotate_runtime_token && !providers::provider(kind).rotates_pats() {
            return Err(invalid(
                "rotate_runtime_token",
                format!(
                    "only GitLab Git Runtime tokens can rotate themselves; this runtime's provider is `{}`",
                    kind.as_str()
                ),
            ));
        }
        Ok((kind, endpoints))
    }

    /// The runtime's own provider kind and base URL: as given, or for a
    /// GitHub App runtime without either, its App's GitHub.
    fn runtime_provider(
        &self,
        input: &RuntimeInput,
    ) -> Result<(Option<ProviderKind>, Option<Url>), RegistryError> {
        let base_url = self.runtime_base_url(input)?;
        let app = input
            .github_app
            .as_ref()
            .and_then(|g| self.github_app(&g.app));
        match app {
            Some(app) if input.provider.is_none() && input.oauth_app.is_none() => {
                let web = match app.api.as_str().strip_suffix("/api/v3") {
                    Some(web) => Some(config::validate_provider_url(
                        "github_app",
                        web,
                        self.allow_http,
                    )?),
                    None => None,
                };
                let web = base_url.or(web);
                Ok((Some(config::github_apps::kind_of(web.as_ref())), web))
            }
            _ => Ok((input.provider, base_url)),
        }
    }

    fn runtime_base_url(&self, input: &RuntimeInput) -> Result<Option<Url>, RegistryError> {
        Ok(input
            .base_url
            .as_deref()
            .map(|u| config::validate_provider_url("base_url", u, self.allow_http))
            .transpose()?)
    }

    /// Creates a runtime and returns its credential, which is shown only now.
    pub async fn create_runtime(
        &self,
        input: RuntimeInput,
    ) -> Result<(Runtime, SecretString), RegistryError> {
        self.check_runtime_input(&input).await?;
        let credential = format!("gbrt_{}", crypto::random_string(32));
        let (provider, base_url) = self.runtime_provider(&input)?;
        let rt = Runtime {
            id: input.id,
            account: input.account,
            git_host: input.git_host.trim().to_ascii_lowercase(),
            provider,
            base_url,
            oauth_app: input.oauth_app,
            repositories: input.repositories,
            credential_sha256: crypto::sha256_hex(credential.as_bytes()),
            origin: Origin::Api,
            incarnation: new_incarnation(),
            github_app: input.github_app,
            rotate_runtime_token: input.rotate_runtime_token,
        };
        self.write_runtime(&rt, Expect::Absent).await?;
        Ok((rt, SecretString::from(credential)))
    }

    pub async fn update_runtime(
        &self,
        id: &str,
        input: RuntimeInput,
    ) -> Result<Runtime, RegistryError> {
        if input.id != id {
            return Err(invalid("id", "must equal the id in the path"));
        }
        self.check_runtime_input(&input).await?;
        let current = self
            .store
            .record_get(&all(RUNTIMES), id)
            .await?
            .ok_or_else(|| RegistryError::NotFound(format!("runtime `{id}`")))?;
        let prev: Runtime = serde_json::from_slice(&current.value).map_err(corrupt)?;
        let (provider, base_url) = self.runtime_provider(&input)?;
        let rt = Runtime {
            id: input.id,
            account: input.account,
            git_host: input.git_host.trim().to_ascii_lowercase(),
            provider,
            base_url,
            oauth_app: input.oauth_app,
            repositories: input.repositories,
            credential_sha256: prev.credential_sha256,
            origin: prev.origin,
            incarnation: prev.incarnation,
            github_app: input.github_app,
            rotate_runtime_token: input.rotate_runtime_token,
        };
        self.write_runtime(&rt, Expect::Version(current.version))
            .await
            .map_err(|e| match e {
                RegistryError::AlreadyExists(_) => {
                    RegistryError::InUse(format!("runtime `{id}` changed meanwhile; retry"))
                }
                e => e,
            })?;
        Ok(rt)
    }

    /// Deletes a runtime and its credential, and returns what it was. The
    /// runtime record goes first: from then on no check that a token may be
    /// stored for it passes. Its tokens belong to the token lifecycle, which
    /// the caller asks to drop them.
    pub async fn delete_runtime(&self, id: &str) -> Result<Runtime, RegistryError> {
        let rt = self
            .runtime(id)
            .await?
            .ok_or_else(|| RegistryError::NotFound(format!("runtime `{id}`")))?;
        self.store
            .record_delete(&all(RUNTIMES), id, Expect::Any)
            .await?;
        self.store
            .record_delete(&all(CREDENTIALS), &rt.credential_sha256, Expect::Any)
            .await?;
        self.changed().await?;
        Ok(rt)
    }

    /// Tells every replica (and this one, at once) that runtimes or apps
    /// changed.
    async fn changed(&self) -> Result<(), RegistryError> {
        *self.cache.write().unwrap_or_else(|p| p.into_inner()) = None;
        self.store
            .record_put(&all(GENERATION), "generation", b"", Expect::Any)
            .await?;
        Ok(())
    }

    /// This replica's copy of the runtimes and apps: reused while younger
    /// than [`CACHE_TTL`], then kept if the store's generation did not
    /// move, else reloaded.
    async fn snapshot(&self) -> Result<Arc<Snapshot>, RegistryError> {
        let cached = self.cache.read().unwrap_or_else(|p| p.into_inner()).clone();
        let generation = |rec: Option<crate::store::Versioned>| rec.map_or(0, |r| r.version);
        if let Some(snap) = &cached {
            let fresh = snap
                .checked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .elapsed()
                < CACHE_TTL;
            if fresh {
                return Ok(snap.clone());
            }
            let now = generation(
                self.store
                    .record_get(&all(GENERATION), "generation")
                    .await?,
            );
            if now == snap.generation {
                *snap.checked.lock().unwrap_or_else(|p| p.into_inner()) = std::time::Instant::now();
                return Ok(snap.clone());
            }
        }
        // the generation first: a write racing the reload leaves a newer one
        let gen_now = generation(
            self.store
                .record_get(&all(GENERATION), "generation")
                .await?,
        );
        let listing = Listing {
            runtimes: self.runtimes().await?,
            apps: self.app_summaries().await?,
        };
        let runtimes: std::collections::HashMap<String, Runtime> = listing
            .runtimes
            .iter()
            .map(|r| (r.id.clone(), r.clone()))
            .collect();
        let by_credential = runtimes
            .values()
            .map(|r| (r.credential_sha256.clone(), r.id.clone()))
            .collect();
        let apps = listing
            .apps
            .iter()
            .map(|a| (a.id.clone(), AppRequirements::from(a)))
            .collect();
        let snap = Arc::new(Snapshot {
            generation: gen_now,
            runtimes,
            by_credential,
            apps,
            listing: Arc::new(listing),
            checked: std::sync::Mutex::new(std::time::Instant::now()),
        });
        *self.cache.write().unwrap_or_else(|p| p.into_inner()) = Some(snap.clone());
        Ok(snap)
    }

    /// The runtime a credential belongs to, from this replica's copy (at
    /// most [`CACHE_TTL`] behind the store): the runtime API's hot path.
    pub async fn runtime_for_credential_cached(
        &self,
        credential: &str,
    ) -> Result<Option<Runtime>, RegistryError> {
        let digest = crypto::sha256_hex(credential.as_bytes());
        let snap = self.snapshot().await?;
        let Some(rt) = snap
            .by_credential
            .get(&digest)
            .and_then(|id| snap.runtimes.get(id))
        else {
            return Ok(None);
        };
        // the map is only a lookup: the runtime's own digest decides, in constant time
        Ok(crypto::ct_eq(rt.credential_sha256.as_bytes(), digest.as_bytes()).then(|| rt.clone()))
    }

    /// An OAuth app's requirements from this replica's copy.
    pub async fn app_requirements_cached(
        &self,
        id: &str,
    ) -> Result<Option<AppRequirements>, RegistryError> {
        Ok(self.snapshot().await?.apps.get(id).cloned())
    }

    /// Every runtime and app from this replica's copy (at most
    /// [`CACHE_TTL`] behind the store): what the token page shows on each
    /// render, for display only — the forms it leads to read the store.
    pub async fn listing_cached(&self) -> Result<Arc<Listing>, RegistryError> {
        Ok(self.snapshot().await?.listing.clone())
    }

    /// The runtime a credential belongs to, if any.
    pub async fn runtime_for_credential(
        &self,
        credential: &str,
    ) -> Result<Option<Runtime>, RegistryError> {
        let digest = crypto::sha256_hex(credential.as_bytes());
        let Some(rec) = self.store.record_get(&all(CREDENTIALS), &digest).await? else {
            return Ok(None);
        };
        let id = String::from_utf8_lossy(&rec.value).into_owned();
        let Some(rt) = self.runtime(&id).await? else {
            return Ok(None);
        };
        // The index is only a lookup: the runtime's own digest decides, in constant time.
        if crypto::ct_eq(rt.credential_sha256.as_bytes(), digest.as_bytes()) {
            Ok(Some(rt))
        } else {
            Ok(None)
        }
    }
}

fn app_from_settings(a: &OAuthAppSettings) -> OAuthApp {
    OAuthApp {
        id: a.id.clone(),
        name: a.name.clone(),
        provider: a.provider,
        base_url: a.base_url.clone(),
        api_url: a.api_url.clone(),
        client_id: a.client_id.clone(),
        client_secret: a.client_secret.clone(),
        kind: a.kind,
        app_slug: a.app_slug.clone(),
        scopes: a.scopes.clone(),
        token_lifetime_secs: a.token_lifetime.map(|d| d.as_secs()),
        origin: Origin::File,
    }
}

fn runtime_from_settings(r: &RuntimeSettings) -> Runtime {
    Runtime {
        id: r.id.clone(),
        account: r.account.clone(),
        git_host: r.git_host.clone(),
        oauth_app: r.oauth_app.clone(),
        provider: r.provider,
        base_url: r.base_url.clone(),
        repositories: r.repositories.clone(),
        credential_sha256: hex::encode(r.credential_sha256),
        origin: Origin::File,
        incarnation: String::new(),
        github_app: r.github_app.clone(),
        rotate_runtime_token: r.rotate_runtime_token,
    }
}

/// `runtime.github_app…` → `github_app…`: the admin API names body fields.
fn strip_prefix(e: config::ConfigError) -> RegistryError {
    match e {
        config::ConfigError::Invalid { key, message } => RegistryError::Invalid {
            key: key.strip_prefix("runtime.").unwrap_or(&key).to_owned(),
            message,
        },
        other => other.into(),
    }
}
