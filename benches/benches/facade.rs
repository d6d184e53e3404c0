//! Criterion benches of the facade as users call it, against rayon and a serial loop:
//! a tiny-item ordered `map`, and the single-task round trip (warm, and after 100 ms idle, beside
//! the machine's futex wake-up round trip after the same idle time).
//!
//! `main` is ours (not `criterion_main!`) because it must call `procpool::init()` first:
//! the pool starts its workers by running this bench binary again.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use procpool::{Pool, builtin};
use procpool_benches::systems::{Backend, FutexPair};
use rayon::prelude::*;

/// Items per `map_tiny` iteration (the runner's `map_tiny` uses 1,000,000).
const TINY_ITEMS: u64 = 100_000;
const WORKERS: usize = 2;

fn pool() -> Pool {
    Pool::builder()
        .workers(WORKERS)
        .build()
        .expect("the benchmark pool starts")
}

#[inline(never)]
fn add_one(x: u64) -> u64 {
    x + 1
}

fn map_tiny(c: &mut Criterion, pool: &Pool, threads: &rayon::ThreadPool) {
    let mut group = c.benchmark_group("map_tiny");
    group.throughput(Throughput::Elements(TINY_ITEMS));
    group.sample_size(10);
    group.bench_function(BenchmarkId::new("procpool", TINY_ITEMS), |b| {
        b.iter(|| {
            let out: Vec<u64> = pool
                .map(builtin::add_one, 0..TINY_ITEMS)
                .map(|outcome| outcome.expect("add_one cannot fail"))
                .collect();
            assert_eq!(out.len() as u64, TINY_ITEMS);
            out
        });
    });
    group.bench_function(BenchmarkId::new("rayon", TINY_ITEMS), |b| {
        b.iter(|| {
            threads.install(|| {
                (0..TINY_ITEMS)
                    .into_par_iter()
                    .map(add_one)
                    .collect::<Vec<u64>>()
            })
        });
    });
    group.bench_function(BenchmarkId::new("serial", TINY_ITEMS), |b| {
        b.iter(|| {
            (0..black_box(TINY_ITEMS))
                .map(add_one)
                .collect::<Vec<u64>>()
        });
    });
    group.finish();
}

fn round_trip(c: &mut Criterion, pool: &Pool, threads: &rayon::ThreadPool) {
    let mut group = c.benchmark_group("round_trip");
    group.bench_function("procpool/warm", |b| {
        b.iter(|| pool.call(builtin::add_one, black_box(1)).expect("add_one"));
    });
    group.bench_function("rayon/warm", |b| {
        b.iter(|| threads.install(|| add_one(black_box(1))));
    });
    // After 100 ms idle the workers have stopped spinning and sleep on their doorbell.
    group.sample_size(10);
    group.bench_function("procpool/after_100ms_idle", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                std::thread::sleep(Duration::from_millis(100));
                let start = Instant::now();
                black_box(pool.call(builtin::add_one, black_box(1)).expect("add_one"));
                total += start.elapsed();
            }
            total
        });
    });
    // The machine's own wake-up round trip after the same idle time (the issue-5 reference):
    // two threads taking turns through futex park/unpark, placed by the kernel.
    let mut futex = FutexPair::default();
    group.bench_function("futex_pair/after_100ms_idle", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                std::thread::sleep(Duration::from_millis(100));
                let start = Instant::now();
                black_box(futex.round_trip(black_box(1)).expect("futex pair"));
                total += start.elapsed();
            }
            total
        });
    });
    group.bench_function("rayon/after_100ms_idle", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                std::thread::sleep(Duration::from_millis(100));
                let start = Instant::now();
                black_box(threads.install(|| add_one(black_box(1))));
                total += start.elapsed();
            }
            total
        });
    });
    group.finish();
}

fn main() {
    procpool::init();
    let pool = pool();
    let threads = rayon::ThreadPoolBuilder::new()
        .num_threads(WORKERS)
        .build()
        .expect("the rayon pool starts");
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    map_tiny(&mut c, &pool, &threads);
    round_trip(&mut c, &pool, &threads);
    c.final_summary();
}
