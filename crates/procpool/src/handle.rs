//! [`TaskHandle`]: the caller's view of one submitted task, and [`Completer`], the pool's side of it.
//!
//! Both ends share one [`Slot`]: a mutex-protected state machine plus a condition variable
//! (for blocking waits), one waker (for `async` use), a list of `on_done` callbacks and a list
//! of listeners (for [`wait`](crate::wait()) and [`as_completed`](crate::as_completed)).
//!
//! ```text
//!   Pending ──start()──▶ Running ──complete()──▶ Completing ──▶ Done
//!      │  ▲                 │                      (callbacks run,
//!      │  └──unstart()──────┘                       lock released)
//!      └──cancel() / complete()─────────────────▶ Completing ──▶ Done
//! ```
//!
//! Exactly one call moves a slot out of `Pending`/`Running` into `Completing`; that caller
//! owns the outcome until every callback registered so far has run, then stores it and
//! moves to `Done`. Callbacks registered while `Completing` are picked up by the same caller,
//! callbacks registered after `Done` run at once on the registering thread. So each callback
//! runs exactly once, and never on two threads.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::error::TaskError;
use crate::wait::Notifier;

/// A handle to one submitted task: wait for it, poll it, cancel it, or attach callbacks.
///
/// Dropping a handle does not cancel the task; it still runs, and its callbacks still fire.
/// `TaskHandle<T>` implements [`Future`], so it can be `.await`ed from any async runtime
/// without blocking a thread.
///
/// # Examples
///
/// ```no_run
/// # #[procpool::task] fn cube(x: u64) -> u64 { x * x * x }
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # procpool::init();
/// let pool = procpool::Pool::new()?;
/// let handle = pool.submit(cube, 3);
/// handle.on_done(|outcome| println!("finished: {outcome:?}"));
/// assert_eq!(handle.result()?, 27);
/// # Ok(()) }
/// ```
pub struct TaskHandle<T> {
    slot: Arc<Slot<T>>,
}

/// The pool's end of a task: it starts, un-starts and completes the shared slot.
///
/// Dropping a `Completer` that never completed its task completes it with
/// [`TaskError::Terminated`], so a handle can never wait forever on a task the pool lost.
pub(crate) struct Completer<T> {
    slot: Arc<Slot<T>>,
}

/// The state shared by a [`TaskHandle`] and its [`Completer`].
pub(crate) struct Slot<T> {
    state: Mutex<State<T>>,
    /// Notified (all) when the phase becomes `Done`, if a thread waits on it.
    done_cond: Condvar,
    /// Set (Release) when the phase becomes `Done`, for helpers that poll without the lock;
    /// pairs with the Acquire load in `is_done`.
    done: AtomicBool,
    /// Reads outcomes on a thread that blocks for this task (the pool core, `attend.rs`).
    helper: Option<Weak<dyn Helper>>,
}

/// How often a blocked wait offers help again (a safety net: normally the thread that reads
/// the rings, or a kicked reader thread, delivers the outcome and wakes the waiter first).
const HELP_RETRY: Duration = Duration::from_millis(50);

/// Something that can read outcomes on the thread waiting for them: the pool core.
pub(crate) trait Helper: Send + Sync {
    /// Reads and delivers outcomes on this thread until `done()` or a short window (or
    /// `deadline`) passes; returns at once if another thread helps already.
    fn help(&self, done: &dyn Fn() -> bool, deadline: Option<Instant>);

    /// Makes sure outcomes are read without this thread's help: the task is awaited, has a
    /// callback or a listener, is polled for, or its handle was dropped. A `submit` leaves an
    /// idle worker's reader thread asleep, expecting the caller to wait (and so help); this
    /// wakes the readers such submits left asleep. Cheap when there are none.
    fn attend(&self);
}

/// The phases of a task, as described in the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Pending,
    Running,
    Completing,
    Done,
}

type Callback<T> = Box<dyn FnOnce(&Result<T, TaskError>) + Send + 'static>;

