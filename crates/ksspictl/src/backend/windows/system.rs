//! The acceptance run's questions and commands on the test VM: the thin
//! Windows side of [`crate::vm::acceptance::System`]. Every answer comes
//! from [`machine`], [`install`] or [`verifier`]; every step is a child
//! process (this ksspictl, `verifier.exe`, `pnputil`, PowerShell).

use super::{device, install, machine, verifier as win_verifier};
use crate::backend::process::{self, Background};
use crate::util::parse_thumbprint;
use crate::vm::acceptance::{Action, Certificate, Probe, Ran, System};
use crate::vm::reboot::Signals;
use crate::vm::verifier::Settings;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The test VM.
pub struct WinSystem;

/// A step's time limit: long enough for a soak plus its start-up.
const STEP_LIMIT: Duration = Duration::from_secs(900);

/// `New-SelfSignedCertificate` in LocalMachine\My with a CNG key (kernel
/// Schannel's requirement, as docs/WINDOWS.md says), exported and imported
/// into LocalMachine\Root so `connect` trusts it; prints the thumbprint
/// (learn.microsoft.com/powershell/module/pki/new-selfsignedcertificate,
/// .../export-certificate, .../import-certificate).
const NEW_CERTIFICATE: &str = "$c = New-SelfSignedCertificate -DnsName localhost \
     -CertStoreLocation Cert:\\LocalMachine\\My \
     -Provider 'Microsoft Software Key Storage Provider'; \
     $p = Join-Path $env:TEMP 'ksspi-acceptance.cer'; \
     Export-Certificate -Cert $c -FilePath $p | Out-Null; \
     Import-Certificate -FilePath $p -CertStoreLocation Cert:\\LocalMachine\\Root | Out-Null; \
     Remove-Item $p; $c.Thumbprint";

fn powershell(script: &str) -> Ran {
    let mut command = Command::new("powershell.exe");
    command.args(["-NoProfile", "-NonInteractive", "-Command", script]);
    process::run(
        command,
        format!("powershell -Command \"{script}\""),
        Duration::from_secs(120),
    )
}

fn pnputil(args: &[&str]) -> Ran {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let mut command = Command::new("pnputil.exe");
    command.args(&args);
    process::run(
        command,
        process::shown("pnputil", &args),
        Duration::from_secs(120),
    )
}

impl System for WinSystem {
    fn backend(&self) -> &'static str {
        "windows"
    }

    fn clock(&mut self) -> (u64, u64) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        (now, machine::uptime_secs())
    }

    fn elevated(&mut self) -> Probe {
        machine::elevated()
    }

    fn test_signing(&mut self) -> Probe {
        machine::test_signing()
    }

    fn secure_boot(&mut self) -> Probe {
        machine::secure_boot()
    }

    fn driver_present(&mut self) -> Probe {
        Ok(device::interface_present())
    }

    fn check_inf(&mut self, path: &str) -> Result<(), String> {
        install::check_inf(std::path::Path::new(path)).map_err(|f| f.0)
    }

    fn certificate(&mut self, thumbprint: Option<&str>) -> Result<Certificate, (String, String)> {
        if let Some(hex) = thumbprint {
            let bytes = parse_thumbprint(hex).map_err(|e| (e, "pass 40 hex digits".into()))?;
            let mine = machine::certificate_in("MY", &bytes).map_err(|e| (e, String::new()))?;
            if !mine {
                return Err((
                    format!("no certificate with thumbprint {hex} in LocalMachine\\My"),
                    "omit --cert-thumbprint to have one created, or see docs/WINDOWS.md".into(),
                ));
            }
            let trusted = machine::certificate_in("Root", &bytes).unwrap_or(false);
            return Ok(Certificate {
                thumbprint: Some(hex.to_string()),
                detail: if trusted {
                    format!("{hex} in LocalMachine\\My and Root")
                } else {
                    format!(
                        "{hex} in LocalMachine\\My, not in Root: `connect` will not trust it \
                         (Export-Certificate, then certutil -addstore root)"
                    )
                },
            });
        }
        let ran = powershell(NEW_CERTIFICATE);
        let last = ran.stdout.lines().last().unwrap_or("").trim().to_string();
        match parse_thumbprint(&last) {
            Ok(_) if ran.exit_code == Some(0) => Ok(Certificate {
                thumbprint: Some(last.clone()),
                detail: format!(
                    "created {last} (CN=localhost) in LocalMachine\\My, trusted in \
                     LocalMachine\\Root"
                ),
            }),
            _ => Err((
                format!(
                    "creating a certificate with New-SelfSignedCertificate failed: {}",
                    ran.stderr.lines().next().unwrap_or("").trim()
                ),
                "create one as docs/WINDOWS.md shows and pass --cert-thumbprint".into(),
            )),
        }
    }

    fn verifier_settings(&mut self) -> Result<Settings, String> {
        win_verifier::settings()
    }

    fn verifier_changed_at(&mut self) -> Option<u64> {
        win_verifier::changed_at()
    }

    fn pending_reboot(&mut self) -> Result<Signals, String> {
        machine::pending_reboot()
    }

    fn run(&mut self, action: &Action) -> Ran {
        match action {
            Action::Ksspictl(args) => process::run_self(args, STEP_LIMIT),
            Action::Loopback { thumbprint } => {
                let mut serve: Vec<String> =
                    ["serve", "--listen", "127.0.0.1:0", "--once", "--echo"]
                        .iter()
                        .map(|s| s.to_string())
                        .collect();
                if let Some(t) = thumbprint {
                    serve.push("--cert-thumbprint".into());
                    serve.push(t.clone());
                }
                process::loopback(&serve, "localhost", Duration::from_secs(120))
            }
            Action::RemoveAndReadd { thumbprint } => remove_and_readd(thumbprint.as_deref()),
            Action::Install { inf } => {
                let started = std::time::Instant::now();
                let result = install::install(std::path::Path::new(inf));
                Ran {
                    command: format!("ksspictl install --inf {inf}"),
                    skipped: None,
                    exit_code: Some(i32::from(result.is_err())),
                    stdout: String::new(),
                    stderr: result.err().map(|f| f.0).unwrap_or_default(),
                    duration_ms: started.elapsed().as_millis() as u64,
                }
            }
            Action::VerifierOn { args } => {
                let started = std::time::Instant::now();
                let result = win_verifier::apply(args.as_deref(), true);
                let shown = args
                    .as_ref()
                    .map_or("(already set)".into(), |a| process::shown("verifier", a));
                Ran {
                    command: format!("{shown}; KMDF verifier values"),
                    skipped: None,
                    exit_code: Some(i32::from(result.is_err())),
                    stdout: result.clone().unwrap_or_default(),
                    stderr: result.err().unwrap_or_default(),
                    duration_ms: started.elapsed().as_millis() as u64,
                }
            }
            Action::VerifierQuery => win_verifier::run_verifier(&["/query".to_string()]),
        }
    }
}

