//! The test VM's commands on a host without Windows: `install`,
//! `uninstall` and `verifier` refuse with one line, `acceptance` runs only
//! as `--dry-run`, which runs the model-capable steps for real and leaves a
//! report of the documented shape; bad flags and a foreign state file get
//! one clear line.

// On Windows these commands do the real thing (the VM's acceptance covers
// them there); this file is the host side.
#![cfg(not(windows))]

mod common;

use common::ksspictl;
use std::path::PathBuf;
use std::process::Command;

/// A fresh folder for one test's report and state file.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ksspictl-vm-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// `ksspictl ARGS` in `dir`: (exit code, stdout, stderr).
fn in_dir(dir: &PathBuf, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ksspictl"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run ksspictl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_windows_commands_refuse_in_one_line_here() {
    for (args, what) in [
        (
            &["install", "--inf", "ksspi_driver.inf"][..],
            "`install` stages",
        ),
        (&["uninstall"][..], "`uninstall` removes"),
        (&["verifier", "on"][..], "`verifier` sets Driver Verifier"),
        (
            &["verifier", "status"][..],
            "`verifier` sets Driver Verifier",
        ),
        (&["acceptance"][..], "acceptance --dry-run"),
    ] {
        let (code, out, err) = ksspictl(args);
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
        assert!(
            err.starts_with("ksspictl: only on Windows: "),
            "{args:?}: {err}"
        );
        assert!(err.contains(what), "{args:?}: {err}");
    }
}

#[test]
fn bad_flags_get_one_clear_line() {
    let (code, _, err) = ksspictl(&["verifier", "off", "--keep-others"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("--keep-others goes with `verifier on` only"),
        "{err}"
    );
    let (code, _, err) = ksspictl(&["verifier", "maybe"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = ksspictl(&["acceptance", "--dry-run", "--count", "0"]);
    assert_eq!(code, 1);
    assert!(err.contains("--count must be at least 1"), "{err}");
    let (code, _, err) = ksspictl(&["acceptance", "--dry-run", "--inf", "/nonexistent/k.inf"]);
    assert_eq!(code, 1);
    assert!(err.contains("no INF at /nonexistent/k.inf"), "{err}");
    let (code, _, err) = ksspictl(&["install"]);
    assert_eq!(code, 2, "--inf is required: {err}");
}

#[test]
fn a_state_file_not_ours_is_refused_with_the_fix() {
    let dir = scratch("state");
    std::fs::write(dir.join("acceptance-state.json"), "{\"not\": 1}").unwrap();
    let (code, _, err) = in_dir(&dir, &["acceptance", "--dry-run"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("is not a state file this ksspictl wrote"),
        "{err}"
    );
    assert!(err.contains("--restart"), "{err}");
    assert!(!dir.join("acceptance-report.json").exists());
}

#[test]
fn a_dry_run_runs_the_model_steps_and_writes_the_report() {
    let dir = scratch("dry");
    let (code, out, err) = in_dir(
        &dir,
        &[
            "acceptance",
            "--dry-run",
            "--count",
            "16",
            "--bytes",
            "512",
            "--stress-seconds",
            "1",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with("ksspi acceptance (model, dry run): PASSED"),
        "{out}"
    );
    assert!(out.contains("report: acceptance-report.json"), "{out}");
    assert!(out.lines().count() < 25, "one screen: {out}");
    assert!(
        !dir.join("acceptance-state.json").exists(),
        "no reboot, no state"
    );
    let text = std::fs::read_to_string(dir.join("acceptance-report.json")).expect("report");
    let j: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(j["backend"], "model");
    assert_eq!(j["dry_run"], true);
    assert_eq!(j["outcome"], "passed");
    let steps = j["steps"].as_array().expect("steps");
    let step = |name: &str| {
        steps
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {j}"))
    };
    for tls in ["1.2", "1.3"] {
        let s = step(&format!("selftest tls{tls}"));
        assert_eq!(s["status"], "passed", "{s}");
        assert_eq!(s["exit_code"], 0);
        assert_eq!(s["figures"]["handshakes_ok"], 16, "{s}");
        assert_eq!(s["figures"]["bytes_checked"], 16 * 512 * 2, "{s}");
        assert!(s["observed"].is_object(), "the observed facts: {s}");
        assert!(s["command"]
            .as_str()
            .unwrap()
            .contains(&format!("--tls {tls}")));
    }
    // The resume run over the model: every pair's second handshake resumed.
    let resume = step("selftest resume");
    assert_eq!(resume["status"], "passed", "{resume}");
    assert_eq!(resume["figures"]["handshakes_ok"], 32, "{resume}");
    assert_eq!(resume["figures"]["resumption"]["resumed"], 16, "{resume}");
    assert_eq!(
        resume["figures"]["resumption"]["full_handshakes"], 0,
        "{resume}"
    );
    assert_eq!(step("stress")["figures"]["balanced"], true);
    assert_eq!(step("info after")["figures"]["sessions_open"], 0);
    for name in ["serve + connect", "remove + re-add", "verifier on"] {
        let s = step(name);
        assert_eq!(s["status"], "skipped", "{s}");
        assert!(
            !s["why"].as_str().unwrap_or("").is_empty(),
            "{name} says why: {s}"
        );
    }
    let elevated = &j["preconditions"][0];
    assert_eq!(elevated["name"], "elevated");
    assert_eq!(elevated["status"], "skipped");
}
