//! Single-producer single-consumer ring of variable-length frames in shared memory.
//!
//! The protocol (byte layout, who writes which word, frame states, the wake-up
//! handshake and what survives a crash) is written up in `ring/README.md` next to this
//! file; read it before changing anything here.
//!
//! [`Producer`] and [`Consumer`] are the two ends. Both are `Send` but not `Sync`, and
//! each ring has exactly one of each, which is what makes the plain (non-atomic) local
//! copies of the indices sound. Storage is either a heap allocation (`heap_ring`,
//! used by the model tests and loom) or a window of a shared `Region` (see `channel`).
//!
//! # Hostile peers and references into shared memory
//!
//! Control words (`head`, `tail`, the sleep flags, `closed`) are only touched through
//! atomics. Frame headers are copied out with one volatile read and validated before
//! use, so a peer that rewrites a header after we read it cannot make us act on two
//! different values. Every index is bounds-checked and masked (see [`Corruption`]).
//!
//! Payload bytes are the one deliberate exception: [`Consumer`] hands out a `&[u8]` over
//! ring memory and the producer gets a `&mut [u8]` (see `Grant`). The protocol gives
//! each side exclusive use of those bytes for the lifetime of the borrow (the producer
//! never writes between `head` and `tail`, the consumer never writes at all), so with an
//! honest peer there is no concurrent access. A hostile or buggy peer process *can*
//! write into a frame we are reading. Strictly, in Rust's memory model that is a data
//! race on memory behind a shared reference, like a file mapped with `memmap2::Mmap`
//! that another process modifies. We accept that, as memmap2 and crossbeam-deque's
//! `Buffer::read` do, rather than give up zero-copy: the compiler cannot see the other
//! process, the bytes are plain `u8` with no validity invariant, and nothing in this
//! crate derives an index or a length from payload bytes. The practical outcome of such
//! a race is garbage payload bytes, which the task layer validates (bytecheck) anyway.

use std::any::Any;
use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::doorbell::{WaitStrategy, futex_wait, futex_wake};
use crate::sync::{AtomicU32, Ordering, fence, spin_hint};
use crate::wire::{
    CLOSED_BY_CONSUMER, CLOSED_BY_PRODUCER, FRAME_ALIGN, FRAME_HEADER_SIZE, FrameHeader, KIND_DATA,
    KIND_LARGE, KIND_PAD, KIND_WRAP, LARGE_BODY_SIZE, LargeBody, MAX_CAPACITY, MIN_CAPACITY,
    PAD_SLOTS, PadBody, RingControl, frame_size,
};

#[cfg(all(test, not(procpool_loom)))]
mod tests;

#[cfg(all(test, procpool_loom))]
mod loom_tests;

/// What the peer wrote wrong. Returned inside `RecvError::Corrupt` / `SendError::Corrupt`;
/// after one, the channel is poisoned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Corruption {
    /// An index the peer owns moved backwards.
    #[error("{word} moved backwards from {previous} to {found}")]
    IndexBackwards {
        /// `"head"` or `"tail"`.
        word: &'static str,
        /// The last value we saw.
        previous: u64,
        /// The value we read now.
        found: u64,
    },
    /// `tail` claims more bytes than the ring holds.
    #[error("tail {tail} is more than the capacity {capacity} ahead of head {head}")]
    TailBeyondCapacity {
        /// Our published head.
        head: u64,
        /// The tail the producer wrote.
        tail: u64,
        /// Ring capacity in bytes.
        capacity: u64,
    },
    /// `head` claims the consumer released bytes that were never published.
    #[error("head {head} is beyond the published tail {tail}")]
    HeadBeyondTail {
        /// The head the consumer wrote.
        head: u64,
        /// Our published tail.
        tail: u64,
    },
    /// An index is not a multiple of 16.
    #[error("{word} {found} is not 16-byte aligned")]
    Misaligned {
        /// `"head"` or `"tail"`.
        word: &'static str,
        /// The value read.
        found: u64,
    },
    /// A frame's length runs past the published tail.
    #[error("frame length {len} exceeds the {available} published bytes")]
    LengthOutOfBounds {
        /// Length from the frame header.
        len: u64,
        /// Bytes between the frame's header and the tail.
        available: u64,
    },
    /// A frame would cross the end of the data area (the producer must WRAP instead).
    #[error("frame at offset {offset} of length {len} crosses the end of the {capacity}-byte ring")]
    FrameCrossesEnd {
        /// Offset of the frame header.
        offset: u64,
        /// Payload length from the header.
        len: u64,
        /// Ring capacity in bytes.
        capacity: u64,
    },
    /// Unknown frame kind, or a kind with an impossible length.
    #[error("bad frame kind {kind:#x} (length {len})")]
    BadKind {
        /// The kind word.
        kind: u32,
        /// The length word.
        len: u32,
    },
    /// The reserved header word is not zero.
    #[error("reserved frame header word is {0:#x}, expected 0")]
    BadReserved(u64),
    /// A LARGE frame's sequence number does not match the fd that came with it.
    #[error("large frame sequence {found}, expected {expected}")]
    LargeSequence {
        /// The next sequence number we expected.
        expected: u64,
        /// The one in the frame or on the socket.
        found: u64,
    },
    /// A LARGE frame arrived but no fd was waiting on the socket.
    #[error("large frame without its file descriptor")]
    LargeMissingFd,
    /// The LARGE frame's memfd is not sealed read-only.
    #[error("large frame memfd is not sealed")]
    LargeNotSealed,
    /// The LARGE frame's memfd size differs from its length.
    #[error("large frame memfd holds {found} bytes, frame says {expected}")]
    LargeSizeMismatch {
        /// Length in the frame.
        expected: u64,
        /// Size of the memfd.
        found: u64,
    },
    /// A PAD frame names a slot that does not exist, or carries unknown flags.
    #[error("pad frame with slot {slot} and flags {flags:#x}")]
    PadBadSlot {
        /// The slot in the frame.
        slot: u32,
        /// The flags in the frame.
        flags: u32,
    },
    /// A PAD frame uses a pad whose memfd never arrived.
    #[error("pad frame for slot {slot}, which holds no pad")]
    PadUnknown {
        /// The slot in the frame.
        slot: u32,
    },
    /// A new pad's memfd is not sealed against resizing, is empty, or exceeds `max_frame`.
    #[error("pad memfd refused: not sealed against resizing, empty, or larger than max_frame")]
    PadRefused,
    /// A PAD frame is longer than its pad.
    #[error("pad frame of {len} bytes in a pad of {size}")]
    PadOverrun {
        /// Length in the frame.
        len: u64,
        /// Size of the pad.
        size: u64,
    },
    /// A LARGE frame is longer than `max_frame`.
    #[error("large frame of {len} bytes exceeds the maximum {max}")]
    LargeTooLong {
        /// Length in the frame.
        len: u64,
        /// The channel's `max_frame`.
        max: u64,
    },
}

