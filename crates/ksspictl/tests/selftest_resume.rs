//! `ksspictl selftest --resume` over the model: every pair's second handshake
//! resumes, over each TLS version and in every completion mode, and the
//! counts are in the JSON ("resumption") and the table; without `--resume`
//! the JSON has no "resumption".
#![cfg(not(windows))]

mod common;

use common::ksspictl;

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {stdout}"))
}

#[test]
fn selftest_resume_json_shows_every_second_handshake_resumed() {
    for completion in ["async", "inline", "sync", "mixed"] {
        for tls in ["1.2", "1.3", "both"] {
            let (code, out, err) = ksspictl(&[
                "selftest",
                "--resume",
                "--json",
                "--count",
                "20",
                "--concurrency",
                "4",
                "--completion",
                completion,
                "--tls",
                tls,
            ]);
            let at = format!("--completion {completion} --tls {tls}");
            assert_eq!(code, 0, "{at}: {err}");
            let j = json(&out);
            assert_eq!(j["count"], 20, "{at}: {j}");
            assert_eq!(j["handshakes_ok"], 40, "{at}: two per pair: {j}");
            assert_eq!(j["handshakes_failed"], 0, "{at}: {j}");
            assert_eq!(j["sessions"], 80, "{at}: {j}");
            assert_eq!(j["leaked"], 0, "{at}: {j}");
            let r = &j["resumption"];
            assert_eq!(r["resumed"], 20, "{at}: {j}");
            assert_eq!(r["full_handshakes"], 0, "{at}: {j}");
            assert_eq!(r["unknown"], 0, "{at}: {j}");
            assert_eq!(r["first_resumed"], 0, "{at}: {j}");
        }
    }
}

#[test]
fn the_model_s_other_answers_are_reported_as_they_are() {
    // A kernel Schannel that keeps no sessions: every second handshake full.
    let (code, out, err) = ksspictl(&[
        "selftest",
        "--resume",
        "--json",
        "--count",
        "12",
        "--no-session-cache",
    ]);
    assert_eq!(code, 0, "{err}");
    let j = json(&out);
    assert_eq!(j["handshakes_ok"], 24, "{j}");
    assert_eq!(j["resumption"]["resumed"], 0, "{j}");
    assert_eq!(j["resumption"]["full_handshakes"], 12, "{j}");
    assert_eq!(j["resumption"]["unknown"], 0, "{j}");
    // One that does not answer SECPKG_ATTR_SESSION_INFO: unknown, never full.
    let (code, out, err) = ksspictl(&[
        "selftest",
        "--resume",
        "--json",
        "--count",
        "12",
        "--no-session-info",
    ]);
    assert_eq!(code, 0, "{err}");
    let j = json(&out);
    assert_eq!(j["resumption"]["resumed"], 0, "{j}");
    assert_eq!(j["resumption"]["full_handshakes"], 0, "{j}");
    assert_eq!(j["resumption"]["unknown"], 24, "{j}");
}

#[test]
fn selftest_resume_with_bytes_checks_both_handshakes_bytes() {
    let (code, out, err) = ksspictl(&[
        "selftest", "--resume", "--json", "--count", "10", "--bytes", "20000",
    ]);
    assert_eq!(code, 0, "{err}");
    let j = json(&out);
    assert_eq!(j["handshakes_ok"], 20, "{j}");
    assert_eq!(j["bytes_checked"], 20u64 * 2 * 20000, "{j}");
    assert_eq!(j["resumption"]["resumed"], 10, "{j}");
}

#[test]
fn without_resume_the_json_has_no_resumption() {
    let (code, out, err) = ksspictl(&["selftest", "--json", "--count", "6"]);
    assert_eq!(code, 0, "{err}");
    let j = json(&out);
    assert_eq!(j["handshakes_ok"], 6, "{j}");
    assert!(j.get("resumption").is_none(), "{j}");
}

#[test]
fn the_table_prints_the_resumption_counts() {
    let (code, out, err) = ksspictl(&["selftest", "--resume", "--count", "5", "--tls", "1.3"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("5 pairs of two handshakes"), "{out}");
    let row = |name: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no {name:?} row: {out}"))
            .split_whitespace()
            .last()
            .unwrap()
            .to_string()
    };
    assert_eq!(row("handshakes ok"), "10");
    assert_eq!(row("resumed"), "5");
    assert_eq!(row("full (the fallback)"), "0");
    assert_eq!(row("not told by the provider"), "0");
    assert_eq!(row("first handshakes resumed"), "0");
}
