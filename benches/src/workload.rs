//! The workloads of issue 7 and their sizes (keep in step with `baselines/python_pools.py`).

use std::fmt;
use std::time::Duration;

/// One scenario of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Workload {
    /// Pool start → first trivial result → shutdown, in ms.
    Startup,
    /// One trivial task submit → result on a warm pool, in µs (median of many trips).
    Latency,
    /// One trivial task submit → result after the pool sat idle, in µs (median of the trips),
    /// next to the machine's own futex wake-up round trip after the same idle time.
    LatencyIdle,
    /// Many trivial `submit` calls and their results, in tasks/s.
    Submit,
    /// `add_one` over many items through an ordered map, in items/s.
    MapTiny,
    /// ~1 µs busy items through an ordered map: parallel efficiency.
    Map1us,
    /// Equal tasks of ~40 ms pure CPU: parallel efficiency (and speedup).
    CpuScaling,
    /// 60 tasks of 5 ms, then 4 of 100 ms: makespan ÷ ideal.
    Skewed,
    /// A large byte buffer to an identity task and back, in MiB/s.
    Payload,
    /// SHA-512 of every file of a generated tree, in MiB/s.
    Digest,
    /// Random-row lookups of a ~200 MB table: shared once vs passed per call (speedup).
    SharedTable,
}

impl Workload {
    /// Every workload, in report order.
    pub const ALL: [Workload; 11] = [
        Workload::Startup,
        Workload::Latency,
        Workload::LatencyIdle,
        Workload::Submit,
        Workload::MapTiny,
        Workload::Map1us,
        Workload::CpuScaling,
        Workload::Skewed,
        Workload::Payload,
        Workload::Digest,
        Workload::SharedTable,
    ];

