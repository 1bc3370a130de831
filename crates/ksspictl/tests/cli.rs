//! The command line as a contract: `ksspictl selftest --json`, `info
//! --json` and `stress --json` (the soak's balances) over the model, and a
//! one-line reason with a non-zero exit on bad arguments.

// These run ksspictl over the model backend, which only non-Windows builds
// have (on Windows it drives the installed driver: scripts/windows-harness-wine.sh
// covers that side).
#![cfg(not(windows))]

mod common;

use common::ksspictl;

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {stdout}"))
}

#[test]
fn selftest_json_reports_every_handshake_and_no_leak() {
    for (completion, irql, tls) in [
        ("mixed", "mixed", "both"),
        ("async", "dispatch", "1.3"),
        ("sync", "passive", "1.2"),
        ("inline", "mixed", "both"),
    ] {
        let (code, out, err) = ksspictl(&[
            "selftest",
            "--count",
            "120",
            "--concurrency",
            "16",
            "--completion",
            completion,
            "--callback-irql",
            irql,
            "--tls",
            tls,
            "--seed",
            "9",
            "--json",
        ]);
        assert_eq!(code, 0, "{completion} {irql} {tls}: {err}");
        let j = json(&out);
        assert_eq!(j["handshakes_ok"], 120, "{j}");
        assert_eq!(j["handshakes_failed"], 0);
        assert_eq!(j["sessions"], 240);
        assert_eq!(j["async_contexts_created"], j["sessions"]);
        assert_eq!(j["leaked"], 0);
        for key in ["reinits", "steps", "work_items", "elapsed_us"] {
            assert!(j[key].is_u64(), "{key} missing: {j}");
        }
        for (group, keys) in [
            (
                "completions",
                &["pending", "inline_callback", "sync_no_callback"][..],
            ),
            ("callbacks", &["passive", "dispatch"][..]),
            ("latency_us", &["p50", "p99", "max"][..]),
        ] {
            for key in keys {
                assert!(j[group][key].is_u64(), "{group}.{key} missing: {j}");
            }
        }
        if completion == "sync" {
            assert_eq!(j["completions"]["pending"], 0);
            assert_eq!(j["completions"]["inline_callback"], 0);
        }
        if irql == "dispatch" {
            assert_eq!(j["callbacks"]["passive"], 0);
        }
    }
}

