//! IOCTL sequences into the device engine, as a hostile user-mode caller
//! sends them: raw buffers under any code, well-formed requests on real,
//! stale, foreign and made-up sessions, across two file handles, with
//! requests left pending, cancelled, and files closed under them.
//!
//! The script ([`run`]): a header of three bytes (completion mode, callback
//! IRQL and TLS 1.3 tickets, seed), then operations ([`Op`]) until the input
//! ends. Every request is checked as it completes ([`check_reply`]); at the
//! end both files are closed, the device unloads, and every request must
//! have completed exactly once with nothing left in the model.

use crate::input::Input;
use ksspi::{Irql, Passive};
use ksspi_abi::*;
use ksspi_driver::device::{Device, DeviceConfig, FileId, PendKey, Request};
use ksspi_driver::ntstatus::*;
use ksspi_sim::certs::Thumbprint;
use ksspi_sim::{Completion, CompletionPolicy, SimPlatform, SimProvider};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The operations of a script, by their byte (taken modulo the count).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// Code selector, file, output capacity, input bytes: anything at all.
    Raw = 0,
    /// A well-formed OPEN: role and flags, protocols, target.
    Open,
    /// STEP on a session: the last reply's output (relay) or raw bytes.
    Step,
    /// ENCRYPT bytes on a session.
    Encrypt,
    /// DECRYPT the relayed output or raw bytes on a session.
    Decrypt,
    /// SHUTDOWN a session.
    Shutdown,
    /// QUERY a session.
    Query,
    /// CLOSE a session.
    Close,
    /// GET_INFO.
    Info,
    /// A SELFTEST: a small one, waited for; or (selector bit 0x20) one whose
    /// figures may be huge (at, past or far past the bounds), left pending
    /// if it runs: a cancel or the script's end stops it.
    Selftest,
    /// A STEP or DECRYPT left pending (not waited for).
    Pend,
    /// Cancel a request left pending.
    Cancel,
    /// Close a file handle (cleanup) and open a new one in its place.
    Cleanup,
    /// Wait for every request left pending.
    Settle,
}

impl Op {
    const ALL: [Op; 14] = [
        Op::Raw,
        Op::Open,
        Op::Step,
        Op::Encrypt,
        Op::Decrypt,
        Op::Shutdown,
        Op::Query,
        Op::Close,
        Op::Info,
        Op::Selftest,
        Op::Pend,
        Op::Cancel,
        Op::Cleanup,
        Op::Settle,
    ];

    /// The operation a script byte selects.
    pub fn from_byte(b: u8) -> Op {
        Op::ALL[usize::from(b) % Op::ALL.len()]
    }
}

/// Every IOCTL code the device knows; a raw selector past them is taken as a
/// code of its own.
pub const CODES: [u32; 9] = [
    IOCTL_KSSPI_GET_INFO,
    IOCTL_KSSPI_OPEN,
    IOCTL_KSSPI_STEP,
    IOCTL_KSSPI_CLOSE,
    IOCTL_KSSPI_SELFTEST,
    IOCTL_KSSPI_ENCRYPT,
    IOCTL_KSSPI_DECRYPT,
    IOCTL_KSSPI_SHUTDOWN,
    IOCTL_KSSPI_QUERY,
];

/// What a run reached (so the seeds can be checked to go deep).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Requests sent.
    pub requests: usize,
    /// Requests that completed with STATUS_SUCCESS.
    pub succeeded: usize,
    /// STEP replies that said Established.
    pub established: usize,
    /// Plaintext bytes DECRYPT replies carried.
    pub decrypted: usize,
    /// Requests that completed with STATUS_CANCELLED.
    pub cancelled: usize,
}

/// How long a request may take before it counts as never completed.
const PATIENCE: Duration = Duration::from_secs(20);

/// What became of one request.
#[derive(Default)]
struct Fate {
    code: u32,
    completions: Vec<(NtStatus, Vec<u8>)>,
    dropped: bool,
    key: Option<PendKey>,
}

#[derive(Default)]
struct Log {
    fates: Mutex<Vec<Fate>>,
    cv: Condvar,
}

