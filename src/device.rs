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

use crate::lock::SpinLock;
use crate::ntstatus::*;
use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use ksspi::engine::{
    acquire_credentials, release_credentials, CredentialSpec, EngineStats, Limits, Outcome,
    Platform, RecordError, RecordReport, Role, Session, SessionEvents, SessionSetup, StepError,
    StepReport,
};
use ksspi::handle::Credentials;
use ksspi::provider::SspiProvider;
use ksspi::sys::{
    SP_PROT_TLS1_2_CLIENT, SP_PROT_TLS1_2_SERVER, SP_PROT_TLS1_3_CLIENT, SP_PROT_TLS1_3_SERVER,
};
use ksspi::{Passive, SecStatus, Tracked};
use ksspi_abi::*;

/// A pended or pending IOCTL request, as the glue gives it to the engine
/// (`WDFREQUEST` on Windows).
pub trait Request: Send + 'static {
    /// Bytes the request's output buffer holds (METHOD_BUFFERED).
    fn output_capacity(&self) -> usize;

    /// The output buffer itself (`output_capacity()` bytes: on Windows the
    /// system buffer, whose input the glue copied out before the engine saw
    /// it), for a reply the engine writes in place and completes with
    /// [`Request::complete_written`]. Callable at DISPATCH_LEVEL, until the
    /// request completes.
    fn output(&mut self) -> &mut [u8];

    /// The engine keeps the request pending under `key` (OPEN while the
    /// credentials are acquired, STEP while its calls run). The glue makes it
    /// cancelable (`WdfRequestMarkCancelableEx`) and keeps `key` for its cancel
    /// routine, which hands it to [`Device::cancel`]. Returns false if the
    /// request is cancelled already: the engine then completes it with
    /// `STATUS_CANCELLED` at once. Called under the table lock (or the
    /// self-test's), at DISPATCH_LEVEL. A SELFTEST pends under
    /// [`SELFTEST_SESSION`] for its whole run.
    fn pend(&mut self, key: PendKey) -> bool {
        let _ = key;
        true
    }

    /// Complete with `status`, the first `len` bytes of [`Request::output`]
    /// being the reply (`len` bytes of information). Callable at
    /// DISPATCH_LEVEL.
    fn complete_written(self, status: NtStatus, len: usize);

    /// Copy `reply` to the output buffer and complete with `status` (and
    /// `reply.len()` bytes of information); a reply longer than the buffer
    /// completes with `STATUS_BUFFER_TOO_SMALL`. Callable at DISPATCH_LEVEL.
    fn complete(mut self, status: NtStatus, reply: &[u8])
    where
        Self: Sized,
    {
        if reply.is_empty() {
            return self.complete_written(status, 0);
        }
        match self.output().get_mut(..reply.len()) {
            Some(out) => {
                out.copy_from_slice(reply);
                self.complete_written(status, reply.len());
            }
            None => self.complete_written(STATUS_BUFFER_TOO_SMALL, 0),
        }
    }

    /// Complete with `STATUS_CANCELLED` a request whose cancel routine handed
    /// it to the engine ([`Device::cancel`] returned true): from inside the
    /// routine, or later (a SELFTEST, once its handshakes in flight are
    /// over). The request is no longer cancelable, so there is nothing to
    /// unmark.
    fn cancelled(self)
    where
        Self: Sized,
    {
        self.complete(STATUS_CANCELLED, &[]);
    }
}

/// What identifies one pended request to [`Device::cancel`]: its file, its
/// session, and a serial number, so a late cancel never hits a later request
/// pended on the same session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendKey {
    /// The file handle the request came on.
    pub file: FileId,
    /// The session it waits on.
    pub session: SessionId,
    /// The device-wide serial number of this pend.
    pub serial: u64,
}

/// The session a pended SELFTEST's [`PendKey`] names: no session's id (slot
/// 0 with generation 0; generations start at 1 and never wrap to 0).
pub const SELFTEST_SESSION: SessionId = SessionId(0);

/// A file handle on the device (`WDFFILEOBJECT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileId(pub u64);

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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Opening,
    Open,
    Closing,
}

struct Entry<P: SspiProvider, K: Platform, R> {
    file: FileId,
    phase: Phase,
    session: Option<Arc<Session<P, K>>>,
    credentials: Option<Arc<Credentials<P>>>,
    pending: Option<R>,
    pending_serial: u64,
    /// The length of the reply written into the pending request's output
    /// (by `step_done` / `record_done`, for `step_ready` to complete).
    reply_len: usize,
    /// A synchronous request (ENCRYPT, QUERY) is working on the session
    /// outside the table lock.
    in_sync_call: bool,
    /// The pending request is out of the entry while its reply is written
    /// into it outside the table lock (`Shared::write_reply`).
    writing: bool,
}

