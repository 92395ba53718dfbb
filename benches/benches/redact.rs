//! Body redaction throughput, in one run, on the same documents:
//!
//! - `palisade/streaming_whole`: `JsonRedactor::feed` with the whole body
//!   in one chunk;
//! - `palisade/streaming_16k`: the same body fed in 16 KiB chunks (as a
//!   server streams it);
//! - `serde_json/buffered`: what a user would otherwise write: buffer the
//!   body, `serde_json::from_slice::<Value>`, walk it replacing the values
//!   of secret keys, `serde_json::to_vec`.
//!
//! Before criterion's groups, each document is also timed with the two
//! approaches alternating (`interleaved ...` lines on stderr), which is
//! fairer on a busy machine.
//!
//! Also `scan/palisade/scanner_redact_api` and `scan/palisade/scanner_no_keyword`:
//! `SecretScanner` (secrets by format) over the `api` document and over
//! plain text with no keyword.
//!
//! Two documents: `api` (an array of 2,000 user records with nested
//! profiles, secrets at several depths, escapes and numbers, ~1 MB) and
//! `strings` (records dominated by long string values, ~1 MB).
//!
//! ```text
//! cargo bench -p palisade-benches --bench redact
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use palisade_redact::scan::SecretScanner;
use palisade_redact::{Framing, JsonRedactor, REDACTED, SecretNames};
use serde_json::{Value, json};

fn api_document() -> Vec<u8> {
    let users: Vec<Value> = (0..2000)
        .map(|i| {
            json!({
                "id": i,
                "name": format!("user \"{i}\" \\ name"),
                "email": format!("user{i}@example.com"),
                "password": format!("hunter{i}"),
                "score": i as f64 * 1.25,
                "active": i % 2 == 0,
                "tags": ["alpha", "beta", "gamma"],
                "profile": {
                    "bio": "Lorem ipsum dolor sit amet, consectetur adipiscing elit.",
                    "settings": { "theme": "dark", "api_key": { "id": i, "value": "sk_live_0123456789" } },
                    "history": [1, 2, 3, 4, 5, 6, 7, 8],
                },
                "access_token": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig",
            })
        })
        .collect();
    serde_json::to_vec(&users).unwrap_or_default()
}

fn strings_document() -> Vec<u8> {
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(20);
    let records: Vec<Value> = (0..1000)
        .map(|i| json!({ "id": i, "body": text, "token": format!("t{i}"), "title": "a title" }))
        .collect();
    serde_json::to_vec(&records).unwrap_or_default()
}

fn redact_value(value: &mut Value, names: &SecretNames) {
    match value {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                if names.contains(key) {
                    *value = Value::String(REDACTED.to_owned());
                } else {
                    redact_value(value, names);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| redact_value(item, names)),
        _ => {}
    }
}

fn buffered(body: &[u8], names: &SecretNames) -> Vec<u8> {
    match serde_json::from_slice::<Value>(body) {
        Ok(mut value) => {
            redact_value(&mut value, names);
            serde_json::to_vec(&value).unwrap_or_default()
        }
        Err(_) => Vec::new(),
    }
}

fn streaming(body: &[u8], names: &SecretNames, chunk: usize) -> Vec<u8> {
    let mut redactor = JsonRedactor::new(names.clone(), Framing::Json);
    let mut out = Vec::with_capacity(body.len());
    for piece in body.chunks(chunk) {
        redactor.feed(piece, &mut out);
    }
    let _ = redactor.finish(&mut out);
    out
}

/// Times the two approaches in alternation (one of each, 41 times) and
/// prints the median throughput of each and their ratio. On a busy machine
/// load comes and goes between criterion's groups; alternating exposes both
/// approaches to the same load.
fn interleaved(label: &str, body: &[u8], names: &SecretNames) {
    let mut streaming_times = Vec::new();
    let mut buffered_times = Vec::new();
    for _ in 0..41 {
        let start = Instant::now();
        black_box(streaming(black_box(body), names, 16 * 1024));
        streaming_times.push(start.elapsed());
        let start = Instant::now();
        black_box(buffered(black_box(body), names));
        buffered_times.push(start.elapsed());
    }
    streaming_times.sort_unstable();
    buffered_times.sort_unstable();
    let mib_per_s = |time: Duration| body.len() as f64 / time.as_secs_f64() / (1024.0 * 1024.0);
    let streaming_median = streaming_times[20];
    let buffered_median = buffered_times[20];
    eprintln!(
        "interleaved {label}: streaming 16 KiB {:.0} MiB/s, serde_json buffered {:.0} MiB/s, ratio {:.1}x",
        mib_per_s(streaming_median),
        mib_per_s(buffered_median),
        buffered_median.as_secs_f64() / streaming_median.as_secs_f64(),
    );
}

fn bench(c: &mut Criterion) {
    let names = SecretNames::default_body_keys();
    for (label, body) in [("api", api_document()), ("strings", strings_document())] {
        // Both approaches agree on the result before they are timed.
        let expected: Value =
            serde_json::from_slice(&buffered(&body, &names)).unwrap_or(Value::Null);
        let actual: Value =
            serde_json::from_slice(&streaming(&body, &names, 16 * 1024)).unwrap_or(Value::Null);
        assert_eq!(expected, actual, "the redactions differ");
        interleaved(label, &body, &names);

        let mut group = c.benchmark_group(format!("redact_{label}"));
        group
            .throughput(Throughput::Bytes(body.len() as u64))
            .measurement_time(Duration::from_secs(3))
            .warm_up_time(Duration::from_secs(1))
            .sample_size(20);
        group.bench_function("palisade/streaming_whole", |b| {
            b.iter(|| black_box(streaming(black_box(&body), &names, usize::MAX)))
        });
        group.bench_function("palisade/streaming_16k", |b| {
            b.iter(|| black_box(streaming(black_box(&body), &names, 16 * 1024)))
        });
        group.bench_function("serde_json/buffered", |b| {
            b.iter(|| black_box(buffered(black_box(&body), &names)))
        });
        group.finish();
    }

    // Secret scanning by format over the same `api` document (its 2,000
    // JWT-shaped access tokens are found and redacted) and over text with
    // no keyword at all (the prefilter's one pass).
    let scanner = SecretScanner::default();
    let api = api_document();
    let plain = "The quick brown fox jumps over the lazy dog. ".repeat(20_000);
    let mut group = c.benchmark_group("scan");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(20);
    group.throughput(Throughput::Bytes(api.len() as u64));
    group.bench_function("palisade/scanner_redact_api", |b| {
        b.iter(|| black_box(scanner.redact(black_box(&api)).len()))
    });
    group.throughput(Throughput::Bytes(plain.len() as u64));
    group.bench_function("palisade/scanner_no_keyword", |b| {
        b.iter(|| black_box(scanner.find(black_box(plain.as_bytes())).len()))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
