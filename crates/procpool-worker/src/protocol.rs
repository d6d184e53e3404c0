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
//!
//! Worker to parent (completion ring):
//! - `Hello`: body = archived [`Hello`]. Then `Ready` (no body) or `InitFailed`
//!   (body = archived [`TaskFailure`]).
//! - `Outcomes`: the outcomes of items `first_index .. first_index + count` of one chunk.
//!   A long chunk is answered by several `Outcomes` frames. Body layout:
//!   `data` (one independent archive per item, back to back; rkyv pads each as its types need,
//!   relative to the 16-aligned body), then padding to 8, then a table of `count` entries of
//!   8 bytes `{offset: u32, len_and_status: u32}`: the item's bytes are `data[offset..][..len]`
//!   with `len = len_and_status & 0x7fff_ffff`; bit 31 clear means an archive of `T::Output`,
//!   set means an archive of [`TaskFailure`].
//! - `Yielded`: the worker stopped this chunk on request; `first_index` is the first item it
//!   did not start. Every item before it has been answered in earlier `Outcomes` frames.
//! - `Pong`: answers `Ping`.

use std::cell::RefCell;
use std::fmt;

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
pub const PROTOCOL_VERSION: u16 = 1;

/// Length of the fixed header at the start of every frame.
pub const HEADER_LEN: usize = 32;

/// Size of one entry of an `Outcomes` table.
const OUTCOME_ENTRY_LEN: usize = 8;

/// Alignment of every archive inside a frame body.
const ARCHIVE_ALIGN: usize = 16;

/// The serializer every task argument and output is written with.
pub type WireSerializer<'a> = HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>;
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
}

/// A validated `Outcomes` frame: per item, output bytes or failure bytes.
#[derive(Clone, Copy)]
pub struct OutcomeBatch<'a> {
    /// The chunk these outcomes belong to.
    pub chunk_id: u64,
    /// The chunk's task.
    pub task_id: TaskId,
    /// Item index of the first outcome.
    pub first_index: u64,
    /// The body's data area.
    data: &'a [u8],
    /// The entries, already checked to lie inside `data`.
    table: &'a [u8],
}

/// One item's outcome, still as bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawOutcome<'a> {
    /// An archive of the task's output; decode with [`decode_output`].
    Value(&'a [u8]),
    /// An archive of a [`TaskFailure`]; decode with [`decode_failure`].
    Failure(&'a [u8]),
}

impl<'a> OutcomeBatch<'a> {
    /// Number of outcomes in this frame.
    pub fn len(&self) -> usize {
        self.table.len() / OUTCOME_ENTRY_LEN
    }

    /// Whether the frame has no outcomes.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The outcome at position `pos` of this frame (item index `first_index + pos`).
    ///
    /// # Panics
    ///
    /// If `pos >= self.len()`.
    pub fn get(&self, pos: usize) -> RawOutcome<'a> {
        let entry = &self.table[pos * OUTCOME_ENTRY_LEN..][..OUTCOME_ENTRY_LEN];
        let offset = read_u32(entry, 0) as usize;
        let len_and_status = read_u32(entry, 4);
        let len = (len_and_status & !FAILURE_BIT) as usize;
        let bytes = &self.data[offset..offset + len];
        if len_and_status & FAILURE_BIT == 0 {
            RawOutcome::Value(bytes)
        } else {
            RawOutcome::Failure(bytes)
        }
    }

    /// `(item index, outcome)` for every outcome in the frame.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (u64, RawOutcome<'a>)> + '_ {
        (0..self.len()).map(move |pos| (self.first_index + pos as u64, self.get(pos)))
    }
}

impl fmt::Debug for OutcomeBatch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutcomeBatch")
            .field("chunk_id", &self.chunk_id)
            .field("task_id", &format_args!("{:016x}", self.task_id))
            .field("first_index", &self.first_index)
            .field("len", &self.len())
            .finish()
    }
}

impl RawOutcome<'_> {
    /// Decodes the outcome as task `T`'s result.
    ///
    /// # Errors
    ///
    /// A [`ProtocolError`] when the bytes do not validate as `T::Output` (or as a failure).
    pub fn decode<T: Task>(self) -> Result<Result<T::Output, TaskFailure>, ProtocolError> {
        match self {
            RawOutcome::Value(bytes) => decode_output::<T>(bytes).map(Ok),
            RawOutcome::Failure(bytes) => decode_failure(bytes).map(Err),
        }
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
}

/// Bit 31 of an outcome entry's second word: the item is a failure.
const FAILURE_BIT: u32 = 1 << 31;

