//! The two atomics that decide who continues. Each is one atomic read-modify-
//! write per side, so there is no check-then-act window (docs/DESIGN.md,
//! contract item 2: one atomic swap on each side decides who continues).
//! Modelled with loom in `tests/loom_sync.rs` (`RUSTFLAGS="--cfg loom"`).

#[cfg(not(loom))]
use core::sync::atomic::{AtomicU8, Ordering};
#[cfg(loom)]
use loom::sync::atomic::{AtomicU8, Ordering};

/// Issuer / callback handoff for one async call.
///
/// Both sides mark their arrival; whoever arrives *second* continues. The
/// issuer arrives when the issuing function has returned; the callback when
/// it runs (before, during or after that). If the callback runs inline on the
/// issuer's stack it arrives first and returns, and the issuer's loop picks
/// the completion up: no issue -> callback -> issue recursion.
pub struct Handoff {
    state: AtomicU8,
}

const ISSUER: u8 = 1;
const CALLBACK: u8 = 2;

impl Handoff {
    /// A handoff with nobody arrived.
    pub fn new() -> Self {
        Handoff {
            state: AtomicU8::new(0),
        }
    }

    /// Re-arm before issuing the next call. Only the party that owns the
    /// session (the one continuing) calls this, with no call in flight.
    pub fn arm(&self) {
        self.state.store(0, Ordering::Release);
    }

    /// The issuing function returned: true if the completion was already
    /// signalled, so the issuer continues now.
    pub fn issuer_returned(&self) -> bool {
        self.state.fetch_or(ISSUER, Ordering::AcqRel) & CALLBACK != 0
    }

    /// The callback ran: true if the issuer has already returned, so the
    /// callback side continues.
    pub fn callback_arrived(&self) -> bool {
        self.state.fetch_or(CALLBACK, Ordering::AcqRel) & ISSUER != 0
    }
}

impl Default for Handoff {
    fn default() -> Self {
        Self::new()
    }
}

/// Who owns a session's next move: a step (its calls and continuations) or
/// the teardown. `close` may be called at any moment from any thread; the
/// teardown runs exactly once, by whoever holds ownership when close is seen.
pub struct Ownership {
    state: AtomicU8,
}

const RUNNING: u8 = 1;
const CLOSE: u8 = 2;

/// What [`Ownership::close`] means for its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseClaim {
    /// The session was idle: the caller now owns it and must tear it down.
    TearDownNow,
    /// A step owns it: the owner will tear down when it would go idle.
    OwnerWill,
    /// Close was already requested.
    AlreadyClosing,
}

/// What [`Ownership::release`] means for the owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Release {
    /// Idle now: someone may start the next step.
    Idle,
    /// A close arrived while running: the owner keeps ownership and tears down.
    TearDown,
}

impl Ownership {
    /// Idle, open.
    pub fn new() -> Self {
        Ownership {
            state: AtomicU8::new(0),
        }
    }

    /// Claim the session for a step: `Err(true)` if closing, `Err(false)` if
    /// another step owns it.
    pub fn claim(&self) -> Result<(), bool> {
        match self
            .state
            .compare_exchange(0, RUNNING, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Ok(()),
            Err(s) => Err(s & CLOSE != 0),
        }
    }

    /// The owner would go idle.
    pub fn release(&self) -> Release {
        match self
            .state
            .compare_exchange(RUNNING, 0, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Release::Idle,
            Err(_) => Release::TearDown,
        }
    }

    /// Request close.
    pub fn close(&self) -> CloseClaim {
        let prev = self.state.fetch_or(CLOSE | RUNNING, Ordering::AcqRel);
        if prev & CLOSE != 0 {
            CloseClaim::AlreadyClosing
        } else if prev & RUNNING != 0 {
            CloseClaim::OwnerWill
        } else {
            CloseClaim::TearDownNow
        }
    }

    /// Whether close has been requested.
    pub fn is_closing(&self) -> bool {
        self.state.load(Ordering::Acquire) & CLOSE != 0
    }
}

impl Default for Ownership {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn the_second_to_arrive_continues() {
        let h = Handoff::new();
        assert!(!h.issuer_returned());
        assert!(h.callback_arrived());
        h.arm();
        assert!(!h.callback_arrived()); // inline callback: arrives first
        assert!(h.issuer_returned()); // the issuer's loop continues
    }

    #[test]
    fn close_is_claimed_exactly_once() {
        let o = Ownership::new();
        assert_eq!(o.claim(), Ok(()));
        assert_eq!(o.claim(), Err(false));
        assert_eq!(o.close(), CloseClaim::OwnerWill);
        assert_eq!(o.close(), CloseClaim::AlreadyClosing);
        assert_eq!(o.release(), Release::TearDown);
        assert_eq!(o.claim(), Err(true));

        let idle = Ownership::new();
        assert_eq!(idle.close(), CloseClaim::TearDownNow);
        assert_eq!(idle.claim(), Err(true));
    }
}
