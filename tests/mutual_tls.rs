//! Mutual TLS through the device over the model: a client certificate by
//! thumbprint in OPEN, a server asking for (or requiring) one, the step
//! reply's "the server asked for a certificate" flag, OPEN's first layout
//! still accepted (and answered without flags), and the credential cache
//! keeping clients with and without a certificate apart.

mod common;

use common::*;
use ksspi::SecStatus;
use ksspi_abi::*;
use ksspi_driver::device::{DeviceConfig, FileId};
use ksspi_driver::ntstatus::*;
use ksspi_sim::certs::TestPki;
use ksspi_sim::{Completion, CompletionPolicy};

/// The last reply of each side, and whether any client reply carried
/// [`step_flags::CERTIFICATE_REQUESTED`].
struct Ran {
    client: (StepOutcome, i32),
    server: (StepOutcome, i32),
    asked: bool,
}

fn server_open(w: &World, file: FileId, mode: ClientCertMode) -> SessionId {
    let req = OpenRequest {
        client_auth: Some(ClientAuth {
            server_mode: mode,
            ..ClientAuth::NONE
        }),
        ..OpenRequest::new(Role::Server, w.protocols, w.thumb, b"")
    };
    let (st, reply) = w.call(file, IOCTL_KSSPI_OPEN, &enc(&req), 64);
    assert_eq!(st, STATUS_SUCCESS);
    let open = decode::<OpenReply>(&reply).unwrap();
    assert_eq!(open.status, 0);
    open.session
}

fn client_open(w: &World, file: FileId, auth: Option<ClientAuth>) -> OpenReply {
    let req = OpenRequest {
        client_auth: auth,
        ..OpenRequest::new(Role::Client, w.protocols, [0; 20], b"localhost")
    };
    let (st, reply) = w.call(file, IOCTL_KSSPI_OPEN, &enc(&req), 64);
    assert_eq!(st, STATUS_SUCCESS);
    decode::<OpenReply>(&reply).unwrap()
}

fn with_certificate(thumbprint: [u8; 20]) -> Option<ClientAuth> {
    Some(ClientAuth {
        certificate: Some(thumbprint),
        store: STORE_MY,
        ..ClientAuth::NONE
    })
}

/// Step both sides until neither has anything to send.
fn run(w: &World, file: FileId, server: SessionId, client: SessionId) -> Ran {
    let step = |session, input: &[u8]| {
        let (st, reply) = w.step(file, session, input);
        assert_eq!(st, STATUS_SUCCESS);
        let r = decode::<StepReply>(&reply).unwrap();
        (r.outcome, r.status, r.flags, r.output.to_vec())
    };
    let (mut c_out, mut c_st, flags, mut to_server) = step(client, &[]);
    let mut asked = flags & step_flags::CERTIFICATE_REQUESTED != 0;
    let (mut s_out, mut s_st) = (StepOutcome::NeedInput, 0);
    for _ in 0..10 {
        if s_out != StepOutcome::NeedInput || to_server.is_empty() {
            break;
        }
        let (o, st, _, to_client) = step(server, &to_server);
        (s_out, s_st) = (o, st);
        to_server.clear();
        if c_out == StepOutcome::NeedInput && !to_client.is_empty() {
            let (o, st, flags, out) = step(client, &to_client);
            (c_out, c_st) = (o, st);
            asked |= flags & step_flags::CERTIFICATE_REQUESTED != 0;
            to_server = out;
        }
    }
    Ran {
        client: (c_out, c_st),
        server: (s_out, s_st),
        asked,
    }
}

/// The server's view of its peer: how many certificates, and the leaf.
fn peer_of(w: &World, file: FileId, session: SessionId) -> (u32, Vec<u8>) {
    w.query(file, session, |q| (q.peer_certificates, q.leaf.to_vec()))
}

/// A world whose model store also holds a client certificate (issued by a
/// CA the server does not know: Schannel's server takes it and reports it).
fn world_with_client(mode: Completion, protocols: u32) -> (World, [u8; 20], Vec<u8>) {
    let mut w = world(CompletionPolicy::Always(mode), DeviceConfig::default());
    w.protocols = protocols;
    let leaf = TestPki::new("client CA").leaf(&["client.example"], false);
    let der = leaf.chain_der[0].clone();
    let thumb = w
        .sim
        .store()
        .add_identity("MY", leaf.chain_der, leaf.key_der)
        .unwrap();
    (w, thumb, der)
}

const VERSIONS: [(u32, &str); 2] = [(proto::TLS12, "TLS 1.2"), (proto::TLS13, "TLS 1.3")];

