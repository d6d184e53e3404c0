//! `map` and `map_unordered` over real worker processes.

use std::num::NonZeroUsize;

use procpool::TaskError;
use std::time::Duration;

use procpool_tests::{even_only, nap, sleep_then_pid, square};

use crate::util::{pool, signal, watchdog};

#[test]
fn ordered_map_of_100k_items_equals_serial() {
    let _watchdog = watchdog("ordered_map_of_100k_items_equals_serial");
    let pool = pool(2);
    let got: Vec<u64> = pool
        .map(square, 0..100_000u64)
        .collect::<Result<_, _>>()
        .expect("no item fails");
    let want: Vec<u64> = (0..100_000u64).map(|x| x * x).collect();
    assert_eq!(got, want);
}

#[test]
fn map_over_endless_iterator_with_take_stays_bounded() {
    let _watchdog = watchdog("map_over_endless_iterator_with_take_stays_bounded");
    let pool = pool(2);
    let window = 4_096;
    let mut map = pool
        .map(square, 0u64..)
        .window(NonZeroUsize::new(window).unwrap());
    let mut max_outstanding = 0;
    for expected in 0..50_000u64 {
        assert_eq!(map.next(), Some(Ok(expected * expected)));
        if expected % 1_000 == 0 {
            let stats = pool.stats();
            max_outstanding = max_outstanding.max(stats.queued + stats.in_flight);
        }
    }
    drop(map);
    assert!(
        max_outstanding <= window as u64,
        "{max_outstanding} items outstanding with a window of {window}"
    );
    assert_eq!(
        pool.call(square, 4),
        Ok(16),
        "the pool works after dropping an endless map"
    );
}

#[test]
fn unordered_map_yields_every_index_once() {
    let _watchdog = watchdog("unordered_map_yields_every_index_once");
    let pool = pool(2);
    let mut seen = vec![false; 20_000];
    for (index, outcome) in pool.map_unordered(square, 0..20_000u64) {
        assert_eq!(outcome, Ok((index * index) as u64));
        assert!(!seen[index], "index {index} yielded twice");
        seen[index] = true;
    }
    assert!(seen.iter().all(|&s| s));
}

#[test]
fn map_failures_stay_with_their_items() {
    let _watchdog = watchdog("map_failures_stay_with_their_items");
    let pool = pool(2);
    for (x, outcome) in pool.map(even_only, 0..1_000u64).enumerate() {
        let x = x as u64;
        if x % 2 == 0 {
            assert_eq!(outcome, Ok(x));
        } else {
            assert_eq!(outcome, Err(TaskError::Failed(format!("{x} is odd"))));
        }
    }
}

#[test]
fn map_next_timeout_leaves_the_map_usable() {
    let _watchdog = watchdog("map_next_timeout_leaves_the_map_usable");
    let pool = pool(1);
    let mut map = pool.map(nap, vec![500, 1]);
    assert_eq!(
        map.next_timeout(Duration::from_millis(10)),
        Err(procpool::Timeout)
    );
    assert_eq!(map.next_timeout(Duration::from_secs(60)), Ok(Some(Ok(500))));
    assert_eq!(map.next(), Some(Ok(1)));
    assert_eq!(map.next(), None);
}

#[test]
fn idle_worker_takes_over_the_tail_of_a_long_chunk() {
    let _watchdog = watchdog("idle_worker_takes_over_the_tail_of_a_long_chunk");
    // Chunks of 8: one worker gets items 0..8, the other 8..12 and is idle long before the
    // first has finished; the scheduler then asks the first to yield its unstarted items.
    let pool = pool(2);
    let pids: Vec<u32> = pool
        .map(sleep_then_pid, std::iter::repeat_n(50, 12))
        .chunksize(NonZeroUsize::new(8).unwrap())
        .collect::<Result<_, _>>()
        .unwrap();
    let first_chunk: std::collections::HashSet<u32> = pids[..8].iter().copied().collect();
    assert_eq!(
        first_chunk.len(),
        2,
        "the first chunk's tail ran on the other worker: {pids:?}"
    );
}

