//! The runtime API: a runtime, authenticated by its own credential, reads
//! the Git user token of one of its users, and its own Git Runtime token.
//! Never the refresh token; never another runtime's tokens (those answer
//! 404, as if absent). What may be served is the lifecycle's decision.

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiPath, ApiQuery};
use crate::metrics::FetchKind;
use crate::providers::{GitAuth, ProviderKind};
use crate::registry::Runtime;
use crate::tokens::{ServeError, Served};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use std::collections::BTreeMap;
use std::time::Duration;

/// The bearer credential of the `Authorization` header, if well formed.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= 512)
        .then_some(token.trim())
}

/// The runtime whose credential came as the bearer token; 401 otherwise.
pub struct RuntimeCaller(pub Runtime);

impl FromRequestParts<AppState> for RuntimeCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let credential = bearer(&parts.headers).ok_or_else(|| {
            ApiError::unauthorized(
                "send the runtime credential as `Authorization: Bearer <credential>`",
            )
        })?;
        state
            .registry
            .runtime_for_credential_cached(credential)
            .await?
            .map(RuntimeCaller)
            .ok_or_else(|| ApiError::unauthorized("the runtime credential is not valid"))
    }
}

/// What a runtime gets: the token and how to present it to Git. Never a
/// refresh token or a client secret.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(as = Token)]
pub(super) struct TokenBody<'a> {
    token: &'a str,
    /// The username for HTTP Basic (kept for clients that predate `auth`;
    /// meaningless when `auth.scheme` is `bearer`).
    username: &'a str,
    auth: &'a GitAuth,
    #[schema(value_type = ProviderKind)]
    provider: &'static str,
    git_host: &'a str,
    scopes: &'a [String],
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A Kubernetes Secret manifest (`?format=argocd` or `?format=flux`).
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct SecretManifest {
    /// `v1`
    api_version: &'static str,
    /// `Secret`
    kind: &'static str,
    /// `Opaque`
    #[serde(rename = "type")]
    secret_type: &'static str,
    metadata: SecretMetadata,
    /// `username` and `password` (HTTP Basic) or `bearerToken`; Argo CD
    /// also `type` and `url`.
    string_data: BTreeMap<&'static str, String>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct SecretMetadata {
    name: String,
    labels: BTreeMap<&'static str, &'static str>,
    /// `gitbroker.io/expires-at` when the token expires.
    annotations: BTreeMap<&'static str, String>,
}

/// Either body of a token fetch (only for the API description).
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub(super) enum TokenAnswer<'a> {
    Token(TokenBody<'a>),
    Secret(SecretManifest),
}

/// The shape of the answer: gitbroker's own JSON, or a document a runtime
/// consumes as it is.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    #[default]
    Json,
    /// An Argo CD repository-credentials Secret (`repo-creds`).
    Argocd,
    /// The Secret a Flux `GitRepository` names in `secretRef`.
    Flux,
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TokenQuery {
    /// `json` (default), `argocd` or `flux`.
    #[serde(default)]
    format: Format,
    /// Git user tokens only: how long to wait for the user to authorize
    /// when there is no token yet — `500ms`, `30s`, `2m` or seconds, capped
    /// at `lifecycle.wait_max_secs`.
    #[serde(default)]
    #[param(example = "30s")]
    wait: Option<String>,
}

/// `?wait=`: `30s`, `2m`, `500ms` or a number of seconds; at most `max`.
fn parse_wait(v: &str, max: Duration) -> Result<Duration, ApiError> {
    let v = v.trim();
    let (num, unit) = match v.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => v.split_at(i),
        None => (v, "s"),
    };
    let n: u64 = num.parse().map_err(|_| {
        ApiError::bad_request("wait: give a duration such as `30s`, `2m` or `500ms`")
    })?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        _ => {
            return Err(ApiError::bad_request(
                "wait: the unit must be `ms`, `s` or `m`",
            ));
        }
    };
    Ok(d.min(max))
}

/// A Kubernetes object name from free-form parts: lower-case
/// alphanumerics and `-`, at most 253 characters.
fn k8s_name(parts: &[&str]) -> String {
    let mut name: String = parts
        .join("-")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    name.truncate(253);
    name.trim_matches('-').to_owned()
}

/// The Secret's `stringData` as Argo CD and Flux name the fields: HTTP
/// Basic as `username`/`password`, Bearer as `bearerToken`.
fn credential_fields(served: &Served) -> BTreeMap<&'static str, String> {
    let token = served.token.expose_secret().to_owned();
    let mut data = BTreeMap::new();
    match &served.auth {
        GitAuth::Basic { username } => {
            data.insert("username", username.clone());
            data.insert("password", token);
        }
        GitAuth::Bearer => {
            data.insert("bearerToken", token);
        }
    }
    data
}

