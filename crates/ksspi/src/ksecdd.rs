//! The ksecdd backend: [`SspiProvider`] over the functions `ksecdd.sys`
//! exports (declared in [`crate::sys::ffi`], each naming its sspi.h prototype).
//!
//! This module and `src/kmdf/` in the driver are the only places that call
//! across the FFI edge. It translates; it decides nothing.
//!
//! The record-layer and attribute calls go through the `SecurityFunctionTableW`
//! from `InitSecurityInterfaceW`, which carries EncryptMessage and
//! DecryptMessage whatever names ksecdd exports them under.
//!
//! `SspiAsyncContextRequiresNotify` is declared in sspi.h but is in neither
//! independent list of ksecdd's exports (mingw-w64's `libksecdd.a`, Wine's
//! `ksecdd.sys.spec`), and one unresolved import stops a driver from loading.
//! It is looked up at run time instead ([`RequiresNotifyLookup`]); where it is
//! absent, every accepted call is taken to complete through its callback, as
//! HTTP.sys does after `SspiAcceptSecurityContextAsync` returns `SEC_E_OK`.

use crate::irql::{Irql, Passive};
use crate::provider::{AsyncContextPtr, SspiProvider};
use crate::status::SecStatus;
use crate::sys::ffi;
use crate::sys::{
    ascii_utf16, SecBufferDesc, SecHandle, SecurityFunctionTableW,
    SspiAsyncContextRequiresNotifyFn, SspiAsyncNotifyCallback, TimeStamp, UNICODE_STRING,
};
use core::ffi::c_void;
use core::ptr::{self, NonNull};

/// Kernel async SSPI as ksecdd exports it.
#[derive(Clone, Copy)]
pub struct Ksecdd {
    table: &'static SecurityFunctionTableW,
    requires_notify: Option<SspiAsyncContextRequiresNotifyFn>,
    lookup: RequiresNotifyLookup,
}

/// What the run-time lookup of `SspiAsyncContextRequiresNotify` found: one of
/// the facts the driver reports after its first run on a real system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequiresNotifyLookup {
    /// ksecdd.sys exports it: a call that completed without a callback is
    /// known as such.
    Found,
    /// `MmGetSystemRoutineAddressEx` found no such export in ksecdd.sys:
    /// every accepted call completes through its callback.
    NotExported,
    /// The system has no `MmGetSystemRoutineAddressEx` (before Windows 10
    /// version 2004), so nothing can be asked: treated as `NotExported`.
    NoLookupFunction,
}

/// Find `SspiAsyncContextRequiresNotify` in the loaded ksecdd.sys.
fn lookup_requires_notify(
    _at: &Passive,
) -> (
    Option<SspiAsyncContextRequiresNotifyFn>,
    RequiresNotifyLookup,
) {
    const EX: &str = "MmGetSystemRoutineAddressEx";
    const MODULE: &str = "ksecdd.sys";
    let mut ex_units = ascii_utf16::<{ EX.len() }>(EX);
    let mut module_units = ascii_utf16::<{ MODULE.len() }>(MODULE);
    // Both are short constants: the conversions cannot fail.
    let (Some(mut ex_name), Some(mut module)) = (
        UNICODE_STRING::from_units(&mut ex_units),
        UNICODE_STRING::from_units(&mut module_units),
    ) else {
        return (None, RequiresNotifyLookup::NoLookupFunction);
    };
    // SAFETY: at PASSIVE_LEVEL (the token says so); the string is valid for
    // the call and never written through.
    let ex = unsafe { ffi::MmGetSystemRoutineAddress(&raw mut ex_name) };
    if ex.is_null() {
        return (None, RequiresNotifyLookup::NoLookupFunction);
    }
    // SAFETY: a non-null address of ntoskrnl's MmGetSystemRoutineAddressEx,
    // whose prototype (wdm.h) is MmGetSystemRoutineAddressExFn.
    let ex: ffi::MmGetSystemRoutineAddressExFn = unsafe { core::mem::transmute(ex) };
    // SAFETY: at PASSIVE_LEVEL; both names are valid for the call and the
    // function name is NUL-terminated.
    let found = unsafe {
        ex(
            &raw mut module,
            c"SspiAsyncContextRequiresNotify".as_ptr().cast(),
        )
    };
    if found.is_null() {
        return (None, RequiresNotifyLookup::NotExported);
    }
    // SAFETY: ksecdd's export of that name, whose prototype (sspi.h) is
    // SspiAsyncContextRequiresNotifyFn (checked by scripts/abi-check.sh);
    // ksecdd stays loaded while a driver that imports from it is.
    let found: SspiAsyncContextRequiresNotifyFn = unsafe { core::mem::transmute(found) };
    (Some(found), RequiresNotifyLookup::Found)
}