/// Why a blocking ring operation gave up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WaitError {
    /// A closed bit is set (and, for the consumer, the ring is drained).
    Closed,
    /// The deadline passed.
    Timeout,
    /// The liveness probe reported the peer process gone.
    PeerGone,
    /// The peer broke the protocol.
    Corrupt(Corruption),
    /// The caller's stop condition became true (see `Consumer::wait`).
    Stopped,
}

impl From<Corruption> for WaitError {
    fn from(corruption: Corruption) -> Self {
        WaitError::Corrupt(corruption)
    }
}

/// Reports whether the peer process is gone; called between park slices.
pub(crate) type Probe<'a> = &'a mut dyn FnMut() -> bool;

/// A caller's reason to stop waiting (another thread wants this consumer); checked on every
/// spin and, behind the announce fence, before every park. Whoever makes it true rings the
/// consumer's bell with an [`Interrupter`] so a parked waiter looks again.
pub(crate) type Stop<'a> = &'a dyn Fn() -> bool;

/// Longest single futex wait; between slices the waiter re-checks `closed` and the probe.
pub(crate) const PARK_SLICE: Duration = Duration::from_millis(50);

/// Raw view of one ring: its control block and data area, plus whatever keeps them alive.
pub(crate) struct RingRef {
    ctrl: NonNull<RingControl>,
    data: NonNull<u8>,
    capacity: usize,
    _owner: Arc<dyn Any + Send + Sync>,
}

// SAFETY: `RingRef` only points into memory kept alive by `_owner` (itself Send + Sync);
// all shared words are atomics, and the data area is partitioned between the unique
// producer and the unique consumer by the protocol, so moving an end to another thread
// is fine. It is deliberately not Sync: each end's local indices assume one user.
unsafe impl Send for RingRef {}

