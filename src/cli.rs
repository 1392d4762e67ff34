//! The command line.

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "gitbroker",
    version,
    about = "A Git token broker for GitOps runtimes"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the broker.
    Serve {
        /// The configuration file (TOML); `GITBROKER_…` variables override it.
        #[arg(long, short, env = "GITBROKER_CONFIG")]
        config: PathBuf,
    },
    /// Validate a configuration file and exit: 0 when valid, 1 with the
    /// exact problem otherwise.
    CheckConfig {
        #[arg(long, short, env = "GITBROKER_CONFIG")]
        config: PathBuf,
    },
    /// Run the mock Git provider and mock OIDC identity provider alone, for
    /// demos and other test suites.
    MockProvider {
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: SocketAddr,
        /// Register the OAuth apps and the OIDC client of this gitbroker
        /// configuration with the mock.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Serve Git over smart HTTP from the bare repositories in this
        /// directory (created with `POST /__mock/repos`); without it the
        /// Git routes answer 404.
        #[arg(long)]
        git_root: Option<PathBuf>,
    },
    /// Print a new random 32-byte key (base64) for `encryption.keys` or an
    /// admin API token.
    GenerateKey,
    /// Read a runtime credential on standard input and print its SHA-256
    /// (hex), for `credential_sha256` in the configuration.
    HashCredential,
    /// git's credential helper for a runtime: answers `get` with the
    /// runtime's Git Runtime token (or, with --user, that user's Git user
    /// token) for the runtime's Git host, asking the broker once per call.
    /// Configure it as `credential.helper = "!gitbroker credential --runtime ID"`
    /// (with GITBROKER_URL and the credential in GITBROKER_RUNTIME_CREDENTIAL
    /// or --credential-file).
    Credential {
        #[command(flatten)]
        remote: Remote,
        /// The runtime whose credential this is.
        #[arg(long, env = "GITBROKER_RUNTIME")]
        runtime: String,
        /// A file holding the runtime credential (else the environment
        /// variable GITBROKER_RUNTIME_CREDENTIAL).
        #[arg(long)]
        credential_file: Option<PathBuf>,
        /// A user's Git user token (the identity-provider subject) instead of
        /// the Git Runtime token.
        #[arg(long)]
        user: Option<String>,
        /// What git asks: get, store or erase.
        operation: String,
    },
    /// Probe a running broker: exit 0 when `/readyz` answers 200 (with
    /// --live, `/healthz`), 1 otherwise, with one line saying why. For the
    /// container image's health check. The broker is found at --url, else
    /// at the `listen` address of --config, else at http://127.0.0.1:8080.
    Healthcheck {
        /// The broker's URL.
        #[arg(long, env = "GITBROKER_URL")]
        url: Option<String>,
        /// A configuration file whose `listen` address to probe.
        #[arg(long, short, env = "GITBROKER_CONFIG")]
        config: Option<PathBuf>,
        /// Probe liveness (`/healthz`) instead of readiness.
        #[arg(long)]
        live: bool,
        #[arg(long, default_value_t = 3)]
        timeout_secs: u64,
    },
    /// Re-seal every sealed record (Git user tokens, Git Runtime tokens,
    /// queued revocations, OAuth app secrets) under the configuration's
    /// `active_key`, so that older keys can be retired. Safe while brokers
    /// serve (compare-and-swap; a record changed meanwhile is read again),
    /// resumable and idempotent: run it again until it re-seals 0. The
    /// embedded store can only be opened while its broker is stopped.
    RotateKeys {
        /// Open the store of this configuration (Redis, or the embedded
        /// file of a stopped broker).
        #[arg(long, short, env = "GITBROKER_CONFIG")]
        config: Option<PathBuf>,
        /// Instead, have the running broker at this URL re-seal its own
        /// store through its admin API (GITBROKER_ADMIN_TOKEN): the way for
        /// an embedded store while it serves. Takes precedence over --config.
        #[arg(long)]
        url: Option<String>,
    },
    /// Save a consistent copy of the embedded store to --out: from a running
    /// broker through its admin API (GITBROKER_ADMIN_TOKEN), or, with
    /// --config, from the store file of a stopped broker.
    Backup {
        #[command(flatten)]
        remote: Remote,
        /// Read the store file of this configuration directly (the broker
        /// must be stopped) instead of asking the broker at --url.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The backup file to create (refused if it exists).
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Replace the embedded store of a stopped broker with a backup. The
    /// file it replaces is kept as `<path>.before-restore`.
    Restore {
        #[arg(long, short, env = "GITBROKER_CONFIG")]
        config: PathBuf,
        /// The backup file (made by `gitbroker backup`).
        #[arg(long)]
        from: PathBuf,
        /// Replace an existing store file (without it, restore only into a
        /// path where no store exists yet).
        #[arg(long)]
        replace: bool,
    },
    /// Copy an embedded store (the configuration's, or a backup) into an
    /// empty Redis, TTLs and versions included; then switch the
    /// configuration to `backend = "redis"`. Stop the broker first (or copy
    /// from a backup and accept losing what changed after it).
    Migrate {
        #[arg(long, short, env = "GITBROKER_CONFIG")]
        config: PathBuf,
        /// The target backend.
        #[arg(long, value_enum)]
        to: MigrateTarget,
        /// Copy from this store file (e.g. a backup) instead of the
        /// configuration's `store.path`.
        #[arg(long)]
        from: Option<PathBuf>,
        /// A file holding the Redis URL (else GITBROKER_MIGRATE_REDIS_URL);
        /// never on the command line, where `ps` would show its password.
        #[arg(long)]
        redis_url_file: Option<PathBuf>,
        /// The `store.key_prefix` the Redis configuration will use.
        #[arg(long, default_value = "gitbroker")]
        key_prefix: String,
    },
    /// Manage runtimes through a running broker's admin API. The admin API
    /// token comes from GITBROKER_ADMIN_TOKEN; the Git Runtime token from
    /// standard input (never from the command line, which `ps` shows).
    Runtime {
        #[command(subcommand)]
        command: RuntimeCommand,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum MigrateTarget {
    Redis,
}

#[derive(Debug, clap::Args)]
pub struct Remote {
    /// The broker's URL.
    #[arg(long, env = "GITBROKER_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
}

#[derive(Debug, clap::Args)]
pub struct GitTokenArgs {
    /// Bitbucket: the username that goes with the token.
    #[arg(long)]
    pub username: Option<String>,
    /// Bitbucket Cloud API tokens: the Atlassian account email.
    #[arg(long)]
    pub email: Option<String>,
}

// Parsed once per process from the command line: the size of a variant
// costs nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum RuntimeCommand {
    /// Register a runtime with its mandatory Git Runtime token (read from
    /// standard input), or with --github-app, whose installation tokens
    /// serve as its Git Runtime token (nothing read). Prints the runtime
    /// credential, shown only once.
    Register {
        #[command(flatten)]
        remote: Remote,
        #[arg(long)]
        id: String,
        #[arg(long)]
        account: String,
        #[arg(long)]
        git_host: String,
        #[arg(long)]
        oauth_app: Option<String>,
        /// Provider kind (github, github_enterprise, gitlab, …); defaults to the OAuth app's.
        #[arg(long)]
        provider: Option<String>,
        #[arg(long)]
        base_url: Option<String>,
        /// A configured GitHub App (`[[github_apps]]` name): mint the Git
        /// Runtime token from its installation instead of reading one.
        #[arg(long)]
        github_app: Option<String>,
        /// The installation's id (with --github-app).
        #[arg(long, requires = "github_app")]
        installation_id: Option<u64>,
        /// The login the App is installed on, to find the installation (with --github-app).
        #[arg(long, requires = "github_app")]
        owner: Option<String>,
        /// `owner/name` to narrow its tokens to; repeat for several.
        #[arg(long = "repository")]
        repositories: Vec<String>,
        /// GitLab only: gitbroker rotates the Git Runtime token before it expires.
        #[arg(long)]
        rotate_runtime_token: bool,
        #[command(flatten)]
        token: GitTokenArgs,
    },
    /// Replace a runtime's Git Runtime token (read from standard input).
    RotateToken {
        #[command(flatten)]
        remote: Remote,
        #[arg(long)]
        id: String,
        #[command(flatten)]
        token: GitTokenArgs,
    },
    /// Show a runtime's Git Runtime token status (never its value).
    TokenStatus {
        #[command(flatten)]
        remote: Remote,
        #[arg(long)]
        id: String,
    },
}
