//! Webhooks: change events delivered to admin-configured endpoints, signed
//! per the Standard Webhooks specification, from a durable outbox.
//!
//! - **Outbox.** [`Webhooks`] is an [`EventSink`]: for a change event
//!   (`Action::is_change`) it writes one delivery record per endpoint that
//!   wants it into the store (`webhook_delivery/pending`) before `record`
//!   returns, so the change's answer comes after its deliveries are
//!   durable. Nothing is sent from the request.
//! - **Delivery.** A worker task per replica polls the pending records
//!   (and wakes at once for its own), takes a store lease per delivery
//!   (TTL = the endpoint's timeout + 2 s) so no two replicas send the same
//!   delivery at the same time, and POSTs it. A replica that dies
//!   mid-delivery leaves its lease to expire; another one delivers:
//!   at-least-once, with the same `webhook-id`, so receivers deduplicate.
//!   Failures wait `backoff_initial`, doubled per attempt up to
//!   `backoff_max`; after `max_attempts` the delivery is `failed`.
//!   Finished deliveries move to `webhook_delivery/done`, kept 7 days,
//!   listed and replayable through the admin API. Attempts run in their own
//!   tasks (at most [`CONCURRENCY`] at once), each with its timeout: a slow
//!   or dead receiver never slows a request.
//! - **Endpoints** come from `[[webhooks]]` and from the admin API; those
//!   of the API are records with their signing secrets sealed by the
//!   [`Keyring`]. Secrets are never shown again after creation.

mod sign;

pub use sign::{PREFIX as SECRET_PREFIX, WebhookSecret, signature_header};

use crate::clock::Clock;
use crate::config::{WebhookFields, WebhookSettings};
use crate::crypto::{self, Keyring};
use crate::events::{Action, Event, EventSink};
use crate::store::{Collection, Expect, Store, StoreError};
use crate::tokens::lease::Leases;
use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};

/// Attempts in flight at once per replica.
pub const CONCURRENCY: usize = 16;
/// How often the worker looks for deliveries other replicas recorded, or
/// whose retry is due.
pub const POLL: Duration = Duration::from_millis(250);
/// A delivery's lease outlives its attempt's timeout by this much.
pub const LEASE_MARGIN: Duration = Duration::from_secs(2);
/// How long finished deliveries stay listed.
pub const DONE_KEEP: chrono::Duration = chrono::Duration::days(7);

/// The collection kind of API-created endpoints (secrets sealed).
pub const ENDPOINTS: &str = "webhook_endpoint";
const DELIVERIES: &str = "webhook_delivery";

/// Where API-created endpoints live.
pub fn endpoints_coll() -> Collection {
    Collection::new(ENDPOINTS, "all")
}
fn pending_coll() -> Collection {
    Collection::new(DELIVERIES, "pending")
}
fn done_coll() -> Collection {
    Collection::new(DELIVERIES, "done")
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
    #[error("webhook `{0}` does not exist")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
}

/// Where an endpoint was defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Config,
    Api,
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub settings: WebhookSettings,
    pub origin: Origin,
}

impl Endpoint {
    fn wants(&self, action: Action) -> bool {
        action.is_change()
            && (self.settings.events.is_empty() || self.settings.events.contains(&action))
    }
}

/// An endpoint created through the API, as stored: its secrets sealed.
#[derive(Serialize, Deserialize)]
struct StoredEndpoint {
    fields: StoredFields,
    /// Base64 of sealed envelopes of the secret keys.
    secrets: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct StoredFields {
    id: String,
    url: String,
    events: Vec<String>,
    max_attempts: u64,
    timeout_secs: u64,
    backoff_initial_ms: u64,
    backoff_max_secs: u64,
}

/// The state of one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Delivered,
    Failed,
}

