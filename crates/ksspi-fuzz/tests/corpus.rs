//! Replays what the fuzzers found and started from: the committed seeds
//! (checked against `ksspi_fuzz::seeds`), the minimized corpora and every
//! regression (a crash once found, kept as a test), through the same
//! programs the cargo-fuzz targets run.

use ksspi_fuzz::seeds::{Target, TARGETS};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    };
    v.retain(|p| p.is_file());
    v.sort();
    v
}

#[test]
fn the_committed_seeds_are_the_generated_ones() {
    let write = std::env::var_os("KSSPI_WRITE_SEEDS").is_some();
    for Target {
        name: target,
        seeds,
        ..
    } in TARGETS
    {
        let dir = fuzz_dir().join("seeds").join(target);
        let seeds = seeds();
        if write {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            for (name, bytes) in &seeds {
                std::fs::write(dir.join(name), bytes).unwrap();
            }
        }
        let on_disk = files(&dir);
        assert_eq!(on_disk.len(), seeds.len(), "{target}: seeds on disk");
        for (name, bytes) in &seeds {
            let found = std::fs::read(dir.join(name))
                .unwrap_or_else(|e| panic!("{target}/{name}: {e} (KSSPI_WRITE_SEEDS=1 rewrites)"));
            assert_eq!(&found, bytes, "{target}/{name} differs from seeds.rs");
        }
    }
}

/// Every file under `fuzz/<kind>/<target>/` through its target's program.
fn replay(kind: &str) -> usize {
    let mut n = 0;
    for Target {
        name: target, run, ..
    } in TARGETS
    {
        for path in files(&fuzz_dir().join(kind).join(target)) {
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{} failed", path.display());
            n += 1;
        }
    }
    println!("{kind}: {n} inputs replayed");
    n
}

#[test]
fn every_seed_runs_clean() {
    assert!(replay("seeds") >= 20);
}

#[test]
fn every_corpus_input_runs_clean() {
    replay("corpus");
}

#[test]
fn every_regression_runs_clean() {
    replay("regressions");
}

/// The seeds are honest runs: they must get through the handshake and move
/// data, or the fuzzer starts from nothing.
#[test]
fn the_honest_seeds_establish_and_move_data() {
    use ksspi_fuzz::{ioctl, peer, seeds};
    for (name, bytes) in seeds::ioctl_seeds() {
        let s = ioctl::run_summary(&bytes);
        println!("ioctl/{name}: {s:?}");
        if name.starts_with("tls") {
            assert_eq!(s.established, 2, "{name}: {s:?}");
            assert_eq!(s.decrypted, b"hello from the server".len(), "{name}: {s:?}");
        }
        if name.starts_with("alpn-no-overlap") {
            // The server chose nothing the client offered: neither side
            // established.
            assert_eq!(s.established, 0, "{name}: {s:?}");
        }
        if name == "pend-cancel-cleanup" {
            assert!(s.cancelled >= 1, "{name}: {s:?}");
        }
    }
    for (target, established_first, seeds) in [
        ("handshake", false, seeds::handshake_seeds()),
        ("record", true, seeds::record_seeds()),
    ] {
        for (name, bytes) in seeds {
            let s = peer::run(&bytes, established_first);
            println!("{target}/{name}: {s:?}");
            if name.ends_with("tls12") || name.ends_with("tls13") || name.ends_with("tickets") {
                assert!(s.victim_established && s.untainted, "{name}: {s:?}");
                assert!(
                    s.victim_got >= 300 && s.honest_got == 20_000,
                    "{name}: {s:?}"
                );
            }
        }
    }
}
