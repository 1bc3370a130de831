//! The self-test IOCTL: N handshakes at concurrency C between a server and a
//! client session inside the driver, tokens passed in memory, all through the
//! engine; the request pends until the last handshake ends, then gets the
//! counters and timings.
//!
//! Sessions hand each other their output through a run-wide action queue
//! drained by one "pump" at a time: a session's `step_ready` only queues the
//! peer's next step, so handshakes never recurse into each other (the same
//! trampoline idea as the conductor's, one level up), and each direction has
//! its own inbox, so nothing is copied twice or allocated per step.
//!
//! With `bytes` > 0, each pair then exchanges that many bytes each way
//! through the record layer (the client's records go straight into the
//! server's inbox and back, in turns of up to [`CHUNK`] bytes), checks every
//! byte against the pattern its peer sent, and ends with the client's
//! close_notify, which the server must see as the peer closing. One record
//! operation per pair is in flight at a time, so the pair's data state moves
//! one step per report.
//!
//! Bounds: every figure of the request is bounded by the ABI
//! ([`ksspi_abi::MAX_SELFTEST_COUNT`] and its siblings), the concurrency also
//! by the device (half its session limit), and one self-test runs at a time
//! ([`Gate`]). Everything a run sizes from the request (its action queue,
//! its table of pairs, its latencies) and every pair's buffers come through
//! the platform's fallible path: under low resources the request completes
//! with `STATUS_INSUFFICIENT_RESOURCES`, or a pair fails cleanly.
//!
//! Cancel: the request pends (cancelable) under [`SELFTEST_SESSION`]. A
//! cancel stops new handshakes from starting; the ones in flight finish, and
//! once they have, the request completes with `STATUS_CANCELLED`.
//!
//! Resume mode ([`SelftestRequest::resume`]): each pair runs its handshake
//! twice, one after the other, over the same credentials handles, its client
//! towards a target name of its own ([`target_name`]; the client validates
//! nothing, so the name is never checked against the certificate). Schannel
//! finds a client's cached session by the target name ("Client applications
//! must provide a unique name for each server ... in the pszTargetName
//! parameter", the Platform SDK's Schannel session-cache page); that the
//! cache belongs to the credentials handle is the model's reading, unknown
//! for kernel Schannel until a Windows run (docs/DESIGN.md, contract item
//! 11). So the second handshake may resume: TLS 1.2 by session id, TLS 1.3
//! by a ticket the server sent after the first handshake. The client takes
//! those tickets through one decrypt before its sessions close (when the
//! pair exchanges bytes, its first decrypt takes them, as without resume). The
//! client side's report of each establishment ([`StepReport::resumed`],
//! `SECPKG_ATTR_SESSION_INFO`) is counted into [`SelftestResumption`]. Every
//! handshake counts in the reply's figures (two per pair); a pair whose first
//! handshake failed, or that a cancel reached in between, does not run its
//! second, which counts as failed.

use crate::device::{
    complete_with, disabled_protocols, FileId, PendKey, Request, SELFTEST_SESSION,
};
use crate::lock::SpinLock;
use crate::ntstatus::*;
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use ksspi::engine::{
    acquire_credentials, release_credentials, reserve_vec, wipe, zeroed_buffer, CredentialSpec,
    EngineStats, Limits, Outcome, Platform, RecordOutcome, RecordReport, Resumed, Role, Session,
    SessionEvents, SessionSetup, StepReport,
};
use ksspi::handle::Credentials;
use ksspi::provider::SspiProvider;
use ksspi::{Passive, SecStatus};
use ksspi_abi::{proto, SelftestReply, SelftestRequest, SelftestResumption};

/// Plaintext per record-layer turn: two full records.
const CHUNK: usize = 32 * 1024;

/// Room for the longest [`target_name`]: "p", ten digits, the suffix.
const TARGET_ROOM: usize = 40;

/// A resume run's client target name for pair `index`,
/// "p<index>.selftest.ksspi.invalid" (`.invalid` is reserved and never
/// resolves: RFC 6761, section 6.4), through the fallible path; `None` if
/// the pool is short.
fn target_name<K: Platform>(platform: &K, index: u32) -> Option<String> {
    use core::fmt::Write;
    let room = reserve_vec::<u8, K>(platform, TARGET_ROOM).ok()?;
    // Empty, so valid UTF-8; its capacity is kept.
    let mut name = String::from_utf8(room).ok()?;
    // Within the capacity: no allocation.
    write!(name, "p{index}.selftest.ksspi.invalid").ok()?;
    Some(name)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Server,
    Client,
}

impl Side {
    fn peer(self) -> Side {
        match self {
            Side::Server => Side::Client,
            Side::Client => Side::Server,
        }
    }
    fn index(self) -> usize {
        self as usize
    }
}

enum Action<P: SspiProvider, K: Platform> {
    /// Open the next handshake's two sessions and take the client's first step.
    Start,
    /// A resume run: open pair `index`'s second handshake (its first is over).
    Again(u32),
    /// Step `side` of `pair` with the bytes in its inbox.
    Feed(Arc<Pair<P, K>>, Side),
    /// Encrypt `side`'s next chunk into its peer's inbox.
    Send(Arc<Pair<P, K>>, Side),
    /// Decrypt `side`'s inbox.
    Open(Arc<Pair<P, K>>, Side),
    /// Shut `side` down (close_notify into its peer's inbox).
    Shut(Arc<Pair<P, K>>, Side),
}

