//! Fuzz target `call_batch_runtime`: arbitrary sequences of `Shared`, `Release`, `CallBatch`
//! (and other) frames run through [`LocalRunner::run`], the worker's batch runner without a
//! transport, with its per-worker table of shared objects.
//!
//! The header's task id of a frame is replaced by one of a few tasks that return normally —
//! the built-ins `noop`, `add_one`, `echo_bytes`, `fail`, `panic`, and three tasks of this
//! file that read shared objects (`shared_sum`, `shared_table`, `shared_text`) — or left as it
//! is (almost always an unknown task); tasks that abort, exit, sleep, spin, allocate or read
//! files are never chosen.
//!
//! Checked: no panic escapes (a panic outside a task aborts under libFuzzer's hook; a panic
//! inside the runtime's `catch_unwind` is caught, so every `Panicked` outcome of a task other
//! than `panic` is treated as a crash too); every frame the runner emits parses with
//! `parse_from_worker`; `Outcomes` name the chunk's task; a completed chunk answers each item
//! the header announced, once, in order. For `shared_sum` (a `Shared<[u64]>` handle per item)
//! each outcome is predicted from the `Shared`/`Release` frames the input sent before it: the
//! sum of the object's words when the handle names a live object of the right type whose data
//! is a whole number of `u64`, else a `BadArguments` failure — so a handle never reads another
//! object, a released one, or data that did not validate.
//!
//! Input: up to 8 records, each `shift (0..16), task choice, len: u16 LE, frame[len]` (the
//! last record's frame takes what is left when `len` runs past the end). A `CallBatch`
//! header's `count` is folded below 512 (see docs/FUZZING.md: a trusted parent's `count`
//! drives how many `BadArguments` outcomes the worker writes, so u32::MAX would just be a slow
//! input). Every object the input shared is released at the end, so inputs stay independent.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use procpool_fuzz::FuzzTable;
use procpool_worker::protocol::{self, FromWorker, OutcomeBatch, ToWorker};
use procpool_worker::{
    AlignedVec, FailureKind, LocalRunner, Shareable, Shared, SharedRef, Task, TaskId, builtin,
};
use rkyv::Archived;
use rkyv::rancor;
use rkyv::vec::ArchivedVec;

const MAX_COUNT: u32 = 512;

/// `PROCPOOL_FUZZ_STATS=1`: print one `STAT` line per outcome kind an input reaches.
fn stat(what: std::fmt::Arguments<'_>) {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("PROCPOOL_FUZZ_STATS").is_some()) {
        eprintln!("STAT {what}");
    }
}
const MAX_RECORDS: usize = 8;

/// Wrapping sum of a shared slice of `u64`.
#[procpool_worker::task(crate = procpool_worker)]
pub fn shared_sum(data: Shared<[u64]>) -> u64 {
    data.iter().fold(0u64, |sum, &x| sum.wrapping_add(x))
}

/// Row `row` of a shared table (or `u64::MAX`) and the length of its name.
#[procpool_worker::task(crate = procpool_worker)]
pub fn shared_table(table: Shared<FuzzTable>, row: u64) -> (u64, u64) {
    let value = usize::try_from(row)
        .ok()
        .and_then(|row| table.rows.get(row))
        .map_or(u64::MAX, |v| v.to_native());
    (value, table.name.len() as u64)
}

/// Length and byte sum of a shared string.
#[procpool_worker::task(crate = procpool_worker)]
pub fn shared_text(text: Shared<String>) -> (u64, u64) {
    let sum = text
        .as_bytes()
        .iter()
        .fold(0u64, |sum, &b| sum.wrapping_add(u64::from(b)));
    (text.len() as u64, sum)
}

/// What the input shared so far: id -> (tag, data after the 64-byte header).
type Objects = HashMap<u64, (u64, Vec<u8>)>;

