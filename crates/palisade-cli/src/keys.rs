//! `palisade keys`: API keys for `palisade_auth::api_key`.
//!
//! A key is printed once, alone on stdout, so `KEY=$(palisade keys new ...)`
//! captures exactly the key. Everything else (notes, the record to store)
//! goes to stderr; with no `--store`, that stderr is TOML (notes are
//! comments), ready to append to a key file, and holds no secret.

use std::io::{BufRead, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use palisade_auth::api_key::{
    ApiKeyRecord, ApiKeyStore, ApiKeys, FileApiKeyStore, IssuedKey, MemoryApiKeyStore, NewApiKey,
};

use crate::duration;
use crate::failure::Failure;
use crate::output;
use crate::secret;

/// Characters after the prefix: `_`, 22 random, 6 checksum.
const KEY_TAIL: usize = 1 + 22 + 6;

/// Said on stderr whenever a key is printed.
const SHOWN_ONCE: &str = "The API key is on stdout and is shown only this once: give it to its owner now. It is stored nowhere; only its hash is kept.";

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Issue a new API key: the key is printed once, only its hash is kept.
    ///
    /// The key goes to stdout, alone. With --store, its record (the hash
    /// and what the key grants) is added to that TOML or JSON key file;
    /// without, the record is printed on stderr as TOML to add to the
    /// server's key store.
    New(NewArgs),
    /// Print the stored hash of a key read from stdin.
    ///
    /// The key is read from stdin (never an argument, which shell histories
    /// keep). Its shape and checksum are checked first: a malformed key is
    /// refused with exit code 2.
    Hash(HashArgs),
    /// Replace a key: a new key with the same grants; the old one keeps
    /// working for --overlap, then expires.
    Rotate(RotateArgs),
    /// Revoke a key at once.
    Revoke(RevokeArgs),
}

/// How keys are hashed: the pepper, if any.
#[derive(Debug, Args)]
pub(crate) struct PepperArgs {
    /// The environment variable holding the server's pepper (HMAC-SHA256,
    /// at least 32 bytes); without it, keys are hashed with plain SHA-256.
    /// Use the server's pepper, or its keys will not match.
    #[arg(long, value_name = "VAR")]
    pepper_env: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct NewArgs {
    /// The key prefix, naming issuer and environment (`pal_live`): 1 to 32
    /// letters, digits and `_`, starting with a letter.
    #[arg(long)]
    prefix: String,
    /// The subject the key acts as.
    #[arg(long)]
    owner: String,
    /// A role the key grants (repeat for several).
    #[arg(long = "role", value_name = "ROLE")]
    roles: Vec<String>,
    /// A scope the key grants (repeat for several).
    #[arg(long = "scope", value_name = "SCOPE")]
    scopes: Vec<String>,
    /// The tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// The rate-limit tier (`free`, `pro`...).
    #[arg(long)]
    tier: Option<String>,
    /// Expire the key after this long (30s, 15m, 12h, 30d, 1h30m).
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    expires_in: Option<Duration>,
    #[command(flatten)]
    pepper: PepperArgs,
    /// Add the record to this key file (`.toml` or `.json`; created if
    /// missing).
    #[arg(long, value_name = "FILE")]
    store: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct HashArgs {
    /// The key prefix; by default read from the key itself.
    #[arg(long)]
    prefix: Option<String>,
    #[command(flatten)]
    pepper: PepperArgs,
}

#[derive(Debug, Args)]
pub(crate) struct RotateArgs {
    /// The key file (`.toml` or `.json`).
    #[arg(long, value_name = "FILE")]
    store: PathBuf,
    /// The id of the key to replace (`key_...`).
    #[arg(long)]
    id: String,
    /// How long the old key keeps working while clients switch (7d, 12h,
    /// 0s to end it now).
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    overlap: Duration,
    /// The prefix of the new key; by default the old key's.
    #[arg(long)]
    prefix: Option<String>,
    #[command(flatten)]
    pepper: PepperArgs,
}

#[derive(Debug, Args)]
pub(crate) struct RevokeArgs {
    /// The key file (`.toml` or `.json`).
    #[arg(long, value_name = "FILE")]
    store: PathBuf,
    /// The id of the key to revoke (`key_...`).
    #[arg(long)]
    id: String,
}

/// Runs a `keys` command.
pub(crate) fn run(command: KeysCommand) -> Result<(), Failure> {
    match command {
        KeysCommand::New(args) => new(args),
        KeysCommand::Hash(args) => hash(args),
        KeysCommand::Rotate(args) => rotate(args),
        KeysCommand::Revoke(args) => revoke(args),
    }
}

/// The hashing, as a sentence for stderr.
fn hashing_note(pepper: &PepperArgs) -> &'static str {
    if pepper.pepper_env.is_some() {
        "Hashed with HMAC-SHA256 under the pepper from --pepper-env."
    } else {
        "Hashed with plain SHA-256 (no --pepper-env): the server must use no pepper either; a pepper is recommended."
    }
}

fn api_keys(
    prefix: &str,
    store: impl ApiKeyStore,
    pepper: &PepperArgs,
) -> Result<ApiKeys, Failure> {
    let mut builder = ApiKeys::builder(prefix, store);
    if let Some(name) = &pepper.pepper_env {
        builder = builder.pepper(secret::from_env("--pepper-env", name)?);
    }
    builder
        .build()
        .map_err(|error| Failure::usage(error.to_string()))
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|error| Failure::new(format!("cannot start the async runtime: {error}")))
}

