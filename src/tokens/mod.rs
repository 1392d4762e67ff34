//! The token lifecycle, in one place: Git user tokens as grants assigned to
//! a user's runtimes, and Git Runtime tokens — assigned, replaced, reused,
//! deleted, served, refreshed, revoked and checked only through
//! [`Lifecycle`]. Everything stored about a token is sealed.
//!
//! - `grant`: the grant model and the pure decisions on it (expiry, when to
//!   refresh, the status as of now);
//! - `repo`, `runtime`: where grants, assignments and runtime tokens live;
//! - `lifecycle`: assigning, reusing, deleting, revoking, what users and
//!   admins see, runtimes and their tokens;
//! - `serve`: serving to runtimes, and the refresh (single-flight + lease);
//! - `check`: background checks, refresh ahead of expiry, clean-up,
//!   revocation retries; `schedule`: the shared due index and the queue;
//! - `rotation`: Git Runtime tokens that rotate themselves (GitLab PATs);
//! - `lease`: in-process single-flight and store leases;
//! - `migrate`: records of earlier versions, moved at start.

mod bounded;
mod check;
pub mod grant;
mod installation;
pub mod lease;
mod lifecycle;
mod migrate;
mod narrow;
pub mod repo;
mod rotation;
pub mod runtime;
pub mod schedule;
mod serve;
mod wait;

pub use check::SweepReport;
pub use grant::{Grant, State, Status, TokenSource};
pub use lifecycle::{
    AssignError, Assigned, Lifecycle, OAuthTokens, Released, Reusable, RevokeReport, TokenInfo,
    TokenSlot, UserRuntime,
};
pub use runtime::RuntimeTokenStatus;
pub use serve::{ServeError, Served};
pub use wait::{WakeOnAssign, wait_channel};

use crate::crypto;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored token does not open: {0}")]
    Crypto(#[from] crypto::CryptoError),
}
