//! SELFTEST's resume mode over the model: each pair runs its handshake twice
//! over the run's credentials, its client towards a target name of its own,
//! and the reply counts, from the client side, the second handshakes that
//! resumed (TLS 1.2 by session id, TLS 1.3 by the ticket the client decrypted
//! after the first), those that were full, and the handshakes whose
//! resumption the provider did not tell; every handshake counts in the
//! figures. Without resume the reply has no counts (the version rule).

mod common;

use common::*;
use ksspi_abi::*;
use ksspi_driver::device::DeviceConfig;
use ksspi_driver::ntstatus::*;
use ksspi_sim::certs::TestPki;
use ksspi_sim::verifier::Tag;
use ksspi_sim::{CallbackIrql, Completion, CompletionPolicy, SimConfig};
use std::sync::Arc;
use std::time::Duration;

/// The versions a run may ask for (both: the pairs alternate).
const VERSIONS: [(u32, &str); 3] = [
    (proto::TLS12, "TLS 1.2"),
    (proto::TLS13, "TLS 1.3"),
    (proto::ALL, "both"),
];

fn resume_request(w: &World, count: u32, protocols: u32, bytes: u32) -> SelftestRequest {
    SelftestRequest {
        count,
        concurrency: 4,
        protocols,
        thumbprint: w.thumb,
        bytes,
        seed: 11,
        resume: true,
        ..SelftestRequest::default()
    }
}

fn run(w: &World, req: &SelftestRequest) -> SelftestReply {
    let file = w.dev.open_file();
    let (st, reply) = w.call(file, IOCTL_KSSPI_SELFTEST, &enc(req), 512);
    assert_eq!(st, STATUS_SUCCESS);
    // The grown reply: the figures, then the four counts.
    assert_eq!(
        reply.len(),
        Header::LEN + 144 + if req.resume { 32 } else { 0 }
    );
    decode::<SelftestReply>(&reply).unwrap()
}

/// A world whose model answers SESSION_INFO as `answered` says and sends
/// `tickets` TLS 1.3 tickets.
fn world_answering(completion: CompletionPolicy, tickets: usize, answered: bool) -> World {
    let (store, thumb) = TestPki::new("resume CA").store(&["localhost"]);
    world_in(
        &Arc::new(store),
        thumb,
        SimConfig {
            completion,
            callback_irql: CallbackIrql::Mixed,
            seed: 21,
            tls13_tickets: tickets,
            session_info_answered: answered,
            ..SimConfig::default()
        },
        DeviceConfig::default(),
    )
}

#[test]
fn every_second_handshake_resumes_in_every_mode_and_version() {
    let count = 10;
    for policy in CompletionPolicy::ALL {
        for (protocols, label) in VERSIONS {
            let w = world_with(policy, 2, DeviceConfig::default());
            let r = run(&w, &resume_request(&w, count, protocols, 0));
            let n = u64::from(count);
            assert_eq!(
                (r.handshakes_ok, r.handshakes_failed),
                (2 * n, 0),
                "{policy:?} {label}: {r:?}"
            );
            assert_eq!(r.sessions, 4 * n, "{policy:?} {label}: two per handshake");
            assert_eq!(
                r.resumption,
                Some(SelftestResumption {
                    resumed: n,
                    full: 0,
                    unknown: 0,
                    first_resumed: 0,
                }),
                "{policy:?} {label}"
            );
            assert!(r.latency_p50_us <= r.latency_p99_us && r.latency_p99_us <= r.latency_max_us);
            w.finish();
        }
    }
}

#[test]
fn with_a_record_layer_exchange_the_tickets_come_with_the_data() {
    // The client's first decrypt of the exchange takes the tickets; every
    // byte of both handshakes is checked.
    for policy in [
        CompletionPolicy::Mixed,
        CompletionPolicy::Always(Completion::Inline),
    ] {
        for (protocols, label) in VERSIONS {
            let w = world_with(policy, 2, DeviceConfig::default());
            let r = run(&w, &resume_request(&w, 6, protocols, 40_000));
            assert_eq!(
                (r.handshakes_ok, r.handshakes_failed),
                (12, 0),
                "{policy:?} {label}: {r:?}"
            );
            assert_eq!(r.bytes_checked, 12 * 2 * 40_000, "{policy:?} {label}");
            let c = r.resumption.expect("counts");
            assert_eq!(
                (c.resumed, c.full, c.unknown),
                (6, 0, 0),
                "{policy:?} {label}"
            );
            w.finish();
        }
    }
}

