//! Chunk sizing: how many items go into the next chunk of a job.
//!
//! Sizing is a pure function of a [`SizeInput`], so it is tested with plain data
//! (see `chunk/tests.rs`). The scheduler fills the input from its per-task cost
//! estimate ([`CostEstimate`]) and the job's remaining length.

use std::num::{NonZeroU32, NonZeroU64};
use std::time::Duration;

/// How a job's items are grouped into chunks.
///
/// # Examples
///
/// ```
/// # use std::num::{NonZeroU64, NonZeroUsize};
/// # use std::time::Duration;
/// use procpool_sched::{ChunkPolicy, SizeInput};
///
/// let policy = ChunkPolicy::default(); // Adaptive
/// let size = policy.chunk_size(&SizeInput {
///     per_item: Some(Duration::from_nanos(60)),
///     remaining: 1_000_000,
///     job_len: Some(1_000_000),
///     n_workers: NonZeroUsize::new(4).unwrap(),
///     unknown_dispatches: 0,
/// });
/// // 1,600 µs target / 60 ns per item.
/// assert_eq!(size.get(), 26_666);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub enum ChunkPolicy {
    /// Always this many items (fewer only when fewer are available).
    Fixed(NonZeroU64),
    /// `multiprocessing.Pool.map`'s formula `ceil(len / (4 * workers))` for a known length,
    /// and 1 (ProcessPoolExecutor's default) for an input of unknown length.
    /// Kept as a comparison point.
    PythonLike,
    /// Sized from an online estimate of the per-item cost so that a chunk takes about
    /// [`AdaptiveConfig::target_chunk`], shrinking toward the end of a known-length input.
    Adaptive(AdaptiveConfig),
}

impl Default for ChunkPolicy {
    fn default() -> Self {
        ChunkPolicy::Adaptive(AdaptiveConfig::default())
    }
}

/// Tuning of [`ChunkPolicy::Adaptive`]. The defaults assume a dispatch overhead of a few
/// microseconds per chunk and a wake-up of about 50 µs for a parked worker.
#[derive(Clone, Debug, PartialEq)]
pub struct AdaptiveConfig {
    /// The duration a chunk aims for once the per-item cost is known: long enough to make the
    /// per-chunk overhead small, short enough to balance well.
    ///
    /// The overhead is the parent's more than the worker's: with every core busy running
    /// workers, a reader thread settling a chunk's outcome frame and sending the next chunk,
    /// and the map's consumer woken for it, take their CPU time from a worker. Measured on a
    /// 2-vCPU VM: ~9 µs of parent CPU per chunk, and the workers preempted about twice as
    /// often with 300 µs chunks as with 800 µs ones (`docs/bench/map-data-path.md`,
    /// session 5), and 26–35% less often again with 1,600 µs ones (session 6, with the
    /// worker's outcome flush at 2 ms). 1,600 µs keeps a chunk under a worker's 2 ms outcome
    /// flush (one frame per chunk). It is above `prefetch_horizon`: where chunks cannot be
    /// reclaimed, a worker's second chunk is sent once less than that is left of its first
    /// (reported progress), which in the simulation does as well as a longer horizon
    /// (`docs/bench/scheduler-simulation.md`, session 6).
    pub target_chunk: Duration,
    /// The shortest chunk the guided tail shrinks to: below this the per-chunk overhead would
    /// dominate. Values above `target_chunk` act as `target_chunk`.
    pub min_chunk: Duration,
    /// Guided self-scheduling factor `k`: a chunk holds at most `remaining / (k * workers)`
    /// items, so the last chunks of a known-length input are small.
    pub guided_factor: NonZeroU32,
    /// Parent time to send one chunk. The parent sends serially, so with many workers chunks
    /// are lengthened until sending one to every worker takes at most a quarter of
    /// `target_chunk` (and the whole of `min_chunk`): `target >= 4 * workers * dispatch_cost`,
    /// `min >= workers * dispatch_cost`.
    pub dispatch_cost: Duration,
    /// Size of the first chunk of a task whose cost is unknown.
    pub probe_items: NonZeroU64,
    /// While the cost is still unknown, each further chunk doubles in size up to this.
    pub probe_max_items: NonZeroU64,
    /// A worker gets a further chunk beyond its first in-flight one (double buffering) only
    /// while the estimated unfinished work already in flight to it is below this. Long items
    /// gain nothing from prefetching and would strand queued work behind them.
    pub prefetch_horizon: Duration,
    /// Memory of the cost estimate, in reports: each report of finished items weighs
    /// `1 / smoothing` against the decayed history.
    pub smoothing: NonZeroU32,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        AdaptiveConfig {
            target_chunk: Duration::from_micros(1600),
            min_chunk: Duration::from_micros(20),
            guided_factor: NonZeroU32::new(2).unwrap(),
            dispatch_cost: Duration::from_micros(2),
            probe_items: NonZeroU64::new(1).unwrap(),
            probe_max_items: NonZeroU64::new(1 << 16).unwrap(),
            prefetch_horizon: Duration::from_millis(1),
            smoothing: NonZeroU32::new(4).unwrap(),
        }
    }
}

