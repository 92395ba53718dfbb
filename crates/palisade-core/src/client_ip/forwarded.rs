//! Parsers for the forwarding headers, walked from the right.
//!
//! Each parser yields the hops of one header from the nearest (rightmost) to
//! the farthest, as `Ok(ip)` for an address it can read or `Err(Malformed)`
//! for anything else: obfuscated identifiers (`_hidden`), `unknown`, zone
//! ids, empty entries, unbalanced quotes, bytes that are not visible ASCII.
//! The caller stops at the first `Err` and falls back to the peer address;
//! nothing here allocates or panics on any input.

use std::net::{IpAddr, Ipv6Addr};

use http::header::{GetAll, HeaderValue};

/// A hop that cannot be read as an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed;

/// Parses one node: an IPv4 address, an IPv6 address, either with a port,
/// the IPv6 one in brackets when it has a port. Zone ids are refused: they
/// name an interface of the sender, not a client.
pub fn parse_node(node: &str) -> Result<IpAddr, Malformed> {
    let node = node.trim_matches(|c| c == ' ' || c == '\t');
    if node.is_empty() || node.len() > 64 {
        return Err(Malformed);
    }
    if let Some(rest) = node.strip_prefix('[') {
        let (inside, after) = rest.split_once(']').ok_or(Malformed)?;
        if !(after.is_empty() || is_port(after.strip_prefix(':').ok_or(Malformed)?)) {
            return Err(Malformed);
        }
        return inside
            .parse::<Ipv6Addr>()
            .map(IpAddr::V6)
            .map_err(|_| Malformed);
    }
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Ok(ip);
    }
    // IPv4 with a port; a bare IPv6 address never gets here (parsed above),
    // and an IPv6 address with a port must be in brackets.
    let (host, port) = node.rsplit_once(':').ok_or(Malformed)?;
    if !is_port(port) || host.contains(':') {
        return Err(Malformed);
    }
    host.parse::<std::net::Ipv4Addr>()
        .map(IpAddr::V4)
        .map_err(|_| Malformed)
}

fn is_port(port: &str) -> bool {
    !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
}

/// The hops of `X-Forwarded-For` (all its lines, in order), nearest first.
///
/// Each entry is read only when the walk reaches it: a proxy appends the
/// address it saw to the client's own line (`<client's value>, <address>`),
/// so bytes the client wrote sit to the left and are never looked at once an
/// untrusted hop is found to their right.
pub fn x_forwarded_for_rev<'a>(
    lines: GetAll<'a, HeaderValue>,
) -> impl Iterator<Item = Result<IpAddr, Malformed>> + 'a {
    lines.iter().rev().flat_map(|line| {
        let bytes = line.as_bytes();
        // An empty line has no hops; an empty entry inside a list is malformed.
        let blank = bytes.iter().all(|&b| b == b' ' || b == b'\t');
        bytes
            .rsplit(|&b| b == b',')
            .take_while(move |_| !blank)
            .map(|entry| {
                std::str::from_utf8(entry)
                    .map_err(|_| Malformed)
                    .and_then(parse_node)
            })
    })
}

/// The `for=` hops of RFC 7239 `Forwarded` (all its lines, in order),
/// nearest first. An element without `for=`, or whose `for=` is `unknown`
/// or an obfuscated identifier, is malformed for our purpose: it does not
/// name a client we can key on. As for `X-Forwarded-For`, elements are read
/// from the right only as far as the walk goes.
pub fn forwarded_rev<'a>(
    lines: GetAll<'a, HeaderValue>,
) -> impl Iterator<Item = Result<IpAddr, Malformed>> + 'a {
    lines.iter().rev().flat_map(|line| {
        let bytes = line.as_bytes();
        let blank = bytes.iter().all(|&b| b == b' ' || b == b'\t');
        ElementsRev {
            bytes,
            end: if blank { None } else { Some(bytes.len()) },
        }
        .map(|element| element.and_then(for_node))
    })
}

