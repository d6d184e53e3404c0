//! Submit tasks of different lengths and handle each as soon as it finishes.
//!
//! Run with `cargo run --release --example as_completed`.

use std::time::{Duration, Instant};

/// Sleeps `millis` milliseconds, then reports how long it slept.
#[procpool::task]
fn nap(millis: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(millis));
    millis
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    procpool::init();
    let pool = procpool::Pool::builder().workers(4).build()?;
    let naps = [400, 100, 300, 50, 200, 250, 10, 350];
    let start = Instant::now();
    let handles: Vec<_> = naps.iter().map(|&ms| pool.submit(nap, ms)).collect();
    for (index, outcome) in procpool::as_completed(handles) {
        println!(
            "task {index} (nap {:>3} ms) finished after {:>4} ms",
            outcome?,
            start.elapsed().as_millis()
        );
    }

    // The same with `wait`: return as soon as the first task is done.
    let handles: Vec<_> = naps.iter().map(|&ms| pool.submit(nap, ms)).collect();
    let (done, pending) = procpool::wait(&handles, procpool::Wait::FirstCompleted, None);
    println!("wait(FirstCompleted): done {done:?}, still pending {pending:?}");
    let (done, _) = procpool::wait(
        &handles,
        procpool::Wait::AllCompleted,
        Some(Duration::from_secs(10)),
    );
    println!("wait(AllCompleted): {} done", done.len());
    Ok(())
}
