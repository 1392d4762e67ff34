#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use super::*;

const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes

fn base() -> String {
    format!(
        r#"
public_url = "https://broker.example.com"
[store]
backend = "embedded"
path = "/tmp/x.redb"
[encryption]
keys = [{{ id = "k1", key = "{KEY}" }}]
[oidc]
issuer = "https://idp.example.com"
client_id = "gitbroker"
client_secret = "s3cret"
[[accounts]]
id = "acme"
groups = ["acme-devs"]
[[oauth_apps]]
id = "gh"
provider = "github"
client_id = "cid"
client_secret = "csecret"
scopes = ["repo"]
[[runtimes]]
id = "rt1"
account = "acme"
git_host = "github.com"
oauth_app = "gh"
credential = "0123456789abcdef0123456789abcdef-rt1"
"#
    )
}

fn err(text: &str) -> String {
    Settings::from_toml_str(text)
        .expect_err("should fail")
        .to_string()
}

#[test]
fn valid_configuration_loads() {
    let s = Settings::from_toml_str(&base()).unwrap();
    assert_eq!(s.runtimes[0].oauth_app.as_deref(), Some("gh"));
    assert_eq!(s.active_key, "k1");
    assert!(s.secure_cookies);
    assert_eq!(s.oidc.groups_claim, "groups");
}

#[test]
fn unknown_key_is_named() {
    let e = err(&base().replace("[store]", "[store]\nbakend = \"x\""));
    assert!(e.contains("bakend"), "{e}");
    let e = err(&format!("colour = 1\n{}", base()));
    assert!(e.contains("colour"), "{e}");
}

#[test]
fn missing_encryption_key_refused() {
    let e = err(&base().replace(&format!("keys = [{{ id = \"k1\", key = \"{KEY}\" }}]"), ""));
    assert!(e.starts_with("encryption.keys:"), "{e}");
}

#[test]
fn short_encryption_key_refused() {
    let e = err(&base().replace(KEY, "c2hvcnQ="));
    assert!(
        e.contains("encryption.keys[0].key") && e.contains("32 bytes"),
        "{e}"
    );
}

#[test]
fn http_provider_url_needs_opt_in() {
    let text = base().replace(
        "provider = \"github\"",
        "provider = \"github\"\nbase_url = \"http://127.0.0.1:9\"",
    );
    let e = err(&text);
    assert!(e.starts_with("oauth_apps[0].base_url:"), "{e}");
    assert!(Settings::from_toml_str(&format!("allow_insecure_http = true\n{text}")).is_ok());
}

#[test]
fn runtime_with_unknown_app_or_account() {
    let e = err(&base().replace("oauth_app = \"gh\"", "oauth_app = \"nope\""));
    assert!(
        e.starts_with("runtimes[0].oauth_app:") && e.contains("nope"),
        "{e}"
    );
    let e = err(&base().replace("account = \"acme\"", "account = \"nope\""));
    assert!(e.starts_with("runtimes[0].account:"), "{e}");
}

#[test]
fn scopes_below_the_documents_refused() {
    let e = err(&base().replace("scopes = [\"repo\"]", "scopes = [\"public_repo\"]"));
    assert!(
        e.starts_with("oauth_apps[0].scopes:") && e.contains("missing: repo"),
        "{e}"
    );
}

#[test]
fn unknown_provider_kind_named() {
    let e = err(&base().replace("provider = \"github\"", "provider = \"gitee\""));
    assert!(e.contains("oauth_apps") && e.contains("gitee"), "{e}");
}

#[test]
fn secure_cookies_need_https() {
    let text = format!(
        "allow_insecure_http = true\n{}",
        base().replace("https://broker.example.com", "http://localhost:8080")
    );
    let e = err(&text);
    assert!(e.starts_with("secure_cookies:"), "{e}");
    assert!(Settings::from_toml_str(&format!("secure_cookies = false\n{text}")).is_ok());
}

