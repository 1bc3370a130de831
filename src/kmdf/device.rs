//! The device object: its security descriptor, file-object callbacks,
//! request context, device interface and queue, as in the samples'
//! `device.rs`; and the engine's lifetime, from device creation to the
//! device's cleanup callback.
//!
//! Removal, in the framework's order (open-source WDF,
//! `FxPkgPnp::PnpEventRemovedCommonCode`): the queues are purged (pended
//! requests meet their cancel routines), then `EvtDeviceSelfManagedIoCleanup`
//! runs, then the device's children, the engine's work items among them, are
//! disposed, then the device's own cleanup callback. The engine is drained
//! in the self-managed I/O cleanup, while its work items still run; the
//! cleanup callback drains again (a device removed before it started never
//! gets the self-managed I/O callback, and then has nothing outstanding) and
//! frees the engine.

use super::context::{
    attributes_with, device_context, file_context, wdf_size, DEVICE_CONTEXT_INFO,
    FILE_CONTEXT_INFO, REQUEST_CONTEXT_INFO,
};
use super::platform::{current_irql, KmdfPlatform};
use super::{queue, Engine};
use crate::device::{DeviceConfig, FileId};
use alloc::boxed::Box;
use ksspi::engine::{Limits, Tokens};
use ksspi::ksecdd::Ksecdd;
use ksspi::sys::ascii_utf16;
use ksspi::Passive;
use ksspi_abi::GUID_DEVINTERFACE_KSSPI;
use wdk::{nt_success, println};
use wdk_sys::{
    call_unsafe_wdf_function_binding, ntddk::KeDelayExecutionThread, _MODE, _WDF_FILEOBJECT_CLASS,
    _WDF_TRI_STATE, GUID, KPROCESSOR_MODE, LARGE_INTEGER, NTSTATUS, STATUS_INVALID_DEVICE_STATE,
    STATUS_SUCCESS, UNICODE_STRING, WDFDEVICE, WDFDEVICE_INIT, WDFFILEOBJECT, WDFOBJECT,
    WDFREQUEST, WDF_FILEOBJECT_CONFIG, WDF_NO_HANDLE, WDF_OBJECT_ATTRIBUTES,
    WDF_PNPPOWER_EVENT_CALLBACKS,
};

/// `SDDL_DEVOBJ_SYS_ALL_ADM_ALL` (wdmsec.h): only SYSTEM and Administrators.
const SDDL: &str = "D:P(A;;GA;;;SY)(A;;GA;;;BA)";

static SDDL_UTF16: [u16; SDDL.len()] = ascii_utf16(SDDL);

/// The device interface GUID, from the ABI crate the harness also uses.
const INTERFACE: GUID = GUID {
    Data1: GUID_DEVINTERFACE_KSSPI.data1,
    Data2: GUID_DEVINTERFACE_KSSPI.data2,
    Data3: GUID_DEVINTERFACE_KSSPI.data3,
    Data4: GUID_DEVINTERFACE_KSSPI.data4,
};

