//! Codec tests: encode/decode roundtrips against a model, and hostile bytes never panic.

use proptest::prelude::*;
use rkyv::ser::allocator::Arena;

use super::*;
use crate::registry::Task;
use crate::task;

/// A test task with several parameter kinds; only its types matter here.
#[task(crate = crate)]
fn mixed(n: u64, label: &str, bytes: &[u8], words: &[u32]) -> Vec<String> {
    vec![format!("{n}{label}{}{}", bytes.len(), words.len())]
}

type MixedArgs = <mixed as Task>::Args;

fn failure_strategy() -> impl Strategy<Value = TaskFailure> {
    (
        prop_oneof![
            Just(FailureKind::Panicked),
            Just(FailureKind::Failed),
            Just(FailureKind::UnknownTask),
            Just(FailureKind::BadArguments),
            Just(FailureKind::BadOutput),
            (any::<u64>(), any::<u64>())
                .prop_map(|(size, limit)| FailureKind::TooLarge(SizeOverLimit { size, limit })),
        ],
        ".{0,40}",
        proptest::option::of(".{0,20}"),
    )
        .prop_map(|(kind, message, location)| TaskFailure {
            kind,
            message,
            location,
        })
}

fn outcome_strategy() -> impl Strategy<Value = Result<Vec<String>, TaskFailure>> {
    prop_oneof![
        proptest::collection::vec(".{0,12}", 0..4).prop_map(Ok),
        failure_strategy().prop_map(Err),
    ]
}

fn args_strategy() -> impl Strategy<Value = MixedArgs> {
    (
        any::<u64>(),
        ".{0,16}",
        proptest::collection::vec(any::<u8>(), 0..40),
        proptest::collection::vec(any::<u32>(), 0..10),
    )
}

/// Encodes `outcomes` as frames of at most `per_frame` items, as the worker would: each run of
/// consecutive successes within a frame is one archive, each failure its own run.
fn encode_outcomes(
    outcomes: &[Result<Vec<String>, TaskFailure>],
    per_frame: usize,
    first_index: u64,
) -> Vec<AlignedVec> {
    let mut arena = Arena::new();
    let mut encoder = OutcomeEncoder::new(AlignedVec::new(), arena.acquire());
    let mut frames = Vec::new();
    let mut pending: Vec<Vec<String>> = Vec::new();
    encoder.reset(9, <mixed as Task>::ID, first_index);
    for outcome in outcomes {
        match outcome {
            Ok(value) => pending.push(value.clone()),
            Err(failure) => {
                encoder.push_values(&pending).unwrap();
                pending.clear();
                encoder.push_failure(failure);
            }
        }
        if encoder.len() + pending.len() == per_frame {
            encoder.push_values(&pending).unwrap();
            pending.clear();
            let next = encoder.next_index();
            let mut frame = AlignedVec::new();
            frame.extend_from_slice(encoder.finish());
            frames.push(frame);
            encoder.reset(9, <mixed as Task>::ID, next);
        }
    }
    encoder.push_values(&pending).unwrap();
    if encoder.len() > 0 {
        let mut frame = AlignedVec::new();
        frame.extend_from_slice(encoder.finish());
        frames.push(frame);
    }
    frames
}

/// Parses everything a worker could send and decodes every item; must never panic.
fn parse_everything(frame: &[u8]) {
    if let Ok(FromWorker::Outcomes(batch)) = parse_from_worker(frame) {
        let _ = batch.indices();
        let _ = batch.values_run();
        for run in batch.runs() {
            match run.outcome {
                RawOutcome::Values(bytes) => drop(decode_values::<mixed>(bytes, run.count)),
                RawOutcome::Failure(bytes) => drop(decode_failure(bytes)),
            }
        }
        for (_, outcome) in decode_outputs::<mixed>(&batch) {
            let _ = outcome;
        }
    }
    let _ = check_hello(frame, 1);
    if let Ok(ToWorker::CallBatch { args, count, .. }) = parse_to_worker(frame) {
        let _ = access_args::<mixed>(args, count);
    }
    if frame.len() >= HEADER_LEN {
        let _ = decode_output::<mixed>(&frame[HEADER_LEN..]);
        let _ = decode_values::<mixed>(&frame[HEADER_LEN..], 1);
        let _ = decode_failure(&frame[HEADER_LEN..]);
    }
}

