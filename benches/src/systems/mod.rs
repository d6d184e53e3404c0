//! The Rust-side systems (procpool, rayon, serial) and the one measuring loop they share.
//!
//! A system implements the primitive operations of [`Backend`]; [`measure`] turns them into
//! one [`Sample`] per round, the same way for every system, and checks every result against
//! the serial answer so a fast wrong figure can never be reported.

mod futex;
mod procpool;
mod rayon;
mod serial;

use std::collections::HashMap;
use std::hint::black_box;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use self::futex::FutexPair;
pub use self::procpool::ProcpoolSystem;
pub use self::rayon::RayonSystem;
pub use self::serial::SerialSystem;

use crate::BenchError;
use crate::busy::{Calibration, spin};
use crate::collect::{Sample, median};
use crate::digest::Tree;
use crate::reference::{Inside, ProbeSample};
use crate::workload::{Params, Workload};

/// A digest as the tasks return it.
pub type Sha512 = [u8; 64];

/// The primitive operations a Rust-side system offers; a workload it cannot run meaningfully
/// is left out of [`Backend::supports`] (the report says why in benches/README.md).
pub trait Backend {
    /// The name in the report.
    fn name(&self) -> &'static str;
    /// Whether the system runs `workload`.
    fn supports(&self, workload: Workload) -> bool;
    /// Starts a pool of `workers`, gets one trivial result, shuts it down.
    fn startup_once(&mut self, workers: usize) -> Result<(), BenchError>;
    /// Makes sure the warm pool exists and every worker has run something.
    fn warm_up(&mut self, workers: usize) -> Result<(), BenchError>;
    /// One trivial task, submit to result.
    fn round_trip(&mut self, x: u64) -> Result<u64, BenchError>;
    /// `n` trivial submits (`add_one(i)` for `i` in `0..n`), then every result; returns their sum.
    fn submit_many(&mut self, n: u64) -> Result<u64, BenchError>;
    /// `add_one` over `0..n`, in order.
    fn map_add_one(&mut self, n: u64) -> Result<Vec<u64>, BenchError>;
    /// `spin` over `items`, in order.
    fn map_spin(&mut self, items: &[u64]) -> Result<Vec<u64>, BenchError>;
    /// `spin_timed` over `items`, in order: each result with the thread CPU time (ns) the
    /// item took where it ran (inside a worker process or thread).
    fn map_spin_timed(&mut self, items: &[u64]) -> Result<Vec<(u64, u64)>, BenchError>;
    /// Sends `data` to an identity task and returns what came back.
    fn identity(&mut self, data: Vec<u8>) -> Result<Vec<u8>, BenchError>;
    /// SHA-512 of every file, in any order.
    fn digest(&mut self, files: &[PathBuf]) -> Result<Vec<Sha512>, BenchError>;
    /// The CPU a trivial task of this system runs on now: one more round trip, never timed
    /// (the latency rows' placement probe). `None` if the system runs no task off the
    /// caller's thread or cannot say.
    fn task_cpu(&mut self) -> Result<Option<u32>, BenchError> {
        Ok(None)
    }
    /// One round of `shared_table` (procpool only; see `crate::shared_table`).
    fn shared_table(&mut self, params: &Params) -> Result<Sample, BenchError> {
        let _ = params;
        Err(unsupported(self.name(), "shared_table"))
    }
}

/// Everything a round needs besides the system.
#[derive(Debug)]
pub struct RoundCtx<'a> {
    /// Worker processes or threads.
    pub workers: usize,
    /// Workload sizes.
    pub params: &'a Params,
    /// The loop calibration of this process.
    pub cal: &'a Calibration,
    /// The `digest` tree and the XOR of all its file digests, when that workload runs.
    pub tree: Option<(&'a Tree, Sha512)>,
    /// Expected `spin` results, computed once per loop count.
    pub oracle: &'a SpinOracle,
}

/// Remembers `spin(loops)` per loop count, so checking a result costs nothing after the first.
#[derive(Debug, Default)]
pub struct SpinOracle {
    known: Mutex<HashMap<u64, u64>>,
}

impl SpinOracle {
    /// `spin(loops)`, computed at most once.
    pub fn expect(&self, loops: u64) -> u64 {
        let mut known = self
            .known
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        *known.entry(loops).or_insert_with(|| spin(loops))
    }
}

