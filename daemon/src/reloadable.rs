//! A value many tasks read and a config reload replaces whole: readers keep the version they
//! took (an `Arc`), so one request never sees half of an old and half of a new setting.

use std::sync::{Arc, RwLock};

/// The version in force of a reloadable value.
#[derive(Debug)]
pub struct Reloadable<T>(RwLock<Arc<T>>);

impl<T> Reloadable<T> {
    pub fn new(value: T) -> Reloadable<T> {
        Reloadable(RwLock::new(Arc::new(value)))
    }

    /// The version in force now.
    pub fn get(&self) -> Arc<T> {
        Arc::clone(&self.0.read().unwrap_or_else(|poison| poison.into_inner()))
    }

    /// Puts a new version in force; readers holding the old one finish with it.
    pub fn replace(&self, value: T) {
        *self.0.write().unwrap_or_else(|poison| poison.into_inner()) = Arc::new(value);
    }
}
