//! A whole gitbroker on a loopback port, with the mock provider and mock
//! identity provider on another, on either store backend; and a small
//! browser-like client that follows our own forms.

use super::RedisServer;
use gitbroker::clock::SystemClock;
use gitbroker::config::Settings;
use gitbroker::mock::{MockConfig, MockIdpClient, MockOAuthApp, MockProvider, RunningMock};
use std::sync::Arc;

pub const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
pub const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef0123456789";
pub const OIDC_SECRET: &str = "oidc-client-secret-for-tests";
pub const APP_SECRET: &str = "github-app-client-secret-for-tests";
pub const GITLAB_APP_SECRET: &str = "gitlab-app-client-secret-for-tests";

/// Credentials of the runtimes the harness configures.
pub fn credential(runtime: &str) -> String {
    format!("test-credential-of-{runtime}-0123456789abcdef")
}

#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Embedded,
    Redis,
}

pub struct Harness {
    pub url: String,
    pub mock: RunningMock,
    pub state: gitbroker::AppState,
    pub store: Arc<dyn gitbroker::store::Store>,
    pub redis: Option<RedisServer>,
    _dir: tempfile::TempDir,
    _git_dir: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
    toml: String,
    /// The broker's clock, shared by its replicas.
    pub clock: Arc<dyn gitbroker::clock::Clock>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.server.abort();
    }
}

pub struct Options {
    /// The broker's clock (the wall clock when `None`).
    pub clock: Option<Arc<dyn gitbroker::clock::Clock>>,
    pub provider_timeout_secs: u64,
    pub redis_args: Vec<&'static str>,
    pub token_lifetime_secs: Option<u64>,
    pub expiring_tokens: bool,
    /// The mock serves Git over smart HTTP from a temporary directory
    /// (`MockProvider::create_repo`).
    pub git: bool,
    /// Extra keys of `[lifecycle]`; background work is off unless a test
    /// turns it on (`background = true`), so tests drive it themselves.
    pub lifecycle: String,
    /// The mock identity provider at a bare origin (issuer
    /// `http://127.0.0.1:PORT`, no path) instead of `<mock>/idp`.
    pub idp_at_origin: bool,
    /// More TOML for the broker's configuration (e.g. `[server]`,
    /// `[rate_limit]` tables), appended at the end.
    pub extra_toml: String,
    /// The `[store]` keys to use instead of the backend's own store (e.g. a
    /// Sentinel group or a Cluster the test started); no redis-server is
    /// started then.
    pub store_toml: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            clock: None,
            provider_timeout_secs: 3,
            redis_args: Vec::new(),
            token_lifetime_secs: None,
            expiring_tokens: false,
            lifecycle: String::new(),
            git: false,
            idp_at_origin: false,
            extra_toml: String::new(),
            store_toml: None,
        }
    }
}

impl Harness {
    pub async fn start(backend: Backend) -> Harness {
        Self::start_with(backend, Options::default()).await
    }