/// Create the device object and everything hanging off it (EvtDriverDeviceAdd).
pub fn create(mut device_init: &mut WDFDEVICE_INIT) -> NTSTATUS {
    // Only SYSTEM and Administrators may open the device.
    let sddl = UNICODE_STRING {
        Length: (SDDL_UTF16.len() * 2) as u16,
        MaximumLength: (SDDL_UTF16.len() * 2) as u16,
        Buffer: SDDL_UTF16.as_ptr().cast_mut(),
    };
    // SAFETY: device_init is WDF's, not yet consumed; the string outlives the
    // call (WDF copies it) and is never written through.
    let status = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDeviceInitAssignSDDLString,
            device_init,
            &raw const sddl
        )
    };
    if !nt_success(status) {
        println!("ksspi: WdfDeviceInitAssignSDDLString failed {status:#010X}");
        return status;
    }

    // File objects: each handle gets an engine file id; cleanup closes its
    // sessions.
    let mut file_config = WDF_FILEOBJECT_CONFIG {
        Size: wdf_size::<WDF_FILEOBJECT_CONFIG>(),
        EvtDeviceFileCreate: Some(evt_device_file_create),
        EvtFileClose: Some(evt_file_close),
        EvtFileCleanup: Some(evt_file_cleanup),
        AutoForwardCleanupClose: _WDF_TRI_STATE::WdfUseDefault,
        FileObjectClass: _WDF_FILEOBJECT_CLASS::WdfFileObjectWdfCannotUseFsContexts,
    };
    let mut file_attributes = attributes_with(FILE_CONTEXT_INFO.unique());
    // SAFETY: device_init is WDF's; both structures outlive the call.
    unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDeviceInitSetFileObjectConfig,
            device_init,
            &raw mut file_config,
            &raw mut file_attributes,
        );
    };

    // Removal drains the engine in EvtDeviceSelfManagedIoCleanup, before the
    // framework disposes the device's work items (see the module's doc).
    let mut pnp_power = WDF_PNPPOWER_EVENT_CALLBACKS {
        Size: wdf_size::<WDF_PNPPOWER_EVENT_CALLBACKS>(),
        EvtDeviceSelfManagedIoCleanup: Some(evt_device_self_managed_io_cleanup),
        ..WDF_PNPPOWER_EVENT_CALLBACKS::default()
    };
    // SAFETY: device_init is WDF's, not yet consumed; the structure outlives
    // the call (WDF copies it).
    unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDeviceInitSetPnpPowerEventCallbacks,
            device_init,
            &raw mut pnp_power
        );
    };

    // Every request carries a RequestContext (the cancel routine's key).
    let mut request_attributes = attributes_with(REQUEST_CONTEXT_INFO.unique());
    // SAFETY: device_init is WDF's, not yet consumed; the attributes outlive
    // the call (WDF copies them).
    unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDeviceInitSetRequestAttributes,
            device_init,
            &raw mut request_attributes
        );
    };

    let mut attributes = WDF_OBJECT_ATTRIBUTES {
        EvtCleanupCallback: Some(evt_device_cleanup),
        ..attributes_with(DEVICE_CONTEXT_INFO.unique())
    };
    let mut device = WDF_NO_HANDLE as WDFDEVICE;
    // SAFETY: WdfDeviceCreate consumes device_init (on success and failure);
    // it is not used afterwards.
    let status = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDeviceCreate,
            (core::ptr::addr_of_mut!(device_init)).cast(),
            &raw mut attributes,
            &raw mut device,
        )
    };
    if !nt_success(status) {
        println!("ksspi: WdfDeviceCreate failed {status:#010X}");
        return status;
    }

    let Some(at) = Passive::check(current_irql()) else {
        return STATUS_INVALID_DEVICE_STATE;
    };
    let provider = match Ksecdd::new(&at) {
        Ok(p) => p,
        Err(e) => {
            println!(
                "ksspi: ksecdd has no security function table ({:#010X})",
                e.0
            );
            return STATUS_INVALID_DEVICE_STATE;
        }
    };
    println!(
        "ksspi: SspiAsyncContextRequiresNotify: {:?}",
        provider.requires_notify_lookup()
    );
    // Output tokens in buffers the driver supplies, until a real run shows
    // that ksecdd honours ALLOCATE_MEMORY on the async calls: both kernel
    // callers of Schannel whose flags are known supply their own, HTTP.sys
    // (docs/DESIGN.md, Evidence) and msquic (src/platform/tls_schannel.c at
    // 4984c210: its ContextReq has neither ISC_REQ_ALLOCATE_MEMORY nor
    // ASC_REQ_ALLOCATE_MEMORY). The model runs both ways (engine_handshake's
    // sweeps); docs/PERFORMANCE.md gives each one's memory per session.
    let config = DeviceConfig {
        limits: Limits {
            tokens: Tokens::Caller,
            ..Limits::default()
        },
        ..DeviceConfig::default()
    };
    println!("ksspi: output tokens: {:?}", config.limits.tokens);
    let engine = Box::new(Engine::new(provider, KmdfPlatform::new(device), config));
    // SAFETY: WdfDeviceCreate succeeded: `device` is live and was created
    // with `attributes`, which carry the DeviceContext type.
    let ctx = unsafe { device_context(device as WDFOBJECT) };
    // SAFETY: the context lives as long as the device; nothing else uses it
    // until the queue and interface below exist.
    unsafe { (*ctx).engine = Box::into_raw(engine) };

    // SAFETY: a live device; the GUID is static; no reference string.
    let status = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDeviceCreateDeviceInterface,
            device,
            &INTERFACE,
            core::ptr::null_mut(),
        )
    };
    if !nt_success(status) {
        println!("ksspi: WdfDeviceCreateDeviceInterface failed {status:#010X}");
        return status;
    }
    // SAFETY: a live device, at PASSIVE_LEVEL.
    unsafe { queue::initialize(device) }
}

