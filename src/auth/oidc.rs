//! User sign-in with OpenID Connect: discovery (cached, retried until it
//! succeeds), authorization code flow with PKCE and nonce, ID token checks
//! (signature, `iss`, `aud`, `exp`, `nonce`) by `openidconnect`. Groups are
//! read from a configurable claim of the verified ID token, or from userinfo.

use super::SessionUser;
use crate::config::OidcSettings;
use base64::Engine;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use secrecy::ExposeSecret;
use std::collections::HashMap;
use tokio::sync::RwLock;

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("the identity provider is unavailable: {0}")]
    Unavailable(String),
    #[error("sign-in was rejected: {0}")]
    Rejected(String),
    #[error("identity provider configuration: {0}")]
    Config(String),
}

/// What the start of a sign-in leaves behind, to check at the callback.
pub struct LoginChallenge {
    pub url: url::Url,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

pub struct Oidc {
    settings: OidcSettings,
    redirect: RedirectUrl,
    http: reqwest::Client,
    metadata: RwLock<Option<CoreProviderMetadata>>,
}

type Client = openidconnect::Client<
    openidconnect::EmptyAdditionalClaims,
    openidconnect::core::CoreAuthDisplay,
    openidconnect::core::CoreGenderClaim,
    openidconnect::core::CoreJweContentEncryptionAlgorithm,
    openidconnect::core::CoreJsonWebKey,
    openidconnect::core::CoreAuthPrompt,
    openidconnect::StandardErrorResponse<openidconnect::core::CoreErrorResponseType>,
    openidconnect::core::CoreTokenResponse,
    openidconnect::core::CoreTokenIntrospectionResponse,
    openidconnect::core::CoreRevocableToken,
    openidconnect::core::CoreRevocationErrorResponse,
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

impl Oidc {
    pub fn new(settings: OidcSettings, redirect: url::Url, http: reqwest::Client) -> Self {
        Self {
            settings,
            redirect: RedirectUrl::from_url(redirect),
            http,
            metadata: RwLock::new(None),
        }
    }

    /// The issuer exactly as configured.
    pub fn issuer(&self) -> &str {
        &self.settings.issuer
    }

    async fn metadata(&self) -> Result<CoreProviderMetadata, OidcError> {
        if let Some(m) = self.metadata.read().await.as_ref() {
            return Ok(m.clone());
        }
        // `IssuerUrl::new` keeps the configured string, which discovery
        // compares with the published `issuer`; `from_url` would compare a
        // normalised form (a bare origin gains a `/` and never matches)
        let issuer = IssuerUrl::new(self.settings.issuer.clone())
            .map_err(|e| OidcError::Config(format!("oidc.issuer: {e}")))?;
        let m = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "OIDC discovery failed");
                OidcError::Unavailable("discovery failed".into())
            })?;
        *self.metadata.write().await = Some(m.clone());
        Ok(m)
    }

    async fn client(&self) -> Result<Client, OidcError> {
        let metadata = self.metadata().await?;
        Ok(CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(self.settings.client_id.clone()),
            Some(ClientSecret::new(
                self.settings.client_secret.expose_secret().to_owned(),
            )),
        )
        .set_redirect_uri(self.redirect.clone()))
    }

    /// Builds the identity provider's authorization URL for a new sign-in.
    pub async fn begin(&self) -> Result<LoginChallenge, OidcError> {
        let client = self.client().await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut req = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                || CsrfToken::new(crate::crypto::random_string(32)),
                || Nonce::new(crate::crypto::random_string(32)),
            )
            .set_pkce_challenge(challenge);
        for s in &self.settings.scopes {
            if s != "openid" {
                req = req.add_scope(Scope::new(s.clone()));
            }
        }
        let (url, state, nonce) = req.url();
        Ok(LoginChallenge {
            url,
            state: state.secret().to_owned(),
            nonce: nonce.secret().to_owned(),
            pkce_verifier: verifier.secret().to_owned(),
        })
    }

    /// Exchanges the code and checks the ID token; returns the signed-in user.
    pub async fn complete(
        &self,
        code: String,
        nonce: String,
        verifier: String,
    ) -> Result<SessionUser, OidcError> {
        let client = self.client().await?;
        let response = client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|e| OidcError::Config(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(verifier))
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                oauth2::RequestTokenError::ServerResponse(r) => {
                    OidcError::Rejected(format!("token endpoint: {}", r.error()))
                }
                oauth2::RequestTokenError::Request(_) => {
                    OidcError::Unavailable("token request failed".into())
                }
                _ => OidcError::Rejected("unreadable token response".into()),
            })?;
        let id_token = response
            .id_token()
            .ok_or_else(|| OidcError::Rejected("no ID token in the response".into()))?;
        let verifier = client.id_token_verifier();
        let claims = id_token
            .claims(&verifier, &Nonce::new(nonce))
            .map_err(|e| OidcError::Rejected(format!("ID token: {e}")))?;
        let sub = claims.subject().as_str().to_owned();
        let iss = claims.issuer().as_str().to_owned();
        let name = claims
            .name()
            .and_then(|n| n.get(None))
            .map(|n| n.as_str().to_owned())
            .or_else(|| claims.preferred_username().map(|u| u.as_str().to_owned()))
            .unwrap_or_else(|| sub.clone());
        // only an address the identity provider verified (notifications go there)
        let email = claims
            .email()
            .filter(|_| claims.email_verified() == Some(true))
            .map(|e| e.as_str().to_owned());

        // The token's signature is verified above, so its payload can be read
        // for the configurable groups claim.
        let mut groups = groups_from_jwt(&id_token.to_string(), &self.settings.groups_claim);
        if groups.is_none() {
            groups = self
                .groups_from_userinfo(
                    &client,
                    response.access_token().clone(),
                    claims.subject().clone(),
                )
                .await;
        }
        Ok(SessionUser {
            sub,
            iss,
            name,
            email,
            groups: groups.unwrap_or_default(),
        })
    }

    async fn groups_from_userinfo(
        &self,
        client: &Client,
        access_token: openidconnect::AccessToken,
        subject: openidconnect::SubjectIdentifier,
    ) -> Option<Vec<String>> {
        let req = client.user_info(access_token, Some(subject)).ok()?;
        let info: openidconnect::UserInfoClaims<ExtraClaims, openidconnect::core::CoreGenderClaim> =
            req.request_async(&self.http).await.ok()?;
        groups_from_value(
            info.additional_claims()
                .claims
                .get(&self.settings.groups_claim)?,
        )
    }
}

