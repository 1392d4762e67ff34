//! A small CGI (RFC 3875) bridge to the real `git http-backend`, run with
//! `tokio::process`: the request body is piped into its standard input as
//! it arrives (chunked or not; gzip bodies are inflated by http-backend
//! itself, told by `HTTP_CONTENT_ENCODING`), the CGI header block of its
//! standard output (`Status:` and the rest) becomes the response head and
//! everything after it is streamed back. The process is killed if the
//! client goes away before the answer is complete.
//!
//! Its environment is built from scratch: nothing of the mock's own (no
//! credentials; the `Authorization` header is never passed on), no system
//! or global Git configuration.

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::body::Frame;
use std::future::poll_fn;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::process::{ChildStdin, ChildStdout};
use tokio::sync::oneshot;

/// Longest CGI header block accepted from the backend.
const MAX_HEAD: usize = 64 * 1024;
/// Most of the backend's standard error kept for the log.
const MAX_STDERR: usize = 8 * 1024;

/// One CGI request.
pub(crate) struct CgiRequest {
    pub backend: PathBuf,
    /// `GIT_PROJECT_ROOT`.
    pub project_root: PathBuf,
    /// `HOME` of the backend (no configuration is read from it).
    pub home: PathBuf,
    pub method: String,
    /// `/<repo>.git/<info/refs|git-upload-pack|git-receive-pack>`.
    pub path_info: String,
    pub query: String,
    pub content_type: Option<String>,
    pub content_length: Option<String>,
    pub content_encoding: Option<String>,
    /// From the `Git-Protocol` header (`version=2`), checked.
    pub git_protocol: Option<String>,
    pub remote_user: String,
    pub remote_addr: String,
}

/// A header value that can go into a CGI environment as it is.
pub(crate) fn env_safe(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 1024
        && value.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
}

fn bad_gateway(message: &str) -> Response {
    (StatusCode::BAD_GATEWAY, format!("{message}\n")).into_response()
}

/// Runs the backend for `req` with `body` on its standard input.
pub(crate) async fn run(req: CgiRequest, body: Body) -> Response {
    let mut command = tokio::process::Command::new(&req.backend);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &req.home)
        .env("LC_ALL", "C")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        // the mock decided who may push; http-backend need not guess
        .env("GIT_CONFIG_COUNT", "2")
        .env("GIT_CONFIG_KEY_0", "http.receivepack")
        .env("GIT_CONFIG_VALUE_0", "true")
        .env("GIT_CONFIG_KEY_1", "http.uploadpack")
        .env("GIT_CONFIG_VALUE_1", "true")
        .env("GIT_PROJECT_ROOT", &req.project_root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("SERVER_SOFTWARE", "gitbroker-mock")
        .env("REQUEST_METHOD", &req.method)
        .env("PATH_INFO", &req.path_info)
        .env("QUERY_STRING", &req.query)
        .env("REMOTE_USER", &req.remote_user)
        .env("REMOTE_ADDR", &req.remote_addr)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (name, value) in [
        ("CONTENT_TYPE", &req.content_type),
        ("CONTENT_LENGTH", &req.content_length),
        ("HTTP_CONTENT_ENCODING", &req.content_encoding),
        // http-backend turns HTTP_GIT_PROTOCOL into GIT_PROTOCOL itself;
        // both are set so that either way of reading it agrees
        ("HTTP_GIT_PROTOCOL", &req.git_protocol),
        ("GIT_PROTOCOL", &req.git_protocol),
    ] {
        if let Some(value) = value {
            command.env(name, value);
        }
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(err) => {
            tracing::error!(%err, backend = %req.backend.display(), "mock git: cannot start git http-backend");
            return bad_gateway("cannot start git http-backend");
        }
    };
    let (Some(stdin), Some(mut stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return bad_gateway("git http-backend has no pipes");
    };
    tokio::spawn(feed(body, stdin));
    let path_info = req.path_info.clone();
    tokio::spawn(async move {
        let mut kept = Vec::new();
        let _ = stderr.take(MAX_STDERR as u64).read_to_end(&mut kept).await;
        if !kept.is_empty() {
            tracing::debug!(path = %path_info, stderr = %String::from_utf8_lossy(&kept).trim(), "mock git: http-backend said");
        }
    });
    // the body says when it has read everything; if it is dropped before
    // that (the client went away), the backend is killed
    let (done, finished) = oneshot::channel::<()>();
    let path_info = req.path_info.clone();
    tokio::spawn(async move {
        let status = tokio::select! {
            status = child.wait() => status,
            read_all = finished => {
                if read_all.is_err() {
                    let _ = child.start_kill();
                }
                child.wait().await
            }
        };
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => {
                tracing::debug!(path = %path_info, status = %s, "mock git: http-backend ended")
            }
            Err(err) => tracing::debug!(path = %path_info, %err, "mock git: http-backend lost"),
        }
    });
    let (head, rest) = match read_head(&mut stdout).await {
        Ok(split) => split,
        Err(message) => return bad_gateway(message),
    };
    let (status, headers) = parse_head(&head);
    let mut response = Response::new(Body::new(CgiBody {
        first: Some(Bytes::from(rest)),
        stdout,
        done: Some(done),
    }));
    *response.status_mut() = status;
    response.headers_mut().extend(headers);
    response
}

