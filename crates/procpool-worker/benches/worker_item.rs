//! Worker-side cost per item: decode + call + encode for `add_one` in chunks of 1024, no transport,
//! next to a plain loop doing the same arithmetic, plus the parent-side encode and decode.
//!
//! Read `worker_chunk_add_one` / 1024 as the worker's cost per item (target: under 30 ns).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use procpool_worker::protocol::{self, FromWorker};
use procpool_worker::{AlignedVec, LocalRunner, builtin};

const CHUNK: u64 = 1024;

fn worker_side(c: &mut Criterion) {
    let args: Vec<u64> = (0..CHUNK).collect();
    let mut frame = AlignedVec::new();
    protocol::encode_call_batch::<builtin::add_one>(1, 0, &args, &mut frame).expect("encodes");
    let mut runner = LocalRunner::new();

    let mut group = c.benchmark_group("add_one_chunk_1024");
    group.throughput(Throughput::Elements(CHUNK));
    group.bench_function("worker_chunk_add_one", |b| {
        b.iter(|| {
            runner
                .run(black_box(&frame), |out| {
                    black_box(out);
                })
                .expect("runs");
        });
    });
    group.bench_function("plain_loop", |b| {
        let mut out: Vec<u64> = Vec::with_capacity(args.len());
        b.iter(|| {
            out.clear();
            out.extend(
                black_box(&args)
                    .iter()
                    .map(|x| black_box(*x).wrapping_add(1)),
            );
            black_box(&out);
        });
    });
    group.bench_function("parent_encode_calls", |b| {
        let mut out = AlignedVec::new();
        b.iter(|| {
            protocol::encode_call_batch::<builtin::add_one>(1, 0, black_box(&args), &mut out)
                .expect("encodes");
            black_box(&out);
        });
    });
    let mut outcomes = AlignedVec::new();
    runner
        .run(&frame, |out| outcomes.extend_from_slice(out))
        .expect("runs");
    group.bench_function("parent_decode_outcomes", |b| {
        b.iter(|| {
            let Ok(FromWorker::Outcomes(batch)) = protocol::parse_from_worker(black_box(&outcomes))
            else {
                panic!("outcomes");
            };
            let (_, bytes) = batch.values_run().expect("one run of successes");
            let values =
                protocol::decode_values::<builtin::add_one>(bytes, batch.len()).expect("valid");
            black_box(values.iter().sum::<u64>());
        });
    });
    group.finish();
}

criterion_group!(benches, worker_side);
criterion_main!(benches);
