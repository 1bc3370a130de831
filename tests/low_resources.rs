//! Systematic low-resources sweeps through the device engine
//! (docs/RELIABILITY.md, "Low-resources sweeps"): a scenario runs once to
//! count its fault points (every allocation the model can fail: work items,
//! the session and reply buffers, provider allocations; and every provider
//! call), then once more for each point with that one failing. Scenarios: the in-driver self-test
//! with application bytes both ways, and the record IOCTL sequence (OPEN
//! both sides, the handshake by STEP, QUERY, ENCRYPT, DECRYPT, SHUTDOWN,
//! CLOSE). Each runs in every completion mode and for TLS 1.2 and TLS 1.3
//! (with session tickets). Every run must end with a clean status to user
//! mode (success, or an error status; a TLS failure inside a successful
//! reply counts as clean), every request completed exactly once, and an
//! empty verifier list at unload.
//!
//! `cargo test --test low_resources -- --nocapture` prints the counts.

mod common;

use common::*;
use ksspi_abi::*;
use ksspi_driver::device::{DeviceConfig, FileId};
use ksspi_driver::ntstatus::*;
use ksspi_sim::certs::TestPki;
use ksspi_sim::{CallbackIrql, CompletionPolicy, SimConfig};
use std::sync::Arc;

/// Sweep a device scenario over every fault point of a fresh model with
/// `config`: each run gets its own device, unloads it, waits for its
/// sessions to go, and must end cleanly with nothing left at unload.
/// Returns (fault points, runs).
fn sweep_device(
    name: &str,
    config: SimConfig,
    scenario: impl Fn(&World) -> Result<(), String>,
) -> (u64, u64) {
    let (store, thumb) = TestPki::new(name).store(&["localhost"]);
    let store = Arc::new(store);
    let report = ksspi_sim::sweep::sweep(&config, &store, |sim| {
        let w = World::over(sim.clone(), thumb, DeviceConfig::default());
        let verdict = scenario(&w);
        w.dev.unload();
        w.wait_sessions_gone();
        sim.wait_idle();
        w.check_all_completed_once();
        verdict
    });
    assert!(
        report.failures.is_empty(),
        "{name} ({:?}): {:#?}",
        config.completion,
        report.failures
    );
    assert_eq!(report.runs, report.points);
    (report.points, report.runs)
}

fn config(completion: CompletionPolicy, tickets: usize, seed: u64) -> SimConfig {
    SimConfig {
        completion,
        callback_irql: CallbackIrql::Mixed,
        tls13_tickets: tickets,
        seed,
        ..SimConfig::default()
    }
}

#[test]
fn a_low_resources_sweep_over_a_selftest_with_bytes_ends_cleanly_every_time() {
    let (mut points, mut runs) = (0, 0);
    for (i, policy) in CompletionPolicy::ALL.into_iter().enumerate() {
        let (p, r) = sweep_device("self-test sweep", config(policy, 2, 3 + i as u64), |w| {
            let file = w.dev.open_file();
            let req = SelftestRequest {
                count: 2,
                concurrency: 2,
                protocols: proto::ALL, // one TLS 1.2 pair, one TLS 1.3
                thumbprint: w.thumb,
                bytes: 20_000,
                ..SelftestRequest::default()
            };
            let (st, reply) = w.call(file, IOCTL_KSSPI_SELFTEST, &enc(&req), 512);
            if !clean_status(st)? {
                return Ok(());
            }
            let r = decode::<SelftestReply>(&reply).unwrap();
            if r.handshakes_ok + r.handshakes_failed != 2 {
                return Err(format!("counts do not add up: {r:?}"));
            }
            // A pair that failed after some of its exchange counts as
            // failed, with the bytes it checked before the failure.
            let most = (r.handshakes_ok + r.handshakes_failed) * 2 * 20_000;
            if r.bytes_checked > most || (r.handshakes_failed == 0 && r.bytes_checked != most) {
                return Err(format!("bytes checked do not add up: {r:?}"));
            }
            Ok(())
        });
        assert!(p > 40, "{policy:?}: {p}");
        points += p;
        runs += r;
    }
    println!("self-test sweep: 5 completion modes, {points} fault points, {runs} runs with one failing, all clean");
}

#[test]
fn a_low_resources_sweep_over_the_record_ioctls_ends_cleanly_every_time() {
    let (mut points, mut runs) = (0, 0);
    for (i, policy) in CompletionPolicy::ALL.into_iter().enumerate() {
        for (protocols, tickets) in [(proto::TLS12, 0), (proto::TLS13, 2)] {
            let (p, r) = sweep_device("record sweep", config(policy, tickets, 4 + i as u64), |w| {
                let file = w.dev.open_file();
                record_scenario(w, file, protocols)
            });
            assert!(p >= 25, "{policy:?}: {p}");
            points += p;
            runs += r;
        }
    }
    println!("record sweep: 5 completion modes x TLS 1.2 / 1.3, {points} fault points, {runs} runs with one failing, all clean");
}

/// One pass of the record scenario; `Ok` if every status was clean (it
/// stops at the first error, as a caller would).
fn record_scenario(w: &World, file: FileId, protocols: u32) -> Result<(), String> {
    let clean = clean_status;
    let open = |role, target: &[u8]| {
        let (st, reply) = w.call(
            file,
            IOCTL_KSSPI_OPEN,
            &w.open_input_with(role, target, protocols),
            64,
        );
        let open = (st == STATUS_SUCCESS).then(|| decode::<OpenReply>(&reply).unwrap());
        (
            st,
            open.unwrap_or(OpenReply {
                status: -1,
                session: SessionId(0),
            }),
        )
    };
    let (st, server) = open(Role::Server, b"");
    if !clean(st)? || server.status < 0 {
        return Ok(());
    }
    let (st, client) = open(Role::Client, b"localhost");
    if !clean(st)? || client.status < 0 {
        return Ok(());
    }
    let (s, c) = (server.session, client.session);
    let Some(mut to_client) = try_establish(w, file, s, c)? else {
        return Ok(());
    };
    let (st, _) = w.call(
        file,
        IOCTL_KSSPI_QUERY,
        &enc(&QueryRequest { session: c }),
        QUERY_REPLY_CAPACITY,
    );
    clean(st)?;
    let (st, reply) = w.encrypt(file, s, b"through the sweep");
    if !clean(st)? {
        return Ok(());
    }
    let sealed = decode::<EncryptReply>(&reply).unwrap();
    if sealed.status < 0 {
        return Ok(()); // EncryptMessage failed: a clean status in the reply
    }
    to_client.extend_from_slice(sealed.output);
    let (st, reply) = w.decrypt(file, c, &to_client);
    if !clean(st)? {
        return Ok(());
    }
    let r = decode::<RecordReply>(&reply).unwrap();
    if r.outcome == RecordOutcome::Data && r.data != b"through the sweep" {
        return Err(format!("decrypted {:?}", r.data));
    }
    let (st, _) = w.shutdown(file, c);
    clean(st)?;
    clean(w.close(file, c))?;
    clean(w.close(file, s))?;
    Ok(())
}
