//! SELFTEST: the request checked against the device's bounds, then handed to
//! a run of `crate::selftest` (one at a time, its own sessions, not the
//! table's). Resume mode ([`SelftestRequest::resume`]) is this driver's own
//! ([`caps::RESUMPTION`]): taken as it comes.

use crate::device::{FileId, Request, Shared};
use crate::ntstatus::*;
use core::sync::atomic::Ordering;
use ksspi::engine::Platform;
use ksspi::provider::SspiProvider;
use ksspi::Passive;
use ksspi_abi::*;

impl<P: SspiProvider, K: Platform, R: Request> Shared<P, K, R> {
    /// Most handshakes a self-test runs at once on this device: half its
    /// session limit (two sessions each), so a run never holds more sessions
    /// than the table can.
    pub(in crate::device) fn selftest_concurrency(&self) -> u32 {
        (self.config.max_sessions / 2).max(1)
    }

    pub(in crate::device) fn selftest(&self, file: FileId, input: &[u8], request: R, at: &Passive) {
        let plan = match decode::<SelftestRequest>(input) {
            Ok(p) => p,
            Err(e) => return request.complete(e.ntstatus(), &[]),
        };
        if plan.concurrency > self.selftest_concurrency() {
            return request.complete(STATUS_INVALID_PARAMETER, &[]);
        }
        // The completion mode and callback IRQL are the model's policy, set by
        // whoever built the model; a real driver cannot choose them.
        if !self.config.model && (plan.completion != 0 || plan.callback_irql != 0) {
            return request.complete(STATUS_NOT_SUPPORTED, &[]);
        }
        // The reply's size: a resume run's counts follow the figures.
        let reply_len = Header::LEN + 144 + if plan.resume { 32 } else { 0 };
        if request.output_capacity() < reply_len {
            return request.complete(STATUS_BUFFER_TOO_SMALL, &[]);
        }
        let launch = crate::selftest::Launch {
            provider: self.provider.clone(),
            platform: self.platform.clone(),
            limits: self.config.limits,
            gate: self.selftest.clone(),
            device_stats: self.stats.clone(),
            file,
            serial: self.next_pend.fetch_add(1, Ordering::Relaxed),
        };
        crate::selftest::start(launch, plan, request, at);
    }
}
