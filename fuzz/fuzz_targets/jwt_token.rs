//! Fuzzes JWT parsing and verification (size limits, the three base64url
//! parts, header and claims JSON, key lookup, the claim rules, the
//! verified-token cache) and the token sources (`Authorization: Bearer`,
//! cookie, WebSocket subprotocol and query parameter). The harness is shared
//! with the corpus-replay test of `palisade-auth`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    palisade_auth::fuzzing::jwt_token(data);
});
