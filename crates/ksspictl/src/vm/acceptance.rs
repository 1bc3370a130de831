//! The acceptance run as a state machine over a [`System`]: preconditions,
//! the suite of steps without Driver Verifier, Driver Verifier on, the
//! reboot (the run stops and leaves a state file), and the same suite again
//! after it. Sans-IO: every question to the machine and every command goes
//! through [`System`], so the whole run, resume included, is tested on Linux
//! with a scripted system (tests below); the Windows answers are in
//! `backend/windows/system.rs`, the model's (`--dry-run`) in
//! `backend/model/system.rs`.

use super::reboot::{self, Signals};
use super::report::{Check, Outcome, Report, Status, Step};
use super::verifier::{self, Settings};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A yes/no question to the machine: the answer, or why it could not be
/// asked here (a dry run over the model cannot see Secure Boot).
pub type Probe = Result<bool, String>;

/// Something the run asks the machine to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Run `ksspictl` itself with these arguments.
    Ksspictl(Vec<String>),
    /// `serve --once --echo` on 127.0.0.1 and `connect` to it, with text
    /// both ways (the server's certificate by thumbprint).
    Loopback { thumbprint: Option<String> },
    /// Disable and re-enable the device while a `stress` run holds sessions
    /// open, then check the device answers again.
    RemoveAndReadd { thumbprint: Option<String> },
    /// `ksspictl install --inf PATH`.
    Install { inf: String },
    /// `verifier.exe` with these arguments, then the KMDF values.
    VerifierOn { args: Option<Vec<String>> },
    /// `verifier /query`.
    VerifierQuery,
}

/// What came of an [`Action`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ran {
    /// The command line as typed (for the report).
    pub command: String,
    /// Why it did not run here (then the rest is empty).
    pub skipped: Option<String>,
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub duration_ms: u64,
}

/// A server certificate for the run: its thumbprint to pass (None: the
/// model's own) and what was done to get it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    pub thumbprint: Option<String>,
    pub detail: String,
}

/// What the run needs from the machine.
pub trait System {
    /// `windows` or `model`.
    fn backend(&self) -> &'static str;
    /// Unix seconds now, and seconds since boot.
    fn clock(&mut self) -> (u64, u64);
    fn elevated(&mut self) -> Probe;
    fn test_signing(&mut self) -> Probe;
    fn secure_boot(&mut self) -> Probe;
    /// Is a ksspi device present with its interface?
    fn driver_present(&mut self) -> Probe;
    /// Check the INF at `path` for this machine (parse, architecture,
    /// package files): `Err` is the one line with its fix.
    fn check_inf(&mut self, path: &str) -> Result<(), String>;
    /// The named certificate in LocalMachine\My, or a new one (also trusted
    /// in LocalMachine\Root, for `connect`).
    fn certificate(&mut self, thumbprint: Option<&str>) -> Result<Certificate, (String, String)>;
    /// Driver Verifier's settings for the next boot.
    fn verifier_settings(&mut self) -> Result<Settings, String>;
    /// When `ksspictl verifier` last changed them (Unix seconds), if it
    /// recorded it.
    fn verifier_changed_at(&mut self) -> Option<u64>;
    /// The registry's pending-reboot signals ([`reboot`]), or why they
    /// could not be read.
    fn pending_reboot(&mut self) -> Result<Signals, String>;
    fn run(&mut self, action: &Action) -> Ran;
}

/// What the run was asked to do (the command line, kept in the state file).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The package's INF, to install from if the driver is not present.
    pub inf: Option<String>,
    /// The server certificate's thumbprint (None: create one).
    pub thumbprint: Option<String>,
    /// Run the second phase under Driver Verifier.
    pub verifier: bool,
    /// Add ksspi_driver.sys beside drivers already verified.
    pub keep_others: bool,
    /// Self-test handshakes per TLS version.
    pub count: u32,
    /// Application bytes each self-test pair exchanges both ways.
    pub bytes: u32,
    /// The soak's length, seconds.
    pub stress_seconds: u64,
}

impl Default for Plan {
    fn default() -> Plan {
        Plan {
            inf: None,
            thumbprint: None,
            verifier: true,
            keep_others: false,
            count: 200,
            bytes: 16384,
            stress_seconds: 30,
        }
    }
}

