//! The model's side of the FFI edge: reading and writing the caller's raw SSPI
//! structures (`SecBufferDesc`, `UNICODE_STRING`, `SCH_CREDENTIALS`) the way
//! ksecdd would. Every pointer it follows was handed to an `Sspi*` call whose
//! contract makes the caller keep it valid until the call completes. (The
//! model's other `unsafe` is the provider trait's own surface and the calls
//! into the callbacks and work items a driver registered.)

use ksspi::sys::{
    SecBuffer, SecBufferDesc, SCHANNEL_CERT_HASH_STORE, SCH_CREDENTIALS,
    SCH_CRED_FORMAT_CERT_HASH_STORE, SECBUFFER_VERSION, TLS_PARAMETERS, UNICODE_STRING,
};
use ksspi::SecStatus;

/// A raw pointer that may cross to a completion thread: the call's contract
/// keeps the pointee valid and unmoved until the call completes.
#[derive(Clone, Copy, Debug)]
pub struct CallPtr<T>(pub *mut T);

// SAFETY: the pointee is owned by the issuer, who keeps it valid and does not
// touch it until the call completes; the model uses it from one thread at a time.
unsafe impl<T> Send for CallPtr<T> {}

impl<T> CallPtr<T> {
    /// The pointer (a method, so closures capture the whole `Send` wrapper).
    pub fn get(self) -> *mut T {
        self.0
    }

    /// Null?
    pub fn is_null(&self) -> bool {
        self.0.is_null()
    }
}

/// The buffers of a descriptor.
///
/// # Safety
/// `desc` is null or points to a valid descriptor whose `pBuffers` points to
/// `cBuffers` buffers, valid and not aliased for `'a`.
pub unsafe fn buffers<'a>(desc: *mut SecBufferDesc) -> Result<&'a mut [SecBuffer], SecStatus> {
    // SAFETY: the caller guarantees `desc` is null or valid.
    let Some(desc) = (unsafe { desc.as_mut() }) else {
        return Ok(&mut []);
    };
    if desc.ulVersion != SECBUFFER_VERSION {
        return Err(SecStatus::SEC_E_INVALID_TOKEN);
    }
    if desc.cBuffers == 0 {
        return Ok(&mut []);
    }
    if desc.pBuffers.is_null() || desc.cBuffers > 64 {
        return Err(SecStatus::SEC_E_INVALID_PARAMETER);
    }
    // SAFETY: non-null, `cBuffers` entries, valid per the caller.
    Ok(unsafe { std::slice::from_raw_parts_mut(desc.pBuffers, desc.cBuffers as usize) })
}

/// The bytes a buffer describes.
///
/// # Safety
/// `buffer.pvBuffer` is null or points to `cbBuffer` readable bytes for `'a`.
pub unsafe fn bytes<'a>(buffer: &SecBuffer) -> Result<&'a [u8], SecStatus> {
    if buffer.cbBuffer == 0 {
        return Ok(&[]);
    }
    if buffer.pvBuffer.is_null() {
        return Err(SecStatus::SEC_E_INVALID_TOKEN);
    }
    // SAFETY: non-null with `cbBuffer` bytes per the caller.
    Ok(unsafe {
        std::slice::from_raw_parts(buffer.pvBuffer.cast::<u8>(), buffer.cbBuffer as usize)
    })
}

/// Copy `data` into a caller-supplied buffer; false if it does not fit.
///
/// # Safety
/// `buffer.pvBuffer` is null or points to `cbBuffer` writable bytes.
pub unsafe fn write_into(buffer: &mut SecBuffer, data: &[u8]) -> bool {
    if data.len() > buffer.cbBuffer as usize || (buffer.pvBuffer.is_null() && !data.is_empty()) {
        return false;
    }
    if !data.is_empty() {
        // SAFETY: capacity checked above; the regions cannot overlap (the data
        // is the model's own memory).
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), buffer.pvBuffer.cast::<u8>(), data.len())
        };
    }
    buffer.cbBuffer = data.len() as u32;
    true
}

