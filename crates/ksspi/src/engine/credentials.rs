//! Asynchronous credential acquisition (`SspiAcquireCredentialsHandleAsyncW`)
//! for a TLS server (its certificate by SHA-1 thumbprint in a system store, as
//! kernel Schannel finds it) or client (optionally with a client certificate
//! found the same way), with protocol-version settings. Release is
//! [`Credentials::release`] (`SspiFreeCredentialsHandleAsync`).
//!
//! A client certificate by thumbprint: `SCH_CREDENTIALS` with `cCreds` 1,
//! `dwCredFormat` `SCH_CRED_FORMAT_CERT_HASH_STORE` and `paCred` pointing to a
//! `SCHANNEL_CERT_HASH_STORE`, exactly as for a server. Evidence that kernel
//! Schannel takes it for an outbound (client) credential: msquic's
//! `src/platform/tls_schannel.c`, `CxPlatTlsSecConfigCreate`, whose
//! `#ifdef _KERNEL_MODE` branch fills `SCHANNEL_CERT_HASH_STORE` for
//! `QUIC_CREDENTIAL_TYPE_CERTIFICATE_HASH(_STORE)` whatever the role (only a
//! client with `QUIC_CREDENTIAL_TYPE_NONE` goes without one) and passes it to
//! `AcquireCredentialsHandleW` with `SECPKG_CRED_OUTBOUND` for clients. The
//! docs say nothing narrower: the SCHANNEL_CERT_HASH_STORE page
//! (learn.microsoft.com/windows/win32/api/schannel/
//! ns-schannel-schannel_cert_hash_store) describes it as how kernel-mode
//! Schannel is given a certificate, for no particular role, and the
//! SCH_CREDENTIALS page (ns-schannel-sch_credentials) lists
//! `SCH_CRED_FORMAT_CERT_HASH_STORE` among `dwCredFormat`'s values for both
//! kinds of credential. Not yet run against a real kernel Schannel client here
//! (no Windows): docs/WINDOWS.md's acceptance steps are where that is shown.
//! docs/DESIGN.md's evidence section keeps the same sources.

use super::conductor::{Conductor, EngineStats, Issue, Machine, Move, Platform};
use crate::handle::{AsyncContext, Credentials, HandleSlot};
use crate::irql::Passive;
use crate::provider::SspiProvider;
use crate::status::SecStatus;
use crate::sys::*;
use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::ffi::c_void;
use core::ptr;

/// A certificate by SHA-1 thumbprint in a system store, as kernel Schannel
/// finds one (`SCHANNEL_CERT_HASH_STORE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateByHash {
    /// The certificate's SHA-1 thumbprint.
    pub thumbprint: [u8; 20],
    /// The system store (`"MY"`).
    pub store: String,
    /// LocalMachine (`SCH_MACHINE_CERT_HASH`) rather than the current user.
    pub machine: bool,
}

/// What credentials to acquire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialSpec {
    /// A server certificate by SHA-1 thumbprint.
    Server {
        /// The certificate's SHA-1 thumbprint.
        thumbprint: [u8; 20],
        /// The system store (`"MY"`).
        store: String,
        /// LocalMachine (`SCH_MACHINE_CERT_HASH`) rather than the current user.
        machine: bool,
        /// `SP_PROT_*` bits to disable (`TLS_PARAMETERS.grbitDisabledProtocols`).
        disabled_protocols: u32,
        /// Allow reconnects (session resumption); `false` sets
        /// `SCH_CRED_DISABLE_RECONNECTS`, which Schannel documents for
        /// servers only: "full handshakes performed with this credential
        /// will not allow reconnects" (ns-schannel-sch_credentials). A
        /// client's resumption follows its credentials handle instead
        /// (docs/DESIGN.md, contract item 11).
        reconnects: bool,
    },
    /// A client.
    Client {
        /// `SP_PROT_*` bits to disable.
        disabled_protocols: u32,
        /// Do not validate the server's certificate
        /// (`SCH_CRED_MANUAL_CRED_VALIDATION`); the caller checks it.
        manual_validation: bool,
        /// The client certificate offered when a server asks for one
        /// (`None`: the handshake answers a request without one, and the
        /// session reports that it was asked).
        certificate: Option<CertificateByHash>,
    },
}

/// The outcome of an acquisition, delivered once at PASSIVE_LEVEL.
pub type AcquireDone<P> = Box<dyn FnOnce(Result<Arc<Credentials<P>>, SecStatus>) + Send>;

struct Params {
    store: SCHANNEL_CERT_HASH_STORE,
    store_ptr: *const c_void,
    tls: TLS_PARAMETERS,
    sch: SCH_CREDENTIALS,
    package: Vec<u16>,
    package_us: UNICODE_STRING,
    expiry: TimeStamp,
}

// SAFETY: the raw pointers point into this same struct (which never moves once
// the machine is in its shared block) and are used by one owner at a time.
unsafe impl Send for Params {}

