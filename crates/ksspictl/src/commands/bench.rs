//! `ksspictl bench`: handshakes, continuations and records against plain
//! rustls, scale and memory per session (model only: [`crate::backend::bench`]
//! runs it).

use crate::backend;
use crate::util::BenchSection;
use crate::Failure;

/// `bench`'s flags.
#[derive(clap::Args)]
pub struct Args {
    /// A few iterations of everything (a smoke run).
    #[arg(long)]
    quick: bool,
    /// Concurrencies of the scale run, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,16,256,4096,10000,100000"
    )]
    scale: Vec<u32>,
    /// Draw the scale figures to this PNG.
    #[arg(long)]
    plot: Option<std::path::PathBuf>,
    /// One JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// Run only these sections, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
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
