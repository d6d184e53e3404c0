//! Tests of the pool core over the thread backend: real channels and the real worker
//! runtime, with worker threads instead of processes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::thread_backend::ThreadLauncher;
use crate::{Pool, TaskError, Wait, builtin};

/// Long enough that a test only waits this long when something is broken.
const WATCHDOG: Duration = Duration::from_secs(60);

#[procpool::task]
fn square(x: u64) -> u64 {
    x * x
}

/// Which thread worker runs this (`current_worker` is per process, so threads share it).
#[procpool::task]
fn worker_thread(item: u64) -> String {
    let _ = item;
    format!("{:?}", std::thread::current().id())
}

/// The total length of many strings (arguments too many-parted to be measured and written in
/// place: they are encoded into the core's frame buffer).
#[procpool::task]
fn total_len(strings: Vec<String>) -> u64 {
    strings.iter().map(|s| s.len() as u64).sum()
}

fn pool(workers: usize) -> Pool {
    let pool = Pool::builder()
        .workers(workers)
        .build_with(Box::new(ThreadLauncher))
        .expect("thread workers start");
    // `build` returns once the first worker is ready; these tests want all of them.
    while pool.stats().workers.len() < workers {
        std::thread::sleep(Duration::from_millis(1));
    }
    pool
}

/// Polls `handle` once as a future, with a waker that does nothing.
fn poll_once<T>(handle: &mut crate::TaskHandle<T>) -> std::task::Poll<Result<T, TaskError>> {
    use std::future::Future;
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    std::pin::Pin::new(handle).poll(&mut cx)
}

#[test]
fn submit_leaves_an_idle_reader_asleep_until_the_handle_needs_it() {
    let pool = pool(2);
    assert_eq!(pool.call(square, 2), Ok(4));
    // The caller waits (and so reads the outcome itself): no reader thread is woken for it.
    let handle = pool.submit(square, 3);
    assert_eq!(pool.owed_readers(), 1, "the submit left the reader asleep");
    assert_eq!(handle.result(), Ok(9));
    assert_eq!(pool.owed_readers(), 0, "the waiter's help settled the debt");
    // Every way of not waiting on the thread wakes the reader, and the outcome arrives.
    let (sender, outcomes) = std::sync::mpsc::channel();
    for way in ["on_done", "poll", "done", "drop", "wait", "stats"] {
        let mut handle = pool.submit(square, 5);
        let sender = sender.clone();
        match way {
            "on_done" => handle.on_done(move |outcome| sender.send(outcome.clone()).unwrap()),
            "poll" => {
                if let std::task::Poll::Ready(outcome) = poll_once(&mut handle) {
                    sender.send(outcome).unwrap();
                } else {
                    handle.on_done(move |outcome| sender.send(outcome.clone()).unwrap());
                }
            }
            "done" => {
                let _ = handle.done();
                handle.on_done(move |outcome| sender.send(outcome.clone()).unwrap());
            }
            "drop" => {
                handle.on_done(move |outcome| sender.send(outcome.clone()).unwrap());
                drop(handle);
            }
            "wait" => {
                let handles = [handle];
                let (_, pending) = crate::wait(&handles, Wait::AllCompleted, Some(WATCHDOG));
                assert!(pending.is_empty());
                let [handle] = handles;
                sender.send(handle.result()).unwrap();
            }
            _ => {
                let _ = pool.stats();
                handle.on_done(move |outcome| sender.send(outcome.clone()).unwrap());
            }
        }
        assert_eq!(pool.owed_readers(), 0, "`{way}` woke the reader");
        assert_eq!(outcomes.recv_timeout(WATCHDOG), Ok(Ok(25)), "`{way}`");
    }
}

#[test]
fn submit_and_call_return_values() {
    let pool = pool(2);
    let handle = pool.submit(square, 12);
    assert_eq!(handle.result(), Ok(144));
    assert_eq!(pool.call(builtin::add_one, 41), Ok(42));
    assert_eq!(pool.stats().workers.len(), 2);
}

#[test]
fn ordered_map_equals_serial() {
    let pool = pool(2);
    let got: Vec<u64> = pool.map(square, 0..20_000u64).map(Result::unwrap).collect();
    let want: Vec<u64> = (0..20_000u64).map(|x| x * x).collect();
    assert_eq!(got, want);
}

#[test]
fn unordered_map_yields_every_index_once() {
    let pool = pool(2);
    let mut seen: Vec<(usize, u64)> = pool
        .map_unordered(square, 0..5_000u64)
        .map(|(index, outcome)| (index, outcome.unwrap()))
        .collect();
    seen.sort_unstable();
    assert_eq!(seen.len(), 5_000);
    for (pos, (index, value)) in seen.into_iter().enumerate() {
        assert_eq!(index, pos);
        assert_eq!(value, (pos * pos) as u64);
    }
}

#[test]
fn endless_map_with_take_finishes() {
    let pool = pool(2);
    let window = std::num::NonZeroUsize::new(1_000).unwrap();
    let got: Vec<u64> = pool
        .map(square, 0u64..)
        .window(window)
        .take(3_000)
        .map(Result::unwrap)
        .collect();
    assert_eq!(got.len(), 3_000);
    assert_eq!(got[2_999], 2_999 * 2_999);
    // The pool still works after the map was dropped half-way through its input.
    assert_eq!(pool.call(square, 3), Ok(9));
}

