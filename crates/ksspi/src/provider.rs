//! The provider boundary: one trait over the `Sspi*Async` surface of kernel
//! SSPI plus the synchronous calls the record layer needs.
//!
//! Two implementations exist: the ksecdd backend (`ksspi::ksecdd`, Windows
//! only, a thin layer over the imports in [`crate::sys::ffi`]) and the host
//! model in `ksspi-sim`. Everything above this trait (handles, the handshake
//! engine, the driver's device engine) is written once against it.
//!
//! The methods mirror the C functions one to one, with raw pointers where the
//! C functions take them: an async call writes its outputs (`phNewContext`,
//! `pOutput`, `pfContextAttr`, ...) when it *completes*, which may be long after
//! the issuing call returned, so the pointees must stay valid and unmoved until
//! then. No Rust borrow can say that; the safe handles in [`crate::handle`] and
//! the engine keep those promises, and these methods are `unsafe` to call.
//!
//! Contract every implementation honours (docs/DESIGN.md, "The async SSPI contract"):
//! an issuing method returns the status of *queueing* the call; the result
//! comes from [`SspiProvider::get_async_call_status`], which answers
//! `SEC_I_ASYNC_CALL_PENDING` while the call is in flight; completion is
//! signalled through the registered callback, which may run on another CPU
//! before the issuing method returns, inline on the issuer's stack, or not at
//! all for a call that completed synchronously
//! ([`SspiProvider::async_context_requires_notify`] answers `Some(false)`
//! then). Where the system cannot say (ksecdd does not export
//! `SspiAsyncContextRequiresNotify`, the likely case: see
//! `ksspi::ksecdd`), it answers `None`, and every accepted call is taken to
//! complete through its callback, as HTTP.sys does.

use crate::irql::Irql;
use crate::status::SecStatus;
use crate::sys::{
    SecBufferDesc, SecHandle, SspiAsyncContext, SspiAsyncNotifyCallback, TimeStamp, UNICODE_STRING,
};
use core::ffi::c_void;
use core::ptr::NonNull;

/// A pointer to a live async context, as `SspiCreateAsyncContext` returned it.
pub type AsyncContextPtr = NonNull<SspiAsyncContext>;

