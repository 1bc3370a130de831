//! The device engine over the model: IOCTLs as user mode sends them, every
//! request completed exactly once with the right NTSTATUS, sessions owned by
//! their file handle, bounds, cancellation, cleanup, and nothing left behind.

use ksspi::engine::Platform;
use ksspi::{Irql, Passive, SecStatus};
use ksspi_abi::*;
use ksspi_driver::device::{Device, DeviceConfig, FileId, PendKey, Request};
use ksspi_driver::ntstatus::*;
use ksspi_sim::certs::{TestPki, Thumbprint};
use ksspi_sim::{CallbackIrql, Completion, CompletionPolicy, SimConfig, SimPlatform, SimProvider};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

type Done = Arc<(Mutex<Vec<(NtStatus, Vec<u8>)>>, Condvar)>;

/// A request whose completion the test waits for.
struct TestRequest {
    capacity: usize,
    done: Done,
    /// Where the engine's [`PendKey`] goes when it pends the request (what
    /// the KMDF glue keeps for its cancel routine).
    key: Arc<Mutex<Option<PendKey>>>,
    /// Cancelled before the engine could pend it.
    cancelled_early: bool,
}

impl Request for TestRequest {
    fn output_capacity(&self) -> usize {
        self.capacity
    }
    fn pend(&mut self, key: PendKey) -> bool {
        *self.key.lock().unwrap() = Some(key);
        !self.cancelled_early
    }
    fn complete(self, status: NtStatus, reply: &[u8]) {
        assert!(
            reply.len() <= self.capacity,
            "reply overruns the output buffer"
        );
        self.done.0.lock().unwrap().push((status, reply.to_vec()));
        self.done.1.notify_all();
        std::mem::forget(self); // completed: not a dropped request
    }
}

/// Marks a request the engine dropped without completing it (on Windows, an
/// IRP that never completes).
const DROPPED: NtStatus = 0x7FFF_DEAD;

impl Drop for TestRequest {
    fn drop(&mut self) {
        self.done.0.lock().unwrap().push((DROPPED, Vec::new()));
        self.done.1.notify_all();
    }
}

type Dev = Device<SimProvider, SimPlatform, TestRequest>;

struct World {
    sim: SimProvider,
    dev: Dev,
    thumb: Thumbprint,
}

fn world(completion: CompletionPolicy, config: DeviceConfig) -> World {
    let (store, thumb) = TestPki::new("device CA").store(&["localhost"]);
    let sim = SimProvider::new(
        SimConfig {
            completion,
            callback_irql: CallbackIrql::Mixed,
            seed: 5,
            ..SimConfig::default()
        },
        Arc::new(store),
    );
    let dev = Device::new(sim.clone(), SimPlatform::new(&sim), config);
    World { sim, dev, thumb }
}

fn at() -> Passive {
    Passive::check(Irql::PASSIVE).unwrap()
}

impl World {
    /// Send an IOCTL; returns the completion handle.
    fn send(&self, file: FileId, code: u32, input: &[u8], capacity: usize) -> Done {
        self.send_tracked(file, code, input, capacity, false).0
    }

    /// Send an IOCTL; returns the completion handle and where the engine's
    /// pend key lands. `cancelled_early`: the request is cancelled before the
    /// engine can pend it.
    fn send_tracked(
        &self,
        file: FileId,
        code: u32,
        input: &[u8],
        capacity: usize,
        cancelled_early: bool,
    ) -> (Done, Arc<Mutex<Option<PendKey>>>) {
        let done: Done = Arc::default();
        let key: Arc<Mutex<Option<PendKey>>> = Arc::default();
        self.dev.ioctl(
            file,
            code,
            input,
            TestRequest {
                capacity,
                done: done.clone(),
                key: key.clone(),
                cancelled_early,
            },
            &at(),
        );
        (done, key)
    }

    /// A cancel routine's call, made at DISPATCH_LEVEL as one may run.
    fn cancel_at_dispatch(&self, key: PendKey) -> bool {
        let platform = SimPlatform::new(&self.sim);
        let old = platform.raise_to_dispatch();
        let r = self.dev.cancel(key);
        platform.lower_irql(old);
        r
    }

    /// Send and wait for the completion.
    fn call(&self, file: FileId, code: u32, input: &[u8], capacity: usize) -> (NtStatus, Vec<u8>) {
        wait(&self.send(file, code, input, capacity))
    }

    /// An encoded OPEN for `role`: the world's certificate in MY, or `target`.
    fn open_input(&self, role: Role, target: &[u8]) -> Vec<u8> {
        let mut store = [0u8; 16];
        store[..2].copy_from_slice(b"MY");
        enc(&OpenRequest {
            role,
            manual_validation: false,
            protocols: proto::ALL,
            thumbprint: self.thumb,
            store,
            target,
        })
    }