#[test]
fn secret_from_missing_env_var_named() {
    let e = err(&base().replace(
        "client_secret = \"s3cret\"",
        "client_secret = { env = \"GITBROKER_TEST_SURELY_UNSET\" }",
    ));
    assert!(
        e.starts_with("oidc.client_secret:") && e.contains("GITBROKER_TEST_SURELY_UNSET"),
        "{e}"
    );
}

#[test]
fn secret_from_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    std::fs::write(&path, "from-file\n").unwrap();
    let text = base().replace(
        "client_secret = \"s3cret\"",
        &format!("client_secret = {{ file = \"{}\" }}", path.display()),
    );
    let s = Settings::from_toml_str(&text).unwrap();
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&s.oidc.client_secret),
        "from-file"
    );
}

#[test]
fn duplicate_ids_refused() {
    let e = err(&format!(
        "{}\n[[runtimes]]\nid = \"rt1\"\naccount = \"acme\"\ngit_host = \"github.com\"\ncredential_sha256 = \"{}\"\n",
        base(),
        "ab".repeat(32)
    ));
    assert!(
        e.starts_with("runtimes[1].id:") && e.contains("duplicate"),
        "{e}"
    );
}

#[test]
fn debug_hides_secrets() {
    let s = Settings::from_toml_str(&base()).unwrap();
    let d = format!("{s:?}");
    for secret in ["s3cret", "csecret", KEY] {
        assert!(!d.contains(secret), "{secret} leaked in Debug");
    }
}

#[test]
fn numeric_and_boolean_secrets_from_the_environment() {
    // GITBROKER_… values are parsed like TOML: an all-digit secret arrives as a number
    use figment::providers::{Format, Serialized, Toml};
    let figment = figment::Figment::new()
        .merge(Toml::string(&base()))
        .merge(Serialized::default("oidc.client_secret", 1234567890_i64))
        .merge(Serialized::default("oauth_apps", Vec::<u8>::new()))
        .merge(Serialized::default("runtimes", Vec::<u8>::new()));
    let s = Settings::from_figment(figment, None).unwrap();
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&s.oidc.client_secret),
        "1234567890"
    );
}

#[test]
fn issuer_kept_exactly_as_configured() {
    // a bare origin must not gain the `/` that `Url` would add
    let s = Settings::from_toml_str(&base()).unwrap();
    assert_eq!(s.oidc.issuer, "https://idp.example.com");
    let s = Settings::from_toml_str(&base().replace(
        "issuer = \"https://idp.example.com\"",
        "issuer = \"https://idp.example.com/realms/x/\"",
    ))
    .unwrap();
    assert_eq!(s.oidc.issuer, "https://idp.example.com/realms/x/");
    let e = err(&base().replace(
        "issuer = \"https://idp.example.com\"",
        "issuer = \"idp.example.com\"",
    ));
    assert!(e.starts_with("oidc.issuer:"), "{e}");
}

#[test]
fn server_defaults_and_errors_name_the_key() {
    let s = Settings::from_toml_str(&base()).unwrap();
    assert_eq!(s.server.header_read_timeout, Duration::from_secs(10));
    assert_eq!(s.server.max_connections, 1024);
    assert!(s.server.trusted_proxies.is_empty());
    assert_eq!(s.rate_limits, RateLimitSettings::default());
    let with = |server: &str| format!("{}\n[server]\n{server}\n", base());
    let s = Settings::from_toml_str(&with(
        "trusted_proxies = [\"10.0.0.0/8\", \"192.0.2.7\", \"::1\"]",
    ))
    .unwrap();
    assert_eq!(s.server.trusted_proxies.len(), 3);
    let e = err(&with("trusted_proxies = [\"10.0.0.0/8\", \"proxy.local\"]"));
    assert!(
        e.starts_with("server.trusted_proxies[1]:") && e.contains("proxy.local"),
        "{e}"
    );
    let e = err(&with("header_read_timeout_secs = 0"));
    assert!(e.starts_with("server.header_read_timeout_secs:"), "{e}");
    let e = err(&with("request_timeout_secs = 10"));
    assert!(
        e.starts_with("server.request_timeout_secs:") && e.contains("provider.timeout_secs"),
        "{e}"
    );
    let e = err(&with("max_connections = 0"));
    assert!(e.starts_with("server.max_connections:"), "{e}");
    let e = err(&with("keep_alive = true"));
    assert!(e.contains("keep_alive"), "{e}");
    let e = err(&format!("{}\n[rate_limit]\nsign_in_per_ip = -1\n", base()));
    assert!(e.contains("rate_limit.sign_in_per_ip"), "{e}");
    let s = Settings::from_toml_str(&format!("{}\n[rate_limit]\nsign_in_per_ip = 0\n", base()))
        .unwrap();
    assert_eq!(s.rate_limits.sign_in_per_ip, None);
}

