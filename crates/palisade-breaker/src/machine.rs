//! The breaker's state machine: pure, clock-injected, and lock-free.
//!
//! ```text
//!            trips (rate or consecutive failures)
//!   Closed ─────────────────────────────────────▶ Open
//!     ▲                                            │ open duration passed,
//!     │ every probe succeeded                      ▼ next call
//!     └────────────────────────────────────── HalfOpen ──▶ Open (a probe failed;
//!                                                          longer, jittered)
//! ```
//!
//! The whole state (kind, generation, reopening time) is one `AtomicU64`
//! changed by compare-and-swap, and the half-open probe slots another; the
//! closed path is one atomic load to admit and a few atomic adds to record.
//! Outcomes are recorded against the generation they were admitted in, so a
//! slow call admitted before the breaker opened cannot count as a probe.
//!
//! ```
//! use palisade_breaker::{Breaker, BreakerPolicy, Outcome, State};
//! use palisade_core::clock::ManualClock;
//! use std::time::Duration;
//!
//! let clock = ManualClock::new();
//! let policy = BreakerPolicy::builder()
//!     .consecutive_failures(2)
//!     .open_duration(Duration::from_secs(10))
//!     .jitter(0.0)
//!     .half_open_probes(1)
//!     .build()?;
//! let breaker = Breaker::new(policy.into());
//! for _ in 0..2 {
//!     let ticket = breaker.acquire(&clock).ticket.expect("closed");
//!     breaker.record(ticket, Outcome::Failure, &clock);
//! }
//! assert_eq!(breaker.state(), State::Open);
//! assert_eq!(breaker.acquire(&clock).ticket.err(), Some(Duration::from_secs(10)));
//!
//! clock.advance(Duration::from_secs(10));
//! let probe = breaker.acquire(&clock).ticket.expect("a probe");
//! assert_eq!(breaker.state(), State::HalfOpen);
//! breaker.record(probe, Outcome::Success, &clock);
//! assert_eq!(breaker.state(), State::Closed);
//! # Ok::<(), palisade_core::ConfigError>(())
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use palisade_core::clock::{Clock, Nanos};

use crate::policy::BreakerPolicy;
use crate::window::{Recorder, Sample, Totals};

/// A breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
    /// Calls pass; outcomes are counted.
    Closed,
    /// Calls are refused until the open duration passes.
    Open,
    /// A bounded number of probe calls pass; the rest are refused.
    HalfOpen,
    /// Held open by hand until reset.
    ForcedOpen,
    /// Held closed by hand until reset: calls pass and nothing is counted.
    ForcedClosed,
}

impl State {
    /// A name for logs and metrics (`half_open`).
    pub const fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::ForcedOpen => "forced_open",
            State::ForcedClosed => "forced_closed",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a call ended, as a classifier judged it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The upstream did its job.
    Success,
    /// The upstream failed (5xx, a failing gRPC status, an inner error).
    Failure,
    /// Says nothing about the upstream's health (4xx, a cancelled call); not
    /// counted, unless it was slow.
    Ignored,
}

/// A change of state, for events and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The state before.
    pub from: State,
    /// The state after.
    pub to: State,
    /// When opening: how long until the next probe.
    pub open_for: Option<Duration>,
}

/// Permission to make one call: give it back with [`Breaker::record`] or
/// [`Breaker::release`]. A probe's slot stays taken until then, so hold
/// tickets in a guard that releases on drop (the layer does).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "a ticket must be recorded or released"]
pub struct Ticket {
    generation: u32,
    probe: bool,
    /// When the call started, if slow calls are watched.
    started: Option<Nanos>,
}

impl Ticket {
    /// Whether this call is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

/// What [`Breaker::acquire`] decided.
#[derive(Debug)]
pub struct Acquired {
    /// A ticket, or how long until the next probe may run.
    pub ticket: Result<Ticket, Duration>,
    /// The change of state this call caused (open → half-open).
    pub transition: Option<Transition>,
}

/// One circuit breaker. Share it behind an `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct Breaker {
    policy: Arc<BreakerPolicy>,
    /// Kind (2 bits) | generation (20 bits) | reopening time in ms (42 bits).
    word: AtomicU64,
    /// Generation (20 bits) | probes out (20 bits) | probes succeeded (20 bits).
    probes: AtomicU64,
    /// Consecutive openings since the breaker last closed, for the backoff.
    opens: AtomicU32,
    consecutive_failures: AtomicU32,
    window: Recorder,
}