struct SideState<P: SspiProvider, K: Platform> {
    session: Option<Arc<Session<P, K>>>,
    /// Bytes from the peer, waiting for this side's next step.
    inbox: Vec<u8>,
    outcome: Option<Outcome>,
    record: Option<RecordOutcome>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Handshake,
    /// A resume run's first handshake without a record-layer exchange: the
    /// client decrypts what the server sent after the handshake (TLS 1.3
    /// tickets) before the sessions close.
    Tickets,
    Exchange,
    Closing,
}

/// A pair's record-layer exchange (indexed by [`Side::index`]).
struct DataState {
    stage: Stage,
    sent: [u64; 2],
    received: [u64; 2],
    bad: bool,
    /// The sender's plaintext for one turn (allocated at setup).
    scratch: Vec<u8>,
}

impl Drop for DataState {
    fn drop(&mut self) {
        // Plaintext: zeroed before it goes back to the pool.
        wipe(&mut self.scratch);
    }
}

struct Pair<P: SspiProvider, K: Platform> {
    index: u32,
    /// Which of the pair's handshakes this is: 0, or 1 (a resume run's second).
    round: u32,
    /// Counted ok by [`Run::close_pair`].
    succeeded: AtomicBool,
    started_us: u64,
    server: SpinLock<SideState<P, K>>,
    client: SpinLock<SideState<P, K>>,
    data: SpinLock<DataState>,
    finished: AtomicBool,
    sides_closed: AtomicU32,
}

/// The byte `sender` puts at `offset` of its stream in pair `pair`.
fn pattern(seed: u64, pair: u32, sender: Side, offset: u64) -> u8 {
    let x = offset
        .wrapping_mul(0x9E37_79B9)
        .wrapping_add(seed)
        .wrapping_add(u64::from(pair) << 8)
        .wrapping_add(sender as u64 * 0x55);
    (x ^ (x >> 13) ^ (offset >> 8)) as u8
}

struct Creds<P: SspiProvider> {
    server: Option<Arc<Credentials<P>>>,
    clients: Vec<Arc<Credentials<P>>>,
}

/// The device's self-test slot: one run at a time; a second SELFTEST while
/// one runs completes with `STATUS_DEVICE_BUSY`.
///
/// Why one at a time rather than counting a run's sessions in the session
/// table: a run's sessions belong to no file handle and take no table slot,
/// and the request already bounds how many it holds at once (its
/// concurrency, at most half the device's session limit). With one run at a
/// time the device holds at most its table's sessions plus one run's, a
/// fixed worst case, and a self-test can neither take OPENs' room nor be
/// refused because of the sessions some file happens to have open (the
/// per-file quota would cap it far below the scale it measures).
pub(crate) struct Gate<P: SspiProvider, K: Platform, R: Request> {
    /// The run under way; it takes itself out before it completes its
    /// request (so the caller the completion wakes may start the next).
    run: SpinLock<Option<Arc<Run<P, K, R>>>>,
}

impl<P: SspiProvider, K: Platform, R: Request> Gate<P, K, R> {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Gate {
            run: SpinLock::new(None),
        })
    }

    /// The glue's cancel routine for the SELFTEST pended under `key` (at up
    /// to DISPATCH_LEVEL): true if the run took the cancel (it completes the
    /// request with `STATUS_CANCELLED` once its handshakes in flight are
    /// over), false if the request is no longer the run's to complete.
    pub(crate) fn cancel(&self, platform: &K, key: PendKey) -> bool {
        let run = self.run.lock(platform).clone();
        run.is_some_and(|run| run.cancel(key.serial))
    }

    /// The device is going away (unload): the run under way, if any, starts
    /// no new handshake, lets the ones in flight end, and completes its
    /// request with `STATUS_CANCELLED` (through the ordinary completion: no
    /// cancel routine is running).
    pub(crate) fn stop(&self, platform: &K) {
        let run = self.run.lock(platform).clone();
        if let Some(run) = run {
            // As a cancel would: the run ends from its own continuations
            // (see `Run::cancel`).
            let mut p = run.progress.lock(&run.platform);
            p.cancelled = true;
            p.stopped = true;
        }
    }
}

/// The run's request and whether it was cancelled (one lock, so a cancel and
/// the completion agree on who completes it and how).
struct Pended<R> {
    request: Option<R>,
    /// The cancel routine handed the request back to the run: complete it
    /// through [`Request::cancelled`].
    cancelled: bool,
}

/// How far a run is, under one lock so starting, ending and cancelling
/// agree on when the run is over.
#[derive(Default)]
struct Progress {
    /// Handshakes started (the next one's index).
    started: u32,
    /// Started and not ended.
    live: u32,
    ended: u32,
    /// The credentials are in (or failed): handshakes may start.
    ready: bool,
    cancelled: bool,
    /// The device is unloading ([`Gate::stop`]): cancelled, but the request
    /// completes through the ordinary path, with `STATUS_CANCELLED`.
    stopped: bool,
    finished: bool,
}