#[test]
fn insecure_cookies_refused_with_https() {
    let e = err(&format!("secure_cookies = false\n{}", base()));
    assert!(
        e.starts_with("secure_cookies:") && e.contains("https"),
        "{e}"
    );
}

fn demo_base(public_url: &str, secure: bool) -> String {
    format!(
        "allow_insecure_http = true\nsecure_cookies = {secure}\n{}",
        base().replace("https://broker.example.com", public_url)
    )
}

#[test]
fn demo_mode_needs_its_explicit_switch() {
    let local = demo_base("http://localhost:8080", false);
    // a [demo] table (or one stray GITBROKER_DEMO__… variable) is not enough
    let s = Settings::from_toml_str(&format!(
        "{local}\n[demo]\nmock_provider_listen = \"127.0.0.1:8081\"\n"
    ))
    .unwrap();
    assert!(s.demo.is_none());
    let s = Settings::from_toml_str(&format!("{local}\n[demo]\nenabled = true\n")).unwrap();
    assert_eq!(
        s.demo.unwrap().mock_provider_listen,
        "127.0.0.1:8081".parse().unwrap()
    );
    let e = err(&format!(
        "{local}\n[demo]\nenabled = true\nmock_provider_listen = \"nowhere\"\n"
    ));
    assert!(e.starts_with("demo.mock_provider_listen:"), "{e}");
}

#[test]
fn demo_mode_refused_in_production_settings() {
    let e = err(&format!(
        "{}\n[demo]\nenabled = true\n",
        demo_base("http://localhost:8080", true).replace("secure_cookies = true\n", "")
    ));
    assert!(
        e.starts_with("secure_cookies:") || e.starts_with("demo.enabled:"),
        "{e}"
    );
    // secure cookies on https: refused because of demo mode
    let e = err(&format!(
        "{}\n[demo]\nenabled = true\n",
        demo_base("https://localhost:8443", true)
    ));
    assert!(
        e.starts_with("demo.enabled:") && e.contains("secure_cookies"),
        "{e}"
    );
    // an https production host: refused whatever the cookies
    let e = err(&format!(
        "{}\n[demo]\nenabled = true\n",
        demo_base("https://broker.example.com", false)
    ));
    assert!(
        e.starts_with("secure_cookies:") || e.starts_with("demo.enabled:"),
        "{e}"
    );
}

#[test]
fn demo_refused_for_https_non_loopback_host() {
    let url = Url::parse("https://broker.example.com").unwrap();
    assert!(!is_loopback_host(&url));
    for ok in [
        "http://localhost:8080",
        "https://127.0.0.1",
        "http://[::1]:1",
    ] {
        assert!(is_loopback_host(&Url::parse(ok).unwrap()), "{ok}");
    }
}

#[test]
fn listen_of_reads_only_the_listen_address() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gitbroker.toml");
    // the rest of the file is neither resolved nor validated
    std::fs::write(
        &path,
        "listen = \"0.0.0.0:9000\"\n[store]\nredis_url = { file = \"/nonexistent\" }\n",
    )
    .unwrap();
    assert_eq!(
        Settings::listen_of(&path).unwrap().to_string(),
        "0.0.0.0:9000"
    );
    std::fs::write(&path, "public_url = \"https://x\"\n").unwrap();
    assert_eq!(
        Settings::listen_of(&path).unwrap().to_string(),
        "127.0.0.1:8080",
        "the default"
    );
    std::fs::write(&path, "listen = 8080\n").unwrap();
    let e = Settings::listen_of(&path).unwrap_err().to_string();
    assert!(e.starts_with("listen:"), "{e}");
    let e = Settings::listen_of(&dir.path().join("missing.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not exist"), "{e}");
}

