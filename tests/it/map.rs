//! `map` and `map_unordered` over real worker processes.

use std::num::NonZeroUsize;

use procpool::TaskError;
use std::time::Duration;

use procpool_tests::{even_only, nap, sleep_then_pid, square};

use crate::util::{pool, watchdog};

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
