//! The security-context calls: one handshake step of
//! `SspiInitializeSecurityContextAsyncW` / `SspiAcceptSecurityContextAsync`
//! over model Schannel (the input token in; the output token, alert,
//! EXTRA / MISSING and attributes out; the new context's handle), and
//! `SspiDeleteSecurityContextAsync`.

use super::tables::HANDLE_MAGIC_CTXT;
use super::SimProvider;
use crate::edge::{self, CallPtr};
use crate::kernel::{bugcheck, Bugcheck};
use crate::schannel::{Context, Step};
use crate::verifier::{FaultKind, Tag};
use ksspi::sys::*;
use ksspi::SecStatus;
use std::sync::{Arc, Mutex};

impl SimProvider {
    /// One handshake step (accept or initialize), run when the call completes.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn handshake(
        &self,
        server: bool,
        credential: CallPtr<SecHandle>,
        context: CallPtr<SecHandle>,
        target: Option<String>,
        req: u32,
        input: CallPtr<SecBufferDesc>,
        new_context: CallPtr<SecHandle>,
        output: CallPtr<SecBufferDesc>,
        attrs: CallPtr<u32>,
    ) -> SecStatus {
        let cred = match self.credential(credential.0) {
            Ok(c) => c,
            Err(s) => return s,
        };
        let existing = match self.security_context(context.0) {
            Ok(e) => e,
            Err(s) => return s,
        };
        // SAFETY: the descriptors are valid until completion (the call's contract).
        let inputs = match unsafe { edge::buffers(input.0) } {
            Ok(b) => b,
            Err(s) => return s,
        };
        // SAFETY: as above.
        let outputs = match unsafe { edge::buffers(output.0) } {
            Ok(b) => b,
            Err(s) => return s,
        };
        // Read in place, as Schannel reads its caller's token: the step
        // copies what it keeps.
        let token_in: &[u8] = match inputs.iter().find(|b| b.kind() == SECBUFFER_TOKEN) {
            // SAFETY: the input token's bytes are valid until completion,
            // and nothing writes them before the step below is done.
            Some(b) => match unsafe { edge::bytes(b) } {
                Ok(bytes) => bytes,
                Err(s) => return s,
            },
            None => &[],
        };
        // SECBUFFER_APPLICATION_PROTOCOLS, checked on every call that has
        // one, taken by the call that creates the context.
        let alpn = match inputs
            .iter()
            .find(|b| b.kind() == SECBUFFER_APPLICATION_PROTOCOLS)
        {
            // SAFETY: the input buffer's bytes are valid until completion.
            Some(b) => match unsafe { edge::bytes(b) }
                .and_then(|bytes| ksspi::alpn::parse_buffer(bytes).map(|l| l.map(<[u8]>::to_vec)))
            {
                Ok(list) => list,
                Err(s) => return s,
            },
            None => None,
        };
        let (entry, fresh) = match existing {
            Some(e) => (e, false),
            None => {
                let made = if server {
                    Context::server_alpn(&cred, req & ASC_REQ_MUTUAL_AUTH != 0, alpn.as_deref())
                } else {
                    Context::client_alpn(&cred, target.as_deref(), alpn.as_deref())
                };
                match made {
                    Ok(c) => (Arc::new(Mutex::new(c)), true),
                    Err(s) => return s,
                }
            }
        };
        let mut step: Step = entry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .step(token_in);
        let allocate = if server {
            req & ASC_REQ_ALLOCATE_MEMORY != 0
        } else {
            req & ISC_REQ_ALLOCATE_MEMORY != 0
        };
        let extended = if server {
            req & ASC_REQ_EXTENDED_ERROR != 0
        } else {
            req & ISC_REQ_EXTENDED_ERROR != 0
        };
        let mut status = step.status;
        // Output token (or the alert, on failure with extended errors).
        let send_alert = status.is_error() && extended;
        let out_bytes: &[u8] = if send_alert { &step.alert } else { &step.token };
        if let Some(buf) = outputs.iter_mut().find(|b| b.kind() == SECBUFFER_TOKEN) {
            if allocate {
                if out_bytes.is_empty() {
                    buf.pvBuffer = std::ptr::null_mut();
                    buf.cbBuffer = 0;
                } else if self.0.verifier.fault_point(FaultKind::Allocation) {
                    status = SecStatus::SEC_E_INSUFFICIENT_MEMORY;
                    buf.pvBuffer = std::ptr::null_mut();
                    buf.cbBuffer = 0;
                } else {
                    // The step's own bytes become the caller's buffer (no
                    // second copy); the alert is still wanted below.
                    let mut mem: Box<[u8]> = if send_alert {
                        out_bytes.into()
                    } else {
                        std::mem::take(&mut step.token).into_boxed_slice()
                    };
                    let id = self.0.verifier.track(Tag::ContextBuffer, "output token");
                    buf.pvBuffer = mem.as_mut_ptr().cast();
                    buf.cbBuffer = mem.len() as u32;
                    self.tables()
                        .buffers
                        .insert(mem.as_ptr() as usize, (id, mem));
                }
            // SAFETY: a caller-supplied token buffer, valid until completion.
            } else if !unsafe { edge::write_into(buf, out_bytes) } {
                buf.cbBuffer = 0;
                status = SecStatus::SEC_E_BUFFER_TOO_SMALL;
            }
        } else if !out_bytes.is_empty() && !status.is_error() {
            status = SecStatus::SEC_E_INVALID_PARAMETER;
        }
        if let Some(buf) = outputs.iter_mut().find(|b| b.kind() == SECBUFFER_ALERT) {
            // SAFETY: a caller-supplied alert buffer, valid until completion.
            if !step.alert.is_empty() && !unsafe { edge::write_into(buf, &step.alert) } {
                buf.cbBuffer = 0;
            }
        }
        // EXTRA or MISSING go into the first empty input slot after the token.
        if let Some(slot) = inputs
            .iter_mut()
            .skip(1)
            .find(|b| b.kind() == SECBUFFER_EMPTY)
        {
            if status == SecStatus::SEC_E_INCOMPLETE_MESSAGE {
                slot.BufferType = SECBUFFER_MISSING;
                slot.cbBuffer = step.missing as u32;
            } else if step.extra > 0 {
                slot.BufferType = SECBUFFER_EXTRA;
                slot.cbBuffer = step.extra as u32;
            }
        }
        // SAFETY: the attribute word is valid until completion, or null.
        if let Some(a) = unsafe { attrs.0.as_mut() } {
            let (base, alloc_ret, ext_ret) = if server {
                (
                    ASC_RET_CONFIDENTIALITY | ASC_RET_STREAM,
                    ASC_RET_ALLOCATED_MEMORY,
                    ASC_RET_EXTENDED_ERROR,
                )
            } else {
                (
                    ISC_RET_CONFIDENTIALITY | ISC_RET_STREAM,
                    ISC_RET_ALLOCATED_MEMORY,
                    ISC_RET_EXTENDED_ERROR,
                )
            };
            *a = base | if allocate { alloc_ret } else { 0 } | if extended { ext_ret } else { 0 };
        }
        // A first call creates the security context, unless it only asked for
        // more input (the next call passes NULL again, as Schannel expects) or
        // failed outright.
        if fresh && !status.is_error() {
            let (key, id) = self.new_handle(
                Tag::SecurityContext,
                if server {
                    "server security context"
                } else {
                    "client security context"
                },
            );
            self.tables().security.insert(key, (id, entry));
            // SAFETY: the new-context slot is valid until completion.
            if let Some(h) = unsafe { new_context.0.as_mut() } {
                *h = SecHandle {
                    dwLower: key,
                    dwUpper: HANDLE_MAGIC_CTXT,
                };
            } else {
                // Nowhere to return it: undo, and fail the call.
                if let Some((id, _)) = self.tables().security.remove(&key) {
                    self.0.verifier.untrack(Tag::SecurityContext, id);
                }
                return SecStatus::SEC_E_INVALID_PARAMETER;
            }
        } else if !fresh {
            // SAFETY: as above; later calls hand back the same handle.
            let h = unsafe { new_context.0.as_mut() };
            // SAFETY: the existing-context handle is valid for the call.
            let old = unsafe { context.0.as_ref() };
            if let (Some(h), Some(old)) = (h, old) {
                *h = *old;
            }
        }
        status
    }
}

/// `SspiDeleteSecurityContextAsync` on the handle read at issue: stops on a
/// double delete.
pub(super) fn delete(sim: &SimProvider, handle: Option<SecHandle>) -> SecStatus {
    let Some(h) = handle.filter(|h| h.dwUpper == HANDLE_MAGIC_CTXT) else {
        return SecStatus::SEC_E_INVALID_HANDLE;
    };
    let removed = sim.tables().security.remove(&h.dwLower);
    match removed {
        Some((id, _)) => {
            sim.0.verifier.untrack(Tag::SecurityContext, id);
            SecStatus::SEC_E_OK
        }
        None => bugcheck(
            Bugcheck::DriverVerifierDetectedViolation,
            format_args!(
                "SspiDeleteSecurityContextAsync on context {:#x}, already deleted (double free)",
                h.dwLower
            ),
        ),
    }
}