/// Mostly successes, so runs of several values form between failures.
fn run_heavy_outcome_strategy() -> impl Strategy<Value = Result<Vec<String>, TaskFailure>> {
    prop_oneof![
        4 => proptest::collection::vec(".{0,12}", 0..4).prop_map(Ok),
        1 => failure_strategy().prop_map(Err),
    ]
}

fn aligned(bytes: &[u8]) -> AlignedVec {
    let mut out = AlignedVec::with_capacity(bytes.len());
    out.extend_from_slice(bytes);
    out
}

proptest! {
    #[test]
    fn call_batch_roundtrips(
        args in proptest::collection::vec(args_strategy(), 0..20),
        chunk_id in any::<u64>(),
        first_index in any::<u64>(),
        as_iter in any::<bool>(),
    ) {
        let mut frame = AlignedVec::new();
        if as_iter {
            encode_call_batch_iter::<mixed, _>(chunk_id, first_index, args.iter(), &mut frame).unwrap();
        } else {
            encode_call_batch::<mixed>(chunk_id, first_index, &args, &mut frame).unwrap();
        }
        let ToWorker::CallBatch { chunk_id: c, task_id, first_index: f, count, args: body } =
            parse_to_worker(&frame).unwrap()
        else {
            panic!("not a call batch");
        };
        prop_assert_eq!((c, task_id, f, count as usize), (chunk_id, <mixed as Task>::ID, first_index, args.len()));
        let archived = access_args::<mixed>(body, count).unwrap();
        for (archived, model) in archived.iter().zip(&args) {
            let decoded: MixedArgs = rkyv::deserialize::<MixedArgs, rancor::Error>(archived).unwrap();
            prop_assert_eq!(&decoded, model);
        }
    }

    #[test]
    fn outcomes_roundtrip_across_frames(
        outcomes in proptest::collection::vec(outcome_strategy(), 0..30),
        per_frame in 1_usize..8,
        first_index in 0_u64..1_000_000,
    ) {
        let frames = encode_outcomes(&outcomes, per_frame, first_index);
        let mut decoded = Vec::new();
        let mut expected_index = first_index;
        for frame in &frames {
            let FromWorker::Outcomes(batch) = parse_from_worker(frame).unwrap() else {
                panic!("not outcomes");
            };
            prop_assert_eq!(batch.chunk_id, 9);
            prop_assert_eq!(batch.first_index, expected_index);
            for (index, outcome) in decode_outputs::<mixed>(&batch) {
                prop_assert_eq!(index, expected_index);
                expected_index += 1;
                decoded.push(outcome.unwrap());
            }
        }
        prop_assert_eq!(decoded, outcomes);
    }

    #[test]
    fn runs_mixed_with_failures_roundtrip(
        outcomes in proptest::collection::vec(run_heavy_outcome_strategy(), 0..60),
        per_frame in 1_usize..40,
        first_index in 0_u64..1_000_000,
    ) {
        let frames = encode_outcomes(&outcomes, per_frame, first_index);
        let mut decoded = Vec::new();
        let mut next = first_index;
        for frame in &frames {
            let FromWorker::Outcomes(batch) = parse_from_worker(frame).unwrap() else {
                panic!("not outcomes");
            };
            let model = &outcomes[(batch.first_index - first_index) as usize..][..batch.len()];
            // One run per maximal stretch of successes, one per failure.
            let stretches = model
                .iter()
                .enumerate()
                .filter(|(i, o)| o.is_ok() && (*i == 0 || model[i - 1].is_err()))
                .count();
            let failures = model.iter().filter(|o| o.is_err()).count();
            prop_assert_eq!(batch.run_count(), stretches + failures);
            prop_assert_eq!(batch.values_run().is_some(), failures == 0 && !model.is_empty());
            prop_assert_eq!(batch.indices(), next..next + model.len() as u64);
            for run in batch.runs() {
                prop_assert_eq!(run.first_index, next);
                prop_assert!(run.count >= 1);
                next += run.count as u64;
                match run.outcome {
                    RawOutcome::Values(bytes) => {
                        let values = decode_values::<mixed>(bytes, run.count).unwrap();
                        decoded.extend(values.into_iter().map(Ok));
                        // The wrong count is refused, not truncated or padded.
                        let wrong = decode_values::<mixed>(bytes, run.count + 1);
                        let refused = matches!(wrong, Err(ProtocolError::CountMismatch { .. }));
                        prop_assert!(refused, "wrong count accepted");
                    }
                    RawOutcome::Failure(bytes) => {
                        prop_assert_eq!(run.count, 1);
                        decoded.push(Err(decode_failure(bytes).unwrap()));
                    }
                }
            }
        }
        prop_assert_eq!(next, first_index + outcomes.len() as u64);
        prop_assert_eq!(decoded, outcomes);
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        parse_everything(&aligned(&bytes));
    }

    #[test]
    fn garbage_with_valid_header_never_panics(
        kind in prop_oneof![Just(kind::SETUP), Just(kind::CALL_BATCH), Just(kind::HELLO),
                            Just(kind::INIT_FAILED), Just(kind::OUTCOMES), any::<u16>()],
        count in prop_oneof![0_u32..8, any::<u32>()],
        body in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut frame = AlignedVec::new();
        start_frame(&Header { kind, count, ..Header::control(kind) }, &mut frame);
        frame.extend_from_slice(&body);
        parse_everything(&frame);
    }

    #[test]
    fn mutated_or_truncated_frames_never_panic(
        outcomes in proptest::collection::vec(run_heavy_outcome_strategy(), 1..8),
        args in proptest::collection::vec(args_strategy(), 1..6),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut frames = encode_outcomes(&outcomes, 8, 0);
        let mut call = AlignedVec::new();
        encode_call_batch::<mixed>(1, 0, &args, &mut call).unwrap();
        frames.push(call);
        for frame in frames {
            let mut mutated = aligned(&frame);
            for (at, xor) in &flips {
                let at = at.index(mutated.len());
                mutated[at] ^= xor;
            }
            parse_everything(&mutated);
            let truncated = aligned(&frame[..cut.index(frame.len())]);
            parse_everything(&truncated);
        }
    }
}

