//! Fuzzes the streaming body redactor (JSON, NDJSON, server-sent events)
//! with arbitrary bytes cut into chunks of a size the input chooses: it must
//! never panic, its output must not depend on the chunking, and redacting
//! its output again must change nothing. The harness is shared with the
//! corpus-replay test of `palisade-redact`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    palisade_redact::fuzzing::redact_body(data);
});
