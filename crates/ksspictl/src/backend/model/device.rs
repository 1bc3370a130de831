//! The harness's backend on hosts without Windows: the driver's device engine
//! in-process, over the model of ksecdd + Schannel, with a generated server
//! certificate in the model's LocalMachine\My store.
//!
//! Requests go through a stand-in for the KMDF glue ([`ChannelRequest`]): a
//! pended request is cancelable, a user-mode cancel runs the glue's cancel
//! routine at DISPATCH_LEVEL ([`Model::cancel`]), and the race between the
//! engine's completion and the cancel routine is settled by two claims as
//! `src/kmdf/queue.rs` settles it. A [`Ledger`] counts every request sent,
//! completed (at most once) or dropped without completion. Work items go
//! through a [`CountingPlatform`] that counts them queued and run.

use crate::backend::Driver;
use crate::Failure;
use ksspi::engine::{EngineStats, Platform, SpinWord};
use ksspi::{Irql, Passive, SecStatus};
use ksspi_driver::device::{Device, DeviceConfig, FileId, PendKey, Request};
use ksspi_driver::ntstatus::{NtStatus, STATUS_CANCELLED};
use ksspi_sim::certs::{TestPki, Thumbprint};
use ksspi_sim::platform::SimWorkItem;
use ksspi_sim::{SimConfig, SimPlatform, SimProvider, SimStats};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// What a request dropped by the engine without completion delivers to its
/// waiter (on Windows: an IRP that never completes). Not an NTSTATUS the
/// engine uses.
pub const DROPPED: NtStatus = 0x7FFF_DEAD;

/// Every request sent to one model device, and how it ended.
#[derive(Default)]
pub struct Ledger {
    sent: AtomicU64,
    completed: AtomicU64,
    completed_twice: AtomicU64,
    dropped: AtomicU64,
    success: AtomicU64,
    errors: AtomicU64,
    cancelled: AtomicU64,
    not_clean: AtomicU64,
    cancels: AtomicU64,
    cancels_too_late: AtomicU64,
    cancel_routines: AtomicU64,
    cancelled_by_engine: AtomicU64,
    cancel_races: AtomicU64,
    pends: AtomicU64,
    pends_refused: AtomicU64,
}

/// A [`Ledger`]'s figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LedgerCounts {
    /// Requests handed to the engine.
    pub sent: u64,
    /// Requests completed (the first time).
    pub completed: u64,
    /// Completions of a request already completed.
    pub completed_twice: u64,
    /// Requests the engine dropped without completing them.
    pub dropped: u64,
    /// Completed with STATUS_SUCCESS.
    pub success: u64,
    /// Completed with an error NTSTATUS (negative), STATUS_CANCELLED included.
    pub errors: u64,
    /// Completed with STATUS_CANCELLED.
    pub cancelled: u64,
    /// Completed with a positive, non-zero status (never a clean outcome).
    pub not_clean: u64,
    /// Cancels user mode asked for (CancelIoEx), before or after sending.
    pub cancels: u64,
    /// Of them, cancels of a request completed already (nothing to do).
    pub cancels_too_late: u64,
    /// Cancel routines run (the request was pended and cancelable).
    pub cancel_routines: u64,
    /// Requests the engine completed from inside the cancel routine.
    pub cancelled_by_engine: u64,
    /// Requests whose completion raced the cancel routine (the second claim
    /// completed them).
    pub cancel_races: u64,
    /// Requests the engine pended.
    pub pends: u64,
    /// Pends refused because the request was cancelled already.
    pub pends_refused: u64,
}

impl Ledger {
    /// The figures now.
    pub fn counts(&self) -> LedgerCounts {
        let l = |a: &AtomicU64| a.load(Ordering::SeqCst);
        LedgerCounts {
            sent: l(&self.sent),
            completed: l(&self.completed),
            completed_twice: l(&self.completed_twice),
            dropped: l(&self.dropped),
            success: l(&self.success),
            errors: l(&self.errors),
            cancelled: l(&self.cancelled),
            not_clean: l(&self.not_clean),
            cancels: l(&self.cancels),
            cancels_too_late: l(&self.cancels_too_late),
            cancel_routines: l(&self.cancel_routines),
            cancelled_by_engine: l(&self.cancelled_by_engine),
            cancel_races: l(&self.cancel_races),
            pends: l(&self.pends),
            pends_refused: l(&self.pends_refused),
        }
    }
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::SeqCst);
}

