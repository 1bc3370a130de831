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
//! Buffers are sized at setup ([`Limits`]); a step, an encrypt or a decrypt
//! allocates nothing.

use super::conductor::{
    zeroed_buffer, Conductor, EngineStats, Issue, Machine, Move, Platform, ReadyNotify, StartError,
};
use super::wipe_used;
use crate::handle::{
    apply_shutdown, decrypt_record, encrypt_record, query_connection_info,
    query_remote_certificates, query_stream_sizes, AsyncContext, Credentials, HandleSlot, Lease,
    SecurityContext, StreamSizes,
};
use crate::irql::Passive;
use crate::provider::SspiProvider;
use crate::status::SecStatus;
use crate::sys::*;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::ops::Range;
use core::ptr;

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

/// Per-session bounds, fixed at setup, so a peer cannot make the kernel
/// allocate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes buffered from the peer, unconsumed.
    pub max_input: usize,
    /// Largest single output token.
    pub max_token: usize,
    /// Bytes of output gathered by one step.
    pub max_output: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_input: 64 * 1024,
            max_token: 32 * 1024,
            max_output: 64 * 1024,
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
/// KeyUpdate) one decrypt hands to the handshake call, at most. A peer
/// sends one or two tickets after a handshake; a read full of them is an
/// attack on the kernel's time (each is an async call).
pub const MAX_POST_HANDSHAKE: u32 = 64;

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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Handshaking,
    Established,
    Failed(SecStatus),
    Deleting,
    Closed,
}

/// The raw call frame: descriptors pointing into the machine's own buffers.
struct Frame {
    in_bufs: [SecBuffer; 2],
    in_desc: SecBufferDesc,
    out_bufs: [SecBuffer; 2],
    out_desc: SecBufferDesc,
    attrs: u32,
    expiry: TimeStamp,
    target: UNICODE_STRING,
}

// SAFETY: the frame's raw pointers point into buffers owned by the same
// machine (heap allocations that never move), used by one owner at a time.
unsafe impl Send for Frame {}

/// What the owner asked for last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Step,
    Decrypt,
    /// `issued`: SCHANNEL_SHUTDOWN applied and the final call made.
    Shutdown {
        issued: bool,
    },
}

/// The session's state machine: the handshake, then the record layer.
///
/// `input` holds bytes from the peer. During a decrypt, `input[plain]` is the
/// plaintext opened so far (each record is decrypted in place; the first
/// one's data stays where it was decrypted, each later one's is moved down
/// to follow it) and `input[cursor..]` what is not consumed yet.
pub struct TlsMachine<P: SspiProvider> {
    provider: P,
    server: bool,
    cred: Option<Arc<Credentials<P>>>,
    lease: Option<Lease>,
    sec: Option<HandleSlot>,
    has_sec: bool,
    target: Vec<u16>,
    input: Vec<u8>,
    /// The most bytes `input` ever held (what [`wipe_used`] zeroes).
    input_high: usize,
    plain: Range<usize>,
    cursor: usize,
    token: Vec<u8>,
    alert: Vec<u8>,
    output: Vec<u8>,
    /// The most bytes `output` ever held.
    output_high: usize,
    limits: Limits,
    frame: Frame,
    phase: Phase,
    op: Op,
    outcome: Option<Outcome>,
    record: Option<RecordOutcome>,
    connection: Option<SecPkgContext_ConnectionInfo>,
    sizes: Option<StreamSizes>,
    calls: u32,
    retries: u8,
    renegotiations: u32,
    close_sent: bool,
    peer_closed: bool,
    events: Arc<dyn SessionEvents>,
}

const ASC_FLAGS: u32 = ASC_REQ_SEQUENCE_DETECT
    | ASC_REQ_REPLAY_DETECT
    | ASC_REQ_CONFIDENTIALITY
    | ASC_REQ_EXTENDED_ERROR
    | ASC_REQ_STREAM;
const ISC_FLAGS: u32 = ISC_REQ_SEQUENCE_DETECT
    | ISC_REQ_REPLAY_DETECT
    | ISC_REQ_CONFIDENTIALITY
    | ISC_REQ_EXTENDED_ERROR
    | ISC_REQ_STREAM;
const ALERT_CAPACITY: usize = 256;

