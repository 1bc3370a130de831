//! The engine against a hostile provider: one that answers the handshake
//! call and DecryptMessage from a script, with buffers Schannel would never
//! return (DATA past the record it consumed, EXTRA that consumes nothing,
//! endless post-handshake messages). The session must fail with a named
//! status, never panic, loop or read outside its buffers.
//!
//! Every call completes inline (the callback runs on the issuer's stack
//! before the issuing function returns), at PASSIVE_LEVEL.

use super::*;
use crate::handle::{Credentials, HandleSlot};
use crate::irql::{Irql, Passive};
use crate::provider::{AsyncContextPtr, SspiProvider};
use crate::status::SecStatus;
use crate::sys::*;
use core::ffi::c_void;
use core::ptr::NonNull;
use std::boxed::Box;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::vec::Vec;

/// A calls-made cap, so an engine that loops fails the test instead of
/// hanging it: past it, every call fails with `SEC_E_DECRYPT_FAILURE`.
const CALL_CAP: u32 = 10_000;

/// A handshake call's scripted answer.
#[derive(Clone, Copy, Debug)]
struct Handshake {
    status: SecStatus,
    /// `SECBUFFER_EXTRA` left in the second input buffer.
    extra: Option<u32>,
    /// Bytes of output token.
    token: u32,
}

/// A DecryptMessage's scripted answer.
#[derive(Clone, Copy, Debug)]
struct Decrypt {
    status: SecStatus,
    /// The DATA buffer: offset into the input and length.
    data: Option<(usize, u32)>,
    /// `SECBUFFER_EXTRA`, counted from the end of the input.
    extra: Option<u32>,
}

#[derive(Default)]
struct Script {
    /// Answers to the handshake calls, in order; the last one repeats.
    handshake: VecDeque<Handshake>,
    decrypt: VecDeque<Decrypt>,
    handshake_calls: u32,
    decrypt_calls: u32,
    /// Per handshake call: whether its third input buffer was a
    /// well-formed `SECBUFFER_APPLICATION_PROTOCOLS` (the ALPN list).
    alpn_seen: Vec<bool>,
    /// What `SECPKG_ATTR_APPLICATION_PROTOCOL` answers (`None`: unsupported).
    chosen: Option<Vec<u8>>,
    /// Live async contexts: their status, callback and its data.
    contexts: HashMap<usize, (SecStatus, SspiAsyncNotifyCallback, usize)>,
    /// Tokens handed out (ALLOCATE_MEMORY), by address, until freed.
    tokens: HashMap<usize, Box<[u8]>>,
}

fn next<T: Copy>(q: &mut VecDeque<T>) -> T {
    if q.len() > 1 {
        q.pop_front().unwrap()
    } else {
        *q.front().expect("a scripted answer")
    }
}

#[derive(Clone, Default)]
struct Hostile(Arc<Mutex<Script>>);

impl Hostile {
    fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        // A failed assertion must not turn the session's teardown into a
        // second panic.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Complete a call on `ctx` with `status`, callback inline.
    fn complete(&self, ctx: AsyncContextPtr, status: SecStatus) -> SecStatus {
        let (callback, data) = {
            let mut s = self.script();
            let c = s.contexts.get_mut(&(ctx.as_ptr() as usize)).unwrap();
            c.0 = status;
            (c.1, c.2)
        };
        if let Some(cb) = callback {
            // SAFETY: the callback and data the engine registered for `ctx`.
            unsafe { cb(ctx.as_ptr(), data as *mut c_void) };
        }
        SecStatus::SEC_E_OK
    }

