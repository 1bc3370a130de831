//! The driver package's INF, checked before anything is installed: that it
//! is the stamped INF (not the `driver.inx` template), that it offers the
//! root-enumerated hardware id the harness creates a device for, and that
//! it does so for this machine's architecture. Pure text work: the INF
//! syntax is the one Microsoft's "General Syntax Rules for INF Files" and
//! "INF Manufacturer Section" pages describe (sections in brackets, `;`
//! comments outside quotes, `[Manufacturer]` entries `%Mfg% =
//! Models,NTamd64.10.0...20348`, one models section per decoration).

// The Windows backend uses all of it; the model (acceptance --dry-run) part.
#![cfg_attr(not(windows), allow(dead_code))]

/// The hardware id `driver.inx` matches, which `install` gives the device
/// node it creates (as `devgen /add /bus ROOT /hardwareid "Root\ksspi"`
/// does).
pub const HARDWARE_ID: &str = "Root\\ksspi";

/// Whether a device's hardware id list (`SPDRP_HARDWAREID`, a REG_MULTI_SZ:
/// UTF-16 strings each ended by a NUL, the list ended by an empty one) holds
/// [`HARDWARE_ID`], compared without regard to case as Windows compares
/// device ids. Whatever enumerated the device (`ROOT\...` from `install` or
/// `devgen /bus ROOT`, `SWD\DEVGEN\...` from a plain `devgen /add`), the id
/// it was given is the same. A list cut short without its final NULs is read
/// as far as it goes.
pub fn lists_hardware_id(multi_sz: &[u16]) -> bool {
    multi_sz
        .split(|&c| c == 0)
        .take_while(|id| !id.is_empty())
        .any(|id| String::from_utf16_lossy(id).eq_ignore_ascii_case(HARDWARE_ID))
}

/// The driver packages (`oemN.inf`) `uninstall` may delete, given each
/// device's package (None: unknown) and whether its removal succeeded: the
/// packages of the devices removed, each once, less any a device that is
/// still there uses. Deleting a package under a device left behind
/// (`SUOI_FORCEDELETE` does not refuse) would leave that device without its
/// driver files; the package goes on the next `uninstall` instead.
pub fn packages_to_delete(devices: &[(Option<String>, bool)]) -> Vec<String> {
    let kept: Vec<&str> = devices
        .iter()
        .filter(|(_, removed)| !removed)
        .filter_map(|(inf, _)| inf.as_deref())
        .collect();
    let mut delete: Vec<String> = Vec::new();
    for (inf, _) in devices.iter().filter(|(_, removed)| *removed) {
        if let Some(inf) = inf {
            let in_use = kept.iter().any(|k| k.eq_ignore_ascii_case(inf));
            let listed = delete.iter().any(|d| d.eq_ignore_ascii_case(inf));
            if !in_use && !listed {
                delete.push(inf.clone());
            }
        }
    }
    delete
}

/// What an INF check found wrong, as one line with its fix.
#[derive(Debug, PartialEq, Eq)]
pub struct InfError(pub String);

/// A checked INF: what `install` needs from it.
#[derive(Debug, PartialEq, Eq)]
pub struct Inf {
    /// The `[Version]` section's `ClassGuid`, braces included.
    pub class_guid: String,
    /// The `[Version]` section's `CatalogFile`.
    pub catalog: Option<String>,
    /// Every file `[SourceDisksFiles]` lists (the driver binary).
    pub files: Vec<String>,
    /// The models section that lists [`HARDWARE_ID`] for the architecture.
    pub models: String,
}

/// The INF architecture name for a Rust `target_arch` (`amd64` for
/// `x86_64`, `arm64` for `aarch64`), as INF decorations spell it.
pub fn inf_arch(rust_arch: &str) -> Option<&'static str> {
    match rust_arch {
        "x86_64" => Some("amd64"),
        "aarch64" => Some("arm64"),
        "x86" => Some("x86"),
        _ => None,
    }
}

/// A comment starts at a `;` outside double quotes.
fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ';' if !quoted => return &line[..i],
            _ => {}
        }
    }
    line
}

/// The INF's sections in order: name and non-empty, comment-free lines.
fn sections(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for line in text.lines() {
        let line = strip_comment(line).trim();
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            out.push((name.trim().to_string(), Vec::new()));
        } else if let Some((_, body)) = out.last_mut() {
            body.push(line.to_string());
        }
    }
    out
}

/// Section names compare case-insensitively in INF files.
fn section<'a>(all: &'a [(String, Vec<String>)], name: &str) -> Option<&'a [String]> {
    all.iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, body)| body.as_slice())
}

/// `key = value` in a section, the key compared case-insensitively.
fn value<'a>(body: &'a [String], key: &str) -> Option<&'a str> {
    body.iter().find_map(|line| {
        let (k, v) = line.split_once('=')?;
        k.trim().eq_ignore_ascii_case(key).then(|| v.trim())
    })
}

