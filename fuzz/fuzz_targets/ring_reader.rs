//! Fuzz target `ring_reader`: a hostile peer scribbles on a live channel's shared memory
//! and socket while both ends keep using the public procpool-ipc API.
//!
//! One process plays all three parts, single-threaded, one operation at a time:
//!
//! - the *parent*: the [`Endpoint::create`] side, the victim under test;
//! - an *honest peer*: an [`Endpoint::open`] of the same region, so valid traffic (in-ring and
//!   out-of-band frames, wraps, full rings) is easy for the fuzzer to produce;
//! - a *hostile peer*: a second writable mapping of the region's memfd plus a duplicate of the
//!   peer's socket end, through which the input writes any control word (`tail`, `head`, sleep
//!   flags, `closed`), any frame header or data byte of either ring, and any message with any
//!   fds on the socket — exactly what another process could do.
//!
//! Invariants checked (a violation panics, which libFuzzer reports as a crash):
//! - no panic, hang (libFuzzer `-timeout`) or memory error (ASan) in either endpoint;
//! - every failure is a typed error, and after a `Corrupt` error the half stays poisoned: the
//!   next call returns `Corrupt` again;
//! - an in-ring frame is never longer than the ring, an out-of-band one never exceeds `max_frame`,
//!   and every byte of a received frame is readable;
//! - while the hostile peer has done nothing, the channel is exact: each side receives the
//!   frames the other sent, in order, byte for byte, and nothing but `Timeout` goes wrong;
//! - only a sealed out-of-band frame (LARGE, not one in a reusable pad) gives up a mapping,
//!   and a mapping taken with `Frame::take_out_of_band` equals the frame's
//!   bytes, leaves the frame empty, and never changes afterwards, whatever the hostile peer then
//!   does to the ring, the socket, or the memfds it sent (writes, truncation, hole punching,
//!   writable mappings, `mprotect` of a mapping made before sealing) — the guarantee shared
//!   objects rest on (they are validated once, then read unchecked).
//!
//! Input format: a few configuration bytes, then a sequence of operations, each an opcode
//! byte followed by its arguments (see [`Op`] and `seeds/gen_seeds.rs`). Missing bytes read as 0.
#![no_main]

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use procpool_ipc::{
    ChannelConfig, Endpoint, Handoff, Receiver, RecvError, SealedMap, SealedWriter, SendError,
    Sender,
};

thread_local! {
    /// Outcome tally of the current input, for `PROCPOOL_FUZZ_STATS=1` (see docs/FUZZING.md).
    static TALLY: std::cell::RefCell<std::collections::BTreeMap<String, u32>> =
        const { std::cell::RefCell::new(std::collections::BTreeMap::new()) };
}

/// Counts one outcome (cheap; printed only when asked).
fn tally(what: String) {
    TALLY.with(|t| *t.borrow_mut().entry(what).or_default() += 1);
}

/// Byte offsets inside a ring block (mirrors `wire.rs` / `ring/README.md`).
const TAIL: usize = 0;
const HEAD: usize = 128;
const CONSUMER_SLEEPS: usize = 256;
const PRODUCER_SLEEPS: usize = 384;
const CLOSED: usize = 512;
const DATA: usize = 4096;
const KIND_DATA: u32 = 0x4441_5441;
const KIND_WRAP: u32 = 0x5752_4150;
const KIND_LARGE: u32 = 0x4c52_4745;

/// Reads the fuzz input front to back; past the end every read is 0.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from(self.u16()) | (u32::from(self.u16()) << 16)
    }
    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }
}

/// The hostile peer's view: a writable mapping of the whole region.
struct Hostile {
    map: memmap2::MmapMut,
    /// Ring block offsets and capacities, from the region header.
    ring: [usize; 2],
    cap: [usize; 2],
    /// The peer's socket end (a duplicate of the honest peer's), for hostile messages.
    socket: Option<OwnedFd>,
    /// Memfds sent on the socket (hostile ones, and duplicates of the honest sides' sealed
    /// files), kept to attack their contents afterwards.
    sent: VecDeque<KeptFd>,
}

/// A memfd the hostile peer keeps after sending it, maybe with a read-only shared mapping it
/// made before the seals were added.
struct KeptFd {
    fd: OwnedFd,
    premap: Option<(*mut libc::c_void, usize)>,
}

impl Drop for KeptFd {
    fn drop(&mut self) {
        if let Some((ptr, len)) = self.premap {
            // SAFETY: `ptr`/`len` are a mapping this value made and nobody else unmaps.
            unsafe { libc::munmap(ptr, len) };
        }
    }
}

/// At most this many memfds / taken mappings are kept per input.
const KEEP: usize = 16;

