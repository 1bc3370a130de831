//! A provider whose calls do no cryptography, for measuring the engine's async
//! machinery alone: every `Sspi*Async` call completes with `SEC_E_OK` in the
//! chosen mode of the contract (synchronously without a callback, with the
//! callback inline on the issuer's stack, or later from a completion thread),
//! and [`continuations`] drives a conductor through a machine that issues a
//! fixed number of calls.

use crate::platform::SimPlatform;
use crate::provider::{SimConfig, SimProvider};
use ksspi::engine::conductor::{Conductor, Issue, Machine, Move};
use ksspi::engine::EngineStats;
use ksspi::handle::{AsyncContext, HandleSlot};
use ksspi::provider::{AsyncContextPtr, SspiProvider};
use ksspi::sys::{SecBufferDesc, SecHandle, SspiAsyncContext, SspiAsyncNotifyCallback};
use ksspi::sys::{TimeStamp, UNICODE_STRING};
use ksspi::{Irql, Passive, SecStatus};
use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How the null provider completes its calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NullMode {
    /// (c) synchronously, no callback.
    Sync,
    /// (b) synchronously, the callback inline before the call returns.
    Inline,
    /// (a) later: a completion thread runs the callback.
    Async,
}

struct NullContext {
    status: AtomicI32,
    notify: AtomicBool,
    callback: Mutex<(SspiAsyncNotifyCallback, usize)>,
}

#[derive(Clone, Copy)]
struct SendPtr(usize);

/// The null provider (cheap to clone).
#[derive(Clone)]
pub struct NullProvider {
    mode: NullMode,
    completions: Option<mpsc::Sender<SendPtr>>,
    contexts: Arc<AtomicU64>,
}

impl NullProvider {
    /// A provider completing in `mode` (`Async` starts one completion thread,
    /// which ends when the last clone is dropped).
    pub fn new(mode: NullMode) -> NullProvider {
        let completions = (mode == NullMode::Async).then(|| {
            let (tx, rx) = mpsc::channel::<SendPtr>();
            std::thread::spawn(move || {
                for SendPtr(ctx) in rx {
                    // SAFETY: the issuer keeps the context alive until its
                    // call completes, which is what this does.
                    unsafe { complete(ctx as *mut NullContext) };
                }
            });
            tx
        });
        NullProvider {
            mode,
            completions,
            contexts: Arc::default(),
        }
    }

    /// Async contexts alive.
    pub fn contexts_alive(&self) -> u64 {
        self.contexts.load(Ordering::Acquire)
    }

    fn issue(&self, ctx: AsyncContextPtr) -> SecStatus {
        let c = ctx.as_ptr().cast::<NullContext>();
        // SAFETY: `ctx` is one of ours and live (the caller's contract).
        let nc = unsafe { &*c };
        match self.mode {
            NullMode::Sync => {
                nc.notify.store(false, Ordering::Release);
                nc.status.store(SecStatus::SEC_E_OK.0, Ordering::Release);
            }
            NullMode::Inline => {
                nc.notify.store(true, Ordering::Release);
                // SAFETY: as above; the issuer owns the context until completion.
                unsafe { complete(c) };
            }
            NullMode::Async => {
                nc.notify.store(true, Ordering::Release);
                nc.status
                    .store(SecStatus::SEC_I_ASYNC_CALL_PENDING.0, Ordering::Release);
                if let Some(tx) = &self.completions {
                    let _ = tx.send(SendPtr(c as usize));
                }
            }
        }
        SecStatus::SEC_E_OK
    }
}

/// Complete the call in flight on `c`: status, then the callback.
///
/// # Safety
/// `c` is a live context with a call in flight.
unsafe fn complete(c: *mut NullContext) {
    // SAFETY: per the function's contract.
    let nc = unsafe { &*c };
    let (callback, data) = *nc.callback.lock().unwrap_or_else(|e| e.into_inner());
    nc.status.store(SecStatus::SEC_E_OK.0, Ordering::Release);
    if let Some(cb) = callback {
        // SAFETY: the callback and its data were registered for this context.
        unsafe { cb(c.cast::<SspiAsyncContext>(), data as *mut c_void) };
    }
}

impl SspiProvider for NullProvider {
    fn current_irql(&self) -> Irql {
        crate::kernel::current_irql()
    }

    fn create_async_context(&self) -> Option<AsyncContextPtr> {
        self.contexts.fetch_add(1, Ordering::AcqRel);
        let ctx = Box::new(NullContext {
            status: AtomicI32::new(SecStatus::SEC_E_OK.0),
            notify: AtomicBool::new(false),
            callback: Mutex::new((None, 0)),
        });
        NonNull::new(Box::into_raw(ctx).cast::<SspiAsyncContext>())
    }

