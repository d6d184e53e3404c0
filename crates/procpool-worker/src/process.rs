//! Parent-side handles for worker processes: start, pid, pidfd, signals, exit status, reaping.
//!
//! The handle lives in procpool-worker rather than in the facade because starting a worker needs
//! `unsafe` process set-up (our own vfork-style `clone` whose child runs `prctl`, `dup2` and
//! `sigaction` before the exec, in the `vfork` submodule) and raw syscalls (`pidfd_open`,
//! `pidfd_send_signal`), and the facade is `#![forbid(unsafe_code)]`.
//! This module is the one place that starts worker processes (and fork servers).
//!
//! # How a process is started
//!
//! Every start is `vfork::spawn`: `clone(CLONE_VM | CLONE_VFORK)`, the way glibc's `posix_spawn`
//! works inside, so it copies no page tables (`fork` costs in proportion to the parent's size:
//! 28 ms against 2.3 ms from a 300 MiB parent). Unlike `posix_spawn`, the child runs a function
//! of ours between clone and exec, on its own stack and touching no lock or allocator (see the
//! submodule's docs for what it may and may not do): it arms the parent-death signal, checks its
//! parent, places the fds, resets signals, sets the memory limit, then executes the program.
//! A failed exec is reported as [`SpawnError::Exec`] with the child's errno, after the child has
//! been reaped.
//!
//! # The env protocol
//!
//! A worker started with [`StartMethod::Spawn`] finds its channel in inherited fds
//! ([`FIRST_INHERITED_FD`] and the next one), named by `PROCPOOL_WORKER_FDS=3,4` (region, socket),
//! and its parent's pid in `PROCPOOL_PARENT_PID`.
//! A fork server finds its socket in the fd named by `PROCPOOL_FORK_SERVER=3`.
//! `crate::enter_worker_mode_if_requested` reads these variables.
//!
//! # Parent death
//!
//! Every process this module starts has `PR_SET_PDEATHSIG(SIGKILL)` armed before it executes its
//! program, and has checked that its parent is still the process that started it (so a parent
//! that died before the signal was armed is noticed): whatever the program does, and whether or
//! not it ever calls `procpool::init()`, it dies with its parent.
//! The kernel clears the signal on an exec of a set-uid or set-gid program (or one with file
//! capabilities), so a worker arms it once more, with the same race check, first thing in
//! `main` (`enter_worker_mode_if_requested`); the fork server arms it in each child it forks.
//! The kernel sends that signal when the *thread* that started the child exits, not the process,
//! so every start of this module runs on one long-lived "procpool-spawner" thread: a pool may be
//! built on a short-lived thread without its workers dying with that thread.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use procpool_ipc::Handoff;

use crate::forkserver::{ForkServer, RequestError, ServerLink};

mod vfork;

/// Names the inherited channel fds of a spawned worker: `"<region fd>,<socket fd>"`.
pub const ENV_WORKER_FDS: &str = "PROCPOOL_WORKER_FDS";
/// The pid of the process that started a worker or fork server, for the parent-death race check.
pub const ENV_PARENT_PID: &str = "PROCPOOL_PARENT_PID";
/// Names the inherited socket fd of a fork server.
pub const ENV_FORK_SERVER: &str = "PROCPOOL_FORK_SERVER";
/// The first fd number a started process finds its inherited fds at.
pub const FIRST_INHERITED_FD: RawFd = 3;

/// The most fds a started process inherits (region and socket).
const MAX_INHERITED_FDS: usize = 2;

/// How a pool starts its worker processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StartMethod {
    /// Exec the worker program once per worker (the default).
    #[default]
    Spawn,
    /// Exec the worker program once as a single-threaded fork server at pool start; each worker is
    /// then a `fork` of that server, which skips the exec and the program's start-up.
    ForkServer,
}

/// How a worker process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkerExit {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
    /// It has exited, but how is unknown: it was forked by a fork server that died before
    /// reporting (the worker then died by its parent-death signal, SIGKILL, in all likelihood).
    Unknown,
}