/// The outcome `shared_sum` must give for a handle `(id, tag)`.
fn expected_sum(objects: &Objects, id: u64, tag: u64) -> Option<u64> {
    let wanted = <[u64] as Shareable>::tag();
    if tag != wanted {
        return None;
    }
    let (object_tag, data) = objects.get(&id)?;
    if *object_tag != wanted || data.len() % 8 != 0 {
        return None;
    }
    Some(data.chunks_exact(8).fold(0u64, |sum, word| {
        sum.wrapping_add(u64::from_le_bytes(word.try_into().unwrap()))
    }))
}

fn check_outcomes<T: Task>(batch: &OutcomeBatch<'_>, may_panic: bool, seen: &mut Vec<u64>)
where
    T::Output: std::fmt::Debug,
{
    for (index, outcome) in protocol::decode_outputs::<T>(batch) {
        seen.push(index);
        match outcome {
            Ok(Ok(value)) => {
                stat(format_args!("{} ok", T::NAME));
                std::hint::black_box(format!("{value:?}"));
            }
            Ok(Err(failure)) => {
                stat(format_args!("{} {:?}", T::NAME, failure.kind));
                assert!(
                    may_panic || failure.kind != FailureKind::Panicked,
                    "runtime panicked for a task that does not: {failure}"
                );
            }
            Err(err) => panic!("the runner wrote an outcome that does not decode: {err}"),
        }
    }
}

/// `shared_sum` outcomes against the prediction for each item's handle (`None`: the
/// arguments archive itself did not validate, so every item is a `BadArguments` failure).
fn check_sums(batch: &OutcomeBatch<'_>, expected: &[Option<u64>], first: u64, seen: &mut Vec<u64>) {
    for (index, outcome) in protocol::decode_outputs::<shared_sum>(batch) {
        seen.push(index);
        let at = index.wrapping_sub(first) as usize;
        let want = expected.get(at).copied().flatten();
        stat(format_args!(
            "shared_sum {}",
            match (&outcome, want) {
                (Ok(Ok(_)), _) => "ok",
                (_, None) => "refused",
                _ => "mismatch",
            }
        ));
        match (outcome, want) {
            (Ok(Ok(sum)), Some(want)) => assert_eq!(sum, want, "item {index}: wrong object read"),
            (Ok(Ok(sum)), None) => {
                panic!("item {index}: a handle that must not resolve read {sum}")
            }
            (Ok(Err(failure)), None) => assert_eq!(
                failure.kind,
                FailureKind::BadArguments,
                "item {index}: {failure}"
            ),
            (Ok(Err(failure)), Some(want)) => {
                panic!("item {index}: expected the sum {want}, got {failure}")
            }
            (Err(err), _) => panic!("the runner wrote an outcome that does not decode: {err}"),
        }
    }
}

/// Checks one `Outcomes` frame of the chunk `task`.
fn decode_for(
    task: TaskId,
    batch: &OutcomeBatch<'_>,
    sums: Option<(&[Option<u64>], u64)>,
    seen: &mut Vec<u64>,
) {
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
    } else if task == <shared_sum as Task>::ID {
        let (expected, first) = sums.expect("predictions for shared_sum");
        check_sums(batch, expected, first, seen);
    } else if task == <shared_table as Task>::ID {
        check_outcomes::<shared_table>(batch, false, seen);
    } else if task == <shared_text as Task>::ID {
        check_outcomes::<shared_text>(batch, false, seen);
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

/// Splits the input into records: (shift, choice, frame bytes).
fn records(mut data: &[u8]) -> Vec<(usize, u8, &[u8])> {
    let mut out = Vec::new();
    while data.len() >= 2 && out.len() < MAX_RECORDS {
        let shift = usize::from(data[0] % 16);
        let choice = data[1];
        let len = match data.get(2..4) {
            Some(len) => usize::from(u16::from_le_bytes([len[0], len[1]])),
            None => 0,
        };
        let rest = data.get(4..).unwrap_or(&[]);
        let len = len.min(rest.len());
        out.push((shift, choice, &rest[..len]));
        data = &rest[len..];
    }
    out
}

/// Runs one frame; keeps `objects` in step with what the runner's table should hold.
fn run_frame(
    runner: &mut LocalRunner,
    objects: &mut Objects,
    shift: usize,
    choice: u8,
    bytes: &[u8],
) {
    let mut buf = AlignedVec::with_capacity(bytes.len() + 16);
    buf.extend_from_slice(&[0; 16][..shift]);
    buf.extend_from_slice(bytes);
    let tasks: [TaskId; 8] = [
        <builtin::noop as Task>::ID,
        <builtin::add_one as Task>::ID,
        <builtin::echo_bytes as Task>::ID,
        <builtin::fail as Task>::ID,
        <builtin::panic as Task>::ID,
        <shared_sum as Task>::ID,
        <shared_table as Task>::ID,
        <shared_text as Task>::ID,
    ];
    let header = shift..shift + 32;
    let is_call_batch = buf.len() >= header.end && buf[shift..shift + 2] == [2, 0];
    if is_call_batch {
        let count_at = shift + 4;
        let count = u32::from_le_bytes(buf[count_at..count_at + 4].try_into().unwrap());
        buf[count_at..count_at + 4].copy_from_slice(&(count % MAX_COUNT).to_le_bytes());
        if usize::from(choice) % 12 < tasks.len() {
            let id = tasks[usize::from(choice) % 12];
            buf[shift + 16..shift + 24].copy_from_slice(&id.to_le_bytes());
        }
    }
    let frame = &buf[shift..];
    let parsed = protocol::parse_to_worker(frame);
    let announced = match &parsed {
        Ok(ToWorker::CallBatch {
            task_id,
            first_index,
            count,
            ..
        }) => Some((*task_id, *first_index, *count)),
        _ => None,
    };
    // Predictions for `shared_sum`, from the objects shared so far.
    let sums: Vec<Option<u64>> = match &parsed {
        Ok(ToWorker::CallBatch {
            task_id,
            count,
            args,
            ..
        }) if *task_id == <shared_sum as Task>::ID => {
            match rkyv::access::<ArchivedVec<Archived<SharedRef>>, rancor::Error>(args) {
                Ok(refs) if refs.len() == *count as usize => refs
                    .iter()
                    .map(|r| expected_sum(objects, r.id.to_native(), r.tag.to_native()))
                    .collect(),
                _ => vec![None; *count as usize],
            }
        }
        _ => Vec::new(),
    };
    stat(format_args!(
        "frame {}",
        match &parsed {
            Ok(msg) => format!("{msg:?}")
                .split([' ', '{', '('])
                .next()
                .unwrap_or("")
                .to_owned(),
            Err(err) => format!(
                "error {}",
                format!("{err:?}")
                    .split([' ', '{', '('])
                    .next()
                    .unwrap_or("")
            ),
        }
    ));
    match &parsed {
        Ok(ToWorker::Shared { id, tag, data }) => {
            objects.insert(*id, (*tag, data.to_vec()));
        }
        Ok(ToWorker::Release { id }) => {
            objects.remove(id);
        }
        _ => {}
    }
    let mut seen = Vec::new();
    let mut yielded = false;
    let res = runner.run(frame, |out| match protocol::parse_from_worker(out) {
        Ok(FromWorker::Outcomes(batch)) => {
            let (task, first, _) =
                announced.expect("outcomes for a frame that is not a call batch");
            assert_eq!(batch.task_id, task, "outcomes name another task");
            decode_for(task, &batch, Some((&sums, first)), &mut seen);
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
}

fuzz_target!(|data: &[u8]| {
    let mut runner = LocalRunner::new();
    let mut objects = Objects::new();
    let mut ids = Vec::new();
    for (shift, choice, bytes) in records(data) {
        run_frame(&mut runner, &mut objects, shift, choice, bytes);
        ids.extend(objects.keys().copied());
    }
    // Forget every object this input shared (the runner's table is per thread).
    let mut release = AlignedVec::new();
    ids.sort_unstable();
    ids.dedup();
    for id in ids {
        protocol::encode_release(id, &mut release);
        runner
            .run(&release, |_| panic!("Release is not answered"))
            .expect("Release runs");
    }
});
