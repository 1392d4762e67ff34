//! Protocol pieces every flavour needs: PKCE (RFC 7636), client
//! authentication (RFC 6749 §2.3.1), the code exchange's checks (§4.1.3),
//! bearer tokens, form bodies, redirects.

use super::book::{Issued, Lifetimes, TokenBook};
use super::control::Counters;
use super::pats::Flavour;
use super::{MockOAuthApp, Shared};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::Duration;
use rand::Rng;
use rand::distributions::Alphanumeric;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use subtle::ConstantTimeEq;

pub(crate) fn random_alnum(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// Compares secrets without leaking where they differ.
pub(crate) fn secrets_equal(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// RFC 7636 §4.1: 43 to 128 characters from the unreserved set. The same
/// shape holds for an S256 challenge (always 43 characters).
pub(crate) fn valid_pkce_string(s: &str) -> bool {
    (43..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// Whether `verifier` hashes to the S256 `challenge`.
pub(crate) fn pkce_s256_matches(challenge: &str, verifier: &str) -> bool {
    if !valid_pkce_string(verifier) {
        return false;
    }
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    secrets_equal(&computed, challenge)
}

/// Parses an `application/x-www-form-urlencoded` body. A repeated parameter
/// makes the whole body invalid (RFC 6749 §3.1), reported as `None`.
pub(crate) fn parse_form(body: &[u8]) -> Option<HashMap<String, String>> {
    let mut form = HashMap::new();
    for (k, v) in form_urlencoded::parse(body) {
        if form.insert(k.into_owned(), v.into_owned()).is_some() {
            return None;
        }
    }
    Some(form)
}

/// How a client presented its credentials.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthMethod {
    Basic,
    Post,
}

/// Client credentials from a request; never printed.
pub(crate) struct ClientCredentials {
    pub id: String,
    pub secret: String,
    pub method: AuthMethod,
}

pub(crate) enum ClientAuthError {
    /// No credentials at all.
    Missing,
    /// Malformed or contradictory credentials (two methods at once, a Basic
    /// header that does not decode).
    Invalid,
}

/// Client credentials from HTTP Basic (`client_secret_basic`, with the
/// form-urlencoding RFC 6749 §2.3.1 prescribes) or from the form
/// (`client_secret_post`). Using both at once is refused, as RFC 6749 asks.
pub(crate) fn client_credentials(
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<ClientCredentials, ClientAuthError> {
    let basic = match basic_auth(headers) {
        Some(Ok(pair)) => Some(pair),
        Some(Err(())) => return Err(ClientAuthError::Invalid),
        None => None,
    };
    match (basic, form.get("client_secret")) {
        (Some(_), Some(_)) => Err(ClientAuthError::Invalid),
        (Some((id, secret)), None) => {
            let id = url_decode(&id);
            if form.get("client_id").is_some_and(|f| *f != id) {
                return Err(ClientAuthError::Invalid);
            }
            Ok(ClientCredentials {
                id,
                secret: url_decode(&secret),
                method: AuthMethod::Basic,
            })
        }
        (None, Some(secret)) => match form.get("client_id") {
            Some(id) => Ok(ClientCredentials {
                id: id.clone(),
                secret: secret.clone(),
                method: AuthMethod::Post,
            }),
            None => Err(ClientAuthError::Invalid),
        },
        (None, None) => Err(ClientAuthError::Missing),
    }
}

/// The registered OAuth app whose credentials the request carries, sent
/// in one of `methods`.
pub(crate) fn authenticate(
    s: &Shared,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
    methods: &[AuthMethod],
) -> Option<MockOAuthApp> {
    let creds = client_credentials(headers, form).ok()?;
    let app = s.oauth_app(&creds.id)?;
    (methods.contains(&creds.method) && secrets_equal(&creds.secret, &app.client_secret))
        .then_some(app)
}

/// How long an authorization code lives.
const CODE_MINUTES: i64 = 10;

/// Why a code exchange was refused; each flavour words it its own way.
pub(crate) enum CodeRefused {
    /// Missing, unknown, spent, expired, or issued to another client.
    BadCode,
    /// Not the `redirect_uri` of the authorization request.
    RedirectMismatch,
    /// A verifier that does not match the challenge, or one without the
    /// other.
    Verifier,
}

/// `grant_type=authorization_code` for `app`: the code's checks, then
/// tokens from `book` with the scopes it granted (or the `grant_scopes`
/// switch's).
pub(crate) fn exchange_code(
    s: &Shared,
    book: &TokenBook,
    app: &MockOAuthApp,
    form: &HashMap<String, String>,
    lifetimes: Option<Lifetimes>,
) -> Result<Issued, CodeRefused> {
    let code = form.get("code").ok_or(CodeRefused::BadCode)?;
    // Taken before any other check: a code that reached the endpoint once is
    // spent, whatever else was wrong with the request.
    let grant = book.take_code(code).ok_or(CodeRefused::BadCode)?;
    let now = s.now();
    if grant.client_id != app.client_id || now - grant.issued_at >= Duration::minutes(CODE_MINUTES)
    {
        return Err(CodeRefused::BadCode);
    }
    // RFC 6749 §4.1.3: the same redirect_uri as the authorization request,
    // and none if it had none.
    let redirect_ok = match form.get("redirect_uri") {
        Some(r) => {
            *r == grant
                .redirect_uri
                .unwrap_or_else(|| app.callback_url.clone())
        }
        None => grant.redirect_uri.is_none(),
    };
    if !redirect_ok {
        return Err(CodeRefused::RedirectMismatch);
    }
    // A verifier without a challenge is refused too (RFC 9700 §2.1.1: PKCE
    // downgrade).
    let pkce_ok = match (&grant.code_challenge, form.get("code_verifier")) {
        (Some(challenge), Some(verifier)) => pkce_s256_matches(challenge, verifier),
        (None, None) => true,
        _ => false,
    };
    if !pkce_ok {
        return Err(CodeRefused::Verifier);
    }
    let scopes = s.switches.get().grant_scopes.unwrap_or(grant.scopes);
    let lifetimes = lifetimes.map(|l| s.lifetimes(l));
    Ok(book.issue(&grant.subject, &app.client_id, scopes, now, lifetimes))
}

/// `grant_type=refresh_token` for `client_id`: rotates the pair in `book`
/// (the `access_token_secs` switch applied to `lifetimes`) and counts the
/// success. `None`: unknown, spent, expired, or another client's.
pub(crate) fn refresh_grant(
    s: &Shared,
    flavour: Flavour,
    book: &TokenBook,
    client_id: &str,
    refresh_token: &str,
    lifetimes: Lifetimes,
) -> Option<Issued> {
    let issued = book.refresh(refresh_token, client_id, s.now(), s.lifetimes(lifetimes))?;
    s.counters.refresh_succeeded(flavour);
    Some(issued)
}

/// How one flavour's token endpoint answers the status switches.
pub(crate) struct TokenPages {
    pub flavour: Flavour,
    /// `token_status`: the flavour's HTML error page for that status.
    pub error_page: fn(u16) -> Response,
    /// `refresh_status`: the same, except that 429 (and GitHub's 403) look
    /// like the flavour's rate limit.
    pub refresh_status: fn(&Shared, u16) -> Response,
}

/// Whether a token request body is a `grant_type=refresh_token` request.
fn is_refresh(body: &[u8]) -> bool {
    parse_form(body)
        .is_some_and(|f| f.get("grant_type").map(String::as_str) == Some("refresh_token"))
}

/// Every flavour's token endpoint: counted (refreshes per flavour too);
/// answered with `refresh_status` (refreshes only) or the HTML page of
/// `token_status` while those switches are on, else as `answer` decides,
/// given the OAuth error the switches ask for (`refresh_error` for a
/// refresh, else `token_error`); then held back while `token_hang` (or,
/// for a refresh, `refresh_hang`) is on. The answer is decided before the
/// hang, so a client that disconnects cannot undo what was done.
pub(crate) async fn token_endpoint(
    s: &Shared,
    pages: &TokenPages,
    body: &[u8],
    answer: impl FnOnce(Option<&str>) -> Response,
) -> Response {
    Counters::bump(&s.counters.token_requests);
    let refresh = is_refresh(body);
    if refresh {
        s.counters.refresh_requested(pages.flavour);
    }
    let switches = s.switches.get();
    let refresh_status = switches.refresh_status.filter(|_| refresh);
    let response = match (refresh_status, switches.token_status) {
        (Some(status), _) => (pages.refresh_status)(s, status),
        (None, Some(status)) => (pages.error_page)(status),
        (None, None) => {
            let refresh_error = switches.refresh_error.as_deref().filter(|_| refresh);
            answer(refresh_error.or(switches.token_error.as_deref()))
        }
    };
    s.counters.touch();
    s.switches.token_hang_wait().await;
    if refresh {
        s.switches.refresh_hang_wait().await;
    }
    response
}

/// The user and password of an HTTP Basic `Authorization` header: `None`
/// when there is no Basic header, `Err` when it does not decode.
pub(crate) fn basic_auth(headers: &HeaderMap) -> Option<Result<(String, String), ()>> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD
        .decode(rest.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok());
    Some(match decoded.as_deref().and_then(|d| d.split_once(':')) {
        Some((user, password)) => Ok((user.to_owned(), password.to_owned())),
        None => Err(()),
    })
}

/// The token of an `Authorization: <scheme> <token>` header, for any of the
/// given schemes (compared case-insensitively).
pub(crate) fn authorization_token(headers: &HeaderMap, schemes: &[&str]) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (schemes.iter().any(|s| s.eq_ignore_ascii_case(scheme)) && !token.is_empty())
        .then(|| token.to_owned())
}

/// The token an API request of `flavour` presents, read as that flavour
/// reads it: GitHub `Bearer` or `token`; GitLab `PRIVATE-TOKEN` or
/// `Bearer`; Bitbucket the password of HTTP Basic, or `Bearer`; Gitea
/// `token` or `Bearer`.
pub(crate) fn presented_token(flavour: Flavour, headers: &HeaderMap) -> Option<String> {
    match flavour {
        Flavour::Github => authorization_token(headers, &["bearer", "token"]),
        Flavour::Gitlab => headers
            .get("private-token")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .or_else(|| authorization_token(headers, &["bearer"])),
        // Gitea: `token <t>` (its documents) or `Bearer <t>`
        Flavour::Gitea => authorization_token(headers, &["bearer", "token"]),
        Flavour::BitbucketCloud | Flavour::BitbucketDataCenter => match basic_auth(headers) {
            Some(Ok((_, secret))) => Some(secret),
            _ => authorization_token(headers, &["bearer"]),
        },
    }
}

fn url_decode(s: &str) -> String {
    form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Whether the client asked for JSON; GitHub's token endpoint answers
/// form-encoded otherwise.
pub(crate) fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/json"))
}

/// `redirect_uri` with `params` appended to its query (keeping any query it
/// already has, RFC 6749 §3.1.2).
pub(crate) fn redirect_url(redirect_uri: &str, params: &[(&str, &str)]) -> Option<String> {
    let mut url = url::Url::parse(redirect_uri).ok()?;
    {
        let mut query = url.query_pairs_mut();
        for (k, v) in params {
            query.append_pair(k, v);
        }
    }
    Some(url.into())
}

/// A header to add to a response; `None` for a value no header can carry.
pub(crate) fn header_pair(name: &'static str, value: &str) -> Option<(HeaderName, HeaderValue)> {
    HeaderValue::from_str(value)
        .ok()
        .map(|v| (HeaderName::from_static(name), v))
}

pub(crate) fn with_headers(
    headers: Vec<(HeaderName, HeaderValue)>,
    mut response: Response,
) -> Response {
    response.headers_mut().extend(headers);
    response
}

/// A 302, which is what GitHub and most identity providers send.
pub(crate) fn found(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => (
            StatusCode::FOUND,
            [
                (header::LOCATION, value),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Spaces (the standard) and commas, which GitHub accepts too.
pub(crate) const SPACE_OR_COMMA: &[char] = &[' ', ','];

/// Splits a scope parameter on `separators`, dropping duplicates but
/// keeping the order asked for.
pub(crate) fn parse_scopes(scope: Option<&str>, separators: &[char]) -> Vec<String> {
    let mut scopes: Vec<String> = Vec::new();
    for s in scope
        .unwrap_or_default()
        .split(separators)
        .filter(|s| !s.is_empty())
    {
        if !scopes.iter().any(|have| have == s) {
            scopes.push(s.to_owned());
        }
    }
    scopes
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn pkce_rfc7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(pkce_s256_matches(challenge, verifier));
        assert!(!pkce_s256_matches(
            challenge,
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXK"
        ));
        assert!(!pkce_s256_matches(challenge, "short"));
    }

    fn basic(user_password: &str) -> HeaderMap {
        let encoded = STANDARD.encode(user_password);
        let value = HeaderValue::from_str(&format!("Basic {encoded}")).unwrap();
        HeaderMap::from_iter([(header::AUTHORIZATION, value)])
    }

    #[test]
    fn basic_credentials_are_form_urldecoded() {
        let headers = basic("my%20app:s%3Acret");
        let Ok(creds) = client_credentials(&headers, &HashMap::new()) else {
            panic!("credentials expected");
        };
        assert_eq!(creds.id, "my app");
        assert_eq!(creds.secret, "s:cret");
    }

    #[test]
    fn two_client_auth_methods_are_refused() {
        let headers = basic("app:secret");
        let form = HashMap::from([("client_secret".to_owned(), "secret".to_owned())]);
        assert!(matches!(
            client_credentials(&headers, &form),
            Err(ClientAuthError::Invalid)
        ));
    }

    #[test]
    fn repeated_form_parameters_are_invalid() {
        assert!(parse_form(b"code=a&code=b").is_none());
        assert_eq!(parse_form(b"code=a+b").unwrap()["code"], "a b");
    }

    #[test]
    fn redirects_keep_an_existing_query() {
        let url = redirect_url("http://rp.test/cb?x=1", &[("code", "c d")]).unwrap();
        assert_eq!(url, "http://rp.test/cb?x=1&code=c+d");
    }

    #[test]
    fn scopes_split_on_spaces_and_commas() {
        assert_eq!(
            parse_scopes(Some("repo gist,repo  admin:repo_hook"), SPACE_OR_COMMA),
            vec!["repo", "gist", "admin:repo_hook"]
        );
        assert_eq!(parse_scopes(Some("a,b b"), &[' ']), vec!["a,b", "b"]);
        assert!(parse_scopes(None, SPACE_OR_COMMA).is_empty());
    }
}