/// The comma-separated elements of a `Forwarded` line, from the right.
/// Commas inside quoted strings do not separate. A backslash (a quoted pair)
/// never appears in a node we could use and cannot be read backwards
/// without ambiguity, so an element holding one is malformed, as is an
/// element left inside an unclosed quote; the iteration ends there.
struct ElementsRev<'a> {
    bytes: &'a [u8],
    end: Option<usize>,
}

impl<'a> Iterator for ElementsRev<'a> {
    type Item = Result<&'a str, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        let end = self.end?;
        let mut quoted = false;
        let mut i = end;
        while i > 0 {
            i -= 1;
            match self.bytes[i] {
                b'\\' => {
                    self.end = None;
                    return Some(Err(Malformed));
                }
                b'"' => quoted = !quoted,
                b',' if !quoted => {
                    self.end = Some(i);
                    return Some(
                        std::str::from_utf8(&self.bytes[i + 1..end]).map_err(|_| Malformed),
                    );
                }
                _ => {}
            }
        }
        self.end = None;
        if quoted {
            return Some(Err(Malformed));
        }
        Some(std::str::from_utf8(&self.bytes[..end]).map_err(|_| Malformed))
    }
}

/// The address in an element's `for=` parameter. Parameters are split at
/// semicolons outside quoted strings, so a quoted value chosen by the client
/// (`host="a;b"`) cannot break the proxy's own element.
fn for_node(element: &str) -> Result<IpAddr, Malformed> {
    let mut found = None;
    for pair in QuotedSplit::new(element, b';') {
        let pair = pair.trim_matches(|c| c == ' ' || c == '\t');
        let Some((name, value)) = pair.split_once('=') else {
            return Err(Malformed);
        };
        if name.eq_ignore_ascii_case("for") {
            if found.is_some() {
                // Two `for=` in one element: which one is the proxy's?
                return Err(Malformed);
            }
            found = Some(value);
        }
    }
    let value = found.ok_or(Malformed)?;
    let value = match value.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"').ok_or(Malformed)?,
        None => value,
    };
    parse_node(value)
}

/// Splits at a separator outside double quotes.
struct QuotedSplit<'a> {
    text: &'a str,
    start: Option<usize>,
    separator: u8,
}

impl<'a> QuotedSplit<'a> {
    fn new(text: &'a str, separator: u8) -> Self {
        Self {
            text,
            start: Some(0),
            separator,
        }
    }
}

