//! Building, shutting down, recycling and concurrent use of real process pools.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use procpool::{ErrorKind, Pool, TaskError};
use procpool_tests::{
    add_offset, env_var, failing_init, offset_first_start_only, set_offset, sigint_state,
    sleep_then_pid, square, worker_pid,
};

use crate::util::{
    assert_gets_work, attach, builder, measuring_alone, pool, shutdown_and_expect_clean_exit,
    wait_running, wait_started, watchdog,
};

#[test]
fn submit_after_shutdown_is_an_error() {
    let _watchdog = watchdog("submit_after_shutdown_is_an_error");
    let pool = pool(1);
    assert_eq!(pool.call(square, 2), Ok(4));
    pool.shutdown();
    assert!(!pool.is_open());
    assert_eq!(pool.submit(square, 2).result(), Err(TaskError::PoolClosed));
    assert_eq!(
        pool.map(square, 0..3).next(),
        Some(Err(TaskError::PoolClosed))
    );
}

#[test]
fn shutdown_finishes_queued_work() {
    let _watchdog = watchdog("shutdown_finishes_queued_work");
    let pool = pool(2);
    let handles: Vec<_> = (0..1_000).map(|x| pool.submit(square, x)).collect();
    pool.shutdown();
    for (x, handle) in handles.into_iter().enumerate() {
        assert_eq!(handle.result(), Ok((x * x) as u64));
    }
}

#[test]
fn shutdown_now_cancels_queued_and_lets_running_finish() {
    let _watchdog = watchdog("shutdown_now_cancels_queued_and_lets_running_finish");
    let pool = pool(1);
    let running = pool.submit(sleep_then_pid, 300);
    let queued: Vec<_> = (0..20).map(|_| pool.submit(sleep_then_pid, 300)).collect();
    wait_running(&running);
    pool.shutdown_now();
    assert!(running.result().is_ok(), "the running task finishes");
    let outcomes: Vec<_> = queued.into_iter().map(|h| h.result()).collect();
    let cancelled = outcomes
        .iter()
        .filter(|o| **o == Err(TaskError::Cancelled))
        .count();
    let finished = outcomes.iter().filter(|o| o.is_ok()).count();
    assert_eq!(
        cancelled + finished,
        20,
        "every task ends cancelled or finished: {outcomes:?}"
    );
    // At most the one chunk prefetched into the worker ran; the rest was cancelled.
    assert!(
        cancelled >= 19,
        "only {cancelled} of 20 queued tasks were cancelled"
    );
}

#[test]
fn eight_threads_submitting_concurrently_lose_nothing() {
    let _watchdog = watchdog("eight_threads_submitting_concurrently_lose_nothing");
    let pool = Arc::new(pool(2));
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let pool = Arc::clone(&pool);
            std::thread::spawn(move || {
                let handles: Vec<_> = (0..2_000u64)
                    .map(|i| (i, pool.submit(square, t * 10_000 + i)))
                    .collect();
                handles
                    .into_iter()
                    .filter(|(i, handle)| handle_value(handle) != Some((t * 10_000 + i).pow(2)))
                    .count()
            })
        })
        .collect();
    let lost: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(lost, 0);
    assert_eq!(pool.stats().tasks_done, 16_000);
}

fn handle_value(handle: &procpool::TaskHandle<u64>) -> Option<u64> {
    handle.wait();
    let (tx, rx) = std::sync::mpsc::channel();
    handle.on_done(move |outcome| tx.send(outcome.clone().ok()).unwrap());
    rx.recv().unwrap()
}

#[test]
fn max_tasks_per_child_one_gives_a_new_pid_per_task() {
    let _watchdog = watchdog("max_tasks_per_child_one_gives_a_new_pid_per_task");
    let pool = builder(2).max_tasks_per_child(1).build().unwrap();
    let pids: Vec<u32> = pool
        .map(worker_pid, 0..10)
        .collect::<Result<_, _>>()
        .unwrap();
    let unique: HashSet<u32> = pids.iter().copied().collect();
    assert_eq!(unique.len(), 10, "pids: {pids:?}");
    assert!(!unique.contains(&std::process::id()));
}

