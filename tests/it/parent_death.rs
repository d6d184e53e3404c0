//! A process that owns pools dies (SIGKILL, or Ctrl-C to its process group): every worker and
//! the fork server end with it, and the socket file its `listen` left behind does not block the
//! next `listen` on that path.
//!
//! Three processes: the test re-runs this binary as a *monitor* (role in [`ROLE_VAR`]), so that
//! only the monitor becomes a child subreaper (the test process runs other tests' pools at the
//! same time). The monitor re-runs the binary once more as the pool-owning *parent*, in a
//! process group of its own, records every descendant of it from `/proc`, ends it, and checks
//! that all of them are gone. Orphans are reparented to the monitor, which reaps them.
//!
//! The same monitor runs a parent whose worker program never reaches procpool's entry
//! (`sleeper-worker` never calls `procpool::init()`), to check that the parent-death signal is
//! armed by the spawner before the exec, not only by the worker's own `main`.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use procpool_tests::sleep_then_pid;

use crate::util::{builder, wait_running, wait_started, watchdog};

const ROLE_VAR: &str = "PROCPOOL_PARENT_DEATH_ROLE";
const SOCKET_VAR: &str = "PROCPOOL_PARENT_DEATH_SOCKET";
/// How long the descendants may take to be gone: generous, a watchdog only (the parent-death
/// signal is delivered at once).
const DEADLINE: Duration = Duration::from_secs(5);

/// Kills and reaps a child process when dropped, so a failing test leaves none behind.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Re-runs this test binary as exactly the test `name` with the role `role`.
fn rerun(name: &str, role: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("the test binary"));
    command
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(ROLE_VAR, role);
    command
}

/// The pool-owning parent: two pools (Spawn and ForkServer), one listening, both busy with long
/// tasks and more queued; prints its workers' pids and waits to be killed.
#[test]
fn role_pool_parent() {
    if std::env::var(ROLE_VAR).as_deref() != Ok("parent") {
        return;
    }
    let socket = std::env::var(SOCKET_VAR).expect("the socket path");
    let spawned = builder(2).build().expect("the spawn pool starts");
    let forked = builder(2)
        .start_method(procpool::StartMethod::ForkServer)
        .build()
        .expect("the fork-server pool starts");
    spawned.listen(&socket).expect("listen");
    let mut handles = Vec::new();
    for pool in [&spawned, &forked] {
        // Two run, four wait in the queue.
        for _ in 0..6 {
            handles.push(pool.submit(sleep_then_pid, 60_000));
        }
    }
    wait_running(&handles[0]);
    wait_running(&handles[6]);
    // `build` returns once one worker is ready: wait for the second of each pool.
    wait_started(&spawned, 2);
    wait_started(&forked, 2);
    let mut out = std::io::stdout().lock();
    for pool in [&spawned, &forked] {
        for worker in pool.stats().workers {
            writeln!(out, "@@pid {}", worker.pid).unwrap();
        }
    }
    writeln!(out, "@@ready").unwrap();
    out.flush().unwrap();
    drop(out);
    // Wait to be killed; if the monitor never does, end after a minute (the pools go with us).
    std::thread::sleep(Duration::from_secs(60));
}

/// A pool owner whose worker program (`sleeper-worker`) never calls `procpool::init()`: `build`
/// waits for a handshake that never comes (the start timeout is far away) until it is killed.
#[test]
fn role_no_init_parent() {
    if std::env::var(ROLE_VAR).as_deref() != Ok("no-init-parent") {
        return;
    }
    let res = procpool::Pool::builder()
        .workers(1)
        .program(env!("CARGO_BIN_EXE_sleeper-worker"))
        .start_timeout(Duration::from_secs(60))
        .build();
    // Only reached if the monitor never kills us.
    panic!("build returned: {:?}", res.map(drop));
}

