//! Cancellation and close at every moment (docs/RELIABILITY.md, "Cancellation and close at every moment"). Moments: OPEN
//! while its credentials are acquired (server and client); each STEP of a
//! handshake, by index in its sequence of STEP requests (TLS 1.2: 5, TLS
//! 1.3: 4, counted by a reference handshake); and each session call after
//! it: ENCRYPT, QUERY, DECRYPT of a whole record, of half a record, of the
//! TLS 1.3 tickets (which go back through the async handshake call), and
//! SHUTDOWN. Actions: cancel the request (the glue's cancel routine, at
//! DISPATCH_LEVEL), CLOSE its session from another request, close its file
//! (cleanup), unload the device. Timings: while the model's completions are
//! held, so a request whose call is asynchronous is really pended; or racing
//! its completion (sent from another thread, the completions released, then
//! the action at once). Every cell runs in both protocols, with async and
//! with seeded mixed completions (callbacks at a seeded mix of PASSIVE and
//! DISPATCH), several times with other seeds, each run in a fresh world.
//!
//! In every run: every request sent completes exactly once (none dropped,
//! none twice, none left pending). The request acted on completes with
//! `STATUS_CANCELLED` if its call was held when the action came (a cancel
//! then returns true), with `STATUS_SUCCESS` and a sound reply if it had
//! completed first (a cancel then returns false), and in a race with either
//! (true exactly when cancelled) or, when the close came before its call
//! started, `STATUS_INVALID_HANDLE`. Its session takes no more requests
//! (`STATUS_INVALID_HANDLE`), and a second cancel finds nothing. The other
//! session on its file and a session on another file, which has a step of
//! its own pended meanwhile, are untouched unless the action closes them too
//! (cleanup: the file's sessions; unload: all). Every session is released
//! and the model reports no leak at unload.
//!
//! `cargo test --test cancel_matrix -- --nocapture` prints one summary line
//! per test.

mod common;

use common::*;
use ksspi_abi::*;
use ksspi_driver::device::{DeviceConfig, FileId};
use ksspi_driver::ntstatus::*;
use ksspi_sim::certs::{CertStore, TestPki, Thumbprint};
use ksspi_sim::{CallbackIrql, Completion, CompletionPolicy, SimConfig};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

const STEP_REPLY: usize = step_reply_capacity(64 * 1024);

const ASYNC: CompletionPolicy = CompletionPolicy::Always(Completion::Async);

/// The completion modes every cell runs in (callbacks at a seeded mix of
/// PASSIVE and DISPATCH in both). With async completions the model's hold
/// keeps every pended request's call in flight; mixed ones complete some
/// calls before the issuing function returns, inline or on a thread of
/// their own, so some requests never pend and some continue while held.
const MODES: [CompletionPolicy; 2] = [ASYNC, CompletionPolicy::Mixed];

const PROTOCOLS: [u32; 2] = [proto::TLS12, proto::TLS13];

/// TLS 1.3 tickets a server sends after its handshake.
const TICKETS: usize = 2;

/// One certificate store for every cell (making a PKI is the slow part of a
/// world).
fn pki() -> &'static (Arc<CertStore>, Thumbprint) {
    static PKI: OnceLock<(Arc<CertStore>, Thumbprint)> = OnceLock::new();
    PKI.get_or_init(|| {
        let (store, thumb) = TestPki::new("cancel matrix CA").store(&["localhost"]);
        (Arc::new(store), thumb)
    })
}

/// When the request acted on is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Moment {
    /// OPEN, while its credentials are acquired.
    Open(Role),
    /// The handshake's STEP number `n` (0: the client's first).
    Step(usize),
    /// ENCRYPT (synchronous: never pended).
    Encrypt,
    /// QUERY (synchronous: never pended).
    Query,
    /// DECRYPT of a whole record (synchronous DecryptMessage).
    DecryptRecord,
    /// DECRYPT of the TLS 1.3 tickets: through the async handshake call.
    DecryptTicket,
    /// DECRYPT of half a record (INCOMPLETE_MESSAGE, kept for later).
    DecryptPartial,
    /// SHUTDOWN: ApplyControlToken, then the async handshake call.
    Shutdown,
}

