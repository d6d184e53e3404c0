//! The per-pool scheduler: jobs, worker slots, deques, in-flight chunks and their feedback.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::num::NonZeroUsize;
use std::ops::Range;
use std::time::Duration;

use crossbeam_deque::{Injector, Steal, Stealer, Worker as Deque};

use crate::chunk::{AdaptiveConfig, ChunkPolicy, CostEstimate, SizeInput};
use crate::error::{FeedbackError, JobError, StaleWorker};
use crate::id::{ChunkId, ItemRef, JobId, Span, TaskKey, WorkerId};

/// Settings of a [`Scheduler`], fixed for its lifetime.
#[derive(Clone, Debug, PartialEq)]
pub struct SchedulerConfig {
    /// How chunks are sized.
    pub policy: ChunkPolicy,
    /// How many chunks a worker may hold at once: the one it runs plus those queued in its
    /// ring. 2 is double buffering: the next chunk is already there when one finishes.
    pub in_flight: NonZeroUsize,
    /// Whether [`Scheduler::yield_candidate`] proposes tail splits.
    pub tail_split: bool,
    /// A tail split is proposed only if the unstarted items it frees are estimated to take at
    /// least this long (cost unknown counts as long enough). A queued chunk the driver can
    /// take back ([`reclaim_queued`](Self::reclaim_queued)) is proposed whatever its cost.
    pub min_yield_work: Duration,
    /// Whether the driver can take back a chunk queued behind a worker's running one without
    /// the worker's help, as long as the worker has not started it
    /// ([`Scheduler::on_reclaimed`]; the facade does it with a compare-and-swap on a word
    /// shared with the worker). Then a queued chunk never strands its items behind a long
    /// running one, so [`ChunkPolicy::Adaptive`] prefetches whatever the in-flight work is
    /// (not only below [`AdaptiveConfig::prefetch_horizon`]): a worker finds its next chunk
    /// in its ring when it finishes one, instead of waiting for the parent to react to its
    /// report (a wake-up or more on a busy machine). Off by default: a driver that cannot
    /// reclaim would strand items.
    pub reclaim_queued: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            policy: ChunkPolicy::default(),
            in_flight: NonZeroUsize::new(2).unwrap(),
            tail_split: true,
            min_yield_work: Duration::from_micros(50),
            reclaim_queued: false,
        }
    }
}

/// The length of a job's input as known when it is submitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputLen {
    /// Exactly this many items will be added; the input closes when the last one is.
    Known(u64),
    /// A stream: items are added as they are pulled until [`Scheduler::close_input`].
    Unknown,
}

/// Per-job settings that override the scheduler-wide [`SchedulerConfig`].
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct JobOptions {
    /// The chunk policy for this job only (for example a user's explicit `chunksize`);
    /// `None` uses [`SchedulerConfig::policy`].
    pub policy: Option<ChunkPolicy>,
}

impl JobOptions {
    /// Options that change nothing.
    pub fn new() -> JobOptions {
        JobOptions::default()
    }

    /// Sizes this job's chunks with `policy` instead of the scheduler-wide one.
    pub fn policy(mut self, policy: ChunkPolicy) -> JobOptions {
        self.policy = Some(policy);
        self
    }
}

/// A chunk handed to a worker: send `span.items` of `span.job` to `worker` under `chunk`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// Who runs it.
    pub worker: WorkerId,
    /// Name for the feedback about it.
    pub chunk: ChunkId,
    /// The items, never empty.
    pub span: Span,
}

/// A proposed tail split: ask `worker` to give back some unstarted items of `chunk`.
///
/// The worker honours it at its next item boundary, where it knows its true position (the
/// scheduler only knows what was reported), and reports the first item it gave back with
/// [`Scheduler::on_yielded`]; everything from there to the chunk's end comes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct YieldRequest {
    /// The worker holding the chunk.
    pub worker: WorkerId,
    /// The chunk to split.
    pub chunk: ChunkId,
    /// How much to give back.
    pub split: Split,
}

/// How much of a chunk a [`YieldRequest`] asks back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// The later half of the items not started yet, rounded down: with `next` the first
    /// unstarted item, give back from `next + (end - next).div_ceil(2)`. For the running
    /// chunk: the worker stays busy with the other half, so every split makes progress.
    Half,
    /// All items not started yet: for a chunk queued behind the running one, which may wait
    /// for as long as the running item takes. With [`SchedulerConfig::reclaim_queued`] the
    /// driver first tries to take the chunk back itself ([`Scheduler::on_reclaimed`]); only
    /// if the worker has already started it does it ask the worker, for the later
    /// [`Split::Half`] of its unstarted items like any running chunk.
    All,
}

impl Split {
    /// The first item to give back, for a chunk ending at `end` whose first unstarted item is
    /// `next`: a helper for worker runtimes.
    pub fn first_returned(self, next: u64, end: u64) -> u64 {
        match self {
            Split::Half => next + end.saturating_sub(next).div_ceil(2),
            Split::All => next,
        }
        .min(end)
    }
}

/// Where a chunk stands after feedback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkStatus {
    /// Items of it are still unreported.
    Running,
    /// Every item is reported; the chunk left the worker's in-flight window.
    Finished,
}

