//! The duplex channel: one region holding two rings, plus a Unix seqpacket socket pair.
//!
//! The creator (the parent) produces into ring 0 (submission) and consumes ring 1
//! (completion); the opener (the worker) does the opposite. The socket pair carries the
//! memfds of LARGE frames and tells each side when the other process is gone (a killed
//! process sets no flags, but the kernel closes its socket, which we see as `POLLHUP`).

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::doorbell::WaitStrategy;
use crate::error::{CreateError, OpenError, RecvError, SendError};
use crate::fdpass::{recv_with_fds, send_with_fds};
use crate::mailbox::Mailbox;
use crate::ring::{
    Consumer, Corruption, Interrupter, Item, PARK_SLICE, Producer, RingCloser, RingRef, Slot,
    WaitError,
};
use crate::segment::{
    OobOpenError, OobReader, OobWriter, PadReader, PadWriter, Region, RegionOpenError, SealedFile,
    SealedMap,
};
use crate::sync::{AtomicU32, Ordering};
use crate::wire::{
    CLOSED_BY_CONSUMER, CLOSED_BY_PRODUCER, FRAME_HEADER_SIZE, KIND_DATA, KIND_LARGE, KIND_PAD,
    LARGE_BODY_SIZE, LAYOUT_VERSION, LargeBody, MAX_CAPACITY, MIN_CAPACITY, PAD_BUSY, PAD_FREE,
    PAD_NEW, PAD_SLOTS, PadBody, REGION_HEADER_SIZE, REGION_MAGIC, RING_CONTROL_SIZE, RegionHeader,
    RingControl,
};

#[cfg(test)]
mod tests;

/// Sizes and limits of a channel, chosen by the creator and recorded in the region header
/// (the opener adopts them). Builder-style: each setter returns the changed config.
///
/// # Examples
///
/// ```
/// # use procpool_ipc::ChannelConfig;
/// # use std::time::Duration;
/// let config = ChannelConfig::new()
///     .submission_capacity(64 * 1024)
///     .completion_capacity(256 * 1024)
///     .spin(Duration::from_micros(20));
/// # let _ = config;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelConfig {
    capacity: [usize; 2],
    wait: WaitStrategy,
    large_threshold: Option<usize>,
    max_frame: u64,
    pad_limit: usize,
}

/// Default [`ChannelConfig::pad_limit`]: 256 MiB.
pub const DEFAULT_PAD_LIMIT: usize = 256 << 20;

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            capacity: [1 << 20, 1 << 20],
            wait: WaitStrategy::default(),
            large_threshold: None,
            max_frame: 4 << 30,
            pad_limit: DEFAULT_PAD_LIMIT,
        }
    }
}

impl ChannelConfig {
    /// The defaults: 1 MiB per ring, 50 µs spin, large threshold a quarter of the ring,
    /// `max_frame` 4 GiB.
    pub fn new() -> Self {
        Self::default()
    }

    /// Data bytes of the submission ring (creator → opener); a power of two in 256 B..=1 GiB.
    pub fn submission_capacity(mut self, bytes: usize) -> Self {
        self.capacity[0] = bytes;
        self
    }

    /// Data bytes of the completion ring (opener → creator); a power of two in 256 B..=1 GiB.
    pub fn completion_capacity(mut self, bytes: usize) -> Self {
        self.capacity[1] = bytes;
        self
    }

    /// How long the creator's blocking calls spin before parking (the opener uses the
    /// default unless it calls `set_wait_strategy`).
    pub fn spin(mut self, spin: Duration) -> Self {
        self.wait = WaitStrategy { spin };
        self
    }

    /// The creator's whole wait strategy.
    pub fn wait_strategy(mut self, wait: WaitStrategy) -> Self {
        self.wait = wait;
        self
    }

    /// Payloads longer than this many bytes go out of band, in their own memfd. Default:
    /// a quarter of each ring's capacity; clamped to what one ring frame can hold.
    pub fn large_threshold(mut self, bytes: usize) -> Self {
        self.large_threshold = Some(bytes);
        self
    }

    /// Hard cap on one frame's payload, in band or out of band (default 4 GiB).
    pub fn max_frame(mut self, bytes: u64) -> Self {
        self.max_frame = bytes;
        self
    }

    /// Largest reusable out-of-band buffer (*pad*) the creator's sender keeps (default
    /// [`DEFAULT_PAD_LIMIT`]); larger payloads travel in a fresh sealed memfd each. Zero
    /// turns pads off. The opener's sender uses the default unless it calls
    /// [`Sender::set_pad_limit`].
    pub fn pad_limit(mut self, bytes: usize) -> Self {
        self.pad_limit = bytes;
        self
    }

    fn threshold_for(&self, capacity: usize) -> usize {
        let max_in_ring = capacity - FRAME_HEADER_SIZE;
        self.large_threshold
            .unwrap_or(capacity / 4)
            .min(max_in_ring)
    }
}

/// What the opener needs: the region's memfd and its end of the socket pair.
///
/// Both fds are close-on-exec. To give them to a spawned child, `dup2` them onto the
/// child's chosen numbers in `pre_exec` (that clears close-on-exec) and rebuild with
/// [`Handoff::new`]; for a process that attaches later use [`send_handoff`](crate::send_handoff).
/// The parent must drop its `Handoff` once the child has it: while the parent still holds
/// the child's socket end, the child's death cannot be seen as EOF.
#[derive(Debug)]
pub struct Handoff {
    region: OwnedFd,
    socket: OwnedFd,
}

impl Handoff {
    /// Rebuilds a hand-off from fds received some other way (e.g. inherited).
    pub fn new(region: OwnedFd, socket: OwnedFd) -> Self {
        Handoff { region, socket }
    }

    /// The region's memfd.
    pub fn region_fd(&self) -> BorrowedFd<'_> {
        self.region.as_fd()
    }

    /// The opener's end of the socket pair.
    pub fn socket_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }

    /// Both fds: `(region, socket)`.
    pub fn into_fds(self) -> (OwnedFd, OwnedFd) {
        (self.region, self.socket)
    }
}

/// The socket pair end shared by a side's [`Sender`] and [`Receiver`].
#[derive(Debug)]
struct Link {
    socket: OwnedFd,
    /// 1 once the probe saw the peer's socket close; never reset.
    peer_gone: AtomicU32,
}