/// Parent pid and state of every process, from `/proc/<pid>/stat`.
fn processes() -> HashMap<u32, (u32, char)> {
    let mut all = HashMap::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        all.insert(pid, (ppid, state));
    }
    all
}

/// Every descendant of `root` (children, their children, ...).
fn descendants(root: u32) -> HashSet<u32> {
    let all = processes();
    let mut found = HashSet::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for (&pid, &(ppid, _)) in &all {
            if ppid == parent && found.insert(pid) {
                frontier.push(pid);
            }
        }
    }
    found
}

/// Whether `pid` runs (exists and is not a zombie); reaps it first if it is our dead child.
fn running(pid: u32) -> bool {
    let mut status = 0;
    // SAFETY: waitpid with WNOHANG on one pid and a pointer to a local; it reaps only a child of
    // ours (an orphan reparented to this subreaper), which nobody else waits for.
    unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The monitor: starts the parent, records its descendants, ends it (`kill` or `sigint`) and
/// checks that every descendant is gone within [`DEADLINE`] and that `listen` works again on
/// the socket path the parent used.
#[test]
fn role_monitor() {
    let ending = match std::env::var(ROLE_VAR).as_deref() {
        Ok(ending @ ("kill" | "sigint")) => ending.to_owned(),
        _ => return,
    };
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) only changes how this process's orphaned
    // descendants are reparented.
    let res = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) };
    assert_eq!(res, 0, "PR_SET_CHILD_SUBREAPER");
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("pool.sock");
    let mut parent = ChildGuard(
        rerun("parent_death::role_pool_parent", "parent")
            .env(SOCKET_VAR, &socket)
            .process_group(0)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the parent"),
    );
    let parent_pid = parent.0.id();
    let mut workers = Vec::new();
    let stdout = parent.0.stdout.take().expect("piped stdout");
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("the parent's output");
        // libtest's "test <name> ... " has no newline: a marker may follow it on one line.
        if let Some((_, pid)) = line.split_once("@@pid ") {
            workers.push(pid.trim().parse::<u32>().expect("a pid"));
        } else if line.contains("@@ready") {
            break;
        }
    }
    assert_eq!(
        workers.len(),
        4,
        "the parent printed its workers: {workers:?}"
    );
    let tree = descendants(parent_pid);
    for pid in &workers {
        assert!(
            tree.contains(pid),
            "worker {pid} is not below the parent: {tree:?}"
        );
    }
    // The two spawned workers, the fork server and its two workers (and nothing else).
    assert_eq!(tree.len(), 5, "descendants of the parent: {tree:?}");
    assert!(
        socket.exists(),
        "the parent listens at {}",
        socket.display()
    );
    let signal = if ending == "kill" {
        libc::SIGKILL
    } else {
        libc::SIGINT
    };
    // SAFETY: kill(2) on the parent alone (SIGKILL) or, with a negative pid, on the process
    // group it leads (SIGINT, as Ctrl-C in a terminal sends it).
    let res = unsafe {
        if signal == libc::SIGKILL {
            libc::kill(parent_pid as libc::pid_t, signal)
        } else {
            libc::kill(-(parent_pid as libc::pid_t), signal)
        }
    };
    assert_eq!(res, 0, "signal the parent");
    let since = Instant::now();
    let status = parent.0.wait().expect("reap the parent");
    assert_eq!(status.signal(), Some(signal), "how the parent died");
    let mut left: Vec<u32> = tree.iter().copied().collect();
    while !left.is_empty() {
        left.retain(|&pid| running(pid));
        assert!(
            since.elapsed() < DEADLINE,
            "{ending}: still running {DEADLINE:?} after the parent died: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    eprintln!(
        "{ending}: all {} descendants gone {:?} after the parent died",
        tree.len(),
        since.elapsed()
    );
    // The listening socket's file outlives a parent killed before it could remove it; the next
    // `listen` on that path replaces it (nobody accepts there any more).
    let stale = socket.exists();
    eprintln!("{ending}: socket file left behind: {stale}");
    let pool = builder(1).build().expect("a new pool");
    let bound = pool.listen(&socket).expect("listen on the stale path");
    assert_eq!(bound, socket);
    drop(pool);
    assert!(
        !socket.exists(),
        "the new pool removed its socket file when dropped"
    );
    drop(dir);
    std::process::exit(0);
}

