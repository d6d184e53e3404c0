//! Large byte copies split between two threads.
//!
//! A round trip of a large buffer is a handful of copies (`docs/bench/payload.md`), made while
//! the other process waits: on the 2-vCPU VM this was measured on, one thread copies 64 MiB
//! into warm memory in ~9 ms and into fresh huge-page memory (which the kernel zeroes on the
//! first touch) in ~31–34 ms; two threads, each with half, take ~6 ms and ~13–16 ms. So copies
//! from [`PARALLEL_COPY_MIN`] bytes on hand their second half to a scoped helper thread (a
//! thread start costs tens of microseconds, against milliseconds of copying). The CPU time is
//! the same either way; only the wall time shrinks when a second CPU is free. When none is (the
//! helper starts late), waiting for it makes the copy slower than one thread's: measured at load
//! ~6 on that VM, a 64 MiB round trip went from ~800 MiB/s to ~500–670. So the helper takes
//! huge-page pieces only as it gets to run, and a copy that had to wait for it makes the next
//! few large copies single-threaded.

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// Smallest copy [`copy_bytes`] (and the copies of [`crate::copy_to_new_vec`] and
/// [`crate::CopyBuffer`]) splits between two threads.
pub const PARALLEL_COPY_MIN: usize = 8 << 20;

/// Whether this machine has more than one CPU to copy on.
fn parallel() -> bool {
    static PARALLEL: OnceLock<bool> = OnceLock::new();
    *PARALLEL.get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() > 1))
}

/// Copies `src` into `dst`, which must be as long (else it panics, like
/// `<[u8]>::copy_from_slice`). From [`PARALLEL_COPY_MIN`] bytes on, on a machine with more than
/// one CPU, a helper thread copies the second half meanwhile (if it cannot be started, this
/// thread copies everything).
///
/// # Examples
///
/// ```
/// let src = vec![7_u8; 10 << 20];
/// let mut dst = vec![0_u8; 10 << 20];
/// procpool_ipc::copy_bytes(&mut dst, &src);
/// assert!(dst == src);
/// ```
pub fn copy_bytes(dst: &mut [u8], src: &[u8]) {
    assert_eq!(dst.len(), src.len(), "copy_bytes: lengths differ");
    // SAFETY: `MaybeUninit<u8>` has the layout of `u8`, and `copy_to_uninit` writes only
    // initialized bytes (copies of `src`), so `dst` stays initialized.
    let dst = unsafe { &mut *(std::ptr::from_mut::<[u8]>(dst) as *mut [MaybeUninit<u8>]) };
    copy_to_uninit(dst, src);
}

/// The pieces the two threads take in turn: a huge page each, so no page is faulted in by both.
const PIECE: usize = 2 << 20;

/// After a split copy whose helper came late (the machine was busy), this many large copies
/// are made by one thread before splitting is tried again.
const BACKOFF: u32 = 16;

/// Large copies left to make with one thread (see [`BACKOFF`]).
static SINGLE_LEFT: AtomicU32 = AtomicU32::new(0);

/// Whether this large copy is one of the [`BACKOFF`] made by one thread (counts it down).
fn backing_off() -> bool {
    // Relaxed: a hint shared by all threads; no memory is published through it.
    SINGLE_LEFT
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
            left.checked_sub(1)
        })
        .is_ok()
}