#[test]
fn without_tickets_a_tls13_second_handshake_is_full_and_counted_so() {
    // A server that sends no ticket leaves the client nothing to offer: the
    // fallback, a full handshake. TLS 1.2 still resumes by session id.
    let w = world_with(CompletionPolicy::Mixed, 0, DeviceConfig::default());
    let r = run(&w, &resume_request(&w, 8, proto::TLS13, 0));
    assert_eq!((r.handshakes_ok, r.handshakes_failed), (16, 0), "{r:?}");
    let c = r.resumption.expect("counts");
    assert_eq!(
        (c.resumed, c.full, c.unknown, c.first_resumed),
        (0, 8, 0, 0)
    );
    let r = run(&w, &resume_request(&w, 8, proto::TLS12, 0));
    let c = r.resumption.expect("counts");
    assert_eq!(
        (c.resumed, c.full, c.unknown, c.first_resumed),
        (8, 0, 0, 0)
    );
    w.finish();
}

#[test]
fn a_provider_that_does_not_answer_session_info_leaves_every_handshake_unknown() {
    for (protocols, label) in VERSIONS {
        let w = world_answering(CompletionPolicy::Mixed, 2, false);
        let r = run(&w, &resume_request(&w, 7, protocols, 0));
        assert_eq!((r.handshakes_ok, r.handshakes_failed), (14, 0), "{label}");
        assert_eq!(
            r.resumption,
            Some(SelftestResumption {
                resumed: 0,
                full: 0,
                unknown: 14,
                first_resumed: 0,
            }),
            "{label}: never 'full' when the provider does not tell"
        );
        w.finish();
    }
}

#[test]
fn without_resume_the_reply_has_no_counts_and_nothing_changes() {
    for policy in [
        CompletionPolicy::Mixed,
        CompletionPolicy::Always(Completion::Sync),
    ] {
        let w = world_with(policy, 2, DeviceConfig::default());
        let req = SelftestRequest {
            resume: false,
            ..resume_request(&w, 9, proto::ALL, 0)
        };
        let r = run(&w, &req);
        assert_eq!(r.resumption, None, "{policy:?}");
        assert_eq!((r.handshakes_ok, r.handshakes_failed), (9, 0), "{policy:?}");
        assert_eq!(r.sessions, 18, "{policy:?}: one handshake per pair");
        w.finish();
    }
}

#[test]
fn a_resume_run_needs_room_for_its_counts_up_front() {
    let w = world_with(CompletionPolicy::Mixed, 2, DeviceConfig::default());
    let file = w.dev.open_file();
    let req = enc(&resume_request(&w, 2, proto::ALL, 0));
    let (st, reply) = w.call(file, IOCTL_KSSPI_SELFTEST, &req, Header::LEN + 144);
    assert_eq!((st, reply.len()), (STATUS_BUFFER_TOO_SMALL, 0));
    assert_eq!(w.sim.stats().calls, 0, "nothing started");
    // The same room is enough without resume.
    let plain = enc(&SelftestRequest {
        resume: false,
        ..resume_request(&w, 2, proto::ALL, 0)
    });
    let (st, _) = w.call(file, IOCTL_KSSPI_SELFTEST, &plain, Header::LEN + 144);
    assert_eq!(st, STATUS_SUCCESS);
    w.finish();
}

#[test]
fn a_failed_first_handshake_counts_its_second_as_failed() {
    // An unknown certificate: no server credentials, so no handshake runs;
    // both of every pair's count as failed.
    let mut w = world_with(CompletionPolicy::Mixed, 2, DeviceConfig::default());
    w.thumb = [0x42; 20];
    let r = run(&w, &resume_request(&w, 5, proto::ALL, 0));
    assert_eq!((r.handshakes_ok, r.handshakes_failed), (0, 10));
    assert_eq!(r.resumption, Some(SelftestResumption::default()));
    w.finish();
}

/// Wait until `f` holds (at most 20 s).
fn until(what: &str, f: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "{what} within 20 s");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_cancelled_resume_run_starts_no_second_handshake_and_leaves_nothing() {
    let policy = CompletionPolicy::Always(Completion::Async);
    for bytes in [0, 20_000] {
        let w = world_with(policy, 2, DeviceConfig::default());
        let file = w.dev.open_file();
        let concurrency = 4;
        let (req, done, key) = w.request(512, false);
        let req_bytes = enc(&SelftestRequest {
            concurrency,
            ..resume_request(&w, MAX_SELFTEST_COUNT, proto::ALL, bytes)
        });
        w.dev
            .ioctl(file, IOCTL_KSSPI_SELFTEST, &req_bytes, req, &at());
        let k = key.lock().unwrap().expect("the SELFTEST pends");
        until("handshakes under way", || {
            w.sim.verifier().created(Tag::SecurityContext) >= 20
        });
        let hold = w.sim.hold_completions();
        let before = w.sim.verifier().created(Tag::SecurityContext);
        assert!(w.cancel_at_dispatch(k), "bytes {bytes}: the run takes it");
        hold.release();
        let (st, reply) = wait(&done);
        assert_eq!((st, reply.len()), (STATUS_CANCELLED, 0), "bytes {bytes}");
        // At most the handshakes that were starting came after the cancel
        // (two security contexts each): no pair went on to its second.
        let after = w.sim.verifier().created(Tag::SecurityContext);
        assert!(
            after <= before + 2 * u64::from(concurrency),
            "bytes {bytes}: {before} security contexts at the cancel, {after} at the end"
        );
        // The slot is free again, and a resume run there works.
        let r = run(&w, &resume_request(&w, 3, proto::ALL, 0));
        assert_eq!(r.resumption.map(|c| c.resumed), Some(3), "bytes {bytes}");
        w.finish();
    }
}

