//! ALPN through the device over the model: OPEN's third layout carries each
//! side's list, the server picks by its own order, STEP's established reply
//! and QUERY carry the protocol chosen, no overlap fails both sides with
//! `SEC_E_APPLICATION_PROTOCOL_MISMATCH`, bad lists get a clear status at
//! OPEN, GET_INFO says ALPN is there, and OPEN's older layouts still work
//! and are answered without ALPN bytes (what an older harness reads).

mod common;

use common::*;
use ksspi::SecStatus;
use ksspi_abi::*;
use ksspi_driver::device::{DeviceConfig, FileId};
use ksspi_driver::ntstatus::*;
use ksspi_sim::CompletionPolicy;

fn wire(names: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for n in names {
        out.push(n.len() as u8);
        out.extend_from_slice(n.as_bytes());
    }
    out
}

fn open(w: &World, file: FileId, role: Role, alpn: Option<&[u8]>) -> (NtStatus, Option<SessionId>) {
    let target: &[u8] = if role == Role::Client {
        b"localhost"
    } else {
        b""
    };
    let req = OpenRequest {
        alpn,
        ..OpenRequest::new(role, w.protocols, w.thumb, target)
    };
    let (st, reply) = w.call(file, IOCTL_KSSPI_OPEN, &enc(&req), 64);
    if st != STATUS_SUCCESS {
        return (st, None);
    }
    let open = decode::<OpenReply>(&reply).unwrap();
    assert_eq!(open.status, 0);
    (st, Some(open.session))
}

/// Each side's last reply: outcome, status, ALPN status and name.
type Last = (StepOutcome, i32, u8, Vec<u8>);

fn run(w: &World, file: FileId, server: SessionId, client: SessionId) -> (Last, Last) {
    let step = |session, input: &[u8]| {
        let (st, reply) = w.call(
            file,
            IOCTL_KSSPI_STEP,
            &enc(&StepRequest { session, input }),
            step_reply_capacity_alpn(64 * 1024),
        );
        assert_eq!(st, STATUS_SUCCESS);
        let r = decode::<StepReply>(&reply).unwrap();
        (
            (r.outcome, r.status, r.alpn_status, r.alpn.to_vec()),
            r.output.to_vec(),
        )
    };
    let (mut c, mut to_server) = step(client, &[]);
    let mut s = (StepOutcome::NeedInput, 0, 0, Vec::new());
    for _ in 0..10 {
        if s.0 != StepOutcome::NeedInput || to_server.is_empty() {
            break;
        }
        let (last, to_client) = step(server, &to_server);
        s = last;
        to_server.clear();
        if c.0 == StepOutcome::NeedInput && !to_client.is_empty() {
            let (last, out) = step(client, &to_client);
            c = last;
            to_server = out;
        }
    }
    (s, c)
}

fn close_all(w: &World, file: FileId, sessions: &[Option<SessionId>]) {
    for s in sessions.iter().flatten() {
        assert_eq!(w.close(file, *s), STATUS_SUCCESS);
    }
}

fn query_alpn(w: &World, file: FileId, session: SessionId) -> (u8, Vec<u8>) {
    let (st, reply) = w.call(
        file,
        IOCTL_KSSPI_QUERY,
        &enc(&QueryRequest { session }),
        QUERY_REPLY_CAPACITY_ALPN,
    );
    assert_eq!(st, STATUS_SUCCESS);
    let q = decode::<QueryReply>(&reply).unwrap();
    assert_ne!(q.protocol, 0);
    (q.alpn_status, q.alpn.to_vec())
}

#[test]
fn the_protocol_chosen_reaches_step_and_query_over_both_versions() {
    for protocols in [proto::TLS12, proto::TLS13] {
        let mut w = world(CompletionPolicy::Mixed, DeviceConfig::default());
        w.protocols = protocols;
        let file = w.dev.open_file();
        let server_list = wire(&["h2", "http/1.1"]);
        let client_list = wire(&["http/1.1", "h2"]);
        let (_, server) = open(&w, file, Role::Server, Some(&server_list));
        let (_, client) = open(&w, file, Role::Client, Some(&client_list));
        let (s, c) = run(&w, file, server.unwrap(), client.unwrap());
        assert_eq!(s, (StepOutcome::Established, 0, 1, b"h2".to_vec()));
        assert_eq!(c, (StepOutcome::Established, 0, 1, b"h2".to_vec()));
        assert_eq!(query_alpn(&w, file, server.unwrap()), (1, b"h2".to_vec()));
        assert_eq!(query_alpn(&w, file, client.unwrap()), (1, b"h2".to_vec()));
        close_all(&w, file, &[server, client]);
        w.finish();
    }
}

