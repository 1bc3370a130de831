//! `sspi.h` (kernel mode, `ISSP_MODE == 0`): handles, buffers, time stamps,
//! strings and the flag constants the TLS handshake and record layer use.

use super::abi::{abi_consts, abi_structs, CType};
use core::ffi::c_void;
use core::ptr;

/// `struct _SspiAsyncContext` (sspi.h): opaque, only ever seen through a pointer.
#[repr(C)]
pub struct SspiAsyncContext {
    _opaque: [u8; 0],
    _not_send_sync_unpin: core::marker::PhantomData<(*mut u8, core::marker::PhantomPinned)>,
}

impl CType for SspiAsyncContext {
    const C: &'static str = "SspiAsyncContext";
}

/// `SspiAsyncNotifyCallback` (sspi.h): `void (*)(SspiAsyncContext*, PVOID)`.
pub type SspiAsyncNotifyCallback =
    Option<unsafe extern "system" fn(handle: *mut SspiAsyncContext, callback_data: *mut c_void)>;

impl CType for SspiAsyncNotifyCallback {
    const C: &'static str = "SspiAsyncNotifyCallback";
}

/// `SEC_GET_KEY_FN` (sspi.h); always NULL for Schannel.
pub type SecGetKeyFn = Option<
    unsafe extern "system" fn(
        arg: *mut c_void,
        principal: *mut c_void,
        key_ver: u32,
        key: *mut *mut c_void,
        status: *mut i32,
    ),
>;

impl CType for SecGetKeyFn {
    const C: &'static str = "SEC_GET_KEY_FN";
}

abi_structs! { SSPI_STRUCTS:
    /// `SecHandle` (sspi.h), also `CredHandle` and `CtxtHandle`.
    #[derive(PartialEq, Eq, Hash)]
    pub struct SecHandle {
        pub dwLower: usize,
        pub dwUpper: usize,
    }

    /// `SecBuffer` (sspi.h).
    pub struct SecBuffer {
        pub cbBuffer: u32,
        pub BufferType: u32,
        pub pvBuffer: *mut c_void,
    }

    /// `SecBufferDesc` (sspi.h).
    pub struct SecBufferDesc {
        pub ulVersion: u32,
        pub cBuffers: u32,
        pub pBuffers: *mut SecBuffer,
    }

    /// `TimeStamp` (sspi.h): a `LARGE_INTEGER` in 100 ns units since 1601.
    #[derive(Default, PartialEq, Eq)]
    pub struct TimeStamp {
        pub QuadPart: i64,
    }

    /// `UNICODE_STRING` (ntdef.h), which kernel-mode sspi.h uses as `SECURITY_STRING`:
    /// lengths in bytes, not NUL-terminated.
    pub struct UNICODE_STRING {
        pub Length: u16,
        pub MaximumLength: u16,
        pub Buffer: *mut u16,
    }

    /// `SecPkgContext_StreamSizes` (sspi.h), from `SECPKG_ATTR_STREAM_SIZES`.
    #[derive(Default, PartialEq, Eq)]
    pub struct SecPkgContext_StreamSizes {
        pub cbHeader: u32,
        pub cbTrailer: u32,
        pub cbMaximumMessage: u32,
        pub cBuffers: u32,
        pub cbBlockSize: u32,
    }

    /// `SEC_APPLICATION_PROTOCOL_LIST` (sspi.h): one negotiation extension's
    /// protocol IDs, each 8-bit length-prefixed, most preferred first.
    /// `ProtocolList` is `ANYSIZE_ARRAY`: the list runs on for
    /// `ProtocolListSize` bytes past the structure's start
    /// ([`SEC_APPLICATION_PROTOCOL_LIST_HEADER`] bytes in).
    pub struct SEC_APPLICATION_PROTOCOL_LIST {
        /// `SEC_APPLICATION_PROTOCOL_NEGOTIATION_EXT`.
        pub ProtoNegoExt: u32,
        pub ProtocolListSize: u16,
        pub ProtocolList: [u8; 1],
    }

    /// `SEC_APPLICATION_PROTOCOLS` (sspi.h), the `SECBUFFER_APPLICATION_PROTOCOLS`
    /// input buffer's contents: `ProtocolListsSize` bytes of
    /// [`SEC_APPLICATION_PROTOCOL_LIST`]s follow the size (`ANYSIZE_ARRAY`).
    pub struct SEC_APPLICATION_PROTOCOLS {
        pub ProtocolListsSize: u32,
        pub ProtocolLists: [SEC_APPLICATION_PROTOCOL_LIST; 1],
    }

    /// `SecPkgContext_ApplicationProtocol` (sspi.h), from
    /// `SECPKG_ATTR_APPLICATION_PROTOCOL`.
    pub struct SecPkgContext_ApplicationProtocol {
        /// `SEC_APPLICATION_PROTOCOL_NEGOTIATION_STATUS`.
        pub ProtoNegoStatus: u32,
        /// `SEC_APPLICATION_PROTOCOL_NEGOTIATION_EXT`.
        pub ProtoNegoExt: u32,
        pub ProtocolIdSize: u8,
        pub ProtocolId: [u8; MAX_PROTOCOL_ID_SIZE as usize],
    }

    /// `SecurityFunctionTableW` (sspi.h), returned by `InitSecurityInterfaceW`.
    /// Only the entries ksspi calls are typed; the rest are opaque pointers.
    pub struct SecurityFunctionTableW {
        pub dwVersion: u32,
        pub EnumerateSecurityPackagesW: *mut c_void,
        pub QueryCredentialsAttributesW: *mut c_void,
        pub AcquireCredentialsHandleW: *mut c_void,
        pub FreeCredentialsHandle: *mut c_void,
        pub Reserved2: *mut c_void,
        pub InitializeSecurityContextW: *mut c_void,
        pub AcceptSecurityContext: *mut c_void,
        pub CompleteAuthToken: *mut c_void,
        pub DeleteSecurityContext: *mut c_void,
        pub ApplyControlToken: Option<ApplyControlTokenFn>,
        pub QueryContextAttributesW: Option<QueryContextAttributesFn>,
        pub ImpersonateSecurityContext: *mut c_void,
        pub RevertSecurityContext: *mut c_void,
        pub MakeSignature: *mut c_void,
        pub VerifySignature: *mut c_void,
        pub FreeContextBuffer: Option<FreeContextBufferFn>,
        pub QuerySecurityPackageInfoW: *mut c_void,
        pub Reserved3: *mut c_void,
        pub Reserved4: *mut c_void,
        pub ExportSecurityContext: *mut c_void,
        pub ImportSecurityContextW: *mut c_void,
        pub AddCredentialsW: *mut c_void,
        pub Reserved8: *mut c_void,
        pub QuerySecurityContextToken: *mut c_void,
        pub EncryptMessage: Option<EncryptMessageFn>,
        pub DecryptMessage: Option<DecryptMessageFn>,
        pub SetContextAttributesW: *mut c_void,
        pub SetCredentialsAttributesW: *mut c_void,
        pub Reserved9: *mut c_void,
        pub QueryContextAttributesExW: *mut c_void,
        pub QueryCredentialsAttributesExW: *mut c_void,
    }
}

