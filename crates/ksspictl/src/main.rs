//! ksspictl: drive the ksspi driver through its IOCTLs.
//!
//! On Windows it opens the installed driver through its device interface and
//! sends DeviceIoControl requests; on other hosts the driver's device engine
//! runs in-process over the model (`--completion` and `--callback-irql`
//! choose the model's behaviour). [`backend`] makes that choice, once; the
//! commands ([`commands`], one file each), the relay to TCP peers
//! ([`relay`]) and the output are the same code on both.

mod backend;
mod commands;
mod observed;
mod relay;
mod selftest;
mod soak;
mod util;
mod vm;
// The benchmark, its callgrind counts and its plot measure the stack over
// the model: built where the model backend is (see `backend`).
#[cfg(not(windows))]
mod bench;
#[cfg(not(windows))]
mod instructions;
#[cfg(not(windows))]
mod plot;

use clap::Parser;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "ksspictl",
    version,
    about = "Drive the ksspi kernel TLS driver through its IOCTLs"
)]
struct Cli {
    #[command(subcommand)]
    command: commands::Command,
}

/// A failure: one line on stderr, non-zero exit.
#[derive(Debug)]
pub struct Failure(pub String);

fn main() -> ExitCode {
    #[cfg(unix)]
    default_sigpipe();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return util::usage_error(e),
    };
    match commands::exec(&cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(reason)) => {
            eprintln!("ksspictl: {reason}");
            ExitCode::FAILURE
        }
    }
}

/// Let a closed pipe end the program quietly, as it ends other Unix tools
/// (`ksspictl stress --json | head -c 100`): Rust's runtime ignores SIGPIPE
/// before `main`, so a write to a closed pipe fails with `EPIPE` and
/// `println!` panics ("failed printing to stdout"); with the default
/// disposition restored, the process ends by SIGPIPE without a word, like
/// `cat` or `grep` (rustc does the same, as its `-Zon-broken-pipe=kill`).
#[cfg(unix)]
fn default_sigpipe() {
    // SAFETY: signal(2), declared in <signal.h> (the libc crate's binding):
    // setting SIGPIPE's disposition to SIG_DFL installs no handler code and
    // touches no memory of ours; it runs first in `main`, before any thread.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