#[test]
fn unload_stops_a_resume_run_under_way() {
    for policy in [
        CompletionPolicy::Always(Completion::Async),
        CompletionPolicy::Mixed,
    ] {
        let w = world_with(policy, 2, DeviceConfig::default());
        let request = enc(&resume_request(&w, MAX_SELFTEST_COUNT, proto::ALL, 0));
        let file = w.dev.open_file();
        let done = std::thread::scope(|scope| {
            let sender = scope.spawn(|| w.send(file, IOCTL_KSSPI_SELFTEST, &request, 512));
            std::thread::sleep(Duration::from_millis(50));
            w.dev.unload();
            sender.join().unwrap()
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !w.dev.outstanding().is_drained() {
            assert!(
                std::time::Instant::now() < deadline,
                "{policy:?}: the drain waited for the whole run: {:?}",
                w.dev.outstanding()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        let (st, _) = wait(&done);
        assert_eq!(st, STATUS_CANCELLED, "{policy:?}");
        w.platform.dispose_work_items();
        w.finish();
    }
}

/// A low-resources sweep (as tests/low_resources.rs's) over a resume run of
/// two pairs, one TLS 1.2 and one TLS 1.3, with `bytes` each way: each fault
/// point of the model failing in turn (the pairs' scratch and target names,
/// sessions, buffers, provider allocations and calls), every run must end
/// with a clean status, counts that add up (each handshake once, two per
/// pair; no more resumed or full than second handshakes) and nothing left at
/// unload.
fn sweep_resume(bytes: u32) -> (u64, u64) {
    let (mut points, mut runs) = (0, 0);
    for (i, policy) in CompletionPolicy::ALL.into_iter().enumerate() {
        let config = SimConfig {
            completion: policy,
            callback_irql: CallbackIrql::Mixed,
            tls13_tickets: 2,
            seed: 40 + i as u64,
            ..SimConfig::default()
        };
        let (store, thumb) = TestPki::new("resume sweep").store(&["localhost"]);
        let store = Arc::new(store);
        let report = ksspi_sim::sweep::sweep(&config, &store, |sim| {
            let w = World::over(sim.clone(), thumb, DeviceConfig::default());
            let verdict = (|| {
                let file = w.dev.open_file();
                let req = SelftestRequest {
                    count: 2,
                    concurrency: 2,
                    ..resume_request(&w, 2, proto::ALL, bytes)
                };
                let (st, reply) = w.call(file, IOCTL_KSSPI_SELFTEST, &enc(&req), 512);
                if !clean_status(st)? {
                    return Ok(());
                }
                let r = decode::<SelftestReply>(&reply).map_err(|e| format!("{e:?}"))?;
                let c = r.resumption.ok_or("no counts in a resume reply")?;
                if r.handshakes_ok + r.handshakes_failed != 4 {
                    return Err(format!("handshakes do not add up: {r:?}"));
                }
                if c.resumed + c.full > 2 || c.first_resumed != 0 {
                    return Err(format!("resumption counts do not add up: {r:?}"));
                }
                if r.handshakes_failed == 0 && (c.resumed, c.full, c.unknown) != (2, 0, 0) {
                    return Err(format!("all ok, not all resumed: {r:?}"));
                }
                let most = (r.handshakes_ok + r.handshakes_failed) * 2 * u64::from(bytes);
                if r.bytes_checked > most || (r.handshakes_failed == 0 && r.bytes_checked != most) {
                    return Err(format!("bytes checked do not add up: {r:?}"));
                }
                Ok(())
            })();
            w.dev.unload();
            w.wait_sessions_gone();
            sim.wait_idle();
            w.check_all_completed_once();
            verdict
        });
        assert!(
            report.failures.is_empty(),
            "{policy:?}: {:#?}",
            report.failures
        );
        assert_eq!(report.runs, report.points);
        assert!(report.points > 40, "{policy:?}: {}", report.points);
        points += report.points;
        runs += report.runs;
    }
    (points, runs)
}

#[test]
fn a_low_resources_sweep_over_a_resume_run_ends_cleanly_every_time() {
    let (points, runs) = sweep_resume(0);
    println!("resume sweep: 5 completion modes, {points} fault points, {runs} runs, all clean");
}

#[test]
fn a_low_resources_sweep_over_a_resume_run_with_bytes_ends_cleanly_every_time() {
    let (points, runs) = sweep_resume(20_000);
    println!("resume sweep with bytes: {points} fault points, {runs} runs, all clean");
}
