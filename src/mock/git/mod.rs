//! Git over smart HTTP in every flavour, served by the real
//! `git http-backend` through a CGI bridge (`cgi`), with each provider's
//! authentication rules (`auth`) in front of it, over bare repositories
//! that tests create (`repos`) under [`super::MockConfig::git_root`].
//!
//! URL layouts, as the providers lay them out (`.git` optional):
//! - GitHub: `/{owner}/{repo}.git/info/refs?service=…`, `…/git-upload-pack`,
//!   `…/git-receive-pack`;
//! - GitLab: `/gitlab/{namespace}/{project}.git/…` (namespaces may nest);
//! - Bitbucket Cloud: `/bitbucket/{workspace}/{repo}.git/…`;
//! - Bitbucket Data Center: `/bitbucket-dc/scm/{project}/{repo}.git/…`.
//!
//! Order of checks: the route (no Git root: the flavour's 404), the method
//! (405), the service (`info/refs` without `?service=`, dumb HTTP, is
//! refused with 403), the credential (401 with the flavour's
//! `WWW-Authenticate`), the repository and the token's reach (404), read
//! access (GitHub 404, as it hides private repositories; Bitbucket 403;
//! GitLab already refused the token with 401), write access for
//! `git-receive-pack` (403). Every request to a Git route counts in
//! `git_requests`; each 401 to a request that presented credentials counts
//! in `git_auth_failures` (git's first, anonymous request, which only asks
//! for a challenge, does not). Git requests are not API requests: they do
//! not count in `api_requests` or the per-token API counts, and the API
//! switches (`api_delay_ms`, `api_rate_limit`, `user_api_status`,
//! `api_hang`) leave them alone.

mod auth;
mod cgi;
mod repos;

pub use repos::RepoError;

use super::pats::Flavour;
use super::{Shared, gitea, github, gitlab};
use auth::{GitCaller, Refused};
use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use repos::RepoPath;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::OnceCell;

/// The Git side of [`Shared`]: where the repositories are, and the
/// backend once found.
pub(crate) struct GitState {
    root: Option<PathBuf>,
    backend: OnceCell<Option<PathBuf>>,
}

impl GitState {
    pub fn new(root: Option<PathBuf>) -> Self {
        Self {
            root,
            backend: OnceCell::new(),
        }
    }

    pub fn root(&self) -> Option<&Path> {
        self.root.as_deref()
    }

    /// `git-http-backend` in `git --exec-path`, else in the usual places;
    /// looked for once.
    async fn backend(&self, home: &Path) -> Option<PathBuf> {
        self.backend
            .get_or_init(|| async {
                let mut candidates = Vec::new();
                match repos::exec_path(home).await {
                    Ok(dir) => candidates.push(dir.join("git-http-backend")),
                    Err(err) => tracing::warn!(%err, "mock git: `git --exec-path` failed"),
                }
                candidates.extend(
                    ["/usr/lib/git-core", "/usr/libexec/git-core"]
                        .iter()
                        .map(|d| Path::new(d).join("git-http-backend")),
                );
                for candidate in candidates {
                    if tokio::fs::metadata(&candidate)
                        .await
                        .is_ok_and(|m| m.is_file())
                    {
                        return Some(candidate);
                    }
                }
                tracing::error!("mock git: no git-http-backend found");
                None
            })
            .await
            .clone()
    }
}

/// A repository the mock serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockRepo {
    pub flavour: Flavour,
    /// The path as the flavour names it (`owner/repo`, …), lowercased,
    /// without `.git`.
    pub path: String,
    /// What `git clone` takes: `<base>/owner/repo.git`,
    /// `<base>/gitlab/group/project.git`, `<base>/bitbucket/ws/repo.git`,
    /// `<base>/bitbucket-dc/scm/PROJ/repo.git` (the path as given).
    pub clone_url: String,
    /// The bare repository on disk, to inspect what was pushed.
    pub dir: PathBuf,
}

