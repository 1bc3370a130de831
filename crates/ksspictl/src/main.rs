//! ksspictl: drive the ksspi driver through its IOCTLs.
//!
//! On hosts without Windows the driver's device engine runs in-process over
//! the model (`--completion` and `--callback-irql` choose the model's
//! behaviour); the Windows backend (DeviceIoControl on the device interface)
//! arrives with the KMDF glue.

mod model;
mod relay;

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use ksspi_abi::*;
use ksspi_sim::{CallbackIrql, Completion, CompletionPolicy, SimConfig};
use model::Model;
use serde::Serialize;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "ksspictl",
    version,
    about = "Drive the ksspi kernel TLS driver through its IOCTLs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Versions, capabilities and counters.
    Info {
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Run the driver's self-test: handshakes between a server and a client
    /// session inside the driver.
    Selftest(SelftestArgs),
    /// Long mixed runs: self-test batches with fresh seeds, every completion
    /// mode and callback IRQL mixed, until the time is up.
    Stress {
        /// How long to run.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Handshakes at once.
        #[arg(long, default_value_t = 32)]
        concurrency: u32,
        /// TLS versions.
        #[arg(long, value_enum, default_value_t = Tls::Both)]
        tls: Tls,
        /// The first seed (each batch uses the next).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// One JSON object on stdout at the end.
        #[arg(long)]
        json: bool,
    },
    /// Handshake with a TLS server through a driver client session.
    Connect {
        /// The server, HOST:PORT.
        addr: String,
        /// The name the server's certificate must carry (default: HOST).
        #[arg(long = "server-name")]
        server_name: Option<String>,
        /// Trust this CA (PEM) (the model's Root store).
        #[arg(long)]
        ca: Option<std::path::PathBuf>,
        /// TLS versions.
        #[arg(long, value_enum, default_value_t = Tls::Both)]
        tls: Tls,
    },
    /// Accept TLS clients and run each handshake through a driver server session.
    Serve {
        /// Where to listen, ADDR:PORT.
        #[arg(long)]
        listen: String,
        /// The server certificate (PEM), with --key.
        #[arg(long, requires = "key")]
        cert: Option<std::path::PathBuf>,
        /// The private key (PEM), with --cert.
        #[arg(long, requires = "cert")]
        key: Option<std::path::PathBuf>,
        /// A self-signed certificate for this name.
        #[arg(long = "self-signed")]
        self_signed: Option<String>,
        /// TLS versions.
        #[arg(long, value_enum, default_value_t = Tls::Both)]
        tls: Tls,
        /// Serve one connection, then exit with its result.
        #[arg(long)]
        once: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Tls {
    #[value(name = "1.2")]
    V12,
    #[value(name = "1.3")]
    V13,
    Both,
}

#[derive(Clone, Copy, ValueEnum)]
enum CompletionArg {
    Async,
    Inline,
    Sync,
    Mixed,
}

#[derive(Clone, Copy, ValueEnum)]
enum IrqlArg {
    Passive,
    Dispatch,
    Mixed,
}

#[derive(clap::Args)]
struct SelftestArgs {
    /// Handshakes to run.
    #[arg(long, default_value_t = 100)]
    count: u32,
    /// Handshakes at once.
    #[arg(long, default_value_t = 8)]
    concurrency: u32,
    /// TLS versions (both: alternate).
    #[arg(long, value_enum, default_value_t = Tls::Both)]
    tls: Tls,
    /// Model: how async calls complete.
    #[arg(long, value_enum)]
    completion: Option<CompletionArg>,
    /// Model: the IRQL completion callbacks run at.
    #[arg(long = "callback-irql", value_enum)]
    callback_irql: Option<IrqlArg>,
    /// Model: the seed of every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// One JSON object on stdout.
    #[arg(long)]
    json: bool,
}

fn model_config(args: &SelftestArgs) -> SimConfig {
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
        ..SimConfig::default()
    }
}

/// A failure: one line on stderr, non-zero exit.
pub struct Failure(pub String);

fn protocols(tls: Tls) -> u32 {
    match tls {
        Tls::V12 => proto::TLS12,
        Tls::V13 => proto::TLS13,
        Tls::Both => proto::ALL,
    }
}

fn read_file(path: &std::path::Path) -> Result<String, Failure> {
    std::fs::read_to_string(path).map_err(|e| Failure(format!("{}: {e}", path.display())))
}

fn connect(
    addr: &str,
    server_name: Option<&str>,
    ca: Option<&std::path::Path>,
    tls: Tls,
) -> Result<(), Failure> {
    let model = Model::new(SimConfig::default());
    if let Some(ca) = ca {
        model
            .sim
            .store()
            .add_root_pem(&read_file(ca)?)
            .map_err(|e| Failure(format!("{}: {e}", ca.display())))?;
    }
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let name = server_name.unwrap_or(host);
    let session = relay::open(&model, false, [0; 20], name, protocols(tls))?;
    let mut sock = std::net::TcpStream::connect(addr)
        .map_err(|e| Failure(format!("connecting to {addr}: {e}")))?;
    let peer = sock
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| addr.to_string());
    let result = relay::handshake(&model, session, &mut sock, true);
    relay::close(&model, session);
    let leaked = model.unload();
    let hs = result?;
    if !hs.established {
        return Err(Failure(format!(
            "handshake with {peer} failed: {}",
            hs.status
        )));
    }
    println!(
        "connected to {peer} as {name}: handshake complete ({}), protocol {}, cipher {}",
        hs.status,
        hs.protocol_name(),
        hs.cipher_name()
    );
    if leaked > 0 {
        return Err(Failure(format!("{leaked} objects leaked at unload")));
    }
    Ok(())
}

