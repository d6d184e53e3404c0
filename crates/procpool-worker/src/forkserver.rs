//! The fork-server start method: one exec'd, single-threaded server process forks every worker.
//!
//! # Protocol
//!
//! The parent starts its worker program with `PROCPOOL_FORK_SERVER=3`, fd 3 being one end of a
//! Unix stream socket pair (see `process.rs` for the rest of the env protocol).
//! Over that socket:
//!
//! - server → parent, first: a `READY` report, once the server runs its loop;
//! - parent → server: one handoff per worker to start (`procpool_ipc::send_handoff`,
//!   region and socket fds over `SCM_RIGHTS`) whose payload is the worker's `RLIMIT_AS` as a
//!   little-endian `u64` (0: none); the parent sends the next only after the reply;
//! - server → parent, the reply: `SPAWNED { pid }` with a pidfd of the new worker attached over
//!   `SCM_RIGHTS`, or `FORK_FAILED { errno }`;
//! - server → parent, at any time: `EXITED { pid, wait status }` once the server reaped a worker.
//!
//! Reports are 16 bytes: kind, pid, value (all `u32`/`i32`, native-endian: both ends are the
//! same binary on the same machine) and 4 reserved bytes.
//!
//! The server sends the pidfd itself because it opens it before it could possibly reap the
//! child, so the parent's pidfd always refers to the right process, never to a reused pid.
//! The parent watches and signals a forked worker through that pidfd, but only the server can
//! reap it: the server polls its socket and one pidfd per child, reaps each child that exits and
//! reports the status.
//!
//! # Lifetime
//!
//! The server dies with its parent (`PR_SET_PDEATHSIG`), each forked worker dies with the server
//! (`PR_SET_PDEATHSIG` set right after the fork, then a `getppid` check).
//! When the socket reaches EOF (the parent closed it or died) the server SIGKILLs and reaps all its
//! children and exits.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, IoSlice, IoSliceMut, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use procpool_ipc::Handoff;

use crate::process::{
    Role, SpawnError, WorkerCommand, WorkerExit, WorkerProcess, pidfd_open, poll_readable,
    spawn_process,
};

/// How long a freshly exec'd server may take to report `READY`. Only a watchdog: a program that
/// never enters fork-server mode (it lacks the one-line init call) is killed after this.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the server may take to answer a request, or to report a worker whose pidfd says it
/// exited. Only a watchdog: a server silent for this long (stopped, or stuck) is killed and
/// counted as gone, instead of hanging its parent.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a server that was asked to stop (socket closed) may take before it is SIGKILLed.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Report kinds (server → parent).
const REPORT_READY: u32 = 1;
const REPORT_SPAWNED: u32 = 2;
const REPORT_FORK_FAILED: u32 = 3;
const REPORT_EXITED: u32 = 4;

/// Size of one report on the wire.
const REPORT_LEN: usize = 16;

/// The parent's handle to a running fork server. Clones share the server.
///
/// The server stops (and kills any worker it still has) when the last clone and the last
/// [`WorkerProcess`] it forked are dropped.
#[derive(Clone)]
pub struct ForkServer {
    link: Arc<ServerLink>,
}

/// The parent's end of a fork server, shared by the [`ForkServer`] clones and the workers it forked.
pub(crate) struct ServerLink {
    /// The server's pid.
    server_pid: u32,
    /// `RLIMIT_AS` of each forked worker, 0 for none; sent with every request.
    memory_limit: u64,
    /// Everything that needs the socket, behind one lock: one request or one read at a time.
    state: Mutex<LinkState>,
}

/// The mutable part of a [`ServerLink`].
struct LinkState {
    /// The socket to the server.
    socket: UnixStream,
    /// Exit statuses reported for workers whose handle has not asked for them yet.
    exits: HashMap<u32, WorkerExit>,
    /// The socket failed or reached EOF: the server is gone, nothing more will be reported.
    gone: bool,
    /// The server process (a child of this process).
    process: WorkerProcess,
}

/// One report from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Report {
    kind: u32,
    pid: u32,
    value: i32,
}

