//! Notifications: people learn that a Git user token of theirs needs
//! attention — expiring soon, expired, revoked or invalid, missing scopes,
//! needing re-authorization — and that it works again, without asking; and
//! admins learn the same of Git Runtime tokens.
//!
//! The [`Notifier`] is an [`EventSink`]: events that may change a user's
//! statuses (assign, delete, refresh, status changes, background checks)
//! queue that user; a worker gathers the queue for `digest_delay`, then
//! compares each user's statuses as of now with the ones last notified (a
//! record per user, written with compare-and-swap, so two replicas never
//! notify the same change twice) and records a notification per change, and
//! mails one digest per user (when SMTP is configured, the user has an
//! address verified by the identity provider, and has not turned
//! notifications off) — never for runtimes whose notifications the user hid.
//! A temporary check failure (`unknown`) never notifies. Time-derived
//! statuses (expiring soon, expired) are noticed at the token's next
//! background check (every `lifecycle.check_interval_secs`).
//!
//! Hidden means not alerted: the page still shows the status, the banner
//! and the mail leave the runtime out.

pub mod mail;

use crate::auth::SessionUser;
use crate::clock::Clock;
use crate::config::notifications::NotificationSettings;
use crate::crypto::{self, Keyring};
use crate::events::{Action, Event, EventSink};
use crate::registry::Registry;
use crate::store::{Collection, Expect, Store, StoreError};
use crate::tokens::{Lifecycle, State, TokenSlot};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, watch};

/// The collection kind of what is remembered of people (sealed).
pub const PROFILE: &str = "user_profile";
const PREFS: &str = "notification_prefs";
const BOOK: &str = "notification_book";
const ADMIN_BOOK: &str = "admin_notification_book";
/// Notifications kept per user (the oldest go first).
const RECENT: usize = 50;
/// Users waiting to be looked at; beyond it an event is counted and
/// dropped — the token's next check queues its user again.
const QUEUE: usize = 4096;

/// The states that need attention, as in the token APIs.
pub const ATTENTION: [State; 6] = [
    State::ExpiringSoon,
    State::Expired,
    State::Invalid,
    State::MissingScopes,
    State::NeedsReauthorization,
    State::NotInstalled,
];

pub fn needs_attention(s: State) -> bool {
    ATTENTION.contains(&s)
}

/// A sentence for a state, as the page and the mail say it.
pub fn describe(kind: &str) -> &'static str {
    match kind {
        "expiring_soon" => "expiring soon",
        "expired" => "expired",
        "invalid" => "revoked or invalid",
        "missing_scopes" => "missing scopes",
        "not_installed" => "GitHub App not installed",
        "needs_reauthorization" => "needs re-authorization",
        "recovered" => "works again",
        _ => "changed",
    }
}

/// What the notifier remembers of a person from their last sign-in: the
/// groups decide their runtimes, the address is used only if the identity
/// provider verified it. Sealed (it is personal data).
#[derive(Clone, Serialize, Deserialize)]
struct Profile {
    sub: String,
    iss: String,
    name: String,
    email: Option<String>,
    groups: Vec<String>,
}

/// A person's choices.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Prefs {
    /// `None`: the configured default.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Runtimes whose notifications are hidden.
    #[serde(default)]
    pub hidden: BTreeSet<String>,
}

/// One notification.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Notification {
    pub id: String,
    pub runtime: String,
    /// The state that needs attention (`expiring_soon`, …), or `recovered`.
    pub kind: String,
    #[serde(default)]
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
    /// Whether it went out in a mail.
    #[serde(default)]
    pub mailed: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Book {
    /// Per runtime, the attention state last notified.
    #[serde(default)]
    seen: BTreeMap<String, String>,
    /// Newest last.
    #[serde(default)]
    recent: Vec<Notification>,
}

#[derive(Debug)]
enum Job {
    User(String),
    Admin,
}