/// The items of a workload that maps `spin`, by the context's calibration.
pub fn spin_items(workload: Workload, ctx: &RoundCtx<'_>) -> Vec<u64> {
    let p = ctx.params;
    match workload {
        Workload::Map1us => vec![ctx.cal.loops(Duration::from_micros(1)); p.map_1us_n],
        Workload::CpuScaling => vec![ctx.cal.loops(p.cpu_unit); p.cpu_tasks],
        Workload::Skewed => {
            let mut items = vec![ctx.cal.loops(p.skew_short.1); p.skew_short.0];
            items.extend(std::iter::repeat_n(
                ctx.cal.loops(p.skew_long.1),
                p.skew_long.0,
            ));
            items
        }
        _ => Vec::new(),
    }
}

/// XOR of digests: an order-independent fingerprint of a set of files.
pub fn xor_digests(digests: &[Sha512]) -> Sha512 {
    let mut acc = [0u8; 64];
    for digest in digests {
        for (a, b) in acc.iter_mut().zip(digest) {
            *a ^= b;
        }
    }
    acc
}

/// How many warm round trips share one placement probe (an extra, untimed trip).
pub const PLACEMENT_EVERY: usize = 16;

/// The CPU the calling thread runs on, if the kernel can say.
pub fn current_cpu() -> Option<u32> {
    nix::sched::sched_getcpu()
        .ok()
        .and_then(|cpu| u32::try_from(cpu).ok())
}

/// The latency rows' round trips sorted by where the task ran: on the caller's CPU (the two
/// take turns on one core: every trip is two context switches) or on another one. Trips are
/// held until the next probe, which comes right after them, and filed under what it found
/// (on this machine a placement lasts for thousands of trips; `docs/bench/startup-and-latency.md`).
#[derive(Debug, Default)]
struct Placement {
    /// Trips since the last probe.
    pending: Vec<f64>,
    /// Probes that could tell, and how many of them found the task on the caller's CPU.
    probes: usize,
    shared: usize,
    on_shared: Vec<f64>,
    on_own: Vec<f64>,
}

impl Placement {
    /// Records one timed trip.
    fn trip(&mut self, micros: f64) {
        self.pending.push(micros);
    }

    /// Asks `system` where its task runs now and files the pending trips under the answer
    /// (dropped from the split if the system cannot say).
    fn probe(&mut self, system: &mut dyn Backend) -> Result<(), BenchError> {
        let task = system.task_cpu()?;
        self.file(task, current_cpu());
        Ok(())
    }

    /// Files the pending trips: the task ran on `task`, the caller on `caller`.
    fn file(&mut self, task: Option<u32>, caller: Option<u32>) {
        let trips = std::mem::take(&mut self.pending);
        let (Some(task), Some(caller)) = (task, caller) else {
            return;
        };
        self.probes += 1;
        if task == caller {
            self.shared += 1;
            self.on_shared.extend(trips);
        } else {
            self.on_own.extend(trips);
        }
    }

    /// `sample` with the split: `shared_cpu` (share of probes that found the task on the
    /// caller's CPU) and the median trip of each side, where it has trips.
    fn annotate(self, mut sample: Sample) -> Sample {
        if self.probes == 0 {
            return sample;
        }
        sample = sample.with("shared_cpu", self.shared as f64 / self.probes as f64);
        if !self.on_shared.is_empty() {
            sample = sample.with("us_shared_cpu", median(&self.on_shared));
        }
        if !self.on_own.is_empty() {
            sample = sample.with("us_own_cpu", median(&self.on_own));
        }
        sample
    }
}

/// The latency rows: `trips` timed round trips after 50 untimed ones, each after `idle` of
/// sleep if given; the median in µs, with where the trips ran (a placement probe after every
/// `PLACEMENT_EVERY` warm trips, after every idle one: where the wake-up put the task).
fn round_trips(
    system: &mut dyn Backend,
    workload: Workload,
    trips: usize,
    idle: Option<Duration>,
) -> Result<Sample, BenchError> {
    for i in 0..50 {
        system.round_trip(i)?;
    }
    let probe_every = if idle.is_some() { 1 } else { PLACEMENT_EVERY };
    let mut times = Vec::with_capacity(trips);
    let mut placement = Placement::default();
    for i in 0..trips as u64 {
        if let Some(idle) = idle {
            std::thread::sleep(idle);
        }
        let start = Instant::now();
        let got = system.round_trip(black_box(i))?;
        let micros = start.elapsed().as_nanos() as f64 / 1e3;
        times.push(micros);
        placement.trip(micros);
        if got != i + 1 {
            return Err(wrong(system, workload, format!("add_one({i}) = {got}")));
        }
        if (i as usize + 1).is_multiple_of(probe_every) {
            placement.probe(system)?;
        }
    }
    Ok(placement.annotate(Sample::new(median(&times), "us")))
}