/// `APPLY_CONTROL_TOKEN_FN` (sspi.h).
pub type ApplyControlTokenFn =
    unsafe extern "system" fn(context: *mut SecHandle, input: *mut SecBufferDesc) -> i32;
/// `QUERY_CONTEXT_ATTRIBUTES_FN_W` (sspi.h).
pub type QueryContextAttributesFn =
    unsafe extern "system" fn(context: *mut SecHandle, attribute: u32, buffer: *mut c_void) -> i32;
/// `FREE_CONTEXT_BUFFER_FN` (sspi.h).
pub type FreeContextBufferFn = unsafe extern "system" fn(buffer: *mut c_void) -> i32;
/// `ENCRYPT_MESSAGE_FN` (sspi.h).
pub type EncryptMessageFn = unsafe extern "system" fn(
    context: *mut SecHandle,
    qop: u32,
    message: *mut SecBufferDesc,
    seq: u32,
) -> i32;
/// `DECRYPT_MESSAGE_FN` (sspi.h).
pub type DecryptMessageFn = unsafe extern "system" fn(
    context: *mut SecHandle,
    message: *mut SecBufferDesc,
    seq: u32,
    qop: *mut u32,
) -> i32;

/// `SspiAsyncContextRequiresNotify` (sspi.h:
/// `BOOLEAN SspiAsyncContextRequiresNotify(SspiAsyncContext* AsyncContext);`),
/// as a pointer: ksspi never imports it (neither mingw-w64's `libksecdd.a` nor
/// Wine's `ksecdd.sys.spec` lists it, and one missing import stops a driver
/// from loading), and looks it up at run time instead (`ksspi::ksecdd`, Windows only).
pub type SspiAsyncContextRequiresNotifyFn =
    unsafe extern "system" fn(context: *mut SspiAsyncContext) -> u8;

/// `CredHandle` (sspi.h).
pub type CredHandle = SecHandle;
/// `CtxtHandle` (sspi.h).
pub type CtxtHandle = SecHandle;

