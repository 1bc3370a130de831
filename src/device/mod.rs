//! The device engine: everything the driver decides, portable and tested over
//! the model. The KMDF glue hands it file opens, IOCTLs (with the request that
//! carries them), cancellations, cleanups and unload; it completes every
//! request exactly once, never hands a kernel address to user mode (sessions
//! are slot + generation ids), refuses a session id on any file handle but the
//! one that opened it, and bounds what a user can make the kernel hold.
//!
//! Request lifetimes: `ioctl` always takes the request. Bad input is completed
//! at once with its NTSTATUS and nothing changes. OPEN pends while the
//! session's credentials are acquired, unless credentials with the same
//! parameters are cached (the device keeps up to [`CREDENTIAL_CACHE`] until
//! unload); STEP pends while its calls run and is
//! completed from the session's continuation (`step_ready`, after the session
//! can take the next step). ENCRYPT and QUERY complete at once
//! (EncryptMessage and QueryContextAttributesW are synchronous; both fill the
//! session's reply buffer outside the table lock); DECRYPT and SHUTDOWN pend like STEP (a post-handshake
//! message, and close_notify, go through the async handshake call) and are
//! completed from the continuation. Per session one request is in the engine
//! at a time: another gets `STATUS_DEVICE_BUSY`. CLOSE completes at once and the session is
//! released once any in-flight call completes. A cancelled STEP completes with
//! `STATUS_CANCELLED` and closes its session (an SSPI call in flight cannot be
//! taken back; the handshake cannot go on without its result).
//!
//! Where it lives: the [`Request`] contract, [`PendKey`] and [`FileId`] in
//! `request.rs`; the session table (slots, generations, the free stack,
//! sessions per file) in `table.rs`; the credential cache in
//! `credentials.rs`; one request per session at a time in `pending.rs`; the
//! IOCTL handlers in `ioctl/`, one file per IOCTL or family, dispatched by
//! [`Device::ioctl`]; the session events that route continuations back into
//! the table in `events.rs`.

mod credentials;
mod events;
mod ioctl;
mod pending;
mod request;
mod table;

pub use credentials::CREDENTIAL_CACHE;
pub(crate) use ioctl::open::disabled_protocols;
pub(crate) use request::complete_with;
pub use request::{FileId, PendKey, Request, SELFTEST_SESSION};

use crate::lock::SpinLock;
use crate::ntstatus::*;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use credentials::CredentialCache;
use events::EntryEvents;
use ksspi::engine::{EngineStats, Limits, Platform};
use ksspi::provider::SspiProvider;
use ksspi::{Passive, Tracked};
use ksspi_abi::*;
use table::{end_close, Entry, Phase, Slot, Table};

/// The device's bounds.
#[derive(Clone, Debug)]
pub struct DeviceConfig {
    /// Sessions open at once, over all files.
    pub max_sessions: u32,
    /// Sessions open at once on one file handle.
    pub max_sessions_per_file: u32,
    /// Per-session buffers (and so the bytes a session may hold).
    pub limits: Limits,
    /// Running over the host model (reported by GET_INFO).
    pub model: bool,
    /// The driver's version.
    pub version: [u16; 3],
}

impl Default for DeviceConfig {
    fn default() -> Self {
        DeviceConfig {
            max_sessions: 1024,
            max_sessions_per_file: 64,
            limits: Limits::default(),
            model: !cfg!(windows),
            version: [0, 1, 0],
        }
    }
}

struct Shared<P: SspiProvider, K: Platform, R: Request> {
    provider: P,
    platform: K,
    config: DeviceConfig,
    table: SpinLock<Table<P, K, R>>,
    /// Credentials kept for later OPENs with the same parameters.
    credentials: SpinLock<CredentialCache<P>>,
    /// The self-test under way (one at a time).
    selftest: Arc<crate::selftest::Gate<P, K, R>>,
    stats: Arc<EngineStats>,
    next_file: AtomicU64,
    next_pend: AtomicU64,
    sessions_total: AtomicU64,
    handshakes_ok: AtomicU64,
    handshakes_failed: AtomicU64,
}

/// The device engine. Everything it builds runs over its provider
/// [`Tracked`], so removal and unload can wait until no async context, and so
/// no callback into the driver, is left ([`Device::outstanding`]).
pub struct Device<P: SspiProvider, K: Platform, R: Request> {
    shared: Arc<Shared<Tracked<P>, K, R>>,
}