/// Message kinds (header offset 0).
mod kind {
    pub(super) const SETUP: u16 = 0x0001;
    pub(super) const CALL_BATCH: u16 = 0x0002;
    pub(super) const SHUTDOWN: u16 = 0x0003;
    pub(super) const PING: u16 = 0x0004;
    pub(super) const HELLO: u16 = 0x0101;
    pub(super) const READY: u16 = 0x0102;
    pub(super) const INIT_FAILED: u16 = 0x0103;
    pub(super) const OUTCOMES: u16 = 0x0104;
    pub(super) const YIELDED: u16 = 0x0105;
    pub(super) const PONG: u16 = 0x0106;
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
fn append_archive<V>(value: &V, out: &mut AlignedVec) -> Result<(), ProtocolError>
where
    V: for<'a> Serialize<WireSerializer<'a>>,
{
    debug_assert_eq!(out.len() % ARCHIVE_ALIGN, 0);
    ARENA.with(|arena| {
        let mut arena = arena.borrow_mut();
        let vec = std::mem::take(out);
        let written = rkyv::api::high::to_bytes_in_with_alloc(value, vec, arena.acquire())
            .map_err(ProtocolError::Encode)?;
        *out = written;
        Ok(())
    })
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
    start_frame(&call_header::<T>(chunk_id, first_index, args.len())?, out);
    append_archive(&SliceAsVec(args), out)
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
    let iter = args.into_iter();
    start_frame(&call_header::<T>(chunk_id, first_index, iter.len())?, out);
    append_archive(&IterAsVec(iter), out)
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
        other => Err(ProtocolError::UnexpectedKind(other)),
    }
}

fn parse_outcomes<'a>(header: &Header, body: &'a [u8]) -> Result<OutcomeBatch<'a>, ProtocolError> {
    check_index_range(header)?;
    let count = header.count as usize;
    let table_len = count
        .checked_mul(OUTCOME_ENTRY_LEN)
        .ok_or(ProtocolError::TooManyItems(count))?;
    if body.len() < table_len {
        return Err(ProtocolError::Truncated {
            len: body.len() + HEADER_LEN,
            needed: table_len + HEADER_LEN,
        });
    }
    let (data, table) = body.split_at(body.len() - table_len);
    for index in 0..count {
        let entry = &table[index * OUTCOME_ENTRY_LEN..][..OUTCOME_ENTRY_LEN];
        let offset = read_u32(entry, 0) as usize;
        let len = (read_u32(entry, 4) & !FAILURE_BIT) as usize;
        let fits = offset.checked_add(len).is_some_and(|end| end <= data.len());
        if !fits {
            return Err(ProtocolError::BadOutcomeEntry { index });
        }
    }
    Ok(OutcomeBatch {
        chunk_id: header.chunk_id,
        task_id: header.task_id,
        first_index: header.first_index,
        data,
        table,
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

/// Decodes an item's output bytes as task `T`'s output (validating them first).
///
/// # Errors
///
/// [`ProtocolError::Archive`] when the bytes are not a valid archive of `T::Output`.
pub fn decode_output<T: Task>(bytes: &[u8]) -> Result<T::Output, ProtocolError> {
    let archived = access::<Archived<T::Output>>(bytes)?;
    deserialize::<T::Output>(archived)
}

/// Decodes every outcome of `batch` as task `T`'s: `(item index, outcome)` per item, where a
/// malformed item is a [`ProtocolError`] for that item only.
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
pub fn decode_outputs<'b, T: Task>(
    batch: &'b OutcomeBatch<'_>,
) -> impl ExactSizeIterator<Item = (u64, Result<Result<T::Output, TaskFailure>, ProtocolError>)> + 'b
{
    batch
        .iter()
        .map(|(index, outcome)| (index, outcome.decode::<T>()))
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
        other => Err(ProtocolError::UnexpectedKind(other)),
    }
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

/// Builds `Outcomes` frames item by item, reusing its buffers and serializer arena.
///
/// The data area is serialized in place after the header; [`OutcomeEncoder::finish`] appends the
/// table and fills in the header. Each item is an independent archive (sharing state is reset
/// per item), so the parent can decode any one alone.
pub(crate) struct OutcomeEncoder<'arena> {
    /// Writer holds header + data area; the allocator is the worker's reused arena.
    serializer: Serializer<AlignedVec, ArenaHandle<'arena>, Share>,
    /// The encoded table entries for the items written since the last reset.
    table: Vec<u8>,
    chunk_id: u64,
    task_id: TaskId,
    first_index: u64,
}

/// Where an [`OutcomeEncoder`] can be rolled back to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mark {
    data: usize,
    table: usize,
}

