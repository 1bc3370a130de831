//! ksspictl: drive the ksspi driver through its IOCTLs.
//!
//! On Windows it opens the installed driver through its device interface and
//! sends DeviceIoControl requests ([`windows`]). On other hosts the driver's
//! device engine runs in-process over the model ([`model`]; `--completion`
//! and `--callback-irql` choose the model's behaviour). Everything else (the
//! commands, the relay to TCP peers, the output) is the same code.

mod backend;
#[cfg(not(windows))]
mod bench;
#[cfg(not(windows))]
mod instructions;
#[cfg(not(windows))]
mod plot;
mod relay;
mod selftest;
mod soak;
mod util;

use backend::{Driver, Identity};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use ksspi_abi::*;
use selftest::run_selftest;
use serde::Serialize;
use std::process::ExitCode;
use std::time::Duration;
use util::*;

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
    /// A soak: batches until the time is up, each a self-test with every
    /// completion mode and callback IRQL mixed and (over the model) user-mode
    /// IOCTL session pairs beside it, some cancelled, closed or cut off by a
    /// file close mid-flight, TLS versions and tickets rotated per batch,
    /// faults injected in every other batch; every counter must balance.
    Stress {
        /// How long to run.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Self-test handshakes at once (each batch runs four times as many).
        #[arg(long, default_value_t = 32)]
        concurrency: u32,
        /// TLS versions (both: rotate 1.2-only, 1.3-only and both per batch).
        #[arg(long, value_enum, default_value_t = Tls::Both)]
        tls: Tls,
        /// The first seed (each batch uses the next).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Application bytes each self-test pair exchanges both ways
        /// [default: 16384 in two batches of four, 0 in the others].
        #[arg(long)]
        bytes: Option<u32>,
        /// Model: in every other batch one fault point (an allocation or an
        /// SSPI call) in N fails, seeded: N or 1inN, 0 for none [default: 200].
        #[arg(long, value_parser = parse_one_in)]
        faults: Option<u64>,
        /// Model: user-mode threads driving IOCTL session pairs beside each
        /// self-test, each on a file handle of its own [default: 2].
        #[arg(long)]
        workers: Option<u32>,
        /// Model: percent of those pairs disrupted: a pended request cancelled
        /// (or cancelled before it pends), the session closed, or the file
        /// handle closed, mid-flight [default: 40].
        #[arg(long)]
        disrupt: Option<u32>,
        /// The server certificate's SHA-1 thumbprint in LocalMachine\My
        /// (needed on Windows; the model generates one).
        #[arg(long = "cert-thumbprint", value_parser = parse_thumbprint)]
        cert_thumbprint: Option<[u8; 20]>,
        /// One JSON object on stdout at the end.
        #[arg(long)]
        json: bool,
    },
    /// Benchmarks over the model: handshakes, continuations and records
    /// against plain rustls, scale and memory per session (model only).
    Bench {
        /// A few iterations of everything (a smoke run).
        #[arg(long)]
        quick: bool,
        /// Concurrencies of the scale run, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,16,256,4096,10000")]
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
    },
    /// One handshake path of `bench`, alone: what `bench --only
    /// instructions` runs under callgrind (model only).
    #[command(hide = true)]
    BenchPath {
        /// Which path.
        #[arg(long)]
        path: backend::BenchPathName,
        /// The TLS version, 1.2 or 1.3.
        #[arg(long)]
        tls: String,
        /// Handshakes to run.
        #[arg(long)]
        count: usize,
    },
    /// Handshake with a TLS server through a driver client session.
    Connect {
        /// The server, HOST:PORT.
        addr: String,
        /// The name the server's certificate must carry (default: HOST).
        #[arg(long = "server-name")]
        server_name: Option<String>,
        /// Trust this CA (PEM) (the model's Root store; on Windows import it
        /// into LocalMachine\Root instead).
        #[arg(long)]
        ca: Option<std::path::PathBuf>,
        /// TLS versions.
        #[arg(long, value_enum, default_value_t = Tls::Both)]
        tls: Tls,
        /// After the handshake, send this text (then print what comes back
        /// until the peer closes).
        #[arg(long, conflicts_with = "send_file")]
        send: Option<String>,
        /// After the handshake, send this file's bytes.
        #[arg(long = "send-file")]
        send_file: Option<std::path::PathBuf>,
        /// Succeed only if the reply contains this text; close once it has
        /// arrived.
        #[arg(long)]
        expect: Option<String>,
        /// Close after this many seconds without traffic (if the peer has not
        /// closed first).
        #[arg(long, default_value_t = 3.0)]
        idle: f64,
    },
    /// Accept TLS clients and run each handshake through a driver server session.
    Serve {
        /// Where to listen, ADDR:PORT.
        #[arg(long)]
        listen: String,
        /// The server certificate by SHA-1 thumbprint in LocalMachine\My
        /// (how kernel Schannel finds it on Windows).
        #[arg(long = "cert-thumbprint", value_parser = parse_thumbprint, conflicts_with_all = ["cert", "self_signed"])]
        cert_thumbprint: Option<[u8; 20]>,
        /// The server certificate (PEM), with --key (model only).
        #[arg(long, requires = "key")]
        cert: Option<std::path::PathBuf>,
        /// The private key (PEM), with --cert.
        #[arg(long, requires = "cert")]
        key: Option<std::path::PathBuf>,
        /// A self-signed certificate for this name (model only).
        #[arg(long = "self-signed", conflicts_with = "cert")]
        self_signed: Option<String>,
        /// TLS versions.
        #[arg(long, value_enum, default_value_t = Tls::Both)]
        tls: Tls,
        /// Serve one connection, then exit with its result.
        #[arg(long)]
        once: bool,
        /// Send back what each client sends, until it closes.
        #[arg(long)]
        echo: bool,
    },
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
    #[command(flatten)]
    model: ModelOptions,
    /// The server certificate's SHA-1 thumbprint in LocalMachine\My (needed
    /// on Windows; the model generates one).
    #[arg(long = "cert-thumbprint", value_parser = parse_thumbprint)]
    cert_thumbprint: Option<[u8; 20]>,
    /// Application bytes each pair exchanges both ways after its handshake,
    /// every one checked (record layer; 0: handshakes only).
    #[arg(long, default_value_t = 0)]
    bytes: u32,
    /// One JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// A failure: one line on stderr, non-zero exit.