impl Moment {
    /// Whether the request's SSPI call is asynchronous, so it really pends
    /// while the model's completions are held.
    fn pends(self) -> bool {
        matches!(
            self,
            Moment::Open(_) | Moment::Step(_) | Moment::DecryptTicket | Moment::Shutdown
        )
    }

    /// Whether the engine completes the request without ever pending it (so
    /// the glue never makes it cancelable).
    fn never_pended(self) -> bool {
        matches!(self, Moment::Encrypt | Moment::Query)
    }
}

/// What happens to the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    /// The glue's cancel routine runs (`Device::cancel`, at DISPATCH_LEVEL).
    Cancel,
    /// CLOSE of the request's session, from another request.
    Close,
    /// The request's file handle is closed (`Device::cleanup`).
    Cleanup,
    /// The device unloads (`Device::unload`).
    Unload,
}

const ACTIONS: [Action; 4] = [
    Action::Cancel,
    Action::Close,
    Action::Cleanup,
    Action::Unload,
];

/// How the action meets the request's completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timing {
    /// While the model's completions are held: a request whose call is
    /// asynchronous stays pended (with mixed completions, some calls finish
    /// on threads the hold does not stop, and race the action).
    Pended,
    /// Just after the held completions are released (the request sent from
    /// another thread, the action as soon as it is pended): a race.
    Raced,
}

const TIMINGS: [Timing; 2] = [Timing::Pended, Timing::Raced];

/// Runs of each cell, each with its own seed (so mixed completions take
/// other paths, and races land on either side).
const RUNS: usize = 4;

/// Runs of each ENCRYPT / QUERY race against a close.
const RACE_RUNS: u64 = 25;

/// Counts over a test's cells.
#[derive(Default)]
struct Tally {
    cells: usize,
    runs: usize,
    requests: usize,
    /// The request was pended, its call held in flight, when the action came.
    held: usize,
    /// It had completed before the action (synchronous call or completion).
    completed_first: usize,
    /// The action raced the completion, and the action won.
    race_cancelled: usize,
    /// The action raced the completion, and the completion won.
    race_completed: usize,
    /// The action raced the request's start and won: the request found its
    /// session closed.
    race_refused: usize,
}

impl Tally {
    fn add(&mut self, c: &CellResult) {
        self.runs += 1;
        self.requests += c.requests;
        match c.race {
            Race::Held => self.held += 1,
            Race::CompletedFirst => self.completed_first += 1,
            Race::Raced if c.status == STATUS_SUCCESS => self.race_completed += 1,
            Race::Raced if c.status == STATUS_INVALID_HANDLE => self.race_refused += 1,
            Race::Raced => self.race_cancelled += 1,
        }
    }

    fn report(&self, what: &str, started: Instant) {
        println!(
            "cancel matrix ({what}): {} cells, {} runs, {} requests, all completed once; \
             the request held pended at the action in {} runs, completed before it in {}, \
             racing it in {} (cancelled {}, completed {}, refused at its start {}); {:.1} s",
            self.cells,
            self.runs,
            self.requests,
            self.held,
            self.completed_first,
            self.race_cancelled + self.race_completed + self.race_refused,
            self.race_cancelled,
            self.race_completed,
            self.race_refused,
            started.elapsed().as_secs_f64()
        );
    }
}

/// One cell's coordinates.
#[derive(Clone, Copy)]
struct Cell {
    mode: CompletionPolicy,
    protocol: u32,
    moment: Moment,
    action: Action,
    timing: Timing,
    seed: u64,
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tls = if self.protocol == proto::TLS12 {
            "TLS 1.2"
        } else {
            "TLS 1.3"
        };
        write!(
            f,
            "[{:?} {tls} {:?} {:?} {:?} seed {}]",
            self.mode, self.moment, self.action, self.timing, self.seed
        )
    }
}

