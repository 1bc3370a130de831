//! The command line as a contract: `ksspictl selftest --json`, `info
//! --json` and `stress --json` (the soak's balances) over the model, and a
//! one-line reason with a non-zero exit on bad arguments.
//!
//! Over the model only (its options, its generated and PEM certificates).
#![cfg(not(windows))]

mod common;

use common::ksspictl;
use ksspi_abi::{MAX_SELFTEST_BYTES, MAX_SELFTEST_CONCURRENCY, MAX_SELFTEST_COUNT};
use ksspi_sim::certs::{self_signed, TestPki};
use ksspi_sim::testing::{ChildGuard, TempDir};
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A refusal as the harness must give one: a non-zero exit and one line on
/// stderr naming `text`, never a panic.
fn assert_refused(args: &[&str], code: i32, err: &str, text: &str) {
    assert_ne!(code, 0, "{args:?} succeeded: {err}");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    assert_eq!(
        err.trim().lines().count(),
        1,
        "{args:?}: not one line: {err}"
    );
    assert!(err.starts_with("ksspictl: "), "{args:?}: {err}");
    assert!(err.contains(text), "{args:?}: {text:?} not in {err}");
}

/// Run the harness, killing it if it is still running after `limit`
/// (a `serve` that accepted a bad certificate would listen forever):
/// (exit code, stdout, stderr), `None` if it had to be killed.
fn ksspictl_within(args: &[&str], limit: Duration) -> Option<(i32, String, String)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ksspictl"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ksspictl");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for ksspictl") {
            break Some(status);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (mut out, mut err) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    status.map(|s| (s.code().unwrap_or(-1), out, err))
}

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
            && out.contains("latency per handshake p50 / p99 / max"),
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
        "rustls-resumed",
        "engine-sync-resumed",
        "engine-async-resumed",
    ] {
        for tls in ["1.2", "1.3"] {
            let (code, _, err) =
                ksspictl(&["bench-path", "--path", path, "--tls", tls, "--count", "2"]);
            assert_eq!(code, 0, "{path} {tls}: {err}");
        }
    }
}