/// What survives the reboot: the plan, the certificate chosen, when
/// Driver Verifier was set, and the report so far.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub format: u32,
    pub plan: Plan,
    pub thumbprint: Option<String>,
    /// Unix seconds when Driver Verifier was set.
    pub verifier_set_at: u64,
    pub report: Report,
}

/// The state file's layout version.
pub const STATE_FORMAT: u32 = 1;

/// The result of one invocation: the report to write, the state to keep
/// for the next one (None: delete it), and the exit status.
pub struct Run {
    pub report: Report,
    pub state: Option<State>,
    pub success: bool,
}

/// Run (or resume, given the state file's content) the acceptance.
pub fn run(sys: &mut dyn System, plan: Plan, dry_run: bool, resumed: Option<State>) -> Run {
    match resumed {
        Some(state) => resume(sys, state),
        None => first(sys, plan, dry_run),
    }
}

fn check(name: &str, status: Status, detail: impl Into<String>, fix: Option<&str>) -> Check {
    Check {
        name: name.into(),
        status,
        detail: detail.into(),
        fix: fix.map(str::to_string),
    }
}

/// A yes/no precondition: `want` is the passing answer.
fn probe(name: &str, answer: Probe, want: bool, yes: &str, no: &str, fix: &str) -> Check {
    match answer {
        Ok(a) if a == want => check(name, Status::Passed, if a { yes } else { no }, None),
        Ok(a) => check(name, Status::Failed, if a { yes } else { no }, Some(fix)),
        Err(why) => check(name, Status::Skipped, why, None),
    }
}

/// The machine-wide preconditions (both phases check them).
fn machine_checks(sys: &mut dyn System) -> Vec<Check> {
    vec![
        probe(
            "elevated",
            sys.elevated(),
            true,
            "running elevated",
            "not elevated",
            "run ksspictl from an elevated prompt (Run as administrator)",
        ),
        probe(
            "test signing",
            sys.test_signing(),
            true,
            "test signing is on",
            "test signing is off: the test-signed driver would not load",
            "bcdedit /set testsigning on, then reboot",
        ),
        probe(
            "secure boot",
            sys.secure_boot(),
            false,
            "Secure Boot is on: Windows ignores test signing under it",
            "Secure Boot is off",
            "turn Secure Boot off in the VM's firmware settings (Hyper-V: Settings > Security)",
        ),
    ]
}

/// The "no reboot pending" precondition: Windows' own signals
/// ([`reboot::reasons`]) and, with `verifier_change`, a Driver Verifier
/// change by `ksspictl verifier` since the last boot. Failed with every
/// reason found; skipped if the registry could not be read and nothing else
/// is pending.
fn reboot_check(sys: &mut dyn System, verifier_change: bool) -> Check {
    const NAME: &str = "no reboot pending";
    let mut reasons = Vec::new();
    if verifier_change {
        let (now, uptime) = sys.clock();
        if let Some(changed) = sys.verifier_changed_at() {
            if !verifier::rebooted_since(changed, now, uptime) {
                reasons.push(
                    "Driver Verifier's settings were changed (ksspictl verifier) since the \
                     last boot and are not active yet"
                        .to_string(),
                );
            }
        }
    }
    let windows = sys.pending_reboot();
    if let Ok(signals) = &windows {
        reasons.extend(reboot::reasons(signals));
    }
    if !reasons.is_empty() {
        return check(
            NAME,
            Status::Failed,
            reasons.join("; "),
            Some("reboot first (shutdown /r /t 0), then run ksspictl acceptance again"),
        );
    }
    match windows {
        Ok(_) => check(
            NAME,
            Status::Passed,
            "no reboot pending (Component Based Servicing, Windows Update, file operations \
             queued for boot, Driver Verifier)",
            None,
        ),
        Err(why) => check(NAME, Status::Skipped, why, None),
    }
}

fn blocked(report: &mut Report) -> bool {
    report
        .preconditions
        .iter()
        .any(|c| c.status == Status::Failed)
}

