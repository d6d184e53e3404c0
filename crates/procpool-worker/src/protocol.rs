//! The task-level wire protocol between a parent and one worker (version [`PROTOCOL_VERSION`]).
//!
//! Every message is one ipc frame: a fixed 32-byte [header](#header) followed by a body whose
//! meaning depends on the header's kind.
//! Bodies are rkyv 0.8 archives, validated with bytecheck by the side that receives them before
//! anything reads them; a frame that fails validation is a [`ProtocolError`], never a panic.
//!
//! # Header
//!
//! ```text
//! offset size field         meaning
//!  0     2    kind          message kind (see below)
//!  2     2    version       PROTOCOL_VERSION of the sender
//!  4     4    count         items in this frame (calls or outcomes), else 0
//!  8     8    chunk_id      chunk the frame belongs to; ping nonce for Ping/Pong
//! 16     8    task_id       task of the chunk, else 0
//! 24     8    first_index   item index of the first item in this frame; next index for Yielded
//! ```
//!
//! All integers are little-endian. The body starts at offset 32, so a 16-byte-aligned frame
//! gives a 16-byte-aligned body.
//!
//! # Messages
//!
//! Parent to worker (submission ring):
//! - `Setup` (first frame): body = archived [`Setup`].
//! - `CallBatch`: body = ONE archive of `Vec<T::Args>` holding `count` items, validated once
//!   per chunk. Items are numbered `first_index + i`; the numbering is the parent's choice.
//! - `Shutdown`: no body. `Ping`: no body, `chunk_id` is a nonce echoed in `Pong`.
//! - `Shared`: a shared object (see `crate::shared`), always sent out of band as the whole
//!   sealed memfd of the object: `chunk_id` is the object's id, `task_id` its type tag,
//!   `first_index` the offset of its data (64); bytes 32..64 are zero. The worker keeps the
//!   frame's read-only mapping until `Release`.
//! - `Release`: no body; `chunk_id` names a shared object the worker may forget.
//!
//! Worker to parent (completion ring):
//! - `Hello`: body = archived [`Hello`]. Then `Ready` (no body) or `InitFailed`
//!   (body = archived [`TaskFailure`]).
//! - `Outcomes`: the outcomes of items `first_index .. first_index + count` of one chunk.
//!   A long chunk is answered by several `Outcomes` frames. The outcomes are grouped in *runs*
//!   of consecutive items: a run of successes is ONE archive of `Vec<T::Output>` (so the parent
//!   validates and deserializes it in one go, a memcpy for plain-data outputs), a failure is an
//!   archive of [`TaskFailure`] standing for one or more consecutive items. Body layout:
//!   `data` (the runs' archives back to back, each starting 16-aligned relative to the
//!   16-aligned body), then a table of `runs` entries of 16 bytes
//!   `{offset: u32, len_and_status: u32, count: u32, reserved: u32 = 0}`, then an 8-byte trailer
//!   `{runs: u32, busy_ns: u32}`. `busy_ns` is the worker's own wall time for the frame's items
//!   (from the start of the first to the end of the last, in nanoseconds), or `u32::MAX` when
//!   not measured or longer than that: the parent's cost estimate uses it instead of the time
//!   between sending the chunk and reading the frame, which includes however long the frame
//!   waited to be read (see [`OutcomeBatch::worker_busy`]). A run's bytes are `data[offset..][..len]` with
//!   `len = len_and_status & 0x7fff_ffff`; bit 31 clear means an archive of a `Vec<T::Output>`
//!   of exactly `count` items, set means an archive of the [`TaskFailure`] of one item
//!   (`count` = 1, so a frame's size bounds how many failures it can carry). Runs are in item
//!   order; every `count` is at least 1 and the counts add up to the header's `count`.
//! - `Yielded`: the worker stopped this chunk on request; `first_index` is the first item it
//!   did not start. Every item before it has been answered in earlier `Outcomes` frames.
//! - `Pong`: answers `Ping`.
//! - `Drained`: no body. The worker found no frame to read while the parent's outbox word
//!   (mailbox word 9) was set: its ring and socket have room for whatever waits there.

use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::time::Duration;

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::rancor::{self, Fallible};
use rkyv::ser::allocator::{Arena, ArenaHandle};
use rkyv::ser::sharing::Share;
use rkyv::ser::{Allocator, Serializer, Writer};
use rkyv::util::AlignedVec;
use rkyv::vec::{ArchivedVec, VecResolver};
use rkyv::{Archive, Archived, Deserialize, Place, Serialize};

use crate::registry::{Task, TaskId};

#[cfg(test)]
mod tests;

/// Version of this protocol; both sides must agree exactly.
pub const PROTOCOL_VERSION: u16 = 7;

/// Length of the fixed header at the start of every frame.
pub const HEADER_LEN: usize = 32;

/// Flag in a yield request (mailbox word 2, `chunk_id + 1`): give back only the later half of
/// the items not started yet (from `next + (end - next).div_ceil(2)`, with `next` the first
/// item not started when the worker sees the request) and run the rest first. Without it the
/// worker gives back everything from the next item on. Chunk ids stay far below this bit.
pub const YIELD_HALF: u64 = 1 << 63;

/// Flag in the claim word (mailbox word 8): the parent took chunk `value & !CLAIM_RECLAIMED`
/// minus one back before the worker started it. See [`reclaim`] and [`claim`].
pub const CLAIM_RECLAIMED: u64 = 1 << 63;

/// The parent's side of the claim word (mailbox word 8): tries to take chunk `chunk_id`
/// back before the worker starts it, so the parent can give its items to another worker
/// at once instead of waiting for this one to finish what it runs. Returns whether it did;
/// then the worker will skip the chunk when it reaches it in its ring, sending nothing
/// about it.
///
/// The word holds `chunk_id + 1` of the last chunk the worker claimed (started; 0 before the
/// first), or
/// `CLAIM_RECLAIMED | (chunk_id + 1)` of a chunk the parent took back and the worker has
/// not reached yet. Both sides change it only by compare-and-swap, so exactly one of them
/// wins a chunk. At most one reclaimed chunk is pending at a time: while a mark is in the
/// word, this refuses (the worker could not tell two marks apart), and the worker replaces
/// a mark only with its own claim of that very chunk.
///
/// `load` and `compare_exchange` act on the word (Acquire / AcqRel, so a won exchange is
/// ordered with the other side's last one).
pub fn reclaim(
    load: impl Fn() -> u64,
    compare_exchange: impl Fn(u64, u64) -> bool,
    chunk_id: u64,
) -> bool {
    let target = chunk_id.wrapping_add(1);
    loop {
        let current = load();
        if current & CLAIM_RECLAIMED != 0 || current >= target {
            // Another reclaim is pending, or the worker claimed this chunk or a later one
            // (chunk ids grow in the order chunks are sent, and a worker runs them in order).
            return false;
        }
        if compare_exchange(current, CLAIM_RECLAIMED | target) {
            return true;
        }
        // The worker claimed a chunk meanwhile (maybe this one): look again.
    }
}

/// Whether the claim word `word` holds a chunk the parent took back that the worker has not
/// reached yet: while it does, [`reclaim`] refuses to take back another.
pub fn reclaim_pending(word: u64) -> bool {
    word & CLAIM_RECLAIMED != 0
}

/// The worker's side of the claim word (see [`reclaim`]): claims chunk `chunk_id` before
/// running it; `false` if the parent took it back (the worker then skips it and clears the
/// mark, so a later chunk can be taken back).
pub fn claim(
    load: impl Fn() -> u64,
    compare_exchange: impl Fn(u64, u64) -> bool,
    chunk_id: u64,
) -> bool {
    let mine = chunk_id.wrapping_add(1);
    loop {
        let current = load();
        if current == CLAIM_RECLAIMED | mine {
            // Only this side replaces a mark, so the exchange cannot fail; either way the
            // chunk stays skipped.
            compare_exchange(current, mine);
            return false;
        }
        if current & CLAIM_RECLAIMED != 0 {
            // A mark for another chunk: it is not this side's to clear. The chunks run in
            // the order they were sent, so that one is later than this one.
            return true;
        }
        if compare_exchange(current, mine) {
            return true;
        }
    }
}

/// Size of one entry of an `Outcomes` table (one run).
const RUN_ENTRY_LEN: usize = 16;

/// Size of the trailer after an `Outcomes` table (the number of runs, the worker's busy time).
const RUN_TRAILER_LEN: usize = 8;

/// The trailer's `busy_ns` of a frame whose busy time was not measured (or did not fit).
const BUSY_UNKNOWN: u32 = u32::MAX;

/// The trailer's `busy_ns` for `busy`, if measured.
fn busy_field(busy: Option<Duration>) -> u32 {
    busy.and_then(|busy| u32::try_from(busy.as_nanos()).ok())
        .unwrap_or(BUSY_UNKNOWN)
}

/// Alignment of every archive inside a frame body.
const ARCHIVE_ALIGN: usize = 16;

/// The serializer every task argument and output is written with.
pub type WireSerializer<'a> = HighSerializer<WireWriter<'a>, ArenaHandle<'a>, rancor::Error>;

