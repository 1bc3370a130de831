//! IRQL in the types.
//!
//! Kernel SSPI calls that may block or touch paged memory run at PASSIVE_LEVEL;
//! completion callbacks may arrive at up to DISPATCH_LEVEL (docs/DESIGN.md,
//! contract item 3). Functions that must run at PASSIVE take a [`Passive`] proof, which
//! can only be had by checking the current IRQL or by an `unsafe` assertion in
//! a context the caller knows (DriverEntry, a work-item routine).

use core::fmt;
use core::marker::PhantomData;

/// An interrupt request level.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct Irql(pub u8);

impl Irql {
    /// PASSIVE_LEVEL (0): threads, waits, paged memory.
    pub const PASSIVE: Irql = Irql(0);
    /// APC_LEVEL (1).
    pub const APC: Irql = Irql(1);
    /// DISPATCH_LEVEL (2): DPCs, spin locks; no waits, no paged memory.
    pub const DISPATCH: Irql = Irql(2);

    /// The name Windows gives the level.
    pub const fn name(self) -> &'static str {
        match self.0 {
            0 => "PASSIVE_LEVEL",
            1 => "APC_LEVEL",
            2 => "DISPATCH_LEVEL",
            _ => "DIRQL",
        }
    }
}

impl fmt::Display for Irql {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Debug for Irql {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}

/// Proof that the current thread runs at PASSIVE_LEVEL.
///
/// It is neither `Send` nor `Sync` (it speaks for one thread) and is borrowed,
/// not stored, by the functions that need it.
pub struct Passive {
    _this_thread: PhantomData<*const ()>,
}

impl Passive {
    /// A proof, if `current` (read from the kernel or the model) is PASSIVE_LEVEL.
    pub fn check(current: Irql) -> Option<Passive> {
        (current == Irql::PASSIVE).then_some(Passive {
            _this_thread: PhantomData,
        })
    }

    /// A proof without a check.
    ///
    /// # Safety
    /// The caller runs at PASSIVE_LEVEL and does not raise IRQL while the proof
    /// is alive (for example in DriverEntry, a dispatch routine for a
    /// METHOD_BUFFERED IOCTL at PASSIVE, or a work-item routine).
    pub unsafe fn assume() -> Passive {
        Passive {
            _this_thread: PhantomData,
        }
    }
}

impl fmt::Debug for Passive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passive")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_passive_gives_a_proof() {
        assert!(Passive::check(Irql::PASSIVE).is_some());
        assert!(Passive::check(Irql::APC).is_none());
        assert!(Passive::check(Irql::DISPATCH).is_none());
        assert!(Irql::PASSIVE < Irql::DISPATCH);
        assert_eq!(Irql::DISPATCH.name(), "DISPATCH_LEVEL");
    }
}