/// The glue's view of one request (`WDFREQUEST` state).
#[derive(Default)]
struct Glue {
    /// Where the engine pended it.
    key: Option<PendKey>,
    /// Marked cancelable and not unmarked since.
    marked: bool,
    /// Cancelled by user mode (the IRP's Cancel flag).
    cancel_flag: bool,
    /// The cancel routine unmarked it (so the completing side must claim).
    routine_took: bool,
    /// Claims of the completing side and the cancel routine.
    claims: u8,
    /// Completed.
    finished: bool,
    /// What the waiter gets: the completion's status and reply (the copy to
    /// the user's buffer), or [`DROPPED`].
    result: Option<(NtStatus, Vec<u8>)>,
}

/// One request's glue state and its waiter's wake-up (one allocation per
/// request; the waiter of a request completed before it waits never sleeps).
struct Shared {
    glue: Mutex<Glue>,
    done: Condvar,
    ledger: Arc<Ledger>,
}

impl Shared {
    fn new(cancelled: bool, ledger: Arc<Ledger>) -> Arc<Shared> {
        Arc::new(Shared {
            glue: Mutex::new(Glue {
                cancel_flag: cancelled,
                ..Glue::default()
            }),
            done: Condvar::new(),
            ledger,
        })
    }

    fn glue(&self) -> std::sync::MutexGuard<'_, Glue> {
        self.glue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hand the waiter its result and wake it.
    fn deliver(&self, status: NtStatus, reply: Vec<u8>) {
        self.glue().result = Some((status, reply));
        self.done.notify_all();
    }

    /// Complete the request (the IRP): once.
    fn finish(&self, status: NtStatus, reply: Vec<u8>) {
        {
            let mut g = self.glue();
            if g.finished {
                drop(g);
                bump(&self.ledger.completed_twice);
                return;
            }
            g.finished = true;
        }
        let l = &self.ledger;
        bump(&l.completed);
        match status {
            0 => bump(&l.success),
            s if s < 0 => {
                bump(&l.errors);
                if s == STATUS_CANCELLED {
                    bump(&l.cancelled);
                }
            }
            _ => bump(&l.not_clean),
        }
        self.deliver(status, reply);
    }

    /// One claim of the two that settle a completion racing the cancel
    /// routine; the second completes with STATUS_CANCELLED.
    fn claim(&self) {
        let second = {
            let mut g = self.glue();
            g.claims += 1;
            g.claims == 2
        };
        if second {
            bump(&self.ledger.cancel_races);
            self.finish(STATUS_CANCELLED, Vec::new());
        }
    }
}

/// The stand-in for the I/O manager's system buffers (METHOD_BUFFERED): a
/// request that writes a reply takes one, and it goes back when the reply
/// has been copied to the caller. As on Windows, where the system buffer
/// comes from pool and is not zeroed, a buffer keeps whatever the last
/// request left in it (only the completion's `len` bytes ever reach the
/// caller), so the harness does not zero 64 KiB for every STEP and DECRYPT.
#[derive(Default)]
pub struct SystemBuffers {
    free: Mutex<Vec<Vec<u8>>>,
}

impl SystemBuffers {
    /// Buffers kept for reuse, at most.
    const KEPT: usize = 64;

    /// A buffer of at least `len` bytes (grown with zeros only the first
    /// time it is used at that size).
    fn take(&self, len: usize) -> Vec<u8> {
        let mut buffer = self
            .free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default();
        if buffer.len() < len {
            buffer.resize(len, 0);
        }
        buffer
    }

    /// Keep `buffer` for a later request (an empty one, from a request
    /// that never wrote, is not worth keeping).
    fn put(&self, buffer: Vec<u8>) {
        if buffer.is_empty() {
            return;
        }
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < Self::KEPT {
            free.push(buffer);
        }
    }
}

/// A request as the glue hands it to the engine.
pub struct ChannelRequest {
    capacity: usize,
    /// The output buffer (the I/O manager's system buffer), taken from
    /// `buffers` when the engine first writes to it; at least `capacity`
    /// bytes then.
    output: Vec<u8>,
    buffers: Arc<SystemBuffers>,
    shared: Arc<Shared>,
    /// The engine called `complete` or `cancelled`.
    handled: bool,
}

