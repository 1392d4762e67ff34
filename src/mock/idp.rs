//! The OpenID Connect identity provider under `/idp`: discovery, a sign-in
//! page listing the configured users, the code flow with mandatory state,
//! nonce and PKCE S256, RS256 ID tokens carrying a `groups` claim, userinfo.
//! Every claim is issued whatever the requested scopes (beyond `openid`).

use super::book::{CodeGrant, Lifetimes, TokenStyle};
use super::control::Counters;
use super::oauth::{
    AuthMethod, ClientAuthError, SPACE_OR_COMMA, authorization_token, client_credentials, found,
    parse_form, parse_scopes, pkce_s256_matches, redirect_url, secrets_equal, valid_pkce_string,
};
use super::pages::{self, IdpSignIn};
use super::{MockIdpClient, MockIdpUser, Shared};
use axum::body::Bytes;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Duration;
use openidconnect::core::{
    CoreAuthDisplay, CoreClaimName, CoreClaimType, CoreClientAuthMethod, CoreGenderClaim,
    CoreGrantType, CoreJsonWebKey, CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm, CoreJwsSigningAlgorithm, CoreResponseMode, CoreResponseType,
    CoreRsaPrivateSigningKey, CoreSubjectIdentifierType,
};
use openidconnect::{
    AccessToken, AdditionalClaims, AdditionalProviderMetadata, Audience, AuthUrl, EndUserEmail,
    EndUserName, EndUserUsername, IdToken, IdTokenClaims, IssuerUrl, JsonWebKeyId,
    JsonWebKeySetUrl, Nonce, PrivateSigningKey, ProviderMetadata, ResponseTypes, Scope,
    StandardClaims, SubjectIdentifier, TokenUrl, UserInfoClaims, UserInfoUrl,
};
use rsa::RsaPrivateKey;
use rsa::pkcs1::{EncodeRsaPrivateKey, LineEnding};
use rsa::traits::PublicKeyParts;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::sync::Arc;

pub(crate) const TOKEN_STYLE: TokenStyle = TokenStyle::new(("idp_at_", 40), ("idp_rt_", 40), 32);

const ACCESS_SECONDS: i64 = 3_600;
const ID_TOKEN_MINUTES: i64 = 10;
const CODE_MINUTES: i64 = 10;
const BANNER: &str = "Mock identity provider";

/// The `groups` claim of the mock's ID tokens and userinfo.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct GroupsClaim {
    groups: Vec<String>,
}

impl AdditionalClaims for GroupsClaim {}

type MockIdToken = IdToken<
    GroupsClaim,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;

/// Discovery fields `openidconnect`'s core metadata has no slot for.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct MetadataExtras {
    code_challenge_methods_supported: Vec<String>,
    /// RFC 9207: the authorization response carries `iss`.
    authorization_response_iss_parameter_supported: bool,
}

impl AdditionalProviderMetadata for MetadataExtras {}

type Metadata = ProviderMetadata<
    MetadataExtras,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// The RSA key ID tokens are signed with, made fresh at every start. Key
/// generation cannot really fail; if it does, the IdP answers 500 and says
/// why in the log rather than taking the Git provider down with it.
pub(crate) struct SigningKey(Result<Key, String>);

struct Key {
    signer: CoreRsaPrivateSigningKey,
    jwks: String,
}

impl SigningKey {
    pub fn generate() -> Self {
        let key = Self::build();
        if let Err(err) = &key {
            tracing::error!(%err, "mock identity provider has no signing key");
        }
        Self(key)
    }

    fn build() -> Result<Key, String> {
        let private =
            RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).map_err(|e| e.to_string())?;
        let kid = hex::encode(&Sha256::digest(private.n().to_bytes_be())[..8]);
        let pem = private
            .to_pkcs1_pem(LineEnding::LF)
            .map_err(|e| e.to_string())?;
        let signer = CoreRsaPrivateSigningKey::from_pem(&pem, Some(JsonWebKeyId::new(kid)))?;
        let jwks =
            serde_json::to_string(&CoreJsonWebKeySet::new(vec![signer.as_verification_key()]))
                .map_err(|e| e.to_string())?;
        Ok(Key { signer, jwks })
    }

    fn key(&self) -> Result<&Key, Response> {
        self.0.as_ref().map_err(|_| server_error())
    }
}

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .route("/authorize", get(authorize_page).post(authorize_decision))
        .route("/token", post(token))
        .route("/userinfo", get(userinfo).post(userinfo))
}

