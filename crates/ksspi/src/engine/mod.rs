//! The async handshake engine.
//!
//! - [`sync`]: the issuer / callback handoff and the session ownership that
//!   decide, with one atomic operation per side, who continues.

pub mod sync;
