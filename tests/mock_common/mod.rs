//! Helpers shared by the mock provider's integration tests: a configured
//! mock, and a client that drives it like the broker and a browser would.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gitbroker::mock::{MockConfig, MockIdpClient, MockOAuthApp, MockProvider, RunningMock};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, LOCATION};
use serde_json::Value;
use std::collections::HashMap;

pub const CLIENT_ID: &str = "Ov23liMockClient0001";
pub const CLIENT_SECRET: &str = "0123456789abcdef0123456789abcdef01234567";
pub const CALLBACK: &str = "http://broker.test/oauth/github/callback";
pub const IDP_CLIENT: &str = "gitbroker";
pub const IDP_SECRET: &str = "idp-client-secret";
pub const IDP_CALLBACK: &str = "http://broker.test/auth/callback";
/// RFC 7636 Appendix B.
pub const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
pub const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

pub fn config(expiring_tokens: bool) -> MockConfig {
    let mut config = MockConfig::demo();
    config.expiring_tokens = expiring_tokens;
    config.oauth_apps.push(MockOAuthApp {
        name: "Gitbroker <test>".into(),
        client_id: CLIENT_ID.into(),
        client_secret: CLIENT_SECRET.into(),
        callback_url: CALLBACK.into(),
    });
    config.idp_clients.push(MockIdpClient {
        client_id: IDP_CLIENT.into(),
        client_secret: IDP_SECRET.into(),
        redirect_uris: vec![IDP_CALLBACK.into()],
    });
    config
}

pub async fn start() -> RunningMock {
    MockProvider::start(config(false), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

pub async fn start_expiring() -> RunningMock {
    MockProvider::start(config(true), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// Like the broker's client: never follows redirects.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub fn query_of(location: &str) -> HashMap<String, String> {
    url::Url::parse(location)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

pub fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(LOCATION)
        .expect("a Location header")
        .to_str()
        .unwrap()
        .to_owned()
}

/// Undoes HTML escaping: the named entities and numeric ones (askama writes
/// `&#60;` for `<`).
pub fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let end = rest[at..].find(';').map(|e| at + e).unwrap();
        let entity = &rest[at + 1..end];
        let decoded = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let n = entity.strip_prefix('#').unwrap();
                let code = match n.strip_prefix('x') {
                    Some(hex) => u32::from_str_radix(hex, 16).unwrap(),
                    None => n.parse().unwrap(),
                };
                char::from_u32(code).unwrap()
            }
        };
        out.push(decoded);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The `name="…" value="…"` pairs of the hidden inputs in `html`, as a
/// browser would submit them.
pub fn hidden_fields(html: &str) -> Vec<(String, String)> {
    html.split("<input type=\"hidden\" ")
        .skip(1)
        .map(|rest| {
            let attr = |name: &str| {
                let start = rest.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
                let len = rest[start..].find('"').unwrap();
                unescape(&rest[start..start + len])
            };
            (attr("name"), attr("value"))
        })
        .collect()
}

pub fn authorize_url(mock: &RunningMock, scope: &str, state: &str) -> String {
    let mut url = url::Url::parse(&format!("{}/login/oauth/authorize", mock.base_url)).unwrap();
    url.query_pairs_mut()
        .append_pair("client_id", CLIENT_ID)
        .append_pair("redirect_uri", CALLBACK)
        .append_pair("scope", scope)
        .append_pair("state", state)
        .append_pair("code_challenge", CHALLENGE)
        .append_pair("code_challenge_method", "S256");
    url.into()
}

/// Opens the consent page and clicks a button as `login`; returns the
/// redirect's query.
pub async fn consent(
    mock: &RunningMock,
    scope: &str,
    login: &str,
    decision: &str,
) -> HashMap<String, String> {
    let page = http()
        .get(authorize_url(mock, scope, "state-123"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    let mut form = hidden_fields(&html);
    form.push(("login".into(), login.into()));
    form.push(("decision".into(), decision.into()));
    let response = http()
        .post(format!("{}/login/oauth/authorize", mock.base_url))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    let location = location(&response);
    assert!(location.starts_with(CALLBACK), "{location}");
    query_of(&location)
}

pub async fn code_for(mock: &RunningMock, scope: &str) -> String {
    consent(mock, scope, "alice", "approve").await["code"].clone()
}

/// Posts to the token endpoint the way `oauth2` does (form body, secret in
/// the form unless `basic`), asking for JSON.
pub async fn token_request(mock: &RunningMock, form: &[(&str, &str)]) -> Value {
    let response = http()
        .post(format!("{}/login/oauth/access_token", mock.base_url))
        .header(ACCEPT, "application/json")
        .form(form)
        .send()
        .await
        .unwrap();
    // GitHub answers errors with 200 too.
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

pub async fn exchange(mock: &RunningMock, code: &str, verifier: &str) -> Value {
    token_request(
        mock,
        &[
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("code", code),
            ("redirect_uri", CALLBACK),
            ("code_verifier", verifier),
        ],
    )
    .await
}

pub async fn get_user(mock: &RunningMock, authorization: &str) -> reqwest::Response {
    http()
        .get(format!("{}/user", mock.github_api_url()))
        .header("Authorization", authorization)
        .send()
        .await
        .unwrap()
}

pub fn app_api(mock: &RunningMock, what: &str) -> String {
    format!("{}/applications/{CLIENT_ID}/{what}", mock.github_api_url())
}

pub fn assert_github_error(body: &Value, code: &str) {
    assert_eq!(body["error"], code, "{body}");
    assert!(body["error_description"].is_string());
    assert!(
        body["error_uri"]
            .as_str()
            .unwrap()
            .starts_with("https://docs.github.com/")
    );
    assert!(body.get("access_token").is_none());
}