impl<'arena> OutcomeEncoder<'arena> {
    /// An encoder writing into `buffer` (its capacity is reused) with `arena` for scratch space.
    pub(crate) fn new(buffer: AlignedVec, arena: ArenaHandle<'arena>) -> Self {
        let mut encoder = Self {
            serializer: Serializer::new(buffer, arena, Share::new()),
            table: Vec::new(),
            chunk_id: 0,
            task_id: 0,
            first_index: 0,
        };
        encoder.reset(0, 0, 0);
        encoder
    }

    /// Gives the buffer back for reuse.
    pub(crate) fn into_buffer(self) -> AlignedVec {
        self.serializer.into_writer()
    }

    /// Starts a new frame for items of `chunk_id` from `first_index` on.
    pub(crate) fn reset(&mut self, chunk_id: u64, task_id: TaskId, first_index: u64) {
        self.serializer.writer.clear();
        self.serializer.writer.extend_from_slice(&[0; HEADER_LEN]);
        self.table.clear();
        self.chunk_id = chunk_id;
        self.task_id = task_id;
        self.first_index = first_index;
    }

    /// Number of outcomes since the last reset.
    pub(crate) fn len(&self) -> usize {
        self.table.len() / OUTCOME_ENTRY_LEN
    }

    /// Bytes of data written since the last reset.
    pub(crate) fn data_len(&self) -> usize {
        self.serializer.writer.len() - HEADER_LEN
    }

    /// The first item index the next `reset` should use to continue this chunk.
    pub(crate) fn next_index(&self) -> u64 {
        self.first_index + self.len() as u64
    }

    /// A point to roll back to if the next item panics half-way through serialization.
    pub(crate) fn mark(&self) -> Mark {
        Mark {
            data: self.serializer.writer.len(),
            table: self.table.len(),
        }
    }

    /// Forgets everything written after `mark`.
    pub(crate) fn rollback(&mut self, mark: Mark) {
        self.serializer.writer.resize(mark.data, 0);
        self.table.truncate(mark.table);
        self.serializer.sharing = Share::new();
    }

    /// Appends a value outcome; if it cannot be serialized, a `BadOutput` failure instead.
    #[inline]
    pub(crate) fn push_value<V>(&mut self, value: &V)
    where
        V: for<'a> Serialize<WireSerializer<'a>>,
    {
        if let Err(error) = self.push_archive(0, value) {
            self.push_failure(&TaskFailure::new(FailureKind::BadOutput, error.to_string()));
        }
    }

    /// Appends a failure outcome.
    pub(crate) fn push_failure(&mut self, failure: &TaskFailure) {
        if self.push_archive(FAILURE_BIT, failure).is_err() {
            // A `TaskFailure` of plain strings always serializes into a growable vector;
            // should that ever change, the item still gets a well-formed (empty-message) failure.
            let fallback = TaskFailure::new(failure.kind, String::new());
            let _ = self.push_archive(FAILURE_BIT, &fallback);
        }
    }

    #[inline]
    fn push_archive<V>(&mut self, status: u32, value: &V) -> Result<(), rancor::Error>
    where
        V: for<'a> Serialize<WireSerializer<'a>>,
    {
        let begin = self.serializer.writer.len();
        let res = rkyv::api::serialize_using::<_, rancor::Error>(value, &mut self.serializer);
        // Sharing must never span items: each archive stands alone.
        self.serializer.sharing = Share::new();
        let end = self.serializer.writer.len();
        let len = u32::try_from(end - begin)
            .ok()
            .filter(|len| len & FAILURE_BIT == 0);
        match (res, len) {
            (Ok(_), Some(len)) => {
                let mut entry = [0; OUTCOME_ENTRY_LEN];
                // The data area is bounded by the length check above, times the item count.
                let offset = (begin - HEADER_LEN) as u32;
                entry[..4].copy_from_slice(&offset.to_le_bytes());
                entry[4..].copy_from_slice(&(len | status).to_le_bytes());
                self.table.extend_from_slice(&entry);
                Ok(())
            }
            (res, _) => {
                self.serializer.writer.resize(begin, 0);
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
            count: self.len() as u32,
            chunk_id: self.chunk_id,
            task_id: self.task_id,
            first_index: self.first_index,
        };
        let writer = &mut self.serializer.writer;
        writer.extend_from_slice(&self.table);
        header.write_to(&mut writer[..HEADER_LEN]);
        writer.as_slice()
    }
}

/// One outcome's archive does not fit the 31-bit length of a table entry.
#[derive(Debug, thiserror::Error)]
#[error("outcome of {0} bytes exceeds the 2 GiB limit of one item")]
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