impl<P: SspiProvider> Drop for TlsMachine<P> {
    fn drop(&mut self) {
        // `input` held the plaintext (records are decrypted in place there),
        // `output` what was sent: zeroed before they return to the pool, up
        // to the most either ever held (the bytes past that were never
        // written). `token` and `alert` only ever hold bytes for the wire,
        // as the peer sees them.
        wipe_used(&mut self.input, self.input_high);
        wipe_used(&mut self.output, self.output_high);
    }
}

impl<P: SspiProvider> TlsMachine<P> {
    fn new<K: Platform>(
        provider: P,
        platform: &K,
        role: Role,
        cred: Arc<Credentials<P>>,
        limits: Limits,
        events: Arc<dyn SessionEvents>,
    ) -> Result<Self, SecStatus> {
        let (server, target) = match role {
            Role::Server => (true, Vec::new()),
            Role::Client { target } => (
                false,
                target
                    .map(|t| t.encode_utf16().collect())
                    .unwrap_or_default(),
            ),
        };
        if target.len() > 255 {
            return Err(SecStatus::SEC_E_INVALID_PARAMETER);
        }
        let mut h = TlsMachine {
            provider,
            server,
            cred: Some(cred),
            lease: None,
            sec: Some(HandleSlot::new()),
            has_sec: false,
            target,
            input: platform.reserve(limits.max_input)?,
            input_high: 0,
            plain: 0..0,
            cursor: 0,
            token: zeroed_buffer(platform, limits.max_token)?,
            alert: vec![0; ALERT_CAPACITY],
            output: platform.reserve(limits.max_output)?,
            output_high: 0,
            limits,
            frame: Frame {
                in_bufs: [
                    SecBuffer::empty(SECBUFFER_TOKEN),
                    SecBuffer::empty(SECBUFFER_EMPTY),
                ],
                in_desc: SecBufferDesc {
                    ulVersion: SECBUFFER_VERSION,
                    cBuffers: 0,
                    pBuffers: ptr::null_mut(),
                },
                out_bufs: [
                    SecBuffer::empty(SECBUFFER_TOKEN),
                    SecBuffer::empty(SECBUFFER_ALERT),
                ],
                out_desc: SecBufferDesc {
                    ulVersion: SECBUFFER_VERSION,
                    cBuffers: 0,
                    pBuffers: ptr::null_mut(),
                },
                attrs: 0,
                expiry: TimeStamp::default(),
                target: UNICODE_STRING {
                    Length: 0,
                    MaximumLength: 0,
                    Buffer: ptr::null_mut(),
                },
            },
            phase: Phase::Handshaking,
            op: Op::Step,
            outcome: None,
            record: None,
            connection: None,
            sizes: None,
            calls: 0,
            retries: 0,
            renegotiations: 0,
            close_sent: false,
            peer_closed: false,
            events,
        };
        if !h.target.is_empty() {
            h.frame.target = UNICODE_STRING::from_units(&mut h.target)
                .ok_or(SecStatus::SEC_E_INVALID_PARAMETER)?;
        }
        Ok(h)
    }

    fn push_input(&mut self, input: &[u8]) -> Result<(), StepError> {
        match self.phase {
            Phase::Handshaking => {}
            Phase::Established | Phase::Failed(_) => return Err(StepError::Finished),
            Phase::Deleting | Phase::Closed => return Err(StepError::Closed),
        }
        if self.input.len() + input.len() > self.limits.max_input {
            return Err(StepError::TooMuchInput);
        }
        self.input.extend_from_slice(input);
        self.input_high = self.input_high.max(self.input.len());
        self.op = Op::Step;
        self.output.clear();
        self.calls = 0;
        self.retries = 0;
        Ok(())
    }