/// Check `text` (the INF `path` names, for messages) for `arch` (an INF
/// architecture: `amd64`, `arm64`).
pub fn check(path: &str, text: &str, arch: &str) -> Result<Inf, InfError> {
    if text.contains("$ARCH$") || text.contains("$KMDFVERSION$") {
        return Err(InfError(format!(
            "{path} is the INF template (driver.inx, $ARCH$ not stamped): pass the package's \
             ksspi_driver.inf (target\\debug\\ksspi_driver_package\\ after `cargo make`)"
        )));
    }
    let all = sections(text);
    let version = section(&all, "Version")
        .ok_or_else(|| InfError(format!("{path} has no [Version] section: not an INF")))?;
    let class_guid = value(version, "ClassGuid")
        .ok_or_else(|| InfError(format!("{path} has no ClassGuid in [Version]")))?
        .to_string();
    let catalog = value(version, "CatalogFile").map(str::to_string);
    let manufacturer = section(&all, "Manufacturer")
        .ok_or_else(|| InfError(format!("{path} has no [Manufacturer] section")))?;
    // Each entry: %Mfg% = Models[,Decoration...]; the models sections are
    // Models.Decoration (or Models alone, undecorated).
    let mut offered = Vec::new();
    let mut models_for_arch = None;
    for line in manufacturer {
        let Some((_, rhs)) = line.split_once('=') else {
            continue;
        };
        let mut parts = rhs.split(',').map(str::trim);
        let Some(models) = parts.next() else { continue };
        for decoration in parts {
            let platform = decoration
                .split('.')
                .next()
                .unwrap_or("")
                .to_ascii_lowercase();
            let this_arch = platform.strip_prefix("nt").unwrap_or("");
            offered.push(this_arch.to_string());
            if this_arch.eq_ignore_ascii_case(arch) {
                models_for_arch = Some(format!("{models}.{decoration}"));
            }
        }
    }
    let Some(models) = models_for_arch else {
        let offered = if offered.is_empty() {
            "none".to_string()
        } else {
            offered.join(", ")
        };
        return Err(InfError(format!(
            "{path} is not for this machine: it offers {offered}, this is {arch}; build the \
             package for {arch} (cargo make --target {})",
            match arch {
                "arm64" => "aarch64-pc-windows-msvc",
                _ => "x86_64-pc-windows-msvc",
            }
        )));
    };
    let body = section(&all, &models)
        .ok_or_else(|| InfError(format!("{path} names [{models}] but has no such section")))?;
    let lists_id = body.iter().any(|line| {
        line.split_once('=').is_some_and(|(_, rhs)| {
            rhs.split(',')
                .skip(1)
                .any(|id| id.trim().eq_ignore_ascii_case(HARDWARE_ID))
        })
    });
    if !lists_id {
        return Err(InfError(format!(
            "{path} does not offer the hardware id {HARDWARE_ID} in [{models}]: not the ksspi \
             package"
        )));
    }
    let files = section(&all, "SourceDisksFiles")
        .unwrap_or(&[])
        .iter()
        .filter_map(|l| l.split('=').next())
        .map(|f| f.trim().to_string())
        .filter(|f| !f.is_empty())
        .collect();
    Ok(Inf {
        class_guid,
        catalog,
        files,
        models,
    })
}