impl DeliveryState {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "delivered" => Some(Self::Delivered),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// One event for one endpoint. The body is fixed when the event is
/// recorded, so every attempt sends the same bytes under the same id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivery {
    /// `{endpoint}:{event id}`.
    pub id: String,
    pub endpoint: String,
    /// The `webhook-id`: the event id.
    pub message_id: String,
    pub action: Action,
    pub body: String,
    pub state: DeliveryState,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

/// The message body: Standard Webhooks' `type`, `timestamp`, `data`.
pub fn payload(event: &Event) -> String {
    serde_json::json!({
        "type": event.action.as_str(),
        "timestamp": event.at,
        "data": event,
    })
    .to_string()
}

/// The webhook service: sink, worker, endpoint registry.
pub struct Webhooks {
    store: Arc<dyn Store>,
    keyring: Arc<Keyring>,
    clock: Arc<dyn Clock>,
    configured: Vec<WebhookSettings>,
    allow_http: bool,
    http: reqwest::Client,
    leases: Leases,
    wake: Notify,
    in_flight: Mutex<HashSet<String>>,
    worker: Mutex<Option<tokio::task::AbortHandle>>,
    /// Events whose outbox entries could not be written (store down);
    /// the worker writes them once it can.
    unwritten: Mutex<Vec<Event>>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("configured", &self.configured.len())
            .finish_non_exhaustive()
    }
}

/// The associated data an endpoint's secrets are sealed with.
pub fn aad(id: &str) -> Vec<u8> {
    crypto::associated_data("webhook_secret", &[id])
}

fn corrupt(what: &str, e: &serde_json::Error) -> StoreError {
    StoreError::corrupt(what, e)
}

