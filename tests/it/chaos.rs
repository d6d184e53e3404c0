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

/// What a client of the mixed chaos run saw: one entry per task it submitted.
#[derive(Debug, Default)]
struct Seen {
    /// Tasks that ended with their result or `WorkerDied`, as they should.
    ok: u64,
    died: u64,
    /// Tasks cancelled before they started (their `cancel` returned true).
    cancelled: u64,
    /// Tasks submitted whose outcome goes to a callback instead.
    to_callbacks: u64,
    /// Tasks submitted in all.
    submitted: u64,
}

impl Seen {
    /// Files one outcome of `square(x)`; `cancel_won` says whether its `cancel` succeeded.
    fn file(&mut self, x: u64, outcome: &Result<u64, TaskError>, cancel_won: bool, how: &str) {
        match outcome {
            Err(TaskError::Cancelled) if cancel_won => self.cancelled += 1,
            _ if cancel_won => panic!("{how} {x}: cancel succeeded, yet it ended {outcome:?}"),
            Ok(value) => {
                assert_eq!(*value, x * x, "{how} {x}: wrong result");
                self.ok += 1;
            }
            Err(TaskError::WorkerDied { .. }) => self.died += 1,
            Err(other) => panic!("{how} {x}: unexpected {other:?}"),
        }
    }
}

/// Where the mixed run's callbacks put their `(x, outcome)`.
type Callbacks = Arc<std::sync::Mutex<Vec<(u64, Result<u64, TaskError>)>>>;

/// One client thread of the mixed run: `tasks` tasks, each through a way of waiting picked by
/// the generator (result, cancel, callback, `as_completed`, timed, `wait`).
fn mixed_client(pool: &Pool, seed: u64, tasks: u64, callbacks: &Callbacks) -> Seen {
    let mut rng = Lcg(seed);
    let mut seen = Seen::default();
    let mut x = seed * 1_000_000;
    let end = x + tasks;
    while x < end {
        match rng.next() % 6 {
            0 => {
                let outcome = pool.submit(square, x).result();
                seen.file(x, &outcome, false, "result");
                x += 1;
            }
            1 => {
                let handle = pool.submit(square, x);
                let won = handle.cancel();
                assert_eq!(handle.cancelled(), won, "task {x}: cancelled() disagrees");
                seen.file(x, &handle.result(), won, "cancel");
                x += 1;
            }
            2 => {
                let sink = Arc::clone(callbacks);
                pool.submit(square, x)
                    .on_done(move |outcome| sink.lock().unwrap().push((x, outcome.clone())));
                seen.to_callbacks += 1;
                x += 1;
            }
            3 => {
                let first = x;
                let handles: Vec<_> = (0..8).map(|k| pool.submit(square, first + k)).collect();
                let mut got = [false; 8];
                for (idx, outcome) in procpool::as_completed(handles) {
                    assert!(!got[idx], "as_completed yielded {idx} twice");
                    got[idx] = true;
                    seen.file(first + idx as u64, &outcome, false, "as_completed");
                }
                assert!(got.iter().all(|&g| g), "as_completed missed a handle");
                x += 8;
            }
            4 => {
                let outcome = pool
                    .task(square)
                    .timeout(Duration::from_secs(60))
                    .submit(x)
                    .result();
                seen.file(x, &outcome, false, "timed");
                x += 1;
            }
            _ => {
                let first = x;
                let handles: Vec<_> = (0..4).map(|k| pool.submit(square, first + k)).collect();
                let (done, pending) = procpool::wait(&handles, procpool::Wait::AllCompleted, None);
                assert_eq!((done.len(), pending.len()), (4, 0), "wait(AllCompleted)");
                for (k, handle) in handles.into_iter().enumerate() {
                    seen.file(first + k as u64, &handle.result(), false, "wait");
                }
                x += 4;
            }
        }
    }
    seen.submitted = x - seed * 1_000_000;
    seen
}

