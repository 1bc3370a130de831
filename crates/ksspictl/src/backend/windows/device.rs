//! The Windows backend: the installed driver, found through its device
//! interface (`GUID_DEVINTERFACE_KSSPI`), driven with overlapped
//! DeviceIoControl so several threads' requests (a pended STEP and others)
//! run at once on one handle.

use crate::backend::Driver;
use crate::Failure;
use ksspi_abi::GUID_DEVINTERFACE_KSSPI;
use std::ptr::{null, null_mut};
use windows_sys::core::GUID;
use windows_sys::Win32::Devices::DeviceAndDriverInstallation::{
    CM_Get_Device_Interface_ListW, CM_Get_Device_Interface_List_SizeW,
    CM_GET_DEVICE_INTERFACE_LIST_PRESENT, CR_BUFFER_SMALL, CR_SUCCESS,
};
use windows_sys::Win32::Foundation::{
    CloseHandle, GetLastError, ERROR_ACCESS_DENIED, ERROR_FILE_NOT_FOUND, ERROR_IO_PENDING,
    ERROR_PATH_NOT_FOUND, GENERIC_READ, GENERIC_WRITE, HANDLE, INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, FILE_FLAG_OVERLAPPED, FILE_SHARE_READ, FILE_SHARE_WRITE, OPEN_EXISTING,
};
use windows_sys::Win32::System::Threading::CreateEventW;
use windows_sys::Win32::System::IO::{DeviceIoControl, GetOverlappedResult, OVERLAPPED};

/// An open handle on the ksspi device.
pub struct WinDriver {
    handle: HANDLE,
}

// SAFETY: the handle is a kernel object handle, usable from any thread;
// overlapped I/O on it is thread-safe (each call has its own OVERLAPPED).
unsafe impl Send for WinDriver {}
// SAFETY: as above.
unsafe impl Sync for WinDriver {}

const INTERFACE: GUID = GUID {
    data1: GUID_DEVINTERFACE_KSSPI.data1,
    data2: GUID_DEVINTERFACE_KSSPI.data2,
    data3: GUID_DEVINTERFACE_KSSPI.data3,
    data4: GUID_DEVINTERFACE_KSSPI.data4,
};

const NOT_INSTALLED: &str = "the ksspi driver is not installed (no device with its interface \
     {52646557-6FD3-470B-97E8-DD55294BC57D}); see docs/WINDOWS.md: \
     pnputil /add-driver ksspi_driver.inf /install, then devgen /add /bus ROOT /hardwareid Root\\ksspi";

/// The not-installed guidance, whatever CfgMgr32 answered: Windows gives an
/// empty list when no device has the interface, Wine fails the call
/// (CR_FAILURE), and an answer other than success means no device either way.
fn not_installed(cfgmgr: Option<(&str, u32)>) -> Failure {
    match cfgmgr {
        None => Failure(NOT_INSTALLED.into()),
        Some((function, cr)) => Failure(format!(
            "{NOT_INSTALLED} ({function} answered CONFIGRET {cr})"
        )),
    }
}

/// The device path of the first present ksspi device.
fn device_path() -> Result<Vec<u16>, Failure> {
    loop {
        let mut len: u32 = 0;
        // SAFETY: out-parameter and GUID are valid for the call.
        let cr = unsafe {
            CM_Get_Device_Interface_List_SizeW(
                &mut len,
                &INTERFACE,
                null(),
                CM_GET_DEVICE_INTERFACE_LIST_PRESENT,
            )
        };
        if cr != CR_SUCCESS {
            return Err(not_installed(Some((
                "CM_Get_Device_Interface_List_SizeW",
                cr,
            ))));
        }
        if len <= 1 {
            // An empty multi-string: no device has the interface.
            return Err(not_installed(None));
        }
        let mut list = vec![0u16; len as usize];
        // SAFETY: `list` holds `len` UTF-16 units.
        let cr = unsafe {
            CM_Get_Device_Interface_ListW(
                &INTERFACE,
                null(),
                list.as_mut_ptr(),
                len,
                CM_GET_DEVICE_INTERFACE_LIST_PRESENT,
            )
        };
        if cr == CR_BUFFER_SMALL {
            continue; // a device arrived between the two calls
        }
        if cr != CR_SUCCESS {
            return Err(not_installed(Some(("CM_Get_Device_Interface_ListW", cr))));
        }
        // A multi-string: the first entry, if any.
        let end = list.iter().position(|&c| c == 0).unwrap_or(0);
        if end == 0 {
            return Err(not_installed(None));
        }
        let mut path = list[..end].to_vec();
        path.push(0);
        return Ok(path);
    }
}