/// What the identity provider's discovery document says about the
/// configured issuer (for `gitbroker check-config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssuerCheck {
    /// The published `issuer` is the configured string, byte for byte.
    Matches,
    /// The provider publishes `published`, the same URL as configured but
    /// written differently (a trailing `/`, upper-case host, default port):
    /// discovery refuses it all the same (Discovery §4.3).
    DiffersInForm { published: String },
    /// The provider publishes another issuer altogether.
    Differs { published: String },
    /// The provider answered, but not with a usable discovery document.
    Broken(String),
    /// The provider could not be reached (connection, timeout, 5xx, 429):
    /// nothing was checked.
    Unreachable(String),
}

/// The URL openidconnect fetches the discovery document from.
pub fn discovery_url(issuer: &str) -> Result<url::Url, url::ParseError> {
    IssuerUrl::new(issuer.to_owned())?.join(".well-known/openid-configuration")
}

/// Fetches `issuer`'s discovery document and compares its `issuer` with the
/// configured string exactly, as sign-in will.
pub async fn check_issuer(issuer: &str, http: &reqwest::Client) -> IssuerCheck {
    let url = match discovery_url(issuer) {
        Ok(u) => u,
        Err(e) => return IssuerCheck::Broken(format!("not a URL ({e})")),
    };
    let resp = match http
        .get(url.clone())
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => {
            let why = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "cannot connect"
            } else {
                "request failed"
            };
            return IssuerCheck::Unreachable(format!("{why}: {url}"));
        }
    };
    let status = resp.status();
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return IssuerCheck::Unreachable(format!("{url} answered HTTP {}", status.as_u16()));
    }
    if !status.is_success() {
        return IssuerCheck::Broken(format!(
            "{url} answered HTTP {} instead of a discovery document",
            status.as_u16()
        ));
    }
    #[derive(serde::Deserialize)]
    struct Discovery {
        issuer: String,
    }
    let published = match resp.json::<Discovery>().await {
        Ok(d) => d.issuer,
        Err(_) => {
            return IssuerCheck::Broken(format!(
                "{url} is not a discovery document (no `issuer` string)"
            ));
        }
    };
    if published == issuer {
        IssuerCheck::Matches
    } else if same_url(&published, issuer) {
        IssuerCheck::DiffersInForm { published }
    } else {
        IssuerCheck::Differs { published }
    }
}

/// The same URL up to how it is written: `url`'s normal form without a
/// trailing `/`.
fn same_url(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        url::Url::parse(s)
            .ok()
            .map(|u| u.as_str().trim_end_matches('/').to_owned())
    };
    matches!((norm(a), norm(b)), (Some(x), Some(y)) if x == y)
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct ExtraClaims {
    #[serde(flatten)]
    claims: HashMap<String, serde_json::Value>,
}
impl openidconnect::AdditionalClaims for ExtraClaims {}

fn groups_from_value(v: &serde_json::Value) -> Option<Vec<String>> {
    match v {
        serde_json::Value::Array(items) => Some(
            items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_owned))
                .collect(),
        ),
        serde_json::Value::String(s) => Some(vec![s.clone()]),
        _ => None,
    }
}

/// Reads `claim` from a JWT's payload. Only for tokens already verified.
fn groups_from_jwt(jwt: &str, claim: &str) -> Option<Vec<String>> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    groups_from_value(value.get(claim)?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn discovery_url_keeps_the_issuer() {
        assert_eq!(
            discovery_url("https://accounts.google.com")
                .unwrap()
                .as_str(),
            "https://accounts.google.com/.well-known/openid-configuration"
        );
        assert_eq!(
            discovery_url("https://idp.example.com/realms/x/")
                .unwrap()
                .as_str(),
            "https://idp.example.com/realms/x/.well-known/openid-configuration"
        );
    }

    #[test]
    fn issuers_differing_only_in_form() {
        assert!(same_url(
            "https://accounts.google.com",
            "https://accounts.google.com/"
        ));
        assert!(same_url(
            "https://IDP.example.com:443/r/x/",
            "https://idp.example.com/r/x"
        ));
        assert!(!same_url(
            "https://idp.example.com/r/x",
            "https://idp.example.com/r/y"
        ));
    }

    #[test]
    fn groups_claim_from_payload() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"sub":"a","roles":["x","y"],"one":"z"}"#);
        let jwt = format!("h.{payload}.s");
        assert_eq!(groups_from_jwt(&jwt, "roles").unwrap(), vec!["x", "y"]);
        assert_eq!(groups_from_jwt(&jwt, "one").unwrap(), vec!["z"]);
        assert!(groups_from_jwt(&jwt, "groups").is_none());
    }
}
