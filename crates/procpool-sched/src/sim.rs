//! A discrete-event simulation of a pool driven by a [`Scheduler`], for tests and benchmarks.
//!
//! The model: one parent thread that spends [`CostModel::parent_per_chunk`] on each chunk it
//! sends (serially), workers that spend [`CostModel::worker_per_chunk`] per chunk and
//! [`CostModel::per_item`] plus the item's own duration per item, and that park after
//! [`CostModel::spin`] without work, paying [`CostModel::wake_up`] to start again. Workers
//! report finished items in batches of about [`CostModel::report_every`] of busy time (and at
//! the end of each chunk) and check their yield flags between items. A dying worker either
//! published each outcome before starting the next item, or (with
//! [`Scenario::batched_outcomes`]) loses its current batch's outcomes and the parent names
//! the running item from a progress word.
//!
//! The simulation checks the scheduler as it goes (every item handed out was admitted, every
//! report matches what the worker really did, a lost worker's answer matches what it really
//! ran) and returns what happened to each item, so tests can assert exactly-once completion
//! and ordered output.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::num::NonZeroUsize;
use std::time::Duration;

use crate::{
    ChunkId, ChunkStatus, InputLen, ItemRef, JobId, Order, Reorder, Scheduler, SchedulerConfig,
    Span, Split, TaskKey, WorkerId,
};

/// Fixed costs of the simulated machinery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CostModel {
    /// Parent time to send one chunk (serialize, ring write, doorbell); the parent is serial.
    pub parent_per_chunk: Duration,
    /// Worker time per chunk (read it from the ring, look up the task).
    pub worker_per_chunk: Duration,
    /// Worker time per item on top of its duration (decode, encode the outcome).
    pub per_item: Duration,
    /// Time for a parked worker to start running after a chunk arrives.
    pub wake_up: Duration,
    /// How long an idle worker spins before parking.
    pub spin: Duration,
    /// A worker reports finished items once this much busy time accumulated.
    pub report_every: Duration,
}

impl Default for CostModel {
    /// The issue's numbers: 2 µs + 1 µs per chunk, 10 ns per item, 50 µs wake-up after a
    /// 50 µs spin, reports every 100 µs.
    fn default() -> Self {
        CostModel {
            parent_per_chunk: Duration::from_micros(2),
            worker_per_chunk: Duration::from_micros(1),
            per_item: Duration::from_nanos(10),
            wake_up: Duration::from_micros(50),
            spin: Duration::from_micros(50),
            report_every: Duration::from_micros(100),
        }
    }
}

/// How a simulated job's input reaches the scheduler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimInput {
    /// Output order of the job's reorder buffer.
    pub order: Order,
    /// Input window; `None` admits the whole input at submission.
    pub window: Option<NonZeroUsize>,
    /// Whether the length is declared at submission (`InputLen::Known`) or found at the end.
    pub known_len: bool,
}

/// One job of a scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimJob {
    /// Task type; jobs of one type share a cost estimate.
    pub task: TaskKey,
    /// When it is submitted.
    pub submit_at: Duration,
    /// The duration of each item.
    pub durations: Vec<Duration>,
    /// How its input is fed.
    pub input: SimInput,
    /// When the job is cancelled with [`Scheduler::remove_job`], if ever. Its chunks in
    /// flight still run and report; no new chunk of it may be handed out.
    pub cancel_at: Option<Duration>,
}

/// Everything a simulation run needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// The scheduler under test.
    pub config: SchedulerConfig,
    /// Machinery costs.
    pub model: CostModel,
    /// Workers at time 0.
    pub workers: usize,
    /// Jobs.
    pub jobs: Vec<SimJob>,
    /// Worker deaths: at this time, the worker in this slot (if any) dies.
    pub deaths: Vec<(Duration, usize)>,
    /// Worker retirements (recycling): at this time, the worker in this slot (if any) is
    /// retired; once it holds nothing it is removed and replaced.
    pub retirements: Vec<(Duration, usize)>,
    /// A dead or retired worker is replaced by a new one this much later.
    pub respawn_after: Duration,
    /// Whether an item that may have started on a dead worker is retried (else abandoned).
    pub retry_started: bool,
    /// Whether workers batch outcomes: then the items a dying worker finished in its current
    /// batch are never reported, and the parent names the running item with
    /// [`Scheduler::on_started`] (as read from a progress word). Otherwise each outcome is
    /// published before the next item starts.
    pub batched_outcomes: bool,
}

