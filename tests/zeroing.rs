//! Plaintext does not outlive its session in pool memory (docs/RELIABILITY.md, "Kernel hardening", item
//! 5): a session's buffers are zeroed before they are freed, including the
//! smaller one a buffer leaves behind when it grows. The model cannot see
//! the kernel's pool, so this test's allocator looks instead: it notes
//! every block allocated inside the platform's `reserve` (a session
//! buffer, whatever its size: they are sized to need), and scans each as it
//! is freed for the plaintext a DECRYPT opened in place there.

mod common;

use common::*;
use ksspi_abi::*;
use ksspi_driver::device::DeviceConfig;
use ksspi_driver::ntstatus::*;
use ksspi_sim::{Completion, CompletionPolicy};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// A marker no TLS record or handshake message contains by chance.
const MARK: &[u8; 16] = b"ksspi plaintext!";

static SCANNING: AtomicBool = AtomicBool::new(false);
static SCANNED: AtomicUsize = AtomicUsize::new(0);
static FOUND: AtomicUsize = AtomicUsize::new(0);
/// The session buffers alive (their addresses; 0 is a free entry).
static WATCHED: [AtomicUsize; 256] = [const { AtomicUsize::new(0) }; 256];

struct Scanner;

// SAFETY: every call goes straight to the system allocator; the scan only
// reads a block the caller is freeing (`layout.size()` bytes it owns).
unsafe impl GlobalAlloc for Scanner {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() && ksspi_sim::platform::in_reserve() {
            let noted = WATCHED.iter().any(|w| {
                w.compare_exchange(0, ptr as usize, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            });
            assert!(noted, "more session buffers alive than the test watches");
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let watched = WATCHED.iter().any(|w| {
            w.compare_exchange(ptr as usize, 0, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        });
        if watched && SCANNING.load(Ordering::Relaxed) {
            // SAFETY: the block being freed: `layout.size()` bytes at `ptr`,
            // allocated (so readable) and not yet returned. Bytes never
            // written read as whatever the allocator left, which is fine for
            // a search.
            let block = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
            SCANNED.fetch_add(1, Ordering::Relaxed);
            if block.windows(MARK.len()).any(|w| w == MARK) {
                FOUND.fetch_add(1, Ordering::Relaxed);
            }
        }
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Scanner = Scanner;

#[test]
fn a_sessions_buffers_hold_no_plaintext_when_freed() {
    let w = world(
        CompletionPolicy::Always(Completion::Sync),
        DeviceConfig::default(),
    );
    let file = w.dev.open_file();
    let (_, server) = w.open(file, Role::Server, b"");
    let (_, client) = w.open(file, Role::Client, b"localhost");
    let mut to_client = establish(&w, file, server.session, client.session);
    SCANNING.store(true, Ordering::SeqCst);
    // A small read, then a larger one: the client's input grows, and the
    // block it leaves held the first read's plaintext.
    for n in [3000, 40_000] {
        let plaintext: Vec<u8> = MARK.iter().copied().cycle().take(n).collect();
        to_client.extend_from_slice(&w.seal(file, server.session, &plaintext));
        let (st, reply) = w.decrypt(file, client.session, &to_client);
        assert_eq!(st, STATUS_SUCCESS);
        assert_eq!(decode::<RecordReply>(&reply).unwrap().data, &plaintext[..]);
        to_client.clear();
    }
    assert_eq!(w.close(file, server.session), STATUS_SUCCESS);
    assert_eq!(w.close(file, client.session), STATUS_SUCCESS);
    w.finish();
    SCANNING.store(false, Ordering::SeqCst);
    // The client's input twice: the block it grew out of, and its last one
    // at the close (the handshake's buffers went back before the scan).
    let scanned = SCANNED.load(Ordering::SeqCst);
    assert!(scanned >= 2, "{scanned} session buffers scanned");
    assert_eq!(
        FOUND.load(Ordering::SeqCst),
        0,
        "plaintext left in a freed session buffer"
    );
}
