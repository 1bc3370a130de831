//! Full handshakes through the raw provider calls (no engine), in every
//! completion mode and callback IRQL, TLS 1.2 and 1.3.

mod support;

use ksspi::sys::{
    SP_PROT_TLS1_2_CLIENT, SP_PROT_TLS1_2_SERVER, SP_PROT_TLS1_3_CLIENT, SP_PROT_TLS1_3_SERVER,
};
use ksspi::SecStatus;
use ksspi_sim::verifier::Tag;
use ksspi_sim::{CallbackIrql, Completion, CompletionPolicy, SimConfig, SimProvider};
use support::{handshake, pki_store, Peer};

fn sim(
    completion: CompletionPolicy,
    irql: CallbackIrql,
    seed: u64,
) -> (SimProvider, ksspi_sim::certs::Thumbprint) {
    let (store, thumb, _pki) = pki_store();
    let config = SimConfig {
        seed,
        completion,
        callback_irql: irql,
        ..SimConfig::default()
    };
    (SimProvider::new(config, store), thumb)
}

/// Disabled-protocol masks that leave exactly one version.
const ONLY_TLS12: (u32, u32) = (SP_PROT_TLS1_3_SERVER, SP_PROT_TLS1_3_CLIENT);
const ONLY_TLS13: (u32, u32) = (SP_PROT_TLS1_2_SERVER, SP_PROT_TLS1_2_CLIENT);

fn run(
    completion: CompletionPolicy,
    irql: CallbackIrql,
    (s_dis, c_dis): (u32, u32),
    allocate: bool,
) {
    let (sim, thumb) = sim(completion, irql, 7);
    {
        let mut server = Peer::server(&sim, thumb, s_dis).expect("server credential");
        let mut client = Peer::client(&sim, "localhost", c_dis).expect("client credential");
        server.allocate = allocate;
        client.allocate = allocate;
        let (c, s) = handshake(&mut client, &mut server);
        assert_eq!(
            (c, s),
            (SecStatus::SEC_E_OK, SecStatus::SEC_E_OK),
            "{completion:?} {irql:?}"
        );
        assert!(server.steps >= 2 && client.steps >= 2);
        assert_eq!(sim.verifier().live_count(Tag::SecurityContext), 2);
    }
    let stats = sim.stats();
    // One async context per peer for the whole handshake, reinitialised per call.
    assert_eq!(stats.async_contexts_created, 2);
    assert_eq!(stats.reinits, stats.calls - 2);
    match completion {
        CompletionPolicy::Always(Completion::Sync) => {
            assert_eq!(stats.completed_sync, stats.calls);
            assert_eq!(stats.callbacks_passive + stats.callbacks_dispatch, 0);
        }
        CompletionPolicy::Always(Completion::Inline) => {
            assert_eq!(stats.completed_inline, stats.calls)
        }
        CompletionPolicy::Always(_) => assert_eq!(stats.completed_async, stats.calls),
        CompletionPolicy::Mixed => {}
    }
    if completion != CompletionPolicy::Always(Completion::Sync)
        && completion != CompletionPolicy::Mixed
    {
        match irql {
            CallbackIrql::Passive => assert_eq!(stats.callbacks_passive, stats.calls),
            CallbackIrql::Dispatch => assert_eq!(stats.callbacks_dispatch, stats.calls),
            CallbackIrql::Mixed => {}
        }
    }
    sim.unload().unwrap_or_else(|leaks| panic!("{leaks}"));
}

#[test]
fn tls12_and_tls13_in_every_completion_mode_and_callback_irql() {
    for version in [ONLY_TLS12, ONLY_TLS13] {
        for mode in Completion::ALL {
            for irql in [CallbackIrql::Passive, CallbackIrql::Dispatch] {
                run(CompletionPolicy::Always(mode), irql, version, false);
            }
        }
    }
}

#[test]
fn seeded_mixes_with_provider_allocated_tokens() {
    for seed in 0..8 {
        let (sim, thumb) = sim(CompletionPolicy::Mixed, CallbackIrql::Mixed, seed);
        {
            let mut server = Peer::server(&sim, thumb, 0).unwrap();
            let mut client = Peer::client(&sim, "localhost", 0).unwrap();
            server.allocate = true;
            client.allocate = true;
            assert_eq!(
                handshake(&mut client, &mut server),
                (SecStatus::SEC_E_OK, SecStatus::SEC_E_OK),
                "seed {seed}"
            );
        }
        sim.unload()
            .unwrap_or_else(|leaks| panic!("seed {seed}: {leaks}"));
    }
}

#[test]
fn a_wrong_name_fails_the_client_with_wrong_principal() {
    let (sim, thumb) = sim(
        CompletionPolicy::Always(Completion::Async),
        CallbackIrql::Dispatch,
        1,
    );
    {
        let mut server = Peer::server(&sim, thumb, 0).unwrap();
        let mut client = Peer::client(&sim, "not-the-server.example", 0).unwrap();
        let (c, _s) = handshake(&mut client, &mut server);
        assert_eq!(c, SecStatus::SEC_E_WRONG_PRINCIPAL);
    }
    sim.unload().unwrap_or_else(|leaks| panic!("{leaks}"));
}

#[test]
fn an_unknown_thumbprint_gives_no_credentials() {
    let (sim, _thumb) = sim(
        CompletionPolicy::Always(Completion::Inline),
        CallbackIrql::Passive,
        1,
    );
    assert_eq!(
        Peer::server(&sim, [0xAB; 20], 0).err(),
        Some(SecStatus::SEC_E_NO_CREDENTIALS)
    );
    sim.unload().unwrap_or_else(|leaks| panic!("{leaks}"));
}
