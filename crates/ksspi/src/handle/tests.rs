//! The handle rules against a small test provider that records every call and
//! stops the test on a broken rule.

use super::*;
use crate::sys::{SecBufferDesc, TimeStamp, UNICODE_STRING};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::vec::Vec;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Queued; completes when the test calls `finish`.
    Pending,
    /// Completes before the issuing call returns, callback inline.
    Inline,
    /// Completes synchronously without a callback.
    Sync,
}

#[derive(Debug)]
struct Ctx {
    status: SecStatus,
    callback: SspiAsyncNotifyCallback,
    data: usize,
    notify: bool,
    /// The handle the pending call frees, if any.
    target: Option<usize>,
}

#[derive(Default, Debug)]
struct State {
    next: usize,
    live: HashMap<usize, Ctx>,
    created: u32,
    freed: u32,
    reinits: u32,
    handles_live: Vec<SecHandle>,
    handles_released: u32,
    irql: u8,
    fail_create: bool,
    fail_queue: bool,
}

#[derive(Clone)]
struct TestProvider {
    state: Arc<Mutex<State>>,
    mode: Arc<Mutex<Mode>>,
}

impl TestProvider {
    fn new(mode: Mode) -> Self {
        TestProvider {
            state: Arc::default(),
            mode: Arc::new(Mutex::new(mode)),
        }
    }

    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// A live handle, as if a completed acquire had filled a slot.
    fn new_handle(&self) -> HandleSlot {
        let slot = HandleSlot::new();
        let mut st = self.st();
        st.next += 1;
        let h = SecHandle {
            dwLower: st.next,
            dwUpper: 0x5eed,
        };
        st.handles_live.push(h);
        // SAFETY: the slot is fresh and owned here.
        unsafe { *slot.as_ptr() = h };
        slot
    }

    fn issue(&self, ctx: AsyncContextPtr, target: Option<*mut SecHandle>) -> SecStatus {
        let key = ctx.as_ptr() as usize;
        let mode = *self.mode.lock().unwrap();
        let (callback, data) = {
            let mut st = self.st();
            if st.fail_queue {
                return SecStatus::SEC_E_INSUFFICIENT_MEMORY;
            }
            let c = st.live.get_mut(&key).expect("issue on a freed context");
            assert_ne!(
                c.status,
                SecStatus::SEC_I_ASYNC_CALL_PENDING,
                "issue while in flight"
            );
            // SAFETY: the handle pointer is valid until completion (the rule under test).
            c.target = target.map(|h| unsafe { (*h).dwLower });
            c.status = SecStatus::SEC_I_ASYNC_CALL_PENDING;
            c.notify = mode != Mode::Sync;
            (c.callback, c.data)
        };
        match mode {
            Mode::Pending => {}
            Mode::Sync => self.settle(key, SecStatus::SEC_E_OK),
            Mode::Inline => {
                self.settle(key, SecStatus::SEC_E_OK);
                if let Some(cb) = callback {
                    // SAFETY: the registered callback with its registered data.
                    unsafe { cb(ctx.as_ptr(), data as *mut c_void) };
                }
            }
        }
        SecStatus::SEC_E_OK
    }

    fn settle(&self, key: usize, status: SecStatus) {
        let mut st = self.st();
        let c = st.live.get_mut(&key).unwrap();
        c.status = status;
        if let Some(target) = c.target.take() {
            let before = st.handles_live.len();
            st.handles_live.retain(|h| h.dwLower != target);
            assert_eq!(st.handles_live.len() + 1, before, "released a handle twice");
            st.handles_released += 1;
        }
    }

    /// Complete a pending call later, callback and all.
    fn finish(&self, ctx: AsyncContextPtr, status: SecStatus) {
        let key = ctx.as_ptr() as usize;
        self.settle(key, status);
        let (cb, data) = {
            let st = self.st();
            let c = &st.live[&key];
            (c.callback, c.data)
        };
        if let Some(cb) = cb {
            // SAFETY: the registered callback with its registered data.
            unsafe { cb(ctx.as_ptr(), data as *mut c_void) };
        }
    }
}

impl SspiProvider for TestProvider {
    fn current_irql(&self) -> Irql {
        Irql(self.st().irql)
    }

    fn create_async_context(&self) -> Option<AsyncContextPtr> {
        let mut st = self.st();
        if st.fail_create {
            return None;
        }
        st.created += 1;
        let ptr = Box::into_raw(Box::new(0u64)).cast::<SspiAsyncContext>();
        st.live.insert(
            ptr as usize,
            Ctx {
                status: SecStatus::SEC_E_OK,
                callback: None,
                data: 0,
                notify: false,
                target: None,
            },
        );
        NonNull::new(ptr)
    }

