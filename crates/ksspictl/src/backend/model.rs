//! The model backend, for hosts without Windows: the driver's device engine
//! in-process over the model of ksecdd + Schannel ([`device`]), the soak's
//! batch over it ([`batch`]), and the benchmark ([`crate::bench`]). It takes
//! every model option; what [`super`] forwards lands here.

pub mod batch;
mod device;
mod pem;
mod system;

pub use device::{Model, Pending, Unloaded, DROPPED};

use super::{ClientDriver, Driver, Identity, ModelOnly, StressMix, Target};
use crate::bench;
use crate::soak::{batch_bytes, batch_protocols, Batch, StressPlan};
use crate::util::{BenchSection, CompletionArg, IrqlArg, ModelOptions};
use crate::Failure;
use indicatif::{ProgressBar, ProgressStyle};
use ksspi_sim::certs::thumbprint_hex;
use ksspi_sim::{CallbackIrql, Completion, CompletionPolicy, SimConfig};
use std::time::Duration;

/// Counts live heap bytes, for `bench`'s memory per session.
#[global_allocator]
static ALLOCATOR: bench::Counting = bench::Counting;

pub const NAME: &str = "model";

/// The model takes every option.
pub fn allow(_what: ModelOnly) -> Result<(), Failure> {
    Ok(())
}

fn model_config(args: &ModelOptions) -> SimConfig {
    let completion = match args.completion.unwrap_or(CompletionArg::Mixed) {
        CompletionArg::Async => CompletionPolicy::Always(Completion::Async),
        CompletionArg::Inline => CompletionPolicy::Always(Completion::Inline),
        CompletionArg::Sync => CompletionPolicy::Always(Completion::Sync),
        CompletionArg::Mixed => CompletionPolicy::Mixed,
    };
    let callback_irql = match args.callback_irql.unwrap_or(IrqlArg::Mixed) {
        IrqlArg::Passive => CallbackIrql::Passive,
        IrqlArg::Dispatch => CallbackIrql::Dispatch,
        IrqlArg::Mixed => CallbackIrql::Mixed,
    };
    SimConfig {
        seed: args.seed,
        completion,
        callback_irql,
        requires_notify_exported: !args.no_requires_notify,
        reinit_in_callback: !args.refuse_reinit_in_callback,
        session_info_answered: !args.no_session_info,
        session_cache: !args.no_session_cache,
        ..model_defaults()
    }
}

/// The model as the harness runs it: servers send two TLS 1.3 session
/// tickets after the handshake, as OpenSSL's do, so clients' record layers
/// meet SEC_I_RENEGOTIATE as they would in the field.
fn model_defaults() -> SimConfig {
    SimConfig {
        tls13_tickets: 2,
        ..SimConfig::default()
    }
}

/// A fresh model, trusting `ca` as well.
pub fn open(ca: Option<&std::path::Path>) -> Result<Box<dyn Driver>, Failure> {
    Ok(Box::new(open_model(ca)?))
}

fn open_model(ca: Option<&std::path::Path>) -> Result<Model, Failure> {
    let model = Model::new(model_defaults());
    if let Some(ca) = ca {
        for cert in pem::trust_anchors(ca)? {
            model
                .sim
                .store()
                .add_root_der(cert)
                .map_err(|e| Failure(format!("{}: {e}", ca.display())))?;
        }
    }
    Ok(model)
}

/// A fresh model trusting `ca` as well, with the client certificate
/// `identity` names: PEM files (checked as `serve`'s are, then added to the
/// model's LocalMachine\My, where the driver's OPEN finds it by thumbprint,
/// as kernel Schannel would) or a thumbprint the model's store must hold.
pub fn client(
    ca: Option<&std::path::Path>,
    identity: Option<Identity>,
) -> Result<ClientDriver, Failure> {
    let model = open_model(ca)?;
    let thumbprint = match identity {
        None => None,
        Some(Identity::Pem(cert, key)) => {
            let identity = pem::certificate_and_key(&cert, &key)?;
            Some(
                model
                    .sim
                    .store()
                    .add_identity("MY", identity.chain, identity.key)
                    .map_err(|e| Failure(format!("{}: {e}", cert.display())))?,
            )
        }
        Some(Identity::Thumbprint(t)) => {
            if model.sim.store().find_identity("MY", &t).is_none() {
                return Err(Failure(format!(
                    "no certificate with thumbprint {} in the model's LocalMachine\\My \
                     (a fresh model holds only its generated server certificate): \
                     pass --cert/--key",
                    thumbprint_hex(&t)
                )));
            }
            Some(t)
        }
        Some(Identity::Generated | Identity::SelfSigned(_)) => None,
    };
    Ok((Box::new(model), thumbprint))
}

