//! A parent killed with SIGKILL takes its workers (and its fork server) with it.
//!
//! The test re-runs this test binary as an intermediate "parent" process (selected by the
//! `PROCPOOL_TEST_ROLE` variable). That parent starts real workers, completes their handshakes,
//! prints their pids and waits. The test SIGKILLs it and then checks that every worker died.
//!
//! The test process makes itself a child subreaper first, so the orphaned workers are
//! reparented to it: it can reap them and read *how* they died.
//!
//! Before ending the parent, the test stops (SIGSTOP) every process the parent printed and
//! waits until each is stopped. A parent that dies closes its fds before the kernel sends its
//! children their parent-death signal, so a running process could act on the EOF first: a
//! worker exits with code 0, and a fork server kills and *reaps* its workers itself (they are
//! then never reparented to the test) and exits with code 0. Those are legitimate endings, but
//! not what this test checks: a stopped process runs no code, and only SIGKILL — here, the
//! parent-death signal — ends it. So every process must die of SIGKILL and be reaped by the test;
//! one whose parent-death signal is missing stays stopped and fails the test.

mod process_support;

use std::io::{BufRead, BufReader};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use process_support::{spawner, start};
use procpool_worker::StartMethod;

const ROLE_VAR: &str = "PROCPOOL_TEST_ROLE";
const N_WORKERS: usize = 3;
/// A generous bound: the kernel delivers the parent-death signal at once; this only keeps a
/// broken build from hanging the test.
const DEADLINE: Duration = Duration::from_secs(5);

/// Kills and reaps the intermediate parent if the test fails before it did.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The intermediate parent: not a test when run normally (the role variable is unset).
#[test]
fn role_parent() {
    let method = match std::env::var(ROLE_VAR).as_deref() {
        Ok("spawn") => StartMethod::Spawn,
        Ok("forkserver") => StartMethod::ForkServer,
        _ => return,
    };
    let spawner = spawner(method);
    if let Some(server) = spawner.fork_server().expect("fork server") {
        println!("@@pid {}", server.pid());
    }
    let mut workers = Vec::new();
    for index in 0..N_WORKERS {
        let (worker, mut driver) = start(&spawner);
        driver.handshake(index as u32);
        println!("@@pid {}", worker.pid());
        workers.push((worker, driver));
    }
    println!("@@ready");
    // Wait to be killed; the watchdog ends this process if the test never does.
    std::thread::sleep(Duration::from_secs(60));
}

/// Starts the intermediate parent (in a process group of its own) and returns it with the pids
/// it printed.
fn start_parent(method: &str) -> (KillOnDrop, Vec<u32>) {
    let exe = std::env::current_exe().expect("current exe");
    let child = Command::new(exe)
        .args(["--exact", "role_parent", "--nocapture", "--test-threads=1"])
        .process_group(0)
        .env(ROLE_VAR, method)
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("start the intermediate parent");
    let mut parent = KillOnDrop(child);
    let stdout = parent.0.stdout.take().expect("stdout");
    let mut pids = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read the parent's stdout");
        // libtest may print "test role_parent ... " in front of the first line.
        if line.contains("@@ready") {
            return (parent, pids);
        }
        if let Some((_, pid)) = line.split_once("@@pid ") {
            pids.push(pid.trim().parse().expect("a pid"));
        }
    }
    panic!("the intermediate parent ended before it was ready");
}

/// Becomes a child subreaper so orphaned descendants are reparented to this process.
fn become_subreaper() {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) only changes how this process's orphaned
    // descendants are reparented.
    let res = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) };
    assert_eq!(res, 0, "PR_SET_CHILD_SUBREAPER");
}

/// `/proc/<pid>/stat`'s state letter (`'T'` stopped, `'Z'` zombie, ...), if the process exists.
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name in parentheses may contain anything; the state follows its last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// The `State` and `PPid` lines of `/proc/<pid>/status`, for failure messages.
fn describe(pid: u32) -> String {
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(status) => status
            .lines()
            .filter(|line| line.starts_with("State:") || line.starts_with("PPid:"))
            .collect::<Vec<_>>()
            .join(", "),
        Err(err) => format!("no /proc entry ({err})"),
    }
}

