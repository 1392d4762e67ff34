//! What happened to tokens, runtimes and sessions, as events: one value per
//! change or read, emitted by the lifecycle (and sign-in/out) beside its
//! `gitbroker::audit` log line, and handed to every registered
//! [`EventSink`] — the audit log, the webhook outbox, notifications.
//!
//! An event never carries a secret: ids, provider, provider login, status,
//! times and a token fingerprint (the first 12 hex digits of its SHA-256).
//! Sinks are called in order and awaited, so a sink that must not lose an
//! event (the webhook outbox) can make it durable before the change that
//! caused it is answered; a sink must never block for long — delivery to
//! the outside world happens in its own tasks.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, RwLock};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    #[serde(rename = "user_token.assigned")]
    UserTokenAssigned,
    #[serde(rename = "user_token.replaced")]
    UserTokenReplaced,
    #[serde(rename = "user_token.reused")]
    UserTokenReused,
    #[serde(rename = "user_token.deleted")]
    UserTokenDeleted,
    #[serde(rename = "user_token.refreshed")]
    UserTokenRefreshed,
    #[serde(rename = "user_token.status_changed")]
    UserTokenStatusChanged,
    /// A token with a problem works again (besides its `status_changed`).
    #[serde(rename = "user_token.recovered")]
    UserTokenRecovered,
    #[serde(rename = "user_token.revoked")]
    UserTokenRevoked,
    #[serde(rename = "user_token.read")]
    UserTokenRead,
    /// A check at the provider ended (`outcome` = the state it left).
    #[serde(rename = "user_token.checked")]
    UserTokenChecked,
    #[serde(rename = "runtime_token.set")]
    RuntimeTokenSet,
    #[serde(rename = "runtime_token.rotated")]
    RuntimeTokenRotated,
    #[serde(rename = "runtime_token.status_changed")]
    RuntimeTokenStatusChanged,
    #[serde(rename = "runtime_token.read")]
    RuntimeTokenRead,
    #[serde(rename = "runtime_token.checked")]
    RuntimeTokenChecked,
    #[serde(rename = "runtime.created")]
    RuntimeCreated,
    #[serde(rename = "runtime.updated")]
    RuntimeUpdated,
    #[serde(rename = "runtime.deleted")]
    RuntimeDeleted,
    #[serde(rename = "runtime.user_tokens_deleted")]
    RuntimeUserTokensDeleted,
    #[serde(rename = "session.signed_in")]
    SignedIn,
    #[serde(rename = "session.signed_out")]
    SignedOut,
    #[serde(rename = "notifications.hidden")]
    NotificationsHidden,
    #[serde(rename = "notifications.shown")]
    NotificationsShown,
    /// Admin changes to OAuth apps (`outcome` = the app id).
    #[serde(rename = "oauth_app.created")]
    OAuthAppCreated,
    #[serde(rename = "oauth_app.updated")]
    OAuthAppUpdated,
    #[serde(rename = "oauth_app.deleted")]
    OAuthAppDeleted,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UserTokenAssigned => "user_token.assigned",
            Self::UserTokenReplaced => "user_token.replaced",
            Self::UserTokenReused => "user_token.reused",
            Self::UserTokenDeleted => "user_token.deleted",
            Self::UserTokenRefreshed => "user_token.refreshed",
            Self::UserTokenStatusChanged => "user_token.status_changed",
            Self::UserTokenRecovered => "user_token.recovered",
            Self::UserTokenRevoked => "user_token.revoked",
            Self::UserTokenRead => "user_token.read",
            Self::UserTokenChecked => "user_token.checked",
            Self::RuntimeTokenSet => "runtime_token.set",
            Self::RuntimeTokenRotated => "runtime_token.rotated",
            Self::RuntimeTokenStatusChanged => "runtime_token.status_changed",
            Self::RuntimeTokenRead => "runtime_token.read",
            Self::RuntimeTokenChecked => "runtime_token.checked",
            Self::RuntimeCreated => "runtime.created",
            Self::RuntimeUpdated => "runtime.updated",
            Self::RuntimeDeleted => "runtime.deleted",
            Self::RuntimeUserTokensDeleted => "runtime.user_tokens_deleted",
            Self::SignedIn => "session.signed_in",
            Self::SignedOut => "session.signed_out",
            Self::NotificationsHidden => "notifications.hidden",
            Self::NotificationsShown => "notifications.shown",
            Self::OAuthAppCreated => "oauth_app.created",
            Self::OAuthAppUpdated => "oauth_app.updated",
            Self::OAuthAppDeleted => "oauth_app.deleted",
        }
    }

    /// Every action, for documentation and filters.
    pub const ALL: [Action; 26] = [
        Self::UserTokenAssigned,
        Self::UserTokenReplaced,
        Self::UserTokenReused,
        Self::UserTokenDeleted,
        Self::UserTokenRefreshed,
        Self::UserTokenStatusChanged,
        Self::UserTokenRecovered,
        Self::UserTokenRevoked,
        Self::UserTokenRead,
        Self::UserTokenChecked,
        Self::RuntimeTokenSet,
        Self::RuntimeTokenRotated,
        Self::RuntimeTokenStatusChanged,
        Self::RuntimeTokenRead,
        Self::RuntimeTokenChecked,
        Self::RuntimeCreated,
        Self::RuntimeUpdated,
        Self::RuntimeDeleted,
        Self::RuntimeUserTokensDeleted,
        Self::SignedIn,
        Self::SignedOut,
        Self::NotificationsHidden,
        Self::NotificationsShown,
        Self::OAuthAppCreated,
        Self::OAuthAppUpdated,
        Self::OAuthAppDeleted,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// A change (as opposed to a read or a check that changed nothing):
    /// what webhooks and notifications are about.
    pub fn is_change(self) -> bool {
        !matches!(
            self,
            Self::UserTokenRead
                | Self::RuntimeTokenRead
                | Self::UserTokenChecked
                | Self::RuntimeTokenChecked
        )
    }
}

