//! The default queue and its EvtIoDeviceControl; [`WdfRequest`], the engine's
//! [`Request`] over a `WDFREQUEST`; and the cancel routine.
//!
//! Cancellation follows the samples' echo queue (`WdfRequestMarkCancelableEx`
//! under the lock, `WdfRequestUnmarkCancelable` before completing, and an
//! ownership count when both sides race): the engine pends a request and the
//! wrapper marks it cancelable with the engine's [`PendKey`]. The cancel
//! routine hands the key to [`Device::cancel`](crate::device::Device::cancel);
//! if the engine no longer holds the request (its completion is under way and
//! found it cancelled), the completing side and the cancel routine each add a
//! claim and the second one completes it with STATUS_CANCELLED.

use super::context::{request_context, wdf_size, RequestContext};
use super::device::{engine_of, file_id};
use super::platform::current_irql;
use crate::device::{PendKey, Request};
use crate::ntstatus::NtStatus;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;
use ksspi::Passive;
use ksspi_abi::MAX_MESSAGE;
use wdk::{nt_success, println};
use wdk_sys::{
    call_unsafe_wdf_function_binding, _WDF_EXECUTION_LEVEL, _WDF_IO_QUEUE_DISPATCH_TYPE,
    _WDF_SYNCHRONIZATION_SCOPE, _WDF_TRI_STATE, NTSTATUS, PVOID, STATUS_CANCELLED,
    STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_BUFFER_SIZE, STATUS_INVALID_DEVICE_STATE, ULONG,
    WDFDEVICE, WDFOBJECT, WDFQUEUE, WDFREQUEST, WDF_IO_QUEUE_CONFIG, WDF_NO_HANDLE,
    WDF_OBJECT_ATTRIBUTES,
};

/// Create the default parallel queue (every request presented at once: a
/// pended STEP must not hold up other sessions), at PASSIVE_LEVEL.
///
/// # Safety
/// `device` is a live device object, and this runs at PASSIVE_LEVEL.
pub unsafe fn initialize(device: WDFDEVICE) -> NTSTATUS {
    let mut config = WDF_IO_QUEUE_CONFIG {
        Size: wdf_size::<WDF_IO_QUEUE_CONFIG>(),
        PowerManaged: _WDF_TRI_STATE::WdfUseDefault,
        DefaultQueue: u8::from(true),
        DispatchType: _WDF_IO_QUEUE_DISPATCH_TYPE::WdfIoQueueDispatchParallel,
        EvtIoDeviceControl: Some(evt_io_device_control),
        ..WDF_IO_QUEUE_CONFIG::default()
    };
    // WDF_IO_QUEUE_CONFIG_INIT_DEFAULT_QUEUE: no limit on presented requests
    // (zero would present none).
    config.Settings.Parallel.NumberOfPresentedRequests = ULONG::MAX;
    // The engine wants PASSIVE_LEVEL for IOCTLs (it issues SSPI calls there).
    let mut attributes = WDF_OBJECT_ATTRIBUTES {
        Size: wdf_size::<WDF_OBJECT_ATTRIBUTES>(),
        ExecutionLevel: _WDF_EXECUTION_LEVEL::WdfExecutionLevelPassive,
        SynchronizationScope: _WDF_SYNCHRONIZATION_SCOPE::WdfSynchronizationScopeNone,
        ..WDF_OBJECT_ATTRIBUTES::default()
    };
    let mut queue = WDF_NO_HANDLE as WDFQUEUE;
    // SAFETY: per the caller, a live device at PASSIVE_LEVEL; config and
    // attributes are locals that outlive the call.
    let status = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfIoQueueCreate,
            device,
            &raw mut config,
            &raw mut attributes,
            &raw mut queue
        )
    };
    if !nt_success(status) {
        println!("ksspi: WdfIoQueueCreate failed {status:#010X}");
    }
    status
}

/// Complete `request` with `status` and `information` bytes.
fn complete(request: WDFREQUEST, status: NTSTATUS, information: usize) {
    // SAFETY: the caller owns the request's completion (exactly once).
    unsafe {
        call_unsafe_wdf_function_binding!(
            WdfRequestCompleteWithInformation,
            request,
            status,
            information as u64
        )
    };
}

