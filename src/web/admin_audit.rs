//! `GET /api/v1/admin/audit`: the audit log, filtered and paginated, as
//! JSON pages or an `application/x-ndjson` export of everything matching.

use super::AppState;
use super::admin_api::Admin;
use super::error::ApiError;
use super::extract::ApiQuery;
use crate::audit_log::{self, Filter};
use crate::events::{Action, ActorKind};
use crate::store::{LogId, Store};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    runtime: Option<String>,
    user: Option<String>,
    /// `kind` or `kind:id` (`user:u-1001`, `runtime:acme-prod`, `admin`, `system`).
    actor: Option<String>,
    /// One action or several, comma-separated.
    action: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
    format: Option<String>,
}

fn bad(param: &str, detail: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("{param}: {detail}"))
}

fn time(param: &str, v: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    v.map(|s| {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| bad(param, "must be an RFC 3339 time, e.g. 2026-12-01T10:00:00Z"))
    })
    .transpose()
}

fn actor_kind(s: &str) -> Option<ActorKind> {
    [
        ActorKind::User,
        ActorKind::Runtime,
        ActorKind::Admin,
        ActorKind::System,
    ]
    .into_iter()
    .find(|k| k.as_str() == s)
}

fn parse(q: &AuditQuery) -> Result<(Filter, Option<LogId>, usize), ApiError> {
    let (actor_kind, actor_id) = match q.actor.as_deref() {
        None => (None, None),
        Some(a) => {
            let (kind, id) = match a.split_once(':') {
                Some((k, id)) => (k, Some(id.to_owned())),
                None => (a, None),
            };
            let kind = actor_kind(kind).ok_or_else(|| {
                bad(
                    "actor",
                    "must be user, runtime, admin or system, optionally with :id",
                )
            })?;
            (Some(kind), id)
        }
    };
    let actions = match q.action.as_deref() {
        None => Vec::new(),
        Some(list) => list
            .split(',')
            .map(|a| {
                Action::parse(a.trim()).ok_or_else(|| {
                    bad(
                        "action",
                        format!(
                            "unknown action `{}`",
                            a.trim().chars().take(64).collect::<String>()
                        ),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let since = time("since", q.since.as_deref())?;
    let until = time("until", q.until.as_deref())?;
    if let (Some(s), Some(u)) = (since, until)
        && s > u
    {
        return Err(bad("since", "must not be after until"));
    }
    let limit = match q.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| bad("limit", format!("must be a number from 1 to {MAX_LIMIT}")))?,
    };
    let cursor = q
        .cursor
        .as_deref()
        .map(|c| {
            c.parse::<LogId>()
                .map_err(|()| bad("cursor", "is not a cursor this API returned"))
        })
        .transpose()?;
    let filter = Filter {
        runtime: q.runtime.clone(),
        user: q.user.clone(),
        actor_kind,
        actor_id,
        actions,
        since,
        until,
    };
    Ok((filter, cursor, limit))
}

fn entry_json(id: LogId, event: &crate::events::Event) -> Value {
    let mut v = json!(event);
    v["log_id"] = json!(id.to_string());
    v
}

fn wants_jsonl(q: &AuditQuery, headers: &HeaderMap) -> Result<bool, ApiError> {
    match q.format.as_deref() {
        Some("jsonl" | "ndjson") => return Ok(true),
        Some("json") => return Ok(false),
        Some(_) => return Err(bad("format", "must be json or jsonl")),
        None => {}
    }
    Ok(headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/x-ndjson") || a.contains("application/jsonl")))
}

#[utoipa::path(get, path = "/api/v1/admin/audit", tag = "admin",
    security(("admin_token" = []), ("session" = [])),
    params(AuditQuery),
    responses(
        (status = 200, description = "One page `{\"entries\": [...], \"next_cursor\"}`, oldest first; or every matching entry as JSON lines (`format=jsonl` or `Accept: application/x-ndjson`)", body = Object),
        (status = 400, description = "Malformed request", body = ApiError, content_type = "application/problem+json"),
        (status = 404, description = "The audit log is off", body = ApiError, content_type = "application/problem+json"),
        (status = 401, description = "No or wrong admin credentials", body = ApiError, content_type = "application/problem+json"),
        (status = 403, description = "A session outside the admin group, or without X-CSRF-Token on a change", body = ApiError, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = ApiError, content_type = "application/problem+json"),
    ))]
pub async fn query(
    State(state): State<AppState>,
    _admin: Admin,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Response, ApiError> {
    if state.audit.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "audit-disabled",
            "Audit log disabled",
            "the audit log is off ([audit] enabled = false)",
        ));
    }
    let (filter, cursor, limit) = parse(&q)?;
    if wants_jsonl(&q, &headers)? {
        // the first page is read before answering, so a store failure is a
        // 503 rather than a broken stream
        let first = audit_log::query(state.store.as_ref(), &filter, cursor, MAX_LIMIT).await?;
        return Ok(export(state.store.clone(), filter, first));
    }
    let page = audit_log::query(state.store.as_ref(), &filter, cursor, limit).await?;
    let entries: Vec<Value> = page
        .entries
        .iter()
        .map(|(id, e)| entry_json(*id, e))
        .collect();
    let mut resp = axum::Json(json!({
        "entries": entries,
        "next_cursor": page.next.map(|c| c.to_string()),
    }))
    .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// Every matching entry from the first page on, one JSON object a line,
/// read page by page as the client takes them.
fn export(store: Arc<dyn Store>, filter: Filter, first: audit_log::Page) -> Response {
    enum Next {
        Page(audit_log::Page),
        Read(LogId),
        Done,
    }
    let stream = futures_util::stream::unfold(Next::Page(first), move |next| {
        let store = store.clone();
        let filter = filter.clone();
        async move {
            let page = match next {
                Next::Done => return None,
                Next::Page(p) => p,
                Next::Read(cursor) => {
                    match audit_log::query(store.as_ref(), &filter, Some(cursor), MAX_LIMIT).await {
                        Ok(p) => p,
                        Err(e) => {
                            // the status line is gone: end the body short,
                            // which the client sees as an incomplete read
                            tracing::error!(error = %e, "audit export: store failed mid-export");
                            return Some((
                                Err(std::io::Error::other("store unavailable")),
                                Next::Done,
                            ));
                        }
                    }
                }
            };
            let mut out = Vec::new();
            for (id, e) in &page.entries {
                if serde_json::to_writer(&mut out, &entry_json(*id, e)).is_ok() {
                    out.push(b'\n');
                }
            }
            let next = page.next.map_or(Next::Done, Next::Read);
            Some((Ok::<_, std::io::Error>(out), next))
        }
    });
    let mut resp = Response::new(Body::from_stream(stream));
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
