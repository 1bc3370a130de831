//! Questions to the machine that `install`, `verifier` and `acceptance`
//! ask before they change anything: elevation, test signing, Secure Boot,
//! registry values, the certificate store. Each FFI call names its docs
//! page; the declarations are windows-sys's (generated from Microsoft's
//! metadata for the header named).

use std::ptr::{null, null_mut};
use windows_sys::Wdk::System::SystemInformation::{
    NtQuerySystemInformation, SystemCodeIntegrityInformation,
};
use windows_sys::Win32::Foundation::ERROR_MORE_DATA;
use windows_sys::Win32::Foundation::{CloseHandle, ERROR_FILE_NOT_FOUND, ERROR_SUCCESS, HANDLE};
use windows_sys::Win32::Security::Cryptography::{
    CertCloseStore, CertFindCertificateInStore, CertFreeCertificateContext, CertOpenStore,
    CERT_FIND_SHA1_HASH, CERT_STORE_OPEN_EXISTING_FLAG, CERT_STORE_PROV_SYSTEM_W,
    CERT_STORE_READONLY_FLAG, CERT_SYSTEM_STORE_LOCAL_MACHINE, CRYPT_INTEGER_BLOB,
    X509_ASN_ENCODING,
};
use windows_sys::Win32::Security::{
    GetTokenInformation, TokenElevation, TOKEN_ELEVATION, TOKEN_QUERY,
};
use windows_sys::Win32::System::Registry::{
    RegCloseKey, RegCreateKeyExW, RegDeleteKeyValueW, RegGetValueW, RegOpenKeyExW, RegSetValueExW,
    HKEY, HKEY_LOCAL_MACHINE, KEY_QUERY_VALUE, KEY_SET_VALUE, REG_DWORD, REG_MULTI_SZ,
    REG_OPTION_NON_VOLATILE, REG_QWORD, RRF_RT_REG_DWORD, RRF_RT_REG_MULTI_SZ, RRF_RT_REG_QWORD,
    RRF_RT_REG_SZ,
};
use windows_sys::Win32::System::SystemInformation::GetTickCount64;
use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};
use windows_sys::Win32::System::WindowsProgramming::{
    CODEINTEGRITY_OPTION_TESTSIGN, SYSTEM_CODEINTEGRITY_INFORMATION,
};

use crate::vm::reboot::{self, Signals};

/// A NUL-terminated UTF-16 copy of `s`.
pub fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(std::iter::once(0)).collect()
}

/// A UTF-16 buffer up to its first NUL.
pub fn from_wide(w: &[u16]) -> String {
    let end = w.iter().position(|&c| c == 0).unwrap_or(w.len());
    String::from_utf16_lossy(&w[..end])
}

/// Is this process elevated? `GetTokenInformation(TokenElevation)`
/// (securitybaseapi.h; learn.microsoft.com/windows/win32/api/securitybaseapi/nf-securitybaseapi-gettokeninformation,
/// TOKEN_ELEVATION in winnt.h).
pub fn elevated() -> Result<bool, String> {
    let mut token: HANDLE = null_mut();
    // SAFETY: the pseudo-handle of this process; `token` is an out-parameter
    // (OpenProcessToken, processthreadsapi.h).
    let ok = unsafe { OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token) };
    if ok == 0 {
        return Err("OpenProcessToken failed".into());
    }
    let mut elevation = TOKEN_ELEVATION::default();
    let mut len = 0u32;
    // SAFETY: `elevation` is the TOKEN_ELEVATION this class returns, its
    // size passed; `len` is an out-parameter.
    let ok = unsafe {
        GetTokenInformation(
            token,
            TokenElevation,
            (&mut elevation as *mut TOKEN_ELEVATION).cast(),
            std::mem::size_of::<TOKEN_ELEVATION>() as u32,
            &mut len,
        )
    };
    // SAFETY: our token handle, closed once.
    unsafe { CloseHandle(token) };
    if ok == 0 {
        return Err("GetTokenInformation(TokenElevation) failed".into());
    }
    Ok(elevation.TokenIsElevated != 0)
}

