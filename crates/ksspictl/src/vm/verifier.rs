//! Driver Verifier for `ksspi_driver.sys`: which settings, the `verifier.exe`
//! command lines that set them, the KMDF verifier's registry values, whether
//! another driver's settings would be touched, and whether a reboot is still
//! owed. Pure: the Windows side reads the registry and runs `verifier.exe`
//! (`backend/windows/verifier.rs`).
//!
//! Choice: settings are written by running `verifier.exe` with flags (the
//! documented interface: "Driver Verifier command syntax",
//! <https://learn.microsoft.com/windows-hardware/drivers/devtest/verifier-command-line>,
//! `verifier /flags <options> /driver NAME [NAME ...]`, `verifier /reset`,
//! `verifier /query`, `verifier /querysettings`), never by writing its
//! registry values ourselves. What is configured for the next boot is *read*
//! from the values verifier.exe keeps under `HKLM\SYSTEM\CurrentControlSet\
//! Control\Session Manager\Memory Management`: `VerifyDrivers` (REG_SZ, the
//! driver names separated by spaces) and `VerifyDriverLevel` (REG_DWORD, the
//! flags) (Windows Internals, 5th ed., ch. 9 "Driver Verifier"; Microsoft KB
//! 244617 "Using Driver Verifier to identify issues with Windows drivers"),
//! because `verifier /querysettings` prints them in the system's language.

// The Windows backend uses all of it; the model (acceptance --dry-run) part.
#![cfg_attr(not(windows), allow(dead_code))]

use serde::{Deserialize, Serialize};

/// The driver's image name, as Driver Verifier lists it.
pub const DRIVER: &str = "ksspi_driver.sys";

/// The service name (driver.inx's `AddService`), under which KMDF reads its
/// verifier values.
pub const SERVICE: &str = "ksspi_driver";

/// What `ksspictl verifier` was asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    On,
    Off,
    Status,
}

/// One Driver Verifier option: its `/flags` bit and its documented name.
pub struct Flag {
    pub bit: u32,
    pub name: &'static str,
}

/// The options `verifier on` sets, as docs/RELIABILITY.md names them: the
/// standard set (`/standard` is 0x209BB: special pool 0x1, force IRQL
/// checking 0x2, pool tracking 0x8, I/O verification 0x10, deadlock
/// detection 0x20, DMA checking 0x80, security checks 0x100, miscellaneous
/// checks 0x800, DDI compliance checking 0x20000) plus randomized low
/// resources simulation (0x4). The bit values are those `verifier
/// /querysettings` lists and the verifier command-line page gives for
/// `/flags` (bit 0 special pool ... bit 11 miscellaneous checks; 0x20000 DDI
/// compliance checking, "Driver Verifier options and rule classes").
pub const FLAGS: &[Flag] = &[
    Flag {
        bit: 0x1,
        name: "special pool",
    },
    Flag {
        bit: 0x2,
        name: "force IRQL checking",
    },
    Flag {
        bit: 0x4,
        name: "randomized low resources simulation",
    },
    Flag {
        bit: 0x8,
        name: "pool tracking",
    },
    Flag {
        bit: 0x10,
        name: "I/O verification",
    },
    Flag {
        bit: 0x20,
        name: "deadlock detection",
    },
    Flag {
        bit: 0x80,
        name: "DMA checking",
    },
    Flag {
        bit: 0x100,
        name: "security checks",
    },
    Flag {
        bit: 0x800,
        name: "miscellaneous checks",
    },
    Flag {
        bit: 0x20000,
        name: "DDI compliance checking",
    },
];

/// `/standard`'s flags.
pub const STANDARD: u32 = 0x209BB;
/// Randomized low resources simulation.
pub const LOW_RESOURCES: u32 = 0x4;

/// The flags `verifier on` asks for: the standard set and low resources
/// simulation (every bit of [`FLAGS`]).
pub fn flags() -> u32 {
    STANDARD | LOW_RESOURCES
}

/// The names of the bits set in `flags`, known ones by name, the rest in hex.
pub fn describe(flags: u32) -> Vec<String> {
    let mut out: Vec<String> = FLAGS
        .iter()
        .filter(|f| flags & f.bit != 0)
        .map(|f| f.name.to_string())
        .collect();
    let unknown = flags & !FLAGS.iter().fold(0, |acc, f| acc | f.bit);
    if unknown != 0 {
        out.push(format!("other bits {unknown:#x}"));
    }
    out
}