#[test]
fn initializer_runs_in_every_worker() {
    let _watchdog = watchdog("initializer_runs_in_every_worker");
    let pool = builder(2).initializer(set_offset, 1_000).build().unwrap();
    let got: Vec<u64> = pool
        .map(add_offset, 0..100)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(got, (1_000..1_100).collect::<Vec<u64>>());
}

/// A replacement worker whose initializer fails (its resource disappeared after `build`) is
/// retried a bounded number of times, then the slot is given up: with no worker left, calls end
/// with `NoWorkers` naming the initializer's failure instead of respawning forever.
#[test]
fn initializer_failing_after_build_gives_up_the_slot_after_bounded_attempts() {
    let _watchdog =
        watchdog("initializer_failing_after_build_gives_up_the_slot_after_bounded_attempts");
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("gone");
    let flag_str = flag.to_str().unwrap().to_owned();
    let pool = builder(1)
        .initializer(procpool_tests::offset_unless_flag, (flag_str.clone(), 7))
        .build()
        .unwrap();
    assert_eq!(pool.call(add_offset, 1), Ok(8));
    std::fs::write(&flag, b"the resource is gone").unwrap();
    let pid = pool.stats().workers[0].pid;
    crate::util::signal(pid, nix::sys::signal::Signal::SIGKILL);
    while pool.stats().deaths == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    match pool.call(add_offset, 2) {
        Err(TaskError::NoWorkers(why)) => assert!(why.contains("exists"), "{why}"),
        other => panic!("expected NoWorkers, got {other:?}"),
    }
    assert!(!pool.is_open());
    assert!(pool.stats().workers.is_empty());
    let attempts = std::fs::read_to_string(format!("{flag_str}.failures"))
        .unwrap()
        .lines()
        .count();
    assert!(
        (1..=5).contains(&attempts),
        "{attempts} replacement attempts; the bound is 5"
    );
    // Nothing keeps trying in the background.
    std::thread::sleep(Duration::from_millis(300));
    let later = std::fs::read_to_string(format!("{flag_str}.failures"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(later, attempts, "no further attempts after giving up");
}

#[test]
fn failing_initializer_fails_build() {
    let _watchdog = watchdog("failing_initializer_fails_build");
    let err = builder(2)
        .initializer(failing_init, "no database".to_owned())
        .build()
        .expect_err("the initializer fails");
    assert_eq!(err.kind(), ErrorKind::InitializerFailed);
    assert!(err.to_string().contains("no database"), "{err}");
}

#[test]
fn missing_worker_program_fails_build() {
    let _watchdog = watchdog("missing_worker_program_fails_build");
    let err = Pool::builder()
        .workers(1)
        .program("/nonexistent/procpool-worker")
        .build()
        .expect_err("the program does not exist");
    assert_eq!(err.kind(), ErrorKind::Spawn, "{err}");
}

/// `.program(name)` with a name without a `/` finds the worker program through the `PATH` the
/// workers get (the builder's `env`), with either start method; a name found nowhere fails
/// `build` with a spawn error naming it.
#[test]
fn a_worker_program_named_without_a_slash_is_found_through_path() {
    let _watchdog = watchdog("a_worker_program_named_without_a_slash_is_found_through_path");
    procpool_tests::keep_tasks();
    let name = "procpool-path-test-worker";
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_test-worker"), dir.path().join(name)).unwrap();
    for method in [
        procpool::StartMethod::Spawn,
        procpool::StartMethod::ForkServer,
    ] {
        let pool = Pool::builder()
            .workers(1)
            .start_method(method)
            .program(name)
            .env("PATH", dir.path())
            .build()
            .unwrap_or_else(|err| panic!("{method:?}: the worker is found through PATH: {err}"));
        assert_eq!(pool.call(square, 7), Ok(49), "{method:?}");
        pool.shutdown();
    }
    let empty = tempfile::tempdir().unwrap();
    let err = Pool::builder()
        .workers(1)
        .program(name)
        .env("PATH", empty.path())
        .build()
        .expect_err("no directory of PATH has it");
    assert_eq!(err.kind(), ErrorKind::Spawn, "{err}");
    let message = format!("{err:#}");
    let chain = std::iter::successors(std::error::Error::source(&err), |cause| cause.source())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ");
    assert!(
        message.contains(name) || chain.contains(name),
        "the error names the program: {message}: {chain}"
    );
}

#[test]
fn worker_program_without_init_fails_build() {
    let _watchdog = watchdog("worker_program_without_init_fails_build");
    let err = Pool::builder()
        .workers(1)
        .program("/bin/true")
        .start_timeout(Duration::from_secs(20))
        .build()
        .expect_err("/bin/true is no worker");
    assert!(
        matches!(err.kind(), ErrorKind::Spawn | ErrorKind::Handshake),
        "{err:?}"
    );
}

#[test]
fn zero_workers_is_invalid() {
    let err = builder(0).build().expect_err("zero workers");
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
}

#[test]
fn stats_report_workers_and_work() {
    let _watchdog = watchdog("stats_report_workers_and_work");
    let pool = pool(2);
    let pids: HashSet<u32> = pool.map(worker_pid, 0..200).map(Result::unwrap).collect();
    let stats = pool.stats();
    assert_eq!(stats.workers.len(), 2);
    assert_eq!(stats.tasks_done, 200);
    let worker_pids: HashSet<u32> = stats.workers.iter().map(|w| w.pid).collect();
    assert!(pids.is_subset(&worker_pids), "{pids:?} vs {worker_pids:?}");
    assert_eq!(stats.deaths, 0);
    assert_eq!(stats.jobs, 0, "nothing is pending");
    assert_eq!((stats.queued, stats.in_flight), (0, 0));
    let _ = pool.call(square, 1);
    assert_eq!(pool.stats().jobs, 0, "an idle submit stream is not a job");
}

#[test]
fn fork_server_pool_runs_tasks() {
    let _watchdog = watchdog("fork_server_pool_runs_tasks");
    let pool = builder(2)
        .start_method(procpool::StartMethod::ForkServer)
        .build()
        .unwrap();
    let got: Vec<u64> = pool
        .map(square, 0..1_000)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(got[999], 999 * 999);
}

/// Kills and reaps a child process when dropped, so a failing test leaves none behind.
#[test]
fn worker_attached_through_listen_receives_work() {
    let _watchdog = watchdog("worker_attached_through_listen_receives_work");
    let dir = tempfile::tempdir().unwrap();
    let pool = pool(1);
    let socket = pool.listen(dir.path().join("pool.sock")).unwrap();
    let attached = attach(&pool, env!("CARGO_BIN_EXE_test-worker"), &socket);
    assert_eq!(pool.stats().workers.len(), 2);
    assert_gets_work(&pool, attached.0.id());
    // Shutdown stops the attached worker too; it exits cleanly.
    shutdown_and_expect_clean_exit(pool, attached);
}

/// Closing a pool whose `listen` is waiting for a peer wakes the acceptor at once: it waits for
/// a peer up to an hour between looks at the pool's phase, so a close that had to wait for that
/// look would miss the deadline. The socket file is gone afterwards.
#[test]
fn closing_a_listening_pool_wakes_its_acceptor_and_removes_the_socket() {
    let _watchdog = watchdog("closing_a_listening_pool_wakes_its_acceptor_and_removes_the_socket");
    let dir = tempfile::tempdir().unwrap();
    let pool = pool(1);
    let socket = pool.listen(dir.path().join("pool.sock")).unwrap();
    assert!(socket.exists());
    let (closed_tx, closed_rx) = std::sync::mpsc::channel();
    let closer = std::thread::spawn(move || {
        pool.shutdown();
        drop(pool);
        let _ = closed_tx.send(());
    });
    closed_rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("closing a listening pool ends without waiting for its acceptor's next look");
    closer.join().unwrap();
    assert!(!socket.exists(), "the socket file is removed on close");
}

#[test]
fn map_async_handle_is_waited_on_later() {
    let _watchdog = watchdog("map_async_handle_is_waited_on_later");
    let pool = pool(2);
    let handle = pool.map_async(square, 0..10_000u64);
    let outcomes = handle.result().expect("the map ran");
    assert_eq!(outcomes.len(), 10_000);
    for (x, outcome) in outcomes.into_iter().enumerate() {
        assert_eq!(outcome, Ok((x * x) as u64));
    }
}

/// Whether process `pid` still exists (as anything but a zombie we own).
fn alive(pid: u32) -> bool {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap());
    nix::sys::signal::kill(pid, None).is_ok()
}

#[test]
fn dropping_the_pool_leaves_no_worker_process() {
    let _watchdog = watchdog("dropping_the_pool_leaves_no_worker_process");
    let pool = pool(2);
    assert_eq!(pool.call(square, 3), Ok(9));
    let pids: Vec<u32> = pool.stats().workers.iter().map(|w| w.pid).collect();
    assert_eq!(pids.len(), 2);
    assert!(pids.iter().all(|&pid| alive(pid)));
    drop(pool);
    for pid in pids {
        assert!(!alive(pid), "worker {pid} outlived its pool");
    }
}

#[test]
fn dropping_the_pool_during_a_panic_terminates_promptly() {
    let _watchdog = watchdog("dropping_the_pool_during_a_panic_terminates_promptly");
    let mut pids = Vec::new();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let pool = pool(2);
        let busy: Vec<_> = (0..4)
            .map(|_| pool.submit(sleep_then_pid, 60_000))
            .collect();
        wait_running(&busy[0]);
        pids = pool.stats().workers.iter().map(|w| w.pid).collect();
        panic!("test panic with a busy pool");
    }));
    assert!(caught.is_err());
    // The pool was dropped while unwinding: it terminated its workers instead of waiting a
    // minute for their tasks (the watchdog would end the test if it waited).
    for pid in pids {
        assert!(!alive(pid), "worker {pid} outlived its pool");
    }
}