fn open_store(path: &Path, must_exist: bool) -> Result<FileApiKeyStore, Failure> {
    if must_exist && !path.exists() {
        return Err(Failure::new(format!("{} does not exist", path.display())));
    }
    FileApiKeyStore::open(path).map_err(|error| Failure::new(error.to_string()))
}

/// Roles, scopes and the like: words, so they survive space-delimited
/// claims and logs.
fn check_words(flag: &str, values: &[String]) -> Result<(), Failure> {
    for value in values {
        if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Failure::usage(format!(
                "{flag} {value:?}: must be non-empty, without spaces"
            )));
        }
    }
    Ok(())
}

fn check_text(flag: &str, value: &str) -> Result<(), Failure> {
    if value.trim().is_empty() || value.chars().any(char::is_control) {
        return Err(Failure::usage(format!(
            "{flag} must be non-empty printable text"
        )));
    }
    Ok(())
}

/// `pal_live_AbC1…x9Zq`: enough to recognise a key, not to use it.
fn describe(record: &ApiKeyRecord) -> String {
    format!("{} ({}…{})", record.id, record.display_prefix, record.last4)
}

/// The prefix of the key a record was made for (`pal_live` from
/// `pal_live_AbC1`).
fn record_prefix(record: &ApiKeyRecord) -> Option<&str> {
    let shown = &record.display_prefix;
    let cut = shown.len().checked_sub(5)?;
    shown
        .get(..cut)
        .filter(|_| shown.get(cut..=cut) == Some("_"))
        .filter(|prefix| !prefix.is_empty())
}

fn new(args: NewArgs) -> Result<(), Failure> {
    check_text("--owner", &args.owner)?;
    check_words("--role", &args.roles)?;
    check_words("--scope", &args.scopes)?;
    if let Some(tenant) = &args.tenant {
        check_text("--tenant", tenant)?;
    }
    if let Some(tier) = &args.tier {
        check_words("--tier", std::slice::from_ref(tier))?;
    }
    let mut grant = NewApiKey::new(args.owner.clone())
        .roles(args.roles.iter().cloned())
        .scopes(args.scopes.iter().cloned());
    if let Some(tenant) = &args.tenant {
        grant = grant.tenant(tenant.clone());
    }
    if let Some(tier) = &args.tier {
        grant = grant.tier(tier.clone());
    }
    if let Some(lifetime) = args.expires_in {
        if lifetime.is_zero() {
            return Err(Failure::usage("--expires-in must be longer than 0s"));
        }
        grant = grant.expires_in(lifetime);
    }

    match &args.store {
        Some(path) => {
            let store = open_store(path, false)?;
            let keys = api_keys(&args.prefix, store, &args.pepper)?;
            let issued = runtime()?.block_on(keys.issue(grant))?;
            output::line(&issued.key)?;
            output::note(SHOWN_ONCE);
            output::note(hashing_note(&args.pepper));
            output::note(&format!(
                "Stored {} in {}.",
                describe(&issued.record),
                path.display()
            ));
            expiry_note(&issued);
        }
        None => {
            let keys = api_keys(&args.prefix, MemoryApiKeyStore::new(), &args.pepper)?;
            let issued = keys.mint(grant)?;
            let record = record_toml(&issued.record)?;
            output::line(&issued.key)?;
            // Comments, so this stderr can be appended to a TOML key file.
            output::note(&format!("# {SHOWN_ONCE}"));
            output::note(&format!("# {}", hashing_note(&args.pepper)));
            output::note("# The record to add to the server's key file (it holds no secret):");
            output::note(record.trim_end());
        }
    }
    Ok(())
}