fn issuer(s: &Shared) -> String {
    s.idp_issuer()
}

fn server_error() -> Response {
    oauth_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        "The mock identity provider is misconfigured; see its log.",
    )
}

async fn discovery(State(s): State<Arc<Shared>>) -> Response {
    match metadata(&issuer(&s)) {
        Ok(m) => Json(m).into_response(),
        Err(err) => {
            tracing::error!(%err, "mock identity provider has no usable base URL");
            server_error()
        }
    }
}

fn metadata(issuer: &str) -> Result<Metadata, openidconnect::url::ParseError> {
    let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    Ok(Metadata::new(
        IssuerUrl::new(issuer.to_owned())?,
        AuthUrl::new(format!("{issuer}/authorize"))?,
        JsonWebKeySetUrl::new(format!("{issuer}/jwks"))?,
        vec![ResponseTypes::new(vec![CoreResponseType::Code])],
        vec![CoreSubjectIdentifierType::Public],
        vec![CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256],
        MetadataExtras {
            code_challenge_methods_supported: strings(&["S256"]),
            authorization_response_iss_parameter_supported: true,
        },
    )
    .set_token_endpoint(Some(TokenUrl::new(format!("{issuer}/token"))?))
    .set_userinfo_endpoint(Some(UserInfoUrl::new(format!("{issuer}/userinfo"))?))
    .set_grant_types_supported(Some(vec![CoreGrantType::AuthorizationCode]))
    .set_response_modes_supported(Some(vec![CoreResponseMode::Query]))
    .set_token_endpoint_auth_methods_supported(Some(vec![
        CoreClientAuthMethod::ClientSecretBasic,
        CoreClientAuthMethod::ClientSecretPost,
    ]))
    .set_scopes_supported(Some(
        ["openid", "profile", "email", "groups"]
            .map(|s| Scope::new(s.to_owned()))
            .to_vec(),
    ))
    .set_claims_supported(Some(
        strings(&[
            "iss",
            "sub",
            "aud",
            "exp",
            "iat",
            "nonce",
            "at_hash",
            "name",
            "preferred_username",
            "email",
            "email_verified",
            "groups",
        ])
        .into_iter()
        .map(CoreClaimName::new)
        .collect(),
    )))
}

async fn jwks(State(s): State<Arc<Shared>>) -> Response {
    match s.idp_key.key() {
        Ok(key) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            key.jwks.clone(),
        )
            .into_response(),
        Err(response) => response,
    }
}

// ---------------------------------------------------------------------------
// Authorization: the sign-in page.

#[derive(Deserialize)]
struct AuthorizeParams {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    /// The sign-in form only: who signs in, or that they cancelled.
    username: Option<String>,
    cancel: Option<String>,
}

struct AuthRequest {
    client: MockIdpClient,
    redirect_uri: String,
    scope: String,
    state: String,
    nonce: String,
    code_challenge: String,
}

fn validate(s: &Shared, p: &AuthorizeParams) -> Result<AuthRequest, Response> {
    let Some(client) = p.client_id.as_deref().and_then(|id| s.idp_client(id)) else {
        return Err(pages::error(
            BANNER,
            StatusCode::BAD_REQUEST,
            "Unknown client",
            "No client is registered with this client_id.",
        ));
    };
    let Some(redirect_uri) = p
        .redirect_uri
        .clone()
        .filter(|r| client.redirect_uris.contains(r))
    else {
        return Err(pages::error(
            BANNER,
            StatusCode::BAD_REQUEST,
            "Invalid redirect_uri",
            "The redirect_uri is not registered for this client (exact match required).",
        ));
    };
    // From here on the redirect URI is trusted, so errors go back to the
    // client (OpenID Connect Core §3.1.2.6).
    let state = p.state.as_deref();
    let back = |error: &str, description: &str| {
        respond(
            s,
            &redirect_uri,
            state,
            &[("error", error), ("error_description", description)],
        )
    };
    if p.response_type.as_deref() != Some("code") {
        return Err(back(
            "unsupported_response_type",
            "Only response_type=code is supported.",
        ));
    }
    let scope = p.scope.clone().unwrap_or_default();
    if !parse_scopes(Some(&scope), SPACE_OR_COMMA)
        .iter()
        .any(|s| s == "openid")
    {
        return Err(back("invalid_scope", "The openid scope is required."));
    }
    let Some(state) = p.state.clone().filter(|s| !s.is_empty()) else {
        return Err(back("invalid_request", "This provider requires state."));
    };
    let Some(nonce) = p.nonce.clone().filter(|n| !n.is_empty()) else {
        return Err(back("invalid_request", "This provider requires a nonce."));
    };
    let code_challenge = match (
        p.code_challenge.as_deref(),
        p.code_challenge_method.as_deref(),
    ) {
        (Some(c), Some("S256")) if c.len() == 43 && valid_pkce_string(c) => c.to_owned(),
        _ => {
            return Err(back(
                "invalid_request",
                "PKCE is required: a code_challenge with code_challenge_method=S256.",
            ));
        }
    };
    Ok(AuthRequest {
        client,
        redirect_uri,
        scope,
        state,
        nonce,
        code_challenge,
    })
}

