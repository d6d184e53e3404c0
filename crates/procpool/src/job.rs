//! Jobs: the typed side of one `submit` or one `map`, behind the untyped [`Job`] trait.
//!
//! The pool core knows items only by index. A job keeps each item's arguments until that item
//! has an outcome (so a chunk lost with its worker can be encoded again), encodes chunks,
//! decodes outcome frames with the task's types, and hands each outcome to its consumer:
//! a [`Completer`] for `submit`, a [`MapState`] for `map` and `map_unordered`.
//! Every item gets at most one outcome: later ones (a duplicate after a retry, a failure
//! racing a delivery) are dropped here.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Range;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use procpool_worker::protocol::FrameBuf;
use procpool_worker::protocol::{self, OutcomeBatch};
use procpool_worker::{FailureKind, Task, TaskFailure};

use crate::error::TaskError;
use crate::handle::Completer;

/// Per-call options: [`crate::TaskCall`] and the map builders set them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub(crate) struct TaskOptions {
    /// Kill the worker and fail the item with `TimedOut` if one item runs longer.
    pub(crate) timeout: Option<Duration>,
    /// How many times an item lost with its worker is run again before it fails.
    pub(crate) retries: u32,
}

/// One job as the pool core sees it.
pub(crate) trait Job: Send + Sync {
    /// The task's name, for logs.
    fn task_name(&self) -> &'static str;
    /// The call's options.
    fn options(&self) -> TaskOptions;
    /// Claims items of `items` for sending to a worker and returns the ones claimed: from the
    /// first item still wanted up to (not including) the next unwanted one. Unwanted items
    /// (cancelled, or nobody listens any more) before the returned range are forgotten and
    /// never run; those after it stay for a later claim. `items.end..items.end` if none is
    /// wanted.
    fn claim(&self, items: Range<u64>) -> Range<u64>;
    /// Marks `items` as not handed out any more (their worker was lost before starting them).
    fn unstart(&self, items: Range<u64>);
    /// Encodes `items` as one call-batch frame for `chunk_id` into `out` (or only measures
    /// it, see [`FrameBuf::Measure`]); returns the frame's length.
    fn encode(
        &self,
        chunk_id: u64,
        items: Range<u64>,
        out: FrameBuf<'_>,
    ) -> Result<usize, TaskError>;
    /// Decodes and delivers the outcomes in `batch`.
    fn deliver(&self, batch: &OutcomeBatch<'_>);
    /// Ends each item of `items` that has no outcome yet with `error`.
    fn fail(&self, items: Range<u64>, error: TaskError);
    /// Takes the items of `items` that have no outcome yet out of reach (a later `claim`
    /// skips them) and returns the completion that ends them with `error`, to be run once the
    /// pool's lock is released (completions run callbacks).
    fn detach(&self, items: Range<u64>, error: TaskError) -> Completion;
    /// Items without an outcome that are not inside `in_flight`: the unstarted ones.
    fn unfinished_outside(&self, in_flight: &[Range<u64>]) -> Vec<Range<u64>>;
    /// Counts one worker death charged to item `index` and returns the count so far of that
    /// kind: `running` for deaths while it ran, otherwise for deaths of a worker that held
    /// it but had not started it (counted apart, so they never use up its retries).
    fn note_death(&self, index: u64, running: bool) -> u32;
}

/// Work that completes handles; run it without holding the pool's lock.
pub(crate) type Completion = Box<dyn FnOnce() + Send>;

/// Maps a worker's failure report to the public error.
pub(crate) fn task_error(failure: TaskFailure, task_name: &str) -> TaskError {
    match failure.kind {
        FailureKind::Panicked => TaskError::Panicked {
            message: failure.message,
            location: failure.location,
        },
        FailureKind::Failed => TaskError::Failed(failure.message),
        FailureKind::UnknownTask => TaskError::UnknownTask {
            name: task_name.to_owned(),
        },
        FailureKind::BadArguments => TaskError::BadArguments(failure.message),
        FailureKind::BadOutput => TaskError::BadOutput(failure.message),
        FailureKind::TooLarge(over) => TaskError::TooLarge {
            what: "the result",
            size: usize::try_from(over.size).unwrap_or(usize::MAX),
            limit: usize::try_from(over.limit).unwrap_or(usize::MAX),
        },
    }
}

/// Decodes every outcome of `batch` as task `T`'s: `(item index, outcome)` in item order.
///
/// A frame that is one run of successes (the common case) is validated and deserialized in
/// one go; otherwise run by run.
fn decode<T: Task>(
    batch: &OutcomeBatch<'_>,
    mut sink: impl FnMut(u64, Result<T::Output, TaskError>),
) {
    let unreadable = |err: &dyn std::fmt::Display| {
        TaskError::Protocol(format!(
            "the outcome of `{}` could not be decoded: {err}",
            T::NAME
        ))
    };
    if let Some((first, bytes)) = batch.values_run() {
        if batch.len() == 1 {
            // A lone call: no `Vec` for its one value.
            sink(
                first,
                protocol::decode_value::<T>(bytes).map_err(|err| unreadable(&err)),
            );
            return;
        }
        match protocol::decode_values::<T>(bytes, batch.len()) {
            Ok(values) => (first..)
                .zip(values)
                .for_each(|(index, value)| sink(index, Ok(value))),
            Err(err) => batch
                .indices()
                .for_each(|index| sink(index, Err(unreadable(&err)))),
        }
        return;
    }
    for (index, outcome) in protocol::decode_outputs::<T>(batch) {
        let outcome = match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(failure)) => Err(task_error(failure, T::NAME)),
            Err(err) => Err(unreadable(&err)),
        };
        sink(index, outcome);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The arguments of items that have no outcome yet, by index.
struct ArgWindow<A> {
    /// Index of `slots[0]`.
    base: u64,
    /// `Some` until the item has an outcome. Leading `None`s are popped.
    slots: VecDeque<Option<A>>,
}

impl<A> ArgWindow<A> {
    fn new() -> Self {
        ArgWindow {
            base: 0,
            slots: VecDeque::new(),
        }
    }