#[test]
fn audit_settings_are_validated_naming_the_key() {
    let s = Settings::from_toml_str(&base()).unwrap();
    assert_eq!(s.audit, AuditSettings::default());
    assert!(s.audit.enabled);
    assert_eq!(s.audit.retention, Duration::from_secs(90 * 86_400));
    let ok = Settings::from_toml_str(&format!(
        "{}\n[audit]\nretention_days = 7\nmax_entries = 5000\nbuffer = 64\n",
        base()
    ))
    .unwrap();
    assert_eq!(ok.audit.retention, Duration::from_secs(7 * 86_400));
    assert_eq!((ok.audit.max_entries, ok.audit.buffer), (5000, 64));
    for (line, key) in [
        ("retention_days = 0", "audit.retention_days"),
        ("max_entries = 1", "audit.max_entries"),
        ("buffer = 0", "audit.buffer"),
    ] {
        let e = err(&format!("{}\n[audit]\n{line}\n", base()));
        assert!(e.contains(key), "{line}: {e}");
    }
    let e = err(&format!("{}\n[audit]\nretention = 3\n", base()));
    assert!(e.contains("retention"), "{e}");
}

fn with_store(store: &str) -> String {
    base().replace(
        "backend = \"embedded\"\npath = \"/tmp/x.redb\"",
        &format!("backend = \"redis\"\n{store}"),
    )
}

fn redis_of(text: &str) -> crate::store::redis::RedisOptions {
    match Settings::from_toml_str(text).unwrap().store {
        StoreSettings::Redis(o) => *o,
        StoreSettings::Embedded { .. } => panic!("not redis"),
    }
}

#[test]
fn redis_standalone_is_the_default_mode() {
    let o = redis_of(&with_store("redis_url = \"redis://:pw@r.internal:6380/2\""));
    assert!(matches!(
        o.topology,
        crate::store::redis::RedisTopology::Standalone { .. }
    ));
    assert_eq!(o.wait_replicas, 0);
    assert_eq!(o.key_prefix, "gitbroker");
}

#[test]
fn redis_sentinel_settings_load() {
    let o = redis_of(&with_store(
        "redis_mode = \"sentinel\"\n\
         redis_sentinels = [\"rediss://s1.internal:26379\", \"rediss://[::1]:26380\"]\n\
         redis_master_name = \"mymaster\"\nredis_db = 3\nredis_username = \"gb\"\n\
         redis_password = \"data-pw\"\nredis_sentinel_password = \"sentinel-pw\"\n\
         redis_wait_replicas = 1\nredis_wait_timeout_ms = 250",
    ));
    let crate::store::redis::RedisTopology::Sentinel {
        sentinels,
        master_name,
        db,
    } = &o.topology
    else {
        panic!("not sentinel");
    };
    assert_eq!(master_name, "mymaster");
    assert_eq!(*db, 3);
    assert_eq!(sentinels.len(), 2);
    assert!(sentinels.iter().all(|n| n.tls));
    assert_eq!(
        (sentinels[1].host.as_str(), sentinels[1].port),
        ("::1", 26380)
    );
    assert_eq!(o.username.as_deref(), Some("gb"));
    assert_eq!(o.wait_replicas, 1);
    assert_eq!(o.wait_timeout, Duration::from_millis(250));
    // Debug output names the setup but never the passwords.
    let debug = format!("{o:?}");
    assert!(
        debug.contains("mymaster") && debug.contains("s1.internal"),
        "{debug}"
    );
    assert!(
        !debug.contains("data-pw") && !debug.contains("sentinel-pw"),
        "{debug}"
    );
}