fn wrong(system: &dyn Backend, workload: Workload, detail: String) -> BenchError {
    BenchError::WrongResult {
        system: system.name().to_owned(),
        workload: workload.name(),
        detail,
    }
}

fn secs_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}

/// Runs one round of `workload` on `system` and returns its figure.
pub fn measure(
    system: &mut dyn Backend,
    workload: Workload,
    ctx: &RoundCtx<'_>,
) -> Result<Sample, BenchError> {
    let p = ctx.params;
    let workers = ctx.workers;
    if workload != Workload::Startup {
        system.warm_up(workers)?;
    }
    match workload {
        Workload::Startup => {
            let mut times = Vec::with_capacity(p.starts);
            for _ in 0..p.starts {
                let start = Instant::now();
                system.startup_once(workers)?;
                times.push(secs_since(start) * 1e3);
            }
            Ok(Sample::new(median(&times), "ms"))
        }
        Workload::Latency => round_trips(system, workload, p.latency_trips, None),
        Workload::LatencyIdle => {
            let sample = round_trips(system, workload, p.idle_trips, Some(p.idle_for))?;
            Ok(sample.with("idle_ms", p.idle_for.as_millis() as f64))
        }
        Workload::Submit => {
            let n = p.submit_n as u64;
            let start = Instant::now();
            let sum = system.submit_many(n)?;
            let secs = secs_since(start);
            let expect = n * (n + 1) / 2;
            if sum != expect {
                return Err(wrong(
                    system,
                    workload,
                    format!("sum {sum}, expected {expect}"),
                ));
            }
            Ok(Sample::new(n as f64 / secs, "tasks/s").with("n", n as f64))
        }
        Workload::MapTiny => {
            let n = p.map_tiny_n;
            let start = Instant::now();
            let out = system.map_add_one(n)?;
            let secs = secs_since(start);
            if out.len() as u64 != n || out.iter().enumerate().any(|(i, &v)| v != i as u64 + 1) {
                return Err(wrong(
                    system,
                    workload,
                    "output is not add_one(0..n) in order".into(),
                ));
            }
            Ok(Sample::new(n as f64 / secs, "items/s").with("n", n as f64))
        }
        Workload::Map1us => {
            let items = spin_items(workload, ctx);
            let start = Instant::now();
            let out = system.map_spin(&items)?;
            let secs = secs_since(start);
            check_spin(system, workload, ctx, &items, out.iter().copied())?;
            // The raw wall time: the runner turns it into an efficiency once the round's
            // serial reference is complete (`crate::reference`).
            Ok(Sample::new(secs * 1e3, "ms").with("n", items.len() as f64))
        }
        Workload::CpuScaling | Workload::Skewed => {
            // Items of milliseconds: each also times itself inside the worker, the second
            // reference (`crate::reference::Inside`); two clock reads cost nothing here.
            let items = spin_items(workload, ctx);
            let start = Instant::now();
            let out = system.map_spin_timed(&items)?;
            let secs = secs_since(start);
            check_spin(system, workload, ctx, &items, out.iter().map(|&(v, _)| v))?;
            let inside = Inside::of(out.iter().map(|&(_, ns)| ns as f64 / 1e9));
            Ok(Sample::new(secs * 1e3, "ms")
                .with("n", items.len() as f64)
                .with("inside_work_ms", inside.work * 1e3)
                .with("inside_longest_ms", inside.longest * 1e3))
        }
        Workload::Payload => {
            let size = p.payload_mib << 20;
            let mut data = vec![0u8; size];
            let mut state: u64 = 0x0DDB_1A5E_5BAD_5EED;
            for chunk in data.chunks_exact_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                chunk.copy_from_slice(&state.to_le_bytes());
            }
            let fingerprint = (data[0], data[size / 2], data[size - 1]);
            let mut trips = Vec::with_capacity(p.payload_trips);
            for _ in 0..p.payload_trips {
                let start = Instant::now();
                let back = system.identity(data)?;
                trips.push(secs_since(start));
                if back.len() != size || (back[0], back[size / 2], back[size - 1]) != fingerprint {
                    return Err(wrong(
                        system,
                        workload,
                        "identity changed the buffer".into(),
                    ));
                }
                data = back;
            }
            let mib = p.payload_mib as f64;
            Ok(Sample::new(mib / median(&trips), "MiB/s").with("mib", mib))
        }
        Workload::SharedTable => system.shared_table(p),
        Workload::Digest => {
            let (tree, expect) = ctx
                .tree
                .ok_or_else(|| wrong(system, workload, "no tree was generated".into()))?;
            let start = Instant::now();
            let digests = system.digest(&tree.files)?;
            let secs = secs_since(start);
            if digests.len() != tree.files.len() || xor_digests(&digests) != expect {
                return Err(wrong(
                    system,
                    workload,
                    "digests differ from the serial pass".into(),
                ));
            }
            Ok(Sample::new(tree.mib() / secs, "MiB/s")
                .with("files", tree.files.len() as f64)
                .with("mib", tree.mib()))
        }
    }
}