impl Hostile {
    fn base(&self) -> *mut u8 {
        self.map.as_ptr() as *mut u8
    }
    fn word64(&self, ring: usize, off: usize) -> &AtomicU64 {
        debug_assert!(off + 8 <= DATA);
        // SAFETY: `ring[ring] + off` is inside the ring's control block, which lies inside the
        // mapping (the header was validated by `Endpoint::open` before we got here), and is
        // 8-aligned (blocks are page aligned, offsets are multiples of 128). Both endpoints
        // use these words only as atomics too.
        unsafe { &*(self.base().add(self.ring[ring] + off) as *const AtomicU64) }
    }
    fn word32(&self, ring: usize, off: usize) -> &AtomicU32 {
        // SAFETY: as in `word64`, for a 4-aligned u32 word.
        unsafe { &*(self.base().add(self.ring[ring] + off) as *const AtomicU32) }
    }
    /// Writes `bytes` into ring `ring`'s data area at `pos` (wrapping around its end).
    fn write_data(&mut self, ring: usize, pos: usize, bytes: &[u8]) {
        let cap = self.cap[ring];
        let start = self.ring[ring] + DATA;
        for (i, &b) in bytes.iter().enumerate() {
            self.map[start + (pos + i) % cap] = b;
        }
    }
    fn write_header(&mut self, ring: usize, pos: usize, len: u32, kind: u32, reserved: u64) {
        let mut header = [0u8; 16];
        header[..4].copy_from_slice(&len.to_le_bytes());
        header[4..8].copy_from_slice(&kind.to_le_bytes());
        header[8..].copy_from_slice(&reserved.to_le_bytes());
        self.write_data(ring, pos, &header);
    }
}

/// Which word of a ring control block an operation targets.
fn control_word(sel: u8) -> usize {
    match sel % 5 {
        0 => TAIL,
        1 => HEAD,
        2 => CONSUMER_SLEEPS,
        3 => PRODUCER_SLEEPS,
        _ => CLOSED,
    }
}

/// A new value for an index word, relative to its current value or raw.
fn index_value(input: &mut Input<'_>, current: u64, cap: usize) -> u64 {
    match input.u8() % 7 {
        0 => current.wrapping_add(16 * u64::from(input.u8())),
        1 => current.wrapping_sub(16 * u64::from(input.u8())),
        2 => current.wrapping_add(u64::from(input.u8())),
        3 => current.wrapping_add(cap as u64 + 16 * u64::from(input.u8() % 4)),
        4 => 0,
        5 => u64::MAX - 15 - 16 * u64::from(input.u8()),
        _ => input.u64(),
    }
}

/// The operations; the opcode is the first byte modulo the count.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// Store into a control word of ring 0 or 1.
    StoreWord,
    /// Write a frame header anywhere in a ring's data area.
    WriteHeader,
    /// Write raw bytes anywhere in a ring's data area.
    WriteBytes,
    /// Append a (possibly lying) frame at the peer-owned ring's current tail and publish it.
    AppendFrame,
    /// Put a message with fds of the fuzzer's choice on the peer's socket end.
    SocketMessage,
    /// Parent `try_recv`.
    ParentTryRecv,
    /// Parent `recv_timeout(0)`.
    ParentRecv,
    /// Parent `send_timeout(0)`.
    ParentSend,
    /// Parent `reserve` + write + `commit` (or abandon) + maybe `publish`.
    ParentReserve,
    /// Honest peer `send_timeout(0)`.
    PeerSend,
    /// Honest peer `try_recv`.
    PeerTryRecv,
    /// Honest peer reserve/commit without publish, then publish later.
    PeerReserve,
    /// Publish staged frames on one side.
    Publish,
    /// Close a direction (`Sender::close`) or the whole channel (`Closer`).
    Close,
    /// The peer "dies": drop the honest peer endpoint and the hostile socket end.
    PeerDies,
    /// Honest peer `send_sealed` of a fresh sealed memfd (as a shared object travels).
    PeerSendSealed,
    /// Parent `send_sealed`.
    ParentSendSealed,
    /// The hostile peer attacks a memfd it sent (or a duplicate of an honest sealed one).
    Rewrite,
}

const OPS: [Op; 18] = [
    Op::StoreWord,
    Op::WriteHeader,
    Op::WriteBytes,
    Op::AppendFrame,
    Op::SocketMessage,
    Op::ParentTryRecv,
    Op::ParentRecv,
    Op::ParentSend,
    Op::ParentReserve,
    Op::PeerSend,
    Op::PeerTryRecv,
    Op::PeerReserve,
    Op::Publish,
    Op::Close,
    Op::PeerDies,
    Op::PeerSendSealed,
    Op::ParentSendSealed,
    Op::Rewrite,
];

