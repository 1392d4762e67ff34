//! The HTTP client the `oauth2` crate uses for token requests: the shared
//! no-redirect client, with the provider's response quirks normalized and
//! 5xx/429 answers turned into "unavailable" rather than parse errors.

use crate::providers::GitProvider;
use oauth2::{HttpRequest, HttpResponse};
use std::future::Future;
use std::pin::Pin;

#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("{0}")]
    Transport(&'static str),
    #[error("HTTP {0}")]
    Status(u16),
}

pub struct ProviderHttp {
    http: reqwest::Client,
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
    pub fn new(http: &reqwest::Client, provider: &'static dyn GitProvider) -> Self {
        Self {
            http: http.clone(),
            provider,
        }
    }

    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, ExchangeError> {
        let request = reqwest::Request::try_from(request)
            .map_err(|_| ExchangeError::Transport("bad request"))?;
        let response = self.http.execute(request).await.map_err(|e| {
            if e.is_timeout() {
                ExchangeError::Transport("timed out")
            } else if e.is_connect() {
                ExchangeError::Transport("connection failed")
            } else {
                ExchangeError::Transport("request failed")
            }
        })?;
        let status = response.status();
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(ExchangeError::Status(status.as_u16()));
        }
        let mut builder = http::Response::builder().status(status.as_u16());
        for (name, value) in response.headers() {
            builder = builder.header(name, value);
        }
        let body = response.bytes().await.map_err(|e| {
            if e.is_timeout() {
                ExchangeError::Transport("timed out")
            } else {
                ExchangeError::Transport("reading the response failed")
            }
        })?;
        let response = builder
            .body(body.to_vec())
            .map_err(|_| ExchangeError::Transport("bad response"))?;
        Ok(self.provider.normalize_token_response(response))
    }
}
