//! A TLS session's handshake, sans-IO: bytes received from the peer go in,
//! bytes to send and an outcome come out, through one async context reused for
//! every call (create once; reinit, issue, complete per call; free once).
//!
//! One [`Session::step`] runs as many calls as the input allows: a call that
//! leaves `SECBUFFER_EXTRA` feeds the rest straight into the next call;
//! `SEC_I_INCOMPLETE_CREDENTIALS` is answered by calling again (Schannel then
//! proceeds without a client certificate); the step ends when the handshake
//! needs more input (`SEC_E_INCOMPLETE_MESSAGE` with the MISSING count, or a
//! flight fully consumed), is established (leftover bytes kept for the record
//! layer), or failed (with the alert to send). Its outcome reaches the owner
//! through [`SessionEvents::step_done`], at PASSIVE_LEVEL, exactly once per
//! step, possibly before `step` returns.
//!
//! Once established, the same session is the record layer:
//! [`Session::encrypt`] seals plaintext into records of at most the stream
//! sizes' maximum message (`EncryptMessage`, synchronous); [`Session::decrypt`]
//! opens a byte stream in place (`DecryptMessage`: INCOMPLETE_MESSAGE with
//! MISSING, EXTRA for several records in one read, `SEC_I_CONTEXT_EXPIRED` on
//! close_notify), and hands a post-handshake message (`SEC_I_RENEGOTIATE`:
//! TLS 1.3 NewSessionTicket, KeyUpdate) back through the handshake call on the
//! session's async context, as Schannel requires, then goes on decrypting;
//! [`Session::shutdown`] applies `SCHANNEL_SHUTDOWN` and makes the final
//! handshake call that produces close_notify. Decrypt and shutdown report
//! through [`SessionEvents::record_done`], like steps.
//!
//! Buffers are sized to need, bounded by [`Limits`]: a session starts with
//! none, its input and output grow (at least doubling) when a step or a
//! decrypt needs more room, and the handshake's are given back once it ends.
//! Output tokens are allocated by the provider (`*_REQ_ALLOCATE_MEMORY`),
//! copied out and freed with `FreeContextBuffer`. Once a session's buffers
//! have their size, a step, an encrypt or a decrypt allocates nothing; each
//! growth is counted in [`EngineStats::buffer_grows`].
//! [`EngineStats::buffer_grows`]: super::EngineStats::buffer_grows
//!
//! The parts, one concern each:
//! - this file: the public [`Session`] API, its setup, reports and events;
//! - `state.rs`: the phase, with each phase's data inside it;
//! - `machine.rs`: the machine the conductor drives, its buffers and the
//!   handshake call every path makes;
//! - `handshake.rs`: the handshake path (steps);
//! - `send.rs`: encrypt and close_notify sent;
//! - `receive.rs`: decrypt, post-handshake messages and the peer's
//!   close_notify.

mod handshake;
mod machine;
mod receive;
mod send;
mod state;

pub use machine::{max_grows, TlsMachine, MIN_BUFFER};

use super::conductor::{Conductor, EngineStats, Platform, ReadyNotify, StartError};
use crate::alpn::ApplicationProtocols;
use crate::handle::{Credentials, HandleSlot, StreamSizes};
use crate::irql::Passive;
use crate::provider::SspiProvider;
use crate::status::SecStatus;
use crate::sys::*;
use alloc::sync::Arc;
use alloc::vec::Vec;

/// Which side of the handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// `SspiAcceptSecurityContextAsync`.
    Server,
    /// `SspiInitializeSecurityContextAsync` towards `target` (the name the
    /// server's certificate must carry; `None` skips the name check).
    Client {
        /// The target name.
        target: Option<alloc::string::String>,
    },
}

/// What a server asks of its clients' certificates.
///
/// `Request` and `Require` both set `ASC_REQ_MUTUAL_AUTH` on every
/// `AcceptSecurityContext` call (sspi.h; the AcceptSecurityContext (Schannel)
/// page: the server asks the client for a certificate, a CertificateRequest).
/// Schannel itself completes the handshake when the client answers without
/// one and leaves the decision to the caller: msquic's kernel path
/// (`src/platform/tls_schannel.c`, with
/// `QUIC_CREDENTIAL_FLAG_REQUIRE_CLIENT_AUTHENTICATION`) sets
/// `ASC_REQ_MUTUAL_AUTH`, then after `SEC_E_OK` queries
/// `SECPKG_ATTR_REMOTE_CERTIFICATES` and fails the connection itself when
/// there is none (`SEC_E_NO_CREDENTIALS`). `Require` does the same:
/// the step that would have been established fails with
/// [`NO_CLIENT_CERTIFICATE`]. A client certificate that was sent is not
/// judged here (Schannel reports its chain's validation apart, as HTTP.sys's
/// `HTTP_SSL_CLIENT_CERT_INFO.CertFlags` and msquic's
/// `SECPKG_ATTR_CERT_CHECK_RESULT_INPROC` show); the owner reads it with
/// [`Session::describe`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientCertificates {
    /// Do not ask (a client's sessions always use this).
    #[default]
    Ignore,
    /// Ask; a client without one is served all the same.
    Request,
    /// Ask, and fail the handshake with [`NO_CLIENT_CERTIFICATE`] if none came.
    Require,
}

