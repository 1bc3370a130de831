//! Model Schannel's handshake semantics, call by call (no async layer):
//! token by token, byte at a time, trailing bytes as EXTRA, every failure's
//! status, INCOMPLETE_CREDENTIALS.

use ksspi::sys::*;
use ksspi::SecStatus;
use ksspi_sim::certs::{CertStore, TestPki};
use ksspi_sim::schannel::{Context, Credential, CredentialSpec, Protocols, Step};

struct World {
    store: CertStore,
    pki: TestPki,
}

fn world() -> World {
    let pki = TestPki::new("semantics CA");
    let store = CertStore::new();
    store.add_root_der(pki.ca_der()).unwrap();
    World { store, pki }
}

fn server(
    w: &World,
    names: &[&str],
    expired: bool,
    protocols: Protocols,
    tickets: usize,
    require_client_cert: bool,
) -> Context {
    let leaf = w.pki.leaf(names, expired);
    let thumb = w
        .store
        .add_identity("MY", leaf.chain_der, leaf.key_der)
        .unwrap();
    let identity = w.store.find_identity("MY", &thumb).unwrap();
    let cred = Credential::new(
        CredentialSpec::Server {
            identity,
            protocols,
            tls13_tickets: tickets,
            require_client_cert,
        },
        &w.store,
    )
    .unwrap();
    Context::server(&cred, false).unwrap()
}

fn client_in(store: &CertStore, protocols: Protocols, target: Option<&str>) -> Context {
    let cred = Credential::new(
        CredentialSpec::Client {
            protocols,
            manual_validation: false,
            client_identity: None,
        },
        store,
    )
    .unwrap();
    Context::client(&cred, target).unwrap()
}

/// Run to the end, whole flights at a time; returns the last steps of each side.
fn run(client: &mut Context, server: &mut Context) -> (Step, Step) {
    let mut c = client.step(&[]);
    assert_eq!(c.status, SecStatus::SEC_I_CONTINUE_NEEDED);
    let mut s = Step {
        status: SecStatus::SEC_I_CONTINUE_NEEDED,
        ..Step::default()
    };
    let mut to_server = c.token.clone();
    for _ in 0..10 {
        if s.status == SecStatus::SEC_I_CONTINUE_NEEDED && !to_server.is_empty() {
            s = server.step(&to_server);
            to_server.clear();
            if s.status.is_error() {
                return (c, s);
            }
            if c.status == SecStatus::SEC_I_CONTINUE_NEEDED && !s.token.is_empty() {
                c = client.step(&s.token);
                to_server = if c.status.is_error() {
                    c.alert.clone()
                } else {
                    c.token.clone()
                };
                if c.status.is_error() {
                    if s.status == SecStatus::SEC_I_CONTINUE_NEEDED {
                        s = server.step(&to_server);
                    }
                    return (c, s);
                }
            }
        } else {
            break;
        }
    }
    (c, s)
}

#[test]
fn full_handshakes_token_by_token() {
    for (protocols, expect_c, expect_s) in [
        (
            Protocols::TLS12,
            SP_PROT_TLS1_2_CLIENT,
            SP_PROT_TLS1_2_SERVER,
        ),
        (
            Protocols::TLS13,
            SP_PROT_TLS1_3_CLIENT,
            SP_PROT_TLS1_3_SERVER,
        ),
    ] {
        let w = world();
        let mut s = server(&w, &["localhost"], false, protocols, 0, false);
        let mut c = client_in(&w.store, Protocols::ALL, Some("localhost"));
        let (cl, sv) = run(&mut c, &mut s);
        assert_eq!(
            (cl.status, sv.status),
            (SecStatus::SEC_E_OK, SecStatus::SEC_E_OK)
        );
        assert!(c.is_established() && s.is_established());
        assert_eq!(
            (c.protocol(), s.protocol()),
            (Some(expect_c), Some(expect_s))
        );
        assert!(c.cipher_suite_name().is_some_and(|n| n.starts_with("TLS")));
        // A further handshake call after the end is refused.
        assert_eq!(c.step(b"x").status, SecStatus::SEC_E_OUT_OF_SEQUENCE);
    }
}

