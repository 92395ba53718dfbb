use super::*;
use http::HeaderValue;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        if let Ok(value) = HeaderValue::from_str(value) {
            map.append(*name, value);
        }
    }
    map
}

fn resolver(trusted: &[&str], header: ForwardedHeader) -> ClientIpResolver {
    ClientIpResolver::builder()
        .trust_proxies(trusted.iter().copied())
        .header(header)
        .build()
        .unwrap_or_default()
}

#[test]
fn without_trusted_proxies_forwarding_headers_are_ignored() {
    let resolver = ClientIpResolver::default();
    let spoofed = headers(&[
        ("x-forwarded-for", "1.1.1.1"),
        ("forwarded", "for=1.1.1.1"),
        ("x-real-ip", "1.1.1.1"),
    ]);
    let client = resolver.resolve(&spoofed, ip("203.0.113.9"));
    assert_eq!(client.ip(), ip("203.0.113.9"));
    assert_eq!(client.source(), ClientIpSource::Peer);
}

#[test]
fn an_untrusted_peer_is_the_client_whatever_it_claims() {
    let resolver = resolver(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
    let client = resolver.resolve(
        &headers(&[("x-forwarded-for", "1.1.1.1")]),
        ip("203.0.113.9"),
    );
    assert_eq!(client.ip(), ip("203.0.113.9"));
}

#[test]
fn x_forwarded_for_skips_trusted_hops_from_the_right() {
    let resolver = resolver(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
    let client = resolver.resolve(
        &headers(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.5")]),
        ip("10.0.0.7"),
    );
    assert_eq!(client.ip(), ip("1.2.3.4"));
    assert_eq!(
        client.source(),
        ClientIpSource::Header(ForwardedHeader::XForwardedFor)
    );
}

#[test]
fn forwarded_skips_trusted_hops_from_the_right() {
    let resolver = resolver(&["10.0.0.0/8", "fd00::/8"], ForwardedHeader::Forwarded);
    let client = resolver.resolve(
        &headers(&[(
            "forwarded",
            r#"for=6.6.6.6, for="[2001:db8::7]:443";proto=https, for="[fd00::1]""#,
        )]),
        ip("10.1.2.3"),
    );
    assert_eq!(client.ip(), ip("2001:db8::7"));
    assert_eq!(client.key(), ip("2001:db8::"), "IPv6 keyed by /64");
}

#[test]
fn x_real_ip_is_read_only_when_there_is_exactly_one() {
    let resolver = resolver(&["127.0.0.1"], ForwardedHeader::XRealIp);
    let one = resolver.resolve(&headers(&[("x-real-ip", "1.2.3.4")]), ip("127.0.0.1"));
    assert_eq!(one.ip(), ip("1.2.3.4"));
    let two = resolver.resolve(
        &headers(&[("x-real-ip", "1.2.3.4"), ("x-real-ip", "5.6.7.8")]),
        ip("127.0.0.1"),
    );
    assert_eq!(two.ip(), ip("127.0.0.1"));
}

#[test]
fn only_the_configured_header_is_read() {
    let resolver = resolver(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
    let client = resolver.resolve(
        &headers(&[("forwarded", "for=6.6.6.6"), ("x-forwarded-for", "1.2.3.4")]),
        ip("10.0.0.1"),
    );
    assert_eq!(client.ip(), ip("1.2.3.4"));
}

#[test]
fn malformed_or_obfuscated_hops_fall_back_to_the_peer() {
    let xff = resolver(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
    let fwd = resolver(&["10.0.0.0/8"], ForwardedHeader::Forwarded);
    let peer = ip("10.9.9.9");
    for value in [
        "garbage",
        "1.2.3.4, ",
        "unknown",
        "fe80::1%eth0",
        "[::1",
        "1.2.3.4,,10.0.0.1",
    ] {
        let client = xff.resolve(&headers(&[("x-forwarded-for", value)]), peer);
        assert_eq!(client.ip(), peer, "{value:?}");
        assert_eq!(client.source(), ClientIpSource::PeerFallback, "{value:?}");
        assert!(!client.is_resolved());
    }
    for value in [
        "for=_hidden",
        "for=unknown",
        "by=1.2.3.4",
        "for=\"1.2.3.4",
        "for=1.2.3.4;;",
    ] {
        let client = fwd.resolve(&headers(&[("forwarded", value)]), peer);
        assert_eq!(client.ip(), peer, "{value:?}");
    }
}

#[test]
fn ten_thousand_hops_are_not_walked() {
    let resolver = resolver(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
    let long = vec!["10.0.0.1"; 10_000].join(", ");
    let client = resolver.resolve(&headers(&[("x-forwarded-for", &long)]), ip("10.0.0.2"));
    assert_eq!(
        client.ip(),
        ip("10.0.0.2"),
        "more hops than max_hops: use the peer"
    );
    let long_untrusted = format!("{}, 1.2.3.4", vec!["6.6.6.6"; 10_000].join(","));
    let client = resolver.resolve(
        &headers(&[("x-forwarded-for", &long_untrusted)]),
        ip("10.0.0.2"),
    );
    assert_eq!(client.ip(), ip("1.2.3.4"));
}

#[test]
fn non_utf8_header_falls_back_to_the_peer() {
    let resolver = resolver(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
    let mut map = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(b"1.2.3.4\xc3\x28") {
        map.insert("x-forwarded-for", value);
    }
    assert_eq!(resolver.resolve(&map, ip("10.0.0.2")).ip(), ip("10.0.0.2"));
}

#[test]
fn client_bytes_left_of_the_proxy_hop_cannot_make_the_client_the_proxy() {
    let xff = resolver(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
    let mut map = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(b"\x80 garbage, 203.0.113.9") {
        map.insert("x-forwarded-for", value);
    }
    let client = xff.resolve(&map, ip("10.0.0.2"));
    assert_eq!(client.ip(), ip("203.0.113.9"));
    assert!(client.is_resolved());

    let fwd = resolver(&["10.0.0.0/8"], ForwardedHeader::Forwarded);
    for value in [r#"for="\, for=203.0.113.9"#, r#"for=", for=203.0.113.9"#] {
        let client = fwd.resolve(&headers(&[("forwarded", value)]), ip("10.0.0.2"));
        assert_eq!(client.ip(), ip("203.0.113.9"), "{value:?}");
    }
    let quoted_host = fwd.resolve(
        &headers(&[("forwarded", r#"for=203.0.113.9;host="a;b""#)]),
        ip("10.0.0.2"),
    );
    assert_eq!(quoted_host.ip(), ip("203.0.113.9"));
}

#[test]
fn all_hops_trusted_gives_the_farthest() {
    let resolver = resolver(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
    let client = resolver.resolve(
        &headers(&[("x-forwarded-for", "10.1.1.1, 10.0.0.5")]),
        ip("10.0.0.2"),
    );
    assert_eq!(client.ip(), ip("10.1.1.1"));
}

#[test]
fn ipv4_mapped_addresses_are_their_ipv4_client() {
    let resolver = resolver(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
    let client = resolver.resolve(
        &headers(&[("x-forwarded-for", "::ffff:1.2.3.4")]),
        ip("::ffff:10.0.0.2"),
    );
    assert_eq!(client.ip(), ip("1.2.3.4"));
    assert_eq!(client.key(), ip("1.2.3.4"));
}

#[test]
fn ipv6_key_prefix_is_configurable() {
    let resolver = ClientIpResolver::builder()
        .ipv6_prefix(48)
        .build()
        .unwrap_or_default();
    let client = resolver.resolve(&HeaderMap::new(), ip("2001:db8:abcd:1234::1"));
    assert_eq!(client.key(), ip("2001:db8:abcd::"));
    assert_eq!(client.ip(), ip("2001:db8:abcd:1234::1"));
}

#[test]
fn bad_configuration_is_refused_at_build_time() {
    assert!(
        ClientIpResolver::builder()
            .trust_proxy("10.0.0.0/33")
            .build()
            .is_err()
    );
    assert!(
        ClientIpResolver::builder()
            .trust_proxy("not-an-ip")
            .build()
            .is_err()
    );
    assert!(ClientIpResolver::builder().ipv6_prefix(0).build().is_err());
    assert!(
        ClientIpResolver::builder()
            .ipv6_prefix(129)
            .build()
            .is_err()
    );
    assert!(ClientIpResolver::builder().max_hops(0).build().is_err());
    assert!(
        ClientIpResolver::builder()
            .trust_proxy("10.1.2.3")
            .trust_proxy("::1")
            .build()
            .is_ok()
    );
}

#[test]
fn peer_address_is_read_from_extensions() {
    let mut extensions = Extensions::new();
    assert_eq!(peer_addr(&extensions), None);
    extensions.insert(PeerAddr(SocketAddr::from(([192, 0, 2, 1], 5000))));
    assert_eq!(peer_addr(&extensions), Some(ip("192.0.2.1")));
    assert_eq!(
        ClientIp::from_extensions(&extensions).map(|c| c.ip()),
        Some(ip("192.0.2.1"))
    );
}
