//! `ksspictl bench`: the stack's cost against its limit, measured side by
//! side in one run on the same certificates (a CA and an ECDSA P-256
//! "localhost" leaf from the model's test PKI), the same provider (rustls
//! 0.23 over ring) and the same TLS versions:
//!
//! - handshakes per second: plain rustls (unbuffered API, tokens in memory:
//!   the baseline), the engine's sessions over the model, the device's IOCTL
//!   path (OPEN, STEPs, CLOSE per session) and the in-driver self-test; on
//!   one thread and on every core; full handshakes (every path's server
//!   keeps no session, so none resumes, and the engine's are checked to
//!   report `Resumed::No`), and resumed ones beside them: the engine's
//!   against rustls's own, each checked to have resumed;
//! - the async machinery alone: continuations per second over a provider
//!   whose calls do no cryptography, per completion mode;
//! - record-layer throughput against rustls alone, 1 KiB and 64 KiB messages;
//! - scale: the self-test at growing concurrency, up to 100 000 handshakes
//!   at once (throughput, p50 / p99), and a PNG plot with memory per session;
//! - memory per session: engine and device state at rest, at its largest
//!   during the handshake and established, the provider's own apart.
//!
//! Model only: on Windows the driver's own figures come from `selftest`.

use crate::backend::model::Model;
use crate::backend::Driver;
use crate::instructions::{self, Instructions};
use crate::plot::{scale_png, ScalePoint};
use crate::Failure;
use ksspi::engine::{
    CredentialSpec, EngineStats, Limits, Outcome, RecordOutcome, RecordReport, Resumed, Role,
    Session, SessionEvents, SessionSetup, StepReport, Tokens,
};
use ksspi::handle::Credentials;
use ksspi::sys::{SP_PROT_TLS1_2, SP_PROT_TLS1_3};
use ksspi::{Irql, Passive};
use ksspi_abi::*;
use ksspi_sim::alloc_count::{CountedPlatform, CountedProvider};
use ksspi_sim::baseline::{Baseline, Version};
use ksspi_sim::certs::TestPki;
use ksspi_sim::null::{continuations, NullMode};
use ksspi_sim::{CallbackIrql, Completion, CompletionPolicy, SimConfig, SimPlatform, SimProvider};
use serde::Serialize;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Live heap bytes, for memory per session (the harness's global
/// allocator), in two accounts: what is allocated and freed inside the
/// provider's calls (`ksspi_sim::alloc_count::outside`, which
/// [`CountedProvider`] puts every call in: the model's state, standing for
/// ksecdd and Schannel's), and everything else (the engine's and the
/// device's). The memory section runs over [`CountedProvider`] with
/// synchronous completions, so each allocation is freed in the account it
/// was made in (the provider's tokens are freed by `FreeContextBuffer`, a
/// provider call).
pub struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);
static PROVIDER_LIVE: AtomicI64 = AtomicI64::new(0);

fn account() -> &'static AtomicI64 {
    if ksspi_sim::alloc_count::is_outside() {
        &PROVIDER_LIVE
    } else {
        &LIVE
    }
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        account().fetch_add(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        account().fetch_sub(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        account().fetch_add(new as i64 - layout.size() as i64, Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.realloc(ptr, layout, new) }
    }
}

/// Live bytes outside the provider's calls (see [`Counting`]).
fn live() -> i64 {
    LIVE.load(Ordering::SeqCst)
}

/// Live bytes the provider's calls hold (see [`Counting`]).
fn provider_live() -> i64 {
    PROVIDER_LIVE.load(Ordering::SeqCst)
}

/// What to run.
pub struct Plan {
    /// A few iterations of everything (the CI smoke run).
    pub quick: bool,
    /// Concurrencies of the scale run.
    pub scale: Vec<u32>,
    /// Where the plot goes (`None`: no plot).
    pub plot: Option<std::path::PathBuf>,
    /// The sections to run (empty: all of them).
    pub only: Vec<Section>,
}

pub use crate::util::BenchSection as Section;

impl Plan {
    fn wants(&self, section: Section) -> bool {
        self.only.is_empty()
            || self.only.contains(&section)
            // The plot shows memory per session beside the scale figures.
            || (section == Section::Memory && self.plot.is_some() && self.wants(Section::Scale))
    }
}

fn passive() -> Passive {
    Passive::check(Irql::PASSIVE).expect("the harness runs at PASSIVE")
}

/// One session's reports, a slot at a time (one request in flight).
#[derive(Default)]
struct Waiter {
    state: Mutex<Slot>,
    cv: Condvar,
}

#[derive(Default)]
struct Slot {
    ready: bool,
    outcome: Option<Outcome>,
    /// The last step report's (set with `Established`).
    resumed: Resumed,
    record: Option<RecordOutcome>,
    output: Vec<u8>,
    /// What a decrypt's plaintext was: its length, first and last byte (the
    /// baseline's sink looks at as much, and copies nothing either).
    data: Plaintext,
    closed: bool,
}

/// A decrypt's plaintext, as the bench checks it.
#[derive(Clone, Copy, Default)]
struct Plaintext {
    len: usize,
    first: Option<u8>,
    last: Option<u8>,
}

impl SessionEvents for Waiter {
    fn step_done(&self, report: &StepReport<'_>) {
        let mut s = self.state.lock().unwrap();
        s.outcome = Some(report.outcome);
        s.resumed = report.resumed;
        s.output.clear();
        s.output.extend_from_slice(report.output);
    }
    fn record_done(&self, report: &RecordReport<'_>) {
        let mut s = self.state.lock().unwrap();
        s.record = Some(report.outcome);
        s.output.clear();
        s.output.extend_from_slice(report.output);
        s.data = Plaintext {
            len: report.data.len(),
            first: report.data.first().copied(),
            last: report.data.last().copied(),
        };
    }
    fn step_ready(&self) {
        self.state.lock().unwrap().ready = true;
        self.cv.notify_all();
    }
    fn closed(&self) {
        self.state.lock().unwrap().closed = true;
        self.cv.notify_all();
    }
}

impl Waiter {
    /// Wait for the report and take it: (outcome, output into `out`).
    fn take(&self, out: &mut Vec<u8>) -> Option<Outcome> {
        let mut s = self.state.lock().unwrap();
        while !s.ready {
            s = self.cv.wait(s).unwrap();
        }
        s.ready = false;
        out.clear();
        out.extend_from_slice(&s.output);
        s.outcome.take()
    }

    /// As [`Waiter::take`], the output moved rather than copied: `out`'s
    /// buffer goes back to the slot for the next report (the handshake
    /// benches pass tokens as the baseline does, without a second copy; the
    /// memory bench keeps [`Waiter::take`] and its roomy slots).
    fn take_moved(&self, out: &mut Vec<u8>) -> Option<Outcome> {
        let mut s = self.state.lock().unwrap();
        while !s.ready {
            s = self.cv.wait(s).unwrap();
        }
        s.ready = false;
        out.clear();
        std::mem::swap(out, &mut s.output);
        s.outcome.take()
    }

    /// What the last step report said of resumption (its `Established`
    /// one, once the handshake is over).
    fn resumed(&self) -> Resumed {
        self.state.lock().unwrap().resumed
    }

    fn take_record(&self, data: &mut Plaintext) -> Option<RecordOutcome> {
        let mut s = self.state.lock().unwrap();
        while !s.ready {
            s = self.cv.wait(s).unwrap();
        }
        s.ready = false;
        *data = s.data;
        s.record.take()
    }

    fn wait_closed(&self) {
        let mut s = self.state.lock().unwrap();
        while !s.closed {
            s = self.cv.wait(s).unwrap();
        }
    }
}

/// The model with the test PKI and credentials for both sides, acquired once.
/// Its handshakes are full ([`EngineWorld::new`]: the server credential
/// refuses reconnects) or resumed ([`EngineWorld::resuming`]), and each is
/// checked to be what the world is for.
struct EngineWorld {
    sim: SimProvider,
    server: Arc<Credentials<SimProvider>>,
    client: Arc<Credentials<SimProvider>>,
    /// Handshakes resume (after [`EngineWorld::prime`]).
    resuming: bool,
    /// The counters every session of the world adds to (a device keeps
    /// one for all its sessions too).
    stats: Arc<EngineStats>,
}