impl Link {
    /// Whether the peer's end of the socket pair is closed (its process died or it
    /// dropped its endpoint). One `poll` with zero timeout.
    fn peer_gone(&self) -> bool {
        // Relaxed: a sticky hint; the authoritative check is the poll below.
        if self.peer_gone.load(Ordering::Relaxed) != 0 {
            return true;
        }
        let mut pollfd = libc::pollfd {
            fd: self.socket.as_raw_fd(),
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        let res = unsafe { libc::poll(&mut pollfd, 1, 0) };
        let gone =
            res > 0 && pollfd.revents & (libc::POLLHUP | libc::POLLRDHUP | libc::POLLERR) != 0;
        if gone {
            self.peer_gone.store(1, Ordering::Relaxed);
        }
        gone
    }

    /// Whether an earlier probe already saw the peer gone (no syscall).
    #[inline]
    fn known_gone(&self) -> bool {
        // Relaxed: a sticky local flag; a stale 0 only means one more probe later.
        self.peer_gone.load(Ordering::Relaxed) != 0
    }
}

/// One side of a duplex channel: owns its view of the region and its socket end.
/// Use it whole, or [`split`](Endpoint::split) it into a [`Sender`] and a [`Receiver`]
/// for two threads. Dropping it closes both directions and wakes the peer.
///
/// # Examples
///
/// ```
/// # use procpool_ipc::{ChannelConfig, Endpoint};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (parent, handoff) = Endpoint::create(&ChannelConfig::new())?;
/// let child = Endpoint::open(handoff)?; // normally in another process
/// let (mut to_child, _from_child) = parent.split();
/// let (_to_parent, mut from_parent) = child.split();
/// to_child.send(b"hello")?;
/// assert_eq!(&*from_parent.recv()?, b"hello");
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Endpoint {
    sender: Sender,
    receiver: Receiver,
    closer: Closer,
    mailbox: Mailbox,
}

/// A validated copy of the region header, in host types.
#[derive(Clone, Copy, Debug)]
struct Layout {
    offset: [usize; 2],
    capacity: [usize; 2],
    threshold: [usize; 2],
    max_frame: u64,
    region_len: usize,
}

impl Layout {
    fn for_config(config: &ChannelConfig) -> Result<Layout, CreateError> {
        let mut offset = [0; 2];
        let mut threshold = [0; 2];
        let mut cursor = REGION_HEADER_SIZE;
        for idx in 0..2 {
            let capacity = config.capacity[idx];
            if !capacity.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
                return Err(CreateError::InvalidConfig(
                    "ring capacity must be a power of two in 256 B..=1 GiB",
                ));
            }
            offset[idx] = cursor;
            cursor += (RING_CONTROL_SIZE + capacity).next_multiple_of(4096);
            threshold[idx] = config.threshold_for(capacity);
        }
        if config.max_frame == 0 {
            return Err(CreateError::InvalidConfig("max_frame must be positive"));
        }
        Ok(Layout {
            offset,
            capacity: config.capacity,
            threshold,
            max_frame: config.max_frame,
            region_len: cursor,
        })
    }

    fn header(&self) -> RegionHeader {
        RegionHeader {
            magic: REGION_MAGIC,
            layout_version: LAYOUT_VERSION,
            header_size: size_of::<RegionHeader>() as u32,
            region_len: self.region_len as u64,
            ring_offset: self.offset.map(|off| off as u64),
            ring_capacity: self.capacity.map(|cap| cap as u64),
            large_threshold: self.threshold.map(|thr| thr as u64),
            max_frame: self.max_frame,
        }
    }

    /// Validates a header copied out of a region of `mapped_len` bytes.
    fn from_header(header: &RegionHeader, mapped_len: usize) -> Result<Layout, OpenError> {
        if header.magic != REGION_MAGIC {
            return Err(OpenError::BadMagic {
                found: header.magic,
            });
        }
        if header.layout_version != LAYOUT_VERSION {
            return Err(OpenError::VersionMismatch {
                expected: LAYOUT_VERSION,
                found: header.layout_version,
            });
        }
        if header.header_size as usize != size_of::<RegionHeader>() {
            return Err(OpenError::BadLayout("header size"));
        }
        if header.region_len != mapped_len as u64 {
            return Err(OpenError::SizeMismatch {
                expected: header.region_len,
                found: mapped_len as u64,
            });
        }
        let mut layout = Layout {
            offset: [0; 2],
            capacity: [0; 2],
            threshold: [0; 2],
            max_frame: header.max_frame,
            region_len: mapped_len,
        };
        let mut previous_end = REGION_HEADER_SIZE as u64;
        for idx in 0..2 {
            let capacity = header.ring_capacity[idx];
            let offset = header.ring_offset[idx];
            if !capacity.is_power_of_two()
                || !(MIN_CAPACITY as u64..=MAX_CAPACITY as u64).contains(&capacity)
            {
                return Err(OpenError::BadLayout("ring capacity"));
            }
            if offset % 4096 != 0 || offset < previous_end {
                return Err(OpenError::BadLayout("ring offset"));
            }
            let end = offset
                .checked_add(RING_CONTROL_SIZE as u64 + capacity)
                .filter(|end| *end <= mapped_len as u64)
                .ok_or(OpenError::BadLayout("ring beyond the region"))?;
            let threshold = header.large_threshold[idx];
            if threshold > capacity - FRAME_HEADER_SIZE as u64 {
                return Err(OpenError::BadLayout("large threshold"));
            }
            previous_end = end;
            layout.offset[idx] = offset as usize;
            layout.capacity[idx] = capacity as usize;
            layout.threshold[idx] = threshold as usize;
        }
        if header.max_frame == 0 {
            return Err(OpenError::BadLayout("max_frame"));
        }
        Ok(layout)
    }
}

impl Endpoint {
    /// Creates a channel: the region, both rings and the socket pair. Returns the
    /// creator's endpoint and the [`Handoff`] for the other process.
    ///
    /// # Errors
    ///
    /// [`CreateError::InvalidConfig`] for impossible sizes, [`CreateError::Io`] when a
    /// syscall fails (e.g. out of memory for the memfd).
    pub fn create(config: &ChannelConfig) -> Result<(Endpoint, Handoff), CreateError> {
        let layout = Layout::for_config(config)?;
        let region = Region::create(layout.region_len)?;
        // SAFETY: the region was just created, is at least REGION_HEADER_SIZE bytes, and
        // nobody else has it yet; the base is page-aligned, so aligned for the header.
        unsafe { std::ptr::write_volatile(region.base() as *mut RegionHeader, layout.header()) };
        let (mine, theirs) = socket_pair()?;
        let handoff = Handoff {
            region: region.dup_fd()?,
            socket: theirs,
        };
        let mut endpoint = Endpoint::assemble(Arc::new(region), layout, mine, 0, config.wait);
        endpoint.sender.set_pad_limit(config.pad_limit);
        Ok((endpoint, handoff))
    }