impl fmt::Debug for RingRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingRef")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl RingRef {
    /// # Safety
    ///
    /// - `ctrl` points to a properly aligned `RingControl` (all-zero bytes are a valid
    ///   fresh one) and `data` to `capacity` bytes aligned to 16, both valid for as long as
    ///   `owner` is alive, and the two do not overlap;
    /// - `capacity` is a power of two in `MIN_CAPACITY..=MAX_CAPACITY`;
    /// - at most one `Producer` and one `Consumer` are ever built over the same ring.
    pub(crate) unsafe fn new(
        ctrl: NonNull<RingControl>,
        data: NonNull<u8>,
        capacity: usize,
        owner: Arc<dyn Any + Send + Sync>,
    ) -> RingRef {
        debug_assert!(
            capacity.is_power_of_two() && (MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity)
        );
        debug_assert_eq!(data.as_ptr() as usize % FRAME_ALIGN, 0);
        RingRef {
            ctrl,
            data,
            capacity,
            _owner: owner,
        }
    }

    #[inline]
    fn ctrl(&self) -> &RingControl {
        // SAFETY: `new`'s contract: valid and aligned while `_owner` lives, which is as long
        // as `self`. Every field is an atomic, so a shared reference is fine even though
        // the peer writes those fields concurrently.
        unsafe { self.ctrl.as_ref() }
    }

    /// The state word of pad `slot` ([`crate::wire::PAD_FREE`] / `PAD_BUSY`).
    ///
    /// # Panics
    ///
    /// If `slot >= PAD_SLOTS` (callers validate slots read from the peer first).
    #[inline]
    pub(crate) fn pad_word(&self, slot: usize) -> &AtomicU32 {
        &self.ctrl().pads[slot]
    }

    #[inline]
    fn mask(&self) -> u64 {
        self.capacity as u64 - 1
    }

    /// Pointer to byte `pos` of the data area (`pos == capacity` is the one-past-the-end
    /// pointer of an empty payload in the last slot).
    #[inline]
    fn at(&self, pos: usize) -> *mut u8 {
        debug_assert!(pos <= self.capacity);
        // SAFETY: `pos <= capacity`, so the result stays inside the data area or one past it.
        unsafe { self.data.as_ptr().add(pos) }
    }

    /// Reads the frame header at `pos` with one volatile copy.
    #[inline]
    fn read_header(&self, pos: usize) -> FrameHeader {
        debug_assert!(pos % FRAME_ALIGN == 0 && pos + FRAME_HEADER_SIZE <= self.capacity);
        // SAFETY: `pos` is 16-aligned and below `capacity` (a multiple of 16), so 16 bytes
        // at `pos` are inside the data area and aligned for `FrameHeader` (align 8). The
        // read is a copy, never a reference; a racing hostile writer can only give us a
        // torn value, which is validated like any other.
        unsafe { std::ptr::read_volatile(self.at(pos) as *const FrameHeader) }
    }

    /// Writes a frame header at `pos`.
    ///
    /// # Safety
    ///
    /// The 16 bytes at `pos` belong to the producer (between the published tail and
    /// `head + capacity`), and `pos` is 16-aligned and at most `capacity - 16`.
    #[inline]
    unsafe fn write_header(&self, pos: usize, header: FrameHeader) {
        // SAFETY: by the caller's contract the bytes are in bounds, aligned and ours.
        unsafe { std::ptr::write_volatile(self.at(pos) as *mut FrameHeader, header) }
    }

    #[inline]
    fn closed(&self) -> bool {
        // Acquire: pairs with the fetch_or in `close`, so a waiter that sees the bit also
        // sees everything the closer did before (nothing in the data area depends on it).
        self.ctrl().closed.load(Ordering::Acquire) != 0
    }

    /// Sets `bits` in `closed` and wakes both sides unconditionally.
    pub(crate) fn close(&self, bits: u32) {
        close_ring(self.ctrl(), bits);
    }

    /// A `Sync` handle that can only ring this ring's consumer bell.
    pub(crate) fn interrupter(&self) -> Interrupter {
        Interrupter {
            ctrl: self.ctrl,
            _owner: Arc::clone(&self._owner),
        }
    }

    /// A `Sync` handle that can only close this ring.
    pub(crate) fn closer(&self) -> RingCloser {
        RingCloser {
            ctrl: self.ctrl,
            _owner: Arc::clone(&self._owner),
        }
    }
}

/// Sets `bits` in `closed` and wakes both sides unconditionally.
fn close_ring(ctrl: &RingControl, bits: u32) {
    // SeqCst RMW + fence: ordered before the sleep-flag stores in `ring_bell`, so a waiter
    // that set its flag after our store of 0 sees the closed bit behind its own SeqCst
    // fence (README, "Closing").
    ctrl.closed.fetch_or(bits, Ordering::SeqCst);
    fence(Ordering::SeqCst);
    ring_bell(&ctrl.consumer_sleeps, true);
    ring_bell(&ctrl.producer_sleeps, true);
}

/// Closes one ring from any thread (see `Closer`).
pub(crate) struct RingCloser {
    ctrl: NonNull<RingControl>,
    _owner: Arc<dyn Any + Send + Sync>,
}

// SAFETY: `close` only touches atomics in the control block, which `_owner` keeps alive.
unsafe impl Send for RingCloser {}
// SAFETY: as above: atomics only, so concurrent `close` calls are fine.
unsafe impl Sync for RingCloser {}

impl fmt::Debug for RingCloser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingCloser").finish_non_exhaustive()
    }
}

impl RingCloser {
    /// Sets `bits` in `closed` and wakes both sides.
    pub(crate) fn close(&self, bits: u32) {
        // SAFETY: same contract as `RingRef::ctrl`: valid while `_owner` lives.
        close_ring(unsafe { self.ctrl.as_ref() }, bits);
    }
}

