//! Allocation accounting for the device engine (docs/PERFORMANCE.md). Once a session is
//! open, its IOCTLs (STEP through a whole handshake, ENCRYPT, DECRYPT, QUERY,
//! SHUTDOWN, and requests the engine refuses) allocate nothing in the device
//! engine or in the handshake engine under it: neither inside
//! `Device::ioctl` nor in the continuations that complete them, wherever
//! those run (inline, on the model's completion threads, from the work item).
//! The one exception is the growth of a session's buffers, which are sized
//! to need (`EngineStats::buffer_grows`): an IOCTL may allocate as many
//! times as it grew a buffer and no more, a session grows its buffers at
//! most `ksspi::engine::max_grows` times, and once they have their size the
//! same IOCTLs again allocate nothing at all (the record-layer exchange runs
//! twice; the second must count zero).
//! An OPEN over cached credentials allocates a fixed amount, the session's
//! setup: the same for every OPEN of a role, in every completion mode and at
//! either callback IRQL, for TLS 1.2 and TLS 1.3 alike. CLOSE and the
//! session's teardown allocate nothing.
//!
//! What is counted: every allocation made while the engine's code runs, that
//! is inside `Device::ioctl`, inside the engine's SSPI completion callback
//! and inside its work item, on whichever thread. What is not: the model
//! provider's calls (ksecdd and Schannel), the platform's work-item calls
//! (the kernel) and the test request's own bookkeeping (the glue's copy to
//! user mode, its completion slot), each wrapped in [`outside`]. The meter is
//! [`ksspi_sim::alloc_count`]: the test sends each IOCTL inside [`engine`],
//! the device runs over its [`CountedProvider`] and [`CountedPlatform`],
//! which enter the engine's callback and work item through [`engine`] too
//! (even from inside a provider call that completes inline), and an IOCTL's
//! figure is what the [`tally`] grew by, over every thread, until its
//! request completed and the model went idle.
//!
//! When something is counted in a per-IOCTL phase, the first few allocation
//! sites are kept with their backtraces ([`record_sites`]) and printed with
//! the failure.
//!
//! The figures when this was written (`-- --nocapture` prints them per run):
//! a server OPEN over cached credentials takes 7 allocations, 1 066 bytes, a
//! client's 10 and 1 129 (it keeps its target name): the session's
//! structures and its 256-byte alert buffer; its input and output come
//! with its first STEP (replies go straight into the request's output
//! buffer). The first OPEN of each kind, which acquires the credentials,
//! takes more. The test requires each of the four figures to be the same in
//! every run, and the cached ones to be under [`SESSION_STRUCTURES`]; it
//! does not pin these numbers.

mod common;

use common::{at, enc, payload};
use ksspi::engine::max_grows;
use ksspi_abi::*;
use ksspi_driver::device::{Device, DeviceConfig, FileId, PendKey, Request};
use ksspi_driver::ntstatus::*;
use ksspi_sim::alloc_count::{
    continuations, engine, outside, record_sites, serial, take_sites, tally, Counted,
    CountedPlatform, CountedProvider, Counting,
};
use ksspi_sim::certs::{CertStore, TestPki, Thumbprint};
use ksspi_sim::{CallbackIrql, Completion, CompletionPolicy, SimConfig, SimProvider};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::ThreadId;
use std::time::Duration;

#[global_allocator]
static METER: Counting = Counting;

// ---------------------------------------------------------------------------
// The glue's stand-in.

/// Where a request's completion lands: status, reply, and the thread that
/// completed it.
#[derive(Default)]
struct Slot {
    done: Mutex<Option<(NtStatus, Vec<u8>, ThreadId)>>,
    cv: Condvar,
    key: Mutex<Option<PendKey>>,
}

/// Marks a request the engine dropped without completing it.
const DROPPED: NtStatus = 0x7FFF_DEAD;

impl Slot {
    fn fill(&self, status: NtStatus, reply: &[u8]) {
        let mut done = self.done.lock().unwrap();
        assert!(done.is_none(), "a request completed twice");
        *done = Some((status, reply.to_vec(), std::thread::current().id()));
        self.cv.notify_all();
    }