    /// A handshake call: answer from the script into the caller's buffers.
    ///
    /// # Safety
    /// `input` and `output` are the engine's descriptors (two buffers each),
    /// `slot` its security-context slot.
    unsafe fn handshake(
        &self,
        ctx: AsyncContextPtr,
        slot: *mut SecHandle,
        input: *mut SecBufferDesc,
        output: *mut SecBufferDesc,
    ) -> SecStatus {
        let answer = {
            let mut s = self.script();
            s.handshake_calls += 1;
            (s.handshake_calls <= CALL_CAP).then(|| next(&mut s.handshake))
        };
        let Some(answer) = answer else {
            return self.complete(ctx, SecStatus::SEC_E_DECRYPT_FAILURE);
        };
        // SAFETY: per the function's contract, `input` points to a valid
        // descriptor.
        let desc = unsafe { &*input };
        let (count, input) = (desc.cBuffers, desc.pBuffers);
        if count == 3 {
            // SAFETY: the descriptor's three buffers, valid for the call.
            let bufs = unsafe { &*input.cast::<[SecBuffer; 3]>() };
            let third = &bufs[2];
            // SAFETY: its bytes, as the engine laid them out.
            let bytes = unsafe {
                core::slice::from_raw_parts(third.pvBuffer.cast::<u8>(), third.cbBuffer as usize)
            };
            let ok = third.BufferType == SECBUFFER_APPLICATION_PROTOCOLS
                && crate::alpn::parse_buffer(bytes).is_ok_and(|l| l.is_some());
            self.script().alpn_seen.push(ok);
        } else {
            assert_eq!(count, 2);
            self.script().alpn_seen.push(false);
        }
        // SAFETY: likewise `output`.
        let output = unsafe { (*output).pBuffers };
        // SAFETY: the engine's input descriptor holds two buffers, valid and
        // unaliased for the call.
        let input = unsafe { &mut *input.cast::<[SecBuffer; 2]>() };
        // SAFETY: likewise its output descriptor.
        let output = unsafe { &mut *output.cast::<[SecBuffer; 2]>() };
        if let Some(extra) = answer.extra {
            input[1] = SecBuffer {
                cbBuffer: extra,
                BufferType: SECBUFFER_EXTRA,
                pvBuffer: core::ptr::null_mut(),
            };
        }
        // The engine asks for ALLOCATE_MEMORY: the token is ours to
        // allocate, and comes back through FreeContextBuffer.
        assert!(output[0].pvBuffer.is_null() && output[0].cbBuffer == 0);
        if answer.token > 0 {
            let mut token = vec![0x16u8; answer.token as usize].into_boxed_slice();
            output[0].pvBuffer = token.as_mut_ptr().cast();
            self.script().tokens.insert(token.as_ptr() as usize, token);
        }
        output[0].cbBuffer = answer.token;
        output[1].cbBuffer = 0;
        if !slot.is_null() {
            // SAFETY: the engine's slot, valid until the call completes.
            unsafe {
                *slot = SecHandle {
                    dwLower: 7,
                    dwUpper: 7,
                }
            };
        }
        self.complete(ctx, answer.status)
    }
}

impl SspiProvider for Hostile {
    fn current_irql(&self) -> Irql {
        Irql::PASSIVE
    }

    fn create_async_context(&self) -> Option<AsyncContextPtr> {
        let ptr = Box::into_raw(Box::new(0u64)).cast::<SspiAsyncContext>();
        self.script()
            .contexts
            .insert(ptr as usize, (SecStatus::SEC_E_OK, None, 0));
        NonNull::new(ptr)
    }

    unsafe fn free_async_context(&self, ctx: AsyncContextPtr) {
        self.script()
            .contexts
            .remove(&(ctx.as_ptr() as usize))
            .unwrap();
        // SAFETY: allocated as a Box<u64> above, freed once (removed above).
        drop(unsafe { Box::from_raw(ctx.as_ptr().cast::<u64>()) });
    }

    unsafe fn reinit_async_context(&self, _: AsyncContextPtr) -> SecStatus {
        SecStatus::SEC_E_OK
    }

    unsafe fn set_async_notify_callback(
        &self,
        ctx: AsyncContextPtr,
        callback: SspiAsyncNotifyCallback,
        data: *mut c_void,
    ) -> SecStatus {
        let mut s = self.script();
        let c = s.contexts.get_mut(&(ctx.as_ptr() as usize)).unwrap();
        (c.1, c.2) = (callback, data as usize);
        SecStatus::SEC_E_OK
    }

    unsafe fn async_context_requires_notify(&self, _: AsyncContextPtr) -> Option<bool> {
        Some(true)
    }

    fn has_requires_notify(&self) -> bool {
        true
    }

    unsafe fn get_async_call_status(&self, ctx: AsyncContextPtr) -> SecStatus {
        self.script().contexts[&(ctx.as_ptr() as usize)].0
    }

    unsafe fn acquire_credentials_handle_async(
        &self,
        ctx: AsyncContextPtr,
        _: *mut UNICODE_STRING,
        _: *mut UNICODE_STRING,
        _: u32,
        _: *mut c_void,
        _: *mut SecHandle,
        _: *mut TimeStamp,
    ) -> SecStatus {
        self.complete(ctx, SecStatus::SEC_E_OK)
    }