impl<P: SspiProvider, K: Platform, R> Entry<P, K, R> {
    /// Mark the entry closing (under the table lock); returns the session to
    /// close and a pending OPEN to cancel, for [`end_close`] outside the lock.
    fn begin_close(&mut self) -> (Option<Arc<Session<P, K>>>, Option<R>) {
        let opening = if self.phase == Phase::Opening {
            self.pending.take()
        } else {
            None
        };
        self.phase = Phase::Closing;
        (self.session.clone(), opening)
    }
}

/// The part of a close that runs outside the table lock.
fn end_close<P: SspiProvider, K: Platform, R: Request>(
    session: Option<Arc<Session<P, K>>>,
    opening: Option<R>,
) {
    if let Some(open) = opening {
        open.complete(STATUS_CANCELLED, &[]);
    }
    if let Some(session) = session {
        session.close();
    }
}

struct Slot<P: SspiProvider, K: Platform, R> {
    /// Part of the ids the slot hands out: 1 at first, one more at each
    /// close. A slot closed at the last generation (`u32::MAX`) is retired,
    /// never reused, so no id can become valid again (after 2^32 OPEN/CLOSE
    /// cycles of one slot, the table has one slot fewer).
    generation: u32,
    entry: Option<Entry<P, K, R>>,
}

/// The session table. Everything in it is allocated with the device, so an
/// OPEN or a CLOSE allocates nothing here, and every operation under its
/// spin lock is O(1) in the table's size (finding a free slot, a file's
/// count): no scan of the slots at DISPATCH_LEVEL.
struct Table<P: SspiProvider, K: Platform, R> {
    slots: Vec<Slot<P, K, R>>,
    /// Indices of the free slots, a stack (lowest index on top at first).
    free: Vec<u32>,
    /// Sessions per file, for the files that have any, sorted by file
    /// (capacity: one per slot, the most there can be).
    files: Vec<(FileId, u32)>,
    open: u32,
}

impl<P: SspiProvider, K: Platform, R> Table<P, K, R> {
    fn new(size: u32) -> Self {
        Table {
            slots: (0..size)
                .map(|_| Slot {
                    generation: 1,
                    entry: None,
                })
                .collect(),
            free: (0..size).rev().collect(),
            files: Vec::with_capacity(size as usize),
            open: 0,
        }
    }

    /// The slot the next session takes (not taken yet).
    fn next_free(&self) -> Option<u32> {
        self.free.last().copied()
    }

    /// Put `entry` in slot `index`, the one [`Table::next_free`] gave.
    fn occupy(&mut self, index: u32, entry: Entry<P, K, R>) {
        debug_assert_eq!(self.free.last(), Some(&index));
        self.free.pop();
        let file = entry.file;
        self.slots[index as usize].entry = Some(entry);
        match self.files.binary_search_by_key(&file, |&(f, _)| f) {
            Ok(i) => self.files[i].1 += 1,
            // Within the capacity: every file listed holds a slot.
            Err(i) => self.files.insert(i, (file, 1)),
        }
        self.open += 1;
    }

    fn entry(&mut self, id: SessionId, file: FileId) -> Option<&mut Entry<P, K, R>> {
        let slot = self.slots.get_mut(id.slot() as usize)?;
        if slot.generation != id.generation() {
            return None;
        }
        slot.entry.as_mut().filter(|e| e.file == file)
    }

    fn entry_any_file(&mut self, id: SessionId) -> Option<&mut Entry<P, K, R>> {
        let slot = self.slots.get_mut(id.slot() as usize)?;
        if slot.generation != id.generation() {
            return None;
        }
        slot.entry.as_mut()
    }

    fn remove(&mut self, id: SessionId) -> Option<Entry<P, K, R>> {
        let slot = self.slots.get_mut(id.slot() as usize)?;
        if slot.generation != id.generation() {
            return None;
        }
        let entry = slot.entry.take()?;
        if let Some(next) = slot.generation.checked_add(1) {
            slot.generation = next;
            self.free.push(id.slot());
        }
        // else: retired (see `Slot::generation`).
        if let Ok(i) = self.files.binary_search_by_key(&entry.file, |&(f, _)| f) {
            self.files[i].1 -= 1;
            if self.files[i].1 == 0 {
                self.files.remove(i);
            }
        }
        self.open -= 1;
        Some(entry)
    }

    fn count(&self, file: FileId) -> u32 {
        match self.files.binary_search_by_key(&file, |&(f, _)| f) {
            Ok(i) => self.files[i].1,
            Err(_) => 0,
        }
    }
}

/// Credentials handles the device keeps between OPENs, by their parameters:
/// acquiring them (an async ksecdd call, and Schannel loading the
/// certificate's key) costs more than a handshake, so an OPEN that finds its
/// credentials here starts its session at once. Bounded (oldest out first);
/// emptied at unload, after which nothing is added.
struct CredentialCache<P: SspiProvider> {
    entries: Vec<(CredentialSpec, Arc<Credentials<P>>)>,
    closed: bool,
}

