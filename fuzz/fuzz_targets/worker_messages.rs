//! Fuzz target `worker_messages`: arbitrary bytes as a task-protocol frame, on both sides.
//!
//! Feeds the frame to [`protocol::parse_to_worker`] (what a worker does with a frame from its
//! parent) and to [`protocol::parse_from_worker`], [`protocol::check_hello`] and
//! [`protocol::check_hello_has_tasks`] (what a parent does with a frame from a possibly hostile
//! worker), then decodes every outcome of an `Outcomes` frame as the outputs of several built-in
//! tasks, and the body on its own as an output or a failure. Nothing may panic; everything
//! malformed must be a typed [`procpool_worker::ProtocolError`] / `HandshakeError`.
//!
//! A `Shared` frame (a shared object's memfd) must name its data exactly (`frame[64..]`, the
//! header's `first_index` = 64); its data is then validated as each type a `Shared<T>` handle
//! can hold here (`Shareable::check`: `[u64]`, `[u8]`, `[f64]`, `String`, `Vec<u64>`,
//! `FuzzTable`), and what validates is read in full, as a task would read it in place.
//! The body is also read as a handle (`SharedRef`) and deserialized as `Shared<[u64]>`: the
//! object is unknown here, so that must fail with a message.
//!
//! Input: byte 0 is the misalignment (0..16) of the frame in memory, the rest is the frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use procpool_fuzz::FuzzTable;
use procpool_worker::protocol::{self, FromWorker, OutcomeBatch, RawOutcome, ToWorker};
use procpool_worker::{AlignedVec, Shareable, Shared, SharedRef, Task, builtin};
use rkyv::{Archived, rancor};

/// Validates `data` as a `T` the way a worker does before the first use of a shared object;
/// when it validates, reads it all (as a task reading it in place would).
fn check_shared<T: Shareable + ?Sized>(data: &[u8], read: impl Fn(&[u8]) -> String) {
    if T::check(data).is_ok() {
        std::hint::black_box(read(data));
    }
}

fn check_shared_all(data: &[u8]) {
    check_shared::<[u64]>(data, |d| format!("{}", d.len()));
    check_shared::<[u8]>(data, |d| format!("{}", d.len()));
    check_shared::<[f64]>(data, |d| format!("{}", d.len()));
    check_shared::<String>(data, |d| {
        let s = rkyv::access::<Archived<String>, rancor::Error>(d).expect("validated");
        s.as_str().to_owned()
    });
    check_shared::<Vec<u64>>(data, |d| {
        let v = rkyv::access::<Archived<Vec<u64>>, rancor::Error>(d).expect("validated");
        format!("{:?}", v.iter().map(|x| x.to_native()).collect::<Vec<_>>())
    });
    check_shared::<FuzzTable>(data, |d| {
        let t = rkyv::access::<Archived<FuzzTable>, rancor::Error>(d).expect("validated");
        format!(
            "{} {:?}",
            t.name.as_str(),
            t.rows.iter().map(|x| x.to_native()).collect::<Vec<_>>()
        )
    });
}

/// Largest `Outcomes` frame (in items) decoded item by item.
const MAX_ITEMS: usize = 1 << 16;