/// What a lost worker held, as returned by [`Scheduler::remove_worker`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lost {
    /// The item the worker was running: the one named by [`Scheduler::on_started`], or
    /// else the first unreported item of its oldest chunk. It may have run, fully or partly.
    /// The facade decides with [`Scheduler::requeue`] or [`Scheduler::abandon`].
    pub started: Option<ItemRef>,
    /// Items before `started` (per [`Scheduler::on_started`]) that ran but whose outcomes
    /// were never reported, e.g. still batched in the worker. They await `requeue` or
    /// `abandon` like `started`. Empty unless `on_started` named a later position.
    pub ran: Vec<Span>,
    /// Items that certainly had not started; they are already queued again.
    pub requeued: Vec<Span>,
}

/// Counters of one job; `added == queued + in_flight + done + awaiting_decision + abandoned`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobProgress {
    /// The total length if known (declared, or fixed by closing the input).
    pub len: Option<u64>,
    /// Items added so far.
    pub added: u64,
    /// Items waiting to be handed out.
    pub queued: u64,
    /// Items in chunks at workers, not reported done.
    pub in_flight: u64,
    /// Items reported done.
    pub done: u64,
    /// Items that may have started on a lost worker, awaiting `requeue` or `abandon`.
    pub awaiting_decision: u64,
    /// Items abandoned after a loss.
    pub abandoned: u64,
}

impl JobProgress {
    /// Whether every item of a closed input is done or abandoned.
    pub fn is_complete(&self) -> bool {
        self.len == Some(self.added) && self.done + self.abandoned == self.added
    }
}

/// Decides which items go to which worker, in what chunks.
///
/// See the crate documentation for the concepts. All methods are synchronous and cheap; the
/// scheduler reads no clock, so its decisions depend only on the sequence of calls and the
/// reported busy times.
///
/// # Driving it
///
/// The facade reacts to every event (a submission, input pulled, outcomes read from a
/// completion ring, a yield answered, a worker gone) with the same three steps:
///
/// 1. feed it: [`add_items`](Self::add_items) for input pulled within the window,
///    [`on_items_done`](Self::on_items_done), [`on_yielded`](Self::on_yielded),
///    [`remove_worker`](Self::remove_worker) (then [`requeue`](Self::requeue) or
///    [`abandon`](Self::abandon) what it names);
/// 2. send chunks: loop on [`next_assignment`](Self::next_assignment) until `None`;
/// 3. split tails: loop on [`yield_candidate`](Self::yield_candidate) until `None`, and set
///    each named worker's yield flag with the requested [`Split`].
///
/// A worker runs a chunk's items in order and reports them in order; it honours a yield
/// request between items, giving back [`Split::first_returned`]`(next, end)..end`.
///
/// # Examples
///
/// A facade loop, with a worker that finishes whatever it gets at once:
///
/// ```
/// # use std::time::Duration;
/// use procpool_sched::{ChunkStatus, InputLen, Scheduler, SchedulerConfig, TaskKey};
///
/// let mut sched = Scheduler::new(SchedulerConfig::default());
/// let w0 = sched.add_worker();
/// let w1 = sched.add_worker();
/// let job = sched.submit(TaskKey(7), InputLen::Known(1000));
/// sched.add_items(job, 1000)?;
/// let mut done = 0;
/// while let Some(a) = sched.next_assignment() {
///     let n = a.span.items.end - a.span.items.start;
///     // ... send to a.worker, which runs the items and reports:
///     let status = sched.on_items_done(a.worker, a.chunk, n, Duration::from_nanos(100 * n))?;
///     assert_eq!(status, ChunkStatus::Finished);
///     done += n;
/// }
/// assert_eq!(done, 1000);
/// assert!(sched.job_progress(job).unwrap().is_complete());
/// # let _ = (w0, w1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    /// Indexed by `WorkerId::slot`; vacant slots are reused by `add_worker`.
    slots: Vec<Slot>,
    jobs: BTreeMap<JobId, Job>,
    /// Every chunk handed out and not yet finished or lost. Never iterated, so a hash map
    /// keeps the scheduler deterministic.
    chunks: HashMap<ChunkId, InFlight>,
    /// Items given back (tail splits, lost workers, retries, retired workers' deques), keyed
    /// by job and first index; adjacent pieces are merged. Served before `fresh` and lowest
    /// index first, since they are the oldest input and hold up ordered output.
    returned: BTreeMap<(JobId, u64), Range<u64>>,
    /// New input, in the order it was added.
    fresh: Injector<Piece>,
    estimates: BTreeMap<TaskKey, CostEstimate>,
    next_job: u64,
    next_chunk: u64,
    /// Number of slots in `SlotState::Live`.
    n_live: usize,
    /// Chunks with `yield_requested` set.
    yields_outstanding: usize,
}

