//! The `procpool-worker` binary started by a person: `list`, `--help`, `--version`, and how it
//! treats a malformed worker environment.

mod process_support;

use std::process::{Command, Output, Stdio};

use process_support::worker_bin;

/// Runs the binary to completion (it never waits for input: stdin is /dev/null).
fn run(args: &[&str], envs: &[(&str, &str)]) -> Output {
    Command::new(worker_bin())
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run procpool-worker")
}

#[test]
fn list_prints_every_builtin_with_id_and_signature() {
    let out = run(&["list"], &[]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    for name in [
        "noop",
        "add_one",
        "spin_for",
        "sleep_for",
        "echo_bytes",
        "sha512_file",
        "fail",
        "panic",
        "abort",
        "segfault",
        "exit",
        "allocate",
    ] {
        let line = stdout
            .lines()
            .find(|line| {
                line.split_whitespace()
                    .nth(1)
                    .is_some_and(|path| path.ends_with(&format!("::{name}")))
            })
            .unwrap_or_else(|| panic!("`{name}` is listed:\n{stdout}"));
        let id = line.split_whitespace().next().expect("id");
        assert_eq!(id.len(), 16, "a 64-bit hex id: {line}");
        assert!(
            u64::from_str_radix(id, 16).is_ok(),
            "a 64-bit hex id: {line}"
        );
    }
    assert!(
        stdout.contains("add_one") && stdout.contains("u64"),
        "signatures are printed:\n{stdout}"
    );
    // The listing agrees with the library's own table (same build, same tasks).
    assert_eq!(stdout, procpool_worker::describe_all().to_string());
}

#[test]
fn help_and_version() {
    let help = run(&["--help"], &[]);
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).expect("utf-8");
    assert!(help.contains("list") && help.contains("attach"), "{help}");

    let version = run(&["--version"], &[]);
    assert!(version.status.success());
    let version = String::from_utf8(version.stdout).expect("utf-8");
    assert_eq!(
        version.trim(),
        format!("procpool-worker {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn attach_to_a_missing_socket_fails_with_a_message() {
    let out = run(&["attach", "/nonexistent/procpool.sock"], &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).expect("utf-8");
    assert!(stderr.contains("/nonexistent/procpool.sock"), "{stderr}");
}

#[test]
fn malformed_worker_environment_is_refused_with_its_own_exit_code() {
    let parent = std::process::id().to_string();
    // Fds 3 and 4 are not open in the child (Command closes everything but 0-2 by CLOEXEC).
    let out = run(
        &[],
        &[
            ("PROCPOOL_WORKER_FDS", "3,4"),
            ("PROCPOOL_PARENT_PID", &parent),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(procpool_worker::WORKER_EXIT_BAD_ENV),
        "{out:?}"
    );
    let out = run(
        &[],
        &[
            ("PROCPOOL_WORKER_FDS", "nonsense"),
            ("PROCPOOL_PARENT_PID", &parent),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(procpool_worker::WORKER_EXIT_BAD_ENV),
        "{out:?}"
    );
    // A worker whose recorded parent is not its parent exits before doing anything.
    let out = run(
        &["list"],
        &[("PROCPOOL_WORKER_FDS", "3,4"), ("PROCPOOL_PARENT_PID", "1")],
    );
    assert_eq!(
        out.status.code(),
        Some(procpool_worker::WORKER_EXIT_PARENT_GONE),
        "{out:?}"
    );
    assert!(out.stdout.is_empty(), "nothing of `list` ran");
}
