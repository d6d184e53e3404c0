//! Failures inside workers: panics, errors, crashes, kills and timeouts.

use std::time::Duration;

use nix::sys::signal::Signal;
use procpool::{TaskError, WorkerExit, builtin};
use procpool_tests::{abort_on, mark_then_sleep, nap, panics, sleep_then_pid, square};

use crate::util::{pool, signal, wait_marker, wait_running, watchdog};

#[test]
fn panicking_task_is_reported_and_the_pool_goes_on() {
    let _watchdog = watchdog("panicking_task_is_reported_and_the_pool_goes_on");
    let pool = pool(1);
    let pid_before = pool.stats().workers[0].pid;
    match pool.call(panics, 7) {
        Err(TaskError::Panicked { message, location }) => {
            assert!(message.contains("task 7 panics on purpose"), "{message}");
            assert!(location.is_some_and(|l| l.contains("lib.rs")));
        }
        other => panic!("expected Panicked, got {other:?}"),
    }
    assert_eq!(pool.call(square, 9), Ok(81));
    assert_eq!(
        pool.stats().workers[0].pid,
        pid_before,
        "a panic does not cost the worker"
    );
}

#[test]
fn sigkilled_worker_fails_its_task_and_the_pool_keeps_working() {
    let _watchdog = watchdog("sigkilled_worker_fails_its_task_and_the_pool_keeps_working");
    let pool = pool(1);
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("started");
    let victim = pool.submit(
        mark_then_sleep,
        (marker.to_str().unwrap().to_owned(), 5_000),
    );
    let queued: Vec<_> = (0..10).map(|x| pool.submit(square, x)).collect();
    wait_marker(&marker);
    let pid = pool.stats().workers[0].pid;
    signal(pid, Signal::SIGKILL);
    match victim.result() {
        Err(TaskError::WorkerDied { pid: died, exit }) => {
            assert_eq!(died, pid);
            assert_eq!(exit, WorkerExit::Signal(9));
        }
        other => panic!("expected WorkerDied, got {other:?}"),
    }
    for (x, handle) in queued.into_iter().enumerate() {
        assert_eq!(
            handle.result(),
            Ok((x * x) as u64),
            "queued work survives the death"
        );
    }
    let stats = pool.stats();
    assert_eq!(stats.deaths, 1);
    assert_ne!(stats.workers[0].pid, pid, "the worker was replaced");
}

#[test]
fn crashing_builtins_end_with_their_signal() {
    let _watchdog = watchdog("crashing_builtins_end_with_their_signal");
    let pool = pool(1);
    match pool.call(builtin::abort, ()) {
        Err(TaskError::WorkerDied { exit, .. }) => assert_eq!(exit, WorkerExit::Signal(6)),
        other => panic!("expected WorkerDied by SIGABRT, got {other:?}"),
    }
    match pool.call(builtin::segfault, ()) {
        Err(TaskError::WorkerDied { exit, .. }) => assert_eq!(exit, WorkerExit::Signal(11)),
        other => panic!("expected WorkerDied by SIGSEGV, got {other:?}"),
    }
    match pool.call(builtin::exit, 3) {
        Err(TaskError::WorkerDied { exit, .. }) => assert_eq!(exit, WorkerExit::Code(3)),
        other => panic!("expected WorkerDied with code 3, got {other:?}"),
    }
    assert_eq!(pool.call(square, 5), Ok(25));
}

#[test]
fn killed_task_is_retried_when_asked() {
    let _watchdog = watchdog("killed_task_is_retried_when_asked");
    let pool = pool(1);
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("started");
    let handle = pool
        .task(mark_then_sleep)
        .retries(2)
        .submit((marker.to_str().unwrap().to_owned(), 300));
    wait_marker(&marker);
    let first_pid = pool.stats().workers[0].pid;
    signal(first_pid, Signal::SIGKILL);
    let ran_in = handle.result().expect("the retry succeeds");
    assert_ne!(ran_in, first_pid);
}

#[test]
fn crash_looping_item_fails_after_its_retries() {
    let _watchdog = watchdog("crash_looping_item_fails_after_its_retries");
    let pool = pool(2);
    match pool.task(builtin::abort).retries(2).call(()) {
        Err(TaskError::WorkerDied { .. }) => {}
        other => panic!("expected WorkerDied after retries, got {other:?}"),
    }
    assert_eq!(pool.stats().deaths, 3, "one run and two retries");
    assert_eq!(pool.call(square, 3), Ok(9));
}

