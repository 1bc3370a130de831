//! Driving engine sessions from a test or a fuzz target: events land in a
//! queue the calling thread waits on (a test-side wait at PASSIVE, never the
//! driver's). A session that does not report within 20 s is a bug and panics.

use crate::certs::{CertStore, TestPki, Thumbprint};
use crate::{SimConfig, SimPlatform, SimProvider};
use ksspi::alpn::ApplicationProtocols;
use ksspi::engine::{
    CredentialSpec, EngineStats, Limits, Outcome, RecordOutcome, RecordReport, Role, Session,
    SessionEvents, SessionSetup, StepError, StepReport,
};
use ksspi::handle::Credentials;
use ksspi::{Irql, Passive, SecStatus};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

pub type SimSession = Session<SimProvider, SimPlatform>;

pub fn passive() -> Passive {
    Passive::check(Irql::PASSIVE).expect("the test thread runs at PASSIVE")
}

/// A CA in Root and a "localhost" leaf in MY.
pub fn store() -> (Arc<CertStore>, Thumbprint, TestPki) {
    let pki = TestPki::new("ksspi engine test CA");
    let (store, thumb) = pki.store(&["localhost"]);
    (Arc::new(store), thumb, pki)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub outcome: Outcome,
    pub output: Vec<u8>,
    pub calls: u32,
}

/// A decrypt's or a shutdown's report, copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub outcome: RecordOutcome,
    pub data: Vec<u8>,
    pub output: Vec<u8>,
    pub renegotiations: u32,
    pub calls: u32,
}

#[derive(Debug)]
enum Staged {
    Step(Report),
    Record(Record),
}

/// Records what a session reports.
#[derive(Default)]
pub struct Recorder {
    staged: Mutex<Option<Staged>>,
    reports: Mutex<VecDeque<Report>>,
    records: Mutex<VecDeque<Record>>,
    cv: Condvar,
    pub closed: AtomicU32,
}

impl SessionEvents for Recorder {
    fn step_done(&self, report: &StepReport<'_>) {
        assert_eq!(
            crate::kernel::current_irql(),
            Irql::PASSIVE,
            "reported above PASSIVE"
        );
        let staged = Report {
            outcome: report.outcome,
            output: report.output.to_vec(),
            calls: report.calls,
        };
        assert!(
            self.staged
                .lock()
                .unwrap()
                .replace(Staged::Step(staged))
                .is_none(),
            "two reports without step_ready"
        );
    }

    fn record_done(&self, report: &RecordReport<'_>) {
        assert_eq!(
            crate::kernel::current_irql(),
            Irql::PASSIVE,
            "reported above PASSIVE"
        );
        let staged = Record {
            outcome: report.outcome,
            data: report.data.to_vec(),
            output: report.output.to_vec(),
            renegotiations: report.renegotiations,
            calls: report.calls,
        };
        assert!(
            self.staged
                .lock()
                .unwrap()
                .replace(Staged::Record(staged))
                .is_none(),
            "two reports without step_ready"
        );
    }

    fn step_ready(&self) {
        let staged = self
            .staged
            .lock()
            .unwrap()
            .take()
            .expect("step_ready without a report");
        // Under the reports lock, which the waiters hold.
        let mut q = self.reports.lock().unwrap();
        match staged {
            Staged::Step(r) => q.push_back(r),
            Staged::Record(r) => self.records.lock().unwrap().push_back(r),
        }
        drop(q);
        self.cv.notify_all();
    }

    fn closed(&self) {
        assert_eq!(
            crate::kernel::current_irql(),
            Irql::PASSIVE,
            "closed above PASSIVE"
        );
        // Under the queue's lock, so a waiter cannot miss the wake-up.
        let _q = self.reports.lock().unwrap();
        self.closed.fetch_add(1, Ordering::SeqCst);
        self.cv.notify_all();
    }
}

