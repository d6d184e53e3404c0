//! Share a 200 MB table once, then run 10,000 lookup tasks that read it in place; compare with
//! passing the table to each task as an ordinary argument.
//!
//! Run with `cargo run --release --example shared_table` (add `-- --rows N` for another size).
//!
//! Passing 200 MB per call copies it several times per call (clone in the caller, archive,
//! map, deserialize in the worker), so the by-argument run is scaled down to a few calls and
//! its time for 10,000 calls is extrapolated linearly; the output says so.

use std::time::Instant;

use procpool::Shared;

/// One row of the table: 24 bytes.
#[derive(Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct Row {
    id: u64,
    score: f64,
    count: u32,
    flags: u32,
}

/// The table: about 200 MB with the default row count.
#[derive(Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct Table {
    rows: Vec<Row>,
}

/// Reads one row of the shared table, in place (no copy, no per-call validation).
#[procpool::task]
fn lookup_shared(table: Shared<Table>, row: u64) -> u64 {
    let row = &table.rows[row as usize];
    row.id.to_native() ^ u64::from(row.count.to_native())
}

/// Reads one row of a table passed by value (copied into every call).
#[procpool::task]
fn lookup_by_argument(table: Table, row: u64) -> u64 {
    let row = &table.rows[row as usize];
    row.id ^ u64::from(row.count)
}

const LOOKUPS: usize = 10_000;
/// Calls the by-argument run makes (its time for `LOOKUPS` calls is extrapolated).
const BY_ARGUMENT_CALLS: usize = 6;

/// A deterministic pseudo-random sequence (splitmix64).
fn random_rows(n: usize, rows: u64, mut seed: u64) -> Vec<u64> {
    (0..n)
        .map(|_| {
            seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = seed;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) % rows
        })
        .collect()
}

fn expected(table: &Table, row: u64) -> u64 {
    let row = &table.rows[row as usize];
    row.id ^ u64::from(row.count)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    procpool::init();
    let args: Vec<String> = std::env::args().collect();
    let n_rows: u64 = match args.iter().position(|arg| arg == "--rows") {
        Some(at) => args.get(at + 1).ok_or("--rows needs a number")?.parse()?,
        None => 200_000_000 / 24,
    };
    let table = Table {
        rows: (0..n_rows)
            .map(|i| Row {
                id: i.wrapping_mul(2_654_435_761),
                score: i as f64 * 0.5,
                count: (i % 1000) as u32,
                flags: 0,
            })
            .collect(),
    };
    let megabytes = n_rows as f64 * 24.0 / 1e6;
    let pool = procpool::Pool::new()?;
    println!(
        "table: {n_rows} rows, {megabytes:.0} MB; {} workers; {LOOKUPS} lookups of random rows",
        pool.workers()
    );
    let rows = random_rows(LOOKUPS, n_rows, 42);

    // Shared: archived once into sealed shared memory, mapped read-only by every worker.
    let start = Instant::now();
    let shared = pool.share(&table)?;
    let shared_at = start.elapsed();
    let mut checked = 0;
    for (outcome, &row) in pool
        .map(lookup_shared, rows.iter().map(|&row| (shared.clone(), row)))
        .zip(&rows)
    {
        assert_eq!(outcome?, expected(&table, row));
        checked += 1;
    }
    let shared_time = start.elapsed();
    assert_eq!(checked, LOOKUPS);
    println!(
        "shared:      {LOOKUPS} lookups in {:>9.3} s (share() took {:.3} s of it)",
        shared_time.as_secs_f64(),
        shared_at.as_secs_f64()
    );

    // By argument: every call gets its own copy of the table (run in parallel like the
    // shared run, but only a few calls).
    let start = Instant::now();
    let sample = &rows[..BY_ARGUMENT_CALLS];
    let mut calls = 0;
    for (outcome, &row) in pool
        .map(
            lookup_by_argument,
            sample.iter().map(|&row| (table.clone(), row)),
        )
        .zip(sample)
    {
        assert_eq!(outcome?, expected(&table, row));
        calls += 1;
    }
    let per_call = start.elapsed() / calls;
    let extrapolated = per_call.as_secs_f64() * LOOKUPS as f64;
    println!(
        "by argument: {calls} lookups in {:>9.3} s, {:.3} s per call: {LOOKUPS} lookups would take \
         ~{extrapolated:.0} s (extrapolated linearly from {calls} calls, not run)",
        start.elapsed().as_secs_f64(),
        per_call.as_secs_f64(),
    );
    println!(
        "shared is ~{:.0}x faster for {LOOKUPS} lookups",
        extrapolated / shared_time.as_secs_f64()
    );
    Ok(())
}