#[test]
fn setup_roundtrips() {
    let init = encode_initializer::<mixed>(&(5, "x".to_owned(), vec![1], vec![2, 3])).unwrap();
    assert_eq!(init.task_id, <mixed as Task>::ID);
    let setup = Setup {
        worker_index: 3,
        initializer: Some(init),
    };
    let mut frame = AlignedVec::new();
    encode_setup(&setup, &mut frame).unwrap();
    let ToWorker::Setup(parsed) = parse_to_worker(&frame).unwrap() else {
        panic!("not setup");
    };
    assert_eq!(parsed, setup);
    let args = aligned(&parsed.initializer.unwrap().args);
    let archived = access_args::<mixed>(&args, 1).unwrap();
    assert_eq!(archived[0].1.as_str(), "x");
}

#[test]
fn control_frames_roundtrip() {
    let mut frame = AlignedVec::new();
    encode_shutdown(&mut frame);
    assert!(matches!(parse_to_worker(&frame), Ok(ToWorker::Shutdown)));
    encode_ping(77, &mut frame);
    assert!(matches!(
        parse_to_worker(&frame),
        Ok(ToWorker::Ping { nonce: 77 })
    ));
    encode_pong(77, &mut frame);
    assert!(matches!(
        parse_from_worker(&frame),
        Ok(FromWorker::Pong { nonce: 77 })
    ));
    encode_ready(&mut frame);
    assert!(matches!(parse_from_worker(&frame), Ok(FromWorker::Ready)));
    encode_drained(&mut frame);
    assert!(matches!(parse_from_worker(&frame), Ok(FromWorker::Drained)));
    encode_yielded(4, 12, &mut frame);
    assert!(matches!(
        parse_from_worker(&frame),
        Ok(FromWorker::Yielded {
            chunk_id: 4,
            next_index: 12
        })
    ));
    let failure = TaskFailure::new(FailureKind::Failed, "bad init");
    encode_init_failed(&failure, &mut frame).unwrap();
    match parse_from_worker(&frame) {
        Ok(FromWorker::InitFailed(got)) => assert_eq!(got, failure),
        other => panic!("unexpected {other:?}"),
    }
    // A parent-bound frame is not a worker-bound one, and vice versa.
    assert!(matches!(
        parse_to_worker(&frame),
        Err(ProtocolError::UnexpectedKind(kind::INIT_FAILED))
    ));
    encode_shutdown(&mut frame);
    assert!(matches!(
        parse_from_worker(&frame),
        Err(ProtocolError::UnexpectedKind(kind::SHUTDOWN))
    ));
}