/// Starting a worker process failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// The spawner thread could not be started or is gone.
    #[error("cannot start the procpool spawner thread: {0}")]
    SpawnerThread(#[source] io::Error),
    /// The program is a bare name (no `/`) and no directory of the `PATH` the started process
    /// would see (the command's own `PATH` if it sets one, else this process's) holds an
    /// executable file of that name.
    #[error("cannot find worker program {program:?} in PATH {path:?}")]
    NotFound {
        /// The name that was looked up.
        program: PathBuf,
        /// The `PATH` it was looked up in.
        path: OsString,
    },
    /// The worker program could not be started.
    #[error("cannot start worker program {program:?}: {source}")]
    Exec {
        /// The program that was to be executed.
        program: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// The started process could not be given a pidfd.
    #[error("cannot open a pidfd for worker process {pid}: {source}")]
    Pidfd {
        /// The pid of the started process (it has been killed and reaped).
        pid: u32,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// The fork server refused or failed the request.
    #[error("the fork server could not fork a worker: {0}")]
    Fork(#[source] io::Error),
    /// The fork server is gone, or talking to it failed.
    #[error("the fork server is gone: {0}")]
    ForkServerGone(#[source] io::Error),
}

/// Waiting for a worker process failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// The wait system call failed.
    #[error("waiting for worker process {pid} failed: {source}")]
    Io {
        /// The worker's pid.
        pid: u32,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
}

/// Starts worker processes with one [`StartMethod`], program, argument list and environment.
///
/// For [`StartMethod::ForkServer`] it owns the fork server, which is started by
/// [`start`](Self::start) or by the first [`spawn`](Self::spawn), and restarted if it died.
/// Worker handles keep their fork server alive, so dropping the spawner kills no worker.
#[derive(Debug)]
pub struct WorkerSpawner {
    /// Spawn or ForkServer.
    method: StartMethod,
    /// What to execute; for ForkServer, what the server executes.
    command: WorkerCommand,
    /// The running fork server, `None` before the first start and for Spawn.
    fork_server: Mutex<Option<ForkServer>>,
}

/// A handle to one running (or exited, not yet dropped) worker process.
///
/// The same interface serves a worker exec'd by this process and one forked by a fork server.
/// Dropping the handle kills the process with SIGKILL, if it has not been reaped yet, and reaps it:
/// it leaves neither a zombie nor an orphan behind.
pub struct WorkerProcess {
    /// The worker's pid. It stays valid (cannot be reused) until the handle has reaped it.
    pid: u32,
    /// A pidfd for the worker: readable once it has exited; signals go through it.
    pidfd: OwnedFd,
    /// The exit status, once reaped.
    exit: Option<WorkerExit>,
    /// Who reaps the process.
    kind: Kind,
}

/// Who reaps a worker process.
enum Kind {
    /// A child of this process (started by `vfork::spawn`); reaped with `waitpid`.
    Spawned,
    /// A child of a fork server, which reaps it and reports its exit status over its link.
    Forked(Arc<ServerLink>),
}

/// Signals one worker process; see [`WorkerProcess::killer`].
#[derive(Debug)]
pub struct WorkerKiller {
    /// The worker's pid (for messages).
    pid: u32,
    /// A pidfd of its own for the worker.
    pidfd: OwnedFd,
}

impl WorkerKiller {
    /// The worker's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends `signal` to the worker; one that has already exited is not an error.
    ///
    /// # Errors
    ///
    /// The kernel refused the signal (e.g. `EINVAL` for an invalid signal number).
    pub fn kill(&self, signal: i32) -> io::Result<()> {
        match pidfd_send_signal(self.pidfd.as_fd(), signal) {
            Err(err) if err.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            res => res,
        }
    }
}

impl AsFd for WorkerKiller {
    /// The killer's own pidfd: it polls readable once the worker has exited.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }
}

/// Program, arguments and environment of the processes a spawner executes.
#[derive(Debug, Clone)]
pub(crate) struct WorkerCommand {
    /// `None`: `/proc/self/exe`.
    pub(crate) program: Option<PathBuf>,
    /// Arguments after argv\[0\].
    pub(crate) args: Vec<OsString>,
    /// Extra environment variables.
    pub(crate) envs: Vec<(OsString, OsString)>,
    /// `RLIMIT_AS` for each worker (not for a fork server itself).
    pub(crate) memory_limit: Option<u64>,
}

/// What a started process is told to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// A worker: fds are region and socket.
    Worker,
    /// A fork server: the one fd is its socket to the parent.
    ForkServer,
}

impl StartMethod {
    /// The method's name as used in docs and error messages: `"spawn"` or `"forkserver"`.
    pub fn name(self) -> &'static str {
        match self {
            StartMethod::Spawn => "spawn",
            StartMethod::ForkServer => "forkserver",
        }
    }
}

impl WorkerExit {
    /// True for exit code 0.
    pub fn success(self) -> bool {
        self == WorkerExit::Code(0)
    }

    /// Decodes a raw status from `waitpid`.
    pub(crate) fn from_wait_status(status: i32) -> WorkerExit {
        if libc::WIFSIGNALED(status) {
            WorkerExit::Signal(libc::WTERMSIG(status))
        } else {
            WorkerExit::Code(libc::WEXITSTATUS(status))
        }
    }
}

impl fmt::Display for WorkerExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            WorkerExit::Code(code) => write!(f, "exit code {code}"),
            WorkerExit::Signal(signal) => {
                write!(f, "signal {signal}")?;
                if let Some(name) = signal_name(signal) {
                    write!(f, " ({name})")?;
                }
                Ok(())
            }
            WorkerExit::Unknown => write!(f, "an unknown exit status (its fork server is gone)"),
        }
    }
}