    unsafe fn free_credentials_handle_async(
        &self,
        ctx: AsyncContextPtr,
        _: *mut SecHandle,
    ) -> SecStatus {
        self.complete(ctx, SecStatus::SEC_E_OK)
    }

    unsafe fn initialize_security_context_async(
        &self,
        ctx: AsyncContextPtr,
        _: *mut SecHandle,
        _: *mut SecHandle,
        _: *mut UNICODE_STRING,
        _: u32,
        input: *mut SecBufferDesc,
        slot: *mut SecHandle,
        output: *mut SecBufferDesc,
        _: *mut u32,
        _: *mut TimeStamp,
    ) -> SecStatus {
        // SAFETY: the engine's descriptors and slot.
        unsafe { self.handshake(ctx, slot, input, output) }
    }

    unsafe fn accept_security_context_async(
        &self,
        ctx: AsyncContextPtr,
        _: *mut SecHandle,
        _: *mut SecHandle,
        input: *mut SecBufferDesc,
        _: u32,
        slot: *mut SecHandle,
        output: *mut SecBufferDesc,
        _: *mut u32,
        _: *mut TimeStamp,
    ) -> SecStatus {
        // SAFETY: the engine's descriptors and slot.
        unsafe { self.handshake(ctx, slot, input, output) }
    }

    unsafe fn delete_security_context_async(
        &self,
        ctx: AsyncContextPtr,
        _: *mut SecHandle,
    ) -> SecStatus {
        self.complete(ctx, SecStatus::SEC_E_OK)
    }

    unsafe fn encrypt_message(
        &self,
        _: *mut SecHandle,
        _: u32,
        _: *mut SecBufferDesc,
        _: u32,
    ) -> SecStatus {
        SecStatus::SEC_E_UNSUPPORTED_FUNCTION
    }

    unsafe fn decrypt_message(
        &self,
        _: *mut SecHandle,
        desc: *mut SecBufferDesc,
        _: u32,
        _: *mut u32,
    ) -> SecStatus {
        let answer = {
            let mut s = self.script();
            s.decrypt_calls += 1;
            if s.decrypt_calls > CALL_CAP {
                return SecStatus::SEC_E_DECRYPT_FAILURE;
            }
            next(&mut s.decrypt)
        };
        // SAFETY: per the function's contract, `desc` points to a valid
        // descriptor.
        let bufs = unsafe { (*desc).pBuffers };
        // SAFETY: the engine's descriptor of four buffers, the first the input.
        let bufs = unsafe { &mut *bufs.cast::<[SecBuffer; 4]>() };
        let (base, len) = (bufs[0].pvBuffer.cast::<u8>(), bufs[0].cbBuffer);
        bufs[0] = SecBuffer::empty(SECBUFFER_STREAM_HEADER);
        if let Some((at, n)) = answer.data {
            bufs[1] = SecBuffer {
                cbBuffer: n,
                BufferType: SECBUFFER_DATA,
                // A pointer computed, never dereferenced here.
                pvBuffer: base.wrapping_add(at).cast(),
            };
        }
        if let Some(extra) = answer.extra {
            bufs[3] = SecBuffer {
                cbBuffer: extra.min(len),
                BufferType: SECBUFFER_EXTRA,
                pvBuffer: base.wrapping_add((len - extra.min(len)) as usize).cast(),
            };
        }
        answer.status
    }

    unsafe fn query_context_attributes(
        &self,
        _: *mut SecHandle,
        attribute: u32,
        buffer: *mut c_void,
    ) -> SecStatus {
        let chosen = self.script().chosen.clone();
        match chosen {
            Some(id) if attribute == SECPKG_ATTR_APPLICATION_PROTOCOL => {
                let mut out = SecPkgContext_ApplicationProtocol::ZEROED;
                out.ProtoNegoStatus = SecApplicationProtocolNegotiationStatus_Success;
                out.ProtoNegoExt = SecApplicationProtocolNegotiationExt_ALPN;
                out.ProtocolIdSize = id.len() as u8;
                out.ProtocolId[..id.len()].copy_from_slice(&id);
                // SAFETY: the engine passes this attribute's structure.
                unsafe {
                    buffer
                        .cast::<SecPkgContext_ApplicationProtocol>()
                        .write(out)
                };
                SecStatus::SEC_E_OK
            }
            _ => SecStatus::SEC_E_UNSUPPORTED_FUNCTION,
        }
    }

