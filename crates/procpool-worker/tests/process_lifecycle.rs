//! Real-process tests of the parent-side worker handle: what a started process inherits, and how
//! its end is observed (pidfd, exit status), signalled and reaped.
//!
//! Most of these start `/bin/sh` as the "worker" program: the handle's job does not depend on
//! what the program does, and a shell script can report what it inherited.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

use procpool_ipc::{ChannelConfig, Endpoint, Handoff};
use procpool_worker::{SpawnError, StartMethod, WorkerExit, WorkerProcess, WorkerSpawner};

/// A fresh channel's hand-over (the parent's end is dropped: these programs never use it).
fn handoff() -> Handoff {
    let (_endpoint, handoff) =
        Endpoint::create(&ChannelConfig::default()).expect("create a channel");
    handoff
}

/// Starts `sh -c script` as a worker.
fn sh(script: &str) -> WorkerProcess {
    sh_with_env(script, &[])
}

fn sh_with_env(script: &str, envs: &[(&OsStr, &OsStr)]) -> WorkerProcess {
    WorkerProcess::spawn(Path::new("/bin/sh"), ["-c", script], handoff(), envs)
        .expect("spawn /bin/sh")
}

/// Waits for the worker with a watchdog: a hang fails the test instead of blocking it.
fn wait(worker: &mut WorkerProcess) -> WorkerExit {
    worker
        .wait_timeout(Duration::from_secs(20))
        .expect("wait")
        .unwrap_or_else(|| panic!("watchdog: worker {} did not exit within 20 s", worker.pid()))
}

fn pidfd_readable(worker: &WorkerProcess, timeout_ms: u16) -> bool {
    use nix::poll::{PollFd, PollFlags, poll};
    let mut fds = [PollFd::new(worker.pidfd(), PollFlags::POLLIN)];
    poll(&mut fds, timeout_ms).expect("poll") == 1
}

/// The process state letter from /proc/<pid>/stat, `None` if the pid does not exist.
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
}

#[test]
fn worker_inherits_channel_fds_env_and_ignored_sigint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("report");
    // The script checks the env protocol itself and writes what it saw for the rest.
    let script = r#"
        [ "$PROCPOOL_WORKER_FDS" = "3,4" ] || exit 10
        [ "$PROCPOOL_PARENT_PID" = "$PPID" ] || exit 11
        [ -z "$PROCPOOL_FORK_SERVER" ] || exit 12
        readlink /proc/$$/fd/3 > "$OUT" || exit 13
        readlink /proc/$$/fd/4 >> "$OUT" || exit 14
        grep SigIgn /proc/$$/status >> "$OUT"
        [ -t 0 ] && exit 15
        readlink /proc/$$/fd/0 >> "$OUT"
    "#;
    // A stale PROCPOOL_FORK_SERVER in the parent's environment must not leak into a worker.
    let mut worker = sh_with_env(
        script,
        &[
            (OsStr::new("OUT"), out.as_os_str()),
            (OsStr::new("PROCPOOL_FORK_SERVER"), OsStr::new("9")),
        ],
    );
    assert_eq!(
        wait(&mut worker),
        WorkerExit::Code(0),
        "the script's check failed (see its exit code)"
    );
    let report = std::fs::read_to_string(&out).expect("report");
    let lines: Vec<&str> = report.lines().collect();
    assert!(
        lines[0].starts_with("/memfd:"),
        "fd 3 is the region memfd: {report}"
    );
    assert!(
        lines[1].starts_with("socket:"),
        "fd 4 is the channel socket: {report}"
    );
    let mask = lines[2].trim_start_matches("SigIgn:").trim();
    let mask = u64::from_str_radix(mask, 16).expect("SigIgn mask");
    assert_ne!(
        mask & (1 << (libc::SIGINT - 1)),
        0,
        "SIGINT is ignored: {report}"
    );
    assert_eq!(lines[3], "/dev/null", "stdin is /dev/null: {report}");
}

#[test]
fn exit_code_is_observed_through_pidfd_and_wait() {
    let mut worker = sh("exit 7");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !pidfd_readable(&worker, 100) {
        assert!(
            std::time::Instant::now() < deadline,
            "watchdog: pidfd never became readable"
        );
    }
    assert_eq!(worker.wait().expect("wait"), WorkerExit::Code(7));
    assert_eq!(worker.exit_status(), Some(WorkerExit::Code(7)));
    assert!(!WorkerExit::Code(7).success());
}