impl WorkerSpawner {
    /// A spawner for `method` that executes the current executable (`/proc/self/exe`) with no
    /// arguments; the program must call `enter_worker_mode_if_requested` first thing in `main`.
    pub fn new(method: StartMethod) -> WorkerSpawner {
        WorkerSpawner {
            method,
            command: WorkerCommand {
                program: None,
                args: Vec::new(),
                envs: Vec::new(),
                memory_limit: None,
            },
            fork_server: Mutex::new(None),
        }
    }

    /// Executes `program` instead of the current executable (e.g. the `procpool-worker` binary).
    /// A name without a `/` is looked up in `PATH` as `std::process::Command` does (see
    /// [`WorkerProcess::spawn`]).
    pub fn program(mut self, program: impl Into<PathBuf>) -> WorkerSpawner {
        self.command.program = Some(program.into());
        self
    }

    /// Appends one argument to the program's command line.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> WorkerSpawner {
        self.command.args.push(arg.as_ref().to_owned());
        self
    }

    /// Sets one environment variable for the started processes (they inherit the rest).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> WorkerSpawner {
        self.command
            .envs
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Limits each worker's address space to `bytes` (`RLIMIT_AS`, soft and hard), so a worker
    /// that allocates more sees allocation failures (a Rust allocation failure aborts the
    /// worker, `try_reserve` reports it) instead of pushing the machine into swap or the OOM
    /// killer. A fork server itself is not limited; each worker it forks is.
    pub fn memory_limit(mut self, bytes: u64) -> WorkerSpawner {
        self.command.memory_limit = Some(bytes);
        self
    }

    /// The start method.
    pub fn start_method(&self) -> StartMethod {
        self.method
    }

    /// Starts the fork server now (for [`StartMethod::ForkServer`]; a no-op for Spawn), so that
    /// a program that cannot start is reported when the pool is built.
    ///
    /// # Errors
    ///
    /// The server program could not be executed.
    pub fn start(&self) -> Result<(), SpawnError> {
        match self.method {
            StartMethod::Spawn => Ok(()),
            StartMethod::ForkServer => self.running_fork_server().map(drop),
        }
    }

    /// Starts one worker process that serves the channel `handoff` belongs to.
    ///
    /// # Errors
    ///
    /// See [`SpawnError`]; on error no process is left behind.
    pub fn spawn(&self, handoff: Handoff) -> Result<WorkerProcess, SpawnError> {
        match self.method {
            StartMethod::Spawn => spawn_process(&self.command, handoff_fds(handoff), Role::Worker),
            StartMethod::ForkServer => match self.running_fork_server()?.request(&handoff) {
                // The server died before it got the request, so no worker was forked for this
                // channel: a fresh server may serve it.
                Err(RequestError::NotSent(_)) => self
                    .running_fork_server()?
                    .request(&handoff)
                    .map_err(RequestError::into_inner),
                res => res.map_err(RequestError::into_inner),
            },
        }
    }

    /// The fork server of a [`StartMethod::ForkServer`] spawner, started (or restarted, if it
    /// died) as needed; `None` for [`StartMethod::Spawn`].
    ///
    /// # Errors
    ///
    /// The server could not be started.
    pub fn fork_server(&self) -> Result<Option<ForkServer>, SpawnError> {
        match self.method {
            StartMethod::Spawn => Ok(None),
            StartMethod::ForkServer => self.running_fork_server().map(Some),
        }
    }

    /// The running fork server, started or restarted as needed.
    fn running_fork_server(&self) -> Result<ForkServer, SpawnError> {
        let mut guard = self
            .fork_server
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(server) = &*guard {
            if server.is_alive() {
                return Ok(server.clone());
            }
        }
        let server = ForkServer::start(&self.command)?;
        *guard = Some(server.clone());
        Ok(server)
    }
}

