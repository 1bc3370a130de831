//! The synchronous calls on an established security context: stream sizes,
//! `EncryptMessage` into one record, `DecryptMessage` of one record in place,
//! and `ApplyControlToken(SCHANNEL_SHUTDOWN)`.
//!
//! Each takes the [`HandleSlot`] that holds the security context, which its
//! owner is not using in an async call at the time (the engine calls these
//! only as the session's owner, between calls), and plain slices: the raw
//! descriptors live on the stack for the duration of the call only.

use super::HandleSlot;
use crate::provider::SspiProvider;
use crate::status::SecStatus;
use crate::sys::*;
use core::ptr;

/// `SECPKG_ATTR_STREAM_SIZES`, in the units the record layer works in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamSizes {
    /// Bytes before the data in a record (`cbHeader`).
    pub header: usize,
    /// Bytes after the data, at most (`cbTrailer`).
    pub trailer: usize,
    /// Largest plaintext in one record (`cbMaximumMessage`).
    pub max_message: usize,
}

impl StreamSizes {
    /// Bytes `n` bytes of plaintext take once sealed into records of at most
    /// `max_message` bytes each; `None` on overflow.
    pub fn sealed_len(&self, n: usize) -> Option<usize> {
        let records = n.div_ceil(self.max_message.max(1));
        records
            .checked_mul(self.header + self.trailer)?
            .checked_add(n)
    }
}

/// `QueryContextAttributesW(SECPKG_ATTR_STREAM_SIZES)` on an established context.
pub fn query_stream_sizes<P: SspiProvider>(
    provider: &P,
    context: &HandleSlot,
) -> Result<StreamSizes, SecStatus> {
    let mut sizes = SecPkgContext_StreamSizes::default();
    // SAFETY: the slot holds a live security context its owner is not using
    // in a call right now, and `sizes` is the structure the attribute names.
    let status = unsafe {
        provider.query_context_attributes(
            context.as_ptr(),
            SECPKG_ATTR_STREAM_SIZES,
            (&mut sizes as *mut SecPkgContext_StreamSizes).cast(),
        )
    };
    status.ok()?;
    if sizes.cbMaximumMessage == 0 {
        return Err(SecStatus::SEC_E_INTERNAL_ERROR);
    }
    Ok(StreamSizes {
        header: sizes.cbHeader as usize,
        trailer: sizes.cbTrailer as usize,
        max_message: sizes.cbMaximumMessage as usize,
    })
}

/// `EncryptMessage` of one record, in place: `record` holds `sizes.header`
/// bytes of room, then the `data_len` bytes of plaintext, then at least
/// `sizes.trailer` bytes of room. On success the record is compacted to the
/// start of `record` and its length returned (Schannel may use less trailer
/// than it reserved).
pub fn encrypt_record<P: SspiProvider>(
    provider: &P,
    context: &HandleSlot,
    sizes: &StreamSizes,
    record: &mut [u8],
    data_len: usize,
) -> Result<usize, SecStatus> {
    let (h, t) = (sizes.header, sizes.trailer);
    if data_len > sizes.max_message || record.len() < h + data_len + t {
        return Err(SecStatus::SEC_E_BUFFER_TOO_SMALL);
    }
    let base = record.as_mut_ptr();
    let head = base;
    // SAFETY: `h <= record.len()` (checked above), so the offset stays
    // within `record`'s allocation.
    let data = unsafe { base.add(h) };
    // SAFETY: `h + data_len <= record.len()` (checked above), likewise.
    let tail = unsafe { base.add(h + data_len) };
    let mut bufs = [
        SecBuffer {
            cbBuffer: h as u32,
            BufferType: SECBUFFER_STREAM_HEADER,
            pvBuffer: head.cast(),
        },
        SecBuffer {
            cbBuffer: data_len as u32,
            BufferType: SECBUFFER_DATA,
            pvBuffer: data.cast(),
        },
        SecBuffer {
            cbBuffer: t as u32,
            BufferType: SECBUFFER_STREAM_TRAILER,
            pvBuffer: tail.cast(),
        },
        SecBuffer::empty(SECBUFFER_EMPTY),
    ];
    let mut desc = SecBufferDesc::new(&mut bufs);
    // SAFETY: the context is live and not in a call; the descriptor and the
    // buffers it points to (all within `record`) outlive the call.
    let status = unsafe { provider.encrypt_message(context.as_ptr(), 0, &mut desc, 0) };
    status.ok()?;
    let (hl, dl, tl) = (
        bufs[0].cbBuffer as usize,
        bufs[1].cbBuffer as usize,
        bufs[2].cbBuffer as usize,
    );
    if hl > h || dl != data_len || tl > t {
        return Err(SecStatus::SEC_E_INTERNAL_ERROR);
    }
    // Close the gaps a shorter header or trailer left.
    if hl < h {
        record.copy_within(h..h + dl + tl, hl);
    }
    Ok(hl + dl + tl)
}

