//! Model Schannel: the handshake semantics of AcceptSecurityContext /
//! InitializeSecurityContext, produced over rustls's unbuffered API (tokens
//! are real TLS records), synchronously and without pointers. The provider
//! (`provider.rs`) wraps it in the async SSPI surface.
//!
//! Semantics reproduced (Schannel's, not rustls's):
//! - the client's first call, with no input, gives the ClientHello;
//! - input holding no complete record gives `SEC_E_INCOMPLETE_MESSAGE` with a
//!   MISSING count, and consumes nothing (the caller resubmits it with more);
//! - one call consumes one flight: once a call has produced a flight (any
//!   record but a lone middlebox ChangeCipherSpec), records after the one
//!   that produced it are left as EXTRA for the next call, and a partial
//!   record at the end is EXTRA too;
//! - `SEC_E_OK` when the handshake is complete (for a TLS 1.3 server, only once
//!   the client's Finished is in), with any final token, and whatever input
//!   followed as EXTRA;
//! - failures map to Schannel's codes, with the alert rustls sends as the
//!   alert token; a failed context stays failed;
//! - a CertificateRequest the client cannot answer gives
//!   `SEC_I_INCOMPLETE_CREDENTIALS` (no token); the next call goes on without a
//!   client certificate, as Schannel does.

use crate::certs::{CertStore, Identity};
use ksspi::sys::*;
use ksspi::SecStatus;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, UnbufferedClientConnection, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::{UnbufferedServerConnection, WebPkiClientVerifier};
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, Error,
    ProtocolVersion, RootCertStore, ServerConfig, SignatureScheme, SupportedProtocolVersion,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Which TLS versions a credential allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Protocols {
    /// TLS 1.2.
    pub tls12: bool,
    /// TLS 1.3.
    pub tls13: bool,
}

impl Protocols {
    /// TLS 1.2 and 1.3.
    pub const ALL: Protocols = Protocols {
        tls12: true,
        tls13: true,
    };
    /// TLS 1.2 only.
    pub const TLS12: Protocols = Protocols {
        tls12: true,
        tls13: false,
    };
    /// TLS 1.3 only.
    pub const TLS13: Protocols = Protocols {
        tls12: false,
        tls13: true,
    };

    /// From `TLS_PARAMETERS.grbitDisabledProtocols` (0: everything the model
    /// supports, TLS 1.2 and 1.3).
    pub fn from_disabled(disabled: u32, server: bool) -> Self {
        let (v12, v13) = if server {
            (SP_PROT_TLS1_2_SERVER, SP_PROT_TLS1_3_SERVER)
        } else {
            (SP_PROT_TLS1_2_CLIENT, SP_PROT_TLS1_3_CLIENT)
        };
        Protocols {
            tls12: disabled & v12 == 0,
            tls13: disabled & v13 == 0,
        }
    }

    fn versions(self) -> Vec<&'static SupportedProtocolVersion> {
        let mut v = Vec::new();
        if self.tls13 {
            v.push(&rustls::version::TLS13);
        }
        if self.tls12 {
            v.push(&rustls::version::TLS12);
        }
        v
    }
}

/// What a credential is made of.
#[derive(Clone, Debug)]
pub enum CredentialSpec {
    /// A server with its certificate.
    Server {
        /// The certificate and key.
        identity: Identity,
        /// Allowed versions.
        protocols: Protocols,
        /// TLS 1.3 NewSessionTickets sent after the handshake (0: none).
        tls13_tickets: usize,
        /// Ask for, and require, a client certificate chaining to the store's roots.
        require_client_cert: bool,
    },
    /// A client.
    Client {
        /// Allowed versions.
        protocols: Protocols,
        /// `SCH_CRED_MANUAL_CRED_VALIDATION`: do not validate the server's certificate.
        manual_validation: bool,
        /// A client certificate to offer when asked.
        client_identity: Option<Identity>,
    },
}

enum Kind {
    Server(Arc<ServerConfig>),
    Client {
        protocols: Protocols,
        verifier: Arc<dyn ServerCertVerifier>,
        lax: Arc<dyn ServerCertVerifier>,
        manual: bool,
        identity: Option<Arc<rustls::sign::CertifiedKey>>,
    },
}