impl WorkerProcess {
    /// Executes `program` with `args` and extra `envs` as a worker serving the channel `handoff`
    /// belongs to.
    ///
    /// The child gets the handoff's region and socket at fds 3 and 4 (without `FD_CLOEXEC`),
    /// `PROCPOOL_WORKER_FDS=3,4` and `PROCPOOL_PARENT_PID`, stdin from `/dev/null`, this process's
    /// stdout and stderr, SIGINT ignored, SIGPIPE at its default, an empty signal mask, and
    /// `PR_SET_PDEATHSIG(SIGKILL)` (armed between clone and exec, so `program` may be any
    /// program).
    ///
    /// A `program` without a `/` is looked up in `PATH` before the start, as
    /// `std::process::Command` (`execvp`) does: in the `PATH` of `envs` if it sets one, else in
    /// this process's (`/bin:/usr/bin` if neither has one), taking the first executable file
    /// of that name; an empty entry means the current directory. `argv[0]` stays the name.
    ///
    /// # Errors
    ///
    /// [`SpawnError::NotFound`] if a bare name is found in no directory of `PATH`; otherwise
    /// see [`SpawnError`]. On error no process is left behind.
    pub fn spawn<I, S>(
        program: &Path,
        args: I,
        handoff: Handoff,
        envs: &[(&OsStr, &OsStr)],
    ) -> Result<WorkerProcess, SpawnError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let command = WorkerCommand {
            program: Some(program.to_owned()),
            args: args
                .into_iter()
                .map(|arg| arg.as_ref().to_owned())
                .collect(),
            envs: envs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            memory_limit: None,
        };
        spawn_process(&command, handoff_fds(handoff), Role::Worker)
    }

    /// Wraps a worker forked by a fork server.
    pub(crate) fn forked(pid: u32, pidfd: OwnedFd, link: Arc<ServerLink>) -> WorkerProcess {
        WorkerProcess {
            pid,
            pidfd,
            exit: None,
            kind: Kind::Forked(link),
        }
    }

    /// The worker's pid. It cannot be reused by another process while this handle is alive.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// A pidfd for the worker: it polls readable (`POLLIN`) once the worker has exited.
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// A handle that can signal this worker from another thread while this one waits.
    ///
    /// It holds its own pidfd, so a signal sent after the worker was reaped fails harmlessly
    /// (`ESRCH`, reported as success) instead of hitting a process that reused the pid.
    ///
    /// # Errors
    ///
    /// Duplicating the pidfd failed (e.g. `EMFILE`).
    pub fn killer(&self) -> io::Result<WorkerKiller> {
        Ok(WorkerKiller {
            pid: self.pid,
            pidfd: self.pidfd.try_clone()?,
        })
    }

    /// How the worker was started.
    pub fn start_method(&self) -> StartMethod {
        match self.kind {
            Kind::Spawned => StartMethod::Spawn,
            Kind::Forked(_) => StartMethod::ForkServer,
        }
    }

    /// Sends `signal` (e.g. `libc::SIGKILL`) through the pidfd, so it cannot hit a reused pid.
    /// A worker that has already exited is not an error.
    ///
    /// # Errors
    ///
    /// The kernel refused the signal (e.g. `EINVAL` for an invalid signal number).
    pub fn kill(&self, signal: i32) -> io::Result<()> {
        match pidfd_send_signal(self.pidfd.as_fd(), signal) {
            Err(err) if err.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            res => res,
        }
    }

    /// Sends SIGTERM, waits up to `grace` for the worker to exit, then sends SIGKILL and reaps it.
    ///
    /// # Errors
    ///
    /// See [`WaitError`].
    pub fn terminate(&mut self, grace: Duration) -> Result<WorkerExit, WaitError> {
        if let Some(exit) = self.exit {
            return Ok(exit);
        }
        self.kill(libc::SIGTERM)
            .map_err(|source| self.io_error(source))?;
        if let Some(exit) = self.wait_timeout(grace)? {
            return Ok(exit);
        }
        self.kill(libc::SIGKILL)
            .map_err(|source| self.io_error(source))?;
        self.wait()
    }

    /// Reaps the worker if it has exited; `Ok(None)` if it still runs.
    ///
    /// # Errors
    ///
    /// See [`WaitError`].
    pub fn try_wait(&mut self) -> Result<Option<WorkerExit>, WaitError> {
        if self.exit.is_some() {
            return Ok(self.exit);
        }
        let exit = match &mut self.kind {
            Kind::Spawned => waitpid(self.pid, true).map_err(|source| self.io_error(source))?,
            Kind::Forked(link) => {
                if !poll_readable(self.pidfd.as_fd(), Some(Duration::ZERO)).map_err(|source| {
                    WaitError::Io {
                        pid: self.pid,
                        source,
                    }
                })? {
                    return Ok(None);
                }
                Some(link.wait_exit(self.pid))
            }
        };
        self.exit = exit;
        Ok(exit)
    }

    /// Blocks until the worker has exited and reaps it.
    ///
    /// # Errors
    ///
    /// See [`WaitError`].
    pub fn wait(&mut self) -> Result<WorkerExit, WaitError> {
        if let Some(exit) = self.exit {
            return Ok(exit);
        }
        let exit = match &mut self.kind {
            Kind::Spawned => waitpid(self.pid, false)
                .map_err(|source| self.io_error(source))?
                .ok_or_else(|| self.io_error(io::Error::other("waitpid returned no status")))?,
            Kind::Forked(link) => {
                poll_readable(self.pidfd.as_fd(), None).map_err(|source| WaitError::Io {
                    pid: self.pid,
                    source,
                })?;
                link.wait_exit(self.pid)
            }
        };
        self.exit = Some(exit);
        Ok(exit)
    }

    /// Waits up to `timeout` for the worker to exit and reaps it; `Ok(None)` if it still runs.
    ///
    /// # Errors
    ///
    /// See [`WaitError`].
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<WorkerExit>, WaitError> {
        if self.exit.is_some() {
            return Ok(self.exit);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let exited =
                poll_readable(self.pidfd.as_fd(), Some(left)).map_err(|source| WaitError::Io {
                    pid: self.pid,
                    source,
                })?;
            if exited {
                return self.wait().map(Some);
            }
            if left.is_zero() {
                return Ok(None);
            }
        }
    }

    /// The exit status, if the handle has reaped the worker.
    pub fn exit_status(&self) -> Option<WorkerExit> {
        self.exit
    }

    fn io_error(&self, source: io::Error) -> WaitError {
        WaitError::Io {
            pid: self.pid,
            source,
        }
    }
}

