//! Allocation accounting for tests: a global allocator that counts what the
//! engine's code allocates, on whichever thread it runs, and wrappers around
//! the model's provider and platform that keep their own work out of the
//! count and enter the engine's continuations through the meter. A test
//! binary installs the allocator:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOCATOR: ksspi_sim::alloc_count::Counting = ksspi_sim::alloc_count::Counting;
//! ```
//!
//! builds the engine (or the device engine) over [`CountedProvider`] and
//! [`CountedPlatform`], and calls it inside [`engine`] (or [`count`],
//! [`count_until_idle`]).
//!
//! The rules:
//! - What runs inside [`engine`] is the engine's code: what it allocates is
//!   counted.
//! - What runs inside [`outside`] is not (the model provider's calls, which
//!   stand for ksecdd and Schannel, the platform's work-item calls, the
//!   kernel's, and the test's own bookkeeping: its event recorder, a
//!   request's copy to user mode). The wrappers put every provider call and
//!   work-item call there.
//! - [`engine`] entered from inside [`outside`] counts again (the outside
//!   depth is set aside while it runs): the model completes a call inline
//!   by running the engine's callback inside the provider call, and runs a
//!   work item inside its queue. The wrappers register the engine's
//!   completion callback and work item behind thunks that enter them
//!   through [`engine`], so they are counted there, and on the model's
//!   completion threads and work queue when they run later.
//! - Counts are kept per thread and added to one tally, over all threads,
//!   when an outermost [`engine`] region ends, so nothing is counted twice.
//!   [`tally`] reads it. A measurement starts with the model idle (or a
//!   continuation of the setup may end inside it) and reads the tally once
//!   the model is idle again, so that the continuations it started have
//!   ended ([`count_until_idle`] does).
//! - The tally is one for the whole binary: tests that measure take
//!   [`serial`] so that they do not see each other's counts.
//! - While [`record_sites`] is on, the first few counted allocations are
//!   kept with their backtraces; [`take_sites`] formats them for a failure
//!   message.
//!
//! `reserve` (the session's buffers) is counted: it is part of the session's
//! fixed setup, which the tests measure too.

use crate::platform::SimPlatform;
use crate::provider::SimProvider;
use ksspi::engine::{Platform, SpinWord};
use ksspi::provider::{AsyncContextPtr, SspiProvider};
use ksspi::sys::*;
use ksspi::{Irql, SecStatus};
use std::alloc::{GlobalAlloc, Layout, System};
use std::backtrace::Backtrace;
use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::c_void;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

// ---------------------------------------------------------------------------
// The meter.

/// The counting allocator: the system allocator, counting what the engine's
/// code allocates (see the module's rules).
pub struct Counting;

/// Allocations and the bytes they asked for (a reallocation counts as one,
/// of its new size).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counted {
    /// Allocations.
    pub allocs: u64,
    /// Bytes they asked for.
    pub bytes: u64,
}

impl std::ops::Sub for Counted {
    type Output = Counted;
    fn sub(self, o: Counted) -> Counted {
        Counted {
            allocs: self.allocs - o.allocs,
            bytes: self.bytes - o.bytes,
        }
    }
}

impl std::ops::Add for Counted {
    type Output = Counted;
    fn add(self, o: Counted) -> Counted {
        Counted {
            allocs: self.allocs + o.allocs,
            bytes: self.bytes + o.bytes,
        }
    }
}

impl std::fmt::Display for Counted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} allocations, {} bytes", self.allocs, self.bytes)
    }
}

thread_local! {
    /// This thread is running the engine's code (inside [`engine`]).
    static IN_ENGINE: Cell<bool> = const { Cell::new(false) };
    /// How deep in [`outside`] calls this thread is.
    static OUTSIDE: Cell<u32> = const { Cell::new(0) };
    /// Recording an allocation site: the recorder's allocations are its own.
    static RECORDING: Cell<bool> = const { Cell::new(false) };
    /// What the engine's code allocated on this thread so far.
    static MINE: Cell<Counted> = const { Cell::new(Counted { allocs: 0, bytes: 0 }) };
}

/// The sum over every thread of what outermost [`engine`] regions counted.
static TALLY_ALLOCS: AtomicU64 = AtomicU64::new(0);
static TALLY_BYTES: AtomicU64 = AtomicU64::new(0);

/// Keep allocation sites ([`record_sites`]).
static RECORD_SITES: AtomicBool = AtomicBool::new(false);
/// The first counted allocations while recording: size and backtrace.
static SITES: Mutex<Vec<(usize, Backtrace)>> = Mutex::new(Vec::new());
/// How many sites are kept.
const SITES_KEPT: usize = 4;

