//! The loop inside a worker: handshake, initializer, then chunks of calls until shutdown.
//!
//! # One chunk
//!
//! A `CallBatch` frame is validated once (bytecheck over the whole argument archive), then the
//! task's monomorphised batch runner walks the items. Before each item it publishes the chunk
//! and item in the mailbox (words 0 and 1) and checks the yield request (word 2). Each item runs
//! under `catch_unwind`; outputs of consecutive successes are kept until the run ends (a failure,
//! a flush, the end of the chunk) and then serialized as ONE archive into a reused outcome buffer,
//! so the parent validates and decodes a whole run at once; a failure is serialized at once.
//! Outcomes are flushed to the completion ring at the end of the chunk, and earlier when
//! the pending batch is old (about 2 ms, checked with an adaptive stride so fast items do not
//! pay for a clock read each) or large, so results of long chunks stream back.
//!
//! # Mailbox words and what a parent knows after a crash
//!
//! | word | written by | meaning |
//! |------|------------|---------|
//! | 0 | worker | `chunk_id + 1` of the chunk being run, 0 when idle; set when the chunk starts, cleared after its last frame was sent |
//! | 1 | worker | offset within that chunk of the item now running, stored (Release) before the item starts |
//! | 2 | parent | yield request: `chunk_id + 1`; the worker checks it before each item and clears it when it acts on it: it stops and gives back every item from the next one on, or, with [`protocol::YIELD_HALF`] set, gives back the later half of the unstarted items at once (`Yielded`) and runs the rest |
//! | 3 | parent | liveness ping: a counter the parent bumps (then wakes the word's futex) while the worker holds work |
//! | 4 | worker | liveness answer: the last ping seen, copied back by the worker's heartbeat thread |
//! | 5 | parent | the largest encoded output of one item the worker may send (0: no limit), stored before `Setup` is sent; a larger output is replaced by a `TooLarge` failure |
//! | 6 | worker | the CPU it started its last chunk on, plus one (0: unknown) |
//! | 7 | parent | the CPU of the parent thread that spins for this worker's outcomes now, plus one (0: none; cleared when it stops): a worker on that CPU yields it after publishing, and steps off it when the two keep sharing it (`Neighbour`) |
//! | 8 | both, by compare-and-swap | claim: `chunk_id + 1` of the last chunk the worker started, or [`protocol::CLAIM_RECLAIMED`] or-ed with `chunk_id + 1` of a queued chunk the parent took back before the worker started it; the worker skips such a chunk without a word about it ([`protocol::reclaim`], [`protocol::claim`]) |
//! | 9 | parent sets, worker clears | outbox: 1 while frames wait in the parent's outbox for room in this worker's ring or socket; a worker that finds its inbox empty with the word set swaps it to 0 and sends `Drained`, so the parent flushes then (see "Waiting for room" below) |
//!
//! # Waiting for room
//!
//! The parent never blocks sending to a worker: a frame without room waits in its outbox,
//! flushed after the worker's next outcome. Frames that produce no outcome (shared objects,
//! `Release`, a chunk taken back) free room that no outcome announces, and the room a chunk's
//! frame takes is freed after its last outcome was sent. So the parent also sets word 9 when
//! its outbox is not empty, and the worker answers with `Drained` once it has read every frame
//! there is: then its ring and socket are empty, and the parent's flush sends at least the
//! next waiting frame. No wake-up is lost: the parent stores the word, fences (SeqCst) and
//! flushes again; the worker's wait publishes the ring's head behind a SeqCst fence before it
//! loads the word (`Inbox::recv_until`). Either the worker sees the word, or the parent's flush
//! sees the head that made room, sends, and so wakes the worker.
//!
//! The completion ring is shared memory, so after a worker dies the parent can still drain every
//! frame the worker sent. For the chunk named by word 0 it then knows, exactly:
//! items before the first one without a received outcome finished and were reported;
//! items from there up to word 1 (exclusive) finished but their outcomes were still batched in
//! the worker (at most one flush window: about 2 ms of work, about 8192 items or 256 KiB);
//! the item at word 1 was running; items after it never started.
//! With `RunOptions::flush_interval` zero every outcome is sent before the next item starts,
//! and a death loses at most the running item.
//!
//! # Heartbeat
//!
//! [`run_worker`] starts one small thread beside the run loop that blocks on mailbox word 3
//! (a futex, so it costs nothing while nobody pings) and copies each new ping into word 4.
//! It shares no lock with the run loop or the tasks, so a task that runs for hours still
//! answers, while a stopped (SIGSTOP), frozen or fake worker does not: the parent kills a
//! worker that holds work and leaves a ping unanswered for its liveness timeout. A task that
//! deadlocks inside its own code looks like a long task here; per-call timeouts cover that.
//!
//! # Quiet panics
//!
//! A panic inside a task is not printed by the worker: a panic hook (installed once, chaining
//! to the previous hook for panics outside tasks) captures the message and location into a
//! thread-local, and they travel to the parent as a `Panicked` failure; the parent decides
//! what to show.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::ops::Deref;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rkyv::ser::allocator::Arena;
use rkyv::util::AlignedVec;

use crate::protocol::{
    self, FailureKind, Hello, OutcomeEncoder, ProtocolError, TaskFailure, ToWorker,
};
use crate::registry::{self, Invoke, TaskId};
use crate::state::{self, WorkerInfo};

pub(crate) mod args;
mod transport;

#[cfg(test)]
mod tests;

pub(crate) use transport::LocalMailbox;

/// Tuning of the run loop.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RunOptions {
    /// Flush pending outcomes of a running chunk once the oldest is about this old
    /// (default 2 ms, just above the pool's adaptive chunk target of 1.6 ms, so a chunk of
    /// short items usually comes back as one frame). Zero sends every outcome before the next
    /// item starts.
    pub flush_interval: Duration,
    /// Flush pending outcomes of a running chunk once they take this many bytes.
    pub flush_bytes: usize,
    /// How long the worker spins for its next chunk before it parks (default 200 µs).
    ///
    /// A pool hands single calls to its workers in turn, so a worker's next call comes about
    /// `workers` round trips after its last one. Parked, it costs the caller a wake-up
    /// (~50 µs when its core halted), which makes the next gap longer still; spinning for
    /// a few wake-ups' worth keeps a busy caller on the fast path and recovers from a hiccup
    /// (a preempted round trip). An idle worker burns this much CPU once, then sleeps.
    pub idle_spin: Duration,
}

