//! The record-layer calls: `EncryptMessage` and `DecryptMessage` (in place,
//! through the caller's SecBuffers) and `ApplyControlToken`
//! (`SCHANNEL_SHUTDOWN`).

use super::buffers::{bytes, bytes_mut, copy_to, record_buffers};
use super::SimProvider;
use crate::kernel;
use crate::verifier::FaultKind;
use ksspi::sys::*;
use ksspi::SecStatus;

impl SimProvider {
    /// `EncryptMessage`: one record of the DATA buffer's bytes, into the
    /// STREAM_HEADER, DATA and STREAM_TRAILER buffers.
    ///
    /// # Safety
    /// As `SspiProvider::encrypt_message`: `context` and `message` are valid
    /// for the call.
    pub(super) unsafe fn encrypt(
        &self,
        context: *mut SecHandle,
        message: *mut SecBufferDesc,
    ) -> SecStatus {
        kernel::require_passive("EncryptMessage");
        if self.0.verifier.fault_point(FaultKind::Call) {
            // Low resources: the call fails before it touches the context.
            return SecStatus::SEC_E_INSUFFICIENT_MEMORY;
        }
        let entry = match self.live_context(context) {
            Ok(e) => e,
            Err(status) => return status,
        };
        // SAFETY: the caller passes a descriptor valid for the call.
        let Some(buffers) = (unsafe { record_buffers(message) }) else {
            return SecStatus::SEC_E_INVALID_TOKEN;
        };
        let find = |kind: u32| buffers.iter().position(|b| b.kind() == kind);
        let (Some(h), Some(d), Some(t)) = (
            find(SECBUFFER_STREAM_HEADER),
            find(SECBUFFER_DATA),
            find(SECBUFFER_STREAM_TRAILER),
        ) else {
            return SecStatus::SEC_E_INVALID_TOKEN;
        };
        let mut ctx = entry.lock().unwrap_or_else(|e| e.into_inner());
        let Some(sizes) = ctx.stream_sizes() else {
            return SecStatus::SEC_E_INVALID_HANDLE;
        };
        let n = buffers[d].cbBuffer as usize;
        if (buffers[h].cbBuffer as usize) < sizes.header
            || (buffers[t].cbBuffer as usize) < sizes.trailer
            || n > sizes.max_message
            || (n > 0 && buffers[d].pvBuffer.is_null())
        {
            return SecStatus::SEC_E_BUFFER_TOO_SMALL;
        }
        // SAFETY: the caller's DATA buffer holds `n` bytes, which nothing
        // writes while the context seals them (into its own scratch buffer).
        let data = unsafe { bytes(&buffers[d]) };
        // The record lies in the context's scratch buffer: no allocation, and
        // one copy out to the caller's buffers.
        let record = match ctx.encrypt(data) {
            Ok(r) => r,
            Err(status) => return status,
        };
        // A whole record of the stream sizes, or none for no data.
        let (head, body, tail) = match record.len() {
            0 => (&[][..], &[][..], &[][..]),
            len => {
                debug_assert_eq!(len, sizes.header + n + sizes.trailer);
                let (head, rest) = record.split_at(sizes.header);
                let (body, tail) = rest.split_at(n);
                (head, body, tail)
            }
        };
        // SAFETY: the header buffer holds at least what is copied (checked
        // above), and the record is in the context's memory, not the caller's.
        unsafe { copy_to(&buffers[h], head) };
        // SAFETY: likewise the data buffer.
        unsafe { copy_to(&buffers[d], body) };
        // SAFETY: likewise the trailer buffer.
        unsafe { copy_to(&buffers[t], tail) };
        buffers[h].cbBuffer = head.len() as u32;
        buffers[t].cbBuffer = tail.len() as u32;
        SecStatus::SEC_E_OK
    }

