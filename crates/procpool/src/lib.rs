//! procpool: a pool of reusable worker processes with thread-pool speed.
//!
//! TODO(facade): tutorial.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

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
pub use procpool_worker::{Task, WorkerInfo, builtin, current_worker, task, worker_state};

/// Runs this process as a worker if a pool started it as one; returns otherwise.
///
/// Call it first thing in `main`, before starting threads: a pool starts its workers by
/// running this same program (unless [`PoolBuilder::program`] names another), and this call
/// is where such a process turns into a worker and never returns.
pub fn init() {
    // FIXME(facade): procpool_worker::enter_worker_mode_if_requested() once exported.
}

/// What the `#[procpool::task]` macro expands to; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use procpool_worker::__private::*;
}
