//! Joining a running pool over a Unix socket: the pool listens, a worker started elsewhere attaches.
//!
//! The socket only carries the hand-over: the pool creates a fresh channel per accepted peer and
//! sends its [`Handoff`](procpool_ipc::Handoff) (region and socket fds) over `SCM_RIGHTS`; after that the two sides talk
//! over the channel exactly like a spawned worker and its parent, starting with worker-core's
//! handshake (`protocol.rs`).
//!
//! Deadlines: [`Listener::accept_worker`] bounds the wait for a connection and the hand-over.
//! Stopping: [`ListenerStop::stop`], from any thread, ends a wait in `accept_worker` (or
//! [`Listener::pause`]) at once, and every later one, with [`AcceptError::Stopped`]: the
//! listener polls its socket together with the reading end of a socket pair whose writing end
//! the stop shuts down, so an owner closing down never waits for a timeout to pass.
//! The handshake that follows is driven by the pool over the channel, so the pool enforces its
//! deadline (a peer that does not answer `Setup` with `Hello`/`Ready` in time is dropped); this
//! module cannot see it.
//!
//! Access: the socket file is created with mode 0600 (no window in which it is more open), and a
//! peer whose `SO_PEERCRED` uid is neither ours nor root's is refused.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, UnixAddr, bind, listen, socket, sockopt,
};
use procpool_ipc::{ChannelConfig, Endpoint};

/// Binding the pool's listening socket failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// Something other than a socket exists at the path; it is left alone.
    #[error("{path:?} exists and is not a socket")]
    NotASocket {
        /// The path that was to be bound.
        path: PathBuf,
    },
    /// Another process is listening on the socket at the path.
    #[error("another process is listening on {path:?}")]
    InUse {
        /// The path that was to be bound.
        path: PathBuf,
    },
    /// A system call failed.
    #[error("cannot listen on {path:?}: {source}")]
    Io {
        /// The path that was to be bound.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
}