/// The default `RunOptions::idle_spin`.
const DEFAULT_IDLE_SPIN: Duration = Duration::from_micros(200);

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            flush_interval: Duration::from_millis(2),
            flush_bytes: 256 * 1024,
            idle_spin: DEFAULT_IDLE_SPIN,
        }
    }
}

/// Why a worker's run loop ended other than by `Shutdown`.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The parent closed the channel (or died).
    #[error("the parent closed the channel")]
    Disconnected,
    /// The parent sent a frame that does not parse.
    #[error("bad frame from the parent: {0}")]
    Protocol(#[from] ProtocolError),
    /// The first frame was not `Setup`.
    #[error("expected Setup as the first frame")]
    NoSetup,
    /// The initializer failed (the parent was told with `InitFailed`).
    #[error("initializer failed: {0}")]
    InitFailed(TaskFailure),
    /// The transport failed in another way.
    #[error("transport error: {0}")]
    Transport(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Words of the shared mailbox the runtime uses (see the worker contract).
pub(crate) mod word {
    /// Id of the running chunk plus one; 0 when idle.
    pub(crate) const RUNNING_CHUNK: usize = 0;
    /// Offset within the running chunk of the item now running.
    pub(crate) const RUNNING_ITEM: usize = 1;
    /// Yield request: the parent stores `chunk_id + 1`.
    pub(crate) const YIELD: usize = 2;
    /// Liveness ping: a counter the parent bumps (and wakes).
    pub(crate) const PING: usize = 3;
    /// Liveness answer: the last ping the heartbeat thread saw.
    pub(crate) const PONG: usize = 4;
    /// Largest encoded output of one item (0: no limit), stored by the parent before `Setup`.
    pub(crate) const MAX_OUTPUT: usize = 5;
    /// The CPU this worker started its last chunk on, plus one (0: unknown).
    pub(crate) const WORKER_CPU: usize = 6;
    /// The CPU of the parent thread that spins for this worker's outcomes now, plus one (0:
    /// none), stored by the parent and cleared when that thread stops.
    pub(crate) const WAITER_CPU: usize = 7;
    /// Claim word: the last chunk started, or a chunk the parent took back (`protocol::claim`).
    pub(crate) const CLAIM: usize = 8;
    /// Frames wait in the parent's outbox (1), set by the parent; the worker swaps it to 0 and
    /// sends `Drained` when it finds its inbox empty (module docs, "Waiting for room").
    pub(crate) const OUTBOX: usize = 9;
}

/// The CPU this thread runs on, plus one (0 if unknown): `sched_getcpu`, a read of the rseq
/// area or the vDSO, a few ns.
fn cpu_word() -> u64 {
    nix::sched::sched_getcpu().map_or(0, |cpu| cpu as u64 + 1)
}

/// Steps a worker off the CPU of the parent thread that spins for its outcomes when the two
/// keep sharing it.
///
/// A caller that waits by spinning and the worker it waits for take turns on one core when
/// the kernel put them there: every round trip is then two context switches (~5.7 µs here,
/// against ~1.7 µs across two vCPUs; docs/bench/startup-and-latency.md). The kernel does not
/// separate them: both run all the time, so both look cache-hot to the load balancer, and a
/// full benchmark run on a quiet machine found 73% of its warm trips so placed. After
/// `patience` chunks in a row on the waiter's CPU the worker moves itself off it
/// ([`step_off`]), keeping its affinity; if that does not last (the other CPUs are busy and
/// the kernel brings it back), the patience doubles, up to [`Neighbour::MAX_PATIENCE`], and
/// it halves again after as many chunks apart.
#[derive(Debug)]
struct Neighbour {
    together: u32,
    apart: u32,
    patience: u32,
}

impl Neighbour {
    /// Chunks in a row on the waiter's CPU before the first step off.
    const FIRST_PATIENCE: u32 = 16;
    /// The most chunks in a row it waits once stepping off kept failing.
    const MAX_PATIENCE: u32 = 4096;

    fn new() -> Self {
        Neighbour {
            together: 0,
            apart: 0,
            patience: Self::FIRST_PATIENCE,
        }
    }

    /// After a chunk that started on `cpu` while the parent's waiting thread last spun on
    /// `waiter` (both mailbox words: the CPU plus one, 0 unknown): whether to step off now.
    fn after_chunk(&mut self, cpu: u64, waiter: u64) -> bool {
        if cpu == 0 || cpu != waiter {
            self.together = 0;
            self.apart += 1;
            if self.apart >= self.patience {
                self.apart = 0;
                self.patience = (self.patience / 2).max(Self::FIRST_PATIENCE);
            }
            return false;
        }
        self.apart = 0;
        self.together += 1;
        if self.together < self.patience {
            return false;
        }
        self.together = 0;
        self.patience = (self.patience * 2).min(Self::MAX_PATIENCE);
        true
    }
}

/// Moves the calling thread off CPU `cpu`: its affinity without `cpu` (the kernel migrates
/// a thread before `sched_setaffinity` returns), then its affinity as it was, so the kernel
/// may place it anywhere it was allowed to again later. Returns the CPU it landed on, or
/// `None` if it could not move (no other CPU allowed, or the calls failed).
fn step_off(cpu: usize) -> Option<usize> {
    use nix::sched::{CpuSet, sched_getaffinity, sched_getcpu, sched_setaffinity};
    use nix::unistd::Pid;
    let this_thread = Pid::from_raw(0);
    let allowed = sched_getaffinity(this_thread).ok()?;
    let mut elsewhere = allowed;
    elsewhere.unset(cpu).ok()?;
    if !(0..CpuSet::count()).any(|other| elsewhere.is_set(other).unwrap_or(false)) {
        return None;
    }
    sched_setaffinity(this_thread, &elsewhere).ok()?;
    let landed = sched_getcpu().ok();
    // Best effort: a failure leaves the thread off one CPU, which is still a valid placement.
    let _ = sched_setaffinity(this_thread, &allowed);
    landed
}

/// The heartbeat thread of one worker (see the module docs); stops and is joined on drop.
struct Heartbeat {
    mailbox: procpool_ipc::Mailbox,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Heartbeat {
    /// Starts answering pings on `mailbox`.
    fn start(mailbox: &procpool_ipc::Mailbox) -> std::io::Result<Heartbeat> {
        Self::start_with(mailbox, || {})
    }

    /// [`start`](Heartbeat::start), calling `before_wait` each time the thread has checked its
    /// stop flag and is about to block (tests widen that window with it).
    fn start_with(
        mailbox: &procpool_ipc::Mailbox,
        before_wait: impl Fn() + Send + 'static,
    ) -> std::io::Result<Heartbeat> {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (words, stopped) = (mailbox.clone(), std::sync::Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("procpool-heartbeat".into())
            // A few frames deep and allocation-free; a small stack keeps it cheap under a
            // tight `RLIMIT_AS`.
            .stack_size(64 * 1024)
            .spawn(move || {
                // Acquire: pairs with the Release store in `Drop`; nothing else rides on it.
                while !stopped.load(std::sync::atomic::Ordering::Acquire) {
                    let ping = words.load(word::PING);
                    if words.load(word::PONG) != ping {
                        words.store(word::PONG, ping);
                    }
                    before_wait();
                    // Woken by the parent's next ping, which changes the word first, so no
                    // ping is missed. `Drop`'s wakes do not change it; see there. The
                    // timeout is only a backstop.
                    words.wait(word::PING, ping, Duration::from_secs(60));
                }
            })?;
        Ok(Heartbeat {
            mailbox: mailbox.clone(),
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        // Release: pairs with the Acquire load in the heartbeat loop.
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        if let Some(thread) = self.thread.take() {
            // One wake is not enough: the word the thread blocks on is the parent's and does
            // not change here, so a thread that read `stop` just before our store and has not
            // yet entered the futex would sleep through a single wake, and this join (and the
            // worker's exit) would wait for the 60 s backstop. A wake reaches it once it is
            // blocked, so wake until it is gone; it is gone within one wake of blocking.
            while !thread.is_finished() {
                self.mailbox.wake(word::PING);
                std::thread::sleep(Duration::from_micros(200));
            }
            let _ = thread.join();
        }
    }
}

/// The mailbox as the runtime sees it: the channel's shared words, or (in tests, benches and
/// [`LocalRunner`]) words local to this process. An enum rather than a trait object so the
/// two accesses per item inline.
#[derive(Debug, Clone, Copy)]
pub(crate) enum MailboxWords<'a> {
    /// The channel's shared mailbox.
    Shared(&'a procpool_ipc::Mailbox),
    /// Words in this process only.
    Local(&'a LocalMailbox),
}

impl<'a> MailboxWords<'a> {
    /// Reads word `i` (Acquire).
    #[inline]
    fn load(self, i: usize) -> u64 {
        match self {
            MailboxWords::Shared(mailbox) => mailbox.load(i),
            MailboxWords::Local(mailbox) => mailbox.load(i),
        }
    }

    /// Writes word `i` (Release).
    #[inline]
    fn store(self, i: usize, value: u64) {
        match self {
            MailboxWords::Shared(mailbox) => mailbox.store(i, value),
            MailboxWords::Local(mailbox) => mailbox.store(i, value),
        }
    }

    /// The words the item loop touches before every item, resolved once per chunk.
    fn item_words(self) -> ItemWords<'a> {
        let atomic = |i| match self {
            MailboxWords::Shared(mailbox) => mailbox.atomic(i),
            MailboxWords::Local(mailbox) => mailbox.atomic(i),
        };
        ItemWords {
            yield_request: atomic(word::YIELD),
            running_item: atomic(word::RUNNING_ITEM),
        }
    }

    /// Replaces word `i` with `value` and returns what it held (AcqRel).
    fn swap(self, i: usize, value: u64) -> u64 {
        match self {
            MailboxWords::Shared(mailbox) => mailbox.swap(i, value),
            MailboxWords::Local(mailbox) => mailbox.swap(i, value),
        }
    }

    /// Replaces word `i` if it holds `current`.
    fn compare_exchange(self, i: usize, current: u64, new: u64) -> bool {
        match self {
            MailboxWords::Shared(mailbox) => mailbox.compare_exchange(i, current, new).is_ok(),
            MailboxWords::Local(mailbox) => mailbox.compare_exchange(i, current, new),
        }
    }
}

/// Receiving end of the transport.
pub(crate) trait Inbox {
    /// A received frame; released when dropped.
    type Frame<'a>: Deref<Target = [u8]>
    where
        Self: 'a;
    /// Blocks for the next frame.
    fn recv(&mut self) -> Result<Self::Frame<'_>, WorkerError>;

    /// Blocks for the next frame until `deadline` (`None`: none), or until `stop` returns true;
    /// `None` when the deadline passed or `stop` ended the wait. `stop` is called before the
    /// wait blocks and again before every park, each time after everything this side released
    /// was made visible to the sender behind a SeqCst fence (the ring's head: see
    /// `procpool_ipc::Receiver::recv_until`), which the parent's outbox protocol relies on
    /// (module docs, "Waiting for room").
    fn recv_until(
        &mut self,
        deadline: Option<Instant>,
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<Self::Frame<'_>>, WorkerError> {
        // Stand-ins without rings: look once, then block without a deadline.
        let _ = deadline;
        if stop() {
            return Ok(None);
        }
        self.recv().map(Some)
    }

    /// Takes an out-of-band frame's read-only mapping, to keep it beyond the frame (shared
    /// objects); `None` when the frame's bytes must be copied instead.
    fn keep<'a>(frame: &mut Self::Frame<'a>) -> Option<procpool_ipc::SealedMap>
    where
        Self: 'a,
    {
        let _ = frame;
        None
    }
}

/// Sending end of the transport.
pub(crate) trait Outbox {
    /// Sends one frame (copied).
    fn send(&mut self, frame: &[u8]) -> Result<(), WorkerError>;

    /// Sends one frame of `len` bytes written in place by `fill` into the transport's own
    /// memory (ring space or a reusable pad), saving the copy `send` makes; `fill` returns the
    /// bytes it used, or `None` to abandon the frame. `Ok(false)` when nothing was sent (no
    /// such memory, or `fill` gave up): the caller sends the frame the usual way.
    fn send_in_place(
        &mut self,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]) -> Option<usize>,
    ) -> Result<bool, WorkerError> {
        let _ = (len, fill);
        Ok(false)
    }

    /// Whether the transport keeps reusable buffers for large frames (procpool-ipc's pads).
    fn holds_buffers(&self) -> bool {
        false
    }

    /// Gives back the memory of those buffers (the worker went idle).
    fn release_buffers(&mut self) {}
}

/// How long a worker that keeps large-frame buffers waits for work before it gives their
/// memory back.
const BUFFER_IDLE: Duration = Duration::from_secs(1);

/// Runs the worker side of the protocol over `endpoint` until the parent sends `Shutdown`.
///
/// Reads `Setup`, answers `Hello`, runs the initializer if any (answering `Ready` or
/// `InitFailed`), then runs chunks of calls until `Shutdown`. The endpoint is closed on return.
/// Meanwhile a heartbeat thread answers the parent's liveness pings (mailbox words 3 and 4).
///
/// # Errors
///
/// [`WorkerError::Disconnected`] when the parent closed the channel or died (the usual way a
/// worker of a dropped pool ends), [`WorkerError::InitFailed`] after reporting a failed
/// initializer, [`WorkerError::Protocol`] for a frame that does not parse,
/// [`WorkerError::Transport`] when the channel broke.
pub fn run_worker(endpoint: procpool_ipc::Endpoint, opts: RunOptions) -> Result<(), WorkerError> {
    let mailbox = endpoint.mailbox();
    let _heartbeat = Heartbeat::start(&mailbox).map_err(|err| {
        WorkerError::Transport(format!("cannot start the heartbeat thread: {err}").into())
    })?;
    let (mut sender, mut receiver) = endpoint.split();
    receiver.set_wait_strategy(procpool_ipc::WaitStrategy {
        spin: opts.idle_spin,
    });
    run_loop(
        &mut receiver,
        &mut sender,
        MailboxWords::Shared(&mailbox),
        &opts,
    )
}

/// Runs call frames in this process, without a transport: exactly a worker's per-chunk work
/// (validate, look up, call each item under `catch_unwind`, encode outcomes).
///
/// For benchmarks, tests and in-process debugging. Buffers are reused across calls.
///
/// # Examples
///
/// ```
/// use procpool_worker::{builtin, protocol, AlignedVec, LocalRunner};
/// use procpool_worker::protocol::FromWorker;
///
/// let mut frame = AlignedVec::new();
/// protocol::encode_call_batch::<builtin::add_one>(1, 0, &[1, 2], &mut frame)?;
/// let mut runner = LocalRunner::new();
/// let mut outputs = Vec::new();
/// runner.run(&frame, |out| {
///     if let Ok(FromWorker::Outcomes(batch)) = protocol::parse_from_worker(out) {
///         for (_, outcome) in protocol::decode_outputs::<builtin::add_one>(&batch) {
///             outputs.push(outcome.unwrap().unwrap());
///         }
///     }
/// })?;
/// assert_eq!(outputs, [2, 3]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct LocalRunner {
    arena: Arena,
    buffer: AlignedVec,
    mailbox: LocalMailbox,
    opts: RunOptions,
}

impl std::fmt::Debug for LocalRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRunner")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl Default for LocalRunner {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalRunner {
    /// A runner with default options.
    pub fn new() -> Self {
        install_panic_hook();
        Self {
            arena: Arena::new(),
            buffer: AlignedVec::new(),
            mailbox: LocalMailbox::new(),
            opts: RunOptions::default(),
        }
    }

    /// Runs one `CallBatch` frame; `on_frame` receives each `Outcomes` frame produced (valid
    /// only during the call). `Ping` is answered with `Pong`; other frames are refused.
    ///
    /// # Errors
    ///
    /// [`WorkerError::Protocol`] when the frame does not parse or is not a call batch.
    pub fn run(&mut self, frame: &[u8], on_frame: impl FnMut(&[u8])) -> Result<(), WorkerError> {
        let mut outbox = FnOutbox(on_frame);
        match protocol::parse_to_worker(frame)? {
            ToWorker::CallBatch {
                chunk_id,
                task_id,
                first_index,
                count,
                args,
            } => {
                let mut encoder =
                    OutcomeEncoder::new(std::mem::take(&mut self.buffer), self.arena.acquire());
                let mut run = BatchRun {
                    chunk_id,
                    task_id,
                    first_index,
                    count,
                    args,
                    encoder: &mut encoder,
                    outbox: &mut outbox,
                    mailbox: MailboxWords::Local(&self.mailbox),
                    item_words: MailboxWords::Local(&self.mailbox).item_words(),
                    opts: &self.opts,
                    pacer: Pacer::new(),
                    end_at: count,
                    error: None,
                };
                match registry::lookup(task_id) {
                    Some(entry) => (entry.run_batch)(&mut run),
                    None => run.fail_all(&unknown_task(task_id)),
                }
                let error = run.error.take();
                self.buffer = encoder.into_buffer();
                error.map_or(Ok(()), Err)
            }
            ToWorker::Ping { nonce } => {
                let mut control = AlignedVec::new();
                protocol::encode_pong(nonce, &mut control);
                outbox.send(&control)
            }
            ToWorker::Shared { id, tag, .. } => {
                crate::shared::receive(id, tag, None, frame);
                Ok(())
            }
            ToWorker::Release { id } => {
                crate::shared::release(id);
                Ok(())
            }
            ToWorker::Setup(_) | ToWorker::Shutdown => {
                Err(ProtocolError::UnexpectedKind(u16::from_le_bytes([frame[0], frame[1]])).into())
            }
        }
    }
}

/// An [`Outbox`] that hands each frame to a closure.
struct FnOutbox<F>(F);

impl<F: FnMut(&[u8])> Outbox for FnOutbox<F> {
    fn send(&mut self, frame: &[u8]) -> Result<(), WorkerError> {
        (self.0)(frame);
        Ok(())
    }
}

/// Runs the worker protocol until `Shutdown` (Ok) or until the channel fails.
pub(crate) fn run_loop<I: Inbox, O: Outbox>(
    inbox: &mut I,
    outbox: &mut O,
    mailbox: MailboxWords<'_>,
    opts: &RunOptions,
) -> Result<(), WorkerError> {
    install_panic_hook();
    let mut control = AlignedVec::new();

    let setup = {
        let frame = inbox.recv()?;
        match protocol::parse_to_worker(&frame)? {
            ToWorker::Setup(setup) => setup,
            _ => return Err(WorkerError::NoSetup),
        }
    };
    let pid = std::process::id();
    state::set_current_worker(WorkerInfo {
        index: setup.worker_index,
        pid,
    });
    let hello = Hello {
        pid,
        fingerprint: registry::fingerprint(),
        task_count: u32::try_from(registry::entries().len()).unwrap_or(u32::MAX),
        task_ids: registry::entries().iter().map(|entry| entry.id).collect(),
    };
    protocol::encode_hello(&hello, &mut control)?;
    outbox.send(&control)?;

    if let Some(init) = &setup.initializer {
        let res = match registry::lookup(init.task_id) {
            Some(entry) => (entry.run_init)(&init.args),
            None => Err(unknown_task(init.task_id)),
        };
        if let Err(failure) = res {
            protocol::encode_init_failed(&failure, &mut control)?;
            outbox.send(&control)?;
            return Err(WorkerError::InitFailed(failure));
        }
    }
    protocol::encode_ready(&mut control);
    outbox.send(&control)?;

    let mut arena = Arena::new();
    let mut encoder = OutcomeEncoder::new(AlignedVec::new(), arena.acquire());
    // Stored by the parent before it sent `Setup`, which this worker has received.
    encoder.set_max_item(usize::try_from(mailbox.load(word::MAX_OUTPUT)).unwrap_or(usize::MAX));
    let mut neighbour = Neighbour::new();
    loop {
        // With large-frame buffers held, give them back after BUFFER_IDLE without frames.
        let idle_until = outbox.holds_buffers().then(|| Instant::now() + BUFFER_IDLE);
        let outbox_waits = || mailbox.load(word::OUTBOX) != 0;
        let mut frame = match inbox.recv_until(idle_until, &outbox_waits)? {
            Some(frame) => frame,
            None => {
                // Every frame is read and released: tell a parent whose outbox waits for
                // room (module docs, "Waiting for room").
                if mailbox.swap(word::OUTBOX, 0) != 0 {
                    protocol::encode_drained(&mut control);
                    outbox.send(&control)?;
                } else if idle_until.is_some_and(|until| Instant::now() >= until) {
                    outbox.release_buffers();
                }
                continue;
            }
        };
        match protocol::parse_to_worker(&frame)? {
            ToWorker::Shared { id, tag, .. } => {
                // Keep the read-only mapping (or a copy of an in-ring frame) until `Release`.
                let map = I::keep(&mut frame);
                crate::shared::receive(id, tag, map, &frame);
            }
            ToWorker::Release { id } => crate::shared::release(id),
            ToWorker::CallBatch {
                chunk_id,
                task_id,
                first_index,
                count,
                args,
            } => {
                let claimed = protocol::claim(
                    || mailbox.load(word::CLAIM),
                    |current, new| mailbox.compare_exchange(word::CLAIM, current, new),
                    chunk_id,
                );
                if !claimed {
                    // The parent took it back before it started and gave its items to
                    // another worker: nothing of it runs, nothing about it is sent.
                    continue;
                }
                let mut run = BatchRun {
                    chunk_id,
                    task_id,
                    first_index,
                    count,
                    args,
                    encoder: &mut encoder,
                    outbox,
                    mailbox,
                    item_words: mailbox.item_words(),
                    opts,
                    pacer: Pacer::new(),
                    end_at: count,
                    error: None,
                };
                // Where this chunk runs, for a parent thread that spins for its outcomes.
                let cpu = cpu_word();
                mailbox.store(word::WORKER_CPU, cpu);
                match registry::lookup(task_id) {
                    Some(entry) => (entry.run_batch)(&mut run),
                    None => run.fail_all(&unknown_task(task_id)),
                }
                if let Some(error) = run.error {
                    return Err(error);
                }
                // The outcomes are published. A parent thread spinning for them on this very
                // CPU (the kernel put both on one core, and nothing moves a spinning thread)
                // gets the core now, instead of after this thread's spin for the next chunk
                // (~4 µs of pure spinning before the ring wait first yields); if that keeps
                // happening, this worker moves to another CPU (`Neighbour`).
                let waiter = mailbox.load(word::WAITER_CPU);
                if neighbour.after_chunk(cpu, waiter) {
                    let _ = step_off(usize::try_from(cpu - 1).unwrap_or(usize::MAX));
                } else if cpu != 0 && waiter == cpu {
                    std::thread::yield_now();
                }
            }
            ToWorker::Ping { nonce } => {
                protocol::encode_pong(nonce, &mut control);
                outbox.send(&control)?;
            }
            ToWorker::Shutdown => return Ok(()),
            ToWorker::Setup(_) => {
                return Err(ProtocolError::UnexpectedKind(0x0001).into());
            }
        }
    }
}

fn unknown_task(task_id: TaskId) -> TaskFailure {
    TaskFailure::new(
        FailureKind::UnknownTask,
        format!("no task with id {task_id:016x} is registered in this worker"),
    )
}

/// One chunk being run: its frame, the outcome encoder, the transport and the flush policy.
///
/// Handed to a task's monomorphised batch runner through [`crate::TaskEntry`].
pub struct BatchRun<'a, 'arena> {
    chunk_id: u64,
    task_id: TaskId,
    first_index: u64,
    count: u32,
    args: &'a [u8],
    encoder: &'a mut OutcomeEncoder<'arena>,
    outbox: &'a mut dyn OutboxDyn,
    mailbox: MailboxWords<'a>,
    /// Words 2 and 1 of `mailbox`.
    item_words: ItemWords<'a>,
    opts: &'a RunOptions,
    pacer: Pacer,
    /// Offset after the last item this chunk runs: `count`, or less after a half split gave
    /// the rest back.
    end_at: u32,
    /// Set when the transport failed; the loop ends with it.
    error: Option<WorkerError>,
}

impl std::fmt::Debug for BatchRun<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchRun")
            .field("chunk_id", &self.chunk_id)
            .field("task_id", &self.task_id)
            .field("first_index", &self.first_index)
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

/// Mailbox words 2 (yield request) and 1 (running item), as the item loop reads and writes
/// them: direct references, so an item costs one load and one store, not a match on the
/// mailbox kind for each.
#[derive(Clone, Copy)]
struct ItemWords<'a> {
    yield_request: &'a AtomicU64,
    running_item: &'a AtomicU64,
}

