//! Owned handles over a provider: [`AsyncContext`], [`InFlight`],
//! [`Credentials`] and [`SecurityContext`].
//!
//! The rules they keep (docs/DESIGN.md, contract items 5-7):
//! - an async context is freed exactly once, and never while a call is in
//!   flight: issuing a call *consumes* the [`AsyncContext`] and yields an
//!   [`InFlight`], which gives the context back only once the provider says the
//!   call is no longer pending. Reinit and set-callback exist only on the idle
//!   [`AsyncContext`], so "reinit while in flight" does not type-check.
//! - a context is reinitialised between calls: issuing on a used context that
//!   was not reinitialised is refused at run time.
//! - an [`InFlight`] dropped while its call is still pending is *leaked*, never
//!   freed: freeing it would be a use after free inside ksecdd. The model's
//!   verifier reports such a leak at unload, so no test can hide one.
//! - credentials and security contexts are released by an async call
//!   ([`Credentials::release`], [`SecurityContext::delete`]). A handle in use by
//!   an in-flight call (it has live [`Lease`]s) is never released. Dropped
//!   without an explicit release, a handle releases itself when dropped at
//!   PASSIVE_LEVEL (a detached async call that frees its own async context); a
//!   drop above PASSIVE cannot issue a call and must not wait, so it leaks the
//!   handle (and the verifier reports it).
//! - nothing here waits, so nothing blocks at DISPATCH_LEVEL.

use crate::irql::{Irql, Passive};
use crate::provider::{AsyncContextPtr, SspiProvider};
use crate::status::SecStatus;
use crate::sys::{SecHandle, SspiAsyncContext, SspiAsyncNotifyCallback};
use alloc::boxed::Box;
use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::mem::ManuallyDrop;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// An idle async context (`SspiAsyncContext*`), owned.
pub struct AsyncContext<P: SspiProvider> {
    provider: P,
    ptr: AsyncContextPtr,
    /// Created or reinitialised since its last call: ready to issue.
    fresh: bool,
}

// SAFETY: the context is an opaque kernel object addressed by pointer; the
// provider's functions may be called on it from any thread, and this handle is
// its only owner.
unsafe impl<P: SspiProvider> Send for AsyncContext<P> {}

impl<P: SspiProvider> AsyncContext<P> {
    /// `SspiCreateAsyncContext`; `SEC_E_INSUFFICIENT_MEMORY` when it returns NULL.
    pub fn new(provider: P, _at: &Passive) -> Result<Self, SecStatus> {
        match provider.create_async_context() {
            Some(ptr) => Ok(AsyncContext {
                provider,
                ptr,
                fresh: true,
            }),
            None => Err(SecStatus::SEC_E_INSUFFICIENT_MEMORY),
        }
    }

    /// The provider this context belongs to.
    pub fn provider(&self) -> &P {
        &self.provider
    }

    /// The raw pointer, for the provider calls an engine makes.
    pub fn as_ptr(&self) -> AsyncContextPtr {
        self.ptr
    }

    /// Whether a call may be issued now (created or reinitialised since the last one).
    pub fn is_fresh(&self) -> bool {
        self.fresh
    }

    /// `SspiSetAsyncNotifyCallback`.
    ///
    /// # Safety
    /// `data` stays valid for as long as `callback` may be called, and the
    /// callback honours the contract (it may run at DISPATCH_LEVEL).
    pub unsafe fn set_callback(
        &mut self,
        callback: SspiAsyncNotifyCallback,
        data: *mut c_void,
    ) -> Result<(), SecStatus> {
        // SAFETY: the context is live (owned) and idle (not an InFlight); the
        // caller vouches for `data`.
        let status = unsafe {
            self.provider
                .set_async_notify_callback(self.ptr, callback, data)
        };
        status.ok().map(drop)
    }

    /// `SspiReinitAsyncContext`: ready the context for its next call.
    pub fn reinit(&mut self) -> Result<(), SecStatus> {
        // SAFETY: the context is live and, being idle, has no call in flight.
        let status = unsafe { self.provider.reinit_async_context(self.ptr) };
        status.ok()?;
        self.fresh = true;
        Ok(())
    }

    /// `SspiGetAsyncCallStatus`: the result of the last call (idle, so never pending).
    pub fn status(&self) -> SecStatus {
        // SAFETY: the context is live.
        unsafe { self.provider.get_async_call_status(self.ptr) }
    }

