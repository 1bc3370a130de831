//! Plaintext does not outlive its session in pool memory (docs/RELIABILITY.md, "Kernel hardening", item
//! 5): a session's buffers are zeroed before they are freed. The model
//! cannot see the kernel's pool, so this test's allocator looks instead: it
//! scans every block of a session buffer's size (64 KiB, the default
//! limits' input and output) as it is freed, for the plaintext a DECRYPT
//! opened in place there.

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
/// The size of the blocks scanned: a session's input buffer.
const WATCHED: usize = 64 * 1024;

static SCANNING: AtomicBool = AtomicBool::new(false);
static SCANNED: AtomicUsize = AtomicUsize::new(0);
static FOUND: AtomicUsize = AtomicUsize::new(0);

struct Scanner;

// SAFETY: every call goes straight to the system allocator; the scan only
// reads a block the caller is freeing (`layout.size()` bytes it owns).
unsafe impl GlobalAlloc for Scanner {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() == WATCHED && SCANNING.load(Ordering::Relaxed) {
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
    let plaintext: Vec<u8> = MARK.iter().copied().cycle().take(3000).collect();
    SCANNING.store(true, Ordering::SeqCst);
    to_client.extend_from_slice(&w.seal(file, server.session, &plaintext));
    let (st, reply) = w.decrypt(file, client.session, &to_client);
    assert_eq!(st, STATUS_SUCCESS);
    assert_eq!(decode::<RecordReply>(&reply).unwrap().data, &plaintext[..]);
    assert_eq!(w.close(file, server.session), STATUS_SUCCESS);
    assert_eq!(w.close(file, client.session), STATUS_SUCCESS);
    w.finish();
    SCANNING.store(false, Ordering::SeqCst);
    // Both sessions' input and output buffers went by.
    assert!(SCANNED.load(Ordering::SeqCst) >= 4);
    assert_eq!(
        FOUND.load(Ordering::SeqCst),
        0,
        "plaintext left in a freed session buffer"
    );
}
