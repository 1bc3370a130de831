//! The kernel's rules, as the model enforces them: a per-thread IRQL, spin
//! locks that raise it, a work-item queue that runs at PASSIVE_LEVEL on a
//! system-thread stand-in, and bugchecks for broken rules.
//!
//! A broken rule stops the test at once (a panic) with a message in the style
//! of the bugcheck Windows would raise, naming the rule.

use ksspi::Irql;
use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

thread_local! {
    static IRQL: Cell<u8> = const { Cell::new(0) };
}

/// The IRQL of the calling thread (PASSIVE unless raised).
pub fn current_irql() -> Irql {
    Irql(IRQL.with(Cell::get))
}

/// Raise the calling thread's IRQL; the guard lowers it back (`KeRaiseIrql` /
/// `KeLowerIrql`). Lowering below the current level is a bugcheck.
pub fn raise_irql(to: Irql) -> IrqlGuard {
    let old = current_irql();
    if to < old {
        bugcheck(
            Bugcheck::IrqlNotGreaterOrEqual,
            format_args!("KeRaiseIrql to {to} from {old}"),
        );
    }
    IRQL.with(|c| c.set(to.0));
    IrqlGuard { old }
}

/// `KeRaiseIrql` without a guard: raise to `to`, return the old IRQL.
pub fn raise_to(to: Irql) -> Irql {
    let old = current_irql();
    if to < old {
        bugcheck(
            Bugcheck::IrqlNotGreaterOrEqual,
            format_args!("KeRaiseIrql to {to} from {old}"),
        );
    }
    IRQL.with(|c| c.set(to.0));
    old
}

/// `KeLowerIrql` back to `old` (which must not be above the current IRQL).
pub fn lower_to(old: Irql) {
    let now = current_irql();
    if old > now {
        bugcheck(
            Bugcheck::IrqlNotLessOrEqual,
            format_args!("KeLowerIrql to {old} from {now}"),
        );
    }
    IRQL.with(|c| c.set(old.0));
}

/// Restores the previous IRQL when dropped.
#[must_use = "the IRQL is lowered when the guard drops"]
pub struct IrqlGuard {
    old: Irql,
}

impl Drop for IrqlGuard {
    fn drop(&mut self) {
        IRQL.with(|c| c.set(self.old.0));
    }
}

/// The bugchecks the model raises, with their Windows codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bugcheck {
    /// 0x0A: paged or PASSIVE-only work above PASSIVE / DISPATCH.
    IrqlNotLessOrEqual,
    /// 0x09: raising to a lower IRQL.
    IrqlNotGreaterOrEqual,
    /// 0x10: releasing a spin lock that is not held.
    SpinLockNotOwned,
    /// 0xC4: Driver Verifier saw a broken rule (free in flight, double free, ...).
    DriverVerifierDetectedViolation,
    /// 0xC2: bad pool caller (use after free, double free of memory).
    BadPoolCaller,
    /// 0xCE / 0xC7 family: resources left behind at unload.
    DriverUnloadedWithoutCancellingPendingOperations,
}

impl Bugcheck {
    /// The bugcheck code and its name.
    pub fn code(self) -> (u32, &'static str) {
        match self {
            Bugcheck::IrqlNotLessOrEqual => (0x0A, "IRQL_NOT_LESS_OR_EQUAL"),
            Bugcheck::IrqlNotGreaterOrEqual => (0x09, "IRQL_NOT_GREATER_OR_EQUAL"),
            Bugcheck::SpinLockNotOwned => (0x10, "SPIN_LOCK_NOT_OWNED"),
            Bugcheck::DriverVerifierDetectedViolation => {
                (0xC4, "DRIVER_VERIFIER_DETECTED_VIOLATION")
            }
            Bugcheck::BadPoolCaller => (0xC2, "BAD_POOL_CALLER"),
            Bugcheck::DriverUnloadedWithoutCancellingPendingOperations => (
                0xCE,
                "DRIVER_UNLOADED_WITHOUT_CANCELLING_PENDING_OPERATIONS",
            ),
        }
    }
}