    unsafe fn free_async_context(&self, ctx: AsyncContextPtr) {
        let mut st = self.st();
        let c = st
            .live
            .remove(&(ctx.as_ptr() as usize))
            .expect("double free of an async context");
        assert_ne!(
            c.status,
            SecStatus::SEC_I_ASYNC_CALL_PENDING,
            "free while in flight"
        );
        st.freed += 1;
        // SAFETY: allocated as a Box<u64> in create_async_context, freed once (removed above).
        drop(unsafe { Box::from_raw(ctx.as_ptr().cast::<u64>()) });
    }

    unsafe fn reinit_async_context(&self, ctx: AsyncContextPtr) -> SecStatus {
        let mut st = self.st();
        let c = st
            .live
            .get_mut(&(ctx.as_ptr() as usize))
            .expect("reinit after free");
        if c.status == SecStatus::SEC_I_ASYNC_CALL_PENDING {
            return SecStatus::SEC_E_INVALID_HANDLE;
        }
        c.status = SecStatus::SEC_E_OK;
        st.reinits += 1;
        SecStatus::SEC_E_OK
    }

    unsafe fn set_async_notify_callback(
        &self,
        ctx: AsyncContextPtr,
        callback: SspiAsyncNotifyCallback,
        data: *mut c_void,
    ) -> SecStatus {
        let mut st = self.st();
        let c = st
            .live
            .get_mut(&(ctx.as_ptr() as usize))
            .expect("set callback after free");
        if c.status == SecStatus::SEC_I_ASYNC_CALL_PENDING {
            return SecStatus::SEC_E_INVALID_HANDLE;
        }
        c.callback = callback;
        c.data = data as usize;
        SecStatus::SEC_E_OK
    }

    fn has_requires_notify(&self) -> bool {
        true
    }

    unsafe fn async_context_requires_notify(&self, ctx: AsyncContextPtr) -> Option<bool> {
        Some(self.st().live[&(ctx.as_ptr() as usize)].notify)
    }

    unsafe fn get_async_call_status(&self, ctx: AsyncContextPtr) -> SecStatus {
        self.st()
            .live
            .get(&(ctx.as_ptr() as usize))
            .expect("status after free")
            .status
    }

    unsafe fn acquire_credentials_handle_async(
        &self,
        ctx: AsyncContextPtr,
        _: *mut UNICODE_STRING,
        _: *mut UNICODE_STRING,
        _: u32,
        _: *mut c_void,
        _: *mut SecHandle,
        _: *mut TimeStamp,
    ) -> SecStatus {
        self.issue(ctx, None)
    }

    unsafe fn free_credentials_handle_async(
        &self,
        ctx: AsyncContextPtr,
        credential: *mut SecHandle,
    ) -> SecStatus {
        self.issue(ctx, Some(credential))
    }

    unsafe fn initialize_security_context_async(
        &self,
        ctx: AsyncContextPtr,
        _: *mut SecHandle,
        _: *mut SecHandle,
        _: *mut UNICODE_STRING,
        _: u32,
        _: *mut SecBufferDesc,
        _: *mut SecHandle,
        _: *mut SecBufferDesc,
        _: *mut u32,
        _: *mut TimeStamp,
    ) -> SecStatus {
        self.issue(ctx, None)
    }

    unsafe fn accept_security_context_async(
        &self,
        ctx: AsyncContextPtr,
        _: *mut SecHandle,
        _: *mut SecHandle,
        _: *mut SecBufferDesc,
        _: u32,
        _: *mut SecHandle,
        _: *mut SecBufferDesc,
        _: *mut u32,
        _: *mut TimeStamp,
    ) -> SecStatus {
        self.issue(ctx, None)
    }

    unsafe fn delete_security_context_async(
        &self,
        ctx: AsyncContextPtr,
        context: *mut SecHandle,
    ) -> SecStatus {
        self.issue(ctx, Some(context))
    }

    unsafe fn encrypt_message(
        &self,
        _: *mut SecHandle,
        _: u32,
        _: *mut SecBufferDesc,
        _: u32,
    ) -> SecStatus {
        SecStatus::SEC_E_UNSUPPORTED_FUNCTION
    }

    unsafe fn decrypt_message(
        &self,
        _: *mut SecHandle,
        _: *mut SecBufferDesc,
        _: u32,
        _: *mut u32,
    ) -> SecStatus {
        SecStatus::SEC_E_UNSUPPORTED_FUNCTION
    }