/// TLS 1.3 tickets the server sends after each handshake of the resumed
/// bench, on both sides of it (the model's server and rustls's): one per
/// handshake, so each resumed handshake uses one ticket and gets one.
/// Schannel's own number is unknown until a Windows run (the model's default
/// sends none: `SimConfig::tls13_tickets`).
pub const RESUMED_TLS13_TICKETS: usize = 1;

fn acquire(
    sim: &SimProvider,
    spec: &CredentialSpec,
) -> Result<Arc<Credentials<SimProvider>>, Failure> {
    ksspi_sim::testing::acquire_blocking(
        sim.clone(),
        SimPlatform::new(sim),
        spec,
        Arc::default(),
        &passive(),
    )
    .map_err(|e| Failure(format!("acquiring credentials: {e}")))
}

fn disabled(version: Version) -> u32 {
    match version {
        Version::Tls12 => SP_PROT_TLS1_3,
        Version::Tls13 => SP_PROT_TLS1_2,
    }
}

impl EngineWorld {
    /// Full handshakes: the server credential has `SCH_CRED_DISABLE_RECONNECTS`
    /// (the model keeps nothing and sends no ticket), so the client, which
    /// reuses its credentials towards "localhost", never resumes.
    fn new(completion: Completion, version: Version) -> Result<EngineWorld, Failure> {
        EngineWorld::build(completion, version, false)
    }

    /// Resumed handshakes: one client credential, one server credential
    /// with reconnects, [`RESUMED_TLS13_TICKETS`] tickets a TLS 1.3
    /// handshake, which the client decrypts to keep. Needs
    /// [`EngineWorld::prime`] before its first [`EngineWorld::pair`].
    fn resuming(completion: Completion, version: Version) -> Result<EngineWorld, Failure> {
        EngineWorld::build(completion, version, true)
    }

    fn build(
        completion: Completion,
        version: Version,
        resuming: bool,
    ) -> Result<EngineWorld, Failure> {
        let (store, thumb) = TestPki::new("ksspi bench CA").store(&["localhost"]);
        let sim = SimProvider::new(
            SimConfig {
                completion: CompletionPolicy::Always(completion),
                callback_irql: CallbackIrql::Passive,
                tls13_tickets: if resuming { RESUMED_TLS13_TICKETS } else { 0 },
                ..SimConfig::default()
            },
            Arc::new(store),
        );
        let server = acquire(
            &sim,
            &CredentialSpec::Server {
                thumbprint: thumb,
                store: "MY".into(),
                machine: true,
                disabled_protocols: disabled(version),
                reconnects: resuming,
            },
        )?;
        let client = acquire(
            &sim,
            &CredentialSpec::Client {
                disabled_protocols: disabled(version),
                manual_validation: false,
                certificate: None,
            },
        )?;
        Ok(EngineWorld {
            sim,
            server,
            client,
            resuming,
            stats: Arc::default(),
        })
    }

    fn session(
        &self,
        server: bool,
        events: Arc<Waiter>,
    ) -> Result<Session<SimProvider, SimPlatform>, Failure> {
        let (role, credentials) = if server {
            (Role::Server, self.server.clone())
        } else {
            (
                Role::Client {
                    target: Some("localhost".into()),
                },
                self.client.clone(),
            )
        };
        Session::new(
            self.sim.clone(),
            SimPlatform::new(&self.sim),
            SessionSetup {
                role,
                credentials,
                limits: Limits::default(),
                client_certificates: Default::default(),
                alpn: None,
                events,
            },
            self.stats.clone(),
            &passive(),
        )
        .map_err(|e| Failure(format!("a session: {e}")))
    }

    /// An established pair (and its waiters); tokens passed in memory. Its
    /// handshake must have been what the world is for: full (`Resumed::No`
    /// on both sides) or, in a resuming world, resumed (`Resumed::Yes`);
    /// anything else fails the run.
    fn pair(&self) -> Result<EnginePair, Failure> {
        self.handshake(if self.resuming {
            Resumed::Yes
        } else {
            Resumed::No
        })
    }

    /// `k` full handshakes whose ClientHellos all go out before any of them
    /// ends, so that each is full and the client's cache is left `k` TLS 1.3
    /// tickets, one for each thread that resumes at once (each resumed
    /// handshake then takes one and gets [`RESUMED_TLS13_TICKETS`]); TLS 1.2
    /// needs one session, which every thread reuses.
    fn prime(&self, k: usize) -> Result<(), Failure> {
        let started = (0..k)
            .map(|_| self.start())
            .collect::<Result<Vec<_>, _>>()?;
        for hello in started {
            self.finish(hello, Resumed::No)?.close();
        }
        Ok(())
    }

    /// One handshake, both sides checked to report `expect`.
    fn handshake(&self, expect: Resumed) -> Result<EnginePair, Failure> {
        self.finish(self.start()?, expect)
    }

    /// Both sessions, and the client's first step (its ClientHello).
    fn start(&self) -> Result<Hello, Failure> {
        let (sw, cw) = (Arc::new(Waiter::default()), Arc::new(Waiter::default()));
        let server = self.session(true, sw.clone())?;
        let client = self.session(false, cw.clone())?;
        let mut to_server = Vec::new();
        client
            .step(&[], &passive())
            .map_err(|e| Failure(format!("{e:?}")))?;
        let c = cw.take_moved(&mut to_server);
        Ok(Hello {
            pair: EnginePair {
                server,
                client,
                sw,
                cw,
            },
            c,
            to_server,
        })
    }

    /// The rest of the handshake `hello` started, both sides checked to
    /// report `expect`; in a resuming world the client then decrypts the
    /// server's TLS 1.3 tickets (its cache keeps them: engine_resumption.rs's
    /// `connect` does the same).
    fn finish(&self, hello: Hello, expect: Resumed) -> Result<EnginePair, Failure> {
        let at = passive();
        let Hello {
            pair:
                EnginePair {
                    server,
                    client,
                    sw,
                    cw,
                },
            mut c,
            mut to_server,
        } = hello;
        let mut to_client = Vec::new();
        let mut s = None;
        for _ in 0..8 {
            if s != Some(Outcome::Established) && !to_server.is_empty() {
                server
                    .step(&to_server, &at)
                    .map_err(|e| Failure(format!("{e:?}")))?;
                s = sw.take_moved(&mut to_client);
            }
            if c != Some(Outcome::Established) && !to_client.is_empty() {
                client
                    .step(&to_client, &at)
                    .map_err(|e| Failure(format!("{e:?}")))?;
                c = cw.take_moved(&mut to_server);
                // Taken: what is left at the end is the server's after the
                // client finished (TLS 1.3 tickets).
                to_client.clear();
            } else {
                to_server.clear();
            }
            if c == Some(Outcome::Established) && s == Some(Outcome::Established) {
                let seen = (cw.resumed(), sw.resumed());
                let pair = EnginePair {
                    server,
                    client,
                    sw,
                    cw,
                };
                if seen != (expect, expect) {
                    pair.close();
                    let what = if expect == Resumed::Yes {
                        "a handshake of the resumed bench did not resume"
                    } else {
                        "a handshake of the full-handshake bench was not full"
                    };
                    return Err(Failure(format!(
                        "{what}: the client reported {:?}, the server {:?}",
                        seen.0, seen.1
                    )));
                }
                if self.resuming && !to_client.is_empty() {
                    pair.client
                        .decrypt(&to_client, &at)
                        .map_err(|e| Failure(format!("decrypting the tickets: {e:?}")))?;
                    let mut data = Plaintext::default();
                    match pair.cw.take_record(&mut data) {
                        Some(RecordOutcome::Data { missing: 0 }) => {}
                        other => {
                            pair.close();
                            return Err(Failure(format!("decrypting the tickets ended {other:?}")));
                        }
                    }
                }
                return Ok(pair);
            }
        }
        Err(Failure(format!("an engine handshake ended {c:?} / {s:?}")))
    }