    fn wait(&self) -> (NtStatus, Vec<u8>, ThreadId) {
        let mut done = self.done.lock().unwrap();
        while done.is_none() {
            let (d, t) = self.cv.wait_timeout(done, Duration::from_secs(20)).unwrap();
            done = d;
            assert!(
                !t.timed_out() || done.is_some(),
                "request not completed within 20 s"
            );
        }
        let r = done.clone().unwrap();
        assert_ne!(r.0, DROPPED, "the engine dropped a request");
        r
    }
}

/// A request whose own work (the copy to user mode, its slot) is outside the
/// count, as the KMDF glue's would be. Its output buffer (the system buffer
/// the I/O manager allocates) is made before the IOCTL is sent.
struct Req {
    output: Vec<u8>,
    slot: Arc<Slot>,
    completed: bool,
}

impl Req {
    fn new(capacity: usize, slot: Arc<Slot>) -> Req {
        Req {
            output: vec![0; capacity],
            slot,
            completed: false,
        }
    }
}

impl Request for Req {
    fn output_capacity(&self) -> usize {
        self.output.len()
    }
    fn output(&mut self) -> &mut [u8] {
        &mut self.output
    }
    fn pend(&mut self, key: PendKey) -> bool {
        outside(|| *self.slot.key.lock().unwrap() = Some(key));
        true
    }
    fn complete_written(mut self, status: NtStatus, len: usize) {
        assert!(len <= self.output.len(), "reply overruns the output");
        outside(|| self.slot.fill(status, &self.output[..len]));
        self.completed = true;
    }
}

impl Drop for Req {
    fn drop(&mut self) {
        if !self.completed {
            outside(|| self.slot.fill(DROPPED, &[]));
        }
    }
}

// ---------------------------------------------------------------------------
// The rig: a metered device over the model, and the IOCTLs.

type Dev = Device<CountedProvider, CountedPlatform, Req>;

/// One certificate store for every test (building it is not the engine's).
fn pki() -> &'static (Arc<CertStore>, Thumbprint) {
    static PKI: OnceLock<(Arc<CertStore>, Thumbprint)> = OnceLock::new();
    PKI.get_or_init(|| {
        let (store, thumb) = TestPki::new("device alloc CA").store(&["localhost"]);
        (Arc::new(store), thumb)
    })
}

/// TLS 1.3 server contexts send this many session tickets (each reaches the
/// client's DECRYPT as SEC_I_RENEGOTIATE, through the handshake call).
const TICKETS: usize = 2;

struct Rig {
    sim: SimProvider,
    dev: Dev,
    file: FileId,
    protocols: u32,
    /// The thread the test sends IOCTLs from.
    me: ThreadId,
    /// Every measured IOCTL after setup, with what it allocated and how
    /// many buffer growths the engine counted meanwhile.
    log: Vec<(String, Counted, u64)>,
    /// IOCTLs completed on another thread than the one that sent them.
    off_thread: usize,
    /// Hold the model's completion threads while every other IOCTL is sent
    /// (for policies that complete later on another thread): its calls then
    /// complete after the issuer returned, so the callback continues, on
    /// the model's CPU or through the work item, whatever the timing.
    hold: bool,
    /// IOCTLs sent.
    sent: usize,
}

/// One IOCTL's completion and what it allocated.
struct Call {
    status: NtStatus,
    reply: Vec<u8>,
    counted: Counted,
    /// Session buffers grown meanwhile (`EngineStats::buffer_grows`).
    grows: u64,
}

impl Rig {
    fn new(completion: CompletionPolicy, irql: CallbackIrql, protocols: u32) -> Rig {
        let (store, _) = pki();
        let sim = SimProvider::new(
            SimConfig {
                completion,
                callback_irql: irql,
                seed: 8,
                tls13_tickets: TICKETS,
                ..SimConfig::default()
            },
            store.clone(),
        );
        let dev = Device::new(
            CountedProvider::new(sim.clone()),
            CountedPlatform::new(&sim),
            DeviceConfig::default(),
        );
        let file = dev.open_file();
        Rig {
            sim,
            dev,
            file,
            protocols,
            me: std::thread::current().id(),
            log: Vec::new(),
            off_thread: 0,
            hold: matches!(
                completion,
                CompletionPolicy::Always(Completion::Async) | CompletionPolicy::Mixed
            ),
            sent: 0,
        }
    }

