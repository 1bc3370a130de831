//! The contract's open points (docs/DESIGN.md): the driver works whichever
//! way the real ksecdd answers each, and GET_INFO reports what it saw. The
//! model plays every answer: `SspiAsyncContextRequiresNotify` exported or
//! not, `SspiReinitAsyncContext` accepted inside the callback or refused,
//! every completion mode, callbacks at PASSIVE and DISPATCH.

mod common;

use common::*;
use ksspi_abi::*;
use ksspi_driver::device::DeviceConfig;
use ksspi_driver::ntstatus::*;
use ksspi_sim::certs::TestPki;
use ksspi_sim::{CallbackIrql, CompletionPolicy, SimConfig};
use std::sync::Arc;

fn observed(w: &World) -> Observed {
    let file = w.dev.open_file();
    let (st, reply) = w.call(file, IOCTL_KSSPI_GET_INFO, &[], 256);
    assert_eq!(st, STATUS_SUCCESS);
    decode::<InfoReply>(&reply).unwrap().observed
}

/// The self-test's pairs step each other from their step-ready events, which
/// run inside completion callbacks: a step issued there on a context whose
/// callback is still on the stack must not meet a refused reinit as a failed
/// handshake. (It did, one handshake in twenty with the mixed policy, before
/// the engine deferred every refused reinit to its work item.)
#[test]
fn the_self_test_passes_whichever_way_the_open_points_are_answered() {
    let (store, thumb) = TestPki::new("open points CA").store(&["localhost"]);
    let store = Arc::new(store);
    for exported in [true, false] {
        for reinit_in_callback in [true, false] {
            for (n, policy) in CompletionPolicy::ALL.into_iter().enumerate() {
                for seed in 0..3u64 {
                    let label = format!(
                        "{policy:?}, RequiresNotify exported: {exported}, reinit in callback: \
                         {reinit_in_callback}, seed {seed}"
                    );
                    let w = world_in(
                        &store,
                        thumb,
                        SimConfig {
                            completion: policy,
                            callback_irql: CallbackIrql::Mixed,
                            requires_notify_exported: exported,
                            reinit_in_callback,
                            seed: seed * 10 + n as u64,
                            ..SimConfig::default()
                        },
                        DeviceConfig::default(),
                    );
                    let (st, reply) = selftest(&w, 12, 4);
                    assert_eq!(st, STATUS_SUCCESS, "{label}");
                    let reply = reply.unwrap();
                    assert_eq!(reply.handshakes_ok, 12, "{label}");
                    assert_eq!(reply.handshakes_failed, 0, "{label}");
                    let o = observed(&w);
                    assert_eq!(o.requires_notify_exported, u32::from(exported), "{label}");
                    assert!(o.calls >= reply.sessions * 2, "{label}: {o:?}");
                    assert_eq!(
                        o.callbacks_passive + o.callbacks_dispatch,
                        o.callback_before_return + o.callback_after_return,
                        "{label}: every callback counted once: {o:?}"
                    );
                    if !exported {
                        assert_eq!(o.completed_without_callback, 0, "{label}: {o:?}");
                    }
                    if reinit_in_callback {
                        assert_eq!(o.reinits_refused_in_callback, 0, "{label}: {o:?}");
                    } else {
                        assert_eq!(o.reinits_in_callback, 0, "{label}: {o:?}");
                    }
                    w.finish();
                }
            }
        }
    }
}