impl Request for ChannelRequest {
    fn output_capacity(&self) -> usize {
        self.capacity
    }

    fn output(&mut self) -> &mut [u8] {
        if self.output.len() < self.capacity {
            self.output = self.buffers.take(self.capacity);
        }
        &mut self.output[..self.capacity]
    }

    fn pend(&mut self, key: PendKey) -> bool {
        bump(&self.shared.ledger.pends);
        let mut g = self.shared.glue();
        g.key = Some(key);
        g.claims = 0;
        g.routine_took = false;
        if g.cancel_flag {
            // WdfRequestMarkCancelableEx: STATUS_CANCELLED.
            drop(g);
            bump(&self.shared.ledger.pends_refused);
            return false;
        }
        g.marked = true;
        true
    }

    fn complete(self, status: NtStatus, reply: &[u8]) {
        assert!(
            reply.len() <= self.capacity,
            "a reply of {} bytes overruns a {}-byte output buffer",
            reply.len(),
            self.capacity
        );
        self.settle(status, reply.to_vec());
    }

    fn complete_written(mut self, status: NtStatus, len: usize) {
        assert!(
            len == 0 || len <= self.output.len().min(self.capacity),
            "a reply of {len} bytes written into a {}-byte output buffer",
            self.output.len().min(self.capacity)
        );
        // The I/O manager copies the reply to the caller's buffer and frees
        // the system buffer.
        let reply = self.output.get(..len).unwrap_or_default().to_vec();
        self.buffers.put(std::mem::take(&mut self.output));
        self.settle(status, reply);
    }

    fn cancelled(mut self) {
        self.handled = true;
        bump(&self.shared.ledger.cancelled_by_engine);
        self.shared.finish(STATUS_CANCELLED, Vec::new());
    }
}

impl ChannelRequest {
    /// Complete with `reply` (unless the cancel routine took the request:
    /// then this is one of the two claims).
    fn settle(mut self, status: NtStatus, reply: Vec<u8>) {
        self.handled = true;
        let raced = {
            let mut g = self.shared.glue();
            if g.marked {
                g.marked = false; // WdfRequestUnmarkCancelable succeeds
                false
            } else {
                g.routine_took
            }
        };
        if raced {
            self.shared.claim();
        } else {
            self.shared.finish(status, reply);
        }
    }
}

impl Drop for ChannelRequest {
    fn drop(&mut self) {
        if !self.handled {
            bump(&self.shared.ledger.dropped);
            // Wake the waiter rather than hang it; the ledger has it.
            self.shared.deliver(DROPPED, Vec::new());
        }
    }
}

/// A request user mode sent and waits for.
pub struct Pending {
    shared: Arc<Shared>,
}

impl Pending {
    /// Wait for the completion: its status and reply (taken: a second wait
    /// finds nothing), or `None` after `timeout`.
    pub fn wait(&self, timeout: Duration) -> Option<(NtStatus, Vec<u8>)> {
        let glue = self.shared.glue();
        let (mut glue, _) = self
            .shared
            .done
            .wait_timeout_while(glue, timeout, |g| g.result.is_none())
            .unwrap_or_else(|e| e.into_inner());
        glue.result.take()
    }
}

/// Work items queued and run through a [`CountingPlatform`].
#[derive(Default)]
pub struct WorkCounts {
    pub queued: AtomicU64,
    pub ran: AtomicU64,
}

/// The model's platform, counting the engine's work items as they are queued
/// and as they finish running.
#[derive(Clone)]
pub struct CountingPlatform {
    inner: SimPlatform,
    counts: Arc<WorkCounts>,
}

/// What a counted work item runs: the engine's entry and argument.
struct Hook {
    run: unsafe fn(*const ()),
    arg: usize,
    counts: Arc<WorkCounts>,
}

/// One work item: the model's, and the hook it runs (dropped after it).
pub struct CountingItem {
    inner: SimWorkItem,
    _hook: Box<Hook>,
}