    unsafe fn free_async_context(&self, ctx: AsyncContextPtr) {
        self.contexts.fetch_sub(1, Ordering::AcqRel);
        // SAFETY: created by `create_async_context`, freed once (the caller's contract).
        drop(unsafe { Box::from_raw(ctx.as_ptr().cast::<NullContext>()) });
    }

    unsafe fn reinit_async_context(&self, _ctx: AsyncContextPtr) -> SecStatus {
        SecStatus::SEC_E_OK
    }

    unsafe fn set_async_notify_callback(
        &self,
        ctx: AsyncContextPtr,
        callback: SspiAsyncNotifyCallback,
        data: *mut c_void,
    ) -> SecStatus {
        // SAFETY: a live context of ours.
        let nc = unsafe { &*ctx.as_ptr().cast::<NullContext>() };
        *nc.callback.lock().unwrap_or_else(|e| e.into_inner()) = (callback, data as usize);
        SecStatus::SEC_E_OK
    }

    fn has_requires_notify(&self) -> bool {
        true
    }

    unsafe fn async_context_requires_notify(&self, ctx: AsyncContextPtr) -> Option<bool> {
        // SAFETY: a live context of ours.
        let notify = unsafe { &*ctx.as_ptr().cast::<NullContext>() }
            .notify
            .load(Ordering::Acquire);
        Some(notify)
    }

    unsafe fn get_async_call_status(&self, ctx: AsyncContextPtr) -> SecStatus {
        // SAFETY: a live context of ours.
        SecStatus(
            unsafe { &*ctx.as_ptr().cast::<NullContext>() }
                .status
                .load(Ordering::Acquire),
        )
    }

    unsafe fn acquire_credentials_handle_async(
        &self,
        ctx: AsyncContextPtr,
        _principal: *mut UNICODE_STRING,
        _package: *mut UNICODE_STRING,
        _credential_use: u32,
        _auth_data: *mut c_void,
        _credential: *mut SecHandle,
        _expiry: *mut TimeStamp,
    ) -> SecStatus {
        self.issue(ctx)
    }

    unsafe fn free_credentials_handle_async(
        &self,
        ctx: AsyncContextPtr,
        _credential: *mut SecHandle,
    ) -> SecStatus {
        self.issue(ctx)
    }

    unsafe fn initialize_security_context_async(
        &self,
        ctx: AsyncContextPtr,
        _credential: *mut SecHandle,
        _context: *mut SecHandle,
        _target_name: *mut UNICODE_STRING,
        _context_req: u32,
        _input: *mut SecBufferDesc,
        _new_context: *mut SecHandle,
        _output: *mut SecBufferDesc,
        _context_attr: *mut u32,
        _expiry: *mut TimeStamp,
    ) -> SecStatus {
        self.issue(ctx)
    }

    unsafe fn accept_security_context_async(
        &self,
        ctx: AsyncContextPtr,
        _credential: *mut SecHandle,
        _context: *mut SecHandle,
        _input: *mut SecBufferDesc,
        _context_req: u32,
        _new_context: *mut SecHandle,
        _output: *mut SecBufferDesc,
        _context_attr: *mut u32,
        _expiry: *mut TimeStamp,
    ) -> SecStatus {
        self.issue(ctx)
    }

    unsafe fn delete_security_context_async(
        &self,
        ctx: AsyncContextPtr,
        _context: *mut SecHandle,
    ) -> SecStatus {
        self.issue(ctx)
    }

    unsafe fn encrypt_message(
        &self,
        _context: *mut SecHandle,
        _qop: u32,
        _message: *mut SecBufferDesc,
        _sequence: u32,
    ) -> SecStatus {
        SecStatus::SEC_E_UNSUPPORTED_FUNCTION
    }

    unsafe fn decrypt_message(
        &self,
        _context: *mut SecHandle,
        _message: *mut SecBufferDesc,
        _sequence: u32,
        _qop: *mut u32,
    ) -> SecStatus {
        SecStatus::SEC_E_UNSUPPORTED_FUNCTION
    }

    unsafe fn query_context_attributes(
        &self,
        _context: *mut SecHandle,
        _attribute: u32,
        _buffer: *mut c_void,
    ) -> SecStatus {
        SecStatus::SEC_E_UNSUPPORTED_FUNCTION
    }

