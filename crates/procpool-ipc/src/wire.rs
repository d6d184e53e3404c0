//! The byte layout of a shared region and of the frames inside its rings.
//!
//! This is one of procpool's two wire surfaces (the other is the task protocol in
//! procpool-worker). Everything here is `#[repr(C)]`, free of pointers, and versioned by
//! [`REGION_MAGIC`] and [`LAYOUT_VERSION`]. Change any offset, size or meaning and bump
//! [`LAYOUT_VERSION`].
//!
//! ```text
//! offset 0                 RegionHeader (written once by the creator, read once by the opener)
//! MAILBOX_OFFSET (2048)      16 atomic u64 mailbox words, either side loads/stores them at any time
//! RING_BLOCK_OFFSET[0]     ring 0 (submission, creator -> opener): RingControl, then `capacity` data bytes
//! RING_BLOCK_OFFSET[1]     ring 1 (completion, opener -> creator): RingControl, then `capacity` data bytes
//! ```
//!
//! Payloads above a ring's large threshold travel out of band: in a reusable *pad* of the
//! producer (a memfd sealed against resizing, mapped by both sides; KIND_PAD, version 2) or, when
//! both pads are busy or the payload is above the pad cap, in a fresh memfd sealed read-only
//! (KIND_LARGE).
//!
//! A frame is a 16-byte [`FrameHeader`] followed by its payload padded to 16 bytes,
//! so every header and every payload starts 16-byte aligned.

use crate::sync::{AtomicU32, AtomicU64};

/// `b"PPOOLIPC"` read as a little-endian u64. The opener checks it before anything else.
pub(crate) const REGION_MAGIC: u64 = u64::from_le_bytes(*b"PPOOLIPC");
/// Version of everything in this module. Bumped on any layout or meaning change.
pub(crate) const LAYOUT_VERSION: u32 = 2;
/// Size of the region header area; ring blocks start at page-aligned offsets after it.
pub(crate) const REGION_HEADER_SIZE: usize = 4096;
/// Offset of the mailbox words (`crate::mailbox`) inside the region header page.
pub(crate) const MAILBOX_OFFSET: usize = 2048;
/// Number of mailbox words (`crate::mailbox::MAILBOX_WORDS`, which is this value).
pub(crate) const MAILBOX_WORDS: usize = 16;
/// Size of the control block at the start of every ring block (the data area follows it).
pub(crate) const RING_CONTROL_SIZE: usize = 4096;
/// Alignment of frames (headers and payloads).
pub(crate) const FRAME_ALIGN: usize = 16;
/// Size of a [`FrameHeader`].
pub(crate) const FRAME_HEADER_SIZE: usize = 16;
/// Smallest ring capacity accepted (bytes of data area).
pub(crate) const MIN_CAPACITY: usize = 256;
/// Largest ring capacity accepted (frame lengths in the ring are `u32`).
pub(crate) const MAX_CAPACITY: usize = 1 << 30;
/// In-ring body of a LARGE frame: the out-of-band length and the sequence number.
pub(crate) const LARGE_BODY_SIZE: usize = 16;

/// Frame kind: the payload follows the header in the ring.
pub(crate) const KIND_DATA: u32 = 0x4441_5441; // "DATA"
/// Frame kind: padding up to the end of the data area; the next frame starts at offset 0.
pub(crate) const KIND_WRAP: u32 = 0x5752_4150; // "WRAP"
/// Frame kind: the payload is out of band in its own sealed memfd, sent over the socket.
pub(crate) const KIND_LARGE: u32 = 0x4c52_4745; // "LRGE"
/// Frame kind: the payload is out of band in one of the producer's reusable pads
/// ([`PadBody`]); the pad's memfd crossed the socket with the first frame that used it.
pub(crate) const KIND_PAD: u32 = 0x5041_4446; // "PADF"