#[test]
fn hello_is_checked_against_version_and_fingerprint() {
    let hello = Hello {
        pid: 42,
        fingerprint: 0xfeed,
        task_count: 2,
        task_ids: vec![3, 9],
    };
    let mut frame = AlignedVec::new();
    encode_hello(&hello, &mut frame).unwrap();
    let info = check_hello(&frame, 0xfeed).unwrap();
    assert_eq!(
        info,
        HelloInfo {
            pid: 42,
            fingerprint: 0xfeed,
            task_count: 2,
            task_ids: vec![3, 9],
        }
    );
    assert!(info.has_task(9) && !info.has_task(4));
    let mismatch = check_hello(&frame, 0xbeef).unwrap_err();
    assert!(matches!(
        mismatch,
        HandshakeError::FingerprintMismatch {
            ours: 0xbeef,
            theirs: 0xfeed
        }
    ));
    assert!(mismatch.to_string().contains("different sources"));

    frame[2..4].copy_from_slice(&(PROTOCOL_VERSION + 1).to_le_bytes());
    assert!(matches!(
        check_hello(&frame, 0xfeed),
        Err(HandshakeError::VersionMismatch { ours: PROTOCOL_VERSION, theirs }) if theirs == PROTOCOL_VERSION + 1
    ));
    assert!(matches!(
        check_hello_has_tasks(&frame, &[]),
        Err(HandshakeError::VersionMismatch { .. })
    ));
    assert!(matches!(
        parse_from_worker(&frame),
        Err(ProtocolError::Version { .. })
    ));

    encode_ready(&mut frame);
    assert!(matches!(
        check_hello(&frame, 0xfeed),
        Err(HandshakeError::NotHello(kind::READY))
    ));
    assert!(matches!(
        check_hello(&frame[..10], 0xfeed),
        Err(HandshakeError::Protocol(ProtocolError::Truncated { .. }))
    ));
}

#[test]
fn a_different_worker_program_is_accepted_when_it_has_the_needed_tasks() {
    let add_one = <crate::builtin::add_one as Task>::ID;
    let hello = Hello {
        pid: 1,
        fingerprint: 0x1234,
        task_count: 1,
        task_ids: vec![add_one],
    };
    let mut frame = AlignedVec::new();
    encode_hello(&hello, &mut frame).unwrap();
    assert!(check_hello(&frame, crate::fingerprint()).is_err());
    let info = check_hello_has_tasks(&frame, &[add_one]).unwrap();
    assert!(info.has_task(add_one));
    let echo = <crate::builtin::echo_bytes as Task>::ID;
    let error = check_hello_has_tasks(&frame, &[add_one, echo, 77]).unwrap_err();
    let HandshakeError::MissingTasks { missing } = &error else {
        panic!("unexpected {error:?}");
    };
    assert_eq!(
        missing,
        &vec![
            "procpool_worker::builtin::echo_bytes fn(&[u8]) -> Vec<u8>".to_owned(),
            "000000000000004d".to_owned()
        ]
    );
    assert!(error.to_string().contains("lacks 2 task(s)"));
}

#[test]
fn misaligned_frames_are_refused() {
    let mut frame = AlignedVec::new();
    encode_ready(&mut frame);
    let mut shifted = AlignedVec::<16>::new();
    shifted.push(0);
    shifted.extend_from_slice(&frame);
    assert!(matches!(
        parse_from_worker(&shifted[1..]),
        Err(ProtocolError::Misaligned)
    ));
}

