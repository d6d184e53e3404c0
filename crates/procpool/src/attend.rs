//! Who reads a worker's outcome frames: its reader thread, or a caller blocked on a result.
//!
//! A round trip that goes caller → worker → reader thread → caller needs two cross-core
//! hand-offs in the parent, and on a machine whose idle cores halt, each one that finds its
//! thread parked costs ~50 µs; spinning on all three threads instead needs three cores. So a
//! thread blocked in [`TaskHandle::result`](crate::TaskHandle::result) (or `wait`) first
//! *helps*: for a short window it reads the outcome rings itself and delivers what it
//! finds, while the reader threads step aside (they stop spinning and stop announcing
//! themselves on the rings, so the worker never rings a futex for them). The caller then sees
//! its outcome a spinning hand-off (~0.1 µs) after the worker published it.
//!
//! - [`Helping`]: one per pool. At most one thread helps at a time (`active`), so helpers
//!   never crowd out the workers on a small machine; others wait on their task's condvar.
//! - [`Attend`]: one per worker slot (its reader thread). It holds the link's receiver behind
//!   a mutex, so whoever holds the lock is the one reader of that ring, and frames are
//!   settled in order. A reader thread reads only while no helper is active, and checks that
//!   *after* taking the lock.
//! - *Dormant* reader threads sleep off the ring until *kicked*. The rule that keeps every
//!   outcome attended: whenever a worker holds a chunk, either a helper is active or that
//!   worker's reader is kicked. Dispatch kicks when no helper is active (except for
//!   `Pool::call`, which helps next); a helper that leaves kicks the readers of workers that
//!   still hold chunks. A reader a helper displaced stays dormant while its worker holds
//!   nothing, even once the helper left: back on the ring it would only be interrupted by the
//!   next helper, which a lone call after an idle time would wait for.
//! - A dormant reader sleeps on its [`Bell`] when the link has a hang-up fd: an eventfd that
//!   kicks write, polled with the link's socket, which hangs up when the worker's process is
//!   gone. So an idle worker's death is seen at once and an idle pool's readers need no timer:
//!   one whose worker holds nothing wakes only for a kick, the hang-up, or its link's next
//!   buffer offer (`BUFFER_IDLE`). Without a bell, and while its worker holds a chunk nobody
//!   waits for yet (the owed kick's rescue), it looks at its ring every [`DORMANT_SLICE`].
//! - Helpers look at the rings without the link's liveness check (a `poll` of its socket):
//!   the reader threads watch that, until a bell heard the hang-up ([`Attend::hung_up`]).
//!
//! The helper window is [`HELP_WINDOW`]: parking instead costs the wake-up of the reader
//! thread *and* of the caller (two ~50 µs wake-ups of halted cores here), so spinning for up
//! to that long cannot be slower, and bounding it keeps a long task from burning a core.
//!
//! A map's consumer does not help: it parks on its map's state and the reader threads read.
//! Helping there, keeping the seat between waits with a reader taking it from a consumer
//! that stays away, was tried in session 6 and not kept: ~1% of the workers' time saved on a
//! quiet machine, not visible in `map_1us`'s ratio to rayon, and more preemptions of the
//! workers under load, when the one thread that attends every ring is off the CPU
//! (`docs/bench/map-data-path.md`, "Session 6").

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::{EfdFlags, EventFd};

use procpool_sched::WorkerId;

use crate::link::{FrameReceiver, LinkError, WorkerControl};

/// How long a blocked caller reads outcome rings itself before it parks.
pub(crate) const HELP_WINDOW: Duration = Duration::from_micros(100);

/// How often a dormant reader thread looks at its ring (liveness, stray frames).
pub(crate) const DORMANT_SLICE: Duration = Duration::from_millis(50);