    /// Send one IOCTL, wait for its completion and for the model to go idle
    /// (the continuation may go on after completing the request): what the
    /// engine allocated meanwhile, on any thread.
    fn call(&mut self, code: u32, input: &[u8], capacity: usize) -> Call {
        let slot = Arc::new(Slot::default());
        let request = Req::new(capacity, slot.clone());
        let gate = (self.hold && self.sent.is_multiple_of(2)).then(|| self.sim.hold_completions());
        self.sent += 1;
        let grown = self.grows();
        let before = tally();
        engine(|| self.dev.ioctl(self.file, code, input, request, &at()));
        if let Some(gate) = gate {
            gate.release();
        }
        let (status, reply, thread) = slot.wait();
        self.sim.wait_idle();
        let counted = tally() - before;
        if thread != self.me {
            self.off_thread += 1;
        }
        Call {
            status,
            reply,
            counted,
            grows: self.grows() - grown,
        }
    }

    /// Session buffers grown on the device so far.
    fn grows(&self) -> u64 {
        self.dev.stats().buffer_grows.load(Ordering::SeqCst)
    }

    /// [`Rig::call`], logged as a per-IOCTL measurement.
    fn logged(&mut self, what: String, code: u32, input: &[u8], capacity: usize) -> Call {
        let call = self.call(code, input, capacity);
        self.log.push((what, call.counted, call.grows));
        call
    }

    fn open(&mut self, role: Role) -> (SessionId, Counted) {
        let target: &[u8] = if role == Role::Server {
            b""
        } else {
            b"localhost"
        };
        let input = enc(&OpenRequest::new(role, self.protocols, pki().1, target));
        let call = self.call(IOCTL_KSSPI_OPEN, &input, 64);
        assert_eq!(call.status, STATUS_SUCCESS);
        let reply = decode::<OpenReply>(&call.reply).unwrap();
        assert_eq!(reply.status, 0, "OPEN {role:?}");
        (reply.session, call.counted)
    }

    fn step(&mut self, who: &str, session: SessionId, input: &[u8]) -> (StepOutcome, Vec<u8>) {
        let req = enc(&StepRequest { session, input });
        let n = self.log.len();
        let call = self.logged(
            format!("STEP {who} #{n} ({} bytes in)", input.len()),
            IOCTL_KSSPI_STEP,
            &req,
            step_reply_capacity(64 * 1024),
        );
        assert_eq!(call.status, STATUS_SUCCESS, "STEP {who}");
        let r = decode::<StepReply>(&call.reply).unwrap();
        assert_ne!(
            r.outcome,
            StepOutcome::Failed,
            "STEP {who}: {:#x}",
            r.status
        );
        (r.outcome, r.output.to_vec())
    }

    fn encrypt(&mut self, who: &str, session: SessionId, data: &[u8]) -> Vec<u8> {
        let req = enc(&EncryptRequest(RecordRequest {
            session,
            bytes: data,
        }));
        let call = self.logged(
            format!("ENCRYPT {who} ({} bytes)", data.len()),
            IOCTL_KSSPI_ENCRYPT,
            &req,
            encrypt_reply_capacity(data.len()),
        );
        assert_eq!(call.status, STATUS_SUCCESS, "ENCRYPT {who}");
        let r = decode::<EncryptReply>(&call.reply).unwrap();
        assert_eq!(r.status, 0);
        r.output.to_vec()
    }

    /// DECRYPT: the outcome, the plaintext, the renegotiations, any output.
    fn decrypt(
        &mut self,
        who: &str,
        session: SessionId,
        input: &[u8],
    ) -> (RecordOutcome, Vec<u8>, u32, Vec<u8>) {
        let req = enc(&DecryptRequest(RecordRequest {
            session,
            bytes: input,
        }));
        let call = self.logged(
            format!("DECRYPT {who} ({} bytes in)", input.len()),
            IOCTL_KSSPI_DECRYPT,
            &req,
            common::RECORD_REPLY,
        );
        assert_eq!(call.status, STATUS_SUCCESS, "DECRYPT {who}");
        let r = decode::<RecordReply>(&call.reply).unwrap();
        assert_ne!(
            r.outcome,
            RecordOutcome::Failed,
            "DECRYPT {who}: {:#x}",
            r.status
        );
        (
            r.outcome,
            r.data.to_vec(),
            r.renegotiations,
            r.output.to_vec(),
        )
    }

