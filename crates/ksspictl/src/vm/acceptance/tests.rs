//! The acceptance run against a scripted machine: every precondition's
//! failure, the suite, Driver Verifier on, the stop for the reboot, the
//! resume from the state file (too early, then after it), and the report's
//! JSON shape.

use super::*;
use crate::vm::report::{Outcome, Status};

/// A machine whose answers the test sets, logging every action.
struct Fake {
    elevated: Probe,
    test_signing: Probe,
    secure_boot: Probe,
    present: Probe,
    inf: Result<(), String>,
    cert: Result<Certificate, (String, String)>,
    settings: Result<Settings, String>,
    /// (Unix seconds, uptime).
    clock: (u64, u64),
    /// When `ksspictl verifier` last changed the settings.
    changed_at: Option<u64>,
    /// The registry's pending-reboot signals.
    pending: Result<Signals, String>,
    /// Exit code per step name prefix (default 0), and stderr.
    fail: Vec<(&'static str, i32, &'static str)>,
    log: Vec<Action>,
}

impl Fake {
    /// A ready test VM: elevated, test signing on, Secure Boot off, the
    /// driver installed, no verifier set, a certificate found.
    fn ready() -> Fake {
        Fake {
            elevated: Ok(true),
            test_signing: Ok(true),
            secure_boot: Ok(false),
            present: Ok(true),
            inf: Ok(()),
            cert: Ok(Certificate {
                thumbprint: Some("ab".repeat(20)),
                detail: "found in LocalMachine\\My".into(),
            }),
            settings: Ok(Settings::default()),
            clock: (10_000, 3_600),
            changed_at: None,
            pending: Ok(Signals::default()),
            fail: Vec::new(),
            log: Vec::new(),
        }
    }

    fn command_of(action: &Action) -> String {
        match action {
            Action::Ksspictl(a) => format!("ksspictl {}", a.join(" ")),
            Action::Loopback { .. } => "ksspictl serve ... / connect ...".into(),
            Action::RemoveAndReadd { .. } => "pnputil /disable-device ...".into(),
            Action::Install { inf } => format!("ksspictl install --inf {inf}"),
            Action::VerifierOn { args } => {
                format!("verifier {}", args.clone().unwrap_or_default().join(" "))
            }
            Action::VerifierQuery => "verifier /query".into(),
        }
    }
}

impl System for Fake {
    fn backend(&self) -> &'static str {
        "windows"
    }
    fn clock(&mut self) -> (u64, u64) {
        self.clock
    }
    fn elevated(&mut self) -> Probe {
        self.elevated.clone()
    }
    fn test_signing(&mut self) -> Probe {
        self.test_signing.clone()
    }
    fn secure_boot(&mut self) -> Probe {
        self.secure_boot.clone()
    }
    fn driver_present(&mut self) -> Probe {
        self.present.clone()
    }
    fn check_inf(&mut self, _path: &str) -> Result<(), String> {
        self.inf.clone()
    }
    fn certificate(&mut self, thumbprint: Option<&str>) -> Result<Certificate, (String, String)> {
        match (&self.cert, thumbprint) {
            (Ok(_), Some(t)) => Ok(Certificate {
                thumbprint: Some(t.to_string()),
                detail: "given".into(),
            }),
            (c, _) => c.clone(),
        }
    }
    fn verifier_settings(&mut self) -> Result<Settings, String> {
        self.settings.clone()
    }
    fn verifier_changed_at(&mut self) -> Option<u64> {
        self.changed_at
    }
    fn pending_reboot(&mut self) -> Result<Signals, String> {
        self.pending.clone()
    }
    fn run(&mut self, action: &Action) -> Ran {
        self.log.push(action.clone());
        let command = Fake::command_of(action);
        if let Action::VerifierOn { .. } = action {
            self.settings = Ok(Settings::from_registry(
                Some(verifier::DRIVER),
                Some(verifier::flags()),
            ));
        }
        let (code, stderr) = self
            .fail
            .iter()
            .find(|(prefix, ..)| command.contains(prefix))
            .map(|(_, c, e)| (*c, e.to_string()))
            .unwrap_or((0, String::new()));
        let stdout = match action {
            Action::Ksspictl(a) if a[0] == "selftest" && a.iter().any(|x| x == "--resume") => {
                r#"{"handshakes_ok":400,"handshakes_failed":0,"resumption":{"resumed":100,"full_handshakes":100,"unknown":0,"first_resumed":0},"observed":{"requires_notify":"exported"}}"#.to_string()
            }
            Action::Ksspictl(a) if a[0] == "selftest" => {
                r#"{"handshakes_ok":200,"handshakes_failed":0,"bytes_checked":6553600,"observed":{"requires_notify":"exported"}}"#.to_string()
            }
            Action::Ksspictl(a) if a[0] == "info" => {
                r#"{"driver_version":"0.1.0","sessions_open":0}"#.to_string()
            }
            Action::VerifierQuery => "Level: 000209BF\nksspi_driver.sys Loaded".into(),
            _ => String::new(),
        };
        Ran {
            command,
            skipped: None,
            exit_code: Some(code),
            stdout,
            stderr,
            duration_ms: 5,
        }
    }
}