/// Copies `src` into `dst` (as long), initializing every byte of it; split as in
/// [`copy_bytes`].
///
/// The copy is cut into huge-page pieces that this thread and the helper take in turn, so a
/// helper that starts late (the other CPU is busy) takes fewer, or none. When this thread then
/// had to wait for the helper (it started late or was preempted), the next [`BACKOFF`] large
/// copies are made by one thread: on a busy machine a second thread only adds a wait.
pub(crate) fn copy_to_uninit(dst: &mut [MaybeUninit<u8>], src: &[u8]) {
    assert_eq!(dst.len(), src.len(), "copy_to_uninit: lengths differ");
    if src.len() < PARALLEL_COPY_MIN || !parallel() || backing_off() {
        write_slice(dst, src);
        return;
    }
    // The first piece ends at a huge-page boundary of `dst`, the others are whole huge pages.
    let first = (dst.as_ptr() as usize)
        .next_multiple_of(PIECE)
        .saturating_sub(dst.as_ptr() as usize)
        .min(dst.len());
    let (dst_head, dst_rest) = dst.split_at_mut(first);
    let (src_head, src_rest) = src.split_at(first);
    let pieces: Vec<Mutex<Option<Piece<'_>>>> = std::iter::once((dst_head, src_head))
        .chain(dst_rest.chunks_mut(PIECE).zip(src_rest.chunks(PIECE)))
        .map(|piece| Mutex::new(Some(piece)))
        .collect();
    let next = AtomicUsize::new(0);
    // Each piece is taken (out of its mutex) by exactly one thread, which copies it.
    let work = || {
        // Relaxed: the counter only hands out indices; the pieces themselves pass through
        // their mutexes, and the scope's join orders the helper's writes before our return.
        while let Some(piece) = pieces.get(next.fetch_add(1, Ordering::Relaxed)) {
            let taken = piece
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            if let Some((dst, src)) = taken {
                write_slice(dst, src);
            }
        }
    };
    let started = Instant::now();
    std::thread::scope(|scope| {
        let helper = std::thread::Builder::new()
            .name("procpool-copy".into())
            .spawn_scoped(scope, work);
        // With no helper (e.g. a memory limit), this takes every piece.
        work();
        let own = started.elapsed();
        match helper {
            // `write_slice` of equal lengths does not panic; were it to, its piece would not
            // be written, and the caller must not take it as initialized: the panic goes on.
            Ok(helper) => {
                if let Err(panic) = helper.join() {
                    std::panic::resume_unwind(panic);
                }
                if started.elapsed().saturating_sub(own) > own / 4 {
                    // Relaxed: a hint, as in `backing_off`.
                    SINGLE_LEFT.store(BACKOFF, Ordering::Relaxed);
                }
            }
            Err(_) => SINGLE_LEFT.store(BACKOFF, Ordering::Relaxed),
        }
    });
}

/// A piece of a split copy: where to, and what.
type Piece<'a> = (&'a mut [MaybeUninit<u8>], &'a [u8]);

/// `dst.copy_from_slice(src)` for uninitialized memory (equal lengths).
fn write_slice(dst: &mut [MaybeUninit<u8>], src: &[u8]) {
    assert_eq!(dst.len(), src.len());
    // SAFETY: `dst` is exclusively borrowed and `src.len()` bytes long, `src` is readable for
    // that many bytes, and a shared and an exclusive borrow never overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(src.as_ptr(), dst.as_mut_ptr().cast::<u8>(), src.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_of_every_size_around_the_split_are_exact() {
        let src: Vec<u8> = (0..PARALLEL_COPY_MIN + 3 * 4096 + 7)
            .map(|i| (i % 251) as u8)
            .collect();
        for len in [
            0,
            1,
            4095,
            PARALLEL_COPY_MIN - 1,
            PARALLEL_COPY_MIN,
            PARALLEL_COPY_MIN + 1,
            PARALLEL_COPY_MIN + 4096,
            src.len(),
        ] {
            let mut dst = vec![0_u8; len];
            copy_bytes(&mut dst, &src[..len]);
            assert!(dst == src[..len], "len {len}");
            // At every offset from a huge-page boundary (the first piece is cut there).
            for skew in [1, 4096 + 3] {
                if len > skew {
                    let mut dst = vec![0_u8; len];
                    copy_bytes(&mut dst[skew..], &src[..len - skew]);
                    assert!(dst[skew..] == src[..len - skew], "len {len}, skew {skew}");
                }
            }
        }
    }

    #[test]
    fn copies_made_by_one_thread_while_backing_off_are_exact() {
        let src: Vec<u8> = (0..PARALLEL_COPY_MIN + 12_345)
            .map(|i| (i % 241) as u8)
            .collect();
        SINGLE_LEFT.store(2, Ordering::Relaxed);
        for _ in 0..4 {
            let mut dst = vec![0_u8; src.len()];
            copy_bytes(&mut dst, &src);
            assert!(dst == src);
        }
    }
}