/// What happened in a run.
#[derive(Clone, Debug, PartialEq)]
pub struct SimOutcome {
    /// Time of the last item reported done (or abandoned).
    pub makespan: Duration,
    /// Chunks sent.
    pub chunks: u64,
    /// Yield requests made.
    pub yields: u64,
    /// Queued chunks taken back unstarted ([`Scheduler::on_reclaimed`]; only with
    /// [`SchedulerConfig::reclaim_queued`]), counted among `yields` too.
    pub reclaims: u64,
    /// Per job, in scenario order.
    pub jobs: Vec<JobOutcome>,
}

/// What happened to one job's items.
#[derive(Clone, Debug, PartialEq)]
pub struct JobOutcome {
    /// Item indices in the order the reorder buffer released them.
    pub output: Vec<u64>,
    /// Per item: how often it was reported done.
    pub done: Vec<u32>,
    /// Per item: how often it was abandoned after a loss.
    pub abandoned: Vec<u32>,
    /// Per item: how often a worker started running it.
    pub runs: Vec<u32>,
    /// Per item: how often a lost worker reported it as possibly started.
    pub lost_started: Vec<u32>,
    /// The most items admitted but not released at any time.
    pub max_outstanding: u64,
    /// Whether the job was cancelled; then `output` is partial.
    pub cancelled: bool,
}

/// Why a run failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// No event is pending but some job is incomplete.
    #[error("deadlock at {at:?}: no pending event, jobs incomplete: {detail}")]
    Deadlock {
        /// Simulated time.
        at: Duration,
        /// The incomplete jobs' progress.
        detail: String,
    },
    /// The scheduler refused a call or contradicted what the simulated workers did.
    #[error("at {at:?}: {detail}")]
    Violation {
        /// Simulated time.
        at: Duration,
        /// What went wrong.
        detail: String,
    },
    /// The run exceeded its event budget.
    #[error("event budget exhausted at {0:?}")]
    Budget(Duration),
}

/// Runs a scenario to completion.
///
/// # Errors
///
/// [`SimError`] on a deadlock, a scheduler error or inconsistency, or a runaway run.
///
/// # Examples
///
/// ```
/// # use std::time::Duration;
/// use procpool_sched::sim::{self, CostModel, Scenario, SimInput, SimJob};
/// use procpool_sched::{Order, SchedulerConfig, TaskKey};
///
/// let scenario = Scenario {
///     config: SchedulerConfig::default(),
///     model: CostModel::default(),
///     workers: 4,
///     jobs: vec![SimJob {
///         task: TaskKey(1),
///         submit_at: Duration::ZERO,
///         durations: vec![Duration::from_micros(10); 10_000],
///         input: SimInput { order: Order::Input, window: None, known_len: true },
///         cancel_at: None,
///     }],
///     deaths: vec![],
///     retirements: vec![],
///     respawn_after: Duration::from_millis(1),
///     retry_started: true,
///     batched_outcomes: false,
/// };
/// let outcome = sim::run(&scenario)?;
/// // 100 ms of work (plus 10 ns per item) on 4 workers.
/// assert!(outcome.makespan < Duration::from_micros(26_000));
/// assert!(outcome.jobs[0].output.iter().copied().eq(0..10_000));
/// # Ok::<(), sim::SimError>(())
/// ```
pub fn run(scenario: &Scenario) -> Result<SimOutcome, SimError> {
    let mut sim = Sim::new(scenario);
    sim.run()?;
    Ok(sim.outcome())
}

const EVENT_BUDGET: u64 = 200_000_000;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Submit(usize),
    Cancel(usize),
    Death(usize),
    Retire(usize),
    Join,
    /// The parent finished sending a chunk and may send the next.
    ParentFree,
    /// A chunk lands in a worker's ring.
    Arrive {
        worker: WorkerId,
        chunk: ChunkId,
        job: usize,
        start: u64,
        end: u64,
    },
    /// A worker finished waking up or its batch; `version` invalidates superseded events.
    Step {
        slot: usize,
        version: u64,
    },
}

