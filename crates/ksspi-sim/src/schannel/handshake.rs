//! The handshake calls: one AcceptSecurityContext /
//! InitializeSecurityContext ([`Context::step`]) and what it returns
//! ([`Step`]): one flight per call, `SEC_E_INCOMPLETE_MESSAGE` with MISSING,
//! the rest of the input as EXTRA, failures with their alert, and the
//! `SEC_I_INCOMPLETE_CREDENTIALS` stop when the server asks the client for a
//! certificate it does not have.

use super::credentials::take_asked;
use super::errors::map_error;
use super::framing::{frame, missing_after, Framing};
use super::rustls_unbuffered::Progress;
use super::Context;
use ksspi::sys::*;
use ksspi::SecStatus;

/// The result of one handshake call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// The status the call returns.
    pub status: SecStatus,
    /// The output token.
    pub token: Vec<u8>,
    /// With `SEC_E_INCOMPLETE_MESSAGE`: bytes still needed (SECBUFFER_MISSING).
    pub missing: usize,
    /// Trailing input bytes not consumed (SECBUFFER_EXTRA).
    pub extra: usize,
    /// On failure: the alert record(s) to send.
    pub alert: Vec<u8>,
}

impl Context {
    /// Drive rustls over the pending records, appending its output to `out`.
    fn drive(&mut self, out: &mut Vec<u8>) -> Progress {
        self.conn.drive(&mut self.pending, out)
    }

    /// Fail the context with `status`, with the alert to send.
    fn fail(&mut self, status: SecStatus, extra: usize) -> Step {
        let mut alert = Vec::new();
        self.conn.drain_alerts(&mut self.pending, &mut alert);
        if alert.is_empty() && !self.started_encryption() {
            // rustls had nothing queued (garbage before any TLS): a plaintext
            // fatal alert, as Schannel sends with extended errors.
            let desc = match status {
                SecStatus::SEC_E_ALGORITHM_MISMATCH => TLS1_ALERT_HANDSHAKE_FAILURE,
                SecStatus::SEC_E_INVALID_TOKEN | SecStatus::SEC_E_ILLEGAL_MESSAGE => {
                    TLS1_ALERT_DECODE_ERROR
                }
                _ => TLS1_ALERT_INTERNAL_ERROR,
            };
            alert = vec![21, 3, 3, 0, 2, TLS1_ALERT_FATAL as u8, desc as u8];
        }
        self.failed = Some(status);
        Step {
            status,
            token: Vec::new(),
            missing: 0,
            extra,
            alert,
        }
    }

    /// Whether the version is settled (rustls then writes its own alerts).
    fn started_encryption(&self) -> bool {
        self.conn.protocol_version().is_some()
    }

    /// Whether the server asked this client for a certificate it has not
    /// got, since the last call.
    fn asked_for_certificate(&self) -> bool {
        match &self.asked {
            Some(asked) => take_asked() && asked.identity.is_none(),
            None => false,
        }
    }

    /// One AcceptSecurityContext / InitializeSecurityContext call.
    pub fn step(&mut self, input: &[u8]) -> Step {
        // What an earlier call on this thread left (super::credentials).
        take_asked();
        if let Some(status) = self.failed {
            return Step {
                status,
                extra: input.len(),
                ..Step::default()
            };
        }
        if let Some(mut held) = self.held.take() {
            held.extra = input.len();
            return held;
        }
        if self.established {
            return self.step_established(input);
        }
        let mut token = Vec::new();
        if self.conn.is_client() && !self.started {
            self.started = true;
            let progress = self.drive(&mut token);
            if let Some(e) = progress.error {
                return self.fail(map_error(&e), input.len());
            }
            return Step {
                status: SecStatus::SEC_I_CONTINUE_NEEDED,
                token,
                extra: input.len(),
                ..Step::default()
            };
        }
        self.started = true;
        let ends = match frame(input) {
            Framing::Garbage => return self.fail(SecStatus::SEC_E_INVALID_TOKEN, 0),
            Framing::Records { complete } => complete,
        };
        if ends.is_empty() {
            return Step {
                status: SecStatus::SEC_E_INCOMPLETE_MESSAGE,
                missing: missing_after(input),
                ..Step::default()
            };
        }
        let mut consumed = 0;
        let mut established = false;
        for end in ends {
            self.pending.extend_from_slice(&input[consumed..end]);
            consumed = end;
            let progress = self.drive(&mut token);
            if let Some(e) = progress.error {
                return self.fail(map_error(&e), input.len() - consumed);
            }
            if progress.established {
                established = true;
                break;
            }
            if progress.produced {
                break; // one flight per call: the rest waits as EXTRA
            }
        }
        let extra = input.len() - consumed;
        self.established = established;
        if established {
            self.sizes = self.negotiated_sizes();
        }
        let status = if established {
            SecStatus::SEC_E_OK
        } else {
            SecStatus::SEC_I_CONTINUE_NEEDED
        };
        let step = Step {
            status,
            token,
            missing: 0,
            extra,
            alert: Vec::new(),
        };
        if self.asked_for_certificate() {
            // Schannel stops here to let the caller find a certificate; the
            // next call goes on without one.
            self.held = Some(step);
            return Step {
                status: SecStatus::SEC_I_INCOMPLETE_CREDENTIALS,
                extra,
                ..Step::default()
            };
        }
        step
    }
}
