//! Session resumption through the engine against the model: a second
//! handshake over the same credentials handles towards the same target
//! resumes (TLS 1.2 by session id, TLS 1.3 by the ticket the client's first
//! decrypt took), both sides report it from `SECPKG_ATTR_SESSION_INFO`, in
//! every completion mode; a server credential without reconnects, a new
//! client credentials handle or a new server one give full handshakes; a
//! provider that does not answer the query leaves it unknown.

mod engine_support;

use engine_support::*;
use ksspi::engine::{CredentialSpec, EngineStats, RecordOutcome, Resumed};
use ksspi::sys::*;
use ksspi_sim::{CallbackIrql, Completion, CompletionPolicy, SimConfig, SimProvider};
use std::sync::Arc;

const TLS12_ONLY: (u32, u32) = (SP_PROT_TLS1_3, SP_PROT_TLS1_3);
const TLS13_ONLY: (u32, u32) = (SP_PROT_TLS1_2, SP_PROT_TLS1_2);

fn config(seed: u64, completion: CompletionPolicy) -> SimConfig {
    SimConfig {
        seed,
        completion,
        callback_irql: CallbackIrql::Mixed,
        // Schannel sends TLS 1.3 tickets after the handshake (schannel-rs
        // issues #111, #112); the model's default sends none.
        tls13_tickets: 2,
        ..SimConfig::default()
    }
}

fn resumed(s: &SimSession) -> Resumed {
    s.describe(&mut [], &passive())
        .expect("established")
        .resumed
}

/// One handshake over `creds` towards "localhost"; the client takes the
/// server's tickets through a decrypt. Returns (client, server) resumed and
/// the credentials back.
fn connect(
    sim: &SimProvider,
    creds: Vec<Arc<ksspi::handle::Credentials<SimProvider>>>,
) -> (
    (Resumed, Resumed),
    Vec<Arc<ksspi::handle::Credentials<SimProvider>>>,
) {
    let pair = Pair::from_credentials(sim, creds, "localhost", Arc::default()).expect("sessions");
    let tickets = pair.establish();
    if !tickets.is_empty() {
        pair.client.decrypt(&tickets, &passive()).unwrap();
        let r = pair.client_events.next_record();
        assert_eq!(r.outcome, RecordOutcome::Data { missing: 0 });
        assert!(
            r.renegotiations >= 1,
            "the tickets went to the handshake call"
        );
    }
    let seen = (resumed(&pair.client), resumed(&pair.server));
    (seen, pair.close_only())
}

fn credentials(
    sim: &SimProvider,
    thumb: ksspi_sim::certs::Thumbprint,
    (s_dis, c_dis): (u32, u32),
    reconnects: bool,
) -> Vec<Arc<ksspi::handle::Credentials<SimProvider>>> {
    let stats = Arc::new(EngineStats::default());
    let mut server = server_spec(thumb, s_dis);
    if let CredentialSpec::Server { reconnects: r, .. } = &mut server {
        *r = reconnects;
    }
    vec![
        acquire(sim, &server, &stats).expect("server credentials"),
        acquire(sim, &client_spec(c_dis), &stats).expect("client credentials"),
    ]
}

#[test]
fn the_second_handshake_resumes_in_every_mode_and_version() {
    for (i, completion) in CompletionPolicy::ALL.into_iter().enumerate() {
        let (sim, thumb) = sim_with(config(900 + i as u64, completion));
        for versions in [TLS12_ONLY, TLS13_ONLY] {
            let creds = credentials(&sim, thumb, versions, true);
            let (first, creds) = connect(&sim, creds);
            assert_eq!(
                first,
                (Resumed::No, Resumed::No),
                "{completion:?} {versions:?}"
            );
            let (second, creds) = connect(&sim, creds);
            assert_eq!(
                second,
                (Resumed::Yes, Resumed::Yes),
                "{completion:?} {versions:?}"
            );
            let (third, creds) = connect(&sim, creds);
            assert_eq!(
                third,
                (Resumed::Yes, Resumed::Yes),
                "{completion:?} {versions:?}"
            );
            release_all(&sim, creds);
        }
        sim.unload().unwrap_or_else(|leaks| panic!("{leaks}"));
    }
}

#[test]
fn a_server_without_reconnects_gives_full_handshakes() {
    let (sim, thumb) = sim_with(config(950, CompletionPolicy::Always(Completion::Async)));
    for versions in [TLS12_ONLY, TLS13_ONLY] {
        let creds = credentials(&sim, thumb, versions, false);
        let (first, creds) = connect(&sim, creds);
        let (second, creds) = connect(&sim, creds);
        assert_eq!(first, (Resumed::No, Resumed::No), "{versions:?}");
        assert_eq!(second, (Resumed::No, Resumed::No), "{versions:?}");
        release_all(&sim, creds);
    }
    sim.unload().unwrap_or_else(|leaks| panic!("{leaks}"));
}

#[test]
fn new_credentials_handles_on_either_side_start_with_an_empty_cache() {
    let (sim, thumb) = sim_with(config(960, CompletionPolicy::Mixed));
    for versions in [TLS12_ONLY, TLS13_ONLY] {
        let creds = credentials(&sim, thumb, versions, true);
        let (_, mut creds) = connect(&sim, creds);
        // The client's session is cached; a new server handle (a restarted
        // server) refuses it: a full handshake, the fallback.
        let fresh = credentials(&sim, thumb, versions, true);
        let old_server = std::mem::replace(&mut creds[0], fresh[0].clone());
        let (refused, creds) = connect(&sim, creds);
        assert_eq!(refused, (Resumed::No, Resumed::No), "{versions:?}");
        // A new client handle has nothing to offer.
        let mut creds = creds;
        let old_client = std::mem::replace(&mut creds[1], fresh[1].clone());
        drop(fresh);
        let (fresh_client, creds) = connect(&sim, creds);
        assert_eq!(fresh_client, (Resumed::No, Resumed::No), "{versions:?}");
        release_all(&sim, creds);
        release_all(&sim, vec![old_server, old_client]);
    }
    sim.unload().unwrap_or_else(|leaks| panic!("{leaks}"));
}

#[test]
fn a_provider_that_does_not_answer_session_info_leaves_it_unknown() {
    let (sim, thumb) = sim_with(SimConfig {
        session_info_answered: false,
        ..config(970, CompletionPolicy::Always(Completion::Inline))
    });
    let creds = credentials(&sim, thumb, TLS12_ONLY, true);
    let (first, creds) = connect(&sim, creds);
    let (second, creds) = connect(&sim, creds);
    assert_eq!(first, (Resumed::Unknown, Resumed::Unknown));
    assert_eq!(second, (Resumed::Unknown, Resumed::Unknown));
    release_all(&sim, creds);
    sim.unload().unwrap_or_else(|leaks| panic!("{leaks}"));
}
