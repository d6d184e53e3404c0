//! A test backend of the link seam: each "worker" is a thread running the real worker
//! runtime over a real `procpool_ipc` channel inside this process.
//!
//! It exercises the pool core, the protocol and the runtime without processes. "Killing" a
//! worker closes its channel: the runtime stops after its current item, like a process that
//! died there, and the pool sees the link end.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use procpool_ipc::{ChannelConfig, Closer, Endpoint};
use procpool_worker::RunOptions;

use crate::backend::{IpcReceiver, IpcSender};
use crate::error::{Error, ErrorKind, WorkerExit};
use crate::link::{Launcher, Link, Running, WorkerControl, WorkerProcessHandle};

/// Fake pids handed to thread workers, so tests can tell workers apart.
static NEXT_PID: AtomicU32 = AtomicU32::new(1_000_000);

/// The closer of every thread worker, by fake pid, for [`kill`].
static CLOSERS: Mutex<Vec<(u32, Closer)>> = Mutex::new(Vec::new());

/// "Kills" the thread worker with fake pid `pid`: closes its channel.
pub(crate) fn kill(pid: u32) {
    let closers = CLOSERS.lock().unwrap_or_else(PoisonError::into_inner);
    for (worker_pid, closer) in closers.iter() {
        if *worker_pid == pid {
            closer.close();
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct ThreadLauncher;

impl Launcher for ThreadLauncher {
    fn launch(&self) -> Result<Link, Error> {
        launch_thread(false)
    }

    fn describe(&self) -> String {
        "thread workers".into()
    }
}

/// Thread workers controlled through their channel's mailbox like process workers: the pool
/// sees the running item, asks for yields and takes queued chunks back through the claim
/// word (so the scheduler prefetches, `SchedulerConfig::reclaim_queued`).
#[derive(Debug, Default)]
pub(crate) struct MailboxThreadLauncher;

impl Launcher for MailboxThreadLauncher {
    fn launch(&self) -> Result<Link, Error> {
        launch_thread(true)
    }

    fn describe(&self) -> String {
        "thread workers with mailboxes".into()
    }

    fn can_reclaim(&self) -> bool {
        true
    }
}

/// Starts one thread worker; `mailbox`: control it through the mailbox.
fn launch_thread(mailbox: bool) -> Result<Link, Error> {
    {
        let (endpoint, handoff) = Endpoint::create(
            &ChannelConfig::new()
                .submission_capacity(64 * 1024)
                .completion_capacity(64 * 1024),
        )
        .map_err(|err| Error::with_source(ErrorKind::Io, "channel", err))?;
        let closer = endpoint.closer();
        let thread = std::thread::Builder::new()
            .name("thread-worker".into())
            .spawn(move || {
                let child = Endpoint::open(handoff).expect("open the channel");
                procpool_worker::run_worker(child, RunOptions::default()).is_ok()
            })
            .map_err(|err| Error::with_source(ErrorKind::Spawn, "thread", err))?;
        let words = endpoint.mailbox();
        let (sender, receiver) = endpoint.split();
        // Relaxed: only uniqueness matters.
        let pid = NEXT_PID.fetch_add(1, Ordering::Relaxed);
        CLOSERS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((pid, closer.clone()));
        let thread = Arc::new(Mutex::new(Some(thread)));
        let control: Arc<dyn WorkerControl> = if mailbox {
            crate::backend::thread_control(pid, closer, words)
        } else {
            Arc::new(ThreadControl {
                pid,
                closer,
                mailbox: words,
            })
        };
        Ok(Link {
            sender: Box::new(IpcSender::new(sender)),
            receiver: Box::new(IpcReceiver::new(receiver)),
            control,
            process: Box::new(ThreadProcess { thread }),
        })
    }
}

struct ThreadControl {
    pid: u32,
    closer: Closer,
    /// The channel's mailbox, used only for the outbox word (the worker thread runs the real
    /// runtime, which answers it).
    mailbox: procpool_ipc::Mailbox,
}

impl WorkerControl for ThreadControl {
    fn pid(&self) -> u32 {
        self.pid
    }

    fn running(&self) -> Running {
        Running::Unknown
    }

    fn request_yield(&self, _chunk_id: u64, _half: bool) {}

    fn try_reclaim(&self, _chunk_id: u64) -> bool {
        // The worker thread's mailbox is its own: nothing to take back from here.
        false
    }

    fn reclaim_pending(&self) -> bool {
        false
    }

    fn ping(&self) -> Option<u64> {
        None
    }

    fn answered(&self, _n: u64) -> bool {
        true
    }

    fn set_max_output(&self, _bytes: u64) {}

    fn cpu(&self) -> Option<usize> {
        None
    }

    fn set_waiter_cpu(&self, _cpu: usize) {}

    fn outbox_waits(&self) {
        crate::backend::outbox_waits_through(&self.mailbox);
    }

    fn close(&self) {
        self.closer.close();
    }

    fn kill(&self) {
        self.closer.close();
    }

    fn terminate(&self) {
        self.closer.close();
    }
}

struct ThreadProcess {
    thread: Arc<Mutex<Option<JoinHandle<bool>>>>,
}

impl WorkerProcessHandle for ThreadProcess {
    fn wait_exit(&mut self, timeout: Duration) -> Option<WorkerExit> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut slot = self.thread.lock().unwrap_or_else(PoisonError::into_inner);
            match slot.as_ref() {
                None => return Some(WorkerExit::Unknown),
                Some(thread) if thread.is_finished() => {
                    let clean = slot.take().expect("checked").join().unwrap_or(false);
                    return Some(WorkerExit::Code(if clean { 0 } else { 1 }));
                }
                Some(_) => {}
            }
            drop(slot);
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
