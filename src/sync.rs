//! Locks whose holders cannot leave the data half-changed, so a panic elsewhere does not poison
//! them for the rest of the process.

use std::sync::{Mutex, MutexGuard, PoisonError};

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
