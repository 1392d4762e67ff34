//! Wake-ups across replicas: a request can wait for something to happen on
//! any replica (a user authorizing a runtime) without polling. A replica
//! [`Signals::subscribe`]s to a channel, re-checks the store, then awaits;
//! whoever makes the change [`Signals::publish`]es. In-process on the
//! embedded store (one process); Redis pub/sub on Redis: each replica holds
//! one pattern subscription (`PSUBSCRIBE <prefix>:signal:*`) and fans
//! messages out to its local waiters, so a thousand waiters cost one
//! connection. A signal says only "look again": it carries no data, and a
//! missed one (Redis restarting) costs a waiter at most its wait.

use super::StoreError;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// Local fan-out: one broadcast sender per channel with waiters.
#[derive(Default)]
struct Local {
    channels: Mutex<HashMap<String, broadcast::Sender<()>>>,
}

impl Local {
    fn subscribe(self: &Arc<Self>, channel: &str) -> Subscription {
        let mut map = self
            .channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let rx = map
            .entry(channel.to_owned())
            .or_insert_with(|| broadcast::channel(4).0)
            .subscribe();
        Subscription {
            rx,
            channel: channel.to_owned(),
            local: self.clone(),
        }
    }

    fn wake(&self, channel: &str) {
        let map = self
            .channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(tx) = map.get(channel) {
            let _ = tx.send(());
        }
    }

    fn waiting(&self) -> usize {
        let map = self
            .channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.values().map(broadcast::Sender::receiver_count).sum()
    }
}

/// A waiter's subscription; dropping it (a client that went away) cleans
/// up.
pub struct Subscription {
    rx: broadcast::Receiver<()>,
    channel: String,
    local: Arc<Local>,
}

impl Subscription {
    /// Resolves at the next signal on the channel.
    pub async fn signalled(&mut self) {
        loop {
            match self.rx.recv().await {
                Ok(()) | Err(broadcast::error::RecvError::Lagged(_)) => return,
                // the sender lives as long as any subscription: not reached
                Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut map = self
            .local
            .channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // this receiver still counts until it is dropped, after this
        if map
            .get(&self.channel)
            .is_some_and(|tx| tx.receiver_count() <= 1)
        {
            map.remove(&self.channel);
        }
    }
}

struct RedisSide {
    /// Publishes through the store's own connection (standalone, the
    /// Sentinel master, or any Cluster node: pub/sub reaches every node).
    store: super::redis::RedisStore,
    prefix: String,
    /// Whether the pattern subscription is live.
    subscribed: watch::Receiver<bool>,
}

pub struct Signals {
    local: Arc<Local>,
    redis: Option<RedisSide>,
}

impl std::fmt::Debug for Signals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signals")
            .field("redis", &self.redis.is_some())
            .field("waiting", &self.local.waiting())
            .finish()
    }
}

impl Signals {
    /// Signals within this process only (the embedded store).
    pub fn local() -> Self {
        Self {
            local: Arc::default(),
            redis: None,
        }
    }

    /// Signals through Redis pub/sub, on the store's topology: publishing
    /// through `store`, and one subscriber task that reconnects by itself
    /// (to the server the store names for pub/sub at each attempt: after a
    /// Sentinel failover, the new master).
    pub fn redis(store: super::redis::RedisStore, prefix: &str) -> Self {
        let local: Arc<Local> = Arc::default();
        let (tx, subscribed) = watch::channel(false);
        let pattern = format!("{prefix}:signal:*");
        let strip = format!("{prefix}:signal:");
        tokio::spawn(subscriber(
            store.clone(),
            pattern,
            strip,
            Arc::downgrade(&local),
            tx,
        ));
        Self {
            local,
            redis: Some(RedisSide {
                store,
                prefix: prefix.to_owned(),
                subscribed,
            }),
        }
    }

    /// Subscribes before the caller re-checks what it waits for, so no
    /// signal falls between the check and the wait. With Redis, fails
    /// (503) while the subscription is down.
    pub async fn subscribe(&self, channel: &str) -> Result<Subscription, StoreError> {
        if let Some(r) = &self.redis {
            let mut ready = r.subscribed.clone();
            tokio::time::timeout(Duration::from_secs(2), ready.wait_for(|up| *up))
                .await
                .map_err(|_| StoreError::Unavailable("redis: no pub/sub subscription".into()))?
                .map_err(|_| StoreError::Unavailable("redis: no pub/sub subscription".into()))?;
        }
        Ok(self.local.subscribe(channel))
    }

    /// Wakes every waiter on `channel`, on every replica.
    pub async fn publish(&self, channel: &str) -> Result<(), StoreError> {
        match &self.redis {
            None => {
                self.local.wake(channel);
                Ok(())
            }
            Some(r) => {
                r.store
                    .publish(&format!("{}:signal:{channel}", r.prefix), b"1")
                    .await
            }
        }
    }

    /// Waiters of this process.
    pub fn waiting(&self) -> usize {
        self.local.waiting()
    }
}

/// Holds the pattern subscription, reconnecting with backoff; ends when the
/// signals are dropped.
async fn subscriber(
    store: super::redis::RedisStore,
    pattern: String,
    strip: String,
    local: std::sync::Weak<Local>,
    up: watch::Sender<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if local.strong_count() == 0 {
            return;
        }
        let connected = async {
            let client = store.pubsub_client().await.map_err(|e| e.to_string())?;
            let mut pubsub = client
                .get_async_pubsub()
                .await
                .map_err(|e| format!("redis: {}", e.category()))?;
            pubsub
                .psubscribe(&pattern)
                .await
                .map_err(|e| format!("redis: {}", e.category()))?;
            Ok::<_, String>(pubsub)
        };
        match tokio::time::timeout(Duration::from_secs(5), connected).await {
            Ok(Ok(pubsub)) => {
                backoff = Duration::from_millis(100);
                let _ = up.send(true);
                let mut messages = pubsub.into_on_message();
                loop {
                    tokio::select! {
                        msg = messages.next() => {
                            let Some(msg) = msg else { break };
                            let Some(local) = local.upgrade() else { return };
                            if let Some(channel) = msg.get_channel_name().strip_prefix(&strip) {
                                local.wake(channel);
                            }
                        }
                        // nobody left to wake: stop
                        () = up.closed() => return,
                    }
                }
                let _ = up.send(false);
                tracing::warn!("redis pub/sub subscription lost; reconnecting");
            }
            Ok(Err(e)) => {
                let _ = up.send(false);
                tracing::warn!(error = %e, "redis pub/sub: cannot subscribe; retrying");
            }
            Err(_) => {
                let _ = up.send(false);
                tracing::warn!("redis pub/sub: subscribing timed out; retrying");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_signals_wake_subscribers_and_clean_up() {
        let s = Signals::local();
        let mut a = s
            .subscribe("rt:u1")
            .await
            .unwrap_or_else(|_| unreachable!());
        let mut b = s
            .subscribe("rt:u1")
            .await
            .unwrap_or_else(|_| unreachable!());
        let other = s
            .subscribe("rt:u2")
            .await
            .unwrap_or_else(|_| unreachable!());
        assert_eq!(s.waiting(), 3);
        s.publish("rt:u1").await.unwrap_or_else(|_| unreachable!());
        a.signalled().await;
        b.signalled().await;
        drop((a, b, other));
        assert_eq!(s.waiting(), 0);
        assert!(
            s.local
                .channels
                .lock()
                .map(|m| m.is_empty())
                .unwrap_or(false)
        );
        // a signal nobody waits for is nothing
        s.publish("rt:u1").await.unwrap_or_else(|_| unreachable!());
    }
}
