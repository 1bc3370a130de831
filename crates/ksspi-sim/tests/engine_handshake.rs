//! The engine against the model: loopback handshakes (tokens in memory) for
//! TLS 1.2 and 1.3 in every completion mode and callback IRQL, seeded mixes,
//! tokens split at every byte and at random cuts (proptest), bad peers,
//! close mid-call and low resources.

mod engine_support;

use engine_support::*;
use ksspi::engine::Outcome;
use ksspi::sys::*;
use ksspi::SecStatus;
use ksspi_sim::sweep::sweep;
use ksspi_sim::{CallbackIrql, Completion, CompletionPolicy, SimConfig};
use proptest::prelude::*;
use std::sync::atomic::Ordering;

const ONLY_TLS12: (u32, u32) = (SP_PROT_TLS1_3_SERVER, SP_PROT_TLS1_3_CLIENT);
const ONLY_TLS13: (u32, u32) = (SP_PROT_TLS1_2_SERVER, SP_PROT_TLS1_2_CLIENT);

fn config(completion: CompletionPolicy, irql: CallbackIrql, seed: u64) -> SimConfig {
    SimConfig {
        seed,
        completion,
        callback_irql: irql,
        ..SimConfig::default()
    }
}

fn loopback(cfg: SimConfig, versions: (u32, u32), handshakes: usize) {
    let (sim, thumb) = sim_with(cfg.clone());
    for i in 0..handshakes {
        let before = sim.stats();
        let pair = Pair::new(&sim, thumb, "localhost", versions);
        let outcome = pair.handshake(usize::MAX);
        assert_eq!(
            outcome,
            (Outcome::Established, Outcome::Established),
            "{cfg:?} handshake {i}"
        );
        let engine = &pair.stats;
        let after = sim.stats();
        // Two acquisitions and two sessions: one async context each, created once.
        assert_eq!(engine.async_contexts.load(Ordering::Relaxed), 4);
        assert_eq!(
            after.async_contexts_created - before.async_contexts_created,
            4
        );
        // Every later call on a session's context was preceded by a reinit.
        let calls = engine.calls.load(Ordering::Relaxed);
        assert_eq!(engine.reinits.load(Ordering::Relaxed), calls - 4, "{cfg:?}");
        let s = pair.server.security_context();
        assert!(s.is_some_and(|h| h.is_valid()));
        pair.finish_keep_sim();
    }
    sim.unload()
        .unwrap_or_else(|leaks| panic!("seed {}: {leaks}", cfg.seed));
}

#[test]
fn loopback_in_every_completion_mode_and_callback_irql() {
    for versions in [ONLY_TLS12, ONLY_TLS13] {
        for mode in Completion::ALL {
            for irql in [CallbackIrql::Passive, CallbackIrql::Dispatch] {
                loopback(
                    config(CompletionPolicy::Always(mode), irql, 11),
                    versions,
                    3,
                );
            }
        }
    }
}

#[test]
fn loopback_without_requires_notify_in_every_completion_mode_and_callback_irql() {
    // ksecdd may not export SspiAsyncContextRequiresNotify (docs/DESIGN.md,
    // contract item 2): the provider then cannot say that a call needs no
    // callback, the model always calls back, and the engine must wait for
    // every callback, whatever the completion mode and IRQL.
    for versions in [ONLY_TLS12, ONLY_TLS13] {
        for mode in Completion::ALL {
            for irql in [
                CallbackIrql::Passive,
                CallbackIrql::Dispatch,
                CallbackIrql::Mixed,
            ] {
                let cfg = SimConfig {
                    requires_notify_exported: false,
                    ..config(CompletionPolicy::Always(mode), irql, 13)
                };
                loopback(cfg.clone(), versions, 2);
                let (sim, thumb) = sim_with(cfg);
                let pair = Pair::new(&sim, thumb, "localhost", versions);
                assert_eq!(
                    pair.handshake(usize::MAX),
                    (Outcome::Established, Outcome::Established),
                    "{mode:?} {irql:?}"
                );
                let stats = &pair.stats;
                assert_eq!(stats.completed_sync.load(Ordering::Relaxed), 0, "{mode:?}");
                assert_eq!(
                    stats.callback_first.load(Ordering::Relaxed)
                        + stats.issuer_first.load(Ordering::Relaxed),
                    stats.calls.load(Ordering::Relaxed),
                    "{mode:?} {irql:?}: every call completed through its callback"
                );
                pair.finish_keep_sim();
                sim.unload().unwrap_or_else(|leaks| panic!("{leaks}"));
            }
        }
    }
}

