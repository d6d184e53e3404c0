//! The facade re-exports what users need, so they never name a lower crate (like crossbeam's
//! `tests/subcrates.rs`): the task attribute and trait, the built-ins, worker identity and state.

use procpool::Task;
use procpool_tests::square;

use crate::util::{pool, watchdog};

#[test]
fn task_attribute_and_trait_come_from_the_facade() {
    // `#[procpool::task]` in procpool_tests expanded through `procpool::__private`.
    assert_eq!(<square as Task>::NAME, "procpool_tests::square");
    assert_eq!(<square as Task>::SIGNATURE, "fn(u64) -> u64");
    assert_eq!(
        square::call(7),
        49,
        "the function stays callable in-process"
    );
}

#[test]
fn worker_identity_and_state_are_absent_in_the_parent() {
    assert_eq!(procpool::current_worker(), None);
    assert!(procpool::worker_state::<u64>().is_none());
}

#[test]
fn builtins_run_through_the_facade() {
    let _watchdog = watchdog("builtins_run_through_the_facade");
    let pool = pool(1);
    assert_eq!(pool.call(procpool::builtin::add_one, 41), Ok(42));
    assert_eq!(
        pool.call(procpool::builtin::echo_bytes, vec![1, 2, 3]),
        Ok(vec![1, 2, 3])
    );
}
