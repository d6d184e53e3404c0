//! Diagnostic: start to first result (with its phases), warm round trips, and round trips
//! after 100 ms idle next to the machine's own wake-up round trips after the same sleep: a bare
//! two-process pipe ping-pong, and the futex pair of the runner's `latency_idle` row, placed by
//! the kernel and pinned apart. Figures in `docs/bench/startup-and-latency.md`.
//!
//! `cargo run --release -p procpool-benches --example latency_probe -- MODE [N] [MIB]`, MODE one
//! of `startup` (N pools: build, `call(add_one, 1)`, shutdown), `startup-big` (the same from a
//! parent holding MIB MiB, without and with a memory limit: a limit used to mean fork+exec, now
//! both take the same vfork-style start), `warm` (N calls), `submit` (N
//! `submit(..).result()`; both pinned with `PROBE_PIN=split` or `same`, see `pin`), `idle` (N calls
//! and N of each ping-pong, each after 100 ms of sleep).
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sched::CpuSet;
use nix::unistd::Pid;
use procpool::{Pool, builtin};
use procpool_benches::systems::{Backend, FutexPair};

/// The `p` quantile of `v` (sorts it).
fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p) as usize]
}

/// `PROBE_PIN=split`: this process on vCPU 0, every thread of both workers on vCPU 1;
/// `PROBE_PIN=same`: everything on vCPU 0. Otherwise the kernel places the threads.
fn pin(pool: &Pool) {
    use nix::sched::sched_setaffinity;
    let Ok(mode) = std::env::var("PROBE_PIN") else {
        return;
    };
    let set = |cpu: usize| {
        let mut set = CpuSet::new();
        set.set(cpu).unwrap();
        set
    };
    let worker_cpu = if mode == "split" { 1 } else { 0 };
    // Every thread of this process (the reader threads too).
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let tid: i32 = task.file_name().to_string_lossy().parse().unwrap();
        sched_setaffinity(Pid::from_raw(tid), &set(0)).unwrap();
    }
    while pool.stats().workers.len() < 2 {
        std::thread::sleep(Duration::from_millis(1));
    }
    for worker in pool.stats().workers {
        for task in std::fs::read_dir(format!("/proc/{}/task", worker.pid))
            .unwrap()
            .flatten()
        {
            let tid: i32 = task.file_name().to_string_lossy().parse().unwrap();
            sched_setaffinity(Pid::from_raw(tid), &set(worker_cpu)).unwrap();
        }
    }
}