    unsafe fn query_context_attributes(
        &self,
        _: *mut SecHandle,
        _: u32,
        _: *mut c_void,
    ) -> SecStatus {
        SecStatus::SEC_E_UNSUPPORTED_FUNCTION
    }

    unsafe fn apply_control_token(&self, _: *mut SecHandle, _: *mut SecBufferDesc) -> SecStatus {
        SecStatus::SEC_E_UNSUPPORTED_FUNCTION
    }

    unsafe fn free_context_buffer(&self, _: *mut c_void) -> SecStatus {
        SecStatus::SEC_E_UNSUPPORTED_FUNCTION
    }
}

fn passive() -> Passive {
    Passive::check(Irql::PASSIVE).unwrap()
}

/// Issue an accept with null arguments (the test provider reads none of them).
fn accept(
    ctx: AsyncContext<TestProvider>,
) -> Result<InFlight<TestProvider>, Refused<TestProvider>> {
    let null = core::ptr::null_mut();
    let call = |p: &TestProvider, c| {
        // SAFETY: the test provider dereferences none of the pointers.
        unsafe {
            p.accept_security_context_async(
                c,
                null,
                null,
                null.cast(),
                0,
                null,
                null.cast(),
                null.cast(),
                null.cast(),
            )
        }
    };
    // SAFETY: the test provider dereferences none of the pointers.
    unsafe { ctx.issue(&passive(), None, call) }
}

#[test]
fn a_context_is_freed_exactly_once_when_dropped() {
    let p = TestProvider::new(Mode::Sync);
    let ctx = AsyncContext::new(p.clone(), &passive()).unwrap();
    assert_eq!(p.st().live.len(), 1);
    drop(ctx);
    let st = p.st();
    assert_eq!((st.created, st.freed), (1, 1));
    assert!(st.live.is_empty());
}

#[test]
fn create_failure_is_insufficient_memory() {
    let p = TestProvider::new(Mode::Sync);
    p.st().fail_create = true;
    let err = AsyncContext::new(p.clone(), &passive()).err().unwrap();
    assert_eq!(err, SecStatus::SEC_E_INSUFFICIENT_MEMORY);
}

#[test]
fn a_pending_call_keeps_its_context_until_it_completes() {
    let p = TestProvider::new(Mode::Pending);
    let ctx = AsyncContext::new(p.clone(), &passive()).unwrap();
    let ptr = ctx.as_ptr();
    let flight = accept(ctx).ok().unwrap();
    assert_eq!(flight.status(), SecStatus::SEC_I_ASYNC_CALL_PENDING);
    // Not complete: complete() gives the in-flight call back, nothing freed.
    let flight = flight.complete().err().unwrap();
    assert_eq!(p.st().freed, 0);
    p.finish(ptr, SecStatus::SEC_I_CONTINUE_NEEDED);
    let done = flight.complete().ok().unwrap();
    assert_eq!(done.status, SecStatus::SEC_I_CONTINUE_NEEDED);
    drop(done);
    assert_eq!(p.st().freed, 1);
}

#[test]
fn dropping_a_pending_call_leaks_rather_than_frees() {
    let p = TestProvider::new(Mode::Pending);
    let ctx = AsyncContext::new(p.clone(), &passive()).unwrap();
    let ptr = ctx.as_ptr();
    drop(accept(ctx).ok().unwrap());
    // The provider would have panicked on a free in flight; the context is still live.
    assert_eq!(p.st().freed, 0);
    assert_eq!(p.st().live.len(), 1);
    // Clean up the leak so the test itself leaks nothing.
    p.finish(ptr, SecStatus::SEC_E_OK);
    // SAFETY: the call is over and nothing else owns the context.
    unsafe { p.free_async_context(ptr) };
}

#[test]
fn a_used_context_must_be_reinitialised_before_the_next_call() {
    let p = TestProvider::new(Mode::Sync);
    let ctx = AsyncContext::new(p.clone(), &passive()).unwrap();
    let done = accept(ctx).ok().unwrap().complete().ok().unwrap();
    assert!(!done.context.is_fresh());
    let refused = accept(done.context).err().unwrap();
    assert_eq!(refused.status, SecStatus::SEC_E_INVALID_HANDLE);
    let mut ctx = refused.context;
    ctx.reinit().unwrap();
    assert!(ctx.is_fresh());
    let done = accept(ctx).ok().unwrap().complete().ok().unwrap();
    assert_eq!(done.status, SecStatus::SEC_E_OK);
    assert_eq!(p.st().reinits, 1);
}

