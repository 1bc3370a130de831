//! The model's handle tables: async contexts, credentials, security
//! contexts and provider-allocated buffers, keyed by fake addresses and ids
//! (never real pointers), and the lookups that stop on a use after free or a
//! foreign handle rather than read freed memory.

use super::SimProvider;
use crate::kernel::{bugcheck, Bugcheck};
use crate::schannel::{Context, Credential};
use crate::verifier::{IdHasher, Tag};
use ksspi::provider::AsyncContextPtr;
use ksspi::sys::*;
use ksspi::SecStatus;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// An async context's entry, keyed by its fake address.
#[derive(Debug)]
pub(super) struct AsyncCtx {
    pub(super) id: u64,
    pub(super) callback: SspiAsyncNotifyCallback,
    pub(super) data: usize,
    pub(super) status: SecStatus,
    pub(super) in_flight: bool,
    pub(super) used: bool,
    pub(super) requires_notify: bool,
    /// Calls issued on this context so far.
    pub(super) calls: u64,
}

/// A security context's entry: the model Schannel context, locked per call.
pub(super) type CtxEntry = Arc<Mutex<Context>>;

/// A table keyed by the model's own keys: fake addresses and ids it hands
/// out in sequence, and the addresses of buffers it allocated (see
/// [`IdHasher`]).
pub(super) type Table<V> = HashMap<usize, V, BuildHasherDefault<IdHasher>>;

/// Every live handle, by key.
pub(super) struct Tables {
    pub(super) contexts: Table<AsyncCtx>,
    pub(super) credentials: Table<(u64, Arc<Credential>)>,
    pub(super) security: Table<(u64, CtxEntry)>,
    pub(super) buffers: Table<(u64, Box<[u8]>)>,
}

/// Where async contexts' fake addresses start (a kernel-looking range).
pub(super) const CTX_BASE: u64 = 0xFFFF_A000_0000_0000;
/// `dwUpper` of a credential handle.
pub(super) const HANDLE_MAGIC_CRED: usize = 0x5353_5043; // "SSPC"
/// `dwUpper` of a security-context handle.
pub(super) const HANDLE_MAGIC_CTXT: usize = 0x5353_5058; // "SSPX"

impl SimProvider {
    /// The tables, locked (through a poisoned lock too).
    pub(super) fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.0.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh key for a handle or an async context's fake address.
    pub(super) fn next_key(&self) -> usize {
        self.0.next_addr.fetch_add(1, Ordering::Relaxed) as usize
    }

    /// Look up a live async context, or stop: a freed or foreign context.
    #[track_caller]
    pub(super) fn with_ctx<R>(
        &self,
        ctx: AsyncContextPtr,
        function: &str,
        f: impl FnOnce(&mut AsyncCtx) -> R,
    ) -> R {
        let key = ctx.as_ptr() as usize;
        let mut t = self.tables();
        match t.contexts.get_mut(&key) {
            Some(c) => f(c),
            None => {
                drop(t);
                bugcheck(
                    Bugcheck::DriverVerifierDetectedViolation,
                    format_args!("{function} on async context {key:#x}, which was freed or never created (use after free)"),
                )
            }
        }
    }

    /// A key for a new handle, and the verifier's id for it.
    pub(super) fn new_handle(&self, tag: Tag, what: &'static str) -> (usize, u64) {
        (self.next_key(), self.0.verifier.track(tag, what))
    }

    /// The credential behind a handle, or `SEC_E_INVALID_HANDLE`.
    pub(super) fn credential(&self, h: *mut SecHandle) -> Result<Arc<Credential>, SecStatus> {
        // SAFETY: the caller passed a handle pointer that is valid until completion.
        let h = unsafe { h.as_ref() }.ok_or(SecStatus::SEC_E_INVALID_HANDLE)?;
        if h.dwUpper != HANDLE_MAGIC_CRED {
            return Err(SecStatus::SEC_E_INVALID_HANDLE);
        }
        self.tables()
            .credentials
            .get(&h.dwLower)
            .map(|(_, c)| c.clone())
            .ok_or(SecStatus::SEC_E_INVALID_HANDLE)
    }

    /// The security context behind a handle (`None` for a NULL handle, a
    /// first call), or `SEC_E_INVALID_HANDLE`.
    pub(super) fn security_context(
        &self,
        h: *mut SecHandle,
    ) -> Result<Option<CtxEntry>, SecStatus> {
        // SAFETY: the caller passed a handle pointer (or null) valid until completion.
        let Some(h) = (unsafe { h.as_ref() }) else {
            return Ok(None);
        };
        if h.dwUpper != HANDLE_MAGIC_CTXT {
            return Err(SecStatus::SEC_E_INVALID_HANDLE);
        }
        self.tables()
            .security
            .get(&h.dwLower)
            .map(|(_, c)| Some(c.clone()))
            .ok_or(SecStatus::SEC_E_INVALID_HANDLE)
    }

    /// The security context behind a handle a record-layer or attribute call
    /// got: `SEC_E_INVALID_HANDLE` for NULL or anything not live.
    pub(super) fn live_context(&self, h: *mut SecHandle) -> Result<CtxEntry, SecStatus> {
        match self.security_context(h) {
            Ok(Some(e)) => Ok(e),
            Ok(None) | Err(_) => Err(SecStatus::SEC_E_INVALID_HANDLE),
        }
    }
}