/// How a run's action met the request's completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Race {
    /// The request was pended and its call held in flight (async
    /// completions, all held): the action must win.
    Held,
    /// The request had completed: the action finds nothing to complete.
    CompletedFirst,
    /// Either may win (the completions released, or, with mixed
    /// completions, a continuation on a thread the hold does not stop).
    Raced,
}

struct CellResult {
    race: Race,
    status: NtStatus,
    requests: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Client,
    Server,
}

/// A handshake between two sessions driven one STEP at a time, so a test
/// can stop at any step.
struct Handshake {
    server: SessionId,
    client: SessionId,
    to_server: Vec<u8>,
    to_client: Vec<u8>,
    started: bool,
    client_done: bool,
    server_done: bool,
}

impl Handshake {
    fn new(server: SessionId, client: SessionId) -> Self {
        Handshake {
            server,
            client,
            to_server: Vec::new(),
            to_client: Vec::new(),
            started: false,
            client_done: false,
            server_done: false,
        }
    }

    /// The next STEP: which side, its session and its input (`None` once
    /// the handshake is over).
    fn next(&self) -> Option<(Side, SessionId, Vec<u8>)> {
        if !self.started {
            Some((Side::Client, self.client, Vec::new()))
        } else if !self.server_done && !self.to_server.is_empty() {
            Some((Side::Server, self.server, self.to_server.clone()))
        } else if !self.client_done && !self.to_client.is_empty() {
            Some((Side::Client, self.client, self.to_client.clone()))
        } else {
            None
        }
    }

    /// Take a STEP's reply.
    fn absorb(&mut self, side: Side, reply: &[u8]) {
        let r = decode::<StepReply>(reply).unwrap();
        assert_ne!(r.outcome, StepOutcome::Failed, "{side:?} step failed");
        let established = r.outcome == StepOutcome::Established;
        match side {
            Side::Client => {
                self.started = true;
                self.client_done = established;
                self.to_client.clear();
                self.to_server.extend_from_slice(r.output);
            }
            Side::Server => {
                self.server_done = established;
                self.to_server.clear();
                self.to_client.extend_from_slice(r.output);
            }
        }
    }

    /// Run the next STEP to its completion.
    fn advance(&mut self, w: &World, file: FileId) {
        let (side, session, input) = self.next().expect("a step to run");
        let (st, reply) = w.step(file, session, &input);
        assert_eq!(st, STATUS_SUCCESS, "{side:?} step");
        self.absorb(side, &reply);
    }

    /// Both sides established and nothing left for the server; what is left
    /// for the client (TLS 1.3 tickets) is in `to_client`.
    fn finished(&self) -> bool {
        self.client_done && self.server_done && self.to_server.is_empty()
    }
}

fn cell_world(cell: &Cell) -> World {
    let (store, thumb) = pki();
    let mut w = world_in(
        store,
        *thumb,
        SimConfig {
            completion: cell.mode,
            callback_irql: CallbackIrql::Mixed,
            seed: cell.seed,
            tls13_tickets: TICKETS,
            ..SimConfig::default()
        },
        DeviceConfig::default(),
    );
    w.protocols = cell.protocol;
    w
}

/// The number of STEP requests a whole handshake takes under `protocol`.
fn handshake_steps(protocol: u32) -> usize {
    let w = cell_world(&Cell {
        mode: CompletionPolicy::Always(Completion::Async),
        protocol,
        moment: Moment::Step(0),
        action: Action::Close,
        timing: Timing::Pended,
        seed: 1,
    });
    let file = w.dev.open_file();
    let (_, server) = w.open(file, Role::Server, b"");
    let (_, client) = w.open(file, Role::Client, b"localhost");
    let mut hs = Handshake::new(server.session, client.session);
    let mut steps = 0;
    while hs.next().is_some() {
        hs.advance(&w, file);
        steps += 1;
        assert!(steps < 12, "the handshake does not end");
    }
    assert!(hs.finished());
    w.dev.unload();
    w.finish();
    steps
}