/// Object-safe view of an [`Outbox`] (the batch runner is not generic over the transport).
pub(crate) trait OutboxDyn {
    fn send_dyn(&mut self, frame: &[u8]) -> Result<(), WorkerError>;
    fn send_in_place_dyn(
        &mut self,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]) -> Option<usize>,
    ) -> Result<bool, WorkerError>;
}

impl<O: Outbox> OutboxDyn for O {
    fn send_dyn(&mut self, frame: &[u8]) -> Result<(), WorkerError> {
        self.send(frame)
    }

    fn send_in_place_dyn(
        &mut self,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]) -> Option<usize>,
    ) -> Result<bool, WorkerError> {
        self.send_in_place(len, fill)
    }
}

/// Whether the batch runner goes on with the next item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Run,
    Stop,
}

/// Decides when to look at the clock: every item at first, then (while items stay fast) every
/// 2, 4, ... up to `MAX_STRIDE` items, back to every item as soon as a batch gets old.
#[derive(Debug)]
struct Pacer {
    /// When the oldest pending outcome was started (start of the pending batch).
    batch_started: Instant,
    /// When the clock was last read.
    last_read: Instant,
    /// Items between clock reads.
    stride: u32,
    /// Items since the last clock read.
    since_read: u32,
}

const MAX_STRIDE: u32 = 1024;
/// Item count that forces a flush regardless of time or size.
const FLUSH_ITEMS: usize = 8192;

