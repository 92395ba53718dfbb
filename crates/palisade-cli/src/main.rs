//! `palisade`: the operator's side of Palisade.
//!
//! - `palisade keys new | hash | rotate | revoke`: API keys for
//!   `palisade_auth::api_key`. A key is printed once, on stdout; only its
//!   hash is stored.
//! - `palisade token mint`: a signed JWT for development.
//! - `palisade certs dev`: a development CA, a server certificate and a
//!   client certificate carrying a SPIFFE id, for mTLS on a laptop.
//!
//! Secrets never come from a flag's value (shell histories and process
//! lists keep those): the pepper and HMAC secrets are read from the
//! environment variable a flag names, keys to hash from stdin.
//!
//! Exit codes: 0 on success, 1 when a command fails, 2 for bad usage
//! (unknown flags, bad values, a malformed key).

#![forbid(unsafe_code)]

mod certs;
mod duration;
mod failure;
mod keys;
mod output;
mod secret;
mod token;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::failure::Failure;

/// Operator tools for Palisade: API keys, development tokens and
/// development certificates.
#[derive(Debug, Parser)]
#[command(name = "palisade", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Issue, hash, rotate and revoke API keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Mint JWTs for development.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Make certificates for development.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Keys(command) => keys::run(command),
        Command::Token(command) => token::run(command),
        Command::Certs(command) => certs::run(command),
    }
}

fn main() -> ExitCode {
    // clap prints its own usage errors and exits with 2.
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            output::error(&failure);
            failure.exit_code()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