/// The fast path counts its items lazily and may split a run at the refill point: the
/// count of items left (`size_hint`), the order and the indices stay exact item by item.
#[test]
fn maps_count_every_item_with_small_windows() {
    let pool = pool(2);
    for window in [1usize, 7, 64, 1_000] {
        let window = std::num::NonZeroUsize::new(window).unwrap();
        let n = 5_000u64;
        let mut map = pool.map(square, 0..n).window(window);
        let mut expect = 0u64;
        while let Some(outcome) = map.next() {
            assert_eq!(outcome, Ok(expect * expect));
            expect += 1;
            let left = usize::try_from(n - expect).unwrap();
            assert_eq!(map.size_hint(), (left, Some(left)), "window {window}");
        }
        assert_eq!(expect, n);
        let mut seen = vec![false; n as usize];
        let mut unordered = pool.map_unordered(square, 0..n).window(window);
        let mut count = 0usize;
        while let Some((index, outcome)) = unordered.next() {
            assert_eq!(outcome, Ok((index * index) as u64));
            assert!(
                !std::mem::replace(&mut seen[index], true),
                "index {index} twice"
            );
            count += 1;
            let left = n as usize - count;
            assert_eq!(unordered.size_hint(), (left, Some(left)), "window {window}");
        }
        assert_eq!(count, n as usize);
    }
}

#[test]
fn panics_and_errors_come_back_and_the_pool_goes_on() {
    let pool = pool(1);
    match pool.call(builtin::panic, "boom".to_owned()) {
        Err(TaskError::Panicked { message, .. }) => assert!(message.contains("boom"), "{message}"),
        other => panic!("expected Panicked, got {other:?}"),
    }
    match pool.call(builtin::fail, "bad input".to_owned()) {
        Err(TaskError::Failed(message)) => assert!(message.contains("bad input"), "{message}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    assert_eq!(pool.call(square, 5), Ok(25));
}

#[test]
fn map_reports_failures_per_item() {
    let pool = pool(2);
    let outcomes: Vec<_> = pool
        .map(builtin::fail, (0..10).map(|i| format!("item {i}")))
        .collect();
    assert_eq!(outcomes.len(), 10);
    for (i, outcome) in outcomes.into_iter().enumerate() {
        assert_eq!(outcome, Err(TaskError::Failed(format!("item {i}"))));
    }
}

#[test]
fn submit_after_shutdown_is_pool_closed() {
    let pool = pool(1);
    assert_eq!(pool.call(square, 2), Ok(4));
    pool.shutdown();
    assert!(!pool.is_open());
    assert_eq!(pool.submit(square, 2).result(), Err(TaskError::PoolClosed));
    let mut map = pool.map(square, 0..10);
    assert_eq!(map.next(), Some(Err(TaskError::PoolClosed)));
    assert_eq!(map.next(), None);
    pool.shutdown();
}

#[test]
fn shutdown_finishes_queued_work() {
    let pool = pool(1);
    let handles: Vec<_> = (0..50).map(|x| pool.submit(square, x)).collect();
    pool.shutdown();
    for (x, handle) in handles.into_iter().enumerate() {
        assert_eq!(handle.result(), Ok((x * x) as u64));
    }
}

#[test]
fn shutdown_now_cancels_queued_and_finishes_running() {
    let pool = pool(1);
    let running = pool.submit(builtin::sleep_for, 300);
    let queued: Vec<_> = (0..20)
        .map(|_| pool.submit(builtin::sleep_for, 300))
        .collect();
    // Wait until the first one has been handed to the worker.
    while !running.running() {
        std::thread::sleep(Duration::from_millis(1));
    }
    pool.shutdown_now();
    assert_eq!(running.result(), Ok(()));
    let cancelled = queued
        .into_iter()
        .map(|h| h.result())
        .filter(|r| *r == Err(TaskError::Cancelled))
        .count();
    // The scheduler may have prefetched one more chunk into the worker; all others are cancelled.
    assert!(
        cancelled >= 19,
        "only {cancelled} of 20 queued tasks were cancelled"
    );
}

#[test]
fn cancel_before_start_succeeds() {
    let pool = pool(1);
    let blocker = pool.submit(builtin::sleep_for, 200);
    let queued: Vec<_> = (0..10).map(|x| pool.submit(square, x)).collect();
    let last = queued.last().unwrap();
    assert!(
        last.cancel(),
        "a task queued behind a sleeping one has not started"
    );
    assert!(last.cancelled());
    assert!(!blocker.cancel() || blocker.cancelled());
    assert_eq!(blocker.result(), Ok(()));
    let outcomes: Vec<_> = queued.into_iter().map(|h| h.result()).collect();
    assert_eq!(outcomes[9], Err(TaskError::Cancelled));
    assert_eq!(outcomes[0], Ok(0));
}

#[test]
fn callbacks_run_exactly_once() {
    let pool = pool(2);
    let calls = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..200).map(|x| pool.submit(square, x)).collect();
    for handle in &handles {
        let calls = Arc::clone(&calls);
        handle.on_done(move |outcome| {
            assert!(outcome.is_ok());
            // Relaxed: the final load happens after every handle is done and waited for.
            calls.fetch_add(1, Ordering::Relaxed);
        });
    }
    let (done, pending) = crate::wait(&handles, Wait::AllCompleted, Some(WATCHDOG));
    assert_eq!((done.len(), pending.len()), (200, 0));
    for handle in &handles {
        let calls = Arc::clone(&calls);
        handle.on_done(move |_| {
            calls.fetch_add(1, Ordering::Relaxed);
        });
    }
    drop(pool);
    assert_eq!(calls.load(Ordering::Relaxed), 400);
}

#[test]
fn many_threads_submitting_lose_nothing() {
    let pool = Arc::new(pool(2));
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let pool = Arc::clone(&pool);
            std::thread::spawn(move || {
                let handles: Vec<_> = (0..500u64)
                    .map(|i| pool.submit(square, t * 1000 + i))
                    .collect();
                handles
                    .into_iter()
                    .enumerate()
                    .all(|(i, h)| h.result() == Ok((t * 1000 + i as u64).pow(2)))
            })
        })
        .collect();
    for thread in threads {
        assert!(thread.join().unwrap());
    }
    assert_eq!(pool.stats().tasks_done, 4_000);
}