// SAFETY: the function table is immutable, process-wide data owned by ksecdd.
unsafe impl Send for Ksecdd {}
// SAFETY: as above.
unsafe impl Sync for Ksecdd {}

impl Ksecdd {
    /// Bind to ksecdd: fetch its function table (`InitSecurityInterfaceW`)
    /// and look up `SspiAsyncContextRequiresNotify`.
    /// `SEC_E_SECPKG_NOT_FOUND` if the table is NULL.
    pub fn new(at: &Passive) -> Result<Self, SecStatus> {
        // SAFETY: InitSecurityInterfaceW takes no arguments and returns a
        // pointer to ksecdd's static table (or NULL), valid while ksecdd is loaded,
        // which is as long as any driver importing it.
        let table = unsafe { ffi::InitSecurityInterfaceW() };
        // SAFETY: non-null, static and never written after initialisation.
        let Some(table) = (unsafe { table.as_ref() }) else {
            return Err(SecStatus::SEC_E_SECPKG_NOT_FOUND);
        };
        let (requires_notify, lookup) = lookup_requires_notify(at);
        Ok(Ksecdd {
            table,
            requires_notify,
            lookup,
        })
    }

    /// What the lookup of `SspiAsyncContextRequiresNotify` found.
    pub fn requires_notify_lookup(&self) -> RequiresNotifyLookup {
        self.lookup
    }
}

fn status(s: i32) -> SecStatus {
    SecStatus(s)
}

impl SspiProvider for Ksecdd {
    fn current_irql(&self) -> Irql {
        current_irql()
    }

    fn create_async_context(&self) -> Option<AsyncContextPtr> {
        // SAFETY: no arguments; returns a new context or NULL.
        NonNull::new(unsafe { ffi::SspiCreateAsyncContext() })
    }

    unsafe fn free_async_context(&self, ctx: AsyncContextPtr) {
        // SAFETY: the caller guarantees a live, idle context not used afterwards.
        unsafe { ffi::SspiFreeAsyncContext(ctx.as_ptr()) }
    }

    unsafe fn reinit_async_context(&self, ctx: AsyncContextPtr) -> SecStatus {
        // SAFETY: the caller guarantees a live context.
        SecStatus::from_ntstatus(unsafe { ffi::SspiReinitAsyncContext(ctx.as_ptr()) })
    }

    unsafe fn set_async_notify_callback(
        &self,
        ctx: AsyncContextPtr,
        callback: SspiAsyncNotifyCallback,
        data: *mut c_void,
    ) -> SecStatus {
        // SAFETY: the caller guarantees a live context and `data`'s lifetime.
        status(unsafe { ffi::SspiSetAsyncNotifyCallback(ctx.as_ptr(), callback, data) })
    }

    unsafe fn async_context_requires_notify(&self, ctx: AsyncContextPtr) -> Option<bool> {
        let requires_notify = self.requires_notify?;
        // SAFETY: ksecdd's function (see `lookup_requires_notify`); the caller
        // guarantees a live context.
        Some(unsafe { requires_notify(ctx.as_ptr()) } != 0)
    }

    fn has_requires_notify(&self) -> bool {
        self.requires_notify.is_some()
    }

    unsafe fn get_async_call_status(&self, ctx: AsyncContextPtr) -> SecStatus {
        // SAFETY: the caller guarantees a live context.
        status(unsafe { ffi::SspiGetAsyncCallStatus(ctx.as_ptr()) })
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
        // SAFETY: the caller keeps every pointer valid until completion.
        status(unsafe {
            ffi::SspiAcquireCredentialsHandleAsyncW(
                ctx.as_ptr(),
                principal,
                package,
                credential_use,
                ptr::null_mut(),
                auth_data,
                None,
                ptr::null_mut(),
                credential,
                expiry,
            )
        })
    }

