//! The model backend: the driver's device engine in-process over the model
//! of ksecdd + Schannel ([`device`]), and the soak's batch over it
//! ([`batch`]).

pub mod batch;
mod device;

pub use device::{Model, Pending, Unloaded, DROPPED};
