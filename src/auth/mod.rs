//! Who the user is: OIDC sign-in against the configured identity provider
//! and the server-side sessions that follow it.

pub mod login;
pub mod oidc;
pub mod session;

pub use session::{Flash, FlashKind, Session, SessionStore, SessionUser};