/// The counted work item's entry.
///
/// # Safety
/// `hook` is the [`Hook`] of a live [`CountingItem`]: the engine keeps the
/// item (and so its boxed hook) alive while it is queued or running.
unsafe fn hook_entry(hook: *const ()) {
    // SAFETY: per the function's contract; the box never moves.
    let hook = unsafe { &*hook.cast::<Hook>() };
    let (run, arg, counts) = (hook.run, hook.arg, hook.counts.clone());
    // SAFETY: `run` and `arg` are what the engine registered for this item;
    // it keeps `arg` alive while the item is queued. The item may be gone
    // once `run` returns: only the cloned counter is used after.
    unsafe { run(arg as *const ()) };
    counts.ran.fetch_add(1, Ordering::SeqCst);
}

impl Platform for CountingPlatform {
    type WorkItem = CountingItem;

    fn create_work_item(
        &self,
        run: unsafe fn(*const ()),
        arg: *const (),
    ) -> Result<CountingItem, SecStatus> {
        let hook = Box::new(Hook {
            run,
            arg: arg as usize,
            counts: self.counts.clone(),
        });
        let at = std::ptr::from_ref::<Hook>(&hook).cast::<()>();
        let inner = self.inner.create_work_item(hook_entry, at)?;
        Ok(CountingItem { inner, _hook: hook })
    }

    fn queue_work_item(&self, item: &CountingItem) {
        self.counts.queued.fetch_add(1, Ordering::SeqCst);
        self.inner.queue_work_item(&item.inner);
    }

    fn acquire_spin_lock(&self, word: &SpinWord) -> Irql {
        self.inner.acquire_spin_lock(word)
    }

    unsafe fn release_spin_lock(&self, word: &SpinWord, old: Irql) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.inner.release_spin_lock(word, old) }
    }

    fn now_us(&self) -> u64 {
        self.inner.now_us()
    }

    fn reserve(&self, capacity: usize) -> Result<Vec<u8>, SecStatus> {
        self.inner.reserve(capacity)
    }

    fn may_allocate(&self) -> Result<(), SecStatus> {
        self.inner.may_allocate()
    }
}

/// The device engine's counters at the end (see [`EngineStats`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct EngineCounts {
    pub calls: u64,
    pub completed_sync: u64,
    pub callback_first: u64,
    pub issuer_first: u64,
    pub callbacks_passive: u64,
    pub callbacks_dispatch: u64,
    pub work_items: u64,
}

impl EngineCounts {
    fn of(s: &EngineStats) -> Self {
        let l = |a: &AtomicU64| a.load(Ordering::SeqCst);
        EngineCounts {
            calls: l(&s.calls),
            completed_sync: l(&s.completed_sync),
            callback_first: l(&s.callback_first),
            issuer_first: l(&s.issuer_first),
            callbacks_passive: l(&s.callbacks_passive),
            callbacks_dispatch: l(&s.callbacks_dispatch),
            work_items: l(&s.work_items),
        }
    }
}

/// Everything a model device leaves behind at unload.
#[derive(Debug, Default)]
pub struct Unloaded {
    /// Objects still alive in the model's verifier (0: its list is empty).
    pub leaked: u64,
    /// The leak list, for people.
    pub leak_report: String,
    /// Sessions alive when the model was let go (after waiting for them).
    pub sessions_alive: u32,
    /// The device engine's counters (IOCTL sessions and their credentials).
    pub engine: EngineCounts,
    /// The model's counters (every async call, the self-test's included).
    pub sim: SimStats,
    /// Work items queued and run, over the whole device.
    pub work_queued: u64,
    pub work_ran: u64,
    /// Every request, and how it ended (read after the device is gone, so a
    /// request it still held counts as dropped).
    pub requests: LedgerCounts,
    /// Fault points passed and faults injected.
    pub fault_points: u64,
    pub faults_injected: u64,
}

/// The device over the model.
pub struct Model {
    pub sim: SimProvider,
    pub device: Device<SimProvider, CountingPlatform, ChannelRequest>,
    pub file: FileId,
    pub thumbprint: Thumbprint,
    pub ledger: Arc<Ledger>,
    work: Arc<WorkCounts>,
    buffers: Arc<SystemBuffers>,
}

impl Model {
    /// A model device with a fresh test PKI: a CA in Root, a "localhost"
    /// server certificate in MY, and room for a self-test of 10 000
    /// handshakes at once (20 000 sessions).
    pub fn new(config: SimConfig) -> Model {
        Model::sized(config, 2 * 10_000)
    }

