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

use crate::device::{complete_with, disabled_protocols, Request};
use crate::lock::SpinLock;
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use ksspi::engine::{
    acquire_credentials, release_credentials, CredentialSpec, EngineStats, Limits, Outcome,
    Platform, Role, Session, SessionEvents, SessionSetup, StepReport,
};
use ksspi::handle::Credentials;
use ksspi::provider::SspiProvider;
use ksspi::{Passive, SecStatus};
use ksspi_abi::{proto, SelftestReply, SelftestRequest};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Server,
    Client,
}

enum Action<P: SspiProvider, K: Platform> {
    /// Open the next handshake's two sessions and take the client's first step.
    Start,
    /// Step `side` of `pair` with the bytes in its inbox.
    Feed(Arc<Pair<P, K>>, Side),
}

struct SideState<P: SspiProvider, K: Platform> {
    session: Option<Arc<Session<P, K>>>,
    /// Bytes from the peer, waiting for this side's next step.
    inbox: Vec<u8>,
    outcome: Option<Outcome>,
}

struct Pair<P: SspiProvider, K: Platform> {
    started_us: u64,
    server: SpinLock<SideState<P, K>>,
    client: SpinLock<SideState<P, K>>,
    finished: AtomicBool,
    sides_closed: AtomicU32,
}

struct Creds<P: SspiProvider> {
    server: Option<Arc<Credentials<P>>>,
    clients: Vec<Arc<Credentials<P>>>,
}

/// One self-test run.
pub(crate) struct Run<P: SspiProvider, K: Platform, R: Request> {
    provider: P,
    platform: K,
    plan: SelftestRequest,
    limits: Limits,
    /// The handshake sessions' counters (their async contexts only).
    stats: Arc<EngineStats>,
    creds: SpinLock<Creds<P>>,
    request: SpinLock<Option<R>>,
    actions: SpinLock<VecDeque<Action<P, K>>>,
    pumping: AtomicBool,
    started: AtomicU32,
    ended: AtomicU32,
    ok: AtomicU64,
    failed: AtomicU64,
    steps: AtomicU64,
    sessions: AtomicU64,
    latencies: SpinLock<Vec<u64>>,
    t0: u64,
    acquisitions_left: AtomicU32,
    acquisition_failed: AtomicU32,
    /// The handshakes under way (their sessions' events hold them weakly).
    active: SpinLock<Vec<Arc<Pair<P, K>>>>,
    /// The run holds itself until it has completed its request.
    keepalive: SpinLock<Option<Arc<Run<P, K, R>>>>,
}

