//! A hostile peer's bytes into a server or a client session over the model.
//!
//! The session under test (the victim) talks to an honest session of the
//! other role. Everything the victim sends reaches the honest side intact;
//! what the honest side sends reaches the victim as the script says
//! ([`Op`]): intact, with a byte flipped, in pieces, partly dropped, or
//! replaced by raw bytes. Both sides write application data and shut down
//! when told to. [`handshake`] starts at the first flight; [`record`]
//! completes an honest handshake first, so the script works on the record
//! layer (post-handshake messages, close_notify, tampered records).
//!
//! What must hold, whatever the bytes:
//! - every call is accepted or refused at once, and every accepted one
//!   reports (within 20 s); none is refused as busy, since the driver of
//!   the run waits for each report;
//! - a finished handshake refuses further steps; a failed record layer
//!   refuses further decrypts;
//! - the honest side only ever decrypts what the victim encrypted, in
//!   order; while nothing but honest bytes reached the victim, the victim
//!   only decrypts what the honest side encrypted, in order;
//! - both sessions close exactly once and the model is clean at unload.

use crate::input::Input;
use ksspi::engine::{Outcome, RecordError, RecordOutcome, StepError};
use ksspi::sys::{SP_PROT_TLS1_2, SP_PROT_TLS1_3};
use ksspi_sim::drive::{passive, Pair, Recorder, SimSession};

/// The operations of a script, by their byte (taken modulo the count).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// Deliver what the honest side sent.
    Deliver = 0,
    /// Flip one byte of it (offset, xor mask), then deliver.
    Flip,
    /// Deliver raw bytes of the script's own.
    Raw,
    /// Deliver only the first N bytes of it (the rest waits).
    Split,
    /// Drop its first N bytes.
    Drop,
    /// The honest side writes N bytes of application data.
    HonestWrite,
    /// The victim writes N bytes of application data.
    VictimWrite,
    /// The victim (bit 0 clear) or the honest side shuts down.
    Shutdown,
}

impl Op {
    const ALL: [Op; 8] = [
        Op::Deliver,
        Op::Flip,
        Op::Raw,
        Op::Split,
        Op::Drop,
        Op::HonestWrite,
        Op::VictimWrite,
        Op::Shutdown,
    ];

    /// The operation a script byte selects.
    pub fn from_byte(b: u8) -> Op {
        Op::ALL[usize::from(b) % Op::ALL.len()]
    }
}

/// Where one side is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Handshaking,
    Established,
    /// Handshake or record layer failed, or the peer closed: no more input.
    Done,
}

/// One side of the connection and what it has seen.
struct Side<'a> {
    session: &'a SimSession,
    events: &'a Recorder,
    state: State,
    /// It completed its handshake (whatever came after).
    established: bool,
    shut_down: bool,
    /// Application data it encrypted, and what it decrypted.
    sent: Vec<u8>,
    got: Vec<u8>,
}

impl<'a> Side<'a> {
    fn new(session: &'a SimSession, events: &'a Recorder) -> Self {
        Side {
            session,
            events,
            state: State::Handshaking,
            established: false,
            shut_down: false,
            sent: Vec::new(),
            got: Vec::new(),
        }
    }