#[test]
fn selftest_bytes_checks_every_byte_both_ways_and_leaks_nothing() {
    let (code, out, err) = ksspictl(&[
        "selftest",
        "--count",
        "200",
        "--concurrency",
        "16",
        "--bytes",
        "65536",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let j = json(&out);
    assert_eq!(j["handshakes_ok"], 200, "{j}");
    assert_eq!(j["handshakes_failed"], 0);
    assert_eq!(j["bytes_per_pair"], 65536);
    assert_eq!(
        j["bytes_checked"],
        200u64 * 2 * 65536,
        "every byte, both ways"
    );
    assert_eq!(j["leaked"], 0);
}

#[test]
fn the_table_names_its_figures() {
    let (code, out, err) = ksspictl(&["selftest", "--count", "10", "--concurrency", "2"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("handshakes ok")
            && out.contains("leaked at unload")
            && out.contains("latency p50 / p99 / max"),
        "{out}"
    );
}

#[test]
fn info_json_describes_the_driver() {
    let (code, out, err) = ksspictl(&["info", "--json"]);
    assert_eq!(code, 0, "{err}");
    let j = json(&out);
    assert_eq!(j["backend"], "model");
    assert_eq!(j["abi_version"], 1);
    let caps = j["capabilities"].as_array().unwrap();
    assert!(caps.iter().any(|c| c == "selftest") && caps.iter().any(|c| c == "tls1.3"));
}

#[test]
fn bad_arguments_fail_with_one_line() {
    let (code, _, err) = ksspictl(&["selftest", "--count", "0"]);
    assert_ne!(code, 0);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--count"), "{err}");
    let (code, _, err) = ksspictl(&["selftest", "--completion", "sometimes"]);
    assert_ne!(code, 0);
    assert!(err.contains("sometimes"), "{err}");
    let (code, _, err) = ksspictl(&[
        "bench-path",
        "--path",
        "rustls",
        "--tls",
        "1.1",
        "--count",
        "1",
    ]);
    assert_ne!(code, 0);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("1.1"), "{err}");
}

#[test]
fn bench_path_runs_each_handshake_path_cleanly() {
    for path in [
        "rustls",
        "engine-sync",
        "engine-async",
        "ioctl-sync",
        "ioctl-async",
    ] {
        let (code, _, err) =
            ksspictl(&["bench-path", "--path", path, "--tls", "1.3", "--count", "2"]);
        assert_eq!(code, 0, "{path}: {err}");
    }
}

#[test]
fn stress_without_faults_fails_nothing() {
    let (code, out, err) = ksspictl(&[
        "stress",
        "--duration",
        "2",
        "--concurrency",
        "8",
        "--seed",
        "3",
        "--bytes",
        "4096",
        "--faults",
        "0",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let j = json(&out);
    assert!(j["batches"].as_u64().unwrap() >= 1, "{j}");
    assert!(j["handshakes_ok"].as_u64().unwrap() >= 32, "{j}");
    assert_eq!(j["handshakes_failed"], 0, "{j}");
    assert_eq!(j["pairs_failed"], 0, "{j}");
    assert_eq!(j["batches_faults"], 0, "{j}");
    assert_eq!(j["faults_injected"], 0, "{j}");
    assert_eq!(j["faults_one_in"], 0, "{j}");
    let ok = j["handshakes_ok"].as_u64().unwrap();
    assert_eq!(
        j["bytes_checked"],
        ok * 2 * 4096,
        "every byte, both ways: {j}"
    );
    assert_eq!(j["leaked"], 0);
}

/// The soak with everything on: faults in every other batch, three workers
/// with most of their pairs disrupted. Whatever failed, every figure must
/// balance.
#[test]
fn stress_soak_balances_with_faults_cancels_and_file_closes() {
    let (code, out, err) = ksspictl(&[
        "stress",
        "--duration",
        "3",
        "--concurrency",
        "4",
        "--faults",
        "1in50",
        "--workers",
        "3",
        "--disrupt",
        "60",
        "--seed",
        "11",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}\n{out}");
    let j = json(&out);
    let n = |k: &str| j[k].as_u64().unwrap_or_else(|| panic!("{k} missing: {j}"));
    assert_eq!(j["balanced"], true, "{j}");
    assert!(j["failure"].is_null(), "{j}");
    assert_eq!(
        (n("faults_one_in"), n("workers"), n("disrupt_percent")),
        (50, 3, 60)
    );
    // Batches: TLS versions rotate, faults every other one.
    let batches = n("batches");
    assert!(batches >= 2, "{j}");
    assert_eq!(
        n("batches_tls12") + n("batches_tls13") + n("batches_tls_both"),
        batches
    );
    assert_eq!(n("batches_tls12"), batches.div_ceil(3), "{j}");
    assert_eq!(n("batches_faults"), batches / 2, "{j}");
    let with_tickets = (0..batches).filter(|i| (i / 6) % 2 == 0).count() as u64;
    assert_eq!(n("batches_tickets"), with_tickets, "{j}");
    // Faults were injected; failures only where they were.
    assert!(
        n("faults_injected") > 0 && n("fault_points") > n("faults_injected"),
        "{j}"
    );
    assert_eq!(n("handshakes_failed_clean"), 0, "{j}");
    assert_eq!(n("pairs_failed_clean"), 0, "{j}");
    assert_eq!(
        n("handshakes_ok") + n("handshakes_failed"),
        16 * batches,
        "{j}"
    );
    assert!(n("handshakes_ok") > 0 && n("pairs_ok") > 0, "{j}");
    assert!(n("pairs_tls12") > 0 && n("pairs_tls13") > 0, "{j}");
    assert!(n("pair_bytes_checked") > 0, "{j}");
    // Every request completed exactly once, with a clean status.
    let sent = n("requests_sent");
    assert!(sent > 100, "{j}");
    assert_eq!(n("requests_completed"), sent, "{j}");
    assert_eq!(n("requests_completed_twice"), 0);
    assert_eq!(n("requests_dropped"), 0);
    assert_eq!(n("status_not_clean"), 0);
    assert_eq!(n("replies_not_clean"), 0);
    assert_eq!(n("status_success") + n("status_error"), sent);
    // Disruptions of every kind happened and were accounted for.
    assert!(n("pairs_disrupted") > 0, "{j}");
    assert!(
        n("cancels") > 0 && n("cancelled") > 0 && n("pends_refused") > 0,
        "{j}"
    );
    assert!(n("closes_mid_flight") > 0 && n("file_cleanups") > 0, "{j}");
    assert_eq!(
        n("cancel_routines"),
        n("cancelled_by_engine") + n("cancel_races"),
        "{j}"
    );
    assert!(
        n("cancelled") >= n("cancelled_by_engine") + n("cancel_races") + n("pends_refused"),
        "{j}"
    );
    assert!(n("pends_refused") <= n("pends"));
    // Sessions: all closed; every id handed out is refused afterwards.
    assert!(n("sessions_opened") > 0, "{j}");
    assert_eq!(n("sessions_open_at_end"), 0);
    assert!(n("stale_ids_refused") > 0 && n("stale_ids_refused") <= n("sessions_opened"));
    // Async calls and callbacks balance in the engine, the self-test and
    // the model; every work item queued ran; nothing leaked.
    assert!(n("engine_calls") > 0);
    assert_eq!(n("engine_calls"), n("engine_completions"), "{j}");
    assert_eq!(n("engine_callbacks"), n("engine_notified"), "{j}");
    assert_eq!(n("selftest_callbacks"), n("selftest_notified"), "{j}");
    assert_eq!(n("model_calls"), n("model_completions"), "{j}");
    assert_eq!(n("model_callbacks"), n("model_notified"), "{j}");
    assert!(n("model_calls") >= n("engine_calls") + n("selftest_completions"));
    assert!(n("work_items_queued") > 0);
    assert_eq!(n("work_items_queued"), n("work_items_run"), "{j}");
    assert!(n("work_items_engine") <= n("work_items_queued"));
    assert_eq!(n("leaked"), 0);
}

#[test]
fn stress_refuses_bad_soak_arguments_with_one_line() {
    for (args, text) in [
        (&["stress", "--faults", "often"][..], "often"),
        (
            &["stress", "--disrupt", "101", "--duration", "1"][..],
            "--disrupt",
        ),
        (&["stress", "--concurrency", "0"][..], "--concurrency"),
    ] {
        let (code, _, err) = ksspictl(args);
        assert_ne!(code, 0, "{args:?}");
        assert!(err.contains(text), "{args:?}: {err}");
    }
}
