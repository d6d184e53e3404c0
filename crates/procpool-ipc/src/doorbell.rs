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

/// The 32-bit half of a 64-bit atomic word that holds its low bits: the futex key for
/// waiting on a word whose value moves by small steps (a counter), since a futex compares
/// only 32 bits.
#[cfg(not(procpool_loom))]
fn low_half(word: &crate::sync::AtomicU64) -> *mut u32 {
    let base = word.as_ptr().cast::<u32>();
    if cfg!(target_endian = "big") {
        // SAFETY: the word is 8 bytes long, so its second 4-byte half is in bounds.
        unsafe { base.add(1) }
    } else {
        base
    }
}

/// Parks while the low 32 bits of `*word` equal those of `expected`, for at most `timeout`
/// (spurious returns are allowed; callers re-check in a loop).
///
/// The kernel reads the half-word atomically; no Rust reference of another size is made to
/// it, so the word is only ever accessed as an `AtomicU64` from Rust.
#[cfg(not(procpool_loom))]
pub(crate) fn futex_wait_u64(word: &crate::sync::AtomicU64, expected: u64, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `low_half` points at 4 aligned bytes inside the live 8-byte atomic `word` (it
    // outlives this borrow); FUTEX_WAIT only reads them, and `ts` is a valid timespec. Every
    // error (EAGAIN, EINTR, ETIMEDOUT) means "re-check".
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            low_half(word),
            libc::FUTEX_WAIT,
            expected as u32,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Wakes every process parked on `word` by [`futex_wait_u64`].
#[cfg(not(procpool_loom))]
pub(crate) fn futex_wake_u64(word: &crate::sync::AtomicU64) {
    // SAFETY: the address is 4 aligned bytes inside the live atomic `word`; FUTEX_WAKE uses
    // it only as a key.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            low_half(word),
            libc::FUTEX_WAKE,
            i32::MAX,
            0usize,
            0usize,
            0u32,
        );
    }
}

/// The futex as loom sees it: one global mutex and condition variable. A waiter checks
/// the word under the mutex and waits on the condvar (releasing the mutex atomically), a
/// waker takes the mutex and notifies, which is exactly the futex guarantee: a wake issued
/// after the store either finds the waiter asleep or the waiter sees the stored value.
/// There is no timeout under loom, so a lost wake-up is a deadlock loom reports.
#[cfg(procpool_loom)]
mod loom_futex {
    use loom::sync::{Condvar, Mutex};

    loom::lazy_static! {
        pub(super) static ref PARKING: (Mutex<()>, Condvar) = (Mutex::new(()), Condvar::new());
    }
}

/// Parks while `*word == expected` (loom model: no timeout).
#[cfg(procpool_loom)]
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, _timeout: Duration) {
    let (lock, condvar) = &*loom_futex::PARKING;
    let guard = lock.lock().expect("loom futex mutex");
    // Relaxed: the mutex orders this load after a waker's store that preceded its lock.
    if word.load(crate::sync::Ordering::Relaxed) != expected {
        return;
    }
    drop(condvar.wait(guard).expect("loom futex condvar"));
}

/// Wakes every waiter (loom model).
#[cfg(procpool_loom)]
pub(crate) fn futex_wake(_word: &AtomicU32) {
    let (lock, condvar) = &*loom_futex::PARKING;
    let _guard = lock.lock().expect("loom futex mutex");
    condvar.notify_all();
}

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