struct State<T> {
    phase: Phase,
    /// `Some` from `Done` until the owner takes it (by `result()` or by awaiting).
    outcome: Option<Result<T, TaskError>>,
    /// Set with the outcome: it was an error other than `Cancelled` (for `Wait::FirstError`).
    failed: bool,
    /// Set with the outcome: it was `Cancelled`.
    cancelled: bool,
    /// Callbacks not yet run; empty once `Done`.
    callbacks: Vec<Callback<T>>,
    /// Listeners to notify with their key on `Done`; dead ones are pruned on subscribe.
    listeners: Vec<(Weak<Notifier>, usize)>,
    /// The waker of the last `poll` that returned `Pending`.
    waker: Option<Waker>,
    /// Threads blocked on `done_cond`: without any, finishing skips the notify (a syscall).
    sleepers: usize,
}

/// Returned by [`TaskHandle::result_timeout`] when the task did not finish in time.
///
/// It gives the handle back, still usable.
pub struct WaitTimeout<T> {
    handle: TaskHandle<T>,
}

/// Creates a connected handle and completer for a task that has not started.
pub(crate) fn task_pair<T>() -> (TaskHandle<T>, Completer<T>) {
    task_pair_with(None)
}

/// [`task_pair`] whose blocking waits first let `helper` read outcomes on the waiting thread.
pub(crate) fn task_pair_with<T>(helper: Option<Weak<dyn Helper>>) -> (TaskHandle<T>, Completer<T>) {
    let slot = Arc::new(Slot {
        state: Mutex::new(State {
            phase: Phase::Pending,
            outcome: None,
            failed: false,
            cancelled: false,
            callbacks: Vec::new(),
            listeners: Vec::new(),
            waker: None,
            sleepers: 0,
        }),
        done_cond: Condvar::new(),
        done: AtomicBool::new(false),
        helper,
    });
    (
        TaskHandle {
            slot: Arc::clone(&slot),
        },
        Completer { slot },
    )
}

impl<T> TaskHandle<T> {
    /// Blocks until the task finishes and returns its outcome.
    ///
    /// # Errors
    ///
    /// The task's [`TaskError`]: it panicked, returned `Err`, its worker died, it timed out,
    /// was cancelled, or the pool was terminated.
    pub fn result(self) -> Result<T, TaskError> {
        let mut state = self
            .slot
            .wait_done(None)
            .expect("no deadline, so the wait cannot time out");
        take_outcome(&mut state)
    }

    /// Like [`result`](Self::result), but gives up after `timeout`.
    ///
    /// Giving up does not affect the task: it keeps running and the handle, returned inside
    /// the [`WaitTimeout`], stays fully usable.
    ///
    /// # Errors
    ///
    /// `Err(WaitTimeout)` if the task did not finish within `timeout`.
    pub fn result_timeout(self, timeout: Duration) -> Result<Result<T, TaskError>, WaitTimeout<T>> {
        let deadline = Instant::now().checked_add(timeout);
        let outcome = self
            .slot
            .wait_done(deadline)
            .map(|mut state| take_outcome(&mut state));
        match outcome {
            Some(outcome) => Ok(outcome),
            None => Err(WaitTimeout { handle: self }),
        }
    }

    /// Blocks until the task finishes, without taking its outcome.
    pub fn wait(&self) {
        drop(self.slot.wait_done(None));
    }