    /// Opens the other side of a channel from its [`Handoff`], after checking the
    /// memfd's seals and size and validating the region header.
    ///
    /// # Errors
    ///
    /// [`OpenError`] describes what did not match; nothing in the region is trusted
    /// before the header has been validated.
    pub fn open(handoff: Handoff) -> Result<Endpoint, OpenError> {
        let Handoff { region, socket } = handoff;
        check_socket(socket.as_fd())?;
        let region = Region::open(region).map_err(|err| match err {
            RegionOpenError::NotSealed { seals } => OpenError::NotSealed { seals },
            RegionOpenError::Io(err) => OpenError::Io(err),
        })?;
        if region.len() < REGION_HEADER_SIZE {
            return Err(OpenError::SizeMismatch {
                expected: REGION_HEADER_SIZE as u64,
                found: region.len() as u64,
            });
        }
        // SAFETY: the mapping is at least REGION_HEADER_SIZE bytes (checked) and page
        // aligned; the header is plain integers (any bit pattern is valid) and is copied
        // out with one volatile read, never referenced.
        let header = unsafe { std::ptr::read_volatile(region.base() as *const RegionHeader) };
        let layout = Layout::from_header(&header, region.len())?;
        Ok(Endpoint::assemble(
            Arc::new(region),
            layout,
            socket,
            1,
            WaitStrategy::default(),
        ))
    }

    /// Builds the endpoint of side `side` (0 = creator, produces into ring 0).
    fn assemble(
        region: Arc<Region>,
        layout: Layout,
        socket: OwnedFd,
        side: usize,
        wait: WaitStrategy,
    ) -> Endpoint {
        let ring = |idx: usize| {
            let block = layout.offset[idx];
            // SAFETY: `Layout` guarantees `block + RING_CONTROL_SIZE + capacity <= len`
            // (checked in `from_header`, by construction in `for_config`), blocks are
            // page-aligned and disjoint, and the memory stays mapped while `region` (the
            // owner) lives. A zero-filled control block is a valid fresh `RingControl`.
            // This endpoint builds one end of each ring; the peer builds the other.
            unsafe {
                let ctrl = NonNull::new_unchecked(region.base().add(block) as *mut RingControl);
                let data = NonNull::new_unchecked(region.base().add(block + RING_CONTROL_SIZE));
                RingRef::new(ctrl, data, layout.capacity[idx], Arc::clone(&region) as _)
            }
        };
        let (out_idx, in_idx) = if side == 0 { (0, 1) } else { (1, 0) };
        let link = Arc::new(Link {
            socket,
            peer_gone: AtomicU32::new(0),
        });
        let out_ring = ring(out_idx);
        let in_ring = ring(in_idx);
        let closer = Closer {
            rings: Arc::new([out_ring.closer(), in_ring.closer()]),
        };
        let mailbox = Mailbox::new(Arc::clone(&region));
        let sender = Sender {
            producer: Producer::new(out_ring, wait),
            link: Arc::clone(&link),
            threshold: layout.threshold[out_idx],
            max_frame: layout.max_frame,
            next_large_seq: 0,
            poisoned: None,
            pads: Default::default(),
            pad_limit: DEFAULT_PAD_LIMIT,
        };
        let receiver = Receiver {
            consumer: Consumer::new(in_ring, wait),
            link,
            max_frame: layout.max_frame,
            next_large_seq: 0,
            poisoned: None,
            last_probe: None,
            pads: Default::default(),
        };
        Endpoint {
            sender,
            receiver,
            closer,
            mailbox,
        }
    }

    /// Splits into the two halves, each `Send`, so two threads can use them.
    pub fn split(self) -> (Sender, Receiver) {
        (self.sender, self.receiver)
    }

    /// A handle that closes both directions from anywhere (see [`Closer`]).
    pub fn closer(&self) -> Closer {
        self.closer.clone()
    }

    /// The channel's shared mailbox words (see [`Mailbox`]); keep a clone before
    /// [`split`](Endpoint::split) if you need it afterwards.
    pub fn mailbox(&self) -> Mailbox {
        self.mailbox.clone()
    }

    /// The outgoing half.
    pub fn sender(&mut self) -> &mut Sender {
        &mut self.sender
    }

    /// The incoming half.
    pub fn receiver(&mut self) -> &mut Receiver {
        &mut self.receiver
    }
}

fn socket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for the kernel to fill.
    let res = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if res < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socketpair succeeded, so both fds are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn check_socket(socket: BorrowedFd<'_>) -> Result<(), OpenError> {
    let mut kind: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `kind` and `len` are valid for the kernel to write an int and its size.
    let res = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut kind as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if res < 0 || kind != libc::SOCK_SEQPACKET {
        return Err(OpenError::BadSocket);
    }
    Ok(())
}

/// Closes both directions of a channel and wakes every waiter on both sides.
///
/// `Clone + Send + Sync`. A parent supervisor calls [`close`](Closer::close) when the
/// worker's pidfd says it died, or when it kills a worker on timeout: blocked calls on
/// both sides return `Disconnected` at once (a receiver first drains frames already
/// published).
#[derive(Clone, Debug)]
pub struct Closer {
    rings: Arc<[RingCloser; 2]>,
}

impl Closer {
    /// Marks both rings closed (by both ends) and wakes all waiters.
    pub fn close(&self) {
        for ring in self.rings.iter() {
            ring.close(CLOSED_BY_PRODUCER | CLOSED_BY_CONSUMER);
        }
    }
}

/// The producer end of this side's outgoing ring.
///
/// `Send`, not `Sync`. Dropping it publishes what is staged, closes the outgoing ring
/// and wakes the peer.
///
/// ```compile_fail
/// fn is_sync<T: Sync>() {}
/// is_sync::<procpool_ipc::Sender>(); // one producer per ring: not shareable
/// ```
pub struct Sender {
    producer: Producer,
    link: Arc<Link>,
    threshold: usize,
    max_frame: u64,
    next_large_seq: u64,
    poisoned: Option<Corruption>,
    /// The reusable out-of-band buffers of this direction (see `wire::PAD_SLOTS`).
    pads: [Option<OutPad>; PAD_SLOTS],
    /// Largest pad kept; bigger payloads go in a fresh sealed memfd.
    pad_limit: usize,
}

/// Pads taken out of a [`Sender`] by [`Sender::take_idle_pads`]. Dropping this gives their
/// memory back: it punches their pages out of their memfds and unmaps them, which takes time in
/// proportion to their size (measured on a 2-vCPU VM: ~1 ms for an 8 MiB pad, ~8 ms for 64 MiB,
/// ~60 ms for 256 MiB), so drop it where such a pause does not hold anyone up.
#[derive(Debug, Default)]
pub struct IdlePads {
    pads: Vec<PadWriter>,
}

impl IdlePads {
    /// How many pads were taken.
    pub fn len(&self) -> usize {
        self.pads.len()
    }

    /// Whether no pad was taken.
    pub fn is_empty(&self) -> bool {
        self.pads.is_empty()
    }
}

impl Drop for IdlePads {
    fn drop(&mut self) {
        for pad in self.pads.drain(..) {
            pad.discard();
        }
    }
}

/// One of a sender's pads.
#[derive(Debug)]
struct OutPad {
    writer: PadWriter,
    /// Whether its memfd was sent to the peer (with the first frame that used it).
    announced: bool,
}