/// Accepting an attaching worker failed. The listener stays usable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcceptError {
    /// No peer connected within the timeout.
    #[error("no worker attached within {0:?}")]
    TimedOut(Duration),
    /// [`ListenerStop::stop`] was called (before or during the wait).
    #[error("the listener was stopped")]
    Stopped,
    /// The peer runs as another user.
    #[error("refused a peer (pid {pid}) running as uid {uid}")]
    ForeignUser {
        /// The peer's pid.
        pid: u32,
        /// The peer's uid.
        uid: u32,
    },
    /// The channel for the peer could not be created.
    #[error("cannot create a channel for an attaching worker: {0}")]
    Channel(#[source] procpool_ipc::CreateError),
    /// Accepting or sending the hand-over failed.
    #[error("accepting a worker failed: {0}")]
    Io(#[source] io::Error),
}

/// Attaching to a pool failed (worker side).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttachError {
    /// Connecting to the socket or receiving the hand-over failed.
    #[error("cannot attach to {path:?}: {source}")]
    Connect {
        /// The pool's socket.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// The worker ran but ended with this non-zero exit code (see `WORKER_EXIT_*`).
    #[error("the worker ended with exit code {0}")]
    Worker(i32),
}

/// A pool's listening socket for workers that attach with [`attach`].
///
/// Dropping it removes the socket file (if it is still the one it created).
#[derive(Debug)]
pub struct Listener {
    socket: UnixListener,
    path: PathBuf,
    /// Device and inode of the socket file this listener created.
    file_id: (u64, u64),
    /// The reading end of the stop pair: it polls readable (end of file) once a
    /// [`ListenerStop`] shut the other end down, and stays so. Nothing ever reads it.
    stopped: UnixStream,
    /// The writing end of the stop pair, shared with every [`ListenerStop`].
    stop: Arc<UnixStream>,
}

/// Stops a [`Listener`] from another thread; see [`Listener::stopper`].
#[derive(Debug, Clone)]
pub struct ListenerStop {
    /// The writing end of the listener's stop pair.
    stop: Arc<UnixStream>,
}

impl ListenerStop {
    /// Ends the listener's current and every later [`accept_worker`](Listener::accept_worker)
    /// and [`pause`](Listener::pause) at once with [`AcceptError::Stopped`]. Idempotent; the
    /// listener keeps its socket file until it is dropped.
    pub fn stop(&self) {
        // Shutting down the writing end makes the reading end poll readable (end of file) for
        // good; a second call changes nothing. It fails only for a socket already shut down.
        let _ = self.stop.shutdown(std::net::Shutdown::Write);
    }
}

impl Listener {
    /// Listens on a new socket file at `path`, mode 0600. A stale socket file (nobody listening)
    /// is replaced; a live one or any other kind of file is an error.
    ///
    /// # Errors
    ///
    /// See [`BindError`].
    pub fn bind(path: impl AsRef<Path>) -> Result<Listener, BindError> {
        let path = path.as_ref().to_owned();
        let io_err = |source: io::Error| BindError::Io {
            path: path.clone(),
            source,
        };
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(BindError::NotASocket { path });
            }
            Ok(_) => match UnixStream::connect(&path) {
                Ok(_) => return Err(BindError::InUse { path }),
                Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => {
                    std::fs::remove_file(&path).map_err(io_err)?;
                }
                Err(err) => return Err(io_err(err)),
            },
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(io_err(err)),
        }
        let fd: OwnedFd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|errno| io_err(errno.into()))?;
        // On Linux an AF_UNIX socket file takes its mode from the socket's inode (less the
        // umask), so this makes the file 0600 from the moment it appears.
        nix::sys::stat::fchmod(fd.as_fd(), nix::sys::stat::Mode::from_bits_truncate(0o600))
            .map_err(|errno| io_err(errno.into()))?;
        let addr = UnixAddr::new(&path).map_err(|errno| io_err(errno.into()))?;
        bind(fd.as_raw_fd(), &addr).map_err(|errno| io_err(errno.into()))?;
        let socket = UnixListener::from(fd);
        let meta = std::fs::symlink_metadata(&path).map_err(io_err)?;
        let file_id = (meta.dev(), meta.ino());
        let (stop, stopped) = UnixStream::pair().map_err(io_err)?;
        // Remove the file if anything below fails.
        let listener = Listener {
            socket,
            path: path.clone(),
            file_id,
            stopped,
            stop: Arc::new(stop),
        };
        if meta.permissions().mode() & 0o077 != 0 {
            // A kernel that ignored the fchmod: tighten it before anyone can have connected.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(io_err)?;
        }
        listen(
            &listener.socket,
            Backlog::new(128).map_err(|errno| io_err(errno.into()))?,
        )
        .map_err(|errno| io_err(errno.into()))?;
        listener.socket.set_nonblocking(true).map_err(io_err)?;
        Ok(listener)
    }

    /// The socket file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A handle that stops this listener's waits from another thread (see [`ListenerStop`]).
    pub fn stopper(&self) -> ListenerStop {
        ListenerStop {
            stop: Arc::clone(&self.stop),
        }
    }

    /// Sleeps for `timeout`, or until the listener is stopped.
    ///
    /// # Errors
    ///
    /// [`AcceptError::Stopped`] once [`ListenerStop::stop`] was called; [`AcceptError::Io`] if
    /// polling failed.
    pub fn pause(&self, timeout: Duration) -> Result<(), AcceptError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.wait(None, left)? {
                return Err(AcceptError::Stopped);
            }
            if left.is_zero() {
                return Ok(());
            }
        }
    }

    /// Polls the stop pair, and `socket` if given, for up to `timeout` (EINTR is an early
    /// return); whether the listener is stopped.
    fn wait(&self, socket: Option<BorrowedFd<'_>>, timeout: Duration) -> Result<bool, AcceptError> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        // Round up so a sub-millisecond remainder does not turn into a busy loop.
        let millis = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128);
        let poll_timeout = PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX);
        let mut fds = [
            PollFd::new(self.stopped.as_fd(), PollFlags::POLLIN),
            PollFd::new(socket.unwrap_or(self.stopped.as_fd()), PollFlags::POLLIN),
        ];
        let n_fds = if socket.is_some() { 2 } else { 1 };
        match poll(&mut fds[..n_fds], poll_timeout) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => return Ok(false),
            Err(errno) => return Err(AcceptError::Io(errno.into())),
        }
        Ok(fds[0].revents().is_some_and(|revents| !revents.is_empty()))
    }

    /// Waits up to `timeout` for a worker to connect, creates a channel with `config` for it, and
    /// hands the worker its end. Returns the parent's end and the peer's pid (`SO_PEERCRED`).
    ///
    /// The handshake over the returned channel is the caller's to drive, with its own deadline.
    /// A [`ListenerStop::stop`] ends the wait at once (see [`AcceptError::Stopped`]).
    ///
    /// # Errors
    ///
    /// See [`AcceptError`]; the listener stays usable after any of them (but a stopped one
    /// only answers `Stopped`).
    pub fn accept_worker(
        &self,
        config: &ChannelConfig,
        timeout: Duration,
    ) -> Result<(Endpoint, u32), AcceptError> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            // Looked at first, so a stopped listener accepts nobody, even a peer that waits.
            if self.wait(None, Duration::ZERO)? {
                return Err(AcceptError::Stopped);
            }
            match self.socket.accept() {
                Ok((stream, _)) => break stream,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(AcceptError::Io(err)),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(AcceptError::TimedOut(timeout));
            }
            // Level-triggered on both: a peer in the backlog or a stop is seen however late
            // this thread gets here; the loop re-checks either way.
            self.wait(Some(self.socket.as_fd()), left)?;
        };
        stream.set_nonblocking(false).map_err(AcceptError::Io)?;
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        stream
            .set_write_timeout(Some(left))
            .map_err(AcceptError::Io)?;
        let creds = nix::sys::socket::getsockopt(&stream, sockopt::PeerCredentials)
            .map_err(|errno| AcceptError::Io(errno.into()))?;
        let pid = creds.pid() as u32;
        let uid = creds.uid();
        // SAFETY: geteuid has no preconditions.
        let our_uid = unsafe { libc::geteuid() };
        if uid != our_uid && uid != 0 {
            return Err(AcceptError::ForeignUser { pid, uid });
        }
        let (endpoint, handoff) = Endpoint::create(config).map_err(AcceptError::Channel)?;
        procpool_ipc::send_handoff(&stream, &handoff, &[]).map_err(AcceptError::Io)?;
        Ok((endpoint, pid))
    }
}

impl AsFd for Listener {
    /// The listening socket: it polls readable when a peer is waiting to be accepted.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // Remove the file only if it is still ours: a later listener may have replaced it.
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.file_id {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Attaches this process as a worker to the pool listening at `path` and runs the worker loop
/// until the pool shuts it down or goes away. SIGINT is ignored from here on, as in every worker.
///
/// # Errors
///
/// See [`AttachError`].
pub fn attach(path: impl AsRef<Path>) -> Result<(), AttachError> {
    let path = path.as_ref();
    let connect_err = |source: io::Error| AttachError::Connect {
        path: path.to_owned(),
        source,
    };
    let stream = UnixStream::connect(path).map_err(connect_err)?;
    let (handoff, _) = procpool_ipc::recv_handoff(&stream, &mut [])
        .map_err(|err| connect_err(io::Error::other(err)))?;
    drop(stream);
    crate::entry::ignore_sigint();
    match crate::entry::serve(handoff) {
        0 => Ok(()),
        code => Err(AttachError::Worker(code)),
    }
}
