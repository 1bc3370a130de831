//! The model provider: [`ksspi::SspiProvider`] over model Schannel, with every
//! completion mode of the async contract and the kernel's rules enforced.
//!
//! Async contexts, credentials and security contexts are entries in tables
//! keyed by fake addresses and ids (never real pointers), so a use after free
//! or a double free is found, named and stopped rather than undefined.

use crate::certs::CertStore;
use crate::edge::{self, CallPtr};
use crate::kernel::{self, bugcheck, Bugcheck, WorkQueue};
use crate::schannel::{Context, Credential, CredentialSpec, Protocols, Step};
use crate::verifier::{FaultKind, Tag, Verifier};
use ksspi::provider::{AsyncContextPtr, SspiProvider};
use ksspi::sys::*;
use ksspi::{Irql, SecStatus};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// How an async call completes (DESIGN.md, contract item 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Completion {
    /// (a) later, the callback on another thread ("CPU"), after the issuing
    /// function returned or racing it.
    Async,
    /// (a) on another thread, and the callback has *finished* before the issuing
    /// function returns (each such call gets a thread of its own).
    AsyncBeforeReturn,
    /// (b) synchronously, the callback inline on the issuer's stack.
    Inline,
    /// (c) synchronously with no callback at all.
    Sync,
}

impl Completion {
    /// Every mode.
    pub const ALL: [Completion; 4] = [
        Completion::Async,
        Completion::AsyncBeforeReturn,
        Completion::Inline,
        Completion::Sync,
    ];
}

/// Which modes the model picks from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompletionPolicy {
    /// Always this mode.
    Always(Completion),
    /// A seeded random mix of every mode.
    Mixed,
}

impl CompletionPolicy {
    /// Each mode alone, then the mix.
    pub const ALL: [CompletionPolicy; 5] = [
        CompletionPolicy::Always(Completion::Async),
        CompletionPolicy::Always(Completion::AsyncBeforeReturn),
        CompletionPolicy::Always(Completion::Inline),
        CompletionPolicy::Always(Completion::Sync),
        CompletionPolicy::Mixed,
    ];
}

/// The IRQL callbacks run at (contract item 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallbackIrql {
    /// PASSIVE_LEVEL.
    Passive,
    /// DISPATCH_LEVEL.
    Dispatch,
    /// A seeded random mix.
    Mixed,
}

/// The model's policy; every choice it makes follows from `seed` (per call:
/// the seed, the async context's creation number and the call's number on
/// it, so the choices do not depend on thread timing).
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed for every random choice.
    pub seed: u64,
    /// How calls complete.
    pub completion: CompletionPolicy,
    /// At which IRQL callbacks run.
    pub callback_irql: CallbackIrql,
    /// Open point: may `SspiReinitAsyncContext` run inside the callback? When
    /// false, the model refuses it there (`SEC_E_INVALID_HANDLE`).
    pub reinit_in_callback: bool,
    /// Open point: does ksecdd export `SspiAsyncContextRequiresNotify`?
    /// Neither independent list of its exports has it. When false, the
    /// function answers `None` (the driver could not find it) and no call
    /// completes without its callback: where the policy picks
    /// [`Completion::Sync`], the call still completes synchronously but calls
    /// back inline before the issuing function returns `SEC_E_OK`.
    pub requires_notify_exported: bool,
    /// Completion threads (the other CPUs).
    pub cpus: usize,
    /// TLS 1.3 NewSessionTickets a server context sends after the handshake
    /// (each reaches the client's DecryptMessage as SEC_I_RENEGOTIATE).
    pub tls13_tickets: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 0x006b_7373_7069,
            completion: CompletionPolicy::Always(Completion::Async),
            callback_irql: CallbackIrql::Passive,
            reinit_in_callback: true,
            requires_notify_exported: true,
            cpus: 2,
            tls13_tickets: 0,
        }
    }
}

/// Counters the self-test reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Async contexts created.
    pub async_contexts_created: u64,
    /// Successful `SspiReinitAsyncContext` calls.
    pub reinits: u64,
    /// Async calls queued.
    pub calls: u64,
    /// Calls completed later on another thread.
    pub completed_async: u64,
    /// Calls completed synchronously with the callback inline.
    pub completed_inline: u64,
    /// Calls completed synchronously without a callback.
    pub completed_sync: u64,
    /// Callbacks run at PASSIVE_LEVEL.
    pub callbacks_passive: u64,
    /// Callbacks run at DISPATCH_LEVEL.
    pub callbacks_dispatch: u64,
}

#[derive(Default)]
struct Counters {
    created: AtomicU64,
    reinits: AtomicU64,
    calls: AtomicU64,
    completed_async: AtomicU64,
    completed_inline: AtomicU64,
    completed_sync: AtomicU64,
    callbacks_passive: AtomicU64,
    callbacks_dispatch: AtomicU64,
}

#[derive(Debug)]
struct AsyncCtx {
    id: u64,
    callback: SspiAsyncNotifyCallback,
    data: usize,
    status: SecStatus,
    in_flight: bool,
    used: bool,
    requires_notify: bool,
    /// Calls issued on this context so far.
    calls: u64,
}

type CtxEntry = Arc<Mutex<Context>>;

struct Tables {
    contexts: HashMap<usize, AsyncCtx>,
    credentials: HashMap<usize, (u64, Arc<Credential>)>,
    security: HashMap<usize, (u64, CtxEntry)>,
    buffers: HashMap<usize, (u64, Box<[u8]>)>,
}