impl Pacer {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            batch_started: now,
            last_read: now,
            stride: 1,
            since_read: 0,
        }
    }

    /// Counts an item; true every `stride` items, when the caller should look at the batch.
    #[inline]
    fn tick(&mut self) -> bool {
        self.since_read += 1;
        if self.since_read < self.stride {
            return false;
        }
        self.since_read = 0;
        true
    }

    /// Reads the clock, adapts the stride and says whether the pending batch is `interval` old.
    #[cold]
    fn read_clock(&mut self, interval: Duration) -> bool {
        let now = Instant::now();
        let since_last = now - self.last_read;
        self.last_read = now;
        if since_last < interval / 32 {
            self.stride = (self.stride * 2).min(MAX_STRIDE);
        } else {
            self.stride = 1;
        }
        now - self.batch_started >= interval
    }

    /// Reads the clock for a frame about to be sent: how long its items kept this worker
    /// busy, from the start of the batch (the chunk's arrival, or the previous frame) to now.
    /// One clock read per frame, so the parent's cost estimate need not include the time the
    /// frame waits to be read (`protocol::OutcomeBatch::worker_busy`).
    fn frame_busy(&mut self) -> Duration {
        self.last_read = Instant::now();
        self.last_read - self.batch_started
    }

    fn flushed(&mut self) {
        self.batch_started = self.last_read;
    }
}

