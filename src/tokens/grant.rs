//! The grant: one Git user token as the provider issued it (an OAuth grant
//! or a pasted personal access token), stored once per user and assigned
//! to one or more of that user's runtimes. Everything about it — secrets,
//! dates, scopes, status, the runtimes it may be served to — is sealed
//! together, so nothing about a token can be changed in the store without
//! the key. The decisions here are pure: they take `now` and settings.

use crate::providers::{GitAuth, ProviderKind};
use chrono::{DateTime, Duration, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// How the token came in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum TokenSource {
    /// Through the OAuth flow of this OAuth app.
    OAuth { app: String },
    /// Pasted by the user; `kind` as the provider module named it
    /// ("classic personal access token", "API token", …).
    Pat { kind: String },
}

impl TokenSource {
    pub fn app(&self) -> Option<&str> {
        match self {
            Self::OAuth { app } => Some(app),
            Self::Pat { .. } => None,
        }
    }

    pub fn method(&self) -> &'static str {
        match self {
            Self::OAuth { .. } => "oauth",
            Self::Pat { .. } => "pat",
        }
    }
}

/// The statuses a stored token can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Valid,
    /// Valid, but its authorization ends within the configured days.
    ExpiringSoon,
    Expired,
    /// The provider rejects it: revoked, or otherwise invalid (HTTP 401).
    Invalid,
    /// It lacks scopes: narrowed at the provider, or the admin now
    /// requires more.
    MissingScopes,
    /// Its refresh failed for good: the user must authorize again.
    NeedsReauthorization,
    /// A GitHub App user token whose App is not installed where the
    /// runtime needs it: it works, but reaches nothing useful. The user
    /// (or an owner) installs the App; the next check sees it.
    NotInstalled,
    /// The last check could not reach a verdict (temporary failure). Never
    /// a reason to stop serving it.
    Unknown,
    /// It cannot be decrypted: its key was retired.
    Unreadable,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::ExpiringSoon => "expiring_soon",
            Self::Expired => "expired",
            Self::Invalid => "invalid",
            Self::MissingScopes => "missing_scopes",
            Self::NeedsReauthorization => "needs_reauthorization",
            Self::NotInstalled => "not_installed",
            Self::Unknown => "unknown",
            Self::Unreadable => "unreadable",
        }
    }

    /// Whether a runtime may be served a token in this state.
    pub fn servable(self) -> bool {
        matches!(self, Self::Valid | Self::ExpiringSoon | Self::Unknown)
    }
}

/// A stored verdict on a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Status {
    pub state: State,
    /// When it entered this state.
    pub since: DateTime<Utc>,
    /// When a check last reached the provider with a verdict.
    pub checked_at: Option<DateTime<Utc>>,
    /// Why, in words for a person (never a secret).
    pub reason: Option<String>,
}

impl Status {
    pub fn new(state: State, now: DateTime<Utc>, reason: Option<String>) -> Self {
        Self {
            state,
            since: now,
            checked_at: None,
            reason,
        }
    }

    /// Moves to `state`; `since` changes only when the state does.
    pub fn set(&mut self, state: State, now: DateTime<Utc>, reason: Option<String>) {
        if self.state != state {
            self.since = now;
        }
        self.state = state;
        self.reason = reason;
    }
}

