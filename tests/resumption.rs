//! Session resumption through the device over the model: OPEN's fourth
//! layout (`SessionOptions`) asks for it. Two client OPENs with resumption
//! on towards the same target share the device's cached credentials, whose
//! session cache makes the second handshake resume (TLS 1.2 by session id,
//! TLS 1.3 by the ticket the client's DECRYPT took after the handshake);
//! STEP's established reply and QUERY say so on both sides. A client with
//! resumption off gets credentials of its own (not cached, released when
//! its session closes): full handshakes. A server with it off refuses
//! reconnects. OPEN's older layouts work as before and their replies carry
//! none of the new bits (an older harness refuses them).

mod common;

use common::*;
use ksspi_abi::*;
use ksspi_driver::device::{DeviceConfig, FileId};
use ksspi_driver::ntstatus::*;
use ksspi_sim::certs::TestPki;
use ksspi_sim::verifier::Tag;
use ksspi_sim::{CallbackIrql, Completion, CompletionPolicy, SimConfig};
use std::sync::Arc;
use std::time::Duration;

/// How a side's OPEN is sent: `None` in OPEN's second layout (older), or
/// the fourth with this choice.
type Layout = Option<Resumption>;

fn open(w: &World, file: FileId, role: Role, resumption: Layout) -> SessionId {
    let target: &[u8] = if role == Role::Client {
        b"localhost"
    } else {
        b""
    };
    let req = OpenRequest {
        resumption,
        ..OpenRequest::new(role, w.protocols, w.thumb, target)
    };
    let (st, reply) = w.call(file, IOCTL_KSSPI_OPEN, &enc(&req), 64);
    assert_eq!(st, STATUS_SUCCESS);
    let open = decode::<OpenReply>(&reply).unwrap();
    assert_eq!(open.status, 0);
    open.session
}

/// What one side saw of a connection: its established reply's flags and
/// QUERY's resumed byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    flags: u8,
    query: u8,
}

const RESUMED: Seen = Seen {
    flags: step_flags::RESUMED,
    query: resumed::RESUMED,
};
const FULL: Seen = Seen {
    flags: step_flags::FULL_HANDSHAKE,
    query: resumed::FULL,
};
/// An older layout's session, or a provider that did not tell.
const NOTHING: Seen = Seen {
    flags: 0,
    query: resumed::UNKNOWN,
};

fn query_resumed(w: &World, file: FileId, session: SessionId) -> u8 {
    w.query(file, session, |q| {
        assert_ne!(q.protocol, 0);
        q.resumed
    })
}

/// One connection through the device: a server and a client session opened
/// in the given layouts, the handshake through STEP, the server's output
/// after it (TLS 1.3 tickets) DECRYPTed by the client so its session cache
/// takes them, both sessions queried and closed. Returns (client, server).
fn connect(w: &World, server_layout: Layout, client_layout: Layout) -> (Seen, Seen) {
    let file = w.dev.open_file();
    let server = open(w, file, Role::Server, server_layout);
    let client = open(w, file, Role::Client, client_layout);
    let step = |session, input: &[u8]| {
        let (st, reply) = w.step(file, session, input);
        assert_eq!(st, STATUS_SUCCESS);
        let r = decode::<StepReply>(&reply).unwrap();
        assert_ne!(r.outcome, StepOutcome::Failed, "status {:#x}", r.status);
        if r.outcome != StepOutcome::Established {
            assert_eq!(r.flags & !step_flags::CERTIFICATE_REQUESTED, 0);
        }
        (r.outcome, r.flags, r.output.to_vec())
    };
    let (mut c, mut s) = ((StepOutcome::NeedInput, 0), (StepOutcome::NeedInput, 0));
    let (_, _, mut to_server) = step(client, &[]);
    let mut to_client = Vec::new();
    for _ in 0..8 {
        if s.0 == StepOutcome::NeedInput && !to_server.is_empty() {
            let (outcome, flags, out) = step(server, &to_server);
            s = (outcome, flags);
            to_server.clear();
            to_client.extend_from_slice(&out);
        }
        if c.0 == StepOutcome::NeedInput && !to_client.is_empty() {
            let (outcome, flags, out) = step(client, &to_client);
            c = (outcome, flags);
            to_client.clear();
            to_server.extend_from_slice(&out);
        }
        if c.0 == StepOutcome::Established
            && s.0 == StepOutcome::Established
            && to_server.is_empty()
        {
            break;
        }
    }
    assert_eq!(
        (c.0, s.0),
        (StepOutcome::Established, StepOutcome::Established)
    );
    // What the server sent after the handshake: TLS 1.3 tickets, which the
    // client's session cache takes only through a DECRYPT.
    if !to_client.is_empty() {
        let (data, outcome, _) = w.unseal(file, client, &to_client, to_client.len());
        assert_eq!((data.len(), outcome), (0, RecordOutcome::Data));
    }
    let seen = (
        Seen {
            flags: c.1,
            query: query_resumed(w, file, client),
        },
        Seen {
            flags: s.1,
            query: query_resumed(w, file, server),
        },
    );
    assert_eq!(w.close(file, client), STATUS_SUCCESS);
    assert_eq!(w.close(file, server), STATUS_SUCCESS);
    assert_eq!(w.wait_sessions_gone(), 0);
    seen
}