#[test]
fn callbacks_can_submit_more_work() {
    let _watchdog = watchdog("callbacks_can_submit_more_work");
    let pool = Arc::new(pool(2));
    let (tx, rx) = std::sync::mpsc::channel();
    let first = pool.submit(square, 3);
    let inner_pool = Arc::clone(&pool);
    first.on_done(move |outcome| {
        let x = *outcome.as_ref().unwrap();
        let second = inner_pool.submit(square, x);
        second.on_done(move |outcome| tx.send(outcome.clone()).unwrap());
    });
    assert_eq!(rx.recv().unwrap(), Ok(81));
}

#[test]
fn shutdown_timeout_gives_up_and_leaves_work_running() {
    let _watchdog = watchdog("shutdown_timeout_gives_up_and_leaves_work_running");
    let pool = pool(1);
    let slow = pool.submit(sleep_then_pid, 1_000);
    assert!(
        !pool.shutdown_timeout(Duration::from_millis(20)),
        "the slow task is still running"
    );
    assert!(!pool.is_open());
    assert_eq!(pool.submit(square, 1).result(), Err(TaskError::PoolClosed));
    assert!(
        slow.result().is_ok(),
        "giving up the wait does not cancel the task"
    );
    assert!(pool.shutdown_timeout(Duration::from_secs(60)));
}