impl BatchRun<'_, '_> {
    fn start(&mut self) {
        self.encoder
            .reset(self.chunk_id, self.task_id, self.first_index);
        self.mailbox
            .store(word::RUNNING_CHUNK, self.chunk_id.wrapping_add(1));
    }

    /// Called before item `offset`: publishes it, honours a yield request and flushes when due.
    /// `pending` holds the outputs not yet in the encoder (committed before any flush).
    #[inline]
    fn before_item(&mut self, offset: u32, pending: &mut dyn Pending) -> Step {
        if offset > 0 && self.pacer.tick() && self.flush_if_due(pending) == Step::Stop {
            return Step::Stop;
        }
        // Acquire / Release: as `MailboxWords::load` / `store` (the parent's Release store of
        // the request; the parent's Acquire load of the running item).
        let request = self.item_words.yield_request.load(Ordering::Acquire);
        if request != 0
            && request & !protocol::YIELD_HALF == self.chunk_id.wrapping_add(1)
            && self.on_yield_request(offset, request, pending) == Step::Stop
        {
            return Step::Stop;
        }
        self.item_words
            .running_item
            .store(u64::from(offset), Ordering::Release);
        Step::Run
    }

    /// Before item `offset`, with a yield request for this chunk in `request`: consumes it,
    /// then either yields now (everything from `offset` on goes back), or, for a half split,
    /// gives back the later half of the unstarted items at once and goes on with the rest.
    #[cold]
    fn on_yield_request(&mut self, offset: u32, request: u64, pending: &mut dyn Pending) -> Step {
        self.mailbox.compare_exchange(word::YIELD, request, 0);
        if request & protocol::YIELD_HALF == 0 {
            self.yield_at(offset, pending);
            return Step::Stop;
        }
        // Keep the first half (`offset < end_at`, so at least this item). With one item left
        // nothing goes back and the request is dropped.
        let split = offset + (self.end_at - offset).div_ceil(2);
        if split < self.end_at {
            self.end_at = split;
            // Outcomes of the kept items follow; the parent expects them up to `split`.
            // `parse_to_worker` refused call batches whose index range overflows.
            let next_index = self.first_index.wrapping_add(u64::from(split));
            let mut frame = AlignedVec::new();
            protocol::encode_yielded(self.chunk_id, next_index, &mut frame);
            self.send(&frame);
            if self.error.is_some() {
                return Step::Stop;
            }
        }
        Step::Run
    }

