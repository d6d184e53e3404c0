//! Diagnostic: per-task timeline and per-thread CPU of procpool on the busy workloads.
//!
//! `cargo run --release -p procpool-benches --example timeline -- [cpu|skewed|map1us] [rounds]`

use std::time::{Duration, Instant};

use procpool::Pool;
use procpool_benches::busy::{Calibration, spin};
use procpool_benches::reference::thread_cpu_time;

fn mono_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// Busy loop that reports (result, pid, start, end, thread cpu ns).
#[procpool::task]
fn busy_traced(iters: u64) -> (u64, u32, u64, u64, u64) {
    let start = mono_ns();
    let cpu0 = thread_cpu_time();
    let x = spin(iters);
    let cpu = thread_cpu_time().saturating_sub(cpu0).as_nanos() as u64;
    (x, std::process::id(), start, mono_ns(), cpu)
}

/// (run ns, runqueue wait ns) of every thread of `pid`.
fn schedstat(pid: u32) -> Vec<(String, u64, u64)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for entry in dir.flatten() {
        let path = entry.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(path.join("schedstat")).unwrap_or_default();
        let mut it = stat
            .split_whitespace()
            .map(|v| v.parse::<u64>().unwrap_or(0));
        let (run, wait) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
        out.push((
            format!(
                "{pid}/{}:{}",
                entry.file_name().to_string_lossy(),
                comm.trim()
            ),
            run,
            wait,
        ));
    }
    out
}

fn snapshot(pids: &[u32]) -> Vec<(String, u64, u64)> {
    let mut all = schedstat(std::process::id());
    for &pid in pids {
        all.extend(schedstat(pid));
    }
    all
}

fn main() {
    procpool::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let which = args.first().map_or("cpu", String::as_str).to_owned();
    let rounds: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(3);
    let cal = Calibration::measure();
    let items: Vec<u64> = match which.as_str() {
        "cpu" => vec![cal.loops(Duration::from_millis(40)); 32],
        "skewed" => {
            let mut v = vec![cal.loops(Duration::from_millis(5)); 60];
            v.extend([cal.loops(Duration::from_millis(100)); 4]);
            v
        }
        _ => vec![cal.loops(Duration::from_micros(1)); 200_000],
    };
    let pool = Pool::builder().workers(2).build().unwrap();
    // `build` returns once the first worker is ready: wait for both.
    while pool.stats().workers.len() < 2 {
        std::thread::sleep(Duration::from_millis(1));
    }
    for x in pool.map(procpool::builtin::add_one, 0..128u64) {
        x.unwrap();
    }
    let pids: Vec<u32> = pool.stats().workers.iter().map(|w| w.pid).collect();
    for round in 0..rounds {
        // serial reference in CPU time, per item (median of a few)
        let mut ser = Vec::new();
        for &l in items.iter().step_by((items.len() / 8).max(1)).take(8) {
            let c0 = thread_cpu_time();
            std::hint::black_box(spin(l));
            ser.push((thread_cpu_time() - c0).as_nanos() as f64 / l as f64);
        }
        ser.sort_by(f64::total_cmp);
        let ns_per_loop = ser[ser.len() / 2];
        let work: f64 = items.iter().map(|&l| l as f64 * ns_per_loop).sum::<f64>() / 1e9;
        let before = snapshot(&pids);
        let t0 = mono_ns();
        let start = Instant::now();
        // Items handed to workers and not finished, sampled every millisecond: with the next
        // item prefetched to each busy worker it reaches twice the workers' count.
        let done = std::sync::atomic::AtomicBool::new(false);
        let (out, max_in_flight): (Vec<_>, u64) = std::thread::scope(|scope| {
            let sampler = scope.spawn(|| {
                let mut most = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    most = most.max(pool.stats().in_flight);
                    std::thread::sleep(Duration::from_millis(1));
                }
                most
            });
            let out = pool
                .map(busy_traced, items.iter().copied())
                .collect::<Result<_, _>>()
                .unwrap();
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            (out, sampler.join().unwrap())
        });
        let wall = start.elapsed().as_secs_f64();
        let t_end = mono_ns();
        let after = snapshot(&pids);
        let task_cpu: f64 = out.iter().map(|o| o.4 as f64).sum::<f64>() / 1e9;
        println!(
            "== {which} round {round}: wall {:.1} ms  eff(serial cpu ref) {:.4}  eff(task cpu in pool) {:.4}  pool/serial cpu per item {:.4}",
            wall * 1e3,
            work / (2.0 * wall),
            task_cpu / (2.0 * wall),
            task_cpu / work
        );
        println!("   most items in flight at once: {max_in_flight}");
        for (name, run, wait) in &after {
            let (r0, w0) = before
                .iter()
                .find(|b| &b.0 == name)
                .map_or((0, 0), |b| (b.1, b.2));
            let (dr, dw) = (run - r0, wait - w0);
            if dr > 100_000 || dw > 100_000 {
                println!(
                    "   thread {name:<40} run {:8.2} ms  runq-wait {:8.2} ms",
                    dr as f64 / 1e6,
                    dw as f64 / 1e6
                );
            }
        }
        for &pid in &pids {
            let mut mine: Vec<_> = out.iter().filter(|o| o.1 == pid).collect();
            mine.sort_by_key(|o| o.2);
            let busy: u64 = mine.iter().map(|o| o.3 - o.2).sum();
            let cpu: u64 = mine.iter().map(|o| o.4).sum();
            let first = mine.first().map_or(0, |o| o.2 - t0);
            let last = mine.last().map_or(0, |o| t_end - o.3);
            let gaps: Vec<u64> = mine
                .windows(2)
                .map(|w| w[1].2.saturating_sub(w[0].3))
                .collect();
            let gap_sum: u64 = gaps.iter().sum();
            let gap_max = gaps.iter().copied().max().unwrap_or(0);
            println!(
                "   worker {pid}: {} tasks, task wall {:.1} ms, task cpu {:.1} ms, first start +{:.3} ms, gaps sum {:.3} ms (max {:.3}), idle at end {:.3} ms",
                mine.len(),
                busy as f64 / 1e6,
                cpu as f64 / 1e6,
                first as f64 / 1e6,
                gap_sum as f64 / 1e6,
                gap_max as f64 / 1e6,
                last as f64 / 1e6
            );
            if which == "skewed" {
                let seq: Vec<String> = mine
                    .iter()
                    .map(|o| {
                        let idx = out.iter().position(|p| std::ptr::eq(p, *o)).unwrap();
                        format!("{idx}@{:.1}", (o.2 - t0) as f64 / 1e6)
                    })
                    .collect();
                println!("     order: {}", seq.join(" "));
            }
        }
    }
    pool.shutdown();
}
