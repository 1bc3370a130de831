//! The continuation side: a session's events ([`SessionEvents`]) routed back
//! into its table entry. A move's report is encoded straight into the output
//! of the request pended for it (`Shared::write_reply`), `step_ready`
//! completes that request once the session can take the next move, and
//! `closed` removes the entry and lets go of the session's credentials.

use super::request::Request;
use super::Shared;
use crate::ntstatus::*;
use alloc::sync::Weak;
use core::sync::atomic::Ordering;
use ksspi::engine::{Outcome, Platform, RecordReport, Resumed, SessionEvents, StepReport};
use ksspi::provider::SspiProvider;
use ksspi::{Passive, SecStatus};
use ksspi_abi::*;

impl<P: SspiProvider, K: Platform, R: Request> Shared<P, K, R> {
    /// Encode a move's reply straight into the output of the request pended
    /// for it (none: cancelled meanwhile, nothing to write), for
    /// `step_ready` to complete. The reply (up to about 128 KiB) is written
    /// at PASSIVE_LEVEL outside the table lock: the request leaves the entry
    /// meanwhile (`writing` keeps the session busy), and a cancel that comes
    /// then finds it gone, as one racing its completion does.
    pub(super) fn write_reply<'a, M: Message<'a>>(&self, id: SessionId, reply: &M) {
        let taken = {
            let mut table = self.table.lock(&self.platform);
            table.entry_any_file(id).and_then(|entry| {
                entry.reply_len = 0;
                let request = entry.pending.take();
                entry.writing = request.is_some();
                request
            })
        };
        let Some(mut request) = taken else {
            return;
        };
        let len = encode(reply, request.output()).unwrap_or(0);
        let orphan = {
            let mut table = self.table.lock(&self.platform);
            match table.entry_any_file(id) {
                Some(entry) => {
                    entry.writing = false;
                    entry.reply_len = len;
                    entry.pending = Some(request);
                    None
                }
                // Not possible: the entry goes only once the session has
                // closed, after this move's report.
                None => Some(request),
            }
        };
        if let Some(request) = orphan {
            request.complete(STATUS_CANCELLED, &[]);
        }
    }
}

/// A session's events, routed to its table entry.
pub(super) struct EntryEvents<P: SspiProvider, K: Platform, R: Request> {
    pub(super) device: Weak<Shared<P, K, R>>,
    pub(super) id: SessionId,
    /// The session was opened with OPEN's grown layout
    /// ([`ClientAuth`]): its harness knows [`StepReply::flags`]. An older
    /// harness's replies keep the byte 0, as it expects.
    pub(super) reports_flags: bool,
    /// The session was opened with OPEN's fourth layout
    /// ([`SessionOptions`]): its established reply says whether the
    /// handshake resumed. Older layouts never see those bits.
    pub(super) reports_resumption: bool,
    /// The engine's bound on a step's output: a STEP's output buffer holds
    /// at least that much ([`step_reply_capacity`]), which is all the room
    /// the ALPN name has after the output.
    pub(super) max_output: usize,
}

impl<P: SspiProvider, K: Platform, R: Request> SessionEvents for EntryEvents<P, K, R> {
    fn step_done(&self, report: &StepReport<'_>) {
        let Some(device) = self.device.upgrade() else {
            return;
        };
        let missing = match report.outcome {
            Outcome::NeedInput { missing } => missing,
            _ => 0,
        };
        let (status, outcome) = step_status(report.outcome, missing);
        match report.outcome {
            Outcome::Established => device.handshakes_ok.fetch_add(1, Ordering::Relaxed),
            Outcome::Failed(_) => device.handshakes_failed.fetch_add(1, Ordering::Relaxed),
            Outcome::NeedInput { .. } => 0,
        };
        let reply = StepReply {
            status: status.0,
            outcome,
            missing,
            extra: report.leftover as u32,
            protocol: report.connection.map_or(0, |c| c.dwProtocol),
            cipher: report.connection.map_or(0, |c| c.aiCipher),
            flags: self.flags(report),
            alpn_status: 0,
            output: report.output,
            alpn: &[],
        };
        // ALPN (sessions opened with a list only; an older harness never
        // sees these bytes): the status, and the name when it fits in the
        // room every STEP's output buffer has (it always does after a
        // handshake's last flight; QUERY carries it in any case).
        let p = report.application_protocol;
        let name = p.as_ref().and_then(|p| p.alpn()).unwrap_or(&[]);
        let reply = StepReply {
            alpn_status: u8::from(!name.is_empty()),
            alpn: if report.output.len() + name.len() <= self.max_output {
                name
            } else {
                &[]
            },
            ..reply
        };
        device.write_reply(self.id, &reply);
    }