/// `shutdown_now_timeout` with a task that never ends (ten minutes of spinning): queued work
/// is cancelled, the wait gives up at the timeout, and `terminate` then ends the running task.
/// With only a short task running it closes the pool.
#[test]
fn shutdown_now_timeout_gives_up_on_a_never_ending_task() {
    let _watchdog = watchdog("shutdown_now_timeout_gives_up_on_a_never_ending_task");
    let pool = pool(1);
    let endless = pool.submit(procpool::builtin::spin_for, 600_000_000);
    wait_running(&endless);
    let queued: Vec<_> = (0..5).map(|x| pool.submit(square, x)).collect();
    assert!(
        !pool.shutdown_now_timeout(Duration::from_millis(50)),
        "the endless task is still running"
    );
    for handle in queued {
        assert_eq!(handle.result(), Err(TaskError::Cancelled));
    }
    assert!(
        !endless.done(),
        "giving up the wait does not end the running task"
    );
    assert_eq!(pool.submit(square, 1).result(), Err(TaskError::PoolClosed));
    pool.terminate();
    assert_eq!(endless.result(), Err(TaskError::Terminated));

    let pool = self::pool(1);
    let short = pool.submit(sleep_then_pid, 20);
    wait_running(&short);
    assert!(pool.shutdown_now_timeout(Duration::from_secs(60)));
    assert!(short.result().is_ok());
}

