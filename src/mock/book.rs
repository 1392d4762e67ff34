//! Token book-keeping shared by every flavour: authorization codes, access
//! tokens and rotating refresh tokens, in one realm per provider. Flavours
//! choose the token shapes and decide what an error looks like on the wire.

use super::lock;
use super::oauth::random_alnum;
use chrono::{DateTime, Duration, Utc};
use std::collections::HashMap;
use std::sync::Mutex;

/// How a realm's secrets look.
#[derive(Clone, Copy)]
pub(crate) struct TokenStyle {
    pub access_prefix: &'static str,
    pub access_len: usize,
    pub refresh_prefix: &'static str,
    pub refresh_len: usize,
    pub code_len: usize,
}

impl TokenStyle {
    /// Access and refresh tokens as (prefix, number of random characters
    /// after it), and the length of codes.
    pub const fn new(
        access: (&'static str, usize),
        refresh: (&'static str, usize),
        code_len: usize,
    ) -> Self {
        Self {
            access_prefix: access.0,
            access_len: access.1,
            refresh_prefix: refresh.0,
            refresh_len: refresh.1,
            code_len,
        }
    }
}

/// What an authorization request granted, waiting for the code exchange.
pub(crate) struct CodeGrant {
    pub client_id: String,
    /// `redirect_uri` exactly as the authorization request carried it.
    pub redirect_uri: Option<String>,
    /// GitHub login or IdP username.
    pub subject: String,
    pub scopes: Vec<String>,
    pub code_challenge: Option<String>,
    pub nonce: Option<String>,
    pub issued_at: DateTime<Utc>,
}

/// One access token's authorization, as the provider remembers it.
#[derive(Clone)]
pub(crate) struct Grant {
    pub id: u64,
    pub subject: String,
    pub client_id: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl Grant {
    /// The access token's lifetime in seconds, as `expires_in` reports it
    /// at issue; `None` for tokens that do not expire.
    pub fn expires_in(&self) -> Option<i64> {
        self.expires_at
            .map(|at| (at - self.created_at).num_seconds())
    }
}

/// Access and refresh lifetimes, for realms whose tokens expire.
#[derive(Clone, Copy)]
pub(crate) struct Lifetimes {
    pub access: Duration,
    /// `None`: no refresh token is issued.
    pub refresh: Option<Duration>,
}

impl Lifetimes {
    /// Access tokens that live `access_seconds`, with refresh tokens that
    /// live `refresh_days`.
    pub const fn new(access_seconds: i64, refresh_days: i64) -> Self {
        Self {
            access: Duration::seconds(access_seconds),
            refresh: Some(Duration::days(refresh_days)),
        }
    }
}

pub(crate) struct Issued {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub grant: Grant,
}

struct AccessRecord {
    grant: Grant,
    refresh_token: Option<String>,
}

struct RefreshRecord {
    access_token: String,
    expires_at: DateTime<Utc>,
}

#[derive(Default)]
struct Book {
    codes: HashMap<String, CodeGrant>,
    access: HashMap<String, AccessRecord>,
    refresh: HashMap<String, RefreshRecord>,
    next_id: u64,
}

pub(crate) struct TokenBook {
    style: TokenStyle,
    /// Clients whose tokens look otherwise (GitHub Apps: `ghu_`/`ghr_`
    /// where OAuth apps get `gho_`), in the same realm.
    client_styles: Mutex<HashMap<String, TokenStyle>>,
    book: Mutex<Book>,
}

impl TokenBook {
    pub fn new(style: TokenStyle) -> Self {
        Self {
            style,
            client_styles: Mutex::new(HashMap::new()),
            book: Mutex::new(Book::default()),
        }
    }

    /// Tokens issued to `client_id` take `style` from now on.
    pub fn set_client_style(&self, client_id: &str, style: TokenStyle) {
        lock(&self.client_styles).insert(client_id.to_owned(), style);
    }

    /// Issues a token with no refresh token that dies at `expires_at`
    /// (GitHub's scoped tokens end with the token they were made from).
    pub fn issue_until(
        &self,
        subject: &str,
        client_id: &str,
        now: DateTime<Utc>,
        expires_at: Option<DateTime<Utc>>,
    ) -> Issued {
        let mut book = lock(&self.book);
        let lifetimes = expires_at.map(|at| Lifetimes {
            access: at - now,
            refresh: None,
        });
        self.issue_locked(&mut book, subject, client_id, Vec::new(), now, lifetimes)
    }

    /// Stores a grant and returns its new code.
    pub fn put_code(&self, grant: CodeGrant) -> String {
        let code = random_alnum(self.style.code_len);
        lock(&self.book).codes.insert(code.clone(), grant);
        code
    }

    /// Removes and returns the code's grant: whatever the exchange decides
    /// next, the code has been used once.
    pub fn take_code(&self, code: &str) -> Option<CodeGrant> {
        lock(&self.book).codes.remove(code)
    }

    pub fn issue(
        &self,
        subject: &str,
        client_id: &str,
        scopes: Vec<String>,
        now: DateTime<Utc>,
        lifetimes: Option<Lifetimes>,
    ) -> Issued {
        let mut book = lock(&self.book);
        self.issue_locked(&mut book, subject, client_id, scopes, now, lifetimes)
    }

    fn issue_locked(
        &self,
        book: &mut Book,
        subject: &str,
        client_id: &str,
        scopes: Vec<String>,
        now: DateTime<Utc>,
        lifetimes: Option<Lifetimes>,
    ) -> Issued {
        book.next_id += 1;
        let style = lock(&self.client_styles)
            .get(client_id)
            .copied()
            .unwrap_or(self.style);
        let access_token = format!("{}{}", style.access_prefix, random_alnum(style.access_len));
        let refresh_token = lifetimes.and_then(|l| l.refresh).map(|lifetime| {
            let token = format!(
                "{}{}",
                style.refresh_prefix,
                random_alnum(style.refresh_len)
            );
            book.refresh.insert(
                token.clone(),
                RefreshRecord {
                    access_token: access_token.clone(),
                    expires_at: now + lifetime,
                },
            );
            token
        });
        let grant = Grant {
            id: book.next_id,
            subject: subject.to_owned(),
            client_id: client_id.to_owned(),
            scopes,
            created_at: now,
            expires_at: lifetimes.map(|l| now + l.access),
        };
        book.access.insert(
            access_token.clone(),
            AccessRecord {
                grant: grant.clone(),
                refresh_token: refresh_token.clone(),
            },
        );
        Issued {
            access_token,
            refresh_token,
            grant,
        }
    }

    /// The grant behind a live access token.
    pub fn find(&self, access_token: &str, now: DateTime<Utc>) -> Option<Grant> {
        let book = lock(&self.book);
        let record = book.access.get(access_token)?;
        match record.grant.expires_at {
            Some(at) if at <= now => None,
            _ => Some(record.grant.clone()),
        }
    }

    /// Exchanges a refresh token of `client_id` for a new pair, with the same
    /// subject and scopes. The old access and refresh tokens die, so a second
    /// use of the same refresh token fails.
    pub fn refresh(
        &self,
        refresh_token: &str,
        client_id: &str,
        now: DateTime<Utc>,
        lifetimes: Lifetimes,
    ) -> Option<Issued> {
        let mut book = lock(&self.book);
        let record = book.refresh.get(refresh_token)?;
        let old = book.access.get(&record.access_token)?;
        if old.grant.client_id != client_id || record.expires_at <= now {
            return None;
        }
        let (subject, scopes) = (old.grant.subject.clone(), old.grant.scopes.clone());
        let old_access = record.access_token.clone();
        book.refresh.remove(refresh_token);
        book.access.remove(&old_access);
        Some(self.issue_locked(&mut book, &subject, client_id, scopes, now, Some(lifetimes)))
    }

    /// Revokes an access token (with its refresh token) or a refresh token
    /// (with its access token). Returns whether anything was live.
    pub fn revoke(&self, token: &str) -> bool {
        let mut book = lock(&self.book);
        if let Some(record) = book.access.remove(token) {
            if let Some(refresh) = record.refresh_token {
                book.refresh.remove(&refresh);
            }
            return true;
        }
        if let Some(record) = book.refresh.remove(token) {
            book.access.remove(&record.access_token);
            return true;
        }
        false
    }

    /// The access record behind `token`: itself if it is an access token,
    /// its access token if it is a refresh token.
    fn record_mut<'b>(book: &'b mut Book, token: &str) -> Option<&'b mut AccessRecord> {
        let access = match book.refresh.get(token) {
            Some(r) => r.access_token.clone(),
            None => token.to_owned(),
        };
        book.access.get_mut(&access)
    }

    /// Replaces the scopes of the grant behind an access token (or a
    /// refresh token's access token), as if the user had narrowed the
    /// grant; later refreshes carry them on. Returns whether it was found.
    pub fn set_scopes(&self, token: &str, scopes: Vec<String>) -> bool {
        let mut book = lock(&self.book);
        match Self::record_mut(&mut book, token) {
            Some(record) => {
                record.grant.scopes = scopes;
                true
            }
            None => false,
        }
    }

    /// Makes a token expire at `now`: an access token stops working (its
    /// refresh token still works), a refresh token can no longer be used.
    /// Returns whether it was found.
    pub fn expire(&self, token: &str, now: DateTime<Utc>) -> bool {
        let mut book = lock(&self.book);
        if let Some(record) = book.refresh.get_mut(token) {
            record.expires_at = now;
            return true;
        }
        match book.access.get_mut(token) {
            Some(record) => {
                record.grant.expires_at = Some(now);
                true
            }
            None => false,
        }
    }

    /// Revokes every token `subject` holds for `client_id`; returns how many
    /// access tokens died.
    pub fn revoke_all(&self, subject: &str, client_id: &str) -> usize {
        let mut book = lock(&self.book);
        let doomed: Vec<String> = book
            .access
            .iter()
            .filter(|(_, r)| r.grant.subject == subject && r.grant.client_id == client_id)
            .map(|(t, _)| t.clone())
            .collect();
        for token in &doomed {
            if let Some(refresh) = book.access.remove(token).and_then(|r| r.refresh_token) {
                book.refresh.remove(&refresh);
            }
        }
        doomed.len()
    }

    pub fn clear(&self) {
        let mut book = lock(&self.book);
        book.codes.clear();
        book.access.clear();
        book.refresh.clear();
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::disallowed_methods
    )]
    use super::*;

