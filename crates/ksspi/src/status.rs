//! `SECURITY_STATUS` as a type: every code the handshake and record layer can
//! return, with its name, its class and `Display`.
//!
//! Values mirror `winerror.h`; `scripts/abi-check.sh` compiles a
//! `_Static_assert` for every one of them against the public header.

use core::fmt;

/// A `SECURITY_STATUS` (an `HRESULT`-shaped `LONG`, winerror.h).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(transparent)]
pub struct SecStatus(pub i32);

/// What kind of answer a status is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusClass {
    /// `SEC_E_OK`: the call did what was asked.
    Success,
    /// A `SEC_I_*` code: success with something more to do (severity bit clear, non-zero).
    Information,
    /// A `SEC_E_*` code (severity bit set).
    Error,
}

macro_rules! statuses {
    ($($(#[$m:meta])* $name:ident = $value:literal;)*) => {
        impl SecStatus {
            $(
                #[doc = concat!("`", stringify!($name), "` (winerror.h).")]
                $(#[$m])*
                pub const $name: SecStatus = SecStatus($value as u32 as i32);
            )*

            /// Every named code, for tables and the header conformance check.
            pub const ALL: &'static [(&'static str, SecStatus)] =
                &[$((stringify!($name), SecStatus::$name)),*];

            /// The winerror.h name of this code, if it is one ksspi knows.
            pub const fn name(self) -> Option<&'static str> {
                match self.0 as u32 {
                    $($value => Some(stringify!($name)),)*
                    _ => None,
                }
            }
        }
    };
}