/// A `UNICODE_STRING` as a Rust string (`None` for a null pointer).
///
/// # Safety
/// `s` is null or points to a valid `UNICODE_STRING` whose buffer holds
/// `Length` bytes.
pub unsafe fn unicode(s: *const UNICODE_STRING) -> Result<Option<String>, SecStatus> {
    // SAFETY: null or valid per the caller.
    let Some(s) = (unsafe { s.as_ref() }) else {
        return Ok(None);
    };
    if s.Length % 2 != 0 || s.Length > s.MaximumLength || (s.Buffer.is_null() && s.Length > 0) {
        return Err(SecStatus::SEC_E_INVALID_PARAMETER);
    }
    if s.Length == 0 {
        return Ok(Some(String::new()));
    }
    // SAFETY: `Length` bytes of UTF-16 per the caller.
    let units = unsafe { std::slice::from_raw_parts(s.Buffer, usize::from(s.Length) / 2) };
    String::from_utf16(units)
        .map(Some)
        .map_err(|_| SecStatus::SEC_E_INVALID_PARAMETER)
}

/// What the model reads out of an `SCH_CREDENTIALS`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchCredentials {
    /// `dwFlags`.
    pub flags: u32,
    /// `dwSessionLifespan` (milliseconds; 0: Schannel's default).
    pub session_lifespan: u32,
    /// The union of every `TLS_PARAMETERS.grbitDisabledProtocols`.
    pub disabled_protocols: u32,
    /// The certificate, as `SCH_CRED_FORMAT_CERT_HASH_STORE` names it.
    pub cert: Option<([u8; 20], String)>,
}

/// Read an `SCH_CREDENTIALS` (null: defaults).
///
/// # Safety
/// `p` is null or points to a valid `SCH_CREDENTIALS` whose pointers are valid.
pub unsafe fn sch_credentials(p: *const SCH_CREDENTIALS) -> Result<SchCredentials, SecStatus> {
    // SAFETY: null or valid per the caller.
    let Some(c) = (unsafe { p.as_ref() }) else {
        return Ok(SchCredentials {
            flags: 0,
            session_lifespan: 0,
            disabled_protocols: 0,
            cert: None,
        });
    };
    if c.dwVersion != ksspi::sys::SCH_CREDENTIALS_VERSION {
        return Err(SecStatus::SEC_E_UNKNOWN_CREDENTIALS);
    }
    let mut disabled = 0;
    if c.cTlsParameters > 0 {
        if c.pTlsParameters.is_null() || c.cTlsParameters > 16 {
            return Err(SecStatus::SEC_E_INVALID_PARAMETER);
        }
        // SAFETY: `cTlsParameters` entries per the caller.
        let params: &[TLS_PARAMETERS] =
            unsafe { std::slice::from_raw_parts(c.pTlsParameters, c.cTlsParameters as usize) };
        for t in params {
            disabled |= t.grbitDisabledProtocols;
        }
    }
    let cert = match c.cCreds {
        0 => None,
        1 if c.dwCredFormat == SCH_CRED_FORMAT_CERT_HASH_STORE && !c.paCred.is_null() => {
            // SAFETY: one entry (`cCreds` is 1), and `paCred` is not null
            // (checked by the arm's guard).
            let entry = unsafe { *c.paCred };
            // SAFETY: for this format the entry points to a
            // SCHANNEL_CERT_HASH_STORE (or is null: `as_ref` checks).
            let store = unsafe { entry.cast::<SCHANNEL_CERT_HASH_STORE>().as_ref() }
                .ok_or(SecStatus::SEC_E_INVALID_PARAMETER)?;
            if store.dwLength as usize != std::mem::size_of::<SCHANNEL_CERT_HASH_STORE>() {
                return Err(SecStatus::SEC_E_INVALID_PARAMETER);
            }
            let end = store
                .pwszStoreName
                .iter()
                .position(|&u| u == 0)
                .unwrap_or(128);
            let name = String::from_utf16(&store.pwszStoreName[..end])
                .map_err(|_| SecStatus::SEC_E_INVALID_PARAMETER)?;
            Some((store.ShaHash, name))
        }
        // Kernel Schannel takes certificates by hash; other forms are not modelled.
        _ => return Err(SecStatus::SEC_E_UNKNOWN_CREDENTIALS),
    };
    Ok(SchCredentials {
        flags: c.dwFlags,
        session_lifespan: c.dwSessionLifespan,
        disabled_protocols: disabled,
        cert,
    })
}