    /// `n` handshakes back to back on this thread.
    fn handshakes(&self, n: usize) -> Result<Duration, Failure> {
        let start = Instant::now();
        for _ in 0..n {
            self.pair()?.close();
        }
        Ok(start.elapsed())
    }
}

/// A handshake started: both sessions, the client's first outcome and its
/// ClientHello ([`EngineWorld::start`]).
struct Hello {
    pair: EnginePair,
    c: Option<Outcome>,
    to_server: Vec<u8>,
}

struct EnginePair {
    server: Session<SimProvider, SimPlatform>,
    client: Session<SimProvider, SimPlatform>,
    sw: Arc<Waiter>,
    cw: Arc<Waiter>,
}

impl EnginePair {
    fn close(self) {
        self.server.close();
        self.client.close();
        self.sw.wait_closed();
        self.cw.wait_closed();
    }

    /// `msg` client to server `n` times through encrypt and decrypt.
    fn records(&self, msg: &[u8], n: usize) -> Result<Duration, Failure> {
        let at = passive();
        let need = self.client.sealed_len(msg.len()).unwrap_or(0);
        let mut wire = vec![0u8; need];
        let (first, last) = (msg.first().copied(), msg.last().copied());
        let mut data = Plaintext::default();
        let start = Instant::now();
        for _ in 0..n {
            let w = self
                .client
                .encrypt(msg, &mut wire, &at)
                .map_err(|e| Failure(format!("encrypt: {e:?}")))?
                .len;
            // Within the 64 KiB a session buffers, in whole records.
            let mut fed = 0;
            let mut got = 0;
            let mut end_byte = None;
            while fed < w {
                let end = (fed + 48 * 1024).min(w);
                self.server
                    .decrypt(&wire[fed..end], &at)
                    .map_err(|e| Failure(format!("decrypt: {e:?}")))?;
                match self.sw.take_record(&mut data) {
                    Some(RecordOutcome::Data { .. }) => {
                        if got == 0 && data.len > 0 && data.first != first {
                            return Err(Failure("the first byte came through wrong".into()));
                        }
                        got += data.len;
                        end_byte = data.last.or(end_byte);
                    }
                    other => return Err(Failure(format!("decrypt ended {other:?}"))),
                }
                fed = end;
            }
            if end_byte != last {
                return Err(Failure("the last byte came through wrong".into()));
            }
            if got != msg.len() {
                return Err(Failure(format!(
                    "{got} of {} bytes came through",
                    msg.len()
                )));
            }
        }
        Ok(start.elapsed())
    }
}

/// OPEN a session on the model's device: the model's certificate in MY for
/// a server, `target` for a client; `resumption` `Some` is OPEN's fourth
/// layout.
fn open_session(
    model: &Model,
    role: ksspi_abi::Role,
    protocols: u32,
    target: &[u8],
    resumption: Option<Resumption>,
) -> Result<SessionId, Failure> {
    let mut req = OpenRequest::new(role, protocols, model.thumbprint, target);
    req.resumption = resumption;
    let reply = call(model, IOCTL_KSSPI_OPEN, &enc(&req), 64)?;
    let r = decode::<OpenReply>(&reply).map_err(|e| Failure(format!("{e:?}")))?;
    if r.status < 0 {
        return Err(Failure(format!("OPEN: {}", ksspi::SecStatus(r.status))));
    }
    Ok(r.session)
}

/// CLOSE a session on the model's device.
fn close_session(model: &Model, session: SessionId) -> Result<(), Failure> {
    call(
        model,
        IOCTL_KSSPI_CLOSE,
        &enc(&CloseRequest { session }),
        64,
    )
    .map(drop)
}

/// Handshakes through the device's IOCTL path in-process: OPEN both sides
/// (over the credentials the device caches after the first OPEN of each
/// kind), STEPs, CLOSE. Meant to be full handshakes: the server's OPEN asks
/// for no resumption (OPEN's fourth layout, [`Resumption::Off`]: a server
/// credential that refuses reconnects), the client's is the first layout
/// (the device's shared client credentials, towards "localhost"). Should a
/// handshake resume all the same (a driver that did not honour the
/// request), it is counted in `resumed`, told by the step flags
/// ([`step_flags::RESUMED`]) or, for TLS 1.2, by its shape (a resumed
/// client is established by its second step, a full one by its third).
fn ioctl_handshakes(
    model: &Model,
    n: usize,
    protocols: u32,
    resumed: &AtomicUsize,
) -> Result<Duration, Failure> {
    ioctl_run(model, n, protocols, Some(Resumption::Off), resumed)
}

/// [`ioctl_handshakes`] with the server's OPEN asking `server_resumption`
/// (`None`: OPEN's first layout).
fn ioctl_run(
    model: &Model,
    n: usize,
    protocols: u32,
    server_resumption: Option<Resumption>,
    resumed: &AtomicUsize,
) -> Result<Duration, Failure> {
    let open =
        |role, target: &[u8], resumption| open_session(model, role, protocols, target, resumption);
    let step = |session, input: &[u8]| -> Result<(StepOutcome, u8, Vec<u8>), Failure> {
        let reply = call(
            model,
            IOCTL_KSSPI_STEP,
            &enc(&StepRequest { session, input }),
            step_reply_capacity(64 * 1024),
        )?;
        let r = decode::<StepReply>(&reply).map_err(|e| Failure(format!("{e:?}")))?;
        Ok((r.outcome, r.flags, r.output.to_vec()))
    };
    let start = Instant::now();
    for _ in 0..n {
        let server = open(ksspi_abi::Role::Server, b"", server_resumption)?;
        let client = open(ksspi_abi::Role::Client, b"localhost", None)?;
        let (mut c, mut flags, mut to_server) = step(client, &[])?;
        let mut client_steps = 1;
        let mut s = StepOutcome::NeedInput;
        for _ in 0..8 {
            if s != StepOutcome::Established && !to_server.is_empty() {
                let (o, f, to_client) = step(server, &to_server)?;
                s = o;
                flags |= f;
                to_server.clear();
                if c != StepOutcome::Established && !to_client.is_empty() {
                    let f;
                    (c, f, to_server) = step(client, &to_client)?;
                    flags |= f;
                    client_steps += 1;
                }
            }
        }
        if (c, s) != (StepOutcome::Established, StepOutcome::Established) {
            return Err(Failure(format!("an IOCTL handshake ended {c:?} / {s:?}")));
        }
        if flags & step_flags::RESUMED != 0 || (protocols == proto::TLS12 && client_steps == 2) {
            resumed.fetch_add(1, Ordering::Relaxed);
        }
        for session in [server, client] {
            close_session(model, session)?;
        }
    }
    Ok(start.elapsed())
}

fn enc<'a, M: Message<'a>>(m: &M) -> Vec<u8> {
    let mut buf = vec![0u8; 512 + m.data().len()];
    let n = encode(m, &mut buf).expect("a request encodes");
    buf.truncate(n);
    buf
}

fn call(model: &Model, code: u32, input: &[u8], capacity: usize) -> Result<Vec<u8>, Failure> {
    let (status, reply) = model.call(code, input, capacity)?;
    if status != 0 {
        return Err(Failure(format!(
            "IOCTL {code:#x}: NTSTATUS {:#010x}",
            status as u32
        )));
    }
    Ok(reply)
}

/// One handshake path of the bench, run alone by `ksspictl bench-path` so
/// that `valgrind --tool=callgrind` counts its instructions
/// ([`crate::instructions`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HandshakePath {
    /// Plain rustls, the baseline.
    Rustls,
    /// The engine's sessions, synchronous completions.
    EngineSync,
    /// The engine's sessions, completions on the model's threads.
    EngineAsync,
    /// The device's IOCTL path, synchronous completions.
    IoctlSync,
    /// The device's IOCTL path, completions on the model's threads.
    IoctlAsync,
    /// Plain rustls, resumed handshakes (after a priming full one).
    RustlsResumed,
    /// The engine's sessions, resumed handshakes, synchronous completions.
    EngineSyncResumed,
    /// The engine's sessions, resumed handshakes, completions on the model's
    /// threads.
    EngineAsyncResumed,
}