#[test]
fn call_batches_from_two_slices_equal_one_slice() {
    use crate::builtin::{add_one, echo_bytes};
    let plain: Vec<u64> = (0..100).collect();
    for cut in [0, 1, 37, 100] {
        let (front, back) = plain.split_at(cut);
        let mut one = AlignedVec::new();
        let mut two = AlignedVec::new();
        encode_call_batch::<add_one>(3, 5, &plain, &mut one).unwrap();
        encode_call_batch_slices::<add_one>(3, 5, front, back, &mut two).unwrap();
        assert_eq!(one.as_slice(), two.as_slice(), "plain data, cut at {cut}");
    }
    // Arguments that are not plain data take the item-by-item path.
    let bytes: Vec<Vec<u8>> = (0..5).map(|i| vec![i; i as usize]).collect();
    let (front, back) = bytes.split_at(2);
    let mut one = AlignedVec::new();
    let mut two = AlignedVec::new();
    encode_call_batch::<echo_bytes>(3, 5, &bytes, &mut one).unwrap();
    encode_call_batch_slices::<echo_bytes>(3, 5, front, back, &mut two).unwrap();
    assert_eq!(one.as_slice(), two.as_slice());
    let ToWorker::CallBatch { args, count, .. } = parse_to_worker(&two).unwrap() else {
        panic!("not a call batch");
    };
    assert_eq!(access_args::<echo_bytes>(args, count).unwrap().len(), 5);
}

#[test]
fn count_mismatch_is_detected() {
    let mut frame = AlignedVec::new();
    encode_call_batch::<crate::builtin::add_one>(1, 0, &[1, 2, 3], &mut frame).unwrap();
    let ToWorker::CallBatch { args, .. } = parse_to_worker(&frame).unwrap() else {
        panic!("not a call batch");
    };
    assert!(matches!(
        access_args::<crate::builtin::add_one>(args, 4),
        Err(ProtocolError::CountMismatch { header: 4, body: 3 })
    ));
}

/// Byte offset of field `field` (0 offset, 4 len+status, 8 count, 12 reserved) of run entry
/// `run` in an outcome frame of `len` bytes with `runs` runs.
fn entry_field(len: usize, runs: usize, run: usize, field: usize) -> usize {
    len - RUN_TRAILER_LEN - (runs - run) * RUN_ENTRY_LEN + field
}

#[test]
fn bad_outcome_tables_are_refused() {
    let frames = encode_outcomes(
        &[
            Ok(vec!["a".into()]),
            Ok(vec![]),
            Err(TaskFailure::new(FailureKind::Failed, "x")),
        ],
        8,
        0,
    );
    let original = aligned(&frames[0]);
    let len = original.len();
    let FromWorker::Outcomes(batch) = parse_from_worker(&original).unwrap() else {
        panic!("not outcomes");
    };
    assert_eq!((batch.len(), batch.run_count()), (3, 2));
    assert!(batch.values_run().is_none(), "a failure follows the values");

    let refused = |at: usize, value: u32| {
        let mut frame = aligned(&original);
        frame[at..at + 4].copy_from_slice(&value.to_le_bytes());
        parse_from_worker(&frame).map(|_| ()).unwrap_err()
    };
    // The last entry's offset points past the data.
    assert!(matches!(
        refused(entry_field(len, 2, 1, 0), u32::MAX),
        ProtocolError::BadOutcomeEntry { index: 1 }
    ));
    // A run of zero items.
    assert!(matches!(
        refused(entry_field(len, 2, 0, 8), 0),
        ProtocolError::BadOutcomeEntry { index: 0 }
    ));
    // A failure standing for two items (a failure run has exactly one).
    assert!(matches!(
        refused(entry_field(len, 2, 1, 8), 2),
        ProtocolError::BadOutcomeEntry { index: 1 }
    ));
    // Reserved bits set.
    assert!(matches!(
        refused(entry_field(len, 2, 0, 12), 1),
        ProtocolError::BadOutcomeEntry { index: 0 }
    ));
    // Counts that do not add up to the header's.
    assert!(matches!(
        refused(entry_field(len, 2, 0, 8), 5),
        ProtocolError::CountMismatch { header: 3, body: 6 }
    ));
    // More runs than the body can hold.
    assert!(matches!(
        refused(len - RUN_TRAILER_LEN, u32::MAX),
        ProtocolError::Truncated { .. }
    ));
    // A run count too high for the counts.
    assert!(matches!(
        refused(4, 9),
        ProtocolError::CountMismatch { header: 9, body: 3 }
    ));
}