/// An acquired credential.
pub struct Credential {
    kind: Kind,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Credential {
    /// Build a credential; `SEC_E_NO_CREDENTIALS` for an unusable certificate
    /// or key, `SEC_E_ALGORITHM_MISMATCH` if no protocol is left enabled.
    pub fn new(spec: CredentialSpec, store: &CertStore) -> Result<Credential, SecStatus> {
        let kind = match spec {
            CredentialSpec::Server {
                identity,
                protocols,
                tls13_tickets,
                require_client_cert,
            } => {
                let versions = protocols.versions();
                if versions.is_empty() {
                    return Err(SecStatus::SEC_E_ALGORITHM_MISMATCH);
                }
                let builder = ServerConfig::builder_with_provider(provider())
                    .with_protocol_versions(&versions)
                    .map_err(|_| SecStatus::SEC_E_ALGORITHM_MISMATCH)?;
                let builder = if require_client_cert {
                    let verifier = WebPkiClientVerifier::builder_with_provider(
                        Arc::new(roots(store)),
                        provider(),
                    )
                    .build()
                    .map_err(|_| SecStatus::SEC_E_NO_CREDENTIALS)?;
                    builder.with_client_cert_verifier(verifier)
                } else {
                    builder.with_no_client_auth()
                };
                let key = identity
                    .key()
                    .map_err(|_| SecStatus::SEC_E_NO_CREDENTIALS)?;
                let mut config = builder
                    .with_single_cert(identity.chain.clone(), key)
                    .map_err(|_| SecStatus::SEC_E_NO_CREDENTIALS)?;
                config.send_tls13_tickets = tls13_tickets;
                Kind::Server(Arc::new(config))
            }
            CredentialSpec::Client {
                protocols,
                manual_validation,
                client_identity,
            } => {
                if protocols.versions().is_empty() {
                    return Err(SecStatus::SEC_E_ALGORITHM_MISMATCH);
                }
                let roots = Arc::new(roots(store));
                let verifier: Arc<dyn ServerCertVerifier> = if roots.is_empty() {
                    // No trust anchors: every chain is untrusted.
                    Arc::new(NoRoots(provider()))
                } else {
                    WebPkiServerVerifier::builder_with_provider(roots, provider())
                        .build()
                        .map_err(|_| SecStatus::SEC_E_NO_CREDENTIALS)?
                };
                let identity = match client_identity {
                    None => None,
                    Some(id) => {
                        let key = id.key().map_err(|_| SecStatus::SEC_E_NO_CREDENTIALS)?;
                        let signer = provider()
                            .key_provider
                            .load_private_key(key)
                            .map_err(|_| SecStatus::SEC_E_NO_CREDENTIALS)?;
                        Some(Arc::new(rustls::sign::CertifiedKey::new(
                            id.chain.clone(),
                            signer,
                        )))
                    }
                };
                Kind::Client {
                    protocols,
                    verifier,
                    lax: Arc::new(AcceptAny(provider())),
                    manual: manual_validation,
                    identity,
                }
            }
        };
        Ok(Credential { kind })
    }

    /// Whether this is a server (inbound) credential.
    pub fn is_server(&self) -> bool {
        matches!(self.kind, Kind::Server(_))
    }
}

fn roots(store: &CertStore) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for cert in store.roots() {
        let _ = roots.add(cert);
    }
    roots
}

/// The server-certificate check of a client with no trust anchors.
#[derive(Debug)]
struct NoRoots(Arc<CryptoProvider>);

/// The server-certificate check with validation off (manual validation, or
/// no target name): signatures are still checked, the chain and name are not.
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

macro_rules! signature_checks {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    };
}

impl ServerCertVerifier for NoRoots {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Err(Error::InvalidCertificate(CertificateError::UnknownIssuer))
    }
    signature_checks!();
}

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }
    signature_checks!();
}

/// Records that the server asked for a client certificate, and answers with
/// the credential's identity, if it has one.
#[derive(Debug)]
struct AskedFor {
    asked: AtomicBool,
    identity: Option<Arc<rustls::sign::CertifiedKey>>,
}

impl ResolvesClientCert for AskedFor {
    fn resolve(
        &self,
        _: &[&[u8]],
        _: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.asked.store(true, Ordering::SeqCst);
        self.identity.clone()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

enum Conn {
    Server(UnbufferedServerConnection),
    Client(UnbufferedClientConnection, Arc<AskedFor>),
}

/// The result of one handshake call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// The status the call returns.
    pub status: SecStatus,
    /// The output token.
    pub token: Vec<u8>,
    /// With `SEC_E_INCOMPLETE_MESSAGE`: bytes still needed (SECBUFFER_MISSING).
    pub missing: usize,
    /// Trailing input bytes not consumed (SECBUFFER_EXTRA).
    pub extra: usize,
    /// On failure: the alert record(s) to send.
    pub alert: Vec<u8>,
}

/// One TLS connection, one role, as a security context.
pub struct Context {
    conn: Conn,
    /// Records rustls has been given but not yet discarded (a handshake
    /// message spanning records is joined in place).
    pending: Vec<u8>,
    started: bool,
    established: bool,
    failed: Option<SecStatus>,
    held: Option<Step>,
    /// A post-handshake record DecryptMessage consumed and answered with
    /// SEC_I_RENEGOTIATE: its length, for the handshake call that is handed it.
    post_handshake: Option<usize>,
    /// What rustls wrote in answer to a post-handshake message (a KeyUpdate),
    /// for that handshake call's output.
    post_handshake_out: Vec<u8>,
    /// The peer's close_notify arrived.
    peer_closed: bool,
    /// ApplyControlToken(SCHANNEL_SHUTDOWN) was applied: the next handshake
    /// call produces close_notify.
    shutdown: bool,
    /// The close_notify went out: no handshake call produces anything more.
    close_sent: bool,
    /// The stream sizes, fixed once the handshake is complete.
    sizes: Option<StreamSizes>,
    /// Where EncryptMessage has rustls write a record before it is copied out
    /// to the caller's header, data and trailer buffers: kept for the
    /// context's life, grown to the largest record sealed (at most
    /// MAX_PLAINTEXT and the overhead), so no call allocates once it has
    /// reached that size.
    scratch: Vec<u8>,
}

/// `SecPkgContext_StreamSizes`, as the model's contexts report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamSizes {
    /// Bytes of record before the data (`cbHeader`).
    pub header: usize,
    /// Bytes after it (`cbTrailer`).
    pub trailer: usize,
    /// The most data one EncryptMessage takes (`cbMaximumMessage`).
    pub max_message: usize,
}

