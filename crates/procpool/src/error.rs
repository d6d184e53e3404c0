//! Errors: [`TaskError`] for one task's outcome, [`Error`] for pool-level operations.

use std::fmt;
use std::time::Duration;

/// Why a task did not produce a value.
///
/// Every submitted task ends in exactly one outcome: its value or one of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The task panicked inside the worker; the worker caught the panic and goes on.
    #[error("task panicked{}: {message}", location.as_ref().map(|l| format!(" at {l}")).unwrap_or_default())]
    Panicked {
        /// The panic payload, if it was a string; otherwise a placeholder.
        message: String,
        /// `file:line:column` of the panic, when the worker could tell.
        location: Option<String>,
    },
    /// The task ran and returned `Err`; the message is that error's `Display`.
    #[error("task failed: {0}")]
    Failed(String),
    /// The worker process running the task died (killed, crashed or exited) before finishing it.
    ///
    /// The pool replaced the worker. Ask for `.retries(n)` to have such tasks run again.
    #[error("worker process {pid} died while running the task ({exit})")]
    WorkerDied {
        /// Process id of the worker that died.
        pid: u32,
        /// How it ended, as far as the pool could tell.
        exit: WorkerExit,
    },
    /// The worker running the task stopped answering the pool's liveness pings (stopped with
    /// SIGSTOP, frozen, or not a real procpool worker) for longer than the pool's
    /// `liveness_timeout`; the pool killed it (and replaced it, unless it had attached itself).
    ///
    /// Like [`WorkerDied`](TaskError::WorkerDied), `.retries(n)` runs such tasks again.
    #[error(
        "worker process {pid} stopped answering liveness pings for {limit:?} while running the task; it was killed"
    )]
    Unresponsive {
        /// Process id of the worker that was killed.
        pid: u32,
        /// The liveness timeout it exceeded.
        limit: Duration,
    },
    /// The task ran longer than its timeout; its worker was killed and replaced.
    #[error("task timed out after {limit:?}; its worker was killed and replaced")]
    TimedOut {
        /// The timeout that was exceeded.
        limit: Duration,
    },
    /// The task was cancelled before it started (by `cancel()` or `shutdown_now()`).
    #[error("task was cancelled before it started")]
    Cancelled,
    /// The pool was terminated (`terminate()`) before the task finished.
    #[error("pool was terminated before the task finished")]
    Terminated,
    /// The pool was already shut down when the task was submitted.
    #[error("pool is shut down; no new tasks are accepted")]
    PoolClosed,
    /// The worker program does not contain this task.
    ///
    /// The worker runs a different binary (see `PoolBuilder::program`) that was built
    /// without this `#[procpool::task]`, or from a different version of its code.
    #[error("the worker program has no task `{name}` (is the worker built from the same code?)")]
    UnknownTask {
        /// The task's name as registered in the parent.
        name: String,
    },
    /// The worker could not read the task's arguments (a type mismatch between parent and worker builds).
    #[error("the worker rejected the task's arguments: {0}")]
    BadArguments(String),
    /// The task's output could not be serialized in the worker.
    #[error("the task's output could not be sent back: {0}")]
    BadOutput(String),
    /// The pool has no worker left and could not start one.
    #[error("no worker is available and none could be started: {0}")]
    NoWorkers(String),
    /// The task's encoded arguments or result exceed a configured size limit.
    #[error("{what} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// What was too large: "arguments" or "result".
        what: &'static str,
        /// Encoded size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// The worker sent something the parent could not understand; the worker was disconnected.
    #[error("protocol error talking to the worker: {0}")]
    Protocol(String),
    /// The outcome was already taken from this handle (it was awaited to completion before).
    #[error("the outcome of this task was already taken")]
    AlreadyTaken,
}

impl TaskError {
    /// Whether running the task again could succeed (the worker died, was unresponsive, or
    /// the task timed out).
    pub fn is_worker_loss(&self) -> bool {
        matches!(
            self,
            TaskError::WorkerDied { .. }
                | TaskError::TimedOut { .. }
                | TaskError::Unresponsive { .. }
        )
    }
}

/// How a worker process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkerExit {
    /// Killed by this signal number (e.g. 9 for `SIGKILL`, 11 for `SIGSEGV`).
    Signal(i32),
    /// Exited on its own with this status code.
    Code(i32),
    /// The worker's channel closed but its exit status could not be collected (yet).
    Unknown,
}

impl fmt::Display for WorkerExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            WorkerExit::Signal(sig) => match signal_name(sig) {
                Some(name) => write!(f, "killed by signal {sig} ({name})"),
                None => write!(f, "killed by signal {sig}"),
            },
            WorkerExit::Code(code) => write!(f, "exited with code {code}"),
            WorkerExit::Unknown => f.write_str("exit status unknown"),
        }
    }
}

/// The conventional name of a Linux signal number, for messages.
fn signal_name(sig: i32) -> Option<&'static str> {
    Some(match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        31 => "SIGSYS",
        _ => return None,
    })
}

/// What kind of pool-level failure an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A builder setting is invalid (e.g. zero workers).
    InvalidConfig,
    /// A worker process could not be started (program missing, not executable, fork failed).
    Spawn,
    /// A worker started but did not complete the handshake (wrong program, version or task table).
    Handshake,
    /// The pool's initializer failed in a worker.
    InitializerFailed,
    /// The pool is shut down.
    PoolClosed,
    /// An operating-system call failed (sockets, shared memory).
    Io,
    /// A value could not be archived for [`Pool::share`](crate::Pool::share).
    Share,
}

/// A pool-level failure: building a pool, starting workers, listening for attachers.
///
/// Match on [`Error::kind`]; the message says what to do about it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// The same error with `extra` appended to its message (its source is kept).
    pub(crate) fn with_note(mut self, extra: impl fmt::Display) -> Self {
        self.message = format!("{} {extra}", self.message);
        self
    }

    pub(crate) fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error {
            kind,
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_cause() {
        let died = TaskError::WorkerDied {
            pid: 42,
            exit: WorkerExit::Signal(9),
        };
        assert_eq!(
            died.to_string(),
            "worker process 42 died while running the task (killed by signal 9 (SIGKILL))"
        );
        assert!(died.is_worker_loss());
        let panicked = TaskError::Panicked {
            message: "boom".into(),
            location: Some("src/main.rs:3:5".into()),
        };
        assert_eq!(
            panicked.to_string(),
            "task panicked at src/main.rs:3:5: boom"
        );
        let no_location = TaskError::Panicked {
            message: "boom".into(),
            location: None,
        };
        assert_eq!(no_location.to_string(), "task panicked: boom");
        assert!(!TaskError::Cancelled.is_worker_loss());
        assert_eq!(WorkerExit::Code(3).to_string(), "exited with code 3");
        assert_eq!(WorkerExit::Signal(64).to_string(), "killed by signal 64");
    }

    #[test]
    fn error_keeps_kind_and_source() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let err = Error::with_source(ErrorKind::Spawn, "cannot start worker `/nope`", io);
        assert_eq!(err.kind(), ErrorKind::Spawn);
        assert_eq!(err.to_string(), "cannot start worker `/nope`");
        let source = std::error::Error::source(&err).map(|s| s.to_string());
        assert_eq!(source.as_deref(), Some("no such file"));
        assert_eq!(
            Error::new(ErrorKind::InvalidConfig, "x").kind(),
            ErrorKind::InvalidConfig
        );
    }
}