#[test]
fn shutdown_and_drop_from_a_callback_do_not_deadlock() {
    let _watchdog = watchdog("shutdown_and_drop_from_a_callback_do_not_deadlock");
    let pool = Arc::new(pool(1));
    // Work queued behind the task whose callback shuts the pool down.
    let first = pool.submit(square, 2);
    let later: Vec<_> = (0..50).map(|x| pool.submit(square, x)).collect();
    let pids: Vec<u32> = pool.stats().workers.iter().map(|w| w.pid).collect();
    let in_callback = Arc::clone(&pool);
    first.on_done(move |_| {
        in_callback.shutdown();
        // The last reference may go here too: dropping the pool on its own thread.
        drop(in_callback);
    });
    drop(pool);
    for (x, handle) in later.into_iter().enumerate() {
        assert_eq!(
            handle.result(),
            Ok((x * x) as u64),
            "accepted work still finishes"
        );
    }
    // The workers are stopped once that work is done.
    for pid in pids {
        while alive(pid) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[test]
fn worker_program_that_forgets_init_does_not_recurse() {
    let _watchdog = watchdog("worker_program_that_forgets_init_does_not_recurse");
    let err = Pool::builder()
        .workers(1)
        .program(env!("CARGO_BIN_EXE_no-init-worker"))
        .build()
        .expect_err("a program without init() is no worker");
    // Its own build() refused (exit code 3) instead of starting workers of its own.
    assert!(err.to_string().contains("exited with code 3"), "{err}");
}

#[test]
fn workers_get_the_environment_they_are_given() {
    let _watchdog = watchdog("workers_get_the_environment_they_are_given");
    let pool = builder(1)
        .env("PROCPOOL_TEST_GREETING", "hello")
        .build()
        .unwrap();
    assert_eq!(
        pool.call(env_var, "PROCPOOL_TEST_GREETING".to_owned()),
        Ok(Some("hello".to_owned()))
    );
}

/// Open file descriptors of this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn every_shutdown_path_releases_the_pools_file_descriptors() {
    let _watchdog = watchdog("every_shutdown_path_releases_the_pools_file_descriptors");
    // Other tests start processes and open descriptors concurrently in this process.
    if !measuring_alone(
        "lifecycle::every_shutdown_path_releases_the_pools_file_descriptors",
        "PROCPOOL_TEST_FD_CHILD",
    ) {
        return;
    }
    // Warm-up: one-time descriptors (e.g. the spawner thread's) are not the pool's.
    drop(pool(2));
    let before = open_fds();
    for end in ["drop", "shutdown", "shutdown_now", "terminate"] {
        let pool = pool(2);
        let handles: Vec<_> = (0..20).map(|x| pool.submit(square, x)).collect();
        let _ = pool.map(square, 0..1_000).count();
        match end {
            "shutdown" => pool.shutdown(),
            "shutdown_now" => pool.shutdown_now(),
            "terminate" => pool.terminate(),
            _ => {}
        }
        drop(pool);
        drop(handles);
        assert_eq!(open_fds(), before, "descriptors left open after `{end}`");
    }
}

/// The live child processes (and zombies) of this process: the spawner thread forks them,
/// so every thread's `children` list is read.
fn child_processes() -> Vec<u32> {
    let mut children = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let Ok(list) = std::fs::read_to_string(task.path().join("children")) else {
            continue;
        };
        children.extend(
            list.split_whitespace()
                .map(|pid| pid.parse::<u32>().unwrap()),
        );
    }
    children
}

