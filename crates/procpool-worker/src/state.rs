//! Per-worker state: the initializer's output, and who this worker is.
//!
//! A pool's initializer is a task run once when the worker starts; its output is kept here,
//! keyed by its type, for the lifetime of the worker process, so later tasks can read it
//! (like the module globals a Python initializer sets).

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

/// Identifies the worker process this code runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WorkerInfo {
    /// The worker's index in its pool, as the pool assigned it in `Setup`.
    pub index: u32,
    /// The worker's process id.
    pub pid: u32,
}

type StateMap = HashMap<TypeId, &'static (dyn Any + Send + Sync)>;

static STATE: RwLock<Option<StateMap>> = RwLock::new(None);
static CURRENT: Mutex<Option<WorkerInfo>> = Mutex::new(None);

/// The state of type `T` that this worker's initializer produced, if any.
///
/// Returns `None` in the parent, in a worker without initializer, or when the initializer
/// returned another type. The value lives until the worker exits.
///
/// # Examples
///
/// ```
/// // Outside a worker there is no state.
/// assert!(procpool_worker::worker_state::<String>().is_none());
/// ```
pub fn worker_state<T: Any + Send + Sync>() -> Option<&'static T> {
    let guard = STATE.read().unwrap_or_else(|poison| poison.into_inner());
    let value: &'static (dyn Any + Send + Sync) = *guard.as_ref()?.get(&TypeId::of::<T>())?;
    value.downcast_ref::<T>()
}

/// Which worker this is; `None` outside a worker (in the parent).
pub fn current_worker() -> Option<WorkerInfo> {
    *CURRENT.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// Stores `value` as this worker's state of type `T`, replacing (and leaking) an older one.
pub(crate) fn set_worker_state<T: Any + Send + Sync>(value: T) {
    let leaked: &'static (dyn Any + Send + Sync) = Box::leak(Box::new(value));
    let mut guard = STATE.write().unwrap_or_else(|poison| poison.into_inner());
    guard
        .get_or_insert_with(HashMap::new)
        .insert(TypeId::of::<T>(), leaked);
}

/// Records which worker this process is (called by the runtime on `Setup`).
pub(crate) fn set_current_worker(info: WorkerInfo) {
    *CURRENT.lock().unwrap_or_else(|poison| poison.into_inner()) = Some(info);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Marker(u32);

    #[test]
    fn state_is_keyed_by_type() {
        assert!(worker_state::<Marker>().is_none());
        set_worker_state(Marker(7));
        assert_eq!(worker_state::<Marker>(), Some(&Marker(7)));
        assert!(worker_state::<(Marker, u8)>().is_none());
        set_worker_state(Marker(8));
        assert_eq!(worker_state::<Marker>(), Some(&Marker(8)));
    }
}