#[test]
fn death_by_signal_is_observed() {
    for signal in [libc::SIGKILL, libc::SIGABRT, libc::SIGSEGV, libc::SIGTERM] {
        let mut worker = sh(&format!("kill -{signal} $$"));
        assert_eq!(
            wait(&mut worker),
            WorkerExit::Signal(signal),
            "signal {signal}"
        );
    }
}

#[test]
fn kill_is_observed_and_killing_an_exited_worker_is_no_error() {
    let mut worker = sh("exec sleep 60");
    assert_eq!(
        worker.try_wait().expect("try_wait"),
        None,
        "a sleeping worker runs"
    );
    assert_eq!(
        worker
            .wait_timeout(Duration::from_millis(50))
            .expect("wait_timeout"),
        None
    );
    worker.kill(libc::SIGKILL).expect("kill");
    assert_eq!(wait(&mut worker), WorkerExit::Signal(libc::SIGKILL));
    assert_eq!(
        worker.exit_status().expect("reaped").to_string(),
        "signal 9 (SIGKILL)"
    );
    worker
        .kill(libc::SIGKILL)
        .expect("killing a reaped worker is not an error");
}

#[test]
fn terminate_escalates_to_sigkill_after_the_grace_period() {
    let mut polite = sh("exec sleep 60");
    assert_eq!(
        polite
            .terminate(Duration::from_secs(20))
            .expect("terminate"),
        WorkerExit::Signal(libc::SIGTERM)
    );

    // This one ignores SIGTERM (a busy loop, so no grandchild outlives it).
    let mut stubborn = sh("trap '' TERM; while :; do :; done");
    // Give the shell time to install the trap: a SIGTERM before that would simply end it.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        stubborn
            .terminate(Duration::from_millis(200))
            .expect("terminate"),
        WorkerExit::Signal(libc::SIGKILL)
    );
}

#[test]
fn drop_kills_and_reaps_leaving_no_zombie() {
    let worker = sh("exec sleep 60");
    let pid = worker.pid();
    assert!(
        matches!(proc_state(pid), Some(state) if state != 'Z'),
        "the worker runs before the drop"
    );
    drop(worker);
    assert_eq!(
        proc_state(pid),
        None,
        "after the drop, pid {pid} is neither running nor a zombie"
    );

    // An exited but never-waited-for worker is reaped by the drop too.
    let worker = sh("exit 0");
    let pid = worker.pid();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !pidfd_readable(&worker, 100) {
        assert!(std::time::Instant::now() < deadline, "watchdog");
    }
    assert_eq!(proc_state(pid), Some('Z'), "exited and not yet reaped");
    drop(worker);
    assert_eq!(proc_state(pid), None, "the drop reaped pid {pid}");
}

#[test]
fn handle_is_watchable_as_fd_and_debuggable() {
    let worker = sh("exec sleep 60");
    assert!(
        worker.as_fd().try_clone_to_owned().is_ok(),
        "the pidfd can be duplicated for a poller"
    );
    assert_eq!(worker.start_method(), StartMethod::Spawn);
    let debug = format!("{worker:?}");
    assert!(debug.contains(&worker.pid().to_string()), "{debug}");
}

#[test]
fn missing_program_is_a_spawn_error() {
    let err = WorkerProcess::spawn(
        Path::new("/nonexistent/procpool-worker"),
        [] as [&str; 0],
        handoff(),
        &[],
    )
    .expect_err("spawning a missing program fails");
    let message = err.to_string();
    assert!(
        message.contains("/nonexistent/procpool-worker"),
        "{message}"
    );
}

#[test]
fn spawner_starts_workers_from_a_short_lived_thread_that_survive_it() {
    // PR_SET_PDEATHSIG fires when the forking *thread* exits; the spawner forks on its own
    // long-lived thread, so a worker started from a thread that then ends keeps running.
    let spawner = WorkerSpawner::new(StartMethod::Spawn)
        .program("/bin/sh")
        .arg("-c")
        .arg("exec sleep 60");
    let mut worker = std::thread::scope(|scope| {
        scope
            .spawn(|| spawner.spawn(handoff()).expect("spawn"))
            .join()
            .expect("thread")
    });
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        worker.try_wait().expect("try_wait"),
        None,
        "the worker outlived the thread that started it"
    );
}

#[test]
fn handles_can_move_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<WorkerProcess>();
    assert_send_sync::<WorkerSpawner>();
    assert_send_sync::<procpool_worker::ForkServer>();
    assert_send_sync::<procpool_worker::WorkerKiller>();
    assert_send_sync::<procpool_worker::Listener>();
}