/// What removal and unload wait for ([`Device::outstanding`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outstanding {
    /// Sessions in the table (opening, open or closing).
    pub sessions: u32,
    /// Async contexts alive: calls that may still complete (handshake steps,
    /// credential acquisitions and releases, detached deletes, the
    /// self-test's machines), and each one's callback or work item.
    pub async_contexts: usize,
}

impl Outstanding {
    /// Nothing left: ksecdd holds no callback into the driver, and no work
    /// item of the engine is queued or running.
    pub fn is_drained(&self) -> bool {
        self.sessions == 0 && self.async_contexts == 0
    }
}

impl<P: SspiProvider, K: Platform, R: Request> Device<P, K, R> {
    /// A device with `config`'s bounds (its session table is allocated here).
    pub fn new(provider: P, platform: K, config: DeviceConfig) -> Self {
        let table = Table::new(config.max_sessions);
        Device {
            shared: Arc::new(Shared {
                provider: Tracked::new(provider),
                platform,
                config,
                table: SpinLock::new(table),
                credentials: SpinLock::new(CredentialCache {
                    entries: Vec::with_capacity(CREDENTIAL_CACHE),
                    closed: false,
                }),
                selftest: crate::selftest::Gate::new(),
                stats: Arc::default(),
                next_file: AtomicU64::new(1),
                next_pend: AtomicU64::new(1),
                sessions_total: AtomicU64::new(0),
                handshakes_ok: AtomicU64::new(0),
                handshakes_failed: AtomicU64::new(0),
            }),
        }
    }

    /// Bytes the device itself keeps per session, beside the engine's
    /// session: its table slot (allocated with the table, so fixed from
    /// `new` on) and the session's event router (an `Arc`: two counts and
    /// the router). Replies are written into the requests' own output
    /// buffers, so no reply buffer is kept.
    pub fn bytes_per_session(&self) -> usize {
        core::mem::size_of::<Slot<Tracked<P>, K, R>>()
            + 2 * core::mem::size_of::<usize>()
            + core::mem::size_of::<EntryEvents<Tracked<P>, K, R>>()
    }

    /// The engine counters (calls, completions, callbacks, work items).
    pub fn stats(&self) -> &Arc<EngineStats> {
        &self.shared.stats
    }

    /// A new file handle (`EvtDeviceFileCreate`).
    pub fn open_file(&self) -> FileId {
        FileId(self.shared.next_file.fetch_add(1, Ordering::Relaxed))
    }

    /// Sessions alive (open, opening or closing) on `file`.
    pub fn sessions_of(&self, file: FileId) -> u32 {
        self.shared.table.lock(&self.shared.platform).count(file)
    }

    /// Sessions alive on the device.
    pub fn sessions_alive(&self) -> u32 {
        self.shared.table.lock(&self.shared.platform).open
    }

    /// One IOCTL (`EvtIoDeviceControl`), at PASSIVE_LEVEL. The engine takes the
    /// request and completes it, now or later, exactly once.
    pub fn ioctl(&self, file: FileId, code: u32, input: &[u8], request: R, at: &Passive) {
        let s = &self.shared;
        match code {
            IOCTL_KSSPI_GET_INFO => s.info(input, request),
            IOCTL_KSSPI_OPEN => s.open(file, input, request, at),
            IOCTL_KSSPI_STEP => s.step(file, input, request, at),
            IOCTL_KSSPI_CLOSE => s.close(file, input, request),
            IOCTL_KSSPI_SELFTEST => s.selftest(file, input, request, at),
            IOCTL_KSSPI_ENCRYPT => s.encrypt(file, input, request, at),
            IOCTL_KSSPI_DECRYPT => s.decrypt(file, input, request, at),
            IOCTL_KSSPI_SHUTDOWN => s.shutdown(file, input, request, at),
            IOCTL_KSSPI_QUERY => s.query(file, input, request, at),
            _ => request.complete(STATUS_INVALID_DEVICE_REQUEST, &[]),
        }
    }