pub struct Failure(pub String);

/// What `connect` sends and waits for after the handshake.
struct Conversation {
    send: Vec<u8>,
    expect: Option<Vec<u8>>,
    idle: Duration,
}

fn connect(
    addr: &str,
    server_name: Option<&str>,
    ca: Option<&std::path::Path>,
    tls: Tls,
    talk: Option<Conversation>,
) -> Result<(), Failure> {
    let driver = backend::open(ca)?;
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let name = server_name.unwrap_or(host);
    let session = relay::open(driver.as_ref(), false, [0; 20], name, protocols(tls))?;
    let sock = std::net::TcpStream::connect(addr)
        .map_err(|e| Failure(format!("connecting to {addr}: {e}")));
    let mut expect_met = None;
    let result = sock.and_then(|mut sock| {
        let peer = sock
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| addr.to_string());
        let hs = relay::handshake(driver.as_ref(), session, &mut sock, true)?;
        if !hs.established {
            return Err(Failure(format!(
                "handshake with {peer} failed: {}",
                hs.status
            )));
        }
        eprintln!(
            "connected to {peer} as {name}: handshake complete ({}), protocol {}, cipher {}",
            hs.status,
            hs.protocol_name(),
            hs.cipher_name()
        );
        let d = relay::describe(driver.as_ref(), session)?;
        eprintln!(
            "  key exchange {}, hash {}; {}",
            d.exchange, d.hash, d.records
        );
        eprintln!("  peer certificate: {}", d.peer);
        let Some(talk) = &talk else {
            return Ok(None);
        };
        let mut got = Vec::new();
        let mut stdout = std::io::stdout().lock();
        let mut collect = |plain: &[u8]| {
            use std::io::Write;
            let _ = stdout.write_all(plain);
            let _ = stdout.flush();
            match &talk.expect {
                Some(want) => {
                    got.extend_from_slice(plain);
                    got.windows(want.len().max(1)).any(|w| w == want.as_slice())
                }
                None => false,
            }
        };
        let mut chan = relay::Channel::new(driver.as_ref(), session, &mut sock);
        chan.run(
            &talk.send,
            relay::Sink::Collect(&mut collect),
            Some(talk.idle),
        )?;
        if let Some(want) = &talk.expect {
            expect_met = Some(got.windows(want.len().max(1)).any(|w| w == want.as_slice()));
        }
        Ok(Some(chan.stats))
    });
    relay::close(driver.as_ref(), session);
    let leaked = driver.finish();
    if let Some(stats) = result? {
        eprintln!("{}", describe(&stats));
    }
    if expect_met == Some(false) {
        return Err(Failure("the expected text did not arrive".into()));
    }
    if leaked > 0 {
        return Err(Failure(format!("{leaked} objects leaked at unload")));
    }
    Ok(())
}

