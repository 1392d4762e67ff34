//! End to end through a real browser: headless Chromium, driven over
//! WebDriver by `chromedriver`, against the whole broker and the mock GitHub
//! provider and identity provider on loopback ports.
//!
//! Needs `chromium` and `chromedriver` (Debian packages `chromium` and
//! `chromium-driver`; `scripts/test.sh` installs them). `$CHROMIUM` and
//! `$CHROMEDRIVER` override the binaries' paths. A missing browser fails the
//! test with a message saying so; it is never skipped.
#![allow(
    clippy::disallowed_methods,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code
)]

mod support;

use fantoccini::{Client, ClientBuilder, Locator};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

const ALICE: &str = "u-1001";
/// How long to wait for a page or an element; generous for a loaded 2-core CI box.
const WAIT: Duration = Duration::from_secs(30);
const DRIVER_READY_TIMEOUT: Duration = Duration::from_secs(20);
const DRIVER_PORT_ATTEMPTS: usize = 5;
const INSTALL_HINT: &str = "install the Debian packages `chromium` and `chromium-driver` \
     (apt-get install chromium chromium-driver; scripts/test.sh does this), \
     or point $CHROMIUM / $CHROMEDRIVER at the binaries";

/// Where screenshots and driver logs go: `target/browser-test/`.
fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("browser-test");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// A `chromedriver` child process on a free loopback port, killed on drop.
struct ChromeDriver {
    child: Child,
    url: String,
}