/// What `GET /api/v1/me/notifications` shows.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Overview {
    pub enabled: bool,
    pub hidden: Vec<String>,
    /// Runtimes needing attention now (hidden ones included, flagged).
    pub attention: Vec<Attention>,
    /// Newest first.
    pub recent: Vec<RecentView>,
    pub email: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Attention {
    pub runtime: String,
    pub state: &'static str,
    pub reason: Option<String>,
    pub hidden: bool,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RecentView {
    #[serde(flatten)]
    pub notification: Notification,
    pub hidden: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("notification record does not open: {0}")]
    Crypto(#[from] crypto::CryptoError),
    #[error("{0}")]
    Tokens(String),
    #[error("no such runtime `{0}` among yours")]
    UnknownRuntime(String),
}

pub struct Notifier {
    store: Arc<dyn Store>,
    keyring: Arc<Keyring>,
    lifecycle: Arc<Lifecycle>,
    registry: Arc<Registry>,
    clock: Arc<dyn Clock>,
    settings: NotificationSettings,
    tokens_url: String,
    mailer: Option<mail::Mailer>,
    tx: mpsc::Sender<Job>,
    queued: AtomicU64,
    dropped: AtomicU64,
    done: watch::Sender<u64>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("mailer", &self.mailer)
            .finish_non_exhaustive()
    }
}

fn collection(kind: &'static str, user: &str) -> Collection {
    Collection::new(kind, user)
}

/// Where a person's profile lives.
pub fn profile_collection(sub: &str) -> Collection {
    Collection::new(PROFILE, sub)
}

/// The associated data a person's profile is sealed with.
pub fn profile_aad(sub: &str) -> Vec<u8> {
    crypto::associated_data(PROFILE, &[sub])
}

