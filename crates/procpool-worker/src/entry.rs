//! Entering worker (or fork-server) mode from the environment a pool set up.

use std::ffi::OsStr;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use procpool_ipc::{Endpoint, Handoff};

use crate::process::{ENV_FORK_SERVER, ENV_PARENT_PID, ENV_WORKER_FDS};
use crate::runtime::{RunOptions, WorkerError, run_worker};

/// Exit code of a worker whose run loop ended normally: `Shutdown`, or the parent closed the
/// channel (the usual end of a worker of a dropped pool).
pub const WORKER_EXIT_OK: i32 = 0;
/// Exit code of a worker whose initializer failed (it told the parent with `InitFailed` first).
pub const WORKER_EXIT_INIT_FAILED: i32 = 78;
/// Exit code of a process whose `PROCPOOL_*` variables were malformed or named closed fds.
pub const WORKER_EXIT_BAD_ENV: i32 = 64;
/// Exit code of a worker whose parent was already gone when it started.
pub const WORKER_EXIT_PARENT_GONE: i32 = 69;
/// Exit code of a worker whose run loop failed (protocol or transport error).
pub const WORKER_EXIT_RUNTIME_ERROR: i32 = 70;
/// Exit code of a worker that could not open the channel it was handed.
pub const WORKER_EXIT_CHANNEL_ERROR: i32 = 74;

pub(crate) const EXIT_PARENT_GONE: i32 = WORKER_EXIT_PARENT_GONE;
pub(crate) const EXIT_RUNTIME_ERROR: i32 = WORKER_EXIT_RUNTIME_ERROR;

/// Runs this process as a worker or fork server if a pool started it as one; returns otherwise.
///
/// Call it first thing in `main`, before any thread is started (the binary `procpool-worker` and
/// `procpool::init()` do). When not started by a pool it only looks up two environment
/// variables and returns.
///
/// In worker mode (`PROCPOOL_WORKER_FDS` is set) it removes the `PROCPOOL_*` variables (so that
/// processes a task starts do not misread them), exits at once with
/// [`WORKER_EXIT_PARENT_GONE`] if the parent named by `PROCPOOL_PARENT_PID` is no longer its
/// parent, ignores SIGINT, opens the channel from the inherited fds, runs the worker loop and
/// exits with [`WORKER_EXIT_OK`], [`WORKER_EXIT_INIT_FAILED`], [`WORKER_EXIT_CHANNEL_ERROR`] or
/// [`WORKER_EXIT_RUNTIME_ERROR`] (the last two after a message on stderr).
/// With `PROCPOOL_FORK_SERVER` set it runs the fork server instead, which exits when its parent
/// closes the socket.
pub fn enter_worker_mode_if_requested() {
    let worker_fds = std::env::var_os(ENV_WORKER_FDS);
    let fork_server = std::env::var_os(ENV_FORK_SERVER);
    if worker_fds.is_none() && fork_server.is_none() {
        return;
    }
    let parent_pid = std::env::var_os(ENV_PARENT_PID);
    // SAFETY: this runs first thing in `main` of a process our spawner exec'd, before any thread
    // exists (the documented requirement of this function), so no other thread reads the
    // environment concurrently.
    unsafe {
        std::env::remove_var(ENV_WORKER_FDS);
        std::env::remove_var(ENV_FORK_SERVER);
        std::env::remove_var(ENV_PARENT_PID);
    }
    // The spawner armed the parent-death signal between clone and exec already (`process`), so
    // arming it again usually changes nothing. It is kept for the case the exec dropped it: the
    // kernel clears it on an exec of a set-uid or set-gid program (or one with file
    // capabilities). It is armed before the race check below, which then also catches a parent
    // that died between that exec and this point. (The kernel ties the signal to the thread that
    // started us, the spawner thread, whenever it is set.)
    arm_parent_death_signal();
    if !parent_is(parent_pid.as_deref()) {
        // The parent died before PR_SET_PDEATHSIG was armed, or these variables were inherited
        // from a process that is not our parent: either way nobody is waiting for us.
        std::process::exit(WORKER_EXIT_PARENT_GONE);
    }
    ignore_sigint();
    keep_freed_memory();
    let code = match (worker_fds, fork_server) {
        (Some(fds), _) => match parse_fds::<2>(&fds) {
            // SAFETY: the spawner placed these fds for us (checked open by parse_fds) and nothing
            // else in this fresh process has taken ownership of them.
            Some([region, socket]) => serve(Handoff::new(unsafe { own_fd(region) }, unsafe {
                own_fd(socket)
            })),
            None => bad_env(ENV_WORKER_FDS, &fds),
        },
        (None, Some(fd)) => match parse_fds::<1>(&fd) {
            Some([socket]) => {
                // SAFETY: as above, the spawner placed this fd for us and nothing else owns it.
                let socket = UnixStream::from(unsafe { own_fd(socket) });
                crate::forkserver::run_server(socket)
            }
            None => bad_env(ENV_FORK_SERVER, &fd),
        },
        (None, None) => unreachable!("checked above"),
    };
    std::process::exit(code)
}

