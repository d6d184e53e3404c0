//! Shared plumbing of the ipc benches: the bench binary re-executes itself as the peer
//! process (selected by `PROCPOOL_IPC_BENCH_PEER`), with up to two inherited fds at 3 and 4.

// This file plays a (hostile) peer or a baseline: it maps memory itself.
#![allow(clippy::disallowed_methods)]
#![allow(dead_code)] // each bench binary uses part of this module

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use procpool_ipc::{Endpoint, Handoff, Receiver, RecvError, Sender, WaitStrategy};

pub(crate) const ROLE_ENV: &str = "PROCPOOL_IPC_BENCH_PEER";

/// Kills and reaps the peer on drop.
pub(crate) struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Peer {
    /// The peer's process id.
    pub(crate) fn id(&self) -> u32 {
        self.0.id()
    }
}

/// Starts this binary as the peer running `role` with `fds` placed at 3, 4, ….
pub(crate) fn spawn(role: &str, fds: Vec<OwnedFd>) -> Peer {
    let raw: Vec<i32> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
    let mut command = Command::new(std::env::current_exe().expect("current_exe"));
    command
        .env(ROLE_ENV, role)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // SAFETY: only fcntl and dup2 (async-signal-safe) run between fork and exec.
    unsafe {
        command.pre_exec(move || {
            // First move every fd above the targets (a source may already sit on 3 or 4,
            // where dup2 would be a no-op that keeps close-on-exec), then into place.
            let mut high = [0; 8];
            for (idx, fd) in raw.iter().enumerate() {
                high[idx] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 64);
                if high[idx] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (idx, fd) in high[..raw.len()].iter().enumerate() {
                if libc::dup2(*fd, 3 + idx as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = command.spawn().expect("spawn peer");
    drop(fds);
    Peer(child)
}

/// A close-on-exec pipe: (read end, write end).
pub(crate) fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` is valid for the kernel to write two ints.
    let res = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(res, 0, "pipe2");
    // SAFETY: fresh fds from pipe2, owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Pins the calling thread to `cpu` (if the machine has it), so the bench process and
/// its peer sit on two different cores, as in the measurements. Skipped with
/// `PROCPOOL_IPC_BENCH_NO_PIN=1`.
pub(crate) fn pin_to(cpu: usize) {
    if std::env::var_os("PROCPOOL_IPC_BENCH_NO_PIN").is_some() {
        return;
    }
    let n_cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if n_cpus < 2 {
        return;
    }
    // SAFETY: cpu_set_t is plain data; CPU_SET stays inside it for cpu < CPU_SETSIZE, and
    // sched_setaffinity only reads the set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu % n_cpus, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The inherited fd `n` (3, 4, …).
pub(crate) fn inherited(n: i32) -> OwnedFd {
    // SAFETY: the parent placed our fds at 3.. with dup2; nothing else owns them.
    unsafe { OwnedFd::from_raw_fd(n) }
}

pub(crate) fn peer_endpoint(spin: Duration) -> (Sender, Receiver) {
    let endpoint = Endpoint::open(Handoff::new(inherited(3), inherited(4))).expect("open");
    let (mut sender, mut receiver) = endpoint.split();
    sender.set_wait_strategy(WaitStrategy { spin });
    receiver.set_wait_strategy(WaitStrategy { spin });
    (sender, receiver)
}

/// Busy-waits for `delay` (the reply delay of the "default strategy" scenario).
pub(crate) fn busy(delay: Duration) {
    let start = Instant::now();
    while start.elapsed() < delay {
        std::hint::spin_loop();
    }
}

/// Echo peer over the ipc channel: answers every frame with the same bytes after `delay`.
pub(crate) fn ipc_echo(spin: Duration, delay: Duration) {
    let (mut sender, mut receiver) = peer_endpoint(spin);
    let mut buf = Vec::new();
    loop {
        match receiver.recv() {
            Ok(frame) => {
                buf.clear();
                buf.extend_from_slice(&frame);
            }
            Err(RecvError::Disconnected) => return,
            Err(err) => panic!("peer recv: {err}"),
        }
        busy(delay);
        if sender.send(&buf).is_err() {
            return;
        }
    }
}

/// Futex helpers over a word in a shared mapping (the raw-futex baseline).
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32) {
    // SAFETY: valid aligned u32 in a live mapping; FUTEX_WAIT only reads it.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            0usize,
            0usize,
            0u32,
        );
    }
}

pub(crate) fn futex_wake(word: &AtomicU32) {
    // SAFETY: valid aligned u32; FUTEX_WAKE uses the address as a key only.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            1,
            0usize,
            0usize,
            0u32,
        );
    }
}

/// A shared page for the raw-futex baseline: word 0 is the ping, word 16 the pong.
pub(crate) struct SharedPage {
    map: memmap2::MmapRaw,
}

impl SharedPage {
    pub(crate) fn create() -> (SharedPage, OwnedFd) {
        // SAFETY: valid C string; we own the returned fd.
        let raw = unsafe { libc::memfd_create(c"bench-futex".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(raw >= 0);
        // SAFETY: fresh fd.
        let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(raw) });
        file.set_len(4096).expect("len");
        let map = memmap2::MmapRaw::map_raw(&file).expect("map");
        (SharedPage { map }, file.into())
    }

    pub(crate) fn open(fd: OwnedFd) -> SharedPage {
        let file = std::fs::File::from(fd);
        SharedPage {
            map: memmap2::MmapRaw::map_raw(&file).expect("map"),
        }
    }

    pub(crate) fn word(&self, idx: usize) -> &AtomicU32 {
        assert!(idx < 1024);
        // SAFETY: in bounds of the 4096-byte page, 4-aligned; accessed only atomically.
        unsafe { &*(self.map.as_mut_ptr().add(idx * 4) as *const AtomicU32) }
    }
}

/// Raw futex ping-pong peer: waits for ping to change, bumps pong and wakes.
pub(crate) fn futex_echo() {
    let page = SharedPage::open(inherited(3));
    let (ping, pong) = (page.word(0), page.word(32));
    let mut seen = 0;
    loop {
        let now = loop {
            let value = ping.load(Ordering::Acquire);
            if value != seen {
                break value;
            }
            futex_wait(ping, seen);
        };
        if now == u32::MAX {
            return;
        }
        seen = now;
        pong.store(now, Ordering::Release);
        futex_wake(pong);
    }
}
