//! Records written before grants existed, moved into today's form at start
//! so that an upgrade loses no token: per-runtime user tokens (metadata in
//! clear, secrets sealed to (runtime, user)) become one grant each with its
//! assignment; runtime tokens sealed to the runtime alone are sealed again
//! to its incarnation. One replica migrates at a time (a lease); each old
//! record is deleted only after its new form is stored.

use super::TokenError;
use super::grant::{AssignmentRef, Grant, State, Status, TokenSource};
use super::lifecycle::Lifecycle;
use super::repo::Assignment;
use super::runtime::{self, RuntimeToken, RuntimeTokenStatus};
use crate::crypto::{self, Sealed};
use crate::providers::ProviderKind;
use crate::store::{Collection, Expect, StoreError};
use chrono::{DateTime, Utc};
use rand::Rng;
use secrecy::SecretString;
use serde::Deserialize;
use std::time::Duration;

const OLD_USER_TOKEN: &str = "user_token";

#[derive(Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
enum OldSource {
    #[serde(rename = "o_auth")]
    OAuth {
        app: String,
    },
    Pat,
}

#[derive(Deserialize)]
struct OldUserToken {
    provider: ProviderKind,
    provider_login: String,
    git_username: String,
    scopes: Vec<String>,
    issued_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    source: OldSource,
    secrets: Sealed,
}

#[derive(Deserialize)]
struct OldSecrets {
    access_token: String,
    refresh_token: Option<String>,
}

#[derive(Deserialize)]
struct OldRuntimeToken {
    runtime: String,
    provider: ProviderKind,
    provider_login: String,
    git_username: String,
    kind: String,
    scopes: Vec<String>,
    expires_at: Option<DateTime<Utc>>,
    set_at: DateTime<Utc>,
    token: Sealed,
}

pub(super) async fn run(l: &Lifecycle) -> Result<(), TokenError> {
    let Some(lease) = l
        .leases
        .try_acquire("migrate", Duration::from_secs(300))
        .await?
    else {
        // another replica is migrating right now
        return Ok(());
    };
    let result = migrate(l).await;
    l.leases.release(lease).await;
    result
}

async fn migrate(l: &Lifecycle) -> Result<(), TokenError> {
    let store = l.store.clone();
    let runtimes = l
        .registry
        .runtimes()
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    let apps = l
        .registry
        .apps()
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    let now = l.clock.now();
    let interval = l.timing().check_interval.num_seconds().max(1);
    let mut moved = 0usize;
    for rt in &runtimes {
        let old = Collection::new(OLD_USER_TOKEN, rt.id.clone());
        for (user, rec) in store.record_list(&old).await? {
            let Ok(t) = serde_json::from_slice::<OldUserToken>(&rec.value) else {
                tracing::warn!(runtime = %rt.id, "an old user token record does not parse; left in place");
                continue;
            };
            let aad = crypto::associated_data(OLD_USER_TOKEN, &[&rt.id, &user]);
            let secrets: OldSecrets = match l
                .keyring
                .open(&aad, &t.secrets)
                .ok()
                .and_then(|p| serde_json::from_slice(&p).ok())
            {
                Some(s) => s,
                None => {
                    tracing::warn!(runtime = %rt.id, "an old user token does not open (retired key); left in place");
                    continue;
                }
            };
            let (source, cap_at, api) = match t.source {
                OldSource::OAuth { app } => {
                    let found = apps.iter().find(|a| a.id == app);
                    let cap = found
                        .and_then(|a| a.token_lifetime_secs)
                        .and_then(|s| i64::try_from(s).ok())
                        .map(|s| t.issued_at + chrono::Duration::seconds(s));
                    let api = found
                        .and_then(|a| a.endpoints().ok())
                        .map(|e| e.api.to_string());
                    (TokenSource::OAuth { app }, cap, api)
                }
                OldSource::Pat => (
                    TokenSource::Pat {
                        kind: "personal access token".into(),
                    },
                    None,
                    None,
                ),
            };
            let api = match api {
                Some(a) => a,
                None => l
                    .registry
                    .provider_of(rt)
                    .await
                    .map(|(_, e)| e.api.to_string())
                    .unwrap_or_default(),
            };
            let source_is_pat = matches!(source, TokenSource::Pat { .. });
            let spread = rand::thread_rng().gen_range(0..interval);
            let grant = Grant {
                id: crypto::random_string(16),
                user: user.clone(),
                provider: t.provider,
                api,
                source,
                access_token: SecretString::from(secrets.access_token),
                refresh_token: secrets.refresh_token.map(SecretString::from),
                // Bitbucket's pasted tokens need their username to be checked
                pat_username: source_is_pat.then(|| t.git_username.clone()),
                pat_email: None,
                git_username: t.git_username,
                git_auth: None,
                provider_login: t.provider_login,
                scopes: t.scopes,
                authorized_at: t.issued_at,
                issued_at: t.issued_at,
                access_expires_at: t.expires_at,
                cap_at,
                last_refreshed_at: None,
                refresh_failures: 0,
                refresh_cooldown_until: None,
                assignments: vec![AssignmentRef {
                    runtime: rt.id.clone(),
                    incarnation: rt.incarnation.clone(),
                    assigned_at: t.issued_at,
                }],
                status: Status::new(State::Valid, now, None),
                next_check_at: now + chrono::Duration::seconds(spread),
            };
            l.save_grant(&grant, Expect::Absent).await?;
            l.grants
                .put_assignment(
                    &rt.id,
                    &rt.incarnation,
                    &user,
                    &Assignment {
                        grant: grant.id.clone(),
                        assigned_at: t.issued_at,
                    },
                    Expect::Any,
                )
                .await?;
            store
                .record_delete(&old, &user, Expect::Version(rec.version))
                .await?;
            moved += 1;
        }
    }
    for (id, rec) in store.record_list(&runtime::collection()).await? {
        if crypto::envelope_key_id(&rec.value).is_some() {
            continue;
        }
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(&rec.value) else {
            continue;
        };
        let Some(rt) = runtimes.iter().find(|r| r.id == id) else {
            continue;
        };
        let Ok(old) = serde_json::from_value::<OldRuntimeToken>(value) else {
            continue;
        };
        let aad = crypto::associated_data(runtime::KIND, &[&old.runtime]);
        let Some(token) = l
            .keyring
            .open(&aad, &old.token)
            .ok()
            .and_then(|p| String::from_utf8(p).ok())
        else {
            tracing::warn!(runtime = %id, "an old runtime token does not open (retired key); left in place");
            continue;
        };
        let api = l
            .registry
            .provider_of(rt)
            .await
            .map(|(_, e)| e.api.to_string())
            .unwrap_or_default();
        let t = RuntimeToken {
            incarnation: rt.incarnation.clone(),
            api,
            info: RuntimeTokenStatus {
                runtime: id.clone(),
                provider: old.provider,
                provider_login: old.provider_login,
                git_username: old.git_username,
                kind: old.kind,
                scopes: old.scopes,
                expires_at: old.expires_at,
                set_at: old.set_at,
                status: Status::new(State::Valid, now, None),
                rotated_at: None,
                rotation_error: None,
            },
            token: SecretString::from(token),
            pat_username: None,
            pat_email: None,
            next_check_at: now
                + chrono::Duration::seconds(rand::thread_rng().gen_range(0..interval)),
            git_auth: None,
            rotation: Default::default(),
        };
        l.save_runtime_token(&t, Expect::Version(rec.version))
            .await?;
        moved += 1;
    }
    if moved > 0 {
        tracing::info!(records = moved, "moved stored tokens into the grant format");
    }
    Ok(())
}
