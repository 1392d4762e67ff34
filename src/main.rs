//! The `gitbroker` binary: parses the command line, loads configuration,
//! and serves. Everything else lives in the library.

mod cli;
mod credential_cli;
mod ops_cli;
mod runtime_cli;

use clap::Parser;
use cli::{Cli, Command};
use gitbroker::clock::SystemClock;
use gitbroker::config::{LogFormat, Settings};
use gitbroker::mock::{
    MockConfig, MockGithubApp, MockIdpClient, MockInstallation, MockOAuthApp, MockProvider,
};
use secrecy::ExposeSecret;
use std::process::ExitCode;
use std::sync::Arc;
use tracing_subscriber::EnvFilter;

/// Installs the log subscriber; the guard, kept until exit, writes what is
/// still buffered (`gitbroker::log_writer`: off the request, never lossy).
fn init_logging(format: LogFormat, level: &str) -> gitbroker::log_writer::Guard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let (writer, guard) =
        gitbroker::log_writer::lossless(std::io::stderr(), gitbroker::log_writer::LIMIT);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        // the current span (`span`) only: the list repeated it, one
        // request span deep, and cost a tenth of a token fetch's CPU
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_span_list(false)
            .init(),
        LogFormat::Pretty => builder.compact().init(),
    }
    guard
}

fn load(path: &std::path::Path) -> Result<Settings, ExitCode> {
    Settings::load(path).map_err(|e| {
        eprintln!(
            "gitbroker: invalid configuration in {}: {e}",
            path.display()
        );
        ExitCode::from(1)
    })
}

const DEMO_WARNING: &str = "DEMO MODE (demo.enabled = true): mock Git providers and a mock identity provider that signs anyone in run in this process; never use this configuration for real users or tokens";

/// Registers the configuration's OAuth apps and OIDC client with the mock,
/// so that the demo's client ids, secrets and callbacks agree on both sides.
fn mock_config_for(settings: &Settings) -> MockConfig {
    let mut config = MockConfig::demo();
    for app in &settings.oauth_apps {
        let callback = settings
            .public_url
            .join(&format!("/oauth/callback/{}", app.id))
            .map(|u| u.to_string())
            .unwrap_or_default();
        config.oauth_apps.push(MockOAuthApp {
            name: app.name.clone(),
            client_id: app.client_id.clone(),
            client_secret: app.client_secret.expose_secret().to_owned(),
            callback_url: callback,
        });
    }
    config.idp_clients.push(MockIdpClient {
        client_id: settings.oidc.client_id.clone(),
        client_secret: settings.oidc.client_secret.expose_secret().to_owned(),
        redirect_uris: settings
            .public_url
            .join("/auth/callback")
            .map(|u| vec![u.to_string()])
            .unwrap_or_default(),
    });
    config
}

/// Registers both kinds of the configuration's GitHub Apps in the mock's
/// one book: the OAuth apps of kind `github_app` (client id and slug),
/// each installed on the organization `acme`, whose members are the acme
/// developers (not carol: she sees the install link); and the
/// `[[github_apps]]` entries (App id and public key), with one
/// installation per GitHub App runtime: on its `owner` (or `acme`), with
/// the runtime-token permissions and its repositories.
fn mock_github_apps(settings: &Settings, mock: &MockProvider) {
    for app in &settings.oauth_apps {
        let (gitbroker::providers::AppKind::GithubApp, Some(slug)) = (app.kind, &app.app_slug)
        else {
            continue;
        };
        let registered = mock.add_github_app(MockGithubApp {
            client_id: Some(app.client_id.clone()),
            slug: Some(slug.clone()),
            ..MockGithubApp::default()
        });
        let Ok(app_id) = registered else {
            continue;
        };
        let installed = mock.installations().len() as u64;
        mock.add_installation(MockInstallation {
            id: 4242 + installed,
            app_id,
            account: "acme".into(),
            repositories: vec!["acme/app".into(), "acme/infra".into()],
            members: vec!["alice".into(), "bob".into(), "dave".into()],
            ..MockInstallation::default()
        });
    }
    for app in &settings.github_apps {
        let (Ok(id), Ok(public)) = (app.app_id.parse::<u64>(), app.key.public_pem()) else {
            continue;
        };
        let registered = mock.add_github_app(MockGithubApp {
            app_id: id,
            public_key_pem: Some(public),
            ..MockGithubApp::default()
        });
        if let Err(e) = registered {
            tracing::warn!(app = %app.name, error = %e, "mock: GitHub App not registered");
            continue;
        }
        for rt in &settings.runtimes {
            let Some(ga) = rt.github_app.as_ref().filter(|g| g.app == app.name) else {
                continue;
            };
            let installation = mock.add_installation(MockInstallation {
                id: ga.installation_id.unwrap_or(0),
                app_id: id,
                account: ga.owner.clone().unwrap_or_else(|| "acme".into()),
                permissions: gitbroker::providers::github_app::RUNTIME_PERMISSIONS
                    .iter()
                    .map(|(name, level, _)| ((*name).to_owned(), (*level).to_owned()))
                    .collect(),
                repositories: rt.repositories.clone(),
                ..MockInstallation::default()
            });
            tracing::info!(app = %app.name, runtime = %rt.id, installation, "mock: GitHub App installed");
        }
    }
}