    /// `DecryptMessage`: the first record of the DATA buffer, decrypted in
    /// place; the results in the first three EMPTY buffers.
    ///
    /// # Safety
    /// As `SspiProvider::decrypt_message`: `context`, `message` and `qop`
    /// (or null) are valid for the call.
    pub(super) unsafe fn decrypt(
        &self,
        context: *mut SecHandle,
        message: *mut SecBufferDesc,
        qop: *mut u32,
    ) -> SecStatus {
        kernel::require_passive("DecryptMessage");
        if self.0.verifier.fault_point(FaultKind::Call) {
            // Low resources: the call fails before it touches the context.
            return SecStatus::SEC_E_INSUFFICIENT_MEMORY;
        }
        let entry = match self.live_context(context) {
            Ok(e) => e,
            Err(status) => return status,
        };
        // SAFETY: the caller passes a descriptor valid for the call.
        let Some(buffers) = (unsafe { record_buffers(message) }) else {
            return SecStatus::SEC_E_INVALID_TOKEN;
        };
        let Some(d) = buffers.iter().position(|b| b.kind() == SECBUFFER_DATA) else {
            return SecStatus::SEC_E_INVALID_TOKEN;
        };
        // The first three EMPTY buffers take the results, as Schannel's do.
        let mut empty = [0usize; 3];
        let mut found = 0;
        for (i, b) in buffers.iter().enumerate() {
            if found < empty.len() && b.kind() == SECBUFFER_EMPTY {
                empty[found] = i;
                found += 1;
            }
        }
        if found < empty.len() || (buffers[d].cbBuffer > 0 && buffers[d].pvBuffer.is_null()) {
            return SecStatus::SEC_E_INVALID_TOKEN;
        }
        let base = buffers[d].pvBuffer.cast::<u8>();
        // SAFETY: the caller's DATA buffer holds its cbBuffer bytes, which it
        // hands over for the call: DecryptMessage decrypts them in place.
        let input = unsafe { bytes_mut(&buffers[d]) };
        let len = input.len();
        let u = entry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .decrypt(input);
        if !qop.is_null() {
            // SAFETY: the caller's out-parameter.
            unsafe { qop.write(0) };
        }
        let set = |b: &mut SecBuffer, kind: u32, at: usize, len: usize| {
            b.BufferType = kind;
            // SAFETY: `at` is within the caller's DATA buffer.
            b.pvBuffer = unsafe { base.add(at) }.cast();
            b.cbBuffer = len as u32;
        };
        match u.status {
            SecStatus::SEC_E_OK => {
                // The plaintext lies in place, between the header and the
                // trailer of the record at the start of the DATA buffer.
                let (header, data, trailer) = (u.data.start, u.data.len(), u.record - u.data.end);
                set(&mut buffers[d], SECBUFFER_STREAM_HEADER, 0, header);
                set(&mut buffers[empty[0]], SECBUFFER_DATA, header, data);
                set(
                    &mut buffers[empty[1]],
                    SECBUFFER_STREAM_TRAILER,
                    u.data.end,
                    trailer,
                );
                if u.extra > 0 {
                    set(&mut buffers[empty[2]], SECBUFFER_EXTRA, u.record, u.extra);
                }
            }
            SecStatus::SEC_E_INCOMPLETE_MESSAGE => {
                buffers[empty[0]].BufferType = SECBUFFER_MISSING;
                buffers[empty[0]].cbBuffer = u.missing as u32;
            }
            SecStatus::SEC_I_RENEGOTIATE | SecStatus::SEC_I_CONTEXT_EXPIRED if u.extra > 0 => {
                let at = len - u.extra;
                set(&mut buffers[empty[0]], SECBUFFER_EXTRA, at, u.extra);
            }
            _ => {}
        }
        u.status
    }

    /// `ApplyControlToken`: `SCHANNEL_SHUTDOWN` only.
    ///
    /// # Safety
    /// As `SspiProvider::apply_control_token`: `context` and `input` are
    /// valid for the call.
    pub(super) unsafe fn apply_control(
        &self,
        context: *mut SecHandle,
        input: *mut SecBufferDesc,
    ) -> SecStatus {
        kernel::require_passive("ApplyControlToken");
        if self.0.verifier.fault_point(FaultKind::Call) {
            // Low resources: the call fails before it touches the context.
            return SecStatus::SEC_E_INSUFFICIENT_MEMORY;
        }
        let entry = match self.live_context(context) {
            Ok(e) => e,
            Err(status) => return status,
        };
        // SAFETY: the caller passes a descriptor valid for the call.
        let Some(buffers) = (unsafe { record_buffers(input) }) else {
            return SecStatus::SEC_E_INVALID_TOKEN;
        };
        let token = buffers
            .iter()
            .find(|b| b.kind() == SECBUFFER_TOKEN && b.cbBuffer >= 4 && !b.pvBuffer.is_null());
        let Some(token) = token else {
            return SecStatus::SEC_E_INVALID_TOKEN;
        };
        // SAFETY: a TOKEN buffer of at least 4 bytes.
        let control = u32::from_le_bytes(unsafe { bytes(token) }[..4].try_into().unwrap());
        if control != SCHANNEL_SHUTDOWN {
            return SecStatus::SEC_E_UNSUPPORTED_FUNCTION;
        }
        let status = entry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .apply_shutdown();
        status
    }
}