impl Webhooks {
    pub fn new(
        store: Arc<dyn Store>,
        keyring: Arc<Keyring>,
        clock: Arc<dyn Clock>,
        configured: Vec<WebhookSettings>,
        allow_http: bool,
    ) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!(
                "gitbroker/",
                env!("CARGO_PKG_VERSION"),
                " (webhooks)"
            ))
            .build()
            .map_err(|e| format!("webhook HTTP client: {e}"))?;
        Ok(Self {
            leases: Leases::new(store.clone()),
            store,
            keyring,
            clock,
            configured,
            allow_http,
            http,
            wake: Notify::new(),
            in_flight: Mutex::new(HashSet::new()),
            worker: Mutex::new(None),
            unwritten: Mutex::new(Vec::new()),
        })
    }

    /// Every endpoint: the configuration's, then the API's in id order.
    pub async fn endpoints(&self) -> Result<Vec<Endpoint>, StoreError> {
        let mut out: Vec<Endpoint> = self
            .configured
            .iter()
            .map(|s| Endpoint {
                settings: s.clone(),
                origin: Origin::Config,
            })
            .collect();
        for (id, v) in self.store.record_list(&endpoints_coll()).await? {
            match self.open_endpoint(&id, &v.value) {
                Ok(e) => out.push(e),
                Err(e) => {
                    tracing::error!(webhook = %id, error = %e, "webhook endpoint record cannot be read; skipped")
                }
            }
        }
        Ok(out)
    }

    fn open_endpoint(&self, id: &str, bytes: &[u8]) -> Result<Endpoint, String> {
        let stored: StoredEndpoint = serde_json::from_slice(bytes)
            .map_err(|e| corrupt("webhook endpoint", &e).to_string())?;
        let f = stored.fields;
        let fields = WebhookFields {
            id: f.id,
            url: f.url,
            events: f.events,
            max_attempts: f.max_attempts,
            timeout_secs: f.timeout_secs,
            backoff_initial_ms: f.backoff_initial_ms,
            backoff_max_secs: f.backoff_max_secs,
        };
        let (url, events, max_attempts, timeout, backoff_initial, backoff_max) =
            crate::config::validate_webhook("webhook", &fields, true).map_err(|e| e.to_string())?;
        let mut secrets = Vec::new();
        for s in &stored.secrets {
            let sealed = STANDARD
                .decode(s)
                .map_err(|_| "secret is not base64".to_owned())?;
            let key = self
                .keyring
                .open_envelope(&aad(id), &sealed)
                .map_err(|e| e.to_string())?;
            let text = format!("{SECRET_PREFIX}{}", STANDARD.encode(&key));
            secrets.push(WebhookSecret::parse(&text).map_err(str::to_owned)?);
        }
        Ok(Endpoint {
            settings: WebhookSettings {
                id: fields.id,
                url,
                secrets,
                events,
                max_attempts,
                timeout,
                backoff_initial,
                backoff_max,
            },
            origin: Origin::Api,
        })
    }

    /// Creates an endpoint through the API. `secrets` empty: one is
    /// generated and returned (the only time it is shown).
    pub async fn create(
        &self,
        fields: WebhookFields,
        secrets: Vec<String>,
    ) -> Result<(Endpoint, Option<String>), WebhookError> {
        let (url, events, max_attempts, timeout, backoff_initial, backoff_max) =
            crate::config::validate_webhook("webhook", &fields, self.allow_http)
                .map_err(|e| WebhookError::Invalid(e.to_string()))?;
        if self.configured.iter().any(|c| c.id == fields.id) {
            return Err(WebhookError::Conflict(format!(
                "webhook `{}` is defined in the configuration file",
                fields.id
            )));
        }
        let mut parsed = Vec::new();
        for (i, s) in secrets.iter().enumerate() {
            parsed.push(
                WebhookSecret::parse(s)
                    .map_err(|m| WebhookError::Invalid(format!("secrets[{i}]: {m}")))?,
            );
        }
        let generated = if parsed.is_empty() {
            let (s, text) = WebhookSecret::generate();
            parsed.push(s);
            Some(text)
        } else {
            None
        };
        let sealed = parsed
            .iter()
            .map(|s| {
                self.keyring
                    .seal_envelope(&aad(&fields.id), s.key())
                    .map(|b| STANDARD.encode(b))
                    .map_err(|e| WebhookError::Invalid(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let stored = StoredEndpoint {
            fields: StoredFields {
                id: fields.id.clone(),
                url: url.to_string(),
                events: events.iter().map(|a| a.as_str().to_owned()).collect(),
                max_attempts: fields.max_attempts,
                timeout_secs: fields.timeout_secs,
                backoff_initial_ms: fields.backoff_initial_ms,
                backoff_max_secs: fields.backoff_max_secs,
            },
            secrets: sealed,
        };
        let bytes =
            serde_json::to_vec(&stored).map_err(|e| WebhookError::Invalid(e.to_string()))?;
        match self
            .store
            .record_put(&endpoints_coll(), &fields.id, &bytes, Expect::Absent)
            .await
        {
            Ok(_) => {}
            Err(StoreError::Conflict) => {
                return Err(WebhookError::Conflict(format!(
                    "webhook `{}` already exists",
                    fields.id
                )));
            }
            Err(e) => return Err(e.into()),
        }
        Ok((
            Endpoint {
                settings: WebhookSettings {
                    id: fields.id,
                    url,
                    secrets: parsed,
                    events,
                    max_attempts,
                    timeout,
                    backoff_initial,
                    backoff_max,
                },
                origin: Origin::Api,
            },
            generated,
        ))
    }

    /// Deletes an endpoint created through the API; its pending
    /// deliveries fail at their next attempt.
    pub async fn delete(&self, id: &str) -> Result<(), WebhookError> {
        if self.configured.iter().any(|c| c.id == id) {
            return Err(WebhookError::Conflict(format!(
                "webhook `{id}` is defined in the configuration file; remove it there"
            )));
        }
        if self
            .store
            .record_delete(&endpoints_coll(), id, Expect::Any)
            .await?
        {
            Ok(())
        } else {
            Err(WebhookError::NotFound(id.to_owned()))
        }
    }

    /// Pending and finished deliveries, newest first.
    pub async fn deliveries(&self) -> Result<Vec<Delivery>, StoreError> {
        // pending first: one finished between the two reads is in both,
        // and its finished record wins
        let mut by_id = std::collections::BTreeMap::new();
        for coll in [pending_coll(), done_coll()] {
            for (id, v) in self.store.record_list(&coll).await? {
                let d = serde_json::from_slice::<Delivery>(&v.value)
                    .map_err(|e| corrupt("webhook delivery", &e))?;
                by_id.insert(id, d);
            }
        }
        let mut out: Vec<Delivery> = by_id.into_values().collect();
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        Ok(out)
    }

    /// Sends a delivery again from its first attempt, whatever its state.
    pub async fn replay(&self, id: &str) -> Result<Delivery, WebhookError> {
        let (coll, v) = match self.store.record_get(&pending_coll(), id).await? {
            Some(v) => (pending_coll(), v),
            None => match self.store.record_get(&done_coll(), id).await? {
                Some(v) => (done_coll(), v),
                None => return Err(WebhookError::NotFound(id.to_owned())),
            },
        };
        let mut d: Delivery =
            serde_json::from_slice(&v.value).map_err(|e| corrupt("webhook delivery", &e))?;
        d.state = DeliveryState::Pending;
        d.attempts = 0;
        d.next_attempt_at = Some(self.clock.now());
        d.finished_at = None;
        let bytes =
            serde_json::to_vec(&d).map_err(|e| StoreError::corrupt("webhook delivery", &e))?;
        self.store
            .record_put(&pending_coll(), id, &bytes, Expect::Any)
            .await?;
        if coll == done_coll() {
            self.store
                .record_delete(&done_coll(), id, Expect::Any)
                .await?;
        }
        self.wake.notify_one();
        Ok(d)
    }

    /// Starts this replica's delivery worker (once).
    pub fn spawn_worker(self: &Arc<Self>) {
        let Ok(mut slot) = self.worker.lock() else {
            return;
        };
        if slot.is_some() {
            return;
        }
        let me = self.clone();
        *slot = Some(tokio::spawn(async move { me.work().await }).abort_handle());
    }

    /// Stops the worker and every attempt in flight at once, as if the
    /// process died: their leases expire and another replica (or a
    /// restart) delivers. For shutdown and tests.
    pub fn stop_worker(&self) {
        if let Ok(mut slot) = self.worker.lock()
            && let Some(h) = slot.take()
        {
            h.abort();
        }
    }

    async fn work(self: Arc<Self>) {
        let permits = Arc::new(Semaphore::new(CONCURRENCY));
        // dropped with this task: aborting the worker aborts its attempts
        let mut attempts = tokio::task::JoinSet::new();
        let mut last_prune = self.clock.now();
        let mut failing = false;
        loop {
            while attempts.try_join_next().is_some() {}
            let unwritten = self
                .unwritten
                .lock()
                .map(|mut u| std::mem::take(&mut *u))
                .unwrap_or_default();
            for event in unwritten {
                self.enqueue(&event).await;
            }
            match self.start_due(&permits, &mut attempts).await {
                // once per outage, not every poll
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "webhooks: cannot read the outbox; trying again every poll");
                }
                Err(_) => {}
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("webhooks: the outbox can be read again");
                }
                Ok(()) => {}
            }
            if self.clock.now() - last_prune > chrono::Duration::minutes(1) {
                last_prune = self.clock.now();
                if let Err(e) = self.prune_done().await {
                    tracing::warn!(error = %e, "webhooks: cannot prune finished deliveries");
                }
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(POLL) => {}
                Some(_) = attempts.join_next(), if !attempts.is_empty() => {}
            }
        }
    }

    async fn start_due(
        self: &Arc<Self>,
        permits: &Arc<Semaphore>,
        attempts: &mut tokio::task::JoinSet<()>,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        let pending = self.store.record_list(&pending_coll()).await?;
        let endpoints = self.endpoints().await?;
        for (id, v) in pending {
            let Ok(d) = serde_json::from_slice::<Delivery>(&v.value) else {
                tracing::error!(delivery = %id, "webhooks: unreadable delivery record; skipped");
                continue;
            };
            if d.next_attempt_at.is_some_and(|t| t > now) {
                continue;
            }
            if self
                .in_flight
                .lock()
                .map(|s| s.contains(&id))
                .unwrap_or(true)
            {
                continue;
            }
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                return Ok(());
            };
            let endpoint = endpoints
                .iter()
                .find(|e| e.settings.id == d.endpoint)
                .cloned();
            let lease_ttl = endpoint
                .as_ref()
                .map_or(LEASE_MARGIN, |e| e.settings.timeout + LEASE_MARGIN);
            let Some(lease) = self
                .leases
                .try_acquire(&format!("webhook:{id}"), lease_ttl)
                .await?
            else {
                continue; // another replica is on it
            };
            if let Ok(mut s) = self.in_flight.lock() {
                s.insert(id.clone());
            }
            let me = self.clone();
            attempts.spawn(async move {
                let _permit = permit;
                if let Err(e) = me.attempt(&id, endpoint).await {
                    tracing::warn!(delivery = %id, error = %e, "webhooks: attempt could not be recorded");
                }
                me.leases.release(lease).await;
                if let Ok(mut s) = me.in_flight.lock() {
                    s.remove(&id);
                }
            });
        }
        Ok(())
    }

    /// One attempt at a delivery we hold the lease of.
    async fn attempt(&self, id: &str, endpoint: Option<Endpoint>) -> Result<(), StoreError> {
        // read again under the lease: another replica may have finished it
        let Some(v) = self.store.record_get(&pending_coll(), id).await? else {
            return Ok(());
        };
        let mut d: Delivery =
            serde_json::from_slice(&v.value).map_err(|e| corrupt("webhook delivery", &e))?;
        if d.next_attempt_at.is_some_and(|t| t > self.clock.now()) {
            return Ok(());
        }
        let outcome = match &endpoint {
            None => Err((None, "the endpoint no longer exists".to_owned(), true)),
            Some(e) => self.send(&e.settings, &d).await,
        };
        let now = self.clock.now();
        d.attempts += 1;
        match outcome {
            Ok(status) => {
                d.state = DeliveryState::Delivered;
                d.last_status = Some(status);
                d.last_error = None;
                d.next_attempt_at = None;
                d.finished_at = Some(now);
                tracing::info!(delivery = %d.id, endpoint = %d.endpoint, attempts = d.attempts, "webhook delivered");
            }
            Err((status, error, fatal)) => {
                d.last_status = status;
                d.last_error = Some(error);
                let max = endpoint.as_ref().map_or(1, |e| e.settings.max_attempts);
                if fatal || d.attempts >= max {
                    d.state = DeliveryState::Failed;
                    d.next_attempt_at = None;
                    d.finished_at = Some(now);
                    tracing::warn!(delivery = %d.id, endpoint = %d.endpoint, attempts = d.attempts, error = d.last_error.as_deref().unwrap_or(""), "webhook delivery given up");
                } else if let Some(e) = &endpoint {
                    let wait = backoff(&e.settings, d.attempts);
                    d.next_attempt_at = Some(
                        now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX),
                    );
                    tracing::info!(delivery = %d.id, endpoint = %d.endpoint, attempts = d.attempts, retry_in_ms = wait.as_millis() as u64, error = d.last_error.as_deref().unwrap_or(""), "webhook attempt failed; retrying");
                }
            }
        }
        let bytes =
            serde_json::to_vec(&d).map_err(|e| StoreError::corrupt("webhook delivery", &e))?;
        if d.state == DeliveryState::Pending {
            match self
                .store
                .record_put(&pending_coll(), id, &bytes, Expect::Version(v.version))
                .await
            {
                Ok(_) | Err(StoreError::Conflict) => Ok(()), // replayed meanwhile: the replay wins
                Err(e) => Err(e),
            }
        } else {
            // done first: a crash in between only means one more delivery
            self.store
                .record_put(&done_coll(), id, &bytes, Expect::Any)
                .await?;
            match self
                .store
                .record_delete(&pending_coll(), id, Expect::Version(v.version))
                .await
            {
                Ok(_) | Err(StoreError::Conflict) => Ok(()),
                Err(e) => Err(e),
            }
        }
    }

    /// POSTs the delivery. `Err((status, error, give up now))`.
    async fn send(
        &self,
        e: &WebhookSettings,
        d: &Delivery,
    ) -> Result<u16, (Option<u16>, String, bool)> {
        let timestamp = self.clock.now().timestamp();
        let signature = signature_header(&e.secrets, &d.message_id, timestamp, d.body.as_bytes());
        let sent = self
            .http
            .post(e.url.clone())
            .timeout(e.timeout)
            .header("content-type", "application/json")
            .header("webhook-id", &d.message_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(d.body.clone())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => Ok(r.status().as_u16()),
            Ok(r) => {
                let s = r.status();
                // Standard Webhooks: 410 Gone asks senders to stop
                let gone = s == reqwest::StatusCode::GONE;
                Err((
                    Some(s.as_u16()),
                    format!("the endpoint answered HTTP {}", s.as_u16()),
                    gone,
                ))
            }
            Err(err) => {
                // reqwest's message names the URL; only its kind is kept
                let what = if err.is_timeout() {
                    "timed out"
                } else if err.is_connect() {
                    "could not connect"
                } else {
                    "request failed"
                };
                Err((None, what.to_owned(), false))
            }
        }
    }

    async fn prune_done(&self) -> Result<(), StoreError> {
        let cutoff = self.clock.now() - DONE_KEEP;
        for (id, v) in self.store.record_list(&done_coll()).await? {
            let old = serde_json::from_slice::<Delivery>(&v.value)
                .map(|d| d.finished_at.is_some_and(|t| t < cutoff))
                .unwrap_or(false);
            if old {
                self.store
                    .record_delete(&done_coll(), &id, Expect::Version(v.version))
                    .await
                    .ok();
            }
        }
        Ok(())
    }

    /// Keeps an event whose outbox entries could not all be written, for
    /// the worker to write when the store is back (entries are idempotent:
    /// the same id is written again). Lost only if this process ends first.
    fn keep_unwritten(&self, event: &Event) {
        if let Ok(mut u) = self.unwritten.lock() {
            u.push(event.clone());
            tracing::error!(event = %event.id, action = event.action.as_str(), waiting = u.len(), "webhooks: cannot write the outbox; kept in memory and written when the store is back");
        }
    }

    /// Writes the outbox entries of one event; retried a little on a store
    /// failure, then kept for the worker (the change itself is already
    /// stored).
    async fn enqueue(&self, event: &Event) {
        let endpoints = match self.endpoints().await {
            Ok(e) => e,
            Err(_) => {
                self.keep_unwritten(event);
                return;
            }
        };
        let mut all_written = true;
        let body = payload(event);
        let mut queued = false;
        for e in endpoints.iter().filter(|e| e.wants(event.action)) {
            let d = Delivery {
                id: format!("{}:{}", e.settings.id, event.id),
                endpoint: e.settings.id.clone(),
                message_id: event.id.clone(),
                action: event.action,
                body: body.clone(),
                state: DeliveryState::Pending,
                attempts: 0,
                last_error: None,
                last_status: None,
                created_at: event.at,
                next_attempt_at: None,
                finished_at: None,
            };
            let Ok(bytes) = serde_json::to_vec(&d) else {
                continue;
            };
            let mut wait = Duration::from_millis(50);
            for attempt in 1..=4 {
                match self
                    .store
                    .record_put(&pending_coll(), &d.id, &bytes, Expect::Any)
                    .await
                {
                    Ok(_) => {
                        queued = true;
                        break;
                    }
                    Err(err) if attempt == 4 => {
                        tracing::warn!(event = %event.id, endpoint = %e.settings.id, error = %err, "webhooks: outbox write failed");
                        all_written = false;
                    }
                    Err(_) => {
                        tokio::time::sleep(wait).await;
                        wait *= 2;
                    }
                }
            }
        }
        if !all_written {
            self.keep_unwritten(event);
        }
        if queued {
            self.wake.notify_one();
        }
    }
}