/// Disable and re-enable the device (`pnputil /disable-device`,
/// `/enable-device` with its instance id; "PnPUtil command syntax",
/// learn.microsoft.com/windows-hardware/drivers/devtest/pnputil-command-syntax)
/// while a `stress` run holds sessions open; then the interface must come
/// back. The stress run may fail (its device went away) but must end.
fn remove_and_readd(thumbprint: Option<&str>) -> Ran {
    let started = std::time::Instant::now();
    let ids = match install::present() {
        Ok(ids) if !ids.is_empty() => ids,
        Ok(_) => {
            return Ran {
                command: "pnputil /disable-device".into(),
                exit_code: Some(1),
                stderr: "no ksspi device present to remove".into(),
                ..Ran::default()
            }
        }
        Err(f) => {
            return Ran {
                command: "pnputil /disable-device".into(),
                exit_code: Some(1),
                stderr: f.0,
                ..Ran::default()
            }
        }
    };
    let id = ids[0].clone();
    let mut stress: Vec<String> = ["stress", "--duration", "20", "--json"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if let Some(t) = thumbprint {
        stress.push("--cert-thumbprint".into());
        stress.push(t.to_string());
    }
    let background = Background::start(&stress);
    std::thread::sleep(Duration::from_secs(3));
    let disable = pnputil(&["/disable-device", &id]);
    std::thread::sleep(Duration::from_secs(2));
    let enable = pnputil(&["/enable-device", &id]);
    let stress_ran = match background {
        Ok(b) => b.finish(Duration::from_secs(120)),
        Err(e) => Ran {
            exit_code: Some(-1),
            stderr: e,
            ..Ran::default()
        },
    };
    let back = install::wait_for_interface(Duration::from_secs(60));
    let figures = serde_json::json!({
        "instance_id": id,
        "disable_exit": disable.exit_code,
        "enable_exit": enable.exit_code,
        "stress_exit": stress_ran.exit_code,
        "stress_finished": stress_ran.exit_code.is_some(),
        "interface_back_ms": back.as_ref().ok().map(|d| d.as_millis() as u64),
    });
    let ok = disable.exit_code == Some(0)
        && enable.exit_code == Some(0)
        && stress_ran.exit_code.is_some()
        && back.is_ok();
    let mut stderr = String::new();
    for (what, ran) in [
        ("disable", &disable),
        ("enable", &enable),
        ("stress", &stress_ran),
    ] {
        if ran.exit_code != Some(0) {
            stderr.push_str(&format!(
                "{what}: exit {:?}: {}\n",
                ran.exit_code,
                ran.stderr
                    .lines()
                    .chain(ran.stdout.lines())
                    .last()
                    .unwrap_or("")
                    .trim()
            ));
        }
    }
    if let Err(f) = back {
        stderr.push_str(&f.0);
    }
    Ran {
        command: format!(
            "{} & pnputil /disable-device \"{id}\"; pnputil /enable-device \"{id}\"",
            stress_ran.command
        ),
        skipped: None,
        exit_code: Some(i32::from(!ok)),
        stdout: figures.to_string(),
        stderr,
        duration_ms: started.elapsed().as_millis() as u64,
    }
}
