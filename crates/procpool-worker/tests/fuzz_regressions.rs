//! Regression tests for inputs found by the fuzz targets in `fuzz/` (see docs/FUZZING.md).
//!
//! Each test feeds the exact bytes the fuzzer found (and, where it helps, a hand-made frame
//! with the same defect) and asserts the typed error the protocol owes a hostile worker.
//! A test stays `#[ignore]`d only while its bug is open; the reason names the finding.

use procpool_worker::protocol::{self, FromWorker};
use procpool_worker::{AlignedVec, LocalRunner, builtin};

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