impl AsFd for WorkerProcess {
    /// The pidfd.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }
}

impl fmt::Debug for WorkerProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerProcess")
            .field("pid", &self.pid)
            .field("pidfd", &self.pidfd.as_raw_fd())
            .field("start_method", &self.start_method())
            .field("exit", &self.exit)
            .finish()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if self.exit.is_none() {
            // Errors are ignored: a kill can only fail for a process that is already gone, and a
            // failed wait leaves nothing we could still do from a destructor.
            let _ = self.kill(libc::SIGKILL);
            let _ = self.wait();
        }
    }
}

/// Splits a handoff into the fds a spawned worker inherits, in order: region, socket.
fn handoff_fds(handoff: Handoff) -> Vec<OwnedFd> {
    let (region, socket) = handoff.into_fds();
    vec![region, socket]
}

/// Executes `command` as `role`, handing it `fds` at [`FIRST_INHERITED_FD`] onwards.
///
/// The fork happens on the spawner thread (see the module docs on parent death).
pub(crate) fn spawn_process(
    command: &WorkerCommand,
    fds: Vec<OwnedFd>,
    role: Role,
) -> Result<WorkerProcess, SpawnError> {
    assert!(
        fds.len() <= MAX_INHERITED_FDS,
        "at most {MAX_INHERITED_FDS} inherited fds"
    );
    let command = command.clone();
    on_spawner_thread(move || spawn_here(&command, &fds, role))
        .map_err(SpawnError::SpawnerThread)?
}

