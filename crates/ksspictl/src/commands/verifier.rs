//! `ksspictl verifier on|off|status`: Driver Verifier for ksspi_driver.sys
//! with the settings docs/RELIABILITY.md names, plus the KMDF verifier's
//! registry values ([`crate::vm::verifier`] decides, `verifier.exe` writes;
//! Windows only, `backend/windows/verifier.rs`).

use crate::backend;
use crate::vm::verifier::Mode;
use crate::Failure;

/// What to do.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Action {
    /// Verify ksspi_driver.sys from the next boot (flags 0x209BF, KMDF
    /// verifier on).
    On,
    /// Stop verifying it from the next boot (others keep their settings).
    Off,
    /// What is set for the next boot, and whether a reboot is pending.
    Status,
}

/// `verifier`'s arguments.
#[derive(clap::Args)]
pub struct Args {
    #[arg(value_enum)]
    action: Action,
    /// With `on`: when Driver Verifier already verifies other drivers, add
    /// ksspi_driver.sys beside them (one set of flags for all) instead of
    /// refusing.
    #[arg(long = "keep-others")]
    keep_others: bool,
}

/// Run it.
pub fn exec(args: &Args) -> Result<(), Failure> {
    let mode = match args.action {
        Action::On => Mode::On,
        Action::Off => Mode::Off,
        Action::Status => Mode::Status,
    };
    if args.keep_others && mode != Mode::On {
        return Err(Failure("--keep-others goes with `verifier on` only".into()));
    }
    backend::verifier(mode, args.keep_others)
}