    fn end(&self) -> u64 {
        self.base + self.slots.len() as u64
    }

    fn get(&self, index: u64) -> Option<&A> {
        let pos = index.checked_sub(self.base)?;
        self.slots.get(usize::try_from(pos).ok()?)?.as_ref()
    }

    /// Removes and returns the arguments of `index`, if still there.
    fn take(&mut self, index: u64) -> Option<A> {
        let pos = usize::try_from(index.checked_sub(self.base)?).ok()?;
        let value = self.slots.get_mut(pos)?.take();
        while matches!(self.slots.front(), Some(None)) {
            self.slots.pop_front();
            self.base += 1;
        }
        value
    }

    fn unfinished_outside(&self, in_flight: &[Range<u64>]) -> Vec<Range<u64>> {
        let mut out: Vec<Range<u64>> = Vec::new();
        for (pos, slot) in self.slots.iter().enumerate() {
            let index = self.base + pos as u64;
            if slot.is_none() || in_flight.iter().any(|range| range.contains(&index)) {
                continue;
            }
            match out.last_mut() {
                Some(last) if last.end == index => last.end += 1,
                _ => out.push(index..index + 1),
            }
        }
        out
    }
}

/// A map's arguments by index. Unlike [`ArgWindow`], an item's arguments stay (marked done)
/// until every earlier item is done too, so the arguments of a chunk are contiguous slices
/// and plain data is encoded with a copy. A map's window bounds how many linger.
///
/// The arguments are kept in the batches the consumer pulled them in (a batch's `Vec` becomes
/// a `VecDeque` without a copy, and finished items are popped from its front), so adding a
/// batch copies nothing, and a finished batch's buffer is handed back for the next pull
/// (`spare`): no allocation and no fresh pages per batch. A chunk is cut from the items of one
/// `add_items`, so its arguments are one slice; two or more only if a chunk ever spans batches.
///
/// Done items are kept as ranges, not flags: outcomes arrive as runs and chunks are claimed
/// as ranges, so every check and update costs a lookup per range, never a pass per item.
struct MapArgs<A> {
    /// Index of the first item of `batches[0]`.
    base: u64,
    /// Consecutive batches of arguments, from `base` on; none empty, each contiguous (built
    /// from a `Vec`, only ever popped from the front).
    batches: VecDeque<VecDeque<A>>,
    /// Items held in `batches`.
    len: u64,
    /// The emptied buffer of the last finished batch, for the next pull.
    spare: Option<Vec<A>>,
    /// The items of the window that have an outcome (or will never run): disjoint,
    /// non-adjacent ranges, `start -> end`, all inside `base..end()` and none starting at
    /// `base` (leading done items are popped).
    done: BTreeMap<u64, u64>,
}

impl<A> MapArgs<A> {
    fn new() -> Self {
        MapArgs {
            base: 0,
            batches: VecDeque::new(),
            len: 0,
            spare: None,
            done: BTreeMap::new(),
        }
    }

    fn end(&self) -> u64 {
        self.base + self.len
    }

    /// Appends a batch of arguments (its buffer is kept, not copied).
    fn push(&mut self, args: Vec<A>) {
        if args.is_empty() {
            self.spare.get_or_insert(args);
            return;
        }
        self.len += args.len() as u64;
        self.batches.push_back(VecDeque::from(args));
    }

    /// An empty buffer for the next batch: the last finished batch's, if any.
    fn take_spare(&mut self) -> Vec<A> {
        self.spare.take().unwrap_or_default()
    }

    /// The done range holding `index`, if any.
    fn done_range_at(&self, index: u64) -> Option<Range<u64>> {
        let (&start, &end) = self.done.range(..=index).next_back()?;
        (end > index).then_some(start..end)
    }

