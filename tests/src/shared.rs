//! Tasks that read shared objects (`Pool::share`), for `it/shared.rs`.

use procpool::Shared;

/// A table shared with the workers.
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Table {
    /// Row `i` holds `row_value(i)`.
    pub rows: Vec<u64>,
    /// A name, to exercise an out-of-line field.
    pub name: String,
}

/// The value a test table holds in row `i`.
pub fn row_value(i: u64) -> u64 {
    i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5555
}

/// A table of `n` rows.
pub fn table(n: u64) -> Table {
    Table {
        rows: (0..n).map(row_value).collect(),
        name: format!("table of {n}"),
    }
}

/// Row `row` of the shared table and the pid of the worker that read it.
#[procpool::task]
pub fn shared_row(table: Shared<Table>, row: u64) -> (u64, u32) {
    (table.rows[row as usize].to_native(), std::process::id())
}

/// Length and name of the shared table.
#[procpool::task]
pub fn shared_table_info(table: Shared<Table>) -> (u64, String) {
    (table.rows.len() as u64, table.name.as_str().to_owned())
}

/// Sum of a shared slice of floats.
#[procpool::task]
pub fn shared_f64_sum(data: Shared<[f64]>) -> f64 {
    data.iter().sum()
}

/// Length and wrapping byte sum of a shared byte buffer.
#[procpool::task]
pub fn shared_bytes_sum(data: Shared<[u8]>) -> (u64, u64) {
    (
        data.len() as u64,
        data.iter()
            .fold(0u64, |sum, &b| sum.wrapping_add(u64::from(b))),
    )
}

/// Tries to write into a shared byte buffer: the mapping is read-only, so the worker faults.
#[procpool::task]
pub fn write_into_shared(data: Shared<[u8]>) -> u8 {
    let target = data.as_ptr().cast_mut();
    // SAFETY: none, on purpose: the page is mapped read-only, so this store faults the worker
    // (SIGSEGV) before anything is written; the test checks exactly that.
    unsafe { target.write_volatile(0xAA) };
    data[0]
}

/// Length and wrapping sum of a byte argument (a large argument goes out of band).
#[procpool::task]
pub fn bytes_sum(data: &[u8]) -> (u64, u64) {
    (
        data.len() as u64,
        data.iter()
            .fold(0u64, |sum, &b| sum.wrapping_add(u64::from(b))),
    )
}

/// Sleeps `millis` ms holding its (large) argument in place, then returns like `bytes_sum`: a
/// pad released meanwhile would be read as zeros.
#[procpool::task]
pub fn sleep_then_sum(data: &[u8], millis: u64) -> (u64, u64) {
    std::thread::sleep(std::time::Duration::from_millis(millis));
    bytes_sum::call(data)
}

/// `len` bytes, byte `i` being `(i * 31 + seed) as u8` (a large result goes out of band).
#[procpool::task]
pub fn make_bytes(len: u64, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Aborts the worker while it holds a (large) argument; returns its length if it is empty.
#[procpool::task]
pub fn abort_holding(data: &[u8]) -> u64 {
    if !data.is_empty() {
        std::process::abort();
    }
    0
}

/// Touches every task of this module (see `crate::keep_tasks`).
pub fn keep_tasks() -> usize {
    let tasks: [*const (); 9] = [
        abort_holding::call as *const (),
        sleep_then_sum::call as *const (),
        shared_row::call as *const (),
        shared_table_info::call as *const (),
        shared_f64_sum::call as *const (),
        shared_bytes_sum::call as *const (),
        write_into_shared::call as *const (),
        bytes_sum::call as *const (),
        make_bytes::call as *const (),
    ];
    std::hint::black_box(tasks).len()
}