#[test]
fn a_client_certificate_by_thumbprint_reaches_a_server_that_requires_one() {
    for mode in Completion::ALL {
        for (protocols, name) in VERSIONS {
            let (w, thumb, leaf) = world_with_client(mode, protocols);
            let file = w.dev.open_file();
            let server = server_open(&w, file, ClientCertMode::Require);
            let client = client_open(&w, file, with_certificate(thumb));
            assert_eq!(client.status, 0, "{name}");
            let ran = run(&w, file, server, client.session);
            assert_eq!(ran.client.0, StepOutcome::Established, "{name} {mode:?}");
            assert_eq!(ran.server.0, StepOutcome::Established, "{name} {mode:?}");
            assert!(
                !ran.asked,
                "{name}: a client with a certificate is not short of one"
            );
            // The leaf and its CA, as the client sent them.
            assert_eq!(peer_of(&w, file, server), (2, leaf.clone()), "{name}");
            w.close(file, server);
            w.close(file, client.session);
            w.wait_sessions_gone();
            w.finish();
        }
    }
}

#[test]
fn without_a_certificate_the_client_is_told_and_a_requiring_server_fails_it() {
    for (protocols, name) in VERSIONS {
        let (w, _, _) = world_with_client(Completion::Async, protocols);
        let file = w.dev.open_file();
        let server = server_open(&w, file, ClientCertMode::Require);
        let client = client_open(&w, file, Some(ClientAuth::NONE));
        let ran = run(&w, file, server, client.session);
        assert!(ran.asked, "{name}: the step reply says the server asked");
        assert_eq!(
            ran.server,
            (StepOutcome::Failed, SecStatus::SEC_E_NO_CREDENTIALS.0),
            "{name}: the server refuses a client without a certificate"
        );
        // TLS 1.3: the client finished before the server judged; TLS 1.2:
        // the server's Finished never went out.
        let want = if protocols == proto::TLS13 {
            StepOutcome::Established
        } else {
            StepOutcome::NeedInput
        };
        assert_eq!(ran.client.0, want, "{name}");
        w.close(file, server);
        w.close(file, client.session);
        w.wait_sessions_gone();
        w.finish();
    }
}

#[test]
fn a_requesting_server_serves_a_client_without_one_and_sees_no_certificate() {
    for (protocols, name) in VERSIONS {
        let (w, _, _) = world_with_client(Completion::Async, protocols);
        let file = w.dev.open_file();
        let server = server_open(&w, file, ClientCertMode::Request);
        let client = client_open(&w, file, Some(ClientAuth::NONE));
        let ran = run(&w, file, server, client.session);
        assert_eq!(
            (ran.client.0, ran.server.0, ran.asked),
            (StepOutcome::Established, StepOutcome::Established, true),
            "{name}"
        );
        assert_eq!(peer_of(&w, file, server).0, 0, "{name}");
        w.close(file, server);
        w.close(file, client.session);
        w.wait_sessions_gone();
        w.finish();
    }
}

#[test]
fn the_first_open_layout_is_accepted_and_answered_without_flags() {
    let (w, _, _) = world_with_client(Completion::Async, proto::TLS13);
    let file = w.dev.open_file();
    let server = server_open(&w, file, ClientCertMode::Request);
    let client = client_open(&w, file, None);
    assert_eq!(client.status, 0);
    let ran = run(&w, file, server, client.session);
    assert_eq!(
        (ran.client.0, ran.server.0),
        (StepOutcome::Established, StepOutcome::Established)
    );
    assert!(
        !ran.asked,
        "an older harness refuses a non-zero reserved byte: none is sent to it"
    );
    // And an old server OPEN asks for nothing.
    let old_server = OpenRequest {
        client_auth: None,
        ..OpenRequest::new(Role::Server, w.protocols, w.thumb, b"")
    };
    let (st, reply) = w.call(file, IOCTL_KSSPI_OPEN, &enc(&old_server), 64);
    assert_eq!(st, STATUS_SUCCESS);
    let old_server = decode::<OpenReply>(&reply).unwrap().session;
    let client2 = client_open(&w, file, Some(ClientAuth::NONE));
    let ran = run(&w, file, old_server, client2.session);
    assert_eq!((ran.client.0, ran.asked), (StepOutcome::Established, false));
    for s in [server, client.session, old_server, client2.session] {
        w.close(file, s);
    }
    w.wait_sessions_gone();
    w.finish();
}

