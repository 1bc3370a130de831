//! One soak batch over the model: a fresh device, its self-test, the
//! workers' IOCTL session pairs beside it, the unload and the balances.

use super::{Model, Pending, Unloaded, DROPPED};
use crate::soak::{Batch, Counters};
use crate::Failure;
use ksspi::sys::{SP_PROT_TLS1_2, SP_PROT_TLS1_3};
use ksspi::SecStatus;
use ksspi_abi::*;
use ksspi_driver::device::FileId;
use ksspi_driver::ntstatus::{NtStatus, STATUS_INVALID_HANDLE};
use ksspi_sim::{CallbackIrql, CompletionPolicy, SimConfig};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long any one request may take before the soak calls it lost.
const WAIT: Duration = Duration::from_secs(120);

/// Credential machines of one self-test (a server and up to two client
/// credentials, each acquired and released): their calls and work items are
/// in no counter the self-test reports.
const SELFTEST_CREDENTIAL_CALLS: u64 = 6;

/// A small seeded generator (xorshift64*).
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        // SplitMix64 of the seed, never 0.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// One batch.
pub struct BatchPlan {
    /// Its number in the run (from 0).
    pub index: u64,
    /// The model's seed (and the workers').
    pub seed: u64,
    /// Self-test handshakes at once (it runs four times as many).
    pub concurrency: u32,
    /// TLS versions ([`proto`] bits) for the self-test and the pairs.
    pub protocols: u32,
    /// TLS 1.3 session tickets the model's servers send.
    pub tickets: usize,
    /// One fault point in this many fails (0: none).
    pub faults: u64,
    /// Application bytes per self-test pair.
    pub bytes: u32,
    /// User-mode threads driving IOCTL session pairs alongside.
    pub workers: u32,
    /// Percent of those pairs disrupted.
    pub disrupt: u32,
    /// The server certificate (default: the model's generated one).
    pub thumbprint: Option<[u8; 20]>,
}

/// Run one batch and check it balances: `Err` if it could not finish,
/// [`Batch::failure`] if its figures do not balance.
pub fn batch(plan: &BatchPlan) -> Result<Batch, Failure> {
    let fail = |what: String| Failure(format!("batch {} (seed {}): {what}", plan.index, plan.seed));
    let model = Model::new(SimConfig {
        seed: plan.seed,
        completion: CompletionPolicy::Mixed,
        callback_irql: CallbackIrql::Mixed,
        tls13_tickets: plan.tickets,
        ..SimConfig::default()
    });
    if plan.faults > 0 {
        model.sim.verifier().fail_one_in(plan.faults, plan.seed);
    }
    let count = plan.concurrency * 4;
    let request = SelftestRequest {
        count,
        concurrency: plan.concurrency,
        protocols: plan.protocols,
        completion: 0,
        callback_irql: 0,
        seed: plan.seed,
        thumbprint: plan.thumbprint.unwrap_or(model.thumbprint),
        bytes: plan.bytes,
        resume: false,
    };
    let mut input = vec![0u8; 256];
    let n = encode(&request, &mut input).map_err(|e| fail(format!("encoding: {e:?}")))?;
    let selftest = model.submit(model.file, IOCTL_KSSPI_SELFTEST, &input[..n], 512, false);
    let stop = AtomicBool::new(false);
    let (reply, pairs) = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..plan.workers)
            .map(|w| {
                let (model, stop) = (&model, &stop);
                scope.spawn(move || {
                    let mut worker = Worker::new(model, plan, w);
                    worker.run(stop).map(|()| worker.c)
                })
            })
            .collect();
        let reply = selftest.wait(Duration::from_secs(600));
        stop.store(true, Ordering::SeqCst);
        let pairs: Vec<_> = workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(Failure("a worker panicked".into())))
            })
            .collect();
        (reply, pairs)
    });
    let mut c = Counters::default();
    for p in pairs {
        c.add(&p.map_err(|Failure(e)| fail(e))?);
    }
    let (status, reply) =
        reply.ok_or_else(|| fail("the self-test did not complete within 600 s".into()))?;
    let r = match status {
        0 => decode::<SelftestReply>(&reply)
            .map_err(|e| fail(format!("a malformed self-test reply: {e:?}")))?,
        DROPPED => return Err(fail("the self-test request was dropped".into())),
        // Faults may stop a self-test from starting (its reply buffer).
        s if s < 0 && plan.faults > 0 => SelftestReply {
            handshakes_failed: u64::from(count),
            ..SelftestReply::default()
        },
        s => {
            return Err(fail(format!(
                "the self-test request failed: NTSTATUS {:#010x}",
                s as u32
            )))
        }
    };
    if r.handshakes_ok + r.handshakes_failed != u64::from(count) {
        return Err(fail(format!(
            "the self-test ran {count} handshakes but reports {} ok and {} failed",
            r.handshakes_ok, r.handshakes_failed
        )));
    }
    let want = u64::from(plan.bytes) * 2 * r.handshakes_ok;
    if (plan.faults == 0 && r.bytes_checked != want) || r.bytes_checked < want {
        return Err(fail(format!(
            "{} of {want} application bytes checked",
            r.bytes_checked
        )));
    }
    let info = model.submit(model.file, IOCTL_KSSPI_GET_INFO, &[], 256, false);
    let info = match info.wait(WAIT) {
        Some((0, reply)) => decode::<InfoReply>(&reply)
            .map_err(|e| fail(format!("a malformed GET_INFO reply: {e:?}")))?,
        other => return Err(fail(format!("GET_INFO: {other:?}"))),
    };
    let end = model.unload_report();
    c.add(&counts(plan, &r, &info, &end));
    if end.leaked > 0 {
        eprint!("{}", end.leak_report);
    }
    let failure = checks(plan, &c, &end)
        .err()
        .map(fail)
        .map(|Failure(why)| why);
    Ok(Batch {
        counters: c,
        latency_max_us: r.latency_max_us,
        failure,
    })
}