fn names(report: &Report) -> Vec<String> {
    report
        .steps
        .iter()
        .map(|s| format!("{}:{}", s.phase, s.name))
        .collect()
}

fn failed_check<'a>(report: &'a Report, name: &str) -> &'a Check {
    report
        .preconditions
        .iter()
        .find(|c| c.name == name && c.status == Status::Failed)
        .unwrap_or_else(|| panic!("no failed {name}: {:?}", report.preconditions))
}

#[test]
fn each_machine_precondition_blocks_the_run_with_its_fix() {
    type Spoil = fn(&mut Fake);
    let cases: [(&str, Spoil, &str); 3] = [
        ("elevated", |f| f.elevated = Ok(false), "elevated prompt"),
        (
            "test signing",
            |f| f.test_signing = Ok(false),
            "bcdedit /set testsigning on",
        ),
        (
            "secure boot",
            |f| f.secure_boot = Ok(true),
            "Secure Boot off",
        ),
    ];
    for (name, spoil, fix) in cases {
        let mut sys = Fake::ready();
        spoil(&mut sys);
        let run = super::run(&mut sys, Plan::default(), false, None);
        assert!(!run.success, "{name}");
        assert_eq!(run.report.outcome, Outcome::Blocked, "{name}");
        assert!(run.state.is_none());
        let c = failed_check(&run.report, name);
        assert!(
            c.fix.as_deref().unwrap_or("").contains(fix),
            "{name}: {c:?}"
        );
        assert!(
            sys.log.is_empty(),
            "{name}: nothing runs when blocked: {:?}",
            sys.log
        );
        assert!(run.report.summary("r.json").contains("BLOCKED"), "{name}");
    }
}

#[test]
fn a_missing_driver_needs_an_installable_inf() {
    let mut sys = Fake::ready();
    sys.present = Ok(false);
    let run = super::run(&mut sys, Plan::default(), false, None);
    let c = failed_check(&run.report, "driver");
    assert!(c.fix.as_deref().unwrap().contains("--inf PATH"), "{c:?}");

    let mut sys = Fake::ready();
    sys.present = Ok(false);
    sys.inf = Err("k.inf is not for this machine: it offers arm64, this is amd64".into());
    let plan = Plan {
        inf: Some("k.inf".into()),
        ..Plan::default()
    };
    let run = super::run(&mut sys, plan.clone(), false, None);
    assert!(failed_check(&run.report, "driver")
        .detail
        .contains("offers arm64"));
    assert!(sys.log.is_empty());

    // Installable: the install step comes first.
    let mut sys = Fake::ready();
    sys.present = Ok(false);
    let run = super::run(
        &mut sys,
        Plan {
            verifier: false,
            ..plan
        },
        false,
        None,
    );
    assert!(run.success, "{:?}", run.report);
    assert_eq!(run.report.steps[0].name, "install");
    assert_eq!(
        sys.log[0],
        Action::Install {
            inf: "k.inf".into()
        }
    );
}