    /// Issue a handshake call (accept or initialize) with `input[from..to]`
    /// as its token.
    fn issue_call(
        &mut self,
        ctx: &mut Option<AsyncContext<P>>,
        at: &Passive,
        stats: &EngineStats,
        from: usize,
        to: usize,
    ) -> Move<P> {
        let Some(mut context) = ctx.take() else {
            return self.fail(SecStatus::SEC_E_INVALID_HANDLE);
        };
        if let Err(status) = Issue::ready(&mut context, stats) {
            *ctx = Some(context);
            return self.fail(status);
        }
        let f = &mut self.frame;
        f.in_bufs = [
            SecBuffer {
                cbBuffer: (to - from) as u32,
                BufferType: SECBUFFER_TOKEN,
                pvBuffer: self.input[from..to].as_mut_ptr().cast(),
            },
            SecBuffer::empty(SECBUFFER_EMPTY),
        ];
        f.in_desc = SecBufferDesc::new(&mut f.in_bufs);
        f.out_bufs = [
            SecBuffer {
                cbBuffer: self.token.len() as u32,
                BufferType: SECBUFFER_TOKEN,
                pvBuffer: self.token.as_mut_ptr().cast(),
            },
            SecBuffer {
                cbBuffer: self.alert.len() as u32,
                BufferType: SECBUFFER_ALERT,
                pvBuffer: self.alert.as_mut_ptr().cast(),
            },
        ];
        f.out_desc = SecBufferDesc::new(&mut f.out_bufs);
        let Some(lease) = self.cred.as_ref().map(|c| c.lease()) else {
            *ctx = Some(context);
            return self.fail(SecStatus::SEC_E_INVALID_HANDLE);
        };
        let cred = lease.as_ptr();
        self.lease = Some(lease);
        let slot = self
            .sec
            .as_ref()
            .map_or(ptr::null_mut(), HandleSlot::as_ptr);
        let existing = if self.has_sec { slot } else { ptr::null_mut() };
        let (in_desc, out_desc, attrs, expiry): (*mut _, *mut _, *mut _, *mut _) =
            (&mut f.in_desc, &mut f.out_desc, &mut f.attrs, &mut f.expiry);
        let target: *mut UNICODE_STRING = if self.target.is_empty() {
            ptr::null_mut()
        } else {
            &mut f.target
        };
        let server = self.server;
        // SAFETY: every pointer is into this machine (its frame, buffers, the
        // security-context slot) or the leased credential, all of which stay
        // allocated and untouched until the call completes: the machine is
        // owned by the call until then.
        let issued = unsafe {
            context.issue(at, None, |p, c| {
                if server {
                    p.accept_security_context_async(
                        c, cred, existing, in_desc, ASC_FLAGS, slot, out_desc, attrs, expiry,
                    )
                } else {
                    p.initialize_security_context_async(
                        c, cred, existing, target, ISC_FLAGS, in_desc, slot, out_desc, attrs,
                        expiry,
                    )
                }
            })
        };
        match issued {
            Ok(flight) => Move::Issued(flight),
            Err(refused) => {
                self.lease = None;
                *ctx = Some(refused.context);
                self.fail(refused.status)
            }
        }
    }

    fn fail(&mut self, status: SecStatus) -> Move<P> {
        self.phase = Phase::Failed(status);
        if self.op == Op::Step {
            self.outcome = Some(Outcome::Failed(status));
        } else {
            self.record = Some(RecordOutcome::Failed(status));
        }
        Move::Idle
    }

    /// The `SECBUFFER_EXTRA` / `SECBUFFER_MISSING` a handshake call left in
    /// its second input buffer.
    fn call_leftover(&self) -> (usize, u32) {
        let second = self.frame.in_bufs[1];
        match second.BufferType {
            SECBUFFER_EXTRA => (second.cbBuffer as usize, 0),
            SECBUFFER_MISSING => (0, second.cbBuffer),
            _ => (0, 0),
        }
    }

    fn append_output(&mut self, bytes_from: usize) -> bool {
        let n = self.frame.out_bufs[bytes_from].cbBuffer as usize;
        let src = if bytes_from == 0 {
            &self.token
        } else {
            &self.alert
        };
        if n > src.len() || self.output.len() + n > self.limits.max_output {
            return false;
        }
        self.output.extend_from_slice(&src[..n]);
        self.output_high = self.output_high.max(self.output.len());
        true
    }

