//! Allocation accounting for tests: a global allocator that counts what a
//! thread allocates while counting is on, and wrappers around the model's
//! provider and platform whose calls are not counted (they stand for ksecdd
//! and the kernel). A test binary installs the allocator:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOCATOR: ksspi_sim::alloc_count::Counting = ksspi_sim::alloc_count::Counting;
//! ```
//!
//! then wraps what it measures in [`count`], and anything that is not the
//! engine's own work (the test's recorder, a request's copy to user mode) in
//! [`outside`].

use crate::platform::SimPlatform;
use crate::provider::SimProvider;
use ksspi::engine::Platform;
use ksspi::provider::{AsyncContextPtr, SspiProvider};
use ksspi::sys::*;
use ksspi::{Irql, SecStatus};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};

/// The counting allocator.
pub struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static OUTSIDE: Cell<u32> = const { Cell::new(0) };
}

// SAFETY: delegates to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) && OUTSIDE.with(Cell::get) == 0 {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Run `f` outside the counted code (its allocations are not counted).
pub fn outside<R>(f: impl FnOnce() -> R) -> R {
    OUTSIDE.with(|c| c.set(c.get() + 1));
    let r = f();
    OUTSIDE.with(|c| c.set(c.get() - 1));
    r
}

/// What [`count`] saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counted {
    /// Allocations.
    pub allocs: u64,
    /// Bytes they asked for.
    pub bytes: u64,
}

/// Count this thread's allocations during `f` (the allocator must be installed).
pub fn count(f: impl FnOnce()) -> Counted {
    let (a, b) = (ALLOCS.load(Ordering::SeqCst), BYTES.load(Ordering::SeqCst));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    Counted {
        allocs: ALLOCS.load(Ordering::SeqCst) - a,
        bytes: BYTES.load(Ordering::SeqCst) - b,
    }
}

/// The model's provider with every call outside the count.
#[derive(Clone)]
pub struct CountedProvider(pub SimProvider);

/// The model's platform with work-item calls outside the count.
#[derive(Clone)]
pub struct CountedPlatform(pub SimPlatform);

impl Platform for CountedPlatform {
    type WorkItem = <SimPlatform as Platform>::WorkItem;
    fn create_work_item(
        &self,
        run: unsafe fn(*const ()),
        arg: *const (),
    ) -> Result<Self::WorkItem, SecStatus> {
        outside(|| self.0.create_work_item(run, arg))
    }
    fn queue_work_item(&self, item: &Self::WorkItem) {
        outside(|| self.0.queue_work_item(item))
    }
    fn raise_to_dispatch(&self) -> Irql {
        self.0.raise_to_dispatch()
    }
    fn lower_irql(&self, old: Irql) {
        self.0.lower_irql(old)
    }
    fn now_us(&self) -> u64 {
        self.0.now_us()
    }
    fn spin_wait(&self) {
        self.0.spin_wait()
    }
    fn reserve(&self, capacity: usize) -> Result<Vec<u8>, SecStatus> {
        // Counted: the session's buffers are its fixed per-session amount.
        self.0.reserve(capacity)
    }
}

macro_rules! forward {
    ($(fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {$(
        unsafe fn $name(&self $(, $arg: $ty)*) -> $ret {
            // SAFETY: forwarded with the caller's guarantees.
            outside(|| unsafe { self.0.$name($($arg),*) })
        }
    )*};
}

impl SspiProvider for CountedProvider {
    fn current_irql(&self) -> Irql {
        self.0.current_irql()
    }
    fn create_async_context(&self) -> Option<AsyncContextPtr> {
        outside(|| self.0.create_async_context())
    }
    forward! {
        fn free_async_context(&self, c: AsyncContextPtr) -> ();
        fn reinit_async_context(&self, c: AsyncContextPtr) -> SecStatus;
        fn set_async_notify_callback(&self, c: AsyncContextPtr, cb: SspiAsyncNotifyCallback, d: *mut c_void) -> SecStatus;
        fn async_context_requires_notify(&self, c: AsyncContextPtr) -> bool;
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