impl ForkServer {
    /// Execs `command` in fork-server mode and waits until it reports that it is ready.
    pub(crate) fn start(command: &WorkerCommand) -> Result<ForkServer, SpawnError> {
        let (parent_end, server_end) = UnixStream::pair().map_err(SpawnError::ForkServerGone)?;
        let mut process =
            spawn_process(command, vec![OwnedFd::from(server_end)], Role::ForkServer)?;
        let ready = match poll_readable(parent_end.as_fd(), Some(READY_TIMEOUT)) {
            Ok(true) => recv_report(&parent_end),
            Ok(false) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the worker program did not become a fork server in time \
                 (does its main call enter_worker_mode_if_requested / procpool::init first?)",
            )),
            Err(err) => Err(err),
        };
        match ready {
            Ok(Some((
                Report {
                    kind: REPORT_READY, ..
                },
                _,
            ))) => {}
            Ok(Some((report, _))) => {
                return Err(SpawnError::ForkServerGone(io::Error::other(format!(
                    "unexpected first report from the fork server: {report:?}"
                ))));
            }
            Ok(None) => {
                let exit = process.wait_timeout(Duration::from_secs(1)).ok().flatten();
                let how = exit.map_or_else(
                    || "closed its socket".to_owned(),
                    |exit| format!("exited with {exit}"),
                );
                return Err(SpawnError::ForkServerGone(io::Error::other(format!(
                    "the fork server {how} before it was ready"
                ))));
            }
            Err(err) => return Err(SpawnError::ForkServerGone(err)),
        }
        let server_pid = process.pid();
        let state = LinkState {
            socket: parent_end,
            exits: HashMap::new(),
            gone: false,
            process,
        };
        Ok(ForkServer {
            link: Arc::new(ServerLink {
                server_pid,
                memory_limit: command.memory_limit.unwrap_or(0),
                state: Mutex::new(state),
            }),
        })
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.link.server_pid
    }

    /// True while the server process runs and its socket works.
    pub fn is_alive(&self) -> bool {
        let mut state = self.link.lock();
        if !state.gone && matches!(state.process.try_wait(), Ok(Some(_)) | Err(_)) {
            state.gone = true;
        }
        !state.gone
    }

    /// Asks the server to fork a worker serving the channel `handoff` belongs to.
    ///
    /// The returned handle behaves like one for a spawned worker: its pidfd polls readable when
    /// the worker exits, `kill` signals through the pidfd, and `wait` returns the exit status the
    /// server reports.
    ///
    /// # Errors
    ///
    /// [`SpawnError::ForkServerGone`] if the server is gone, [`SpawnError::Fork`] if its `fork`
    /// failed.
    pub fn spawn_worker(&self, handoff: Handoff) -> Result<WorkerProcess, SpawnError> {
        self.request(&handoff).map_err(RequestError::into_inner)
    }

    /// Sends one spawn request for `handoff` and waits for the reply. The caller keeps its
    /// handoff until this returns, so it can retry with another server after
    /// [`RequestError::NotSent`].
    pub(crate) fn request(&self, handoff: &Handoff) -> Result<WorkerProcess, RequestError> {
        let mut state = self.link.lock();
        if state.gone {
            return Err(RequestError::NotSent(SpawnError::ForkServerGone(
                io::Error::from(io::ErrorKind::BrokenPipe),
            )));
        }
        let limit = self.link.memory_limit.to_le_bytes();
        if let Err(err) = procpool_ipc::send_handoff(&state.socket, handoff, &limit) {
            // A request that did not arrive whole is never acted on: the server fails to read
            // it and exits.
            state.gone = true;
            return Err(RequestError::NotSent(SpawnError::ForkServerGone(err)));
        }
        let failed = |err: SpawnError| Err(RequestError::Failed(err));
        loop {
            match state.read_report() {
                Ok((
                    Report {
                        kind: REPORT_SPAWNED,
                        pid,
                        ..
                    },
                    Some(pidfd),
                )) => {
                    return Ok(WorkerProcess::forked(pid, pidfd, Arc::clone(&self.link)));
                }
                Ok((
                    Report {
                        kind: REPORT_FORK_FAILED,
                        value,
                        ..
                    },
                    _,
                )) => {
                    return failed(SpawnError::Fork(io::Error::from_raw_os_error(value)));
                }
                // Another worker's exit, recorded by read_report.
                Ok((
                    Report {
                        kind: REPORT_EXITED,
                        ..
                    },
                    _,
                )) => {}
                Ok((report, _)) => {
                    state.gone = true;
                    return failed(SpawnError::ForkServerGone(io::Error::other(format!(
                        "unexpected reply from the fork server: {report:?}"
                    ))));
                }
                // The server closed its socket with our request (or part of it) unread: it died
                // before it could act on it (AF_UNIX reports unread data at close as ECONNRESET;
                // a server that read the whole request and then died gives EOF instead).
                Err(err) if err.kind() == io::ErrorKind::ConnectionReset => {
                    return Err(RequestError::NotSent(SpawnError::ForkServerGone(err)));
                }
                Err(err) => return failed(SpawnError::ForkServerGone(err)),
            }
        }
    }
}