#[test]
fn bytes_fed_one_at_a_time_give_incomplete_message_until_a_record_is_whole() {
    for protocols in [Protocols::TLS12, Protocols::TLS13] {
        let w = world();
        let mut s = server(&w, &["localhost"], false, protocols, 0, false);
        let mut c = client_in(&w.store, Protocols::ALL, Some("localhost"));
        let hello = c.step(&[]).token;
        // The server, fed the ClientHello one byte at a time.
        let mut buf = Vec::new();
        let mut incompletes = 0;
        let mut flight = None;
        for &b in &hello {
            buf.push(b);
            let st = s.step(&buf);
            match st.status {
                SecStatus::SEC_E_INCOMPLETE_MESSAGE => {
                    assert!(
                        st.missing > 0 && st.missing <= hello.len() - buf.len() + 5,
                        "missing {}",
                        st.missing
                    );
                    assert!(st.token.is_empty());
                    incompletes += 1;
                }
                SecStatus::SEC_I_CONTINUE_NEEDED => {
                    buf.drain(..buf.len() - st.extra);
                    if !st.token.is_empty() {
                        flight = Some(st.token);
                    }
                }
                other => panic!("unexpected {other}"),
            }
        }
        assert_eq!(
            incompletes,
            hello.len() - 1,
            "every prefix of a one-record hello is incomplete"
        );
        let flight = flight.expect("the server's flight");
        // The client, fed the server's flight one byte at a time.
        let mut buf = Vec::new();
        let mut last = SecStatus::SEC_I_CONTINUE_NEEDED;
        let mut out = Vec::new();
        for &b in &flight {
            buf.push(b);
            let st = c.step(&buf);
            last = st.status;
            match st.status {
                SecStatus::SEC_E_INCOMPLETE_MESSAGE => assert!(st.missing > 0),
                SecStatus::SEC_I_CONTINUE_NEEDED | SecStatus::SEC_E_OK => {
                    buf.drain(..buf.len() - st.extra);
                    out.extend_from_slice(&st.token);
                }
                other => panic!("unexpected {other}"),
            }
        }
        assert!(buf.is_empty(), "everything consumed");
        assert!(!out.is_empty(), "the client answered");
        if protocols.tls13 {
            assert_eq!(last, SecStatus::SEC_E_OK);
        }
    }
}

#[test]
fn bytes_after_the_last_flight_come_back_as_extra() {
    // TLS 1.3 with tickets: the server's Finished-flight reply carries a
    // NewSessionTicket; appended to the client's input they must be EXTRA.
    let w = world();
    let mut s = server(&w, &["localhost"], false, Protocols::TLS13, 2, false);
    let mut c = client_in(&w.store, Protocols::ALL, Some("localhost"));
    let hello = c.step(&[]).token;
    let flight = s.step(&hello);
    assert_eq!(flight.status, SecStatus::SEC_I_CONTINUE_NEEDED);
    let trailer = b"\x17\x03\x03\x00\x05hello".to_vec();
    let mut input = flight.token.clone();
    input.extend_from_slice(&trailer);
    let done = c.step(&input);
    assert_eq!(done.status, SecStatus::SEC_E_OK);
    assert_eq!(
        done.extra,
        trailer.len(),
        "the application record after the flight"
    );
    let fin = s.step(&done.token);
    assert_eq!(fin.status, SecStatus::SEC_E_OK);
    assert!(!fin.token.is_empty(), "the server's tickets");
}

#[test]
fn two_flights_at_once_leave_the_second_as_extra() {
    // The server gets the ClientHello twice in one buffer: it answers the
    // first (one flight per call) and leaves the second untouched as EXTRA.
    let w = world();
    let mut s = server(&w, &["localhost"], false, Protocols::TLS12, 0, false);
    let mut c = client_in(&w.store, Protocols::ALL, Some("localhost"));
    let hello = c.step(&[]).token;
    let mut twice = hello.clone();
    twice.extend_from_slice(&hello);
    let st = s.step(&twice);
    assert_eq!(st.status, SecStatus::SEC_I_CONTINUE_NEEDED);
    assert!(!st.token.is_empty());
    assert_eq!(st.extra, hello.len());
}

fn failure(client: &mut Context, server: &mut Context) -> (SecStatus, SecStatus) {
    let (c, s) = run(client, server);
    (c.status, s.status)
}

