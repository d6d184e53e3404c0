//! A program that cannot be executed is a typed [`SpawnError::Exec`] carrying the child's errno,
//! and the failed start leaves no process (not even a zombie) and no descriptor behind.
//!
//! One test in a binary of its own: it checks that this process has no child at all, which
//! other tests starting processes concurrently would spoil.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use procpool_ipc::{ChannelConfig, Endpoint, Handoff};
use procpool_worker::{SpawnError, StartMethod, WorkerProcess, WorkerSpawner};

/// A fresh channel's hand-over (its parent end is dropped: no program here ever runs).
fn handoff() -> Handoff {
    let (_endpoint, handoff) =
        Endpoint::create(&ChannelConfig::default()).expect("create a channel");
    handoff
}

/// Open descriptors of this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// Asserts that this process has no child process, running or zombie.
#[track_caller]
fn assert_no_child(case: &str) {
    let mut status = 0;
    // SAFETY: waitpid(-1, WNOHANG) with a pointer to a local; this binary starts no process
    // but the ones under test, so reaping whatever it finds takes nothing from anyone.
    let res = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    let err = io::Error::last_os_error();
    assert!(
        res == -1 && err.raw_os_error() == Some(libc::ECHILD),
        "{case}: a process was left behind (waitpid(-1) = {res}, {err})"
    );
}

/// Asserts that `res` is `SpawnError::Exec` for `program` with errno `errno`.
#[track_caller]
fn assert_exec_error<T: std::fmt::Debug>(
    case: &str,
    res: Result<T, SpawnError>,
    program: &Path,
    errno: i32,
) {
    match res {
        Err(SpawnError::Exec {
            program: reported,
            source,
        }) => {
            assert_eq!(reported, program, "{case}: the program named in the error");
            assert_eq!(
                source.raw_os_error(),
                Some(errno),
                "{case}: the child's errno ({source})"
            );
        }
        other => panic!("{case}: expected SpawnError::Exec, got {other:?}"),
    }
}

#[test]
fn an_exec_failure_is_a_typed_spawn_error_and_leaves_no_process_or_fd_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let not_executable = dir.path().join("not-executable");
    std::fs::write(&not_executable, "#!/bin/sh\nexit 0\n").expect("write");
    std::fs::set_permissions(&not_executable, std::fs::Permissions::from_mode(0o644))
        .expect("chmod");
    let missing = Path::new("/nonexistent/procpool-worker");
    // Warm up the spawner thread and its lazily opened descriptors before counting.
    assert!(WorkerProcess::spawn(missing, [] as [&str; 0], handoff(), &[]).is_err());
    assert_no_child("warm-up");
    let fds_before = open_fds();

    let cases: [(&str, &Path, i32); 3] = [
        ("a missing program", missing, libc::ENOENT),
        ("a directory", dir.path(), libc::EACCES),
        (
            "a file without execute permission",
            &not_executable,
            libc::EACCES,
        ),
    ];
    for (case, program, errno) in cases {
        let res = WorkerProcess::spawn(program, ["an-arg"], handoff(), &[]);
        assert_exec_error(
            &format!("WorkerProcess::spawn, {case}"),
            res,
            program,
            errno,
        );
        assert_no_child(case);

        let spawner = WorkerSpawner::new(StartMethod::Spawn).program(program);
        let res = spawner.spawn(handoff());
        assert_exec_error(&format!("WorkerSpawner, {case}"), res, program, errno);
        assert_no_child(case);

        let limited = WorkerSpawner::new(StartMethod::Spawn)
            .program(program)
            .memory_limit(1 << 30);
        let res = limited.spawn(handoff());
        assert_exec_error(&format!("with a memory limit, {case}"), res, program, errno);
        assert_no_child(case);

        let server = WorkerSpawner::new(StartMethod::ForkServer).program(program);
        let res = server.start();
        assert_exec_error(&format!("a fork server, {case}"), res, program, errno);
        assert_no_child(case);
    }
    assert_eq!(
        open_fds(),
        fds_before,
        "the failed starts left descriptors open"
    );
}