/// Why a spawn request failed, and whether the server can have acted on it.
#[derive(Debug)]
pub(crate) enum RequestError {
    /// The request never reached the server whole: no worker was forked for it, so the same
    /// handoff may be sent to a fresh server.
    NotSent(SpawnError),
    /// The server got the request; whatever happened, the handoff must not be reused.
    Failed(SpawnError),
}

impl RequestError {
    pub(crate) fn into_inner(self) -> SpawnError {
        match self {
            RequestError::NotSent(err) | RequestError::Failed(err) => err,
        }
    }
}

impl fmt::Debug for ForkServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ForkServer")
            .field("pid", &self.link.server_pid)
            .finish_non_exhaustive()
    }
}

impl ServerLink {
    fn lock(&self) -> MutexGuard<'_, LinkState> {
        // A panic while holding the lock leaves the state consistent (every field is updated in
        // one step), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The exit status of the forked worker `pid`, which the caller knows has exited (its pidfd
    /// polled readable): waits for the server's report. [`WorkerExit::Unknown`] if the server
    /// is gone without having reported it.
    pub(crate) fn wait_exit(&self, pid: u32) -> WorkerExit {
        let mut state = self.lock();
        loop {
            if let Some(exit) = state.exits.remove(&pid) {
                return exit;
            }
            if state.gone {
                return WorkerExit::Unknown;
            }
            // Any error marks the link gone; the next turn reports it.
            let _ = state.read_report();
        }
    }
}

impl Drop for ServerLink {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        // EOF on its socket tells the server to kill its workers and exit.
        let _ = state.socket.shutdown(std::net::Shutdown::Both);
        if !matches!(state.process.wait_timeout(STOP_GRACE), Ok(Some(_))) {
            // Dropping the handle SIGKILLs and reaps it; its workers then die by PDEATHSIG.
            let _ = state.process.kill(libc::SIGKILL);
        }
    }
}

impl LinkState {
    /// Reads one report, recording an `EXITED` one in `exits` and returning every report. Marks
    /// the link gone on EOF or error, and after [`REPLY_TIMEOUT`] of silence (killing the server).
    fn read_report(&mut self) -> io::Result<(Report, Option<OwnedFd>)> {
        match poll_readable(self.socket.as_fd(), Some(REPLY_TIMEOUT)) {
            Ok(true) => {}
            Ok(false) => {
                self.gone = true;
                // A server that cannot answer is of no use; its workers die with it.
                let _ = self.process.kill(libc::SIGKILL);
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the fork server did not answer in time",
                ));
            }
            Err(err) => {
                self.gone = true;
                return Err(err);
            }
        }
        match recv_report(&self.socket) {
            Ok(Some((report, fd))) => {
                if report.kind == REPORT_EXITED {
                    self.exits
                        .insert(report.pid, WorkerExit::from_wait_status(report.value));
                }
                Ok((report, fd))
            }
            Ok(None) => {
                self.gone = true;
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the fork server closed its socket",
                ))
            }
            Err(err) => {
                self.gone = true;
                Err(err)
            }
        }
    }
}

impl Report {
    fn encode(self) -> [u8; REPORT_LEN] {
        let mut bytes = [0u8; REPORT_LEN];
        bytes[0..4].copy_from_slice(&self.kind.to_ne_bytes());
        bytes[4..8].copy_from_slice(&self.pid.to_ne_bytes());
        bytes[8..12].copy_from_slice(&self.value.to_ne_bytes());
        bytes
    }