#[derive(Debug)]
struct Slot {
    generation: u32,
    state: SlotState,
    /// Pieces reserved for this worker and not sent yet: the rest of a piece it carved from.
    /// Peers steal from it (through `stealer`) when everything else is empty.
    deque: Deque<Piece>,
    stealer: Stealer<Piece>,
    /// Items in the pieces of `deque`.
    reserved: u64,
    /// The latest item this worker said it started (`on_started`): its chunk and index.
    started: Option<(ChunkId, u64)>,
    /// Chunks sent to this worker, in the order it runs them; the front one is running.
    in_flight: VecDeque<ChunkId>,
    /// `next_chunk` when this slot last got a chunk: ties in `next_assignment` between idle
    /// workers go to the most recently served one (still spinning for work), ties between busy
    /// workers, and any tie while given-back items are queued, to the least recently served.
    last_assigned: u64,
    /// Whether it may hold a chunk beyond the one it runs (`set_prefetch`).
    prefetch: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotState {
    Vacant,
    Live,
    /// Gets no new chunks, still reports on those it has.
    Retiring,
}

#[derive(Clone, Debug)]
struct Piece {
    job: JobId,
    items: Range<u64>,
}

#[derive(Debug)]
struct Job {
    task: TaskKey,
    /// Declared length, or `added` once the input is closed.
    len: Option<u64>,
    added: u64,
    /// Added items not yet pushed to `fresh`: coalesced so a burst of adds is one piece.
    staged: Range<u64>,
    queued: u64,
    in_flight: u64,
    done: u64,
    abandoned: u64,
    /// Possibly started items of lost workers, awaiting `requeue` or `abandon`.
    awaiting: BTreeSet<u64>,
    /// This job's own chunk policy, if it overrides the scheduler's.
    policy: Option<ChunkPolicy>,
}

#[derive(Debug)]
struct InFlight {
    worker: WorkerId,
    job: JobId,
    task: TaskKey,
    /// Shrinks from the end when the worker yields.
    items: Range<u64>,
    /// Items reported done; they are always the first `done` of `items`.
    done: u64,
    yield_requested: bool,
}

impl InFlight {
    fn left(&self) -> u64 {
        self.items.end - self.items.start - self.done
    }
}

impl Job {
    fn progress(&self) -> JobProgress {
        JobProgress {
            len: self.len,
            added: self.added,
            queued: self.queued,
            in_flight: self.in_flight,
            done: self.done,
            awaiting_decision: self.awaiting.len() as u64,
            abandoned: self.abandoned,
        }
    }
}

impl Scheduler {
    /// An empty scheduler: no workers, no jobs, no cost estimates.
    pub fn new(config: SchedulerConfig) -> Self {
        Scheduler {
            config,
            slots: Vec::new(),
            jobs: BTreeMap::new(),
            chunks: HashMap::new(),
            returned: BTreeMap::new(),
            fresh: Injector::new(),
            estimates: BTreeMap::new(),
            next_job: 0,
            next_chunk: 0,
            n_live: 0,
            yields_outstanding: 0,
        }
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    // ----- workers -----

    /// Registers a new worker in the lowest vacant slot (or a new one).
    pub fn add_worker(&mut self) -> WorkerId {
        let slot_idx = match self.slots.iter().position(|s| s.state == SlotState::Vacant) {
            Some(idx) => {
                let slot = &mut self.slots[idx];
                slot.generation += 1;
                slot.state = SlotState::Live;
                slot.started = None;
                slot.prefetch = true;
                idx
            }
            None => {
                let deque = Deque::new_fifo();
                let stealer = deque.stealer();
                self.slots.push(Slot {
                    generation: 0,
                    state: SlotState::Live,
                    deque,
                    stealer,
                    reserved: 0,
                    started: None,
                    in_flight: VecDeque::new(),
                    last_assigned: 0,
                    prefetch: true,
                });
                self.slots.len() - 1
            }
        };
        self.n_live += 1;
        WorkerId {
            slot: slot_idx as u32,
            generation: self.slots[slot_idx].generation,
        }
    }

    /// Stops handing chunks to a worker (pool shrinking); it keeps reporting on what it holds.
    /// Once [`in_flight`](Self::in_flight) is empty, remove it with
    /// [`remove_worker`](Self::remove_worker).
    ///
    /// # Errors
    ///
    /// [`StaleWorker`] if the worker is not live (retiring twice is fine).
    pub fn retire_worker(&mut self, worker: WorkerId) -> Result<(), StaleWorker> {
        let idx = self.slot_of(worker)?;
        if self.slots[idx].state == SlotState::Live {
            self.slots[idx].state = SlotState::Retiring;
            self.n_live -= 1;
            self.return_reserved(idx);
        }
        Ok(())
    }

    /// Allows or forbids giving `worker` a chunk while it holds one already (prefetch); a
    /// worker holding nothing can always get one. Allowed for a new worker.
    ///
    /// A driver forbids it while it cannot take a queued chunk back from the worker (with
    /// [`SchedulerConfig::reclaim_queued`], the facade can take back one at a time: until the
    /// worker has passed the chunk taken back, a further queued chunk would wait for whatever
    /// the worker runs, however long).
    ///
    /// # Errors
    ///
    /// [`StaleWorker`] if the worker is not live or retiring.
    pub fn set_prefetch(&mut self, worker: WorkerId, allowed: bool) -> Result<(), StaleWorker> {
        let idx = self.slot_of(worker)?;
        self.slots[idx].prefetch = allowed;
        Ok(())
    }

    /// Undoes [`retire_worker`](Self::retire_worker): the worker gets chunks again (a driver
    /// that retired it for a spent budget of items and got some of them back unrun).
    ///
    /// # Errors
    ///
    /// [`StaleWorker`] if the worker is not live or retiring (reinstating a live one is fine).
    pub fn reinstate_worker(&mut self, worker: WorkerId) -> Result<(), StaleWorker> {
        let idx = self.slot_of(worker)?;
        if self.slots[idx].state == SlotState::Retiring {
            self.slots[idx].state = SlotState::Live;
            self.n_live += 1;
        }
        Ok(())
    }

    /// Removes a worker that exited or died, and says exactly what it held.
    ///
    /// Items it certainly had not started are queued again at once and listed in
    /// [`Lost::requeued`]. The item it may have been running is [`Lost::started`], and items
    /// that ran without a reported outcome are [`Lost::ran`]: they wait for
    /// [`requeue`](Self::requeue) or [`abandon`](Self::abandon).
    ///
    /// Report every outcome read from the dead worker's completion ring first. Then, if the
    /// worker publishes each outcome before starting the next item, the first unreported item
    /// is the running one and the answer is exact. If it batches outcomes, name the item it
    /// was running (e.g. from a progress word in shared memory) with
    /// [`on_started`](Self::on_started) before calling this.
    ///
    /// # Errors
    ///
    /// [`StaleWorker`] if the worker is not live or retiring.
    pub fn remove_worker(&mut self, worker: WorkerId) -> Result<Lost, StaleWorker> {
        let idx = self.slot_of(worker)?;
        let mut lost = Lost::default();
        let in_flight = std::mem::take(&mut self.slots[idx].in_flight);
        // Where the worker was: chunks before `running_pos` ran completely, items of that
        // chunk before `running_index` ran, later ones had not started.
        let (running_pos, running_index) = match self.slots[idx].started.take() {
            Some((chunk_id, index)) => match in_flight.iter().position(|id| *id == chunk_id) {
                Some(pos) => (pos, Some(index)),
                None => (0, None),
            },
            None => (0, None),
        };
        for (pos, chunk_id) in in_flight.into_iter().enumerate() {
            let chunk = self
                .chunks
                .remove(&chunk_id)
                .expect("in-flight chunk is tracked");
            if chunk.yield_requested {
                self.yields_outstanding -= 1;
            }
            let mut first = chunk.items.start + chunk.done;
            let end = chunk.items.end;
            let Some(job) = self.jobs.get_mut(&chunk.job) else {
                continue;
            };
            let ran_to = match pos.cmp(&running_pos) {
                std::cmp::Ordering::Less => end,
                std::cmp::Ordering::Equal => running_index.unwrap_or(first).clamp(first, end),
                std::cmp::Ordering::Greater => first,
            };
            if first < ran_to {
                job.in_flight -= ran_to - first;
                job.awaiting.extend(first..ran_to);
                lost.ran.push(Span {
                    job: chunk.job,
                    items: first..ran_to,
                });
                first = ran_to;
            }
            if pos == running_pos && first < end {
                lost.started = Some(ItemRef {
                    job: chunk.job,
                    index: first,
                });
                job.in_flight -= 1;
                job.awaiting.insert(first);
                first += 1;
            }
            if first < end {
                job.in_flight -= end - first;
                job.queued += end - first;
                self.give_back(Piece {
                    job: chunk.job,
                    items: first..end,
                });
                lost.requeued.push(Span {
                    job: chunk.job,
                    items: first..end,
                });
            }
        }
        self.return_reserved(idx);
        if self.slots[idx].state == SlotState::Live {
            self.n_live -= 1;
        }
        self.slots[idx].state = SlotState::Vacant;
        Ok(lost)
    }

    /// Live workers (not retiring), in slot order.
    pub fn workers(&self) -> impl Iterator<Item = WorkerId> + '_ {
        self.slots.iter().enumerate().filter_map(|(idx, slot)| {
            (slot.state == SlotState::Live).then_some(WorkerId {
                slot: idx as u32,
                generation: slot.generation,
            })
        })
    }