/// `n` handshakes through `path` on this thread, after its setup (the
/// certificates, the model, credentials), and its teardown. The IOCTL
/// paths print how many of them resumed (`resumed K of N`, see
/// [`ioctl_handshakes`]) for [`crate::instructions`] to report.
pub fn run_path(path: HandshakePath, version: Version, n: usize) -> Result<(), Failure> {
    let completion = match path {
        HandshakePath::EngineSync | HandshakePath::IoctlSync | HandshakePath::EngineSyncResumed => {
            Completion::Sync
        }
        _ => Completion::Async,
    };
    match path {
        HandshakePath::Rustls => {
            Baseline::new(version, 0).handshakes(n);
        }
        HandshakePath::EngineSync | HandshakePath::EngineAsync => {
            EngineWorld::new(completion, version)?.handshakes(n)?;
        }
        HandshakePath::IoctlSync | HandshakePath::IoctlAsync => {
            let m = model(completion, 0);
            let resumed = AtomicUsize::new(0);
            ioctl_handshakes(&m, n, proto_bits(version), &resumed)?;
            finish(m)?;
            println!("resumed {} of {n}", resumed.load(Ordering::Relaxed));
        }
        HandshakePath::RustlsResumed => {
            let base = Baseline::resuming(version, RESUMED_TLS13_TICKETS);
            base.prime(1);
            base.resumed_handshakes(n);
        }
        HandshakePath::EngineSyncResumed | HandshakePath::EngineAsyncResumed => {
            let world = EngineWorld::resuming(completion, version)?;
            world.prime(1)?;
            world.handshakes(n)?;
        }
    }
    Ok(())
}

/// Unload the model; anything left behind fails the bench.
fn finish(m: Model) -> Result<(), Failure> {
    match Box::new(m).finish() {
        0 => Ok(()),
        n => Err(Failure(format!("{n} objects leaked at unload"))),
    }
}

/// The in-driver self-test: `count` handshakes at `concurrency`.
fn selftest(
    model: &Model,
    count: u32,
    concurrency: u32,
    protocols: u32,
) -> Result<SelftestReply, Failure> {
    let req = SelftestRequest {
        count,
        concurrency,
        protocols,
        thumbprint: model.thumbprint,
        ..SelftestRequest::default()
    };
    let reply = call(model, IOCTL_KSSPI_SELFTEST, &enc(&req), 512)?;
    let r = decode::<SelftestReply>(&reply).map_err(|e| Failure(format!("{e:?}")))?;
    if r.handshakes_failed > 0 {
        return Err(Failure(format!(
            "{} self-test handshakes failed",
            r.handshakes_failed
        )));
    }
    Ok(r)
}

/// Run `f` on `threads` threads at once; the slowest thread's time.
fn on_threads(
    threads: usize,
    f: impl Fn() -> Result<Duration, Failure> + Sync,
) -> Result<Duration, Failure> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads).map(|_| s.spawn(&f)).collect();
        let mut worst = Duration::ZERO;
        for h in handles {
            worst = worst.max(
                h.join()
                    .map_err(|_| Failure("a bench thread panicked".into()))??,
            );
        }
        Ok(worst)
    })
}

/// Rounds of the handshake figures.
const ROUNDS: usize = 7;

fn rate(n: usize, d: Duration) -> f64 {
    round1(n as f64 / d.as_secs_f64().max(1e-9))
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[derive(Serialize)]
struct HandshakeRow {
    tls: &'static str,
    threads: usize,
    /// Rounds the figures are the medians of.
    rounds: usize,
    /// Handshakes each path ran per round (on all threads together).
    handshakes_per_round: usize,
    rustls_per_second: f64,
    engine_sync_per_second: f64,
    engine_async_per_second: f64,
    ioctl_sync_per_second: f64,
    ioctl_async_per_second: f64,
    selftest_per_second: f64,
    engine_sync_ratio: f64,
    engine_async_ratio: f64,
    ioctl_sync_ratio: f64,
    ioctl_async_ratio: f64,
    selftest_ratio: f64,
    /// IOCTL handshakes (both completion modes, the timed rounds) that
    /// resumed although the server's OPEN asked for none
    /// ([`Resumption::Off`], see [`ioctl_handshakes`]). Not 0: the IOCTL
    /// figures are not all full handshakes.
    ioctl_resumed: usize,
}

/// Resumed handshakes per second, the engine's against rustls's own
/// ([`resumed_rows`]).
#[derive(Serialize)]
struct ResumedRow {
    tls: &'static str,
    threads: usize,
    /// Rounds the figures are the medians of.
    rounds: usize,
    /// Resumed handshakes each path ran per round (all threads together),
    /// each checked to have resumed.
    handshakes_per_round: usize,
    /// TLS 1.3 tickets the server sends after each handshake (both sides).
    tls13_tickets: usize,
    rustls_per_second: f64,
    engine_sync_per_second: f64,
    engine_async_per_second: f64,
    engine_sync_ratio: f64,
    engine_async_ratio: f64,
}

#[derive(Serialize)]
struct ContinuationRow {
    mode: &'static str,
    per_second: f64,
    ns_per_continuation: f64,
}

#[derive(Serialize)]
struct RecordRow {
    tls: &'static str,
    message_bytes: usize,
    rustls_mib_per_second: f64,
    engine_mib_per_second: f64,
    ratio: f64,
}

#[derive(Serialize)]
struct ScaleRow {
    concurrency: u32,
    handshakes: u32,
    handshakes_per_second: f64,
    /// Handshakes per second of the process's CPU time (user and system,
    /// every thread: the model's included): what the rate would be with
    /// one core's worth of CPU, whatever else the machine runs.
    handshakes_per_cpu_second: f64,
    p50_us: u64,
    p99_us: u64,
}

#[derive(Serialize)]
struct MemoryRow {
    /// The engine's session at rest (after setup, before its first step).
    engine_session_bytes: u64,
    /// The engine's session at its largest during the handshake.
    engine_handshake_bytes: u64,
    /// The same with caller-supplied tokens (`Tokens::Caller`), for
    /// comparison.
    engine_handshake_caller_tokens_bytes: u64,
    /// The engine's session established and idle.
    engine_established_bytes: u64,
    /// The device's own part (its table slot and the event router).
    device_entry_bytes: u64,
    /// The provider's (the model's) state at rest: the async context.
    provider_async_context_bytes: u64,
    /// The provider's state for a session at the same point of the
    /// handshake as `engine_handshake_bytes`.
    provider_handshake_bytes: u64,
    /// The provider's state for an established session.
    provider_established_bytes: u64,
    /// Measured: what an OPEN over cached credentials keeps alive through
    /// the IOCTL path (the engine's session, the device's router, the
    /// provider's async context; the table slot comes with the table).
    ioctl_open_bytes: u64,
}

/// Everything one run measured.
#[derive(Serialize)]
pub struct Report {
    machine: String,
    /// How the host's allocator was set up ([`keep_freed_memory`]).
    allocator: &'static str,
    handshakes: Vec<HandshakeRow>,
    resumed_handshakes: Vec<ResumedRow>,
    continuations: Vec<ContinuationRow>,
    records: Vec<RecordRow>,
    scale: Vec<ScaleRow>,
    memory: Option<MemoryRow>,
    instructions: Option<Instructions>,
    plot: Option<String>,
}

fn tls_name(v: Version) -> &'static str {
    match v {
        Version::Tls12 => "1.2",
        Version::Tls13 => "1.3",
    }
}

fn proto_bits(v: Version) -> u32 {
    match v {
        Version::Tls12 => proto::TLS12,
        Version::Tls13 => proto::TLS13,
    }
}

