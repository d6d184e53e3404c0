//! The serial reference of the busy workloads (`map_1us`, `cpu_scaling`, `skewed`): what
//! their work costs on one core, measured so that a noisy machine cannot inflate it.
//!
//! One long serial pass is a poor reference on a shared machine: if another process takes
//! the core for a while, the pass runs slow, and every efficiency computed from it comes out
//! too high (above 1 in the worst rounds). So, in every round:
//!
//! - the serial loop runs the workload's items in **short batches** ([`batches`]: one task,
//!   or as many ~1 µs items as fill about a millisecond), half of them before the pools run
//!   and half after (A B A), each batch timed in **wall time and in thread CPU time**
//!   (`CLOCK_THREAD_CPUTIME_ID`, which does not advance while the thread is preempted or the
//!   vCPU is stolen);
//! - the cost of one item of each size is the **median** over the batches ([`Reference`]);
//! - the work of the workload is the sum of its items' costs, and efficiencies and the ideal
//!   makespan are computed from the CPU-time costs ([`Basis::Cpu`]), the steady one, with the
//!   wall-time figures kept beside them ([`Basis::Wall`]).
//!
//! A pool runs the same instructions, so with a CPU-time reference an efficiency above 1 (or a
//! makespan below the ideal) cannot happen unless the pool's cores ran faster than the serial
//! one; the report flags any such figure as a measurement anomaly instead of a pass.

use std::ops::Range;
use std::time::{Duration, Instant};

use nix::time::{ClockId, clock_gettime};

use crate::busy::Calibration;
use crate::collect::{Sample, median};

/// The shortest batch the serial probe times: short enough that most batches run without a
/// preemption, long enough that the two clock reads cost nothing.
pub const MIN_BATCH: Duration = Duration::from_millis(1);

/// CPU time consumed so far by the calling thread (`CLOCK_THREAD_CPUTIME_ID`).
pub fn thread_cpu_time() -> Duration {
    // The clock exists on every Linux; should it fail, a zero reading makes the CPU figures
    // zero, which the reference rejects rather than reporting.
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(Duration::ZERO, Duration::from)
}

/// Which clock a reference figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// Thread CPU time: the work itself, blind to preemption. The headline basis.
    Cpu,
    /// Wall time of the serial batches: what a stopwatch saw, preemptions included.
    Wall,
}

/// One timed batch of the serial probe: `items` items of `loops` busy steps each.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeSample {
    /// Busy steps of every item in the batch.
    pub loops: u64,
    /// Items in the batch.
    pub items: usize,
    /// Wall time of the batch, in seconds.
    pub wall: f64,
    /// Thread CPU time of the batch, in seconds.
    pub cpu: f64,
}

impl ProbeSample {
    /// Times `run` over a batch of `items` items of `loops` steps, in wall and CPU time.
    /// The CPU readings sit inside the wall readings, so `cpu ≤ wall` up to clock resolution.
    pub fn time<T>(loops: u64, items: usize, run: impl FnOnce() -> T) -> (Self, T) {
        let wall_start = Instant::now();
        let cpu_start = thread_cpu_time();
        let out = run();
        let cpu = thread_cpu_time().saturating_sub(cpu_start);
        let wall = wall_start.elapsed();
        let sample = Self {
            loops,
            items,
            wall: wall.as_secs_f64(),
            cpu: cpu.as_secs_f64(),
        };
        (sample, out)
    }
}

/// Cuts `items` into batches for the probe: runs of equal loop counts, each cut into pieces
/// of at least `min_batch` (by the calibration), at least one item each.
pub fn batches(items: &[u64], cal: &Calibration, min_batch: Duration) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < items.len() {
        let loops = items[start];
        let run_end = items[start..]
            .iter()
            .position(|&l| l != loops)
            .map_or(items.len(), |offset| start + offset);
        let item_ns = loops as f64 * cal.ns_per_iter;
        let per_batch = if item_ns > 0.0 {
            (min_batch.as_nanos() as f64 / item_ns).ceil().max(1.0) as usize
        } else {
            run_end - start
        };
        let mut at = start;
        while at < run_end {
            let end = (at + per_batch).min(run_end);
            out.push(at..end);
            at = end;
        }
        start = run_end;
    }
    out
}