/// A request as the KMDF glue hands it over, reporting into the run's log.
pub struct FuzzRequest {
    log: Arc<Log>,
    id: usize,
    capacity: usize,
    /// The output buffer, allocated when the engine first writes to it.
    output: Vec<u8>,
    cancelled_early: bool,
    completed: bool,
}

impl Request for FuzzRequest {
    fn output_capacity(&self) -> usize {
        self.capacity
    }

    fn pend(&mut self, key: PendKey) -> bool {
        self.log.fates.lock().unwrap()[self.id].key = Some(key);
        !self.cancelled_early
    }

    fn output(&mut self) -> &mut [u8] {
        if self.output.len() != self.capacity {
            self.output = vec![0; self.capacity];
        }
        &mut self.output
    }

    fn complete_written(mut self, status: NtStatus, len: usize) {
        assert!(
            len <= self.capacity,
            "a {len}-byte reply into a {}-byte output buffer",
            self.capacity
        );
        assert!(
            len == 0 || self.output.len() == self.capacity,
            "a reply completed in place was never written"
        );
        assert_ne!(status, STATUS_PENDING, "completed with STATUS_PENDING");
        self.completed = true;
        let mut reply = std::mem::take(&mut self.output);
        reply.truncate(len);
        self.log.fates.lock().unwrap()[self.id]
            .completions
            .push((status, reply));
        self.log.cv.notify_all();
    }
}

impl Drop for FuzzRequest {
    fn drop(&mut self) {
        if !self.completed {
            // On Windows: an IRP that never completes.
            self.log.fates.lock().unwrap()[self.id].dropped = true;
            self.log.cv.notify_all();
        }
    }
}

type Dev = Device<SimProvider, SimPlatform, FuzzRequest>;

/// The device, its model, two file handles and what the script learned.
struct World {
    sim: SimProvider,
    dev: Dev,
    log: Arc<Log>,
    thumb: Thumbprint,
    files: [FileId; 2],
    /// Sessions OPEN returned, in order.
    sessions: Vec<SessionId>,
    /// The outputs of the replies since the last relay (what a relay sends:
    /// one pipe, as the protocol takes turns).
    wire: Vec<u8>,
    /// Requests left pending by [`Op::Pend`] and large self-tests.
    pending: Vec<usize>,
}

/// A self-test figure: `small`, the ABI's `bound`, one past it, or anything
/// at all.
fn figure(inp: &mut Input<'_>, small: u32, bound: u32) -> u32 {
    match inp.u8() & 3 {
        0 => small,
        1 => bound,
        2 => bound.saturating_add(1),
        _ => inp.u32(),
    }
}

fn passive() -> Passive {
    Passive::check(Irql::PASSIVE).expect("the fuzz thread runs at PASSIVE")
}

fn enc<'a, M: Message<'a>>(m: &M) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let n = encode(m, &mut buf).expect("a well-formed request encodes");
    buf.truncate(n);
    buf
}