/// The engine of a device.
///
/// # Safety
/// `device` is a live ksspi device whose engine is set (after `create`,
/// before its cleanup callback).
pub unsafe fn engine_of(device: WDFDEVICE) -> Option<&'static Engine> {
    // SAFETY: per the caller, a live ksspi device, created with a
    // DeviceContext (`create`).
    let ctx = unsafe { device_context(device as WDFOBJECT) };
    // SAFETY: the context lives as long as the device; its `engine` is
    // written only in `create` and in the cleanup callback, neither of which
    // runs now (per the caller).
    let engine = unsafe { (*ctx).engine };
    // SAFETY: null, or from Box::into_raw in `create`; the engine lives until
    // the cleanup callback, after every request and file callback of the
    // device, and is only shared (`&`) meanwhile.
    unsafe { engine.as_ref() }
}

/// The engine's id for a file object.
///
/// # Safety
/// `file` is a live file object of a ksspi device.
pub unsafe fn file_id(file: WDFFILEOBJECT) -> FileId {
    // SAFETY: per the caller, a live file object of a ksspi device, whose
    // file objects carry a FileContext (WdfDeviceInitSetFileObjectConfig).
    let ctx = unsafe { file_context(file as WDFOBJECT) };
    // SAFETY: the context lives as long as the file object; its id is written
    // once, in EvtDeviceFileCreate, before any request on the file.
    FileId(unsafe { (*ctx).id })
}

/// EvtDeviceFileCreate: a new handle gets an engine file id.
extern "C" fn evt_device_file_create(device: WDFDEVICE, request: WDFREQUEST, file: WDFFILEOBJECT) {
    // SAFETY: WDF passes this ksspi device, live, after `create` set its
    // engine and before its cleanup callback.
    let status = match unsafe { engine_of(device) } {
        Some(engine) => {
            // SAFETY: WDF passes a live file object of this device, whose file
            // objects carry a FileContext (WdfDeviceInitSetFileObjectConfig).
            let ctx = unsafe { file_context(file as WDFOBJECT) };
            // SAFETY: the context lives as long as the file object, which no
            // request or other callback has seen yet.
            unsafe { (*ctx).id = engine.open_file().0 };
            STATUS_SUCCESS
        }
        None => STATUS_INVALID_DEVICE_STATE,
    };
    // SAFETY: the create request is ours to complete.
    unsafe { call_unsafe_wdf_function_binding!(WdfRequestComplete, request, status) };
}