    /// Whether `index` is in the window and not done.
    fn is_unfinished(&self, index: u64) -> bool {
        (self.base..self.end()).contains(&index) && self.done_range_at(index).is_none()
    }

    /// Whether every item of `items` is in the window and unfinished.
    fn all_unfinished(&self, items: &Range<u64>) -> bool {
        if items.start < self.base || items.end > self.end() {
            return false;
        }
        // The last done range starting before `items.end` must end by `items.start`.
        self.done
            .range(..items.end)
            .next_back()
            .is_none_or(|(_, &end)| end <= items.start)
    }

    /// The unfinished items of `items` from the first one up to (not including) the next
    /// finished one, or an empty range at `items.end` when none is unfinished.
    fn first_unfinished_run(&self, items: &Range<u64>) -> Range<u64> {
        let end = items.end.min(self.end());
        let mut start = items.start.max(self.base);
        if let Some(done) = self.done_range_at(start) {
            start = done.end;
        }
        if start >= end {
            return items.end..items.end;
        }
        let stop = self
            .done
            .range(start..end)
            .next()
            .map_or(end, |(&next_done, _)| next_done);
        start..stop
    }

    /// Marks `items` (in the window, none done) done, merging with neighbouring done ranges.
    fn mark_done(&mut self, items: Range<u64>) {
        if items.is_empty() {
            return;
        }
        let mut start = items.start;
        let mut end = items.end;
        if let Some((&before, &before_end)) = self.done.range(..start).next_back()
            && before_end == start
        {
            start = before;
        }
        if let Some(after_end) = self.done.remove(&end) {
            end = after_end;
        }
        self.done.insert(start, end);
        self.pop_done();
    }

    /// Marks `index` done; `true` if it was not.
    fn finish(&mut self, index: u64) -> bool {
        if !self.is_unfinished(index) {
            return false;
        }
        self.mark_done(index..index + 1);
        true
    }

    /// Marks every item of `items` done at once; `true` if all of them were unfinished,
    /// `false` (nothing changed) otherwise.
    fn finish_all(&mut self, items: Range<u64>) -> bool {
        if !self.all_unfinished(&items) {
            return false;
        }
        self.mark_done(items);
        true
    }

    fn pop_done(&mut self) {
        if let Some(entry) = self.done.first_entry()
            && *entry.key() == self.base
        {
            let end = entry.remove();
            let mut leading = end - self.base;
            self.base = end;
            self.len -= leading;
            while leading > 0 {
                let Some(front) = self.batches.front_mut() else {
                    break;
                };
                let front_len = front.len() as u64;
                if front_len <= leading {
                    leading -= front_len;
                    if let Some(mut batch) = self.batches.pop_front() {
                        batch.clear();
                        // Empty: the conversion moves nothing.
                        self.spare = Some(Vec::from(batch));
                    }
                } else {
                    // `leading < front.len()`, a usize.
                    front.drain(..usize::try_from(leading).unwrap_or(usize::MAX));
                    leading = 0;
                }
            }
        }
    }

    /// The arguments of `items` (all in the window) as slices, in order: one unless the
    /// range spans batches.
    fn slices(&self, items: &Range<u64>) -> Vec<&[A]> {
        let mut out = Vec::new();
        let mut start = items.start.max(self.base);
        let end = items.end.min(self.end());
        let mut batch_start = self.base;
        for batch in &self.batches {
            let batch_end = batch_start + batch.len() as u64;
            if start < end && start < batch_end {
                // Both offsets are within the batch, a usize-indexed slice.
                let from = usize::try_from(start - batch_start).unwrap_or(usize::MAX);
                let to = usize::try_from(end.min(batch_end) - batch_start).unwrap_or(usize::MAX);
                let (a, b) = batch.as_slices();
                // Contiguous by construction (`b` is empty); handled anyway.
                if to <= a.len() {
                    out.push(&a[from..to]);
                } else if from >= a.len() {
                    out.push(&b[from - a.len()..to - a.len()]);
                } else {
                    out.push(&a[from..]);
                    out.push(&b[..to - a.len()]);
                }
                start = batch_end.min(end);
            }
            if start >= end {
                break;
            }
            batch_start = batch_end;
        }
        out
    }

