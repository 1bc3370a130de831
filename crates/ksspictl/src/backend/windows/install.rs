//! `install` and `uninstall` on Windows, through SetupAPI and newdev.
//!
//! Installing follows Microsoft's devcon sample (Windows-driver-samples,
//! `setup/devcon/cmds.cpp`, `cmdInstall` then `cmdUpdate`), which is what
//! `devgen /add` plus `pnputil /add-driver /install` amount to for a
//! root-enumerated device: the INF's class (`SetupDiGetINFClassW`), a new
//! device information element with a generated instance id
//! (`SetupDiCreateDeviceInfoList`, `SetupDiCreateDeviceInfoW(DICD_GENERATE_ID)`),
//! its hardware id (`SetupDiSetDeviceRegistryPropertyW(SPDRP_HARDWAREID)`,
//! a double-NUL-terminated list), registered as a devnode
//! (`SetupDiCallClassInstaller(DIF_REGISTERDEVICE)`), then the driver staged
//! and installed on it (`UpdateDriverForPlugAndPlayDevicesW(INSTALLFLAG_FORCE)`,
//! which copies the package into the driver store as pnputil does). If the
//! last step fails, the devnode is removed again (`DIF_REMOVE`), so a
//! failed install leaves no phantom device. Chosen over `SwDeviceCreate`
//! because a software device created that way lives only as long as the
//! process that created it unless it is re-created at each boot, and
//! driver.inx matches `Root\ksspi`, given to a root-enumerated device as
//! `devgen /add /bus ROOT` makes one.
//!
//! A device made the manual way may be enumerated elsewhere: a plain
//! `devgen /add /hardwareid "Root\ksspi"` (no `/bus ROOT`) makes a software
//! device, `SWD\DEVGEN\...`, gone after a reboot ("DevGen command syntax",
//! learn.microsoft.com/windows-hardware/drivers/devtest/devgen-command-syntax:
//! `/bus <SWD | ROOT>`, a software device by default). So the devices are
//! found by hardware id over every enumerator, not under `ROOT` only.
//!
//! Uninstalling removes each ksspi device (`DiUninstallDevice`, newdev.h)
//! and then the driver package it was installed from: the driver key's
//! `InfPath` (`SetupDiOpenDevRegKey(DIREG_DRV)`) names the `oemN.inf` in
//! the driver store, which `SetupUninstallOEMInfW` removes (what `pnputil
//! /delete-driver oemN.inf /uninstall` does). A package is removed only if
//! every device using it went: with `SUOI_FORCEDELETE` the INF goes
//! whether or not a device installed from it is still there (the
//! `setupuninstalloeminfw` page, Flags), so it would be taken from under a
//! device whose removal failed.
//!
//! The pages, on learn.microsoft.com/windows/win32/api/: setupapi.h
//! `setupapi/nf-setupapi-setupdigetinfclassw`, `-setupdicreatedeviceinfolist`,
//! `-setupdicreatedeviceinfow`, `-setupdisetdeviceregistrypropertyw`,
//! `-setupdicallclassinstaller`, `-setupdigetclassdevsw`,
//! `-setupdienumdeviceinfo`, `-setupdigetdeviceregistrypropertyw`,
//! `-setupdigetdeviceinstanceidw`, `-setupdiopendevregkey`,
//! `-setupdidestroydeviceinfolist`, `-setupuninstalloeminfw`; newdev.h
//! `newdev/nf-newdev-updatedriverforplugandplaydevicesw`,
//! `newdev/nf-newdev-diuninstalldevice`. The device interface is looked up
//! as the harness always does (`device.rs`, cfgmgr32.h
//! `CM_Get_Device_Interface_ListW`).