    /// [`Model::new`] with a session table of `max_sessions` (the bench's
    /// scale run sizes it to its concurrency: twice as many sessions, up to
    /// the ABI's [`ksspi_abi::MAX_SELFTEST_CONCURRENCY`] handshakes at once).
    /// The driver's own default stays [`DeviceConfig::default`]'s.
    pub fn sized(config: SimConfig, max_sessions: u32) -> Model {
        let (store, thumbprint) = TestPki::new("ksspictl model CA").store(&["localhost"]);
        let sim = SimProvider::new(config, Arc::new(store));
        let work = Arc::new(WorkCounts::default());
        let platform = CountingPlatform {
            inner: SimPlatform::new(&sim),
            counts: work.clone(),
        };
        // A self-test's concurrency is bounded by half the device's sessions.
        let config = DeviceConfig {
            max_sessions,
            ..DeviceConfig::default()
        };
        let device = Device::new(sim.clone(), platform, config);
        let file = device.open_file();
        Model {
            sim,
            device,
            file,
            thumbprint,
            ledger: Arc::default(),
            work,
            buffers: Arc::default(),
        }
    }

    /// Send an IOCTL and start waiting for its completion.
    pub fn send(&self, code: u32, input: &[u8], capacity: usize) -> Pending {
        self.submit(self.file, code, input, capacity, false)
    }

    /// Send an IOCTL on `file`; `cancelled` sends it cancelled already (user
    /// mode cancelled it before the driver could pend it).
    pub fn submit(
        &self,
        file: FileId,
        code: u32,
        input: &[u8],
        capacity: usize,
        cancelled: bool,
    ) -> Pending {
        let shared = Shared::new(cancelled, self.ledger.clone());
        if cancelled {
            bump(&self.ledger.cancels);
        }
        bump(&self.ledger.sent);
        let at = Passive::check(Irql::PASSIVE).expect("the harness thread runs at PASSIVE");
        let request = ChannelRequest {
            capacity,
            output: Vec::new(),
            buffers: self.buffers.clone(),
            shared: shared.clone(),
            handled: false,
        };
        self.device.ioctl(file, code, input, request, &at);
        Pending { shared }
    }

    /// User mode cancels `request` (CancelIoEx). If the engine pended it and
    /// it is still cancelable, the glue's cancel routine runs here, at
    /// DISPATCH_LEVEL as the I/O manager calls it. Returns whether the cancel
    /// routine ran.
    pub fn cancel(&self, request: &Pending) -> bool {
        let shared = &request.shared;
        bump(&self.ledger.cancels);
        let key = {
            let mut g = shared.glue();
            if g.finished {
                // Completed already: nothing to cancel.
                bump(&self.ledger.cancels_too_late);
                return false;
            }
            g.cancel_flag = true;
            if !g.marked {
                return false; // not cancelable (yet): pend will refuse it
            }
            g.marked = false;
            g.routine_took = true;
            g.key
        };
        let Some(key) = key else {
            return false;
        };
        bump(&self.ledger.cancel_routines);
        let _dispatch = ksspi_sim::kernel::raise_irql(Irql::DISPATCH);
        if !self.device.cancel(key) {
            shared.claim();
        }
        true
    }

    /// Close everything, wait for it to go, and count what the model's
    /// verifier still holds.
    fn unload(self) -> u64 {
        let report = self.unload_report();
        if report.leaked > 0 {
            eprintln!("{}", report.leak_report);
        }
        report.leaked
    }

    /// Close everything, wait for it to go, let go of the device and unload
    /// the model: every figure that must balance at the end.
    pub fn unload_report(self) -> Unloaded {
        self.device.cleanup(self.file);
        self.device.unload();
        for _ in 0..2000 {
            if self.device.sessions_alive() == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.sim.wait_idle();
        let sessions_alive = self.device.sessions_alive();
        let stats = self.device.stats().clone();
        drop(self.device);
        let (leaked, leak_report) = match self.sim.unload() {
            Ok(()) => (0, String::new()),
            Err(report) => (report.0.len() as u64, report.to_string()),
        };
        let verifier = self.sim.verifier();
        Unloaded {
            leaked,
            leak_report,
            sessions_alive,
            engine: EngineCounts::of(&stats),
            sim: self.sim.stats(),
            work_queued: self.work.queued.load(Ordering::SeqCst),
            work_ran: self.work.ran.load(Ordering::SeqCst),
            requests: self.ledger.counts(),
            fault_points: verifier.points(),
            faults_injected: verifier.injected(),
        }
    }
}

impl Driver for Model {
    fn backend(&self) -> &'static str {
        "model"
    }