/// Size of a new pad for a payload of `len` bytes: rounded up to a MiB (so payloads of
/// about the same size share a pad), never above `limit` unless `len` itself is. The caller
/// passes a `limit` no larger than the channel's `max_frame`, which the peer enforces.
fn pad_size(len: usize, limit: usize) -> usize {
    len.next_multiple_of(1 << 20).min(limit.max(len))
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("capacity", &self.producer.capacity())
            .field("large_threshold", &self.threshold)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

fn send_err(err: WaitError) -> SendError {
    match err {
        WaitError::Closed | WaitError::PeerGone => SendError::Disconnected,
        // A producer's wait has no stop condition; were one added, it ends like a timeout.
        WaitError::Timeout | WaitError::Stopped => SendError::Timeout,
        WaitError::Corrupt(corruption) => SendError::Corrupt(corruption),
    }
}

impl Sender {
    /// Sends one frame: blocks (spin, then park) until there is space, copies it in and
    /// publishes it. Frames longer than the large threshold go out of band.
    ///
    /// # Errors
    ///
    /// [`SendError::Disconnected`] when the channel is closed or the peer died,
    /// [`SendError::TooLarge`] above `max_frame`, [`SendError::Corrupt`] if the peer
    /// broke the protocol, [`SendError::Io`] if an out-of-band transfer failed.
    #[inline]
    pub fn send(&mut self, frame: &[u8]) -> Result<(), SendError> {
        self.send_deadline(frame, None)
    }

    /// [`send`](Sender::send) giving up with [`SendError::Timeout`] after `timeout`.
    ///
    /// # Errors
    ///
    /// As for `send`, plus `Timeout`.
    pub fn send_timeout(&mut self, frame: &[u8], timeout: Duration) -> Result<(), SendError> {
        self.send_deadline(frame, Some(Instant::now() + timeout))
    }

    #[inline]
    fn check(&self, len: usize) -> Result<(), SendError> {
        if let Some(corruption) = self.poisoned {
            return Err(SendError::Corrupt(corruption));
        }
        if len as u64 > self.max_frame {
            return Err(SendError::TooLarge {
                len: len as u64,
                max: self.max_frame,
            });
        }
        // Once a wait has seen the peer die, fail at once instead of spinning and parking
        // again before the next probe.
        if self.link.known_gone() {
            return Err(SendError::Disconnected);
        }
        Ok(())
    }

    fn send_deadline(&mut self, frame: &[u8], deadline: Option<Instant>) -> Result<(), SendError> {
        let mut grant = self.reserve_deadline(frame.len(), deadline, false)?;
        if let GrantInner::Large { writer, .. } = &mut grant.inner {
            writer.write_all(frame)?;
        } else {
            crate::copy::copy_bytes(&mut grant[..frame.len()], frame);
        }
        grant.commit(frame.len())?;
        self.publish();
        Ok(())
    }

    /// Reserves `len` bytes to be written in place (zero-copy). Above the large threshold
    /// the grant is a fresh memfd instead of ring space (still written in place).
    /// Blocks for space like `send`, at most `timeout` if given.
    ///
    /// # Errors
    ///
    /// As for [`send_timeout`](Sender::send_timeout).
    #[inline]
    pub fn reserve(
        &mut self,
        len: usize,
        timeout: Option<Duration>,
    ) -> Result<Grant<'_>, SendError> {
        self.reserve_deadline(len, timeout.map(|timeout| Instant::now() + timeout), true)
    }

    #[inline]
    fn reserve_deadline(
        &mut self,
        len: usize,
        deadline: Option<Instant>,
        map: bool,
    ) -> Result<Grant<'_>, SendError> {
        self.check(len)?;
        let ring_len = if len > self.threshold {
            LARGE_BODY_SIZE
        } else {
            len
        };
        let link = &self.link;
        let res = self
            .producer
            .reserve(ring_len, deadline, &mut || link.peer_gone());
        let slot = match res {
            Ok(slot) => slot,
            Err(err) => return Err(self.fail(err)),
        };
        let pad = if len > self.threshold {
            self.pick_pad(len)?
        } else {
            None
        };
        let inner = if let Some(pad) = pad {
            GrantInner::Pad {
                slot,
                pad,
                len,
                deadline,
            }
        } else if len > self.threshold {
            let mut writer = OobWriter::create(len)?;
            let (ptr, mapped) = if map {
                let bytes = writer.map_mut()?;
                (bytes.as_mut_ptr(), bytes.len())
            } else {
                (NonNull::<u8>::dangling().as_ptr(), 0)
            };
            GrantInner::Large {
                writer,
                slot,
                ptr,
                mapped,
                len,
                deadline,
            }
        } else {
            GrantInner::Ring(slot)
        };
        Ok(Grant {
            sender: self,
            inner,
        })
    }

    /// Sends an already sealed memfd as one out-of-band frame, whatever its size: the peer
    /// receives a frame whose payload is the file's bytes, mapped read-only, and may keep
    /// that mapping with [`Frame::take_out_of_band`]. Nothing is copied; the file stays
    /// usable here (the peer gets its own descriptor). Published at once.
    ///
    /// # Errors
    ///
    /// As for [`send_timeout`](Sender::send_timeout) (`Timeout` when neither the ring nor
    /// the socket had room within `timeout`; nothing was sent then).
    pub fn send_sealed(
        &mut self,
        file: &SealedFile,
        timeout: Option<Duration>,
    ) -> Result<(), SendError> {
        let len = usize::try_from(file.len()).map_err(|_| SendError::TooLarge {
            len: file.len(),
            max: self.max_frame,
        })?;
        self.check(len)?;
        let deadline = timeout.map(|timeout| Instant::now() + timeout);
        let link = &self.link;
        let res = self
            .producer
            .reserve(LARGE_BODY_SIZE, deadline, &mut || link.peer_gone());
        let slot = match res {
            Ok(slot) => slot,
            Err(err) => return Err(self.fail(err)),
        };
        let seq = self.next_large_seq;
        // An unused reservation is simply never committed: the ring is unchanged on error.
        self.send_fd(file.as_fd(), seq, deadline)?;
        self.next_large_seq += 1;
        let body = LargeBody {
            len: file.len(),
            seq,
        };
        // SAFETY: LargeBody is plain integers; viewing it as bytes is fine.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&body as *const LargeBody).cast::<u8>(),
                size_of::<LargeBody>(),
            )
        };
        self.producer.write_frame(slot, KIND_LARGE, bytes);
        self.producer.publish();
        Ok(())
    }

    /// A free pad of at least `len` bytes (made or grown if needed), or `None` when the
    /// payload is above the pad limit or every pad still holds a frame the peer reads.
    fn pick_pad(&mut self, len: usize) -> Result<Option<usize>, SendError> {
        if len > self.pad_limit {
            return Ok(None);
        }
        let mut spare = None;
        for idx in 0..PAD_SLOTS {
            // Acquire: pairs with the consumer's Release store of PAD_FREE when it drops the
            // frame (`Frame::drop`), so its reads of the pad happen before our next writes.
            if self.producer.pad_word(idx).load(Ordering::Acquire) != PAD_FREE {
                continue;
            }
            match &self.pads[idx] {
                Some(pad) if pad.writer.len() >= len => return Ok(Some(idx)),
                _ => {
                    spare.get_or_insert(idx);
                }
            }
        }
        let Some(idx) = spare else {
            return Ok(None);
        };
        // The old pad (if any) is dropped here; the peer unmaps its copy when the new one
        // arrives in this slot.
        self.pads[idx] = None;
        self.pads[idx] = Some(OutPad {
            // Never above `max_frame`: the peer refuses a larger pad (`len` is at most that).
            writer: PadWriter::create(pad_size(
                len,
                self.pad_limit
                    .min(usize::try_from(self.max_frame).unwrap_or(usize::MAX)),
            ))?,
            announced: false,
        });
        Ok(Some(idx))
    }

    /// Whether a [`reserve`](Sender::reserve) of `len` bytes now would lend memory that is
    /// already faulted in: ring space, or a free pad (a new pad is populated when made). When
    /// it is not (both pads busy, or `len` above the pad limit), the grant would be a fresh
    /// memfd written page fault by page fault, and `send` (which fills such a memfd with
    /// `write(2)`) is the cheaper way to pass a frame already in a buffer.
    pub fn reserve_is_warm(&self, len: usize) -> bool {
        if len <= self.threshold {
            return true;
        }
        // Acquire: as in `pick_pad` (only the consumer frees a pad, so a pad free now stays
        // free until this sender uses it).
        len <= self.pad_limit
            && (0..PAD_SLOTS)
                .any(|idx| self.producer.pad_word(idx).load(Ordering::Acquire) == PAD_FREE)
    }

    /// Whether this sender keeps any pad (see [`release_pads`](Sender::release_pads)).
    pub fn holds_pads(&self) -> bool {
        self.pads.iter().any(Option::is_some)
    }

    /// Gives back the memory of every pad the peer is not reading (for a sender that went
    /// idle); returns how many were released. A later large frame makes a new pad.
    ///
    /// Takes time in proportion to the pads' size (see [`IdlePads`]);
    /// [`take_idle_pads`](Sender::take_idle_pads) lets the caller choose where to pay it.
    pub fn release_pads(&mut self) -> usize {
        self.take_idle_pads().len()
    }

    /// Takes every pad the peer is not reading out of this sender, as with
    /// [`release_pads`](Sender::release_pads), but leaves giving their memory back to the
    /// returned value's drop, so a caller holding a lock can drop it after unlocking.
    pub fn take_idle_pads(&mut self) -> IdlePads {
        let mut idle = IdlePads::default();
        for idx in 0..PAD_SLOTS {
            // Acquire: as in `pick_pad`, the peer's reads of the pad are over.
            if self.producer.pad_word(idx).load(Ordering::Acquire) == PAD_FREE
                && let Some(pad) = self.pads[idx].take()
            {
                idle.pads.push(pad.writer);
            }
        }
        idle
    }

    /// The writer of pad `idx`, which a live grant holds.
    fn pad_writer(&self, idx: usize) -> &PadWriter {
        match &self.pads[idx] {
            Some(pad) => &pad.writer,
            None => unreachable!("a granted pad stays in its slot until commit"),
        }
    }

    /// Sets the largest pad this sender keeps (see [`ChannelConfig::pad_limit`]); pads
    /// already larger are dropped (the peer keeps its mapping until the slot is reused).
    pub fn set_pad_limit(&mut self, bytes: usize) {
        self.pad_limit = bytes;
        for pad in &mut self.pads {
            if pad.as_ref().is_some_and(|pad| pad.writer.len() > bytes) {
                *pad = None;
            }
        }
    }

    fn fail(&mut self, err: WaitError) -> SendError {
        if let WaitError::Corrupt(corruption) = err {
            self.poisoned = Some(corruption);
        }
        send_err(err)
    }

    /// Makes every staged frame visible with one Release store, and wakes the consumer
    /// if it sleeps. `send` publishes by itself; after `Grant::commit` call this (once
    /// for a batch).
    #[inline]
    pub fn publish(&mut self) {
        self.producer.publish();
    }

    /// Publishes what is staged and closes the outgoing ring; the peer's receiver drains
    /// it and then gets `Disconnected`. Later sends fail with `Disconnected`.
    pub fn close(&mut self) {
        self.producer.close();
    }

    /// Frames with payloads longer than this go out of band.
    pub fn large_threshold(&self) -> usize {
        self.threshold
    }

    /// Data capacity of the outgoing ring in bytes.
    pub fn capacity(&self) -> usize {
        self.producer.capacity()
    }

    /// Replaces the spin-then-park policy of this half.
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.producer.set_wait(wait);
    }

    /// Sends the memfd of a LARGE frame with its sequence number; waits for socket space
    /// (publishing staged frames first, so the consumer can drain) until `deadline`.
    fn send_fd(
        &mut self,
        fd: BorrowedFd<'_>,
        seq: u64,
        deadline: Option<Instant>,
    ) -> Result<(), SendError> {
        let payload = seq.to_le_bytes();
        loop {
            match send_with_fds(self.link.socket.as_fd(), &payload, &[fd], true) {
                Ok(_) => return Ok(()),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) if matches!(err.raw_os_error(), Some(libc::EPIPE | libc::ECONNRESET)) => {
                    return Err(SendError::Disconnected);
                }
                Err(err) => return Err(SendError::Io(err)),
            }
            self.producer.publish();
            if self.producer.is_closed() || self.link.peer_gone() {
                return Err(SendError::Disconnected);
            }
            let slice = match deadline {
                Some(deadline) => deadline
                    .saturating_duration_since(Instant::now())
                    .min(PARK_SLICE),
                None => PARK_SLICE,
            };
            if slice.is_zero() {
                return Err(SendError::Timeout);
            }
            let mut pollfd = libc::pollfd {
                fd: self.link.socket.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut pollfd, 1, slice.as_millis().max(1) as libc::c_int) };
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.producer.close();
    }
}

