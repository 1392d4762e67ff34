//! A secret in the configuration: inline, from a file, or from an
//! environment variable. Its `Debug` never prints the value.

use super::{ConfigError, invalid};
use secrecy::SecretString;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Deserialize)]
#[serde(untagged)]
pub enum SecretSource {
    Inline(SecretString),
    File {
        file: PathBuf,
    },
    Env {
        env: String,
    },
    /// `GITBROKER_…` variables are parsed like TOML values: an all-digit or
    /// `true`/`false` secret arrives as a number or a boolean.
    Integer(i64),
    Boolean(bool),
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Inline(_) => f.write_str("SecretSource::Inline([redacted])"),
            Self::File { file } => write!(f, "SecretSource::File({})", file.display()),
            Self::Env { env } => write!(f, "SecretSource::Env({env})"),
            Self::Integer(_) | Self::Boolean(_) => f.write_str("SecretSource::Inline([redacted])"),
        }
    }
}

impl SecretSource {
    pub fn resolve(&self, key: &str, base_dir: Option<&Path>) -> Result<SecretString, ConfigError> {
        let value = match self {
            Self::Inline(s) => s.clone(),
            Self::Integer(i) => SecretString::from(i.to_string()),
            Self::Boolean(b) => SecretString::from(b.to_string()),
            Self::File { file } => {
                let path = match base_dir {
                    Some(dir) if file.is_relative() => dir.join(file),
                    _ => file.clone(),
                };
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    invalid(
                        key,
                        format!("cannot read secret file {}: {}", path.display(), e.kind()),
                    )
                })?;
                SecretString::from(text.trim_end_matches(['\n', '\r']).to_owned())
            }
            Self::Env { env } => match std::env::var(env) {
                Ok(v) => SecretString::from(v),
                Err(_) => {
                    return Err(invalid(
                        key,
                        format!("environment variable {env} is not set or not UTF-8"),
                    ));
                }
            },
        };
        if secrecy::ExposeSecret::expose_secret(&value).is_empty() {
            return Err(invalid(key, "is empty"));
        }
        Ok(value)
    }
}
