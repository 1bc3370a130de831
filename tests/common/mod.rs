//! What the device tests share: a request the test can wait on and that
//! reports being completed twice or dropped, a world (the model, a device
//! over it, a certificate), the IOCTLs as user mode sends them, and
//! handshakes through STEP.

#![allow(dead_code)]

use ksspi::{Irql, Passive};
use ksspi_abi::*;
use ksspi_driver::device::{Device, DeviceConfig, FileId, PendKey, Request};
use ksspi_driver::ntstatus::*;
use ksspi_sim::certs::{CertStore, TestPki, Thumbprint};
use ksspi_sim::{CallbackIrql, CompletionPolicy, SimConfig, SimPlatform, SimProvider};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Where a request's completions land (status and reply), with a condvar to
/// wait on.
pub type Done = Arc<(Mutex<Vec<(NtStatus, Vec<u8>)>>, Condvar)>;

/// Where the engine's [`PendKey`] lands when it pends a request.
pub type Key = Arc<Mutex<Option<PendKey>>>;

/// The IRQL of the engine's thread each time it wrote a reply into a
/// request's output ("output") or completed a request ("complete").
pub type Irqls = Arc<Mutex<Vec<(&'static str, Irql)>>>;

/// A request whose completion the test waits for.
pub struct TestRequest {
    capacity: usize,
    /// The output buffer, allocated when the engine first writes to it.
    output: Vec<u8>,
    /// Completed (not a dropped request).
    completed: bool,
    done: Done,
    /// Where the engine's [`PendKey`] goes when it pends the request (what
    /// the KMDF glue keeps for its cancel routine).
    key: Key,
    /// Cancelled before the engine could pend it.
    cancelled_early: bool,
    /// Runs once the completion is recorded, on the completing thread (what
    /// a user thread woken by the completion does next).
    then: Option<Box<dyn FnOnce(NtStatus) + Send>>,
    /// Where the IRQLs of its writes and completion go.
    irqls: Irqls,
}

impl TestRequest {
    /// Run `f` with the status right after the request completes.
    pub fn then(mut self, f: impl FnOnce(NtStatus) + Send + 'static) -> TestRequest {
        self.then = Some(Box::new(f));
        self
    }
}

impl Request for TestRequest {
    fn output_capacity(&self) -> usize {
        self.capacity
    }
    fn pend(&mut self, key: PendKey) -> bool {
        *self.key.lock().unwrap() = Some(key);
        !self.cancelled_early
    }
    fn output(&mut self) -> &mut [u8] {
        let irql = ksspi_sim::kernel::current_irql();
        self.irqls.lock().unwrap().push(("output", irql));
        if self.output.len() != self.capacity {
            self.output = vec![0; self.capacity];
        }
        &mut self.output
    }
    fn complete_written(mut self, status: NtStatus, len: usize) {
        let irql = ksspi_sim::kernel::current_irql();
        self.irqls.lock().unwrap().push(("complete", irql));
        assert!(len <= self.capacity, "reply overruns the output buffer");
        assert!(
            len == 0 || self.output.len() == self.capacity,
            "a reply completed in place was never written"
        );
        let mut reply = std::mem::take(&mut self.output);
        reply.truncate(len);
        self.completed = true;
        self.done.0.lock().unwrap().push((status, reply));
        self.done.1.notify_all();
        if let Some(then) = self.then.take() {
            then(status);
        }
    }
}

/// Marks a request the engine dropped without completing it (on Windows, an
/// IRP that never completes).
pub const DROPPED: NtStatus = 0x7FFF_DEAD;

impl Drop for TestRequest {
    fn drop(&mut self) {
        if !self.completed {
            self.done.0.lock().unwrap().push((DROPPED, Vec::new()));
            self.done.1.notify_all();
        }
    }
}

pub type Dev = Device<SimProvider, SimPlatform, TestRequest>;

pub struct World {
    pub sim: SimProvider,
    pub dev: Dev,
    /// The device's platform (to play the framework disposing its work items).
    pub platform: SimPlatform,
    pub thumb: Thumbprint,
    /// Protocols the OPENs of [`World::open_input`] allow ([`proto`] bits).
    pub protocols: u32,
    /// Every request sent, for [`World::finish`]'s exactly-once check.
    sent: Mutex<Vec<Done>>,
    /// The IRQLs of every reply written and request completed.
    pub irqls: Irqls,
}

pub fn world(completion: CompletionPolicy, config: DeviceConfig) -> World {
    world_with(completion, 0, config)
}

/// A world whose server contexts send `tickets` TLS 1.3 session tickets.
pub fn world_with(completion: CompletionPolicy, tickets: usize, config: DeviceConfig) -> World {
    let (store, thumb) = TestPki::new("device CA").store(&["localhost"]);
    let sim = SimProvider::new(
        SimConfig {
            completion,
            callback_irql: CallbackIrql::Mixed,
            seed: 5,
            tls13_tickets: tickets,
            ..SimConfig::default()
        },
        Arc::new(store),
    );
    World::over(sim, thumb, config)
}

/// A world over a model built from `config` and a shared certificate store
/// (which holds `thumb`'s identity for "localhost").
pub fn world_in(
    store: &Arc<CertStore>,
    thumb: Thumbprint,
    config: SimConfig,
    device: DeviceConfig,
) -> World {
    World::over(SimProvider::new(config, store.clone()), thumb, device)
}

pub fn at() -> Passive {
    Passive::check(Irql::PASSIVE).unwrap()
}

impl World {
    /// A device over `sim`, whose server certificate is `thumb`.
    pub fn over(sim: SimProvider, thumb: Thumbprint, config: DeviceConfig) -> World {
        let platform = SimPlatform::new(&sim);
        let dev = Device::new(sim.clone(), platform.clone(), config);
        World {
            sim,
            dev,
            platform,
            thumb,
            protocols: proto::ALL,
            sent: Mutex::default(),
            irqls: Irqls::default(),
        }
    }

    /// Send an IOCTL; returns the completion handle.
    pub fn send(&self, file: FileId, code: u32, input: &[u8], capacity: usize) -> Done {
        self.send_tracked(file, code, input, capacity, false).0
    }

    /// A request with `capacity` bytes of output, registered for
    /// [`World::finish`]'s exactly-once check, to hand to `dev.ioctl` (from
    /// any thread); its completion handle and where its pend key lands.
    /// `cancelled_early`: the request is cancelled before the engine can pend
    /// it.
    pub fn request(&self, capacity: usize, cancelled_early: bool) -> (TestRequest, Done, Key) {
        let done: Done = Arc::default();
        let key: Key = Arc::default();
        self.sent.lock().unwrap().push(done.clone());
        let request = TestRequest {
            capacity,
            output: Vec::new(),
            completed: false,
            done: done.clone(),
            key: key.clone(),
            cancelled_early,
            then: None,
            irqls: self.irqls.clone(),
        };
        (request, done, key)
    }

    /// Send an IOCTL; returns the completion handle and where the engine's
    /// pend key lands. `cancelled_early`: the request is cancelled before the
    /// engine can pend it.
    pub fn send_tracked(
        &self,
        file: FileId,
        code: u32,
        input: &[u8],
        capacity: usize,
        cancelled_early: bool,
    ) -> (Done, Key) {
        let (request, done, key) = self.request(capacity, cancelled_early);
        self.dev.ioctl(file, code, input, request, &at());
        (done, key)
    }

    /// A cancel routine's call, made at DISPATCH_LEVEL as one may run.
    pub fn cancel_at_dispatch(&self, key: PendKey) -> bool {
        let _dispatch = ksspi_sim::kernel::raise_irql(Irql::DISPATCH);
        self.dev.cancel(key)
    }

    /// Send and wait for the completion.
    pub fn call(
        &self,
        file: FileId,
        code: u32,
        input: &[u8],
        capacity: usize,
    ) -> (NtStatus, Vec<u8>) {
        wait(&self.send(file, code, input, capacity))
    }

    /// An encoded OPEN for `role`: the world's certificate in MY, or `target`.
    pub fn open_input(&self, role: Role, target: &[u8]) -> Vec<u8> {
        self.open_input_with(role, target, self.protocols)
    }

    /// [`World::open_input`] allowing `protocols` ([`proto`] bits).
    pub fn open_input_with(&self, role: Role, target: &[u8], protocols: u32) -> Vec<u8> {
        enc(&OpenRequest::new(role, protocols, self.thumb, target))
    }

    pub fn open(&self, file: FileId, role: Role, target: &[u8]) -> (NtStatus, OpenReply) {
        let (status, reply) = self.call(file, IOCTL_KSSPI_OPEN, &self.open_input(role, target), 64);
        let open = if status == STATUS_SUCCESS {
            decode::<OpenReply>(&reply).unwrap()
        } else {
            OpenReply {
                status: 0,
                session: SessionId(0),
            }
        };
        (status, open)
    }

    /// QUERY `session`, which must succeed; `read` sees the decoded reply.
    pub fn query<T>(
        &self,
        file: FileId,
        session: SessionId,
        read: impl FnOnce(&QueryReply<'_>) -> T,
    ) -> T {
        let (st, reply) = self.call(
            file,
            IOCTL_KSSPI_QUERY,
            &enc(&QueryRequest { session }),
            QUERY_REPLY_CAPACITY,
        );
        assert_eq!(st, STATUS_SUCCESS);
        read(&decode::<QueryReply>(&reply).unwrap())
    }

    pub fn step(&self, file: FileId, session: SessionId, input: &[u8]) -> (NtStatus, Vec<u8>) {
        let req = StepRequest { session, input };
        self.call(
            file,
            IOCTL_KSSPI_STEP,
            &enc(&req),
            step_reply_capacity(64 * 1024),
        )
    }

    pub fn encrypt(&self, file: FileId, session: SessionId, data: &[u8]) -> (NtStatus, Vec<u8>) {
        let req = EncryptRequest(RecordRequest {
            session,
            bytes: data,
        });
        self.call(
            file,
            IOCTL_KSSPI_ENCRYPT,
            &enc(&req),
            encrypt_reply_capacity(data.len()),
        )
    }

    pub fn decrypt(&self, file: FileId, session: SessionId, input: &[u8]) -> (NtStatus, Vec<u8>) {
        let req = DecryptRequest(RecordRequest {
            session,
            bytes: input,
        });
        self.call(file, IOCTL_KSSPI_DECRYPT, &enc(&req), RECORD_REPLY)
    }

    pub fn shutdown(&self, file: FileId, session: SessionId) -> (NtStatus, Vec<u8>) {
        self.call(
            file,
            IOCTL_KSSPI_SHUTDOWN,
            &enc(&ShutdownRequest { session }),
            RECORD_REPLY,
        )
    }

    /// Seal `data` (in ENCRYPTs of at most MAX_TOKEN bytes) into records.
    pub fn seal(&self, file: FileId, session: SessionId, data: &[u8]) -> Vec<u8> {
        let mut wire = Vec::new();
        for piece in data.chunks(MAX_TOKEN) {
            let (st, reply) = self.encrypt(file, session, piece);
            assert_eq!(st, STATUS_SUCCESS);
            let r = decode::<EncryptReply>(&reply).unwrap();
            assert_eq!(r.status, 0);
            assert_eq!(r.records as usize, piece.len().div_ceil(RECORD_PLAINTEXT));
            wire.extend_from_slice(r.output);
        }
        wire
    }

    /// DECRYPT `wire` in pieces of `feed` bytes: the plaintext, and the last
    /// reply's outcome.
    pub fn unseal(
        &self,
        file: FileId,
        session: SessionId,
        wire: &[u8],
        feed: usize,
    ) -> (Vec<u8>, RecordOutcome, u32) {
        let mut data = Vec::new();
        let mut outcome = RecordOutcome::Data;
        let mut renegotiations = 0;
        for piece in wire.chunks(feed) {
            let (st, reply) = self.decrypt(file, session, piece);
            assert_eq!(st, STATUS_SUCCESS);
            let r = decode::<RecordReply>(&reply).unwrap();
            data.extend_from_slice(r.data);
            renegotiations += r.renegotiations;
            outcome = r.outcome;
            if outcome != RecordOutcome::Data {
                break;
            }
        }
        (data, outcome, renegotiations)
    }

    pub fn close(&self, file: FileId, session: SessionId) -> NtStatus {
        self.call(file, IOCTL_KSSPI_CLOSE, &enc(&CloseRequest { session }), 64)
            .0
    }

    /// Requests sent so far.
    pub fn requests(&self) -> usize {
        self.sent.lock().unwrap().len()
    }

    /// Wait until no session is alive (at most 10 s); returns how many are.
    pub fn wait_sessions_gone(&self) -> u32 {
        for _ in 0..2000 {
            if self.dev.sessions_alive() == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.dev.sessions_alive()
    }

    /// Check that every request sent so far completed exactly once (none
    /// still pending, none dropped, none twice).
    pub fn check_all_completed_once(&self) {
        for (i, done) in self.sent.lock().unwrap().iter().enumerate() {
            let g = done.0.lock().unwrap();
            assert!(!g.is_empty(), "request #{i} never completed");
            let statuses: Vec<NtStatus> = g.iter().map(|c| c.0).collect();
            assert_eq!(
                g.len(),
                1,
                "request #{i} completed more than once: {statuses:x?}"
            );
            assert_ne!(g[0].0, DROPPED, "request #{i} dropped without completing");
        }
    }

    /// Wait for every session to be released, check that every request
    /// completed exactly once, then that the model is clean.
    pub fn finish(self) {
        assert_eq!(self.wait_sessions_gone(), 0, "sessions left");
        self.sim.wait_idle();
        self.check_all_completed_once();
        drop(self.dev);
        self.sim.unload().unwrap_or_else(|leaks| panic!("{leaks}"));
    }
}

/// DECRYPT's and SHUTDOWN's output buffer under the default limits.
pub const RECORD_REPLY: usize = record_reply_capacity(64 * 1024, 64 * 1024);

pub fn wait(done: &Done) -> (NtStatus, Vec<u8>) {
    let mut g = done.0.lock().unwrap();
    while g.is_empty() {
        let (g2, t) = done.1.wait_timeout(g, Duration::from_secs(20)).unwrap();
        g = g2;
        assert!(
            !t.timed_out() || !g.is_empty(),
            "request not completed within 20 s"
        );
    }
    assert_eq!(g.len(), 1, "a request completed more than once");
    assert_ne!(
        g[0].0, DROPPED,
        "the engine dropped a request without completing it"
    );
    g[0].clone()
}

pub fn enc<'a, M: Message<'a>>(m: &M) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let n = encode(m, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

/// A full handshake through STEP IOCTLs between two sessions.
pub fn handshake(
    w: &World,
    file: FileId,
    server: SessionId,
    client: SessionId,
) -> (StepOutcome, StepOutcome) {
    let (st, reply) = w.step(file, client, &[]);
    assert_eq!(st, STATUS_SUCCESS);
    let mut c = decode::<StepReply>(&reply).unwrap();
    let mut to_server = c.output.to_vec();
    let mut s_out = StepOutcome::NeedInput;
    let mut c_out = c.outcome;
    for _ in 0..10 {
        if s_out == StepOutcome::NeedInput && !to_server.is_empty() {
            let (st, reply) = w.step(file, server, &to_server);
            assert_eq!(st, STATUS_SUCCESS);
            let s = decode::<StepReply>(&reply).unwrap();
            s_out = s.outcome;
            if s_out == StepOutcome::Established {
                assert_ne!(s.protocol, 0, "an established step names its protocol");
            }
            let to_client = s.output.to_vec();
            to_server.clear();
            if c_out == StepOutcome::NeedInput && !to_client.is_empty() {
                let (st, reply) = w.step(file, client, &to_client);
                assert_eq!(st, STATUS_SUCCESS);
                c = decode::<StepReply>(&reply).unwrap();
                c_out = c.outcome;
                to_server = c.output.to_vec();
            }
        } else {
            break;
        }
    }
    (c_out, s_out)
}

pub fn step_input(session: SessionId) -> Vec<u8> {
    enc(&StepRequest {
        session,
        input: &[],
    })
}

/// A handshake through STEP whose server output after the client finished
/// (TLS 1.3 tickets) is kept for the client's first DECRYPT.
pub fn establish(w: &World, file: FileId, server: SessionId, client: SessionId) -> Vec<u8> {
    try_establish(w, file, server, client)
        .unwrap()
        .expect("the handshake did not finish")
}

/// [`establish`], tolerating failure: `Ok(None)` if a request completed with
/// an error status or the handshake failed, `Err` for a status that is
/// neither success nor an error.
pub fn try_establish(
    w: &World,
    file: FileId,
    server: SessionId,
    client: SessionId,
) -> Result<Option<Vec<u8>>, String> {
    let step = |session, input: &[u8]| -> Result<Option<(StepOutcome, Vec<u8>)>, String> {
        let (st, reply) = w.step(file, session, input);
        if !clean_status(st)? {
            return Ok(None);
        }
        let r = decode::<StepReply>(&reply).unwrap();
        Ok((r.outcome != StepOutcome::Failed).then(|| (r.outcome, r.output.to_vec())))
    };
    let Some((_, mut to_server)) = step(client, &[])? else {
        return Ok(None);
    };
    let mut to_client = Vec::new();
    let (mut c_done, mut s_done) = (false, false);
    for _ in 0..8 {
        if !s_done && !to_server.is_empty() {
            let Some((outcome, out)) = step(server, &to_server)? else {
                return Ok(None);
            };
            s_done = outcome == StepOutcome::Established;
            to_server.clear();
            to_client.extend_from_slice(&out);
        }
        if !c_done && !to_client.is_empty() {
            let Some((outcome, out)) = step(client, &to_client)? else {
                return Ok(None);
            };
            c_done = outcome == StepOutcome::Established;
            to_client.clear();
            to_server.extend_from_slice(&out);
        }
        if c_done && s_done && to_server.is_empty() {
            return Ok(Some(to_client));
        }
    }
    Ok(None)
}

/// Success (true), an error status (false), or anything else (`Err`).
pub fn clean_status(st: NtStatus) -> Result<bool, String> {
    match st {
        STATUS_SUCCESS => Ok(true),
        s if s < 0 => Ok(false),
        s => Err(format!("non-error status {s:#x}")),
    }
}

pub fn payload(n: usize, salt: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(13) ^ (i >> 10) as u8 ^ salt)
        .collect()
}

/// A SELFTEST of `count` handshakes at `concurrency` on a file of its own.
pub fn selftest(w: &World, count: u32, concurrency: u32) -> (NtStatus, Option<SelftestReply>) {
    let file = w.dev.open_file();
    let req = SelftestRequest {
        count,
        concurrency,
        protocols: proto::ALL,
        thumbprint: w.thumb,
        ..SelftestRequest::default()
    };
    let (st, reply) = w.call(file, IOCTL_KSSPI_SELFTEST, &enc(&req), 512);
    (
        st,
        (st == STATUS_SUCCESS).then(|| decode::<SelftestReply>(&reply).unwrap()),
    )
}