#[test]
fn redis_cluster_nodes_default_to_port_6379() {
    let o = redis_of(&with_store(
        "redis_mode = \"cluster\"\nredis_nodes = [\"redis://n1:7000\", \"redis://n2\"]",
    ));
    let crate::store::redis::RedisTopology::Cluster { nodes } = &o.topology else {
        panic!("not cluster");
    };
    assert_eq!(
        nodes
            .iter()
            .map(|n| (n.host.as_str(), n.port))
            .collect::<Vec<_>>(),
        [("n1", 7000), ("n2", 6379)]
    );
}

#[test]
fn invalid_redis_settings_name_the_key() {
    let cases: &[(&str, &str)] = &[
        (
            "redis_mode = \"shards\"\nredis_url = \"redis://r\"",
            "store.redis_mode:",
        ),
        ("redis_mode = \"cluster\"", "store.redis_nodes:"),
        (
            "redis_mode = \"cluster\"\nredis_nodes = []",
            "store.redis_nodes:",
        ),
        (
            "redis_mode = \"cluster\"\nredis_nodes = [\"redis://n1\"]\nredis_url = \"redis://r\"",
            "store.redis_url:",
        ),
        (
            "redis_mode = \"cluster\"\nredis_nodes = [\"redis://n1\"]\nredis_db = 1",
            "store.redis_db:",
        ),
        (
            "redis_mode = \"cluster\"\nredis_nodes = [\"redis://n1\", \"rediss://n2\"]",
            "store.redis_nodes[1]:",
        ),
        (
            "redis_mode = \"cluster\"\nredis_nodes = [\"redis://n1/2\"]",
            "store.redis_nodes[0]:",
        ),
        (
            "redis_mode = \"cluster\"\nredis_nodes = [\"http://n1\"]",
            "store.redis_nodes[0]:",
        ),
        (
            "redis_mode = \"cluster\"\nredis_nodes = [\"redis://n1\"]\nredis_master_name = \"m\"",
            "store.redis_master_name:",
        ),
        (
            "redis_mode = \"cluster\"\nredis_nodes = [\"redis://n1\"]\nredis_sentinel_password = \"x\"",
            "store.redis_sentinel_password:",
        ),
        (
            "redis_mode = \"sentinel\"\nredis_master_name = \"m\"",
            "store.redis_sentinels:",
        ),
        (
            "redis_mode = \"sentinel\"\nredis_sentinels = [\"redis://s1:26379\"]",
            "store.redis_master_name:",
        ),
        (
            "redis_mode = \"sentinel\"\nredis_sentinels = [\"redis://s1:26379\"]\nredis_master_name = \"a b\"",
            "store.redis_master_name:",
        ),
        (
            "redis_mode = \"sentinel\"\nredis_sentinels = [\"redis://s1\"]\nredis_master_name = \"m\"\nredis_db = -1",
            "store.redis_db:",
        ),
        (
            "redis_nodes = [\"redis://n1\"]\nredis_url = \"redis://r\"",
            "store.redis_nodes:",
        ),
        (
            "redis_url = \"redis://r\"\nredis_password = \"pw\"",
            "store.redis_password:",
        ),
        ("redis_mode = \"standalone\"", "store.redis_url:"),
        ("redis_url = \"http://r\"", "store.redis_url:"),
        (
            "redis_url = \"redis://r\"\nkey_prefix = \"a{b}\"",
            "store.key_prefix:",
        ),
        (
            "redis_url = \"redis://r\"\nredis_wait_replicas = 17",
            "store.redis_wait_replicas:",
        ),
        (
            "redis_url = \"redis://r\"\nredis_wait_timeout_ms = 0",
            "store.redis_wait_timeout_ms:",
        ),
        (
            "redis_url = \"redis://r\"\nredis_ca_file = \"/nonexistent/ca.pem\"",
            "store.redis_ca_file:",
        ),
    ];
    for (store, key) in cases {
        let e = err(&with_store(store));
        assert!(e.starts_with(key), "{store}\n=> {e}");
    }
}