#[test]
fn an_unknown_client_thumbprint_fails_open_and_the_cache_keeps_identities_apart() {
    let (w, thumb, _) = world_with_client(Completion::Async, proto::TLS13);
    let file = w.dev.open_file();
    let unknown = client_open(&w, file, with_certificate([0xEE; 20]));
    assert_eq!(unknown.status, SecStatus::SEC_E_NO_CREDENTIALS.0);
    // With a certificate, then without: the second must not get the first's
    // cached credentials (the cache keys on the client identity).
    let server = server_open(&w, file, ClientCertMode::Require);
    let with = client_open(&w, file, with_certificate(thumb));
    assert_eq!(
        run(&w, file, server, with.session).server.0,
        StepOutcome::Established
    );
    let server2 = server_open(&w, file, ClientCertMode::Require);
    let without = client_open(&w, file, Some(ClientAuth::NONE));
    let ran = run(&w, file, server2, without.session);
    assert_eq!(ran.server.0, StepOutcome::Failed);
    assert!(ran.asked);
    for s in [server, with.session, server2, without.session] {
        w.close(file, s);
    }
    w.wait_sessions_gone();
    w.finish();
}

/// OPEN with resumption on (OPEN's fourth layout) and the client-certificate
/// fields: the session, and whether its handshake resumed (STEP's flags).
fn open_resuming(w: &World, file: FileId, role: Role, auth: ClientAuth) -> SessionId {
    let req = OpenRequest {
        client_auth: Some(auth),
        resumption: Some(Resumption::On),
        ..OpenRequest::new(
            role,
            w.protocols,
            w.thumb,
            if role == Role::Client {
                b"localhost"
            } else {
                b""
            },
        )
    };
    let (st, reply) = w.call(file, IOCTL_KSSPI_OPEN, &enc(&req), 64);
    assert_eq!(st, STATUS_SUCCESS);
    let open = decode::<OpenReply>(&reply).unwrap();
    assert_eq!(open.status, 0);
    open.session
}

/// One connection with resumption on: (client resumed, server resumed,
/// whether the server saw a client certificate), the TLS 1.3 tickets taken
/// by the client.
fn connect_resuming(w: &World, client_thumb: [u8; 20], mode: ClientCertMode) -> (u8, u8, bool) {
    let file = w.dev.open_file();
    let server = open_resuming(
        w,
        file,
        Role::Server,
        ClientAuth {
            server_mode: mode,
            ..ClientAuth::NONE
        },
    );
    let client = open_resuming(
        w,
        file,
        Role::Client,
        with_certificate(client_thumb).unwrap(),
    );
    let tickets = try_establish(w, file, server, client)
        .unwrap()
        .unwrap_or_else(|| panic!("{mode:?}: the handshake failed"));
    if !tickets.is_empty() {
        let (data, outcome, _) = w.unseal(file, client, &tickets, tickets.len());
        assert_eq!((data.len(), outcome), (0, RecordOutcome::Data));
    }
    let client_resumed = w.query(file, client, |q| q.resumed);
    let (server_resumed, saw_certificate) =
        w.query(file, server, |q| (q.resumed, q.peer_certificates > 0));
    let seen = (client_resumed, server_resumed, saw_certificate);
    assert_eq!(w.close(file, client), STATUS_SUCCESS);
    assert_eq!(w.close(file, server), STATUS_SUCCESS);
    assert_eq!(w.wait_sessions_gone(), 0);
    seen
}

#[test]
fn a_session_made_without_a_client_certificate_is_not_resumed_by_a_server_that_asks() {
    // A client with a certificate meets a server that ignores client
    // certificates (its session has none), then servers that request and
    // require one: those must not resume the certificate-less session (they
    // would see no certificate, and Require would fail a client that has
    // one), so they get full handshakes with the certificate; each mode
    // resumes its own sessions afterwards.
    for (protocols, name) in VERSIONS {
        // Two TLS 1.3 tickets per handshake, as Schannel sends.
        let mut w = world_with(CompletionPolicy::Mixed, 2, DeviceConfig::default());
        w.protocols = protocols;
        let leaf = TestPki::new("client CA").leaf(&["client.example"], false);
        let thumb = w
            .sim
            .store()
            .add_identity("MY", leaf.chain_der, leaf.key_der)
            .unwrap();
        let full = resumed::FULL;
        let again = resumed::RESUMED;
        assert_eq!(
            connect_resuming(&w, thumb, ClientCertMode::Ignore),
            (full, full, false),
            "{name}"
        );
        assert_eq!(
            connect_resuming(&w, thumb, ClientCertMode::Ignore),
            (again, again, false),
            "{name}: the ignoring server's own sessions resume"
        );
        for mode in [ClientCertMode::Require, ClientCertMode::Request] {
            assert_eq!(
                connect_resuming(&w, thumb, mode),
                (full, full, true),
                "{name} {mode:?}: a full handshake, the certificate seen"
            );
            assert_eq!(
                connect_resuming(&w, thumb, mode),
                (again, again, true),
                "{name} {mode:?}: its own session resumes, the certificate kept"
            );
        }
        w.dev.unload();
        w.finish();
    }
}
