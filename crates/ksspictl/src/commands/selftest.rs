//! `ksspictl selftest`: the driver's self-test (handshakes between a server
//! and a client session inside the driver), its figures as a table or JSON.
//! With `--resume`, each pair runs twice and the output adds how many second
//! handshakes resumed (the harness prints the counts; judging them is the
//! caller's).

use crate::backend;
use crate::observed::{print_observed, Callbacks, ObservedJson};
use crate::selftest::{run_selftest, Plan};
use crate::util::{parse_thumbprint, protocols, ModelOptions, Tls};
use crate::Failure;
use ksspi_abi::{MAX_SELFTEST_BYTES, MAX_SELFTEST_CONCURRENCY, MAX_SELFTEST_COUNT};
use serde::Serialize;

/// `selftest`'s flags.
#[derive(clap::Args)]
pub struct Args {
    /// Handshakes to run, 1 to 100000 (the driver's limit).
    #[arg(long, default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_SELFTEST_COUNT)))]
    count: u32,
    /// Handshakes at once, 1 to 100000 (the ABI's limit; the installed
    /// driver allows half its session table, 512 by default).
    #[arg(long, default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_SELFTEST_CONCURRENCY)))]
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
    /// every one checked (record layer; 0: handshakes only), up to 1048576
    /// (the driver's limit, 1 MiB).
    #[arg(long, default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_SELFTEST_BYTES)))]
    bytes: u32,
    /// Each pair runs its handshake twice over the same credentials, its
    /// client towards a target name of its own, and the second may resume
    /// (TLS 1.2 by session id, TLS 1.3 by ticket): prints how many did, were
    /// full, or were not told by the provider. Needs a driver with session
    /// resumption (GET_INFO), else stops with STATUS_REVISION_MISMATCH.
    #[arg(long)]
    resume: bool,
    /// One JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// Run the self-test on the backend's target and print its figures; fail on
/// any failed handshake, leak or unchecked byte.
pub fn exec(args: &Args) -> Result<(), Failure> {
    let (r, backend, leaked, observed) = run_selftest(
        backend::selftest_target(&args.model, args.cert_thumbprint)?,
        Plan {
            count: args.count,
            concurrency: args.concurrency,
            protocols: protocols(args.tls),
            bytes: args.bytes,
            resume: args.resume,
        },
        !args.json,
    )?;
    // Every handshake counts: two per pair in a resume run.
    let handshakes = u64::from(args.count) * if args.resume { 2 } else { 1 };
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
        resumption: r.resumption.map(|c| ResumptionJson {
            resumed: c.resumed,
            full_handshakes: c.full,
            unknown: c.unknown,
            first_resumed: c.first_resumed,
        }),
        observed: observed.into(),
    };
    if args.json {
        println!("{}", serde_json::to_string(&json).expect("serialisable"));
    } else {
        print_table(&json);
    }
    if json.handshakes_failed > 0 {
        return Err(Failure(format!(
            "{} of {handshakes} handshakes failed",
            json.handshakes_failed
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
            "latency per handshake p50 / p99 / max",
            format!(
                "{} / {} / {} µs",
                j.latency_us.p50, j.latency_us.p99, j.latency_us.max
            ),
        ),
        (
            "application bytes checked",
            format!(
                "{} ({} each way per {})",
                j.bytes_checked,
                j.bytes_per_pair,
                if j.resumption.is_some() {
                    "handshake"
                } else {
                    "pair"
                }
            ),
        ),
        ("leaked at unload", j.leaked.to_string()),
    ];
    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    if j.resumption.is_some() {
        println!(
            "ksspi self-test: {} pairs of two handshakes, the second resuming, at concurrency {}",
            j.count, j.concurrency
        );
    } else {
        println!(
            "ksspi self-test: {} handshakes at concurrency {}",
            j.count, j.concurrency
        );
    }
    for (k, v) in rows {
        println!("  {k:<width$}  {v}");
    }
    if let Some(c) = &j.resumption {
        let pairs = j.count;
        println!("  second handshakes of {pairs} pairs (client side, SECPKG_ATTR_SESSION_INFO):");
        for (k, v) in [
            ("resumed", c.resumed),
            ("full (the fallback)", c.full_handshakes),
            ("not told by the provider (any)", c.unknown),
            ("first handshakes resumed", c.first_resumed),
        ] {
            // Indented two more, the values in the table's column.
            println!("    {k:<w$}  {v}", w = width.saturating_sub(2));
        }
    }
    print_observed(&j.observed);
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
    /// A `--resume` run's counts (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    resumption: Option<ResumptionJson>,
    /// The open points as the driver saw them (GET_INFO after the run).
    observed: ObservedJson,
}

/// What a `--resume` run's second handshakes did, from the client side.
#[derive(Serialize)]
struct ResumptionJson {
    /// Second handshakes that resumed.
    resumed: u64,
    /// Second handshakes that were full (the resumption refused or nothing
    /// offered: the fallback).
    full_handshakes: u64,
    /// Handshakes, first or second, whose resumption the provider did not
    /// tell (SECPKG_ATTR_SESSION_INFO unanswered).
    unknown: u64,
    /// First handshakes that resumed (a session cached by an earlier run).
    first_resumed: u64,
}

#[derive(Serialize)]
struct Completions {
    pending: u64,
    inline_callback: u64,
    sync_no_callback: u64,
}

#[derive(Serialize)]
struct Latency {
    p50: u64,
    p99: u64,
    max: u64,
}