/// One DecryptMessage, in place: what became of the caller's buffer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unsealed {
    /// SEC_E_OK, SEC_E_INCOMPLETE_MESSAGE, SEC_I_RENEGOTIATE,
    /// SEC_I_CONTEXT_EXPIRED or an error.
    pub status: SecStatus,
    /// With SEC_E_OK: where the plaintext of the first record now lies in the
    /// buffer (the DATA buffer). It starts after the record's STREAM_HEADER
    /// (`data.start` bytes); the STREAM_TRAILER runs from `data.end` to
    /// `record`.
    pub data: std::ops::Range<usize>,
    /// Length of the record decrypted (0 if none).
    pub record: usize,
    /// Input after the record (SECBUFFER_EXTRA); with SEC_I_RENEGOTIATE, the
    /// post-handshake record itself and what follows.
    pub extra: usize,
    /// With SEC_E_INCOMPLETE_MESSAGE: bytes still needed (SECBUFFER_MISSING).
    pub missing: usize,
}

/// The largest plaintext one record carries.
pub const MAX_PLAINTEXT: usize = 16 * 1024;

const MAX_RECORD: usize = 16 * 1024 + 2048;

/// How the input splits into TLS records.
enum Framing {
    /// `n` bytes of complete records, then a partial one missing `missing` bytes (or none).
    Records { complete: Vec<usize> },
    /// Not TLS.
    Garbage,
}

fn frame(input: &[u8]) -> Framing {
    let mut ends = Vec::new();
    if walk_records(input, |end| ends.push(end)) {
        Framing::Records { complete: ends }
    } else {
        Framing::Garbage
    }
}

/// Walk the record headers of `input`, handing `each` the end of every
/// complete record; false if a header is not TLS (the input is garbage).
fn walk_records(input: &[u8], mut each: impl FnMut(usize)) -> bool {
    let mut off = 0;
    while input.len() - off >= 5 {
        let h = &input[off..off + 5];
        let valid_type = (20..=24).contains(&h[0]);
        if !valid_type || h[1] != 3 {
            return false;
        }
        let len = usize::from(u16::from_be_bytes([h[3], h[4]]));
        if len > MAX_RECORD {
            return false;
        }
        if input.len() - off < 5 + len {
            break;
        }
        off += 5 + len;
        each(off);
    }
    true
}

/// The end of the first complete record of `input` (`Ok(None)`: none yet),
/// every header checked as [`frame`] checks them, without allocating;
/// `Err(())` for garbage.
fn first_record(input: &[u8]) -> Result<Option<usize>, ()> {
    let mut first = None;
    if walk_records(input, |end| {
        first.get_or_insert(end);
    }) {
        Ok(first)
    } else {
        Err(())
    }
}

fn missing_after(tail: &[u8]) -> usize {
    if tail.len() < 5 {
        5 - tail.len()
    } else {
        5 + usize::from(u16::from_be_bytes([tail[3], tail[4]])) - tail.len()
    }
}

/// What driving rustls over the pending records gave.
struct Progress {
    /// A record other than a lone ChangeCipherSpec was produced: a flight.
    produced: bool,
    established: bool,
    error: Option<Error>,
}

macro_rules! drive {
    ($conn:expr, $pending:expr, $out:expr) => {{
        let conn = $conn;
        let pending: &mut Vec<u8> = $pending;
        let out: &mut Vec<u8> = $out;
        let mut progress = Progress {
            produced: false,
            established: false,
            error: None,
        };
        for _ in 0..256 {
            let UnbufferedStatus { discard, state } = conn.process_tls_records(&mut pending[..]);
            let mut stop = false;
            match state {
                Ok(ConnectionState::EncodeTlsData(mut enc)) => {
                    let at = out.len();
                    encode(|buf| enc.encode(buf), out);
                    // A ChangeCipherSpec alone (TLS 1.3 middlebox compatibility)
                    // does not end a flight; anything else does.
                    if out.get(at).is_some_and(|&content_type| content_type != 20) {
                        progress.produced = true;
                    }
                }
                Ok(ConnectionState::TransmitTlsData(tx)) => tx.done(),
                Ok(ConnectionState::BlockedHandshake) => stop = true,
                Ok(ConnectionState::WriteTraffic(_)) | Ok(ConnectionState::ReadTraffic(_)) => {
                    stop = true;
                }
                Ok(ConnectionState::PeerClosed) | Ok(ConnectionState::Closed) => {
                    progress.error = Some(Error::AlertReceived(AlertDescription::CloseNotify));
                    stop = true;
                }
                Ok(_) => stop = true,
                Err(e) => {
                    progress.error = Some(e);
                    stop = true;
                }
            }
            pending.drain(..discard.min(pending.len()));
            if stop {
                break;
            }
        }
        if progress.error.is_none() && !conn.is_handshaking() {
            progress.established = true;
        }
        progress
    }};
}

