//! Keys: which requests share a limit, a concurrency budget or a breaker.
//!
//! A [`KeyFn`] says what to key on (the client address, the principal's
//! subject or tenant, the API key id, a header, the route template, the
//! method, one global key, or a tuple of these). Applied to a request it gives
//! a [`Key`]: a compact, unambiguous byte string that fits inline for the
//! common cases (an address, a short subject), hashes for in-memory stores
//! and prints safely for Redis keys.
//!
//! ```
//! use palisade_core::key::KeyFn;
//! use palisade_core::client_ip::PeerAddr;
//! use std::net::SocketAddr;
//!
//! let key_fn = KeyFn::tuple([KeyFn::ClientIp, KeyFn::Method]);
//! let mut request = http::Request::post("/login").body(()).unwrap();
//! request.extensions_mut().insert(PeerAddr(SocketAddr::from(([192, 0, 2, 7], 4000))));
//! let key = key_fn.extract(&request).expect("both parts are present");
//! assert_eq!(key.to_string(), "ip:192.0.2.7|m:POST");
//! ```

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use http::{Extensions, HeaderMap, HeaderName, Method, Request};
use smallvec::SmallVec;

use crate::client_ip::ClientIp;
use crate::principal::Principal;

/// What a request is keyed on.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyFn {
    /// The client address ([`ClientIp::key`]: IPv6 by prefix).
    ClientIp,
    /// The principal's subject.
    Subject,
    /// The principal's tenant.
    Tenant,
    /// The principal's API key id.
    ApiKeyId,
    /// The value of a request header. Build it with [`KeyFn::header`], which
    /// refuses headers that carry credentials.
    Header(HeaderName),
    /// The route template (`/api/scans/{id}`), never the raw path, so that a
    /// client cannot mint keys by varying ids.
    RouteTemplate,
    /// The request method.
    Method,
    /// One key for every request.
    Global,
    /// All of these; missing if any part is missing.
    Tuple(Vec<KeyFn>),
}

/// The route template of a request, for servers other than axum (with the
/// `axum` feature, axum's `MatchedPath` is read as well).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RouteTemplate(pub Arc<str>);

impl KeyFn {
    /// A tuple of keys.
    pub fn tuple(parts: impl IntoIterator<Item = KeyFn>) -> Self {
        KeyFn::Tuple(parts.into_iter().collect())
    }

    /// A header's value as key. Headers that carry credentials
    /// (`Authorization`, `Proxy-Authorization`, `Cookie`, `X-API-Key`) are
    /// refused: a key's text reaches logs and Redis key names. Key on the
    /// authenticated principal instead ([`KeyFn::Subject`],
    /// [`KeyFn::ApiKeyId`]).
    pub fn header(name: HeaderName) -> Result<Self, crate::ConfigError> {
        if is_credential_header(&name) {
            return Err(crate::ConfigError::invalid(
                "key",
                format!("`{name}` carries credentials; key on the principal instead"),
            ));
        }
        Ok(KeyFn::Header(name))
    }

    /// The key of a request; `None` when a part is missing (no principal, no
    /// such header, no client address, no route template).
    pub fn extract<B>(&self, request: &Request<B>) -> Option<Key> {
        self.extract_from(request.method(), request.headers(), request.extensions())
    }

    /// The key of a request given by its parts.
    pub fn extract_from(
        &self,
        method: &Method,
        headers: &HeaderMap,
        extensions: &Extensions,
    ) -> Option<Key> {
        let mut key = Key::default();
        self.write(&mut key, method, headers, extensions)?;
        Some(key)
    }

    fn write(
        &self,
        key: &mut Key,
        method: &Method,
        headers: &HeaderMap,
        extensions: &Extensions,
    ) -> Option<()> {
        match self {
            KeyFn::ClientIp => {
                let ip = ClientIp::from_extensions(extensions)?.key();
                match ip {
                    IpAddr::V4(v4) => key.push(Tag::Ip, &v4.octets()),
                    IpAddr::V6(v6) => key.push(Tag::Ip, &v6.octets()),
                }
            }
            KeyFn::Subject => {
                let principal = extensions.get::<Principal>()?;
                key.push(Tag::Subject, principal.subject().as_bytes());
            }
            KeyFn::Tenant => {
                let tenant = extensions.get::<Principal>()?.tenant()?;
                key.push(Tag::Tenant, tenant.as_bytes());
            }
            KeyFn::ApiKeyId => {
                let id = extensions.get::<Principal>()?.api_key_id()?;
                key.push(Tag::ApiKeyId, id.as_bytes());
            }
            KeyFn::Header(name) => {
                let mut values = headers.get_all(name).iter();
                let value = values.next()?;
                if values.next().is_some() {
                    // Two values: keying on either lets a client pick its key.
                    return None;
                }
                key.push(Tag::Header, value.as_bytes());
            }
            KeyFn::RouteTemplate => {
                let template = route_template(extensions)?;
                key.push(Tag::Route, template.as_bytes());
            }
            KeyFn::Method => key.push(Tag::Method, method.as_str().as_bytes()),
            KeyFn::Global => key.push(Tag::Global, &[]),
            KeyFn::Tuple(parts) => {
                for part in parts {
                    part.write(key, method, headers, extensions)?;
                }
            }
        }
        Some(())
    }
}