/// The request a cell acts on: what to send, and what a successful reply
/// must say.
struct Target {
    file: FileId,
    code: u32,
    input: Vec<u8>,
    capacity: usize,
    /// Its session (for OPEN: the one its pend key names).
    session: Option<SessionId>,
    /// The other session on its file.
    peer: SessionId,
    /// Whether the peer has established (so ENCRYPT shows it alive).
    peer_established: bool,
    /// The plaintext a whole-record DECRYPT must give back.
    plaintext: Vec<u8>,
}

/// Set a cell's world up to its moment: the target's file with the target's
/// session (or, for OPEN, a peer already open) and its peer.
fn prepare(w: &World, cell: &Cell, file: FileId) -> Target {
    let open = |role, target: &[u8]| {
        let (st, r) = w.open(file, role, target);
        assert_eq!((st, r.status), (STATUS_SUCCESS, 0), "{cell} OPEN");
        r.session
    };
    if let Moment::Open(role) = cell.moment {
        let peer = open(Role::Server, b"");
        let target = if role == Role::Client {
            &b"localhost"[..]
        } else {
            b""
        };
        return Target {
            file,
            code: IOCTL_KSSPI_OPEN,
            input: w.open_input_with(role, target, cell.protocol),
            capacity: 64,
            session: None,
            peer,
            peer_established: false,
            plaintext: Vec::new(),
        };
    }
    let server = open(Role::Server, b"");
    let client = open(Role::Client, b"localhost");
    let mut hs = Handshake::new(server, client);
    if let Moment::Step(n) = cell.moment {
        for _ in 0..n {
            hs.advance(w, file);
        }
        let (side, session, input) = hs.next().expect("the step exists");
        let peer = if side == Side::Client { server } else { client };
        return Target {
            file,
            code: IOCTL_KSSPI_STEP,
            input: enc(&StepRequest {
                session,
                input: &input,
            }),
            capacity: STEP_REPLY,
            session: Some(session),
            peer,
            peer_established: false,
            plaintext: Vec::new(),
        };
    }
    while hs.next().is_some() {
        hs.advance(w, file);
    }
    assert!(hs.finished(), "{cell} handshake");
    let tickets = std::mem::take(&mut hs.to_client);
    let plaintext = payload(3000, cell.seed as u8);
    let record = |session, bytes: &[u8]| enc(&DecryptRequest(RecordRequest { session, bytes }));
    let (code, input, capacity, session, peer) = match cell.moment {
        Moment::Encrypt => (
            IOCTL_KSSPI_ENCRYPT,
            enc(&EncryptRequest(RecordRequest {
                session: client,
                bytes: &plaintext,
            })),
            encrypt_reply_capacity(plaintext.len()),
            client,
            server,
        ),
        Moment::DecryptRecord => {
            let wire = w.seal(file, client, &plaintext);
            let input = record(server, &wire);
            (IOCTL_KSSPI_DECRYPT, input, RECORD_REPLY, server, client)
        }
        Moment::DecryptPartial => {
            let wire = w.seal(file, client, &plaintext);
            let input = record(server, &wire[..wire.len() / 2]);
            (IOCTL_KSSPI_DECRYPT, input, RECORD_REPLY, server, client)
        }
        Moment::DecryptTicket => {
            assert!(!tickets.is_empty(), "{cell}: TLS 1.3 tickets");
            let input = record(client, &tickets);
            (IOCTL_KSSPI_DECRYPT, input, RECORD_REPLY, client, server)
        }
        Moment::Query => (
            IOCTL_KSSPI_QUERY,
            enc(&QueryRequest { session: client }),
            QUERY_REPLY_CAPACITY,
            client,
            server,
        ),
        Moment::Shutdown => (
            IOCTL_KSSPI_SHUTDOWN,
            enc(&ShutdownRequest { session: client }),
            RECORD_REPLY,
            client,
            server,
        ),
        Moment::Open(_) | Moment::Step(_) => unreachable!(),
    };
    Target {
        file,
        code,
        input,
        capacity,
        session: Some(session),
        peer,
        peer_established: true,
        plaintext,
    }
}

