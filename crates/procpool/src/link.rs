//! The seam between the pool and its workers: a *link* per worker, made by a [`Launcher`].
//!
//! The pool core (dispatch, scheduling, outcome delivery, death handling) talks to a worker
//! only through these traits, at the level of whole protocol frames
//! (`procpool_worker::protocol`): it sends one call-batch frame per chunk and receives outcome
//! frames. How the bytes travel and how liveness is observed is the backend's business.
//!
//! - [`FrameSender`]: owned by the pool core, used under its lock; never blocks
//!   (`try_send` gives back "full", and the core keeps the frame in an outbox it flushes after
//!   the worker's next outcome, or when the worker, asked through
//!   [`WorkerControl::outbox_waits`], says it has read everything: `Drained`).
//! - [`FrameReceiver`]: read by that worker's reader thread, or by a caller waiting for a
//!   result (`attend.rs`); blocks until a frame arrives or the link is gone (peer died,
//!   closed, corrupt), or polls. Ending is how the core learns of a death.
//! - [`WorkerControl`]: shared; pid, the mailbox words (which chunk and item run now, yield
//!   requests, liveness pings), closing the link (unblocks the reader), and killing the worker.
//! - [`WorkerProcessHandle`]: owned by the reader thread; reaps the worker and reports how it
//!   ended, or terminates it.
//!
//! The shared-memory backend (`backend_ipc`) implements these over a `procpool_ipc` channel
//! and a `procpool_worker` process handle. A backend for ranks of an MPI job (or any other
//! transport that moves frames and notices peer loss) implements the same four traits plus a
//! [`Launcher`]; nothing in the scheduler or the public API changes.

use std::time::{Duration, Instant};

use crate::error::{Error, WorkerExit};

/// Why a link stopped working.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LinkError {
    /// The peer is gone or the link was closed.
    #[error("link disconnected")]
    Disconnected,
    /// Nothing arrived in time (only from timed receives).
    #[error("timed out")]
    Timeout,
    /// The frame exceeds what the link can carry.
    #[error("frame of {len} bytes exceeds the link's maximum of {max}")]
    TooLarge {
        /// Frame length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The peer broke the transport protocol; the link is unusable.
    #[error("link corrupted by the peer: {0}")]
    Corrupt(String),
}

/// What a worker reports it is running (see [`WorkerControl::running`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Running {
    /// The backend cannot tell (no mailbox: the thread backend in tests, a remote backend).
    #[cfg_attr(not(test), allow(dead_code))]
    Unknown,
    /// Between chunks.
    Idle,
    /// Chunk `chunk` (wire id), the item at `offset` in it (set before the item starts).
    Item {
        /// The chunk's wire id.
        chunk: u64,
        /// Offset of the item within the chunk.
        offset: u64,
    },
}

/// Sends frames to one worker. Frames arrive in the order they were sent.
pub(crate) trait FrameSender: Send {
    /// Sends `frame` if there is room now; `Ok(false)` if the link is full (try again later).
    fn try_send(&mut self, frame: &[u8]) -> Result<bool, LinkError>;

    /// The longest frame the link carries.
    fn max_frame(&self) -> usize;