impl<'a> Iterator for QuotedSplit<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let start = self.start?;
        let bytes = self.text.as_bytes();
        let mut quoted = false;
        for (offset, &byte) in bytes[start..].iter().enumerate() {
            if byte == b'"' {
                quoted = !quoted;
            } else if byte == self.separator && !quoted {
                let at = start + offset;
                self.start = Some(at + 1);
                // Separators are ASCII, so `at` is a char boundary.
                return self.text.get(start..at);
            }
        }
        self.start = None;
        self.text.get(start..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn v(s: &str) -> IpAddr {
        s.parse()
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
    }

    fn xff(lines: &[&str]) -> Vec<Result<IpAddr, Malformed>> {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(
                "x-forwarded-for",
                HeaderValue::from_str(line).unwrap_or(HeaderValue::from_static("")),
            );
        }
        x_forwarded_for_rev(headers.get_all("x-forwarded-for")).collect()
    }

    fn fwd(lines: &[&str]) -> Vec<Result<IpAddr, Malformed>> {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(
                "forwarded",
                HeaderValue::from_str(line).unwrap_or(HeaderValue::from_static("")),
            );
        }
        forwarded_rev(headers.get_all("forwarded")).collect()
    }

    #[test]
    fn nodes_with_ports_and_brackets_parse() {
        assert_eq!(parse_node("1.2.3.4"), Ok(v("1.2.3.4")));
        assert_eq!(parse_node(" 1.2.3.4:8080 "), Ok(v("1.2.3.4")));
        assert_eq!(parse_node("2001:db8::1"), Ok(v("2001:db8::1")));
        assert_eq!(parse_node("[2001:db8::1]"), Ok(v("2001:db8::1")));
        assert_eq!(parse_node("[2001:db8::1]:443"), Ok(v("2001:db8::1")));
    }

    #[test]
    fn garbage_nodes_are_malformed() {
        for node in [
            "",
            "unknown",
            "_hidden",
            "fe80::1%eth0",
            "[fe80::1%25eth0]",
            "1.2.3.4:",
            "1.2.3.4:99999999",
            "[2001:db8::1",
            "[2001:db8::1]x",
            "2001:db8::1:80:",
            "1.2.3",
            "1.2.3.4.5",
            "::ffff:1.2.3.4:80",
            "[1.2.3.4]",
            "hostname",
            "01.2.3.4",
        ] {
            assert_eq!(parse_node(node), Err(Malformed), "{node:?}");
        }
    }

    #[test]
    fn x_forwarded_for_walks_from_the_right_across_lines() {
        assert_eq!(
            xff(&["6.6.6.6, 1.2.3.4", "10.0.0.5"]),
            vec![Ok(v("10.0.0.5")), Ok(v("1.2.3.4")), Ok(v("6.6.6.6"))]
        );
        assert_eq!(xff(&["1.2.3.4,,5.6.7.8"])[1], Err(Malformed));
        assert!(xff(&[""]).is_empty());
    }

    #[test]
    fn forwarded_reads_for_parameters_from_the_right() {
        assert_eq!(
            fwd(&[r#"for=192.0.2.60;proto=http;by=203.0.113.43, For="[2001:db8:cafe::17]:4711""#]),
            vec![Ok(v("2001:db8:cafe::17")), Ok(v("192.0.2.60"))]
        );
        assert_eq!(fwd(&["for=_hidden"]), vec![Err(Malformed)]);
        assert_eq!(
            fwd(&["for=unknown, for=1.2.3.4"]),
            vec![Ok(v("1.2.3.4")), Err(Malformed)]
        );
        assert_eq!(fwd(&["proto=https"]), vec![Err(Malformed)]);
        assert_eq!(fwd(&[r#"for="1.2.3.4"#]), vec![Err(Malformed)]);
        assert_eq!(fwd(&[r#"for="a\"b""#]), vec![Err(Malformed)]);
        assert_eq!(
            fwd(&[r#"for=1.2.3.4;host="a;b""#]),
            vec![Ok(v("1.2.3.4"))],
            "a quoted semicolon does not split parameters"
        );
        assert_eq!(fwd(&["for=1.2.3.4;for=5.6.7.8"]), vec![Err(Malformed)]);
    }

    #[test]
    fn quoted_commas_do_not_split_elements() {
        assert_eq!(
            fwd(&[r#"for=1.2.3.4;host="a,b", for=5.6.7.8"#]),
            vec![Ok(v("5.6.7.8")), Ok(v("1.2.3.4"))]
        );
    }

    #[test]
    fn client_garbage_left_of_the_proxy_hop_is_never_read() {
        // The proxy appended the real address after the client's bytes.
        assert_eq!(
            fwd(&[r#"for="\, for=1.2.3.4"#])[0],
            Ok(v("1.2.3.4")),
            "unbalanced quote and backslash on the client's side"
        );
        let mut headers = HeaderMap::new();
        headers.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"\x80\xff, 1.2.3.4").unwrap_or(HeaderValue::from_static("")),
        );
        let hops: Vec<_> = x_forwarded_for_rev(headers.get_all("x-forwarded-for")).collect();
        assert_eq!(hops, vec![Ok(v("1.2.3.4")), Err(Malformed)]);
    }

    #[test]
    fn non_ascii_lines_are_malformed() {
        let mut headers = HeaderMap::new();
        headers.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"1.2.3.4, \xff").unwrap_or(HeaderValue::from_static("")),
        );
        let hops: Vec<_> = x_forwarded_for_rev(headers.get_all("x-forwarded-for")).collect();
        assert_eq!(hops, vec![Err(Malformed), Ok(v("1.2.3.4"))]);
    }
}