    /// DECRYPT `wire` in pieces of `feed` bytes; the plaintext and the last
    /// outcome.
    fn unseal(
        &mut self,
        who: &str,
        session: SessionId,
        wire: &[u8],
        feed: usize,
    ) -> (Vec<u8>, RecordOutcome) {
        let mut data = Vec::new();
        let mut outcome = RecordOutcome::Data;
        for piece in wire.chunks(feed) {
            let (o, d, _, _) = self.decrypt(who, session, piece);
            data.extend_from_slice(&d);
            outcome = o;
        }
        (data, outcome)
    }

    fn query(&mut self, who: &str, session: SessionId) {
        let req = enc(&QueryRequest { session });
        let call = self.logged(
            format!("QUERY {who}"),
            IOCTL_KSSPI_QUERY,
            &req,
            QUERY_REPLY_CAPACITY,
        );
        assert_eq!(call.status, STATUS_SUCCESS, "QUERY {who}");
        let q = decode::<QueryReply>(&call.reply).unwrap();
        assert_ne!(q.protocol, 0);
        assert!(q.max_message > 0);
    }

    /// SHUTDOWN: the close_notify to send.
    fn shutdown(&mut self, who: &str, session: SessionId) -> Vec<u8> {
        let req = enc(&ShutdownRequest { session });
        let call = self.logged(
            format!("SHUTDOWN {who}"),
            IOCTL_KSSPI_SHUTDOWN,
            &req,
            common::RECORD_REPLY,
        );
        assert_eq!(call.status, STATUS_SUCCESS, "SHUTDOWN {who}");
        let r = decode::<RecordReply>(&call.reply).unwrap();
        assert_eq!(r.outcome, RecordOutcome::ShutDown, "SHUTDOWN {who}");
        assert!(!r.output.is_empty(), "SHUTDOWN {who}: a close_notify");
        r.output.to_vec()
    }

    /// An IOCTL the engine must refuse with `expect`.
    fn refused(&mut self, what: &str, code: u32, input: &[u8], capacity: usize, expect: NtStatus) {
        let call = self.logged(format!("{what} (refused)"), code, input, capacity);
        assert_eq!(call.status, expect, "{what}");
    }

    fn close(&mut self, session: SessionId) -> Counted {
        let call = self.call(IOCTL_KSSPI_CLOSE, &enc(&CloseRequest { session }), 64);
        assert_eq!(call.status, STATUS_SUCCESS);
        call.counted
    }

    /// A handshake through STEP; the server's first flight arrives in two
    /// pieces (an INCOMPLETE_MESSAGE first). Returns what the server sent
    /// after the client finished (TLS 1.3 tickets).
    fn handshake(&mut self, server: SessionId, client: SessionId) -> Vec<u8> {
        let (_, mut to_server) = self.step("client", client, &[]);
        assert!(to_server.len() > 10);
        let (outcome, out) = self.step("server", server, &to_server[..10]);
        assert_eq!(outcome, StepOutcome::NeedInput);
        assert!(out.is_empty(), "nothing to send on a partial ClientHello");
        to_server.drain(..10);
        let mut to_client = Vec::new();
        let (mut c_done, mut s_done) = (false, false);
        for _ in 0..8 {
            if !s_done && !to_server.is_empty() {
                let (outcome, out) = self.step("server", server, &to_server);
                s_done = outcome == StepOutcome::Established;
                to_server.clear();
                to_client.extend_from_slice(&out);
            }
            if !c_done && !to_client.is_empty() {
                let (outcome, out) = self.step("client", client, &to_client);
                c_done = outcome == StepOutcome::Established;
                to_client.clear();
                to_server.extend_from_slice(&out);
            }
            if c_done && s_done && to_server.is_empty() {
                return to_client;
            }
        }
        panic!("the handshake did not finish");
    }
}

// ---------------------------------------------------------------------------
// The scenario.

/// What one run measured.
#[derive(Debug)]
struct Figures {
    /// Buffer growths of the session pair, over its whole life.
    grows: u64,
    /// The first server and client OPENs (each acquires its credentials).
    open_acquiring: (Counted, Counted),
    /// A server and a client OPEN over cached credentials: the session setup.
    open_cached: (Counted, Counted),
    /// CLOSE of a session that never stepped, and of one after its records.
    close: (Counted, Counted),
    /// IOCTLs measured after setup (each allocated nothing).
    ioctls: usize,
    /// Of which completed on another thread than the one that sent them.
    off_thread: usize,
    /// Engine callbacks and work items that ran through the meter meanwhile.
    callbacks: u64,
    work_items: u64,
}