/// What a server's handshake fails with under [`ClientCertificates::Require`]
/// when the client sent no certificate: what Schannel answers
/// `SECPKG_ATTR_REMOTE_CERTIFICATES` with then, and what msquic reports for it.
pub const NO_CLIENT_CERTIFICATE: SecStatus = SecStatus::SEC_E_NO_CREDENTIALS;

/// Per-session bounds, fixed at setup, so a peer cannot make the kernel
/// allocate more than this for a session (its buffers grow to need, up to
/// these).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes buffered from the peer, unconsumed.
    pub max_input: usize,
    /// Largest single output token the session takes from the provider
    /// (a larger one fails the step with `SEC_E_BUFFER_TOO_SMALL`).
    pub max_token: usize,
    /// Bytes of output gathered by one step.
    pub max_output: usize,
    /// Where handshake calls write their output token.
    pub tokens: Tokens,
}

/// Where a handshake call writes its output token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tokens {
    /// The provider allocates each token at its size
    /// (`ASC_REQ_ALLOCATE_MEMORY` / `ISC_REQ_ALLOCATE_MEMORY`); the engine
    /// copies it out and frees it with `FreeContextBuffer`. Nothing sized
    /// for the largest flight is held (docs/PERFORMANCE.md, "Memory per
    /// session").
    #[default]
    Provider,
    /// The engine supplies a zeroed buffer of [`Limits::max_token`] bytes,
    /// as HTTP.sys does (docs/DESIGN.md, "Evidence"), from a session's first
    /// handshake call to the end of its handshake (and again for a
    /// post-handshake call): a call that finds it too small has already
    /// advanced the handshake, so it is sized for the largest flight.
    Caller,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_input: 64 * 1024,
            max_token: 32 * 1024,
            max_output: 64 * 1024,
            tokens: Tokens::Provider,
        }
    }
}

/// What a session fails with when a provider call consumed none of its
/// input and produced nothing (a handshake call answering
/// `SEC_I_CONTINUE_NEEDED` with all of its input in `SECBUFFER_EXTRA` and no
/// token, a post-handshake call doing the same, a DecryptMessage consuming
/// nothing): making the same call again would get the same answer forever.
/// Schannel never answers so; the engine stops rather than spin.
pub const NO_PROGRESS: SecStatus = SecStatus::SEC_E_INTERNAL_ERROR;

/// Post-handshake messages (`SEC_I_RENEGOTIATE`: TLS 1.3 NewSessionTicket,
/// KeyUpdate) one decrypt hands to the handshake call, at most (each is an
/// async call). A read full of them can be legitimate: a JDK 17 peer past its
/// key limit asks for a KeyUpdate on every record it reads until our answer
/// arrives (issue 20: 61 in one 16 KiB read, measured). So the bound is what
/// the default input bound (`Limits::max_input`, 64 KiB) can hold of the
/// smallest post-handshake record, a TLS 1.3 KeyUpdate of 27 bytes (2 427),
/// rounded up: a peer cannot reach it with real records, and a provider
/// whose handshake calls consume a byte at a time stops there.
pub const MAX_POST_HANDSHAKE: u32 = 4096;

/// What a decrypt fails with when its input holds more than
/// [`MAX_POST_HANDSHAKE`] post-handshake messages.
pub const TOO_MANY_POST_HANDSHAKE: SecStatus = SecStatus::SEC_E_ILLEGAL_MESSAGE;

/// How a step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Send the output, then step again with the peer's reply. `missing` is the
    /// `SECBUFFER_MISSING` count when a partial record is buffered (0 if unknown).
    NeedInput {
        /// Bytes still missing from the buffered partial record.
        missing: u32,
    },
    /// The handshake is complete (send the output, if any). Leftover input is
    /// kept for the record layer ([`Session::take_leftover`]).
    Established,
    /// The handshake failed with this status; the output is the alert to send.
    Failed(SecStatus),
}