#[derive(Debug)]
struct SimWorker {
    id: Option<WorkerId>,
    ring: VecDeque<RingChunk>,
    /// Retired: removed as soon as the scheduler says it holds nothing.
    retiring: bool,
    /// Pending yield requests: chunk and the first item to give back.
    flags: BTreeMap<ChunkId, Split>,
    state: WorkerState,
    version: u64,
}

#[derive(Debug)]
struct RingChunk {
    chunk: ChunkId,
    job: usize,
    /// `start..end`, shrunk from the end by yields.
    end: u64,
    /// The next item to run.
    next: u64,
    started: bool,
}

#[derive(Debug, Clone)]
enum WorkerState {
    /// Without work; from `parks_at` on it is parked and pays the wake-up.
    Idle {
        parks_at: u64,
    },
    Waking,
    /// Running items `first..first + n` of the front chunk from `start` (after per-chunk
    /// overhead); the Step event fires at the end of the batch.
    Running {
        start: u64,
        first: u64,
        n: u64,
        end: u64,
    },
}

struct SimJobState {
    id: Option<JobId>,
    reorder: Reorder<()>,
    input_len: u64,
    outcome: JobOutcome,
    finished: bool,
}

struct Sim<'a> {
    scenario: &'a Scenario,
    sched: Scheduler,
    now: u64,
    seq: u64,
    events: BinaryHeap<Reverse<(u64, u64, Event)>>,
    workers: Vec<SimWorker>,
    jobs: Vec<SimJobState>,
    durations: Vec<Vec<u64>>,
    /// When the parent finishes its current send.
    parent_free: u64,
    /// A `ParentFree` event is queued.
    parent_wakeup_pending: bool,
    chunks: u64,
    yields: u64,
    reclaims: u64,
    /// Chunks reclaimed while still on their way to the worker: dropped when they arrive.
    reclaimed_in_transit: std::collections::BTreeSet<ChunkId>,
    makespan: u64,
}

fn ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

impl<'a> Sim<'a> {
    fn new(scenario: &'a Scenario) -> Self {
        let mut sim = Sim {
            scenario,
            sched: Scheduler::new(scenario.config.clone()),
            now: 0,
            seq: 0,
            events: BinaryHeap::new(),
            workers: Vec::new(),
            jobs: Vec::new(),
            durations: Vec::new(),
            parent_free: 0,
            parent_wakeup_pending: false,
            chunks: 0,
            yields: 0,
            reclaims: 0,
            reclaimed_in_transit: std::collections::BTreeSet::new(),
            makespan: 0,
        };
        for _ in 0..scenario.workers {
            sim.join();
        }
        for (idx, job) in scenario.jobs.iter().enumerate() {
            let n = job.durations.len();
            let window = job
                .input
                .window
                .unwrap_or(NonZeroUsize::new(n.max(1)).unwrap());
            sim.durations
                .push(job.durations.iter().map(|d| ns(*d)).collect());
            sim.jobs.push(SimJobState {
                id: None,
                reorder: Reorder::new(job.input.order, window),
                input_len: n as u64,
                outcome: JobOutcome {
                    output: Vec::new(),
                    done: vec![0; n],
                    abandoned: vec![0; n],
                    runs: vec![0; n],
                    lost_started: vec![0; n],
                    max_outstanding: 0,
                    cancelled: false,
                },
                finished: false,
            });
            sim.push(ns(job.submit_at), Event::Submit(idx));
            if let Some(at) = job.cancel_at {
                sim.push(ns(at), Event::Cancel(idx));
            }
        }
        for (at, slot) in &scenario.deaths {
            sim.push(ns(*at), Event::Death(*slot));
        }
        for (at, slot) in &scenario.retirements {
            sim.push(ns(*at), Event::Retire(*slot));
        }
        sim
    }

    fn push(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.events.push(Reverse((at, self.seq, event)));
    }

