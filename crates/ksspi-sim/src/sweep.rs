//! Low-resources sweeps: run a scenario once to count its fault points, then
//! once more for each point with that point failing, and check every run ends
//! cleanly (the scenario's own verdict, and an empty verifier list at unload).

use crate::certs::CertStore;
use crate::provider::{SimConfig, SimProvider};
use crate::verifier::LeakReport;
use std::sync::Arc;

/// What one failing run produced.
#[derive(Debug)]
pub struct SweepFailure {
    /// The fault point that failed (1-based).
    pub point: u64,
    /// What went wrong: the scenario's error, or the leak list.
    pub reason: String,
}

/// The outcome of a sweep.
#[derive(Debug, Default)]
pub struct SweepReport {
    /// Fault points the clean run passed through.
    pub points: u64,
    /// Runs made with one point failing.
    pub runs: u64,
    /// Runs that did not end cleanly.
    pub failures: Vec<SweepFailure>,
}

/// Sweep `scenario` over every fault point. The scenario gets a fresh model
/// for each run and returns `Err` if it did not end with a clean status.
pub fn sweep(
    config: &SimConfig,
    store: &Arc<CertStore>,
    scenario: impl Fn(&SimProvider) -> Result<(), String>,
) -> SweepReport {
    let clean = SimProvider::new(config.clone(), store.clone());
    clean.verifier().fail_nth(0);
    let mut report = SweepReport::default();
    if let Err(e) = scenario(&clean) {
        report.failures.push(SweepFailure {
            point: 0,
            reason: format!("clean run failed: {e}"),
        });
    }
    report.points = clean.verifier().points();
    if let Err(leaks) = clean.unload() {
        report.failures.push(SweepFailure {
            point: 0,
            reason: leaks.to_string(),
        });
    }
    for n in 1..=report.points {
        let sim = SimProvider::new(config.clone(), store.clone());
        sim.verifier().fail_nth(n);
        let outcome = scenario(&sim);
        report.runs += 1;
        let leaks: Result<(), LeakReport> = sim.unload();
        if let Err(e) = outcome {
            report.failures.push(SweepFailure {
                point: n,
                reason: e,
            });
        } else if let Err(leaks) = leaks {
            report.failures.push(SweepFailure {
                point: n,
                reason: leaks.to_string(),
            });
        }
    }
    report
}