/// [`super::MockProvider::create_repo`].
pub(crate) async fn create_repo(
    s: &Shared,
    flavour: Flavour,
    path: &str,
) -> Result<MockRepo, RepoError> {
    let root = s.git.root().ok_or(RepoError::NoGitRoot)?;
    let parsed = repos::parse(flavour, path).map_err(RepoError::InvalidPath)?;
    let dir = repos::repo_dir(root, flavour, &parsed);
    let title = parsed
        .as_str()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    repos::create(root, &dir, &title, s.now()).await?;
    tracing::debug!(?flavour, path = %parsed.as_str(), "mock git: repository created");
    Ok(MockRepo {
        flavour,
        path: parsed.as_str().to_owned(),
        clone_url: repos::clone_url(&s.base_url(), flavour, path),
        dir,
    })
}

/// [`super::MockProvider::clone_url`].
pub(crate) fn clone_url(s: &Shared, flavour: Flavour, path: &str) -> String {
    repos::clone_url(&s.base_url(), flavour, path)
}

/// The Git routes of `flavour`, relative to where the flavour is nested.
pub(crate) fn routes(flavour: Flavour) -> Router<Arc<Shared>> {
    let handler = move |State(s): State<Arc<Shared>>, req: Request| serve(s, flavour, req);
    let fixed = |prefix: &str| {
        Router::new()
            .route(&format!("{prefix}/{{a}}/{{b}}/info/refs"), any(handler))
            .route(
                &format!("{prefix}/{{a}}/{{b}}/git-upload-pack"),
                any(handler),
            )
            .route(
                &format!("{prefix}/{{a}}/{{b}}/git-receive-pack"),
                any(handler),
            )
    };
    match flavour {
        Flavour::Github | Flavour::BitbucketCloud | Flavour::Gitea => fixed(""),
        Flavour::BitbucketDataCenter => fixed("/scm"),
        // namespaces nest: anything not routed otherwise is looked at
        Flavour::Gitlab => Router::new().route("/{*path}", any(handler)),
    }
}

/// The three smart-HTTP endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    InfoRefs,
    UploadPack,
    ReceivePack,
}

impl Endpoint {
    fn suffix(self) -> &'static str {
        match self {
            Self::InfoRefs => "info/refs",
            Self::UploadPack => "git-upload-pack",
            Self::ReceivePack => "git-receive-pack",
        }
    }

    fn method(self) -> Method {
        match self {
            Self::InfoRefs => Method::GET,
            Self::UploadPack | Self::ReceivePack => Method::POST,
        }
    }
}

/// The endpoint and the repository path of a request path as the flavour's
/// router sees it (its prefix stripped).
fn split(flavour: Flavour, uri_path: &str) -> Option<(Endpoint, &str)> {
    let path = match flavour {
        Flavour::BitbucketDataCenter => uri_path.strip_prefix("/scm")?,
        _ => uri_path,
    };
    [
        Endpoint::InfoRefs,
        Endpoint::UploadPack,
        Endpoint::ReceivePack,
    ]
    .into_iter()
    .find_map(|e| {
        path.strip_suffix(e.suffix())
            .and_then(|p| p.strip_suffix('/'))
            .map(|p| (e, p.trim_start_matches('/')))
    })
    .filter(|(_, repo)| !repo.is_empty())
}

/// Which Git service a request is for.
fn service(endpoint: Endpoint, query: &str) -> Option<Endpoint> {
    match endpoint {
        Endpoint::InfoRefs => form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "service")
            .and_then(|(_, v)| match v.as_ref() {
                "git-upload-pack" => Some(Endpoint::UploadPack),
                "git-receive-pack" => Some(Endpoint::ReceivePack),
                _ => None,
            }),
        other => Some(other),
    }
}

/// What the flavour answers for a path it does not serve.
async fn not_found_page(flavour: Flavour) -> Response {
    match flavour {
        Flavour::Gitlab => gitlab::not_found().await,
        Flavour::Gitea => gitea::not_found().await,
        // Bitbucket's routers have no fallback of their own: the mock's
        // is GitHub's
        Flavour::Github | Flavour::BitbucketCloud | Flavour::BitbucketDataCenter => {
            github::not_found().await
        }
    }
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        format!("{body}\n"),
    )
        .into_response()
}

