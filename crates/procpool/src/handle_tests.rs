//! Unit tests for `TaskHandle` and `Completer`, completed by hand from threads.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Wake, Waker};
use std::thread;
use std::time::Duration;

use super::*;

/// Long enough that a test only waits this long when something is broken.
const WATCHDOG: Duration = Duration::from_secs(30);

#[test]
fn result_returns_the_value_completed_from_another_thread() {
    let (handle, completer) = task_pair::<u64>();
    assert!(!handle.done());
    assert!(!handle.running());
    let thread = thread::spawn(move || {
        assert!(completer.start());
        completer.complete(Ok(27));
    });
    assert_eq!(handle.result(), Ok(27));
    thread.join().unwrap();
}

#[test]
fn running_is_true_between_start_and_completion() {
    let (handle, completer) = task_pair::<u64>();
    assert!(completer.start());
    assert!(handle.running());
    assert!(!handle.done());
    completer.unstart();
    assert!(!handle.running());
    assert!(completer.start());
    assert!(completer.complete(Ok(1)));
    assert!(!handle.running());
    assert!(handle.done());
    assert!(
        !completer.complete(Ok(2)),
        "a second completion must be refused"
    );
    assert_eq!(handle.result(), Ok(1));
}

#[test]
fn result_timeout_leaves_the_handle_usable() {
    let (handle, completer) = task_pair::<String>();
    let handle = match handle.result_timeout(Duration::from_millis(10)) {
        Ok(outcome) => panic!("nothing completed the task, yet it finished: {outcome:?}"),
        Err(timeout) => timeout.into_handle(),
    };
    assert!(!handle.wait_timeout(Duration::from_millis(1)));
    completer.complete(Ok("late".to_owned()));
    assert!(handle.wait_timeout(WATCHDOG));
    assert_eq!(
        handle.result_timeout(WATCHDOG).unwrap(),
        Ok("late".to_owned())
    );
}

#[test]
fn cancel_succeeds_only_before_start() {
    let (handle, completer) = task_pair::<u64>();
    assert!(handle.cancel());
    assert!(handle.cancelled());
    assert!(handle.done());
    assert!(handle.cancel(), "cancelling twice still reports cancelled");
    assert!(!completer.start(), "a cancelled task must not be started");
    assert!(!completer.complete(Ok(5)));
    assert_eq!(handle.result(), Err(TaskError::Cancelled));

    let (handle, completer) = task_pair::<u64>();
    assert!(completer.start());
    assert!(!handle.cancel());
    assert!(!handle.cancelled());
    completer.complete(Ok(5));
    assert!(!handle.cancel(), "a finished task cannot be cancelled");
    assert_eq!(handle.result(), Ok(5));
}

#[test]
fn dropped_completer_ends_the_task_with_terminated() {
    let (handle, completer) = task_pair::<u64>();
    drop(completer);
    assert_eq!(handle.result(), Err(TaskError::Terminated));

    let (handle, completer) = task_pair::<u64>();
    completer.complete(Ok(3));
    drop(completer);
    assert_eq!(
        handle.result(),
        Ok(3),
        "dropping after completion changes nothing"
    );
}

#[test]
fn callback_added_before_completion_runs_once_on_completing_thread() {
    let (handle, completer) = task_pair::<u64>();
    let calls = Arc::new(AtomicUsize::new(0));
    let seen_on = Arc::new(Mutex::new(None));
    {
        let calls = Arc::clone(&calls);
        let seen_on = Arc::clone(&seen_on);
        handle.on_done(move |outcome| {
            assert_eq!(outcome, &Ok(8));
            *seen_on.lock().unwrap() = Some(thread::current().id());
            // Relaxed: the join below orders this with the final load.
            calls.fetch_add(1, Ordering::Relaxed);
        });
    }
    let completer_thread = thread::spawn(move || {
        completer.complete(Ok(8));
        thread::current().id()
    });
    let completer_id = completer_thread.join().unwrap();
    assert_eq!(calls.load(Ordering::Relaxed), 1);
    assert_eq!(*seen_on.lock().unwrap(), Some(completer_id));
    assert_eq!(handle.result(), Ok(8));
}