fn serve(listen: &str, identity: Identity, tls: Tls, once: bool) -> Result<(), Failure> {
    let model = std::sync::Arc::new(Model::new(SimConfig::default()));
    let thumbprint = match identity {
        Identity::Generated => model.thumbprint,
        Identity::Pem(cert, key) => model
            .sim
            .store()
            .add_identity_pem("MY", &cert, &key)
            .map_err(|e| Failure(format!("the server certificate: {e}")))?,
        Identity::SelfSigned(name) => {
            let leaf = ksspi_sim::certs::self_signed(&[name.as_str()]);
            model
                .sim
                .store()
                .add_identity("MY", leaf.chain_der, leaf.key_der)
                .map_err(|e| Failure(format!("the self-signed certificate: {e}")))?
        }
    };
    let listener = std::net::TcpListener::bind(listen)
        .map_err(|e| Failure(format!("listening on {listen}: {e}")))?;
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| listen.to_string());
    println!("listening on {local}");
    let serve_one = move |model: &Model, mut sock: std::net::TcpStream| -> Result<(), Failure> {
        let peer = sock.peer_addr().map(|a| a.to_string()).unwrap_or_default();
        let session = relay::open(model, true, thumbprint, "", protocols(tls))?;
        let result = relay::handshake(model, session, &mut sock, false);
        relay::close(model, session);
        let hs = result?;
        if hs.established {
            println!(
                "{peer}: handshake complete ({}), protocol {}, cipher {}",
                hs.status,
                hs.protocol_name(),
                hs.cipher_name()
            );
            // No record layer yet: hold the connection until the peer closes
            // it (its close_notify is read and dropped), then let go.
            relay::drain_until_closed(&mut sock);
            Ok(())
        } else {
            Err(Failure(format!("{peer}: handshake failed: {}", hs.status)))
        }
    };
    if once {
        let (sock, _) = listener
            .accept()
            .map_err(|e| Failure(format!("accepting: {e}")))?;
        let result = serve_one(&model, sock);
        let model = std::sync::Arc::try_unwrap(model)
            .map_err(|_| Failure("the model is still shared".into()))?;
        let leaked = model.unload();
        result?;
        if leaked > 0 {
            return Err(Failure(format!("{leaked} objects leaked at unload")));
        }
        return Ok(());
    }
    for sock in listener.incoming() {
        let Ok(sock) = sock else { continue };
        let model = model.clone();
        std::thread::spawn(move || {
            // A failed handshake never stops the server.
            if let Err(Failure(reason)) = serve_one(&model, sock) {
                eprintln!("ksspictl: {reason}");
            }
        });
    }
    Ok(())
}

/// Where the server's certificate comes from.
enum Identity {
    Generated,
    Pem(String, String),
    SelfSigned(String),
}

