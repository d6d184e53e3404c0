//! `map-cpu [MAPS] [ITEMS] [spin|busy]`: runs MAPS ordered maps of ITEMS `add_one` items (or, with
//! `spin`, `spin_for(1)` items) on a warm 2-worker pool, collected as `Result<Vec<_>, _>` like
//! `map_tiny`, and prints the median rate, the on-CPU time of every parent thread and worker
//! process per item (`/proc/<pid>/task/<tid>/schedstat`, in nanoseconds), and their voluntary
//! context switches (parks) per map. CPU time per item is steadier than wall time on a shared
//! machine: `docs/bench/map-data-path.md` uses it to compare builds.
//!
//! With `busy`, the items are `map_1us`'s: `busy_loops` calibrated to ~1 µs of CPU. Each map
//! is paired with rayon's `par_iter` over the same items on 2 threads in this process (the
//! order alternating pair by pair), and the tool also prints the median of rayon's wall time
//! ÷ procpool's over the pairs: procpool's `map_1us` efficiency ÷ rayon's, measured seconds
//! apart on the same cores. The CPU figures count the procpool maps only.

use std::collections::BTreeMap;
use std::time::Instant;

use procpool::{Pool, builtin};
use procpool_benches::busy::{Calibration, spin};
use procpool_benches::tasks::busy_loops;
use rayon::prelude::*;

/// The thread name in a `/proc/.../stat` line.
fn comm(stat: &str) -> String {
    let open = stat.find('(').map_or(0, |pos| pos + 1);
    let close = stat.rfind(')').unwrap_or(stat.len()).max(open);
    stat[open..close].to_string()
}

/// On-CPU nanoseconds of one task (/proc/.../schedstat, first field).
fn oncpu(task: &std::path::Path) -> u64 {
    std::fs::read_to_string(task.join("schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Voluntary context switches in a `/proc/.../status` text.
fn switches(status: &str) -> u64 {
    counted(status, "voluntary_ctxt_switches")
}

/// The number on the `/proc/.../status` line that starts with `key`.
fn counted(status: &str, key: &str) -> u64 {
    status
        .lines()
        .filter(|l| l.starts_with(key))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// On-CPU nanoseconds by `process:thread name`, and parks (`~parks:` keys).
fn snapshot(pids: &[u32]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for entry in dir.flatten() {
            if let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) {
                let name = comm(&stat);
                let t = oncpu(&entry.path());
                *out.entry(format!("parent:{name}")).or_insert(0) += t;
                let sw = switches(
                    &std::fs::read_to_string(entry.path().join("status")).unwrap_or_default(),
                );
                *out.entry(format!("~parks:{name}")).or_insert(0) += sw;
            }
        }
    }
    for (i, pid) in pids.iter().enumerate() {
        if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for entry in dir.flatten() {
                if let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) {
                    let name = comm(&stat);
                    let t = oncpu(&entry.path());
                    *out.entry(format!("worker{i}:{name}")).or_insert(0) += t;
                    let status =
                        std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
                    *out.entry(format!("~parks:worker{i}:{name}")).or_insert(0) +=
                        switches(&status);
                    *out.entry(format!("~preempted:worker{i}:{name}"))
                        .or_insert(0) += counted(&status, "nonvoluntary_ctxt_switches");
                }
            }
        }
    }
    out
}

fn main() {
    procpool::init();
    let mut args = std::env::args().skip(1);
    let maps: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let n: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let mode = args.next().unwrap_or_default();
    let spin = mode == "spin";
    let busy = mode == "busy";
    let pool = Pool::builder().workers(2).build().expect("pool");
    // Warm up.
    for _ in 0..3 {
        let out: Vec<u64> = pool
            .map(builtin::add_one, 0..n)
            .collect::<Result<_, _>>()
            .expect("map");
        assert_eq!(out.len() as u64, n);
    }
    let pids: Vec<u32> = pool.stats().workers.iter().map(|w| w.pid).collect();
    if busy {
        run_busy(&pool, &pids, maps, n);
        return;
    }
    let before = snapshot(&pids);
    let mut rates = Vec::new();
    let start_all = Instant::now();
    for _ in 0..maps {
        if spin {
            let start = Instant::now();
            let out: Vec<u64> = pool
                .map(builtin::spin_for, (0..n).map(|_| 1))
                .collect::<Result<_, _>>()
                .expect("map");
            assert_eq!(out.len() as u64, n);
            rates.push(n as f64 / start.elapsed().as_secs_f64() / 1e6);
            continue;
        }
        let start = Instant::now();
        let out: Vec<u64> = pool
            .map(builtin::add_one, 0..n)
            .collect::<Result<_, _>>()
            .expect("map");
        let secs = start.elapsed().as_secs_f64();
        rates.push(n as f64 / secs / 1e6);
        if rates.len() == 1 {
            assert!(out.iter().enumerate().all(|(i, &v)| v == i as u64 + 1));
        }
    }
    let wall = start_all.elapsed().as_secs_f64();
    let after = snapshot(&pids);
    rates.sort_by(f64::total_cmp);
    let items = (maps as u64 * n) as f64;
    println!(
        "maps {maps} x {n}: median {:.1} M/s (min {:.1}, max {:.1}), wall/item {:.1} ns",
        rates[rates.len() / 2],
        rates[0],
        rates[rates.len() - 1],
        wall * 1e9 / items
    );
    let delta = after
        .iter()
        .map(|(name, t)| (name.clone(), t - before.get(name).copied().unwrap_or(0)))
        .collect();
    print_cpu(&delta, maps, items);
}

