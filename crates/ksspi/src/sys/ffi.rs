//! The functions ksspi imports from `ksecdd.sys`, declared by hand.
//!
//! Each block names the header it mirrors. The extern blocks exist only in
//! the kernel build (Windows, feature `ksecdd`: the ksecdd backend is their
//! one user); the prototype table exists
//! everywhere, so `scripts/abi-check.sh` can redeclare every function against
//! mingw-w64's headers on Linux, where a conflicting prototype is an error.
//!
//! The async functions are declared in sspi.h without `SEC_ENTRY` in mingw-w64
//! (and with it in the Windows SDK); on x86_64 and aarch64 `extern "system"`
//! and `extern "C"` are the same convention, so either spelling matches.
//!
//! The record layer and attribute calls (EncryptMessage, DecryptMessage,
//! QueryContextAttributesW, ApplyControlToken, FreeContextBuffer) are reached
//! through the `SecurityFunctionTableW` that `InitSecurityInterfaceW` returns,
//! not by import: the table carries them whatever names ksecdd exports them
//! under (docs/DESIGN.md, "Evidence": ksecdd exports them as SealMessage /
//! UnsealMessage).

use super::abi::abi_fns;
use super::types::{
    SecBufferDesc, SecGetKeyFn, SecHandle, SecurityFunctionTableW, SspiAsyncContext,
    SspiAsyncNotifyCallback, TimeStamp, UNICODE_STRING,
};
use core::ffi::c_void;

abi_fns! { PROTOTYPES, "sspi.h":
    /// sspi.h: `SspiAsyncContext* SspiCreateAsyncContext();`
    fn SspiCreateAsyncContext() -> *mut SspiAsyncContext;
    /// sspi.h: `void SspiFreeAsyncContext(SspiAsyncContext* Handle);`
    fn SspiFreeAsyncContext(handle: *mut SspiAsyncContext);
    /// sspi.h: `NTSTATUS SspiReinitAsyncContext(SspiAsyncContext* Handle);`
    fn SspiReinitAsyncContext(handle: *mut SspiAsyncContext) -> i32;
    /// sspi.h: `SECURITY_STATUS SspiSetAsyncNotifyCallback(SspiAsyncContext*, SspiAsyncNotifyCallback, void*);`
    fn SspiSetAsyncNotifyCallback(
        context: *mut SspiAsyncContext,
        callback: SspiAsyncNotifyCallback,
        callback_data: *mut c_void,
    ) -> i32;
    /// sspi.h: `SECURITY_STATUS SspiGetAsyncCallStatus(SspiAsyncContext* Handle);`
    fn SspiGetAsyncCallStatus(handle: *mut SspiAsyncContext) -> i32;
    /// sspi.h (ISSP_MODE == 0): `SspiAcquireCredentialsHandleAsyncW`.
    fn SspiAcquireCredentialsHandleAsyncW(
        context: *mut SspiAsyncContext,
        principal: *mut UNICODE_STRING,
        package: *mut UNICODE_STRING,
        credential_use: u32,
        logon_id: *mut c_void,
        auth_data: *mut c_void,
        get_key_fn: SecGetKeyFn,
        get_key_argument: *mut c_void,
        credential: *mut SecHandle,
        expiry: *mut TimeStamp,
    ) -> i32;
    /// sspi.h (ISSP_MODE == 0): `SspiInitializeSecurityContextAsyncW`.
    fn SspiInitializeSecurityContextAsyncW(
        context: *mut SspiAsyncContext,
        credential: *mut SecHandle,
        security_context: *mut SecHandle,
        target_name: *mut UNICODE_STRING,
        context_req: u32,
        reserved1: u32,
        target_data_rep: u32,
        input: *mut SecBufferDesc,
        reserved2: u32,
        new_context: *mut SecHandle,
        output: *mut SecBufferDesc,
        context_attr: *mut u32,
        expiry: *mut TimeStamp,
    ) -> i32;
    /// sspi.h: `SspiAcceptSecurityContextAsync`.
    fn SspiAcceptSecurityContextAsync(
        context: *mut SspiAsyncContext,
        credential: *mut SecHandle,
        security_context: *mut SecHandle,
        input: *mut SecBufferDesc,
        context_req: u32,
        target_data_rep: u32,
        new_context: *mut SecHandle,
        output: *mut SecBufferDesc,
        context_attr: *mut u32,
        expiry: *mut TimeStamp,
    ) -> i32;
    /// sspi.h: `SECURITY_STATUS SspiFreeCredentialsHandleAsync(SspiAsyncContext*, PCredHandle);`
    fn SspiFreeCredentialsHandleAsync(
        context: *mut SspiAsyncContext,
        credential: *mut SecHandle,
    ) -> i32;
    /// sspi.h: `SECURITY_STATUS SspiDeleteSecurityContextAsync(SspiAsyncContext*, PCtxtHandle);`
    fn SspiDeleteSecurityContextAsync(
        context: *mut SspiAsyncContext,
        security_context: *mut SecHandle,
    ) -> i32;
    /// sspi.h: `PSecurityFunctionTableW SEC_ENTRY InitSecurityInterfaceW(void);`
    fn InitSecurityInterfaceW() -> *mut SecurityFunctionTableW;
}

// What ksspi imports from `ntoskrnl.exe`: the run-time lookup of functions
// that not every system exports. Declared by hand (mingw-w64's `wdm.h` and
// the user-mode headers the ABI check compiles against cannot be mixed).
#[cfg(all(windows, feature = "ksecdd"))]
#[link(name = "ntoskrnl")]
extern "system" {
    /// wdm.h: `PVOID MmGetSystemRoutineAddress(PUNICODE_STRING SystemRoutineName);`
    /// Windows 2000 and later, PASSIVE_LEVEL; only ntoskrnl's and the HAL's
    /// exports (learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-mmgetsystemroutineaddress).
    pub fn MmGetSystemRoutineAddress(name: *mut UNICODE_STRING) -> *mut c_void;
    /// wdm.h: `KIRQL KeGetCurrentIrql(VOID);` Any IRQL. An export of
    /// ntoskrnl.exe in mingw-w64's `libntoskrnl.a`; wdk-sys binds and calls
    /// the same function (its `paged_code!` macro).
    pub fn KeGetCurrentIrql() -> u8;
}

/// wdm.h: `PVOID MmGetSystemRoutineAddressEx(PUNICODE_STRING ModuleName, PSTR FunctionName);`
/// (Windows 10 version 2004 and later: learn.microsoft.com/windows-hardware/
/// drivers/ddi/wdm/nf-wdm-mmgetsystemroutineaddressex). Looked up through
/// `MmGetSystemRoutineAddress` rather than imported, as Microsoft's own
/// drivers do (vmsmp.sys and win32k resolve it by name), so that its absence
/// is an answer, not a load failure.
pub type MmGetSystemRoutineAddressExFn =
    unsafe extern "system" fn(module: *mut UNICODE_STRING, function: *const u8) -> *mut c_void;