fn expiry_note(issued: &IssuedKey) {
    if let Some(at) = issued.record.expires_at {
        output::note(&format!("It expires at {}.", duration::unix_timestamp(at)));
    }
}

/// The record as a `[[keys]]` table of a key file.
fn record_toml(record: &ApiKeyRecord) -> Result<String, Failure> {
    #[derive(serde::Serialize)]
    struct Document<'a> {
        keys: [&'a ApiKeyRecord; 1],
    }
    toml::to_string_pretty(&Document { keys: [record] })
        .map_err(|error| Failure::new(format!("cannot write the record as TOML: {error}")))
}

/// The key on stdin (at most 1 KiB): up to the end of input, or of the
/// line when typed at a terminal.
fn read_key() -> Result<String, Failure> {
    let mut stdin = std::io::stdin().lock();
    let mut bytes = Vec::new();
    let read = if stdin.is_terminal() {
        output::note("Paste the key and press Enter:");
        stdin.by_ref().take(1025).read_until(b'\n', &mut bytes)
    } else {
        stdin.by_ref().take(1025).read_to_end(&mut bytes)
    };
    read.map_err(|error| Failure::new(format!("cannot read stdin: {error}")))?;
    if bytes.len() > 1024 {
        return Err(Failure::usage("stdin holds more than a key"));
    }
    let text =
        String::from_utf8(bytes).map_err(|_| Failure::usage("the key on stdin is not text"))?;
    let key = text.trim();
    if key.is_empty() {
        return Err(Failure::usage(
            "no key on stdin (pipe it in: `palisade keys hash < key.txt`)",
        ));
    }
    Ok(key.to_owned())
}

fn malformed(prefix: Option<&str>) -> Failure {
    let of = prefix.map_or_else(String::new, |p| format!(" `{p}`"));
    Failure::usage(format!(
        "the key on stdin is not a well-formed{of} API key: wrong prefix, length or characters, or a checksum that does not match (a typo?)"
    ))
}

fn hash(args: HashArgs) -> Result<(), Failure> {
    let key = read_key()?;
    let prefix = match &args.prefix {
        Some(prefix) => prefix.as_str(),
        None => key
            .len()
            .checked_sub(KEY_TAIL)
            .and_then(|cut| key.get(..cut))
            .filter(|prefix| could_be_prefix(prefix))
            .ok_or_else(|| malformed(None))?,
    };
    let keys = api_keys(prefix, MemoryApiKeyStore::new(), &args.pepper)?;
    if !keys.is_well_formed(&key) {
        return Err(malformed(args.prefix.as_deref()));
    }
    output::line(&hex(&keys.hasher().hash(&key)))?;
    output::note(hashing_note(&args.pepper));
    Ok(())
}

