//! Heap allocations on the caller's side of the hot paths.
//!
//! A binary of its own: its global allocator counts every allocation of the process, so no
//! other test may run beside these (they run one after another under one lock). The pool's
//! own threads (readers, watchdog) allocate only now and then, which the bounds leave room
//! for; the counts they guard are exact (one allocation per lone call: its task slot).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use procpool::{Pool, builtin};

/// Counts allocations and reallocations, then defers to the system allocator.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract is `System`'s; the counter is a relaxed atomic (no allocation).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged; `ptr` came from `System` through this allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged; `ptr` came from `System` through this allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// One test at a time: the counter is process-wide.
static ALONE: Mutex<()> = Mutex::new(());

fn pool() -> Pool {
    procpool_tests::keep_tasks();
    Pool::builder()
        .workers(2)
        .program(env!("CARGO_BIN_EXE_test-worker"))
        .build()
        .expect("the test pool starts")
}

/// Asserts that a run of `f` on a warm pool allocates once (its task slot) on average, over
/// 2,000 runs after as many to warm up; `what` names the run in the message.
fn assert_one_allocation_per_run(what: &str, mut f: impl FnMut(&Pool, u64)) {
    let _alone = ALONE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let pool = pool();
    let runs = 2_000;
    for i in 0..runs {
        f(&pool, i);
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for i in 0..runs {
        f(&pool, i);
    }
    let per_run = (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / runs as f64;
    assert!(per_run < 1.25, "{per_run:.2} allocations per {what}");
}

/// One allocation: the slot the handle and the outcome share. The frame is written in place,
/// the arguments straight from the call window, the value decoded without a `Vec`, and the
/// co-location checks look at the workers without collecting them.
#[test]
fn a_lone_call_allocates_only_its_task_slot() {
    assert_one_allocation_per_run("call", |pool, i| {
        assert_eq!(pool.call(builtin::add_one, i), Ok(i + 1));
    });
}

#[test]
fn a_waited_submit_allocates_only_its_task_slot() {
    assert_one_allocation_per_run("submit and result", |pool, i| {
        assert_eq!(pool.submit(builtin::add_one, i).result(), Ok(i + 1));
    });
}
