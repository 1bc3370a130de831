//! OPEN: a session slot taken and the request pended while the session's
//! credentials are acquired (or found in the cache), then the session made
//! and OPEN completed with its id ([`Shared::opened`]), or the slot given
//! back ([`Shared::open_failed`]).

use crate::device::credentials::CacheKey;
use crate::device::events::EntryEvents;
use crate::device::table::{Entry, Phase};
use crate::device::{complete_with, FileId, Request, Shared};
use crate::ntstatus::*;
use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use core::sync::atomic::Ordering;
use ksspi::alpn::{AlpnError, ApplicationProtocols};
use ksspi::engine::{
    acquire_credentials, CertificateByHash, ClientCertificates, CredentialSpec, Platform, Role,
    Session, SessionEvents, SessionSetup,
};
use ksspi::handle::Credentials;
use ksspi::provider::SspiProvider;
use ksspi::sys::{
    SP_PROT_TLS1_2_CLIENT, SP_PROT_TLS1_2_SERVER, SP_PROT_TLS1_3_CLIENT, SP_PROT_TLS1_3_SERVER,
};
use ksspi::{Passive, SecStatus};
use ksspi_abi::*;

impl<P: SspiProvider, K: Platform, R: Request> Shared<P, K, R> {
    pub(in crate::device) fn open(
        self: &Arc<Self>,
        file: FileId,
        input: &[u8],
        request: R,
        at: &Passive,
    ) {
        let open = match decode::<OpenRequest>(input) {
            Ok(o) => o,
            Err(e) => return request.complete(e.ntstatus(), &[]),
        };
        if request.output_capacity() < Header::LEN + 16 {
            return request.complete(STATUS_BUFFER_TOO_SMALL, &[]);
        }
        let server = open.role == ksspi_abi::Role::Server;
        let auth = open.client_auth.unwrap_or(ClientAuth::NONE);
        // Resumption off (OPEN's fourth layout): a server's credentials
        // refuse reconnects (SCH_CRED_DISABLE_RECONNECTS; a spec of their
        // own, cached apart); a client's session gets a credentials handle
        // of its own, neither found in nor kept in the cache, since the
        // client session cache is the handle's (the model's; for kernel
        // Schannel unknown until a Windows run: docs/DESIGN.md, contract
        // item 11). Older layouts: the cached handles with reconnects, as
        // before the layout existed.
        let off = open.resumption == Some(Resumption::Off);
        let private = off && !server;
        let spec = if server {
            CredentialSpec::Server {
                thumbprint: open.thumbprint,
                store: store_name(&open.store),
                machine: true,
                disabled_protocols: disabled_protocols(open.protocols, true),
                reconnects: !off,
            }
        } else {
            CredentialSpec::Client {
                disabled_protocols: disabled_protocols(open.protocols, false),
                manual_validation: open.manual_validation,
                // LocalMachine, as for a server: a driver has no user's store
                // (msquic's kernel path sets SCH_MACHINE_CERT_HASH likewise).
                certificate: auth.certificate.map(|thumbprint| CertificateByHash {
                    thumbprint,
                    store: store_name(&auth.store),
                    machine: true,
                }),
            }
        };
        let params = SessionParams {
            role: if server {
                Role::Server
            } else {
                let target = core::str::from_utf8(open.target).unwrap_or_default();
                Role::Client {
                    target: (!target.is_empty()).then(|| String::from(target)),
                }
            },
            // A client's mode is Ignore (the ABI refuses any other).
            client_certificates: match auth.server_mode {
                ClientCertMode::Ignore => ClientCertificates::Ignore,
                ClientCertMode::Request => ClientCertificates::Request,
                ClientCertMode::Require => ClientCertificates::Require,
            },
            reports_flags: open.client_auth.is_some(),
            reports_resumption: open.resumption.is_some(),
            // The ABI checked the list (check_alpn: not empty, no empty
            // name, within MAX_ALPN_LIST); the engine's type checks again.
            alpn: match open.alpn.map(ApplicationProtocols::from_wire) {
                Some(Ok(list)) => Some(list),
                Some(Err(AlpnError::ListTooLong)) => {
                    return request.complete(STATUS_INVALID_BUFFER_SIZE, &[]);
                }
                Some(Err(_)) => return request.complete(STATUS_INVALID_PARAMETER, &[]),
                None => None,
            },
        };
        let id = {
            let mut table = self.table.lock(&self.platform);
            if table.count(file) >= self.config.max_sessions_per_file {
                drop(table);
                return request.complete(STATUS_QUOTA_EXCEEDED, &[]);
            }
            let Some(index) = table.next_free() else {
                drop(table);
                return request.complete(STATUS_INSUFFICIENT_RESOURCES, &[]);
            };
            let id = SessionId::new(index, table.slots[index as usize].generation);
            let (request, serial) = match self.pend(request, file, id) {
                Ok(pended) => pended,
                Err(request) => {
                    drop(table);
                    return request.complete(STATUS_CANCELLED, &[]);
                }
            };
            table.occupy(
                index,
                Entry {
                    file,
                    phase: Phase::Opening,
                    session: None,
                    credentials: None,
                    pending: Some(request),
                    pending_serial: serial,
                    reply_len: 0,
                    in_sync_call: false,
                    writing: false,
                    reports_resumption: params.reports_resumption,
                },
            );
            id
        };
        self.sessions_total.fetch_add(1, Ordering::Relaxed);
        // Found by the parameters and the sessions' client-certificate mode
        // (CacheKey: a handle per mode keeps sessions made without a client
        // certificate from being resumed by sessions that ask for one).
        let key = CacheKey {
            spec: spec.clone(),
            client_certificates: params.client_certificates,
        };
        let cached = if private {
            None
        } else {
            self.credentials.lock(&self.platform).find(&key)
        };
        if let Some(credentials) = cached {
            return self.opened(id, params, Ok(credentials), None);
        }
        let device = Arc::downgrade(self);
        // A private handle is the session's alone: released when it closes.
        let keep = (!private).then_some(key);
        let done = Box::new(move |result: Result<Arc<Credentials<P>>, SecStatus>| {
            if let Some(device) = device.upgrade() {
                device.opened(id, params, result, keep);
            } else if let Ok(cred) = result {
                drop(cred); // the device is gone: the handle releases itself
            }
        });
        let started = acquire_credentials(
            self.provider.clone(),
            self.platform.clone(),
            &spec,
            self.stats.clone(),
            done,
            at,
        );
        if let Err(status) = started {
            self.open_failed(id, status);
        }
    }