/// The body of [`spawn_process`], run on the spawner thread.
///
/// Starts the child with our own vfork-style clone (`vfork::spawn`; no copy of this process's page
/// tables, which `fork` pays in proportion to the parent's size: 28 ms against 2.3 ms for a
/// 300 MiB parent). Between clone and exec the child arms `PR_SET_PDEATHSIG(SIGKILL)`, checks that
/// its parent is still this process, places the fds (stdin from `/dev/null`, `fds` at
/// [`FIRST_INHERITED_FD`] onwards), sets SIGINT to `SIG_IGN`, SIGPIPE and every caught signal to
/// their defaults, the memory limit and an empty signal mask, so whatever `command` executes gets
/// all of it, whether or not it ever reaches procpool's entry (`vfork::ChildArgs` says why
/// these dispositions and this mask). A program named without a `/` is looked up in `PATH`
/// here, before the clone (`search_path`), since the child may not allocate.
fn spawn_here(
    command: &WorkerCommand,
    fds: &[OwnedFd],
    role: Role,
) -> Result<WorkerProcess, SpawnError> {
    use std::os::unix::ffi::OsStrExt;

    let (program, arg0) = program_and_arg0(command);
    let exec_error = |source: io::Error| SpawnError::Exec {
        program: program.clone(),
        source,
    };
    let program_c = c_string(program.as_os_str()).map_err(exec_error)?;
    let mut argv = vec![c_string(&arg0).map_err(exec_error)?];
    for arg in &command.args {
        argv.push(c_string(arg).map_err(exec_error)?);
    }
    // The environment: this process's, minus our variables, plus the command's, plus ours.
    let fd_list = (FIRST_INHERITED_FD..)
        .take(fds.len())
        .map(|fd| fd.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let parent_pid = std::process::id();
    let ours = [
        (
            match role {
                Role::Worker => ENV_WORKER_FDS,
                Role::ForkServer => ENV_FORK_SERVER,
            },
            fd_list,
        ),
        (ENV_PARENT_PID, parent_pid.to_string()),
    ];
    let is_ours =
        |key: &OsStr| key == ENV_WORKER_FDS || key == ENV_FORK_SERVER || key == ENV_PARENT_PID;
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(key, _)| !is_ours(key) && !command.envs.iter().any(|(set, _)| set == key))
        .collect();
    env.extend(
        command
            .envs
            .iter()
            .filter(|(key, _)| !is_ours(key))
            .cloned(),
    );
    env.extend(
        ours.iter()
            .map(|(key, value)| (OsString::from(key), OsString::from(value))),
    );
    let mut envp = Vec::with_capacity(env.len());
    for (key, value) in &env {
        let mut entry = key.as_bytes().to_vec();
        entry.push(b'=');
        entry.extend_from_slice(value.as_bytes());
        envp.push(std::ffi::CString::new(entry).map_err(|_| {
            exec_error(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a NUL byte in an environment variable",
            ))
        })?);
    }
    let argv_ptrs = null_terminated(&argv);
    let envp_ptrs = null_terminated(&envp);
    // Looked up in the environment the program gets, as `execvp` in a `Command` child does.
    let path_var = env
        .iter()
        .find(|(key, _)| key == "PATH")
        .map(|(_, value)| value.as_os_str());
    let resolved = search_path(&program, path_var)?;
    let program_c = match &resolved {
        Some(found) => c_string(found.as_os_str()).map_err(exec_error)?,
        None => program_c,
    };

    // Sources are first copied above the target range (close-on-exec, so no other child
    // inherits them), so placing one cannot overwrite another; the child's dup2 clears
    // close-on-exec on the targets.
    let mut high = Vec::with_capacity(fds.len());
    let mut high_raw = [-1 as RawFd; MAX_INHERITED_FDS];
    for (fd, raw) in fds.iter().zip(&mut high_raw) {
        let copy = nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(FIRST_INHERITED_FD + MAX_INHERITED_FDS as RawFd),
        )
        .map_err(|errno| exec_error(errno.into()))?;
        // SAFETY: F_DUPFD_CLOEXEC returned a new fd that nothing else owns.
        high.push(unsafe { OwnedFd::from_raw_fd(copy) });
        *raw = copy;
    }
    let null = std::fs::File::open("/dev/null").map_err(exec_error)?;
    let memory_limit = match role {
        Role::Worker => command.memory_limit,
        Role::ForkServer => None,
    };
    let args = vfork::ChildArgs {
        program: &program_c,
        argv: &argv_ptrs,
        envp: &envp_ptrs,
        stdin: null.as_raw_fd(),
        fds: &high_raw[..fds.len()],
        first_target: FIRST_INHERITED_FD,
        parent_pid: parent_pid as libc::pid_t,
        memory_limit: memory_limit.map(|bytes| libc::rlimit {
            rlim_cur: bytes as libc::rlim_t,
            rlim_max: bytes as libc::rlim_t,
        }),
    };
    let pid = match vfork::spawn(&args) {
        Ok(pid) => pid as u32,
        Err(vfork::SpawnFailure::Clone(source)) => return Err(exec_error(source)),
        Err(vfork::SpawnFailure::Child(failure)) => {
            return Err(exec_error(failure.into_io_error()));
        }
    };
    drop(high);
    drop(null);
    match pidfd_open(pid) {
        Ok(pidfd) => Ok(WorkerProcess {
            pid,
            pidfd,
            exit: None,
            kind: Kind::Spawned,
        }),
        Err(source) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as libc::pid_t),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = waitpid(pid, false);
            Err(SpawnError::Pidfd { pid, source })
        }
    }
}

