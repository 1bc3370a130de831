//! The KMDF glue (Windows only): WDF callbacks in, device-engine calls out.
//!
//! It translates and decides nothing: every rule (validation, ownership,
//! pending, cancellation, limits) lives in [`crate::device`], tested over the
//! model on any OS. The layout follows the windows-drivers-rs KMDF samples
//! (`general/echo/kmdf/driver/DriverSync`): `driver` (DriverEntry,
//! EvtDriverDeviceAdd, EvtDriverUnload), `device` (device object, security
//! descriptor, interface, file objects), `queue` (EvtIoDeviceControl, the
//! request wrapper and its cancel routine), plus `platform` (work items,
//! IRQL, clock for the engine) and `context` (typed WDF object contexts).
//!
//! Every WDF call is made through `call_unsafe_wdf_function_binding!` as the
//! samples do, and each one is listed, with where its use was checked, in
//! `docs/WINDOWS.md` ("The KMDF glue, call by call").

mod context;
mod device;
mod driver;
mod platform;
mod queue;

#[cfg(not(test))]
extern crate wdk_panic;

#[cfg(not(test))]
use wdk_alloc::WdkAllocator;

// Pool allocations for `alloc` (Box, Arc, Vec), as in the samples.
#[cfg(not(test))]
#[global_allocator]
static GLOBAL_ALLOCATOR: WdkAllocator = WdkAllocator;

/// The device engine as the driver runs it: over ksecdd, on WDF work items,
/// completing WDF requests.
pub(crate) type Engine =
    crate::device::Device<ksspi::ksecdd::Ksecdd, platform::KmdfPlatform, queue::WdfRequest>;