    /// Issue one `Sspi*Async` call on this context: `call` receives the provider
    /// and the context pointer and returns the queueing status.
    ///
    /// A queueing error gives the context back with the status (no call is in
    /// flight); anything else yields the [`InFlight`]. `keep` is a handle slot
    /// the call reads or writes (a credential or security context being freed),
    /// kept alive until the call completes.
    ///
    /// # Safety
    /// Every pointer `call` passes to the provider stays valid and unmoved until
    /// the call completes. A callback that runs before this returns must not
    /// free or reclaim the context: the returned [`InFlight`] owns it.
    pub unsafe fn issue(
        mut self,
        _at: &Passive,
        keep: Option<HandleSlot>,
        call: impl FnOnce(&P, AsyncContextPtr) -> SecStatus,
    ) -> Result<InFlight<P>, Refused<P>> {
        if !self.fresh {
            return Err(Refused {
                context: self,
                status: SecStatus::SEC_E_INVALID_HANDLE,
                slot: keep,
            });
        }
        self.fresh = false;
        let status = call(&self.provider, self.ptr);
        if status.is_error() {
            return Err(Refused {
                context: self,
                status,
                slot: keep,
            });
        }
        Ok(InFlight {
            context: ManuallyDrop::new(self),
            slot: keep,
        })
    }

    /// Give up ownership without freeing (for an engine that hands the pointer
    /// across a callback boundary).
    pub fn into_raw(self) -> (P, AsyncContextPtr, bool) {
        let this = ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped, so the provider is moved out once.
        let provider = unsafe { core::ptr::read(&this.provider) };
        (provider, this.ptr, this.fresh)
    }

    /// Take ownership back from [`AsyncContext::into_raw`].
    ///
    /// # Safety
    /// `ptr` came from `into_raw` (or `SspiCreateAsyncContext` on `provider`),
    /// is live, has no call in flight, and has no other owner.
    pub unsafe fn from_raw(provider: P, ptr: AsyncContextPtr, fresh: bool) -> Self {
        AsyncContext {
            provider,
            ptr,
            fresh,
        }
    }
}

impl<P: SspiProvider> Drop for AsyncContext<P> {
    fn drop(&mut self) {
        // SAFETY: owned, idle (an in-flight context lives in an InFlight, whose
        // drop never reaches here while pending), freed exactly once here.
        unsafe { self.provider.free_async_context(self.ptr) }
    }
}

/// A call the provider refused to queue: the context (no call in flight), the
/// status, and the handle slot the call was given, if any.
pub struct Refused<P: SspiProvider> {
    /// The context, idle.
    pub context: AsyncContext<P>,
    /// The queueing status (an error).
    pub status: SecStatus,
    /// The slot passed to [`AsyncContext::issue`], untouched.
    pub slot: Option<HandleSlot>,
}

/// An async context with a call in flight (or completed but not yet collected).
#[must_use = "an in-flight call must be completed; dropped while pending it leaks its context"]
pub struct InFlight<P: SspiProvider> {
    context: ManuallyDrop<AsyncContext<P>>,
    slot: Option<HandleSlot>,
}

/// What a completed call gives back.
pub struct Completed<P: SspiProvider> {
    /// The context, idle again (reinit it before the next call).
    pub context: AsyncContext<P>,
    /// The call's result (`SspiGetAsyncCallStatus`).
    pub status: SecStatus,
    /// The slot passed to [`AsyncContext::issue`], if any.
    pub slot: Option<HandleSlot>,
}

impl<P: SspiProvider> InFlight<P> {
    /// `SspiGetAsyncCallStatus`: `SEC_I_ASYNC_CALL_PENDING` while in flight.
    pub fn status(&self) -> SecStatus {
        self.context.status()
    }

    /// `SspiAsyncContextRequiresNotify`: false only when the provider says the
    /// call completed synchronously and no callback will come; where it
    /// cannot say (the function is not exported), a callback always comes.
    pub fn requires_notify(&self) -> bool {
        // SAFETY: the context is live.
        let answer = unsafe {
            self.context
                .provider
                .async_context_requires_notify(self.context.ptr)
        };
        answer != Some(false)
    }

    /// The raw context pointer (to match a callback's `Handle` argument).
    pub fn as_ptr(&self) -> AsyncContextPtr {
        self.context.ptr
    }

