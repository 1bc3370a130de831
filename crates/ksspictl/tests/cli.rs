//! The command line as a contract: `ksspictl selftest --json` and `info
//! --json` over the model, and a one-line reason with a non-zero exit on bad
//! arguments.

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
}

#[test]
fn stress_runs_mixed_batches_for_the_time_given() {
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
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let j = json(&out);
    assert!(j["batches"].as_u64().unwrap() >= 1, "{j}");
    assert!(j["handshakes_ok"].as_u64().unwrap() >= 32, "{j}");
    assert_eq!(j["handshakes_failed"], 0);
    assert_eq!(j["leaked"], 0);
}