/// Where a [`WireSerializer`] writes: a growable buffer, a fixed slice (a frame written in
/// place, straight into the space a transport reserved for it), or nowhere (measuring the
/// size of an archive before reserving that space).
#[derive(Debug)]
pub enum WireWriter<'a> {
    /// Appends to a growable buffer.
    Vec(AlignedVec),
    /// Writes into a fixed slice from `pos` on; writing past its end is an error.
    Slice {
        /// The bytes written into (from its start, which must be 16-aligned).
        buf: &'a mut [u8],
        /// Bytes written so far.
        pos: usize,
    },
    /// Counts bytes without writing them; more than `budget` write calls is an error, so
    /// measuring costs a few calls for plain-data and byte-buffer values and gives up early
    /// on values made of many small parts (those are encoded into a growable buffer instead).
    Count {
        /// Bytes counted so far.
        pos: usize,
        /// Write calls left.
        budget: usize,
    },
}

/// A [`WireWriter::Slice`] ran out of room, or a [`WireWriter::Count`] out of write calls.
#[derive(Debug, thiserror::Error)]
#[error("the archive does not fit the space reserved for it")]
struct NoRoom;

impl rkyv::ser::Positional for WireWriter<'_> {
    #[inline]
    fn pos(&self) -> usize {
        match self {
            WireWriter::Vec(vec) => vec.len(),
            WireWriter::Slice { pos, .. } | WireWriter::Count { pos, .. } => *pos,
        }
    }
}

impl<E: rancor::Source> Writer<E> for WireWriter<'_> {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), E> {
        match self {
            WireWriter::Vec(vec) => {
                vec.extend_from_slice(bytes);
                Ok(())
            }
            WireWriter::Slice { buf, pos } => {
                let end = pos
                    .checked_add(bytes.len())
                    .filter(|&end| end <= buf.len())
                    .ok_or_else(|| E::new(NoRoom))?;
                // A large write (a byte buffer) is split between two threads.
                procpool_ipc::copy_bytes(&mut buf[*pos..end], bytes);
                *pos = end;
                Ok(())
            }
            WireWriter::Count { pos, budget } => {
                *budget = budget.checked_sub(1).ok_or_else(|| E::new(NoRoom))?;
                *pos += bytes.len();
                Ok(())
            }
        }
    }
}

impl WireWriter<'_> {
    /// The growable buffer of a [`WireWriter::Vec`] (the outcome encoder's writer).
    fn vec_mut(&mut self) -> &mut AlignedVec {
        match self {
            WireWriter::Vec(vec) => vec,
            _ => unreachable!("the outcome encoder writes into a growable buffer"),
        }
    }

    /// The bytes of a [`WireWriter::Vec`].
    fn vec(&self) -> &AlignedVec {
        match self {
            WireWriter::Vec(vec) => vec,
            _ => unreachable!("the outcome encoder writes into a growable buffer"),
        }
    }
}

/// Write calls a measuring pass may make before it gives up (see [`WireWriter::Count`]).
const MEASURE_BUDGET: usize = 64;

/// Where a frame encoder writes the frame.
#[derive(Debug)]
pub enum FrameBuf<'o> {
    /// Into this buffer (cleared first).
    Grow(&'o mut AlignedVec),
    /// In place into this slice, which must start 16-aligned and be long enough (as
    /// [`FrameBuf::Measure`] said).
    Fixed(&'o mut [u8]),
    /// Nowhere: only the frame's length is computed, if that is cheap (a few write calls);
    /// otherwise the encoder fails with [`ProtocolError::Encode`].
    Measure,
}
/// The validator every received archive is checked with.
pub type WireValidator<'a> = HighValidator<'a, rancor::Error>;
/// The deserializer that turns archives back into owned values.
pub type WireDeserializer = HighDeserializer<rancor::Error>;

/// First frame from parent to worker.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    /// The worker's index in its pool (reported by `current_worker`).
    pub worker_index: u32,
    /// The task to run once before `Ready`, if any.
    pub initializer: Option<InitializerCall>,
}

/// An initializer: a registered task and its encoded arguments (see [`encode_initializer`]).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct InitializerCall {
    /// The initializer task.
    pub task_id: TaskId,
    /// An archive of a one-item `Vec<T::Args>` (the same form as a call batch body).
    pub args: Vec<u8>,
}

/// First frame from worker to parent.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The worker's process id.
    pub pid: u32,
    /// The worker's [`crate::fingerprint`].
    pub fingerprint: u64,
    /// How many tasks the worker has registered.
    pub task_count: u32,
    /// The ids of the worker's tasks, sorted (an id covers path, name and signature).
    pub task_ids: Vec<TaskId>,
}

/// Why an item (or the initializer) produced no value; the facade maps it to its task error.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TaskFailure {
    /// What went wrong.
    pub kind: FailureKind,
    /// Human-readable detail: the panic message, the `Err`'s `Display`, ...
    pub message: String,
    /// `file:line:column` of a panic, when known.
    pub location: Option<String>,
}

/// The kinds of [`TaskFailure`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub enum FailureKind {
    /// The task panicked; `message` and `location` come from the panic.
    Panicked,
    /// The task returned `Err`; `message` is its `Display`.
    Failed,
    /// The worker has no task with this id.
    UnknownTask,
    /// The arguments did not validate or deserialize as the task's argument type.
    BadArguments,
    /// The task's output could not be serialized.
    BadOutput,
    /// The task's encoded output is larger than the pool's limit for one item
    /// (`PoolBuilder::max_item_size`); it was not sent.
    TooLarge(SizeOverLimit),
}

/// A size that exceeds a limit (see [`FailureKind::TooLarge`]).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub struct SizeOverLimit {
    /// The size in bytes.
    pub size: u64,
    /// The limit in bytes.
    pub limit: u64,
}

impl TaskFailure {
    /// A failure without location.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            location: None,
        }
    }
}

impl fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            FailureKind::Panicked => "task panicked",
            FailureKind::Failed => "task failed",
            FailureKind::UnknownTask => "unknown task",
            FailureKind::BadArguments => "bad arguments",
            FailureKind::BadOutput => "unserializable output",
            FailureKind::TooLarge(_) => "output too large",
        };
        write!(f, "{what}: {}", self.message)?;
        if let Some(location) = &self.location {
            write!(f, " at {location}")?;
        }
        Ok(())
    }
}

/// A frame that cannot be understood.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// Shorter than its header or than the header says.
    #[error("truncated frame: {len} bytes, need at least {needed}")]
    Truncated {
        /// Bytes present.
        len: usize,
        /// Bytes needed.
        needed: usize,
    },
    /// The peer speaks another protocol version.
    #[error("protocol version {theirs}, expected {ours}")]
    Version {
        /// Ours.
        ours: u16,
        /// Theirs.
        theirs: u16,
    },
    /// The kind field names no message (or one that this side never receives).
    #[error("unexpected message kind {0:#06x}")]
    UnexpectedKind(u16),
    /// The frame's body is not 16-byte aligned in memory.
    #[error("frame body is not 16-byte aligned")]
    Misaligned,
    /// A body failed bytecheck validation or deserialization.
    #[error("invalid archive: {0}")]
    Archive(#[source] rancor::Error),
    /// The header's item count disagrees with the body.
    #[error("header says {header} items, body has {body}")]
    CountMismatch {
        /// From the header.
        header: usize,
        /// From the body.
        body: usize,
    },
    /// An entry of an outcome table points outside the frame or is malformed.
    #[error("bad outcome table entry {index}")]
    BadOutcomeEntry {
        /// Which entry.
        index: usize,
    },
    /// A value could not be serialized.
    #[error("cannot encode: {0}")]
    Encode(#[source] rancor::Error),
    /// More items than a frame can describe.
    #[error("too many items for one frame: {0}")]
    TooManyItems(usize),
    /// A run of outcomes could not be decoded (reported for each of its items).
    #[error("the outcome of item {index} could not be decoded: {reason}")]
    BadRun {
        /// The item.
        index: u64,
        /// Why its run could not be decoded.
        reason: String,
    },
    /// The frame's items `first_index .. first_index + count` do not fit in `u64`.
    #[error("item indices {first_index} + {count} run past the end of the index space")]
    IndexOverflow {
        /// The frame's first item index.
        first_index: u64,
        /// The frame's item count.
        count: u32,
    },
}

/// A `Hello` that the parent must refuse.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The frame was not a readable `Hello`.
    #[error("malformed hello: {0}")]
    Protocol(#[from] ProtocolError),
    /// The worker speaks another protocol version (a different procpool build).
    #[error("worker speaks protocol version {theirs}, this pool speaks {ours}")]
    VersionMismatch {
        /// Ours.
        ours: u16,
        /// Theirs.
        theirs: u16,
    },
    /// The worker program lacks tasks this pool needs (a different binary).
    #[error(
        "the worker program lacks {} task(s) this pool needs: {}",
        missing.len(),
        missing.join(", ")
    )]
    MissingTasks {
        /// Each missing task as `name signature` (or its id when this side does not know it).
        missing: Vec<String>,
    },
    /// The first frame was some other message.
    #[error("expected Hello, got message kind {0:#06x}")]
    NotHello(u16),
    /// The worker was built with a different task table (a different binary).
    #[error(
        "worker task table {theirs:016x} differs from this pool's {ours:016x}: \
         the worker program was built from different sources (rebuild it, or use the current executable)"
    )]
    FingerprintMismatch {
        /// Ours.
        ours: u64,
        /// Theirs.
        theirs: u64,
    },
}

