//! gitbroker: a Git token broker for GitOps runtimes. Users sign in with
//! OIDC and assign a Git user token to each runtime (OAuth2 or a personal
//! access token); runtimes fetch their users' tokens with their own
//! credential. `router` builds the whole HTTP application in-process.

pub mod app;
pub mod audit_log;
pub mod auth;
pub mod clock;
pub mod config;
pub mod credential;
pub mod crypto;
pub mod events;
pub mod log_writer;
pub mod metrics;
pub mod mock;
pub mod notify;
pub mod oauth;
pub mod providers;
pub mod registry;
pub mod rotate;
pub mod store;
pub mod tokens;
pub mod web;
pub mod webhooks;

pub use web::{AppState, router};