impl ChromeDriver {
    async fn start(log_name: &str) -> ChromeDriver {
        let bin = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".to_owned());
        let log = artifacts_dir().join(format!("chromedriver-{log_name}.log"));
        let mut last_err = String::new();
        for _ in 0..DRIVER_PORT_ATTEMPTS {
            let port = free_port();
            let mut child = Command::new(&bin)
                .arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run `{bin}` ({e}): {INSTALL_HINT}"));
            match wait_ready(&mut child, port).await {
                Ok(()) => {
                    return ChromeDriver {
                        child,
                        url: format!("http://127.0.0.1:{port}"),
                    };
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_err = e;
                }
            }
        }
        panic!(
            "chromedriver did not start after {DRIVER_PORT_ATTEMPTS} attempts: {last_err} \
             (log: {})",
            log.display()
        );
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a probe socket on loopback");
    listener.local_addr().expect("probe socket address").port()
}

/// Waits until the chromedriver we started (not some other process on that
/// port: ours would have exited) answers `/status` with `ready: true`.
async fn wait_ready(child: &mut Child, port: u16) -> Result<(), String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let status_url = format!("http://127.0.0.1:{port}/status");
    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("chromedriver on port {port} exited: {status}"));
        }
        if let Ok(r) = http.get(&status_url).send().await
            && let Ok(body) = r.json::<serde_json::Value>().await
            && body["value"]["ready"] == true
        {
            // The port might still be someone else's; ours would exit soon.
            tokio::time::sleep(Duration::from_millis(50)).await;
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("chromedriver on port {port} exited: {status}"));
            }
            return Ok(());
        }
        if started.elapsed() > DRIVER_READY_TIMEOUT {
            return Err(format!(
                "chromedriver on port {port} not ready within {DRIVER_READY_TIMEOUT:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A headless Chromium session with a fresh profile; the driver and the
/// profile directory live as long as it.
struct Browser {
    client: Client,
    _driver: ChromeDriver,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start(name: &str) -> Browser {
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
        assert!(
            Path::new(&chromium).exists(),
            "no Chromium at {chromium}: {INSTALL_HINT}"
        );
        let driver = ChromeDriver::start(name).await;
        let profile = tempfile::tempdir().expect("tempdir for the Chromium profile");
        let options = serde_json::json!({
            "binary": chromium,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                // Without these, Chromium's own connections to the outside
                // are refused here and slow everything down.
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1280,900",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        });
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".to_owned(), options);
        // The process may have both ring and aws-lc-rs compiled in (fantoccini's
        // hyper-rustls enables the latter); rustls then needs one picked. The
        // driver is plain HTTP, so this only keeps the builder from panicking.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = ClientBuilder::rustls()
            .expect("rustls connector for the WebDriver client (needs ca-certificates)")
            .capabilities(caps)
            .connect(&driver.url)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "no Chromium session from chromedriver at {} ({e}); is {chromium} a \
                     Chromium matching chromedriver's version? {INSTALL_HINT}",
                    driver.url
                )
            });
        Browser {
            client,
            _driver: driver,
            _profile: profile,
        }
    }

    /// Runs `scenario` with this browser and always ends the session
    /// (closing Chromium) before reporting the scenario's outcome.
    async fn run<F, Fut>(self, scenario: F)
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let outcome = tokio::spawn(scenario(self.client.clone())).await;
        let _ = self.client.close().await;
        drop(self._driver);
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

async fn wait_for(c: &Client, what: &str, locator: Locator<'_>) -> fantoccini::elements::Element {
    match c.wait().at_most(WAIT).for_element(locator).await {
        Ok(e) => e,
        Err(e) => {
            let url = c
                .current_url()
                .await
                .map(|u| u.to_string())
                .unwrap_or_default();
            let source = c.source().await.unwrap_or_default();
            panic!("waiting for {what} ({locator:?}): {e}\nat {url}:\n{source}");
        }
    }
}

async fn text(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .text()
        .await
        .unwrap()
}

/// Opens the token page and signs in as alice at the mock IdP.
async fn sign_in_as_alice(c: &Client, h_url: &str, idp_url: &str) {
    c.goto(&format!("{h_url}/tokens")).await.unwrap();
    let alice = wait_for(c, "the IdP sign-in page", Locator::Id("signin-alice")).await;
    let at = c.current_url().await.unwrap();
    assert!(
        at.as_str().starts_with(idp_url),
        "expected the IdP at {idp_url}, at {at}"
    );
    alice.click().await.unwrap();
    wait_for(c, "the token page", Locator::Css("tr#runtime-acme-prod")).await;
    assert_eq!(text(c, "h1").await, "Git Personal Access Token");
    assert!(
        c.current_url()
            .await
            .unwrap()
            .as_str()
            .starts_with(&format!("{h_url}/tokens")),
    );
    assert_eq!(
        text(c, "tr#runtime-acme-prod .token-cell").await,
        "No token assigned"
    );
}

/// Clicks "Authorize Access to GitHub" for acme-prod; returns on the mock's
/// consent page.
async fn start_authorize(c: &Client, mock_url: &str) {
    let button = c
        .find(Locator::Css("tr#runtime-acme-prod button.authorize"))
        .await
        .unwrap();
    assert_eq!(button.text().await.unwrap(), "Authorize Access to GitHub");
    button.click().await.unwrap();
    wait_for(c, "the provider's consent page", Locator::Id("approve")).await;
    let at = c.current_url().await.unwrap();
    assert!(
        at.as_str().starts_with(mock_url),
        "expected the provider at {mock_url}, at {at}"
    );
    assert!(text(c, "#scopes").await.contains("repo"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorize_and_delete_in_a_real_browser() {
    let h = std::sync::Arc::new(Harness::start(Backend::Embedded).await);
    let browser = Browser::start("authorize-and-delete").await;
    let hh = h.clone();
    browser
        .run(move |c| async move {
            let h = hh;
            let mock_url = h.mock.base_url.trim_end_matches('/').to_owned();
            sign_in_as_alice(&c, &h.url, &mock_url).await;
            has_no_token(&h).await;

            start_authorize(&c, &mock_url).await;
            c.find(Locator::Id("approve"))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();

            // Back on the token page, with the token.
            wait_for(
                &c,
                "the token page with acme-prod's token",
                Locator::Css("tr#runtime-acme-prod dl.token"),
            )
            .await;
            let flash = text(&c, "#flash").await;
            assert!(
                flash.contains("Access to GitHub authorized as alice for runtime acme-prod"),
                "flash: {flash}"
            );
            assert_eq!(text(&c, "tr#runtime-acme-prod dd.login").await, "alice");
            assert_eq!(text(&c, "tr#runtime-acme-prod dd.scopes").await, "repo");
            assert_eq!(text(&c, "tr#runtime-acme-prod dd.status").await, "Valid");
            // the other runtimes are untouched
            assert_eq!(
                text(&c, "tr#runtime-acme-staging .token-cell").await,
                "No token assigned"
            );
            let png = c.screenshot().await.unwrap();
            let shot = artifacts_dir().join("tokens.png");
            std::fs::write(&shot, png).unwrap_or_else(|e| panic!("{}: {e}", shot.display()));

            // The runtime gets the token through its API.
            let r = h.runtime_get("acme-prod", "acme-prod", ALICE).await;
            assert_eq!(r.status(), 200);
            let body: serde_json::Value = r.json().await.unwrap();
            assert!(
                body["token"].as_str().unwrap().starts_with("gho_"),
                "{body}"
            );
            assert_eq!(body["username"], "alice");

            // Delete it.
            let delete = c
                .find(Locator::Css("tr#runtime-acme-prod button.delete"))
                .await
                .unwrap();
            assert_eq!(delete.text().await.unwrap(), "Delete Token");
            delete.click().await.unwrap();
            wait_for(
                &c,
                "the token page without acme-prod's token",
                Locator::Css("tr#runtime-acme-prod span.none"),
            )
            .await;
            assert_eq!(
                text(&c, "tr#runtime-acme-prod .token-cell").await,
                "No token assigned"
            );
            let flash = text(&c, "#flash").await;
            assert!(
                flash.contains("Token deleted for runtime acme-prod"),
                "flash: {flash}"
            );
            assert!(
                c.find(Locator::Css("tr#runtime-acme-prod button.delete"))
                    .await
                    .is_err(),
                "no Delete button without a token"
            );
            has_no_token(&h).await;
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_at_the_provider_shows_the_message() {
    let h = std::sync::Arc::new(Harness::start(Backend::Embedded).await);
    let browser = Browser::start("deny").await;
    let hh = h.clone();
    browser
        .run(move |c| async move {
            let h = hh;
            let mock_url = h.mock.base_url.trim_end_matches('/').to_owned();
            sign_in_as_alice(&c, &h.url, &mock_url).await;
            start_authorize(&c, &mock_url).await;
            c.find(Locator::Id("deny"))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
            let flash = wait_for(
                &c,
                "the denial message",
                Locator::XPath("//*[@id='flash'][contains(., 'denied')]"),
            )
            .await
            .text()
            .await
            .unwrap();
            assert!(
                flash.contains("Authorization was denied at GitHub"),
                "flash: {flash}"
            );
            assert!(
                c.current_url()
                    .await
                    .unwrap()
                    .as_str()
                    .starts_with(&format!("{}/tokens", h.url))
            );
            assert_eq!(
                text(&c, "tr#runtime-acme-prod .token-cell").await,
                "No token assigned"
            );
            has_no_token(&h).await;
            assert_eq!(h.mock.provider.stats().token_requests, 0);
        })
        .await;
}

async fn has_no_token(h: &Harness) {
    let r = h.runtime_get("acme-prod", "acme-prod", ALICE).await;
    assert_eq!(r.status(), 404, "acme-prod/alice should have no token");
}

/// "Advanced authorization options": paste a GitHub token and assign it to
/// two runtimes at once; then a Bitbucket Cloud API token, whose form asks
/// for the Bitbucket username and the Atlassian account email.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paste_personal_access_tokens_in_a_real_browser() {
    let h = std::sync::Arc::new(Harness::start(Backend::Embedded).await);
    let browser = Browser::start("paste-pat").await;
    let hh = h.clone();
    browser
        .run(move |c| async move {
            let h = hh;
            let mock_url = h.mock.base_url.trim_end_matches('/').to_owned();
            sign_in_as_alice(&c, &h.url, &mock_url).await;

            // GitHub: a classic token with `repo` for acme-prod and
            // acme-staging at once, through github.com's shared form
            let pat = h.github_pat("alice", &["repo"]);
            let row = "tr#runtime-acme-prod";
            c.find(Locator::Css(&format!("{row} details.advanced summary")))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
            assert!(
                c.find(Locator::Css(&format!("{row} input[name=username]"))).await.is_err(),
                "GitHub asks for no username"
            );
            assert!(
                c.find(Locator::Css(&format!("{row} input[type=checkbox]"))).await.is_err(),
                "the row's form is for its own runtime only"
            );
            // the row leads to its host's shared form
            c.find(Locator::Css(&format!("{row} a.to-several")))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
            let shared = "section.pat-several[data-host='github.com']";
            let boxes = c
                .find_all(Locator::Css(&format!("{shared} input[name=runtimes]")))
                .await
                .unwrap();
            let mut offered = Vec::new();
            for b in &boxes {
                offered.push(b.attr("value").await.unwrap().unwrap());
            }
            assert_eq!(offered, ["acme-prod", "acme-staging"], "each runtime once");
            let field = wait_for(&c, "the shared token field", Locator::Css(&format!("{shared} input.pat-token"))).await;
            field.send_keys(&pat).await.unwrap();
            for rt in ["acme-prod", "acme-staging"] {
                c.find(Locator::Css(&format!("{shared} input[name=runtimes][value={rt}]")))
                    .await
                    .unwrap()
                    .click()
                    .await
                    .unwrap();
            }
            c.find(Locator::Css(&format!("{shared} button.add-token-several")))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
            wait_for(&c, "acme-prod's token", Locator::Css(&format!("{row} dl.token"))).await;
            let flash = text(&c, "#flash").await;
            assert_eq!(
                flash,
                "GitHub token of alice (classic personal access token) added to runtime acme-prod, acme-staging."
            );
            assert_eq!(text(&c, "tr#runtime-acme-staging dd.login").await, "alice");
            assert!(text(&c, &format!("{row} dd.added")).await.contains("personal access token"));
            for rt in ["acme-prod", "acme-staging"] {
                let v: serde_json::Value = h.runtime_get(rt, rt, ALICE).await.json().await.unwrap();
                assert_eq!(v["token"], pat.as_str());
            }

            // one runtime through its row's own form
            let own = h.github_pat("alice", &["repo"]);
            let row = "tr#runtime-acme-staging";
            c.find(Locator::Css(&format!("{row} details.advanced summary")))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
            wait_for(&c, "acme-staging's token field", Locator::Css(&format!("{row} input.pat-token")))
                .await
                .send_keys(&own)
                .await
                .unwrap();
            c.find(Locator::Css(&format!("{row} button.add-token")))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
            wait_for(
                &c,
                "the flash of acme-staging's own token",
                Locator::XPath("//div[@id='flash' and contains(., 'added to runtime acme-staging.')]"),
            )
            .await;
            let v: serde_json::Value = h.runtime_get("acme-staging", "acme-staging", ALICE).await.json().await.unwrap();
            assert_eq!(v["token"], own.as_str());
            let v: serde_json::Value = h.runtime_get("acme-prod", "acme-prod", ALICE).await.json().await.unwrap();
            assert_eq!(v["token"], pat.as_str(), "acme-prod keeps the shared token");

            // Bitbucket Cloud: username and email fields, an API token
            let token = h.mock.provider.create_pat(gitbroker::mock::PatSpec {
                flavour: gitbroker::mock::Flavour::BitbucketCloud,
                owner: "alice".into(),
                kind: "api_token".into(),
                scopes: [
                    "read:user:bitbucket",
                    "read:workspace:bitbucket",
                    "read:repository:bitbucket",
                    "write:repository:bitbucket",
                ]
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
                expires_at: None,
                repositories: Vec::new(),
                email: None,
            });
            let row = "tr#runtime-bbc-rt";
            c.find(Locator::Css(&format!("{row} details.advanced summary")))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
            let username = wait_for(&c, "the Bitbucket username field", Locator::Css(&format!("{row} input[name=username]"))).await;
            let label = c
                .find(Locator::Css(&format!("{row} form.pat label")))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            assert!(label.contains("Bitbucket Cloud username"), "{label}");
            username.send_keys("alice").await.unwrap();
            c.find(Locator::Css(&format!("{row} input[name=email]")))
                .await
                .unwrap()
                .send_keys("alice@example.com")
                .await
                .unwrap();
            c.find(Locator::Css(&format!("{row} input.pat-token")))
                .await
                .unwrap()
                .send_keys(&token)
                .await
                .unwrap();
            c.find(Locator::Css(&format!("{row} button.add-token")))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
            wait_for(&c, "bbc-rt's token", Locator::Css(&format!("{row} dl.token"))).await;
            let flash = text(&c, "#flash").await;
            assert!(flash.contains("added to runtime bbc-rt"), "flash: {flash}");
            let png = c.screenshot().await.unwrap();
            std::fs::write(artifacts_dir().join("pasted.png"), png).unwrap();
            let v: serde_json::Value = h.runtime_get("bbc-rt", "bbc-rt", ALICE).await.json().await.unwrap();
            assert_eq!(v["token"], token.as_str());
            assert_eq!(v["username"], "alice", "Git over HTTPS uses the Bitbucket username with an API token");
        })
        .await;
}

/// One authorization for two runtimes, and the statuses checks find, as a
/// person sees them: "Use my existing authorization" on a second runtime,
/// then the token revoked at the provider and shown as such on both rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuse_an_authorization_and_see_its_status_in_a_real_browser() {
    let clock = std::sync::Arc::new(gitbroker::clock::ManualClock::new(chrono::Utc::now()));
    let h = std::sync::Arc::new(
        Harness::start_with(
            Backend::Embedded,
            Options {
                clock: Some(clock.clone()),
                ..Options::default()
            },
        )
        .await,
    );
    let browser = Browser::start("reuse-and-status").await;
    let hh = h.clone();
    browser
        .run(move |c| async move {
            let h = hh;
            let mock_url = h.mock.base_url.trim_end_matches('/').to_owned();
            sign_in_as_alice(&c, &h.url, &mock_url).await;
            start_authorize(&c, &mock_url).await;
            c.find(Locator::Id("approve"))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
            wait_for(
                &c,
                "acme-prod's token",
                Locator::Css("tr#runtime-acme-prod dl.token"),
            )
            .await;
            let minted = h.mock.provider.stats().token_requests;

            let reuse = c
                .find(Locator::Css("tr#runtime-acme-staging button.reuse-grant"))
                .await
                .unwrap();
            assert_eq!(
                reuse.text().await.unwrap(),
                "Use my existing authorization as alice (used by acme-prod)"
            );
            reuse.click().await.unwrap();
            wait_for(
                &c,
                "acme-staging's token",
                Locator::Css("tr#runtime-acme-staging dl.token"),
            )
            .await;
            assert!(
                text(&c, "#flash")
                    .await
                    .contains("is now also used for runtime acme-staging")
            );
            assert_eq!(
                text(&c, "tr#runtime-acme-staging dd.shared").await,
                "acme-prod"
            );
            assert_eq!(
                text(&c, "tr#runtime-acme-prod dd.shared").await,
                "acme-staging"
            );
            assert_eq!(
                h.mock.provider.stats().token_requests,
                minted,
                "no new token"
            );
            let a: serde_json::Value = h
                .runtime_get("acme-prod", "acme-prod", ALICE)
                .await
                .json()
                .await
                .unwrap();
            let b: serde_json::Value = h
                .runtime_get("acme-staging", "acme-staging", ALICE)
                .await
                .json()
                .await
                .unwrap();
            assert_eq!(a["token"], b["token"]);

            // revoked at GitHub; the next check finds it
            assert!(h.mock.provider.revoke(a["token"].as_str().unwrap()));
            clock.advance(chrono::Duration::hours(5));
            assert!(h.state.lifecycle.run_due().await.checked >= 1);
            c.goto(&format!("{}/tokens", h.url)).await.unwrap();
            wait_for(
                &c,
                "the token page",
                Locator::Css("tr#runtime-acme-prod dl.token"),
            )
            .await;
            for rt in ["acme-prod", "acme-staging"] {
                let status = text(&c, &format!("tr#runtime-{rt} dd.status")).await;
                assert!(
                    status.starts_with("Revoked or invalid — authorize again"),
                    "{rt}: {status}"
                );
                assert!(
                    status.contains("GitHub rejects the token"),
                    "{rt}: {status}"
                );
            }
            // the banner names both, each row has its badge
            let banner = text(&c, "#attention").await;
            assert!(
                banner.starts_with("2 Git user tokens need your attention"),
                "{banner}"
            );
            assert!(banner.contains("acme-prod") && banner.contains("acme-staging"));
            for rt in ["acme-prod", "acme-staging"] {
                assert_eq!(
                    text(&c, &format!("tr#runtime-{rt} .badge.attention")).await,
                    "Needs attention"
                );
            }
            let png = c.screenshot().await.unwrap();
            let shot = artifacts_dir().join("statuses.png");
            std::fs::write(&shot, png).unwrap_or_else(|e| panic!("{}: {e}", shot.display()));

            // the row's menu: Hide notifications
            c.find(Locator::Css(
                "tr#runtime-acme-staging details.row-menu summary",
            ))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
            let hide = c
                .find(Locator::Css(
                    "tr#runtime-acme-staging button.hide-notifications",
                ))
                .await
                .unwrap();
            assert_eq!(hide.text().await.unwrap(), "Hide notifications");
            hide.click().await.unwrap();
            wait_for(
                &c,
                "the row saying its notifications are hidden",
                Locator::Css("tr#runtime-acme-staging .notifications-hidden"),
            )
            .await;
            assert_eq!(
                text(&c, "tr#runtime-acme-staging .notifications-hidden").await,
                "Notifications hidden"
            );
            assert!(
                text(&c, "#flash")
                    .await
                    .contains("Notifications hidden for runtime acme-staging")
            );
            let banner = text(&c, "#attention").await;
            assert!(
                banner.starts_with("A Git user token needs your attention"),
                "{banner}"
            );
            assert!(!banner.contains("acme-staging"), "{banner}");
            assert!(
                c.find(Locator::Css("tr#runtime-acme-staging .badge.attention"))
                    .await
                    .is_err(),
                "no badge on a hidden row"
            );
            // hidden, not invisible: the status stays
            assert!(
                text(&c, "tr#runtime-acme-staging dd.status")
                    .await
                    .starts_with("Revoked or invalid")
            );
            let png = c.screenshot().await.unwrap();
            let shot = artifacts_dir().join("notifications-hidden.png");
            std::fs::write(&shot, png).unwrap_or_else(|e| panic!("{}: {e}", shot.display()));

            // and shown again
            c.find(Locator::Css(
                "tr#runtime-acme-staging details.row-menu summary",
            ))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
            let show = c
                .find(Locator::Css(
                    "tr#runtime-acme-staging button.show-notifications",
                ))
                .await
                .unwrap();
            assert_eq!(show.text().await.unwrap(), "Show notifications");
            show.click().await.unwrap();
            wait_for(
                &c,
                "the badge back on acme-staging",
                Locator::Css("tr#runtime-acme-staging .badge.attention"),
            )
            .await;
            assert!(
                text(&c, "#attention")
                    .await
                    .starts_with("2 Git user tokens")
            );
            assert!(
                c.find(Locator::Css(
                    "tr#runtime-acme-staging .notifications-hidden"
                ))
                .await
                .is_err()
            );
        })
        .await;
}

/// Clicks "Authorize Access to GitHub" for `runtime` and approves at the
/// mock's consent page; returns back on the token page with its token.
async fn authorize_github_app(c: &Client, mock_url: &str, runtime: &str) {
    c.find(Locator::Css(&format!(
        "tr#runtime-{runtime} button.authorize"
    )))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    let approve = wait_for(c, "the provider's consent page", Locator::Id("approve")).await;
    let at = c.current_url().await.unwrap();
    assert!(
        at.as_str().starts_with(mock_url),
        "expected the provider at {mock_url}, at {at}"
    );
    assert!(
        c.source().await.unwrap().contains("gitbroker GitHub App"),
        "the consent page names the App"
    );
    approve.click().await.unwrap();
    wait_for(
        c,
        "the token page with the runtime's token",
        Locator::Css(&format!("tr#runtime-{runtime} dl.token")),
    )
    .await;
}

/// A GitHub App users authorize: the consent page, the token on the page,
/// a narrowed token for the runtime; then, with the App installed nowhere,
/// the "not installed" message and the install link, which leads to the
/// App's install page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorize_a_github_app_and_see_not_installed_in_a_real_browser() {
    let h = std::sync::Arc::new(Harness::start(Backend::Embedded).await);
    with_github_app(&h).await;
    let browser = Browser::start("github-app").await;
    let hh = h.clone();
    browser
        .run(move |c| async move {
            let h = hh;
            let mock_url = h.mock.base_url.trim_end_matches('/').to_owned();
            sign_in_as_alice(&c, &h.url, &mock_url).await;
            authorize_github_app(&c, &mock_url, "acme-app").await;
            let flash = text(&c, "#flash").await;
            assert!(
                flash.contains("Access to GitHub authorized as alice for runtime acme-app."),
                "flash: {flash}"
            );
            assert_eq!(text(&c, "tr#runtime-acme-app dd.status").await, "Valid");
            assert_eq!(text(&c, "tr#runtime-acme-app dd.login").await, "alice");
            let r = h.runtime_get("acme-app", "acme-app", ALICE).await;
            assert_eq!(r.status(), 200);
            let body: serde_json::Value = r.json().await.unwrap();
            let served = body["token"].as_str().unwrap();
            assert!(served.starts_with("ghu_"), "{body}");
            assert_eq!(h.mock.provider.github_app_token_reach(served), vec!["acme/app"]);

            // the App installed nowhere: the page says so and links to it
            h.mock.provider.set_installations(Vec::new());
            authorize_github_app(&c, &mock_url, "acme-any").await;
            let flash = text(&c, "#flash").await;
            assert!(
                flash.contains("but the token cannot reach anything yet: the GitHub App is not installed on any account or organization you can reach"),
                "flash: {flash}"
            );
            let status = text(&c, "tr#runtime-acme-any dd.status").await;
            assert!(
                status.starts_with("GitHub App not installed — install it, then reload"),
                "status: {status}"
            );
            let link = c
                .find(Locator::Css("tr#runtime-acme-any a#install-acme-any"))
                .await
                .unwrap();
            assert_eq!(link.text().await.unwrap(), "Install the GitHub App");
            let href = link.attr("href").await.unwrap().unwrap();
            assert_eq!(
                href,
                format!("{mock_url}/github-apps/{SLUG}/installations/new")
            );
            let r = h.runtime_get("acme-any", "acme-any", ALICE).await;
            assert_eq!(r.status(), 404);
            let png = c.screenshot().await.unwrap();
            let shot = artifacts_dir().join("github-app-not-installed.png");
            std::fs::write(&shot, png).unwrap_or_else(|e| panic!("{}: {e}", shot.display()));
            link.click().await.unwrap();
            wait_for(&c, "the App's install page", Locator::Id("install-app")).await;
        })
        .await;
}