/// Who did it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// A signed-in person (`actor.id` = their subject).
    User,
    /// A runtime with its credential (`actor.id` = the runtime id).
    Runtime,
    /// The admin API or the command line (`actor.id` = how).
    Admin,
    /// gitbroker itself: background checks, refreshes, clean-up.
    System,
}

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Runtime => "runtime",
            Self::Admin => "admin",
            Self::System => "system",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub kind: ActorKind,
    pub id: String,
}

impl Actor {
    pub fn user(sub: impl Into<String>) -> Self {
        Self {
            kind: ActorKind::User,
            id: sub.into(),
        }
    }
    pub fn runtime(id: impl Into<String>) -> Self {
        Self {
            kind: ActorKind::Runtime,
            id: id.into(),
        }
    }
    pub fn system() -> Self {
        Self {
            kind: ActorKind::System,
            id: "gitbroker".into(),
        }
    }
    /// The lifecycle's actor strings: `admin:…`, `runtime:…`, `user:…`,
    /// `config`.
    pub fn parse(actor: &str) -> Self {
        match actor.split_once(':') {
            Some(("runtime", id)) => Self::runtime(id),
            Some(("user", id)) => Self::user(id),
            Some(("admin", id)) => Self {
                kind: ActorKind::Admin,
                id: id.to_owned(),
            },
            _ => Self {
                kind: ActorKind::Admin,
                id: actor.to_owned(),
            },
        }
    }
}

/// A status change: the states as in the token APIs (`valid`,
/// `expiring_soon`, `expired`, `invalid`, `missing_scopes`,
/// `needs_reauthorization`, `unknown`, `unreadable`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChange {
    pub from: String,
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One thing that happened. Never a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// `evt_` and 32 hex digits, unique.
    pub id: String,
    pub at: DateTime<Utc>,
    pub action: Action,
    pub actor: Actor,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The provider login the token acts as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<String>,
    /// The grant (one provider authorization of a user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusChange>,
    /// `ok`, `revoked`, `kept`, `failed`, … as the action defines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