statuses! {
    /// The call completed successfully.
    SEC_E_OK = 0x0000_0000;
    /// The handshake goes on: send the output token, then call again with the reply.
    SEC_I_CONTINUE_NEEDED = 0x0009_0312;
    SEC_I_COMPLETE_NEEDED = 0x0009_0313;
    SEC_I_COMPLETE_AND_CONTINUE = 0x0009_0314;
    /// The peer closed the connection (close_notify), or the context was shut down.
    SEC_I_CONTEXT_EXPIRED = 0x0009_0317;
    /// The server asked for a client certificate the client does not have.
    SEC_I_INCOMPLETE_CREDENTIALS = 0x0009_0320;
    /// DecryptMessage met handshake data (TLS 1.3 NewSessionTicket, KeyUpdate, or a
    /// renegotiation): feed it back through the handshake call.
    SEC_I_RENEGOTIATE = 0x0009_0321;
    SEC_I_NO_RENEGOTIATION = 0x0009_0360;
    SEC_I_MESSAGE_FRAGMENT = 0x0009_0364;
    SEC_I_CONTINUE_NEEDED_MESSAGE_OK = 0x0009_0366;
    /// An async call is still in flight (`SspiGetAsyncCallStatus`).
    SEC_I_ASYNC_CALL_PENDING = 0x0009_0368;
    SEC_E_INSUFFICIENT_MEMORY = 0x8009_0300;
    SEC_E_INVALID_HANDLE = 0x8009_0301;
    SEC_E_UNSUPPORTED_FUNCTION = 0x8009_0302;
    SEC_E_TARGET_UNKNOWN = 0x8009_0303;
    SEC_E_INTERNAL_ERROR = 0x8009_0304;
    SEC_E_SECPKG_NOT_FOUND = 0x8009_0305;
    SEC_E_NOT_OWNER = 0x8009_0306;
    /// The input is not a valid token (garbage from the peer).
    SEC_E_INVALID_TOKEN = 0x8009_0308;
    SEC_E_QOP_NOT_SUPPORTED = 0x8009_030A;
    SEC_E_LOGON_DENIED = 0x8009_030C;
    SEC_E_UNKNOWN_CREDENTIALS = 0x8009_030D;
    SEC_E_NO_CREDENTIALS = 0x8009_030E;
    /// A record failed its integrity check.
    SEC_E_MESSAGE_ALTERED = 0x8009_030F;
    SEC_E_OUT_OF_SEQUENCE = 0x8009_0310;
    SEC_E_NO_AUTHENTICATING_AUTHORITY = 0x8009_0311;
    SEC_E_CONTEXT_EXPIRED = 0x8009_0317;
    /// The input holds a partial record: a `SECBUFFER_MISSING` says how much more.
    SEC_E_INCOMPLETE_MESSAGE = 0x8009_0318;
    SEC_E_INCOMPLETE_CREDENTIALS = 0x8009_0320;
    SEC_E_BUFFER_TOO_SMALL = 0x8009_0321;
    /// The server's certificate does not carry the target name.
    SEC_E_WRONG_PRINCIPAL = 0x8009_0322;
    SEC_E_TIME_SKEW = 0x8009_0324;
    /// The certificate chain ends in a root that is not trusted.
    SEC_E_UNTRUSTED_ROOT = 0x8009_0325;
    SEC_E_ILLEGAL_MESSAGE = 0x8009_0326;
    SEC_E_CERT_UNKNOWN = 0x8009_0327;
    /// The certificate has expired (or is not yet valid).
    SEC_E_CERT_EXPIRED = 0x8009_0328;
    SEC_E_ENCRYPT_FAILURE = 0x8009_0329;
    SEC_E_DECRYPT_FAILURE = 0x8009_0330;
    /// No protocol version or cipher suite in common.
    SEC_E_ALGORITHM_MISMATCH = 0x8009_0331;
    SEC_E_SECURITY_QOS_FAILED = 0x8009_0332;
    SEC_E_UNFINISHED_CONTEXT_DELETED = 0x8009_0333;
    SEC_E_WRONG_CREDENTIAL_HANDLE = 0x8009_0336;
    SEC_E_CRYPTO_SYSTEM_INVALID = 0x8009_0337;
    SEC_E_STRONG_CRYPTO_NOT_SUPPORTED = 0x8009_033A;
    SEC_E_SHUTDOWN_IN_PROGRESS = 0x8009_033F;
    SEC_E_BAD_BINDINGS = 0x8009_0346;
    SEC_E_CERT_WRONG_USAGE = 0x8009_0349;
    SEC_E_DOWNGRADE_DETECTED = 0x8009_0350;
    SEC_E_ISSUING_CA_UNTRUSTED = 0x8009_0352;
    SEC_E_INVALID_PARAMETER = 0x8009_035D;
    SEC_E_NO_CONTEXT = 0x8009_0361;
    SEC_E_MUTUAL_AUTH_FAILED = 0x8009_0363;
    SEC_E_APPLICATION_PROTOCOL_MISMATCH = 0x8009_0367;
    SEC_E_EXT_BUFFER_TOO_SMALL = 0x8009_036A;
    SEC_E_INSUFFICIENT_BUFFERS = 0x8009_036B;
}

impl SecStatus {
    /// The raw value as the header spells it (`0x80090318`).
    pub const fn bits(self) -> u32 {
        self.0 as u32
    }

    /// Build from the unsigned spelling used in headers and logs.
    pub const fn from_bits(bits: u32) -> Self {
        SecStatus(bits as i32)
    }

    /// Success, information or error, by the severity bit (`SEC_SUCCESS` is `>= 0`).
    pub const fn class(self) -> StatusClass {
        if self.0 == 0 {
            StatusClass::Success
        } else if self.0 > 0 {
            StatusClass::Information
        } else {
            StatusClass::Error
        }
    }

    /// `SEC_SUCCESS(status)`: not an error (success or information).
    pub const fn is_success(self) -> bool {
        self.0 >= 0
    }

    /// An error code (`SEC_E_*` other than `SEC_E_OK`).
    pub const fn is_error(self) -> bool {
        self.0 < 0
    }