/// The program to execute, and `argv[0]`.
fn program_and_arg0(command: &WorkerCommand) -> (PathBuf, OsString) {
    match &command.program {
        Some(program) => (program.clone(), program.clone().into_os_string()),
        // Exec'ing /proc/self/exe runs this very binary even if its file was replaced meanwhile;
        // argv[0] still shows its name.
        None => {
            let arg0 = std::env::current_exe().map_or_else(
                |_| OsString::from("/proc/self/exe"),
                PathBuf::into_os_string,
            );
            (PathBuf::from("/proc/self/exe"), arg0)
        }
    }
}

/// `PATH` when the started process's environment has none: glibc's `execvp` default
/// (`confstr(_CS_PATH)`).
const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// For a `program` without a `/`, the first executable file of that name in a directory of
/// `path_var` (or [`DEFAULT_PATH`]), in order, as `execvp` searches: `Ok(None)` for a program
/// that names a path (it is executed as given), and for the empty name (`execve` reports it).
///
/// "Executable" is what the parent can check before the clone: a file (symlinks followed) that
/// `access(X_OK)` allows. `execvp` instead tries `execve` on each candidate and goes on after
/// `EACCES`, which only differs for a file whose exec fails for another reason (then
/// [`SpawnError::Exec`] carries that errno; `execvp` would try the next directory).
///
/// # Errors
///
/// [`SpawnError::NotFound`] when no directory has one.
fn search_path(program: &Path, path_var: Option<&OsStr>) -> Result<Option<PathBuf>, SpawnError> {
    use std::os::unix::ffi::OsStrExt;
    let name = program.as_os_str();
    if name.is_empty() || name.as_bytes().contains(&b'/') {
        return Ok(None);
    }
    let path_var = path_var.unwrap_or(OsStr::new(DEFAULT_PATH));
    for dir in path_var.as_bytes().split(|&byte| byte == b':') {
        // An empty entry is the current directory, as for `execvp` and the shell.
        let dir = if dir.is_empty() {
            Path::new(".")
        } else {
            Path::new(OsStr::from_bytes(dir))
        };
        let candidate = dir.join(name);
        let is_file = std::fs::metadata(&candidate).is_ok_and(|meta| meta.is_file());
        if is_file && nix::unistd::access(&candidate, nix::unistd::AccessFlags::X_OK).is_ok() {
            return Ok(Some(candidate));
        }
    }
    Err(SpawnError::NotFound {
        program: program.to_owned(),
        path: path_var.to_owned(),
    })
}

