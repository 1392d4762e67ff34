//! An in-process fake of the outside world gitbroker talks to: a Git provider
//! (the `github` flavour: OAuth app flow, token endpoint quirks, REST API) and
//! an OpenID Connect identity provider (`/idp`), served on one port.
//!
//! Layout of the HTTP surface, relative to the base URL:
//! - GitHub web host: `/login/oauth/authorize`, `/login/oauth/access_token`;
//!   GitHub API (GitHub Enterprise Server style): `/api/v3/…`, so the broker's
//!   `api_url` is `<base>/api/v3`.
//! - GitLab (`gitlab` flavour): everything under `/gitlab`, so the broker's
//!   `base_url` is `<base>/gitlab` (`/oauth/…`, `/api/v4/…`).
//! - Bitbucket Cloud under `/bitbucket`, Bitbucket Data Center under
//!   `/bitbucket-dc`, Gitea (and Forgejo) under `/gitea` (`/login/oauth/…`,
//!   `/api/v1/…`).
//! - Git over smart HTTP in every flavour (module `git`), with
//!   [`MockConfig::git_root`]: `/{owner}/{repo}.git/…` (GitHub),
//!   `/gitlab/{namespace}/{project}.git/…`,
//!   `/bitbucket/{workspace}/{repo}.git/…`,
//!   `/bitbucket-dc/scm/{project}/{repo}.git/…`,
//!   `/gitea/{owner}/{repo}.git/…`, each followed by
//!   `info/refs?service=…`, `git-upload-pack` or `git-receive-pack`; served
//!   by the real `git http-backend` over bare repositories made with
//!   [`MockProvider::create_repo`], behind each provider's own rules for
//!   presenting a token (Basic with which username, or Bearer) and for
//!   reading and pushing. Without a Git root these routes answer 404.
//! - OpenID Connect: issuer `<base>/idp` (discovery, `authorize`, `token`,
//!   `userinfo`, `jwks`); with [`MockConfig::idp_at_origin`], on a port of
//!   its own instead, at the bare origin `http://<host>:<port>` (no path),
//!   as Google's `https://accounts.google.com` is.
//! - Test control, for suites that drive the mock from outside the process:
//!   - `GET /__mock/stats` → the [`Stats`] and [`TrafficStats`] counters as
//!     one JSON object;
//!   - `GET /__mock/switches` → the current [`SwitchState`] as JSON;
//!   - `POST /__mock/switches` with a JSON object holding any subset of the
//!     [`SwitchState`] fields; a field set to `null` is cleared, an absent
//!     field is left alone; answers the new state;
//!   - `POST /__mock/stats/api_calls` with `{"token"}` → `{"calls": n}`;
//!   - `POST /__mock/stats/reset` → clears the counters only
//!     ([`MockProvider::reset_counters`]); 204;
//!   - `POST /__mock/reset` → clears switches, counters, codes and tokens
//!     (users, apps and clients stay); 204;
//!   - `POST /__mock/tokens` with `{"login", "scopes": […], "client_id"?,
//!     "flavour"?}` → `{"token": …}`, an OAuth token as if the user had
//!     authorized the app (`client_id` defaults to the first OAuth app,
//!     `flavour` to `github`; [`MockProvider::issue_oauth_token`]).
//!   - `POST /__mock/repos` with `{"flavour", "path"}` → 201
//!     `{"clone_url", "path"}` ([`MockProvider::create_repo`]; 409 if it
//!     exists, 400 for a bad path, 404 without a Git root).
//!   - `POST /__mock/tokens/scopes` (`{"token", "scopes"}`),
//!     `/__mock/tokens/expire` and `/__mock/tokens/revoke` (`{"token"}`)
//!     change an issued OAuth token of any Git flavour
//!     ([`MockProvider::set_token_scopes`], [`MockProvider::expire_token`],
//!     [`MockProvider::revoke`]);
//!   - `/__mock/github_apps…`: GitHub Apps and their one book of
//!     installations, for App installation tokens and App user tokens
//!     alike (module `github_app`: register an App — id, client id, slug,
//!     public key —, install it, replace every installation, suspend,
//!     uninstall, fail temporarily, count mints and scoped tokens);
//!   - `POST /__mock/pats`, `/__mock/pats/revoke`, `/__mock/pats/scopes`
//!     and `/__mock/pats/expire` create and change personal access tokens
//!     ([`MockProvider::create_pat`], [`MockProvider::revoke_pat`],
//!     [`MockProvider::set_pat_scopes`], [`MockProvider::expire_pat`]).
//!
//! Token lifecycle, for tests of token refresh: the `refresh_error`,
//! `refresh_status` and `refresh_hang` switches act on
//! `grant_type=refresh_token` requests only (refresh tokens rotate on every
//! use, in every flavour); `access_token_secs` shortens (or lengthens) the
//! lifetime of newly issued access tokens; `github_expiring_tokens` turns
//! GitHub's expiring tokens on or off at run time. [`TrafficStats`] counts
//! refreshes, per flavour too, counts API calls per token
//! ([`MockProvider::api_calls_for`], and a histogram that never shows the
//! tokens) and keeps a gauge of API requests in flight with its peak; the
//! `api_delay_ms` switch slows every API request down, and `api_rate_limit`
//! limits them host-wide in fixed windows, with each flavour's rate-limit
//! headers (and the mock's own `X-RateLimit-Reset-Ms`, in epoch
//! milliseconds). Every flavour's API routes go through one middleware
//! (`traffic`) for this. Git requests are not API requests: [`TrafficStats`]
//! counts them apart (`git_requests`, `git_auth_failures`, per flavour too)
//! and the API switches leave them alone.
//! [`MockProvider::wait_until`] lets a test wait for the counters to reach a
//! state instead of sleeping. Expiry follows the [`Clock`] given to
//! [`MockProvider::with_clock`].
//!
//! Shared by every flavour: the token book-keeping (`book`), the protocol
//! pieces (`oauth`), switches and counters (`control`). Another flavour
//! (GitLab, Bitbucket) is a sibling of `github.rs` with its own routes and
//! its own `TokenBook` in `Shared`.
//!
//! Nothing here is meant to be secure: it is meant to be faithful, so that the
//! broker's real parsing code runs against it. It still never logs secrets,
//! because its logs end up next to the broker's.