macro_rules! drain_alerts {
    ($conn:expr, $pending:expr, $out:expr) => {{
        let conn = $conn;
        let pending: &mut Vec<u8> = $pending;
        // rustls queues the alert it sends on failure. While something is
        // queued, process_tls_records hands it out before looking at any
        // input, so it is safe to call (and only then: processing the input
        // again would fail again and queue a second fatal alert). The pending
        // bytes are passed because rustls's deframer still refers to them.
        for _ in 0..8 {
            if !conn.wants_write() {
                break;
            }
            let status = conn.process_tls_records(&mut pending[..]);
            let discard = status.discard;
            match status.state {
                Ok(ConnectionState::EncodeTlsData(mut enc)) => encode(|buf| enc.encode(buf), $out),
                _ => break,
            }
            pending.drain(..discard.min(pending.len()));
        }
    }};
}

/// Append what `f` writes to `out`, in place (as the baseline does: no
/// buffer of its own, 2 KiB of room first, then what rustls asks for, which
/// `needs` reads from the error); on any other error `out` is left as it was.
fn append_in_place<E>(
    mut f: impl FnMut(&mut [u8]) -> Result<usize, E>,
    needs: impl Fn(&E) -> Option<usize>,
    out: &mut Vec<u8>,
) -> Result<(), E> {
    let at = out.len();
    let mut room = 2048;
    loop {
        out.resize(at + room, 0);
        match f(&mut out[at..]) {
            Ok(n) => {
                out.truncate(at + n);
                return Ok(());
            }
            Err(e) => match needs(&e) {
                Some(required) => room = required,
                None => {
                    out.truncate(at);
                    return Err(e);
                }
            },
        }
    }
}

/// Append the message `f` encodes to `out` (nothing on a failure).
fn encode(f: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>, out: &mut Vec<u8>) {
    let needs = |e: &EncodeError| match e {
        EncodeError::InsufficientSize(e) => Some(e.required_size),
        _ => None,
    };
    let _ = append_in_place(f, needs, out);
}

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

impl Context {
    /// A server context over `cred`.
    pub fn server(cred: &Credential) -> Result<Context, SecStatus> {
        let Kind::Server(config) = &cred.kind else {
            return Err(SecStatus::SEC_E_WRONG_CREDENTIAL_HANDLE);
        };
        let conn = UnbufferedServerConnection::new(config.clone()).map_err(|e| map_error(&e))?;
        Ok(Context::with(Conn::Server(conn)))
    }