/// Check a successful reply to the target says what its moment makes it say.
fn check_success(cell: &Cell, t: &Target, session: SessionId, reply: &[u8]) {
    match cell.moment {
        Moment::Open(_) => {
            let r = decode::<OpenReply>(reply).unwrap();
            assert_eq!((r.status, r.session), (0, session), "{cell} OpenReply");
        }
        Moment::Step(_) => {
            let r = decode::<StepReply>(reply).unwrap();
            assert_ne!(r.outcome, StepOutcome::Failed, "{cell} StepReply");
        }
        Moment::Encrypt => {
            let r = decode::<EncryptReply>(reply).unwrap();
            assert_eq!(r.status, 0, "{cell} EncryptReply");
            assert!(!r.output.is_empty());
        }
        Moment::Query => {
            let r = decode::<QueryReply>(reply).unwrap();
            assert!(
                r.protocol != 0 && r.peer_certificates >= 1,
                "{cell} QueryReply"
            );
        }
        Moment::DecryptRecord => {
            let r = decode::<RecordReply>(reply).unwrap();
            assert_eq!((r.outcome, r.missing), (RecordOutcome::Data, 0), "{cell}");
            assert!(r.data == t.plaintext, "{cell}: the plaintext");
        }
        Moment::DecryptPartial => {
            let r = decode::<RecordReply>(reply).unwrap();
            assert_eq!(r.outcome, RecordOutcome::Data, "{cell}");
            assert!(r.data.is_empty() && r.missing > 0, "{cell}: MISSING said");
        }
        Moment::DecryptTicket => {
            let r = decode::<RecordReply>(reply).unwrap();
            assert_eq!(r.outcome, RecordOutcome::Data, "{cell}");
            assert!(r.renegotiations >= 1, "{cell}: through the handshake call");
        }
        Moment::Shutdown => {
            let r = decode::<RecordReply>(reply).unwrap();
            assert_eq!(
                (r.outcome, r.status),
                (RecordOutcome::ShutDown, 0),
                "{cell}"
            );
            assert!(!r.output.is_empty(), "{cell}: close_notify");
        }
    }
}

fn spin_until(what: &str, cell: &Cell, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready() {
        assert!(Instant::now() < deadline, "{cell}: {what} within 20 s");
        std::thread::yield_now();
    }
}

fn is_done(done: &Done) -> bool {
    !done.0.lock().unwrap().is_empty()
}