/// Expected traffic in one direction, while nobody misbehaved.
#[derive(Default)]
struct Model {
    in_flight: VecDeque<Vec<u8>>,
}

/// One receiving half and what we know about it.
struct RecvSide {
    rx: Receiver,
    poisoned: Option<String>,
    max_in_ring: usize,
}

struct SendSide {
    tx: Sender,
    poisoned: Option<String>,
}

struct World {
    max_frame: u64,
    parent_tx: SendSide,
    parent_rx: RecvSide,
    peer: Option<(SendSide, RecvSide)>,
    hostile: Hostile,
    /// The hostile peer touched something, or something was closed: exactness no longer holds.
    tainted: bool,
    to_peer: Model,
    to_parent: Model,
    fill: u8,
    /// Out-of-band mappings taken from received frames, with the bytes they must keep.
    taken: VecDeque<(SealedMap, Vec<u8>)>,
}

fn payload(fill: &mut u8, len: usize) -> Vec<u8> {
    *fill = fill.wrapping_add(1);
    let seed = *fill;
    (0..len).map(|i| seed.wrapping_add(i as u8)).collect()
}

/// Checks a receive result against the side's poison state and the model; returns the bytes.
/// Copies a received frame out (touching every byte), ending the borrow of the receiver.
/// An out-of-band frame of even length also gives up its mapping (`take_out_of_band`), which
/// must hold the same bytes and leave the frame empty; it is returned to be kept.
fn owned(
    res: Result<Option<procpool_ipc::Frame<'_>>, RecvError>,
    taken: &mut VecDeque<(SealedMap, Vec<u8>)>,
) -> Result<Option<(Vec<u8>, bool)>, RecvError> {
    res.map(|frame| {
        frame.map(|mut frame| {
            let bytes = frame.to_vec();
            let oob = frame.is_out_of_band();
            let sealed = frame.is_sealed();
            assert!(!sealed || oob, "only an out-of-band frame is sealed");
            if bytes.len() % 2 == 0 {
                let map = frame.take_out_of_band();
                // A pad frame is out of band but not sealed: its bytes must be copied to be kept.
                assert_eq!(
                    map.is_some(),
                    sealed,
                    "only a sealed out-of-band frame has a mapping to keep"
                );
                if let Some(map) = map {
                    assert_eq!(&map[..], &bytes[..], "taken mapping differs from the frame");
                    assert!(
                        frame.is_empty(),
                        "a frame reads empty after its mapping is taken"
                    );
                    assert!(!frame.is_out_of_band());
                    assert!(frame.take_out_of_band().is_none(), "taken twice");
                    tally("recv-oob-mapping-taken".to_owned());
                    if taken.len() == KEEP {
                        taken.pop_front();
                    }
                    taken.push_back((map, bytes.clone()));
                }
            }
            (bytes, oob)
        })
    })
}

/// Every taken mapping still holds the bytes it was received with.
fn check_taken(taken: &VecDeque<(SealedMap, Vec<u8>)>) {
    for (map, bytes) in taken {
        assert_eq!(&map[..], &bytes[..], "a kept out-of-band mapping changed");
    }
}

fn check_recv(
    side: &mut RecvSide,
    res: Result<Option<(Vec<u8>, bool)>, RecvError>,
    max_frame: u64,
    model: &mut Model,
    tainted: bool,
) {
    let was_poisoned = side.poisoned.clone();
    tally(match &res {
        Ok(Some((_, oob))) => format!(
            "recv-frame{}{}",
            if *oob { "-oob" } else { "" },
            if tainted { "" } else { "-exact" }
        ),
        Ok(None) => "recv-none".to_owned(),
        Err(RecvError::Corrupt(c)) => format!(
            "recv-corrupt-{}",
            format!("{c:?}").split([' ', '{', '(']).next().unwrap_or("")
        ),
        Err(err) => format!(
            "recv-{}",
            format!("{err:?}")
                .split([' ', '(', '{'])
                .next()
                .unwrap_or("")
        ),
    });
    match res {
        Ok(Some((frame, out_of_band))) => {
            assert!(
                was_poisoned.is_none(),
                "a poisoned receiver delivered a frame after {was_poisoned:?}"
            );
            if out_of_band {
                assert!(
                    frame.len() as u64 <= max_frame,
                    "oob frame beyond max_frame"
                );
            } else {
                assert!(
                    frame.len() <= side.max_in_ring,
                    "in-ring frame beyond the ring"
                );
            }
            if !tainted {
                let expected = model.in_flight.pop_front();
                assert_eq!(
                    expected.as_deref(),
                    Some(&frame[..]),
                    "honest channel delivered an unexpected frame"
                );
            }
        }
        Ok(None) | Err(RecvError::Timeout) => {
            assert!(
                was_poisoned.is_none(),
                "a poisoned receiver reported no data after {was_poisoned:?}"
            );
        }
        Err(RecvError::Corrupt(corruption)) => {
            assert!(tainted, "corruption on an honest channel: {corruption:?}");
            if let Some(previous) = &was_poisoned {
                assert_eq!(previous, &format!("{corruption:?}"), "poison changed");
            }
            side.poisoned = Some(format!("{corruption:?}"));
        }
        Err(err) => {
            assert!(was_poisoned.is_none(), "poisoned receiver returned {err:?}");
            assert!(tainted, "honest channel failed: {err:?}");
        }
    }
}