/// The engine's callbacks and work-item runs that went through the meter.
static CALLBACKS: AtomicU64 = AtomicU64::new(0);
static WORK_ITEMS: AtomicU64 = AtomicU64::new(0);

/// Whether an allocation on this thread now is counted. Never touches a
/// thread-local that is being torn down.
fn counting_here() -> bool {
    IN_ENGINE.try_with(Cell::get).unwrap_or(false)
        && OUTSIDE.try_with(Cell::get).unwrap_or(1) == 0
        && !RECORDING.try_with(Cell::get).unwrap_or(true)
}

fn note(size: usize) {
    if !counting_here() {
        return;
    }
    MINE.with(|m| {
        let c = m.get();
        m.set(Counted {
            allocs: c.allocs + 1,
            bytes: c.bytes + size as u64,
        })
    });
    if RECORD_SITES.load(Ordering::Relaxed) {
        RECORDING.with(|r| r.set(true));
        let mut sites = SITES.lock().unwrap_or_else(|e| e.into_inner());
        if sites.len() < SITES_KEPT {
            sites.push((size, Backtrace::force_capture()));
        }
        drop(sites);
        RECORDING.with(|r| r.set(false));
    }
}

// SAFETY: delegates every call to the system allocator; it only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Run the engine's code: what it allocates on this thread is counted, even
/// when entered from inside [`outside`] (the model's provider calling the
/// engine's callback inline). An outermost region adds its count to the
/// tally when it ends.
pub fn engine<R>(f: impl FnOnce() -> R) -> R {
    let nested = IN_ENGINE.with(|e| e.replace(true));
    let depth = OUTSIDE.with(|o| o.replace(0));
    let before = MINE.with(Cell::get);
    let r = f();
    let counted = MINE.with(Cell::get) - before;
    OUTSIDE.with(|o| o.set(depth));
    IN_ENGINE.with(|e| e.set(nested));
    if !nested {
        TALLY_ALLOCS.fetch_add(counted.allocs, Ordering::SeqCst);
        TALLY_BYTES.fetch_add(counted.bytes, Ordering::SeqCst);
    }
    r
}

/// Run what is not the engine's (the provider, the kernel, the test's own
/// bookkeeping): nothing it allocates is counted, except inside an [`engine`]
/// region it enters.
pub fn outside<R>(f: impl FnOnce() -> R) -> R {
    OUTSIDE.with(|o| o.set(o.get() + 1));
    let r = f();
    OUTSIDE.with(|o| o.set(o.get() - 1));
    r
}

/// Whether this thread is inside [`outside`] now, and not in an [`engine`]
/// region entered from there: it runs the provider's (or the platform's,
/// or a test's own) code. Safe to call from a global allocator.
pub fn is_outside() -> bool {
    OUTSIDE.try_with(Cell::get).unwrap_or(0) > 0
}

/// What the engine's code allocated so far, over every thread: every
/// [`engine`] region that has ended (one still running adds its count when
/// it ends).
pub fn tally() -> Counted {
    Counted {
        allocs: TALLY_ALLOCS.load(Ordering::SeqCst),
        bytes: TALLY_BYTES.load(Ordering::SeqCst),
    }
}

/// Run `f` as the engine's code ([`engine`]) and return what the tally grew
/// by meanwhile: `f`'s own allocations and those of the continuations that
/// ended on other threads before it returned. Not for use inside [`engine`]
/// (a nested region adds nothing to the tally).
pub fn count(f: impl FnOnce()) -> Counted {
    debug_assert!(
        !IN_ENGINE.with(Cell::get),
        "alloc_count::count inside an engine region"
    );
    let before = tally();
    engine(f);
    tally() - before
}

/// [`count`], then wait for `sim` to go idle (no call completing, no work
/// item queued or running) before reading the tally, so the continuations
/// `f` started, on the model's completion threads and from its work items,
/// are counted too. Start it with the model idle: a continuation still
/// running when it starts adds its whole count to the tally when it ends.
pub fn count_until_idle(sim: &SimProvider, f: impl FnOnce()) -> Counted {
    debug_assert!(
        !IN_ENGINE.with(Cell::get),
        "alloc_count::count_until_idle inside an engine region"
    );
    let before = tally();
    engine(f);
    sim.wait_idle();
    tally() - before
}

/// The tally is shared by the binary's tests: those that measure hold this
/// lock, one at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keep (`true`) or stop keeping the first few counted allocations with
/// their backtraces, for a phase that must allocate nothing.
pub fn record_sites(on: bool) {
    RECORD_SITES.store(on, Ordering::SeqCst);
}