#[test]
fn an_empty_outcomes_frame_has_no_runs() {
    let mut arena = Arena::new();
    let mut encoder = OutcomeEncoder::new(AlignedVec::new(), arena.acquire());
    encoder.reset(1, 2, 7);
    encoder.push_values::<u64>(&[]).unwrap();
    let frame = aligned(encoder.finish());
    let FromWorker::Outcomes(batch) = parse_from_worker(&frame).unwrap() else {
        panic!("not outcomes");
    };
    assert!(batch.is_empty());
    assert_eq!(batch.runs().count(), 0);
    assert_eq!(batch.values_run(), None);
    assert_eq!(decode_outputs::<crate::builtin::add_one>(&batch).count(), 0);
}

#[test]
fn a_run_of_plain_outputs_decodes_in_one_go() {
    let mut arena = Arena::new();
    let mut encoder = OutcomeEncoder::new(AlignedVec::new(), arena.acquire());
    encoder.reset(1, <crate::builtin::add_one as Task>::ID, 100);
    let values: Vec<u64> = (0..1000).map(|i| i * 3).collect();
    encoder.push_values(&values).unwrap();
    let frame = aligned(encoder.finish());
    let FromWorker::Outcomes(batch) = parse_from_worker(&frame).unwrap() else {
        panic!("not outcomes");
    };
    let (first, bytes) = batch.values_run().expect("one run");
    assert_eq!(first, 100);
    assert_eq!(
        decode_values::<crate::builtin::add_one>(bytes, batch.len()).unwrap(),
        values
    );
}

#[test]
fn a_run_of_byte_buffers_decodes_exactly_through_the_huge_page_copy() {
    let mut arena = Arena::new();
    let mut encoder = OutcomeEncoder::new(AlignedVec::new(), arena.acquire());
    encoder.reset(1, <crate::builtin::echo_bytes as Task>::ID, 7);
    let big: Vec<u8> = (0..procpool_ipc::HUGE_COPY_MIN + 5)
        .map(|i| (i % 253) as u8)
        .collect();
    let values = vec![b"small".to_vec(), big, Vec::new()];
    encoder.push_values(&values).unwrap();
    let frame = aligned(encoder.finish());
    let FromWorker::Outcomes(batch) = parse_from_worker(&frame).unwrap() else {
        panic!("not outcomes");
    };
    let (_, bytes) = batch.values_run().expect("one run");
    let decoded = decode_values::<crate::builtin::echo_bytes>(bytes, batch.len()).unwrap();
    assert!(decoded == values);
    assert!(matches!(
        decode_values::<crate::builtin::echo_bytes>(bytes, 2),
        Err(ProtocolError::CountMismatch { header: 2, body: 3 })
    ));
}

#[test]
fn shared_and_release_frames_parse() {
    let mut frame = AlignedVec::<16>::new();
    encode_release(77, &mut frame);
    assert!(matches!(
        parse_to_worker(&frame),
        Ok(ToWorker::Release { id: 77 })
    ));
    let mut header = [0u8; crate::shared::DATA_OFFSET];
    encode_shared_header(5, 0xfeed, &mut header);
    let mut frame = AlignedVec::<16>::new();
    frame.extend_from_slice(&header);
    frame.extend_from_slice(b"data");
    match parse_to_worker(&frame) {
        Ok(ToWorker::Shared { id, tag, data }) => {
            assert_eq!((id, tag, data), (5, 0xfeed, &b"data"[..]));
        }
        other => panic!("expected Shared, got {other:?}"),
    }
    // A Shared header on a frame too short to hold its data offset is refused, not read.
    let short = aligned(&header[..HEADER_LEN]);
    assert!(matches!(
        parse_to_worker(&short),
        Err(ProtocolError::Truncated { .. })
    ));
}

/// The claim word (mailbox word 6) on a plain atomic: the parent's `reclaim` and the
/// worker's `claim`.
mod claim_word {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::super::{CLAIM_RECLAIMED, claim, reclaim};

