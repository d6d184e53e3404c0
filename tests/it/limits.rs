//! `PoolBuilder::max_item_size`: an item whose arguments or result exceed it ends with
//! `TooLarge`; nothing else is affected.

use procpool::TaskError;
use procpool_tests::{bytes_of_len, len_of, square};

use crate::util::{builder, watchdog};

const LIMIT: usize = 1024;

fn assert_too_large(
    outcome: &Result<impl std::fmt::Debug, TaskError>,
    what: &str,
    at_least: usize,
) {
    match outcome {
        Err(TaskError::TooLarge {
            what: got,
            size,
            limit,
        }) => {
            assert_eq!(*got, what);
            assert_eq!(*limit, LIMIT);
            assert!(*size >= at_least, "{what}: size {size} < {at_least}");
        }
        other => panic!("expected TooLarge for {what}, got {other:?}"),
    }
}

/// Results over the limit are not sent: the worker reports `TooLarge` for exactly those items,
/// in a chunk of several items (so the others of the chunk are sent), and the worker lives on.
#[test]
fn results_over_the_item_limit_end_with_too_large_and_nothing_else() {
    let _watchdog = watchdog("results_over_the_item_limit_end_with_too_large_and_nothing_else");
    let pool = builder(1)
        .max_item_size(LIMIT)
        .chunksize(8)
        .build()
        .unwrap();
    let pid = pool.stats().workers[0].pid;
    let lens = [10u64, 5_000, 20, 900, 100_000, 30, 2_000, 40];
    let outcomes: Vec<_> = pool.map(bytes_of_len, lens).collect();
    for (len, outcome) in lens.iter().zip(&outcomes) {
        // 900 bytes plus the archive's few bytes of framing stay under 1,024.
        if *len <= 900 {
            let bytes = outcome.as_ref().expect("a result under the limit");
            assert_eq!(bytes.len() as u64, *len);
            assert!(bytes.iter().all(|&b| u64::from(b) == len % 251));
        } else {
            assert_too_large(outcome, "the result", usize::try_from(*len).unwrap());
        }
    }
    assert_too_large(&pool.call(bytes_of_len, 4_096), "the result", 4_096);
    assert_eq!(pool.call(bytes_of_len, 3).map(|b| b.len()), Ok(3));
    let stats = pool.stats();
    assert_eq!(stats.deaths, 0, "the worker was not lost");
    assert_eq!(stats.workers[0].pid, pid);
}

/// Arguments over the limit are not sent: those items end with `TooLarge`, the others of the
/// same map (and the same chunk, had it been sent whole) run and succeed.
#[test]
fn arguments_over_the_item_limit_end_with_too_large_and_nothing_else() {
    let _watchdog = watchdog("arguments_over_the_item_limit_end_with_too_large_and_nothing_else");
    let pool = builder(2)
        .max_item_size(LIMIT)
        .chunksize(8)
        .build()
        .unwrap();
    let lens = [10usize, 5_000, 20, 900, 100_000, 30, 2_000, 40, 0, 7];
    let outcomes: Vec<_> = pool
        .map(len_of, lens.iter().map(|&len| vec![1u8; len]))
        .collect();
    for (len, outcome) in lens.iter().zip(&outcomes) {
        if *len <= 900 {
            assert_eq!(*outcome, Ok(*len as u64));
        } else {
            assert_too_large(outcome, "the arguments", *len);
        }
    }
    assert_too_large(
        &pool.call(len_of, vec![0u8; 50_000]),
        "the arguments",
        50_000,
    );
    assert_eq!(pool.call(len_of, vec![0u8; 500]), Ok(500));
    assert_eq!(pool.call(square, 11), Ok(121));
    assert_eq!(pool.stats().deaths, 0);
}

/// Without a limit, large arguments and results go through.
#[test]
fn without_a_limit_large_items_go_through() {
    let _watchdog = watchdog("without_a_limit_large_items_go_through");
    let pool = builder(1).build().unwrap();
    assert_eq!(pool.call(len_of, vec![0u8; 100_000]), Ok(100_000));
    assert_eq!(
        pool.call(bytes_of_len, 100_000).map(|b| b.len()),
        Ok(100_000)
    );
}