/// Wakes the consumer of one ring if it is parked, from any thread of the consumer's side,
/// without closing anything: the waiter looks at its index and its stop condition again.
pub struct Interrupter {
    ctrl: NonNull<RingControl>,
    _owner: Arc<dyn Any + Send + Sync>,
}

// SAFETY: `interrupt` only touches atomics in the control block, which `_owner` keeps alive.
unsafe impl Send for Interrupter {}
// SAFETY: as above: atomics only.
unsafe impl Sync for Interrupter {}

impl fmt::Debug for Interrupter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Interrupter").finish_non_exhaustive()
    }
}

impl Interrupter {
    /// Call after making the waiter's stop condition true (with a SeqCst store or RMW):
    /// the SeqCst fence here pairs with the one after the waiter's announce, so either the
    /// waiter sees the condition before it parks or this sees its sleep flag and wakes it
    /// (README, "Wake-up handshake", interrupting a waiter).
    pub fn interrupt(&self) {
        fence(Ordering::SeqCst);
        // SAFETY: same contract as `RingRef::ctrl`: valid while `_owner` lives.
        ring_bell(&unsafe { self.ctrl.as_ref() }.consumer_sleeps, false);
    }
}

/// Clears a sleep flag and wakes its futex if it was set (or always, if `force`).
fn ring_bell(flag: &AtomicU32, force: bool) {
    // Relaxed: the futex syscall compares the value itself; what matters is that the
    // store precedes the wake in program order, which the syscall guarantees.
    if flag.load(Ordering::Relaxed) != 0 || force {
        flag.store(0, Ordering::Relaxed);
        futex_wake(flag);
    }
}

/// Heap-backed storage for [`heap_ring`].
#[cfg(any(test, procpool_loom))]
struct HeapStorage {
    ctrl: Box<RingControl>,
    data: Box<[std::cell::UnsafeCell<u128>]>,
}

// SAFETY: the control block is atomics only; the data area is accessed through raw
// pointers under the ring protocol, which gives each byte one writer at a time.
#[cfg(any(test, procpool_loom))]
unsafe impl Sync for HeapStorage {}
// SAFETY: as above; nothing in it is tied to a thread.
#[cfg(any(test, procpool_loom))]
unsafe impl Send for HeapStorage {}

/// A ring in an ordinary heap allocation: one producer and one consumer in this process.
/// Used by model tests and loom; the shared-memory ring is the same code over a `Region`.
#[cfg(any(test, procpool_loom))]
pub(crate) fn heap_ring(capacity: usize, wait: WaitStrategy) -> (Producer, Consumer) {
    assert!(capacity.is_power_of_two() && (MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity));
    let storage = Arc::new(HeapStorage {
        ctrl: Box::new(RingControl::new()),
        data: (0..capacity / 16)
            .map(|_| std::cell::UnsafeCell::new(0))
            .collect(),
    });
    let ctrl = NonNull::from(&*storage.ctrl);
    // SAFETY: a boxed slice's pointer is never null.
    let data = unsafe { NonNull::new_unchecked(storage.data.as_ptr() as *mut u8) };
    let owner: Arc<dyn Any + Send + Sync> = storage;
    // SAFETY: ctrl and data live in `owner`, data is `capacity` bytes aligned to 16 (u128),
    // capacity was checked above, and exactly one Producer and one Consumer are built.
    let (p, c) = unsafe {
        (
            RingRef::new(ctrl, data, capacity, Arc::clone(&owner)),
            RingRef::new(ctrl, data, capacity, owner),
        )
    };
    (Producer::new(p, wait), Consumer::new(c, wait))
}

/// Where a reserved frame goes: header at `pos`, payload of up to `len` bytes after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) pos: usize,
    pub(crate) len: usize,
}

/// The writing end of a ring.
#[derive(Debug)]
pub(crate) struct Producer {
    ring: RingRef,
    /// Tail including staged (committed but unpublished) frames. Only we write it.
    staged: u64,
    /// The last value stored to the shared `tail`.
    published: u64,
    /// The last validated value of the shared `head`.
    head_cached: u64,
    wait: WaitStrategy,
}

impl Producer {
    /// The producer of a fresh ring. Every index starts at 0 and nothing is read from the
    /// shared words: a peer that pre-set them is caught by the first validation instead
    /// (a non-zero `head` is "beyond tail").
    pub(crate) fn new(ring: RingRef, wait: WaitStrategy) -> Producer {
        Producer {
            ring,
            staged: 0,
            published: 0,
            head_cached: 0,
            wait,
        }
    }

    pub(crate) fn set_wait(&mut self, wait: WaitStrategy) {
        self.wait = wait;
    }

    pub(crate) fn capacity(&self) -> usize {
        self.ring.capacity
    }