    pub async fn start_with(backend: Backend, opts: Options) -> Harness {
        let mut mock_config = MockConfig::demo();
        mock_config.expiring_tokens = opts.expiring_tokens;
        mock_config.idp_at_origin = opts.idp_at_origin;
        let git_dir = tempfile::tempdir().unwrap();
        if opts.git {
            mock_config.git_root = Some(git_dir.path().to_owned());
        }
        let mock = MockProvider::start(mock_config, "127.0.0.1:0".parse().unwrap())
            .await
            .expect("mock provider starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let dir = tempfile::tempdir().unwrap();
        let redis = match backend {
            Backend::Redis if opts.store_toml.is_none() => {
                Some(RedisServer::start_with_args(&opts.redis_args))
            }
            _ => None,
        };
        let store_toml = match (&redis, &opts.store_toml) {
            (_, Some(toml)) => toml.clone(),
            (Some(r), None) => format!("backend = \"redis\"\nredis_url = \"{}\"", r.url()),
            (None, None) => format!(
                "backend = \"embedded\"\npath = \"{}\"",
                dir.path().join("store.redb").display()
            ),
        };
        let lifetime = opts
            .token_lifetime_secs
            .map(|s| format!("token_lifetime_secs = {s}"))
            .unwrap_or_default();
        let mock_url = mock.base_url.trim_end_matches('/').to_owned();
        // exactly as the mock publishes it: `<mock>/idp` or a bare origin
        let issuer = mock.issuer_url();
        let toml = format!(
            r#"
public_url = "{url}"
secure_cookies = false
allow_insecure_http = true
[log]
format = "pretty"
[provider]
timeout_secs = {timeout}
connect_timeout_secs = 2
[store]
{store_toml}
[lifecycle]
{lifecycle}
[encryption]
keys = [{{ id = "k1", key = "{KEY}" }}]
[oidc]
issuer = "{issuer}"
client_id = "gitbroker-tests"
client_secret = "{OIDC_SECRET}"
[admin]
group = "gitbroker-admins"
api_token = "{ADMIN_TOKEN}"
[[accounts]]
id = "acme"
name = "Acme"
groups = ["acme-devs"]
[[accounts]]
id = "globex"
name = "Globex"
groups = ["globex-devs"]
[[oauth_apps]]
id = "github-app"
name = "gitbroker tests"
provider = "github"
base_url = "{mock_url}"
client_id = "test-client-id"
client_secret = "{APP_SECRET}"
scopes = ["repo"]
{lifetime}
[[oauth_apps]]
id = "gitlab-app"
name = "gitbroker tests on GitLab"
provider = "gitlab"
base_url = "{mock_url}/gitlab"
client_id = "gitlab-test-client-id"
client_secret = "{GITLAB_APP_SECRET}"
scopes = ["write_repository", "read_api"]
[[runtimes]]
id = "acme-prod"
account = "acme"
git_host = "github.com"
oauth_app = "github-app"
credential = "{c1}"
[[runtimes]]
id = "acme-staging"
account = "acme"
git_host = "github.com"
oauth_app = "github-app"
credential = "{c2}"
[[runtimes]]
id = "globex-prod"
account = "globex"
git_host = "github.com"
oauth_app = "github-app"
credential = "{c3}"
[[runtimes]]
id = "gitlab-rt"
account = "acme"
git_host = "gitlab.com"
oauth_app = "gitlab-app"
credential = "{c4}"
"#,
            timeout = opts.provider_timeout_secs,
            lifecycle = if opts.lifecycle.contains("background") {
                opts.lifecycle.clone()
            } else {
                format!("background = false\n{}", opts.lifecycle)
            },
            c1 = credential("acme-prod"),
            c2 = credential("acme-staging"),
            c3 = credential("globex-prod"),
            c4 = credential("gitlab-rt"),
        );
        // Bitbucket Cloud and Data Center: one OAuth app and one runtime each.
        let toml = format!(
            r#"{toml}
[[oauth_apps]]
id = "bbc-app"
name = "gitbroker tests (Bitbucket Cloud)"
provider = "bitbucket_cloud"
base_url = "{mock_url}/bitbucket"
client_id = "bbc-client-id"
client_secret = "{APP_SECRET}"
scopes = ["account", "team", "repository:write"]
[[oauth_apps]]
id = "bbdc-app"
name = "gitbroker tests (Bitbucket Data Center)"
provider = "bitbucket_data_center"
base_url = "{mock_url}/bitbucket-dc"
client_id = "bbdc-client-id"
client_secret = "{APP_SECRET}"
scopes = ["REPO_WRITE"]
[[runtimes]]
id = "bbc-rt"
account = "acme"
git_host = "bitbucket.org"
oauth_app = "bbc-app"
credential = "{bbc}"
[[runtimes]]
id = "bbdc-rt"
account = "acme"
git_host = "bitbucket.example.com"
oauth_app = "bbdc-app"
credential = "{bbdc}"
"#,
            bbc = credential("bbc-rt"),
            bbdc = credential("bbdc-rt"),
        );
        // GitHub Enterprise Server and GitLab self-managed: the same mock
        // flavours, configured as the self-hosted kinds.
        let toml = format!(
            r#"{toml}
[[oauth_apps]]
id = "ghes-app"
name = "gitbroker tests (GHES)"
provider = "github_enterprise"
base_url = "{mock_url}"
client_id = "ghes-client-id"
client_secret = "{APP_SECRET}"
scopes = ["repo"]
[[oauth_apps]]
id = "glsm-app"
name = "gitbroker tests (GitLab self-managed)"
provider = "gitlab_self_managed"
base_url = "{mock_url}/gitlab"
client_id = "glsm-client-id"
client_secret = "{APP_SECRET}"
scopes = ["write_repository", "read_api"]
[[runtimes]]
id = "ghes-rt"
account = "acme"
git_host = "github.example.com"
oauth_app = "ghes-app"
credential = "{ghes}"
[[runtimes]]
id = "glsm-rt"
account = "acme"
git_host = "gitlab.example.com"
oauth_app = "glsm-app"
credential = "{glsm}"
"#,
            ghes = credential("ghes-rt"),
            glsm = credential("glsm-rt"),
        );
        // Gitea (and Forgejo): one OAuth app and one runtime.
        let toml = format!(
            r#"{toml}
[[oauth_apps]]
id = "gitea-app"
name = "gitbroker tests (Gitea)"
provider = "gitea"
base_url = "{mock_url}/gitea"
client_id = "gitea-client-id"
client_secret = "{APP_SECRET}"
scopes = ["write:repository", "read:user"]
[[runtimes]]
id = "gitea-rt"
account = "acme"
git_host = "gitea.example.com"
oauth_app = "gitea-app"
credential = "{gitea}"
"#,
            gitea = credential("gitea-rt"),
        );
        // The suites drive one user through far more token checks and flow
        // starts a minute than a person would; tests/hardening.rs tests the
        // limits with a `[rate_limit]` table of its own.
        let limits = if opts.extra_toml.contains("[rate_limit]") {
            ""
        } else {
            "[rate_limit]\nflow_start_per_user = 0\ntoken_check_per_user = 0\n"
        };
        let toml = format!("{toml}\n{}\n{limits}", opts.extra_toml);
        for (id, client_id) in [
            ("bbc-app", "bbc-client-id"),
            ("bbdc-app", "bbdc-client-id"),
            ("ghes-app", "ghes-client-id"),
            ("glsm-app", "glsm-client-id"),
            ("gitea-app", "gitea-client-id"),
        ] {
            mock.provider.add_oauth_app(MockOAuthApp {
                name: format!("gitbroker tests ({id})"),
                client_id: client_id.into(),
                client_secret: APP_SECRET.into(),
                callback_url: format!("{url}/oauth/callback/{id}"),
            });
        }
        let settings = Settings::from_toml_str(&toml).expect("test configuration is valid");
        let settings_server = settings.server.clone();
        mock.provider.add_oauth_app(MockOAuthApp {
            name: "gitbroker tests".into(),
            client_id: "test-client-id".into(),
            client_secret: APP_SECRET.into(),
            callback_url: format!("{url}/oauth/callback/github-app"),
        });
        mock.provider.add_oauth_app(MockOAuthApp {
            name: "gitbroker tests on GitLab".into(),
            client_id: "gitlab-test-client-id".into(),
            client_secret: GITLAB_APP_SECRET.into(),
            callback_url: format!("{url}/oauth/callback/gitlab-app"),
        });
        mock.provider.add_idp_client(MockIdpClient {
            client_id: "gitbroker-tests".into(),
            client_secret: OIDC_SECRET.into(),
            redirect_uris: vec![format!("{url}/auth/callback")],
        });
        let clock: Arc<dyn gitbroker::clock::Clock> =
            opts.clock.clone().unwrap_or_else(|| Arc::new(SystemClock));
        let store = gitbroker::app::open_store(&settings, clock.clone())
            .await
            .expect("store opens");
        let state = gitbroker::app::build(settings, store.clone(), clock.clone())
            .await
            .expect("broker builds");
        let app = gitbroker::router(state.clone());
        let server = serve_in_background(listener, app, &settings_server);
        Harness {
            url,
            mock,
            state,
            store,
            redis,
            _dir: dir,
            _git_dir: git_dir,
            server,
            toml,
            clock,
        }
    }

    /// A second broker on the same store and configuration, as after a
    /// restart or on another replica.
    pub async fn another_replica(&self) -> gitbroker::AppState {
        self.replica_with(|t| t).await
    }

    /// A broker on the same store with a changed configuration, served on
    /// its own loopback port; returns its state and URL.
    pub async fn serve_replica(
        &self,
        change: impl FnOnce(String) -> String,
    ) -> (gitbroker::AppState, String) {
        let state = self.replica_with(change).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let app = gitbroker::router(state.clone());
        let settings = Settings::from_toml_str(&self.toml).unwrap();
        drop(serve_in_background(listener, app, &settings.server));
        (state, url)
    }

    pub async fn replica_with(&self, change: impl FnOnce(String) -> String) -> gitbroker::AppState {
        let settings = Settings::from_toml_str(&change(self.toml.clone())).unwrap();
        gitbroker::app::build(settings, self.store.clone(), self.clock.clone())
            .await
            .unwrap()
    }

    /// The broker's configuration file text (secrets inline), for tests
    /// that run the binary against the same store.
    pub fn config_toml(&self) -> &str {
        &self.toml
    }

    pub fn admin_request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .request(method, format!("{}/api/v1/admin{path}", self.url))
            .bearer_auth(ADMIN_TOKEN)
    }