impl Inf {
    /// The package's files (the catalog and the driver binary) that
    /// `exists` says are not beside the INF, as one line; `None` if all are.
    pub fn missing(&self, path: &str, exists: impl Fn(&str) -> bool) -> Option<InfError> {
        let missing: Vec<&str> = self
            .catalog
            .iter()
            .chain(self.files.iter())
            .map(String::as_str)
            .filter(|f| !exists(f))
            .collect();
        (!missing.is_empty()).then(|| {
            InfError(format!(
                "{} missing beside {path}: copy the whole ksspi_driver_package folder",
                missing.join(", ")
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `driver.inx` as stampinf leaves it for amd64.
    fn stamped(arch: &str) -> String {
        include_str!("../../../../driver.inx")
            .replace("$ARCH$", arch)
            .replace("$KMDFVERSION$", "1.33")
    }

    #[test]
    fn the_stamped_package_inf_passes_for_its_architecture() {
        let inf = check("ksspi_driver.inf", &stamped("amd64"), "amd64").expect("valid");
        assert_eq!(inf.class_guid, "{62f9c741-b25a-46ce-b54c-9bccce08b6f2}");
        assert_eq!(inf.catalog.as_deref(), Some("ksspi_driver.cat"));
        assert_eq!(inf.files, ["ksspi_driver.sys"]);
        assert_eq!(inf.models, "Standard.NTamd64.10.0...20348");
        assert_eq!(inf.missing("x.inf", |_| true), None);
        let missing = inf
            .missing("x.inf", |f| f != "ksspi_driver.cat")
            .expect("missing");
        assert!(
            missing
                .0
                .starts_with("ksspi_driver.cat missing beside x.inf"),
            "{missing:?}"
        );
    }

    #[test]
    fn another_architecture_is_refused_with_what_it_offers() {
        let err = check("k.inf", &stamped("arm64"), "amd64").unwrap_err();
        assert!(err.0.contains("it offers arm64, this is amd64"), "{err:?}");
        assert!(err.0.contains("x86_64-pc-windows-msvc"), "{err:?}");
        assert!(check("k.inf", &stamped("arm64"), "arm64").is_ok());
    }

    #[test]
    fn the_template_and_foreign_inis_are_refused() {
        let template = include_str!("../../../../driver.inx");
        let err = check("driver.inx", template, "amd64").unwrap_err();
        assert!(err.0.contains("is the INF template"), "{err:?}");
        let err = check("x.inf", "[Strings]\nA=1\n", "amd64").unwrap_err();
        assert!(err.0.contains("no [Version] section"), "{err:?}");
        let other = stamped("amd64").replace("Root\\ksspi", "Root\\other");
        let err = check("x.inf", &other, "amd64").unwrap_err();
        assert!(
            err.0.contains("does not offer the hardware id Root\\ksspi"),
            "{err:?}"
        );
        let err = check("x.inf", "[Version]\nClassGuid={x}\n", "amd64").unwrap_err();
        assert!(err.0.contains("no [Manufacturer]"), "{err:?}");
    }

    #[test]
    fn comments_case_and_undecorated_sections_follow_inf_rules() {
        let text = "[version] ; c\nclassguid = {g}\n[MANUFACTURER]\n%M%=Models,ntAMD64\n\
                    [models.ntamd64]\n%D% = Install, ROOT\\KSSPI ; the id\n";
        let inf = check("x.inf", text, "amd64").expect("valid");
        assert_eq!(inf.models, "Models.ntAMD64");
        assert_eq!(inf.catalog, None);
        assert_eq!(inf_arch("x86_64"), Some("amd64"));
        assert_eq!(inf_arch("aarch64"), Some("arm64"));
        assert_eq!(inf_arch("riscv64"), None);
    }

    fn multi_sz(ids: &[&str]) -> Vec<u16> {
        ids.iter()
            .flat_map(|id| id.encode_utf16().chain([0]))
            .chain([0])
            .collect()
    }

    #[test]
    fn hardware_id_found_anywhere_in_the_list_in_any_case() {
        assert!(lists_hardware_id(&multi_sz(&["Root\\ksspi"])));
        assert!(lists_hardware_id(&multi_sz(&["ROOT\\KSSPI"])));
        assert!(lists_hardware_id(&multi_sz(&[
            "SWD\\DEVGEN",
            "root\\ksspi"
        ])));
        // Cut short: no final NULs.
        let cut: Vec<u16> = "Root\\ksspi".encode_utf16().collect();
        assert!(lists_hardware_id(&cut));
    }

    #[test]
    fn hardware_id_not_found() {
        assert!(!lists_hardware_id(&[]));
        assert!(!lists_hardware_id(&multi_sz(&[])));
        assert!(!lists_hardware_id(&multi_sz(&["Root\\ksspi2", "ksspi"])));
        // After the empty string that ends the list: not part of it.
        let mut after_end = multi_sz(&["PCI\\VEN_8086"]);
        after_end.extend("Root\\ksspi".encode_utf16().chain([0, 0]));
        assert!(!lists_hardware_id(&after_end));
        // A buffer of zeros, as SetupAPI leaves it for an empty property.
        assert!(!lists_hardware_id(&[0u16; 16]));
    }

    #[test]
    fn packages_of_removed_devices_only() {
        let dev = |inf: Option<&str>, removed| (inf.map(str::to_string), removed);
        assert!(packages_to_delete(&[]).is_empty());
        // Removed: its package goes.
        assert_eq!(
            packages_to_delete(&[dev(Some("oem7.inf"), true)]),
            ["oem7.inf"]
        );
        // Not removed: its package stays.
        assert!(packages_to_delete(&[dev(Some("oem7.inf"), false)]).is_empty());
        // Two devices on one package, one not removed: the package stays
        // (whichever order, whatever the case of the name).
        assert!(
            packages_to_delete(&[dev(Some("oem7.inf"), true), dev(Some("OEM7.INF"), false)])
                .is_empty()
        );
        assert!(
            packages_to_delete(&[dev(Some("oem7.inf"), false), dev(Some("oem7.inf"), true)])
                .is_empty()
        );
        // Two removed on one package: listed once; another package with a
        // failed device stays; a device with no known package adds nothing.
        assert_eq!(
            packages_to_delete(&[
                dev(Some("oem7.inf"), true),
                dev(Some("oem7.inf"), true),
                dev(Some("oem9.inf"), false),
                dev(None, true),
                dev(None, false),
            ]),
            ["oem7.inf"]
        );
    }
}
