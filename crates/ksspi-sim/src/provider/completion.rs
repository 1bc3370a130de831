//! How a call completes: issuing it ([`SimProvider::issue`]), the seeded
//! choice of completion mode and callback IRQL, completing it later on a
//! "CPU", inline or without a callback ([`SimProvider::complete`]), and
//! holding the completion threads ([`SimProvider::hold_completions`]).

use super::{CallbackIrql, Completion, CompletionPolicy, SimProvider};
use crate::kernel::{self, bugcheck, Bugcheck};
use crate::verifier::FaultKind;
use ksspi::provider::AsyncContextPtr;
use ksspi::sys::*;
use ksspi::{Irql, SecStatus};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::ffi::c_void;
use std::sync::atomic::Ordering;
use std::sync::Arc;

thread_local! {
    /// The async context whose callback this thread is running, if any.
    pub(super) static IN_CALLBACK: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Completion threads held by [`SimProvider::hold_completions`].
#[must_use = "the completion threads stay blocked until the hold is released"]
pub struct CompletionHold(Arc<std::sync::Barrier>);

impl CompletionHold {
    /// Let the completion threads go.
    pub fn release(self) {
        self.0.wait();
    }
}

impl SimProvider {
    /// Keep every completion thread (the "other CPUs") busy until the hold is
    /// released, so `Async` calls issued meanwhile stay in flight.
    pub fn hold_completions(&self) -> CompletionHold {
        let cpus = self.0.config.cpus.max(1);
        let gate = Arc::new(std::sync::Barrier::new(cpus + 1));
        for _ in 0..cpus {
            let gate = gate.clone();
            self.0.cpus.queue(move || {
                gate.wait();
            });
        }
        CompletionHold(gate)
    }

    /// The random draws for one call: a ChaCha8 stream keyed by the seed, the
    /// context's creation number and the call's number on that context, so a
    /// call's choices do not depend on how threads interleave.
    fn draws(&self, ctx_id: u64, call: u64) -> ChaCha8Rng {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&self.0.config.seed.to_le_bytes());
        key[8..16].copy_from_slice(&ctx_id.to_le_bytes());
        key[16..24].copy_from_slice(&call.to_le_bytes());
        ChaCha8Rng::from_seed(key)
    }

    fn pick_completion(&self, draws: &mut ChaCha8Rng) -> Completion {
        let mode = match self.0.config.completion {
            CompletionPolicy::Always(c) => c,
            CompletionPolicy::Mixed => Completion::ALL[(draws.next_u64() % 4) as usize],
        };
        // Without SspiAsyncContextRequiresNotify a driver cannot know that a
        // call needs no callback: the system must always call back.
        if mode == Completion::Sync && !self.0.config.requires_notify_exported {
            Completion::Inline
        } else {
            mode
        }
    }

    fn pick_irql(&self, draws: &mut ChaCha8Rng) -> Irql {
        match self.0.config.callback_irql {
            CallbackIrql::Passive => Irql::PASSIVE,
            CallbackIrql::Dispatch => Irql::DISPATCH,
            CallbackIrql::Mixed if draws.next_u64().is_multiple_of(2) => Irql::PASSIVE,
            CallbackIrql::Mixed => Irql::DISPATCH,
        }
    }

    /// Queue one async call: the common part of every `Sspi*Async` function.
    pub(super) fn issue(
        &self,
        ctx: AsyncContextPtr,
        function: &'static str,
        null_callback_allowed: bool,
        op: impl FnOnce(&SimProvider) -> SecStatus + Send + 'static,
    ) -> SecStatus {
        kernel::require_passive(function);
        let key = ctx.as_ptr() as usize;
        self.with_ctx(ctx, function, |c| {
            if c.in_flight {
                bugcheck(
                    Bugcheck::DriverVerifierDetectedViolation,
                    format_args!("{function} on async context {key:#x} while a call is in flight"),
                );
            }
            if c.callback.is_none() && !null_callback_allowed {
                bugcheck(
                    Bugcheck::DriverVerifierDetectedViolation,
                    format_args!("{function} with a NULL callback (only SspiDeleteSecurityContextAsync allows one)"),
                );
            }
        });
        if self.0.verifier.fault_point(FaultKind::Call) {
            return SecStatus::SEC_E_INSUFFICIENT_MEMORY;
        }
        let (ctx_id, call) = self.with_ctx(ctx, function, |c| {
            c.calls += 1;
            (c.id, c.calls)
        });
        let mut draws = self.draws(ctx_id, call);
        let mode = self.pick_completion(&mut draws);
        let irql = self.pick_irql(&mut draws);
        self.0.counters.calls.fetch_add(1, Ordering::Relaxed);
        self.with_ctx(ctx, function, |c| {
            c.in_flight = true;
            c.used = true;
            c.status = SecStatus::SEC_I_ASYNC_CALL_PENDING;
            c.requires_notify = mode != Completion::Sync && c.callback.is_some();
        });
        let this = self.clone();
        let run = move || {
            let status = op(&this);
            this.complete(key, status, mode, irql);
        };
        match mode {
            Completion::Inline | Completion::Sync => run(),
            Completion::Async => self.0.cpus.queue(run),
            Completion::AsyncBeforeReturn => {
                // A CPU of its own: the issuer waits only to force the ordering
                // (a real issuer never waits), and taking a pool thread here
                // could leave none for a call issued from a callback.
                let cpu = std::thread::Builder::new()
                    .name("ksspi-sim-cpu-before-return".into())
                    .spawn(run)
                    .expect("spawn a completion thread");
                if let Err(panic) = cpu.join() {
                    std::panic::resume_unwind(panic);
                }
            }
        }
        SecStatus::SEC_E_OK
    }

    /// Record a call's result and signal it as `mode` says. After the callback
    /// returns the context may be gone (freed in the callback): not touched.
    fn complete(&self, key: usize, status: SecStatus, mode: Completion, irql: Irql) {
        let counters = &self.0.counters;
        let callback = {
            let mut t = self.tables();
            let c = t
                .contexts
                .get_mut(&key)
                .expect("a context is not freed while in flight");
            c.status = status;
            c.in_flight = false;
            if c.requires_notify {
                c.callback.map(|cb| (cb, c.data))
            } else {
                None
            }
        };
        match mode {
            Completion::Sync => counters.completed_sync.fetch_add(1, Ordering::Relaxed),
            Completion::Inline => counters.completed_inline.fetch_add(1, Ordering::Relaxed),
            _ => counters.completed_async.fetch_add(1, Ordering::Relaxed),
        };
        let Some((callback, data)) = callback else {
            return;
        };
        let _raised = (irql > kernel::current_irql()).then(|| kernel::raise_irql(irql));
        if kernel::current_irql() == Irql::PASSIVE {
            counters.callbacks_passive.fetch_add(1, Ordering::Relaxed);
        } else {
            counters.callbacks_dispatch.fetch_add(1, Ordering::Relaxed);
        }
        let outer = IN_CALLBACK.with(|c| c.replace(key));
        // SAFETY: the callback and its data were registered for this context by
        // the driver, which promised they stay valid while a call may complete.
        unsafe { callback(key as *mut SspiAsyncContext, data as *mut c_void) };
        IN_CALLBACK.with(|c| c.set(outer));
        if kernel::current_irql() != irql.max(Irql::PASSIVE) {
            bugcheck(
                Bugcheck::IrqlNotLessOrEqual,
                format_args!("an SSPI completion callback returned at a different IRQL than it was called at"),
            );
        }
    }
}