/// Open sessions (measuring their setup), then run a session pair through
/// a handshake and its record layer, requiring zero allocations for every
/// IOCTL; then close and unload, leaving nothing in the model.
fn scenario(completion: CompletionPolicy, irql: CallbackIrql, protocols: u32) -> Figures {
    let label = format!("{completion:?}, callbacks {irql:?}, protocols {protocols:#x}");
    let mut rig = Rig::new(completion, irql, protocols);

    // Per-session setup. The first pair acquires credentials; then three
    // pairs over cached credentials must each cost exactly the same.
    let (server, s_first) = rig.open(Role::Server);
    let (client, c_first) = rig.open(Role::Client);
    assert_eq!(rig.dev.credentials_cached(), 2, "{label}");
    let mut idle = Vec::new();
    let mut cached = None;
    for _ in 0..3 {
        let (s, s_cost) = rig.open(Role::Server);
        let (c, c_cost) = rig.open(Role::Client);
        idle.extend([s, c]);
        let cost = (s_cost, c_cost);
        assert_eq!(
            *cached.get_or_insert(cost),
            cost,
            "{label}: an OPEN over cached credentials costs the same every time"
        );
    }
    assert_eq!(
        rig.dev.credentials_cached(),
        2,
        "{label}: nothing new cached"
    );
    let open_cached = cached.unwrap();

    // From here on nothing may allocate: keep the first sites.
    let entered = continuations();
    take_sites();
    record_sites(true);
    // A session that never stepped: its CLOSE and teardown.
    let mut close_idle = None;
    for id in idle {
        let cost = rig.close(id);
        assert_eq!(*close_idle.get_or_insert(cost), cost, "{label}: CLOSE");
    }

    // A session's IOCTLs.
    let tickets = rig.handshake(server, client);
    if protocols == proto::TLS13 {
        assert!(!tickets.is_empty(), "{label}: the server's tickets");
    }
    // The client reads the tickets (SEC_I_RENEGOTIATE, through the handshake
    // call); a piece of a record first (SEC_E_INCOMPLETE_MESSAGE).
    if !tickets.is_empty() {
        let (outcome, data, _, _) = rig.decrypt("client", client, &tickets[..3]);
        assert_eq!((outcome, data.len()), (RecordOutcome::Data, 0));
        let (outcome, data, renegotiations, _) = rig.decrypt("client", client, &tickets[3..]);
        assert_eq!((outcome, data.len()), (RecordOutcome::Data, 0));
        assert!(
            renegotiations >= 1,
            "{label}: tickets go through the handshake call"
        );
    }
    rig.query("server", server);
    rig.query("client", client);
    // Both ways, a byte, a record and more, and the largest ENCRYPT; fed in
    // pieces that split records. Twice: the second time every buffer has
    // its size, and nothing may be allocated at all.
    let mut second_pass = 0..0;
    for pass in 0..2 {
        let from = rig.log.len();
        for (n, salt) in [(1, 1), (5_000, 2), (40_000, 3), (MAX_TOKEN, 4)] {
            let data = payload(n, salt);
            let wire = rig.encrypt("client", client, &data);
            let (got, outcome) = rig.unseal("server", server, &wire, 7_000);
            assert_eq!(
                (got == data, outcome),
                (true, RecordOutcome::Data),
                "{label}: {n} bytes"
            );
            let wire = rig.encrypt("server", server, &data);
            let (got, outcome) = rig.unseal("client", client, &wire, 30_000);
            assert_eq!(
                (got == data, outcome),
                (true, RecordOutcome::Data),
                "{label}: {n} bytes back"
            );
        }
        if pass == 1 {
            second_pass = from..rig.log.len();
        }
    }
    // Requests the engine refuses.
    let step_input = enc(&StepRequest {
        session: client,
        input: &[],
    });
    let capacity = step_reply_capacity(64 * 1024);
    rig.refused(
        "STEP after the handshake",
        IOCTL_KSSPI_STEP,
        &step_input,
        capacity,
        STATUS_INVALID_DEVICE_REQUEST,
    );
    rig.refused(
        "STEP with a short output",
        IOCTL_KSSPI_STEP,
        &step_input,
        16,
        STATUS_BUFFER_TOO_SMALL,
    );
    let unknown = enc(&QueryRequest {
        session: SessionId::new(999, 1),
    });
    rig.refused(
        "QUERY of an unknown session",
        IOCTL_KSSPI_QUERY,
        &unknown,
        QUERY_REPLY_CAPACITY,
        STATUS_INVALID_HANDLE,
    );
    rig.refused(
        "DECRYPT of a truncated message",
        IOCTL_KSSPI_DECRYPT,
        &[1, 2, 3],
        common::RECORD_REPLY,
        STATUS_BUFFER_TOO_SMALL,
    );
    // close_notify both ways.
    let close_notify = rig.shutdown("server", server);
    let (outcome, _, _, _) = rig.decrypt("client", client, &close_notify);
    assert_eq!(outcome, RecordOutcome::PeerClosed, "{label}");
    let close_notify = rig.shutdown("client", client);
    let (outcome, _, _, _) = rig.decrypt("server", server, &close_notify);
    assert_eq!(outcome, RecordOutcome::PeerClosed, "{label}");
    let encrypt_input = enc(&EncryptRequest(RecordRequest {
        session: client,
        bytes: b"late",
    }));
    rig.refused(
        "ENCRYPT after SHUTDOWN",
        IOCTL_KSSPI_ENCRYPT,
        &encrypt_input,
        encrypt_reply_capacity(4),
        STATUS_INVALID_DEVICE_STATE,
    );

    let close_used = rig.close(server) + rig.close(client);
    record_sites(false);
    let sites = take_sites();

    // Every allocation an IOCTL made is a buffer's growth; the second pass
    // of the record exchange none at all.
    let offenders: Vec<String> = rig
        .log
        .iter()
        .enumerate()
        .filter(|(i, (_, c, grows))| {
            c.allocs != *grows || (second_pass.contains(i) && c.allocs != 0)
        })
        .map(|(_, (what, c, grows))| format!("  {what}: {c} ({grows} buffer growths)"))
        .collect();
    let grows: u64 = rig.log.iter().map(|(_, _, g)| g).sum();
    let bound = 2 * max_grows(&DeviceConfig::default().limits);
    assert!(
        offenders.is_empty()
            && close_used.allocs == 0
            && close_idle.unwrap().allocs == 0
            && grows <= bound,
        "{label}: the device engine allocated after setup beyond its buffers' growth \
         ({grows} growths for two sessions, at most {bound}), in {} of {} IOCTLs:\n{}\n\
         CLOSE after use: {close_used}; CLOSE of an idle session: {}\n{sites}",
        offenders.len(),
        rig.log.len(),
        offenders.join("\n"),
        close_idle.unwrap(),
    );

    let figures = Figures {
        grows,
        open_acquiring: (s_first, c_first),
        open_cached,
        close: (close_idle.unwrap(), close_used),
        ioctls: rig.log.len(),
        off_thread: rig.off_thread,
        callbacks: (continuations() - entered).callbacks,
        work_items: (continuations() - entered).work_items,
    };
    assert_eq!(rig.dev.unload().sessions, 0, "{label}: sessions left");
    let Rig { sim, dev, .. } = rig;
    sim.wait_idle();
    drop(dev);
    sim.unload()
        .unwrap_or_else(|leaks| panic!("{label}: {leaks}"));
    println!(
        "{label}: OPEN acquiring credentials: server {}, client {}; OPEN over cached \
         credentials: server {}, client {}; CLOSE: {} / {}; {} IOCTLs after setup \
         allocated nothing but {} buffer growths ({} completed off the sending thread; {} \
         callbacks, {} work items metered)",
        figures.open_acquiring.0,
        figures.open_acquiring.1,
        figures.open_cached.0,
        figures.open_cached.1,
        figures.close.0,
        figures.close.1,
        figures.ioctls,
        figures.grows,
        figures.off_thread,
        figures.callbacks,
        figures.work_items,
    );
    figures
}

