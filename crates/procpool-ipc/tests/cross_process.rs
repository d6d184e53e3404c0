//! Cross-process tests: the test binary re-executes itself as the peer process
//! (selected by `PROCPOOL_IPC_CHILD`), like rayon-core's `stack_overflow_crash` test.
//!
//! The child inherits the region memfd as fd 3 and its socket end as fd 4 (set up with
//! `dup2` in `pre_exec`), runs only the `child_main` test, and exits. Every child is
//! held by a [`ChildGuard`] that kills and reaps it, even when the test fails.

// This file plays a (hostile) peer or a baseline: it maps memory itself.
#![allow(clippy::disallowed_methods)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use procpool_ipc::{
    ChannelConfig, Corruption, Endpoint, Handoff, RecvError, SendError, WaitStrategy,
};

const ROLE_ENV: &str = "PROCPOOL_IPC_CHILD";
const ARG_ENV: &str = "PROCPOOL_IPC_CHILD_ARG";
/// Generous upper bound for whole tests; only a watchdog, never a speed assertion.
const WATCHDOG: Duration = Duration::from_secs(120);

/// Kills and reaps the child on drop.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl ChildGuard {
    /// Waits for a clean exit (with a watchdog) and asserts success.
    fn join(mut self) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                assert!(status.success(), "child failed: {status:?}");
                return;
            }
            assert!(start.elapsed() < WATCHDOG, "watchdog: child did not exit");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Starts this test binary as the peer running `role`, handing it `handoff`.
