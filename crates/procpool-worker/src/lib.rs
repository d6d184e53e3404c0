//! The worker side of procpool: the task registry, the wire protocol and the run loop.
//!
//! A worker process receives batches of calls over a procpool-ipc channel, runs
//! each item with panics caught, and writes outcomes back in batches.
//! It must not know about pools, scheduling policies or the public API.
//!
//! # How the parts fit
//!
//! - A *task* is a function marked `#[task]`. The macro keeps it callable as `name::call`, adds a
//!   unit struct `name` implementing [`Task`], and registers a [`TaskEntry`] in a link-time table
//!   (a `linkme` distributed slice). Its [`TaskId`] is a hash of module path, name and signature,
//!   so it is the same in every build of the same source; [`fingerprint`] summarises the table.
//! - The [`protocol`] module is the task-level wire format (rkyv 0.8 archives behind a fixed
//!   header), with the encoders and validating decoders for both sides.
//! - [`run_worker`] is the loop inside a worker: handshake, optional initializer (its output
//!   becomes [`worker_state`]), then chunks of calls, each item under `catch_unwind`, outcomes
//!   streamed back in batches.
//! - [`builtin`] holds the tasks every worker carries (`add_one`, `echo_bytes`, fault injectors).
//!
//! ```
//! use procpool_worker::{builtin, protocol, AlignedVec, Task};
//!
//! // The parent encodes a chunk of three calls as one frame.
//! let mut frame = AlignedVec::new();
//! protocol::encode_call_batch::<builtin::add_one>(1, 0, &[1, 2, 3], &mut frame)?;
//! assert_eq!(builtin::add_one::call(1), 2);
//! assert!(procpool_worker::lookup(<builtin::add_one as Task>::ID).is_some());
//! # Ok::<(), procpool_worker::ProtocolError>(())
//! ```
#![deny(missing_docs)]

// worker-core modules.
pub mod builtin;
pub mod protocol;
mod registry;
mod runtime;
mod shared;
mod state;

// worker-process modules.
mod attach;
mod entry;
mod forkserver;
mod process;

// worker-core API.
pub use crate::protocol::{
    FailureKind, HandshakeError, PROTOCOL_VERSION, ProtocolError, TaskFailure,
};
pub use crate::registry::{
    DuplicateTaskId, Task, TaskEntry, TaskId, TaskListing, Wire, describe_all, duplicates, entries,
    fingerprint, lookup,
};
pub use crate::runtime::{LocalRunner, RunOptions, WorkerError, run_worker};
pub use crate::shared::{
    Plain, ShareError, ShareSerializer, ShareValue, Shareable, Shared, SharedObject, SharedRef,
    share_slice, share_value,
};
pub use crate::state::{WorkerInfo, current_worker, worker_state};
pub use procpool_macros::task;

// worker-process API.
pub use crate::attach::{AcceptError, AttachError, BindError, Listener, ListenerStop, attach};
pub use crate::entry::{
    WORKER_EXIT_BAD_ENV, WORKER_EXIT_CHANNEL_ERROR, WORKER_EXIT_INIT_FAILED, WORKER_EXIT_OK,
    WORKER_EXIT_PARENT_GONE, WORKER_EXIT_RUNTIME_ERROR, enter_worker_mode_if_requested,
};
pub use crate::forkserver::ForkServer;
pub use crate::process::{
    ENV_FORK_SERVER, ENV_PARENT_PID, ENV_WORKER_FDS, FIRST_INHERITED_FD, SpawnError, StartMethod,
    WaitError, WorkerExit, WorkerKiller, WorkerProcess, WorkerSpawner,
};
/// A 16-byte-aligned byte buffer: what frames are encoded into.
pub type AlignedVec = rkyv::util::AlignedVec<16>;

/// What the `#[task]` macro expands to; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::protocol::{FailureKind, TaskFailure};
    pub use crate::registry::{Invoke, TASKS, Task, TaskEntry, TaskId, task_id};
    pub use crate::runtime::BatchRun;
    pub use crate::runtime::args::{deserialize_arg, slice_arg, str_arg};
    pub use ::core::result::Result;
    pub use ::core::result::Result::{Err, Ok};
    pub use ::linkme;
    pub use ::rkyv;
}
