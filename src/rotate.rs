//! `gitbroker rotate-keys`: re-seals every sealed record of the store under
//! the active key, so that an older key can be retired. Each record is
//! rewritten with compare-and-swap on the version it was read at: a record
//! changed meanwhile by a serving replica is read again (and is usually
//! already under the active key), never overwritten. Running it again finds
//! nothing to do.
//!
//! Sealed records: grants (Git user tokens), Git Runtime tokens, queued
//! revocations (binary envelopes) and OAuth apps (a JSON record whose
//! `client_secret` field is sealed). Nothing else in the store is sealed;
//! the sign-in cookie is sealed too but lives in the browser for at most
//! `flow_ttl_secs`.

use crate::crypto::{self, CryptoError, Keyring, Sealed};
use crate::registry::{self, Registry};
use crate::store::{Collection, Expect, Store, StoreError, Versioned};
use crate::tokens::{repo, runtime, schedule};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How often one record is read again after a concurrent write before
/// giving up on it (it is then counted as `busy`).
const ATTEMPTS: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("registry: {0}")]
    Registry(#[from] registry::RegistryError),
}

/// The kinds of sealed record, as the summary names them.
pub const KINDS: [&str; 6] = [
    "grant",
    "runtime_token",
    "revocation",
    "oauth_app",
    "user_profile",
    "webhook_endpoint",
];

/// What happened to the records of one kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindReport {
    /// Records found.
    pub records: u64,
    /// Re-sealed under the active key by this run.
    pub resealed: u64,
    /// Already under the active key (possibly rewritten by a replica meanwhile).
    pub current: u64,
    /// Deleted while the run went on.
    pub gone: u64,
    /// That do not open: sealed under a key no longer configured, for an
    /// earlier incarnation of their runtime, or damaged. Left as they are.
    pub unreadable: u64,
    /// Compare-and-swap conflicts met (each retried).
    pub conflicts: u64,
    /// Still changing after every retry; left as they are (run again).
    pub busy: u64,
    /// Key ids of the records left unreadable or busy, with their counts.
    pub left_under: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotateReport {
    pub active_key: String,
    pub kinds: Vec<(&'static str, KindReport)>,
}

/// The report as the admin API answers it and the command line prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotateSummary {
    pub active_key: String,
    /// Re-sealed by this run.
    pub resealed: u64,
    /// Not under the active key after it.
    pub left: u64,
    pub kinds: Vec<KindSummary>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindSummary {
    pub kind: String,
    #[serde(flatten)]
    pub report: KindReport,
}

impl From<&RotateReport> for RotateSummary {
    fn from(r: &RotateReport) -> Self {
        Self {
            active_key: r.active_key.clone(),
            resealed: r.resealed(),
            left: r.left(),
            kinds: r
                .kinds
                .iter()
                .map(|(kind, report)| KindSummary {
                    kind: (*kind).to_owned(),
                    report: report.clone(),
                })
                .collect(),
        }
    }
}

impl RotateReport {
    pub fn resealed(&self) -> u64 {
        self.kinds.iter().map(|(_, k)| k.resealed).sum()
    }

    /// Records not under the active key after the run.
    pub fn left(&self) -> u64 {
        self.kinds.iter().map(|(_, k)| k.unreadable + k.busy).sum()
    }
}

/// How a record's secret is sealed.
#[derive(Clone, Copy)]
enum Form {
    /// The whole record is a binary envelope.
    Envelope,
    /// A JSON object whose `client_secret` is a [`Sealed`].
    SecretField,
    /// A JSON object whose `secrets` are base64 envelopes (webhook endpoints).
    EnvelopeList,
}

struct Target {
    kind: usize,
    coll: Collection,
    id: String,
    aad: Vec<u8>,
    form: Form,
    listed: Versioned,
}

/// The key id `bytes` were sealed under.
fn key_id(form: Form, bytes: &[u8]) -> Option<String> {
    match form {
        Form::Envelope => crypto::envelope_key_id(bytes).map(str::to_owned),
        Form::SecretField => secret_field(bytes).ok().map(|(_, s)| s.kid),
        // the key of the first one not under the active key would do as well:
        // all are sealed together
        Form::EnvelopeList => envelope_list(bytes).ok().and_then(|(_, list)| {
            list.first()
                .and_then(|e| crypto::envelope_key_id(e).map(str::to_owned))
        }),
    }
}

fn envelope_list(bytes: &[u8]) -> Result<(serde_json::Value, Vec<Vec<u8>>), CryptoError> {
    use base64::Engine;
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|_| CryptoError::Malformed)?;
    let list = value
        .get("secrets")
        .and_then(|s| s.as_array())
        .ok_or(CryptoError::Malformed)?
        .iter()
        .map(|e| {
            e.as_str()
                .and_then(|t| base64::engine::general_purpose::STANDARD.decode(t).ok())
                .ok_or(CryptoError::Malformed)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((value, list))
}

fn secret_field(bytes: &[u8]) -> Result<(serde_json::Value, Sealed), CryptoError> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|_| CryptoError::Malformed)?;
    let sealed = value
        .get("client_secret")
        .cloned()
        .and_then(|s| serde_json::from_value::<Sealed>(s).ok())
        .ok_or(CryptoError::Malformed)?;
    Ok((value, sealed))
}

