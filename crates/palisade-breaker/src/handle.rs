//! [`BreakerHandle`]: read a layer's breakers, force them, reset them, and
//! follow their changes of state.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use palisade_core::key::Key;
use tokio::sync::broadcast;

use crate::layer::{FORCED_CLOSED, FORCED_NONE, FORCED_OPEN, Shared};
use crate::machine::{State, Transition};
use crate::window::Totals;

/// A change of state of one breaker, as sent to subscribers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateChange {
    /// The layer's name.
    pub breaker: Arc<str>,
    /// The key of a per-key breaker, in its readable form (`route:/api/{id}`);
    /// `None` for the layer's shared breaker.
    pub key: Option<String>,
    /// The state before.
    pub from: State,
    /// The state after.
    pub to: State,
    /// When opening: how long until the next probe.
    pub open_for: Option<Duration>,
}

/// Controls and observes a [`CircuitBreakerLayer`](crate::CircuitBreakerLayer)'s
/// breakers. Cheap to clone; get one from
/// [`CircuitBreakerLayer::handle`](crate::CircuitBreakerLayer::handle).
///
/// ```
/// use palisade_breaker::{CircuitBreakerLayer, State};
///
/// let layer = CircuitBreakerLayer::builder("payments").build()?;
/// let handle = layer.handle();
/// handle.force_open();
/// assert_eq!(handle.state(), State::ForcedOpen);
/// handle.reset();
/// assert_eq!(handle.state(), State::Closed);
/// # Ok::<(), palisade_core::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct BreakerHandle {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for BreakerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BreakerHandle")
            .field("breaker", &self.shared.name)
            .field("state", &self.state())
            .finish()
    }
}

impl BreakerHandle {
    /// The layer's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The state of the shared breaker (the only one, unless the layer is
    /// per key), or the forced state.
    pub fn state(&self) -> State {
        self.shared
            .forced_state()
            .unwrap_or_else(|| self.shared.breaker.state())
    }

    /// The state of the breaker of `key`, if the layer is per key and that
    /// key has one.
    pub fn state_of(&self, key: &Key) -> Option<State> {
        if let Some(forced) = self.shared.forced_state() {
            return Some(forced);
        }
        self.shared
            .keyed
            .as_ref()?
            .store
            .get(key.as_bytes(), |slot| slot.map(|s| s.0.breaker.state()))
    }

    /// The shared breaker's window totals.
    pub fn totals(&self) -> Totals {
        self.shared.breaker.totals(&*self.shared.clock)
    }

    /// How long until the shared breaker lets a probe through, while open.
    pub fn retry_after(&self) -> Option<Duration> {
        self.shared.breaker.retry_after(&*self.shared.clock)
    }

    /// Refuses every call, of every key, until [`reset`](Self::reset).
    pub fn force_open(&self) {
        self.force(FORCED_OPEN, State::ForcedOpen);
    }

    /// Lets every call through, counting nothing, until
    /// [`reset`](Self::reset).
    pub fn force_closed(&self) {
        self.force(FORCED_CLOSED, State::ForcedClosed);
    }

    /// Ends any forcing and closes every breaker with an empty window and
    /// no backoff history (per-key breakers reset on their next call).
    pub fn reset(&self) {
        let was_forced = self.shared.forced_state();
        self.shared.forced.store(FORCED_NONE, Ordering::Release);
        self.shared.reset_epoch.fetch_add(1, Ordering::AcqRel);
        let transition = self.shared.breaker.reset();
        let from = was_forced.or(transition.map(|t| t.from));
        if let Some(from) = from.filter(|s| *s != State::Closed) {
            self.shared.announce(
                None,
                Transition {
                    from,
                    to: State::Closed,
                    open_for: None,
                },
            );
        }
    }

    fn force(&self, value: u8, state: State) {
        let before = self.state();
        self.shared.forced.store(value, Ordering::Release);
        if before != state {
            self.shared.announce(
                None,
                Transition {
                    from: before,
                    to: state,
                    open_for: None,
                },
            );
        }
    }

    /// Subscribes to changes of state. Slow subscribers miss the oldest
    /// changes (the channel keeps the last 64), never block the breaker.
    pub fn subscribe(&self) -> broadcast::Receiver<StateChange> {
        self.shared.events.subscribe()
    }
}