/// Whether a key could start with `prefix` (the rule `ApiKeys` enforces):
/// 1 to 32 letters, digits and `_`, starting with a letter.
fn could_be_prefix(prefix: &str) -> bool {
    (1..=32).contains(&prefix.len())
        && prefix.starts_with(|c: char| c.is_ascii_alphabetic())
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn hex(bytes: &[u8; 32]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(64);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// The record `id` of a key file, or why there is none.
fn find_record(store: &FileApiKeyStore, path: &Path, id: &str) -> Result<ApiKeyRecord, Failure> {
    store
        .records()
        .into_iter()
        .find(|record| record.id == id)
        .ok_or_else(|| {
            Failure::new(format!(
                "no API key has the id {id:?} in {}",
                path.display()
            ))
        })
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

fn rotate(args: RotateArgs) -> Result<(), Failure> {
    let store = open_store(&args.store, true)?;
    let old = find_record(&store, &args.store, &args.id)?;
    // A new key inherits the old one's grants: a revoked or expired key
    // must not come back to life through a rotation.
    if old.revoked {
        return Err(Failure::new(format!(
            "{} is revoked; issue a new key with `palisade keys new` instead",
            describe(&old)
        )));
    }
    if let Some(at) = old.expires_at
        && at <= now()
    {
        return Err(Failure::new(format!(
            "{} expired at {}; issue a new key with `palisade keys new` instead",
            describe(&old),
            duration::unix_timestamp(at)
        )));
    }
    let prefix = match &args.prefix {
        Some(prefix) => prefix.clone(),
        None => record_prefix(&old)
            .ok_or_else(|| {
                Failure::usage(format!(
                    "cannot tell the prefix of {} from its record; give --prefix",
                    old.id
                ))
            })?
            .to_owned(),
    };
    let keys = api_keys(&prefix, store.clone(), &args.pepper)?;
    let issued = runtime()?.block_on(keys.rotate(&args.id, args.overlap))?;
    output::line(&issued.key)?;
    output::note(SHOWN_ONCE);
    output::note(hashing_note(&args.pepper));
    output::note(&format!(
        "Stored {} in {}, with the grants of {}.",
        describe(&issued.record),
        args.store.display(),
        old.id
    ));
    expiry_note(&issued);
    let old_end = find_record(&store, &args.store, &args.id)?
        .expires_at
        .map_or_else(|| "never".to_owned(), duration::unix_timestamp);
    output::note(&format!(
        "The old key {} works for {} more: it expires at {old_end}.",
        old.id,
        duration::display(args.overlap)
    ));
    Ok(())
}

fn revoke(args: RevokeArgs) -> Result<(), Failure> {
    let store = open_store(&args.store, true)?;
    let record = find_record(&store, &args.store, &args.id)?;
    if record.revoked {
        output::note(&format!("{} was already revoked.", describe(&record)));
        return Ok(());
    }
    // Revoking hashes nothing, so any valid prefix and no pepper will do.
    let keys = ApiKeys::builder("pal", store).build()?;
    runtime()?.block_on(keys.revoke(&args.id))?;
    output::note(&format!(
        "Revoked {} in {}: it is refused as soon as the server reloads the file.",
        describe(&record),
        args.store.display()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(display_prefix: &str) -> ApiKeyRecord {
        ApiKeyRecord {
            id: "key_1".into(),
            hash: "00".repeat(32),
            display_prefix: display_prefix.into(),
            last4: "abcd".into(),
            owner: "o".into(),
            tenant: None,
            roles: vec![],
            scopes: vec![],
            created_at: 0,
            expires_at: None,
            tier: None,
            revoked: false,
        }
    }

    #[test]
    fn the_prefix_is_read_back_from_the_display_prefix() {
        assert_eq!(record_prefix(&record("pal_live_AbC1")), Some("pal_live"));
        assert_eq!(record_prefix(&record("p_AbC1")), Some("p"));
        assert_eq!(record_prefix(&record("_AbC1")), None);
        assert_eq!(record_prefix(&record("pal_liveXAbC1")), None);
        assert_eq!(record_prefix(&record("ab")), None);
    }

    #[test]
    fn the_record_is_printed_as_a_key_file_table() {
        let text = record_toml(&record("pal_live_AbC1")).unwrap();
        assert!(text.starts_with("[[keys]]\n"), "{text}");
        assert!(text.contains("id = \"key_1\""), "{text}");
    }
}
