//! Instructions per handshake, counted by valgrind's callgrind: the bench's
//! handshake paths side by side without the wall clock's noise (rustls's own
//! ci-bench counts instructions for the same reason). Each path runs alone
//! in a child process (`ksspictl bench-path`), once with `lo` and once with
//! `hi` handshakes; the difference over `hi - lo` is one handshake's
//! instructions, the setup (certificates, model, credentials) and teardown
//! cancelled out. Callgrind runs a process's threads one at a time and
//! counts user-mode instructions only, so the async paths' figures hold
//! their hand-offs' user-mode work (locks, condition variables, the work
//! queue), not the time a thread sleeps.
//!
//! Resumed handshakes likewise ([`ResumedInstructionRow`]): rustls's own
//! resumed handshakes against the engine's, each path's child process
//! priming its cache with one full handshake first (setup, cancelled out
//! with the rest).

use crate::bench::HandshakePath;
use crate::Failure;
use ksspi_sim::baseline::Version;
use serde::Serialize;
use std::process::Command;

/// Every path, the baseline first.
const PATHS: [HandshakePath; 5] = [
    HandshakePath::Rustls,
    HandshakePath::EngineSync,
    HandshakePath::EngineAsync,
    HandshakePath::IoctlSync,
    HandshakePath::IoctlAsync,
];

/// The resumed paths, the baseline first.
const RESUMED_PATHS: [HandshakePath; 3] = [
    HandshakePath::RustlsResumed,
    HandshakePath::EngineSyncResumed,
    HandshakePath::EngineAsyncResumed,
];

/// One TLS version's instructions per resumed handshake, the engine's cost
/// relative to rustls's own resumed handshake.
#[derive(Serialize)]
pub struct ResumedInstructionRow {
    pub tls: &'static str,
    /// Handshakes the figures are taken over (`hi - lo`).
    pub handshakes: usize,
    pub rustls: u64,
    pub engine_sync: u64,
    pub engine_async: u64,
    pub engine_sync_cost: f64,
    pub engine_async_cost: f64,
}

/// One TLS version's instructions per handshake, and each path's cost
/// relative to rustls (instructions / rustls's instructions).
#[derive(Serialize)]
pub struct InstructionRow {
    pub tls: &'static str,
    /// Handshakes the figures are taken over (`hi - lo`).
    pub handshakes: usize,
    pub rustls: u64,
    pub engine_sync: u64,
    pub engine_async: u64,
    pub ioctl_sync: u64,
    pub ioctl_async: u64,
    pub engine_sync_cost: f64,
    pub engine_async_cost: f64,
    pub ioctl_sync_cost: f64,
    pub ioctl_async_cost: f64,
    /// Of the `hi` IOCTL handshakes counted, how many resumed (a device
    /// that ignores the server's `Resumption::Off`: see `bench.rs`'s
    /// `ioctl_handshakes`); not 0, the IOCTL figures are not all full
    /// handshakes.
    pub ioctl_sync_resumed: usize,
    pub ioctl_async_resumed: usize,
}

/// The instruction counts, or why there are none.
#[derive(Serialize, Default)]
pub struct Instructions {
    pub rows: Vec<InstructionRow>,
    /// Resumed handshakes.
    pub resumed: Vec<ResumedInstructionRow>,
    /// Set when the counts could not be taken (no valgrind).
    pub skipped: Option<String>,
}

/// Whether valgrind can run here.
fn valgrind() -> Result<(), String> {
    match Command::new("valgrind").arg("--version").output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "valgrind --version failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!(
            "valgrind not found ({e}); apt-get install valgrind"
        )),
    }
}

fn tls_arg(v: Version) -> &'static str {
    match v {
        Version::Tls12 => "1.2",
        Version::Tls13 => "1.3",
    }
}

fn path_arg(p: HandshakePath) -> String {
    clap::ValueEnum::to_possible_value(&p)
        .expect("every path has a name")
        .get_name()
        .to_string()
}

/// The instructions callgrind counted over `n` handshakes of `path` in a
/// child process (setup and teardown included), and how many of them
/// resumed where the path says (the IOCTL paths; 0 for the others).
fn count(path: HandshakePath, version: Version, n: usize) -> Result<(u64, usize), Failure> {
    let exe = std::env::current_exe().map_err(|e| Failure(format!("current_exe: {e}")))?;
    let out = Command::new("valgrind")
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(exe)
        .args(["bench-path", "--path", &path_arg(path)])
        .args(["--tls", tls_arg(version), "--count", &n.to_string()])
        .output()
        .map_err(|e| Failure(format!("running valgrind: {e}")))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(Failure(format!(
            "bench-path {} under callgrind failed: {}",
            path_arg(path),
            stderr.lines().rev().take(5).collect::<Vec<_>>().join(" / ")
        )));
    }
    let total = collected(&stderr).ok_or_else(|| {
        Failure(format!(
            "no 'Collected' line in callgrind's output for {}",
            path_arg(path)
        ))
    })?;
    Ok((total, resumed(&String::from_utf8_lossy(&out.stdout))))
}

/// `bench-path`'s `resumed K of N` line: K (0 without one).
fn resumed(stdout: &str) -> usize {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("resumed ")?.split(' ').next()?.parse().ok())
        .unwrap_or(0)
}

/// Callgrind's total: the `==PID== Collected : N` line.
fn collected(stderr: &str) -> Option<u64> {
    stderr.lines().find_map(|l| {
        let (_, rest) = l.split_once("Collected :")?;
        rest.trim().parse().ok()
    })
}

