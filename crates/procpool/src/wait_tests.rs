//! Unit tests for `wait` and `as_completed`, with handles completed by hand from threads.

use std::thread;
use std::time::Duration;

use super::*;
use crate::handle::{Completer, task_pair};

/// Long enough that a test only waits this long when something is broken.
const WATCHDOG: Duration = Duration::from_secs(30);

fn pairs(n: usize) -> (Vec<TaskHandle<usize>>, Vec<Completer<usize>>) {
    (0..n).map(|_| task_pair()).unzip()
}

#[test]
fn wait_first_completed_returns_the_one_that_finished() {
    let (handles, mut completers) = pairs(4);
    let third = completers.remove(2);
    let thread = thread::spawn(move || third.complete(Ok(2)));
    let (done, pending) = wait(&handles, Wait::FirstCompleted, Some(WATCHDOG));
    thread.join().unwrap();
    assert_eq!(done, vec![2]);
    assert_eq!(pending, vec![0, 1, 3]);
}

#[test]
fn wait_all_completed_waits_for_every_task() {
    let (handles, completers) = pairs(16);
    let thread = thread::spawn(move || {
        for (idx, completer) in completers.into_iter().enumerate().rev() {
            completer.complete(Ok(idx));
        }
    });
    let (done, pending) = wait(&handles, Wait::AllCompleted, Some(WATCHDOG));
    thread.join().unwrap();
    assert_eq!(done, (0..16).collect::<Vec<_>>());
    assert!(pending.is_empty());
    for (idx, handle) in handles.into_iter().enumerate() {
        assert_eq!(handle.result(), Ok(idx));
    }
}

#[test]
fn wait_first_error_skips_successes_and_cancellations() {
    let (handles, mut completers) = pairs(4);
    // Finished before the wait: one success and one cancellation, neither counts as an error.
    completers[0].complete(Ok(0));
    assert!(handles[1].cancel());
    let failing = completers.remove(3);
    let thread = thread::spawn(move || failing.complete(Err(TaskError::Failed("no".into()))));
    let (done, pending) = wait(&handles, Wait::FirstError, Some(WATCHDOG));
    thread.join().unwrap();
    assert_eq!(done, vec![0, 1, 3]);
    assert_eq!(pending, vec![2]);
}

#[test]
fn wait_first_error_without_errors_waits_for_all() {
    let (handles, completers) = pairs(3);
    let thread = thread::spawn(move || {
        for (idx, completer) in completers.into_iter().enumerate() {
            completer.complete(Ok(idx));
        }
    });
    let (done, pending) = wait(&handles, Wait::FirstError, Some(WATCHDOG));
    thread.join().unwrap();
    assert_eq!(done, vec![0, 1, 2]);
    assert!(pending.is_empty());
}

#[test]
fn wait_times_out_with_everything_pending() {
    let (handles, completers) = pairs(3);
    let (done, pending) = wait(
        &handles,
        Wait::AllCompleted,
        Some(Duration::from_millis(20)),
    );
    assert!(done.is_empty());
    assert_eq!(pending, vec![0, 1, 2]);
    completers[1].complete(Ok(1));
    let (done, pending) = wait(&handles, Wait::FirstCompleted, Some(WATCHDOG));
    assert_eq!((done, pending), (vec![1], vec![0, 2]));
    drop(completers);
    let (done, _) = wait(&handles, Wait::AllCompleted, None);
    assert_eq!(done.len(), 3);
}

#[test]
fn wait_on_nothing_returns_at_once() {
    let handles: Vec<TaskHandle<u8>> = Vec::new();
    assert_eq!(wait(&handles, Wait::AllCompleted, None), (vec![], vec![]));
}

#[test]
fn as_completed_yields_in_completion_order() {
    let (handles, completers) = pairs(5);
    let order = [3, 0, 4, 1, 2];
    let mut completers: Vec<Option<Completer<usize>>> = completers.into_iter().map(Some).collect();
    let mut iter = as_completed(handles);
    assert_eq!(iter.len(), 5);
    for &idx in &order {
        completers[idx].take().unwrap().complete(Ok(idx * 10));
        assert_eq!(iter.next(), Some((idx, Ok(idx * 10))));
    }
    assert_eq!(iter.next(), None);
}

#[test]
fn as_completed_collects_everything_completed_concurrently() {
    let (handles, completers) = pairs(200);
    let mut groups: Vec<Vec<(usize, Completer<usize>)>> = (0..4).map(|_| Vec::new()).collect();
    for (idx, completer) in completers.into_iter().enumerate() {
        groups[idx % 4].push((idx, completer));
    }
    let threads: Vec<_> = groups
        .into_iter()
        .map(|group| {
            thread::spawn(move || {
                for (idx, completer) in group {
                    completer.complete(Ok(idx));
                }
            })
        })
        .collect();
    let mut seen: Vec<usize> = as_completed(handles)
        .map(|(idx, outcome)| {
            assert_eq!(outcome, Ok(idx));
            idx
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..200).collect::<Vec<_>>());
}

#[test]
fn as_completed_timeout_reports_timeout_and_returns_the_rest() {
    let (handles, completers) = pairs(3);
    completers[1].complete(Ok(11));
    let mut iter = as_completed_timeout(handles, Duration::from_millis(30));
    assert_eq!(iter.next(), Some(Ok((1, Ok(11)))));
    assert_eq!(iter.next(), Some(Err(Timeout)));
    assert_eq!(iter.next(), None);
    let pending = iter.into_pending();
    assert_eq!(
        pending.iter().map(|(idx, _)| *idx).collect::<Vec<_>>(),
        vec![0, 2]
    );
    completers[0].complete(Ok(0));
    let (idx, handle) = pending.into_iter().next().unwrap();
    assert_eq!((idx, handle.result()), (0, Ok(0)));
}
