//! The model's record layer with Schannel's semantics, call by call:
//! EncryptMessage / DecryptMessage over a byte stream (INCOMPLETE_MESSAGE,
//! EXTRA, one byte at a time), post-handshake messages as SEC_I_RENEGOTIATE
//! handed back to the handshake call, tampering, and shutdown.

use ksspi::SecStatus;
use ksspi_sim::certs::{CertStore, TestPki};
use ksspi_sim::schannel::{Context, Credential, CredentialSpec, Protocols, MAX_PLAINTEXT};

/// A client and a server context, established. `to_client` holds what the
/// server sent after the client finished (TLS 1.3 session tickets).
struct Pair {
    client: Context,
    server: Context,
    to_client: Vec<u8>,
}

fn pair(protocols: Protocols, tickets: usize) -> Pair {
    let pki = TestPki::new("record CA");
    let store = CertStore::new();
    store.add_root_der(pki.ca_der()).unwrap();
    let leaf = pki.leaf(&["localhost"], false);
    let thumb = store
        .add_identity("MY", leaf.chain_der, leaf.key_der)
        .unwrap();
    let identity = store.find_identity("MY", &thumb).unwrap();
    let scred = Credential::new(
        CredentialSpec::Server {
            identity,
            protocols,
            tls13_tickets: tickets,
            require_client_cert: false,
        },
        &store,
    )
    .unwrap();
    let ccred = Credential::new(
        CredentialSpec::Client {
            protocols,
            manual_validation: false,
            client_identity: None,
        },
        &store,
    )
    .unwrap();
    let mut client = Context::client(&ccred, Some("localhost")).unwrap();
    let mut server = Context::server(&scred, false).unwrap();
    let mut to_server = client.step(&[]).token;
    let mut to_client = Vec::new();
    for _ in 0..10 {
        if !server.is_established() {
            let s = server.step(&to_server);
            assert!(s.status.0 >= 0, "server: {}", s.status);
            to_server.clear();
            to_client.extend_from_slice(&s.token);
        }
        if !client.is_established() {
            let c = client.step(&to_client);
            assert!(c.status.0 >= 0, "client: {}", c.status);
            let used = to_client.len() - c.extra;
            to_client.drain(..used);
            to_server.extend_from_slice(&c.token);
        }
        if client.is_established() && server.is_established() && to_server.is_empty() {
            return Pair {
                client,
                server,
                to_client,
            };
        }
    }
    panic!("the handshake did not finish");
}

/// Encrypt `data` as EncryptMessage callers do: records of at most the
/// stream sizes' maximum message.
fn seal(ctx: &mut Context, data: &[u8]) -> Vec<u8> {
    let sizes = ctx.stream_sizes().unwrap();
    let mut out = Vec::new();
    for chunk in data.chunks(sizes.max_message) {
        let record = ctx.encrypt(chunk).unwrap();
        assert_eq!(record.len(), sizes.header + chunk.len() + sizes.trailer);
        out.extend_from_slice(record);
    }
    out
}

/// What a reader saw.
#[derive(Debug, Default, PartialEq)]
struct Read {
    data: Vec<u8>,
    renegotiations: usize,
    /// What the handshake calls for post-handshake records produced, to send
    /// back to the peer.
    answer: Vec<u8>,
    expired: bool,
}

/// Read a stream fed `feed` bytes at a time, as a DecryptMessage loop does:
/// INCOMPLETE asks for more, EXTRA is decrypted next, SEC_I_RENEGOTIATE
/// hands the record to the handshake call.
fn open_stream(ctx: &mut Context, stream: &[u8], feed: usize) -> Read {
    let mut read = Read::default();
    let mut buf: Vec<u8> = Vec::new();
    let mut next = 0;
    loop {
        let u = ctx.decrypt(&mut buf);
        match u.status {
            SecStatus::SEC_E_OK => {
                // Decrypted in place, after the record's header.
                assert!(u.data.end <= u.record && u.record + u.extra == buf.len());
                read.data.extend_from_slice(&buf[u.data.clone()]);
                buf.drain(..buf.len() - u.extra);
            }
            SecStatus::SEC_E_INCOMPLETE_MESSAGE => {
                assert!(u.missing > 0);
                if next >= stream.len() {
                    assert!(buf.is_empty(), "a partial record at the end");
                    return read;
                }
                let end = (next + feed).min(stream.len());
                buf.extend_from_slice(&stream[next..end]);
                next = end;
            }
            SecStatus::SEC_I_RENEGOTIATE => {
                read.renegotiations += 1;
                let extra = buf.split_off(buf.len() - u.extra);
                let s = ctx.step(&extra);
                assert_eq!(s.status, SecStatus::SEC_E_OK);
                read.answer.extend_from_slice(&s.token);
                buf = extra[extra.len() - s.extra..].to_vec();
            }
            SecStatus::SEC_I_CONTEXT_EXPIRED => {
                read.expired = true;
                return read;
            }
            other => panic!("DecryptMessage: {other}"),
        }
    }
}