    fn run(&mut self) -> Result<(), SimError> {
        let mut budget = EVENT_BUDGET;
        while !self.jobs.iter().all(|job| job.finished) {
            let Some(Reverse((at, _, event))) = self.events.pop() else {
                let detail = (self.jobs.iter())
                    .filter(|job| !job.finished)
                    .map(|job| format!("{:?}", job.id.and_then(|id| self.sched.job_progress(id))))
                    .collect::<Vec<_>>()
                    .join("; ");
                return Err(SimError::Deadlock {
                    at: Duration::from_nanos(self.now),
                    detail,
                });
            };
            budget = budget
                .checked_sub(1)
                .ok_or(SimError::Budget(Duration::from_nanos(at)))?;
            self.now = at;
            self.handle(event)?;
            self.pump()?;
            self.check_counters()?;
        }
        Ok(())
    }

    /// Every admitted item is in exactly one state, and the scheduler agrees with the
    /// reorder buffer on how many were added.
    fn check_counters(&self) -> Result<(), SimError> {
        for state in &self.jobs {
            let Some(progress) = state.id.and_then(|id| self.sched.job_progress(id)) else {
                continue;
            };
            let sum = progress.queued
                + progress.in_flight
                + progress.done
                + progress.awaiting_decision
                + progress.abandoned;
            if sum != progress.added || progress.added != state.reorder.admitted() {
                return Err(violation(
                    self.now,
                    format!("{progress:?} vs {} admitted", state.reorder.admitted()),
                ));
            }
        }
        Ok(())
    }

    fn handle(&mut self, event: Event) -> Result<(), SimError> {
        match event {
            Event::Submit(idx) => {
                let input = &self.scenario.jobs[idx].input;
                let len = if input.known_len {
                    InputLen::Known(self.jobs[idx].input_len)
                } else {
                    InputLen::Unknown
                };
                self.jobs[idx].id = Some(self.sched.submit(self.scenario.jobs[idx].task, len));
                if self.jobs[idx].input_len == 0 && !input.known_len {
                    let id = self.jobs[idx].id.unwrap();
                    self.sched
                        .close_input(id)
                        .map_err(|e| violation(self.now, e.to_string()))?;
                }
            }
            Event::Join => self.join(),
            Event::ParentFree => self.parent_wakeup_pending = false,
            Event::Death(slot) => self.death(slot)?,
            Event::Cancel(idx) => {
                let state = &mut self.jobs[idx];
                if let (Some(id), false) = (state.id, state.finished) {
                    self.sched
                        .remove_job(id)
                        .map_err(|e| violation(self.now, e.to_string()))?;
                    state.outcome.cancelled = true;
                    state.finished = true;
                }
            }
            Event::Retire(slot) => {
                if let Some(worker) = self.workers.get_mut(slot)
                    && let Some(id) = worker.id
                    && !worker.retiring
                {
                    worker.retiring = true;
                    (self.sched.retire_worker(id))
                        .map_err(|e| violation(self.now, e.to_string()))?;
                    if matches!(worker.state, WorkerState::Idle { .. }) {
                        self.retire_if_empty(slot)?;
                    }
                }
            }
            Event::Arrive {
                worker,
                chunk,
                job,
                start,
                end,
            } => {
                if self.reclaimed_in_transit.remove(&chunk) {
                    return Ok(()); // Taken back on its way: the worker skips it.
                }
                let Some(sim_worker) = self.workers.iter_mut().find(|w| w.id == Some(worker))
                else {
                    return Ok(()); // It died meanwhile; the scheduler requeued the chunk.
                };
                sim_worker.ring.push_back(RingChunk {
                    chunk,
                    job,
                    end,
                    next: start,
                    started: false,
                });
                if let WorkerState::Idle { parks_at } = sim_worker.state {
                    let parked = self.now >= parks_at;
                    let wake = if parked {
                        ns(self.scenario.model.wake_up)
                    } else {
                        0
                    };
                    sim_worker.state = WorkerState::Waking;
                    sim_worker.version += 1;
                    let event = Event::Step {
                        slot: worker.slot(),
                        version: sim_worker.version,
                    };
                    self.push(self.now + wake, event);
                }
            }
            Event::Step { slot, version } => {
                if self.workers[slot].version != version {
                    return Ok(());
                }
                if let WorkerState::Running {
                    start, first, n, ..
                } = self.workers[slot].state
                {
                    self.finish_batch(slot, start, first, n)?;
                }
                self.worker_free(slot)?;
            }
        }
        Ok(())
    }