/// What a session's structures (beside its buffers) may take: the engine's
/// alert buffer (256 bytes), the conductor, the session and their events,
/// the OPEN's parameters.
const SESSION_STRUCTURES: u64 = 2048;

/// The per-session setup must be the same in every run (every mode, IRQL
/// and protocol set): the first run's figures, kept for the others; and it
/// must be the buffers and a little more.
fn same_setup_everywhere(f: &Figures, what: &str) {
    static FIRST: Mutex<Option<[Counted; 4]>> = Mutex::new(None);
    let mut first = FIRST.lock().unwrap_or_else(|e| e.into_inner());
    let mine = [
        f.open_cached.0,
        f.open_cached.1,
        f.open_acquiring.0,
        f.open_acquiring.1,
    ];
    let expected = *first.get_or_insert(mine);
    assert_eq!(
        mine, expected,
        "{what}: the OPENs' allocations (server and client over cached credentials, \
         then acquiring them) differ between runs"
    );
    for (role, c) in [("server", f.open_cached.0), ("client", f.open_cached.1)] {
        assert!(
            c.bytes < SESSION_STRUCTURES,
            "{what}: a {role} session's setup ({c}) is not under {SESSION_STRUCTURES} \
             bytes of structures (its buffers come when first needed)",
        );
    }
    assert!(f.ioctls >= 45, "{what}: {} IOCTLs measured", f.ioctls);
}