    unsafe fn free_credentials_handle_async(
        &self,
        ctx: AsyncContextPtr,
        credential: *mut SecHandle,
    ) -> SecStatus {
        // SAFETY: the caller guarantees a live context and credential.
        status(unsafe { ffi::SspiFreeCredentialsHandleAsync(ctx.as_ptr(), credential) })
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
        // SAFETY: the caller keeps every pointer valid until completion.
        status(unsafe {
            ffi::SspiInitializeSecurityContextAsyncW(
                ctx.as_ptr(),
                credential,
                context,
                target_name,
                context_req,
                0,
                0,
                input,
                0,
                new_context,
                output,
                context_attr,
                expiry,
            )
        })
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
        // SAFETY: the caller keeps every pointer valid until completion.
        status(unsafe {
            ffi::SspiAcceptSecurityContextAsync(
                ctx.as_ptr(),
                credential,
                context,
                input,
                context_req,
                0,
                new_context,
                output,
                context_attr,
                expiry,
            )
        })
    }

    unsafe fn delete_security_context_async(
        &self,
        ctx: AsyncContextPtr,
        context: *mut SecHandle,
    ) -> SecStatus {
        // SAFETY: the caller guarantees a live context and security context.
        status(unsafe { ffi::SspiDeleteSecurityContextAsync(ctx.as_ptr(), context) })
    }

    unsafe fn encrypt_message(
        &self,
        context: *mut SecHandle,
        qop: u32,
        message: *mut SecBufferDesc,
        sequence: u32,
    ) -> SecStatus {
        match self.table.EncryptMessage {
            // SAFETY: a ksecdd table entry; the caller guarantees the arguments.
            Some(f) => status(unsafe { f(context, qop, message, sequence) }),
            None => SecStatus::SEC_E_UNSUPPORTED_FUNCTION,
        }
    }

    unsafe fn decrypt_message(
        &self,
        context: *mut SecHandle,
        message: *mut SecBufferDesc,
        sequence: u32,
        qop: *mut u32,
    ) -> SecStatus {
        match self.table.DecryptMessage {
            // SAFETY: a ksecdd table entry; the caller guarantees the arguments.
            Some(f) => status(unsafe { f(context, message, sequence, qop) }),
            None => SecStatus::SEC_E_UNSUPPORTED_FUNCTION,
        }
    }

    unsafe fn query_context_attributes(
        &self,
        context: *mut SecHandle,
        attribute: u32,
        buffer: *mut c_void,
    ) -> SecStatus {
        match self.table.QueryContextAttributesW {
            // SAFETY: a ksecdd table entry; the caller guarantees the arguments.
            Some(f) => status(unsafe { f(context, attribute, buffer) }),
            None => SecStatus::SEC_E_UNSUPPORTED_FUNCTION,
        }
    }

    unsafe fn apply_control_token(
        &self,
        context: *mut SecHandle,
        input: *mut SecBufferDesc,
    ) -> SecStatus {
        match self.table.ApplyControlToken {
            // SAFETY: a ksecdd table entry; the caller guarantees the arguments.
            Some(f) => status(unsafe { f(context, input) }),
            None => SecStatus::SEC_E_UNSUPPORTED_FUNCTION,
        }
    }

    unsafe fn free_context_buffer(&self, buffer: *mut c_void) -> SecStatus {
        match self.table.FreeContextBuffer {
            // SAFETY: a ksecdd table entry; the caller guarantees the buffer.
            Some(f) => status(unsafe { f(buffer) }),
            None => SecStatus::SEC_E_UNSUPPORTED_FUNCTION,
        }
    }
}

/// `KeGetCurrentIrql`, imported from ntoskrnl.exe.
fn current_irql() -> Irql {
    // SAFETY: callable at any IRQL; no arguments, no side effects.
    Irql(unsafe { ffi::KeGetCurrentIrql() })
}
