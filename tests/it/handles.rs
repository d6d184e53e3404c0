//! Task handles over real worker processes: callbacks, waiting, cancelling, awaiting.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use procpool::{TaskError, Wait};
use procpool_tests::{even_only, nap, sleep_then_pid, square};

use crate::util::{pool, wait_running, watchdog};

#[test]
fn callbacks_run_exactly_once_also_when_added_after_completion() {
    let _watchdog = watchdog("callbacks_run_exactly_once_also_when_added_after_completion");
    let pool = pool(2);
    let calls = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..500).map(|x| pool.submit(square, x)).collect();
    for handle in &handles {
        let calls = Arc::clone(&calls);
        handle.on_done(move |outcome| {
            assert!(outcome.is_ok());
            // Relaxed: read after every task finished and the pool shut down.
            calls.fetch_add(1, Ordering::Relaxed);
        });
    }
    let (done, pending) = procpool::wait(&handles, Wait::AllCompleted, None);
    assert_eq!((done.len(), pending.len()), (500, 0));
    let late = Arc::new(AtomicUsize::new(0));
    for handle in &handles {
        let late = Arc::clone(&late);
        handle.on_done(move |_| {
            late.fetch_add(1, Ordering::Relaxed);
        });
    }
    assert_eq!(
        late.load(Ordering::Relaxed),
        500,
        "late callbacks run at once"
    );
    pool.shutdown();
    assert_eq!(calls.load(Ordering::Relaxed), 500);
}

#[test]
fn as_completed_yields_each_task_once() {
    let _watchdog = watchdog("as_completed_yields_each_task_once");
    let pool = pool(2);
    // Longer naps first, so completion order differs from submission order.
    let naps = [300, 200, 100, 10];
    let handles: Vec<_> = naps
        .iter()
        .map(|&ms| pool.submit(sleep_then_pid, ms))
        .collect();
    let order: Vec<usize> = procpool::as_completed(handles)
        .map(|(index, outcome)| {
            assert!(outcome.is_ok());
            index
        })
        .collect();
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, vec![0, 1, 2, 3]);
}

#[test]
fn as_completed_timeout_returns_the_unfinished() {
    let _watchdog = watchdog("as_completed_timeout_returns_the_unfinished");
    let pool = pool(1);
    let handles = vec![pool.submit(square, 3), pool.submit(nap, 2_000)];
    let mut iter = procpool::as_completed_timeout(handles, Duration::from_millis(500));
    assert_eq!(iter.next(), Some(Ok((0, Ok(9)))));
    assert_eq!(iter.next(), Some(Err(procpool::Timeout)));
    let pending = iter.into_pending();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].0, 1);
}

#[test]
fn wait_modes() {
    let _watchdog = watchdog("wait_modes");
    let pool = pool(2);
    // FirstCompleted: the quick one is done, the slow one is not.
    let handles = vec![pool.submit(nap, 1_500), pool.submit(square, 2)];
    let (done, pending) = procpool::wait(&handles, Wait::FirstCompleted, None);
    assert_eq!((done, pending), (vec![1], vec![0]));
    for handle in handles {
        assert!(handle.result().is_ok());
    }

    // FirstError: returns at the failure without waiting for the slow task.
    let slow = pool.submit(nap, 1_500);
    let failing = pool.submit(even_only, 3);
    let handles = vec![slow, failing];
    let mut errors = Vec::new();
    let (done, pending) = procpool::wait(&handles, Wait::FirstError, None);
    assert_eq!((done, pending), (vec![1], vec![0]));
    for handle in handles {
        if let Err(err) = handle.result() {
            errors.push(err);
        }
    }
    assert_eq!(errors, vec![TaskError::Failed("3 is odd".into())]);

    // AllCompleted, with a timeout that does not expire.
    let handles: Vec<_> = (0..20).map(|x| pool.submit(square, x)).collect();
    let (done, pending) =
        procpool::wait(&handles, Wait::AllCompleted, Some(Duration::from_secs(60)));
    assert_eq!((done.len(), pending.len()), (20, 0));

    // A timeout that expires leaves everything pending and usable.
    let handle = pool.submit(sleep_then_pid, 1_000);
    let handles = vec![handle];
    let (done, pending) = procpool::wait(
        &handles,
        Wait::AllCompleted,
        Some(Duration::from_millis(50)),
    );
    assert_eq!((done.len(), pending.len()), (0, 1));
    let [handle] = <[_; 1]>::try_from(handles).unwrap();
    assert!(handle.result().is_ok());
}

#[test]
fn cancel_succeeds_before_start_and_fails_after() {
    let _watchdog = watchdog("cancel_succeeds_before_start_and_fails_after");
    let pool = pool(1);
    let running = pool.submit(sleep_then_pid, 500);
    let queued: Vec<_> = (0..10).map(|x| pool.submit(square, x)).collect();
    wait_running(&running);
    assert!(!running.cancel(), "a running task cannot be cancelled");
    let last = &queued[9];
    assert!(last.cancel(), "a queued task can be cancelled");
    assert!(last.cancelled());
    assert!(running.result().is_ok());
    let outcomes: Vec<_> = queued.into_iter().map(|h| h.result()).collect();
    assert_eq!(outcomes[9], Err(TaskError::Cancelled));
    assert_eq!(outcomes[0], Ok(0));
}

#[test]
fn result_timeout_leaves_the_handle_usable() {
    let _watchdog = watchdog("result_timeout_leaves_the_handle_usable");
    let pool = pool(1);
    let handle = pool.submit(sleep_then_pid, 300);
    let handle = handle
        .result_timeout(Duration::from_millis(10))
        .expect_err("not done after 10 ms")
        .into_handle();
    assert!(handle.result().is_ok());
}

#[test]
fn handle_awaited_in_tokio_runtime() {
    let _watchdog = watchdog("handle_awaited_in_tokio_runtime");
    let pool = pool(2);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let total = runtime.block_on(async {
        let handles: Vec<_> = (0..50u64).map(|x| pool.submit(square, x)).collect();
        // While the tasks run, the runtime's single thread stays free for other work.
        let ticker = tokio::spawn(async { tokio::time::sleep(Duration::from_millis(1)).await });
        let mut total = 0;
        for handle in handles {
            total += handle.await.unwrap();
        }
        ticker.await.unwrap();
        total
    });
    assert_eq!(total, (0..50u64).map(|x| x * x).sum::<u64>());
}
