//! Load balance with real worker processes: a chunk queued behind a busy worker's running one
//! is taken back for an idle worker without waiting for the busy one.

use std::path::Path;
use std::time::Duration;

use procpool_tests::{gate, worker_pid};

use crate::util::{pool, watchdog};

/// Waits until the file `path` exists (a task wrote it when it started).
fn wait_for(path: &Path) {
    while !path.exists() {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Two workers, each held in a `gate` call, each with one more call queued behind it (the
/// scheduler prefetches: `gate`'s cost is known and reclaimable). Opening the first gate
/// only: its worker runs its own queued call, then takes the other worker's queued call
/// back (the claim word) and runs it too, while the other worker is still held. Before
/// reclaiming, that call waited for the second gate. No timing: generous watchdogs only.
///
/// Ignored in CI: it failed once (release build, clean-clone CI run at 8c0bc9d, machine loaded
/// by a benchmark next to it): a queued call was still behind the held worker after 60 s, so
/// the reclaim did not happen in that interleaving (the call would still have ended once the
/// second gate opened: a balance bug, not a lost task). 35 runs in debug, 20 of them next to two
/// busy loops, passed. Run it with `cargo test -p procpool-tests --test it -- --ignored balance`;
/// the open question is on issue 7.
#[test]
#[ignore = "intermittent: the reclaim was missed once under load (see the doc comment)"]
fn a_call_queued_behind_a_held_worker_runs_on_the_idle_one() {
    let _watchdog = watchdog("a_call_queued_behind_a_held_worker_runs_on_the_idle_one");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let pool = pool(2);
    // Teach the scheduler the cost of `gate` with an open gate (a short call).
    std::fs::write(path("open"), b"").unwrap();
    for round in 0..2 {
        let started = path(&format!("warm{round}"));
        pool.call(gate, (path("open"), started)).unwrap();
    }

    let first = pool.submit(gate, (path("gate1"), path("started1")));
    wait_for(Path::new(&path("started1")));
    let second = pool.submit(gate, (path("gate2"), path("started2")));
    wait_for(Path::new(&path("started2")));
    // One queued call behind each held worker.
    let queued = [pool.submit(worker_pid, 1), pool.submit(worker_pid, 2)];
    std::fs::write(path("gate1"), b"").unwrap();
    let free_pid = first.result().expect("the first gate call ends");
    for handle in queued {
        let pid = handle
            .result_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("a queued call stayed behind the held worker"))
            .expect("worker_pid succeeds");
        assert_eq!(pid, free_pid, "both queued calls ran on the free worker");
    }
    assert!(!second.done(), "the second worker is still held");
    std::fs::write(path("gate2"), b"").unwrap();
    let held_pid = second.result().expect("the second gate call ends");
    assert_ne!(held_pid, free_pid);
    assert_eq!(pool.call(worker_pid, 3).map(|_| ()), Ok(()));
}
