//! `[[github_apps]]`: GitHub Apps whose installation tokens serve as Git
//! Runtime tokens, and each runtime's `[runtimes.github_app]` (which App,
//! which installation, which permissions to narrow to). The private key is
//! a secret like any other (inline, `{ file }`, `{ env }`) and is parsed
//! here, so a broken key stops the start naming the key.

use super::{ConfigError, SecretSource, invalid, parse_url};
use crate::providers::github_app::{AppKey, GithubApp};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGithubApp {
    /// What runtimes call it (`[runtimes.github_app] app = "…"`).
    pub name: String,
    /// The App ID from the App's settings page (not its client id).
    pub app_id: u64,
    /// The PEM private key GitHub generated for the App. Only in demo
    /// mode may it be omitted: a fresh key is then made at every start and
    /// lives in memory only (the built-in mock learns its public half).
    pub private_key: Option<SecretSource>,
    /// GitHub Enterprise Server's host, e.g. `https://github.example.com`;
    /// omitted: github.com.
    pub base_url: Option<String>,
}

/// A runtime's GitHub App installation: the App by name, and the
/// installation by id or by the login of the account it is installed on.
/// Stored with the runtime (no secret in it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuntimeGithubApp {
    /// The `name` of an entry of `[[github_apps]]`.
    pub app: String,
    /// The installation's id; found from `owner` when omitted.
    #[serde(default)]
    pub installation_id: Option<u64>,
    /// The login of the organisation or user the App is installed on.
    #[serde(default)]
    pub owner: Option<String>,
    /// Permissions to narrow each installation token to (`contents = "write"`);
    /// empty: everything the installation grants.
    #[serde(default)]
    pub permissions: BTreeMap<String, String>,
}

pub(super) fn settings(
    raw: &[RawGithubApp],
    allow_http: bool,
    demo: bool,
    base_dir: Option<&Path>,
) -> Result<Vec<GithubApp>, ConfigError> {
    let mut names = BTreeSet::new();
    let mut apps = Vec::new();
    for (i, a) in raw.iter().enumerate() {
        let key = format!("github_apps[{i}]");
        super::check_id(&format!("{key}.name"), &a.name)?;
        if !names.insert(a.name.clone()) {
            return Err(invalid(
                format!("{key}.name"),
                format!("duplicate GitHub App `{}`", a.name),
            ));
        }
        if a.app_id == 0 {
            return Err(invalid(
                format!("{key}.app_id"),
                "must be the App's numeric ID",
            ));
        }
        let app_key = match &a.private_key {
            Some(source) => {
                let pem = source.resolve(&format!("{key}.private_key"), base_dir)?;
                AppKey::from_pem(&pem).map_err(|m| invalid(format!("{key}.private_key"), m))?
            }
            None if demo => {
                AppKey::generate().map_err(|m| invalid(format!("{key}.private_key"), m))?
            }
            None => {
                return Err(invalid(
                    format!("{key}.private_key"),
                    "is required: the App's PEM private key, as a secret (inline, { file = … } or { env = … })",
                ));
            }
        };
        let base = a
            .base_url
            .as_deref()
            .map(|u| parse_url(&format!("{key}.base_url"), u, allow_http))
            .transpose()?;
        let kind = kind_of(base.as_ref());
        let api = crate::providers::provider(kind)
            .endpoints(base.as_ref(), None)
            .map_err(|m| invalid(format!("{key}.base_url"), m))?
            .api;
        apps.push(GithubApp {
            name: a.name.clone(),
            app_id: a.app_id.to_string(),
            key: app_key,
            api,
        });
    }
    Ok(apps)
}

/// github.com, or GitHub Enterprise Server for any other host.
pub fn kind_of(base: Option<&url::Url>) -> crate::providers::ProviderKind {
    match base.and_then(|b| b.host_str()) {
        None | Some("github.com") => crate::providers::ProviderKind::Github,
        Some(_) => crate::providers::ProviderKind::GithubEnterprise,
    }
}

/// Checks a runtime's installation settings and repository list (file and
/// admin API alike). `key` names the runtime's table.
pub fn validate_runtime_app(
    key: &str,
    app: &RuntimeGithubApp,
    known: &[GithubApp],
) -> Result<(), ConfigError> {
    if !known.iter().any(|a| a.name == app.app) {
        return Err(invalid(
            format!("{key}.github_app.app"),
            format!("`{}` is not the name of any entry of github_apps", app.app),
        ));
    }
    match (&app.installation_id, &app.owner) {
        (None, None) => {
            return Err(invalid(
                format!("{key}.github_app"),
                "give installation_id or owner (the account the App is installed on)",
            ));
        }
        (Some(0), _) => {
            return Err(invalid(
                format!("{key}.github_app.installation_id"),
                "must be the installation's numeric id",
            ));
        }
        (_, Some(o))
            if o.is_empty() || !o.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') =>
        {
            return Err(invalid(
                format!("{key}.github_app.owner"),
                format!("`{o}` is not a GitHub account login"),
            ));
        }
        _ => {}
    }
    for (name, level) in &app.permissions {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            return Err(invalid(
                format!("{key}.github_app.permissions"),
                format!(
                    "`{name}` is not a GitHub App permission name (e.g. contents, administration)"
                ),
            ));
        }
        if !matches!(level.as_str(), "read" | "write" | "admin") {
            return Err(invalid(
                format!("{key}.github_app.permissions.{name}"),
                format!("`{level}` is not one of: read, write, admin"),
            ));
        }
    }
    Ok(())
}

