//! The machine's own wake-up round trip, the reference of `latency_idle` (issue 5: a round trip
//! after idling within 1.2× of it).
//!
//! Two threads take turns through std's `thread::park` / `Thread::unpark`, which on Linux is a
//! `FUTEX_WAIT` / `FUTEX_WAKE` pair on one word per thread, with no spinning first. After the
//! pair sat idle, each trip is therefore two wake-ups of a sleeping thread: the caller wakes
//! the peer, the peer computes `add_one` and wakes the caller. Nothing else is in the path, so
//! it is the floor a pool whose workers sleep when idle is measured against. Threads of one
//! process rather than two processes: what a wake-up costs here is waking the halted vCPU
//! through the host (~50 µs), which is the same for both.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle, Thread, ThreadId};

use super::{Backend, Sha512, unsupported};
use crate::BenchError;
use crate::workload::Workload;

/// The futex ping-pong pair; the peer thread starts on first use.
///
/// By default the kernel places both threads, as it places a pool's caller and workers: after
/// an idle time it tends to wake the peer on the caller's own vCPU, so this is the cheaper of
/// the two references. [`FutexPair::with_peer_on`] pins the peer to one vCPU (with the caller
/// pinned to another, each wake-up then wakes a halted vCPU): `latency_probe idle` shows both.
#[derive(Debug, Default)]
pub struct FutexPair {
    peer: Option<Peer>,
    peer_cpu: Option<usize>,
}

#[derive(Debug)]
struct Peer {
    turns: Arc<Turns>,
    thread: JoinHandle<()>,
    /// The thread the peer wakes: the one that started it.
    caller: ThreadId,
}

/// What the two threads share. `asked` and `answered` count trips; the argument and the
/// answer travel beside them.
#[derive(Debug)]
struct Turns {
    asked: AtomicU64,
    arg: AtomicU64,
    answered: AtomicU64,
    answer: AtomicU64,
    stop: AtomicBool,
    caller: Thread,
}

impl Peer {
    fn start(cpu: Option<usize>) -> Result<Self, BenchError> {
        let turns = Arc::new(Turns {
            asked: AtomicU64::new(0),
            arg: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            answer: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            caller: thread::current(),
        });
        let theirs = Arc::clone(&turns);
        let thread = thread::Builder::new()
            .name("futex-peer".into())
            .spawn(move || {
                if let Some(cpu) = cpu {
                    pin_this_thread(cpu);
                }
                serve(&theirs)
            })
            .map_err(|err| BenchError::io("starting the futex peer thread", err))?;
        Ok(Self {
            turns,
            thread,
            caller: thread::current().id(),
        })
    }

    fn trip(&self, x: u64) -> u64 {
        let turns = &self.turns;
        let trip = turns.asked.load(Ordering::Relaxed) + 1;
        // Relaxed: published by the Release store of `asked` below.
        turns.arg.store(x, Ordering::Relaxed);
        // Release: pairs with the peer's Acquire load of `asked` in `serve`, so it reads `arg`.
        turns.asked.store(trip, Ordering::Release);
        self.thread.thread().unpark();
        // Acquire: pairs with the peer's Release store of `answered`, so `answer` is visible.
        // `park` may return spuriously, and an unpark that came first makes it return at once
        // (the thread's token), so no wake-up is lost.
        while turns.answered.load(Ordering::Acquire) != trip {
            thread::park();
        }
        turns.answer.load(Ordering::Relaxed)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // Release: pairs with the peer's Acquire load of `stop`; the unpark's token means the
        // peer sees it even if it was about to park. Not joined: it returns at its next look.
        self.turns.stop.store(true, Ordering::Release);
        self.thread.thread().unpark();
    }
}

