//! `acceptance --dry-run`: the acceptance run over the model, so its state
//! machine, child processes and report are exercised end to end where there
//! is no Windows. The steps the model can run (`info`, both self-tests with
//! bytes, `stress`) run for real, as child `ksspictl` processes over the
//! model; what needs the machine (elevation, test signing, Secure Boot, the
//! installed device, Driver Verifier, PnP removal, Schannel's certificate
//! store) is recorded as skipped with the reason.

use crate::backend::process;
use crate::vm::acceptance::{Action, Certificate, Probe, Ran, System};
use crate::vm::reboot::Signals;
use crate::vm::verifier::Settings;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The model's answers.
pub struct ModelSystem;

const NOT_WINDOWS: &str = "dry run over the model: a Windows check, not made here";

impl System for ModelSystem {
    fn backend(&self) -> &'static str {
        "model"
    }

    fn clock(&mut self) -> (u64, u64) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // No resume happens over the model (Driver Verifier is never set).
        (now, 0)
    }

    fn elevated(&mut self) -> Probe {
        Err(NOT_WINDOWS.into())
    }

    fn test_signing(&mut self) -> Probe {
        Err(NOT_WINDOWS.into())
    }

    fn secure_boot(&mut self) -> Probe {
        Err(NOT_WINDOWS.into())
    }

    fn driver_present(&mut self) -> Probe {
        Err(
            "dry run: the driver's device engine runs in-process over the model; nothing \
             is installed"
                .into(),
        )
    }

    fn check_inf(&mut self, path: &str) -> Result<(), String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        crate::vm::inf::check(path, &text, "amd64")
            .map(|_| ())
            .map_err(|e| e.0)
    }

    fn certificate(&mut self, thumbprint: Option<&str>) -> Result<Certificate, (String, String)> {
        match thumbprint {
            None => Ok(Certificate {
                thumbprint: None,
                detail: "the model's generated certificate".into(),
            }),
            Some(_) => Err((
                "--cert-thumbprint names a certificate in LocalMachine\\My, which the model \
                 does not have"
                    .into(),
                "omit --cert-thumbprint with --dry-run".into(),
            )),
        }
    }

    fn verifier_settings(&mut self) -> Result<Settings, String> {
        Err(
            "dry run: Driver Verifier is Windows only (the model's own verifier runs in \
             every step)"
                .into(),
        )
    }

    fn pending_reboot(&mut self) -> Result<Signals, String> {
        Err(NOT_WINDOWS.into())
    }

    fn verifier_changed_at(&mut self) -> Option<u64> {
        None
    }

    fn run(&mut self, action: &Action) -> Ran {
        let skip = |why: &str| Ran {
            skipped: Some(why.into()),
            ..Ran::default()
        };
        match action {
            Action::Ksspictl(args) => process::run_self(args, Duration::from_secs(900)),
            Action::Loopback { .. } => skip(
                "dry run: over the model `serve` and `connect` need a CA file \
                 (tests/interop.rs runs them); on Windows this step runs",
            ),
            Action::RemoveAndReadd { .. } => skip(
                "dry run: device removal needs Windows' PnP manager (tests/removal.rs covers \
                 the engine's side over the model)",
            ),
            Action::Install { .. } => skip("dry run: nothing to install over the model"),
            Action::VerifierOn { .. } | Action::VerifierQuery => {
                skip("dry run: Driver Verifier is Windows only")
            }
        }
    }
}
