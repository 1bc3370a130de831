//! Device removal and unload over the model, in the order the framework
//! uses (open-source WDF, `FxPkgPnp::PnpEventRemovedCommonCode`): the queue
//! is purged (pended requests meet their cancel routines), the driver's
//! `EvtDeviceSelfManagedIoCleanup` drains the engine while its work items
//! still run, then the framework disposes the work items, then the device's
//! cleanup callback lets the engine go. A drain that returned too early would
//! let a completion reach freed memory (or an unloaded image); a continuation
//! queued after the disposal would be lost (the model stops the test); a
//! drain that never ends is a hang (the test fails after its patience).

mod common;

use common::*;
use ksspi_abi::*;
use ksspi_driver::device::{DeviceConfig, PendKey};
use ksspi_driver::ntstatus::*;
use ksspi_sim::certs::TestPki;
use ksspi_sim::{CallbackIrql, Completion, CompletionPolicy, SimConfig};
use std::time::{Duration, Instant};

/// Wait until the device has nothing outstanding; false after `patience`.
fn drained_within(w: &World, patience: Duration) -> bool {
    let deadline = Instant::now() + patience;
    while !w.dev.outstanding().is_drained() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    true
}

/// OPENs and CLOSEs, then unload with completions held back: the cached
/// credentials' releases are in flight on conductors of their own. No
/// session is left, but async contexts are, and the device is not drained
/// until they complete. (Before the device counted them, unload returned 0
/// here and the glue let go of the device while ksecdd still held two
/// callbacks into it.)
#[test]
fn unload_waits_for_every_call_in_flight() {
    let w = world(
        CompletionPolicy::Always(Completion::Async),
        DeviceConfig::default(),
    );
    let file = w.dev.open_file();
    let (st, server) = w.open(file, Role::Server, b"");
    assert_eq!(st, STATUS_SUCCESS);
    let (st, client) = w.open(file, Role::Client, b"localhost");
    assert_eq!(st, STATUS_SUCCESS);
    establish(&w, file, server.session, client.session);
    assert_eq!(w.dev.credentials_cached(), 2);

    assert_eq!(w.close(file, server.session), STATUS_SUCCESS);
    assert_eq!(w.close(file, client.session), STATUS_SUCCESS);
    assert_eq!(w.wait_sessions_gone(), 0);
    w.sim.wait_idle();
    assert!(
        w.dev.outstanding().is_drained(),
        "{:?}",
        w.dev.outstanding()
    );

    let hold = w.sim.hold_completions();
    let left = w.dev.unload();
    assert_eq!(left.sessions, 0, "{left:?}");
    // The cached credentials' two releases, held: sessions alone would say
    // there is nothing left.
    assert_eq!(left.async_contexts, 2, "{left:?}");
    assert!(!left.is_drained());
    std::thread::sleep(Duration::from_millis(30));
    assert!(
        !w.dev.outstanding().is_drained(),
        "nothing completes while the completions are held: {:?}",
        w.dev.outstanding()
    );
    hold.release();
    assert!(
        drained_within(&w, Duration::from_secs(20)),
        "the drain never ended: {:?}",
        w.dev.outstanding()
    );
    w.platform.dispose_work_items();
    assert!(w.dev.unload().is_drained(), "the cleanup callback's drain");
    w.finish();
}

/// Removal with sessions in every state (established, mid-handshake with a
/// STEP pended, an OPEN acquiring credentials, a self-test running, closed
/// sessions whose deletes are in flight), in every completion mode, with and
/// without `SspiAsyncContextRequiresNotify`, and callbacks at PASSIVE and
/// DISPATCH: no hang, no lost continuation, no leak, every request completed
/// exactly once.
#[test]
fn removal_in_the_frameworks_order_in_every_completion_mode() {
    let (store, thumb) = TestPki::new("removal CA").store(&["localhost"]);
    let store = std::sync::Arc::new(store);
    for exported in [true, false] {
        for (n, policy) in CompletionPolicy::ALL.into_iter().enumerate() {
            let label = format!("{policy:?}, RequiresNotify exported: {exported}");
            let w = world_in(
                &store,
                thumb,
                SimConfig {
                    completion: policy,
                    callback_irql: CallbackIrql::Mixed,
                    requires_notify_exported: exported,
                    seed: 40 + n as u64,
                    ..SimConfig::default()
                },
                DeviceConfig::default(),
            );
            remove_busy_device(&w, policy, &label);
            w.finish();
        }
    }
}

