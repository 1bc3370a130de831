//! `schannel.h` (with `SCHANNEL_USE_BLACKLISTS`): the credential structures a
//! kernel TLS client and server pass to `SspiAcquireCredentialsHandleAsync`,
//! the certificate-hash store form kernel Schannel uses to find a server
//! certificate, connection info, and the protocol / flag constants.

use super::abi::{abi_consts, abi_structs};
use super::types::UNICODE_STRING;
use core::ffi::c_void;

abi_structs! { SCHANNEL_STRUCTS:
    /// `SCH_CREDENTIALS` (schannel.h), `dwVersion = SCH_CREDENTIALS_VERSION`.
    /// In kernel mode a server names its certificate with `dwCredFormat =
    /// SCH_CRED_FORMAT_CERT_HASH_STORE`, `cCreds = 1` and `paCred` pointing at a
    /// pointer to a [`SCHANNEL_CERT_HASH_STORE`].
    pub struct SCH_CREDENTIALS {
        pub dwVersion: u32,
        pub dwCredFormat: u32,
        pub cCreds: u32,
        pub paCred: *mut *const c_void,
        pub hRootStore: *mut c_void,
        pub cMappers: u32,
        pub aphMappers: *mut *mut c_void,
        pub dwSessionLifespan: u32,
        pub dwFlags: u32,
        pub cTlsParameters: u32,
        pub pTlsParameters: *mut TLS_PARAMETERS,
    }

    /// `TLS_PARAMETERS` (schannel.h): protocol versions are given as the ones
    /// *disabled* (`grbitDisabledProtocols`).
    pub struct TLS_PARAMETERS {
        pub cAlpnIds: u32,
        pub rgstrAlpnIds: *mut UNICODE_STRING,
        pub grbitDisabledProtocols: u32,
        pub cDisabledCrypto: u32,
        pub pDisabledCrypto: *mut CRYPTO_SETTINGS,
        pub dwFlags: u32,
    }

    /// `CRYPTO_SETTINGS` (schannel.h).
    pub struct CRYPTO_SETTINGS {
        /// `eTlsAlgorithmUsage`, a C enum (`int`).
        pub eAlgorithmUsage: i32,
        pub strCngAlgId: UNICODE_STRING,
        pub cChainingModes: u32,
        pub rgstrChainingModes: *mut UNICODE_STRING,
        pub dwMinBitLength: u32,
        pub dwMaxBitLength: u32,
    }

    /// `SCHANNEL_CERT_HASH_STORE` (schannel.h): a certificate by SHA-1
    /// thumbprint in a named system store (`"MY"`), as kernel Schannel finds it.
    pub struct SCHANNEL_CERT_HASH_STORE {
        pub dwLength: u32,
        pub dwFlags: u32,
        /// `HCRYPTPROV`, must be 0.
        pub hProv: usize,
        pub ShaHash: [u8; 20],
        /// NUL-terminated store name.
        pub pwszStoreName: [u16; 128],
    }

    /// `SecPkgContext_ConnectionInfo` (schannel.h), from `SECPKG_ATTR_CONNECTION_INFO`.
    #[derive(Default, PartialEq, Eq)]
    pub struct SecPkgContext_ConnectionInfo {
        pub dwProtocol: u32,
        pub aiCipher: u32,
        pub dwCipherStrength: u32,
        pub aiHash: u32,
        pub dwHashStrength: u32,
        pub aiExch: u32,
        pub dwExchStrength: u32,
    }

    /// `SecPkgContext_Certificates` (schannel.h), from
    /// `SECPKG_ATTR_REMOTE_CERTIFICATES`: the peer's chain as kernel Schannel
    /// gives it (no `CERT_CONTEXT` in kernel mode), `cCertificates` entries of
    /// a 4-byte little-endian length then that many bytes of DER, leaf first,
    /// in a buffer the provider allocates and `FreeContextBuffer` frees (as
    /// msquic's kernel path reads it).
    pub struct SecPkgContext_Certificates {
        pub cCertificates: u32,
        pub cbCertificateChain: u32,
        pub pbCertificateChain: *mut u8,
    }

    /// `SecPkgContext_SessionInfo` (schannel.h), from
    /// `SECPKG_ATTR_SESSION_INFO`: whether the handshake was a reconnect
    /// (`dwFlags & SSL_SESSION_RECONNECT`, an abbreviated handshake from the
    /// session cache or a ticket) and the session's id.
    #[derive(Default, PartialEq, Eq)]
    pub struct SecPkgContext_SessionInfo {
        pub dwFlags: u32,
        pub cbSessionId: u32,
        pub rgbSessionId: [u8; 32],
    }

    /// `SCHANNEL_ALERT_TOKEN` (schannel.h), for `ApplyControlToken`.
    pub struct SCHANNEL_ALERT_TOKEN {
        pub dwTokenType: u32,
        pub dwAlertType: u32,
        pub dwAlertNumber: u32,
    }
}

impl SCHANNEL_CERT_HASH_STORE {
    /// A thumbprint in the named store (ASCII store name, at most 127 characters;
    /// longer names are cut), flagged `SCH_MACHINE_CERT_HASH` for LocalMachine.
    pub fn new(sha1: [u8; 20], store: &str, machine: bool) -> Self {
        let mut name = [0u16; 128];
        for (slot, b) in name.iter_mut().zip(store.bytes().take(127)) {
            *slot = u16::from(b);
        }
        SCHANNEL_CERT_HASH_STORE {
            dwLength: core::mem::size_of::<Self>() as u32,
            dwFlags: if machine { SCH_MACHINE_CERT_HASH } else { 0 },
            hProv: 0,
            ShaHash: sha1,
            pwszStoreName: name,
        }
    }
}