fn spawn_child(role: &str, arg: &str, handoff: Handoff) -> ChildGuard {
    let (region, socket) = handoff.into_fds();
    let (region_raw, socket_raw) = (region.as_raw_fd(), socket.as_raw_fd());
    let mut command = Command::new(std::env::current_exe().expect("current_exe"));
    command
        .args(["child_main", "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE_ENV, role)
        .env(ARG_ENV, arg)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // SAFETY: only fcntl and dup2 run between fork and exec (both async-signal-safe);
    // they place the two inherited fds at 3 and 4 and clear their close-on-exec flag.
    unsafe {
        command.pre_exec(move || {
            // First move both fds above 4 (one may already sit on 3 or 4, where dup2 would
            // be a no-op that keeps close-on-exec, or be overwritten), then into place.
            let high =
                [region_raw, socket_raw].map(|fd| libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 64));
            for (from, to) in [(high[0], 3), (high[1], 4)] {
                if from < 0 || libc::dup2(from, to) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = command.spawn().expect("spawn child");
    // The parent must not keep the child's ends, or the child's death is invisible.
    drop((region, socket));
    ChildGuard(child)
}

fn child_endpoint() -> Endpoint {
    // SAFETY: the parent placed our region and socket at fds 3 and 4 and nothing else in
    // this process owns them.
    let handoff = unsafe { Handoff::new(OwnedFd::from_raw_fd(3), OwnedFd::from_raw_fd(4)) };
    Endpoint::open(handoff).expect("child open")
}

/// Entry point of the child process; a no-op in the normal test run.
#[test]
fn child_main() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    let arg = std::env::var(ARG_ENV).unwrap_or_default();
    match role.as_str() {
        "stream" => child_stream(arg.parse().expect("count")),
        "echo" => child_echo(),
        "late_writer" => child_late_writer(),
        "ready_then_sleep" => child_ready_then_sleep(),
        "large" => child_large(),
        "hostile" => child_hostile(&arg),
        other => panic!("unknown role {other}"),
    }
}

// ---------------------------------------------------------------- ordered stream

fn child_stream(n_frames: u64) {
    let (mut sender, _receiver) = child_endpoint().split();
    for seq in 0..n_frames {
        let mut grant = sender.reserve(8, None).expect("reserve");
        grant.copy_from_slice(&seq.to_le_bytes());
        grant.commit(8).expect("commit");
        if seq % 32 == 31 {
            sender.publish();
        }
    }
    sender.close();
}

#[test]
fn ten_million_frames_in_order() {
    let n_frames: u64 = if cfg!(debug_assertions) {
        1_000_000
    } else {
        10_000_000
    };
    let config = ChannelConfig::new().completion_capacity(256 * 1024);
    let (endpoint, handoff) = Endpoint::create(&config).expect("create");
    let child = spawn_child("stream", &n_frames.to_string(), handoff);
    let (_sender, mut receiver) = endpoint.split();
    let mut expected = 0u64;
    loop {
        match receiver.recv_timeout(WATCHDOG) {
            Ok(frame) => {
                assert_eq!(frame.len(), 8);
                let seq = u64::from_le_bytes(frame[..].try_into().expect("8 bytes"));
                assert_eq!(seq, expected, "lost, duplicated or reordered frame");
                expected += 1;
            }
            Err(RecvError::Disconnected) => break,
            Err(err) => panic!("recv: {err}"),
        }
    }
    assert_eq!(expected, n_frames);
    child.join();
}

// ---------------------------------------------------------------- echo with mixed sizes

/// Deterministic sizes and contents (xorshift), shared by both processes.
fn frame_for(seq: u64, max_len: usize) -> Vec<u8> {
    let mut state = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    let len = match seq % 7 {
        0 => 0,
        1 => max_len,
        _ => (state % (max_len as u64 + 1)) as usize,
    };
    (0..len)
        .map(|idx| (state as usize).wrapping_add(idx * 7) as u8)
        .collect()
}

fn child_echo() {
    let (mut sender, mut receiver) = child_endpoint().split();
    loop {
        let frame = match receiver.recv() {
            Ok(frame) => frame,
            Err(RecvError::Disconnected) => break,
            Err(err) => panic!("child recv: {err}"),
        };
        let mut grant = sender.reserve(frame.len(), None).expect("reserve");
        grant.copy_from_slice(&frame);
        drop(frame);
        let len = grant.len();
        grant.commit(len).expect("commit");
        sender.publish();
    }
}

#[test]
fn mixed_sizes_cross_the_wrap_in_both_directions() {
    let config = ChannelConfig::new()
        .submission_capacity(4096)
        .completion_capacity(4096);
    let (endpoint, handoff) = Endpoint::create(&config).expect("create");
    let child = spawn_child("echo", "", handoff);
    let (mut sender, mut receiver) = endpoint.split();
    let max_len = sender.large_threshold();
    assert_eq!(max_len, 1024);
    let n_frames = 20_000u64;
    // At most `window` unanswered frames (<= 1040 bytes each) plus one WRAP fit in
    // either 4 KiB ring, so neither side can block the other for good.
    let window = 2u64;
    let mut received = 0u64;
    for seq in 0..n_frames + window {
        if seq < n_frames {
            sender
                .send_timeout(&frame_for(seq, max_len), WATCHDOG)
                .expect("send");
        }
        if seq >= window {
            let frame = receiver.recv_timeout(WATCHDOG).expect("echo");
            assert_eq!(
                &frame[..],
                &frame_for(received, max_len)[..],
                "frame {received}"
            );
            assert_eq!(frame.as_ptr() as usize % 16, 0, "payload alignment");
            received += 1;
        }
    }
    assert_eq!(received, n_frames);
    sender.close();
    assert!(matches!(
        receiver.recv_timeout(WATCHDOG),
        Err(RecvError::Disconnected)
    ));
    child.join();
}

// ---------------------------------------------------------------- wake-ups and death

fn child_late_writer() {
    let (mut sender, _receiver) = child_endpoint().split();
    std::thread::sleep(Duration::from_millis(200));
    sender.send(b"late").expect("send");
    // Keep the endpoint open until the parent has read.
    std::thread::sleep(Duration::from_millis(200));
}

#[test]
fn blocking_reader_wakes_on_write() {
    let config = ChannelConfig::new().spin(Duration::ZERO);
    let (endpoint, handoff) = Endpoint::create(&config).expect("create");
    let child = spawn_child("late_writer", "", handoff);
    let (_sender, mut receiver) = endpoint.split();
    let frame = receiver.recv_timeout(WATCHDOG).expect("woken by the write");
    assert_eq!(&frame[..], b"late");
    drop(frame);
    child.join();
}

fn child_ready_then_sleep() {
    let (mut sender, _receiver) = child_endpoint().split();
    sender.send(b"ready").expect("send");
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn reader_sees_disconnected_within_a_second_when_writer_is_sigkilled() {
    let config = ChannelConfig::new().spin(Duration::ZERO);
    let (endpoint, handoff) = Endpoint::create(&config).expect("create");
    let mut child = spawn_child("ready_then_sleep", "", handoff);
    let (_sender, mut receiver) = endpoint.split();
    assert_eq!(
        &receiver.recv_timeout(WATCHDOG).expect("ready")[..],
        b"ready"
    );
    let pid = child.0.id();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        // SAFETY: plain kill(2) on our own child, which is not reaped yet (the guard
        // reaps it later), so the pid cannot have been reused.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        Instant::now()
    });
    // The reader is parked (spin zero) when the kill lands; 1 s is the watchdog.
    let res = receiver.recv_timeout(Duration::from_millis(100) + Duration::from_secs(1));
    let killed_at = killer.join().expect("killer");
    assert!(
        matches!(res, Err(RecvError::Disconnected)),
        "expected Disconnected, got {res:?}"
    );
    eprintln!("disconnect seen {:?} after SIGKILL", killed_at.elapsed());
    let status = child.0.wait().expect("wait");
    assert!(!status.success());
}

#[test]
fn sender_sees_disconnected_when_reader_is_sigkilled() {
    let config = ChannelConfig::new()
        .spin(Duration::ZERO)
        .submission_capacity(4096);
    let (endpoint, handoff) = Endpoint::create(&config).expect("create");
    let mut child = spawn_child("ready_then_sleep", "", handoff);
    let (mut sender, mut receiver) = endpoint.split();
    assert_eq!(
        &receiver.recv_timeout(WATCHDOG).expect("ready")[..],
        b"ready"
    );
    child.0.kill().expect("kill");
    // The child never reads, so the ring fills and the sender parks, then sees the death.
    let mut res = Ok(());
    for _ in 0..1000 {
        res = sender.send_timeout(&[7; 512], WATCHDOG);
        if res.is_err() {
            break;
        }
    }
    assert!(
        matches!(res, Err(SendError::Disconnected)),
        "expected Disconnected, got {res:?}"
    );
}

#[test]
fn closer_wakes_a_parked_reader_at_once() {
    let config = ChannelConfig::new().spin(Duration::ZERO);
    let (endpoint, handoff) = Endpoint::create(&config).expect("create");
    let child = spawn_child("ready_then_sleep", "", handoff);
    let closer = endpoint.closer();
    let (_sender, mut receiver) = endpoint.split();
    assert_eq!(
        &receiver.recv_timeout(WATCHDOG).expect("ready")[..],
        b"ready"
    );
    let closing = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        closer.close();
    });
    let res = receiver.recv_timeout(WATCHDOG);
    assert!(matches!(res, Err(RecvError::Disconnected)), "got {res:?}");
    closing.join().expect("closer");
    drop(child);
}

// ---------------------------------------------------------------- large frames

const LARGE_LEN: usize = 64 << 20;

fn large_pattern(idx: usize) -> u8 {
    (idx ^ (idx >> 11)) as u8
}

fn child_large() {
    let (mut sender, mut receiver) = child_endpoint().split();
    // Receive one large frame, check it, and answer with a large frame written in place.
    let frame = receiver.recv().expect("large");
    assert!(frame.is_out_of_band());
    assert_eq!(frame.len(), LARGE_LEN);
    assert!(
        frame
            .iter()
            .enumerate()
            .all(|(idx, byte)| *byte == large_pattern(idx))
    );
    drop(frame);
    sender.send(b"small before").expect("send");
    let mut grant = sender.reserve(LARGE_LEN, None).expect("reserve large");
    for (idx, byte) in grant.iter_mut().enumerate() {
        *byte = large_pattern(idx).wrapping_add(1);
    }
    grant.commit(LARGE_LEN - 5).expect("commit");
    sender.send(b"small after").expect("send");
    sender.publish();
    assert!(matches!(receiver.recv(), Err(RecvError::Disconnected)));
}

#[test]
fn large_frame_of_64_mib_round_trips_out_of_band() {
    let (endpoint, handoff) = Endpoint::create(&ChannelConfig::new()).expect("create");
    let child = spawn_child("large", "", handoff);
    let (mut sender, mut receiver) = endpoint.split();
    let payload: Vec<u8> = (0..LARGE_LEN).map(large_pattern).collect();
    sender.send_timeout(&payload, WATCHDOG).expect("send large");
    assert_eq!(
        &receiver.recv_timeout(WATCHDOG).expect("small")[..],
        b"small before"
    );
    let frame = receiver.recv_timeout(WATCHDOG).expect("large back");
    assert!(frame.is_out_of_band());
    assert_eq!(frame.len(), LARGE_LEN - 5);
    assert_eq!(frame.as_ptr() as usize % 16, 0);
    assert!(
        frame
            .iter()
            .enumerate()
            .all(|(idx, byte)| *byte == large_pattern(idx).wrapping_add(1))
    );
    drop(frame);
    assert_eq!(
        &receiver.recv_timeout(WATCHDOG).expect("small")[..],
        b"small after"
    );
    sender.close();
    child.join();
}

// ---------------------------------------------------------------- hostile peer

/// Layout facts the hostile child needs (mirrors `wire`; a test of the wire format too).
mod raw {
    pub(crate) const RING_OFFSETS: usize = 24;
    pub(crate) const RING_CAPACITIES: usize = 40;
    pub(crate) const TAIL: usize = 0;
    pub(crate) const HEAD: usize = 128;
    pub(crate) const DATA: usize = 4096;
    pub(crate) const KIND_DATA: u32 = 0x4441_5441;
}

fn child_hostile(scenario: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    // SAFETY: as in `child_endpoint`.
    let region = unsafe { std::fs::File::from(OwnedFd::from_raw_fd(3)) };
    // SAFETY: as in `child_endpoint`; held so the parent does not see EOF early.
    let _socket = unsafe { OwnedFd::from_raw_fd(4) };
    // SAFETY: the region is a sealed memfd (cannot shrink); we only write through raw
    // pointers and atomics, as a misbehaving peer would.
    let map = unsafe { memmap2::MmapMut::map_mut(&region) }.expect("map");
    let base = map.as_ptr() as *mut u8;
    let read_u64 = |off: usize| u64::from_le_bytes(map[off..off + 8].try_into().expect("8"));
    // Ring 1 is ours to produce into; ring 0 ours to consume.
    let out_ring = read_u64(raw::RING_OFFSETS + 8) as usize;
    let in_ring = read_u64(raw::RING_OFFSETS) as usize;
    let out_capacity = read_u64(raw::RING_CAPACITIES + 8) as usize;
    // SAFETY: offsets come from the header the parent wrote and lie inside the mapping;
    // tail and head are 8-aligned u64 words used as atomics by the parent too.
    let word = |off: usize| unsafe { &*(base.add(off) as *const AtomicU64) };
    let write_header = |ring: usize, pos: usize, len: u32, kind: u32| {
        let mut bytes = [0u8; 16];
        bytes[..4].copy_from_slice(&len.to_le_bytes());
        bytes[4..8].copy_from_slice(&kind.to_le_bytes());
        // SAFETY: inside the data area of `ring`.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), base.add(ring + raw::DATA + pos), 16)
        };
    };
    let tail = word(out_ring + raw::TAIL);
    match scenario {
        "tail_beyond_capacity" => tail.store(out_capacity as u64 * 2, Ordering::Release),
        "huge_length" => {
            write_header(out_ring, 0, u32::MAX, raw::KIND_DATA);
            tail.store(64, Ordering::Release);
        }
        "bad_kind" => {
            write_header(out_ring, 0, 4, 0x0bad_0bad);
            tail.store(32, Ordering::Release);
        }
        "tail_backwards" => {
            write_header(out_ring, 0, 4, raw::KIND_DATA);
            tail.store(32, Ordering::Release);
            std::thread::sleep(Duration::from_millis(300));
            tail.store(16, Ordering::Release);
        }
        "head_beyond_tail" => {
            word(in_ring + raw::HEAD).store(1 << 40, Ordering::Release);
        }
        "garbage" => {
            // Scribble over the whole outgoing ring, control words included, for a while.
            let mut state = 0x1234_5678_9abc_def1u64;
            let start = Instant::now();
            while start.elapsed() < Duration::from_millis(500) {
                for off in (0..raw::DATA + out_capacity).step_by(8) {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let value = if state % 4 == 0 { state % 512 } else { state };
                    word(out_ring + off).store(value, Ordering::Relaxed);
                }
            }
        }
        other => panic!("unknown scenario {other}"),
    }
    std::thread::sleep(Duration::from_millis(1000));
}