    /// Every `stride` items: flushes if the pending batch is large or old; stops the chunk if
    /// the transport failed (only sending can fail).
    #[cold]
    fn flush_if_due(&mut self, pending: &mut dyn Pending) -> Step {
        if (self.encoder.len() + pending.len() >= FLUSH_ITEMS
            || self.encoder.data_len() + pending.size_estimate() >= self.opts.flush_bytes
            || self.pacer.read_clock(self.opts.flush_interval))
            && !pending.send_in_place(self)
        {
            pending.commit(self.encoder);
            self.flush();
        }
        if self.error.is_some() {
            Step::Stop
        } else {
            Step::Run
        }
    }

    /// Stops the chunk before item `offset`: flushes, then reports `Yielded`.
    #[cold]
    fn yield_at(&mut self, offset: u32, pending: &mut dyn Pending) {
        if !pending.send_in_place(self) {
            pending.commit(self.encoder);
            self.flush();
        }
        // `parse_to_worker` refused call batches whose index range overflows.
        let next_index = self.first_index.wrapping_add(u64::from(offset));
        let mut frame = AlignedVec::new();
        protocol::encode_yielded(self.chunk_id, next_index, &mut frame);
        self.send(&frame);
    }

    /// Sends `values`, the outputs of every item since the last flush (the encoder holds no
    /// outcome), as one `Outcomes` frame serialized straight into the transport's memory (see
    /// [`Outbox::send_in_place`]), so the frame is not built in the encoder's buffer and copied.
    /// Returns whether the values are dealt with (sent, or the transport failed); `false` leaves
    /// everything as it was, for the encoder (which also handles serializers that panic or
    /// fail, and outputs over the size limit).
    fn send_values_in_place<V>(&mut self, values: &[V]) -> bool
    where
        V: for<'a> rkyv::Serialize<protocol::WireSerializer<'a>>,
    {
        if values.is_empty() || self.encoder.len() != 0 || self.error.is_some() {
            return false;
        }
        // Serialization runs user code (`Serialize` impls) and may panic like the task itself.
        let Ok(Ok(len)) = catch_task_panic(|| protocol::measure_values_frame(values)) else {
            return false;
        };
        let max_item = self.encoder.max_item();
        if max_item > 0 && len - protocol::values_frame_overhead() > max_item {
            // Some output may be over the limit alone: the encoder looks item by item.
            return false;
        }
        let (chunk_id, task_id, first_index) = self.encoder.frame_start();
        let busy = Some(self.pacer.frame_busy());
        let mut fill = |buf: &mut [u8]| {
            catch_task_panic(|| {
                protocol::write_values_frame(chunk_id, task_id, first_index, values, busy, buf)
            })
            .ok()
            .and_then(Result::ok)
        };
        match self.outbox.send_in_place_dyn(len, &mut fill) {
            Ok(true) => {
                let next = first_index.wrapping_add(values.len() as u64);
                self.encoder.reset(chunk_id, task_id, next);
                self.pacer.flushed();
                true
            }
            Ok(false) => false,
            Err(error) => {
                self.error.get_or_insert(error);
                true
            }
        }
    }