    fn decode(bytes: &[u8; REPORT_LEN]) -> Report {
        let word = |i: usize| [bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]];
        Report {
            kind: u32::from_ne_bytes(word(0)),
            pid: u32::from_ne_bytes(word(4)),
            value: i32::from_ne_bytes(word(8)),
        }
    }
}

/// Sends one report, with `fd` attached over `SCM_RIGHTS` if given.
fn send_report(socket: &UnixStream, report: Report, fd: Option<RawFd>) -> io::Result<()> {
    let bytes = report.encode();
    let fds: Vec<RawFd> = fd.into_iter().collect();
    let cmsgs = if fds.is_empty() {
        Vec::new()
    } else {
        vec![ControlMessage::ScmRights(&fds)]
    };
    let mut sent = 0;
    while sent < REPORT_LEN {
        let cmsgs = if sent == 0 { &cmsgs[..] } else { &[][..] };
        match sendmsg::<()>(
            socket.as_raw_fd(),
            &[IoSlice::new(&bytes[sent..])],
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(n) => sent += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(errno) => return Err(errno.into()),
        }
    }
    Ok(())
}

/// Receives one report and the fd attached to it, if any; `Ok(None)` on a clean EOF.
fn recv_report(socket: &UnixStream) -> io::Result<Option<(Report, Option<OwnedFd>)>> {
    let mut bytes = [0u8; REPORT_LEN];
    let mut got = 0;
    let mut attached: Option<OwnedFd> = None;
    while got < REPORT_LEN {
        let mut cmsg_buf = nix::cmsg_space!([RawFd; 2]);
        let mut iov = [IoSliceMut::new(&mut bytes[got..])];
        let msg = match recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg_buf),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => msg,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(errno) => return Err(errno.into()),
        };
        let n = msg.bytes;
        // Take ownership of every received fd first, so none leaks whatever happens next.
        let mut received = Vec::new();
        let cmsgs = msg.cmsgs().map_err(io::Error::from)?;
        for cmsg in cmsgs {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                for raw in fds {
                    // SAFETY: SCM_RIGHTS just installed this fd in our table; nobody else owns it.
                    received.push(unsafe { OwnedFd::from_raw_fd(raw) });
                }
            }
        }
        for fd in received {
            if attached.is_none() {
                attached = Some(fd);
            }
        }
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "truncated fork-server report",
                ))
            };
        }
        got += n;
    }
    Ok(Some((Report::decode(&bytes), attached)))
}

/// One worker forked by the server.
struct ServerChild {
    pid: u32,
    pidfd: OwnedFd,
}

/// The fork server's loop, run in the server process; never returns.
///
/// `socket` is the server's end of its link to the parent.
pub(crate) fn run_server(socket: UnixStream) -> ! {
    // SAFETY: getpid has no preconditions.
    let server_pid = unsafe { libc::getpid() };
    let mut socket = Some(socket);
    let mut children: Vec<ServerChild> = Vec::new();
    // Build the task table once here, so every forked worker inherits it instead of building
    // its own.
    let _ = crate::registry::fingerprint();
    if send_report(
        socket.as_ref().expect("socket"),
        Report {
            kind: REPORT_READY,
            pid: server_pid as u32,
            value: 0,
        },
        None,
    )
    .is_err()
    {
        exit_server(&mut children);
    }
    loop {
        let link = socket.as_ref().expect("the server keeps its socket");
        let (socket_ready, exited) = match poll_server(link, &children) {
            Ok(ready) => ready,
            Err(_) => exit_server(&mut children),
        };
        for index in exited.into_iter().rev() {
            let child = children.swap_remove(index);
            let status = reap(child.pid);
            let report = Report {
                kind: REPORT_EXITED,
                pid: child.pid,
                value: status,
            };
            if send_report(link, report, None).is_err() {
                exit_server(&mut children);
            }
        }
        if !socket_ready {
            continue;
        }
        let mut limit = [0u8; 8];
        let (handoff, memory_limit) = match procpool_ipc::recv_handoff(link, &mut limit) {
            Ok((handoff, 8)) => (handoff, u64::from_le_bytes(limit)),
            Ok((handoff, _)) => (handoff, 0),
            // EOF (the parent closed the socket or died) or a broken request: stop.
            Err(_) => exit_server(&mut children),
        };
        // SAFETY: the fork server is single-threaded (it was exec'd and entered this loop before
        // starting any thread), so the child may run arbitrary code after the fork.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => {
                // The child must not hold the parent's link or its siblings' pidfds.
                drop(socket.take());
                children.clear();
                forked_child_main(server_pid, handoff, memory_limit);
            }
            Ok(nix::unistd::ForkResult::Parent { child }) => {
                drop(handoff);
                let pid = child.as_raw() as u32;
                match pidfd_open(pid) {
                    Ok(pidfd) => {
                        let report = Report {
                            kind: REPORT_SPAWNED,
                            pid,
                            value: 0,
                        };
                        let sent = send_report(link, report, Some(pidfd.as_raw_fd()));
                        children.push(ServerChild { pid, pidfd });
                        if sent.is_err() {
                            exit_server(&mut children);
                        }
                    }
                    Err(err) => {
                        // Without a pidfd the parent cannot watch it: take it back.
                        let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                        reap(pid);
                        let errno = err.raw_os_error().unwrap_or(libc::EIO);
                        let report = Report {
                            kind: REPORT_FORK_FAILED,
                            pid: 0,
                            value: errno,
                        };
                        if send_report(link, report, None).is_err() {
                            exit_server(&mut children);
                        }
                    }
                }
            }
            Err(errno) => {
                drop(handoff);
                let report = Report {
                    kind: REPORT_FORK_FAILED,
                    pid: 0,
                    value: errno as i32,
                };
                if send_report(link, report, None).is_err() {
                    exit_server(&mut children);
                }
            }
        }
    }
}