/// The allocation sites kept so far, formatted (and forgotten): empty when
/// none was.
pub fn take_sites() -> String {
    let sites = std::mem::take(&mut *SITES.lock().unwrap_or_else(|e| e.into_inner()));
    let mut out = String::new();
    for (i, (size, bt)) in sites.iter().enumerate() {
        let _ = writeln!(
            out,
            "--- counted allocation #{} ({size} bytes):\n{bt}",
            i + 1
        );
    }
    out
}

/// How many times the wrappers entered the engine's continuations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Continuations {
    /// The engine's SSPI completion callback, run by [`CountedProvider`].
    pub callbacks: u64,
    /// The engine's work item, run by [`CountedPlatform`].
    pub work_items: u64,
}

impl std::ops::Sub for Continuations {
    type Output = Continuations;
    fn sub(self, o: Continuations) -> Continuations {
        Continuations {
            callbacks: self.callbacks - o.callbacks,
            work_items: self.work_items - o.work_items,
        }
    }
}

/// The continuations entered through the meter so far, over every thread.
pub fn continuations() -> Continuations {
    Continuations {
        callbacks: CALLBACKS.load(Ordering::SeqCst),
        work_items: WORK_ITEMS.load(Ordering::SeqCst),
    }
}

// ---------------------------------------------------------------------------
// The model, metered.

/// The model's provider with every call outside the count; the engine's
/// completion callback is registered behind a thunk that enters it through
/// [`engine`] (inline, on the model's completion threads, wherever it runs).
#[derive(Clone)]
pub struct CountedProvider {
    sim: SimProvider,
    /// The registration behind each async context's callback, until freed.
    thunks: Arc<Mutex<HashMap<usize, Box<Notify>>>>,
}

impl CountedProvider {
    /// `sim`, metered.
    pub fn new(sim: SimProvider) -> Self {
        CountedProvider {
            sim,
            thunks: Arc::default(),
        }
    }
}

/// The engine's callback and data for one async context.
#[derive(Clone, Copy)]
struct Notify {
    callback: unsafe extern "system" fn(*mut SspiAsyncContext, *mut c_void),
    data: usize,
}

/// The callback the model calls: the engine's, metered.
///
/// # Safety
/// `thunk` is the [`Notify`] registered for `ctx`, which lives until the
/// context is freed (never while a call on it may complete).
unsafe extern "system" fn notify(ctx: *mut SspiAsyncContext, thunk: *mut c_void) {
    // SAFETY: per the function's contract; copied out before the engine runs
    // (it may free the context, and so the registration, in its callback).
    let Notify { callback, data } = unsafe { *thunk.cast::<Notify>() };
    CALLBACKS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: the engine's callback, with the context and data it registered.
    engine(|| unsafe { callback(ctx, data as *mut c_void) });
}

