//! `ksspictl bench-path` (hidden): one handshake path of `bench`, alone, as
//! `bench --only instructions` runs it under callgrind (model only).

use crate::backend;
use crate::Failure;
use ksspi_abi::MAX_SELFTEST_COUNT;

/// `bench-path`'s flags.
#[derive(clap::Args)]
pub struct Args {
    /// Which path.
    #[arg(long)]
    path: backend::BenchPathName,
    /// The TLS version, 1.2 or 1.3.
    #[arg(long)]
    tls: String,
    /// Handshakes to run, 1 to 100000 (the self-test's limit).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_SELFTEST_COUNT)))]
    count: u32,
}

/// Run one path's handshakes (refused on Windows).
pub fn exec(args: &Args) -> Result<(), Failure> {
    backend::bench_path(args.path, &args.tls, args.count as usize)
}
