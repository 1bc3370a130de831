//! The credential-handle calls' work, run when the call completes:
//! `SspiAcquireCredentialsHandleAsyncW` (a model Schannel credential from the
//! caller's `SCH_CREDENTIALS`) and `SspiFreeCredentialsHandleAsync`.

use super::tables::HANDLE_MAGIC_CRED;
use super::SimProvider;
use crate::edge::{self, CallPtr};
use crate::kernel::{bugcheck, Bugcheck};
use crate::schannel::{lifespan, Credential, CredentialSpec, Protocols, Sessions};
use crate::verifier::{FaultKind, Tag};
use ksspi::sys::*;
use ksspi::SecStatus;
use std::sync::Arc;

/// `SspiAcquireCredentialsHandleAsyncW`: a credential in the credential
/// table, its handle written to `out`. The pointers are the call's, valid
/// until it completes.
pub(super) fn acquire(
    sim: &SimProvider,
    package: CallPtr<UNICODE_STRING>,
    auth: CallPtr<SCH_CREDENTIALS>,
    credential_use: u32,
    out: CallPtr<SecHandle>,
    expiry: CallPtr<TimeStamp>,
) -> SecStatus {
    // SAFETY: valid until completion per the call's contract.
    match unsafe { edge::unicode(package.get()) } {
        Ok(Some(p)) if p == UNISP_NAME || p.eq_ignore_ascii_case("schannel") => {}
        Ok(_) => return SecStatus::SEC_E_SECPKG_NOT_FOUND,
        Err(s) => return s,
    }
    // SAFETY: as above.
    let sch = match unsafe { edge::sch_credentials(auth.get()) } {
        Ok(s) => s,
        Err(s) => return s,
    };
    if out.is_null() {
        return SecStatus::SEC_E_INVALID_PARAMETER;
    }
    let server = match credential_use & (SECPKG_CRED_INBOUND | SECPKG_CRED_OUTBOUND) {
        SECPKG_CRED_INBOUND => true,
        SECPKG_CRED_OUTBOUND => false,
        _ => return SecStatus::SEC_E_INVALID_PARAMETER,
    };
    let protocols = Protocols::from_disabled(sch.disabled_protocols, server);
    let spec = if server {
        let Some((hash, store)) = sch.cert else {
            return SecStatus::SEC_E_NO_CREDENTIALS;
        };
        let Some(identity) = sim.0.store.find_identity(&store, &hash) else {
            return SecStatus::SEC_E_NO_CREDENTIALS;
        };
        CredentialSpec::Server {
            identity,
            protocols,
            tls13_tickets: sim.0.config.tls13_tickets,
            require_client_cert: false,
        }
    } else {
        // A client certificate comes the way a server's does (kernel
        // Schannel takes SCHANNEL_CERT_HASH_STORE for both roles: msquic's
        // kernel path, ksspi's engine/credentials.rs); one the store does not
        // hold fails the acquisition as a server's does.
        let client_identity = match sch.cert {
            None => None,
            Some((hash, store)) => match sim.0.store.find_identity(&store, &hash) {
                Some(identity) => Some(identity),
                None => return SecStatus::SEC_E_NO_CREDENTIALS,
            },
        };
        CredentialSpec::Client {
            protocols,
            manual_validation: sch.flags & SCH_CRED_MANUAL_CRED_VALIDATION != 0,
            client_identity,
        }
    };
    if sim.0.verifier.fault_point(FaultKind::Allocation) {
        return SecStatus::SEC_E_INSUFFICIENT_MEMORY;
    }
    let sessions = Sessions {
        lifespan: lifespan(sch.session_lifespan),
        reconnects: sch.flags & SCH_CRED_DISABLE_RECONNECTS == 0,
        keep: sim.0.config.session_cache,
    };
    let cred = match Credential::with_sessions(spec, &sim.0.store, sessions) {
        Ok(c) => Arc::new(c),
        Err(s) => return s,
    };
    let (key, id) = sim.new_handle(
        Tag::Credential,
        if server {
            "server credential"
        } else {
            "client credential"
        },
    );
    sim.tables().credentials.insert(key, (id, cred));
    // SAFETY: valid until completion per the call's contract.
    unsafe {
        *out.get() = SecHandle {
            dwLower: key,
            dwUpper: HANDLE_MAGIC_CRED,
        }
    };
    // SAFETY: likewise the expiry, which may be null (`as_mut` checks).
    if let Some(e) = unsafe { expiry.get().as_mut() } {
        e.QuadPart = i64::MAX;
    }
    SecStatus::SEC_E_OK
}

/// `SspiFreeCredentialsHandleAsync` on the handle read at issue: stops on a
/// double free.
pub(super) fn free(sim: &SimProvider, handle: Option<SecHandle>) -> SecStatus {
    let Some(h) = handle.filter(|h| h.dwUpper == HANDLE_MAGIC_CRED) else {
        return SecStatus::SEC_E_INVALID_HANDLE;
    };
    let removed = sim.tables().credentials.remove(&h.dwLower);
    match removed {
        Some((id, _)) => {
            sim.0.verifier.untrack(Tag::Credential, id);
            SecStatus::SEC_E_OK
        }
        None => bugcheck(
            Bugcheck::DriverVerifierDetectedViolation,
            format_args!(
                "SspiFreeCredentialsHandleAsync on credential {:#x}, already freed (double free)",
                h.dwLower
            ),
        ),
    }
}