// Handlers here short-circuit with the response to send; boxing it would buy
// nothing for a test double.
#![allow(clippy::result_large_err)]

mod bitbucket_cloud;
mod bitbucket_dc;
mod book;
mod consent;
mod control;
mod git;
mod gitea;
mod github;
mod github_app;
mod github_app_user;
mod gitlab;
mod idp;
mod oauth;
mod pages;
mod pats;
mod traffic;

pub use control::{
    MAX_ACCESS_TOKEN_SECS, MAX_WINDOW_MS, PerFlavour, RateLimit, Stats, SwitchState, Switches,
    TOKEN_HANG, TrafficStats,
};
pub use git::{MockRepo, RepoError};
pub use github_app::{MockGithubApp, MockInstallation};
pub use pats::{Flavour, PatSpec};

use crate::clock::{Clock, SystemClock};
use axum::Router;
use book::TokenBook;
use control::Counters;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// What the mock knows at start: its users, and the OAuth apps and OpenID
/// clients that may talk to it. Apps and clients can be added later.
#[derive(Debug, Clone, Default)]
pub struct MockConfig {
    pub github_users: Vec<MockGitUser>,
    pub oauth_apps: Vec<MockOAuthApp>,
    pub idp_clients: Vec<MockIdpClient>,
    pub idp_users: Vec<MockIdpUser>,
    /// GitHub's opt-in expiring user tokens: 8 h access tokens with 6-month
    /// refresh tokens that rotate on every use.
    pub expiring_tokens: bool,
    /// Serve the identity provider on a listener of its own (same host,
    /// another free port) at the bare origin: its issuer is then
    /// `http://<host>:<port>`, with no path, and `/idp` is not served. Needs
    /// [`MockProvider::serve`] (or [`MockProvider::start`]).
    pub idp_at_origin: bool,
    /// A directory for the bare repositories the Git routes serve (Git
    /// over smart HTTP in every flavour, through the real
    /// `git http-backend`); [`MockProvider::create_repo`] creates them
    /// there. `None`: the Git routes answer 404 and no repository can be
    /// created. The mock never deletes anything in it.
    pub git_root: Option<PathBuf>,
    /// GitHub Apps, as [`MockProvider::add_github_app`] registers them
    /// (give `app_id` to install them through `github_installations`). With
    /// a `client_id` among `oauth_apps`, that client's tokens are
    /// `ghu_`/`ghr_` user tokens that always expire, and reach only where
    /// their App's installations say. Panics on a bad public key.
    pub github_apps: Vec<MockGithubApp>,
    /// The installations of those Apps (one book for App installation
    /// tokens and App user tokens).
    pub github_installations: Vec<MockInstallation>,
}

