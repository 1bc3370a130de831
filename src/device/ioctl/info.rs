//! GET_INFO: the driver's version, capabilities, counters and limits, and
//! the open points as observed since load.

use crate::device::{complete_with, Request, Shared};
use core::sync::atomic::{AtomicU64, Ordering};
use ksspi::engine::Platform;
use ksspi::provider::SspiProvider;
use ksspi_abi::*;

impl<P: SspiProvider, K: Platform, R: Request> Shared<P, K, R> {
    pub(in crate::device) fn info(&self, input: &[u8], request: R) {
        if !input.is_empty() {
            if let Err(e) = decode::<Empty>(input) {
                return request.complete(e.ntstatus(), &[]);
            }
        }
        let open = self.table.lock(&self.platform).open;
        let mut capabilities = caps::TLS12
            | caps::TLS13
            | caps::SELFTEST
            | caps::RECORD_LAYER
            | caps::ALPN
            | caps::CLIENT_AUTH
            | caps::RESUMPTION;
        if self.config.model {
            capabilities |= caps::MODEL;
        }
        let reply = InfoReply {
            driver_version: self.config.version,
            capabilities,
            sessions_open: open,
            sessions_total: self.sessions_total.load(Ordering::Relaxed),
            handshakes_ok: self.handshakes_ok.load(Ordering::Relaxed),
            handshakes_failed: self.handshakes_failed.load(Ordering::Relaxed),
            max_sessions_per_file: self.config.max_sessions_per_file,
            max_buffered_per_session: self.config.limits.max_input as u32,
            observed: self.observed(),
        };
        complete_with(request, &reply);
    }

    /// The open points, as seen since load (GET_INFO's observed facts).
    pub(in crate::device) fn observed(&self) -> Observed {
        let s = &self.stats;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Observed {
            requires_notify_exported: u32::from(self.provider.has_requires_notify()),
            calls: l(&s.calls),
            completed_without_callback: l(&s.completed_sync),
            callback_before_return: l(&s.callback_first),
            callback_after_return: l(&s.issuer_first),
            callbacks_passive: l(&s.callbacks_passive),
            callbacks_dispatch: l(&s.callbacks_dispatch),
            reinits_in_callback: l(&s.reinits_in_callback),
            reinits_refused_in_callback: l(&s.reinits_deferred),
        }
    }
}
