//! Fuzz programs for ksspi, over the model.
//!
//! Each program reads its fuzz input as a little script (see [`input`]) and
//! checks what a hostile caller must never get: a request completed twice or
//! never, a reply larger than its buffer, a non-error status for a refused
//! request, a session that never reports, or anything left at unload
//! (the model's verifier list). A broken rule panics, which is what
//! libFuzzer reports as a crash.
//!
//! - [`ioctl`]: raw and well-formed IOCTL buffers into the device engine,
//!   in sequences, across two file handles, with cancels and file closes.
//! - [`peer`]: a peer's bytes into a server or a client session, through the
//!   handshake ([`peer::handshake`]) or once established ([`peer::record`]).
//!   The bytes are the honest peer's, mutated, split, dropped, or raw.
//!
//! The cargo-fuzz targets in `fuzz/` call these; `tests/corpus.rs` replays
//! the committed corpora and regressions through them in every `cargo test`.

pub mod input;
pub mod ioctl;
pub mod peer;
pub mod seeds;

use input::Input;
use ksspi_sim::certs::{CertStore, TestPki, Thumbprint};
use ksspi_sim::{CallbackIrql, CompletionPolicy, SimConfig, SimProvider};
use std::sync::{Arc, OnceLock};

/// The callback IRQLs, by script byte (modulo 3).
pub const IRQLS: [CallbackIrql; 3] = [
    CallbackIrql::Passive,
    CallbackIrql::Dispatch,
    CallbackIrql::Mixed,
];

/// A fresh model over [`pki`] as three script bytes choose it: the
/// completion mode ([`CompletionPolicy::ALL`], modulo 5); the callback IRQL
/// (bits 0-1) and the TLS 1.3 tickets (bits 2-3); the seed.
pub fn model(inp: &mut Input<'_>) -> SimProvider {
    let completion = CompletionPolicy::ALL[usize::from(inp.u8()) % CompletionPolicy::ALL.len()];
    let b = inp.u8();
    SimProvider::new(
        SimConfig {
            completion,
            callback_irql: IRQLS[usize::from(b & 3) % IRQLS.len()],
            tls13_tickets: usize::from(b >> 2 & 3),
            seed: u64::from(inp.u8()),
            ..SimConfig::default()
        },
        pki().0.clone(),
    )
}

/// One certificate store for every run: a CA in Root, a "localhost" leaf in
/// MY (made once; each run gets a fresh model over it).
pub fn pki() -> &'static (Arc<CertStore>, Thumbprint) {
    static PKI: OnceLock<(Arc<CertStore>, Thumbprint)> = OnceLock::new();
    PKI.get_or_init(|| {
        let (store, thumb) = TestPki::new("ksspi fuzz CA").store(&["localhost"]);
        (Arc::new(store), thumb)
    })
}