struct Acquire<P: SspiProvider> {
    provider: P,
    server: bool,
    params: Params,
    issued: bool,
    result: Option<Result<Arc<Credentials<P>>, SecStatus>>,
    done: Option<AcquireDone<P>>,
}

impl<P: SspiProvider> Machine<P> for Acquire<P> {
    fn next(
        &mut self,
        ctx: &mut Option<AsyncContext<P>>,
        _closing: bool,
        at: &Passive,
        stats: &EngineStats,
    ) -> Move<P> {
        if self.issued {
            return Move::Finished;
        }
        self.issued = true;
        let Some(mut context) = ctx.take() else {
            self.result = Some(Err(SecStatus::SEC_E_INVALID_HANDLE));
            return Move::Finished;
        };
        if let Err(status) = Issue::ready(&mut context, stats) {
            *ctx = Some(context);
            self.result = Some(Err(status));
            return Move::Finished;
        }
        // The pointers are set here, once the machine sits in its shared block.
        let p = &mut self.params;
        p.store_ptr = (&p.store as *const SCHANNEL_CERT_HASH_STORE).cast();
        p.sch.paCred = &mut p.store_ptr;
        p.sch.pTlsParameters = &mut p.tls;
        p.package_us = match UNICODE_STRING::from_units(&mut p.package) {
            Some(u) => u,
            None => {
                *ctx = Some(context);
                self.result = Some(Err(SecStatus::SEC_E_INVALID_PARAMETER));
                return Move::Finished;
            }
        };
        let slot = HandleSlot::new();
        let out = slot.as_ptr();
        let (package, auth, expiry): (*mut UNICODE_STRING, *mut c_void, *mut TimeStamp) = (
            &mut p.package_us,
            (&mut p.sch as *mut SCH_CREDENTIALS).cast(),
            &mut p.expiry,
        );
        let use_ = if self.server {
            SECPKG_CRED_INBOUND
        } else {
            SECPKG_CRED_OUTBOUND
        };
        let call = |prov: &P, c| {
            // SAFETY: `issue` hands over the live, idle context `c`; the
            // pointers are as argued for `issue` below.
            unsafe {
                prov.acquire_credentials_handle_async(
                    c,
                    ptr::null_mut(),
                    package,
                    use_,
                    auth,
                    out,
                    expiry,
                )
            }
        };
        // SAFETY: the parameters live in this machine and the output slot
        // travels with the call (kept by the InFlight) until it completes.
        let issued = unsafe { context.issue(at, Some(slot), call) };
        match issued {
            Ok(flight) => Move::Issued(flight),
            Err(refused) => {
                *ctx = Some(refused.context);
                self.result = Some(Err(refused.status));
                Move::Finished
            }
        }
    }

    fn wants_call(&self, _closing: bool) -> bool {
        !self.issued
    }

    fn completed(&mut self, status: SecStatus, slot: Option<HandleSlot>) {
        self.result = Some(match (status, slot) {
            (SecStatus::SEC_E_OK, Some(slot)) if slot.is_valid() => {
                // SAFETY: the provider filled the slot with a credential it
                // issued to us; nothing else owns it.
                Ok(Arc::new(unsafe {
                    Credentials::from_slot(self.provider.clone(), slot)
                }))
            }
            (SecStatus::SEC_E_OK, _) => Err(SecStatus::SEC_E_INTERNAL_ERROR),
            (failure, _) => Err(failure),
        });
    }

    fn finished(&mut self) {
        let result = self
            .result
            .take()
            .unwrap_or(Err(SecStatus::SEC_E_INTERNAL_ERROR));
        if let Some(done) = self.done.take() {
            done(result);
        }
    }
}

