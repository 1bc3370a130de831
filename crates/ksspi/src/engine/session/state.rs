//! The session's phase, with each phase's data inside it ([`State`]), what
//! the owner asked for last ([`Op`]), and the security context's slot
//! ([`Sec`]), which says itself whether a handshake call issued a context.
//!
//! A flag that belongs to one phase lives in that phase's variant, so it
//! cannot outlive the phase or contradict it: the handshake's retry count is
//! gone once established, and close_notify sent / peer closed exist only on
//! an established session's [`SendPath`] and [`ReceivePath`].

use super::handshake::Handshake;
use super::receive::ReceivePath;
use super::send::SendPath;
use super::RecordError;
use crate::handle::HandleSlot;
use crate::status::SecStatus;
use crate::sys::SecPkgContext_ConnectionInfo;

/// Where the session is, and what only that phase knows.
pub(super) enum State {
    /// Handshake calls run, step by step.
    Handshaking(Handshake),
    /// The handshake completed: the record layer, one path per direction.
    Established(Established),
    /// The handshake or the record layer failed with this status.
    Failed(SecStatus),
    /// The security context's delete is in flight.
    Deleting,
    /// Everything is released.
    Closed,
}

/// An established session: what the handshake negotiated, and each
/// direction's own state.
pub(super) struct Established {
    /// `SECPKG_ATTR_CONNECTION_INFO`, if the provider answered at
    /// establishment.
    pub(super) connection: Option<SecPkgContext_ConnectionInfo>,
    /// Encrypt and close_notify sent.
    pub(super) send: SendPath,
    /// Decrypt, post-handshake messages and the peer's close_notify.
    pub(super) receive: ReceivePath,
}

impl State {
    pub(super) fn is_established(&self) -> bool {
        matches!(self, State::Established(_))
    }

    /// Deleting or closed: the security context is gone or going.
    pub(super) fn is_closing(&self) -> bool {
        matches!(self, State::Deleting | State::Closed)
    }

    /// The established session, or why the record layer refuses.
    pub(super) fn established(&self) -> Result<&Established, RecordError> {
        match self {
            State::Established(e) => Ok(e),
            State::Handshaking(_) => Err(RecordError::NotEstablished),
            State::Failed(status) => Err(RecordError::Failed(*status)),
            State::Deleting | State::Closed => Err(RecordError::Closed),
        }
    }

    pub(super) fn established_mut(&mut self) -> Option<&mut Established> {
        match self {
            State::Established(e) => Some(e),
            _ => None,
        }
    }

    pub(super) fn handshake_mut(&mut self) -> Option<&mut Handshake> {
        match self {
            State::Handshaking(h) => Some(h),
            _ => None,
        }
    }

    /// The handshake's retries so far (0 in any other phase).
    pub(super) fn retries(&self) -> u8 {
        match self {
            State::Handshaking(h) => h.retries,
            _ => 0,
        }
    }

    /// The connection info learned at establishment.
    pub(super) fn connection(&self) -> Option<SecPkgContext_ConnectionInfo> {
        match self {
            State::Established(e) => e.connection,
            _ => None,
        }
    }
}

/// What the owner asked for last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Op {
    Step,
    Decrypt,
    /// `issued`: SCHANNEL_SHUTDOWN applied and the final call made.
    Shutdown {
        issued: bool,
    },
}

/// The security context's slot, from setup until the delete takes it.
pub(super) enum Sec {
    /// No handshake call has completed with a valid handle in it yet: the
    /// next call creates the context (the slot is its output).
    Empty(HandleSlot),
    /// A handshake call completed with the context in the slot: calls pass
    /// it as the existing context.
    Issued(HandleSlot),
    /// Taken by the delete.
    Gone,
}

impl Sec {
    /// The slot, issued or not.
    pub(super) fn slot(&self) -> Option<&HandleSlot> {
        match self {
            Sec::Empty(slot) | Sec::Issued(slot) => Some(slot),
            Sec::Gone => None,
        }
    }

    /// The slot, once a handshake call issued the context in it.
    pub(super) fn issued(&self) -> Option<&HandleSlot> {
        match self {
            Sec::Issued(slot) => Some(slot),
            Sec::Empty(_) | Sec::Gone => None,
        }
    }

    pub(super) fn is_issued(&self) -> bool {
        matches!(self, Sec::Issued(_))
    }

    /// After a handshake call completed: a valid handle in an empty slot
    /// makes it issued (and it stays so).
    pub(super) fn note_call_completed(&mut self) {
        if let Sec::Empty(slot) = self {
            if slot.is_valid() {
                let Sec::Empty(slot) = core::mem::replace(self, Sec::Gone) else {
                    return;
                };
                *self = Sec::Issued(slot);
            }
        }
    }

    /// Take the slot (for the delete), leaving [`Sec::Gone`].
    pub(super) fn take(&mut self) -> Option<HandleSlot> {
        match core::mem::replace(self, Sec::Gone) {
            Sec::Empty(slot) | Sec::Issued(slot) => Some(slot),
            Sec::Gone => None,
        }
    }
}