/// One KMDF verifier registry value, under the service's `Parameters\Wdf`
/// key ("Registry values for debugging WDF drivers",
/// <https://learn.microsoft.com/windows-hardware/drivers/wdf/registry-values-for-debugging-kmdf-drivers>;
/// "Using KMDF Verifier",
/// <https://learn.microsoft.com/windows-hardware/drivers/wdf/using-kmdf-verifier>).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KmdfValue {
    pub name: &'static str,
    /// A REG_DWORD, or (for TrackHandles) a REG_MULTI_SZ of one string.
    pub value: KmdfData,
}

/// A KMDF registry value's data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KmdfData {
    Dword(u32),
    MultiSz(&'static str),
}

/// The KMDF verifier's values `verifier on` sets (and `off` deletes):
/// `VerifierOn` (the framework's verifier, read at WdfDriverCreate),
/// `VerifyOn` (WDFVERIFY / VERIFY_IS_IRQL_PASSIVE_LEVEL checks),
/// `DbgBreakOnError` (break into the debugger on a verifier error),
/// `VerboseOn` (verbose framework log) and `TrackHandles` `*` (track every
/// object handle's references), as docs/RELIABILITY.md lists them.
pub fn kmdf_values() -> Vec<KmdfValue> {
    vec![
        KmdfValue {
            name: "VerifierOn",
            value: KmdfData::Dword(1),
        },
        KmdfValue {
            name: "VerifyOn",
            value: KmdfData::Dword(1),
        },
        KmdfValue {
            name: "DbgBreakOnError",
            value: KmdfData::Dword(1),
        },
        KmdfValue {
            name: "VerboseOn",
            value: KmdfData::Dword(1),
        },
        KmdfValue {
            name: "TrackHandles",
            value: KmdfData::MultiSz("*"),
        },
    ]
}

/// The registry key (under HKLM) that holds the KMDF values.
pub fn kmdf_key() -> String {
    format!("SYSTEM\\CurrentControlSet\\Services\\{SERVICE}\\Parameters\\Wdf")
}

/// What Driver Verifier is configured to do from the next boot on, as read
/// from `VerifyDrivers` / `VerifyDriverLevel`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// The drivers named, lower case, in order.
    pub drivers: Vec<String>,
    /// The flags, if the value exists.
    pub flags: Option<u32>,
}

impl Settings {
    /// Settings from the two registry values as read.
    pub fn from_registry(verify_drivers: Option<&str>, level: Option<u32>) -> Settings {
        let drivers = verify_drivers
            .unwrap_or("")
            .split([' ', '\0', '\t'])
            .filter(|d| !d.is_empty())
            .map(str::to_ascii_lowercase)
            .collect();
        Settings {
            drivers,
            flags: level,
        }
    }

    /// Is ours among the verified drivers?
    pub fn ours(&self) -> bool {
        self.drivers.iter().any(|d| d == DRIVER)
    }

    /// Is every driver verified (`verifier /all` writes `*`)?
    pub fn all(&self) -> bool {
        self.drivers.iter().any(|d| d == "*")
    }

    /// The drivers other than ours.
    pub fn others(&self) -> Vec<&str> {
        self.drivers
            .iter()
            .map(String::as_str)
            .filter(|d| *d != DRIVER)
            .collect()
    }

    /// Do our settings (our driver, every flag we ask for) apply?
    pub fn ours_complete(&self) -> bool {
        self.ours() && self.flags.is_some_and(|f| f & flags() == flags())
    }
}

/// What `verifier on` or `off` will do: the `verifier.exe` arguments, and
/// whether the KMDF values are set (`on`) or removed (`off`); `None` args:
/// nothing to run.
#[derive(Debug, PartialEq, Eq)]
pub struct Change {
    pub args: Option<Vec<String>>,
    pub kmdf_on: bool,
    /// One line saying what changes for the next boot.
    pub summary: String,
}

/// Why `on` or `off` will not change anything silently.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal(pub String);