    fn call(&self, code: u32, input: &[u8], capacity: usize) -> Result<(i32, Vec<u8>), Failure> {
        self.send(code, input, capacity)
            .wait(Duration::from_secs(600))
            .ok_or_else(|| Failure("the driver did not complete the request within 600 s".into()))
    }

    fn finish(self: Box<Self>) -> u64 {
        self.unload()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ksspi_abi::SessionId;

    fn request(model: &Model) -> (ChannelRequest, Pending) {
        let shared = Shared::new(false, model.ledger.clone());
        bump(&model.ledger.sent);
        let r = ChannelRequest {
            capacity: 64,
            output: Vec::new(),
            buffers: model.buffers.clone(),
            shared: shared.clone(),
            handled: false,
        };
        (r, Pending { shared })
    }

    fn key(model: &Model) -> PendKey {
        PendKey {
            file: model.file,
            session: SessionId(0x7777_0000_0001),
            serial: 1,
        }
    }

    #[test]
    fn a_request_dropped_without_completion_is_counted_and_its_waiter_woken() {
        let model = Model::new(SimConfig::default());
        let (r, p) = request(&model);
        drop(r);
        assert_eq!(p.wait(Duration::from_secs(1)).map(|d| d.0), Some(DROPPED));
        let l = model.ledger.counts();
        assert_eq!((l.sent, l.completed, l.dropped), (1, 0, 1));
        assert_eq!(model.unload_report().leaked, 0);
    }

    #[test]
    fn system_buffers_are_reused_and_a_reply_is_only_what_was_written() {
        let model = Model::new(SimConfig::default());
        let (mut r, p) = request(&model);
        r.output()[..4].copy_from_slice(b"long");
        let first = r.output().as_ptr();
        r.complete_written(0, 4);
        assert_eq!(p.wait(Duration::from_secs(1)), Some((0, b"long".to_vec())));
        // The next request gets the same buffer back, not zeroed (as pool
        // memory is not), and its reply is the one byte it wrote.
        let (mut r, p) = request(&model);
        assert_eq!(r.output().as_ptr(), first);
        assert_eq!(&r.output()[..4], b"long");
        r.output()[0] = b'X';
        r.complete_written(0, 1);
        assert_eq!(p.wait(Duration::from_secs(1)), Some((0, b"X".to_vec())));
        // A request that writes nothing takes no buffer.
        let (r, p) = request(&model);
        r.complete_written(0, 0);
        assert_eq!(p.wait(Duration::from_secs(1)), Some((0, vec![])));
        assert_eq!(model.unload_report().leaked, 0);
    }

    #[test]
    fn a_completion_racing_the_cancel_routine_completes_once_cancelled() {
        let model = Model::new(SimConfig::default());
        // Pended, then cancelled: the engine does not hold it (a foreign
        // key), so the routine claims; the engine's completion is the
        // second claim and completes it STATUS_CANCELLED.
        let (mut r, p) = request(&model);
        assert!(r.pend(key(&model)));
        assert!(model.cancel(&p));
        r.complete(0, b"late");
        assert_eq!(
            p.wait(Duration::from_secs(1)),
            Some((STATUS_CANCELLED, vec![]))
        );
        // Cancelled before the engine pends it: the pend is refused.
        let (mut r, p) = request(&model);
        bump(&model.ledger.cancels);
        p.shared.glue().cancel_flag = true;
        assert!(!r.pend(key(&model)));
        r.complete(STATUS_CANCELLED, &[]);
        // Completed, then a late cancel: nothing happens.
        let (mut r, p) = request(&model);
        assert!(r.pend(key(&model)));
        r.complete(0, b"done");
        assert!(!model.cancel(&p));
        assert_eq!(p.wait(Duration::from_secs(1)), Some((0, b"done".to_vec())));
        let l = model.ledger.counts();
        assert_eq!(
            (l.sent, l.completed, l.completed_twice, l.dropped),
            (3, 3, 0, 0)
        );
        assert_eq!(
            (l.cancel_routines, l.cancel_races, l.pends_refused),
            (1, 1, 1)
        );
        assert_eq!((l.cancelled, l.success), (2, 1));
        assert_eq!(model.unload_report().leaked, 0);
    }
}
