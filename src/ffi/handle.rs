//! Long-lived handles (clients, watches, lease keepers) are not pointers but ids in a table:
//! a call with a freed, foreign or made-up handle finds nothing and returns
//! `ETCDC_ERR_INVALID_ARGUMENT`, instead of touching freed memory. Ids carry a per-type tag
//! and are never reused.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::error::{Error, Result};

static NEXT: AtomicU64 = AtomicU64::new(1);

pub(crate) struct Table<T> {
    tag: u64,
    what: &'static str,
    // Read-locked by every call, write-locked only to create and free handles.
    live: RwLock<Option<HashMap<u64, Arc<T>>>>,
}

impl<T> Table<T> {
    pub const fn new(tag: u8, what: &'static str) -> Self {
        Table {
            tag: (tag as u64) << 48,
            what,
            live: RwLock::new(None),
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Option<HashMap<u64, Arc<T>>>> {
        self.live.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn insert<H>(&self, value: T) -> *mut H {
        let id = self.tag | (NEXT.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff_ffff);
        self.write()
            .get_or_insert_with(HashMap::new)
            .insert(id, Arc::new(value));
        id as usize as *mut H
    }

    pub fn get<H>(&self, handle: *const H) -> Result<Arc<T>> {
        if handle.is_null() {
            return Err(Error::invalid(format!("{} is NULL", self.what)));
        }
        self.live
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(|m| m.get(&(handle as usize as u64)))
            .cloned()
            .ok_or_else(|| self.stale())
    }

    pub fn remove<H>(&self, handle: *const H) -> Result<Arc<T>> {
        self.write()
            .as_mut()
            .and_then(|m| m.remove(&(handle as usize as u64)))
            .ok_or_else(|| self.stale())
    }

    fn stale(&self) -> Error {
        Error::invalid(format!(
            "{} is not a live handle (already freed, or not a {} handle at all)",
            self.what, self.what
        ))
    }

    /// After fork(): the parent's objects cannot be dropped safely in the child.
    pub fn forget(&self) {
        if let Some(m) = self.write().take() {
            std::mem::forget(m);
        }
    }
}