fn model(completion: Completion, tickets: usize) -> Model {
    Model::new(SimConfig {
        completion: CompletionPolicy::Always(completion),
        callback_irql: CallbackIrql::Passive,
        tls13_tickets: tickets,
        ..SimConfig::default()
    })
}

/// The median of `v` (not empty).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// The (TLS version, threads) points of the handshake tables: one thread,
/// and every core when there is more than one.
fn points() -> Vec<(Version, usize)> {
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let mut out = Vec::new();
    for version in [Version::Tls12, Version::Tls13] {
        out.push((version, 1));
        if cores > 1 {
            out.push((version, cores));
        }
    }
    out
}

/// Each of `N` paths' rate in each round; path 0 (rustls) is what the
/// ratios are to.
struct Rates<const N: usize>([Vec<f64>; N]);

impl<const N: usize> Rates<N> {
    fn new() -> Self {
        Rates(std::array::from_fn(|_| Vec::new()))
    }

    fn push(&mut self, path: usize, rate: f64) {
        self.0[path].push(rate);
    }

    /// The path's median rate.
    fn rate(&self, path: usize) -> f64 {
        round1(median(self.0[path].clone()))
    }

    /// The median of the path's per-round ratios to path 0.
    fn ratio(&self, path: usize) -> f64 {
        let per_round = self.0[path].iter().zip(&self.0[0]).map(|(x, r)| x / r);
        round3(median(per_round.collect()))
    }
}

/// Handshakes per second of every path, per TLS version and thread count.
/// The paths take turns in [`ROUNDS`] rounds of `n` handshakes per thread
/// each; a row gives each path's median rate and the median of its per-round
/// ratios to rustls, so a slow moment of the VM lands in one round of every
/// path rather than in one path's only measurement.
fn handshake_rows(plan: &Plan, progress: &dyn Fn(&str)) -> Result<Vec<HandshakeRow>, Failure> {
    let (n, rounds) = if plan.quick { (4, 1) } else { (300, ROUNDS) };
    let mut rows = Vec::new();
    for (version, threads) in points() {
        progress(&format!(
            "handshakes, TLS {}, {threads} thread(s)",
            tls_name(version)
        ));
        let p = proto_bits(version);
        let total = n * threads;
        let base = Baseline::new(version, 0);
        let sync_world = EngineWorld::new(Completion::Sync, version)?;
        let async_world = EngineWorld::new(Completion::Async, version)?;
        let sync_model = model(Completion::Sync, 0);
        let async_model = model(Completion::Async, 0);
        // Warm up every path once (lazy statics, first allocations, the
        // device's credential cache).
        let warm = AtomicUsize::new(0);
        base.handshakes(2);
        sync_world.handshakes(2)?;
        async_world.handshakes(2)?;
        ioctl_handshakes(&sync_model, 2, p, &warm)?;
        ioctl_handshakes(&async_model, 2, p, &warm)?;
        let resumed = AtomicUsize::new(0);
        let mut rates = Rates::<6>::new();
        for _ in 0..rounds {
            let timed = [
                on_threads(threads, || Ok(base.handshakes(n)))?,
                on_threads(threads, || sync_world.handshakes(n))?,
                on_threads(threads, || async_world.handshakes(n))?,
                on_threads(threads, || ioctl_handshakes(&sync_model, n, p, &resumed))?,
                on_threads(threads, || ioctl_handshakes(&async_model, n, p, &resumed))?,
            ];
            for (i, d) in timed.into_iter().enumerate() {
                rates.push(i, rate(total, d));
            }
            let st = selftest(&async_model, total as u32, threads as u32, p)?;
            rates.push(5, round1(total as f64 * 1e6 / st.elapsed_us.max(1) as f64));
        }
        finish(sync_model)?;
        finish(async_model)?;
        let (ratio, rate_of) = (|i| rates.ratio(i), |i| rates.rate(i));
        rows.push(HandshakeRow {
            tls: tls_name(version),
            threads,
            rounds,
            handshakes_per_round: total,
            rustls_per_second: rate_of(0),
            engine_sync_per_second: rate_of(1),
            engine_async_per_second: rate_of(2),
            ioctl_sync_per_second: rate_of(3),
            ioctl_async_per_second: rate_of(4),
            selftest_per_second: rate_of(5),
            engine_sync_ratio: ratio(1),
            engine_async_ratio: ratio(2),
            ioctl_sync_ratio: ratio(3),
            ioctl_async_ratio: ratio(4),
            selftest_ratio: ratio(5),
            ioctl_resumed: resumed.load(Ordering::Relaxed),
        });
    }
    Ok(rows)
}

/// Resumed handshakes per second, per TLS version and thread count: the
/// engine's (one client credential, one server credential with reconnects,
/// towards "localhost"; TLS 1.3 with [`RESUMED_TLS13_TICKETS`] tickets the
/// client decrypts) against rustls's own ([`Baseline::resuming`]), after
/// priming full handshakes (one per thread); every timed handshake is
/// checked to have resumed, and one that did not fails the run. Rounds and
/// ratios as in [`handshake_rows`].
fn resumed_rows(plan: &Plan, progress: &dyn Fn(&str)) -> Result<Vec<ResumedRow>, Failure> {
    let (n, rounds) = if plan.quick { (4, 1) } else { (1000, ROUNDS) };
    let mut rows = Vec::new();
    for (version, threads) in points() {
        progress(&format!(
            "resumed handshakes, TLS {}, {threads} thread(s)",
            tls_name(version)
        ));
        let total = n * threads;
        let base = Baseline::resuming(version, RESUMED_TLS13_TICKETS);
        let sync_world = EngineWorld::resuming(Completion::Sync, version)?;
        let async_world = EngineWorld::resuming(Completion::Async, version)?;
        base.prime(threads);
        sync_world.prime(threads)?;
        async_world.prime(threads)?;
        // Warm up (checked to resume as the timed ones are).
        base.resumed_handshakes(2);
        sync_world.handshakes(2)?;
        async_world.handshakes(2)?;
        let mut rates = Rates::<3>::new();
        for _ in 0..rounds {
            let timed = [
                on_threads(threads, || Ok(base.resumed_handshakes(n)))?,
                on_threads(threads, || sync_world.handshakes(n))?,
                on_threads(threads, || async_world.handshakes(n))?,
            ];
            for (i, d) in timed.into_iter().enumerate() {
                rates.push(i, rate(total, d));
            }
        }
        let (ratio, rate_of) = (|i| rates.ratio(i), |i| rates.rate(i));
        rows.push(ResumedRow {
            tls: tls_name(version),
            threads,
            rounds,
            handshakes_per_round: total,
            tls13_tickets: RESUMED_TLS13_TICKETS,
            rustls_per_second: rate_of(0),
            engine_sync_per_second: rate_of(1),
            engine_async_per_second: rate_of(2),
            engine_sync_ratio: ratio(1),
            engine_async_ratio: ratio(2),
        });
    }
    Ok(rows)
}

fn continuation_rows(plan: &Plan) -> Vec<ContinuationRow> {
    let calls = if plan.quick { 1_000 } else { 1_000_000 };
    [
        ("sync (no callback)", NullMode::Sync),
        ("inline callback", NullMode::Inline),
        ("async (completion thread)", NullMode::Async),
    ]
    .into_iter()
    .map(|(name, mode)| {
        continuations(mode, calls / 10); // warm-up
        let run = continuations(mode, calls);
        ContinuationRow {
            mode: name,
            per_second: round1(run.per_second()),
            ns_per_continuation: round1(run.elapsed.as_nanos() as f64 / run.calls.max(1) as f64),
        }
    })
    .collect()
}

