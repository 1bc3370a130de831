//! ksspi: kernel-mode asynchronous SSPI (ksecdd / Schannel) for Rust.
//!
//! - [`sys`]: the header mirrors (`sspi.h`, `schannel.h`), checked against the
//!   public headers by `scripts/abi-check.sh`.
//! - [`SecStatus`]: every status code with its name, class and `Display`.
//! - [`provider`]: the boundary over the `Sspi*Async` surface, implemented by the
//!   ksecdd backend (Windows) and by the host model (`ksspi-sim`).
//! - [`handle`]: owned handles over a provider, freed exactly once, never while a
//!   call is in flight.
//! - [`irql`]: IRQL in the types: what must run at PASSIVE_LEVEL says so.
//! - [`tracked`]: a provider that counts the async contexts alive, so a
//!   driver knows when no callback can reach it any more.
//!
//! The crate is `no_std` + `alloc` and builds for `x86_64-pc-windows-msvc`.
#![cfg_attr(not(any(test, feature = "std-tools")), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

extern crate alloc;

pub mod alpn;
pub mod engine;
pub mod handle;
pub mod irql;
// The kernel build only (feature `ksecdd`, Cargo.toml says why).
#[cfg(all(windows, feature = "ksecdd"))]
pub mod ksecdd;
pub mod provider;
mod status;
#[allow(missing_docs)]
pub mod sys;
pub mod tracked;

pub use handle::{AsyncContext, Credentials, InFlight, SecurityContext};
pub use irql::{Irql, Passive};
pub use provider::SspiProvider;
pub use status::{SecStatus, StatusClass};
pub use tracked::Tracked;
