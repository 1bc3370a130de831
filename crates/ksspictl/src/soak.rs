//! `stress` over the model: one soak batch is a fresh model device running
//! the driver's self-test (every completion mode and callback IRQL mixed)
//! while user-mode workers drive session pairs through the IOCTL path (OPEN,
//! STEP relayed in memory, ENCRYPT / DECRYPT both ways with TLS 1.3 tickets,
//! QUERY, SHUTDOWN both ways, CLOSE), a seeded share of them disrupted: a
//! pended request cancelled (after a random pause, or before the driver could
//! pend it), the session closed while a request is in flight, or the file
//! handle closed (EvtFileCleanup) mid-flight. Some batches also fail one in N
//! of the model's fault points (allocations and SSPI calls).
//!
//! Whatever happened, the batch must balance at the end: every request
//! completed exactly once with a clean status, no session left open, every
//! async call completed once and every callback accounted for (engine and
//! model), every work item queued has run, and the verifier's list is empty.
//!
//! This file holds what both backends share: the plan of a `stress` run, the
//! rotations of its batches, the figures and their balance. The model's batch
//! is the model backend's (`backend/model/batch.rs`); on Windows a batch is a
//! self-test of the installed driver.

use crate::util::{protocols, Tls};
use ksspi_abi::proto;
use serde::Serialize;