fn first(sys: &mut dyn System, plan: Plan, dry_run: bool) -> Run {
    let (now, _) = sys.clock();
    let mut report = Report::new(sys.backend(), dry_run, now);
    report.preconditions = machine_checks(sys);

    // The driver: present, or installable from the INF given.
    let mut install = None;
    match sys.driver_present() {
        Ok(true) => report.preconditions.push(check(
            "driver",
            Status::Passed,
            "a ksspi device is present",
            None,
        )),
        Ok(false) => match &plan.inf {
            None => report.preconditions.push(check(
                "driver",
                Status::Failed,
                "the ksspi driver is not installed",
                Some("pass --inf PATH (the package's ksspi_driver.inf) to install it"),
            )),
            Some(inf) => match sys.check_inf(inf) {
                Ok(()) => {
                    report.preconditions.push(check(
                        "driver",
                        Status::Passed,
                        format!("not installed; {inf} is installable"),
                        None,
                    ));
                    install = Some(inf.clone());
                }
                Err(line) => report.preconditions.push(check(
                    "driver",
                    Status::Failed,
                    line,
                    Some("pass the stamped ksspi_driver.inf of a package built for this machine"),
                )),
            },
        },
        Err(why) => report
            .preconditions
            .push(check("driver", Status::Skipped, why, None)),
    }

    // A reboot owed: Windows' own, or a Driver Verifier change not yet
    // applied (the first phase would run under settings about to change).
    report.preconditions.push(reboot_check(sys, true));

    // Driver Verifier: never take over another driver's settings silently.
    let mut verifier_args = None;
    if plan.verifier {
        match sys.verifier_settings() {
            Ok(current) => match verifier::on(&current, plan.keep_others) {
                Ok(change) => {
                    report.preconditions.push(check(
                        "driver verifier",
                        Status::Passed,
                        change.summary.clone(),
                        None,
                    ));
                    verifier_args = Some(change.args);
                }
                Err(refusal) => report.preconditions.push(check(
                    "driver verifier",
                    Status::Failed,
                    refusal.0,
                    Some("ksspictl acceptance --keep-others, or --no-verifier"),
                )),
            },
            Err(why) => {
                report
                    .preconditions
                    .push(check("driver verifier", Status::Skipped, why, None))
            }
        }
    }

    // The server certificate.
    let thumbprint = match sys.certificate(plan.thumbprint.as_deref()) {
        Ok(cert) => {
            report
                .preconditions
                .push(check("certificate", Status::Passed, cert.detail, None));
            cert.thumbprint
        }
        Err((line, fix)) => {
            report
                .preconditions
                .push(check("certificate", Status::Failed, line, Some(&fix)));
            None
        }
    };

    if blocked(&mut report) {
        report.outcome = Outcome::Blocked;
        report.next =
            "fix the failed preconditions above, then run ksspictl acceptance again".into();
        return Run {
            report,
            state: None,
            success: false,
        };
    }

    if let Some(inf) = install {
        let ran = sys.run(&Action::Install { inf });
        report.steps.push(judge("plain", "install", ran, false));
        if report
            .steps
            .last()
            .is_some_and(|s| s.status == Status::Failed)
        {
            return finish(sys, report);
        }
    }
    suite(sys, &plan, thumbprint.as_deref(), "plain", &mut report);

    let Some(args) = verifier_args.filter(|_| plan.verifier) else {
        if plan.verifier {
            report.steps.push(skipped(
                "verifier",
                "verifier on",
                "Driver Verifier's settings could not be read here",
                None,
            ));
        }
        return finish(sys, report);
    };
    if report.steps_outcome() == Outcome::Failed {
        report.next =
            "a step failed without Driver Verifier: fix it before running under it".into();
        return finish(sys, report);
    }
    let ran = sys.run(&Action::VerifierOn { args: args.clone() });
    report.verifier.command = Some(ran.command.clone());
    report.verifier.flags = Some(format!("{:#x}", verifier::flags()));
    report.verifier.flag_names = verifier::describe(verifier::flags());
    let step = judge("plain", "verifier on", ran, false);
    let set = step.status == Status::Passed;
    report.steps.push(step);
    if !set {
        return finish(sys, report);
    }
    let (now, _) = sys.clock();
    report.outcome = Outcome::AwaitingReboot;
    report.updated = now;
    report.next = "Driver Verifier is set: reboot (shutdown /r /t 0), then run `ksspictl \
                   acceptance` again in this folder: it resumes from the state file"
        .into();
    Run {
        state: Some(State {
            format: STATE_FORMAT,
            plan,
            thumbprint,
            verifier_set_at: now,
            report: report.clone(),
        }),
        report,
        success: true,
    }
}

