//! A permit: one admitted request's place in a limit, given back exactly
//! once, when the permit is dropped.
//!
//! The permit travels from `call` into the response future, then into the
//! response body ([`PermitBody`](crate::PermitBody)), so whichever ends the
//! request (the body's last frame, the body dropped, the future dropped
//! before the response, the inner service's error) drops it, and Rust's
//! ownership makes "exactly once" hold by construction.

use std::fmt;
use std::sync::Arc;

use palisade_core::clock::Nanos;

use crate::limit::LimitShared;
use crate::shed::ShedShared;

pub(crate) struct Permit {
    kind: Kind,
}

enum Kind {
    /// A global limit without a queue: one atomic counter.
    Counter(Arc<LimitShared>),
    /// A per-key limit (or a queued global one): a count in the keyed store.
    Keyed(Arc<LimitShared>, u64),
    /// A load-shedding slot; `admitted_at` is set when the limit is
    /// adaptive and the latency is not yet measured.
    Shed {
        shared: Arc<ShedShared>,
        admitted_at: Option<Nanos>,
    },
}

impl Permit {
    #[inline]
    pub(crate) fn counter(shared: Arc<LimitShared>) -> Self {
        Self {
            kind: Kind::Counter(shared),
        }
    }

    #[inline]
    pub(crate) fn keyed(shared: Arc<LimitShared>, hash: u64) -> Self {
        Self {
            kind: Kind::Keyed(shared, hash),
        }
    }

    #[inline]
    pub(crate) fn shed(shared: Arc<ShedShared>, admitted_at: Option<Nanos>) -> Self {
        Self {
            kind: Kind::Shed {
                shared,
                admitted_at,
            },
        }
    }

    /// The response headers (or an error) arrived: the moment an adaptive
    /// limit measures. Later calls do nothing.
    #[inline]
    pub(crate) fn on_response(&mut self, dropped: bool) {
        if let Kind::Shed {
            shared,
            admitted_at,
        } = &mut self.kind
            && let Some(at) = admitted_at.take()
        {
            shared.record(at, dropped);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        match &self.kind {
            Kind::Counter(shared) => shared.release_counter(),
            Kind::Keyed(shared, hash) => shared.release_keyed(*hash),
            Kind::Shed { shared, .. } => shared.release(),
        }
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Counter(_) => "global",
            Kind::Keyed(..) => "keyed",
            Kind::Shed { .. } => "shed",
        };
        f.debug_tuple("Permit").field(&kind).finish()
    }
}
