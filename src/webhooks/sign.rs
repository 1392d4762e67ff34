//! Standard Webhooks signatures (<https://www.standardwebhooks.com>):
//! `webhook-signature` = space-separated `v1,<base64 HMAC-SHA256>` over
//! `{webhook-id}.{webhook-timestamp}.{body}`, one per secret, so a receiver
//! can rotate its secret while both old and new verify.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretBox};
use sha2::Sha256;

/// A signing secret: `whsec_` and the base64 of 24 to 64 random bytes, as
/// the Standard Webhooks libraries take it. `Debug` never shows it.
pub struct WebhookSecret(SecretBox<Vec<u8>>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret([redacted])")
    }
}

impl Clone for WebhookSecret {
    fn clone(&self) -> Self {
        Self(SecretBox::new(Box::new(self.0.expose_secret().clone())))
    }
}

pub const PREFIX: &str = "whsec_";

impl WebhookSecret {
    /// Parses `whsec_<base64>`; the error never quotes the value.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let b64 = text
            .strip_prefix(PREFIX)
            .ok_or("must start with whsec_ followed by base64 (e.g. from `gitbroker generate-key` prefixed with whsec_)")?;
        let bytes = STANDARD
            .decode(b64.trim())
            .map_err(|_| "must be whsec_ followed by base64")?;
        if !(24..=64).contains(&bytes.len()) {
            return Err("must hold 24 to 64 bytes of key (32 random bytes are usual)");
        }
        Ok(Self(SecretBox::new(Box::new(bytes))))
    }

    /// A new random secret, and how it is written.
    pub fn generate() -> (Self, String) {
        use rand::RngCore;
        let mut key = vec![0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        let text = format!("{PREFIX}{}", STANDARD.encode(&key));
        (Self(SecretBox::new(Box::new(key))), text)
    }

    pub fn key(&self) -> &[u8] {
        self.0.expose_secret()
    }

    /// `v1,<base64 signature>` of one message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        // HMAC takes a key of any length
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(self.key()) else {
            return String::new();
        };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The `webhook-signature` header: one signature per secret.
pub fn signature_header(
    secrets: &[WebhookSecret],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|s| s.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_specification_example() {
        // the example of the Standard Webhooks specification
        // (spec/standard-webhooks.md, "Signature scheme")
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_are_checked_and_never_shown() {
        assert!(WebhookSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(WebhookSecret::parse("whsec_!!!").is_err());
        assert!(WebhookSecret::parse("whsec_c2hvcnQ=").is_err());
        let (s, text) = WebhookSecret::generate();
        let again = WebhookSecret::parse(&text).unwrap();
        assert_eq!(s.key(), again.key());
        assert!(!format!("{s:?}").contains(&text[6..]));
        let header = signature_header(&[s, again], "msg_1", 1, b"{}");
        let parts: Vec<_> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.starts_with("v1,")));
    }
}