/// A `/proc/<pid>/status` signal-set field (`SigBlk`, `SigIgn`, ...) as a bit mask.
fn signal_set(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in the status of {pid}"));
    u64::from_str_radix(line.trim(), 16).expect("a hex mask")
}

#[test]
fn a_started_program_gets_the_signal_mask_and_dispositions_it_is_promised() {
    // `sleep` leaves its signal state alone (a shell would clear its mask), so /proc shows what
    // the spawner set up between clone and exec, where it blocked every signal itself.
    let sigint = 1u64 << (libc::SIGINT - 1);
    let sigpipe = 1u64 << (libc::SIGPIPE - 1);
    let mut any_program = WorkerProcess::spawn(Path::new("/bin/sleep"), ["60"], handoff(), &[])
        .expect("spawn /bin/sleep");
    let pid = any_program.pid();
    assert_eq!(signal_set(pid, "SigBlk"), 0, "no signal is blocked");
    assert_eq!(
        signal_set(pid, "SigIgn") & (sigint | sigpipe),
        sigint,
        "SIGINT is ignored, SIGPIPE (ignored by Rust programs) is not"
    );
    any_program.kill(libc::SIGKILL).expect("kill");
    wait(&mut any_program);

    // A WorkerSpawner's program gets the same: SIGINT ignored from its first instruction, and
    // nothing blocked (a program that never reaches the entry would otherwise keep a block).
    let spawner = WorkerSpawner::new(StartMethod::Spawn)
        .program("/bin/sleep")
        .arg("60");
    let mut spawner_program = spawner.spawn(handoff()).expect("spawn");
    let pid = spawner_program.pid();
    assert_eq!(signal_set(pid, "SigBlk"), 0, "no signal is blocked");
    assert_eq!(
        signal_set(pid, "SigIgn") & (sigint | sigpipe),
        sigint,
        "SIGINT is ignored, SIGPIPE is not"
    );
    spawner_program.kill(libc::SIGKILL).expect("kill");
    wait(&mut spawner_program);
}

/// A program named without a `/` is looked up in the `PATH` the started process gets (set here
/// through the spawn's `envs` and the spawner's `env`, never in this test process's environment),
/// as `std::process::Command` does: a directory without it and a same-named file that is not
/// executable are passed over, and `argv[0]` stays the name. A name found in no directory is
/// `SpawnError::NotFound` naming it and the `PATH`.
#[test]
fn a_program_name_without_a_slash_is_looked_up_in_the_path_the_program_gets() {
    use std::os::unix::fs::PermissionsExt;
    let name = "procpool-path-test-shell";
    let found = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink("/bin/sh", found.path().join(name)).expect("symlink");
    let not_executable = tempfile::tempdir().expect("tempdir");
    let shadow = not_executable.path().join(name);
    std::fs::write(&shadow, "#!/bin/sh\nexit 3\n").expect("write");
    std::fs::set_permissions(&shadow, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let empty = tempfile::tempdir().expect("tempdir");
    let path = format!(
        "{}:{}:{}",
        empty.path().display(),
        not_executable.path().display(),
        found.path().display()
    );
    let report = found.path().join("argv0");
    let script = format!("printf %s \"$0\" > '{}'", report.display());
    let mut worker = WorkerProcess::spawn(
        Path::new(name),
        ["-c", &script],
        handoff(),
        &[(OsStr::new("PATH"), OsStr::new(&path))],
    )
    .expect("the name is found through the PATH given to the program");
    assert_eq!(wait(&mut worker), WorkerExit::Code(0));
    assert_eq!(std::fs::read_to_string(&report).expect("report"), name);

    let spawner = WorkerSpawner::new(StartMethod::Spawn)
        .program(name)
        .arg("-c")
        .arg("exit 7")
        .env("PATH", &path);
    let mut worker = spawner.spawn(handoff()).expect("a spawner finds it too");
    assert_eq!(wait(&mut worker), WorkerExit::Code(7));

    let empty_path = empty.path().as_os_str();
    let res = WorkerProcess::spawn(
        Path::new(name),
        [] as [&str; 0],
        handoff(),
        &[(OsStr::new("PATH"), empty_path)],
    );
    match res {
        Err(SpawnError::NotFound { program, path }) => {
            assert_eq!(program, Path::new(name));
            assert_eq!(path, empty_path);
        }
        other => panic!("expected SpawnError::NotFound, got {other:?}"),
    }
}