/// `verifier on` from `current`: refuse to replace another driver's settings
/// unless `keep_others` (then every listed driver gets our flags, one level
/// for all, as Driver Verifier has).
pub fn on(current: &Settings, keep_others: bool) -> Result<Change, Refusal> {
    let want = flags();
    if current.all() {
        return Err(Refusal(
            "Driver Verifier is set to verify all drivers (verifier /all): not changed; \
             run `verifier /reset` and reboot first if that setting can go"
                .into(),
        ));
    }
    let others = current.others();
    if !others.is_empty() && !keep_others {
        return Err(Refusal(format!(
            "Driver Verifier is already set for other drivers ({}; flags {}): not changed; \
             `ksspictl verifier on --keep-others` adds ksspi_driver.sys beside them (flags \
             {want:#x} for all), or `verifier /reset` and reboot first",
            others.join(", "),
            current
                .flags
                .map_or("unknown".to_string(), |f| format!("{f:#x}"))
        )));
    }
    if current.ours_complete() && (others.is_empty() || current.flags == Some(want)) {
        return Ok(Change {
            args: None,
            kmdf_on: true,
            summary: format!("Driver Verifier is already set for {DRIVER} (flags {want:#x})"),
        });
    }
    let mut args = vec!["/flags".to_string(), format!("{want:#x}"), "/driver".into()];
    args.extend(others.iter().map(|d| d.to_string()));
    args.push(DRIVER.into());
    Ok(Change {
        args: Some(args),
        kmdf_on: true,
        summary: format!(
            "Driver Verifier set for {} with flags {want:#x} ({})",
            others
                .iter()
                .copied()
                .chain([DRIVER])
                .collect::<Vec<_>>()
                .join(", "),
            describe(want).join(", ")
        ),
    })
}

/// `verifier off` from `current`: `/reset` when ours is the only driver;
/// with others, set the list again without ours at their flags (so their
/// settings stay); nothing to run when ours is not listed.
pub fn off(current: &Settings) -> Change {
    let others = current.others();
    if !current.ours() {
        return Change {
            args: None,
            kmdf_on: false,
            summary: format!("Driver Verifier is not set for {DRIVER}"),
        };
    }
    if others.is_empty() {
        return Change {
            args: Some(vec!["/reset".into()]),
            kmdf_on: false,
            summary: format!("Driver Verifier off (it verified only {DRIVER})"),
        };
    }
    let level = current.flags.unwrap_or(STANDARD);
    let mut args = vec![
        "/flags".to_string(),
        format!("{level:#x}"),
        "/driver".into(),
    ];
    args.extend(others.iter().map(|d| d.to_string()));
    Change {
        args: Some(args),
        kmdf_on: false,
        summary: format!(
            "{DRIVER} removed from Driver Verifier; {} stay verified (flags {level:#x})",
            others.join(", ")
        ),
    }
}

/// How long a reboot takes at the least, seconds: the slack allowed for
/// clock adjustments when deciding whether one happened.
const REBOOT_SLACK_SECS: u64 = 5;

/// Has the machine restarted since `changed_at` (Unix seconds), given the
/// time `now` (Unix seconds) and how long it has been up (`uptime`,
/// seconds)? Without a restart the uptime covers everything since the
/// change; after one it is shorter than that by the time the restart took.
pub fn rebooted_since(changed_at: u64, now: u64, uptime: u64) -> bool {
    let elapsed = now.saturating_sub(changed_at);
    uptime + REBOOT_SLACK_SECS < elapsed
}

