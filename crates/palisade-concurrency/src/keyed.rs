//! Per-key in-flight counts and their FIFO queues, in core's bounded keyed
//! store: a key with nothing in flight and nobody waiting is idle, equal to
//! a fresh key, so the store may evict it and memory stays bounded.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use palisade_core::clock::{Clock, Nanos};
use palisade_core::store::{Idle, KeyedStore};
use tokio::sync::oneshot;

use crate::limit::LimitShared;

/// One key's state.
#[derive(Debug, Default)]
pub(crate) struct KeyState {
    in_flight: u32,
    /// Waiting requests, oldest first. A place is handed to a waiter by
    /// sending on its channel, without `in_flight` going down.
    waiters: VecDeque<oneshot::Sender<()>>,
}

impl Idle for KeyState {
    #[inline]
    fn is_idle(&self, _now: Nanos) -> bool {
        self.in_flight == 0 && self.waiters.is_empty()
    }
}

/// What an attempt to enter a key's limit gave.
pub(crate) enum Acquire {
    Admitted,
    /// In the queue: a place arrives on this channel.
    Queued(oneshot::Receiver<()>),
    /// Over the limit, and the queue (if any) is full.
    Full,
    /// A new key found the store full of live keys.
    StoreFull,
}

#[derive(Debug)]
pub(crate) struct KeyedCounts {
    store: KeyedStore<KeyState>,
    clock: Arc<dyn Clock>,
}

impl KeyedCounts {
    pub(crate) fn new(store: KeyedStore<KeyState>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    #[inline]
    pub(crate) fn hash(&self, bytes: &[u8]) -> u64 {
        self.store.hash_key(bytes)
    }

    /// Enters `hash`'s limit, or its queue of at most `max_waiting`.
    #[inline]
    pub(crate) fn acquire(&self, hash: u64, limit: u32, max_waiting: u32) -> Acquire {
        let result = self
            .store
            .update_hashed(hash, self.clock.now(), KeyState::default, |state| {
                // Newcomers never pass waiters: with anyone waiting, every
                // place is taken (a released place goes to a waiter first).
                if state.in_flight < limit && state.waiters.is_empty() {
                    state.in_flight += 1;
                    return Acquire::Admitted;
                }
                if (state.waiters.len() as u64) < u64::from(max_waiting) {
                    let (sender, receiver) = oneshot::channel();
                    state.waiters.push_back(sender);
                    return Acquire::Queued(receiver);
                }
                Acquire::Full
            });
        result.unwrap_or(Acquire::StoreFull)
    }

    /// Gives a place back: to the oldest waiter still waiting, else to the
    /// count.
    pub(crate) fn release(&self, hash: u64) {
        // The key holds a place, so it is live and present: the store never
        // refuses it (no new entry is made).
        let _ = self
            .store
            .update_hashed(hash, self.clock.now(), KeyState::default, |state| {
                while let Some(waiter) = state.waiters.pop_front() {
                    // Fails only when the waiter gave up (its receiver is
                    // closed): try the next one.
                    if waiter.send(()).is_ok() {
                        return;
                    }
                }
                state.in_flight = state.in_flight.saturating_sub(1);
            });
    }

    /// Removes waiters that gave up, so they do not hold queue places.
    pub(crate) fn forget_cancelled(&self, hash: u64) {
        let _ = self
            .store
            .update_hashed(hash, self.clock.now(), KeyState::default, |state| {
                state.waiters.retain(|waiter| !waiter.is_closed());
            });
    }

    /// The requests in flight under `hash`.
    pub(crate) fn in_flight(&self, hash: u64) -> u32 {
        self.store
            .get_hashed(hash, |state| state.map_or(0, |s| s.in_flight))
    }
}

/// A request in a key's queue. Dropping it (the client went away, or the
/// wait timed out) leaves the queue; a place handed to it in the meantime
/// is passed on, never lost.
pub(crate) struct Waiter {
    receiver: Option<oneshot::Receiver<()>>,
    shared: Arc<LimitShared>,
    hash: u64,
}

impl Waiter {
    pub(crate) fn new(
        receiver: oneshot::Receiver<()>,
        shared: Arc<LimitShared>,
        hash: u64,
    ) -> Self {
        Self {
            receiver: Some(receiver),
            shared,
            hash,
        }
    }

    /// Waits at most `max_wait` for a place; `true` when one was handed
    /// over (the caller then owns it).
    pub(crate) async fn wait(mut self, max_wait: Duration) -> bool {
        let Some(receiver) = self.receiver.as_mut() else {
            return false;
        };
        match tokio::time::timeout(max_wait, receiver).await {
            Ok(Ok(())) => {
                self.receiver = None;
                true
            }
            // The sender went away without a place (the layer is gone).
            Ok(Err(_)) => false,
            // Timed out; a place may have arrived at the last moment.
            Err(_) => self.take_late_place(),
        }
    }

    /// Closes the channel, so no place can arrive any more, and tells
    /// whether one arrived before.
    fn take_late_place(&mut self) -> bool {
        let Some(mut receiver) = self.receiver.take() else {
            return false;
        };
        receiver.close();
        if receiver.try_recv().is_ok() {
            return true;
        }
        self.shared.counts().forget_cancelled(self.hash);
        false
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if self.receiver.is_some() && self.take_late_place() {
            // A place was handed to a request nobody waits for any more.
            self.shared.counts().release(self.hash);
        }
    }
}
