//! The state machine against a plain reference model, for random sequences
//! of calls, outcomes, cancellations, clock steps and manual overrides.

use std::collections::VecDeque;

use palisade_core::clock::ManualClock;
use proptest::prelude::*;

use super::*;
use crate::window::Window;

/// The reference: one mutable struct, no atomics, windows as plain lists.
#[derive(Debug)]
struct Model {
    policy: Arc<BreakerPolicy>,
    kind: ModelKind,
    generation: u32,
    opens: u32,
    consecutive: u32,
    /// (time in ns, failure, slow) of every counted call.
    calls: VecDeque<(u64, bool, bool)>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum ModelKind {
    Closed,
    Open { until_ns: u64 },
    ForcedOpen,
    HalfOpen { out: u32, succeeded: u32 },
    ForcedClosed,
}

#[derive(Clone, Copy, Debug)]
struct ModelTicket {
    generation: u32,
    probe: bool,
    started: u64,
}

impl Model {
    fn state(&self) -> State {
        match self.kind {
            ModelKind::Closed => State::Closed,
            ModelKind::Open { .. } => State::Open,
            ModelKind::ForcedOpen => State::ForcedOpen,
            ModelKind::HalfOpen { .. } => State::HalfOpen,
            ModelKind::ForcedClosed => State::ForcedClosed,
        }
    }

    fn totals(&self, now: u64) -> (u32, u32, u32) {
        let in_window: Vec<_> = match self.policy.window {
            Window::Count { calls } => self.calls.iter().rev().take(calls as usize).collect(),
            Window::Time { duration, buckets } => {
                let width = (duration.as_nanos() as u64 / u64::from(buckets)).max(1);
                let current = now / width;
                self.calls
                    .iter()
                    .filter(|(t, _, _)| current - t / width < u64::from(buckets))
                    .collect()
            }
        };
        let calls = in_window.len() as u32;
        let failures = in_window.iter().filter(|c| c.1).count() as u32;
        let slow = in_window.iter().filter(|c| c.2).count() as u32;
        (calls, failures, slow)
    }

    fn next_generation(&mut self) {
        self.generation = (self.generation + 1) & GENERATION_MASK as u32;
    }

    fn open(&mut self, now: u64) {
        let duration = self
            .policy
            .open_duration(self.opens, u64::from(self.generation) + 1);
        let until_ms = ms_ceil(now + duration.as_nanos() as u64);
        self.next_generation();
        self.kind = ModelKind::Open {
            until_ns: until_ms * NANOS_PER_MS,
        };
        self.opens += 1;
    }

    fn close(&mut self) {
        self.next_generation();
        self.kind = ModelKind::Closed;
        self.calls.clear();
        self.consecutive = 0;
        self.opens = 0;
    }

    fn acquire(&mut self, now: u64) -> Result<ModelTicket, Duration> {
        if let ModelKind::Open { until_ns } = self.kind {
            if now < until_ns {
                return Err(Duration::from_nanos(until_ns - now));
            }
            self.next_generation();
            self.kind = ModelKind::HalfOpen {
                out: 0,
                succeeded: 0,
            };
        }
        let generation = self.generation;
        match &mut self.kind {
            ModelKind::Closed | ModelKind::ForcedClosed => Ok(ModelTicket {
                generation,
                probe: false,
                started: now,
            }),
            ModelKind::ForcedOpen => Err(self.policy.open_duration),
            ModelKind::HalfOpen { out, .. } => {
                if *out >= self.policy.half_open_probes {
                    return Err(PROBES_BUSY_RETRY);
                }
                *out += 1;
                Ok(ModelTicket {
                    generation,
                    probe: true,
                    started: now,
                })
            }
            ModelKind::Open { .. } => unreachable!("handled above"),
        }
    }