fn ntstatus_name(status: i32) -> String {
    format!("NTSTATUS {:#010x}", status as u32)
}

#[derive(Serialize)]
struct Completions {
    pending: u64,
    inline_callback: u64,
    sync_no_callback: u64,
}

#[derive(Serialize)]
struct Callbacks {
    passive: u64,
    dispatch: u64,
}

#[derive(Serialize)]
struct Latency {
    p50: u64,
    p99: u64,
    max: u64,
}

#[derive(Serialize)]
struct SelftestJson {
    backend: &'static str,
    count: u32,
    concurrency: u32,
    handshakes_ok: u64,
    handshakes_failed: u64,
    sessions: u64,
    async_contexts_created: u64,
    reinits: u64,
    steps: u64,
    completions: Completions,
    callbacks: Callbacks,
    work_items: u64,
    elapsed_us: u64,
    handshakes_per_second: f64,
    latency_us: Latency,
    leaked: u64,
}

/// One self-test over a fresh model: the reply and what leaked at unload.
fn run_selftest(
    config: SimConfig,
    count: u32,
    concurrency: u32,
    protocols: u32,
    spinner: bool,
) -> Result<(SelftestReply, u64), Failure> {
    let model = Model::new(config);
    let request = SelftestRequest {
        count,
        concurrency,
        protocols,
        completion: 0,
        callback_irql: 0,
        seed: model.sim.config().seed,
        thumbprint: model.thumbprint,
        bytes: 0,
    };
    let mut input = vec![0u8; 256];
    let n = encode(&request, &mut input)
        .map_err(|e| Failure(format!("encoding the request: {e:?}")))?;
    let pending = model.send(IOCTL_KSSPI_SELFTEST, &input[..n], 512);
    let bar = spinner.then(|| {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} self-test: {msg} [{elapsed}]")
                .expect("a valid template"),
        );
        bar.set_message(format!(
            "{count} handshakes at concurrency {concurrency} over the model"
        ));
        bar.enable_steady_tick(Duration::from_millis(100));
        bar
    });
    let (status, reply) = pending
        .recv_timeout(Duration::from_secs(600))
        .map_err(|_| Failure("the self-test did not complete within 600 s".into()))?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if status != 0 {
        return Err(Failure(format!(
            "the self-test request failed: {}",
            ntstatus_name(status)
        )));
    }
    let r = decode::<SelftestReply>(&reply)
        .map_err(|e| Failure(format!("a malformed self-test reply: {e:?}")))?;
    Ok((r, model.unload()))
}

#[derive(Serialize)]
struct StressJson {
    backend: &'static str,
    duration_s: f64,
    batches: u64,
    handshakes_ok: u64,
    handshakes_failed: u64,
    handshakes_per_second: f64,
    latency_max_us: u64,
    leaked: u64,
}

fn stress(duration: u64, concurrency: u32, tls: Tls, seed: u64, json: bool) -> Result<(), Failure> {
    if concurrency == 0 {
        return Err(Failure("--concurrency must be at least 1".into()));
    }
    let start = std::time::Instant::now();
    let deadline = start + Duration::from_secs(duration);
    let bar = (!json).then(|| {
        let bar = ProgressBar::new(duration);
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} s  {msg}")
                .expect("a valid template"),
        );
        bar
    });
    let (mut batches, mut ok, mut failed, mut leaked, mut worst) = (0u64, 0u64, 0u64, 0u64, 0u64);
    while std::time::Instant::now() < deadline {
        let config = SimConfig {
            seed: seed + batches,
            completion: CompletionPolicy::Mixed,
            callback_irql: CallbackIrql::Mixed,
            ..SimConfig::default()
        };
        let (r, l) = run_selftest(config, concurrency * 4, concurrency, protocols(tls), false)?;
        batches += 1;
        ok += r.handshakes_ok;
        failed += r.handshakes_failed;
        leaked += l;
        worst = worst.max(r.latency_max_us);
        if let Some(bar) = &bar {
            bar.set_position(start.elapsed().as_secs().min(duration));
            bar.set_message(format!(
                "{ok} ok, {failed} failed, {leaked} leaked, {batches} batches"
            ));
        }
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let secs = start.elapsed().as_secs_f64();
    let summary = StressJson {
        backend: "model",
        duration_s: (secs * 10.0).round() / 10.0,
        batches,
        handshakes_ok: ok,
        handshakes_failed: failed,
        handshakes_per_second: ((ok as f64 / secs) * 10.0).round() / 10.0,
        latency_max_us: worst,
        leaked,
    };
    if json {
        println!("{}", serde_json::to_string(&summary).expect("serialisable"));
    } else {
        println!(
            "stress: {:.1} s, {} batches, {} handshakes ok, {} failed, {:.1}/s, worst latency {} µs, {} leaked",
            summary.duration_s, batches, ok, failed, summary.handshakes_per_second, worst, leaked
        );
    }
    if failed > 0 || leaked > 0 {
        return Err(Failure(format!(
            "{failed} handshakes failed, {leaked} objects leaked"
        )));
    }
    Ok(())
}

