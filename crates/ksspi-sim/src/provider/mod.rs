//! The model provider: [`ksspi::SspiProvider`] over model Schannel, with every
//! completion mode of the async contract and the kernel's rules enforced.
//!
//! Async contexts, credentials and security contexts are entries in tables
//! keyed by fake addresses and ids (never real pointers), so a use after free
//! or a double free is found, named and stopped rather than undefined.
//!
//! The files, one concern each:
//! - `config.rs`: the knobs ([`SimConfig`], [`Completion`],
//!   [`CompletionPolicy`], [`CallbackIrql`]);
//! - `stats.rs`: the counters ([`SimStats`]);
//! - `tables.rs`: the handle tables, fake addresses and the lookups that stop
//!   on a use after free;
//! - `completion.rs`: issuing a call, the seeded completion mode and IRQL,
//!   completing it and calling back ([`SimProvider::hold_completions`]);
//! - `async_context.rs`: the async context functions;
//! - `credentials.rs`: acquiring and freeing credential handles;
//! - `handshake.rs`: the handshake calls and deleting a security context;
//! - `records.rs`: EncryptMessage, DecryptMessage, ApplyControlToken;
//! - `attributes.rs`: QueryContextAttributes;
//! - `buffers.rs`: SecBuffer marshalling and FreeContextBuffer.
//!
//! This file holds the provider ([`SimProvider`], [`Sim`]) and its
//! [`SspiProvider`] implementation, which hands each function to the file
//! of its concern.

mod async_context;
mod attributes;
mod buffers;
mod completion;
mod config;
mod credentials;
mod handshake;
mod records;
mod stats;
mod tables;

pub use completion::CompletionHold;
pub use config::{CallbackIrql, Completion, CompletionPolicy, SimConfig};
pub use stats::SimStats;

use crate::certs::CertStore;
use crate::edge::{self, CallPtr};
use crate::kernel::{self, WorkQueue};
use crate::verifier::Verifier;
use ksspi::provider::{AsyncContextPtr, SspiProvider};
use ksspi::sys::*;
use ksspi::{Irql, SecStatus};
use stats::Counters;
use std::ffi::c_void;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use tables::{Table, Tables};

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

impl SimProvider {
    /// A model with this policy, over `store`.
    pub fn new(config: SimConfig, store: Arc<CertStore>) -> Self {
        let cpus = WorkQueue::new(config.cpus);
        SimProvider(Arc::new(Sim {
            config,
            store,
            verifier: Verifier::new(),
            tables: Mutex::new(Tables {
                contexts: Table::default(),
                credentials: Table::default(),
                security: Table::default(),
                buffers: Table::default(),
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
}

impl SspiProvider for SimProvider {
    fn current_irql(&self) -> Irql {
        kernel::current_irql()
    }

    fn create_async_context(&self) -> Option<AsyncContextPtr> {
        self.create_ctx()
    }

    unsafe fn free_async_context(&self, ctx: AsyncContextPtr) {
        self.free_ctx(ctx)
    }

    unsafe fn reinit_async_context(&self, ctx: AsyncContextPtr) -> SecStatus {
        self.reinit_ctx(ctx)
    }

    unsafe fn set_async_notify_callback(
        &self,
        ctx: AsyncContextPtr,
        callback: SspiAsyncNotifyCallback,
        data: *mut c_void,
    ) -> SecStatus {
        self.set_callback(ctx, callback, data)
    }

    fn has_requires_notify(&self) -> bool {
        self.0.config.requires_notify_exported
    }

    unsafe fn async_context_requires_notify(&self, ctx: AsyncContextPtr) -> Option<bool> {
        self.requires_notify(ctx)
    }

    unsafe fn get_async_call_status(&self, ctx: AsyncContextPtr) -> SecStatus {
        self.call_status(ctx)
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
            move |sim| credentials::acquire(sim, package, auth, credential_use, out, expiry),
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
            credentials::free(sim, handle)
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
            handshake::delete(sim, handle)
        })
    }

    unsafe fn encrypt_message(
        &self,
        context: *mut SecHandle,
        _qop: u32,
        message: *mut SecBufferDesc,
        _sequence: u32,
    ) -> SecStatus {
        // SAFETY: the caller's pointers, valid for the call (this function's
        // contract), passed on unchanged.
        unsafe { self.encrypt(context, message) }
    }

    unsafe fn decrypt_message(
        &self,
        context: *mut SecHandle,
        message: *mut SecBufferDesc,
        _sequence: u32,
        qop: *mut u32,
    ) -> SecStatus {
        // SAFETY: as in encrypt_message.
        unsafe { self.decrypt(context, message, qop) }
    }

    unsafe fn query_context_attributes(
        &self,
        context: *mut SecHandle,
        attribute: u32,
        buffer: *mut c_void,
    ) -> SecStatus {
        // SAFETY: as in encrypt_message; `buffer` is of the type `attribute`
        // names.
        unsafe { self.query_attribute(context, attribute, buffer) }
    }

    unsafe fn apply_control_token(
        &self,
        context: *mut SecHandle,
        input: *mut SecBufferDesc,
    ) -> SecStatus {
        // SAFETY: as in encrypt_message.
        unsafe { self.apply_control(context, input) }
    }

    unsafe fn free_context_buffer(&self, buffer: *mut c_void) -> SecStatus {
        self.free_buffer(buffer)
    }
}