    fn join(&mut self) {
        let id = self.sched.add_worker();
        let worker = SimWorker {
            id: Some(id),
            ring: VecDeque::new(),
            flags: BTreeMap::new(),
            retiring: false,
            // Freshly started workers are parked until their first chunk.
            state: WorkerState::Idle { parks_at: 0 },
            version: 0,
        };
        if id.slot() == self.workers.len() {
            self.workers.push(worker);
        } else {
            let version = self.workers[id.slot()].version + 1;
            self.workers[id.slot()] = SimWorker { version, ..worker };
        }
    }

    /// Item boundaries of a batch: the time item `first + k` would start, for `k` in `0..=n`.
    fn boundary(&self, job: usize, start: u64, first: u64, k: u64) -> u64 {
        let per_item = ns(self.scenario.model.per_item);
        let durations = &self.durations[job][first as usize..(first + k) as usize];
        start + durations.iter().map(|d| d + per_item).sum::<u64>()
    }

    fn finish_batch(
        &mut self,
        slot: usize,
        start: u64,
        first: u64,
        n: u64,
    ) -> Result<(), SimError> {
        let job = self.workers[slot].ring[0].job;
        let busy = self.boundary(job, start, first, n) - start;
        self.report_done(slot, n, busy)
    }

    /// Reports the next `n` items of the front chunk of `slot` as done.
    fn report_done(&mut self, slot: usize, n: u64, busy: u64) -> Result<(), SimError> {
        let worker = &mut self.workers[slot];
        let id = worker.id.expect("live");
        let front = &mut worker.ring[0];
        let (chunk, job, first) = (front.chunk, front.job, front.next);
        front.next += n;
        let finished = front.next == front.end;
        if finished {
            worker.ring.pop_front();
            worker.flags.remove(&chunk);
        }
        worker.state = WorkerState::Waking; // Transient: `worker_free` follows.
        let status = (self
            .sched
            .on_items_done(id, chunk, n, Duration::from_nanos(busy)))
        .map_err(|e| violation(self.now, e.to_string()))?;
        if (status == ChunkStatus::Finished) != finished {
            return Err(violation(
                self.now,
                format!("{chunk:?}: scheduler says {status:?}"),
            ));
        }
        for index in first..first + n {
            let state = &mut self.jobs[job];
            state.outcome.runs[index as usize] += 1;
            state.outcome.done[index as usize] += 1;
            if !state.outcome.cancelled {
                self.release(job, index)?;
            }
        }
        Ok(())
    }

    fn release(&mut self, job: usize, index: u64) -> Result<(), SimError> {
        let state = &mut self.jobs[job];
        if let Err(e) = state.reorder.push(index, ()) {
            return Err(violation(self.now, format!("job {job}: {e}")));
        }
        while let Some((index, ())) = state.reorder.pop() {
            state.outcome.output.push(index);
        }
        self.makespan = self.now;
        self.check_finished(job);
        Ok(())
    }

    /// Removes a retired worker once the scheduler says it holds nothing, and replaces it.
    fn retire_if_empty(&mut self, slot: usize) -> Result<(), SimError> {
        let Some(id) = self.workers[slot].id else {
            return Ok(());
        };
        let holds = (self.sched.in_flight(id)).map_err(|e| violation(self.now, e.to_string()))?;
        if !self.workers[slot].retiring || !holds.is_empty() {
            return Ok(());
        }
        let lost =
            (self.sched.remove_worker(id)).map_err(|e| violation(self.now, e.to_string()))?;
        if lost != crate::Lost::default() {
            return Err(violation(self.now, format!("drained {id:?} lost {lost:?}")));
        }
        let worker = &mut self.workers[slot];
        worker.id = None;
        worker.retiring = false;
        worker.version += 1;
        let at = self.now + ns(self.scenario.respawn_after);
        self.push(at, Event::Join);
        Ok(())
    }

