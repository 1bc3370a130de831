//! The conductor: runs a sans-IO state machine's async SSPI calls on one async
//! context, continuing from the completion callback at the right IRQL.
//!
//! For every call: the machine issues it (at PASSIVE_LEVEL); the conductor then
//! decides who continues with one atomic handoff ([`Handoff`]):
//! - completed synchronously without a callback (`SspiAsyncContextRequiresNotify`
//!   false): the issuer continues in its loop;
//! - the callback ran first (inline on the issuer's stack, or on another CPU
//!   before the issuing function returned): the callback returns at once and
//!   the issuer's loop continues: a trampoline, so the stack never grows with
//!   the number of calls;
//! - the issuer returned first: the callback continues, inline if it runs at
//!   PASSIVE_LEVEL, else through the machine's work item, which continues at
//!   PASSIVE_LEVEL.
//!
//! The callback path reads the call's status and performs one atomic
//! operation, and at most queues a preallocated work item: it allocates
//! nothing, waits for nothing and touches no paged memory.
//!
//! Ownership ([`Ownership`]) makes one party at a time the owner of the
//! machine; `close` may come from anywhere at any moment and the teardown runs
//! exactly once, after any in-flight call has completed.

use super::cell::OwnedCell;
use super::sync::{CloseClaim, Handoff, Ownership, Release};
use crate::handle::{AsyncContext, HandleSlot, InFlight};
use crate::irql::{Irql, Passive};
use crate::provider::SspiProvider;
use crate::status::SecStatus;
use crate::sys::SspiAsyncContext;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::ffi::c_void;
use core::sync::atomic::{AtomicI32, AtomicU64, Ordering};

/// The kernel services the engine needs beyond SSPI: a PASSIVE_LEVEL work item.
pub trait Platform: Clone + Send + Sync + 'static {
    /// One work item, created per machine at setup (`WDFWORKITEM`).
    type WorkItem: Send + Sync + 'static;

    /// Create a work item that calls `run(arg)` at PASSIVE_LEVEL each time it
    /// is queued.
    fn create_work_item(
        &self,
        run: unsafe fn(*const ()),
        arg: *const (),
    ) -> Result<Self::WorkItem, SecStatus>;

    /// Queue it (at any IRQL up to DISPATCH_LEVEL; no allocation, no wait). The
    /// engine never has the same item queued twice.
    fn queue_work_item(&self, item: &Self::WorkItem);

    /// Take the spin lock `word` (a `KSPIN_LOCK`: `KeAcquireSpinLockRaiseToDpc`
    /// on Windows, so Driver Verifier sees the lock and its IRQL), raising to
    /// DISPATCH_LEVEL; returns the IRQL to go back to. Callable at IRQL <=
    /// DISPATCH_LEVEL only: above it, the kernel stops the system (the model
    /// does too), and nothing here can lower the IRQL.
    fn acquire_spin_lock(&self, word: &SpinWord) -> Irql;

    /// Release `word` and go back to `old` (`KeReleaseSpinLock`).
    ///
    /// # Safety
    /// `word` is held by this thread, taken by [`Platform::acquire_spin_lock`],
    /// which returned `old`.
    unsafe fn release_spin_lock(&self, word: &SpinWord, old: Irql);

    /// A monotonic clock in microseconds (`KeQueryInterruptTime` / 10), for
    /// the self-test's timings.
    fn now_us(&self) -> u64;

    /// An empty buffer with room for `capacity` bytes, or
    /// `SEC_E_INSUFFICIENT_MEMORY`: the large per-session allocations
    /// (a pool allocation that may fail under low resources; infallible
    /// `Vec` allocation would bugcheck through the allocation error handler).
    /// The model overrides it to inject the failure.
    fn reserve(&self, capacity: usize) -> Result<Vec<u8>, SecStatus> {
        reserve_buffer(capacity)
    }

    /// The fault point of the engine's other sized allocations
    /// ([`reserve_vec`]): `Err` fails the allocation as if the pool were
    /// short. The kernel's never fails (the allocation itself may); the
    /// model's fails when its low-resources simulation says so.
    fn may_allocate(&self) -> Result<(), SecStatus> {
        Ok(())
    }
}

