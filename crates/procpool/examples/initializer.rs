//! An initializer runs once in every worker before any task; tasks then read its result.
//!
//! Here each worker builds a table of primes once, and each task looks numbers up in it.
//! Run with `cargo run --release --example initializer`.

/// The table each worker keeps: every prime below its limit.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
struct PrimeTable {
    primes: Vec<u64>,
}

/// Builds the table; runs once per worker, its output is kept as worker state.
#[procpool::task]
fn build_table(limit: u64) -> PrimeTable {
    let mut sieve = vec![true; limit as usize];
    let mut primes = Vec::new();
    for n in 2..limit {
        if sieve[n as usize] {
            primes.push(n);
            let mut multiple = n * n;
            while multiple < limit {
                sieve[multiple as usize] = false;
                multiple += n;
            }
        }
    }
    PrimeTable { primes }
}

/// Counts the primes in `lo..hi` using the worker's table.
#[procpool::task]
fn primes_between(lo: u64, hi: u64) -> Result<usize, String> {
    let table = procpool::worker_state::<PrimeTable>().ok_or("no prime table in this worker")?;
    let start = table.primes.partition_point(|&p| p < lo);
    let end = table.primes.partition_point(|&p| p < hi);
    Ok(end - start)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    procpool::init();
    let pool = procpool::Pool::builder()
        .workers(2)
        .initializer(build_table, 10_000_000)
        .build()?;
    let ranges: Vec<(u64, u64)> = (0..10)
        .map(|i| (i * 1_000_000, (i + 1) * 1_000_000))
        .collect();
    for ((lo, hi), count) in ranges.iter().zip(pool.map(primes_between, ranges.clone())) {
        println!("primes in {lo:>8}..{hi:>8}: {}", count?);
    }
    Ok(())
}