/// A fresh model serving the generated certificate, one by thumbprint, or
/// one added to its LocalMachine\My store.
pub fn server(identity: Identity) -> Result<(Box<dyn Driver>, [u8; 20]), Failure> {
    let model = Model::new(model_defaults());
    let thumbprint = match identity {
        Identity::Generated => model.thumbprint,
        Identity::Thumbprint(t) => {
            if model.sim.store().find_identity("MY", &t).is_none() {
                return Err(Failure(format!(
                    "no certificate with thumbprint {} in the model's LocalMachine\\My \
                     (it holds the generated one, {}; or pass --cert/--key or --self-signed)",
                    thumbprint_hex(&t),
                    thumbprint_hex(&model.thumbprint)
                )));
            }
            t
        }
        Identity::Pem(cert, key) => {
            let identity = pem::certificate_and_key(&cert, &key)?;
            model
                .sim
                .store()
                .add_identity("MY", identity.chain, identity.key)
                .map_err(|e| Failure(format!("{}: {e}", cert.display())))?
        }
        Identity::SelfSigned(name) => {
            // A name rcgen can put in a certificate and a client can ask
            // for: a DNS name or an IP address.
            if rustls::pki_types::ServerName::try_from(name.as_str()).is_err() {
                return Err(Failure(format!(
                    "--self-signed {name:?}: not a DNS name or an IP address"
                )));
            }
            let leaf = ksspi_sim::certs::self_signed(&[name.as_str()]);
            model
                .sim
                .store()
                .add_identity("MY", leaf.chain_der, leaf.key_der)
                .map_err(|e| Failure(format!("the self-signed certificate: {e}")))?
        }
    };
    Ok((Box::new(model), thumbprint))
}

/// A fresh model configured by `options`; its generated certificate unless
/// `thumbprint` names another.
pub fn selftest_target(
    options: &ModelOptions,
    thumbprint: Option<[u8; 20]>,
) -> Result<Target, Failure> {
    let config = model_config(options);
    let seed = config.seed;
    let model = Model::new(config);
    let thumbprint = thumbprint.unwrap_or(model.thumbprint);
    Ok(Target {
        driver: Box::new(model),
        thumbprint,
        seed,
    })
}

/// The soak's defaults: one fault point in 200, two workers, 40 % disrupted.
pub fn stress_mix(plan: &StressPlan) -> StressMix {
    StressMix {
        faults_one_in: plan.faults.unwrap_or(200),
        workers: plan.workers.unwrap_or(2),
        disrupt_percent: plan.disrupt.unwrap_or(40),
    }
}

/// One batch over the model: the soak's mix (see [`crate::soak`]). TLS
/// versions rotate every batch, tickets every six, faults every other one,
/// so twelve batches see every combination.
pub fn stress_batch(plan: &StressPlan, index: u64) -> Result<Batch, Failure> {
    let mix = stress_mix(plan);
    batch::batch(&batch::BatchPlan {
        index,
        seed: plan.seed.wrapping_add(index),
        concurrency: plan.concurrency,
        protocols: batch_protocols(plan.tls, index),
        tickets: if (index / 6).is_multiple_of(2) { 2 } else { 0 },
        faults: if index % 2 == 1 { mix.faults_one_in } else { 0 },
        bytes: batch_bytes(plan.bytes, index),
        workers: mix.workers,
        disrupt: mix.disrupt_percent,
        thumbprint: plan.thumbprint,
    })
}

pub use bench::HandshakePath as BenchPathName;

pub fn bench_path(path: BenchPathName, tls: &str, count: usize) -> Result<(), Failure> {
    let version = match tls {
        "1.2" => ksspi_sim::baseline::Version::Tls12,
        "1.3" => ksspi_sim::baseline::Version::Tls13,
        other => return Err(Failure(format!("--tls takes 1.2 or 1.3, not {other}"))),
    };
    bench::run_path(path, version, count)
}

pub fn bench(
    quick: bool,
    scale: &[u32],
    plot: Option<&std::path::Path>,
    json: bool,
    only: &[BenchSection],
) -> Result<(), Failure> {
    if scale.contains(&0) {
        return Err(Failure("--scale takes concurrencies of at least 1".into()));
    }
    let plan = bench::Plan {
        quick,
        scale: scale.to_vec(),
        plot: plot.map(|p| p.to_path_buf()),
        only: only.to_vec(),
    };
    let bar = (!json).then(|| {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} bench: {msg} [{elapsed}]")
                .expect("a valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(100));
        bar
    });
    let progress = |what: &str| {
        if let Some(bar) = &bar {
            bar.set_message(what.to_string());
        }
    };
    let report = bench::run(&plan, &progress);
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let report = report?;
    if json {
        println!("{}", serde_json::to_string(&report).expect("serialisable"));
    } else {
        bench::print(&report);
    }
    Ok(())
}

/// Why a VM command does not run over the model, in one line.
fn windows_only(what: &str) -> Failure {
    Failure(format!("only on Windows: {what}"))
}

/// `install`: refused ([`windows_only`]).
pub fn install(_inf: &std::path::Path) -> Result<(), Failure> {
    Err(windows_only(
        "`install` stages the driver package and creates its root-enumerated device \
         (SetupAPI); here the driver's device engine runs in-process over the model, with \
         nothing to install",
    ))
}

/// `uninstall`: refused.
pub fn uninstall() -> Result<(), Failure> {
    Err(windows_only(
        "`uninstall` removes the ksspi device and its driver package; over the model \
         nothing is installed",
    ))
}

/// `verifier`: refused.
pub fn verifier(_mode: crate::vm::verifier::Mode, _keep_others: bool) -> Result<(), Failure> {
    Err(windows_only(
        "`verifier` sets Driver Verifier for ksspi_driver.sys; over the model, the model's \
         own verifier checks every run (docs/RELIABILITY.md)",
    ))
}

/// `acceptance`: only `--dry-run` runs here.
pub fn acceptance_system(dry_run: bool) -> Result<Box<dyn crate::vm::acceptance::System>, Failure> {
    if dry_run {
        Ok(Box::new(system::ModelSystem))
    } else {
        Err(windows_only(
            "`acceptance` runs on the test VM; here `ksspictl acceptance --dry-run` runs \
             its model-capable steps over the model",
        ))
    }
}
