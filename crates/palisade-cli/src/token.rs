//! `palisade token mint`: a signed JWT for development, verifiable by a
//! `JwtVerifier` configured with the same issuer, audience and key.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, Subcommand};
use palisade_auth::crypto::CryptoBackend;
use palisade_auth::issue::{SigningKey, TokenIssuer};
use palisade_auth::key::Algorithm;

use crate::duration;
use crate::failure::Failure;
use crate::output;
use crate::secret;

/// Every algorithm a token can be signed with.
const ALGORITHMS: [(&str, Algorithm); 13] = [
    ("HS256", Algorithm::HS256),
    ("HS384", Algorithm::HS384),
    ("HS512", Algorithm::HS512),
    ("ES256", Algorithm::ES256),
    ("ES384", Algorithm::ES384),
    ("RS256", Algorithm::RS256),
    ("RS384", Algorithm::RS384),
    ("RS512", Algorithm::RS512),
    ("PS256", Algorithm::PS256),
    ("PS384", Algorithm::PS384),
    ("PS512", Algorithm::PS512),
    ("EdDSA", Algorithm::EdDSA),
    ("Ed25519", Algorithm::EdDSA),
];

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Mint a signed JWT (an RFC 9068 access token) for development.
    ///
    /// The token goes to stdout. Sign with an HMAC secret from an
    /// environment variable (--secret-env) or a private key in PEM
    /// (--key-file); the key is never printed.
    Mint(MintArgs),
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("key").required(true).args(["key_file", "secret_env"])))]
pub(crate) struct MintArgs {
    /// The issuer (`iss`).
    #[arg(long)]
    issuer: String,
    /// The audience (`aud`); repeat for several.
    #[arg(long = "audience", value_name = "AUDIENCE", required = true)]
    audiences: Vec<String>,
    /// The subject (`sub`).
    #[arg(long)]
    subject: String,
    /// A role (`roles` claim); repeat for several.
    #[arg(long = "role", value_name = "ROLE")]
    roles: Vec<String>,
    /// A scope (`scope` claim, space-delimited); repeat for several.
    #[arg(long = "scope", value_name = "SCOPE")]
    scopes: Vec<String>,
    /// The tenant (`tenant_id` claim).
    #[arg(long)]
    tenant: Option<String>,
    /// The token's lifetime (30s, 15m, 12h).
    #[arg(long, value_name = "DURATION", default_value = "15m", value_parser = duration::parse)]
    ttl: Duration,
    /// The signing algorithm: HS256, HS384, HS512, ES256, ES384, RS256,
    /// RS384, RS512, PS256, PS384, PS512 or EdDSA. Default HS256 with
    /// --secret-env; required with --key-file.
    #[arg(long, value_name = "ALG", value_parser = parse_algorithm)]
    alg: Option<Algorithm>,
    /// A private key in PEM (PKCS#8, or PKCS#1 for RSA) for RS*, PS*, ES*
    /// or EdDSA.
    #[arg(long, value_name = "PRIVATE.pem")]
    key_file: Option<PathBuf>,
    /// The environment variable holding the HMAC secret for HS* (at least
    /// 32 bytes for HS256).
    #[arg(long, value_name = "VAR")]
    secret_env: Option<String>,
    /// The key id (`kid` header); random by default.
    #[arg(long)]
    kid: Option<String>,
}

fn parse_algorithm(text: &str) -> Result<Algorithm, String> {
    ALGORITHMS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(text))
        .map(|&(_, algorithm)| algorithm)
        .ok_or_else(|| {
            "expected one of HS256, HS384, HS512, ES256, ES384, RS256, RS384, RS512, PS256, PS384, PS512, EdDSA"
                .to_owned()
        })
}

fn is_hmac(algorithm: Algorithm) -> bool {
    matches!(
        algorithm,
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
    )
}

/// Runs a `token` command.
pub(crate) fn run(command: TokenCommand) -> Result<(), Failure> {
    match command {
        TokenCommand::Mint(args) => mint(args),
    }
}

