//! The session table: one [`Slot`] per session the device allows, each with
//! its generation (part of the ids it hands out; a slot retires at the last
//! one), a stack of the free slots, the sessions per file, and what an
//! [`Entry`] records of its session (its phase, its pended request, whether a
//! synchronous request or a reply being written holds it). Closing a session
//! starts under the table lock ([`Entry::begin_close`]) and ends outside it
//! ([`end_close`]).

use super::request::{FileId, Request};
use crate::ntstatus::*;
use alloc::sync::Arc;
use alloc::vec::Vec;
use ksspi::engine::{Platform, Session};
use ksspi::handle::Credentials;
use ksspi::provider::SspiProvider;
use ksspi_abi::SessionId;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    Opening,
    Open,
    Closing,
}

pub(super) struct Entry<P: SspiProvider, K: Platform, R> {
    pub(super) file: FileId,
    pub(super) phase: Phase,
    pub(super) session: Option<Arc<Session<P, K>>>,
    pub(super) credentials: Option<Arc<Credentials<P>>>,
    pub(super) pending: Option<R>,
    pub(super) pending_serial: u64,
    /// The length of the reply written into the pending request's output
    /// (by `step_done` / `record_done`, for `step_ready` to complete).
    pub(super) reply_len: usize,
    /// A synchronous request (ENCRYPT, QUERY) is working on the session
    /// outside the table lock.
    pub(super) in_sync_call: bool,
    /// The pending request is out of the entry while its reply is written
    /// into it outside the table lock (`Shared::write_reply`).
    pub(super) writing: bool,
    /// The session was opened with OPEN's fourth layout: QUERY tells
    /// whether its handshake resumed (an older harness reads 0 there).
    pub(super) reports_resumption: bool,
}

impl<P: SspiProvider, K: Platform, R> Entry<P, K, R> {
    /// Mark the entry closing (under the table lock); returns the session to
    /// close and a pending OPEN to cancel, for [`end_close`] outside the lock.
    pub(super) fn begin_close(&mut self) -> (Option<Arc<Session<P, K>>>, Option<R>) {
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
pub(super) fn end_close<P: SspiProvider, K: Platform, R: Request>(
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

pub(super) struct Slot<P: SspiProvider, K: Platform, R> {
    /// Part of the ids the slot hands out: 1 at first, one more at each
    /// close. A slot closed at the last generation (`u32::MAX`) is retired,
    /// never reused, so no id can become valid again (after 2^32 OPEN/CLOSE
    /// cycles of one slot, the table has one slot fewer).
    pub(super) generation: u32,
    pub(super) entry: Option<Entry<P, K, R>>,
}

/// The session table. Everything in it is allocated with the device, so an
/// OPEN or a CLOSE allocates nothing here, and every operation under its
/// spin lock is O(1) in the table's size (finding a free slot, a file's
/// count): no scan of the slots at DISPATCH_LEVEL.
pub(super) struct Table<P: SspiProvider, K: Platform, R> {
    pub(super) slots: Vec<Slot<P, K, R>>,
    /// Indices of the free slots, a stack (lowest index on top at first).
    pub(super) free: Vec<u32>,
    /// Sessions per file, for the files that have any, sorted by file
    /// (capacity: one per slot, the most there can be).
    pub(super) files: Vec<(FileId, u32)>,
    pub(super) open: u32,
}

impl<P: SspiProvider, K: Platform, R> Table<P, K, R> {
    pub(super) fn new(size: u32) -> Self {
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
    pub(super) fn next_free(&self) -> Option<u32> {
        self.free.last().copied()
    }

    /// Put `entry` in slot `index`, the one [`Table::next_free`] gave.
    pub(super) fn occupy(&mut self, index: u32, entry: Entry<P, K, R>) {
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

    pub(super) fn entry(&mut self, id: SessionId, file: FileId) -> Option<&mut Entry<P, K, R>> {
        let slot = self.slots.get_mut(id.slot() as usize)?;
        if slot.generation != id.generation() {
            return None;
        }
        slot.entry.as_mut().filter(|e| e.file == file)
    }

    pub(super) fn entry_any_file(&mut self, id: SessionId) -> Option<&mut Entry<P, K, R>> {
        let slot = self.slots.get_mut(id.slot() as usize)?;
        if slot.generation != id.generation() {
            return None;
        }
        slot.entry.as_mut()
    }

    pub(super) fn remove(&mut self, id: SessionId) -> Option<Entry<P, K, R>> {
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

    pub(super) fn count(&self, file: FileId) -> u32 {
        match self.files.binary_search_by_key(&file, |&(f, _)| f) {
            Ok(i) => self.files[i].1,
            Err(_) => 0,
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
                reports_resumption: false,
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