/// The line `on`/`off`/`status` print about the reboot Driver Verifier
/// needs: `changed_at` is when ksspictl last changed its settings (None:
/// never, or not recorded).
pub fn reboot_line(changed_at: Option<u64>, now: u64, uptime: u64) -> String {
    match changed_at {
        Some(t) if !rebooted_since(t, now, uptime) => {
            "a reboot is pending: the settings take effect at the next boot \
             (shutdown /r /t 0)"
                .to_string()
        }
        Some(_) => "no reboot pending: the machine has restarted since the last change".into(),
        None => "no change by ksspictl recorded; `verifier /query` shows what is active now".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(drivers: &str, level: Option<u32>) -> Settings {
        Settings::from_registry(Some(drivers), level)
    }

    #[test]
    fn the_flags_are_the_standard_set_plus_low_resources() {
        assert_eq!(flags(), FLAGS.iter().fold(0, |acc, f| acc | f.bit));
        assert_eq!(flags(), 0x209BF, "docs/RELIABILITY.md's /flags value");
        let names = describe(flags());
        for name in [
            "force IRQL checking",
            "pool tracking",
            "I/O verification",
            "DDI compliance checking",
            "randomized low resources simulation",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
        }
        assert_eq!(
            describe(0x8 | 0x40000),
            ["pool tracking", "other bits 0x40000"]
        );
    }

    #[test]
    fn on_from_nothing_runs_verifier_with_our_flags() {
        let change = on(&Settings::default(), false).expect("nothing to keep");
        assert_eq!(
            change.args.expect("runs verifier"),
            ["/flags", "0x209bf", "/driver", "ksspi_driver.sys"]
        );
        assert!(change.kmdf_on);
        assert!(
            change.summary.contains("DDI compliance checking"),
            "{}",
            change.summary
        );
    }

    #[test]
    fn another_drivers_settings_are_never_replaced_silently() {
        let current = settings("Foo.sys bar.sys", Some(0x1));
        let refusal = on(&current, false).unwrap_err();
        assert!(refusal
            .0
            .contains("already set for other drivers (foo.sys, bar.sys; flags 0x1)"));
        assert!(refusal.0.contains("--keep-others"), "{}", refusal.0);
        let change = on(&current, true).expect("kept");
        assert_eq!(
            change.args.expect("runs"),
            [
                "/flags",
                "0x209bf",
                "/driver",
                "foo.sys",
                "bar.sys",
                "ksspi_driver.sys"
            ]
        );
        let all = on(&settings("*", Some(0x209bb)), true).unwrap_err();
        assert!(all.0.contains("verify all drivers"), "{}", all.0);
    }

    #[test]
    fn on_twice_changes_nothing_and_off_keeps_the_others() {
        let ours = settings("ksspi_driver.sys", Some(0x209bf));
        assert_eq!(on(&ours, false).expect("ours").args, None);
        assert_eq!(off(&ours).args.expect("resets"), ["/reset"]);
        let mixed = settings("foo.sys ksspi_driver.sys", Some(0x209bf));
        let change = off(&mixed);
        assert_eq!(
            change.args.expect("re-lists"),
            ["/flags", "0x209bf", "/driver", "foo.sys"]
        );
        assert!(
            change.summary.contains("foo.sys stay verified"),
            "{}",
            change.summary
        );
        let none = off(&Settings::default());
        assert_eq!(none.args, None);
        assert!(none.summary.contains("not set"));
        // Ours listed with too few flags: on sets them again.
        let weak = settings("ksspi_driver.sys", Some(0x209bb));
        assert!(on(&weak, false).expect("ours").args.is_some());
    }

    #[test]
    fn a_reboot_is_pending_until_the_uptime_is_shorter_than_the_time_since() {
        // Changed at t=1000; 60 s later, up for an hour: no restart.
        assert!(!rebooted_since(1000, 1060, 3600));
        // 600 s later, up for 120 s: restarted in between.
        assert!(rebooted_since(1000, 1600, 120));
        // A clock adjustment of a few seconds is not a restart.
        assert!(!rebooted_since(1000, 1063, 60));
        // The clock going backwards is not a restart either.
        assert!(!rebooted_since(1000, 900, 10));
        assert!(reboot_line(Some(1000), 1060, 3600).starts_with("a reboot is pending"));
        assert!(reboot_line(Some(1000), 1600, 120).starts_with("no reboot pending"));
        assert!(reboot_line(None, 1600, 120).contains("verifier /query"));
    }

    #[test]
    fn registry_values_parse_into_settings() {
        let s = Settings::from_registry(Some("  KSSPI_DRIVER.SYS\0wdf01000.sys "), Some(0x209bf));
        assert_eq!(s.drivers, ["ksspi_driver.sys", "wdf01000.sys"]);
        assert!(s.ours() && s.ours_complete() && !s.all());
        assert_eq!(s.others(), ["wdf01000.sys"]);
        assert_eq!(Settings::from_registry(None, None), Settings::default());
        assert_eq!(
            kmdf_key(),
            "SYSTEM\\CurrentControlSet\\Services\\ksspi_driver\\Parameters\\Wdf"
        );
        let names: Vec<_> = kmdf_values().iter().map(|v| v.name).collect();
        assert_eq!(
            names,
            [
                "VerifierOn",
                "VerifyOn",
                "DbgBreakOnError",
                "VerboseOn",
                "TrackHandles"
            ]
        );
    }
}
