//! Attach callbacks to tasks: they run on the thread that completes the task.
//!
//! Run with `cargo run --release --example callbacks`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The number of primes below `n`, counted the slow way.
#[procpool::task]
fn count_primes(n: u64) -> u64 {
    (2..n)
        .filter(|&k| (2..).take_while(|d| d * d <= k).all(|d| k % d != 0))
        .count() as u64
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    procpool::init();
    let pool = procpool::Pool::new()?;
    let total = Arc::new(AtomicU64::new(0));
    let limits = [10_000, 50_000, 100_000, 200_000];
    let handles: Vec<_> = limits
        .iter()
        .map(|&n| {
            let handle = pool.submit(count_primes, n);
            let total = Arc::clone(&total);
            handle.on_done(move |outcome| match outcome {
                Ok(count) => {
                    println!("callback: {count} primes below {n}");
                    // Relaxed: the main thread reads the total after waiting for every task.
                    total.fetch_add(*count, Ordering::Relaxed);
                }
                Err(err) => println!("callback: counting below {n} failed: {err}"),
            });
            handle
        })
        .collect();
    procpool::wait(&handles, procpool::Wait::AllCompleted, None);
    // A callback added after completion runs at once, on this thread.
    handles[0].on_done(|outcome| println!("late callback sees {outcome:?}"));
    pool.shutdown();
    println!("sum of all counts: {}", total.load(Ordering::Relaxed));
    Ok(())
}