fn check_send(side: &mut SendSide, res: Result<(), SendError>, tainted: bool) -> bool {
    let was_poisoned = side.poisoned.clone();
    tally(match &res {
        Ok(()) => "send-ok".to_owned(),
        Err(SendError::Corrupt(c)) => format!(
            "send-corrupt-{}",
            format!("{c:?}").split([' ', '{']).next().unwrap_or("")
        ),
        Err(err) => format!(
            "send-{}",
            format!("{err:?}")
                .split([' ', '(', '{'])
                .next()
                .unwrap_or("")
        ),
    });
    match res {
        Ok(()) => {
            assert!(
                was_poisoned.is_none(),
                "a poisoned sender accepted a frame after {was_poisoned:?}"
            );
            true
        }
        Err(SendError::Corrupt(corruption)) => {
            assert!(tainted, "corruption on an honest channel: {corruption:?}");
            if let Some(previous) = &was_poisoned {
                assert_eq!(previous, &format!("{corruption:?}"), "poison changed");
            }
            side.poisoned = Some(format!("{corruption:?}"));
            false
        }
        Err(SendError::Timeout | SendError::TooLarge { .. }) => {
            assert!(was_poisoned.is_none(), "poisoned sender returned {res:?}");
            false
        }
        Err(err) => {
            assert!(was_poisoned.is_none(), "poisoned sender returned {err:?}");
            assert!(tainted, "honest channel failed: {err:?}");
            false
        }
    }
}

fn frame_len(input: &mut Input<'_>, cap: usize) -> usize {
    match input.u8() % 4 {
        0 => usize::from(input.u8()),
        1 => usize::from(input.u16()) % (cap + 1),
        2 => cap / 4 + usize::from(input.u8()),
        _ => usize::from(input.u16()) % (4 * cap),
    }
}

fn send_fds(socket: BorrowedFd<'_>, payload: &[u8], fds: &[i32]) {
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE((fds.len() * size_of::<i32>()) as u32) } as usize;
    let mut control = vec![0u64; space.div_ceil(8).max(1)];
    // SAFETY: zeroed msghdr is a valid starting value (all pointers null, lengths 0).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: `msg` has a control buffer of `space` bytes, enough for one header with
        // `fds.len()` ints (CMSG_SPACE); CMSG_FIRSTHDR/CMSG_DATA stay inside it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN((fds.len() * size_of::<i32>()) as u32) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(cmsg).cast::<i32>(),
                fds.len(),
            );
        }
    }
    // SAFETY: `msg` points at live buffers for the duration of the call. Non-blocking: a full
    // socket just drops the message (the hostile peer does not care).
    unsafe {
        libc::sendmsg(
            socket.as_raw_fd(),
            &msg,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
}

/// A memfd of `size` bytes, sealed as the fuzzer chooses (bits 0-3: write, grow, shrink, seal);
/// bit 4: map it read-only and shared *before* sealing, and keep that mapping.
fn make_memfd(size: usize, seals: u8) -> Option<KeptFd> {
    // SAFETY: memfd_create with a static NUL-terminated name and valid flags.
    let fd = unsafe {
        libc::memfd_create(
            c"fuzz-oob".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let file = File::from(fd);
    file.set_len(size as u64).ok()?;
    let mut premap = None;
    if seals & 0x10 != 0 && size > 0 {
        // SAFETY: a fresh read-only shared mapping of our own memfd; unmapped by `KeptFd`.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr != libc::MAP_FAILED {
            premap = Some((ptr, size));
        }
    }
    let mut flags = 0;
    if seals & 1 != 0 {
        flags |= libc::F_SEAL_WRITE;
    }
    if seals & 2 != 0 {
        flags |= libc::F_SEAL_GROW;
    }
    if seals & 4 != 0 {
        flags |= libc::F_SEAL_SHRINK;
    }
    if seals & 8 != 0 {
        flags |= libc::F_SEAL_SEAL;
    }
    // SAFETY: fcntl on a valid fd with an int argument.
    unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, flags) };
    Some(KeptFd {
        fd: file.into(),
        premap,
    })
}

