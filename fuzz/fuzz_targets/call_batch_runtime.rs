//! Fuzz target `call_batch_runtime`: arbitrary `CallBatch` (and other) frames run through
//! [`LocalRunner::run`], the worker's batch runner without a transport.
//!
//! The header's task id is replaced by one of a few built-in tasks that return normally
//! (`noop`, `add_one`, `echo_bytes`, `fail`, `panic`) or left as it is (almost always an
//! unknown task); tasks that abort, exit, sleep, spin, allocate or read files are never chosen.
//!
//! Checked: no panic escapes (a panic outside a task aborts under libFuzzer's hook; a panic
//! inside the runtime's `catch_unwind` is caught, so every `Panicked` outcome of a task other
//! than `panic` is treated as a crash too); every frame the runner emits parses with
//! `parse_from_worker`; outcome indices stay in the chunk; a successful run answers exactly the
//! items the header announced, each once, unless it yielded.
//!
//! Input: byte 0 misalignment (0..16), byte 1 task choice, then the frame. The header `count`
//! is folded below 512 (see docs/FUZZING.md: a trusted parent's `count` drives how many
//! `BadArguments` outcomes the worker writes, so u32::MAX would just be a slow input).
#![no_main]

use libfuzzer_sys::fuzz_target;
use procpool_worker::protocol::{self, FromWorker, OutcomeBatch};
use procpool_worker::{AlignedVec, FailureKind, LocalRunner, Task, TaskId, builtin};

const MAX_COUNT: u32 = 512;

fn check_outcomes<T: Task>(batch: &OutcomeBatch<'_>, may_panic: bool, seen: &mut Vec<u64>)
where
    T::Output: std::fmt::Debug,
{
    for (index, outcome) in protocol::decode_outputs::<T>(batch) {
        seen.push(index);
        match outcome {
            Ok(Ok(value)) => {
                std::hint::black_box(format!("{value:?}"));
            }
            Ok(Err(failure)) => {
                assert!(
                    may_panic || failure.kind != FailureKind::Panicked,
                    "runtime panicked for a task that does not: {failure}"
                );
            }
            Err(err) => panic!("the runner wrote an outcome that does not decode: {err}"),
        }
    }
}

fn decode_for(task: TaskId, batch: &OutcomeBatch<'_>, seen: &mut Vec<u64>) {
    if task == <builtin::noop as Task>::ID {
        check_outcomes::<builtin::noop>(batch, false, seen);
    } else if task == <builtin::add_one as Task>::ID {
        check_outcomes::<builtin::add_one>(batch, false, seen);
    } else if task == <builtin::echo_bytes as Task>::ID {
        check_outcomes::<builtin::echo_bytes>(batch, false, seen);
    } else if task == <builtin::fail as Task>::ID {
        check_outcomes::<builtin::fail>(batch, false, seen);
    } else if task == <builtin::panic as Task>::ID {
        check_outcomes::<builtin::panic>(batch, true, seen);
    } else {
        // Unknown task: every outcome is an `UnknownTask` failure.
        for (index, outcome) in protocol::decode_outputs::<builtin::noop>(batch) {
            seen.push(index);
            match outcome {
                Ok(Err(failure)) => assert_eq!(failure.kind, FailureKind::UnknownTask),
                other => panic!("unknown task answered {other:?}"),
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let shift = usize::from(data[0] % 16);
    let choice = data[1];
    let mut buf = AlignedVec::with_capacity(data.len() + 16);
    buf.extend_from_slice(&[0; 16][..shift]);
    buf.extend_from_slice(&data[2..]);
    let tasks: [TaskId; 5] = [
        <builtin::noop as Task>::ID,
        <builtin::add_one as Task>::ID,
        <builtin::echo_bytes as Task>::ID,
        <builtin::fail as Task>::ID,
        <builtin::panic as Task>::ID,
    ];
    let header = shift..shift + 32;
    if buf.len() >= header.end {
        let count_at = shift + 4;
        let count = u32::from_le_bytes(buf[count_at..count_at + 4].try_into().unwrap());
        buf[count_at..count_at + 4].copy_from_slice(&(count % MAX_COUNT).to_le_bytes());
        if usize::from(choice) % 8 < tasks.len() {
            let id = tasks[usize::from(choice) % 8];
            buf[shift + 16..shift + 24].copy_from_slice(&id.to_le_bytes());
        }
    }
    let frame = &buf[shift..];
    let announced = match protocol::parse_to_worker(frame) {
        Ok(protocol::ToWorker::CallBatch {
            task_id,
            first_index,
            count,
            ..
        }) => Some((task_id, first_index, count)),
        _ => None,
    };
    let mut seen = Vec::new();
    let mut yielded = false;
    let mut runner = LocalRunner::new();
    let res = runner.run(frame, |out| match protocol::parse_from_worker(out) {
        Ok(FromWorker::Outcomes(batch)) => {
            let (task, _, _) = announced.expect("outcomes for a frame that is not a call batch");
            assert_eq!(batch.task_id, task, "outcomes name another task");
            decode_for(task, &batch, &mut seen);
        }
        Ok(FromWorker::Yielded { .. }) => yielded = true,
        Ok(FromWorker::Pong { .. }) => {}
        Ok(other) => panic!("the runner sent {other:?}"),
        Err(err) => panic!("the runner sent a frame that does not parse: {err}"),
    });
    match (res, announced) {
        (Ok(()), Some((_, first, count))) if !yielded => {
            let expected: Vec<u64> = (0..u64::from(count))
                .map(|i| first.wrapping_add(i))
                .collect();
            assert_eq!(
                seen, expected,
                "a completed chunk must answer each item once, in order"
            );
        }
        (Ok(()), _) => {}
        (Err(err), _) => {
            std::hint::black_box(err.to_string());
        }
    }
});