/// A redirect back to the client, with `state` and `iss` (RFC 9207).
fn respond(
    s: &Shared,
    redirect_uri: &str,
    state: Option<&str>,
    params: &[(&str, &str)],
) -> Response {
    let iss = issuer(s);
    let mut all = params.to_vec();
    all.extend(state.map(|st| ("state", st)));
    all.push(("iss", &iss));
    match redirect_url(redirect_uri, &all) {
        Some(url) => found(&url),
        None => pages::error(
            BANNER,
            StatusCode::BAD_REQUEST,
            "Invalid redirect_uri",
            "The registered redirect_uri is not an absolute URL.",
        ),
    }
}

async fn authorize_page(
    State(s): State<Arc<Shared>>,
    Query(params): Query<AuthorizeParams>,
) -> Response {
    let req = match validate(&s, &params) {
        Ok(req) => req,
        Err(response) => return response,
    };
    let hidden = vec![
        ("response_type", "code".to_owned()),
        ("client_id", req.client.client_id.clone()),
        ("redirect_uri", req.redirect_uri.clone()),
        ("scope", req.scope.clone()),
        ("state", req.state.clone()),
        ("nonce", req.nonce.clone()),
        ("code_challenge", req.code_challenge.clone()),
        ("code_challenge_method", "S256".to_owned()),
    ];
    pages::html(
        StatusCode::OK,
        &IdpSignIn {
            client_id: &req.client.client_id,
            users: &s.idp_users,
            redirect_uri: &req.redirect_uri,
            hidden,
        },
    )
}

async fn authorize_decision(
    State(s): State<Arc<Shared>>,
    Form(params): Form<AuthorizeParams>,
) -> Response {
    let req = match validate(&s, &params) {
        Ok(req) => req,
        Err(response) => return response,
    };
    if params.cancel.is_some() {
        return respond(
            &s,
            &req.redirect_uri,
            Some(&req.state),
            &[
                ("error", "access_denied"),
                ("error_description", "The user cancelled the sign-in."),
            ],
        );
    }
    let Some(user) = params.username.as_deref().and_then(|u| s.idp_user(u)) else {
        return pages::error(
            BANNER,
            StatusCode::BAD_REQUEST,
            "Unknown user",
            "There is no user with that username.",
        );
    };
    let code = s.idp.put_code(CodeGrant {
        client_id: req.client.client_id.clone(),
        redirect_uri: Some(req.redirect_uri.clone()),
        subject: user.username.clone(),
        scopes: parse_scopes(Some(&req.scope), SPACE_OR_COMMA),
        code_challenge: Some(req.code_challenge),
        nonce: Some(req.nonce),
        issued_at: s.now(),
    });
    respond(&s, &req.redirect_uri, Some(&req.state), &[("code", &code)])
}

// ---------------------------------------------------------------------------
// The token endpoint: RFC 6749 errors, with their proper status codes.

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        [
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::PRAGMA, HeaderValue::from_static("no-cache")),
        ],
        Json(json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

fn invalid_grant(description: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", description)
}

fn invalid_client(method: Option<AuthMethod>) -> Response {
    let mut response = oauth_error(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        "Client authentication failed.",
    );
    // RFC 6749 §5.2: a client that tried Basic gets the challenge back.
    if method != Some(AuthMethod::Post) {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"idp\""),
        );
    }
    response
}

async fn token(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    Counters::bump(&s.counters.idp_token_requests);
    match exchange(&s, &headers, &body) {
        Ok(response) | Err(response) => response,
    }
}