#[test]
fn max_tasks_per_child_recycles_workers() {
    let pool = Pool::builder()
        .workers(2)
        .max_tasks_per_child(1)
        .build_with(Box::new(ThreadLauncher))
        .unwrap();
    let indices: Vec<String> = pool.map(worker_thread, 0..12).map(Result::unwrap).collect();
    let mut unique = indices.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(
        unique.len(),
        12,
        "each item ran in a fresh worker: {indices:?}"
    );
    assert!(pool.stats().restarts >= 10);
}

#[test]
fn terminate_ends_pending_work() {
    let pool = pool(1);
    let handles: Vec<_> = (0..5)
        .map(|_| pool.submit(builtin::sleep_for, 50))
        .collect();
    pool.terminate();
    for handle in handles {
        let outcome = handle
            .result_timeout(WATCHDOG)
            .expect("terminate ends every task");
        assert!(
            matches!(outcome, Ok(()) | Err(TaskError::Terminated)),
            "{outcome:?}"
        );
    }
    assert_eq!(pool.submit(square, 1).result(), Err(TaskError::PoolClosed));
}

#[test]
fn as_completed_over_submitted_handles() {
    let pool = pool(2);
    let handles: Vec<_> = (0..100).map(|x| pool.submit(square, x)).collect();
    let mut seen: Vec<usize> = crate::as_completed(handles)
        .map(|(index, outcome)| {
            assert_eq!(outcome, Ok((index * index) as u64));
            index
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..100).collect::<Vec<_>>());
}

/// Waits until `handle` is at a worker and returns that worker's pid (single-worker pools).
fn running_pid<T>(pool: &Pool, handle: &crate::TaskHandle<T>) -> u32 {
    let deadline = std::time::Instant::now() + WATCHDOG;
    while !handle.running() {
        assert!(std::time::Instant::now() < deadline, "task never started");
        std::thread::sleep(Duration::from_millis(1));
    }
    let workers = pool.stats().workers;
    assert_eq!(workers.len(), 1);
    workers[0].pid
}

#[test]
fn lost_worker_fails_its_task_and_is_replaced() {
    let pool = pool(1);
    let handle = pool.submit(builtin::sleep_for, 200);
    let queued: Vec<_> = (0..10).map(|x| pool.submit(square, x)).collect();
    let pid = running_pid(&pool, &handle);
    crate::thread_backend::kill(pid);
    match handle.result() {
        Err(TaskError::WorkerDied { pid: died, .. }) => assert_eq!(died, pid),
        other => panic!("expected WorkerDied, got {other:?}"),
    }
    // Work queued behind it is unaffected and runs on the replacement.
    for (x, handle) in queued.into_iter().enumerate() {
        assert_eq!(handle.result(), Ok((x * x) as u64));
    }
    let stats = pool.stats();
    assert_eq!(stats.deaths, 1);
    assert_eq!(stats.workers.len(), 1);
    assert_ne!(stats.workers[0].pid, pid);
}

#[test]
fn lost_worker_task_is_retried_when_asked() {
    let pool = pool(1);
    let handle = pool.task(builtin::sleep_for).retries(1).submit(200);
    let pid = running_pid(&pool, &handle);
    crate::thread_backend::kill(pid);
    assert_eq!(handle.result(), Ok(()));
    assert_eq!(pool.stats().deaths, 1);
}

#[test]
fn task_over_its_timeout_is_timed_out() {
    let pool = pool(1);
    let slow = pool
        .task(builtin::sleep_for)
        .timeout(Duration::from_millis(50))
        .submit(400);
    let fast = pool.submit(square, 7);
    match slow.result() {
        Err(TaskError::TimedOut { limit }) => assert_eq!(limit, Duration::from_millis(50)),
        other => panic!("expected TimedOut, got {other:?}"),
    }
    assert_eq!(fast.result(), Ok(49));
    assert_eq!(pool.call(square, 3), Ok(9));
}

/// Runs `body` on a thread and fails the test if it does not finish within the watchdog.
fn within_watchdog(body: impl FnOnce() + Send + 'static) {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        body();
        let _ = done_tx.send(());
    });
    assert!(
        done_rx.recv_timeout(WATCHDOG).is_ok(),
        "deadlock: the body did not finish"
    );
    thread.join().expect("body panicked");
}