    fn flush(&mut self) {
        if self.encoder.len() == 0 {
            return;
        }
        let next = self.encoder.next_index();
        self.encoder.set_busy(self.pacer.frame_busy());
        let frame = self.encoder.finish();
        if let Err(error) = self.outbox.send_dyn(frame) {
            self.error.get_or_insert(error);
        }
        self.encoder.reset(self.chunk_id, self.task_id, next);
        self.pacer.flushed();
    }

    fn send(&mut self, frame: &[u8]) {
        if self.error.is_none() {
            if let Err(error) = self.outbox.send_dyn(frame) {
                self.error = Some(error);
            }
        }
    }

    /// Ends the chunk: flushes what is pending (an empty chunk gets an empty `Outcomes`).
    fn end(&mut self) {
        if self.encoder.len() > 0 || self.count == 0 {
            self.encoder.set_busy(self.pacer.frame_busy());
            let frame = self.encoder.finish();
            if let Err(error) = self.outbox.send_dyn(frame) {
                self.error.get_or_insert(error);
            }
        }
        // A yield request that came too late (after the last item started) is dropped: the
        // parent sees the chunk complete instead of `Yielded`.
        let request = self.mailbox.load(word::YIELD);
        if request & !protocol::YIELD_HALF == self.chunk_id.wrapping_add(1) {
            self.mailbox.compare_exchange(word::YIELD, request, 0);
        }
        self.mailbox.store(word::RUNNING_CHUNK, 0);
    }

    /// Answers every item of the chunk with `failure`.
    fn fail_all(&mut self, failure: &TaskFailure) {
        self.start();
        let mut offset = 0;
        while offset < self.end_at {
            if self.before_item(offset, &mut NoPending) == Step::Stop {
                self.mailbox.store(word::RUNNING_CHUNK, 0);
                return;
            }
            self.encoder.push_failure(failure);
            offset += 1;
        }
        self.end();
    }
}

/// The batch runner of task `T` (stored in its [`crate::TaskEntry`]).
///
/// Items run in a tight loop under ONE `catch_unwind` per stretch of successes: a panic or
/// an `Err` ends the stretch, its item is answered with a failure, and a new stretch starts
/// at the next item. Per item the loop only publishes the offset (mailbox word 1), checks the
/// yield request (word 2), counts toward the next flush check, calls the task and keeps its
/// output; the offset a panic leaves behind is the item that panicked.
pub(crate) fn run_batch<T: Invoke>(run: &mut BatchRun<'_, '_>) {
    let archived = match protocol::access_args::<T>(run.args, run.count) {
        Ok(archived) => archived,
        Err(error) => {
            let failure = TaskFailure::new(
                FailureKind::BadArguments,
                format!("arguments for `{}` do not validate: {error}", T::NAME),
            );
            return run.fail_all(&failure);
        }
    };
    run.start();
    let items = archived.as_slice();
    let mut pool = rkyv::de::Pool::new();
    // Outputs of the current run of successes, encoded as ONE archive when the run ends (a
    // failure, a flush, the end of the chunk).
    let mut pending = PendingValues::<T::Output>(Vec::with_capacity(items.len().min(FLUSH_ITEMS)));
    // `access_args` checked `items.len() == count`, a u32, so every offset fits in a u32.
    let mut offset: u32 = 0;
    // `run.end_at` shrinks when a half split gives the end of the chunk back.
    while offset < run.end_at {
        let mut ended = Stretch::Done;
        let caught = catch_task_panic(|| {
            while offset < run.end_at
                && let Some(args) = items.get(offset as usize)
            {
                if run.before_item(offset, &mut pending) == Step::Stop {
                    ended = Stretch::Stop;
                    return;
                }
                match T::invoke(args, &mut pool) {
                    Ok(value) => pending.0.push(value),
                    Err(failure) => {
                        ended = Stretch::Failed(failure);
                        return;
                    }
                }
                offset += 1;
            }
        });
        let failure = match (caught, ended) {
            (_, Stretch::Stop) => {
                run.mailbox.store(word::RUNNING_CHUNK, 0);
                return;
            }
            (Ok(()), Stretch::Done) => break,
            (Ok(()), Stretch::Failed(failure)) => failure,
            (Err(failure), _) => {
                pool = rkyv::de::Pool::new();
                failure
            }
        };
        // Item `offset` failed: answer it and go on with the next one.
        pending.commit(run.encoder);
        run.encoder.push_failure(&failure);
        offset += 1;
    }
    // The last run: encode, send, and only then drop the outputs, so freeing a large output
    // (an munmap of its pages) is not on the way to the parent.
    if !pending.send_in_place(run) {
        pending.encode(run.encoder);
    }
    run.end();
    pending.clear();
}

/// How a stretch of [`run_batch`]'s tight loop ended (a panic aside).
enum Stretch {
    /// Every remaining item ran.
    Done,
    /// The item at the current offset returned a failure.
    Failed(TaskFailure),
    /// The chunk stops here (yielded, or the transport failed).
    Stop,
}

/// Outputs run but not yet in the outcome encoder.
trait Pending {
    /// How many.
    fn len(&self) -> usize;
    /// A lower bound of their encoded size.
    fn size_estimate(&self) -> usize;
    /// Encodes them as one run (item by item, with failures, if the run cannot be encoded
    /// whole) and forgets them.
    fn commit(&mut self, encoder: &mut OutcomeEncoder<'_>);
    /// Sends them as one frame written in place when the encoder holds nothing else
    /// (`BatchRun::send_values_in_place`) and forgets them; `false` if not.
    fn send_in_place(&mut self, run: &mut BatchRun<'_, '_>) -> bool;
}

/// Nothing pending (a chunk answered with failures only).
struct NoPending;

impl Pending for NoPending {
    fn len(&self) -> usize {
        0
    }