    /// The credentials for session `id` arrived (or did not), or were found
    /// in the cache: make the session and complete OPEN. Newly acquired ones
    /// are kept for later OPENs under `key`. At PASSIVE_LEVEL.
    pub(in crate::device) fn opened(
        self: &Arc<Self>,
        id: SessionId,
        params: SessionParams,
        result: Result<Arc<Credentials<P>>, SecStatus>,
        key: Option<CacheKey>,
    ) {
        let credentials = match result {
            Ok(c) => c,
            Err(status) => return self.open_failed(id, status),
        };
        if let Some(key) = key {
            let unwanted = self
                .credentials
                .lock(&self.platform)
                .insert(key, credentials.clone());
            if let Some((_, old)) = unwanted {
                self.let_go(old); // outside the lock: it may release a handle
            }
        }
        let Some(at) = Passive::check(self.provider.current_irql()) else {
            // acquire_credentials reports at PASSIVE_LEVEL.
            return self.open_failed(id, SecStatus::SEC_E_INTERNAL_ERROR);
        };
        let events: Arc<dyn SessionEvents> = Arc::new(EntryEvents {
            device: Arc::downgrade(self),
            id,
            reports_flags: params.reports_flags,
            reports_resumption: params.reports_resumption,
            max_output: self.config.limits.max_output,
        });
        let setup = SessionSetup {
            role: params.role,
            credentials: credentials.clone(),
            limits: self.config.limits,
            client_certificates: params.client_certificates,
            alpn: params.alpn,
            events,
        };
        let session = match Session::new(
            self.provider.clone(),
            self.platform.clone(),
            setup,
            self.stats.clone(),
            &at,
        ) {
            Ok(s) => Arc::new(s),
            Err(status) => {
                self.release(credentials, &at);
                return self.open_failed(id, status);
            }
        };
        let mut table = self.table.lock(&self.platform);
        let Some(entry) = table.entry_any_file(id) else {
            drop(table);
            session.close();
            return;
        };
        if entry.phase == Phase::Closing {
            // Closed or cancelled while opening: OPEN was completed then; the
            // session goes now and is removed when it reports closed.
            entry.session = Some(session.clone());
            entry.credentials = Some(credentials);
            drop(table);
            session.close();
            return;
        }
        entry.phase = Phase::Open;
        entry.session = Some(session);
        entry.credentials = Some(credentials);
        let request = entry.pending.take();
        drop(table);
        if let Some(request) = request {
            complete_with(
                request,
                &OpenReply {
                    status: 0,
                    session: id,
                },
            );
        }
    }

    pub(in crate::device) fn open_failed(&self, id: SessionId, status: SecStatus) {
        let entry = self.table.lock(&self.platform).remove(id);
        if let Some(mut entry) = entry {
            if let Some(request) = entry.pending.take() {
                complete_with(
                    request,
                    &OpenReply {
                        status: status.0,
                        session: SessionId(0),
                    },
                );
            }
        }
    }
}

/// What OPEN asked of a session beyond its credentials.
pub(in crate::device) struct SessionParams {
    role: Role,
    client_certificates: ClientCertificates,
    /// OPEN came in the grown layout: replies may carry [`step_flags`].
    reports_flags: bool,
    /// OPEN came in its fourth layout ([`SessionOptions`]): STEP's
    /// established reply carries [`step_flags::RESUMED`] or
    /// [`step_flags::FULL_HANDSHAKE`], QUERY's reply [`QueryReply::resumed`].
    reports_resumption: bool,
    /// OPEN's ALPN list (its third layout).
    alpn: Option<ApplicationProtocols>,
}

// The ABI's bounds are the engine's.
const _: () = assert!(MAX_ALPN_LIST == ksspi::alpn::MAX_ALPN_LIST);
const _: () = assert!(MAX_ALPN_NAME == ksspi::alpn::MAX_ALPN_NAME);

/// A store name from OPEN's NUL-padded ASCII (empty: `"MY"`).
fn store_name(raw: &[u8; 16]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let name = core::str::from_utf8(&raw[..end]).unwrap_or("MY");
    String::from(if name.is_empty() { "MY" } else { name })
}

/// `SP_PROT_*` bits to disable for the ABI's allowed [`proto`] bits.
pub(crate) fn disabled_protocols(allowed: u32, server: bool) -> u32 {
    let (v12, v13) = if server {
        (SP_PROT_TLS1_2_SERVER, SP_PROT_TLS1_3_SERVER)
    } else {
        (SP_PROT_TLS1_2_CLIENT, SP_PROT_TLS1_3_CLIENT)
    };
    let mut disabled = 0;
    if allowed & proto::TLS12 == 0 {
        disabled |= v12;
    }
    if allowed & proto::TLS13 == 0 {
        disabled |= v13;
    }
    disabled
}