macro_rules! counters {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* $f:ident,)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, Default, Serialize)]
        pub struct $name { $($(#[$fm])* pub $f: u64,)* }

        impl $name {
            /// Add `o`'s figures to ours.
            pub fn add(&mut self, o: &Self) {
                $(self.$f += o.$f;)*
            }
        }
    };
}

counters! {
    /// What a soak batch (or a whole run) did, and the figures that must
    /// balance.
    pub struct Counters {
        /// Batches by TLS versions, with tickets, with faults.
        batches_tls12,
        batches_tls13,
        batches_tls_both,
        batches_tickets,
        batches_faults,
        /// Self-test handshakes; failures in batches without faults (must be 0).
        handshakes_ok,
        handshakes_failed,
        handshakes_failed_clean,
        /// Self-test application bytes checked.
        bytes_checked,
        /// IOCTL session pairs: completed (handshake, data both ways, close_notify
        /// both ways, CLOSE), failed (undisrupted; in batches without faults: must
        /// be 0), disrupted; negotiated versions; their bytes checked; TLS 1.3
        /// tickets and other post-handshake messages their DECRYPTs handled.
        pairs_ok,
        pairs_failed,
        pairs_failed_clean,
        pairs_disrupted,
        pairs_tls12,
        pairs_tls13,
        pair_bytes_checked,
        renegotiations,
        /// Every request: sent, completed once, completed again (must be 0),
        /// dropped without completion (must be 0); statuses: success, error
        /// (negative NTSTATUS), anything else (must be 0); replies whose
        /// SECURITY_STATUS does not fit their outcome (must be 0).
        requests_sent,
        requests_completed,
        requests_completed_twice,
        requests_dropped,
        status_success,
        status_error,
        status_not_clean,
        replies_not_clean,
        /// Disruptions: cancels asked for, of them too late (the request had
        /// completed), cancel routines run, requests
        /// completed STATUS_CANCELLED, of them by the engine inside the cancel
        /// routine, and by the second claim of a completion that raced it;
        /// requests pended, pends refused (cancelled before the driver pended
        /// them); CLOSEs sent while a request of the session was in flight;
        /// file handles closed mid-flight; stale session ids refused at the end.
        cancels,
        cancels_too_late,
        cancel_routines,
        cancelled,
        cancelled_by_engine,
        cancel_races,
        pends,
        pends_refused,
        closes_mid_flight,
        file_cleanups,
        stale_ids_refused,
        /// Sessions the device opened (GET_INFO's sessions_total) and those
        /// still open at the end (must be 0).
        sessions_opened,
        sessions_open_at_end,
        /// The device engine (IOCTL sessions and their credentials): async calls
        /// issued, completions observed (synchronous, callback first, issuer
        /// first; must equal the calls), callbacks run, and the completions
        /// that were to have one (must equal the callbacks).
        engine_calls,
        engine_completions,
        engine_callbacks,
        engine_notified,
        /// The self-test's sessions: completions observed, callbacks, and the
        /// completions that were to have one (must equal the callbacks).
        selftest_completions,
        selftest_callbacks,
        selftest_notified,
        /// The model (every async call, the self-test's credentials and
        /// detached releases too): calls queued, completed (must be equal),
        /// callbacks run and completions that were to have one (must be equal).
        model_calls,
        model_completions,
        model_callbacks,
        model_notified,
        /// Work items: counted by the engine (device and self-test sessions),
        /// queued to the platform and run (must equal queued).
        work_items_engine,
        work_items_queued,
        work_items_run,
        /// Fault points passed and faults injected.
        fault_points,
        faults_injected,
        /// Objects alive in the model's verifier at unload (must be 0).
        leaked,
    }
}

impl Counters {
    /// The balances every batch, and so every run, must keep.
    pub fn balance(&self) -> Result<(), String> {
        let c = self;
        let mut wrong = Vec::new();
        let mut want = |ok: bool, what: String| {
            if !ok {
                wrong.push(what);
            }
        };
        want(
            c.requests_sent == c.requests_completed,
            format!(
                "{} requests sent, {} completed",
                c.requests_sent, c.requests_completed
            ),
        );
        want(
            c.requests_dropped == 0,
            format!("{} requests dropped without completion", c.requests_dropped),
        );
        want(
            c.requests_completed_twice == 0,
            format!("{} requests completed twice", c.requests_completed_twice),
        );
        want(
            c.status_not_clean == 0,
            format!(
                "{} requests completed with a status neither success nor an error",
                c.status_not_clean
            ),
        );
        want(
            c.replies_not_clean == 0,
            format!(
                "{} replies with a SECURITY_STATUS that does not fit their outcome",
                c.replies_not_clean
            ),
        );
        want(
            c.status_success + c.status_error == c.requests_completed,
            format!(
                "{} successes + {} errors != {} completed",
                c.status_success, c.status_error, c.requests_completed
            ),
        );
        want(
            c.cancel_routines == c.cancelled_by_engine + c.cancel_races,
            format!(
                "{} cancel routines ran, {} requests completed by the engine inside one and {} by the second claim",
                c.cancel_routines, c.cancelled_by_engine, c.cancel_races
            ),
        );
        want(
            c.cancelled >= c.cancelled_by_engine + c.cancel_races + c.pends_refused,
            format!(
                "{} requests completed STATUS_CANCELLED, fewer than were cancelled ({} in the cancel routine, {} by its claim, {} refused at pend)",
                c.cancelled, c.cancelled_by_engine, c.cancel_races, c.pends_refused
            ),
        );
        want(
            c.sessions_open_at_end == 0,
            format!("{} sessions still open at the end", c.sessions_open_at_end),
        );
        want(
            c.engine_calls == c.engine_completions,
            format!(
                "the engine issued {} async calls and observed {} completions",
                c.engine_calls, c.engine_completions
            ),
        );
        want(
            c.engine_callbacks == c.engine_notified,
            format!(
                "the engine saw {} callbacks for {} completions with one",
                c.engine_callbacks, c.engine_notified
            ),
        );
        want(
            c.selftest_callbacks == c.selftest_notified,
            format!(
                "the self-test saw {} callbacks for {} completions with one",
                c.selftest_callbacks, c.selftest_notified
            ),
        );
        want(
            c.model_calls == c.model_completions,
            format!(
                "the model queued {} calls and completed {}",
                c.model_calls, c.model_completions
            ),
        );
        want(
            c.model_callbacks == c.model_notified,
            format!(
                "the model ran {} callbacks for {} completions with one",
                c.model_callbacks, c.model_notified
            ),
        );
        want(
            c.model_calls >= c.engine_calls + c.selftest_completions,
            format!(
                "the model queued {} calls, fewer than the engine ({}) and the self-test ({}) issued",
                c.model_calls, c.engine_calls, c.selftest_completions
            ),
        );
        want(
            c.work_items_queued == c.work_items_run,
            format!(
                "{} work items queued, {} run",
                c.work_items_queued, c.work_items_run
            ),
        );
        want(
            c.work_items_engine <= c.work_items_queued,
            format!(
                "the engine counted {} work items, the platform was given {}",
                c.work_items_engine, c.work_items_queued
            ),
        );
        want(
            c.handshakes_failed_clean == 0,
            format!(
                "{} self-test handshakes failed without injected faults",
                c.handshakes_failed_clean
            ),
        );
        want(
            c.pairs_failed_clean == 0,
            format!(
                "{} IOCTL session pairs failed without injected faults",
                c.pairs_failed_clean
            ),
        );
        want(
            c.leaked == 0,
            format!("{} objects alive at unload", c.leaked),
        );
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(wrong.join("; "))
        }
    }
}