    /// Feed the peer's bytes (a step while handshaking, a decrypt after);
    /// returns what this side sends back.
    fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        let at = passive();
        match self.state {
            State::Handshaking => match self.session.step(bytes, &at) {
                Ok(()) => {
                    let r = self.events.next();
                    let mut out = r.output;
                    match r.outcome {
                        Outcome::NeedInput { .. } => {}
                        Outcome::Established => {
                            self.state = State::Established;
                            self.established = true;
                            // What followed the handshake in the same input.
                            out.extend(self.feed(&[]));
                        }
                        Outcome::Failed(_) => self.state = State::Done,
                    }
                    out
                }
                Err(StepError::TooMuchInput) => Vec::new(),
                Err(e) => panic!("a step refused while handshaking: {e:?}"),
            },
            State::Established => match self.session.decrypt(bytes, &at) {
                Ok(()) => {
                    let r = self.events.next_record();
                    self.got.extend_from_slice(&r.data);
                    match r.outcome {
                        RecordOutcome::Data { .. } | RecordOutcome::ShutDown => {}
                        RecordOutcome::PeerClosed | RecordOutcome::Failed(_) => {
                            self.state = State::Done
                        }
                    }
                    r.output
                }
                Err(RecordError::TooMuchInput) => Vec::new(),
                Err(e) => panic!("a decrypt refused while established: {e:?}"),
            },
            State::Done => {
                // Refused, and nothing changes.
                match self.session.step(bytes, &at) {
                    Err(StepError::Finished) => {}
                    other => panic!("a step after the end: {other:?}"),
                }
                if let Ok(()) = self.session.decrypt(bytes, &at) {
                    panic!("a decrypt accepted after the end");
                }
                Vec::new()
            }
        }
    }

    /// Encrypt `n` bytes of a pattern; returns the records.
    fn write(&mut self, n: usize) -> Vec<u8> {
        let at = passive();
        let data: Vec<u8> = (0..n).map(|i| (self.sent.len() + i) as u8 ^ 0xA5).collect();
        let Some(len) = self.session.sealed_len(n) else {
            // Not established (or closed).
            let mut out = [0u8; 64];
            let refused = self.session.encrypt(&data, &mut out, &at);
            assert!(
                refused.is_err() || self.state == State::Established,
                "an encrypt accepted before the handshake"
            );
            return Vec::new();
        };
        let mut out = vec![0u8; len];
        match self.session.encrypt(&data, &mut out, &at) {
            Ok(sealed) => {
                let written = sealed.len;
                assert!(!self.shut_down, "an encrypt accepted after shutdown");
                let max = self.session.stream_sizes().map_or(1, |s| s.max_message);
                assert_eq!(sealed.records, n.div_ceil(max), "records for {n} bytes");
                assert!(written <= len, "wrote {written} of {len} bytes");
                out.truncate(written);
                self.sent.extend_from_slice(&data);
                out
            }
            Err(RecordError::ShutDown) => {
                assert!(self.shut_down, "refused as shut down before shutdown");
                Vec::new()
            }
            Err(RecordError::Failed(_) | RecordError::PeerClosed) => Vec::new(),
            Err(e) => panic!("an encrypt refused: {e:?}"),
        }
    }

    /// Shut down; returns close_notify (or nothing if refused).
    fn shutdown(&mut self) -> Vec<u8> {
        match self.session.shutdown(&passive()) {
            Ok(()) => {
                let r = self.events.next_record();
                self.got.extend_from_slice(&r.data);
                self.shut_down = true;
                if let RecordOutcome::Failed(_) = r.outcome {
                    self.state = State::Done;
                }
                r.output
            }
            Err(_) => Vec::new(),
        }
    }
}

/// What a run reached (so the seeds can be checked to go deep).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// The victim completed its handshake.
    pub victim_established: bool,
    /// Application bytes the victim decrypted.
    pub victim_got: usize,
    /// Application bytes the honest side decrypted.
    pub honest_got: usize,
    /// Only honest bytes reached the victim, in order.
    pub untainted: bool,
}

/// Run a handshake script (see the module documentation).
pub fn handshake(data: &[u8]) {
    run(data, false);
}

/// Run a record-layer script: an honest handshake first.
pub fn record(data: &[u8]) {
    run(data, true);
}