/// Opens the channel `handoff` belongs to and runs the worker loop on it; returns the exit code.
///
/// Used by spawned workers, forked workers and `attach` alike.
pub(crate) fn serve(handoff: Handoff) -> i32 {
    let pid = std::process::id();
    let endpoint = match Endpoint::open(handoff) {
        Ok(endpoint) => endpoint,
        Err(err) => {
            eprintln!("procpool worker {pid}: cannot open its channel: {err}");
            return WORKER_EXIT_CHANNEL_ERROR;
        }
    };
    match run_worker(endpoint, RunOptions::default()) {
        Ok(()) | Err(WorkerError::Disconnected) => WORKER_EXIT_OK,
        Err(WorkerError::InitFailed(_)) => WORKER_EXIT_INIT_FAILED,
        Err(err) => {
            eprintln!("procpool worker {pid}: {err}");
            WORKER_EXIT_RUNTIME_ERROR
        }
    }
}

/// Bytes of freed heap at its top a worker keeps instead of returning them to the kernel.
const KEEP_FREED_BYTES: libc::c_int = 256 << 20;

/// Makes glibc's allocator reuse memory for large blocks in this worker process instead of
/// mapping fresh pages for each and unmapping them when freed.
///
/// glibc serves blocks above its mmap threshold (at most 32 MiB) with their own `mmap`, so a
/// task that allocates a 64 MiB buffer per call faults in 16,384 fresh zeroed pages every
/// time: about 120 ms per 64 MiB on a VM, against about 10 ms to reuse warm pages. Workers are
/// long-lived processes that see the same sizes call after call, so they take every block
/// from the heap (`M_MMAP_MAX = 0`) and keep up to [`KEEP_FREED_BYTES`] of freed memory at the
/// heap's top (`M_TRIM_THRESHOLD`). The cost: a worker's resident size stays at its high-water
/// mark minus what lies above that threshold. The fork server sets it before forking, so its
/// children inherit it; an attached process (`attach`) keeps its own allocator settings.
fn keep_freed_memory() {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: `mallopt` only changes allocator parameters; it runs before this process
        // starts any thread (see `enter_worker_mode_if_requested`), and both values are valid.
        unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0);
            libc::mallopt(libc::M_TRIM_THRESHOLD, KEEP_FREED_BYTES);
        }
    }
}

/// Ignores SIGINT in this process: the parent decides what Ctrl-C means for its workers.
///
/// A process our spawner started has it ignored already (set between clone and exec, so from
/// its first instruction); this covers a process started some other way (`attach`).
pub(crate) fn ignore_sigint() {
    // SAFETY: setting a disposition to SIG_IGN installs no handler code.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
}

/// `PR_SET_PDEATHSIG(SIGKILL)`: this process is killed when the thread that started it exits.
fn arm_parent_death_signal() {
    // SAFETY: prctl(PR_SET_PDEATHSIG) with a valid signal number changes only this process.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
    }
}

/// True if `expected` (from `PROCPOOL_PARENT_PID`) is this process's parent. A missing variable
/// counts as a match (a worker started by hand, e.g. under a debugger, has no such check).
fn parent_is(expected: Option<&OsStr>) -> bool {
    let Some(expected) = expected else {
        return true;
    };
    // SAFETY: getppid has no preconditions.
    let actual = unsafe { libc::getppid() };
    expected
        .to_str()
        .and_then(|s| s.parse::<libc::pid_t>().ok())
        == Some(actual)
}

/// Parses `"3,4"` into exactly `N` distinct fds, each of which must be open in this process.
/// The fds are marked close-on-exec so processes a task starts do not inherit them.
fn parse_fds<const N: usize>(value: &OsStr) -> Option<[RawFd; N]> {
    let mut fds = [-1; N];
    let mut parts = value.to_str()?.split(',');
    for index in 0..N {
        let fd: RawFd = parts.next()?.trim().parse().ok()?;
        if fd < 0 || fds[..index].contains(&fd) {
            return None;
        }
        // SAFETY: F_SETFD only changes the flags of the fd; it fails with EBADF if it is closed.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
            return None;
        }
        fds[index] = fd;
    }
    parts.next().is_none().then_some(fds)
}

/// Takes ownership of an inherited fd.
///
/// # Safety
///
/// - `fd` is open, and
/// - nothing else in this process owns it or will close it.
unsafe fn own_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: guaranteed by the caller.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn bad_env(name: &str, value: &OsStr) -> i32 {
    eprintln!(
        "procpool worker {}: malformed {name}={value:?}",
        std::process::id()
    );
    WORKER_EXIT_BAD_ENV
}
