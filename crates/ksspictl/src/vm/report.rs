//! `acceptance-report.json`: every step of an acceptance run (its command,
//! exit status, figures, the observed-facts section of `selftest --json`),
//! the preconditions, the verifier's settings and `/query` output; and the
//! one-screen summary printed at the end. Pure data (serde).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How a step or precondition ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Passed,
    /// Under Driver Verifier's low-resources simulation: the command
    /// completed and reported failed handshakes as statuses (injected
    /// allocation failures), which is what is expected there.
    Tolerated,
    Failed,
    /// Could not run here; `why` says why and `fix` what to do.
    Skipped,
}

/// One precondition: what was checked and what was found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
    /// What to do about it (failed or skipped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// One step: a command the run executed and what came of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// `plain` (before Driver Verifier) or `verifier` (after the reboot).
    pub phase: String,
    pub name: String,
    /// The command line, as it would be typed.
    pub command: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    /// The command's JSON output (`--json`), if it printed one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub figures: Option<Value>,
    /// `selftest --json`'s `observed` section (what the driver saw of the
    /// async SSPI contract).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed: Option<Value>,
    /// The last lines the command wrote to stderr, or why it did not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// Driver Verifier as the run found and left it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VerifierRecord {
    /// `verifier.exe`'s arguments the run used to turn it on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Its flags and their names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flags: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub flag_names: Vec<String>,
    /// `verifier /query` after the reboot, before and after the steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_before: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_after: Option<String>,
}

/// How the run as a whole ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Every step passed (or was tolerated).
    Passed,
    /// A step failed.
    Failed,
    /// A precondition failed: nothing was run.
    Blocked,
    /// Driver Verifier is set; the run resumes after the reboot.
    AwaitingReboot,
}

/// The report: one JSON file per run (rewritten as the run goes on).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The report's layout version.
    pub format: u32,
    pub ksspictl_version: String,
    /// `windows` or `model` (`--dry-run`).
    pub backend: String,
    pub dry_run: bool,
    /// Unix seconds.
    pub started: u64,
    pub updated: u64,
    pub outcome: Outcome,
    /// The one line that says what to do next.
    pub next: String,
    pub preconditions: Vec<Check>,
    pub steps: Vec<Step>,
    pub verifier: VerifierRecord,
}

/// The report layout this code writes.
pub const FORMAT: u32 = 1;

impl Report {
    /// An empty report for a run starting at `now`.
    pub fn new(backend: &str, dry_run: bool, now: u64) -> Report {
        Report {
            format: FORMAT,
            ksspictl_version: env!("CARGO_PKG_VERSION").to_string(),
            backend: backend.to_string(),
            dry_run,
            started: now,
            updated: now,
            outcome: Outcome::Passed,
            next: String::new(),
            preconditions: Vec::new(),
            steps: Vec::new(),
            verifier: VerifierRecord::default(),
        }
    }

    /// Passed, or Failed if any step failed.
    pub fn steps_outcome(&self) -> Outcome {
        if self.steps.iter().any(|s| s.status == Status::Failed) {
            Outcome::Failed
        } else {
            Outcome::Passed
        }
    }

    /// The one-screen summary: a line per precondition that did not pass,
    /// one per step with its main figure, and the outcome with what next.
    pub fn summary(&self, report_path: &str) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "ksspi acceptance ({}{}): {}\n",
            self.backend,
            if self.dry_run { ", dry run" } else { "" },
            outcome_word(self.outcome)
        ));
        let passed = self
            .preconditions
            .iter()
            .filter(|c| c.status == Status::Passed)
            .count();
        out.push_str(&format!(
            "  preconditions: {passed} of {} passed\n",
            self.preconditions.len()
        ));
        for c in self
            .preconditions
            .iter()
            .filter(|c| c.status != Status::Passed)
        {
            out.push_str(&format!(
                "  {:<9} {}: {}{}\n",
                status_word(c.status),
                c.name,
                c.detail,
                c.fix
                    .as_ref()
                    .map(|f| format!(" ({f})"))
                    .unwrap_or_default()
            ));
        }
        for s in &self.steps {
            let figure = s
                .figures
                .as_ref()
                .and_then(main_figure)
                .or_else(|| s.why.clone())
                .unwrap_or_default();
            out.push_str(&format!(
                "  {:<9} [{}] {:<22} {}\n",
                status_word(s.status),
                s.phase,
                s.name,
                figure
            ));
        }
        if !self.next.is_empty() {
            out.push_str(&format!("  next: {}\n", self.next));
        }
        out.push_str(&format!("  report: {report_path}\n"));
        out
    }
}

fn outcome_word(o: Outcome) -> &'static str {
    match o {
        Outcome::Passed => "PASSED",
        Outcome::Failed => "FAILED",
        Outcome::Blocked => "BLOCKED (a precondition failed; nothing ran)",
        Outcome::AwaitingReboot => "AWAITING REBOOT (Driver Verifier set)",
    }
}

fn status_word(s: Status) -> &'static str {
    match s {
        Status::Passed => "ok",
        Status::Tolerated => "tolerated",
        Status::Failed => "FAILED",
        Status::Skipped => "skipped",
    }
}

/// The figure a step is summed up by: handshakes and bytes for a
/// self-test, batches for a soak, the driver version for `info`.
fn main_figure(j: &Value) -> Option<String> {
    if let (Some(ok), Some(bytes)) = (j["handshakes_ok"].as_u64(), j["bytes_checked"].as_u64()) {
        let failed = j["handshakes_failed"].as_u64().unwrap_or(0);
        let rate = j["handshakes_per_second"].as_f64();
        return Some(format!(
            "{ok} handshakes ok, {failed} failed, {bytes} bytes checked{}",
            rate.map(|r| format!(", {r:.1}/s")).unwrap_or_default()
        ));
    }
    if let Some(batches) = j["batches"].as_u64() {
        return Some(format!("{batches} batches, balanced: {}", j["balanced"]));
    }
    j["driver_version"]
        .as_str()
        .map(|v| format!("driver {v}, {} sessions open", j["sessions_open"]))
}
