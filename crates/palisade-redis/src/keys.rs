//! Key names with a prefix and a hash tag.

use std::fmt::{self, Write};

/// Names Redis keys `{prefix}:{namespace}:{{key}}`: the per-client part is
/// a hash tag, so every key of one client (all its policies, its counters)
/// lands in one Cluster slot and a multi-key script can touch them at once.
///
/// Braces and `%` are percent-encoded, so a client cannot end the tag early,
/// choose its slot, or make two different keys read the same.
///
/// ```
/// use palisade_redis::KeyNamer;
///
/// let names = KeyNamer::new("palisade")?;
/// assert_eq!(names.key("rl", "ip:192.0.2.1"), "palisade:rl:{ip:192.0.2.1}");
/// assert_eq!(names.key("rl", "sub:a}b{"), "palisade:rl:{sub:a%7Db%7B}");
/// # Ok::<(), String>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyNamer {
    prefix: String,
}

impl KeyNamer {
    /// A namer with this prefix: 1 to 64 characters of letters, digits and
    /// `-_.:`.
    pub fn new(prefix: impl Into<String>) -> Result<Self, String> {
        let prefix = prefix.into();
        validate_prefix(&prefix)?;
        Ok(Self { prefix })
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The key of `client` in `namespace` (a fixed name chosen by the layer,
    /// such as `rl` or `apikey`). A client part longer than
    /// [`MAX_CLIENT_LEN`] bytes (a long header value or subject) is replaced
    /// by `sha256:` and its SHA-256 in hex, so key names stay short and do
    /// not carry long client-chosen text into Redis.
    pub fn key(&self, namespace: &str, client: impl fmt::Display) -> String {
        let mut out = String::with_capacity(self.prefix.len() + namespace.len() + 32);
        out.push_str(&self.prefix);
        out.push(':');
        // Writing to a String cannot fail.
        let _ = BraceEscaper(&mut out).write_str(namespace);
        out.push_str(":{");
        let start = out.len();
        let _ = write!(BraceEscaper(&mut out), "{client}");
        if out.len() - start > MAX_CLIENT_LEN {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(&out.as_bytes()[start..]);
            out.truncate(start);
            out.push_str("sha256:");
            for byte in digest {
                let _ = write!(out, "{byte:02x}");
            }
        }
        if out.ends_with('{') {
            // An empty tag hashes the whole key; keep one character inside.
            out.push('_');
        }
        out.push('}');
        out
    }
}

/// The longest client part kept as text in a key name.
pub const MAX_CLIENT_LEN: usize = 128;

pub(crate) fn validate_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() || prefix.len() > 64 {
        return Err("the key prefix must be 1 to 64 characters".into());
    }
    if !prefix
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    {
        return Err("the key prefix may hold only letters, digits and -_.:".into());
    }
    Ok(())
}

struct BraceEscaper<'a>(&'a mut String);

impl Write for BraceEscaper<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            match c {
                '%' => self.0.push_str("%25"),
                '{' => self.0.push_str("%7B"),
                '}' => self.0.push_str("%7D"),
                c => self.0.push(c),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_validated() {
        assert!(KeyNamer::new("").is_err());
        assert!(KeyNamer::new("a{b").is_err());
        assert!(KeyNamer::new("a b").is_err());
        assert!(KeyNamer::new("x".repeat(65)).is_err());
        assert!(KeyNamer::new("app-1.palisade:v2").is_ok());
    }

    #[test]
    fn the_client_part_is_one_hash_tag() {
        let names = KeyNamer::new("p").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(names.key("ns", "a"), "p:ns:{a}");
        assert_eq!(names.key("ns", ""), "p:ns:{_}");
        assert_eq!(names.key("ns", "{x}"), "p:ns:{%7Bx%7D}");
        assert_ne!(names.key("ns", "a{b"), names.key("ns", "a%7Bb"));
        assert_eq!(names.key("n{s}", "a"), "p:n%7Bs%7D:{a}");
        let long = "x".repeat(200);
        let hashed = names.key("ns", &long);
        assert!(
            hashed.starts_with("p:ns:{sha256:") && hashed.len() < 90,
            "{hashed}"
        );
        assert_eq!(
            hashed,
            names.key("ns", &long),
            "stable across calls and instances"
        );
        assert_ne!(hashed, names.key("ns", "x".repeat(201)));
    }

    #[test]
    fn core_keys_name_safely() {
        use palisade_core::key::{KeyFn, RouteTemplate};
        let mut request = http::Request::new(());
        request
            .extensions_mut()
            .insert(RouteTemplate("/api/{id}".into()));
        let key = KeyFn::tuple([KeyFn::Method, KeyFn::RouteTemplate])
            .extract(&request)
            .unwrap_or_default();
        let names = KeyNamer::new("p").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            names.key("rl", &key),
            "p:rl:{m:GET|route:/api/%257Bid%257D}"
        );
    }
}
