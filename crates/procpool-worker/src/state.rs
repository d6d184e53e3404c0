//! Per-worker state: the initializer's output, and who this worker is.
//!
//! A pool's initializer is a task run once when the worker starts; its output is kept here,
//! keyed by its type, for the lifetime of the worker process, so later tasks can read it
//! (like the module globals a Python initializer sets).
//!
//! Both values are recorded for the whole process and for the thread running the worker loop;
//! lookups prefer the thread's own, so several in-process workers on threads (a test or thread
//! backend) each see their own, while threads a task spawns see the process-wide one.

use std::any::{Any, TypeId};
use std::cell::{Cell, RefCell};
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

thread_local! {
    /// This thread's worker state, when it runs a worker loop.
    static THREAD_STATE: RefCell<Option<StateMap>> = const { RefCell::new(None) };
    /// This thread's worker identity, when it runs a worker loop.
    static THREAD_CURRENT: Cell<Option<WorkerInfo>> = const { Cell::new(None) };
}

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
    let own = THREAD_STATE.with(|state| {
        let state = state.borrow();
        state.as_ref()?.get(&TypeId::of::<T>()).copied()
    });
    if let Some(value) = own {
        return value.downcast_ref::<T>();
    }
    let guard = STATE.read().unwrap_or_else(|poison| poison.into_inner());
    let value: &'static (dyn Any + Send + Sync) = *guard.as_ref()?.get(&TypeId::of::<T>())?;
    value.downcast_ref::<T>()
}

/// Which worker this is; `None` outside a worker (in the parent).
pub fn current_worker() -> Option<WorkerInfo> {
    if let Some(info) = THREAD_CURRENT.with(Cell::get) {
        return Some(info);
    }
    *CURRENT.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// Stores `value` as this worker's state of type `T`, replacing (and leaking) an older one.
pub(crate) fn set_worker_state<T: Any + Send + Sync>(value: T) {
    let leaked: &'static (dyn Any + Send + Sync) = Box::leak(Box::new(value));
    THREAD_STATE.with(|state| {
        state
            .borrow_mut()
            .get_or_insert_with(HashMap::new)
            .insert(TypeId::of::<T>(), leaked);
    });
    let mut guard = STATE.write().unwrap_or_else(|poison| poison.into_inner());
    guard
        .get_or_insert_with(HashMap::new)
        .insert(TypeId::of::<T>(), leaked);
}

/// Records which worker this process is (called by the runtime on `Setup`).
pub(crate) fn set_current_worker(info: WorkerInfo) {
    THREAD_CURRENT.with(|current| current.set(Some(info)));
    *CURRENT.lock().unwrap_or_else(|poison| poison.into_inner()) = Some(info);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Marker(u32);

    #[derive(Debug, PartialEq)]
    struct PerThread(u32);

    #[test]
    fn a_threads_own_state_wins_over_the_process_wide_one() {
        let other = std::thread::spawn(|| {
            set_worker_state(PerThread(1));
            set_current_worker(WorkerInfo { index: 1, pid: 10 });
            std::thread::sleep(std::time::Duration::from_millis(20));
            (worker_state::<PerThread>(), current_worker())
        });
        std::thread::sleep(std::time::Duration::from_millis(5));
        set_worker_state(PerThread(2));
        set_current_worker(WorkerInfo { index: 2, pid: 10 });
        let (theirs, their_info) = other.join().expect("no panic");
        assert_eq!(theirs, Some(&PerThread(1)));
        assert_eq!(their_info.map(|i| i.index), Some(1));
        assert_eq!(worker_state::<PerThread>(), Some(&PerThread(2)));
        assert_eq!(current_worker().map(|i| i.index), Some(2));
    }

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