/// An empty `Vec<T>` with room for `capacity` elements, or
/// `SEC_E_INSUFFICIENT_MEMORY`: for allocations sized by a request (the
/// self-test's queues and tables), through [`Platform::may_allocate`] and
/// `try_reserve_exact`, so a large figure fails cleanly instead of reaching
/// the allocation error handler (a bugcheck in the kernel).
pub fn reserve_vec<T, K: Platform>(platform: &K, capacity: usize) -> Result<Vec<T>, SecStatus> {
    platform.may_allocate()?;
    let mut v = Vec::new();
    v.try_reserve_exact(capacity)
        .map_err(|_| SecStatus::SEC_E_INSUFFICIENT_MEMORY)?;
    Ok(v)
}

/// A `KSPIN_LOCK` (wdm.h: `typedef ULONG_PTR KSPIN_LOCK`, zero when free, as
/// `KeInitializeSpinLock` leaves it), owned by the lock that uses it and
/// reached only through [`Platform::acquire_spin_lock`] and
/// [`Platform::release_spin_lock`].
#[derive(Debug, Default)]
#[repr(transparent)]
pub struct SpinWord(core::sync::atomic::AtomicUsize);

impl SpinWord {
    /// A free lock.
    pub const fn new() -> Self {
        SpinWord(core::sync::atomic::AtomicUsize::new(0))
    }

    /// The word, for a platform's own spin loop (the model's).
    pub fn word(&self) -> &core::sync::atomic::AtomicUsize {
        &self.0
    }

    /// A `PKSPIN_LOCK` for the kernel's functions: the kernel reads and
    /// writes the word atomically, as the platform's lock operations need.
    pub fn as_ptr(&self) -> *mut usize {
        self.0.as_ptr()
    }
}

/// [`Platform::reserve`]'s default: `Vec::try_reserve_exact`.
pub fn reserve_buffer(capacity: usize) -> Result<Vec<u8>, SecStatus> {
    let mut buffer = Vec::new();
    buffer
        .try_reserve_exact(capacity)
        .map_err(|_| SecStatus::SEC_E_INSUFFICIENT_MEMORY)?;
    Ok(buffer)
}

/// A zeroed buffer of `len` bytes through [`Platform::reserve`].
pub fn zeroed_buffer<K: Platform>(platform: &K, len: usize) -> Result<Vec<u8>, SecStatus> {
    let mut buffer = platform.reserve(len)?;
    buffer.resize(len, 0);
    Ok(buffer)
}

/// Counters the engine keeps across machines (for the self-test report).
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Async calls issued.
    pub calls: AtomicU64,
    /// Calls that completed synchronously without a callback.
    pub completed_sync: AtomicU64,
    /// Calls whose callback arrived before the issuing function returned.
    pub callback_first: AtomicU64,
    /// Calls whose callback continued after the issuing function returned.
    pub issuer_first: AtomicU64,
    /// Callbacks seen at PASSIVE_LEVEL.
    pub callbacks_passive: AtomicU64,
    /// Callbacks seen above PASSIVE_LEVEL.
    pub callbacks_dispatch: AtomicU64,
    /// Continuations queued as work items.
    pub work_items: AtomicU64,
    /// Async contexts created.
    pub async_contexts: AtomicU64,
    /// Async contexts reinitialised.
    pub reinits: AtomicU64,
    /// Reinits refused inside a completion callback and retried from the
    /// work item.
    pub reinits_deferred: AtomicU64,
    /// Reinits accepted inside a completion callback.
    pub reinits_in_callback: AtomicU64,
    /// Session buffers grown (or allocated first) to take more bytes: a
    /// bounded number per session, none once its buffers have their size.
    pub buffer_grows: AtomicU64,
}

impl EngineStats {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn counters(&self) -> [&AtomicU64; 12] {
        [
            &self.calls,
            &self.completed_sync,
            &self.callback_first,
            &self.issuer_first,
            &self.callbacks_passive,
            &self.callbacks_dispatch,
            &self.work_items,
            &self.async_contexts,
            &self.reinits,
            &self.reinits_deferred,
            &self.reinits_in_callback,
            &self.buffer_grows,
        ]
    }

