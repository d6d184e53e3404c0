//! The one place in procpool-ipc that names atomic types directly (the loom shim).
//!
//! Under `--cfg procpool_loom` the ring runs on loom's atomics (heap backend only,
//! since loom atomics cannot live in a real mapping); otherwise on `std`'s.

#[cfg(procpool_loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
#[cfg(not(procpool_loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

/// Busy-wait hint used while spinning.
#[cfg(procpool_loom)]
pub(crate) fn spin_hint() {
    loom::thread::yield_now();
}

/// Busy-wait hint used while spinning.
#[cfg(not(procpool_loom))]
pub(crate) fn spin_hint() {
    std::hint::spin_loop();
}

/// Gives up the core for a moment while spinning for a long time.
#[cfg(procpool_loom)]
pub(crate) fn spin_yield() {
    loom::thread::yield_now();
}

/// Gives up the core for a moment while spinning for a long time.
#[cfg(not(procpool_loom))]
pub(crate) fn spin_yield() {
    std::thread::yield_now();
}
