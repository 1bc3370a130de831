//! Schannel's status for a rustls failure ([`map_error`]).

use ksspi::SecStatus;
use rustls::{AlertDescription, CertificateError, Error};

/// Schannel's code for a rustls failure.
pub fn map_error(e: &Error) -> SecStatus {
    use CertificateError as C;
    match e {
        Error::InvalidCertificate(c) => match c {
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                SecStatus::SEC_E_WRONG_PRINCIPAL
            }
            C::UnknownIssuer => SecStatus::SEC_E_UNTRUSTED_ROOT,
            C::Expired
            | C::ExpiredContext { .. }
            | C::NotValidYet
            | C::NotValidYetContext { .. } => SecStatus::SEC_E_CERT_EXPIRED,
            C::Revoked => SecStatus::SEC_E_CERT_UNKNOWN,
            C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
                SecStatus::SEC_E_CERT_WRONG_USAGE
            }
            _ => SecStatus::SEC_E_CERT_UNKNOWN,
        },
        Error::NoCertificatesPresented => SecStatus::SEC_E_NO_CREDENTIALS,
        Error::PeerIncompatible(_) => SecStatus::SEC_E_ALGORITHM_MISMATCH,
        Error::AlertReceived(a) => match a {
            AlertDescription::ProtocolVersion
            | AlertDescription::HandshakeFailure
            | AlertDescription::InsufficientSecurity => SecStatus::SEC_E_ALGORITHM_MISMATCH,
            AlertDescription::BadCertificate
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateExpired => SecStatus::SEC_E_CERT_UNKNOWN,
            AlertDescription::CloseNotify => SecStatus::SEC_I_CONTEXT_EXPIRED,
            // The client's side of an ALPN failure: the same status as the
            // server's (winerror.h's text for it names both sides). What
            // Windows answers here is to be confirmed on a real run.
            AlertDescription::NoApplicationProtocol => {
                SecStatus::SEC_E_APPLICATION_PROTOCOL_MISMATCH
            }
            _ => SecStatus::SEC_E_ILLEGAL_MESSAGE,
        },
        Error::DecryptError => SecStatus::SEC_E_DECRYPT_FAILURE,
        Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => {
            SecStatus::SEC_E_INVALID_TOKEN
        }
        Error::InvalidMessage(_)
        | Error::InappropriateMessage { .. }
        | Error::InappropriateHandshakeMessage { .. }
        | Error::PeerMisbehaved(_) => SecStatus::SEC_E_ILLEGAL_MESSAGE,
        Error::NoApplicationProtocol => SecStatus::SEC_E_APPLICATION_PROTOCOL_MISMATCH,
        _ => SecStatus::SEC_E_INTERNAL_ERROR,
    }
}