/// The monitor for [`role_no_init_parent`]: once its worker runs (it prints its pid from its
/// own `main`), SIGKILLs the parent and checks that the worker is gone within [`DEADLINE`].
#[test]
fn role_no_init_monitor() {
    if std::env::var(ROLE_VAR).as_deref() != Ok("no-init-kill") {
        return;
    }
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) only changes how this process's orphaned
    // descendants are reparented.
    let res = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) };
    assert_eq!(res, 0, "PR_SET_CHILD_SUBREAPER");
    let mut parent = ChildGuard(
        rerun("parent_death::role_no_init_parent", "no-init-parent")
            .process_group(0)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the parent"),
    );
    let parent_pid = parent.0.id();
    let stdout = parent.0.stdout.take().expect("piped stdout");
    let mut worker = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("the parent's output");
        if let Some((_, pid)) = line.split_once("@@sleeper ") {
            worker = Some(pid.trim().parse::<u32>().expect("a pid"));
            break;
        }
    }
    let worker = worker.expect("the worker printed its pid");
    let tree = descendants(parent_pid);
    assert_eq!(
        tree,
        HashSet::from([worker]),
        "the parent's only descendant is its worker"
    );
    // SAFETY: kill(2) with SIGKILL on the parent, our child, not yet reaped.
    let res = unsafe { libc::kill(parent_pid as libc::pid_t, libc::SIGKILL) };
    assert_eq!(res, 0, "kill the parent");
    let since = Instant::now();
    let status = parent.0.wait().expect("reap the parent");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "how the parent died");
    while running(worker) {
        if since.elapsed() >= DEADLINE {
            // The orphan is our child now (we are its subreaper): end it before failing, so
            // the failing test leaves nothing behind.
            // SAFETY: kill(2) with SIGKILL on one pid that `running` just saw alive.
            unsafe { libc::kill(worker as libc::pid_t, libc::SIGKILL) };
            while running(worker) {
                std::thread::sleep(Duration::from_millis(2));
            }
            panic!(
                "worker {worker}, which never called procpool::init(), still ran {DEADLINE:?} \
                 after its parent was SIGKILLed: an orphan"
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    eprintln!(
        "no-init: the worker was gone {:?} after the parent died",
        since.elapsed()
    );
    std::process::exit(0);
}

/// Runs the monitor with `ending` and checks that it passed.
fn parent_death(ending: &str) {
    let monitor_test = if ending.starts_with("no-init") {
        "parent_death::role_no_init_monitor"
    } else {
        "parent_death::role_monitor"
    };
    let mut monitor = ChildGuard(
        rerun(monitor_test, ending)
            .spawn()
            .expect("start the monitor"),
    );
    let status = monitor.0.wait().expect("wait for the monitor");
    assert!(
        status.success(),
        "the monitor failed ({status:?}); see its output above"
    );
}

#[test]
fn sigkilled_pool_owner_takes_every_worker_and_the_fork_server_with_it() {
    let _watchdog = watchdog("sigkilled_pool_owner_takes_every_worker_and_the_fork_server_with_it");
    parent_death("kill");
}

#[test]
fn ctrl_c_to_the_group_ends_the_pool_owner_and_every_worker() {
    let _watchdog = watchdog("ctrl_c_to_the_group_ends_the_pool_owner_and_every_worker");
    parent_death("sigint");
}

#[test]
fn sigkilled_pool_owner_takes_a_worker_that_never_called_init_with_it() {
    let _watchdog = watchdog("sigkilled_pool_owner_takes_a_worker_that_never_called_init_with_it");
    parent_death("no-init-kill");
}
