//! The SELFTEST request's bounds (docs/RELIABILITY.md, "Kernel hardening", item 1): every figure a request
//! carries is bounded (a request outside the bounds is refused with
//! `STATUS_INVALID_PARAMETER` and changes nothing), one self-test runs at a
//! time, the run's own tables come through the fallible path (fault points
//! of the model's low-resources simulation), and a cancel stops the run:
//! no handshake starts after it, the ones in flight finish, and then the
//! request completes with `STATUS_CANCELLED`, nothing left behind.

mod common;

use common::*;
use ksspi_abi::*;
use ksspi_driver::device::{DeviceConfig, SELFTEST_SESSION};
use ksspi_driver::ntstatus::*;
use ksspi_sim::verifier::Tag;
use ksspi_sim::{Completion, CompletionPolicy};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ASYNC: CompletionPolicy = CompletionPolicy::Always(Completion::Async);

fn request(w: &World, count: u32, concurrency: u32, bytes: u32) -> Vec<u8> {
    enc(&SelftestRequest {
        count,
        concurrency,
        protocols: proto::ALL,
        thumbprint: w.thumb,
        bytes,
        ..SelftestRequest::default()
    })
}

#[test]
fn a_selftest_with_huge_figures_is_refused_and_changes_nothing() {
    let config = DeviceConfig {
        max_sessions: 16,
        ..DeviceConfig::default()
    };
    let w = world(CompletionPolicy::Mixed, config);
    let file = w.dev.open_file();
    let huge = [
        (u32::MAX, 1, 0),
        (1, u32::MAX, 0),
        (1, 1, u32::MAX),
        (u32::MAX, u32::MAX, u32::MAX),
        (MAX_SELFTEST_COUNT + 1, 1, 0),
        (1, MAX_SELFTEST_CONCURRENCY + 1, 0),
        (1, 1, MAX_SELFTEST_BYTES + 1),
        // Within the ABI's bound, beyond this device's: half its 16 sessions.
        (16, 9, 0),
    ];
    for (count, concurrency, bytes) in huge {
        // (The encoder writes any figure; the decoder and the device check.)
        let input = request(&w, count, concurrency, bytes);
        let (st, reply) = w.call(file, IOCTL_KSSPI_SELFTEST, &input, 512);
        assert_eq!(
            (st, reply.len()),
            (STATUS_INVALID_PARAMETER, 0),
            "count {count}, concurrency {concurrency}, bytes {bytes}"
        );
    }
    // Nothing was started: no provider call, no async context.
    assert_eq!(w.sim.stats().calls, 0);
    // At the device's bound it runs.
    let (st, reply) = w.call(file, IOCTL_KSSPI_SELFTEST, &request(&w, 8, 8, 1000), 512);
    assert_eq!(st, STATUS_SUCCESS);
    let r = decode::<SelftestReply>(&reply).unwrap();
    assert_eq!((r.handshakes_ok, r.handshakes_failed), (8, 0), "{r:?}");
    assert_eq!(r.bytes_checked, 8 * 2 * 1000);
    w.finish();
}

#[test]
fn one_selftest_runs_at_a_time_and_the_next_may_start_from_its_completion() {
    let w = Arc::new(world(ASYNC, DeviceConfig::default()));
    let file = w.dev.open_file();
    let hold = w.sim.hold_completions();
    // The caller woken by the first completion sends the next SELFTEST at
    // once: the device's slot is free by then.
    let (first, first_done, _) = w.request(512, false);
    let (next, next_done, _) = w.request(512, false);
    let (wn, input) = (w.clone(), request(&w, 2, 2, 0));
    let first = first.then(move |status| {
        assert_eq!(status, STATUS_SUCCESS);
        wn.dev
            .ioctl(file, IOCTL_KSSPI_SELFTEST, &input, next, &at());
    });
    w.dev.ioctl(
        file,
        IOCTL_KSSPI_SELFTEST,
        &request(&w, 4, 2, 0),
        first,
        &at(),
    );
    let (st, _) = w.call(file, IOCTL_KSSPI_SELFTEST, &request(&w, 1, 1, 0), 512);
    assert_eq!(st, STATUS_DEVICE_BUSY, "a second self-test while one runs");
    hold.release();
    let (st, reply) = wait(&first_done);
    assert_eq!(st, STATUS_SUCCESS);
    assert_eq!(decode::<SelftestReply>(&reply).unwrap().handshakes_ok, 4);
    let (st, reply) = wait(&next_done);
    assert_eq!(st, STATUS_SUCCESS, "the next self-test was refused");
    assert_eq!(decode::<SelftestReply>(&reply).unwrap().handshakes_ok, 2);
    w.sim.wait_idle();
    Arc::into_inner(w).unwrap().finish();
}