fn hostile_recv(scenario: &str) -> (RecvError, RecvError) {
    let config = ChannelConfig::new()
        .completion_capacity(4096)
        .spin(Duration::ZERO);
    let (endpoint, handoff) = Endpoint::create(&config).expect("create");
    let child = spawn_child("hostile", scenario, handoff);
    let (_sender, mut receiver) = endpoint.split();
    let first = loop {
        match receiver.recv_timeout(WATCHDOG) {
            Ok(frame) => drop(frame),
            Err(err) => break err,
        }
    };
    let second = receiver.recv_timeout(WATCHDOG).expect_err("poisoned");
    drop(child);
    (first, second)
}

#[test]
fn hostile_tail_beyond_capacity_is_an_error() {
    let (first, second) = hostile_recv("tail_beyond_capacity");
    assert!(
        matches!(
            first,
            RecvError::Corrupt(Corruption::TailBeyondCapacity { .. })
        ),
        "{first:?}"
    );
    assert!(
        matches!(
            second,
            RecvError::Corrupt(Corruption::TailBeyondCapacity { .. })
        ),
        "poisoned: {second:?}"
    );
}

#[test]
fn hostile_huge_length_is_an_error() {
    let (first, _) = hostile_recv("huge_length");
    assert!(
        matches!(
            first,
            RecvError::Corrupt(
                Corruption::FrameCrossesEnd { .. } | Corruption::LengthOutOfBounds { .. }
            )
        ),
        "{first:?}"
    );
}