fn record_rows(plan: &Plan) -> Result<Vec<RecordRow>, Failure> {
    let mut rows = Vec::new();
    for version in [Version::Tls12, Version::Tls13] {
        let world = EngineWorld::new(Completion::Sync, version)?;
        let pair = world.pair()?;
        let base = Baseline::new(version, 0);
        let mut established = base.handshake();
        for size in [1024usize, 64 * 1024] {
            let msg: Vec<u8> = (0..size).map(|i| i as u8).collect();
            let n = if plan.quick {
                4
            } else if size == 1024 {
                20_000
            } else {
                1_000
            };
            established.records(&msg, n / 10);
            pair.records(&msg, n / 10)?;
            let rustls = established.records(&msg, n);
            let engine = pair.records(&msg, n)?;
            let mib =
                |d: Duration| round1((size * n) as f64 / d.as_secs_f64().max(1e-9) / 1048576.0);
            rows.push(RecordRow {
                tls: tls_name(version),
                message_bytes: size,
                rustls_mib_per_second: mib(rustls),
                engine_mib_per_second: mib(engine),
                ratio: round3(rustls.as_secs_f64() / engine.as_secs_f64().max(1e-9)),
            });
        }
        pair.close();
    }
    Ok(rows)
}

/// CPU time this process has used (user and system, all threads), in
/// seconds; 0 where it cannot be read.
fn cpu_seconds() -> f64 {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: getrusage writes the struct it is given; zeroed is a
        // valid `rusage`.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: a valid pointer to a live `rusage`.
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } == 0 {
            let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 * 1e-6;
            return t(usage.ru_utime) + t(usage.ru_stime);
        }
        0.0
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        0.0
    }
}

fn scale_rows(plan: &Plan, progress: &dyn Fn(&str)) -> Result<Vec<ScaleRow>, Failure> {
    let mut rows = Vec::new();
    for &c in &plan.scale {
        progress(&format!("scale: {c} sessions at once"));
        let count = if plan.quick {
            c.max(4)
        } else {
            (2 * c).max(400)
        }
        .min(MAX_SELFTEST_COUNT);
        // Room for `c` handshakes at once: two sessions each.
        let m = Model::sized(
            SimConfig {
                completion: CompletionPolicy::Always(Completion::Async),
                callback_irql: CallbackIrql::Passive,
                ..SimConfig::default()
            },
            2 * c,
        );
        let cpu = cpu_seconds();
        let st = selftest(&m, count, c, proto::TLS13)?;
        let cpu = cpu_seconds() - cpu;
        finish(m)?;
        rows.push(ScaleRow {
            concurrency: c,
            handshakes: count,
            handshakes_per_second: round1(count as f64 * 1e6 / st.elapsed_us.max(1) as f64),
            handshakes_per_cpu_second: round1(count as f64 / cpu.max(1e-6)),
            p50_us: st.latency_p50_us,
            p99_us: st.latency_p99_us,
        });
    }
    Ok(rows)
}

/// Sessions over the model with every provider call in the provider's
/// account ([`Counting`]): `CountedProvider` and `CountedPlatform` over a
/// model with synchronous completions.
struct CountedWorld {
    sim: SimProvider,
    server: Arc<Credentials<CountedProvider>>,
    client: Arc<Credentials<CountedProvider>>,
    stats: Arc<EngineStats>,
}

impl CountedWorld {
    fn new(version: Version) -> Result<CountedWorld, Failure> {
        let (store, thumb) = TestPki::new("ksspi bench CA").store(&["localhost"]);
        let sim = SimProvider::new(
            SimConfig {
                completion: CompletionPolicy::Always(Completion::Sync),
                callback_irql: CallbackIrql::Passive,
                ..SimConfig::default()
            },
            Arc::new(store),
        );
        let acquire = |spec: &CredentialSpec| {
            ksspi_sim::testing::acquire_blocking(
                CountedProvider::new(sim.clone()),
                CountedPlatform::new(&sim),
                spec,
                Arc::default(),
                &passive(),
            )
            .map_err(|e| Failure(format!("acquiring credentials: {e}")))
        };
        let server = acquire(&CredentialSpec::Server {
            thumbprint: thumb,
            store: "MY".into(),
            machine: true,
            disabled_protocols: disabled(version),
            reconnects: true,
        })?;
        let client = acquire(&CredentialSpec::Client {
            disabled_protocols: disabled(version),
            manual_validation: false,
            certificate: None,
        })?;
        Ok(CountedWorld {
            sim,
            server,
            client,
            stats: Arc::default(),
        })
    }

    fn session(
        &self,
        server: bool,
        events: Arc<Waiter>,
        limits: Limits,
    ) -> Result<Session<CountedProvider, CountedPlatform>, Failure> {
        let (role, credentials) = if server {
            (Role::Server, self.server.clone())
        } else {
            (
                Role::Client {
                    target: Some("localhost".into()),
                },
                self.client.clone(),
            )
        };
        Session::new(
            CountedProvider::new(self.sim.clone()),
            CountedPlatform::new(&self.sim),
            SessionSetup {
                role,
                credentials,
                limits,
                client_certificates: Default::default(),
                alpn: None,
                events,
            },
            self.stats.clone(),
            &passive(),
        )
        .map_err(|e| Failure(format!("a session: {e}")))
    }
}

/// A waiter whose output copy already has room for any step's output, so
/// that what it copies is not counted as a session's.
fn roomy_waiter() -> Arc<Waiter> {
    let w = Waiter::default();
    w.state.lock().unwrap().output.reserve(64 * 1024);
    Arc::new(w)
}

/// What `k` sessions hold per session, in each account, at the points of a
/// handshake (see [`memory`]).
#[derive(Clone, Copy, Default)]
struct Held {
    engine: i64,
    provider: i64,
}

/// One TLS version's footprint: `k` pairs stepped side by side through the
/// handshake; at each point where one side has stepped, what each of its
/// sessions holds (engine and provider apart). Returns (at rest, the
/// largest during the handshake, established and idle), per session.
fn footprint(version: Version, k: usize, limits: Limits) -> Result<(Held, Held, Held), Failure> {
    let world = CountedWorld::new(version)?;
    let at = passive();
    let waiters: Vec<(Arc<Waiter>, Arc<Waiter>)> =
        (0..k).map(|_| (roomy_waiter(), roomy_waiter())).collect();
    let mut flights: Vec<Vec<u8>> = (0..k).map(|_| Vec::with_capacity(64 * 1024)).collect();
    let per = |e0: i64, p0: i64, n: usize| Held {
        engine: (live() - e0) / n as i64,
        provider: (provider_live() - p0) / n as i64,
    };
    let (e0, p0) = (live(), provider_live());
    let mut pairs = Vec::with_capacity(k);
    for (sw, cw) in &waiters {
        pairs.push((
            world.session(true, sw.clone(), limits)?,
            world.session(false, cw.clone(), limits)?,
        ));
    }
    let rest = per(e0, p0, 2 * k);
    let fail = |e: ksspi::engine::StepError| Failure(format!("{e:?}"));
    // Each side's sessions by themselves: the other side's do not change
    // while one side steps.
    let mut side_rest = [rest, rest]; // [server, client], what each holds now
    let mut largest = rest;
    let mut outcomes = vec![(None, None); k];
    for round in 0..8 {
        // The client steps on even rounds (its first with no input), the
        // server on odd ones, each with the flight the other sent.
        let client_turn = round % 2 == 0;
        let (e1, p1) = (live(), provider_live());
        let mut stepped = 0;
        for (i, ((server, client), (sw, cw))) in pairs.iter().zip(&waiters).enumerate() {
            let (session, waiter, done) = if client_turn {
                (client, cw, &mut outcomes[i].1)
            } else {
                (server, sw, &mut outcomes[i].0)
            };
            if *done == Some(Outcome::Established) || (round > 0 && flights[i].is_empty()) {
                continue;
            }
            session.step(&flights[i], &at).map_err(fail)?;
            *done = waiter.take(&mut flights[i]);
            stepped += 1;
        }
        if stepped == 0 {
            break;
        }
        let side = usize::from(client_turn);
        let grew = per(e1, p1, k);
        side_rest[side].engine += grew.engine;
        side_rest[side].provider += grew.provider;
        // Only a side still handshaking counts towards the largest.
        let handshaking = outcomes.iter().any(|(s, c)| {
            let o = if client_turn { c } else { s };
            *o != Some(Outcome::Established)
        });
        if handshaking && side_rest[side].engine > largest.engine {
            largest = side_rest[side];
        }
    }
    if outcomes
        .iter()
        .any(|o| *o != (Some(Outcome::Established), Some(Outcome::Established)))
    {
        return Err(Failure("a footprint handshake did not complete".into()));
    }
    // A fresh world whose handshakes all start before any ends: none can
    // resume, and none did (the figures are a full handshake's).
    if waiters
        .iter()
        .any(|(sw, cw)| (sw.resumed(), cw.resumed()) != (Resumed::No, Resumed::No))
    {
        return Err(Failure("a footprint handshake was not full".into()));
    }
    let established = per(e0, p0, 2 * k);
    for (server, client) in &pairs {
        server.close();
        client.close();
    }
    for (sw, cw) in &waiters {
        sw.wait_closed();
        cw.wait_closed();
    }
    drop(pairs);
    world.sim.wait_idle();
    Ok((rest, largest, established))
}