/// The wait after `attempts` failed attempts.
fn backoff(e: &WebhookSettings, attempts: u32) -> Duration {
    let factor = 1u32
        .checked_shl(attempts.saturating_sub(1))
        .unwrap_or(u32::MAX);
    e.backoff_initial.saturating_mul(factor).min(e.backoff_max)
}

#[async_trait]
impl EventSink for Webhooks {
    async fn record(&self, event: &Event) {
        if event.action.is_change() {
            self.enqueue(event).await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn settings(initial_ms: u64, max_secs: u64) -> WebhookSettings {
        WebhookSettings {
            id: "w".into(),
            url: "https://hooks.example.com/".parse().unwrap(),
            secrets: Vec::new(),
            events: Vec::new(),
            max_attempts: 10,
            timeout: Duration::from_secs(1),
            backoff_initial: Duration::from_millis(initial_ms),
            backoff_max: Duration::from_secs(max_secs),
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let s = settings(1000, 5);
        let waits: Vec<_> = (1..=5).map(|n| backoff(&s, n).as_millis()).collect();
        assert_eq!(waits, [1000, 2000, 4000, 5000, 5000]);
        assert_eq!(backoff(&s, 100), Duration::from_secs(5));
    }

    #[test]
    fn endpoints_take_changes_only_and_filter_them() {
        let mut e = Endpoint {
            settings: settings(10, 1),
            origin: Origin::Config,
        };
        assert!(e.wants(Action::UserTokenAssigned));
        assert!(!e.wants(Action::UserTokenRead));
        assert!(!e.wants(Action::UserTokenChecked));
        e.settings.events = vec![Action::RuntimeDeleted];
        assert!(!e.wants(Action::UserTokenAssigned));
        assert!(e.wants(Action::RuntimeDeleted));
    }

    #[test]
    fn payloads_carry_the_event_and_its_type() {
        let at = DateTime::<Utc>::UNIX_EPOCH;
        let ev =
            Event::new(Action::RuntimeCreated, crate::events::Actor::system(), at).runtime("rt");
        let v: serde_json::Value = serde_json::from_str(&payload(&ev)).unwrap();
        assert_eq!(v["type"], "runtime.created");
        assert_eq!(v["data"]["id"], ev.id.as_str());
        assert_eq!(v["data"]["runtime"], "rt");
        assert_eq!(v["timestamp"], "1970-01-01T00:00:00Z");
    }
}