/// Run one cell in a fresh world.
fn run_cell(cell: Cell) -> CellResult {
    let mut w = cell_world(&cell);
    if matches!(cell.moment, Moment::Open(_)) {
        // The sessions opened first ask for other credentials than the
        // OPEN acted on, so it has its own to acquire (whether or not the
        // device keeps credentials between OPENs).
        w.protocols = proto::ALL;
    }
    let file = w.dev.open_file();
    let other = w.dev.open_file();
    // A session on another file, which takes a step of its own meanwhile.
    let (st, bystander) = w.open(other, Role::Client, b"localhost");
    assert_eq!((st, bystander.status), (STATUS_SUCCESS, 0), "{cell}");
    let bystander = bystander.session;
    let t = prepare(&w, &cell, file);

    let gate = w.sim.hold_completions();
    let (by_done, _) = w.send_tracked(
        other,
        IOCTL_KSSPI_STEP,
        &step_input(bystander),
        STEP_REPLY,
        false,
    );
    let (request, done, key) = w.request(t.capacity, false);
    let pended_key = || *key.lock().unwrap();
    let mut pending_at_action = false;
    let mut by_pending_at_action = false;
    let mut cancelled = None;
    let mut session = t.session;
    let act = |session: Option<SessionId>| -> Option<bool> {
        match cell.action {
            Action::Cancel => Some(w.cancel_at_dispatch(pended_key().expect("a pend key"))),
            Action::Close => {
                let s = session.expect("the session to close");
                assert_eq!(w.close(t.file, s), STATUS_SUCCESS, "{cell} CLOSE");
                None
            }
            Action::Cleanup => {
                w.dev.cleanup(t.file);
                None
            }
            Action::Unload => {
                w.dev.unload();
                None
            }
        }
    };
    match cell.timing {
        Timing::Pended => {
            w.dev.ioctl(t.file, t.code, &t.input, request, &at());
            pending_at_action = !is_done(&done);
            if cell.moment.pends() && cell.mode == ASYNC {
                assert!(pending_at_action, "{cell}: the request pends");
            }
            if !cell.moment.pends() {
                assert!(!pending_at_action, "{cell}: a synchronous call");
            }
            if !cell.moment.never_pended() {
                let k = pended_key().expect("the engine pended the request");
                assert_eq!(k.file, t.file, "{cell}");
                session = Some(k.session);
            }
            by_pending_at_action = !is_done(&by_done);
            cancelled = act(session);
            gate.release();
        }
        Timing::Raced => {
            std::thread::scope(|s| {
                let sender = s.spawn(|| w.dev.ioctl(t.file, t.code, &t.input, request, &at()));
                if !cell.moment.never_pended() {
                    spin_until("the pend", &cell, || pended_key().is_some());
                    session = pended_key().map(|k| k.session);
                }
                gate.release();
                pending_at_action = !is_done(&done);
                by_pending_at_action = !is_done(&by_done);
                cancelled = act(session);
                sender.join().unwrap();
            });
        }
    }
    if cancelled == Some(true) {
        assert!(
            is_done(&done),
            "{cell}: a cancel completes the request at once"
        );
    }
    if matches!(cell.moment, Moment::Open(_)) {
        // OPEN has no call of its own to wait for: whatever the action, it
        // is completed when the action returns, or its completion is under
        // way then (the credentials' continuation completes it outside the
        // table lock, and the action may come between).
        spin_until("OPEN completed by the action", &cell, || is_done(&done));
    }

    // The request acted on: exactly once, with the status its timing allows.
    let (status, reply) = wait(&done);
    let race = if !pending_at_action {
        Race::CompletedFirst
    } else if cell.timing == Timing::Pended && cell.mode == ASYNC {
        Race::Held
    } else {
        Race::Raced
    };
    if cell.action == Action::Cancel && race != Race::Raced {
        assert_eq!(
            cancelled,
            Some(race == Race::Held),
            "{cell}: cancel completes a held request, and only that"
        );
    }
    let expected: &[NtStatus] = if race == Race::CompletedFirst {
        &[STATUS_SUCCESS]
    } else if race == Race::Held || cancelled == Some(true) {
        &[STATUS_CANCELLED]
    } else if cancelled == Some(false) {
        &[STATUS_SUCCESS]
    } else if cell.moment.never_pended() {
        // Never pended: it ran first, or found its session closed.
        &[STATUS_SUCCESS, STATUS_INVALID_HANDLE]
    } else if matches!(cell.moment, Moment::Open(_)) {
        &[STATUS_SUCCESS, STATUS_CANCELLED]
    } else {
        // Its call ran first, the close cut it short, or the close came
        // between the pend and the start of its call (which then finds the
        // session closed).
        &[STATUS_SUCCESS, STATUS_CANCELLED, STATUS_INVALID_HANDLE]
    };
    assert!(
        expected.contains(&status),
        "{cell}: status {status:#x}, expected one of {expected:x?}"
    );
    let session = session.unwrap_or_else(|| {
        assert!(cell.moment.never_pended());
        t.session.unwrap()
    });
    if status == STATUS_SUCCESS {
        check_success(&cell, &t, session, &reply);
    }
    if let Some(k) = pended_key() {
        // A cancel routine that runs now finds nothing to complete.
        assert!(!w.cancel_at_dispatch(k), "{cell}: a second cancel");
    }

    // Its session is gone, whatever won.
    let after = match cell.moment {
        Moment::Open(_) | Moment::Step(_) => w.step(t.file, session, &[]).0,
        _ => w.encrypt(t.file, session, b"after").0,
    };
    assert_eq!(
        after, STATUS_INVALID_HANDLE,
        "{cell}: the session takes no more"
    );
    assert_eq!(
        w.close(t.file, session),
        STATUS_INVALID_HANDLE,
        "{cell}: the session is closed"
    );

    // The bystander's step: untouched unless the device unloads.
    let (by_status, by_reply) = wait(&by_done);
    let by_held = cell.timing == Timing::Pended && by_pending_at_action && cell.mode == ASYNC;
    let by_expected: &[NtStatus] = match cell.action {
        Action::Unload if by_held => &[STATUS_CANCELLED],
        Action::Unload if !by_pending_at_action => &[STATUS_SUCCESS],
        Action::Unload => &[STATUS_SUCCESS, STATUS_CANCELLED],
        _ => &[STATUS_SUCCESS],
    };
    assert!(
        by_expected.contains(&by_status),
        "{cell}: the other file's step completed {by_status:#x}, expected {by_expected:x?}"
    );
    if by_status == STATUS_SUCCESS {
        let r = decode::<StepReply>(&by_reply).unwrap();
        assert_eq!(r.outcome, StepOutcome::NeedInput, "{cell}: a ClientHello");
    }

    // The peer on the same file: alive unless the file or the device closed.
    let peer_alive = matches!(cell.action, Action::Cancel | Action::Close);
    if peer_alive {
        // The target's session is released once its call completed; the
        // peer stays.
        spin_until("the session released", &cell, || {
            w.dev.sessions_of(t.file) == 1
        });
    }
    if peer_alive && t.peer_established {
        let (st, reply) = w.encrypt(t.file, t.peer, b"the peer goes on");
        assert_eq!(st, STATUS_SUCCESS, "{cell}: the peer encrypts");
        assert_eq!(decode::<EncryptReply>(&reply).unwrap().status, 0, "{cell}");
    }
    if cell.action == Action::Cleanup {
        spin_until("the file's sessions gone", &cell, || {
            w.dev.sessions_of(t.file) == 0
        });
        assert_eq!(
            w.dev.sessions_of(other),
            1,
            "{cell}: the other file's session"
        );
    }
    let (peer_close, by_close) = match cell.action {
        Action::Cancel | Action::Close => (STATUS_SUCCESS, STATUS_SUCCESS),
        Action::Cleanup => (STATUS_INVALID_HANDLE, STATUS_SUCCESS),
        Action::Unload => (STATUS_INVALID_HANDLE, STATUS_INVALID_HANDLE),
    };
    assert_eq!(w.close(t.file, t.peer), peer_close, "{cell}: the peer");
    assert_eq!(
        w.close(other, bystander),
        by_close,
        "{cell}: the other file"
    );

    // Nothing left: every session released, every request completed once,
    // no leak at the model's unload.
    w.check_all_completed_once();
    let requests = w.requests();
    w.finish();
    CellResult {
        race,
        status,
        requests,
    }
}

