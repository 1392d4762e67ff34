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
    },
    /// Print a new random 32-byte key (base64) for `encryption.keys` or an
    /// admin API token.
    GenerateKey,
    /// Read a runtime credential on standard input and print its SHA-256
    /// (hex), for `credential_sha256` in the configuration.
    HashCredential,
}