#[test]
fn loopback_with_seeded_random_mixes() {
    // KSSPI_SEED=N reruns one seed (a failure names its seed); KSSPI_SEEDS=N
    // sets how many seeds run (400 by default, 5 handshakes each).
    let env = |name: &str| std::env::var(name).ok().and_then(|s| s.parse::<u64>().ok());
    let seeds = match env("KSSPI_SEED") {
        Some(seed) => seed..seed + 1,
        None => 0..env("KSSPI_SEEDS").unwrap_or(400),
    };
    for seed in seeds {
        let versions = if seed % 2 == 0 {
            ONLY_TLS12
        } else {
            ONLY_TLS13
        };
        loopback(
            config(CompletionPolicy::Mixed, CallbackIrql::Mixed, seed),
            versions,
            5,
        );
    }
}

#[test]
fn flights_split_at_every_byte_boundary_still_complete() {
    for versions in [ONLY_TLS12, ONLY_TLS13] {
        for split in [1, 2, 3, 5, 7, 64, 333] {
            let cfg = config(CompletionPolicy::Mixed, CallbackIrql::Mixed, split as u64);
            let (sim, thumb) = sim_with(cfg);
            let pair = Pair::new(&sim, thumb, "localhost", versions);
            assert_eq!(
                pair.handshake(split),
                (Outcome::Established, Outcome::Established),
                "split {split}"
            );
            pair.finish();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Token splitting: however the flights are cut (pieces of any sizes, a
    /// record split anywhere, many pieces per record or many records per
    /// piece), both sides end established.
    #[test]
    fn flights_cut_anywhere_still_complete(
        tls13 in any::<bool>(),
        policy in 0..CompletionPolicy::ALL.len(),
        seed in any::<u64>(),
        cuts in proptest::collection::vec(1usize..3000, 1..24),
    ) {
        let versions = if tls13 { ONLY_TLS13 } else { ONLY_TLS12 };
        let (sim, thumb) = sim_with(config(CompletionPolicy::ALL[policy], CallbackIrql::Mixed, seed));
        let pair = Pair::new(&sim, thumb, "localhost", versions);
        let outcome = pair.handshake_cut(&cuts);
        pair.finish();
        prop_assert_eq!(outcome, (Outcome::Established, Outcome::Established));
    }
}

fn failing(target: &str, versions: (u32, u32)) -> (Outcome, Outcome) {
    let (sim, thumb) = sim_with(config(CompletionPolicy::Mixed, CallbackIrql::Mixed, 3));
    let pair = Pair::new(&sim, thumb, target, versions);
    let out = pair.handshake(usize::MAX);
    pair.finish();
    out
}

#[test]
fn a_wrong_name_fails_with_wrong_principal() {
    let (c, s) = failing("other.example", (0, 0));
    assert_eq!(c, Outcome::Failed(SecStatus::SEC_E_WRONG_PRINCIPAL));
    assert!(matches!(
        s,
        Outcome::Failed(_) | Outcome::NeedInput { .. } | Outcome::Established
    ));
}

#[test]
fn no_common_version_fails_with_algorithm_mismatch() {
    // Server speaks only 1.3, client only 1.2.
    let (c, s) = failing("localhost", (SP_PROT_TLS1_2_SERVER, SP_PROT_TLS1_3_CLIENT));
    assert!(
        c == Outcome::Failed(SecStatus::SEC_E_ALGORITHM_MISMATCH)
            || s == Outcome::Failed(SecStatus::SEC_E_ALGORITHM_MISMATCH),
        "client {c:?}, server {s:?}"
    );
}

/// A pair whose model has the server's certificate but a client trust store
/// of `roots` only.
fn pair_with(leaf_expired: bool, trust_ca: bool) -> (Outcome, Outcome) {
    let pki = ksspi_sim::certs::TestPki::new("bad peer CA");
    let store = ksspi_sim::certs::CertStore::new();
    let leaf = pki.leaf(&["localhost"], leaf_expired);
    let thumb = store
        .add_identity("MY", leaf.chain_der, leaf.key_der)
        .unwrap();
    if trust_ca {
        store.add_root_der(pki.ca_der()).unwrap();
    } else {
        store
            .add_root_der(ksspi_sim::certs::TestPki::new("a stranger").ca_der())
            .unwrap();
    }
    let sim = ksspi_sim::SimProvider::new(
        config(CompletionPolicy::Mixed, CallbackIrql::Mixed, 17),
        std::sync::Arc::new(store),
    );
    let pair = Pair::new(&sim, thumb, "localhost", (0, 0));
    let out = pair.handshake(usize::MAX);
    pair.finish();
    out
}

#[test]
fn an_untrusted_root_fails_with_untrusted_root() {
    assert_eq!(
        pair_with(false, false).0,
        Outcome::Failed(SecStatus::SEC_E_UNTRUSTED_ROOT)
    );
}

#[test]
fn an_expired_certificate_fails_with_cert_expired() {
    assert_eq!(
        pair_with(true, true).0,
        Outcome::Failed(SecStatus::SEC_E_CERT_EXPIRED)
    );
}

#[test]
fn a_fatal_alert_from_the_peer_fails_the_session() {
    let (sim, thumb) = sim_with(config(CompletionPolicy::Mixed, CallbackIrql::Mixed, 23));
    let pair = Pair::new(&sim, thumb, "localhost", (0, 0));
    pair.client.step(&[], &passive()).unwrap();
    let _hello = pair.client_events.next();
    // handshake_failure (40), fatal, in a plaintext alert record.
    pair.client
        .step(&[21, 3, 3, 0, 2, 2, 40], &passive())
        .unwrap();
    let r = pair.client_events.next();
    assert_eq!(
        r.outcome,
        Outcome::Failed(SecStatus::SEC_E_ALGORITHM_MISMATCH)
    );
    pair.finish();
}

#[test]
fn bytes_after_the_handshake_are_kept_for_the_record_layer() {
    for versions in [ONLY_TLS12, ONLY_TLS13] {
        let (sim, thumb) = sim_with(config(CompletionPolicy::Mixed, CallbackIrql::Mixed, 29));
        let pair = Pair::new(&sim, thumb, "localhost", versions);
        let at = passive();
        pair.client.step(&[], &at).unwrap();
        let hello = pair.client_events.next().output;
        pair.server.step(&hello, &at).unwrap();
        let mut flight = pair.server_events.next().output;
        if versions == ONLY_TLS12 {
            // TLS 1.2: the client's flight, then the server's last flight.
            pair.client.step(&flight, &at).unwrap();
            let answer = pair.client_events.next();
            assert_eq!(answer.outcome, Outcome::NeedInput { missing: 0 });
            pair.server.step(&answer.output, &at).unwrap();
            let last = pair.server_events.next();
            assert_eq!(last.outcome, Outcome::Established);
            flight = last.output;
        }
        // The server's last flight and a record that followed it, in one read.
        let trailer = b"\x17\x03\x03\x00\x03abc".to_vec();
        let mut merged = flight.clone();
        merged.extend_from_slice(&trailer);
        pair.client.step(&merged, &at).unwrap();
        let r = pair.client_events.next();
        assert_eq!(r.outcome, Outcome::Established);
        let mut leftover = Vec::new();
        pair.client.take_leftover(&mut leftover).unwrap();
        assert_eq!(leftover, trailer, "the trailing record, untouched");
        pair.finish();
    }
}

#[test]
fn garbage_from_the_peer_fails_cleanly() {
    let (sim, thumb) = sim_with(config(CompletionPolicy::Mixed, CallbackIrql::Mixed, 5));
    let pair = Pair::new(&sim, thumb, "localhost", (0, 0));
    pair.server
        .step(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &passive())
        .unwrap();
    let r = pair.server_events.next();
    assert_eq!(r.outcome, Outcome::Failed(SecStatus::SEC_E_INVALID_TOKEN));
    // The session is over: a further step is refused, not run.
    assert_eq!(
        pair.server.step(b"more", &passive()),
        Err(ksspi::engine::StepError::Finished)
    );
    pair.finish();
}

#[test]
fn a_truncated_stream_waits_for_the_rest() {
    let (sim, thumb) = sim_with(config(
        CompletionPolicy::Always(Completion::Async),
        CallbackIrql::Dispatch,
        5,
    ));
    let pair = Pair::new(&sim, thumb, "localhost", (0, 0));
    pair.client.step(&[], &passive()).unwrap();
    let hello = pair.client_events.next().output;
    pair.server
        .step(&hello[..hello.len() - 10], &passive())
        .unwrap();
    let r = pair.server_events.next();
    assert_eq!(r.outcome, Outcome::NeedInput { missing: 10 });
    assert!(r.output.is_empty());
    pair.server
        .step(&hello[hello.len() - 10..], &passive())
        .unwrap();
    let r = pair.server_events.next();
    assert_eq!(r.outcome, Outcome::NeedInput { missing: 0 });
    assert!(!r.output.is_empty(), "the server's flight");
    pair.finish();
}

#[test]
fn close_mid_call_releases_everything_once_the_call_completes() {
    for seed in 0..6 {
        let (sim, thumb) = sim_with(config(
            CompletionPolicy::Always(Completion::Async),
            CallbackIrql::Mixed,
            seed,
        ));
        let pair = Pair::new(&sim, thumb, "localhost", (0, 0));
        // Hold the "other CPUs" so the client's first call stays in flight.
        let gate = sim.hold_completions();
        pair.client.step(&[], &passive()).unwrap();
        pair.client.close();
        assert_eq!(
            pair.client_events.closed.load(Ordering::SeqCst),
            0,
            "closed while in flight"
        );
        assert_eq!(
            pair.client.step(&[], &passive()),
            Err(ksspi::engine::StepError::Closed)
        );
        gate.release();
        pair.client_events.wait_closed();
        pair.finish();
    }
}

/// Both established, or one side failed with an error status.
fn clean_end(c: Outcome, s: Outcome) -> Result<(), String> {
    match (c, s) {
        (Outcome::Established, Outcome::Established) => Ok(()),
        (Outcome::Failed(st), _) | (_, Outcome::Failed(st)) if st.is_error() => Ok(()),
        other => Err(format!(
            "handshake ended neither established nor failed: {other:?}"
        )),
    }
}

#[test]
fn a_low_resources_sweep_over_a_full_handshake_ends_cleanly_every_time() {
    // Provider-allocated tokens (the default), then caller-supplied ones
    // (their token buffer is one more allocation point).
    for tokens in [
        ksspi::engine::Tokens::Provider,
        ksspi::engine::Tokens::Caller,
    ] {
        sweep_handshake(tokens);
    }
}

fn sweep_handshake(tokens: ksspi::engine::Tokens) {
    let limits = ksspi::engine::Limits {
        tokens,
        ..Default::default()
    };
    let (store, thumb, _pki) = store();
    let cfg = config(CompletionPolicy::Mixed, CallbackIrql::Mixed, 9);
    let report = sweep(&cfg, &store, |sim| {
        let stats = std::sync::Arc::new(ksspi::engine::EngineStats::default());
        let server_cred =
            acquire(sim, &server_spec(thumb, 0), &stats).map_err(|s| format!("server creds: {s}"));
        let client_cred =
            acquire(sim, &client_spec(0), &stats).map_err(|s| format!("client creds: {s}"));
        let creds: Vec<_> = [server_cred.clone(), client_cred.clone()]
            .into_iter()
            .flatten()
            .collect();
        let outcome = match (server_cred, client_cred) {
            (Ok(_), Ok(_)) => {
                match Pair::with_limits(sim, creds.clone(), "localhost", Default::default(), limits)
                {
                    Ok(pair) => {
                        let (c, s) = pair.handshake(usize::MAX);
                        pair.close_only();
                        clean_end(c, s)
                    }
                    Err(status) if status.is_error() => Ok(()),
                    Err(status) => Err(format!("session setup failed with a non-error {status}")),
                }
            }
            (Err(_), _) | (_, Err(_)) => Ok(()), // a clean failure status
        };
        release_all(sim, creds);
        outcome
    });
    println!(
        "low-resources sweep ({tokens:?} tokens): {} fault points, {} runs with one failing",
        report.points, report.runs
    );
    assert!(
        report.points > 20,
        "too few fault points: {}",
        report.points
    );
    assert_eq!(report.runs, report.points);
    assert!(
        report.failures.is_empty(),
        "{} of {} runs did not end cleanly: {:#?}",
        report.failures.len(),
        report.runs,
        report.failures
    );
}

#[test]
fn the_engine_works_whether_or_not_reinit_is_allowed_inside_the_callback() {
    // docs/DESIGN.md leaves open whether SspiReinitAsyncContext may run inside the
    // completion callback. With the model refusing it there, the engine
    // continues from its work item and reinitialises outside the callback.
    for allowed in [true, false] {
        for mode in Completion::ALL {
            for irql in [CallbackIrql::Passive, CallbackIrql::Mixed] {
                let cfg = SimConfig {
                    reinit_in_callback: allowed,
                    ..config(CompletionPolicy::Always(mode), irql, 31)
                };
                let (sim, thumb) = sim_with(cfg);
                for versions in [ONLY_TLS12, ONLY_TLS13] {
                    let pair = Pair::new(&sim, thumb, "localhost", versions);
                    let outcome = pair.handshake(usize::MAX);
                    assert_eq!(
                        outcome,
                        (Outcome::Established, Outcome::Established),
                        "reinit in callback allowed: {allowed}, {mode:?}, {irql:?}"
                    );
                    let deferred = pair.stats.reinits_deferred.load(Ordering::Relaxed);
                    if allowed || mode != Completion::Async {
                        assert_eq!(deferred, 0, "{mode:?} {irql:?}");
                    }
                    pair.finish_keep_sim();
                }
                sim.unload().unwrap_or_else(|leaks| panic!("{leaks}"));
            }
        }
    }
}

#[test]
fn a_close_completed_in_the_callback_defers_its_reinit_when_refused_there() {
    // The client's first call is in flight when close comes; the completion
    // callback (at PASSIVE) continues into the teardown, whose delete call
    // needs a reinit: refused inside the callback, done from the work item.
    let cfg = SimConfig {
        reinit_in_callback: false,
        ..config(
            CompletionPolicy::Always(Completion::Async),
            CallbackIrql::Passive,
            37,
        )
    };
    let (sim, thumb) = sim_with(cfg);
    let pair = Pair::new(&sim, thumb, "localhost", (0, 0));
    let gate = sim.hold_completions();
    pair.client.step(&[], &passive()).unwrap();
    pair.client.close();
    gate.release();
    pair.client_events.wait_closed();
    assert!(
        pair.stats.reinits_deferred.load(Ordering::Relaxed) > 0,
        "the refusal was never met"
    );
    assert!(pair.stats.work_items.load(Ordering::Relaxed) > 0);
    pair.finish();
}

/// Sessions with `limits`, over fresh credentials, and the two recorders.
fn limited_pair(
    sim: &ksspi_sim::SimProvider,
    thumb: ksspi_sim::certs::Thumbprint,
    limits: ksspi::engine::Limits,
) -> Pair {
    use ksspi::engine::{Role, Session, SessionSetup};
    let pair = Pair::new(sim, thumb, "localhost", (0, 0));
    let creds = pair.close_only();
    let stats = std::sync::Arc::new(ksspi::engine::EngineStats::default());
    let server_events = std::sync::Arc::new(Recorder::default());
    let client_events = std::sync::Arc::new(Recorder::default());
    let at = passive();
    let make = |role: Role, cred, events: &std::sync::Arc<Recorder>| {
        Session::new(
            sim.clone(),
            ksspi_sim::SimPlatform::new(sim),
            SessionSetup {
                role,
                credentials: cred,
                limits,
                client_certificates: Default::default(),
                alpn: None,
                events: events.clone(),
            },
            stats.clone(),
            &at,
        )
        .unwrap()
    };
    Pair {
        sim: sim.clone(),
        stats: stats.clone(),
        server: make(Role::Server, creds[0].clone(), &server_events),
        client: make(
            Role::Client {
                target: Some("localhost".into()),
            },
            creds[1].clone(),
            &client_events,
        ),
        server_events,
        client_events,
        creds,
    }
}

#[test]
fn limits_refuse_too_much_input_and_fail_an_oversized_token_cleanly() {
    let (sim, thumb) = sim_with(config(CompletionPolicy::Mixed, CallbackIrql::Mixed, 41));
    // Input beyond max_input is refused before anything runs.
    let limits = ksspi::engine::Limits {
        max_input: 64,
        ..Default::default()
    };
    let pair = limited_pair(&sim, thumb, limits);
    assert_eq!(
        pair.server.step(&[0x16; 65], &passive()),
        Err(ksspi::engine::StepError::TooMuchInput)
    );
    pair.client.step(&[], &passive()).unwrap();
    let _ = pair.client_events.next();
    pair.finish_keep_sim();
    // A server flight bigger than max_token fails the step with a status,
    // not a truncated token.
    let limits = ksspi::engine::Limits {
        max_token: 300,
        ..Default::default()
    };
    let pair = limited_pair(&sim, thumb, limits);
    pair.client.step(&[], &passive()).unwrap();
    let hello = pair.client_events.next().output;
    pair.server.step(&hello, &passive()).unwrap();
    let r = pair.server_events.next();
    assert_eq!(
        r.outcome,
        Outcome::Failed(SecStatus::SEC_E_BUFFER_TOO_SMALL)
    );
    pair.finish_keep_sim();
    sim.unload().unwrap_or_else(|leaks| panic!("{leaks}"));
}

#[test]
fn hostile_bytes_at_every_stage_fail_cleanly_and_leak_nothing() {
    // A seeded stream of mutations of real flights and random records, fed to
    // either side at each stage: every step ends with an outcome, no panic,
    // and the model is clean at unload.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..400u64 {
        let (sim, thumb) = sim_with(config(CompletionPolicy::Mixed, CallbackIrql::Mixed, round));
        let pair = Pair::new(
            &sim,
            thumb,
            "localhost",
            if round % 2 == 0 {
                ONLY_TLS12
            } else {
                ONLY_TLS13
            },
        );
        let at = passive();
        pair.client.step(&[], &at).unwrap();
        let mut hello = pair.client_events.next().output;
        let target_server = round % 3 != 0;
        let mut input = if target_server {
            hello.clone()
        } else {
            pair.server.step(&hello, &at).unwrap();
            pair.server_events.next().output
        };
        match rand() % 4 {
            0 => {
                let i = (rand() as usize) % input.len();
                input[i] ^= 1 << (rand() % 8);
            }
            1 => input.truncate((rand() as usize) % input.len()),
            2 => {
                let n = 5 + (rand() as usize) % 64;
                input = (0..n).map(|_| rand() as u8).collect();
                input[0] = 22;
                input[1] = 3;
            }
            _ => {
                hello.reverse();
                input.extend_from_slice(&hello);
            }
        }
        let (session, events) = if target_server {
            (&pair.server, &pair.server_events)
        } else {
            (&pair.client, &pair.client_events)
        };
        if session.step(&input, &at).is_ok() {
            let r = events.next();
            if let Outcome::Failed(status) = r.outcome {
                assert!(
                    status.is_error(),
                    "round {round}: failed with a non-error {status}"
                );
            }
        }
        pair.finish_keep_sim();
        sim.unload()
            .unwrap_or_else(|leaks| panic!("round {round}: {leaks}"));
    }
}

#[test]
fn a_seed_replays_the_same_choices() {
    // Every completion mode and callback IRQL the model picks follows from the
    // seed, the context and the call: the same seed gives the same run.
    let run = |seed: u64| {
        let (sim, thumb) = sim_with(config(CompletionPolicy::Mixed, CallbackIrql::Mixed, seed));
        for _ in 0..3 {
            let pair = Pair::new(&sim, thumb, "localhost", (0, 0));
            assert_eq!(
                pair.handshake(usize::MAX),
                (Outcome::Established, Outcome::Established)
            );
            pair.finish_keep_sim();
        }
        let stats = sim.stats();
        sim.unload().unwrap_or_else(|leaks| panic!("{leaks}"));
        stats
    };
    let (a, b, c) = (run(77), run(77), run(78));
    assert_eq!(a, b, "seed 77 twice");
    assert_ne!(
        (
            a.completed_async,
            a.completed_inline,
            a.completed_sync,
            a.callbacks_passive
        ),
        (
            c.completed_async,
            c.completed_inline,
            c.completed_sync,
            c.callbacks_passive
        ),
        "another seed, other choices"
    );
}

#[test]
fn caller_supplied_tokens_complete_handshakes_and_give_their_buffer_back() {
    // Tokens::Caller: the engine's zeroed token buffer instead of the
    // provider's allocation; both versions, every completion mode in the
    // mix, flights whole and in pieces.
    let limits = ksspi::engine::Limits {
        tokens: ksspi::engine::Tokens::Caller,
        ..Default::default()
    };
    for (seed, protocols) in [(51, ONLY_TLS12), (52, ONLY_TLS13)] {
        let (sim, thumb) = sim_with(config(CompletionPolicy::Mixed, CallbackIrql::Mixed, seed));
        for split in [usize::MAX, 7] {
            let stats = std::sync::Arc::new(ksspi::engine::EngineStats::default());
            let creds = vec![
                acquire(&sim, &server_spec(thumb, protocols.0), &stats).unwrap(),
                acquire(&sim, &client_spec(protocols.1), &stats).unwrap(),
            ];
            let pair =
                Pair::with_limits(&sim, creds.clone(), "localhost", stats.clone(), limits).unwrap();
            let (c, s) = pair.handshake(split);
            assert_eq!((c, s), (Outcome::Established, Outcome::Established));
            // One token buffer per session, given back at the end of the
            // handshake; input and output grown besides.
            let grows = stats.buffer_grows.load(std::sync::atomic::Ordering::SeqCst);
            assert!(
                (2..=2 * ksspi::engine::max_grows(&limits)).contains(&grows),
                "{grows} growths"
            );
            pair.close_only();
            release_all(&sim, creds);
        }
        sim.wait_idle();
        sim.unload().unwrap_or_else(|leaks| panic!("{leaks}"));
    }
}