#[test]
fn no_overlap_fails_both_sides_with_the_mismatch_status() {
    let w = world(CompletionPolicy::Mixed, DeviceConfig::default());
    let file = w.dev.open_file();
    let (_, server) = open(&w, file, Role::Server, Some(&wire(&["h2"])));
    let (_, client) = open(&w, file, Role::Client, Some(&wire(&["http/1.1"])));
    let (s, c) = run(&w, file, server.unwrap(), client.unwrap());
    let mismatch = SecStatus::SEC_E_APPLICATION_PROTOCOL_MISMATCH.0;
    assert_eq!((s.0, s.1), (StepOutcome::Failed, mismatch));
    assert_eq!((c.0, c.1), (StepOutcome::Failed, mismatch));
    close_all(&w, file, &[server, client]);
    w.finish();
}

#[test]
fn older_layouts_still_open_and_see_no_alpn_bytes() {
    let w = world(CompletionPolicy::Mixed, DeviceConfig::default());
    let file = w.dev.open_file();
    // GET_INFO tells a newer harness ALPN is there.
    let (st, reply) = w.call(file, IOCTL_KSSPI_GET_INFO, &enc(&Empty), 4096);
    assert_eq!(st, STATUS_SUCCESS);
    assert_ne!(
        decode::<InfoReply>(&reply).unwrap().capabilities & caps::ALPN,
        0
    );
    // A server with ALPN, a client in OPEN's second layout (no list): the
    // handshake completes with no protocol, and the client's replies keep
    // the old reserved bytes zero, at the old capacities.
    let (_, server) = open(&w, file, Role::Server, Some(&wire(&["h2"])));
    let (_, client) = open(&w, file, Role::Client, None);
    let (s, c) = run(&w, file, server.unwrap(), client.unwrap());
    assert_eq!(s, (StepOutcome::Established, 0, 0, Vec::new()));
    assert_eq!(c, (StepOutcome::Established, 0, 0, Vec::new()));
    let (st, reply) = w.call(
        file,
        IOCTL_KSSPI_QUERY,
        &enc(&QueryRequest {
            session: client.unwrap(),
        }),
        QUERY_REPLY_CAPACITY,
    );
    assert_eq!(st, STATUS_SUCCESS);
    // The reserved word at the end of QUERY's fixed part stays zero.
    let fixed_end = QUERY_REPLY_CAPACITY - MAX_PEER_CERTIFICATE;
    assert_eq!(&reply[fixed_end - 4..fixed_end], &[0, 0, 0, 0]);
    // OPEN's first layout too.
    let first = OpenRequest {
        client_auth: None,
        ..OpenRequest::new(Role::Client, w.protocols, [0; 20], b"localhost")
    };
    let (st, reply) = w.call(file, IOCTL_KSSPI_OPEN, &enc(&first), 64);
    assert_eq!(st, STATUS_SUCCESS);
    let third = decode::<OpenReply>(&reply).unwrap();
    assert_eq!(third.status, 0);
    close_all(&w, file, &[server, client, Some(third.session)]);
    w.finish();
}

#[test]
fn bad_lists_get_a_clear_status_at_open() {
    let w = world(CompletionPolicy::Mixed, DeviceConfig::default());
    let file = w.dev.open_file();
    assert_eq!(
        open(&w, file, Role::Client, Some(b"")).0,
        STATUS_INVALID_PARAMETER
    );
    assert_eq!(
        open(&w, file, Role::Client, Some(b"\x02h2\x00")).0,
        STATUS_INVALID_PARAMETER
    );
    assert_eq!(
        open(&w, file, Role::Client, Some(b"\x09h2")).0,
        STATUS_INVALID_PARAMETER
    );
    let name = "a".repeat(255);
    let long = wire(&[name.as_str(); 5]);
    assert_eq!(
        open(&w, file, Role::Server, Some(&long)).0,
        STATUS_INVALID_BUFFER_SIZE
    );
    // Nothing was opened by them: a good one still works.
    let (st, good) = open(&w, file, Role::Client, Some(&wire(&["h2"])));
    assert_eq!(st, STATUS_SUCCESS);
    close_all(&w, file, &[good]);
    w.finish();
}