fn remove_busy_device(w: &World, policy: CompletionPolicy, label: &str) {
    let file = w.dev.open_file();
    // An established pair, and a pair closed at once.
    let (_, s1) = w.open(file, Role::Server, b"");
    let (_, c1) = w.open(file, Role::Client, b"localhost");
    establish(w, file, s1.session, c1.session);
    let (_, s2) = w.open(file, Role::Server, b"");
    let (_, c2) = w.open(file, Role::Client, b"localhost");
    establish(w, file, s2.session, c2.session);
    // A pair mid-handshake.
    let (_, s3) = w.open(file, Role::Server, b"");
    let (_, c3) = w.open(file, Role::Client, b"localhost");
    let (st, reply) = w.step(file, c3.session, &[]);
    assert_eq!(st, STATUS_SUCCESS, "{label}");
    let hello = decode::<StepReply>(&reply).unwrap().output.to_vec();

    let hold =
        (policy == CompletionPolicy::Always(Completion::Async)).then(|| w.sim.hold_completions());
    // With completions held these stay in flight; otherwise they may have
    // completed already, which removal must take as well.
    let mut keys = Vec::new();
    let step = enc(&StepRequest {
        session: s3.session,
        input: &hello,
    });
    keys.push(w.send_tracked(file, IOCTL_KSSPI_STEP, &step, 64 * 1024, false));
    // An OPEN with parameters nothing cached: it acquires credentials.
    let open = w.open_input_with(Role::Client, b"another.example", proto::TLS12);
    keys.push(w.send_tracked(file, IOCTL_KSSPI_OPEN, &open, 64, false));
    let selftest = enc(&SelftestRequest {
        count: 6,
        concurrency: 2,
        protocols: proto::ALL,
        thumbprint: w.thumb,
        ..SelftestRequest::default()
    });
    let selftest = w.send(w.dev.open_file(), IOCTL_KSSPI_SELFTEST, &selftest, 512);
    assert_eq!(w.close(file, s2.session), STATUS_SUCCESS, "{label}");
    assert_eq!(w.close(file, c2.session), STATUS_SUCCESS, "{label}");

    // 1. The framework purges the queue: pended requests are cancelled.
    for (_, key) in &keys {
        let key: Option<PendKey> = *key.lock().unwrap();
        if let Some(key) = key {
            w.cancel_at_dispatch(key);
        }
    }
    // 2. EvtDeviceSelfManagedIoCleanup: drain, while work items still run.
    let released = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        if let Some(hold) = hold {
            hold.release();
        }
    });
    w.dev.unload();
    assert!(
        drained_within(w, Duration::from_secs(30)),
        "{label}: removal hung: {:?}",
        w.dev.outstanding()
    );
    released.join().unwrap();
    // 3. The framework disposes the work items: nothing may queue any more.
    w.platform.dispose_work_items();
    // 4. The device's cleanup callback: nothing left to wait for.
    assert!(w.dev.unload().is_drained(), "{label}");
    assert_eq!(w.dev.sessions_alive(), 0, "{label}");
    for (done, _) in &keys {
        let (st, _) = wait(done);
        assert_ne!(st, DROPPED, "{label}");
    }
    let (st, _) = wait(&selftest);
    assert_ne!(st, DROPPED, "{label}");
    let _ = (s1, c1, c3);
}

/// Unload stops a self-test under way: no new handshake starts, the ones in
/// flight end, and its request completes with `STATUS_CANCELLED`; the drain
/// does not wait for the 100 000 handshakes it asked for.
#[test]
fn unload_stops_a_self_test_under_way() {
    for policy in [
        CompletionPolicy::Always(Completion::Async),
        CompletionPolicy::Mixed,
    ] {
        let w = world(policy, DeviceConfig::default());
        let request = enc(&SelftestRequest {
            count: MAX_SELFTEST_COUNT,
            concurrency: 4,
            protocols: proto::ALL,
            thumbprint: w.thumb,
            ..SelftestRequest::default()
        });
        let file = w.dev.open_file();
        // The whole run happens inside the IOCTL call when completions are
        // synchronous; asynchronous completions let it go on in the
        // background, so send it from a thread and unload meanwhile.
        let done = std::thread::scope(|scope| {
            let sender = scope.spawn(|| w.send(file, IOCTL_KSSPI_SELFTEST, &request, 512));
            std::thread::sleep(Duration::from_millis(50));
            w.dev.unload();
            sender.join().unwrap()
        });
        assert!(
            drained_within(&w, Duration::from_secs(30)),
            "{policy:?}: the drain waited for the whole self-test: {:?}",
            w.dev.outstanding()
        );
        let (st, _) = wait(&done);
        assert_eq!(st, STATUS_CANCELLED, "{policy:?}");
        w.platform.dispose_work_items();
        w.finish();
    }
}
