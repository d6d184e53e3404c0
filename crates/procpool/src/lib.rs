//! procpool: a pool of reusable worker processes with thread-pool speed.
//!
//! Python's `concurrent.futures.ProcessPoolExecutor` and `multiprocessing.Pool`, rebuilt for
//! Rust on shared memory: tasks run in separate processes (a crash, a leak or a global lock in
//! one cannot touch the others), yet calls travel through lock-free rings in a shared memory
//! region instead of pipes and pickles.
//!
//! # Hello, world!
//!
//! A task is a plain function marked [`#[procpool::task]`](task). A pool starts worker
//! processes by running the program again, so `main` must call [`init`] first: in a worker,
//! that call never returns.
//!
//! ```no_run
//! #[procpool::task]
//! fn cube(x: u64) -> u64 {
//!     x * x * x
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     procpool::init();
//!     let pool = procpool::Pool::new()?; // one worker per CPU
//!     assert_eq!(pool.call(cube, 3)?, 27);
//!     Ok(())
//! }
//! ```
//!
//! Arguments and results cross the process boundary as [rkyv](https://docs.rs/rkyv) archives:
//! numbers, strings, vectors, tuples, and your own types with
//! `#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]`. A task with several
//! parameters takes a tuple; `&str` and `&[T]` parameters are passed as `String` and `Vec<T>`.
//!
//! # Submitting work
//!
//! - [`Pool::submit`] returns a [`TaskHandle`]: wait with [`TaskHandle::result`] (or
//!   [`result_timeout`](TaskHandle::result_timeout)), ask [`done`](TaskHandle::done),
//!   [`cancel`](TaskHandle::cancel) it before it starts, attach [`on_done`](TaskHandle::on_done)
//!   callbacks, or `.await` it from any async runtime.
//! - [`Pool::call`] submits and waits.
//! - [`Pool::map`] applies a task to an iterator and yields results in input order, lazily and
//!   in bounded memory; [`Pool::map_unordered`] yields them as they finish, with their index.
//!   Items are sent in chunks sized from measured item cost, so even tiny tasks are cheap.
//! - [`wait()`] and [`as_completed`] wait on many handles at once.
//! - [`Pool::task`] sets per-call options: a [`timeout`](TaskCall::timeout) that kills a stuck
//!   worker, and [`retries`](TaskCall::retries) for calls lost with their worker.
//!
//! ```no_run
//! # #[procpool::task] fn cube(x: u64) -> u64 { x * x * x }
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # procpool::init();
//! # let pool = procpool::Pool::new()?;
//! use std::time::Duration;
//!
//! let handles: Vec<_> = (0..8).map(|x| pool.submit(cube, x)).collect();
//! for (index, outcome) in procpool::as_completed(handles) {
//!     println!("cube({index}) = {}", outcome?);
//! }
//! let total: u64 = pool.map(cube, 0..1_000_000).map(Result::unwrap).sum();
//! let guarded = pool.task(cube).timeout(Duration::from_secs(1)).retries(2).call(7)?;
//! # let _ = (total, guarded);
//! # Ok(()) }
//! ```
//!
//! # Sharing large read-only data
//!
//! [`Pool::share`] archives a value once into sealed shared memory and returns a [`Shared`]
//! handle: pass clones of it to any number of tasks (16 bytes each on the wire), which read the
//! value in place, mapped read-only, without copying or re-validating it.
//! [`Pool::share_slice`] does the same for slices of plain numbers, read as `&[E]`.
//! Arguments and results too large for the shared ring travel out of band on their own, with
//! no size setting.
//!
//! # When things go wrong
//!
//! Every submitted task ends with exactly one outcome. A task that returns `Err` or panics
//! ends with [`TaskError::Failed`] or [`TaskError::Panicked`], and its worker goes on. A worker
//! that dies (killed, aborted, segfaulted) fails only the task it was running with
//! [`TaskError::WorkerDied`] (or runs it again, if asked to), hands its queued work to the
//! others, and is replaced; the pool stays usable. A worker that holds work but stops
//! answering the pool's liveness pings (stopped, frozen, a fake) is killed after
//! [`PoolBuilder::liveness_timeout`] and handled the same way ([`TaskError::Unresponsive`]),
//! so even a call without a timeout cannot wait forever on it. Items larger than
//! [`PoolBuilder::max_item_size`] end with [`TaskError::TooLarge`]. Submitting to a pool that
//! is shut down gives [`TaskError::PoolClosed`], never a panic. `docs/GUARANTEES.md` lists
//! every promise with the test that proves it.
//!
//! # Ending a pool
//!
//! [`Pool::shutdown`] (also what `Drop` does) finishes accepted work first;
//! [`Pool::shutdown_now`] cancels what has not started; [`Pool::terminate`] stops everything
//! at once. None of them leaves a process behind. [`Pool::shutdown_timeout`] and
//! [`Pool::shutdown_now_timeout`] bound the wait for running tasks.
//!
//! # Inside a worker
//!
//! [`current_worker`] tells a task which worker runs it. A pool's
//! [`initializer`](PoolBuilder::initializer) runs once per worker, and its output is available
//! to later tasks through [`worker_state`].
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod attend;
mod backend;
mod core;
mod error;
mod handle;
mod job;
mod link;
mod map;
mod pool;
mod stats;
#[cfg(test)]
mod thread_backend;
mod wait;

#[cfg(test)]
mod core_tests;

// Lets `#[procpool::task]` (which names `::procpool`) work inside this crate's own tests.
#[cfg(test)]
extern crate self as procpool;

pub use crate::error::{Error, ErrorKind, TaskError, WorkerExit};
pub use crate::handle::{TaskHandle, WaitTimeout};
pub use crate::map::{Map, MapUnordered};
pub use crate::pool::{Pool, PoolBuilder, StartMethod, TaskCall};
pub use crate::stats::{PoolStats, WorkerStats};
pub use crate::wait::{
    AsCompleted, AsCompletedTimeout, Timeout, Wait, as_completed, as_completed_timeout, wait,
};
pub use procpool_worker::{
    Plain, ShareValue, Shareable, Shared, Task, WorkerInfo, builtin, current_worker, task,
    worker_state,
};

/// Runs this process as a worker if a pool started it as one; returns otherwise.
///
/// Call it first thing in `main`, before starting threads: a pool starts its workers by
/// running this same program (unless [`PoolBuilder::program`] names another), and this call
/// is where such a process turns into a worker and never returns.
pub fn init() {
    procpool_worker::enter_worker_mode_if_requested();
}

/// Serves as a worker of the pool listening at `path` (see [`Pool::listen`]) until that pool
/// shuts down or goes away.
///
/// This program must have every task of the pool's program (the same tasks, or more).
///
/// # Errors
///
/// [`ErrorKind::Io`] if the socket cannot be reached; [`ErrorKind::Handshake`] if the pool
/// refused this worker or the link broke.
pub fn attach(path: impl AsRef<std::path::Path>) -> Result<(), Error> {
    procpool_worker::attach(path).map_err(|err| {
        let kind = match &err {
            procpool_worker::AttachError::Connect { .. } => ErrorKind::Io,
            _ => ErrorKind::Handshake,
        };
        Error::with_source(kind, "attaching to the pool failed", err)
    })
}

/// What the `#[procpool::task]` macro expands to; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use procpool_worker::__private::*;
}