use super::device;
use super::machine::{elevated, from_wide, wide};
use crate::vm::inf::{self, HARDWARE_ID};
use crate::Failure;
use std::path::Path;
use std::ptr::{null, null_mut};
use std::time::{Duration, Instant};
use windows_sys::core::GUID;
use windows_sys::Win32::Devices::DeviceAndDriverInstallation::{
    DiUninstallDevice, SetupDiCallClassInstaller, SetupDiCreateDeviceInfoList,
    SetupDiCreateDeviceInfoW, SetupDiDestroyDeviceInfoList, SetupDiEnumDeviceInfo,
    SetupDiGetClassDevsW, SetupDiGetDeviceInstanceIdW, SetupDiGetDeviceRegistryPropertyW,
    SetupDiGetINFClassW, SetupDiOpenDevRegKey, SetupDiSetDeviceRegistryPropertyW,
    SetupUninstallOEMInfW, UpdateDriverForPlugAndPlayDevicesW, DICD_GENERATE_ID, DICS_FLAG_GLOBAL,
    DIF_REGISTERDEVICE, DIF_REMOVE, DIGCF_ALLCLASSES, DIGCF_PRESENT, DIREG_DRV, HDEVINFO,
    INSTALLFLAG_FORCE, MAX_CLASS_NAME_LEN, SPDRP_HARDWAREID, SP_DEVINFO_DATA, SUOI_FORCEDELETE,
};
use windows_sys::Win32::Foundation::{GetLastError, INVALID_HANDLE_VALUE};
use windows_sys::Win32::System::Registry::{RegCloseKey, RegGetValueW, KEY_READ, RRF_RT_REG_SZ};

const NOT_ELEVATED: &str = "not elevated: installing a driver needs an elevated prompt (Run as \
     administrator)";

/// A device information set, destroyed on drop.
struct DevInfo(HDEVINFO);

impl Drop for DevInfo {
    fn drop(&mut self) {
        // SAFETY: our set, destroyed once (SetupDiDestroyDeviceInfoList,
        // setupapi.h).
        unsafe { SetupDiDestroyDeviceInfoList(self.0) };
    }
}

/// A ksspi device found by its hardware id.
pub struct Found {
    /// Its device instance id (`ROOT\SOFTWAREDEVICE\0000` from `install`,
    /// `SWD\DEVGEN\...` from a plain `devgen /add`).
    pub instance_id: String,
}

/// The devices, under any enumerator, whose hardware ids include
/// `Root\ksspi` (`present`: only those present now; otherwise also the
/// non-present ones a reboot or unplug left behind), each with `visit`
/// called on it: `SetupDiGetClassDevsW(NULL, NULL, NULL, DIGCF_ALLCLASSES
/// [| DIGCF_PRESENT])` (no class GUID with DIGCF_ALLCLASSES: every setup
/// class; a NULL enumerator: "if an enumeration value is not used to select
/// devices", every enumerator), `SetupDiEnumDeviceInfo`,
/// `SetupDiGetDeviceRegistryPropertyW(SPDRP_HARDWAREID)`, matched by
/// [`inf::lists_hardware_id`] (setupapi.h;
/// learn.microsoft.com/windows/win32/api/setupapi/nf-setupapi-setupdigetclassdevsw).
fn each_device(
    present: bool,
    mut visit: impl FnMut(HDEVINFO, &SP_DEVINFO_DATA, Found),
) -> Result<(), Failure> {
    let flags = DIGCF_ALLCLASSES | if present { DIGCF_PRESENT } else { 0 };
    // SAFETY: no class GUID (all classes), no enumerator (all), no window.
    let set = unsafe { SetupDiGetClassDevsW(null(), null(), null_mut(), flags) };
    if set == INVALID_HANDLE_VALUE as HDEVINFO {
        // SAFETY: no arguments.
        let err = unsafe { GetLastError() };
        return Err(Failure(format!(
            "listing devices failed: Win32 error {err}"
        )));
    }
    let set = DevInfo(set);
    for index in 0.. {
        let mut data = SP_DEVINFO_DATA {
            cbSize: std::mem::size_of::<SP_DEVINFO_DATA>() as u32,
            ..Default::default()
        };
        // SAFETY: our set; `data` with its cbSize set, as the page requires.
        if unsafe { SetupDiEnumDeviceInfo(set.0, index, &mut data) } == 0 {
            break; // ERROR_NO_MORE_ITEMS
        }
        let mut ids = [0u16; 1024];
        let mut kind = 0u32;
        // SAFETY: `ids` holds the byte count passed.
        let ok = unsafe {
            SetupDiGetDeviceRegistryPropertyW(
                set.0,
                &data,
                SPDRP_HARDWAREID,
                &mut kind,
                ids.as_mut_ptr().cast(),
                std::mem::size_of_val(&ids) as u32,
                null_mut(),
            )
        };
        if ok == 0 {
            continue; // no hardware id
        }
        if !inf::lists_hardware_id(&ids) {
            continue;
        }
        let mut instance = [0u16; 512];
        // SAFETY: `instance` holds the count of UTF-16 units passed
        // (SetupDiGetDeviceInstanceIdW, setupapi.h).
        let ok = unsafe {
            SetupDiGetDeviceInstanceIdW(
                set.0,
                &data,
                instance.as_mut_ptr(),
                instance.len() as u32,
                null_mut(),
            )
        };
        let instance_id = if ok != 0 {
            from_wide(&instance)
        } else {
            "(unknown instance id)".into()
        };
        visit(set.0, &data, Found { instance_id });
    }
    Ok(())
}