/// Every callback IRQL and protocol set under one completion policy.
fn every_run(completion: CompletionPolicy) -> Vec<Figures> {
    let _serial = serial();
    let mut all = Vec::new();
    for irql in [CallbackIrql::Passive, CallbackIrql::Dispatch] {
        for protocols in [proto::TLS13, proto::TLS12] {
            let f = scenario(completion, irql, protocols);
            same_setup_everywhere(&f, &format!("{completion:?}, {irql:?}, {protocols:#x}"));
            all.push(f);
        }
    }
    all
}

#[test]
fn the_meter_counts_the_engines_code_on_any_thread_and_nothing_outside_it() {
    let _serial = serial();
    let before = tally();
    engine(|| drop(std::hint::black_box(vec![1u8; 10])));
    assert_eq!(
        tally() - before,
        Counted {
            allocs: 1,
            bytes: 10
        }
    );
    // Outside the engine, or in nothing, nothing is counted.
    let before = tally();
    engine(|| outside(|| drop(std::hint::black_box(vec![1u8; 10]))));
    drop(std::hint::black_box(vec![1u8; 10]));
    assert_eq!(tally() - before, Counted::default());
    // The engine entered from inside `outside` (a callback the provider
    // runs inline) is counted, once.
    let before = tally();
    engine(|| {
        outside(|| engine(|| drop(std::hint::black_box(vec![1u8; 7]))));
    });
    assert_eq!(
        tally() - before,
        Counted {
            allocs: 1,
            bytes: 7
        }
    );
    // On another thread too.
    let before = tally();
    std::thread::spawn(|| engine(|| drop(std::hint::black_box(vec![1u8; 5]))))
        .join()
        .unwrap();
    assert_eq!(
        tally() - before,
        Counted {
            allocs: 1,
            bytes: 5
        }
    );
}

#[test]
fn ioctls_allocate_nothing_with_async_completions() {
    let runs = every_run(CompletionPolicy::Always(Completion::Async));
    // The continuations really ran elsewhere: on the model's CPUs at
    // PASSIVE, through the work item at DISPATCH (every other IOCTL is sent
    // with the completion threads held, and the handshake alone takes five
    // STEPs).
    for f in &runs {
        assert!(f.off_thread >= 2 && f.callbacks > 0, "{f:?}");
    }
    assert!(runs[2..].iter().all(|f| f.work_items >= 2), "{runs:?}");
}

#[test]
fn ioctls_allocate_nothing_with_callbacks_before_the_issuer_returns() {
    let runs = every_run(CompletionPolicy::Always(Completion::AsyncBeforeReturn));
    assert!(runs.iter().all(|f| f.callbacks > 0), "{runs:?}");
}

#[test]
fn ioctls_allocate_nothing_with_inline_callbacks() {
    let runs = every_run(CompletionPolicy::Always(Completion::Inline));
    assert!(runs.iter().all(|f| f.callbacks > 0), "{runs:?}");
}

#[test]
fn ioctls_allocate_nothing_with_synchronous_completions() {
    let runs = every_run(CompletionPolicy::Always(Completion::Sync));
    assert!(runs.iter().all(|f| f.callbacks == 0), "{runs:?}");
}

#[test]
fn ioctls_allocate_nothing_with_a_seeded_mix() {
    every_run(CompletionPolicy::Mixed);
}