impl Notifier {
    /// Starts the worker and registers the notifier for the lifecycle's
    /// events.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        store: Arc<dyn Store>,
        keyring: Arc<Keyring>,
        lifecycle: Arc<Lifecycle>,
        registry: Arc<Registry>,
        clock: Arc<dyn Clock>,
        settings: NotificationSettings,
        public_url: &url::Url,
    ) -> Result<Arc<Self>, String> {
        let mailer = settings.smtp.as_ref().map(mail::Mailer::new).transpose()?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let tokens_url = public_url
            .join("/tokens")
            .map(|u| u.to_string())
            .unwrap_or_else(|_| public_url.to_string());
        let this = Arc::new(Self {
            store,
            keyring,
            lifecycle: lifecycle.clone(),
            registry,
            clock,
            settings,
            tokens_url,
            mailer,
            tx,
            queued: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            done: watch::channel(0).0,
        });
        tokio::spawn(Self::work(Arc::downgrade(&this), rx));
        lifecycle.events().add(this.clone());
        Ok(this)
    }

    fn enqueue(&self, job: Job) {
        match self.tx.try_send(job) {
            Ok(()) => {
                self.queued.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(dropped = n, job = ?match e { mpsc::error::TrySendError::Full(j) | mpsc::error::TrySendError::Closed(j) => j }, "notification queue full: this change is noticed at the token's next check");
            }
        }
    }

    /// Queues a person to be looked at (as an event about their tokens does).
    pub fn look_at(&self, sub: &str) {
        self.enqueue(Job::User(sub.to_owned()));
    }

    /// Waits until everything queued so far has been looked at (tests,
    /// shutdown).
    pub async fn settled(&self) {
        let target = self.queued.load(Ordering::SeqCst);
        let mut rx = self.done.subscribe();
        let _ = rx.wait_for(|n| *n >= target).await;
    }

    async fn work(this: std::sync::Weak<Self>, mut rx: mpsc::Receiver<Job>) {
        while let Some(first) = rx.recv().await {
            let Some(me) = this.upgrade() else { return };
            // gather a batch: one digest per user per batch of changes
            if !me.settings.digest_delay.is_zero() {
                tokio::time::sleep(me.settings.digest_delay).await;
            }
            let mut jobs = vec![first];
            while let Ok(j) = rx.try_recv() {
                jobs.push(j);
            }
            let n = jobs.len() as u64;
            let mut users = BTreeSet::new();
            let mut admin = false;
            for j in jobs {
                match j {
                    Job::User(u) => {
                        users.insert(u);
                    }
                    Job::Admin => admin = true,
                }
            }
            for u in users {
                if let Err(e) = me.reconcile(&u).await {
                    tracing::warn!(user = %u, error = %e, "notifications for a user could not be worked out; next change or check retries");
                }
            }
            if admin && let Err(e) = me.reconcile_admin().await {
                tracing::warn!(error = %e, "admin notifications could not be worked out");
            }
            me.done.send_modify(|d| *d += n);
        }
    }

    /// Remembers who signed in (groups, verified address) and looks at
    /// their tokens.
    pub async fn remember(&self, user: &SessionUser) {
        let profile = Profile {
            sub: user.sub.clone(),
            iss: user.iss.clone(),
            name: user.name.clone(),
            email: user.email.clone(),
            groups: user.groups.clone(),
        };
        let result = async {
            let plain = serde_json::to_vec(&profile)
                .map_err(|e| StoreError::corrupt("user profile", &e))?;
            let sealed = self
                .keyring
                .seal_envelope(&profile_aad(&user.sub), &plain)?;
            self.store
                .record_put(
                    &collection(PROFILE, &user.sub),
                    "profile",
                    &sealed,
                    Expect::Any,
                )
                .await?;
            Ok::<_, NotifyError>(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(user = %user.sub, error = %e, "could not remember the user for notifications");
        }
        self.enqueue(Job::User(user.sub.clone()));
    }

    async fn profile(&self, sub: &str) -> Result<Option<Profile>, NotifyError> {
        let Some(v) = self
            .store
            .record_get(&collection(PROFILE, sub), "profile")
            .await?
        else {
            return Ok(None);
        };
        let plain = self.keyring.open_envelope(&profile_aad(sub), &v.value)?;
        Ok(Some(
            serde_json::from_slice(&plain).map_err(|e| StoreError::corrupt("user profile", &e))?,
        ))
    }

    /// A person's JSON record of `kind` (the default when there is none)
    /// and its version.
    async fn read<T: serde::de::DeserializeOwned + Default>(
        &self,
        kind: &'static str,
        sub: &str,
    ) -> Result<(T, Option<u64>), NotifyError> {
        match self.store.record_get(&collection(kind, sub), kind).await? {
            None => Ok((T::default(), None)),
            Some(v) => Ok((
                serde_json::from_slice(&v.value).map_err(|e| StoreError::corrupt(kind, &e))?,
                Some(v.version),
            )),
        }
    }

    /// Writes it back only if it is still at `version` (absent for `None`);
    /// `Ok(false)` when another writer came first.
    async fn write<T: Serialize>(
        &self,
        kind: &'static str,
        sub: &str,
        value: &T,
        version: Option<u64>,
    ) -> Result<bool, NotifyError> {
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError::corrupt(kind, &e))?;
        let expect = version.map_or(Expect::Absent, Expect::Version);
        match self
            .store
            .record_put(&collection(kind, sub), kind, &bytes, expect)
            .await
        {
            Ok(_) => Ok(true),
            Err(StoreError::Conflict) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn prefs(&self, sub: &str) -> Result<(Prefs, Option<u64>), NotifyError> {
        self.read(PREFS, sub).await
    }

    /// Whether people who have not chosen get notifications.
    pub fn default_enabled(&self) -> bool {
        self.settings.enabled_by_default
    }

    fn enabled(&self, prefs: &Prefs) -> bool {
        prefs.enabled.unwrap_or(self.settings.enabled_by_default)
    }

    /// Changes a person's choices with compare-and-swap.
    async fn change_prefs(
        &self,
        sub: &str,
        change: impl Fn(&mut Prefs),
    ) -> Result<Prefs, NotifyError> {
        for _ in 0..20 {
            let (mut prefs, version) = self.prefs(sub).await?;
            change(&mut prefs);
            if self.write(PREFS, sub, &prefs, version).await? {
                return Ok(prefs);
            }
        }
        Err(StoreError::Conflict.into())
    }

    /// Hides (or shows again) one runtime's notifications.
    pub async fn set_hidden(
        &self,
        user: &SessionUser,
        runtime: &str,
        hidden: bool,
    ) -> Result<Prefs, NotifyError> {
        // only runtimes the person has
        self.lifecycle
            .user_runtime(user, runtime)
            .await
            .map_err(|_| NotifyError::UnknownRuntime(runtime.to_owned()))?;
        let prefs = self
            .change_prefs(&user.sub, |p| {
                if hidden {
                    p.hidden.insert(runtime.to_owned());
                } else {
                    p.hidden.remove(runtime);
                }
            })
            .await?;
        let action = if hidden {
            Action::NotificationsHidden
        } else {
            Action::NotificationsShown
        };
        let event = Event::new(
            action,
            crate::events::Actor::user(&user.sub),
            self.clock.now(),
        )
        .user(&user.sub)
        .runtime(runtime);
        self.lifecycle.events().emit(event).await;
        tracing::info!(target: "gitbroker::audit", action = action.as_str(), user = %user.sub, runtime = %runtime, "notifications for a runtime changed");
        Ok(prefs)
    }

    /// Turns all of a person's notifications on or off.
    pub async fn set_enabled(
        &self,
        user: &SessionUser,
        enabled: bool,
    ) -> Result<Prefs, NotifyError> {
        let prefs = self
            .change_prefs(&user.sub, |p| p.enabled = Some(enabled))
            .await?;
        let action = if enabled {
            Action::NotificationsShown
        } else {
            Action::NotificationsHidden
        };
        let event = Event::new(
            action,
            crate::events::Actor::user(&user.sub),
            self.clock.now(),
        )
        .user(&user.sub)
        .outcome(if enabled { "all_on" } else { "all_off" });
        self.lifecycle.events().emit(event).await;
        tracing::info!(target: "gitbroker::audit", action = action.as_str(), user = %user.sub, enabled, "notifications turned on or off");
        Ok(prefs)
    }

    /// The person's runtimes and their token states as of now.
    async fn states(
        &self,
        user: &SessionUser,
    ) -> Result<BTreeMap<String, Option<(State, Option<String>)>>, NotifyError> {
        let views = self
            .lifecycle
            .user_runtimes(user)
            .await
            .map_err(|e| NotifyError::Tokens(e.to_string()))?;
        let mut out = BTreeMap::new();
        for (_, runtimes) in views {
            for r in runtimes {
                let state = match r.token {
                    TokenSlot::None => None,
                    TokenSlot::Unreadable => Some((State::Unreadable, None)),
                    TokenSlot::Present(t) => Some((t.status.state, t.status.reason.clone())),
                };
                out.insert(r.runtime.id, state);
            }
        }
        Ok(out)
    }

    /// What the person's page and API show.
    pub async fn overview(&self, user: &SessionUser) -> Result<Overview, NotifyError> {
        let (prefs, _) = self.prefs(&user.sub).await?;
        let states = self.states(user).await?;
        let attention = states
            .iter()
            .filter_map(|(rt, s)| match s {
                Some((state, reason)) if needs_attention(*state) => Some(Attention {
                    runtime: rt.clone(),
                    state: state.as_str(),
                    reason: reason.clone(),
                    hidden: prefs.hidden.contains(rt),
                }),
                _ => None,
            })
            .collect();
        let book = self.book(&user.sub).await?.0;
        let recent = book
            .recent
            .into_iter()
            .rev()
            .map(|n| RecentView {
                hidden: prefs.hidden.contains(&n.runtime),
                notification: n,
            })
            .collect();
        let email = self.profile(&user.sub).await?.and_then(|p| p.email);
        Ok(Overview {
            enabled: self.enabled(&prefs),
            hidden: prefs.hidden.iter().cloned().collect(),
            attention,
            recent,
            email,
        })
    }

    async fn book(&self, sub: &str) -> Result<(Book, Option<u64>), NotifyError> {
        self.read(BOOK, sub).await
    }

    fn new_id(&self) -> String {
        format!(
            "ntf_{}_{}",
            self.clock.now().timestamp_millis(),
            crypto::random_string(8)
        )
    }

    /// Compares a person's statuses with the ones last notified; records
    /// and mails what changed.
    async fn reconcile(&self, sub: &str) -> Result<(), NotifyError> {
        let Some(profile) = self.profile(sub).await? else {
            // never signed in here: nobody to notify, no accounts known
            return Ok(());
        };
        let user = SessionUser {
            sub: profile.sub.clone(),
            iss: profile.iss.clone(),
            name: profile.name.clone(),
            email: profile.email.clone(),
            groups: profile.groups.clone(),
        };
        let states = self.states(&user).await?;
        let now = self.clock.now();
        let mut fresh: Vec<Notification>;
        loop {
            let (mut book, version) = self.book(sub).await?;
            fresh = Vec::new();
            for (rt, state) in &states {
                let seen = book.seen.get(rt).cloned();
                match state {
                    Some((s, reason)) if needs_attention(*s) => {
                        if seen.as_deref() != Some(s.as_str()) {
                            fresh.push(Notification {
                                id: self.new_id(),
                                runtime: rt.clone(),
                                kind: s.as_str().to_owned(),
                                reason: reason.clone(),
                                at: now,
                                mailed: false,
                            });
                            book.seen.insert(rt.clone(), s.as_str().to_owned());
                        }
                    }
                    Some((State::Valid, reason)) => {
                        if seen.is_some() {
                            fresh.push(Notification {
                                id: self.new_id(),
                                runtime: rt.clone(),
                                kind: "recovered".into(),
                                reason: reason.clone(),
                                at: now,
                                mailed: false,
                            });
                            book.seen.remove(rt);
                        }
                    }
                    // a temporary check failure, or a token that no longer
                    // opens (the admin's doing): nothing to tell yet
                    Some(_) => {}
                    // deleted: nothing to fix any more
                    None => {
                        book.seen.remove(rt);
                    }
                }
            }
            // runtimes gone from the person's view
            let before = book.seen.len();
            book.seen.retain(|rt, _| states.contains_key(rt));
            if fresh.is_empty() && before == book.seen.len() {
                return Ok(());
            }
            book.recent.extend(fresh.iter().cloned());
            if book.recent.len() > RECENT {
                let extra = book.recent.len() - RECENT;
                book.recent.drain(..extra);
            }
            if self.write(BOOK, sub, &book, version).await? {
                break;
            }
            // another replica looked at the same change: look again
        }
        for n in &fresh {
            tracing::info!(user = %sub, runtime = %n.runtime, kind = %n.kind, "notification");
        }
        self.mail_user(&profile, &fresh).await
    }

    async fn mail_user(
        &self,
        profile: &Profile,
        fresh: &[Notification],
    ) -> Result<(), NotifyError> {
        let (Some(mailer), Some(to)) = (&self.mailer, &profile.email) else {
            return Ok(());
        };
        let (prefs, _) = self.prefs(&profile.sub).await?;
        if !self.enabled(&prefs) {
            return Ok(());
        }
        let items: Vec<&Notification> = fresh
            .iter()
            .filter(|n| !prefs.hidden.contains(&n.runtime))
            .collect();
        if items.is_empty() {
            return Ok(());
        }
        let problems = items.iter().filter(|n| n.kind != "recovered").count();
        let subject = match (problems, items.len()) {
            (0, 1) => "gitbroker: your Git token works again".to_owned(),
            (0, n) => format!("gitbroker: {n} of your Git tokens work again"),
            (1, _) => "gitbroker: a Git token of yours needs attention".to_owned(),
            (p, _) => format!("gitbroker: {p} of your Git tokens need attention"),
        };
        let mut body = format!("Hello {},\n\n", profile.name);
        for n in &items {
            body.push_str(&format!("- runtime {}: {}", n.runtime, describe(&n.kind)));
            if let Some(r) = &n.reason {
                body.push_str(&format!(" ({r})"));
            }
            body.push('\n');
        }
        body.push_str(&format!(
            "\nOpen {} to authorize again or replace a token. You can hide a runtime's notifications there.\n",
            self.tokens_url
        ));
        match mailer.send(to, &subject, body).await {
            Ok(()) => {
                tracing::info!(user = %profile.sub, notifications = items.len(), "notification digest mailed");
                let ids: BTreeSet<&str> = items.iter().map(|n| n.id.as_str()).collect();
                // best effort: the notifications are recorded either way
                for _ in 0..5 {
                    let (mut book, version) = self.book(&profile.sub).await?;
                    for n in book
                        .recent
                        .iter_mut()
                        .filter(|n| ids.contains(n.id.as_str()))
                    {
                        n.mailed = true;
                    }
                    if self.write(BOOK, &profile.sub, &book, version).await? {
                        break;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(user = %profile.sub, error = %e, "notification digest could not be mailed; the page and the API still show it");
            }
        }
        Ok(())
    }

    /// Git Runtime tokens needing attention, and per runtime the users'
    /// tokens that do (for admins; computed as of now).
    pub async fn admin_overview(&self) -> Result<AdminOverview, NotifyError> {
        let runtimes = self
            .registry
            .runtimes()
            .await
            .map_err(|e| NotifyError::Tokens(e.to_string()))?;
        let mut out = AdminOverview::default();
        for rt in runtimes {
            let status = self
                .lifecycle
                .runtime_token_status(&rt)
                .await
                .map_err(|e| NotifyError::Tokens(e.to_string()))?;
            match status {
                Some(s) if needs_attention(s.status.state) => {
                    out.runtime_tokens.push(RuntimeAttention {
                        runtime: rt.id.clone(),
                        state: s.status.state.as_str(),
                        reason: s.status.reason.clone(),
                    });
                }
                None => out.runtime_tokens.push(RuntimeAttention {
                    runtime: rt.id.clone(),
                    state: "missing",
                    reason: Some("the runtime has no Git Runtime token".into()),
                }),
                Some(_) => {}
            }
            let users = self
                .lifecycle
                .runtime_user_tokens(&rt)
                .await
                .map_err(|e| NotifyError::Tokens(e.to_string()))?;
            let needing = users
                .iter()
                .filter(|(_, t)| t.as_ref().is_none_or(|t| needs_attention(t.status.state)))
                .count();
            out.user_tokens.push(UserTokenCount {
                runtime: rt.id,
                needing_attention: needing,
                total: users.len(),
            });
        }
        Ok(out)
    }

    /// Mails the admin address when a Git Runtime token starts or stops
    /// needing attention.
    async fn reconcile_admin(&self) -> Result<(), NotifyError> {
        let runtimes = self
            .registry
            .runtimes()
            .await
            .map_err(|e| NotifyError::Tokens(e.to_string()))?;
        let mut now_states = BTreeMap::new();
        for rt in &runtimes {
            let s = self
                .lifecycle
                .runtime_token_status(rt)
                .await
                .map_err(|e| NotifyError::Tokens(e.to_string()))?;
            if let Some(s) = s {
                now_states.insert(rt.id.clone(), (s.status.state, s.status.reason));
            }
        }
        let mut lines;
        loop {
            let (mut seen, version): (BTreeMap<String, String>, _) =
                self.read(ADMIN_BOOK, "admin").await?;
            lines = Vec::new();
            for (rt, (state, reason)) in &now_states {
                let was = seen.get(rt).cloned();
                if needs_attention(*state) {
                    if was.as_deref() != Some(state.as_str()) {
                        lines.push(format!(
                            "- Git Runtime token of {rt}: {}{}",
                            describe(state.as_str()),
                            reason
                                .as_ref()
                                .map(|r| format!(" ({r})"))
                                .unwrap_or_default()
                        ));
                        seen.insert(rt.clone(), state.as_str().to_owned());
                    }
                } else if *state == State::Valid && was.is_some() {
                    lines.push(format!("- Git Runtime token of {rt}: works again"));
                    seen.remove(rt);
                }
            }
            let before = seen.len();
            seen.retain(|rt, _| now_states.contains_key(rt));
            if lines.is_empty() && before == seen.len() {
                return Ok(());
            }
            if self.write(ADMIN_BOOK, "admin", &seen, version).await? {
                break;
            }
        }
        for l in &lines {
            tracing::warn!(notification = %l, "admin notification");
        }
        let (Some(mailer), Some(to)) = (&self.mailer, &self.settings.admin_email) else {
            return Ok(());
        };
        if lines.is_empty() {
            return Ok(());
        }
        let subject = format!("gitbroker: {} Git Runtime token change(s)", lines.len());
        let body = format!(
            "Git Runtime tokens that changed:\n\n{}\n\nSee GET /api/v1/admin/notifications for every runtime.\n",
            lines.join("\n")
        );
        match mailer.send(to, &subject, body).await {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(error = %e, "admin notification could not be mailed");
            }
        }
        Ok(())
    }
}

#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct AdminOverview {
    pub runtime_tokens: Vec<RuntimeAttention>,
    pub user_tokens: Vec<UserTokenCount>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RuntimeAttention {
    pub runtime: String,
    pub state: &'static str,
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserTokenCount {
    pub runtime: String,
    pub needing_attention: usize,
    pub total: usize,
}

#[async_trait]
impl EventSink for Notifier {
    async fn record(&self, event: &Event) {
        use Action::*;
        match event.action {
            UserTokenAssigned
            | UserTokenReplaced
            | UserTokenReused
            | UserTokenDeleted
            | UserTokenRefreshed
            | UserTokenStatusChanged
            | UserTokenRecovered
            | UserTokenChecked => {
                if let Some(u) = &event.user {
                    self.enqueue(Job::User(u.clone()));
                }
            }
            RuntimeTokenSet
            | RuntimeTokenRotated
            | RuntimeTokenStatusChanged
            | RuntimeCreated
            | RuntimeDeleted => self.enqueue(Job::Admin),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attention_states_are_the_documented_ones() {
        let names: Vec<_> = ATTENTION.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            [
                "expiring_soon",
                "expired",
                "invalid",
                "missing_scopes",
                "needs_reauthorization",
                "not_installed"
            ]
        );
        assert!(!needs_attention(State::Unknown));
        assert!(!needs_attention(State::Valid));
        assert_eq!(describe("recovered"), "works again");
    }

    #[test]
    fn prefs_default_to_the_configured_default() {
        let p: Prefs = serde_json::from_str("{}").unwrap_or_default();
        assert_eq!(p, Prefs::default());
        assert!(p.enabled.is_none() && p.hidden.is_empty());
    }
}