fn decode_all<T: Task>(batch: &OutcomeBatch<'_>)
where
    T::Output: std::fmt::Debug,
{
    let decoded = protocol::decode_outputs::<T>(batch);
    assert_eq!(decoded.len(), batch.len(), "decode_outputs length");
    let mut expected = batch.indices();
    for (index, outcome) in decoded {
        assert_eq!(
            Some(index),
            expected.next(),
            "outcome indices must follow the batch's"
        );
        std::hint::black_box(format!("{outcome:?}"));
    }
    // Each run on its own, as the parent's fast path reads them.
    for run in batch.runs() {
        match run.outcome {
            RawOutcome::Values(bytes) => {
                std::hint::black_box(format!(
                    "{:?}",
                    protocol::decode_values::<T>(bytes, run.count)
                ));
            }
            RawOutcome::Failure(bytes) => {
                std::hint::black_box(format!("{:?}", protocol::decode_failure(bytes)));
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&shift, frame)) = data.split_first() else {
        return;
    };
    let shift = usize::from(shift % 16);
    let mut buf = AlignedVec::with_capacity(frame.len() + shift);
    buf.extend_from_slice(&[0; 16][..shift]);
    buf.extend_from_slice(frame);
    let frame = &buf[shift..];

    // Worker side.
    match protocol::parse_to_worker(frame) {
        Ok(ToWorker::CallBatch { args, count, .. }) => {
            std::hint::black_box((args.len(), count));
        }
        Ok(ToWorker::Shared { id, tag, data }) => {
            assert_eq!(
                frame.len() - data.len(),
                64,
                "a shared object's data starts at 64"
            );
            assert_eq!(
                data.as_ptr() as usize % 16,
                0,
                "a shared object's data is 16-aligned"
            );
            std::hint::black_box((id, tag));
            check_shared_all(data);
        }
        Ok(msg) => {
            std::hint::black_box(format!("{msg:?}"));
        }
        Err(err) => {
            std::hint::black_box(err.to_string());
        }
    }

    // Parent side.
    match protocol::parse_from_worker(frame) {
        Ok(FromWorker::Outcomes(batch)) => {
            // Finding F1 (fixed in 74625f5): parsing now guarantees the indices fit in u64.
            let indices = batch.indices();
            assert_eq!((indices.end - indices.start) as usize, batch.len());
            let runs = batch.runs();
            assert_eq!(runs.len(), batch.run_count());
            let mut next = batch.first_index;
            let mut items = 0usize;
            for run in runs {
                assert_eq!(run.first_index, next, "runs must be consecutive");
                assert!(run.count >= 1, "empty run");
                next += run.count as u64;
                items += run.count;
            }
            assert_eq!(
                items,
                batch.len(),
                "run counts must add up to the frame's count"
            );
            if let Some((first, bytes)) = batch.values_run() {
                assert_eq!(first, batch.first_index);
                std::hint::black_box(bytes.len());
            }
            // Item by item only for frames of a plausible size: an unreadable run of n items
            // is reported once per item (so is it by the facade, which first checks that the
            // frame's items lie inside a chunk it sent), and a 100-byte frame may announce
            // 2^32 of them: a slow input, not a bug (docs/FUZZING.md).
            if batch.len() <= MAX_ITEMS {
                decode_all::<builtin::add_one>(&batch);
                decode_all::<builtin::noop>(&batch);
                decode_all::<builtin::echo_bytes>(&batch);
                decode_all::<builtin::fail>(&batch);
                decode_all::<builtin::sha512_file>(&batch);
                decode_all::<builtin::allocate>(&batch);
            }
        }
        Ok(FromWorker::Hello(info)) => {
            std::hint::black_box(info.has_task(<builtin::add_one as Task>::ID));
        }
        Ok(FromWorker::InitFailed(failure)) => {
            std::hint::black_box(failure.to_string());
        }
        Ok(msg) => {
            std::hint::black_box(format!("{msg:?}"));
        }
        Err(err) => {
            std::hint::black_box(err.to_string());
        }
    }
    if let Err(err) = protocol::check_hello(frame, procpool_worker::fingerprint()) {
        std::hint::black_box(err.to_string());
    }
    let required = [<builtin::add_one as Task>::ID, 0x0123_4567_89ab_cdef];
    if let Err(err) = protocol::check_hello_has_tasks(frame, &required) {
        std::hint::black_box(err.to_string());
    }

    // The bytes alone as one item's archive (how `RawOutcome::decode` sees them).
    let body = &buf[shift..];
    // ... and as a shared object's data, and as a handle to an object nobody here has.
    check_shared_all(body);
    if rkyv::access::<Archived<SharedRef>, rancor::Error>(body).is_ok() {
        let res = rkyv::from_bytes::<Shared<[u64]>, rancor::Error>(body);
        assert!(res.is_err(), "a handle to an object nobody shared resolved");
    }
    std::hint::black_box(format!(
        "{:?}",
        protocol::decode_output::<builtin::add_one>(body)
    ));
    std::hint::black_box(format!(
        "{:?}",
        protocol::decode_output::<builtin::echo_bytes>(body)
    ));
    std::hint::black_box(format!(
        "{:?}",
        protocol::decode_output::<builtin::sha512_file>(body)
    ));
    std::hint::black_box(format!("{:?}", protocol::decode_failure(body)));
});