/// Run every action and timing at every moment `moments` gives for a
/// protocol, in every mode; print the test's summary.
fn run_matrix(what: &str, moments: impl Fn(u32) -> Vec<Moment>) -> Tally {
    let started = Instant::now();
    let mut tally = Tally::default();
    let mut seed = 100;
    for mode in MODES {
        for protocol in PROTOCOLS {
            for moment in moments(protocol) {
                for action in ACTIONS {
                    for timing in TIMINGS {
                        if moment.never_pended() && action == Action::Cancel {
                            continue; // never pended: nothing to cancel
                        }
                        tally.cells += 1;
                        for _ in 0..RUNS {
                            seed += 1;
                            let cell = Cell {
                                mode,
                                protocol,
                                moment,
                                action,
                                timing,
                                seed,
                            };
                            tally.add(&run_cell(cell));
                        }
                    }
                }
            }
        }
    }
    tally.report(what, started);
    tally
}

#[test]
fn cancel_close_cleanup_or_unload_while_open_acquires_credentials() {
    let tally = run_matrix("OPEN", |_| {
        vec![Moment::Open(Role::Server), Moment::Open(Role::Client)]
    });
    assert_eq!(tally.cells, 2 * 2 * 2 * ACTIONS.len() * TIMINGS.len());
}