/// EvtIoDeviceControl: copy the input out of the system buffer (which the
/// reply later overwrites: METHOD_BUFFERED shares it) and hand the request to
/// the engine.
extern "C" fn evt_io_device_control(
    queue: WDFQUEUE,
    request: WDFREQUEST,
    output_length: usize,
    input_length: usize,
    code: ULONG,
) {
    // SAFETY: a live queue of a ksspi device.
    let device = unsafe { call_unsafe_wdf_function_binding!(WdfIoQueueGetDevice, queue) };
    // SAFETY: the device of a live queue is live and a ksspi device (this
    // queue is created by `initialize` only); its engine lives until the
    // device's cleanup callback, after every request.
    let Some(engine) = (unsafe { engine_of(device) }) else {
        return complete(request, STATUS_INVALID_DEVICE_STATE, 0);
    };
    let Some(at) = Passive::check(current_irql()) else {
        return complete(request, STATUS_INVALID_DEVICE_STATE, 0);
    };
    if input_length > MAX_MESSAGE {
        return complete(request, STATUS_INVALID_BUFFER_SIZE, 0);
    }
    let mut input = Vec::new();
    if input_length > 0 {
        if input.try_reserve_exact(input_length).is_err() {
            return complete(request, STATUS_INSUFFICIENT_RESOURCES, 0);
        }
        let (buffer, length) = match retrieve(request, Buffer::Input) {
            Ok(b) => b,
            Err(status) => return complete(request, status, 0),
        };
        // SAFETY: WDF returned `length` readable bytes at `buffer` (the system
        // buffer, valid until the request completes, which is after this copy).
        input.extend_from_slice(unsafe { core::slice::from_raw_parts(buffer, length) });
    }
    // SAFETY: a live request.
    let file_object =
        unsafe { call_unsafe_wdf_function_binding!(WdfRequestGetFileObject, request) };
    if file_object.is_null() {
        return complete(request, STATUS_INVALID_DEVICE_STATE, 0);
    }
    // SAFETY: a file object of this device.
    let file = unsafe { file_id(file_object) };
    let (output, output_bytes) = if output_length > 0 {
        match retrieve(request, Buffer::Output) {
            Ok(b) => b,
            Err(status) => return complete(request, status, 0),
        }
    } else {
        (core::ptr::null_mut(), 0)
    };
    let request = WdfRequest {
        request,
        output,
        output_bytes: if output.is_null() { 0 } else { output_bytes },
        marked: false,
    };
    engine.ioctl(file, code, &input, request, &at);
    // The input may be an ENCRYPT's plaintext: zeroed before it is freed.
    ksspi::engine::wipe(&mut input);
}

/// Which of a request's buffers [`retrieve`] gives.
enum Buffer {
    Input,
    Output,
}

/// A request's input or output buffer (METHOD_BUFFERED: both are the system
/// buffer) and its length, or the status WDF refused it with.
fn retrieve(request: WDFREQUEST, which: Buffer) -> Result<(*mut u8, usize), NTSTATUS> {
    let mut buffer: PVOID = core::ptr::null_mut();
    let mut length: usize = 0;
    let status = match which {
        // SAFETY: a live request (the caller's, not completed yet); both
        // out-parameters are locals that outlive the call.
        Buffer::Input => unsafe {
            call_unsafe_wdf_function_binding!(
                WdfRequestRetrieveInputBuffer,
                request,
                0,
                &raw mut buffer,
                &raw mut length
            )
        },
        // SAFETY: a live request (the caller's, not completed yet); both
        // out-parameters are locals that outlive the call.
        Buffer::Output => unsafe {
            call_unsafe_wdf_function_binding!(
                WdfRequestRetrieveOutputBuffer,
                request,
                0,
                &raw mut buffer,
                &raw mut length
            )
        },
    };
    if nt_success(status) {
        Ok((buffer.cast::<u8>(), length))
    } else {
        Err(status)
    }
}

/// A `WDFREQUEST` the engine owns until it completes it.
pub struct WdfRequest {
    request: WDFREQUEST,
    /// The output buffer (METHOD_BUFFERED's system buffer, whose input was
    /// copied out above) and its length; null and 0 without one.
    output: *mut u8,
    output_bytes: usize,
    /// Marked cancelable (and not yet unmarked).
    marked: bool,
}

// SAFETY: a WDFREQUEST may be completed from any thread at IRQL <=
// DISPATCH_LEVEL; the engine hands it between threads without sharing it.
unsafe impl Send for WdfRequest {}

