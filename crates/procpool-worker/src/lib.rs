//! The worker side of procpool: the task registry, the wire protocol and the run loop.
//!
//! A worker process receives batches of calls over a procpool-ipc channel, runs
//! each item with panics caught, and writes outcomes back in batches.
//! It must not know about pools, scheduling policies or the public API.
#![deny(missing_docs)]