    /// `Ok(self)` for success and information codes, `Err(self)` for errors.
    pub const fn ok(self) -> Result<SecStatus, SecStatus> {
        if self.is_success() {
            Ok(self)
        } else {
            Err(self)
        }
    }

    /// An `NTSTATUS` returned where the header says `NTSTATUS` (for example
    /// `SspiReinitAsyncContext`). NTSTATUS and SECURITY_STATUS share the severity
    /// convention (negative is failure), which is all ksspi relies on.
    pub const fn from_ntstatus(status: i32) -> Self {
        SecStatus(status)
    }
}

impl Default for SecStatus {
    /// `SEC_E_OK`.
    fn default() -> Self {
        SecStatus::SEC_E_OK
    }
}

impl fmt::Display for SecStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} ({:#010x})", self.bits()),
            None => write!(f, "{:#010x}", self.bits()),
        }
    }
}

impl fmt::Debug for SecStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn names_and_values_follow_winerror_h() {
        assert_eq!(SecStatus::SEC_E_OK.bits(), 0);
        assert_eq!(SecStatus::SEC_I_ASYNC_CALL_PENDING.bits(), 0x0009_0368);
        assert_eq!(SecStatus::SEC_E_INCOMPLETE_MESSAGE.bits(), 0x8009_0318);
        assert_eq!(
            SecStatus::SEC_E_WRONG_PRINCIPAL.name(),
            Some("SEC_E_WRONG_PRINCIPAL")
        );
        assert_eq!(
            SecStatus::from_bits(0x8009_0325),
            SecStatus::SEC_E_UNTRUSTED_ROOT
        );
        assert_eq!(SecStatus::from_bits(0x1234_5678).name(), None);
    }

    #[test]
    fn classes_follow_the_severity_bit() {
        assert_eq!(SecStatus::SEC_E_OK.class(), StatusClass::Success);
        assert_eq!(
            SecStatus::SEC_I_CONTINUE_NEEDED.class(),
            StatusClass::Information
        );
        assert_eq!(
            SecStatus::SEC_I_ASYNC_CALL_PENDING.class(),
            StatusClass::Information
        );
        assert_eq!(SecStatus::SEC_E_INVALID_TOKEN.class(), StatusClass::Error);
        assert!(SecStatus::SEC_I_RENEGOTIATE.is_success());
        assert!(SecStatus::SEC_E_CERT_EXPIRED.is_error());
        assert_eq!(
            SecStatus::SEC_E_CERT_EXPIRED.ok(),
            Err(SecStatus::SEC_E_CERT_EXPIRED)
        );
        assert_eq!(
            SecStatus::SEC_I_CONTEXT_EXPIRED.ok(),
            Ok(SecStatus::SEC_I_CONTEXT_EXPIRED)
        );
        // The information and error twins differ only in the severity bit.
        assert_eq!(
            SecStatus::SEC_I_CONTEXT_EXPIRED.bits() | 0x8000_0000,
            SecStatus::SEC_E_CONTEXT_EXPIRED.bits()
        );
    }

    #[test]
    fn display_names_the_code_and_its_value() {
        assert_eq!(
            SecStatus::SEC_E_WRONG_PRINCIPAL.to_string(),
            "SEC_E_WRONG_PRINCIPAL (0x80090322)"
        );
        assert_eq!(SecStatus::SEC_E_OK.to_string(), "SEC_E_OK (0x00000000)");
        assert_eq!(SecStatus::from_bits(0xC000_0017).to_string(), "0xc0000017");
    }

    #[test]
    fn every_name_is_unique_and_round_trips() {
        for (i, (name, status)) in SecStatus::ALL.iter().enumerate() {
            assert_eq!(status.name(), Some(*name), "{name}");
            for (other, s2) in &SecStatus::ALL[i + 1..] {
                assert_ne!(status, s2, "{name} and {other} share a value");
            }
        }
        assert!(SecStatus::ALL.len() >= 50);
    }
}
