//! A spin lock for the device engine's tables: held at DISPATCH_LEVEL (raised
//! through the platform, `KeRaiseIrql` on Windows), so a cancel routine at
//! DISPATCH can take it safely. Nothing that needs PASSIVE may run while it is
//! held (the model stops the test if something does).

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, Ordering};
use ksspi::engine::Platform;
use ksspi::Irql;

/// Spins before a waiter pauses through [`Platform::spin_wait`].
const SPINS_BEFORE_WAIT: u32 = 128;

/// A spin lock around `T`.
pub struct SpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the value is only reached through a guard, which the atomic flag
// makes exclusive.
unsafe impl<T: Send> Sync for SpinLock<T> {}
// SAFETY: as above; the lock owns its value.
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
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// Raise to DISPATCH_LEVEL and take the lock. A waiter spins on a plain
    /// read (test-and-test-and-set, so waiters do not fight over the cache
    /// line), and after a while pauses through [`Platform::spin_wait`].
    pub fn lock<'a, K: Platform>(&'a self, platform: &'a K) -> SpinGuard<'a, T, K> {
        let old = platform.raise_to_dispatch();
        let mut spins = 0u32;
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            while self.locked.load(Ordering::Relaxed) {
                spins = spins.saturating_add(1);
                if spins < SPINS_BEFORE_WAIT {
                    core::hint::spin_loop();
                } else {
                    platform.spin_wait();
                }
            }
        }
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
        // SAFETY: as above, and `&mut self` makes the borrow unique.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T, K: Platform> Drop for SpinGuard<'_, T, K> {
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
        self.platform.lower_irql(self.old);
    }
}