abi_consts! { SCHANNEL_CONSTANTS:
    SCH_CREDENTIALS_VERSION: u32 = 5;
    SCHANNEL_CRED_VERSION: u32 = 4;

    SCH_CRED_FORMAT_CERT_CONTEXT: u32 = 0;
    SCH_CRED_FORMAT_CERT_HASH: u32 = 1;
    SCH_CRED_FORMAT_CERT_HASH_STORE: u32 = 2;
    SCH_CRED_MAX_STORE_NAME_SIZE: u32 = 128;
    SCH_MACHINE_CERT_HASH: u32 = 1;

    SCH_CRED_NO_SYSTEM_MAPPER: u32 = 0x0000_0002;
    SCH_CRED_NO_SERVERNAME_CHECK: u32 = 0x0000_0004;
    SCH_CRED_MANUAL_CRED_VALIDATION: u32 = 0x0000_0008;
    SCH_CRED_NO_DEFAULT_CREDS: u32 = 0x0000_0010;
    SCH_CRED_AUTO_CRED_VALIDATION: u32 = 0x0000_0020;
    SCH_CRED_USE_DEFAULT_CREDS: u32 = 0x0000_0040;
    SCH_CRED_DISABLE_RECONNECTS: u32 = 0x0000_0080;
    SCH_CRED_REVOCATION_CHECK_END_CERT: u32 = 0x0000_0100;
    SCH_CRED_REVOCATION_CHECK_CHAIN: u32 = 0x0000_0200;
    SCH_CRED_IGNORE_NO_REVOCATION_CHECK: u32 = 0x0000_0800;
    SCH_CRED_IGNORE_REVOCATION_OFFLINE: u32 = 0x0000_1000;
    SCH_CRED_MEMORY_STORE_CERT: u32 = 0x0001_0000;
    SCH_SEND_ROOT_CERT: u32 = 0x0004_0000;
    SCH_USE_STRONG_CRYPTO: u32 = 0x0040_0000;

    TLS_PARAMS_OPTIONAL: u32 = 1;

    SP_PROT_NONE: u32 = 0;
    SP_PROT_TLS1_0_SERVER: u32 = 0x0000_0040;
    SP_PROT_TLS1_0_CLIENT: u32 = 0x0000_0080;
    SP_PROT_TLS1_1_SERVER: u32 = 0x0000_0100;
    SP_PROT_TLS1_1_CLIENT: u32 = 0x0000_0200;
    SP_PROT_TLS1_2_SERVER: u32 = 0x0000_0400;
    SP_PROT_TLS1_2_CLIENT: u32 = 0x0000_0800;
    SP_PROT_TLS1_2: u32 = 0x0000_0C00;
    SP_PROT_TLS1_3_SERVER: u32 = 0x0000_1000;
    SP_PROT_TLS1_3_CLIENT: u32 = 0x0000_2000;
    SP_PROT_TLS1_3: u32 = 0x0000_3000;

    CALG_AES_128: u32 = 0x660e;
    CALG_AES_256: u32 = 0x6610;
    CALG_SHA_256: u32 = 0x800c;
    CALG_SHA_384: u32 = 0x800d;
    CALG_ECDH_EPHEM: u32 = 0xae06;

    SECPKG_ATTR_REMOTE_CERT_CONTEXT: u32 = 0x53;
    SECPKG_ATTR_CONNECTION_INFO: u32 = 0x5a;
    SECPKG_ATTR_REMOTE_CERTIFICATES: u32 = 0x5f;
    SECPKG_ATTR_SESSION_INFO: u32 = 0x5d;

    /// `SecPkgContext_SessionInfo::dwFlags`: the session was reconnected.
    SSL_SESSION_RECONNECT: u32 = 1;

    SCHANNEL_RENEGOTIATE: u32 = 0;
    SCHANNEL_SHUTDOWN: u32 = 1;
    SCHANNEL_ALERT: u32 = 2;
    SCHANNEL_SESSION: u32 = 3;

    TLS1_ALERT_WARNING: u32 = 1;
    TLS1_ALERT_FATAL: u32 = 2;
    TLS1_ALERT_CLOSE_NOTIFY: u32 = 0;
    TLS1_ALERT_UNEXPECTED_MESSAGE: u32 = 10;
    TLS1_ALERT_BAD_RECORD_MAC: u32 = 20;
    TLS1_ALERT_HANDSHAKE_FAILURE: u32 = 40;
    TLS1_ALERT_BAD_CERTIFICATE: u32 = 42;
    TLS1_ALERT_CERTIFICATE_EXPIRED: u32 = 45;
    TLS1_ALERT_CERTIFICATE_UNKNOWN: u32 = 46;
    TLS1_ALERT_ILLEGAL_PARAMETER: u32 = 47;
    TLS1_ALERT_UNKNOWN_CA: u32 = 48;
    TLS1_ALERT_DECODE_ERROR: u32 = 50;
    TLS1_ALERT_DECRYPT_ERROR: u32 = 51;
    TLS1_ALERT_PROTOCOL_VERSION: u32 = 70;
    TLS1_ALERT_INTERNAL_ERROR: u32 = 80;
}
