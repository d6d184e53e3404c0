//! Lazy maps: [`Map`] (input order) and [`MapUnordered`] (completion order).
//!
//! A map is one job. Its iterator pulls input on the consumer's thread, in batches, keeping
//! at most `window` items pulled but not yet yielded; each batch is one call into the pool
//! core, which chunks and dispatches it. Outcomes arrive in a [`MapState`] filled by the
//! reader threads, and `next` waits on it.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use procpool_sched::{InputLen, JobId};
use procpool_worker::Task;

use crate::core::Shared;
use crate::error::TaskError;
use crate::job::{MapJob, MapState, Segment, TaskOptions};
use crate::wait::Timeout;

/// Default for how many items a map pulls ahead of what it yielded.
pub(crate) const DEFAULT_WINDOW: usize = 65_536;

/// Iterator from [`Pool::map`](crate::Pool::map): one `Result` per input item, in input order.
///
/// Options can be set before the first `next` call.
#[must_use = "maps are lazy: nothing runs until the iterator is consumed"]
pub struct Map<'p, T: Task, I> {
    run: MapRun<'p, T, I>,
}

/// Iterator from [`Pool::map_unordered`](crate::Pool::map_unordered): `(input index, outcome)`
/// in the order items finish.
#[must_use = "maps are lazy: nothing runs until the iterator is consumed"]
pub struct MapUnordered<'p, T: Task, I> {
    run: MapRun<'p, T, I>,
}

/// A map job registered with the pool: its id, its items and where its outcomes arrive.
struct StartedMap<T: Task> {
    id: JobId,
    job: Arc<MapJob<T>>,
    state: Arc<MapState<T::Output>>,
}

struct MapRun<'p, T: Task, I> {
    shared: Arc<Shared>,
    /// Ties the iterator to the `&Pool` it came from (the pool outlives it).
    _pool: std::marker::PhantomData<&'p ()>,
    input: I,
    ordered: bool,
    options: TaskOptions,
    window: usize,
    /// Fixed chunk size for this map, instead of the pool's policy.
    chunksize: Option<std::num::NonZeroU64>,
    /// The job, once the first `next` started it.
    job: Option<StartedMap<T>>,
    /// Outcomes taken from the job's state, not yet yielded (runs of consecutive items).
    ready: std::collections::VecDeque<Segment<T::Output>>,
    /// The successes the fast path of `next_outcome` may yield before the slow path must run
    /// again (to pull input, or to end), and the index after the last of them. Its items
    /// are counted in `yielded` only when the slow path runs (`sync_fast`), so the fast path
    /// is one pointer bump.
    fast: std::vec::IntoIter<T::Output>,
    fast_end: u64,
    /// `fast.len()` when `yielded` was last brought up to date.
    fast_counted: usize,
    /// The rest of the run of successes being yielded (moved out of the front of `ready`),
    /// beyond what `fast` may yield, and the index of its next item.
    run: std::vec::IntoIter<T::Output>,
    run_next: u64,
    /// Nothing more will be pulled from `input`.
    input_done: bool,
    /// Nothing more will be yielded.
    finished: bool,
    pulled: u64,
    /// Items yielded, except those the fast path took since the last `sync_fast`.
    yielded: u64,
    #[cfg(feature = "progress")]
    progress: Option<indicatif::ProgressBar>,
}

impl<T: Task, I> MapRun<'_, T, I> {
    /// Items yielded so far.
    fn yielded_now(&self) -> u64 {
        self.yielded + (self.fast_counted - self.fast.len()) as u64
    }
}

impl<'p, T: Task, I: Iterator<Item = T::Args>> MapRun<'p, T, I> {
    fn new(shared: &Arc<Shared>, input: I, options: TaskOptions, ordered: bool) -> Self {
        MapRun {
            shared: Arc::clone(shared),
            _pool: std::marker::PhantomData,
            input,
            ordered,
            options,
            window: DEFAULT_WINDOW,
            chunksize: None,
            job: None,
            ready: std::collections::VecDeque::new(),
            fast: Vec::new().into_iter(),
            fast_end: 0,
            fast_counted: 0,
            run: Vec::new().into_iter(),
            run_next: 0,
            input_done: false,
            finished: false,
            pulled: 0,
            yielded: 0,
            #[cfg(feature = "progress")]
            progress: None,
        }
    }

