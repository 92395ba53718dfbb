//! What is stored per key: never the key, only its hash and what the key
//! grants.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use palisade_core::principal::{AuthMethod, Principal};

/// One API key as stored.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyRecord {
    /// The public id (`key_…`), for logs, audit events and revocation.
    pub id: String,
    /// The key's hash, hex (HMAC-SHA256 with the server pepper, or
    /// SHA-256).
    pub hash: String,
    /// The prefix and first four random characters (`pal_live_AbC1`).
    pub display_prefix: String,
    /// The last four characters.
    pub last4: String,
    /// The subject the key acts as.
    pub owner: String,
    /// The tenant.
    #[serde(default)]
    pub tenant: Option<String>,
    /// The roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// The scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Created, seconds since the epoch.
    pub created_at: u64,
    /// Refused from this time on (seconds since the epoch), if set.
    #[serde(default)]
    pub expires_at: Option<u64>,
    /// The rate-limit tier (`free`, `pro`...), exposed as the principal's
    /// `tier` claim.
    #[serde(default)]
    pub tier: Option<String>,
    /// Refused at once when true.
    #[serde(default)]
    pub revoked: bool,
}

impl ApiKeyRecord {
    /// The stored hash as bytes, when it is well-formed hex.
    pub fn hash_bytes(&self) -> Option<[u8; 32]> {
        parse_hex(&self.hash)
    }

    /// The principal this key authenticates as.
    pub fn principal(&self) -> Principal {
        let mut builder = Principal::builder(self.owner.clone())
            .roles(self.roles.iter().cloned())
            .scopes(self.scopes.iter().cloned())
            .method(AuthMethod::ApiKey {
                id: self.id.clone(),
            });
        if let Some(tenant) = &self.tenant {
            builder = builder.tenant(tenant.clone());
        }
        if let Some(expires_at) = self.expires_at {
            builder = builder.expires_at(Duration::from_secs(expires_at));
        }
        if let Some(tier) = &self.tier {
            builder = builder.claims(serde_json::json!({ "tier": tier }));
        }
        builder.build()
    }
}

/// A record as a store hands it out, with its principal built once.
#[derive(Debug)]
pub struct StoredKey {
    record: ApiKeyRecord,
    hash: Option<[u8; 32]>,
    principal: OnceLock<Principal>,
}

impl StoredKey {
    /// Wraps a record.
    pub fn new(record: ApiKeyRecord) -> Arc<Self> {
        Arc::new(Self {
            hash: record.hash_bytes(),
            record,
            principal: OnceLock::new(),
        })
    }

    /// The record.
    pub fn record(&self) -> &ApiKeyRecord {
        &self.record
    }

    /// The stored hash, if well-formed.
    pub(crate) fn hash(&self) -> Option<&[u8; 32]> {
        self.hash.as_ref()
    }

    /// The principal (built on first use, then shared).
    pub fn principal(&self) -> Principal {
        self.principal
            .get_or_init(|| self.record.principal())
            .clone()
    }
}

/// 64 hex digits (either case) as 32 bytes.
pub(crate) fn parse_hex(text: &str) -> Option<[u8; 32]> {
    let digits = text.as_bytes();
    if digits.len() != 64 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

/// `hex` of 32 bytes.
pub(crate) fn hex(bytes: &[u8; 32]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(64);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}