fn cost(x: u64, base: u64) -> f64 {
    (x as f64 / base.max(1) as f64 * 1000.0).round() / 1000.0
}

/// Instructions per handshake of every path, per TLS version, over
/// `hi - lo` handshakes.
pub fn run(lo: usize, hi: usize, progress: &dyn Fn(&str)) -> Result<Instructions, Failure> {
    if let Err(reason) = valgrind() {
        return Ok(Instructions {
            rows: Vec::new(),
            resumed: Vec::new(),
            skipped: Some(reason),
        });
    }
    // Per handshake, and how many of the `hi` resumed.
    let per_handshake = |path: HandshakePath, version: Version| -> Result<(u64, usize), Failure> {
        progress(&format!(
            "instructions (callgrind), TLS {}, {}",
            tls_arg(version),
            path_arg(path)
        ));
        let (a, _) = count(path, version, lo)?;
        let (b, resumed) = count(path, version, hi)?;
        Ok((b.saturating_sub(a) / (hi - lo) as u64, resumed))
    };
    let mut rows = Vec::new();
    let mut resumed = Vec::new();
    for version in [Version::Tls12, Version::Tls13] {
        let mut per = [0u64; PATHS.len()];
        let mut resumed_of = [0usize; PATHS.len()];
        for (i, &path) in PATHS.iter().enumerate() {
            (per[i], resumed_of[i]) = per_handshake(path, version)?;
        }
        let mut again = [0u64; RESUMED_PATHS.len()];
        for (i, &path) in RESUMED_PATHS.iter().enumerate() {
            again[i] = per_handshake(path, version)?.0;
        }
        let [rustls, engine_sync, engine_async] = again;
        resumed.push(ResumedInstructionRow {
            tls: tls_arg(version),
            handshakes: hi - lo,
            rustls,
            engine_sync,
            engine_async,
            engine_sync_cost: cost(engine_sync, rustls),
            engine_async_cost: cost(engine_async, rustls),
        });
        let [rustls, engine_sync, engine_async, ioctl_sync, ioctl_async] = per;
        rows.push(InstructionRow {
            tls: tls_arg(version),
            handshakes: hi - lo,
            rustls,
            engine_sync,
            engine_async,
            ioctl_sync,
            ioctl_async,
            engine_sync_cost: cost(engine_sync, rustls),
            engine_async_cost: cost(engine_async, rustls),
            ioctl_sync_cost: cost(ioctl_sync, rustls),
            ioctl_async_cost: cost(ioctl_async, rustls),
            ioctl_sync_resumed: resumed_of[3],
            ioctl_async_resumed: resumed_of[4],
        });
    }
    Ok(Instructions {
        rows,
        resumed,
        skipped: None,
    })
}

/// The counts as a table.
pub fn print(i: &Instructions) {
    if let Some(reason) = &i.skipped {
        println!("\ninstructions per handshake: not counted ({reason})");
        return;
    }
    if i.rows.is_empty() {
        return;
    }
    println!("\ninstructions per handshake (callgrind; cost relative to plain rustls in brackets)");
    println!(
        "  {:<5} {:>11} {:>20} {:>20} {:>20} {:>20}",
        "TLS", "rustls", "engine (sync)", "engine (async)", "IOCTL (sync)", "IOCTL (async)"
    );
    for r in &i.rows {
        let cell = |n: u64, c: f64| format!("{n:>11} ({c:.3})");
        println!(
            "  {:<5} {:>11} {:>20} {:>20} {:>20} {:>20}",
            r.tls,
            r.rustls,
            cell(r.engine_sync, r.engine_sync_cost),
            cell(r.engine_async, r.engine_async_cost),
            cell(r.ioctl_sync, r.ioctl_sync_cost),
            cell(r.ioctl_async, r.ioctl_async_cost),
        );
    }
    for r in &i.rows {
        let resumed = r.ioctl_sync_resumed.max(r.ioctl_async_resumed);
        if resumed > 0 {
            println!(
                "  note: TLS {}: {resumed} of the IOCTL path's counted handshakes resumed although \
                 the server's OPEN asked for Resumption::Off: its IOCTL figures are not full \
                 handshakes",
                r.tls
            );
        }
    }
    if i.resumed.is_empty() {
        return;
    }
    println!(
        "\ninstructions per resumed handshake (callgrind; cost relative to rustls's own resumed \
         handshake in brackets)"
    );
    println!(
        "  {:<5} {:>11} {:>20} {:>20}",
        "TLS", "rustls", "engine (sync)", "engine (async)"
    );
    for r in &i.resumed {
        let cell = |n: u64, c: f64| format!("{n:>11} ({c:.3})");
        println!(
            "  {:<5} {:>11} {:>20} {:>20}",
            r.tls,
            r.rustls,
            cell(r.engine_sync, r.engine_sync_cost),
            cell(r.engine_async, r.engine_async_cost),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{collected, resumed};

    #[test]
    fn reads_callgrinds_total() {
        let err = "==41== Callgrind, a call-graph generating cache profiler\n\
                   ==41== Events    : Ir\n==41== Collected : 123456789\n==41== \n\
                   ==41== I   refs:      123,456,789\n";
        assert_eq!(collected(err), Some(123_456_789));
        assert_eq!(collected("==41== I   refs: 5\n"), None);
    }

    #[test]
    fn reads_how_many_resumed() {
        assert_eq!(resumed("resumed 24 of 25\n"), 24);
        assert_eq!(resumed("resumed 0 of 5\n"), 0);
        assert_eq!(resumed(""), 0);
    }
}