macro_rules! forward {
    ($(fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {$(
        unsafe fn $name(&self $(, $arg: $ty)*) -> $ret {
            // SAFETY: forwarded with the caller's guarantees.
            outside(|| unsafe { self.sim.$name($($arg),*) })
        }
    )*};
}

impl SspiProvider for CountedProvider {
    fn current_irql(&self) -> Irql {
        self.sim.current_irql()
    }
    fn create_async_context(&self) -> Option<AsyncContextPtr> {
        outside(|| self.sim.create_async_context())
    }
    fn has_requires_notify(&self) -> bool {
        self.sim.has_requires_notify()
    }
    unsafe fn free_async_context(&self, c: AsyncContextPtr) {
        outside(|| {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { self.sim.free_async_context(c) };
            // No callback runs for a freed context: its registration goes.
            let thunk = self.thunks.lock().unwrap().remove(&(c.as_ptr() as usize));
            drop(thunk);
        })
    }
    unsafe fn set_async_notify_callback(
        &self,
        c: AsyncContextPtr,
        cb: SspiAsyncNotifyCallback,
        d: *mut c_void,
    ) -> SecStatus {
        outside(|| {
            let Some(callback) = cb else {
                // SAFETY: forwarded with the caller's guarantees.
                return unsafe { self.sim.set_async_notify_callback(c, None, d) };
            };
            let mut thunk = Box::new(Notify {
                callback,
                data: d as usize,
            });
            let ptr: *mut Notify = &mut *thunk;
            // SAFETY: the caller's guarantees for `c`; `ptr` stays valid until
            // the context is freed or re-registered (the map keeps it).
            let status = unsafe {
                self.sim
                    .set_async_notify_callback(c, Some(notify), ptr.cast())
            };
            if status.is_success() {
                let old = self
                    .thunks
                    .lock()
                    .unwrap()
                    .insert(c.as_ptr() as usize, thunk);
                drop(old);
            }
            status
        })
    }
    forward! {
        fn reinit_async_context(&self, c: AsyncContextPtr) -> SecStatus;
        fn async_context_requires_notify(&self, c: AsyncContextPtr) -> Option<bool>;
        fn get_async_call_status(&self, c: AsyncContextPtr) -> SecStatus;
        fn acquire_credentials_handle_async(&self, c: AsyncContextPtr, a: *mut UNICODE_STRING, b: *mut UNICODE_STRING, u: u32, d: *mut c_void, h: *mut SecHandle, e: *mut TimeStamp) -> SecStatus;
        fn free_credentials_handle_async(&self, c: AsyncContextPtr, h: *mut SecHandle) -> SecStatus;
        fn initialize_security_context_async(&self, c: AsyncContextPtr, cr: *mut SecHandle, x: *mut SecHandle, t: *mut UNICODE_STRING, r: u32, i: *mut SecBufferDesc, n: *mut SecHandle, o: *mut SecBufferDesc, a: *mut u32, e: *mut TimeStamp) -> SecStatus;
        fn accept_security_context_async(&self, c: AsyncContextPtr, cr: *mut SecHandle, x: *mut SecHandle, i: *mut SecBufferDesc, r: u32, n: *mut SecHandle, o: *mut SecBufferDesc, a: *mut u32, e: *mut TimeStamp) -> SecStatus;
        fn delete_security_context_async(&self, c: AsyncContextPtr, h: *mut SecHandle) -> SecStatus;
        fn encrypt_message(&self, h: *mut SecHandle, q: u32, m: *mut SecBufferDesc, s: u32) -> SecStatus;
        fn decrypt_message(&self, h: *mut SecHandle, m: *mut SecBufferDesc, s: u32, q: *mut u32) -> SecStatus;
        fn query_context_attributes(&self, h: *mut SecHandle, a: u32, b: *mut c_void) -> SecStatus;
        fn apply_control_token(&self, h: *mut SecHandle, i: *mut SecBufferDesc) -> SecStatus;
        fn free_context_buffer(&self, b: *mut c_void) -> SecStatus;
    }
}

/// The model's platform: work-item calls outside the count (the kernel's),
/// the work item's run entered through [`engine`]; `reserve` counted (the
/// session's buffers are part of its setup).
#[derive(Clone)]
pub struct CountedPlatform(SimPlatform);

impl CountedPlatform {
    /// The platform of `sim`, metered.
    pub fn new(sim: &SimProvider) -> Self {
        CountedPlatform(SimPlatform::new(sim))
    }
}

/// The engine's work-item entry and argument.
#[derive(Clone, Copy)]
struct WorkThunk {
    run: unsafe fn(*const ()),
    arg: usize,
}

/// A [`CountedPlatform`] work item: the model's, running the engine's entry
/// through [`engine`].
pub struct CountedWork {
    item: <SimPlatform as Platform>::WorkItem,
    /// What the model's item runs with; boxed, so it stays put when the item
    /// moves.
    _thunk: Box<WorkThunk>,
}

/// The work item's entry: the engine's, metered.
///
/// # Safety
/// `thunk` is the [`WorkThunk`] of a live [`CountedWork`] (the engine keeps
/// its work item while it is queued).
unsafe fn work(thunk: *const ()) {
    // SAFETY: per the function's contract; copied out before the engine runs.
    let WorkThunk { run, arg } = unsafe { *thunk.cast::<WorkThunk>() };
    WORK_ITEMS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: the engine's entry with the argument it registered.
    engine(|| unsafe { run(arg as *const ()) });
}

impl Platform for CountedPlatform {
    type WorkItem = CountedWork;
    fn create_work_item(
        &self,
        run: unsafe fn(*const ()),
        arg: *const (),
    ) -> Result<CountedWork, SecStatus> {
        outside(|| {
            let thunk = Box::new(WorkThunk {
                run,
                arg: arg as usize,
            });
            let ptr: *const WorkThunk = &*thunk;
            let item = self.0.create_work_item(work, ptr.cast())?;
            Ok(CountedWork {
                item,
                _thunk: thunk,
            })
        })
    }
    fn queue_work_item(&self, item: &CountedWork) {
        outside(|| self.0.queue_work_item(&item.item))
    }
    fn acquire_spin_lock(&self, word: &SpinWord) -> Irql {
        self.0.acquire_spin_lock(word)
    }
    unsafe fn release_spin_lock(&self, word: &SpinWord, old: Irql) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.0.release_spin_lock(word, old) }
    }
    fn now_us(&self) -> u64 {
        self.0.now_us()
    }
    fn reserve(&self, capacity: usize) -> Result<Vec<u8>, SecStatus> {
        // Counted: the session's buffers are its fixed per-session amount.
        self.0.reserve(capacity)
    }
    fn may_allocate(&self) -> Result<(), SecStatus> {
        self.0.may_allocate()
    }
}