#[test]
fn node_addresses_with_credentials_are_refused_without_echoing_them() {
    let e = err(&with_store(
        "redis_mode = \"cluster\"\nredis_nodes = [\"redis://:hunter2@n1:7000\"]",
    ));
    assert!(e.starts_with("store.redis_nodes[0]:"), "{e}");
    assert!(
        e.contains("redis_password") && !e.contains("hunter2"),
        "{e}"
    );
    let e = err(&with_store(
        "redis_mode = \"sentinel\"\nredis_sentinels = [\"redis://u:hunter2@s1\"]\nredis_master_name = \"m\"",
    ));
    assert!(
        e.starts_with("store.redis_sentinels[0]:") && !e.contains("hunter2"),
        "{e}"
    );
}

#[test]
fn redis_ca_file_must_hold_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("ca.pem");
    std::fs::write(&not_pem, "just text").unwrap();
    let e = err(&with_store(&format!(
        "redis_url = \"rediss://r\"\nredis_ca_file = \"{}\"",
        not_pem.display()
    )));
    assert!(
        e.starts_with("store.redis_ca_file:") && e.contains("no PEM"),
        "{e}"
    );
}

#[test]
fn metrics_default_to_the_main_listener() {
    let s = Settings::from_toml_str(&base()).unwrap();
    assert_eq!(
        s.metrics,
        MetricsSettings {
            enabled: true,
            listen: None
        }
    );
    let s = Settings::from_toml_str(&format!(
        "{}\n[metrics]\nlisten = \"127.0.0.1:9090\"\n",
        base()
    ))
    .unwrap();
    assert_eq!(s.metrics.listen, Some("127.0.0.1:9090".parse().unwrap()));
}

#[test]
fn bad_metrics_settings_name_the_key() {
    let e = err(&format!(
        "{}\n[metrics]\nlisten = \"nine-thousand\"\n",
        base()
    ));
    assert!(e.starts_with("metrics.listen:"), "{e}");
    let e = err(&format!(
        "listen = \"0.0.0.0:8080\"\n{}\n[metrics]\nlisten = \"127.0.0.1:8080\"\n",
        base()
    ));
    assert!(
        e.starts_with("metrics.listen:") && e.contains("main listen"),
        "{e}"
    );
    let e = err(&format!(
        "{}\n[metrics]\nenabled = false\nlisten = \"127.0.0.1:9090\"\n",
        base()
    ));
    assert!(e.starts_with("metrics.listen:"), "{e}");
    let e = err(&format!("{}\n[metrics]\nport = 9090\n", base()));
    assert!(e.contains("port"), "{e}");
}

/// `base()` with its OAuth app turned into a GitHub App (no scopes).
fn github_app() -> String {
    base().replace(
        "scopes = [\"repo\"]",
        "kind = \"github_app\"\napp_slug = \"acme-gitbroker\"",
    )
}

#[test]
fn github_app_kind_loads_without_scopes() {
    let s = Settings::from_toml_str(&github_app().replace(
        "oauth_app = \"gh\"",
        "oauth_app = \"gh\"\nrepositories = [\"acme/api\", \"acme/web\"]",
    ))
    .unwrap();
    assert_eq!(s.oauth_apps[0].kind, crate::providers::AppKind::GithubApp);
    assert_eq!(s.oauth_apps[0].app_slug.as_deref(), Some("acme-gitbroker"));
    assert!(s.oauth_apps[0].scopes.is_empty());
    assert_eq!(s.runtimes[0].repositories, ["acme/api", "acme/web"]);
}

#[test]
fn github_app_mistakes_name_the_key() {
    let e = err(&github_app().replace("app_slug = \"acme-gitbroker\"", ""));
    assert!(
        e.contains("oauth_apps[0].app_slug: is required for a GitHub App"),
        "{e}"
    );
    let e = err(&github_app().replace(
        "kind = \"github_app\"",
        "kind = \"github_app\"\nscopes = [\"repo\"]",
    ));
    assert!(e.contains("oauth_apps[0].scopes: must be empty"), "{e}");
    let e = err(&base().replace(
        "scopes = [\"repo\"]",
        "scopes = [\"repo\"]\napp_slug = \"x\"",
    ));
    assert!(
        e.contains("oauth_apps[0].app_slug: is only for kind = \"github_app\""),
        "{e}"
    );
    let e = err(&base().replace("scopes = [\"repo\"]", ""));
    assert!(
        e.contains("oauth_apps[0].scopes: must list the scopes to request"),
        "{e}"
    );
    let e = err(&github_app().replace("provider = \"github\"", "provider = \"gitlab\""));
    assert!(
        e.contains("oauth_apps[0].kind: `github_app` is for provider github or github_enterprise"),
        "{e}"
    );
    let e = err(&github_app().replace("kind = \"github_app\"", "kind = \"github_apps\""));
    assert!(e.contains("github_apps"), "{e}");
}

