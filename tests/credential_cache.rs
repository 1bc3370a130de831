//! The device's credential cache: an OPEN whose parameters match credentials
//! acquired before starts its session at once (no acquisition, no pend);
//! other parameters acquire their own; unload lets every cached handle go,
//! and nothing is left in the model. And EvtFileClose closes what an OPEN
//! racing the file's cleanup opened after it.

mod common;

use common::*;
use ksspi_abi::*;
use ksspi_driver::device::{DeviceConfig, CREDENTIAL_CACHE};
use ksspi_driver::ntstatus::*;
use ksspi_sim::verifier::Tag;
use ksspi_sim::{Completion, CompletionPolicy};

fn opened(done: &Done) -> SessionId {
    let (st, reply) = wait(done);
    assert_eq!(st, STATUS_SUCCESS);
    let open = decode::<OpenReply>(&reply).unwrap();
    assert_eq!(open.status, 0);
    open.session
}

#[test]
fn a_second_open_with_the_same_parameters_needs_no_acquisition() {
    let w = world(
        CompletionPolicy::Always(Completion::Async),
        DeviceConfig::default(),
    );
    let file = w.dev.open_file();
    let (_, first) = w.open(file, Role::Server, b"");
    assert_eq!(w.dev.credentials_cached(), 1);
    let acquired = w.sim.verifier().created(Tag::Credential);
    // With every model completion held, a cached OPEN still completes.
    let gate = w.sim.hold_completions();
    let again = w.send(file, IOCTL_KSSPI_OPEN, &w.open_input(Role::Server, b""), 64);
    assert_eq!(
        again.0.lock().unwrap().len(),
        1,
        "a cached OPEN completes at once"
    );
    // Other parameters (a client, or other protocols) acquire their own.
    let client = w.send(
        file,
        IOCTL_KSSPI_OPEN,
        &w.open_input(Role::Client, b"localhost"),
        64,
    );
    let tls12 = w.send(
        file,
        IOCTL_KSSPI_OPEN,
        &w.open_input_with(Role::Server, b"", proto::TLS12),
        64,
    );
    assert!(client.0.lock().unwrap().is_empty(), "a client OPEN pends");
    assert!(tls12.0.lock().unwrap().is_empty(), "a TLS 1.2 OPEN pends");
    gate.release();
    let second = opened(&again);
    let client = opened(&client);
    opened(&tls12);
    assert_ne!(first.session, second);
    assert_eq!(w.dev.credentials_cached(), 3);
    assert_eq!(
        w.sim.verifier().created(Tag::Credential),
        acquired + 2,
        "one acquisition each for the client and the TLS 1.2 server"
    );
    // Sessions over cached credentials handshake like any other.
    assert_eq!(
        handshake(&w, file, second, client),
        (StepOutcome::Established, StepOutcome::Established)
    );
    // Closing every session keeps the credentials; unload lets them go.
    w.dev.cleanup(file);
    assert_eq!(w.wait_sessions_gone(), 0);
    assert_eq!(w.dev.credentials_cached(), 3);
    w.dev.unload();
    assert_eq!(w.dev.credentials_cached(), 0);
    w.finish();
}

#[test]
fn the_cache_is_bounded_and_nothing_is_cached_after_unload() {
    let w = world(CompletionPolicy::Mixed, DeviceConfig::default());
    let file = w.dev.open_file();
    // Clients with every protocol set and validation setting: 6 kinds, then
    // servers with 3 protocol sets: 9 in all, over a cache of 8.
    for protocols in [proto::TLS12, proto::TLS13, proto::ALL] {
        for manual in [false, true] {
            let mut input = w.open_input_with(Role::Client, b"localhost", protocols);
            if manual {
                input = enc(&OpenRequest {
                    manual_validation: true,
                    ..OpenRequest::new(Role::Client, protocols, w.thumb, b"localhost")
                });
            }
            let (st, _) = w.call(file, IOCTL_KSSPI_OPEN, &input, 64);
            assert_eq!(st, STATUS_SUCCESS);
        }
        let input = w.open_input_with(Role::Server, b"", protocols);
        assert_eq!(w.call(file, IOCTL_KSSPI_OPEN, &input, 64).0, STATUS_SUCCESS);
    }
    assert_eq!(w.dev.credentials_cached(), CREDENTIAL_CACHE);
    w.dev.unload();
    assert_eq!(w.dev.credentials_cached(), 0);
    // An OPEN after unload still works (user mode may race the unload) but
    // keeps nothing.
    let file = w.dev.open_file();
    let (st, open) = w.open(file, Role::Server, b"");
    assert_eq!((st, open.status), (STATUS_SUCCESS, 0));
    assert_eq!(w.dev.credentials_cached(), 0);
    w.dev.unload();
    w.finish();
}

#[test]
fn an_open_that_raced_the_cleanup_is_closed_with_the_file() {
    let w = world(CompletionPolicy::Mixed, DeviceConfig::default());
    let file = w.dev.open_file();
    let (_, kept) = w.open(file, Role::Server, b"");
    assert_eq!(w.dev.cleanup(file), 0);
    assert_eq!(w.step(file, kept.session, &[]).0, STATUS_INVALID_HANDLE);
    // An OPEN dispatched after EvtFileCleanup (sent before the handle
    // closed): it opens a session on the cleaned-up file...
    let (st, late) = w.open(file, Role::Client, b"localhost");
    assert_eq!((st, late.status), (STATUS_SUCCESS, 0));
    assert_eq!(w.dev.sessions_of(file), 1);
    // ...which EvtFileClose, after every request on the file, closes.
    w.dev.close_file(file);
    assert_eq!(w.wait_sessions_gone(), 0);
    assert_eq!(w.step(file, late.session, &[]).0, STATUS_INVALID_HANDLE);
    w.finish();
}
