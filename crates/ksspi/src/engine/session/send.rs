//! The send path: encrypt ([`TlsMachine::seal`], `EncryptMessage` per
//! record) and close_notify (`SCHANNEL_SHUTDOWN`, then the handshake call
//! that produces it). Its state, [`SendPath`], lives in an established
//! session ([`super::state::Established`]); nothing here touches the
//! receive path's.

use super::machine::TlsMachine;
use super::state::Op;
use super::{RecordError, RecordOutcome, Sealed};
use crate::engine::conductor::{EngineStats, Move, Platform};
use crate::handle::{apply_shutdown, encrypt_record, AsyncContext};
use crate::irql::Passive;
use crate::provider::SspiProvider;
use crate::status::SecStatus;

/// What the send direction of an established session knows.
pub(super) struct SendPath {
    /// close_notify was made: encrypt and shutdown are refused from now on.
    pub(super) close_sent: bool,
}

impl SendPath {
    pub(super) fn new() -> Self {
        SendPath { close_sent: false }
    }
}

impl<P: SspiProvider, K: Platform> TlsMachine<P, K> {
    /// Start a shutdown (refused unless established and close_notify was
    /// not made yet).
    pub(super) fn push_shutdown(&mut self) -> Result<(), RecordError> {
        if self.state.established()?.send.close_sent {
            return Err(RecordError::ShutDown);
        }
        self.begin_op(Op::Shutdown { issued: false });
        Ok(())
    }

    /// Seal `data` into `out` (EncryptMessage per record), as owner.
    pub(super) fn seal(&mut self, data: &[u8], out: &mut [u8]) -> Result<Sealed, RecordError> {
        if self.state.established()?.send.close_sent {
            return Err(RecordError::ShutDown);
        }
        let (Some(sizes), Some(slot)) = (self.sizes, self.sec.slot()) else {
            return Err(RecordError::Failed(SecStatus::SEC_E_INVALID_HANDLE));
        };
        if sizes.sealed_len(data.len()).is_none_or(|n| n > out.len()) {
            return Err(RecordError::OutputTooSmall);
        }
        let mut sealed = Sealed { len: 0, records: 0 };
        for chunk in data.chunks(sizes.max_message) {
            let room = sizes.header + chunk.len() + sizes.trailer;
            let record = &mut out[sealed.len..sealed.len + room];
            record[sizes.header..sizes.header + chunk.len()].copy_from_slice(chunk);
            sealed.len += encrypt_record(&self.provider, slot, &sizes, record, chunk.len())
                .map_err(RecordError::Failed)?;
            sealed.records += 1;
        }
        Ok(sealed)
    }

    /// Apply SCHANNEL_SHUTDOWN and make the call that produces close_notify.
    pub(super) fn begin_shutdown(
        &mut self,
        ctx: &mut Option<AsyncContext<P>>,
        at: &Passive,
        stats: &EngineStats,
    ) -> Move<P> {
        let Some(slot) = self.sec.slot() else {
            return self.fail(SecStatus::SEC_E_INVALID_HANDLE);
        };
        let status = apply_shutdown(&self.provider, slot);
        if status.is_error() {
            return self.fail(status);
        }
        self.op = Op::Shutdown { issued: true };
        // An empty token: what the peer sent stays for a later decrypt.
        self.issue_call(ctx, at, stats, 0, 0)
    }

    /// The handshake call that makes close_notify completed successfully
    /// (close_notify is in the output).
    pub(super) fn close_notify_made(&mut self) {
        if let Some(established) = self.state.established_mut() {
            established.send.close_sent = true;
        }
        self.record = Some(RecordOutcome::ShutDown);
    }
}