fn selftest(args: &SelftestArgs) -> Result<(), Failure> {
    if args.count == 0 || args.concurrency == 0 {
        return Err(Failure(
            "--count and --concurrency must be at least 1".into(),
        ));
    }
    let (r, leaked) = run_selftest(
        model_config(args),
        args.count,
        args.concurrency,
        protocols(args.tls),
        !args.json,
    )?;
    let rate = if r.elapsed_us > 0 {
        r.handshakes_ok as f64 * 1e6 / r.elapsed_us as f64
    } else {
        0.0
    };
    let json = SelftestJson {
        backend: "model",
        count: args.count,
        concurrency: args.concurrency,
        handshakes_ok: r.handshakes_ok,
        handshakes_failed: r.handshakes_failed,
        sessions: r.sessions,
        async_contexts_created: r.async_contexts_created,
        reinits: r.reinits,
        steps: r.steps,
        completions: Completions {
            pending: r.completions_pending,
            inline_callback: r.completions_inline_callback,
            sync_no_callback: r.completions_sync_no_callback,
        },
        callbacks: Callbacks {
            passive: r.callbacks_passive,
            dispatch: r.callbacks_dispatch,
        },
        work_items: r.work_items,
        elapsed_us: r.elapsed_us,
        handshakes_per_second: (rate * 10.0).round() / 10.0,
        latency_us: Latency {
            p50: r.latency_p50_us,
            p99: r.latency_p99_us,
            max: r.latency_max_us,
        },
        leaked,
    };
    if args.json {
        println!("{}", serde_json::to_string(&json).expect("serialisable"));
    } else {
        print_table(&json);
    }
    if json.handshakes_failed > 0 {
        return Err(Failure(format!(
            "{} of {} handshakes failed",
            json.handshakes_failed, args.count
        )));
    }
    if json.leaked > 0 {
        return Err(Failure(format!("{} objects leaked at unload", json.leaked)));
    }
    Ok(())
}

fn print_table(j: &SelftestJson) {
    let rows: [(&str, String); 16] = [
        ("backend", j.backend.to_string()),
        ("handshakes ok", j.handshakes_ok.to_string()),
        ("handshakes failed", j.handshakes_failed.to_string()),
        ("sessions", j.sessions.to_string()),
        (
            "async contexts created",
            j.async_contexts_created.to_string(),
        ),
        ("reinits", j.reinits.to_string()),
        ("steps", j.steps.to_string()),
        (
            "completed later (callback after return)",
            j.completions.pending.to_string(),
        ),
        (
            "completed with callback before return",
            j.completions.inline_callback.to_string(),
        ),
        (
            "completed synchronously, no callback",
            j.completions.sync_no_callback.to_string(),
        ),
        (
            "callbacks at PASSIVE / DISPATCH",
            format!("{} / {}", j.callbacks.passive, j.callbacks.dispatch),
        ),
        ("work items queued", j.work_items.to_string()),
        ("elapsed", format!("{:.3} s", j.elapsed_us as f64 / 1e6)),
        (
            "handshakes per second",
            format!("{:.1}", j.handshakes_per_second),
        ),
        (
            "latency p50 / p99 / max",
            format!(
                "{} / {} / {} µs",
                j.latency_us.p50, j.latency_us.p99, j.latency_us.max
            ),
        ),
        ("leaked at unload", j.leaked.to_string()),
    ];
    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    println!(
        "ksspi self-test: {} handshakes at concurrency {}",
        j.count, j.concurrency
    );
    for (k, v) in rows {
        println!("  {k:<width$}  {v}");
    }
}

