//! Each kernel rule the model enforces, broken on purpose: the model stops the
//! test with a bugcheck-style message naming the rule.

mod support;

use ksspi::provider::SspiProvider;
use ksspi::sys::{SecBufferDesc, SecHandle, SspiAsyncContext};
use ksspi::{Irql, SecStatus};
use ksspi_sim::certs::CertStore;
use ksspi_sim::kernel::raise_irql;
use ksspi_sim::verifier::Tag;
use ksspi_sim::{Completion, CompletionPolicy, SimConfig, SimProvider};
use std::ffi::c_void;
use std::ptr::null_mut;
use std::sync::Arc;

unsafe extern "system" fn ignore(_: *mut SspiAsyncContext, _: *mut c_void) {}

fn sim(mode: Completion) -> SimProvider {
    let config = SimConfig {
        completion: CompletionPolicy::Always(mode),
        ..SimConfig::default()
    };
    SimProvider::new(config, Arc::new(CertStore::new()))
}

/// Queue an accept that fails at completion (no credential): enough to put a
/// call in flight without any TLS.
fn issue_accept(sim: &SimProvider, ctx: ksspi::provider::AsyncContextPtr) -> SecStatus {
    let mut cred = SecHandle::INVALID;
    let mut out = SecHandle::INVALID;
    // SAFETY: the model reads the (invalid) credential at completion only to
    // refuse it; the locals outlive these tests' calls or the test stops first.
    unsafe {
        sim.accept_security_context_async(
            ctx,
            &mut cred,
            null_mut(),
            null_mut::<SecBufferDesc>(),
            0,
            &mut out,
            null_mut(),
            null_mut(),
            null_mut(),
        )
    }
}

fn with_callback(sim: &SimProvider) -> ksspi::provider::AsyncContextPtr {
    let ctx = sim.create_async_context().unwrap();
    assert_eq!(
        // SAFETY: `ignore` uses no data.
        unsafe { sim.set_async_notify_callback(ctx, Some(ignore), null_mut()) },
        SecStatus::SEC_E_OK
    );
    ctx
}

#[test]
#[should_panic(
    expected = "IRQL_NOT_LESS_OR_EQUAL: SspiAcceptSecurityContextAsync must be called at PASSIVE_LEVEL, called at DISPATCH_LEVEL"
)]
fn issuing_above_passive_is_caught() {
    let sim = sim(Completion::Sync);
    let ctx = with_callback(&sim);
    let _dispatch = raise_irql(Irql::DISPATCH);
    issue_accept(&sim, ctx);
}

#[test]
#[should_panic(expected = "DRIVER_VERIFIER_DETECTED_VIOLATION: SspiFreeAsyncContext on")]
fn freeing_in_flight_is_caught() {
    let sim = sim(Completion::Async);
    let ctx = with_callback(&sim);
    // Hold the completion threads so the call stays in flight (never
    // released: the test stops first).
    let _gate = sim.hold_completions();
    assert_eq!(issue_accept(&sim, ctx), SecStatus::SEC_E_OK);
    // SAFETY: deliberately breaking the rule under test.
    unsafe { sim.free_async_context(ctx) };
}

#[test]
#[should_panic(expected = "SspiReinitAsyncContext on")]
fn reinit_in_flight_is_caught() {
    let sim = sim(Completion::Async);
    let ctx = with_callback(&sim);
    let _gate = sim.hold_completions();
    assert_eq!(issue_accept(&sim, ctx), SecStatus::SEC_E_OK);
    // SAFETY: deliberately breaking the rule under test.
    unsafe { sim.reinit_async_context(ctx) };
}

#[test]
fn set_callback_in_flight_fails_as_windows_does() {
    let sim = sim(Completion::Async);
    let ctx = with_callback(&sim);
    let gate = sim.hold_completions();
    assert_eq!(issue_accept(&sim, ctx), SecStatus::SEC_E_OK);
    // SAFETY: a live context; the call is in flight.
    assert!(unsafe { sim.set_async_notify_callback(ctx, Some(ignore), null_mut()) }.is_error());
    assert_eq!(
        // SAFETY: as above.
        unsafe { sim.get_async_call_status(ctx) },
        SecStatus::SEC_I_ASYNC_CALL_PENDING
    );
    gate.release();
    sim.wait_idle();
    assert_eq!(
        // SAFETY: the call completed (with an error: no credential).
        unsafe { sim.get_async_call_status(ctx) },
        SecStatus::SEC_E_INVALID_HANDLE
    );
    // SAFETY: idle now, freed once.
    unsafe { sim.free_async_context(ctx) };
    sim.unload().unwrap();
}

#[test]
#[should_panic(expected = "which was freed or never created (use after free)")]
fn use_after_free_is_caught() {
    let sim = sim(Completion::Sync);
    let ctx = with_callback(&sim);
    // SAFETY: idle, freed once...
    unsafe { sim.free_async_context(ctx) };
    // SAFETY: ...and then used: the rule under test.
    unsafe { sim.get_async_call_status(ctx) };
}

#[test]
#[should_panic(expected = "already freed or never created (double free)")]
fn double_free_is_caught() {
    let sim = sim(Completion::Sync);
    let ctx = with_callback(&sim);
    // SAFETY: a live context with no call, freed once here.
    unsafe { sim.free_async_context(ctx) };
    // SAFETY: deliberately the second free of the same context: the model
    // catches it (the panic this test expects) before touching any memory.
    unsafe { sim.free_async_context(ctx) };
}