    fn step_completed(&mut self, status: SecStatus) {
        self.calls += 1;
        self.lease = None;
        let (extra, missing) = self.call_leftover();
        // The call was given all of `input`.
        let given = self.input.len();
        if self.sec.as_ref().is_some_and(HandleSlot::is_valid) {
            self.has_sec = true;
        }
        match status {
            SecStatus::SEC_E_INCOMPLETE_MESSAGE => {
                // Nothing consumed: wait for the rest of the record.
                self.outcome = Some(Outcome::NeedInput { missing });
            }
            SecStatus::SEC_E_OK
            | SecStatus::SEC_I_CONTINUE_NEEDED
            | SecStatus::SEC_I_INCOMPLETE_CREDENTIALS => {
                if !self.append_output(0) {
                    self.phase = Phase::Failed(SecStatus::SEC_E_BUFFER_TOO_SMALL);
                    self.outcome = Some(Outcome::Failed(SecStatus::SEC_E_BUFFER_TOO_SMALL));
                    return;
                }
                let keep = extra.min(self.input.len());
                self.input.drain(..self.input.len() - keep);
                let produced = self.frame.out_bufs[0].cbBuffer > 0;
                if status == SecStatus::SEC_I_CONTINUE_NEEDED
                    && given > 0
                    && keep == given
                    && !produced
                {
                    // The next call would be this one again.
                    self.phase = Phase::Failed(NO_PROGRESS);
                    self.outcome = Some(Outcome::Failed(NO_PROGRESS));
                    return;
                }
                if status == SecStatus::SEC_E_OK {
                    if let Some(slot) = self.sec.as_ref() {
                        self.connection = query_connection_info(&self.provider, slot).ok();
                        self.sizes = query_stream_sizes(&self.provider, slot).ok();
                    }
                    self.phase = Phase::Established;
                    self.outcome = Some(Outcome::Established);
                } else if status == SecStatus::SEC_I_INCOMPLETE_CREDENTIALS && self.retries < 2 {
                    // Call again: Schannel goes on without a client certificate.
                    self.retries += 1;
                } else if status == SecStatus::SEC_I_INCOMPLETE_CREDENTIALS {
                    self.phase = Phase::Failed(status);
                    self.outcome = Some(Outcome::Failed(SecStatus::SEC_E_NO_CREDENTIALS));
                } else if self.input.is_empty() {
                    self.outcome = Some(Outcome::NeedInput { missing: 0 });
                }
                // else: EXTRA left over, the next call takes it.
            }
            failure => {
                // The alert (extended errors), else any token, goes to the peer.
                if !self.append_output(1) || self.frame.out_bufs[1].cbBuffer == 0 {
                    let _ = self.append_output(0);
                }
                self.phase = Phase::Failed(failure);
                self.outcome = Some(Outcome::Failed(failure));
            }
        }
    }
}

/// The record layer, run by the session's owner at PASSIVE_LEVEL.
impl<P: SspiProvider> TlsMachine<P> {
    fn record_usable(&self) -> Result<(), RecordError> {
        match self.phase {
            Phase::Established => Ok(()),
            Phase::Handshaking => Err(RecordError::NotEstablished),
            Phase::Failed(status) => Err(RecordError::Failed(status)),
            Phase::Deleting | Phase::Closed => Err(RecordError::Closed),
        }
    }

    fn push_record_input(&mut self, input: &[u8]) -> Result<(), RecordError> {
        self.record_usable()?;
        if self.peer_closed {
            return Err(RecordError::PeerClosed);
        }
        if self.input.len() + input.len() > self.limits.max_input {
            return Err(RecordError::TooMuchInput);
        }
        self.input.extend_from_slice(input);
        self.input_high = self.input_high.max(self.input.len());
        self.begin_op(Op::Decrypt);
        Ok(())
    }

    fn push_shutdown(&mut self) -> Result<(), RecordError> {
        self.record_usable()?;
        if self.close_sent {
            return Err(RecordError::ShutDown);
        }
        self.begin_op(Op::Shutdown { issued: false });
        Ok(())
    }

    fn begin_op(&mut self, op: Op) {
        self.op = op;
        self.output.clear();
        self.calls = 0;
        self.renegotiations = 0;
        self.plain = 0..0;
        self.cursor = 0;
    }

    /// Seal `data` into `out` (EncryptMessage per record), as owner.
    fn seal(&mut self, data: &[u8], out: &mut [u8]) -> Result<Sealed, RecordError> {
        self.record_usable()?;
        if self.close_sent {
            return Err(RecordError::ShutDown);
        }
        let (Some(sizes), Some(slot)) = (self.sizes, self.sec.as_ref()) else {
            return Err(RecordError::Failed(SecStatus::SEC_E_INVALID_HANDLE));
        };
        if sizes.sealed_len(data.len()).is_none_or(|n| n > out.len()) {
            return Err(RecordError::OutputTooSmall);
        }
        let mut sealed = Sealed { len: 0, records: 0 };
        for chunk in data.chunks(sizes.max_message) {
            let room = sizes.header + chunk.len() + sizes.trailer;
            let record = &mut out[sealed.len..sealed.len + room];
            record[sizes.header..sizes.header + chunk.len()].copy_from_slice(chunk);
            sealed.len += encrypt_record(&self.provider, slot, &sizes, record, chunk.len())
                .map_err(RecordError::Failed)?;
            sealed.records += 1;
        }
        Ok(sealed)
    }

