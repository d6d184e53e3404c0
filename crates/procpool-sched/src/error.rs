//! Error types, one per family of operations whose failure modes differ.
//!
//! Every error here means the caller's view of the pool disagrees with the scheduler's:
//! a stale id, or feedback that contradicts what was handed out. The scheduler's state is
//! unchanged when an operation fails.

use crate::{ChunkId, JobId, WorkerId};

/// A worker id that does not name a live worker.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a live worker (removed, or its slot was reused)")]
pub struct StaleWorker(pub WorkerId);

/// Why feedback about a chunk was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FeedbackError {
    /// The worker is not live.
    #[error(transparent)]
    StaleWorker(#[from] StaleWorker),
    /// No such chunk is in flight (it finished, was lost with its worker, or never existed).
    #[error("{0:?} is not in flight")]
    UnknownChunk(ChunkId),
    /// The chunk is in flight at another worker.
    #[error("{chunk:?} was sent to {owner:?}, not {reported_by:?}")]
    WrongWorker {
        /// The chunk.
        chunk: ChunkId,
        /// Where it was sent.
        owner: WorkerId,
        /// Who reported about it.
        reported_by: WorkerId,
    },
    /// More items reported done than the chunk has left.
    #[error("{chunk:?} has {left} unreported items, {reported} reported done")]
    TooManyItems {
        /// The chunk.
        chunk: ChunkId,
        /// Items of the chunk not reported done yet.
        left: u64,
        /// Items in this report.
        reported: u64,
    },
    /// A started item outside the part of the chunk not reported done.
    #[error("{chunk:?} cannot have started item {index}: allowed {lowest}..{end}")]
    StartOutOfRange {
        /// The chunk.
        chunk: ChunkId,
        /// The item said to be started.
        index: u64,
        /// The first item not reported done.
        lowest: u64,
        /// The end of the chunk.
        end: u64,
    },
    /// A chunk said to be taken back unstarted has items reported done: it had started.
    #[error("{chunk:?} cannot be reclaimed: {done} of its items were reported done")]
    ReclaimStarted {
        /// The chunk.
        chunk: ChunkId,
        /// Its items reported done.
        done: u64,
    },
    /// A yield point outside the part of the chunk that may still be unstarted.
    #[error("{chunk:?} cannot yield from item {first_unstarted}: allowed {lowest}..={end}")]
    YieldOutOfRange {
        /// The chunk.
        chunk: ChunkId,
        /// The first unstarted item as reported.
        first_unstarted: u64,
        /// The first item not reported done.
        lowest: u64,
        /// The end of the chunk.
        end: u64,
    },
}

/// Why an operation on a job's input was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// The job was removed or never existed.
    #[error("{0:?} does not exist")]
    UnknownJob(JobId),
    /// Items were added after the input was closed.
    #[error("{0:?}: input already closed")]
    InputClosed(JobId),
    /// More items than the declared length.
    #[error("{job:?}: {added} items would exceed the declared length {len}")]
    TooLong {
        /// The job.
        job: JobId,
        /// Items that would have been added in total.
        added: u64,
        /// The declared length.
        len: u64,
    },
    /// An item given back for retry or abandonment that is not waiting for such a decision.
    #[error("{job:?}: item {index} is not awaiting a retry decision")]
    NotAwaitingDecision {
        /// The job.
        job: JobId,
        /// The item index.
        index: u64,
    },
}