/// What `DecryptMessage` made of the start of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decrypted {
    /// `SEC_E_OK`, `SEC_E_INCOMPLETE_MESSAGE`, `SEC_I_RENEGOTIATE`,
    /// `SEC_I_CONTEXT_EXPIRED` or an error.
    pub status: SecStatus,
    /// With `SEC_E_OK`: where the plaintext now lies in the buffer (offset, length).
    pub data: (usize, usize),
    /// `SECBUFFER_EXTRA`: bytes at the end of the buffer not consumed (with
    /// `SEC_I_RENEGOTIATE`, the handshake record onwards).
    pub extra: Option<usize>,
    /// `SECBUFFER_MISSING` with `SEC_E_INCOMPLETE_MESSAGE` (0 if not said).
    pub missing: u32,
}

/// `DecryptMessage` of the first record in `buf`, in place.
pub fn decrypt_record<P: SspiProvider>(
    provider: &P,
    context: &HandleSlot,
    buf: &mut [u8],
) -> Decrypted {
    let len = buf.len();
    let base = buf.as_mut_ptr();
    let mut bufs = [
        SecBuffer {
            cbBuffer: len as u32,
            BufferType: SECBUFFER_DATA,
            pvBuffer: base.cast(),
        },
        SecBuffer::empty(SECBUFFER_EMPTY),
        SecBuffer::empty(SECBUFFER_EMPTY),
        SecBuffer::empty(SECBUFFER_EMPTY),
    ];
    let mut desc = SecBufferDesc::new(&mut bufs);
    // SAFETY: the context is live and not in a call; the descriptor and `buf`
    // outlive the call; the provider rewrites the buffers to point into `buf`.
    let mut status =
        unsafe { provider.decrypt_message(context.as_ptr(), &mut desc, 0, ptr::null_mut()) };
    let mut out = Decrypted {
        status,
        data: (0, 0),
        extra: None,
        missing: 0,
    };
    for b in &bufs {
        match b.kind() {
            SECBUFFER_EXTRA if (b.cbBuffer as usize) <= len => {
                out.extra = Some(b.cbBuffer as usize);
            }
            SECBUFFER_EXTRA => status = SecStatus::SEC_E_INTERNAL_ERROR,
            SECBUFFER_MISSING => out.missing = b.cbBuffer,
            _ => {}
        }
    }
    if status == SecStatus::SEC_E_OK {
        // A DATA buffer pointing into the record consumed: `buf` less what
        // EXTRA says follows it (plaintext reaching into EXTRA would overlap
        // the next record, which the caller decrypts next, in place).
        let record = len - out.extra.unwrap_or(0);
        let data = bufs.iter().find(|b| b.kind() == SECBUFFER_DATA);
        let at = data.map(|b| (b.pvBuffer as usize).wrapping_sub(base as usize));
        match (data, at) {
            (Some(b), Some(at)) if at <= record && b.cbBuffer as usize <= record - at => {
                out.data = (at, b.cbBuffer as usize);
            }
            _ => status = SecStatus::SEC_E_INTERNAL_ERROR,
        }
    }
    out.status = status;
    out
}

/// `ApplyControlToken(SCHANNEL_SHUTDOWN)`: the next handshake call on the
/// context produces close_notify.
pub fn apply_shutdown<P: SspiProvider>(provider: &P, context: &HandleSlot) -> SecStatus {
    let mut control = SCHANNEL_SHUTDOWN.to_le_bytes();
    let mut bufs = [SecBuffer {
        cbBuffer: control.len() as u32,
        BufferType: SECBUFFER_TOKEN,
        pvBuffer: control.as_mut_ptr().cast(),
    }];
    let mut desc = SecBufferDesc::new(&mut bufs);
    // SAFETY: the context is live and not in a call; the descriptor and the
    // 4-byte control word outlive the call.
    unsafe { provider.apply_control_token(context.as_ptr(), &mut desc) }
}

