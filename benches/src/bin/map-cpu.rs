//! `map-cpu [MAPS] [ITEMS] [spin]`: runs MAPS ordered maps of ITEMS `add_one` items (or, with
//! `spin`, `spin_for(1)` items) on a warm 2-worker pool, collected as `Result<Vec<_>, _>` like
//! `map_tiny`, and prints the median rate, the on-CPU time of every parent thread and worker
//! process per item (`/proc/<pid>/task/<tid>/schedstat`, in nanoseconds), and their voluntary
//! context switches (parks) per map. CPU time per item is steadier than wall time on a shared
//! machine: `docs/bench/map-data-path.md` uses it to compare builds.

use std::collections::BTreeMap;
use std::time::Instant;

use procpool::{Pool, builtin};

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
    status
        .lines()
        .filter(|l| l.starts_with("voluntary_ctxt_switches"))
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
                    let sw = switches(
                        &std::fs::read_to_string(entry.path().join("status")).unwrap_or_default(),
                    );
                    *out.entry(format!("~parks:worker{i}:{name}")).or_insert(0) += sw;
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
    let spin = args.next().is_some_and(|a| a == "spin");
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
    let mut total = 0.0;
    for (name, t) in &after {
        let d = t - before.get(name).copied().unwrap_or(0);
        if name.starts_with('~') {
            println!("  {name:40} {:8.1} per map", d as f64 / maps as f64);
            continue;
        }
        let ns = d as f64 / items;
        total += ns;
        if d > 0 {
            println!("  {name:40} {ns:6.2} ns/item");
        }
    }
    println!("  total CPU {total:.2} ns/item");
}