#[test]
fn callback_added_after_completion_runs_at_once_exactly_once() {
    let (handle, completer) = task_pair::<u64>();
    completer.complete(Err(TaskError::Failed("bad input".into())));
    let calls = Arc::new(AtomicUsize::new(0));
    for _ in 0..3 {
        let calls = Arc::clone(&calls);
        handle.on_done(move |outcome| {
            assert_eq!(outcome, &Err(TaskError::Failed("bad input".into())));
            // Relaxed: same thread.
            calls.fetch_add(1, Ordering::Relaxed);
        });
    }
    assert_eq!(
        calls.load(Ordering::Relaxed),
        3,
        "each of three callbacks once, synchronously"
    );
    drop(completer);
    assert_eq!(calls.load(Ordering::Relaxed), 3);
}

#[test]
fn panicking_callback_does_not_break_completion() {
    let (handle, completer) = task_pair::<u64>();
    let calls = Arc::new(AtomicUsize::new(0));
    handle.on_done(|_| panic!("callback bug"));
    {
        let calls = Arc::clone(&calls);
        handle.on_done(move |_| {
            // Relaxed: same thread as the final load.
            calls.fetch_add(1, Ordering::Relaxed);
        });
    }
    assert!(completer.complete(Ok(1)));
    assert_eq!(calls.load(Ordering::Relaxed), 1);
    handle.on_done(|_| panic!("late callback bug"));
    assert!(handle.done());
    assert_eq!(handle.result(), Ok(1));
}

/// Many rounds of: callbacks added from one thread while another completes and a third
/// cancels. Every callback must run exactly once and the outcome must be one of the two.
#[test]
fn completion_cancel_and_callbacks_race_safely() {
    for round in 0..500 {
        let (handle, completer) = task_pair::<u64>();
        let handle = Arc::new(handle);
        let calls = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(std::sync::Barrier::new(3));
        let adder = {
            let handle = Arc::clone(&handle);
            let calls = Arc::clone(&calls);
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                for _ in 0..10 {
                    let calls = Arc::clone(&calls);
                    handle.on_done(move |_| {
                        // Relaxed: the joins order these increments with the final load.
                        calls.fetch_add(1, Ordering::Relaxed);
                    });
                }
            })
        };
        let canceller = {
            let handle = Arc::clone(&handle);
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                handle.cancel()
            })
        };
        barrier.wait();
        let started = completer.start();
        let completed = started && completer.complete(Ok(round));
        adder.join().unwrap();
        let cancelled = canceller.join().unwrap();
        assert_eq!(calls.load(Ordering::Relaxed), 10, "round {round}");
        assert!(
            cancelled != completed,
            "round {round}: exactly one of cancel ({cancelled}) and complete ({completed}) wins"
        );
        let handle = Arc::into_inner(handle).unwrap();
        let expected = if cancelled {
            Err(TaskError::Cancelled)
        } else {
            Ok(round)
        };
        assert_eq!(handle.result(), expected, "round {round}");
    }
}

struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        // Relaxed: the test reads the count after joining the completing thread.
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn future_poll_registers_waker_and_yields_outcome() {
    let (mut handle, completer) = task_pair::<u64>();
    let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
    let waker = Waker::from(Arc::clone(&counter));
    let mut cx = Context::from_waker(&waker);
    assert!(Pin::new(&mut handle).poll(&mut cx).is_pending());
    assert!(Pin::new(&mut handle).poll(&mut cx).is_pending());
    thread::spawn(move || completer.complete(Ok(64)))
        .join()
        .unwrap();
    assert_eq!(counter.0.load(Ordering::Relaxed), 1, "woken exactly once");
    assert_eq!(Pin::new(&mut handle).poll(&mut cx), Poll::Ready(Ok(64)));
    assert_eq!(
        Pin::new(&mut handle).poll(&mut cx),
        Poll::Ready(Err(TaskError::AlreadyTaken))
    );
    let late = Arc::new(Mutex::new(None));
    let late2 = Arc::clone(&late);
    handle.on_done(move |outcome| *late2.lock().unwrap() = Some(outcome.clone()));
    assert_eq!(*late.lock().unwrap(), Some(Err(TaskError::AlreadyTaken)));
}

#[test]
fn finished_handle_is_done_at_once() {
    let (handle, completer) = task_pair::<u8>();
    completer.complete(Err(TaskError::PoolClosed));
    assert!(handle.done());
    assert!(!handle.cancelled());
    assert!(handle.failed());
    assert_eq!(handle.result(), Err(TaskError::PoolClosed));
}
