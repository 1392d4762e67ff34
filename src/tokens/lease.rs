//! One operation on a grant at a time, in this process and across replicas.
//!
//! - [`SingleFlight`]: callers in this process asking for the same key
//!   share one run of the work, which runs in its own task so that a caller
//!   going away (a client disconnect) cannot cancel it. Keys name a grant,
//!   never a token value.
//! - [`Leases`]: a lease in the store (`SET NX PX`) whose value is a random
//!   owner token, released by compare-and-delete, so a slow holder whose
//!   lease ran out can never delete the next holder's. Its TTL outlives the
//!   slowest provider call the holder makes.

use crate::crypto;
use crate::store::{EphemeralKey, Store, StoreError};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

const NS: &str = "lease";

pub struct Leases {
    store: Arc<dyn Store>,
}

/// A held lease. Release it with [`Leases::release`]; if the holder dies,
/// it expires by itself.
#[must_use]
pub struct Lease {
    key: EphemeralKey,
    owner: String,
}

impl Leases {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Takes the lease `name` for `ttl` if nobody holds it.
    pub async fn try_acquire(
        &self,
        name: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let key = EphemeralKey::new(NS, name);
        let owner = crypto::random_string(16);
        Ok(self
            .store
            .put_new(&key, owner.as_bytes(), ttl)
            .await?
            .then_some(Lease { key, owner }))
    }

    /// Releases a lease if it is still ours (compare-and-delete).
    pub async fn release(&self, lease: Lease) {
        if let Err(e) = self
            .store
            .remove_if_eq(&lease.key, lease.owner.as_bytes())
            .await
        {
            // it expires by itself; nothing is lost
            tracing::warn!(lease = %lease.key.id, error = %e, "could not release a lease");
        }
    }
}

/// Shares one run of work per key among concurrent callers.
pub struct SingleFlight<T> {
    flights: Arc<Mutex<HashMap<String, watch::Receiver<Option<T>>>>>,
}

impl<T> Default for SingleFlight<T> {
    fn default() -> Self {
        Self {
            flights: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

impl<T: Clone + Send + Sync + 'static> SingleFlight<T> {
    /// Joins the run for `key`, or starts `work` in its own task. `None`
    /// only if that task died without an answer.
    pub async fn run<F>(&self, key: &str, work: impl FnOnce() -> F) -> Option<T>
    where
        F: Future<Output = T> + Send + 'static,
    {
        let mut rx = {
            let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
            match flights.get(key) {
                Some(rx) => rx.clone(),
                None => {
                    let (tx, rx) = watch::channel(None);
                    flights.insert(key.to_owned(), rx.clone());
                    let fut = work();
                    let flights = self.flights.clone();
                    let key = key.to_owned();
                    tokio::spawn(async move {
                        let value = fut.await;
                        // later callers start afresh; those waiting get this value
                        flights
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&key);
                        let _ = tx.send(Some(value));
                    });
                    rx
                }
            }
        };
        let answer = rx.wait_for(|v| v.is_some()).await.ok()?;
        answer.clone()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_callers_share_one_run() {
        let flight = Arc::new(SingleFlight::<usize>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let (release_tx, release_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (flight, runs, release_rx) = (flight.clone(), runs.clone(), release_rx.clone());
            tasks.push(tokio::spawn(async move {
                flight
                    .run("grant-1", move || async move {
                        let mut release_rx = release_rx;
                        let _ = release_rx.wait_for(|go| *go).await;
                        runs.fetch_add(1, Ordering::SeqCst) + 1
                    })
                    .await
            }));
        }
        // on this single-threaded runtime every caller has joined the flight
        // after a few turns, before the one run is allowed to finish
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        release_tx.send(true).unwrap();
        for t in tasks {
            assert_eq!(t.await.unwrap(), Some(1));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // a later call runs again
        let again = flight.run("grant-1", || async { 7 }).await;
        assert_eq!(again, Some(7));
    }

    #[tokio::test]
    async fn the_run_survives_its_caller_going_away() {
        let flight = Arc::new(SingleFlight::<u8>::default());
        let done = Arc::new(AtomicUsize::new(0));
        let (go_tx, go_rx) = watch::channel(false);
        let d = done.clone();
        let caller = tokio::spawn({
            let flight = flight.clone();
            async move {
                flight
                    .run("k", move || async move {
                        let mut go_rx = go_rx;
                        let _ = go_rx.wait_for(|g| *g).await;
                        d.fetch_add(1, Ordering::SeqCst);
                        1
                    })
                    .await
            }
        });
        tokio::task::yield_now().await;
        caller.abort();
        let _ = caller.await;
        go_tx.send(true).unwrap();
        // a second caller that joins meanwhile sees the same run finish
        let joined = flight.run("k", || async { 2 }).await;
        assert!(matches!(joined, Some(1) | Some(2)));
        while done.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
    }
}