    /// The state word of pad `slot` of this ring (see `RingControl::pads`).
    pub(crate) fn pad_word(&self, slot: usize) -> &AtomicU32 {
        debug_assert!(slot < PAD_SLOTS);
        self.ring.pad_word(slot)
    }

    /// Largest payload one in-ring frame can carry.
    pub(crate) fn max_in_ring(&self) -> usize {
        self.ring.capacity - FRAME_HEADER_SIZE
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.ring.closed()
    }

    /// Loads and validates the consumer's head.
    fn refresh_head(&mut self) -> Result<bool, Corruption> {
        // Acquire: pairs with the Release store of head in `Consumer::publish_head`, so the
        // consumer's reads of the bytes it released happen before we overwrite them.
        let head = self.ring.ctrl().head.load(Ordering::Acquire);
        if head < self.head_cached {
            return Err(Corruption::IndexBackwards {
                word: "head",
                previous: self.head_cached,
                found: head,
            });
        }
        if head > self.published {
            return Err(Corruption::HeadBeyondTail {
                head,
                tail: self.published,
            });
        }
        if head % FRAME_ALIGN as u64 != 0 {
            return Err(Corruption::Misaligned {
                word: "head",
                found: head,
            });
        }
        let moved = head != self.head_cached;
        self.head_cached = head;
        Ok(moved)
    }

    /// Reserves room for a frame with a `len`-byte payload without blocking.
    /// `len <= max_in_ring()` (the caller checks). May stage a WRAP frame.
    #[inline]
    pub(crate) fn try_reserve(&mut self, len: usize) -> Result<Option<Slot>, Corruption> {
        debug_assert!(len <= self.max_in_ring());
        let need = frame_size(len) as u64;
        let cap = self.ring.capacity as u64;
        loop {
            let pos = self.staged & self.ring.mask();
            let to_end = cap - pos;
            let free = cap - (self.staged - self.head_cached);
            if need > to_end {
                if to_end <= free {
                    // SAFETY: `to_end <= free`, so the bytes from `pos` to the end are
                    // between our tail and head + capacity: ours. `pos` is 16-aligned
                    // (all indices are) and below capacity.
                    unsafe {
                        self.ring.write_header(
                            pos as usize,
                            FrameHeader {
                                len: 0,
                                kind: KIND_WRAP,
                                reserved: 0,
                            },
                        )
                    };
                    self.staged += to_end;
                    continue;
                }
            } else if need <= free {
                return Ok(Some(Slot {
                    pos: pos as usize,
                    len,
                }));
            }
            if !self.refresh_head()? {
                return Ok(None);
            }
        }
    }

    /// Reserves room, spinning then parking; publishes staged frames before waiting.
    #[inline]
    pub(crate) fn reserve(
        &mut self,
        len: usize,
        deadline: Option<Instant>,
        probe: Probe<'_>,
    ) -> Result<Slot, WaitError> {
        if self.ring.closed() {
            return Err(WaitError::Closed);
        }
        if let Some(slot) = self.try_reserve(len)? {
            return Ok(slot);
        }
        // Never wait on space while holding staged frames the consumer cannot see.
        self.publish();
        let spin_until = Instant::now() + self.wait.spin;
        let mut spins = 0u32;
        // A zero spin window parks at once.
        while !self.wait.spin.is_zero() {
            spin_hint();
            if let Some(slot) = self.try_reserve(len)? {
                return Ok(slot);
            }
            spins = spins.wrapping_add(1);
            if spins % 64 == 0 {
                yield_if_spun_long(spins);
                if self.ring.closed() {
                    return Err(WaitError::Closed);
                }
                if Instant::now() >= spin_until {
                    break;
                }
            }
        }
        loop {
            // Relaxed store + SeqCst fence: the Dekker pair with `Consumer::publish_head`
            // (README, "Wake-up handshake"): either the consumer sees our flag after
            // publishing head, or our head load below sees its store.
            self.ring.ctrl().producer_sleeps.store(1, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            let res = self.try_reserve(len);
            if !matches!(res, Ok(None)) {
                self.ring.ctrl().producer_sleeps.store(0, Ordering::Relaxed);
                return res?.ok_or(WaitError::Closed);
            }
            if self.ring.closed() {
                self.ring.ctrl().producer_sleeps.store(0, Ordering::Relaxed);
                return Err(WaitError::Closed);
            }
            let slice = match remaining(deadline) {
                Some(Duration::ZERO) => {
                    self.ring.ctrl().producer_sleeps.store(0, Ordering::Relaxed);
                    return Err(WaitError::Timeout);
                }
                Some(left) => left.min(PARK_SLICE),
                None => PARK_SLICE,
            };
            futex_wait(&self.ring.ctrl().producer_sleeps, 1, slice);
            // Relaxed: only decides whether to spend a `poll` on the probe. A flag reset to
            // 0 means someone rang (the consumer or a closer): retry before probing.
            if self.ring.ctrl().producer_sleeps.load(Ordering::Relaxed) == 0 {
                continue;
            }
            if probe() {
                self.ring.ctrl().producer_sleeps.store(0, Ordering::Relaxed);
                return Err(WaitError::PeerGone);
            }
        }
    }

    /// Pointer to the payload area of `slot` (16-aligned, `slot.len` bytes, ours).
    #[inline]
    pub(crate) fn payload_ptr(&self, slot: Slot) -> *mut u8 {
        self.ring.at(slot.pos + FRAME_HEADER_SIZE)
    }

    /// Stages a frame of `used <= slot.len` bytes: visible after the next `publish`.
    #[inline]
    pub(crate) fn commit(&mut self, slot: Slot, kind: u32, used: usize) {
        debug_assert!(used <= slot.len);
        debug_assert_eq!(slot.pos as u64, self.staged & self.ring.mask());
        // SAFETY: `slot` came from `try_reserve` on our current `staged` (checked above in
        // debug builds; the Grant borrows the producer mutably, so nothing moved since),
        // which proved the frame's bytes are ours and inside the data area.
        unsafe {
            self.ring.write_header(
                slot.pos,
                FrameHeader {
                    len: used as u32,
                    kind,
                    reserved: 0,
                },
            )
        };
        self.staged += frame_size(used) as u64;
    }

    /// Copies `bytes` into `slot` and stages it as a DATA frame.
    #[inline]
    pub(crate) fn write_frame(&mut self, slot: Slot, kind: u32, bytes: &[u8]) {
        assert!(bytes.len() <= slot.len);
        // SAFETY: the payload area of `slot` is `slot.len` bytes owned by us (see
        // `commit`), and `bytes` is our own memory, so the ranges cannot overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.payload_ptr(slot), bytes.len())
        };
        self.commit(slot, kind, bytes.len());
    }

