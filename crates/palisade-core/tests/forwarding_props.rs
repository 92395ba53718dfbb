//! Property tests of the client address: whatever the forwarding header
//! says, the answer is the first untrusted hop from the right, or the peer.

// A failed expectation in a test is a failing test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::{HeaderMap, HeaderValue};
use palisade_core::client_ip::{ClientIpResolver, ClientIpSource, ForwardedHeader};
use proptest::prelude::*;

const MAX_HOPS: usize = 8;

fn resolver(header: ForwardedHeader) -> ClientIpResolver {
    ClientIpResolver::builder()
        .trust_proxies(["10.0.0.0/8", "fd00::/8"])
        .header(header)
        .max_hops(MAX_HOPS)
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn trusted(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets()[0] == 10,
        IpAddr::V6(v6) => v6.octets()[0] == 0xfd,
    }
}

/// Addresses of both families, often trusted.
fn hop() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|n| IpAddr::V4(Ipv4Addr::from(n))),
        any::<[u8; 3]>().prop_map(|[a, b, c]| IpAddr::V4(Ipv4Addr::new(10, a, b, c))),
        any::<u128>()
            .prop_map(|n| IpAddr::V6(Ipv6Addr::from(n)))
            .prop_filter(
                "mapped addresses are their IPv4 client",
                |ip| matches!(ip, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none())
            ),
        any::<u64>().prop_map(|n| IpAddr::V6(Ipv6Addr::from((0xfd00u128 << 112) | u128::from(n)))),
    ]
}

/// What the answer must be, computed the obvious way.
fn expected(hops: &[IpAddr], peer: IpAddr) -> IpAddr {
    if !trusted(peer) {
        return peer;
    }
    let mut farthest = None;
    for (walked, &hop) in hops.iter().rev().enumerate() {
        if walked >= MAX_HOPS {
            return peer;
        }
        if !trusted(hop) {
            return hop;
        }
        farthest = Some(hop);
    }
    farthest.unwrap_or(peer)
}

fn with_port(ip: IpAddr, port: Option<u16>, forwarded: bool) -> String {
    match (ip, port) {
        (IpAddr::V4(v4), None) => v4.to_string(),
        (IpAddr::V4(v4), Some(p)) => format!("{v4}:{p}"),
        (IpAddr::V6(v6), None) if forwarded => format!("\"[{v6}]\""),
        (IpAddr::V6(v6), None) => v6.to_string(),
        (IpAddr::V6(v6), Some(p)) if forwarded => format!("\"[{v6}]:{p}\""),
        (IpAddr::V6(v6), Some(p)) => format!("[{v6}]:{p}"),
    }
}

proptest! {
    #[test]
    fn x_forwarded_for_gives_the_first_untrusted_hop_from_the_right(
        hops in prop::collection::vec((hop(), prop::option::of(any::<u16>())), 0..12),
        peer in hop(),
        split in 0usize..12,
    ) {
        let ips: Vec<IpAddr> = hops.iter().map(|(ip, _)| *ip).collect();
        let entries: Vec<String> = hops.iter().map(|(ip, port)| with_port(*ip, *port, false)).collect();
        // The same list, possibly split over two header lines.
        let split = split.min(entries.len());
        let mut headers = HeaderMap::new();
        for part in [&entries[..split], &entries[split..]] {
            if !part.is_empty() {
                headers.append("x-forwarded-for", HeaderValue::from_str(&part.join(", ")).unwrap_or_else(|e| panic!("{e}")));
            }
        }
        let client = resolver(ForwardedHeader::XForwardedFor).resolve(&headers, peer);
        prop_assert_eq!(client.ip(), expected(&ips, peer));
        if client.source() == ClientIpSource::Peer {
            prop_assert_eq!(client.ip(), peer);
        }
    }

    #[test]
    fn forwarded_gives_the_same_answer_as_x_forwarded_for(
        hops in prop::collection::vec((hop(), prop::option::of(any::<u16>())), 0..12),
        peer in hop(),
    ) {
        let ips: Vec<IpAddr> = hops.iter().map(|(ip, _)| *ip).collect();
        let elements: Vec<String> = hops
            .iter()
            .map(|(ip, port)| format!("for={};proto=https", with_port(*ip, *port, true)))
            .collect();
        let mut headers = HeaderMap::new();
        if !elements.is_empty() {
            headers.insert("forwarded", HeaderValue::from_str(&elements.join(", ")).unwrap_or_else(|e| panic!("{e}")));
        }
        let client = resolver(ForwardedHeader::Forwarded).resolve(&headers, peer);
        prop_assert_eq!(client.ip(), expected(&ips, peer));
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_never_move_an_untrusted_peer(
        lines in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..4),
        which in 0u8..3,
        peer in hop(),
    ) {
        let header = [ForwardedHeader::XForwardedFor, ForwardedHeader::Forwarded, ForwardedHeader::XRealIp][usize::from(which)];
        let mut headers = HeaderMap::new();
        for line in &lines {
            if let Ok(value) = HeaderValue::from_bytes(line) {
                headers.append(header.name(), value);
            }
        }
        let client = resolver(header).resolve(&headers, peer);
        if !trusted(peer) {
            prop_assert_eq!(client.ip(), peer);
        }
    }

    #[test]
    fn garbage_among_hops_falls_back_to_the_peer(
        before in prop::collection::vec(hop().prop_filter("trusted", |ip| trusted(*ip)), 0..3),
        garbage in prop_oneof![Just("unknown".to_owned()), Just("_hidden".to_owned()), "[a-z_]{1,8}", Just(String::new())],
    ) {
        let peer = IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9));
        let mut entries: Vec<String> = vec![garbage];
        entries.extend(before.iter().map(ToString::to_string));
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_str(&entries.join(",")).unwrap_or_else(|e| panic!("{e}")));
        let client = resolver(ForwardedHeader::XForwardedFor).resolve(&headers, peer);
        prop_assert_eq!(client.ip(), peer);
    }
}