    /// Add `other`'s counts to these (a self-test run's, into the device's).
    pub fn absorb(&self, other: &EngineStats) {
        for (mine, theirs) in self.counters().into_iter().zip(other.counters()) {
            mine.fetch_add(theirs.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }
}

/// Why [`Conductor::start`] did not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartError<E> {
    /// Another move owns the machine (a call is in flight).
    Busy,
    /// Close was requested.
    Closing,
    /// The machine refused the move.
    Refused(E),
}

/// What a machine does next.
pub enum Move<P: SspiProvider> {
    /// It issued a call (the conductor handles the handoff).
    Issued(InFlight<P>),
    /// Nothing to do until its owner acts (needs input, established): the
    /// conductor releases ownership.
    Idle,
    /// The machine is finished (closed); the conductor releases everything.
    Finished,
}

/// A sans-IO state machine driven by a [`Conductor`].
pub trait Machine<P: SspiProvider>: Send + 'static {
    /// Decide the next move at PASSIVE_LEVEL, as owner. `ctx` is the machine's
    /// async context (idle) or `None` if it was never created or was freed;
    /// `closing` is true once close has been requested.
    fn next(
        &mut self,
        ctx: &mut Option<AsyncContext<P>>,
        closing: bool,
        at: &Passive,
        stats: &EngineStats,
    ) -> Move<P>;

    /// Whether the next [`Machine::next`] would issue a call (so the
    /// conductor readies the context first). `true` when unsure.
    fn wants_call(&self, closing: bool) -> bool {
        let _ = closing;
        true
    }

    /// The call issued by the last [`Machine::next`] completed with `status`.
    fn completed(&mut self, status: SecStatus, slot: Option<HandleSlot>);

    /// The machine goes idle ([`Move::Idle`]): tell its owner (step outcomes),
    /// at PASSIVE_LEVEL, just before ownership is released. Starting another
    /// move from in here finds the machine busy; [`ReadyNotify::ready`]
    /// follows once it would not.
    fn went_idle(&mut self) {}

    /// The machine finished; called once, last.
    fn finished(&mut self) {}
}

struct State<P: SspiProvider, K: Platform, M: Machine<P>> {
    machine: M,
    ctx: Option<AsyncContext<P>>,
    flight: Option<InFlight<P>>,
    /// Holds the shared block alive while the machine is owned (a call may be
    /// in flight, a work item queued).
    keepalive: Option<Arc<Shared<P, K, M>>>,
}

/// The block a machine, its context and its callback share.
pub struct Shared<P: SspiProvider, K: Platform, M: Machine<P>> {
    provider: P,
    platform: K,
    work: Option<K::WorkItem>,
    handoff: Handoff,
    own: Ownership,
    result: AtomicI32,
    stats: Arc<EngineStats>,
    notify: Option<Arc<dyn ReadyNotify>>,
    state: OwnedCell<State<P, K, M>>,
}

/// Told when a machine has gone idle and its owner may start the next move
/// (called after ownership is released, at PASSIVE_LEVEL).
pub trait ReadyNotify: Send + Sync + 'static {
    /// The machine accepts the next move now.
    fn ready(&self);
}

/// A machine on its async context: the owner's handle.
pub struct Conductor<P: SspiProvider, K: Platform, M: Machine<P>> {
    shared: Arc<Shared<P, K, M>>,
}

impl<P: SspiProvider, K: Platform, M: Machine<P>> Conductor<P, K, M> {
    /// Set a machine up: one async context (created once, its callback
    /// registered once) and one work item. All allocation happens here.
    pub fn new(
        provider: P,
        platform: K,
        machine: M,
        stats: Arc<EngineStats>,
        notify: Option<Arc<dyn ReadyNotify>>,
        at: &Passive,
    ) -> Result<Self, SecStatus> {
        let mut ctx = AsyncContext::new(provider.clone(), at)?;
        EngineStats::bump(&stats.async_contexts);
        let mut work_error = SecStatus::SEC_E_OK;
        let shared = Arc::new_cyclic(|weak: &Weak<Shared<P, K, M>>| {
            let arg = weak.as_ptr().cast::<()>();
            let work = match platform.create_work_item(work_entry::<P, K, M>, arg) {
                Ok(w) => Some(w),
                Err(e) => {
                    work_error = e;
                    None
                }
            };
            Shared {
                provider,
                platform,
                work,
                handoff: Handoff::new(),
                own: Ownership::new(),
                result: AtomicI32::new(0),
                stats,
                notify,
                state: OwnedCell::new(State {
                    machine,
                    ctx: None,
                    flight: None,
                    keepalive: None,
                }),
            }
        });
        if work_error.is_error() {
            return Err(work_error);
        }
        let data = Arc::as_ptr(&shared).cast_mut().cast::<c_void>();
        // SAFETY: `data` points to the shared block, which stays allocated
        // while any call on this context may complete (the keepalive).
        unsafe { ctx.set_callback(Some(on_complete::<P, K, M>), data)? };
        shared.state.take().ctx = Some(ctx);
        Ok(Conductor { shared })
    }