    fn open(&self, file: FileId, role: Role, target: &[u8]) -> (NtStatus, OpenReply) {
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

    fn step(&self, file: FileId, session: SessionId, input: &[u8]) -> (NtStatus, Vec<u8>) {
        let req = StepRequest { session, input };
        self.call(
            file,
            IOCTL_KSSPI_STEP,
            &enc(&req),
            step_reply_capacity(64 * 1024),
        )
    }

    fn close(&self, file: FileId, session: SessionId) -> NtStatus {
        self.call(file, IOCTL_KSSPI_CLOSE, &enc(&CloseRequest { session }), 64)
            .0
    }

    /// Wait for every session to be released, then check the model is clean.
    fn finish(self) {
        for _ in 0..2000 {
            if self.dev.sessions_alive() == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(self.dev.sessions_alive(), 0, "sessions left");
        self.sim.wait_idle();
        drop(self.dev);
        self.sim.unload().unwrap_or_else(|leaks| panic!("{leaks}"));
    }
}

fn wait(done: &Done) -> (NtStatus, Vec<u8>) {
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

fn enc<'a, M: Message<'a>>(m: &M) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let n = encode(m, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

/// A full handshake through STEP IOCTLs between two sessions.
fn handshake(
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

#[test]
fn info_and_a_handshake_through_the_ioctls_in_every_completion_mode() {
    for mode in Completion::ALL {
        let w = world(CompletionPolicy::Always(mode), DeviceConfig::default());
        let file = w.dev.open_file();
        let (st, reply) = w.call(file, IOCTL_KSSPI_GET_INFO, &[], 256);
        assert_eq!(st, STATUS_SUCCESS);
        let info = decode::<InfoReply>(&reply).unwrap();
        assert!(info.capabilities & caps::MODEL != 0);
        let (st, server) = w.open(file, Role::Server, b"");
        assert_eq!((st, server.status), (STATUS_SUCCESS, 0));
        let (st, client) = w.open(file, Role::Client, b"localhost");
        assert_eq!((st, client.status), (STATUS_SUCCESS, 0));
        assert_ne!(server.session, client.session);
        assert_eq!(
            handshake(&w, file, server.session, client.session),
            (StepOutcome::Established, StepOutcome::Established),
            "{mode:?}"
        );
        // A step after the end is refused, not run.
        assert_eq!(
            w.step(file, client.session, b"x").0,
            STATUS_INVALID_DEVICE_REQUEST
        );
        let (_, reply) = w.call(file, IOCTL_KSSPI_GET_INFO, &[], 256);
        let info = decode::<InfoReply>(&reply).unwrap();
        assert_eq!((info.handshakes_ok, info.sessions_open), (2, 2));
        assert_eq!(w.close(file, server.session), STATUS_SUCCESS);
        assert_eq!(w.close(file, client.session), STATUS_SUCCESS);
        // Closed ids are stale at once.
        assert_eq!(w.close(file, client.session), STATUS_INVALID_HANDLE);
        w.finish();
    }
}

#[test]
fn bad_buffers_get_their_status_and_change_nothing() {
    let w = world(CompletionPolicy::Mixed, DeviceConfig::default());
    let file = w.dev.open_file();
    let (_, client) = w.open(file, Role::Client, b"localhost");
    let step = step_input(client.session);
    // Short, oversized claim, wrong version, garbage, unknown and reserved IOCTLs.
    assert_eq!(
        w.call(file, IOCTL_KSSPI_STEP, &step[..10], 1 << 17).0,
        STATUS_BUFFER_TOO_SMALL
    );
    let mut v2 = step.clone();
    v2[4] = 2;
    assert_eq!(
        w.call(file, IOCTL_KSSPI_STEP, &v2, 1 << 17).0,
        STATUS_REVISION_MISMATCH
    );
    assert_eq!(
        w.call(file, IOCTL_KSSPI_STEP, b"definitely not a request", 1 << 17)
            .0,
        STATUS_INVALID_PARAMETER
    );
    assert_eq!(
        w.call(file, 0x0022_0000, &step, 1 << 17).0,
        STATUS_INVALID_DEVICE_REQUEST
    );
    assert_eq!(
        w.call(file, IOCTL_KSSPI_ENCRYPT, &step, 1 << 17).0,
        STATUS_INVALID_PARAMETER,
        "a STEP message is not an ENCRYPT request"
    );
    // An output buffer too small for any step reply.
    assert_eq!(
        w.call(file, IOCTL_KSSPI_STEP, &step, 100).0,
        STATUS_BUFFER_TOO_SMALL
    );
    // Nothing changed: the session steps normally.
    let (st, reply) = w.step(file, client.session, &[]);
    assert_eq!(st, STATUS_SUCCESS);
    assert_eq!(
        decode::<StepReply>(&reply).unwrap().outcome,
        StepOutcome::NeedInput
    );
    // An unknown thumbprint: OPEN completes with the acquisition's status.
    let mut store = [0u8; 16];
    store[..2].copy_from_slice(b"MY");
    let bad = OpenRequest {
        role: Role::Server,
        manual_validation: false,
        protocols: proto::ALL,
        thumbprint: [0xEE; 20],
        store,
        target: b"",
    };
    let (st, reply) = w.call(file, IOCTL_KSSPI_OPEN, &enc(&bad), 64);
    assert_eq!(st, STATUS_SUCCESS);
    assert_eq!(
        decode::<OpenReply>(&reply).unwrap().status,
        SecStatus::SEC_E_NO_CREDENTIALS.0
    );
    assert_eq!(w.dev.cleanup(file), w.dev.sessions_of(file));
    w.finish();
}

#[test]
fn a_session_belongs_to_the_file_that_opened_it() {
    let w = world(CompletionPolicy::Mixed, DeviceConfig::default());
    let (a, b) = (w.dev.open_file(), w.dev.open_file());
    let (_, client) = w.open(a, Role::Client, b"localhost");
    assert_eq!(w.step(b, client.session, &[]).0, STATUS_INVALID_HANDLE);
    assert_eq!(w.close(b, client.session), STATUS_INVALID_HANDLE);
    // A forged id: same slot, another generation.
    let forged = SessionId::new(client.session.slot(), client.session.generation() + 1);
    assert_eq!(w.step(a, forged, &[]).0, STATUS_INVALID_HANDLE);
    assert_eq!(w.step(a, client.session, &[]).0, STATUS_SUCCESS);
    w.dev.cleanup(a);
    w.dev.cleanup(b);
    w.finish();
}

#[test]
fn sessions_per_file_are_bounded() {
    let config = DeviceConfig {
        max_sessions_per_file: 2,
        ..DeviceConfig::default()
    };
    let w = world(CompletionPolicy::Mixed, config);
    let (a, b) = (w.dev.open_file(), w.dev.open_file());
    assert_eq!(w.open(a, Role::Client, b"x").0, STATUS_SUCCESS);
    assert_eq!(w.open(a, Role::Client, b"x").0, STATUS_SUCCESS);
    assert_eq!(w.open(a, Role::Client, b"x").0, STATUS_QUOTA_EXCEEDED);
    assert_eq!(
        w.open(b, Role::Client, b"x").0,
        STATUS_SUCCESS,
        "another file has its own quota"
    );
    w.dev.unload();
    w.finish();
}

fn step_input(session: SessionId) -> Vec<u8> {
    enc(&StepRequest {
        session,
        input: &[],
    })
}

#[test]
fn a_cancelled_step_completes_once_and_its_session_goes() {
    let w = world(
        CompletionPolicy::Always(Completion::Async),
        DeviceConfig::default(),
    );
    let file = w.dev.open_file();
    let (_, client) = w.open(file, Role::Client, b"localhost");
    let gate = w.sim.hold_completions();
    let (pending, key) = w.send_tracked(
        file,
        IOCTL_KSSPI_STEP,
        &step_input(client.session),
        step_reply_capacity(64 * 1024),
        false,
    );
    assert!(
        pending.0.lock().unwrap().is_empty(),
        "the step pends while its call is in flight"
    );
    let key = key.lock().unwrap().expect("the engine pended the step");
    assert_eq!((key.file, key.session), (file, client.session));
    // A second step on the same session is refused while one pends.
    assert_eq!(w.step(file, client.session, &[]).0, STATUS_DEVICE_BUSY);
    assert!(w.cancel_at_dispatch(key), "the engine completes it");
    assert_eq!(wait(&pending).0, STATUS_CANCELLED);
    assert!(!w.cancel_at_dispatch(key), "nothing left to cancel");
    assert_eq!(
        w.step(file, client.session, &[]).0,
        STATUS_INVALID_HANDLE,
        "the session is closed"
    );
    gate.release();
    assert_eq!(pending.0.lock().unwrap().len(), 1, "completed exactly once");
    w.finish();
}

#[test]
fn a_request_cancelled_before_it_pends_completes_cancelled_and_changes_nothing() {
    let w = world(
        CompletionPolicy::Always(Completion::Async),
        DeviceConfig::default(),
    );
    let file = w.dev.open_file();
    let (_, client) = w.open(file, Role::Client, b"localhost");
    let (done, _) = w.send_tracked(
        file,
        IOCTL_KSSPI_STEP,
        &step_input(client.session),
        step_reply_capacity(64 * 1024),
        true,
    );
    assert_eq!(wait(&done).0, STATUS_CANCELLED);
    // The step never started: the session takes the next one.
    let (st, reply) = w.step(file, client.session, &[]);
    assert_eq!(st, STATUS_SUCCESS);
    let reply = decode::<StepReply>(&reply).unwrap();
    assert_eq!(reply.outcome, StepOutcome::NeedInput);
    assert!(!reply.output.is_empty(), "a ClientHello");
    // An OPEN cancelled before it pends makes no session.
    let open = w.open_input(Role::Client, b"localhost");
    let (done, _) = w.send_tracked(file, IOCTL_KSSPI_OPEN, &open, 64, true);
    assert_eq!(wait(&done).0, STATUS_CANCELLED);
    assert_eq!(w.dev.sessions_of(file), 1);
    w.dev.unload();
    w.finish();
}

#[test]
fn a_stale_cancel_leaves_a_later_step_alone_and_a_late_one_closes_the_session() {
    let w = world(
        CompletionPolicy::Always(Completion::Async),
        DeviceConfig::default(),
    );
    let file = w.dev.open_file();
    let (_, client) = w.open(file, Role::Client, b"localhost");
    // A first step is completed by the engine; its key stays with a cancel
    // routine that runs late.
    let (first, old_key) = w.send_tracked(
        file,
        IOCTL_KSSPI_STEP,
        &step_input(client.session),
        step_reply_capacity(64 * 1024),
        true,
    );
    assert_eq!(wait(&first).0, STATUS_CANCELLED);
    let old_key = old_key.lock().unwrap().unwrap();
    // A second step pends...
    let gate = w.sim.hold_completions();
    let (second, new_key) = w.send_tracked(
        file,
        IOCTL_KSSPI_STEP,
        &step_input(client.session),
        step_reply_capacity(64 * 1024),
        false,
    );
    let new_key = new_key.lock().unwrap().unwrap();
    assert_ne!(old_key.serial, new_key.serial);
    // ...and the stale key does not touch it.
    assert!(!w.cancel_at_dispatch(old_key));
    assert!(second.0.lock().unwrap().is_empty(), "still pending");
    gate.release();
    let (st, _) = wait(&second);
    assert_eq!(st, STATUS_SUCCESS);
    // A cancel that arrives after the engine completed its request (the
    // glue completes it) still closes the session: its reply is lost.
    assert!(!w.cancel_at_dispatch(new_key));
    assert_eq!(w.step(file, client.session, &[]).0, STATUS_INVALID_HANDLE);
    w.finish();
}

#[test]
fn a_cancelled_open_completes_once_and_leaves_nothing() {
    let w = world(
        CompletionPolicy::Always(Completion::Async),
        DeviceConfig::default(),
    );
    let file = w.dev.open_file();
    let gate = w.sim.hold_completions();
    let open = w.open_input(Role::Server, b"");
    let (done, key) = w.send_tracked(file, IOCTL_KSSPI_OPEN, &open, 64, false);
    let key = key.lock().unwrap().expect("OPEN pends");
    assert!(w.cancel_at_dispatch(key));
    assert_eq!(wait(&done).0, STATUS_CANCELLED);
    gate.release();
    // The acquisition completes later; its credentials and session go too.
    w.finish();
    assert_eq!(done.0.lock().unwrap().len(), 1, "completed exactly once");
}

#[test]
fn cleanup_closes_a_files_sessions_mid_step_and_completes_everything_once() {
    let w = world(
        CompletionPolicy::Always(Completion::Async),
        DeviceConfig::default(),
    );
    let (a, other) = (w.dev.open_file(), w.dev.open_file());
    let (_, c1) = w.open(a, Role::Client, b"localhost");
    let (_, c2) = w.open(a, Role::Client, b"localhost");
    let (_, keep) = w.open(other, Role::Client, b"localhost");
    let gate = w.sim.hold_completions();
    let p1 = w.send(
        a,
        IOCTL_KSSPI_STEP,
        &step_input(c1.session),
        step_reply_capacity(64 * 1024),
    );
    let left = w.dev.cleanup(a);
    // c1 waits for its in-flight call; c2 had none and is gone already.
    assert_eq!(left, 1);
    gate.release();
    let (st, _) = wait(&p1);
    assert!(st == STATUS_CANCELLED || st == STATUS_SUCCESS, "{st:#x}");
    for _ in 0..2000 {
        if w.dev.sessions_of(a) == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(w.dev.sessions_of(a), 0);
    assert_eq!(w.step(a, c2.session, &[]).0, STATUS_INVALID_HANDLE);
    // The other file's session is untouched.
    assert_eq!(w.step(other, keep.session, &[]).0, STATUS_SUCCESS);
    w.dev.unload();
    w.finish();
}

fn selftest(w: &World, count: u32, concurrency: u32) -> (NtStatus, Option<SelftestReply>) {
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

#[test]
fn the_selftest_runs_n_handshakes_at_concurrency_c_in_every_mode() {
    for policy in Completion::ALL
        .map(CompletionPolicy::Always)
        .into_iter()
        .chain([CompletionPolicy::Mixed])
    {
        let w = world(policy, DeviceConfig::default());
        let (st, reply) = selftest(&w, 60, 8);
        assert_eq!(st, STATUS_SUCCESS);
        let r = reply.unwrap();
        assert_eq!(
            (r.handshakes_ok, r.handshakes_failed),
            (60, 0),
            "{policy:?}: {r:?}"
        );
        assert_eq!(r.sessions, 120);
        assert_eq!(
            r.async_contexts_created, r.sessions,
            "one async context per session"
        );
        assert!(r.steps >= 60 * 3, "{r:?}");
        assert!(r.latency_p50_us <= r.latency_p99_us && r.latency_p99_us <= r.latency_max_us);
        assert!(r.elapsed_us > 0);
        let by_mode =
            r.completions_pending + r.completions_inline_callback + r.completions_sync_no_callback;
        assert!(by_mode > 0, "{r:?}");
        w.finish();
    }
}

#[test]
fn a_selftest_with_an_unknown_certificate_reports_every_handshake_failed() {
    let mut w = world(CompletionPolicy::Mixed, DeviceConfig::default());
    w.thumb = [0x42; 20];
    let (st, reply) = selftest(&w, 5, 2);
    assert_eq!(st, STATUS_SUCCESS);
    let r = reply.unwrap();
    assert_eq!((r.handshakes_ok, r.handshakes_failed), (0, 5));
    w.finish();
}

#[test]
fn a_low_resources_sweep_over_a_selftest_ends_cleanly_every_time() {
    let (store, thumb) = TestPki::new("sweep CA").store(&["localhost"]);
    let store = Arc::new(store);
    let config = SimConfig {
        completion: CompletionPolicy::Mixed,
        callback_irql: CallbackIrql::Mixed,
        seed: 3,
        ..SimConfig::default()
    };
    let report = ksspi_sim::sweep::sweep(&config, &store, |sim| {
        let dev: Dev = Device::new(sim.clone(), SimPlatform::new(sim), DeviceConfig::default());
        let w = World {
            sim: sim.clone(),
            dev,
            thumb,
        };
        let (st, reply) = selftest(&w, 3, 2);
        let verdict = match (st, reply) {
            (STATUS_SUCCESS, Some(r)) if r.handshakes_ok + r.handshakes_failed == 3 => Ok(()),
            (STATUS_SUCCESS, r) => Err(format!("counts do not add up: {r:?}")),
            (other, _) if other < 0 => Ok(()), // a clean error status
            (other, _) => Err(format!("non-error status {other:#x}")),
        };
        for _ in 0..2000 {
            if w.dev.sessions_alive() == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        sim.wait_idle();
        verdict
    });
    println!(
        "self-test sweep: {} fault points, {} runs",
        report.points, report.runs
    );
    assert!(report.points > 30, "{}", report.points);
    assert!(report.failures.is_empty(), "{:#?}", report.failures);
}

#[test]
fn cleanup_while_open_pends_cancels_it_and_leaves_nothing() {
    let w = world(
        CompletionPolicy::Always(Completion::Async),
        DeviceConfig::default(),
    );
    let file = w.dev.open_file();
    let gate = w.sim.hold_completions();
    let pending = w.send(file, IOCTL_KSSPI_OPEN, &w.open_input(Role::Server, b""), 64);
    assert!(
        pending.0.lock().unwrap().is_empty(),
        "OPEN pends while its credentials are acquired"
    );
    assert_eq!(w.dev.sessions_of(file), 1);
    w.dev.cleanup(file);
    assert_eq!(wait(&pending).0, STATUS_CANCELLED);
    gate.release();
    // The acquisition completes later; its credentials and session go too.
    w.finish();
}
