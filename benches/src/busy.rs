//! Busy CPU work calibrated to wall-clock units.
//!
//! [`spin`] runs a 64-bit linear congruential generator; the Python baseline runs the same
//! recurrence in pure Python. Each side calibrates its own loop count per unit (~1 µs, 5 ms,
//! 20 ms, 40 ms, 100 ms), so both do work of comparable *duration*. A Rust step costs about a
//! nanosecond, a Python step a hundred or more, so compare efficiencies and makespan ratios
//! across languages, never absolute speed.

use std::hint::black_box;
use std::time::{Duration, Instant};

use crate::reference::thread_cpu_time;

/// LCG multiplier (Knuth's MMIX), shared with `baselines/python_pools.py`.
pub const LCG_MUL: u64 = 6_364_136_223_846_793_005;
/// LCG increment, shared with `baselines/python_pools.py`.
pub const LCG_ADD: u64 = 1_442_695_040_888_963_407;

/// Busy CPU work: `iters` steps of a 64-bit LCG. Each step depends on the previous one and
/// passes through [`black_box`], so the compiler can neither vectorise nor skip the loop.
///
/// Never inlined: every system (the serial reference, procpool's workers, rayon's threads,
/// the calibration) then runs this one copy of the loop, at one address. Inlined, each
/// caller got its own copy with its own stack slot and code alignment, and a tight
/// loop's speed can depend on both, so "the pool runs the very same instructions as the
/// serial loop" did not quite hold. The call costs about a nanosecond per item.
#[inline(never)]
pub fn spin(iters: u64) -> u64 {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..iters {
        x = black_box(x.wrapping_mul(LCG_MUL).wrapping_add(LCG_ADD));
    }
    x
}

/// [`spin`], and the thread CPU time it took in nanoseconds: how every system times its
/// items from inside its workers (`crate::reference::Inside`).
pub fn spin_timed(iters: u64) -> (u64, u64) {
    let start = thread_cpu_time();
    let out = spin(iters);
    let cpu = thread_cpu_time().saturating_sub(start);
    (out, u64::try_from(cpu.as_nanos()).unwrap_or(u64::MAX))
}

/// The measured speed of [`spin`] on this machine, in the parent process.
#[derive(Debug, Clone, Copy)]
pub struct Calibration {
    /// Nanoseconds per LCG step (fastest of several timed runs, in thread CPU time).
    pub ns_per_iter: f64,
}

impl Calibration {
    /// Times [`spin`] a few times in thread CPU time and keeps the fastest run. CPU time does
    /// not count the time another process holds the core, so a busy machine does not make
    /// the units short; wall time is the fallback should the thread clock read nothing.
    pub fn measure() -> Self {
        let probe: u64 = 20_000_000;
        spin(probe / 10);
        let best = (0..5)
            .map(|_| {
                let wall = Instant::now();
                let cpu = thread_cpu_time();
                black_box(spin(black_box(probe)));
                let cpu = thread_cpu_time().saturating_sub(cpu);
                if cpu.is_zero() { wall.elapsed() } else { cpu }
            })
            .min()
            .unwrap_or(Duration::from_millis(20));
        Self {
            ns_per_iter: best.as_secs_f64() * 1e9 / probe as f64,
        }
    }

    /// The loop count that makes `spin` take about `unit`.
    pub fn loops(&self, unit: Duration) -> u64 {
        ((unit.as_secs_f64() * 1e9 / self.ns_per_iter).round() as u64).max(1)
    }

    /// The loop counts of the named units, for the report.
    pub fn table(&self) -> Vec<(&'static str, u64)> {
        UNITS
            .iter()
            .map(|&(name, unit)| (name, self.loops(unit)))
            .collect()
    }
}

/// The busy units the workloads use, by name.
pub const UNITS: [(&str, Duration); 5] = [
    ("1us", Duration::from_micros(1)),
    ("5ms", Duration::from_millis(5)),
    ("20ms", Duration::from_millis(20)),
    ("40ms", Duration::from_millis(40)),
    ("100ms", Duration::from_millis(100)),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spin_is_deterministic_and_depends_on_the_count() {
        assert_eq!(spin(0), 0x9E37_79B9_7F4A_7C15);
        assert_eq!(spin(1000), spin(1000));
        assert_ne!(spin(1000), spin(1001));
    }

    #[test]
    fn loops_scale_with_the_unit() {
        let cal = Calibration { ns_per_iter: 2.0 };
        assert_eq!(cal.loops(Duration::from_micros(1)), 500);
        assert_eq!(cal.loops(Duration::from_millis(5)), 2_500_000);
        assert_eq!(cal.loops(Duration::from_nanos(1)), 1);
    }
}
