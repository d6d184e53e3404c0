//! The pool core: jobs, the scheduler, workers and their reader threads, behind one lock.
//!
//! # Threads and locks
//!
//! All bookkeeping lives in [`Core`], behind one mutex: the [`Scheduler`], the table of jobs,
//! the table of chunks in flight, and per worker its [`FrameSender`] and outbox.
//! Whoever changes something that may free or create work (a submitting thread, a map
//! consumer pulling input, a reader thread reporting outcomes) dispatches under that lock:
//! it asks the scheduler for assignments, encodes each chunk as one frame and sends it.
//! Sends never block: a full link leaves the frame in the worker's outbox, flushed after
//! that worker's next outcome frame, or when the worker, told through its mailbox that frames
//! wait (`WorkerControl::outbox_waits`), has read every frame it had and says so (`Drained`):
//! frames that produce no outcome (shared objects, `Release`, a chunk taken back) free room
//! that no outcome announces.
//!
//! Each worker has one reader thread, which blocks in the link's `recv`. For an outcome
//! frame it updates the core under the lock, then decodes and delivers the outcomes with
//! the lock released, so `on_done` callbacks never run under it (they may submit).
//! When the link breaks, the same thread reaps the worker, settles what it held
//! (re-queue the unstarted, retry or fail the one it was running), starts a replacement and
//! goes on as the replacement's reader.
//!
//! # Jobs
//!
//! A `map` is one scheduler job whose items are pulled from the caller's iterator. All
//! `submit`s of one task with one set of options share one long-lived streaming job
//! ([`SubmitStream`]), so calls queued together travel in one chunk and the scheduler does
//! constant work per call. Before a chunk is encoded the job *claims* its items: items
//! cancelled (or failed) while queued are skipped there and never sent.
//!
//! # Worker loss
//!
//! The scheduler knows what a lost worker held. The worker's mailbox (words 0 and 1, written
//! before each item) says exactly which item was running: that item is blamed (retried while
//! the call allows, else `WorkerDied` or `TimedOut`); items of its chunk that finished but
//! whose outcomes were still batched in the worker are re-run when the call allows retries
//! (or the pool itself killed the worker for a timeout) and fail with `WorkerDied` otherwise;
//! everything after is re-queued. A worker that died between items is charged nothing
//! (beyond a bounded count, so a chunk that kills workers before its first item still ends).
//!
//! # Exactly one outcome
//!
//! An item leaves the pool through exactly one of: an outcome frame, a failure decided here
//! (worker lost, timed out, cancelled, terminated, encoding failed), or its job being
//! dropped by its consumer. Jobs ignore a second outcome for an item, so a race between a
//! failure and a late frame cannot deliver twice. Items failed while still queued are
//! *detached* under the lock (so no dispatch can claim them) and completed after it.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU64;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, TryLockError, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use procpool_sched::{
    ChunkId, ChunkPolicy, ChunkStatus, InputLen, JobId, JobOptions, Scheduler, SchedulerConfig,
    TaskKey, WorkerId,
};
use procpool_worker::protocol::FrameBuf;
use procpool_worker::protocol::{self, FromWorker, InitializerCall, Setup};
use procpool_worker::{AlignedVec, SharedObject, Task};

use crate::attend::{Attend, DORMANT_SLICE, Ended, HELP_WINDOW, Helping, Woke};
use crate::error::{Error, ErrorKind, TaskError, WorkerExit};
use crate::handle::{Helper, TaskHandle, task_pair_with};
use crate::job::{Completion, Job, MapJob, SubmitStream, TaskOptions};
use crate::link::{
    FrameReceiver, FrameSender, Launcher, Link, LinkError, Running, WorkerControl,
    WorkerProcessHandle,
};

/// How long a worker may take from start to `Ready`.
pub(crate) const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Consecutive failed starts of a replacement before a slot is given up.
const MAX_REPLACEMENT_FAILURES: u32 = 5;
/// Deaths an item may see while its worker had not started it, beyond its retries, before it
/// is failed anyway (a chunk that kills workers before its first item).
const UNATTRIBUTED_DEATHS: u32 = 3;
/// How often the watchdog looks at running items when some job has a timeout.
const WATCHDOG_TICK: Duration = Duration::from_millis(5);
/// The longest the watchdog sleeps when it only checks liveness.
const LIVENESS_MAX_TICK: Duration = Duration::from_millis(250);
/// Handshakes with attaching workers that may run at once; more peers wait in the backlog.
const MAX_PENDING_ATTACHES: usize = 16;
/// How long the accept loop waits for a peer before it looks at the pool's phase again. Only a
/// re-check: `close` stops the listener (`ListenerStop`), which ends the wait at once, so this
/// can be long (a test relies on it: a close that did not wake the acceptor would hang).
const ACCEPT_RECHECK: Duration = Duration::from_secs(3600);
/// The default of `PoolBuilder::liveness_timeout`.
pub(crate) const DEFAULT_LIVENESS_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a reader thread offers its link's large-frame memory back (the pads of the
/// parent's sender, the receiver's copy buffer): what was not used since the previous offer
/// is released, so it goes one to two of these after the link's last large frame (a worker
/// gives its own pads back after one second without frames, `procpool_worker`'s
/// `runtime::BUFFER_IDLE`). The reader looks at least this often even when nothing arrives:
/// a dormant one on its bell until this deadline when its worker holds nothing (else every
/// `DORMANT_SLICE`), one parked on the ring at this deadline.
pub(crate) const BUFFER_IDLE: Duration = Duration::from_secs(1);
/// The largest frame buffer the core keeps once no frame needed more for a `BUFFER_IDLE`
/// (`Core::frame`).
const FRAME_KEEP: usize = 1 << 20;

/// Settings fixed when the pool is built.
#[derive(Debug, Clone)]
pub(crate) struct PoolConfig {
    pub(crate) n_workers: usize,
    pub(crate) max_tasks_per_child: Option<NonZeroU64>,
    pub(crate) initializer: Option<InitializerCall>,
    pub(crate) handshake_timeout: Duration,
    pub(crate) terminate_grace: Duration,
    /// Kill a worker that holds work and leaves a liveness ping unanswered this long.
    pub(crate) liveness_timeout: Option<Duration>,
    /// The largest encoded arguments or output of one item (`PoolBuilder::max_item_size`).
    pub(crate) max_item_size: Option<usize>,
    pub(crate) sched: SchedulerConfig,
    /// Test-only knobs for the pool's blocking waits.
    #[cfg(test)]
    pub(crate) hooks: TestHooks,
}

/// Test-only knobs that widen or reveal the window of a blocking wait, so a test can park a
/// thread inside it deterministically (`docs/WAITING.md`).
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct TestHooks {
    /// Replaces the watchdog's tick while no job has a timeout (liveness checks only).
    pub(crate) watchdog_idle_tick: Option<Duration>,
    /// Replaces the pause between two failed starts of a worker.
    pub(crate) replacement_pause: Option<Duration>,
    /// Replaces `attend::HELP_WINDOW`.
    pub(crate) help_window: Option<Duration>,
    /// Replaces `attend::DORMANT_SLICE` (how often a dormant reader looks at its ring).
    pub(crate) dormant_slice: Option<Duration>,
    /// Called with the site's name right before a thread blocks at that site: on `changed`
    /// under the core lock ("watchdog idle", "replacement pause"), a reader thread, declared
    /// dormant, on its slot's condvar ("reader dormant"), or a caller that took the helper's
    /// seat and its snapshot of the slots, before it reads the rings ("helping").
    pub(crate) blocking: Option<Arc<dyn Fn(&'static str) + Send + Sync>>,
}

#[cfg(test)]
impl std::fmt::Debug for TestHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestHooks")
            .field("watchdog_idle_tick", &self.watchdog_idle_tick)
            .field("replacement_pause", &self.replacement_pause)
            .field("help_window", &self.help_window)
            .field("dormant_slice", &self.dormant_slice)
            .finish_non_exhaustive()
    }
}

/// Everything the pool's threads share.
pub(crate) struct Shared {
    core: Mutex<Core>,
    /// Which thread reads each worker's outcomes (`attend.rs`).
    helping: Helping,
    /// Set (Release, under the core lock) while `Core::owed` is not empty; read (Acquire)
    /// without the lock by `Helper::attend`, so a handle pays nothing when nothing is owed.
    owes: AtomicBool,
    /// Notified when a job ends, a worker comes or goes, or the phase changes.
    changed: Condvar,
    launcher: Box<dyn Launcher>,
    config: PoolConfig,
}

/// Where the pool is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Accepting work.
    Open,
    /// `shutdown` is waiting for accepted work; new work is refused, workers are replaced.
    Draining,
    /// Workers are being stopped; nothing is replaced.
    Closed,
}

struct Core {
    sched: Scheduler,
    phase: Phase,
    /// Set when no worker is left and none can be started; new work fails with it.
    broken: Option<String>,
    jobs: HashMap<JobId, JobEntry>,
    /// The open submit stream of each task and option set (a `SubmitStream<T>` behind `Any`).
    streams: HashMap<(u64, TaskOptions), (JobId, Arc<dyn std::any::Any + Send + Sync>)>,
    /// Chunks in flight, by wire id (`ChunkId::get`).
    chunks: HashMap<u64, ChunkInfo>,
    workers: HashMap<WorkerId, WorkerEntry>,
    /// Reader threads, one per worker slot; joined by shutdown.
    readers: Vec<JoinHandle<()>>,
    /// Reader threads still running.
    live_readers: usize,
    /// Workers launched and still in their handshake, by index: `close` and `terminate` cut
    /// these handshakes short (close the link, kill the process), so a pool stopped right
    /// after `build` does not wait for workers that are still starting.
    starting: Vec<(u32, Arc<dyn WorkerControl>)>,
    /// Dormant reader threads a `submit` did not wake (its caller is expected to wait, and so
    /// help): the next helper to leave, the task's handle (a callback, a future, a listener,
    /// `done`, drop), shutdown, `stats` or the watchdog wakes them (`Helper::attend`).
    owed: Vec<Arc<Attend>>,
    next_worker_index: u32,
    /// Replacements started after a worker ended (crash, timeout or recycling).
    restarts: u64,
    /// Workers lost to a crash, kill or protocol violation.
    deaths: u64,
    /// Jobs with a timeout in flight; the watchdog runs while this is non-zero.
    timed_jobs: usize,
    /// The watchdog sits out its idle tick (no chunk of a timed job in flight): dispatching
    /// such a chunk wakes it, since its timeout is counted from when the watchdog first sees
    /// the item run.
    watchdog_idle: bool,
    watchdog: Option<JoinHandle<()>>,
    /// `shutdown` was asked for on a reader thread: close once no job is left.
    close_when_drained: bool,
    /// Threads accepting attaching workers (`Pool::listen`), each with the handle that stops
    /// its listener's wait (`close` uses it, so an acceptor ends at once).
    acceptors: Vec<(JoinHandle<()>, procpool_worker::ListenerStop)>,
    /// Attaching workers refused (failed handshake, foreign user, …), and the last reason.
    attach_refusals: u64,
    last_attach_refusal: Option<String>,
    /// Scratch buffer for encoding frames (chunks not written in place). Above `FRAME_KEEP`
    /// bytes it is dropped by the first reader thread that offers its buffers back a
    /// `BUFFER_IDLE` after `frame_large_at`.
    frame: AlignedVec,
    /// When a frame above `FRAME_KEEP` bytes was last encoded into `frame`.
    frame_large_at: Instant,
    /// Per retired worker, the stats it ended with (pool-wide totals).
    retired_tasks: u64,
    /// Shared objects alive in the parent (weak: the user's handles own them). Every worker in
    /// `workers` has been sent each of them, ahead of any call that could use it.
    objects: HashMap<u64, Weak<SharedObject>>,
    /// Where a dropped object's id goes (the release thread); made with the first object.
    releaser: Option<std::sync::mpsc::Sender<u64>>,
}

/// Something waiting in a worker's outbox: a frame, or a shared object to hand over.
enum Outgoing {
    Frame(AlignedVec),
    Object(Arc<SharedObject>),
}

struct JobEntry {
    job: Arc<dyn Job>,
    /// Chunks of this job in `Core::chunks`.
    chunks_in_flight: usize,
    /// Removed from the scheduler (shutdown_now or its consumer left); it ends when its
    /// last chunk in flight ends.
    detached: bool,
}

struct ChunkInfo {
    id: ChunkId,
    job: JobId,
    worker: WorkerId,
    /// The chunk's items; `end` shrinks when the worker yields.
    items: Range<u64>,
    /// The first item without an outcome.
    next: u64,
    sent_at: Instant,
}

