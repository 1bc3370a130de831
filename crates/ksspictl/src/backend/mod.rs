//! What the harness drives, chosen once, here: the installed driver through
//! DeviceIoControl (Windows, `windows`) or the same device engine in-process
//! over the model (elsewhere, [`model`]). Both take an IOCTL's code and input
//! and return its NTSTATUS and reply, blocking until it completes.
//!
//! This file is the one interface the commands use, and the only place that
//! names the platform: the functions below forward to whichever backend was
//! built (as msquic's `quic_platform.h` picks its platform). Before they do,
//! they ask the backend whether it takes the model-only options they were
//! given ([`allow`]): the model takes them all, Windows refuses each with one
//! line saying what to do there instead.

use crate::soak::{Batch, StressPlan};
use crate::util::ModelOptions;
use crate::Failure;
use std::path::Path;

mod process;

#[cfg(not(windows))]
pub mod model;
#[cfg(not(windows))]
use model as chosen;
#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as chosen;

/// A driver to send IOCTLs to. Calls may come from several threads at once.
pub trait Driver: Send + Sync {
    /// "windows" or "model".
    fn backend(&self) -> &'static str;

    /// Send one IOCTL with an output buffer of `capacity` bytes and wait for
    /// its completion: its NTSTATUS and reply bytes.
    fn call(&self, code: u32, input: &[u8], capacity: usize) -> Result<(i32, Vec<u8>), Failure>;

    /// Let go of the driver; returns what the model's verifier still holds
    /// afterwards (always 0 on Windows, where Driver Verifier does this job).
    fn finish(self: Box<Self>) -> u64;
}

/// This backend's name ("model" or "windows"), as `stress` reports it.
pub const NAME: &str = chosen::NAME;

/// What the model takes and Windows does not, by what it chooses.
#[derive(Clone, Copy, Debug)]
pub enum ModelOnly {
    /// `selftest --completion`, `--callback-irql`, `--no-requires-notify`,
    /// `--refuse-reinit-in-callback`: how the model's calls complete.
    Completion,
    /// `stress --faults`, `--workers`, `--disrupt`: the soak's mix.
    Soak,
    /// `connect --ca`: a CA in the model's Root store.
    Ca,
    /// `serve --cert/--key`, `--self-signed`: the model's server certificate.
    ServerCertificate,
    /// `connect --cert/--key`: a client certificate put in the model's store.
    ClientCertificate,
    /// `bench`: the stack over the model against plain rustls.
    Bench,
    /// `bench-path`: one of `bench`'s handshake paths.
    BenchPath,
}

/// `Ok` if this backend takes `what`; on Windows the one-line refusal.
pub fn allow(what: ModelOnly) -> Result<(), Failure> {
    chosen::allow(what)
}

/// The driver, trusting `ca` as well (model only): for `connect` and `info`.
pub fn open(ca: Option<&Path>) -> Result<Box<dyn Driver>, Failure> {
    if ca.is_some() {
        allow(ModelOnly::Ca)?;
    }
    chosen::open(ca)
}

/// `connect`'s driver and its client certificate's thumbprint, if any.
pub type ClientDriver = (Box<dyn Driver>, Option<[u8; 20]>);

/// The driver for `connect`, trusting `ca` as well (model only), and the
/// thumbprint of the client certificate `identity` names (`None`: no client
/// certificate). `identity` is a [`Identity::Thumbprint`] (Windows: in
/// LocalMachine\My; the model: in its own store) or [`Identity::Pem`]
/// (model only: checked, then added to the model's LocalMachine\My).
pub fn client(ca: Option<&Path>, identity: Option<Identity>) -> Result<ClientDriver, Failure> {
    if ca.is_some() {
        allow(ModelOnly::Ca)?;
    }
    if matches!(identity, Some(Identity::Pem(..))) {
        allow(ModelOnly::ClientCertificate)?;
    }
    chosen::client(ca, identity)
}