/// Space reserved by [`Sender::reserve`]: exactly `len` writable bytes starting 16-byte
/// aligned. [`commit`](Grant::commit) stages it; dropping it uncommitted abandons it.
pub struct Grant<'a> {
    sender: &'a mut Sender,
    inner: GrantInner,
}

enum GrantInner {
    Ring(Slot),
    Large {
        writer: OobWriter,
        slot: Slot,
        ptr: *mut u8,
        mapped: usize,
        len: usize,
        /// The reservation's deadline, which also bounds waiting for socket room.
        deadline: Option<Instant>,
    },
    Pad {
        /// The ring slot for the PAD frame's body.
        slot: Slot,
        /// Which of the sender's pads (free, and at least `len` bytes).
        pad: usize,
        len: usize,
        /// As for `Large`.
        deadline: Option<Instant>,
    },
}

impl fmt::Debug for Grant<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Grant")
            .field("len", &self.len())
            .field("out_of_band", &!matches!(self.inner, GrantInner::Ring(_)))
            .finish()
    }
}

impl Grant<'_> {
    /// Stages the first `used` bytes as one frame (visible after [`Sender::publish`]).
    ///
    /// # Errors
    ///
    /// [`SendError::TooLarge`] if `used` exceeds the grant; for an out-of-band grant,
    /// the errors of sealing and sending its memfd (waiting for socket room is bounded by
    /// the `reserve` timeout: [`SendError::Timeout`]). A failed commit stages nothing.
    #[inline]
    pub fn commit(self, used: usize) -> Result<(), SendError> {
        let Grant { sender, inner } = self;
        match inner {
            GrantInner::Ring(slot) => {
                if used > slot.len {
                    return Err(SendError::TooLarge {
                        len: used as u64,
                        max: slot.len as u64,
                    });
                }
                sender.producer.commit(slot, KIND_DATA, used);
            }
            GrantInner::Large {
                writer,
                slot,
                len,
                deadline,
                ..
            } => {
                if used > len {
                    return Err(SendError::TooLarge {
                        len: used as u64,
                        max: len as u64,
                    });
                }
                if used == 0 {
                    // An empty frame fits the reserved ring slot (16 bytes) as DATA.
                    sender.producer.commit(slot, KIND_DATA, 0);
                    return Ok(());
                }
                let fd = writer.seal(used)?;
                let seq = sender.next_large_seq;
                sender.send_fd(fd.as_fd(), seq, deadline)?;
                sender.next_large_seq += 1;
                let body = LargeBody {
                    len: used as u64,
                    seq,
                };
                // SAFETY: LargeBody is plain integers; viewing it as bytes is fine.
                let bytes = unsafe {
                    std::slice::from_raw_parts(
                        (&body as *const LargeBody).cast::<u8>(),
                        size_of::<LargeBody>(),
                    )
                };
                sender.producer.write_frame(slot, KIND_LARGE, bytes);
            }
            GrantInner::Pad {
                slot,
                pad,
                len,
                deadline,
            } => {
                if used > len {
                    return Err(SendError::TooLarge {
                        len: used as u64,
                        max: len as u64,
                    });
                }
                if used == 0 {
                    sender.producer.commit(slot, KIND_DATA, 0);
                    return Ok(());
                }
                let mut flags = 0;
                let Some(out) = sender.pads[pad].as_ref() else {
                    unreachable!("a granted pad stays in its slot until commit");
                };
                if !out.announced {
                    let seq = sender.next_large_seq;
                    let fd = out.writer.as_fd().try_clone_to_owned()?;
                    sender.send_fd(fd.as_fd(), seq, deadline)?;
                    sender.next_large_seq += 1;
                    if let Some(out) = sender.pads[pad].as_mut() {
                        out.announced = true;
                    }
                    flags = PAD_NEW;
                }
                // Relaxed: only we store BUSY, after loading FREE with Acquire (`pick_pad`);
                // the Release publish of the frame orders it before the consumer sees the
                // frame and, later, stores FREE.
                sender
                    .producer
                    .pad_word(pad)
                    .store(PAD_BUSY, Ordering::Relaxed);
                let body = PadBody {
                    len: used as u64,
                    slot: pad as u32,
                    flags,
                };
                // SAFETY: PadBody is plain integers; viewing it as bytes is fine.
                let bytes = unsafe {
                    std::slice::from_raw_parts(
                        (&body as *const PadBody).cast::<u8>(),
                        size_of::<PadBody>(),
                    )
                };
                sender.producer.write_frame(slot, KIND_PAD, bytes);
            }
        }
        Ok(())
    }
}