    /// Blocks until the task finishes or `timeout` passes; returns whether it finished.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.slot
            .wait_done(Instant::now().checked_add(timeout))
            .is_some()
    }

    /// Whether the task has finished: it produced a value or an error, or was cancelled.
    pub fn done(&self) -> bool {
        // Someone polls for it instead of waiting: a reader thread must read the outcome.
        self.slot.attend();
        self.slot.lock().phase == Phase::Done
    }

    /// Whether the task has been handed to a worker and has not finished yet.
    pub fn running(&self) -> bool {
        matches!(self.slot.lock().phase, Phase::Running | Phase::Completing)
    }

    /// Whether the task was cancelled.
    pub fn cancelled(&self) -> bool {
        let state = self.slot.lock();
        state.phase == Phase::Done && state.cancelled
    }

    /// Cancels the task if it has not started yet; returns whether it is now cancelled.
    ///
    /// A task that a worker already holds cannot be cancelled (`false`); a task that was
    /// cancelled before returns `true` again. A cancelled task finishes with
    /// [`TaskError::Cancelled`], and its callbacks run on this thread.
    pub fn cancel(&self) -> bool {
        match self
            .slot
            .finish(Err(TaskError::Cancelled), |phase| phase == Phase::Pending)
        {
            Ok(()) => true,
            Err(_) => self.cancelled(),
        }
    }

    /// Runs `callback` exactly once with the task's outcome, when it finishes.
    ///
    /// If the task has already finished, `callback` runs at once on this thread; otherwise it
    /// runs on whichever thread finishes the task (usually one of the pool's reader threads,
    /// so keep it short and do not block in it). A panic in `callback` is caught and logged.
    /// If the outcome was already taken by awaiting the handle, `callback` sees
    /// `Err(TaskError::AlreadyTaken)`.
    pub fn on_done<F>(&self, callback: F)
    where
        F: FnOnce(&Result<T, TaskError>) + Send + 'static,
    {
        // Nobody may ever wait for it: its outcome must be read by a reader thread. (Also
        // when it is done already: a reader a submit left asleep is woken either way.)
        self.slot.attend();
        let mut state = self.slot.lock();
        if state.phase != Phase::Done {
            state.callbacks.push(Box::new(callback));
            return;
        }
        // The outcome is run past the callback under the lock: the callback cannot reach this
        // handle (it is 'static), and the panic is caught inside the guard's scope, so the
        // mutex is never poisoned.
        match &state.outcome {
            Some(outcome) => run_callback(Box::new(callback), outcome),
            None => run_callback(Box::new(callback), &Err(TaskError::AlreadyTaken)),
        }
    }

    /// Registers `notifier` to be told `key` when this task finishes (at once if it has).
    pub(crate) fn subscribe(&self, notifier: &Arc<Notifier>, key: usize) {
        // `wait` and `as_completed` park on the notifier without reading outcomes themselves.
        self.slot.attend();
        let mut state = self.slot.lock();
        if state.phase == Phase::Done {
            drop(state);
            notifier.notify(key);
            return;
        }
        state.listeners.retain(|(weak, _)| weak.strong_count() > 0);
        state.listeners.push((Arc::downgrade(notifier), key));
    }

    /// Whether the task finished with an error other than [`TaskError::Cancelled`].
    pub(crate) fn failed(&self) -> bool {
        let state = self.slot.lock();
        state.phase == Phase::Done && state.failed
    }
}

impl<T> Future for TaskHandle<T> {
    type Output = Result<T, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // An async waiter reads no outcomes itself.
        self.slot.attend();
        let mut state = self.slot.lock();
        if state.phase == Phase::Done {
            return Poll::Ready(take_outcome(&mut state));
        }
        match &mut state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            waker => *waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<T> Drop for TaskHandle<T> {
    fn drop(&mut self) {
        // Nobody will wait for it: its outcome (and callbacks) must still be read.
        self.slot.attend();
    }
}

impl<T> std::fmt::Debug for TaskHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.slot.lock();
        f.debug_struct("TaskHandle")
            .field("phase", &state.phase)
            .finish()
    }
}

impl<T> WaitTimeout<T> {
    /// The handle of the task that did not finish in time, still usable.
    pub fn into_handle(self) -> TaskHandle<T> {
        self.handle
    }
}

impl<T> std::fmt::Debug for WaitTimeout<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitTimeout").finish_non_exhaustive()
    }
}

impl<T> std::fmt::Display for WaitTimeout<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("timed out waiting for the task; it is still running and the handle is usable")
    }
}

impl<T> std::error::Error for WaitTimeout<T> {}

impl<T> Completer<T> {
    /// Marks the task as handed to a worker; `false` if it was cancelled or already finished,
    /// in which case the pool must not run it.
    pub(crate) fn start(&self) -> bool {
        let mut state = self.slot.lock();
        match state.phase {
            Phase::Pending => {
                state.phase = Phase::Running;
                true
            }
            Phase::Running => true,
            Phase::Completing | Phase::Done => false,
        }
    }

    /// Moves a started task back to pending (its worker died before starting it).
    pub(crate) fn unstart(&self) {
        let mut state = self.slot.lock();
        if state.phase == Phase::Running {
            state.phase = Phase::Pending;
        }
    }

    /// Finishes the task with `outcome`; returns `false` if it was already finished.
    pub(crate) fn complete(&self, outcome: Result<T, TaskError>) -> bool {
        self.slot
            .finish(outcome, |phase| {
                matches!(phase, Phase::Pending | Phase::Running)
            })
            .is_ok()
    }
}

impl<T> Drop for Completer<T> {
    fn drop(&mut self) {
        // A task the pool dropped without an outcome must still end; Terminated is the only
        // honest description (the pool went away or gave up on it). `Done` is final, so a
        // completed task (the usual case) needs no lock here.
        if self.slot.is_done() {
            return;
        }
        self.slot
            .finish(Err(TaskError::Terminated), |phase| {
                matches!(phase, Phase::Pending | Phase::Running)
            })
            .ok();
    }
}