/// Size of the memfd behind `fd` (0 if unknown).
fn fd_size(fd: &OwnedFd) -> u64 {
    fd.try_clone()
        .ok()
        .and_then(|fd| File::from(fd).metadata().ok())
        .map_or(0, |m| m.len())
}

/// Everything the hostile holder of a memfd may try against its bytes; none of it may change a
/// mapping the receiver accepted (the kept mappings are compared afterwards).
fn attack(kept: &KeptFd, mode: u8, at: u64, byte: u8) {
    let fd = kept.fd.as_raw_fd();
    match mode % 6 {
        0 => {
            if let Ok(dup) = kept.fd.try_clone() {
                let _ = File::from(dup).write_at(&[byte], at);
            }
        }
        1 | 2 => {
            let len = if mode % 6 == 1 {
                at / 2
            } else {
                at.saturating_add(4096).min(1 << 24)
            };
            // SAFETY: ftruncate on an fd we own; no memory is involved.
            unsafe { libc::ftruncate(fd, len as libc::off_t) };
        }
        3 => {
            // SAFETY: fallocate on an fd we own; no memory is involved.
            unsafe {
                libc::fallocate(
                    fd,
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    0,
                    (at + 1) as libc::off_t,
                )
            };
        }
        4 => {
            // SAFETY: a new shared mapping of our own memfd, unmapped below.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd,
                    0,
                )
            };
            if ptr != libc::MAP_FAILED {
                if fd_size(&kept.fd) > 0 {
                    // SAFETY: the mapping is writable (mmap granted it) and its first page
                    // is backed (the file is not empty).
                    unsafe { ptr.cast::<u8>().write_volatile(byte) };
                }
                // SAFETY: the mapping made above.
                unsafe { libc::munmap(ptr, 4096) };
            }
        }
        _ => {
            if let Some((ptr, len)) = kept.premap {
                // SAFETY: `ptr`/`len` are our own mapping; asking for write access is allowed
                // to fail, and we write only if it did not.
                let ok = unsafe { libc::mprotect(ptr, len, libc::PROT_READ | libc::PROT_WRITE) };
                if ok == 0 && fd_size(&kept.fd) > 0 {
                    // SAFETY: writable now, first page backed.
                    unsafe { ptr.cast::<u8>().write_volatile(byte) };
                }
            }
        }
    }
}

impl World {
    fn new(input: &mut Input<'_>) -> Option<World> {
        let caps = [256usize, 512, 4096, 65536];
        let c = input.u8();
        let sub = caps[usize::from(c & 3)];
        let comp = caps[usize::from((c >> 2) & 3)];
        let mut config = ChannelConfig::new()
            .submission_capacity(sub)
            .completion_capacity(comp)
            .spin(Duration::ZERO);
        if c & 0x10 != 0 {
            config = config.large_threshold(usize::from(input.u8()) * 16);
        }
        let max_frame = match (c >> 5) & 3 {
            0 => 1 << 20,
            1 => u64::from(input.u16()).max(1),
            2 => 64,
            _ => 4 << 30,
        };
        config = config.max_frame(max_frame);
        let (parent, handoff) = Endpoint::create(&config).ok()?;
        let (region, socket) = handoff.into_fds();
        let file = File::from(region.try_clone().ok()?);
        // SAFETY: the region is a memfd sealed against shrinking, so the mapping cannot
        // fault; we only ever write through raw pointers and atomics, as another process would.
        let map = unsafe { memmap2::MmapMut::map_mut(&file) }.ok()?;
        let read_u64 = |off: usize| u64::from_le_bytes(map[off..off + 8].try_into().unwrap());
        let ring = [read_u64(24) as usize, read_u64(32) as usize];
        let cap = [read_u64(40) as usize, read_u64(48) as usize];
        let peer = Endpoint::open(Handoff::new(region, socket.try_clone().ok()?)).ok()?;
        let (parent_tx, parent_rx) = parent.split();
        let (peer_tx, peer_rx) = peer.split();
        Some(World {
            max_frame,
            parent_tx: SendSide {
                tx: parent_tx,
                poisoned: None,
            },
            parent_rx: RecvSide {
                rx: parent_rx,
                poisoned: None,
                max_in_ring: cap[1],
            },
            peer: Some((
                SendSide {
                    tx: peer_tx,
                    poisoned: None,
                },
                RecvSide {
                    rx: peer_rx,
                    poisoned: None,
                    max_in_ring: cap[0],
                },
            )),
            hostile: Hostile {
                map,
                ring,
                cap,
                socket: Some(socket),
                sent: VecDeque::new(),
            },
            tainted: false,
            to_peer: Model::default(),
            to_parent: Model::default(),
            fill: 0,
            taken: VecDeque::new(),
        })
    }

