//! `ksspictl uninstall`: remove the ksspi device and its driver package
//! (what `pnputil /remove-device` and `pnputil /delete-driver oemN.inf
//! /uninstall` do; Windows only, `backend/windows/install.rs`).

use crate::backend;
use crate::Failure;

/// `uninstall` takes no flags.
#[derive(clap::Args)]
pub struct Args {}

/// Remove every ksspi device and the package it was installed from.
pub fn exec(_args: &Args) -> Result<(), Failure> {
    backend::uninstall()
}