    fn unfinished_outside(&self, in_flight: &[Range<u64>]) -> Vec<Range<u64>> {
        let mut out: Vec<Range<u64>> = Vec::new();
        let mut gap_start = self.base;
        let gaps = self
            .done
            .iter()
            .map(|(&start, &end)| (start, end))
            .chain(std::iter::once((self.end(), self.end())));
        for (done_start, done_end) in gaps {
            for index in gap_start..done_start {
                if in_flight.iter().any(|range| range.contains(&index)) {
                    continue;
                }
                match out.last_mut() {
                    Some(last) if last.end == index => last.end += 1,
                    _ => out.push(index..index + 1),
                }
            }
            gap_start = done_end;
        }
        out
    }
}

/// One submitted call waiting in a [`SubmitStream`].
struct SubmitItem<T: Task> {
    args: T::Args,
    completer: Completer<T::Output>,
}

/// Every `submit` of one task with one set of options: a job whose input never closes while
/// the pool is open, one item per call. Calls queued together travel in one chunk.
pub(crate) struct SubmitStream<T: Task> {
    items: Mutex<ArgWindow<SubmitItem<T>>>,
    options: TaskOptions,
    /// Per item: (deaths while it ran, deaths before it started).
    deaths: Mutex<HashMap<u64, (u32, u32)>>,
}

impl<T: Task> SubmitStream<T> {
    pub(crate) fn new(options: TaskOptions) -> Self {
        SubmitStream {
            items: Mutex::new(ArgWindow::new()),
            options,
            deaths: Mutex::new(HashMap::new()),
        }
    }

    /// Appends one call; returns its index.
    pub(crate) fn push(&self, args: T::Args, completer: Completer<T::Output>) -> u64 {
        let mut items = lock(&self.items);
        let index = items.end();
        items.slots.push_back(Some(SubmitItem { args, completer }));
        index
    }

    fn finish(&self, index: u64, outcome: Result<T::Output, TaskError>) {
        let item = lock(&self.items).take(index);
        if let Some(item) = item {
            self.forget_deaths(std::iter::once(index));
            item.completer.complete(outcome);
        }
    }

    /// Forgets the death counts of finished items (one lock; no hashing while none is kept).
    fn forget_deaths(&self, indices: impl Iterator<Item = u64>) {
        let mut deaths = lock(&self.deaths);
        if !deaths.is_empty() {
            for index in indices {
                deaths.remove(&index);
            }
        }
    }
}

impl<T: Task> Job for SubmitStream<T> {
    fn task_name(&self) -> &'static str {
        T::NAME
    }

    fn options(&self) -> TaskOptions {
        self.options
    }

    fn claim(&self, items: Range<u64>) -> Range<u64> {
        let mut window = lock(&self.items);
        // Skip leading items that are cancelled (forget them: their handle has its outcome)
        // or already finished. `Completer::start` is the atomic point against `cancel`.
        let mut start = items.start;
        while start < items.end {
            match window.get(start) {
                Some(item) if item.completer.start() => break,
                Some(_) => drop(window.take(start)),
                None => {}
            }
            start += 1;
        }
        if start == items.end {
            return items.end..items.end;
        }
        let mut end = start + 1;
        while end < items.end && window.get(end).is_some_and(|item| item.completer.start()) {
            end += 1;
        }
        start..end
    }

    fn unstart(&self, items: Range<u64>) {
        let window = lock(&self.items);
        for index in items {
            if let Some(item) = window.get(index) {
                item.completer.unstart();
            }
        }
    }

    fn encode(
        &self,
        chunk_id: u64,
        items: Range<u64>,
        out: FrameBuf<'_>,
    ) -> Result<usize, TaskError> {
        let window = lock(&self.items);
        if !items.clone().all(|index| window.get(index).is_some()) {
            return Err(TaskError::Protocol(
                "internal: the arguments of a finished call were asked for".into(),
            ));
        }
        // Straight from the window (a dispatch measures, then writes, each chunk: no list of
        // references is collected for it). Every item is there: checked above, under the same
        // lock.
        let len = usize::try_from(items.end - items.start).unwrap_or(usize::MAX);
        let args = (0..len).map(|offset| {
            &window
                .get(items.start + offset as u64)
                .expect("checked above under the same lock")
                .args
        });
        protocol::encode_call_batch_iter_to::<T, _>(chunk_id, items.start, args, out)
            .map_err(|err| TaskError::BadArguments(format!("cannot encode the arguments: {err}")))
    }

    fn deliver(&self, batch: &OutcomeBatch<'_>) {
        if batch.len() == 1 {
            // A lone call (the round trip of `Pool::call`): no buffers.
            decode::<T>(batch, |index, outcome| self.finish(index, outcome));
            return;
        }
        // Decoded first, then every item of the batch taken under one lock of the window
        // (which `submit` also takes for each call), then completed without it.
        let mut outcomes = Vec::with_capacity(batch.len());
        decode::<T>(batch, |index, outcome| outcomes.push((index, outcome)));
        let mut finished = Vec::with_capacity(outcomes.len());
        {
            let mut window = lock(&self.items);
            for (index, outcome) in outcomes {
                if let Some(item) = window.take(index) {
                    finished.push((index, item, outcome));
                }
            }
        }
        self.forget_deaths(finished.iter().map(|(index, ..)| *index));
        for (_, item, outcome) in finished {
            item.completer.complete(outcome);
        }
    }

    fn fail(&self, items: Range<u64>, error: TaskError) {
        for index in items {
            self.finish(index, Err(error.clone()));
        }
    }

