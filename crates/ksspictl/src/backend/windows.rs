//! The Windows backend: the installed driver through DeviceIoControl
//! ([`device`]). Kernel Schannel and ksecdd decide what the model's options
//! choose, so each of those is refused with one line saying what to do here
//! instead ([`allow`]); the server certificate comes from LocalMachine\My by
//! thumbprint.

mod device;
mod install;
mod machine;
mod system;
mod verifier;

pub use device::WinDriver;

use super::{ClientDriver, Driver, Identity, ModelOnly, StressMix, Target};
use crate::selftest::{run_selftest, Plan as SelftestPlan};
use crate::soak::{batch_bytes, batch_protocols, Batch, Counters, StressPlan};
use crate::util::{BenchSection, ModelOptions};
use crate::Failure;
use ksspi_abi::proto;

pub const NAME: &str = "windows";

/// Why Windows refuses a model-only option, in one line.
fn refused(what: ModelOnly) -> Failure {
    let why = match what {
        ModelOnly::Completion => {
            "--completion, --callback-irql, --no-requires-notify, \
             --refuse-reinit-in-callback, --no-session-info and --no-session-cache \
             choose the model's behaviour; on Windows ksecdd and Schannel decide"
        }
        ModelOnly::Soak => {
            "--faults, --workers and --disrupt drive the model; on Windows use Driver \
             Verifier's low-resources simulation (docs/WINDOWS.md) and selftest batches"
        }
        ModelOnly::Ca => {
            "--ca applies to the model; kernel Schannel trusts LocalMachine\\Root: \
             import the CA there (certutil -addstore root ca.cer)"
        }
        ModelOnly::ServerCertificate => {
            "--cert/--key and --self-signed apply to the model; kernel Schannel takes the \
             server certificate from LocalMachine\\My: use --cert-thumbprint"
        }
        ModelOnly::ClientCertificate => {
            "--cert/--key apply to the model; kernel Schannel takes a client certificate \
             from LocalMachine\\My by thumbprint: import it with its key there (certutil \
             -importpfx client.pfx) and pass --cert-thumbprint"
        }
        ModelOnly::Bench => {
            "bench measures the stack over the model against plain rustls; on Windows the \
             driver's own figures come from `ksspictl selftest`"
        }
        ModelOnly::BenchPath => "bench-path runs over the model only",
    };
    Failure(why.into())
}

/// Windows takes none of the model's options.
pub fn allow(what: ModelOnly) -> Result<(), Failure> {
    Err(refused(what))
}

const NEED_THUMBPRINT: &str = "on Windows the driver needs a server certificate in \
     LocalMachine\\My: pass --cert-thumbprint HEX (docs/WINDOWS.md shows how to make one)";

/// The installed driver (`--ca` was refused: a CA belongs in
/// LocalMachine\Root).
pub fn open(_ca: Option<&std::path::Path>) -> Result<Box<dyn Driver>, Failure> {
    Ok(Box::new(WinDriver::open()?))
}

/// The installed driver, and the client certificate's thumbprint (in
/// LocalMachine\My, where the driver's OPEN looks for it).
pub fn client(
    _ca: Option<&std::path::Path>,
    identity: Option<Identity>,
) -> Result<ClientDriver, Failure> {
    let thumbprint = match identity {
        None => None,
        Some(Identity::Thumbprint(t)) => Some(t),
        Some(_) => return Err(refused(ModelOnly::ClientCertificate)),
    };
    Ok((Box::new(WinDriver::open()?), thumbprint))
}

/// The installed driver, serving the certificate named by thumbprint.
pub fn server(identity: Identity) -> Result<(Box<dyn Driver>, [u8; 20]), Failure> {
    let thumbprint = match identity {
        Identity::Thumbprint(t) => t,
        Identity::Generated => return Err(Failure(NEED_THUMBPRINT.into())),
        Identity::Pem(..) | Identity::SelfSigned(_) => {
            return Err(refused(ModelOnly::ServerCertificate))
        }
    };
    Ok((Box::new(WinDriver::open()?), thumbprint))
}

/// The installed driver (the model's options were refused; its seed is
/// unused: ksecdd's behaviour is not seeded).
pub fn selftest_target(
    _options: &ModelOptions,
    thumbprint: Option<[u8; 20]>,
) -> Result<Target, Failure> {
    installed(thumbprint)
}