impl std::ops::Deref for Grant<'_> {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        match &self.inner {
            // SAFETY: the slot's payload area is `slot.len` bytes reserved for us (see
            // `Producer::try_reserve`); the consumer does not read it before commit+publish.
            GrantInner::Ring(slot) => unsafe {
                std::slice::from_raw_parts(self.sender.producer.payload_ptr(*slot), slot.len)
            },
            // SAFETY: `ptr`/`len` describe the writable mapping owned by `writer`, which
            // lives as long as `self`; nobody else has the memfd yet.
            GrantInner::Large { ptr, mapped, .. } => unsafe {
                std::slice::from_raw_parts(*ptr, *mapped)
            },
            GrantInner::Pad { pad, len, .. } => {
                let writer = self.sender.pad_writer(*pad);
                // SAFETY: the pad is mapped for `writer.len() >= len` bytes while the sender
                // (borrowed by this grant) keeps it, and it is free: the consumer released
                // the last frame in it, so nobody else reads or writes it until we publish.
                unsafe { std::slice::from_raw_parts(writer.ptr(), *len) }
            }
        }
    }
}

impl std::ops::DerefMut for Grant<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.inner {
            // SAFETY: as in `deref`; `&mut self` makes this the only view.
            GrantInner::Ring(slot) => unsafe {
                std::slice::from_raw_parts_mut(self.sender.producer.payload_ptr(*slot), slot.len)
            },
            // SAFETY: as in `deref`; `&mut self` makes this the only view.
            GrantInner::Large { ptr, mapped, .. } => unsafe {
                std::slice::from_raw_parts_mut(*ptr, *mapped)
            },
            GrantInner::Pad { pad, len, .. } => {
                let writer = self.sender.pad_writer(*pad);
                // SAFETY: as in `deref`; `&mut self` makes this the only view.
                unsafe { std::slice::from_raw_parts_mut(writer.ptr(), *len) }
            }
        }
    }
}

/// The consumer end of this side's incoming ring.
///
/// `Send`, not `Sync`. Dropping it closes the incoming ring, so the peer's sends fail
/// with `Disconnected`.
///
/// ```compile_fail
/// fn is_sync<T: Sync>() {}
/// is_sync::<procpool_ipc::Receiver>(); // one consumer per ring: not shareable
/// ```
pub struct Receiver {
    consumer: Consumer,
    link: Arc<Link>,
    max_frame: u64,
    next_large_seq: u64,
    poisoned: Option<Corruption>,
    last_probe: Option<Instant>,
    /// Read-only mappings of the peer's pads, by slot.
    pads: [Option<PadReader>; PAD_SLOTS],
}