/// Whether an established handshake resumed a session, as
/// `SECPKG_ATTR_SESSION_INFO` tells it (`SSL_SESSION_RECONNECT`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Resumed {
    /// The provider did not answer the query (kernel Schannel's answer is
    /// unknown until a Windows run: docs/DESIGN.md, contract item 11), or the
    /// handshake is not complete.
    #[default]
    Unknown,
    /// A full handshake.
    No,
    /// An abbreviated handshake: a cached session or a ticket.
    Yes,
}

impl Resumed {
    /// From the query's answer.
    pub fn from_session_info(info: Option<&SecPkgContext_SessionInfo>) -> Resumed {
        match info {
            None => Resumed::Unknown,
            Some(i) if i.dwFlags & SSL_SESSION_RECONNECT != 0 => Resumed::Yes,
            Some(_) => Resumed::No,
        }
    }
}

/// The report of one step.
#[derive(Debug)]
pub struct StepReport<'a> {
    /// How it ended.
    pub outcome: Outcome,
    /// Bytes to send to the peer (tokens, or the alert on failure).
    pub output: &'a [u8],
    /// SSPI calls made by the step.
    pub calls: u32,
    /// With [`Outcome::Established`]: bytes that followed the handshake, kept
    /// for the record layer (SECBUFFER_EXTRA).
    pub leftover: usize,
    /// With [`Outcome::Established`]: the negotiated protocol and cipher
    /// (`SECPKG_ATTR_CONNECTION_INFO`), if the provider answered.
    pub connection: Option<SecPkgContext_ConnectionInfo>,
    /// With [`Outcome::Established`], for a session with an ALPN list
    /// ([`SessionSetup::alpn`]): `SECPKG_ATTR_APPLICATION_PROTOCOL`, the
    /// negotiation's status and the protocol chosen, if the provider answered.
    pub application_protocol: Option<SecPkgContext_ApplicationProtocol>,
    /// With [`Outcome::Established`]: whether the handshake resumed a
    /// session (`SECPKG_ATTR_SESSION_INFO`); [`Resumed::Unknown`] otherwise.
    pub resumed: Resumed,
    /// A client's: the server asked for a client certificate and the
    /// credentials had none to give (a handshake call answered
    /// `SEC_I_INCOMPLETE_CREDENTIALS`), in this step or an earlier one.
    pub certificate_requested: bool,
}

/// What a session tells its owner, at PASSIVE_LEVEL.
pub trait SessionEvents: Send + Sync + 'static {
    /// A step ended. Copy the output out. The session is still busy: calling
    /// `step` from in here is refused; [`SessionEvents::step_ready`] follows.
    fn step_done(&self, report: &StepReport<'_>);
    /// The session accepts the next step now (after `step_done`). A driver
    /// completes the pended request here, so user mode can never send the next
    /// step before the session is ready for it.
    fn step_ready(&self) {}
    /// A decrypt or a shutdown ended (the record layer's counterpart of
    /// `step_done`; `step_ready` follows likewise). Copy the data and output out.
    fn record_done(&self, report: &RecordReport<'_>);
    /// The session is closed and released (its async context freed, its
    /// security context deleted): called exactly once, last. A step cut short
    /// by the close gets no `step_done`: `closed` stands for it (a driver
    /// completes a request still pended on the session here).
    fn closed(&self);
}

/// How a decrypt or a shutdown ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordOutcome {
    /// Every complete record was decrypted into `data`; `missing` is the
    /// `SECBUFFER_MISSING` count of a partial record kept for the next
    /// decrypt (0: nothing buffered, or the count is unknown).
    Data {
        /// Bytes still missing from the buffered partial record.
        missing: u32,
    },
    /// The peer sent close_notify (`SEC_I_CONTEXT_EXPIRED`); `data` holds what
    /// came before it. Nothing more will be decrypted.
    PeerClosed,
    /// Shutdown: `output` is the close_notify to send. Encrypt is refused from
    /// now on; decrypt goes on (to read the peer's close_notify).
    ShutDown,
    /// The record layer failed with this status (a tampered or garbage
    /// record, a failed post-handshake call); the session is unusable.
    /// `data` holds what decrypted before the failure.
    Failed(SecStatus),
}

