//! ksspi-sim: the host model of ksecdd + Schannel and of the kernel's rules.
//!
//! - [`alloc_count`]: a counting allocator for allocation tests, and provider
//!   / platform wrappers that keep the model's work out of the count and
//!   enter the engine's continuations through it, on whichever thread.
//! - [`drive`]: engine sessions driven from a test or a fuzz target.
//! - [`certs`]: the model certificate store (certificates by SHA-1 thumbprint).
//! - [`schannel`]: Schannel's handshake semantics over rustls's unbuffered API.
//! - [`provider`]: [`ksspi::SspiProvider`] over model Schannel, with every
//!   completion mode of the async contract (later on another thread, inline
//!   callback, synchronous without callback, a seeded mix) and callbacks at
//!   PASSIVE or DISPATCH.
//! - [`platform`]: the engine's work items on the model's queue.
//! - [`kernel`]: per-thread IRQL, spin locks, the work-item queue, bugchecks.
//! - [`verifier`]: tracking by tag, the unload check, low-resources simulation.
//! - [`sweep`]: run a scenario failing each fault point in turn.
//! - [`null`]: a provider whose calls do no cryptography, for timing the
//!   engine's async machinery alone.
//! - [`testing`]: temp dirs, child guards and free ports for tests with real peers.
//!
//! Every random choice follows from [`SimConfig::seed`].

pub mod alloc_count;
pub mod baseline;
pub mod certs;
pub mod drive;
mod edge;
pub mod kernel;
pub mod null;
pub mod platform;
pub mod provider;
pub mod schannel;
pub mod sweep;
pub mod testing;
pub mod verifier;

pub use platform::SimPlatform;
pub use provider::{CallbackIrql, Completion, CompletionPolicy, SimConfig, SimProvider, SimStats};
