//! The commands, one file each with its flags (`Args`) and its `exec`; this
//! file holds only their table (the subcommands, with the one line `--help`
//! gives each) and the dispatch.

use crate::Failure;
use clap::Subcommand;

mod acceptance;
mod bench;
mod bench_path;
mod connect;
mod info;
mod install;
mod selftest;
mod serve;
mod stress;
mod uninstall;
mod verifier;

#[derive(Subcommand)]
pub enum Command {
    /// Versions, capabilities and counters.
    Info(info::Args),
    /// Run the driver's self-test: handshakes between a server and a client
    /// session inside the driver.
    Selftest(selftest::Args),
    /// A soak: self-test batches until the time is up; every counter must
    /// balance.
    Stress(stress::Args),
    /// Benchmarks over the model: handshakes, continuations and records
    /// against plain rustls, scale and memory per session (model only).
    Bench(bench::Args),
    /// One handshake path of `bench`, alone: what `bench --only
    /// instructions` runs under callgrind (model only).
    #[command(hide = true)]
    BenchPath(bench_path::Args),
    /// Handshake with a TLS server through a driver client session.
    Connect(connect::Args),
    /// Accept TLS clients and run each handshake through a driver server session.
    Serve(serve::Args),
    /// Install the driver package and create its device (Windows: what
    /// pnputil /add-driver /install and devgen do).
    Install(install::Args),
    /// Remove the ksspi device and its driver package (Windows).
    Uninstall(uninstall::Args),
    /// Driver Verifier for ksspi_driver.sys: on, off or status (Windows).
    Verifier(verifier::Args),
    /// The whole acceptance on the test VM, resumable across the Driver
    /// Verifier reboot; writes acceptance-report.json (--dry-run: over the
    /// model).
    Acceptance(acceptance::Args),
}

/// Run `command`.
pub fn exec(command: &Command) -> Result<(), Failure> {
    match command {
        Command::Info(args) => info::exec(args),
        Command::Selftest(args) => selftest::exec(args),
        Command::Stress(args) => stress::exec(args),
        Command::Bench(args) => bench::exec(args),
        Command::BenchPath(args) => bench_path::exec(args),
        Command::Connect(args) => connect::exec(args),
        Command::Serve(args) => serve::exec(args),
        Command::Install(args) => install::exec(args),
        Command::Uninstall(args) => uninstall::exec(args),
        Command::Verifier(args) => verifier::exec(args),
        Command::Acceptance(args) => acceptance::exec(args),
    }
}
