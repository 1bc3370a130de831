//! The record layer: ENCRYPT (synchronous, records sealed straight into the
//! request's output), DECRYPT and SHUTDOWN (pended like STEP: a
//! post-handshake message, and close_notify, go through the async handshake
//! call), and what a record-layer refusal completes a request with.

use crate::device::{FileId, Request, Shared};
use crate::ntstatus::*;
use ksspi::engine::{Platform, RecordError, Session};
use ksspi::provider::SspiProvider;
use ksspi::{Passive, SecStatus};
use ksspi_abi::*;

impl<P: SspiProvider, K: Platform, R: Request> Shared<P, K, R> {
    pub(in crate::device) fn encrypt(
        &self,
        file: FileId,
        input: &[u8],
        mut request: R,
        at: &Passive,
    ) {
        let EncryptRequest(m) = match decode::<EncryptRequest>(input) {
            Ok(m) => m,
            Err(e) => return request.complete(e.ntstatus(), &[]),
        };
        if request.output_capacity() < encrypt_reply_capacity(m.bytes.len()) {
            return request.complete(STATUS_BUFFER_TOO_SMALL, &[]);
        }
        // The records are sealed straight into the request's output. The
        // session is free again before the request completes: the caller
        // woken by the completion may send its next request at once.
        let session = match self.begin_sync(file, m.session) {
            Ok(s) => s,
            Err(status) => return request.complete(status, &[]),
        };
        let (status, len) = self.encrypt_into(file, &m, &session, request.output(), at);
        self.end_sync(file, m.session);
        request.complete_written(status, len);
    }

    /// ENCRYPT's reply written into `out`: the status and length to complete
    /// the request with.
    pub(in crate::device) fn encrypt_into(
        &self,
        file: FileId,
        m: &RecordRequest<'_>,
        session: &Session<P, K>,
        out: &mut [u8],
        at: &Passive,
    ) -> (NtStatus, usize) {
        let Some((head, tail)) = out.split_at_mut_checked(EncryptReply::DATA_OFFSET) else {
            return (STATUS_BUFFER_TOO_SMALL, 0);
        };
        match session.encrypt(m.bytes, tail, at) {
            Ok(sealed) => {
                let n = sealed.len;
                let reply = EncryptReply {
                    status: 0,
                    records: sealed.records as u32,
                    output: &tail[..n],
                };
                match encode_prefix(&reply, head) {
                    Ok(EncryptReply::DATA_OFFSET) => {
                        (STATUS_SUCCESS, EncryptReply::DATA_OFFSET + n)
                    }
                    _ => (STATUS_BUFFER_TOO_SMALL, 0),
                }
            }
            Err(e) => match record_refusal(self.sync_refusal(file, m.session, e)) {
                Ok(status) => (status, 0),
                Err(status) => write_reply(
                    out,
                    &EncryptReply {
                        status: status.0,
                        records: 0,
                        output: &[],
                    },
                ),
            },
        }
    }

    pub(in crate::device) fn decrypt(&self, file: FileId, input: &[u8], request: R, at: &Passive) {
        match decode::<DecryptRequest>(input) {
            Ok(DecryptRequest(m)) => {
                self.record_move(file, m.session, request, |s| s.decrypt(m.bytes, at))
            }
            Err(e) => request.complete(e.ntstatus(), &[]),
        }
    }

    pub(in crate::device) fn shutdown(&self, file: FileId, input: &[u8], request: R, at: &Passive) {
        match decode::<ShutdownRequest>(input) {
            Ok(m) => self.record_move(file, m.session, request, |s| s.shutdown(at)),
            Err(e) => request.complete(e.ntstatus(), &[]),
        }
    }

    /// DECRYPT and SHUTDOWN: check the output buffer, pend the request on
    /// the session, start the engine's move (`start`); a refusal completes
    /// the request at once.
    pub(in crate::device) fn record_move(
        &self,
        file: FileId,
        id: SessionId,
        request: R,
        start: impl FnOnce(&Session<P, K>) -> Result<(), RecordError>,
    ) {
        let limits = &self.config.limits;
        if request.output_capacity() < record_reply_capacity(limits.max_input, limits.max_output) {
            return request.complete(STATUS_BUFFER_TOO_SMALL, &[]);
        }
        let Some(session) = self.pend_on(file, id, request) else {
            return;
        };
        if let Err(e) = start(&session) {
            self.unpend(file, id, record_refusal(e));
        }
    }
}

/// What a record-layer refusal completes the request with: an NTSTATUS for a
/// request that does not fit the session's state, a reply carrying the
/// SECURITY_STATUS for a session whose TLS failed.
pub(in crate::device) fn record_refusal(e: RecordError) -> Result<NtStatus, SecStatus> {
    match e {
        RecordError::Busy => Ok(STATUS_DEVICE_BUSY),
        RecordError::Closed => Ok(STATUS_INVALID_HANDLE),
        RecordError::NotEstablished | RecordError::PeerClosed | RecordError::ShutDown => {
            Ok(STATUS_INVALID_DEVICE_STATE)
        }
        RecordError::TooMuchInput => Ok(STATUS_QUOTA_EXCEEDED),
        RecordError::OutputTooSmall => Ok(STATUS_BUFFER_TOO_SMALL),
        RecordError::InsufficientResources => Ok(STATUS_INSUFFICIENT_RESOURCES),
        RecordError::Failed(status) => Err(status),
    }
}

/// A [`RecordReply`] for a record-layer failure.
pub(in crate::device) fn failed_record(status: SecStatus) -> RecordReply<'static> {
    RecordReply {
        status: status.0,
        outcome: RecordOutcome::Failed,
        missing: 0,
        renegotiations: 0,
        data: &[],
        output: &[],
    }
}

/// Encode `m` into `out`: the status and length to complete with (a reply
/// that does not fit is `STATUS_BUFFER_TOO_SMALL`, with nothing written).
fn write_reply<'a, M: Message<'a>>(out: &mut [u8], m: &M) -> (NtStatus, usize) {
    match encode(m, out) {
        Ok(n) => (STATUS_SUCCESS, n),
        Err(_) => (STATUS_BUFFER_TOO_SMALL, 0),
    }
}