    /// The next outcome, waiting at most `timeout` (`None`: as long as it takes).
    #[allow(clippy::type_complexity)]
    #[inline]
    fn next_outcome(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<Option<(u64, Result<T::Output, TaskError>)>, Timeout> {
        // Fast path: the next success of the budgeted part of the current run (see
        // `grant_fast`). The index is computed only if the caller uses it (`map_unordered`).
        let index = self.fast_end - self.fast.len() as u64;
        if let Some(value) = self.fast.next() {
            return Ok(Some((index, Ok(value))));
        }
        self.next_outcome_slow(timeout)
    }

    /// Counts the items the fast path took in `yielded`.
    fn sync_fast(&mut self) {
        self.yielded = self.yielded_now();
        self.fast_counted = self.fast.len();
    }

    /// Moves the items of `run` the fast path may yield now into `fast`: all of them once the
    /// input is exhausted, otherwise only while more than half the window stays outstanding
    /// (below that, `refill` is due). `fast` must be empty.
    fn grant_fast(&mut self) {
        debug_assert_eq!(self.fast.len(), 0);
        self.sync_fast();
        if self.finished || self.run.len() == 0 {
            return;
        }
        #[cfg(feature = "progress")]
        if self.progress.is_some() {
            // The slow path counts every item on the bar.
            return;
        }
        let budget = if self.input_done {
            usize::MAX
        } else {
            let outstanding = self.pulled - self.yielded;
            usize::try_from(outstanding.saturating_sub(self.window as u64 / 2))
                .unwrap_or(usize::MAX)
        };
        if budget == 0 {
            return;
        }
        let first = self.run_next;
        if budget >= self.run.len() {
            self.fast = std::mem::replace(&mut self.run, Vec::new().into_iter());
        } else {
            // Rare: once per refill at most (the budget is then half the window).
            self.fast = self
                .run
                .by_ref()
                .take(budget)
                .collect::<Vec<_>>()
                .into_iter();
        }
        self.fast_counted = self.fast.len();
        self.fast_end = first + self.fast.len() as u64;
        self.run_next = self.fast_end;
    }

    /// [`Self::next_outcome`] when the fast path does not apply: starts the job, pulls
    /// input, waits for outcomes.
    #[allow(clippy::type_complexity)]
    #[inline(never)]
    fn next_outcome_slow(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<Option<(u64, Result<T::Output, TaskError>)>, Timeout> {
        self.sync_fast();
        if self.finished {
            return Ok(None);
        }
        if self.job.is_none() {
            let state = Arc::new(MapState::new(self.ordered));
            let job = Arc::new(MapJob::<T>::new(Arc::clone(&state), self.options));
            let len = match self.input.size_hint() {
                (lower, Some(upper)) if lower == upper => InputLen::Known(lower as u64),
                _ => InputLen::Unknown,
            };
            match self.shared.start_map(Arc::clone(&job), len, self.chunksize) {
                Ok(id) => self.job = Some(StartedMap { id, job, state }),
                Err(err) => {
                    self.finished = true;
                    return Ok(Some((0, Err(err))));
                }
            }
        }
        self.refill();
        if self.yielded == self.pulled && self.input_done {
            self.finish();
            return Ok(None);
        }
        let outcome = loop {
            if let Some(value) = self.run.next() {
                let index = self.run_next;
                self.run_next += 1;
                break (index, Ok(value));
            }
            if let Some(segment) = self.ready.front_mut() {
                if let Some((first, values)) = segment.take_values() {
                    self.ready.pop_front();
                    self.run = values;
                    self.run_next = first;
                    continue;
                }
                match segment.pop() {
                    Some((index, outcome)) => break (index, outcome.map_err(|err| *err)),
                    None => {
                        self.ready.pop_front();
                        continue;
                    }
                }
            }
            let started = self.job.as_ref().expect("started above");
            if !started.state.take_ready(&mut self.ready, timeout) {
                return Err(Timeout);
            }
        };
        self.yielded += 1;
        #[cfg(feature = "progress")]
        if let Some(bar) = &self.progress {
            bar.inc(1);
        }
        self.grant_fast();
        Ok(Some(outcome))
    }

    /// Pulls more input if less than half the window is outstanding.
    fn refill(&mut self) {
        let outstanding = self.pulled - self.yielded;
        let window = self.window as u64;
        if self.input_done || (self.pulled > 0 && outstanding > window / 2) {
            return;
        }
        let room = usize::try_from(window - outstanding).unwrap_or(usize::MAX);
        let StartedMap { id, job, .. } = self.job.as_ref().expect("started before refill");
        let mut batch = job.take_spare();
        batch.extend(self.input.by_ref().take(room));
        let exhausted = batch.len() < room;
        let n = batch.len() as u64;
        let first = job.push_args(batch);
        match self.shared.add_items(*id, n, exhausted) {
            Ok(()) => {
                self.pulled += n;
                self.input_done = exhausted;
            }
            Err(_) if n == 0 => {
                // Only the end of the input was announced, and no item was refused: a job
                // whose known length was reached may already be complete and forgotten by the
                // scheduler. Every pulled item has or will get its outcome.
                self.input_done = true;
            }
            Err(err) => {
                // The pool stopped accepting work: report it once, then end.
                use crate::job::Job;
                job.fail(first..first + 1, err);
                job.discard(first + 1..first + n.max(1));
                self.pulled += 1;
                self.input_done = true;
            }
        }
    }

    fn finish(&mut self) {
        self.finished = true;
        #[cfg(feature = "progress")]
        if let Some(bar) = self.progress.take() {
            bar.finish();
        }
    }
}

impl<T: Task, I> Drop for MapRun<'_, T, I> {
    fn drop(&mut self) {
        if let Some(started) = &self.job {
            started.state.abandon();
            self.shared.drop_job(started.id);
        }
    }
}

macro_rules! map_options {
    () => {
        /// Pulls at most this many items ahead of the ones yielded (default 65,536).
        ///
        /// Bounds memory for long or endless inputs; a larger window keeps workers busier
        /// when item costs vary.
        pub fn window(mut self, items: NonZeroUsize) -> Self {
            self.run.window = items.get();
            self
        }

        /// Sends this map's items in chunks of exactly `items` (fewer only at the end), like
        /// Python's `chunksize`, instead of the pool's chunk policy (by default sized from the
        /// measured cost of the task's items).
        pub fn chunksize(mut self, items: NonZeroUsize) -> Self {
            self.run.chunksize = std::num::NonZeroU64::new(items.get() as u64);
            self
        }

        /// Kills the worker and fails the item with [`TaskError::TimedOut`] if one item runs
        /// longer than `timeout`; other items are unaffected.
        pub fn timeout(mut self, timeout: Duration) -> Self {
            self.run.options.timeout = Some(timeout);
            self
        }

        /// Runs an item again, up to `n` times, if its worker dies while running it.
        pub fn retries(mut self, n: u32) -> Self {
            self.run.options.retries = n;
            self
        }

        /// Shows a progress bar on stderr while the map runs (feature `progress`).
        #[cfg(feature = "progress")]
        pub fn progress(mut self) -> Self {
            let bar = match self.run.input.size_hint() {
                (lower, Some(upper)) if lower == upper => indicatif::ProgressBar::new(lower as u64),
                _ => indicatif::ProgressBar::no_length(),
            };
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} items  {per_sec}  eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            self.run.progress = Some(bar);
            self
        }
    };
}