/// One self-test run.
pub(crate) struct Run<P: SspiProvider, K: Platform, R: Request> {
    provider: P,
    platform: K,
    plan: SelftestRequest,
    limits: Limits,
    /// The handshake sessions' counters (their async contexts only).
    stats: Arc<EngineStats>,
    /// The device's counters, which take this run's at its end.
    device_stats: Arc<EngineStats>,
    creds: SpinLock<Creds<P>>,
    request: SpinLock<Pended<R>>,
    /// The pend serial of the request (its cancel key's).
    serial: u64,
    actions: SpinLock<VecDeque<Action<P, K>>>,
    pumping: AtomicBool,
    progress: SpinLock<Progress>,
    ok: AtomicU64,
    failed: AtomicU64,
    steps: AtomicU64,
    sessions: AtomicU64,
    bytes_checked: AtomicU64,
    latencies: SpinLock<Vec<u64>>,
    /// A resume run's counts ([`SelftestResumption`]'s fields, in order).
    resumption: [AtomicU64; 4],
    t0: u64,
    acquisitions_left: AtomicU32,
    acquisition_failed: AtomicU32,
    /// The handshakes under way (their sessions' events hold them weakly).
    active: SpinLock<Vec<Arc<Pair<P, K>>>>,
    /// The device's slot, which holds the run until it has completed its
    /// request.
    gate: Arc<Gate<P, K, R>>,
}

/// What [`start`] needs of the device.
pub(crate) struct Launch<P: SspiProvider, K: Platform, R: Request> {
    pub provider: P,
    pub platform: K,
    pub limits: Limits,
    pub gate: Arc<Gate<P, K, R>>,
    /// The device's counters, which take the run's at its end.
    pub device_stats: Arc<EngineStats>,
    /// The file the request came on, and its pend serial.
    pub file: FileId,
    pub serial: u64,
}

/// Start a self-test (its figures checked by the decoder and the device);
/// `request` pends, and completes when the run ends. Refused at once: with
/// `STATUS_DEVICE_BUSY` while another run is under way,
/// `STATUS_INSUFFICIENT_RESOURCES` if the run's own tables cannot be
/// allocated, `STATUS_CANCELLED` if the request was cancelled already.
pub(crate) fn start<P: SspiProvider, K: Platform, R: Request>(
    launch: Launch<P, K, R>,
    plan: SelftestRequest,
    mut request: R,
    at: &Passive,
) {
    let Launch {
        provider,
        platform,
        limits,
        gate,
        device_stats,
        file,
        serial,
    } = launch;
    let both = plan.protocols == proto::ALL;
    let client_protocols: &[u32] = if both {
        &[proto::TLS12, proto::TLS13]
    } else {
        core::slice::from_ref(&plan.protocols)
    };
    // Sized by the request: through the fallible path.
    let at_once = plan.concurrency.min(plan.count) as usize;
    let handshakes = plan.count as usize * rounds(&plan) as usize;
    let tables = (
        reserve_vec::<Action<P, K>, K>(&platform, at_once * 2 + 4),
        reserve_vec::<u64, K>(&platform, handshakes),
        reserve_vec::<Arc<Pair<P, K>>, K>(&platform, at_once),
    );
    let (Ok(actions), Ok(latencies), Ok(active)) = tables else {
        return request.complete(STATUS_INSUFFICIENT_RESOURCES, &[]);
    };
    let run = Arc::new(Run {
        t0: platform.now_us(),
        provider: provider.clone(),
        platform: platform.clone(),
        plan,
        limits,
        stats: Arc::default(),
        device_stats,
        creds: SpinLock::new(Creds {
            server: None,
            clients: Vec::with_capacity(2),
        }),
        request: SpinLock::new(Pended {
            request: None,
            cancelled: false,
        }),
        serial,
        actions: SpinLock::new(VecDeque::from(actions)),
        pumping: AtomicBool::new(false),
        progress: SpinLock::new(Progress::default()),
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        steps: AtomicU64::new(0),
        sessions: AtomicU64::new(0),
        bytes_checked: AtomicU64::new(0),
        latencies: SpinLock::new(latencies),
        resumption: Default::default(),
        acquisitions_left: AtomicU32::new(1 + client_protocols.len() as u32),
        acquisition_failed: AtomicU32::new(0),
        active: SpinLock::new(active),
        gate: gate.clone(),
    });
    let busy = {
        let mut slot = gate.run.lock(&platform);
        let busy = slot.is_some();
        if !busy {
            *slot = Some(run.clone());
        }
        busy
    };
    if busy {
        return request.complete(STATUS_DEVICE_BUSY, &[]);
    }
    // Pend it under the run's lock, so a cancel routine that runs at once
    // finds it there.
    let refused = {
        let mut pended = run.request.lock(&platform);
        let key = PendKey {
            file,
            session: SELFTEST_SESSION,
            serial,
        };
        if request.pend(key) {
            pended.request = Some(request);
            None
        } else {
            Some(request)
        }
    };
    if let Some(request) = refused {
        let me = gate.run.lock(&platform).take();
        drop(me);
        return request.complete(STATUS_CANCELLED, &[]);
    }
    let acquisitions = core::iter::once((true, plan.protocols))
        .chain(client_protocols.iter().map(|&p| (false, p)));
    for (server, allowed) in acquisitions {
        let spec = if server {
            CredentialSpec::Server {
                thumbprint: plan.thumbprint,
                store: String::from("MY"),
                machine: true,
                disabled_protocols: disabled_protocols(allowed, true),
                reconnects: true,
            }
        } else {
            // The self-test checks the handshake machinery, not the PKI: the
            // client does not validate the server's certificate.
            CredentialSpec::Client {
                disabled_protocols: disabled_protocols(allowed, false),
                manual_validation: true,
                certificate: None,
            }
        };
        let weak = Arc::downgrade(&run);
        let done = Box::new(move |result: Result<Arc<Credentials<P>>, SecStatus>| {
            if let Some(run) = weak.upgrade() {
                run.acquired(server, result);
            }
        });
        if let Err(status) = acquire_credentials(
            provider.clone(),
            platform.clone(),
            &spec,
            Arc::default(),
            done,
            at,
        ) {
            run.acquired(server, Err(status));
        }
    }
}

