//! The `shared_table` workload (issue 8): lookups of random rows of a ~200 MB table, the table
//! shared once (`Pool::share`) versus passed to every call as an ordinary argument.
//!
//! Passing 200 MB per call costs several copies per call, so the by-argument side runs only a
//! few calls and its time for all the lookups is extrapolated linearly (per-call cost times
//! the lookup count); the row's `extra` records how many calls it ran. The shared side runs
//! every lookup, and its time includes `share()`.

use std::sync::OnceLock;
use std::time::Instant;

use procpool::{Pool, Shared};

use crate::BenchError;
use crate::collect::Sample;
use crate::workload::Params;

/// One row: 24 bytes.
#[derive(Clone, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Row {
    /// A key.
    pub id: u64,
    /// A float column.
    pub score: f64,
    /// A counter.
    pub count: u32,
    /// Padding-free filler.
    pub flags: u32,
}

/// The table.
#[derive(Clone, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Table {
    /// The rows.
    pub rows: Vec<Row>,
}

/// Reads row `row` of the shared table in place.
#[procpool::task]
pub fn lookup_shared(table: Shared<Table>, row: u64) -> u64 {
    let row = &table.rows[row as usize];
    row.id.to_native() ^ u64::from(row.count.to_native())
}

/// Reads row `row` of a table that was passed by value.
#[procpool::task]
pub fn lookup_by_argument(table: Table, row: u64) -> u64 {
    let row = &table.rows[row as usize];
    row.id ^ u64::from(row.count)
}

fn expected(table: &Table, row: u64) -> u64 {
    let row = &table.rows[row as usize];
    row.id ^ u64::from(row.count)
}

/// The table of `mb` megabytes, built once per process.
fn table(mb: usize) -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        let n = (mb * 1_000_000 / 24) as u64;
        Table {
            rows: (0..n)
                .map(|i| Row {
                    id: i.wrapping_mul(2_654_435_761),
                    score: i as f64 * 0.5,
                    count: (i % 1000) as u32,
                    flags: 0,
                })
                .collect(),
        }
    })
}

/// `n` pseudo-random row numbers below `rows` (splitmix64, fixed seed).
fn random_rows(n: usize, rows: u64) -> Vec<u64> {
    let mut seed: u64 = 42;
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

fn failed(what: &str, err: impl std::fmt::Display) -> BenchError {
    BenchError::Procpool(format!("shared_table {what}: {err}"))
}

/// One round on `pool`: the speedup of sharing (by-argument time for all lookups, extrapolated,
/// ÷ shared time including `share()`).
pub fn run(pool: &Pool, p: &Params) -> Result<Sample, BenchError> {
    let table = table(p.shared_table_mb);
    let n_rows = table.rows.len() as u64;
    let rows = random_rows(p.shared_lookups, n_rows);

    let start = Instant::now();
    let shared = pool.share(table).map_err(|err| failed("share", err))?;
    let share_secs = start.elapsed().as_secs_f64();
    let outcomes = pool.map(lookup_shared, rows.iter().map(|&row| (shared.clone(), row)));
    for (outcome, &row) in outcomes.zip(&rows) {
        let got = outcome.map_err(|err| failed("lookup_shared", err))?;
        if got != expected(table, row) {
            return Err(failed(
                "lookup_shared",
                format!("row {row}: wrong value {got}"),
            ));
        }
    }
    let shared_secs = start.elapsed().as_secs_f64();
    drop(shared);

    let sample = &rows[..p.shared_by_argument_calls.min(rows.len())];
    let start = Instant::now();
    let outcomes = pool.map(
        lookup_by_argument,
        sample.iter().map(|&row| (table.clone(), row)),
    );
    for (outcome, &row) in outcomes.zip(sample) {
        let got = outcome.map_err(|err| failed("lookup_by_argument", err))?;
        if got != expected(table, row) {
            return Err(failed(
                "lookup_by_argument",
                format!("row {row}: wrong value {got}"),
            ));
        }
    }
    let per_call = start.elapsed().as_secs_f64() / sample.len() as f64;
    let by_argument_secs = per_call * rows.len() as f64;
    Ok(Sample::new(by_argument_secs / shared_secs, "x")
        .with("shared_ms", shared_secs * 1e3)
        .with("share_ms", share_secs * 1e3)
        .with("by_argument_ms_per_call", per_call * 1e3)
        .with("by_argument_ms_extrapolated", by_argument_secs * 1e3)
        .with("by_argument_calls", sample.len() as f64)
        .with("lookups", rows.len() as f64)
        .with("table_mb", p.shared_table_mb as f64))
}
