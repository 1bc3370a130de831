//! `ksspictl install --inf PATH`: what `pnputil /add-driver ksspi_driver.inf
//! /install` and `devgen /add /bus ROOT /hardwareid "Root\ksspi"` do
//! together, in one command (Windows only; `backend/windows/install.rs`).

use crate::backend;
use crate::Failure;
use std::path::PathBuf;

/// `install`'s flags.
#[derive(clap::Args)]
pub struct Args {
    /// The package's stamped INF (`ksspi_driver.inf` in
    /// target\debug\ksspi_driver_package after `cargo make`), with the
    /// driver and its catalog beside it.
    #[arg(long)]
    inf: PathBuf,
}

/// Check the INF, stage the package, create the device, wait for its
/// interface.
pub fn exec(args: &Args) -> Result<(), Failure> {
    backend::install(&args.inf)
}
