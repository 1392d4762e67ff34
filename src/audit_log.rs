//! The audit log: every [`Event`] appended to the store's `audit` log,
//! append-only, with time, actor, runtime, user, provider, outcome and
//! token fingerprint (never a secret: events carry none).
//!
//! Written behind: [`AuditLog::record`] puts the event in a bounded
//! channel and returns; one writer task takes what has gathered within
//! [`GATHER`] of the first (up to [`BATCH`] events) and appends it in one
//! store call (one Lua script on Redis, one redb transaction), so a
//! runtime token fetch costs no store round trip of its own. When the channel is full the emitter **waits**
//! (backpressure): an audit log must not lose entries, and it fills only
//! when the store is slower than the requests (or down, when the requests
//! fail anyway). A failed append is retried with backoff, the batch kept.
//! [`AuditLog::flush`] waits until everything recorded before it is in the
//! store; the binary calls it on shutdown.
//!
//! Retention: entries older than `[audit] retention_days` and past
//! `max_entries` are trimmed by every append, and at least every minute.

use crate::clock::Clock;
use crate::config::AuditSettings;
use crate::events::{Action, ActorKind, Event, EventSink};
use crate::store::{LogAppend, LogId, LogRetention, Store, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The store log holding the audit entries.
pub const LOG: &str = "audit";
/// Events appended in one store call at most.
pub const BATCH: usize = 512;
/// How long the writer lets events gather after the first of a batch
/// (a flush is written at once): the most an entry waits before it is
/// appended, when the store keeps up.
pub const GATHER: Duration = Duration::from_millis(5);
/// Retention is applied at least this often, even without new entries.
const TRIM_EVERY: Duration = Duration::from_secs(60);

enum Msg {
    Event(Box<Event>),
    Flush(oneshot::Sender<()>),
}

/// The audit sink. Register it on [`crate::events::Events`].
pub struct AuditLog {
    tx: mpsc::Sender<Msg>,
    stats: Arc<Stats>,
}

/// Counters, for tests and the figures in BENCHMARKS.md.
#[derive(Debug, Default)]
pub struct Stats {
    /// Entries in the store.
    pub written: AtomicU64,
    /// Appends that failed and were retried.
    pub retries: AtomicU64,
    /// Events refused because the writer had stopped (never otherwise).
    pub lost: AtomicU64,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Starts the writer task on `store`.
    pub fn start(store: Arc<dyn Store>, clock: Arc<dyn Clock>, settings: AuditSettings) -> Self {
        let (tx, rx) = mpsc::channel(settings.buffer.max(1));
        let stats = Arc::new(Stats::default());
        tokio::spawn(writer(store, clock, settings, rx, stats.clone()));
        Self { tx, stats }
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Returns once every event recorded before the call is in the store
    /// (or the writer has stopped).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

#[async_trait]
impl EventSink for AuditLog {
    async fn record(&self, event: &Event) {
        // waits while the buffer is full: backpressure, never a silent drop
        if self
            .tx
            .send(Msg::Event(Box::new(event.clone())))
            .await
            .is_err()
        {
            let lost = self.stats.lost.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::error!(event = %event.id, action = event.action.as_str(), lost, "audit log writer has stopped; event not recorded in the audit log");
        }
    }
}

fn retention(clock: &dyn Clock, settings: &AuditSettings) -> LogRetention {
    let keep = chrono::Duration::from_std(settings.retention).unwrap_or(chrono::Duration::MAX);
    let oldest = clock
        .now()
        .checked_sub_signed(keep)
        .map(|t| t.timestamp_millis());
    LogRetention {
        max_entries: Some(settings.max_entries),
        min_ms: oldest.and_then(|ms| u64::try_from(ms).ok()),
    }
}

async fn writer(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    settings: AuditSettings,
    mut rx: mpsc::Receiver<Msg>,
    stats: Arc<Stats>,
) {
    let mut trim = tokio::time::interval(TRIM_EVERY);
    trim.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let first = tokio::select! {
            m = rx.recv() => match m {
                Some(m) => m,
                None => return,
            },
            _ = trim.tick() => {
                if let Err(e) = store.log_append(LOG, &[], retention(clock.as_ref(), &settings)).await {
                    tracing::warn!(error = %e, "audit log: trimming failed; trying again later");
                }
                continue;
            }
        };
        let mut batch = Vec::new();
        let mut flushes = Vec::new();
        let mut take = |m: Msg, batch: &mut Vec<LogAppend>| match m {
            Msg::Event(e) => match serde_json::to_vec(&e) {
                Ok(value) => batch.push(LogAppend {
                    at_ms: u64::try_from(e.at.timestamp_millis()).unwrap_or(0),
                    value,
                }),
                Err(err) => {
                    tracing::error!(event = %e.id, error = %err, "audit log: event does not serialize");
                }
            },
            Msg::Flush(done) => flushes.push(done),
        };
        let flush_asked = matches!(first, Msg::Flush(_));
        take(first, &mut batch);
        // let a batch gather (a flush goes at once): one store call per
        // GATHER instead of one per event or two — on Redis each call is a
        // script run whose fixed cost was most of a fetch's audit cost
        if !flush_asked {
            tokio::time::sleep(GATHER).await;
        }
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(m) => take(m, &mut batch),
                Err(_) => break,
            }
        }
        let mut backoff = Duration::from_millis(50);
        loop {
            match store
                .log_append(LOG, &batch, retention(clock.as_ref(), &settings))
                .await
            {
                Ok(_) => {
                    stats
                        .written
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    break;
                }
                Err(e) => {
                    stats.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, pending = batch.len(), retry_in_ms = backoff.as_millis() as u64, "audit log: append failed; keeping the batch and retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// Which entries an audit query wants; `None` matches anything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub runtime: Option<String>,
    pub user: Option<String>,
    pub actor_kind: Option<ActorKind>,
    pub actor_id: Option<String>,
    pub actions: Vec<Action>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

impl Filter {
    fn matches(&self, e: &Event) -> bool {
        let eq = |want: &Option<String>, have: &Option<String>| {
            want.as_ref().is_none_or(|w| have.as_ref() == Some(w))
        };
        eq(&self.runtime, &e.runtime)
            && eq(&self.user, &e.user)
            && self.actor_kind.is_none_or(|k| k == e.actor.kind)
            && self.actor_id.as_ref().is_none_or(|id| *id == e.actor.id)
            && (self.actions.is_empty() || self.actions.contains(&e.action))
    }

    /// The id range the time bounds allow: `(after, until]`.
    fn range(&self) -> (LogId, LogId) {
        let ms = |t: DateTime<Utc>| u64::try_from(t.timestamp_millis()).unwrap_or(0);
        let after = self
            .since
            .map_or(LogId::MIN, |t| match ms(t).checked_sub(1) {
                Some(m) => LogId {
                    ms: m,
                    seq: u64::MAX,
                },
                None => LogId::MIN,
            });
        let until = self.until.map_or(LogId::MAX, |t| LogId {
            ms: ms(t),
            seq: u64::MAX,
        });
        (after, until)
    }
}

/// One page of an audit query.
#[derive(Debug)]
pub struct Page {
    pub entries: Vec<(LogId, Event)>,
    /// Where the next page starts; `None` when the log is exhausted.
    pub next: Option<LogId>,
}

/// Entries read from the store for one page at most: a narrow filter over
/// a long log answers a short page with a cursor rather than scanning all.
pub const SCAN_PER_PAGE: usize = 10_000;

/// Up to `limit` entries matching `filter` after `cursor`, oldest first.
pub async fn query(
    store: &dyn Store,
    filter: &Filter,
    cursor: Option<LogId>,
    limit: usize,
) -> Result<Page, StoreError> {
    let (after, until) = filter.range();
    let mut from = cursor.map_or(after, |c| c.max(after));
    let mut entries = Vec::new();
    let mut scanned = 0;
    let chunk = limit.clamp(100, 1000);
    loop {
        let rows = store.log_read(LOG, from, until, chunk).await?;
        let exhausted = rows.len() < chunk;
        for (id, bytes) in rows {
            scanned += 1;
            from = id;
            let event: Event = serde_json::from_slice(&bytes)
                .map_err(|e| StoreError::corrupt("audit entry", &e))?;
            if filter.matches(&event) {
                entries.push((id, event));
                if entries.len() >= limit {
                    return Ok(Page {
                        entries,
                        next: Some(id),
                    });
                }
            }
        }
        if exhausted {
            return Ok(Page {
                entries,
                next: None,
            });
        }
        if scanned >= SCAN_PER_PAGE {
            return Ok(Page {
                entries,
                next: Some(from),
            });
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::events::Actor;
    use crate::store::embedded::EmbeddedStore;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn settings(buffer: usize) -> AuditSettings {
        AuditSettings {
            buffer,
            ..AuditSettings::default()
        }
    }

    #[test]
    fn filters_match_on_every_field() {
        let e = Event::new(Action::UserTokenRead, Actor::runtime("rt"), at(0))
            .runtime("rt")
            .user("u1");
        let all = Filter::default();
        assert!(all.matches(&e));
        let f = |f: Filter| f.matches(&e);
        assert!(f(Filter {
            runtime: Some("rt".into()),
            user: Some("u1".into()),
            actor_kind: Some(ActorKind::Runtime),
            actor_id: Some("rt".into()),
            actions: vec![Action::UserTokenRead, Action::SignedIn],
            ..Filter::default()
        }));
        assert!(!f(Filter {
            runtime: Some("other".into()),
            ..Filter::default()
        }));
        assert!(!f(Filter {
            user: Some("u2".into()),
            ..Filter::default()
        }));
        assert!(!f(Filter {
            actor_kind: Some(ActorKind::User),
            ..Filter::default()
        }));
        assert!(!f(Filter {
            actions: vec![Action::SignedIn],
            ..Filter::default()
        }));
    }

    #[tokio::test]
    async fn a_full_buffer_makes_the_emitter_wait_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(at(0)));
        let store: Arc<dyn Store> =
            Arc::new(EmbeddedStore::open(&dir.path().join("s.redb"), clock.clone()).unwrap());
        // a current-thread runtime: the writer cannot run while this test
        // does not yield, so the second record must wait for it
        let audit = Arc::new(AuditLog::start(store.clone(), clock, settings(1)));
        let e = |i: i64| Event::new(Action::UserTokenRead, Actor::runtime("rt"), at(i));
        audit.record(&e(0)).await;
        let waiting = {
            let audit = audit.clone();
            let second = e(1);
            async move { audit.record(&second).await }
        };
        let mut waiting = Box::pin(waiting);
        // the buffer (1) is full and the writer has not run: record waits
        assert!(
            futures_util::FutureExt::now_or_never(waiting.as_mut()).is_none(),
            "a full buffer must make the emitter wait"
        );
        waiting.await;
        for i in 2..50 {
            audit.record(&e(i)).await;
        }
        audit.flush().await;
        assert_eq!(audit.stats().written.load(Ordering::Relaxed), 50);
        assert_eq!(audit.stats().lost.load(Ordering::Relaxed), 0);
        let page = query(store.as_ref(), &Filter::default(), None, 1000)
            .await
            .unwrap();
        assert_eq!(page.entries.len(), 50);
        assert!(page.next.is_none());
        let times: Vec<_> = page.entries.iter().map(|(_, e)| e.at).collect();
        assert_eq!(times, (0..50).map(at).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn pages_follow_the_cursor_and_time_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(at(0)));
        let store: Arc<dyn Store> =
            Arc::new(EmbeddedStore::open(&dir.path().join("s.redb"), clock.clone()).unwrap());
        let audit = AuditLog::start(store.clone(), clock, settings(64));
        for i in 0..30 {
            let rt = if i % 3 == 0 { "a" } else { "b" };
            audit
                .record(
                    &Event::new(Action::RuntimeTokenRead, Actor::runtime(rt), at(i)).runtime(rt),
                )
                .await;
        }
        audit.flush().await;
        let only_a = Filter {
            runtime: Some("a".into()),
            ..Filter::default()
        };
        let one = query(store.as_ref(), &only_a, None, 4).await.unwrap();
        assert_eq!(one.entries.len(), 4);
        let two = query(store.as_ref(), &only_a, one.next, 4).await.unwrap();
        let three = query(store.as_ref(), &only_a, two.next, 4).await.unwrap();
        assert_eq!(three.entries.len(), 2);
        assert!(three.next.is_none());
        let secs: Vec<_> = [one, two, three]
            .iter()
            .flat_map(|p| p.entries.iter().map(|(_, e)| e.at))
            .collect();
        assert_eq!(secs, (0..30).step_by(3).map(at).collect::<Vec<_>>());
        let window = Filter {
            since: Some(at(10)),
            until: Some(at(12)),
            ..Filter::default()
        };
        let w = query(store.as_ref(), &window, None, 100).await.unwrap();
        let secs: Vec<_> = w.entries.iter().map(|(_, e)| e.at).collect();
        assert_eq!(secs, [at(10), at(11), at(12)]);
    }
}
