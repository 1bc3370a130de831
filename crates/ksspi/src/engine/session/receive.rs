//! The receive path: decrypt ([`TlsMachine::open_records`], records opened
//! in place), post-handshake messages handed to the handshake call, and the
//! peer's close_notify. Its state, [`ReceivePath`], lives in an established
//! session ([`super::state::Established`]); nothing here touches the send
//! path's.

use super::machine::{make_room, TlsMachine};
use super::state::Op;
use super::{RecordError, RecordOutcome, MAX_POST_HANDSHAKE, NO_PROGRESS, TOO_MANY_POST_HANDSHAKE};
use crate::engine::conductor::{EngineStats, Move, Platform};
use crate::handle::{decrypt_record, AsyncContext};
use crate::irql::Passive;
use crate::provider::SspiProvider;
use crate::status::SecStatus;

/// What the receive direction of an established session knows.
pub(super) struct ReceivePath {
    /// The peer sent close_notify (`SEC_I_CONTEXT_EXPIRED`): nothing more
    /// will be decrypted.
    pub(super) peer_closed: bool,
}

impl ReceivePath {
    pub(super) fn new() -> Self {
        ReceivePath { peer_closed: false }
    }
}

impl<P: SspiProvider, K: Platform> TlsMachine<P, K> {
    /// Take a decrypt's input (refused unless established and the peer has
    /// not closed).
    pub(super) fn push_record_input(&mut self, input: &[u8]) -> Result<(), RecordError> {
        if self.state.established()?.receive.peer_closed {
            return Err(RecordError::PeerClosed);
        }
        let need = self.input.len() + input.len();
        if need > self.limits.max_input {
            return Err(RecordError::TooMuchInput);
        }
        make_room(
            &self.platform,
            &self.stats,
            &mut self.input,
            &mut self.input_high,
            need,
            self.limits.max_input,
        )
        .map_err(|_| RecordError::InsufficientResources)?;
        self.input.extend_from_slice(input); // within capacity
        self.input_high = self.input_high.max(self.input.len());
        self.begin_op(Op::Decrypt);
        Ok(())
    }

    /// Decrypt records from `input[cursor..]` until the buffer is used up, a
    /// partial record waits, the peer closed, something failed, or a
    /// post-handshake message needs the handshake call (issued here).
    pub(super) fn open_records(
        &mut self,
        ctx: &mut Option<AsyncContext<P>>,
        at: &Passive,
        stats: &EngineStats,
    ) -> Move<P> {
        loop {
            let end = self.input.len();
            if self.cursor == end {
                self.record = Some(RecordOutcome::Data { missing: 0 });
                return Move::Idle;
            }
            let Some(slot) = self.sec.slot() else {
                return self.fail(SecStatus::SEC_E_INVALID_HANDLE);
            };
            let rest = end - self.cursor;
            let d = decrypt_record(&self.provider, slot, &mut self.input[self.cursor..]);
            match d.status {
                SecStatus::SEC_E_OK => {
                    // `decrypt_record` checked EXTRA against the input and
                    // DATA against the record it consumed; the arithmetic
                    // below is checked again, so a provider's lengths can
                    // fail the decrypt but never index out of the buffer.
                    let consumed = rest.saturating_sub(d.extra.unwrap_or(0));
                    if consumed == 0 {
                        // No progress: the provider is confused; stop here.
                        return self.fail(NO_PROGRESS);
                    }
                    let (at_off, len) = d.data;
                    let record_end = self.cursor + consumed;
                    let Some(src) = self
                        .cursor
                        .checked_add(at_off)
                        .and_then(|from| Some(from..from.checked_add(len)?))
                        .filter(|src| src.end <= record_end)
                    else {
                        return self.fail(SecStatus::SEC_E_INTERNAL_ERROR);
                    };
                    if self.plain.is_empty() {
                        // No copy for the first record (often the only one).
                        self.plain = src;
                    } else {
                        // The plaintext so far ends at or before the cursor,
                        // so the copy stays inside the consumed bytes.
                        let to = self.plain.end;
                        self.input.copy_within(src, to);
                        self.plain.end += len;
                    }
                    self.cursor = record_end;
                }
                SecStatus::SEC_E_INCOMPLETE_MESSAGE => {
                    self.record = Some(RecordOutcome::Data { missing: d.missing });
                    return Move::Idle;
                }
                SecStatus::SEC_I_RENEGOTIATE => {
                    if self.renegotiations >= MAX_POST_HANDSHAKE {
                        return self.fail(TOO_MANY_POST_HANDSHAKE);
                    }
                    // The handshake record onwards is in EXTRA: hand it to the
                    // handshake call, which says (EXTRA again) what follows it.
                    self.cursor = end - d.extra.unwrap_or(rest).min(rest);
                    self.renegotiations += 1;
                    let from = self.cursor;
                    return self.issue_call(ctx, at, stats, from, end);
                }
                SecStatus::SEC_I_CONTEXT_EXPIRED => {
                    if let Some(established) = self.state.established_mut() {
                        established.receive.peer_closed = true;
                    }
                    self.cursor = end;
                    self.record = Some(RecordOutcome::PeerClosed);
                    return Move::Idle;
                }
                failure => return self.fail(failure),
            }
        }
    }

    /// The handshake call for a post-handshake message completed
    /// successfully (its token, if any, is in the output): go on decrypting
    /// after the message. `extra` is the call's `SECBUFFER_EXTRA`.
    pub(super) fn post_handshake_completed(&mut self, extra: usize) {
        // Decrypt goes on after the handshake message, which
        // the call must have consumed (else DecryptMessage
        // hands the same bytes back, forever).
        let end = self.input.len();
        let given = end - self.cursor;
        let left = extra.min(given);
        if left == given && self.frame.out_bufs[0].cbBuffer == 0 {
            self.fail(NO_PROGRESS);
            return;
        }
        self.cursor = end - left;
    }
}