fn resume(sys: &mut dyn System, state: State) -> Run {
    let (now, uptime) = sys.clock();
    let mut report = state.report.clone();
    report.updated = now;
    if !verifier::rebooted_since(state.verifier_set_at, now, uptime) {
        report.outcome = Outcome::AwaitingReboot;
        report.next = "a reboot is pending: Driver Verifier's settings apply from the next \
                       boot; reboot (shutdown /r /t 0), then run ksspictl acceptance again"
            .into();
        return Run {
            report,
            state: Some(state),
            success: false,
        };
    }
    let mut checks = machine_checks(sys);
    // Windows may have queued another reboot since (an update installed in
    // between): the second phase would run on a machine about to change.
    checks.push(reboot_check(sys, false));
    match sys.verifier_settings() {
        Ok(s) if s.ours_complete() => checks.push(check(
            "driver verifier (after reboot)",
            Status::Passed,
            format!("set for {}", s.drivers.join(", ")),
            None,
        )),
        Ok(s) => checks.push(check(
            "driver verifier (after reboot)",
            Status::Failed,
            format!(
                "Driver Verifier is not set for {} with flags {:#x} after the reboot (drivers: \
                 {}; flags {})",
                verifier::DRIVER,
                verifier::flags(),
                if s.drivers.is_empty() {
                    "none".into()
                } else {
                    s.drivers.join(", ")
                },
                s.flags.map_or("none".into(), |f| format!("{f:#x}"))
            ),
            Some("ksspictl verifier on, reboot, then ksspictl acceptance again"),
        )),
        Err(why) => checks.push(check(
            "driver verifier (after reboot)",
            Status::Skipped,
            why,
            None,
        )),
    }
    report.preconditions.extend(checks);
    if blocked(&mut report) {
        report.outcome = Outcome::Blocked;
        report.next = "fix the failed preconditions above, then run ksspictl acceptance again \
                       (the state file is kept)"
            .into();
        return Run {
            report,
            state: Some(state),
            success: false,
        };
    }
    let query = sys.run(&Action::VerifierQuery);
    report.verifier.query_before = query_text(&query);
    suite(
        sys,
        &state.plan,
        state.thumbprint.as_deref(),
        "verifier",
        &mut report,
    );
    let query = sys.run(&Action::VerifierQuery);
    report.verifier.query_after = query_text(&query);
    let mut run = finish(sys, report);
    if run.report.outcome == Outcome::Passed {
        run.report.next = "passed under Driver Verifier; `ksspictl verifier off` and a reboot \
                           turn it off"
            .into();
    }
    run
}

fn query_text(ran: &Ran) -> Option<String> {
    match &ran.skipped {
        Some(why) => Some(format!("(not run: {why})")),
        None => Some(ran.stdout.clone()),
    }
}

fn finish(sys: &mut dyn System, mut report: Report) -> Run {
    let (now, _) = sys.clock();
    report.updated = now;
    report.outcome = report.steps_outcome();
    if report.next.is_empty() {
        report.next = match report.outcome {
            Outcome::Failed => {
                "see the failed steps' `why` in the report; each names what to do".into()
            }
            _ => "nothing: every step passed".into(),
        };
    }
    let success = report.outcome == Outcome::Passed;
    Run {
        report,
        state: None,
        success,
    }
}

