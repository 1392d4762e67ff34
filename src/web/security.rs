//! Response headers for every answer, cookie construction, CSRF checks and
//! the same-origin return-path check.

use crate::crypto;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use axum_extra::extract::cookie::{Cookie, SameSite};

pub async fn headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, name: header::HeaderName, value: &'static str| {
        if !h.contains_key(&name) {
            h.insert(name, HeaderValue::from_static(value));
        }
    };
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::REFERRER_POLICY, "no-referrer");
    set(h, header::CACHE_CONTROL, "no-store");
    resp
}

pub fn session_cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-gitbroker_session"
    } else {
        "gitbroker_session"
    }
}

/// A cookie with the attributes of the security checklist: HttpOnly,
/// SameSite=Lax (Strict would not be sent on the provider's redirect
/// back), Path=/, no Domain, Secure unless turned off for plain-http use.
pub fn cookie(
    name: String,
    value: String,
    secure: bool,
    max_age: Option<std::time::Duration>,
) -> Cookie<'static> {
    let mut c = Cookie::build((name, value))
        .http_only(true)
        .same_site(SameSite::Lax)
        .path("/")
        .secure(secure)
        .build();
    if let Some(age) = max_age {
        c.set_max_age(cookie::time::Duration::seconds(age.as_secs() as i64));
    }
    c
}

/// A removal cookie for `name` with the same attributes.
pub fn removal(name: String, secure: bool) -> Cookie<'static> {
    let mut c = cookie(name, String::new(), secure, None);
    c.make_removal();
    c
}

pub fn csrf_ok(expected: &str, given: &str) -> bool {
    crypto::ct_eq(expected.as_bytes(), given.as_bytes())
}

/// Accepts only a same-origin relative path, checked after percent-decoding:
/// it starts with one `/`, has no `//` or `/\` prefix, no backslash, no
/// control character, no scheme and no `@`. Anything else gives `None`.
pub fn safe_return_path(raw: &str) -> Option<String> {
    let decoded = percent_decode(raw)?;
    let twice = percent_decode(&decoded)?;
    for candidate in [raw, decoded.as_str(), twice.as_str()] {
        if !candidate.starts_with('/')
            || candidate.starts_with("//")
            || candidate.contains('\\')
            || candidate.contains('@')
            || candidate
                .chars()
                .any(|c| c.is_control() || c.is_whitespace())
        {
            return None;
        }
        let path_part = candidate.split(['?', '#']).next().unwrap_or("");
        if path_part.contains(':') {
            return None;
        }
    }
    if raw.len() > 512 {
        return None;
    }
    Some(raw.to_owned())
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes: Vec<u8> = form_urlencoded_decode(s.as_bytes())?;
    String::from_utf8(bytes).ok()
}

fn form_urlencoded_decode(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' {
            let hex = input.get(i + 1..i + 3)?;
            let s = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(s, 16).ok()?);
            i += 3;
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_paths() {
        assert_eq!(safe_return_path("/tokens").as_deref(), Some("/tokens"));
        assert_eq!(
            safe_return_path("/tokens?x=1").as_deref(),
            Some("/tokens?x=1")
        );
    }

    #[test]
    fn refuses_open_redirects() {
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "https://evil.example",
            "evil.example",
            "/%2F%2Fevil.example",
            "%2F%2Fevil.example",
            "/%5Cevil.example",
            "/%252F%252Fevil.example",
            "/x@evil.example",
            "/\tevil",
            "/%0d%0aSet-Cookie:x",
            "javascript:alert(1)",
            "/javascript:alert(1)",
            "",
            "/%zz",
        ] {
            assert_eq!(safe_return_path(bad), None, "{bad}");
        }
    }
}