/// The installed driver and the certificate named by `thumbprint`.
fn installed(thumbprint: Option<[u8; 20]>) -> Result<Target, Failure> {
    let thumbprint = thumbprint.ok_or_else(|| Failure(NEED_THUMBPRINT.into()))?;
    Ok(Target {
        driver: Box::new(WinDriver::open()?),
        thumbprint,
        seed: 0,
    })
}

/// No faults, workers or disruptions (refused if asked for): batches are
/// self-tests.
pub fn stress_mix(_plan: &StressPlan) -> StressMix {
    StressMix {
        faults_one_in: 0,
        workers: 0,
        disrupt_percent: 0,
    }
}

/// One batch on Windows: a self-test of the installed driver.
pub fn stress_batch(plan: &StressPlan, index: u64) -> Result<Batch, Failure> {
    let _ = plan.seed; // ksecdd's behaviour is not seeded
    let protocols = batch_protocols(plan.tls, index);
    let bytes = batch_bytes(plan.bytes, index);
    let (r, _, leaked, _) = run_selftest(
        installed(plan.thumbprint)?,
        SelftestPlan {
            count: plan.concurrency * 4,
            concurrency: plan.concurrency,
            protocols,
            bytes,
            resume: false,
        },
        false,
    )?;
    let want = u64::from(bytes) * 2 * r.handshakes_ok;
    if r.bytes_checked != want {
        return Err(Failure(format!(
            "batch {index}: {} of {want} application bytes checked",
            r.bytes_checked
        )));
    }
    Ok(Batch {
        counters: Counters {
            batches_tls12: u64::from(protocols == proto::TLS12),
            batches_tls13: u64::from(protocols == proto::TLS13),
            batches_tls_both: u64::from(protocols == proto::ALL),
            handshakes_ok: r.handshakes_ok,
            handshakes_failed: r.handshakes_failed,
            handshakes_failed_clean: r.handshakes_failed,
            bytes_checked: r.bytes_checked,
            leaked,
            ..Counters::default()
        },
        latency_max_us: r.latency_max_us,
        failure: None,
    })
}

/// `bench-path --path`'s values as the model names them, so the same
/// command line parses here and meets its refusal (`bench-path` runs over
/// the model only).
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum BenchPathName {
    /// Plain rustls.
    Rustls,
    /// The engine, synchronous completions.
    EngineSync,
    /// The engine, completions on the model's threads.
    EngineAsync,
    /// The IOCTL path, synchronous completions.
    IoctlSync,
    /// The IOCTL path, completions on the model's threads.
    IoctlAsync,
    /// Plain rustls, resumed handshakes.
    RustlsResumed,
    /// The engine, resumed handshakes, synchronous completions.
    EngineSyncResumed,
    /// The engine, resumed handshakes, completions on the model's threads.
    EngineAsyncResumed,
}

/// Refused ([`allow`]).
pub fn bench_path(_path: BenchPathName, _tls: &str, _count: usize) -> Result<(), Failure> {
    allow(ModelOnly::BenchPath)
}

/// Refused ([`allow`]).
pub fn bench(
    _quick: bool,
    _scale: &[u32],
    _plot: Option<&std::path::Path>,
    _json: bool,
    _only: &[BenchSection],
) -> Result<(), Failure> {
    allow(ModelOnly::Bench)
}

/// `install --inf PATH` ([`install`]).
pub fn install(inf: &std::path::Path) -> Result<(), Failure> {
    install::install(inf)
}

/// `uninstall` ([`install`]).
pub fn uninstall() -> Result<(), Failure> {
    install::uninstall()
}

/// `verifier on|off|status` ([`verifier`]).
pub fn verifier(mode: crate::vm::verifier::Mode, keep_others: bool) -> Result<(), Failure> {
    verifier::exec(mode, keep_others)
}

/// The test VM for `acceptance`; `--dry-run` is the model's, elsewhere.
pub fn acceptance_system(dry_run: bool) -> Result<Box<dyn crate::vm::acceptance::System>, Failure> {
    if dry_run {
        return Err(Failure(
            "--dry-run runs the acceptance over the model on other hosts; on the VM run \
             `ksspictl acceptance`"
                .into(),
        ));
    }
    Ok(Box::new(system::WinSystem))
}