/// One line on how a record-layer exchange went.
fn describe(x: &relay::Exchange) -> String {
    let close = match (x.close_notify_sent, x.peer_close_notify) {
        (true, true) => "closed cleanly: close_notify sent and received".to_string(),
        (sent, got) => format!(
            "closed: close_notify {}, peer's close_notify {}{}",
            if sent { "sent" } else { "not sent" },
            if got { "received" } else { "not received" },
            if x.eof_without_close_notify {
                " (the peer closed the connection without it)"
            } else {
                ""
            }
        ),
    };
    format!(
        "sent {} bytes, received {} bytes, {} post-handshake messages; {close}",
        x.sent, x.received, x.renegotiations
    )
}

fn serve(
    listen: &str,
    identity: Identity,
    tls: Tls,
    once: bool,
    echo: bool,
) -> Result<(), Failure> {
    let (driver, thumbprint) = backend::server(identity)?;
    let driver = std::sync::Arc::new(driver);
    let listener = std::net::TcpListener::bind(listen)
        .map_err(|e| Failure(format!("listening on {listen}: {e}")))?;
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| listen.to_string());
    println!("listening on {local}");
    let serve_one =
        move |driver: &dyn Driver, mut sock: std::net::TcpStream| -> Result<(), Failure> {
            let peer = sock.peer_addr().map(|a| a.to_string()).unwrap_or_default();
            let session = relay::open(driver, true, thumbprint, "", protocols(tls))?;
            let result = relay::handshake(driver, session, &mut sock, false);
            let hs = match result {
                Ok(hs) if hs.established => hs,
                other => {
                    relay::close(driver, session);
                    other?
                }
            };
            if hs.established {
                println!(
                    "{peer}: handshake complete ({}), protocol {}, cipher {}",
                    hs.status,
                    hs.protocol_name(),
                    hs.cipher_name()
                );
                // Echo, or read and count, until the client closes; then
                // answer its close_notify with ours.
                let mut chan = relay::Channel::new(driver, session, &mut sock);
                let mut count = |_: &[u8]| false;
                let sink = if echo {
                    relay::Sink::Echo
                } else {
                    relay::Sink::Collect(&mut count)
                };
                let ran = chan.run(&[], sink, Some(Duration::from_secs(300)));
                let stats = std::mem::take(&mut chan.stats);
                relay::close(driver, session);
                ran?;
                println!("{peer}: {}", describe(&stats));
                Ok(())
            } else {
                Err(Failure(format!("{peer}: handshake failed: {}", hs.status)))
            }
        };
    if once {
        let (sock, _) = listener
            .accept()
            .map_err(|e| Failure(format!("accepting: {e}")))?;
        let result = serve_one(driver.as_ref().as_ref(), sock);
        let driver = std::sync::Arc::try_unwrap(driver)
            .map_err(|_| Failure("the driver is still shared".into()))?;
        let leaked = driver.finish();
        result?;
        if leaked > 0 {
            return Err(Failure(format!("{leaked} objects leaked at unload")));
        }
        return Ok(());
    }
    for sock in listener.incoming() {
        let Ok(sock) = sock else { continue };
        let driver = driver.clone();
        std::thread::spawn(move || {
            // A failed handshake never stops the server.
            if let Err(Failure(reason)) = serve_one(driver.as_ref().as_ref(), sock) {
                eprintln!("ksspictl: {reason}");
            }
        });
    }
    Ok(())
}

