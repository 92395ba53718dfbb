//! Fuzzes API key parsing (prefix, base62, CRC32 checksum), hashing and
//! lookup, and where keys are read from (`X-API-Key`, `Authorization:
//! ApiKey`, a query parameter). The harness is shared with the corpus-replay
//! test of `palisade-auth`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    palisade_auth::fuzzing::api_key_credentials(data);
});