#[test]
fn runtime_repositories_are_checked() {
    let with = |repos: &str, text: String| {
        text.replace(
            "oauth_app = \"gh\"",
            &format!("oauth_app = \"gh\"\nrepositories = {repos}"),
        )
    };
    let e = err(&with("[\"acme\"]", base()));
    assert!(
        e.contains("runtimes[0].repositories: `acme` is not a repository written owner/name"),
        "{e}"
    );
    // several owners: fine for an OAuth app, not for a GitHub App
    assert!(Settings::from_toml_str(&with("[\"acme/a\", \"other/b\"]", base())).is_ok());
    let e = err(&with("[\"acme/a\", \"other/b\"]", github_app()));
    assert!(e.contains("runtimes[0].repositories: a GitHub App user token is narrowed to the repositories of one owner"), "{e}");
}

#[test]
fn shipped_configurations_load() {
    let demo = Settings::from_toml_str(include_str!("../../config/demo.toml")).unwrap();
    assert!(
        demo.oauth_apps
            .iter()
            .any(|a| a.kind == crate::providers::AppKind::GithubApp)
    );
    Settings::from_toml_str(include_str!("../../config/gitbroker.example.toml")).unwrap();
}

#[test]
fn rotate_runtime_token_only_for_gitlab() {
    let rotating = base().replace(
        "credential = \"0123456789abcdef0123456789abcdef-rt1\"",
        "credential = \"0123456789abcdef0123456789abcdef-rt1\"\nrotate_runtime_token = true",
    );
    let e = err(&rotating);
    assert_eq!(
        e,
        "runtimes[0].rotate_runtime_token: only GitLab Git Runtime tokens can rotate themselves; this runtime's provider is `github`"
    );
    // a GitLab runtime without an OAuth app may
    let gitlab = rotating.replace("oauth_app = \"gh\"\n", "provider = \"gitlab\"\n");
    let s = Settings::from_toml_str(&gitlab).unwrap();
    assert!(s.runtimes[0].rotate_runtime_token);
    assert!(!Settings::from_toml_str(&base()).unwrap().runtimes[0].rotate_runtime_token);
}

#[test]
fn rotation_margin_and_lifetime() {
    let s = Settings::from_toml_str(&base()).unwrap();
    assert_eq!(
        s.lifecycle.runtime_token_rotate_margin,
        Duration::from_secs(7 * 86_400)
    );
    assert_eq!(s.lifecycle.rotated_runtime_token_days, 90);
    let with = |keys: &str| base().replace("[store]", &format!("[lifecycle]\n{keys}\n[store]"));
    let s = Settings::from_toml_str(&with(
        "runtime_token_rotate_days = 14\nrotated_runtime_token_days = 30",
    ))
    .unwrap();
    assert_eq!(
        s.lifecycle.runtime_token_rotate_margin,
        Duration::from_secs(14 * 86_400)
    );
    assert_eq!(s.lifecycle.rotated_runtime_token_days, 30);
    let e = err(&with("runtime_token_rotate_days = 0"));
    assert!(e.starts_with("lifecycle.runtime_token_rotate_days:"), "{e}");
    // the new token must start outside the margin
    let e = err(&with(
        "runtime_token_rotate_days = 30\nrotated_runtime_token_days = 30",
    ));
    assert_eq!(
        e,
        "lifecycle.rotated_runtime_token_days: must be between 31 and 365 days (and more than runtime_token_rotate_days)"
    );
    let e = err(&with("rotated_runtime_token_days = 400"));
    assert!(
        e.starts_with("lifecycle.rotated_runtime_token_days:"),
        "{e}"
    );
}