async fn serve(path: &std::path::Path) -> ExitCode {
    let settings = match load(path) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let _log = init_logging(settings.log_format, &settings.log_level);
    if let Some(demo) = &settings.demo {
        // the very first line: nobody should run this by mistake
        tracing::warn!(
            mock_provider_listen = %demo.mock_provider_listen,
            "{DEMO_WARNING}"
        );
    }
    let mut _mock = None;
    if let Some(demo) = &settings.demo {
        match MockProvider::start(mock_config_for(&settings), demo.mock_provider_listen).await {
            Ok(running) => {
                mock_github_apps(&settings, &running.provider);
                tracing::info!(url = %running.base_url, "demo: mock Git provider and identity provider running");
                _mock = Some(running);
            }
            Err(e) => {
                eprintln!(
                    "gitbroker: cannot start the demo mock provider on {}: {e}",
                    demo.mock_provider_listen
                );
                return ExitCode::from(1);
            }
        }
    }
    let clock = Arc::new(SystemClock);
    let store = match gitbroker::app::open_store(&settings, clock.clone()).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("gitbroker: cannot open the store: {e}");
            return ExitCode::from(1);
        }
    };
    let listen = settings.listen;
    let metrics_listen = settings.metrics.listen;
    let public_url = settings.public_url.clone();
    let server = settings.server.clone();
    let state = match gitbroker::app::build(settings, store, clock).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("gitbroker: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("gitbroker: cannot listen on {listen}: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(addr) = metrics_listen {
        let metrics_listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("gitbroker: cannot listen on {addr} (metrics.listen): {e}");
                return ExitCode::from(1);
            }
        };
        let metrics_app = gitbroker::metrics::router(state.metrics.clone());
        let metrics_server = server.clone();
        tokio::spawn(async move {
            if let Err(e) = gitbroker::web::serve(
                metrics_listener,
                metrics_app,
                &metrics_server,
                shutdown_signal(),
            )
            .await
            {
                tracing::error!(error = %e, "metrics listener failed");
            }
        });
        tracing::info!(listen = %addr, "metrics served on their own listener");
    }
    tracing::info!(%listen, %public_url, "gitbroker serving");
    let app = gitbroker::router(state.clone());
    let served = gitbroker::web::serve(listener, app, &server, shutdown_signal()).await;
    // what the last requests recorded reaches the audit log before exit
    if let Some(audit) = &state.audit
        && tokio::time::timeout(server.shutdown_grace, audit.flush())
            .await
            .is_err()
    {
        tracing::error!("audit log: not every buffered entry could be written before exit");
    }
    if let Err(e) = served {
        eprintln!("gitbroker: server error: {e}");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutdown signal received");
}

async fn mock_provider(
    listen: std::net::SocketAddr,
    config: Option<&std::path::Path>,
    git_root: Option<std::path::PathBuf>,
) -> ExitCode {
    let _log = init_logging(LogFormat::Pretty, "info");
    let settings = match config {
        Some(path) => match load(path) {
            Ok(settings) => Some(settings),
            Err(code) => return code,
        },
        None => None,
    };
    let mock_config = settings
        .as_ref()
        .map_or_else(MockConfig::demo, mock_config_for);
    let mock_config = MockConfig {
        git_root,
        ..mock_config
    };
    match MockProvider::start(mock_config, listen).await {
        Ok(running) => {
            if let Some(settings) = &settings {
                mock_github_apps(settings, &running.provider);
            }
            println!("mock provider listening on {}", running.base_url);
            shutdown_signal().await;
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gitbroker: cannot start the mock provider on {listen}: {e}");
            ExitCode::from(1)
        }
    }
}