fn world_for(protocols: u32) -> World {
    // Two TLS 1.3 tickets per handshake, as Schannel sends (the model's
    // default sends none).
    let mut w = world_with(CompletionPolicy::Mixed, 2, DeviceConfig::default());
    w.protocols = protocols;
    w
}

/// Credentials handles alive in the model, once releases under way are done.
fn live_credentials(w: &World) -> usize {
    w.sim.wait_idle();
    for _ in 0..400 {
        let before = w.sim.verifier().live_count(Tag::Credential);
        std::thread::sleep(Duration::from_millis(5));
        if w.sim.verifier().live_count(Tag::Credential) == before {
            return before;
        }
    }
    w.sim.verifier().live_count(Tag::Credential)
}

const ON: Layout = Some(Resumption::On);
const OFF: Layout = Some(Resumption::Off);

#[test]
fn get_info_says_resumption_is_there() {
    let w = world_for(proto::ALL);
    let file = w.dev.open_file();
    let (st, reply) = w.call(file, IOCTL_KSSPI_GET_INFO, &enc(&Empty), 4096);
    assert_eq!(st, STATUS_SUCCESS);
    let caps = decode::<InfoReply>(&reply).unwrap().capabilities;
    assert_ne!(caps & caps::RESUMPTION, 0);
    w.finish();
}

#[test]
fn a_second_open_towards_the_same_target_resumes_over_both_versions() {
    for protocols in [proto::TLS12, proto::TLS13] {
        let w = world_for(protocols);
        assert_eq!(connect(&w, ON, ON), (FULL, FULL), "{protocols}");
        assert_eq!(connect(&w, ON, ON), (RESUMED, RESUMED), "{protocols}");
        assert_eq!(connect(&w, ON, ON), (RESUMED, RESUMED), "{protocols}");
        // One cached handle per side, shared by every connection.
        assert_eq!(w.dev.credentials_cached(), 2);
        w.dev.unload();
        w.finish();
    }
}

#[test]
fn tls13_without_the_tickets_taken_does_not_resume() {
    // The same as above, with the model sending no tickets: what a client
    // that closes before reading the server's post-handshake messages gets.
    let mut w = world_with(CompletionPolicy::Mixed, 0, DeviceConfig::default());
    w.protocols = proto::TLS13;
    assert_eq!(connect(&w, ON, ON), (FULL, FULL));
    assert_eq!(connect(&w, ON, ON), (FULL, FULL));
    w.dev.unload();
    w.finish();
}

#[test]
fn a_client_with_resumption_off_gets_full_handshakes_and_credentials_of_its_own() {
    for protocols in [proto::TLS12, proto::TLS13] {
        let w = world_for(protocols);
        let acquired = w.sim.verifier().created(Tag::Credential);
        assert_eq!(connect(&w, ON, OFF), (FULL, FULL), "{protocols}");
        assert_eq!(connect(&w, ON, OFF), (FULL, FULL), "{protocols}");
        // Only the server's credentials are cached; each client OPEN
        // acquired its own, released with its session.
        assert_eq!(w.dev.credentials_cached(), 1, "{protocols}");
        assert_eq!(
            w.sim.verifier().created(Tag::Credential),
            acquired + 3,
            "{protocols}: one server handle, two client handles"
        );
        assert_eq!(live_credentials(&w), 1, "{protocols}: only the cached one");
        // A client with resumption on shares the cache again: its first
        // handshake is full (the private handles' sessions went with them),
        // its second resumes.
        assert_eq!(connect(&w, ON, ON), (FULL, FULL), "{protocols}");
        assert_eq!(connect(&w, ON, ON), (RESUMED, RESUMED), "{protocols}");
        // Off after on: the cached session is not offered.
        assert_eq!(connect(&w, ON, OFF), (FULL, FULL), "{protocols}");
        assert_eq!(live_credentials(&w), 2, "{protocols}");
        w.dev.unload();
        assert_eq!(live_credentials(&w), 0, "{protocols}");
        w.finish();
    }
}

#[test]
fn a_client_off_whose_open_is_closed_while_opening_leaks_nothing() {
    let w = world_with(
        CompletionPolicy::Always(Completion::Async),
        2,
        DeviceConfig::default(),
    );
    let file = w.dev.open_file();
    let gate = w.sim.hold_completions();
    let req = OpenRequest {
        resumption: OFF,
        ..OpenRequest::new(Role::Client, w.protocols, w.thumb, b"localhost")
    };
    let pending = w.send(file, IOCTL_KSSPI_OPEN, &enc(&req), 64);
    assert!(pending.0.lock().unwrap().is_empty(), "the OPEN pends");
    w.dev.cleanup(file);
    gate.release();
    assert_eq!(wait(&pending).0, STATUS_CANCELLED);
    assert_eq!(w.wait_sessions_gone(), 0);
    assert_eq!(w.dev.credentials_cached(), 0);
    assert_eq!(live_credentials(&w), 0);
    w.finish();
}

