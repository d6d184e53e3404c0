//! The tasks the benchmarks run in procpool workers (the trivial ones are procpool's built-ins).
//!
//! They are registered by `#[procpool::task]` in this library, so any binary that links it
//! and calls `procpool::init()` first (the runner, the criterion benches) can be its own
//! worker program.

use crate::busy::spin;
use crate::digest::sha512_file;

/// Busy CPU work: `iters` steps of the benchmark LCG (see [`crate::busy`]).
#[procpool::task]
pub fn busy_loops(iters: u64) -> u64 {
    spin(iters)
}

/// [`busy_loops`] that also says how much thread CPU time the item took inside the worker,
/// in nanoseconds: the second reference of `cpu_scaling` and `skewed` (see
/// `crate::reference::Inside`). Two clock reads per item are a few hundred nanoseconds, so
/// only items of milliseconds use it.
#[procpool::task]
pub fn busy_loops_timed(iters: u64) -> (u64, u64) {
    crate::busy::spin_timed(iters)
}

/// The CPU the worker runs this on (`sched_getcpu`), `None` if the kernel cannot say: the
/// latency rows' placement probe (`crate::systems::Backend::task_cpu`), never timed.
#[procpool::task]
pub fn task_cpu(unused: u64) -> Option<u32> {
    let _ = unused;
    crate::systems::current_cpu()
}

/// SHA-512 of the whole file at `path`, read at once (as the serial, rayon and Python sides do).
#[procpool::task]
pub fn sha512_path(path: &str) -> Result<[u8; 64], String> {
    sha512_file(std::path::Path::new(path)).map_err(|err| format!("{path}: {err}"))
}