impl SecHandle {
    /// `SecInvalidateHandle`: both words `(ULONG_PTR)(INT_PTR)-1`.
    pub const INVALID: SecHandle = SecHandle {
        dwLower: usize::MAX,
        dwUpper: usize::MAX,
    };

    /// `SecIsValidHandle`.
    pub const fn is_valid(&self) -> bool {
        self.dwLower != usize::MAX && self.dwUpper != usize::MAX
    }
}

impl Default for SecHandle {
    fn default() -> Self {
        SecHandle::INVALID
    }
}

impl SecBuffer {
    /// An empty buffer of the given type (no memory), for output slots the
    /// provider fills (`SECBUFFER_EMPTY`, `SECBUFFER_EXTRA`, `SECBUFFER_MISSING`).
    pub const fn empty(buffer_type: u32) -> Self {
        SecBuffer {
            cbBuffer: 0,
            BufferType: buffer_type,
            pvBuffer: ptr::null_mut(),
        }
    }

    /// The buffer's type without the attribute bits (`SECBUFFER_ATTRMASK`).
    pub const fn kind(&self) -> u32 {
        self.BufferType & !SECBUFFER_ATTRMASK
    }
}

/// Bytes of a [`SEC_APPLICATION_PROTOCOL_LIST`] before its `ProtocolList`
/// (`FIELD_OFFSET(SEC_APPLICATION_PROTOCOL_LIST, ProtocolList)`).
pub const SEC_APPLICATION_PROTOCOL_LIST_HEADER: usize =
    core::mem::offset_of!(SEC_APPLICATION_PROTOCOL_LIST, ProtocolList);

/// Bytes of a [`SEC_APPLICATION_PROTOCOLS`] before its `ProtocolLists`
/// (`FIELD_OFFSET(SEC_APPLICATION_PROTOCOLS, ProtocolLists)`).
pub const SEC_APPLICATION_PROTOCOLS_HEADER: usize =
    core::mem::offset_of!(SEC_APPLICATION_PROTOCOLS, ProtocolLists);

impl SecPkgContext_ApplicationProtocol {
    /// All zero: status `None`, extension `None`, no protocol.
    pub const ZEROED: Self = SecPkgContext_ApplicationProtocol {
        ProtoNegoStatus: SecApplicationProtocolNegotiationStatus_None,
        ProtoNegoExt: SecApplicationProtocolNegotiationExt_None,
        ProtocolIdSize: 0,
        ProtocolId: [0; MAX_PROTOCOL_ID_SIZE as usize],
    };

    /// The negotiated protocol ID: `Some` only when the status is
    /// `Success` and the extension ALPN (and the size is within the array).
    pub fn alpn(&self) -> Option<&[u8]> {
        (self.ProtoNegoStatus == SecApplicationProtocolNegotiationStatus_Success
            && self.ProtoNegoExt == SecApplicationProtocolNegotiationExt_ALPN
            && self.ProtocolIdSize > 0)
            .then(|| self.ProtocolId.get(..self.ProtocolIdSize as usize))
            .flatten()
    }
}

impl PartialEq for SecPkgContext_ApplicationProtocol {
    fn eq(&self, other: &Self) -> bool {
        self.ProtoNegoStatus == other.ProtoNegoStatus
            && self.ProtoNegoExt == other.ProtoNegoExt
            && self.ProtocolIdSize == other.ProtocolIdSize
            && self.ProtocolId == other.ProtocolId
    }
}

impl Eq for SecPkgContext_ApplicationProtocol {}

impl SecBufferDesc {
    /// A `SECBUFFER_VERSION` descriptor over `buffers`. The descriptor holds a raw
    /// pointer: it must not outlive `buffers`, nor be used after they move.
    pub fn new(buffers: &mut [SecBuffer]) -> Self {
        SecBufferDesc {
            ulVersion: SECBUFFER_VERSION,
            cBuffers: buffers.len() as u32,
            pBuffers: buffers.as_mut_ptr(),
        }
    }
}

/// An ASCII string's UTF-16 code units, at compile time (for the
/// `UNICODE_STRING`s the kernel wants: names to look up, an SDDL string).
/// `N` must be the string's length, and the string must be ASCII.
pub const fn ascii_utf16<const N: usize>(s: &str) -> [u16; N] {
    let bytes = s.as_bytes();
    assert!(bytes.len() == N);
    let mut out = [0u16; N];
    let mut i = 0;
    while i < N {
        assert!(bytes[i].is_ascii());
        out[i] = bytes[i] as u16;
        i += 1;
    }
    out
}