#[test]
fn another_drivers_verifier_settings_block_unless_kept() {
    let mut sys = Fake::ready();
    sys.settings = Ok(Settings::from_registry(Some("foo.sys"), Some(1)));
    let run = super::run(&mut sys, Plan::default(), false, None);
    let c = failed_check(&run.report, "driver verifier");
    assert!(
        c.detail.contains("already set for other drivers (foo.sys"),
        "{c:?}"
    );
    assert!(sys.log.is_empty());

    let mut sys = Fake::ready();
    sys.settings = Ok(Settings::from_registry(Some("foo.sys"), Some(1)));
    let plan = Plan {
        keep_others: true,
        ..Plan::default()
    };
    let run = super::run(&mut sys, plan, false, None);
    assert_eq!(run.report.outcome, Outcome::AwaitingReboot);
    assert!(sys.log.contains(&Action::VerifierOn {
        args: Some(args(&[
            "/flags",
            "0x209bf",
            "/driver",
            "foo.sys",
            "ksspi_driver.sys"
        ]))
    }));
}

#[test]
fn a_certificate_that_cannot_be_found_or_made_blocks() {
    let mut sys = Fake::ready();
    sys.cert = Err((
        "no certificate with thumbprint 00.. in LocalMachine\\My".into(),
        "omit --cert-thumbprint to create one".into(),
    ));
    let run = super::run(&mut sys, Plan::default(), false, None);
    let c = failed_check(&run.report, "certificate");
    assert_eq!(
        c.fix.as_deref(),
        Some("omit --cert-thumbprint to create one")
    );
}

#[test]
fn the_first_phase_runs_the_suite_then_sets_the_verifier_and_stops_for_the_reboot() {
    let mut sys = Fake::ready();
    let run = super::run(&mut sys, Plan::default(), false, None);
    assert!(run.success);
    assert_eq!(run.report.outcome, Outcome::AwaitingReboot);
    assert_eq!(
        names(&run.report),
        [
            "plain:info",
            "plain:selftest tls1.2",
            "plain:selftest tls1.3",
            "plain:selftest resume",
            "plain:serve + connect",
            "plain:stress",
            "plain:remove + re-add",
            "plain:info after",
            "plain:verifier on",
        ]
    );
    // Both TLS versions, with bytes, with the certificate.
    let thumb = "ab".repeat(20);
    for tls in ["1.2", "1.3"] {
        let want = args(&[
            "selftest",
            "--tls",
            tls,
            "--count",
            "200",
            "--concurrency",
            "8",
            "--bytes",
            "16384",
            "--json",
            "--cert-thumbprint",
            &thumb,
        ]);
        assert!(
            sys.log.contains(&Action::Ksspictl(want)),
            "{tls}: {:?}",
            sys.log
        );
    }
    // The resume run, both versions alternating, its counts kept.
    let want = args(&[
        "selftest",
        "--resume",
        "--count",
        "200",
        "--concurrency",
        "8",
        "--json",
        "--cert-thumbprint",
        &thumb,
    ]);
    assert!(sys.log.contains(&Action::Ksspictl(want)), "{:?}", sys.log);
    let resume = &run.report.steps[3];
    assert_eq!(resume.name, "selftest resume");
    assert_eq!(
        resume.figures.as_ref().unwrap()["resumption"]["resumed"],
        100
    );
    let selftest = &run.report.steps[1];
    assert_eq!(
        selftest.observed.as_ref().unwrap()["requires_notify"],
        "exported"
    );
    assert_eq!(selftest.figures.as_ref().unwrap()["bytes_checked"], 6553600);
    let state = run.state.expect("a state file for after the reboot");
    assert_eq!(state.verifier_set_at, 10_000);
    assert_eq!(state.thumbprint.as_deref(), Some(thumb.as_str()));
    assert!(run.report.next.contains("reboot"), "{}", run.report.next);
    assert_eq!(run.report.verifier.flags.as_deref(), Some("0x209bf"));
}

