//! The crate's one rule for a poisoned lock: take it anyway.
//!
//! A lock is poisoned when a thread panicked while holding it. Every lock here guards data that
//! each holder leaves whole between statements (counters, maps, queues, a flag), and the
//! daemon's threads must keep serving (`/healthz`, the fill log, the order path) after a panic
//! elsewhere has been reported, so the guard is taken as it is rather than passed on as a second
//! panic. A leaf: every layer locks.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

/// `Mutex::lock` that takes the guard of a poisoned lock too.
pub trait LockAnyway<T: ?Sized> {
    fn lock_anyway(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> LockAnyway<T> for Mutex<T> {
    fn lock_anyway(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The read and write halves of [`LockAnyway`] for an `RwLock`.
pub trait RwLockAnyway<T: ?Sized> {
    fn read_anyway(&self) -> RwLockReadGuard<'_, T>;
    fn write_anyway(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T: ?Sized> RwLockAnyway<T> for RwLock<T> {
    fn read_anyway(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(PoisonError::into_inner)
    }
    fn write_anyway(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `Condvar::wait_timeout` that hands back the guard of a poisoned lock too (whether it timed
/// out does not matter to any caller: each checks its own deadline).
pub trait WaitAnyway {
    fn wait_timeout_anyway<'a, T>(&self, guard: MutexGuard<'a, T>, timeout: Duration) -> MutexGuard<'a, T>;
    /// `Condvar::wait`, the same way.
    fn wait_anyway<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T>;
}

impl WaitAnyway for Condvar {
    fn wait_timeout_anyway<'a, T>(&self, guard: MutexGuard<'a, T>, timeout: Duration) -> MutexGuard<'a, T> {
        self.wait_timeout(guard, timeout).unwrap_or_else(PoisonError::into_inner).0
    }

    fn wait_anyway<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        self.wait(guard).unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_lock_poisoned_by_a_panic_is_taken_with_its_data() {
        let m = Arc::new(Mutex::new(1));
        let l = Arc::new(RwLock::new(2));
        let (m2, l2) = (m.clone(), l.clone());
        let panicked = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            let _w = l2.write().unwrap();
            panic!("poisons both");
        })
        .join();
        assert!(panicked.is_err() && m.is_poisoned() && l.is_poisoned());
        *m.lock_anyway() += 1;
        assert_eq!(*m.lock_anyway(), 2);
        *l.write_anyway() += 1;
        assert_eq!(*l.read_anyway(), 3);
        let cv = Condvar::new();
        assert_eq!(*cv.wait_timeout_anyway(m.lock_anyway(), Duration::from_millis(1)), 2);
    }
}