    /// A client context over `cred`, towards `target` (the SNI and the name the
    /// certificate must carry; `None`: no name, and no validation).
    pub fn client(cred: &Credential, target: Option<&str>) -> Result<Context, SecStatus> {
        let Kind::Client {
            protocols,
            verifier,
            lax,
            manual,
            identity,
        } = &cred.kind
        else {
            return Err(SecStatus::SEC_E_WRONG_CREDENTIAL_HANDLE);
        };
        let (name, verifier) = match target.filter(|t| !t.is_empty()) {
            Some(t) => (
                ServerName::try_from(t.to_string())
                    .map_err(|_| SecStatus::SEC_E_INVALID_PARAMETER)?,
                if *manual {
                    lax.clone()
                } else {
                    verifier.clone()
                },
            ),
            None => (
                ServerName::try_from("ksspi.invalid").expect("a valid name"),
                lax.clone(),
            ),
        };
        let asked = Arc::new(AskedFor {
            asked: AtomicBool::new(false),
            identity: identity.clone(),
        });
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&protocols.versions())
            .map_err(|_| SecStatus::SEC_E_ALGORITHM_MISMATCH)?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(asked.clone());
        config.resumption = rustls::client::Resumption::disabled();
        config.enable_sni = target.is_some();
        let conn =
            UnbufferedClientConnection::new(Arc::new(config), name).map_err(|e| map_error(&e))?;
        Ok(Context::with(Conn::Client(conn, asked)))
    }

    fn with(conn: Conn) -> Context {
        Context {
            conn,
            pending: Vec::new(),
            started: false,
            established: false,
            failed: None,
            held: None,
            post_handshake: None,
            post_handshake_out: Vec::new(),
            peer_closed: false,
            shutdown: false,
            close_sent: false,
            sizes: None,
            scratch: Vec::new(),
        }
    }

    /// Whether the handshake is complete.
    pub fn is_established(&self) -> bool {
        self.established
    }

    /// `dwProtocol` as Schannel reports it (`SP_PROT_TLS1_3_SERVER`, ...).
    pub fn protocol(&self) -> Option<u32> {
        let (server, v) = match &self.conn {
            Conn::Server(c) => (true, c.protocol_version()),
            Conn::Client(c, _) => (false, c.protocol_version()),
        };
        Some(match (v?, server) {
            (ProtocolVersion::TLSv1_3, true) => SP_PROT_TLS1_3_SERVER,
            (ProtocolVersion::TLSv1_3, false) => SP_PROT_TLS1_3_CLIENT,
            (ProtocolVersion::TLSv1_2, true) => SP_PROT_TLS1_2_SERVER,
            (ProtocolVersion::TLSv1_2, false) => SP_PROT_TLS1_2_CLIENT,
            _ => return None,
        })
    }

    /// The peer's certificates (DER, leaf first), once it sent them.
    pub fn peer_certificates(&self) -> Vec<Vec<u8>> {
        let certs = match &self.conn {
            Conn::Server(c) => c.peer_certificates(),
            Conn::Client(c, _) => c.peer_certificates(),
        };
        certs
            .map(|certs| certs.iter().map(|c| c.as_ref().to_vec()).collect())
            .unwrap_or_default()
    }

    /// The negotiated cipher suite's IANA name.
    pub fn cipher_suite_name(&self) -> Option<&'static str> {
        let suite = match &self.conn {
            Conn::Server(c) => c.negotiated_cipher_suite(),
            Conn::Client(c, _) => c.negotiated_cipher_suite(),
        };
        suite.and_then(|s| s.suite().as_str())
    }

    fn drive(&mut self, out: &mut Vec<u8>) -> Progress {
        match &mut self.conn {
            Conn::Server(c) => drive!(c, &mut self.pending, out),
            Conn::Client(c, _) => drive!(c, &mut self.pending, out),
        }
    }

    fn fail(&mut self, status: SecStatus, extra: usize) -> Step {
        let mut alert = Vec::new();
        match &mut self.conn {
            Conn::Server(c) => drain_alerts!(c, &mut self.pending, &mut alert),
            Conn::Client(c, _) => drain_alerts!(c, &mut self.pending, &mut alert),
        }
        if alert.is_empty() && !self.started_encryption() {
            // rustls had nothing queued (garbage before any TLS): a plaintext
            // fatal alert, as Schannel sends with extended errors.
            let desc = match status {
                SecStatus::SEC_E_ALGORITHM_MISMATCH => TLS1_ALERT_HANDSHAKE_FAILURE,
                SecStatus::SEC_E_INVALID_TOKEN | SecStatus::SEC_E_ILLEGAL_MESSAGE => {
                    TLS1_ALERT_DECODE_ERROR
                }
                _ => TLS1_ALERT_INTERNAL_ERROR,
            };
            alert = vec![21, 3, 3, 0, 2, TLS1_ALERT_FATAL as u8, desc as u8];
        }
        self.failed = Some(status);
        Step {
            status,
            token: Vec::new(),
            missing: 0,
            extra,
            alert,
        }
    }

    fn started_encryption(&self) -> bool {
        match &self.conn {
            Conn::Server(c) => c.protocol_version().is_some(),
            Conn::Client(c, _) => c.protocol_version().is_some(),
        }
    }

    fn asked_for_certificate(&self) -> bool {
        match &self.conn {
            Conn::Client(_, asked) => {
                asked.asked.swap(false, Ordering::SeqCst) && asked.identity.is_none()
            }
            Conn::Server(_) => false,
        }
    }

    /// One AcceptSecurityContext / InitializeSecurityContext call.
    pub fn step(&mut self, input: &[u8]) -> Step {
        if let Some(status) = self.failed {
            return Step {
                status,
                extra: input.len(),
                ..Step::default()
            };
        }
        if let Some(mut held) = self.held.take() {
            held.extra = input.len();
            return held;
        }
        if self.established {
            return self.step_established(input);
        }
        let mut token = Vec::new();
        if let Conn::Client(..) = self.conn {
            if !self.started {
                self.started = true;
                let progress = self.drive(&mut token);
                if let Some(e) = progress.error {
                    return self.fail(map_error(&e), input.len());
                }
                return Step {
                    status: SecStatus::SEC_I_CONTINUE_NEEDED,
                    token,
                    extra: input.len(),
                    ..Step::default()
                };
            }
        }
        self.started = true;
        let ends = match frame(input) {
            Framing::Garbage => return self.fail(SecStatus::SEC_E_INVALID_TOKEN, 0),
            Framing::Records { complete } => complete,
        };
        if ends.is_empty() {
            return Step {
                status: SecStatus::SEC_E_INCOMPLETE_MESSAGE,
                missing: missing_after(input),
                ..Step::default()
            };
        }
        let mut consumed = 0;
        let mut established = false;
        for end in ends {
            self.pending.extend_from_slice(&input[consumed..end]);
            consumed = end;
            let progress = self.drive(&mut token);
            if let Some(e) = progress.error {
                return self.fail(map_error(&e), input.len() - consumed);
            }
            if progress.established {
                established = true;
                break;
            }
            if progress.produced {
                break; // one flight per call: the rest waits as EXTRA
            }
        }
        let extra = input.len() - consumed;
        self.established = established;
        if established {
            self.sizes = self.negotiated_sizes();
        }
        let status = if established {
            SecStatus::SEC_E_OK
        } else {
            SecStatus::SEC_I_CONTINUE_NEEDED
        };
        let step = Step {
            status,
            token,
            missing: 0,
            extra,
            alert: Vec::new(),
        };
        if self.asked_for_certificate() {
            // Schannel stops here to let the caller find a certificate; the
            // next call goes on without one.
            self.held = Some(step);
            return Step {
                status: SecStatus::SEC_I_INCOMPLETE_CREDENTIALS,
                extra,
                ..Step::default()
            };
        }
        step
    }
}