/// A Secret manifest, ready to apply.
fn secret(
    name: String,
    labels: BTreeMap<&'static str, &'static str>,
    string_data: BTreeMap<&'static str, String>,
    served: &Served,
) -> SecretManifest {
    let mut annotations = BTreeMap::new();
    if let Some(at) = served.expires_at {
        annotations.insert("gitbroker.io/expires-at", at.to_rfc3339());
    }
    SecretManifest {
        api_version: "v1",
        kind: "Secret",
        secret_type: "Opaque",
        metadata: SecretMetadata {
            name,
            labels,
            annotations,
        },
        string_data,
    }
}

fn token_response(served: &Served, format: Format, name: &[&str]) -> Response {
    let name = || k8s_name(&[&["gitbroker"], name].concat());
    let mut resp = match format {
        Format::Json => axum::Json(TokenBody {
            token: served.token.expose_secret(),
            username: served.auth.username().unwrap_or(&served.username),
            auth: &served.auth,
            provider: served.provider.as_str(),
            git_host: &served.git_host,
            scopes: &served.scopes,
            expires_at: served.expires_at,
        })
        .into_response(),
        Format::Argocd => {
            let mut data = credential_fields(served);
            data.insert("type", "git".into());
            data.insert("url", format!("https://{}", served.git_host));
            axum::Json(secret(
                name(),
                BTreeMap::from([("argocd.argoproj.io/secret-type", "repo-creds")]),
                data,
                served,
            ))
            .into_response()
        }
        Format::Flux => axum::Json(secret(
            name(),
            BTreeMap::new(),
            credential_fields(served),
            served,
        ))
        .into_response(),
    };
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    // audited where it was served: its response line goes to `debug`
    resp.extensions_mut().insert(super::trace::AuditedRead);
    resp
}

/// `GET /api/v1/runtimes/{runtime}/users/{user}/token`: a user's Git user
/// token, refreshed first when it is about to expire.
#[utoipa::path(get, path = "/api/v1/runtimes/{runtime}/users/{user}/token", tag = "runtime",
    security(("runtime_credential" = [])),
    params(
        ("runtime" = String, Path, description = "The caller's runtime id", example = "acme-prod"),
        ("user" = String, Path, description = "The user's id (identity-provider subject)", example = "u-1001"),
        TokenQuery,
    ),
    responses(
        (status = 200, description = "The token (`format=json`), or a Secret manifest (`argocd`, `flux`)", body = TokenAnswer),
        (status = 400, description = "Malformed path or query", body = ApiError, content_type = "application/problem+json"),
        (status = 401, description = "No or wrong runtime credential", body = ApiError, content_type = "application/problem+json"),
        (status = 404, description = "No servable token (absent — also when a `wait` ended without one —, another runtime's, expired, revoked, lacking scopes, needing re-authorization, unreadable)", body = ApiError, content_type = "application/problem+json"),
        (status = 503, description = "Provider or store unavailable, or too many requests waiting (`too-many-waiting`, with Retry-After)", body = ApiError, content_type = "application/problem+json"),
    ))]
pub async fn user_token(
    State(state): State<AppState>,
    ApiPath((runtime, user)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<TokenQuery>,
    caller: Result<RuntimeCaller, ApiError>,
) -> Result<Response, ApiError> {
    let RuntimeCaller(caller) = caller.inspect_err(|e| {
        state
            .metrics
            .token_fetch(FetchKind::User, caller_outcome(e));
    })?;
    let wait = match &query.wait {
        Some(w) => parse_wait(w, state.wait_max())?,
        None => Duration::ZERO,
    };
    let mut served = state
        .lifecycle
        .serve_user_token(&caller, &runtime, &user)
        .await;
    if matches!(served, Err(ServeError::Absent)) && !wait.is_zero() {
        served = wait_for_token(&state, &caller, &runtime, &user, wait).await?;
    }
    state
        .metrics
        .token_fetch(FetchKind::User, fetch_outcome(&served));
    let served = served.map_err(|e| user_token_error(e, &runtime, &user))?;
    Ok(token_response(&served, query.format, &[&runtime, &user]))
}

/// Holds the request until the user's token for the runtime is assigned
/// (on any replica: a signal through the store's pub/sub) or `wait` ends
/// with the usual 404. At most `lifecycle.wait_max_requests` wait at once
/// on a replica; a client that goes away drops its subscription.
async fn wait_for_token(
    state: &AppState,
    caller: &Runtime,
    runtime: &str,
    user: &str,
    wait: Duration,
) -> Result<Result<Served, ServeError>, ApiError> {
    let Ok(_permit) = state.waiting.clone().try_acquire_owned() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too-many-waiting",
            "Too many waiting requests",
            format!(
                "{} requests already wait on this replica; retry without `wait`, or later",
                state.waiting_limit()
            ),
        )
        .with_retry_after(1));
    };
    let deadline = tokio::time::Instant::now() + wait;
    let mut signal = state
        .signals
        .subscribe(&crate::tokens::wait_channel(runtime, user))
        .await?;
    loop {
        // subscribed first, then looked again: no assignment falls between
        match state
            .lifecycle
            .serve_user_token(caller, runtime, user)
            .await
        {
            Err(ServeError::Absent) => {}
            other => return Ok(other),
        }
        if tokio::time::timeout_at(deadline, signal.signalled())
            .await
            .is_err()
        {
            return Ok(Err(ServeError::Absent));
        }
    }
}