impl<P: SspiProvider, K: Platform, R: Request> Run<P, K, R> {
    fn acquired(self: &Arc<Self>, server: bool, result: Result<Arc<Credentials<P>>, SecStatus>) {
        match result {
            Ok(c) => {
                let mut creds = self.creds.lock(&self.platform);
                if server {
                    creds.server = Some(c);
                } else {
                    creds.clients.push(c);
                }
            }
            Err(_) => {
                self.acquisition_failed.fetch_add(1, Ordering::AcqRel);
            }
        }
        if self.acquisitions_left.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        if self.acquisition_failed.load(Ordering::Acquire) > 0 {
            // No credentials, no handshake: every one of them failed.
            self.failed.store(
                u64::from(self.plan.count) * u64::from(rounds(&self.plan)),
                Ordering::Relaxed,
            );
            {
                let mut p = self.progress.lock(&self.platform);
                p.ready = true;
                p.finished = true;
            }
            return self.finish_run();
        }
        let first = {
            let mut p = self.progress.lock(&self.platform);
            p.ready = true;
            if p.cancelled {
                0
            } else {
                self.plan.concurrency.min(self.plan.count)
            }
        };
        if first == 0 {
            return self.settle(); // cancelled while acquiring
        }
        {
            let mut actions = self.actions.lock(&self.platform);
            for _ in 0..first {
                actions.push_back(Action::Start);
            }
        }
        self.pump();
    }

    /// The cancel routine, for the request pended with `serial` (at up to
    /// DISPATCH_LEVEL): no handshake starts from now on; the run completes
    /// the request with `STATUS_CANCELLED` once the ones in flight are over.
    fn cancel(&self, serial: u64) -> bool {
        {
            let mut pended = self.request.lock(&self.platform);
            if self.serial != serial || pended.request.is_none() || pended.cancelled {
                return false;
            }
            pended.cancelled = true;
        }
        self.progress.lock(&self.platform).cancelled = true;
        // The run ends from its own continuations, at PASSIVE_LEVEL: with
        // handshakes in flight, when the last one ends; while its credentials
        // are acquired, when they are in; otherwise a start queued already
        // finds it cancelled.
        true
    }

    /// End the run if nothing is in flight and nothing more will start.
    fn settle(self: &Arc<Self>) {
        let over = {
            let mut p = self.progress.lock(&self.platform);
            let over = !p.finished
                && p.ready
                && p.live == 0
                && (p.cancelled || p.ended >= self.plan.count);
            p.finished |= over;
            over
        };
        if over {
            self.finish_run();
        }
    }

    /// Drain the action queue, unless another frame already is.
    fn pump(self: &Arc<Self>) {
        loop {
            if self.pumping.swap(true, Ordering::AcqRel) {
                return; // the pumping frame will see our actions
            }
            loop {
                let action = self.actions.lock(&self.platform).pop_front();
                match action {
                    Some(Action::Start) => self.start_pair(),
                    Some(Action::Again(index)) => self.open_round(index, 1),
                    Some(Action::Feed(pair, side)) => self.feed(&pair, side),
                    Some(Action::Send(pair, side)) => self.send(&pair, side),
                    Some(Action::Open(pair, side)) => self.open(&pair, side),
                    Some(Action::Shut(pair, side)) => self.shut(&pair, side),
                    None => break,
                }
            }
            self.pumping.store(false, Ordering::Release);
            // An action queued between our last pop and the release would be
            // stranded: look once more.
            if self.actions.lock(&self.platform).is_empty() {
                return;
            }
        }
    }

    fn queue(self: &Arc<Self>, action: Action<P, K>) {
        self.actions.lock(&self.platform).push_back(action);
        self.pump();
    }

    fn start_pair(self: &Arc<Self>) {
        let index = {
            let mut p = self.progress.lock(&self.platform);
            if p.cancelled || p.finished || p.started >= self.plan.count {
                None
            } else {
                p.started += 1;
                p.live += 1;
                Some(p.started - 1)
            }
        };
        let Some(index) = index else {
            return self.settle();
        };
        self.open_round(index, 0);
    }