/// The pool-wide helping state.
#[derive(Debug, Default)]
pub(crate) struct Helping {
    /// Set (SeqCst) while a thread helps. Pairs with the SeqCst loads in reader threads (their
    /// stop condition) and, through the core lock, with dispatch's decision to kick.
    active: AtomicBool,
    /// Every worker slot's cell (a shared snapshot, rebuilt when a slot comes or goes, so a
    /// helper takes it without allocating).
    cells: Mutex<Arc<Vec<Arc<Attend>>>>,
    /// How many times `cells` was rebuilt; written under its mutex. A helper compares it with
    /// the generation of its snapshot when a look found nothing, and takes a new snapshot if
    /// it moved: a reader registered after the helper started steps aside for it like the
    /// others, so the helper must read that ring too (`Shared::help`).
    generation: AtomicU64,
    /// The last helper found a worker on its own CPU or needed to yield: the next one checks
    /// for co-location at once (a hint; Relaxed).
    co_located: AtomicBool,
}

impl Helping {
    /// Whether a thread helps now.
    pub(crate) fn active(&self) -> bool {
        self.active.load(Ordering::SeqCst)
    }

    /// Takes the helper's seat; `false` if another thread helps.
    pub(crate) fn enter(&self) -> bool {
        // SeqCst: pairs with the stop-condition loads of reader threads (a Dekker pair with
        // their announce fence, completed by `Attend::interrupt`).
        self.active
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
    }

    /// Gives the seat back. The caller then kicks readers of workers that hold chunks.
    pub(crate) fn leave(&self) {
        // SeqCst: ordered before the core-lock scan that decides kicks, and against
        // dispatch's load of `active` under that lock.
        self.active.store(false, Ordering::SeqCst);
    }

    /// Whether the last helper found co-location (or a slow round trip).
    pub(crate) fn co_located_hint(&self) -> bool {
        self.co_located.load(Ordering::Relaxed)
    }

    /// Records what this helper found, for the next one.
    pub(crate) fn set_co_located_hint(&self, co_located: bool) {
        // Relaxed: a hint about timing; nothing is published through it.
        if self.co_located.load(Ordering::Relaxed) != co_located {
            self.co_located.store(co_located, Ordering::Relaxed);
        }
    }

    /// A snapshot of the cells.
    pub(crate) fn cells(&self) -> Arc<Vec<Arc<Attend>>> {
        self.snapshot().1
    }

    /// A snapshot of the cells with its generation (see [`generation`](Self::generation)).
    pub(crate) fn snapshot(&self) -> (u64, Arc<Vec<Arc<Attend>>>) {
        let cells = lock(&self.cells);
        // Relaxed: read under the mutex that every write holds.
        (self.generation.load(Ordering::Relaxed), Arc::clone(&cells))
    }

    /// The generation of the cells now: it differs from a snapshot's once a slot came or went
    /// after it was taken.
    pub(crate) fn generation(&self) -> u64 {
        // Relaxed: a stale value only postpones the new snapshot to a later look (at worst to
        // the end of the help window, after which the leaving helper kicks the readers of
        // chunk holders); the snapshot itself is then taken under the mutex.
        self.generation.load(Ordering::Relaxed)
    }

    pub(crate) fn add(&self, cell: &Arc<Attend>) {
        let mut cells = lock(&self.cells);
        let mut next = Vec::clone(&cells);
        next.push(Arc::clone(cell));
        *cells = Arc::new(next);
        // Relaxed: under the mutex (see `generation`).
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn remove(&self, cell: &Arc<Attend>) {
        let mut cells = lock(&self.cells);
        let next = (cells.iter())
            .filter(|other| !Arc::ptr_eq(other, cell))
            .cloned()
            .collect();
        *cells = Arc::new(next);
        // Relaxed: under the mutex (see `generation`).
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// Kicks every reader (shutdown, terminate).
    pub(crate) fn kick_all(&self) {
        for cell in self.cells().iter() {
            cell.kick();
        }
    }
}

/// Why a helper stopped reading a link; the reader thread settles it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The link failed.
    Link(LinkError),
    /// The worker sent a frame that breaks the protocol.
    Violation(String),
}

/// The link a reader thread serves now, as helpers see it.
pub(crate) struct Rx {
    pub(crate) id: WorkerId,
    pub(crate) receiver: Box<dyn FrameReceiver>,
    /// Set by a helper that saw the link end; taken by the reader thread.
    pub(crate) ended: Option<Ended>,
}

/// One worker slot: its receiver and its reader thread's sleep state.
#[derive(Default)]
pub(crate) struct Attend {
    rx: Mutex<Option<Rx>>,
    /// Wakes the reader thread if it is parked in the link's `recv_until`.
    interrupt: Mutex<Option<Box<dyn Fn() + Send + Sync>>>,
    /// The installed worker's control (helpers read its CPU).
    control: Mutex<Option<Arc<dyn WorkerControl>>>,
    sleep: Mutex<Sleep>,
    wake: Condvar,
    /// The dormant reader's doorbell, for links with a hang-up fd (`FrameReceiver::hangup_fd`).
    bell: Mutex<Option<Arc<Bell>>>,
    /// The bell heard the worker's end of the link close (set by the reader, cleared when the
    /// next worker is installed). From then on the reader sleeps without the bell (which would
    /// only ring again at once) and helpers look at this ring with the liveness check.
    hung_up: AtomicBool,
}

/// What a dormant reader sleeps on when its link can say that the worker is gone: an eventfd
/// that every kick writes, polled together with the link's hang-up fd. So it needs no timer
/// to notice an idle worker's death, and a kick still wakes it at once. (Without a bell it
/// waits on `wake` for a slice at a time.)
#[derive(Debug)]
struct Bell {
    kicks: EventFd,
    hangup: OwnedFd,
}

/// How a dormant reader's [`Attend::sleep`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Woke {
    /// Kicked: read again (no longer dormant).
    Kicked,
    /// The slice passed: look at the ring once.
    Slice,
    /// The worker's end of the link is gone: read the ring until the link reports its end.
    HungUp,
}