/// What a parent learns from a valid `Hello`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloInfo {
    /// The worker's process id.
    pub pid: u32,
    /// The worker's task-table fingerprint.
    pub fingerprint: u64,
    /// How many tasks the worker registered.
    pub task_count: u32,
    /// The worker's task ids, sorted.
    pub task_ids: Vec<TaskId>,
}

impl HelloInfo {
    /// Whether the worker has the task `id` (same path, name and signature as here).
    pub fn has_task(&self, id: TaskId) -> bool {
        self.task_ids.binary_search(&id).is_ok()
    }
}

/// A message from a worker, parsed and validated but not yet typed (see [`decode_output`]).
#[derive(Debug)]
pub enum FromWorker<'a> {
    /// The handshake greeting.
    Hello(HelloInfo),
    /// The initializer (if any) succeeded; calls may be sent.
    Ready,
    /// The initializer failed; the worker exits.
    InitFailed(TaskFailure),
    /// Outcomes of some items of one chunk.
    Outcomes(OutcomeBatch<'a>),
    /// The worker stopped a chunk on request.
    Yielded {
        /// The chunk.
        chunk_id: u64,
        /// First item index the worker did not start.
        next_index: u64,
    },
    /// The answer to `Ping`.
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
    /// The worker read every frame there was while the parent's outbox word was set (see
    /// the runtime's "Waiting for room"): what waits in the parent's outbox fits now.
    Drained,
}

/// A validated `Outcomes` frame: runs of outputs and failures (see [`OutcomeBatch::runs`]).
#[derive(Clone, Copy)]
pub struct OutcomeBatch<'a> {
    /// The chunk these outcomes belong to.
    pub chunk_id: u64,
    /// The chunk's task.
    pub task_id: TaskId,
    /// Item index of the first outcome.
    pub first_index: u64,
    /// Number of items (the header's count, equal to the sum of the runs' counts).
    count: usize,
    /// The body's data area.
    data: &'a [u8],
    /// The run entries, already checked to lie inside `data` and to add up to `count`.
    table: &'a [u8],
    /// The trailer's `busy_ns`.
    busy_ns: u32,
}

/// One run of consecutive outcomes of an [`OutcomeBatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutcomeRun<'a> {
    /// Item index of the run's first item.
    pub first_index: u64,
    /// Number of items in the run (at least 1).
    pub count: usize,
    /// The run's bytes.
    pub outcome: RawOutcome<'a>,
}

/// A run's outcome, still as bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawOutcome<'a> {
    /// An archive of `Vec<T::Output>` with the run's `count` items; decode with
    /// [`decode_values`].
    Values(&'a [u8]),
    /// An archive of the [`TaskFailure`] of the run's one item; decode with [`decode_failure`].
    Failure(&'a [u8]),
}

impl<'a> OutcomeBatch<'a> {
    /// Number of outcomes (items) in this frame.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the frame has no outcomes.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// How long the worker says its items kept it busy (wall time, from the start of the
    /// first to the end of the last), if it measured that: unlike the time from sending a
    /// chunk to reading its outcomes, this leaves out how long the frame waited to be read.
    /// A claim of the peer, fit for estimates only.
    pub fn worker_busy(&self) -> Option<Duration> {
        (self.busy_ns != BUSY_UNKNOWN).then(|| Duration::from_nanos(u64::from(self.busy_ns)))
    }

    /// Number of runs in this frame.
    pub fn run_count(&self) -> usize {
        self.table.len() / RUN_ENTRY_LEN
    }

    /// The frame's runs in item order.
    pub fn runs(&self) -> Runs<'a> {
        Runs {
            data: self.data,
            table: self.table,
            next_index: self.first_index,
        }
    }

    /// When the whole frame is one run of successes (the common case): the index of its
    /// first item and the archive of its outputs, for [`decode_values`] with [`Self::len`].
    pub fn values_run(&self) -> Option<(u64, &'a [u8])> {
        let mut runs = self.runs();
        match (runs.next(), runs.next()) {
            (
                Some(OutcomeRun {
                    first_index,
                    outcome: RawOutcome::Values(bytes),
                    ..
                }),
                None,
            ) => Some((first_index, bytes)),
            _ => None,
        }
    }

    /// The item indices of this frame, `first_index .. first_index + len` (they fit in `u64`:
    /// parsing checked it).
    pub fn indices(&self) -> std::ops::Range<u64> {
        self.first_index..self.first_index + self.count as u64
    }
}

/// Iterator over the runs of an [`OutcomeBatch`].
#[derive(Debug, Clone)]
pub struct Runs<'a> {
    data: &'a [u8],
    table: &'a [u8],
    next_index: u64,
}

impl<'a> Iterator for Runs<'a> {
    type Item = OutcomeRun<'a>;

    fn next(&mut self) -> Option<OutcomeRun<'a>> {
        let (entry, rest) = self.table.split_first_chunk::<RUN_ENTRY_LEN>()?;
        self.table = rest;
        let entry = RunEntry::read(entry);
        let bytes = &self.data[entry.offset..entry.offset + entry.len];
        let first_index = self.next_index;
        // Parsing checked that the counts add up to the frame's, whose indices fit in u64.
        self.next_index += entry.count as u64;
        Some(OutcomeRun {
            first_index,
            count: entry.count,
            outcome: if entry.failure {
                RawOutcome::Failure(bytes)
            } else {
                RawOutcome::Values(bytes)
            },
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.table.len() / RUN_ENTRY_LEN;
        (n, Some(n))
    }
}

impl ExactSizeIterator for Runs<'_> {}

/// One decoded table entry.
#[derive(Debug, Clone, Copy)]
struct RunEntry {
    offset: usize,
    len: usize,
    failure: bool,
    count: usize,
    reserved: u32,
}

impl RunEntry {
    fn read(entry: &[u8; RUN_ENTRY_LEN]) -> Self {
        let len_and_status = read_u32(entry, 4);
        RunEntry {
            offset: read_u32(entry, 0) as usize,
            len: (len_and_status & !FAILURE_BIT) as usize,
            failure: len_and_status & FAILURE_BIT != 0,
            count: read_u32(entry, 8) as usize,
            reserved: read_u32(entry, 12),
        }
    }
}

impl fmt::Debug for OutcomeBatch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutcomeBatch")
            .field("chunk_id", &self.chunk_id)
            .field("task_id", &format_args!("{:016x}", self.task_id))
            .field("first_index", &self.first_index)
            .field("len", &self.len())
            .field("runs", &self.run_count())
            .finish()
    }
}

/// A message for a worker, parsed and validated (worker side).
#[derive(Debug)]
pub enum ToWorker<'a> {
    /// The first frame.
    Setup(Setup),
    /// A chunk of calls; `args` is the unvalidated archive of `Vec<Args>` (validated by the task's
    /// batch runner, which knows the type).
    CallBatch {
        /// The chunk.
        chunk_id: u64,
        /// The task.
        task_id: TaskId,
        /// Item index of the first call.
        first_index: u64,
        /// Number of calls.
        count: u32,
        /// The archive of the arguments.
        args: &'a [u8],
    },
    /// Exit cleanly.
    Shutdown,
    /// Answer with `Pong`.
    Ping {
        /// Echoed back.
        nonce: u64,
    },
    /// A shared object to keep (the frame is the object's whole memfd).
    Shared {
        /// The object's id.
        id: u64,
        /// Its type tag.
        tag: u64,
        /// Its data.
        data: &'a [u8],
    },
    /// Forget a shared object.
    Release {
        /// The object's id.
        id: u64,
    },
}

/// Bit 31 of an outcome entry's second word: the item is a failure.
const FAILURE_BIT: u32 = 1 << 31;

/// Message kinds (header offset 0).
mod kind {
    pub(super) const SETUP: u16 = 0x0001;
    pub(super) const CALL_BATCH: u16 = 0x0002;
    pub(super) const SHUTDOWN: u16 = 0x0003;
    pub(super) const PING: u16 = 0x0004;
    pub(super) const SHARED: u16 = 0x0005;
    pub(super) const RELEASE: u16 = 0x0006;
    pub(super) const HELLO: u16 = 0x0101;
    pub(super) const READY: u16 = 0x0102;
    pub(super) const INIT_FAILED: u16 = 0x0103;
    pub(super) const OUTCOMES: u16 = 0x0104;
    pub(super) const YIELDED: u16 = 0x0105;
    pub(super) const PONG: u16 = 0x0106;
    pub(super) const DRAINED: u16 = 0x0107;
}

/// The decoded fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) kind: u16,
    pub(crate) version: u16,
    pub(crate) count: u32,
    pub(crate) chunk_id: u64,
    pub(crate) task_id: u64,
    pub(crate) first_index: u64,
}