const KIND_CLOSED: u64 = 0;
const KIND_OPEN: u64 = 1;
const KIND_HALF_OPEN: u64 = 2;
const KIND_FORCED_CLOSED: u64 = 3;
const GENERATION_BITS: u32 = 20;
const GENERATION_MASK: u64 = (1 << GENERATION_BITS) - 1;
const UNTIL_SHIFT: u32 = 2 + GENERATION_BITS;
/// A reopening time that never comes: forced open.
const UNTIL_NEVER: u64 = (1 << (64 - UNTIL_SHIFT)) - 1;
const NANOS_PER_MS: u64 = 1_000_000;
/// How long callers are told to wait while every probe slot is taken.
const PROBES_BUSY_RETRY: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Word {
    kind: u64,
    generation: u32,
    until_ms: u64,
}

impl Word {
    #[inline]
    fn unpack(word: u64) -> Self {
        Word {
            kind: word & 3,
            generation: ((word >> 2) & GENERATION_MASK) as u32,
            until_ms: word >> UNTIL_SHIFT,
        }
    }

    #[inline]
    fn pack(self) -> u64 {
        self.kind
            | (u64::from(self.generation) & GENERATION_MASK) << 2
            | self.until_ms << UNTIL_SHIFT
    }

    fn next(self, kind: u64, until_ms: u64) -> Word {
        Word {
            kind,
            generation: ((u64::from(self.generation) + 1) & GENERATION_MASK) as u32,
            until_ms,
        }
    }

