//! `ksspictl stress`: the soak, batch after batch until the time is up (see
//! [`crate::soak`]; each batch is the backend's), and its summary.

use crate::backend;
use crate::soak::{Counters, StressPlan};
use crate::util::{parse_one_in, parse_thumbprint, seconds, Tls};
use crate::Failure;
use indicatif::{ProgressBar, ProgressStyle};
use ksspi_abi::{MAX_SELFTEST_BYTES, MAX_SELFTEST_CONCURRENCY};
use serde::Serialize;
use std::time::Duration;

/// The longest soak: a week.
const MAX_DURATION_SECONDS: f64 = 7.0 * 86_400.0;

/// The most workers: each is a thread holding a file handle and a session
/// pair, so 64 stay far below the model device's 1024 sessions and leave
/// the self-test the CPU.
const MAX_WORKERS: u32 = 64;

/// `stress`'s flags.
#[derive(clap::Args)]
#[command(
    after_help = "Each batch is a self-test with every completion mode and callback IRQL \
    mixed and (over the model) user-mode IOCTL session pairs beside it, some cancelled, closed \
    or cut off by a file close mid-flight; TLS versions and tickets rotate per batch, and faults \
    are injected in every other batch. The run fails if any counter does not balance."
)]
pub struct Args {
    /// How long to run, in seconds (0.001 to 604800, a week); at least one
    /// batch runs, however short.
    #[arg(long, value_name = "SECONDS", default_value = "10",
          value_parser = seconds(0.001, MAX_DURATION_SECONDS))]
    duration: Duration,
    /// Self-test handshakes at once (each batch runs four times as many), 1
    /// to 10000 (the driver's limit).
    #[arg(long, default_value_t = 32,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_SELFTEST_CONCURRENCY)))]
    concurrency: u32,
    /// TLS versions (both: rotate 1.2-only, 1.3-only and both per batch).
    #[arg(long, value_enum, default_value_t = Tls::Both)]
    tls: Tls,
    /// The first seed (each batch uses the next).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Application bytes each self-test pair exchanges both ways, up to
    /// 1048576 (the driver's limit) [default: 16384 in two batches of four,
    /// 0 in the others].
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_SELFTEST_BYTES)))]
    bytes: Option<u32>,
    /// Model: in every other batch one fault point (an allocation or an
    /// SSPI call) in N fails, seeded: N or 1inN, 0 for none [default: 200].
    #[arg(long, value_parser = parse_one_in)]
    faults: Option<u64>,
    /// Model: user-mode threads driving IOCTL session pairs beside each
    /// self-test, each on a file handle of its own, 0 to 64 [default: 2].
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_WORKERS)))]
    workers: Option<u32>,
    /// Model: percent of those pairs disrupted: a pended request cancelled
    /// (or cancelled before it pends), the session closed, or the file
    /// handle closed, mid-flight, 0 to 100 [default: 40].
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=100))]
    disrupt: Option<u32>,
    /// The server certificate's SHA-1 thumbprint in LocalMachine\My
    /// (needed on Windows; the model generates one).
    #[arg(long = "cert-thumbprint", value_parser = parse_thumbprint)]
    cert_thumbprint: Option<[u8; 20]>,
    /// One JSON object on stdout at the end.
    #[arg(long)]
    json: bool,
}

/// Run the soak `args` describes.
pub fn exec(args: &Args) -> Result<(), Failure> {
    stress(StressPlan {
        duration: args.duration,
        concurrency: args.concurrency,
        tls: args.tls,
        seed: args.seed,
        bytes: args.bytes,
        faults: args.faults,
        workers: args.workers,
        disrupt: args.disrupt,
        thumbprint: args.cert_thumbprint,
        json: args.json,
    })
}

fn stress(plan: StressPlan) -> Result<(), Failure> {
    let mix = backend::stress_mix(&plan)?;
    let (duration, json) = (plan.duration, plan.json);
    // Whole seconds for the progress bar.
    let whole_secs = duration.as_secs_f64().ceil() as u64;
    let start = std::time::Instant::now();
    // --duration is at most a week, so the deadline is an Instant.
    let deadline = start + duration;
    let bar = (!json).then(|| {
        let bar = ProgressBar::new(whole_secs);
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} s  {msg}")
                .expect("a valid template"),
        );
        bar
    });
    let mut total = Counters::default();
    let (mut batches, mut worst) = (0u64, 0u64);
    let mut failure = None;
    // At least one batch, however short the time: a soak that ran nothing
    // has nothing to report as balanced.
    while batches == 0 || std::time::Instant::now() < deadline {
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
            bar.set_position(start.elapsed().as_secs().min(whole_secs));
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