    fn parent(word: &AtomicU64, chunk: u64) -> bool {
        reclaim(
            || word.load(Ordering::Acquire),
            |cur, new| {
                (word.compare_exchange(cur, new, Ordering::AcqRel, Ordering::Acquire)).is_ok()
            },
            chunk,
        )
    }

    fn worker(word: &AtomicU64, chunk: u64) -> bool {
        claim(
            || word.load(Ordering::Acquire),
            |cur, new| {
                (word.compare_exchange(cur, new, Ordering::AcqRel, Ordering::Acquire)).is_ok()
            },
            chunk,
        )
    }

    #[test]
    fn a_taken_back_chunk_is_skipped_and_a_started_one_cannot_be_taken() {
        let word = AtomicU64::new(0);
        assert!(worker(&word, 0));
        assert!(!parent(&word, 0), "chunk 0 started");
        assert!(parent(&word, 1));
        assert_eq!(word.load(Ordering::Relaxed), CLAIM_RECLAIMED | 2);
        assert!(!parent(&word, 2), "one pending reclaim at a time");
        assert!(!worker(&word, 1), "the worker skips chunk 1");
        assert_eq!(word.load(Ordering::Relaxed), 2, "and clears the mark");
        assert!(parent(&word, 2));
        assert!(!worker(&word, 2));
        assert!(worker(&word, 3));
    }

    #[test]
    fn an_earlier_chunk_leaves_a_later_mark_alone() {
        // The parent took chunk 5 back while chunk 4 was still on its way.
        let word = AtomicU64::new(4);
        assert!(parent(&word, 5));
        assert!(worker(&word, 4), "chunk 4 runs");
        assert_eq!(word.load(Ordering::Relaxed), CLAIM_RECLAIMED | 6);
        assert!(!parent(&word, 4), "no second mark while one is pending");
        assert!(!worker(&word, 5), "chunk 5 is skipped");
        assert!(worker(&word, 6));
    }

    /// A worker claims chunks in order while the parent tries to take each one back: every
    /// chunk ends up run by exactly one side.
    #[test]
    fn racing_sides_never_both_win_a_chunk() {
        const CHUNKS: u64 = 20_000;
        for _ in 0..4 {
            let word = AtomicU64::new(0);
            let (ran, taken) = std::thread::scope(|scope| {
                let taker = scope.spawn(|| {
                    let mut taken = Vec::new();
                    for chunk in 0..CHUNKS {
                        // Retry a refused (pending mark) chunk a few times, as later events do.
                        if (0..3).any(|_| parent(&word, chunk)) {
                            taken.push(chunk);
                        }
                    }
                    taken
                });
                let ran: Vec<u64> = (0..CHUNKS).filter(|&c| worker(&word, c)).collect();
                (ran, taker.join().unwrap())
            });
            let mut all: Vec<u64> = ran.iter().chain(&taken).copied().collect();
            all.sort_unstable();
            assert_eq!(
                all,
                (0..CHUNKS).collect::<Vec<_>>(),
                "each chunk exactly once"
            );
        }
    }
}

/// A zeroed, 16-aligned buffer of `len` bytes (as a ring grant or pad is).
fn grant_like(len: usize) -> AlignedVec {
    let mut buf = AlignedVec::new();
    buf.resize(len, 0xAA);
    buf
}