/// [`handshake`] or [`record`], returning what the run reached.
pub fn run(data: &[u8], established_first: bool) -> Summary {
    let mut inp = Input::new(data);
    let b = inp.u8();
    let victim_is_client = b & 1 != 0;
    let disabled = match b >> 1 & 3 {
        1 => SP_PROT_TLS1_3,
        2 => SP_PROT_TLS1_2,
        _ => 0,
    };
    let sim = crate::model(&mut inp);
    let pair = Pair::new(&sim, crate::pki().1, "localhost", (disabled, disabled));
    let summary = {
        let (server, client) = (
            Side::new(&pair.server, &pair.server_events),
            Side::new(&pair.client, &pair.client_events),
        );
        let (mut victim, mut honest) = if victim_is_client {
            (client, server)
        } else {
            (server, client)
        };
        let mut conn = Conn {
            to_victim: Vec::new(),
            tainted: false,
        };
        // The client speaks first.
        if victim_is_client {
            let out = victim.feed(&[]);
            conn.send_honest(&mut honest, out);
        } else {
            conn.to_victim = honest.feed(&[]);
        }
        if established_first {
            for _ in 0..16 {
                if conn.to_victim.is_empty() {
                    break;
                }
                let bytes = std::mem::take(&mut conn.to_victim);
                let out = victim.feed(&bytes);
                conn.send_honest(&mut honest, out);
            }
        }
        for _ in 0..48 {
            if inp.is_empty() {
                break;
            }
            conn.op(&mut inp, &mut victim, &mut honest);
            assert!(
                victim.sent.starts_with(&honest.got),
                "the honest side decrypted what the victim never sent"
            );
            if !conn.tainted {
                assert!(
                    honest.sent.starts_with(&victim.got),
                    "the victim decrypted what the honest side never sent"
                );
            }
        }
        Summary {
            victim_established: victim.established,
            victim_got: victim.got.len(),
            honest_got: honest.got.len(),
            untainted: !conn.tainted,
        }
    };
    // Both close exactly once; credentials go; nothing is left at unload.
    pair.finish();
    summary
}

/// The connection between the two sides.
struct Conn {
    /// What the honest side sent that the victim has not been given yet.
    to_victim: Vec<u8>,
    /// Something other than the honest side's bytes, in order, reached the
    /// victim.
    tainted: bool,
}

impl Conn {
    /// Deliver the victim's bytes to the honest side; keep its answer.
    fn send_honest(&mut self, honest: &mut Side<'_>, bytes: Vec<u8>) {
        if !bytes.is_empty() {
            let answer = honest.feed(&bytes);
            self.to_victim.extend_from_slice(&answer);
        }
    }

    fn give(&mut self, victim: &mut Side<'_>, honest: &mut Side<'_>, bytes: &[u8]) {
        let out = victim.feed(bytes);
        self.send_honest(honest, out);
    }

    fn op(&mut self, inp: &mut Input<'_>, victim: &mut Side<'_>, honest: &mut Side<'_>) {
        match Op::from_byte(inp.u8()) {
            Op::Deliver => {
                let bytes = std::mem::take(&mut self.to_victim);
                self.give(victim, honest, &bytes);
            }
            Op::Flip => {
                let (offset, mask) = (usize::from(inp.u16()), inp.u8().max(1));
                let mut bytes = std::mem::take(&mut self.to_victim);
                if !bytes.is_empty() {
                    let i = offset % bytes.len();
                    bytes[i] ^= mask;
                    self.tainted = true;
                }
                self.give(victim, honest, &bytes);
            }
            Op::Raw => {
                let bytes = inp.bytes();
                self.tainted |= !bytes.is_empty();
                self.give(victim, honest, bytes);
            }
            Op::Split => {
                let n = usize::from(inp.u16()) % (self.to_victim.len() + 1);
                let bytes: Vec<u8> = self.to_victim.drain(..n).collect();
                self.give(victim, honest, &bytes);
            }
            Op::Drop => {
                let n = usize::from(inp.u16()) % (self.to_victim.len() + 1);
                self.tainted |= n > 0;
                self.to_victim.drain(..n);
            }
            Op::HonestWrite => {
                let records = honest.write(usize::from(inp.u16()) % 40_000);
                self.to_victim.extend_from_slice(&records);
            }
            Op::VictimWrite => {
                let records = victim.write(usize::from(inp.u16()) % 40_000);
                self.send_honest(honest, records);
            }
            Op::Shutdown => {
                if inp.u8() & 1 == 0 {
                    let notify = victim.shutdown();
                    self.send_honest(honest, notify);
                } else {
                    let notify = honest.shutdown();
                    self.to_victim.extend_from_slice(&notify);
                }
            }
        }
    }
}
