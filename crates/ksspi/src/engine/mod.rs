//! The async handshake engine.
//!
//! - [`sync`]: the issuer / callback handoff and the session ownership that
//!   decide, with one atomic operation per side, who continues.
//! - [`conductor`]: runs a sans-IO machine's calls on one async context and
//!   continues from the callback at the right IRQL (a trampoline).
//! - [`session`]: the TLS handshake machine and its [`session::Session`].
//! - [`credentials`]: asynchronous credential acquisition.

mod cell;
pub mod conductor;
pub mod credentials;
pub mod session;
pub mod sync;

pub use crate::handle::StreamSizes;
pub use conductor::{
    reserve_buffer, reserve_vec, zeroed_buffer, EngineStats, Platform, ReadyNotify, SpinWord,
};
pub use credentials::{
    acquire_credentials, release_credentials, CertificateByHash, CredentialSpec,
};
pub use session::{
    max_grows, ClientCertificates, Limits, Outcome, RecordError, RecordOutcome, RecordReport,
    Resumed, Role, Session, SessionEvents, SessionInfo, SessionSetup, StepError, StepReport,
    Tokens, MAX_POST_HANDSHAKE, MIN_BUFFER, NO_CLIENT_CERTIFICATE, NO_PROGRESS,
    TOO_MANY_POST_HANDSHAKE,
};

#[cfg(test)]
mod tests;

/// Zero `buf`'s whole allocation (its bytes and its spare capacity, where
/// bytes drained or truncated away still lie) and empty it, in a way the
/// compiler may not optimise away even when the buffer is freed next
/// (`zeroize`: a memset behind an optimisation barrier). For buffers that
/// held plaintext, before they return to the pool.
pub fn wipe(buf: &mut alloc::vec::Vec<u8>) {
    zeroize::Zeroize::zeroize(buf);
}

/// [`wipe`] for a buffer whose bytes past `used` were never written (its
/// high-water mark): only the first `used` bytes of the allocation are
/// zeroed, so a 64 KiB buffer that held a few KiB costs a few KiB.
pub fn wipe_used(buf: &mut alloc::vec::Vec<u8>, used: usize) {
    use zeroize::Zeroize;
    let len = buf.len();
    buf.as_mut_slice().zeroize();
    let spare = buf.spare_capacity_mut();
    let beyond = used.saturating_sub(len).min(spare.len());
    spare[..beyond].zeroize();
    buf.clear();
}