    /// Open pair `index`'s handshake number `round` (0, or 1 in a resume
    /// run) and take the client's first step. What cannot start counts as
    /// failed with the pair's later handshakes, and ends the pair.
    fn open_round(self: &Arc<Self>, index: u32, round: u32) {
        let left = u64::from(rounds(&self.plan) - round);
        // A second handshake is a new one: a cancel stops it from starting.
        if round > 0 && self.progress.lock(&self.platform).cancelled {
            return self.slot_ended(left);
        }
        let Some(at) = Passive::check(self.provider.current_irql()) else {
            return self.slot_ended(left);
        };
        let (server_cred, client_cred) = {
            let creds = self.creds.lock(&self.platform);
            let client = creds
                .clients
                .get(index as usize % creds.clients.len().max(1))
                .cloned();
            (creds.server.clone(), client)
        };
        let (Some(server_cred), Some(client_cred)) = (server_cred, client_cred) else {
            return self.slot_ended(left);
        };
        // The pair's scratch; under low resources the pair fails cleanly.
        // The inboxes start empty and grow to need ([`Run::deliver`]).
        let Ok(scratch) = zeroed_buffer(&self.platform, CHUNK.min(self.plan.bytes as usize)) else {
            return self.slot_ended(left);
        };
        // A resume run's client names a target of its own, which its
        // credentials' session cache is keyed by; otherwise none (nothing
        // to resume, as before resumption could be asked for).
        let target = if self.plan.resume {
            match target_name(&self.platform, index) {
                Some(name) => Some(name),
                None => return self.slot_ended(left),
            }
        } else {
            None
        };
        let (server_inbox, client_inbox) = (Vec::new(), Vec::new());
        let side = |inbox| SideState {
            session: None,
            inbox,
            outcome: None,
            record: None,
        };
        let pair = Arc::new(Pair {
            index,
            round,
            succeeded: AtomicBool::new(false),
            started_us: self.platform.now_us(),
            server: SpinLock::new(side(server_inbox)),
            client: SpinLock::new(side(client_inbox)),
            data: SpinLock::new(DataState {
                stage: Stage::Handshake,
                sent: [0; 2],
                received: [0; 2],
                bad: false,
                scratch,
            }),
            finished: AtomicBool::new(false),
            sides_closed: AtomicU32::new(0),
        });
        self.active.lock(&self.platform).push(pair.clone());
        for (which, role, cred) in [
            (Side::Server, Role::Server, server_cred),
            (Side::Client, Role::Client { target }, client_cred),
        ] {
            let events: Arc<dyn SessionEvents> = Arc::new(PairEvents {
                run: Arc::downgrade(self),
                pair: Arc::downgrade(&pair),
                side: which,
            });
            let setup = SessionSetup {
                role,
                credentials: cred,
                limits: self.limits,
                client_certificates: Default::default(),
                alpn: None,
                events,
            };
            match Session::new(
                self.provider.clone(),
                self.platform.clone(),
                setup,
                self.stats.clone(),
                &at,
            ) {
                Ok(s) => {
                    self.sessions.fetch_add(1, Ordering::Relaxed);
                    self.side(&pair, which).lock(&self.platform).session = Some(Arc::new(s));
                }
                Err(_) => {
                    self.close_pair(&pair, false);
                    return;
                }
            }
        }
        self.queue(Action::Feed(pair, Side::Client));
    }