#[test]
fn a_failed_step_is_reported_with_its_reason_and_the_verifier_waits() {
    let mut sys = Fake::ready();
    sys.fail = vec![("--tls 1.3", 1, "ksspictl: 3 of 200 handshakes failed")];
    let run = super::run(&mut sys, Plan::default(), false, None);
    assert!(!run.success);
    assert_eq!(run.report.outcome, Outcome::Failed);
    assert!(run.state.is_none());
    let step = &run.report.steps[2];
    assert_eq!(step.status, Status::Failed);
    assert_eq!(step.exit_code, Some(1));
    assert_eq!(
        step.why.as_deref(),
        Some("ksspictl: 3 of 200 handshakes failed")
    );
    assert!(
        step.fix.as_deref().unwrap().contains("--tls 1.3"),
        "{step:?}"
    );
    assert!(!sys
        .log
        .iter()
        .any(|a| matches!(a, Action::VerifierOn { .. })));
    assert!(run.report.summary("r.json").contains("FAILED"));
}

#[test]
fn resuming_before_the_reboot_says_it_is_pending_and_keeps_the_state() {
    let mut sys = Fake::ready();
    let first = super::run(&mut sys, Plan::default(), false, None);
    let state = first.state.expect("state");
    // Two minutes later, same boot (up for an hour and two minutes).
    sys.clock = (10_120, 3_720);
    sys.log.clear();
    let again = super::run(&mut sys, Plan::default(), false, Some(state.clone()));
    assert!(!again.success);
    assert_eq!(again.report.outcome, Outcome::AwaitingReboot);
    assert!(
        again.report.next.starts_with("a reboot is pending"),
        "{}",
        again.report.next
    );
    assert_eq!(again.state, Some(state));
    assert!(sys.log.is_empty());
}

#[test]
fn resuming_after_the_reboot_runs_the_suite_under_the_verifier_and_finishes() {
    let mut sys = Fake::ready();
    let first = super::run(&mut sys, Plan::default(), false, None);
    // Through the state file's JSON, as the reboot would.
    let json = serde_json::to_string(&first.state.expect("state")).unwrap();
    let state: State = serde_json::from_str(&json).unwrap();
    sys.clock = (10_600, 120); // ten minutes later, up for two
    sys.log.clear();
    // Low resources simulation fails some handshakes: tolerated there.
    sys.fail = vec![("stress", 1, "ksspictl: batch 3: 2 handshakes failed")];
    let done = super::run(&mut sys, Plan::default(), false, Some(state));
    assert!(done.success, "{}", done.report.summary("r.json"));
    assert_eq!(done.report.outcome, Outcome::Passed);
    assert!(
        done.state.is_none(),
        "the state file goes when the run is done"
    );
    let phases: Vec<_> = names(&done.report);
    assert_eq!(phases.len(), 9 + 8, "{phases:?}");
    assert!(
        phases[9..].iter().all(|p| p.starts_with("verifier:")),
        "{phases:?}"
    );
    let stress = done
        .report
        .steps
        .iter()
        .find(|s| s.name == "stress" && s.phase == "verifier")
        .unwrap();
    assert_eq!(stress.status, Status::Tolerated);
    assert_eq!(sys.log.first(), Some(&Action::VerifierQuery));
    assert_eq!(sys.log.last(), Some(&Action::VerifierQuery));
    assert!(done
        .report
        .verifier
        .query_before
        .as_deref()
        .unwrap()
        .contains("ksspi_driver.sys"));
    assert!(
        done.report.next.contains("verifier off"),
        "{}",
        done.report.next
    );
}

#[test]
fn after_the_reboot_a_verifier_not_set_for_us_blocks() {
    let mut sys = Fake::ready();
    let state = super::run(&mut sys, Plan::default(), false, None)
        .state
        .unwrap();
    sys.clock = (10_600, 120);
    sys.settings = Ok(Settings::default()); // someone ran verifier /reset
    let run = super::run(&mut sys, Plan::default(), false, Some(state));
    assert_eq!(run.report.outcome, Outcome::Blocked);
    let c = failed_check(&run.report, "driver verifier (after reboot)");
    assert!(c.detail.contains("not set for ksspi_driver.sys"), "{c:?}");
    assert!(run.state.is_some(), "kept for another try");
}

