//! The counters the self-test reports ([`SimStats`]), kept as atomics while
//! calls run ([`Counters`]).

use super::SimProvider;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters the self-test reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Async contexts created.
    pub async_contexts_created: u64,
    /// Successful `SspiReinitAsyncContext` calls.
    pub reinits: u64,
    /// Async calls queued.
    pub calls: u64,
    /// Calls completed later on another thread.
    pub completed_async: u64,
    /// Calls completed synchronously with the callback inline.
    pub completed_inline: u64,
    /// Calls completed synchronously without a callback.
    pub completed_sync: u64,
    /// Callbacks run at PASSIVE_LEVEL.
    pub callbacks_passive: u64,
    /// Callbacks run at DISPATCH_LEVEL.
    pub callbacks_dispatch: u64,
}

/// The live counters behind [`SimStats`].
#[derive(Default)]
pub(super) struct Counters {
    pub(super) created: AtomicU64,
    pub(super) reinits: AtomicU64,
    pub(super) calls: AtomicU64,
    pub(super) completed_async: AtomicU64,
    pub(super) completed_inline: AtomicU64,
    pub(super) completed_sync: AtomicU64,
    pub(super) callbacks_passive: AtomicU64,
    pub(super) callbacks_dispatch: AtomicU64,
}

impl SimProvider {
    /// The counters so far.
    pub fn stats(&self) -> SimStats {
        let c = &self.0.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SimStats {
            async_contexts_created: l(&c.created),
            reinits: l(&c.reinits),
            calls: l(&c.calls),
            completed_async: l(&c.completed_async),
            completed_inline: l(&c.completed_inline),
            completed_sync: l(&c.completed_sync),
            callbacks_passive: l(&c.callbacks_passive),
            callbacks_dispatch: l(&c.callbacks_dispatch),
        }
    }
}
