//! Test harness shared by integration tests: a throwaway `redis-server` per
//! test, on a free loopback port, with no persistence, killed on drop.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const READY_TIMEOUT: Duration = Duration::from_secs(5);
/// Another test may grab the port between our probe and redis' bind.
const PORT_ATTEMPTS: usize = 5;

pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    extra_args: Vec<String>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a fresh, empty server.
    pub fn start() -> RedisServer {
        Self::start_with_args(&[])
    }

    /// Starts a fresh server with extra `redis-server` arguments
    /// (for example `["--requirepass", "pw"]`).
    pub fn start_with_args(args: &[&str]) -> RedisServer {
        let dir = tempfile::tempdir().expect("tempdir for redis-server");
        let extra_args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        let mut last_err = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            match spawn_ready(port, &extra_args, dir.path()) {
                Ok(child) => {
                    return RedisServer {
                        child: Some(child),
                        port,
                        extra_args,
                        dir,
                    };
                }
                Err(e) => last_err = e,
            }
        }
        panic!("redis-server did not start after {PORT_ATTEMPTS} attempts: {last_err}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/` (no credentials).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A plain client, for inspecting what the store wrote.
    pub fn client(&self) -> redis::Client {
        self.client_with_password(None)
    }

    pub fn client_with_password(&self, password: Option<&str>) -> redis::Client {
        let url = match password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}/", self.port),
            None => self.url(),
        };
        redis::Client::open(url).expect("client for the test redis-server")
    }

    /// Kills the server (SIGKILL, no goodbye to clients) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a new, empty server on the same port after [`Self::kill`].
    pub fn restart(&mut self) {
        self.kill();
        let child = spawn_ready(self.port, &self.extra_args, self.dir.path())
            .unwrap_or_else(|e| panic!("restarting redis-server on port {}: {e}", self.port));
        self.child = Some(child);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a probe socket on loopback");
    listener.local_addr().expect("probe socket address").port()
}

/// Spawns redis-server and waits until *it* (checked by pid, not just any server
/// on that port) answers PING.
fn spawn_ready(port: u16, extra: &[String], dir: &std::path::Path) -> Result<Child, String> {
    let password = extra
        .iter()
        .position(|a| a == "--requirepass")
        .and_then(|i| extra.get(i + 1));
    let url = match password {
        Some(pw) => format!("redis://:{pw}@127.0.0.1:{port}/"),
        None => format!("redis://127.0.0.1:{port}/"),
    };
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut child = Command::new("redis-server")
        .arg("--port")
        .arg(port.to_string())
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot spawn `redis-server` ({e}); the Redis tests need the redis-server \
                 binary on PATH (Debian: apt-get install redis-server)"
            )
        });
    let pid = child.id();
    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("redis-server on port {port} exited: {status}"));
        }
        if let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(200)) {
            let pong: Result<String, _> = redis::cmd("PING").query(&mut conn);
            let info: Result<String, _> = redis::cmd("INFO").arg("server").query(&mut conn);
            if let (Ok(_), Ok(info)) = (pong, info) {
                if info.contains(&format!("process_id:{pid}\r")) {
                    return Ok(child);
                }
                // Someone else's server holds the port; ours will exit.
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("port {port} is taken by another redis-server"));
            }
        }
        if started.elapsed() > READY_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "redis-server on port {port} did not answer PING within {READY_TIMEOUT:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

mod github_app;
mod harness;
mod logs;
mod redis_ha;
#[allow(unused_imports)]
pub use github_app::*;
#[allow(unused_imports)]
pub use harness::*;
#[allow(unused_imports)]
pub use logs::*;
#[allow(unused_imports)]
pub use redis_ha::*;