    /// The chunks a worker holds, oldest (running) first.
    ///
    /// # Errors
    ///
    /// [`StaleWorker`] if the worker is not live or retiring.
    pub fn in_flight(&self, worker: WorkerId) -> Result<Vec<ChunkId>, StaleWorker> {
        let idx = self.slot_of(worker)?;
        Ok(self.slots[idx].in_flight.iter().copied().collect())
    }

    // ----- jobs -----

    /// Starts a job running `task` over an input that is added with
    /// [`add_items`](Self::add_items).
    pub fn submit(&mut self, task: TaskKey, len: InputLen) -> JobId {
        self.submit_with(task, len, JobOptions::default())
    }

    /// Like [`submit`](Self::submit), with per-job [`JobOptions`].
    pub fn submit_with(&mut self, task: TaskKey, len: InputLen, options: JobOptions) -> JobId {
        let id = JobId(self.next_job);
        self.next_job += 1;
        let len = match len {
            InputLen::Known(n) => Some(n),
            InputLen::Unknown => None,
        };
        self.jobs.insert(
            id,
            Job {
                task,
                len,
                added: 0,
                staged: 0..0,
                queued: 0,
                in_flight: 0,
                done: 0,
                abandoned: 0,
                awaiting: BTreeSet::new(),
                policy: options.policy,
            },
        );
        id
    }

    /// Makes the next `n` items of the job's input schedulable and returns their indices.
    ///
    /// # Errors
    ///
    /// [`JobError::UnknownJob`], [`JobError::InputClosed`], or [`JobError::TooLong`] past a
    /// declared length.
    pub fn add_items(&mut self, job: JobId, n: u64) -> Result<Range<u64>, JobError> {
        let state = self.jobs.get_mut(&job).ok_or(JobError::UnknownJob(job))?;
        let added = state.added + n;
        match state.len {
            Some(len) if state.added == len && n > 0 => return Err(JobError::InputClosed(job)),
            Some(len) if added > len => return Err(JobError::TooLong { job, added, len }),
            _ => {}
        }
        let range = state.added..added;
        if state.staged.is_empty() {
            state.staged = range.clone();
        } else {
            state.staged.end = added;
        }
        state.added = added;
        state.queued += n;
        Ok(range)
    }