struct WorkerEntry {
    /// The worker's index in the pool, as told in `Setup` (unique over the pool's life).
    index: u32,
    /// Its slot's reader state, to kick a dormant reader thread.
    attend: Arc<Attend>,
    pid: u32,
    control: Arc<dyn WorkerControl>,
    sender: Box<dyn FrameSender>,
    /// Frames (and shared objects) the link had no room for, in order.
    outbox: VecDeque<Outgoing>,
    /// Items it may still be given before it is recycled (`max_tasks_per_child`). Items
    /// given and then taken back unrun (reclaimed, yielded) are refunded (`refund`).
    budget: Option<u64>,
    /// A chunk taken back from it is still ahead of it in its ring (the claim word holds the
    /// mark): nothing more can be taken back until it passes it, so meanwhile it gets no
    /// chunk beyond the one it runs (`Scheduler::set_prefetch`).
    reclaim_pending: bool,
    /// Shutdown was sent (recycling or pool shutdown): its end is expected.
    stopping: bool,
    tasks_done: u64,
    busy: Duration,
    started_at: Instant,
    /// When it last reported, for estimating busy time.
    last_event: Instant,
    /// Item the watchdog saw running: (chunk wire id, item index, first seen).
    watched: Option<(u64, u64, Instant)>,
    /// The watchdog killed it for this item: (chunk wire id, item index, limit).
    timed_out: Option<(u64, u64, Duration)>,
    /// The liveness ping it has not answered yet: (number, when sent).
    ping: Option<(u64, Instant)>,
    /// When it last showed it is alive (an answered ping, an outcome frame), or stopped
    /// holding work.
    alive_at: Instant,
    /// The watchdog killed it for leaving a ping unanswered this long.
    unresponsive: Option<Duration>,
}

/// What the mailbox says a lost worker was doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// No mailbox: trust the scheduler's "first unreported item".
    Unknown,
    /// Between items or chunks: nothing unreported had started.
    NothingStarted,
    /// Running this item of this job.
    Exact(JobId, u64),
}

/// Work to do after the core lock is released.
#[derive(Default)]
struct Deferred {
    failures: Vec<(Arc<dyn Job>, Range<u64>, TaskError)>,
    completions: Vec<Completion>,
    /// Dormant reader threads to wake: their worker got a chunk nobody else will read for.
    kicks: Vec<Arc<Attend>>,
}

impl Deferred {
    /// Takes over what `other` has to do (dispatches inside a larger operation).
    fn absorb(&mut self, other: Deferred) {
        self.failures.extend(other.failures);
        self.completions.extend(other.completions);
        self.kicks.extend(other.kicks);
    }

    fn run(mut self) {
        self.kicks.dedup_by(|a, b| Arc::ptr_eq(a, b));
        for cell in self.kicks {
            cell.kick();
        }
        for (job, items, error) in self.failures {
            job.fail(items, error);
        }
        for completion in self.completions {
            completion();
        }
    }
}

thread_local! {
    /// Set on reader threads (and on a thread while it helps, `attend.rs`), so shutdown from
    /// a callback does not join the reader threads.
    static ON_READER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Set while this thread helps: a nested wait (a callback waiting for another task)
    /// helps on without taking the seat again.
    static HELPING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Set by `Shared::call` while it submits: this thread helps right after, so dispatch
    /// need not wake a dormant reader for the chunk.
    static WILL_HELP: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Set by `Shared::submit` while it dispatches: a chunk for an idle worker does not wake
    /// its dormant reader at once; the kick is owed (`Core::owed`) and paid when the handle
    /// shows nobody will help (`Helper::attend`), so `submit` + `result` is attended like
    /// `Pool::call`.
    static LAZY_KICK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// The buffer a helper copies small frames into, kept for this thread's next help.
    static HELP_BUF: std::cell::Cell<AlignedVec> = std::cell::Cell::new(AlignedVec::new());
}

/// How long a thread spins for a taken core lock before it blocks (see `Shared::lock`): about
/// the cost of the futex sleep and wake-up it saves on this kind of machine.
const LOCK_SPIN: Duration = Duration::from_micros(50);

/// A frame a helper reads up to this size is copied out, so the receiver is released before
/// the outcomes are delivered (callbacks run without it); larger ones are settled as the
/// receiver hands them over (already copied out of the worker's reach by `backend::deliver`,
/// unless sealed).
pub(crate) const HELP_COPY_LIMIT: usize = 64 * 1024;

/// The look (of every 64) at which a helper checks whether a worker shares its CPU: late
/// enough that a warm round trip between two cores is usually over (~1 µs of looks).
const CO_LOCATION_LOOK: u32 = 16;

/// Looks a helper takes by pure spinning (a few µs: a warm round trip with the worker on the
/// other core) before it yields the core on every further look.
const HELP_PURE_SPINS: u32 = 64;

/// Takes `mutex`, trying for up to `spin` before blocking on it (a poisoned lock is taken
/// as it is: the core's state stays consistent between its own statements).
///
/// Between attempts it pauses a few spins (a failed attempt still takes the lock's cache line
/// from the holder) and every 64 looks yields its core, in case the holder waits for that core
/// (two vCPUs, more runnable threads than that under load). After `spin` it blocks like
/// `Mutex::lock`, so a holder that keeps the lock long costs a sleep, not a burnt core.
pub(crate) fn lock_spinning<T>(mutex: &Mutex<T>, spin: Duration) -> MutexGuard<'_, T> {
    let attempt = || match mutex.try_lock() {
        Ok(guard) => Some(guard),
        Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    };
    if let Some(guard) = attempt() {
        return guard;
    }
    let start = Instant::now();
    let mut looks = 0u32;
    loop {
        looks = looks.wrapping_add(1);
        if looks % 64 == 0 {
            std::thread::yield_now();
        } else {
            for _ in 0..8 {
                std::hint::spin_loop();
            }
        }
        if let Some(guard) = attempt() {
            return guard;
        }
        if looks % 16 == 0 && start.elapsed() >= spin {
            return mutex.lock().unwrap_or_else(PoisonError::into_inner);
        }
    }
}

fn items_len(items: &Range<u64>) -> u64 {
    items.end.saturating_sub(items.start)
}