fn c_string(bytes: &OsStr) -> io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(bytes.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in an argument"))
}

/// Pointers to `strings`, followed by a null pointer: an `argv` or `envp` for `execve`. The
/// pointers are valid as long as `strings` is.
fn null_terminated(strings: &[std::ffi::CString]) -> Vec<*const std::ffi::c_char> {
    strings
        .iter()
        .map(|string| string.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Reaps child `pid` (`nohang`: only if it has exited); retries on `EINTR`.
fn waitpid(pid: u32, nohang: bool) -> io::Result<Option<WorkerExit>> {
    let mut status = 0;
    let flags = if nohang { libc::WNOHANG } else { 0 };
    loop {
        // SAFETY: waitpid writes the status into the local we pass; `pid` is our own child,
        // not yet reaped (its handle reaps it once).
        let res = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, flags) };
        if res == 0 {
            return Ok(None);
        }
        if res > 0 {
            return Ok(Some(WorkerExit::from_wait_status(status)));
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Sets `RLIMIT_AS` (soft and hard) of this process to `bytes`. Async-signal-safe.
pub(crate) fn set_memory_limit(bytes: u64) -> io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: bytes as libc::rlim_t,
    };
    // SAFETY: setrlimit reads the struct we pass by pointer and changes only this process.
    if unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A job for the spawner thread.
type SpawnJob = Box<dyn FnOnce() + Send>;

/// The spawner thread's queue, with the pid of the process it belongs to (a forked copy of this
/// process has no spawner thread, although it inherits this static).
static SPAWNER: Mutex<Option<(u32, mpsc::Sender<SpawnJob>)>> = Mutex::new(None);

/// Runs `job` on the long-lived spawner thread and returns its result.
fn on_spawner_thread<R: Send + 'static>(job: impl FnOnce() -> R + Send + 'static) -> io::Result<R> {
    let (result_tx, result_rx) = mpsc::sync_channel(1);
    let job: SpawnJob = Box::new(move || {
        let _ = result_tx.send(job());
    });
    let sender = {
        let mut guard = SPAWNER.lock().unwrap_or_else(PoisonError::into_inner);
        let pid = std::process::id();
        match &*guard {
            Some((owner, sender)) if *owner == pid => sender.clone(),
            _ => {
                let (sender, receiver) = mpsc::channel::<SpawnJob>();
                std::thread::Builder::new()
                    .name("procpool-spawner".into())
                    .spawn(move || {
                        for job in receiver {
                            // A panicking job must not take the thread (and later spawns) with it;
                            // its caller sees the dropped result channel instead.
                            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                        }
                    })?;
                *guard = Some((pid, sender.clone()));
                sender
            }
        }
    };
    sender
        .send(job)
        .map_err(|_| io::Error::other("the procpool spawner thread is gone"))?;
    result_rx
        .recv()
        .map_err(|_| io::Error::other("a spawn job panicked on the procpool spawner thread"))
}

/// `pidfd_open(pid, 0)`: a close-on-exec pidfd.
pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: pidfd_open takes two integers and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0 as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `pidfd_send_signal(pidfd, signal, NULL, 0)`.
pub(crate) fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: i32) -> io::Result<()> {
    // SAFETY: a null siginfo pointer is allowed and means "as kill(2) would send it"; the fd is
    // borrowed, so it stays open for the call.
    let res = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0 as libc::c_uint,
        )
    };
    if res < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Polls `fd` for readability (or hang-up); `None` waits forever. Retries on EINTR.
pub(crate) fn poll_readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<bool> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let poll_timeout = match deadline {
            None => PollTimeout::NONE,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                // Round up so a sub-millisecond remainder does not turn into a busy loop.
                let millis = left.as_micros().div_ceil(1000).min(i32::MAX as u128);
                PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(&mut fds, poll_timeout) {
            Ok(0) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(false);
                }
            }
            Ok(_) => return Ok(true),
            Err(nix::errno::Errno::EINTR) => {}
            Err(errno) => return Err(errno.into()),
        }
    }
}

/// The name of a common signal, for messages.
pub(crate) fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGSYS => "SIGSYS",
        _ => return None,
    })
}
