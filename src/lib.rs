//! ksspi-driver: the KMDF driver package.
//!
//! - [`device`]: the portable device engine: the session table (opaque ids,
//!   slot + generation), per-file ownership, validation of every IOCTL buffer,
//!   step requests pended while their call is in flight and completed from the
//!   continuation, cancellation, cleanup and unload. It decides; the KMDF glue
//!   (`src/kmdf/`, Windows only) only translates.
//! - [`ntstatus`]: the NTSTATUS values the engine completes requests with.
//! - [`lock`]: a spin lock that raises to DISPATCH_LEVEL through the platform.
// On Windows the driver is no_std (wdk-alloc and wdk-panic come with the
// KMDF glue); on other hosts the package is an ordinary std library so the
// device engine can be tested over the model.
#![cfg_attr(all(windows, not(test)), no_std)]
// Every unsafe block argues its one unsafe operation (as the
// windows-drivers-rs samples' echo harness requires).
#![deny(
    clippy::undocumented_unsafe_blocks,
    clippy::multiple_unsafe_ops_per_block
)]

extern crate alloc;

pub mod device;
#[cfg(all(windows, not(ksspi_host_check)))]
mod kmdf;
pub mod lock;
pub mod ntstatus;
mod selftest;