/// Is a ksspi device's interface present (the driver installed and
/// started)?
pub fn interface_present() -> bool {
    device_path().is_ok()
}

impl WinDriver {
    /// Open the installed driver's device.
    pub fn open() -> Result<WinDriver, Failure> {
        let path = device_path()?;
        // SAFETY: a NUL-terminated path; no security attributes or template.
        let handle = unsafe {
            CreateFileW(
                path.as_ptr(),
                GENERIC_READ | GENERIC_WRITE,
                FILE_SHARE_READ | FILE_SHARE_WRITE,
                null(),
                OPEN_EXISTING,
                FILE_FLAG_OVERLAPPED,
                null_mut(),
            )
        };
        if handle == INVALID_HANDLE_VALUE {
            // SAFETY: no arguments.
            let err = unsafe { GetLastError() };
            if err == ERROR_ACCESS_DENIED {
                return Err(Failure(
                    "access denied opening the ksspi device: only SYSTEM and Administrators \
                     may open it; run ksspictl from an elevated prompt"
                        .into(),
                ));
            }
            if err == ERROR_FILE_NOT_FOUND || err == ERROR_PATH_NOT_FOUND {
                // The device went between the lookup and the open.
                return Err(not_installed(None));
            }
            return Err(Failure(format!(
                "opening the ksspi device failed: Win32 error {err}"
            )));
        }
        Ok(WinDriver { handle })
    }
}

impl Driver for WinDriver {
    fn backend(&self) -> &'static str {
        "windows"
    }

    fn call(&self, code: u32, input: &[u8], capacity: usize) -> Result<(i32, Vec<u8>), Failure> {
        let mut output = vec![0u8; capacity];
        // SAFETY: manual-reset, initially unsignalled, unnamed event.
        let event = unsafe { CreateEventW(null(), 1, 0, null()) };
        if event.is_null() {
            return Err(Failure("CreateEventW failed".into()));
        }
        // SAFETY: OVERLAPPED is plain data; zero is its initial state.
        let mut overlapped: OVERLAPPED = unsafe { std::mem::zeroed() };
        overlapped.hEvent = event;
        let mut returned: u32 = 0;
        // SAFETY: buffers, OVERLAPPED and event outlive the request: we wait
        // for its completion below before any of them goes.
        let ok = unsafe {
            DeviceIoControl(
                self.handle,
                code,
                input.as_ptr().cast(),
                input.len() as u32,
                output.as_mut_ptr().cast(),
                output.len() as u32,
                &mut returned,
                &mut overlapped,
            )
        };
        // SAFETY: no arguments.
        let err = if ok == 0 {
            unsafe { GetLastError() }
        } else {
            0
        };
        if ok == 0 && err != ERROR_IO_PENDING {
            // Refused before it pended: the I/O manager reports the NTSTATUS
            // only as a Win32 error here.
            // SAFETY: our event, never handed to the I/O manager's completion.
            unsafe { CloseHandle(event) };
            return Err(Failure(format!(
                "the driver refused the request: Win32 error {err}"
            )));
        }
        if ok == 0 {
            // SAFETY: as above; waits for the completion (bWait = TRUE).
            unsafe { GetOverlappedResult(self.handle, &overlapped, &mut returned, 1) };
        }
        // The request's NTSTATUS, as the I/O manager stored it in the
        // OVERLAPPED (Internal is the IO_STATUS_BLOCK's Status).
        let status = overlapped.Internal as i32;
        // SAFETY: our event, no longer used by the I/O manager.
        unsafe { CloseHandle(event) };
        output.truncate(returned as usize);
        Ok((status, output))
    }

    fn finish(self: Box<Self>) -> u64 {
        0
    }
}

impl Drop for WinDriver {
    fn drop(&mut self) {
        // SAFETY: our handle, closed once; the driver's cleanup closes any
        // session still open on it.
        unsafe { CloseHandle(self.handle) };
    }
}