/// What `connect` is to say after the handshake, if anything.
fn conversation(
    send: Option<&str>,
    send_file: Option<&std::path::Path>,
    expect: Option<&str>,
    idle: f64,
) -> Result<Option<Conversation>, Failure> {
    let send = match (send, send_file) {
        (Some(text), _) => Some(text.as_bytes().to_vec()),
        (_, Some(path)) => {
            Some(std::fs::read(path).map_err(|e| Failure(format!("{}: {e}", path.display())))?)
        }
        _ => None,
    };
    if send.is_none() && expect.is_none() {
        return Ok(None);
    }
    if !(idle.is_finite() && idle > 0.0) {
        return Err(Failure("--idle takes a positive number of seconds".into()));
    }
    Ok(Some(Conversation {
        send: send.unwrap_or_default(),
        expect: expect.map(|e| e.as_bytes().to_vec()),
        idle: Duration::from_secs_f64(idle),
    }))
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

/// The open points of the async SSPI contract as the driver saw them
/// (GET_INFO's observed facts): what the first run on a real Windows answers.
#[derive(Serialize)]
struct ObservedJson {
    /// Does ksecdd.sys export SspiAsyncContextRequiresNotify?
    requires_notify_exported: bool,
    /// Async calls issued.
    calls: u64,
    /// At which IRQL the completion callbacks ran.
    callback_irql: Callbacks,
    /// Calls that completed without a callback.
    completed_without_callback: u64,
    /// Calls whose callback ran before the issuing function returned.
    callback_before_return: u64,
    /// Calls whose callback ran after it returned.
    callback_after_return: u64,
    /// SspiReinitAsyncContext inside the callback: accepted / refused.
    reinit_in_callback: ReinitJson,
}

#[derive(Serialize)]
struct ReinitJson {
    accepted: u64,
    refused: u64,
}

impl From<Observed> for ObservedJson {
    fn from(o: Observed) -> Self {
        ObservedJson {
            requires_notify_exported: o.requires_notify_exported != 0,
            calls: o.calls,
            callback_irql: Callbacks {
                passive: o.callbacks_passive,
                dispatch: o.callbacks_dispatch,
            },
            completed_without_callback: o.completed_without_callback,
            callback_before_return: o.callback_before_return,
            callback_after_return: o.callback_after_return,
            reinit_in_callback: ReinitJson {
                accepted: o.reinits_in_callback,
                refused: o.reinits_refused_in_callback,
            },
        }
    }
}

impl ObservedJson {
    /// The facts as table rows.
    fn rows(&self) -> [(&'static str, String); 5] {
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        [
            (
                "SspiAsyncContextRequiresNotify exported",
                yes_no(self.requires_notify_exported).to_string(),
            ),
            (
                "callback IRQL: PASSIVE / DISPATCH",
                format!(
                    "{} / {}",
                    self.callback_irql.passive, self.callback_irql.dispatch
                ),
            ),
            (
                "calls completed without a callback",
                format!("{} of {}", self.completed_without_callback, self.calls),
            ),
            (
                "callback before / after the issuer returned",
                format!(
                    "{} / {}",
                    self.callback_before_return, self.callback_after_return
                ),
            ),
            (
                "reinit inside the callback: accepted / refused",
                format!(
                    "{} / {}",
                    self.reinit_in_callback.accepted, self.reinit_in_callback.refused
                ),
            ),
        ]
    }
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
    bytes_per_pair: u32,
    bytes_checked: u64,
    leaked: u64,
    /// The open points as the driver saw them (GET_INFO after the run).
    observed: ObservedJson,
}

use soak::{Counters, StressPlan};

/// What `stress` prints with --json.
#[derive(Serialize)]
struct StressJson {
    backend: &'static str,
    duration_s: f64,
    batches: u64,
    /// One fault point in this many fails in fault batches (0: none).
    faults_one_in: u64,
    workers: u32,
    disrupt_percent: u32,
    handshakes_per_second: f64,
    latency_max_us: u64,
    #[serde(flatten)]
    counters: Counters,
    /// Every figure balanced.
    balanced: bool,
    /// Why the run failed, if it did.
    failure: Option<String>,
}

fn stress(plan: StressPlan) -> Result<(), Failure> {
    if plan.concurrency == 0 {
        return Err(Failure("--concurrency must be at least 1".into()));
    }
    if plan.disrupt.is_some_and(|d| d > 100) {
        return Err(Failure("--disrupt is a percentage: 0 to 100".into()));
    }
    let mix = backend::stress_mix(&plan)?;
    let (duration, json) = (plan.duration, plan.json);
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
    let mut total = Counters::default();
    let (mut batches, mut worst) = (0u64, 0u64);
    let mut failure = None;
    while std::time::Instant::now() < deadline {
        let batch = match backend::stress_batch(&plan, batches) {
            Ok(b) => b,
            Err(Failure(why)) => {
                failure = Some(why);
                break;
            }
        };
        batches += 1;
        total.add(&batch.counters);
        worst = worst.max(batch.latency_max_us);
        if batch.failure.is_some() {
            failure = batch.failure;
            break;
        }
        if let Some(bar) = &bar {
            let t = &total;
            bar.set_position(start.elapsed().as_secs().min(duration));
            bar.set_message(format!(
                "{batches} batches, {} handshakes ok, {} failed; {} pairs ok, {} disrupted; \
                 {} requests, {} cancelled; {} faults; {} leaked",
                t.handshakes_ok,
                t.handshakes_failed,
                t.pairs_ok,
                t.pairs_disrupted,
                t.requests_sent,
                t.cancelled,
                t.faults_injected,
                t.leaked
            ));
        }
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if failure.is_none() {
        failure = total.balance().err();
    }
    let secs = start.elapsed().as_secs_f64();
    let summary = StressJson {
        backend: backend::NAME,
        duration_s: (secs * 10.0).round() / 10.0,
        batches,
        faults_one_in: mix.faults_one_in,
        workers: mix.workers,
        disrupt_percent: mix.disrupt_percent,
        handshakes_per_second: ((total.handshakes_ok as f64 / secs) * 10.0).round() / 10.0,
        latency_max_us: worst,
        counters: total,
        balanced: failure.is_none(),
        failure: failure.clone(),
    };
    if json {
        println!("{}", serde_json::to_string(&summary).expect("serialisable"));
    } else {
        print_stress(&summary);
    }
    match failure {
        Some(why) => Err(Failure(why)),
        None => Ok(()),
    }
}

/// The soak's summary, for people.
fn print_stress(j: &StressJson) {
    let t = &j.counters;
    println!(
        "stress: {:.1} s, {} batches, {} handshakes ok, {} failed, {:.1}/s, worst latency {} µs, \
         {} leaked{}",
        j.duration_s,
        j.batches,
        t.handshakes_ok,
        t.handshakes_failed,
        j.handshakes_per_second,
        j.latency_max_us,
        t.leaked,
        if j.balanced {
            ", balanced"
        } else {
            ", NOT balanced"
        }
    );
    if j.backend != "model" {
        return;
    }
    println!(
        "  batches: {} TLS 1.2 only, {} TLS 1.3 only, {} both; {} with tickets; {} with faults (1 in {})",
        t.batches_tls12,
        t.batches_tls13,
        t.batches_tls_both,
        t.batches_tickets,
        t.batches_faults,
        j.faults_one_in
    );
    println!(
        "  self-test: {} failed without faults, {} application bytes checked",
        t.handshakes_failed_clean, t.bytes_checked
    );
    println!(
        "  IOCTL pairs ({} workers): {} ok ({} TLS 1.2, {} TLS 1.3), {} failed ({} without faults), \
         {} disrupted; {} bytes checked, {} post-handshake messages",
        j.workers,
        t.pairs_ok,
        t.pairs_tls12,
        t.pairs_tls13,
        t.pairs_failed,
        t.pairs_failed_clean,
        t.pairs_disrupted,
        t.pair_bytes_checked,
        t.renegotiations
    );
    println!(
        "  requests: {} sent, {} completed ({} twice, {} dropped); {} success, {} errors, {} unclean",
        t.requests_sent,
        t.requests_completed,
        t.requests_completed_twice,
        t.requests_dropped,
        t.status_success,
        t.status_error,
        t.status_not_clean
    );
    println!(
        "  disruptions: {} cancels ({} too late), {} cancel routines, {} cancelled ({} by the engine, \
         {} races), {} pends refused of {}; {} closes and {} file closes mid-flight; {} stale ids refused",
        t.cancels,
        t.cancels_too_late,
        t.cancel_routines,
        t.cancelled,
        t.cancelled_by_engine,
        t.cancel_races,
        t.pends_refused,
        t.pends,
        t.closes_mid_flight,
        t.file_cleanups,
        t.stale_ids_refused
    );
    println!(
        "  sessions: {} opened, {} open at the end",
        t.sessions_opened, t.sessions_open_at_end
    );
    println!(
        "  async calls: engine {} issued / {} completed, {} callbacks / {} expected; self-test \
         {} completed, {} callbacks / {} expected; model {} queued / {} completed, {} callbacks / {} expected",
        t.engine_calls,
        t.engine_completions,
        t.engine_callbacks,
        t.engine_notified,
        t.selftest_completions,
        t.selftest_callbacks,
        t.selftest_notified,
        t.model_calls,
        t.model_completions,
        t.model_callbacks,
        t.model_notified
    );
    println!(
        "  work items: {} counted by the engine, {} queued, {} run; faults: {} injected in {} points",
        t.work_items_engine,
        t.work_items_queued,
        t.work_items_run,
        t.faults_injected,
        t.fault_points
    );
}

fn selftest(args: &SelftestArgs) -> Result<(), Failure> {
    if args.count == 0 || args.concurrency == 0 {
        return Err(Failure(
            "--count and --concurrency must be at least 1".into(),
        ));
    }
    let (r, backend, leaked, observed) = run_selftest(
        backend::selftest_target(&args.model, args.cert_thumbprint)?,
        args.count,
        args.concurrency,
        protocols(args.tls),
        args.bytes,
        !args.json,
    )?;
    let rate = if r.elapsed_us > 0 {
        r.handshakes_ok as f64 * 1e6 / r.elapsed_us as f64
    } else {
        0.0
    };
    let json = SelftestJson {
        backend,
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
        bytes_per_pair: args.bytes,
        bytes_checked: r.bytes_checked,
        leaked,
        observed: observed.into(),
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
    let want = u64::from(args.bytes) * 2 * json.handshakes_ok;
    if json.bytes_checked != want {
        return Err(Failure(format!(
            "{} of {want} application bytes checked",
            json.bytes_checked
        )));
    }
    Ok(())
}

fn print_table(j: &SelftestJson) {
    let rows: [(&str, String); 17] = [
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
        (
            "application bytes checked",
            format!(
                "{} ({} each way per pair)",
                j.bytes_checked, j.bytes_per_pair
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
    print_observed(&j.observed);
}

/// The observed-facts section of `selftest` and `info`.
fn print_observed(o: &ObservedJson) {
    let rows = o.rows();
    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    println!("observed on this system (the contract's open points):");
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
    observed: ObservedJson,
}

fn info(json: bool) -> Result<(), Failure> {
    let driver = backend::open(None)?;
    let backend = driver.backend();
    let (status, reply) = driver.call(IOCTL_KSSPI_GET_INFO, &[], 256)?;
    if status != 0 {
        return Err(Failure(format!(
            "GET_INFO failed: {}",
            ntstatus_name(status)
        )));
    }
    let r = decode::<InfoReply>(&reply)
        .map_err(|e| Failure(format!("a malformed info reply: {e:?}")))?;
    let leaked = driver.finish();
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
        backend,
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
        observed: r.observed.into(),
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
        print_observed(&j.observed);
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Info { json } => info(*json),
        Command::Selftest(args) => selftest(args),
        Command::Bench {
            quick,
            scale,
            plot,
            json,
            only,
        } => backend::bench(*quick, scale, plot.as_deref(), *json, only),
        Command::BenchPath { path, tls, count } => backend::bench_path(*path, tls, *count),
        Command::Stress {
            duration,
            concurrency,
            tls,
            seed,
            bytes,
            faults,
            workers,
            disrupt,
            cert_thumbprint,
            json,
        } => stress(StressPlan {
            duration: *duration,
            concurrency: *concurrency,
            tls: *tls,
            seed: *seed,
            bytes: *bytes,
            faults: *faults,
            workers: *workers,
            disrupt: *disrupt,
            thumbprint: *cert_thumbprint,
            json: *json,
        }),
        Command::Connect {
            addr,
            server_name,
            ca,
            tls,
            send,
            send_file,
            expect,
            idle,
        } => conversation(
            send.as_deref(),
            send_file.as_deref(),
            expect.as_deref(),
            *idle,
        )
        .and_then(|talk| connect(addr, server_name.as_deref(), ca.as_deref(), *tls, talk)),
        Command::Serve {
            listen,
            cert_thumbprint,
            cert,
            key,
            self_signed,
            tls,
            once,
            echo,
        } => {
            let identity = match (cert_thumbprint, cert, key, self_signed) {
                (Some(t), ..) => Ok(Identity::Thumbprint(*t)),
                (_, Some(c), Some(k), _) => match (read_file(c), read_file(k)) {
                    (Ok(c), Ok(k)) => Ok(Identity::Pem(c, k)),
                    (Err(e), _) | (_, Err(e)) => Err(e),
                },
                (.., Some(name)) => Ok(Identity::SelfSigned(name.clone())),
                _ => Ok(Identity::Generated),
            };
            identity.and_then(|identity| serve(listen, identity, *tls, *once, *echo))
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
