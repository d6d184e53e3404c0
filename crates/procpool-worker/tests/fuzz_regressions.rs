//! Regression tests for inputs found by the fuzz targets in `fuzz/` (see docs/FUZZING.md).
//!
//! Each test feeds the exact bytes the fuzzer found (and, where it helps, a hand-made frame
//! with the same defect) and asserts the typed error the protocol owes a hostile worker.
//! A test stays `#[ignore]`d only while its bug is open; the reason names the finding.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use procpool_worker::protocol::{self, FromWorker};
use procpool_worker::{AlignedVec, LocalRunner, builtin};

/// Counts the bytes this thread has allocated and not freed (for the leak regression F2).
/// Per thread, so tests running in parallel do not disturb each other's balance.
struct ThreadBalance;

thread_local! {
    /// Bytes allocated minus bytes freed by this thread (a `const` Cell: no allocation, no
    /// destructor, so it is safe to touch from inside the allocator).
    static LIVE_BYTES: Cell<isize> = const { Cell::new(0) };
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged and only adds
// bookkeeping on a thread-local integer, so `System`'s guarantees carry over.
unsafe impl GlobalAlloc for ThreadBalance {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = LIVE_BYTES.try_with(|live| live.set(live.get() + layout.size() as isize));
        // SAFETY: forwarded with the caller's layout (non-zero size, as GlobalAlloc requires).
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _ = LIVE_BYTES.try_with(|live| live.set(live.get() - layout.size() as isize));
        // SAFETY: `ptr` was allocated by `alloc` above (i.e. by `System`) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = LIVE_BYTES
            .try_with(|live| live.set(live.get() + new_size as isize - layout.size() as isize));
        // SAFETY: forwarded unchanged; `ptr`/`layout` come from this allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: ThreadBalance = ThreadBalance;

fn live_bytes() -> isize {
    LIVE_BYTES.with(Cell::get)
}

/// The frame at 16-byte alignment, as a received ipc frame is.
fn aligned(bytes: &[u8]) -> AlignedVec {
    let mut frame = AlignedVec::with_capacity(bytes.len());
    frame.extend_from_slice(bytes);
    frame
}

/// Finding F1 (`worker_messages`, 2026-11-22): an `Outcomes` frame whose item indices run
/// past `u64::MAX` (`first_index = u64::MAX`, `count = 2`) parses, and then
/// `OutcomeBatch::iter` computes `first_index + pos` unchecked: "attempt to add with overflow"
/// at protocol.rs `OutcomeBatch::iter` in debug builds, a wrapped item index in release.
/// Minimised fuzzer input (the frame bytes, without the harness's alignment byte).
const F1_FRAME: [u8; 110] = [
    0x04, 0x01, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x54, 0x00, 0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x45, 0x45, 0x45, 0x45, 0x45, 0x45, 0x45, 0x45, 0x45, 0x45,
    0x45, 0x45, 0x45, 0x45, 0x45, 0x45, 0x45, 0x45, 0x45, 0x45, 0x70, 0x72, 0x6f, 0x63, 0x70, 0x6f,
    0x6f, 0x6c, 0x5f, 0x77, 0x6f, 0x72, 0x6b, 0x65, 0x72, 0x3a, 0x3a, 0x62, 0x75, 0x69, 0x6c, 0x74,
    0x69, 0x6e, 0x3a, 0x3a, 0x70, 0x61, 0x6e, 0x69, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
];

#[test]
fn f1_outcomes_with_indices_past_u64_max_are_refused() {
    let frame = aligned(&F1_FRAME);
    let res = protocol::parse_from_worker(&frame);
    assert!(
        res.is_err(),
        "an Outcomes frame with first_index + count > u64::MAX must be a ProtocolError, got {res:?}"
    );
}

#[test]
fn f1_real_outcomes_moved_to_the_end_of_the_index_space_are_refused() {
    // A genuine two-item outcome frame from the runner, with first_index set to u64::MAX - 0:
    // items u64::MAX and u64::MAX + 1 (which does not exist).
    let mut calls = AlignedVec::new();
    protocol::encode_call_batch::<builtin::add_one>(1, 0, &[1, 2], &mut calls).expect("encode");
    let mut outcomes = Vec::new();
    LocalRunner::new()
        .run(&calls, |frame| outcomes.push(frame.to_vec()))
        .expect("run");
    assert_eq!(outcomes.len(), 1, "one Outcomes frame for two fast items");
    let mut bytes = outcomes.pop().expect("one frame");
    // Header offset 24: first_index.
    bytes[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
    let frame = aligned(&bytes);
    let res = protocol::parse_from_worker(&frame);
    assert!(
        res.is_err(),
        "first_index u64::MAX with 2 items must be a ProtocolError, got {res:?}"
    );
    // Sanity: with first_index = u64::MAX - 2 the two items and the end of the range
    // (`first_index + count`, which the worker computes as its next index) fit exactly.
    bytes[24..32].copy_from_slice(&(u64::MAX - 2).to_le_bytes());
    let frame = aligned(&bytes);
    match protocol::parse_from_worker(&frame) {
        Ok(FromWorker::Outcomes(batch)) => {
            let indices: Vec<u64> = batch.indices().collect();
            assert_eq!(indices, [u64::MAX - 2, u64::MAX - 1]);
        }
        other => panic!("a frame whose end index is u64::MAX must parse, got {other:?}"),
    }
}

/// Runs a chunk of `messages` through task `T` (every item fails) three times to warm up, then
/// `MEASURED_RUNS` more times, and returns the bytes this thread still holds that it did not
/// before those. A per-item leak grows with the 4,000 measured items (F2 kept ~38 bytes per
/// item: ~154 KB); the runner's reused buffers grow at most to the largest frame (~26 KB of
/// failures here, a 32 KiB capacity), whichever run its time-based flushes happen to make it in.
fn bytes_kept_over_measured_runs<T>(messages: &[String]) -> isize
where
    T: procpool_worker::Task<Args = String, Output = ()>,
{
    let mut calls = AlignedVec::new();
    protocol::encode_call_batch::<T>(1, 0, messages, &mut calls).expect("encode");
    let mut runner = LocalRunner::new();
    let run = |runner: &mut LocalRunner| {
        let mut failures = 0;
        runner
            .run(&calls, |frame| {
                if let Ok(FromWorker::Outcomes(batch)) = protocol::parse_from_worker(frame) {
                    for (_, outcome) in protocol::decode_outputs::<T>(&batch) {
                        assert!(matches!(outcome, Ok(Err(_))), "{outcome:?}");
                        failures += 1;
                    }
                }
            })
            .expect("run");
        assert_eq!(failures, messages.len());
    };
    for _ in 0..3 {
        run(&mut runner);
    }
    let before = live_bytes();
    for _ in 0..MEASURED_RUNS {
        run(&mut runner);
    }
    live_bytes() - before
}

/// Chunks run after the warm-up.
const MEASURED_RUNS: usize = 20;

/// At most this many bytes may stay allocated over the measured runs (buffer growth only).
const KEPT_LIMIT: isize = 48 * 1024;

/// Finding F2 (`call_batch_runtime`, 2026-11-22, LeakSanitizer on the seed corpus): every item
/// whose task panics leaks its panic payload, because `catch_task_panic` (runtime.rs) calls
/// `std::mem::forget(payload)` to avoid a panicking payload destructor: the boxed `String` and
/// its text, about 40 bytes for `panic!("{msg}")` with a short message. A task that panics on
/// every item of a long `map` grows the worker without bound.
#[test]
fn f2_panicking_items_do_not_leak_their_payloads() {
    let messages: Vec<String> = (0..200).map(|i| format!("item {i} panics")).collect();
    let kept = bytes_kept_over_measured_runs::<builtin::panic>(&messages);
    assert!(
        kept < KEPT_LIMIT,
        "{kept} bytes still allocated after {MEASURED_RUNS} chunks of {} panicking items",
        messages.len()
    );
}

/// The control for F2: the same measurement with a task that fails by returning `Err` (no
/// panic) keeps next to nothing, so what F2 measures is the panic path alone.
#[test]
fn f2_control_failing_items_leave_nothing_allocated() {
    let messages: Vec<String> = (0..200).map(|i| format!("item {i} fails")).collect();
    let kept = bytes_kept_over_measured_runs::<builtin::fail>(&messages);
    assert!(
        kept < KEPT_LIMIT,
        "{kept} bytes still allocated after {MEASURED_RUNS} chunks of {} failing items",
        messages.len()
    );
}