/// TLS records in `wire`.
fn records(mut wire: &[u8]) -> usize {
    let mut n = 0;
    while wire.len() >= 5 {
        let len = 5 + usize::from(u16::from_be_bytes([wire[3], wire[4]]));
        wire = &wire[len..];
        n += 1;
    }
    assert!(wire.is_empty());
    n
}

fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn data_goes_both_ways_in_records_of_at_most_the_maximum_message() {
    for protocols in [Protocols::TLS12, Protocols::TLS13] {
        let mut p = pair(protocols, 0);
        let data = payload(3 * MAX_PLAINTEXT + 123);
        let wire = seal(&mut p.client, &data);
        assert_eq!(open_stream(&mut p.server, &wire, wire.len()).data, data);
        let wire = seal(&mut p.server, b"hello back");
        let read = open_stream(&mut p.client, &wire, wire.len());
        assert_eq!(read.data, b"hello back");
    }
}

#[test]
fn one_byte_at_a_time_and_many_records_at_once_decrypt_to_the_same_bytes() {
    for protocols in [Protocols::TLS12, Protocols::TLS13] {
        let mut p = pair(protocols, 0);
        let data = payload(40_000);
        let wire = seal(&mut p.client, &data);
        let whole = open_stream(&mut p.server, &wire, wire.len());
        assert_eq!(whole.data, data);
        let wire = seal(&mut p.client, &data);
        let trickle = open_stream(&mut p.server, &wire, 1);
        assert_eq!(trickle, whole);
    }
}

#[test]
fn session_tickets_arrive_as_renegotiate_and_go_back_through_the_handshake_call() {
    let mut p = pair(Protocols::TLS13, 2);
    assert!(!p.to_client.is_empty(), "the server sent tickets");
    let mut wire = std::mem::take(&mut p.to_client);
    let ticket_records = records(&wire);
    assert!(ticket_records >= 1);
    wire.extend_from_slice(&seal(&mut p.server, b"after the tickets"));
    let read = open_stream(&mut p.client, &wire, wire.len());
    assert_eq!(read.renegotiations, ticket_records, "one per record");
    assert_eq!(read.data, b"after the tickets");
    // Fed a byte at a time the same holds.
    let mut p = pair(Protocols::TLS13, 2);
    let mut wire = std::mem::take(&mut p.to_client);
    wire.extend_from_slice(&seal(&mut p.server, b"after the tickets"));
    assert_eq!(open_stream(&mut p.client, &wire, 1), read);
}

#[test]
fn a_second_post_handshake_message_works_too() {
    let mut p = pair(Protocols::TLS13, 2);
    let tickets = std::mem::take(&mut p.to_client);
    let first = open_stream(&mut p.client, &tickets, tickets.len());
    assert_eq!(first.renegotiations, records(&tickets));
    assert!(first.answer.is_empty(), "tickets need no answer");
    // A KeyUpdate from the server, then data under its new keys, fed three
    // bytes at a time: a second SEC_I_RENEGOTIATE, and the data after it.
    let mut wire = p.server.request_key_update().unwrap();
    assert_eq!(records(&wire), 1);
    wire.extend_from_slice(&seal(&mut p.server, b"new server keys"));
    let second = open_stream(&mut p.client, &wire, 3);
    assert_eq!(second.renegotiations, 1);
    assert_eq!(second.data, b"new server keys");
    // The KeyUpdate asked for the client's: the handshake call that was
    // handed it returns the answer, and the server reads on under the
    // client's new keys.
    assert_eq!(records(&second.answer), 1, "the client's own KeyUpdate");
    let mut wire = second.answer.clone();
    wire.extend_from_slice(&seal(&mut p.client, b"new client keys"));
    let back = open_stream(&mut p.server, &wire, 4);
    assert_eq!(back.renegotiations, 1);
    assert_eq!(back.data, b"new client keys");
    assert!(
        back.answer.is_empty(),
        "an update not requested needs no answer"
    );
}