impl Recorder {
    pub fn next(&self) -> Report {
        let mut q = self.reports.lock().unwrap();
        loop {
            if let Some(r) = q.pop_front() {
                return r;
            }
            let (g, timeout) = self.cv.wait_timeout(q, Duration::from_secs(20)).unwrap();
            q = g;
            assert!(
                !timeout.timed_out() || !q.is_empty(),
                "no step report within 20 s"
            );
        }
    }

    /// The next decrypt or shutdown report.
    pub fn next_record(&self) -> Record {
        let mut q = self.reports.lock().unwrap();
        loop {
            if let Some(r) = self.records.lock().unwrap().pop_front() {
                return r;
            }
            let (g, timeout) = self.cv.wait_timeout(q, Duration::from_secs(20)).unwrap();
            q = g;
            assert!(!timeout.timed_out(), "no record report within 20 s");
        }
    }

    pub fn wait_closed(&self) {
        let mut q = self.reports.lock().unwrap();
        while self.closed.load(Ordering::SeqCst) == 0 {
            let (g, timeout) = self.cv.wait_timeout(q, Duration::from_secs(20)).unwrap();
            q = g;
            assert!(
                !timeout.timed_out() || self.closed.load(Ordering::SeqCst) > 0,
                "not closed within 20 s"
            );
        }
    }
}

/// Acquire credentials through the engine and wait for them.
pub fn acquire(
    sim: &SimProvider,
    spec: &CredentialSpec,
    stats: &Arc<EngineStats>,
) -> Result<Arc<Credentials<SimProvider>>, SecStatus> {
    crate::testing::acquire_blocking(
        sim.clone(),
        SimPlatform::new(sim),
        spec,
        stats.clone(),
        &passive(),
    )
}

pub fn server_spec(thumb: Thumbprint, disabled: u32) -> CredentialSpec {
    CredentialSpec::Server {
        thumbprint: thumb,
        store: "MY".into(),
        machine: true,
        disabled_protocols: disabled,
        reconnects: true,
    }
}

pub fn client_spec(disabled: u32) -> CredentialSpec {
    CredentialSpec::Client {
        disabled_protocols: disabled,
        manual_validation: false,
        certificate: None,
    }
}

/// A server and a client session over one model.
pub struct Pair {
    pub sim: SimProvider,
    pub stats: Arc<EngineStats>,
    pub server: SimSession,
    pub client: SimSession,
    pub server_events: Arc<Recorder>,
    pub client_events: Arc<Recorder>,
    pub creds: Vec<Arc<Credentials<SimProvider>>>,
}

impl Pair {
    pub fn new(
        sim: &SimProvider,
        thumb: Thumbprint,
        target: &str,
        (s_dis, c_dis): (u32, u32),
    ) -> Pair {
        let stats = Arc::new(EngineStats::default());
        let server_cred =
            acquire(sim, &server_spec(thumb, s_dis), &stats).expect("server credentials");
        let client_cred = acquire(sim, &client_spec(c_dis), &stats).expect("client credentials");
        Pair::from_credentials(sim, vec![server_cred, client_cred], target, stats)
            .expect("sessions")
    }

    /// Pass tokens in memory until both sides are done or neither can move;
    /// `split` feeds each flight in pieces of at most that many bytes.
    pub fn handshake(&self, split: usize) -> (Outcome, Outcome) {
        self.handshake_cut(&[split])
    }