impl Event {
    pub fn new(action: Action, actor: Actor, at: DateTime<Utc>) -> Self {
        use rand::RngCore;
        let mut id = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut id);
        Self {
            id: format!("evt_{}", hex::encode(id)),
            at,
            action,
            actor,
            runtime: None,
            user: None,
            provider: None,
            login: None,
            grant: None,
            status: None,
            outcome: None,
            fingerprint: None,
        }
    }
    pub fn runtime(mut self, runtime: impl Into<String>) -> Self {
        self.runtime = Some(runtime.into());
        self
    }
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }
    pub fn provider(mut self, provider: impl Into<String>) -> Self {
        self.provider = Some(provider.into());
        self
    }
    pub fn login(mut self, login: Option<impl Into<String>>) -> Self {
        self.login = login.map(Into::into);
        self
    }
    pub fn grant(mut self, grant: impl Into<String>) -> Self {
        self.grant = Some(grant.into());
        self
    }
    pub fn status(mut self, from: &str, to: &str, reason: Option<&str>) -> Self {
        self.status = Some(StatusChange {
            from: from.to_owned(),
            to: to.to_owned(),
            reason: reason.map(str::to_owned),
        });
        self
    }
    pub fn outcome(mut self, outcome: impl Into<String>) -> Self {
        self.outcome = Some(outcome.into());
        self
    }
    pub fn fingerprint(mut self, fingerprint: impl Into<String>) -> Self {
        self.fingerprint = Some(fingerprint.into());
        self
    }
}

/// Receives every event, in order of emission per emitter.
#[async_trait]
pub trait EventSink: Send + Sync + 'static {
    async fn record(&self, event: &Event);
}

/// The sinks events go to. Cheap to clone; sinks are added once at start.
#[derive(Clone, Default)]
pub struct Events {
    sinks: Arc<RwLock<Vec<Arc<dyn EventSink>>>>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("sinks", &self.sinks().len())
            .finish()
    }
}

impl Events {
    pub fn add(&self, sink: Arc<dyn EventSink>) {
        if let Ok(mut sinks) = self.sinks.write() {
            sinks.push(sink);
        }
    }

    fn sinks(&self) -> Vec<Arc<dyn EventSink>> {
        self.sinks.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// Hands `event` to every sink, in the order they were added.
    pub async fn emit(&self, event: Event) {
        for sink in self.sinks() {
            sink.record(&event).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_round_trip_through_their_names() {
        for a in Action::ALL {
            assert_eq!(Action::parse(a.as_str()), Some(a));
            let json = serde_json::to_string(&a).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", a.as_str()));
        }
        assert_eq!(Action::parse("user_token.stolen"), None);
    }

    #[test]
    fn actors_from_the_lifecycle_strings() {
        assert_eq!(Actor::parse("runtime:acme"), Actor::runtime("acme"));
        assert_eq!(Actor::parse("admin:api").kind, ActorKind::Admin);
        assert_eq!(Actor::parse("config").id, "config");
    }

    struct Collect(tokio::sync::Mutex<Vec<Event>>);

    #[async_trait]
    impl EventSink for Collect {
        async fn record(&self, event: &Event) {
            self.0.lock().await.push(event.clone());
        }
    }

    #[tokio::test]
    async fn every_sink_gets_every_event_in_order() {
        let events = Events::default();
        let a = Arc::new(Collect(Default::default()));
        let b = Arc::new(Collect(Default::default()));
        events.add(a.clone());
        events.add(b.clone());
        let at = DateTime::<Utc>::UNIX_EPOCH;
        let one = Event::new(Action::UserTokenAssigned, Actor::user("u1"), at).runtime("rt");
        let two = Event::new(Action::UserTokenDeleted, Actor::user("u1"), at);
        assert_ne!(one.id, two.id);
        events.emit(one.clone()).await;
        events.emit(two.clone()).await;
        for sink in [a, b] {
            assert_eq!(*sink.0.lock().await, vec![one.clone(), two.clone()]);
        }
        let json = serde_json::to_value(&one).unwrap_or_default();
        assert_eq!(json["action"], "user_token.assigned");
        assert_eq!(json["actor"]["kind"], "user");
        assert!(json.get("fingerprint").is_none());
    }
}