macro_rules! with_conn {
    ($self:expr, $c:ident => $body:expr) => {
        match &mut $self.conn {
            Conn::Server($c) => $body,
            Conn::Client($c, _) => $body,
        }
    };
}

/// Append the record `f` encrypts to `out`.
fn encrypt_into(
    f: impl FnMut(&mut [u8]) -> Result<usize, EncryptError>,
    out: &mut Vec<u8>,
) -> Result<(), SecStatus> {
    let needs = |e: &EncryptError| match e {
        EncryptError::InsufficientSize(e) => Some(e.required_size),
        _ => None,
    };
    append_in_place(f, needs, out).map_err(|_| SecStatus::SEC_E_CONTEXT_EXPIRED)
}

/// The record layer: EncryptMessage, DecryptMessage, stream sizes, and the
/// handshake calls after the handshake (post-handshake messages, shutdown).
impl Context {
    /// `SECPKG_ATTR_STREAM_SIZES`, once established.
    pub fn stream_sizes(&self) -> Option<StreamSizes> {
        self.sizes.filter(|_| self.established)
    }

    /// The stream sizes of the negotiated version and suite.
    fn negotiated_sizes(&self) -> Option<StreamSizes> {
        let tls13 = self.protocol()? & (SP_PROT_TLS1_3_SERVER | SP_PROT_TLS1_3_CLIENT) != 0;
        let suite = self.cipher_suite_name().unwrap_or("");
        let (header, trailer) = if tls13 {
            (5, 17) // content type byte and the 16-byte tag after the data
        } else if suite.contains("GCM") {
            (13, 16) // the 8-byte explicit nonce before, the tag after
        } else {
            (5, 16) // ChaCha20-Poly1305: the tag after
        };
        Some(StreamSizes {
            header,
            trailer,
            max_message: MAX_PLAINTEXT,
        })
    }

    fn usable(&self) -> Result<(), SecStatus> {
        if let Some(status) = self.failed {
            return Err(status);
        }
        if !self.established {
            return Err(SecStatus::SEC_E_INVALID_HANDLE);
        }
        Ok(())
    }

    /// EncryptMessage: one record carrying `data` (at most [`MAX_PLAINTEXT`]
    /// bytes), exactly `header + data.len() + trailer` bytes of
    /// [`Context::stream_sizes`]: header, ciphertext, trailer. rustls writes
    /// the record into the context's scratch buffer, which the result borrows
    /// until the next call (the provider copies it out to the caller's
    /// buffers); nothing is allocated once the scratch has grown to the
    /// largest record. rustls cannot write over the plaintext it reads (its
    /// input and output are two slices that may not alias), so one copy is
    /// the fewest a caller's buffers in place can get.
    ///
    /// Empty `data` gives an empty record: rustls seals no record for no
    /// data (Schannel would send a record with no data in it).
    pub fn encrypt(&mut self, data: &[u8]) -> Result<&[u8], SecStatus> {
        self.usable()?;
        if data.len() > MAX_PLAINTEXT {
            return Err(SecStatus::SEC_E_BUFFER_TOO_SMALL);
        }
        if self.shutdown {
            return Err(SecStatus::SEC_E_CONTEXT_EXPIRED);
        }
        let Some(sizes) = self.sizes else {
            return Err(SecStatus::SEC_E_INVALID_HANDLE);
        };
        let len = sizes.header + data.len() + sizes.trailer;
        if self.scratch.len() < len {
            self.scratch.resize(len, 0);
        }
        // Exactly one record's room: were rustls to put anything before the
        // record (a queued handshake message), it would refuse for want of
        // room and keep it, rather than hand back more than one record.
        let out = &mut self.scratch[..len];
        let mut empty: [u8; 0] = [];
        let written = with_conn!(self, c => {
            match c.process_tls_records(&mut empty).state {
                Ok(ConnectionState::WriteTraffic(mut wt)) => match wt.encrypt(data, out) {
                    Ok(n) => Ok(n),
                    Err(EncryptError::InsufficientSize(_)) => Err(SecStatus::SEC_E_INTERNAL_ERROR),
                    Err(_) => Err(SecStatus::SEC_E_CONTEXT_EXPIRED),
                },
                Ok(_) => Err(SecStatus::SEC_E_CONTEXT_EXPIRED),
                Err(e) => Err(map_error(&e)),
            }
        })?;
        if written != len && !(data.is_empty() && written == 0) {
            return Err(SecStatus::SEC_E_INTERNAL_ERROR);
        }
        Ok(&self.scratch[..written])
    }