impl fmt::Debug for Receiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("capacity", &self.consumer.capacity())
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl Receiver {
    /// The link's socket, for a thread that waits for the peer's end without reading: it
    /// polls `POLLHUP` (and `POLLRDHUP`) once the peer's process is gone or dropped its
    /// endpoint. Only poll it: the frames' fds that arrive on it are this receiver's to take.
    pub fn hangup_fd(&self) -> BorrowedFd<'_> {
        self.link.socket.as_fd()
    }

    /// Blocks (spin, then park) until a frame arrives.
    ///
    /// # Errors
    ///
    /// [`RecvError::Disconnected`] once the ring is drained and the peer closed it,
    /// dropped its endpoint, was closed by a [`Closer`], or died (seen within ~50 ms via
    /// the socket pair); [`RecvError::Corrupt`] if the peer broke the protocol (the
    /// channel stays poisoned).
    #[inline]
    pub fn recv(&mut self) -> Result<Frame<'_>, RecvError> {
        self.recv_deadline(None)
    }

    /// [`recv`](Receiver::recv) giving up with [`RecvError::Timeout`] after `timeout`.
    ///
    /// # Errors
    ///
    /// As for `recv`, plus `Timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Frame<'_>, RecvError> {
        self.recv_deadline(Some(Instant::now() + timeout))
    }

    /// The next frame if one is ready, without blocking.
    ///
    /// # Errors
    ///
    /// As for `recv`; peer death is checked at most every 50 ms.
    #[inline]
    pub fn try_recv(&mut self) -> Result<Option<Frame<'_>>, RecvError> {
        self.try_recv_inner(true)
    }

    /// [`try_recv`](Self::try_recv) without the check for the peer's death: no `poll` of
    /// the socket, only the ring (its closed flag included). For a thread that looks often
    /// while another one watches the peer (through [`hangup_fd`](Self::hangup_fd), or its
    /// own `recv`).
    ///
    /// # Errors
    ///
    /// As for `try_recv`, except that a dead peer is not reported unless it closed the ring.
    #[inline]
    pub fn try_recv_unprobed(&mut self) -> Result<Option<Frame<'_>>, RecvError> {
        self.try_recv_inner(false)
    }

    #[inline]
    fn try_recv_inner(&mut self, probe: bool) -> Result<Option<Frame<'_>>, RecvError> {
        if let Some((item, end)) = self.peek()? {
            return self.make_frame(item, end).map(Some);
        }
        self.consumer.publish_head();
        if self.consumer.is_closed() {
            return self.drained_or(RecvError::Disconnected).map(Some);
        }
        if !probe {
            return Ok(None);
        }
        let now = Instant::now();
        if self
            .last_probe
            .is_none_or(|last| now.duration_since(last) >= PARK_SLICE)
        {
            self.last_probe = Some(now);
            if self.link.peer_gone() {
                return self.drained_or(RecvError::Disconnected).map(Some);
            }
        }
        Ok(None)
    }

    /// After seeing "closed": one more look for a frame published just before, else `err`.
    fn drained_or(&mut self, err: RecvError) -> Result<Frame<'_>, RecvError> {
        match self.peek()? {
            Some((item, end)) => self.make_frame(item, end),
            None => Err(err),
        }
    }

    #[inline]
    fn peek(&mut self) -> Result<Option<(Item, u64)>, RecvError> {
        if let Some(corruption) = self.poisoned {
            return Err(RecvError::Corrupt(corruption));
        }
        self.consumer
            .try_peek()
            .map_err(|corruption| self.poison(corruption))
    }

    fn poison(&mut self, corruption: Corruption) -> RecvError {
        self.poisoned = Some(corruption);
        RecvError::Corrupt(corruption)
    }

    /// Like [`recv_timeout`](Receiver::recv_timeout) (`None`: no deadline), but also gives up
    /// with `Ok(None)` as soon as `stop` returns true; `stop` is called on every spin and
    /// before every park.
    ///
    /// The thread that makes `stop` true (with a SeqCst store or RMW) then calls
    /// [`Interrupter::interrupt`] from [`interrupter`](Receiver::interrupter), so a parked
    /// receiver looks again: a pool's reader thread uses this to hand the receiver to another
    /// thread that wants to read it itself.
    ///
    /// # Errors
    ///
    /// As for `recv_timeout`.
    pub fn recv_until(
        &mut self,
        deadline: Option<Instant>,
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<Frame<'_>>, RecvError> {
        self.recv_inner(deadline, Some(stop))
    }

    /// A handle that wakes this receiver while it is parked in
    /// [`recv_until`](Receiver::recv_until), so it re-checks its stop condition.
    pub fn interrupter(&self) -> Interrupter {
        self.consumer.interrupter()
    }

    #[inline]
    fn recv_deadline(&mut self, deadline: Option<Instant>) -> Result<Frame<'_>, RecvError> {
        match self.recv_inner(deadline, None) {
            Ok(Some(frame)) => Ok(frame),
            Ok(None) => unreachable!("no stop condition"),
            Err(err) => Err(err),
        }
    }

    #[inline]
    fn recv_inner(
        &mut self,
        deadline: Option<Instant>,
        stop: Option<&dyn Fn() -> bool>,
    ) -> Result<Option<Frame<'_>>, RecvError> {
        let (item, end) = loop {
            if let Some(found) = self.peek()? {
                break found;
            }
            // Drained, and an earlier wait saw the peer die: no need to wait again.
            if self.link.known_gone() {
                return Err(RecvError::Disconnected);
            }
            let link = &self.link;
            match self.consumer.wait(deadline, &mut || link.peer_gone(), stop) {
                Ok(()) => {}
                Err(WaitError::Closed | WaitError::PeerGone) => {
                    return Err(RecvError::Disconnected);
                }
                Err(WaitError::Timeout) => return Err(RecvError::Timeout),
                Err(WaitError::Stopped) => return Ok(None),
                Err(WaitError::Corrupt(corruption)) => return Err(self.poison(corruption)),
            }
        };
        self.make_frame(item, end).map(Some)
    }

    #[inline]
    fn make_frame(&mut self, item: Item, end: u64) -> Result<Frame<'_>, RecvError> {
        let data = match item {
            Item::Data { pos, len } => FrameData::Ring { pos, len },
            Item::Large(body) => match self.open_large(body) {
                Ok(reader) => FrameData::Large(reader),
                Err(RecvError::Corrupt(corruption)) => return Err(self.poison(corruption)),
                Err(err) => return Err(err),
            },
            Item::Pad(body) => match self.open_pad(body) {
                Ok(data) => data,
                Err(RecvError::Corrupt(corruption)) => return Err(self.poison(corruption)),
                Err(err) => return Err(err),
            },
        };
        Ok(Frame {
            receiver: self,
            data,
            end,
        })
    }

    /// Checks a PAD frame (receiving and mapping a new pad first) and returns its data.
    fn open_pad(&mut self, body: PadBody) -> Result<FrameData, RecvError> {
        let slot = body.slot as usize;
        if slot >= PAD_SLOTS || body.flags & !PAD_NEW != 0 {
            return Err(RecvError::Corrupt(Corruption::PadBadSlot {
                slot: body.slot,
                flags: body.flags,
            }));
        }
        if body.len > self.max_frame {
            return Err(RecvError::Corrupt(Corruption::LargeTooLong {
                len: body.len,
                max: self.max_frame,
            }));
        }
        if body.flags & PAD_NEW != 0 {
            // The old mapping (if any) goes: the peer only replaces a pad we released.
            self.pads[slot] = None;
            let seq = self.next_large_seq;
            let fd = self.recv_fd(seq)?;
            let reader = PadReader::open(fd, self.max_frame).map_err(|err| match err {
                OobOpenError::Io(err) => RecvError::Io(err),
                _ => RecvError::Corrupt(Corruption::PadRefused),
            })?;
            self.pads[slot] = Some(reader);
        }
        let Some(pad) = &self.pads[slot] else {
            return Err(RecvError::Corrupt(Corruption::PadUnknown {
                slot: body.slot,
            }));
        };
        if body.len > pad.len() as u64 {
            return Err(RecvError::Corrupt(Corruption::PadOverrun {
                len: body.len,
                size: pad.len() as u64,
            }));
        }
        Ok(FrameData::Pad {
            slot,
            len: body.len as usize,
        })
    }

    fn open_large(&mut self, body: LargeBody) -> Result<OobReader, RecvError> {
        if body.seq != self.next_large_seq {
            return Err(RecvError::Corrupt(Corruption::LargeSequence {
                expected: self.next_large_seq,
                found: body.seq,
            }));
        }
        if body.len > self.max_frame {
            return Err(RecvError::Corrupt(Corruption::LargeTooLong {
                len: body.len,
                max: self.max_frame,
            }));
        }
        let fd = self.recv_fd(body.seq)?;
        OobReader::open(fd, body.len).map_err(|err| match err {
            OobOpenError::NotSealed => RecvError::Corrupt(Corruption::LargeNotSealed),
            OobOpenError::SizeMismatch { expected, found } => {
                RecvError::Corrupt(Corruption::LargeSizeMismatch { expected, found })
            }
            OobOpenError::Io(err) => RecvError::Io(err),
        })
    }

    /// Takes the next fd off the socket, which must come with sequence number `seq` (the
    /// next expected one), and advances the sequence.
    fn recv_fd(&mut self, seq: u64) -> Result<OwnedFd, RecvError> {
        let mut payload = [0u8; 8];
        let mut fds = Vec::new();
        let got = match recv_with_fds(self.link.socket.as_fd(), &mut payload, &mut fds, true) {
            Ok(got) => got,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                return Err(RecvError::Corrupt(Corruption::LargeMissingFd));
            }
            Err(err) => return Err(RecvError::Io(err)),
        };
        if got != payload.len() || fds.len() != 1 {
            return Err(RecvError::Corrupt(Corruption::LargeMissingFd));
        }
        let found = u64::from_le_bytes(payload);
        if found != seq {
            return Err(RecvError::Corrupt(Corruption::LargeSequence {
                expected: seq,
                found,
            }));
        }
        self.next_large_seq += 1;
        fds.pop()
            .ok_or(RecvError::Corrupt(Corruption::LargeMissingFd))
    }

    /// Replaces the spin-then-park policy of this half.
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.consumer.set_wait(wait);
    }

    /// Data capacity of the incoming ring in bytes.
    pub fn capacity(&self) -> usize {
        self.consumer.capacity()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.consumer.close();
    }
}