/// A finished batch's balances: those of every run, and those only a batch
/// without faults keeps.
fn checks(plan: &BatchPlan, c: &Counters, end: &Unloaded) -> Result<(), String> {
    if plan.faults == 0 && end.faults_injected > 0 {
        return Err(format!(
            "{} faults injected with faults off",
            end.faults_injected
        ));
    }
    c.balance()?;
    // The self-test's credentials are its only calls and work items the
    // engine's counters leave out (and, after a fault, detached releases).
    let slack = SELFTEST_CREDENTIAL_CALLS;
    if plan.faults == 0 && c.work_items_queued > c.work_items_engine + slack {
        return Err(format!(
            "{} work items queued, the engine counted {}",
            c.work_items_queued, c.work_items_engine
        ));
    }
    if plan.faults == 0 && c.model_calls > c.engine_calls + c.selftest_completions + slack {
        return Err(format!(
            "the model queued {} calls, the engine and the self-test account for {}",
            c.model_calls,
            c.engine_calls + c.selftest_completions
        ));
    }
    Ok(())
}

/// The batch's figures from the self-test's reply, GET_INFO and the unload.
fn counts(plan: &BatchPlan, r: &SelftestReply, info: &InfoReply, end: &Unloaded) -> Counters {
    let faults = plan.faults > 0;
    let (e, s, q) = (&end.engine, &end.sim, &end.requests);
    let selftest_completions =
        r.completions_pending + r.completions_inline_callback + r.completions_sync_no_callback;
    let selftest_callbacks = r.callbacks_passive + r.callbacks_dispatch;
    let selftest_notified = r.completions_pending + r.completions_inline_callback;
    Counters {
        batches_tls12: u64::from(plan.protocols == proto::TLS12),
        batches_tls13: u64::from(plan.protocols == proto::TLS13),
        batches_tls_both: u64::from(plan.protocols == proto::ALL),
        batches_tickets: u64::from(plan.tickets > 0),
        batches_faults: u64::from(faults),
        handshakes_ok: r.handshakes_ok,
        handshakes_failed: r.handshakes_failed,
        handshakes_failed_clean: if faults { 0 } else { r.handshakes_failed },
        bytes_checked: r.bytes_checked,
        requests_sent: q.sent,
        requests_completed: q.completed,
        requests_completed_twice: q.completed_twice,
        requests_dropped: q.dropped,
        status_success: q.success,
        status_error: q.errors,
        status_not_clean: q.not_clean,
        cancels: q.cancels,
        cancels_too_late: q.cancels_too_late,
        cancel_routines: q.cancel_routines,
        cancelled: q.cancelled,
        cancelled_by_engine: q.cancelled_by_engine,
        cancel_races: q.cancel_races,
        pends: q.pends,
        pends_refused: q.pends_refused,
        sessions_opened: info.sessions_total,
        sessions_open_at_end: u64::from(info.sessions_open) + u64::from(end.sessions_alive),
        // The device's counters take in each self-test run's at its end (for
        // GET_INFO's observed facts): the engine's own are what is left.
        engine_calls: e.calls.saturating_sub(selftest_completions),
        engine_completions: (e.completed_sync + e.callback_first + e.issuer_first)
            .saturating_sub(selftest_completions),
        engine_callbacks: (e.callbacks_passive + e.callbacks_dispatch)
            .saturating_sub(selftest_callbacks),
        engine_notified: (e.callback_first + e.issuer_first).saturating_sub(selftest_notified),
        selftest_completions,
        selftest_callbacks,
        selftest_notified,
        model_calls: s.calls,
        model_completions: s.completed_async + s.completed_inline + s.completed_sync,
        model_callbacks: s.callbacks_passive + s.callbacks_dispatch,
        model_notified: s.completed_async + s.completed_inline,
        work_items_engine: e.work_items,
        work_items_queued: end.work_queued,
        work_items_run: end.work_ran,
        fault_points: end.fault_points,
        faults_injected: end.faults_injected,
        leaked: end.leaked,
        ..Counters::default()
    }
}