    /// [`Pair::handshake`], cutting the flights into pieces of the sizes in
    /// `cuts`, in turn (a size of 0 counts as 1).
    pub fn handshake_cut(&self, cuts: &[usize]) -> (Outcome, Outcome) {
        let mut sizes = cuts.iter().map(|&n| n.max(1)).cycle();
        let mut pieces = move |flight: Vec<u8>| {
            let mut out = Vec::new();
            let mut rest = &flight[..];
            while !rest.is_empty() {
                let n = sizes.next().unwrap_or(usize::MAX).min(rest.len());
                out.push(rest[..n].to_vec());
                rest = &rest[n..];
            }
            out
        };
        let at = passive();
        // A step refused because its input buffer could not grow (low
        // resources) ends that side's handshake, as a failed call would.
        let short = Outcome::Failed(SecStatus::SEC_E_INSUFFICIENT_MEMORY);
        let refused = |e: StepError| match e {
            StepError::InsufficientResources => short,
            e => panic!("a step was refused: {e:?}"),
        };
        if let Err(e) = self.client.step(&[], &at) {
            return (refused(e), Outcome::NeedInput { missing: 0 });
        }
        let first = self.client_events.next();
        let (mut c_out, mut s_out) = (first.outcome, Outcome::NeedInput { missing: 0 });
        let (mut to_server, mut to_client) = (first.output, Vec::new());
        let done = |o: Outcome| matches!(o, Outcome::Established | Outcome::Failed(_));
        for _ in 0..64 {
            if !to_server.is_empty() && !done(s_out) {
                for piece in pieces(std::mem::take(&mut to_server)) {
                    if let Err(e) = self.server.step(&piece, &at) {
                        return (c_out, refused(e));
                    }
                    let r = self.server_events.next();
                    s_out = r.outcome;
                    to_client.extend_from_slice(&r.output);
                    if done(s_out) {
                        break;
                    }
                }
            } else if !to_client.is_empty() && !done(c_out) {
                for piece in pieces(std::mem::take(&mut to_client)) {
                    if let Err(e) = self.client.step(&piece, &at) {
                        return (refused(e), s_out);
                    }
                    let r = self.client_events.next();
                    c_out = r.outcome;
                    to_server.extend_from_slice(&r.output);
                    if done(c_out) {
                        break;
                    }
                }
            } else {
                break;
            }
        }
        (c_out, s_out)
    }

    /// Run the handshake with whole flights, asserting that neither side
    /// fails; returns what the server sent after the client finished (TLS
    /// 1.3 tickets), which the client's first decrypt must take.
    pub fn establish(&self) -> Vec<u8> {
        let at = passive();
        self.client.step(&[], &at).unwrap();
        let mut to_server = self.client_events.next().output;
        let mut to_client = Vec::new();
        let (mut c_done, mut s_done) = (false, false);
        for _ in 0..8 {
            if !s_done && !to_server.is_empty() {
                self.server.step(&to_server, &at).unwrap();
                let r = self.server_events.next();
                assert!(!matches!(r.outcome, Outcome::Failed(_)), "{r:?}");
                s_done = r.outcome == Outcome::Established;
                to_server.clear();
                to_client.extend_from_slice(&r.output);
            }
            if !c_done && !to_client.is_empty() {
                self.client.step(&to_client, &at).unwrap();
                let r = self.client_events.next();
                assert!(!matches!(r.outcome, Outcome::Failed(_)), "{r:?}");
                c_done = r.outcome == Outcome::Established;
                to_client.clear();
                to_server.extend_from_slice(&r.output);
            }
            if c_done && s_done && to_server.is_empty() {
                return to_client;
            }
        }
        panic!("the handshake did not finish");
    }

    /// Sessions over credentials acquired elsewhere.
    pub fn from_credentials(
        sim: &SimProvider,
        creds: Vec<Arc<Credentials<SimProvider>>>,
        target: &str,
        stats: Arc<EngineStats>,
    ) -> Result<Pair, SecStatus> {
        Pair::build(sim, creds, target, stats, Limits::default(), (None, None))
    }

    /// [`Pair::new`] towards "localhost" with ALPN lists for the server and
    /// the client.
    pub fn with_alpn(
        sim: &SimProvider,
        thumb: Thumbprint,
        (s_dis, c_dis): (u32, u32),
        alpn: (Option<ApplicationProtocols>, Option<ApplicationProtocols>),
    ) -> Pair {
        let stats = Arc::new(EngineStats::default());
        let server_cred =
            acquire(sim, &server_spec(thumb, s_dis), &stats).expect("server credentials");
        let client_cred = acquire(sim, &client_spec(c_dis), &stats).expect("client credentials");
        Pair::build(
            sim,
            vec![server_cred, client_cred],
            "localhost",
            stats,
            Limits::default(),
            alpn,
        )
        .expect("sessions")
    }