    /// A fresh browser with no cookies.
    pub fn browser(&self) -> Browser {
        Browser::new(&self.url)
    }

    /// A browser signed in as the mock IdP user `username`.
    pub async fn signed_in(&self, username: &str) -> Browser {
        let b = self.browser();
        b.sign_in(username).await;
        b
    }

    /// A GitHub classic PAT at the mock owned by `owner` with `scopes`.
    pub fn github_pat(&self, owner: &str, scopes: &[&str]) -> String {
        self.pat(owner, "classic", scopes, None)
    }

    pub fn pat(
        &self,
        owner: &str,
        kind: &str,
        scopes: &[&str],
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> String {
        self.mock.provider.create_pat(gitbroker::mock::PatSpec {
            flavour: gitbroker::mock::Flavour::Github,
            owner: owner.into(),
            kind: kind.into(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            expires_at,
            repositories: Vec::new(),
            email: None,
        })
    }

    /// A signed-in user of account `acme` (group `acme-devs`) with id `sub`,
    /// without a browser: for tests that need many users.
    pub fn acme_user(sub: &str) -> gitbroker::auth::SessionUser {
        gitbroker::auth::SessionUser {
            sub: sub.to_owned(),
            iss: "test".into(),
            name: sub.to_owned(),
            email: None,
            groups: vec!["acme-devs".into()],
        }
    }

    /// Assigns a pasted token to `runtime` for the acme user `sub`, through
    /// the lifecycle (validated at the mock like any pasted token).
    pub async fn assign_pat_as(
        &self,
        sub: &str,
        runtime: &str,
        token: &str,
    ) -> gitbroker::tokens::Assigned {
        self.state
            .lifecycle
            .assign_pat(
                &Self::acme_user(sub),
                runtime,
                &[],
                gitbroker::providers::PatInput::new(token, None, None),
            )
            .await
            .unwrap()
    }

    /// Stores an OAuth token minted at the mock GitHub (`github-app`) for the
    /// acme user `sub` on `runtime`, through the lifecycle as the flow's
    /// callback would.
    pub async fn assign_oauth_as(&self, sub: &str, runtime: &str, token: &str) {
        assign_oauth_with(&self.state, sub, runtime, token).await;
    }

    /// GET the runtime API as `runtime` for `user`.
    pub async fn runtime_get(
        &self,
        as_runtime: &str,
        runtime: &str,
        user: &str,
    ) -> reqwest::Response {
        self.runtime_get_with(&credential(as_runtime), runtime, user)
            .await
    }

    /// GET a user token with an explicit runtime credential.
    pub async fn runtime_get_with(
        &self,
        credential: &str,
        runtime: &str,
        user: &str,
    ) -> reqwest::Response {
        reqwest::Client::new()
            .get(format!(
                "{}/api/v1/runtimes/{runtime}/users/{user}/token",
                self.url
            ))
            .bearer_auth(credential)
            .send()
            .await
            .unwrap()
    }
}

/// Serves as the binary does (`gitbroker::web::serve`), until aborted.
pub fn serve_in_background(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    settings: &gitbroker::config::ServerSettings,
) -> tokio::task::JoinHandle<()> {
    let settings = settings.clone();
    tokio::spawn(async move {
        let _ = gitbroker::web::serve(listener, app, &settings, std::future::pending()).await;
    })
}

/// [`Harness::assign_oauth_as`] for tasks that cannot borrow the harness.
pub async fn assign_oauth_with(state: &gitbroker::AppState, sub: &str, runtime: &str, token: &str) {
    let app = state.registry.app("github-app").await.unwrap().unwrap();
    let rt = state.registry.runtime(runtime).await.unwrap().unwrap();
    state
        .lifecycle
        .assign_oauth(
            &Harness::acme_user(sub),
            runtime,
            &rt.incarnation,
            &app,
            gitbroker::tokens::OAuthTokens {
                issued: gitbroker::providers::token_endpoint::IssuedTokens {
                    access_token: secrecy::SecretString::from(token.to_owned()),
                    refresh_token: None,
                    scopes: None,
                    expires_at: None,
                },
                scopes: vec!["repo".into()],
                login: "alice".into(),
            },
        )
        .await
        .unwrap();
}

/// A cookie-keeping HTTP client that follows no redirects by itself.
pub struct Browser {
    pub client: reqwest::Client,
    pub jar: std::sync::Arc<reqwest::cookie::Jar>,
    pub base: String,
}

pub struct Page {
    pub status: u16,
    pub url: String,
    pub location: Option<String>,
    pub body: String,
}

impl Page {
    /// The CSRF token of this page's forms.
    pub fn csrf(&self) -> String {
        let marker = "name=\"csrf\" value=\"";
        let i = self
            .body
            .find(marker)
            .unwrap_or_else(|| panic!("no CSRF field on {}:\n{}", self.url, self.body))
            + marker.len();
        self.body[i..i + self.body[i..].find('"').unwrap()].to_owned()
    }

    /// The one-time message (`#flash`), with the template's escaping undone.
    pub fn flash(&self) -> String {
        let Some(i) = self.body.find("id=\"flash\"") else {
            panic!(
                "no flash message on {} ({}):\n{}",
                self.url, self.status, self.body
            )
        };
        let start = i + self.body[i..].find('>').unwrap() + 1;
        let end = start + self.body[start..].find("</div>").unwrap();
        self.body[start..end]
            .replace("&#62;", ">")
            .replace("&#60;", "<")
            .replace("&#39;", "'")
            .replace("&#34;", "\"")
            .replace("&amp;", "&")
    }
}

impl Browser {
    pub fn new(base: &str) -> Browser {
        Self::with_headers(base, reqwest::header::HeaderMap::new())
    }

    /// A browser that sends `X-Forwarded-For: client` on every request, as
    /// a reverse proxy in front of the broker would for that client.
    pub fn behind_proxy(base: &str, client: &str) -> Browser {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("x-forwarded-for", client.parse().unwrap());
        Self::with_headers(base, headers)
    }

    fn with_headers(base: &str, headers: reqwest::header::HeaderMap) -> Browser {
        let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
        Browser {
            jar: jar.clone(),
            client: reqwest::Client::builder()
                .cookie_provider(jar)
                .default_headers(headers)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: base.to_owned(),
        }
    }

    fn abs(&self, url: &str) -> String {
        if url.starts_with("http") {
            url.to_owned()
        } else {
            format!("{}{}", self.base, url)
        }
    }

    pub async fn get(&self, url: &str) -> Page {
        let url = self.abs(url);
        let r = self.client.get(&url).send().await.unwrap();
        Self::page(url, r).await
    }

    pub async fn post(&self, url: &str, form: &[(String, String)]) -> Page {
        let url = self.abs(url);
        let r = self.client.post(&url).form(form).send().await.unwrap();
        Self::page(url, r).await
    }

    async fn page(url: String, r: reqwest::Response) -> Page {
        let status = r.status().as_u16();
        let location = r
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = r.text().await.unwrap();
        Page {
            status,
            url,
            location,
            body,
        }
    }

    /// Follows redirects from `page` until a non-redirect answer; resolves
    /// relative locations against the URL that gave them.
    pub async fn follow(&self, mut page: Page) -> Page {
        for _ in 0..10 {
            let Some(loc) = page.location.clone() else {
                return page;
            };
            if !(300..400).contains(&page.status) {
                return page;
            }
            let next = url::Url::parse(&page.url).unwrap().join(&loc).unwrap();
            page = self.get(next.as_str()).await;
        }
        panic!("redirect loop");
    }

    /// Submits the form of `page` that contains the element `id="{button_id}"`,
    /// with its hidden inputs, selects' first options and that button's name/value.
    pub async fn submit(&self, page: &Page, button_id: &str) -> Page {
        let (action, fields) = find_form(&page.body, button_id)
            .unwrap_or_else(|| panic!("no form with #{button_id} on {}:\n{}", page.url, page.body));
        let action = url::Url::parse(&page.url).unwrap().join(&action).unwrap();
        self.post(action.as_str(), &fields).await
    }

    /// Submits the form with `action` (e.g. "/tokens/acme-prod/authorize").
    pub async fn submit_action(&self, page: &Page, action: &str) -> Page {
        let fields = find_form_by_action(&page.body, action)
            .unwrap_or_else(|| panic!("no form to {action} on {}:\n{}", page.url, page.body));
        self.post(action, &fields).await
    }

    pub async fn sign_in(&self, username: &str) {
        let idp = self.follow(self.get("/login").await).await;
        assert_eq!(idp.status, 200, "IdP sign-in page: {}", idp.body);
        let back = self.submit(&idp, &format!("signin-{username}")).await;
        let page = self.follow(back).await;
        assert_eq!(page.status, 200, "after sign-in: {}", page.body);
        assert!(
            page.body.contains("Git Personal Access Token"),
            "{}",
            page.body
        );
    }

    /// Clicks "Authorize Access" for `runtime`; returns the provider's page
    /// (or whatever the broker answered instead).
    pub async fn start_authorize(&self, runtime: &str) -> Page {
        let tokens = self.get("/tokens").await;
        let started = self
            .submit_action(&tokens, &format!("/tokens/{runtime}/authorize"))
            .await;
        self.follow(started).await
    }

    /// Authorizes `runtime` at the mock provider with `button` ("approve" or
    /// "deny"); returns the redirect from the provider to the broker callback
    /// (not followed).
    pub async fn provider_decision(&self, provider_page: &Page, button: &str) -> Page {
        assert_eq!(
            provider_page.status, 200,
            "provider page: {}",
            provider_page.body
        );
        self.submit(provider_page, button).await
    }

    /// The whole flow: authorize, approve, land on the token page.
    pub async fn authorize(&self, runtime: &str) -> Page {
        let provider = self.start_authorize(runtime).await;
        let back = self.provider_decision(&provider, "approve").await;
        self.follow(back).await
    }
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let pat = format!(" {name}=\"");
    let start = tag.find(&pat)? + pat.len();
    let end = tag[start..].find('"')? + start;
    Some(html_unescape(&tag[start..end]))
}

fn html_unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#x2f;", "/")
        .replace("&#47;", "/")
        .replace("&amp;", "&")
}

fn forms(html: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find("<form") {
        let after = &rest[start..];
        let tag_end = after.find('>').unwrap_or(after.len());
        let tag = after[..tag_end].to_owned();
        let end = after.find("</form>").unwrap_or(after.len());
        out.push((tag, after[..end].to_owned()));
        rest = &after[end.min(after.len())..];
        if end == after.len() {
            break;
        }
        rest = &rest[7..];
    }
    out
}

fn tags<'a>(body: &'a str, name: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let open = format!("<{name}");
    let mut rest = body;
    while let Some(i) = rest.find(&open) {
        let t = &rest[i..];
        let end = t.find('>').unwrap_or(t.len());
        out.push(&t[..end]);
        rest = &t[end..];
    }
    out
}