    /// Collect the result, if the call is no longer pending.
    pub fn complete(self) -> Result<Completed<P>, Self> {
        let status = self.status();
        if status == SecStatus::SEC_I_ASYNC_CALL_PENDING {
            return Err(self);
        }
        let mut this = ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped (it is a ManuallyDrop), so the
        // context is taken out of it exactly once, here.
        let context = unsafe { ManuallyDrop::take(&mut this.context) };
        // SAFETY: likewise the slot is moved out exactly once, here; `this`
        // never drops its copy.
        let slot = unsafe { core::ptr::read(&this.slot) };
        Ok(Completed {
            context,
            status,
            slot,
        })
    }
}

impl<P: SspiProvider> Drop for InFlight<P> {
    fn drop(&mut self) {
        if self.status() == SecStatus::SEC_I_ASYNC_CALL_PENDING {
            // Never free in flight: leak the context and keep the slot alive.
            if let Some(slot) = self.slot.take() {
                core::mem::forget(slot);
            }
            return;
        }
        // SAFETY: the call is over; the context is dropped (freed) exactly once.
        unsafe { ManuallyDrop::drop(&mut self.context) }
    }
}

/// The heap home of a `CredHandle` or `CtxtHandle`: a stable address the
/// provider can write on completion, and a count of the calls using it.
pub struct HandleSlot(Box<SlotInner>);

struct SlotInner {
    handle: UnsafeCell<SecHandle>,
    leases: AtomicU32,
}

// SAFETY: the handle word is written only by the provider during a call that
// owns the slot (through a raw pointer), and read by its owner otherwise.
unsafe impl Send for HandleSlot {}
// SAFETY: as above; shared access only reads the lease count (atomic) or hands
// out the raw pointer.
unsafe impl Sync for HandleSlot {}

impl HandleSlot {
    /// An empty slot (`SecInvalidateHandle`), for a call that fills it.
    pub fn new() -> Self {
        HandleSlot(Box::new(SlotInner {
            handle: UnsafeCell::new(SecHandle::INVALID),
            leases: AtomicU32::new(0),
        }))
    }

    /// The stable pointer to pass to the provider.
    pub fn as_ptr(&self) -> *mut SecHandle {
        self.0.handle.get()
    }

    /// The handle's value.
    pub fn get(&self) -> SecHandle {
        // SAFETY: no call writes the slot while its owner can read it.
        unsafe { *self.0.handle.get() }
    }

    /// `SecIsValidHandle`.
    pub fn is_valid(&self) -> bool {
        self.get().is_valid()
    }

    fn leases(&self) -> u32 {
        self.0.leases.load(Ordering::Acquire)
    }
}

impl Default for HandleSlot {
    fn default() -> Self {
        Self::new()
    }
}

/// A use of a credential or security context by one in-flight call. While any
/// lease is alive the handle is not released; an engine keeps the lease with
/// the call and drops it on completion.
pub struct Lease {
    handle: NonNull<SecHandle>,
    leases: NonNull<AtomicU32>,
}

// SAFETY: the pointees live in a HandleSlot that is never freed while a lease
// is alive (release refuses, drop leaks).
unsafe impl Send for Lease {}

impl Lease {
    /// The handle pointer to pass to the provider.
    pub fn as_ptr(&self) -> *mut SecHandle {
        self.handle.as_ptr()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // SAFETY: the slot outlives every lease (see above).
        unsafe { self.leases.as_ref() }.fetch_sub(1, Ordering::AcqRel);
    }
}

fn lease(slot: &HandleSlot) -> Lease {
    slot.0.leases.fetch_add(1, Ordering::AcqRel);
    Lease {
        // SAFETY: UnsafeCell::get of a boxed value is never null.
        handle: unsafe { NonNull::new_unchecked(slot.as_ptr()) },
        leases: NonNull::from(&slot.0.leases),
    }
}

/// `QueryContextAttributesW(SECPKG_ATTR_CONNECTION_INFO)` on an established
/// security context: protocol, cipher, hash and key exchange.
pub fn query_connection_info<P: SspiProvider>(
    provider: &P,
    context: &HandleSlot,
) -> Result<crate::sys::SecPkgContext_ConnectionInfo, SecStatus> {
    let mut info = crate::sys::SecPkgContext_ConnectionInfo::default();
    // SAFETY: the slot holds a live security context its owner is not using
    // in a call right now, and `info` is the structure the attribute names.
    let status = unsafe {
        provider.query_context_attributes(
            context.as_ptr(),
            crate::sys::SECPKG_ATTR_CONNECTION_INFO,
            (&mut info as *mut crate::sys::SecPkgContext_ConnectionInfo).cast(),
        )
    };
    status.ok().map(|_| info)
}

