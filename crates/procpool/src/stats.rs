//! [`PoolStats`]: counters a running pool reports through `Pool::stats`.

use std::time::Duration;

/// A snapshot of a pool's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// The live workers, by index.
    pub workers: Vec<WorkerStats>,
    /// Items finished (with any outcome) by all workers, past and present.
    pub tasks_done: u64,
    /// Items waiting to be handed to a worker.
    pub queued: u64,
    /// Items handed to workers and not finished.
    pub in_flight: u64,
    /// Maps not finished, plus one per task whose submitted calls are not all finished.
    pub jobs: usize,
    /// Workers launched and still in their handshake, not yet in `workers`: right after
    /// [`PoolBuilder::build`](crate::PoolBuilder::build) every worker but the first (`build`
    /// returns once one worker is ready; the others join as soon as they are), and
    /// replacements being started. Work queued meanwhile goes to the workers that are ready.
    pub starting: usize,
    /// Workers started to replace one that ended (crash, timeout, recycling).
    pub restarts: u64,
    /// Workers that died, were killed or were disconnected for a protocol violation.
    pub deaths: u64,
    /// Processes that tried to attach through [`Pool::listen`](crate::Pool::listen) and were
    /// refused (handshake not completed in time, wrong program or protocol, another user).
    pub attach_refusals: u64,
    /// Why the last of those was refused, naming its pid (also logged as a `tracing` warning).
    pub last_attach_refusal: Option<String>,
}

/// Counters of one live worker.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerStats {
    /// The worker's index in the pool (unique over the pool's life; replacements get new ones).
    pub index: u32,
    /// Its process id.
    pub pid: u32,
    /// Items it finished.
    pub tasks_done: u64,
    /// Time it spent running items, as seen from the parent.
    pub busy: Duration,
    /// Time since it was started.
    pub uptime: Duration,
}
