//! Liveness: a worker that holds work but stops answering the pool's pings is killed after the
//! pool's `liveness_timeout`, also for calls without a timeout; an honest long task is not.

use std::time::Duration;

use nix::sys::signal::Signal;
use procpool::TaskError;
use procpool_tests::{mark_then_sleep, nap, square};

use crate::util::{builder, signal, wait_marker, watchdog};

/// Short enough to keep the tests fast; the checks below never depend on how fast it fires.
const LIVENESS: Duration = Duration::from_millis(500);

/// A worker stopped with SIGSTOP in the middle of a call without a timeout: the call ends with
/// `Unresponsive` naming that worker (instead of waiting forever), the stopped process is
/// killed and reaped, the queued work runs on the replacement, and the pool answers afterwards.
#[test]
fn sigstopped_worker_is_killed_and_its_call_ends_unresponsive() {
    let _watchdog = watchdog("sigstopped_worker_is_killed_and_its_call_ends_unresponsive");
    let pool = builder(1).liveness_timeout(LIVENESS).build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("started");
    // Ten minutes of sleep and no timeout: only the liveness check can end it.
    let victim = pool.submit(
        mark_then_sleep,
        (marker.to_str().unwrap().to_owned(), 600_000),
    );
    let queued: Vec<_> = (0..10).map(|x| pool.submit(square, x)).collect();
    wait_marker(&marker);
    let pid = pool.stats().workers[0].pid;
    signal(pid, Signal::SIGSTOP);
    match victim.result() {
        Err(TaskError::Unresponsive { pid: killed, limit }) => {
            assert_eq!(killed, pid);
            assert_eq!(limit, LIVENESS);
        }
        other => panic!("expected Unresponsive, got {other:?}"),
    }
    for (x, handle) in queued.into_iter().enumerate() {
        assert_eq!(handle.result(), Ok((x * x) as u64), "queued work survives");
    }
    let stats = pool.stats();
    assert_eq!(stats.deaths, 1);
    assert_ne!(stats.workers[0].pid, pid, "the stopped worker was replaced");
    let gone = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        None,
    );
    assert!(gone.is_err(), "the stopped worker was killed and reaped");
    assert_eq!(pool.call(square, 7), Ok(49));
}

/// The same with `.retries(1)`: the stopped worker's item runs again on the replacement and
/// succeeds.
#[test]
fn sigstopped_worker_item_is_retried_when_asked() {
    let _watchdog = watchdog("sigstopped_worker_item_is_retried_when_asked");
    let pool = builder(1).liveness_timeout(LIVENESS).build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("started");
    // Long enough that the stop surely lands while the first run sleeps; the rerun (after the
    // replacement starts) sleeps as long, so the test costs about 2 s.
    let victim = pool
        .task(mark_then_sleep)
        .retries(1)
        .submit((marker.to_str().unwrap().to_owned(), 2_000));
    wait_marker(&marker);
    let pid = pool.stats().workers[0].pid;
    signal(pid, Signal::SIGSTOP);
    let ran_on = victim.result().expect("the retried item succeeds");
    assert_ne!(ran_on, pid, "the retry ran on the replacement");
    assert_eq!(pool.stats().deaths, 1);
}

/// An honest task that sleeps for four liveness timeouts is not killed: the worker's heartbeat
/// thread answers the pings while the task thread sleeps.
#[test]
fn long_honest_task_outlives_many_liveness_timeouts() {
    let _watchdog = watchdog("long_honest_task_outlives_many_liveness_timeouts");
    let pool = builder(1).liveness_timeout(LIVENESS).build().unwrap();
    let pid = pool.stats().workers[0].pid;
    let millis = 4 * u64::try_from(LIVENESS.as_millis()).unwrap();
    assert_eq!(pool.call(nap, millis), Ok(millis));
    let stats = pool.stats();
    assert_eq!(stats.deaths, 0, "no worker was killed");
    assert_eq!(stats.workers[0].pid, pid);
}

/// With the check turned off (`Duration::ZERO`), a stopped worker is left alone: the call is
/// still waiting after several would-be timeouts, and ends once the worker is continued.
#[test]
fn liveness_check_can_be_turned_off() {
    let _watchdog = watchdog("liveness_check_can_be_turned_off");
    let pool = builder(1).liveness_timeout(Duration::ZERO).build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("started");
    let handle = pool.submit(mark_then_sleep, (marker.to_str().unwrap().to_owned(), 50));
    wait_marker(&marker);
    let pid = pool.stats().workers[0].pid;
    signal(pid, Signal::SIGSTOP);
    std::thread::sleep(4 * LIVENESS);
    assert!(!handle.done(), "nothing ended the stopped worker's call");
    signal(pid, Signal::SIGCONT);
    assert_eq!(handle.result(), Ok(pid));
    assert_eq!(pool.stats().deaths, 0);
}