/// The ksspi devices present now.
pub fn present() -> Result<Vec<String>, Failure> {
    let mut ids = Vec::new();
    each_device(true, |_, _, found| ids.push(found.instance_id))?;
    Ok(ids)
}

/// Check the INF `path` names for this machine: the one line for anything
/// wrong (missing, the template, another architecture, files missing).
pub fn check_inf(path: &Path) -> Result<(), Failure> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        Failure(format!(
            "no INF at {shown} ({e}): build the package (cargo make) and pass its \
             ksspi_driver.inf"
        ))
    })?;
    let arch = inf::inf_arch(std::env::consts::ARCH).unwrap_or("amd64");
    let checked = inf::check(&shown, &text, arch).map_err(|e| Failure(e.0))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    if let Some(missing) = checked.missing(&shown, |f| dir.join(f).is_file()) {
        return Err(Failure(missing.0));
    }
    Ok(())
}

/// `ksspictl install --inf PATH`.
pub fn install(inf_path: &Path) -> Result<(), Failure> {
    check_inf(inf_path)?;
    if !elevated().map_err(Failure)? {
        return Err(Failure(NOT_ELEVATED.into()));
    }
    let existing = present()?;
    if let Some(id) = existing.first() {
        return Err(Failure(format!(
            "a ksspi device is already present ({id}): `ksspictl uninstall` first, or \
             `pnputil /add-driver ksspi_driver.inf /install` to update its driver"
        )));
    }
    // The full path, as UpdateDriverForPlugAndPlayDevicesW requires (devcon
    // calls GetFullPathName for it).
    let full = std::path::absolute(inf_path)
        .map_err(|e| Failure(format!("{}: {e}", inf_path.display())))?;
    let full_w = wide(&full.display().to_string());
    let reboot = create_and_install(&full_w)?;
    println!("installed: the ksspi device (Root\\ksspi) and its driver package");
    if reboot {
        println!(
            "Windows asks for a reboot to finish the install: shutdown /r /t 0 (the device \
             interface appears after it)"
        );
        return Ok(());
    }
    wait_for_interface(Duration::from_secs(30))?;
    println!("the device interface is up: `ksspictl info` reaches the driver");
    Ok(())
}

