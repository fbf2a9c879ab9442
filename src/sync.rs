//! The synchronisation primitives of the tables that request threads share
//! (open handles and backing ids, proofs of file versions): std's, or
//! Shuttle's under the `shuttle` feature, so that `cargo test --features
//! shuttle` model-checks their interleavings (as mountpoint-s3's `sync.rs`).

#[cfg(feature = "shuttle")]
pub(crate) use shuttle::sync::{Mutex, MutexGuard};
#[cfg(not(feature = "shuttle"))]
pub(crate) use std::sync::{Mutex, MutexGuard};

/// A value set once, by the first caller of [`Once::get_or_init`]; later
/// callers wait for it (as `std::sync::OnceLock`, built on [`Mutex`] so that
/// Shuttle sees the wait).
#[derive(Debug)]
pub(crate) struct Once<T> {
    value: Mutex<Option<T>>,
}

impl<T> Default for Once<T> {
    fn default() -> Self {
        Once {
            value: Mutex::new(None),
        }
    }
}

impl<T: Clone> Once<T> {
    /// The value, made by `f` if no one made it yet; a caller that finds it
    /// being made waits for it.
    pub(crate) fn get_or_init(&self, f: impl FnOnce() -> T) -> T {
        let mut slot = lock(&self.value);
        if let Some(v) = slot.as_ref() {
            return v.clone();
        }
        let v = f();
        *slot = Some(v.clone());
        v
    }

    /// The value if it is made, without waiting (`None` while it is being
    /// made).
    pub(crate) fn get(&self) -> Option<T> {
        match self.value.try_lock() {
            Ok(slot) => slot.clone(),
            Err(_) => None,
        }
    }
}

/// Locks `m`, taking over a poisoned lock's data (a panic elsewhere leaves
/// the tables usable).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
