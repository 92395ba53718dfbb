//! With the `metrics` feature, the current limit of a load shedder is the
//! gauge `palisade_concurrency_limit{layer=...}`, set at build time and at
//! every window that changes it.

#![cfg(feature = "metrics")]
// A failed expectation in a test is a failing test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use http::{Request, Response};
use metrics::{
    Counter, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use palisade_concurrency::adaptive::Aimd;
use palisade_concurrency::{LIMIT_GAUGE, LoadShedLayer};
use palisade_core::clock::ManualClock;
use tower::{Layer, Service};

/// Remembers every value set on a gauge, by name and labels.
#[derive(Default)]
struct Captured {
    sets: Arc<Mutex<Vec<(String, f64)>>>,
}

struct Set {
    key: String,
    sets: Arc<Mutex<Vec<(String, f64)>>>,
}

impl GaugeFn for Set {
    fn increment(&self, _: f64) {}
    fn decrement(&self, _: f64) {}
    fn set(&self, value: f64) {
        self.sets.lock().unwrap().push((self.key.clone(), value));
    }
}

impl Recorder for Captured {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        Counter::noop()
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        Gauge::from_arc(Arc::new(Set {
            key: format!("{}{{{}}}", key.name(), labels.join(",")),
            sets: Arc::clone(&self.sets),
        }))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[test]
fn the_adaptive_limit_is_exported_as_a_gauge_when_built_and_when_it_changes() {
    let recorder = Captured::default();
    let clock = ManualClock::new();
    metrics::with_local_recorder(&recorder, || {
        let layer = LoadShedLayer::builder()
            .name("api")
            .adaptive(
                Aimd::builder()
                    .initial_limit(8)
                    .latency_threshold(Duration::from_millis(50))
                    .backoff_ratio(0.5)
                    .build()
                    .unwrap(),
            )
            .sample_window(Duration::from_secs(1), 1)
            .clock(clock.clone())
            .build()
            .unwrap();
        let mut service = layer.layer(tower::service_fn(|_: Request<()>| async {
            Ok::<_, std::convert::Infallible>(Response::new(
                http_body_util::Empty::<bytes::Bytes>::new(),
            ))
        }));
        let slow = service.call(Request::new(()));
        clock.advance(Duration::from_secs(2));
        let response = slow.now_or_never().unwrap().unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(layer.handle().limit(), 4);
    });
    let sets = recorder.sets.lock().unwrap().clone();
    let name = format!("{LIMIT_GAUGE}{{layer=api}}");
    assert_eq!(sets, vec![(name.clone(), 8.0), (name, 4.0)]);
}