    /// Declares the end of the job's input: its length is what was added so far.
    ///
    /// # Errors
    ///
    /// [`JobError::UnknownJob`].
    pub fn close_input(&mut self, job: JobId) -> Result<(), JobError> {
        let state = self.jobs.get_mut(&job).ok_or(JobError::UnknownJob(job))?;
        state.len = Some(state.added);
        Ok(())
    }

    /// Forgets a job (finished or cancelled) and drops its queued items. Its chunks still in
    /// flight stay tracked so feedback about them is accepted, but nothing of it is requeued.
    ///
    /// # Errors
    ///
    /// [`JobError::UnknownJob`].
    pub fn remove_job(&mut self, job: JobId) -> Result<JobProgress, JobError> {
        let state = self.jobs.remove(&job).ok_or(JobError::UnknownJob(job))?;
        let keep = |piece: &Piece| piece.job != job;
        self.returned.retain(|(piece_job, _), _| *piece_job != job);
        let kept: Vec<Piece> = (drain_injector(&self.fresh).into_iter())
            .filter(keep)
            .collect();
        kept.into_iter().for_each(|piece| self.fresh.push(piece));
        for slot in &mut self.slots {
            let mut kept = Vec::new();
            while let Some(piece) = slot.deque.pop() {
                if keep(&piece) {
                    kept.push(piece);
                } else {
                    slot.reserved -= piece.items.end - piece.items.start;
                }
            }
            kept.into_iter().for_each(|piece| slot.deque.push(piece));
        }
        Ok(state.progress())
    }

    /// The job's counters, or `None` if it does not exist.
    pub fn job_progress(&self, job: JobId) -> Option<JobProgress> {
        self.jobs.get(&job).map(Job::progress)
    }

    /// Queues again an item reported in [`Lost::started`] (at-least-once retry).
    ///
    /// # Errors
    ///
    /// [`JobError::UnknownJob`] or [`JobError::NotAwaitingDecision`].
    pub fn requeue(&mut self, item: ItemRef) -> Result<(), JobError> {
        let job = self.awaiting_item(item)?;
        job.queued += 1;
        self.give_back(Piece {
            job: item.job,
            items: item.index..item.index + 1,
        });
        Ok(())
    }

    /// Gives up on an item reported in [`Lost::started`]; it counts toward completion.
    ///
    /// # Errors
    ///
    /// [`JobError::UnknownJob`] or [`JobError::NotAwaitingDecision`].
    pub fn abandon(&mut self, item: ItemRef) -> Result<(), JobError> {
        let job = self.awaiting_item(item)?;
        job.abandoned += 1;
        Ok(())
    }

    /// The current per-item cost estimate of a task type, if any item of it finished.
    pub fn cost_estimate(&self, task: TaskKey) -> Option<Duration> {
        self.estimates.get(&task).and_then(CostEstimate::per_item)
    }

    /// Whether any job has items waiting to be handed out.
    pub fn has_queued(&self) -> bool {
        self.jobs.values().any(|job| job.queued > 0)
    }

    // ----- dispatch -----

    /// The next chunk for `worker`, or `None` if its in-flight window is full, it is retiring,
    /// or nothing is left to hand out.
    ///
    /// Refill order: the worker's own deque, the queue of given-back items, new input, then a
    /// steal from the peer with the most reserved items. A piece larger than the chunk size is
    /// split: the chunk is cut from its front, and the rest stays reserved where it was (this
    /// worker's deque, or the robbed peer's).
    ///
    /// Call it again after every event concerning the worker (items done, a yield, new
    /// input): with [`ChunkPolicy::Adaptive`], a second chunk is only prefetched while the
    /// work in flight to the worker is short.
    ///
    /// # Errors
    ///
    /// [`StaleWorker`] if the worker is not live or retiring.
    pub fn next_chunk(&mut self, worker: WorkerId) -> Result<Option<Assignment>, StaleWorker> {
        let idx = self.slot_of(worker)?;
        if self.slots[idx].state != SlotState::Live || !self.has_room(idx) {
            return Ok(None);
        }
        self.flush_staged();
        let Some((piece, home)) = self.take_piece(idx) else {
            return Ok(None);
        };
        Ok(Some(self.carve(idx, piece, home)))
    }

    /// The next chunk for whichever live worker needs one most (fewest chunks in flight; then,
    /// among idle workers, the most recently served unless given-back items are queued, and
    /// among busy ones the least recently served), or `None` if no worker can take one. Loop
    /// on it after every event.
    ///
    /// The tie-break among idle workers keeps a lone call on the worker that ran the last one:
    /// that worker is likely still spinning for work (a hand-off of ~0.1 µs), while the other
    /// may have parked (a wake-up of ~50 µs where idle cores halt), and a caller alternating
    /// between two spinning workers keeps three threads spinning on two cores. Given-back
    /// items (tail splits, retries) still go to the least recently served worker, so they
    /// move to a different one. Among busy workers the one served first is likely to finish
    /// first, so its next chunk is queued first (prefetch order; most recently served first
    /// there left the first worker waiting while the others were still getting their second
    /// chunks: `docs/bench/scheduler-simulation.md`, 64 workers).
    pub fn next_assignment(&mut self) -> Option<Assignment> {
        if !self.has_queued() {
            return None;
        }
        let hot_first = self.returned.is_empty();
        // The first live worker with room in the order (fewest chunks in flight, then for an
        // idle worker the most recently served unless given-back items wait, else the least
        // recently served, then the lowest slot): a minimum, found without sorting or
        // allocating (this runs for every `submit`).
        let idx = (self.slots.iter().enumerate())
            .filter(|(idx, slot)| slot.state == SlotState::Live && self.has_room(*idx))
            .min_by_key(|(idx, slot)| {
                let served = if hot_first && slot.in_flight.is_empty() {
                    u64::MAX - slot.last_assigned
                } else {
                    slot.last_assigned
                };
                (slot.in_flight.len(), served, *idx)
            })
            .map(|(idx, _)| idx)?;
        self.flush_staged();
        let (piece, home) = self.take_piece(idx)?;
        Some(self.carve(idx, piece, home))
    }