    /// Sends `frame`, waiting up to `timeout` for room (used for the handshake).
    fn send_timeout(&mut self, frame: &[u8], timeout: Duration) -> Result<(), LinkError>;
    /// Like `try_send`, for a frame of `len` bytes that `fill` writes straight into the link's
    /// own memory (ring space or a reusable pad) and returns the bytes used (`None`: abandon
    /// it). `Ok(false)` when nothing was sent: no room now, no such warm memory (a frame that
    /// would need a fresh out-of-band buffer), `fill` gave up, or the link cannot do this.
    fn try_send_in_place(
        &mut self,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]) -> Option<usize>,
    ) -> Result<bool, LinkError> {
        let _ = (len, fill);
        Ok(false)
    }

    /// Hands a shared object to the worker if there is room now (`Ok(false)`: try again
    /// later), in order with the frames: the worker receives it as one `Shared` frame and
    /// keeps it. Over shared memory this passes the object's sealed memfd (no copy); a remote
    /// backend would send its bytes.
    fn try_send_shared(
        &mut self,
        object: &procpool_worker::SharedObject,
    ) -> Result<bool, LinkError>;

    /// Gives back the memory the link keeps for large frames to the worker (the shared-memory
    /// backend's two reusable pads) if no large frame was sent since the previous call. The
    /// worker's reader thread calls this once per [`BUFFER_IDLE`](crate::core::BUFFER_IDLE),
    /// so the memory goes one to two of those after the last large frame. Memory the worker
    /// still reads (a pad whose frame it has not dropped) is kept; the next large frame gets
    /// fresh memory.
    ///
    /// Returns what it took, which gives the memory back when dropped: the caller drops it
    /// outside the core lock, since unmapping hundreds of MiB takes milliseconds.
    fn release_idle_buffers(&mut self) -> Released {
        None
    }
}

/// Memory a link gave back (see [`FrameSender::release_idle_buffers`]), freed when dropped.
pub(crate) type Released = Option<Box<dyn Send>>;

/// Receives frames from one worker.
pub(crate) trait FrameReceiver: Send {
    /// Waits for the next frame and passes it to `on_frame`, or fails once the link is gone.
    ///
    /// `timeout: None` waits until a frame arrives or the link breaks.
    fn recv(
        &mut self,
        timeout: Option<Duration>,
        on_frame: &mut dyn FnMut(&[u8]),
    ) -> Result<(), LinkError>;

    /// Passes the next frame to `on_frame` if one is ready (`Ok(true)`), without blocking.
    /// Also notices a peer that is gone (within the backend's liveness slice).
    fn try_recv(&mut self, on_frame: &mut dyn FnMut(&[u8])) -> Result<bool, LinkError>;

    /// `try_recv` for a helper, which looks at every ring many times a second: the backend
    /// need not check the worker's liveness here (the slot's reader thread watches it). The
    /// default is `try_recv`.
    fn try_recv_helping(&mut self, on_frame: &mut dyn FnMut(&[u8])) -> Result<bool, LinkError> {
        self.try_recv(on_frame)
    }

    /// Like `recv(None, ..)`, but returns `Ok(false)` as soon as `stop` is true (checked while
    /// spinning and before parking) or `deadline` passes; the thread that makes `stop` true
    /// then calls the [`interrupter`](FrameReceiver::interrupter), so a parked receive looks
    /// again.
    fn recv_until(
        &mut self,
        deadline: Option<Instant>,
        stop: &dyn Fn() -> bool,
        on_frame: &mut dyn FnMut(&[u8]),
    ) -> Result<bool, LinkError>;

    /// Wakes a `recv_until` parked on this link, from any thread.
    fn interrupter(&self) -> Box<dyn Fn() + Send + Sync>;

    /// An fd that polls `POLLHUP` once the worker's end of the link is gone (a dup is kept by
    /// the slot's dormant reader: `attend.rs`), if the backend has one; `None` (the default)
    /// leaves the dormant reader on its timed looks.
    fn hangup_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }

    /// Gives back the memory the receiver keeps for large frames (the shared-memory backend's
    /// copy buffer) if it took in no large frame since the previous call; called like
    /// [`FrameSender::release_idle_buffers`]. The next large frame gets fresh memory.
    fn release_idle_buffers(&mut self) {}
}

/// Shared, thread-safe control of one worker.
pub(crate) trait WorkerControl: Send + Sync {
    /// The worker's process id (or rank, for other backends).
    fn pid(&self) -> u32;

    /// What the worker is running now, if the backend can tell (the shared mailbox, words 0
    /// and 1).
    fn running(&self) -> Running;

    /// Asks the worker to give back the items of `chunk_id` it has not started and report
    /// `Yielded`: all of them, or with `half` only the later half (it runs the rest first).
    fn request_yield(&self, chunk_id: u64, half: bool);