/// Waits until the socket is readable (or hung up) or some children have exited.
/// Returns whether the socket is ready and the indices of exited children, ascending.
fn poll_server(socket: &UnixStream, children: &[ServerChild]) -> io::Result<(bool, Vec<usize>)> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = Vec::with_capacity(children.len() + 1);
    fds.push(PollFd::new(socket.as_fd(), PollFlags::POLLIN));
    fds.extend(
        children
            .iter()
            .map(|child| PollFd::new(child.pidfd.as_fd(), PollFlags::POLLIN)),
    );
    loop {
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => {}
            Err(errno) => return Err(errno.into()),
        }
    }
    let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
    let socket_ready = ready(&fds[0]);
    let exited = fds[1..]
        .iter()
        .enumerate()
        .filter(|(_, fd)| ready(fd))
        .map(|(index, _)| index)
        .collect();
    Ok((socket_ready, exited))
}

/// Reaps the child `pid` (which has exited or is about to) and returns its raw wait status.
fn reap(pid: u32) -> i32 {
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child with a valid pointer to a local.
        let res = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
        if res >= 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return status;
        }
    }
}

/// Kills and reaps every child, then exits the server.
fn exit_server(children: &mut Vec<ServerChild>) -> ! {
    for child in children.iter() {
        let _ = crate::process::pidfd_send_signal(child.pidfd.as_fd(), libc::SIGKILL);
    }
    for child in children.drain(..) {
        reap(child.pid);
    }
    std::process::exit(0)
}

/// The body of a freshly forked worker; never returns into the server loop.
fn forked_child_main(server_pid: libc::pid_t, handoff: Handoff, memory_limit: u64) -> ! {
    // SAFETY: prctl(PR_SET_PDEATHSIG) with a valid signal number changes only this process.
    let armed = unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    } == 0;
    // SAFETY: getppid has no preconditions.
    if !armed || unsafe { libc::getppid() } != server_pid {
        // The server died before the death signal was armed: nobody would ever stop us.
        exit_now(crate::entry::EXIT_PARENT_GONE);
    }
    if memory_limit != 0 && crate::process::set_memory_limit(memory_limit).is_err() {
        exit_now(crate::entry::WORKER_EXIT_BAD_ENV);
    }
    let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        crate::entry::serve(handoff)
    }))
    .unwrap_or(crate::entry::EXIT_RUNTIME_ERROR);
    exit_now(code)
}

/// Flushes stdout and `_exit`s: a forked worker must not run the server's exit handlers.
fn exit_now(code: i32) -> ! {
    let _ = io::stdout().flush();
    // SAFETY: _exit has no preconditions; it ends the process without running atexit handlers.
    unsafe { libc::_exit(code) }
}
