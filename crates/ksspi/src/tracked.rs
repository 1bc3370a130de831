//! A provider that counts the async contexts alive through it, so that a
//! driver can tell when ksecdd no longer holds a callback into it.
//!
//! Every async call runs on an async context, and a context is freed only
//! once its call has completed (contract item 7, which the handles and the
//! engine keep). So while [`Tracked::async_contexts_alive`] is above zero
//! some call may still complete, and its callback, or the work item it
//! queues, may still run driver code; once it is zero and nothing creates
//! another, none will. That covers every kind of call at once, whoever
//! issued it: a session's handshake, a credential acquisition or release on
//! its own conductor, the detached delete of a closed session's security
//! context, the self-test's machines. A driver's removal path waits for it
//! before its code and memory may go (`Device::drain` in the driver package).

use crate::irql::Irql;
use crate::provider::{AsyncContextPtr, SspiProvider};
use crate::status::SecStatus;
use crate::sys::{SecBufferDesc, SecHandle, SspiAsyncNotifyCallback, TimeStamp, UNICODE_STRING};
use alloc::sync::Arc;
use core::ffi::c_void;
use core::sync::atomic::{AtomicUsize, Ordering};

/// `P`, counting the async contexts created through it and not yet freed.
/// Clones share the count.
#[derive(Clone)]
pub struct Tracked<P> {
    inner: P,
    alive: Arc<AtomicUsize>,
}

impl<P: SspiProvider> Tracked<P> {
    /// Count what goes through `inner` from now on.
    pub fn new(inner: P) -> Self {
        Tracked {
            inner,
            alive: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Async contexts created and not freed yet.
    pub fn async_contexts_alive(&self) -> usize {
        self.alive.load(Ordering::Acquire)
    }

    /// The provider underneath.
    pub fn inner(&self) -> &P {
        &self.inner
    }
}

impl<P: SspiProvider> SspiProvider for Tracked<P> {
    fn current_irql(&self) -> Irql {
        self.inner.current_irql()
    }

    fn create_async_context(&self) -> Option<AsyncContextPtr> {
        let ctx = self.inner.create_async_context()?;
        self.alive.fetch_add(1, Ordering::AcqRel);
        Some(ctx)
    }

    unsafe fn free_async_context(&self, ctx: AsyncContextPtr) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.inner.free_async_context(ctx) };
        // After the free: a waiter that sees zero knows no context is left.
        self.alive.fetch_sub(1, Ordering::AcqRel);
    }

    unsafe fn reinit_async_context(&self, ctx: AsyncContextPtr) -> SecStatus {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.inner.reinit_async_context(ctx) }
    }

    unsafe fn set_async_notify_callback(
        &self,
        ctx: AsyncContextPtr,
        callback: SspiAsyncNotifyCallback,
        data: *mut c_void,
    ) -> SecStatus {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.inner.set_async_notify_callback(ctx, callback, data) }
    }

    unsafe fn async_context_requires_notify(&self, ctx: AsyncContextPtr) -> Option<bool> {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.inner.async_context_requires_notify(ctx) }
    }

    fn has_requires_notify(&self) -> bool {
        self.inner.has_requires_notify()
    }

    unsafe fn get_async_call_status(&self, ctx: AsyncContextPtr) -> SecStatus {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.inner.get_async_call_status(ctx) }
    }

    unsafe fn acquire_credentials_handle_async(
        &self,
        ctx: AsyncContextPtr,
        principal: *mut UNICODE_STRING,
        package: *mut UNICODE_STRING,
        credential_use: u32,
        auth_data: *mut c_void,
        credential: *mut SecHandle,
        expiry: *mut TimeStamp,
    ) -> SecStatus {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe {
            self.inner.acquire_credentials_handle_async(
                ctx,
                principal,
                package,
                credential_use,
                auth_data,
                credential,
                expiry,
            )
        }
    }

    unsafe fn free_credentials_handle_async(
        &self,
        ctx: AsyncContextPtr,
        credential: *mut SecHandle,
    ) -> SecStatus {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.inner.free_credentials_handle_async(ctx, credential) }
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
        expiry: *mut TimeStamp,
    ) -> SecStatus {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe {
            self.inner.initialize_security_context_async(
                ctx,
                credential,
                context,
                target_name,
                context_req,
                input,
                new_context,
                output,
                context_attr,
                expiry,
            )
        }
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
        expiry: *mut TimeStamp,
    ) -> SecStatus {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe {
            self.inner.accept_security_context_async(
                ctx,
                credential,
                context,
                input,
                context_req,
                new_context,
                output,
                context_attr,
                expiry,
            )
        }
    }

    unsafe fn delete_security_context_async(
        &self,
        ctx: AsyncContextPtr,
        context: *mut SecHandle,
    ) -> SecStatus {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.inner.delete_security_context_async(ctx, context) }
    }

    unsafe fn encrypt_message(
        &self,
        context: *mut SecHandle,
        qop: u32,
        message: *mut SecBufferDesc,
        sequence: u32,
    ) -> SecStatus {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.inner.encrypt_message(context, qop, message, sequence) }
    }

    unsafe fn decrypt_message(
        &self,
        context: *mut SecHandle,
        message: *mut SecBufferDesc,
        sequence: u32,
        qop: *mut u32,
    ) -> SecStatus {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.inner.decrypt_message(context, message, sequence, qop) }
    }

    unsafe fn query_context_attributes(
        &self,
        context: *mut SecHandle,
        attribute: u32,
        buffer: *mut c_void,
    ) -> SecStatus {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe {
            self.inner
                .query_context_attributes(context, attribute, buffer)
        }
    }

    unsafe fn apply_control_token(
        &self,
        context: *mut SecHandle,
        input: *mut SecBufferDesc,
    ) -> SecStatus {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.inner.apply_control_token(context, input) }
    }

    unsafe fn free_context_buffer(&self, buffer: *mut c_void) -> SecStatus {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.inner.free_context_buffer(buffer) }
    }
}