fn skipped(phase: &str, name: &str, why: &str, fix: Option<&str>) -> Step {
    Step {
        phase: phase.into(),
        name: name.into(),
        command: String::new(),
        status: Status::Skipped,
        exit_code: None,
        duration_ms: 0,
        figures: None,
        observed: None,
        why: Some(why.into()),
        fix: fix.map(str::to_string),
    }
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The steps both phases run.
fn suite(
    sys: &mut dyn System,
    plan: &Plan,
    thumbprint: Option<&str>,
    phase: &str,
    report: &mut Report,
) {
    let tolerate = phase == "verifier";
    let with_cert = |mut a: Vec<String>| {
        if let Some(t) = thumbprint {
            a.push("--cert-thumbprint".into());
            a.push(t.to_string());
        }
        a
    };
    let count = plan.count.to_string();
    let bytes = plan.bytes.to_string();
    let mut steps: Vec<(&str, Action)> =
        vec![("info", Action::Ksspictl(args(&["info", "--json"])))];
    for (name, tls) in [("selftest tls1.2", "1.2"), ("selftest tls1.3", "1.3")] {
        steps.push((
            name,
            Action::Ksspictl(with_cert(args(&[
                "selftest",
                "--tls",
                tls,
                "--count",
                &count,
                "--concurrency",
                "8",
                "--bytes",
                &bytes,
                "--json",
            ]))),
        ));
    }
    // What kernel Schannel does of session resumption is for this run to
    // show (docs/DESIGN.md, contract item 11): the counts are recorded in the
    // report's figures ("resumption"), not judged; the step fails only as
    // any self-test does (a failed handshake, a driver without the mode).
    steps.push((
        "selftest resume",
        Action::Ksspictl(with_cert(args(&[
            "selftest",
            "--resume",
            "--count",
            &count,
            "--concurrency",
            "8",
            "--json",
        ]))),
    ));
    steps.push((
        "serve + connect",
        Action::Loopback {
            thumbprint: thumbprint.map(str::to_string),
        },
    ));
    let seconds = plan.stress_seconds.to_string();
    steps.push((
        "stress",
        Action::Ksspictl(with_cert(args(&[
            "stress",
            "--duration",
            &seconds,
            "--json",
        ]))),
    ));
    steps.push((
        "remove + re-add",
        Action::RemoveAndReadd {
            thumbprint: thumbprint.map(str::to_string),
        },
    ));
    steps.push(("info after", Action::Ksspictl(args(&["info", "--json"]))));
    for (name, action) in steps {
        let ran = sys.run(&action);
        let mut step = judge(phase, name, ran, tolerate);
        if name == "info after" && step.status == Status::Passed {
            let open = step
                .figures
                .as_ref()
                .and_then(|f| f["sessions_open"].as_u64());
            if open != Some(0) {
                step.status = Status::Failed;
                step.why = Some(format!(
                    "{} sessions still open after every step closed its own",
                    open.map_or("unknown".into(), |n| n.to_string())
                ));
                step.fix =
                    Some("a leak in the driver's session table: report it with the report".into());
            }
        }
        report.steps.push(step);
    }
}

/// The last JSON object a command printed on stdout.
fn last_json(stdout: &str) -> Option<Value> {
    stdout
        .lines()
        .rev()
        .map(str::trim)
        .filter(|l| l.starts_with('{'))
        .find_map(|l| serde_json::from_str(l).ok())
}

/// What an action's outcome means as a step.
fn judge(phase: &str, name: &str, ran: Ran, tolerate: bool) -> Step {
    if let Some(why) = ran.skipped {
        let mut s = skipped(phase, name, &why, None);
        s.command = ran.command;
        return s;
    }
    let figures = last_json(&ran.stdout);
    let observed = figures
        .as_ref()
        .filter(|_| name.starts_with("selftest"))
        .and_then(|f| f.get("observed").cloned());
    let tail: Vec<&str> = ran
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    let why = tail
        .iter()
        .rev()
        .take(3)
        .rev()
        .copied()
        .collect::<Vec<_>>()
        .join(" | ");
    let status = match ran.exit_code {
        Some(0) => Status::Passed,
        Some(1) if tolerate && ran.stderr.contains("handshakes failed") => Status::Tolerated,
        _ => Status::Failed,
    };
    let fix = match status {
        Status::Failed => Some(fix_for(name, ran.exit_code, &ran.command)),
        _ => None,
    };
    Step {
        phase: phase.into(),
        name: name.into(),
        command: ran.command,
        status,
        exit_code: ran.exit_code,
        duration_ms: ran.duration_ms,
        figures,
        observed,
        why: (!why.is_empty()).then_some(why),
        fix,
    }
}

fn fix_for(name: &str, exit: Option<i32>, command: &str) -> String {
    if exit.is_none() {
        return "it did not finish (killed or timed out): look for a bugcheck in the \
                System event log and the memory dump"
            .into();
    }
    match name {
        "install" => "see the line above; `pnputil /add-driver ksspi_driver.inf /install` and \
                      devgen are the manual way (docs/WINDOWS.md)"
            .into(),
        "verifier on" => "run `ksspictl verifier on` alone to see its message".into(),
        _ => format!("rerun `{command}` alone and report its output with this report"),
    }
}

#[cfg(test)]
mod tests;