fn fields_of(body: &str, button: Option<&str>) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    for input in tags(body, "input") {
        let kind = attr(input, "type").unwrap_or_default();
        if kind == "submit" {
            continue;
        }
        if let Some(name) = attr(input, "name") {
            fields.push((name, attr(input, "value").unwrap_or_default()));
        }
    }
    for select in tags(body, "select") {
        if let Some(name) = attr(select, "name") {
            let after = &body[body.find(select).unwrap()..];
            if let Some(opt) = tags(after, "option").first() {
                fields.push((name, attr(opt, "value").unwrap_or_default()));
            }
        }
    }
    if let Some(id) = button {
        for b in tags(body, "button").into_iter().chain(tags(body, "input")) {
            if attr(b, "id").as_deref() == Some(id)
                && let Some(name) = attr(b, "name")
            {
                fields.push((name, attr(b, "value").unwrap_or_default()));
            }
        }
    }
    fields
}

fn find_form(html: &str, button_id: &str) -> Option<(String, Vec<(String, String)>)> {
    let needle = format!("id=\"{button_id}\"");
    forms(html)
        .into_iter()
        .find(|(_, body)| body.contains(&needle))
        .map(|(tag, body)| {
            (
                attr(&tag, "action").unwrap_or_default(),
                fields_of(&body, Some(button_id)),
            )
        })
}

fn find_form_by_action(html: &str, action: &str) -> Option<Vec<(String, String)>> {
    forms(html)
        .into_iter()
        .find(|(tag, _)| attr(tag, "action").as_deref() == Some(action))
        .map(|(_, body)| fields_of(&body, None))
}

/// The value of `name=value` in a URL's query.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

impl Browser {
    /// The cookies this browser would send to `url`, as (name, value).
    pub fn cookies(&self, url: &str) -> Vec<(String, String)> {
        use reqwest::cookie::CookieStore;
        let Some(header) = self.jar.cookies(&url::Url::parse(url).unwrap()) else {
            return Vec::new();
        };
        header
            .to_str()
            .unwrap()
            .split("; ")
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }
}
