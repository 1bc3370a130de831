//! After setup, a handshake step and a record-layer call (encrypt, decrypt,
//! shutdown) allocate nothing in the engine: every
//! allocation made while `Session::step` runs is counted, except those made
//! inside the (model) provider, the platform's work queue and the test's own
//! event recorder, which stand for ksecdd, the kernel and the driver.

mod engine_support;

use engine_support::*;
use ksspi::engine::{
    Limits, Outcome, Platform, RecordReport, Role, Session, SessionEvents, SessionSetup, StepReport,
};
use ksspi::provider::{AsyncContextPtr, SspiProvider};
use ksspi::sys::*;
use ksspi::{Irql, SecStatus};
use ksspi_sim::{CallbackIrql, Completion, CompletionPolicy, SimConfig, SimPlatform, SimProvider};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

struct Counting;

static ENGINE_ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static OUTSIDE: Cell<u32> = const { Cell::new(0) };
}

// SAFETY: delegates to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) && OUTSIDE.with(Cell::get) == 0 {
            ENGINE_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Run `f` outside the engine (its allocations are not the engine's).
fn outside<R>(f: impl FnOnce() -> R) -> R {
    OUTSIDE.with(|c| c.set(c.get() + 1));
    let r = f();
    OUTSIDE.with(|c| c.set(c.get() - 1));
    r
}

#[derive(Clone)]
struct Provider(SimProvider);

macro_rules! forward {
    ($(fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {$(
        unsafe fn $name(&self $(, $arg: $ty)*) -> $ret {
            // SAFETY: forwarded with the caller's guarantees.
            outside(|| unsafe { self.0.$name($($arg),*) })
        }
    )*};
}

impl SspiProvider for Provider {
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

#[derive(Clone)]
struct Kernel(SimPlatform);

impl Platform for Kernel {
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
}

struct Events(Arc<Recorder>);

impl SessionEvents for Events {
    fn step_done(&self, report: &StepReport<'_>) {
        outside(|| self.0.step_done(report))
    }
    fn record_done(&self, report: &RecordReport<'_>) {
        outside(|| self.0.record_done(report))
    }
    fn step_ready(&self) {
        outside(|| self.0.step_ready())
    }
    fn closed(&self) {
        outside(|| self.0.closed())
    }
}

fn session(
    sim: &SimProvider,
    role: Role,
    cred: Arc<ksspi::handle::Credentials<Provider>>,
    rec: &Arc<Recorder>,
) -> Session<Provider, Kernel> {
    let setup = SessionSetup {
        role,
        credentials: cred,
        limits: Limits::default(),
        events: Arc::new(Events(rec.clone())),
    };
    Session::new(
        Provider(sim.clone()),
        Kernel(SimPlatform::new(sim)),
        setup,
        Arc::default(),
        &passive(),
    )
    .unwrap()
}

fn acquire_wrapped(
    sim: &SimProvider,
    spec: &ksspi::engine::CredentialSpec,
) -> Arc<ksspi::handle::Credentials<Provider>> {
    let slot = Arc::new(std::sync::Mutex::new(None));
    let s2 = slot.clone();
    ksspi::engine::acquire_credentials(
        Provider(sim.clone()),
        Kernel(SimPlatform::new(sim)),
        spec,
        Arc::default(),
        Box::new(move |r| *s2.lock().unwrap() = Some(r)),
        &passive(),
    )
    .unwrap();
    sim.wait_idle();
    let r = slot.lock().unwrap().take().expect("acquired");
    r.expect("credentials")
}

/// Count the engine's allocations during `f`.
fn count(f: impl FnOnce()) -> u64 {
    let before = ENGINE_ALLOCS.load(Ordering::SeqCst);
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ENGINE_ALLOCS.load(Ordering::SeqCst) - before
}

#[test]
fn a_handshake_step_allocates_nothing_in_the_engine() {
    // The counter sees an allocation made in the counted region...
    assert_eq!(count(|| drop(std::hint::black_box(vec![1u8; 10]))), 1);
    // ...and none made outside the engine.
    assert_eq!(
        count(|| outside(|| drop(std::hint::black_box(vec![1u8; 10])))),
        0
    );
    for mode in [
        Completion::Sync,
        Completion::Inline,
        Completion::AsyncBeforeReturn,
    ] {
        let config = SimConfig {
            completion: CompletionPolicy::Always(mode),
            callback_irql: CallbackIrql::Passive,
            ..SimConfig::default()
        };
        let (sim, thumb) = sim_with(config);
        let server_cred = acquire_wrapped(&sim, &server_spec(thumb, 0));
        let client_cred = acquire_wrapped(&sim, &client_spec(0));
        let (srec, crec) = (Arc::new(Recorder::default()), Arc::new(Recorder::default()));
        let server = session(&sim, Role::Server, server_cred.clone(), &srec);
        let client = session(
            &sim,
            Role::Client {
                target: Some("localhost".into()),
            },
            client_cred.clone(),
            &crec,
        );
        let at = passive();
        let mut allocs = 0;
        allocs += count(|| client.step(&[], &at).unwrap());
        let mut to_server = crec.next().output;
        let mut steps = 1;
        let (mut c_done, mut s_done) = (false, false);
        for _ in 0..8 {
            if !s_done && !to_server.is_empty() {
                allocs += count(|| server.step(&to_server, &at).unwrap());
                steps += 1;
                let r = srec.next();
                s_done = r.outcome == Outcome::Established;
                if !c_done && !r.output.is_empty() {
                    allocs += count(|| client.step(&r.output, &at).unwrap());
                    steps += 1;
                    let c = crec.next();
                    c_done = c.outcome == Outcome::Established;
                    to_server = c.output;
                } else {
                    to_server.clear();
                }
            }
            if c_done && s_done {
                break;
            }
        }
        assert!(c_done && s_done, "{mode:?}: handshake did not finish");
        assert_eq!(
            allocs, 0,
            "{mode:?}: the engine allocated {allocs} times over {steps} steps"
        );
        // The record layer: encrypt, decrypt, shutdown and the peer's
        // close_notify allocate nothing in the engine either.
        let data: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
        let mut wire = vec![0u8; client.sealed_len(data.len()).unwrap()];
        let mut n = 0;
        let mut record_allocs = count(|| n = client.encrypt(&data, &mut wire, &at).unwrap());
        record_allocs += count(|| server.decrypt(&wire[..n], &at).unwrap());
        assert!(srec.next_record().data == data, "{mode:?}: decrypted");
        record_allocs += count(|| server.shutdown(&at).unwrap());
        let close = srec.next_record();
        record_allocs += count(|| client.decrypt(&close.output, &at).unwrap());
        assert_eq!(
            crec.next_record().outcome,
            ksspi::engine::RecordOutcome::PeerClosed
        );
        assert_eq!(
            record_allocs, 0,
            "{mode:?}: the record layer allocated {record_allocs} times"
        );
        server.close();
        client.close();
        srec.wait_closed();
        crec.wait_closed();
        drop((server, client));
        for cred in [server_cred, client_cred] {
            drop(Arc::try_unwrap(cred).ok().expect("unshared")); // released by its own drop at PASSIVE
        }
        sim.wait_idle();
        sim.unload().unwrap_or_else(|leaks| panic!("{leaks}"));
    }
}