    /// Describe the established session; the peer's leaf certificate goes to
    /// `leaf` if it fits.
    fn describe(&mut self, leaf: &mut [u8]) -> Result<SessionInfo, RecordError> {
        self.record_usable()?;
        let Some(slot) = self.sec.as_ref() else {
            return Err(RecordError::Failed(SecStatus::SEC_E_INVALID_HANDLE));
        };
        let mut info = SessionInfo {
            connection: self.connection,
            sizes: self.sizes,
            peer_certificates: 0,
            leaf_len: 0,
            leaf_size: 0,
        };
        let mut first = true;
        let counted = query_remote_certificates(&self.provider, slot, |der| {
            if core::mem::take(&mut first) {
                info.leaf_size = der.len();
                if der.len() <= leaf.len() {
                    leaf[..der.len()].copy_from_slice(der);
                    info.leaf_len = der.len();
                }
            }
        });
        match counted {
            Ok(n) => info.peer_certificates = n,
            // The peer presented none (a server's client without a certificate).
            Err(SecStatus::SEC_E_NO_CREDENTIALS) => {}
            Err(status) => return Err(RecordError::Failed(status)),
        }
        Ok(info)
    }

    /// Decrypt records from `input[cursor..]` until the buffer is used up, a
    /// partial record waits, the peer closed, something failed, or a
    /// post-handshake message needs the handshake call (issued here).
    fn open_records(
        &mut self,
        ctx: &mut Option<AsyncContext<P>>,
        at: &Passive,
        stats: &EngineStats,
    ) -> Move<P> {
        loop {
            let end = self.input.len();
            if self.cursor == end {
                self.record = Some(RecordOutcome::Data { missing: 0 });
                return Move::Idle;
            }
            let Some(slot) = self.sec.as_ref() else {
                return self.fail(SecStatus::SEC_E_INVALID_HANDLE);
            };
            let rest = end - self.cursor;
            let d = decrypt_record(&self.provider, slot, &mut self.input[self.cursor..]);
            match d.status {
                SecStatus::SEC_E_OK => {
                    // `decrypt_record` checked EXTRA against the input and
                    // DATA against the record it consumed; the arithmetic
                    // below is checked again, so a provider's lengths can
                    // fail the decrypt but never index out of the buffer.
                    let consumed = rest.saturating_sub(d.extra.unwrap_or(0));
                    if consumed == 0 {
                        // No progress: the provider is confused; stop here.
                        return self.fail(NO_PROGRESS);
                    }
                    let (at_off, len) = d.data;
                    let record_end = self.cursor + consumed;
                    let Some(src) = self
                        .cursor
                        .checked_add(at_off)
                        .and_then(|from| Some(from..from.checked_add(len)?))
                        .filter(|src| src.end <= record_end)
                    else {
                        return self.fail(SecStatus::SEC_E_INTERNAL_ERROR);
                    };
                    if self.plain.is_empty() {
                        // No copy for the first record (often the only one).
                        self.plain = src;
                    } else {
                        // The plaintext so far ends at or before the cursor,
                        // so the copy stays inside the consumed bytes.
                        let to = self.plain.end;
                        self.input.copy_within(src, to);
                        self.plain.end += len;
                    }
                    self.cursor = record_end;
                }
                SecStatus::SEC_E_INCOMPLETE_MESSAGE => {
                    self.record = Some(RecordOutcome::Data { missing: d.missing });
                    return Move::Idle;
                }
                SecStatus::SEC_I_RENEGOTIATE => {
                    if self.renegotiations >= MAX_POST_HANDSHAKE {
                        return self.fail(TOO_MANY_POST_HANDSHAKE);
                    }
                    // The handshake record onwards is in EXTRA: hand it to the
                    // handshake call, which says (EXTRA again) what follows it.
                    self.cursor = end - d.extra.unwrap_or(rest).min(rest);
                    self.renegotiations += 1;
                    let from = self.cursor;
                    return self.issue_call(ctx, at, stats, from, end);
                }
                SecStatus::SEC_I_CONTEXT_EXPIRED => {
                    self.peer_closed = true;
                    self.cursor = end;
                    self.record = Some(RecordOutcome::PeerClosed);
                    return Move::Idle;
                }
                failure => return self.fail(failure),
            }
        }
    }