/// One batch's figures, its worst self-test latency, and what did not
/// balance, if anything.
pub struct Batch {
    pub counters: Counters,
    pub latency_max_us: u64,
    pub failure: Option<String>,
}

/// What `stress` runs.
pub struct StressPlan {
    pub duration: std::time::Duration,
    pub concurrency: u32,
    pub tls: Tls,
    pub seed: u64,
    pub bytes: Option<u32>,
    pub faults: Option<u64>,
    pub workers: Option<u32>,
    pub disrupt: Option<u32>,
    pub thumbprint: Option<[u8; 20]>,
    pub json: bool,
}

/// The TLS versions of batch `index`: `tls`, or with both a rotation of
/// 1.2 only, 1.3 only and both.
pub fn batch_protocols(tls: Tls, index: u64) -> u32 {
    match tls {
        Tls::Both => [proto::TLS12, proto::TLS13, proto::ALL][(index % 3) as usize],
        other => protocols(other),
    }
}

/// The self-test's application bytes in batch `index`: `bytes`, or by
/// default 16 KiB each way in batches 2 and 3 of every four (so with and
/// without faults).
pub fn batch_bytes(bytes: Option<u32>, index: u64) -> u32 {
    bytes.unwrap_or(if index % 4 >= 2 { 16 * 1024 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_imbalance_is_named() {
        let ok = Counters {
            requests_sent: 10,
            requests_completed: 10,
            status_success: 7,
            status_error: 3,
            engine_calls: 5,
            engine_completions: 5,
            model_calls: 9,
            model_completions: 9,
            selftest_completions: 4,
            work_items_queued: 2,
            work_items_run: 2,
            ..Counters::default()
        };
        assert_eq!(ok.balance(), Ok(()));
        let lost = Counters {
            requests_completed: 9,
            status_error: 2,
            requests_dropped: 1,
            ..ok
        };
        let why = lost.balance().unwrap_err();
        assert!(
            why.contains("10 requests sent, 9 completed")
                && why.contains("1 requests dropped without completion"),
            "{why}"
        );
        for (broken, text) in [
            (
                Counters {
                    engine_completions: 4,
                    ..ok
                },
                "issued 5 async calls and observed 4",
            ),
            (
                Counters {
                    work_items_run: 1,
                    ..ok
                },
                "2 work items queued, 1 run",
            ),
            (
                Counters {
                    sessions_open_at_end: 1,
                    ..ok
                },
                "1 sessions still open",
            ),
            (Counters { leaked: 3, ..ok }, "3 objects alive at unload"),
            (
                Counters {
                    cancel_routines: 1,
                    ..ok
                },
                "1 cancel routines ran",
            ),
            (
                Counters {
                    pairs_failed_clean: 1,
                    ..ok
                },
                "pairs failed without injected faults",
            ),
        ] {
            let why = broken.balance().unwrap_err();
            assert!(why.contains(text), "{why}");
        }
        let mut sum = ok;
        sum.add(&ok);
        assert_eq!((sum.requests_sent, sum.balance()), (20, Ok(())));
    }
}