    fn size_estimate(&self) -> usize {
        0
    }

    fn commit(&mut self, _encoder: &mut OutcomeEncoder<'_>) {}

    fn send_in_place(&mut self, _run: &mut BatchRun<'_, '_>) -> bool {
        false
    }
}

/// The outputs of a run of successes of one task.
struct PendingValues<V>(Vec<V>);

impl<V> Pending for PendingValues<V>
where
    V: for<'a> rkyv::Serialize<protocol::WireSerializer<'a>>,
{
    fn len(&self) -> usize {
        self.0.len()
    }

    fn size_estimate(&self) -> usize {
        self.0.len() * std::mem::size_of::<rkyv::Archived<V>>()
    }

    #[inline]
    fn commit(&mut self, encoder: &mut OutcomeEncoder<'_>) {
        self.encode(encoder);
        self.clear();
    }

    fn send_in_place(&mut self, run: &mut BatchRun<'_, '_>) -> bool {
        let sent = run.send_values_in_place(&self.0);
        if sent {
            // Published already: freeing large outputs is no longer on the parent's way.
            self.clear();
        }
        sent
    }
}

impl<V> PendingValues<V>
where
    V: for<'a> rkyv::Serialize<protocol::WireSerializer<'a>>,
{
    /// Encodes the outputs as one run (item by item, with failures, if the run cannot be
    /// encoded whole) and keeps them; [`Self::clear`] drops them.
    #[inline]
    fn encode(&mut self, encoder: &mut OutcomeEncoder<'_>) {
        if self.0.is_empty() {
            return;
        }
        let mark = encoder.mark();
        // Serialization runs user code (`Serialize` impls) and may panic like the task itself.
        let whole = catch_task_panic(|| encoder.push_values(&self.0));
        // Over the size limit as a whole: some item may be over it alone; look item by item.
        let over_limit = encoder.max_item() > 0 && encoder.bytes_since(mark) > encoder.max_item();
        if over_limit || !matches!(whole, Ok(Ok(()))) {
            encoder.rollback(mark);
            commit_one_by_one(&self.0, encoder);
        }
    }

    /// Drops the outputs (after [`Self::encode`]).
    fn clear(&mut self) {
        // Dropping outputs runs user code too; their outcomes are already encoded.
        // (`Vec::clear` empties the vector before dropping, so it is empty even after a panic.)
        let values = &mut self.0;
        let _ = catch_task_panic(|| values.clear());
    }
}

/// The slow path of [`PendingValues::commit`]: each output as its own run, the ones that do
/// not serialize (or panic), or exceed the encoder's size limit, as failures.
#[cold]
fn commit_one_by_one<V>(values: &[V], encoder: &mut OutcomeEncoder<'_>)
where
    V: for<'a> rkyv::Serialize<protocol::WireSerializer<'a>>,
{
    for value in values {
        let mark = encoder.mark();
        match catch_task_panic(|| encoder.push_values(std::slice::from_ref(value))) {
            Ok(Ok(()))
                if encoder.max_item() > 0 && encoder.bytes_since(mark) > encoder.max_item() =>
            {
                let size = encoder.bytes_since(mark);
                encoder.rollback(mark);
                let kind = FailureKind::TooLarge(protocol::SizeOverLimit {
                    size: size as u64,
                    limit: encoder.max_item() as u64,
                });
                let message = format!(
                    "the output is {size} bytes, over the limit of {} bytes",
                    encoder.max_item()
                );
                encoder.push_failure(&TaskFailure::new(kind, message));
            }
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                encoder.rollback(mark);
                encoder.push_failure(&TaskFailure::new(FailureKind::BadOutput, error.to_string()));
            }
            Err(failure) => {
                encoder.rollback(mark);
                encoder.push_failure(&failure);
            }
        }
    }
}

/// Runs task `T` as the initializer and stores its output as worker state.
pub(crate) fn run_init<T: Invoke>(args_archive: &[u8]) -> Result<(), TaskFailure>
where
    T::Output: Sync,
{
    let mut aligned = AlignedVec::<16>::with_capacity(args_archive.len());
    aligned.extend_from_slice(args_archive);
    let archived = protocol::access_args::<T>(&aligned, 1).map_err(|error| {
        TaskFailure::new(
            FailureKind::BadArguments,
            format!(
                "initializer arguments for `{}` do not validate: {error}",
                T::NAME
            ),
        )
    })?;
    let mut pool = rkyv::de::Pool::new();
    let output = catch_task_panic(|| T::invoke(&archived[0], &mut pool))??;
    state::set_worker_state(output);
    Ok(())
}

thread_local! {
    /// Set while a task runs on this thread: the panic hook then records instead of printing.
    static IN_TASK: Cell<bool> = const { Cell::new(false) };
    /// The message and location of the last task panic on this thread.
    static LAST_PANIC: RefCell<Option<(String, Option<String>)>> = const { RefCell::new(None) };
}

/// Installs (once per process) the hook that keeps task panics quiet and records them.
fn install_panic_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if IN_TASK.with(Cell::get) {
                let message = payload_message(info.payload());
                let location = info
                    .location()
                    .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
                LAST_PANIC.with(|last| *last.borrow_mut() = Some((message, location)));
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs `f` with panics caught and turned into a `Panicked` failure.
///
/// Nests: the "inside a task" flag is restored to what it was, so a catch inside another
/// (serializing outputs in the middle of a stretch of items) leaves the outer one quiet.
pub(crate) fn catch_task_panic<R>(f: impl FnOnce() -> R) -> Result<R, TaskFailure> {
    let outer = IN_TASK.with(|flag| flag.replace(true));
    let res = panic::catch_unwind(AssertUnwindSafe(f));
    IN_TASK.with(|flag| flag.set(outer));
    res.map_err(|payload| {
        let recorded = LAST_PANIC.with(|last| last.borrow_mut().take());
        let (message, location) = match recorded {
            Some(recorded) => recorded,
            None => (payload_message(payload.as_ref()), None),
        };
        // Dropping a payload can itself panic: drop it under `catch_unwind`, and forget only
        // the payload of such a second panic.
        if let Err(nested) = panic::catch_unwind(AssertUnwindSafe(move || drop(payload))) {
            std::mem::forget(nested);
        }
        TaskFailure {
            kind: FailureKind::Panicked,
            message,
            location,
        }
    })
}

fn payload_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any>".to_owned()
    }
}