fn main() {
    procpool::init();
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("pong") {
        let mut b = [0u8; 1];
        let mut i = std::io::stdin().lock();
        let mut o = std::io::stdout().lock();
        while i.read_exact(&mut b).is_ok() {
            o.write_all(&b).unwrap();
            o.flush().unwrap();
        }
        return;
    }
    let mode = args.get(1).cloned().unwrap_or_else(|| "startup".into());
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20);
    match mode.as_str() {
        "startup" => {
            let (mut b, mut c, mut s, mut t) = (vec![], vec![], vec![], vec![]);
            for _ in 0..n {
                let t0 = Instant::now();
                let mut builder = Pool::builder().workers(2);
                // Another worker program (one with at least this program's tasks).
                if let Some(program) = std::env::var_os("PROBE_PROGRAM") {
                    builder = builder.program(program);
                }
                let pool = builder.build().unwrap();
                let t1 = Instant::now();
                assert_eq!(pool.call(builtin::add_one, 1).unwrap(), 2);
                let t2 = Instant::now();
                pool.shutdown();
                drop(pool);
                let t3 = Instant::now();
                b.push((t1 - t0).as_secs_f64() * 1e3);
                c.push((t2 - t1).as_secs_f64() * 1e3);
                s.push((t3 - t2).as_secs_f64() * 1e3);
                t.push((t3 - t0).as_secs_f64() * 1e3);
            }
            println!(
                "startup ms p50: build {:.2} call {:.2} shutdown {:.2} total {:.2} (min {:.2})",
                pct(&mut b, 0.5),
                pct(&mut c, 0.5),
                pct(&mut s, 0.5),
                pct(&mut t, 0.5),
                pct(&mut t, 0.0)
            );
        }
        "startup-big" => {
            let mb: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(300);
            let heap = vec![1u8; mb << 20];
            for round in 0..4 {
                for fork in [false, true] {
                    let mut t = vec![];
                    for _ in 0..n {
                        let t0 = Instant::now();
                        let mut b = Pool::builder().workers(2);
                        if fork {
                            b = b.memory_limit(1 << 40);
                        }
                        let pool = b.build().unwrap();
                        assert_eq!(pool.call(builtin::add_one, 1).unwrap(), 2);
                        pool.shutdown();
                        drop(pool);
                        t.push(t0.elapsed().as_secs_f64() * 1e3);
                    }
                    println!(
                        "round {round} parent heap {mb} MiB, {}: start to first result and shutdown p50 {:.2} ms (min {:.2})",
                        if fork {
                            "memory_limit set"
                        } else {
                            "no memory limit"
                        },
                        pct(&mut t, 0.5),
                        pct(&mut t, 0.0)
                    );
                }
            }
            assert_eq!(heap[12345], 1);
        }
        "warm" | "submit" => {
            let pool = Pool::builder().workers(2).build().unwrap();
            for i in 0..1000 {
                pool.call(builtin::add_one, i).unwrap();
            }
            pin(&pool);
            for i in 0..1000 {
                pool.call(builtin::add_one, i).unwrap();
            }
            let mut v = Vec::with_capacity(n);
            for i in 0..n as u64 {
                let t0 = Instant::now();
                if mode == "warm" {
                    pool.call(builtin::add_one, i).unwrap();
                } else {
                    pool.submit(builtin::add_one, i).result().unwrap();
                }
                v.push(t0.elapsed().as_secs_f64() * 1e6);
            }
            println!(
                "{mode} µs p10 {:.2} p50 {:.2} p90 {:.2}",
                pct(&mut v, 0.1),
                pct(&mut v, 0.5),
                pct(&mut v, 0.9)
            );
        }
        "idle" => {
            let pool = Pool::builder().workers(2).build().unwrap();
            for i in 0..1000 {
                pool.call(builtin::add_one, i).unwrap();
            }
            let mut child = Command::new(&args[0])
                .arg("pong")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut cin = child.stdin.take().unwrap();
            let mut cout = child.stdout.take().unwrap();
            let mut b = [7u8; 1];
            for _ in 0..100 {
                cin.write_all(&b).unwrap();
                cout.read_exact(&mut b).unwrap();
            }
            // The futex pair as the runner's `latency_idle` row has it (the kernel places both
            // threads), and pinned apart: this thread on vCPU 0 during its trips, the peer on 1.
            let mut placed = FutexPair::default();
            let mut apart = FutexPair::with_peer_on(1);
            for i in 0..100 {
                placed.round_trip(i).unwrap();
                apart.round_trip(i).unwrap();
            }
            let everywhere = nix::sched::sched_getaffinity(Pid::from_raw(0)).unwrap();
            let mut cpu0 = CpuSet::new();
            cpu0.set(0).unwrap();
            let idle = || std::thread::sleep(Duration::from_millis(100));
            let micros = |t0: Instant| t0.elapsed().as_secs_f64() * 1e6;
            let (mut p, mut q, mut f, mut g) = (vec![], vec![], vec![], vec![]);
            for i in 0..n as u64 {
                idle();
                let t0 = Instant::now();
                pool.call(builtin::add_one, i).unwrap();
                p.push(micros(t0));
                idle();
                let t0 = Instant::now();
                cin.write_all(&b).unwrap();
                cout.read_exact(&mut b).unwrap();
                q.push(micros(t0));
                idle();
                let t0 = Instant::now();
                assert_eq!(placed.round_trip(i).unwrap(), i + 1);
                f.push(micros(t0));
                nix::sched::sched_setaffinity(Pid::from_raw(0), &cpu0).unwrap();
                idle();
                let t0 = Instant::now();
                assert_eq!(apart.round_trip(i).unwrap(), i + 1);
                g.push(micros(t0));
                nix::sched::sched_setaffinity(Pid::from_raw(0), &everywhere).unwrap();
            }
            drop(cin);
            let _ = child.wait();
            let (pp, qq, ff, gg) = (
                pct(&mut p, 0.5),
                pct(&mut q, 0.5),
                pct(&mut f, 0.5),
                pct(&mut g, 0.5),
            );
            println!(
                "idle µs p50: call {pp:.1} (p10 {:.1}) pipe-pingpong {qq:.1} (p10 {:.1}) \
                 futex-pair {ff:.1} (p10 {:.1}) futex-pair-apart {gg:.1} (p10 {:.1}); \
                 call ÷ pipe {:.2}, ÷ futex pair {:.2}, ÷ futex pair apart {:.2}",
                pct(&mut p, 0.1),
                pct(&mut q, 0.1),
                pct(&mut f, 0.1),
                pct(&mut g, 0.1),
                pp / qq,
                pp / ff,
                pp / gg
            );
        }
        _ => panic!("mode"),
    }
}