/// Memory per session: `k` engine sessions over the model, both TLS
/// versions, at rest (after setup), at the largest point of the handshake
/// (a side that has stepped and not finished), and established and idle;
/// what the provider's calls hold apart. Then the device's own part, and
/// what an OPEN over cached credentials keeps alive through the IOCTL path.
fn memory() -> Result<MemoryRow, Failure> {
    let k = 200;
    let mut rest = Held::default();
    let mut handshake = Held::default();
    let mut established = Held::default();
    let mut caller_tokens = Held::default();
    for version in [Version::Tls12, Version::Tls13] {
        let (_, h, _) = footprint(
            version,
            k,
            Limits {
                tokens: Tokens::Caller,
                ..Limits::default()
            },
        )?;
        caller_tokens = if h.engine >= caller_tokens.engine {
            h
        } else {
            caller_tokens
        };
        let (r, h, e) = footprint(version, k, Limits::default())?;
        rest = if r.engine >= rest.engine { r } else { rest };
        handshake = if h.engine >= handshake.engine {
            h
        } else {
            handshake
        };
        established = if e.engine >= established.engine {
            e
        } else {
            established
        };
    }
    let m = model(Completion::Sync, 0);
    let device_bytes = m.device.bytes_per_session();
    let open = || open_session(&m, ksspi_abi::Role::Server, proto::ALL, b"", None);
    let close = |session| close_session(&m, session);
    // The first OPEN acquires the credentials the others find cached.
    close(open()?)?;
    // Within the device's sessions per file.
    let opens = 32;
    let mut ids = Vec::with_capacity(opens);
    let before = live();
    for _ in 0..opens {
        ids.push(open()?);
    }
    let per_open = (live() - before) / opens as i64;
    for id in ids {
        close(id)?;
    }
    finish(m)?;
    let bytes = |x: i64| x.max(0) as u64;
    Ok(MemoryRow {
        engine_session_bytes: bytes(rest.engine),
        engine_handshake_bytes: bytes(handshake.engine),
        engine_handshake_caller_tokens_bytes: bytes(caller_tokens.engine),
        engine_established_bytes: bytes(established.engine),
        device_entry_bytes: device_bytes as u64,
        provider_async_context_bytes: bytes(rest.provider),
        provider_handshake_bytes: bytes(handshake.provider),
        provider_established_bytes: bytes(established.provider),
        ioctl_open_bytes: bytes(per_open),
    })
}

/// Keep freed memory in the process, as the kernel's nonpaged pool keeps
/// it: glibc by default gives the top of its heap back to the OS whenever
/// more than 128 KiB of it is free, and serves blocks of 128 KiB and more
/// (adaptively) with mmap, so each handshake's sessions, whose buffers came
/// to 160 KiB before they were sized to need, mapped fresh pages and
/// faulted them in (about 100 000 page faults a run of the handshake
/// section), a cost of the host's allocator that no kernel pool has. Raising both thresholds to 1 GiB keeps the heap;
/// the instruction counts (child processes) are unaffected either way.
/// Returns what was set, for the report.
fn keep_freed_memory() -> &'static str {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const KEEP: libc::c_int = 1 << 30;
        // SAFETY: mallopt only sets glibc's allocator parameters; called
        // before the bench allocates anything of its own.
        let ok = unsafe {
            libc::mallopt(libc::M_TRIM_THRESHOLD, KEEP) == 1
                && libc::mallopt(libc::M_MMAP_THRESHOLD, KEEP) == 1
        };
        if ok {
            return "glibc heap kept (trim and mmap thresholds 1 GiB)";
        }
        "glibc's default trim and mmap thresholds (mallopt refused)"
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        "the platform's default allocator"
    }
}

/// Run the benchmarks.
pub fn run(plan: &Plan, progress: &dyn Fn(&str)) -> Result<Report, Failure> {
    let allocator = keep_freed_memory();
    let mut continuations = Vec::new();
    if plan.wants(Section::Continuations) {
        progress("continuations over the null provider");
        continuations = continuation_rows(plan);
    }
    let mut handshakes = Vec::new();
    let mut resumed_handshakes = Vec::new();
    if plan.wants(Section::Handshakes) {
        handshakes = handshake_rows(plan, progress)?;
        resumed_handshakes = resumed_rows(plan, progress)?;
    }
    let mut records = Vec::new();
    if plan.wants(Section::Records) {
        progress("record layer");
        records = record_rows(plan)?;
    }
    let mut memory = None;
    if plan.wants(Section::Memory) {
        progress("memory per session");
        memory = Some(self::memory()?);
    }
    let mut scale = Vec::new();
    if plan.wants(Section::Scale) {
        scale = scale_rows(plan, progress)?;
    }
    let mut instructions = None;
    if plan.wants(Section::Instructions) {
        let (lo, hi) = if plan.quick { (1, 3) } else { (5, 25) };
        instructions = Some(instructions::run(lo, hi, progress)?);
    }
    let plot = match (&plan.plot, &memory) {
        (Some(path), Some(memory)) if !scale.is_empty() => {
            let per_session = memory.engine_handshake_bytes + memory.device_entry_bytes;
            let points: Vec<ScalePoint> = scale
                .iter()
                .map(|r| ScalePoint {
                    concurrency: r.concurrency,
                    handshakes_per_second: r.handshakes_per_second,
                    p50_us: r.p50_us,
                    p99_us: r.p99_us,
                    bytes_per_session: per_session,
                })
                .collect();
            scale_png(path, "ksspi self-test over the model", &points).map_err(Failure)?;
            Some(path.display().to_string())
        }
        _ => None,
    };
    Ok(Report {
        machine: machine(),
        allocator,
        handshakes,
        resumed_handshakes,
        continuations,
        records,
        scale,
        memory,
        instructions,
        plot,
    })
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    format!(
        "{cpu}, {cores} cores, {} build",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    )
}

