//! The handshake path: a step's input, whether and when to make the next
//! handshake call, and what each call's status means for the step (more
//! input, another call, established, failed). Its only state of its own,
//! [`Handshake`], lives in [`State::Handshaking`].

use super::machine::make_room;
use super::machine::TlsMachine;
use super::receive::ReceivePath;
use super::send::SendPath;
use super::state::{Established, Op, State};
use super::{ClientCertificates, Outcome, Resumed, StepError, NO_CLIENT_CERTIFICATE, NO_PROGRESS};
use crate::alpn::UNOFFERED_APPLICATION_PROTOCOL;
use crate::engine::conductor::{EngineStats, Move, Platform};
use crate::handle::{
    query_application_protocol, query_connection_info, query_remote_certificates,
    query_session_info, query_stream_sizes, AsyncContext,
};
use crate::irql::Passive;
use crate::provider::SspiProvider;
use crate::status::SecStatus;
use crate::sys::SecPkgContext_ApplicationProtocol;

/// What only the handshake phase knows.
pub(super) struct Handshake {
    /// Calls made again after `SEC_I_INCOMPLETE_CREDENTIALS` in this step.
    pub(super) retries: u8,
}

impl<P: SspiProvider, K: Platform> TlsMachine<P, K> {
    /// A server's: whether the client presented a certificate
    /// (`SECPKG_ATTR_REMOTE_CERTIFICATES` names at least one; Schannel
    /// answers `SEC_E_NO_CREDENTIALS` when it sent none).
    fn client_sent_certificate(&self) -> bool {
        self.sec.slot().is_some_and(|slot| {
            query_remote_certificates(&self.provider, slot, |_| {}).is_ok_and(|n| n > 0)
        })
    }

    /// Take a step's input (the state must be [`State::Handshaking`]).
    pub(super) fn push_input(&mut self, input: &[u8]) -> Result<(), StepError> {
        let handshake = match &mut self.state {
            State::Handshaking(handshake) => handshake,
            State::Established(_) | State::Failed(_) => return Err(StepError::Finished),
            State::Deleting | State::Closed => return Err(StepError::Closed),
        };
        let need = self.input.len() + input.len();
        if need > self.limits.max_input {
            return Err(StepError::TooMuchInput);
        }
        make_room(
            &self.platform,
            &self.stats,
            &mut self.input,
            &mut self.input_high,
            need,
            self.limits.max_input,
        )
        .map_err(|_| StepError::InsufficientResources)?;
        self.input.extend_from_slice(input); // within capacity
        self.input_high = self.input_high.max(self.input.len());
        self.op = Op::Step;
        self.output.clear();
        self.calls = 0;
        handshake.retries = 0;
        Ok(())
    }

    /// The client's first call of the handshake takes no input.
    fn first_client_call(&self) -> bool {
        !self.server && !self.sec.is_issued() && self.calls == 0
    }

    /// Make the step's next handshake call, or end the step for more input.
    pub(super) fn next_handshake_call(
        &mut self,
        ctx: &mut Option<AsyncContext<P>>,
        at: &Passive,
        stats: &EngineStats,
    ) -> Move<P> {
        let first_client_call = self.first_client_call();
        if self.input.is_empty() && !first_client_call && self.state.retries() == 0 {
            self.outcome = Some(Outcome::NeedInput { missing: 0 });
            return Move::Idle;
        }
        let end = self.input.len();
        self.issue_call(ctx, at, stats, 0, end)
    }

    /// Whether the step will make a handshake call.
    pub(super) fn wants_handshake_call(&self) -> bool {
        let first_client_call = self.first_client_call();
        self.outcome.is_none()
            && (!self.input.is_empty() || first_client_call || self.state.retries() > 0)
    }