    /// The request pended under `key` was cancelled (`EvtRequestCancel`), at
    /// up to DISPATCH_LEVEL. If the engine still holds it, it completes it
    /// through [`Request::cancelled`] and returns true. If not (its completion
    /// is under way and lost the race with the cancel), it returns false and
    /// the glue completes it. Either way the session closes: the step's result
    /// is lost to user mode, and an SSPI call cannot be taken back. A SELFTEST
    /// (its key names [`SELFTEST_SESSION`]) taken by the cancel completes
    /// through [`Request::cancelled`] later, once the handshakes it has in
    /// flight are over; none starts after the cancel.
    pub fn cancel(&self, key: PendKey) -> bool {
        let s = &self.shared;
        if key.session == SELFTEST_SESSION {
            return s.selftest.cancel(&s.platform, key);
        }
        let (request, to_close) = {
            let mut table = s.table.lock(&s.platform);
            let Some(entry) = table.entry(key.session, key.file) else {
                return false;
            };
            let ours = entry.pending_serial == key.serial;
            if !ours && (entry.pending.is_some() || entry.writing) {
                // A later request pends there now: this cancel is stale.
                return false;
            }
            // None while its reply is written (`Shared::write_reply`): its
            // completion is under way, as when it has been taken to complete.
            let request = if ours { entry.pending.take() } else { None };
            let to_close = if entry.phase == Phase::Closing {
                None
            } else {
                // While opening there is no session yet; `opened` closes it.
                entry.phase = Phase::Closing;
                entry.session.clone()
            };
            (request, to_close)
        };
        let completed = request.is_some();
        if let Some(request) = request {
            request.cancelled();
        }
        if let Some(session) = to_close {
            session.close();
        }
        completed
    }

    /// The file handle is being closed (`EvtFileCleanup`): close its sessions.
    /// Returns how many are still alive; they go once their in-flight calls
    /// complete ([`Device::sessions_of`] reaches 0).
    pub fn cleanup(&self, file: FileId) -> u32 {
        self.shared.close_where(|e| e.file == file);
        self.sessions_of(file)
    }

    /// The file object is closed (`EvtFileClose`, after cleanup, once every
    /// request on it has completed): close any session an OPEN that raced
    /// the cleanup made after it. Returns how many are still alive, as
    /// [`Device::cleanup`] does.
    pub fn close_file(&self, file: FileId) -> u32 {
        self.cleanup(file)
    }

    /// What is still outstanding: the device may be let go of (its memory
    /// freed, the driver image unloaded) only once this
    /// [`is drained`](Outstanding::is_drained).
    pub fn outstanding(&self) -> Outstanding {
        Outstanding {
            sessions: self.sessions_alive(),
            async_contexts: self.shared.provider.async_contexts_alive(),
        }
    }

    /// Unload (the device's removal, before the framework disposes its work
    /// items): close every session, stop a self-test under way (no new
    /// handshake; its request completes with `STATUS_CANCELLED` once the ones
    /// in flight end), and release the cached credentials.
    /// Returns what is still outstanding; the glue waits until
    /// [`Device::outstanding`] is drained before it lets go of the device.
    pub fn unload(&self) -> Outstanding {
        self.shared.close_where(|_| true);
        self.shared.selftest.stop(&self.shared.platform);
        let cached = {
            let mut cache = self.shared.credentials.lock(&self.shared.platform);
            cache.closed = true;
            core::mem::take(&mut cache.entries)
        };
        // Each handle goes with its last holder (a session still closing
        // keeps its own); this may be the last one.
        for (_, credentials) in cached {
            self.shared.let_go(credentials);
        }
        self.outstanding()
    }

    /// Credentials handles the device keeps for later OPENs.
    pub fn credentials_cached(&self) -> usize {
        self.shared
            .credentials
            .lock(&self.shared.platform)
            .entries
            .len()
    }
}

impl<P: SspiProvider, K: Platform, R: Request> Shared<P, K, R> {
    /// Close every session `which` selects.
    fn close_where(&self, which: impl Fn(&Entry<P, K, R>) -> bool) {
        let slots = self.config.max_sessions as usize;
        for index in 0..slots {
            let (session, opening) = {
                let mut table = self.table.lock(&self.platform);
                let Some(entry) = table.slots[index].entry.as_mut() else {
                    continue;
                };
                if !which(entry) || entry.phase == Phase::Closing {
                    continue;
                }
                entry.begin_close()
            };
            end_close(session, opening);
        }
    }
}