/// The peer's loop: wait for a trip, answer it, wake the caller.
fn serve(turns: &Turns) {
    let mut seen = 0;
    loop {
        if turns.stop.load(Ordering::Acquire) {
            return;
        }
        // Acquire: pairs with the caller's Release store of `asked` in `Peer::trip`.
        let asked = turns.asked.load(Ordering::Acquire);
        if asked == seen {
            thread::park();
            continue;
        }
        seen = asked;
        // Relaxed: published by the Release store of `answered` below.
        let x = turns.arg.load(Ordering::Relaxed);
        turns
            .answer
            .store(std::hint::black_box(x) + 1, Ordering::Relaxed);
        // Release: pairs with the caller's Acquire load of `answered` in `Peer::trip`.
        turns.answered.store(seen, Ordering::Release);
        turns.caller.unpark();
    }
}

/// Pins the calling thread to `cpu`; a machine without it leaves the thread where it is.
fn pin_this_thread(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        // Pid 0: the calling thread. A refusal (no such CPU) only leaves the pair unpinned.
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

impl FutexPair {
    /// A pair whose peer thread runs on `cpu` only (pin the caller elsewhere to keep them
    /// apart).
    pub fn with_peer_on(cpu: usize) -> Self {
        Self {
            peer: None,
            peer_cpu: Some(cpu),
        }
    }

    fn peer(&mut self) -> Result<&Peer, BenchError> {
        // A pair started by another thread would wake that one: start a new one.
        if self
            .peer
            .as_ref()
            .is_some_and(|peer| peer.caller != thread::current().id())
        {
            self.peer = None;
        }
        if self.peer.is_none() {
            self.peer = Some(Peer::start(self.peer_cpu)?);
        }
        Ok(self.peer.as_ref().expect("started above"))
    }
}

impl Backend for FutexPair {
    fn name(&self) -> &'static str {
        "futex pair"
    }

    fn supports(&self, workload: Workload) -> bool {
        workload == Workload::LatencyIdle
    }

    fn startup_once(&mut self, _workers: usize) -> Result<(), BenchError> {
        Err(unsupported(self.name(), "startup"))
    }

    fn warm_up(&mut self, _workers: usize) -> Result<(), BenchError> {
        self.peer().map(|_| ())
    }

    fn round_trip(&mut self, x: u64) -> Result<u64, BenchError> {
        Ok(self.peer()?.trip(x))
    }

    fn submit_many(&mut self, _n: u64) -> Result<u64, BenchError> {
        Err(unsupported(self.name(), "submit"))
    }

    fn map_add_one(&mut self, _n: u64) -> Result<Vec<u64>, BenchError> {
        Err(unsupported(self.name(), "map_tiny"))
    }

    fn map_spin(&mut self, _items: &[u64]) -> Result<Vec<u64>, BenchError> {
        Err(unsupported(self.name(), "map_1us"))
    }

    fn map_spin_timed(&mut self, _items: &[u64]) -> Result<Vec<(u64, u64)>, BenchError> {
        Err(unsupported(self.name(), "cpu_scaling"))
    }

    fn identity(&mut self, _data: Vec<u8>) -> Result<Vec<u8>, BenchError> {
        Err(unsupported(self.name(), "payload"))
    }

    fn digest(&mut self, _files: &[PathBuf]) -> Result<Vec<Sha512>, BenchError> {
        Err(unsupported(self.name(), "digest"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_trip_is_answered_with_its_own_argument() {
        let mut pair = FutexPair::default();
        pair.warm_up(1).unwrap();
        for x in 0..2_000 {
            assert_eq!(pair.round_trip(x).unwrap(), x + 1);
        }
    }

    #[test]
    fn a_pair_used_from_another_thread_starts_its_own_peer() {
        let mut pair = FutexPair::default();
        assert_eq!(pair.round_trip(1).unwrap(), 2);
        let pair = thread::spawn(move || {
            assert_eq!(pair.round_trip(41).unwrap(), 42);
            pair
        })
        .join()
        .unwrap();
        assert!(pair.supports(Workload::LatencyIdle));
        assert!(!pair.supports(Workload::Latency));
    }

    #[test]
    fn a_pinned_peer_answers_too() {
        let mut pair = FutexPair::with_peer_on(0);
        for x in 0..100 {
            assert_eq!(pair.round_trip(x).unwrap(), x + 1);
        }
    }
}
