//! After the handshake: the handshake calls that carry a post-handshake
//! message DecryptMessage handed back (a TLS 1.3 NewSessionTicket or
//! KeyUpdate, and the answer a KeyUpdate asked for), and the shutdown
//! (ApplyControlToken(SCHANNEL_SHUTDOWN), then the close_notify).

use super::handshake::Step;
use super::Context;
use ksspi::SecStatus;

impl Context {
    /// The model's stand-in for a peer that updates its keys (a TLS 1.3
    /// KeyUpdate, update_requested, as rustls sends it): returns the record to
    /// send. Schannel has no such call; tests use it to send a second
    /// post-handshake message after the tickets.
    pub fn request_key_update(&mut self) -> Result<Vec<u8>, SecStatus> {
        self.usable()?;
        self.conn.request_key_update()
    }

    /// ApplyControlToken(SCHANNEL_SHUTDOWN): the next handshake call
    /// produces close_notify.
    pub fn apply_shutdown(&mut self) -> SecStatus {
        if self.failed.is_some() || !self.established {
            return SecStatus::SEC_E_INVALID_HANDLE;
        }
        self.shutdown = true;
        SecStatus::SEC_E_OK
    }

    /// A handshake call once established: the post-handshake record
    /// DecryptMessage handed back, or the close_notify after a shutdown.
    pub(super) fn step_established(&mut self, input: &[u8]) -> Step {
        // close_notify goes once; reading goes on after it (data the peer sent
        // before its own close_notify, a ticket, the close_notify), as curl's
        // Schannel shutdown reads until SEC_I_CONTEXT_EXPIRED.
        if self.shutdown && !self.close_sent {
            let mut token = Vec::new();
            let sent = self.conn.close_notify(&mut token);
            self.close_sent = true;
            return match sent {
                Ok(()) => Step {
                    status: SecStatus::SEC_E_OK,
                    token,
                    extra: input.len(),
                    ..Step::default()
                },
                Err(status) => Step {
                    status,
                    extra: input.len(),
                    ..Step::default()
                },
            };
        }
        match self.post_handshake.take() {
            Some(record) if input.len() >= record => {
                let mut token = std::mem::take(&mut self.post_handshake_out);
                self.conn.flush_key_update_answer(&mut token);
                Step {
                    status: SecStatus::SEC_E_OK,
                    token,
                    extra: input.len() - record,
                    ..Step::default()
                }
            }
            held => {
                self.post_handshake = held;
                Step {
                    status: if self.close_sent {
                        SecStatus::SEC_E_CONTEXT_EXPIRED
                    } else {
                        SecStatus::SEC_E_OUT_OF_SEQUENCE
                    },
                    extra: input.len(),
                    ..Step::default()
                }
            }
        }
    }
}