/// One runtime (incarnation) a grant may be served to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignmentRef {
    pub runtime: String,
    pub incarnation: String,
    pub assigned_at: DateTime<Utc>,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct Grant {
    pub id: String,
    pub user: String,
    pub provider: ProviderKind,
    /// The provider's API base URL when it was issued: a grant serves one
    /// provider host.
    pub api: String,
    pub source: TokenSource,
    #[serde(with = "secret_string")]
    pub access_token: SecretString,
    #[serde(
        with = "secret_option",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub refresh_token: Option<SecretString>,
    /// Pasted tokens: the username and email that came with them, to check
    /// them again the same way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pat_username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pat_email: Option<String>,
    pub git_username: String,
    /// How to present it to Git; absent in grants written before it was
    /// recorded, which were all HTTP Basic with `git_username`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_auth: Option<GitAuth>,
    pub provider_login: String,
    pub scopes: Vec<String>,
    /// When the user authorized (or pasted) it: the admin lifetime counts
    /// from here, whatever refreshes follow.
    pub authorized_at: DateTime<Utc>,
    /// When the current access token was issued.
    pub issued_at: DateTime<Utc>,
    /// The provider's expiry of the current access token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_expires_at: Option<DateTime<Utc>>,
    /// The end of the admin-set lifetime (`token_lifetime_secs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refreshed_at: Option<DateTime<Utc>>,
    /// Consecutive temporary refresh failures, and no refresh before this.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub refresh_failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_cooldown_until: Option<DateTime<Utc>>,
    pub assignments: Vec<AssignmentRef>,
    pub status: Status,
    pub next_check_at: DateTime<Utc>,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("id", &self.id)
            .field("user", &self.user)
            .field("provider", &self.provider)
            .field("source", &self.source)
            .field("scopes", &self.scopes)
            .field("access_expires_at", &self.access_expires_at)
            .field("cap_at", &self.cap_at)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The lifecycle's timing settings, as the decisions need them.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Refresh when the access token has less than this left.
    pub refresh_margin: Duration,
    /// Refresh a refresh token at least this often, used or not.
    pub keepalive: Duration,
    /// Check every token about this often.
    pub check_interval: Duration,
    /// "Expiring soon" this long before the authorization ends.
    pub expiring_soon: Duration,
}