/// The report of one decrypt or shutdown.
#[derive(Debug)]
pub struct RecordReport<'a> {
    /// How it ended.
    pub outcome: RecordOutcome,
    /// Plaintext decrypted.
    pub data: &'a [u8],
    /// Bytes to send to the peer: what the handshake calls for post-handshake
    /// messages produced (a KeyUpdate's answer), or close_notify.
    pub output: &'a [u8],
    /// Post-handshake messages (`SEC_I_RENEGOTIATE`) handed to the handshake call.
    pub renegotiations: u32,
    /// Async SSPI calls made.
    pub calls: u32,
}

/// What [`Session::encrypt`] sealed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sealed {
    /// Bytes of records written at the start of the output.
    pub len: usize,
    /// Records written (one `EncryptMessage` each): one per stream sizes'
    /// maximum message of plaintext, none for no plaintext.
    pub records: usize,
}

/// What an established session says about itself ([`Session::describe`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    /// `SECPKG_ATTR_CONNECTION_INFO`: protocol, cipher, hash, key exchange.
    pub connection: Option<SecPkgContext_ConnectionInfo>,
    /// `SECPKG_ATTR_APPLICATION_PROTOCOL`, as learned at establishment (a
    /// session with an ALPN list only).
    pub application_protocol: Option<SecPkgContext_ApplicationProtocol>,
    /// Whether the handshake resumed a session, as learned at establishment.
    pub resumed: Resumed,
    /// `SECPKG_ATTR_STREAM_SIZES`.
    pub sizes: Option<StreamSizes>,
    /// Certificates the peer presented (`SECPKG_ATTR_REMOTE_CERTIFICATES`;
    /// 0 if it presented none).
    pub peer_certificates: u32,
    /// Bytes of the leaf's DER copied out (0 if none, or if it did not fit).
    pub leaf_len: usize,
    /// The leaf's size, whether or not it fit.
    pub leaf_size: usize,
}

/// Why a record-layer call refused (nothing happened).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// A step, decrypt or shutdown is in flight.
    Busy,
    /// The session is closing or closed.
    Closed,
    /// The handshake has not completed.
    NotEstablished,
    /// The handshake or the record layer failed earlier with this status, or
    /// the provider refused this call with it.
    Failed(SecStatus),
    /// Decrypt after the peer's close_notify.
    PeerClosed,
    /// Encrypt or shutdown after shutdown.
    ShutDown,
    /// The input would exceed [`Limits::max_input`] bytes buffered.
    TooMuchInput,
    /// The output buffer cannot hold the sealed records
    /// ([`Session::sealed_len`] says how much it needs).
    OutputTooSmall,
    /// The input buffer could not grow to take the input (the pool is
    /// short); nothing changed, the decrypt may be tried again.
    InsufficientResources,
}

/// Why [`Session::step`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepError {
    /// A step is in flight.
    Busy,
    /// The session is closing or closed.
    Closed,
    /// The handshake already ended (established or failed).
    Finished,
    /// The input would exceed [`Limits::max_input`].
    TooMuchInput,
    /// The input buffer could not grow to take the input (the pool is
    /// short); nothing changed, the step may be tried again.
    InsufficientResources,
}

/// What a session is made of.
pub struct SessionSetup<P: SspiProvider> {
    /// Server or client (with its target name).
    pub role: Role,
    /// The credentials (shared between sessions; leased per call).
    pub credentials: Arc<Credentials<P>>,
    /// Buffer bounds.
    pub limits: Limits,
    /// A server's: what it asks of the client's certificate.
    pub client_certificates: ClientCertificates,
    /// The ALPN list, most preferred first (`None`: no ALPN). A client offers
    /// it; a server picks, by its own order, the first the client offered
    /// (Schannel's rule; no overlap fails the handshake with
    /// `SEC_E_APPLICATION_PROTOCOL_MISMATCH` and the `no_application_protocol`
    /// alert). A client whose server chose a protocol it did not offer fails
    /// with [`crate::alpn::UNOFFERED_APPLICATION_PROTOCOL`].
    pub alpn: Option<ApplicationProtocols>,
    /// Where step outcomes and the close are reported.
    pub events: Arc<dyn SessionEvents>,
}

fn record_start_error(e: StartError<RecordError>) -> RecordError {
    match e {
        StartError::Busy => RecordError::Busy,
        StartError::Closing => RecordError::Closed,
        StartError::Refused(e) => e,
    }
}

struct Ready(Arc<dyn SessionEvents>);

impl ReadyNotify for Ready {
    fn ready(&self) {
        self.0.step_ready();
    }
}

/// A TLS session: a handshake machine on its async context.
pub struct Session<P: SspiProvider, K: Platform> {
    conductor: Conductor<P, K, TlsMachine<P, K>>,
}

