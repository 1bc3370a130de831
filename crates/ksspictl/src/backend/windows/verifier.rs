//! `verifier on|off|status` on Windows: read what Driver Verifier is set to
//! (the `VerifyDrivers` / `VerifyDriverLevel` registry values), let
//! [`crate::vm::verifier`] decide, run `verifier.exe` with the documented
//! arguments, check the registry afterwards, and set or delete the KMDF
//! verifier's values. ksspictl records when it last changed the settings
//! (`HKLM\SOFTWARE\ksspi` `VerifierChangedAt`, Unix seconds) so it can say
//! whether the reboot that applies them is still owed.

use super::machine::{self, elevated, Data};
use crate::backend::process;
use crate::vm::acceptance::Ran;
use crate::vm::verifier::{self, KmdfData, Mode, Settings};
use crate::Failure;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MEMORY_MANAGEMENT: &str =
    "SYSTEM\\CurrentControlSet\\Control\\Session Manager\\Memory Management";
const MARKER_KEY: &str = "SOFTWARE\\ksspi";
const MARKER: &str = "VerifierChangedAt";

/// What Driver Verifier is set to from the next boot on.
pub fn settings() -> Result<Settings, String> {
    let drivers = machine::string(MEMORY_MANAGEMENT, "VerifyDrivers")?;
    let level = machine::dword(MEMORY_MANAGEMENT, "VerifyDriverLevel")?;
    Ok(Settings::from_registry(drivers.as_deref(), level))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// When ksspictl last changed Driver Verifier's settings, if recorded.
pub fn changed_at() -> Option<u64> {
    machine::qword(MARKER_KEY, MARKER).ok().flatten()
}

/// The line about the reboot Driver Verifier needs.
fn reboot_line() -> String {
    verifier::reboot_line(changed_at(), now(), machine::uptime_secs())
}

/// `verifier.exe ARGS` (System32; "Driver Verifier command syntax").
pub fn run_verifier(args: &[String]) -> Ran {
    let mut command = Command::new("verifier.exe");
    command.args(args);
    process::run(
        command,
        process::shown("verifier", args),
        Duration::from_secs(120),
    )
}

/// Apply `args` (if any) and the KMDF values (`on`: set, else deleted);
/// then check the registry says what was asked.
pub fn apply(args: Option<&[String]>, on: bool) -> Result<String, String> {
    let mut said = String::new();
    if let Some(args) = args {
        let ran = run_verifier(args);
        said = ran.stdout.trim().to_string();
        let after = settings()?;
        let took = if on {
            after.ours_complete()
        } else {
            !after.ours()
        };
        if !took {
            return Err(format!(
                "`{}` exited with {:?} and the settings did not change (now: {} / {}): {}",
                ran.command,
                ran.exit_code,
                after.drivers.join(" "),
                after.flags.map_or("no flags".into(), |f| format!("{f:#x}")),
                ran.stderr.trim()
            ));
        }
        machine::set(MARKER_KEY, MARKER, Data::Qword(now()))?;
    }
    let key = verifier::kmdf_key();
    for v in verifier::kmdf_values() {
        if on {
            let data = match v.value {
                KmdfData::Dword(d) => Data::Dword(d),
                KmdfData::MultiSz(s) => Data::MultiSz(s),
            };
            machine::set(&key, v.name, data)?;
        } else {
            machine::delete(&key, v.name)?;
        }
    }
    Ok(said)
}

/// `ksspictl verifier on|off|status`.
pub fn exec(mode: Mode, keep_others: bool) -> Result<(), Failure> {
    if mode != Mode::Status && !elevated().map_err(Failure)? {
        return Err(Failure(
            "not elevated: Driver Verifier's settings need an elevated prompt (Run as \
             administrator)"
                .into(),
        ));
    }
    let current = settings().map_err(Failure)?;
    match mode {
        Mode::Status => {
            println!(
                "Driver Verifier from the next boot: drivers {}; flags {}",
                if current.drivers.is_empty() {
                    "none".to_string()
                } else {
                    current.drivers.join(", ")
                },
                current.flags.map_or("none".into(), |f| format!(
                    "{f:#x} ({})",
                    verifier::describe(f).join(", ")
                ))
            );
            println!(
                "{} {} with the acceptance flags {:#x}",
                verifier::DRIVER,
                if current.ours_complete() {
                    "is set"
                } else {
                    "is not set"
                },
                verifier::flags()
            );
            for v in verifier::kmdf_values() {
                let set = machine::dword(&verifier::kmdf_key(), v.name).ok().flatten();
                if let KmdfData::Dword(_) = v.value {
                    println!(
                        "KMDF {}: {}",
                        v.name,
                        set.map_or("not set".into(), |d| d.to_string())
                    );
                }
            }
            println!("{}", reboot_line());
            println!("what is active now: verifier /query");
            Ok(())
        }
        Mode::On => {
            let change = verifier::on(&current, keep_others).map_err(|r| Failure(r.0))?;
            apply(change.args.as_deref(), true).map_err(Failure)?;
            println!("{}", change.summary);
            println!(
                "KMDF verifier values set under HKLM\\{}",
                verifier::kmdf_key()
            );
            println!("{}", reboot_line());
            Ok(())
        }
        Mode::Off => {
            let change = verifier::off(&current);
            apply(change.args.as_deref(), false).map_err(Failure)?;
            println!("{}", change.summary);
            println!(
                "KMDF verifier values removed from HKLM\\{}",
                verifier::kmdf_key()
            );
            println!("{}", reboot_line());
            Ok(())
        }
    }
}
