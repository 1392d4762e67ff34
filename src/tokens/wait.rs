//! Runtimes waiting for a user to authorize: the channel a runtime's wait
//! listens on, and the event sink that signals it when a token is assigned.

use crate::events::{Action, Event, EventSink};
use crate::store::signal::Signals;
use async_trait::async_trait;
use std::sync::Arc;

/// The signal channel of `user`'s token for `runtime`.
pub fn wait_channel(runtime: &str, user: &str) -> String {
    format!("user_token:{runtime}:{user}")
}

/// Signals waiting runtimes (on every replica) when a user's token is
/// assigned to their runtime, by a flow, a pasted token or a reuse.
pub struct WakeOnAssign(pub Arc<Signals>);

#[async_trait]
impl EventSink for WakeOnAssign {
    async fn record(&self, event: &Event) {
        if !matches!(
            event.action,
            Action::UserTokenAssigned | Action::UserTokenReused
        ) {
            return;
        }
        let (Some(runtime), Some(user)) = (&event.runtime, &event.user) else {
            return;
        };
        // off the user's request: a slow store never delays them
        let signals = self.0.clone();
        let channel = wait_channel(runtime, user);
        tokio::spawn(async move {
            if let Err(e) = signals.publish(&channel).await {
                tracing::warn!(error = %e, "could not signal waiting runtimes; they see the token at their next request");
            }
        });
    }
}
