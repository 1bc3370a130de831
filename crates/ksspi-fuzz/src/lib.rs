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

use ksspi_sim::certs::{CertStore, TestPki, Thumbprint};
use std::sync::{Arc, OnceLock};

/// One certificate store for every run: a CA in Root, a "localhost" leaf in
/// MY (made once; each run gets a fresh model over it).
pub fn pki() -> &'static (Arc<CertStore>, Thumbprint) {
    static PKI: OnceLock<(Arc<CertStore>, Thumbprint)> = OnceLock::new();
    PKI.get_or_init(|| {
        let (store, thumb) = TestPki::new("ksspi fuzz CA").store(&["localhost"]);
        (Arc::new(store), thumb)
    })
}
