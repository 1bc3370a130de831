//! The session's machine: [`TlsMachine`], its buffers and call frame, the
//! handshake call every path issues (a step, a post-handshake message, the
//! close_notify call), and the [`Machine`] impl the conductor drives, which
//! sends each phase and each operation to its own path.

use super::handshake::Handshake;
use super::state::{Op, Sec, State};
use super::{
    ClientCertificates, Limits, Outcome, RecordError, RecordOutcome, RecordReport, Resumed, Role,
    SessionEvents, SessionInfo, StepReport, Tokens,
};
use crate::alpn::ApplicationProtocols;
use crate::engine::conductor::{EngineStats, Issue, Machine, Move, Platform};
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
use core::ffi::c_void;
use core::ops::Range;
use core::ptr;
use core::sync::atomic::Ordering;

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
///
/// `input` and `output` are sized to need (`make_room`): empty at setup,
/// grown (at least doubling, from [`MIN_BUFFER`]) up to their [`Limits`],
/// never shrunk while in use; the handshake's are given back once it ends
/// (`output` always, `input` unless bytes that followed the handshake wait
/// in it). Output tokens are the provider's (`*_REQ_ALLOCATE_MEMORY`),
/// copied into `output` and freed when the call has been handled.
pub struct TlsMachine<P: SspiProvider, K: Platform> {
    pub(super) provider: P,
    /// Where the buffers come from (and may fail to).
    pub(super) platform: K,
    /// Where buffer growth is counted ([`EngineStats::buffer_grows`]).
    pub(super) stats: Arc<EngineStats>,
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
    /// The caller-supplied `SECBUFFER_ALERT` (small, fixed).
    pub(super) alert: Vec<u8>,
    /// With [`Tokens::Caller`]: the zeroed token buffer, while the
    /// handshake (or a post-handshake call) needs it; empty otherwise.
    pub(super) token: Vec<u8>,
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
    /// session with an ALPN list only): empty, or the one answer. Its room
    /// (264 bytes) is reserved on the heap at setup, for a session with an
    /// ALPN list only, so the machine stays small (a debug build's
    /// `Arc::new_cyclic` holds copies of it on the stack, and a kernel stack
    /// frame stays under a page: no `__chkstk`) and establishment allocates
    /// nothing.
    pub(super) application_protocol: Vec<SecPkgContext_ApplicationProtocol>,
    /// `SECPKG_ATTR_SESSION_INFO`, queried at establishment.
    pub(super) resumed: Resumed,
}

// `*_REQ_ALLOCATE_MEMORY` (with `Tokens::Provider`, the default): the
// provider allocates each output token at its size, and the engine frees it
// with `FreeContextBuffer` once copied
// (sspi.h; "AcceptSecurityContext (Schannel)" and "InitializeSecurityContext
// (Schannel)" on learn.microsoft.com: "Schannel allocates memory for the
// buffer ... free it by calling the FreeContextBuffer function";
// SspiAcceptSecurityContextAsync / SspiInitializeSecurityContextAsyncW take
// the same fContextReq flags). A caller-supplied token buffer has to be as
// large as the largest flight at every call (a call that finds it too small
// has already advanced the handshake: it cannot be repeated with a larger
// one), zeroed so that a provider failing without setting the length never
// hands pool bytes to the peer: 32 KiB a session for the whole handshake.
// See docs/PERFORMANCE.md, "Memory per session".
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

/// The smallest allocation `input` and `output` get: a handshake flight or
/// a small read fits in one (a TLS 1.3 server flight with one ECDSA
/// certificate is under 2 KiB; a chain of RSA certificates grows it once or
/// twice).
pub const MIN_BUFFER: usize = 4 * 1024;

