//! What the engine asks of a request and how it names one: the [`Request`]
//! contract the KMDF glue implements (`WDFREQUEST` on Windows, a test double
//! over the model), the [`PendKey`] a pended request is cancelled by, the
//! [`FileId`] of a file handle, and [`complete_with`], which encodes a short
//! reply and completes.

use crate::ntstatus::*;
use ksspi_abi::{encode, Message, SessionId};

/// A pended or pending IOCTL request, as the glue gives it to the engine
/// (`WDFREQUEST` on Windows).
pub trait Request: Send + 'static {
    /// Bytes the request's output buffer holds (METHOD_BUFFERED).
    fn output_capacity(&self) -> usize;

    /// The output buffer itself (`output_capacity()` bytes: on Windows the
    /// system buffer, whose input the glue copied out before the engine saw
    /// it), for a reply the engine writes in place and completes with
    /// [`Request::complete_written`]. Callable at DISPATCH_LEVEL, until the
    /// request completes.
    fn output(&mut self) -> &mut [u8];

    /// The engine keeps the request pending under `key` (OPEN while the
    /// credentials are acquired, STEP while its calls run). The glue makes it
    /// cancelable (`WdfRequestMarkCancelableEx`) and keeps `key` for its cancel
    /// routine, which hands it to [`Device::cancel`]. Returns false if the
    /// request is cancelled already: the engine then completes it with
    /// `STATUS_CANCELLED` at once. Called under the table lock (or the
    /// self-test's), at DISPATCH_LEVEL. A SELFTEST pends under
    /// [`SELFTEST_SESSION`] for its whole run.
    ///
    /// [`Device::cancel`]: super::Device::cancel
    fn pend(&mut self, key: PendKey) -> bool {
        let _ = key;
        true
    }

    /// Complete with `status`, the first `len` bytes of [`Request::output`]
    /// being the reply (`len` bytes of information). Callable at
    /// DISPATCH_LEVEL.
    fn complete_written(self, status: NtStatus, len: usize);

    /// Copy `reply` to the output buffer and complete with `status` (and
    /// `reply.len()` bytes of information); a reply longer than the buffer
    /// completes with `STATUS_BUFFER_TOO_SMALL`. Callable at DISPATCH_LEVEL.
    fn complete(mut self, status: NtStatus, reply: &[u8])
    where
        Self: Sized,
    {
        if reply.is_empty() {
            return self.complete_written(status, 0);
        }
        match self.output().get_mut(..reply.len()) {
            Some(out) => {
                out.copy_from_slice(reply);
                self.complete_written(status, reply.len());
            }
            None => self.complete_written(STATUS_BUFFER_TOO_SMALL, 0),
        }
    }

    /// Complete with `STATUS_CANCELLED` a request whose cancel routine handed
    /// it to the engine ([`Device::cancel`] returned true): from inside the
    /// routine, or later (a SELFTEST, once its handshakes in flight are
    /// over). The request is no longer cancelable, so there is nothing to
    /// unmark.
    ///
    /// [`Device::cancel`]: super::Device::cancel
    fn cancelled(self)
    where
        Self: Sized,
    {
        self.complete(STATUS_CANCELLED, &[]);
    }
}

/// What identifies one pended request to [`Device::cancel`]: its file, its
/// session, and a serial number, so a late cancel never hits a later request
/// pended on the same session.
///
/// [`Device::cancel`]: super::Device::cancel
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendKey {
    /// The file handle the request came on.
    pub file: FileId,
    /// The session it waits on.
    pub session: SessionId,
    /// The device-wide serial number of this pend.
    pub serial: u64,
}

/// The session a pended SELFTEST's [`PendKey`] names: no session's id (slot
/// 0 with generation 0; generations start at 1 and never wrap to 0).
pub const SELFTEST_SESSION: SessionId = SessionId(0);

/// A file handle on the device (`WDFFILEOBJECT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileId(pub u64);

/// Encode `m` into the request's output and complete it with `STATUS_SUCCESS`
/// (`STATUS_BUFFER_TOO_SMALL` if it does not fit).
pub(crate) fn complete_with<'a, M: Message<'a>, R: Request>(request: R, m: &M) {
    let mut buf = [0u8; 256];
    match encode(m, &mut buf) {
        Ok(n) if n <= request.output_capacity() => request.complete(STATUS_SUCCESS, &buf[..n]),
        _ => request.complete(STATUS_BUFFER_TOO_SMALL, &[]),
    }
}