impl UNICODE_STRING {
    /// A counted string over UTF-16 code units (no terminator needed). `None`
    /// when the string is too long for a `UNICODE_STRING` (over 32 767 units).
    pub fn from_units(units: &mut [u16]) -> Option<Self> {
        let bytes = u16::try_from(units.len().checked_mul(2)?).ok()?;
        Some(UNICODE_STRING {
            Length: bytes,
            MaximumLength: bytes,
            Buffer: units.as_mut_ptr(),
        })
    }
}

abi_consts! { SSPI_CONSTANTS:
    SECBUFFER_VERSION: u32 = 0;
    SECBUFFER_EMPTY: u32 = 0;
    SECBUFFER_DATA: u32 = 1;
    SECBUFFER_TOKEN: u32 = 2;
    SECBUFFER_PKG_PARAMS: u32 = 3;
    SECBUFFER_MISSING: u32 = 4;
    SECBUFFER_EXTRA: u32 = 5;
    SECBUFFER_STREAM_TRAILER: u32 = 6;
    SECBUFFER_STREAM_HEADER: u32 = 7;
    SECBUFFER_NEGOTIATION_INFO: u32 = 8;
    SECBUFFER_PADDING: u32 = 9;
    SECBUFFER_STREAM: u32 = 10;
    SECBUFFER_TARGET_HOST: u32 = 16;
    SECBUFFER_ALERT: u32 = 17;
    SECBUFFER_APPLICATION_PROTOCOLS: u32 = 18;
    SECBUFFER_ATTRMASK: u32 = 0xF000_0000;
    SECBUFFER_READONLY: u32 = 0x8000_0000;
    SECBUFFER_READONLY_WITH_CHECKSUM: u32 = 0x1000_0000;
    SECBUFFER_RESERVED: u32 = 0x6000_0000;

    SECURITY_NATIVE_DREP: u32 = 0x10;

    SECPKG_CRED_INBOUND: u32 = 0x1;
    SECPKG_CRED_OUTBOUND: u32 = 0x2;
    SECPKG_CRED_BOTH: u32 = 0x3;
    SECPKG_CRED_DEFAULT: u32 = 0x4;
    SECPKG_CRED_RESERVED: u32 = 0xF000_0000;

    SECPKG_ATTR_SIZES: u32 = 0;
    SECPKG_ATTR_NAMES: u32 = 1;
    SECPKG_ATTR_STREAM_SIZES: u32 = 4;
    SECPKG_ATTR_APPLICATION_PROTOCOL: u32 = 35;
    SECPKG_ATTR_CIPHER_INFO: u32 = 0x64;

    #[allow(non_upper_case_globals)]
    SecApplicationProtocolNegotiationExt_None: u32 = 0;
    #[allow(non_upper_case_globals)]
    SecApplicationProtocolNegotiationExt_NPN: u32 = 1;
    #[allow(non_upper_case_globals)]
    SecApplicationProtocolNegotiationExt_ALPN: u32 = 2;
    #[allow(non_upper_case_globals)]
    SecApplicationProtocolNegotiationStatus_None: u32 = 0;
    #[allow(non_upper_case_globals)]
    SecApplicationProtocolNegotiationStatus_Success: u32 = 1;
    #[allow(non_upper_case_globals)]
    SecApplicationProtocolNegotiationStatus_SelectedClientOnly: u32 = 2;
    MAX_PROTOCOL_ID_SIZE: u32 = 0xff;

    ISC_REQ_DELEGATE: u32 = 0x0000_0001;
    ISC_REQ_MUTUAL_AUTH: u32 = 0x0000_0002;
    ISC_REQ_REPLAY_DETECT: u32 = 0x0000_0004;
    ISC_REQ_SEQUENCE_DETECT: u32 = 0x0000_0008;
    ISC_REQ_CONFIDENTIALITY: u32 = 0x0000_0010;
    ISC_REQ_USE_SESSION_KEY: u32 = 0x0000_0020;
    ISC_REQ_PROMPT_FOR_CREDS: u32 = 0x0000_0040;
    ISC_REQ_USE_SUPPLIED_CREDS: u32 = 0x0000_0080;
    ISC_REQ_ALLOCATE_MEMORY: u32 = 0x0000_0100;
    ISC_REQ_USE_DCE_STYLE: u32 = 0x0000_0200;
    ISC_REQ_DATAGRAM: u32 = 0x0000_0400;
    ISC_REQ_CONNECTION: u32 = 0x0000_0800;
    ISC_REQ_CALL_LEVEL: u32 = 0x0000_1000;
    ISC_REQ_FRAGMENT_SUPPLIED: u32 = 0x0000_2000;
    ISC_REQ_EXTENDED_ERROR: u32 = 0x0000_4000;
    ISC_REQ_STREAM: u32 = 0x0000_8000;
    ISC_REQ_INTEGRITY: u32 = 0x0001_0000;
    ISC_REQ_IDENTIFY: u32 = 0x0002_0000;
    ISC_REQ_NULL_SESSION: u32 = 0x0004_0000;
    ISC_REQ_MANUAL_CRED_VALIDATION: u32 = 0x0008_0000;
    ISC_REQ_FRAGMENT_TO_FIT: u32 = 0x0020_0000;
    ISC_REQ_FORWARD_CREDENTIALS: u32 = 0x0040_0000;
    ISC_REQ_NO_INTEGRITY: u32 = 0x0080_0000;
    ISC_REQ_USE_HTTP_STYLE: u32 = 0x0100_0000;
    ISC_REQ_UNVERIFIED_TARGET_NAME: u32 = 0x2000_0000;
    ISC_REQ_CONFIDENTIALITY_ONLY: u32 = 0x4000_0000;

    ISC_RET_REPLAY_DETECT: u32 = 0x0000_0004;
    ISC_RET_SEQUENCE_DETECT: u32 = 0x0000_0008;
    ISC_RET_CONFIDENTIALITY: u32 = 0x0000_0010;
    ISC_RET_USED_SUPPLIED_CREDS: u32 = 0x0000_0080;
    ISC_RET_ALLOCATED_MEMORY: u32 = 0x0000_0100;
    ISC_RET_CONNECTION: u32 = 0x0000_0800;
    ISC_RET_EXTENDED_ERROR: u32 = 0x0000_4000;
    ISC_RET_STREAM: u32 = 0x0000_8000;
    ISC_RET_MANUAL_CRED_VALIDATION: u32 = 0x0008_0000;

    ASC_REQ_DELEGATE: u32 = 0x0000_0001;
    ASC_REQ_MUTUAL_AUTH: u32 = 0x0000_0002;
    ASC_REQ_REPLAY_DETECT: u32 = 0x0000_0004;
    ASC_REQ_SEQUENCE_DETECT: u32 = 0x0000_0008;
    ASC_REQ_CONFIDENTIALITY: u32 = 0x0000_0010;
    ASC_REQ_USE_SESSION_KEY: u32 = 0x0000_0020;
    ASC_REQ_SESSION_TICKET: u32 = 0x0000_0040;
    ASC_REQ_ALLOCATE_MEMORY: u32 = 0x0000_0100;
    ASC_REQ_USE_DCE_STYLE: u32 = 0x0000_0200;
    ASC_REQ_DATAGRAM: u32 = 0x0000_0400;
    ASC_REQ_CONNECTION: u32 = 0x0000_0800;
    ASC_REQ_CALL_LEVEL: u32 = 0x0000_1000;
    ASC_REQ_FRAGMENT_SUPPLIED: u32 = 0x0000_2000;
    ASC_REQ_EXTENDED_ERROR: u32 = 0x0000_8000;
    ASC_REQ_STREAM: u32 = 0x0001_0000;
    ASC_REQ_INTEGRITY: u32 = 0x0002_0000;
    ASC_REQ_LICENSING: u32 = 0x0004_0000;
    ASC_REQ_IDENTIFY: u32 = 0x0008_0000;
    ASC_REQ_ALLOW_NULL_SESSION: u32 = 0x0010_0000;
    ASC_REQ_ALLOW_NON_USER_LOGONS: u32 = 0x0020_0000;
    ASC_REQ_ALLOW_CONTEXT_REPLAY: u32 = 0x0040_0000;
    ASC_REQ_FRAGMENT_TO_FIT: u32 = 0x0080_0000;
    ASC_REQ_NO_TOKEN: u32 = 0x0100_0000;

    ASC_RET_REPLAY_DETECT: u32 = 0x0000_0004;
    ASC_RET_SEQUENCE_DETECT: u32 = 0x0000_0008;
    ASC_RET_CONFIDENTIALITY: u32 = 0x0000_0010;
    ASC_RET_ALLOCATED_MEMORY: u32 = 0x0000_0100;
    ASC_RET_CONNECTION: u32 = 0x0000_0800;
    ASC_RET_EXTENDED_ERROR: u32 = 0x0000_8000;
    ASC_RET_STREAM: u32 = 0x0001_0000;

    SECURITY_SUPPORT_PROVIDER_INTERFACE_VERSION: u32 = 1;
}
