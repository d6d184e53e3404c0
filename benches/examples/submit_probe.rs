//! Diagnostic: the `submit` row (N trivial `submit` calls, then their results, 2 workers) with
//! where its time goes: wall time of the submit phase and of the result phase, and per thread of
//! the parent and of every worker the CPU time (`/proc/*/task/*/schedstat`) and the voluntary and
//! involuntary context switches it took. Figures in `docs/bench/submit.md`.
//!
//! `cargo run --release -p procpool-benches --example submit_probe -- [N] [ROUNDS] [IDLE_MS]`
//! (default 100,000 tasks, 5 rounds, no idle time before each round). Built at two commits and run alternately, it shows which
//! thread spends the difference.
use std::collections::BTreeMap;
use std::time::Instant;

use procpool::{Pool, builtin};

/// Per thread: (process label, thread name) → (CPU ns, voluntary, involuntary switches).
type Snapshot = BTreeMap<(String, u32), (String, u64, u64, u64)>;

fn snapshot(procs: &[(String, u32)]) -> Snapshot {
    let mut out = Snapshot::new();
    for (label, pid) in procs {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for entry in dir.flatten() {
            let path = entry.path();
            let Some(tid) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            let cpu = std::fs::read_to_string(path.join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
                .unwrap_or(0);
            let status = std::fs::read_to_string(path.join("status")).unwrap_or_default();
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0)
            };
            out.insert(
                (label.clone(), tid),
                (
                    comm.trim().to_string(),
                    cpu,
                    field("voluntary_ctxt_switches:"),
                    field("nonvoluntary_ctxt_switches:"),
                ),
            );
        }
    }
    out
}

/// Sums the change per (process label, thread name).
fn delta(before: &Snapshot, after: &Snapshot) -> BTreeMap<(String, String), (u64, u64, u64)> {
    let mut out: BTreeMap<(String, String), (u64, u64, u64)> = BTreeMap::new();
    for (key, (comm, cpu, v, nv)) in after {
        let (c0, v0, nv0) = before
            .get(key)
            .map(|(_, c, v, nv)| (*c, *v, *nv))
            .unwrap_or((0, 0, 0));
        let e = out.entry((key.0.clone(), comm.clone())).or_default();
        e.0 += cpu.saturating_sub(c0);
        e.1 += v.saturating_sub(v0);
        e.2 += nv.saturating_sub(nv0);
    }
    out
}

fn main() {
    procpool::init();
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let rounds: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    // Idle time before each round (the runner's rounds follow seconds of other systems).
    let idle_ms: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(0);
    let pool = Pool::builder().workers(2).build().unwrap();
    for outcome in pool.map(builtin::add_one, 0..128_u64) {
        outcome.unwrap();
    }
    // Let the second worker join (build returns at the first).
    for _ in 0..200 {
        if pool.stats().workers.len() == 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let mut procs = vec![("parent".to_string(), std::process::id())];
    for (i, w) in pool.stats().workers.iter().enumerate() {
        procs.push((format!("worker{i}"), w.pid));
    }
    for round in 0..rounds {
        std::thread::sleep(std::time::Duration::from_millis(idle_ms));
        let before = snapshot(&procs);
        let t0 = Instant::now();
        let handles: Vec<_> = (0..n).map(|i| pool.submit(builtin::add_one, i)).collect();
        let t1 = Instant::now();
        let mut sum = 0_u64;
        for handle in handles {
            sum += handle.result().unwrap();
        }
        let t2 = Instant::now();
        let after = snapshot(&procs);
        assert_eq!(sum, n * (n + 1) / 2);
        let total = (t2 - t0).as_secs_f64();
        println!(
            "round {round}: {:.0} k tasks/s, wall {:.1} ms (submit {:.1} ms, results {:.1} ms)",
            n as f64 / total / 1e3,
            total * 1e3,
            (t1 - t0).as_secs_f64() * 1e3,
            (t2 - t1).as_secs_f64() * 1e3
        );
        let mut cpu_sum = 0;
        for ((label, comm), (cpu, v, nv)) in delta(&before, &after) {
            if cpu == 0 && v == 0 && nv == 0 {
                continue;
            }
            cpu_sum += cpu;
            println!(
                "  {label:<8} {comm:<18} cpu {:>7.1} ms  vol {v:>6}  invol {nv:>6}",
                cpu as f64 / 1e6
            );
        }
        println!("  cpu total {:.1} ms", cpu_sum as f64 / 1e6);
    }
}