#[test]
fn a_refused_call_gives_the_context_back_idle() {
    let p = TestProvider::new(Mode::Sync);
    let ctx = AsyncContext::new(p.clone(), &passive()).unwrap();
    p.st().fail_queue = true;
    let refused = accept(ctx).err().unwrap();
    assert_eq!(refused.status, SecStatus::SEC_E_INSUFFICIENT_MEMORY);
    drop(refused);
    assert_eq!(p.st().freed, 1);
}

#[test]
fn explicit_release_frees_the_credential_once() {
    for mode in [Mode::Sync, Mode::Inline, Mode::Pending] {
        let p = TestProvider::new(mode);
        // SAFETY: a handle the test provider issued, owned by nobody else.
        let cred = unsafe { Credentials::from_slot(p.clone(), p.new_handle()) };
        let ctx = AsyncContext::new(p.clone(), &passive()).unwrap();
        let ptr = ctx.as_ptr();
        let flight = cred.release(ctx, &passive()).ok().unwrap();
        if mode == Mode::Pending {
            assert_eq!(p.st().handles_released, 0);
            p.finish(ptr, SecStatus::SEC_E_OK);
        }
        let done = flight.complete().ok().unwrap();
        assert_eq!(done.status, SecStatus::SEC_E_OK);
        drop(done);
        let st = p.st();
        assert_eq!(st.handles_released, 1, "{mode:?}");
        assert!(st.handles_live.is_empty());
        assert!(st.live.is_empty(), "{mode:?}: async context left");
    }
}

#[test]
fn a_leased_handle_is_not_released() {
    let p = TestProvider::new(Mode::Sync);
    // SAFETY: a handle the test provider issued.
    let sc = unsafe { SecurityContext::from_slot(p.clone(), p.new_handle()) };
    let lease = sc.lease();
    assert_eq!(sc.leases(), 1);
    assert_eq!(lease.as_ptr() as usize, sc.slot().as_ptr() as usize);
    let ctx = AsyncContext::new(p.clone(), &passive()).unwrap();
    let (sc, refused) = sc.delete(ctx, &passive()).err().unwrap();
    assert_eq!(refused.status, SecStatus::SEC_E_INVALID_HANDLE);
    assert_eq!(p.st().handles_released, 0);
    drop(lease);
    let done = sc
        .delete(refused.context, &passive())
        .ok()
        .unwrap()
        .complete()
        .ok()
        .unwrap();
    drop(done);
    assert_eq!(p.st().handles_released, 1);
    assert!(p.st().live.is_empty());
}

#[test]
fn dropped_at_passive_a_handle_releases_itself_in_every_completion_mode() {
    for mode in [Mode::Sync, Mode::Inline, Mode::Pending] {
        let p = TestProvider::new(mode);
        // SAFETY: handles the test provider issued.
        let cred = unsafe { Credentials::from_slot(p.clone(), p.new_handle()) };
        drop(cred);
        if mode == Mode::Pending {
            let ptr = {
                let st = p.st();
                assert_eq!(st.live.len(), 1, "the detached call is in flight");
                NonNull::new(*st.live.keys().next().unwrap() as *mut SspiAsyncContext).unwrap()
            };
            p.finish(ptr, SecStatus::SEC_E_OK);
        }
        let st = p.st();
        assert_eq!(st.handles_released, 1, "{mode:?}");
        assert!(
            st.live.is_empty(),
            "{mode:?}: the detached async context was not freed"
        );
        assert_eq!(st.created, st.freed);
    }
}

#[test]
fn dropped_above_passive_a_handle_is_left_not_waited_for() {
    let p = TestProvider::new(Mode::Pending);
    // SAFETY: a handle the test provider issued.
    let sc = unsafe { SecurityContext::from_slot(p.clone(), p.new_handle()) };
    p.st().irql = Irql::DISPATCH.0;
    drop(sc);
    let st = p.st();
    assert_eq!(st.created, 0, "no call may be issued at DISPATCH_LEVEL");
    assert_eq!(
        st.handles_live.len(),
        1,
        "the handle is left for the verifier to report"
    );
}

#[test]
fn an_empty_slot_needs_no_release() {
    let p = TestProvider::new(Mode::Sync);
    // SAFETY: an empty slot owns nothing.
    drop(unsafe { Credentials::from_slot(p.clone(), HandleSlot::new()) });
    assert_eq!(p.st().created, 0);
}