    unsafe fn apply_control_token(
        &self,
        _context: *mut SecHandle,
        _input: *mut SecBufferDesc,
    ) -> SecStatus {
        SecStatus::SEC_E_UNSUPPORTED_FUNCTION
    }

    unsafe fn free_context_buffer(&self, _buffer: *mut c_void) -> SecStatus {
        SecStatus::SEC_E_OK
    }
}

/// A machine that issues `left` calls, one after the other, then goes idle
/// and signals `done`.
struct Counter {
    left: u64,
    completed: u64,
    done: Arc<(Mutex<bool>, Condvar)>,
}

impl Machine<NullProvider> for Counter {
    fn next(
        &mut self,
        ctx: &mut Option<AsyncContext<NullProvider>>,
        closing: bool,
        at: &Passive,
        stats: &EngineStats,
    ) -> Move<NullProvider> {
        if closing {
            return Move::Finished;
        }
        if self.left == 0 {
            return Move::Idle;
        }
        let Some(mut context) = ctx.take() else {
            return Move::Idle;
        };
        if Issue::ready(&mut context, stats).is_err() {
            *ctx = Some(context);
            return Move::Idle;
        }
        self.left -= 1;
        let call = |p: &NullProvider, c| {
            // SAFETY: the null provider reads and writes none of the pointers.
            unsafe {
                p.accept_security_context_async(
                    c,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    0,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                )
            }
        };
        // SAFETY: the null provider reads and writes none of the pointers.
        let issued = unsafe { context.issue(at, None, call) };
        match issued {
            Ok(flight) => Move::Issued(flight),
            Err(refused) => {
                *ctx = Some(refused.context);
                Move::Idle
            }
        }
    }

    fn completed(&mut self, _status: SecStatus, _slot: Option<HandleSlot>) {
        self.completed += 1;
    }

    fn went_idle(&mut self) {
        let (lock, cv) = &*self.done;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
    }
}

/// What [`continuations`] measured.
#[derive(Clone, Copy, Debug)]
pub struct ContinuationRun {
    /// Calls issued and continued.
    pub calls: u64,
    /// Wall time for all of them.
    pub elapsed: Duration,
    /// Continuations the engine queued as work items (0 at PASSIVE).
    pub work_items: u64,
}

impl ContinuationRun {
    /// Continuations per second.
    pub fn per_second(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Drive one conductor through `calls` null calls completing in `mode`, on
/// this thread (callbacks at PASSIVE_LEVEL).
pub fn continuations(mode: NullMode, calls: u64) -> ContinuationRun {
    let provider = NullProvider::new(mode);
    // The conductor's work item lives on a model's queue (unused at PASSIVE).
    let sim = SimProvider::new(SimConfig::default(), Arc::default());
    let platform = SimPlatform::new(&sim);
    let at = Passive::check(crate::kernel::current_irql()).expect("called at PASSIVE_LEVEL");
    let done = Arc::new((Mutex::new(false), Condvar::new()));
    let stats = Arc::new(EngineStats::default());
    let machine = Counter {
        left: calls,
        completed: 0,
        done: done.clone(),
    };
    let conductor = Conductor::new(
        provider.clone(),
        platform,
        machine,
        stats.clone(),
        None,
        &at,
    )
    .expect("a conductor over the null provider");
    let start = Instant::now();
    conductor
        .start(|_| Ok::<(), ()>(()), &at)
        .expect("the conductor starts");
    let (lock, cv) = &*done;
    let mut finished = lock.lock().unwrap_or_else(|e| e.into_inner());
    while !*finished {
        finished = cv.wait(finished).unwrap_or_else(|e| e.into_inner());
    }
    drop(finished);
    let elapsed = start.elapsed();
    conductor.close();
    drop(conductor);
    sim.wait_idle();
    ContinuationRun {
        calls: stats.calls.load(Ordering::Relaxed),
        elapsed,
        work_items: stats.work_items.load(Ordering::Relaxed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_continues_every_call_and_frees_its_context() {
        for mode in [NullMode::Sync, NullMode::Inline, NullMode::Async] {
            let run = continuations(mode, 2_000);
            assert_eq!(run.calls, 2_000, "{mode:?}");
            assert_eq!(
                run.work_items, 0,
                "{mode:?}: callbacks at PASSIVE continue inline"
            );
        }
        let p = NullProvider::new(NullMode::Inline);
        let ctx = p.create_async_context().unwrap();
        assert_eq!(p.contexts_alive(), 1);
        // SAFETY: created above, no call in flight.
        unsafe { p.free_async_context(ctx) };
        assert_eq!(p.contexts_alive(), 0);
    }
}
