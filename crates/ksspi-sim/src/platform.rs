//! The model's [`ksspi::engine::Platform`]: work items on the model's queue,
//! running at PASSIVE_LEVEL on the system-thread stand-in. Queueing one that
//! is already queued is a bugcheck (the engine promises it never happens).

use crate::kernel::{bugcheck, Bugcheck};
use crate::provider::SimProvider;
use ksspi::engine::{Platform, SpinWord};
use ksspi::{Irql, SecStatus};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

thread_local! {
    /// This thread is inside [`SimPlatform`]'s `reserve`.
    static RESERVING: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread is inside [`SimPlatform`]'s `reserve` (the
/// allocation of a session's buffer) now: a test's global allocator asks,
/// to watch those blocks (`tests/zeroing.rs`). Safe to call from a global
/// allocator.
pub fn in_reserve() -> bool {
    RESERVING.try_with(Cell::get).unwrap_or(false)
}

/// Spins before a lock waiter yields its thread.
const SPINS_BEFORE_YIELD: u32 = 128;

/// Work items for the engine, on a model's queue.
#[derive(Clone)]
pub struct SimPlatform {
    sim: SimProvider,
    /// The framework has disposed the device's children (its work items).
    disposed: Arc<AtomicBool>,
}

impl SimPlatform {
    /// The platform of `sim`.
    pub fn new(sim: &SimProvider) -> Self {
        SimPlatform {
            sim: sim.clone(),
            disposed: Arc::default(),
        }
    }

    /// Play the framework's removal past the driver's self-managed I/O
    /// cleanup: the device's children (the work items) are disposed, and
    /// `WdfWorkItemEnqueue` on an item that is running down does not queue
    /// (open-source WDF, FxWorkItem::Enqueue). A continuation queued after
    /// this would be lost and the removal would hang: the model stops the
    /// test instead.
    pub fn dispose_work_items(&self) {
        self.disposed.store(true, Ordering::Release);
    }
}

/// One work item (`WDFWORKITEM` stand-in).
pub struct SimWorkItem {
    inner: Arc<Inner>,
}

struct Inner {
    run: unsafe fn(*const ()),
    arg: usize,
    queued: AtomicBool,
}

impl Drop for SimWorkItem {
    /// `WdfObjectDelete` on a work item (open-source WDF): at PASSIVE_LEVEL
    /// it flushes the item, waiting for a running callback unless called from
    /// that callback (FxWorkItem::FlushAndRundown); above PASSIVE the
    /// framework defers the disposal to a system work item, since work items
    /// have PASSIVE_LEVEL callbacks (FxObject::ShouldDeferDisposeLocked), and
    /// the device's removal waits for the deferred disposals. Either way an
    /// item deleted while *queued* never runs: the engine must not do that.
    fn drop(&mut self) {
        if self.inner.queued.load(Ordering::Acquire) {
            bugcheck(
                Bugcheck::DriverVerifierDetectedViolation,
                format_args!("WdfObjectDelete on a WDFWORKITEM that is queued: its continuation would never run"),
            );
        }
    }
}

impl Platform for SimPlatform {
    type WorkItem = SimWorkItem;

    fn create_work_item(
        &self,
        run: unsafe fn(*const ()),
        arg: *const (),
    ) -> Result<SimWorkItem, SecStatus> {
        if self
            .sim
            .verifier()
            .fault_point(crate::verifier::FaultKind::Allocation)
        {
            return Err(SecStatus::SEC_E_INSUFFICIENT_MEMORY);
        }
        Ok(SimWorkItem {
            inner: Arc::new(Inner {
                run,
                arg: arg as usize,
                queued: AtomicBool::new(false),
            }),
        })
    }

    fn reserve(&self, capacity: usize) -> Result<Vec<u8>, SecStatus> {
        self.may_allocate()?;
        RESERVING.with(|r| r.set(true));
        let buffer = ksspi::engine::reserve_buffer(capacity);
        RESERVING.with(|r| r.set(false));
        buffer
    }

    fn may_allocate(&self) -> Result<(), SecStatus> {
        if self
            .sim
            .verifier()
            .fault_point(crate::verifier::FaultKind::Allocation)
        {
            return Err(SecStatus::SEC_E_INSUFFICIENT_MEMORY);
        }
        Ok(())
    }

    fn queue_work_item(&self, item: &SimWorkItem) {
        if self.disposed.load(Ordering::Acquire) {
            bugcheck(
                Bugcheck::DriverUnloadedWithoutCancellingPendingOperations,
                format_args!("a continuation was queued on a work item the framework has disposed (device removal): WdfWorkItemEnqueue does not queue it, so it is lost"),
            );
        }
        if item.inner.queued.swap(true, Ordering::AcqRel) {
            bugcheck(
                Bugcheck::DriverVerifierDetectedViolation,
                format_args!("a work item was queued while already queued"),
            );
        }
        let inner = item.inner.clone();
        self.sim.work_queue().queue(move || {
            inner.queued.store(false, Ordering::Release);
            // SAFETY: `run` and `arg` are what the engine registered; it keeps
            // `arg` alive while the item is queued.
            unsafe { (inner.run)(inner.arg as *const ()) };
        });
    }

    fn acquire_spin_lock(&self, word: &SpinWord) -> Irql {
        // Above DISPATCH_LEVEL this is a lowering, which raise_to stops as
        // IRQL_NOT_GREATER_OR_EQUAL, as the kernel would.
        let old = crate::kernel::raise_to(Irql::DISPATCH);
        // Test and test-and-set: waiters spin on a plain read, and after a
        // while yield their thread. A kernel holder at DISPATCH_LEVEL is
        // never preempted, so the kernel just spins; a host thread holding
        // the "DISPATCH_LEVEL" lock can be, and would starve its waiters.
        let mut spins = 0u32;
        while word
            .word()
            .compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            while word.word().load(Ordering::Relaxed) != 0 {
                spins = spins.saturating_add(1);
                if spins < SPINS_BEFORE_YIELD {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
        }
        old
    }

    unsafe fn release_spin_lock(&self, word: &SpinWord, old: Irql) {
        if word.word().swap(0, Ordering::Release) == 0 {
            bugcheck(
                Bugcheck::SpinLockNotOwned,
                format_args!("KeReleaseSpinLock on a spin lock that is not held"),
            );
        }
        crate::kernel::lower_to(old)
    }

    fn now_us(&self) -> u64 {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_micros() as u64
    }
}
