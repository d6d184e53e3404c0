//! Chaos: a long map while another thread SIGKILLs random workers. Seeded, so a failure can be
//! replayed; the kill timing still depends on the machine.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use procpool::{Pool, TaskError};
use procpool_tests::square;

use crate::util::{pool, watchdog};

/// A small deterministic generator (64-bit LCG, top bits), enough to pick victims.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

/// Kills a random worker every `every` until `stop`; returns how many it killed.
fn killer(
    pool: Arc<Pool>,
    seed: u64,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u32> {
    std::thread::spawn(move || {
        let mut rng = Lcg(seed);
        let mut kills = 0;
        // Relaxed: a stop flag; nothing else is published through it.
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(every);
            let workers = pool.stats().workers;
            if workers.is_empty() {
                continue;
            }
            let victim = workers[(rng.next() % workers.len() as u64) as usize].pid;
            let pid = nix::unistd::Pid::from_raw(i32::try_from(victim).unwrap());
            if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).is_ok() {
                kills += 1;
            }
        }
        kills
    })
}

fn run_chaos(items: u64, retries: u32, seed: u64) -> (Vec<Result<u64, TaskError>>, u32) {
    let pool = Arc::new(pool(2));
    let stop = Arc::new(AtomicBool::new(false));
    let killer = killer(
        Arc::clone(&pool),
        seed,
        Duration::from_millis(15),
        Arc::clone(&stop),
    );
    // Items slow enough (a few µs each in chunks) that kills land mid-map.
    let outcomes: Vec<_> = pool.task(square).retries(retries).map(0..items).collect();
    stop.store(true, Ordering::Relaxed);
    let kills = killer.join().unwrap();
    // The pool answers a fresh call afterwards.
    assert_eq!(pool.call(square, 12), Ok(144));
    (outcomes, kills)
}

#[test]
fn chaos_without_retries_every_item_is_correct_or_worker_died() {
    let _watchdog = watchdog("chaos_without_retries_every_item_is_correct_or_worker_died");
    let (outcomes, kills) = run_chaos(200_000, 0, 0x5eed);
    assert_eq!(outcomes.len(), 200_000);
    for (x, outcome) in outcomes.iter().enumerate() {
        match outcome {
            Ok(value) => assert_eq!(*value, (x * x) as u64),
            Err(TaskError::WorkerDied { .. }) => {}
            Err(other) => panic!("item {x}: unexpected {other:?}"),
        }
    }
    eprintln!("chaos: {kills} kills");
}

#[test]
fn chaos_with_retries_every_item_is_correct() {
    let _watchdog = watchdog("chaos_with_retries_every_item_is_correct");
    let (outcomes, kills) = run_chaos(200_000, 3, 0xc0ffee);
    assert_eq!(outcomes.len(), 200_000);
    for (x, outcome) in outcomes.iter().enumerate() {
        assert_eq!(*outcome, Ok((x * x) as u64), "item {x} after {kills} kills");
    }
}