/// How many credentials handles the device keeps.
pub const CREDENTIAL_CACHE: usize = 8;

impl<P: SspiProvider> CredentialCache<P> {
    fn find(&self, spec: &CredentialSpec) -> Option<Arc<Credentials<P>>> {
        self.entries
            .iter()
            .find(|(s, _)| s == spec)
            .map(|(_, c)| c.clone())
    }

    /// Keep `credentials` for `spec`; returns what has to go (the oldest
    /// entry, or these if they are cached already or the cache is closed),
    /// to be dropped outside the lock.
    fn insert(
        &mut self,
        spec: CredentialSpec,
        credentials: Arc<Credentials<P>>,
    ) -> Option<(CredentialSpec, Arc<Credentials<P>>)> {
        if self.closed || self.entries.iter().any(|(s, _)| *s == spec) {
            return Some((spec, credentials));
        }
        let evicted = if self.entries.len() == CREDENTIAL_CACHE {
            Some(self.entries.remove(0))
        } else {
            None
        };
        self.entries.push((spec, credentials));
        evicted
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

/// The SECURITY_STATUS a step's outcome reports.
fn step_status(outcome: Outcome, missing: u32) -> (SecStatus, StepOutcome) {
    match outcome {
        Outcome::NeedInput { .. } if missing > 0 => {
            (SecStatus::SEC_E_INCOMPLETE_MESSAGE, StepOutcome::NeedInput)
        }
        Outcome::NeedInput { .. } => (SecStatus::SEC_I_CONTINUE_NEEDED, StepOutcome::NeedInput),
        Outcome::Established => (SecStatus::SEC_E_OK, StepOutcome::Established),
        Outcome::Failed(status) => (status, StepOutcome::Failed),
    }
}

/// What a record-layer refusal completes the request with: an NTSTATUS for a
/// request that does not fit the session's state, a reply carrying the
/// SECURITY_STATUS for a session whose TLS failed.
fn record_refusal(e: RecordError) -> Result<NtStatus, SecStatus> {
    match e {
        RecordError::Busy => Ok(STATUS_DEVICE_BUSY),
        RecordError::Closed => Ok(STATUS_INVALID_HANDLE),
        RecordError::NotEstablished | RecordError::PeerClosed | RecordError::ShutDown => {
            Ok(STATUS_INVALID_DEVICE_STATE)
        }
        RecordError::TooMuchInput => Ok(STATUS_QUOTA_EXCEEDED),
        RecordError::OutputTooSmall => Ok(STATUS_BUFFER_TOO_SMALL),
        RecordError::Failed(status) => Err(status),
    }
}

/// A [`RecordReply`] for a record-layer failure.
fn failed_record(status: SecStatus) -> RecordReply<'static> {
    RecordReply {
        status: status.0,
        outcome: RecordOutcome::Failed,
        missing: 0,
        renegotiations: 0,
        data: &[],
        output: &[],
    }
}

/// `SP_PROT_*` bits to disable for the ABI's allowed [`proto`] bits.
pub(crate) fn disabled_protocols(allowed: u32, server: bool) -> u32 {
    let (v12, v13) = if server {
        (SP_PROT_TLS1_2_SERVER, SP_PROT_TLS1_3_SERVER)
    } else {
        (SP_PROT_TLS1_2_CLIENT, SP_PROT_TLS1_3_CLIENT)
    };
    let mut disabled = 0;
    if allowed & proto::TLS12 == 0 {
        disabled |= v12;
    }
    if allowed & proto::TLS13 == 0 {
        disabled |= v13;
    }
    disabled
}

/// Encode `m` into `out`: the status and length to complete with (a reply
/// that does not fit is `STATUS_BUFFER_TOO_SMALL`, with nothing written).
fn write_reply<'a, M: Message<'a>>(out: &mut [u8], m: &M) -> (NtStatus, usize) {
    match encode(m, out) {
        Ok(n) => (STATUS_SUCCESS, n),
        Err(_) => (STATUS_BUFFER_TOO_SMALL, 0),
    }
}

/// Encode `m` into the request's output and complete it with `STATUS_SUCCESS`
/// (`STATUS_BUFFER_TOO_SMALL` if it does not fit).
pub(crate) fn complete_with<'a, M: Message<'a>, R: Request>(request: R, m: &M) {
    let mut buf = [0u8; 256];
    match encode(m, &mut buf) {
        Ok(n) if n <= request.output_capacity() => request.complete(STATUS_SUCCESS, &buf[..n]),
        _ => request.complete(STATUS_BUFFER_TOO_SMALL, &[]),
    }
}

impl<P: SspiProvider, K: Platform, R: Request> Shared<P, K, R> {
    fn info(&self, input: &[u8], request: R) {
        if !input.is_empty() {
            if let Err(e) = decode::<Empty>(input) {
                return request.complete(e.ntstatus(), &[]);
            }
        }
        let open = self.table.lock(&self.platform).open;
        let mut capabilities = caps::TLS12 | caps::TLS13 | caps::SELFTEST | caps::RECORD_LAYER;
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
    fn observed(&self) -> Observed {
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

    /// Most handshakes a self-test runs at once on this device: half its
    /// session limit (two sessions each), so a run never holds more sessions
    /// than the table can.
    fn selftest_concurrency(&self) -> u32 {
        (self.config.max_sessions / 2).max(1)
    }

    fn selftest(&self, file: FileId, input: &[u8], request: R, at: &Passive) {
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
        if request.output_capacity() < Header::LEN + 144 {
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

    fn open(self: &Arc<Self>, file: FileId, input: &[u8], request: R, at: &Passive) {
        let open = match decode::<OpenRequest>(input) {
            Ok(o) => o,
            Err(e) => return request.complete(e.ntstatus(), &[]),
        };
        if request.output_capacity() < Header::LEN + 16 {
            return request.complete(STATUS_BUFFER_TOO_SMALL, &[]);
        }
        let server = open.role == ksspi_abi::Role::Server;
        let spec = if server {
            let end = open
                .store
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(open.store.len());
            let store = core::str::from_utf8(&open.store[..end]).unwrap_or("MY");
            CredentialSpec::Server {
                thumbprint: open.thumbprint,
                store: String::from(if store.is_empty() { "MY" } else { store }),
                machine: true,
                disabled_protocols: disabled_protocols(open.protocols, true),
            }
        } else {
            CredentialSpec::Client {
                disabled_protocols: disabled_protocols(open.protocols, false),
                manual_validation: open.manual_validation,
            }
        };
        let role = if server {
            Role::Server
        } else {
            let target = core::str::from_utf8(open.target).unwrap_or_default();
            Role::Client {
                target: (!target.is_empty()).then(|| String::from(target)),
            }
        };
        let id = {
            let mut table = self.table.lock(&self.platform);
            if table.count(file) >= self.config.max_sessions_per_file {
                drop(table);
                return request.complete(STATUS_QUOTA_EXCEEDED, &[]);
            }
            let Some(index) = table.next_free() else {
                drop(table);
                return request.complete(STATUS_INSUFFICIENT_RESOURCES, &[]);
            };
            let id = SessionId::new(index, table.slots[index as usize].generation);
            let (request, serial) = match self.pend(request, file, id) {
                Ok(pended) => pended,
                Err(request) => {
                    drop(table);
                    return request.complete(STATUS_CANCELLED, &[]);
                }
            };
            table.occupy(
                index,
                Entry {
                    file,
                    phase: Phase::Opening,
                    session: None,
                    credentials: None,
                    pending: Some(request),
                    pending_serial: serial,
                    reply_len: 0,
                    in_sync_call: false,
                    writing: false,
                },
            );
            id
        };
        self.sessions_total.fetch_add(1, Ordering::Relaxed);
        let cached = self.credentials.lock(&self.platform).find(&spec);
        if let Some(credentials) = cached {
            return self.opened(id, role, Ok(credentials), None);
        }
        let device = Arc::downgrade(self);
        let keep = spec.clone();
        let done = Box::new(move |result: Result<Arc<Credentials<P>>, SecStatus>| {
            if let Some(device) = device.upgrade() {
                device.opened(id, role, result, Some(keep));
            } else if let Ok(cred) = result {
                drop(cred); // the device is gone: the handle releases itself
            }
        });
        let started = acquire_credentials(
            self.provider.clone(),
            self.platform.clone(),
            &spec,
            self.stats.clone(),
            done,
            at,
        );
        if let Err(status) = started {
            self.open_failed(id, status);
        }
    }

    /// The credentials for session `id` arrived (or did not), or were found
    /// in the cache: make the session and complete OPEN. Newly acquired ones
    /// are kept for later OPENs under `spec`. At PASSIVE_LEVEL.
    fn opened(
        self: &Arc<Self>,
        id: SessionId,
        role: Role,
        result: Result<Arc<Credentials<P>>, SecStatus>,
        spec: Option<CredentialSpec>,
    ) {
        let credentials = match result {
            Ok(c) => c,
            Err(status) => return self.open_failed(id, status),
        };
        if let Some(spec) = spec {
            let unwanted = self
                .credentials
                .lock(&self.platform)
                .insert(spec, credentials.clone());
            if let Some((_, old)) = unwanted {
                self.let_go(old); // outside the lock: it may release a handle
            }
        }
        let Some(at) = Passive::check(self.provider.current_irql()) else {
            // acquire_credentials reports at PASSIVE_LEVEL.
            return self.open_failed(id, SecStatus::SEC_E_INTERNAL_ERROR);
        };
        let events: Arc<dyn SessionEvents> = Arc::new(EntryEvents {
            device: Arc::downgrade(self),
            id,
        });
        let setup = SessionSetup {
            role,
            credentials: credentials.clone(),
            limits: self.config.limits,
            events,
        };
        let session = match Session::new(
            self.provider.clone(),
            self.platform.clone(),
            setup,
            self.stats.clone(),
            &at,
        ) {
            Ok(s) => Arc::new(s),
            Err(status) => {
                self.release(credentials, &at);
                return self.open_failed(id, status);
            }
        };
        let mut table = self.table.lock(&self.platform);
        let Some(entry) = table.entry_any_file(id) else {
            drop(table);
            session.close();
            return;
        };
        if entry.phase == Phase::Closing {
            // Closed or cancelled while opening: OPEN was completed then; the
            // session goes now and is removed when it reports closed.
            entry.session = Some(session.clone());
            entry.credentials = Some(credentials);
            drop(table);
            session.close();
            return;
        }
        entry.phase = Phase::Open;
        entry.session = Some(session);
        entry.credentials = Some(credentials);
        let request = entry.pending.take();
        drop(table);
        if let Some(request) = request {
            complete_with(
                request,
                &OpenReply {
                    status: 0,
                    session: id,
                },
            );
        }
    }

    fn open_failed(&self, id: SessionId, status: SecStatus) {
        let entry = self.table.lock(&self.platform).remove(id);
        if let Some(mut entry) = entry {
            if let Some(request) = entry.pending.take() {
                complete_with(
                    request,
                    &OpenReply {
                        status: status.0,
                        session: SessionId(0),
                    },
                );
            }
        }
    }

    /// [`Shared::release`] where the IRQL is not known to be PASSIVE (above
    /// it, the handle goes with its last holder).
    fn let_go(&self, credentials: Arc<Credentials<P>>) {
        if let Some(at) = Passive::check(self.provider.current_irql()) {
            self.release(credentials, &at);
        }
    }

    fn release(&self, credentials: Arc<Credentials<P>>, at: &Passive) {
        // Shared only with sessions, which are gone by now; if not, the last
        // holder's drop releases it.
        if let Ok(credentials) = Arc::try_unwrap(credentials) {
            let _ = release_credentials(
                self.provider.clone(),
                self.platform.clone(),
                credentials,
                self.stats.clone(),
                Box::new(|_| {}),
                at,
            );
        }
    }

    fn step(&self, file: FileId, input: &[u8], request: R, at: &Passive) {
        let step = match decode::<StepRequest>(input) {
            Ok(s) => s,
            Err(e) => return request.complete(e.ntstatus(), &[]),
        };
        if request.output_capacity() < step_reply_capacity(self.config.limits.max_output) {
            return request.complete(STATUS_BUFFER_TOO_SMALL, &[]);
        }
        let Some(session) = self.pend_on(file, step.session, request) else {
            return;
        };
        if let Err(e) = session.step(step.input, at) {
            let status = match e {
                StepError::Busy => STATUS_DEVICE_BUSY,
                StepError::Closed => STATUS_INVALID_HANDLE,
                StepError::Finished => STATUS_INVALID_DEVICE_REQUEST,
                StepError::TooMuchInput => STATUS_QUOTA_EXCEEDED,
            };
            self.unpend(file, step.session, Ok(status));
        }
    }

    /// Hand `request` to the glue as pended under a fresh key (under the
    /// table lock); a request already cancelled comes back as `Err`, for the
    /// caller to complete with `STATUS_CANCELLED` once it has let go of the
    /// lock.
    fn pend(&self, mut request: R, file: FileId, session: SessionId) -> Result<(R, u64), R> {
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
    fn pend_on(&self, file: FileId, id: SessionId, request: R) -> Option<Arc<Session<P, K>>> {
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
    fn unpend(&self, file: FileId, id: SessionId, refusal: Result<NtStatus, SecStatus>) {
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

    fn encrypt(&self, file: FileId, input: &[u8], mut request: R, at: &Passive) {
        let EncryptRequest(m) = match decode::<EncryptRequest>(input) {
            Ok(m) => m,
            Err(e) => return request.complete(e.ntstatus(), &[]),
        };
        if request.output_capacity() < encrypt_reply_capacity(m.bytes.len()) {
            return request.complete(STATUS_BUFFER_TOO_SMALL, &[]);
        }
        // The records are sealed straight into the request's output. The
        // session is free again before the request completes: the caller
        // woken by the completion may send its next request at once.
        let session = match self.begin_sync(file, m.session) {
            Ok(s) => s,
            Err(status) => return request.complete(status, &[]),
        };
        let (status, len) = self.encrypt_into(file, &m, &session, request.output(), at);
        self.end_sync(file, m.session);
        request.complete_written(status, len);
    }

    /// ENCRYPT's reply written into `out`: the status and length to complete
    /// the request with.
    fn encrypt_into(
        &self,
        file: FileId,
        m: &RecordRequest<'_>,
        session: &Session<P, K>,
        out: &mut [u8],
        at: &Passive,
    ) -> (NtStatus, usize) {
        let Some((head, tail)) = out.split_at_mut_checked(EncryptReply::DATA_OFFSET) else {
            return (STATUS_BUFFER_TOO_SMALL, 0);
        };
        match session.encrypt(m.bytes, tail, at) {
            Ok(sealed) => {
                let n = sealed.len;
                let reply = EncryptReply {
                    status: 0,
                    records: sealed.records as u32,
                    output: &tail[..n],
                };
                match encode_prefix(&reply, head) {
                    Ok(EncryptReply::DATA_OFFSET) => {
                        (STATUS_SUCCESS, EncryptReply::DATA_OFFSET + n)
                    }
                    _ => (STATUS_BUFFER_TOO_SMALL, 0),
                }
            }
            Err(e) => match record_refusal(self.sync_refusal(file, m.session, e)) {
                Ok(status) => (status, 0),
                Err(status) => write_reply(
                    out,
                    &EncryptReply {
                        status: status.0,
                        records: 0,
                        output: &[],
                    },
                ),
            },
        }
    }

    /// Start a synchronous request (ENCRYPT, QUERY) on an open session: it
    /// writes its reply into its own output at PASSIVE_LEVEL outside the
    /// table lock, and until [`Shared::end_sync`] the session's other
    /// requests are refused as busy.
    fn begin_sync(&self, file: FileId, id: SessionId) -> Result<Arc<Session<P, K>>, NtStatus> {
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
    fn sync_refusal(&self, file: FileId, id: SessionId, e: RecordError) -> RecordError {
        let mut table = self.table.lock(&self.platform);
        match table.entry(id, file) {
            Some(entry) if entry.phase == Phase::Open => e,
            _ if e == RecordError::Busy => RecordError::Closed,
            _ => e,
        }
    }

    /// The synchronous request is done (the session may be gone meanwhile).
    fn end_sync(&self, file: FileId, id: SessionId) {
        let mut table = self.table.lock(&self.platform);
        if let Some(entry) = table.entry(id, file) {
            entry.in_sync_call = false;
        }
    }

    fn query(&self, file: FileId, input: &[u8], mut request: R, at: &Passive) {
        let m = match decode::<QueryRequest>(input) {
            Ok(m) => m,
            Err(e) => return request.complete(e.ntstatus(), &[]),
        };
        if request.output_capacity() < QUERY_REPLY_CAPACITY {
            return request.complete(STATUS_BUFFER_TOO_SMALL, &[]);
        }
        let session = match self.begin_sync(file, m.session) {
            Ok(s) => s,
            Err(status) => return request.complete(status, &[]),
        };
        let (status, len) = self.query_into(file, m.session, &session, request.output(), at);
        self.end_sync(file, m.session);
        request.complete_written(status, len);
    }

    /// QUERY's reply written into `out`, the leaf certificate copied straight
    /// in: the status and length to complete the request with.
    fn query_into(
        &self,
        file: FileId,
        id: SessionId,
        session: &Session<P, K>,
        out: &mut [u8],
        at: &Passive,
    ) -> (NtStatus, usize) {
        let offset = QUERY_REPLY_CAPACITY - MAX_PEER_CERTIFICATE;
        let Some((head, tail)) = out
            .get_mut(..QUERY_REPLY_CAPACITY)
            .map(|out| out.split_at_mut(offset))
        else {
            return (STATUS_BUFFER_TOO_SMALL, 0);
        };
        match session.describe(tail, at) {
            Ok(info) => {
                let c = info.connection.unwrap_or_default();
                let sizes = info.sizes;
                let reply = QueryReply {
                    protocol: c.dwProtocol,
                    cipher: c.aiCipher,
                    cipher_strength: c.dwCipherStrength,
                    hash: c.aiHash,
                    hash_strength: c.dwHashStrength,
                    exchange: c.aiExch,
                    exchange_strength: c.dwExchStrength,
                    header: sizes.map_or(0, |s| s.header as u32),
                    trailer: sizes.map_or(0, |s| s.trailer as u32),
                    max_message: sizes.map_or(0, |s| s.max_message as u32),
                    peer_certificates: info.peer_certificates,
                    leaf_size: info.leaf_size as u32,
                    leaf: &tail[..info.leaf_len],
                };
                match encode_prefix(&reply, head) {
                    Ok(n) if n == offset => (STATUS_SUCCESS, n + info.leaf_len),
                    _ => (STATUS_BUFFER_TOO_SMALL, 0),
                }
            }
            Err(e) => match record_refusal(self.sync_refusal(file, id, e)) {
                Ok(status) => (status, 0),
                Err(_) => (STATUS_INVALID_DEVICE_STATE, 0),
            },
        }
    }

    fn decrypt(&self, file: FileId, input: &[u8], request: R, at: &Passive) {
        match decode::<DecryptRequest>(input) {
            Ok(DecryptRequest(m)) => {
                self.record_move(file, m.session, request, |s| s.decrypt(m.bytes, at))
            }
            Err(e) => request.complete(e.ntstatus(), &[]),
        }
    }

    fn shutdown(&self, file: FileId, input: &[u8], request: R, at: &Passive) {
        match decode::<ShutdownRequest>(input) {
            Ok(m) => self.record_move(file, m.session, request, |s| s.shutdown(at)),
            Err(e) => request.complete(e.ntstatus(), &[]),
        }
    }

    /// DECRYPT and SHUTDOWN: check the output buffer, pend the request on
    /// the session, start the engine's move (`start`); a refusal completes
    /// the request at once.
    fn record_move(
        &self,
        file: FileId,
        id: SessionId,
        request: R,
        start: impl FnOnce(&Session<P, K>) -> Result<(), RecordError>,
    ) {
        let limits = &self.config.limits;
        if request.output_capacity() < record_reply_capacity(limits.max_input, limits.max_output) {
            return request.complete(STATUS_BUFFER_TOO_SMALL, &[]);
        }
        let Some(session) = self.pend_on(file, id, request) else {
            return;
        };
        if let Err(e) = start(&session) {
            self.unpend(file, id, record_refusal(e));
        }
    }

    fn close(&self, file: FileId, input: &[u8], request: R) {
        let close = match decode::<CloseRequest>(input) {
            Ok(c) => c,
            Err(e) => return request.complete(e.ntstatus(), &[]),
        };
        if request.output_capacity() < Header::LEN {
            return request.complete(STATUS_BUFFER_TOO_SMALL, &[]);
        }
        let (session, opening) = {
            let mut table = self.table.lock(&self.platform);
            let Some(entry) = table
                .entry(close.session, file)
                .filter(|e| e.phase != Phase::Closing)
            else {
                drop(table);
                return request.complete(STATUS_INVALID_HANDLE, &[]);
            };
            entry.begin_close()
        };
        end_close(session, opening);
        complete_with(request, &Empty);
    }

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

impl<P: SspiProvider, K: Platform, R: Request> Shared<P, K, R> {
    /// Encode a move's reply straight into the output of the request pended
    /// for it (none: cancelled meanwhile, nothing to write), for
    /// `step_ready` to complete. The reply (up to about 128 KiB) is written
    /// at PASSIVE_LEVEL outside the table lock: the request leaves the entry
    /// meanwhile (`writing` keeps the session busy), and a cancel that comes
    /// then finds it gone, as one racing its completion does.
    fn write_reply<'a, M: Message<'a>>(&self, id: SessionId, reply: &M) {
        let taken = {
            let mut table = self.table.lock(&self.platform);
            table.entry_any_file(id).and_then(|entry| {
                entry.reply_len = 0;
                let request = entry.pending.take();
                entry.writing = request.is_some();
                request
            })
        };
        let Some(mut request) = taken else {
            return;
        };
        let len = encode(reply, request.output()).unwrap_or(0);
        let orphan = {
            let mut table = self.table.lock(&self.platform);
            match table.entry_any_file(id) {
                Some(entry) => {
                    entry.writing = false;
                    entry.reply_len = len;
                    entry.pending = Some(request);
                    None
                }
                // Not possible: the entry goes only once the session has
                // closed, after this move's report.
                None => Some(request),
            }
        };
        if let Some(request) = orphan {
            request.complete(STATUS_CANCELLED, &[]);
        }
    }
}

/// A session's events, routed to its table entry.
struct EntryEvents<P: SspiProvider, K: Platform, R: Request> {
    device: Weak<Shared<P, K, R>>,
    id: SessionId,
}

impl<P: SspiProvider, K: Platform, R: Request> SessionEvents for EntryEvents<P, K, R> {
    fn step_done(&self, report: &StepReport<'_>) {
        let Some(device) = self.device.upgrade() else {
            return;
        };
        let missing = match report.outcome {
            Outcome::NeedInput { missing } => missing,
            _ => 0,
        };
        let (status, outcome) = step_status(report.outcome, missing);
        match report.outcome {
            Outcome::Established => device.handshakes_ok.fetch_add(1, Ordering::Relaxed),
            Outcome::Failed(_) => device.handshakes_failed.fetch_add(1, Ordering::Relaxed),
            Outcome::NeedInput { .. } => 0,
        };
        let reply = StepReply {
            status: status.0,
            outcome,
            missing,
            extra: report.leftover as u32,
            protocol: report.connection.map_or(0, |c| c.dwProtocol),
            cipher: report.connection.map_or(0, |c| c.aiCipher),
            output: report.output,
        };
        device.write_reply(self.id, &reply);
    }

    fn record_done(&self, report: &RecordReport<'_>) {
        let Some(device) = self.device.upgrade() else {
            return;
        };
        let (status, outcome, missing) = match report.outcome {
            ksspi::engine::RecordOutcome::Data { missing } => (
                if missing > 0 {
                    SecStatus::SEC_E_INCOMPLETE_MESSAGE
                } else {
                    SecStatus::SEC_E_OK
                },
                RecordOutcome::Data,
                missing,
            ),
            ksspi::engine::RecordOutcome::PeerClosed => (
                SecStatus::SEC_I_CONTEXT_EXPIRED,
                RecordOutcome::PeerClosed,
                0,
            ),
            ksspi::engine::RecordOutcome::ShutDown => {
                (SecStatus::SEC_E_OK, RecordOutcome::ShutDown, 0)
            }
            ksspi::engine::RecordOutcome::Failed(status) => (status, RecordOutcome::Failed, 0),
        };
        let reply = RecordReply {
            status: status.0,
            outcome,
            missing,
            renegotiations: report.renegotiations,
            data: report.data,
            output: report.output,
        };
        device.write_reply(self.id, &reply);
    }

    fn step_ready(&self) {
        let Some(device) = self.device.upgrade() else {
            return;
        };
        let ready = {
            let mut table = device.table.lock(&device.platform);
            table.entry_any_file(self.id).and_then(|entry| {
                let len = core::mem::take(&mut entry.reply_len);
                entry.pending.take().map(|request| (request, len))
            })
        };
        // Completed outside the table lock.
        match ready {
            Some((request, 0)) => request.complete(STATUS_BUFFER_TOO_SMALL, &[]),
            Some((request, n)) => request.complete_written(STATUS_SUCCESS, n),
            None => {}
        }
    }

    fn closed(&self) {
        let Some(device) = self.device.upgrade() else {
            return;
        };
        let entry = device.table.lock(&device.platform).remove(self.id);
        let Some(mut entry) = entry else {
            return;
        };
        match (entry.pending.take(), entry.reply_len) {
            // Cut short by the close.
            (Some(request), 0) => request.complete(STATUS_CANCELLED, &[]),
            // The close came between the move's report and `step_ready`:
            // the move is over and its reply written; deliver it.
            (Some(request), n) => request.complete_written(STATUS_SUCCESS, n),
            (None, _) => {}
        }
        drop(entry.session.take());
        if let (Some(credentials), Some(at)) = (
            entry.credentials.take(),
            Passive::check(device.provider.current_irql()),
        ) {
            device.release(credentials, &at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ksspi_sim::{SimPlatform, SimProvider};

    type TestTable = Table<SimProvider, SimPlatform, ()>;

    /// An OPEN's part in the table: the next free slot, occupied.
    fn open(table: &mut TestTable, file: FileId) -> SessionId {
        let index = table.next_free().expect("a free slot");
        let id = SessionId::new(index, table.slots[index as usize].generation);
        table.occupy(
            index,
            Entry {
                file,
                phase: Phase::Open,
                session: None,
                credentials: None,
                pending: None,
                pending_serial: 0,
                reply_len: 0,
                in_sync_call: false,
                writing: false,
            },
        );
        id
    }

    #[test]
    fn a_slot_at_its_last_generation_retires_so_no_stale_id_comes_back() {
        // Slot 0 two closes short of the wrap (as after 2^32 - 3 OPEN/CLOSE
        // cycles); the free list is LIFO, so slot 0 is taken every time.
        let mut table = TestTable::new(2);
        table.slots[0].generation = u32::MAX - 1;
        let file = FileId(1);
        let a = open(&mut table, file);
        assert_eq!(a, SessionId::new(0, u32::MAX - 1));
        assert!(table.remove(a).is_some());
        let b = open(&mut table, file);
        assert_eq!(b, SessionId::new(0, u32::MAX));
        assert!(table.remove(b).is_some());
        // Slot 0 has no generation left: it is retired, not reused with a
        // wrapped generation that would make old ids valid again.
        let c = open(&mut table, file);
        assert_eq!(c.slot(), 1, "the retired slot was reused");
        for stale in [a, b, SessionId::new(0, 0), SessionId::new(0, 1)] {
            assert!(table.entry(stale, file).is_none(), "{stale:?}");
            assert!(table.remove(stale).is_none(), "{stale:?}");
        }
        assert!(table.remove(c).is_some());
        assert_eq!(table.free, [1], "slot 0 stays out of the free list");
        assert_eq!((table.open, table.count(file)), (0, 0));
    }
}
