//! SecBuffer marshalling for the record-layer calls (a descriptor's
//! buffers, a buffer's bytes, copying out), and `FreeContextBuffer` for the
//! buffers the provider allocates (output tokens, remote certificates).

use super::SimProvider;
use crate::kernel::{self, bugcheck, Bugcheck};
use crate::verifier::Tag;
use ksspi::sys::*;
use ksspi::SecStatus;
use std::ffi::c_void;

impl SimProvider {
    /// `FreeContextBuffer`: stops on anything not a live provider buffer.
    pub(super) fn free_buffer(&self, buffer: *mut c_void) -> SecStatus {
        kernel::require_at_most_dispatch("FreeContextBuffer");
        let removed = self.tables().buffers.remove(&(buffer as usize));
        match removed {
            Some((id, mem)) => {
                drop(mem);
                self.0.verifier.untrack(Tag::ContextBuffer, id);
                SecStatus::SEC_E_OK
            }
            None => bugcheck(
                Bugcheck::BadPoolCaller,
                format_args!(
                    "FreeContextBuffer on {:#x}, not a live provider buffer (double free?)",
                    buffer as usize
                ),
            ),
        }
    }
}

/// The buffers of a record-layer call's descriptor.
///
/// # Safety
/// `desc` is null or a valid descriptor whose buffers outlive the call.
pub(super) unsafe fn record_buffers<'a>(desc: *mut SecBufferDesc) -> Option<&'a mut [SecBuffer]> {
    // SAFETY: per the caller.
    let desc = unsafe { desc.as_ref() }?;
    if desc.ulVersion != SECBUFFER_VERSION || desc.pBuffers.is_null() || desc.cBuffers > 16 {
        return None;
    }
    // SAFETY: the descriptor's buffers, valid for the call.
    Some(unsafe { std::slice::from_raw_parts_mut(desc.pBuffers, desc.cBuffers as usize) })
}

/// A buffer's bytes.
///
/// # Safety
/// `b.pvBuffer` holds `b.cbBuffer` bytes (or the length is 0).
pub(super) unsafe fn bytes(b: &SecBuffer) -> &[u8] {
    if b.cbBuffer == 0 || b.pvBuffer.is_null() {
        return &[];
    }
    // SAFETY: per the caller.
    unsafe { std::slice::from_raw_parts(b.pvBuffer.cast::<u8>(), b.cbBuffer as usize) }
}

/// A buffer's bytes, to write in place.
///
/// # Safety
/// `b.pvBuffer` holds `b.cbBuffer` writable bytes (or the length is 0) that
/// nothing else reads or writes while the result lives.
pub(super) unsafe fn bytes_mut<'a>(b: &SecBuffer) -> &'a mut [u8] {
    if b.cbBuffer == 0 || b.pvBuffer.is_null() {
        return &mut [];
    }
    // SAFETY: per the caller.
    unsafe { std::slice::from_raw_parts_mut(b.pvBuffer.cast::<u8>(), b.cbBuffer as usize) }
}

/// Copy `data` to the start of a buffer.
///
/// # Safety
/// `b.pvBuffer` holds at least `data.len()` bytes.
pub(super) unsafe fn copy_to(b: &SecBuffer, data: &[u8]) {
    if !data.is_empty() {
        // SAFETY: per the caller; caller and provider memory do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), b.pvBuffer.cast::<u8>(), data.len())
        };
    }
}
