//! The async context functions: `SspiCreateAsyncContext`,
//! `SspiFreeAsyncContext`, `SspiReinitAsyncContext`,
//! `SspiSetAsyncNotifyCallback`, `SspiAsyncContextRequiresNotify` and
//! `SspiGetAsyncCallStatus`, over the async-context table.

use super::completion::IN_CALLBACK;
use super::tables::{AsyncCtx, CTX_BASE};
use super::SimProvider;
use crate::kernel::{self, bugcheck, Bugcheck};
use crate::verifier::{FaultKind, Tag};
use ksspi::provider::AsyncContextPtr;
use ksspi::sys::*;
use ksspi::SecStatus;
use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::atomic::Ordering;

impl SimProvider {
    /// `SspiCreateAsyncContext`: a new entry at a fresh fake address.
    pub(super) fn create_ctx(&self) -> Option<AsyncContextPtr> {
        kernel::require_at_most_dispatch("SspiCreateAsyncContext");
        if self.0.verifier.fault_point(FaultKind::Allocation) {
            return None;
        }
        let key = (CTX_BASE + (self.next_key() as u64) * 16) as usize;
        let id = self
            .0
            .verifier
            .track(Tag::AsyncContext, "SspiCreateAsyncContext");
        self.tables().contexts.insert(
            key,
            AsyncCtx {
                id,
                callback: None,
                data: 0,
                status: SecStatus::SEC_E_OK,
                in_flight: false,
                used: false,
                requires_notify: false,
                calls: 0,
            },
        );
        self.0.counters.created.fetch_add(1, Ordering::Relaxed);
        NonNull::new(key as *mut SspiAsyncContext)
    }

    /// `SspiFreeAsyncContext`: stops on a context in flight or already freed.
    pub(super) fn free_ctx(&self, ctx: AsyncContextPtr) {
        kernel::require_at_most_dispatch("SspiFreeAsyncContext");
        let key = ctx.as_ptr() as usize;
        let removed = {
            let mut t = self.tables();
            match t.contexts.get(&key) {
                Some(c) if c.in_flight => Err(true),
                Some(_) => Ok(t.contexts.remove(&key).expect("present").id),
                None => Err(false),
            }
        };
        match removed {
            Ok(id) => self.0.verifier.untrack(Tag::AsyncContext, id),
            Err(true) => bugcheck(
                Bugcheck::DriverVerifierDetectedViolation,
                format_args!("SspiFreeAsyncContext on {key:#x} while a call is in flight"),
            ),
            Err(false) => bugcheck(
                Bugcheck::DriverVerifierDetectedViolation,
                format_args!("SspiFreeAsyncContext on {key:#x}, already freed or never created (double free)"),
            ),
        }
    }

    /// `SspiReinitAsyncContext`, refused inside the context's own callback
    /// unless [`SimConfig::reinit_in_callback`](super::SimConfig::reinit_in_callback).
    pub(super) fn reinit_ctx(&self, ctx: AsyncContextPtr) -> SecStatus {
        kernel::require_at_most_dispatch("SspiReinitAsyncContext");
        let key = ctx.as_ptr() as usize;
        let in_callback = IN_CALLBACK.with(|c| c.get()) == key;
        let allowed_here = self.0.config.reinit_in_callback || !in_callback;
        let status = self.with_ctx(ctx, "SspiReinitAsyncContext", |c| {
            if c.in_flight {
                // Windows fails the call; the model stops the test, because a
                // driver that does this has lost track of its own call.
                bugcheck(
                    Bugcheck::DriverVerifierDetectedViolation,
                    format_args!("SspiReinitAsyncContext on {key:#x} while a call is in flight"),
                );
            }
            if !allowed_here {
                SecStatus::SEC_E_INVALID_HANDLE
            } else {
                c.used = false;
                c.status = SecStatus::SEC_E_OK;
                c.requires_notify = false;
                SecStatus::SEC_E_OK
            }
        });
        if status.is_success() {
            self.0.counters.reinits.fetch_add(1, Ordering::Relaxed);
        }
        status
    }

    /// `SspiSetAsyncNotifyCallback`.
    pub(super) fn set_callback(
        &self,
        ctx: AsyncContextPtr,
        callback: SspiAsyncNotifyCallback,
        data: *mut c_void,
    ) -> SecStatus {
        kernel::require_at_most_dispatch("SspiSetAsyncNotifyCallback");
        self.with_ctx(ctx, "SspiSetAsyncNotifyCallback", |c| {
            if c.in_flight {
                return SecStatus::SEC_E_INVALID_HANDLE;
            }
            c.callback = callback;
            c.data = data as usize;
            SecStatus::SEC_E_OK
        })
    }

    /// `SspiAsyncContextRequiresNotify`, if exported.
    pub(super) fn requires_notify(&self, ctx: AsyncContextPtr) -> Option<bool> {
        if !self.0.config.requires_notify_exported {
            return None;
        }
        Some(self.with_ctx(ctx, "SspiAsyncContextRequiresNotify", |c| {
            c.requires_notify || c.in_flight
        }))
    }

    /// `SspiGetAsyncCallStatus`.
    pub(super) fn call_status(&self, ctx: AsyncContextPtr) -> SecStatus {
        self.with_ctx(ctx, "SspiGetAsyncCallStatus", |c| c.status)
    }
}