/// The flavour's 401, with the challenge that makes git ask its credential
/// helper.
fn unauthorized(flavour: Flavour, message: Option<&str>) -> Response {
    let (challenges, default): (&[&'static str], &str) = match flavour {
        Flavour::Github => (
            &["Basic realm=\"GitHub\""],
            "Invalid username or token. Password authentication is not supported for Git operations.",
        ),
        Flavour::Gitlab => (
            &["Basic realm=\"GitLab\""],
            "HTTP Basic: Access denied. If a password was provided for Git authentication, the password was incorrect or you're required to use a token instead of a password. If a token was provided, it was either incorrect, expired, or improperly scoped.",
        ),
        Flavour::BitbucketCloud => (
            &["Basic realm=\"Bitbucket.org HTTP\""],
            "Invalid credentials. Use an API token with your Bitbucket username, or an access token with the username x-token-auth.",
        ),
        Flavour::BitbucketDataCenter => (
            &[
                "Basic realm=\"Atlassian Bitbucket\"",
                "Bearer realm=\"Atlassian Bitbucket\"",
            ],
            "Authentication failed. Please check your credentials and try again.",
        ),
        // Gitea's challenge names no realm worth the name
        Flavour::Gitea => (&["Basic realm=\".\""], "Unauthorized"),
    };
    let message = message.unwrap_or(default);
    let mut response = text(StatusCode::UNAUTHORIZED, message.to_owned());
    for challenge in challenges {
        response.headers_mut().append(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
    }
    response
}

fn repository_not_found(flavour: Flavour) -> Response {
    let message = match flavour {
        Flavour::Github => "Repository not found.",
        Flavour::Gitlab => {
            "The project you were looking for could not be found or you don't have permission to view it."
        }
        Flavour::BitbucketCloud => "Repository not found",
        Flavour::BitbucketDataCenter => "Repository not found",
        Flavour::Gitea => "Repository not found",
    };
    text(StatusCode::NOT_FOUND, message.to_owned())
}

fn read_denied(flavour: Flavour) -> Response {
    match flavour {
        // a private repository the token may not read does not exist
        Flavour::Github | Flavour::Gitlab => repository_not_found(flavour),
        Flavour::BitbucketCloud => text(
            StatusCode::FORBIDDEN,
            "Your credentials lack one or more required privilege scopes.".to_owned(),
        ),
        Flavour::BitbucketDataCenter => text(
            StatusCode::FORBIDDEN,
            "You are not permitted to access this repository.".to_owned(),
        ),
        // a token without the repository scope, as `githttp.go` answers it
        Flavour::Gitea => text(StatusCode::FORBIDDEN, "User permission denied".to_owned()),
    }
}

fn write_denied(flavour: Flavour, path: &RepoPath, caller: &GitCaller) -> Response {
    let message = match flavour {
        Flavour::Github => format!(
            "Permission to {}.git denied to {}.",
            path.as_str(),
            caller.user
        ),
        Flavour::Gitlab => "You are not allowed to push code to this project.".to_owned(),
        Flavour::BitbucketCloud => {
            "Your credentials lack one or more required privilege scopes.".to_owned()
        }
        Flavour::BitbucketDataCenter => {
            format!("You do not have permission to push to {}.", path.as_str())
        }
        Flavour::Gitea => "User permission denied".to_owned(),
    };
    text(StatusCode::FORBIDDEN, message)
}

async fn serve(s: Arc<Shared>, flavour: Flavour, req: Request) -> Response {
    let uri_path = req.uri().path().to_owned();
    let Some((endpoint, repo)) = split(flavour, &uri_path) else {
        return not_found_page(flavour).await;
    };
    s.counters.git_request(flavour);
    let Some(root) = s.git.root().map(Path::to_path_buf) else {
        return not_found_page(flavour).await;
    };
    if req.method() != endpoint.method() {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed".to_owned(),
        );
        if let Ok(allow) = HeaderValue::from_str(endpoint.method().as_str()) {
            r.headers_mut().insert(header::ALLOW, allow);
        }
        return r;
    }
    let query = req.uri().query().unwrap_or_default().to_owned();
    let Some(service) = service(endpoint, &query) else {
        return text(
            StatusCode::FORBIDDEN,
            "Only the smart HTTP protocol is served: run a git that sends ?service=.".to_owned(),
        );
    };
    let caller = match auth::authenticate(&s, flavour, req.headers()) {
        Ok(caller) => caller,
        Err(refused) => {
            if refused.presented() {
                s.counters.git_auth_failure(flavour);
            }
            let message = match refused {
                Refused::Told(m) => Some(m),
                Refused::Rejected | Refused::NoCredentials => None,
            };
            return unauthorized(flavour, message);
        }
    };
    let Ok(path) = repos::parse(flavour, repo) else {
        return repository_not_found(flavour);
    };
    let logins: Vec<String> = s
        .github_users
        .iter()
        .map(|u| u.login.to_ascii_lowercase())
        .collect();
    let dir = repos::repo_dir(&root, flavour, &path);
    let exists = tokio::fs::metadata(&dir).await.is_ok_and(|m| m.is_dir());
    if !exists || !caller.reaches(flavour, &path, &logins) {
        return repository_not_found(flavour);
    }
    if !caller.read {
        return read_denied(flavour);
    }
    if service == Endpoint::ReceivePack && !caller.write {
        return write_denied(flavour, &path, &caller);
    }
    let Some(backend) = s.git.backend(&root).await else {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "git http-backend is not installed".to_owned(),
        );
    };
    let headers = req.headers();
    let header_str = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| cgi::env_safe(v))
            .map(str::to_owned)
    };
    let content_encoding = header_str(header::CONTENT_ENCODING);
    if let Some(encoding) = &content_encoding
        && !matches!(encoding.as_str(), "gzip" | "x-gzip" | "identity")
    {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Encoding {encoding} is not supported"),
        );
    }
    let remote_addr = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "127.0.0.1".to_owned(), |c| c.0.ip().to_string());
    let cgi_request = cgi::CgiRequest {
        backend,
        project_root: repos::project_root(&root, flavour),
        home: root.clone(),
        method: req.method().as_str().to_owned(),
        path_info: format!("/{}.git/{}", path.as_str(), endpoint.suffix()),
        query,
        content_type: header_str(header::CONTENT_TYPE),
        content_length: header_str(header::CONTENT_LENGTH),
        content_encoding,
        git_protocol: header_str(header::HeaderName::from_static("git-protocol")),
        remote_user: caller.user.clone(),
        remote_addr,
    };
    cgi::run(cgi_request, req.into_body()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_paths() {
        assert_eq!(
            split(Flavour::Github, "/alice/demo.git/info/refs"),
            Some((Endpoint::InfoRefs, "alice/demo.git"))
        );
        assert_eq!(
            split(Flavour::Gitlab, "/g/sub/p.git/git-upload-pack"),
            Some((Endpoint::UploadPack, "g/sub/p.git"))
        );
        assert_eq!(
            split(
                Flavour::BitbucketDataCenter,
                "/scm/PROJ/r.git/git-receive-pack"
            ),
            Some((Endpoint::ReceivePack, "PROJ/r.git"))
        );
        assert_eq!(
            split(Flavour::BitbucketDataCenter, "/PROJ/r.git/info/refs"),
            None
        );
        assert_eq!(split(Flavour::Gitlab, "/api/v4/user"), None);
        assert_eq!(split(Flavour::Gitlab, "/info/refs"), None);
    }

    #[test]
    fn services() {
        assert_eq!(
            service(Endpoint::InfoRefs, "service=git-upload-pack"),
            Some(Endpoint::UploadPack)
        );
        assert_eq!(
            service(Endpoint::InfoRefs, "service=git-receive-pack"),
            Some(Endpoint::ReceivePack)
        );
        assert_eq!(service(Endpoint::InfoRefs, ""), None);
        assert_eq!(service(Endpoint::InfoRefs, "service=git-shell"), None);
        assert_eq!(
            service(Endpoint::UploadPack, ""),
            Some(Endpoint::UploadPack)
        );
    }
}