/// The record's bytes with its secret opened and sealed again under the active key.
fn reseal(keyring: &Keyring, form: Form, aad: &[u8], bytes: &[u8]) -> Result<Vec<u8>, CryptoError> {
    match form {
        Form::Envelope => {
            let plain = keyring.open_envelope(aad, bytes)?;
            keyring.seal_envelope(aad, &plain)
        }
        Form::SecretField => {
            let (mut value, sealed) = secret_field(bytes)?;
            let plain = keyring.open(aad, &sealed)?;
            let fresh = serde_json::to_value(keyring.seal(aad, &plain)?)
                .map_err(|_| CryptoError::Malformed)?;
            if let Some(field) = value.get_mut("client_secret") {
                *field = fresh;
            }
            serde_json::to_vec(&value).map_err(|_| CryptoError::Malformed)
        }
        Form::EnvelopeList => {
            use base64::Engine;
            let (mut value, list) = envelope_list(bytes)?;
            let mut fresh = Vec::new();
            for e in list {
                let plain = keyring.open_envelope(aad, &e)?;
                fresh.push(serde_json::Value::from(
                    base64::engine::general_purpose::STANDARD
                        .encode(keyring.seal_envelope(aad, &plain)?),
                ));
            }
            if let Some(field) = value.get_mut("secrets") {
                *field = serde_json::Value::Array(fresh);
            }
            serde_json::to_vec(&value).map_err(|_| CryptoError::Malformed)
        }
    }
}

/// Every sealed record in the store, with the associated data it opens with.
async fn targets(
    store: &dyn Store,
    registry: &Registry,
    reports: &mut [KindReport],
) -> Result<Vec<Target>, RotateError> {
    let mut out = Vec::new();
    for user in store.record_groups(repo::GRANT).await? {
        let coll = repo::grant_collection(&user);
        for (id, listed) in store.record_list(&coll).await? {
            out.push(Target {
                kind: 0,
                aad: repo::grant_aad(&user, &id),
                coll: coll.clone(),
                id,
                form: Form::Envelope,
                listed,
            });
        }
    }
    let coll = runtime::collection();
    for (id, listed) in store.record_list(&coll).await? {
        match registry.runtime(&id).await? {
            Some(rt) => out.push(Target {
                kind: 1,
                aad: runtime::aad(&id, &rt.incarnation),
                coll: coll.clone(),
                id,
                form: Form::Envelope,
                listed,
            }),
            None => {
                // a token left behind by a deleted runtime: nothing can open it
                reports[1].records += 1;
                reports[1].unreadable += 1;
                let kid = key_id(Form::Envelope, &listed.value).unwrap_or_default();
                *reports[1].left_under.entry(kid).or_default() += 1;
            }
        }
    }
    let coll = schedule::queue();
    for (id, listed) in store.record_list(&coll).await? {
        out.push(Target {
            kind: 2,
            aad: schedule::revocation_aad(&id),
            coll: coll.clone(),
            id,
            form: Form::Envelope,
            listed,
        });
    }
    let coll = registry::all(registry::APPS);
    for (id, listed) in store.record_list(&coll).await? {
        out.push(Target {
            kind: 3,
            aad: Registry::app_aad(&id),
            coll: coll.clone(),
            id,
            form: Form::SecretField,
            listed,
        });
    }
    // webhook endpoints created through the admin API: their signing secrets
    let coll = crate::webhooks::endpoints_coll();
    for (id, listed) in store.record_list(&coll).await? {
        out.push(Target {
            kind: 5,
            aad: crate::webhooks::aad(&id),
            coll: coll.clone(),
            id,
            form: Form::EnvelopeList,
            listed,
        });
    }
    // what notifications remember of a person (sealed: personal data)
    for user in store.record_groups(crate::notify::PROFILE).await? {
        let coll = crate::notify::profile_collection(&user);
        for (id, listed) in store.record_list(&coll).await? {
            out.push(Target {
                kind: 4,
                aad: crate::notify::profile_aad(&user),
                coll: coll.clone(),
                id,
                form: Form::Envelope,
                listed,
            });
        }
    }
    Ok(out)
}