/// Copies the request body into the backend's standard input, then closes
/// it (which is how the backend learns a chunked body has ended).
async fn feed(mut body: Body, mut stdin: ChildStdin) {
    while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let Ok(frame) = frame else {
            // the client went away mid-body; the backend sees a short body
            break;
        };
        if let Ok(data) = frame.into_data()
            && stdin.write_all(&data).await.is_err()
        {
            break;
        }
    }
    let _ = stdin.shutdown().await;
}

/// Reads the CGI header block; returns it and whatever body bytes came
/// with it.
async fn read_head(stdout: &mut ChildStdout) -> Result<(Vec<u8>, Vec<u8>), &'static str> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some((end, sep)) = head_end(&buf) {
            let rest = buf.split_off(end + sep);
            buf.truncate(end);
            return Ok((buf, rest));
        }
        if buf.len() > MAX_HEAD {
            return Err("git http-backend sent an oversized header");
        }
        match stdout.read(&mut chunk).await {
            Ok(0) => return Err("git http-backend ended without an answer"),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return Err("git http-backend could not be read"),
        }
    }
}

/// Where the header block ends: the offset of the blank line and the
/// length of its separator (`\r\n\r\n` or `\n\n`).
fn head_end(buf: &[u8]) -> Option<(usize, usize)> {
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// The status (`Status: 404 Not Found`; 200 without one) and the headers
/// of a CGI header block. Lines that are not valid headers are dropped, and
/// so are hop-by-hop headers the server sets itself.
fn parse_head(head: &[u8]) -> (StatusCode, Vec<(HeaderName, HeaderValue)>) {
    let mut status = StatusCode::OK;
    let mut headers = Vec::new();
    for line in head.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"status") {
            let code = value.split(|b| *b == b' ').next().unwrap_or_default();
            if let Some(s) = std::str::from_utf8(code)
                .ok()
                .and_then(|c| c.parse::<u16>().ok())
                .and_then(|c| StatusCode::from_u16(c).ok())
            {
                status = s;
            }
            continue;
        }
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        else {
            continue;
        };
        if matches!(
            name.as_str(),
            "connection" | "transfer-encoding" | "keep-alive" | "content-length"
        ) {
            continue;
        }
        headers.push((name, value));
    }
    (status, headers)
}

/// The backend's standard output after the header block, as a response body.
struct CgiBody {
    first: Option<Bytes>,
    stdout: ChildStdout,
    /// Sent once everything has been read; dropped unsent, it kills the
    /// backend.
    done: Option<oneshot::Sender<()>>,
}

impl HttpBody for CgiBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        if let Some(first) = this.first.take()
            && !first.is_empty()
        {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        let mut chunk = [0u8; 16 * 1024];
        let mut buf = ReadBuf::new(&mut chunk);
        match Pin::new(&mut this.stdout).poll_read(cx, &mut buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(err)) => Poll::Ready(Some(Err(err))),
            Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                if let Some(done) = this.done.take() {
                    let _ = done.send(());
                }
                Poll::Ready(None)
            }
            Poll::Ready(Ok(())) => {
                Poll::Ready(Some(Ok(Frame::data(Bytes::copy_from_slice(buf.filled())))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_blocks() {
        assert_eq!(head_end(b"A: b\r\n\r\nbody"), Some((4, 4)));
        assert_eq!(head_end(b"A: b\n\nbody"), Some((4, 2)));
        assert_eq!(head_end(b"A: b\r\n"), None);
        let (status, headers) = parse_head(
            b"Status: 403 Forbidden\r\nContent-Type: text/plain\r\nbad line\r\nTransfer-Encoding: chunked\r\nX-Bad\x01: v",
        );
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(headers.len(), 1);
        assert_eq!(headers[0].0, "content-type");
        let (status, _) = parse_head(b"Expires: Fri, 01 Jan 1980 00:00:00 GMT");
        assert_eq!(status, StatusCode::OK);
    }

    #[test]
    fn environment_values() {
        assert!(env_safe("version=2"));
        assert!(env_safe("application/x-git-upload-pack-request"));
        assert!(!env_safe(""));
        assert!(!env_safe("a\nb"));
        assert!(!env_safe("a\0b"));
    }
}