    /// The name used on the command line, in JSON and by the Python script.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Startup => "startup",
            Workload::Latency => "latency",
            Workload::LatencyIdle => "latency_idle",
            Workload::Submit => "submit",
            Workload::MapTiny => "map_tiny",
            Workload::Map1us => "map_1us",
            Workload::CpuScaling => "cpu_scaling",
            Workload::Skewed => "skewed",
            Workload::Payload => "payload",
            Workload::Digest => "digest",
            Workload::SharedTable => "shared_table",
        }
    }

    /// Looks a workload up by [`Workload::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.name() == name)
    }

    /// One line saying what the figure is.
    pub fn measures(self) -> &'static str {
        match self {
            Workload::Startup => {
                "pool start → first trivial result → shutdown (ms, lower is better)"
            }
            Workload::Latency => {
                "one trivial task submit → result on a warm pool (µs, median trip, lower is better)"
            }
            Workload::LatencyIdle => {
                "one trivial task submit → result after 100 ms idle (µs, median trip, lower is better)"
            }
            Workload::Submit => "trivial `submit` calls and their results (tasks/s)",
            Workload::MapTiny => "`add_one` items through an ordered map (items/s)",
            Workload::Map1us => {
                "~1 µs busy items through an ordered map: serial time ÷ (workers × pool time)"
            }
            Workload::CpuScaling => "equal pure-CPU tasks: serial time ÷ (workers × pool time)",
            Workload::Skewed => {
                "60 × 5 ms then 4 × 100 ms busy tasks: makespan ÷ ideal (lower is better)"
            }
            Workload::Payload => {
                "a byte buffer to an identity task and back (MiB/s of buffer per round trip)"
            }
            Workload::Digest => "SHA-512 of every file of a generated tree (MiB/s)",
            Workload::SharedTable => {
                "random-row lookups of a table: shared once vs passed per call (x faster)"
            }
        }
    }

    /// The unit of the workload's headline figure (serial reference rows use `ms` instead).
    pub fn unit(self) -> &'static str {
        match self {
            Workload::Startup => "ms",
            Workload::Latency | Workload::LatencyIdle => "us",
            Workload::Submit => "tasks/s",
            Workload::MapTiny => "items/s",
            Workload::Map1us | Workload::CpuScaling => "efficiency",
            Workload::Skewed => "x ideal",
            Workload::Payload | Workload::Digest => "MiB/s",
            Workload::SharedTable => "x",
        }
    }

    /// Whether the Python script has the workload (`shared_table` compares procpool with
    /// itself; `latency_idle` is judged against the machine's futex round trip, issue 5).
    pub fn has_python(self) -> bool {
        !matches!(self, Workload::SharedTable | Workload::LatencyIdle)
    }

    /// Whether the workload's figure divides by the serial reference of its round (the
    /// runner then times the serial loop in batches around the pools: `crate::reference`).
    pub fn needs_serial_reference(self) -> bool {
        matches!(
            self,
            Workload::Map1us | Workload::CpuScaling | Workload::Skewed
        )
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether a smaller figure is the better one, judged by its unit.
pub fn lower_is_better(unit: &str) -> bool {
    matches!(unit, "ms" | "us" | "x ideal")
}

/// Workload sizes. `--quick` shrinks the slow ones so a whole run stays under two minutes.
#[derive(Debug, Clone)]
pub struct Params {
    /// Pool starts per round (`startup`); the round's figure is their median.
    pub starts: usize,
    /// Round trips per round (`latency`).
    pub latency_trips: usize,
    /// Round trips per round after idling (`latency_idle`), each after [`Params::idle_for`].
    pub idle_trips: usize,
    /// How long the system sits idle before each `latency_idle` trip.
    pub idle_for: Duration,
    /// Submitted tasks per round (`submit`).
    pub submit_n: usize,
    /// Items per map (`map_tiny`).
    pub map_tiny_n: u64,
    /// Items per map (`map_1us`).
    pub map_1us_n: usize,
    /// Tasks (`cpu_scaling`).
    pub cpu_tasks: usize,
    /// Duration of one task (`cpu_scaling`).
    pub cpu_unit: Duration,
    /// Short tasks, then their duration (`skewed`).
    pub skew_short: (usize, Duration),
    /// Long tasks after them, then their duration (`skewed`).
    pub skew_long: (usize, Duration),
    /// Buffer size in MiB (`payload`).
    pub payload_mib: usize,
    /// Round trips per round (`payload`); the round's figure is their median.
    pub payload_trips: usize,
    /// Files in the tree (`digest`).
    pub digest_files: usize,
    /// Total size of the tree in MiB (`digest`).
    pub digest_mib: usize,
    /// Table size in MB (`shared_table`).
    pub shared_table_mb: usize,
    /// Lookups per round (`shared_table`).
    pub shared_lookups: usize,
    /// Calls the by-argument side makes per round (`shared_table`); extrapolated to all.
    pub shared_by_argument_calls: usize,
}

impl Params {
    /// The sizes of issue 7, or the `--quick` ones.
    pub fn new(quick: bool) -> Self {
        Self {
            starts: if quick { 1 } else { 3 },
            latency_trips: 2000,
            idle_trips: if quick { 10 } else { 20 },
            idle_for: Duration::from_millis(100),
            submit_n: if quick { 20_000 } else { 100_000 },
            map_tiny_n: 1_000_000,
            map_1us_n: 200_000,
            cpu_tasks: if quick { 16 } else { 32 },
            cpu_unit: Duration::from_millis(if quick { 20 } else { 40 }),
            skew_short: (60, Duration::from_millis(5)),
            skew_long: (4, Duration::from_millis(100)),
            payload_mib: if quick { 16 } else { 64 },
            payload_trips: if quick { 2 } else { 3 },
            digest_files: if quick { 250 } else { 2000 },
            digest_mib: if quick { 32 } else { 256 },
            shared_table_mb: 200,
            shared_lookups: 10_000,
            shared_by_argument_calls: if quick { 2 } else { 4 },
        }
    }

    /// The sizes as text, for the report.
    pub fn describe(&self) -> Vec<(Workload, String)> {
        vec![
            (
                Workload::Startup,
                format!("median of {} starts per round", self.starts),
            ),
            (
                Workload::Latency,
                format!("{} trips per round", self.latency_trips),
            ),
            (
                Workload::LatencyIdle,
                format!(
                    "{} trips per round, each after {} ms idle",
                    self.idle_trips,
                    self.idle_for.as_millis()
                ),
            ),
            (Workload::Submit, format!("{} tasks", self.submit_n)),
            (Workload::MapTiny, format!("{} items", self.map_tiny_n)),
            (
                Workload::Map1us,
                format!("{} items of ~1 µs", self.map_1us_n),
            ),
            (
                Workload::CpuScaling,
                format!(
                    "{} tasks of ~{} ms",
                    self.cpu_tasks,
                    self.cpu_unit.as_millis()
                ),
            ),
            (
                Workload::Skewed,
                format!(
                    "{} × {} ms then {} × {} ms",
                    self.skew_short.0,
                    self.skew_short.1.as_millis(),
                    self.skew_long.0,
                    self.skew_long.1.as_millis()
                ),
            ),
            (
                Workload::Payload,
                format!(
                    "{} MiB, median of {} trips per round",
                    self.payload_mib, self.payload_trips
                ),
            ),
            (
                Workload::Digest,
                format!(
                    "{} files, {} MiB in all",
                    self.digest_files, self.digest_mib
                ),
            ),
            (
                Workload::SharedTable,
                format!(
                    "{} MB table, {} lookups; by argument: {} calls, extrapolated",
                    self.shared_table_mb, self.shared_lookups, self.shared_by_argument_calls
                ),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for w in Workload::ALL {
            assert_eq!(Workload::from_name(w.name()), Some(w));
        }
        assert_eq!(Workload::from_name("nope"), None);
    }

    #[test]
    fn quick_is_never_larger() {
        let (quick, full) = (Params::new(true), Params::new(false));
        assert!(quick.submit_n <= full.submit_n);
        assert!(
            quick.cpu_tasks as u128 * quick.cpu_unit.as_millis()
                <= full.cpu_tasks as u128 * full.cpu_unit.as_millis()
        );
        assert!(quick.digest_mib <= full.digest_mib);
    }
}