    /// Makes all staged frames visible with one Release store, then wakes the consumer
    /// if it announced it sleeps.
    #[inline]
    pub(crate) fn publish(&mut self) {
        if self.staged == self.published {
            return;
        }
        let ctrl = self.ring.ctrl();
        // Release: pairs with the Acquire load of tail in `Consumer::refresh_tail`, making
        // the frame bytes written before it visible to the consumer.
        ctrl.tail.store(self.staged, Ordering::Release);
        self.published = self.staged;
        // SeqCst fence: the Dekker pair with `Consumer::wait` (README, "Wake-up handshake").
        fence(Ordering::SeqCst);
        ring_bell(&ctrl.consumer_sleeps, false);
    }

    /// Publishes what is staged and marks the ring closed by the producer.
    pub(crate) fn close(&mut self) {
        self.publish();
        self.ring.close(CLOSED_BY_PRODUCER);
    }
}

/// A frame the consumer has peeked at but not released.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Item {
    /// Payload at data-area offset `pos`, `len` bytes.
    Data { pos: usize, len: usize },
    /// Out-of-band payload announced by a LARGE frame.
    Large(LargeBody),
    /// Out-of-band payload in one of the producer's pads (a PAD frame).
    Pad(PadBody),
}

/// The reading end of a ring.
#[derive(Debug)]
pub(crate) struct Consumer {
    ring: RingRef,
    /// Start of the next frame. Bytes before it are released (maybe not yet published).
    read: u64,
    /// The last value stored to the shared `head`.
    published: u64,
    /// The last validated value of the shared `tail`.
    tail_seen: u64,
    wait: WaitStrategy,
}

impl Consumer {
    /// The consumer of a fresh ring. Every index starts at 0 and nothing is read from the
    /// shared words (our own `head` is ours to overwrite; `tail` is validated on first load).
    pub(crate) fn new(ring: RingRef, wait: WaitStrategy) -> Consumer {
        Consumer {
            ring,
            read: 0,
            published: 0,
            tail_seen: 0,
            wait,
        }
    }

    pub(crate) fn set_wait(&mut self, wait: WaitStrategy) {
        self.wait = wait;
    }

    pub(crate) fn capacity(&self) -> usize {
        self.ring.capacity
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.ring.closed()
    }

    /// The state word of pad `slot` of this ring (see `RingControl::pads`).
    pub(crate) fn pad_word(&self, slot: usize) -> &AtomicU32 {
        debug_assert!(slot < PAD_SLOTS);
        self.ring.pad_word(slot)
    }

    /// A handle that wakes this consumer when it is parked (see [`Interrupter`]).
    pub(crate) fn interrupter(&self) -> Interrupter {
        self.ring.interrupter()
    }

