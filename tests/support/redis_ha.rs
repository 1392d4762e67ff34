//! Real Redis beyond one server for the tests, on free loopback ports in
//! temporary directories: a Redis Cluster (`redis-server --cluster-enabled
//! yes`, joined by `redis-cli --cluster create`) and a Sentinel group (a
//! master, a replica and three `redis-server --sentinel`).
//!
//! Every process runs under a small `sh` that holds a pipe from the test
//! process and kills its server when that pipe closes, so servers die with
//! the test binary even when it never drops them (shared fixtures in
//! statics) or is killed itself.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::io::BufRead;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a cluster or sentinel group may take to agree on its topology.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);
pub const MASTER_NAME: &str = "gbmaster";

/// One `redis-server` (plain, cluster node or sentinel), restartable on its
/// port with its directory (and so its `nodes.conf` or sentinel config) kept.
pub struct Node {
    pub port: u16,
    tls: Option<Arc<TestTls>>,
    dir: PathBuf,
    /// Arguments after `redis-server` (a config file first for sentinels).
    args: Vec<String>,
    proc: Option<Proc>,
}

struct Proc {
    /// The watchdog shell; its stdin is our end of the pipe.
    shell: Child,
    /// The server's own pid.
    pid: u32,
}

impl Node {
    fn start(
        dir: PathBuf,
        tls: Option<Arc<TestTls>>,
        args: impl Fn(u16, &Path) -> Vec<String>,
    ) -> Node {
        std::fs::create_dir_all(&dir).unwrap();
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let args = args(port, &dir);
            match spawn(port, &args, tls.as_deref()) {
                Ok(proc) => {
                    return Node {
                        port,
                        tls,
                        dir,
                        args,
                        proc: Some(proc),
                    };
                }
                Err(e) => last = e,
            }
        }
        panic!("redis-server did not start: {last}");
    }

    /// `redis[s]://127.0.0.1:port`, without a trailing slash.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn client(&self) -> redis::Client {
        client_for(self.port, self.tls.as_deref())
    }

    pub fn conn(&self) -> redis::Connection {
        self.client()
            .get_connection_with_timeout(Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("connecting to 127.0.0.1:{}: {e}", self.port))
    }

    pub fn is_running(&self) -> bool {
        self.proc.is_some()
    }

    /// SIGKILL: no goodbye to clients or peers.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            sigkill(p.pid);
            drop(p.shell.stdin.take());
            let _ = p.shell.wait();
        }
    }

    /// Starts the server again on the same port, with the same directory.
    pub fn restart(&mut self) {
        self.kill();
        self.proc = Some(
            spawn(self.port, &self.args, self.tls.as_deref())
                .unwrap_or_else(|e| panic!("restarting redis on {}: {e}", self.port)),
        );
    }

    pub fn query<T: redis::FromRedisValue>(&self, cmd: &mut redis::Cmd) -> T {
        cmd.query(&mut self.conn()).unwrap()
    }

    fn info(&self, section: &str) -> String {
        self.query(redis::cmd("INFO").arg(section))
    }

    fn info_field(&self, section: &str, field: &str) -> Option<String> {
        let info = self
            .client()
            .get_connection_with_timeout(Duration::from_millis(500))
            .ok()
            .and_then(|mut c| redis::cmd("INFO").arg(section).query::<String>(&mut c).ok())?;
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .map(|v| v.trim().to_owned())
    }
}