impl Header {
    fn control(kind: u16) -> Self {
        Self {
            kind,
            version: PROTOCOL_VERSION,
            count: 0,
            chunk_id: 0,
            task_id: 0,
            first_index: 0,
        }
    }

    pub(crate) fn write_to(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.kind.to_le_bytes());
        out[2..4].copy_from_slice(&self.version.to_le_bytes());
        out[4..8].copy_from_slice(&self.count.to_le_bytes());
        out[8..16].copy_from_slice(&self.chunk_id.to_le_bytes());
        out[16..24].copy_from_slice(&self.task_id.to_le_bytes());
        out[24..32].copy_from_slice(&self.first_index.to_le_bytes());
    }

    fn read(frame: &[u8]) -> Result<Self, ProtocolError> {
        if frame.len() < HEADER_LEN {
            return Err(ProtocolError::Truncated {
                len: frame.len(),
                needed: HEADER_LEN,
            });
        }
        let header = Self {
            kind: read_u16(frame, 0),
            version: read_u16(frame, 2),
            count: read_u32(frame, 4),
            chunk_id: read_u64(frame, 8),
            task_id: read_u64(frame, 16),
            first_index: read_u64(frame, 24),
        };
        Ok(header)
    }

    fn read_checked(frame: &[u8]) -> Result<Self, ProtocolError> {
        let header = Self::read(frame)?;
        if header.version != PROTOCOL_VERSION {
            return Err(ProtocolError::Version {
                ours: PROTOCOL_VERSION,
                theirs: header.version,
            });
        }
        if (frame.as_ptr() as usize + HEADER_LEN) % ARCHIVE_ALIGN != 0 {
            return Err(ProtocolError::Misaligned);
        }
        Ok(header)
    }
}

fn read_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut raw = [0; 4];
    raw.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(raw)
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(raw)
}

thread_local! {
    /// Scratch arena for the free encoding functions (parent side), reused across calls.
    static ARENA: RefCell<Arena> = RefCell::new(Arena::new());
}

/// Serializes `value` into `out` after its current contents, which must be 16-aligned in length.
pub(crate) fn append_archive<V>(value: &V, out: &mut AlignedVec) -> Result<(), ProtocolError>
where
    V: for<'a> Serialize<WireSerializer<'a>>,
{
    debug_assert_eq!(out.len() % ARCHIVE_ALIGN, 0);
    let (buffer, res) = serialize_with(value, WireWriter::Vec(std::mem::take(out)));
    *out = buffer.unwrap_or_default();
    res.map(drop)
}

/// Serializes `value` with `writer` (and the thread's scratch arena); returns the archive's
/// length or the error, and the buffer of a [`WireWriter::Vec`].
fn serialize_with<V>(
    value: &V,
    writer: WireWriter<'_>,
) -> (Option<AlignedVec>, Result<usize, ProtocolError>)
where
    V: for<'a> Serialize<WireSerializer<'a>>,
{
    ARENA.with(|arena| {
        let mut arena = arena.borrow_mut();
        let start = rkyv::ser::Positional::pos(&writer);
        let mut serializer = Serializer::new(writer, arena.acquire(), Share::new());
        let res = rkyv::api::serialize_using::<_, rancor::Error>(value, &mut serializer);
        let writer = serializer.into_writer();
        let len = rkyv::ser::Positional::pos(&writer) - start;
        let buffer = match writer {
            WireWriter::Vec(vec) => Some(vec),
            _ => None,
        };
        (buffer, res.map(|_| len).map_err(ProtocolError::Encode))
    })
}

/// Writes a frame of `header` and the archive of `value` into `out`; returns its length.
fn write_frame<V>(header: &Header, value: &V, out: FrameBuf<'_>) -> Result<usize, ProtocolError>
where
    V: for<'a> Serialize<WireSerializer<'a>>,
{
    match out {
        FrameBuf::Grow(vec) => {
            start_frame(header, vec);
            append_archive(value, vec)?;
            Ok(vec.len())
        }
        FrameBuf::Fixed(buf) => {
            if buf.len() < HEADER_LEN {
                return Err(ProtocolError::Encode(rancor::Source::new(NoRoom)));
            }
            let (head, body) = buf.split_at_mut(HEADER_LEN);
            header.write_to(head);
            let (_, len) = serialize_with(value, WireWriter::Slice { buf: body, pos: 0 });
            Ok(HEADER_LEN + len?)
        }
        FrameBuf::Measure => {
            let writer = WireWriter::Count {
                pos: 0,
                budget: MEASURE_BUDGET,
            };
            let (_, len) = serialize_with(value, writer);
            Ok(HEADER_LEN + len?)
        }
    }
}

fn start_frame(header: &Header, out: &mut AlignedVec) {
    out.clear();
    out.resize(HEADER_LEN, 0);
    header.write_to(&mut out[..HEADER_LEN]);
}

fn body(frame: &[u8]) -> &[u8] {
    &frame[HEADER_LEN..]
}

fn access<T>(bytes: &[u8]) -> Result<&T, ProtocolError>
where
    T: rkyv::Portable + for<'a> rkyv::bytecheck::CheckBytes<WireValidator<'a>>,
{
    rkyv::access::<T, rancor::Error>(bytes).map_err(ProtocolError::Archive)
}

fn deserialize<T: Archive>(archived: &T::Archived) -> Result<T, ProtocolError>
where
    T::Archived: Deserialize<T, WireDeserializer>,
{
    rkyv::deserialize::<T, rancor::Error>(archived).map_err(ProtocolError::Archive)
}

/// Serializes a slice as if it were a `Vec`, so the archive's root is an `ArchivedVec`.
struct SliceAsVec<'s, A>(&'s [A]);

impl<A: Archive> Archive for SliceAsVec<'_, A> {
    type Archived = ArchivedVec<A::Archived>;
    type Resolver = VecResolver;

    fn resolve(&self, resolver: Self::Resolver, out: Place<Self::Archived>) {
        ArchivedVec::resolve_from_len(self.0.len(), resolver, out);
    }
}

impl<A, S> Serialize<S> for SliceAsVec<'_, A>
where
    A: Serialize<S>,
    S: Fallible + Allocator + Writer + ?Sized,
{
    fn serialize(&self, serializer: &mut S) -> Result<VecResolver, S::Error> {
        ArchivedVec::serialize_from_slice(self.0, serializer)
    }
}

/// Serializes two slices, one after the other, as if they were one `Vec` (the two halves of a
/// ring buffer): a plain copy of both when the items' archived form is their native form.
struct TwoSlicesAsVec<'s, A>(&'s [A], &'s [A]);

impl<A: Archive> Archive for TwoSlicesAsVec<'_, A> {
    type Archived = ArchivedVec<A::Archived>;
    type Resolver = VecResolver;

    fn resolve(&self, resolver: Self::Resolver, out: Place<Self::Archived>) {
        ArchivedVec::resolve_from_len(self.0.len() + self.1.len(), resolver, out);
    }
}

impl<A, S> Serialize<S> for TwoSlicesAsVec<'_, A>
where
    A: Serialize<S>,
    S: Fallible + Allocator + Writer + ?Sized,
{
    fn serialize(&self, serializer: &mut S) -> Result<VecResolver, S::Error> {
        if !A::COPY_OPTIMIZATION.is_enabled() {
            let (front, back) = (self.0, self.1);
            let items = (0..front.len() + back.len()).map(|i| match front.get(i) {
                Some(item) => item,
                None => &back[i - front.len()],
            });
            return ArchivedVec::<A::Archived>::serialize_from_iter::<A, _, _>(items, serializer);
        }
        let pos = rkyv::ser::WriterExt::align_for::<A::Archived>(serializer)?;
        for half in [self.0, self.1] {
            // SAFETY: `COPY_OPTIMIZATION` is enabled only for types whose archived form is
            // their native bytes (rkyv's `[T]` serializer writes them the same way), and a
            // slice of initialized `A` is `size_of_val` readable bytes.
            let bytes = unsafe {
                std::slice::from_raw_parts(half.as_ptr().cast::<u8>(), std::mem::size_of_val(half))
            };
            serializer.write(bytes)?;
        }
        Ok(VecResolver::from_pos(pos))
    }
}

/// Serializes an iterator's items as if they were a `Vec`.
struct IterAsVec<I>(I);

impl<'i, A, I> Archive for IterAsVec<I>
where
    A: Archive + 'i,
    I: ExactSizeIterator<Item = &'i A> + Clone,
{
    type Archived = ArchivedVec<A::Archived>;
    type Resolver = VecResolver;

    fn resolve(&self, resolver: Self::Resolver, out: Place<Self::Archived>) {
        ArchivedVec::resolve_from_len(self.0.len(), resolver, out);
    }
}

impl<'i, A, I, S> Serialize<S> for IterAsVec<I>
where
    A: Serialize<S> + 'i,
    I: ExactSizeIterator<Item = &'i A> + Clone,
    S: Fallible + Allocator + Writer + ?Sized,
{
    fn serialize(&self, serializer: &mut S) -> Result<VecResolver, S::Error> {
        ArchivedVec::<A::Archived>::serialize_from_iter::<A, _, _>(self.0.clone(), serializer)
    }
}

