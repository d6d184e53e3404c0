//! Large byte copies split between two threads.
//!
//! A round trip of a large buffer is a handful of copies (`docs/bench/payload.md`), made while
//! the other process waits: on the 2-vCPU VM this was measured on, one thread copies 64 MiB
//! into warm memory in ~9 ms and into fresh huge-page memory (which the kernel zeroes on the
//! first touch) in ~31–34 ms; two threads, each with half, take ~6 ms and ~13–16 ms. So copies
//! from [`PARALLEL_COPY_MIN`] bytes on hand their second half to a scoped helper thread (a
//! thread start costs tens of microseconds, against milliseconds of copying). The CPU time is
//! the same either way; only the wall time shrinks when a second CPU is free.

use std::mem::MaybeUninit;
use std::sync::OnceLock;

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

/// Copies `src` into `dst` (as long), initializing every byte of it; split as in
/// [`copy_bytes`].
pub(crate) fn copy_to_uninit(dst: &mut [MaybeUninit<u8>], src: &[u8]) {
    assert_eq!(dst.len(), src.len(), "copy_to_uninit: lengths differ");
    if src.len() < PARALLEL_COPY_MIN || !parallel() {
        write_slice(dst, src);
        return;
    }
    // Halves cut at a page boundary, so the two threads do not fault in the same page.
    let mid = (src.len() / 2).next_multiple_of(4096);
    let (dst_head, dst_tail) = dst.split_at_mut(mid);
    let (src_head, src_tail) = src.split_at(mid);
    // Whoever takes the tail copies it: the helper, or this thread if no helper started.
    let tail = std::sync::Mutex::new(Some((dst_tail, src_tail)));
    let copy_tail = || {
        let taken = tail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some((dst, src)) = taken {
            write_slice(dst, src);
        }
    };
    std::thread::scope(|scope| {
        let helper = std::thread::Builder::new()
            .name("procpool-copy".into())
            .spawn_scoped(scope, copy_tail);
        write_slice(dst_head, src_head);
        match helper {
            // `write_slice` of equal lengths does not panic; were it to, the tail would not be
            // written, and the caller must not take it as initialized: the panic goes on.
            Ok(helper) => {
                if let Err(panic) = helper.join() {
                    std::panic::resume_unwind(panic);
                }
            }
            // No thread (e.g. a memory limit): the tail is still ours to copy.
            Err(_) => copy_tail(),
        }
    });
}

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
        }
    }
}