/// Checks a busy map's output against `spin(items)`, in order.
fn check_spin(
    system: &dyn Backend,
    workload: Workload,
    ctx: &RoundCtx<'_>,
    items: &[u64],
    out: impl ExactSizeIterator<Item = u64>,
) -> Result<(), BenchError> {
    if out.len() != items.len()
        || items
            .iter()
            .zip(out)
            .any(|(&l, v)| ctx.oracle.expect(l) != v)
    {
        return Err(wrong(
            system,
            workload,
            "output is not spin(items) in order".into(),
        ));
    }
    Ok(())
}

/// Runs `batches` of `items` on the serial system one at a time, each timed in wall and
/// thread CPU time (the serial reference, see [`crate::reference`]), and checks every result.
pub fn probe_serial(
    serial: &mut SerialSystem,
    workload: Workload,
    items: &[u64],
    batches: &[Range<usize>],
    oracle: &SpinOracle,
) -> Result<Vec<ProbeSample>, BenchError> {
    let mut samples = Vec::with_capacity(batches.len());
    for batch in batches {
        let batch_items = &items[batch.clone()];
        let (sample, out) = ProbeSample::time(batch_items[0], batch_items.len(), || {
            serial.map_spin(batch_items)
        });
        let out = out?;
        if out.len() != batch_items.len()
            || batch_items
                .iter()
                .zip(&out)
                .any(|(&l, &v)| oracle.expect(l) != v)
        {
            return Err(wrong(
                serial,
                workload,
                "output is not spin(items) in order".into(),
            ));
        }
        samples.push(sample);
    }
    Ok(samples)
}

/// The error of a primitive a system does not offer.
fn unsupported(system: &str, what: &str) -> BenchError {
    BenchError::Procpool(format!("{system} does not run `{what}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_are_filed_under_the_probe_that_follows_them() {
        let mut placement = Placement::default();
        for micros in [5.0, 6.0, 7.0] {
            placement.trip(micros);
        }
        placement.file(Some(0), Some(0));
        placement.trip(2.0);
        placement.file(Some(1), Some(0));
        placement.trip(100.0);
        placement.file(None, Some(0)); // cannot say: the trip is in neither side
        let sample = placement.annotate(Sample::new(4.0, "us"));
        let extra: HashMap<_, _> = sample.extra.into_iter().collect();
        assert_eq!(extra["shared_cpu"], 0.5);
        assert_eq!(extra["us_shared_cpu"], 6.0);
        assert_eq!(extra["us_own_cpu"], 2.0);
    }

    #[test]
    fn a_system_that_cannot_say_adds_no_split() {
        let mut placement = Placement::default();
        placement.trip(5.0);
        placement.file(None, None);
        assert!(placement.annotate(Sample::new(5.0, "us")).extra.is_empty());
    }

    #[test]
    fn the_rayon_probe_names_a_cpu_this_machine_has() {
        let mut rayon = RayonSystem::default();
        rayon.warm_up(2).unwrap();
        let cpu = rayon
            .task_cpu()
            .unwrap()
            .expect("sched_getcpu works on Linux");
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        // The affinity mask may allow fewer CPUs than exist, never more.
        assert!(
            nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
                .unwrap()
                .is_set(cpu as usize)
                .unwrap(),
            "cpu {cpu} of {cpus}"
        );
    }
}