impl Node {
    /// A standalone server in `dir` (TLS only when `tls` is given).
    pub fn standalone(dir: PathBuf, tls: Option<Arc<TestTls>>) -> Node {
        let t = tls.clone();
        Node::start(dir, tls, move |port, d| {
            data_node_args(port, d, &[], t.as_deref())
        })
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// SIGKILL through the shell's `kill` builtin (no procps needed).
fn sigkill(pid: u32) {
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!("kill -9 {pid} 2>/dev/null"))
        .status();
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Starts `redis-server args` under the watchdog shell and waits until that
/// very process (by pid) answers PING.
fn spawn(port: u16, args: &[String], tls: Option<&TestTls>) -> Result<Proc, String> {
    let mut shell = Command::new("sh")
        .arg("-c")
        .arg(
            r#"redis-server "$@" </dev/null >/dev/null 2>&1 & p=$!; echo $p; read _ignored; kill -9 $p 2>/dev/null"#,
        )
        .arg("sh")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot spawn sh for redis-server: {e}"))?;
    let mut line = String::new();
    std::io::BufReader::new(shell.stdout.take().unwrap())
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let pid: u32 = line
        .trim()
        .parse()
        .map_err(|_| format!("no pid from the watchdog: {line:?}"))?;
    let mut proc = Proc { shell, pid };
    let client = client_for(port, tls);
    let started = Instant::now();
    loop {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            drop(proc.shell.stdin.take());
            let _ = proc.shell.wait();
            return Err(format!(
                "redis-server on port {port} exited (redis-server and redis-cli are needed; Debian: apt-get install redis-server)"
            ));
        }
        if let Ok(mut c) = client.get_connection_with_timeout(Duration::from_millis(200)) {
            let info: Result<String, _> = redis::cmd("INFO").arg("server").query(&mut c);
            if let Ok(info) = info {
                if info.contains(&format!("process_id:{pid}\r")) {
                    return Ok(proc);
                }
                sigkill(pid);
                drop(proc.shell.stdin.take());
                let _ = proc.shell.wait();
                return Err(format!("port {port} is taken by another server"));
            }
        }
        if started.elapsed() > READY_TIMEOUT {
            sigkill(pid);
            drop(proc.shell.stdin.take());
            let _ = proc.shell.wait();
            return Err(format!("redis-server on port {port} did not answer"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `ready` every 50 ms until it holds (a topology change is not an
/// event we can subscribe to from here), or fails after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn data_node_args(port: u16, dir: &Path, extra: &[&str], tls: Option<&TestTls>) -> Vec<String> {
    let mut args: Vec<String> = match tls {
        Some(t) => {
            let mut a = vec![
                "--port".to_owned(),
                "0".to_owned(),
                "--tls-port".to_owned(),
                port.to_string(),
            ];
            a.extend(t.server_args());
            a
        }
        None => vec!["--port".to_owned(), port.to_string()],
    };
    args.extend(
        [
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            dir.to_str().unwrap(),
        ]
        .iter()
        .map(|s| (*s).to_owned()),
    );
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

// ------------------------------------------------------------------ cluster

pub struct RedisCluster {
    pub nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    /// `masters` masters with `replicas` replicas each, every slot assigned,
    /// all nodes agreeing. A node is declared failed after 1 s.
    pub fn start(masters: usize, replicas: usize) -> RedisCluster {
        Self::start_with(masters, replicas, None)
    }

    /// The same, every node speaking only TLS (clients, cluster bus, replication).
    pub fn start_with(masters: usize, replicas: usize, tls: Option<Arc<TestTls>>) -> RedisCluster {
        let dir = tempfile::tempdir().unwrap();
        let nodes: Vec<Node> = (0..masters * (1 + replicas))
            .map(|i| {
                Node::start(
                    dir.path().join(format!("node-{i}")),
                    tls.clone(),
                    |port, d| {
                        data_node_args(
                            port,
                            d,
                            &[
                                "--cluster-enabled",
                                "yes",
                                "--cluster-config-file",
                                "nodes.conf",
                                "--cluster-node-timeout",
                                "1000",
                                // a replica may always take over, however long it was cut off
                                "--cluster-replica-validity-factor",
                                "0",
                            ],
                            tls.as_deref(),
                        )
                    },
                )
            })
            .collect();
        let mut cli = Command::new("redis-cli");
        if let Some(t) = &tls {
            cli.arg("--tls").arg("--cacert").arg(&t.ca);
        }
        let out = cli
            .arg("--cluster")
            .arg("create")
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-cli ({e}); Debian: apt-get install redis-tools")
            });
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = RedisCluster { nodes, _dir: dir };
        cluster.wait_converged();
        cluster
    }

    /// `redis://127.0.0.1:port` of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Node::url).collect()
    }

    /// The TOML array of `redis_nodes`.
    pub fn nodes_toml(&self) -> String {
        let list: Vec<String> = self.urls().iter().map(|u| format!("\"{u}\"")).collect();
        format!("[{}]", list.join(", "))
    }

    /// Every running node says the cluster is ok with all slots served and
    /// knows every node; every replica's link to its master is up.
    pub fn converged(&self) -> bool {
        let running = self.nodes.iter().filter(|n| n.is_running()).count();
        self.nodes.iter().filter(|n| n.is_running()).all(|n| {
            let ok = n.info_field("cluster", "cluster_enabled").is_some()
                && cluster_info(n, "cluster_state").as_deref() == Some("ok")
                && cluster_info(n, "cluster_slots_ok").as_deref() == Some("16384")
                && cluster_info(n, "cluster_known_nodes")
                    .and_then(|k| k.parse::<usize>().ok())
                    .is_some_and(|k| k >= running);
            let role = n.info_field("replication", "role");
            ok && (role.as_deref() == Some("master")
                || n.info_field("replication", "master_link_status").as_deref() == Some("up"))
        })
    }

    pub fn wait_converged(&self) {
        wait_until("the cluster to converge", CONVERGE_TIMEOUT, || {
            self.converged()
        });
    }

    /// Index of the running master that holds `key`'s slot.
    pub fn master_of(&self, key: &str) -> usize {
        let slot: i64 = self
            .nodes
            .iter()
            .find(|n| n.is_running())
            .unwrap()
            .query(redis::cmd("CLUSTER").arg("KEYSLOT").arg(key));
        self.nodes
            .iter()
            .position(|n| {
                n.is_running()
                    && n.info_field("replication", "role").as_deref() == Some("master")
                    && {
                        let nodes: String = n.query(redis::cmd("CLUSTER").arg("NODES"));
                        nodes
                            .lines()
                            .find(|l| l.contains("myself"))
                            .is_some_and(|l| owns_slot(l, slot))
                    }
            })
            .unwrap_or_else(|| panic!("no master holds slot {slot}"))
    }

    pub fn is_master(&self, i: usize) -> bool {
        self.nodes[i].info_field("replication", "role").as_deref() == Some("master")
    }

    /// Number of keys matching `pattern` over every master.
    pub fn keys_matching(&self, pattern: &str) -> Vec<String> {
        let mut out = Vec::new();
        for n in self.nodes.iter().filter(|n| n.is_running()) {
            if n.info_field("replication", "role").as_deref() == Some("master") {
                let keys: Vec<String> = n.query(redis::cmd("KEYS").arg(pattern));
                out.extend(keys);
            }
        }
        out.sort();
        out
    }
}

fn cluster_info(n: &Node, field: &str) -> Option<String> {
    let mut c = n
        .client()
        .get_connection_with_timeout(Duration::from_millis(500))
        .ok()?;
    let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut c).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_owned())
}

/// Whether a `CLUSTER NODES` line's slot ranges include `slot`.
fn owns_slot(line: &str, slot: i64) -> bool {
    line.split_whitespace().skip(8).any(|range| {
        let mut parts = range.splitn(2, '-');
        let lo = parts.next().and_then(|s| s.parse::<i64>().ok());
        let hi = parts.next().and_then(|s| s.parse::<i64>().ok()).or(lo);
        matches!((lo, hi), (Some(lo), Some(hi)) if lo <= slot && slot <= hi)
    })
}

// ----------------------------------------------------------------- sentinel

pub struct RedisSentinelGroup {
    /// `data[0]` starts as the master, the others as its replicas.
    pub data: Vec<Node>,
    pub sentinels: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl RedisSentinelGroup {
    /// A master, `replicas` replicas and three sentinels (quorum 2) watching
    /// it; the master is declared down after 500 ms.
    pub fn start(replicas: usize) -> RedisSentinelGroup {
        Self::start_with(replicas, None)
    }

    /// The same, every server and sentinel speaking only TLS.
    pub fn start_with(replicas: usize, tls: Option<Arc<TestTls>>) -> RedisSentinelGroup {
        let dir = tempfile::tempdir().unwrap();
        let master = Node::start(dir.path().join("data-0"), tls.clone(), |port, d| {
            data_node_args(port, d, &[], tls.as_deref())
        });
        let master_port = master.port;
        let mut data = vec![master];
        for i in 1..=replicas {
            data.push(Node::start(
                dir.path().join(format!("data-{i}")),
                tls.clone(),
                |port, d| {
                    data_node_args(
                        port,
                        d,
                        &["--replicaof", "127.0.0.1", &master_port.to_string()],
                        tls.as_deref(),
                    )
                },
            ));
        }
        let sentinels = (0..3)
            .map(|i| {
                Node::start(
                    dir.path().join(format!("sentinel-{i}")),
                    tls.clone(),
                    |port, d| {
                        let conf = d.join("sentinel.conf");
                        let listen = match &tls {
                            Some(t) => format!("port 0\ntls-port {port}\n{}", t.sentinel_conf()),
                            None => format!("port {port}\n"),
                        };
                        std::fs::write(
                            &conf,
                            format!(
                                "{listen}bind 127.0.0.1\ndir {dir}\n\
                             sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
                             sentinel down-after-milliseconds {MASTER_NAME} 500\n\
                             sentinel failover-timeout {MASTER_NAME} 2000\n\
                             sentinel parallel-syncs {MASTER_NAME} 1\n",
                                dir = d.display()
                            ),
                        )
                        .unwrap();
                        vec![conf.display().to_string(), "--sentinel".to_owned()]
                    },
                )
            })
            .collect();
        let group = RedisSentinelGroup {
            data,
            sentinels,
            _dir: dir,
        };
        wait_until("the sentinels to see the group", CONVERGE_TIMEOUT, || {
            group.settled()
        });
        group
    }

    /// The TOML array of `redis_sentinels`.
    pub fn sentinels_toml(&self) -> String {
        let list: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("\"{}\"", s.url()))
            .collect();
        format!("[{}]", list.join(", "))
    }

    /// The port every sentinel names as the master, if they agree.
    pub fn master_port(&self) -> Option<u16> {
        let mut ports = self.sentinels.iter().filter(|s| s.is_running()).map(|s| {
            let mut c = s
                .client()
                .get_connection_with_timeout(Duration::from_millis(500))
                .ok()?;
            let addr: Vec<String> = redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(MASTER_NAME)
                .query(&mut c)
                .ok()?;
            addr.get(1)?.parse::<u16>().ok()
        });
        let first = ports.next()??;
        ports.all(|p| p == Some(first)).then_some(first)
    }

    /// Index in `data` of the current master.
    pub fn master(&self) -> Option<usize> {
        let port = self.master_port()?;
        self.data.iter().position(|n| n.port == port)
    }

    /// Every sentinel agrees on a running master that says it is one, knows
    /// its replica and the two other sentinels; the replica's link is up.
    pub fn settled(&self) -> bool {
        let Some(m) = self.master() else {
            return false;
        };
        let master = &self.data[m];
        if !master.is_running()
            || master.info_field("replication", "role").as_deref() != Some("master")
        {
            return false;
        }
        let replicas_up = self.data.iter().enumerate().all(|(i, n)| {
            i == m
                || !n.is_running()
                || n.info_field("replication", "master_link_status").as_deref() == Some("up")
        });
        replicas_up
            && self.sentinels.iter().all(|s| {
                let Ok(mut c) = s
                    .client()
                    .get_connection_with_timeout(Duration::from_millis(500))
                else {
                    return false;
                };
                let info: Result<std::collections::HashMap<String, String>, _> =
                    redis::cmd("SENTINEL")
                        .arg("MASTER")
                        .arg(MASTER_NAME)
                        .query(&mut c);
                info.is_ok_and(|i| {
                    i.get("num-other-sentinels").map(String::as_str) == Some("2")
                        && i.get("flags").map(String::as_str) == Some("master")
                        && i.get("num-slaves")
                            .and_then(|n| n.parse::<usize>().ok())
                            .is_some_and(|n| {
                                n + 1 >= self.data.iter().filter(|d| d.is_running()).count()
                            })
                })
            })
    }
}

/// A unique key prefix per store opened in one test binary, so tests can
/// share one cluster or sentinel group.
pub fn unique_prefix(base: &str) -> String {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    format!(
        "{base}-{}",
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// A redis client for a local server, over TLS trusting only `tls`'s CA.
fn client_for(port: u16, tls: Option<&TestTls>) -> redis::Client {
    match tls {
        Some(t) => {
            let _ = rustls::crypto::ring::default_provider().install_default();
            redis::Client::build_with_tls(
                format!("rediss://127.0.0.1:{port}"),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(t.ca_pem()),
                },
            )
            .unwrap()
        }
        None => redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap(),
    }
}

// ---------------------------------------------------------------------- TLS

/// A private CA and a certificate for 127.0.0.1 it signed, made with the
/// openssl command line tool (P-256 keys, valid one day).
pub struct TestTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestTls {
    pub fn generate() -> Arc<TestTls> {
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| dir.path().join(name);
        let ext = p("server.ext");
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .unwrap();
        let ca_key = p("ca.key");
        let ca = p("ca.pem");
        let key = p("server.key");
        let csr = p("server.csr");
        let cert = p("server.pem");
        let s = |path: &Path| path.to_str().unwrap().to_owned();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut steps: Vec<Vec<String>> = Vec::new();
        let mut ca_req: Vec<String> = vec!["req".into(), "-x509".into()];
        ca_req.extend(ec.iter().map(|x| (*x).to_owned()));
        ca_req.extend([
            "-keyout".into(),
            s(&ca_key),
            "-out".into(),
            s(&ca),
            "-days".into(),
            "1".into(),
        ]);
        ca_req.extend(["-subj".into(), "/CN=gitbroker test CA".into()]);
        ca_req.extend(["-addext".into(), "basicConstraints=critical,CA:TRUE".into()]);
        ca_req.extend([
            "-addext".into(),
            "keyUsage=critical,keyCertSign,cRLSign".into(),
        ]);
        steps.push(ca_req);
        let mut srv_req: Vec<String> = vec!["req".into()];
        srv_req.extend(ec.iter().map(|x| (*x).to_owned()));
        srv_req.extend([
            "-keyout".into(),
            s(&key),
            "-out".into(),
            s(&csr),
            "-subj".into(),
            "/CN=127.0.0.1".into(),
        ]);
        steps.push(srv_req);
        steps.push(
            [
                "x509",
                "-req",
                "-in",
                &s(&csr),
                "-CA",
                &s(&ca),
                "-CAkey",
                &s(&ca_key),
                "-CAcreateserial",
                "-out",
                &s(&cert),
                "-days",
                "1",
                "-extfile",
                &s(&ext),
            ]
            .iter()
            .map(|x| (*x).to_owned())
            .collect(),
        );
        for args in steps {
            let out = Command::new("openssl")
                .args(&args)
                .stdin(Stdio::null())
                .output()
                .unwrap_or_else(|e| {
                    panic!("cannot run openssl ({e}); Debian: apt-get install openssl")
                });
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Arc::new(TestTls {
            ca,
            cert,
            key,
            _dir: dir,
        })
    }

    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(&self.ca).unwrap()
    }

    /// redis-server arguments: TLS for clients, replication and the cluster
    /// bus, with this certificate; client certificates not asked for.
    fn server_args(&self) -> Vec<String> {
        [
            "--tls-cert-file",
            self.cert.to_str().unwrap(),
            "--tls-key-file",
            self.key.to_str().unwrap(),
            "--tls-ca-cert-file",
            self.ca.to_str().unwrap(),
            "--tls-auth-clients",
            "no",
            "--tls-replication",
            "yes",
            "--tls-cluster",
            "yes",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    }

    /// The same for a sentinel's configuration file.
    fn sentinel_conf(&self) -> String {
        format!(
            "tls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\ntls-auth-clients no\ntls-replication yes\n",
            self.cert.display(),
            self.key.display(),
            self.ca.display()
        )
    }
}
