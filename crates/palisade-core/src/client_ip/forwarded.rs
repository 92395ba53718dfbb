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
pub fn x_forwarded_for_rev<'a>(
    lines: GetAll<'a, HeaderValue>,
) -> impl Iterator<Item = Result<IpAddr, Malformed>> + 'a {
    lines.iter().rev().flat_map(|line| {
        let (text, bad) = match line.to_str() {
            Ok(text) => (text, false),
            Err(_) => ("", true),
        };
        let bad_line = bad.then_some(Err(Malformed));
        bad_line
            .into_iter()
            .chain(text.rsplit(',').filter_map(move |entry| {
                // An empty header line has no hops, but an empty entry in a
                // list ("a,,b") is malformed.
                if bad || (text.trim().is_empty()) {
                    None
                } else {
                    Some(parse_node(entry))
                }
            }))
    })
}

/// The `for=` hops of RFC 7239 `Forwarded` (all its lines, in order),
/// nearest first. An element without `for=`, or whose `for=` is `unknown`
/// or an obfuscated identifier, is malformed for our purpose: it does not
/// name a client we can key on.
pub fn forwarded_rev<'a>(
    lines: GetAll<'a, HeaderValue>,
) -> impl Iterator<Item = Result<IpAddr, Malformed>> + 'a {
    lines.iter().rev().flat_map(|line| {
        let text = line.to_str().ok();
        let bad_line = text.is_none().then_some(Err(Malformed));
        let text = text.unwrap_or("");
        let elements = if text.trim().is_empty() {
            None
        } else {
            Some(ElementsRev::new(text))
        };
        bad_line.into_iter().chain(
            elements
                .into_iter()
                .flatten()
                .map(|element| element.and_then(for_node)),
        )
    })
}

/// The comma-separated elements of a `Forwarded` line, from the right.
/// Commas inside quoted strings do not separate. Backslashes (quoted pairs)
/// never appear in a node we could use, so a line holding one is malformed
/// as a whole, which keeps the reverse scan simple and exact.
struct ElementsRev<'a> {
    text: &'a str,
    end: Option<usize>,
    failed: bool,
}

impl<'a> ElementsRev<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            text,
            end: Some(text.len()),
            failed: text.contains('\\') || text.bytes().filter(|&b| b == b'"').count() % 2 == 1,
        }
    }
}

impl<'a> Iterator for ElementsRev<'a> {
    type Item = Result<&'a str, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        let end = self.end?;
        if self.failed {
            self.end = None;
            return Some(Err(Malformed));
        }
        let bytes = &self.text.as_bytes()[..end];
        let mut quoted = false;
        let mut i = end;
        while i > 0 {
            i -= 1;
            match bytes[i] {
                b'"' => quoted = !quoted,
                b',' if !quoted => {
                    self.end = Some(i);
                    return Some(Ok(&self.text[i + 1..end]));
                }
                _ => {}
            }
        }
        self.end = None;
        Some(Ok(&self.text[..end]))
    }
}

/// The address in an element's `for=` parameter.
fn for_node(element: &str) -> Result<IpAddr, Malformed> {
    let mut found = None;
    for pair in element.split(';') {
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
    fn non_ascii_lines_are_malformed() {
        let mut headers = HeaderMap::new();
        headers.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"1.2.3.4, \xff").unwrap_or(HeaderValue::from_static("")),
        );
        let hops: Vec<_> = x_forwarded_for_rev(headers.get_all("x-forwarded-for")).collect();
        assert_eq!(hops, vec![Err(Malformed)]);
    }
}