/// Prints the CPU time per item of every thread in `delta`, and parks per map.
fn print_cpu(delta: &BTreeMap<String, u64>, maps: usize, items: f64) {
    let mut total = 0.0;
    let mut parent = 0.0;
    for (name, &d) in delta {
        if name.starts_with('~') {
            println!("  {name:40} {:8.1} per map", d as f64 / maps as f64);
            continue;
        }
        let ns = d as f64 / items;
        total += ns;
        if name.starts_with("parent:") {
            parent += ns;
        }
        if d > 0 {
            println!("  {name:40} {ns:6.2} ns/item");
        }
    }
    println!("  total CPU {total:.2} ns/item (parent threads {parent:.2})");
}

/// The `busy` mode: `map_1us`'s items through procpool and rayon, pair by pair.
fn run_busy(pool: &Pool, pids: &[u32], maps: usize, n: u64) {
    let loops = Calibration::measure().loops(std::time::Duration::from_micros(1));
    let items: Vec<u64> = vec![loops; n as usize];
    let expect = spin(loops);
    let threads = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("rayon pool");
    let run_procpool = || {
        let start = Instant::now();
        let out: Vec<u64> = pool
            .map(busy_loops, items.iter().copied())
            .collect::<Result<_, _>>()
            .expect("map");
        let secs = start.elapsed().as_secs_f64();
        assert!(out.len() == items.len() && out.iter().all(|&v| v == expect));
        secs
    };
    // `MAP_CPU_NO_RAYON=1`: procpool's maps only (to profile them); the ratio is then void.
    let no_rayon = std::env::var_os("MAP_CPU_NO_RAYON").is_some();
    let run_rayon = || {
        if no_rayon {
            return f64::NAN;
        }
        let start = Instant::now();
        let out: Vec<u64> = threads.install(|| items.par_iter().map(|&l| spin(l)).collect());
        let secs = start.elapsed().as_secs_f64();
        assert!(out.len() == items.len() && out.iter().all(|&v| v == expect));
        secs
    };
    run_procpool();
    run_rayon();
    let mut delta: BTreeMap<String, u64> = BTreeMap::new();
    let mut ratios = Vec::new();
    let mut walls = Vec::new();
    for pair in 0..maps {
        let rayon_first = pair % 2 == 1;
        let rayon_secs_first = if rayon_first { run_rayon() } else { 0.0 };
        let before = snapshot(pids);
        let secs = run_procpool();
        let after = snapshot(pids);
        let rayon_secs = if rayon_first {
            rayon_secs_first
        } else {
            run_rayon()
        };
        for (name, t) in &after {
            *delta.entry(name.clone()).or_insert(0) += t - before.get(name).copied().unwrap_or(0);
        }
        ratios.push(rayon_secs / secs);
        walls.push(secs);
    }
    ratios.sort_by(f64::total_cmp);
    walls.sort_by(f64::total_cmp);
    let items_all = (maps as u64 * n) as f64;
    println!(
        "busy {maps} pairs x {n} items of {loops} loops: rayon wall / procpool wall median {:.3} \
         (quartiles {:.3}..{:.3}, min {:.3}, max {:.3}); procpool wall/item median {:.1} ns",
        ratios[ratios.len() / 2],
        ratios[ratios.len() / 4],
        ratios[ratios.len() * 3 / 4],
        ratios[0],
        ratios[ratios.len() - 1],
        walls[walls.len() / 2] * 1e9 / n as f64
    );
    print_cpu(&delta, maps, items_all);
}
