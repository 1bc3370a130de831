//! What the harness drives: the installed driver through DeviceIoControl
//! (Windows, `windows`) or the same device engine in-process over the model
//! (elsewhere, [`model`]). Both take an IOCTL's code and input and return its
//! NTSTATUS and reply, blocking until it completes.

use crate::Failure;

#[cfg(not(windows))]
pub mod model;
#[cfg(windows)]
pub mod windows;

/// A driver to send IOCTLs to. Calls may come from several threads at once.
pub trait Driver: Send + Sync {
    /// "windows" or "model".
    fn backend(&self) -> &'static str;

    /// Send one IOCTL with an output buffer of `capacity` bytes and wait for
    /// its completion: its NTSTATUS and reply bytes.
    fn call(&self, code: u32, input: &[u8], capacity: usize) -> Result<(i32, Vec<u8>), Failure>;

    /// Let go of the driver; returns what the model's verifier still holds
    /// afterwards (always 0 on Windows, where Driver Verifier does this job).
    fn finish(self: Box<Self>) -> u64;
}