/// Splits the batches into two interleaved halves (even and odd positions), so the probe
/// before the pools and the one after each see every item size.
pub fn halves(batches: Vec<Range<usize>>) -> (Vec<Range<usize>>, Vec<Range<usize>>) {
    let (mut first, mut second) = (Vec::new(), Vec::new());
    for (idx, batch) in batches.into_iter().enumerate() {
        if idx % 2 == 0 {
            first.push(batch);
        } else {
            second.push(batch);
        }
    }
    (first, second)
}

/// Median, smallest and largest of a set of figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// The median.
    pub median: f64,
    /// The smallest figure.
    pub min: f64,
    /// The largest figure.
    pub max: f64,
}

impl Spread {
    /// The spread of `values` (NaN everywhere when empty).
    pub fn of(values: &[f64]) -> Self {
        Self {
            median: median(values),
            min: values.iter().copied().fold(f64::NAN, f64::min),
            max: values.iter().copied().fold(f64::NAN, f64::max),
        }
    }
}

/// The measured cost of one item size.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassCost {
    /// Busy steps of an item of this size.
    pub loops: u64,
    /// How many items of this size the workload has.
    pub count: usize,
    /// Seconds per item in wall time, over the batches.
    pub wall: Spread,
    /// Seconds per item in thread CPU time, over the batches.
    pub cpu: Spread,
    /// Batches that measured it.
    pub batches: usize,
}

impl ClassCost {
    /// The median cost of one item on `basis`, in seconds.
    pub fn per_item(&self, basis: Basis) -> f64 {
        match basis {
            Basis::Cpu => self.cpu.median,
            Basis::Wall => self.wall.median,
        }
    }
}

/// Why no reference could be formed from a round's probe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// An item size of the workload had no probe batch.
    #[error("no serial batch measured items of {0} steps")]
    Unmeasured(u64),
    /// A clock reported nothing (zero or non-finite) for an item size.
    #[error("the {0} clock read zero for items of {1} steps")]
    NoTime(&'static str, u64),
}

/// The serial reference of one round: the cost of every item size of the workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    /// One entry per item size, in order of first appearance in the workload.
    pub classes: Vec<ClassCost>,
    /// Wall time of all the round's batches together (one full serial pass), in seconds.
    pub pass_wall: f64,
    /// CPU time of all the round's batches together, in seconds.
    pub pass_cpu: f64,
}

impl Reference {
    /// Folds the probe batches of a round into the cost of each item size of `items`.
    pub fn new(items: &[u64], samples: &[ProbeSample]) -> Result<Self, ReferenceError> {
        let mut classes: Vec<ClassCost> = Vec::new();
        for &loops in items {
            if let Some(class) = classes.iter_mut().find(|c| c.loops == loops) {
                class.count += 1;
                continue;
            }
            let of_size: Vec<&ProbeSample> = samples
                .iter()
                .filter(|s| s.loops == loops && s.items > 0)
                .collect();
            if of_size.is_empty() {
                return Err(ReferenceError::Unmeasured(loops));
            }
            let per_item = |pick: fn(&ProbeSample) -> f64| -> Vec<f64> {
                of_size.iter().map(|s| pick(s) / s.items as f64).collect()
            };
            let cost = ClassCost {
                loops,
                count: 1,
                wall: Spread::of(&per_item(|s| s.wall)),
                cpu: Spread::of(&per_item(|s| s.cpu)),
                batches: of_size.len(),
            };
            for (name, spread) in [("wall", cost.wall), ("CPU", cost.cpu)] {
                if !(spread.median.is_finite() && spread.median > 0.0) {
                    return Err(ReferenceError::NoTime(name, loops));
                }
            }
            classes.push(cost);
        }
        Ok(Self {
            classes,
            pass_wall: samples.iter().map(|s| s.wall).sum(),
            pass_cpu: samples.iter().map(|s| s.cpu).sum(),
        })
    }

    /// The work of the whole workload on one core, in seconds: Σ items × cost per item.
    pub fn work(&self, basis: Basis) -> f64 {
        self.classes
            .iter()
            .map(|c| c.count as f64 * c.per_item(basis))
            .sum()
    }

    /// The cost of the longest single item, in seconds.
    pub fn longest(&self, basis: Basis) -> f64 {
        self.classes
            .iter()
            .map(|c| c.per_item(basis))
            .fold(0.0, f64::max)
    }

