//! Plain identifiers the scheduler hands out and takes back.

use std::fmt;
use std::ops::Range;

/// A worker slot plus the generation of the worker occupying it.
///
/// Slots are reused when a worker is replaced; the generation makes the replacement a
/// different `WorkerId`, so late feedback about the old worker cannot be mistaken for
/// feedback about the new one.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkerId {
    pub(crate) slot: u32,
    pub(crate) generation: u32,
}

impl WorkerId {
    /// Index of the slot, dense from 0; the facade can use it to index its own per-worker tables.
    pub fn slot(self) -> usize {
        self.slot as usize
    }

    /// How many workers occupied this slot before this one.
    pub fn generation(self) -> u32 {
        self.generation
    }
}

impl fmt::Debug for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "w{}.{}", self.slot, self.generation)
    }
}

/// One job: a `map` call or a single `submit`, i.e. one task type applied to a sequence of items.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(pub(crate) u64);

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job{}", self.0)
    }
}

/// One chunk handed to a worker; never reused within a [`Scheduler`](crate::Scheduler).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChunkId(pub(crate) u64);

impl ChunkId {
    /// The raw number, e.g. to put in a wire message; chunk ids grow by one per chunk.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "chunk{}", self.0)
    }
}

/// The task type a job runs, as an opaque key chosen by the facade (e.g. the registry hash).
///
/// Per-item cost estimates are kept per key and outlive jobs, so the second `map` of the
/// same function starts with a known cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskKey(pub u64);

/// One item of one job: its position in the job's input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ItemRef {
    /// The job the item belongs to.
    pub job: JobId,
    /// Its index in the job's input, from 0.
    pub index: u64,
}

/// A contiguous range of items of one job.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Span {
    /// The job the items belong to.
    pub job: JobId,
    /// Their indices in the job's input; never empty when handed out by the scheduler.
    pub items: Range<u64>,
}