    unsafe fn apply_control_token(&self, _: *mut SecHandle, _: *mut SecBufferDesc) -> SecStatus {
        SecStatus::SEC_E_UNSUPPORTED_FUNCTION
    }

    unsafe fn free_context_buffer(&self, buffer: *mut c_void) -> SecStatus {
        match self.script().tokens.remove(&(buffer as usize)) {
            Some(_) => SecStatus::SEC_E_OK,
            None => panic!("FreeContextBuffer of a buffer this provider did not hand out"),
        }
    }
}

/// Work items are never needed: every call completes inline at PASSIVE.
#[derive(Clone)]
struct Inline;

impl Platform for Inline {
    type WorkItem = ();
    fn create_work_item(&self, _: unsafe fn(*const ()), _: *const ()) -> Result<(), SecStatus> {
        Ok(())
    }
    fn queue_work_item(&self, _: &()) {
        panic!("no work item is queued when every call completes inline at PASSIVE");
    }
    fn acquire_spin_lock(&self, _: &SpinWord) -> Irql {
        Irql::PASSIVE
    }
    unsafe fn release_spin_lock(&self, _: &SpinWord, _: Irql) {}
    fn now_us(&self) -> u64 {
        0
    }
}

/// What the session reported.
#[derive(Default)]
struct Reports {
    steps: Vec<Outcome>,
    /// Each step's ALPN choice, as reported.
    alpn: Vec<Option<Vec<u8>>>,
    records: Vec<(RecordOutcome, usize, u32)>,
    closed: bool,
}

#[derive(Default)]
struct Events(Mutex<Reports>);

impl SessionEvents for Events {
    fn step_done(&self, report: &StepReport<'_>) {
        let mut r = self.0.lock().unwrap();
        r.steps.push(report.outcome);
        let chosen = report.application_protocol.as_ref().and_then(|p| p.alpn());
        r.alpn.push(chosen.map(<[u8]>::to_vec));
    }
    fn record_done(&self, report: &RecordReport<'_>) {
        let r = (report.outcome, report.data.len(), report.renegotiations);
        self.0.lock().unwrap().records.push(r);
    }
    fn closed(&self) {
        self.0.lock().unwrap().closed = true;
    }
}

fn at() -> Passive {
    Passive::check(Irql::PASSIVE).unwrap()
}

fn ok(status: SecStatus, extra: Option<u32>, token: u32) -> Handshake {
    Handshake {
        status,
        extra,
        token,
    }
}

/// A server session over `p`, and its events.
fn session(p: &Hostile) -> (Session<Hostile, Inline>, Arc<Events>) {
    session_with(p, Role::Server, None)
}

/// A session in `role` with an ALPN list, over `p`, and its events.
fn session_with(
    p: &Hostile,
    role: Role,
    alpn: Option<crate::alpn::ApplicationProtocols>,
) -> (Session<Hostile, Inline>, Arc<Events>) {
    let events = Arc::new(Events::default());
    let slot = HandleSlot::new();
    // SAFETY: the slot is ours alone (no call has it), and its pointer is
    // to its boxed handle.
    unsafe {
        *slot.as_ptr() = SecHandle {
            dwLower: 1,
            dwUpper: 1,
        }
    };
    // SAFETY: a slot holding a handle "issued" by the hostile provider,
    // owned by nobody else.
    let credentials = unsafe { Credentials::from_slot(p.clone(), slot) };
    let setup = SessionSetup {
        role,
        credentials: Arc::new(credentials),
        limits: Limits::default(),
        client_certificates: Default::default(),
        alpn,
        events: events.clone(),
    };
    let s = Session::new(p.clone(), Inline, setup, Arc::default(), &at()).unwrap();
    (s, events)
}

/// A session established by one handshake call (the script's first answer).
fn established(p: &Hostile) -> (Session<Hostile, Inline>, Arc<Events>) {
    p.script()
        .handshake
        .push_back(ok(SecStatus::SEC_E_OK, None, 10));
    let (s, events) = session(p);
    s.step(b"client hello", &at()).unwrap();
    assert_eq!(
        events.0.lock().unwrap().steps,
        [Outcome::Established],
        "the script's handshake"
    );
    p.script().handshake.clear();
    (s, events)
}