/// `QueryContextAttributes(SECPKG_ATTR_APPLICATION_PROTOCOL)` on an
/// established context: the ALPN negotiation's status and the protocol chosen.
pub fn query_application_protocol<P: SspiProvider>(
    provider: &P,
    context: &HandleSlot,
) -> Result<crate::sys::SecPkgContext_ApplicationProtocol, SecStatus> {
    let mut info = crate::sys::SecPkgContext_ApplicationProtocol::ZEROED;
    // SAFETY: the slot holds a live security context its owner is not using
    // in a call right now, and `info` is the structure the attribute names.
    let status = unsafe {
        provider.query_context_attributes(
            context.as_ptr(),
            crate::sys::SECPKG_ATTR_APPLICATION_PROTOCOL,
            (&mut info as *mut crate::sys::SecPkgContext_ApplicationProtocol).cast(),
        )
    };
    status.ok().map(|_| info)
}

/// `QueryContextAttributes(SECPKG_ATTR_SESSION_INFO)` on an established
/// context: whether its handshake was a reconnect (`SSL_SESSION_RECONNECT`).
pub fn query_session_info<P: SspiProvider>(
    provider: &P,
    context: &HandleSlot,
) -> Result<crate::sys::SecPkgContext_SessionInfo, SecStatus> {
    let mut info = crate::sys::SecPkgContext_SessionInfo::default();
    // SAFETY: the slot holds a live security context its owner is not using
    // in a call right now, and `info` is the structure the attribute names.
    let status = unsafe {
        provider.query_context_attributes(
            context.as_ptr(),
            crate::sys::SECPKG_ATTR_SESSION_INFO,
            (&mut info as *mut crate::sys::SecPkgContext_SessionInfo).cast(),
        )
    };
    status.ok().map(|_| info)
}

/// Which async release a handle needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Credentials,
    SecurityContext,
}

