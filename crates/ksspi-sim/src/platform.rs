//! The model's [`ksspi::engine::Platform`]: work items on the model's queue,
//! running at PASSIVE_LEVEL on the system-thread stand-in. Queueing one that
//! is already queued is a bugcheck (the engine promises it never happens).

use crate::kernel::{bugcheck, Bugcheck};
use crate::provider::SimProvider;
use ksspi::engine::Platform;
use ksspi::{Irql, SecStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Work items for the engine, on a model's queue.
#[derive(Clone)]
pub struct SimPlatform {
    sim: SimProvider,
}

impl SimPlatform {
    /// The platform of `sim`.
    pub fn new(sim: &SimProvider) -> Self {
        SimPlatform { sim: sim.clone() }
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
        ksspi::engine::reserve_buffer(capacity)
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

    fn spin_wait(&self) {
        std::thread::yield_now();
    }

    fn queue_work_item(&self, item: &SimWorkItem) {
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

    fn raise_to_dispatch(&self) -> Irql {
        crate::kernel::raise_to(Irql::DISPATCH)
    }

    fn lower_irql(&self, old: Irql) {
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