    fn check_finished(&mut self, job: usize) {
        let state = &mut self.jobs[job];
        if state.outcome.cancelled {
            return;
        }
        let Some(id) = state.id else { return };
        if state.reorder.popped() == state.input_len
            && self.sched.job_progress(id).is_some_and(|p| p.is_complete())
        {
            state.finished = true;
        }
    }

    /// The worker in `slot` is between items: honour yield flags, then start the next batch.
    fn worker_free(&mut self, slot: usize) -> Result<(), SimError> {
        let worker = &mut self.workers[slot];
        let id = worker.id.expect("live");
        let mut yields = Vec::new();
        for ring_chunk in worker.ring.iter_mut() {
            if let Some(split) = worker.flags.remove(&ring_chunk.chunk) {
                let first_returned = split.first_returned(ring_chunk.next, ring_chunk.end);
                yields.push((
                    ring_chunk.chunk,
                    first_returned,
                    first_returned == ring_chunk.next,
                ));
                ring_chunk.end = first_returned;
            }
        }
        worker
            .ring
            .retain(|ring_chunk| ring_chunk.next < ring_chunk.end);
        for (chunk, first_returned, finished) in yields {
            let status = (self.sched.on_yielded(id, chunk, first_returned))
                .map_err(|e| violation(self.now, e.to_string()))?;
            if (status == ChunkStatus::Finished) != finished {
                return Err(violation(
                    self.now,
                    format!("{chunk:?} yielded but {status:?}"),
                ));
            }
        }
        let model = &self.scenario.model;
        let worker = &mut self.workers[slot];
        let Some(front) = worker.ring.front_mut() else {
            worker.state = WorkerState::Idle {
                parks_at: self.now + ns(model.spin),
            };
            return self.retire_if_empty(slot);
        };
        let mut start = self.now;
        if !front.started {
            front.started = true;
            start += ns(model.worker_per_chunk);
        }
        let (job, first, end) = (front.job, front.next, front.end);
        let per_item = ns(model.per_item);
        let report_every = ns(model.report_every);
        let mut busy = 0;
        let mut n = 0;
        while first + n < end && (n == 0 || busy < report_every) {
            busy += self.durations[job][(first + n) as usize] + per_item;
            n += 1;
        }
        worker.state = WorkerState::Running {
            start,
            first,
            n,
            end: start + busy,
        };
        worker.version += 1;
        let version = worker.version;
        self.push(start + busy, Event::Step { slot, version });
        Ok(())
    }