/// `owner/name` repository names, each once.
pub fn validate_repositories(key: &str, repos: &[String]) -> Result<(), ConfigError> {
    crate::providers::github_app_user::check_repositories(repos, false)
        .map_err(|m| invalid(format!("{key}.repositories"), m))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::super::Settings;
    use rsa::pkcs1::EncodeRsaPrivateKey;

    fn base(app: &str, runtime: &str) -> String {
        format!(
            r#"
public_url = "https://broker.example.com"
[store]
backend = "embedded"
path = "/tmp/x.redb"
[encryption]
keys = [{{ id = "k1", key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=" }}]
[oidc]
issuer = "https://idp.example.com"
client_id = "gitbroker"
client_secret = "s3cret"
[[accounts]]
id = "acme"
groups = ["acme-devs"]
[[github_apps]]
name = "ops"
app_id = 17
{app}
[[runtimes]]
id = "rt1"
account = "acme"
git_host = "github.com"
credential = "0123456789abcdef0123456789abcdef-rt1"
{runtime}
"#
        )
    }

    fn pem_file() -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 1024).unwrap();
        let path = dir.path().join("app.pem");
        std::fs::write(&path, key.to_pkcs1_pem(rsa::pkcs1::LineEnding::LF).unwrap()).unwrap();
        let line = format!("private_key = {{ file = \"{}\" }}", path.display());
        (dir, line)
    }

    fn err(text: &str) -> String {
        Settings::from_toml_str(text)
            .expect_err("should fail")
            .to_string()
    }

    const INSTALLED: &str = "[runtimes.github_app]\napp = \"ops\"\ninstallation_id = 5";

    #[test]
    fn an_app_runtime_loads_on_the_apps_github() {
        let (_d, key) = pem_file();
        let s = Settings::from_toml_str(&base(
            &key,
            &format!("repositories = [\"acme/app\"]\n{INSTALLED}"),
        ))
        .unwrap();
        assert_eq!(s.github_apps[0].api.as_str(), "https://api.github.com/");
        assert_eq!(
            s.runtimes[0].provider,
            Some(crate::providers::ProviderKind::Github)
        );
        assert_eq!(s.runtimes[0].repositories, vec!["acme/app".to_owned()]);
        assert_eq!(
            s.runtimes[0].github_app.as_ref().unwrap().installation_id,
            Some(5)
        );
        // Enterprise: the API under /api/v3, the runtime on that host
        let s = Settings::from_toml_str(&base(
            &format!("{key}\nbase_url = \"https://github.example.com\""),
            INSTALLED,
        ))
        .unwrap();
        assert_eq!(
            s.github_apps[0].api.as_str(),
            "https://github.example.com/api/v3"
        );
        assert_eq!(
            s.runtimes[0].provider,
            Some(crate::providers::ProviderKind::GithubEnterprise)
        );
    }

    #[test]
    fn bad_settings_name_their_key() {
        let (_d, key) = pem_file();
        let cases = [
            (
                base(
                    "private_key = \"-----BEGIN RSA PRIVATE KEY-----\\nnope\\n-----END RSA PRIVATE KEY-----\"",
                    INSTALLED,
                ),
                "github_apps[0].private_key: is not an RSA private key in PEM form",
            ),
            (
                base("", INSTALLED),
                "github_apps[0].private_key: is required",
            ),
            (
                base(
                    &key,
                    "[runtimes.github_app]\napp = \"other\"\ninstallation_id = 5",
                ),
                "runtimes[0].github_app.app: `other` is not the name of any entry of github_apps",
            ),
            (
                base(&key, "[runtimes.github_app]\napp = \"ops\""),
                "runtimes[0].github_app: give installation_id or owner",
            ),
            (
                base(
                    &key,
                    "[runtimes.github_app]\napp = \"ops\"\nowner = \"a b\"",
                ),
                "runtimes[0].github_app.owner: `a b` is not a GitHub account login",
            ),
            (
                base(
                    &key,
                    &format!("{INSTALLED}\n[runtimes.github_app.permissions]\ncontents = \"all\""),
                ),
                "runtimes[0].github_app.permissions.contents: `all` is not one of: read, write, admin",
            ),
            (
                base(&key, &format!("repositories = [\"app\"]\n{INSTALLED}")),
                "runtimes[0].repositories: `app` is not a repository written owner/name",
            ),
            (
                base(&key, &format!("provider = \"gitlab\"\n{INSTALLED}")),
                "runtimes[0].github_app: a GitHub App installation serves only a runtime on GitHub",
            ),
        ];
        for (text, want) in cases {
            let e = err(&text);
            assert!(e.starts_with(want), "{e}\nwanted: {want}");
        }
    }

    #[test]
    fn the_private_key_never_prints() {
        let (_d, key) = pem_file();
        let s = Settings::from_toml_str(&base(&key, INSTALLED)).unwrap();
        let pem = std::fs::read_to_string(_d.path().join("app.pem")).unwrap();
        let dbg = format!("{s:?}");
        assert!(dbg.contains("AppKey([redacted])"));
        for line in pem.lines().skip(1).take(3) {
            assert!(!dbg.contains(line));
        }
    }
}