/// Stop the test the way Windows would stop the machine.
#[track_caller]
pub fn bugcheck(which: Bugcheck, rule: std::fmt::Arguments<'_>) -> ! {
    let (code, name) = which.code();
    panic!("*** STOP: 0x{code:08X} {name}: {rule}")
}

/// Require PASSIVE_LEVEL for `function` (a PASSIVE-only call).
#[track_caller]
pub fn require_passive(function: &str) {
    let irql = current_irql();
    if irql != Irql::PASSIVE {
        bugcheck(
            Bugcheck::IrqlNotLessOrEqual,
            format_args!("{function} must be called at PASSIVE_LEVEL, called at {irql}"),
        );
    }
}

/// Require at most DISPATCH_LEVEL for `function`.
#[track_caller]
pub fn require_at_most_dispatch(function: &str) {
    let irql = current_irql();
    if irql > Irql::DISPATCH {
        bugcheck(
            Bugcheck::IrqlNotLessOrEqual,
            format_args!("{function} must be called at or below DISPATCH_LEVEL, called at {irql}"),
        );
    }
}

/// A spin lock: holding it raises the thread to DISPATCH_LEVEL, where waits
/// and PASSIVE-only calls are bugchecks.
#[derive(Debug, Default)]
pub struct SpinLock<T> {
    inner: Mutex<T>,
}

/// The held lock; the IRQL drops back when it is released.
pub struct SpinGuard<'a, T> {
    guard: MutexGuard<'a, T>,
    _irql: IrqlGuard,
}

impl<T> SpinLock<T> {
    /// A new lock around `value`.
    pub fn new(value: T) -> Self {
        SpinLock {
            inner: Mutex::new(value),
        }
    }

    /// `KeAcquireSpinLock`: raise to DISPATCH and take the lock.
    pub fn lock(&self) -> SpinGuard<'_, T> {
        require_at_most_dispatch("KeAcquireSpinLock");
        let irql = raise_irql(Irql::DISPATCH);
        let guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        SpinGuard { guard, _irql: irql }
    }
}

impl<T> std::ops::Deref for SpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> std::ops::DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

type WorkItem = Box<dyn FnOnce() + Send + 'static>;

#[derive(Default)]
struct QueueState {
    items: VecDeque<WorkItem>,
    running: usize,
    queued_total: u64,
    shutdown: bool,
}

/// The queue's lock and its two wake-ups: `work` wakes one idle thread per
/// item queued, `idle` wakes [`WorkQueue::wait_idle`] once nothing is queued
/// or running. (One condition variable for both woke every thread on every
/// item, and every waiter after every item: on a 2-core VM those futile
/// wake-ups cost more than a handshake's cryptography.)
#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    work: Condvar,
    idle: Condvar,
}