/// Acquire credentials asynchronously. `done` runs exactly once, at
/// PASSIVE_LEVEL, with the credentials or the failure status (possibly before
/// this returns). `Err` means nothing was started and `done` will not run.
pub fn acquire_credentials<P: SspiProvider, K: Platform>(
    provider: P,
    platform: K,
    spec: &CredentialSpec,
    stats: Arc<EngineStats>,
    done: AcquireDone<P>,
    at: &Passive,
) -> Result<(), SecStatus> {
    let (server, store, flags, disabled, with_cert) = match spec {
        CredentialSpec::Server {
            thumbprint,
            store,
            machine,
            disabled_protocols,
            reconnects,
        } => (
            true,
            SCHANNEL_CERT_HASH_STORE::new(*thumbprint, store, *machine),
            SCH_CRED_NO_DEFAULT_CREDS
                | if *reconnects {
                    0
                } else {
                    SCH_CRED_DISABLE_RECONNECTS
                },
            *disabled_protocols,
            true,
        ),
        CredentialSpec::Client {
            disabled_protocols,
            manual_validation,
            certificate,
        } => (
            false,
            match certificate {
                Some(c) => SCHANNEL_CERT_HASH_STORE::new(c.thumbprint, &c.store, c.machine),
                None => SCHANNEL_CERT_HASH_STORE::new([0; 20], "", false),
            },
            SCH_CRED_NO_DEFAULT_CREDS
                | if *manual_validation {
                    SCH_CRED_MANUAL_CRED_VALIDATION
                } else {
                    SCH_CRED_AUTO_CRED_VALIDATION
                },
            *disabled_protocols,
            certificate.is_some(),
        ),
    };
    let params = Params {
        store,
        store_ptr: ptr::null(),
        tls: TLS_PARAMETERS {
            cAlpnIds: 0,
            rgstrAlpnIds: ptr::null_mut(),
            grbitDisabledProtocols: disabled,
            cDisabledCrypto: 0,
            pDisabledCrypto: ptr::null_mut(),
            dwFlags: 0,
        },
        sch: SCH_CREDENTIALS {
            dwVersion: SCH_CREDENTIALS_VERSION,
            dwCredFormat: if with_cert {
                SCH_CRED_FORMAT_CERT_HASH_STORE
            } else {
                0
            },
            cCreds: u32::from(with_cert),
            paCred: ptr::null_mut(),
            hRootStore: ptr::null_mut(),
            cMappers: 0,
            aphMappers: ptr::null_mut(),
            dwSessionLifespan: 0,
            dwFlags: flags,
            cTlsParameters: 1,
            pTlsParameters: ptr::null_mut(),
        },
        package: UNISP_NAME.encode_utf16().collect(),
        package_us: UNICODE_STRING {
            Length: 0,
            MaximumLength: 0,
            Buffer: ptr::null_mut(),
        },
        expiry: TimeStamp::default(),
    };
    let machine = Acquire {
        provider: provider.clone(),
        server,
        params,
        issued: false,
        result: None,
        done: Some(done),
    };
    run_once(provider, platform, machine, stats, at)
}

/// The outcome of a release, delivered once at PASSIVE_LEVEL.
pub type ReleaseDone = Box<dyn FnOnce(SecStatus) + Send>;

struct Release<P: SspiProvider> {
    credentials: Option<Credentials<P>>,
    issued: bool,
    status: SecStatus,
    done: Option<ReleaseDone>,
}

impl<P: SspiProvider> Machine<P> for Release<P> {
    fn next(
        &mut self,
        ctx: &mut Option<AsyncContext<P>>,
        _closing: bool,
        at: &Passive,
        stats: &EngineStats,
    ) -> Move<P> {
        if self.issued {
            return Move::Finished;
        }
        self.issued = true;
        let (Some(mut context), Some(credentials)) = (ctx.take(), self.credentials.take()) else {
            self.status = SecStatus::SEC_E_INVALID_HANDLE;
            return Move::Finished;
        };
        if let Err(status) = Issue::ready(&mut context, stats) {
            *ctx = Some(context);
            self.status = status;
            drop(credentials); // released by its own detached call
            return Move::Finished;
        }
        match credentials.release(context, at) {
            Ok(flight) => Move::Issued(flight),
            Err((credentials, refused)) => {
                *ctx = Some(refused.context);
                self.status = refused.status;
                // Still in use, or the call could not be queued: the handle's
                // own drop releases it when it can (or leaves it for the
                // verifier to report, if a call still uses it).
                drop(credentials);
                Move::Finished
            }
        }
    }

    fn wants_call(&self, _closing: bool) -> bool {
        !self.issued
    }

    fn completed(&mut self, status: SecStatus, slot: Option<HandleSlot>) {
        self.status = status;
        drop(slot);
    }

    fn finished(&mut self) {
        if let Some(done) = self.done.take() {
            done(self.status);
        }
    }
}

/// Release credentials asynchronously (`SspiFreeCredentialsHandleAsync`) on an
/// async context of their own. `done` runs exactly once, at PASSIVE_LEVEL,
/// with the status. `Err` means nothing was started: the credentials are then
/// released by their own drop.
pub fn release_credentials<P: SspiProvider, K: Platform>(
    provider: P,
    platform: K,
    credentials: Credentials<P>,
    stats: Arc<EngineStats>,
    done: ReleaseDone,
    at: &Passive,
) -> Result<(), SecStatus> {
    let machine = Release {
        credentials: Some(credentials),
        issued: false,
        status: SecStatus::SEC_E_OK,
        done: Some(done),
    };
    run_once(provider, platform, machine, stats, at)
}

/// Start a machine that makes one call and finishes, and let go of it: the
/// machine reports through its own `done` (dropping the handle requests close,
/// and the machine finishes after its one call either way).
fn run_once<P: SspiProvider, K: Platform, M: Machine<P>>(
    provider: P,
    platform: K,
    machine: M,
    stats: Arc<EngineStats>,
    at: &Passive,
) -> Result<(), SecStatus> {
    let conductor = Conductor::new(provider, platform, machine, stats, None, at)?;
    conductor
        .start(|_| Ok::<(), ()>(()), at)
        .map_err(|_| SecStatus::SEC_E_INTERNAL_ERROR)
}