#[derive(Debug, Default)]
struct Sleep {
    /// The reader declared itself dormant: kicks are recorded.
    dormant: bool,
    kicked: bool,
}

impl std::fmt::Debug for Attend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attend")
            .field("sleep", &*lock(&self.sleep))
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Attend {
    /// Installs the receiver of a new worker (after its handshake).
    pub(crate) fn install(
        &self,
        id: WorkerId,
        receiver: Box<dyn FrameReceiver>,
        control: Arc<dyn WorkerControl>,
    ) {
        *lock(&self.interrupt) = Some(receiver.interrupter());
        *lock(&self.control) = Some(control);
        // Relaxed: read by this slot's threads after they took the receiver installed below.
        self.hung_up.store(false, Ordering::Relaxed);
        // Without the fds (none to spare, a backend without one), the reader keeps its timed
        // looks; nothing else depends on the bell.
        *lock(&self.bell) = receiver.hangup_fd().and_then(|fd| {
            let hangup = fd.try_clone_to_owned().ok()?;
            let kicks =
                EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                    .ok()?;
            Some(Arc::new(Bell { kicks, hangup }))
        });
        *lock(&self.rx) = Some(Rx {
            id,
            receiver,
            ended: None,
        });
    }

    /// Runs `f` on the worker's control, if one is installed (without waiting for the
    /// receiver's lock, and without a clone of it: a helper looks at every slot's control on
    /// its co-location checks).
    pub(crate) fn with_control<R>(&self, f: impl FnOnce(&dyn WorkerControl) -> R) -> Option<R> {
        lock(&self.control).as_deref().map(f)
    }

    /// Takes the receiver out (the worker is gone); waits for a helper that holds it.
    pub(crate) fn uninstall(&self) -> Option<Rx> {
        *lock(&self.interrupt) = None;
        *lock(&self.control) = None;
        *lock(&self.bell) = None;
        lock(&self.rx).take()
    }

    /// The receiver, if no other thread holds it.
    pub(crate) fn try_rx(&self) -> Option<MutexGuard<'_, Option<Rx>>> {
        match self.rx.try_lock() {
            Ok(guard) => Some(guard),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// The receiver, waiting for a thread that holds it briefly.
    pub(crate) fn lock_rx(&self) -> MutexGuard<'_, Option<Rx>> {
        lock(&self.rx)
    }

    /// Whether a helper saw this slot's link end (the reader thread has not taken it yet).
    pub(crate) fn has_ended(&self) -> bool {
        self.try_rx()
            .is_some_and(|rx| rx.as_ref().is_some_and(|rx| rx.ended.is_some()))
    }

    /// Wakes the reader thread if it is parked on the ring (after `Helping::enter`).
    pub(crate) fn interrupt(&self) {
        if let Some(interrupt) = lock(&self.interrupt).as_ref() {
            interrupt();
        }
    }

    /// Tells a dormant reader thread to read again.
    pub(crate) fn kick(&self) {
        let mut sleep = lock(&self.sleep);
        if sleep.dormant && !sleep.kicked {
            sleep.kicked = true;
            drop(sleep);
            self.wake.notify_one();
            // After `kicked` is set: a reader that polls the bell looked at `kicked` before it
            // polled, so it either saw the kick or finds the eventfd readable. A full counter
            // (EAGAIN) is readable too.
            if let Some(bell) = lock(&self.bell).as_ref() {
                let _ = bell.kicks.write(1);
            }
        }
    }

    /// Whether this slot's dormant reader sleeps on a bell (no timer needed to see the
    /// worker's end).
    pub(crate) fn has_bell(&self) -> bool {
        !self.hung_up() && lock(&self.bell).is_some()
    }

    /// Whether the bell heard the worker's end of the link close: a helper then looks at the
    /// ring with the link's liveness check, which reports the end once the ring is drained.
    pub(crate) fn hung_up(&self) -> bool {
        // Relaxed: a hint; the link's own check is what decides.
        self.hung_up.load(Ordering::Relaxed)
    }

    /// Declares the reader dormant: from now on kicks are recorded. The reader then re-checks
    /// `Helping::active`: a helper that left before this declaration did not kick it.
    pub(crate) fn declare_dormant(&self) {
        lock(&self.sleep).dormant = true;
    }

    /// Leaves the dormant state (about to read).
    pub(crate) fn wake_up(&self) {
        let mut sleep = lock(&self.sleep);
        sleep.dormant = false;
        sleep.kicked = false;
    }

    /// Sleeps until kicked (no longer dormant then), `slice` passes, or (with a bell) the
    /// worker's end of the link is gone.
    pub(crate) fn sleep(&self, slice: Duration) -> Woke {
        let bell = lock(&self.bell).clone().filter(|_| !self.hung_up());
        let Some(bell) = bell else {
            let sleep = lock(&self.sleep);
            let (mut sleep, _) = self
                .wake
                .wait_timeout_while(sleep, slice, |sleep| !sleep.kicked)
                .unwrap_or_else(PoisonError::into_inner);
            return if sleep.kicked {
                sleep.kicked = false;
                sleep.dormant = false;
                Woke::Kicked
            } else {
                Woke::Slice
            };
        };
        let deadline = Instant::now().checked_add(slice);
        loop {
            {
                let mut sleep = lock(&self.sleep);
                if sleep.kicked {
                    sleep.kicked = false;
                    sleep.dormant = false;
                    return Woke::Kicked;
                }
            }
            let left = deadline.map(|deadline| deadline.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return Woke::Slice;
            }
            // Rounded up to whole milliseconds, so it never spins on a zero timeout.
            let timeout = left.map_or(PollTimeout::NONE, |left| {
                PollTimeout::try_from(left + Duration::from_micros(999)).unwrap_or(PollTimeout::MAX)
            });
            let mut fds = [
                PollFd::new(bell.kicks.as_fd(), PollFlags::POLLIN),
                // POLLHUP needs no asking: a socket pair end reports it once the peer's end
                // is closed (the worker's process died or dropped its endpoint).
                PollFd::new(bell.hangup.as_fd(), PollFlags::empty()),
            ];
            match poll(&mut fds, timeout) {
                Ok(0) | Err(Errno::EINTR) => {}
                Ok(_) => {
                    let gone = PollFlags::POLLHUP | PollFlags::POLLERR;
                    if fds[1]
                        .revents()
                        .is_some_and(|revents| revents.intersects(gone))
                    {
                        // Relaxed: a hint for helpers, which find the end themselves then.
                        self.hung_up.store(true, Ordering::Relaxed);
                        return Woke::HungUp;
                    }
                    if fds[0]
                        .revents()
                        .is_some_and(|revents| revents.contains(PollFlags::POLLIN))
                    {
                        // The count is consumed; `kicked` (looked at next) says whether it was
                        // this sleep's kick or an earlier one's leftover.
                        let _ = bell.kicks.read();
                    }
                }
                // Not expected with two valid fds; look at the ring as after a slice.
                Err(_) => return Woke::Slice,
            }
        }
    }
}