    /// The ideal makespan on `workers`: perfect balance, but never below the longest item.
    pub fn ideal(&self, workers: usize, basis: Basis) -> f64 {
        (self.work(basis) / workers as f64).max(self.longest(basis))
    }

    /// Parallel efficiency of a pool that took `wall` seconds: work ÷ (workers × wall).
    pub fn efficiency(&self, workers: usize, wall: f64, basis: Basis) -> f64 {
        self.work(basis) / (workers as f64 * wall)
    }

    /// The share of the serial pass during which the serial thread did not run (preempted,
    /// or its vCPU stolen): 1 − CPU ÷ wall. Near 0 on a quiet machine.
    pub fn disturbed(&self) -> f64 {
        if self.pass_wall > 0.0 {
            (1.0 - self.pass_cpu / self.pass_wall).max(0.0)
        } else {
            f64::NAN
        }
    }

    /// The serial row's sample: the CPU-time work in ms, with the wall-time figures beside it.
    pub fn serial_sample(&self) -> Sample {
        let mut sample = Sample::new(self.work(Basis::Cpu) * 1e3, "ms")
            .with("work_wall_ms", self.work(Basis::Wall) * 1e3)
            .with("pass_wall_ms", self.pass_wall * 1e3)
            .with("pass_cpu_ms", self.pass_cpu * 1e3)
            .with("disturbed", self.disturbed())
            .with(
                "n",
                self.classes.iter().map(|c| c.count).sum::<usize>() as f64,
            );
        for (idx, class) in self.classes.iter().enumerate() {
            sample = sample
                .with(&format!("item{idx}_cpu_us"), class.cpu.median * 1e6)
                .with(&format!("item{idx}_wall_us"), class.wall.median * 1e6)
                .with(&format!("item{idx}_batches"), class.batches as f64);
        }
        sample
    }

    /// A pool's figure for a round that took `wall` seconds over the workload's `n` items:
    /// `x ideal` for `skewed`, efficiency otherwise (CPU basis; wall basis in the extras).
    /// With `inside` (the items' CPU time measured inside the pool's workers), the second
    /// reference's figures go in the extras too: `efficiency_inside` / `x_ideal_inside`, and
    /// `inside_over_serial`, what an item cost in the pool ÷ what it cost the serial loop
    /// (above 1: the cores ran slower during the pool's run than during the reference's).
    pub fn pool_sample(
        &self,
        skewed: bool,
        workers: usize,
        wall: f64,
        n: usize,
        inside: Option<Inside>,
    ) -> Sample {
        let mut sample = if skewed {
            let ideal = self.ideal(workers, Basis::Cpu);
            let ideal_wall = self.ideal(workers, Basis::Wall);
            Sample::new(wall / ideal, "x ideal")
                .with("makespan_ms", wall * 1e3)
                .with("ideal_ms", ideal * 1e3)
                .with("ideal_wall_ms", ideal_wall * 1e3)
                .with("x_ideal_wall", wall / ideal_wall)
        } else {
            Sample::new(self.efficiency(workers, wall, Basis::Cpu), "efficiency")
                .with(
                    "efficiency_wall",
                    self.efficiency(workers, wall, Basis::Wall),
                )
                .with("speedup", self.work(Basis::Cpu) / wall)
                .with("wall_ms", wall * 1e3)
                .with("n", n as f64)
        };
        if let Some(inside) = inside.filter(|i| i.work > 0.0) {
            sample = if skewed {
                sample.with("x_ideal_inside", wall / inside.ideal(workers))
            } else {
                sample.with("efficiency_inside", inside.efficiency(workers, wall))
            };
            sample = sample.with("inside_over_serial", inside.work / self.work(Basis::Cpu));
        }
        sample
    }
}

/// The second reference: the thread CPU time of every item, measured inside the workers of
/// the pool that ran it (procpool's worker processes, rayon's threads), in the very run
/// being judged. Same instructions, same cores, same moment: a vCPU that runs slower or
/// faster during the pool's run than during the serial batches moves this work with it,
/// so the figures it gives cannot drift away from the pool's wall time. It is blind to one
/// loss: a pool that made its items themselves slower (by disturbing their core) would
/// look as good as one that did not; the serial reference sees that.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Inside {
    /// Σ CPU time of the items, in seconds.
    pub work: f64,
    /// CPU time of the longest item, in seconds.
    pub longest: f64,
}

