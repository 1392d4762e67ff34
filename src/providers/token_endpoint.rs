//! Talking to a provider's OAuth token endpoint, for the code exchange of
//! the flow and for refreshes: the `oauth2` client of one OAuth app, an HTTP
//! adapter over the shared [`ProviderClient`] that normalizes each
//! provider's quirks and reports 5xx and 429 as "unavailable", and the
//! classification of a refresh's failure as permanent or temporary.

use super::{Endpoints, GitProvider, ProviderClient, ProviderError, ProviderKind, provider};
use chrono::{DateTime, Utc};
use oauth2::basic::{BasicClient, BasicErrorResponseType, BasicTokenType};
use oauth2::{
    AuthUrl, ClientId, ClientSecret, HttpRequest, HttpResponse, RedirectUrl, RefreshToken,
    RequestTokenError, TokenResponse, TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use url::Url;

/// Why a request to the token endpoint gave no answer to parse.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("{0}")]
    Transport(String),
    #[error("HTTP {status}")]
    Status {
        status: u16,
        retry_after: Option<Duration>,
    },
}

/// The `oauth2` HTTP client for token requests: the shared no-redirect
/// client, with the provider's response quirks normalized.
pub struct ProviderHttp {
    http: ProviderClient,
    provider: &'static dyn GitProvider,
}

impl<'c> oauth2::AsyncHttpClient<'c> for ProviderHttp {
    type Error = ExchangeError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, ExchangeError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}

impl ProviderHttp {
    pub fn new(http: &ProviderClient, provider: &'static dyn GitProvider) -> Self {
        Self {
            http: http.clone(),
            provider,
        }
    }

    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, ExchangeError> {
        let request = reqwest::Request::try_from(request)
            .map_err(|_| ExchangeError::Transport("bad request".into()))?;
        let response = self.http.execute(request).await.map_err(|e| match e {
            ProviderError::Unavailable(d) | ProviderError::Protocol(d) => {
                ExchangeError::Transport(d)
            }
            ProviderError::InvalidToken => ExchangeError::Transport("refused".into()),
        })?;
        let status = response.status();
        if status.is_server_error() || status.as_u16() == 429 {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            return Err(ExchangeError::Status {
                status: status.as_u16(),
                retry_after,
            });
        }
        let mut builder = http::Response::builder().status(status.as_u16());
        for (name, value) in response.headers() {
            builder = builder.header(name, value);
        }
        let body = response.bytes().await.map_err(|e| {
            ExchangeError::Transport(if e.is_timeout() {
                "timed out".into()
            } else {
                "reading the response failed".into()
            })
        })?;
        let response = builder
            .body(body.to_vec())
            .map_err(|_| ExchangeError::Transport("bad response".into()))?;
        Ok(self.provider.normalize_token_response(response))
    }
}

/// The client of one OAuth app at its token endpoint.
pub type AppClient = BasicClient<
    oauth2::EndpointSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointSet,
>;

/// What identifies an OAuth app at its provider, as plain values.
pub struct AppCredentials<'a> {
    pub kind: ProviderKind,
    pub endpoints: &'a Endpoints,
    pub client_id: &'a str,
    pub client_secret: &'a SecretString,
}

impl AppCredentials<'_> {
    pub fn client(&self, redirect: Option<Url>) -> AppClient {
        let client = BasicClient::new(ClientId::new(self.client_id.to_owned()))
            .set_auth_type(provider(self.kind).oauth_auth_type())
            .set_client_secret(ClientSecret::new(
                self.client_secret.expose_secret().to_owned(),
            ))
            .set_auth_uri(AuthUrl::from_url(self.endpoints.authorize.clone()))
            .set_token_uri(TokenUrl::from_url(self.endpoints.token.clone()));
        match redirect {
            Some(r) => client.set_redirect_uri(RedirectUrl::from_url(r)),
            None => client,
        }
    }
}

/// Tokens a token endpoint issued.
pub struct IssuedTokens {
    pub access_token: SecretString,
    /// `None` when the answer carried none: the caller keeps the old one.
    pub refresh_token: Option<SecretString>,
    /// As the provider writes them; `None` when the answer named none.
    pub scopes: Option<Vec<String>>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for IssuedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedTokens")
            .field("scopes", &self.scopes)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Why a refresh failed.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// The provider refused the refresh token or the client for good
    /// (`invalid_grant`, `bad_refresh_token`, `invalid_client`, …): the
    /// user must authorize again — unless another worker rotated first.
    #[error("the provider refused the refresh ({0})")]
    Permanent(String),
    /// Network, timeout, 5xx, 429: try again later.
    #[error("the provider could not refresh the token right now ({detail})")]
    Temporary {
        detail: String,
        retry_after: Option<Duration>,
    },
}

/// Error codes after which retrying the same refresh cannot succeed.
const PERMANENT: &[&str] = &[
    "invalid_grant",
    "bad_refresh_token",
    "invalid_client",
    "unauthorized_client",
    "incorrect_client_credentials",
    "unsupported_grant_type",
    "invalid_scope",
];

/// Exchanges a refresh token for a new pair (one request, no retry: the
/// caller holds the grant's lease and decides what happens next).
pub async fn refresh(
    http: &ProviderClient,
    app: &AppCredentials<'_>,
    refresh_token: &SecretString,
    now: DateTime<Utc>,
) -> Result<IssuedTokens, RefreshError> {
    let p = provider(app.kind);
    let client = app.client(None);
    let exchanger = ProviderHttp::new(&http.for_provider(app.kind), p);
    let token = RefreshToken::new(refresh_token.expose_secret().to_owned());
    let response = client
        .exchange_refresh_token(&token)
        .request_async(&exchanger)
        .await
        .map_err(|e| match e {
            RequestTokenError::ServerResponse(r) => {
                let code = match r.error() {
                    BasicErrorResponseType::Extension(c) => c.clone(),
                    other => other.as_ref().to_owned(),
                };
                if PERMANENT.contains(&code.as_str()) {
                    RefreshError::Permanent(code.chars().take(64).collect())
                } else {
                    RefreshError::Temporary {
                        detail: code.chars().take(64).collect(),
                        retry_after: None,
                    }
                }
            }
            RequestTokenError::Request(ExchangeError::Status {
                status,
                retry_after,
            }) => RefreshError::Temporary {
                detail: format!("HTTP {status}"),
                retry_after,
            },
            RequestTokenError::Request(ExchangeError::Transport(d)) => RefreshError::Temporary {
                detail: d,
                retry_after: None,
            },
            RequestTokenError::Parse(_, _) | RequestTokenError::Other(_) => {
                RefreshError::Temporary {
                    detail: "unreadable token response".into(),
                    retry_after: None,
                }
            }
        })?;
    if *response.token_type() != BasicTokenType::Bearer {
        return Err(RefreshError::Temporary {
            detail: "token type is not bearer".into(),
            retry_after: None,
        });
    }
    Ok(IssuedTokens {
        access_token: SecretString::from(response.access_token().secret().to_owned()),
        refresh_token: response
            .refresh_token()
            .map(|r| SecretString::from(r.secret().to_owned())),
        scopes: response
            .scopes()
            .map(|s| p.parse_scopes(&s.iter().map(|x| x.as_str()).collect::<Vec<_>>().join(" "))),
        expires_at: response
            .expires_in()
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .map(|d| now + d),
    })
}
