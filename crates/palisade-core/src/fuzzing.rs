//! Harnesses shared by the fuzz targets (`fuzz/`) and the tests that replay
//! their corpora, so both check exactly the same thing. Not part of the API.

use std::net::{IpAddr, Ipv4Addr};

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::client_ip::{ClientIpResolver, ClientIpSource, ForwardedHeader, forwarded};

/// Feeds arbitrary bytes to the forwarding-header parsers and the client
/// address resolution, and checks their invariants. The first byte picks
/// the header, whether proxies are trusted and whether the peer is one; the
/// rest, split at `\n`, are the header's lines.
pub fn forwarding_headers(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let header = match selector % 3 {
        0 => ForwardedHeader::XForwardedFor,
        1 => ForwardedHeader::Forwarded,
        _ => ForwardedHeader::XRealIp,
    };
    let trusting = selector & 0x04 != 0;
    let peer = if selector & 0x08 != 0 {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))
    } else {
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1))
    };
    let resolver = if trusting {
        ClientIpResolver::builder()
            .trust_proxies(["10.0.0.0/8", "::1/128", "fd00::/8"])
            .header(header)
            .max_hops(8)
            .build()
    } else {
        ClientIpResolver::builder().header(header).build()
    };
    let Ok(resolver) = resolver else {
        return;
    };

    let name = HeaderName::from_static(header.name());
    let mut headers = HeaderMap::new();
    for line in rest.split(|&b| b == b'\n') {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.append(name.clone(), value);
        }
        if let Ok(text) = std::str::from_utf8(line) {
            let _ = forwarded::parse_node(text);
        }
    }

    let client = resolver.resolve(&headers, peer);
    if !trusting || !resolver.is_trusted(peer) {
        assert_eq!(client.ip(), peer, "headers believed from an untrusted peer");
    }
    match client.source() {
        ClientIpSource::Peer => assert_eq!(client.ip(), peer),
        ClientIpSource::PeerFallback => {
            assert_eq!(client.ip(), peer);
            assert!(trusting && resolver.is_trusted(peer) && !client.is_resolved());
        }
        _ => assert!(trusting && resolver.is_trusted(peer) && client.is_resolved()),
    }
    // The key is the address masked to its prefix.
    match (client.ip(), client.key()) {
        (IpAddr::V4(ip), IpAddr::V4(key)) => assert_eq!(ip, key, "IPv4 keyed by /32"),
        (IpAddr::V6(ip), IpAddr::V6(key)) => {
            assert_eq!(u128::from(ip) >> 64, u128::from(key) >> 64);
            assert_eq!(u128::from(key) & u128::from(u64::MAX), 0);
        }
        (ip, key) => panic!("key {key} of another family than {ip}"),
    }
}

/// Every input kept for a fuzz target: its corpus (`fuzz/corpus/<target>/`)
/// and its saved crashes (`fuzz/regressions/<target>/`), sorted. The tests of
/// every crate replay them through the same harness the target runs.
pub fn corpus_inputs(target: &str) -> Vec<std::path::PathBuf> {
    let fuzz = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut files = Vec::new();
    for dir in ["corpus", "regressions"] {
        if let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join(target)) {
            files.extend(
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.is_file()),
            );
        }
    }
    files.sort();
    files
}
