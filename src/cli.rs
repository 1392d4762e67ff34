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
    /// Manage runtimes through a running broker's admin API. The admin API
    /// token comes from GITBROKER_ADMIN_TOKEN; the Git Runtime token from
    /// standard input (never from the command line, which `ps` shows).
    Runtime {
        #[command(subcommand)]
        command: RuntimeCommand,
    },
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

#[derive(Debug, Subcommand)]
pub enum RuntimeCommand {
    /// Register a runtime with its mandatory Git Runtime token (read from
    /// standard input). Prints the runtime credential, shown only once.
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