/// Is test signing on? `NtQuerySystemInformation(SystemCodeIntegrityInformation)`
/// and `CODEINTEGRITY_OPTION_TESTSIGN` (winternl.h;
/// learn.microsoft.com/windows/win32/api/winternl/nf-winternl-ntquerysysteminformation,
/// which documents SYSTEM_CODEINTEGRITY_INFORMATION and the option bits).
pub fn test_signing() -> Result<bool, String> {
    let mut info = SYSTEM_CODEINTEGRITY_INFORMATION {
        Length: std::mem::size_of::<SYSTEM_CODEINTEGRITY_INFORMATION>() as u32,
        CodeIntegrityOptions: 0,
    };
    let mut len = 0u32;
    // SAFETY: `info` is the structure this class fills, Length set as the
    // page requires; `len` is an out-parameter.
    let status = unsafe {
        NtQuerySystemInformation(
            SystemCodeIntegrityInformation,
            (&mut info as *mut SYSTEM_CODEINTEGRITY_INFORMATION).cast(),
            info.Length,
            &mut len,
        )
    };
    if status < 0 {
        return Err(format!(
            "NtQuerySystemInformation(SystemCodeIntegrityInformation) failed: NTSTATUS {status:#x}"
        ));
    }
    Ok(info.CodeIntegrityOptions & CODEINTEGRITY_OPTION_TESTSIGN != 0)
}

