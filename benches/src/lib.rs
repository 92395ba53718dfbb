//! Helpers shared by the Palisade benchmarks and the memory report.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The `n`-th distinct client address: IPv4 for the first 2^32, spread so
/// that neighbouring `n` do not share a prefix.
pub fn client_ip(n: u64) -> IpAddr {
    match u32::try_from(n) {
        Ok(n) => IpAddr::V4(Ipv4Addr::from(n.wrapping_mul(2_654_435_761))),
        Err(_) => IpAddr::V6(Ipv6Addr::from(u128::from(n) << 64)),
    }
}

/// Resident set size of this process in bytes, read from `/proc/self/statm`
/// (Linux); `None` elsewhere.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let resident_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(resident_pages * 4096)
}
