//! The test VM's side of the harness, without I/O: the driver package's INF
//! check ([`inf`]), Driver Verifier's settings and reboot logic
//! ([`verifier`]), whether Windows itself owes a reboot ([`reboot`]), the
//! acceptance run as a state machine over a
//! [`acceptance::System`] ([`acceptance`]) and its report ([`report`]).
//! Nothing here names a platform: `install`, `uninstall`, `verifier` and
//! `acceptance` (in [`crate::commands`]) hand it the answers the backend
//! gets from Windows, or the model's for `acceptance --dry-run`.

pub mod acceptance;
pub mod inf;
pub mod reboot;
pub mod report;
pub mod verifier;