#[test]
fn a_failure_outside_the_verifier_phase_is_never_tolerated() {
    let mut sys = Fake::ready();
    sys.fail = vec![("stress", 1, "ksspictl: batch 3: 2 handshakes failed")];
    let run = super::run(&mut sys, Plan::default(), false, None);
    let stress = run
        .report
        .steps
        .iter()
        .find(|s| s.name == "stress")
        .unwrap();
    assert_eq!(stress.status, Status::Failed);
}

#[test]
fn a_step_that_did_not_finish_points_at_the_crash_dump() {
    let mut sys = Fake::ready();
    sys.fail = vec![("info", 0, "")];
    let mut step = judge(
        "plain",
        "selftest tls1.2",
        Ran {
            command: "x".into(),
            exit_code: None,
            ..Ran::default()
        },
        true,
    );
    assert_eq!(step.status, Status::Failed);
    assert!(step.fix.take().unwrap().contains("memory dump"));
    let skipped = judge(
        "plain",
        "serve + connect",
        Ran {
            skipped: Some("needs Windows".into()),
            ..Ran::default()
        },
        false,
    );
    assert_eq!(skipped.status, Status::Skipped);
    assert_eq!(skipped.why.as_deref(), Some("needs Windows"));
}

#[test]
fn the_report_json_has_its_documented_shape() {
    let mut sys = Fake::ready();
    let run = super::run(&mut sys, Plan::default(), false, None);
    let j: Value = serde_json::to_value(&run.report).unwrap();
    for key in [
        "format",
        "ksspictl_version",
        "backend",
        "dry_run",
        "started",
        "updated",
        "outcome",
        "next",
        "preconditions",
        "steps",
        "verifier",
    ] {
        assert!(j.get(key).is_some(), "{key} in {j}");
    }
    assert_eq!(j["outcome"], "awaiting-reboot");
    assert_eq!(j["preconditions"][0]["status"], "passed");
    let step = &j["steps"][1];
    for key in [
        "phase",
        "name",
        "command",
        "status",
        "exit_code",
        "duration_ms",
        "figures",
        "observed",
    ] {
        assert!(step.get(key).is_some(), "{key} in {step}");
    }
    assert_eq!(j["verifier"]["flags"], "0x209bf");
    // And it reads back.
    let back: Report = serde_json::from_value(j).unwrap();
    assert_eq!(back, run.report);
}

#[test]
fn skipped_probes_are_recorded_not_failed() {
    let mut sys = Fake::ready();
    sys.secure_boot = Err("dry run over the model: not checked".into());
    sys.settings = Err("dry run: Driver Verifier is Windows only".into());
    let run = super::run(&mut sys, Plan::default(), true, None);
    assert!(run.success);
    let sb = run
        .report
        .preconditions
        .iter()
        .find(|c| c.name == "secure boot")
        .unwrap();
    assert_eq!(sb.status, Status::Skipped);
    assert_eq!(run.report.outcome, Outcome::Passed);
    assert_eq!(run.report.steps.last().unwrap().status, Status::Skipped);
    assert!(run.report.dry_run);
}

#[test]
fn a_verifier_change_not_yet_applied_blocks_until_the_reboot() {
    let mut sys = Fake::ready();
    // Changed ten minutes ago; up for an hour: same boot.
    sys.changed_at = Some(9_400);
    let run = super::run(&mut sys, Plan::default(), false, None);
    assert_eq!(run.report.outcome, Outcome::Blocked);
    let c = failed_check(&run.report, "no reboot pending");
    assert!(
        c.fix.as_deref().unwrap().contains("shutdown /r /t 0"),
        "{c:?}"
    );
    assert!(sys.log.is_empty());
    // Changed two hours ago, up for an hour: applied.
    let mut sys = Fake::ready();
    sys.changed_at = Some(2_800);
    let run = super::run(&mut sys, Plan::default(), false, None);
    assert_eq!(run.report.outcome, Outcome::AwaitingReboot);
}