    fn death(&mut self, slot: usize) -> Result<(), SimError> {
        let Some(id) = self.workers.get(slot).and_then(|w| w.id) else {
            return Ok(());
        };
        // What the worker really did in its current batch: `ran` finished, then `in_progress`.
        let mut in_progress = None;
        let mut ran = None;
        if let WorkerState::Running {
            start, first, n, ..
        } = self.workers[slot].state
        {
            let (job, chunk) = (
                self.workers[slot].ring[0].job,
                self.workers[slot].ring[0].chunk,
            );
            let finished = (0..=n)
                .take_while(|k| self.boundary(job, start, first, *k) <= self.now)
                .last()
                .unwrap_or(0);
            let job_id = self.jobs[job].id.expect("submitted");
            if self.now >= start && finished < n {
                in_progress = Some(ItemRef {
                    job: job_id,
                    index: first + finished,
                });
                self.jobs[job].outcome.runs[(first + finished) as usize] += 1;
            }
            if finished > 0 && self.scenario.batched_outcomes && in_progress.is_some() {
                // The outcomes are lost with the worker; the progress word names the item.
                for index in first..first + finished {
                    self.jobs[job].outcome.runs[index as usize] += 1;
                }
                ran = Some(Span {
                    job: job_id,
                    items: first..first + finished,
                });
            } else if finished > 0 {
                let busy = self.boundary(job, start, first, finished) - start;
                self.report_done(slot, finished, busy)?;
            }
            if let (true, Some(item)) = (self.scenario.batched_outcomes, in_progress) {
                (self.sched.on_started(id, chunk, item.index))
                    .map_err(|e| violation(self.now, e.to_string()))?;
            }
        }
        let worker = &mut self.workers[slot];
        worker.id = None;
        worker.version += 1;
        worker.ring.clear();
        worker.flags.clear();
        let lost =
            (self.sched.remove_worker(id)).map_err(|e| violation(self.now, e.to_string()))?;
        // The scheduler says nothing about items of removed (cancelled) jobs.
        let live = |job: JobId| {
            self.jobs
                .iter()
                .any(|s| s.id == Some(job) && !s.outcome.cancelled)
        };
        let in_progress = in_progress.filter(|item| live(item.job));
        let ran = ran.filter(|span| live(span.job));
        if in_progress.is_some() && lost.started != in_progress {
            return Err(violation(
                self.now,
                format!(
                    "{in_progress:?} was running, scheduler says {:?}",
                    lost.started
                ),
            ));
        }
        if lost.ran.first() != ran.as_ref() || lost.ran.len() > 1 {
            return Err(violation(
                self.now,
                format!("{ran:?} ran unreported, scheduler says {:?}", lost.ran),
            ));
        }
        let ran_here: Vec<(JobId, u64)> = (ran.iter())
            .flat_map(|ran| ran.items.clone().map(|index| (ran.job, index)))
            .chain(in_progress.map(|item| (item.job, item.index)))
            .collect();
        for span in &lost.requeued {
            if let Some((job, index)) = (ran_here.iter())
                .find(|(job, index)| *job == span.job && span.items.contains(index))
            {
                return Err(violation(
                    self.now,
                    format!("{job:?} item {index} ran but was requeued: {lost:?}"),
                ));
            }
        }
        let spans = lost.ran.iter().cloned();
        let started = lost.started.map(|item| Span {
            job: item.job,
            items: item.index..item.index + 1,
        });
        for span in spans.chain(started) {
            let job = self.job_index(span.job);
            for index in span.items {
                let item = ItemRef {
                    job: span.job,
                    index,
                };
                self.jobs[job].outcome.lost_started[index as usize] += 1;
                if self.scenario.retry_started {
                    (self.sched.requeue(item)).map_err(|e| violation(self.now, e.to_string()))?;
                } else {
                    (self.sched.abandon(item)).map_err(|e| violation(self.now, e.to_string()))?;
                    self.jobs[job].outcome.abandoned[index as usize] += 1;
                    self.release(job, index)?;
                }
            }
        }
        let at = self.now + ns(self.scenario.respawn_after);
        self.push(at, Event::Join);
        Ok(())
    }

    fn job_index(&self, id: JobId) -> usize {
        (self.jobs.iter().position(|job| job.id == Some(id))).expect("job of this simulation")
    }

    /// The parent's reaction to an event: admit input, send chunks, propose tail splits.
    fn pump(&mut self) -> Result<(), SimError> {
        for job in 0..self.jobs.len() {
            let state = &mut self.jobs[job];
            let Some(id) = state.id else { continue };
            if state.outcome.cancelled {
                continue;
            }
            let wanted = state.input_len - state.reorder.admitted();
            if wanted > 0 {
                let range = state.reorder.admit(wanted);
                if !range.is_empty() {
                    (self.sched.add_items(id, range.end - range.start))
                        .map_err(|e| violation(self.now, e.to_string()))?;
                    if range.end == state.input_len && !self.scenario.jobs[job].input.known_len {
                        self.sched
                            .close_input(id)
                            .map_err(|e| violation(self.now, e.to_string()))?;
                    }
                }
            }
            let state = &mut self.jobs[job];
            state.outcome.max_outstanding = state
                .outcome
                .max_outstanding
                .max(state.reorder.outstanding());
            self.check_finished(job);
        }
        // The parent is serial: it decides and sends one chunk at a time, so a decision is
        // made only when the parent is free, with everything reported until then.
        // A reclaim queues items again: hand them out in the same reaction.
        loop {
            self.send_chunks()?;
            if !self.propose_splits()? {
                return Ok(());
            }
        }
    }