    /// DecryptMessage over a byte stream, in place: the first record of
    /// `buf` is decrypted where it lies, its plaintext put after its header
    /// ([`Unsealed::data`]), and what follows it left alone (EXTRA). Nothing
    /// is allocated; the plaintext is copied once, from the buffer rustls
    /// keeps it in (its `ReadTraffic` hands out a chunk it owns, not a slice
    /// of the record) into the record. On a failure the record's bytes are
    /// left as rustls left them.
    pub fn decrypt(&mut self, buf: &mut [u8]) -> Unsealed {
        let refuse = |status| Unsealed {
            status,
            ..Unsealed::default()
        };
        if let Err(status) = self.usable() {
            return refuse(status);
        }
        if self.peer_closed {
            return refuse(SecStatus::SEC_I_CONTEXT_EXPIRED);
        }
        if self.post_handshake.is_some() {
            // The post-handshake record must go to the handshake call first.
            return refuse(SecStatus::SEC_E_OUT_OF_SEQUENCE);
        }
        let record = match first_record(buf) {
            Err(()) => {
                self.failed = Some(SecStatus::SEC_E_DECRYPT_FAILURE);
                return refuse(SecStatus::SEC_E_DECRYPT_FAILURE);
            }
            Ok(None) => {
                return Unsealed {
                    status: SecStatus::SEC_E_INCOMPLETE_MESSAGE,
                    missing: missing_after(buf),
                    ..Unsealed::default()
                }
            }
            Ok(Some(record)) => record,
        };
        let input_len = buf.len();
        let header = self.sizes.map_or(5, |s| s.header);
        let rec = &mut buf[..record];
        let mut got = 0;
        let mut closed = false;
        let mut error = None;
        let mut answer = Vec::new();
        with_conn!(self, c => {
            let mut off = 0;
            for _ in 0..16 {
                let UnbufferedStatus { discard, state } = c.process_tls_records(&mut rec[off..]);
                let mut stop = false;
                let mut readable = false;
                match state {
                    // The record's plaintext is queued in rustls; it is read
                    // below, once this state (which borrows `rec`) is gone.
                    Ok(ConnectionState::ReadTraffic(_)) => readable = true,
                    Ok(ConnectionState::EncodeTlsData(mut enc)) => {
                        encode(|b| enc.encode(b), &mut answer)
                    }
                    Ok(ConnectionState::TransmitTlsData(tx)) => tx.done(),
                    Ok(ConnectionState::PeerClosed) | Ok(ConnectionState::Closed) => {
                        closed = true;
                        stop = true;
                    }
                    Ok(_) => stop = true,
                    Err(e) => {
                        error = Some(map_error(&e));
                        stop = true;
                    }
                }
                off += discard;
                if readable {
                    // With plaintext queued, rustls answers ReadTraffic before
                    // it looks at its input: asked over an empty buffer, it
                    // leaves `rec` free to take the plaintext.
                    let mut none: [u8; 0] = [];
                    match c.process_tls_records(&mut none).state {
                        Ok(ConnectionState::ReadTraffic(mut rt)) => {
                            while let Some(r) = rt.next_record() {
                                match r {
                                    Ok(app) => {
                                        let (at, n) = (header + got, app.payload.len());
                                        if at + n > rec.len() {
                                            // More plaintext than the record held.
                                            error = Some(SecStatus::SEC_E_INTERNAL_ERROR);
                                            break;
                                        }
                                        rec[at..at + n].copy_from_slice(app.payload);
                                        got += n;
                                    }
                                    Err(e) => {
                                        error = Some(map_error(&e));
                                        break;
                                    }
                                }
                            }
                        }
                        // Not what rustls does with plaintext queued.
                        _ => error = Some(SecStatus::SEC_E_INTERNAL_ERROR),
                    }
                }
                if stop || error.is_some() {
                    break;
                }
            }
        });
        if let Some(status) = error {
            if status != SecStatus::SEC_I_CONTEXT_EXPIRED {
                self.failed = Some(status);
            }
            return refuse(status);
        }
        let extra = input_len - record;
        if closed {
            self.peer_closed = true;
            return Unsealed {
                status: SecStatus::SEC_I_CONTEXT_EXPIRED,
                record,
                extra,
                ..Unsealed::default()
            };
        }
        if got == 0 {
            // A handshake message after the handshake (a TLS 1.3
            // NewSessionTicket or KeyUpdate): Schannel says
            // SEC_I_RENEGOTIATE and wants the record handed to the handshake
            // call, so it stays in EXTRA.
            self.post_handshake = Some(record);
            self.post_handshake_out = answer;
            return Unsealed {
                status: SecStatus::SEC_I_RENEGOTIATE,
                extra: input_len,
                ..Unsealed::default()
            };
        }
        Unsealed {
            status: SecStatus::SEC_E_OK,
            data: header..header + got,
            record,
            extra,
            missing: 0,
        }
    }