#[test]
fn hostile_bad_kind_is_an_error() {
    let (first, _) = hostile_recv("bad_kind");
    assert!(
        matches!(
            first,
            RecvError::Corrupt(Corruption::BadKind {
                kind: 0x0bad_0bad,
                ..
            })
        ),
        "{first:?}"
    );
}

#[test]
fn hostile_tail_moving_backwards_is_an_error() {
    let (first, second) = hostile_recv("tail_backwards");
    assert!(
        matches!(
            first,
            RecvError::Corrupt(Corruption::IndexBackwards { word: "tail", .. })
        ),
        "{first:?}"
    );
    assert!(
        matches!(
            second,
            RecvError::Corrupt(Corruption::IndexBackwards { .. })
        ),
        "{second:?}"
    );
}

#[test]
fn hostile_garbage_never_crashes_or_hangs() {
    let (first, second) = hostile_recv("garbage");
    // Whatever the garbage was, the reader ends with a typed error (corruption, or
    // Disconnected if a scribbled `closed` word happened to be set first).
    assert!(
        matches!(first, RecvError::Corrupt(_) | RecvError::Disconnected),
        "{first:?}"
    );
    assert!(
        matches!(second, RecvError::Corrupt(_) | RecvError::Disconnected),
        "{second:?}"
    );
}

#[test]
fn hostile_head_beyond_tail_fails_the_sender() {
    let config = ChannelConfig::new()
        .submission_capacity(4096)
        .spin(Duration::ZERO);
    let (endpoint, handoff) = Endpoint::create(&config).expect("create");
    let child = spawn_child("hostile", "head_beyond_tail", handoff);
    let (mut sender, _receiver) = endpoint.split();
    let mut res = Ok(());
    // Fill the ring: the sender then loads head and finds it beyond its tail.
    for _ in 0..100 {
        res = sender.send_timeout(&[1; 256], WATCHDOG);
        if res.is_err() {
            break;
        }
    }
    assert!(
        matches!(
            res,
            Err(SendError::Corrupt(Corruption::HeadBeyondTail { .. }))
        ),
        "{res:?}"
    );
    let again = sender.send_timeout(&[1; 16], WATCHDOG);
    assert!(
        matches!(again, Err(SendError::Corrupt(_))),
        "poisoned: {again:?}"
    );
    drop(child);
}

#[test]
fn default_wait_strategy_is_fifty_microseconds() {
    assert_eq!(WaitStrategy::default().spin, Duration::from_micros(50));
}