#[derive(Serialize)]
struct InfoJson {
    backend: &'static str,
    abi_version: u16,
    driver_version: String,
    capabilities: Vec<&'static str>,
    sessions_open: u32,
    sessions_total: u64,
    handshakes_ok: u64,
    handshakes_failed: u64,
    max_sessions_per_file: u32,
    max_buffered_per_session: u32,
}

fn info(json: bool) -> Result<(), Failure> {
    let model = Model::new(SimConfig::default());
    let (status, reply) = model
        .send(IOCTL_KSSPI_GET_INFO, &[], 256)
        .recv_timeout(Duration::from_secs(30))
        .map_err(|_| Failure("GET_INFO did not complete".into()))?;
    if status != 0 {
        return Err(Failure(format!(
            "GET_INFO failed: {}",
            ntstatus_name(status)
        )));
    }
    let r = decode::<InfoReply>(&reply)
        .map_err(|e| Failure(format!("a malformed info reply: {e:?}")))?;
    let leaked = model.unload();
    if leaked > 0 {
        return Err(Failure(format!("{leaked} objects leaked at unload")));
    }
    let mut capabilities = Vec::new();
    for (bit, name) in [
        (caps::MODEL, "model"),
        (caps::TLS12, "tls1.2"),
        (caps::TLS13, "tls1.3"),
        (caps::SELFTEST, "selftest"),
        (caps::RECORD_LAYER, "record-layer"),
    ] {
        if r.capabilities & bit != 0 {
            capabilities.push(name);
        }
    }
    let j = InfoJson {
        backend: "model",
        abi_version: ABI_VERSION,
        driver_version: format!(
            "{}.{}.{}",
            r.driver_version[0], r.driver_version[1], r.driver_version[2]
        ),
        capabilities,
        sessions_open: r.sessions_open,
        sessions_total: r.sessions_total,
        handshakes_ok: r.handshakes_ok,
        handshakes_failed: r.handshakes_failed,
        max_sessions_per_file: r.max_sessions_per_file,
        max_buffered_per_session: r.max_buffered_per_session,
    };
    if json {
        println!("{}", serde_json::to_string(&j).expect("serialisable"));
    } else {
        println!(
            "ksspi driver {} (ABI {}), backend: {}",
            j.driver_version, j.abi_version, j.backend
        );
        println!("  capabilities: {}", j.capabilities.join(", "));
        println!(
            "  sessions open / total: {} / {}",
            j.sessions_open, j.sessions_total
        );
        println!(
            "  handshakes ok / failed: {} / {}",
            j.handshakes_ok, j.handshakes_failed
        );
        println!(
            "  limits: {} sessions per file, {} bytes buffered per session",
            j.max_sessions_per_file, j.max_buffered_per_session
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    #[cfg(windows)]
    eprintln!(
        "ksspictl: note: this build drives the device engine over the in-process model; \
         the DeviceIoControl backend for the installed driver arrives with the KMDF glue"
    );
    let result = match &cli.command {
        Command::Info { json } => info(*json),
        Command::Selftest(args) => selftest(args),
        Command::Stress {
            duration,
            concurrency,
            tls,
            seed,
            json,
        } => stress(*duration, *concurrency, *tls, *seed, *json),
        Command::Connect {
            addr,
            server_name,
            ca,
            tls,
        } => connect(addr, server_name.as_deref(), ca.as_deref(), *tls),
        Command::Serve {
            listen,
            cert,
            key,
            self_signed,
            tls,
            once,
        } => {
            let identity = match (cert, key, self_signed) {
                (Some(c), Some(k), _) => match (read_file(c), read_file(k)) {
                    (Ok(c), Ok(k)) => Ok(Identity::Pem(c, k)),
                    (Err(e), _) | (_, Err(e)) => Err(e),
                },
                (_, _, Some(name)) => Ok(Identity::SelfSigned(name.clone())),
                _ => Ok(Identity::Generated),
            };
            identity.and_then(|identity| serve(listen, identity, *tls, *once))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(reason)) => {
            eprintln!("ksspictl: {reason}");
            ExitCode::FAILURE
        }
    }
}