#[test]
fn a_wrong_name_is_wrong_principal_with_an_alert() {
    let w = world();
    let mut s = server(&w, &["localhost"], false, Protocols::ALL, 0, false);
    let mut c = client_in(&w.store, Protocols::ALL, Some("elsewhere.example"));
    let (cs, ss) = run(&mut c, &mut s);
    assert_eq!(cs.status, SecStatus::SEC_E_WRONG_PRINCIPAL);
    assert!(!cs.alert.is_empty(), "an alert to send");
    assert!(
        ss.status.is_error(),
        "the server sees the alert: {}",
        ss.status
    );
    // A failed context stays failed.
    assert_eq!(
        c.step(b"\x16\x03\x03\x00\x01\x00").status,
        SecStatus::SEC_E_WRONG_PRINCIPAL
    );
}

#[test]
fn an_untrusted_root_is_untrusted_root() {
    let w = world();
    let mut s = server(&w, &["localhost"], false, Protocols::ALL, 0, false);
    let other = CertStore::new();
    other
        .add_root_der(TestPki::new("someone else").ca_der())
        .unwrap();
    let mut c = client_in(&other, Protocols::ALL, Some("localhost"));
    assert_eq!(failure(&mut c, &mut s).0, SecStatus::SEC_E_UNTRUSTED_ROOT);
}

#[test]
fn an_expired_certificate_is_cert_expired() {
    let w = world();
    let mut s = server(&w, &["localhost"], true, Protocols::ALL, 0, false);
    let mut c = client_in(&w.store, Protocols::ALL, Some("localhost"));
    assert_eq!(failure(&mut c, &mut s).0, SecStatus::SEC_E_CERT_EXPIRED);
}

#[test]
fn no_common_version_is_algorithm_mismatch() {
    let w = world();
    let mut s = server(&w, &["localhost"], false, Protocols::TLS13, 0, false);
    let mut c = client_in(&w.store, Protocols::TLS12, Some("localhost"));
    let (cs, ss) = failure(&mut c, &mut s);
    assert_eq!(ss, SecStatus::SEC_E_ALGORITHM_MISMATCH);
    assert_eq!(
        cs,
        SecStatus::SEC_I_CONTINUE_NEEDED,
        "the client has not read the alert yet"
    );
}

