//! Locking a `std::sync::Mutex` whose earlier holder panicked.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, taking the guard even if a holder panicked: every value kept
/// behind these mutexes is updated by plain assignments or inserts that leave it
/// consistent at every step, so a panic elsewhere must not take the lock (and
/// every request that needs it) down with it.
///
/// Runs wherever such a mutex is locked; returns its guard.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