impl Grant {
    /// The expiry a runtime is told: the provider's, capped by the admin's.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        match (self.access_expires_at, self.cap_at) {
            (Some(a), Some(c)) => Some(a.min(c)),
            (a, c) => a.or(c),
        }
    }

    pub fn refreshable(&self) -> bool {
        self.refresh_token.is_some() && matches!(self.source, TokenSource::OAuth { .. })
    }

    pub fn cap_reached(&self, now: DateTime<Utc>) -> bool {
        self.cap_at.is_some_and(|c| now >= c)
    }

    /// Whether the token being served now has expired.
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at().is_some_and(|e| now >= e)
    }

    /// When the authorization itself ends (not the short-lived access
    /// token of a refreshable grant).
    pub fn usable_until(&self) -> Option<DateTime<Utc>> {
        if self.refreshable() {
            self.cap_at
        } else {
            self.expires_at()
        }
    }

    /// Whether a refresh would give a runtime a longer-lived token: the
    /// access token ends within `margin` and before the admin's cap.
    pub fn needs_refresh(&self, now: DateTime<Utc>, margin: Duration) -> bool {
        if !self.refreshable() || self.cap_reached(now) {
            return false;
        }
        match self.access_expires_at {
            Some(at) => at - now < margin && self.cap_at.is_none_or(|c| at < c),
            None => false,
        }
    }

    /// Whether the refresh token should be used to keep it alive.
    pub fn keepalive_due(&self, now: DateTime<Utc>, every: Duration) -> bool {
        self.refreshable()
            && !self.cap_reached(now)
            && self.last_refreshed_at.unwrap_or(self.issued_at) + every <= now
    }

    /// When background work next has something to do for this grant:
    /// a check, a refresh ahead of expiry (twice the request margin, so
    /// runtimes seldom wait for one), or a keep-alive refresh.
    pub fn next_wake(&self, t: &Timing) -> DateTime<Utc> {
        let mut wake = self.next_check_at;
        if self.refreshable() && self.status.state != State::NeedsReauthorization {
            if let Some(at) = self.access_expires_at
                && self.cap_at.is_none_or(|c| at < c)
            {
                wake = wake.min(at - t.refresh_margin * 2);
            }
            wake = wake.min(self.last_refreshed_at.unwrap_or(self.issued_at) + t.keepalive);
        }
        if let Some(c) = self.refresh_cooldown_until {
            wake = wake.max(c.min(self.next_check_at));
        }
        wake
    }

    /// The status as of `now`: the stored verdict, unless time or the
    /// app's requirements say otherwise. `required` are the scopes the
    /// token's OAuth app asks for now (`None` for pasted tokens).
    pub fn effective_status(
        &self,
        now: DateTime<Utc>,
        required_missing: &[String],
        t: &Timing,
    ) -> Status {
        let mut s = self.status.clone();
        match s.state {
            State::Invalid | State::NeedsReauthorization | State::Expired | State::Unreadable => {
                return s;
            }
            State::MissingScopes if required_missing.is_empty() => return s,
            _ => {}
        }
        if self.cap_reached(now) {
            let at = self.cap_at.unwrap_or(now);
            s.set(
                State::Expired,
                at,
                Some(
                    "the authorization reached the lifetime the admin set; authorize again".into(),
                ),
            );
            s.since = at;
        } else if !self.refreshable() && self.expired(now) {
            let at = self.expires_at().unwrap_or(now);
            s.set(State::Expired, at, Some("the token expired".into()));
            s.since = at;
        } else if !required_missing.is_empty() {
            s.set(
                State::MissingScopes,
                now,
                Some(format!(
                    "the OAuth app now requires scopes the token lacks: {}; authorize again",
                    required_missing.join(", ")
                )),
            );
        } else if s.state.servable()
            && self
                .usable_until()
                .is_some_and(|u| u - now < t.expiring_soon)
        {
            let reason = format!(
                "its authorization ends on {}",
                self.usable_until()
                    .map(|u| u.format("%Y-%m-%d %H:%M UTC").to_string())
                    .unwrap_or_default()
            );
            s.set(State::ExpiringSoon, now, Some(reason));
        }
        s
    }

    pub fn assigned_to(&self, runtime: &str, incarnation: &str) -> bool {
        self.assignments
            .iter()
            .any(|a| a.runtime == runtime && a.incarnation == incarnation)
    }

    /// How a runtime presents it to Git.
    pub fn git_auth(&self) -> GitAuth {
        self.git_auth
            .clone()
            .unwrap_or_else(|| GitAuth::basic(self.git_username.clone()))
    }

    pub fn access_token(&self) -> &str {
        self.access_token.expose_secret()
    }
}

/// Why a refresh gave no new token.
#[derive(Debug, Clone)]
pub enum RefreshFailure {
    /// The grant was deleted meanwhile.
    Gone,
    /// For good: the user must authorize again.
    NeedsReauthorization(String),
    /// Try again after `retry_after`.
    Temporary {
        detail: String,
        retry_after: std::time::Duration,
    },
}

/// A short, stable fingerprint of a token for logs and audit records: the
/// first 12 hex digits of its SHA-256. Never the token.
pub fn fingerprint(token: &SecretString) -> String {
    let mut hex = crate::crypto::sha256_hex(token.expose_secret().as_bytes());
    hex.truncate(12);
    hex
}

mod secret_string {
    use secrecy::{ExposeSecret, SecretString};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &SecretString, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.expose_secret())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SecretString, D::Error> {
        Ok(SecretString::from(String::deserialize(d)?))
    }
}

mod secret_option {
    use secrecy::{ExposeSecret, SecretString};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(v.expose_secret()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SecretString>, D::Error> {
        Ok(Option::<String>::deserialize(d)?.map(SecretString::from))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::disallowed_methods)]
    use super::*;

    fn t() -> Timing {
        Timing {
            refresh_margin: Duration::minutes(10),
            keepalive: Duration::hours(24),
            check_interval: Duration::hours(4),
            expiring_soon: Duration::days(7),
        }
    }