#[test]
fn a_server_with_resumption_off_refuses_the_clients_offer() {
    for protocols in [proto::TLS12, proto::TLS13] {
        let w = world_for(protocols);
        // The client's first session is cached towards "localhost"...
        assert_eq!(connect(&w, ON, ON), (FULL, FULL), "{protocols}");
        // ...and offered to a server with reconnects off: a full handshake
        // (the fallback), on both sides.
        assert_eq!(connect(&w, OFF, ON), (FULL, FULL), "{protocols}");
        // The server with reconnects on still resumes the client (in TLS
        // 1.3 with the second of the two tickets: the model's client, as
        // rustls, uses a ticket once, and offered the first above).
        assert_eq!(connect(&w, ON, ON), (RESUMED, RESUMED), "{protocols}");
        assert_eq!(connect(&w, OFF, ON), (FULL, FULL), "{protocols}");
        // The server specs differ: two server handles and the client's.
        assert_eq!(w.dev.credentials_cached(), 3, "{protocols}");
        w.dev.unload();
        w.finish();
    }
}

#[test]
fn older_layouts_resume_as_before_and_their_replies_carry_no_new_bits() {
    for protocols in [proto::TLS12, proto::TLS13] {
        let w = world_for(protocols);
        // Both sides in OPEN's second layout: the cached credentials with
        // reconnects, as before the fourth layout; nothing in the replies.
        assert_eq!(connect(&w, None, None), (NOTHING, NOTHING), "{protocols}");
        assert_eq!(connect(&w, None, None), (NOTHING, NOTHING), "{protocols}");
        // The same credentials as a fourth-layout OPEN with resumption on:
        // such a client resumes the session the older one left.
        assert_eq!(w.dev.credentials_cached(), 2, "{protocols}");
        assert_eq!(connect(&w, None, ON), (RESUMED, NOTHING), "{protocols}");
        assert_eq!(connect(&w, ON, None), (NOTHING, RESUMED), "{protocols}");
        assert_eq!(w.dev.credentials_cached(), 2, "{protocols}");
        w.dev.unload();
        w.finish();
    }
    // OPEN's first layout too: its STEP reply's flags byte stays 0, and
    // QUERY's reserved word after the ALPN fields stays zero.
    let w = world_for(proto::ALL);
    let file = w.dev.open_file();
    let server = open(&w, file, Role::Server, None);
    let first = OpenRequest {
        client_auth: None,
        ..OpenRequest::new(Role::Client, w.protocols, [0; 20], b"localhost")
    };
    let (st, reply) = w.call(file, IOCTL_KSSPI_OPEN, &enc(&first), 64);
    assert_eq!(st, STATUS_SUCCESS);
    let client = decode::<OpenReply>(&reply).unwrap().session;
    establish(&w, file, server, client);
    let (st, reply) = w.call(
        file,
        IOCTL_KSSPI_QUERY,
        &enc(&QueryRequest { session: client }),
        QUERY_REPLY_CAPACITY,
    );
    assert_eq!(st, STATUS_SUCCESS);
    let fixed_end = QUERY_REPLY_CAPACITY - MAX_PEER_CERTIFICATE;
    assert_eq!(&reply[fixed_end - 4..fixed_end], &[0, 0, 0, 0]);
    assert_eq!(w.close(file, client), STATUS_SUCCESS);
    assert_eq!(w.close(file, server), STATUS_SUCCESS);
    w.dev.unload();
    w.finish();
}

#[test]
fn a_provider_that_does_not_tell_sets_neither_bit() {
    let (store, thumb) = TestPki::new("device CA").store(&["localhost"]);
    let config = SimConfig {
        completion: CompletionPolicy::Mixed,
        callback_irql: CallbackIrql::Mixed,
        seed: 7,
        tls13_tickets: 2,
        session_info_answered: false,
        ..SimConfig::default()
    };
    let w = world_in(&Arc::new(store), thumb, config, DeviceConfig::default());
    assert_eq!(connect(&w, ON, ON), (NOTHING, NOTHING));
    assert_eq!(connect(&w, ON, ON), (NOTHING, NOTHING));
    w.dev.unload();
    w.finish();
}

#[test]
fn a_provider_without_a_session_cache_gives_full_handshakes_and_says_so() {
    // The other answer to "does kernel Schannel keep sessions?": none kept,
    // so every handshake is full, and the driver reports that, not a guess.
    let config = SimConfig {
        completion: CompletionPolicy::Mixed,
        callback_irql: CallbackIrql::Mixed,
        seed: 8,
        tls13_tickets: 2,
        session_cache: false,
        ..SimConfig::default()
    };
    for protocols in [proto::TLS12, proto::TLS13] {
        let (store, thumb) = TestPki::new("device CA").store(&["localhost"]);
        let mut w = world_in(
            &Arc::new(store),
            thumb,
            config.clone(),
            DeviceConfig::default(),
        );
        w.protocols = protocols;
        assert_eq!(connect(&w, ON, ON), (FULL, FULL), "{protocols}");
        assert_eq!(connect(&w, ON, ON), (FULL, FULL), "{protocols}");
        w.dev.unload();
        w.finish();
    }
}
