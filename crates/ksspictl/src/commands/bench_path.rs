//! `ksspictl bench-path` (hidden): one handshake path of `bench`, alone, as
//! `bench --only instructions` runs it under callgrind (model only).

use crate::backend;
use crate::Failure;

/// `bench-path`'s flags.
#[derive(clap::Args)]
pub struct Args {
    /// Which path.
    #[arg(long)]
    path: backend::BenchPathName,
    /// The TLS version, 1.2 or 1.3.
    #[arg(long)]
    tls: String,
    /// Handshakes to run.
    #[arg(long)]
    count: usize,
}

/// Run one path's handshakes (refused on Windows).
pub fn exec(args: &Args) -> Result<(), Failure> {
    backend::bench_path(args.path, &args.tls, args.count)
}