/// The devcon sequence; true if Windows asks for a reboot.
fn create_and_install(inf: &[u16]) -> Result<bool, Failure> {
    let mut class = GUID::from_u128(0);
    let mut class_name = [0u16; MAX_CLASS_NAME_LEN as usize];
    // SAFETY: NUL-terminated INF path; `class_name` holds the count passed
    // (SetupDiGetINFClassW, setupapi.h).
    let ok = unsafe {
        SetupDiGetINFClassW(
            inf.as_ptr(),
            &mut class,
            class_name.as_mut_ptr(),
            class_name.len() as u32,
            null_mut(),
        )
    };
    if ok == 0 {
        return Err(last_error("SetupDiGetINFClassW (reading the INF's class)"));
    }
    // SAFETY: the INF's class GUID; no window (SetupDiCreateDeviceInfoList).
    let set = unsafe { SetupDiCreateDeviceInfoList(&class, null_mut()) };
    if set == INVALID_HANDLE_VALUE as HDEVINFO {
        return Err(last_error("SetupDiCreateDeviceInfoList"));
    }
    let set = DevInfo(set);
    let mut data = SP_DEVINFO_DATA {
        cbSize: std::mem::size_of::<SP_DEVINFO_DATA>() as u32,
        ..Default::default()
    };
    // SAFETY: our set; the class name as the device name with a generated
    // instance id, as devcon does; `data` with its cbSize set.
    let ok = unsafe {
        SetupDiCreateDeviceInfoW(
            set.0,
            class_name.as_ptr(),
            &class,
            null(),
            null_mut(),
            DICD_GENERATE_ID,
            &mut data,
        )
    };
    if ok == 0 {
        return Err(last_error("SetupDiCreateDeviceInfoW"));
    }
    // The hardware id list: one id, double-NUL-terminated.
    let ids: Vec<u16> = HARDWARE_ID.encode_utf16().chain([0, 0]).collect();
    // SAFETY: our set and element; `ids` holds the byte count passed.
    let ok = unsafe {
        SetupDiSetDeviceRegistryPropertyW(
            set.0,
            &mut data,
            SPDRP_HARDWAREID,
            ids.as_ptr().cast(),
            (ids.len() * 2) as u32,
        )
    };
    if ok == 0 {
        return Err(last_error(
            "SetupDiSetDeviceRegistryPropertyW(SPDRP_HARDWAREID)",
        ));
    }
    // SAFETY: our set and element (SetupDiCallClassInstaller, setupapi.h).
    if unsafe { SetupDiCallClassInstaller(DIF_REGISTERDEVICE, set.0, &data) } == 0 {
        return Err(last_error("SetupDiCallClassInstaller(DIF_REGISTERDEVICE)"));
    }
    let hwid = wide(HARDWARE_ID);
    let mut reboot = 0;
    // SAFETY: NUL-terminated id and full INF path; `reboot` an
    // out-parameter (UpdateDriverForPlugAndPlayDevicesW, newdev.h;
    // learn.microsoft.com/windows/win32/api/newdev/nf-newdev-updatedriverforplugandplaydevicesw).
    let ok = unsafe {
        UpdateDriverForPlugAndPlayDevicesW(
            null_mut(),
            hwid.as_ptr(),
            inf.as_ptr(),
            INSTALLFLAG_FORCE,
            &mut reboot,
        )
    };
    if ok == 0 {
        let failure = last_error("UpdateDriverForPlugAndPlayDevicesW (installing the driver)");
        // Leave no device without a driver behind.
        // SAFETY: our set and the element just registered.
        unsafe { SetupDiCallClassInstaller(DIF_REMOVE, set.0, &data) };
        return Err(Failure(format!(
            "{}; if Windows refused the signature: test signing on (bcdedit /set testsigning \
             on, reboot) and the package's certificate trusted (certutil -addstore root \
             WDRLocalTestCert.cer; certutil -addstore TrustedPublisher WDRLocalTestCert.cer)",
            failure.0
        )));
    }
    Ok(reboot != 0)
}

fn last_error(what: &str) -> Failure {
    // SAFETY: no arguments.
    let err = unsafe { GetLastError() };
    Failure(format!("{what} failed: Win32 error {err} ({err:#x})"))
}

