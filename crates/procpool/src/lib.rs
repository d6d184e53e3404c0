//! procpool: a pool of reusable worker processes with thread-pool speed.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
mod handle;
mod wait;

pub use crate::error::{Error, ErrorKind, TaskError, WorkerExit};
pub use crate::handle::{TaskHandle, WaitTimeout};
pub use crate::wait::{
    AsCompleted, AsCompletedTimeout, Timeout, Wait, as_completed, as_completed_timeout, wait,
};