/// Start a self-test; `request` completes when it ends.
pub(crate) fn start<P: SspiProvider, K: Platform, R: Request>(
    provider: P,
    platform: K,
    plan: SelftestRequest,
    limits: Limits,
    request: R,
    at: &Passive,
) {
    let both = plan.protocols == proto::ALL;
    let client_protocols: Vec<u32> = if both {
        [proto::TLS12, proto::TLS13].into()
    } else {
        [plan.protocols].into()
    };
    let count = plan.count as usize;
    let run = Arc::new(Run {
        t0: platform.now_us(),
        provider: provider.clone(),
        platform: platform.clone(),
        plan,
        limits,
        stats: Arc::default(),
        creds: SpinLock::new(Creds {
            server: None,
            clients: Vec::with_capacity(2),
        }),
        request: SpinLock::new(Some(request)),
        actions: SpinLock::new(VecDeque::with_capacity(plan.concurrency as usize * 2 + 4)),
        pumping: AtomicBool::new(false),
        started: AtomicU32::new(0),
        ended: AtomicU32::new(0),
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        steps: AtomicU64::new(0),
        sessions: AtomicU64::new(0),
        latencies: SpinLock::new(Vec::with_capacity(count)),
        acquisitions_left: AtomicU32::new(1 + client_protocols.len() as u32),
        acquisition_failed: AtomicU32::new(0),
        keepalive: SpinLock::new(None),
        active: SpinLock::new(Vec::with_capacity(plan.concurrency as usize)),
    });
    *run.keepalive.lock(&platform) = Some(run.clone());
    let acquisitions = core::iter::once((true, plan.protocols))
        .chain(client_protocols.into_iter().map(|p| (false, p)));
    for (server, allowed) in acquisitions {
        let spec = if server {
            CredentialSpec::Server {
                thumbprint: plan.thumbprint,
                store: String::from("MY"),
                machine: true,
                disabled_protocols: disabled_protocols(allowed, true),
            }
        } else {
            // The self-test checks the handshake machinery, not the PKI: the
            // client does not validate the server's certificate.
            CredentialSpec::Client {
                disabled_protocols: disabled_protocols(allowed, false),
                manual_validation: true,
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
            self.failed
                .store(u64::from(self.plan.count), Ordering::Relaxed);
            return self.finish_run();
        }
        let first = self.plan.concurrency.min(self.plan.count);
        {
            let mut actions = self.actions.lock(&self.platform);
            for _ in 0..first {
                actions.push_back(Action::Start);
            }
        }
        self.pump();
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
                    Some(Action::Feed(pair, side)) => self.feed(&pair, side),
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
        let index = self.started.fetch_add(1, Ordering::AcqRel);
        if index >= self.plan.count {
            return;
        }
        let Some(at) = Passive::check(self.provider.current_irql()) else {
            return self.pair_ended(None, false);
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
            return self.pair_ended(None, false);
        };
        let side = || SideState {
            session: None,
            inbox: Vec::with_capacity(self.limits.max_output),
            outcome: None,
        };
        let pair = Arc::new(Pair {
            started_us: self.platform.now_us(),
            server: SpinLock::new(side()),
            client: SpinLock::new(side()),
            finished: AtomicBool::new(false),
            sides_closed: AtomicU32::new(0),
        });
        self.active.lock(&self.platform).push(pair.clone());
        for (which, role, cred) in [
            (Side::Server, Role::Server, server_cred),
            (Side::Client, Role::Client { target: None }, client_cred),
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
        let Some(at) = Passive::check(self.provider.current_irql()) else {
            return self.close_pair(pair, false);
        };
        let lock = self.side(pair, side);
        let input = core::mem::take(&mut lock.lock(&self.platform).inbox);
        self.steps.fetch_add(1, Ordering::Relaxed);
        // The session lives in the side's state; step it without holding the
        // lock (a step may run to completion inline).
        let session = lock.lock(&self.platform).session.clone();
        let result = match session {
            // Stepped without the lock held: a step may run to completion inline.
            Some(session) => session.step(&input, &at),
            None => Ok(()),
        };
        // Give the inbox's buffer back (the peer writes into the other one).
        let mut input = input;
        input.clear();
        lock.lock(&self.platform).inbox = input;
        if result.is_err() {
            self.close_pair(pair, false);
        }
    }

    /// Called by a side's `step_ready`: decide the pair's next move.
    fn stepped(self: &Arc<Self>, pair: &Arc<Pair<P, K>>, side: Side) {
        let peer = if side == Side::Server {
            Side::Client
        } else {
            Side::Server
        };
        let (mine, peer_outcome, has_output) = {
            let me = self.side(pair, side).lock(&self.platform).outcome;
            let other = self.side(pair, peer).lock(&self.platform);
            (me, other.outcome, !other.inbox.is_empty())
        };
        match mine {
            Some(Outcome::Failed(_)) => self.close_pair(pair, false),
            Some(Outcome::Established) if matches!(peer_outcome, Some(Outcome::Established)) => {
                self.close_pair(pair, true)
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

    fn close_pair(self: &Arc<Self>, pair: &Arc<Pair<P, K>>, ok: bool) {
        if pair.finished.swap(true, Ordering::AcqRel) {
            return;
        }
        if ok {
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
            self.pair_ended(Some(pair), true);
        }
    }

    fn pair_ended(self: &Arc<Self>, pair: Option<&Arc<Pair<P, K>>>, counted: bool) {
        // `counted`: close_pair already counted it ok or failed.
        if let Some(pair) = pair {
            let gone = {
                let mut active = self.active.lock(&self.platform);
                let at = active.iter().position(|p| Arc::ptr_eq(p, pair));
                at.map(|i| active.swap_remove(i))
            };
            drop(gone); // outside the lock
        }
        if !counted {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        let ended = self.ended.fetch_add(1, Ordering::AcqRel) + 1;
        if ended >= self.plan.count {
            self.finish_run();
        } else if self.started.load(Ordering::Acquire) < self.plan.count {
            self.queue(Action::Start);
        }
    }

    fn finish_run(self: &Arc<Self>) {
        let Some(request) = self.request.lock(&self.platform).take() else {
            return;
        };
        let s = &self.stats;
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
        let reply = SelftestReply {
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
            bytes_checked: 0,
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
        complete_with(request, &reply);
        // Let go of ourselves (dropped after the lock is released).
        let me = self.keepalive.lock(&self.platform).take();
        drop(me);
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
        // The output goes to the peer's inbox (allocated at setup, big enough).
        let peer = if self.side == Side::Server {
            Side::Client
        } else {
            Side::Server
        };
        let mut other = run.side(&pair, peer).lock(&run.platform);
        if !matches!(report.outcome, Outcome::Failed(_))
            && other.inbox.len() + report.output.len() <= other.inbox.capacity()
        {
            other.inbox.extend_from_slice(report.output);
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
