//! The scheduler benchmark: a discrete-event simulation of a pool (see `procpool_sched::sim`)
//! comparing chunk policies on the workloads, printed as a markdown table.
//!
//! `cargo run -p procpool-sched --release --example simulate [FILTER]`
//!
//! Each cell is makespan / ideal, where ideal is the total work (item durations plus the
//! per-item overhead) divided by the workers, or the longest item if that is larger. The
//! `bound` column is a lower bound of this cost model for any schedule: worker `i` cannot
//! start before the parent sent `i + 1` chunks and the worker woke up.

use std::num::{NonZeroU64, NonZeroUsize};
use std::time::{Duration, Instant};

use procpool_sched::sim::{self, CostModel, Scenario, SimInput, SimJob};
use procpool_sched::{ChunkPolicy, Order, SchedulerConfig, TaskKey};

fn main() {
    let filter = std::env::args().nth(1).unwrap_or_default();
    let only_adaptive = std::env::args().any(|arg| arg == "--adaptive-only");
    let model = CostModel::default();
    let policies = [
        ("Fixed(1)", ChunkPolicy::Fixed(NonZeroU64::new(1).unwrap())),
        (
            "Fixed(16)",
            ChunkPolicy::Fixed(NonZeroU64::new(16).unwrap()),
        ),
        ("PythonLike", ChunkPolicy::PythonLike),
        ("Adaptive", ChunkPolicy::default()),
    ];
    println!(
        "| workload | workers | ideal | bound | in-order | {} | Adaptive / best fixed | Adaptive chunks |",
        policies.each_ref().map(|(name, _)| *name).join(" | ")
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let started = Instant::now();
    for (name, durations) in workloads() {
        if !name.contains(&filter) {
            continue;
        }
        for workers in [2, 4, 16, 64] {
            let (ideal, bound) = ideal_and_bound(&model, &durations, workers);
            let mut cells = Vec::new();
            let mut ratios = Vec::new();
            let mut adaptive_chunks = 0;
            for (_, policy) in &policies {
                if only_adaptive && !matches!(policy, ChunkPolicy::Adaptive(_)) {
                    ratios.push(f64::INFINITY);
                    cells.push("-".into());
                    continue;
                }
                let outcome = sim::run(&scenario(policy.clone(), &model, workers, &durations))
                    .expect("simulation completes");
                let ratio = outcome.makespan.as_secs_f64() / ideal.as_secs_f64();
                ratios.push(ratio);
                cells.push(format!("{ratio:.3}"));
                adaptive_chunks = outcome.chunks;
            }
            let best_fixed = ratios[..3].iter().copied().fold(f64::INFINITY, f64::min);
            let in_order = greedy_in_order(&model, &durations, workers);
            println!(
                "| {name} | {workers} | {} | {:.3} | {:.3} | {} | {:.3} | {adaptive_chunks} |",
                fmt_duration(ideal),
                bound.as_secs_f64() / ideal.as_secs_f64(),
                in_order.as_secs_f64() / ideal.as_secs_f64(),
                cells.join(" | "),
                ratios[3] / best_fixed,
            );
        }
    }
    eprintln!("simulated in {:.1?}", started.elapsed());
}

fn workloads() -> Vec<(&'static str, Vec<Duration>)> {
    let ms = Duration::from_millis;
    let mut mixed = vec![ms(5); 60];
    mixed.extend([ms(100); 4]);
    vec![
        ("1M x 50ns", vec![Duration::from_nanos(50); 1_000_000]),
        ("64 x 40ms", vec![ms(40); 64]),
        ("60 x 5ms + 4 x 100ms", mixed),
        (
            "pareto 100k, xm 10us",
            pareto(100_000, Duration::from_micros(10), 1.5, 42),
        ),
        (
            "pareto 10k, xm 100us",
            pareto(10_000, Duration::from_micros(100), 1.5, 42),
        ),
    ]
}

/// Pareto(alpha) durations with scale `xm`, from a seeded splitmix64 stream.
fn pareto(n: usize, xm: Duration, alpha: f64, seed: u64) -> Vec<Duration> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            // Uniform in (0, 1].
            let uniform = ((z >> 11) + 1) as f64 / (1u64 << 53) as f64;
            xm.mul_f64(uniform.powf(-1.0 / alpha))
        })
        .collect()
}

fn scenario(
    policy: ChunkPolicy,
    model: &CostModel,
    workers: usize,
    durations: &[Duration],
) -> Scenario {
    Scenario {
        config: SchedulerConfig {
            policy,
            ..SchedulerConfig::default()
        },
        model: model.clone(),
        workers,
        jobs: vec![SimJob {
            task: TaskKey(0),
            submit_at: Duration::ZERO,
            durations: durations.to_vec(),
            input: SimInput {
                order: Order::Completion,
                window: None::<NonZeroUsize>,
                known_len: true,
            },
            cancel_at: None,
        }],
        deaths: vec![],
        retirements: vec![],
        respawn_after: Duration::ZERO,
        retry_started: true,
        batched_outcomes: false,
    }
}

fn ideal_and_bound(
    model: &CostModel,
    durations: &[Duration],
    workers: usize,
) -> (Duration, Duration) {
    let costs = durations.iter().map(|d| *d + model.per_item);
    let total: Duration = costs.clone().sum();
    let longest = costs.max().unwrap_or_default();
    let ideal = (total / workers as u32).max(longest);
    // Worker i starts no earlier than (i + 1) parent sends plus wake-up and its chunk overhead.
    let start =
        |i: usize| model.parent_per_chunk * (i as u32 + 1) + model.wake_up + model.worker_per_chunk;
    let first = start(0);
    let delays: Duration = (0..workers).map(start).sum();
    let bound = ((total + delays) / workers as u32).max(longest + first);
    (ideal, bound)
}

fn fmt_duration(duration: Duration) -> String {
    if duration >= Duration::from_millis(10) {
        format!("{:.0} ms", duration.as_secs_f64() * 1e3)
    } else {
        format!("{:.0} µs", duration.as_secs_f64() * 1e6)
    }
}

/// Makespan of Graham's list scheduling in input order with no overhead at all: each item
/// starts on the first worker to become free. No scheduler that starts items in input order
/// without knowing their durations can be sure to do better.
fn greedy_in_order(model: &CostModel, durations: &[Duration], workers: usize) -> Duration {
    let mut free = std::collections::BinaryHeap::new();
    free.extend((0..workers).map(|_| std::cmp::Reverse(Duration::ZERO)));
    for duration in durations {
        let std::cmp::Reverse(at) = free.pop().expect("at least one worker");
        free.push(std::cmp::Reverse(at + *duration + model.per_item));
    }
    free.into_iter()
        .map(|std::cmp::Reverse(at)| at)
        .max()
        .unwrap_or_default()
}