/// `QueryContextAttributesW(SECPKG_ATTR_REMOTE_CERTIFICATES)`: the peer's
/// certificates, leaf first, each handed to `each` as DER; returns how many
/// there were. The provider's buffer is freed (`FreeContextBuffer`) before
/// this returns, whatever it held. A malformed chain is
/// `SEC_E_INTERNAL_ERROR`; no certificate is the provider's status
/// (`SEC_E_NO_CREDENTIALS` from Schannel).
pub fn query_remote_certificates<P: SspiProvider>(
    provider: &P,
    context: &HandleSlot,
    mut each: impl FnMut(&[u8]),
) -> Result<u32, SecStatus> {
    let mut chain = SecPkgContext_Certificates {
        cCertificates: 0,
        cbCertificateChain: 0,
        pbCertificateChain: ptr::null_mut(),
    };
    // SAFETY: the slot holds a live security context its owner is not using
    // in a call right now, and `chain` is the structure the attribute names.
    let status = unsafe {
        provider.query_context_attributes(
            context.as_ptr(),
            SECPKG_ATTR_REMOTE_CERTIFICATES,
            (&mut chain as *mut SecPkgContext_Certificates).cast(),
        )
    };
    if status.is_error() {
        return Err(status);
    }
    if chain.pbCertificateChain.is_null() {
        return if chain.cCertificates == 0 {
            Ok(0)
        } else {
            Err(SecStatus::SEC_E_INTERNAL_ERROR)
        };
    }
    let result = {
        // SAFETY: the provider returned `cbCertificateChain` bytes at
        // `pbCertificateChain`, valid until FreeContextBuffer below.
        let blob = unsafe {
            core::slice::from_raw_parts(chain.pbCertificateChain, chain.cbCertificateChain as usize)
        };
        walk_chain(blob, chain.cCertificates, &mut each)
    };
    // SAFETY: the provider allocated the buffer for this query; nothing uses it now.
    let _ = unsafe { provider.free_context_buffer(chain.pbCertificateChain.cast()) };
    result
}

/// Split a `SecPkgContext_Certificates` blob: `count` entries of a 4-byte
/// little-endian length and DER.
fn walk_chain(mut blob: &[u8], count: u32, each: &mut impl FnMut(&[u8])) -> Result<u32, SecStatus> {
    for _ in 0..count {
        let Some((len, rest)) = blob.split_first_chunk::<4>() else {
            return Err(SecStatus::SEC_E_INTERNAL_ERROR);
        };
        let len = u32::from_le_bytes(*len) as usize;
        if len == 0 || len > rest.len() {
            return Err(SecStatus::SEC_E_INTERNAL_ERROR);
        }
        let (der, rest) = rest.split_at(len);
        each(der);
        blob = rest;
    }
    if blob.is_empty() {
        Ok(count)
    } else {
        Err(SecStatus::SEC_E_INTERNAL_ERROR)
    }
}

#[cfg(test)]
mod chain_tests {
    use super::walk_chain;
    use crate::status::SecStatus;
    use alloc::vec::Vec;

    #[test]
    fn a_chain_blob_splits_into_its_certificates_and_a_bad_one_is_refused() {
        let mut blob = Vec::new();
        for der in [&b"\x30leaf"[..], &b"\x30ca"[..]] {
            blob.extend_from_slice(&(der.len() as u32).to_le_bytes());
            blob.extend_from_slice(der);
        }
        let mut seen = Vec::new();
        assert_eq!(
            walk_chain(&blob, 2, &mut |d: &[u8]| seen.push(d.to_vec())),
            Ok(2)
        );
        assert_eq!(seen, [b"\x30leaf".to_vec(), b"\x30ca".to_vec()]);
        let bad = SecStatus::SEC_E_INTERNAL_ERROR;
        assert_eq!(
            walk_chain(&blob, 3, &mut |_: &[u8]| {}),
            Err(bad),
            "fewer than said"
        );
        assert_eq!(
            walk_chain(&blob, 1, &mut |_: &[u8]| {}),
            Err(bad),
            "bytes left over"
        );
        assert_eq!(
            walk_chain(&blob[..7], 1, &mut |_: &[u8]| {}),
            Err(bad),
            "cut short"
        );
        assert_eq!(
            walk_chain(&[0, 0, 0, 0], 1, &mut |_: &[u8]| {}),
            Err(bad),
            "empty entry"
        );
    }
}