    /// Loads and validates the producer's tail; true if it moved.
    fn refresh_tail(&mut self) -> Result<bool, Corruption> {
        // Acquire: pairs with the Release store of tail in `Producer::publish`, so the frame
        // bytes written before it are visible to our reads.
        let tail = self.ring.ctrl().tail.load(Ordering::Acquire);
        if tail < self.tail_seen {
            return Err(Corruption::IndexBackwards {
                word: "tail",
                previous: self.tail_seen,
                found: tail,
            });
        }
        if tail - self.published > self.ring.capacity as u64 {
            return Err(Corruption::TailBeyondCapacity {
                head: self.published,
                tail,
                capacity: self.ring.capacity as u64,
            });
        }
        if tail % FRAME_ALIGN as u64 != 0 {
            return Err(Corruption::Misaligned {
                word: "tail",
                found: tail,
            });
        }
        let moved = tail != self.tail_seen;
        self.tail_seen = tail;
        Ok(moved)
    }

    /// Whether a frame (or WRAP) is readable, refreshing `tail` if needed.
    #[inline]
    pub(crate) fn has_data(&mut self) -> Result<bool, Corruption> {
        if self.read != self.tail_seen {
            return Ok(true);
        }
        self.refresh_tail()?;
        Ok(self.read != self.tail_seen)
    }

    /// The next frame and the index just past it, without blocking. Skips WRAP frames.
    #[inline]
    pub(crate) fn try_peek(&mut self) -> Result<Option<(Item, u64)>, Corruption> {
        let cap = self.ring.capacity as u64;
        loop {
            if !self.has_data()? {
                return Ok(None);
            }
            // Both indices are 16-aligned and read < tail_seen, so at least 16 bytes.
            let available = self.tail_seen - self.read;
            let pos = self.read & self.ring.mask();
            let header = self.ring.read_header(pos as usize);
            if header.reserved != 0 {
                return Err(Corruption::BadReserved(header.reserved));
            }
            let len = u64::from(header.len);
            match header.kind {
                KIND_WRAP if len == 0 => {
                    let to_end = cap - pos;
                    if to_end > available {
                        return Err(Corruption::LengthOutOfBounds {
                            len: to_end,
                            available,
                        });
                    }
                    self.read += to_end;
                }
                KIND_DATA | KIND_LARGE | KIND_PAD => {
                    if header.kind != KIND_DATA && len != LARGE_BODY_SIZE as u64 {
                        return Err(Corruption::BadKind {
                            kind: header.kind,
                            len: header.len,
                        });
                    }
                    let size = FRAME_HEADER_SIZE as u64 + len.div_ceil(16) * 16;
                    if pos + size > cap {
                        return Err(Corruption::FrameCrossesEnd {
                            offset: pos,
                            len,
                            capacity: cap,
                        });
                    }
                    if size > available {
                        return Err(Corruption::LengthOutOfBounds { len, available });
                    }
                    let payload = pos as usize + FRAME_HEADER_SIZE;
                    let item = if header.kind == KIND_DATA {
                        Item::Data {
                            pos: payload,
                            len: len as usize,
                        }
                    } else if header.kind == KIND_LARGE {
                        // SAFETY: `payload + 16 <= cap` (checked: pos + size <= cap), the
                        // offset is 16-aligned, and the bytes are published and not yet
                        // released, so the producer does not write them. Volatile copy.
                        Item::Large(unsafe {
                            std::ptr::read_volatile(self.ring.at(payload) as *const LargeBody)
                        })
                    } else {
                        // SAFETY: as for LARGE: 16 in-bounds, 16-aligned, published bytes
                        // (PadBody has the same size and alignment); a volatile copy.
                        Item::Pad(unsafe {
                            std::ptr::read_volatile(self.ring.at(payload) as *const PadBody)
                        })
                    };
                    return Ok(Some((item, self.read + size)));
                }
                kind => {
                    return Err(Corruption::BadKind {
                        kind,
                        len: header.len,
                    });
                }
            }
        }
    }

    /// The payload bytes of `Item::Data { pos, len }` as returned by `try_peek`.
    ///
    /// # Safety
    ///
    /// `pos` and `len` come from the latest `try_peek`, and the frame has not been
    /// released; the returned slice must not outlive the release.
    #[inline]
    pub(crate) unsafe fn payload(&self, pos: usize, len: usize) -> &[u8] {
        debug_assert!(pos + len <= self.ring.capacity);
        // SAFETY: `try_peek` checked `pos + len <= capacity`; the bytes are published (the
        // Acquire load of tail made them visible) and, until release, the producer does not
        // write them. See the module docs for what a hostile producer can and cannot do.
        unsafe { std::slice::from_raw_parts(self.ring.at(pos), len) }
    }

    /// Releases everything before `end` (the index `try_peek` returned). Publishes `head`
    /// lazily: see README, "Publishing head".
    #[inline]
    pub(crate) fn release(&mut self, end: u64) {
        debug_assert!(end >= self.read && end <= self.tail_seen);
        self.read = end;
        let unpublished = self.read - self.published;
        // Relaxed load of the producer's sleep flag: a stale 0 only delays the publish until
        // the ring runs dry, when `publish_head` re-checks it behind a SeqCst fence.
        if unpublished >= (self.ring.capacity / 4) as u64
            || self.ring.ctrl().producer_sleeps.load(Ordering::Relaxed) != 0
        {
            self.publish_head();
        }
    }