    /// Start the machine's next move, if nobody owns it. `prepare` runs first,
    /// as owner; if it refuses, nothing starts.
    pub fn start<E>(
        &self,
        prepare: impl FnOnce(&mut M) -> Result<(), E>,
        at: &Passive,
    ) -> Result<(), StartError<E>> {
        self.shared.own.claim().map_err(|closing| {
            if closing {
                StartError::Closing
            } else {
                StartError::Busy
            }
        })?;
        let prepared = {
            let mut st = self.shared.state.take();
            let prepared = prepare(&mut st.machine);
            st.keepalive = Some(self.shared.clone());
            prepared
        };
        match prepared {
            Ok(()) => {
                self.shared.run(at, Entry::Owner);
                Ok(())
            }
            Err(e) => {
                let keepalive = self.shared.state.take().keepalive.take();
                match self.shared.own.release() {
                    Release::Idle => drop(keepalive),
                    // A close came in meanwhile: the teardown is ours.
                    Release::TearDown => {
                        self.shared.state.take().keepalive = keepalive;
                        self.shared.run(at, Entry::Owner);
                    }
                }
                Err(StartError::Refused(e))
            }
        }
    }

    /// Read the machine while nobody else owns it (`None` if busy or closing).
    pub fn inspect<R>(&self, f: impl FnOnce(&mut M) -> R) -> Option<R> {
        self.shared.own.claim().ok()?;
        let r = f(&mut self.shared.state.take().machine);
        if self.shared.own.release() == Release::TearDown {
            // A close came in while we looked: the teardown is ours.
            self.shared.state.take().keepalive = Some(self.shared.clone());
            self.shared.continue_at_passive(Entry::Owner);
        }
        Some(r)
    }

    /// Request close, at any IRQL up to DISPATCH_LEVEL, at any moment. The
    /// machine is finished once any in-flight call completes;
    /// [`Machine::finished`] is called exactly once.
    pub fn close(&self) {
        match self.shared.own.close() {
            CloseClaim::TearDownNow => {
                self.shared.state.take().keepalive = Some(self.shared.clone());
                self.shared.continue_at_passive(Entry::Owner);
            }
            CloseClaim::OwnerWill | CloseClaim::AlreadyClosing => {}
        }
    }
}

impl<P: SspiProvider, K: Platform, M: Machine<P>> Drop for Conductor<P, K, M> {
    fn drop(&mut self) {
        self.close();
    }
}

/// Who continues the machine ([`Shared::run`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Entry {
    /// The owner's own call (start, inspect, close): on any stack, maybe
    /// inside a completion callback of an event handler's making.
    Owner,
    /// The completion callback's continuation, on the callback's stack.
    Callback,
    /// The work item, at PASSIVE_LEVEL outside every callback.
    WorkItem,
}

/// The work item's entry: continue at PASSIVE_LEVEL.
///
/// # Safety
/// `arg` is the shared block the work item was created for, kept alive by its
/// keepalive while the work item is queued.
unsafe fn work_entry<P: SspiProvider, K: Platform, M: Machine<P>>(arg: *const ()) {
    // SAFETY: per the function's contract.
    let shared = unsafe { &*arg.cast::<Shared<P, K, M>>() };
    // SAFETY: work items run at PASSIVE_LEVEL (Platform's contract).
    shared.run(&unsafe { Passive::assume() }, Entry::WorkItem);
}

/// The completion callback (`SspiAsyncNotifyCallback`). Read the result, then
/// continue if the issuer has already returned.
unsafe extern "system" fn on_complete<P: SspiProvider, K: Platform, M: Machine<P>>(
    handle: *mut SspiAsyncContext,
    data: *mut c_void,
) {
    // SAFETY: `data` is the shared block registered with this context, alive
    // while its call may complete (the keepalive is dropped only after the
    // call's completion has been collected).
    let shared = unsafe { &*data.cast::<Shared<P, K, M>>() };
    let irql = shared.provider.current_irql();
    EngineStats::bump(if irql == Irql::PASSIVE {
        &shared.stats.callbacks_passive
    } else {
        &shared.stats.callbacks_dispatch
    });
    if let Some(ctx) = core::ptr::NonNull::new(handle) {
        // SAFETY: the context is live: its InFlight is not collected until the
        // handoff below hands the continuation to someone.
        let status = unsafe { shared.provider.get_async_call_status(ctx) };
        shared.result.store(status.0, Ordering::Release);
    }
    if shared.handoff.callback_arrived() {
        EngineStats::bump(&shared.stats.issuer_first);
        shared.continue_at_passive(Entry::Callback);
    }
}