    pub(super) fn step_completed(&mut self, status: SecStatus) {
        self.calls += 1;
        self.lease = None;
        let (extra, missing) = self.call_leftover();
        // The call was given all of `input`.
        let given = self.input.len();
        self.sec.note_call_completed();
        match status {
            SecStatus::SEC_E_INCOMPLETE_MESSAGE => {
                // Nothing consumed: wait for the rest of the record.
                self.outcome = Some(Outcome::NeedInput { missing });
            }
            SecStatus::SEC_E_OK
            | SecStatus::SEC_I_CONTINUE_NEEDED
            | SecStatus::SEC_I_INCOMPLETE_CREDENTIALS => {
                if let Err(status) = self.append_output(0) {
                    self.state = State::Failed(status);
                    self.outcome = Some(Outcome::Failed(status));
                    return;
                }
                let keep = extra.min(self.input.len());
                self.input.drain(..self.input.len() - keep);
                let produced = self.frame.out_bufs[0].cbBuffer > 0;
                if status == SecStatus::SEC_I_CONTINUE_NEEDED
                    && given > 0
                    && keep == given
                    && !produced
                {
                    // The next call would be this one again.
                    self.state = State::Failed(NO_PROGRESS);
                    self.outcome = Some(Outcome::Failed(NO_PROGRESS));
                    return;
                }
                if status == SecStatus::SEC_I_INCOMPLETE_CREDENTIALS && !self.server {
                    // The server sent a CertificateRequest that these
                    // credentials cannot answer (none configured, or none
                    // from an issuer the server accepts): the return-value
                    // table of learn.microsoft.com/windows/win32/secauthn/
                    // initializesecuritycontext--schannel. Remembered for
                    // the owner; the call made again goes on without one.
                    self.certificate_requested = true;
                }
                if status == SecStatus::SEC_E_OK {
                    if self.client_certificates == ClientCertificates::Require
                        && !self.client_sent_certificate()
                    {
                        // Schannel completed the handshake without one; the
                        // server's policy is the caller's (ClientCertificates).
                        // Nothing of this call goes out: a TLS 1.2 client
                        // then never gets the server's Finished.
                        self.output.clear();
                        self.state = State::Failed(NO_CLIENT_CERTIFICATE);
                        self.outcome = Some(Outcome::Failed(NO_CLIENT_CERTIFICATE));
                        return;
                    }
                    let mut connection = None;
                    let mut application_protocol = None;
                    if let Some(slot) = self.sec.slot() {
                        connection = query_connection_info(&self.provider, slot).ok();
                        self.sizes = query_stream_sizes(&self.provider, slot).ok();
                        if self.alpn.is_some() {
                            application_protocol =
                                query_application_protocol(&self.provider, slot).ok();
                        }
                        // A provider that does not answer leaves it unknown,
                        // never "full".
                        self.resumed = Resumed::from_session_info(
                            query_session_info(&self.provider, slot).ok().as_ref(),
                        );
                    }
                    // A client checks the server's choice against its own
                    // offer, as msquic does after the same query.
                    let chosen = application_protocol
                        .as_ref()
                        .and_then(SecPkgContext_ApplicationProtocol::alpn);
                    if let (false, Some(offer), Some(chosen)) = (self.server, &self.alpn, chosen) {
                        if !offer.contains(chosen) {
                            self.output.clear();
                            self.state = State::Failed(UNOFFERED_APPLICATION_PROTOCOL);
                            self.outcome = Some(Outcome::Failed(UNOFFERED_APPLICATION_PROTOCOL));
                            return;
                        }
                    }
                    // Into the room reserved at setup: no allocation here.
                    self.application_protocol.clear();
                    if let Some(p) = application_protocol {
                        if self.application_protocol.capacity() > 0 {
                            self.application_protocol.push(p);
                        }
                    }
                    self.state = State::Established(Established {
                        connection,
                        send: SendPath::new(),
                        receive: ReceivePath::new(),
                    });
                    self.outcome = Some(Outcome::Established);
                } else if status == SecStatus::SEC_I_INCOMPLETE_CREDENTIALS
                    && self.state.retries() < 2
                {
                    // Call again: Schannel goes on without a client certificate.
                    if let Some(handshake) = self.state.handshake_mut() {
                        handshake.retries += 1;
                    }
                } else if status == SecStatus::SEC_I_INCOMPLETE_CREDENTIALS {
                    self.state = State::Failed(status);
                    self.outcome = Some(Outcome::Failed(SecStatus::SEC_E_NO_CREDENTIALS));
                } else if self.input.is_empty() {
                    self.outcome = Some(Outcome::NeedInput { missing: 0 });
                }
                // else: EXTRA left over, the next call takes it.
            }
            failure => {
                // The alert (extended errors), else any token, goes to the peer.
                if self.append_output(1).is_err() || self.frame.out_bufs[1].cbBuffer == 0 {
                    let _ = self.append_output(0);
                }
                self.state = State::Failed(failure);
                self.outcome = Some(Outcome::Failed(failure));
            }
        }
    }
}
