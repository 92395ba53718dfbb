//! Metrics through the `metrics` facade (feature `metrics`).
//!
//! - `palisade_breaker_calls_total{breaker, outcome}`: calls by outcome
//!   (`success`, `failure`, `ignored`);
//! - `palisade_breaker_refused_total{breaker}`: calls refused while open;
//! - `palisade_breaker_transitions_total{breaker, to}`: changes of state;
//! - `palisade_breaker_state{breaker}`: the shared breaker's state
//!   (0 closed, 1 open, 2 half-open, 3 forced open, 4 forced closed).
//!
//! Handles are registered once per layer, so recording is an atomic add.

use metrics::{Counter, Gauge, counter, gauge};

use crate::machine::{Outcome, State};

pub(crate) struct Metrics {
    name: String,
    success: Counter,
    failure: Counter,
    ignored: Counter,
    refused: Counter,
    state: Gauge,
}

impl Metrics {
    pub(crate) fn new(name: &str) -> Self {
        let calls = |outcome: &'static str| counter!("palisade_breaker_calls_total", "breaker" => name.to_owned(), "outcome" => outcome);
        Self {
            name: name.to_owned(),
            success: calls("success"),
            failure: calls("failure"),
            ignored: calls("ignored"),
            refused: counter!("palisade_breaker_refused_total", "breaker" => name.to_owned()),
            state: gauge!("palisade_breaker_state", "breaker" => name.to_owned()),
        }
    }

    #[inline]
    pub(crate) fn outcome(&self, outcome: Outcome) {
        match outcome {
            Outcome::Success => self.success.increment(1),
            Outcome::Failure => self.failure.increment(1),
            Outcome::Ignored => self.ignored.increment(1),
        }
    }

    #[inline]
    pub(crate) fn refused(&self) {
        self.refused.increment(1);
    }

    pub(crate) fn transition(&self, shared_breaker: bool, to: State) {
        counter!("palisade_breaker_transitions_total", "breaker" => self.name.clone(), "to" => to.as_str())
            .increment(1);
        if shared_breaker {
            let value = match to {
                State::Closed => 0.0,
                State::Open => 1.0,
                State::HalfOpen => 2.0,
                State::ForcedOpen => 3.0,
                State::ForcedClosed => 4.0,
            };
            self.state.set(value);
        }
    }
}