/// How a pair is disrupted, at one of its requests.
#[derive(Clone, Copy, Debug)]
enum Disrupt {
    /// Cancel the request after a random pause (CancelIoEx).
    Cancel,
    /// Send it cancelled already: the driver's pend is refused.
    CancelEarly,
    /// CLOSE its session while it is in flight.
    Close,
    /// Close the file handle while it is in flight (EvtFileCleanup).
    Cleanup,
}

/// Why a pair stopped early.
enum Abort {
    /// It cannot go on (a refused or failed request): expected when it was
    /// disrupted or faults are injected.
    Pair(String),
    /// Something that must never happen.
    Hard(Failure),
}

impl From<Failure> for Abort {
    fn from(f: Failure) -> Self {
        Abort::Hard(f)
    }
}

type Go<T> = Result<T, Abort>;

/// A decoded STEP reply.
struct Stepped {
    outcome: StepOutcome,
    protocol: u32,
    output: Vec<u8>,
}

/// A decoded DECRYPT / SHUTDOWN reply.
struct Recorded {
    outcome: RecordOutcome,
    data: Vec<u8>,
    output: Vec<u8>,
}

/// One user-mode thread driving session pairs on a file handle of its own.
struct Worker<'a> {
    model: &'a Model,
    plan: &'a BatchPlan,
    rng: Rng,
    file: FileId,
    /// Every session id it was given, with its file.
    ids: Vec<(FileId, SessionId)>,
    /// This pair's disruption: at which of its requests, and how.
    disrupt: Option<(u32, Disrupt)>,
    /// Requests this pair has sent that may pend.
    sent: u32,
    /// The disruption happened.
    disrupted: bool,
    /// The file was closed under the pair.
    file_gone: bool,
    c: Counters,
}

impl<'a> Worker<'a> {
    fn new(model: &'a Model, plan: &'a BatchPlan, index: u32) -> Self {
        Worker {
            model,
            plan,
            rng: Rng::new(plan.seed ^ ((u64::from(index) + 1) << 48)),
            file: model.device.open_file(),
            ids: Vec::new(),
            disrupt: None,
            sent: 0,
            disrupted: false,
            file_gone: false,
            c: Counters::default(),
        }
    }

    /// Pairs until `stop` (at least two), then close the file and check
    /// that every id it was given is refused now.
    fn run(&mut self, stop: &AtomicBool) -> Result<(), Failure> {
        let mut pairs = 0;
        while pairs < 2 || !stop.load(Ordering::SeqCst) {
            self.pair()?;
            pairs += 1;
        }
        self.close_file()?;
        for (file, session) in std::mem::take(&mut self.ids) {
            let input = enc(&CloseRequest { session });
            let p = self
                .model
                .submit(file, IOCTL_KSSPI_CLOSE, &input, 64, false);
            match self.wait(&p)?.0 {
                STATUS_INVALID_HANDLE => self.c.stale_ids_refused += 1,
                s => {
                    return Err(Failure(format!(
                        "CLOSE of a session gone with its file answered NTSTATUS {:#010x}",
                        s as u32
                    )))
                }
            }
        }
        Ok(())
    }