impl<P: SspiProvider, K: Platform> Session<P, K> {
    /// Set a session up (its fixed allocations happen here; its buffers
    /// come when first needed).
    pub fn new(
        provider: P,
        platform: K,
        setup: SessionSetup<P>,
        stats: Arc<EngineStats>,
        at: &Passive,
    ) -> Result<Self, SecStatus> {
        let SessionSetup {
            role,
            credentials,
            limits,
            client_certificates,
            alpn,
            events,
        } = setup;
        let notify: Arc<dyn ReadyNotify> = Arc::new(Ready(events.clone()));
        let machine = TlsMachine::new(
            provider.clone(),
            platform.clone(),
            stats.clone(),
            role,
            credentials,
            limits,
            client_certificates,
            alpn,
            events,
        )?;
        Ok(Session {
            conductor: Conductor::new(provider, platform, machine, stats, Some(notify), at)?,
        })
    }

    /// Feed bytes from the peer (the first client step takes none) and run the
    /// handshake until it needs more, ends or fails. The outcome arrives
    /// through [`SessionEvents::step_done`].
    pub fn step(&self, input: &[u8], at: &Passive) -> Result<(), StepError> {
        self.conductor
            .start(|m| m.push_input(input), at)
            .map_err(|e| match e {
                StartError::Busy => StepError::Busy,
                StartError::Closing => StepError::Closed,
                StartError::Refused(e) => e,
            })
    }

    /// Decrypt what the peer sent (appended to any partial record buffered;
    /// an empty input decrypts what followed the handshake). The outcome, with
    /// the plaintext, arrives through [`SessionEvents::record_done`].
    pub fn decrypt(&self, input: &[u8], at: &Passive) -> Result<(), RecordError> {
        self.conductor
            .start(|m| m.push_record_input(input), at)
            .map_err(record_start_error)
    }

    /// Seal `data` into TLS records in `out` (at least
    /// [`Session::sealed_len`] bytes); returns the bytes written at the start
    /// of `out` and how many records they are ([`Sealed`]). Synchronous
    /// (`EncryptMessage` per record); refused while a step, decrypt or
    /// shutdown is in flight.
    pub fn encrypt(
        &self,
        data: &[u8],
        out: &mut [u8],
        _at: &Passive,
    ) -> Result<Sealed, RecordError> {
        self.conductor
            .inspect(|m| m.seal(data, out))
            .unwrap_or(Err(RecordError::Busy))
    }

    /// Bytes `n` bytes of plaintext take once sealed (`None` before the
    /// handshake completes, or while busy).
    pub fn sealed_len(&self, n: usize) -> Option<usize> {
        self.stream_sizes()?.sealed_len(n)
    }

    /// Connection info, stream sizes and the peer's certificates (its leaf's
    /// DER into `leaf`, if it fits), once established; refused while busy.
    pub fn describe(&self, leaf: &mut [u8], _at: &Passive) -> Result<SessionInfo, RecordError> {
        self.conductor
            .inspect(|m| m.describe(leaf))
            .unwrap_or(Err(RecordError::Busy))
    }

    /// The record layer's stream sizes, once established (`None` while busy).
    pub fn stream_sizes(&self) -> Option<StreamSizes> {
        self.conductor.inspect(|m| m.sizes).flatten()
    }

    /// Send close_notify: `ApplyControlToken(SCHANNEL_SHUTDOWN)`, then the
    /// handshake call that produces it. The token arrives through
    /// [`SessionEvents::record_done`] ([`RecordOutcome::ShutDown`]).
    pub fn shutdown(&self, at: &Passive) -> Result<(), RecordError> {
        self.conductor
            .start(|m| m.push_shutdown(), at)
            .map_err(record_start_error)
    }

    /// Append the bytes that followed the handshake (for the record layer).
    /// `None` if the session is busy.
    pub fn take_leftover(&self, out: &mut Vec<u8>) -> Option<()> {
        self.conductor.inspect(|m| m.take_leftover(out))
    }

    /// The security context handle, once established (for the record layer).
    pub fn security_context(&self) -> Option<SecHandle> {
        self.conductor
            .inspect(|m| m.sec.issued().map(HandleSlot::get))
            .flatten()
    }

    /// Close at any moment (any IRQL up to DISPATCH): everything is released
    /// once an in-flight call completes; [`SessionEvents::closed`] follows
    /// exactly once. Dropping the session closes it too.
    pub fn close(&self) {
        self.conductor.close();
    }
}
