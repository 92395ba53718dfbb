//! Helpers shared by the Palisade benchmarks and the memory report.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::task::{Context, Poll, Waker};

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

/// Polls a future to completion in place, with a no-op waker: the layers
/// measured complete on their first poll, and a runtime's scheduling would
/// cost more than they do.
pub fn drive<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
    }
}