/// Issue 20, defect 1: a JDK 17 client (JSSE, before JDK-8329548) whose key
/// limit (`jdk.tls.keyLimits`) is reached asks for a KeyUpdate on every record
/// it reads under the exhausted keys until ours arrives; with our echo of
/// megabytes in flight that is hundreds of KeyUpdates, update_requested, with
/// no application data between them. rustls counts such a run and fails the
/// 33rd (`PeerMisbehaved::TooManyKeyUpdateRequests`, BoringSSL's limit), which
/// model DecryptMessage reported as `SEC_E_ILLEGAL_MESSAGE`; Schannel is not
/// documented to refuse any KeyUpdate, and RFC 8446 §4.6.3 sets no limit.
#[test]
fn a_run_of_hundreds_of_key_updates_without_data_between_is_accepted() {
    const UPDATES: usize = 300;
    let mut p = pair(Protocols::TLS13, 0);
    let mut wire = Vec::new();
    for _ in 0..UPDATES {
        wire.extend_from_slice(&p.client.request_key_update().unwrap());
    }
    assert_eq!(records(&wire), UPDATES);
    wire.extend_from_slice(&seal(&mut p.client, b"after the run"));
    // All at once, as one socket read brings them.
    let read = open_stream(&mut p.server, &wire, wire.len());
    assert_eq!(read.renegotiations, UPDATES);
    assert_eq!(read.data, b"after the run");
    // Each asked for ours: one KeyUpdate answers each, and the client reads
    // them, then data under the server's newest keys.
    assert_eq!(records(&read.answer), UPDATES);
    let mut back = read.answer.clone();
    back.extend_from_slice(&seal(&mut p.server, b"newest server keys"));
    let read = open_stream(&mut p.client, &back, 27);
    assert_eq!(read.renegotiations, UPDATES);
    assert_eq!(read.data, b"newest server keys");
    assert!(read.answer.is_empty(), "no update was requested back");
}

#[test]
fn a_tampered_record_fails_and_the_context_stays_unusable() {
    for protocols in [Protocols::TLS12, Protocols::TLS13] {
        let mut p = pair(protocols, 0);
        let mut wire = seal(&mut p.client, b"do not touch");
        let good = seal(&mut p.client, b"next");
        let sizes = p.client.stream_sizes().unwrap();
        wire[sizes.header + 3] ^= 0x40;
        let u = p.server.decrypt(&mut wire);
        assert_eq!(u.status, SecStatus::SEC_E_DECRYPT_FAILURE);
        assert!(u.data.is_empty());
        assert_eq!(
            p.server.decrypt(&mut good.clone()).status,
            SecStatus::SEC_E_DECRYPT_FAILURE,
            "no record decrypts after a failure"
        );
        assert_eq!(
            p.server.encrypt(b"x").unwrap_err(),
            SecStatus::SEC_E_DECRYPT_FAILURE
        );
    }
}

#[test]
fn shutdown_sends_close_notify_and_the_peer_sees_context_expired() {
    for protocols in [Protocols::TLS12, Protocols::TLS13] {
        let mut p = pair(protocols, 0);
        let mut wire = seal(&mut p.server, b"last words");
        assert_eq!(p.server.apply_shutdown(), SecStatus::SEC_E_OK);
        let close = p.server.step(&[]);
        assert_eq!(close.status, SecStatus::SEC_E_OK);
        assert!(!close.token.is_empty(), "close_notify");
        assert_eq!(
            p.server.encrypt(b"more").unwrap_err(),
            SecStatus::SEC_E_CONTEXT_EXPIRED
        );
        wire.extend_from_slice(&close.token);
        let read = open_stream(&mut p.client, &wire, 7);
        assert_eq!(read.data, b"last words");
        assert!(read.expired);
        assert_eq!(
            p.client.decrypt(&mut []).status,
            SecStatus::SEC_I_CONTEXT_EXPIRED
        );
    }
}

#[test]
fn garbage_and_oversized_input_are_refused() {
    let mut p = pair(Protocols::TLS13, 0);
    assert_eq!(
        p.client.encrypt(&payload(MAX_PLAINTEXT + 1)).unwrap_err(),
        SecStatus::SEC_E_BUFFER_TOO_SMALL
    );
    let u = p.server.decrypt(&mut b"GET / HTTP/1.1\r\n\r\n".to_vec());
    assert_eq!(u.status, SecStatus::SEC_E_DECRYPT_FAILURE);
    assert_eq!(
        p.server.encrypt(b"x").unwrap_err(),
        SecStatus::SEC_E_DECRYPT_FAILURE,
        "garbage leaves the context unusable, as a tampered record does"
    );
}