/// Reusable out-of-band buffers ("pads") per ring. The producer owns them; the word
/// [`RingControl::pads`]`[slot]` says whether the consumer still reads the last frame in one.
pub(crate) const PAD_SLOTS: usize = 2;
/// [`RingControl::pads`] value: the pad is free for the producer.
pub(crate) const PAD_FREE: u32 = 0;
/// [`RingControl::pads`] value: a published frame lives in the pad until the consumer
/// releases it (stores [`PAD_FREE`]).
pub(crate) const PAD_BUSY: u32 = 1;
/// [`PadBody::flags`] bit: the pad is new; its memfd is the next fd on the socket, sent with
/// the next out-of-band sequence number (shared with LARGE frames).
pub(crate) const PAD_NEW: u32 = 1;

/// Header at offset 0 of a region. Written by the creator before the region is handed
/// over and never changed afterwards; the opener copies it out with one volatile read
/// and validates the copy (see `Region::read_header`), so no reference into shared
/// memory is ever made from it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RegionHeader {
    /// [`REGION_MAGIC`].
    pub(crate) magic: u64,
    /// [`LAYOUT_VERSION`].
    pub(crate) layout_version: u32,
    /// `size_of::<RegionHeader>()`, a cheap second check of the layout.
    pub(crate) header_size: u32,
    /// Total length of the region in bytes; must equal the memfd's size.
    pub(crate) region_len: u64,
    /// Offsets of the two ring blocks from the start of the region (page aligned).
    pub(crate) ring_offset: [u64; 2],
    /// Data-area capacity of each ring in bytes (a power of two).
    pub(crate) ring_capacity: [u64; 2],
    /// Per ring: payloads longer than this go out of band (LARGE frames).
    pub(crate) large_threshold: [u64; 2],
    /// Hard cap on one frame's payload, in band or out of band.
    pub(crate) max_frame: u64,
}

/// Shared control block at the start of a ring block. One producer process and one
/// consumer process share it; the words sit on separate 128-byte lines (two cache lines,
/// because the adjacent-line prefetcher pairs them) so the two sides do not false-share.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct RingControl {
    /// Written only by the producer: total bytes ever published (frames and WRAP padding).
    /// The next frame starts at `tail & (capacity - 1)`. Stored with Release, loaded with Acquire.
    /// Invariant (for an honest producer): `head <= tail <= head + capacity`, `tail % 16 == 0`.
    pub(crate) tail: Line<AtomicU64>,
    /// Written only by the consumer: total bytes ever released.
    /// Invariant (for an honest consumer): `head <= tail`, `head % 16 == 0`.
    pub(crate) head: Line<AtomicU64>,
    /// Futex word the consumer parks on: 1 = "consumer is (about to be) asleep, wake me",
    /// 0 = awake. Set to 1 by the consumer, reset to 0 by whoever wakes it.
    pub(crate) consumer_sleeps: Line<AtomicU32>,
    /// Futex word the producer parks on when the ring is full; same protocol as
    /// `consumer_sleeps`, with the roles swapped.
    pub(crate) producer_sleeps: Line<AtomicU32>,
    /// Closed bits: [`CLOSED_BY_PRODUCER`] | [`CLOSED_BY_CONSUMER`]. Only ever OR-ed in.
    pub(crate) closed: Line<AtomicU32>,
    /// Per pad slot, [`PAD_FREE`] or [`PAD_BUSY`]: the producer stores BUSY (Relaxed, before
    /// publishing the PAD frame, whose Release publish orders it) only after it loaded FREE
    /// with Acquire; the consumer stores FREE with Release when it drops the frame, so its
    /// reads of the pad happen before the producer's next writes.
    pub(crate) pads: Line<[AtomicU32; PAD_SLOTS]>,
}

/// Bit in [`RingControl::closed`]: no more frames will be published.
pub(crate) const CLOSED_BY_PRODUCER: u32 = 1;
/// Bit in [`RingControl::closed`]: nobody will read any more frames.
pub(crate) const CLOSED_BY_CONSUMER: u32 = 2;

/// One value alone on a 128-byte line (see [`RingControl`]).
#[repr(C, align(128))]
#[derive(Debug, Default)]
pub(crate) struct Line<T>(pub(crate) T);