    fn detach(&self, items: Range<u64>, error: TaskError) -> Completion {
        let mut window = lock(&self.items);
        let taken: Vec<SubmitItem<T>> = items.filter_map(|index| window.take(index)).collect();
        Box::new(move || {
            for item in taken {
                item.completer.complete(Err(error.clone()));
            }
        })
    }

    fn unfinished_outside(&self, in_flight: &[Range<u64>]) -> Vec<Range<u64>> {
        lock(&self.items).unfinished_outside(in_flight)
    }

    fn note_death(&self, index: u64, running: bool) -> u32 {
        let mut deaths = lock(&self.deaths);
        let (ran, held) = deaths.entry(index).or_insert((0, 0));
        let count = if running { ran } else { held };
        *count += 1;
        *count
    }
}

/// The consumer side of a map: outcomes by index, and a condition variable to wait on.
/// An item's outcome as a map stores it: the error boxed, so buffered outcomes stay small
/// (a `TaskError` is many times the size of a typical output).
pub(crate) type Outcome<O> = Result<O, Box<TaskError>>;

/// Outcomes of consecutive items, as they travel from a reader thread to the map's consumer:
/// a whole run of successes is moved as one vector, not item by item.
pub(crate) struct Segment<O> {
    /// Index of the next item to take.
    next: u64,
    items: SegmentItems<O>,
}

enum SegmentItems<O> {
    /// Successes of items `next..`.
    Values(std::vec::IntoIter<O>),
    /// The outcome of the one item `next` (until taken).
    One(Option<Outcome<O>>),
}

impl<O> Segment<O> {
    /// The successes of items `first..first + values.len()`.
    pub(crate) fn values(first: u64, values: Vec<O>) -> Self {
        Segment {
            next: first,
            items: SegmentItems::Values(values.into_iter()),
        }
    }

    /// The outcome of item `index`.
    pub(crate) fn one(index: u64, outcome: Outcome<O>) -> Self {
        Segment {
            next: index,
            items: SegmentItems::One(Some(outcome)),
        }
    }

    /// Items not taken yet.
    pub(crate) fn len(&self) -> usize {
        match &self.items {
            SegmentItems::Values(values) => values.len(),
            SegmentItems::One(one) => usize::from(one.is_some()),
        }
    }

    /// Moves out the successes not taken yet, with the index of the first, if this is a run
    /// of successes (it is left empty).
    pub(crate) fn take_values(&mut self) -> Option<(u64, std::vec::IntoIter<O>)> {
        match std::mem::replace(&mut self.items, SegmentItems::One(None)) {
            SegmentItems::Values(values) => Some((self.next, values)),
            one => {
                self.items = one;
                None
            }
        }
    }

    /// Takes the next item's outcome.
    #[inline]
    pub(crate) fn pop(&mut self) -> Option<(u64, Outcome<O>)> {
        let outcome = match &mut self.items {
            SegmentItems::Values(values) => Ok(values.next()?),
            SegmentItems::One(one) => one.take()?,
        };
        let index = self.next;
        self.next += 1;
        Some((index, outcome))
    }
}

pub(crate) struct MapState<O> {
    inner: Mutex<MapInner<O>>,
    cond: Condvar,
}

pub(crate) struct MapInner<O> {
    /// Yield in input order (`map`) or in completion order (`map_unordered`).
    ordered: bool,
    /// Ordered: index of the next item to hand to the consumer.
    base: u64,
    /// Ordered: segments that arrived ahead of `base`, by first index.
    ahead: BTreeMap<u64, Segment<O>>,
    /// Segments the consumer may take: ordered, consecutive from the last one taken;
    /// unordered, in arrival order.
    ready: VecDeque<Segment<O>>,
    /// Outcomes received so far (both modes).
    received: u64,
    /// The consumer went away: no more outcomes are wanted.
    abandoned: bool,
    /// The consumer is blocked in `take_ready`: only then is the condition variable
    /// signalled (a signal is a system call; outcomes arrive many times per wait).
    waiting: bool,
}

impl<O> MapState<O> {
    pub(crate) fn new(ordered: bool) -> Self {
        MapState {
            inner: Mutex::new(MapInner {
                ordered,
                base: 0,
                ahead: BTreeMap::new(),
                ready: VecDeque::new(),
                received: 0,
                abandoned: false,
                waiting: false,
            }),
            cond: Condvar::new(),
        }
    }

    /// Stores outcomes (each item at most once, which the job guarantees) and wakes the consumer.
    fn put_many(&self, outcomes: impl IntoIterator<Item = (u64, Outcome<O>)>) {
        self.put_segments(
            outcomes
                .into_iter()
                .map(|(index, outcome)| Segment::one(index, outcome)),
        );
    }