#[test]
fn cancel_close_cleanup_or_unload_at_every_handshake_step() {
    let steps = [proto::TLS12, proto::TLS13].map(handshake_steps);
    assert!(steps[0] > steps[1], "TLS 1.2 takes more flights: {steps:?}");
    let tally = run_matrix("handshake steps", |protocol| {
        let n = if protocol == proto::TLS12 {
            steps[0]
        } else {
            steps[1]
        };
        (0..n).map(Moment::Step).collect()
    });
    println!(
        "cancel matrix (handshake steps): TLS 1.2 {} steps, TLS 1.3 {} steps",
        steps[0], steps[1]
    );
    assert_eq!(
        tally.cells,
        MODES.len() * (steps[0] + steps[1]) * ACTIONS.len() * TIMINGS.len()
    );
}

#[test]
fn cancel_close_cleanup_or_unload_at_every_record_call() {
    let tally = run_matrix("record calls", |protocol| {
        let mut m = vec![
            Moment::Encrypt,
            Moment::Query,
            Moment::DecryptRecord,
            Moment::DecryptPartial,
            Moment::Shutdown,
        ];
        if protocol == proto::TLS13 {
            m.push(Moment::DecryptTicket);
        }
        m
    });
    // ENCRYPT and QUERY are never pended, so they have no cancel cells.
    let per_mode = (5 + 6) * ACTIONS.len() * TIMINGS.len() - 2 * 2 * TIMINGS.len();
    assert_eq!(tally.cells, MODES.len() * per_mode);
}

/// ENCRYPT and QUERY run outside the table lock on a borrowed session: a
/// CLOSE, cleanup or unload landing while one runs must make it (and every
/// later one) fail with `STATUS_INVALID_HANDLE`, never `STATUS_DEVICE_BUSY`
/// (the session is gone, not busy). One thread sends them back to back
/// while another closes, many times over.
#[test]
fn encrypt_and_query_racing_a_close_see_success_then_invalid_handle() {
    let started = Instant::now();
    let (mut runs, mut requests, mut cut) = (0, 0, 0);
    for mode in MODES {
        for action in [Action::Close, Action::Cleanup, Action::Unload] {
            for moment in [Moment::Encrypt, Moment::Query] {
                for run in 0..RACE_RUNS {
                    let cell = Cell {
                        mode,
                        protocol: PROTOCOLS[run as usize % 2],
                        moment,
                        action,
                        timing: Timing::Raced,
                        seed: 5000 + run,
                    };
                    let w = cell_world(&cell);
                    let file = w.dev.open_file();
                    let t = prepare(&w, &cell, file);
                    let session = t.session.unwrap();
                    let sent = AtomicUsize::new(0);
                    let statuses = std::thread::scope(|s| {
                        let sender = s.spawn(|| {
                            let mut statuses = Vec::new();
                            loop {
                                let (st, reply) = w.call(file, t.code, &t.input, t.capacity);
                                if st == STATUS_SUCCESS {
                                    check_success(&cell, &t, session, &reply);
                                }
                                statuses.push(st);
                                sent.fetch_add(1, Ordering::Relaxed);
                                if st != STATUS_SUCCESS {
                                    return statuses;
                                }
                            }
                        });
                        // Let a few through first (none to three).
                        let first = run as usize % 4;
                        spin_until("the first requests", &cell, || {
                            sent.load(Ordering::Relaxed) >= first
                        });
                        match action {
                            Action::Close => {
                                assert_eq!(w.close(file, session), STATUS_SUCCESS, "{cell}")
                            }
                            Action::Cleanup => _ = w.dev.cleanup(file),
                            _ => _ = w.dev.unload(),
                        }
                        sender.join().unwrap()
                    });
                    let (last, before) = statuses.split_last().unwrap();
                    assert_eq!(
                        *last,
                        STATUS_INVALID_HANDLE,
                        "{cell}: after {} successes",
                        before.len()
                    );
                    assert!(before.iter().all(|&st| st == STATUS_SUCCESS), "{cell}");
                    cut += usize::from(!before.is_empty());
                    runs += 1;
                    requests += w.requests();
                    w.dev.unload();
                    w.finish();
                }
            }
        }
    }
    println!(
        "cancel matrix (ENCRYPT/QUERY racing a close): {runs} runs, {requests} requests, \
         all completed once; the close landed after at least one success in {cut}; {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