/// Is Secure Boot on? PowerShell's `Confirm-SecureBootUEFI`
/// (learn.microsoft.com/powershell/module/secureboot/confirm-securebootuefi):
/// `True` or `False` on UEFI machines, "Cmdlet not supported on this
/// platform" on BIOS ones (no Secure Boot: off). Needs elevation.
pub fn secure_boot() -> Result<bool, String> {
    let out = std::process::Command::new("powershell.exe")
        .args([
            "-NoProfile",
            "-NonInteractive",
            "-Command",
            "Confirm-SecureBootUEFI",
        ])
        .output()
        .map_err(|e| format!("could not run powershell.exe: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    match stdout.trim() {
        "True" => Ok(true),
        "False" => Ok(false),
        _ if stderr.contains("not supported on this platform") => Ok(false),
        _ => Err(format!(
            "Confirm-SecureBootUEFI answered neither True nor False: {}",
            stderr.lines().next().unwrap_or("").trim()
        )),
    }
}

/// Seconds since boot: `GetTickCount64` (sysinfoapi.h;
/// learn.microsoft.com/windows/win32/api/sysinfoapi/nf-sysinfoapi-gettickcount64).
pub fn uptime_secs() -> u64 {
    // SAFETY: no arguments.
    unsafe { GetTickCount64() / 1000 }
}

/// Read a value under HKLM with `RegGetValueW` (winreg.h;
/// learn.microsoft.com/windows/win32/api/winreg/nf-winreg-reggetvaluew):
/// `Ok(None)` if the key or value does not exist.
fn get(subkey: &str, name: &str, flags: u32, data: &mut [u8]) -> Result<Option<usize>, String> {
    let key = wide(subkey);
    let value = wide(name);
    let mut len = data.len() as u32;
    // SAFETY: NUL-terminated names; `data` holds `len` bytes; the type is
    // not asked for.
    let err = unsafe {
        RegGetValueW(
            HKEY_LOCAL_MACHINE,
            key.as_ptr(),
            value.as_ptr(),
            flags,
            null_mut(),
            data.as_mut_ptr().cast(),
            &mut len,
        )
    };
    match err {
        ERROR_SUCCESS => Ok(Some(len as usize)),
        ERROR_FILE_NOT_FOUND => Ok(None),
        e => Err(format!("reading HKLM\\{subkey}\\{name}: Win32 error {e}")),
    }
}

/// A REG_DWORD under HKLM.
pub fn dword(subkey: &str, name: &str) -> Result<Option<u32>, String> {
    let mut data = [0u8; 4];
    Ok(get(subkey, name, RRF_RT_REG_DWORD, &mut data)?.map(|_| u32::from_le_bytes(data)))
}

/// A REG_QWORD under HKLM.
pub fn qword(subkey: &str, name: &str) -> Result<Option<u64>, String> {
    let mut data = [0u8; 8];
    Ok(get(subkey, name, RRF_RT_REG_QWORD, &mut data)?.map(|_| u64::from_le_bytes(data)))
}

/// A REG_SZ under HKLM (up to 32 KiB).
pub fn string(subkey: &str, name: &str) -> Result<Option<String>, String> {
    let mut data = vec![0u8; 32 * 1024];
    Ok(get(subkey, name, RRF_RT_REG_SZ, &mut data)?.map(|len| {
        let units: Vec<u16> = data[..len]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        from_wide(&units)
    }))
}

/// Does `subkey` exist under HKLM? `RegOpenKeyExW` with KEY_QUERY_VALUE
/// (winreg.h; learn.microsoft.com/windows/win32/api/winreg/nf-winreg-regopenkeyexw):
/// ERROR_FILE_NOT_FOUND is "no".
pub fn key_exists(subkey: &str) -> Result<bool, String> {
    let name = wide(subkey);
    let mut key: HKEY = null_mut();
    // SAFETY: NUL-terminated name; `key` is an out-parameter.
    let err = unsafe {
        RegOpenKeyExW(
            HKEY_LOCAL_MACHINE,
            name.as_ptr(),
            0,
            KEY_QUERY_VALUE,
            &mut key,
        )
    };
    match err {
        ERROR_SUCCESS => {
            // SAFETY: the key just opened, closed once.
            unsafe { RegCloseKey(key) };
            Ok(true)
        }
        ERROR_FILE_NOT_FOUND => Ok(false),
        e => Err(format!("opening HKLM\\{subkey}: Win32 error {e}")),
    }
}

/// A REG_MULTI_SZ under HKLM, split at every NUL with the empty strings
/// kept (PendingFileRenameOperations has them inside); `Ok(None)` if the key
/// or value does not exist. `RegGetValueW` asked for the size first, then
/// again if the value grew in between (ERROR_MORE_DATA).
pub fn multi_string(subkey: &str, name: &str) -> Result<Option<Vec<String>>, String> {
    let key = wide(subkey);
    let value = wide(name);
    for _ in 0..3 {
        let mut len = 0u32;
        // SAFETY: NUL-terminated names; no buffer: `len` receives the size.
        let err = unsafe {
            RegGetValueW(
                HKEY_LOCAL_MACHINE,
                key.as_ptr(),
                value.as_ptr(),
                RRF_RT_REG_MULTI_SZ,
                null_mut(),
                null_mut(),
                &mut len,
            )
        };
        match err {
            ERROR_SUCCESS => {}
            ERROR_FILE_NOT_FOUND => return Ok(None),
            e => return Err(format!("reading HKLM\\{subkey}\\{name}: Win32 error {e}")),
        }
        // u16 units, rounded up, and room for the terminator RegGetValueW adds.
        let mut data = vec![0u16; (len as usize).div_ceil(2) + 2];
        let mut got = (data.len() * 2) as u32;
        // SAFETY: NUL-terminated names; `data` holds `got` bytes.
        let err = unsafe {
            RegGetValueW(
                HKEY_LOCAL_MACHINE,
                key.as_ptr(),
                value.as_ptr(),
                RRF_RT_REG_MULTI_SZ,
                null_mut(),
                data.as_mut_ptr().cast(),
                &mut got,
            )
        };
        match err {
            ERROR_SUCCESS => {
                let units = &data[..(got as usize / 2).min(data.len())];
                return Ok(Some(
                    units
                        .split(|&c| c == 0)
                        .map(String::from_utf16_lossy)
                        .collect(),
                ));
            }
            ERROR_MORE_DATA => continue,
            ERROR_FILE_NOT_FOUND => return Ok(None),
            e => return Err(format!("reading HKLM\\{subkey}\\{name}: Win32 error {e}")),
        }
    }
    Err(format!(
        "reading HKLM\\{subkey}\\{name}: the value kept growing while read"
    ))
}

/// The registry's pending-reboot signals ([`crate::vm::reboot`] names each
/// one and its source); the judgement is the state machine's.
pub fn pending_reboot() -> Result<Signals, String> {
    Ok(Signals {
        component_servicing: key_exists(reboot::COMPONENT_SERVICING)?,
        windows_update: key_exists(reboot::WINDOWS_UPDATE)?,
        renames: multi_string(reboot::SESSION_MANAGER, reboot::PENDING_RENAMES)?
            .unwrap_or_default(),
    })
}

/// A value to write under HKLM.
pub enum Data<'a> {
    Dword(u32),
    Qword(u64),
    /// One string, as a REG_MULTI_SZ.
    MultiSz(&'a str),
}

/// Create `subkey` under HKLM if needed and set `name` in it:
/// `RegCreateKeyExW` and `RegSetValueExW` (winreg.h;
/// learn.microsoft.com/windows/win32/api/winreg/nf-winreg-regcreatekeyexw,
/// .../nf-winreg-regsetvalueexw).
pub fn set(subkey: &str, name: &str, data: Data) -> Result<(), String> {
    let key_name = wide(subkey);
    let mut key: HKEY = null_mut();
    // SAFETY: NUL-terminated name; `key` is an out-parameter; no class,
    // security attributes or disposition.
    let err = unsafe {
        RegCreateKeyExW(
            HKEY_LOCAL_MACHINE,
            key_name.as_ptr(),
            0,
            null(),
            REG_OPTION_NON_VOLATILE,
            KEY_SET_VALUE,
            null(),
            &mut key,
            null_mut(),
        )
    };
    if err != ERROR_SUCCESS {
        return Err(format!("creating HKLM\\{subkey}: Win32 error {err}"));
    }
    let (kind, bytes): (u32, Vec<u8>) = match data {
        Data::Dword(v) => (REG_DWORD, v.to_le_bytes().to_vec()),
        Data::Qword(v) => (REG_QWORD, v.to_le_bytes().to_vec()),
        Data::MultiSz(s) => (
            REG_MULTI_SZ,
            s.encode_utf16()
                .chain([0, 0])
                .flat_map(u16::to_le_bytes)
                .collect(),
        ),
    };
    let value = wide(name);
    // SAFETY: our open key; `bytes` holds the data in the type's layout.
    let err = unsafe {
        RegSetValueExW(
            key,
            value.as_ptr(),
            0,
            kind,
            bytes.as_ptr(),
            bytes.len() as u32,
        )
    };
    // SAFETY: our key, closed once.
    unsafe { RegCloseKey(key) };
    if err != ERROR_SUCCESS {
        return Err(format!("setting HKLM\\{subkey}\\{name}: Win32 error {err}"));
    }
    Ok(())
}

/// Delete a value under HKLM (gone already is fine): `RegDeleteKeyValueW`
/// (winreg.h; learn.microsoft.com/windows/win32/api/winreg/nf-winreg-regdeletekeyvaluew).
pub fn delete(subkey: &str, name: &str) -> Result<(), String> {
    let key = wide(subkey);
    let value = wide(name);
    // SAFETY: NUL-terminated names.
    let err = unsafe { RegDeleteKeyValueW(HKEY_LOCAL_MACHINE, key.as_ptr(), value.as_ptr()) };
    match err {
        ERROR_SUCCESS | ERROR_FILE_NOT_FOUND => Ok(()),
        e => Err(format!("deleting HKLM\\{subkey}\\{name}: Win32 error {e}")),
    }
}

/// Is the certificate with this SHA-1 thumbprint in the LocalMachine store
/// `store` ("MY", "Root")? `CertOpenStore(CERT_STORE_PROV_SYSTEM_W)` and
/// `CertFindCertificateInStore(CERT_FIND_SHA1_HASH)` (wincrypt.h;
/// learn.microsoft.com/windows/win32/api/wincrypt/nf-wincrypt-certopenstore,
/// .../nf-wincrypt-certfindcertificateinstore).
pub fn certificate_in(store: &str, thumbprint: &[u8; 20]) -> Result<bool, String> {
    let name = wide(store);
    // SAFETY: a system store by NUL-terminated name, read-only, existing.
    let handle = unsafe {
        CertOpenStore(
            CERT_STORE_PROV_SYSTEM_W,
            0,
            0,
            CERT_SYSTEM_STORE_LOCAL_MACHINE
                | CERT_STORE_READONLY_FLAG
                | CERT_STORE_OPEN_EXISTING_FLAG,
            name.as_ptr().cast(),
        )
    };
    if handle.is_null() {
        return Err(format!("opening LocalMachine\\{store} failed"));
    }
    let blob = CRYPT_INTEGER_BLOB {
        cbData: 20,
        pbData: thumbprint.as_ptr() as *mut u8,
    };
    // SAFETY: our store; the blob points at the 20 thumbprint bytes, which
    // outlive the call; no previous context.
    let found = unsafe {
        CertFindCertificateInStore(
            handle,
            X509_ASN_ENCODING,
            0,
            CERT_FIND_SHA1_HASH,
            (&blob as *const CRYPT_INTEGER_BLOB).cast(),
            null(),
        )
    };
    if !found.is_null() {
        // SAFETY: the context the find returned, freed once.
        unsafe { CertFreeCertificateContext(found) };
    }
    // SAFETY: our store, closed once.
    unsafe { CertCloseStore(handle, 0) };
    Ok(!found.is_null())
}