    fn side<'a>(&self, pair: &'a Pair<P, K>, side: Side) -> &'a SpinLock<SideState<P, K>> {
        match side {
            Side::Server => &pair.server,
            Side::Client => &pair.client,
        }
    }

    /// Step `side` with its inbox (empty for the client's first step).
    fn feed(self: &Arc<Self>, pair: &Arc<Pair<P, K>>, side: Side) {
        self.steps.fetch_add(1, Ordering::Relaxed);
        self.with_inbox(pair, side, |session, input, at| {
            session.step(input, at).is_ok()
        });
    }

    /// Called by a side's `step_ready`: decide the pair's next move.
    fn stepped(self: &Arc<Self>, pair: &Arc<Pair<P, K>>, side: Side) {
        if pair.data.lock(&self.platform).stage != Stage::Handshake {
            return self.record_ready(pair, side);
        }
        let peer = side.peer();
        let (mine, peer_outcome, has_output) = {
            let me = self.side(pair, side).lock(&self.platform).outcome;
            let other = self.side(pair, peer).lock(&self.platform);
            (me, other.outcome, !other.inbox.is_empty())
        };
        match mine {
            Some(Outcome::Failed(_)) => self.close_pair(pair, false),
            Some(Outcome::Established) if matches!(peer_outcome, Some(Outcome::Established)) => {
                if self.plan.bytes == 0 {
                    // A resume run's first handshake: what the server sent
                    // after it (TLS 1.3 tickets) waits in the client's inbox;
                    // the client must decrypt it, or its second handshake
                    // has no ticket to offer.
                    let tickets = self.plan.resume
                        && pair.round == 0
                        && !pair.client.lock(&self.platform).inbox.is_empty();
                    if tickets {
                        pair.data.lock(&self.platform).stage = Stage::Tickets;
                        return self.queue(Action::Open(pair.clone(), Side::Client));
                    }
                    return self.close_pair(pair, true);
                }
                pair.data.lock(&self.platform).stage = Stage::Exchange;
                self.exchange_next(pair);
            }
            _ if has_output
                && !matches!(
                    peer_outcome,
                    Some(Outcome::Established | Outcome::Failed(_))
                ) =>
            {
                self.queue(Action::Feed(pair.clone(), peer))
            }
            // Nothing to hand over and not done: stuck (cannot happen with
            // whole flights in memory); fail rather than hang.
            _ => self.close_pair(pair, false),
        }
    }

    /// The record layer's next turn: the side that has sent less sends; once
    /// both have received everything, the client shuts down.
    fn exchange_next(self: &Arc<Self>, pair: &Arc<Pair<P, K>>) {
        let n = u64::from(self.plan.bytes);
        let next = {
            let mut d = pair.data.lock(&self.platform);
            let (c, s) = (Side::Client.index(), Side::Server.index());
            if d.bad {
                None
            } else if d.received[c] >= n && d.received[s] >= n {
                d.stage = Stage::Closing;
                Some(Action::Shut(pair.clone(), Side::Client))
            } else if d.sent[c] < n && d.sent[c] <= d.sent[s] {
                Some(Action::Send(pair.clone(), Side::Client))
            } else if d.sent[s] < n {
                Some(Action::Send(pair.clone(), Side::Server))
            } else {
                None // everything sent, not everything received: lost bytes
            }
        };
        match next {
            Some(action) => self.queue(action),
            None => self.close_pair(pair, false),
        }
    }

    /// A decrypt or shutdown of `side` reported: check it, move on.
    fn record_ready(self: &Arc<Self>, pair: &Arc<Pair<P, K>>, side: Side) {
        let record = self.side(pair, side).lock(&self.platform).record.take();
        let (stage, done) = {
            let d = pair.data.lock(&self.platform);
            let n = u64::from(self.plan.bytes);
            (d.stage, !d.bad && d.received.iter().all(|&r| r == n))
        };
        match (stage, side, record) {
            (Stage::Exchange, _, Some(RecordOutcome::Data { missing: 0 })) => {
                self.exchange_next(pair)
            }
            // The tickets are in (no application data may come with them).
            (Stage::Tickets, Side::Client, Some(RecordOutcome::Data { missing: 0 })) => {
                self.close_pair(pair, done)
            }
            (Stage::Closing, Side::Client, Some(RecordOutcome::ShutDown)) => {
                self.queue(Action::Open(pair.clone(), Side::Server))
            }
            (Stage::Closing, Side::Server, Some(RecordOutcome::PeerClosed)) => {
                self.close_pair(pair, done)
            }
            _ => self.close_pair(pair, false),
        }
    }

    /// Encrypt `side`'s next chunk straight into its peer's inbox, then have
    /// the peer decrypt it.
    fn send(self: &Arc<Self>, pair: &Arc<Pair<P, K>>, side: Side) {
        let Some(at) = Passive::check(self.provider.current_irql()) else {
            return self.close_pair(pair, false);
        };
        let session = self.side(pair, side).lock(&self.platform).session.clone();
        let Some(session) = session else {
            return self.close_pair(pair, false);
        };
        let (mut scratch, offset) = {
            let mut d = pair.data.lock(&self.platform);
            (core::mem::take(&mut d.scratch), d.sent[side.index()])
        };
        let chunk = scratch
            .len()
            .min((u64::from(self.plan.bytes) - offset) as usize);
        for (i, b) in scratch[..chunk].iter_mut().enumerate() {
            *b = pattern(self.plan.seed, pair.index, side, offset + i as u64);
        }
        let peer = self.side(pair, side.peer());
        let mut inbox = core::mem::take(&mut peer.lock(&self.platform).inbox);
        let start = inbox.len();
        let sealed = session
            .sealed_len(chunk)
            .filter(|&need| self.room(&mut inbox, start + need))
            .and_then(|need| {
                inbox.resize(start + need, 0); // within capacity: no allocation
                session
                    .encrypt(&scratch[..chunk], &mut inbox[start..], &at)
                    .ok()
                    .map(|sealed| sealed.len)
            });
        inbox.truncate(start + sealed.unwrap_or(0));
        peer.lock(&self.platform).inbox = inbox;
        {
            let mut d = pair.data.lock(&self.platform);
            d.scratch = scratch;
            d.sent[side.index()] += chunk as u64;
        }
        match sealed {
            Some(_) => self.queue(Action::Open(pair.clone(), side.peer())),
            None => self.close_pair(pair, false),
        }
    }

    /// Room for `need` bytes in an inbox (its bytes kept): grown, at least
    /// doubling, up to the larger of the session limits' input and output
    /// (what a step's output or a peer's input may be), through the
    /// platform's fallible path; false if it cannot be (too much, or the
    /// pool is short). Called outside every lock: the inbox is taken out.
    fn room(&self, inbox: &mut Vec<u8>, need: usize) -> bool {
        if need <= inbox.capacity() {
            return true;
        }
        let limit = self.limits.max_input.max(self.limits.max_output);
        if need > limit {
            return false;
        }
        let size = need
            .max(inbox.capacity().saturating_mul(2))
            .max(4096)
            .min(limit);
        match self.platform.reserve(size) {
            Ok(mut grown) => {
                grown.extend_from_slice(inbox); // within capacity
                *inbox = grown;
                true
            }
            Err(_) => false,
        }
    }

    /// Append `bytes` to `side`'s inbox, growing it outside the lock (the
    /// side's peer, which writes it, is the only writer meanwhile); false
    /// if it cannot take them (nothing is appended then).
    fn deliver(&self, pair: &Pair<P, K>, side: Side, bytes: &[u8]) -> bool {
        if bytes.is_empty() {
            return true;
        }
        let lock = self.side(pair, side);
        let mut inbox = core::mem::take(&mut lock.lock(&self.platform).inbox);
        let need = inbox.len() + bytes.len();
        let ok = self.room(&mut inbox, need);
        if ok {
            inbox.extend_from_slice(bytes); // within capacity
        }
        lock.lock(&self.platform).inbox = inbox;
        ok
    }

    /// Decrypt `side`'s inbox.
    fn open(self: &Arc<Self>, pair: &Arc<Pair<P, K>>, side: Side) {
        self.with_inbox(pair, side, |session, input, at| {
            session.decrypt(input, at).is_ok()
        });
    }

    fn shut(self: &Arc<Self>, pair: &Arc<Pair<P, K>>, side: Side) {
        let Some(at) = Passive::check(self.provider.current_irql()) else {
            return self.close_pair(pair, false);
        };
        let session = self.side(pair, side).lock(&self.platform).session.clone();
        if session.is_none_or(|s| s.shutdown(&at).is_err()) {
            self.close_pair(pair, false);
        }
    }

    /// Hand `side`'s inbox to `call` (a step or a decrypt) without holding
    /// the lock (the call may run to completion inline), then give the
    /// inbox's buffer back; a refused call ends the pair.
    fn with_inbox(
        self: &Arc<Self>,
        pair: &Arc<Pair<P, K>>,
        side: Side,
        call: impl FnOnce(&Session<P, K>, &[u8], &Passive) -> bool,
    ) {
        let Some(at) = Passive::check(self.provider.current_irql()) else {
            return self.close_pair(pair, false);
        };
        let lock = self.side(pair, side);
        let (mut input, session) = {
            let mut st = lock.lock(&self.platform);
            (core::mem::take(&mut st.inbox), st.session.clone())
        };
        let ok = session.is_none_or(|s| call(&s, &input, &at));
        // The peer writes into the other inbox, never this one meanwhile.
        input.clear();
        lock.lock(&self.platform).inbox = input;
        if !ok {
            self.close_pair(pair, false);
        }
    }

    fn close_pair(self: &Arc<Self>, pair: &Arc<Pair<P, K>>, ok: bool) {
        if pair.finished.swap(true, Ordering::AcqRel) {
            return;
        }
        if ok {
            pair.succeeded.store(true, Ordering::Release);
            self.ok.fetch_add(1, Ordering::Relaxed);
            let latency = self.platform.now_us().saturating_sub(pair.started_us);
            self.latencies.lock(&self.platform).push(latency);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        for side in [Side::Server, Side::Client] {
            let session = self.side(pair, side).lock(&self.platform).session.take();
            match session {
                // `closed` reports the side gone, once its calls are over.
                Some(s) => s.close(),
                None => self.side_closed(pair, side),
            }
        }
    }

    fn side_closed(self: &Arc<Self>, pair: &Arc<Pair<P, K>>, _side: Side) {
        // One atomic step decides which side's close is the second.
        if pair.sides_closed.fetch_add(1, Ordering::AcqRel) == 1 {
            self.handshake_closed(pair);
        }
    }

    /// Both sessions of `pair`'s handshake are gone ([`Run::close_pair`]
    /// counted it): a resume run's first handshake that succeeded goes on
    /// with the second, unless a cancel came; otherwise the pair is over.
    fn handshake_closed(self: &Arc<Self>, pair: &Arc<Pair<P, K>>) {
        let gone = {
            let mut active = self.active.lock(&self.platform);
            let at = active.iter().position(|p| Arc::ptr_eq(p, pair));
            at.map(|i| active.swap_remove(i))
        };
        drop(gone); // outside the lock
        let later = u64::from(rounds(&self.plan) - pair.round - 1);
        if later > 0
            && pair.succeeded.load(Ordering::Acquire)
            && !self.progress.lock(&self.platform).cancelled
        {
            // The pair keeps its place (still live): no new pair starts.
            return self.queue(Action::Again(pair.index));
        }
        self.slot_ended(later);
    }

    /// A pair is over; `uncounted` of its handshakes never ran and count as
    /// failed. The next pair starts, or the run settles.
    fn slot_ended(self: &Arc<Self>, uncounted: u64) {
        if uncounted > 0 {
            self.failed.fetch_add(uncounted, Ordering::Relaxed);
        }
        let next = {
            let mut p = self.progress.lock(&self.platform);
            p.live -= 1;
            p.ended += 1;
            !p.cancelled && p.started < self.plan.count
        };
        if next {
            self.queue(Action::Start);
        } else {
            self.settle();
        }
    }

    fn finish_run(self: &Arc<Self>) {
        let (request, cancelled) = {
            let mut pended = self.request.lock(&self.platform);
            (pended.request.take(), pended.cancelled)
        };
        let Some(request) = request else {
            return;
        };
        let s = &self.stats;
        self.device_stats.absorb(s);
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (p50, p99, max) = {
            let mut lat = self.latencies.lock(&self.platform);
            let n = lat.len();
            if n == 0 {
                (0, 0, 0)
            } else {
                lat.sort_unstable();
                (
                    lat[(n - 1) / 2],
                    lat[((n * 99).div_ceil(100)).max(1) - 1],
                    lat[n - 1],
                )
            }
        };
        let resumption = self.plan.resume.then(|| {
            let [resumed, full, unknown, first_resumed] = self.resumption.each_ref().map(l);
            SelftestResumption {
                resumed,
                full,
                unknown,
                first_resumed,
            }
        });
        let reply = SelftestReply {
            // Only when asked (the version rule): an older harness reads the
            // reply it knows.
            resumption,
            handshakes_ok: l(&self.ok),
            handshakes_failed: l(&self.failed),
            sessions: l(&self.sessions),
            async_contexts_created: l(&s.async_contexts),
            reinits: l(&s.reinits),
            steps: l(&self.steps),
            completions_pending: l(&s.issuer_first),
            completions_inline_callback: l(&s.callback_first),
            completions_sync_no_callback: l(&s.completed_sync),
            callbacks_passive: l(&s.callbacks_passive),
            callbacks_dispatch: l(&s.callbacks_dispatch),
            work_items: l(&s.work_items),
            elapsed_us: self.platform.now_us().saturating_sub(self.t0),
            latency_p50_us: p50,
            latency_p99_us: p99,
            latency_max_us: max,
            leaked: 0,
            bytes_checked: l(&self.bytes_checked),
        };
        // Release the run's credentials (the sessions are gone).
        let creds = {
            let mut c = self.creds.lock(&self.platform);
            (c.server.take(), core::mem::take(&mut c.clients))
        };
        if let Some(at) = Passive::check(self.provider.current_irql()) {
            for cred in creds.0.into_iter().chain(creds.1) {
                if let Ok(cred) = Arc::try_unwrap(cred) {
                    let _ = release_credentials(
                        self.provider.clone(),
                        self.platform.clone(),
                        cred,
                        Arc::default(),
                        Box::new(|_| {}),
                        &at,
                    );
                }
            }
        }
        // Free the device's slot first: the caller the completion wakes may
        // start the next self-test at once. (The caller of this function
        // holds the run, so this is not its last reference.)
        let me = self.gate.run.lock(&self.platform).take();
        drop(me);
        let stopped = self.progress.lock(&self.platform).stopped;
        if cancelled {
            request.cancelled();
        } else if stopped {
            request.complete(STATUS_CANCELLED, &[]);
        } else {
            complete_with(request, &reply);
        }
    }
}

