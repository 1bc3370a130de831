//! `ksspictl bench`: handshakes (full, and resumed against rustls's own
//! resumed ones), continuations and records against plain rustls, scale and
//! memory per session (model only: [`crate::backend::bench`] runs it).

use crate::backend;
use crate::util::BenchSection;
use crate::Failure;
use ksspi_abi::MAX_SELFTEST_CONCURRENCY;

/// `bench`'s flags.
#[derive(clap::Args)]
pub struct Args {
    /// A few iterations of everything (a smoke run).
    #[arg(long)]
    quick: bool,
    /// Concurrencies of the scale run, comma-separated, each 1 to 100000 (the
    /// self-test's limit).
    #[arg(long, value_delimiter = ',', default_value = "1,16,256,4096,10000,100000",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_SELFTEST_CONCURRENCY)))]
    scale: Vec<u32>,
    /// Draw the scale figures to this PNG.
    #[arg(long)]
    plot: Option<std::path::PathBuf>,
    /// One JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// Run only these sections, comma-separated: handshakes, continuations,
    /// records, memory, scale, instructions [default: all].
    #[arg(long, value_delimiter = ',', hide_possible_values = true)]
    only: Vec<BenchSection>,
}

/// Run the benchmark over the model (refused on Windows).
pub fn exec(args: &Args) -> Result<(), Failure> {
    backend::bench(
        args.quick,
        &args.scale,
        args.plot.as_deref(),
        args.json,
        &args.only,
    )
}
