//! Handles that belong to one process. A forked child (`multiprocessing`,
//! `os.fork`) inherits the parent's open SQLite connections, runtimes and
//! holder identity; using them from the child would corrupt the parent's
//! locks or act in the parent's name. So every handle remembers the pid that
//! opened it, and a child opens its own on first use. The parent's is leaked
//! in the child, never closed there: closing would touch state that is the
//! parent's.

use std::sync::{Arc, Mutex, MutexGuard};

use larder::{Error, ErrorKind, Result};

enum Slot<T> {
    /// Nothing opened yet in this process (or the last one was inherited).
    Empty,
    /// Opened by this pid.
    Open(u32, Arc<T>),
    /// Closed on purpose: using it again is an error.
    Closed,
}

/// A value opened lazily, once per process.
pub struct PerProcess<T> {
    slot: Mutex<Slot<T>>,
    open: Box<dyn Fn() -> Result<T> + Send + Sync>,
    what: &'static str,
}

impl<T> PerProcess<T> {
    /// `value`, opened by this process; a forked child opens its own with
    /// `open`. `what` names it in errors.
    pub fn opened(
        what: &'static str,
        value: T,
        open: impl Fn() -> Result<T> + Send + Sync + 'static,
    ) -> Self {
        let slot = Slot::Open(std::process::id(), Arc::new(value));
        PerProcess { slot: Mutex::new(slot), open: Box::new(open), what }
    }

    fn lock(&self) -> MutexGuard<'_, Slot<T>> {
        self.slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// This process's value, opened now if this process has none.
    pub fn get(&self) -> Result<Arc<T>> {
        let pid = std::process::id();
        let mut slot = self.lock();
        match &*slot {
            Slot::Open(owner, value) if *owner == pid => return Ok(value.clone()),
            Slot::Closed => {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!("this {} is closed; open a new one", self.what),
                ));
            }
            _ => {}
        }
        forget_inherited(std::mem::replace(&mut *slot, Slot::Empty));
        let value = Arc::new((self.open)()?);
        *slot = Slot::Open(pid, value.clone());
        Ok(value)
    }

    /// Takes this process's value out for closing; later uses fail. `None` if
    /// there was nothing of this process's to close.
    pub fn close(&self) -> Option<Arc<T>> {
        let pid = std::process::id();
        let mut slot = self.lock();
        match std::mem::replace(&mut *slot, Slot::Closed) {
            Slot::Open(owner, value) if owner == pid => Some(value),
            other => {
                forget_inherited(other);
                None
            }
        }
    }

    /// Whether this process holds an open value.
    pub fn is_open_here(&self) -> bool {
        matches!(&*self.lock(), Slot::Open(owner, _) if *owner == std::process::id())
    }
}

impl<T> Drop for PerProcess<T> {
    fn drop(&mut self) {
        let slot = std::mem::replace(&mut *self.lock(), Slot::Empty);
        if let Slot::Open(owner, _) = &slot
            && *owner != std::process::id()
        {
            forget_inherited(slot);
        }
    }
}

/// A value another process opened is never dropped here.
fn forget_inherited<T>(slot: Slot<T>) {
    if let Slot::Open(owner, value) = slot
        && owner != std::process::id()
    {
        std::mem::forget(value);
    }
}
