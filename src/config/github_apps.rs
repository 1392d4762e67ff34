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
    /// The PEM private key GitHub generated for the App.
    pub private_key: SecretSource,
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
        let pem = a
            .private_key
            .resolve(&format!("{key}.private_key"), base_dir)?;
        let app_key =
            AppKey::from_pem(&pem).map_err(|m| invalid(format!("{key}.private_key"), m))?;
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
    let ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    let mut seen = BTreeSet::new();
    for r in repos {
        match r.split_once('/') {
            Some((owner, name)) if ok(owner) && ok(name) => {}
            _ => {
                return Err(invalid(
                    format!("{key}.repositories"),
                    format!("`{r}` is not an owner/name repository"),
                ));
            }
        }
        if !seen.insert(r.to_ascii_lowercase()) {
            return Err(invalid(
                format!("{key}.repositories"),
                format!("`{r}` is listed twice"),
            ));
        }
    }
    Ok(())
}

/// Demo mode only: writes a fresh private key (PKCS#1 PEM, mode 0600) for
/// every `[[github_apps]]` whose `private_key = { file = … }` does not exist
/// yet, so the offline demo needs no committed key. Returns the files made.
/// Outside demo mode (`demo.enabled` not true) it does nothing.
pub fn ensure_demo_keys(path: &Path) -> Result<Vec<std::path::PathBuf>, String> {
    use figment::Figment;
    use figment::providers::{Format, Toml};
    #[derive(Deserialize)]
    struct Demo {
        #[serde(default)]
        enabled: bool,
    }
    #[derive(Deserialize)]
    struct KeyOnly {
        private_key: Option<toml_like::Key>,
    }
    #[derive(Deserialize)]
    struct Partial {
        demo: Option<Demo>,
        #[serde(default)]
        github_apps: Vec<KeyOnly>,
    }
    mod toml_like {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        pub enum Key {
            File { file: std::path::PathBuf },
            Other(serde::de::IgnoredAny),
        }
    }
    let Ok(partial) = Figment::new()
        .merge(Toml::file_exact(path))
        .extract::<Partial>()
    else {
        // the full load reports what is wrong
        return Ok(Vec::new());
    };
    if !partial.demo.is_some_and(|d| d.enabled) {
        return Ok(Vec::new());
    }
    let mut made = Vec::new();
    for app in partial.github_apps {
        let Some(toml_like::Key::File { file }) = app.private_key else {
            continue;
        };
        let file = match path.parent() {
            Some(dir) if file.is_relative() => dir.join(file),
            _ => file,
        };
        if file.exists() {
            continue;
        }
        use rsa::pkcs1::EncodeRsaPrivateKey;
        let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048)
            .map_err(|e| format!("cannot generate a demo GitHub App key: {e}"))?;
        let pem = key
            .to_pkcs1_pem(rsa::pkcs1::LineEnding::LF)
            .map_err(|e| format!("cannot encode a demo GitHub App key: {e}"))?;
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {}", dir.display(), e.kind()))?;
        }
        write_private(&file, pem.as_bytes())
            .map_err(|e| format!("cannot write {}: {}", file.display(), e.kind()))?;
        made.push(file);
    }
    Ok(made)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}