// ---------------------------------------------------------------------------------------------
// Parent side.

/// Encodes the `Setup` frame into `out` (cleared first).
///
/// # Errors
///
/// [`ProtocolError::Encode`] if serialization fails (it does not for these types in practice).
pub fn encode_setup(setup: &Setup, out: &mut AlignedVec) -> Result<(), ProtocolError> {
    start_frame(&Header::control(kind::SETUP), out);
    append_archive(setup, out)
}

/// Encodes task `T` with `args` as an initializer for [`Setup::initializer`].
///
/// # Errors
///
/// [`ProtocolError::Encode`] if the arguments cannot be serialized.
pub fn encode_initializer<T: Task>(args: &T::Args) -> Result<InitializerCall, ProtocolError> {
    let mut out = AlignedVec::new();
    append_archive(&SliceAsVec(std::slice::from_ref(args)), &mut out)?;
    Ok(InitializerCall {
        task_id: T::ID,
        args: out.to_vec(),
    })
}

/// Encodes one chunk of calls of task `T` into `out` (cleared first): a header and ONE archive
/// of all arguments. Items are numbered from `first_index`.
///
/// # Errors
///
/// [`ProtocolError::Encode`] if an argument cannot be serialized,
/// [`ProtocolError::TooManyItems`] for more than `u32::MAX` items.
///
/// # Examples
///
/// ```
/// use procpool_worker::{builtin, protocol};
/// let mut frame = procpool_worker::AlignedVec::new();
/// protocol::encode_call_batch::<builtin::add_one>(7, 0, &[1, 2, 3], &mut frame)?;
/// # Ok::<(), procpool_worker::ProtocolError>(())
/// ```
pub fn encode_call_batch<T: Task>(
    chunk_id: u64,
    first_index: u64,
    args: &[T::Args],
    out: &mut AlignedVec,
) -> Result<(), ProtocolError> {
    let header = call_header::<T>(chunk_id, first_index, args.len())?;
    write_frame(&header, &SliceAsVec(args), FrameBuf::Grow(out)).map(drop)
}

/// Like [`encode_call_batch`], for arguments in two slices (e.g. the halves of a
/// `VecDeque`'s range): items `front` then `back`. Plain-data arguments are copied, not
/// serialized one by one.
///
/// # Errors
///
/// As [`encode_call_batch`].
pub fn encode_call_batch_slices<T: Task>(
    chunk_id: u64,
    first_index: u64,
    front: &[T::Args],
    back: &[T::Args],
    out: &mut AlignedVec,
) -> Result<(), ProtocolError> {
    encode_call_batch_slices_to::<T>(chunk_id, first_index, front, back, FrameBuf::Grow(out))
        .map(drop)
}

/// [`encode_call_batch_slices`] into any [`FrameBuf`]: measures the frame, or writes it in
/// place. Returns the frame's length.
///
/// # Errors
///
/// As [`encode_call_batch`]; also [`ProtocolError::Encode`] when a fixed buffer is too short
/// or measuring would take more than a few write calls.
pub fn encode_call_batch_slices_to<T: Task>(
    chunk_id: u64,
    first_index: u64,
    front: &[T::Args],
    back: &[T::Args],
    out: FrameBuf<'_>,
) -> Result<usize, ProtocolError> {
    let n = front.len() + back.len();
    let header = call_header::<T>(chunk_id, first_index, n)?;
    write_frame(&header, &TwoSlicesAsVec(front, back), out)
}

/// Like [`encode_call_batch`], for arguments that are not contiguous.
///
/// # Errors
///
/// As [`encode_call_batch`].
pub fn encode_call_batch_iter<'i, T, I>(
    chunk_id: u64,
    first_index: u64,
    args: I,
    out: &mut AlignedVec,
) -> Result<(), ProtocolError>
where
    T: Task,
    I: IntoIterator<Item = &'i T::Args>,
    I::IntoIter: ExactSizeIterator + Clone,
{
    encode_call_batch_iter_to::<T, I>(chunk_id, first_index, args, FrameBuf::Grow(out)).map(drop)
}

/// [`encode_call_batch_iter`] into any [`FrameBuf`]; returns the frame's length.
///
/// # Errors
///
/// As [`encode_call_batch_slices_to`].
pub fn encode_call_batch_iter_to<'i, T, I>(
    chunk_id: u64,
    first_index: u64,
    args: I,
    out: FrameBuf<'_>,
) -> Result<usize, ProtocolError>
where
    T: Task,
    I: IntoIterator<Item = &'i T::Args>,
    I::IntoIter: ExactSizeIterator + Clone,
{
    let iter = args.into_iter();
    let header = call_header::<T>(chunk_id, first_index, iter.len())?;
    write_frame(&header, &IterAsVec(iter), out)
}

fn call_header<T: Task>(
    chunk_id: u64,
    first_index: u64,
    n: usize,
) -> Result<Header, ProtocolError> {
    Ok(Header {
        kind: kind::CALL_BATCH,
        version: PROTOCOL_VERSION,
        count: u32::try_from(n).map_err(|_| ProtocolError::TooManyItems(n))?,
        chunk_id,
        task_id: T::ID,
        first_index,
    })
}

/// Encodes `Shutdown` into `out` (cleared first).
pub fn encode_shutdown(out: &mut AlignedVec) {
    start_frame(&Header::control(kind::SHUTDOWN), out);
}

/// Encodes `Ping` with `nonce` into `out` (cleared first).
pub fn encode_ping(nonce: u64, out: &mut AlignedVec) {
    start_frame(
        &Header {
            chunk_id: nonce,
            ..Header::control(kind::PING)
        },
        out,
    );
}

/// Parses and validates a frame from a worker. Output archives are validated later, typed, by
/// [`decode_output`]; everything else (headers, tables, failures, hello) is checked here.
///
/// # Errors
///
/// A [`ProtocolError`] for anything malformed; it never panics on any input.
pub fn parse_from_worker(frame: &[u8]) -> Result<FromWorker<'_>, ProtocolError> {
    let header = Header::read_checked(frame)?;
    let body = body(frame);
    match header.kind {
        kind::HELLO => {
            let hello = access::<Archived<Hello>>(body)?;
            Ok(FromWorker::Hello(HelloInfo {
                pid: hello.pid.to_native(),
                fingerprint: hello.fingerprint.to_native(),
                task_count: hello.task_count.to_native(),
                task_ids: {
                    let mut ids: Vec<TaskId> =
                        hello.task_ids.iter().map(|id| id.to_native()).collect();
                    ids.sort_unstable();
                    ids
                },
            }))
        }
        kind::READY => Ok(FromWorker::Ready),
        kind::INIT_FAILED => Ok(FromWorker::InitFailed(decode_failure(body)?)),
        kind::OUTCOMES => parse_outcomes(&header, body).map(FromWorker::Outcomes),
        kind::YIELDED => Ok(FromWorker::Yielded {
            chunk_id: header.chunk_id,
            next_index: header.first_index,
        }),
        kind::PONG => Ok(FromWorker::Pong {
            nonce: header.chunk_id,
        }),
        kind::DRAINED => Ok(FromWorker::Drained),
        other => Err(ProtocolError::UnexpectedKind(other)),
    }
}

fn parse_outcomes<'a>(header: &Header, body: &'a [u8]) -> Result<OutcomeBatch<'a>, ProtocolError> {
    check_index_range(header)?;
    let truncated = |needed: usize| ProtocolError::Truncated {
        len: body.len() + HEADER_LEN,
        needed: needed.saturating_add(HEADER_LEN),
    };
    let Some(rest) = body.len().checked_sub(RUN_TRAILER_LEN) else {
        return Err(truncated(RUN_TRAILER_LEN));
    };
    let runs = read_u32(body, rest) as usize;
    let busy_ns = read_u32(body, rest + 4);
    let table_len = runs
        .checked_mul(RUN_ENTRY_LEN)
        .ok_or(ProtocolError::TooManyItems(runs))?;
    let Some(data_len) = rest.checked_sub(table_len) else {
        return Err(truncated(table_len.saturating_add(RUN_TRAILER_LEN)));
    };
    let (data, table) = body[..rest].split_at(data_len);
    let mut total: u64 = 0;
    for (index, entry) in table.chunks_exact(RUN_ENTRY_LEN).enumerate() {
        let entry = RunEntry::read(entry.try_into().expect("chunks of RUN_ENTRY_LEN"));
        let fits = entry
            .offset
            .checked_add(entry.len)
            .is_some_and(|end| end <= data.len());
        let count_ok = if entry.failure {
            entry.count == 1
        } else {
            entry.count >= 1
        };
        if !fits || !count_ok || entry.reserved != 0 {
            return Err(ProtocolError::BadOutcomeEntry { index });
        }
        total += entry.count as u64;
    }
    if total != u64::from(header.count) {
        return Err(ProtocolError::CountMismatch {
            header: header.count as usize,
            body: usize::try_from(total).unwrap_or(usize::MAX),
        });
    }
    Ok(OutcomeBatch {
        chunk_id: header.chunk_id,
        task_id: header.task_id,
        first_index: header.first_index,
        count: header.count as usize,
        data,
        table,
        busy_ns,
    })
}

