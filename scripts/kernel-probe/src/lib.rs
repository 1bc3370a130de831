//! Link probe for the kernel-target check: a `/driver /subsystem:native`
//! image whose `DriverEntry` reaches every method of the ksecdd backend, so
//! the linker must resolve (import) each ksecdd function. It is never loaded:
//! the calls sit behind a condition that is false for any real DriverEntry.
#![no_std]

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::c_void;
use core::ptr::null_mut;
use ksspi::ksecdd::Ksecdd;
use ksspi::provider::SspiProvider;
use ksspi::Passive;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

/// The probe never allocates; the allocator only has to link.
struct NoAlloc;

// SAFETY: returning null is always a valid (failed) allocation.
unsafe impl GlobalAlloc for NoAlloc {
    unsafe fn alloc(&self, _: Layout) -> *mut u8 {
        null_mut()
    }
    unsafe fn dealloc(&self, _: *mut u8, _: Layout) {}
}

#[global_allocator]
static ALLOCATOR: NoAlloc = NoAlloc;

/// The MSVC floating-point marker some core objects reference.
#[no_mangle]
#[used]
static _fltused: i32 = 0;

unsafe extern "system" fn callback(_: *mut ksspi::sys::SspiAsyncContext, _: *mut c_void) {}

/// Every provider method, with null arguments.
fn reach_everything<P: SspiProvider>(p: &P) -> i32 {
    let Some(ctx) = p.create_async_context() else {
        return 1;
    };
    let n = null_mut();
    // SAFETY: never executed (see DriverEntry); the calls exist to be linked.
    unsafe {
        let mut s = p.set_async_notify_callback(ctx, Some(callback), n).0;
        s |= p.reinit_async_context(ctx).0;
        s |= i32::from(p.async_context_requires_notify(ctx).unwrap_or(true));
        s |= i32::from(p.has_requires_notify());
        s |= p.get_async_call_status(ctx).0;
        s |= p.acquire_credentials_handle_async(ctx, n.cast(), n.cast(), 0, n, n.cast(), n.cast()).0;
        s |= p.free_credentials_handle_async(ctx, n.cast()).0;
        s |= p
            .initialize_security_context_async(ctx, n.cast(), n.cast(), n.cast(), 0, n.cast(), n.cast(), n.cast(), n.cast(), n.cast())
            .0;
        s |= p
            .accept_security_context_async(ctx, n.cast(), n.cast(), n.cast(), 0, n.cast(), n.cast(), n.cast(), n.cast())
            .0;
        s |= p.delete_security_context_async(ctx, n.cast()).0;
        s |= p.encrypt_message(n.cast(), 0, n.cast(), 0).0;
        s |= p.decrypt_message(n.cast(), n.cast(), 0, n.cast()).0;
        s |= p.query_context_attributes(n.cast(), 0, n).0;
        s |= p.apply_control_token(n.cast(), n.cast()).0;
        s |= p.free_context_buffer(n).0;
        s |= i32::from(p.current_irql().0);
        p.free_async_context(ctx);
        s
    }
}

/// The probe's entry point.
#[no_mangle]
pub extern "system" fn DriverEntry(driver: *mut c_void, _registry: *mut c_void) -> i32 {
    if !driver.is_null() {
        return 0; // always taken when loaded: the calls below never run
    }
    // SAFETY: DriverEntry runs at PASSIVE_LEVEL.
    let at = unsafe { Passive::assume() };
    match Ksecdd::new(&at) {
        Ok(p) => reach_everything(&p),
        Err(s) => s.0,
    }
}