macro_rules! owned_sec_handle {
    ($(#[$m:meta])* $name:ident, $kind:expr, $release:ident, $call:ident) => {
        $(#[$m])*
        pub struct $name<P: SspiProvider> {
            provider: P,
            slot: Option<HandleSlot>,
        }

        impl<P: SspiProvider> $name<P> {
            /// Take ownership of a slot a completed call filled.
            ///
            /// # Safety
            /// The slot holds a handle `provider` issued, which nothing else owns.
            pub unsafe fn from_slot(provider: P, slot: HandleSlot) -> Self {
                $name { provider, slot: Some(slot) }
            }

            /// The handle's value.
            pub fn handle(&self) -> SecHandle {
                self.slot().get()
            }

            /// A lease for one call that uses this handle.
            pub fn lease(&self) -> Lease {
                lease(self.slot())
            }

            /// How many calls are using the handle now.
            pub fn leases(&self) -> u32 {
                self.slot().leases()
            }

            fn slot(&self) -> &HandleSlot {
                self.slot.as_ref().expect("slot is present until release or drop")
            }

            /// Release the handle through its async call on `context`. Refused
            /// (`SEC_E_INVALID_HANDLE`, nothing released) while a call uses it.
            pub fn $release(
                mut self,
                context: AsyncContext<P>,
                at: &Passive,
            ) -> Result<InFlight<P>, (Self, Refused<P>)> {
                if self.leases() != 0 {
                    return Err((self, Refused {
                        context,
                        status: SecStatus::SEC_E_INVALID_HANDLE,
                        slot: None,
                    }));
                }
                let slot = self.slot.take().expect("slot is present until release or drop");
                let handle = slot.as_ptr();
                // SAFETY: the slot travels with the call (kept by InFlight) so
                // `handle` stays valid and unmoved until completion.
                let issued = unsafe {
                    context.issue(at, Some(slot), |p, ctx| p.$call(ctx, handle))
                };
                issued.map_err(|mut refused| {
                    self.slot = refused.slot.take();
                    (self, refused)
                })
            }
        }

        impl<P: SspiProvider> Drop for $name<P> {
            fn drop(&mut self) {
                if let Some(slot) = self.slot.take() {
                    release_detached(&self.provider, slot, $kind);
                }
            }
        }
    };
}

owned_sec_handle!(
    /// A credential handle (`CredHandle`) from `SspiAcquireCredentialsHandleAsync`.
    Credentials, Kind::Credentials, release, free_credentials_handle_async
);

owned_sec_handle!(
    /// A security context (`CtxtHandle`) from the first accept / initialize call.
    SecurityContext, Kind::SecurityContext, delete, delete_security_context_async
);

/// The state a detached release shares with its callback.
struct Detached<P: SspiProvider> {
    provider: P,
    slot: HandleSlot,
    /// Set by whichever of issuer and callback arrives first; the second frees.
    arrived: AtomicBool,
}

/// Completion of a detached release: the second of issuer and callback to
/// arrive frees the async context and the shared state.
unsafe extern "system" fn detached_done<P: SspiProvider>(
    handle: *mut SspiAsyncContext,
    data: *mut c_void,
) {
    let detached = data.cast::<Detached<P>>();
    // SAFETY: `data` is the Detached the issuer leaked for this call; it is
    // freed only by the second arrival, which is not yet (we have not arrived).
    if unsafe { &(*detached).arrived }.swap(true, Ordering::AcqRel) {
        // SAFETY: the issuer has arrived and left both to us; the call is over.
        let detached = unsafe { Box::from_raw(detached) };
        if let Some(ctx) = NonNull::new(handle) {
            // SAFETY: the call completed; nobody else frees this context.
            unsafe { detached.provider.free_async_context(ctx) };
        }
    }
}

/// Release a handle nobody released explicitly. Only at PASSIVE_LEVEL (issuing
/// needs PASSIVE); above it the handle is leaked, never waited for.
fn release_detached<P: SspiProvider>(provider: &P, slot: HandleSlot, kind: Kind) {
    if !slot.is_valid() {
        return; // never filled: nothing to release
    }
    if slot.leases() != 0 || provider.current_irql() != Irql::PASSIVE {
        core::mem::forget(slot); // in use, or cannot issue here: leak, visibly
        return;
    }
    let Some(ctx) = provider.create_async_context() else {
        core::mem::forget(slot);
        return;
    };
    let detached = Box::into_raw(Box::new(Detached {
        provider: provider.clone(),
        slot,
        arrived: AtomicBool::new(false),
    }));
    // SAFETY: `detached` came from `Box::into_raw` just above and no call
    // is queued yet, so nothing can have freed it.
    let handle = unsafe { (*detached).slot.as_ptr() };
    // SAFETY: `ctx` was just created (live) and has had no call (idle);
    // `detached` stays allocated until the second of issuer and callback
    // arrives and frees it, so the callback's data outlives the call.
    let mut status = unsafe {
        provider.set_async_notify_callback(ctx, Some(detached_done::<P>), detached.cast())
    };
    if status.is_success() {
        status = match kind {
            // SAFETY: `ctx` is live and idle (its callback set, no call
            // yet); `handle` points into the slot inside `detached`, which
            // the second arrival frees only after the call completed; the
            // slot has no leases (checked above), so no other call uses it.
            Kind::Credentials => unsafe { provider.free_credentials_handle_async(ctx, handle) },
            // SAFETY: as for the credentials arm: `ctx` live and idle,
            // `handle` in `detached` until completion, no lease on the slot.
            Kind::SecurityContext => unsafe { provider.delete_security_context_async(ctx, handle) },
        };
    }
    if status.is_error() {
        // Not queued: no callback will run. The handle could not be
        // released: leak its slot, free the rest.
        // SAFETY: no call was queued on `ctx` (the status is an error), so
        // it is live and idle, and only this function holds it: freed once.
        unsafe { provider.free_async_context(ctx) };
        // SAFETY: no callback will run, so this function is the only owner
        // of the box it leaked with `Box::into_raw` above; reclaimed once.
        let detached = unsafe { Box::from_raw(detached) };
        core::mem::forget(detached.slot);
        return;
    }
    // Read before arriving: once arrived, the callback may free `ctx`. No
    // callback coming, or the callback came first: finishing is ours.
    // SAFETY: `ctx` is freed only by the second arrival and the issuer has
    // not arrived yet, so it is live.
    let no_callback = unsafe { provider.async_context_requires_notify(ctx) } == Some(false);
    let ours = no_callback || {
        // SAFETY: `detached` is freed only by the second arrival; the issuer
        // has not arrived yet, so it is still allocated.
        unsafe { &(*detached).arrived }.swap(true, Ordering::AcqRel)
    };
    if ours {
        // SAFETY: no callback will come, or it came first and left both to
        // us: the call is over and nobody else frees `ctx`.
        unsafe { provider.free_async_context(ctx) };
        // SAFETY: likewise the box leaked above is ours alone; freed once.
        drop(unsafe { Box::from_raw(detached) });
    }
}

mod record;
pub use record::{
    apply_shutdown, decrypt_record, encrypt_record, query_remote_certificates, query_stream_sizes,
    Decrypted, StreamSizes,
};

#[cfg(test)]
mod tests;