    fn record(&mut self, ticket: ModelTicket, outcome: Outcome, now: u64) {
        let slow =
            self.policy.slow_call.is_some() && now - ticket.started >= self.policy.slow_call_nanos;
        if ticket.generation != self.generation {
            return;
        }
        if ticket.probe {
            let ModelKind::HalfOpen { out, succeeded } = &mut self.kind else {
                return;
            };
            let slow_fails = slow && self.policy.slow_rate_ppm.is_some();
            if outcome == Outcome::Failure || slow_fails {
                self.open(now);
            } else if outcome == Outcome::Ignored {
                *out = out.saturating_sub(1);
            } else {
                *succeeded += 1;
                if *succeeded >= self.policy.half_open_probes {
                    self.close();
                }
            }
            return;
        }
        if self.kind != ModelKind::Closed {
            return;
        }
        if outcome == Outcome::Ignored && !slow {
            return;
        }
        let failure = outcome == Outcome::Failure;
        let mut trip = false;
        if let Some(limit) = self.policy.consecutive_failures {
            match outcome {
                Outcome::Failure => {
                    self.consecutive += 1;
                    trip = self.consecutive >= limit;
                }
                Outcome::Success => self.consecutive = 0,
                Outcome::Ignored => {}
            }
        }
        self.calls.push_back((now, failure, slow));
        let (calls, failures, slow) = self.totals(now);
        if trip || self.policy.trips(calls, failures, slow) {
            self.open(now);
        }
    }

    fn release(&mut self, ticket: ModelTicket) {
        if !ticket.probe || ticket.generation != self.generation {
            return;
        }
        if let ModelKind::HalfOpen { out, .. } = &mut self.kind {
            *out = out.saturating_sub(1);
        }
    }

    fn set(&mut self, kind: ModelKind) {
        self.next_generation();
        if kind == ModelKind::Closed {
            self.calls.clear();
            self.consecutive = 0;
            self.opens = 0;
        }
        self.kind = kind;
    }
}

#[derive(Clone, Debug)]
enum Op {
    Advance(u64),
    Acquire,
    Finish(usize, Outcome),
    Release(usize),
    ForceOpen,
    ForceClosed,
    Reset,
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        3 => Just(Outcome::Success),
        3 => Just(Outcome::Failure),
        1 => Just(Outcome::Ignored),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..3_000).prop_map(Op::Advance),
        6 => Just(Op::Acquire),
        6 => (0usize..8, outcome()).prop_map(|(i, o)| Op::Finish(i, o)),
        1 => (0usize..8).prop_map(Op::Release),
        1 => Just(Op::ForceOpen),
        1 => Just(Op::ForceClosed),
        1 => Just(Op::Reset),
    ]
}