/// A user of the mock GitHub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockGitUser {
    pub login: String,
    pub id: u64,
    pub name: String,
}

/// A registered GitHub OAuth app.
#[derive(Clone)]
pub struct MockOAuthApp {
    pub name: String,
    pub client_id: String,
    pub client_secret: String,
    pub callback_url: String,
}

/// A relying party registered with the mock identity provider.
#[derive(Clone)]
pub struct MockIdpClient {
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uris: Vec<String>,
}

/// A person who can sign in at the mock identity provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockIdpUser {
    pub sub: String,
    pub username: String,
    pub name: String,
    pub email: String,
    pub groups: Vec<String>,
}

impl std::fmt::Debug for MockOAuthApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockOAuthApp")
            .field("name", &self.name)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("callback_url", &self.callback_url)
            .finish()
    }
}

impl std::fmt::Debug for MockIdpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockIdpClient")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("redirect_uris", &self.redirect_uris)
            .finish()
    }
}

/// The group whose members administer gitbroker in the demo.
pub const DEMO_ADMIN_GROUP: &str = "gitbroker-admins";

impl MockConfig {
    /// Users for the demo and for tests: two teams, `acme-devs` and
    /// `globex-devs`, and one administrator. Each person has an identity
    /// (`idp_users`) and a GitHub account of the same name (`github_users`);
    /// `sub` deliberately differs from the username. Apps and clients are left
    /// for the caller, who knows its own callback URLs.
    pub fn demo() -> Self {
        let people: [(&str, u64, &str, &[&str]); 4] = [
            (
                "alice",
                1001,
                "Alice Archer",
                &["acme-devs", DEMO_ADMIN_GROUP],
            ),
            ("bob", 1002, "Bob Baker", &["acme-devs"]),
            ("carol", 1003, "Carol Chen", &["globex-devs"]),
            ("dave", 1004, "Dave Diaz", &["acme-devs", "globex-devs"]),
        ];
        Self {
            github_users: people
                .iter()
                .map(|(login, id, name, _)| MockGitUser {
                    login: (*login).to_owned(),
                    id: *id,
                    name: (*name).to_owned(),
                })
                .collect(),
            idp_users: people
                .iter()
                .map(|(login, id, name, groups)| MockIdpUser {
                    sub: format!("u-{id}"),
                    username: (*login).to_owned(),
                    name: (*name).to_owned(),
                    email: format!("{login}@example.com"),
                    groups: groups.iter().map(|g| (*g).to_owned()).collect(),
                })
                .collect(),
            oauth_apps: Vec::new(),
            idp_clients: Vec::new(),
            expiring_tokens: false,
            idp_at_origin: false,
            git_root: None,
            github_apps: Vec::new(),
            github_installations: Vec::new(),
        }
    }
}

/// The mock itself. Cloning is cheap and every clone sees the same state.
#[derive(Clone)]
pub struct MockProvider {
    shared: Arc<Shared>,
}