fn is_credential_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie" | "x-api-key"
    )
}

pub(crate) fn route_template(extensions: &Extensions) -> Option<&str> {
    if let Some(RouteTemplate(template)) = extensions.get::<RouteTemplate>() {
        return Some(template);
    }
    #[cfg(feature = "axum")]
    if let Some(matched) = extensions.get::<axum::extract::MatchedPath>() {
        return Some(matched.as_str());
    }
    None
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Tag {
    Ip = b'i',
    Subject = b's',
    Tenant = b't',
    ApiKeyId = b'k',
    Header = b'h',
    Route = b'r',
    Method = b'm',
    Global = b'g',
}

impl Tag {
    fn from_u8(byte: u8) -> Option<Tag> {
        Some(match byte {
            b'i' => Tag::Ip,
            b's' => Tag::Subject,
            b't' => Tag::Tenant,
            b'k' => Tag::ApiKeyId,
            b'h' => Tag::Header,
            b'r' => Tag::Route,
            b'm' => Tag::Method,
            b'g' => Tag::Global,
            _ => return None,
        })
    }

    fn label(self) -> &'static str {
        match self {
            Tag::Ip => "ip",
            Tag::Subject => "sub",
            Tag::Tenant => "tenant",
            Tag::ApiKeyId => "key",
            Tag::Header => "h",
            Tag::Route => "route",
            Tag::Method => "m",
            Tag::Global => "global",
        }
    }
}

/// The key of a request: tagged, length-prefixed parts, so no two different
/// tuples share bytes. Up to 40 bytes are held inline (no allocation).
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Key {
    bytes: SmallVec<[u8; 40]>,
}

impl Key {
    fn push(&mut self, tag: Tag, value: &[u8]) {
        self.bytes.push(tag as u8);
        // Header values are bounded far below 4 GiB by every server; a longer
        // value would be truncated in the length, never out of bounds.
        let len = u32::try_from(value.len()).unwrap_or(u32::MAX);
        self.bytes.extend_from_slice(&len.to_be_bytes());
        self.bytes.extend_from_slice(&value[..len as usize]);
    }

    /// The encoded bytes.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn parts(&self) -> impl Iterator<Item = (Tag, &[u8])> + '_ {
        let mut rest: &[u8] = &self.bytes;
        std::iter::from_fn(move || {
            let (&tag, after) = rest.split_first()?;
            let len_bytes: [u8; 4] = after.get(..4)?.try_into().ok()?;
            let len = u32::from_be_bytes(len_bytes) as usize;
            let value = after.get(4..4 + len)?;
            rest = &after[4 + len..];
            Some((Tag::from_u8(tag)?, value))
        })
    }
}

