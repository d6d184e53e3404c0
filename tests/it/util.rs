//! Helpers: building test pools and the watchdog.

use std::sync::mpsc;
use std::time::Duration;

use procpool::Pool;

/// How long any single test may take before the watchdog ends the test process.
pub(crate) const WATCHDOG: Duration = Duration::from_secs(120);

/// Ends the whole test process if it is still alive after [`WATCHDOG`]; disarmed on drop.
#[must_use]
pub(crate) struct Watchdog {
    disarm: Option<mpsc::Sender<()>>,
}

/// Arms a watchdog for the current test.
pub(crate) fn watchdog(name: &'static str) -> Watchdog {
    let (disarm, disarmed) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = disarmed.recv_timeout(WATCHDOG) {
            eprintln!("watchdog: test `{name}` hung for {WATCHDOG:?}; ending the test process");
            std::process::exit(99);
        }
    });
    Watchdog {
        disarm: Some(disarm),
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(disarm) = self.disarm.take() {
            let _ = disarm.send(());
        }
    }
}

/// A builder for a pool of `test-worker` processes.
pub(crate) fn builder(workers: usize) -> procpool::PoolBuilder {
    procpool_tests::keep_tasks();
    Pool::builder()
        .workers(workers)
        .program(env!("CARGO_BIN_EXE_test-worker"))
}

/// A started pool of `test-worker` processes, with all `workers` of them ready (`build`
/// returns once the first is; tests that count or kill workers want all of them).
pub(crate) fn pool(workers: usize) -> Pool {
    let pool = builder(workers).build().expect("the test pool starts");
    wait_started(&pool, workers);
    pool
}

/// Waits until `pool` has `workers` workers ready and none starting.
pub(crate) fn wait_started(pool: &Pool, workers: usize) {
    loop {
        let stats = pool.stats();
        if stats.workers.len() >= workers && stats.starting == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Sends `signal` to process `pid`.
pub(crate) fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid fits i32"));
    nix::sys::signal::kill(pid, signal).expect("the worker exists");
}

/// Waits until `handle` is running at a worker.
pub(crate) fn wait_running<T>(handle: &procpool::TaskHandle<T>) {
    while !handle.running() {
        assert!(
            !handle.done(),
            "the task finished before it was seen running"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits until the file `marker` exists (written by `mark_then_sleep` when it starts).
pub(crate) fn wait_marker(marker: &std::path::Path) {
    while !marker.exists() {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Polls `condition` every 2 ms until it holds; fails the test after 60 s.
pub(crate) fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !condition() {
        assert!(start.elapsed() < Duration::from_secs(60), "never: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// For tests that count this process's descriptors or children, which the other tests in
/// this binary open and start concurrently: in the test binary, runs `test` (its full path,
/// e.g. `lifecycle::name`) alone in a child process, asserts it passed there and returns
/// `false`; in that child (marked by `env` in its environment) returns `true`: the caller
/// measures.
pub(crate) fn measuring_alone(test: &str, env: &str) -> bool {
    if std::env::var_os(env).is_some() {
        return true;
    }
    let status = std::process::Command::new(std::env::current_exe().expect("the test binary"))
        .args([test, "--exact"])
        .env(env, "1")
        .status()
        .expect("the test binary runs");
    assert!(status.success(), "the child measurement failed: {status:?}");
    false
}

/// A child process killed and reaped when the test ends, however it ends.
pub(crate) struct ChildGuard(pub(crate) std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `program attach <socket>` and waits until `pool` lists it among its workers; fails
/// the test (with the pool's last refusal) if the process ends first.
pub(crate) fn attach(
    pool: &Pool,
    program: impl AsRef<std::ffi::OsStr>,
    socket: &std::path::Path,
) -> ChildGuard {
    let mut child = ChildGuard(
        std::process::Command::new(program)
            .arg("attach")
            .arg(socket)
            .spawn()
            .expect("start the attaching worker"),
    );
    let pid = child.0.id();
    while !pool.stats().workers.iter().any(|w| w.pid == pid) {
        assert!(
            child.0.try_wait().expect("try_wait").is_none(),
            "the attaching worker ended before it was listed: {:?}",
            pool.stats().last_attach_refusal
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

/// Maps 40 items of 20 ms each (long enough that every worker gets some) and asserts that the
/// worker `pid` ran at least one.
pub(crate) fn assert_gets_work(pool: &Pool, pid: u32) {
    let pids: std::collections::HashSet<u32> = pool
        .map(procpool_tests::sleep_then_pid, std::iter::repeat_n(20, 40))
        .collect::<Result<_, _>>()
        .expect("every item succeeds");
    assert!(pids.contains(&pid), "worker {pid} ran no item: {pids:?}");
}

/// Shuts `pool` down and asserts that the attached worker `child` then exits cleanly.
pub(crate) fn shutdown_and_expect_clean_exit(pool: Pool, mut child: ChildGuard) {
    pool.shutdown();
    let status = child.0.wait().expect("wait for the attached worker");
    assert!(
        status.success(),
        "the attached worker ended with {status:?}"
    );
}
