//! The process backend of the link seam (shared-memory channels and worker processes).
//!
//! FIXME(facade): waiting for procpool-worker to export its process handle
//! (`WorkerSpawner`, `WorkerProcess`, `StartMethod`, `WorkerExit`); until then building a
//! process pool fails with a clear error.

use std::path::PathBuf;

use crate::error::{Error, ErrorKind};
use crate::link::Launcher;
use crate::pool::StartMethod;

/// The launcher for a pool of local worker processes.
pub(crate) fn launcher(
    _method: StartMethod,
    _program: Option<PathBuf>,
    _args: Vec<std::ffi::OsString>,
) -> Result<Box<dyn Launcher>, Error> {
    Err(Error::new(
        ErrorKind::Spawn,
        "worker processes are not available in this build yet",
    ))
}