    /// Apply SCHANNEL_SHUTDOWN and make the call that produces close_notify.
    fn begin_shutdown(
        &mut self,
        ctx: &mut Option<AsyncContext<P>>,
        at: &Passive,
        stats: &EngineStats,
    ) -> Move<P> {
        let Some(slot) = self.sec.as_ref() else {
            return self.fail(SecStatus::SEC_E_INVALID_HANDLE);
        };
        let status = apply_shutdown(&self.provider, slot);
        if status.is_error() {
            return self.fail(status);
        }
        self.op = Op::Shutdown { issued: true };
        // An empty token: what the peer sent stays for a later decrypt.
        self.issue_call(ctx, at, stats, 0, 0)
    }

    /// A handshake call made by the record layer completed.
    fn record_call_completed(&mut self, status: SecStatus) {
        self.calls += 1;
        self.lease = None;
        let (extra, _) = self.call_leftover();
        match status {
            SecStatus::SEC_E_OK | SecStatus::SEC_I_CONTINUE_NEEDED => {
                if !self.append_output(0) {
                    self.fail(SecStatus::SEC_E_BUFFER_TOO_SMALL);
                    return;
                }
                if let Op::Shutdown { .. } = self.op {
                    self.close_sent = true;
                    self.record = Some(RecordOutcome::ShutDown);
                } else {
                    // Decrypt goes on after the handshake message, which
                    // the call must have consumed (else DecryptMessage
                    // hands the same bytes back, forever).
                    let end = self.input.len();
                    let given = end - self.cursor;
                    let left = extra.min(given);
                    if left == given && self.frame.out_bufs[0].cbBuffer == 0 {
                        self.fail(NO_PROGRESS);
                        return;
                    }
                    self.cursor = end - left;
                }
            }
            failure => {
                if !self.append_output(1) || self.frame.out_bufs[1].cbBuffer == 0 {
                    let _ = self.append_output(0);
                }
                self.fail(failure);
            }
        }
    }
}

impl<P: SspiProvider> Machine<P> for TlsMachine<P> {
    fn next(
        &mut self,
        ctx: &mut Option<AsyncContext<P>>,
        closing: bool,
        at: &Passive,
        stats: &EngineStats,
    ) -> Move<P> {
        if (self.outcome.is_some() || self.record.is_some()) && !closing {
            return Move::Idle;
        }
        if closing {
            return match self.phase {
                Phase::Deleting | Phase::Closed => Move::Finished,
                _ => self.begin_delete(ctx, at, stats),
            };
        }
        match self.phase {
            Phase::Handshaking => {
                let first_client_call = !self.server && !self.has_sec && self.calls == 0;
                if self.input.is_empty() && !first_client_call && self.retries == 0 {
                    self.outcome = Some(Outcome::NeedInput { missing: 0 });
                    return Move::Idle;
                }
                let end = self.input.len();
                self.issue_call(ctx, at, stats, 0, end)
            }
            Phase::Established => match self.op {
                Op::Decrypt => self.open_records(ctx, at, stats),
                Op::Shutdown { issued: false } => self.begin_shutdown(ctx, at, stats),
                _ => Move::Idle,
            },
            _ => Move::Idle,
        }
    }

    fn wants_call(&self, closing: bool) -> bool {
        if closing {
            return !matches!(self.phase, Phase::Deleting | Phase::Closed)
                && self.sec.as_ref().is_some_and(HandleSlot::is_valid);
        }
        match self.phase {
            Phase::Handshaking => {
                let first_client_call = !self.server && !self.has_sec && self.calls == 0;
                self.outcome.is_none()
                    && (!self.input.is_empty() || first_client_call || self.retries > 0)
            }
            // A decrypt may meet a post-handshake message and call; ready the
            // context whenever one runs (a reinit of a used context only).
            Phase::Established => {
                self.record.is_none()
                    && matches!(self.op, Op::Decrypt | Op::Shutdown { issued: false })
            }
            _ => false,
        }
    }