    /// Stores segments (each item at most once, which the job guarantees) and wakes the
    /// consumer if it can take something now.
    fn put_segments(&self, segments: impl IntoIterator<Item = Segment<O>>) {
        let mut guard = lock(&self.inner);
        let inner = &mut *guard;
        if inner.abandoned {
            return;
        }
        let mut wake = false;
        for segment in segments {
            let len = segment.len() as u64;
            if len == 0 {
                continue;
            }
            inner.received += len;
            if !inner.ordered {
                inner.ready.push_back(segment);
                wake = true;
                continue;
            }
            if segment.next < inner.base {
                // Already handed on (the job never delivers twice; defensive).
                continue;
            }
            if segment.next != inner.base {
                inner.ahead.insert(segment.next, segment);
                continue;
            }
            inner.base += len;
            inner.ready.push_back(segment);
            wake = true;
            while let Some(entry) = inner.ahead.first_entry() {
                if *entry.key() != inner.base {
                    break;
                }
                let segment = entry.remove();
                inner.base += segment.len() as u64;
                inner.ready.push_back(segment);
            }
        }
        let wake = wake && inner.waiting;
        drop(guard);
        if wake {
            self.cond.notify_all();
        }
    }

    /// Waits (at most `timeout`) until outcomes can be yielded, then moves all of them to
    /// `out`: ordered, the segments consecutive from the next index; unordered, every
    /// arrival. Returns `false` on timeout.
    pub(crate) fn take_ready(
        &self,
        out: &mut VecDeque<Segment<O>>,
        timeout: Option<Duration>,
    ) -> bool {
        let deadline = timeout.and_then(|timeout| std::time::Instant::now().checked_add(timeout));
        let mut inner = lock(&self.inner);
        loop {
            if !inner.ready.is_empty() {
                out.append(&mut inner.ready);
                return true;
            }
            let timeout = match deadline {
                None => None,
                Some(deadline) => {
                    let now = std::time::Instant::now();
                    if now >= deadline {
                        return false;
                    }
                    Some(deadline - now)
                }
            };
            // Set only while blocked; `put_segments` reads it under the same lock.
            inner.waiting = true;
            inner = match timeout {
                None => self
                    .cond
                    .wait(inner)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(timeout) => {
                    self.cond
                        .wait_timeout(inner, timeout)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
            inner.waiting = false;
        }
    }

    /// The consumer is gone: drop what arrived and ignore what comes.
    pub(crate) fn abandon(&self) {
        let mut inner = lock(&self.inner);
        inner.abandoned = true;
        inner.ahead.clear();
        inner.ready.clear();
    }
}

/// A `map` or `map_unordered` over items added as the consumer pulls them.
pub(crate) struct MapJob<T: Task> {
    args: Mutex<MapArgs<T::Args>>,
    state: Arc<MapState<T::Output>>,
    options: TaskOptions,
    /// Per item: (deaths while it ran, deaths before it started).
    deaths: Mutex<HashMap<u64, (u32, u32)>>,
}

impl<T: Task> MapJob<T> {
    pub(crate) fn new(state: Arc<MapState<T::Output>>, options: TaskOptions) -> Self {
        MapJob {
            args: Mutex::new(MapArgs::new()),
            state,
            options,
            deaths: Mutex::new(HashMap::new()),
        }
    }

    /// Appends the arguments of the next items (the buffer is kept); returns the index of
    /// the first.
    pub(crate) fn push_args(&self, args: Vec<T::Args>) -> u64 {
        let mut window = lock(&self.args);
        let first = window.end();
        window.push(args);
        first
    }

    /// An empty buffer for the next [`Self::push_args`] (a finished batch's, when there is one).
    pub(crate) fn take_spare(&self) -> Vec<T::Args> {
        lock(&self.args).take_spare()
    }

    /// Forgets the arguments of items that will never be scheduled (the pool refused them).
    pub(crate) fn discard(&self, items: Range<u64>) {
        let mut window = lock(&self.args);
        for index in items {
            window.finish(index);
        }
    }

    /// Delivers outcomes of items that have none yet (one lock for the batch).
    fn finish_many(&self, mut outcomes: Vec<(u64, Outcome<T::Output>)>) {
        let mut args = lock(&self.args);
        outcomes.retain(|(index, _)| args.finish(*index));
        drop(args);
        self.state.put_many(outcomes);
    }
}

impl<T: Task> Job for MapJob<T> {
    fn task_name(&self) -> &'static str {
        T::NAME
    }

    fn options(&self) -> TaskOptions {
        self.options
    }

    fn claim(&self, items: Range<u64>) -> Range<u64> {
        if lock(&self.state.inner).abandoned {
            return items.end..items.end;
        }
        // Items failed while queued (e.g. blamed for a worker's death) are skipped. Items
        // before the window are finished, items past its end not pulled yet: neither can be
        // claimed.
        lock(&self.args).first_unfinished_run(&items)
    }

    fn unstart(&self, _items: Range<u64>) {}

    fn encode(
        &self,
        chunk_id: u64,
        items: Range<u64>,
        out: FrameBuf<'_>,
    ) -> Result<usize, TaskError> {
        let window = lock(&self.args);
        if !window.all_unfinished(&items) {
            return Err(TaskError::Protocol(
                "internal: the arguments of a finished item were asked for".into(),
            ));
        }
        let slices = window.slices(&items);
        let encoded = match slices.as_slice() {
            [one] => {
                protocol::encode_call_batch_slices_to::<T>(chunk_id, items.start, one, &[], out)
            }
            [front, back] => {
                protocol::encode_call_batch_slices_to::<T>(chunk_id, items.start, front, back, out)
            }
            more => {
                let args: Vec<&T::Args> = more.iter().flat_map(|slice| slice.iter()).collect();
                protocol::encode_call_batch_iter_to::<T, _>(chunk_id, items.start, args, out)
            }
        };
        encoded
            .map_err(|err| TaskError::BadArguments(format!("cannot encode the arguments: {err}")))
    }

    fn deliver(&self, batch: &OutcomeBatch<'_>) {
        // The common case: one run of successes, moved to the consumer as one vector.
        if let Some((first, bytes)) = batch.values_run()
            && let Ok(values) = protocol::decode_values::<T>(bytes, batch.len())
        {
            let items = first..first + values.len() as u64;
            if lock(&self.args).finish_all(items) {
                self.state.put_segments([Segment::values(first, values)]);
                return;
            }
            // Some items already have an outcome (a duplicate after a retry): item by item.
            self.finish_many(
                (first..)
                    .zip(values)
                    .map(|(index, value)| (index, Ok(value)))
                    .collect(),
            );
            return;
        }
        let mut outcomes = Vec::with_capacity(batch.len());
        decode::<T>(batch, |index, outcome| {
            outcomes.push((index, outcome.map_err(Box::new)))
        });
        self.finish_many(outcomes);
    }

    fn fail(&self, items: Range<u64>, error: TaskError) {
        self.finish_many(
            items
                .map(|index| (index, Err(Box::new(error.clone()))))
                .collect(),
        );
    }

    fn detach(&self, items: Range<u64>, error: TaskError) -> Completion {
        let mut args = lock(&self.args);
        let taken: Vec<u64> = items.filter(|index| args.finish(*index)).collect();
        drop(args);
        let state = Arc::clone(&self.state);
        Box::new(move || {
            state.put_many(
                taken
                    .into_iter()
                    .map(|index| (index, Err(Box::new(error.clone())))),
            );
        })
    }

    fn unfinished_outside(&self, in_flight: &[Range<u64>]) -> Vec<Range<u64>> {
        lock(&self.args).unfinished_outside(in_flight)
    }

    fn note_death(&self, index: u64, running: bool) -> u32 {
        let mut deaths = lock(&self.deaths);
        let (ran, held) = deaths.entry(index).or_insert((0, 0));
        let count = if running { ran } else { held };
        *count += 1;
        *count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // lists of ranges, not ranges meant as lists
    fn arg_window_tracks_unfinished_items() {
        let mut window = ArgWindow::new();
        window.slots.extend((0..6).map(Some));
        assert!(window.take(0).is_some());
        assert!(window.take(0).is_none(), "finishing twice reports false");
        assert_eq!(window.base, 1);
        assert!(window.take(3).is_some());
        assert_eq!(window.get(3), None);
        assert_eq!(window.get(4), Some(&4));
        assert_eq!(window.unfinished_outside(&[]), vec![1..3, 4..6]);
        assert_eq!(window.unfinished_outside(&[2..5]), Vec::from([1..2, 5..6]));
        assert!(window.take(99).is_none());
        assert_eq!(window.end(), 6);
    }

    /// Everything `take_ready` moved to `segments`, item by item.
    fn drain(segments: &mut VecDeque<Segment<u32>>) -> Vec<(u64, Outcome<u32>)> {
        let mut out = Vec::new();
        for mut segment in segments.drain(..) {
            while let Some(item) = segment.pop() {
                out.push(item);
            }
        }
        out
    }

    #[test]
    fn map_state_orders_or_not() {
        let mut out = VecDeque::new();
        let ordered = MapState::<u32>::new(true);
        ordered.put_many([(1, Ok(10)), (3, Ok(30))]);
        assert!(!ordered.take_ready(&mut out, Some(Duration::from_millis(5))));
        ordered.put_many([(0, Ok(0))]);
        assert!(ordered.take_ready(&mut out, None));
        assert_eq!(drain(&mut out), vec![(0, Ok(0)), (1, Ok(10))]);
        ordered.put_many([(2, Ok(20))]);
        assert!(ordered.take_ready(&mut out, None));
        assert_eq!(drain(&mut out), vec![(2, Ok(20)), (3, Ok(30))]);

        let unordered = MapState::<u32>::new(false);
        unordered.put_many([(1, Ok(10)), (0, Err(Box::new(TaskError::Cancelled)))]);
        assert!(unordered.take_ready(&mut out, None));
        assert_eq!(
            drain(&mut out),
            vec![(1, Ok(10)), (0, Err(Box::new(TaskError::Cancelled)))]
        );
        unordered.abandon();
        unordered.put_many([(2, Ok(2))]);
        assert!(!unordered.take_ready(&mut out, Some(Duration::from_millis(1))));
    }

    #[test]
    fn map_state_joins_value_runs_and_single_outcomes_in_order() {
        let mut out = VecDeque::new();
        let ordered = MapState::<u32>::new(true);
        ordered.put_segments([
            Segment::values(3, vec![30, 40]),
            Segment::values(6, vec![60]),
        ]);
        ordered.put_many([(5, Err(Box::new(TaskError::Cancelled)))]);
        assert!(!ordered.take_ready(&mut out, Some(Duration::from_millis(1))));
        ordered.put_segments([Segment::values(0, vec![0, 10, 20])]);
        assert!(ordered.take_ready(&mut out, None));
        assert_eq!(
            drain(&mut out),
            vec![
                (0, Ok(0)),
                (1, Ok(10)),
                (2, Ok(20)),
                (3, Ok(30)),
                (4, Ok(40)),
                (5, Err(Box::new(TaskError::Cancelled))),
                (6, Ok(60)),
            ]
        );
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // lists of ranges, not ranges meant as lists
    fn map_args_finish_whole_ranges_or_nothing_and_hand_out_slices() {
        let mut window = MapArgs::new();
        window.push((0..8).collect());
        assert_eq!(window.slices(&(1..4)), vec![&[1, 2, 3][..]]);
        assert!(window.all_unfinished(&(2..5)));
        assert!(window.finish_all(2..5));
        assert!(!window.all_unfinished(&(1..3)), "2 is finished");
        assert!(!window.finish_all(4..6), "4 is finished: nothing changes");
        assert!(window.is_unfinished(5));
        assert!(!window.finish_all(7..9), "9 is past the end");
        assert!(window.is_unfinished(7));
        assert!(window.finish_all(0..2));
        assert_eq!(window.base, 5, "leading finished items are dropped");
        assert!(!window.all_unfinished(&(4..6)), "4 is before the window");
        assert_eq!(window.unfinished_outside(&[]), vec![5..8]);
        assert!(window.finish(6));
        assert!(!window.finish(6), "finishing twice reports false");
        assert_eq!(window.unfinished_outside(&[]), vec![5..6, 7..8]);
        // A range across batches comes as one slice per batch.
        window.push((8..20).collect());
        assert!(window.finish_all(5..6) && window.finish(7));
        assert_eq!(window.base, 8, "the first batch is finished and dropped");
        assert_eq!(
            window.take_spare().capacity(),
            8,
            "its buffer is kept for reuse"
        );
        window.push((20..24).collect());
        window.push((24..26).collect());
        let slices = window.slices(&(10..22));
        assert_eq!(slices.len(), 2);
        let joined: Vec<i32> = slices.concat();
        assert_eq!(joined, (10..22).collect::<Vec<_>>());
        assert_eq!(
            window.slices(&(19..25)).concat(),
            (19..25).collect::<Vec<_>>()
        );
        assert_eq!(window.slices(&(21..23)), vec![&[21, 22][..]]);
        assert!(window.finish_all(8..12));
        assert_eq!(
            window.slices(&(12..14)),
            vec![&[12, 13][..]],
            "front popped"
        );
        assert_eq!(window.end(), 26);
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // lists of ranges, not ranges meant as lists
    fn map_args_claim_the_first_unfinished_run_and_merge_done_ranges() {
        let mut window = MapArgs::new();
        window.push((0..20).collect());
        assert!(window.finish_all(4..6) && window.finish_all(8..9) && window.finish(6));
        assert_eq!(window.done.len(), 2, "4..7 merged, 8..9 apart");
        assert_eq!(window.first_unfinished_run(&(0..20)), 0..4);
        assert_eq!(
            window.first_unfinished_run(&(4..20)),
            7..8,
            "starts after a done run"
        );
        assert_eq!(
            window.first_unfinished_run(&(5..7)),
            7..7,
            "none: empty at the end"
        );
        assert_eq!(
            window.first_unfinished_run(&(9..30)),
            9..20,
            "clipped to the window"
        );
        assert!(window.finish(7), "fills the gap: 4..9 is one range");
        assert_eq!(window.done.iter().collect::<Vec<_>>(), vec![(&4, &9)]);
        assert!(
            window.finish_all(0..4),
            "joins the front: everything to 9 is popped"
        );
        assert_eq!((window.base, window.done.len()), (9, 0));
        assert_eq!(
            window.first_unfinished_run(&(0..12)),
            9..12,
            "before the window is done"
        );
        assert!(!window.finish_all(8..10), "8 is before the window");
        assert!(!window.finish_all(19..21), "20 is past the end");
        assert!(window.all_unfinished(&(9..20)));
        assert!(window.finish_all(12..20));
        assert_eq!(window.unfinished_outside(&[10..11]), vec![9..10, 11..12]);
    }
}
