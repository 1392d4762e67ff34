//! Encryption at rest and random secrets. Secret fields are sealed with
//! XChaCha20-Poly1305 under a key id (so keys can rotate), with associated
//! data that binds the ciphertext to the record it belongs to: a ciphertext
//! copied under another key (runtime, user, kind) does not open.

use crate::config::KeySettings;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use subtle::ConstantTimeEq;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("no encryption key with id `{0}` is configured")]
    UnknownKey(String),
    #[error("ciphertext does not open: wrong key, wrong record or tampered")]
    Open,
    #[error("malformed ciphertext envelope")]
    Malformed,
}

/// A sealed value as stored: key id, nonce and ciphertext (with tag).
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Sealed {
    pub kid: String,
    pub nonce: String,
    pub ct: String,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealed")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// Associated data: a record kind and the ids it is bound to, each
/// length-prefixed so that ("ab","c") and ("a","bc") differ.
pub fn associated_data(kind: &str, ids: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(b"gitbroker/v1");
    for part in std::iter::once(kind).chain(ids.iter().copied()) {
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out
}

pub struct Keyring {
    active: String,
    ciphers: HashMap<String, XChaCha20Poly1305>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<&String> = self.ciphers.keys().collect();
        ids.sort();
        f.debug_struct("Keyring")
            .field("active", &self.active)
            .field("key_ids", &ids)
            .finish()
    }
}

impl Keyring {
    pub fn new(active: &str, keys: &[KeySettings]) -> Result<Self, CryptoError> {
        let ciphers: HashMap<String, XChaCha20Poly1305> = keys
            .iter()
            .map(|k| {
                let cipher = XChaCha20Poly1305::new(k.key.expose_secret().into());
                (k.id.clone(), cipher)
            })
            .collect();
        if !ciphers.contains_key(active) {
            return Err(CryptoError::UnknownKey(active.to_owned()));
        }
        Ok(Self {
            active: active.to_owned(),
            ciphers,
        })
    }

    pub fn active_key_id(&self) -> &str {
        &self.active
    }

    /// Seals under the active key with a fresh random 192-bit nonce.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Sealed, CryptoError> {
        let cipher = self
            .ciphers
            .get(&self.active)
            .ok_or_else(|| CryptoError::UnknownKey(self.active.clone()))?;
        let mut nonce = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ct = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| CryptoError::Malformed)?;
        Ok(Sealed {
            kid: self.active.clone(),
            nonce: B64.encode(nonce),
            ct: B64.encode(ct),
        })
    }

    pub fn open(&self, aad: &[u8], sealed: &Sealed) -> Result<Vec<u8>, CryptoError> {
        let cipher = self
            .ciphers
            .get(&sealed.kid)
            .ok_or_else(|| CryptoError::UnknownKey(sealed.kid.clone()))?;
        let nonce = B64
            .decode(&sealed.nonce)
            .map_err(|_| CryptoError::Malformed)?;
        if nonce.len() != 24 {
            return Err(CryptoError::Malformed);
        }
        let ct = B64.decode(&sealed.ct).map_err(|_| CryptoError::Malformed)?;
        cipher
            .decrypt(XNonce::from_slice(&nonce), Payload { msg: &ct, aad })
            .map_err(|_| CryptoError::Open)
    }
}

/// The binary form of a sealed record, for records that are nothing but
/// sealed (grants, runtime tokens): `GB1`, the key id's length and the key
/// id, the 24-byte nonce, the ciphertext with its tag. A third of the size
/// of the JSON envelope with base64 fields.
const ENVELOPE: &[u8; 3] = b"GB1";

