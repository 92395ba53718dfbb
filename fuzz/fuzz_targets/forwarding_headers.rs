//! Fuzzes the forwarding-header parsers (`X-Forwarded-For`, RFC 7239
//! `Forwarded`, `X-Real-IP`) and client address resolution. The harness is
//! shared with the corpus-replay test of `palisade-core`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    palisade_core::fuzzing::forwarding_headers(data);
});