/// Refuses a frame whose items `first_index .. first_index + count` would overflow `u64`,
/// so every later `first_index + pos` (pos < count) is exact; returns `first_index`.
fn check_index_range(header: &Header) -> Result<u64, ProtocolError> {
    match header.first_index.checked_add(u64::from(header.count)) {
        Some(_) => Ok(header.first_index),
        None => Err(ProtocolError::IndexOverflow {
            first_index: header.first_index,
            count: header.count,
        }),
    }
}

/// Validates a `Hello` frame and checks it against this side's version and `expected_fingerprint`.
///
/// # Errors
///
/// A [`HandshakeError`] naming what does not match.
pub fn check_hello(frame: &[u8], expected_fingerprint: u64) -> Result<HelloInfo, HandshakeError> {
    let header = Header::read(frame)?;
    if header.kind != kind::HELLO {
        return Err(HandshakeError::NotHello(header.kind));
    }
    if header.version != PROTOCOL_VERSION {
        return Err(HandshakeError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs: header.version,
        });
    }
    let FromWorker::Hello(info) = parse_from_worker(frame)? else {
        return Err(HandshakeError::NotHello(header.kind));
    };
    if info.fingerprint != expected_fingerprint {
        return Err(HandshakeError::FingerprintMismatch {
            ours: expected_fingerprint,
            theirs: info.fingerprint,
        });
    }
    Ok(info)
}

/// Validates a `Hello` frame and checks that the worker has every task in `required`, for a
/// worker program other than this executable (the standalone `procpool-worker`, an attached
/// worker), whose table legitimately differs. An id covers path, name and signature, so a
/// task present on both sides is called with the same types.
///
/// # Errors
///
/// A [`HandshakeError`]: `MissingTasks` names what the worker lacks.
pub fn check_hello_has_tasks(
    frame: &[u8],
    required: &[TaskId],
) -> Result<HelloInfo, HandshakeError> {
    let header = Header::read(frame)?;
    if header.kind != kind::HELLO {
        return Err(HandshakeError::NotHello(header.kind));
    }
    if header.version != PROTOCOL_VERSION {
        return Err(HandshakeError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs: header.version,
        });
    }
    let FromWorker::Hello(info) = parse_from_worker(frame)? else {
        return Err(HandshakeError::NotHello(header.kind));
    };
    let missing: Vec<String> = required
        .iter()
        .filter(|&&id| !info.has_task(id))
        .map(|&id| match crate::registry::lookup(id) {
            Some(entry) => format!("{} {}", entry.name, entry.signature),
            None => format!("{id:016x}"),
        })
        .collect();
    if !missing.is_empty() {
        return Err(HandshakeError::MissingTasks { missing });
    }
    Ok(info)
}

/// Decodes one archive of a single `T::Output` (validating it first). Outputs travel in runs;
/// this reads a lone value, e.g. one stored by the caller.
///
/// # Errors
///
/// [`ProtocolError::Archive`] when the bytes are not a valid archive of `T::Output`.
pub fn decode_output<T: Task>(bytes: &[u8]) -> Result<T::Output, ProtocolError> {
    let archived = access::<Archived<T::Output>>(bytes)?;
    deserialize::<T::Output>(archived)
}

/// Decodes a run of outputs ([`RawOutcome::Values`]) of task `T` holding `count` items: one
/// validation and one deserialization for the whole run (a memcpy when `T::Output`'s archived
/// form is its native form, as for integers and byte vectors).
///
/// # Errors
///
/// [`ProtocolError::Archive`] when the bytes are not a valid archive of `Vec<T::Output>`,
/// [`ProtocolError::CountMismatch`] when it does not hold `count` items.
///
/// # Examples
///
/// ```
/// use procpool_worker::protocol::{self, FromWorker};
/// use procpool_worker::{builtin, AlignedVec, LocalRunner};
///
/// let mut calls = AlignedVec::new();
/// protocol::encode_call_batch::<builtin::add_one>(1, 10, &[1, 2], &mut calls)?;
/// let mut got = Vec::new();
/// LocalRunner::new().run(&calls, |frame| {
///     let Ok(FromWorker::Outcomes(batch)) = protocol::parse_from_worker(frame) else { return };
///     let (first, bytes) = batch.values_run().expect("no failures");
///     assert_eq!(first, 10);
///     got = protocol::decode_values::<builtin::add_one>(bytes, batch.len()).unwrap();
/// })?;
/// assert_eq!(got, [2, 3]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn decode_values<T: Task>(bytes: &[u8], count: usize) -> Result<Vec<T::Output>, ProtocolError> {
    let archived = access::<ArchivedVec<Archived<T::Output>>>(bytes)?;
    if archived.len() != count {
        return Err(ProtocolError::CountMismatch {
            header: count,
            body: archived.len(),
        });
    }
    // Byte buffers, the usual large result, go into fresh memory advised as huge pages.
    let any: &dyn Any = archived;
    if let Some(buffers) = any.downcast_ref::<ArchivedVec<ArchivedVec<u8>>>() {
        let values: Box<dyn Any> = Box::new(
            buffers
                .iter()
                .map(|bytes| procpool_ipc::copy_to_new_vec(bytes.as_slice()))
                .collect::<Vec<Vec<u8>>>(),
        );
        if let Ok(values) = values.downcast::<Vec<T::Output>>() {
            return Ok(*values);
        }
    }
    deserialize::<Vec<T::Output>>(archived)
}

/// [`decode_values`] for a run of one value (the outcome of a lone call): the value itself,
/// without the `Vec` around it.
///
/// # Errors
///
/// As [`decode_values`]; a run of more or fewer than one value is a
/// [`ProtocolError::CountMismatch`].
///
/// # Examples
///
/// ```
/// use procpool_worker::protocol::{self, FromWorker};
/// use procpool_worker::{builtin, AlignedVec, LocalRunner};
///
/// let mut calls = AlignedVec::new();
/// protocol::encode_call_batch::<builtin::add_one>(1, 10, &[41], &mut calls)?;
/// let mut got = None;
/// LocalRunner::new().run(&calls, |frame| {
///     if let Ok(FromWorker::Outcomes(batch)) = protocol::parse_from_worker(frame) {
///         let (_, bytes) = batch.values_run().expect("one run of successes");
///         got = Some(protocol::decode_value::<builtin::add_one>(bytes));
///     }
/// })?;
/// assert_eq!(got.unwrap()?, 42);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn decode_value<T: Task>(bytes: &[u8]) -> Result<T::Output, ProtocolError> {
    let archived = access::<ArchivedVec<Archived<T::Output>>>(bytes)?;
    let [value] = archived.as_slice() else {
        return Err(ProtocolError::CountMismatch {
            header: 1,
            body: archived.len(),
        });
    };
    // A byte buffer goes into fresh memory advised as huge pages, as in `decode_values`.
    let any: &dyn Any = value;
    if let Some(bytes) = any.downcast_ref::<ArchivedVec<u8>>() {
        let buffer: Box<dyn Any> = Box::new(procpool_ipc::copy_to_new_vec(bytes.as_slice()));
        if let Ok(buffer) = buffer.downcast::<T::Output>() {
            return Ok(*buffer);
        }
    }
    deserialize::<T::Output>(value)
}

/// Decodes every outcome of `batch` as task `T`'s, item by item: `(item index, outcome)`,
/// where a malformed run is a [`ProtocolError`] for each of its items. Each run is validated
/// and decoded once.
///
/// # Examples
///
/// ```
/// use procpool_worker::protocol::{self, FromWorker};
/// use procpool_worker::{builtin, AlignedVec, LocalRunner};
///
/// let mut calls = AlignedVec::new();
/// protocol::encode_call_batch::<builtin::add_one>(1, 10, &[1, 2], &mut calls)?;
/// let mut got = Vec::new();
/// LocalRunner::new().run(&calls, |frame| {
///     let Ok(FromWorker::Outcomes(batch)) = protocol::parse_from_worker(frame) else { return };
///     for (index, outcome) in protocol::decode_outputs::<builtin::add_one>(&batch) {
///         got.push((index, outcome.unwrap().unwrap()));
///     }
/// })?;
/// assert_eq!(got, [(10, 2), (11, 3)]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn decode_outputs<'a, T: Task>(batch: &OutcomeBatch<'a>) -> DecodeOutputs<'a, T> {
    DecodeOutputs {
        runs: batch.runs(),
        current: Current::Done,
        remaining: batch.len(),
    }
}

/// One decoded outcome: the item's output, its failure, or why its run could not be read.
pub type DecodedOutcome<O> = Result<Result<O, TaskFailure>, ProtocolError>;

/// The items of [`decode_outputs`]: `(item index, outcome)` in item order, one run decoded at
/// a time.
pub struct DecodeOutputs<'a, T: Task> {
    runs: Runs<'a>,
    current: Current<T::Output>,
    remaining: usize,
}