#[test]
#[should_panic(expected = "with a NULL callback (only SspiDeleteSecurityContextAsync allows one)")]
fn a_null_callback_is_caught_where_it_is_not_allowed() {
    let sim = sim(Completion::Sync);
    let ctx = sim.create_async_context().unwrap();
    issue_accept(&sim, ctx);
}

#[test]
fn a_null_callback_is_allowed_for_delete() {
    let sim = sim(Completion::Sync);
    let ctx = sim.create_async_context().unwrap();
    let mut h = SecHandle::INVALID;
    // SAFETY: an idle context; the (invalid) handle is refused, not freed.
    let st = unsafe { sim.delete_security_context_async(ctx, &mut h) };
    assert_eq!(st, SecStatus::SEC_E_OK);
    assert_eq!(
        // SAFETY: completed synchronously.
        unsafe { sim.get_async_call_status(ctx) },
        SecStatus::SEC_E_INVALID_HANDLE
    );
    // SAFETY: idle, freed once.
    unsafe { sim.free_async_context(ctx) };
}

#[test]
fn the_verifier_catches_a_deliberate_leak() {
    let sim = sim(Completion::Sync);
    let _leaked = sim.create_async_context().unwrap();
    let report = sim.unload().unwrap_err();
    assert_eq!(report.0.len(), 1);
    assert_eq!(report.0[0].tag, Tag::AsyncContext);
    assert!(
        report.to_string().contains("SspiCreateAsyncContext"),
        "{report}"
    );
}

#[test]
fn reinit_inside_the_callback_can_be_refused_by_policy() {
    use std::sync::atomic::{AtomicI32, Ordering};
    static SEEN: AtomicI32 = AtomicI32::new(1);
    unsafe extern "system" fn reinit_here(handle: *mut SspiAsyncContext, data: *mut c_void) {
        // SAFETY: `data` is the SimProvider on the test's stack, alive for the call.
        let sim = unsafe { &*(data as *const SimProvider) };
        let ctx = std::ptr::NonNull::new(handle).unwrap();
        // SAFETY: the context is live and its call has completed.
        SEEN.store(unsafe { sim.reinit_async_context(ctx) }.0, Ordering::SeqCst);
    }
    for (allowed, expect) in [
        (true, SecStatus::SEC_E_OK),
        (false, SecStatus::SEC_E_INVALID_HANDLE),
    ] {
        let config = SimConfig {
            completion: CompletionPolicy::Always(Completion::Inline),
            reinit_in_callback: allowed,
            ..SimConfig::default()
        };
        let sim = SimProvider::new(config, Arc::new(CertStore::new()));
        let ctx = sim.create_async_context().unwrap();
        // SAFETY: `sim` outlives the call (inline completion).
        unsafe {
            sim.set_async_notify_callback(
                ctx,
                Some(reinit_here),
                &sim as *const SimProvider as *mut c_void,
            )
        };
        issue_accept(&sim, ctx);
        assert_eq!(
            SecStatus(SEEN.load(Ordering::SeqCst)),
            expect,
            "allowed: {allowed}"
        );
        // SAFETY: idle; freed once.
        unsafe { sim.free_async_context(ctx) };
        sim.unload().unwrap();
    }
}

#[test]
#[should_panic(expected = "IRQL_NOT_GREATER_OR_EQUAL")]
fn a_spin_lock_above_dispatch_is_caught() {
    // KeAcquireSpinLockRaiseToDpc above DISPATCH_LEVEL: nothing may lower the
    // IRQL to take a spin lock (the old raise through CR8 would have).
    use ksspi::engine::{Platform, SpinWord};
    let sim = sim(Completion::Async);
    let platform = ksspi_sim::SimPlatform::new(&sim);
    let word = SpinWord::new();
    let _high = raise_irql(Irql(Irql::DISPATCH.0 + 1));
    platform.acquire_spin_lock(&word);
}

#[test]
#[should_panic(expected = "SPIN_LOCK_NOT_OWNED")]
fn releasing_a_free_spin_lock_is_caught() {
    use ksspi::engine::{Platform, SpinWord};
    let sim = sim(Completion::Async);
    let platform = ksspi_sim::SimPlatform::new(&sim);
    let word = SpinWord::new();
    // SAFETY: deliberately broken (the lock is not held): the model stops
    // the test before anything is lowered.
    unsafe { platform.release_spin_lock(&word, Irql::PASSIVE) };
}

#[test]
fn a_spin_lock_raises_to_dispatch_and_restores() {
    use ksspi::engine::{Platform, SpinWord};
    let sim = sim(Completion::Async);
    let platform = ksspi_sim::SimPlatform::new(&sim);
    let word = SpinWord::new();
    let old = platform.acquire_spin_lock(&word);
    assert_eq!(old, Irql::PASSIVE);
    assert_eq!(ksspi_sim::kernel::current_irql(), Irql::DISPATCH);
    // SAFETY: held, taken just above, which returned `old`.
    unsafe { platform.release_spin_lock(&word, old) };
    assert_eq!(ksspi_sim::kernel::current_irql(), Irql::PASSIVE);
}