/// The `outcome` label of a fetch whose caller was not let in.
fn caller_outcome(e: &ApiError) -> &'static str {
    if e.status == StatusCode::UNAUTHORIZED {
        "unauthorized"
    } else {
        "store_error"
    }
}

/// The `outcome` label of a token fetch.
fn fetch_outcome(served: &Result<Served, ServeError>) -> &'static str {
    match served {
        Ok(_) => "served",
        Err(ServeError::Absent) => "absent",
        Err(ServeError::Unreadable) => "unreadable",
        Err(ServeError::Expired(_)) => "expired",
        Err(ServeError::Invalid(_)) => "invalid",
        Err(ServeError::MissingScopes(_)) => "missing_scopes",
        Err(ServeError::Reauthorize(_)) => "reauthorize",
        Err(ServeError::NotInstalled(_)) => "not_installed",
        Err(ServeError::Unavailable { .. }) => "provider_unavailable",
        Err(ServeError::Store(_)) => "store_error",
    }
}

/// A problem type per reason a user token is not served.
fn user_token_error(e: ServeError, runtime: &str, user: &str) -> ApiError {
    let gone = |kind: &str, title: &str, detail: String| {
        ApiError::new(StatusCode::NOT_FOUND, kind, title, detail)
    };
    match e {
        ServeError::Absent => gone(
            "no-user-token",
            "No Git user token",
            format!(
                "user `{user}` has no Git user token for runtime `{runtime}`; the user must authorize access on the Git Personal Access Token page"
            ),
        ),
        ServeError::Unreadable => gone(
            "user-token-unreadable",
            "Git user token unreadable",
            format!(
                "the Git user token of `{user}` for runtime `{runtime}` can no longer be decrypted (its key was retired); the user must authorize access again"
            ),
        ),
        ServeError::Expired(reason) => gone(
            "user-token-expired",
            "Git user token expired",
            format!(
                "the Git user token of `{user}` for runtime `{runtime}` has expired ({reason})"
            ),
        ),
        ServeError::Invalid(reason) => gone(
            "user-token-revoked",
            "Git user token revoked or invalid",
            format!(
                "the Git user token of `{user}` for runtime `{runtime}` no longer works: {reason}"
            ),
        ),
        ServeError::MissingScopes(reason) => gone(
            "user-token-missing-scopes",
            "Git user token lacks scopes",
            format!(
                "the Git user token of `{user}` for runtime `{runtime}` lacks scopes: {reason}"
            ),
        ),
        ServeError::Reauthorize(reason) => gone(
            "user-token-reauthorize",
            "Git user token needs re-authorization",
            format!(
                "the Git user token of `{user}` for runtime `{runtime}` needs re-authorization: {reason}"
            ),
        ),
        ServeError::NotInstalled(reason) => gone(
            "user-token-not-installed",
            "GitHub App not installed",
            format!(
                "the Git user token of `{user}` for runtime `{runtime}` cannot reach the runtime's repositories: {reason}; the user or an owner must install the GitHub App there"
            ),
        ),
        ServeError::Unavailable {
            detail,
            retry_after,
        } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "provider-unavailable",
            "Provider unavailable",
            detail,
        )
        .retry_after(retry_after),
        ServeError::Store(e) => e.into(),
    }
}

