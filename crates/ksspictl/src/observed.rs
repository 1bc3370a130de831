//! The open points of the async SSPI contract as the driver observed them
//! (GET_INFO's `Observed`): JSON and table rows, the section `selftest` and
//! `info` share.

use ksspi_abi::Observed;
use serde::Serialize;

/// The open points of the async SSPI contract as the driver saw them
/// (GET_INFO's observed facts): what the first run on a real Windows answers.
#[derive(Serialize)]
pub struct ObservedJson {
    /// Does ksecdd.sys export SspiAsyncContextRequiresNotify?
    requires_notify_exported: bool,
    /// Async calls issued.
    calls: u64,
    /// At which IRQL the completion callbacks ran.
    callback_irql: Callbacks,
    /// Calls that completed without a callback.
    completed_without_callback: u64,
    /// Calls whose callback ran before the issuing function returned.
    callback_before_return: u64,
    /// Calls whose callback ran after it returned.
    callback_after_return: u64,
    /// SspiReinitAsyncContext inside the callback: accepted / refused.
    reinit_in_callback: ReinitJson,
}

#[derive(Serialize)]
struct ReinitJson {
    accepted: u64,
    refused: u64,
}

impl From<Observed> for ObservedJson {
    fn from(o: Observed) -> Self {
        ObservedJson {
            requires_notify_exported: o.requires_notify_exported != 0,
            calls: o.calls,
            callback_irql: Callbacks {
                passive: o.callbacks_passive,
                dispatch: o.callbacks_dispatch,
            },
            completed_without_callback: o.completed_without_callback,
            callback_before_return: o.callback_before_return,
            callback_after_return: o.callback_after_return,
            reinit_in_callback: ReinitJson {
                accepted: o.reinits_in_callback,
                refused: o.reinits_refused_in_callback,
            },
        }
    }
}

impl ObservedJson {
    /// The facts as table rows.
    fn rows(&self) -> [(&'static str, String); 5] {
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        [
            (
                "SspiAsyncContextRequiresNotify exported",
                yes_no(self.requires_notify_exported).to_string(),
            ),
            (
                "callback IRQL: PASSIVE / DISPATCH",
                format!(
                    "{} / {}",
                    self.callback_irql.passive, self.callback_irql.dispatch
                ),
            ),
            (
                "calls completed without a callback",
                format!("{} of {}", self.completed_without_callback, self.calls),
            ),
            (
                "callback before / after the issuer returned",
                format!(
                    "{} / {}",
                    self.callback_before_return, self.callback_after_return
                ),
            ),
            (
                "reinit inside the callback: accepted / refused",
                format!(
                    "{} / {}",
                    self.reinit_in_callback.accepted, self.reinit_in_callback.refused
                ),
            ),
        ]
    }
}

/// The observed-facts section of `selftest` and `info`.
pub fn print_observed(o: &ObservedJson) {
    let rows = o.rows();
    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    println!("observed on this system (the contract's open points):");
    for (k, v) in rows {
        println!("  {k:<width$}  {v}");
    }
}

/// Completion callbacks by IRQL.
#[derive(Serialize)]
pub struct Callbacks {
    pub passive: u64,
    pub dispatch: u64,
}