#[test]
fn a_handshake_call_that_consumes_and_produces_nothing_fails_once() {
    // CONTINUE_NEEDED with EXTRA the whole input and no token: the same call
    // again would get the same answer, forever.
    let p = Hostile::default();
    p.script()
        .handshake
        .push_back(ok(SecStatus::SEC_I_CONTINUE_NEEDED, Some(10), 0));
    let (s, events) = session(&p);
    s.step(&[0x16; 10], &at()).unwrap();
    assert_eq!(p.script().handshake_calls, 1, "the call was made once");
    assert_eq!(
        events.0.lock().unwrap().steps,
        [Outcome::Failed(NO_PROGRESS)]
    );
    s.close();
    assert!(events.0.lock().unwrap().closed);
}

#[test]
fn a_handshake_call_that_makes_progress_goes_on() {
    // The same answer, but with a token: output grows, so the step goes on
    // (it ends when the output is full, not by the guard).
    let p = Hostile::default();
    {
        let mut s = p.script();
        s.handshake
            .push_back(ok(SecStatus::SEC_I_CONTINUE_NEEDED, Some(4), 0));
        s.handshake.push_back(ok(SecStatus::SEC_E_OK, None, 0));
    }
    let (s, events) = session(&p);
    s.step(&[0x16; 10], &at()).unwrap();
    // 6 bytes consumed by the first call, the last 4 by the second.
    assert_eq!(p.script().handshake_calls, 2);
    assert_eq!(events.0.lock().unwrap().steps, [Outcome::Established]);
}

#[test]
fn a_post_handshake_call_that_consumes_nothing_fails_the_decrypt() {
    // DecryptMessage says RENEGOTIATE with everything in EXTRA; the handshake
    // call then leaves everything in EXTRA again and sends nothing: the
    // decrypt would hand the same bytes back forever.
    let p = Hostile::default();
    let (s, events) = established(&p);
    {
        let mut sc = p.script();
        sc.decrypt.push_back(Decrypt {
            status: SecStatus::SEC_I_RENEGOTIATE,
            data: None,
            extra: Some(u32::MAX),
        });
        sc.handshake.push_back(ok(SecStatus::SEC_E_OK, Some(50), 0));
    }
    s.decrypt(&[0x16; 50], &at()).unwrap();
    let sc = p.script();
    assert_eq!((sc.decrypt_calls, sc.handshake_calls), (1, 2));
    drop(sc);
    let r = &events.0.lock().unwrap().records;
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].0, RecordOutcome::Failed(NO_PROGRESS));
}

#[test]
fn post_handshake_messages_per_decrypt_are_bounded() {
    // Each DecryptMessage meets a one-byte "post-handshake message" that the
    // handshake call consumes: real progress, but a peer could send
    // thousands in one read.
    let p = Hostile::default();
    let (s, events) = established(&p);
    let input = [0x16u8; MAX_POST_HANDSHAKE as usize + 100];
    {
        let mut sc = p.script();
        sc.decrypt.push_back(Decrypt {
            status: SecStatus::SEC_I_RENEGOTIATE,
            data: None,
            extra: Some(u32::MAX), // everything from the cursor on
        });
        // Each handshake call consumes one byte of what it is given.
        for left in (0..input.len() as u32).rev() {
            sc.handshake
                .push_back(ok(SecStatus::SEC_E_OK, Some(left), 0));
        }
    }
    s.decrypt(&input, &at()).unwrap();
    let r = events.0.lock().unwrap().records.clone();
    assert_eq!(r.len(), 1);
    assert_eq!(
        (r[0].0, r[0].2),
        (
            RecordOutcome::Failed(TOO_MANY_POST_HANDSHAKE),
            MAX_POST_HANDSHAKE
        )
    );
    assert_eq!(p.script().decrypt_calls, MAX_POST_HANDSHAKE + 1);
}