    fn step(&mut self, op: Op, input: &mut Input<'_>) {
        match op {
            Op::StoreWord => {
                self.tainted = true;
                let ring = usize::from(input.u8() & 1);
                let word = control_word(input.u8());
                if word == TAIL || word == HEAD {
                    let w = self.hostile.word64(ring, word);
                    let value =
                        index_value(input, w.load(Ordering::Relaxed), self.hostile.cap[ring]);
                    // Release: like an honest producer/consumer publishing an index.
                    self.hostile
                        .word64(ring, word)
                        .store(value, Ordering::Release);
                } else {
                    let value = match input.u8() % 4 {
                        0 => 0,
                        1 => 1,
                        2 => 3,
                        _ => input.u32(),
                    };
                    // SeqCst: the flags and `closed` are only ever written SeqCst by the endpoints.
                    self.hostile
                        .word32(ring, word)
                        .store(value, Ordering::SeqCst);
                }
            }
            Op::WriteHeader => {
                self.tainted = true;
                let ring = usize::from(input.u8() & 1);
                let cap = self.hostile.cap[ring];
                let pos = (usize::from(input.u16()) * 16) % cap;
                let kind = match input.u8() % 4 {
                    0 => KIND_DATA,
                    1 => KIND_WRAP,
                    2 => KIND_LARGE,
                    _ => input.u32(),
                };
                let len = match input.u8() % 4 {
                    0 => u32::from(input.u8()),
                    1 => (cap - pos - 16) as u32,
                    2 => 16,
                    _ => input.u32(),
                };
                let reserved = if input.u8() % 8 == 0 { input.u64() } else { 0 };
                self.hostile.write_header(ring, pos, len, kind, reserved);
                if kind == KIND_LARGE {
                    let mut body = [0u8; 16];
                    body[..8].copy_from_slice(&input.u64().to_le_bytes());
                    body[8..].copy_from_slice(&u64::from(input.u8()).to_le_bytes());
                    self.hostile.write_data(ring, pos + 16, &body);
                }
            }
            Op::WriteBytes => {
                self.tainted = true;
                let ring = usize::from(input.u8() & 1);
                let pos = usize::from(input.u16()) % self.hostile.cap[ring];
                let n = usize::from(input.u8());
                let bytes = input.bytes(n).to_vec();
                self.hostile.write_data(ring, pos, &bytes);
            }
            Op::AppendFrame => {
                // The hostile peer produces into ring 1 like an honest producer would, but with
                // lengths and kinds of the fuzzer's choice, then publishes.
                self.tainted = true;
                let ring = 1;
                let cap = self.hostile.cap[ring];
                // Relaxed: only this thread writes the hostile side's view; nothing to pair with.
                let tail = self.hostile.word64(ring, TAIL).load(Ordering::Relaxed);
                let pos = (tail as usize) & (cap - 1);
                let (kind, len, size) = match input.u8() % 5 {
                    0 => (KIND_WRAP, 0u32, (cap - pos) as u64),
                    1 => (KIND_LARGE, 16, 32),
                    2 => {
                        let len = input.u32();
                        (KIND_DATA, len, 16 + u64::from(len).div_ceil(16) * 16)
                    }
                    _ => {
                        let len = u32::from(input.u8());
                        (KIND_DATA, len, 16 + u64::from(len).div_ceil(16) * 16)
                    }
                };
                self.hostile.write_header(ring, pos, len, kind, 0);
                if kind == KIND_LARGE {
                    let mut body = [0u8; 16];
                    body[..8].copy_from_slice(&u64::from(input.u16()).to_le_bytes());
                    body[8..].copy_from_slice(&u64::from(input.u8()).to_le_bytes());
                    self.hostile.write_data(ring, pos + 16, &body);
                } else if kind == KIND_DATA {
                    let n = (len as usize).min(255);
                    let fill = input.u8();
                    self.hostile.write_data(ring, pos + 16, &vec![fill; n]);
                }
                // Release: publishes the header and bytes written above, like `Producer::publish`.
                self.hostile
                    .word64(ring, TAIL)
                    .store(tail.wrapping_add(size), Ordering::Release);
                // SeqCst + reset flag: what an honest producer does to wake a sleeping consumer.
                self.hostile
                    .word32(ring, CONSUMER_SLEEPS)
                    .store(0, Ordering::SeqCst);
            }
            Op::SocketMessage => {
                self.tainted = true;
                let shape = input.u8();
                let seq = if shape & 0x80 != 0 {
                    input.u64()
                } else {
                    u64::from(shape & 3)
                };
                let size = usize::from(input.u16()) % 70_000;
                let seals = input.u8();
                let Some(socket) = &self.hostile.socket else {
                    return;
                };
                let payload_len = match (shape >> 2) & 3 {
                    0 | 1 => 8,
                    2 => 0,
                    _ => 16,
                };
                let payload = [seq.to_le_bytes(), seq.to_le_bytes()].concat();
                let mut owned = Vec::new();
                match (shape >> 4) & 7 {
                    0 | 1 => owned.extend(make_memfd(size, 0x0f | (seals & 0x10))),
                    2 => owned.extend(make_memfd(size, seals)),
                    3 => {}
                    4 => {
                        owned.extend(make_memfd(size, 0x0f));
                        owned.extend(make_memfd(size, seals));
                    }
                    5 => {
                        // Not a memfd at all: a pipe end.
                        let mut fds = [0; 2];
                        // SAFETY: `fds` is valid for two ints.
                        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == 0 {
                            for fd in fds {
                                // SAFETY: pipe2 returned two fresh fds we now own.
                                let fd =
                                    unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
                                owned.push(KeptFd { fd, premap: None });
                            }
                            owned.truncate(1);
                        }
                    }
                    _ => owned.extend(
                        socket
                            .try_clone()
                            .ok()
                            .map(|fd| KeptFd { fd, premap: None }),
                    ),
                }
                let raw: Vec<i32> = owned.iter().map(|fd| fd.fd.as_raw_fd()).collect();
                send_fds(socket.as_fd_borrowed(), &payload[..payload_len], &raw);
                for kept in owned {
                    self.hostile.keep(kept);
                }
            }
            Op::ParentTryRecv => {
                let res = owned(self.parent_rx.rx.try_recv(), &mut self.taken);
                check_recv(
                    &mut self.parent_rx,
                    res,
                    self.max_frame,
                    &mut self.to_parent,
                    self.tainted,
                );
            }
            Op::ParentRecv => {
                let res = owned(
                    self.parent_rx.rx.recv_timeout(Duration::ZERO).map(Some),
                    &mut self.taken,
                );
                check_recv(
                    &mut self.parent_rx,
                    res,
                    self.max_frame,
                    &mut self.to_parent,
                    self.tainted,
                );
            }
            Op::ParentSend => {
                let len = frame_len(input, self.hostile.cap[0]);
                let bytes = payload(&mut self.fill, len);
                let res = self.parent_tx.tx.send_timeout(&bytes, Duration::ZERO);
                if check_send(&mut self.parent_tx, res, self.tainted) {
                    self.to_peer.in_flight.push_back(bytes);
                }
            }
            Op::ParentReserve => {
                let len = frame_len(input, self.hostile.cap[0]);
                let mode = input.u8();
                let bytes = payload(&mut self.fill, len);
                let res = match self.parent_tx.tx.reserve(len, Some(Duration::ZERO)) {
                    Ok(mut grant) => {
                        if mode & 1 == 0 {
                            let n = grant.len().min(len);
                            grant[..n].copy_from_slice(&bytes[..n]);
                            let used = if mode & 2 == 0 { len } else { len + 1 };
                            match grant.commit(used) {
                                Ok(()) => Ok(true),
                                Err(SendError::TooLarge { .. }) if used > len => Ok(false),
                                Err(err) => Err(err),
                            }
                        } else {
                            drop(grant);
                            Ok(false)
                        }
                    }
                    Err(err) => Err(err),
                };
                let committed = matches!(res, Ok(true));
                check_send(&mut self.parent_tx, res.map(|_| ()), self.tainted);
                if committed {
                    self.to_peer.in_flight.push_back(bytes);
                }
                if mode & 4 != 0 {
                    self.parent_tx.tx.publish();
                }
            }
            Op::PeerSend => {
                let len = frame_len(input, self.hostile.cap[1]);
                let bytes = payload(&mut self.fill, len);
                if let Some((tx, _)) = &mut self.peer {
                    let res = tx.tx.send_timeout(&bytes, Duration::ZERO);
                    if check_send(tx, res, self.tainted) {
                        self.to_parent.in_flight.push_back(bytes);
                    }
                }
            }
            Op::PeerTryRecv => {
                if let Some((_, rx)) = &mut self.peer {
                    let res = owned(rx.rx.try_recv(), &mut self.taken);
                    check_recv(rx, res, self.max_frame, &mut self.to_peer, self.tainted);
                }
            }
            Op::PeerReserve => {
                let len = frame_len(input, self.hostile.cap[1]);
                let bytes = payload(&mut self.fill, len);
                if let Some((tx, _)) = &mut self.peer {
                    let res = match tx.tx.reserve(len, Some(Duration::ZERO)) {
                        Ok(mut grant) => {
                            let n = grant.len().min(len);
                            grant[..n].copy_from_slice(&bytes[..n]);
                            grant.commit(len)
                        }
                        Err(err) => Err(err),
                    };
                    if check_send(tx, res, self.tainted) {
                        self.to_parent.in_flight.push_back(bytes);
                    }
                }
            }
            Op::Publish => {
                if input.u8() & 1 == 0 {
                    self.parent_tx.tx.publish();
                } else if let Some((tx, _)) = &mut self.peer {
                    tx.tx.publish();
                }
            }
            Op::Close => {
                self.tainted = true;
                match input.u8() % 3 {
                    0 => self.parent_tx.tx.close(),
                    1 => {
                        if let Some((tx, _)) = &mut self.peer {
                            tx.tx.close();
                        }
                    }
                    _ => {
                        // A closer on a fresh handle is not reachable after split; closing the
                        // hostile way: both bits on both rings.
                        for ring in 0..2 {
                            self.hostile
                                .word32(ring, CLOSED)
                                .fetch_or(3, Ordering::SeqCst);
                        }
                    }
                }
            }
            Op::PeerDies => {
                self.tainted = true;
                self.peer = None;
                self.hostile.socket = None;
            }
            Op::PeerSendSealed => {
                let len = frame_len(input, self.hostile.cap[1]).max(1);
                let bytes = payload(&mut self.fill, len);
                if let Some((tx, _)) = &mut self.peer {
                    let res = send_sealed(tx, &bytes, &mut self.hostile);
                    if check_send(tx, res, self.tainted) {
                        self.to_parent.in_flight.push_back(bytes);
                    }
                }
            }
            Op::ParentSendSealed => {
                let len = frame_len(input, self.hostile.cap[0]).max(1);
                let bytes = payload(&mut self.fill, len);
                let res = send_sealed(&mut self.parent_tx, &bytes, &mut self.hostile);
                if check_send(&mut self.parent_tx, res, self.tainted) {
                    self.to_peer.in_flight.push_back(bytes);
                }
            }
            Op::Rewrite => {
                // Not a taint: nothing done to a sealed memfd may be visible to anyone.
                let which = usize::from(input.u8());
                let mode = input.u8();
                let at = u64::from(input.u16());
                let byte = input.u8();
                if !self.hostile.sent.is_empty() {
                    let kept = &self.hostile.sent[which % self.hostile.sent.len()];
                    attack(kept, mode, at, byte);
                    if !self.taken.is_empty() {
                        tally(format!("rewrite-{}-with-taken-mappings", mode % 6));
                    }
                }
                check_taken(&self.taken);
            }
        }
    }
}