    pub(crate) fn grant(now: DateTime<Utc>) -> Grant {
        Grant {
            id: "g".into(),
            user: "u".into(),
            provider: ProviderKind::Gitlab,
            api: "https://gitlab.com/api/v4".into(),
            source: TokenSource::OAuth { app: "a".into() },
            access_token: SecretString::from("secret-access".to_owned()),
            refresh_token: Some(SecretString::from("secret-refresh".to_owned())),
            pat_username: None,
            pat_email: None,
            git_username: "oauth2".into(),
            git_auth: None,
            provider_login: "alice".into(),
            scopes: vec!["api".into()],
            authorized_at: now,
            issued_at: now,
            access_expires_at: Some(now + Duration::hours(2)),
            cap_at: None,
            last_refreshed_at: None,
            refresh_failures: 0,
            refresh_cooldown_until: None,
            assignments: vec![],
            status: Status::new(State::Valid, now, None),
            next_check_at: now + Duration::hours(4),
        }
    }

    #[test]
    fn refresh_ahead_of_expiry_but_never_past_the_cap() {
        let now = Utc::now();
        let g = grant(now);
        assert!(!g.needs_refresh(now, Duration::minutes(10)));
        let later = now + Duration::minutes(115);
        assert!(g.needs_refresh(later, Duration::minutes(10)));
        // the admin's lifetime ends before the access token: refreshing
        // would not give a runtime anything
        let mut capped = grant(now);
        capped.cap_at = Some(now + Duration::hours(1));
        assert!(!capped.needs_refresh(later, Duration::minutes(10)));
        assert_eq!(capped.expires_at(), Some(now + Duration::hours(1)));
        assert!(capped.expired(now + Duration::minutes(61)));
        // no refresh token, nothing to refresh with
        let mut pat = grant(now);
        pat.refresh_token = None;
        assert!(!pat.needs_refresh(later, Duration::minutes(10)));
    }

    #[test]
    fn wakes_for_refresh_keepalive_and_checks() {
        let now = Utc::now();
        let g = grant(now);
        // twice the margin before the 2-hour expiry
        assert_eq!(g.next_wake(&t()), now + Duration::minutes(100));
        let mut pat = grant(now);
        pat.refresh_token = None;
        pat.source = TokenSource::Pat { kind: "k".into() };
        assert_eq!(pat.next_wake(&t()), now + Duration::hours(4));
        let mut long = grant(now);
        long.access_expires_at = None;
        assert_eq!(long.next_wake(&t()), now + Duration::hours(4));
        long.next_check_at = now + Duration::days(3);
        assert_eq!(
            long.next_wake(&t()),
            now + Duration::hours(24),
            "keep-alive"
        );
    }

    #[test]
    fn effective_status_follows_time_and_requirements() {
        let now = Utc::now();
        let mut g = grant(now);
        g.cap_at = Some(now + Duration::days(3));
        assert_eq!(
            g.effective_status(now, &[], &t()).state,
            State::ExpiringSoon
        );
        let after = g.effective_status(now + Duration::days(4), &[], &t());
        assert_eq!(after.state, State::Expired);
        assert_eq!(after.since, now + Duration::days(3));
        let missing = g.effective_status(now, &["read_api".into()], &t());
        assert_eq!(missing.state, State::MissingScopes);
        assert!(missing.reason.unwrap().contains("read_api"));
        // a stored verdict of the provider stands
        g.status.set(State::Invalid, now, Some("revoked".into()));
        assert_eq!(g.effective_status(now, &[], &t()).state, State::Invalid);
        // a refreshable grant whose access token lapsed is not "expired"
        let g = grant(now);
        assert_eq!(
            g.effective_status(now + Duration::hours(3), &[], &t())
                .state,
            State::Valid
        );
    }

    #[test]
    fn debug_and_fingerprint_hide_the_token() {
        let g = grant(Utc::now());
        let text = format!("{g:?}");
        assert!(!text.contains("secret-"), "{text}");
        let fp = fingerprint(&SecretString::from("ghp_secret".to_owned()));
        assert_eq!(fp.len(), 12);
        assert!(!fp.contains("secret"));
    }
}