    fn record_done(&self, report: &RecordReport<'_>) {
        let Some(device) = self.device.upgrade() else {
            return;
        };
        let (status, outcome, missing) = match report.outcome {
            ksspi::engine::RecordOutcome::Data { missing } => (
                if missing > 0 {
                    SecStatus::SEC_E_INCOMPLETE_MESSAGE
                } else {
                    SecStatus::SEC_E_OK
                },
                RecordOutcome::Data,
                missing,
            ),
            ksspi::engine::RecordOutcome::PeerClosed => (
                SecStatus::SEC_I_CONTEXT_EXPIRED,
                RecordOutcome::PeerClosed,
                0,
            ),
            ksspi::engine::RecordOutcome::ShutDown => {
                (SecStatus::SEC_E_OK, RecordOutcome::ShutDown, 0)
            }
            ksspi::engine::RecordOutcome::Failed(status) => (status, RecordOutcome::Failed, 0),
        };
        let reply = RecordReply {
            status: status.0,
            outcome,
            missing,
            renegotiations: report.renegotiations,
            data: report.data,
            output: report.output,
        };
        device.write_reply(self.id, &reply);
    }

    fn step_ready(&self) {
        let Some(device) = self.device.upgrade() else {
            return;
        };
        let ready = {
            let mut table = device.table.lock(&device.platform);
            table.entry_any_file(self.id).and_then(|entry| {
                let len = core::mem::take(&mut entry.reply_len);
                entry.pending.take().map(|request| (request, len))
            })
        };
        // Completed outside the table lock.
        match ready {
            Some((request, 0)) => request.complete(STATUS_BUFFER_TOO_SMALL, &[]),
            Some((request, n)) => request.complete_written(STATUS_SUCCESS, n),
            None => {}
        }
    }

    fn closed(&self) {
        let Some(device) = self.device.upgrade() else {
            return;
        };
        let entry = device.table.lock(&device.platform).remove(self.id);
        let Some(mut entry) = entry else {
            return;
        };
        match (entry.pending.take(), entry.reply_len) {
            // Cut short by the close.
            (Some(request), 0) => request.complete(STATUS_CANCELLED, &[]),
            // The close came between the move's report and `step_ready`:
            // the move is over and its reply written; deliver it.
            (Some(request), n) => request.complete_written(STATUS_SUCCESS, n),
            (None, _) => {}
        }
        drop(entry.session.take());
        if let (Some(credentials), Some(at)) = (
            entry.credentials.take(),
            Passive::check(device.provider.current_irql()),
        ) {
            device.release(credentials, &at);
        }
    }
}

impl<P: SspiProvider, K: Platform, R: Request> EntryEvents<P, K, R> {
    /// STEP's [`step_flags`] for `report`, only those the session's OPEN
    /// layout lets its harness read.
    fn flags(&self, report: &StepReport<'_>) -> u8 {
        let mut flags = 0;
        if self.reports_flags && report.certificate_requested {
            flags |= step_flags::CERTIFICATE_REQUESTED;
        }
        if self.reports_resumption && report.outcome == Outcome::Established {
            flags |= match report.resumed {
                Resumed::Yes => step_flags::RESUMED,
                Resumed::No => step_flags::FULL_HANDSHAKE,
                Resumed::Unknown => 0,
            };
        }
        flags
    }
}

/// The SECURITY_STATUS a step's outcome reports.
fn step_status(outcome: Outcome, missing: u32) -> (SecStatus, StepOutcome) {
    match outcome {
        Outcome::NeedInput { .. } if missing > 0 => {
            (SecStatus::SEC_E_INCOMPLETE_MESSAGE, StepOutcome::NeedInput)
        }
        Outcome::NeedInput { .. } => (SecStatus::SEC_I_CONTINUE_NEEDED, StepOutcome::NeedInput),
        Outcome::Established => (SecStatus::SEC_E_OK, StepOutcome::Established),
        Outcome::Failed(status) => (status, StepOutcome::Failed),
    }
}