/// Re-seals every sealed record not under the active key. `progress` is
/// told (done, total) after each record.
pub async fn rotate(
    store: &dyn Store,
    keyring: &Keyring,
    registry: &Registry,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<RotateReport, RotateError> {
    let active = keyring.active_key_id().to_owned();
    let mut reports = vec![KindReport::default(); KINDS.len()];
    let targets = targets(store, registry, &mut reports).await?;
    let total = targets.len() as u64;
    progress(0, total);
    for (done, t) in targets.into_iter().enumerate() {
        let r = &mut reports[t.kind];
        r.records += 1;
        let mut current = Some(t.listed);
        let mut attempt = 0;
        loop {
            let Some(rec) = current.take() else {
                r.gone += 1;
                break;
            };
            let kid = key_id(t.form, &rec.value);
            if kid.as_deref() == Some(active.as_str()) {
                r.current += 1;
                break;
            }
            let fresh = match reseal(keyring, t.form, &t.aad, &rec.value) {
                Ok(fresh) => fresh,
                Err(e) => {
                    tracing::warn!(kind = KINDS[t.kind], id = %t.id, error = %e, "a sealed record does not open; left as it is");
                    r.unreadable += 1;
                    *r.left_under.entry(kid.unwrap_or_default()).or_default() += 1;
                    break;
                }
            };
            match store
                .record_put(&t.coll, &t.id, &fresh, Expect::Version(rec.version))
                .await
            {
                Ok(_) => {
                    r.resealed += 1;
                    break;
                }
                Err(StoreError::Conflict) => {
                    r.conflicts += 1;
                    attempt += 1;
                    if attempt >= ATTEMPTS {
                        r.busy += 1;
                        *r.left_under.entry(kid.unwrap_or_default()).or_default() += 1;
                        break;
                    }
                    current = store.record_get(&t.coll, &t.id).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        progress(done as u64 + 1, total);
    }
    Ok(RotateReport {
        active_key: active,
        kinds: KINDS.into_iter().zip(reports).collect(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::KeySettings;
    use secrecy::SecretBox;

    fn ring(active: &str, ids: &[&str]) -> Keyring {
        let keys: Vec<KeySettings> = ids
            .iter()
            .map(|id| KeySettings {
                id: (*id).to_owned(),
                key: SecretBox::new(Box::new([id.as_bytes()[1]; 32])),
            })
            .collect();
        Keyring::new(active, &keys).unwrap()
    }

    #[test]
    fn webhook_secret_lists_are_resealed_under_the_active_key() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let old = ring("k1", &["k1"]);
        let new = ring("k2", &["k1", "k2"]);
        let only_new = ring("k2", &["k2"]);
        let sealed: Vec<String> = [b"one".as_slice(), b"two".as_slice()]
            .iter()
            .map(|k| b64.encode(old.seal_envelope(b"ad", k).unwrap()))
            .collect();
        let record =
            serde_json::to_vec(&serde_json::json!({"fields": {"id": "h"}, "secrets": sealed}))
                .unwrap();
        assert_eq!(key_id(Form::EnvelopeList, &record).as_deref(), Some("k1"));
        let fresh = reseal(&new, Form::EnvelopeList, b"ad", &record).unwrap();
        assert_eq!(key_id(Form::EnvelopeList, &fresh).as_deref(), Some("k2"));
        let (value, list) = envelope_list(&fresh).unwrap();
        assert_eq!(value["fields"]["id"], "h");
        let opened: Vec<Vec<u8>> = list
            .iter()
            .map(|e| only_new.open_envelope(b"ad", e).unwrap())
            .collect();
        assert_eq!(opened, [b"one".to_vec(), b"two".to_vec()]);
    }

    #[test]
    fn envelopes_and_secret_fields_are_resealed_under_the_active_key() {
        let old = ring("k1", &["k1"]);
        let new = ring("k2", &["k1", "k2"]);
        let only_new = ring("k2", &["k2"]);

        let env = old.seal_envelope(b"ad", b"gho_secret").unwrap();
        assert_eq!(key_id(Form::Envelope, &env).as_deref(), Some("k1"));
        let fresh = reseal(&new, Form::Envelope, b"ad", &env).unwrap();
        assert_eq!(key_id(Form::Envelope, &fresh).as_deref(), Some("k2"));
        assert_eq!(
            only_new.open_envelope(b"ad", &fresh).unwrap(),
            b"gho_secret"
        );

        let app = serde_json::json!({
            "id": "gh", "client_id": "cid",
            "client_secret": old.seal(b"app", b"client-secret").unwrap(),
        });
        let bytes = serde_json::to_vec(&app).unwrap();
        assert_eq!(key_id(Form::SecretField, &bytes).as_deref(), Some("k1"));
        let fresh = reseal(&new, Form::SecretField, b"app", &bytes).unwrap();
        let (value, sealed) = secret_field(&fresh).unwrap();
        assert_eq!(sealed.kid, "k2");
        assert_eq!(value["client_id"], "cid");
        assert_eq!(only_new.open(b"app", &sealed).unwrap(), b"client-secret");
        assert!(!String::from_utf8_lossy(&fresh).contains("client-secret"));

        // the wrong associated data, or a key that is gone, does not open
        assert!(reseal(&new, Form::Envelope, b"other", &env).is_err());
        assert!(matches!(
            reseal(&only_new, Form::Envelope, b"ad", &env),
            Err(CryptoError::UnknownKey(_))
        ));
    }
}
