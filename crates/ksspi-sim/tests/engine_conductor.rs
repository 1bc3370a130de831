//! The conductor alone, with calls that do no cryptography: every call's
//! continuation runs exactly once, and the stack stays bounded however the
//! calls complete (a trampoline, not issue -> callback -> issue recursion).

mod engine_support;

use engine_support::passive;
use ksspi::engine::conductor::{Conductor, EngineStats, Issue, Machine, Move};
use ksspi::handle::{AsyncContext, HandleSlot};
use ksspi::sys::SecHandle;
use ksspi::{Passive, SecStatus};
use ksspi_sim::certs::CertStore;
use ksspi_sim::{CallbackIrql, Completion, CompletionPolicy, SimConfig, SimPlatform, SimProvider};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Tally {
    completed: AtomicU64,
    finished: AtomicU64,
    idle: AtomicU64,
    low: AtomicUsize,
    high: AtomicUsize,
    done: (Mutex<bool>, Condvar),
}

/// Issues `left` cheap calls (a delete of an invalid handle), one after the other.
struct Spinner {
    left: u64,
    handle: SecHandle,
    tally: Arc<Tally>,
}

impl Machine<SimProvider> for Spinner {
    fn next(
        &mut self,
        ctx: &mut Option<AsyncContext<SimProvider>>,
        closing: bool,
        at: &Passive,
        stats: &EngineStats,
    ) -> Move<SimProvider> {
        if closing {
            return Move::Finished;
        }
        if self.left == 0 {
            return Move::Idle;
        }
        let mut context = ctx.take().expect("the context is back between calls");
        Issue::ready(&mut context, stats).expect("reinit");
        let handle: *mut SecHandle = &mut self.handle;
        let call = |p: &SimProvider, c| {
            // SAFETY: `issue` hands over a live, idle context; the handle
            // lives in this machine until the call completes.
            unsafe { ksspi::SspiProvider::delete_security_context_async(p, c, handle) }
        };
        // SAFETY: the handle lives in this machine until the call completes.
        match unsafe { context.issue(at, None, call) } {
            Ok(flight) => Move::Issued(flight),
            Err(refused) => panic!("refused: {}", refused.status),
        }
    }

    fn wants_call(&self, closing: bool) -> bool {
        !closing && self.left > 0
    }

    fn completed(&mut self, status: SecStatus, _slot: Option<HandleSlot>) {
        assert_eq!(status, SecStatus::SEC_E_INVALID_HANDLE);
        self.left -= 1;
        self.tally.completed.fetch_add(1, Ordering::SeqCst);
        let marker = 0u8;
        let sp = std::hint::black_box(&marker) as *const u8 as usize;
        self.tally.low.fetch_min(sp, Ordering::SeqCst);
        self.tally.high.fetch_max(sp, Ordering::SeqCst);
    }

    fn went_idle(&mut self) {
        self.tally.idle.fetch_add(1, Ordering::SeqCst);
        *self.tally.done.0.lock().unwrap() = true;
        self.tally.done.1.notify_all();
    }

    fn finished(&mut self) {
        self.tally.finished.fetch_add(1, Ordering::SeqCst);
    }
}

fn spin(mode: Completion, irql: CallbackIrql, calls: u64) -> (Arc<Tally>, Arc<EngineStats>) {
    let config = SimConfig {
        completion: CompletionPolicy::Always(mode),
        callback_irql: irql,
        ..SimConfig::default()
    };
    let sim = SimProvider::new(config, Arc::new(CertStore::new()));
    let tally = Arc::new(Tally {
        low: AtomicUsize::new(usize::MAX),
        ..Tally::default()
    });
    let stats = Arc::new(EngineStats::default());
    let machine = Spinner {
        left: calls,
        handle: SecHandle::INVALID,
        tally: tally.clone(),
    };
    let conductor = Conductor::new(
        sim.clone(),
        SimPlatform::new(&sim),
        machine,
        stats.clone(),
        None,
        &passive(),
    )
    .unwrap();
    conductor.start(|_| Ok::<(), ()>(()), &passive()).unwrap();
    {
        let mut done = tally.done.0.lock().unwrap();
        while !*done {
            let (g, t) = tally
                .done
                .1
                .wait_timeout(done, Duration::from_secs(60))
                .unwrap();
            done = g;
            assert!(!t.timed_out(), "{mode:?}: calls did not finish");
        }
    }
    drop(conductor); // closes: the machine finishes
    sim.wait_idle();
    sim.unload().unwrap_or_else(|leaks| panic!("{leaks}"));
    (tally, stats)
}

#[test]
fn every_continuation_runs_exactly_once_in_every_mode() {
    for mode in Completion::ALL {
        for irql in [CallbackIrql::Passive, CallbackIrql::Dispatch] {
            let (tally, stats) = spin(mode, irql, 2_000);
            assert_eq!(
                tally.completed.load(Ordering::SeqCst),
                2_000,
                "{mode:?} {irql:?}"
            );
            assert_eq!(tally.idle.load(Ordering::SeqCst), 1);
            assert_eq!(tally.finished.load(Ordering::SeqCst), 1);
            assert_eq!(stats.calls.load(Ordering::SeqCst), 2_000);
            assert_eq!(stats.reinits.load(Ordering::SeqCst), 1_999);
            assert_eq!(stats.async_contexts.load(Ordering::SeqCst), 1);
            let work = stats.work_items.load(Ordering::SeqCst);
            match (mode, irql) {
                (Completion::Sync, _) => {
                    assert_eq!(stats.completed_sync.load(Ordering::SeqCst), 2_000)
                }
                (Completion::Inline | Completion::AsyncBeforeReturn, _) => {
                    // The callback always arrives first: the issuer's loop continues.
                    assert_eq!(stats.callback_first.load(Ordering::SeqCst), 2_000);
                    assert_eq!(work, 0);
                }
                (Completion::Async, CallbackIrql::Dispatch) => {
                    // Whenever the callback continued, it was above PASSIVE: a work item.
                    assert_eq!(work, stats.issuer_first.load(Ordering::SeqCst));
                }
                (Completion::Async, _) => assert_eq!(work, 0),
            }
        }
    }
}

#[test]
fn the_stack_stays_bounded_over_many_synchronous_completions() {
    for mode in [
        Completion::Inline,
        Completion::Sync,
        Completion::AsyncBeforeReturn,
    ] {
        let (tally, _) = spin(mode, CallbackIrql::Passive, 50_000);
        let spread = tally.high.load(Ordering::SeqCst) - tally.low.load(Ordering::SeqCst);
        // Recursion would grow the stack by hundreds of bytes per call (and
        // overflow it long before 50 000 calls); the trampoline stays put.
        assert!(
            spread < 16 * 1024,
            "{mode:?}: stack spread {spread} bytes over 50 000 calls"
        );
    }
}