#[test]
fn a_reboot_windows_owes_blocks_the_first_phase_with_every_reason() {
    type Spoil = fn(&mut Signals);
    let cases: [(&str, Spoil); 3] = [
        ("Component Based Servicing", |s| {
            s.component_servicing = true
        }),
        ("Windows Update", |s| s.windows_update = true),
        ("1 file operation queued for the next boot", |s| {
            s.renames = vec!["\\??\\C:\\a.tmp".into(), String::new(), String::new()]
        }),
    ];
    for (reason, spoil) in cases {
        let mut sys = Fake::ready();
        let mut signals = Signals::default();
        spoil(&mut signals);
        sys.pending = Ok(signals);
        let run = super::run(&mut sys, Plan::default(), false, None);
        assert!(!run.success, "{reason}");
        assert_eq!(run.report.outcome, Outcome::Blocked, "{reason}");
        assert!(run.state.is_none());
        let c = failed_check(&run.report, "no reboot pending");
        assert!(c.detail.contains(reason), "{reason}: {c:?}");
        assert!(c.fix.as_deref().unwrap().contains("shutdown /r /t 0"));
        assert!(sys.log.is_empty(), "{reason}: nothing runs: {:?}", sys.log);
    }
    // With a verifier change too: both reasons in the one check.
    let mut sys = Fake::ready();
    sys.changed_at = Some(9_400);
    sys.pending = Ok(Signals {
        windows_update: true,
        ..Signals::default()
    });
    let run = super::run(&mut sys, Plan::default(), false, None);
    let c = failed_check(&run.report, "no reboot pending");
    assert!(
        c.detail.contains("Driver Verifier") && c.detail.contains("Windows Update"),
        "{c:?}"
    );
}

#[test]
fn no_reboot_pending_passes_and_an_unreadable_registry_is_skipped() {
    let mut sys = Fake::ready();
    let run = super::run(&mut sys, Plan::default(), false, None);
    let c = run
        .report
        .preconditions
        .iter()
        .find(|c| c.name == "no reboot pending")
        .unwrap();
    assert_eq!(c.status, Status::Passed, "{c:?}");
    assert_eq!(run.report.outcome, Outcome::AwaitingReboot);

    let mut sys = Fake::ready();
    sys.pending = Err("reading HKLM\\...: Win32 error 5".into());
    let run = super::run(&mut sys, Plan::default(), false, None);
    let c = run
        .report
        .preconditions
        .iter()
        .find(|c| c.name == "no reboot pending")
        .unwrap();
    assert_eq!(c.status, Status::Skipped, "{c:?}");
    assert!(c.detail.contains("Win32 error 5"));
    assert_eq!(run.report.outcome, Outcome::AwaitingReboot);
}

#[test]
fn a_reboot_windows_queued_before_the_resume_blocks_it_and_keeps_the_state() {
    let mut sys = Fake::ready();
    let first = super::run(&mut sys, Plan::default(), false, None);
    let state = first.state.expect("the first phase leaves its state");
    // Rebooted since Driver Verifier was set, but Windows Update installed
    // something in between and wants another.
    sys.clock = (20_000, 600);
    sys.pending = Ok(Signals {
        component_servicing: true,
        ..Signals::default()
    });
    sys.log.clear();
    let run = super::run(&mut sys, Plan::default(), false, Some(state.clone()));
    assert!(!run.success);
    assert_eq!(run.report.outcome, Outcome::Blocked);
    assert_eq!(run.state, Some(state), "the state file is kept");
    let c = failed_check(&run.report, "no reboot pending");
    assert!(c.detail.contains("Component Based Servicing"), "{c:?}");
    assert!(sys.log.is_empty(), "nothing runs: {:?}", sys.log);
    // After that reboot too, the resume runs.
    sys.pending = Ok(Signals::default());
    let run = super::run(&mut sys, Plan::default(), false, Some(run.state.unwrap()));
    assert_eq!(run.report.outcome, Outcome::Passed, "{:?}", run.report);
}