    const STYLE: TokenStyle = TokenStyle {
        access_prefix: "a_",
        access_len: 8,
        refresh_prefix: "r_",
        refresh_len: 8,
        code_len: 8,
    };

    fn lifetimes() -> Lifetimes {
        Lifetimes {
            access: Duration::hours(8),
            refresh: Some(Duration::days(180)),
        }
    }

    #[test]
    fn codes_are_taken_once() {
        let book = TokenBook::new(STYLE);
        let code = book.put_code(CodeGrant {
            client_id: "c".into(),
            redirect_uri: None,
            subject: "alice".into(),
            scopes: vec![],
            code_challenge: None,
            nonce: None,
            issued_at: Utc::now(),
        });
        assert!(book.take_code(&code).is_some());
        assert!(book.take_code(&code).is_none());
    }

    #[test]
    fn access_tokens_expire() {
        let book = TokenBook::new(STYLE);
        let now = Utc::now();
        let issued = book.issue("alice", "c", vec!["repo".into()], now, Some(lifetimes()));
        assert!(issued.access_token.starts_with("a_"));
        assert!(book.find(&issued.access_token, now).is_some());
        assert!(
            book.find(&issued.access_token, now + Duration::hours(8))
                .is_none()
        );
    }

    #[test]
    fn refresh_rotates_and_kills_the_old_pair() {
        let book = TokenBook::new(STYLE);
        let now = Utc::now();
        let first = book.issue("alice", "c", vec!["repo".into()], now, Some(lifetimes()));
        let old_refresh = first.refresh_token.unwrap();
        assert!(
            book.refresh(&old_refresh, "other", now, lifetimes())
                .is_none()
        );
        let second = book.refresh(&old_refresh, "c", now, lifetimes()).unwrap();
        assert_eq!(second.grant.scopes, vec!["repo".to_owned()]);
        assert!(book.find(&first.access_token, now).is_none());
        assert!(book.find(&second.access_token, now).is_some());
        assert!(book.refresh(&old_refresh, "c", now, lifetimes()).is_none());
    }