#[test]
fn garbage_is_invalid_token_and_a_peer_alert_is_an_error() {
    let w = world();
    let mut s = server(&w, &["localhost"], false, Protocols::ALL, 0, false);
    let st = s.step(b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(st.status, SecStatus::SEC_E_INVALID_TOKEN);
    assert_eq!(st.alert.len(), 7, "a plaintext fatal alert");
    let mut s = server(&w, &["localhost"], false, Protocols::ALL, 0, false);
    let alert = [21u8, 3, 3, 0, 2, 2, 40];
    assert_eq!(
        s.step(&alert).status,
        SecStatus::SEC_E_ALGORITHM_MISMATCH,
        "handshake_failure from the peer"
    );
    let mut s = server(&w, &["localhost"], false, Protocols::ALL, 0, false);
    let internal = [21u8, 3, 3, 0, 2, 2, 80];
    assert_eq!(s.step(&internal).status, SecStatus::SEC_E_ILLEGAL_MESSAGE);
}

#[test]
fn a_certificate_request_without_a_certificate_is_incomplete_credentials() {
    for protocols in [Protocols::TLS12, Protocols::TLS13] {
        let w = world();
        let mut s = server(&w, &["localhost"], false, protocols, 0, true);
        let mut c = client_in(&w.store, Protocols::ALL, Some("localhost"));
        let hello = c.step(&[]).token;
        let flight = s.step(&hello);
        let st = c.step(&flight.token);
        assert_eq!(
            st.status,
            SecStatus::SEC_I_INCOMPLETE_CREDENTIALS,
            "{protocols:?}"
        );
        assert!(st.token.is_empty());
        // Called again, the client goes on without a certificate...
        let again = c.step(&[]);
        assert!(
            again.status.is_success() && !again.token.is_empty(),
            "{}",
            again.status
        );
        // ...and the server, which requires one, refuses.
        assert_eq!(s.step(&again.token).status, SecStatus::SEC_E_NO_CREDENTIALS);
    }
}

#[test]
fn flights_split_at_every_boundary_complete() {
    let w = world();
    let mut s = server(&w, &["localhost"], false, Protocols::TLS13, 0, false);
    let mut c = client_in(&w.store, Protocols::ALL, Some("localhost"));
    let hello = c.step(&[]).token;
    let flight = s.step(&hello).token;
    for cut in 1..flight.len() {
        let mut s2 = server(&w, &["localhost"], false, Protocols::TLS13, 0, false);
        let mut c2 = client_in(&w.store, Protocols::ALL, Some("localhost"));
        let hello2 = c2.step(&[]).token;
        let f2 = s2.step(&hello2).token;
        let cut = cut.min(f2.len() - 1);
        let mut buf = f2[..cut].to_vec();
        let mut out = Vec::new();
        let mut st = c2.step(&buf);
        if st.status != SecStatus::SEC_E_INCOMPLETE_MESSAGE {
            out.extend_from_slice(&st.token);
            buf.drain(..buf.len() - st.extra);
        }
        buf.extend_from_slice(&f2[cut..]);
        while !buf.is_empty() {
            st = c2.step(&buf);
            assert!(st.status.is_success(), "cut {cut}: {}", st.status);
            out.extend_from_slice(&st.token);
            buf.drain(..buf.len() - st.extra);
        }
        assert_eq!(st.status, SecStatus::SEC_E_OK, "cut {cut}");
        assert_eq!(s2.step(&out).status, SecStatus::SEC_E_OK, "cut {cut}");
        if cut > 400 {
            break; // the rest of the boundaries fall inside one large record
        }
    }
    drop((s, c, flight));
}

#[test]
fn hostile_tokens_at_any_point_of_a_handshake_never_panic() {
    // Run handshakes and, at a seeded step, flip, cut, extend or replace the
    // token in flight; whatever happens, each call returns a status, failed
    // contexts stay failed, and nothing panics.
    let w = world();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..300 {
        let protocols = if round % 2 == 0 {
            Protocols::TLS12
        } else {
            Protocols::TLS13
        };
        let mut s = server(&w, &["localhost"], false, protocols, round % 3, false);
        let mut c = client_in(&w.store, Protocols::ALL, Some("localhost"));
        let strike = rand() % 4;
        let mut token = c.step(&[]).token;
        for stage in 0..4 {
            if stage == strike && !token.is_empty() {
                match rand() % 4 {
                    0 => {
                        let i = (rand() as usize) % token.len();
                        token[i] ^= 1 << (rand() % 8);
                    }
                    1 => token.truncate((rand() as usize) % token.len()),
                    2 => token.extend((0..(rand() % 40)).map(|_| rand() as u8)),
                    _ => {
                        let n = 5 + (rand() as usize) % 200;
                        token = (0..n).map(|_| rand() as u8).collect();
                        token[0] = [20u8, 21, 22, 23][(rand() % 4) as usize];
                        token[1] = 3;
                        token[3] = 0;
                        token[4] = (n - 5) as u8;
                    }
                }
            }
            let side = if stage % 2 == 0 { &mut s } else { &mut c };
            let st = side.step(&token);
            if st.status.is_error() && st.status != SecStatus::SEC_E_INCOMPLETE_MESSAGE {
                // Failed contexts stay failed.
                assert_eq!(side.step(&token).status, st.status, "round {round}");
                break;
            }
            token = st.token;
            if token.is_empty() {
                break;
            }
        }
    }
}

/// A server context called with `ASC_REQ_MUTUAL_AUTH`.
fn mutual_server(w: &World, protocols: Protocols) -> Context {
    let leaf = w.pki.leaf(&["localhost"], false);
    let thumb = w
        .store
        .add_identity("MY", leaf.chain_der, leaf.key_der)
        .unwrap();
    let identity = w.store.find_identity("MY", &thumb).unwrap();
    let cred = Credential::new(
        CredentialSpec::Server {
            identity,
            protocols,
            tls13_tickets: 0,
            require_client_cert: false,
        },
        &w.store,
    )
    .unwrap();
    Context::server(&cred, true).unwrap()
}

/// Step `client` and `server` from the ClientHello until both are done;
/// the client's `SEC_I_INCOMPLETE_CREDENTIALS` is answered by calling again
/// (counted in the result). Returns (client status, server status, stops).
fn run_mutual(c: &mut Context, s: &mut Context) -> (SecStatus, SecStatus, u32) {
    let mut stops = 0;
    let mut to_server = c.step(&[]).token;
    let (mut cs, mut ss) = (
        SecStatus::SEC_I_CONTINUE_NEEDED,
        SecStatus::SEC_I_CONTINUE_NEEDED,
    );
    for _ in 0..10 {
        if ss == SecStatus::SEC_I_CONTINUE_NEEDED && !to_server.is_empty() {
            let st = s.step(&to_server);
            ss = st.status;
            to_server.clear();
            if cs == SecStatus::SEC_I_CONTINUE_NEEDED && !st.token.is_empty() {
                let mut step = c.step(&st.token);
                if step.status == SecStatus::SEC_I_INCOMPLETE_CREDENTIALS {
                    stops += 1;
                    step = c.step(&[]);
                }
                cs = step.status;
                to_server = step.token;
            }
        } else {
            break;
        }
    }
    (cs, ss, stops)
}

#[test]
fn mutual_auth_takes_any_client_certificate_and_reports_it() {
    for protocols in [Protocols::TLS12, Protocols::TLS13] {
        let w = world();
        let mut s = mutual_server(&w, protocols);
        // A certificate from a CA the server's store does not trust: taken
        // all the same (Schannel reports the chain's validation apart).
        let other = TestPki::new("someone else's CA");
        let leaf = other.leaf(&["client.example"], false);
        let leaf_der = leaf.chain_der[0].clone();
        let thumb = w
            .store
            .add_identity("MY", leaf.chain_der, leaf.key_der)
            .unwrap();
        let cred = Credential::new(
            CredentialSpec::Client {
                protocols: Protocols::ALL,
                manual_validation: false,
                client_identity: w.store.find_identity("MY", &thumb),
            },
            &w.store,
        )
        .unwrap();
        let mut c = Context::client(&cred, Some("localhost")).unwrap();
        let (cs, ss, stops) = run_mutual(&mut c, &mut s);
        assert_eq!(
            (cs, ss, stops),
            (SecStatus::SEC_E_OK, SecStatus::SEC_E_OK, 0),
            "{protocols:?}"
        );
        let peer = s.peer_certificates();
        assert_eq!(peer.first(), Some(&leaf_der), "{protocols:?}");
    }
}

#[test]
fn mutual_auth_without_a_client_certificate_completes_after_incomplete_credentials() {
    for protocols in [Protocols::TLS12, Protocols::TLS13] {
        let w = world();
        let mut s = mutual_server(&w, protocols);
        let mut c = client_in(&w.store, Protocols::ALL, Some("localhost"));
        let (cs, ss, stops) = run_mutual(&mut c, &mut s);
        assert_eq!(
            (cs, ss, stops),
            (SecStatus::SEC_E_OK, SecStatus::SEC_E_OK, 1),
            "{protocols:?}: asked once, then done without one"
        );
        assert!(s.peer_certificates().is_empty(), "{protocols:?}");
    }
}

#[test]
fn a_server_context_without_mutual_auth_asks_for_nothing() {
    let w = world();
    let leaf = w.pki.leaf(&["localhost"], false);
    let thumb = w
        .store
        .add_identity("MY", leaf.chain_der, leaf.key_der)
        .unwrap();
    let identity = w.store.find_identity("MY", &thumb).unwrap();
    let cred = Credential::new(
        CredentialSpec::Server {
            identity,
            protocols: Protocols::ALL,
            tls13_tickets: 0,
            require_client_cert: false,
        },
        &w.store,
    )
    .unwrap();
    let mut s = Context::server(&cred, false).unwrap();
    let mut c = client_in(&w.store, Protocols::ALL, Some("localhost"));
    let (cs, ss, stops) = run_mutual(&mut c, &mut s);
    assert_eq!(
        (cs, ss, stops),
        (SecStatus::SEC_E_OK, SecStatus::SEC_E_OK, 0)
    );
}