impl Keyring {
    pub fn seal_envelope(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let cipher = self
            .ciphers
            .get(&self.active)
            .ok_or_else(|| CryptoError::UnknownKey(self.active.clone()))?;
        let kid = u8::try_from(self.active.len()).map_err(|_| CryptoError::Malformed)?;
        let mut nonce = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ct = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| CryptoError::Malformed)?;
        let mut out = Vec::with_capacity(4 + self.active.len() + 24 + ct.len());
        out.extend_from_slice(ENVELOPE);
        out.push(kid);
        out.extend_from_slice(self.active.as_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    pub fn open_envelope(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let kid = envelope_key_id(sealed).ok_or(CryptoError::Malformed)?;
        let rest = &sealed[4 + kid.len()..];
        if rest.len() < 24 + 16 {
            return Err(CryptoError::Malformed);
        }
        let cipher = self
            .ciphers
            .get(kid)
            .ok_or_else(|| CryptoError::UnknownKey(kid.to_owned()))?;
        let (nonce, ct) = rest.split_at(24);
        cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
            .map_err(|_| CryptoError::Open)
    }
}

/// The key id a binary envelope was sealed under (for rotation tools and
/// tests); `None` when the bytes are not an envelope.
pub fn envelope_key_id(sealed: &[u8]) -> Option<&str> {
    let rest = sealed.strip_prefix(ENVELOPE.as_slice())?;
    let (&len, rest) = rest.split_first()?;
    std::str::from_utf8(rest.get(..usize::from(len))?).ok()
}

/// `n` random bytes from the OS, base64url without padding.
pub fn random_string(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    B64.encode(bytes)
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(crate::config::sha256(data))
}

/// The name of the cookie that binds a one-time round trip (sign-in, OAuth
/// flow) to the browser that started it: one cookie per round trip, so
/// several tabs can run at once, named from the state's digest, never the
/// state itself. `__Host-` when cookies are secure.
pub fn binding_cookie_name(purpose: &str, state: &str, secure: bool) -> String {
    let digest = sha256_hex(state.as_bytes());
    let prefix = if secure { "__Host-" } else { "" };
    format!("{prefix}gb_{purpose}_{}", &digest[..16])
}

/// Whether the browser's binding cookie value matches the SHA-256 (hex)
/// recorded at the start, compared in constant time.
pub fn binding_matches(cookie_value: Option<&str>, recorded_sha256: &str) -> bool {
    cookie_value.is_some_and(|b| {
        ct_eq(
            sha256_hex(b.as_bytes()).as_bytes(),
            recorded_sha256.as_bytes(),
        )
    })
}

/// Constant-time equality of two byte strings of any length.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// A new random 32-byte key, base64 (for `gitbroker generate-key`).
pub fn generate_key() -> String {
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    base64::engine::general_purpose::STANDARD.encode(key)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use secrecy::SecretBox;

    fn ring(active: &str, ids: &[&str]) -> Keyring {
        let keys: Vec<KeySettings> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| KeySettings {
                id: (*id).to_owned(),
                key: SecretBox::new(Box::new([i as u8 + 1; 32])),
            })
            .collect();
        Keyring::new(active, &keys).unwrap()
    }

    #[test]
    fn round_trip() {
        let k = ring("k1", &["k1"]);
        let aad = associated_data("user_token", &["rt", "alice"]);
        let sealed = k.seal(&aad, b"gho_secret").unwrap();
        assert_eq!(k.open(&aad, &sealed).unwrap(), b"gho_secret");
        assert!(!sealed.ct.contains("gho_secret"));
    }

    #[test]
    fn fresh_nonce_per_seal() {
        let k = ring("k1", &["k1"]);
        let a = k.seal(b"x", b"same").unwrap();
        let b = k.seal(b"x", b"same").unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ct, b.ct);
    }

    #[test]
    fn associated_data_mismatch_fails() {
        let k = ring("k1", &["k1"]);
        let sealed = k
            .seal(&associated_data("user_token", &["rt-a", "alice"]), b"t")
            .unwrap();
        for other in [
            associated_data("user_token", &["rt-b", "alice"]),
            associated_data("user_token", &["rt-a", "bob"]),
            associated_data("runtime_token", &["rt-a", "alice"]),
            associated_data("user_token", &["rt-aalice"]),
        ] {
            assert!(matches!(k.open(&other, &sealed), Err(CryptoError::Open)));
        }
    }

    #[test]
    fn tampered_ciphertext_fails() {
        let k = ring("k1", &["k1"]);
        let mut sealed = k.seal(b"ad", b"token").unwrap();
        let mut ct = B64.decode(&sealed.ct).unwrap();
        ct[0] ^= 1;
        sealed.ct = B64.encode(ct);
        assert!(matches!(k.open(b"ad", &sealed), Err(CryptoError::Open)));
    }

    #[test]
    fn rotation_old_key_still_opens() {
        let old = ring("k1", &["k1"]);
        let sealed = old.seal(b"ad", b"token").unwrap();
        let rotated = ring("k2", &["k1", "k2"]);
        assert_eq!(rotated.open(b"ad", &sealed).unwrap(), b"token");
        assert_eq!(rotated.seal(b"ad", b"x").unwrap().kid, "k2");
        let only_new = ring("k2", &["k2"]);
        assert!(matches!(
            only_new.open(b"ad", &sealed),
            Err(CryptoError::UnknownKey(_))
        ));
    }

    #[test]
    fn envelopes_round_trip_bind_and_name_their_key() {
        let k = ring("k1", &["k1"]);
        let sealed = k.seal_envelope(b"ad", b"gho_secret").unwrap();
        assert_eq!(envelope_key_id(&sealed), Some("k1"));
        assert_eq!(k.open_envelope(b"ad", &sealed).unwrap(), b"gho_secret");
        assert!(matches!(
            k.open_envelope(b"other", &sealed),
            Err(CryptoError::Open)
        ));
        assert!(!sealed.windows(10).any(|w| w == b"gho_secret"));
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(matches!(
            k.open_envelope(b"ad", &tampered),
            Err(CryptoError::Open)
        ));
        assert!(matches!(
            k.open_envelope(b"ad", b"GB1"),
            Err(CryptoError::Malformed)
        ));
        let rotated = ring("k2", &["k1", "k2"]);
        assert_eq!(
            rotated.open_envelope(b"ad", &sealed).unwrap(),
            b"gho_secret"
        );
    }

    #[test]
    fn debug_prints_no_key_material() {
        let k = ring("k1", &["k1"]);
        let s = format!("{k:?}");
        assert!(s.contains("k1"));
        assert!(!s.contains("1, 1, 1"));
    }
}