impl<T> std::ops::Deref for Line<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl RingControl {
    /// A fresh control block: empty, open, nobody asleep.
    #[cfg(any(test, procpool_loom))]
    pub(crate) fn new() -> Self {
        RingControl {
            tail: Line(AtomicU64::new(0)),
            head: Line(AtomicU64::new(0)),
            consumer_sleeps: Line(AtomicU32::new(0)),
            producer_sleeps: Line(AtomicU32::new(0)),
            closed: Line(AtomicU32::new(0)),
            pads: Line([AtomicU32::new(PAD_FREE), AtomicU32::new(PAD_FREE)]),
        }
    }
}

/// The 16 bytes in front of every frame. Written by the producer into space it owns,
/// read by the consumer with one volatile copy and validated before use.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    /// Payload length in bytes (without padding). WRAP: 0. LARGE: [`LARGE_BODY_SIZE`].
    pub(crate) len: u32,
    /// [`KIND_DATA`], [`KIND_WRAP`] or [`KIND_LARGE`].
    pub(crate) kind: u32,
    /// Must be zero; reserved for a later layout version.
    pub(crate) reserved: u64,
}

/// Body of a LARGE frame (in the ring, after its header).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LargeBody {
    /// Length of the out-of-band payload; must equal the memfd's size.
    pub(crate) len: u64,
    /// 0, 1, 2, ... per ring; must match the sequence number sent with the fd.
    pub(crate) seq: u64,
}

/// Body of a PAD frame (in the ring, after its header; the same size as a [`LargeBody`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PadBody {
    /// Length of the payload, from offset 0 of the pad; at most the pad's size.
    pub(crate) len: u64,
    /// Which pad (`< PAD_SLOTS`).
    pub(crate) slot: u32,
    /// [`PAD_NEW`] or 0; other bits must be zero.
    pub(crate) flags: u32,
}

/// `n` rounded up to a multiple of [`FRAME_ALIGN`] (saturating: callers bound `n` first).
pub(crate) const fn pad16(n: usize) -> usize {
    (n.saturating_add(FRAME_ALIGN - 1)) & !(FRAME_ALIGN - 1)
}

/// Bytes a frame with an `len`-byte payload occupies in the ring.
pub(crate) const fn frame_size(len: usize) -> usize {
    FRAME_HEADER_SIZE + pad16(len)
}

const _: () = {
    assert!(std::mem::size_of::<FrameHeader>() == FRAME_HEADER_SIZE);
    assert!(std::mem::size_of::<LargeBody>() == LARGE_BODY_SIZE);
    assert!(std::mem::size_of::<PadBody>() == LARGE_BODY_SIZE);
    assert!(std::mem::size_of::<RegionHeader>() <= MAILBOX_OFFSET);
    assert!(MAILBOX_OFFSET + MAILBOX_WORDS * 8 <= REGION_HEADER_SIZE);
    assert!(std::mem::size_of::<RingControl>() <= RING_CONTROL_SIZE);
};

#[cfg(all(test, not(procpool_loom)))]
mod tests {
    use super::*;

    #[test]
    fn control_words_sit_on_separate_lines() {
        let ctrl = RingControl::new();
        let base = &ctrl as *const RingControl as usize;
        let offsets = [
            &*ctrl.tail as *const AtomicU64 as usize - base,
            &*ctrl.head as *const AtomicU64 as usize - base,
            &*ctrl.consumer_sleeps as *const AtomicU32 as usize - base,
            &*ctrl.producer_sleeps as *const AtomicU32 as usize - base,
            &*ctrl.closed as *const AtomicU32 as usize - base,
            &ctrl.pads[0] as *const AtomicU32 as usize - base,
        ];
        assert_eq!(offsets, [0, 128, 256, 384, 512, 640]);
    }

    #[test]
    fn padding_rounds_to_sixteen() {
        assert_eq!(pad16(0), 0);
        assert_eq!(pad16(1), 16);
        assert_eq!(pad16(16), 16);
        assert_eq!(pad16(17), 32);
        assert_eq!(frame_size(0), 16);
        assert_eq!(frame_size(64), 80);
    }
}
