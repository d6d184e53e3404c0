//! Reassembly of results in input order, with a bounded window on the input side.

use std::collections::{BTreeSet, VecDeque};
use std::num::NonZeroUsize;
use std::ops::Range;

/// The order in which [`Reorder::pop`] releases values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// By input index: a value leaves once all values before it have left.
    Input,
    /// As they complete.
    Completion,
}

/// Buffers results of one job and releases them in [`Order`], while bounding how far the
/// input may run ahead of the output.
///
/// The facade pulls items from the user's iterator only through [`admit`](Self::admit),
/// which allows at most `window` items that have been pulled but whose results have not left
/// through [`pop`](Self::pop). So an endless iterator runs in constant memory, in both
/// orders: the buffer never holds more than `window` values.
///
/// # Examples
///
/// ```
/// # use std::num::NonZeroUsize;
/// use procpool_sched::{Order, Reorder};
///
/// let mut reorder = Reorder::new(Order::Input, NonZeroUsize::new(3).unwrap());
/// assert_eq!(reorder.admit(10), 0..3); // pull items 0, 1, 2 from the input
/// assert_eq!(reorder.admit(10), 3..3); // window full
/// reorder.push(1, "b")?;
/// assert_eq!(reorder.pop(), None); // 0 is missing
/// reorder.push(0, "a")?;
/// assert_eq!(reorder.pop(), Some((0, "a")));
/// assert_eq!(reorder.pop(), Some((1, "b")));
/// assert_eq!(reorder.admit(10), 3..5);
/// # Ok::<(), procpool_sched::ReorderError>(())
/// ```
#[derive(Debug)]
pub struct Reorder<T> {
    order: Order,
    window: NonZeroUsize,
    /// Items admitted so far; the next admitted index.
    next_input: u64,
    /// Values popped so far. Invariant: `next_input - popped <= window`.
    popped: u64,
    /// `Order::Input`: slot `i` holds the value of index `popped + i`, `None` while missing.
    /// `Order::Completion`: the values in push order.
    buffer: VecDeque<(u64, Option<T>)>,
    /// `Order::Completion` only: admitted indices without a value yet, to reject duplicates.
    /// At most `window` entries, like `buffer`.
    pending: BTreeSet<u64>,
    /// Values in `buffer`.
    stored: usize,
}

/// Why [`Reorder::push`] refused a value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReorderError {
    /// The index was never admitted.
    #[error("index {0} was not admitted")]
    NotAdmitted(u64),
    /// A value for this index was already pushed.
    #[error("index {0} already has a value")]
    Duplicate(u64),
}

impl<T> Reorder<T> {
    /// An empty buffer releasing values in `order`, with at most `window` items admitted but
    /// not popped.
    pub fn new(order: Order, window: NonZeroUsize) -> Self {
        Reorder {
            order,
            window,
            next_input: 0,
            popped: 0,
            buffer: VecDeque::new(),
            pending: BTreeSet::new(),
            stored: 0,
        }
    }

    /// How many more items may be admitted now.
    pub fn room(&self) -> u64 {
        self.window.get() as u64 - (self.next_input - self.popped)
    }

    /// Admits up to `wanted` more input items and returns their indices; empty when the
    /// window is full.
    pub fn admit(&mut self, wanted: u64) -> Range<u64> {
        let n = wanted.min(self.room());
        let range = self.next_input..self.next_input + n;
        self.next_input += n;
        for index in range.clone() {
            match self.order {
                Order::Input => self.buffer.push_back((index, None)),
                Order::Completion => {
                    self.pending.insert(index);
                }
            }
        }
        range
    }

    /// Items admitted so far.
    pub fn admitted(&self) -> u64 {
        self.next_input
    }

    /// Values popped so far.
    pub fn popped(&self) -> u64 {
        self.popped
    }

    /// Items admitted and not popped: never more than the window.
    pub fn outstanding(&self) -> u64 {
        self.next_input - self.popped
    }

    /// Stores the value of an admitted item.
    ///
    /// # Errors
    ///
    /// [`ReorderError`] if the index was not admitted, or already has a value (or was popped).
    pub fn push(&mut self, index: u64, value: T) -> Result<(), ReorderError> {
        if index >= self.next_input {
            return Err(ReorderError::NotAdmitted(index));
        }
        match self.order {
            Order::Input => {
                let slot = index
                    .checked_sub(self.popped)
                    .and_then(|offset| self.buffer.get_mut(offset as usize))
                    .filter(|slot| slot.1.is_none())
                    .ok_or(ReorderError::Duplicate(index))?;
                slot.1 = Some(value);
            }
            Order::Completion => {
                if !self.pending.remove(&index) {
                    return Err(ReorderError::Duplicate(index));
                }
                self.buffer.push_back((index, Some(value)));
            }
        }
        self.stored += 1;
        Ok(())
    }

    /// The next value with its index, if one may leave now.
    pub fn pop(&mut self) -> Option<(u64, T)> {
        let (index, value) = match self.order {
            Order::Input => match self.buffer.front() {
                Some((_, Some(_))) => self.buffer.pop_front()?,
                _ => return None,
            },
            Order::Completion => self.buffer.pop_front()?,
        };
        self.popped += 1;
        self.stored -= 1;
        Some((index, value.expect("only filled slots are popped")))
    }

    /// Values stored and not popped yet.
    pub fn buffered(&self) -> usize {
        self.stored
    }
}

#[cfg(test)]
mod tests;