fn exchange(s: &Shared, headers: &HeaderMap, body: &[u8]) -> Result<Response, Response> {
    let form = parse_form(body).ok_or_else(|| {
        oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "The body is not a form, or repeats a parameter.",
        )
    })?;
    let creds = client_credentials(headers, &form).map_err(|err| match err {
        ClientAuthError::Missing => invalid_client(None),
        ClientAuthError::Invalid => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Use exactly one client authentication method.",
        ),
    })?;
    let client = s
        .idp_client(&creds.id)
        .filter(|c| secrets_equal(&creds.secret, &c.client_secret))
        .ok_or_else(|| invalid_client(Some(creds.method)))?;
    if form.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Only grant_type=authorization_code is supported.",
        ));
    }
    let grant = form
        .get("code")
        .and_then(|code| s.idp.take_code(code))
        .ok_or_else(|| invalid_grant("The code is unknown or was already used."))?;
    let now = s.now();
    if grant.client_id != client.client_id {
        return Err(invalid_grant("The code was issued to another client."));
    }
    if now - grant.issued_at >= Duration::minutes(CODE_MINUTES) {
        return Err(invalid_grant("The code has expired."));
    }
    if form.get("redirect_uri") != grant.redirect_uri.as_ref() {
        return Err(invalid_grant(
            "redirect_uri differs from the authorization request's.",
        ));
    }
    let verified = match (&grant.code_challenge, form.get("code_verifier")) {
        (Some(challenge), Some(verifier)) => pkce_s256_matches(challenge, verifier),
        _ => false,
    };
    if !verified {
        return Err(invalid_grant("PKCE verification failed."));
    }
    let user = s
        .idp_user(&grant.subject)
        .ok_or_else(|| invalid_grant("The user no longer exists."))?;
    let issued = s.idp.issue(
        &user.username,
        &client.client_id,
        grant.scopes.clone(),
        now,
        Some(Lifetimes {
            access: Duration::seconds(ACCESS_SECONDS),
            refresh: None,
        }),
    );
    let id_token = sign_id_token(
        s,
        user,
        &client.client_id,
        grant.nonce,
        &issued.access_token,
    )?;
    Ok((
        [
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::PRAGMA, HeaderValue::from_static("no-cache")),
        ],
        Json(json!({
            "access_token": issued.access_token,
            "token_type": "Bearer",
            "expires_in": ACCESS_SECONDS,
            "id_token": id_token,
            "scope": grant.scopes.join(" "),
        })),
    )
        .into_response())
}

fn standard_claims(user: &MockIdpUser) -> StandardClaims<CoreGenderClaim> {
    StandardClaims::new(SubjectIdentifier::new(user.sub.clone()))
        .set_name(Some(EndUserName::new(user.name.clone()).into()))
        .set_preferred_username(Some(EndUserUsername::new(user.username.clone())))
        .set_email(Some(EndUserEmail::new(user.email.clone())))
        .set_email_verified(Some(true))
}

fn groups(user: &MockIdpUser) -> GroupsClaim {
    GroupsClaim {
        groups: user.groups.clone(),
    }
}

fn sign_id_token(
    s: &Shared,
    user: &MockIdpUser,
    client_id: &str,
    nonce: Option<String>,
    access_token: &str,
) -> Result<String, Response> {
    let key = s.idp_key.key()?;
    let issuer = IssuerUrl::new(issuer(s)).map_err(|err| {
        tracing::error!(%err, "mock identity provider has no usable base URL");
        server_error()
    })?;
    let now = s.now();
    let claims = IdTokenClaims::new(
        issuer,
        vec![Audience::new(client_id.to_owned())],
        now + Duration::minutes(ID_TOKEN_MINUTES),
        now,
        standard_claims(user),
        groups(user),
    )
    .set_nonce(nonce.map(Nonce::new));
    MockIdToken::new(
        claims,
        &key.signer,
        CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
        Some(&AccessToken::new(access_token.to_owned())),
        None,
    )
    .map(|t| t.to_string())
    .map_err(|err| {
        tracing::error!(%err, "mock identity provider could not sign an ID token");
        server_error()
    })
}

async fn userinfo(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let user = authorization_token(&headers, &["bearer"])
        .and_then(|token| s.idp.find(&token, s.now()))
        .and_then(|grant| s.idp_user(&grant.subject));
    match user {
        Some(user) => {
            Json(UserInfoClaims::new(standard_claims(user), groups(user))).into_response()
        }
        None => (
            StatusCode::UNAUTHORIZED,
            [(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            )],
        )
            .into_response(),
    }
}