/// Handshakes per pair: two in a resume run, one otherwise.
fn rounds(plan: &SelftestRequest) -> u32 {
    if plan.resume {
        2
    } else {
        1
    }
}

impl<P: SspiProvider, K: Platform, R: Request> Run<P, K, R> {
    /// A resume run's client established handshake `round` of its pair and
    /// the provider told (or not) whether it resumed.
    fn count_resumption(&self, round: u32, resumed: Resumed) {
        let [second_resumed, second_full, unknown, first_resumed] = &self.resumption;
        let counter = match (round, resumed) {
            (_, Resumed::Unknown) => unknown,
            (0, Resumed::Yes) => first_resumed,
            (0, Resumed::No) => return, // the expected first handshake
            (_, Resumed::Yes) => second_resumed,
            (_, Resumed::No) => second_full,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A pair side's session events.
struct PairEvents<P: SspiProvider, K: Platform, R: Request> {
    run: Weak<Run<P, K, R>>,
    pair: Weak<Pair<P, K>>,
    side: Side,
}

impl<P: SspiProvider, K: Platform, R: Request> SessionEvents for PairEvents<P, K, R> {
    fn step_done(&self, report: &StepReport<'_>) {
        let (Some(run), Some(pair)) = (self.run.upgrade(), self.pair.upgrade()) else {
            return;
        };
        run.side(&pair, self.side).lock(&run.platform).outcome = Some(report.outcome);
        if run.plan.resume && self.side == Side::Client && report.outcome == Outcome::Established {
            run.count_resumption(pair.round, report.resumed);
        }
        // The output goes to the peer's inbox (grown to need; if it cannot
        // take it, the pair finds nothing to hand over and fails).
        if !matches!(report.outcome, Outcome::Failed(_)) {
            let _ = run.deliver(&pair, self.side.peer(), report.output);
        }
    }

    fn record_done(&self, report: &RecordReport<'_>) {
        let (Some(run), Some(pair)) = (self.run.upgrade(), self.pair.upgrade()) else {
            return;
        };
        // Check every byte against what the peer sent, outside any lock.
        let offset = pair.data.lock(&run.platform).received[self.side.index()];
        let sender = self.side.peer();
        let good = report
            .data
            .iter()
            .enumerate()
            .all(|(i, &b)| b == pattern(run.plan.seed, pair.index, sender, offset + i as u64));
        {
            let mut d = pair.data.lock(&run.platform);
            d.received[self.side.index()] += report.data.len() as u64;
            d.bad |= !good;
        }
        if good {
            run.bytes_checked
                .fetch_add(report.data.len() as u64, Ordering::Relaxed);
        }
        run.side(&pair, self.side).lock(&run.platform).record = Some(report.outcome);
        // close_notify, or an answer to a post-handshake message, goes to the peer.
        if !run.deliver(&pair, sender, report.output) {
            pair.data.lock(&run.platform).bad = true;
        }
    }

    fn step_ready(&self) {
        if let (Some(run), Some(pair)) = (self.run.upgrade(), self.pair.upgrade()) {
            run.stepped(&pair, self.side);
        }
    }

    fn closed(&self) {
        if let (Some(run), Some(pair)) = (self.run.upgrade(), self.pair.upgrade()) {
            run.side_closed(&pair, self.side);
        }
    }
}