impl Hostile {
    fn keep(&mut self, kept: KeptFd) {
        if self.sent.len() == KEEP {
            self.sent.pop_front();
        }
        self.sent.push_back(kept);
    }
}

/// `send_sealed` of `bytes` in a fresh sealed memfd; the hostile peer keeps a duplicate of it.
fn send_sealed(side: &mut SendSide, bytes: &[u8], hostile: &mut Hostile) -> Result<(), SendError> {
    // Making the file is not under test: if that fails (out of fds), nothing was sent.
    let made = SealedWriter::new().and_then(|mut writer| {
        writer.write_all(bytes)?;
        writer.seal()
    });
    let Ok(file) = made else {
        return Err(SendError::Timeout);
    };
    if let Ok(fd) = file.as_fd().try_clone_to_owned() {
        hostile.keep(KeptFd { fd, premap: None });
    }
    side.tx.send_sealed(&file, Some(Duration::ZERO))
}

/// `BorrowedFd` from an `OwnedFd` without importing `AsFd` everywhere.
trait AsFdBorrowed {
    fn as_fd_borrowed(&self) -> BorrowedFd<'_>;
}

impl AsFdBorrowed for OwnedFd {
    fn as_fd_borrowed(&self) -> BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(self)
    }
}

fuzz_target!(|data: &[u8]| {
    static STATS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let stats = *STATS.get_or_init(|| std::env::var_os("PROCPOOL_FUZZ_STATS").is_some());
    TALLY.with(|t| t.borrow_mut().clear());
    run(data);
    if stats {
        TALLY.with(|t| {
            for what in t.borrow().keys() {
                eprintln!("STAT {what}");
            }
        });
    }
});

fn run(data: &[u8]) {
    let mut input = Input(data);
    let Some(mut world) = World::new(&mut input) else {
        return;
    };
    let mut steps = 0;
    while !input.is_empty() && steps < 512 {
        let op = OPS[usize::from(input.u8()) % OPS.len()];
        world.step(op, &mut input);
        steps += 1;
    }
    // Drain what is left: both receivers must end in a frame, no data or a typed error.
    check_taken(&world.taken);
    for _ in 0..8 {
        let res = owned(world.parent_rx.rx.try_recv(), &mut world.taken);
        check_recv(
            &mut world.parent_rx,
            res,
            world.max_frame,
            &mut world.to_parent,
            world.tainted,
        );
    }
    check_taken(&world.taken);
}
