//! Timeouts of two kinds: waiting less (the task goes on), and limiting a task (its worker is
//! killed and replaced).
//!
//! Run with `cargo run --release --example timeouts`.

use std::time::Duration;

use procpool::TaskError;

/// Sleeps `millis` milliseconds.
#[procpool::task]
fn nap(millis: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(millis));
    millis
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    procpool::init();
    let pool = procpool::Pool::builder().workers(2).build()?;

    // 1. A wait that gives up leaves the task running; the handle stays usable.
    let handle = pool.submit(nap, 300);
    let handle = match handle.result_timeout(Duration::from_millis(50)) {
        Ok(outcome) => {
            println!("finished early: {outcome:?}");
            return Ok(());
        }
        Err(timeout) => {
            println!("not done after 50 ms: {timeout}");
            timeout.into_handle()
        }
    };
    println!(
        "waiting again: {:?}",
        handle
            .result_timeout(Duration::from_secs(5))
            .map_err(|_| "still not done")?
    );

    // 2. A per-call limit: the worker running it is killed and replaced.
    let limited = pool.task(nap).timeout(Duration::from_millis(100));
    match limited.call(2_000) {
        Err(TaskError::TimedOut { limit }) => println!("nap(2000) hit its limit of {limit:?}"),
        other => println!("nap(2000) gave {other:?}"),
    }
    println!("nap(20) under the same limit: {:?}", limited.call(20));
    println!("workers replaced: {}", pool.stats().restarts);
    Ok(())
}
