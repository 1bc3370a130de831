//! A spin lock for the device engine's tables: a kernel spin lock
//! (`KSPIN_LOCK`, taken through [`Platform::acquire_spin_lock`]: on Windows
//! `KeAcquireSpinLockRaiseToDpc`, which Driver Verifier tracks), held at
//! DISPATCH_LEVEL so a cancel routine at DISPATCH can take it safely. Nothing
//! that needs PASSIVE may run while it is held (the model stops the test if
//! something does).

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use ksspi::engine::{Platform, SpinWord};
use ksspi::Irql;

/// A spin lock around `T`.
pub struct SpinLock<T> {
    word: SpinWord,
    value: UnsafeCell<T>,
}

// SAFETY: the value is only reached through a guard, which the kernel spin
// lock makes exclusive.
unsafe impl<T: Send> Sync for SpinLock<T> {}
// SAFETY: the lock owns its value (no reference into it outlives a guard,
// which borrows the lock), so sending the lock sends a `T: Send`.
unsafe impl<T: Send> Send for SpinLock<T> {}

/// The held lock; dropping it releases the lock and lowers the IRQL.
pub struct SpinGuard<'a, T, K: Platform> {
    lock: &'a SpinLock<T>,
    platform: &'a K,
    old: Irql,
}

impl<T> SpinLock<T> {
    /// A lock around `value`.
    pub const fn new(value: T) -> Self {
        SpinLock {
            word: SpinWord::new(),
            value: UnsafeCell::new(value),
        }
    }

    /// Raise to DISPATCH_LEVEL and take the lock (at IRQL <= DISPATCH_LEVEL).
    pub fn lock<'a, K: Platform>(&'a self, platform: &'a K) -> SpinGuard<'a, T, K> {
        let old = platform.acquire_spin_lock(&self.word);
        SpinGuard {
            lock: self,
            platform,
            old,
        }
    }
}

impl<T, K: Platform> Deref for SpinGuard<'_, T, K> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock: no other reference exists.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T, K: Platform> DerefMut for SpinGuard<'_, T, K> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the lock, so no other guard exists, and
        // `&mut self` makes this the only borrow through this one.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T, K: Platform> Drop for SpinGuard<'_, T, K> {
    fn drop(&mut self) {
        // SAFETY: this guard took the lock through the same platform, which
        // returned `old`; the guard is dropped once.
        unsafe { self.platform.release_spin_lock(&self.lock.word, self.old) };
    }
}
