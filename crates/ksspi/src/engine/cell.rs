//! A cell whose contents only the session's current owner touches.
//!
//! [`super::sync::Ownership`] and [`super::sync::Handoff`] already make one
//! party at a time the owner of a session's state; this cell turns that
//! protocol into checked access: taking it while someone else holds it is a
//! protocol bug and stops (in the kernel, a bugcheck), it never waits.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, Ordering};

/// The session state, for its owner only.
pub struct OwnedCell<T> {
    held: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: access to `value` is exclusive through `take` (an atomic flag), so
// sharing the cell across threads shares nothing unsynchronised.
unsafe impl<T: Send> Sync for OwnedCell<T> {}
// SAFETY: as above; the cell owns its value.
unsafe impl<T: Send> Send for OwnedCell<T> {}

/// Exclusive access, released on drop.
pub struct Held<'a, T> {
    cell: &'a OwnedCell<T>,
}

impl<T> OwnedCell<T> {
    /// A cell around `value`.
    pub fn new(value: T) -> Self {
        OwnedCell {
            held: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// Take exclusive access. Panics if someone holds it: the ownership
    /// protocol guarantees that never happens.
    #[track_caller]
    pub fn take(&self) -> Held<'_, T> {
        if self.held.swap(true, Ordering::Acquire) {
            panic!("ksspi engine: session state taken by two owners at once");
        }
        Held { cell: self }
    }
}

impl<T> Deref for Held<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: `held` is set: this guard is the only access.
        unsafe { &*self.cell.value.get() }
    }
}

impl<T> DerefMut for Held<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as above, and `&mut self` makes the borrow unique.
        unsafe { &mut *self.cell.value.get() }
    }
}

impl<T> Drop for Held<'_, T> {
    fn drop(&mut self) {
        self.cell.held.store(false, Ordering::Release);
    }
}