impl World {
    fn new(header: &mut Input<'_>) -> World {
        let sim = crate::model(header);
        let config = DeviceConfig {
            max_sessions: 8,
            max_sessions_per_file: 5,
            ..DeviceConfig::default()
        };
        let dev = Device::new(sim.clone(), SimPlatform::new(&sim), config);
        let files = [dev.open_file(), dev.open_file()];
        World {
            sim,
            dev,
            log: Arc::default(),
            thumb: crate::pki().1,
            files,
            sessions: Vec::new(),
            wire: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// Send a request; returns its id in the log.
    fn send(&self, file: FileId, code: u32, input: &[u8], capacity: usize, early: bool) -> usize {
        let id = {
            let mut fates = self.log.fates.lock().unwrap();
            fates.push(Fate {
                code,
                ..Fate::default()
            });
            fates.len() - 1
        };
        let request = FuzzRequest {
            log: self.log.clone(),
            id,
            capacity,
            output: Vec::new(),
            cancelled_early: early,
            completed: false,
        };
        self.dev.ioctl(file, code, input, request, &passive());
        id
    }

    /// Wait for request `id`'s completion and check it.
    fn wait(&self, id: usize) -> (NtStatus, Vec<u8>) {
        let deadline = Instant::now() + PATIENCE;
        let mut fates = self.log.fates.lock().unwrap();
        loop {
            let fate = &fates[id];
            assert!(!fate.dropped, "request {id} dropped without completion");
            if let Some(first) = fate.completions.first() {
                let (code, first) = (fate.code, first.clone());
                drop(fates);
                check_reply(code, &first);
                return first;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "request {id} not completed within 20 s");
            fates = self.log.cv.wait_timeout(fates, left).unwrap().0;
        }
    }

    fn call(&self, file: FileId, code: u32, input: &[u8], capacity: usize) -> (NtStatus, Vec<u8>) {
        self.wait(self.send(file, code, input, capacity, false))
    }

    fn file(&self, inp: &mut Input<'_>) -> FileId {
        self.files[usize::from(inp.u8() & 1)]
    }

    /// A session OPEN returned (by index), or, with the selector's top bit
    /// set, a made-up id (stale, foreign or never issued).
    fn session(&self, inp: &mut Input<'_>) -> SessionId {
        let b = inp.u8();
        if b & 0x80 == 0 && !self.sessions.is_empty() {
            self.sessions[usize::from(b) % self.sessions.len()]
        } else {
            SessionId::new(u32::from(b & 7), u32::from(inp.u8()))
        }
    }

    /// An output buffer: the fitting one, or (selector bit 0x40) a size the
    /// script picks.
    fn capacity(inp: &mut Input<'_>, fitting: usize) -> usize {
        let b = inp.u8();
        if b & 0x40 == 0 {
            fitting
        } else {
            usize::from(inp.u16())
        }
    }

    /// Relayed bytes (true) or raw ones (selector bit 1).
    fn payload(&self, inp: &mut Input<'_>) -> (Vec<u8>, bool) {
        if inp.u8() & 1 == 0 {
            (self.wire.clone(), true)
        } else {
            (inp.bytes().to_vec(), false)
        }
    }

    /// After a successful reply: the relayed bytes were delivered, and its
    /// output waits for the next relay (behind what waits already).
    fn keep_output(&mut self, code: u32, (status, reply): &(NtStatus, Vec<u8>), relayed: bool) {
        if *status != STATUS_SUCCESS {
            return;
        }
        if relayed {
            self.wire.clear();
        }
        let output = match code {
            IOCTL_KSSPI_STEP => decode::<StepReply>(reply).ok().map(|r| r.output),
            IOCTL_KSSPI_ENCRYPT => decode::<EncryptReply>(reply).ok().map(|r| r.output),
            IOCTL_KSSPI_DECRYPT | IOCTL_KSSPI_SHUTDOWN => {
                decode::<RecordReply>(reply).ok().map(|r| r.output)
            }
            _ => None,
        };
        if let Some(output) = output {
            self.wire.extend_from_slice(output);
        }
    }

    fn op(&mut self, inp: &mut Input<'_>) {
        let op = Op::from_byte(inp.u8());
        match op {
            Op::Raw => {
                let sel = inp.u8();
                let code = match CODES.get(usize::from(sel)) {
                    Some(&c) => c,
                    None => inp.u32(),
                };
                let file = self.file(inp);
                let capacity = usize::from(inp.u16()) * 4;
                let input = inp.bytes();
                self.call(file, code, input, capacity);
            }
            Op::Open => {
                let flags = inp.u8();
                let file = self.file(inp);
                let mut thumbprint = self.thumb;
                if flags & 4 != 0 {
                    thumbprint[0] ^= 0x5A; // a certificate the store lacks
                }
                let target = if flags & 8 != 0 {
                    inp.bytes()
                } else {
                    &b"localhost"[..]
                };
                let role = if flags & 1 == 0 {
                    Role::Server
                } else {
                    Role::Client
                };
                let target = if role == Role::Client { target } else { b"" };
                let protocols = u32::from(flags >> 4 & 3).max(1);
                // Bit 6: OPEN's first layout; bit 7: mutual TLS (a server
                // requiring a client certificate, a client offering the
                // store's one).
                let client_auth = match (flags & 0x40 != 0, flags & 0x80 != 0, role) {
                    (true, ..) => None,
                    (false, false, _) => Some(ClientAuth::NONE),
                    (false, true, Role::Server) => Some(ClientAuth {
                        server_mode: ClientCertMode::Require,
                        ..ClientAuth::NONE
                    }),
                    (false, true, Role::Client) => Some(ClientAuth {
                        certificate: Some(self.thumb),
                        store: STORE_MY,
                        ..ClientAuth::NONE
                    }),
                };
                // The next byte: an ALPN list (OPEN's third layout), one of
                // a few good ones that overlap or not, or raw bytes (an
                // empty list, empty names, prefixes past the end, too long).
                let raw;
                let choice = inp.u8();
                // Its bits 3 and 4: the resumption choice (OPEN's fourth
                // layout), or none (the older layouts).
                let resumption = match (choice >> 3) % 4 {
                    1 => Some(Resumption::On),
                    2 => Some(Resumption::Off),
                    _ => None,
                };
                let alpn: Option<&[u8]> = match choice % 8 {
                    1 => Some(b"\x02h2\x08http/1.1"),
                    2 => Some(b"\x08http/1.1"),
                    3 => Some(b"\x02h2"),
                    4 => {
                        raw = inp.bytes();
                        Some(raw)
                    }
                    5 => Some(b""),
                    _ => None,
                };
                let request = OpenRequest {
                    manual_validation: flags & 2 != 0,
                    client_auth,
                    alpn,
                    resumption,
                    ..OpenRequest::new(role, protocols, thumbprint, target)
                };
                let mut buf = [0u8; 2048];
                let Ok(n) = encode(&request, &mut buf) else {
                    return; // a target too long to encode
                };
                let (status, reply) = self.call(file, IOCTL_KSSPI_OPEN, &buf[..n], 64);
                if status == STATUS_SUCCESS {
                    let open = decode::<OpenReply>(&reply).expect("checked");
                    if open.status >= 0 {
                        self.sessions.push(open.session);
                    }
                }
            }
            Op::Step | Op::Decrypt | Op::Pend => {
                let session = self.session(inp);
                let file = self.file(inp);
                let decrypt = match op {
                    Op::Step => false,
                    Op::Decrypt => true,
                    _ => inp.u8() & 1 != 0,
                };
                let early = op == Op::Pend && inp.u8() & 1 != 0;
                let (bytes, relayed) = self.payload(inp);
                let (code, input, fitting) = if decrypt {
                    let req = DecryptRequest(RecordRequest {
                        session,
                        bytes: &bytes,
                    });
                    let fit = record_reply_capacity(64 * 1024, 64 * 1024);
                    (IOCTL_KSSPI_DECRYPT, enc(&req), fit)
                } else {
                    let req = StepRequest {
                        session,
                        input: &bytes,
                    };
                    (IOCTL_KSSPI_STEP, enc(&req), step_reply_capacity(64 * 1024))
                };
                let capacity = Self::capacity(inp, fitting);
                let id = self.send(file, code, &input, capacity, early);
                if op == Op::Pend {
                    // Whatever becomes of it, its bytes are gone.
                    if relayed {
                        self.wire.clear();
                    }
                    self.pending.push(id);
                } else {
                    let done = self.wait(id);
                    self.keep_output(code, &done, relayed);
                }
            }
            Op::Encrypt => {
                let session = self.session(inp);
                let file = self.file(inp);
                let data = inp.bytes().to_vec();
                let req = EncryptRequest(RecordRequest {
                    session,
                    bytes: &data,
                });
                let capacity = Self::capacity(inp, encrypt_reply_capacity(data.len()));
                let done = self.call(file, IOCTL_KSSPI_ENCRYPT, &enc(&req), capacity);
                self.keep_output(IOCTL_KSSPI_ENCRYPT, &done, false);
            }
            Op::Shutdown => {
                let session = self.session(inp);
                let file = self.file(inp);
                let capacity = Self::capacity(inp, record_reply_capacity(64 * 1024, 64 * 1024));
                let req = enc(&ShutdownRequest { session });
                let done = self.call(file, IOCTL_KSSPI_SHUTDOWN, &req, capacity);
                self.keep_output(IOCTL_KSSPI_SHUTDOWN, &done, false);
            }
            Op::Query => {
                let session = self.session(inp);
                let file = self.file(inp);
                let capacity = Self::capacity(inp, QUERY_REPLY_CAPACITY);
                let req = enc(&QueryRequest { session });
                self.call(file, IOCTL_KSSPI_QUERY, &req, capacity);
            }
            Op::Close => {
                let session = self.session(inp);
                let file = self.file(inp);
                self.call(file, IOCTL_KSSPI_CLOSE, &enc(&CloseRequest { session }), 64);
            }
            Op::Info => {
                let file = self.file(inp);
                let capacity = Self::capacity(inp, 256);
                self.call(file, IOCTL_KSSPI_GET_INFO, &[], capacity);
            }
            Op::Selftest => {
                let file = self.file(inp);
                let b = inp.u8();
                let mut req = SelftestRequest {
                    count: u32::from(b & 1) + 1,
                    concurrency: u32::from(b >> 1 & 1) + 1,
                    protocols: u32::from(b >> 2 & 3).max(1),
                    completion: inp.u8() % 5,
                    callback_irql: inp.u8() % 4,
                    seed: u64::from(inp.u8()),
                    thumbprint: if b & 0x10 != 0 {
                        [0x42; 20]
                    } else {
                        self.thumb
                    },
                    bytes: u32::from(inp.u8()) * 64,
                    // Each pair twice, and the reply's longer form.
                    resume: b & 0x40 != 0,
                };
                if b & 0x20 == 0 {
                    self.call(file, IOCTL_KSSPI_SELFTEST, &enc(&req), 512);
                    return;
                }
                // Large figures: the device's own bound on concurrency (half
                // its 8 sessions) is among the small ones.
                req.count = figure(inp, req.count * 100, MAX_SELFTEST_COUNT);
                let near_device = u32::from(inp.u8() % 8) + 1;
                req.concurrency = figure(inp, near_device, MAX_SELFTEST_CONCURRENCY);
                req.bytes = figure(inp, req.bytes * 64, MAX_SELFTEST_BYTES);
                // With async completions an accepted run goes on on the
                // model's threads while the script goes on, and a cancel
                // stops it. With any other mode it may run to its end inside
                // this call, where nothing can cancel it: keep the figures
                // the device would accept small (those past the bounds stay).
                let background = matches!(
                    self.sim.config().completion,
                    CompletionPolicy::Always(Completion::Async)
                );
                if !background && req.count <= MAX_SELFTEST_COUNT {
                    req.count = req.count.min(4);
                }
                if !background && req.bytes <= MAX_SELFTEST_BYTES {
                    req.bytes = req.bytes.min(16 * 1024);
                }
                let id = self.send(file, IOCTL_KSSPI_SELFTEST, &enc(&req), 512, false);
                self.pending.push(id);
            }
            Op::Cancel => {
                if self.pending.is_empty() {
                    return;
                }
                let id = self.pending[usize::from(inp.u8()) % self.pending.len()];
                let key = self.log.fates.lock().unwrap()[id].key;
                if let Some(key) = key {
                    self.cancel_at_dispatch(key);
                }
            }
            Op::Cleanup => {
                let i = usize::from(inp.u8() & 1);
                self.dev.cleanup(self.files[i]);
                self.files[i] = self.dev.open_file();
            }
            Op::Settle => self.settle(),
        }
    }

    /// Wait for every request left pending, cancelling the self-tests first
    /// (one may be long).
    fn settle(&mut self) {
        for &id in &self.pending {
            let key = {
                let fates = self.log.fates.lock().unwrap();
                let fate = &fates[id];
                let done = !fate.completions.is_empty();
                fate.key
                    .filter(|_| fate.code == IOCTL_KSSPI_SELFTEST && !done)
            };
            if let Some(key) = key {
                self.cancel_at_dispatch(key);
            }
        }
        for id in std::mem::take(&mut self.pending) {
            self.wait(id);
        }
    }

    /// A cancel routine's call, at DISPATCH_LEVEL as one may run.
    fn cancel_at_dispatch(&self, key: PendKey) -> bool {
        let _dispatch = ksspi_sim::kernel::raise_irql(ksspi::Irql::DISPATCH);
        self.dev.cancel(key)
    }

    /// Close both files, unload, and check every request completed exactly
    /// once and the model is clean.
    fn finish(mut self) -> Summary {
        for file in self.files {
            self.dev.cleanup(file);
        }
        self.dev.unload();
        self.settle();
        let deadline = Instant::now() + PATIENCE;
        while self.dev.sessions_alive() > 0 {
            assert!(Instant::now() < deadline, "sessions left after unload");
            std::thread::sleep(Duration::from_millis(1));
        }
        self.sim.wait_idle();
        let World { sim, dev, log, .. } = self;
        drop(dev);
        for (id, fate) in log.fates.lock().unwrap().iter().enumerate() {
            assert!(!fate.dropped, "request {id} dropped without completion");
            assert_eq!(
                fate.completions.len(),
                1,
                "request {id} ({:#x}) completed {} times",
                fate.code,
                fate.completions.len()
            );
        }
        if let Err(leaks) = sim.unload() {
            panic!("left at unload: {leaks}");
        }
        let mut summary = Summary::default();
        for fate in log.fates.lock().unwrap().iter() {
            let (status, reply) = &fate.completions[0];
            summary.requests += 1;
            summary.cancelled += usize::from(*status == STATUS_CANCELLED);
            if *status != STATUS_SUCCESS {
                continue;
            }
            summary.succeeded += 1;
            match fate.code {
                IOCTL_KSSPI_STEP => {
                    let r = decode::<StepReply>(reply).expect("checked");
                    summary.established += usize::from(r.outcome == StepOutcome::Established);
                }
                IOCTL_KSSPI_DECRYPT => {
                    summary.decrypted += decode::<RecordReply>(reply).expect("checked").data.len();
                }
                _ => {}
            }
        }
        summary
    }
}

/// What every completion must be: success or an error status (never
/// informational or pending), and a success reply that decodes as the
/// reply its code promises. An unknown code is refused as such.
pub fn check_reply(code: u32, (status, reply): &(NtStatus, Vec<u8>)) {
    assert!(
        *status == STATUS_SUCCESS || *status < 0,
        "{code:#x} completed with {status:#x}"
    );
    if !CODES.contains(&code) {
        assert_eq!(*status, STATUS_INVALID_DEVICE_REQUEST, "unknown {code:#x}");
        return;
    }
    if *status != STATUS_SUCCESS {
        return;
    }
    let decoded = match code {
        IOCTL_KSSPI_GET_INFO => decode::<InfoReply>(reply).map(drop),
        IOCTL_KSSPI_OPEN => decode::<OpenReply>(reply).map(drop),
        IOCTL_KSSPI_STEP => decode::<StepReply>(reply).map(drop),
        IOCTL_KSSPI_CLOSE => decode::<Empty>(reply).map(drop),
        IOCTL_KSSPI_SELFTEST => decode::<SelftestReply>(reply).map(|r| {
            // A resume run (its counts present) runs each pair twice.
            let per_pair = if r.resumption.is_some() { 2 } else { 1 };
            let most = u64::from(MAX_SELFTEST_COUNT) * per_pair;
            assert!(
                r.handshakes_ok + r.handshakes_failed <= most,
                "a self-test of at most {most} handshakes reported {r:?}"
            );
        }),
        IOCTL_KSSPI_ENCRYPT => decode::<EncryptReply>(reply).map(drop),
        IOCTL_KSSPI_DECRYPT | IOCTL_KSSPI_SHUTDOWN => decode::<RecordReply>(reply).map(drop),
        IOCTL_KSSPI_QUERY => decode::<QueryReply>(reply).map(drop),
        _ => unreachable!("every known code is listed"),
    };
    if let Err(e) = decoded {
        panic!("{code:#x}: a success reply that does not decode: {e:?}");
    }
}

/// Run one script (see the module documentation).
pub fn run(data: &[u8]) {
    run_summary(data);
}

/// [`run`], returning what the run reached.
pub fn run_summary(data: &[u8]) -> Summary {
    let mut inp = Input::new(data);
    let mut world = World::new(&mut inp);
    // A bound on the work one input can ask for (each op is at most a few
    // handshakes), so the fuzzer's time goes into variety.
    for _ in 0..64 {
        if inp.is_empty() {
            break;
        }
        world.op(&mut inp);
    }
    world.finish()
}
