//! Futex doorbells on a shared `AtomicU32`, and the spin-then-park policy.
//!
//! The futex ops are the shared (non-`PRIVATE`) variants because the word lives in a
//! region mapped by two processes: a private futex is keyed by address space and would
//! never wake the other process. The protocol that decides *when* to ring is in
//! `ring/README.md` ("Wake-up handshake").

use std::time::Duration;

use crate::sync::AtomicU32;

/// How long a blocked call spins before it parks on the futex.
///
/// Spinning for about as long as a park/wake pair costs (~50 µs on a VM whose idle
/// cores halt) turns a reply that arrives a few µs later into sub-µs latency, and costs
/// at most that long of one core per wait.
///
/// # Examples
///
/// ```
/// # use procpool_ipc::WaitStrategy;
/// # use std::time::Duration;
/// let always_park = WaitStrategy { spin: Duration::ZERO };
/// assert!(always_park.spin < WaitStrategy::default().spin);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitStrategy {
    /// Time spent busy-polling before parking. Zero parks at once.
    pub spin: Duration,
}

impl WaitStrategy {
    /// The default spin window: 50 µs.
    pub const DEFAULT_SPIN: Duration = Duration::from_micros(50);
}

impl Default for WaitStrategy {
    fn default() -> Self {
        WaitStrategy {
            spin: Self::DEFAULT_SPIN,
        }
    }
}

/// Parks while `*word == expected`, for at most `timeout` (spurious returns are allowed;
/// callers re-check their condition in a loop).
#[cfg(not(procpool_loom))]
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a valid, aligned u32 for the duration of the call (it lives in a
    // mapping or allocation that outlives this borrow); FUTEX_WAIT only reads it, and
    // `ts` is a valid timespec. Errors (EAGAIN, EINTR, ETIMEDOUT) all mean "re-check".
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Wakes every process parked on `word`.
#[cfg(not(procpool_loom))]
pub(crate) fn futex_wake(word: &AtomicU32) {
    // SAFETY: `word` is a valid, aligned u32; FUTEX_WAKE does not access user memory
    // beyond using the address as a key.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            0usize,
            0usize,
            0u32,
        );
    }
}

/// Loom cannot model a futex; parking degrades to yielding (the model checks indices).
#[cfg(procpool_loom)]
pub(crate) fn futex_wait(_word: &AtomicU32, _expected: u32, _timeout: Duration) {
    loom::thread::yield_now();
}

/// Loom cannot model a futex; see `futex_wait`.
#[cfg(procpool_loom)]
pub(crate) fn futex_wake(_word: &AtomicU32) {}

#[cfg(all(test, not(procpool_loom)))]
mod tests {
    use super::*;
    use crate::sync::Ordering;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn wait_returns_at_once_on_mismatch() {
        let word = AtomicU32::new(0);
        futex_wait(&word, 1, Duration::from_secs(5));
    }

    #[test]
    fn wait_times_out() {
        let word = AtomicU32::new(1);
        let start = Instant::now();
        futex_wait(&word, 1, Duration::from_millis(20));
        assert!(start.elapsed() >= Duration::from_millis(10));
    }

    #[test]
    fn wake_releases_a_parked_thread() {
        let word = Arc::new(AtomicU32::new(1));
        let parked = Arc::clone(&word);
        let waiter = std::thread::spawn(move || {
            while parked.load(Ordering::Acquire) == 1 {
                futex_wait(&parked, 1, Duration::from_secs(10));
            }
        });
        std::thread::sleep(Duration::from_millis(10));
        word.store(0, Ordering::Release);
        futex_wake(&word);
        waiter.join().expect("waiter");
    }
}
