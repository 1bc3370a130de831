//! The model's session cache, call by call (no async layer), over TLS 1.2
//! session ids: a client credential resumes towards the target name it
//! connected to before, and only there; a client without a target name
//! resumes nothing; a session past the credential's lifespan is gone; a
//! server credential without reconnects resumes nothing; both sides say so
//! in `SECPKG_ATTR_SESSION_INFO`'s answer (`SSL_SESSION_RECONNECT`).

use ksspi::sys::*;
use ksspi::SecStatus;
use ksspi_sim::certs::{CertStore, TestPki};
use ksspi_sim::schannel::{Context, Credential, CredentialSpec, Protocols, Sessions};
use std::time::Duration;

struct World {
    store: CertStore,
    server: Credential,
}

fn world(server_sessions: Sessions) -> World {
    let pki = TestPki::new("session cache CA");
    let store = CertStore::new();
    store.add_root_der(pki.ca_der()).unwrap();
    let leaf = pki.leaf(&["localhost", "other.localhost"], false);
    let thumb = store
        .add_identity("MY", leaf.chain_der, leaf.key_der)
        .unwrap();
    let identity = store.find_identity("MY", &thumb).unwrap();
    let server = Credential::with_sessions(
        CredentialSpec::Server {
            identity,
            protocols: Protocols::TLS12,
            tls13_tickets: 0,
            require_client_cert: false,
        },
        &store,
        server_sessions,
    )
    .unwrap();
    World { store, server }
}

fn client(w: &World, sessions: Sessions) -> Credential {
    Credential::with_sessions(
        CredentialSpec::Client {
            protocols: Protocols::TLS12,
            manual_validation: false,
            client_identity: None,
        },
        &w.store,
        sessions,
    )
    .unwrap()
}

/// Whether a TLS 1.2-only client's ClientHello offers a session: its
/// `legacy_session_id` (after the record header, the handshake header, the
/// version and the random: byte 43 is its length) is empty for a new
/// session and a cached session's 32-byte id for a resumption attempt.
fn offers_a_session(client_hello: &[u8]) -> bool {
    client_hello[43] == 32
}

/// One handshake, whole flights; returns whether (client, server) resumed.
fn connect(w: &World, cred: &Credential, target: Option<&str>) -> (bool, bool) {
    connect_offering(w, cred, target).0
}

/// [`connect`], and whether the client offered a session.
fn connect_offering(w: &World, cred: &Credential, target: Option<&str>) -> ((bool, bool), bool) {
    let mut c = Context::client(cred, target).unwrap();
    let mut s = Context::server(&w.server, false).unwrap();
    let mut to_server = c.step(&[]).token;
    let offered = offers_a_session(&to_server);
    let (mut c_ok, mut s_ok) = (false, false);
    for _ in 0..6 {
        if !s_ok && !to_server.is_empty() {
            let step = s.step(&std::mem::take(&mut to_server));
            assert!(!step.status.is_error(), "server: {:?}", step.status);
            s_ok = step.status == SecStatus::SEC_E_OK;
            if !c_ok && !step.token.is_empty() {
                let step = c.step(&step.token);
                assert!(!step.status.is_error(), "client: {:?}", step.status);
                c_ok = step.status == SecStatus::SEC_E_OK;
                to_server = step.token;
            }
        }
        if c_ok && s_ok {
            break;
        }
    }
    assert!(c_ok && s_ok, "the handshake did not finish");
    let reconnect = |ctx: &Context| {
        ctx.session_info().expect("established").dwFlags & SSL_SESSION_RECONNECT != 0
    };
    ((reconnect(&c), reconnect(&s)), offered)
}

#[test]
fn a_client_resumes_towards_the_same_target_name_only() {
    let w = world(Sessions::default());
    let cred = client(&w, Sessions::default());
    assert_eq!(
        connect_offering(&w, &cred, Some("localhost")),
        ((false, false), false)
    );
    assert_eq!(
        connect_offering(&w, &cred, Some("localhost")),
        ((true, true), true)
    );
    // Another name has no entry of its own yet.
    assert_eq!(connect(&w, &cred, Some("other.localhost")), (false, false));
    assert_eq!(connect(&w, &cred, Some("other.localhost")), (true, true));
    assert_eq!(connect(&w, &cred, Some("localhost")), (true, true));
}

#[test]
fn a_client_without_a_target_name_resumes_nothing() {
    let w = world(Sessions::default());
    let cred = client(&w, Sessions::default());
    assert_eq!(connect(&w, &cred, None), (false, false));
    assert_eq!(connect_offering(&w, &cred, None), ((false, false), false));
}

#[test]
fn another_client_credential_starts_with_an_empty_cache() {
    let w = world(Sessions::default());
    let first = client(&w, Sessions::default());
    let second = client(&w, Sessions::default());
    assert_eq!(connect(&w, &first, Some("localhost")), (false, false));
    assert_eq!(connect(&w, &second, Some("localhost")), (false, false));
    assert_eq!(connect(&w, &first, Some("localhost")), (true, true));
}

#[test]
fn a_session_past_the_client_s_lifespan_is_not_offered() {
    let w = world(Sessions::default());
    let short = Sessions {
        lifespan: Duration::from_millis(1),
        ..Sessions::default()
    };
    let cred = client(&w, short);
    assert_eq!(connect(&w, &cred, Some("localhost")), (false, false));
    std::thread::sleep(Duration::from_millis(20));
    // Expired on the client's side: nothing offered.
    assert_eq!(
        connect_offering(&w, &cred, Some("localhost")),
        ((false, false), false)
    );
}

#[test]
fn a_session_past_the_server_s_lifespan_is_refused_and_the_client_falls_back() {
    let short = Sessions {
        lifespan: Duration::from_millis(1),
        ..Sessions::default()
    };
    let w = world(short);
    let cred = client(&w, Sessions::default());
    assert_eq!(
        connect_offering(&w, &cred, Some("localhost")),
        ((false, false), false)
    );
    std::thread::sleep(Duration::from_millis(20));
    // The client offers its session; the server has let it go: a full
    // handshake, which both report.
    assert_eq!(
        connect_offering(&w, &cred, Some("localhost")),
        ((false, false), true)
    );
}

#[test]
fn a_server_without_reconnects_resumes_nothing() {
    let w = world(Sessions {
        reconnects: false,
        ..Sessions::default()
    });
    let cred = client(&w, Sessions::default());
    assert_eq!(connect(&w, &cred, Some("localhost")), (false, false));
    assert_eq!(connect(&w, &cred, Some("localhost")), (false, false));
}

#[test]
fn session_info_is_refused_before_the_handshake_completes() {
    let w = world(Sessions::default());
    let cred = client(&w, Sessions::default());
    let mut c = Context::client(&cred, Some("localhost")).unwrap();
    assert!(c.session_info().is_none());
    let _ = c.step(&[]);
    assert!(c.session_info().is_none());
}