    /// The parent sends chunks while it is free.
    fn send_chunks(&mut self) -> Result<(), SimError> {
        while self.parent_free <= self.now {
            let Some(assignment) = self.sched.next_assignment() else {
                break;
            };
            let job = self.job_index(assignment.span.job);
            if self.jobs[job].outcome.cancelled {
                return Err(violation(
                    self.now,
                    format!("{assignment:?} of a cancelled job"),
                ));
            }
            let admitted = self.jobs[job].reorder.admitted();
            if assignment.span.items.is_empty() || assignment.span.items.end > admitted {
                return Err(violation(
                    self.now,
                    format!("{assignment:?} beyond admitted {admitted}"),
                ));
            }
            let send = self.now + ns(self.scenario.model.parent_per_chunk);
            self.parent_free = send;
            self.chunks += 1;
            let event = Event::Arrive {
                worker: assignment.worker,
                chunk: assignment.chunk,
                job,
                start: assignment.span.items.start,
                end: assignment.span.items.end,
            };
            self.push(send, event);
        }
        if self.parent_free > self.now && !self.parent_wakeup_pending {
            self.parent_wakeup_pending = true;
            self.push(self.parent_free, Event::ParentFree);
        }
        Ok(())
    }

    /// Proposes tail splits; returns whether a queued chunk was reclaimed (its items are
    /// queued again).
    fn propose_splits(&mut self) -> Result<bool, SimError> {
        let mut reclaimed = false;
        while let Some(request) = self.sched.yield_candidate() {
            self.yields += 1;
            let mut split = request.split;
            if split == Split::All && self.scenario.config.reclaim_queued {
                if self.try_reclaim(request.worker, request.chunk)? {
                    reclaimed = true;
                    continue;
                }
                // The worker claimed it first: it is running, so split it like one.
                split = Split::Half;
            }
            let worker = &mut self.workers[request.worker.slot()];
            worker.flags.insert(request.chunk, split);
            // A running batch stops at the first item boundary after now.
            if let WorkerState::Running {
                start,
                first,
                n,
                end,
            } = worker.state
            {
                let job = worker.ring[0].job;
                let _ = worker;
                let stop = (1..=n)
                    .find(|k| self.boundary(job, start, first, *k) >= self.now)
                    .unwrap_or(n);
                if stop < n {
                    let new_end = self.boundary(job, start, first, stop);
                    debug_assert!(new_end <= end);
                    let worker = &mut self.workers[request.worker.slot()];
                    worker.state = WorkerState::Running {
                        start,
                        first,
                        n: stop,
                        end: new_end,
                    };
                    worker.version += 1;
                    let event = Event::Step {
                        slot: request.worker.slot(),
                        version: worker.version,
                    };
                    self.push(new_end, event);
                }
            }
        }
        Ok(reclaimed)
    }

    /// The facade's compare-and-swap on the worker's claim word, modelled: a chunk the worker
    /// has not started (queued in its ring, or still on its way) is taken back and requeued;
    /// one it started stays.
    fn try_reclaim(&mut self, worker: WorkerId, chunk: ChunkId) -> Result<bool, SimError> {
        let sim_worker = &mut self.workers[worker.slot()];
        match sim_worker.ring.iter().position(|c| c.chunk == chunk) {
            Some(pos) if sim_worker.ring[pos].started => return Ok(false),
            Some(pos) => {
                sim_worker.ring.remove(pos);
            }
            None => {
                self.reclaimed_in_transit.insert(chunk);
            }
        }
        (self.sched.on_reclaimed(worker, chunk)).map_err(|e| violation(self.now, e.to_string()))?;
        self.reclaims += 1;
        Ok(true)
    }

    fn outcome(self) -> SimOutcome {
        SimOutcome {
            makespan: Duration::from_nanos(self.makespan),
            chunks: self.chunks,
            yields: self.yields,
            reclaims: self.reclaims,
            jobs: self.jobs.into_iter().map(|job| job.outcome).collect(),
        }
    }
}

fn violation(now: u64, detail: impl Into<String>) -> SimError {
    SimError::Violation {
        at: Duration::from_nanos(now),
        detail: detail.into(),
    }
}