fn policy() -> impl Strategy<Value = BreakerPolicy> {
    (
        prop_oneof![
            (1u32..12).prop_map(Window::count),
            (1u32..6, 1u64..20).prop_map(|(buckets, secs)| Window::Time {
                duration: Duration::from_secs(secs),
                buckets,
            }),
        ],
        prop::option::of(1u32..=10),
        prop::option::of(1u32..5),
        prop::option::of((1u64..2_000, 1u32..=10)),
        0u32..6,
        1u32..4,
        1u64..5_000,
        0u32..2,
        any::<u64>(),
    )
        .prop_filter_map(
            "a policy that can open",
            |(window, rate, consecutive, slow, minimum, probes, open_ms, jitter, seed)| {
                let mut builder = BreakerPolicy::builder()
                    .window(window)
                    .minimum_calls(minimum)
                    .half_open_probes(probes)
                    .open_duration(Duration::from_millis(open_ms))
                    .max_open_duration(Duration::from_millis(open_ms * 8))
                    .jitter(f64::from(jitter) * 0.5)
                    .jitter_seed(seed);
                builder = match rate {
                    Some(tenths) => builder.failure_rate(f64::from(tenths) / 10.0),
                    None => builder.no_failure_rate(),
                };
                if let Some(n) = consecutive {
                    builder = builder.consecutive_failures(n);
                }
                if let Some((ms, tenths)) = slow {
                    builder =
                        builder.slow_calls(Duration::from_millis(ms), f64::from(tenths) / 10.0);
                }
                builder.build().ok()
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn breaker_matches_the_reference_model(policy in policy(), ops in prop::collection::vec(op(), 1..200)) {
        let policy = Arc::new(policy);
        let clock = ManualClock::new();
        let breaker = Breaker::new(policy.clone());
        let mut model = Model {
            policy,
            kind: ModelKind::Closed,
            generation: 0,
            opens: 0,
            consecutive: 0,
            calls: VecDeque::new(),
        };
        let mut pending: Vec<(Ticket, ModelTicket)> = Vec::new();
        for op in ops {
            let now = clock.now().as_u64();
            match op {
                Op::Advance(ms) => clock.advance(Duration::from_millis(ms)),
                Op::Acquire => {
                    let real = breaker.acquire(&clock).ticket;
                    let expected = model.acquire(now);
                    match (real, expected) {
                        (Ok(ticket), Ok(model_ticket)) => {
                            prop_assert_eq!(ticket.is_probe(), model_ticket.probe);
                            pending.push((ticket, model_ticket));
                        }
                        (Err(wait), Err(model_wait)) => prop_assert_eq!(wait, model_wait),
                        (real, expected) => prop_assert!(false, "acquire: {real:?} vs model {expected:?}"),
                    }
                }
                Op::Finish(i, outcome) => {
                    if !pending.is_empty() {
                        let (ticket, model_ticket) = pending.remove(i % pending.len());
                        breaker.record(ticket, outcome, &clock);
                        model.record(model_ticket, outcome, now);
                    }
                }
                Op::Release(i) => {
                    if !pending.is_empty() {
                        let (ticket, model_ticket) = pending.remove(i % pending.len());
                        breaker.release(ticket);
                        model.release(model_ticket);
                    }
                }
                Op::ForceOpen => {
                    breaker.force_open();
                    model.set(ModelKind::ForcedOpen);
                }
                Op::ForceClosed => {
                    breaker.force_closed();
                    model.set(ModelKind::ForcedClosed);
                }
                Op::Reset => {
                    breaker.reset();
                    model.set(ModelKind::Closed);
                }
            }
            prop_assert_eq!(breaker.state(), model.state());
            let now = clock.now().as_u64();
            let totals = breaker.totals(&clock);
            if model.kind == ModelKind::Closed {
                let (calls, failures, slow) = model.totals(now);
                prop_assert_eq!((totals.calls, totals.failures, totals.slow), (calls, failures, slow));
            }
        }
    }
}

fn clock_and_breaker(policy: BreakerPolicy) -> (ManualClock, Breaker) {
    (ManualClock::new(), Breaker::new(Arc::new(policy)))
}

fn policy_or_panic(builder: crate::policy::BreakerPolicyBuilder) -> BreakerPolicy {
    match builder.build() {
        Ok(policy) => policy,
        Err(error) => panic!("test policy is valid: {error}"),
    }
}

fn ticket(breaker: &Breaker, clock: &ManualClock) -> Ticket {
    match breaker.acquire(clock).ticket {
        Ok(ticket) => ticket,
        Err(wait) => panic!("expected a ticket, refused for {wait:?}"),
    }
}

#[test]
fn failure_rate_over_the_minimum_calls_opens_and_reports_the_transition() {
    let (clock, breaker) = clock_and_breaker(policy_or_panic(
        BreakerPolicy::builder()
            .window(Window::count(10))
            .failure_rate(0.5)
            .minimum_calls(4)
            .open_duration(Duration::from_secs(3))
            .jitter(0.0),
    ));
    for outcome in [Outcome::Success, Outcome::Failure, Outcome::Success] {
        let t = ticket(&breaker, &clock);
        assert_eq!(breaker.record(t, outcome, &clock), None);
    }
    let t = ticket(&breaker, &clock);
    let transition = breaker.record(t, Outcome::Failure, &clock);
    assert_eq!(
        transition,
        Some(Transition {
            from: State::Closed,
            to: State::Open,
            open_for: Some(Duration::from_secs(3)),
        })
    );
    assert_eq!(breaker.retry_after(&clock), Some(Duration::from_secs(3)));
}

#[test]
fn ignored_outcomes_do_not_count() {
    let (clock, breaker) = clock_and_breaker(policy_or_panic(
        BreakerPolicy::builder().minimum_calls(1).failure_rate(0.5),
    ));
    for _ in 0..50 {
        let t = ticket(&breaker, &clock);
        breaker.record(t, Outcome::Ignored, &clock);
    }
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(breaker.totals(&clock).calls, 0);
}

#[test]
fn a_dropped_probe_gives_its_slot_back() {
    let (clock, breaker) = clock_and_breaker(policy_or_panic(
        BreakerPolicy::builder()
            .consecutive_failures(1)
            .half_open_probes(1)
            .open_duration(Duration::from_secs(1))
            .jitter(0.0),
    ));
    let t = ticket(&breaker, &clock);
    breaker.record(t, Outcome::Failure, &clock);
    clock.advance(Duration::from_secs(1));
    let probe = ticket(&breaker, &clock);
    assert!(probe.is_probe());
    // The only slot is taken.
    assert_eq!(
        breaker.acquire(&clock).ticket.err(),
        Some(PROBES_BUSY_RETRY)
    );
    breaker.release(probe);
    let probe = ticket(&breaker, &clock);
    assert!(probe.is_probe());
}

#[test]
fn a_failed_probe_reopens_for_longer() {
    let (clock, breaker) = clock_and_breaker(policy_or_panic(
        BreakerPolicy::builder()
            .consecutive_failures(1)
            .half_open_probes(1)
            .open_duration(Duration::from_secs(1))
            .backoff_multiplier(3.0)
            .jitter(0.0),
    ));
    let t = ticket(&breaker, &clock);
    breaker.record(t, Outcome::Failure, &clock);
    clock.advance(Duration::from_secs(1));
    let probe = ticket(&breaker, &clock);
    let transition = breaker.record(probe, Outcome::Failure, &clock);
    assert_eq!(
        transition.and_then(|t| t.open_for),
        Some(Duration::from_secs(3))
    );
    assert_eq!(breaker.state(), State::Open);
}

#[test]
fn a_call_admitted_while_closed_cannot_close_a_half_open_breaker() {
    let (clock, breaker) = clock_and_breaker(policy_or_panic(
        BreakerPolicy::builder()
            .consecutive_failures(1)
            .half_open_probes(1)
            .open_duration(Duration::from_secs(1))
            .jitter(0.0),
    ));
    let slow_call = ticket(&breaker, &clock);
    let t = ticket(&breaker, &clock);
    breaker.record(t, Outcome::Failure, &clock);
    clock.advance(Duration::from_secs(1));
    let _probe = ticket(&breaker, &clock);
    assert_eq!(breaker.record(slow_call, Outcome::Success, &clock), None);
    assert_eq!(breaker.state(), State::HalfOpen);
}

#[test]
fn a_cancelled_call_past_the_slow_threshold_counts_as_slow() {
    let (clock, breaker) = clock_and_breaker(policy_or_panic(
        BreakerPolicy::builder()
            .no_failure_rate()
            .slow_calls(Duration::from_millis(500), 0.5)
            .minimum_calls(2),
    ));
    for _ in 0..2 {
        let t = ticket(&breaker, &clock);
        clock.advance(Duration::from_millis(600));
        breaker.record(t, Outcome::Ignored, &clock);
    }
    assert_eq!(breaker.state(), State::Open);
}

#[test]
fn forced_states_hold_until_reset() {
    let (clock, breaker) = clock_and_breaker(policy_or_panic(
        BreakerPolicy::builder().consecutive_failures(1),
    ));
    assert!(breaker.force_open().is_some());
    clock.advance(Duration::from_secs(3_600));
    assert!(breaker.acquire(&clock).ticket.is_err());
    assert_eq!(breaker.state(), State::ForcedOpen);
    breaker.force_closed();
    for _ in 0..10 {
        let t = ticket(&breaker, &clock);
        breaker.record(t, Outcome::Failure, &clock);
    }
    assert_eq!(breaker.state(), State::ForcedClosed);
    breaker.reset();
    assert_eq!(breaker.state(), State::Closed);
}

#[test]
fn many_threads_open_once_and_probe_within_the_bound() {
    let policy = policy_or_panic(
        BreakerPolicy::builder()
            .window(Window::count(50))
            .minimum_calls(10)
            .failure_rate(0.5)
            .half_open_probes(2)
            .open_duration(Duration::from_millis(10))
            .jitter(0.0),
    );
    let breaker = Arc::new(Breaker::new(Arc::new(policy)));
    let clock = ManualClock::new();
    let opened = Arc::new(AtomicU32::new(0));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let breaker = breaker.clone();
            let clock = clock.clone();
            let opened = opened.clone();
            std::thread::spawn(move || {
                for _ in 0..1_000 {
                    if let Ok(t) = breaker.acquire(&clock).ticket
                        && let Some(transition) = breaker.record(t, Outcome::Failure, &clock)
                        && transition.to == State::Open
                    {
                        opened.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        assert!(thread.join().is_ok());
    }
    // The clock never moved: exactly one opening, and no probe ran.
    assert_eq!(opened.load(Ordering::Relaxed), 1);
    assert_eq!(breaker.state(), State::Open);
    // Once the clock moves, at most two probes are admitted at a time.
    clock.advance(Duration::from_millis(10));
    let admitted = (0..10)
        .filter(|_| breaker.acquire(&clock).ticket.is_ok())
        .count();
    assert_eq!(admitted, 2);
}