impl Shared {
    /// Takes the core lock, spinning for it up to [`LOCK_SPIN`] before blocking.
    ///
    /// Every `submit` takes this lock, and so does a reader thread for each outcome frame
    /// (settling it, then dispatching the next chunk: claiming, encoding and sending it, a few
    /// µs). `std`'s mutex spins only ~100 looks before it sleeps on a futex, and the sleep plus
    /// its wake-up costs ~50 µs here: a burst of submits that met the reader threads' frames
    /// slept thousands of times per 100,000 submits (`docs/bench/submit.md`).
    fn lock(&self) -> MutexGuard<'_, Core> {
        lock_spinning(&self.core, LOCK_SPIN)
    }

    /// Tells a test that this thread is about to block at `site` (`TestHooks::blocking`).
    #[inline]
    fn about_to_block(&self, site: &'static str) {
        #[cfg(test)]
        if let Some(hook) = &self.config.hooks.blocking {
            hook(site);
        }
        let _ = site;
    }

    /// Starts the pool's first workers; fails if any cannot start.
    pub(crate) fn start(
        launcher: Box<dyn Launcher>,
        config: PoolConfig,
    ) -> Result<Arc<Shared>, Error> {
        // Long items are prefetched only where a queued chunk can be taken back unstarted.
        let sched_config = SchedulerConfig {
            reclaim_queued: launcher.can_reclaim(),
            ..config.sched.clone()
        };
        let shared = Arc::new(Shared {
            core: Mutex::new(Core {
                sched: Scheduler::new(sched_config),
                phase: Phase::Open,
                broken: None,
                jobs: HashMap::new(),
                streams: HashMap::new(),
                chunks: HashMap::new(),
                workers: HashMap::new(),
                readers: Vec::new(),
                live_readers: 0,
                starting: Vec::new(),
                owed: Vec::new(),
                next_worker_index: 0,
                restarts: 0,
                deaths: 0,
                timed_jobs: 0,
                watchdog_idle: false,
                watchdog: None,
                close_when_drained: false,
                acceptors: Vec::new(),
                attach_refusals: 0,
                last_attach_refusal: None,
                frame: AlignedVec::new(),
                frame_large_at: Instant::now(),
                retired_tasks: 0,
                objects: HashMap::new(),
                releaser: None,
            }),
            changed: Condvar::new(),
            helping: Helping::default(),
            owes: AtomicBool::new(false),
            launcher,
            config,
        });
        if shared.config.liveness_timeout.is_some() {
            let mut core = shared.lock();
            shared.ensure_watchdog(&mut core);
        }
        // The first worker is started here and `build` returns once it is ready; every other
        // worker is launched and handshaken on its own reader thread meanwhile, and joins the
        // scheduler (and gets work) when it is ready. A program that cannot start, is no
        // worker or whose initializer fails still fails `build`: the first worker shows it.
        let first = match shared.launcher.launch() {
            Ok(link) => link,
            Err(err) => {
                shared.terminate();
                return Err(err);
            }
        };
        for _ in 1..shared.config.n_workers {
            if let Err(err) = shared.spawn_starter() {
                kill_links(vec![first]);
                shared.terminate();
                return Err(err);
            }
        }
        let started = shared
            .start_link(first, true, Arc::new(Attend::default()))
            .and_then(|started| shared.spawn_reader_for(started));
        if let Err(err) = started {
            shared.terminate();
            return Err(err);
        }
        Ok(shared)
    }

    /// Starts a reader thread that first launches its worker and runs the handshake (a worker
    /// of `build` other than the first), then serves it like any other.
    fn spawn_starter(self: &Arc<Self>) -> Result<(), Error> {
        let shared = Arc::clone(self);
        let mut core = self.lock();
        let thread = std::thread::Builder::new()
            .name("procpool-reader".into())
            .spawn(move || {
                ON_READER.with(|flag| flag.set(true));
                let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    // Tried a few times like a replacement; the slot is given up after that.
                    let attend = Arc::new(Attend::default());
                    if let Some(started) = shared.replace_worker(&attend) {
                        shared.reader_loop(started);
                    }
                }));
                if served.is_err() {
                    tracing::error!("a procpool reader thread panicked; its worker is lost");
                }
                let mut core = shared.lock();
                core.live_readers -= 1;
                shared.changed.notify_all();
            })
            .map_err(|err| {
                Error::with_source(ErrorKind::Io, "cannot start a reader thread", err)
            })?;
        core.readers.push(thread);
        core.live_readers += 1;
        Ok(())
    }

    /// Starts the reader thread of a worker that passed its handshake.
    fn spawn_reader_for(self: &Arc<Self>, started: StartedWorker) -> Result<(), Error> {
        let shared = Arc::clone(self);
        let mut core = self.lock();
        let thread = std::thread::Builder::new()
            .name(format!("procpool-reader-{}", started.index))
            .spawn(move || {
                ON_READER.with(|flag| flag.set(true));
                let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    shared.reader_loop(started);
                }));
                if served.is_err() {
                    // A bug, not a worker's fault; keep the pool's accounting right.
                    tracing::error!("a procpool reader thread panicked; its worker is lost");
                }
                let mut core = shared.lock();
                core.live_readers -= 1;
                shared.changed.notify_all();
            })
            .map_err(|err| {
                Error::with_source(ErrorKind::Io, "cannot start a reader thread", err)
            })?;
        core.readers.push(thread);
        core.live_readers += 1;
        Ok(())
    }

    /// Launches a worker, runs the handshake and registers it with the scheduler.
    fn start_worker(&self, attend: Arc<Attend>) -> Result<StartedWorker, Error> {
        let link = self.launcher.launch()?;
        self.start_link(link, true, attend)
    }

    /// Runs the handshake over a new link and registers the worker with the scheduler.
    /// `replaceable`: start a new worker when this one ends (not for attached workers).
    /// `attend`: the reader slot that will serve it.
    fn start_link(
        &self,
        mut link: Link,
        replaceable: bool,
        attend: Arc<Attend>,
    ) -> Result<StartedWorker, Error> {
        let index = {
            let mut core = self.lock();
            let index = core.next_worker_index;
            core.next_worker_index += 1;
            // Registered under the lock that `close` takes: either it sees this handshake
            // and cuts it short, or this sees the pool closed.
            if core.phase == Phase::Closed {
                link.control.close();
            } else {
                core.starting.push((index, Arc::clone(&link.control)));
            }
            index
        };
        let pid = link.control.pid();
        let shaken = handshake(&mut link, index, &self.config);
        if let Err(err) = shaken {
            self.lock()
                .starting
                .retain(|(starting, _)| *starting != index);
            link.control.kill();
            let exit = link.process.wait_exit(Duration::from_secs(2));
            let err = match exit {
                Some(exit) => err.with_note(format_args!("(worker {pid} {exit})")),
                None => err,
            };
            return Err(err);
        }
        tracing::debug!(pid, index, "worker ready");
        let Link {
            sender,
            receiver,
            control,
            process,
        } = link;
        let mut core = self.lock();
        core.starting.retain(|(starting, _)| *starting != index);
        let id = core.sched.add_worker();
        let now = Instant::now();
        core.workers.insert(
            id,
            WorkerEntry {
                index,
                attend: Arc::clone(&attend),
                pid,
                control: Arc::clone(&control),
                sender,
                outbox: VecDeque::new(),
                budget: self.config.max_tasks_per_child.map(NonZeroU64::get),
                reclaim_pending: false,
                stopping: false,
                tasks_done: 0,
                busy: Duration::ZERO,
                started_at: now,
                last_event: now,
                watched: None,
                timed_out: None,
                ping: None,
                alive_at: now,
                unresponsive: None,
            },
        );
        // Every live shared object reaches a new worker before its first call.
        let objects: Vec<Arc<SharedObject>> =
            core.objects.values().filter_map(Weak::upgrade).collect();
        let entry = core.workers.get_mut(&id).expect("just inserted");
        for object in &objects {
            send_object(entry, object);
        }
        if core.phase == Phase::Closed {
            send_shutdown(core.workers.get_mut(&id).expect("just inserted"));
        }
        let deferred = self.dispatch(&mut core);
        self.changed.notify_all();
        drop(core);
        deferred.run();
        Ok(StartedWorker {
            id,
            index,
            pid,
            replaceable,
            receiver: Some(receiver),
            attend,
            control,
            process,
        })
    }

    /// The body of a reader thread: serve a worker, replace it when it ends, repeat.
    fn reader_loop(self: &Arc<Self>, mut worker: StartedWorker) {
        let attend = Arc::clone(&worker.attend);
        self.helping.add(&attend);
        loop {
            let reason = self.serve(&mut worker);
            let exit = if reason.is_some() {
                // The worker broke the protocol or was killed; make sure it is gone.
                worker.control.kill();
                worker.process.wait_exit(Duration::from_secs(5))
            } else {
                worker
                    .process
                    .wait_exit(Duration::from_secs(2))
                    .or_else(|| {
                        worker.control.kill();
                        worker.process.wait_exit(Duration::from_secs(5))
                    })
            };
            let exit = exit.unwrap_or(WorkerExit::Unknown);
            let replace = self.on_worker_lost(&worker, exit, reason) && worker.replaceable;
            drop(worker);
            if !replace {
                break;
            }
            match self.replace_worker(&attend) {
                Some(next) => worker = next,
                None => break,
            }
        }
        self.helping.remove(&attend);
    }

    /// Reads frames until the link ends; returns why, if it was a violation.
    ///
    /// The receiver lives in the slot's [`Attend`] meanwhile, so a waiting caller can read it
    /// (`attend.rs`); this thread steps aside (dormant) while one does.
    fn serve(&self, worker: &mut StartedWorker) -> Option<String> {
        let attend = Arc::clone(&worker.attend);
        let receiver = worker.receiver.take().expect("a worker is served once");
        attend.install(worker.id, receiver, Arc::clone(&worker.control));
        let reason = self.serve_attended(worker, &attend);
        drop(attend.uninstall());
        reason
    }

    fn serve_attended(&self, worker: &StartedWorker, attend: &Attend) -> Option<String> {
        let id = worker.id;
        let mut buf = AlignedVec::new();
        let stop = || self.helping.active();
        // Dormant: a helper reads (or read last) this ring; sleep until kicked, looking at
        // the ring once per slice. `declared`: the kick flag is armed.
        let mut dormant = false;
        let mut declared = false;
        // When the link's large-frame memory was last offered back (`BUFFER_IDLE`).
        let mut buffers_offered = Instant::now();
        loop {
            if dormant {
                if !declared {
                    attend.declare_dormant();
                    declared = true;
                    // A helper that left before the declaration did not kick this reader:
                    // read if it would have been kicked (`Helper::help`'s leave). Otherwise
                    // stay dormant, as a reader that declared in time does: back on its ring
                    // it would only be interrupted by the next helper, and a lone call after
                    // an idle time would wait for it to step aside first.
                    if !self.helping.active() && (attend.has_ended() || self.reader_wanted(id)) {
                        attend.wake_up();
                        dormant = false;
                        declared = false;
                    }
                }
                // With a bell, a reader whose worker holds nothing sleeps until a kick, the
                // worker's end, or the link's next buffer offer: no timer that could fire with
                // a caller's own (a lone call after 100 ms idle found it woken beside itself
                // by two 50 ms slices armed when the previous call ended). A worker holding a
                // chunk nobody waits for yet (`owed`) keeps the slice as its rescue.
                let dormant_slice = if dormant && attend.has_bell() && !self.holds_chunk(id) {
                    (buffers_offered + BUFFER_IDLE)
                        .saturating_duration_since(Instant::now())
                        .max(Duration::from_millis(1))
                } else {
                    DORMANT_SLICE
                };
                #[cfg(test)]
                let dormant_slice = self.config.hooks.dormant_slice.unwrap_or(dormant_slice);
                if dormant {
                    self.about_to_block("reader dormant");
                    match attend.sleep(dormant_slice) {
                        Woke::Kicked => {
                            dormant = false;
                            declared = false;
                        }
                        Woke::Slice => {}
                        Woke::HungUp => {
                            // Read until the link reports its end (the ring's own probe);
                            // the bell would only ring again at once.
                            attend.wake_up();
                            dormant = false;
                            declared = false;
                        }
                    }
                }
            }
            let Some(mut guard) = attend.try_rx() else {
                // A helper holds the receiver.
                dormant = true;
                std::thread::yield_now();
                continue;
            };
            // Only `serve` uninstalls the receiver, after this returns.
            let rx = guard.as_mut()?;
            if let Some(ended) = rx.ended.take() {
                drop(guard);
                return match ended {
                    Ended::Link(LinkError::Corrupt(why)) => Some(why),
                    Ended::Link(_) => None,
                    Ended::Violation(why) => {
                        tracing::warn!(pid = worker.pid, "worker broke the protocol: {why}");
                        worker.control.close();
                        Some(why)
                    }
                };
            }
            // Before the helper check, so a stream of helped calls does not skip it. Holding
            // the receiver, no frame is being read; the core lock is taken after it, as when a
            // frame is settled, and released before the receiver gives its buffer back.
            let now = Instant::now();
            if now.saturating_duration_since(buffers_offered) >= BUFFER_IDLE {
                buffers_offered = now;
                if self.release_idle_buffers(id, now) {
                    rx.receiver.release_idle_buffers();
                }
            }
            // Checked with the receiver held: a helper that copied a frame out settles it
            // before it leaves, so frames stay in order.
            if self.helping.active() {
                dormant = true;
                continue;
            }
            // Small frames are copied out and settled after the receive, releasing the
            // receiver before their outcomes are delivered; large ones are settled in place.
            let mut copied = false;
            let mut violation = None;
            let mut on_frame = |frame: &[u8]| {
                if frame.len() <= HELP_COPY_LIMIT {
                    buf.clear();
                    buf.extend_from_slice(frame);
                    copied = true;
                } else if let Err(why) = self.on_frame(id, frame, &mut || {}) {
                    violation = Some(why);
                }
            };
            let res = if dormant {
                // A slice passed with nobody reading: look once (a stray frame, or the end of
                // the link).
                rx.receiver.try_recv(&mut on_frame).map(|got| {
                    if got {
                        attend.wake_up();
                        dormant = false;
                        declared = false;
                    }
                })
            } else {
                // Back by the next offer of the link's buffers at the latest; nothing read
                // then is not a reason to go dormant. A helper is: one active now, or one
                // that made the wait end early (it stopped the wait, then left before this
                // thread ran, as when caller and worker share a core) while the worker holds
                // nothing. Back on the ring, this reader would only be interrupted by the
                // next helper, and a lone call after an idle time would wait for it to step
                // aside first; dormant, a dispatch kicks it if nobody helps.
                let offer = buffers_offered + BUFFER_IDLE;
                rx.receiver
                    .recv_until(Some(offer), &stop, &mut on_frame)
                    .map(|got| {
                        dormant =
                            !got && (stop() || (Instant::now() < offer && !self.holds_chunk(id)));
                    })
            };
            if copied {
                let mut held = Some(guard);
                if let Err(why) = self.on_frame(id, &buf, &mut || drop(held.take())) {
                    violation = Some(why);
                }
            } else {
                drop(guard);
            }
            if let Some(why) = &violation {
                tracing::warn!(pid = worker.pid, "worker broke the protocol: {why}");
                worker.control.close();
                return violation;
            }
            match res {
                Ok(()) => {}
                Err(LinkError::Corrupt(why)) => return Some(why),
                Err(_) => return None,
            }
        }
    }

    /// Whether worker `id`'s reader thread must read rather than stay dormant when no helper
    /// is active, besides a link a helper saw end (`Attend::has_ended`): what else a leaving
    /// helper kicks it for (`Helper::help`): the worker holds a chunk, is stopping, or frames
    /// wait in its outbox. Anything else sent to a dormant reader's ring comes with a kick
    /// (dispatch, `owed`) or waits for its next look.
    fn reader_wanted(&self, id: WorkerId) -> bool {
        let core = self.lock();
        holds_chunk(&core, id)
            || core
                .workers
                .get(&id)
                .is_some_and(|worker| worker.stopping || !worker.outbox.is_empty())
    }

    /// Whether worker `id` holds a chunk.
    fn holds_chunk(&self, id: WorkerId) -> bool {
        holds_chunk(&self.lock(), id)
    }

    /// A reader thread's offer of large-frame memory (`BUFFER_IDLE`): the core gives back its
    /// frame buffer if it grew above `FRAME_KEEP` and no frame needed that much for a
    /// `BUFFER_IDLE`, and, if the worker holds no chunk, its sender gives back its idle pads.
    /// Returns whether the worker holds no chunk (then its receiver's buffer may go too).
    ///
    /// A worker running a chunk is not idle, however long the chunk takes: a call with a large
    /// argument that runs for seconds keeps the pads its argument came in and the buffer its
    /// result will need, so a stream of such calls reuses them instead of faulting in fresh
    /// memory for every call.
    fn release_idle_buffers(&self, id: WorkerId, now: Instant) -> bool {
        let (idle, pads, frame) = {
            let mut core = self.lock();
            let idle = !core.chunks.values().any(|info| info.worker == id);
            let pads = (core.workers.get_mut(&id))
                .filter(|_| idle)
                .and_then(|entry| entry.sender.release_idle_buffers());
            let frame = (core.frame.capacity() > FRAME_KEEP
                && now.saturating_duration_since(core.frame_large_at) >= BUFFER_IDLE)
                .then(|| std::mem::replace(&mut core.frame, AlignedVec::new()));
            (idle, pads, frame)
        };
        // Outside the core lock: punching and unmapping a 64 MiB pad takes ~8 ms here (a
        // 256 MiB one ~60 ms), which would hold up every submit and outcome meanwhile.
        drop(pads);
        drop(frame);
        idle
    }

    /// The capacity of the core's frame buffer (tests).
    #[cfg(test)]
    pub(crate) fn frame_buffer_capacity(&self) -> usize {
        self.lock().frame.capacity()
    }

    /// One look at one slot's ring for a helper; `true` if it settled a frame.
    fn help_once(&self, attend: &Attend, buf: &mut AlignedVec) -> bool {
        let Some(mut guard) = attend.try_rx() else {
            return false;
        };
        let Some(rx) = guard.as_mut() else {
            return false;
        };
        if rx.ended.is_some() {
            return false;
        }
        let id = rx.id;
        let mut in_place = None;
        let mut on_frame = |frame: &[u8]| {
            if frame.len() <= HELP_COPY_LIMIT {
                buf.clear();
                buf.extend_from_slice(frame);
            } else {
                in_place = Some(self.on_frame(id, frame, &mut || {}));
            }
        };
        // The worker's liveness is its reader's to watch, unless its bell heard the link close
        // (then the reader waits for a kick while helpers are active, and this look finds the
        // end).
        let res = if attend.hung_up() {
            rx.receiver.try_recv(&mut on_frame)
        } else {
            rx.receiver.try_recv_helping(&mut on_frame)
        };
        let settled = match res {
            Ok(false) => return false,
            Ok(true) => match in_place {
                Some(settled) => settled.map_err(Ended::Violation),
                None => {
                    // The receiver is released before the outcomes are delivered (callbacks
                    // run without it), after the core took the frame into account (order).
                    let mut held = Some(guard);
                    let settled = self
                        .on_frame(id, buf, &mut || drop(held.take()))
                        .map_err(Ended::Violation);
                    guard = match held {
                        Some(guard) => guard,
                        None => attend.lock_rx(),
                    };
                    settled
                }
            },
            Err(err) => Err(Ended::Link(err)),
        };
        let ended = match settled {
            Ok(()) => return true,
            Err(ended) => ended,
        };
        // The reader thread settles the end of the link (reap, re-queue, replace).
        if let Some(rx) = guard.as_mut()
            && rx.id == id
            && rx.ended.is_none()
        {
            rx.ended = Some(ended);
        }
        drop(guard);
        attend.kick();
        true
    }

    /// Handles one frame from worker `id`.
    ///
    /// `settled` is called once the core has taken the frame into account, before outcomes
    /// are delivered (callbacks run): a reader of a copied frame releases the receiver there,
    /// so frames are settled in order and callbacks run without it.
    fn on_frame(
        &self,
        id: WorkerId,
        frame: &[u8],
        settled: &mut dyn FnMut(),
    ) -> Result<(), String> {
        let message = protocol::parse_from_worker(frame).map_err(|err| err.to_string())?;
        match message {
            FromWorker::Outcomes(batch) => {
                let n = batch.len() as u64;
                let mut guard = self.lock();
                let now = Instant::now();
                let core = &mut *guard;
                let info = core.chunks.get_mut(&batch.chunk_id).ok_or_else(|| {
                    format!(
                        "outcomes for chunk {} which it does not hold",
                        batch.chunk_id
                    )
                })?;
                if info.worker != id
                    || batch.first_index != info.next
                    || info.next + n > info.items.end
                {
                    return Err(format!(
                        "outcomes for items {}..{} of chunk {}, expected from {} to at most {}",
                        batch.first_index,
                        batch.first_index.saturating_add(n),
                        batch.chunk_id,
                        info.next,
                        info.items.end
                    ));
                }
                info.next += n;
                let (chunk_id, job_id, sent_at) = (info.id, info.job, info.sent_at);
                let worker = core
                    .workers
                    .get_mut(&id)
                    .ok_or("outcomes from an unknown worker")?;
                let busy = now.saturating_duration_since(worker.last_event.max(sent_at));
                worker.last_event = now;
                worker.alive_at = now;
                worker.busy += busy;
                worker.tasks_done += n;
                worker.watched = None;
                // The scheduler's cost estimate takes the worker's own measure when it sent
                // one: the time seen from here also holds however long the frame waited to be
                // read, which under load grew the estimate of a trivial task a hundredfold
                // and shrank its chunks to a few items (`docs/bench/submit.md`).
                let cost = batch.worker_busy().unwrap_or(busy);
                let status = core
                    .sched
                    .on_items_done(id, chunk_id, n, cost)
                    .map_err(|err| err.to_string())?;
                if status == ChunkStatus::Finished {
                    self.end_chunk(core, batch.chunk_id);
                }
                let job = core.jobs.get(&job_id).map(|entry| Arc::clone(&entry.job));
                self.check_job(core, job_id);
                self.after_progress(core, id);
                let deferred = self.dispatch(core);
                drop(guard);
                settled();
                if let Some(job) = job {
                    job.deliver(&batch);
                }
                deferred.run();
                Ok(())
            }
            FromWorker::Yielded {
                chunk_id,
                next_index,
            } => {
                let mut guard = self.lock();
                let core = &mut *guard;
                let info = core
                    .chunks
                    .get_mut(&chunk_id)
                    .ok_or_else(|| format!("yielded chunk {chunk_id} which it does not hold"))?;
                if info.worker != id {
                    return Err(format!("yielded chunk {chunk_id} of another worker"));
                }
                let (sched_id, job_id, end) = (info.id, info.job, info.items.end);
                let status = core
                    .sched
                    .on_yielded(id, sched_id, next_index)
                    .map_err(|err| err.to_string())?;
                info.items.end = next_index;
                if let Some(entry) = core.jobs.get(&job_id) {
                    entry.job.unstart(next_index..end);
                }
                refund(core, id, end.saturating_sub(next_index));
                if status == ChunkStatus::Finished {
                    self.end_chunk(core, chunk_id);
                }
                self.check_job(core, job_id);
                let deferred = self.dispatch(core);
                drop(guard);
                deferred.run();
                Ok(())
            }
            FromWorker::Pong { .. } => Ok(()),
            FromWorker::Drained => {
                // It read everything it was sent: what waits now fits (`outbox_waits`).
                let mut core = self.lock();
                if let Some(worker) = core.workers.get_mut(&id) {
                    flush(worker);
                }
                Ok(())
            }
            FromWorker::Hello(_) | FromWorker::Ready | FromWorker::InitFailed(_) => {
                Err("a handshake message after the handshake".to_owned())
            }
        }
    }

    /// Forgets a chunk that has no items left at its worker.
    fn end_chunk(&self, core: &mut Core, chunk_wire_id: u64) {
        if let Some(info) = core.chunks.remove(&chunk_wire_id)
            && let Some(entry) = core.jobs.get_mut(&info.job)
        {
            entry.chunks_in_flight -= 1;
        }
    }

    /// After a worker reported: flush its outbox, recycle it if its budget is spent.
    fn after_progress(&self, core: &mut Core, id: WorkerId) {
        let holds_chunks = core.chunks.values().any(|info| info.worker == id);
        let Some(worker) = core.workers.get_mut(&id) else {
            return;
        };
        flush(worker);
        if worker.budget == Some(0) && !holds_chunks && !worker.stopping {
            send_shutdown(worker);
        }
    }

    /// Removes a job whose every item has an outcome (or will get one outside the scheduler).
    fn check_job(&self, core: &mut Core, job_id: JobId) {
        let Some(entry) = core.jobs.get(&job_id) else {
            return;
        };
        let complete = if entry.detached {
            entry.chunks_in_flight == 0
        } else {
            entry.chunks_in_flight == 0
                && core
                    .sched
                    .job_progress(job_id)
                    .is_none_or(|progress| progress.is_complete())
        };
        if complete {
            if !entry.detached {
                let _ = core.sched.remove_job(job_id);
            }
            if let Some(entry) = core.jobs.remove(&job_id)
                && entry.job.options().timeout.is_some()
            {
                core.timed_jobs -= 1;
            }
            if core.close_when_drained && core.jobs.is_empty() && core.phase == Phase::Draining {
                // A shutdown asked for on a pool thread could not wait: finish it now, without
                // joining (the readers end once their workers exit).
                core.phase = Phase::Closed;
                for worker in core.workers.values_mut() {
                    if !worker.stopping {
                        send_shutdown(worker);
                    }
                }
            }
            self.changed.notify_all();
        }
    }

    /// Hands out every chunk the scheduler is willing to, and proposes tail splits.
    fn dispatch(&self, core: &mut Core) -> Deferred {
        let mut deferred = Deferred::default();
        // A worker that passed the chunk taken back from it may queue chunks again.
        for (id, worker) in &mut core.workers {
            if worker.reclaim_pending && !worker.control.reclaim_pending() {
                worker.reclaim_pending = false;
                let _ = core.sched.set_prefetch(*id, true);
            }
        }
        // A chunk needs a reader: the helper active now (it kicks on leaving, and reads this
        // decision under the same lock), the thread of `Pool::call` that helps next, or the
        // worker's reader thread, woken if dormant (`attend.rs`).
        let kick = !self.helping.active() && !WILL_HELP.with(std::cell::Cell::get);
        while let Some(assignment) = core.sched.next_assignment() {
            let job_id = assignment.span.job;
            let mut items = assignment.span.items.clone();
            let worker_id = assignment.worker;
            let Some(entry) = core.jobs.get(&job_id) else {
                let _ = core.sched.on_items_done(
                    worker_id,
                    assignment.chunk,
                    items_len(&items),
                    Duration::ZERO,
                );
                continue;
            };
            let job = Arc::clone(&entry.job);
            // Items cancelled before they started are skipped here, never sent.
            let claimed = job.claim(items.clone());
            let skipped = claimed.start - items.start;
            if skipped > 0 {
                let _ =
                    core.sched
                        .on_items_done(worker_id, assignment.chunk, skipped, Duration::ZERO);
            }
            if claimed.is_empty() {
                self.check_job(core, job_id);
                continue;
            }
            if claimed.end < items.end {
                let _ = core
                    .sched
                    .on_yielded(worker_id, assignment.chunk, claimed.end);
            }
            items = claimed;
            let wire_id = assignment.chunk.get();
            let mut frame = std::mem::take(&mut core.frame);
            // A chunk is written straight into the worker's ring or pad when nothing waits in
            // its outbox and its frame's length is cheap to measure (plain-data and byte-buffer
            // arguments: a few write calls): measured here, written in place when sent below.
            // Otherwise it is encoded into `frame`, which the link copies.
            let in_place = core
                .workers
                .get(&worker_id)
                .is_some_and(|worker| worker.outbox.is_empty());
            let encode = |items: Range<u64>, frame: &mut AlignedVec| {
                if in_place && let Ok(len) = job.encode(wire_id, items.clone(), FrameBuf::Measure) {
                    return Ok(Encoded::Measured(len));
                }
                job.encode(wire_id, items, FrameBuf::Grow(frame))
                    .map(Encoded::Buffered)
            };
            let mut encoded = encode(items.clone(), &mut frame);
            // The item size limit: a chunk whose arguments fit as a whole has no item over it;
            // otherwise the chunk is cut to its first item (the rest goes back to the queue and
            // is checked the same way), and that item alone is checked below.
            let over_limit = |encoded: &Result<Encoded, TaskError>| {
                let len = encoded.as_ref().ok()?.len();
                self.config.max_item_size.and_then(|limit| {
                    let size = len.saturating_sub(protocol::HEADER_LEN);
                    (size > limit).then_some(TaskError::TooLarge {
                        what: "the arguments",
                        size,
                        limit,
                    })
                })
            };
            if items_len(&items) > 1 && over_limit(&encoded).is_some() {
                let cut = items.start + 1;
                let _ = core.sched.on_yielded(worker_id, assignment.chunk, cut);
                job.unstart(cut..items.end);
                items.end = cut;
                encoded = encode(items.clone(), &mut frame);
            }
            // Recycling: never give a worker more items than it has left.
            if let Some(worker) = core.workers.get_mut(&worker_id)
                && let Some(budget) = worker.budget
            {
                if budget < items_len(&items) {
                    let cut = items.start + budget;
                    let _ = core.sched.on_yielded(worker_id, assignment.chunk, cut);
                    job.unstart(cut..items.end);
                    items.end = cut;
                    encoded = encode(items.clone(), &mut frame);
                }
                worker.budget = Some(budget - items_len(&items));
                if worker.budget == Some(0) {
                    let _ = core.sched.retire_worker(worker_id);
                }
            }
            let item_too_large = over_limit(&encoded);
            let too_large = match (&encoded, core.workers.get(&worker_id)) {
                (Ok(encoded), Some(worker)) => {
                    let max = worker.sender.max_frame();
                    (encoded.len() > max).then_some(TaskError::TooLarge {
                        what: "the encoded chunk",
                        size: encoded.len(),
                        limit: max,
                    })
                }
                _ => None,
            };
            // A measured chunk goes out now, in place; if the link cannot take it so, it is
            // encoded into `frame` after all and sent below like the others. (Sending before
            // the chunk is recorded is fine: its outcomes are settled under the core lock,
            // which this thread holds.)
            let mut sent = false;
            if let Ok(Encoded::Measured(len)) = encoded
                && item_too_large.is_none()
                && too_large.is_none()
                && let Some(worker) = core.workers.get_mut(&worker_id)
            {
                let mut fill = |buf: &mut [u8]| {
                    job.encode(wire_id, items.clone(), FrameBuf::Fixed(buf))
                        .ok()
                        .filter(|&used| used == len)
                };
                // A link error counts as sent: the reader will see the link end and settle
                // the chunk.
                sent = worker
                    .sender
                    .try_send_in_place(len, &mut fill)
                    .unwrap_or(true);
                if !sent {
                    encoded = job
                        .encode(wire_id, items.clone(), FrameBuf::Grow(&mut frame))
                        .map(Encoded::Buffered);
                }
            }
            if matches!(encoded, Ok(Encoded::Buffered(len)) if len > FRAME_KEEP) {
                core.frame_large_at = Instant::now();
            }
            if let Some(error) = encoded.err().or(item_too_large).or(too_large) {
                let _ = core.sched.on_items_done(
                    worker_id,
                    assignment.chunk,
                    items_len(&items),
                    Duration::ZERO,
                );
                deferred.failures.push((job, items, error));
                core.frame = frame;
                self.check_job(core, job_id);
                continue;
            }
            let lazy_candidate = !core.chunks.values().any(|info| info.worker == worker_id);
            core.chunks.insert(
                wire_id,
                ChunkInfo {
                    id: assignment.chunk,
                    job: job_id,
                    worker: worker_id,
                    next: items.start,
                    items,
                    sent_at: Instant::now(),
                },
            );
            if let Some(entry) = core.jobs.get_mut(&job_id) {
                entry.chunks_in_flight += 1;
            }
            if core.watchdog_idle && job.options().timeout.is_some() {
                // The watchdog re-checks for timed chunks when woken (`watchdog_loop`).
                core.watchdog_idle = false;
                self.changed.notify_all();
            }
            // Checked before this chunk is recorded: does the worker hold another one?
            let lazy = kick
                && LAZY_KICK.with(std::cell::Cell::get)
                && job.options().timeout.is_none()
                && lazy_candidate;
            if let Some(worker) = core.workers.get_mut(&worker_id) {
                if !sent {
                    send(worker, &frame);
                }
                if lazy {
                    // A timed call is always kicked: the watchdog reads a worker that holds a
                    // chunk with an idle mailbox as stuck, and an unread outcome looks so.
                    core.owed.push(Arc::clone(&worker.attend));
                    // Release: pairs with the Acquire load in `attend`.
                    self.owes.store(true, Ordering::Release);
                } else if kick {
                    deferred.kicks.push(Arc::clone(&worker.attend));
                }
            }
            core.frame = frame;
        }
        let mut reclaimed = false;
        while let Some(request) = core.sched.yield_candidate() {
            let Some(worker) = core.workers.get_mut(&request.worker) else {
                continue;
            };
            let wire_id = request.chunk.get();
            let mut half = request.split == procpool_sched::Split::Half;
            if !half {
                // A chunk queued behind the running one: take it back unstarted if the worker
                // has not reached it, and hand its items out at once (below); otherwise it
                // runs, so ask for the later half of it like any running chunk.
                if worker.control.try_reclaim(wire_id) {
                    // One mark at a time: until the worker passes this one, a chunk queued
                    // behind its running one could not be taken back, and would wait for
                    // whatever it runs (held: for good). So it gets none meanwhile.
                    worker.reclaim_pending = true;
                    let _ = core.sched.set_prefetch(request.worker, false);
                    self.reclaim(core, request.worker, wire_id);
                    reclaimed = true;
                    continue;
                }
                half = true;
            }
            worker.control.request_yield(wire_id, half);
        }
        if reclaimed {
            deferred.absorb(self.dispatch(core));
        }
        deferred
    }

    /// Settles a chunk taken back from `worker` before it started it: its items are queued
    /// again (ahead of new input) and nothing about it will come from the worker.
    fn reclaim(&self, core: &mut Core, worker: WorkerId, wire_id: u64) {
        let Some(info) = core.chunks.get(&wire_id) else {
            return;
        };
        let (sched_id, job_id, items) = (info.id, info.job, info.next..info.items.end);
        if let Err(err) = core.sched.on_reclaimed(worker, sched_id) {
            // Outcomes of it were reported, yet the claim word said it had not started: a
            // worker that breaks the protocol. It will skip the chunk all the same, so
            // everything not reported goes back.
            tracing::warn!("reclaimed chunk {wire_id}: {err}");
            if let Err(err) = core.sched.on_yielded(worker, sched_id, info.next) {
                tracing::warn!("reclaimed chunk {wire_id}: {err}");
                return;
            }
        }
        let unrun = items_len(&items);
        if let Some(entry) = core.jobs.get(&job_id) {
            entry.job.unstart(items);
        }
        refund(core, worker, unrun);
        self.end_chunk(core, wire_id);
        self.check_job(core, job_id);
    }

    /// Settles what a lost worker held; returns whether to start a replacement.
    fn on_worker_lost(
        &self,
        worker: &StartedWorker,
        exit: WorkerExit,
        violation: Option<String>,
    ) -> bool {
        let mut guard = self.lock();
        let core = &mut *guard;
        let entry = core.workers.remove(&worker.id);
        let expected = entry.as_ref().is_some_and(|entry| entry.stopping);
        let timed_out = entry.as_ref().and_then(|entry| entry.timed_out);
        let unresponsive = entry.as_ref().and_then(|entry| entry.unresponsive);
        if let Some(entry) = &entry {
            core.retired_tasks += entry.tasks_done;
        }
        let mut deferred = Deferred::default();
        // What the worker was running, from the mailbox.
        let verdict = match worker.control.running() {
            Running::Unknown => Verdict::Unknown,
            Running::Idle => Verdict::NothingStarted,
            Running::Item { chunk, offset } => match core.chunks.get(&chunk) {
                Some(info) if info.worker == worker.id => {
                    let index = info.items.start + offset;
                    if index >= info.next && index < info.items.end {
                        Verdict::Exact(info.job, index)
                    } else {
                        // Reported already, or given back: it was between items.
                        Verdict::NothingStarted
                    }
                }
                // A chunk it finished: it died before starting the next.
                _ => Verdict::NothingStarted,
            },
        };
        match core.sched.remove_worker(worker.id) {
            Ok(lost) => {
                let owned: Vec<u64> = core
                    .chunks
                    .iter()
                    .filter(|(_, info)| info.worker == worker.id)
                    .map(|(wire_id, _)| *wire_id)
                    .collect();
                let detached_in_flight: Vec<(JobId, u64, Range<u64>)> = owned
                    .iter()
                    .filter_map(|wire_id| core.chunks.get(wire_id))
                    .filter(|info| core.jobs.get(&info.job).is_some_and(|entry| entry.detached))
                    .map(|info| (info.job, info.id.get(), info.next..info.items.end))
                    .collect();
                let mut touched: Vec<JobId> = Vec::new();
                for wire_id in owned {
                    if let Some(info) = core.chunks.get(&wire_id) {
                        touched.push(info.job);
                    }
                    self.end_chunk(core, wire_id);
                }
                for span in &lost.requeued {
                    if let Some(entry) = core.jobs.get(&span.job) {
                        entry.job.unstart(span.items.clone());
                    }
                }
                let died = match unresponsive {
                    Some(limit) => TaskError::Unresponsive {
                        pid: worker.pid,
                        limit,
                    },
                    None => TaskError::WorkerDied {
                        pid: worker.pid,
                        exit,
                    },
                };
                if let Some(item) = lost.started {
                    touched.push(item.job);
                    let job = core.jobs.get(&item.job).map(|entry| Arc::clone(&entry.job));
                    match job {
                        Some(job)
                            if verdict == Verdict::NothingStarted
                                && core.phase != Phase::Closed
                                && job.note_death(item.index, false)
                                    <= job.options().retries + UNATTRIBUTED_DEATHS =>
                        {
                            // The worker died between items: nothing of ours was running.
                            // (Still counted, so a chunk that kills workers before its first
                            // item starts cannot loop forever.)
                            job.unstart(item.index..item.index + 1);
                            let _ = core.sched.requeue(item);
                        }
                        Some(job) => {
                            // The scheduler names the first unreported item; the mailbox may
                            // name a later one: the items between ran, but their outcomes
                            // were still batched in the worker when it died.
                            let running = match verdict {
                                Verdict::Exact(job_id, index)
                                    if job_id == item.job && index > item.index =>
                                {
                                    index
                                }
                                _ => item.index,
                            };
                            let retries = job.options().retries;
                            let may_retry = core.phase != Phase::Closed;
                            // The pool killed it (a timeout, no answer to a liveness ping): the
                            // items whose outcomes it still held are not at fault and run again.
                            let killed_by_pool = unresponsive.is_some()
                                || timed_out
                                    .is_some_and(|(_, timed_index, _)| timed_index == running);
                            if running > item.index {
                                // Not to blame: run again if the call allows retries.
                                if (retries > 0 || killed_by_pool) && may_retry {
                                    job.unstart(item.index..item.index + 1);
                                    let _ = core.sched.requeue(item);
                                } else {
                                    let _ = core.sched.abandon(item);
                                    deferred.failures.push((
                                        Arc::clone(&job),
                                        item.index..item.index + 1,
                                        died.clone(),
                                    ));
                                    deferred
                                        .completions
                                        .push(job.detach(item.index + 1..running, died.clone()));
                                }
                            }
                            let timeout =
                                timed_out.filter(|(_, timed_index, _)| *timed_index == running);
                            let deaths = job.note_death(running, true);
                            let retry = timeout.is_none() && deaths <= retries && may_retry;
                            let error = match timeout {
                                Some((_, _, limit)) => TaskError::TimedOut { limit },
                                None => died.clone(),
                            };
                            if retry {
                                tracing::info!(
                                    pid = worker.pid,
                                    index = running,
                                    deaths,
                                    task = job.task_name(),
                                    "retrying an item lost with its worker"
                                );
                                if running == item.index {
                                    job.unstart(running..running + 1);
                                    let _ = core.sched.requeue(item);
                                }
                            } else if running == item.index {
                                let _ = core.sched.abandon(item);
                                deferred.failures.push((job, running..running + 1, error));
                            } else {
                                // Already queued again by the scheduler: take it out of reach.
                                deferred
                                    .completions
                                    .push(job.detach(running..running + 1, error));
                            }
                        }
                        None => {
                            let _ = core.sched.abandon(item);
                        }
                    }
                }
                // Chunks of detached jobs are not requeued by the scheduler: fail them here.
                for (job_id, _, items) in detached_in_flight {
                    if let Some(entry) = core.jobs.get(&job_id) {
                        deferred
                            .failures
                            .push((Arc::clone(&entry.job), items, died.clone()));
                    }
                }
                touched.sort_unstable();
                touched.dedup();
                for job_id in touched {
                    self.check_job(core, job_id);
                }
            }
            Err(err) => tracing::debug!("worker already removed: {err}"),
        }
        if expected && violation.is_none() {
            tracing::debug!(pid = worker.pid, %exit, "worker stopped");
        } else {
            core.deaths += 1;
            match &violation {
                Some(why) => tracing::warn!(pid = worker.pid, %exit, "worker disconnected: {why}"),
                None => tracing::warn!(pid = worker.pid, %exit, "worker died"),
            }
        }
        let replace = core.phase != Phase::Closed;
        if replace {
            core.restarts += 1;
        }
        let dispatched = self.dispatch(core);
        self.changed.notify_all();
        deferred.absorb(dispatched);
        // Release the lock before failing items: failures run callbacks.
        drop(guard);
        deferred.run();
        replace
    }

    /// Starts a worker for a slot (a replacement, or one of `build`'s workers after the
    /// first), retrying a few times; gives up the slot if it cannot.
    fn replace_worker(&self, attend: &Arc<Attend>) -> Option<StartedWorker> {
        let mut failures = 0;
        loop {
            if self.lock().phase == Phase::Closed {
                return None;
            }
            match self.start_worker(Arc::clone(attend)) {
                Ok(started) => return Some(started),
                Err(err) => {
                    if self.lock().phase == Phase::Closed {
                        // The pool closed meanwhile (its handshake was cut short): no failure.
                        return None;
                    }
                    failures += 1;
                    tracing::error!(
                        "cannot start a worker from {} ({failures}/{MAX_REPLACEMENT_FAILURES}): {err}",
                        self.launcher.describe()
                    );
                    if failures >= MAX_REPLACEMENT_FAILURES {
                        self.give_up_slot(&err.to_string());
                        return None;
                    }
                    // A pause that `close` and `terminate` end at once (they notify `changed`
                    // after closing the pool).
                    let pause = Duration::from_millis(50 << failures.min(5));
                    #[cfg(test)]
                    let pause = self.config.hooks.replacement_pause.unwrap_or(pause);
                    let core = self.lock();
                    self.about_to_block("replacement pause");
                    let _ = self
                        .changed
                        .wait_timeout_while(core, pause, |core| core.phase != Phase::Closed)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            }
        }
    }

    /// A worker slot is lost for good; if it was the last, fail everything pending.
    fn give_up_slot(&self, why: &str) {
        let mut core = self.lock();
        if !core.workers.is_empty() || !core.starting.is_empty() {
            return;
        }
        core.broken = Some(why.to_owned());
        let deferred = fail_all_jobs(&mut core, &TaskError::NoWorkers(why.to_owned()));
        self.changed.notify_all();
        drop(core);
        deferred.run();
    }

    /// Refuses new work when the pool is not open.
    fn accepting(core: &Core) -> Result<(), TaskError> {
        if let Some(why) = &core.broken {
            return Err(TaskError::NoWorkers(why.clone()));
        }
        match core.phase {
            Phase::Open => Ok(()),
            Phase::Draining | Phase::Closed => Err(TaskError::PoolClosed),
        }
    }

    /// Registers a job; `Err` if the pool does not accept work.
    fn add_job(
        self: &Arc<Self>,
        key: u64,
        len: InputLen,
        job: Arc<dyn Job>,
        options: JobOptions,
    ) -> Result<JobId, TaskError> {
        let mut core = self.lock();
        Self::accepting(&core)?;
        Ok(self.register_job(&mut core, key, len, job, options))
    }

    /// Registers a job with the scheduler and the job table (the pool accepts work).
    fn register_job(
        self: &Arc<Self>,
        core: &mut Core,
        key: u64,
        len: InputLen,
        job: Arc<dyn Job>,
        options: JobOptions,
    ) -> JobId {
        let timed = job.options().timeout.is_some();
        let job_id = core.sched.submit_with(TaskKey(key), len, options);
        core.jobs.insert(
            job_id,
            JobEntry {
                job,
                chunks_in_flight: 0,
                detached: false,
            },
        );
        if timed {
            core.timed_jobs += 1;
            if core.timed_jobs == 1 {
                // A watchdog waiting out its liveness-only tick (up to 250 ms) must switch to
                // the fine tick now, or this job's first timeout is enforced that late; it
                // re-checks `timed_jobs` when woken (`watchdog_loop`).
                self.changed.notify_all();
            }
            self.ensure_watchdog(core);
        }
        job_id
    }

    /// Starts the watchdog thread (timeouts and liveness) unless it runs.
    fn ensure_watchdog(self: &Arc<Self>, core: &mut Core) {
        if core.watchdog.is_none() {
            let shared = Arc::clone(self);
            core.watchdog = std::thread::Builder::new()
                .name("procpool-watchdog".into())
                .spawn(move || shared.watchdog_loop())
                .ok();
        }
    }

    /// Makes `n` more items of a job schedulable and dispatches them.
    pub(crate) fn add_items(&self, job_id: JobId, n: u64, close: bool) -> Result<(), TaskError> {
        let mut guard = self.lock();
        let core = &mut *guard;
        let res = if n > 0 {
            core.sched.add_items(job_id, n).map(|_| ())
        } else {
            Ok(())
        };
        let res = res.and_then(|()| {
            if close {
                core.sched.close_input(job_id)
            } else {
                Ok(())
            }
        });
        if let Err(err) = res {
            tracing::debug!("items refused: {err}");
            return Err(Self::accepting(core).err().unwrap_or(TaskError::PoolClosed));
        }
        let mut deferred = self.dispatch(core);
        self.check_job(core, job_id);
        deferred.absorb(self.dispatch(core));
        drop(guard);
        deferred.run();
        Ok(())
    }

    /// The consumer of a job went away: drop its queued items, ignore its outcomes.
    pub(crate) fn drop_job(&self, job_id: JobId) {
        let mut guard = self.lock();
        let core = &mut *guard;
        if let Some(entry) = core.jobs.get_mut(&job_id)
            && !entry.detached
        {
            entry.detached = true;
            let _ = core.sched.remove_job(job_id);
        }
        self.check_job(core, job_id);
    }

    /// Submits one call: one more item of the task's submit stream.
    pub(crate) fn submit<T: Task>(
        self: &Arc<Self>,
        args: T::Args,
        options: TaskOptions,
    ) -> TaskHandle<T::Output> {
        let helper: Weak<dyn Helper> = Arc::downgrade(self) as Weak<dyn Helper>;
        let (handle, completer) = task_pair_with(Some(helper));
        let mut guard = self.lock();
        let core = &mut *guard;
        if let Err(err) = Self::accepting(core) {
            drop(guard);
            completer.complete(Err(err));
            return handle;
        }
        let key = (T::ID, options);
        let existing = core.streams.get(&key).map(|(job_id, stream)| {
            let stream = Arc::clone(stream)
                .downcast::<SubmitStream<T>>()
                .expect("streams are keyed by task id");
            (*job_id, stream)
        });
        let (job_id, stream) = match existing {
            Some(found) => found,
            None => {
                let stream = Arc::new(SubmitStream::<T>::new(options));
                let job: Arc<dyn Job> = Arc::clone(&stream) as Arc<dyn Job>;
                let job_id =
                    self.register_job(core, T::ID, InputLen::Unknown, job, JobOptions::default());
                let any: Arc<dyn std::any::Any + Send + Sync> = Arc::clone(&stream) as _;
                core.streams.insert(key, (job_id, any));
                (job_id, stream)
            }
        };
        let index = stream.push(args, completer);
        let added = core.sched.add_items(job_id, 1);
        debug_assert_eq!(added.as_ref().ok().map(|range| range.start), Some(index));
        LAZY_KICK.with(|flag| flag.set(true));
        let mut deferred = self.dispatch(core);
        LAZY_KICK.with(|flag| flag.set(false));
        if let Err(err) = added {
            tracing::error!("the scheduler refused a submitted call: {err}");
            deferred
                .failures
                .push((stream, index..index + 1, TaskError::PoolClosed));
        }
        drop(guard);
        deferred.run();
        handle
    }

    /// Submits one call and waits for it; this thread reads the outcome itself if it can.
    pub(crate) fn call<T: Task>(
        self: &Arc<Self>,
        args: T::Args,
        options: TaskOptions,
    ) -> Result<T::Output, TaskError> {
        WILL_HELP.with(|flag| flag.set(true));
        let handle = self.submit::<T>(args, options);
        WILL_HELP.with(|flag| flag.set(false));
        handle.result()
    }

    /// Starts a map job whose items the caller adds with [`Shared::add_items`].
    pub(crate) fn start_map<T: Task>(
        self: &Arc<Self>,
        job: Arc<MapJob<T>>,
        len: InputLen,
        chunksize: Option<NonZeroU64>,
    ) -> Result<JobId, TaskError> {
        let mut options = JobOptions::new();
        if let Some(chunksize) = chunksize {
            options = options.policy(ChunkPolicy::Fixed(chunksize));
        }
        self.add_job(T::ID, len, job, options)
    }

    /// Waits for accepted work, then stops the workers.
    pub(crate) fn shutdown(&self) {
        self.shutdown_until(None);
    }

    /// `shutdown`, giving up after `deadline`: returns whether the pool closed.
    pub(crate) fn shutdown_until(&self, deadline: Option<Instant>) -> bool {
        let mut core = self.lock();
        if core.phase == Phase::Open {
            core.phase = Phase::Draining;
            core.streams.clear();
            let job_ids: Vec<JobId> = core.jobs.keys().copied().collect();
            for job_id in job_ids {
                let _ = core.sched.close_input(job_id);
                self.check_job(&mut core, job_id);
            }
        }
        // Work submitted without anyone waiting needs its readers awake to be seen done; no
        // submit adds to `owed` once the pool is not open (checked under this lock).
        for cell in std::mem::take(&mut core.owed) {
            cell.kick();
        }
        if ON_READER.with(std::cell::Cell::get) && !core.jobs.is_empty() {
            // On a reader thread (a callback): waiting here would block the outcomes it waits
            // for. The pool closes itself once the accepted work is done.
            core.close_when_drained = true;
            return false;
        }
        while !core.jobs.is_empty() && core.broken.is_none() && core.phase == Phase::Draining {
            core = match deadline {
                None => self
                    .changed
                    .wait(core)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    self.changed
                        .wait_timeout(core, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
        self.close(core);
        true
    }

    /// Cancels work that has not started, waits for running work, then stops the workers.
    pub(crate) fn shutdown_now(&self) {
        self.shutdown_now_until(None);
    }

    /// `shutdown_now`, giving up the wait for running work after `deadline`: returns whether
    /// the pool closed.
    pub(crate) fn shutdown_now_until(&self, deadline: Option<Instant>) -> bool {
        let mut core = self.lock();
        if core.phase == Phase::Open {
            core.phase = Phase::Draining;
            core.streams.clear();
        }
        let mut deferred = Deferred::default();
        let job_ids: Vec<JobId> = core.jobs.keys().copied().collect();
        for job_id in job_ids {
            let in_flight: Vec<Range<u64>> = core
                .chunks
                .values()
                .filter(|info| info.job == job_id)
                .map(|info| info.next..info.items.end)
                .collect();
            let core_ref = &mut *core;
            if let Some(entry) = core_ref.jobs.get_mut(&job_id) {
                if !entry.detached {
                    entry.detached = true;
                    let _ = core_ref.sched.remove_job(job_id);
                }
                for items in entry.job.unfinished_outside(&in_flight) {
                    deferred
                        .failures
                        .push((Arc::clone(&entry.job), items, TaskError::Cancelled));
                }
            }
            self.check_job(&mut core, job_id);
        }
        drop(core);
        deferred.run();
        self.shutdown_until(deadline)
    }

    /// Ends every job with `Terminated` and stops the workers: SIGTERM, a grace period, SIGKILL.
    pub(crate) fn terminate(&self) {
        let mut core = self.lock();
        core.phase = Phase::Closed;
        // Threads that wait on `changed` for the phase (a reader thread pausing between failed
        // worker starts, the watchdog, `shutdown` on another thread) look now: the wait below
        // is for the readers, and one sitting out its pause would hold it for up to the grace.
        self.changed.notify_all();
        let deferred = fail_all_jobs(&mut core, &TaskError::Terminated);
        for worker in core.workers.values_mut() {
            worker.stopping = true;
            worker.control.terminate();
        }
        abort_starting(&core);
        drop(core);
        self.helping.kick_all();
        deferred.run();
        let deadline = Instant::now() + self.config.terminate_grace;
        let mut core = self.lock();
        while core.live_readers > 0 && Instant::now() < deadline {
            core = self
                .changed
                .wait_timeout(core, deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        for worker in core.workers.values() {
            worker.control.kill();
        }
        self.close(core);
    }

    /// Marks the pool closed, asks every worker to stop and joins the reader threads.
    fn close(&self, mut core: MutexGuard<'_, Core>) {
        core.phase = Phase::Closed;
        for worker in core.workers.values_mut() {
            if !worker.stopping {
                send_shutdown(worker);
            }
        }
        abort_starting(&core);
        self.helping.kick_all();
        let readers = std::mem::take(&mut core.readers);
        let watchdog = core.watchdog.take();
        let acceptors = std::mem::take(&mut core.acceptors);
        // After `Closed`: a stopped acceptor wakes, finds the phase and ends.
        for (_, stop) in &acceptors {
            stop.stop();
        }
        self.changed.notify_all();
        drop(core);
        if ON_READER.with(|flag| flag.get()) {
            // Called from a callback on a reader thread: it cannot join itself; the readers
            // end on their own once their workers exit.
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        {
            let mut core = self.lock();
            while core.live_readers > 0 && Instant::now() < deadline {
                core = self
                    .changed
                    .wait_timeout(core, Duration::from_millis(100))
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            // Workers that ignore Shutdown (stuck in a busy loop) are killed.
            for worker in core.workers.values() {
                worker.control.kill();
            }
        }
        for (acceptor, _) in acceptors {
            let _ = acceptor.join();
        }
        // Workers attached while the acceptors were stopping.
        let late = std::mem::take(&mut self.lock().readers);
        for reader in readers.into_iter().chain(late) {
            let _ = reader.join();
        }
        if let Some(watchdog) = watchdog {
            let _ = watchdog.join();
        }
    }

    /// Kills workers whose current item exceeds its job's timeout, and workers that hold work
    /// but leave a liveness ping unanswered for the pool's liveness timeout.
    fn watchdog_loop(&self) {
        let liveness = self.config.liveness_timeout;
        // The fine tick runs only while a chunk of a timed job is in flight. Otherwise liveness
        // alone needs an eighth of its timeout, within bounds, and without liveness checks
        // there is nothing to watch: the longest tick, a backstop only, since dispatching a
        // timed chunk ends an idle tick at once (`watchdog_idle`). (Timed jobs used to keep
        // the fine tick: a `submit` stream with a timeout lives as long as the pool, so one
        // timed call meant 200 wake-ups a second for the pool's life.)
        let idle_tick = liveness.map_or(LIVENESS_MAX_TICK, |limit| {
            (limit / 8).clamp(WATCHDOG_TICK, LIVENESS_MAX_TICK)
        });
        #[cfg(test)]
        let idle_tick = self.config.hooks.watchdog_idle_tick.unwrap_or(idle_tick);
        let mut tick = WATCHDOG_TICK;
        loop {
            // Waits on `changed` rather than sleeping, so `close` (which notifies it) ends
            // this thread at once: shutdown joins it, and an idle pool's shutdown would
            // otherwise wait out a whole tick (5 ms or more, longer than a pool's start).
            let deadline = Instant::now() + tick;
            let mut core = self.lock();
            while core.phase != Phase::Closed {
                // A timed chunk dispatched meanwhile ends an idle tick at once (dispatch
                // notifies while `watchdog_idle` is set): its timeout needs the fine tick from
                // its first item on.
                if tick > WATCHDOG_TICK && timed_chunks_in_flight(&core) {
                    break;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                if tick > WATCHDOG_TICK {
                    core.watchdog_idle = true;
                    self.about_to_block("watchdog idle");
                }
                core = self
                    .changed
                    .wait_timeout(core, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            core.watchdog_idle = false;
            if core.phase == Phase::Closed {
                return;
            }
            let timed = timed_chunks_in_flight(&core);
            tick = if timed { WATCHDOG_TICK } else { idle_tick };
            if !timed && liveness.is_none() {
                continue;
            }
            let now = Instant::now();
            let core = &mut *core;
            let Core {
                workers,
                chunks,
                jobs,
                ..
            } = core;
            let holding: std::collections::HashSet<WorkerId> =
                chunks.values().map(|info| info.worker).collect();
            for (id, worker) in workers.iter_mut() {
                if worker.timed_out.is_some() || worker.unresponsive.is_some() {
                    continue;
                }
                if let Some(limit) = liveness
                    && check_liveness(worker, holding.contains(id), limit, now)
                {
                    continue;
                }
                if !timed {
                    continue;
                }
                // The item running now: from the mailbox if the backend has one, else the
                // first unreported item of the worker's oldest chunk. A mailbox that reads
                // `Idle` while the worker holds chunks is not trusted either: an honest worker
                // is idle only for the moment between two chunks, while a hung or hostile one
                // could stay "idle" forever and so escape every timeout.
                let from_mailbox = match worker.control.running() {
                    Running::Unknown | Running::Idle => None,
                    Running::Item { chunk, offset } => Some(
                        chunks
                            .get(&chunk)
                            .map(|info| (chunk, info.items.start + offset)),
                    ),
                };
                let running = from_mailbox.unwrap_or_else(|| {
                    chunks
                        .iter()
                        .filter(|(_, info)| info.worker == *id)
                        .min_by_key(|(wire_id, _)| **wire_id)
                        .map(|(wire_id, info)| (*wire_id, info.next))
                });
                let Some((chunk, index)) = running else {
                    worker.watched = None;
                    continue;
                };
                let limit = chunks
                    .get(&chunk)
                    .and_then(|info| jobs.get(&info.job))
                    .and_then(|entry| entry.job.options().timeout);
                let since = match worker.watched {
                    Some((c, i, since)) if c == chunk && i == index => since,
                    _ => {
                        worker.watched = Some((chunk, index, now));
                        now
                    }
                };
                if let Some(limit) = limit
                    && now.saturating_duration_since(since) > limit
                {
                    tracing::warn!(
                        pid = worker.pid,
                        index,
                        ?limit,
                        "item timed out; killing its worker"
                    );
                    worker.timed_out = Some((chunk, index, limit));
                    worker.control.kill();
                }
            }
        }
    }

    /// Accepts workers that attach through the socket at `path` until the pool closes.
    pub(crate) fn listen(
        self: &Arc<Self>,
        path: &std::path::Path,
    ) -> Result<std::path::PathBuf, Error> {
        let listener = procpool_worker::Listener::bind(path).map_err(|err| {
            Error::with_source(
                ErrorKind::Io,
                format!("cannot listen on {}", path.display()),
                err,
            )
        })?;
        let bound = listener.path().to_path_buf();
        let stop = listener.stopper();
        let shared = Arc::clone(self);
        let mut core = self.lock();
        if core.phase == Phase::Closed {
            return Err(Error::new(ErrorKind::PoolClosed, "the pool is shut down"));
        }
        let thread = std::thread::Builder::new()
            .name("procpool-listen".into())
            .spawn(move || shared.accept_loop(listener))
            .map_err(|err| {
                Error::with_source(ErrorKind::Io, "cannot start the listening thread", err)
            })?;
        core.acceptors.push((thread, stop));
        Ok(bound)
    }

    /// Accepts attaching workers until the pool closes. Each handshake runs on a thread of its
    /// own (at most [`MAX_PENDING_ATTACHES`] at once), so a peer that stays silent until its
    /// deadline delays no other; handshakes still running when the pool closes are cut short.
    fn accept_loop(self: &Arc<Self>, listener: procpool_worker::Listener) {
        let channel = procpool_ipc::ChannelConfig::new();
        // Per handshake thread: its worker's control, whether the handshake is over, the thread.
        type Pending = (Arc<dyn WorkerControl>, Arc<AtomicBool>, JoinHandle<()>);
        let mut pending: Vec<Pending> = Vec::new();
        loop {
            pending.retain(|(_, _, thread)| !thread.is_finished());
            if self.lock().phase == Phase::Closed {
                break;
            }
            if pending.len() >= MAX_PENDING_ATTACHES {
                // Polls for a handshake thread to finish (only under a flood of attaching
                // peers); `close` still ends the pause at once (`Stopped`).
                let _ = listener.pause(Duration::from_millis(10));
                continue;
            }
            match listener.accept_worker(&channel, ACCEPT_RECHECK) {
                Ok((endpoint, pid)) => {
                    let link = crate::backend::attached_link(endpoint, pid);
                    let control = Arc::clone(&link.control);
                    let done = Arc::new(AtomicBool::new(false));
                    let shared = Arc::clone(self);
                    let finished = Arc::clone(&done);
                    let thread = std::thread::Builder::new()
                        .name(format!("procpool-attach-{pid}"))
                        .spawn(move || shared.attach_one(link, pid, &finished));
                    match thread {
                        Ok(thread) => pending.push((control, done, thread)),
                        Err(err) => {
                            control.kill();
                            self.note_refusal(pid, &format!("cannot start a thread for it: {err}"));
                        }
                    }
                }
                Err(
                    procpool_worker::AcceptError::TimedOut(_)
                    | procpool_worker::AcceptError::Stopped,
                ) => {}
                Err(err @ procpool_worker::AcceptError::ForeignUser { pid, .. }) => {
                    self.note_refusal(pid, &err.to_string());
                }
                Err(err) => {
                    tracing::warn!("accepting a worker failed: {err}");
                    let _ = listener.pause(Duration::from_millis(50));
                }
            }
        }
        for (control, done, _) in &pending {
            // Relaxed: a stale `false` only kills a worker of a pool that is closing anyway.
            if !done.load(Ordering::Relaxed) {
                control.kill();
            }
        }
        for (_, _, thread) in pending {
            let _ = thread.join();
        }
    }

    /// Runs the handshake with one attaching worker and serves it, or refuses it.
    fn attach_one(self: &Arc<Self>, link: Link, pid: u32, done: &AtomicBool) {
        let started = self.start_link(link, false, Arc::new(Attend::default()));
        // Relaxed: read only by the accept loop to decide whether to cut the handshake short.
        done.store(true, Ordering::Relaxed);
        match started {
            Ok(started) => {
                tracing::info!(pid, "worker attached");
                if let Err(err) = self.spawn_reader_for(started) {
                    tracing::error!("cannot serve an attached worker: {err}");
                }
            }
            Err(err) => {
                if self.lock().phase != Phase::Closed {
                    // The message and its causes (e.g. which protocol version the peer spoke).
                    let mut why = err.to_string();
                    let mut source = std::error::Error::source(&err);
                    while let Some(cause) = source {
                        let cause_text = cause.to_string();
                        if !why.ends_with(&cause_text) {
                            why = format!("{why}: {cause_text}");
                        }
                        source = cause.source();
                    }
                    self.note_refusal(pid, &why);
                }
            }
        }
    }

    /// Records that an attaching worker was refused, and why (see `PoolStats::attach_refusals`).
    fn note_refusal(&self, pid: u32, why: &str) {
        tracing::warn!(pid, "refused an attaching worker: {why}");
        let mut core = self.lock();
        core.attach_refusals += 1;
        core.last_attach_refusal = Some(format!("worker process {pid}: {why}"));
    }

    /// Makes a shared object known to the pool: sends it to every worker now, and to every
    /// worker started later; when its last handle drops, the workers are told to forget it.
    pub(crate) fn share_object(self: &Arc<Self>, object: &Arc<SharedObject>) -> Result<(), Error> {
        let mut guard = self.lock();
        let core = &mut *guard;
        Self::accepting(core)
            .map_err(|err| Error::new(ErrorKind::PoolClosed, format!("cannot share: {err}")))?;
        let releaser = match &core.releaser {
            Some(releaser) => releaser.clone(),
            None => {
                let (releaser, released) = std::sync::mpsc::channel();
                let weak = Arc::downgrade(self);
                std::thread::Builder::new()
                    .name("procpool-release".into())
                    .spawn(move || release_loop(&weak, &released))
                    .map_err(|err| {
                        Error::with_source(ErrorKind::Io, "cannot start the release thread", err)
                    })?;
                core.releaser = Some(releaser.clone());
                releaser
            }
        };
        // The hook runs wherever the last handle drops, maybe under this lock (a job dropping
        // its arguments): it only queues the id for the release thread.
        object.on_release(move |id| {
            let _ = releaser.send(id);
        });
        core.objects.insert(object.id(), Arc::downgrade(object));
        for worker in core.workers.values_mut() {
            send_object(worker, object);
        }
        Ok(())
    }

    /// Tells every worker to forget a shared object whose last handle dropped.
    fn release_object(&self, id: u64) {
        let mut core = self.lock();
        if core.objects.remove(&id).is_none() {
            return;
        }
        let mut frame = AlignedVec::new();
        protocol::encode_release(id, &mut frame);
        for worker in core.workers.values_mut() {
            send(worker, &frame);
        }
    }

    /// How many dormant readers a `submit` left asleep (tests).
    #[cfg(test)]
    pub(crate) fn owed_readers(&self) -> usize {
        self.lock().owed.len()
    }

    /// How many frames and objects wait in the outboxes of all workers (tests).
    #[cfg(test)]
    pub(crate) fn outbox_len(&self) -> usize {
        (self.lock().workers.values())
            .map(|worker| worker.outbox.len())
            .sum()
    }

    /// How many reader threads have registered their slot for helpers (tests).
    #[cfg(test)]
    pub(crate) fn attended_slots(&self) -> usize {
        self.helping.cells().len()
    }

    /// The `max_tasks_per_child` budget left of each worker not stopping (tests).
    #[cfg(test)]
    pub(crate) fn budgets_left(&self) -> Vec<u64> {
        (self.lock().workers.values())
            .filter(|worker| !worker.stopping)
            .filter_map(|worker| worker.budget)
            .collect()
    }

    /// Wakes every dormant reader a `submit` left asleep (`Core::owed`).
    fn pay_owed(&self) {
        let owed = {
            let mut core = self.lock();
            self.owes.store(false, Ordering::Relaxed);
            std::mem::take(&mut core.owed)
        };
        for cell in owed {
            cell.kick();
        }
    }

    /// A snapshot of the pool's counters.
    pub(crate) fn stats(&self) -> crate::stats::PoolStats {
        // Outcomes nobody waits for are read first (their readers may sleep).
        self.attend();
        let core = self.lock();
        let mut workers: Vec<crate::stats::WorkerStats> = core
            .workers
            .values()
            .map(|worker| crate::stats::WorkerStats {
                index: worker.index,
                pid: worker.pid,
                tasks_done: worker.tasks_done,
                busy: worker.busy,
                uptime: worker.started_at.elapsed(),
            })
            .collect();
        workers.sort_by_key(|worker| worker.index);
        let queued = core
            .jobs
            .keys()
            .filter_map(|job_id| core.sched.job_progress(*job_id))
            .map(|progress| progress.queued)
            .sum();
        let in_flight = core
            .chunks
            .values()
            .map(|info| items_len(&(info.next..info.items.end)))
            .sum();
        crate::stats::PoolStats {
            tasks_done: core.retired_tasks
                + workers.iter().map(|worker| worker.tasks_done).sum::<u64>(),
            workers,
            queued,
            in_flight,
            // A submit stream counts only while it has calls pending.
            jobs: core
                .jobs
                .keys()
                .filter(|job_id| {
                    let is_stream = core
                        .streams
                        .values()
                        .any(|(stream_id, _)| stream_id == *job_id);
                    !is_stream
                        || core.sched.job_progress(**job_id).is_some_and(|progress| {
                            progress.queued + progress.in_flight + progress.awaiting_decision > 0
                        })
                })
                .count(),
            starting: core.starting.len(),
            restarts: core.restarts,
            deaths: core.deaths,
            attach_refusals: core.attach_refusals,
            last_attach_refusal: core.last_attach_refusal.clone(),
        }
    }

    /// Whether the pool still accepts work.
    pub(crate) fn is_open(&self) -> bool {
        Self::accepting(&self.lock()).is_ok()
    }

    pub(crate) fn n_workers(&self) -> usize {
        self.config.n_workers
    }
}

/// One liveness step for a worker: forget pings while it holds no work; otherwise ping it
/// when it has shown no sign of life for half the timeout, and kill it when a ping stays
/// unanswered longer than `limit`. Returns whether it was killed.
fn check_liveness(
    worker: &mut WorkerEntry,
    holds_work: bool,
    limit: Duration,
    now: Instant,
) -> bool {
    if !holds_work {
        worker.ping = None;
        worker.alive_at = now;
        return false;
    }
    match worker.ping {
        Some((n, _)) if worker.control.answered(n) => {
            worker.ping = None;
            worker.alive_at = now;
        }
        Some((_, sent)) => {
            let waited = now.saturating_duration_since(sent);
            if waited > limit {
                tracing::warn!(
                    pid = worker.pid,
                    ?waited,
                    "worker holds work but did not answer a liveness ping (stopped, frozen, or not \
                     a procpool worker); killing it"
                );
                worker.unresponsive = Some(limit);
                worker.control.kill();
                return true;
            }
        }
        None if now.saturating_duration_since(worker.alive_at) >= limit / 2 => {
            match worker.control.ping() {
                Some(n) => worker.ping = Some((n, now)),
                // No heartbeat in this backend: nothing to check.
                None => worker.alive_at = now,
            }
        }
        None => {}
    }
    false
}

/// The release thread: forwards the ids of dropped shared objects to the pool. It holds the
/// pool weakly and ends when the pool and every object are gone.
///
/// An object (or its `Release`) that finds no room in a worker's socket or ring waits in that
/// worker's outbox like any frame, until the worker says it read everything (`Drained`).
fn release_loop(pool: &Weak<Shared>, released: &std::sync::mpsc::Receiver<u64>) {
    while let Ok(id) = released.recv() {
        let Some(pool) = pool.upgrade() else { return };
        pool.release_object(id);
    }
}

impl Helper for Shared {
    fn attend(&self) {
        // Acquire: pairs with the Release store in `dispatch`; a stale `false` is impossible
        // for a handle whose submit recorded the debt (the handle came from that thread).
        if !self.owes.load(Ordering::Acquire) {
            return;
        }
        self.pay_owed();
    }

    fn help(&self, done: &dyn Fn() -> bool, deadline: Option<Instant>) {
        let nested = HELPING.with(std::cell::Cell::get);
        if !nested && !self.helping.enter() {
            // Another thread helps; it reads this task's outcome too, or kicks its reader.
            return;
        }
        let (mut generation, first_cells) = self.helping.snapshot();
        if !nested {
            // Reader threads parked on their rings let go of the receivers. A reader
            // registered after the snapshot needs no interrupt: it registered after `enter`
            // (the cells mutex orders the two), so its stop check, SeqCst, sees the seat taken
            // before it parks, and it steps aside.
            for cell in first_cells.iter() {
                cell.interrupt();
            }
        }
        // The slots this helper reads: renewed when one came or went (see `Helping::generation`).
        let mut cells = Arc::clone(&first_cells);
        if !nested {
            self.about_to_block("helping");
        }
        let was_reader = ON_READER.with(|flag| flag.replace(true));
        HELPING.with(|flag| flag.set(true));
        let start = Instant::now();
        #[cfg(test)]
        let help_window = self.config.hooks.help_window.unwrap_or(HELP_WINDOW);
        #[cfg(not(test))]
        let help_window = HELP_WINDOW;
        let until = deadline.map_or(start + help_window, |deadline| {
            deadline.min(start + help_window)
        });
        // The frame buffer of this thread's last help (a nested help starts an empty one).
        let mut buf = HELP_BUF.with(std::cell::Cell::take);
        let mut idle_spins = 0u32;
        // Co-location: a worker on this thread's CPU cannot run while this thread spins, so
        // check (right away if the last round trip was co-located or slow, else once a few
        // looks found nothing: reading the workers' mailbox lines costs a cross-core miss
        // each, which a warm round trip between two cores cannot spare), then offer the core
        // on every look; tell the workers where this thread spins, so one on the same CPU
        // yields right after publishing (see the `procpool_worker` runtime).
        // Each check visits the slots' controls in place (a lock each, no allocation).
        let told_cpu = std::cell::Cell::new(false);
        let look_cpu = || {
            let Ok(cpu) = nix::sched::sched_getcpu() else {
                return false;
            };
            told_cpu.set(!nested);
            let mut here = false;
            // The first snapshot's workers: enough for a hint about where they run.
            for cell in first_cells.iter() {
                here |= cell
                    .with_control(|control| {
                        if !nested {
                            control.set_waiter_cpu(cpu);
                        }
                        control.cpu() == Some(cpu)
                    })
                    .unwrap_or(false);
            }
            here
        };
        // After a round trip that found the two on one CPU (or needed yields), check at once.
        let mut co_located = self.helping.co_located_hint() && look_cpu();
        while !done() {
            let mut progressed = false;
            for cell in cells.iter() {
                progressed |= self.help_once(cell, &mut buf);
            }
            if progressed {
                continue;
            }
            if self.helping.generation() != generation {
                (generation, cells) = self.helping.snapshot();
                continue;
            }
            idle_spins = idle_spins.wrapping_add(1);
            if idle_spins % 64 == CO_LOCATION_LOOK {
                // Again every 64 looks: this thread may have moved.
                co_located = look_cpu();
            }
            if idle_spins < HELP_PURE_SPINS && !co_located {
                std::hint::spin_loop();
            } else {
                // Past a warm round trip: the worker may be queued behind this thread on
                // this very core (nothing moves a spinning thread), so offer the core on
                // every look. With nothing else runnable here `sched_yield` returns at once.
                std::thread::yield_now();
            }
            if idle_spins % 16 == 0 && Instant::now() >= until {
                break;
            }
        }
        self.helping
            .set_co_located_hint(co_located || idle_spins >= HELP_PURE_SPINS);
        if told_cpu.get() {
            // This thread no longer spins for them (`WorkerControl::clear_waiter_cpu`).
            for cell in first_cells.iter() {
                cell.with_control(|control| control.clear_waiter_cpu());
            }
        }
        HELP_BUF.with(|cell| cell.set(buf));
        HELPING.with(|flag| flag.set(nested));
        ON_READER.with(|flag| flag.set(was_reader));
        if nested {
            return;
        }
        self.helping.leave();
        // Chunks still held need their readers now (their callers park or do not wait), and
        // so do stopping workers (recycled, shut down): their readers must see the link end,
        // and the kick `send_shutdown` gave them may be spent (a reader kicked while this
        // thread helped found it active and slept again).
        let holders: Vec<Arc<Attend>> = {
            let mut core = self.lock();
            // The holders below include every owed reader.
            core.owed.clear();
            self.owes.store(false, Ordering::Relaxed);
            let holding = (core.chunks.values()).filter_map(|info| core.workers.get(&info.worker));
            let stopping = core.workers.values().filter(|worker| worker.stopping);
            // Their `Drained` must be read (`outbox_waits`).
            let outbox_waits = (core.workers.values()).filter(|worker| !worker.outbox.is_empty());
            holding
                .chain(stopping)
                .chain(outbox_waits)
                .map(|worker| Arc::clone(&worker.attend))
                .collect()
        };
        for cell in holders
            .iter()
            .chain(cells.iter().filter(|cell| cell.has_ended()))
        {
            cell.kick();
        }
    }
}

/// Whether worker `id` holds a chunk.
fn holds_chunk(core: &Core, id: WorkerId) -> bool {
    core.chunks.values().any(|info| info.worker == id)
}

/// Whether a chunk of a job with a timeout is in flight (the watchdog's fine tick).
fn timed_chunks_in_flight(core: &Core) -> bool {
    core.timed_jobs > 0
        && (core.jobs.values())
            .any(|entry| entry.chunks_in_flight > 0 && entry.job.options().timeout.is_some())
}

/// Cuts short every handshake in flight (the pool closes): the link is closed, so the
/// handshake's receive ends at once, and the process is killed; the thread running the
/// handshake reaps it and drops the link (its memfd and socket).
fn abort_starting(core: &Core) {
    for (_, control) in &core.starting {
        control.close();
        control.kill();
    }
}

/// Kills and reaps workers that were launched but not handshaken (a failed build).
fn kill_links(links: Vec<Link>) {
    for mut link in links {
        link.control.kill();
        let _ = link.process.wait_exit(Duration::from_secs(2));
    }
}

/// Fails every item of every job with `error`; the jobs are dropped from the scheduler.
fn fail_all_jobs(core: &mut Core, error: &TaskError) -> Deferred {
    let mut deferred = Deferred::default();
    core.streams.clear();
    for (job_id, entry) in core.jobs.drain() {
        if !entry.detached {
            let _ = core.sched.remove_job(job_id);
        }
        for items in entry.job.unfinished_outside(&[]) {
            deferred
                .failures
                .push((Arc::clone(&entry.job), items, error.clone()));
        }
    }
    core.timed_jobs = 0;
    core.chunks.clear();
    deferred
}

/// How a chunk's frame was prepared in `Core::dispatch`.
#[derive(Debug, Clone, Copy)]
enum Encoded {
    /// Only measured (this many bytes): to be written in place when sent.
    Measured(usize),
    /// Encoded into the frame buffer (this many bytes).
    Buffered(usize),
}

impl Encoded {
    fn len(self) -> usize {
        match self {
            Encoded::Measured(len) | Encoded::Buffered(len) => len,
        }
    }
}

/// Sends a frame now, or queues it behind frames that are still waiting.
/// Gives back to `id`'s budget (`max_tasks_per_child`) `n` items it was given and will not
/// run (taken back, or yielded): they must not bring its recycling closer. A worker retired
/// for a spent budget gets chunks again.
fn refund(core: &mut Core, id: WorkerId, n: u64) {
    let Some(worker) = core.workers.get_mut(&id) else {
        return;
    };
    let Some(budget) = worker.budget.as_mut() else {
        return;
    };
    if n == 0 || worker.stopping {
        return;
    }
    let was_spent = *budget == 0;
    *budget += n;
    if was_spent {
        let _ = core.sched.reinstate_worker(id);
    }
}

fn send(worker: &mut WorkerEntry, frame: &AlignedVec) {
    if worker.outbox.is_empty() {
        match worker.sender.try_send(frame) {
            Ok(true) => return,
            Ok(false) => {}
            // The reader will see the link end and settle the chunk.
            Err(_) => return,
        }
    }
    let mut copy = AlignedVec::with_capacity(frame.len());
    copy.extend_from_slice(frame);
    worker.outbox.push_back(Outgoing::Frame(copy));
    outbox_waits(worker);
}

/// Hands a shared object to a worker now, or queues it behind what is still waiting.
fn send_object(worker: &mut WorkerEntry, object: &Arc<SharedObject>) {
    if worker.outbox.is_empty() {
        match worker.sender.try_send_shared(object) {
            Ok(true) => return,
            Ok(false) => {}
            // The reader will see the link end.
            Err(_) => return,
        }
    }
    worker
        .outbox
        .push_back(Outgoing::Object(Arc::clone(object)));
    outbox_waits(worker);
}

/// Sends queued frames while the link has room; if some must still wait, tells the worker
/// (`outbox_waits`).
fn flush(worker: &mut WorkerEntry) {
    flush_while_room(worker);
    if !worker.outbox.is_empty() {
        outbox_waits(worker);
    }
}

/// Frames wait in `worker`'s outbox: asks the worker for `Drained` once it has read every frame
/// it has, and makes sure its reader thread is awake to read that (a helper that leaves kicks
/// it again), then flushes once more. The worker's request word is stored and fenced before
/// this flush looks for room, so a worker that ran out of frames just before is not missed:
/// either it sees the word (and answers), or this flush sees the room it made and sends, which
/// wakes it (procpool-worker's runtime docs, "Waiting for room").
fn outbox_waits(worker: &mut WorkerEntry) {
    worker.control.outbox_waits();
    worker.attend.kick();
    flush_while_room(worker);
}

/// Sends queued frames while the link has room.
fn flush_while_room(worker: &mut WorkerEntry) {
    while let Some(next) = worker.outbox.front() {
        let sent = match next {
            Outgoing::Frame(frame) => worker.sender.try_send(frame),
            Outgoing::Object(object) => worker.sender.try_send_shared(object),
        };
        match sent {
            Ok(true) => {
                worker.outbox.pop_front();
            }
            Ok(false) => break,
            Err(_) => {
                worker.outbox.clear();
                break;
            }
        }
    }
}

/// Asks a worker to exit after the frames already sent.
fn send_shutdown(worker: &mut WorkerEntry) {
    worker.stopping = true;
    // Its reader must see the link end even if it is dormant (a short critical section).
    worker.attend.kick();
    let mut frame = AlignedVec::new();
    protocol::encode_shutdown(&mut frame);
    send(worker, &frame);
    flush(worker);
    if !worker.outbox.is_empty() {
        // No room even for a tiny frame: the worker is stuck; closing the link ends it.
        worker.control.close();
    }
}

/// The parent's side of the handshake: `Setup`, then `Hello`, then `Ready` or `InitFailed`.
fn handshake(link: &mut Link, index: u32, config: &PoolConfig) -> Result<(), Error> {
    let timeout = config.handshake_timeout;
    // Before `Setup`: the worker reads it once it has received `Setup`.
    link.control
        .set_max_output(config.max_item_size.map_or(0, |bytes| bytes as u64));
    let mut frame = AlignedVec::new();
    let setup = Setup {
        worker_index: index,
        initializer: config.initializer.clone(),
    };
    protocol::encode_setup(&setup, &mut frame).map_err(|err| {
        Error::with_source(ErrorKind::Handshake, "cannot encode the worker setup", err)
    })?;
    link.sender.send_timeout(&frame, timeout).map_err(|err| {
        Error::with_source(
            ErrorKind::Handshake,
            "the worker did not take its setup",
            err,
        )
    })?;
    let mut hello = Ok(());
    recv_one(link, timeout, "Hello", |frame| {
        hello = check_worker_tasks(frame).map_err(|err| {
            let what = match err {
                procpool_worker::HandshakeError::Protocol(_)
                | procpool_worker::HandshakeError::NotHello(_) => {
                    "the worker sent something other than a valid Hello (is it a procpool worker?)"
                }
                _ => {
                    "the worker program does not match this program (it needs every task of \
                     this program; build it from the same code or with more tasks)"
                }
            };
            Error::with_source(ErrorKind::Handshake, what, err)
        });
    })?;
    hello?;
    let mut ready = Ok(());
    recv_one(link, timeout, "Ready", |frame| {
        ready = match protocol::parse_from_worker(frame) {
            Ok(FromWorker::Ready) => Ok(()),
            Ok(FromWorker::InitFailed(failure)) => Err(Error::new(
                ErrorKind::InitializerFailed,
                format!("the pool's initializer failed in the worker: {failure}"),
            )),
            Ok(other) => Err(Error::new(
                ErrorKind::Handshake,
                format!("expected Ready from the worker, got {other:?}"),
            )),
            Err(err) => Err(Error::with_source(
                ErrorKind::Handshake,
                "unreadable handshake frame",
                err,
            )),
        };
    })?;
    ready
}

/// Checks a worker's `Hello`: the same protocol version, and a task table that has every task
/// of this program (the ones a pool in this program can send). An equal fingerprint (the same
/// table) is the common, cheap case; a worker program with more tasks (a superset) is accepted
/// too. A task id covers path, name and signature, so a task on both sides takes the same
/// types.
fn check_worker_tasks(frame: &[u8]) -> Result<(), procpool_worker::HandshakeError> {
    match protocol::check_hello(frame, procpool_worker::fingerprint()) {
        Ok(_) => Ok(()),
        Err(procpool_worker::HandshakeError::FingerprintMismatch { .. }) => {
            let ours: Vec<procpool_worker::TaskId> = procpool_worker::entries()
                .iter()
                .map(|entry| entry.id)
                .collect();
            protocol::check_hello_has_tasks(frame, &ours).map(|_| ())
        }
        Err(err) => Err(err),
    }
}

fn recv_one(
    link: &mut Link,
    timeout: Duration,
    what: &str,
    on_frame: impl FnOnce(&[u8]),
) -> Result<(), Error> {
    let mut on_frame = Some(on_frame);
    link.receiver
        .recv(Some(timeout), &mut |frame| {
            if let Some(on_frame) = on_frame.take() {
                // The peer (possibly a hostile attacher) can still write a ring frame: parse a
                // copy, so nothing validated changes afterwards (`backend::deliver`).
                let mut copy = AlignedVec::with_capacity(frame.len());
                copy.extend_from_slice(frame);
                on_frame(&copy);
            }
        })
        .map_err(|err| match err {
            LinkError::Timeout => Error::new(
                ErrorKind::Handshake,
                format!("the worker did not send {what} within {timeout:?}"),
            ),
            other => Error::with_source(
                ErrorKind::Spawn,
                format!("the worker ended before sending {what} (does its main call procpool::init() first?)"),
                other,
            ),
        })
}

/// A worker after its handshake, as its reader thread holds it.
struct StartedWorker {
    id: WorkerId,
    index: u32,
    pid: u32,
    /// Started by this pool (replaced when it ends), not attached.
    replaceable: bool,
    /// Until `serve` moves it into `attend`.
    receiver: Option<Box<dyn FrameReceiver>>,
    /// The reader slot: its receiver, for helpers.
    attend: Arc<Attend>,
    control: Arc<dyn WorkerControl>,
    process: Box<dyn WorkerProcessHandle>,
}
