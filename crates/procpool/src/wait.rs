//! Waiting on many handles: [`wait`], [`as_completed`] and [`as_completed_timeout`].
//!
//! Both register one [`Notifier`] with every handle (each under its index as key). A handle
//! pushes its key into the notifier's queue when it finishes, or at once if it already has,
//! so waiting costs one condition-variable wait per completion and never polls.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::error::TaskError;
use crate::handle::TaskHandle;

/// When [`wait`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// As soon as any task finishes (or is cancelled).
    FirstCompleted,
    /// As soon as any task finishes with an error (other than being cancelled), or when all finish.
    FirstError,
    /// When every task has finished.
    AllCompleted,
}

/// Returned by [`as_completed_timeout`]'s iterator when the deadline passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("timed out waiting for tasks to complete")]
pub struct Timeout;

/// A queue of keys of finished handles, with a condition variable to wait on it.
#[derive(Debug, Default)]
pub(crate) struct Notifier {
    ready: Mutex<VecDeque<usize>>,
    cond: Condvar,
}

impl Notifier {
    /// Records that the handle registered under `key` finished.
    pub(crate) fn notify(&self, key: usize) {
        self.lock().push_back(key);
        self.cond.notify_one();
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<usize>> {
        self.ready.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Pops the next finished key, waiting until `deadline` (forever if `None`).
    fn next(&self, deadline: Option<Instant>) -> Option<usize> {
        let mut ready = self.lock();
        loop {
            if let Some(key) = ready.pop_front() {
                return Some(key);
            }
            match deadline {
                None => {
                    ready = self
                        .cond
                        .wait(ready)
                        .unwrap_or_else(PoisonError::into_inner)
                }
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return None;
                    }
                    ready = self
                        .cond
                        .wait_timeout(ready, deadline - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            }
        }
    }
}

/// Waits for the tasks behind `handles` as `mode` says, or until `timeout` passes.
///
/// Returns the indices (into `handles`) of the tasks that are done and of those still
/// pending, each in ascending order. Taking the outcomes stays with the caller.
///
/// # Examples
///
/// ```no_run
/// # #[procpool::task] fn cube(x: u64) -> u64 { x * x * x }
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # procpool::init();
/// use procpool::Wait;
/// let pool = procpool::Pool::new()?;
/// let handles: Vec<_> = (0..10).map(|x| pool.submit(cube, x)).collect();
/// let (done, pending) = procpool::wait(&handles, Wait::FirstCompleted, None);
/// assert!(!done.is_empty());
/// println!("{} done, {} still running", done.len(), pending.len());
/// # Ok(()) }
/// ```
pub fn wait<T>(
    handles: &[TaskHandle<T>],
    mode: Wait,
    timeout: Option<Duration>,
) -> (Vec<usize>, Vec<usize>) {
    let deadline = timeout.and_then(|timeout| Instant::now().checked_add(timeout));
    let notifier = Arc::new(Notifier::default());
    for (idx, handle) in handles.iter().enumerate() {
        handle.subscribe(&notifier, idx);
    }
    let mut n_done = 0;
    while n_done < handles.len() {
        let Some(idx) = notifier.next(deadline) else {
            break;
        };
        n_done += 1;
        let satisfied = match mode {
            Wait::FirstCompleted => true,
            Wait::FirstError => handles[idx].failed(),
            Wait::AllCompleted => false,
        };
        if satisfied {
            break;
        }
    }
    // Take a fresh snapshot: tasks may have finished after the condition was met.
    handles
        .iter()
        .enumerate()
        .map(|(idx, handle)| (idx, handle.done()))
        .fold(
            (Vec::new(), Vec::new()),
            |(mut done, mut pending), (idx, is_done)| {
                if is_done {
                    done.push(idx)
                } else {
                    pending.push(idx)
                }
                (done, pending)
            },
        )
}

/// An iterator over tasks in the order they finish: yields each task's input index and outcome.
///
/// # Examples
///
/// ```no_run
/// # #[procpool::task] fn cube(x: u64) -> u64 { x * x * x }
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # procpool::init();
/// let pool = procpool::Pool::new()?;
/// let handles: Vec<_> = (0..10).map(|x| pool.submit(cube, x)).collect();
/// for (idx, outcome) in procpool::as_completed(handles) {
///     println!("task {idx}: {}", outcome?);
/// }
/// # Ok(()) }
/// ```
pub fn as_completed<T, I>(handles: I) -> AsCompleted<T>
where
    I: IntoIterator<Item = TaskHandle<T>>,
{
    AsCompleted {
        inner: Tracker::new(handles),
    }
}

/// Like [`as_completed`], but the whole iteration must finish within `timeout`.
///
/// When the deadline passes the iterator yields one `Err(Timeout)` and ends;
/// [`AsCompletedTimeout::into_pending`] then returns the handles still running.
pub fn as_completed_timeout<T, I>(handles: I, timeout: Duration) -> AsCompletedTimeout<T>
where
    I: IntoIterator<Item = TaskHandle<T>>,
{
    AsCompletedTimeout {
        inner: Tracker::new(handles),
        deadline: Instant::now().checked_add(timeout),
        timed_out: false,
    }
}

/// Iterator returned by [`as_completed`].
#[derive(Debug)]
pub struct AsCompleted<T> {
    inner: Tracker<T>,
}

/// Iterator returned by [`as_completed_timeout`].
#[derive(Debug)]
pub struct AsCompletedTimeout<T> {
    inner: Tracker<T>,
    deadline: Option<Instant>,
    timed_out: bool,
}

#[derive(Debug)]
struct Tracker<T> {
    handles: Vec<Option<TaskHandle<T>>>,
    remaining: usize,
    notifier: Arc<Notifier>,
}

impl<T> Tracker<T> {
    fn new<I: IntoIterator<Item = TaskHandle<T>>>(handles: I) -> Self {
        let handles: Vec<_> = handles.into_iter().map(Some).collect();
        let notifier = Arc::new(Notifier::default());
        for (idx, handle) in handles.iter().enumerate() {
            if let Some(handle) = handle {
                handle.subscribe(&notifier, idx);
            }
        }
        Tracker {
            remaining: handles.len(),
            handles,
            notifier,
        }
    }

    fn next(&mut self, deadline: Option<Instant>) -> Option<Option<(usize, Result<T, TaskError>)>> {
        if self.remaining == 0 {
            return Some(None);
        }
        let idx = self.notifier.next(deadline)?;
        let handle = self.handles[idx]
            .take()
            .expect("each handle is notified once");
        self.remaining -= 1;
        Some(Some((idx, handle.result())))
    }
}

impl<T> Iterator for AsCompleted<T> {
    type Item = (usize, Result<T, TaskError>);

    fn next(&mut self) -> Option<Self::Item> {
        self.inner
            .next(None)
            .expect("no deadline, so the wait cannot time out")
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.inner.remaining, Some(self.inner.remaining))
    }
}

impl<T> ExactSizeIterator for AsCompleted<T> {}

impl<T> Iterator for AsCompletedTimeout<T> {
    type Item = Result<(usize, Result<T, TaskError>), Timeout>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.timed_out {
            return None;
        }
        match self.inner.next(self.deadline) {
            Some(item) => item.map(Ok),
            None => {
                self.timed_out = true;
                Some(Err(Timeout))
            }
        }
    }
}

impl<T> AsCompletedTimeout<T> {
    /// The handles not yet yielded, with their input indices, in input order.
    pub fn into_pending(self) -> Vec<(usize, TaskHandle<T>)> {
        self.inner
            .handles
            .into_iter()
            .enumerate()
            .filter_map(|(idx, handle)| handle.map(|handle| (idx, handle)))
            .collect()
    }
}

#[cfg(test)]
#[path = "wait_tests.rs"]
mod tests;