    /// Takes chunk `chunk_id`, queued behind the one the worker runs, back before the worker
    /// starts it (the claim word, mailbox word 8: `procpool_worker::protocol::reclaim`).
    /// Returns whether it did: then the worker skips the chunk without a word, and its items
    /// are the caller's to give to another worker. `false` when the worker started it, when
    /// a chunk taken back earlier is still ahead of the worker (one at a time: see
    /// [`reclaim_pending`](WorkerControl::reclaim_pending)), or when the backend cannot take
    /// chunks back.
    fn try_reclaim(&self, chunk_id: u64) -> bool;

    /// Whether a chunk taken back with [`try_reclaim`](WorkerControl::try_reclaim) is still
    /// ahead of the worker (it has not reached and skipped it yet): until then nothing more
    /// can be taken back from it.
    fn reclaim_pending(&self) -> bool;

    /// Asks the worker to prove it is alive (mailbox word 3, answered by its heartbeat thread
    /// in word 4); returns the ping's number, or `None` when the backend has no heartbeat.
    fn ping(&self) -> Option<u64>;

    /// Whether the worker answered ping `n` (see [`ping`](WorkerControl::ping)).
    fn answered(&self, n: u64) -> bool;

    /// Tells the worker the largest encoded output of one item it may send (0: no limit;
    /// mailbox word 5). Called before the handshake's `Setup`.
    fn set_max_output(&self, bytes: u64);

    /// The CPU the worker started its last chunk on (mailbox word 6), if it said.
    fn cpu(&self) -> Option<usize>;

    /// Tells the worker which CPU a parent thread spinning for its outcomes runs on (mailbox
    /// word 7): a worker on that same CPU yields it as soon as its outcomes are published.
    fn set_waiter_cpu(&self, cpu: usize);

    /// Takes back [`set_waiter_cpu`](WorkerControl::set_waiter_cpu) when that thread stops
    /// spinning: the worker yields to, and steps off the CPU of, only a thread that spins for
    /// it now.
    fn clear_waiter_cpu(&self) {}

    /// Frames wait in this link's outbox for room: asks the worker to send `Drained` once it
    /// has read every frame it was sent (mailbox word 9), and fences (SeqCst) before the
    /// caller flushes again, so that either the worker sees the request or that flush sees the
    /// room the worker made (procpool-worker's runtime docs, "Waiting for room"). A backend
    /// without a mailbox has its own way to flush, or none is needed.
    fn outbox_waits(&self) {}

    /// Closes the link from this side: the reader's `recv` fails with `Disconnected`.
    fn close(&self);

    /// Kills the worker at once (SIGKILL).
    fn kill(&self);

    /// Asks the worker to stop (SIGTERM).
    fn terminate(&self);
}

/// The process (or remote peer) behind a link, for reaping.
pub(crate) trait WorkerProcessHandle: Send {
    /// Waits up to `timeout` for the worker to end and reports how; `None` if it still runs.
    fn wait_exit(&mut self, timeout: Duration) -> Option<WorkerExit>;
}

/// A freshly started worker, before the handshake.
pub(crate) struct Link {
    pub(crate) sender: Box<dyn FrameSender>,
    pub(crate) receiver: Box<dyn FrameReceiver>,
    pub(crate) control: std::sync::Arc<dyn WorkerControl>,
    pub(crate) process: Box<dyn WorkerProcessHandle>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("pid", &self.control.pid())
            .finish_non_exhaustive()
    }
}

/// Starts workers for a pool.
pub(crate) trait Launcher: Send + Sync {
    /// Starts one worker; the pool then runs the handshake over the returned link.
    fn launch(&self) -> Result<Link, Error>;

    /// A short description for logs and errors, e.g. the worker program's path.
    fn describe(&self) -> String;

    /// Whether its workers' [`WorkerControl::try_reclaim`] can take queued chunks back; the
    /// scheduler then prefetches long items too (`SchedulerConfig::reclaim_queued`).
    fn can_reclaim(&self) -> bool {
        false
    }
}
