//! Scheduling decisions for procpool, as pure logic.
//!
//! The facade owns the payloads; this crate only deals in *item indices*. A **job** (one
//! `map` or `submit`) applies one task type to a sequence of items, numbered from 0 as the
//! facade pulls them from the user's input. The scheduler groups items into **chunks**
//! (contiguous index ranges) and tells the facade which chunk to send to which **worker**.
//! Workers live in slots; a replacement worker reuses a slot under a new generation, so it is
//! a different `WorkerId`.
//!
//! Chunk size comes from a policy. The default, adaptive, keeps a per-task-type estimate of
//! the cost of one item, fed by the busy times workers report, and aims each chunk at a few
//! hundred microseconds: long enough to hide dispatch and wake-up overhead, short enough to
//! balance. While the cost is unknown it probes with small chunks; near the end of a
//! known-length input it shrinks chunks (guided self-scheduling) so the tail is fine-grained.
//!
//! Unassigned items sit in pieces: new input in a global injector, given-back items in a
//! second injector served first, and the rest of a piece a worker cut its chunk from in that
//! worker's own deque. A worker refills from its deque, then the injectors, then steals from
//! the peer with the most reserved items, cutting a chunk off the front of the stolen piece.
//! Each worker holds a small window of chunks (the one it runs plus one queued: double
//! buffering). When a worker is idle and nothing is left to take, the scheduler proposes a
//! **tail split**: the worker holding the most unstarted work is asked to give back the later
//! half of its running chunk's unstarted items (or a whole chunk queued behind it), and
//! reports exactly where it cut, so nothing runs twice.
//!
//! Feedback arrives as items done (in order within a chunk), yields, and worker losses. From
//! it the scheduler knows exactly what each worker holds, so a lost worker is answered with
//! the item it was running, the items that ran without a reported outcome, and the items that
//! certainly had not started, which are queued again. Results are put back in input order by a reorder buffer whose input window bounds
//! memory, so an endless input runs in constant space.
//!
//! There is no I/O, no clock and no `unsafe` here: time enters only as reported durations, so
//! the same calls give the same decisions, and the `sim` module can drive the scheduler
//! through a discrete-event model of a pool.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod chunk;
mod error;
mod id;
mod reorder;
mod scheduler;
pub mod sim;

pub use chunk::{AdaptiveConfig, ChunkPolicy, SizeInput};
pub use error::{FeedbackError, JobError, StaleWorker};
pub use id::{ChunkId, ItemRef, JobId, Span, TaskKey, WorkerId};
pub use reorder::{Order, Reorder, ReorderError};
pub use scheduler::{
    Assignment, ChunkStatus, InputLen, JobOptions, JobProgress, Lost, Scheduler, SchedulerConfig,
    Split, YieldRequest,
};