/// What a [`ChunkPolicy`] knows when it sizes the next chunk of a job.
#[derive(Clone, Debug, PartialEq)]
pub struct SizeInput {
    /// Estimated cost of one item of this task type; `None` until some item finished.
    pub per_item: Option<Duration>,
    /// Items of the job not handed out yet: for a known length, including those the facade
    /// has not pulled from its input yet; otherwise only those already added.
    pub remaining: u64,
    /// The job's total length, when known.
    pub job_len: Option<u64>,
    /// Live workers in the pool.
    pub n_workers: std::num::NonZeroUsize,
    /// Chunks of this task type dispatched so far while its cost was unknown.
    pub unknown_dispatches: u32,
}

impl ChunkPolicy {
    /// The size of the next chunk. The caller takes fewer if fewer items are available.
    pub fn chunk_size(&self, input: &SizeInput) -> NonZeroU64 {
        let n_workers = input.n_workers.get() as u64;
        let size = match self {
            ChunkPolicy::Fixed(n) => n.get(),
            ChunkPolicy::PythonLike => match input.job_len {
                Some(len) => len.div_ceil(4 * n_workers),
                None => 1,
            },
            ChunkPolicy::Adaptive(config) => adaptive_size(config, input, n_workers),
        };
        NonZeroU64::new(size).unwrap_or(NonZeroU64::MIN)
    }
}

fn adaptive_size(config: &AdaptiveConfig, input: &SizeInput, n_workers: u64) -> u64 {
    let guided = input
        .remaining
        .div_ceil(u64::from(config.guided_factor.get()) * n_workers);
    let Some(per_item) = input.per_item else {
        let doubling = 1u64 << input.unknown_dispatches.min(63);
        let probe = config
            .probe_items
            .get()
            .saturating_mul(doubling)
            .min(config.probe_max_items.get().max(config.probe_items.get()));
        return probe.min(guided).max(1);
    };
    let per_item_ns = per_item.as_nanos().max(1);
    let round_ns = config.dispatch_cost.as_nanos() * u128::from(n_workers);
    let target_ns = config.target_chunk.as_nanos().max(4 * round_ns);
    let min_ns = config.min_chunk.as_nanos().max(round_ns);
    let target_items = (target_ns / per_item_ns).max(1);
    let min_items = (min_ns / per_item_ns).clamp(1, target_items);
    let size = u128::from(guided).clamp(min_items, target_items);
    u64::try_from(size).unwrap_or(u64::MAX)
}

/// Online estimate of the per-item cost of one task type: an exponentially weighted ratio of
/// reported busy time to reported items, so large batches weigh in by their size but old
/// history fades.
#[derive(Clone, Debug, Default)]
pub(crate) struct CostEstimate {
    /// Decayed sum of reported busy nanoseconds.
    busy_ns: f64,
    /// Decayed sum of reported items; 0 until the first report.
    items: f64,
    /// Chunks dispatched while no report had arrived yet (drives probe doubling).
    pub(crate) unknown_dispatches: u32,
}

impl CostEstimate {
    pub(crate) fn per_item(&self) -> Option<Duration> {
        if self.items > 0.0 {
            Some(Duration::from_nanos((self.busy_ns / self.items) as u64))
        } else {
            None
        }
    }

    pub(crate) fn per_item_ns(&self) -> Option<f64> {
        (self.items > 0.0).then(|| self.busy_ns / self.items)
    }

    pub(crate) fn observe(&mut self, n_items: u64, busy: Duration, smoothing: NonZeroU32) {
        if n_items == 0 {
            return;
        }
        let keep = if self.items > 0.0 {
            1.0 - 1.0 / f64::from(smoothing.get())
        } else {
            0.0
        };
        self.busy_ns = self.busy_ns * keep + busy.as_nanos() as f64;
        self.items = self.items * keep + n_items as f64;
    }
}

#[cfg(test)]
mod tests;