thread_local! {
    /// The async context whose callback this thread is running, if any.
    static IN_CALLBACK: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
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

/// The shared state behind a [`SimProvider`].
pub struct Sim {
    config: SimConfig,
    store: Arc<CertStore>,
    verifier: Verifier,
    tables: Mutex<Tables>,
    next_addr: AtomicU64,
    counters: Counters,
    cpus: WorkQueue,
    work: WorkQueue,
}

/// The model provider: cheap to clone, shared state behind an `Arc`.
#[derive(Clone)]
pub struct SimProvider(Arc<Sim>);

const CTX_BASE: u64 = 0xFFFF_A000_0000_0000;
const HANDLE_MAGIC_CRED: usize = 0x5353_5043; // "SSPC"
const HANDLE_MAGIC_CTXT: usize = 0x5353_5058; // "SSPX"

impl SimProvider {
    /// A model with this policy, over `store`.
    pub fn new(config: SimConfig, store: Arc<CertStore>) -> Self {
        let cpus = WorkQueue::new(config.cpus);
        SimProvider(Arc::new(Sim {
            config,
            store,
            verifier: Verifier::new(),
            tables: Mutex::new(Tables {
                contexts: HashMap::new(),
                credentials: HashMap::new(),
                security: HashMap::new(),
                buffers: HashMap::new(),
            }),
            next_addr: AtomicU64::new(1),
            counters: Counters::default(),
            cpus,
            work: WorkQueue::new(1),
        }))
    }

    /// The policy (and its seed).
    pub fn config(&self) -> &SimConfig {
        &self.0.config
    }

    /// The certificate store.
    pub fn store(&self) -> &Arc<CertStore> {
        &self.0.store
    }

    /// The verifier (leaks, fault injection).
    pub fn verifier(&self) -> &Verifier {
        &self.0.verifier
    }

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

    /// The work-item queue (runs at PASSIVE on a system-thread stand-in).
    pub fn work_queue(&self) -> &WorkQueue {
        &self.0.work
    }

    /// Wait until no call is completing and no work item is queued or running.
    pub fn wait_idle(&self) {
        loop {
            self.0.cpus.wait_idle();
            self.0.work.wait_idle();
            let (c, w) = (self.0.cpus.queued_total(), self.0.work.queued_total());
            self.0.cpus.wait_idle();
            self.0.work.wait_idle();
            if (c, w) == (self.0.cpus.queued_total(), self.0.work.queued_total()) {
                return;
            }
        }
    }

    /// "Unload": wait for everything in flight, stop the threads, and fail
    /// with the verifier's list if anything is still alive.
    pub fn unload(&self) -> Result<(), crate::verifier::LeakReport> {
        self.wait_idle();
        self.0.cpus.shutdown();
        self.0.work.shutdown();
        self.0.verifier.check_unload()
    }

    /// The counters so far.
    pub fn stats(&self) -> SimStats {
        let c = &self.0.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SimStats {
            async_contexts_created: l(&c.created),
            reinits: l(&c.reinits),
            calls: l(&c.calls),
            completed_async: l(&c.completed_async),
            completed_inline: l(&c.completed_inline),
            completed_sync: l(&c.completed_sync),
            callbacks_passive: l(&c.callbacks_passive),
            callbacks_dispatch: l(&c.callbacks_dispatch),
        }
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.0.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn next_key(&self) -> usize {
        self.0.next_addr.fetch_add(1, Ordering::Relaxed) as usize
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

    /// Look up a live async context, or stop: a freed or foreign context.
    #[track_caller]
    fn with_ctx<R>(
        &self,
        ctx: AsyncContextPtr,
        function: &str,
        f: impl FnOnce(&mut AsyncCtx) -> R,
    ) -> R {
        let key = ctx.as_ptr() as usize;
        let mut t = self.tables();
        match t.contexts.get_mut(&key) {
            Some(c) => f(c),
            None => {
                drop(t);
                bugcheck(
                    Bugcheck::DriverVerifierDetectedViolation,
                    format_args!("{function} on async context {key:#x}, which was freed or never created (use after free)"),
                )
            }
        }
    }

    /// Queue one async call: the common part of every `Sspi*Async` function.
    fn issue(
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

    fn new_handle(&self, tag: Tag, what: &str) -> (usize, u64) {
        (self.next_key(), self.0.verifier.track(tag, what))
    }

    fn credential(&self, h: *mut SecHandle) -> Result<Arc<Credential>, SecStatus> {
        // SAFETY: the caller passed a handle pointer that is valid until completion.
        let h = unsafe { h.as_ref() }.ok_or(SecStatus::SEC_E_INVALID_HANDLE)?;
        if h.dwUpper != HANDLE_MAGIC_CRED {
            return Err(SecStatus::SEC_E_INVALID_HANDLE);
        }
        self.tables()
            .credentials
            .get(&h.dwLower)
            .map(|(_, c)| c.clone())
            .ok_or(SecStatus::SEC_E_INVALID_HANDLE)
    }

    fn security_context(&self, h: *mut SecHandle) -> Result<Option<CtxEntry>, SecStatus> {
        // SAFETY: the caller passed a handle pointer (or null) valid until completion.
        let Some(h) = (unsafe { h.as_ref() }) else {
            return Ok(None);
        };
        if h.dwUpper != HANDLE_MAGIC_CTXT {
            return Err(SecStatus::SEC_E_INVALID_HANDLE);
        }
        self.tables()
            .security
            .get(&h.dwLower)
            .map(|(_, c)| Some(c.clone()))
            .ok_or(SecStatus::SEC_E_INVALID_HANDLE)
    }

    /// The security context behind a handle a record-layer or attribute call
    /// got: `SEC_E_INVALID_HANDLE` for NULL or anything not live.
    fn live_context(&self, h: *mut SecHandle) -> Result<CtxEntry, SecStatus> {
        match self.security_context(h) {
            Ok(Some(e)) => Ok(e),
            Ok(None) | Err(_) => Err(SecStatus::SEC_E_INVALID_HANDLE),
        }
    }

    /// One handshake step (accept or initialize), run when the call completes.
    #[allow(clippy::too_many_arguments)]
    fn handshake(
        &self,
        server: bool,
        credential: CallPtr<SecHandle>,
        context: CallPtr<SecHandle>,
        target: Option<String>,
        req: u32,
        input: CallPtr<SecBufferDesc>,
        new_context: CallPtr<SecHandle>,
        output: CallPtr<SecBufferDesc>,
        attrs: CallPtr<u32>,
    ) -> SecStatus {
        let cred = match self.credential(credential.0) {
            Ok(c) => c,
            Err(s) => return s,
        };
        let existing = match self.security_context(context.0) {
            Ok(e) => e,
            Err(s) => return s,
        };
        // SAFETY: the descriptors are valid until completion (the call's contract).
        let inputs = match unsafe { edge::buffers(input.0) } {
            Ok(b) => b,
            Err(s) => return s,
        };
        // SAFETY: as above.
        let outputs = match unsafe { edge::buffers(output.0) } {
            Ok(b) => b,
            Err(s) => return s,
        };
        let token_in = match inputs.iter().find(|b| b.kind() == SECBUFFER_TOKEN) {
            // SAFETY: the input token's bytes are valid until completion.
            Some(b) => match unsafe { edge::bytes(b) } {
                Ok(bytes) => bytes.to_vec(),
                Err(s) => return s,
            },
            None => Vec::new(),
        };
        let (entry, fresh) = match existing {
            Some(e) => (e, false),
            None => {
                let made = if server {
                    Context::server(&cred)
                } else {
                    Context::client(&cred, target.as_deref())
                };
                match made {
                    Ok(c) => (Arc::new(Mutex::new(c)), true),
                    Err(s) => return s,
                }
            }
        };
        let step: Step = entry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .step(&token_in);
        let allocate = if server {
            req & ASC_REQ_ALLOCATE_MEMORY != 0
        } else {
            req & ISC_REQ_ALLOCATE_MEMORY != 0
        };
        let extended = if server {
            req & ASC_REQ_EXTENDED_ERROR != 0
        } else {
            req & ISC_REQ_EXTENDED_ERROR != 0
        };
        let mut status = step.status;
        // Output token (or the alert, on failure with extended errors).
        let out_bytes: &[u8] = if status.is_error() && extended {
            &step.alert
        } else {
            &step.token
        };
        if let Some(buf) = outputs.iter_mut().find(|b| b.kind() == SECBUFFER_TOKEN) {
            if allocate {
                if out_bytes.is_empty() {
                    buf.pvBuffer = std::ptr::null_mut();
                    buf.cbBuffer = 0;
                } else if self.0.verifier.fault_point(FaultKind::Allocation) {
                    status = SecStatus::SEC_E_INSUFFICIENT_MEMORY;
                    buf.pvBuffer = std::ptr::null_mut();
                    buf.cbBuffer = 0;
                } else {
                    let mut mem: Box<[u8]> = out_bytes.into();
                    let id = self.0.verifier.track(Tag::ContextBuffer, "output token");
                    buf.pvBuffer = mem.as_mut_ptr().cast();
                    buf.cbBuffer = mem.len() as u32;
                    self.tables()
                        .buffers
                        .insert(mem.as_ptr() as usize, (id, mem));
                }
            // SAFETY: a caller-supplied token buffer, valid until completion.
            } else if !unsafe { edge::write_into(buf, out_bytes) } {
                buf.cbBuffer = 0;
                status = SecStatus::SEC_E_BUFFER_TOO_SMALL;
            }
        } else if !out_bytes.is_empty() && !status.is_error() {
            status = SecStatus::SEC_E_INVALID_PARAMETER;
        }
        if let Some(buf) = outputs.iter_mut().find(|b| b.kind() == SECBUFFER_ALERT) {
            // SAFETY: a caller-supplied alert buffer, valid until completion.
            if !step.alert.is_empty() && !unsafe { edge::write_into(buf, &step.alert) } {
                buf.cbBuffer = 0;
            }
        }
        // EXTRA or MISSING go into the first empty input slot after the token.
        if let Some(slot) = inputs
            .iter_mut()
            .skip(1)
            .find(|b| b.kind() == SECBUFFER_EMPTY)
        {
            if status == SecStatus::SEC_E_INCOMPLETE_MESSAGE {
                slot.BufferType = SECBUFFER_MISSING;
                slot.cbBuffer = step.missing as u32;
            } else if step.extra > 0 {
                slot.BufferType = SECBUFFER_EXTRA;
                slot.cbBuffer = step.extra as u32;
            }
        }
        // SAFETY: the attribute word is valid until completion, or null.
        if let Some(a) = unsafe { attrs.0.as_mut() } {
            let (base, alloc_ret, ext_ret) = if server {
                (
                    ASC_RET_CONFIDENTIALITY | ASC_RET_STREAM,
                    ASC_RET_ALLOCATED_MEMORY,
                    ASC_RET_EXTENDED_ERROR,
                )
            } else {
                (
                    ISC_RET_CONFIDENTIALITY | ISC_RET_STREAM,
                    ISC_RET_ALLOCATED_MEMORY,
                    ISC_RET_EXTENDED_ERROR,
                )
            };
            *a = base | if allocate { alloc_ret } else { 0 } | if extended { ext_ret } else { 0 };
        }
        // A first call creates the security context, unless it only asked for
        // more input (the next call passes NULL again, as Schannel expects) or
        // failed outright.
        if fresh && !status.is_error() {
            let (key, id) = self.new_handle(
                Tag::SecurityContext,
                if server {
                    "server security context"
                } else {
                    "client security context"
                },
            );
            self.tables().security.insert(key, (id, entry));
            // SAFETY: the new-context slot is valid until completion.
            if let Some(h) = unsafe { new_context.0.as_mut() } {
                *h = SecHandle {
                    dwLower: key,
                    dwUpper: HANDLE_MAGIC_CTXT,
                };
            } else {
                // Nowhere to return it: undo, and fail the call.
                if let Some((id, _)) = self.tables().security.remove(&key) {
                    self.0.verifier.untrack(Tag::SecurityContext, id);
                }
                return SecStatus::SEC_E_INVALID_PARAMETER;
            }
        } else if !fresh {
            // SAFETY: as above; later calls hand back the same handle.
            if let (Some(h), Some(old)) = unsafe { (new_context.0.as_mut(), context.0.as_ref()) } {
                *h = *old;
            }
        }
        status
    }
}

impl SspiProvider for SimProvider {
    fn current_irql(&self) -> Irql {
        kernel::current_irql()
    }

    fn create_async_context(&self) -> Option<AsyncContextPtr> {
        kernel::require_at_most_dispatch("SspiCreateAsyncContext");
        if self.0.verifier.fault_point(FaultKind::Allocation) {
            return None;
        }
        let key = (CTX_BASE + (self.next_key() as u64) * 16) as usize;
        let id = self
            .0
            .verifier
            .track(Tag::AsyncContext, "SspiCreateAsyncContext");
        self.tables().contexts.insert(
            key,
            AsyncCtx {
                id,
                callback: None,
                data: 0,
                status: SecStatus::SEC_E_OK,
                in_flight: false,
                used: false,
                requires_notify: false,
                calls: 0,
            },
        );
        self.0.counters.created.fetch_add(1, Ordering::Relaxed);
        NonNull::new(key as *mut SspiAsyncContext)
    }

    unsafe fn free_async_context(&self, ctx: AsyncContextPtr) {
        kernel::require_at_most_dispatch("SspiFreeAsyncContext");
        let key = ctx.as_ptr() as usize;
        let removed = {
            let mut t = self.tables();
            match t.contexts.get(&key) {
                Some(c) if c.in_flight => Err(true),
                Some(_) => Ok(t.contexts.remove(&key).expect("present").id),
                None => Err(false),
            }
        };
        match removed {
            Ok(id) => self.0.verifier.untrack(Tag::AsyncContext, id),
            Err(true) => bugcheck(
                Bugcheck::DriverVerifierDetectedViolation,
                format_args!("SspiFreeAsyncContext on {key:#x} while a call is in flight"),
            ),
            Err(false) => bugcheck(
                Bugcheck::DriverVerifierDetectedViolation,
                format_args!("SspiFreeAsyncContext on {key:#x}, already freed or never created (double free)"),
            ),
        }
    }

    unsafe fn reinit_async_context(&self, ctx: AsyncContextPtr) -> SecStatus {
        kernel::require_at_most_dispatch("SspiReinitAsyncContext");
        let key = ctx.as_ptr() as usize;
        let in_callback = IN_CALLBACK.with(|c| c.get()) == key;
        let allowed_here = self.0.config.reinit_in_callback || !in_callback;
        let status = self.with_ctx(ctx, "SspiReinitAsyncContext", |c| {
            if c.in_flight {
                // Windows fails the call; the model stops the test, because a
                // driver that does this has lost track of its own call.
                bugcheck(
                    Bugcheck::DriverVerifierDetectedViolation,
                    format_args!("SspiReinitAsyncContext on {key:#x} while a call is in flight"),
                );
            }
            if !allowed_here {
                SecStatus::SEC_E_INVALID_HANDLE
            } else {
                c.used = false;
                c.status = SecStatus::SEC_E_OK;
                c.requires_notify = false;
                SecStatus::SEC_E_OK
            }
        });
        if status.is_success() {
            self.0.counters.reinits.fetch_add(1, Ordering::Relaxed);
        }
        status
    }

    unsafe fn set_async_notify_callback(
        &self,
        ctx: AsyncContextPtr,
        callback: SspiAsyncNotifyCallback,
        data: *mut c_void,
    ) -> SecStatus {
        kernel::require_at_most_dispatch("SspiSetAsyncNotifyCallback");
        self.with_ctx(ctx, "SspiSetAsyncNotifyCallback", |c| {
            if c.in_flight {
                return SecStatus::SEC_E_INVALID_HANDLE;
            }
            c.callback = callback;
            c.data = data as usize;
            SecStatus::SEC_E_OK
        })
    }

    fn has_requires_notify(&self) -> bool {
        self.0.config.requires_notify_exported
    }

    unsafe fn async_context_requires_notify(&self, ctx: AsyncContextPtr) -> Option<bool> {
        if !self.0.config.requires_notify_exported {
            return None;
        }
        Some(self.with_ctx(ctx, "SspiAsyncContextRequiresNotify", |c| {
            c.requires_notify || c.in_flight
        }))
    }

    unsafe fn get_async_call_status(&self, ctx: AsyncContextPtr) -> SecStatus {
        self.with_ctx(ctx, "SspiGetAsyncCallStatus", |c| c.status)
    }

    unsafe fn acquire_credentials_handle_async(
        &self,
        ctx: AsyncContextPtr,
        _principal: *mut UNICODE_STRING,
        package: *mut UNICODE_STRING,
        credential_use: u32,
        auth_data: *mut c_void,
        credential: *mut SecHandle,
        expiry: *mut TimeStamp,
    ) -> SecStatus {
        let (package, auth, out, expiry) = (
            CallPtr(package),
            CallPtr(auth_data.cast::<SCH_CREDENTIALS>()),
            CallPtr(credential),
            CallPtr(expiry),
        );
        self.issue(
            ctx,
            "SspiAcquireCredentialsHandleAsyncW",
            false,
            move |sim| {
                // SAFETY: valid until completion per the call's contract.
                match unsafe { edge::unicode(package.get()) } {
                    Ok(Some(p)) if p == UNISP_NAME || p.eq_ignore_ascii_case("schannel") => {}
                    Ok(_) => return SecStatus::SEC_E_SECPKG_NOT_FOUND,
                    Err(s) => return s,
                }
                // SAFETY: as above.
                let sch = match unsafe { edge::sch_credentials(auth.get()) } {
                    Ok(s) => s,
                    Err(s) => return s,
                };
                if out.is_null() {
                    return SecStatus::SEC_E_INVALID_PARAMETER;
                }
                let server = match credential_use & (SECPKG_CRED_INBOUND | SECPKG_CRED_OUTBOUND) {
                    SECPKG_CRED_INBOUND => true,
                    SECPKG_CRED_OUTBOUND => false,
                    _ => return SecStatus::SEC_E_INVALID_PARAMETER,
                };
                let protocols = Protocols::from_disabled(sch.disabled_protocols, server);
                let spec = if server {
                    let Some((hash, store)) = sch.cert else {
                        return SecStatus::SEC_E_NO_CREDENTIALS;
                    };
                    let Some(identity) = sim.0.store.find_identity(&store, &hash) else {
                        return SecStatus::SEC_E_NO_CREDENTIALS;
                    };
                    CredentialSpec::Server {
                        identity,
                        protocols,
                        tls13_tickets: sim.0.config.tls13_tickets,
                        require_client_cert: false,
                    }
                } else {
                    CredentialSpec::Client {
                        protocols,
                        manual_validation: sch.flags & SCH_CRED_MANUAL_CRED_VALIDATION != 0,
                        client_identity: None,
                    }
                };
                if sim.0.verifier.fault_point(FaultKind::Allocation) {
                    return SecStatus::SEC_E_INSUFFICIENT_MEMORY;
                }
                let cred = match Credential::new(spec, &sim.0.store) {
                    Ok(c) => Arc::new(c),
                    Err(s) => return s,
                };
                let (key, id) = sim.new_handle(
                    Tag::Credential,
                    if server {
                        "server credential"
                    } else {
                        "client credential"
                    },
                );
                sim.tables().credentials.insert(key, (id, cred));
                // SAFETY: valid until completion per the call's contract.
                unsafe {
                    *out.get() = SecHandle {
                        dwLower: key,
                        dwUpper: HANDLE_MAGIC_CRED,
                    };
                    if let Some(e) = expiry.get().as_mut() {
                        e.QuadPart = i64::MAX;
                    }
                }
                SecStatus::SEC_E_OK
            },
        )
    }

    unsafe fn free_credentials_handle_async(
        &self,
        ctx: AsyncContextPtr,
        credential: *mut SecHandle,
    ) -> SecStatus {
        // SAFETY: the handle is read at issue; the caller keeps it valid anyway.
        let handle = unsafe { credential.as_ref() }.copied();
        self.issue(ctx, "SspiFreeCredentialsHandleAsync", false, move |sim| {
            let Some(h) = handle.filter(|h| h.dwUpper == HANDLE_MAGIC_CRED) else {
                return SecStatus::SEC_E_INVALID_HANDLE;
            };
            let removed = sim.tables().credentials.remove(&h.dwLower);
            match removed {
                Some((id, _)) => {
                    sim.0.verifier.untrack(Tag::Credential, id);
                    SecStatus::SEC_E_OK
                }
                None => bugcheck(
                    Bugcheck::DriverVerifierDetectedViolation,
                    format_args!("SspiFreeCredentialsHandleAsync on credential {:#x}, already freed (double free)", h.dwLower),
                ),
            }
        })
    }

    unsafe fn initialize_security_context_async(
        &self,
        ctx: AsyncContextPtr,
        credential: *mut SecHandle,
        context: *mut SecHandle,
        target_name: *mut UNICODE_STRING,
        context_req: u32,
        input: *mut SecBufferDesc,
        new_context: *mut SecHandle,
        output: *mut SecBufferDesc,
        context_attr: *mut u32,
        _expiry: *mut TimeStamp,
    ) -> SecStatus {
        let (cred, cx, target, inp, newc, out, attrs) = (
            CallPtr(credential),
            CallPtr(context),
            CallPtr(target_name),
            CallPtr(input),
            CallPtr(new_context),
            CallPtr(output),
            CallPtr(context_attr),
        );
        self.issue(
            ctx,
            "SspiInitializeSecurityContextAsyncW",
            false,
            move |sim| {
                // SAFETY: valid until completion per the call's contract.
                let target = match unsafe { edge::unicode(target.get()) } {
                    Ok(t) => t,
                    Err(s) => return s,
                };
                sim.handshake(false, cred, cx, target, context_req, inp, newc, out, attrs)
            },
        )
    }

    unsafe fn accept_security_context_async(
        &self,
        ctx: AsyncContextPtr,
        credential: *mut SecHandle,
        context: *mut SecHandle,
        input: *mut SecBufferDesc,
        context_req: u32,
        new_context: *mut SecHandle,
        output: *mut SecBufferDesc,
        context_attr: *mut u32,
        _expiry: *mut TimeStamp,
    ) -> SecStatus {
        let (cred, cx, inp, newc, out, attrs) = (
            CallPtr(credential),
            CallPtr(context),
            CallPtr(input),
            CallPtr(new_context),
            CallPtr(output),
            CallPtr(context_attr),
        );
        self.issue(ctx, "SspiAcceptSecurityContextAsync", false, move |sim| {
            sim.handshake(true, cred, cx, None, context_req, inp, newc, out, attrs)
        })
    }

    unsafe fn delete_security_context_async(
        &self,
        ctx: AsyncContextPtr,
        context: *mut SecHandle,
    ) -> SecStatus {
        // SAFETY: the handle is read at issue; the caller keeps it valid anyway.
        let handle = unsafe { context.as_ref() }.copied();
        self.issue(ctx, "SspiDeleteSecurityContextAsync", true, move |sim| {
            let Some(h) = handle.filter(|h| h.dwUpper == HANDLE_MAGIC_CTXT) else {
                return SecStatus::SEC_E_INVALID_HANDLE;
            };
            let removed = sim.tables().security.remove(&h.dwLower);
            match removed {
                Some((id, _)) => {
                    sim.0.verifier.untrack(Tag::SecurityContext, id);
                    SecStatus::SEC_E_OK
                }
                None => bugcheck(
                    Bugcheck::DriverVerifierDetectedViolation,
                    format_args!("SspiDeleteSecurityContextAsync on context {:#x}, already deleted (double free)", h.dwLower),
                ),
            }
        })
    }

    unsafe fn encrypt_message(
        &self,
        context: *mut SecHandle,
        _qop: u32,
        message: *mut SecBufferDesc,
        _sequence: u32,
    ) -> SecStatus {
        kernel::require_passive("EncryptMessage");
        if self.0.verifier.fault_point(FaultKind::Call) {
            // Low resources: the call fails before it touches the context.
            return SecStatus::SEC_E_INSUFFICIENT_MEMORY;
        }
        let entry = match self.live_context(context) {
            Ok(e) => e,
            Err(status) => return status,
        };
        // SAFETY: the caller passes a descriptor valid for the call.
        let Some(buffers) = (unsafe { record_buffers(message) }) else {
            return SecStatus::SEC_E_INVALID_TOKEN;
        };
        let find = |kind: u32| buffers.iter().position(|b| b.kind() == kind);
        let (Some(h), Some(d), Some(t)) = (
            find(SECBUFFER_STREAM_HEADER),
            find(SECBUFFER_DATA),
            find(SECBUFFER_STREAM_TRAILER),
        ) else {
            return SecStatus::SEC_E_INVALID_TOKEN;
        };
        let mut ctx = entry.lock().unwrap_or_else(|e| e.into_inner());
        let Some(sizes) = ctx.stream_sizes() else {
            return SecStatus::SEC_E_INVALID_HANDLE;
        };
        let n = buffers[d].cbBuffer as usize;
        if (buffers[h].cbBuffer as usize) < sizes.header
            || (buffers[t].cbBuffer as usize) < sizes.trailer
            || n > sizes.max_message
            || (n > 0 && buffers[d].pvBuffer.is_null())
        {
            return SecStatus::SEC_E_BUFFER_TOO_SMALL;
        }
        // SAFETY: the caller's DATA buffer holds `n` bytes, which nothing
        // writes while the context seals them (into its own scratch buffer).
        let data = unsafe { bytes(&buffers[d]) };
        // The record lies in the context's scratch buffer: no allocation, and
        // one copy out to the caller's buffers.
        let record = match ctx.encrypt(data) {
            Ok(r) => r,
            Err(status) => return status,
        };
        // A whole record of the stream sizes, or none for no data.
        let (head, body, tail) = match record.len() {
            0 => (&[][..], &[][..], &[][..]),
            len => {
                debug_assert_eq!(len, sizes.header + n + sizes.trailer);
                let (head, rest) = record.split_at(sizes.header);
                let (body, tail) = rest.split_at(n);
                (head, body, tail)
            }
        };
        // SAFETY: each buffer holds at least what is copied (checked above),
        // and the record is in the context's memory, not the caller's.
        unsafe {
            copy_to(&buffers[h], head);
            copy_to(&buffers[d], body);
            copy_to(&buffers[t], tail);
        }
        buffers[h].cbBuffer = head.len() as u32;
        buffers[t].cbBuffer = tail.len() as u32;
        SecStatus::SEC_E_OK
    }

    unsafe fn decrypt_message(
        &self,
        context: *mut SecHandle,
        message: *mut SecBufferDesc,
        _sequence: u32,
        qop: *mut u32,
    ) -> SecStatus {
        kernel::require_passive("DecryptMessage");
        if self.0.verifier.fault_point(FaultKind::Call) {
            // Low resources: the call fails before it touches the context.
            return SecStatus::SEC_E_INSUFFICIENT_MEMORY;
        }
        let entry = match self.live_context(context) {
            Ok(e) => e,
            Err(status) => return status,
        };
        // SAFETY: the caller passes a descriptor valid for the call.
        let Some(buffers) = (unsafe { record_buffers(message) }) else {
            return SecStatus::SEC_E_INVALID_TOKEN;
        };
        let Some(d) = buffers.iter().position(|b| b.kind() == SECBUFFER_DATA) else {
            return SecStatus::SEC_E_INVALID_TOKEN;
        };
        // The first three EMPTY buffers take the results, as Schannel's do.
        let mut empty = [0usize; 3];
        let mut found = 0;
        for (i, b) in buffers.iter().enumerate() {
            if found < empty.len() && b.kind() == SECBUFFER_EMPTY {
                empty[found] = i;
                found += 1;
            }
        }
        if found < empty.len() || (buffers[d].cbBuffer > 0 && buffers[d].pvBuffer.is_null()) {
            return SecStatus::SEC_E_INVALID_TOKEN;
        }
        let base = buffers[d].pvBuffer.cast::<u8>();
        // SAFETY: the caller's DATA buffer holds its cbBuffer bytes, which it
        // hands over for the call: DecryptMessage decrypts them in place.
        let input = unsafe { bytes_mut(&buffers[d]) };
        let len = input.len();
        let u = entry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .decrypt(input);
        if !qop.is_null() {
            // SAFETY: the caller's out-parameter.
            unsafe { qop.write(0) };
        }
        let set = |b: &mut SecBuffer, kind: u32, at: usize, len: usize| {
            b.BufferType = kind;
            // SAFETY: `at` is within the caller's DATA buffer.
            b.pvBuffer = unsafe { base.add(at) }.cast();
            b.cbBuffer = len as u32;
        };
        match u.status {
            SecStatus::SEC_E_OK => {
                // The plaintext lies in place, between the header and the
                // trailer of the record at the start of the DATA buffer.
                let (header, data, trailer) = (u.data.start, u.data.len(), u.record - u.data.end);
                set(&mut buffers[d], SECBUFFER_STREAM_HEADER, 0, header);
                set(&mut buffers[empty[0]], SECBUFFER_DATA, header, data);
                set(
                    &mut buffers[empty[1]],
                    SECBUFFER_STREAM_TRAILER,
                    u.data.end,
                    trailer,
                );
                if u.extra > 0 {
                    set(&mut buffers[empty[2]], SECBUFFER_EXTRA, u.record, u.extra);
                }
            }
            SecStatus::SEC_E_INCOMPLETE_MESSAGE => {
                buffers[empty[0]].BufferType = SECBUFFER_MISSING;
                buffers[empty[0]].cbBuffer = u.missing as u32;
            }
            SecStatus::SEC_I_RENEGOTIATE | SecStatus::SEC_I_CONTEXT_EXPIRED if u.extra > 0 => {
                let at = len - u.extra;
                set(&mut buffers[empty[0]], SECBUFFER_EXTRA, at, u.extra);
            }
            _ => {}
        }
        u.status
    }

    unsafe fn query_context_attributes(
        &self,
        context: *mut SecHandle,
        attribute: u32,
        buffer: *mut c_void,
    ) -> SecStatus {
        let entry = match self.live_context(context) {
            Ok(e) => e,
            Err(status) => return status,
        };
        let ctx = entry.lock().unwrap_or_else(|e| e.into_inner());
        match attribute {
            SECPKG_ATTR_CONNECTION_INFO if !buffer.is_null() => {
                let Some(protocol) = ctx.protocol() else {
                    return SecStatus::SEC_E_INVALID_HANDLE;
                };
                let suite = ctx.cipher_suite_name().unwrap_or("");
                let (cipher, strength) = if suite.contains("AES_256") {
                    (CALG_AES_256, 256)
                } else if suite.contains("AES_128") {
                    (CALG_AES_128, 128)
                } else {
                    (0, 256) // ChaCha20-Poly1305 has no ALG_ID
                };
                let hash = if suite.ends_with("SHA384") {
                    CALG_SHA_384
                } else {
                    CALG_SHA_256
                };
                let info = SecPkgContext_ConnectionInfo {
                    dwProtocol: protocol,
                    aiCipher: cipher,
                    dwCipherStrength: strength,
                    aiHash: hash,
                    dwHashStrength: if hash == CALG_SHA_384 { 384 } else { 256 },
                    aiExch: CALG_ECDH_EPHEM,
                    dwExchStrength: 256,
                };
                // SAFETY: the caller passed a SecPkgContext_ConnectionInfo for
                // this attribute (QueryContextAttributesW's contract).
                unsafe { buffer.cast::<SecPkgContext_ConnectionInfo>().write(info) };
                SecStatus::SEC_E_OK
            }
            SECPKG_ATTR_STREAM_SIZES if !buffer.is_null() => {
                let Some(sizes) = ctx.stream_sizes() else {
                    return SecStatus::SEC_E_INVALID_HANDLE;
                };
                let out = SecPkgContext_StreamSizes {
                    cbHeader: sizes.header as u32,
                    cbTrailer: sizes.trailer as u32,
                    cbMaximumMessage: sizes.max_message as u32,
                    cBuffers: 4,
                    cbBlockSize: 16,
                };
                // SAFETY: the caller passed a SecPkgContext_StreamSizes for
                // this attribute.
                unsafe { buffer.cast::<SecPkgContext_StreamSizes>().write(out) };
                SecStatus::SEC_E_OK
            }
            SECPKG_ATTR_REMOTE_CERTIFICATES if !buffer.is_null() => {
                // Kernel Schannel's form: a provider buffer of (u32 LE length,
                // DER) entries, leaf first, freed with FreeContextBuffer.
                if ctx.protocol().is_none() {
                    return SecStatus::SEC_E_INVALID_HANDLE;
                }
                let certs = ctx.peer_certificates();
                drop(ctx);
                if certs.is_empty() {
                    return SecStatus::SEC_E_NO_CREDENTIALS;
                }
                if self.0.verifier.fault_point(FaultKind::Allocation) {
                    return SecStatus::SEC_E_INSUFFICIENT_MEMORY;
                }
                let mut blob = Vec::new();
                for der in &certs {
                    blob.extend_from_slice(&(der.len() as u32).to_le_bytes());
                    blob.extend_from_slice(der);
                }
                let mut mem: Box<[u8]> = blob.into();
                let id = self
                    .0
                    .verifier
                    .track(Tag::ContextBuffer, "remote certificates");
                let out = SecPkgContext_Certificates {
                    cCertificates: certs.len() as u32,
                    cbCertificateChain: mem.len() as u32,
                    pbCertificateChain: mem.as_mut_ptr(),
                };
                self.tables()
                    .buffers
                    .insert(mem.as_ptr() as usize, (id, mem));
                // SAFETY: the caller passed a SecPkgContext_Certificates for
                // this attribute.
                unsafe { buffer.cast::<SecPkgContext_Certificates>().write(out) };
                SecStatus::SEC_E_OK
            }
            _ => SecStatus::SEC_E_UNSUPPORTED_FUNCTION,
        }
    }

    unsafe fn apply_control_token(
        &self,
        context: *mut SecHandle,
        input: *mut SecBufferDesc,
    ) -> SecStatus {
        kernel::require_passive("ApplyControlToken");
        if self.0.verifier.fault_point(FaultKind::Call) {
            // Low resources: the call fails before it touches the context.
            return SecStatus::SEC_E_INSUFFICIENT_MEMORY;
        }
        let entry = match self.live_context(context) {
            Ok(e) => e,
            Err(status) => return status,
        };
        // SAFETY: the caller passes a descriptor valid for the call.
        let Some(buffers) = (unsafe { record_buffers(input) }) else {
            return SecStatus::SEC_E_INVALID_TOKEN;
        };
        let token = buffers
            .iter()
            .find(|b| b.kind() == SECBUFFER_TOKEN && b.cbBuffer >= 4 && !b.pvBuffer.is_null());
        let Some(token) = token else {
            return SecStatus::SEC_E_INVALID_TOKEN;
        };
        // SAFETY: a TOKEN buffer of at least 4 bytes.
        let control = u32::from_le_bytes(unsafe { bytes(token) }[..4].try_into().unwrap());
        if control != SCHANNEL_SHUTDOWN {
            return SecStatus::SEC_E_UNSUPPORTED_FUNCTION;
        }
        let status = entry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .apply_shutdown();
        status
    }

    unsafe fn free_context_buffer(&self, buffer: *mut c_void) -> SecStatus {
        kernel::require_at_most_dispatch("FreeContextBuffer");
        let removed = self.tables().buffers.remove(&(buffer as usize));
        match removed {
            Some((id, mem)) => {
                drop(mem);
                self.0.verifier.untrack(Tag::ContextBuffer, id);
                SecStatus::SEC_E_OK
            }
            None => bugcheck(
                Bugcheck::BadPoolCaller,
                format_args!(
                    "FreeContextBuffer on {:#x}, not a live provider buffer (double free?)",
                    buffer as usize
                ),
            ),
        }
    }
}

/// The buffers of a record-layer call's descriptor.
///
/// # Safety
/// `desc` is null or a valid descriptor whose buffers outlive the call.
unsafe fn record_buffers<'a>(desc: *mut SecBufferDesc) -> Option<&'a mut [SecBuffer]> {
    // SAFETY: per the caller.
    let desc = unsafe { desc.as_ref() }?;
    if desc.ulVersion != SECBUFFER_VERSION || desc.pBuffers.is_null() || desc.cBuffers > 16 {
        return None;
    }
    // SAFETY: the descriptor's buffers, valid for the call.
    Some(unsafe { std::slice::from_raw_parts_mut(desc.pBuffers, desc.cBuffers as usize) })
}

/// A buffer's bytes.
///
/// # Safety
/// `b.pvBuffer` holds `b.cbBuffer` bytes (or the length is 0).
unsafe fn bytes(b: &SecBuffer) -> &[u8] {
    if b.cbBuffer == 0 || b.pvBuffer.is_null() {
        return &[];
    }
    // SAFETY: per the caller.
    unsafe { std::slice::from_raw_parts(b.pvBuffer.cast::<u8>(), b.cbBuffer as usize) }
}

/// A buffer's bytes, to write in place.
///
/// # Safety
/// `b.pvBuffer` holds `b.cbBuffer` writable bytes (or the length is 0) that
/// nothing else reads or writes while the result lives.
unsafe fn bytes_mut<'a>(b: &SecBuffer) -> &'a mut [u8] {
    if b.cbBuffer == 0 || b.pvBuffer.is_null() {
        return &mut [];
    }
    // SAFETY: per the caller.
    unsafe { std::slice::from_raw_parts_mut(b.pvBuffer.cast::<u8>(), b.cbBuffer as usize) }
}

/// Copy `data` to the start of a buffer.
///
/// # Safety
/// `b.pvBuffer` holds at least `data.len()` bytes.
unsafe fn copy_to(b: &SecBuffer, data: &[u8]) {
    if !data.is_empty() {
        // SAFETY: per the caller; caller and provider memory do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), b.pvBuffer.cast::<u8>(), data.len())
        };
    }
}