#[test]
fn idle_worker_death_is_seen_while_callers_read_the_rings() {
    // `call` reads outcomes on the calling thread, so the reader threads go dormant; the
    // death of an idle worker must still be noticed and the worker replaced.
    let pool = pool(1);
    for x in 0..50 {
        assert_eq!(pool.call(square, x), Ok(x * x));
    }
    let pid = pool.stats().workers[0].pid;
    crate::thread_backend::kill(pid);
    let deadline = std::time::Instant::now() + WATCHDOG;
    while pool.stats().deaths == 0 {
        assert!(std::time::Instant::now() < deadline, "death never seen");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(pool.call(square, 9), Ok(81));
    assert_ne!(pool.stats().workers[0].pid, pid);
}

#[test]
fn worker_killed_while_a_caller_reads_its_ring_fails_the_call() {
    let pool = Arc::new(pool(1));
    for x in 0..20 {
        assert_eq!(pool.call(square, x), Ok(x * x));
    }
    let caller = {
        let pool = Arc::clone(&pool);
        std::thread::spawn(move || pool.call(builtin::sleep_for, 300))
    };
    // Wait until the call runs, then kill its worker.
    let deadline = std::time::Instant::now() + WATCHDOG;
    let pid = loop {
        let stats = pool.stats();
        if stats.in_flight > 0 {
            break stats.workers[0].pid;
        }
        assert!(std::time::Instant::now() < deadline, "call never started");
        std::thread::sleep(Duration::from_millis(1));
    };
    crate::thread_backend::kill(pid);
    match caller.join().expect("caller") {
        Err(TaskError::WorkerDied { pid: died, .. }) => assert_eq!(died, pid),
        other => panic!("expected WorkerDied, got {other:?}"),
    }
    assert_eq!(pool.call(square, 4), Ok(16));
}

#[test]
fn callback_waiting_for_another_task_does_not_deadlock() {
    // The outer `result` reads the outcome and runs the callback on its own thread; the
    // callback's own wait must still be served.
    within_watchdog(|| {
        let pool = Arc::new(pool(1));
        let inner = Arc::new(std::sync::Mutex::new(None));
        let handle = pool.submit(square, 3);
        {
            let pool = Arc::clone(&pool);
            let inner = Arc::clone(&inner);
            handle.on_done(move |_| {
                *inner.lock().expect("inner") = Some(pool.call(square, 5));
            });
        }
        assert_eq!(handle.result(), Ok(9));
        assert_eq!(*inner.lock().expect("inner"), Some(Ok(25)));
    });
}

#[test]
fn shutdown_from_a_callback_on_a_waiting_caller_does_not_deadlock() {
    within_watchdog(|| {
        let pool = Arc::new(pool(2));
        let handle = pool.submit(square, 6);
        {
            let pool = Arc::clone(&pool);
            handle.on_done(move |_| pool.shutdown());
        }
        assert_eq!(handle.result(), Ok(36));
        // Shut down (by the callback, or here if the callback ran elsewhere first).
        pool.shutdown();
        assert_eq!(pool.call(square, 1), Err(TaskError::PoolClosed));
    });
}

#[test]
fn many_callers_waiting_at_once_all_get_their_outcome() {
    // One thread at a time reads the rings; the others park and must still be woken.
    let pool = Arc::new(pool(2));
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let pool = Arc::clone(&pool);
            std::thread::spawn(move || {
                for x in 0..200 {
                    let x = t * 1000 + x;
                    assert_eq!(pool.call(square, x), Ok(x * x));
                    let handle = pool.submit(square, x + 1);
                    assert_eq!(handle.result(), Ok((x + 1) * (x + 1)));
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("caller");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn handle_can_be_awaited_in_tokio() {
    let pool = pool(1);
    let handles: Vec<_> = (0..10).map(|x| pool.submit(square, x)).collect();
    let mut total = 0;
    for handle in handles {
        total += handle.await.unwrap();
    }
    assert_eq!(total, (0..10).map(|x| x * x).sum::<u64>());
}

#[test]
fn public_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Pool>();
    send_sync::<crate::TaskHandle<u64>>();
    send_sync::<crate::Error>();
    send_sync::<TaskError>();
    send::<crate::Map<'static, square, std::ops::Range<u64>>>();
    send::<crate::AsCompleted<u64>>();
}

#[test]
fn lock_spinning_excludes_and_gets_locks_held_briefly_or_long() {
    use std::sync::{Barrier, Mutex};
    // Three threads increment a plain counter under the lock, holding it for a while now and
    // then (longer than the spin, so waiters also block): every increment counts.
    let counter = Arc::new(Mutex::new(0_u64));
    let barrier = Arc::new(Barrier::new(3));
    let threads: Vec<_> = (0..3)
        .map(|t| {
            let counter = Arc::clone(&counter);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..3_000_u64 {
                    let mut guard = crate::core::lock_spinning(&counter, Duration::from_micros(50));
                    let seen = *guard;
                    if (i + t) % 500 == 0 {
                        std::thread::sleep(Duration::from_micros(200));
                    } else if i % 7 == 0 {
                        std::thread::yield_now();
                    }
                    *guard = seen + 1;
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("no panic");
    }
    assert_eq!(*counter.lock().unwrap(), 9_000);
}

#[test]
fn lock_spinning_waits_out_a_long_holder_and_takes_a_poisoned_lock() {
    use std::sync::{Barrier, Mutex};
    let value = Arc::new(Mutex::new(0_u64));
    let held = Arc::new(Barrier::new(2));
    let holder = {
        let value = Arc::clone(&value);
        let held = Arc::clone(&held);
        std::thread::spawn(move || {
            let mut guard = value.lock().unwrap();
            held.wait();
            // Far past the waiter's spin: it has to block, then wake when this releases.
            std::thread::sleep(Duration::from_millis(20));
            *guard = 1;
            panic!("poisons the lock on purpose");
        })
    };
    held.wait();
    let guard = crate::core::lock_spinning(&value, Duration::from_micros(50));
    assert_eq!(*guard, 1, "the holder's write is seen");
    drop(guard);
    assert!(holder.join().is_err(), "the holder panicked");
    assert!(value.is_poisoned());
    assert_eq!(*crate::core::lock_spinning(&value, Duration::ZERO), 1);
}

#[test]
fn the_cores_frame_buffer_is_given_back_when_no_large_frame_needs_it() {
    let pool = pool(1);
    let strings: Vec<String> = (0..40_000).map(|i| format!("{i:064}")).collect();
    let total = 40_000 * 64;
    assert_eq!(pool.call(total_len, strings.clone()), Ok(total));
    assert!(
        pool.frame_buffer_capacity() > 2 << 20,
        "the chunk was encoded into the buffer"
    );
    // Small chunks (written in place) do not keep it.
    let start = std::time::Instant::now();
    while pool.frame_buffer_capacity() > 1 << 20 {
        assert!(
            start.elapsed() < WATCHDOG,
            "the frame buffer was never given back"
        );
        assert_eq!(pool.call(square, 3), Ok(9));
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(pool.call(total_len, strings), Ok(total));
}

/// Hooks that report each time a thread is about to block at `site` on `sender`.
fn report_blocking_at(
    site: &'static str,
) -> (crate::core::TestHooks, std::sync::mpsc::Receiver<()>) {
    let (sender, blocked) = std::sync::mpsc::channel();
    let sender = std::sync::Mutex::new(sender);
    let hooks = crate::core::TestHooks {
        blocking: Some(Arc::new(move |at| {
            if at == site {
                let _ = sender.lock().expect("sender").send(());
            }
        })),
        ..crate::core::TestHooks::default()
    };
    (hooks, blocked)
}

/// A 1.5 s call with a 20 ms timeout ends `TimedOut`.
fn assert_a_slow_timed_call_times_out(pool: &Pool) {
    let slow = pool
        .task(builtin::sleep_for)
        .timeout(Duration::from_millis(20))
        .submit(1_500);
    match slow.result() {
        Err(TaskError::TimedOut { limit }) => assert_eq!(limit, Duration::from_millis(20)),
        other => panic!("expected TimedOut, got {other:?}"),
    }
}

/// A timed call submitted while the watchdog sits out its liveness-only tick is watched from
/// its first item on. The tick is widened to ten minutes and the call submitted once the
/// watchdog blocks in it: before the fix (the watchdog woke only at the end of its tick), the
/// call ran its whole 1.5 s and succeeded.
#[test]
fn a_timed_call_submitted_while_the_watchdog_idles_is_timed_out() {
    let (mut hooks, blocked) = report_blocking_at("watchdog idle");
    hooks.watchdog_idle_tick = Some(Duration::from_secs(600));
    let pool = Pool::builder()
        .workers(1)
        .build_with_hooks(Box::new(ThreadLauncher), hooks)
        .expect("thread workers start");
    blocked
        .recv_timeout(WATCHDOG)
        .expect("the watchdog waits out its idle tick");
    assert_a_slow_timed_call_times_out(&pool);
}

/// A watchdog started by a timed call goes back to its long idle tick once no timed chunk is
/// in flight, and still times out the next timed call from its first item on. It used to keep
/// the fine tick while any timed job existed, and the `submit` stream of a timed call lives as
/// long as the pool: without liveness checks it woke every 5 ms for the pool's life (the
/// "watchdog idle" wait was never reached).
#[test]
fn without_liveness_checks_an_idle_watchdog_sleeps_and_still_enforces_timeouts() {
    let (mut hooks, blocked) = report_blocking_at("watchdog idle");
    hooks.watchdog_idle_tick = Some(Duration::from_secs(600));
    let pool = Pool::builder()
        .workers(1)
        .liveness_timeout(Duration::ZERO)
        .build_with_hooks(Box::new(ThreadLauncher), hooks)
        .expect("thread workers start");
    let quick = pool.task(square).timeout(Duration::from_secs(30)).submit(4);
    assert_eq!(quick.result(), Ok(16));
    blocked
        .recv_timeout(WATCHDOG)
        .expect("with no timed job left the watchdog waits out its idle tick");
    assert_a_slow_timed_call_times_out(&pool);
}

/// Starts its first worker, then fails every later start.
struct FirstOnly(AtomicUsize);

impl crate::link::Launcher for FirstOnly {
    fn launch(&self) -> Result<crate::link::Link, crate::Error> {
        if self.0.fetch_add(1, Ordering::Relaxed) == 0 {
            crate::link::Launcher::launch(&ThreadLauncher)
        } else {
            Err(crate::Error::new(
                crate::ErrorKind::Spawn,
                "refused by the test",
            ))
        }
    }

    fn describe(&self) -> String {
        "the first thread worker only".into()
    }
}

/// Thread workers; every start after the first waits until the gate `.0` opens.
struct LaterStartsGated(u64, AtomicUsize);

impl crate::link::Launcher for LaterStartsGated {
    fn launch(&self) -> Result<crate::link::Link, crate::Error> {
        if self.1.fetch_add(1, Ordering::Relaxed) > 0 {
            pass_gate(self.0);
        }
        crate::link::Launcher::launch(&ThreadLauncher)
    }

    fn describe(&self) -> String {
        "thread workers, later starts gated".into()
    }
}

/// A caller that is helping when a new worker's reader thread registers its slot reads that
/// worker's ring too. The new reader finds the helper's seat taken and steps aside (dormant),
/// like every reader; a helper that kept the slots of its start left the new worker's outcome
/// unread for its whole window (100 µs; ten minutes here, as is the dormant reader's slice),
/// and the call it waits for ran on that worker. Now the helper takes a new snapshot when the
/// slots' generation moved. The second worker is held at its start until the helper reports
/// that it took the seat and its snapshot, and the call is queued (not prefetched behind the
/// first worker's gated call, whose cost is unknown), so it goes to the second worker.
#[test]
fn a_helping_caller_reads_the_ring_of_a_worker_that_arrived_after_it_started() {
    const BUSY: u64 = 40;
    const LATER_START: u64 = 41;
    let (mut hooks, helping) = report_blocking_at("helping");
    hooks.help_window = Some(Duration::from_secs(600));
    hooks.dormant_slice = Some(Duration::from_secs(600));
    let pool = Pool::builder()
        .workers(2)
        .build_with_hooks(
            Box::new(LaterStartsGated(LATER_START, AtomicUsize::new(0))),
            hooks,
        )
        .expect("the first worker starts");
    wait_gate_started(LATER_START);
    let busy = pool.submit(gated, BUSY);
    wait_gate_started(BUSY);
    let queued = pool.submit(square, 3);
    let waiter = std::thread::spawn(move || queued.result());
    helping
        .recv_timeout(WATCHDOG)
        .expect("the waiting caller helps");
    open_gate(LATER_START);
    within_watchdog(move || {
        assert_eq!(waiter.join().expect("waiter"), Ok(9));
        open_gate(BUSY);
        assert_eq!(busy.result(), Ok(BUSY));
        drop(pool);
    });
}

/// `terminate` does not wait for a reader thread sitting out its pause between two failed
/// worker starts: it wakes it. The only worker is lost and its replacement cannot start; the
/// pause and the grace are widened to ten minutes and `terminate` called once the reader
/// blocks in its pause. Before the fix (`terminate` closed the pool without notifying, and no
/// other reader ended to notify for it), it waited out the grace.
#[test]
fn terminate_ends_a_reader_pausing_between_failed_starts() {
    let (mut hooks, blocked) = report_blocking_at("replacement pause");
    hooks.replacement_pause = Some(Duration::from_secs(600));
    let pool = Pool::builder()
        .workers(1)
        .terminate_grace(Duration::from_secs(600))
        .build_with_hooks(Box::new(FirstOnly(AtomicUsize::new(0))), hooks)
        .expect("the first worker starts");
    assert_eq!(pool.call(square, 4), Ok(16));
    crate::thread_backend::kill(pool.stats().workers[0].pid);
    blocked
        .recv_timeout(WATCHDOG)
        .expect("the reader pauses after its replacement failed to start");
    within_watchdog(move || {
        pool.terminate();
        drop(pool);
    });
}

/// Gates for thread workers (they run in this process): the keys whose `gated` call started,
/// and the keys opened so far.
static GATES: std::sync::Mutex<(Vec<u64>, Vec<u64>)> =
    std::sync::Mutex::new((Vec::new(), Vec::new()));
static GATES_CHANGED: std::sync::Condvar = std::sync::Condvar::new();

/// Waits until [`open_gate`] opens `key`.
#[procpool::task]
fn gated(key: u64) -> u64 {
    pass_gate(key);
    key
}

/// Records that the call of `key` started, then waits until `key` is opened.
fn pass_gate(key: u64) {
    let mut gates = GATES.lock().expect("gates");
    gates.0.push(key);
    GATES_CHANGED.notify_all();
    drop(
        GATES_CHANGED
            .wait_while(gates, |gates| !gates.1.contains(&key))
            .expect("gates"),
    );
}

fn open_gate(key: u64) {
    GATES.lock().expect("gates").1.push(key);
    GATES_CHANGED.notify_all();
}

/// Waits until a call of `key` passed [`pass_gate`]'s start.
fn wait_gate_started(key: u64) {
    let gates = GATES.lock().expect("gates");
    let (gates, waited) = GATES_CHANGED
        .wait_timeout_while(gates, WATCHDOG, |gates| !gates.0.contains(&key))
        .expect("gates");
    drop(gates);
    assert!(!waited.timed_out(), "the gated call {key} never started");
}

/// A worker recycled (`max_tasks_per_child`) by the outcome a helping caller read is replaced
/// at once: its reader thread must see the link end. `send_shutdown` kicks that reader, but
/// while the caller still helps (here: runs the call's `on_done` callback) the reader finds a
/// helper active and sleeps again, so the kick is spent; the helper, leaving, kicks the readers
/// of stopping workers as well as of workers holding chunks. Before the fix it kicked only the
/// latter, and the reader saw the exit after its dormant slice (50 ms; ten minutes here) or
/// when a later helper polled the ring. The reader is parked in each step through the test hooks.
#[test]
fn a_worker_recycled_by_an_outcome_a_caller_read_is_replaced() {
    const KEY: u64 = 1;
    let (mut hooks, dormant) = report_blocking_at("reader dormant");
    hooks.dormant_slice = Some(Duration::from_secs(600));
    hooks.help_window = Some(Duration::from_secs(600));
    let pool = Pool::builder()
        .workers(1)
        .max_tasks_per_child(1)
        .build_with_hooks(Box::new(ThreadLauncher), hooks)
        .expect("thread workers start");
    // The caller's help must cover the reader's slot (a snapshot taken when it starts).
    while pool.attended_slots() < 1 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let dormant = Arc::new(std::sync::Mutex::new(dormant));
    let handle = pool.submit(gated, KEY);
    {
        // Runs on the helping caller once its outcome is read: returns when the reader,
        // kicked by `send_shutdown`, has gone dormant again.
        let dormant = Arc::clone(&dormant);
        handle.on_done(move |_| {
            let asleep = dormant.lock().expect("dormant").recv_timeout(WATCHDOG);
            asleep.expect("the kicked reader steps aside again");
        });
    }
    let opener = std::thread::spawn(move || {
        let asleep = dormant.lock().expect("dormant").recv_timeout(WATCHDOG);
        asleep.expect("the reader steps aside for the caller");
        open_gate(KEY);
    });
    assert_eq!(handle.result(), Ok(KEY));
    opener.join().expect("opener");
    // Nothing reads the rings now (a caller that helps would find the link's end itself).
    within_watchdog(move || {
        while pool.stats().restarts == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let outcomes: Vec<_> = pool.map(square, 0..3u64).collect();
        assert_eq!(outcomes, [Ok(0), Ok(1), Ok(4)]);
    });
}

/// Frames that wait in a worker's outbox go out once the worker has read what it had, even
/// when no outcome follows. While the only worker runs a gated call, shared objects are made
/// until its socket is full and more than a hundred of them (and then a call) wait in its
/// outbox. When the gate opens, the worker answers that call and then reads the objects, which
/// produce no outcome: the flush after that answer sends only the few the worker has taken by
/// then, and nothing else flushes. Before the fix only the release thread's 20 ms tick did;
/// now the worker, asked through its mailbox, says `Drained` when it has read everything, and
/// without that the queued call hangs.
#[test]
fn frames_waiting_in_an_outbox_go_out_when_the_worker_has_read_everything() {
    const KEY: u64 = 50;
    const WAITING: usize = 128;
    let pool = Pool::builder()
        .workers(1)
        .build_with(Box::new(crate::thread_backend::MailboxThreadLauncher))
        .expect("the thread worker starts");
    let busy = pool.submit(gated, KEY);
    wait_gate_started(KEY);
    let mut objects = Vec::new();
    for value in 0..100_000u64 {
        if pool.outbox_len() >= WAITING {
            break;
        }
        objects.push(pool.share_slice(&[value]).expect("share"));
    }
    assert!(
        pool.outbox_len() >= WAITING,
        "the worker's socket never filled ({} objects made)",
        objects.len()
    );
    let queued = pool.submit(square, 3);
    open_gate(KEY);
    within_watchdog(move || {
        assert_eq!(busy.result(), Ok(KEY));
        assert_eq!(queued.result(), Ok(9));
        assert_eq!(pool.outbox_len(), 0);
        drop(pool);
        drop(objects);
    });
}

/// A pool of two thread workers controlled through their mailboxes (yields, reclaims).
fn mailbox_pool(builder: crate::PoolBuilder) -> Pool {
    let pool = builder
        .workers(2)
        .build_with(Box::new(crate::thread_backend::MailboxThreadLauncher))
        .expect("thread workers start");
    while pool.stats().workers.len() < 2 {
        std::thread::sleep(Duration::from_millis(1));
    }
    pool
}

/// Item 0 waits for the gate `key`; every item returns which thread ran it.
#[procpool::task]
fn first_gated(args: (u64, u64)) -> String {
    let (key, item) = args;
    if item == 0 {
        pass_gate(key);
    }
    format!("{:?}", std::thread::current().id())
}

/// Items a worker gives back from its running chunk (a yield of the later half,
/// `Split::Half`) are refunded to its `max_tasks_per_child` budget (`core::refund`): each
/// worker has exactly its budget less the items it ran left. One chunk holds all eight items
/// and its first waits at a gate while the other worker is idle, so the scheduler asks for the
/// later half at once (in the dispatch that sent the chunk, which `stats` waits out); the gate
/// opens after that. Without the refund the yielding worker's budget is spent by items it
/// never ran: it is recycled early, with nothing left.
#[test]
fn yielded_items_do_not_count_toward_max_tasks_per_child() {
    const KEY: u64 = 10;
    const BUDGET: u64 = 8;
    let pool = mailbox_pool(Pool::builder().max_tasks_per_child(BUDGET));
    std::thread::scope(|scope| {
        scope.spawn(|| {
            wait_gate_started(KEY);
            // Under the core lock: after the dispatch that sent the chunk and asked for half.
            let _ = pool.stats();
            open_gate(KEY);
        });
        let ran_by: Vec<String> = pool
            .map(first_gated, (0..BUDGET).map(|item| (KEY, item)))
            .chunksize(std::num::NonZeroUsize::new(BUDGET as usize).unwrap())
            .map(|outcome| outcome.expect("first_gated succeeds"))
            .collect();
        let mut runs: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
        for thread in ran_by {
            *runs.entry(thread).or_default() += 1;
        }
        assert_eq!(
            runs.len(),
            2,
            "the chunk was split between the workers: {runs:?}"
        );
        let mut want: Vec<u64> = runs.values().map(|ran| BUDGET - ran).collect();
        want.sort_unstable();
        let mut left = pool.budgets_left();
        left.sort_unstable();
        assert_eq!(
            left, want,
            "budgets left (of workers not stopping) for {runs:?}"
        );
    });
}

/// While a chunk taken back from a worker is still ahead of it (the mark in its claim word is
/// pending), that worker gets no chunk beyond the one it runs (`Scheduler::set_prefetch`): a
/// second mark cannot be set, so a chunk queued there would wait for whatever it runs. Both
/// workers are held at gates with a call queued behind each; the first is let go, runs its own
/// queued call and takes the other's back (the mark stays pending: the other is still held).
/// A map started then must finish on the free worker alone while the other is held. With the
/// rule broken a chunk of it queues behind the held call, which the free worker cannot take
/// back, and the map waits for the gate (here: the test's watchdog).
#[test]
fn no_chunk_queues_behind_a_worker_with_a_pending_reclaim_mark() {
    const OPEN: u64 = 20;
    const FIRST: u64 = 21;
    const HELD: u64 = 22;
    let pool = mailbox_pool(Pool::builder());
    // Teach the scheduler both tasks' costs (it prefetches only known ones).
    open_gate(OPEN);
    for _ in 0..2 {
        assert_eq!(pool.call(gated, OPEN), Ok(OPEN));
    }
    for outcome in pool.map(worker_thread, 0..2_000u64) {
        outcome.expect("worker_thread succeeds");
    }
    let first = pool.submit(gated, FIRST);
    wait_gate_started(FIRST);
    let held = pool.submit(gated, HELD);
    wait_gate_started(HELD);
    let queued = [pool.submit(worker_thread, 1), pool.submit(worker_thread, 2)];
    open_gate(FIRST);
    assert_eq!(first.result(), Ok(FIRST));
    let ran: Vec<String> = queued
        .into_iter()
        .map(|handle| match handle.result_timeout(WATCHDOG) {
            Ok(outcome) => outcome.expect("worker_thread succeeds"),
            Err(_) => panic!("a queued call stayed behind the held worker"),
        })
        .collect();
    assert_eq!(ran[0], ran[1], "both queued calls ran on the free worker");
    assert!(!held.done(), "the other worker is still held");
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        let pool = &pool;
        scope.spawn(move || {
            let threads: Result<Vec<String>, _> = pool.map(worker_thread, 0..1_000u64).collect();
            let _ = done.send(threads);
        });
        let threads = finished.recv_timeout(WATCHDOG);
        // Let the held worker go either way, so the map (and the scope) can end.
        open_gate(HELD);
        let threads = threads
            .unwrap_or_else(|_| panic!("part of the map stayed behind the held worker"))
            .expect("worker_thread succeeds");
        assert_eq!(threads.len(), 1_000);
        assert!(
            threads.iter().all(|thread| *thread == ran[0]),
            "the map ran on the free worker"
        );
    });
    assert_eq!(held.result(), Ok(HELD));
}

/// A dormant reader sleeps on its bell, which hears the link's socket hang up: the end of an
/// idle worker is seen at once, with no timer to run out (ten minutes here). Before the bell,
/// a dormant reader noticed an idle worker's end only at its next timed look.
#[test]
fn an_idle_workers_end_wakes_its_dormant_reader() {
    let (mut hooks, dormant) = report_blocking_at("reader dormant");
    hooks.dormant_slice = Some(Duration::from_secs(600));
    let pool = Pool::builder()
        .workers(1)
        .build_with_hooks(Box::new(ThreadLauncher), hooks)
        .expect("the worker starts");
    // Helped: the reader steps aside and stays dormant (its worker holds nothing), unless it
    // won the race for the outcome itself and went back to its ring: then call again.
    let deadline = std::time::Instant::now() + WATCHDOG;
    loop {
        assert_eq!(pool.call(square, 4), Ok(16));
        if dormant.recv_timeout(Duration::from_millis(100)).is_ok() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the reader never went dormant"
        );
    }
    let pid = pool.stats().workers[0].pid;
    crate::thread_backend::kill(pid);
    within_watchdog(move || {
        while pool.stats().deaths == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(pool.call(square, 5), Ok(25), "the replacement serves");
        assert_ne!(pool.stats().workers[0].pid, pid);
        drop(pool);
    });
}