#[test]
fn bench_quick_handshakes_have_resumed_rows_beside_the_full_ones() {
    // A handshake of the resumed rows that did not resume (or of the full
    // rows that did) fails the run: exit 0 is the bench's own check passing.
    let (code, out, err) = ksspictl(&["bench", "--quick", "--only", "handshakes", "--json"]);
    assert_eq!(code, 0, "{err}");
    let j = json(&out);
    let full = j["handshakes"].as_array().expect("full rows");
    let resumed = j["resumed_handshakes"].as_array().expect("resumed rows");
    assert!(!full.is_empty(), "{j}");
    assert_eq!(
        resumed.len(),
        full.len(),
        "a resumed row beside each full one: {j}"
    );
    for (r, f) in resumed.iter().zip(full) {
        assert_eq!(
            (&r["tls"], &r["threads"]),
            (&f["tls"], &f["threads"]),
            "{j}"
        );
        assert_eq!(r["tls13_tickets"], 1, "{r}");
        for rate in [
            "rustls_per_second",
            "engine_sync_per_second",
            "engine_async_per_second",
        ] {
            assert!(r[rate].as_f64().unwrap() > 0.0, "{rate}: {r}");
        }
        assert!(r["engine_sync_ratio"].as_f64().unwrap() > 0.0, "{r}");
        // The IOCTL path's count of handshakes that resumed is reported.
        assert!(f["ioctl_resumed"].is_u64(), "{f}");
    }
    let tls: Vec<&str> = resumed.iter().map(|r| r["tls"].as_str().unwrap()).collect();
    assert!(tls.contains(&"1.2") && tls.contains(&"1.3"), "{tls:?}");
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

/// Issue 20, defect 2: every numeric option has a range the program can
/// honour; out of it, or not a number, is one line and exit status 2. The
/// driver's limits are the self-test's ranges.
#[test]
fn numeric_options_out_of_range_are_one_line_never_a_panic() {
    let over_count = (MAX_SELFTEST_COUNT + 1).to_string();
    let over_concurrency = (MAX_SELFTEST_CONCURRENCY + 1).to_string();
    let over_bytes = (MAX_SELFTEST_BYTES + 1).to_string();
    let scale = format!("1,{over_concurrency}");
    let cases: &[(&[&str], &str)] = &[
        // The two the trial found: a panic and a 128 GiB allocation.
        (
            &["connect", "127.0.0.1:9", "--send", "x", "--idle", "1e300"],
            "--idle",
        ),
        (
            &["selftest", "--concurrency", "4294967295"],
            "--concurrency",
        ),
        (
            &["connect", "127.0.0.1:9", "--expect", "x", "--idle", "NaN"],
            "--idle",
        ),
        (
            &["connect", "127.0.0.1:9", "--send", "x", "--idle=-1"],
            "--idle",
        ),
        (
            &["connect", "127.0.0.1:9", "--send", "x", "--idle", "0"],
            "--idle",
        ),
        (&["connect", "127.0.0.1:9", "--repeat", "0"], "--repeat"),
        (&["connect", "127.0.0.1:9", "--repeat", "101"], "--repeat"),
        (&["connect", "127.0.0.1:9", "--repeat=-1"], "--repeat"),
        (&["connect", "127.0.0.1:9", "--resume", "maybe"], "--resume"),
        (
            &["serve", "--listen", "127.0.0.1:0", "--resume", "1"],
            "--resume",
        ),
        (&["selftest", "--count", "0"], "--count"),
        (&["selftest", "--count", &over_count], "--count"),
        (
            &["selftest", "--concurrency", &over_concurrency],
            "--concurrency",
        ),
        (&["selftest", "--bytes", &over_bytes], "--bytes"),
        (&["selftest", "--seed=-1"], "--seed"),
        (&["stress", "--duration", "inf"], "--duration"),
        (&["stress", "--duration", "1e300"], "--duration"),
        (&["stress", "--duration", "10s"], "--duration"),
        (
            &["stress", "--concurrency", &over_concurrency],
            "--concurrency",
        ),
        (&["stress", "--bytes", &over_bytes], "--bytes"),
        (&["stress", "--workers", "4294967295"], "--workers"),
        (&["stress", "--disrupt", "101"], "--disrupt"),
        (&["stress", "--faults", "1in-3"], "1in-3"),
        (&["bench", "--scale", "0"], "--scale"),
        (&["bench", "--scale", &scale], "--scale"),
        (
            &[
                "bench-path",
                "--path",
                "rustls",
                "--tls",
                "1.3",
                "--count",
                "0",
            ],
            "--count",
        ),
    ];
    for (args, text) in cases {
        let (code, out, err) = ksspictl(args);
        assert_refused(args, code, &err, text);
        assert_eq!(code, 2, "{args:?}: a usage error: {err}");
        assert!(out.is_empty(), "{args:?} ran: {out}");
    }
}

/// The ranges' upper ends are honoured, not only refused beyond: the
/// driver's largest concurrency and byte count in one self-test.
#[test]
fn selftest_runs_at_the_drivers_limits() {
    let concurrency = MAX_SELFTEST_CONCURRENCY.to_string();
    let bytes = MAX_SELFTEST_BYTES.to_string();
    let (code, out, err) = ksspictl(&[
        "selftest",
        "--count",
        "2",
        "--concurrency",
        &concurrency,
        "--bytes",
        &bytes,
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let j = json(&out);
    assert_eq!(j["handshakes_ok"], 2, "{j}");
    assert_eq!(
        j["bytes_checked"],
        2 * 2 * u64::from(MAX_SELFTEST_BYTES),
        "{j}"
    );
}

/// Issue 20, defect 5: `stress --duration 0` ran nothing and reported a
/// balanced soak. Zero is refused; any positive time runs at least one
/// batch.
#[test]
fn stress_refuses_zero_time_and_always_runs_a_batch() {
    let args = ["stress", "--duration", "0"];
    let (code, _, err) = ksspictl(&args);
    assert_refused(&args, code, &err, "--duration");
    let (code, out, err) = ksspictl(&[
        "stress",
        "--duration",
        "0.001",
        "--concurrency",
        "2",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let j = json(&out);
    assert_eq!(j["batches"], 1, "{j}");
    assert_eq!(j["handshakes_ok"].as_u64(), Some(8), "{j}");
    assert_eq!(j["balanced"], true, "{j}");
}

/// `--idle` only means something with --send, --send-file or --expect:
/// alone it is refused rather than ignored.
#[test]
fn idle_without_a_conversation_is_refused() {
    let args = ["connect", "127.0.0.1:9", "--idle", "5"];
    let (code, _, err) = ksspictl(&args);
    assert_refused(&args, code, &err, "--send");
}

/// `--send` takes escapes; an unknown one or a broken \x is refused before
/// connecting (port 9 of loopback would refuse the connection: that error
/// must not be the one reported).
#[test]
fn send_escapes_are_checked_before_connecting() {
    for (send, text) in [
        (r"a\q", r"unknown escape \q"),
        (r"a\x4", r"\x at byte 1"),
        (r"a\xZZ", r"\x at byte 1"),
        ("a\\", "lone backslash"),
    ] {
        let args = ["connect", "127.0.0.1:9", "--send", send];
        let (code, _, err) = ksspictl(&args);
        assert_refused(&args, code, &err, text);
        assert!(err.contains("--send"), "{err}");
    }
    let args = ["connect", "127.0.0.1:9", "--expect", r"\u"];
    let (code, _, err) = ksspictl(&args);
    assert_refused(&args, code, &err, "--expect");
}

/// Issue 20, defect 3: bad certificate files are refused at start with the
/// file and what is wrong, before `serve` listens (it used to listen and
/// fail every client with SEC_E_NO_CREDENTIALS) and before `connect`
/// connects (a garbage CA used to be ignored).
#[test]
fn bad_certificate_files_are_refused_at_start_naming_the_file() {
    let dir = TempDir::new("ksspictl-cli-certs");
    let pki = TestPki::new("ksspictl cli CA");
    let leaf = pki.leaf(&["localhost"], false);
    let other = self_signed(&["localhost"]);
    let cert = dir.write("leaf.pem", &leaf.cert_pem);
    let key = dir.write("leaf.key", &leaf.key_pem);
    let other_key = dir.write("other.key", &other.key_pem);
    let garbage = "-----BEGIN CERTIFICATE-----\nZ2FyYmFnZSBnYXJiYWdlIGdhcmJhZ2U=\n-----END CERTIFICATE-----\n";
    let garbage_cert = dir.write("garbage.pem", garbage);
    let garbage_key = dir.write(
        "garbage.key",
        &garbage.replace("CERTIFICATE", "PRIVATE KEY"),
    );
    let not_base64 = dir.write(
        "not-base64.pem",
        "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
    );
    let empty = dir.write("empty.pem", "no PEM here\n");
    let missing = cert.with_file_name("missing.pem");
    let p = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let serve_cases: Vec<([String; 2], &str)> = vec![
        (
            [p(&cert), p(&other_key)],
            "does not match the certificate in",
        ),
        ([p(&garbage_cert), p(&key)], "not a valid X.509 certificate"),
        ([p(&not_base64), p(&key)], "not base64"),
        ([p(&empty), p(&key)], "no \"BEGIN CERTIFICATE\" block"),
        ([p(&key), p(&key)], "no \"BEGIN CERTIFICATE\" block"),
        ([p(&cert), p(&cert)], "no private key block"),
        ([p(&cert), p(&garbage_key)], "the key cannot be used"),
        ([p(&missing), p(&key)], "missing.pem"),
    ];
    for ([cert, key], text) in &serve_cases {
        let args = [
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--once",
            "--cert",
            cert,
            "--key",
            key,
        ];
        let (code, out, err) = ksspictl_within(&args, Duration::from_secs(20))
            .unwrap_or_else(|| panic!("{args:?} was still running: it accepted the files"));
        assert_refused(&args, code, &err, text);
        assert!(!out.contains("listening"), "{args:?}: {out}");
        // The file at fault is named: the key for a mismatch or a bad key,
        // the certificate otherwise.
        let named = if text.contains("key") || text.contains("match") {
            key
        } else {
            cert
        };
        assert!(err.contains(named.as_str()), "{args:?}: {err}");
    }
    for (ca, text) in [
        (
            &garbage_cert,
            "certificate 1 is not a valid X.509 certificate",
        ),
        (&not_base64, "not base64"),
        (&empty, "no \"BEGIN CERTIFICATE\" block"),
        (&key, "no \"BEGIN CERTIFICATE\" block"),
    ] {
        let args = ["connect", "127.0.0.1:9", "--ca", ca.to_str().unwrap()];
        let (code, _, err) = ksspictl(&args);
        assert_refused(&args, code, &err, text);
        assert!(err.contains(ca.to_str().unwrap()), "{err}");
    }
    // A thumbprint the model's store does not hold, and a name no
    // certificate can carry.
    for (args, text) in [
        (
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--cert-thumbprint",
                &"00".repeat(20),
            ][..],
            "no certificate with thumbprint",
        ),
        (
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--self-signed",
                "not a name",
            ][..],
            "not a DNS name or an IP address",
        ),
    ] {
        let (code, _, err) = ksspictl_within(args, Duration::from_secs(20))
            .unwrap_or_else(|| panic!("{args:?} was still running"));
        assert_refused(args, code, &err, text);
    }
}

/// The good files work end to end: `serve` with a CA-signed certificate,
/// `connect` trusting that CA, a line sent with an escaped newline and
/// echoed back.
#[test]
fn serve_and_connect_with_a_ca_signed_certificate_and_an_escaped_line() {
    let dir = TempDir::new("ksspictl-cli-pair");
    let pki = TestPki::new("ksspictl cli CA");
    let leaf = pki.leaf(&["localhost"], false);
    let ca = dir.write("ca.pem", &pki.ca_pem());
    let cert = dir.write("leaf.pem", &leaf.cert_pem);
    let key = dir.write("leaf.key", &leaf.key_pem);
    let mut server = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_ksspictl"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--once",
                "--echo",
                "--cert",
            ])
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run ksspictl serve"),
    );
    let mut line = String::new();
    BufReader::new(server.0.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("serve said {line:?}"))
        .to_string();
    let (code, out, err) = ksspictl(&[
        "connect",
        &addr,
        "--server-name",
        "localhost",
        "--ca",
        ca.to_str().unwrap(),
        "--send",
        r"ping\tpong\x21\n",
        "--expect",
        r"\x21\n",
        "--idle",
        "10",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "ping\tpong!\n", "{err}");
    let status = server.0.wait().unwrap();
    assert!(status.success(), "serve --once failed");
}

/// The help the trial found wanting: units, the default certificate, one
/// layout, a one-line summary per command, --idle's scope, the latency's
/// unit, and the ranges (from the driver's limits, so they cannot drift).
#[test]
fn help_states_units_defaults_and_ranges() {
    let help = |args: &[&str]| {
        let (code, out, err) = ksspictl(args);
        assert_eq!(code, 0, "{args:?}: {err}");
        out
    };
    let top = help(&["--help"]);
    let stress_line = top
        .lines()
        .find(|l| l.trim_start().starts_with("stress"))
        .unwrap();
    assert!(
        stress_line.len() < 100,
        "stress's summary is a paragraph: {stress_line}"
    );
    let stress = help(&["stress", "--help"]);
    assert!(
        stress.contains("--duration <SECONDS>") && stress.contains("in seconds"),
        "{stress}"
    );
    let serve = help(&["serve", "--help"]);
    assert!(
        serve.contains("With none of them") && serve.contains("localhost"),
        "{serve}"
    );
    let connect = help(&["connect", "--help"]);
    assert!(
        connect.contains("With --send, --send-file or --expect"),
        "{connect}"
    );
    assert!(connect.contains(r"\n \r \t"), "{connect}");
    // bench lays its flags out as the others do: no blank line between
    // them, no "see a summary with '-h'".
    let bench = help(&["bench", "--help"]);
    assert!(!bench.contains("summary with '-h'"), "{bench}");
    assert!(!bench.contains("\n\n      --"), "{bench}");
    let selftest = help(&["selftest", "--help"]);
    for limit in [
        MAX_SELFTEST_COUNT,
        MAX_SELFTEST_CONCURRENCY,
        MAX_SELFTEST_BYTES,
    ] {
        assert!(
            selftest.contains(&limit.to_string()),
            "{limit} not in {selftest}"
        );
    }
    assert!(
        stress.contains(&MAX_SELFTEST_CONCURRENCY.to_string()),
        "{stress}"
    );
    assert!(
        bench.contains(&MAX_SELFTEST_CONCURRENCY.to_string()),
        "{bench}"
    );
}

/// A reader that has gone (`ksspictl stress --json | head -c 100`): the
/// harness ends quietly, by SIGPIPE as `cat` does, instead of panicking with
/// "failed printing to stdout". The pipe's read end is closed before the
/// child starts, so its first write to stdout meets a closed pipe whatever
/// the timing; the test harness ignores SIGPIPE, and an ignored signal stays
/// ignored across exec, so only ksspictl's own reset makes it the default.
#[test]
fn a_closed_stdout_pipe_ends_the_harness_quietly() {
    use std::os::unix::process::ExitStatusExt;
    for args in [
        &["info", "--json"][..],
        &[
            "stress",
            "--json",
            "--duration",
            "0.001",
            "--concurrency",
            "1",
        ][..],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_ksspictl"))
            .args(args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(out.status.signal(), Some(13), "{args:?}: SIGPIPE; {err}");
        assert!(err.is_empty(), "{args:?}: quietly, not {err:?}");
    }
}

/// `connect --cert/--key` files are checked at start as `serve`'s are (one
/// line naming the file, before connecting), and a `--cert-thumbprint` the
/// model's store does not hold is refused likewise.
#[test]
fn connect_client_certificate_files_are_checked_at_start() {
    let dir = TempDir::new("ksspictl-cli-client-certs");
    let pki = TestPki::new("ksspictl cli client CA");
    let leaf = pki.leaf(&["client.example"], false);
    let other = self_signed(&["client.example"]);
    let cert = dir.write("client.pem", &leaf.cert_pem);
    let key = dir.write("client.key", &leaf.key_pem);
    let other_key = dir.write("other.key", &other.key_pem);
    let empty = dir.write("empty.pem", "no PEM here\n");
    let p = |p: &std::path::Path| p.to_str().unwrap().to_string();
    for ([c, k], text, named) in [
        (
            [p(&cert), p(&other_key)],
            "does not match the certificate in",
            p(&other_key),
        ),
        (
            [p(&empty), p(&key)],
            "no \"BEGIN CERTIFICATE\" block",
            p(&empty),
        ),
        ([p(&cert), p(&cert)], "no private key block", p(&cert)),
    ] {
        // Port 9 (discard) is never reached: the files are refused first.
        let args = ["connect", "127.0.0.1:9", "--cert", &c, "--key", &k];
        let (code, _, err) = ksspictl(&args);
        assert_refused(&args, code, &err, text);
        assert!(err.contains(&named), "{args:?}: {err}");
        assert!(!err.contains("connecting to"), "{args:?}: {err}");
    }
    let thumb = "11".repeat(20);
    let args = ["connect", "127.0.0.1:9", "--cert-thumbprint", &thumb];
    let (code, _, err) = ksspictl(&args);
    assert_refused(&args, code, &err, "no certificate with thumbprint");
    // --cert without --key, and both forms at once: usage errors, no panic.
    for args in [
        &["connect", "127.0.0.1:9", "--cert", "c.pem"][..],
        &[
            "connect",
            "127.0.0.1:9",
            "--cert",
            "c.pem",
            "--key",
            "k.pem",
            "--cert-thumbprint",
            &thumb,
        ][..],
        &["serve", "--listen", "127.0.0.1:0", "--client-cert", "maybe"][..],
    ] {
        let (code, _, err) = ksspictl(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