/// The kernel async SSPI surface (sspi.h, `ISSP_MODE == 0`).
///
/// Implementations are cheap to clone (the ksecdd backend is a unit struct; the
/// model is a reference-counted handle), so every handle carries its own copy.
pub trait SspiProvider: Clone + Send + Sync + 'static {
    /// The current thread's IRQL (`KeGetCurrentIrql`); the one kernel query the
    /// handles need to refuse PASSIVE-only work above PASSIVE.
    fn current_irql(&self) -> Irql;

    /// `SspiCreateAsyncContext`: `None` when out of memory.
    fn create_async_context(&self) -> Option<AsyncContextPtr>;

    /// `SspiFreeAsyncContext`.
    ///
    /// # Safety
    /// `ctx` is live, has no call in flight, and is not used afterwards.
    unsafe fn free_async_context(&self, ctx: AsyncContextPtr);

    /// `SspiReinitAsyncContext`: marks a completed context for reuse; fails if
    /// the context is invalid or a call is in flight. The callback survives it.
    ///
    /// # Safety
    /// `ctx` is live.
    unsafe fn reinit_async_context(&self, ctx: AsyncContextPtr) -> SecStatus;

    /// `SspiSetAsyncNotifyCallback`: fails while a call is in flight.
    ///
    /// # Safety
    /// `ctx` is live; `data` stays valid for as long as `callback` may be called.
    unsafe fn set_async_notify_callback(
        &self,
        ctx: AsyncContextPtr,
        callback: SspiAsyncNotifyCallback,
        data: *mut c_void,
    ) -> SecStatus;

    /// `SspiAsyncContextRequiresNotify`: whether completion of the call issued on
    /// `ctx` is (or was) signalled through the callback; `None` where the
    /// function does not exist, and then the callback always comes.
    ///
    /// # Safety
    /// `ctx` is live.
    unsafe fn async_context_requires_notify(&self, ctx: AsyncContextPtr) -> Option<bool>;

    /// Whether `SspiAsyncContextRequiresNotify` exists here (an observed fact
    /// the driver reports): when false, the method above answers `None`.
    fn has_requires_notify(&self) -> bool;

    /// `SspiGetAsyncCallStatus`: the call's result, or `SEC_I_ASYNC_CALL_PENDING`.
    ///
    /// # Safety
    /// `ctx` is live.
    unsafe fn get_async_call_status(&self, ctx: AsyncContextPtr) -> SecStatus;

    /// `SspiAcquireCredentialsHandleAsyncW` (no logon id, no GetKey function:
    /// Schannel uses neither).
    ///
    /// # Safety
    /// `ctx` is live and idle; `principal` may be null; `package`, `auth_data`
    /// (an `SCH_CREDENTIALS` and what it points to), `credential` and `expiry`
    /// stay valid and unmoved until the call completes.
    #[allow(clippy::too_many_arguments)]
    unsafe fn acquire_credentials_handle_async(
        &self,
        ctx: AsyncContextPtr,
        principal: *mut UNICODE_STRING,
        package: *mut UNICODE_STRING,
        credential_use: u32,
        auth_data: *mut c_void,
        credential: *mut SecHandle,
        expiry: *mut TimeStamp,
    ) -> SecStatus;

    /// `SspiFreeCredentialsHandleAsync`.
    ///
    /// # Safety
    /// `ctx` is live and idle; `credential` is a live credential no other call
    /// uses, valid until completion.
    unsafe fn free_credentials_handle_async(
        &self,
        ctx: AsyncContextPtr,
        credential: *mut SecHandle,
    ) -> SecStatus;

    /// `SspiInitializeSecurityContextAsyncW` (the client's handshake step).
    ///
    /// # Safety
    /// `ctx` is live and idle; every pointer is valid (or null where sspi.h
    /// allows) and unmoved until the call completes.
    #[allow(clippy::too_many_arguments)]
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
        expiry: *mut TimeStamp,
    ) -> SecStatus;

    /// `SspiAcceptSecurityContextAsync` (the server's handshake step).
    ///
    /// # Safety
    /// As for [`SspiProvider::initialize_security_context_async`].
    #[allow(clippy::too_many_arguments)]
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
        expiry: *mut TimeStamp,
    ) -> SecStatus;

    /// `SspiDeleteSecurityContextAsync`: the one call that may be issued with a
    /// NULL callback.
    ///
    /// # Safety
    /// `ctx` is live and idle; `context` is a live security context no other
    /// call uses, valid until completion.
    unsafe fn delete_security_context_async(
        &self,
        ctx: AsyncContextPtr,
        context: *mut SecHandle,
    ) -> SecStatus;

    /// `EncryptMessage` (through the `SecurityFunctionTableW`).
    ///
    /// # Safety
    /// `context` is a live, established security context; `message` and its
    /// buffers are valid for the duration of the call.
    unsafe fn encrypt_message(
        &self,
        context: *mut SecHandle,
        qop: u32,
        message: *mut SecBufferDesc,
        sequence: u32,
    ) -> SecStatus;

    /// `DecryptMessage` (through the `SecurityFunctionTableW`).
    ///
    /// # Safety
    /// As for [`SspiProvider::encrypt_message`]; `qop` may be null.
    unsafe fn decrypt_message(
        &self,
        context: *mut SecHandle,
        message: *mut SecBufferDesc,
        sequence: u32,
        qop: *mut u32,
    ) -> SecStatus;

    /// `QueryContextAttributesW`.
    ///
    /// # Safety
    /// `context` is live; `buffer` points to the structure `attribute` names.
    unsafe fn query_context_attributes(
        &self,
        context: *mut SecHandle,
        attribute: u32,
        buffer: *mut c_void,
    ) -> SecStatus;

    /// `ApplyControlToken` (for example `SCHANNEL_SHUTDOWN`).
    ///
    /// # Safety
    /// `context` is live; `input` is valid for the duration of the call.
    unsafe fn apply_control_token(
        &self,
        context: *mut SecHandle,
        input: *mut SecBufferDesc,
    ) -> SecStatus;

    /// `FreeContextBuffer`, for memory the provider allocated
    /// (`ISC_REQ_ALLOCATE_MEMORY`, some attributes).
    ///
    /// # Safety
    /// `buffer` was allocated by this provider and is not used afterwards.
    unsafe fn free_context_buffer(&self, buffer: *mut c_void) -> SecStatus;
}