#[test]
fn the_selftests_own_tables_are_fault_points_and_fail_cleanly() {
    // The first three allocations a SELFTEST makes are its action queue, its
    // latencies and its table of pairs, sized by the request: each fails
    // with STATUS_INSUFFICIENT_RESOURCES and leaves nothing.
    for n in 1..=3 {
        let w = world(CompletionPolicy::Mixed, DeviceConfig::default());
        let file = w.dev.open_file();
        w.sim.verifier().fail_nth(n);
        let (st, _) = w.call(
            file,
            IOCTL_KSSPI_SELFTEST,
            &request(&w, MAX_SELFTEST_COUNT, 2, 0),
            512,
        );
        assert_eq!(st, STATUS_INSUFFICIENT_RESOURCES, "fault point {n}");
        assert_eq!(w.sim.stats().calls, 0, "fault point {n}: nothing started");
        w.finish();
    }
}

/// Wait until `f` holds (at most 20 s).
fn until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "{what} within 20 s");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_cancel_while_credentials_are_acquired_starts_no_handshake() {
    for mode in [ASYNC, CompletionPolicy::Mixed] {
        let w = world(mode, DeviceConfig::default());
        let file = w.dev.open_file();
        let hold = w.sim.hold_completions();
        let (req, done, key) = w.request(512, false);
        w.dev.ioctl(
            file,
            IOCTL_KSSPI_SELFTEST,
            &request(&w, MAX_SELFTEST_COUNT, 64, 0),
            req,
            &at(),
        );
        let k = key.lock().unwrap().expect("the SELFTEST pends");
        assert_eq!((k.file, k.session), (file, SELFTEST_SESSION));
        assert!(
            w.cancel_at_dispatch(k),
            "{mode:?}: the run takes the cancel"
        );
        assert!(!w.cancel_at_dispatch(k), "{mode:?}: a second cancel");
        hold.release();
        let (st, reply) = wait(&done);
        assert_eq!((st, reply.len()), (STATUS_CANCELLED, 0), "{mode:?}");
        // Only the run's credentials were asked for: no security context,
        // no handshake's async context.
        assert_eq!(w.sim.verifier().created(Tag::SecurityContext), 0);
        // And the slot is free again.
        let (st, _) = w.call(file, IOCTL_KSSPI_SELFTEST, &request(&w, 1, 1, 0), 512);
        assert_eq!(st, STATUS_SUCCESS, "{mode:?}");
        w.finish();
    }
}

#[test]
fn a_cancelled_selftest_lets_its_handshakes_finish_then_completes_cancelled() {
    for (mode, bytes) in [(ASYNC, 0), (CompletionPolicy::Mixed, 30_000)] {
        let w = world(mode, DeviceConfig::default());
        let file = w.dev.open_file();
        let concurrency = 4;
        let (req, done, key) = w.request(512, false);
        // At completion: every handshake session of the run is gone (their
        // security contexts deleted), so nothing was in flight any more.
        let sim = w.sim.clone();
        let live_at_completion: Arc<Mutex<Option<usize>>> = Arc::default();
        let seen = live_at_completion.clone();
        let req = req.then(move |_| {
            *seen.lock().unwrap() = Some(sim.verifier().live_count(Tag::SecurityContext));
        });
        w.dev.ioctl(
            file,
            IOCTL_KSSPI_SELFTEST,
            &request(&w, MAX_SELFTEST_COUNT, concurrency, bytes),
            req,
            &at(),
        );
        let k = key.lock().unwrap().expect("the SELFTEST pends");
        // Let some handshakes run, then cancel with calls held in flight.
        until("handshakes under way", || {
            w.sim.verifier().created(Tag::SecurityContext) >= 20
        });
        let hold = w.sim.hold_completions();
        let before = w.sim.verifier().created(Tag::SecurityContext);
        assert!(
            w.cancel_at_dispatch(k),
            "{mode:?}: the run takes the cancel"
        );
        hold.release();
        let (st, reply) = wait(&done);
        assert_eq!((st, reply.len()), (STATUS_CANCELLED, 0), "{mode:?}");
        // (The hook runs right after the completion is recorded.)
        until("the completion's hook", || {
            live_at_completion.lock().unwrap().is_some()
        });
        assert_eq!(
            *live_at_completion.lock().unwrap(),
            Some(0),
            "{mode:?}: completed before its handshakes were over"
        );
        // No new handshake after the cancel: at most the ones that were
        // starting (two security contexts per handshake) came after it.
        let after = w.sim.verifier().created(Tag::SecurityContext);
        assert!(
            after <= before + 2 * u64::from(concurrency),
            "{mode:?}: {before} security contexts at the cancel, {after} at the end"
        );
        assert!(after < 2 * u64::from(MAX_SELFTEST_COUNT) / 100);
        println!(
            "{mode:?}: cancelled with {} handshakes begun, {} by the end",
            before / 2,
            after / 2
        );
        w.finish();
    }
}