impl<T> std::fmt::Debug for Completer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Completer").finish_non_exhaustive()
    }
}

impl<T> Slot<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // No user code runs while the lock is held except inside catch_unwind, so poisoning
        // cannot come from a callback; recover anyway rather than cascade a panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the phase is `Done`, without the lock.
    /// Lets the pool's reader threads read this task's outcome (see [`Helper::attend`]).
    fn attend(&self) {
        if let Some(helper) = self.helper.as_ref().and_then(Weak::upgrade) {
            helper.attend();
        }
    }

    fn is_done(&self) -> bool {
        // Acquire: pairs with the Release store in `finish`.
        self.done.load(Ordering::Acquire)
    }

    /// Waits until `Done` or `deadline`; returns the guard if done.
    ///
    /// Before parking, the pool's helper reads outcomes on this thread for a short window.
    fn wait_done(&self, deadline: Option<Instant>) -> Option<MutexGuard<'_, State<T>>> {
        let helper = self.helper.as_ref().and_then(Weak::upgrade);
        if let Some(helper) = &helper
            && !self.is_done()
        {
            helper.help(&|| self.is_done(), deadline);
        }
        let mut state = self.lock();
        while state.phase != Phase::Done {
            let now = Instant::now();
            // With a helper, look again every HELP_RETRY: the thread that read the rings when
            // this one could not may itself be blocked (a callback that waits).
            let mut slice = deadline.map(|deadline| deadline.saturating_duration_since(now));
            if slice == Some(Duration::ZERO) {
                return None;
            }
            if helper.is_some() {
                slice = Some(slice.map_or(HELP_RETRY, |left| left.min(HELP_RETRY)));
            }
            state.sleepers += 1;
            state = match slice {
                None => self
                    .done_cond
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(slice) => {
                    self.done_cond
                        .wait_timeout(state, slice)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
            state.sleepers -= 1;
            if state.phase != Phase::Done
                && let Some(helper) = &helper
            {
                drop(state);
                helper.help(&|| self.is_done(), deadline);
                state = self.lock();
            }
        }
        Some(state)
    }

    /// Moves the slot to `Done` with `outcome` if `allowed(phase)`; otherwise gives it back.
    fn finish(
        &self,
        outcome: Result<T, TaskError>,
        allowed: impl FnOnce(Phase) -> bool,
    ) -> Result<(), Result<T, TaskError>> {
        let mut state = self.lock();
        if !allowed(state.phase) {
            return Err(outcome);
        }
        state.phase = Phase::Completing;
        loop {
            let callbacks = std::mem::take(&mut state.callbacks);
            if callbacks.is_empty() {
                break;
            }
            drop(state);
            for callback in callbacks {
                run_callback(callback, &outcome);
            }
            state = self.lock();
        }
        state.failed = matches!(&outcome, Err(err) if *err != TaskError::Cancelled);
        state.cancelled = matches!(outcome, Err(TaskError::Cancelled));
        state.outcome = Some(outcome);
        state.phase = Phase::Done;
        // Release: pairs with the Acquire load in `is_done`; the outcome itself is read under
        // the lock, so this only publishes "look now".
        self.done.store(true, Ordering::Release);
        let waker = state.waker.take();
        let listeners = std::mem::take(&mut state.listeners);
        let sleepers = state.sleepers;
        drop(state);
        if sleepers > 0 {
            self.done_cond.notify_all();
        }
        if let Some(waker) = waker {
            waker.wake();
        }
        for (notifier, key) in listeners {
            if let Some(notifier) = notifier.upgrade() {
                notifier.notify(key);
            }
        }
        Ok(())
    }
}

fn take_outcome<T>(state: &mut State<T>) -> Result<T, TaskError> {
    state.outcome.take().unwrap_or(Err(TaskError::AlreadyTaken))
}

fn run_callback<T>(callback: Callback<T>, outcome: &Result<T, TaskError>) {
    if catch_unwind(AssertUnwindSafe(|| callback(outcome))).is_err() {
        tracing::error!("an on_done callback panicked; the panic was caught");
    }
}

#[cfg(test)]
#[path = "handle_tests.rs"]
mod tests;