#[test]
fn stopping_while_workers_start_leaves_no_process_and_no_descriptor() {
    let _watchdog = watchdog("stopping_while_workers_start_leaves_no_process_and_no_descriptor");
    // Other tests start processes and open descriptors concurrently in this process.
    if !measuring_alone(
        "lifecycle::stopping_while_workers_start_leaves_no_process_and_no_descriptor",
        "PROCPOOL_TEST_STARTING_CHILD",
    ) {
        return;
    }
    // Warm-up: one-time descriptors (e.g. the spawner thread's) are not the pool's.
    drop(pool(2));
    let before = open_fds();
    assert_eq!(child_processes(), Vec::<u32>::new());
    // `build` returns once the first worker is ready; the other three are still being
    // launched or in their handshake when the pool is stopped (usually: the test holds
    // either way).
    for end in [
        "drop",
        "shutdown",
        "shutdown_now",
        "terminate",
        "call then drop",
    ] {
        let pool = builder(4).build().unwrap();
        match end {
            "shutdown" => pool.shutdown(),
            "shutdown_now" => pool.shutdown_now(),
            "terminate" => pool.terminate(),
            "call then drop" => assert_eq!(pool.call(square, 5), Ok(25)),
            _ => {}
        }
        drop(pool);
        assert_eq!(
            child_processes(),
            Vec::<u32>::new(),
            "processes left after `{end}`"
        );
        assert_eq!(open_fds(), before, "descriptors left open after `{end}`");
    }
}

#[test]
fn workers_that_join_after_build_get_work() {
    let _watchdog = watchdog("workers_that_join_after_build_get_work");
    let pool = builder(3).build().unwrap();
    // Queued before every worker is ready: the late ones take their share once ready.
    let pids: HashSet<u32> = pool
        .map(sleep_then_pid, std::iter::repeat_n(20, 30))
        .chunksize(std::num::NonZeroUsize::new(1).unwrap())
        .map(Result::unwrap)
        .collect();
    wait_started(&pool, 3);
    assert_eq!(pool.stats().starting, 0);
    assert!(pids.len() >= 2, "only {pids:?} ran the 30 items of 20 ms");
    // And every worker serves later work.
    let later: HashSet<u32> = pool
        .map(sleep_then_pid, std::iter::repeat_n(20, 30))
        .chunksize(std::num::NonZeroUsize::new(1).unwrap())
        .map(Result::unwrap)
        .collect();
    assert_eq!(later.len(), 3, "{later:?}");
}

#[test]
fn a_pool_whose_second_worker_cannot_start_works_or_reports_why() {
    let _watchdog = watchdog("a_pool_whose_second_worker_cannot_start_works_or_reports_why");
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("started");
    let marker_str = marker.to_str().unwrap().to_owned();
    let built = builder(2)
        .initializer(offset_first_start_only, (marker_str.clone(), 7))
        .build();
    match built {
        Ok(pool) => {
            // The first worker started; the second is retried a bounded number of times,
            // then its slot is given up. The pool serves meanwhile and after.
            assert_eq!(pool.call(add_offset, 1), Ok(8));
            let results: Vec<u64> = pool.map(add_offset, 0..100).map(Result::unwrap).collect();
            assert_eq!(results, (7..107).collect::<Vec<u64>>());
            // Give the retries (0.1 s to 1.6 s apart, at most 5) time to end.
            let failures = || {
                std::fs::read_to_string(format!("{marker_str}.failures"))
                    .map_or(0, |log| log.lines().count())
            };
            let start = std::time::Instant::now();
            while start.elapsed() < Duration::from_secs(60)
                && (failures() < 5 && pool.stats().workers.len() < 2)
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            assert_eq!(
                failures(),
                5,
                "the second worker is tried 5 times, then given up"
            );
            assert_eq!(pool.stats().workers.len(), 1);
            assert_eq!(pool.call(add_offset, 2), Ok(9));
            pool.shutdown();
        }
        // The background worker's initializer ran first: the one `build` waits for failed.
        Err(err) => assert_eq!(err.kind(), ErrorKind::InitializerFailed, "{err}"),
    }
}

#[test]
fn workers_of_either_start_method_ignore_sigint_and_do_not_block_it() {
    let _watchdog = watchdog("workers_of_either_start_method_ignore_sigint_and_do_not_block_it");
    // A Spawn worker is started with `posix_spawn` and SIGINT blocked across the exec; its
    // `main` ignores SIGINT and unblocks it again (a blocked signal would stay pending).
    for method in [
        procpool::StartMethod::Spawn,
        procpool::StartMethod::ForkServer,
    ] {
        let pool = builder(1).start_method(method).build().unwrap();
        assert_eq!(pool.call(sigint_state, ()), Ok((true, false)), "{method:?}");
    }
}