/// Room for `need` bytes in `buf` (its bytes kept), at most `limit` (the
/// caller checked `need` against it): a new allocation of at least twice
/// the old one, from [`MIN_BUFFER`] up to `limit`, through
/// [`Platform::reserve`] (so a low-resources failure is a clean
/// `SEC_E_INSUFFICIENT_MEMORY` and nothing changes); the old one is zeroed
/// up to `high` (the most it held) before it goes back to the pool, so no
/// plaintext is left behind. Each growth at least doubles, so a buffer
/// grows at most `log2(limit / MIN_BUFFER) + 1` times a phase; once it has
/// its size, nothing is allocated.
pub(super) fn make_room<K: Platform>(
    platform: &K,
    stats: &EngineStats,
    buf: &mut Vec<u8>,
    high: &mut usize,
    need: usize,
    limit: usize,
) -> Result<(), SecStatus> {
    if need <= buf.capacity() {
        return Ok(());
    }
    if need > limit {
        return Err(SecStatus::SEC_E_BUFFER_TOO_SMALL);
    }
    let size = need
        .max(buf.capacity().saturating_mul(2))
        .max(MIN_BUFFER)
        .min(limit);
    let mut grown = platform.reserve(size)?;
    grown.extend_from_slice(buf); // within the new capacity
    wipe_used(buf, *high);
    *high = grown.len();
    *buf = grown;
    stats.buffer_grows.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// The most times one session's buffers grow (`make_room`) under
/// `limits`: in each of its two phases (the handshake, whose buffers are
/// given back at its end, and the record layer), each of `input` and
/// `output` from nothing to its limit, at least doubling from
/// [`MIN_BUFFER`] each time; with [`Tokens::Caller`], the token buffer once
/// a phase too.
pub fn max_grows(limits: &Limits) -> u64 {
    let one = |limit: usize| {
        let mut size = MIN_BUFFER;
        let mut n = 1;
        while size < limit {
            size = size.saturating_mul(2);
            n += 1;
        }
        n
    };
    let token = u64::from(limits.tokens == Tokens::Caller);
    2 * (one(limits.max_input) + one(limits.max_output) + token)
}

/// Give `buf`'s allocation back to the pool, zeroed up to `high`.
fn give_back(buf: &mut Vec<u8>, high: &mut usize) {
    wipe_used(buf, *high);
    *buf = Vec::new();
    *high = 0;
}

impl<P: SspiProvider, K: Platform> Drop for TlsMachine<P, K> {
    fn drop(&mut self) {
        // `input` held the plaintext (records are decrypted in place there),
        // `output` what was sent: zeroed before they return to the pool, up
        // to the most either ever held (the bytes past that were never
        // written). `alert` only ever holds bytes for the wire, as the peer
        // sees them.
        wipe_used(&mut self.input, self.input_high);
        wipe_used(&mut self.output, self.output_high);
    }
}

impl<P: SspiProvider, K: Platform> TlsMachine<P, K> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        provider: P,
        platform: K,
        stats: Arc<EngineStats>,
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
            platform,
            stats,
            server,
            cred: Some(cred),
            lease: None,
            sec: Sec::Empty(HandleSlot::new()),
            target,
            input: Vec::new(),
            input_high: 0,
            plain: 0..0,
            cursor: 0,
            alert: vec![0; ALERT_CAPACITY],
            token: Vec::new(),
            output: Vec::new(),
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
            application_protocol: Vec::new(),
            resumed: Resumed::Unknown,
        };
        if h.alpn.is_some() {
            h.application_protocol
                .try_reserve_exact(1)
                .map_err(|_| SecStatus::SEC_E_INSUFFICIENT_MEMORY)?;
        }
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
        let caller_tokens = self.limits.tokens == Tokens::Caller;
        if caller_tokens && self.token.is_empty() {
            // Zeroed: a provider that fails without setting the token's
            // length must not hand pool bytes to the peer.
            match self.platform.reserve(self.limits.max_token) {
                Ok(mut token) => {
                    token.resize(self.limits.max_token, 0); // within capacity
                    self.token = token;
                    self.stats.buffer_grows.fetch_add(1, Ordering::Relaxed);
                }
                Err(status) => return self.fail(status),
            }
        }
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
            if caller_tokens {
                SecBuffer {
                    cbBuffer: self.token.len() as u32,
                    BufferType: SECBUFFER_TOKEN,
                    pvBuffer: self.token.as_mut_ptr().cast(),
                }
            } else {
                // The provider allocates the token (ALLOCATE_MEMORY).
                SecBuffer::empty(SECBUFFER_TOKEN)
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
        let (mut asc_flags, isc_flags) = if caller_tokens {
            (ASC_FLAGS, ISC_FLAGS)
        } else {
            (
                ASC_FLAGS | ASC_REQ_ALLOCATE_MEMORY,
                ISC_FLAGS | ISC_REQ_ALLOCATE_MEMORY,
            )
        };
        if self.client_certificates != ClientCertificates::Ignore {
            asc_flags |= ASC_REQ_MUTUAL_AUTH;
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
                        c, cred, existing, target, isc_flags, in_desc, slot, out_desc, attrs,
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
        // A call set up and then refused, or handled up to here: nothing
        // may stay pointed at a buffer that goes with the handshake's.
        self.free_provider_buffers();
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

    /// Append what the completed call left in output buffer `which` (0: the
    /// token, 1: the alert) to `output`, growing it up to
    /// [`Limits::max_output`]; a token over [`Limits::max_token`] is refused
    /// (`SEC_E_BUFFER_TOO_SMALL`), as is a buffer the provider says holds
    /// bytes but points nowhere (`SEC_E_INTERNAL_ERROR`). On error nothing
    /// is appended.
    pub(super) fn append_output(&mut self, which: usize) -> Result<(), SecStatus> {
        let buf = self.frame.out_bufs[which];
        let n = buf.cbBuffer as usize;
        if n == 0 {
            return Ok(());
        }
        let alert = self.alert.as_mut_ptr().cast::<c_void>();
        let token = self.token.as_mut_ptr().cast::<c_void>();
        let src: &[u8] = if which == 1 && buf.pvBuffer == alert {
            self.alert
                .get(..n)
                .ok_or(SecStatus::SEC_E_BUFFER_TOO_SMALL)?
        } else if which == 0 && !self.token.is_empty() && buf.pvBuffer == token {
            self.token
                .get(..n)
                .ok_or(SecStatus::SEC_E_BUFFER_TOO_SMALL)?
        } else if buf.pvBuffer.is_null() {
            return Err(SecStatus::SEC_E_INTERNAL_ERROR);
        } else if n > self.limits.max_token {
            return Err(SecStatus::SEC_E_BUFFER_TOO_SMALL);
        } else {
            // SAFETY: a buffer the provider allocated for the call that just
            // completed (the token under ALLOCATE_MEMORY, or an alert it
            // allocated in place of ours), `cbBuffer` bytes long; it is freed
            // only by `free_provider_buffers`, after this call is handled.
            unsafe { core::slice::from_raw_parts(buf.pvBuffer.cast::<u8>(), n) }
        };
        let need = self.output.len() + n;
        if need > self.limits.max_output {
            return Err(SecStatus::SEC_E_BUFFER_TOO_SMALL);
        }
        make_room(
            &self.platform,
            &self.stats,
            &mut self.output,
            &mut self.output_high,
            need,
            self.limits.max_output,
        )?;
        self.output.extend_from_slice(src); // within capacity
        self.output_high = self.output_high.max(self.output.len());
        Ok(())
    }

    /// Free what the provider allocated in the output buffers of the call
    /// just handled (`FreeContextBuffer`), and clear them, so nothing is
    /// freed twice or read after it is freed.
    fn free_provider_buffers(&mut self) {
        let ours = [
            self.alert.as_mut_ptr().cast::<c_void>(),
            self.token.as_mut_ptr().cast::<c_void>(),
        ];
        for buf in self.frame.out_bufs.iter_mut() {
            let allocated = buf.pvBuffer;
            if !allocated.is_null() && !ours.contains(&allocated) {
                // SAFETY: the provider allocated it for the completed call
                // (the engine passed no buffer of its own but the alert and,
                // with caller tokens, the token buffer), and
                // nothing uses it after this: the descriptor is cleared.
                let _ = unsafe { self.provider.free_context_buffer(allocated) };
            }
            buf.pvBuffer = ptr::null_mut();
            buf.cbBuffer = 0;
        }
    }

    /// The handshake ended (established or failed) and was reported: give
    /// its buffers back. `output` goes; `input` too unless bytes that
    /// followed the handshake wait in it for the record layer.
    fn give_back_handshake_buffers(&mut self) {
        give_back(&mut self.output, &mut self.output_high);
        let mut token_high = self.token.len();
        give_back(&mut self.token, &mut token_high);
        if self.input.is_empty() || !self.state.is_established() {
            give_back(&mut self.input, &mut self.input_high);
        }
    }
}

impl<P: SspiProvider, K: Platform> Machine<P> for TlsMachine<P, K> {
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
            _ => {
                if self.op == Op::Step {
                    self.step_completed(status);
                } else {
                    self.record_call_completed(status);
                }
                self.free_provider_buffers();
            }
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
                    .first()
                    .copied()
                    .filter(|_| outcome == Outcome::Established),
                resumed: if outcome == Outcome::Established {
                    self.resumed
                } else {
                    Resumed::Unknown
                },
                certificate_requested: self.certificate_requested,
            };
            self.events.step_done(&report);
            if !matches!(outcome, Outcome::NeedInput { .. }) {
                self.give_back_handshake_buffers();
            }
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

impl<P: SspiProvider, K: Platform> TlsMachine<P, K> {
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
impl<P: SspiProvider, K: Platform> TlsMachine<P, K> {
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
            application_protocol: self.application_protocol.first().copied(),
            resumed: self.resumed,
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
                if let Err(status) = self.append_output(0) {
                    self.fail(status);
                    return;
                }
                if let Op::Shutdown { .. } = self.op {
                    self.close_notify_made();
                } else {
                    self.post_handshake_completed(extra);
                }
            }
            failure => {
                if self.append_output(1).is_err() || self.frame.out_bufs[1].cbBuffer == 0 {
                    let _ = self.append_output(0);
                }
                self.fail(failure);
            }
        }
    }
}
