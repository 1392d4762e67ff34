//! A GitHub App users authorize, added to a running [`Harness`]: shared by
//! tests/github_app_user.rs and the browser test.

use super::harness::{APP_SECRET, Harness, credential};
use gitbroker::mock::{MockGithubApp, MockInstallation, MockOAuthApp};

pub const CLIENT_ID: &str = "ghapp-client-id";
pub const SLUG: &str = "gitbroker-test";
/// The App's id in the mock.
pub const APP_ID: u64 = 4711;

/// The GitHub App, a runtime narrowed to `acme/app` and one that names no
/// repositories, written into the store by a replica whose file has them
/// (the harness's own file predates the mock's URL).
pub async fn with_github_app(h: &Harness) {
    let mock_url = h.mock.base_url.trim_end_matches('/').to_owned();
    let extra = format!(
        r#"
[[oauth_apps]]
id = "ghapp"
name = "gitbroker GitHub App"
provider = "github"
kind = "github_app"
app_slug = "{SLUG}"
base_url = "{mock_url}"
client_id = "{CLIENT_ID}"
client_secret = "{APP_SECRET}"
[[runtimes]]
id = "acme-app"
account = "acme"
git_host = "github.com"
oauth_app = "ghapp"
repositories = ["acme/app"]
credential = "{c1}"
[[runtimes]]
id = "acme-any"
account = "acme"
git_host = "github.com"
oauth_app = "ghapp"
credential = "{c2}"
"#,
        c1 = credential("acme-app"),
        c2 = credential("acme-any"),
    );
    h.replica_with(|t| format!("{t}\n{extra}")).await;
    h.mock.provider.add_oauth_app(MockOAuthApp {
        name: "gitbroker GitHub App".into(),
        client_id: CLIENT_ID.into(),
        client_secret: APP_SECRET.into(),
        callback_url: format!("{}/oauth/callback/ghapp", h.url),
    });
    h.mock
        .provider
        .add_github_app(MockGithubApp {
            app_id: APP_ID,
            client_id: Some(CLIENT_ID.into()),
            slug: Some(SLUG.into()),
            ..MockGithubApp::default()
        })
        .unwrap();
    install_github_app(h, &["acme/app", "acme/infra"]);
}

/// The App installed on the organization `acme` (alice a member) for `repos`.
pub fn install_github_app(h: &Harness, repos: &[&str]) {
    h.mock.provider.set_installations(vec![MockInstallation {
        id: 7,
        app_id: APP_ID,
        account: "acme".into(),
        repositories: repos.iter().map(|r| (*r).to_owned()).collect(),
        members: vec!["alice".into()],
        ..MockInstallation::default()
    }]);
}