/// State shared by every flavour and the identity provider.
pub(crate) struct Shared {
    base_url: RwLock<Option<String>>,
    /// The identity provider's issuer when it has a listener of its own.
    idp_origin: RwLock<Option<String>>,
    idp_at_origin: bool,
    clock: Arc<dyn Clock>,
    github_users: Vec<MockGitUser>,
    oauth_apps: RwLock<Vec<MockOAuthApp>>,
    idp_users: Vec<MockIdpUser>,
    idp_clients: RwLock<Vec<MockIdpClient>>,
    expiring_tokens: bool,
    switches: Switches,
    counters: Counters,
    /// Codes and tokens of the GitHub flavour.
    github: TokenBook,
    /// Narrowed tokens of GitHub App users.
    github_app_users: github_app_user::Realm,
    /// Codes and tokens of the GitLab flavour.
    gitlab: TokenBook,
    /// Codes and OAuth tokens of the Bitbucket Cloud and Data Center flavours.
    bitbucket_cloud: TokenBook,
    bitbucket_dc: TokenBook,
    /// Codes and OAuth tokens of the Gitea flavour.
    gitea: TokenBook,
    /// Codes and access tokens of the identity provider: a separate realm,
    /// so an IdP token never works against the Git API and vice versa.
    idp: TokenBook,
    idp_key: idp::SigningKey,
    /// Personal access tokens of every flavour, created by tests.
    pats: pats::PatBook,
    /// The repositories of the Git routes.
    git: git::GitState,
    /// The window of the `api_rate_limit` switch.
    rate_window: traffic::RateWindow,
    /// GitHub Apps, their installations and installation-token mints.
    github_apps: github_app::AppBook,
}

impl Shared {
    /// The public base URL, without a trailing slash; empty until set.
    fn base_url(&self) -> String {
        read(&self.base_url).clone().unwrap_or_default()
    }

    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    /// A realm's lifetimes with the `access_token_secs` switch applied.
    fn lifetimes(&self, default: book::Lifetimes) -> book::Lifetimes {
        match self.switches.get().access_token_secs {
            Some(secs) => book::Lifetimes {
                access: chrono::Duration::seconds(secs.clamp(0, control::MAX_ACCESS_TOKEN_SECS)),
                ..default
            },
            None => default,
        }
    }

    /// Whether GitHub issues expiring user tokens: the
    /// `github_expiring_tokens` switch, else the configuration.
    fn github_expiring(&self) -> bool {
        self.switches
            .get()
            .github_expiring_tokens
            .unwrap_or(self.expiring_tokens)
    }

    /// `<base>/idp`, or the bare origin of the identity provider's own
    /// listener.
    fn idp_issuer(&self) -> String {
        read(&self.idp_origin)
            .clone()
            .unwrap_or_else(|| format!("{}/idp", self.base_url()))
    }

    fn oauth_app(&self, client_id: &str) -> Option<MockOAuthApp> {
        read(&self.oauth_apps)
            .iter()
            .find(|a| a.client_id == client_id)
            .cloned()
    }

    fn idp_client(&self, client_id: &str) -> Option<MockIdpClient> {
        read(&self.idp_clients)
            .iter()
            .find(|c| c.client_id == client_id)
            .cloned()
    }

    fn github_user(&self, login: &str) -> Option<&MockGitUser> {
        self.github_users.iter().find(|u| u.login == login)
    }

    fn idp_user(&self, username: &str) -> Option<&MockIdpUser> {
        self.idp_users.iter().find(|u| u.username == username)
    }

    /// The OAuth realms of the Git flavours (not the identity provider's).
    fn git_books(&self) -> [&TokenBook; 5] {
        [
            &self.github,
            &self.gitlab,
            &self.bitbucket_cloud,
            &self.bitbucket_dc,
            &self.gitea,
        ]
    }

    /// [`MockProvider::issue_oauth_token`].
    fn issue_oauth(
        &self,
        flavour: Flavour,
        login: &str,
        client_id: &str,
        scopes: Vec<String>,
    ) -> String {
        let (book, lifetimes) = match flavour {
            Flavour::Github => return github::issue_direct(self, login, client_id, scopes),
            Flavour::Gitlab => (&self.gitlab, gitlab::LIFETIMES),
            Flavour::BitbucketCloud => (&self.bitbucket_cloud, bitbucket_cloud::LIFETIMES),
            Flavour::BitbucketDataCenter => (&self.bitbucket_dc, bitbucket_dc::LIFETIMES),
            Flavour::Gitea => (&self.gitea, gitea::LIFETIMES),
        };
        let lifetimes = book::Lifetimes {
            refresh: None,
            ..self.lifetimes(lifetimes)
        };
        book.issue(login, client_id, scopes, self.now(), Some(lifetimes))
            .access_token
    }

