//! DriverEntry, EvtDriverDeviceAdd and EvtDriverUnload, as in the samples'
//! `driver.rs`.

use super::context::wdf_size;
use super::device;
use wdk::{nt_success, println};
use wdk_sys::{
    call_unsafe_wdf_function_binding, DRIVER_OBJECT, NTSTATUS, PCUNICODE_STRING, PDRIVER_OBJECT,
    PWDFDEVICE_INIT, STATUS_INVALID_PARAMETER, WDFDRIVER, WDF_DRIVER_CONFIG, WDF_NO_HANDLE,
    WDF_NO_OBJECT_ATTRIBUTES,
};

/// The driver's entry point: create the WDF driver object with the
/// device-add and unload callbacks.
#[link_section = "INIT"]
#[export_name = "DriverEntry"] // WDF's loader stub calls this name
extern "system" fn driver_entry(
    driver: &mut DRIVER_OBJECT,
    registry_path: PCUNICODE_STRING,
) -> NTSTATUS {
    let mut config = WDF_DRIVER_CONFIG {
        Size: wdf_size::<WDF_DRIVER_CONFIG>(),
        EvtDriverDeviceAdd: Some(evt_driver_device_add),
        EvtDriverUnload: Some(evt_driver_unload),
        ..WDF_DRIVER_CONFIG::default()
    };
    // SAFETY: `driver` and `registry_path` are what the I/O manager passed to
    // DriverEntry; `config` outlives the call; no driver handle is wanted.
    let status = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDriverCreate,
            driver as PDRIVER_OBJECT,
            registry_path,
            WDF_NO_OBJECT_ATTRIBUTES,
            &raw mut config,
            WDF_NO_HANDLE.cast::<WDFDRIVER>(),
        )
    };
    if !nt_success(status) {
        println!("ksspi: WdfDriverCreate failed {status:#010X}");
    }
    status
}

/// PnP found the root-enumerated device: create its device object.
extern "C" fn evt_driver_device_add(_driver: WDFDRIVER, device_init: PWDFDEVICE_INIT) -> NTSTATUS {
    // SAFETY: WDF passes a valid WDFDEVICE_INIT that this callback alone uses
    // until WdfDeviceCreate consumes it.
    match unsafe { device_init.as_mut() } {
        Some(init) => device::create(init),
        None => STATUS_INVALID_PARAMETER,
    }
}

/// The driver is unloading. Each device's cleanup callback has already closed
/// its sessions and waited for them (`device::evt_device_cleanup`); there is
/// no global state left to free.
extern "C" fn evt_driver_unload(_driver: WDFDRIVER) {
    println!("ksspi: unloaded");
}