/// Stops every process in `pids` (SIGSTOP) and waits until each one is stopped, so none can run
/// its own exit path (channel EOF) when the parent dies; see the module docs.
fn stop_all(pids: &[u32]) {
    let since = Instant::now();
    for &pid in pids {
        // SAFETY: kill(2) on a pid that cannot have been reused: it is a live descendant of the
        // intermediate parent, which has not been killed yet and has not reaped it.
        let res = unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) };
        assert_eq!(res, 0, "SIGSTOP {pid}: {}", std::io::Error::last_os_error());
    }
    for &pid in pids {
        while proc_state(pid) != Some('T') {
            assert!(
                since.elapsed() < DEADLINE,
                "process {pid} did not stop: {}",
                describe(pid)
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Reaps `pids` (now our children through the subreaper) and returns each raw wait status,
/// failing if any is not reaped within [`DEADLINE`]. A failure says whether the process still
/// runs (and who its parent is) or was never our child to reap (ECHILD).
fn reap_all(pids: &[u32], since: Instant) -> Vec<i32> {
    let mut statuses = vec![None; pids.len()];
    while statuses.iter().any(Option::is_none) {
        for (pid, slot) in pids.iter().zip(&mut statuses) {
            if slot.is_some() {
                continue;
            }
            let mut status = 0;
            // SAFETY: waitpid with WNOHANG on a pid and a pointer to a local.
            let res = unsafe { libc::waitpid(*pid as libc::pid_t, &mut status, libc::WNOHANG) };
            if res == *pid as libc::pid_t {
                *slot = Some(status);
            } else if since.elapsed() >= DEADLINE {
                // Not reparented to us (res == -1, ECHILD) or still running (res == 0).
                let why = if res == 0 {
                    "still running".to_string()
                } else {
                    format!("cannot be reaped: {}", std::io::Error::last_os_error())
                };
                let state = describe(*pid);
                kill_and_reap_our_children(pids);
                panic!(
                    "process {pid} not reaped {DEADLINE:?} after its parent was killed: {why}; \
                     {state}; test pid {}",
                    std::process::id()
                );
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!(
        "all {} processes were gone {:?} after the parent was killed",
        pids.len(),
        since.elapsed()
    );
    statuses
        .into_iter()
        .map(|status| status.expect("reaped"))
        .collect()
}

/// On failure: SIGKILLs and reaps whatever in `pids` is still an unreaped child of ours, so a
/// failing test leaves no stopped process behind.
fn kill_and_reap_our_children(pids: &[u32]) {
    for &pid in pids {
        let mut status = 0;
        // SAFETY: waitpid with WNOHANG on a pid and a pointer to a local. It returns 0 only for
        // an unreaped child of ours, whose pid cannot have been reused, so the kill hits it.
        if unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) } == 0 {
            // SAFETY: as above, `pid` is our live child.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
                libc::waitpid(pid as libc::pid_t, &mut status, 0);
            }
        }
    }
}

/// How the intermediate parent is ended.
#[derive(Debug, Clone, Copy)]
enum Ending {
    /// SIGKILL to the parent alone.
    Kill,
    /// SIGINT to the parent's whole process group, as Ctrl-C in a terminal sends it: the
    /// parent dies of it; the workers ignore it and die with the parent.
    CtrlC,
}

fn check_parent_death(method: &str, expected_processes: usize, ending: Ending) {
    become_subreaper();
    let (mut parent, pids) = start_parent(method);
    assert_eq!(
        pids.len(),
        expected_processes,
        "{method}: pids printed: {pids:?}"
    );
    let parent_pid = parent.0.id() as libc::pid_t;
    stop_all(&pids);
    let signal = match ending {
        Ending::Kill => {
            parent.0.kill().expect("SIGKILL the parent");
            libc::SIGKILL
        }
        Ending::CtrlC => {
            // SAFETY: kill(2) with a negative pid signals the process group the parent leads.
            let res = unsafe { libc::kill(-parent_pid, libc::SIGINT) };
            assert_eq!(res, 0, "SIGINT to the group");
            libc::SIGINT
        }
    };
    let killed_at = Instant::now();
    let parent_status = parent.0.wait().expect("reap the parent");
    assert_eq!(
        parent_status.signal(),
        Some(signal),
        "{method} {ending:?}: how the parent died"
    );
    let statuses = reap_all(&pids, killed_at);
    for (pid, status) in pids.iter().zip(statuses) {
        assert!(
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
            "{method} {ending:?}: process {pid} died by the parent-death SIGKILL, not otherwise \
             (status {status:#x})",
        );
    }
}

#[test]
fn spawned_workers_die_with_their_parent() {
    check_parent_death("spawn", N_WORKERS, Ending::Kill);
}

#[test]
fn fork_server_and_its_workers_die_with_their_parent() {
    // The server dies by its parent-death signal, then each worker by its own (armed on the
    // server right after the fork).
    check_parent_death("forkserver", N_WORKERS + 1, Ending::Kill);
}

#[test]
fn ctrl_c_ends_the_parent_and_its_spawned_workers() {
    check_parent_death("spawn", N_WORKERS, Ending::CtrlC);
}

#[test]
fn ctrl_c_ends_the_parent_its_fork_server_and_their_workers() {
    check_parent_death("forkserver", N_WORKERS + 1, Ending::CtrlC);
}