#[test]
fn decrypted_data_outside_the_consumed_record_fails_without_a_panic() {
    // Two 100-byte records. The first decrypt says DATA at 5, 190 bytes,
    // with EXTRA 100: the data runs into the next record. Accepted, the
    // cursor moves past the next record's plaintext, and the second decrypt
    // (DATA at 5, 80 bytes) moves 80 bytes past the end of the buffer.
    let p = Hostile::default();
    let (s, events) = established(&p);
    {
        let mut sc = p.script();
        sc.decrypt.push_back(Decrypt {
            status: SecStatus::SEC_E_OK,
            data: Some((5, 190)),
            extra: Some(100),
        });
        sc.decrypt.push_back(Decrypt {
            status: SecStatus::SEC_E_OK,
            data: Some((5, 80)),
            extra: Some(0),
        });
    }
    s.decrypt(&[0x17; 200], &at()).unwrap();
    let r = events.0.lock().unwrap().records.clone();
    assert_eq!(r.len(), 1);
    assert_eq!(
        (r[0].0, r[0].1),
        (RecordOutcome::Failed(SecStatus::SEC_E_INTERNAL_ERROR), 0)
    );
    assert_eq!(p.script().decrypt_calls, 1);
}

#[test]
fn decrypted_data_inside_its_record_is_delivered() {
    // The honest shape of the same input: DATA within each record.
    let p = Hostile::default();
    let (s, events) = established(&p);
    {
        let mut sc = p.script();
        sc.decrypt.push_back(Decrypt {
            status: SecStatus::SEC_E_OK,
            data: Some((5, 90)),
            extra: Some(100),
        });
        sc.decrypt.push_back(Decrypt {
            status: SecStatus::SEC_E_OK,
            data: Some((5, 80)),
            extra: Some(0),
        });
    }
    s.decrypt(&[0x17; 200], &at()).unwrap();
    let r = events.0.lock().unwrap().records.clone();
    assert_eq!(r, [(RecordOutcome::Data { missing: 0 }, 170, 0)]);
}

fn alpn(names: &[&str]) -> Option<crate::alpn::ApplicationProtocols> {
    Some(crate::alpn::ApplicationProtocols::new(names.iter().map(|n| n.as_bytes())).unwrap())
}

#[test]
fn the_alpn_list_goes_only_with_the_calls_before_the_context_exists() {
    // A server: the first call (the ClientHello) creates the context and
    // carries the list; the second (the client's Finished) does not.
    let p = Hostile::default();
    {
        let mut sc = p.script();
        sc.handshake
            .push_back(ok(SecStatus::SEC_I_CONTINUE_NEEDED, None, 10));
        sc.handshake.push_back(ok(SecStatus::SEC_E_OK, None, 0));
        sc.chosen = Some(b"h2".to_vec());
    }
    let (s, events) = session_with(&p, Role::Server, alpn(&["h2", "http/1.1"]));
    s.step(b"client hello", &at()).unwrap();
    s.step(b"client finished", &at()).unwrap();
    assert_eq!(p.script().alpn_seen, [true, false]);
    let r = events.0.lock().unwrap();
    assert_eq!(
        r.steps,
        [Outcome::NeedInput { missing: 0 }, Outcome::Established]
    );
    assert_eq!(r.alpn, [None, Some(b"h2".to_vec())]);
    drop(r);
    s.close();
    // A session without a list sends none and asks nothing.
    let p = Hostile::default();
    {
        let mut sc = p.script();
        sc.handshake.push_back(ok(SecStatus::SEC_E_OK, None, 0));
        sc.chosen = Some(b"h2".to_vec());
    }
    let (s, events) = session(&p);
    s.step(b"client hello", &at()).unwrap();
    assert_eq!(p.script().alpn_seen, [false]);
    assert_eq!(events.0.lock().unwrap().alpn, [None]);
    s.close();
}

#[test]
fn a_client_fails_when_the_server_chose_a_protocol_it_did_not_offer() {
    for (chosen, expect) in [
        (&b"h2"[..], Outcome::Established),
        (
            &b"h3"[..],
            Outcome::Failed(crate::alpn::UNOFFERED_APPLICATION_PROTOCOL),
        ),
        // A prefix of an offered name is not that name.
        (
            &b"http/1"[..],
            Outcome::Failed(crate::alpn::UNOFFERED_APPLICATION_PROTOCOL),
        ),
    ] {
        let p = Hostile::default();
        {
            let mut sc = p.script();
            sc.handshake.push_back(ok(SecStatus::SEC_E_OK, None, 7));
            sc.chosen = Some(chosen.to_vec());
        }
        let client = Role::Client { target: None };
        let (s, events) = session_with(&p, client, alpn(&["h2", "http/1.1"]));
        s.step(&[], &at()).unwrap();
        assert_eq!(p.script().alpn_seen, [true], "the client's first call");
        assert_eq!(events.0.lock().unwrap().steps, [expect]);
    }
}
