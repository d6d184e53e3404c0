//! The classic first example: cube numbers in worker processes, one call and then a map.
//!
//! Run with `cargo run --release --example cube`.

use std::time::Instant;

/// Runs in a worker process.
#[procpool::task]
fn cube(x: u64) -> u64 {
    x * x * x
}

/// Reports which worker process ran the call.
#[procpool::task]
fn whoami(tag: u32) -> String {
    let worker = procpool::current_worker().expect("runs in a worker");
    format!(
        "call {tag} ran in worker {} (pid {})",
        worker.index, worker.pid
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    procpool::init(); // a worker process stops here and serves the pool
    let start = Instant::now();
    let pool = procpool::Pool::new()?;
    println!(
        "started {} workers in {:?}",
        pool.workers(),
        start.elapsed()
    );

    println!("cube(3) = {}", pool.call(cube, 3)?);
    for tag in 0..2 {
        println!("{}", pool.call(whoami, tag)?);
    }

    let start = Instant::now();
    let cubes: Vec<u64> = pool.map(cube, 1..=1_000_000).collect::<Result<_, _>>()?;
    println!(
        "mapped 1,000,000 items in {:?}; the last is {} and their sum mod 2^64 is {}",
        start.elapsed(),
        cubes[cubes.len() - 1],
        cubes.iter().fold(0u64, |acc, c| acc.wrapping_add(*c))
    );
    let stats = pool.stats();
    for worker in &stats.workers {
        println!(
            "worker {} (pid {}) ran {} items",
            worker.index, worker.pid, worker.tasks_done
        );
    }
    Ok(())
}