    fn completed(&mut self, status: SecStatus, slot: Option<HandleSlot>) {
        match self.phase {
            Phase::Deleting => {
                // The security context is deleted (or its delete failed, in
                // which case the slot is dropped: nothing more can be done).
                drop(slot);
                self.phase = Phase::Closed;
            }
            _ if self.op != Op::Step => self.record_call_completed(status),
            _ => self.step_completed(status),
        }
    }

    fn went_idle(&mut self) {
        if let Some(outcome) = self.outcome.take() {
            let leftover = if outcome == Outcome::Established {
                self.input.len()
            } else {
                0
            };
            let report = StepReport {
                outcome,
                output: &self.output,
                calls: self.calls,
                leftover,
                connection: self.connection.filter(|_| outcome == Outcome::Established),
            };
            self.events.step_done(&report);
        } else if let Some(outcome) = self.record.take() {
            let report = RecordReport {
                outcome,
                data: &self.input[self.plain.clone()],
                output: &self.output,
                renegotiations: self.renegotiations,
                calls: self.calls,
            };
            self.events.record_done(&report);
            // The plaintext is handed over; keep what is not consumed.
            self.input.drain(..self.cursor);
            self.plain = 0..0;
            self.cursor = 0;
        }
    }

    fn finished(&mut self) {
        self.lease = None;
        self.cred = None;
        self.events.closed();
    }
}

impl<P: SspiProvider> TlsMachine<P> {
    /// Delete the security context (if one was made) on the session's own
    /// async context: `SspiDeleteSecurityContextAsync`.
    fn begin_delete(
        &mut self,
        ctx: &mut Option<AsyncContext<P>>,
        at: &Passive,
        stats: &EngineStats,
    ) -> Move<P> {
        self.outcome = None;
        self.record = None;
        let slot = self.sec.take();
        let Some(slot) = slot.filter(|s| s.is_valid()) else {
            self.phase = Phase::Closed;
            return Move::Finished;
        };
        // SAFETY: the slot holds the security context the provider issued to
        // this session; nothing else owns it.
        let sc = unsafe { SecurityContext::from_slot(self.provider.clone(), slot) };
        let Some(mut context) = ctx.take() else {
            self.phase = Phase::Closed;
            drop(sc); // released by its own detached delete
            return Move::Finished;
        };
        if Issue::ready(&mut context, stats).is_err() {
            *ctx = Some(context);
            self.phase = Phase::Closed;
            drop(sc);
            return Move::Finished;
        }
        match sc.delete(context, at) {
            Ok(flight) => {
                self.phase = Phase::Deleting;
                Move::Issued(flight)
            }
            Err((sc, refused)) => {
                // Could not queue the delete on our context: the handle's own
                // detached release (a fresh context) tries once more.
                *ctx = Some(refused.context);
                drop(sc);
                self.phase = Phase::Closed;
                Move::Finished
            }
        }
    }

    /// Move the leftover bytes (input past the end of the handshake) out.
    fn take_leftover(&mut self, out: &mut Vec<u8>) {
        if self.phase == Phase::Established {
            out.extend_from_slice(&self.input);
            self.input.clear();
        }
    }
}

/// What a session is made of.
pub struct SessionSetup<P: SspiProvider> {
    /// Server or client (with its target name).
    pub role: Role,
    /// The credentials (shared between sessions; leased per call).
    pub credentials: Arc<Credentials<P>>,
    /// Buffer bounds.
    pub limits: Limits,
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
    conductor: Conductor<P, K, TlsMachine<P>>,
}

impl<P: SspiProvider, K: Platform> Session<P, K> {
    /// Set a session up (all its allocation happens here).
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
            events,
        } = setup;
        let notify: Arc<dyn ReadyNotify> = Arc::new(Ready(events.clone()));
        let machine = TlsMachine::new(
            provider.clone(),
            &platform,
            role,
            credentials,
            limits,
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
            .inspect(|m| m.sec.as_ref().filter(|_| m.has_sec).map(HandleSlot::get))
            .flatten()
    }

    /// Close at any moment (any IRQL up to DISPATCH): everything is released
    /// once an in-flight call completes; [`SessionEvents::closed`] follows
    /// exactly once. Dropping the session closes it too.
    pub fn close(&self) {
        self.conductor.close();
    }
}