    fn state(self) -> State {
        match self.kind {
            KIND_CLOSED => State::Closed,
            KIND_OPEN if self.until_ms == UNTIL_NEVER => State::ForcedOpen,
            KIND_OPEN => State::Open,
            KIND_HALF_OPEN => State::HalfOpen,
            _ => State::ForcedClosed,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Probes {
    generation: u32,
    out: u32,
    succeeded: u32,
}

impl Probes {
    #[inline]
    fn unpack(word: u64, generation: u32) -> Self {
        let stored = (word & GENERATION_MASK) as u32;
        if stored != generation {
            // Slots of an earlier half-open period: this one starts empty.
            return Probes {
                generation,
                out: 0,
                succeeded: 0,
            };
        }
        Probes {
            generation,
            out: ((word >> GENERATION_BITS) & GENERATION_MASK) as u32,
            succeeded: ((word >> (2 * GENERATION_BITS)) & GENERATION_MASK) as u32,
        }
    }

    #[inline]
    fn pack(self) -> u64 {
        u64::from(self.generation)
            | u64::from(self.out) << GENERATION_BITS
            | u64::from(self.succeeded) << (2 * GENERATION_BITS)
    }
}

fn ms_ceil(nanos: u64) -> u64 {
    nanos.div_ceil(NANOS_PER_MS).min(UNTIL_NEVER - 1)
}

impl Breaker {
    /// A closed breaker following `policy`.
    pub fn new(policy: Arc<BreakerPolicy>) -> Self {
        let window = Recorder::new(&policy.window);
        Self {
            policy,
            word: AtomicU64::new(0),
            // Generation 0's probe word must read as empty: mark it with a
            // generation that no half-open period starts with.
            probes: AtomicU64::new(GENERATION_MASK),
            opens: AtomicU32::new(0),
            consecutive_failures: AtomicU32::new(0),
            window,
        }
    }

    /// The policy.
    pub fn policy(&self) -> &BreakerPolicy {
        &self.policy
    }

    /// The current state. An open breaker whose open duration has passed
    /// reads `Open` until a call makes it half-open.
    #[inline]
    pub fn state(&self) -> State {
        Word::unpack(self.word.load(Ordering::Acquire)).state()
    }

    /// The totals of the current window.
    pub fn totals<C: Clock + ?Sized>(&self, clock: &C) -> Totals {
        let now = if self.window.needs_time() {
            clock.now()
        } else {
            Nanos::ZERO
        };
        self.window.totals(now)
    }

    /// How long until the next probe may run, while open.
    pub fn retry_after<C: Clock + ?Sized>(&self, clock: &C) -> Option<Duration> {
        let word = Word::unpack(self.word.load(Ordering::Acquire));
        match word.state() {
            State::Open => {
                let now = clock.now().as_u64();
                Some(Duration::from_nanos(
                    (word.until_ms * NANOS_PER_MS).saturating_sub(now),
                ))
            }
            State::ForcedOpen => Some(self.policy.open_duration),
            State::HalfOpen => Some(PROBES_BUSY_RETRY),
            _ => None,
        }
    }

    /// Asks to make a call. The closed path reads the clock only when slow
    /// calls are watched.
    #[inline]
    pub fn acquire<C: Clock + ?Sized>(&self, clock: &C) -> Acquired {
        let word = Word::unpack(self.word.load(Ordering::Acquire));
        match word.kind {
            KIND_CLOSED | KIND_FORCED_CLOSED => Acquired {
                ticket: Ok(Ticket {
                    generation: word.generation,
                    probe: false,
                    started: self.started(clock),
                }),
                transition: None,
            },
            _ => self.acquire_slow(word, clock),
        }
    }

    #[inline]
    fn started<C: Clock + ?Sized>(&self, clock: &C) -> Option<Nanos> {
        self.policy.slow_call.map(|_| clock.now())
    }

    #[cold]
    fn acquire_slow<C: Clock + ?Sized>(&self, mut word: Word, clock: &C) -> Acquired {
        let now = clock.now();
        let mut transition = None;
        loop {
            match word.kind {
                KIND_CLOSED | KIND_FORCED_CLOSED => {
                    return Acquired {
                        ticket: Ok(Ticket {
                            generation: word.generation,
                            probe: false,
                            started: self.policy.slow_call.map(|_| now),
                        }),
                        transition,
                    };
                }
                KIND_OPEN => {
                    let until = word.until_ms.saturating_mul(NANOS_PER_MS);
                    if word.until_ms == UNTIL_NEVER || now.as_u64() < until {
                        let wait = if word.until_ms == UNTIL_NEVER {
                            self.policy.open_duration
                        } else {
                            Duration::from_nanos(until - now.as_u64())
                        };
                        return Acquired {
                            ticket: Err(wait),
                            transition,
                        };
                    }
                    let half_open = word.next(KIND_HALF_OPEN, 0);
                    match self.word.compare_exchange(
                        word.pack(),
                        half_open.pack(),
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => {
                            transition = Some(Transition {
                                from: State::Open,
                                to: State::HalfOpen,
                                open_for: None,
                            });
                            word = half_open;
                        }
                        Err(actual) => word = Word::unpack(actual),
                    }
                }
                _ => {
                    // Half-open: take a probe slot if one is free.
                    let mut current = self.probes.load(Ordering::Acquire);
                    loop {
                        let probes = Probes::unpack(current, word.generation);
                        if probes.out >= self.policy.half_open_probes {
                            return Acquired {
                                ticket: Err(PROBES_BUSY_RETRY),
                                transition,
                            };
                        }
                        let taken = Probes {
                            out: probes.out + 1,
                            ..probes
                        };
                        match self.probes.compare_exchange_weak(
                            current,
                            taken.pack(),
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        ) {
                            Ok(_) => break,
                            Err(actual) => current = actual,
                        }
                    }
                    // The slot was taken for this generation; if the breaker
                    // moved on meanwhile, the outcome will be ignored.
                    return Acquired {
                        ticket: Ok(Ticket {
                            generation: word.generation,
                            probe: true,
                            started: self.policy.slow_call.map(|_| now),
                        }),
                        transition,
                    };
                }
            }
        }
    }

    /// Records how a call ended. Returns the change of state it caused.
    #[inline]
    pub fn record<C: Clock + ?Sized>(
        &self,
        ticket: Ticket,
        outcome: Outcome,
        clock: &C,
    ) -> Option<Transition> {
        let needs_now = ticket.started.is_some() || self.window.needs_time();
        let now = if needs_now { clock.now() } else { Nanos::ZERO };
        let slow = ticket.started.is_some_and(|started| {
            now.as_u64().saturating_sub(started.as_u64()) >= self.policy.slow_call_nanos
        });
        if ticket.probe {
            return self.record_probe(ticket, outcome, slow, clock);
        }
        let word = Word::unpack(self.word.load(Ordering::Acquire));
        if word.kind != KIND_CLOSED || word.generation != ticket.generation {
            return None;
        }
        let failure = match outcome {
            Outcome::Success => false,
            Outcome::Failure => true,
            Outcome::Ignored if slow => false,
            Outcome::Ignored => return None,
        };
        let mut consecutive_trip = false;
        if let Some(limit) = self.policy.consecutive_failures {
            match outcome {
                Outcome::Failure => {
                    let count = self
                        .consecutive_failures
                        .fetch_add(1, Ordering::AcqRel)
                        .saturating_add(1);
                    consecutive_trip = count >= limit;
                }
                Outcome::Success => {
                    if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
                        self.consecutive_failures.store(0, Ordering::Release);
                    }
                }
                Outcome::Ignored => {}
            }
        }
        let totals = self.window.record(Sample { failure, slow }, now);
        if consecutive_trip
            || self
                .policy
                .trips(totals.calls, totals.failures, totals.slow)
        {
            return self.open(word, clock.now());
        }
        None
    }

    fn record_probe<C: Clock + ?Sized>(
        &self,
        ticket: Ticket,
        outcome: Outcome,
        slow: bool,
        clock: &C,
    ) -> Option<Transition> {
        let word = Word::unpack(self.word.load(Ordering::Acquire));
        if word.kind != KIND_HALF_OPEN || word.generation != ticket.generation {
            return None;
        }
        let slow_fails = slow && self.policy.slow_rate_ppm.is_some();
        match outcome {
            Outcome::Failure => self.open(word, clock.now()),
            _ if slow_fails => self.open(word, clock.now()),
            Outcome::Ignored => {
                self.release_probe(ticket.generation);
                None
            }
            Outcome::Success => {
                let mut current = self.probes.load(Ordering::Acquire);
                let succeeded = loop {
                    let probes = Probes::unpack(current, ticket.generation);
                    let next = Probes {
                        succeeded: probes.succeeded + 1,
                        ..probes
                    };
                    match self.probes.compare_exchange_weak(
                        current,
                        next.pack(),
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => break next.succeeded,
                        Err(actual) => current = actual,
                    }
                };
                if succeeded < self.policy.half_open_probes {
                    return None;
                }
                self.close(word)
            }
        }
    }

    /// Gives back a ticket whose call ended with no outcome (the caller went
    /// away): a probe's slot is freed for the next call.
    pub fn release(&self, ticket: Ticket) {
        if ticket.probe {
            self.release_probe(ticket.generation);
        }
    }

    fn release_probe(&self, generation: u32) {
        let mut current = self.probes.load(Ordering::Acquire);
        loop {
            let probes = Probes::unpack(current, generation);
            if probes.out == 0 {
                return;
            }
            let next = Probes {
                out: probes.out - 1,
                ..probes
            };
            match self.probes.compare_exchange_weak(
                current,
                next.pack(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    /// Opens from `from`, unless another call changed the state first.
    fn open(&self, from: Word, now: Nanos) -> Option<Transition> {
        let opens = self.opens.load(Ordering::Acquire);
        let next_generation = u64::from(from.generation) + 1;
        let duration = self.policy.open_duration(opens, next_generation);
        let until = ms_ceil(now.saturating_add(duration).as_u64());
        let open = from.next(KIND_OPEN, until);
        self.word
            .compare_exchange(
                from.pack(),
                open.pack(),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .ok()?;
        self.opens.fetch_add(1, Ordering::AcqRel);
        Some(Transition {
            from: from.state(),
            to: State::Open,
            open_for: Some(Duration::from_nanos(
                (until * NANOS_PER_MS).saturating_sub(now.as_u64()),
            )),
        })
    }

    fn close(&self, from: Word) -> Option<Transition> {
        let closed = from.next(KIND_CLOSED, 0);
        // Clear before publishing, so the first calls of the new closed
        // period do not meet the failures that opened the last one.
        self.window.clear();
        self.consecutive_failures.store(0, Ordering::Release);
        self.word
            .compare_exchange(
                from.pack(),
                closed.pack(),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .ok()?;
        self.opens.store(0, Ordering::Release);
        Some(Transition {
            from: from.state(),
            to: State::Closed,
            open_for: None,
        })
    }

    fn set(&self, kind: u64, until_ms: u64) -> Option<Transition> {
        let mut current = self.word.load(Ordering::Acquire);
        loop {
            let from = Word::unpack(current);
            let to = from.next(kind, until_ms);
            if kind == KIND_CLOSED {
                self.window.clear();
                self.consecutive_failures.store(0, Ordering::Release);
                self.opens.store(0, Ordering::Release);
            }
            match self.word.compare_exchange(
                current,
                to.pack(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) if from.state() == to.state() => return None,
                Ok(_) => {
                    return Some(Transition {
                        from: from.state(),
                        to: to.state(),
                        open_for: None,
                    });
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Holds the breaker open until [`reset`](Self::reset).
    pub fn force_open(&self) -> Option<Transition> {
        self.set(KIND_OPEN, UNTIL_NEVER)
    }

    /// Holds the breaker closed, counting nothing, until
    /// [`reset`](Self::reset).
    pub fn force_closed(&self) -> Option<Transition> {
        self.set(KIND_FORCED_CLOSED, 0)
    }

    /// Closes the breaker with an empty window and no backoff history.
    pub fn reset(&self) -> Option<Transition> {
        self.set(KIND_CLOSED, 0)
    }

    /// Whether the breaker equals a new one (closed, nothing counted), so a
    /// keyed store may drop it.
    pub(crate) fn is_fresh(&self, now: Nanos) -> bool {
        self.state() == State::Closed
            && self.consecutive_failures.load(Ordering::Acquire) == 0
            && self.window.is_empty(now)
    }
}

#[cfg(test)]
mod tests;