    /// Proposes a tail split, or `None`.
    ///
    /// Only when a live worker is idle (holds no chunk), nothing is queued anywhere, and fewer
    /// splits are outstanding than workers idle. Picks the chunk whose unstarted items are
    /// estimated to take longest: for a worker's running chunk all items after the first
    /// unreported one (which may be running), for its queued chunks all unreported items. The chunk is marked so it
    /// is not proposed twice; the worker answers with [`on_yielded`](Self::on_yielded), or
    /// simply finishes the chunk.
    ///
    /// With [`SchedulerConfig::reclaim_queued`], a queued chunk comes first, whatever its own
    /// cost: it waits for everything ahead of it at its worker, which may be an item held far
    /// longer than any estimate says (a blocked or long call), and the driver takes it back at
    /// once, without the worker; a split of a running chunk waits for the worker's next item
    /// boundary. ([`SchedulerConfig::min_yield_work`] applies to the rest: judging a queued
    /// chunk by its own estimate once left a cheap call behind a held worker for good.)
    pub fn yield_candidate(&mut self) -> Option<YieldRequest> {
        if !self.config.tail_split || self.has_queued() {
            return None;
        }
        let idle = (self.slots.iter())
            .filter(|slot| slot.state == SlotState::Live && slot.in_flight.is_empty())
            .count();
        if idle <= self.yields_outstanding {
            return None;
        }
        let min_work = self.config.min_yield_work.as_nanos() as f64;
        // Ranked by (reclaimable, estimated work).
        let mut best: Option<((bool, f64), ChunkId, Split)> = None;
        for slot in &self.slots {
            for (pos, chunk_id) in slot.in_flight.iter().enumerate() {
                let chunk = &self.chunks[chunk_id];
                let unstarted = chunk.left().saturating_sub(u64::from(pos == 0));
                if chunk.yield_requested || unstarted == 0 || !self.jobs.contains_key(&chunk.job) {
                    continue;
                }
                let per_item = self
                    .estimates
                    .get(&chunk.task)
                    .and_then(CostEstimate::per_item_ns);
                let work = per_item.map_or(f64::INFINITY, |ns| ns * unstarted as f64);
                let reclaimable = pos > 0 && self.config.reclaim_queued;
                if work < min_work && !reclaimable {
                    continue;
                }
                let rank = (reclaimable, work);
                if best.is_none_or(|(best_rank, ..)| rank > best_rank) {
                    let split = if pos == 0 { Split::Half } else { Split::All };
                    best = Some((rank, *chunk_id, split));
                }
            }
        }
        let (_, chunk_id, split) = best?;
        let chunk = self
            .chunks
            .get_mut(&chunk_id)
            .expect("candidate is tracked");
        chunk.yield_requested = true;
        self.yields_outstanding += 1;
        Some(YieldRequest {
            worker: chunk.worker,
            chunk: chunk_id,
            split,
        })
    }

    // ----- feedback -----

    /// Records that the worker finished the next `n_items` items of `chunk` (in order),
    /// spending `busy` running them; a chunk may be reported in several batches.
    ///
    /// `busy` feeds the task's cost estimate. Report [`Duration::ZERO`] for items that did
    /// not really run (skipped, cancelled, failed to encode): they count as done but leave
    /// the estimate alone.
    ///
    /// # Errors
    ///
    /// A [`FeedbackError`] if the worker or chunk is unknown, or more items are reported than
    /// are left; nothing is recorded then.
    pub fn on_items_done(
        &mut self,
        worker: WorkerId,
        chunk: ChunkId,
        n_items: u64,
        busy: Duration,
    ) -> Result<ChunkStatus, FeedbackError> {
        let state = self.chunk_of(worker, chunk)?;
        let left = state.left();
        if n_items > left {
            return Err(FeedbackError::TooManyItems {
                chunk,
                left,
                reported: n_items,
            });
        }
        state.done += n_items;
        let (job, task) = (state.job, state.task);
        if let Some(job) = self.jobs.get_mut(&job) {
            job.in_flight -= n_items;
            job.done += n_items;
        }
        let smoothing = match &self.config.policy {
            ChunkPolicy::Adaptive(config) => config.smoothing,
            _ => AdaptiveConfig::default().smoothing,
        };
        if !busy.is_zero() {
            (self.estimates.entry(task).or_default()).observe(n_items, busy, smoothing);
        }
        Ok(self.finish_if_done(chunk))
    }

    /// Records that the worker started item `index` of `chunk`: every item before it in the
    /// chunk, and every chunk it received before this one, ran. Only
    /// [`remove_worker`](Self::remove_worker) uses it, to tell what a lost worker ran without
    /// reporting; calling it is needed only when the worker batches its outcomes.
    ///
    /// # Errors
    ///
    /// A [`FeedbackError`] if the worker or chunk is unknown or `index` lies before an item
    /// reported done or past the chunk's end; nothing is recorded then.
    pub fn on_started(
        &mut self,
        worker: WorkerId,
        chunk: ChunkId,
        index: u64,
    ) -> Result<(), FeedbackError> {
        let state = self.chunk_of(worker, chunk)?;
        let (lowest, end) = (state.items.start + state.done, state.items.end);
        if !(lowest..end).contains(&index) {
            return Err(FeedbackError::StartOutOfRange {
                chunk,
                index,
                lowest,
                end,
            });
        }
        self.slots[worker.slot()].started = Some((chunk, index));
        Ok(())
    }