#[test]
fn call_batches_written_in_place_equal_the_buffered_ones() {
    use crate::builtin::{add_one, echo_bytes};
    let plain: Vec<u64> = (0..1000).collect();
    let mut buffered = AlignedVec::new();
    encode_call_batch::<add_one>(3, 5, &plain, &mut buffered).unwrap();
    let (front, back) = plain.split_at(400);
    let len = encode_call_batch_slices_to::<add_one>(3, 5, front, back, FrameBuf::Measure).unwrap();
    assert_eq!(len, buffered.len());
    let mut place = grant_like(len + 48);
    let used =
        encode_call_batch_slices_to::<add_one>(3, 5, front, back, FrameBuf::Fixed(&mut place))
            .unwrap();
    assert_eq!(&place[..used], buffered.as_slice());
    // Too short a place is an error, not a truncated frame.
    let mut short = grant_like(len - 16);
    assert!(
        encode_call_batch_slices_to::<add_one>(3, 5, front, back, FrameBuf::Fixed(&mut short))
            .is_err()
    );

    // Byte buffers measure in a few write calls, and write the same bytes.
    let blobs: Vec<Vec<u8>> = vec![vec![7; 100_000], Vec::new(), b"abc".to_vec()];
    let mut buffered = AlignedVec::new();
    encode_call_batch::<echo_bytes>(4, 0, &blobs, &mut buffered).unwrap();
    let len = encode_call_batch_iter_to::<echo_bytes, _>(4, 0, &blobs, FrameBuf::Measure).unwrap();
    assert_eq!(len, buffered.len());
    let mut place = grant_like(len);
    let used =
        encode_call_batch_iter_to::<echo_bytes, _>(4, 0, &blobs, FrameBuf::Fixed(&mut place))
            .unwrap();
    assert_eq!(&place[..used], buffered.as_slice());

    // Many small parts: measuring gives up instead of walking them all.
    let many: Vec<Vec<u8>> = (0..1000).map(|i| vec![i as u8; 3]).collect();
    assert!(encode_call_batch_iter_to::<echo_bytes, _>(4, 0, &many, FrameBuf::Measure).is_err());
}

#[test]
fn an_outcomes_frame_written_in_place_equals_the_encoders() {
    fn check<T: Task>(values: &[T::Output])
    where
        T::Output: PartialEq + std::fmt::Debug,
    {
        let mut arena = Arena::new();
        let busy = Duration::from_micros(1234);
        let mut encoder = OutcomeEncoder::new(AlignedVec::new(), arena.acquire());
        encoder.reset(11, T::ID, 40);
        encoder.push_values(values).unwrap();
        encoder.set_busy(busy);
        let buffered = aligned(encoder.finish());
        let len = measure_values_frame(values).unwrap();
        assert_eq!(len, buffered.len());
        let mut place = grant_like(len + 32);
        let used = write_values_frame(11, T::ID, 40, values, Some(busy), &mut place).unwrap();
        assert_eq!(&place[..used], buffered.as_slice());
        let FromWorker::Outcomes(batch) = parse_from_worker(&place[..used]).unwrap() else {
            panic!("not outcomes");
        };
        assert_eq!(batch.worker_busy(), Some(busy));
        let (first, bytes) = batch.values_run().expect("one run");
        assert_eq!(first, 40);
        assert_eq!(decode_values::<T>(bytes, batch.len()).unwrap(), values);
        let mut short = grant_like(len - 8);
        assert!(write_values_frame(11, T::ID, 40, values, Some(busy), &mut short).is_err());
    }
    check::<crate::builtin::add_one>(&(0..5000).collect::<Vec<u64>>());
    check::<crate::builtin::echo_bytes>(&[vec![1; 70_000], Vec::new(), vec![2; 5]]);
    let many: Vec<Vec<u8>> = (0..1000).map(|i| vec![i as u8; 3]).collect();
    assert!(measure_values_frame(&many).is_err());
}

#[test]
fn outcomes_carry_the_workers_busy_time_when_it_fits() {
    let mut arena = Arena::new();
    let mut encoder = OutcomeEncoder::new(AlignedVec::new(), arena.acquire());
    let mut parsed = |set: Option<Duration>| {
        encoder.reset(3, crate::builtin::add_one::ID, 0);
        encoder.push_values(&[1_u64, 2]).unwrap();
        if let Some(busy) = set {
            encoder.set_busy(busy);
        }
        let frame = aligned(encoder.finish());
        let Ok(FromWorker::Outcomes(batch)) = parse_from_worker(&frame) else {
            panic!("not outcomes");
        };
        batch.worker_busy()
    };
    assert_eq!(parsed(None), None, "not measured");
    assert_eq!(parsed(Some(Duration::ZERO)), Some(Duration::ZERO));
    let most = Duration::from_nanos(u64::from(u32::MAX) - 1);
    assert_eq!(parsed(Some(most)), Some(most));
    assert_eq!(
        parsed(Some(Duration::from_secs(5))),
        None,
        "too long to tell"
    );
}
