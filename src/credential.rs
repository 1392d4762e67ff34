//! `gitbroker credential`: git's credential-helper protocol for runtimes.
//! git runs it with `get` (and later `store` or `erase`) and a description
//! on standard input; for `get` it asks the broker once — for the runtime's
//! own Git Runtime token, or a named user's token — and answers git with
//! the token in the form its provider requires: `username`/`password` for
//! HTTP Basic, or (git 2.46 and later, which announce
//! `capability[]=authtype`) `authtype=Bearer` and `credential=…`. Every
//! answer carries `password_expiry_utc`, so git never reuses a token past
//! its expiry. Nothing is cached: each git operation asks once.

use crate::providers::GitAuth;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// What git sent: `key=value` lines up to a blank line or the end.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Description {
    pub protocol: Option<String>,
    pub host: Option<String>,
    pub path: Option<String>,
    pub username: Option<String>,
    pub capabilities: Vec<String>,
}

impl Description {
    pub fn parse(input: &str) -> Self {
        let mut d = Self::default();
        for line in input.lines() {
            if line.is_empty() {
                break;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            match key {
                "protocol" => d.protocol = Some(value.to_owned()),
                "host" => d.host = Some(value.to_owned()),
                "path" => d.path = Some(value.to_owned()),
                "username" => d.username = Some(value.to_owned()),
                "capability[]" => d.capabilities.push(value.to_owned()),
                "url" => {
                    if let Ok(url) = url::Url::parse(value) {
                        d.protocol = Some(url.scheme().to_owned());
                        d.host = url.host_str().map(|h| match url.port() {
                            Some(p) => format!("{h}:{p}"),
                            None => h.to_owned(),
                        });
                        let path = url.path().trim_start_matches('/');
                        if !path.is_empty() {
                            d.path = Some(path.to_owned());
                        }
                    }
                }
                _ => {}
            }
        }
        d
    }

    pub fn supports_authtype(&self) -> bool {
        self.capabilities.iter().any(|c| c == "authtype")
    }
}

/// The broker's answer, as the runtime API gives it.
#[derive(Deserialize)]
pub struct Token {
    pub token: SecretString,
    pub auth: GitAuth,
    pub git_host: String,
    pub expires_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("auth", &self.auth)
            .field("git_host", &self.git_host)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// What to tell git.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// Lines for standard output (the credential).
    Credential(String),
    /// Not for this host or protocol: say nothing, let git try elsewhere.
    NotOurs,
    /// A token exists but this git cannot present it: a message for
    /// standard error, and `quit=1` so git stops instead of prompting.
    Cannot(String),
}

/// Whether the description is for the token's Git host (the host the
/// runtime is registered with; any port).
fn same_host(asked: &str, ours: &str) -> bool {
    let strip = |h: &str| h.split(':').next().unwrap_or(h).to_ascii_lowercase();
    strip(asked) == strip(ours)
}

/// The answer to `get` for `desc`, given the broker's token.
pub fn reply(desc: &Description, token: &Token) -> Reply {
    if let Some(p) = &desc.protocol
        && p != "https"
        && p != "http"
    {
        return Reply::NotOurs;
    }
    if let Some(h) = &desc.host
        && !same_host(h, &token.git_host)
    {
        return Reply::NotOurs;
    }
    let expiry = token
        .expires_at
        .map(|e| format!("password_expiry_utc={}\n", e.timestamp()))
        .unwrap_or_default();
    let secret = token.token.expose_secret();
    match &token.auth {
        GitAuth::Basic { username } => Reply::Credential(format!(
            "username={username}\npassword={secret}\n{expiry}"
        )),
        GitAuth::Bearer if desc.supports_authtype() => Reply::Credential(format!(
            "capability[]=authtype\nauthtype=Bearer\ncredential={secret}\nephemeral=1\n{expiry}"
        )),
        GitAuth::Bearer => Reply::Cannot(
            "gitbroker: this token works only as `Authorization: Bearer`, which git can take from a credential helper from version 2.46 on; with an older git, pass it as a header instead: git -c http.extraHeader=\"Authorization: Bearer $TOKEN\" …".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn token(auth: GitAuth) -> Token {
        Token {
            token: SecretString::from("tok-123".to_owned()),
            auth,
            git_host: "bitbucket.example.com".into(),
            expires_at: DateTime::from_timestamp(2_000_000_000, 0),
        }
    }

    #[test]
    fn parses_what_git_sends() {
        let d = Description::parse(
            "capability[]=authtype\ncapability[]=state\nprotocol=https\nhost=bitbucket.example.com:8443\npath=scm/p/r.git\n\nignored=1\n",
        );
        assert_eq!(d.host.as_deref(), Some("bitbucket.example.com:8443"));
        assert!(d.supports_authtype());
        let u = Description::parse("url=https://git.example.com/a/b.git\n");
        assert_eq!(u.protocol.as_deref(), Some("https"));
        assert_eq!(u.path.as_deref(), Some("a/b.git"));
    }

    #[test]
    fn basic_and_bearer_answers() {
        let d = Description::parse("protocol=https\nhost=bitbucket.example.com\n");
        assert_eq!(
            reply(&d, &token(GitAuth::basic("alice"))),
            Reply::Credential(
                "username=alice\npassword=tok-123\npassword_expiry_utc=2000000000\n".into()
            )
        );
        assert!(matches!(
            reply(&d, &token(GitAuth::Bearer)),
            Reply::Cannot(_)
        ));
        let new_git = Description::parse(
            "capability[]=authtype\nprotocol=https\nhost=bitbucket.example.com\n",
        );
        assert_eq!(
            reply(&new_git, &token(GitAuth::Bearer)),
            Reply::Credential(
                "capability[]=authtype\nauthtype=Bearer\ncredential=tok-123\nephemeral=1\npassword_expiry_utc=2000000000\n"
                    .into()
            )
        );
    }

    #[test]
    fn other_hosts_and_protocols_are_not_ours() {
        let t = token(GitAuth::basic("alice"));
        let other = Description::parse("protocol=https\nhost=github.com\n");
        assert_eq!(reply(&other, &t), Reply::NotOurs);
        let ssh = Description::parse("protocol=ssh\nhost=bitbucket.example.com\n");
        assert_eq!(reply(&ssh, &t), Reply::NotOurs);
        let debug = format!("{t:?}");
        assert!(!debug.contains("tok-123"), "{debug}");
    }
}