#[test]
fn a_map_whose_consumer_pauses_between_items_completes_in_order_and_the_workers_go_on() {
    let _watchdog = watchdog(
        "a_map_whose_consumer_pauses_between_items_completes_in_order_and_the_workers_go_on",
    );
    // Whoever reads the outcome rings while the consumer is away (the reader threads; in the
    // variant tried in session 6, the consumer itself until a reader took its seat), the
    // workers go on with the rest of the map while the consumer does not call `next`.
    let pool = pool(2);
    let n = 600u64;
    let mut map = pool.map(nap, std::iter::repeat_n(1, n as usize));
    for _ in 0..100 {
        assert_eq!(map.next(), Some(Ok(1)));
    }
    std::thread::sleep(Duration::from_secs(1));
    let done = pool.stats().tasks_done;
    assert!(
        done >= 100 + 40,
        "only {done} of {n} items ran while the consumer paused for a second"
    );
    // Pauses from 0 to 1.8 ms every 50 items.
    let mut got = 100;
    for (i, outcome) in map.enumerate() {
        assert_eq!(outcome, Ok(1), "item {}", 100 + i);
        got += 1;
        if i % 50 == 0 {
            std::thread::sleep(Duration::from_micros(200 * ((i as u64 / 50) % 30)));
        }
    }
    assert_eq!(got, n);
    // The same with an unordered map and many short items.
    let mut seen = vec![false; 100_000];
    for (k, (index, outcome)) in pool.map_unordered(square, 0..100_000u64).enumerate() {
        assert_eq!(outcome, Ok((index * index) as u64));
        assert!(!seen[index], "index {index} yielded twice");
        seen[index] = true;
        if k % 20_000 == 19_999 {
            std::thread::sleep(Duration::from_millis(30));
        }
    }
    assert!(seen.iter().all(|&s| s));
}

#[test]
fn a_map_shares_the_pool_with_concurrent_calls_and_submits() {
    let _watchdog = watchdog("a_map_shares_the_pool_with_concurrent_calls_and_submits");
    let pool = pool(2);
    std::thread::scope(|scope| {
        let caller = scope.spawn(|| {
            for x in 0..300u64 {
                assert_eq!(pool.call(square, x), Ok(x * x));
            }
        });
        let submitter = scope.spawn(|| {
            for round in 0..30u64 {
                let handles: Vec<_> = (0..10)
                    .map(|x| pool.submit(square, round * 10 + x))
                    .collect();
                for (x, handle) in handles.into_iter().enumerate() {
                    let x = round * 10 + x as u64;
                    assert_eq!(handle.result(), Ok(x * x));
                }
            }
        });
        let napper = scope.spawn(|| {
            // Calls that wait longer than a map's outcomes come apart.
            for _ in 0..20 {
                assert_eq!(pool.call(nap, 3), Ok(3));
            }
        });
        for round in 0..5u64 {
            let got: Vec<u64> = pool
                .map(square, 0..50_000u64)
                .collect::<Result<_, _>>()
                .expect("no item fails");
            assert!(
                got.iter()
                    .enumerate()
                    .all(|(x, y)| *y == (x as u64) * (x as u64)),
                "round {round}"
            );
        }
        caller.join().unwrap();
        submitter.join().unwrap();
        napper.join().unwrap();
    });
    // Two maps iterated in turns on one thread.
    let mut a = pool.map(square, 0..20_000u64);
    let mut b = pool.map(nap, std::iter::repeat_n(1, 200));
    for x in 0..20_000u64 {
        assert_eq!(a.next(), Some(Ok(x * x)));
        if x % 100 == 0 {
            assert_eq!(b.next(), Some(Ok(1)));
        }
    }
    assert_eq!(a.next(), None);
    drop(b);
    assert_eq!(pool.call(square, 3), Ok(9));
}

#[test]
fn a_worker_killed_while_the_consumer_waits_fails_its_items_and_the_rest_completes() {
    let _watchdog =
        watchdog("a_worker_killed_while_the_consumer_waits_fails_its_items_and_the_rest_completes");
    let pool = pool(2);
    let victim = pool.stats().workers[0].pid;
    let n = 400;
    let mut outcomes = Vec::new();
    let mut map = pool.map(nap, std::iter::repeat_n(2, n));
    for i in 0..n {
        if i == 50 {
            // The consumer blocks for the next outcome right after.
            signal(victim, nix::sys::signal::Signal::SIGKILL);
        }
        outcomes.push(map.next().expect("one outcome per item"));
    }
    assert_eq!(map.next(), None);
    let died = outcomes
        .iter()
        .filter(|outcome| matches!(outcome, Err(TaskError::WorkerDied { .. })))
        .count();
    // The item it was running fails (none, if the kill fell between two items: the ones it
    // had not started run elsewhere); so may a few that finished in its last unflushed batch.
    assert!(died <= 8, "{died} items failed for one death");
    for (i, outcome) in outcomes.iter().enumerate() {
        match outcome {
            Ok(2) => {}
            Err(TaskError::WorkerDied { pid, .. }) => assert_eq!(*pid, victim, "item {i}"),
            other => panic!("item {i}: {other:?}"),
        }
    }
    let stats = pool.stats();
    assert_eq!(stats.deaths, 1);
    assert_eq!(pool.call(square, 7), Ok(49));
}