/// A readable, unambiguous form: `ip:192.0.2.7|m:POST`. Bytes outside
/// printable ASCII and the characters `%|{}:` inside values are
/// percent-encoded, so the text is safe in Redis keys (no hash-tag braces)
/// and in logs (no control characters).
impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, (tag, value)) in self.parts().enumerate() {
            if index > 0 {
                f.write_str("|")?;
            }
            f.write_str(tag.label())?;
            if tag == Tag::Global {
                continue;
            }
            f.write_str(":")?;
            match tag {
                Tag::Ip if value.len() == 4 => {
                    let octets: [u8; 4] = value.try_into().map_err(|_| fmt::Error)?;
                    write!(f, "{}", std::net::Ipv4Addr::from(octets))?;
                }
                Tag::Ip if value.len() == 16 => {
                    let octets: [u8; 16] = value.try_into().map_err(|_| fmt::Error)?;
                    write!(f, "{}", std::net::Ipv6Addr::from(octets))?;
                }
                _ => {
                    for &byte in value {
                        if byte.is_ascii_graphic() && !b"%|{}:".contains(&byte) {
                            write!(f, "{}", byte as char)?;
                        } else {
                            write!(f, "%{byte:02X}")?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({self})")
    }
}

#[cfg(feature = "serde")]
mod serde_impl {
    //! `KeyFn` in configuration: `"client_ip"`, `"subject"`, `"tenant"`,
    //! `"api_key_id"`, `"route"`, `"method"`, `"global"`,
    //! `{ header = "x-tenant" }`, and a list for a tuple.

    use super::KeyFn;
    use http::HeaderName;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Name(String),
        Header { header: String },
        Tuple(Vec<Repr>),
    }

    fn convert<E: serde::de::Error>(repr: Repr) -> Result<KeyFn, E> {
        Ok(match repr {
            Repr::Name(name) => match name.as_str() {
                "client_ip" | "ip" => KeyFn::ClientIp,
                "subject" => KeyFn::Subject,
                "tenant" => KeyFn::Tenant,
                "api_key_id" => KeyFn::ApiKeyId,
                "route" | "route_template" => KeyFn::RouteTemplate,
                "method" => KeyFn::Method,
                "global" => KeyFn::Global,
                other => return Err(E::custom(format!("unknown key `{other}`"))),
            },
            Repr::Header { header } => KeyFn::header(
                HeaderName::try_from(header.as_str())
                    .map_err(|_| E::custom(format!("invalid header name `{header}`")))?,
            )
            .map_err(E::custom)?,
            Repr::Tuple(parts) => KeyFn::Tuple(
                parts
                    .into_iter()
                    .map(convert::<E>)
                    .collect::<Result<_, _>>()?,
            ),
        })
    }

    impl<'de> Deserialize<'de> for KeyFn {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            convert(Repr::deserialize(deserializer).map_err(D::Error::custom)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client_ip::PeerAddr;
    use crate::principal::AuthMethod;
    use std::net::SocketAddr;

    fn request() -> Request<()> {
        let mut request = Request::get("/api/scans/7")
            .header("x-tenant", "acme")
            .body(())
            .unwrap_or_default();
        request.extensions_mut().insert(PeerAddr(SocketAddr::from((
            [0x2001, 0xdb8, 0, 0, 0, 0, 0, 1],
            1,
        ))));
        request
    }

    #[test]
    fn each_key_fn_reads_its_part() {
        let mut request = request();
        assert_eq!(
            KeyFn::ClientIp.extract(&request).map(|k| k.to_string()),
            Some("ip:2001:db8::".into()),
            "IPv6 keyed by /64"
        );
        assert_eq!(KeyFn::Subject.extract(&request), None, "no principal yet");
        request.extensions_mut().insert(
            Principal::builder("u|1")
                .tenant("t{1}")
                .method(AuthMethod::ApiKey { id: "k1".into() })
                .build(),
        );
        request
            .extensions_mut()
            .insert(RouteTemplate("/api/scans/{id}".into()));
        let text = |key_fn: KeyFn| key_fn.extract(&request).map(|k| k.to_string());
        assert_eq!(text(KeyFn::Subject), Some("sub:u%7C1".into()));
        assert_eq!(text(KeyFn::Tenant), Some("tenant:t%7B1%7D".into()));
        assert_eq!(text(KeyFn::ApiKeyId), Some("key:k1".into()));
        assert_eq!(
            text(KeyFn::header(HeaderName::from_static("x-tenant")).unwrap_or(KeyFn::Global)),
            Some("h:acme".into())
        );
        assert_eq!(
            text(KeyFn::RouteTemplate),
            Some("route:/api/scans/%7Bid%7D".into())
        );
        assert_eq!(text(KeyFn::Method), Some("m:GET".into()));
        assert_eq!(text(KeyFn::Global), Some("global".into()));
        assert_eq!(
            text(KeyFn::tuple([KeyFn::Tenant, KeyFn::RouteTemplate])),
            Some("tenant:t%7B1%7D|route:/api/scans/%7Bid%7D".into())
        );
    }

    #[test]
    fn tuples_are_unambiguous() {
        let mut a = Key::default();
        a.push(Tag::Subject, b"ab");
        a.push(Tag::Tenant, b"c");
        let mut b = Key::default();
        b.push(Tag::Subject, b"a");
        b.push(Tag::Tenant, b"bc");
        assert_ne!(a, b);
    }

    #[test]
    fn a_repeated_header_gives_no_key() {
        let request = Request::get("/")
            .header("x-client", "a")
            .header("x-client", "b")
            .body(())
            .unwrap_or_default();
        assert_eq!(
            KeyFn::header(HeaderName::from_static("x-client"))
                .unwrap_or(KeyFn::Global)
                .extract(&request),
            None
        );
    }

    #[test]
    fn credential_headers_cannot_be_keys() {
        for name in [
            "authorization",
            "cookie",
            "x-api-key",
            "proxy-authorization",
        ] {
            assert!(
                KeyFn::header(HeaderName::from_static(name)).is_err(),
                "{name}"
            );
        }
    }

    #[test]
    fn a_missing_part_makes_the_tuple_missing() {
        let request = request();
        assert_eq!(
            KeyFn::tuple([KeyFn::ClientIp, KeyFn::Subject]).extract(&request),
            None
        );
    }

    #[test]
    fn short_keys_stay_inline() {
        let key = KeyFn::ClientIp.extract(&request()).unwrap_or_default();
        assert!(!key.bytes.spilled());
    }
}
