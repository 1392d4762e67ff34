//! The OpenAPI 3.1 description of the runtime, user and admin APIs,
//! generated from the handlers' annotations and the types they answer
//! with; served at `/openapi.json` and kept in `docs/openapi.json`.

use super::{admin_api, me_api, runtime_api};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "gitbroker",
        description = "Git token broker for GitOps runtimes: the runtime API (a runtime reads its users' Git user tokens and its own Git Runtime token with its runtime credential), the user API (the signed-in user's tokens) and the admin API (OAuth apps and runtimes). Errors are problem+json (RFC 9457).",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        runtime_api::user_token,
        runtime_api::runtime_token,
        me_api::list,
        me_api::put_pat,
        me_api::delete,
        me_api::reuse,
        me_api::notifications,
        me_api::set_notifications,
        me_api::set_runtime_notifications,
        admin_api::list_apps,
        admin_api::create_app,
        admin_api::get_app,
        admin_api::update_app,
        admin_api::delete_app,
        admin_api::list_runtimes,
        admin_api::create_runtime,
        admin_api::get_runtime,
        admin_api::update_runtime,
        admin_api::delete_runtime,
        admin_api::get_runtime_token,
        admin_api::rotate_runtime_token,
        admin_api::list_user_tokens,
        admin_api::delete_user_tokens,
        admin_api::notifications,
        super::admin_audit::query,
        super::admin_webhooks::list,
        super::admin_webhooks::create,
        super::admin_webhooks::remove,
        super::admin_webhooks::deliveries,
        super::admin_webhooks::replay,
        admin_api::rotate_keys,
        admin_api::backup,
    ),
    components(schemas(runtime_api::Format)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "runtime", description = "A runtime, with its runtime credential as bearer token"),
        (name = "user", description = "The signed-in user (session cookie; changes need X-CSRF-Token)"),
        (name = "admin", description = "Admins: the admin API token as bearer token, or an admin-group session"),
    )
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "runtime_credential",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The runtime's credential"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The admin API token (`admin.api_token`)"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "__Host-gitbroker_session",
                "The session cookie of a signed-in user (`gitbroker_session` with secure_cookies = false)",
            ))),
        );
    }
}

/// The description as served and committed: pretty JSON, one final newline.
pub fn json() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|_| "{}".into());
    text.push('\n');
    text
}

/// `GET /openapi.json`.
pub async fn serve() -> Response {
    let mut resp = json().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    /// `docs/openapi.json` is the generated description, byte for byte:
    /// after changing an API, regenerate it with
    /// `GITBROKER_WRITE_OPENAPI=1 cargo test --lib openapi`.
    #[test]
    fn the_committed_description_is_the_generated_one() {
        let generated = super::json();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
        if std::env::var_os("GITBROKER_WRITE_OPENAPI").is_some() {
            std::fs::write(path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/openapi.json is out of date: run GITBROKER_WRITE_OPENAPI=1 cargo test --lib openapi"
        );
    }

    #[test]
    fn it_is_openapi_3_1_with_every_api_route() {
        let doc: serde_json::Value = serde_json::from_str(&super::json()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().unwrap();
        for p in [
            "/api/v1/runtimes/{runtime}/users/{user}/token",
            "/api/v1/runtimes/{runtime}/token",
            "/api/v1/me/tokens",
            "/api/v1/me/runtimes/{runtime}/token",
            "/api/v1/me/runtimes/{runtime}/token/reuse",
            "/api/v1/admin/oauth-apps",
            "/api/v1/admin/oauth-apps/{id}",
            "/api/v1/admin/runtimes",
            "/api/v1/admin/runtimes/{id}",
            "/api/v1/admin/runtimes/{id}/git-token",
            "/api/v1/admin/runtimes/{id}/user-tokens",
        ] {
            assert!(paths.contains_key(p), "{p} missing");
        }
        let problem = &doc["components"]["schemas"]["Problem"]["properties"];
        for field in ["type", "title", "status", "detail"] {
            assert!(problem.get(field).is_some(), "Problem.{field}");
        }
        // no secret field is readable
        let schemas = doc["components"]["schemas"].to_string();
        assert!(!schemas.contains("refresh_token"));
        assert!(!schemas.contains("credential_sha256"));
    }
}