/// EvtFileCleanup: the last handle to a file object closed. Close its
/// sessions and wait (at PASSIVE_LEVEL) until calls in flight have completed
/// and every session is gone.
extern "C" fn evt_file_cleanup(file: WDFFILEOBJECT) {
    // SAFETY: WDF passes a live file object of a ksspi device.
    let device = unsafe { call_unsafe_wdf_function_binding!(WdfFileObjectGetDevice, file) };
    // SAFETY: the file object's device is live while the file object is; its
    // engine is set in `create` and freed in its cleanup callback, which runs
    // after every file callback.
    let Some(engine) = (unsafe { engine_of(device) }) else {
        return;
    };
    // SAFETY: a live file object of a ksspi device, as above.
    let id = unsafe { file_id(file) };
    if engine.cleanup(id) > 0 {
        wait_until(|| engine.sessions_of(id) == 0);
    }
}

/// EvtFileClose: every request on the file has completed. Close what an OPEN
/// that raced the cleanup opened after it, and wait likewise.
extern "C" fn evt_file_close(file: WDFFILEOBJECT) {
    // SAFETY: WDF passes a live file object of a ksspi device.
    let device = unsafe { call_unsafe_wdf_function_binding!(WdfFileObjectGetDevice, file) };
    // SAFETY: the file object's device is live while the file object is; its
    // engine is set in `create` and freed in its cleanup callback, which runs
    // after every file callback.
    let Some(engine) = (unsafe { engine_of(device) }) else {
        return;
    };
    // SAFETY: a live file object of a ksspi device, as above.
    let id = unsafe { file_id(file) };
    if engine.close_file(id) > 0 {
        wait_until(|| engine.sessions_of(id) == 0);
    }
}

/// EvtDeviceSelfManagedIoCleanup: the device is being removed; its queue is
/// purged and its work items are not disposed yet. Drain the engine.
extern "C" fn evt_device_self_managed_io_cleanup(device: WDFDEVICE) {
    // SAFETY: a live ksspi device; its engine lives until the cleanup
    // callback, which runs after this one.
    if let Some(engine) = unsafe { engine_of(device) } {
        drain(engine);
    }
}

/// Close every session, release the cached credentials, and wait (at
/// PASSIVE_LEVEL) until no async context is alive: no call can complete,
/// no callback or work item can enter the driver any more.
fn drain(engine: &Engine) {
    if !engine.unload().is_drained() {
        wait_until(|| engine.outstanding().is_drained());
    }
}

/// The device object's cleanup callback: drain (nothing is left if the
/// self-managed I/O cleanup ran), then drop the engine.
extern "C" fn evt_device_cleanup(object: WDFOBJECT) {
    // SAFETY: WDF passes the device this callback was registered for
    // (`create`), live until the callback returns, with its DeviceContext.
    let ctx = unsafe { device_context(object) };
    // SAFETY: the context lives as long as the device; no callback of the
    // device runs any more except completions of calls still in flight, which
    // reach the engine, never its context: this is the only reference.
    let ctx = unsafe { &mut *ctx };
    if ctx.engine.is_null() {
        return;
    }
    // SAFETY: set from Box::into_raw in `create`.
    let engine = unsafe { &*ctx.engine };
    drain(engine);
    // SAFETY: from Box::into_raw; nothing refers to it any more.
    drop(unsafe { Box::from_raw(ctx.engine.cast_mut()) });
    ctx.engine = core::ptr::null();
}

/// Sleep 10 ms at a time (at PASSIVE_LEVEL) until `done`, logging each second.
fn wait_until(mut done: impl FnMut() -> bool) {
    let mut waited_ms = 0u32;
    while !done() {
        let mut interval = LARGE_INTEGER {
            QuadPart: -10 * 1000 * 10, // 10 ms, relative, in 100 ns units
        };
        // A non-alertable kernel-mode wait ends only with STATUS_SUCCESS.
        // SAFETY: at PASSIVE_LEVEL (cleanup callbacks), non-alertable.
        let _ = unsafe {
            KeDelayExecutionThread(_MODE::KernelMode as KPROCESSOR_MODE, 0, &raw mut interval)
        };
        waited_ms += 10;
        if waited_ms.is_multiple_of(1000) {
            println!("ksspi: waiting for SSPI calls in flight ({waited_ms} ms)");
        }
    }
}