    /// [`MockProvider::revoke`].
    fn revoke_oauth(&self, token: &str) -> bool {
        self.git_books().iter().any(|b| b.revoke(token))
    }

    /// [`MockProvider::set_token_scopes`].
    fn set_oauth_scopes(&self, token: &str, scopes: Vec<String>) -> bool {
        self.git_books()
            .iter()
            .any(|b| b.set_scopes(token, scopes.clone()))
    }

    /// [`MockProvider::expire_token`].
    fn expire_oauth(&self, token: &str) -> bool {
        let now = self.now();
        self.git_books().iter().any(|b| b.expire(token, now))
    }

    fn reset(&self) {
        self.switches.reset();
        self.counters.reset();
        self.github.clear();
        self.github_app_users.clear();
        self.gitlab.clear();
        self.bitbucket_cloud.clear();
        self.bitbucket_dc.clear();
        self.gitea.clear();
        self.idp.clear();
        self.pats.clear();
        self.rate_window.clear();
        self.github_apps.clear();
    }
}

impl MockProvider {
    /// A mock on the wall clock. Generates the identity provider's RSA key,
    /// which takes a moment.
    pub fn new(config: MockConfig) -> Self {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// A mock whose code and token lifetimes follow `clock`, so expiry can be
    /// tested without sleeping. ID tokens carry this clock's time too, which
    /// a verifier on the wall clock may reject.
    pub fn with_clock(config: MockConfig, clock: Arc<dyn Clock>) -> Self {
        let MockConfig {
            github_users,
            oauth_apps,
            idp_clients,
            idp_users,
            expiring_tokens,
            idp_at_origin,
            git_root,
            github_apps,
            github_installations,
        } = config;
        let github = TokenBook::new(github::TOKEN_STYLE);
        let mock = Self {
            shared: Arc::new(Shared {
                base_url: RwLock::new(None),
                idp_origin: RwLock::new(None),
                idp_at_origin,
                clock,
                github_users,
                oauth_apps: RwLock::new(oauth_apps),
                idp_users,
                idp_clients: RwLock::new(idp_clients),
                expiring_tokens,
                switches: Switches::default(),
                counters: Counters::default(),
                github,
                github_app_users: github_app_user::Realm::default(),
                gitlab: TokenBook::new(gitlab::TOKEN_STYLE),
                bitbucket_cloud: TokenBook::new(bitbucket_cloud::TOKEN_STYLE),
                bitbucket_dc: TokenBook::new(bitbucket_dc::TOKEN_STYLE),
                gitea: TokenBook::new(gitea::TOKEN_STYLE),
                idp: TokenBook::new(idp::TOKEN_STYLE),
                idp_key: idp::SigningKey::generate(),
                pats: pats::PatBook::default(),
                git: git::GitState::new(git_root),
                rate_window: traffic::RateWindow::default(),
                github_apps: github_app::AppBook::default(),
            }),
        };
        for app in github_apps {
            #[allow(clippy::expect_used)]
            mock.add_github_app(app)
                .expect("MockConfig::github_apps: a bad public key");
        }
        for installation in github_installations {
            mock.add_installation(installation);
        }
        mock
    }

    /// Binds `addr` (port 0 picks a free port) and serves in a tokio task.
    pub async fn start(config: MockConfig, addr: SocketAddr) -> std::io::Result<RunningMock> {
        Self::new(config).serve(addr).await
    }

    /// Like [`MockProvider::start`], for a provider built by the caller. The
    /// base URL becomes `http://<bound address>` unless one was set before.
    pub async fn serve(self, addr: SocketAddr) -> std::io::Result<RunningMock> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        {
            let mut base = write(&self.shared.base_url);
            if base.is_none() {
                *base = Some(format!("http://{}", reachable(local)));
            }
        }
        let idp_listener = if self.shared.idp_at_origin {
            let idp = tokio::net::TcpListener::bind(SocketAddr::new(local.ip(), 0)).await?;
            let origin = format!("http://{}", reachable(idp.local_addr()?));
            *write(&self.shared.idp_origin) = Some(origin);
            Some(idp)
        } else {
            None
        };
        let base_url = self.base_url();
        let (stop, stopped) = oneshot::channel::<()>();
        let app = self.router();
        let idp_app = idp::routes()
            .layer(axum::middleware::from_fn(control::log_request))
            .with_state(self.shared.clone());
        let task = tokio::spawn(async move {
            // one stop signal for both listeners
            let (tx, rx) = tokio::sync::watch::channel(());
            let stopper = async move {
                let _ = stopped.await;
                drop(tx);
            };
            let idp_stop = rx.clone();
            let idp = async move {
                if let Some(listener) = idp_listener {
                    serve_until(listener, idp_app, idp_stop).await;
                }
            };
            tokio::join!(serve_until(listener, app, rx), idp, stopper);
        });
        tracing::info!(%base_url, issuer = %self.shared.idp_issuer(), "mock provider listening");
        Ok(RunningMock {
            base_url,
            provider: self,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// All routes, for callers who serve the mock themselves; they must call
    /// [`MockProvider::set_base_url`] with the URL the router is reachable at.
    pub fn router(&self) -> Router {
        // The API routes of each flavour go through `traffic::layer`: counted
        // per token, in-flight gauge, `api_delay_ms`.
        let api = |routes, flavour| traffic::layer(routes, &self.shared, flavour);
        // Git over smart HTTP (`git`): not API routes
        let router = Router::new()
            .merge(github::routes())
            .merge(github_app_user::web_routes())
            .merge(api(github::api_routes(), Flavour::Github))
            .merge(api(github_app::api_routes(), Flavour::Github))
            .merge(github_app::control_routes())
            .merge(api(github_app_user::api_routes(), Flavour::Github))
            .merge(git::routes(Flavour::Github));
        // with a listener of its own, the identity provider is only there
        let router = if self.shared.idp_at_origin {
            router
        } else {
            router.nest("/idp", idp::routes())
        };
        router
            .nest(
                "/gitlab",
                gitlab::routes()
                    .merge(api(gitlab::api_routes(), Flavour::Gitlab))
                    .merge(git::routes(Flavour::Gitlab)),
            )
            .nest(
                "/bitbucket",
                bitbucket_cloud::routes()
                    .merge(api(bitbucket_cloud::api_routes(), Flavour::BitbucketCloud))
                    .merge(git::routes(Flavour::BitbucketCloud)),
            )
            .nest(
                "/bitbucket-dc",
                bitbucket_dc::routes()
                    .merge(api(
                        bitbucket_dc::api_routes(),
                        Flavour::BitbucketDataCenter,
                    ))
                    .merge(git::routes(Flavour::BitbucketDataCenter)),
            )
            .nest(
                "/gitea",
                gitea::routes()
                    .merge(api(gitea::api_routes(), Flavour::Gitea))
                    .merge(git::routes(Flavour::Gitea)),
            )
            .nest("/__mock", control::routes())
            .fallback(github::not_found)
            .layer(axum::middleware::from_fn(control::log_request))
            .with_state(self.shared.clone())
    }

    /// Sets the public base URL (scheme, host, port, no trailing slash) used
    /// in issuer URLs and links.
    pub fn set_base_url(&self, url: impl Into<String>) {
        let url = url.into();
        *write(&self.shared.base_url) = Some(url.trim_end_matches('/').to_owned());
    }

    /// The public base URL; empty until served or set.
    pub fn base_url(&self) -> String {
        self.shared.base_url()
    }

    /// What gitbroker calls the provider's API URL: `<base>/api/v3`.
    pub fn github_api_url(&self) -> String {
        format!("{}/api/v3", self.base_url())
    }

    /// The identity provider's issuer: `<base>/idp`, or with
    /// [`MockConfig::idp_at_origin`] the bare origin of its own listener.
    pub fn issuer_url(&self) -> String {
        self.shared.idp_issuer()
    }

    pub fn switches(&self) -> &Switches {
        &self.shared.switches
    }

    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// The token-lifecycle and API-traffic counters (also part of
    /// `GET /__mock/stats`).
    pub fn traffic_stats(&self) -> TrafficStats {
        self.shared.counters.traffic()
    }

    /// Clears the counters of [`Stats`] and [`TrafficStats`] only; switches,
    /// codes and tokens stay. Same as `POST /__mock/stats/reset`.
    pub fn reset_counters(&self) {
        self.shared.counters.reset();
    }

    /// How many API requests presented exactly this token (as a bearer
    /// token, `PRIVATE-TOKEN`, Basic password, or named in GitHub's
    /// `POST /applications/{client_id}/token`) since the counters were last
    /// reset; whatever the answer was.
    pub fn api_calls_for(&self, token: &str) -> u64 {
        self.shared.counters.api_calls_for(token)
    }

    /// Returns once `done` holds for the counters, re-checking whenever an
    /// API request starts or ends, a token request has been answered (or
    /// decided, if a hang holds it back), a refresh succeeded, a request
    /// was rate-limited or the counters were reset: a way for a test to
    /// wait for "the refresh reached the mock" or "five API requests are in
    /// flight" without sleeping. It does not time out on its own.
    pub async fn wait_until(&self, done: impl Fn(&Stats, &TrafficStats) -> bool) {
        loop {
            let changed = self.shared.counters.changed();
            if done(&self.stats(), &self.traffic_stats()) {
                return;
            }
            changed.await;
        }
    }

    /// Clears switches, counters, codes and tokens; keeps users, apps and
    /// clients. Same as `POST /__mock/reset`.
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// Registers an OAuth app, replacing any with the same `client_id`.
    pub fn add_oauth_app(&self, app: MockOAuthApp) {
        let mut apps = write(&self.shared.oauth_apps);
        apps.retain(|a| a.client_id != app.client_id);
        apps.push(app);
    }

    /// `owner/name` of the repositories a GitHub App user token reaches
    /// now (narrowed tokens: only those they were narrowed to); empty for
    /// unknown tokens and OAuth app tokens.
    pub fn github_app_token_reach(&self, token: &str) -> Vec<String> {
        let s = &self.shared;
        match s.github.find(token, s.now()) {
            Some(g) if s.github_apps.is_user_app(&g.client_id) => {
                github_app_user::reachable(s, &g.client_id, &g.subject, token)
            }
            _ => Vec::new(),
        }
    }

    /// How many tokens `POST /applications/{client_id}/token/scoped` issued.
    pub fn github_scoped_tokens_issued(&self) -> u64 {
        self.shared.github_app_users.scoped_issued()
    }

    /// Registers an OpenID client, replacing any with the same `client_id`.
    pub fn add_idp_client(&self, client: MockIdpClient) {
        let mut clients = write(&self.shared.idp_clients);
        clients.retain(|c| c.client_id != client.client_id);
        clients.push(client);
    }

    /// A `gho_` token for `login` as if it had authorized `client_id` with
    /// `scopes`. It expires like a token from the flow would; no refresh
    /// token comes with it. `login` should be one of the GitHub users, or
    /// `/user` will refuse the token.
    pub fn issue_token(&self, login: &str, client_id: &str, scopes: &[&str]) -> String {
        let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
        github::issue_direct(&self.shared, login, client_id, scopes)
    }

    /// An OAuth access token of `flavour` for `login`, as if the user had
    /// authorized `client_id` with `scopes` (GitHub: the same as
    /// [`MockProvider::issue_token`]). It expires like a token from that
    /// flavour's flow (with `access_token_secs` applied); no refresh token
    /// comes with it. Same as `POST /__mock/tokens` with `"flavour"`.
    pub fn issue_oauth_token(
        &self,
        flavour: Flavour,
        login: &str,
        client_id: &str,
        scopes: &[&str],
    ) -> String {
        self.shared
            .issue_oauth(flavour, login, client_id, owned(scopes))
    }

    /// Creates a bare repository of `flavour` at `path` under
    /// [`MockConfig::git_root`], with one commit on `main` (dated by the
    /// mock's clock) holding a `README.md`, made by the real `git`. `path`
    /// is `owner/repo` (GitHub), `namespace/…/project` (GitLab),
    /// `workspace/repo` (Bitbucket Cloud) or `PROJECT/repo` / `~user/repo`
    /// (Bitbucket Data Center), with or without `.git`; compared without
    /// case. Same as `POST /__mock/repos`.
    pub async fn create_repo(&self, flavour: Flavour, path: &str) -> Result<MockRepo, RepoError> {
        git::create_repo(&self.shared, flavour, path).await
    }

    /// The URL `git clone` takes for `path` of `flavour` (whether or not
    /// the repository exists): `<base>/owner/repo.git`,
    /// `<base>/gitlab/namespace/project.git`,
    /// `<base>/bitbucket/workspace/repo.git`,
    /// `<base>/bitbucket-dc/scm/PROJECT/repo.git`.
    pub fn clone_url(&self, flavour: Flavour, path: &str) -> String {
        git::clone_url(&self.shared, flavour, path)
    }

    /// [`MockConfig::git_root`].
    pub fn git_root(&self) -> Option<&Path> {
        self.shared.git.root()
    }

    /// Creates a personal access token (or look-alike) as described.
    pub fn create_pat(&self, spec: PatSpec) -> String {
        self.shared.pats.create(spec)
    }

    /// Revokes a personal access token, as its owner would at the provider.
    pub fn revoke_pat(&self, token: &str) -> bool {
        self.shared.pats.revoke(token)
    }

    /// Replaces a personal access token's scopes (or permissions), as its
    /// owner would by editing it; the provider reports the new ones from
    /// now on. Returns whether the token exists. Same as
    /// `POST /__mock/pats/scopes`.
    pub fn set_pat_scopes(&self, token: &str, scopes: &[&str]) -> bool {
        self.shared.pats.set_scopes(token, owned(scopes))
    }

    /// Makes a personal access token expire now (on the mock's clock).
    /// Returns whether it exists. Same as `POST /__mock/pats/expire`.
    pub fn expire_pat(&self, token: &str) -> bool {
        self.shared.pats.expire(token, self.shared.now())
    }

    /// Revokes an OAuth token (access or refresh, with its pair) of any Git
    /// flavour, as a user would on the provider's settings page: silently,
    /// without counting as an API revocation. Returns whether it was live.
    /// Same as `POST /__mock/tokens/revoke`.
    pub fn revoke(&self, token: &str) -> bool {
        self.shared.revoke_oauth(token)
    }

    /// Replaces the scopes of an issued OAuth token of any Git flavour (an
    /// access token, or the access token of a refresh token), as if the
    /// user had narrowed the grant: the identity and token-info endpoints
    /// report the new scopes, and refreshes carry them on. Returns whether
    /// the token exists. Same as `POST /__mock/tokens/scopes`.
    pub fn set_token_scopes(&self, token: &str, scopes: &[&str]) -> bool {
        self.shared.set_oauth_scopes(token, owned(scopes))
    }

    /// Makes an issued OAuth token of any Git flavour expire now (on the
    /// mock's clock): an access token stops working while its refresh token
    /// still works; a refresh token can no longer be used. Returns whether
    /// the token exists. Same as `POST /__mock/tokens/expire`.
    pub fn expire_token(&self, token: &str) -> bool {
        self.shared.expire_oauth(token)
    }
}

impl std::fmt::Debug for MockProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockProvider")
            .field("base_url", &self.base_url())
            .finish_non_exhaustive()
    }
}

/// A served mock. Dropping it stops the listener; requests in flight finish.
pub struct RunningMock {
    /// `http://127.0.0.1:<port>` (or whatever base URL was set beforehand).
    pub base_url: String,
    pub provider: MockProvider,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl RunningMock {
    pub fn github_api_url(&self) -> String {
        self.provider.github_api_url()
    }

    pub fn issuer_url(&self) -> String {
        self.provider.issuer_url()
    }

    /// Stops accepting connections and waits until open ones are done.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningMock {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl std::fmt::Debug for RunningMock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningMock")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

fn owned(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// Serves `app` until `stop`'s sender is dropped, then lets open requests finish.
async fn serve_until(
    listener: tokio::net::TcpListener,
    app: Router,
    mut stop: tokio::sync::watch::Receiver<()>,
) {
    let shutdown = async move {
        let _ = stop.changed().await;
    };
    // the peer address is `git http-backend`'s REMOTE_ADDR
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    if let Err(err) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(%err, "mock provider stopped");
    }
}

/// A wildcard bind address is not something a browser can be sent to.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

// A panic while holding one of these locks cannot leave the mock's maps
// half-written in a way that matters to a test double, so poison is ignored.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}