/// The run [`DecodeOutputs`] is handing out.
enum Current<O> {
    /// Nothing left in it.
    Done,
    /// Decoded values; the next has this index.
    Values(u64, std::vec::IntoIter<O>),
    /// A run that could not be decoded: its remaining item indices and the reason.
    Unreadable(std::ops::Range<u64>, String),
}

impl<T: Task> Iterator for DecodeOutputs<'_, T> {
    type Item = (u64, DecodedOutcome<T::Output>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match &mut self.current {
                Current::Values(index, values) => {
                    if let Some(value) = values.next() {
                        let at = *index;
                        *index += 1;
                        self.remaining -= 1;
                        return Some((at, Ok(Ok(value))));
                    }
                }
                Current::Unreadable(indices, reason) => {
                    if let Some(index) = indices.next() {
                        self.remaining -= 1;
                        let error = ProtocolError::BadRun {
                            index,
                            reason: reason.clone(),
                        };
                        return Some((index, Err(error)));
                    }
                }
                Current::Done => {}
            }
            let run = self.runs.next()?;
            let indices = run.first_index..run.first_index + run.count as u64;
            match run.outcome {
                RawOutcome::Values(bytes) => {
                    self.current = match decode_values::<T>(bytes, run.count) {
                        Ok(values) => Current::Values(run.first_index, values.into_iter()),
                        Err(error) => Current::Unreadable(indices, error.to_string()),
                    };
                }
                RawOutcome::Failure(bytes) => {
                    self.current = Current::Done;
                    self.remaining -= 1;
                    return Some((run.first_index, decode_failure(bytes).map(Err)));
                }
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl<T: Task> ExactSizeIterator for DecodeOutputs<'_, T> {}

impl<T: Task> fmt::Debug for DecodeOutputs<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecodeOutputs")
            .field("remaining", &self.remaining)
            .finish()
    }
}

/// Decodes an item's failure bytes.
///
/// # Errors
///
/// [`ProtocolError::Archive`] when the bytes are not a valid archive of a [`TaskFailure`].
pub fn decode_failure(bytes: &[u8]) -> Result<TaskFailure, ProtocolError> {
    let archived = access::<Archived<TaskFailure>>(bytes)?;
    deserialize::<TaskFailure>(archived)
}

// ---------------------------------------------------------------------------------------------
// Worker side.

/// Parses and validates a frame from the parent (worker side).
///
/// # Errors
///
/// A [`ProtocolError`] for anything malformed; it never panics on any input.
pub fn parse_to_worker(frame: &[u8]) -> Result<ToWorker<'_>, ProtocolError> {
    let header = Header::read_checked(frame)?;
    let body = body(frame);
    match header.kind {
        kind::SETUP => {
            let setup = access::<Archived<Setup>>(body)?;
            Ok(ToWorker::Setup(deserialize::<Setup>(setup)?))
        }
        kind::CALL_BATCH => Ok(ToWorker::CallBatch {
            first_index: check_index_range(&header)?,
            chunk_id: header.chunk_id,
            task_id: header.task_id,
            count: header.count,
            args: body,
        }),
        kind::SHUTDOWN => Ok(ToWorker::Shutdown),
        kind::PING => Ok(ToWorker::Ping {
            nonce: header.chunk_id,
        }),
        kind::SHARED => {
            let offset = crate::shared::DATA_OFFSET;
            if header.first_index != offset as u64 || frame.len() < offset {
                return Err(ProtocolError::Truncated {
                    len: frame.len(),
                    needed: offset,
                });
            }
            Ok(ToWorker::Shared {
                id: header.chunk_id,
                tag: header.task_id,
                data: &frame[offset..],
            })
        }
        kind::RELEASE => Ok(ToWorker::Release {
            id: header.chunk_id,
        }),
        other => Err(ProtocolError::UnexpectedKind(other)),
    }
}

/// Writes the header of a shared object's memfd (see `Shared` above) into `out`.
pub(crate) fn encode_shared_header(id: u64, tag: u64, out: &mut [u8; crate::shared::DATA_OFFSET]) {
    out.fill(0);
    Header {
        chunk_id: id,
        task_id: tag,
        first_index: crate::shared::DATA_OFFSET as u64,
        ..Header::control(kind::SHARED)
    }
    .write_to(&mut out[..HEADER_LEN]);
}

/// Encodes `Release` of shared object `id` into `out` (cleared first).
pub fn encode_release(id: u64, out: &mut AlignedVec) {
    start_frame(
        &Header {
            chunk_id: id,
            ..Header::control(kind::RELEASE)
        },
        out,
    );
}

/// Validates a call batch's argument archive as `Vec<T::Args>` with `count` items.
pub(crate) fn access_args<T: Task>(
    args: &[u8],
    count: u32,
) -> Result<&ArchivedVec<Archived<T::Args>>, ProtocolError> {
    let archived = access::<ArchivedVec<Archived<T::Args>>>(args)?;
    if archived.len() != count as usize {
        return Err(ProtocolError::CountMismatch {
            header: count as usize,
            body: archived.len(),
        });
    }
    Ok(archived)
}

/// Encodes a worker's `Hello` into `out` (cleared first).
pub(crate) fn encode_hello(hello: &Hello, out: &mut AlignedVec) -> Result<(), ProtocolError> {
    debug_assert!(hello.task_ids.is_sorted());
    start_frame(&Header::control(kind::HELLO), out);
    append_archive(hello, out)
}

/// Encodes `Ready`.
pub(crate) fn encode_ready(out: &mut AlignedVec) {
    start_frame(&Header::control(kind::READY), out);
}

/// Encodes `InitFailed`.
pub(crate) fn encode_init_failed(
    failure: &TaskFailure,
    out: &mut AlignedVec,
) -> Result<(), ProtocolError> {
    start_frame(&Header::control(kind::INIT_FAILED), out);
    append_archive(failure, out)
}

/// Encodes `Yielded`.
pub(crate) fn encode_yielded(chunk_id: u64, next_index: u64, out: &mut AlignedVec) {
    start_frame(
        &Header {
            chunk_id,
            first_index: next_index,
            ..Header::control(kind::YIELDED)
        },
        out,
    );
}

/// Encodes `Pong`.
pub(crate) fn encode_pong(nonce: u64, out: &mut AlignedVec) {
    start_frame(
        &Header {
            chunk_id: nonce,
            ..Header::control(kind::PONG)
        },
        out,
    );
}

/// Encodes `Drained`.
pub(crate) fn encode_drained(out: &mut AlignedVec) {
    start_frame(&Header::control(kind::DRAINED), out);
}

/// Builds `Outcomes` frames run by run, reusing its buffers and serializer arena.
///
/// The data area is serialized in place after the header; [`OutcomeEncoder::finish`] appends the
/// table and fills in the header. Each run is an independent archive (sharing state is reset
/// per run), so the parent can decode any one alone.
pub(crate) struct OutcomeEncoder<'arena> {
    /// Writer holds header + data area; the allocator is the worker's reused arena.
    serializer: Serializer<WireWriter<'arena>, ArenaHandle<'arena>, Share>,
    /// The encoded table entries for the runs written since the last reset.
    table: Vec<u8>,
    /// Items in those runs.
    items: usize,
    chunk_id: u64,
    task_id: TaskId,
    first_index: u64,
    /// The largest encoded output of one item that may be sent; 0 for no limit.
    max_item: usize,
    /// The trailer's `busy_ns` of the frame being built.
    busy_ns: u32,
}

/// Where an [`OutcomeEncoder`] can be rolled back to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mark {
    data: usize,
    table: usize,
    items: usize,
}

impl<'arena> OutcomeEncoder<'arena> {
    /// An encoder writing into `buffer` (its capacity is reused) with `arena` for scratch space.
    pub(crate) fn new(buffer: AlignedVec, arena: ArenaHandle<'arena>) -> Self {
        let mut encoder = Self {
            serializer: Serializer::new(WireWriter::Vec(buffer), arena, Share::new()),
            table: Vec::new(),
            items: 0,
            chunk_id: 0,
            task_id: 0,
            first_index: 0,
            max_item: 0,
            busy_ns: BUSY_UNKNOWN,
        };
        encoder.reset(0, 0, 0);
        encoder
    }

    /// Gives the buffer back for reuse.
    pub(crate) fn into_buffer(self) -> AlignedVec {
        match self.serializer.into_writer() {
            WireWriter::Vec(buffer) => buffer,
            _ => AlignedVec::new(),
        }
    }

    /// Starts a new frame for items of `chunk_id` from `first_index` on.
    pub(crate) fn reset(&mut self, chunk_id: u64, task_id: TaskId, first_index: u64) {
        self.serializer.writer.vec_mut().clear();
        self.serializer
            .writer
            .vec_mut()
            .extend_from_slice(&[0; HEADER_LEN]);
        self.table.clear();
        self.items = 0;
        self.busy_ns = BUSY_UNKNOWN;
        self.chunk_id = chunk_id;
        self.task_id = task_id;
        self.first_index = first_index;
    }

    /// Records the worker's busy time for the frame's items (the trailer's `busy_ns`; unknown
    /// until set, and again after each reset).
    pub(crate) fn set_busy(&mut self, busy: Duration) {
        self.busy_ns = busy_field(Some(busy));
    }