#[test]
fn task_over_its_timeout_is_killed_and_others_finish() {
    let _watchdog = watchdog("task_over_its_timeout_is_killed_and_others_finish");
    let pool = pool(2);
    let slow = pool
        .task(sleep_then_pid)
        .timeout(Duration::from_millis(200))
        .submit(30_000);
    let quick: Vec<_> = (0..100).map(|x| pool.submit(square, x)).collect();
    match slow.result() {
        Err(TaskError::TimedOut { limit }) => assert_eq!(limit, Duration::from_millis(200)),
        other => panic!("expected TimedOut, got {other:?}"),
    }
    for (x, handle) in quick.into_iter().enumerate() {
        assert_eq!(handle.result(), Ok((x * x) as u64));
    }
    // The replacement starts in the background; it arrives (the watchdog bounds the wait).
    while pool.stats().workers.len() < 2 {
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn terminate_ends_everything_at_once() {
    let _watchdog = watchdog("terminate_ends_everything_at_once");
    let pool = pool(2);
    let handles: Vec<_> = (0..10)
        .map(|_| pool.submit(sleep_then_pid, 10_000))
        .collect();
    wait_running(&handles[0]);
    pool.terminate();
    for handle in handles {
        assert_eq!(handle.result(), Err(TaskError::Terminated));
    }
    assert_eq!(pool.submit(square, 1).result(), Err(TaskError::PoolClosed));
}

#[test]
fn crash_inside_a_chunk_is_blamed_on_the_running_item() {
    let _watchdog = watchdog("crash_inside_a_chunk_is_blamed_on_the_running_item");
    let pool = pool(2);
    // Without retries: the crashing item fails; items that finished in the same chunk but whose
    // outcomes had not left the worker fail too; everything else succeeds.
    let outcomes: Vec<_> = pool
        .map(abort_on, (0..5_000u64).map(|x| (x, 2_500)))
        .collect();
    assert!(
        matches!(outcomes[2_500], Err(TaskError::WorkerDied { .. })),
        "{:?}",
        outcomes[2_500]
    );
    for (x, outcome) in outcomes.iter().enumerate() {
        match outcome {
            Ok(value) => assert_eq!(*value, x as u64),
            Err(TaskError::WorkerDied { .. }) => {
                assert!(x <= 2_500, "item {x} after the crash failed")
            }
            Err(other) => panic!("item {x}: {other:?}"),
        }
    }
    assert_eq!(pool.stats().deaths, 1);

    // With retries: only the crashing item fails, after crashing once per attempt.
    let outcomes: Vec<_> = pool
        .task(abort_on)
        .retries(1)
        .map((0..5_000u64).map(|x| (x, 1_234)))
        .collect();
    for (x, outcome) in outcomes.iter().enumerate() {
        if x == 1_234 {
            assert!(
                matches!(outcome, Err(TaskError::WorkerDied { .. })),
                "{outcome:?}"
            );
        } else {
            assert_eq!(*outcome, Ok(x as u64));
        }
    }
    assert_eq!(
        pool.stats().deaths,
        3,
        "one death before, two for the crashing item"
    );
}

#[test]
fn timeout_inside_a_chunk_fails_only_that_item() {
    let _watchdog = watchdog("timeout_inside_a_chunk_fails_only_that_item");
    // Fixed chunks of 8, so the slow item shares its chunk with quick ones on both sides.
    let pool = crate::util::builder(2).chunksize(8).build().unwrap();
    let naps: Vec<u64> = (0..64).map(|i| if i == 20 { 30_000 } else { 2 }).collect();
    let outcomes: Vec<_> = pool
        .map(nap, naps.clone())
        .timeout(Duration::from_millis(300))
        .collect();
    for (i, outcome) in outcomes.into_iter().enumerate() {
        if i == 20 {
            assert_eq!(
                outcome,
                Err(TaskError::TimedOut {
                    limit: Duration::from_millis(300)
                })
            );
        } else {
            assert_eq!(
                outcome,
                Ok(naps[i]),
                "item {i} of the timed-out chunk was not re-run"
            );
        }
    }
    assert_eq!(pool.stats().deaths, 1);
}

#[test]
fn memory_limit_stops_a_worker_from_allocating_beyond_it() {
    let _watchdog = watchdog("memory_limit_stops_a_worker_from_allocating_beyond_it");
    // Without a limit the allocation succeeds (the machine has the memory)...
    let unlimited = pool(1);
    assert!(unlimited.call(builtin::allocate, 512 << 20).is_ok());
    drop(unlimited);
    // ...with one, it fails in the worker (try_reserve reports it), and the pool goes on.
    let pool = crate::util::builder(1)
        .memory_limit(256 << 20)
        .build()
        .unwrap();
    assert!(
        pool.call(builtin::allocate, 16 << 20).is_ok(),
        "within the limit"
    );
    match pool.call(builtin::allocate, 512 << 20) {
        Err(TaskError::Failed(message)) => {
            assert!(message.contains("cannot allocate"), "{message}")
        }
        Err(TaskError::WorkerDied { .. }) => {}
        other => panic!("a 512 MiB allocation under a 256 MiB limit gave {other:?}"),
    }
    assert_eq!(pool.call(square, 6), Ok(36), "the pool goes on");
}