    /// Records that the worker gave back `chunk` from `first_unstarted` on (to its end). The
    /// items before it stay with the worker and are still to be reported done; the rest is
    /// queued again, ahead of new input. A worker may yield without being asked.
    ///
    /// # Errors
    ///
    /// A [`FeedbackError`] if the worker or chunk is unknown or `first_unstarted` lies before
    /// an item reported done or past the chunk's end; nothing is recorded then.
    pub fn on_yielded(
        &mut self,
        worker: WorkerId,
        chunk: ChunkId,
        first_unstarted: u64,
    ) -> Result<ChunkStatus, FeedbackError> {
        let state = self.chunk_of(worker, chunk)?;
        let lowest = state.items.start + state.done;
        let end = state.items.end;
        if !(lowest..=end).contains(&first_unstarted) {
            return Err(FeedbackError::YieldOutOfRange {
                chunk,
                first_unstarted,
                lowest,
                end,
            });
        }
        state.items.end = first_unstarted;
        let job_id = state.job;
        if std::mem::take(&mut state.yield_requested) {
            self.yields_outstanding -= 1;
        }
        if first_unstarted < end {
            if let Some(job) = self.jobs.get_mut(&job_id) {
                job.in_flight -= end - first_unstarted;
                job.queued += end - first_unstarted;
                self.give_back(Piece {
                    job: job_id,
                    items: first_unstarted..end,
                });
            }
        }
        Ok(self.finish_if_done(chunk))
    }

    /// Records that the driver took back `chunk` before the worker started it (with
    /// [`SchedulerConfig::reclaim_queued`]; typically after [`yield_candidate`] proposed
    /// [`Split::All`] for it): the worker will run none of its items, which are queued again,
    /// ahead of new input, and the chunk leaves the worker's in-flight window.
    ///
    /// [`yield_candidate`]: Self::yield_candidate
    ///
    /// # Errors
    ///
    /// A [`FeedbackError`] if the worker or chunk is unknown, or
    /// [`FeedbackError::ReclaimStarted`] if items of it were reported done (it had started);
    /// nothing is recorded then.
    pub fn on_reclaimed(&mut self, worker: WorkerId, chunk: ChunkId) -> Result<(), FeedbackError> {
        let state = self.chunk_of(worker, chunk)?;
        if state.done > 0 {
            return Err(FeedbackError::ReclaimStarted {
                chunk,
                done: state.done,
            });
        }
        let start = state.items.start;
        self.on_yielded(worker, chunk, start).map(|_| ())
    }

    // ----- internals -----

    fn slot_of(&self, worker: WorkerId) -> Result<usize, StaleWorker> {
        match self.slots.get(worker.slot()) {
            Some(slot)
                if slot.generation == worker.generation && slot.state != SlotState::Vacant =>
            {
                Ok(worker.slot())
            }
            _ => Err(StaleWorker(worker)),
        }
    }

    fn chunk_of(
        &mut self,
        worker: WorkerId,
        chunk: ChunkId,
    ) -> Result<&mut InFlight, FeedbackError> {
        self.slot_of(worker)?;
        let state = self
            .chunks
            .get_mut(&chunk)
            .ok_or(FeedbackError::UnknownChunk(chunk))?;
        if state.worker != worker {
            return Err(FeedbackError::WrongWorker {
                chunk,
                owner: state.worker,
                reported_by: worker,
            });
        }
        Ok(state)
    }

    fn awaiting_item(&mut self, item: ItemRef) -> Result<&mut Job, JobError> {
        let job = self
            .jobs
            .get_mut(&item.job)
            .ok_or(JobError::UnknownJob(item.job))?;
        if !job.awaiting.remove(&item.index) {
            return Err(JobError::NotAwaitingDecision {
                job: item.job,
                index: item.index,
            });
        }
        Ok(job)
    }

    fn finish_if_done(&mut self, chunk_id: ChunkId) -> ChunkStatus {
        let chunk = &self.chunks[&chunk_id];
        if chunk.left() > 0 {
            return ChunkStatus::Running;
        }
        let chunk = self.chunks.remove(&chunk_id).expect("checked above");
        if chunk.yield_requested {
            self.yields_outstanding -= 1;
        }
        let in_flight = &mut self.slots[chunk.worker.slot()].in_flight;
        if let Some(pos) = in_flight.iter().position(|id| *id == chunk_id) {
            in_flight.remove(pos);
        }
        ChunkStatus::Finished
    }

    /// Whether the in-flight window of a live worker admits another chunk.
    fn has_room(&self, idx: usize) -> bool {
        let slot = &self.slots[idx];
        if slot.in_flight.len() >= self.config.in_flight.get() {
            return false;
        }
        if slot.in_flight.is_empty() {
            return true;
        }
        if !slot.prefetch {
            return false;
        }
        let ChunkPolicy::Adaptive(config) = &self.config.policy else {
            return true;
        };
        // Prefetch only while the work already in flight is known to be short, unless a
        // queued chunk can be reclaimed (then it strands nothing); never while the cost is
        // unknown (the probe chunks double in size meanwhile).
        let mut work_ns = 0.0;
        for chunk_id in &slot.in_flight {
            let chunk = &self.chunks[chunk_id];
            match self
                .estimates
                .get(&chunk.task)
                .and_then(CostEstimate::per_item_ns)
            {
                Some(ns) => work_ns += ns * chunk.left() as f64,
                None => return false,
            }
        }
        self.config.reclaim_queued || work_ns < config.prefetch_horizon.as_nanos() as f64
    }