/// `GET /api/v1/runtimes/{runtime}/token`: the runtime's own Git Runtime
/// token. A process-level action, audited as such.
#[utoipa::path(get, path = "/api/v1/runtimes/{runtime}/token", tag = "runtime",
    security(("runtime_credential" = [])),
    params(
        ("runtime" = String, Path, description = "The caller's runtime id", example = "acme-prod"),
        TokenQuery,
    ),
    responses(
        (status = 200, description = "The token (`format=json`), or a Secret manifest (`argocd`, `flux`)", body = TokenAnswer),
        (status = 400, description = "Malformed path or query", body = ApiError, content_type = "application/problem+json"),
        (status = 401, description = "No or wrong runtime credential", body = ApiError, content_type = "application/problem+json"),
        (status = 404, description = "No servable Git Runtime token", body = ApiError, content_type = "application/problem+json"),
        (status = 503, description = "Provider or store unavailable", body = ApiError, content_type = "application/problem+json"),
    ))]
pub async fn runtime_token(
    State(state): State<AppState>,
    ApiPath(runtime): ApiPath<String>,
    ApiQuery(query): ApiQuery<TokenQuery>,
    caller: Result<RuntimeCaller, ApiError>,
) -> Result<Response, ApiError> {
    let RuntimeCaller(caller) = caller.inspect_err(|e| {
        state
            .metrics
            .token_fetch(FetchKind::Runtime, caller_outcome(e));
    })?;
    if query.wait.is_some() {
        return Err(ApiError::bad_request(
            "wait applies to Git user tokens only",
        ));
    }
    let served = state.lifecycle.serve_runtime_token(&caller, &runtime).await;
    state
        .metrics
        .token_fetch(FetchKind::Runtime, fetch_outcome(&served));
    let served = served.map_err(|e| {
            let gone = |kind: &str, title: &str, detail: String| {
                ApiError::new(StatusCode::NOT_FOUND, kind, title, detail)
            };
            match e {
                ServeError::Absent => gone(
                    "no-runtime-token",
                    "No Git Runtime token",
                    format!("runtime `{runtime}` has no Git Runtime token; an admin must register one"),
                ),
                ServeError::Expired(_) => gone(
                    "runtime-token-expired",
                    "Git Runtime token expired",
                    format!("the Git Runtime token of `{runtime}` has expired; an admin must rotate it"),
                ),
                ServeError::Invalid(reason) => gone(
                    "runtime-token-revoked",
                    "Git Runtime token revoked or invalid",
                    format!("the Git Runtime token of `{runtime}` no longer works ({reason}); an admin must rotate it"),
                ),
                ServeError::MissingScopes(reason) => gone(
                    "runtime-token-missing-scopes",
                    "Git Runtime token lacks scopes",
                    format!("the Git Runtime token of `{runtime}` lacks scopes ({reason}); an admin must rotate it"),
                ),
                ServeError::Unreadable => gone(
                    "runtime-token-unreadable",
                    "Git Runtime token unreadable",
                    format!("the Git Runtime token of `{runtime}` can no longer be decrypted (its key was retired); an admin must rotate it"),
                ),
                other => user_token_error(other, &runtime, "-"),
            }
        })?;
    Ok(token_response(
        &served,
        query.format,
        &[&runtime, "runtime-token"],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_answer_is_marked_audited_and_uncacheable() {
        let served = Served {
            token: secrecy::SecretString::from("t0ken"),
            username: "alice".into(),
            auth: GitAuth::basic("alice"),
            git_host: "github.com".into(),
            provider: ProviderKind::Github,
            scopes: vec!["repo".into()],
            expires_at: None,
        };
        for format in [Format::Json, Format::Argocd, Format::Flux] {
            let r = token_response(&served, format, &["acme-prod", "u-1"]);
            assert!(
                r.extensions()
                    .get::<super::super::trace::AuditedRead>()
                    .is_some()
            );
            assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
        }
    }

    #[test]
    fn waits_parse_and_are_capped() {
        let max = Duration::from_secs(30);
        let ok = |v: &str| parse_wait(v, max).unwrap_or(Duration::MAX);
        assert_eq!(ok("10"), Duration::from_secs(10));
        assert_eq!(ok("10s"), Duration::from_secs(10));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("2m"), max);
        assert_eq!(ok("999999999999m"), max);
        for bad in ["", "s", "10h", "-1", "1.5s", "ten"] {
            assert!(parse_wait(bad, max).is_err(), "{bad}");
        }
    }

    #[test]
    fn kubernetes_names_are_dns_labels() {
        assert_eq!(
            k8s_name(&["gitbroker", "Acme_Prod.1", "u-1001"]),
            "gitbroker-acme-prod-1-u-1001"
        );
        assert_eq!(k8s_name(&["--x--"]), "x");
        assert!(k8s_name(&[&"a".repeat(300)]).len() <= 253);
    }
}