impl<'p, T: Task, I: Iterator<Item = T::Args>> Map<'p, T, I> {
    /// Like `next`, but waits at most `timeout` for the next outcome; a timeout leaves the
    /// map as it was (the item is still being worked on).
    ///
    /// # Errors
    ///
    /// [`Timeout`] if the next outcome did not arrive in time.
    pub fn next_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<Result<T::Output, TaskError>>, Timeout> {
        Ok(self
            .run
            .next_outcome(Some(timeout))?
            .map(|(_, outcome)| outcome))
    }

    pub(crate) fn new(shared: &Arc<Shared>, input: I, options: TaskOptions) -> Self {
        Map {
            run: MapRun::new(shared, input, options, true),
        }
    }

    map_options!();
}

impl<'p, T: Task, I: Iterator<Item = T::Args>> MapUnordered<'p, T, I> {
    /// Like `next`, but waits at most `timeout` for the next outcome.
    ///
    /// # Errors
    ///
    /// [`Timeout`] if no outcome arrived in time.
    #[allow(clippy::type_complexity)]
    pub fn next_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<(usize, Result<T::Output, TaskError>)>, Timeout> {
        Ok(self
            .run
            .next_outcome(Some(timeout))?
            .map(|(index, outcome)| (usize::try_from(index).unwrap_or(usize::MAX), outcome)))
    }

    pub(crate) fn new(shared: &Arc<Shared>, input: I, options: TaskOptions) -> Self {
        MapUnordered {
            run: MapRun::new(shared, input, options, false),
        }
    }

    map_options!();
}

impl<T: Task, I: Iterator<Item = T::Args>> Iterator for Map<'_, T, I> {
    type Item = Result<T::Output, TaskError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        self.run
            .next_outcome(None)
            .expect("no timeout")
            .map(|(_, outcome)| outcome)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        size_hint(&self.run)
    }
}

impl<T: Task, I: Iterator<Item = T::Args>> Iterator for MapUnordered<'_, T, I> {
    type Item = (usize, Result<T::Output, TaskError>);

    fn next(&mut self) -> Option<Self::Item> {
        self.run
            .next_outcome(None)
            .expect("no timeout")
            .map(|(index, outcome)| (usize::try_from(index).unwrap_or(usize::MAX), outcome))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        size_hint(&self.run)
    }
}

fn size_hint<T: Task, I: Iterator>(run: &MapRun<'_, T, I>) -> (usize, Option<usize>) {
    if run.finished {
        return (0, Some(0));
    }
    let outstanding = usize::try_from(run.pulled - run.yielded_now()).unwrap_or(usize::MAX);
    let (lower, upper) = run.input.size_hint();
    (
        outstanding.saturating_add(lower),
        upper.and_then(|upper| upper.checked_add(outstanding)),
    )
}

impl<T: Task, I> std::fmt::Debug for Map<'_, T, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Map")
            .field("task", &T::NAME)
            .field("pulled", &self.run.pulled)
            .field("yielded", &self.run.yielded_now())
            .finish_non_exhaustive()
    }
}

impl<T: Task, I> std::fmt::Debug for MapUnordered<'_, T, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapUnordered")
            .field("task", &T::NAME)
            .field("pulled", &self.run.pulled)
            .field("yielded", &self.run.yielded_now())
            .finish_non_exhaustive()
    }
}
