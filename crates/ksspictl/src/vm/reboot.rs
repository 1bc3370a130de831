//! Whether Windows itself owes a reboot, from the registry signals the
//! Windows layer reads (`backend/windows/machine.rs`, `pending_reboot`):
//! a run that starts on a machine about to change (servicing half done,
//! files to be replaced at boot) tests a system that will not be the one
//! after the reboot, so the acceptance run stops first.
//!
//! The signals, as Microsoft's own checks read them (the Scripting Guys'
//! "Determine Pending Reboot Status—PowerShell Style! Part 1",
//! devblogs.microsoft.com/scripting/determine-pending-reboot-statuspowershell-style-part-1/,
//! and the `xPendingReboot` DSC resource's `MSFT_xPendingReboot.psm1`,
//! PowerShell Gallery 0.4.0.0):
//! - [`COMPONENT_SERVICING`]: the key exists while Component Based Servicing
//!   waits for a reboot to finish installing packages;
//! - [`WINDOWS_UPDATE`]: the key exists while Windows Update waits for one;
//! - [`PENDING_RENAMES`] under [`SESSION_MANAGER`]: the file renames and
//!   deletions `MoveFileEx(MOVEFILE_DELAY_UNTIL_REBOOT)` queued for the
//!   Session Manager to carry out at the next boot, a REG_MULTI_SZ of
//!   source/target pairs, an empty target meaning delete
//!   (learn.microsoft.com/windows/win32/api/winbase/nf-winbase-movefileexw;
//!   Sysinternals PendMoves, learn.microsoft.com/sysinternals/downloads/pendmoves,
//!   prints them).

/// HKLM: present while Component Based Servicing needs a reboot.
pub const COMPONENT_SERVICING: &str =
    "SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Component Based Servicing\\RebootPending";
/// HKLM: present while Windows Update needs a reboot.
pub const WINDOWS_UPDATE: &str =
    "SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\WindowsUpdate\\Auto Update\\RebootRequired";
/// HKLM: the Session Manager's key.
pub const SESSION_MANAGER: &str = "SYSTEM\\CurrentControlSet\\Control\\Session Manager";
/// The REG_MULTI_SZ value under [`SESSION_MANAGER`] with the file
/// operations queued for the next boot.
pub const PENDING_RENAMES: &str = "PendingFileRenameOperations";

/// What the registry says, as read (no judgement yet).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Signals {
    /// [`COMPONENT_SERVICING`] exists.
    pub component_servicing: bool,
    /// [`WINDOWS_UPDATE`] exists.
    pub windows_update: bool,
    /// [`PENDING_RENAMES`]'s data split at every NUL, empty strings kept
    /// (a deletion's target is one); empty if the value does not exist.
    pub renames: Vec<String>,
}

/// One file operation queued for the next boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileOperation {
    pub source: String,
    /// `None`: the source is deleted.
    pub target: Option<String>,
}

/// The source/target pairs of [`Signals::renames`], up to the first empty
/// source (the REG_MULTI_SZ terminator). A source without a target (a
/// truncated value) is taken as a deletion.
pub fn file_operations(strings: &[String]) -> Vec<FileOperation> {
    let mut out = Vec::new();
    let mut it = strings.iter();
    while let Some(source) = it.next() {
        if source.is_empty() {
            break;
        }
        let target = it.next().filter(|t| !t.is_empty()).cloned();
        out.push(FileOperation {
            source: source.clone(),
            target,
        });
    }
    out
}

/// Why a reboot is pending, one phrase per signal; empty if none is.
pub fn reasons(signals: &Signals) -> Vec<String> {
    let mut out = Vec::new();
    if signals.component_servicing {
        out.push(format!(
            "Component Based Servicing waits for a reboot (HKLM\\{COMPONENT_SERVICING} exists)"
        ));
    }
    if signals.windows_update {
        out.push(format!(
            "Windows Update waits for a reboot (HKLM\\{WINDOWS_UPDATE} exists)"
        ));
    }
    let ops = file_operations(&signals.renames);
    if let Some(first) = ops.first() {
        let what = match &first.target {
            Some(t) => format!("{} -> {t}", first.source),
            None => format!("delete {}", first.source),
        };
        out.push(format!(
            "{} file operation{} queued for the next boot (HKLM\\{SESSION_MANAGER}\\\
             {PENDING_RENAMES}; first: {what})",
            ops.len(),
            if ops.len() == 1 { "" } else { "s" },
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn renames_pair_up_and_an_empty_target_is_a_deletion() {
        // As RegGetValueW returns it, split at NUL: a rename, a deletion,
        // then the terminator's empty strings.
        let raw = strings(&[
            "\\??\\C:\\a.new",
            "!\\??\\C:\\a.sys",
            "\\??\\C:\\Config.Msi\\x.rbf",
            "",
            "",
            "",
        ]);
        assert_eq!(
            file_operations(&raw),
            [
                FileOperation {
                    source: "\\??\\C:\\a.new".into(),
                    target: Some("!\\??\\C:\\a.sys".into()),
                },
                FileOperation {
                    source: "\\??\\C:\\Config.Msi\\x.rbf".into(),
                    target: None,
                },
            ]
        );
        // A truncated value: the last source alone is a deletion.
        assert_eq!(
            file_operations(&strings(&["C:\\x"])),
            [FileOperation {
                source: "C:\\x".into(),
                target: None
            }]
        );
        assert!(file_operations(&strings(&["", "C:\\ignored"])).is_empty());
        assert!(file_operations(&[]).is_empty());
    }

    #[test]
    fn each_signal_is_a_reason_and_none_is_none() {
        assert!(reasons(&Signals::default()).is_empty());
        // The value exists but holds only its terminator: nothing queued.
        let empty = Signals {
            renames: strings(&["", ""]),
            ..Signals::default()
        };
        assert!(reasons(&empty).is_empty());

        let all = Signals {
            component_servicing: true,
            windows_update: true,
            renames: strings(&["C:\\a", "", "C:\\b", "C:\\c", ""]),
        };
        let r = reasons(&all);
        assert_eq!(r.len(), 3, "{r:?}");
        assert!(
            r[0].contains("Component Based Servicing")
                && r[0].contains("Component Based Servicing\\RebootPending exists"),
            "{r:?}"
        );
        assert!(
            r[1].contains("Windows Update") && r[1].contains("Auto Update\\RebootRequired"),
            "{r:?}"
        );
        assert!(
            r[2].contains("Session Manager\\PendingFileRenameOperations"),
            "{r:?}"
        );
        assert!(
            r[2].contains("2 file operations") && r[2].contains("first: delete C:\\a"),
            "{r:?}"
        );
        let one = Signals {
            renames: strings(&["C:\\a", "C:\\b", ""]),
            ..Signals::default()
        };
        assert!(
            reasons(&one)[0].starts_with("1 file operation queued")
                && reasons(&one)[0].contains("C:\\a -> C:\\b"),
            "{:?}",
            reasons(&one)
        );
    }
}