/// Where the server's certificate comes from.
#[cfg_attr(windows, allow(dead_code))] // PEM and self-signed are refused there
pub enum Identity {
    /// The model's generated certificate.
    Generated,
    /// A certificate in LocalMachine\My, by SHA-1 thumbprint.
    Thumbprint([u8; 20]),
    /// A certificate file and its key file, PEM (model only; the model
    /// checks both before it serves).
    Pem(std::path::PathBuf, std::path::PathBuf),
    /// A self-signed certificate for this name (model only).
    SelfSigned(String),
}

/// The driver for `serve` and the thumbprint of the certificate it serves.
pub fn server(identity: Identity) -> Result<(Box<dyn Driver>, [u8; 20]), Failure> {
    if matches!(identity, Identity::Pem(..) | Identity::SelfSigned(_)) {
        allow(ModelOnly::ServerCertificate)?;
    }
    chosen::server(identity)
}

/// What a self-test runs on: the driver, the server certificate and the seed.
pub struct Target {
    pub driver: Box<dyn Driver>,
    pub thumbprint: [u8; 20],
    pub seed: u64,
}

/// The driver for one self-test and the server certificate's thumbprint: a
/// fresh model configured by `options`, or the installed driver (which
/// refuses them).
pub fn selftest_target(
    options: &ModelOptions,
    thumbprint: Option<[u8; 20]>,
) -> Result<Target, Failure> {
    if options.chosen() {
        allow(ModelOnly::Completion)?;
    }
    chosen::selftest_target(options, thumbprint)
}

/// The soak's mix as this backend runs it (all 0 on Windows).
pub struct StressMix {
    /// One fault point in this many fails in fault batches (0: none).
    pub faults_one_in: u64,
    /// User-mode threads driving IOCTL session pairs.
    pub workers: u32,
    /// Percent of those pairs disrupted.
    pub disrupt_percent: u32,
}

/// The mix `plan` asks of this backend, defaults filled in; `Err` if it
/// asks for one this backend does not run.
pub fn stress_mix(plan: &StressPlan) -> Result<StressMix, Failure> {
    if plan.faults.is_some() || plan.workers.is_some() || plan.disrupt.is_some() {
        allow(ModelOnly::Soak)?;
    }
    Ok(chosen::stress_mix(plan))
}

/// One `stress` batch: over the model the soak's mix (a fresh device, its
/// self-test and the workers' pairs); on Windows a self-test of the
/// installed driver.
pub fn stress_batch(plan: &StressPlan, index: u64) -> Result<Batch, Failure> {
    chosen::stress_batch(plan, index)
}

/// `bench-path --path`'s values: the model's handshake paths (on Windows one
/// placeholder: `bench-path` is refused there).
pub use chosen::BenchPathName;

/// `bench`: run it and print its report (model only).
pub fn bench(
    quick: bool,
    scale: &[u32],
    plot: Option<&Path>,
    json: bool,
    only: &[crate::util::BenchSection],
) -> Result<(), Failure> {
    allow(ModelOnly::Bench)?;
    chosen::bench(quick, scale, plot, json, only)
}

/// `bench-path`: `count` handshakes through one path (model only).
pub fn bench_path(path: BenchPathName, tls: &str, count: usize) -> Result<(), Failure> {
    allow(ModelOnly::BenchPath)?;
    chosen::bench_path(path, tls, count)
}

/// `install --inf PATH`: stage the driver package, create the ksspi device
/// if there is none, wait for its interface (Windows only).
pub fn install(inf: &Path) -> Result<(), Failure> {
    chosen::install(inf)
}

/// `uninstall`: remove the ksspi device and its driver package (Windows
/// only).
pub fn uninstall() -> Result<(), Failure> {
    chosen::uninstall()
}

/// `verifier on|off|status` (Windows only).
pub fn verifier(mode: crate::vm::verifier::Mode, keep_others: bool) -> Result<(), Failure> {
    chosen::verifier(mode, keep_others)
}

/// What `acceptance` asks its questions of: the machine (Windows), or the
/// model for `--dry-run` (elsewhere).
pub fn acceptance_system(dry_run: bool) -> Result<Box<dyn crate::vm::acceptance::System>, Failure> {
    chosen::acceptance_system(dry_run)
}