/// The report as tables.
pub fn print(r: &Report) {
    println!("ksspi bench on {}; {}", r.machine, r.allocator);
    if !r.handshakes.is_empty() {
        println!(
            "\nhandshakes per second, median of {} rounds (in brackets the median of each round's \
             ratio to plain rustls; same certificate and provider)",
            r.handshakes[0].rounds
        );
        println!(
            "  {:<5} {:>7} {:>9} {:>16} {:>16} {:>16} {:>16} {:>16}",
            "TLS",
            "threads",
            "rustls",
            "engine (sync)",
            "engine (async)",
            "IOCTL (sync)",
            "IOCTL (async)",
            "self-test"
        );
    }
    for h in &r.handshakes {
        let cell = |rate: f64, ratio: f64| format!("{rate:>9.1} ({ratio:.3})");
        println!(
            "  {:<5} {:>7} {:>9.1} {} {} {} {} {}",
            h.tls,
            h.threads,
            h.rustls_per_second,
            cell(h.engine_sync_per_second, h.engine_sync_ratio),
            cell(h.engine_async_per_second, h.engine_async_ratio),
            cell(h.ioctl_sync_per_second, h.ioctl_sync_ratio),
            cell(h.ioctl_async_per_second, h.ioctl_async_ratio),
            cell(h.selftest_per_second, h.selftest_ratio),
        );
    }
    for h in r.handshakes.iter().filter(|h| h.ioctl_resumed > 0) {
        println!(
            "  note: TLS {} on {} thread(s): {} of the IOCTL handshakes resumed although the \
             server's OPEN asked for Resumption::Off: those IOCTL figures are not all full \
             handshakes",
            h.tls, h.threads, h.ioctl_resumed
        );
    }
    if !r.resumed_handshakes.is_empty() {
        println!(
            "\nresumed handshakes per second, median of {} rounds (each checked to have resumed; \
             in brackets the median ratio to rustls's own resumed handshakes; TLS 1.3: {} \
             ticket(s) a handshake)",
            r.resumed_handshakes[0].rounds, r.resumed_handshakes[0].tls13_tickets
        );
        println!(
            "  {:<5} {:>7} {:>9} {:>16} {:>16}",
            "TLS", "threads", "rustls", "engine (sync)", "engine (async)"
        );
    }
    for h in &r.resumed_handshakes {
        let cell = |rate: f64, ratio: f64| format!("{rate:>9.1} ({ratio:.3})");
        println!(
            "  {:<5} {:>7} {:>9.1} {} {}",
            h.tls,
            h.threads,
            h.rustls_per_second,
            cell(h.engine_sync_per_second, h.engine_sync_ratio),
            cell(h.engine_async_per_second, h.engine_async_ratio),
        );
    }
    if !r.continuations.is_empty() {
        println!("\nasync machinery alone (a provider whose calls do no cryptography)");
    }
    for c in &r.continuations {
        println!(
            "  {:<26} {:>12.1} continuations/s  {:>8.1} ns each",
            c.mode, c.per_second, c.ns_per_continuation
        );
    }
    if !r.records.is_empty() {
        println!(
            "\nrecord layer, client encrypt + server decrypt (ratio: engine speed / rustls speed)"
        );
    }
    for x in &r.records {
        println!(
            "  TLS {:<4} {:>6} B messages: rustls {:>8.1} MiB/s, engine {:>8.1} MiB/s ({:.3})",
            x.tls, x.message_bytes, x.rustls_mib_per_second, x.engine_mib_per_second, x.ratio
        );
    }
    if !r.scale.is_empty() {
        println!("\nscale: the self-test (TLS 1.3) at growing concurrency");
    }
    for s in &r.scale {
        println!(
            "  {:>6} at once: {:>6} handshakes, {:>8.1}/s ({:>8.1} per CPU second), p50 {:>9} µs, p99 {:>9} µs",
            s.concurrency,
            s.handshakes,
            s.handshakes_per_second,
            s.handshakes_per_cpu_second,
            s.p50_us,
            s.p99_us
        );
    }
    if let Some(m) = &r.memory {
        let d = m.device_entry_bytes;
        println!("\nmemory per session (engine + device; the provider's own state apart)");
        for (what, engine, provider) in [
            (
                "at rest",
                m.engine_session_bytes,
                m.provider_async_context_bytes,
            ),
            (
                "handshake (largest)",
                m.engine_handshake_bytes,
                m.provider_handshake_bytes,
            ),
            ("  caller tokens", m.engine_handshake_caller_tokens_bytes, 0),
            (
                "established, idle",
                m.engine_established_bytes,
                m.provider_established_bytes,
            ),
        ] {
            let provider = if provider > 0 {
                format!("; provider (model) {provider} B")
            } else {
                String::new()
            };
            println!(
                "  {what:<20} {:>7} B  (engine {engine} B, device {d} B){provider}",
                engine + d
            );
        }
        println!(
            "  measured through the IOCTL path: an OPEN over cached credentials keeps {} B alive",
            m.ioctl_open_bytes
        );
    }
    if let Some(i) = &r.instructions {
        instructions::print(i);
    }
    if let Some(p) = &r.plot {
        println!("plot: {p}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_full_handshake_bench_runs_full_handshakes() {
        for version in [Version::Tls12, Version::Tls13] {
            for completion in [Completion::Sync, Completion::Async] {
                let world = EngineWorld::new(completion, version).expect("a world");
                for _ in 0..3 {
                    let pair = world.pair().expect("a full handshake");
                    let seen = (pair.cw.resumed(), pair.sw.resumed());
                    assert_eq!(
                        seen,
                        (Resumed::No, Resumed::No),
                        "{version:?} {completion:?}"
                    );
                    pair.close();
                }
            }
            for path in [HandshakePath::EngineSync, HandshakePath::EngineAsync] {
                run_path(path, version, 3).expect("the bench's own path");
            }
        }
    }

    #[test]
    fn a_full_handshake_that_resumed_fails_the_bench() {
        // The bench as it was before its server refused reconnects: a
        // server credential with reconnects, the client's reused towards
        // "localhost": TLS 1.2's second handshake resumes.
        let world = EngineWorld {
            resuming: false,
            ..EngineWorld::resuming(Completion::Sync, Version::Tls12).expect("a world")
        };
        world.pair().expect("the first is full").close();
        let Err(Failure(why)) = world.pair() else {
            panic!("the second handshake resumed and passed as full");
        };
        assert!(why.contains("was not full"), "{why}");
        assert!(why.contains("Yes"), "{why}");
    }

    #[test]
    fn the_resumed_bench_resumes_every_handshake() {
        for version in [Version::Tls12, Version::Tls13] {
            for completion in [Completion::Sync, Completion::Async] {
                let world = EngineWorld::resuming(completion, version).expect("a world");
                // Two priming handshakes at once: both full.
                world.prime(2).expect("priming");
                for _ in 0..4 {
                    let pair = world.pair().expect("a resumed handshake");
                    let seen = (pair.cw.resumed(), pair.sw.resumed());
                    assert_eq!(
                        seen,
                        (Resumed::Yes, Resumed::Yes),
                        "{version:?} {completion:?}"
                    );
                    pair.close();
                }
            }
            for path in [
                HandshakePath::RustlsResumed,
                HandshakePath::EngineSyncResumed,
                HandshakePath::EngineAsyncResumed,
            ] {
                run_path(path, version, 3).expect("the bench's own path");
            }
        }
    }

    #[test]
    fn a_resumed_handshake_that_was_full_fails_the_bench() {
        for version in [Version::Tls12, Version::Tls13] {
            // Nothing primed: the first handshake cannot resume.
            let world = EngineWorld::resuming(Completion::Sync, version).expect("a world");
            let Err(Failure(why)) = world.pair() else {
                panic!("{version:?}: a full handshake passed as resumed");
            };
            assert!(why.contains("did not resume"), "{why}");
        }
    }

    #[test]
    fn the_ioctl_path_counts_the_handshakes_that_resumed() {
        let m = model(Completion::Sync, 0);
        // The device's cached credentials with reconnects (OPEN's first
        // layout): every TLS 1.2 handshake after the first resumes, and
        // its shape says so.
        let resumed = AtomicUsize::new(0);
        ioctl_run(&m, 4, proto::TLS12, None, &resumed).expect("handshakes");
        assert_eq!(resumed.load(Ordering::Relaxed), 3);
        // TLS 1.3 without tickets: nothing to resume with.
        let resumed = AtomicUsize::new(0);
        ioctl_handshakes(&m, 4, proto::TLS13, &resumed).expect("handshakes");
        assert_eq!(resumed.load(Ordering::Relaxed), 0);
        // The bench's own request (the server's OPEN asks Resumption::Off,
        // which the device honours): none resumed.
        let resumed = AtomicUsize::new(0);
        let fresh = model(Completion::Sync, 0);
        ioctl_handshakes(&fresh, 4, proto::TLS12, &resumed).expect("handshakes");
        assert_eq!(resumed.load(Ordering::Relaxed), 0);
        finish(fresh).expect("no leak");
        finish(m).expect("no leak");
    }
}