impl Inside {
    /// Folds the per-item CPU times (seconds).
    pub fn of(items: impl Iterator<Item = f64>) -> Self {
        items.fold(
            Self {
                work: 0.0,
                longest: 0.0,
            },
            |acc, t| Self {
                work: acc.work + t,
                longest: acc.longest.max(t),
            },
        )
    }

    /// Work ÷ (workers × wall): the share of the workers' time spent running items.
    pub fn efficiency(&self, workers: usize, wall: f64) -> f64 {
        self.work / (workers as f64 * wall)
    }

    /// Perfect balance of these items on `workers`, never below the longest one.
    pub fn ideal(&self, workers: usize) -> f64 {
        (self.work / workers as f64).max(self.longest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(loops: u64, items: usize, wall: f64, cpu: f64) -> ProbeSample {
        ProbeSample {
            loops,
            items,
            wall,
            cpu,
        }
    }

    #[test]
    fn batches_fill_a_millisecond_and_never_mix_sizes() {
        let cal = Calibration { ns_per_iter: 1.0 };
        // 1 µs items: 1000 per millisecond batch; 2,500 items → 1000, 1000, 500.
        let tiny = vec![1000_u64; 2500];
        assert_eq!(
            batches(&tiny, &cal, MIN_BATCH),
            vec![0..1000, 1000..2000, 2000..2500]
        );
        // 5 ms then 100 ms items: one item per batch, never two sizes in one.
        let mut skewed = vec![5_000_000_u64; 3];
        skewed.extend([100_000_000; 2]);
        let cut = batches(&skewed, &cal, MIN_BATCH);
        assert_eq!(cut, vec![0..1, 1..2, 2..3, 3..4, 4..5]);
        assert!(batches(&[], &cal, MIN_BATCH).is_empty());
    }

    #[test]
    fn halves_interleave_so_each_sees_every_size() {
        let (a, b) = halves(vec![0..1, 1..2, 2..3, 3..4, 4..5]);
        assert_eq!(a, vec![0..1, 2..3, 4..5]);
        assert_eq!(b, vec![1..2, 3..4]);
    }

    #[test]
    fn a_preempted_batch_moves_neither_the_median_nor_the_cpu_cost() {
        // Four 40 ms tasks; one batch lost 30 ms of wall time to another process.
        let items = vec![40; 4];
        let samples = [
            sample(40, 1, 0.040, 0.0399),
            sample(40, 1, 0.070, 0.0400),
            sample(40, 1, 0.041, 0.0401),
            sample(40, 1, 0.040, 0.0400),
        ];
        let r = Reference::new(&items, &samples).unwrap();
        assert_eq!(r.classes.len(), 1);
        assert!((r.classes[0].wall.median - 0.0405).abs() < 1e-12);
        assert_eq!(r.classes[0].wall.max, 0.070);
        assert!((r.work(Basis::Cpu) - 0.16).abs() < 1e-9);
        // The long pass (one serial loop) would have said 0.191 s: efficiencies 19% too high.
        assert!((r.pass_wall - 0.191).abs() < 1e-12);
        assert!((r.disturbed() - (1.0 - 0.16 / 0.191)).abs() < 1e-9);
        // A pool of 2 that took 82 ms: efficiency 0.16 / (2 × 0.082).
        let eff = r.efficiency(2, 0.082, Basis::Cpu);
        assert!((eff - 0.16 / 0.164).abs() < 1e-9);
        assert!(eff < 1.0);
    }

    #[test]
    fn per_item_costs_come_from_batches_of_any_size() {
        let items = vec![1_000; 3000];
        let samples = [
            sample(1_000, 1000, 0.0011, 0.0010),
            sample(1_000, 1000, 0.0010, 0.0010),
            sample(1_000, 1000, 0.0012, 0.0010),
        ];
        let r = Reference::new(&items, &samples).unwrap();
        assert!((r.work(Basis::Cpu) - 0.003).abs() < 1e-12);
        assert!((r.work(Basis::Wall) - 0.0033).abs() < 1e-12);
        let s = r.serial_sample();
        assert_eq!(s.unit, "ms");
        assert!((s.value - 3.0).abs() < 1e-9);
        assert!(s.extra.contains(&("n".to_owned(), 3000.0)));
    }

    #[test]
    fn the_ideal_makespan_comes_from_the_measured_costs() {
        // 60 × 5 ms then 4 × 100 ms on 2 workers: 700 ms of work, ideal 350 ms.
        let mut items = vec![5; 60];
        items.extend([100; 4]);
        let mut samples: Vec<ProbeSample> = (0..60).map(|_| sample(5, 1, 0.005, 0.005)).collect();
        samples.extend((0..4).map(|_| sample(100, 1, 0.100, 0.100)));
        let r = Reference::new(&items, &samples).unwrap();
        assert!((r.ideal(2, Basis::Cpu) - 0.35).abs() < 1e-9);
        // On 8 workers the longest task bounds it: 100 ms, not 87.5 ms.
        assert!((r.ideal(8, Basis::Cpu) - 0.1).abs() < 1e-9);
        let s = r.pool_sample(true, 2, 0.385, items.len(), None);
        assert_eq!(s.unit, "x ideal");
        assert!((s.value - 1.1).abs() < 1e-9);
        let s = r.pool_sample(false, 2, 0.4, items.len(), None);
        assert_eq!(s.unit, "efficiency");
        assert!((s.value - 0.875).abs() < 1e-9);
    }

    #[test]
    fn the_inside_reference_follows_the_cores_of_the_run() {
        // Serial batches said 40 ms per task; inside the pool the cores ran 10% slower.
        let items = vec![40; 4];
        let samples: Vec<ProbeSample> = (0..4).map(|_| sample(40, 1, 0.040, 0.040)).collect();
        let r = Reference::new(&items, &samples).unwrap();
        let inside = Inside::of([0.044, 0.044, 0.044, 0.044].into_iter());
        assert!((inside.work - 0.176).abs() < 1e-12);
        assert!((inside.longest - 0.044).abs() < 1e-12);
        // Two workers, 89 ms: the serial reference says 0.899, the inside one 0.989.
        let s = r.pool_sample(false, 2, 0.089, 4, Some(inside));
        assert!((s.value - 0.16 / 0.178).abs() < 1e-9);
        let extra = |key: &str| s.extra.iter().find(|(k, _)| k == key).unwrap().1;
        assert!((extra("efficiency_inside") - 0.176 / 0.178).abs() < 1e-9);
        assert!((extra("inside_over_serial") - 1.1).abs() < 1e-9);
        // skewed: the ideal is the inside work ÷ workers, or the longest item.
        let s = r.pool_sample(true, 2, 0.099, 4, Some(inside));
        assert!((extra_of(&s, "x_ideal_inside") - 0.099 / 0.088).abs() < 1e-9);
        assert!((Inside::of([0.1, 0.01].into_iter()).ideal(2) - 0.1).abs() < 1e-12);
        // No inside times (map_1us): no inside figures.
        let s = r.pool_sample(false, 2, 0.089, 4, None);
        assert!(s.extra.iter().all(|(k, _)| !k.contains("inside")));
    }

    fn extra_of(s: &Sample, key: &str) -> f64 {
        s.extra.iter().find(|(k, _)| k == key).unwrap().1
    }

    #[test]
    fn a_size_without_batches_or_time_gives_no_reference() {
        let items = vec![5, 100];
        let only_short = [sample(5, 1, 0.005, 0.005)];
        assert_eq!(
            Reference::new(&items, &only_short),
            Err(ReferenceError::Unmeasured(100))
        );
        let no_cpu = [sample(5, 1, 0.005, 0.0), sample(100, 1, 0.1, 0.1)];
        assert_eq!(
            Reference::new(&items, &no_cpu),
            Err(ReferenceError::NoTime("CPU", 5))
        );
    }

    #[test]
    fn the_thread_clock_counts_work_not_sleep() {
        let (s, ()) = ProbeSample::time(0, 1, || std::thread::sleep(Duration::from_millis(30)));
        assert!(s.wall >= 0.030, "{s:?}");
        assert!(s.cpu < s.wall / 2.0, "sleeping burns no CPU: {s:?}");
        let (s, x) = ProbeSample::time(0, 1, || crate::busy::spin(2_000_000));
        assert_eq!(x, crate::busy::spin(2_000_000));
        assert!(s.cpu > 0.0 && s.cpu <= s.wall * 1.01 + 1e-4, "{s:?}");
    }
}