/// Every way of using a pool at once — submitters waiting in all the ways there are, an ordered
/// and an unordered map, blocking calls — while workers are SIGKILLed and recycled: every task
/// ends in exactly one outcome, its result or `WorkerDied` (or `Cancelled` exactly when its
/// `cancel` succeeded), every callback runs once, and nothing hangs.
#[test]
fn chaos_mixed_clients_every_task_ends_in_exactly_one_outcome() {
    let _watchdog = watchdog("chaos_mixed_clients_every_task_ends_in_exactly_one_outcome");
    let pool = Arc::new(
        crate::util::builder(2)
            .max_tasks_per_child(4_999)
            .build()
            .expect("the test pool starts"),
    );
    crate::util::wait_started(&pool, 2);
    let stop = Arc::new(AtomicBool::new(false));
    let killer = killer(
        Arc::clone(&pool),
        0xdead,
        Duration::from_millis(25),
        Arc::clone(&stop),
    );
    let callbacks = Arc::new(std::sync::Mutex::new(Vec::new()));
    const CLIENT_TASKS: u64 = 4_000;
    const MAP_ITEMS: u64 = 100_000;
    let (clients, map_seen, calls_seen) = std::thread::scope(|scope| {
        let clients: Vec<_> = (1..=3)
            .map(|seed| {
                let (pool, callbacks) = (&pool, &callbacks);
                scope.spawn(move || mixed_client(pool, seed, CLIENT_TASKS, callbacks))
            })
            .collect();
        let mapper = scope.spawn(|| {
            let mut seen = Seen::default();
            for (x, outcome) in (0..MAP_ITEMS).zip(pool.map(square, 0..MAP_ITEMS)) {
                seen.file(x, &outcome, false, "map");
            }
            let mut got = vec![false; MAP_ITEMS as usize];
            for (idx, outcome) in pool.map_unordered(square, 0..MAP_ITEMS) {
                assert!(!got[idx], "map_unordered yielded {idx} twice");
                got[idx] = true;
                seen.file(idx as u64, &outcome, false, "map_unordered");
            }
            assert!(got.iter().all(|&g| g), "map_unordered missed an item");
            seen
        });
        let caller = scope.spawn(|| {
            let mut seen = Seen::default();
            for x in 0..3_000 {
                seen.file(x, &pool.call(square, x), false, "call");
            }
            seen
        });
        let clients: Vec<Seen> = clients.into_iter().map(|c| c.join().unwrap()).collect();
        (clients, mapper.join().unwrap(), caller.join().unwrap())
    });
    stop.store(true, Ordering::Relaxed);
    let kills = killer.join().unwrap();
    assert_eq!(pool.call(square, 12), Ok(144), "the pool still answers");
    // Shutdown waits for accepted work, so every callback has run by then.
    Arc::try_unwrap(pool)
        .expect("the killer let go of the pool")
        .shutdown();
    let mut callbacks = std::mem::take(&mut *callbacks.lock().unwrap());
    callbacks.sort_by_key(|(x, _)| *x);
    for pair in callbacks.windows(2) {
        assert_ne!(pair[0].0, pair[1].0, "a callback ran twice");
    }
    let mut callback_seen = Seen::default();
    for (seed, client) in (1..).zip(&clients) {
        // Client `seed` numbers its tasks from `seed * 1e6` (a group may end past
        // `CLIENT_TASKS`): exactly one outcome per task it submitted.
        let mine = callbacks
            .iter()
            .filter(|(x, _)| x / 1_000_000 == seed)
            .count() as u64;
        assert_eq!(
            mine, client.to_callbacks,
            "client {seed}: callbacks that ran"
        );
        let waited = client.ok + client.died + client.cancelled;
        assert_eq!(waited + mine, client.submitted, "client {seed}: outcomes");
        assert!(client.submitted >= CLIENT_TASKS);
    }
    for (x, outcome) in &callbacks {
        callback_seen.file(*x, outcome, false, "callback");
    }
    assert_eq!(map_seen.ok + map_seen.died, 2 * MAP_ITEMS);
    assert_eq!(calls_seen.ok + calls_seen.died, 3_000);
    eprintln!(
        "mixed chaos: {kills} kills; clients {clients:?}; callbacks {callback_seen:?}; map {map_seen:?}; calls {calls_seen:?}"
    );
}