/// The work-item queue (`IoQueueWorkItem` / `WdfWorkItemEnqueue`): items run at
/// PASSIVE_LEVEL on a system-thread stand-in, in the order queued.
#[derive(Clone)]
pub struct WorkQueue {
    shared: Arc<Queue>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl WorkQueue {
    /// A queue served by `threads` system threads.
    pub fn new(threads: usize) -> Self {
        let queue = WorkQueue {
            shared: Arc::default(),
            threads: Arc::new(Mutex::new(Vec::new())),
        };
        for i in 0..threads.max(1) {
            let shared = queue.shared.clone();
            let handle = std::thread::Builder::new()
                .name(format!("ksspi-sim-worker-{i}"))
                .spawn(move || worker(shared))
                .expect("spawn a system-thread stand-in");
            queue.threads.lock().unwrap().push(handle);
        }
        queue
    }

    /// Queue `item` to run at PASSIVE_LEVEL. Callable at any IRQL up to DISPATCH.
    pub fn queue(&self, item: impl FnOnce() + Send + 'static) {
        require_at_most_dispatch("IoQueueWorkItem");
        let q = &*self.shared;
        let mut st = q.state.lock().unwrap();
        st.items.push_back(Box::new(item));
        st.queued_total += 1;
        drop(st);
        q.work.notify_one();
    }

    /// How many items have been queued so far.
    pub fn queued_total(&self) -> u64 {
        self.shared.state.lock().unwrap().queued_total
    }

    /// Wait until no item is queued or running (a test-side wait at PASSIVE).
    pub fn wait_idle(&self) {
        require_passive("WorkQueue::wait_idle");
        let q = &*self.shared;
        let mut st = q.state.lock().unwrap();
        while !st.items.is_empty() || st.running > 0 {
            st = q.idle.wait(st).unwrap();
        }
    }

    /// Stop the threads after the queue drains.
    pub fn shutdown(&self) {
        {
            let q = &*self.shared;
            q.state.lock().unwrap().shutdown = true;
            q.work.notify_all();
        }
        let handles: Vec<_> = std::mem::take(&mut *self.threads.lock().unwrap());
        let me = std::thread::current().id();
        for h in handles {
            if h.thread().id() != me {
                let _ = h.join();
            }
        }
    }
}

fn worker(shared: Arc<Queue>) {
    let q = &*shared;
    loop {
        let item = {
            let mut st = q.state.lock().unwrap();
            loop {
                if let Some(item) = st.items.pop_front() {
                    st.running += 1;
                    break item;
                }
                if st.shutdown {
                    return;
                }
                st = q.work.wait(st).unwrap();
            }
        };
        // Work items start at PASSIVE_LEVEL and must return there.
        IRQL.with(|c| c.set(0));
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(item));
        let leaked = current_irql();
        IRQL.with(|c| c.set(0));
        let mut st = q.state.lock().unwrap();
        st.running -= 1;
        let drained = st.items.is_empty() && st.running == 0;
        drop(st);
        if drained || outcome.is_err() {
            q.idle.notify_all();
        }
        if let Err(panic) = outcome {
            // A bugcheck in a work item stops everything: re-raise it on this
            // thread so the test harness sees it, after releasing waiters.
            std::panic::resume_unwind(panic);
        }
        if leaked != Irql::PASSIVE {
            bugcheck(
                Bugcheck::IrqlNotLessOrEqual,
                format_args!("a work item returned at {leaked}"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn spin_locks_raise_to_dispatch_and_restore() {
        assert_eq!(current_irql(), Irql::PASSIVE);
        let lock = SpinLock::new(5);
        {
            let g = lock.lock();
            assert_eq!(*g, 5);
            assert_eq!(current_irql(), Irql::DISPATCH);
        }
        assert_eq!(current_irql(), Irql::PASSIVE);
    }

    #[test]
    #[should_panic(
        expected = "IRQL_NOT_LESS_OR_EQUAL: SspiAcceptSecurityContextAsync must be called at PASSIVE_LEVEL"
    )]
    fn a_passive_only_call_above_passive_is_a_bugcheck() {
        let _g = raise_irql(Irql::DISPATCH);
        require_passive("SspiAcceptSecurityContextAsync");
    }

    #[test]
    #[should_panic(expected = "IRQL_NOT_GREATER_OR_EQUAL")]
    fn raising_to_a_lower_irql_is_a_bugcheck() {
        let _g = raise_irql(Irql::DISPATCH);
        let _h = raise_irql(Irql::PASSIVE);
    }

    #[test]
    fn work_items_run_at_passive_even_when_queued_at_dispatch() {
        let q = WorkQueue::new(1);
        let seen = Arc::new(AtomicU32::new(99));
        {
            let _g = raise_irql(Irql::DISPATCH);
            let seen = seen.clone();
            q.queue(move || seen.store(u32::from(current_irql().0), Ordering::SeqCst));
        }
        q.wait_idle();
        assert_eq!(seen.load(Ordering::SeqCst), 0);
        assert_eq!(q.queued_total(), 1);
        q.shutdown();
    }
}