/// Validates the file, then asks the identity provider (when it can be
/// reached) whether it publishes exactly the configured issuer.
async fn check_config(path: &std::path::Path) -> ExitCode {
    use gitbroker::auth::oidc::{IssuerCheck, check_issuer};
    let s = match load(path) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let http =
        match gitbroker::providers::http_client(s.provider_connect_timeout, s.provider_timeout) {
            Ok(h) => h,
            Err(e) => {
                eprintln!("gitbroker: cannot build the HTTP client: {e}");
                return ExitCode::from(1);
            }
        };
    let issuer = s.oidc.issuer.as_str();
    let fail = |message: String| {
        eprintln!(
            "gitbroker: invalid configuration in {}: oidc.issuer: {message}",
            path.display()
        );
        ExitCode::from(1)
    };
    let idp_line = match check_issuer(issuer, http.reqwest()).await {
        IssuerCheck::Matches => "identity provider: publishes exactly this issuer".to_owned(),
        IssuerCheck::DiffersInForm { published } => {
            return fail(format!(
                "the identity provider publishes its issuer as `{published}`, not `{issuer}`; \
                 sign-in compares them character for character (OpenID Connect Discovery §4.3), \
                 so set oidc.issuer = \"{published}\""
            ));
        }
        IssuerCheck::Differs { published } => {
            return fail(format!(
                "the discovery document of `{issuer}` publishes another issuer, `{published}`"
            ));
        }
        IssuerCheck::Broken(why) => return fail(why),
        IssuerCheck::Unreachable(why) => format!(
            "identity provider: could not be reached to check oidc.issuer ({why}); not checked"
        ),
    };
    if let Some(demo) = &s.demo {
        println!("{DEMO_WARNING} (mock on {})", demo.mock_provider_listen);
    }
    println!(
        "configuration OK: {} accounts, {} OAuth apps, {} runtimes, store: {}",
        s.accounts.len(),
        s.oauth_apps.len(),
        s.runtimes.len(),
        match s.store {
            gitbroker::config::StoreSettings::Embedded { .. } => "embedded",
            gitbroker::config::StoreSettings::Redis(o) => match o.topology {
                gitbroker::store::redis::RedisTopology::Standalone { .. } => "redis",
                gitbroker::store::redis::RedisTopology::Sentinel { .. } => "redis (sentinel)",
                gitbroker::store::redis::RedisTopology::Cluster { .. } => "redis (cluster)",
            },
        }
    );
    println!("{idp_line}");
    ExitCode::SUCCESS
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => serve(&config).await,
        Command::CheckConfig { config } => check_config(&config).await,
        Command::MockProvider {
            listen,
            config,
            git_root,
        } => mock_provider(listen, config.as_deref(), git_root).await,
        Command::Runtime { command } => runtime_cli::run(command).await,
        Command::Healthcheck {
            url,
            config,
            live,
            timeout_secs,
        } => ops_cli::healthcheck(url, config.as_deref(), live, timeout_secs).await,
        Command::RotateKeys { config, url } => match (url, config) {
            (Some(url), _) => ops_cli::rotate_keys_remote(&url).await,
            (None, Some(config)) => ops_cli::rotate_keys(&config).await,
            (None, None) => {
                eprintln!(
                    "gitbroker: give --config (or GITBROKER_CONFIG), or --url of a running broker"
                );
                ExitCode::from(1)
            }
        },
        Command::Backup {
            remote,
            config,
            out,
        } => ops_cli::backup(&remote, config.as_deref(), &out).await,
        Command::Restore {
            config,
            from,
            replace,
        } => ops_cli::restore(&config, &from, replace).await,
        Command::Migrate {
            config,
            to: cli::MigrateTarget::Redis,
            from,
            redis_url_file,
            key_prefix,
        } => {
            ops_cli::migrate(
                &config,
                from.as_deref(),
                redis_url_file.as_deref(),
                &key_prefix,
            )
            .await
        }
        Command::Credential {
            remote,
            runtime,
            credential_file,
            user,
            operation,
        } => {
            credential_cli::run(
                &remote.url,
                &runtime,
                credential_file.as_deref(),
                user.as_deref(),
                &operation,
            )
            .await
        }
        Command::GenerateKey => {
            println!("{}", gitbroker::crypto::generate_key());
            ExitCode::SUCCESS
        }
        Command::HashCredential => {
            let mut line = String::new();
            if std::io::stdin().read_line(&mut line).is_err() || line.trim().is_empty() {
                eprintln!("gitbroker: give the credential on standard input");
                return ExitCode::from(1);
            }
            println!("{}", gitbroker::crypto::sha256_hex(line.trim().as_bytes()));
            ExitCode::SUCCESS
        }
    }
}