/// Wait until the device interface is there (the driver loaded and created
/// it), polling CM_Get_Device_Interface_ListW through [`device`].
pub fn wait_for_interface(limit: Duration) -> Result<Duration, Failure> {
    let started = Instant::now();
    loop {
        if device::interface_present() {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            return Err(Failure(format!(
                "the device is installed but its interface did not appear within {} s: the \
                 driver did not start; `pnputil /enum-devices /class SoftwareDevice` shows \
                 its problem code",
                limit.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The `oemN.inf` a device's driver was installed from: the driver key's
/// `InfPath` (SetupDiOpenDevRegKey, setupapi.h; RegGetValueW, winreg.h).
fn inf_of(set: HDEVINFO, data: &SP_DEVINFO_DATA) -> Option<String> {
    // SAFETY: our set and element; read access to the driver key.
    let key = unsafe { SetupDiOpenDevRegKey(set, data, DICS_FLAG_GLOBAL, 0, DIREG_DRV, KEY_READ) };
    if std::ptr::eq(key, INVALID_HANDLE_VALUE) {
        return None;
    }
    let name = wide("InfPath");
    let mut buf = [0u16; 260];
    let mut len = std::mem::size_of_val(&buf) as u32;
    // SAFETY: our open key; `buf` holds `len` bytes.
    let err = unsafe {
        RegGetValueW(
            key,
            null(),
            name.as_ptr(),
            RRF_RT_REG_SZ,
            null_mut(),
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    // SAFETY: our key, closed once.
    unsafe { RegCloseKey(key) };
    (err == 0).then(|| from_wide(&buf))
}

/// `ksspictl uninstall`.
pub fn uninstall() -> Result<(), Failure> {
    if !elevated().map_err(Failure)? {
        return Err(Failure(
            "not elevated: removing a driver needs an elevated prompt (Run as administrator)"
                .into(),
        ));
    }
    let mut removed = Vec::new();
    // Each device's package and whether it went: a package is deleted only
    // if no device left behind uses it (inf::packages_to_delete).
    let mut devices: Vec<(Option<String>, bool)> = Vec::new();
    let mut reboot = false;
    let mut failures = Vec::new();
    each_device(false, |set, data, found| {
        // Read before the removal: the driver key goes with the device.
        let inf = inf_of(set, data);
        let mut need = 0;
        // SAFETY: our set and element, no window, no flags (DiUninstallDevice,
        // newdev.h; learn.microsoft.com/windows/win32/api/newdev/nf-newdev-diuninstalldevice).
        let ok = unsafe { DiUninstallDevice(null_mut(), set, data, 0, &mut need) } != 0;
        if ok {
            reboot |= need != 0;
            removed.push(found.instance_id);
        } else {
            let error = last_error("DiUninstallDevice").0;
            let kept = match &inf {
                Some(inf) => format!("its driver package {inf} kept"),
                None => "its driver package kept".into(),
            };
            failures.push(format!(
                "{}: {error}; {kept}: close what has the device open (or reboot) and run \
                 `ksspictl uninstall` again",
                found.instance_id,
            ));
        }
        devices.push((inf, ok));
    })?;
    let packages = inf::packages_to_delete(&devices);
    if removed.is_empty() && failures.is_empty() {
        return Err(Failure(
            "no ksspi device (Root\\ksspi) found: nothing to uninstall; a package still staged \
             shows in `pnputil /enum-drivers` (remove it with pnputil /delete-driver oemN.inf \
             /uninstall)"
                .into(),
        ));
    }
    for id in &removed {
        println!("removed device {id}");
    }
    for inf in &packages {
        let w = wide(inf);
        // SAFETY: the NUL-terminated oemN.inf name; no reserved pointer
        // (SetupUninstallOEMInfW, setupapi.h;
        // learn.microsoft.com/windows/win32/api/setupapi/nf-setupapi-setupuninstalloeminfw).
        if unsafe { SetupUninstallOEMInfW(w.as_ptr(), SUOI_FORCEDELETE, null()) } != 0 {
            println!("removed driver package {inf}");
        } else {
            failures.push(format!("{inf}: {}", last_error("SetupUninstallOEMInfW").0));
        }
    }
    if reboot {
        println!("Windows asks for a reboot to finish the removal: shutdown /r /t 0");
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Failure(format!(
            "not everything was removed: {}",
            failures.join("; ")
        )))
    }
}
