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