    /// Number of outcomes (items) since the last reset.
    pub(crate) fn len(&self) -> usize {
        self.items
    }

    /// Bytes of data written since the last reset.
    pub(crate) fn data_len(&self) -> usize {
        self.serializer.writer.vec().len() - HEADER_LEN
    }

    /// The first item index the next `reset` should use to continue this chunk.
    pub(crate) fn next_index(&self) -> u64 {
        // `parse_to_worker` refused call batches whose index range overflows.
        self.first_index.wrapping_add(self.items as u64)
    }

    /// Sets the largest encoded output of one item that may be sent (0: no limit).
    pub(crate) fn set_max_item(&mut self, bytes: usize) {
        self.max_item = bytes;
    }

    /// The largest encoded output of one item that may be sent (0: no limit).
    pub(crate) fn max_item(&self) -> usize {
        self.max_item
    }

    /// Bytes of data written since `mark` (the run's archive and its alignment padding).
    pub(crate) fn bytes_since(&self, mark: Mark) -> usize {
        self.serializer.writer.vec().len().saturating_sub(mark.data)
    }

    /// A point to roll back to if a run panics half-way through serialization.
    pub(crate) fn mark(&self) -> Mark {
        Mark {
            data: self.serializer.writer.vec().len(),
            table: self.table.len(),
            items: self.items,
        }
    }

    /// Forgets everything written after `mark`.
    pub(crate) fn rollback(&mut self, mark: Mark) {
        self.serializer.writer.vec_mut().resize(mark.data, 0);
        self.table.truncate(mark.table);
        self.items = mark.items;
        self.serializer.sharing = Share::new();
    }

    /// Appends one run of successes: ONE archive of `values` as a `Vec`. On error nothing is
    /// appended.
    #[inline]
    pub(crate) fn push_values<V>(&mut self, values: &[V]) -> Result<(), rancor::Error>
    where
        V: for<'a> Serialize<WireSerializer<'a>>,
    {
        if values.is_empty() {
            return Ok(());
        }
        self.push_archive(0, values.len(), &SliceAsVec(values))
    }

    /// Appends a failure outcome of one item.
    pub(crate) fn push_failure(&mut self, failure: &TaskFailure) {
        if self.push_archive(FAILURE_BIT, 1, failure).is_err() {
            // A `TaskFailure` of plain strings always serializes into a growable vector;
            // should that ever change, the item still gets a well-formed (empty-message) failure.
            let fallback = TaskFailure::new(failure.kind, String::new());
            let _ = self.push_archive(FAILURE_BIT, 1, &fallback);
        }
    }

    #[inline]
    fn push_archive<V>(&mut self, status: u32, count: usize, value: &V) -> Result<(), rancor::Error>
    where
        V: for<'a> Serialize<WireSerializer<'a>>,
    {
        let start = self.serializer.writer.vec().len();
        // Every run starts 16-aligned, so its bytes can be read in place.
        let begin = start.next_multiple_of(ARCHIVE_ALIGN);
        self.serializer.writer.vec_mut().resize(begin, 0);
        let res = rkyv::api::serialize_using::<_, rancor::Error>(value, &mut self.serializer);
        // Sharing must never span runs: each archive stands alone.
        self.serializer.sharing = Share::new();
        let end = self.serializer.writer.vec().len();
        let len = u32::try_from(end - begin)
            .ok()
            .filter(|len| len & FAILURE_BIT == 0);
        let count32 = u32::try_from(count).ok();
        match (res, len, count32) {
            (Ok(_), Some(len), Some(count32)) => {
                let mut entry = [0; RUN_ENTRY_LEN];
                // The data area is bounded by the length check above, times the run count.
                let offset = (begin - HEADER_LEN) as u32;
                entry[..4].copy_from_slice(&offset.to_le_bytes());
                entry[4..8].copy_from_slice(&(len | status).to_le_bytes());
                entry[8..12].copy_from_slice(&count32.to_le_bytes());
                self.table.extend_from_slice(&entry);
                self.items += count;
                Ok(())
            }
            (res, _, _) => {
                self.serializer.writer.vec_mut().resize(start, 0);
                Err(res.err().unwrap_or_else(|| {
                    <rancor::Error as rancor::Source>::new(OutcomeTooLarge(end - begin))
                }))
            }
        }
    }

    /// Appends the table, fills in the header and returns the finished frame.
    /// The frame stays valid until the next `reset`.
    pub(crate) fn finish(&mut self) -> &[u8] {
        let header = Header {
            kind: kind::OUTCOMES,
            version: PROTOCOL_VERSION,
            count: self.items as u32,
            chunk_id: self.chunk_id,
            task_id: self.task_id,
            first_index: self.first_index,
        };
        let runs = (self.table.len() / RUN_ENTRY_LEN) as u32;
        let writer = self.serializer.writer.vec_mut();
        writer.extend_from_slice(&self.table);
        writer.extend_from_slice(&runs.to_le_bytes());
        writer.extend_from_slice(&self.busy_ns.to_le_bytes());
        header.write_to(&mut writer[..HEADER_LEN]);
        writer.as_slice()
    }
}

/// Measures the archive of `values` as one run of an `Outcomes` frame (see
/// [`write_values_frame`]); returns the frame's length, or an error when measuring is not cheap
/// (more than a few write calls) or the serializer fails.
pub(crate) fn measure_values_frame<V>(values: &[V]) -> Result<usize, ProtocolError>
where
    V: for<'a> Serialize<WireSerializer<'a>>,
{
    let writer = WireWriter::Count {
        pos: 0,
        budget: MEASURE_BUDGET,
    };
    let (_, len) = serialize_with(&SliceAsVec(values), writer);
    Ok(HEADER_LEN + len? + RUN_ENTRY_LEN + RUN_TRAILER_LEN)
}

/// Bytes of a one-run `Outcomes` frame besides the run's archive (header, table, trailer).
pub(crate) const fn values_frame_overhead() -> usize {
    HEADER_LEN + RUN_ENTRY_LEN + RUN_TRAILER_LEN
}

/// Writes an `Outcomes` frame of exactly one run, the successes `values` of items
/// `first_index..` of `chunk_id`, that kept the worker busy for `busy` (if measured), in place
/// into `buf` (16-aligned, at least as long as [`measure_values_frame`] said): the same bytes
/// [`OutcomeEncoder`] makes of one run, without the intermediate buffer. Returns the frame's
/// length.
pub(crate) fn write_values_frame<V>(
    chunk_id: u64,
    task_id: TaskId,
    first_index: u64,
    values: &[V],
    busy: Option<Duration>,
    buf: &mut [u8],
) -> Result<usize, ProtocolError>
where
    V: for<'a> Serialize<WireSerializer<'a>>,
{
    let no_room = || ProtocolError::Encode(rancor::Source::new(NoRoom));
    let count =
        u32::try_from(values.len()).map_err(|_| ProtocolError::TooManyItems(values.len()))?;
    if buf.len() < HEADER_LEN {
        return Err(no_room());
    }
    let (head, body) = buf.split_at_mut(HEADER_LEN);
    let (_, len) = serialize_with(&SliceAsVec(values), WireWriter::Slice { buf: body, pos: 0 });
    let len = len?;
    let len32 = u32::try_from(len)
        .ok()
        .filter(|len| len & FAILURE_BIT == 0)
        .ok_or_else(|| ProtocolError::Encode(rancor::Source::new(OutcomeTooLarge(len))))?;
    let tail = body
        .get_mut(len..len + RUN_ENTRY_LEN + RUN_TRAILER_LEN)
        .ok_or_else(no_room)?;
    tail.fill(0);
    // The run starts at offset 0 of the (16-aligned) body.
    tail[4..8].copy_from_slice(&len32.to_le_bytes());
    tail[8..12].copy_from_slice(&count.to_le_bytes());
    tail[RUN_ENTRY_LEN..RUN_ENTRY_LEN + 4].copy_from_slice(&1_u32.to_le_bytes());
    tail[RUN_ENTRY_LEN + 4..].copy_from_slice(&busy_field(busy).to_le_bytes());
    Header {
        kind: kind::OUTCOMES,
        version: PROTOCOL_VERSION,
        count,
        chunk_id,
        task_id,
        first_index,
    }
    .write_to(head);
    Ok(HEADER_LEN + len + RUN_ENTRY_LEN + RUN_TRAILER_LEN)
}

impl OutcomeEncoder<'_> {
    /// The chunk, task and first item index of the frame being built.
    pub(crate) fn frame_start(&self) -> (u64, TaskId, u64) {
        (self.chunk_id, self.task_id, self.first_index)
    }
}

/// One outcome's archive does not fit the 31-bit length of a table entry.
#[derive(Debug, thiserror::Error)]
#[error("outcomes of {0} bytes exceed the 2 GiB limit of one run")]
struct OutcomeTooLarge(usize);

impl fmt::Debug for OutcomeEncoder<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutcomeEncoder")
            .field("chunk_id", &self.chunk_id)
            .field("first_index", &self.first_index)
            .field("len", &self.len())
            .finish()
    }
}
