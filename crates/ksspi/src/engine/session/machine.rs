//! The session's machine: [`TlsMachine`], its buffers and call frame, the
//! handshake call every path issues (a step, a post-handshake message, the
//! close_notify call), and the [`Machine`] impl the conductor drives, which
//! sends each phase and each operation to its own path.

use super::handshake::Handshake;
use super::state::{Op, Sec, State};
use super::{
    ClientCertificates, Limits, Outcome, RecordError, RecordOutcome, RecordReport, Role,
    SessionEvents, SessionInfo, StepReport,
};
use crate::alpn::ApplicationProtocols;
use crate::engine::conductor::{zeroed_buffer, EngineStats, Issue, Machine, Move, Platform};
use crate::engine::wipe_used;
use crate::handle::{
    query_remote_certificates, AsyncContext, Credentials, HandleSlot, Lease, SecurityContext,
    StreamSizes,
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

/// The raw call frame: descriptors pointing into the machine's own buffers.
pub(super) struct Frame {
    /// The token, the EXTRA / MISSING slot, and (on the calls that take it)
    /// `SECBUFFER_APPLICATION_PROTOCOLS`.
    pub(super) in_bufs: [SecBuffer; 3],
    in_desc: SecBufferDesc,
    pub(super) out_bufs: [SecBuffer; 2],
    out_desc: SecBufferDesc,
    attrs: u32,
    expiry: TimeStamp,
    target: UNICODE_STRING,
}

// SAFETY: the frame's raw pointers point into buffers owned by the same
// machine (heap allocations that never move), used by one owner at a time.
unsafe impl Send for Frame {}

/// The session's state machine: the handshake, then the record layer.
///
/// `input` holds bytes from the peer. During a decrypt, `input[plain]` is the
/// plaintext opened so far (each record is decrypted in place; the first
/// one's data stays where it was decrypted, each later one's is moved down
/// to follow it) and `input[cursor..]` what is not consumed yet.
pub struct TlsMachine<P: SspiProvider> {
    pub(super) provider: P,
    pub(super) server: bool,
    pub(super) cred: Option<Arc<Credentials<P>>>,
    pub(super) lease: Option<Lease>,
    /// The security context: its slot, and whether a call issued it.
    pub(super) sec: Sec,
    pub(super) target: Vec<u16>,
    pub(super) input: Vec<u8>,
    /// The most bytes `input` ever held (what [`wipe_used`] zeroes).
    pub(super) input_high: usize,
    pub(super) plain: Range<usize>,
    pub(super) cursor: usize,
    pub(super) token: Vec<u8>,
    pub(super) alert: Vec<u8>,
    pub(super) output: Vec<u8>,
    /// The most bytes `output` ever held.
    pub(super) output_high: usize,
    pub(super) limits: Limits,
    pub(super) frame: Frame,
    /// The phase, with the data only it has.
    pub(super) state: State,
    pub(super) op: Op,
    pub(super) outcome: Option<Outcome>,
    pub(super) record: Option<RecordOutcome>,
    /// `SECPKG_ATTR_STREAM_SIZES`, learned at establishment; kept for the
    /// session's life ([`super::Session::stream_sizes`] answers after a
    /// record-layer failure too).
    pub(super) sizes: Option<StreamSizes>,
    /// Calls made by the current operation (a step, a decrypt, a shutdown).
    pub(super) calls: u32,
    /// Post-handshake messages handed over by the current decrypt.
    pub(super) renegotiations: u32,
    pub(super) events: Arc<dyn SessionEvents>,
    /// A server's: what it asks of the client's certificate.
    pub(super) client_certificates: ClientCertificates,
    /// A client's: a handshake call answered `SEC_I_INCOMPLETE_CREDENTIALS`
    /// (the server asked for a certificate the credentials do not have).
    /// Kept past the handshake: a TLS 1.3 server that requires one fails the
    /// connection only after the client's handshake is complete.
    pub(super) certificate_requested: bool,
    /// The session's ALPN list (the `SEC_APPLICATION_PROTOCOLS` buffer the
    /// handshake calls take), if it has one.
    pub(super) alpn: Option<ApplicationProtocols>,
    /// `SECPKG_ATTR_APPLICATION_PROTOCOL`, queried at establishment (a
    /// session with an ALPN list only). Kept here rather than in the
    /// established state: it is 264 bytes, and the state stays small.
    pub(super) application_protocol: Option<SecPkgContext_ApplicationProtocol>,
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
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new<K: Platform>(
        provider: P,
        platform: &K,
        role: Role,
        cred: Arc<Credentials<P>>,
        limits: Limits,
        client_certificates: ClientCertificates,
        alpn: Option<ApplicationProtocols>,
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
            sec: Sec::Empty(HandleSlot::new()),
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
            state: State::Handshaking(Handshake { retries: 0 }),
            op: Op::Step,
            outcome: None,
            record: None,
            sizes: None,
            calls: 0,
            renegotiations: 0,
            events,
            client_certificates: if server {
                client_certificates
            } else {
                ClientCertificates::Ignore
            },
            certificate_requested: false,
            alpn,
            application_protocol: None,
        };
        if !h.target.is_empty() {
            h.frame.target = UNICODE_STRING::from_units(&mut h.target)
                .ok_or(SecStatus::SEC_E_INVALID_PARAMETER)?;
        }
        Ok(h)
    }

    /// Issue a handshake call (accept or initialize) with `input[from..to]`
    /// as its token.
    pub(super) fn issue_call(
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
        // The ALPN list goes with the handshake calls made before the
        // security context exists: the client's first (its ClientHello), a
        // server's until one has read the whole ClientHello. msquic's
        // Schannel path does the same (src/platform/tls_schannel.c,
        // CxPlatTlsWriteDataToSchannel: the client's first ISC, and the
        // server's ASC calls until it generated its first payload).
        let alpn = match &mut self.alpn {
            Some(list) if self.op == Op::Step && !self.sec.is_issued() => Some(list.buffer_ptr()),
            _ => None,
        };
        let f = &mut self.frame;
        f.in_bufs = [
            SecBuffer {
                cbBuffer: (to - from) as u32,
                BufferType: SECBUFFER_TOKEN,
                pvBuffer: self.input[from..to].as_mut_ptr().cast(),
            },
            SecBuffer::empty(SECBUFFER_EMPTY),
            SecBuffer::empty(SECBUFFER_EMPTY),
        ];
        let in_count = match alpn {
            Some((ptr, len)) => {
                f.in_bufs[2] = SecBuffer {
                    cbBuffer: len,
                    BufferType: SECBUFFER_APPLICATION_PROTOCOLS,
                    pvBuffer: ptr,
                };
                3
            }
            None => 2,
        };
        f.in_desc = SecBufferDesc::new(&mut f.in_bufs[..in_count]);
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
        let slot = self.sec.slot().map_or(ptr::null_mut(), HandleSlot::as_ptr);
        let existing = if self.sec.is_issued() {
            slot
        } else {
            ptr::null_mut()
        };
        let (in_desc, out_desc, attrs, expiry): (*mut _, *mut _, *mut _, *mut _) =
            (&mut f.in_desc, &mut f.out_desc, &mut f.attrs, &mut f.expiry);
        let target: *mut UNICODE_STRING = if self.target.is_empty() {
            ptr::null_mut()
        } else {
            &mut f.target
        };
        let server = self.server;
        let asc_flags = if self.client_certificates == ClientCertificates::Ignore {
            ASC_FLAGS
        } else {
            ASC_FLAGS | ASC_REQ_MUTUAL_AUTH
        };
        let call = move |p: &P, c| {
            if server {
                // SAFETY: `issue` hands over the live, idle context `c`; the
                // pointers are as argued for `issue` below.
                unsafe {
                    p.accept_security_context_async(
                        c, cred, existing, in_desc, asc_flags, slot, out_desc, attrs, expiry,
                    )
                }
            } else {
                // SAFETY: as for the accept call above.
                unsafe {
                    p.initialize_security_context_async(
                        c, cred, existing, target, ISC_FLAGS, in_desc, slot, out_desc, attrs,
                        expiry,
                    )
                }
            }
        };
        // SAFETY: every pointer is into this machine (its frame, buffers, the
        // security-context slot) or the leased credential, all of which stay
        // allocated and untouched until the call completes: the machine is
        // owned by the call until then.
        let issued = unsafe { context.issue(at, None, call) };
        match issued {
            Ok(flight) => Move::Issued(flight),
            Err(refused) => {
                self.lease = None;
                *ctx = Some(refused.context);
                self.fail(refused.status)
            }
        }
    }

    pub(super) fn fail(&mut self, status: SecStatus) -> Move<P> {
        self.state = State::Failed(status);
        if self.op == Op::Step {
            self.outcome = Some(Outcome::Failed(status));
        } else {
            self.record = Some(RecordOutcome::Failed(status));
        }
        Move::Idle
    }

    /// The `SECBUFFER_EXTRA` / `SECBUFFER_MISSING` a handshake call left in
    /// its second input buffer.
    pub(super) fn call_leftover(&self) -> (usize, u32) {
        let second = self.frame.in_bufs[1];
        match second.BufferType {
            SECBUFFER_EXTRA => (second.cbBuffer as usize, 0),
            SECBUFFER_MISSING => (0, second.cbBuffer),
            _ => (0, 0),
        }
    }

    pub(super) fn append_output(&mut self, bytes_from: usize) -> bool {
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
            return match self.state {
                State::Deleting | State::Closed => Move::Finished,
                _ => self.begin_delete(ctx, at, stats),
            };
        }
        match self.state {
            State::Handshaking(_) => self.next_handshake_call(ctx, at, stats),
            State::Established(_) => match self.op {
                Op::Decrypt => self.open_records(ctx, at, stats),
                Op::Shutdown { issued: false } => self.begin_shutdown(ctx, at, stats),
                _ => Move::Idle,
            },
            _ => Move::Idle,
        }
    }

    fn wants_call(&self, closing: bool) -> bool {
        if closing {
            return !self.state.is_closing() && self.sec.slot().is_some_and(HandleSlot::is_valid);
        }
        match self.state {
            State::Handshaking(_) => self.wants_handshake_call(),
            // A decrypt may meet a post-handshake message and call; ready the
            // context whenever one runs (a reinit of a used context only).
            State::Established(_) => {
                self.record.is_none()
                    && matches!(self.op, Op::Decrypt | Op::Shutdown { issued: false })
            }
            _ => false,
        }
    }

    fn completed(&mut self, status: SecStatus, slot: Option<HandleSlot>) {
        match self.state {
            State::Deleting => {
                // The security context is deleted (or its delete failed, in
                // which case the slot is dropped: nothing more can be done).
                drop(slot);
                self.state = State::Closed;
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
                connection: self
                    .state
                    .connection()
                    .filter(|_| outcome == Outcome::Established),
                application_protocol: self
                    .application_protocol
                    .filter(|_| outcome == Outcome::Established),
                certificate_requested: self.certificate_requested,
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
            self.state = State::Closed;
            return Move::Finished;
        };
        // SAFETY: the slot holds the security context the provider issued to
        // this session; nothing else owns it.
        let sc = unsafe { SecurityContext::from_slot(self.provider.clone(), slot) };
        let Some(mut context) = ctx.take() else {
            self.state = State::Closed;
            drop(sc); // released by its own detached delete
            return Move::Finished;
        };
        if Issue::ready(&mut context, stats).is_err() {
            *ctx = Some(context);
            self.state = State::Closed;
            drop(sc);
            return Move::Finished;
        }
        match sc.delete(context, at) {
            Ok(flight) => {
                self.state = State::Deleting;
                Move::Issued(flight)
            }
            Err((sc, refused)) => {
                // Could not queue the delete on our context: the handle's own
                // detached release (a fresh context) tries once more.
                *ctx = Some(refused.context);
                drop(sc);
                self.state = State::Closed;
                Move::Finished
            }
        }
    }

    /// Move the leftover bytes (input past the end of the handshake) out.
    pub(super) fn take_leftover(&mut self, out: &mut Vec<u8>) {
        if self.state.is_established() {
            out.extend_from_slice(&self.input);
            self.input.clear();
        }
    }
}

/// The record layer's shared part, run by the session's owner at PASSIVE_LEVEL.
impl<P: SspiProvider> TlsMachine<P> {
    pub(super) fn begin_op(&mut self, op: Op) {
        self.op = op;
        self.output.clear();
        self.calls = 0;
        self.renegotiations = 0;
        self.plain = 0..0;
        self.cursor = 0;
    }

    /// Describe the established session; the peer's leaf certificate goes to
    /// `leaf` if it fits.
    pub(super) fn describe(&mut self, leaf: &mut [u8]) -> Result<SessionInfo, RecordError> {
        let connection = self.state.established()?.connection;
        let Some(slot) = self.sec.slot() else {
            return Err(RecordError::Failed(SecStatus::SEC_E_INVALID_HANDLE));
        };
        let mut info = SessionInfo {
            connection,
            application_protocol: self.application_protocol,
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
                    self.close_notify_made();
                } else {
                    self.post_handshake_completed(extra);
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