impl WdfRequest {
    fn context(&self) -> &RequestContext {
        // SAFETY: every request of the device carries a RequestContext
        // (WdfDeviceInitSetRequestAttributes in `device::create`), and
        // `self.request` is live until `self` completes it.
        let ctx = unsafe { request_context(self.request as WDFOBJECT) };
        // SAFETY: the context lives as long as the request, so as long as
        // `self`; after `pend` it is only read (its claims are atomic).
        unsafe { &*ctx }
    }
}

impl Request for WdfRequest {
    fn output_capacity(&self) -> usize {
        self.output_bytes
    }

    fn output(&mut self) -> &mut [u8] {
        if self.output.is_null() {
            return &mut [];
        }
        // SAFETY: WDF returned `output_bytes` writable bytes at `output`
        // (nonpaged, so usable at DISPATCH_LEVEL), valid until the request
        // completes, which consumes `self`; the input was copied out before
        // the engine saw the request, so nothing else refers to the buffer,
        // and `&mut self` makes this the only slice of it.
        unsafe { core::slice::from_raw_parts_mut(self.output, self.output_bytes) }
    }

    fn pend(&mut self, key: PendKey) -> bool {
        // SAFETY: every request of the device carries a RequestContext
        // (WdfDeviceInitSetRequestAttributes in `device::create`), and
        // `self.request` is live until `self` completes it.
        let ctx = unsafe { request_context(self.request as WDFOBJECT) };
        // SAFETY: the context lives as long as the request; the request is not
        // cancelable yet (marked just below), so no cancel routine reads the
        // context, and `&mut self` makes this the only reference to it.
        let ctx = unsafe { &mut *ctx };
        ctx.key = key;
        ctx.claims.store(0, Ordering::Relaxed);
        // SAFETY: a live request the driver owns. The Ex form never calls the
        // cancel routine itself (it returns STATUS_CANCELLED instead), so it is
        // safe under the engine's table lock, as in the samples' echo queue.
        let status = unsafe {
            call_unsafe_wdf_function_binding!(
                WdfRequestMarkCancelableEx,
                self.request,
                Some(evt_request_cancel)
            )
        };
        self.marked = nt_success(status);
        self.marked
    }

    fn complete_written(self, status: NtStatus, len: usize) {
        if self.marked {
            // SAFETY: marked by `pend` and not unmarked since.
            let unmarked = unsafe {
                call_unsafe_wdf_function_binding!(WdfRequestUnmarkCancelable, self.request)
            };
            if unmarked == STATUS_CANCELLED {
                // The cancel routine runs or will run and finds the engine no
                // longer holds the request: the second claim completes it.
                if self.context().claims.fetch_add(1, Ordering::AcqRel) == 1 {
                    complete(self.request, STATUS_CANCELLED, 0);
                }
                return;
            }
        }
        complete(self.request, status, len.min(self.output_bytes));
    }

    fn cancelled(self) {
        // Inside the cancel routine: the request is already unmarked.
        complete(self.request, STATUS_CANCELLED, 0);
    }
}

/// EvtRequestCancel: hand the request's key to the engine. If the engine
/// still held it, it has completed it; if not, the completing side and this
/// routine settle who completes it.
extern "C" fn evt_request_cancel(request: WDFREQUEST) {
    // SAFETY: a live request of the default queue of a ksspi device.
    let queue = unsafe { call_unsafe_wdf_function_binding!(WdfRequestGetIoQueue, request) };
    // SAFETY: `queue` is the live request's queue, WdfRequestGetIoQueue just
    // said so.
    let device = unsafe { call_unsafe_wdf_function_binding!(WdfIoQueueGetDevice, queue) };
    // SAFETY: every request of the device carries a RequestContext
    // (WdfDeviceInitSetRequestAttributes), and WDF passes a live request: it
    // is not completed before this routine does so or hands it on.
    let ctx = unsafe { request_context(request as WDFOBJECT) };
    // SAFETY: the context lives as long as the request; `pend` wrote it
    // before marking the request cancelable, and it is only read from then
    // on (its claims are atomic).
    let ctx = unsafe { &*ctx };
    // SAFETY: the device is live while it has requests.
    if let Some(engine) = unsafe { engine_of(device) } {
        if engine.cancel(ctx.key) {
            return;
        }
    }
    if ctx.claims.fetch_add(1, Ordering::AcqRel) == 1 {
        complete(request, STATUS_CANCELLED, 0);
    }
}