/// A received frame: derefs to its payload, which starts 16-byte aligned.
///
/// An in-ring frame borrows ring memory; dropping the `Frame` releases that space (the
/// shared head is published lazily, see `ring/README.md`). A LARGE frame derefs to a
/// read-only mapping of its own sealed memfd.
pub struct Frame<'a> {
    receiver: &'a mut Receiver,
    data: FrameData,
    end: u64,
}

enum FrameData {
    Ring {
        pos: usize,
        len: usize,
    },
    Large(OobReader),
    /// The first `len` bytes of the peer's pad `slot` (checked against the pad's size).
    Pad {
        slot: usize,
        len: usize,
    },
    /// The out-of-band payload was taken away; the frame reads as empty.
    Taken,
}

impl Frame<'_> {
    /// Whether the payload came out of band (its own memfd, or one of the peer's reusable
    /// pads) rather than from the ring.
    pub fn is_out_of_band(&self) -> bool {
        matches!(self.data, FrameData::Large(_) | FrameData::Pad { .. })
    }

    /// Whether the payload's bytes are sealed: nobody, the peer included, can change them
    /// while the frame lives (a LARGE frame's own memfd). In-ring and pad frames are memory
    /// the peer can still write: a reader that does not trust the peer copies such a payload
    /// out before validating what it keeps.
    pub fn is_sealed(&self) -> bool {
        matches!(self.data, FrameData::Large(_))
    }

    /// Takes an out-of-band payload's read-only mapping out of the frame, to keep after the
    /// frame is released (the frame reads as empty afterwards). `None` for an in-ring frame,
    /// whose bytes must be copied to be kept.
    pub fn take_out_of_band(&mut self) -> Option<SealedMap> {
        match std::mem::replace(&mut self.data, FrameData::Taken) {
            FrameData::Large(reader) => Some(reader.into_map()),
            other => {
                self.data = other;
                None
            }
        }
    }
}

impl fmt::Debug for Frame<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("len", &self.len())
            .field("out_of_band", &self.is_out_of_band())
            .finish()
    }
}

impl std::ops::Deref for Frame<'_> {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        match &self.data {
            // SAFETY: `pos`/`len` come from the `try_peek` that produced this frame, and
            // the frame is released only in `drop`, after every borrow of `self` ended.
            FrameData::Ring { pos, len } => unsafe { self.receiver.consumer.payload(*pos, *len) },
            FrameData::Large(reader) => reader.bytes(),
            FrameData::Pad { slot, len } => match &self.receiver.pads[*slot] {
                // SAFETY: `open_pad` checked `len <= pad.len()`; the mapping lives as long as
                // the receiver keeps it, and it is replaced only while making a later frame,
                // after this one was dropped. The producer does not write the pad before we
                // store PAD_FREE in `drop` (a hostile one may: plain bytes, see
                // `ring/README.md`, and `is_sealed` says so).
                Some(pad) => unsafe { std::slice::from_raw_parts(pad.ptr(), *len) },
                None => &[],
            },
            FrameData::Taken => &[],
        }
    }
}

impl Drop for Frame<'_> {
    #[inline]
    fn drop(&mut self) {
        if let FrameData::Pad { slot, .. } = self.data {
            // Release: pairs with the producer's Acquire load in `Sender::pick_pad`, so our
            // reads of the pad happen before it writes the next frame there.
            self.receiver
                .consumer
                .pad_word(slot)
                .store(PAD_FREE, Ordering::Release);
        }
        self.receiver.consumer.release(self.end);
    }
}