    /// Stores `head` (one Release store for everything released) and wakes a producer
    /// that announced it waits for space.
    pub(crate) fn publish_head(&mut self) {
        if self.read == self.published {
            return;
        }
        let ctrl = self.ring.ctrl();
        // Release: pairs with the Acquire load of head in `Producer::refresh_head`: our
        // reads of the released bytes happen before the producer reuses them.
        ctrl.head.store(self.read, Ordering::Release);
        self.published = self.read;
        // SeqCst fence: the Dekker pair with `Producer::reserve` (README, "Wake-up handshake").
        fence(Ordering::SeqCst);
        ring_bell(&ctrl.producer_sleeps, false);
    }

    /// Blocks until data is readable: spin, then park. Publishes head first.
    ///
    /// `stop` (if any) ends the wait with `WaitError::Stopped` when it returns true.
    pub(crate) fn wait(
        &mut self,
        deadline: Option<Instant>,
        probe: Probe<'_>,
        stop: Option<Stop<'_>>,
    ) -> Result<(), WaitError> {
        self.publish_head();
        let spin_until = Instant::now() + self.wait.spin;
        let mut spins = 0u32;
        let stopped = || stop.is_some_and(|stop| stop());
        // A zero spin window parks at once (the park loop still looks first).
        while !self.wait.spin.is_zero() {
            if self.has_data()? {
                return Ok(());
            }
            if stopped() {
                return Err(WaitError::Stopped);
            }
            spin_hint();
            spins = spins.wrapping_add(1);
            if spins % 64 == 0 {
                yield_if_spun_long(spins);
                if self.ring.closed() {
                    return if self.has_data()? {
                        Ok(())
                    } else {
                        Err(WaitError::Closed)
                    };
                }
                if Instant::now() >= spin_until {
                    break;
                }
            }
        }
        loop {
            // Relaxed store + SeqCst fence: the Dekker pair with `Producer::publish`.
            self.ring.ctrl().consumer_sleeps.store(1, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            let res = self.has_data();
            if !matches!(res, Ok(false)) {
                self.ring.ctrl().consumer_sleeps.store(0, Ordering::Relaxed);
                return res.map(|_| ()).map_err(WaitError::from);
            }
            if self.ring.closed() {
                self.ring.ctrl().consumer_sleeps.store(0, Ordering::Relaxed);
                return Err(WaitError::Closed);
            }
            // Behind the fence above: pairs with the fence in `Interrupter::interrupt`.
            if stopped() {
                self.ring.ctrl().consumer_sleeps.store(0, Ordering::Relaxed);
                return Err(WaitError::Stopped);
            }
            let slice = match remaining(deadline) {
                Some(Duration::ZERO) => {
                    self.ring.ctrl().consumer_sleeps.store(0, Ordering::Relaxed);
                    return Err(WaitError::Timeout);
                }
                Some(left) => left.min(PARK_SLICE),
                None => PARK_SLICE,
            };
            futex_wait(&self.ring.ctrl().consumer_sleeps, 1, slice);
            // Relaxed: only decides whether to spend a `poll` on the probe. A flag reset to
            // 0 means someone rang (the producer or a closer): look before probing.
            if self.ring.ctrl().consumer_sleeps.load(Ordering::Relaxed) == 0 {
                if self.has_data()? {
                    return Ok(());
                }
                if stopped() {
                    return Err(WaitError::Stopped);
                }
                continue;
            }
            if probe() {
                self.ring.ctrl().consumer_sleeps.store(0, Ordering::Relaxed);
                // Data published just before the peer died is still delivered.
                return if self.has_data()? {
                    Ok(())
                } else {
                    Err(WaitError::PeerGone)
                };
            }
        }
    }

    /// Publishes head and marks the ring closed by the consumer.
    pub(crate) fn close(&mut self) {
        self.publish_head();
        self.ring.close(CLOSED_BY_CONSUMER);
    }
}

/// Every 64 spins (a few µs), offer the core to another runnable thread: the peer we wait
/// for may be queued behind us on this very core (nothing moves a spinning thread to the
/// other core, and a pool's parent and worker end up sharing one this way on a loaded
/// machine: with the first yield after 256 spins a round trip took ~25 µs instead of ~4 µs
/// then). On an idle core `sched_yield` returns at once.
fn yield_if_spun_long(spins: u32) {
    if spins >= 64 {
        crate::sync::spin_yield();
    }
}

/// Time left until `deadline` (`None` = forever, `Some(ZERO)` = passed).
fn remaining(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|deadline| deadline.saturating_duration_since(Instant::now()))
}
