//! Worker start latency: from "start a worker" to "handshake complete" (`Hello` and `Ready`
//! received), for the Spawn and ForkServer start methods, next to two baselines measured in
//! the same run: `fork()` + `_exit(0)` + `waitpid`, and `Command::new("true").status()`.
//!
//! Tear-down (Shutdown and reaping) is outside the measured time. The fork server is started
//! once, before measuring, as a pool does at build time.

#[path = "../tests/process_support/mod.rs"]
mod process_support;

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use process_support::{spawner, start, wait};
use procpool_worker::StartMethod;

fn start_latency(c: &mut Criterion) {
    let mut group = c.benchmark_group("worker_start");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    for method in [StartMethod::Spawn, StartMethod::ForkServer] {
        let spawner = spawner(method);
        spawner.start().expect("start the fork server");
        group.bench_function(format!("{}_to_ready", method.name()), |b| {
            b.iter_custom(|iters| {
                let mut measured = Duration::ZERO;
                for _ in 0..iters {
                    let began = Instant::now();
                    let (mut worker, mut driver) = start(&spawner);
                    driver.handshake(0);
                    measured += began.elapsed();
                    driver.shutdown();
                    wait(&mut worker);
                }
                measured
            });
        });
    }
    group.bench_function("baseline_fork_exit_wait", |b| {
        b.iter(|| {
            // SAFETY: the child only calls _exit, which is async-signal-safe, so forking this
            // multi-threaded process is sound.
            match unsafe { nix::unistd::fork() }.expect("fork") {
                // SAFETY: _exit has no preconditions.
                nix::unistd::ForkResult::Child => unsafe { libc::_exit(0) },
                nix::unistd::ForkResult::Parent { child } => {
                    nix::sys::wait::waitpid(child, None).expect("waitpid");
                }
            }
        });
    });
    group.bench_function("baseline_command_true", |b| {
        b.iter(|| {
            let status = std::process::Command::new("true")
                .status()
                .expect("run true");
            assert!(status.success());
        });
    });
    group.finish();
}

criterion_group!(benches, start_latency);
criterion_main!(benches);
