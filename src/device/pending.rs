//! One request per session at a time. A request that waits on an engine
//! move (STEP, DECRYPT, SHUTDOWN) is pended on its session's entry
//! ([`Shared::pend_on`], completed with the move's reply from the session's
//! events, or at once by [`Shared::unpend`] if the engine refuses the move);
//! a synchronous one (ENCRYPT, QUERY) holds the session from
//! [`Shared::begin_sync`] to [`Shared::end_sync`]. Any other request on the
//! session meanwhile gets `STATUS_DEVICE_BUSY`. [`Shared::pend`] also pends
//! an OPEN while its session's credentials are acquired.

use super::ioctl::records::failed_record;
use super::request::{complete_with, FileId, PendKey, Request};
use super::table::Phase;
use super::Shared;
use crate::ntstatus::*;
use alloc::sync::Arc;
use core::sync::atomic::Ordering;
use ksspi::engine::{Platform, RecordError, Session};
use ksspi::provider::SspiProvider;
use ksspi::SecStatus;
use ksspi_abi::SessionId;

impl<P: SspiProvider, K: Platform, R: Request> Shared<P, K, R> {
    /// Hand `request` to the glue as pended under a fresh key (under the
    /// table lock); a request already cancelled comes back as `Err`, for the
    /// caller to complete with `STATUS_CANCELLED` once it has let go of the
    /// lock.
    pub(super) fn pend(
        &self,
        mut request: R,
        file: FileId,
        session: SessionId,
    ) -> Result<(R, u64), R> {
        let serial = self.next_pend.fetch_add(1, Ordering::Relaxed);
        if request.pend(PendKey {
            file,
            session,
            serial,
        }) {
            Ok((request, serial))
        } else {
            Err(request)
        }
    }

    /// Pend `request` on the open session `id` of `file` for an engine move;
    /// gives back the session, or completes the request and gives `None`.
    pub(super) fn pend_on(
        &self,
        file: FileId,
        id: SessionId,
        request: R,
    ) -> Option<Arc<Session<P, K>>> {
        let mut table = self.table.lock(&self.platform);
        let entry = match table.entry(id, file) {
            Some(e) if e.phase == Phase::Open => e,
            _ => {
                drop(table);
                request.complete(STATUS_INVALID_HANDLE, &[]);
                return None;
            }
        };
        // A request in the engine, or an ENCRYPT or QUERY working.
        if entry.pending.is_some() || entry.in_sync_call || entry.writing {
            drop(table);
            request.complete(STATUS_DEVICE_BUSY, &[]);
            return None;
        }
        let (request, serial) = match self.pend(request, file, id) {
            Ok(pended) => pended,
            Err(request) => {
                drop(table);
                request.complete(STATUS_CANCELLED, &[]);
                return None;
            }
        };
        entry.pending = Some(request);
        entry.pending_serial = serial;
        entry.session.clone()
    }

    /// The engine refused to start the move a request pended for: complete it.
    pub(super) fn unpend(&self, file: FileId, id: SessionId, refusal: Result<NtStatus, SecStatus>) {
        let request = self
            .table
            .lock(&self.platform)
            .entry(id, file)
            .and_then(|e| e.pending.take());
        if let Some(request) = request {
            match refusal {
                Ok(status) => request.complete(status, &[]),
                Err(status) => complete_with(request, &failed_record(status)),
            }
        }
    }

    /// Start a synchronous request (ENCRYPT, QUERY) on an open session: it
    /// writes its reply into its own output at PASSIVE_LEVEL outside the
    /// table lock, and until [`Shared::end_sync`] the session's other
    /// requests are refused as busy.
    pub(super) fn begin_sync(
        &self,
        file: FileId,
        id: SessionId,
    ) -> Result<Arc<Session<P, K>>, NtStatus> {
        let mut table = self.table.lock(&self.platform);
        let entry = match table.entry(id, file) {
            Some(e) if e.phase == Phase::Open => e,
            _ => return Err(STATUS_INVALID_HANDLE),
        };
        if entry.pending.is_some() || entry.in_sync_call || entry.writing {
            return Err(STATUS_DEVICE_BUSY);
        }
        let session = entry.session.clone().ok_or(STATUS_INVALID_HANDLE)?;
        entry.in_sync_call = true;
        Ok(session)
    }

    /// What a session refused a synchronous request with. Nothing else runs
    /// on it then, so `Busy` means a close came in meanwhile (its teardown
    /// owns the session): the session is closed, not busy.
    pub(super) fn sync_refusal(&self, file: FileId, id: SessionId, e: RecordError) -> RecordError {
        let mut table = self.table.lock(&self.platform);
        match table.entry(id, file) {
            Some(entry) if entry.phase == Phase::Open => e,
            _ if e == RecordError::Busy => RecordError::Closed,
            _ => e,
        }
    }

    /// The synchronous request is done (the session may be gone meanwhile).
    pub(super) fn end_sync(&self, file: FileId, id: SessionId) {
        let mut table = self.table.lock(&self.platform);
        if let Some(entry) = table.entry(id, file) {
            entry.in_sync_call = false;
        }
    }
}