    fn flush_staged(&mut self) {
        for (id, job) in &mut self.jobs {
            if !job.staged.is_empty() {
                let items = std::mem::replace(&mut job.staged, job.added..job.added);
                self.fresh.push(Piece { job: *id, items });
            }
        }
    }

    /// Queues given-back items, merged with adjacent given-back pieces of the same job.
    fn give_back(&mut self, piece: Piece) {
        let Piece { job, mut items } = piece;
        if let Some(next) = self.returned.remove(&(job, items.end)) {
            items.end = next.end;
        }
        if let Some((_, before)) = self
            .returned
            .range_mut((job, 0)..(job, items.start))
            .next_back()
        {
            if before.end == items.start {
                before.end = items.end;
                return;
            }
        }
        self.returned.insert((job, items.start), items);
    }

    /// Moves the pieces reserved in a slot's deque to `returned`.
    fn return_reserved(&mut self, idx: usize) {
        while let Some(piece) = self.slots[idx].deque.pop() {
            self.give_back(piece);
        }
        self.slots[idx].reserved = 0;
    }

    /// The next piece for the worker in slot `idx`, and the slot whose deque keeps what is
    /// left of it after a chunk is cut: the worker's own, or the victim's after a steal, so a
    /// steal takes one chunk's worth and leaves the peer the rest.
    fn take_piece(&mut self, idx: usize) -> Option<(Piece, usize)> {
        if let Some(piece) = self.slots[idx].deque.pop() {
            self.slots[idx].reserved -= piece.items.end - piece.items.start;
            return Some((piece, idx));
        }
        if let Some(((job, _), items)) = self.returned.pop_first() {
            return Some((Piece { job, items }, idx));
        }
        if let Some(piece) = steal_one(|| self.fresh.steal()) {
            return Some((piece, idx));
        }
        let victim = (self.slots.iter().enumerate())
            .filter(|(victim, slot)| *victim != idx && slot.reserved > 0)
            .max_by_key(|(victim, slot)| (slot.reserved, std::cmp::Reverse(*victim)))
            .map(|(victim, _)| victim)?;
        let piece = steal_one(|| self.slots[victim].stealer.steal())?;
        self.slots[victim].reserved -= piece.items.end - piece.items.start;
        Some((piece, victim))
    }

    /// Cuts a chunk from the front of `piece` for the worker in slot `idx`; the rest goes to
    /// the deque of slot `home`.
    fn carve(&mut self, idx: usize, piece: Piece, home: usize) -> Assignment {
        let job = self
            .jobs
            .get_mut(&piece.job)
            .expect("queued pieces belong to live jobs");
        let estimate = self.estimates.entry(job.task).or_default();
        let remaining = match job.len {
            Some(len) => len - job.added + job.queued,
            None => job.queued,
        };
        let input = SizeInput {
            per_item: estimate.per_item(),
            remaining,
            job_len: job.len,
            n_workers: NonZeroUsize::new(self.n_live).unwrap_or(NonZeroUsize::MIN),
            unknown_dispatches: estimate.unknown_dispatches,
        };
        let policy = job.policy.as_ref().unwrap_or(&self.config.policy);
        let size = policy.chunk_size(&input).get();
        if input.per_item.is_none() {
            estimate.unknown_dispatches += 1;
        }
        let end = piece.items.end.min(piece.items.start.saturating_add(size));
        let items = piece.items.start..end;
        if end < piece.items.end {
            let home = &mut self.slots[home];
            home.reserved += piece.items.end - end;
            home.deque.push(Piece {
                job: piece.job,
                items: end..piece.items.end,
            });
        }
        let slot = &mut self.slots[idx];
        let n = end - items.start;
        job.queued -= n;
        job.in_flight += n;
        let chunk = ChunkId(self.next_chunk);
        self.next_chunk += 1;
        let worker = WorkerId {
            slot: idx as u32,
            generation: slot.generation,
        };
        slot.in_flight.push_back(chunk);
        slot.last_assigned = self.next_chunk;
        self.chunks.insert(
            chunk,
            InFlight {
                worker,
                job: piece.job,
                task: job.task,
                items: items.clone(),
                done: 0,
                yield_requested: false,
            },
        );
        Assignment {
            worker,
            chunk,
            span: Span {
                job: piece.job,
                items,
            },
        }
    }
}

/// Takes one piece from a crossbeam queue. The scheduler is its only user, so `Retry` (a
/// concurrent steal) cannot happen, but it is handled as crossbeam documents it.
fn steal_one(mut steal: impl FnMut() -> Steal<Piece>) -> Option<Piece> {
    loop {
        match steal() {
            Steal::Success(piece) => return Some(piece),
            Steal::Empty => return None,
            Steal::Retry => continue,
        }
    }
}

fn drain_injector(injector: &Injector<Piece>) -> Vec<Piece> {
    std::iter::from_fn(|| steal_one(|| injector.steal())).collect()
}

#[cfg(test)]
mod tests;