fn signing_key(args: &MintArgs) -> Result<SigningKey, Failure> {
    match (&args.secret_env, &args.key_file) {
        (Some(name), None) => {
            let algorithm = args.alg.unwrap_or(Algorithm::HS256);
            if !is_hmac(algorithm) {
                return Err(Failure::usage(format!(
                    "--secret-env signs with HS256, HS384 or HS512; {algorithm:?} needs a private key (--key-file)"
                )));
            }
            let secret = secret::from_env("--secret-env", name)?;
            SigningKey::hmac(algorithm, &secret)
                .map_err(|error| Failure::usage(format!("--secret-env: {error}")))
        }
        (None, Some(path)) => {
            let algorithm = args.alg.ok_or_else(|| {
                Failure::usage("--key-file needs --alg, matching the key: RS256, PS256, ES256, ES384, EdDSA...")
            })?;
            if is_hmac(algorithm) {
                return Err(Failure::usage(format!(
                    "{algorithm:?} signs with a shared secret: give --secret-env, not --key-file"
                )));
            }
            let pem = std::fs::read(path).map_err(|error| {
                Failure::new(format!("cannot read {}: {error}", path.display()))
            })?;
            SigningKey::from_pem(algorithm, &pem).map_err(|error| {
                Failure::usage(format!(
                    "{} is not a usable {algorithm:?} private key ({error})",
                    path.display()
                ))
            })
        }
        // clap's argument group makes these unreachable; say so plainly
        // anyway rather than panic.
        _ => Err(Failure::usage(
            "give exactly one of --key-file and --secret-env",
        )),
    }
}

fn mint(args: MintArgs) -> Result<(), Failure> {
    for (flag, value) in [("--issuer", &args.issuer), ("--subject", &args.subject)] {
        if value.trim().is_empty() {
            return Err(Failure::usage(format!("{flag} must not be empty")));
        }
    }
    if args
        .audiences
        .iter()
        .any(|audience| audience.trim().is_empty())
    {
        return Err(Failure::usage("--audience must not be empty"));
    }
    if args
        .scopes
        .iter()
        .any(|scope| scope.is_empty() || scope.contains(char::is_whitespace))
    {
        return Err(Failure::usage(
            "--scope takes one scope, without spaces; repeat it for several",
        ));
    }
    if args.ttl.is_zero() {
        return Err(Failure::usage("--ttl must be longer than 0s"));
    }
    CryptoBackend::install_preferred()?;

    let mut key = signing_key(&args)?;
    if let Some(kid) = &args.kid {
        if kid.is_empty() {
            return Err(Failure::usage("--kid must not be empty"));
        }
        key = key.with_kid(kid.as_str());
    }
    let algorithm = key.algorithm();
    let kid = key.kid().to_owned();
    let mut builder = TokenIssuer::builder(args.issuer.clone())
        .signing_key(key)
        .ttl(args.ttl);
    for audience in &args.audiences {
        builder = builder.audience(audience.clone());
    }
    let issuer = builder
        .build()
        .map_err(|error| Failure::usage(error.to_string()))?;

    let mut token = issuer.mint(args.subject.clone()).ttl(args.ttl);
    if !args.roles.is_empty() {
        token = token.roles(args.roles.iter().cloned());
    }
    if !args.scopes.is_empty() {
        token = token.scopes(args.scopes.iter().cloned());
    }
    if let Some(tenant) = &args.tenant {
        token = token.tenant(tenant.clone());
    }
    let issued = token.sign()?;
    output::line(&issued.token)?;
    output::note(&format!(
        "A development token for {:?}: {algorithm:?}, kid {kid:?}, valid for {} (until {}).",
        args.subject,
        duration::display(args.ttl),
        duration::unix_timestamp(issued.expires_at),
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_names_parse_case_insensitively_and_none_is_refused() {
        assert_eq!(parse_algorithm("RS256"), Ok(Algorithm::RS256));
        assert_eq!(parse_algorithm("eddsa"), Ok(Algorithm::EdDSA));
        assert_eq!(parse_algorithm("hs512"), Ok(Algorithm::HS512));
        assert!(parse_algorithm("none").unwrap_err().contains("HS256"));
        assert!(parse_algorithm("").is_err());
    }
}