    #[test]
    fn scopes_and_expiry_change_at_run_time() {
        let book = TokenBook::new(STYLE);
        let now = Utc::now();
        let issued = book.issue(
            "alice",
            "c",
            vec!["a".into(), "b".into()],
            now,
            Some(lifetimes()),
        );
        let refresh = issued.refresh_token.unwrap();
        assert!(book.set_scopes(&refresh, vec!["a".into()]));
        assert_eq!(
            book.find(&issued.access_token, now).unwrap().scopes,
            vec!["a"]
        );
        assert!(book.expire(&issued.access_token, now));
        assert!(book.find(&issued.access_token, now).is_none());
        let next = book.refresh(&refresh, "c", now, lifetimes()).unwrap();
        assert_eq!(next.grant.scopes, vec!["a"]);
        let next_refresh = next.refresh_token.unwrap();
        assert!(book.expire(&next_refresh, now));
        assert!(book.refresh(&next_refresh, "c", now, lifetimes()).is_none());
        assert!(!book.set_scopes("nope", vec![]));
        assert!(!book.expire("nope", now));
    }

    #[test]
    fn revoke_all_is_per_user_and_client() {
        let book = TokenBook::new(STYLE);
        let now = Utc::now();
        let a1 = book.issue("alice", "c", vec![], now, None);
        let a2 = book.issue("alice", "c", vec![], now, None);
        let other_app = book.issue("alice", "d", vec![], now, None);
        let bob = book.issue("bob", "c", vec![], now, None);
        assert_eq!(book.revoke_all("alice", "c"), 2);
        assert!(book.find(&a1.access_token, now).is_none());
        assert!(book.find(&a2.access_token, now).is_none());
        assert!(book.find(&other_app.access_token, now).is_some());
        assert!(book.find(&bob.access_token, now).is_some());
    }
}
