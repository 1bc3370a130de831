//! `QueryContextAttributes`: connection info, stream sizes and the remote
//! certificates (in a provider buffer, freed with `FreeContextBuffer`).

use super::SimProvider;
use crate::verifier::{FaultKind, Tag};
use ksspi::sys::*;
use ksspi::SecStatus;
use std::ffi::c_void;

impl SimProvider {
    /// `QueryContextAttributes` for `attribute`.
    ///
    /// # Safety
    /// As `SspiProvider::query_context_attributes`: `context`, and `buffer`
    /// (or null) of the type `attribute` names, are valid for the call.
    pub(super) unsafe fn query_attribute(
        &self,
        context: *mut SecHandle,
        attribute: u32,
        buffer: *mut c_void,
    ) -> SecStatus {
        let entry = match self.live_context(context) {
            Ok(e) => e,
            Err(status) => return status,
        };
        let ctx = entry.lock().unwrap_or_else(|e| e.into_inner());
        match attribute {
            SECPKG_ATTR_CONNECTION_INFO if !buffer.is_null() => {
                let Some(protocol) = ctx.protocol() else {
                    return SecStatus::SEC_E_INVALID_HANDLE;
                };
                let suite = ctx.cipher_suite_name().unwrap_or("");
                let (cipher, strength) = if suite.contains("AES_256") {
                    (CALG_AES_256, 256)
                } else if suite.contains("AES_128") {
                    (CALG_AES_128, 128)
                } else {
                    (0, 256) // ChaCha20-Poly1305 has no ALG_ID
                };
                let hash = if suite.ends_with("SHA384") {
                    CALG_SHA_384
                } else {
                    CALG_SHA_256
                };
                let info = SecPkgContext_ConnectionInfo {
                    dwProtocol: protocol,
                    aiCipher: cipher,
                    dwCipherStrength: strength,
                    aiHash: hash,
                    dwHashStrength: if hash == CALG_SHA_384 { 384 } else { 256 },
                    aiExch: CALG_ECDH_EPHEM,
                    dwExchStrength: 256,
                };
                // SAFETY: the caller passed a SecPkgContext_ConnectionInfo for
                // this attribute (QueryContextAttributesW's contract).
                unsafe { buffer.cast::<SecPkgContext_ConnectionInfo>().write(info) };
                SecStatus::SEC_E_OK
            }
            SECPKG_ATTR_STREAM_SIZES if !buffer.is_null() => {
                let Some(sizes) = ctx.stream_sizes() else {
                    return SecStatus::SEC_E_INVALID_HANDLE;
                };
                let out = SecPkgContext_StreamSizes {
                    cbHeader: sizes.header as u32,
                    cbTrailer: sizes.trailer as u32,
                    cbMaximumMessage: sizes.max_message as u32,
                    cBuffers: 4,
                    cbBlockSize: 16,
                };
                // SAFETY: the caller passed a SecPkgContext_StreamSizes for
                // this attribute.
                unsafe { buffer.cast::<SecPkgContext_StreamSizes>().write(out) };
                SecStatus::SEC_E_OK
            }
            SECPKG_ATTR_REMOTE_CERTIFICATES if !buffer.is_null() => {
                // Kernel Schannel's form: a provider buffer of (u32 LE length,
                // DER) entries, leaf first, freed with FreeContextBuffer.
                if ctx.protocol().is_none() {
                    return SecStatus::SEC_E_INVALID_HANDLE;
                }
                let certs = ctx.peer_certificates();
                drop(ctx);
                if certs.is_empty() {
                    return SecStatus::SEC_E_NO_CREDENTIALS;
                }
                if self.0.verifier.fault_point(FaultKind::Allocation) {
                    return SecStatus::SEC_E_INSUFFICIENT_MEMORY;
                }
                let mut blob = Vec::new();
                for der in &certs {
                    blob.extend_from_slice(&(der.len() as u32).to_le_bytes());
                    blob.extend_from_slice(der);
                }
                let mut mem: Box<[u8]> = blob.into();
                let id = self
                    .0
                    .verifier
                    .track(Tag::ContextBuffer, "remote certificates");
                let out = SecPkgContext_Certificates {
                    cCertificates: certs.len() as u32,
                    cbCertificateChain: mem.len() as u32,
                    pbCertificateChain: mem.as_mut_ptr(),
                };
                self.tables()
                    .buffers
                    .insert(mem.as_ptr() as usize, (id, mem));
                // SAFETY: the caller passed a SecPkgContext_Certificates for
                // this attribute.
                unsafe { buffer.cast::<SecPkgContext_Certificates>().write(out) };
                SecStatus::SEC_E_OK
            }
            SECPKG_ATTR_APPLICATION_PROTOCOL if !buffer.is_null() => {
                let Some(info) = ctx.application_protocol() else {
                    return SecStatus::SEC_E_INVALID_HANDLE;
                };
                // SAFETY: the caller passed a SecPkgContext_ApplicationProtocol
                // for this attribute.
                unsafe {
                    buffer
                        .cast::<SecPkgContext_ApplicationProtocol>()
                        .write(info)
                };
                SecStatus::SEC_E_OK
            }
            SECPKG_ATTR_SESSION_INFO if !self.0.config.session_info_answered => {
                SecStatus::SEC_E_UNSUPPORTED_FUNCTION
            }
            SECPKG_ATTR_SESSION_INFO if !buffer.is_null() => {
                let Some(info) = ctx.session_info() else {
                    return SecStatus::SEC_E_INVALID_HANDLE;
                };
                // SAFETY: the caller passed a SecPkgContext_SessionInfo for
                // this attribute.
                unsafe { buffer.cast::<SecPkgContext_SessionInfo>().write(info) };
                SecStatus::SEC_E_OK
            }
            _ => SecStatus::SEC_E_UNSUPPORTED_FUNCTION,
        }
    }
}
