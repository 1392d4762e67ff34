//! The benchmark's reference point: a bare axum endpoint that checks a
//! bearer header and returns a fixed JSON body — what a token fetch would
//! cost with no store, no crypto and no logging. `scripts/bench.sh` runs it
//! beside the broker so that the ratio comes from one run.
//!
//! `cargo run --release --example bare_axum -- 127.0.0.1:PORT`
#![allow(clippy::disallowed_methods, clippy::expect_used)]

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const CREDENTIAL: &str = "Bearer bench-credential-acme-prod-0123456789abcdef";
const BODY: &str = r#"{"token":"gho_0123456789abcdef0123456789abcdef0123","username":"x-access-token","auth":{"scheme":"basic","username":"x-access-token"},"provider":"github","git_host":"github.com","scopes":["repo"],"expires_at":null}"#;

async fn token(headers: HeaderMap) -> Response {
    if headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()) != Some(CREDENTIAL.as_bytes()) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    ([(header::CONTENT_TYPE, "application/json")], BODY).into_response()
}

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".into());
    let app =
        axum::Router::new().route("/api/v1/runtimes/{runtime}/users/{user}/token", get(token));
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .expect("bind the baseline's address");
    axum::serve(listener, app).await.expect("serve");
}
