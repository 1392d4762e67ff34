//! gitbroker: a Git token broker for GitOps runtimes.

pub mod clock;
pub mod mock;
pub mod store;