    /// The model's stand-in for a peer that updates its keys (a TLS 1.3
    /// KeyUpdate, update_requested, as rustls sends it): returns the record to
    /// send. Schannel has no such call; tests use it to send a second
    /// post-handshake message after the tickets.
    pub fn request_key_update(&mut self) -> Result<Vec<u8>, SecStatus> {
        self.usable()?;
        let mut out = Vec::new();
        let mut empty: [u8; 0] = [];
        with_conn!(self, c => {
            match c.process_tls_records(&mut empty).state {
                Ok(ConnectionState::WriteTraffic(wt)) => {
                    wt.refresh_traffic_keys().map_err(|e| map_error(&e))?
                }
                Ok(_) => return Err(SecStatus::SEC_E_CONTEXT_EXPIRED),
                Err(e) => return Err(map_error(&e)),
            }
            for _ in 0..4 {
                match c.process_tls_records(&mut empty).state {
                    Ok(ConnectionState::EncodeTlsData(mut enc)) => {
                        encode(|b| enc.encode(b), &mut out)
                    }
                    Ok(ConnectionState::TransmitTlsData(tx)) => tx.done(),
                    _ => break,
                }
            }
        });
        Ok(out)
    }

    /// A peer's KeyUpdate that asked for ours: rustls queues its answer until
    /// its next write of application data, where Schannel returns it from the
    /// handshake call that was handed the KeyUpdate. An encrypt into an empty
    /// buffer moves the queued answer into rustls's send queue and writes
    /// nothing (it fails for want of room before it encrypts), and the queue
    /// then comes out as EncodeTlsData.
    fn flush_key_update_answer(&mut self, token: &mut Vec<u8>) {
        let mut empty: [u8; 0] = [];
        with_conn!(self, c => {
            if let Ok(ConnectionState::WriteTraffic(mut wt)) = c.process_tls_records(&mut empty).state {
                let _ = wt.encrypt(&[0], &mut []);
            }
            for _ in 0..4 {
                match c.process_tls_records(&mut empty).state {
                    Ok(ConnectionState::EncodeTlsData(mut enc)) => encode(|b| enc.encode(b), token),
                    Ok(ConnectionState::TransmitTlsData(tx)) => tx.done(),
                    _ => break,
                }
            }
        });
    }

    /// ApplyControlToken(SCHANNEL_SHUTDOWN): the next handshake call
    /// produces close_notify.
    pub fn apply_shutdown(&mut self) -> SecStatus {
        if self.failed.is_some() || !self.established {
            return SecStatus::SEC_E_INVALID_HANDLE;
        }
        self.shutdown = true;
        SecStatus::SEC_E_OK
    }

    /// A handshake call once established: the post-handshake record
    /// DecryptMessage handed back, or the close_notify after a shutdown.
    fn step_established(&mut self, input: &[u8]) -> Step {
        // close_notify goes once; reading goes on after it (data the peer sent
        // before its own close_notify, a ticket, the close_notify), as curl's
        // Schannel shutdown reads until SEC_I_CONTEXT_EXPIRED.
        if self.shutdown && !self.close_sent {
            let mut token = Vec::new();
            let mut empty: [u8; 0] = [];
            let sent = with_conn!(self, c => {
                match c.process_tls_records(&mut empty).state {
                    Ok(ConnectionState::WriteTraffic(mut wt)) => {
                        encrypt_into(|buf| wt.queue_close_notify(buf), &mut token)
                    }
                    _ => Err(SecStatus::SEC_E_CONTEXT_EXPIRED),
                }
            });
            self.close_sent = true;
            return match sent {
                Ok(()) => Step {
                    status: SecStatus::SEC_E_OK,
                    token,
                    extra: input.len(),
                    ..Step::default()
                },
                Err(status) => Step {
                    status,
                    extra: input.len(),
                    ..Step::default()
                },
            };
        }
        match self.post_handshake.take() {
            Some(record) if input.len() >= record => {
                let mut token = std::mem::take(&mut self.post_handshake_out);
                self.flush_key_update_answer(&mut token);
                Step {
                    status: SecStatus::SEC_E_OK,
                    token,
                    extra: input.len() - record,
                    ..Step::default()
                }
            }
            held => {
                self.post_handshake = held;
                Step {
                    status: if self.close_sent {
                        SecStatus::SEC_E_CONTEXT_EXPIRED
                    } else {
                        SecStatus::SEC_E_OUT_OF_SEQUENCE
                    },
                    extra: input.len(),
                    ..Step::default()
                }
            }
        }
    }
}