    /// [`Pair::from_credentials`] with sessions under `limits`.
    pub fn with_limits(
        sim: &SimProvider,
        creds: Vec<Arc<Credentials<SimProvider>>>,
        target: &str,
        stats: Arc<EngineStats>,
        limits: Limits,
    ) -> Result<Pair, SecStatus> {
        Pair::build(sim, creds, target, stats, limits, (None, None))
    }

    /// Sessions over `creds` under `limits`, with ALPN lists for the server
    /// and the client.
    fn build(
        sim: &SimProvider,
        creds: Vec<Arc<Credentials<SimProvider>>>,
        target: &str,
        stats: Arc<EngineStats>,
        limits: Limits,
        (server_alpn, client_alpn): (Option<ApplicationProtocols>, Option<ApplicationProtocols>),
    ) -> Result<Pair, SecStatus> {
        let server_events = Arc::new(Recorder::default());
        let client_events = Arc::new(Recorder::default());
        let at = passive();
        let server = Session::new(
            sim.clone(),
            SimPlatform::new(sim),
            SessionSetup {
                role: Role::Server,
                credentials: creds[0].clone(),
                limits,
                client_certificates: Default::default(),
                alpn: server_alpn,
                events: server_events.clone(),
            },
            stats.clone(),
            &at,
        )?;
        let client = Session::new(
            sim.clone(),
            SimPlatform::new(sim),
            SessionSetup {
                role: Role::Client {
                    target: Some(target.into()),
                },
                credentials: creds[1].clone(),
                limits,
                client_certificates: Default::default(),
                alpn: client_alpn,
                events: client_events.clone(),
            },
            stats.clone(),
            &at,
        );
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                server.close();
                server_events.wait_closed();
                return Err(e);
            }
        };
        Ok(Pair {
            sim: sim.clone(),
            stats,
            server,
            client,
            server_events,
            client_events,
            creds,
        })
    }

    /// Close both sessions and wait until each reports closed, exactly once;
    /// give back the credentials.
    pub fn close_only(self) -> Vec<Arc<Credentials<SimProvider>>> {
        let Pair {
            server,
            client,
            server_events,
            client_events,
            creds,
            ..
        } = self;
        server.close();
        client.close();
        server_events.wait_closed();
        client_events.wait_closed();
        drop((server, client));
        assert_eq!(server_events.closed.load(Ordering::SeqCst), 1);
        assert_eq!(client_events.closed.load(Ordering::SeqCst), 1);
        creds
    }

    /// Close, release the credentials; the model goes on.
    pub fn finish_keep_sim(self) {
        let sim = self.sim.clone();
        let creds = self.close_only();
        release_all(&sim, creds);
    }

    /// Close, release, and check the model is clean at unload.
    pub fn finish(self) {
        let sim = self.sim.clone();
        self.finish_keep_sim();
        sim.unload()
            .unwrap_or_else(|leaks| panic!("seed {}: {leaks}", sim.config().seed));
    }
}

/// Release credentials through the engine's async release and wait for it.
/// If it cannot be started (low resources), the handle's own drop releases
/// it (a detached call) instead.
pub fn release_all(sim: &SimProvider, creds: Vec<Arc<Credentials<SimProvider>>>) {
    for cred in creds {
        let Ok(cred) = Arc::try_unwrap(cred) else {
            panic!("credentials still shared");
        };
        let done = Arc::new((Mutex::new(None), Condvar::new()));
        let d2 = done.clone();
        let started = ksspi::engine::release_credentials(
            sim.clone(),
            SimPlatform::new(sim),
            cred,
            Arc::default(),
            Box::new(move |status| {
                *d2.0.lock().unwrap() = Some(status);
                d2.1.notify_all();
            }),
            &passive(),
        );
        if started.is_ok() {
            let mut g = done.0.lock().unwrap();
            while g.is_none() {
                g = done.1.wait_timeout(g, Duration::from_secs(20)).unwrap().0;
            }
        }
    }
    sim.wait_idle();
}

pub fn sim_with(config: SimConfig) -> (SimProvider, Thumbprint) {
    let (store, thumb, _pki) = store();
    (SimProvider::new(config, store), thumb)
}
