//! `[notifications]`: whether users are notified by default, and the SMTP
//! server digests are mailed through (optional; without it notifications
//! are on the page and in the API only).

use super::{ConfigError, SecretSource, invalid};
use secrecy::SecretString;
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawNotifications {
    /// Notifications for people who have not chosen (they can turn them off).
    pub enabled: bool,
    /// Where admin digests go (Git Runtime tokens, users' tokens per runtime).
    pub admin_email: Option<String>,
    /// How long a user's changes are gathered into one mail.
    pub digest_delay_secs: u64,
    pub smtp: Option<RawSmtp>,
}

impl Default for RawNotifications {
    fn default() -> Self {
        Self {
            enabled: true,
            admin_email: None,
            digest_delay_secs: 2,
            smtp: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSmtp {
    pub host: String,
    pub port: Option<u16>,
    /// `tls` (SMTPS, port 465), `starttls` (port 587) or `none` (loopback only).
    #[serde(default = "default_tls")]
    pub tls: String,
    pub username: Option<String>,
    pub password: Option<SecretSource>,
    pub from: String,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_tls() -> String {
    "starttls".into()
}

fn default_timeout() -> u64 {
    10
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    Tls,
    StartTls,
    None,
}

#[derive(Debug, Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub credentials: Option<(String, SecretString)>,
    pub from: String,
    pub timeout: std::time::Duration,
}

#[derive(Debug, Clone)]
pub struct NotificationSettings {
    pub enabled_by_default: bool,
    pub admin_email: Option<String>,
    pub digest_delay: std::time::Duration,
    pub smtp: Option<SmtpSettings>,
}

impl Default for NotificationSettings {
    fn default() -> Self {
        Self {
            enabled_by_default: true,
            admin_email: None,
            digest_delay: std::time::Duration::from_secs(2),
            smtp: None,
        }
    }
}

fn mailbox_ok(s: &str) -> bool {
    s.parse::<lettre::message::Mailbox>().is_ok()
}

/// Validates `[notifications]`; every error names its key.
pub fn settings(
    raw: &RawNotifications,
    base_dir: Option<&Path>,
) -> Result<NotificationSettings, ConfigError> {
    if let Some(a) = &raw.admin_email
        && !mailbox_ok(a)
    {
        return Err(invalid(
            "notifications.admin_email",
            "is not an email address",
        ));
    }
    if raw.digest_delay_secs > 3600 {
        return Err(invalid(
            "notifications.digest_delay_secs",
            "must be at most 3600",
        ));
    }
    let smtp = match &raw.smtp {
        None => {
            if raw.admin_email.is_some() {
                return Err(invalid(
                    "notifications.admin_email",
                    "needs [notifications.smtp] to be mailed",
                ));
            }
            None
        }
        Some(s) => {
            let host = s.host.trim();
            if host.is_empty() || host.contains(['/', ' ', ':']) {
                return Err(invalid(
                    "notifications.smtp.host",
                    "must be a host name or address, without scheme or port",
                ));
            }
            let tls = match s.tls.as_str() {
                "tls" => SmtpTls::Tls,
                "starttls" => SmtpTls::StartTls,
                "none" => SmtpTls::None,
                _ => {
                    return Err(invalid(
                        "notifications.smtp.tls",
                        "must be \"tls\", \"starttls\" or \"none\"",
                    ));
                }
            };
            let loopback = host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if tls == SmtpTls::None && !loopback {
                return Err(invalid(
                    "notifications.smtp.tls",
                    "\"none\" sends mail and the password in the clear: only for a server on this machine (localhost)",
                ));
            }
            let port = s.port.unwrap_or(match tls {
                SmtpTls::Tls => 465,
                SmtpTls::StartTls => 587,
                SmtpTls::None => 25,
            });
            if port == 0 {
                return Err(invalid("notifications.smtp.port", "must not be 0"));
            }
            if !mailbox_ok(&s.from) {
                return Err(invalid(
                    "notifications.smtp.from",
                    "is not an email address (e.g. \"gitbroker <gitbroker@example.com>\")",
                ));
            }
            let credentials = match (&s.username, &s.password) {
                (Some(u), Some(p)) => Some((
                    u.clone(),
                    p.resolve("notifications.smtp.password", base_dir)?,
                )),
                (None, None) => None,
                (Some(_), None) => {
                    return Err(invalid(
                        "notifications.smtp.password",
                        "is missing (username is set)",
                    ));
                }
                (None, Some(_)) => {
                    return Err(invalid(
                        "notifications.smtp.username",
                        "is missing (password is set)",
                    ));
                }
            };
            if !(1..=120).contains(&s.timeout_secs) {
                return Err(invalid(
                    "notifications.smtp.timeout_secs",
                    "must be between 1 and 120",
                ));
            }
            Some(SmtpSettings {
                host: host.to_owned(),
                port,
                tls,
                credentials,
                from: s.from.clone(),
                timeout: std::time::Duration::from_secs(s.timeout_secs),
            })
        }
    };
    Ok(NotificationSettings {
        enabled_by_default: raw.enabled,
        admin_email: raw.admin_email.clone(),
        digest_delay: std::time::Duration::from_secs(raw.digest_delay_secs),
        smtp,
    })
}