    /// Close the file handle (EvtFileCleanup) and wait for its sessions to
    /// go; the next pair uses a new one.
    fn close_file(&mut self) -> Result<(), Failure> {
        self.model.device.cleanup(self.file);
        let start = Instant::now();
        while self.model.device.sessions_of(self.file) > 0 {
            if start.elapsed() > Duration::from_secs(30) {
                return Err(Failure(format!(
                    "{} sessions of a closed file still alive after 30 s",
                    self.model.device.sessions_of(self.file)
                )));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        self.file = self.model.device.open_file();
        self.file_gone = false;
        Ok(())
    }

    /// One pair, disrupted or not.
    fn pair(&mut self) -> Result<(), Failure> {
        self.sent = 0;
        self.disrupted = false;
        self.disrupt = (self.rng.below(100) < u64::from(self.plan.disrupt)).then(|| {
            let how = match self.rng.below(4) {
                0 => Disrupt::Cancel,
                1 => Disrupt::CancelEarly,
                2 => Disrupt::Close,
                _ => Disrupt::Cleanup,
            };
            // Of a pair's requests, about 12 may pend (OPEN, STEP, DECRYPT,
            // SHUTDOWN): one of those.
            (self.rng.below(12) as u32, how)
        });
        let mut sessions = [None, None];
        let result = self.exchange(&mut sessions);
        // Close what is open (unless the file went with it).
        let mut closed_cleanly = true;
        for session in sessions.into_iter().flatten() {
            if self.file_gone {
                break;
            }
            match self.request(IOCTL_KSSPI_CLOSE, &enc(&CloseRequest { session }), 64) {
                Ok((0, _)) => {}
                Ok(_) => closed_cleanly = false,
                Err(Abort::Hard(f)) => return Err(f),
                Err(Abort::Pair(_)) => closed_cleanly = false,
            }
        }
        if self.file_gone {
            self.close_file()?;
        }
        let faults = self.plan.faults > 0;
        match result {
            Err(Abort::Hard(f)) => Err(f),
            _ if self.disrupted => {
                self.c.pairs_disrupted += 1;
                Ok(())
            }
            Ok(protocol) if closed_cleanly => {
                self.c.pairs_ok += 1;
                if protocol & SP_PROT_TLS1_3 != 0 {
                    self.c.pairs_tls13 += 1;
                } else {
                    self.c.pairs_tls12 += 1;
                }
                Ok(())
            }
            Ok(_) | Err(Abort::Pair(_)) if faults => {
                self.c.pairs_failed += 1;
                Ok(())
            }
            Ok(_) => Err(Failure(
                "an undisrupted pair's CLOSE failed without injected faults".into(),
            )),
            Err(Abort::Pair(why)) => Err(Failure(format!(
                "an undisrupted IOCTL session pair failed without injected faults: {why}"
            ))),
        }
    }

    /// The pair's life: OPEN both, handshake, data both ways, QUERY,
    /// close_notify both ways. Returns the negotiated protocol.
    fn exchange(&mut self, sessions: &mut [Option<SessionId>; 2]) -> Go<u32> {
        let all = self.plan.protocols == proto::ALL;
        let server_protocols = self.plan.protocols;
        let client_protocols = if all {
            [proto::TLS12, proto::TLS13, proto::ALL][self.rng.below(3) as usize]
        } else {
            self.plan.protocols
        };
        let server = self.open(true, server_protocols)?;
        sessions[0] = Some(server);
        let client = self.open(false, client_protocols)?;
        sessions[1] = Some(client);
        let (mut to_server, mut to_client) = (Vec::new(), Vec::new());
        let (mut c, mut s) = (StepOutcome::NeedInput, StepOutcome::NeedInput);
        let mut first = true;
        let mut protocol = 0;
        for _ in 0..16 {
            if (c, s) == (StepOutcome::Established, StepOutcome::Established) {
                break;
            }
            let client_turn = c == StepOutcome::NeedInput && (first || !to_client.is_empty());
            let server_turn = s == StepOutcome::NeedInput && !to_server.is_empty();
            first = false;
            let (id, input) = if client_turn {
                (client, std::mem::take(&mut to_client))
            } else if server_turn {
                (server, std::mem::take(&mut to_server))
            } else {
                return Err(Abort::Pair("the handshake stalled".into()));
            };
            let r = self.step(id, &input)?;
            if client_turn {
                to_server.extend_from_slice(&r.output);
                c = r.outcome;
            } else {
                to_client.extend_from_slice(&r.output);
                s = r.outcome;
            }
            if r.outcome == StepOutcome::Established {
                protocol = r.protocol;
            }
        }
        if (c, s) != (StepOutcome::Established, StepOutcome::Established) {
            return Err(Abort::Pair(format!("the handshake ended {c:?} / {s:?}")));
        }
        let tls12_only = server_protocols & client_protocols == proto::TLS12;
        let want = if tls12_only {
            SP_PROT_TLS1_2
        } else {
            SP_PROT_TLS1_3
        };
        if protocol & want == 0 {
            return Err(Abort::Hard(Failure(format!(
                "negotiated protocol {protocol:#x} with server {server_protocols:#x} and client {client_protocols:#x}"
            ))));
        }
        // Application data both ways; the client's DECRYPT meets the
        // server's tickets first.
        for (from, to, client_sends) in [(client, server, true), (server, client, false)] {
            let n = 1 + self.rng.below(20_000) as usize;
            let data = self.rng.bytes(n);
            let sealed = self.encrypt(from, &data)?;
            let (input, answers) = if client_sends {
                (&mut to_server, &mut to_client)
            } else {
                (&mut to_client, &mut to_server)
            };
            input.extend_from_slice(&sealed);
            let mut got = Vec::new();
            for _ in 0..8 {
                let bytes = std::mem::take(input);
                let r = self.decrypt(to, &bytes)?;
                answers.extend_from_slice(&r.output);
                got.extend_from_slice(&r.data);
                if r.outcome != RecordOutcome::Data {
                    return Err(Abort::Pair(format!("DECRYPT ended {:?}", r.outcome)));
                }
                if got.len() >= n {
                    break;
                }
            }
            if got != data {
                return Err(Abort::Hard(Failure(format!(
                    "{n} bytes sent through ENCRYPT / DECRYPT, {} came back{}",
                    got.len(),
                    if got.len() == n { ", different" } else { "" }
                ))));
            }
            self.c.pair_bytes_checked += n as u64;
        }
        self.query(client)?;
        // close_notify both ways.
        for (from, to, client_sends) in [(client, server, true), (server, client, false)] {
            let r = self.record(
                IOCTL_KSSPI_SHUTDOWN,
                &enc(&ShutdownRequest { session: from }),
            )?;
            if r.outcome != RecordOutcome::ShutDown {
                return Err(Abort::Pair(format!("SHUTDOWN ended {:?}", r.outcome)));
            }
            // After whatever else is on its way to the peer.
            let mut input = std::mem::take(if client_sends {
                &mut to_server
            } else {
                &mut to_client
            });
            input.extend_from_slice(&r.output);
            let r = self.decrypt(to, &input)?;
            if r.outcome != RecordOutcome::PeerClosed {
                return Err(Abort::Pair(format!(
                    "DECRYPT of close_notify ended {:?}",
                    r.outcome
                )));
            }
        }
        Ok(protocol)
    }

    /// A pause of random length before a disruption.
    fn pause(&mut self) {
        match self.rng.below(8) {
            0..=3 => {}
            4 => std::thread::yield_now(),
            5 => {
                let until = Instant::now() + Duration::from_micros(1 + self.rng.below(50));
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
            }
            _ => std::thread::sleep(Duration::from_micros(self.rng.below(300))),
        }
    }

    fn wait(&self, p: &Pending) -> Result<(NtStatus, Vec<u8>), Failure> {
        match p.wait(WAIT) {
            Some((DROPPED, _)) => Err(Failure(
                "the driver dropped a request without completing it".into(),
            )),
            Some(done) => Ok(done),
            None => Err(Failure(format!(
                "a request did not complete within {} s",
                WAIT.as_secs()
            ))),
        }
    }

    /// Send one of the pair's requests on its file, disrupting it if it is
    /// the one, and wait for its completion.
    fn request(&mut self, code: u32, input: &[u8], capacity: usize) -> Go<(NtStatus, Vec<u8>)> {
        if self.file_gone {
            return Err(Abort::Pair("the file is closed".into()));
        }
        let may_pend = matches!(
            code,
            IOCTL_KSSPI_OPEN | IOCTL_KSSPI_STEP | IOCTL_KSSPI_DECRYPT | IOCTL_KSSPI_SHUTDOWN
        );
        let n = self.sent;
        self.sent += u32::from(may_pend);
        let how = match self.disrupt {
            Some((at, how)) if may_pend && at == n => Some(how),
            _ => None,
        };
        // A cancel that comes too late (the request completed already) did
        // nothing: the next request that may pend is cancelled instead.
        self.disrupted |= how.is_some_and(|how| !matches!(how, Disrupt::Cancel));
        let early = matches!(how, Some(Disrupt::CancelEarly));
        let p = self.model.submit(self.file, code, input, capacity, early);
        match (how, session_of(code, input)) {
            (Some(Disrupt::Cancel), _) => {
                self.pause();
                if self.model.cancel(&p) {
                    self.disrupted = true;
                } else {
                    self.disrupt = Some((n + 1, Disrupt::Cancel));
                }
            }
            (Some(Disrupt::Close), Some(session)) => {
                self.pause();
                let close = enc(&CloseRequest { session });
                let c = self
                    .model
                    .submit(self.file, IOCTL_KSSPI_CLOSE, &close, 64, false);
                self.wait(&c)?;
                self.c.closes_mid_flight += 1;
            }
            // An OPEN has no session id to CLOSE yet: close the file instead.
            (Some(Disrupt::Close | Disrupt::Cleanup), _) => {
                self.pause();
                self.model.device.cleanup(self.file);
                self.file_gone = true;
                self.c.file_cleanups += 1;
            }
            (Some(Disrupt::CancelEarly) | None, _) => {}
        }
        Ok(self.wait(&p)?)
    }

    /// A request that must succeed for the pair to go on.
    fn must(&mut self, what: &str, code: u32, input: &[u8], capacity: usize) -> Go<Vec<u8>> {
        match self.request(code, input, capacity)? {
            (0, reply) => Ok(reply),
            (status, _) => Err(Abort::Pair(format!(
                "{what}: NTSTATUS {:#010x}",
                status as u32
            ))),
        }
    }

    fn not_clean(&mut self, what: String) -> Abort {
        self.c.replies_not_clean += 1;
        Abort::Hard(Failure(what))
    }

    fn open(&mut self, server: bool, protocols: u32) -> Go<SessionId> {
        let (role, target): (_, &[u8]) = if server {
            (Role::Server, b"")
        } else {
            (Role::Client, b"localhost")
        };
        let thumbprint = self.plan.thumbprint.unwrap_or(self.model.thumbprint);
        let req = OpenRequest::new(role, protocols, thumbprint, target);
        let reply = self.must("OPEN", IOCTL_KSSPI_OPEN, &enc(&req), 64)?;
        let r = decode::<OpenReply>(&reply)
            .map_err(|e| Failure(format!("a malformed OPEN reply: {e:?}")))?;
        match r.status {
            0 => {
                self.ids.push((self.file, r.session));
                Ok(r.session)
            }
            s if s < 0 => Err(Abort::Pair(format!("OPEN: {}", SecStatus(s)))),
            s => Err(self.not_clean(format!("OPEN answered {}", SecStatus(s)))),
        }
    }

    fn step(&mut self, session: SessionId, input: &[u8]) -> Go<Stepped> {
        let reply = self.must(
            "STEP",
            IOCTL_KSSPI_STEP,
            &enc(&StepRequest { session, input }),
            step_reply_capacity(64 * 1024),
        )?;
        let r = decode::<StepReply>(&reply)
            .map_err(|e| Failure(format!("a malformed STEP reply: {e:?}")))?;
        match r.outcome {
            StepOutcome::Failed if r.status < 0 => {
                Err(Abort::Pair(format!("STEP: {}", SecStatus(r.status))))
            }
            StepOutcome::Established if r.status != 0 => {
                Err(self.not_clean(format!("STEP established with {}", SecStatus(r.status))))
            }
            StepOutcome::Failed => {
                Err(self.not_clean(format!("STEP failed with {}", SecStatus(r.status))))
            }
            outcome => Ok(Stepped {
                outcome,
                protocol: r.protocol,
                output: r.output.to_vec(),
            }),
        }
    }

    fn encrypt(&mut self, session: SessionId, data: &[u8]) -> Go<Vec<u8>> {
        let req = EncryptRequest(RecordRequest {
            session,
            bytes: data,
        });
        let reply = self.must(
            "ENCRYPT",
            IOCTL_KSSPI_ENCRYPT,
            &enc(&req),
            encrypt_reply_capacity(data.len()),
        )?;
        let r = decode::<EncryptReply>(&reply)
            .map_err(|e| Failure(format!("a malformed ENCRYPT reply: {e:?}")))?;
        match r.status {
            0 => Ok(r.output.to_vec()),
            s if s < 0 => Err(Abort::Pair(format!("ENCRYPT: {}", SecStatus(s)))),
            s => Err(self.not_clean(format!("ENCRYPT answered {}", SecStatus(s)))),
        }
    }

    fn decrypt(&mut self, session: SessionId, bytes: &[u8]) -> Go<Recorded> {
        let req = DecryptRequest(RecordRequest { session, bytes });
        self.record(IOCTL_KSSPI_DECRYPT, &enc(&req))
    }

    /// DECRYPT or SHUTDOWN.
    fn record(&mut self, code: u32, input: &[u8]) -> Go<Recorded> {
        let reply = self.must(
            "DECRYPT / SHUTDOWN",
            code,
            input,
            record_reply_capacity(64 * 1024, 64 * 1024),
        )?;
        let r = decode::<RecordReply>(&reply)
            .map_err(|e| Failure(format!("a malformed record reply: {e:?}")))?;
        self.c.renegotiations += u64::from(r.renegotiations);
        match r.outcome {
            RecordOutcome::Failed if r.status < 0 => Err(Abort::Pair(format!(
                "record layer: {}",
                SecStatus(r.status)
            ))),
            RecordOutcome::Failed => Err(self.not_clean(format!(
                "the record layer failed with {}",
                SecStatus(r.status)
            ))),
            outcome => Ok(Recorded {
                outcome,
                data: r.data.to_vec(),
                output: r.output.to_vec(),
            }),
        }
    }

    fn query(&mut self, session: SessionId) -> Go<()> {
        let reply = self.must(
            "QUERY",
            IOCTL_KSSPI_QUERY,
            &enc(&QueryRequest { session }),
            QUERY_REPLY_CAPACITY,
        )?;
        decode::<QueryReply>(&reply)
            .map_err(|e| Failure(format!("a malformed QUERY reply: {e:?}")))?;
        Ok(())
    }
}

/// The session id a request of the pair is for (every one carries it first).
fn session_of(code: u32, input: &[u8]) -> Option<SessionId> {
    match code {
        IOCTL_KSSPI_STEP => decode::<StepRequest>(input).ok().map(|r| r.session),
        IOCTL_KSSPI_DECRYPT => decode::<DecryptRequest>(input).ok().map(|r| r.0.session),
        IOCTL_KSSPI_ENCRYPT => decode::<EncryptRequest>(input).ok().map(|r| r.0.session),
        IOCTL_KSSPI_SHUTDOWN => decode::<ShutdownRequest>(input).ok().map(|r| r.session),
        IOCTL_KSSPI_QUERY => decode::<QueryRequest>(input).ok().map(|r| r.session),
        IOCTL_KSSPI_CLOSE => decode::<CloseRequest>(input).ok().map(|r| r.session),
        _ => None,
    }
}

fn enc<'a, M: Message<'a>>(m: &M) -> Vec<u8> {
    let mut buf = vec![0u8; 512 + m.data().len() + m.data2().len()];
    let n = encode(m, &mut buf).expect("a request encodes");
    buf.truncate(n);
    buf
}