impl<P: SspiProvider, K: Platform, M: Machine<P>> Shared<P, K, M> {
    /// Continue as owner: inline at PASSIVE_LEVEL, else through the work item.
    fn continue_at_passive(&self, entry: Entry) {
        match Passive::check(self.provider.current_irql()) {
            Some(at) => self.run(&at, entry),
            None => self.queue_work(),
        }
    }

    fn queue_work(&self) {
        EngineStats::bump(&self.stats.work_items);
        if let Some(work) = &self.work {
            self.platform.queue_work_item(work);
        }
    }

    /// The trampoline: collect completions and make moves until the machine
    /// waits on a callback, goes idle or finishes. Called by the owner only.
    fn run(&self, at: &Passive, entry: Entry) {
        let mut st = self.state.take();
        loop {
            if let Some(flight) = st.flight.take() {
                match flight.complete() {
                    Ok(done) => {
                        st.ctx = Some(done.context);
                        st.machine.completed(done.status, done.slot);
                    }
                    Err(flight) => {
                        // Not possible: we continue only once the call is over.
                        st.flight = Some(flight);
                        panic!("ksspi engine: continued while a call was still pending");
                    }
                }
            }
            let closing = self.own.is_closing();
            // Ready the context for the machine's next call. Whether
            // SspiReinitAsyncContext may run inside the completion callback is
            // not documented: if it is refused, continue from the work item
            // instead, outside any callback, and reinit there. Not only on
            // the callback's own continuation: an owner's call (a step) may
            // come from an event handler that runs inside this context's
            // callback, and nothing here can tell.
            let wants_call = st.machine.wants_call(closing);
            if let Some(ctx) = st.ctx.as_mut() {
                if !ctx.is_fresh() && wants_call {
                    match ctx.reinit() {
                        Ok(()) => {
                            EngineStats::bump(&self.stats.reinits);
                            if entry == Entry::Callback {
                                EngineStats::bump(&self.stats.reinits_in_callback);
                            }
                        }
                        Err(_) if entry != Entry::WorkItem => {
                            EngineStats::bump(&self.stats.reinits_deferred);
                            drop(st);
                            self.queue_work();
                            return;
                        }
                        // On the work item, outside every callback, the
                        // machine meets the failure when it readies the
                        // context, and reports it.
                        Err(_) => {}
                    }
                }
            }
            // No call is in flight and we own the machine: arm the handoff
            // for whatever the machine issues next.
            self.handoff.arm();
            let State { machine, ctx, .. } = &mut *st;
            match machine.next(ctx, closing, at, &self.stats) {
                Move::Issued(flight) => {
                    EngineStats::bump(&self.stats.calls);
                    let sync = !flight.requires_notify();
                    st.flight = Some(flight);
                    if sync {
                        EngineStats::bump(&self.stats.completed_sync);
                        continue;
                    }
                    // Release the state before arriving: once arrived, the
                    // callback may be the one that continues.
                    drop(st);
                    if self.handoff.issuer_returned() {
                        EngineStats::bump(&self.stats.callback_first);
                        st = self.state.take();
                        continue;
                    }
                    return;
                }
                Move::Idle => {
                    // Report while still owner: nobody can start the next move
                    // until the report is out.
                    st.machine.went_idle();
                    let keepalive = st.keepalive.take();
                    // Let go of the state before ownership: the moment it is
                    // released, the next owner may take the state.
                    drop(st);
                    match self.own.release() {
                        Release::Idle => {
                            if let Some(notify) = &self.notify {
                                notify.ready();
                            }
                            drop(keepalive);
                            return;
                        }
                        Release::TearDown => {
                            // Still ours: a close came in; tear down.
                            st = self.state.take();
                            st.keepalive = keepalive;
                            continue;
                        }
                    }
                }
                Move::Finished => {
                    st.ctx = None;
                    st.machine.finished();
                    let keepalive = st.keepalive.take();
                    drop(st);
                    drop(keepalive);
                    return;
                }
            }
        }
    }
}

/// Helpers machines use to issue a call on their context.
pub struct Issue;

impl Issue {
    /// Reinitialise `ctx` if it was used, counting it.
    pub fn ready<P: SspiProvider>(
        ctx: &mut AsyncContext<P>,
        stats: &EngineStats,
    ) -> Result<(), SecStatus> {
        if !ctx.is_fresh() {
            ctx.reinit()?;
            EngineStats::bump(&stats.reinits);
        }
        Ok(())
    }
}
