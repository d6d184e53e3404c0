//! The shared-memory backend of the link seam: a `procpool_ipc` channel per worker and a
//! `procpool_worker` process handle (spawned, or forked by a fork server).

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use procpool_ipc::{
    ChannelConfig, Closer, CopyBuffer, Endpoint, Mailbox, Receiver, RecvError, SendError, Sender,
};
use procpool_worker::{AlignedVec, WorkerProcess, WorkerSpawner, protocol};

use crate::error::{Error, ErrorKind, WorkerExit};
use crate::link::{
    FrameReceiver, FrameSender, Launcher, Link, LinkError, Running, WorkerControl,
    WorkerProcessHandle,
};
use crate::pool::StartMethod;

/// The launcher for a pool of local worker processes.
pub(crate) fn launcher(
    method: StartMethod,
    program: Option<PathBuf>,
    args: Vec<std::ffi::OsString>,
    envs: Vec<(std::ffi::OsString, std::ffi::OsString)>,
    memory_limit: Option<u64>,
) -> Result<Box<dyn Launcher>, Error> {
    let worker_method = match method {
        StartMethod::Spawn => procpool_worker::StartMethod::Spawn,
        StartMethod::ForkServer => procpool_worker::StartMethod::ForkServer,
    };
    let description = program.as_ref().map_or_else(
        || "this program".to_owned(),
        |path| format!("`{}`", path.display()),
    );
    let mut spawner = WorkerSpawner::new(worker_method);
    if let Some(program) = program {
        spawner = spawner.program(program);
    }
    for arg in args {
        spawner = spawner.arg(arg);
    }
    for (key, value) in envs {
        spawner = spawner.env(key, value);
    }
    if let Some(bytes) = memory_limit {
        spawner = spawner.memory_limit(bytes);
    }
    spawner.start().map_err(|err| {
        Error::with_source(
            ErrorKind::Spawn,
            format!("cannot start the fork server for {description}"),
            err,
        )
    })?;
    Ok(Box::new(IpcLauncher {
        spawner,
        channel: ChannelConfig::new(),
        description,
    }))
}

struct IpcLauncher {
    spawner: WorkerSpawner,
    channel: ChannelConfig,
    description: String,
}

impl Launcher for IpcLauncher {
    fn launch(&self) -> Result<Link, Error> {
        let (endpoint, handoff) = Endpoint::create(&self.channel).map_err(|err| {
            Error::with_source(
                ErrorKind::Io,
                "cannot create the shared-memory channel for a worker",
                err,
            )
        })?;
        let closer = endpoint.closer();
        let mailbox = endpoint.mailbox();
        let process = self.spawner.spawn(handoff).map_err(|err| {
            Error::with_source(
                ErrorKind::Spawn,
                format!("cannot start a worker process from {}", self.description),
                err,
            )
        })?;
        let pid = process.pid();
        let pidfd = process.as_fd().try_clone_to_owned().map_err(|err| {
            Error::with_source(ErrorKind::Io, "cannot duplicate a worker's pidfd", err)
        })?;
        let (sender, receiver) = endpoint.split();
        let process = Arc::new(Mutex::new(process));
        Ok(Link {
            sender: Box::new(IpcSender::new(sender)),
            receiver: Box::new(IpcReceiver::new(receiver)),
            control: Arc::new(MailboxControl {
                pid,
                closer,
                mailbox,
                signals: ChildSignals(Arc::clone(&process)),
                waiter_cpu: std::sync::atomic::AtomicU64::new(0),
            }),
            process: Box::new(IpcProcess { process, pidfd }),
        })
    }

    fn describe(&self) -> String {
        self.description.clone()
    }

    fn can_reclaim(&self) -> bool {
        true
    }
}

/// The frame sender over a `procpool_ipc` channel (shared with the test thread backend).
pub(crate) struct IpcSender {
    pub(crate) sender: Sender,
    /// A frame above the channel's large threshold (one for a pad) was offered since the last
    /// `release_idle_buffers`: the pads are in use and are kept.
    large_since_check: bool,
}

impl IpcSender {
    /// A frame sender over `sender`.
    pub(crate) fn new(sender: Sender) -> IpcSender {
        IpcSender {
            sender,
            large_since_check: false,
        }
    }

    /// Notes a frame of `len` bytes about to be sent (large ones keep the pads).
    fn note(&mut self, len: usize) {
        self.large_since_check |= len > self.sender.large_threshold();
    }
}

fn send_error(err: SendError) -> LinkError {
    match err {
        SendError::Timeout => LinkError::Timeout,
        SendError::TooLarge { len, max } => LinkError::TooLarge {
            len: usize::try_from(len).unwrap_or(usize::MAX),
            max: usize::try_from(max).unwrap_or(usize::MAX),
        },
        SendError::Corrupt(why) => LinkError::Corrupt(why.to_string()),
        _ => LinkError::Disconnected,
    }
}

impl FrameSender for IpcSender {
    fn try_send(&mut self, frame: &[u8]) -> Result<bool, LinkError> {
        self.note(frame.len());
        match self.sender.send_timeout(frame, Duration::ZERO) {
            Ok(()) => Ok(true),
            Err(SendError::Timeout) => Ok(false),
            Err(err) => Err(send_error(err)),
        }
    }

    fn max_frame(&self) -> usize {
        // The channel's default cap (4 GiB) is far above anything a chunk should be.
        u32::MAX as usize
    }

    fn send_timeout(&mut self, frame: &[u8], timeout: Duration) -> Result<(), LinkError> {
        self.note(frame.len());
        self.sender.send_timeout(frame, timeout).map_err(send_error)
    }

    fn try_send_in_place(
        &mut self,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]) -> Option<usize>,
    ) -> Result<bool, LinkError> {
        if !self.sender.reserve_is_warm(len) {
            return Ok(false);
        }
        self.note(len);
        let mut grant = match self.sender.reserve(len, Some(Duration::ZERO)) {
            Ok(grant) => grant,
            Err(SendError::Timeout) => return Ok(false),
            Err(err) => return Err(send_error(err)),
        };
        // Dropped uncommitted when `fill` gives up: nothing is staged.
        let Some(used) = fill(&mut grant) else {
            return Ok(false);
        };
        match grant.commit(used) {
            Ok(()) => {}
            // No socket room for a new pad's descriptor: nothing was staged.
            Err(SendError::Timeout) => return Ok(false),
            Err(err) => return Err(send_error(err)),
        }
        self.sender.publish();
        Ok(true)
    }

    fn try_send_shared(
        &mut self,
        object: &procpool_worker::SharedObject,
    ) -> Result<bool, LinkError> {
        // Only objects made in this process have a memfd; others never reach a pool.
        let Some(file) = object.file() else {
            return Ok(true);
        };
        match self.sender.send_sealed(file, Some(Duration::ZERO)) {
            Ok(()) => Ok(true),
            Err(SendError::Timeout) => Ok(false),
            Err(err) => Err(send_error(err)),
        }
    }

    fn release_idle_buffers(&mut self) -> crate::link::Released {
        // A pad holding a frame the worker has not dropped yet is kept (`take_idle_pads` takes
        // only pads whose word says FREE).
        if std::mem::take(&mut self.large_since_check) {
            return None;
        }
        let idle = self.sender.take_idle_pads();
        (!idle.is_empty()).then(|| Box::new(idle) as Box<dyn Send>)
    }
}

/// The frame receiver over a `procpool_ipc` channel (shared with the test thread backend).
pub(crate) struct IpcReceiver {
    pub(crate) receiver: Receiver,
    /// Where a frame from the worker's reusable pad is copied before anything reads it.
    pub(crate) scratch: CopyBuffer,
    /// A frame was copied into `scratch` since the last `release_idle_buffers`.
    copied_since_check: bool,
}

/// Largest copy buffer a receiver keeps between frames (a bigger one is freed after use).
const SCRATCH_KEEP: usize = procpool_ipc::DEFAULT_PAD_LIMIT;

impl IpcReceiver {
    /// A receiver over `receiver`.
    pub(crate) fn new(receiver: Receiver) -> IpcReceiver {
        IpcReceiver {
            receiver,
            scratch: CopyBuffer::new(SCRATCH_KEEP),
            copied_since_check: false,
        }
    }
}

/// Hands `frame` to `on_frame`. A frame in the ring or in one of the worker's pads is memory
/// the worker can still write, so it is copied out first (one copy into a warm buffer) and
/// released before it is parsed: nothing validated can change afterwards. Two exceptions read
/// in place: sealed frames (nobody can write them), and ring frames of at most
/// [`crate::core::HELP_COPY_LIMIT`] bytes, which every caller of a receiver copies itself before
/// parsing (the core, to release the receiver early; the handshake, always). Returns whether
/// the frame went through `scratch`.
fn deliver(
    frame: procpool_ipc::Frame<'_>,
    scratch: &mut CopyBuffer,
    on_frame: &mut dyn FnMut(&[u8]),
) -> bool {
    let copied_by_caller = !frame.is_out_of_band() && frame.len() <= crate::core::HELP_COPY_LIMIT;
    if frame.is_sealed() || copied_by_caller {
        on_frame(&frame);
        return false;
    }
    match scratch.copy_in(&frame) {
        Ok(copy) => {
            // The worker may refill its pad from here on.
            drop(frame);
            on_frame(copy);
            scratch.trim();
            true
        }
        Err(err) => {
            // No room for the buffer's mapping: the allocator's heap is the last resort.
            tracing::debug!("copy buffer: {err}; copying a pad frame to the heap");
            let mut copy = AlignedVec::with_capacity(frame.len());
            copy.extend_from_slice(&frame);
            drop(frame);
            on_frame(&copy);
            false
        }
    }
}

/// The outcome of a non-blocking receive, delivered (`Ok(true)`), none ready (`Ok(false)`), or
/// the link's end.
fn take(
    got: Result<Option<procpool_ipc::Frame<'_>>, RecvError>,
    scratch: &mut CopyBuffer,
    copied: &mut bool,
    on_frame: &mut dyn FnMut(&[u8]),
) -> Result<bool, LinkError> {
    match got {
        Ok(Some(frame)) => {
            *copied |= deliver(frame, scratch, on_frame);
            Ok(true)
        }
        Ok(None) => Ok(false),
        Err(err) => Err(recv_error(err)),
    }
}

impl FrameReceiver for IpcReceiver {
    fn recv(
        &mut self,
        timeout: Option<Duration>,
        on_frame: &mut dyn FnMut(&[u8]),
    ) -> Result<(), LinkError> {
        let frame = match timeout {
            None => self.receiver.recv(),
            Some(timeout) => self.receiver.recv_timeout(timeout),
        };
        match frame {
            Ok(frame) => {
                self.copied_since_check |= deliver(frame, &mut self.scratch, on_frame);
                Ok(())
            }
            Err(err) => Err(recv_error(err)),
        }
    }

    fn try_recv(&mut self, on_frame: &mut dyn FnMut(&[u8])) -> Result<bool, LinkError> {
        let got = self.receiver.try_recv();
        take(
            got,
            &mut self.scratch,
            &mut self.copied_since_check,
            on_frame,
        )
    }

    fn try_recv_helping(&mut self, on_frame: &mut dyn FnMut(&[u8])) -> Result<bool, LinkError> {
        // No `poll` of the socket: after an idle time the first look at each ring would
        // otherwise make one (the probe is due every 50 ms), in the lone call's own path.
        // The reader thread watches the worker's end (its bell, or its ring wait's probe).
        let got = self.receiver.try_recv_unprobed();
        take(
            got,
            &mut self.scratch,
            &mut self.copied_since_check,
            on_frame,
        )
    }

    fn recv_until(
        &mut self,
        deadline: Option<Instant>,
        stop: &dyn Fn() -> bool,
        on_frame: &mut dyn FnMut(&[u8]),
    ) -> Result<bool, LinkError> {
        match self.receiver.recv_until(deadline, stop) {
            Ok(Some(frame)) => {
                self.copied_since_check |= deliver(frame, &mut self.scratch, on_frame);
                Ok(true)
            }
            Ok(None) | Err(RecvError::Timeout) => Ok(false),
            Err(err) => Err(recv_error(err)),
        }
    }

    fn interrupter(&self) -> Box<dyn Fn() + Send + Sync> {
        let interrupter = self.receiver.interrupter();
        Box::new(move || interrupter.interrupt())
    }

    fn hangup_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        Some(self.receiver.hangup_fd())
    }

    fn release_idle_buffers(&mut self) {
        // No copy can be in use: one lives only inside `deliver`, which borrows `scratch`.
        if !std::mem::take(&mut self.copied_since_check) {
            self.scratch.release();
        }
    }
}

fn recv_error(err: RecvError) -> LinkError {
    match err {
        RecvError::Timeout => LinkError::Timeout,
        RecvError::Corrupt(why) => LinkError::Corrupt(why.to_string()),
        _ => LinkError::Disconnected,
    }
}

/// The control of a worker reached through a `procpool_ipc` channel: the shared mailbox and
/// the closer are the same for every such worker; how it is signalled is `S` (a child through
/// its pidfd, an attached process by pid).
struct MailboxControl<S> {
    pid: u32,
    closer: Closer,
    /// Words shared with the worker runtime: 0 = running chunk + 1, 1 = offset of the running
    /// item, 2 = yield request (chunk + 1), 3 = liveness ping, 4 = its answer, 5 = output size
    /// limit, 6 = the worker's CPU + 1, 7 = a waiting parent thread's CPU + 1, 8 = claim (the
    /// last chunk started, or one taken back), 9 = frames wait in the outbox.
    mailbox: Mailbox,
    signals: S,
    /// The last value stored to word 7, so an unchanged one is not even loaded (the worker
    /// writes that cache line for every item).
    waiter_cpu: std::sync::atomic::AtomicU64,
}

/// How a [`MailboxControl`] signals its worker.
trait Signals: Send + Sync {
    /// This side closed the link (called before the link is closed).
    fn closing(&self) {}

    /// Sends SIGKILL.
    fn kill(&self);

    /// Sends SIGTERM.
    fn terminate(&self);
}

impl<S: Signals> WorkerControl for MailboxControl<S> {
    fn pid(&self) -> u32 {
        self.pid
    }

    fn running(&self) -> Running {
        running_from(&self.mailbox)
    }

    fn request_yield(&self, chunk_id: u64, half: bool) {
        self.mailbox
            .store(MAILBOX_YIELD, yield_request(chunk_id, half));
    }

    fn try_reclaim(&self, chunk_id: u64) -> bool {
        protocol::reclaim(
            || self.mailbox.load(MAILBOX_CLAIM),
            |current, new| {
                (self.mailbox)
                    .compare_exchange(MAILBOX_CLAIM, current, new)
                    .is_ok()
            },
            chunk_id,
        )
    }

    fn reclaim_pending(&self) -> bool {
        protocol::reclaim_pending(self.mailbox.load(MAILBOX_CLAIM))
    }

    fn ping(&self) -> Option<u64> {
        Some(ping_through(&self.mailbox))
    }

    fn answered(&self, n: u64) -> bool {
        self.mailbox.load(MAILBOX_PONG) == n
    }

    fn set_max_output(&self, bytes: u64) {
        self.mailbox.store(MAILBOX_MAX_OUTPUT, bytes);
    }

    fn cpu(&self) -> Option<usize> {
        // A hostile peer can only make the parent yield its core more or less often.
        let word = self.mailbox.load(MAILBOX_WORKER_CPU);
        usize::try_from(word).ok()?.checked_sub(1)
    }

    fn set_waiter_cpu(&self, cpu: usize) {
        let word = cpu as u64 + 1;
        // Relaxed: a cache of our own last store; racing helpers at worst store twice.
        if self
            .waiter_cpu
            .swap(word, std::sync::atomic::Ordering::Relaxed)
            != word
        {
            self.mailbox.store(MAILBOX_WAITER_CPU, word);
        }
    }

    fn clear_waiter_cpu(&self) {
        // Relaxed: as in `set_waiter_cpu`.
        if self
            .waiter_cpu
            .swap(0, std::sync::atomic::Ordering::Relaxed)
            != 0
        {
            self.mailbox.store(MAILBOX_WAITER_CPU, 0);
        }
    }

    fn outbox_waits(&self) {
        outbox_waits_through(&self.mailbox);
    }

    fn close(&self) {
        self.signals.closing();
        self.closer.close();
    }

    fn kill(&self) {
        self.signals.kill();
        self.closer.close();
    }

    fn terminate(&self) {
        self.signals.terminate();
    }
}

/// The control of a thread worker (`thread_backend`) over its channel's real mailbox: what a
/// process worker's control does, except that stopping it only closes the link.
#[cfg(test)]
pub(crate) fn thread_control(pid: u32, closer: Closer, mailbox: Mailbox) -> Arc<dyn WorkerControl> {
    /// A thread cannot be signalled: the link is closed instead (`kill` closes it anyway).
    struct ThreadSignals(Closer);
    impl Signals for ThreadSignals {
        fn kill(&self) {}

        fn terminate(&self) {
            self.0.close();
        }
    }
    Arc::new(MailboxControl {
        pid,
        closer: closer.clone(),
        mailbox,
        signals: ThreadSignals(closer),
        waiter_cpu: std::sync::atomic::AtomicU64::new(0),
    })
}

/// Signals for a worker this pool started: through the process handle's pidfd.
struct ChildSignals(Arc<Mutex<WorkerProcess>>);

fn lock(process: &Mutex<WorkerProcess>) -> MutexGuard<'_, WorkerProcess> {
    process.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Signals for ChildSignals {
    fn kill(&self) {
        // The handle signals through its pidfd, so a reaped and reused pid is never hit.
        let _ = lock(&self.0).kill(libc_signal::SIGKILL);
    }

    fn terminate(&self) {
        let _ = lock(&self.0).kill(libc_signal::SIGTERM);
    }
}

/// Mailbox word: `chunk id + 1` of the running chunk, 0 when idle (written by the worker).
const MAILBOX_RUNNING_CHUNK: usize = 0;
/// Mailbox word: offset within the running chunk of the running item (written by the worker).
const MAILBOX_RUNNING_ITEM: usize = 1;
/// Mailbox word: yield request, `chunk id + 1` (written by the parent).
const MAILBOX_YIELD: usize = 2;
/// Mailbox word: liveness ping, a counter (written by the parent, then woken).
const MAILBOX_PING: usize = 3;
/// Mailbox word: the last ping the worker's heartbeat thread answered (written by the worker).
const MAILBOX_PONG: usize = 4;
/// Mailbox word: the largest encoded output of one item, 0 for none (written by the parent
/// before `Setup`).
const MAILBOX_MAX_OUTPUT: usize = 5;
/// The CPU the worker started its last chunk on, plus one.
const MAILBOX_WORKER_CPU: usize = 6;
/// The CPU of the parent thread that last spun for the worker's outcomes, plus one.
const MAILBOX_WAITER_CPU: usize = 7;
/// Mailbox word 8: the claim word (`protocol::reclaim`, `protocol::claim`).
const MAILBOX_CLAIM: usize = 8;
/// Mailbox word 9: 1 while frames wait in the parent's outbox (set by the parent, swapped to 0
/// by the worker when it answers with `Drained`).
const MAILBOX_OUTBOX: usize = 9;

/// Sets the outbox word of `mailbox` (see [`WorkerControl::outbox_waits`]).
pub(crate) fn outbox_waits_through(mailbox: &Mailbox) {
    mailbox.store(MAILBOX_OUTBOX, 1);
    // SeqCst fence: the Dekker pair with the worker's wait, which publishes its ring's head
    // behind a SeqCst fence and then loads this word; the caller's flush after this reads the
    // head (procpool-worker's runtime docs, "Waiting for room").
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
}

/// Sends the next liveness ping through a worker's mailbox and returns its number.
fn ping_through(mailbox: &Mailbox) -> u64 {
    // Only this side writes the word (a peer that writes it only confuses its own answer).
    let n = mailbox.load(MAILBOX_PING).wrapping_add(1);
    mailbox.store(MAILBOX_PING, n);
    mailbox.wake(MAILBOX_PING);
    n
}

/// The value of a yield request for `chunk_id`; `half`: give back only the later half of the
/// items not started yet ([`protocol::YIELD_HALF`]).
fn yield_request(chunk_id: u64, half: bool) -> u64 {
    let flag = if half { protocol::YIELD_HALF } else { 0 };
    chunk_id.wrapping_add(1) | flag
}

/// Reads words 0 and 1 of a worker's mailbox.
fn running_from(mailbox: &Mailbox) -> Running {
    match mailbox.load(MAILBOX_RUNNING_CHUNK).checked_sub(1) {
        None => Running::Idle,
        Some(chunk) => Running::Item {
            chunk,
            offset: mailbox.load(MAILBOX_RUNNING_ITEM),
        },
    }
}

/// Signal numbers (Linux), so the facade needs no libc dependency for two constants.
mod libc_signal {
    pub(super) const SIGKILL: i32 = 9;
    pub(super) const SIGTERM: i32 = 15;
}

struct IpcProcess {
    process: Arc<Mutex<WorkerProcess>>,
    /// A duplicate of the process's pidfd, polled without holding the handle's lock.
    pidfd: OwnedFd,
}

impl WorkerProcessHandle for IpcProcess {
    fn wait_exit(&mut self, timeout: Duration) -> Option<WorkerExit> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let millis = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            let mut fds = [nix::poll::PollFd::new(
                self.pidfd.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let ready = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(millis));
            if let Ok(Some(exit)) = lock(&self.process).try_wait() {
                return Some(match exit {
                    procpool_worker::WorkerExit::Code(code) => WorkerExit::Code(code),
                    procpool_worker::WorkerExit::Signal(signal) => WorkerExit::Signal(signal),
                    #[allow(unreachable_patterns)]
                    _ => WorkerExit::Unknown,
                });
            }
            if left.is_zero() || ready.is_err() && Instant::now() >= deadline {
                return None;
            }
        }
    }
}

/// The link to a worker that attached itself through `Pool::listen`: not our child, so its
/// exit status cannot be collected, and signals go by pid.
pub(crate) fn attached_link(endpoint: Endpoint, pid: u32) -> Link {
    let closer = endpoint.closer();
    let mailbox = endpoint.mailbox();
    let (sender, receiver) = endpoint.split();
    Link {
        sender: Box::new(IpcSender::new(sender)),
        receiver: Box::new(IpcReceiver::new(receiver)),
        control: Arc::new(MailboxControl {
            pid,
            closer,
            mailbox,
            signals: PidSignals {
                pid,
                closed: std::sync::atomic::AtomicBool::new(false),
            },
            waiter_cpu: std::sync::atomic::AtomicU64::new(0),
        }),
        process: Box::new(AttachedProcess),
    }
}

/// Signals for an attached worker (not our child): by pid, and never once this side closed
/// the link (the process may be gone and its pid reused).
struct PidSignals {
    pid: u32,
    /// This side closed the link; from then on the pid is not signalled.
    closed: std::sync::atomic::AtomicBool,
}

impl PidSignals {
    fn signal(&self, signal: nix::sys::signal::Signal) {
        if let Ok(pid) = i32::try_from(self.pid) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
        }
    }
}

impl Signals for PidSignals {
    fn closing(&self) {
        // Relaxed: only this flag is read by `kill`; no other data is published with it.
        self.closed
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn kill(&self) {
        // Relaxed: see `closing`.
        if !self.closed.swap(true, std::sync::atomic::Ordering::Relaxed) {
            self.signal(nix::sys::signal::Signal::SIGKILL);
        }
    }

    fn terminate(&self) {
        // Relaxed: see `closing`.
        if !self.closed.load(std::sync::atomic::Ordering::Relaxed) {
            self.signal(nix::sys::signal::Signal::SIGTERM);
        }
    }
}

struct AttachedProcess;

impl WorkerProcessHandle for AttachedProcess {
    fn wait_exit(&mut self, _timeout: Duration) -> Option<WorkerExit> {
        Some(WorkerExit::Unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where `deliver` hands each kind of frame: small ring frames in place (their readers copy
    /// them), larger ring frames and pad frames only as a copy in the scratch buffer, which
    /// the peer cannot write.
    #[test]
    fn deliver_parses_no_unsealed_frame_above_the_copy_limit_in_place() {
        let (parent, handoff) = Endpoint::create(
            &ChannelConfig::new()
                .submission_capacity(1 << 20)
                .completion_capacity(1 << 20)
                .large_threshold(512 * 1024),
        )
        .unwrap();
        let mut child = Endpoint::open(handoff).unwrap();
        let (_sender, receiver) = parent.split();
        let mut receiver = IpcReceiver::new(receiver);
        let limit = crate::core::HELP_COPY_LIMIT;
        // (length, whether the frame may be parsed where it lies)
        let cases = [
            (1024, true),
            (limit, true),
            (limit + 1, false),
            (300 * 1024, false),
        ];
        for (len, in_place) in cases {
            let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            child.sender().send(&bytes).unwrap();
            let mut seen = None;
            receiver
                .recv(Some(Duration::from_secs(10)), &mut |frame| {
                    seen = Some((frame.as_ptr() as usize, frame.to_vec()));
                })
                .unwrap();
            let (at, got) = seen.expect("one frame");
            assert_eq!(got, bytes, "{len} bytes arrive intact");
            let scratch_at = receiver.scratch.copy_in(&[0]).unwrap().as_ptr() as usize;
            assert_eq!(
                at != scratch_at,
                in_place,
                "a {len}-byte ring frame is parsed {}",
                if in_place {
                    "in place"
                } else {
                    "from the copy"
                }
            );
        }
        // Above the large threshold: a pad frame, always copied.
        let bytes = vec![7u8; 600 * 1024];
        child.sender().send(&bytes).unwrap();
        let mut at = 0;
        receiver
            .recv(Some(Duration::from_secs(10)), &mut |frame| {
                assert_eq!(frame, &bytes[..]);
                at = frame.as_ptr() as usize;
            })
            .unwrap();
        assert_eq!(
            at,
            receiver.scratch.copy_in(&[0]).unwrap().as_ptr() as usize
        );
    }

    /// `len` bytes that differ with `seed`.
    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i % 251) as u8 ^ seed.wrapping_mul(37))
            .collect()
    }

    /// A parent endpoint whose frames above 1 KiB go through pads, and its worker's end.
    fn pad_pair() -> (Endpoint, Endpoint) {
        let (parent, handoff) = Endpoint::create(
            &ChannelConfig::new()
                .submission_capacity(64 * 1024)
                .completion_capacity(64 * 1024)
                .large_threshold(1024),
        )
        .unwrap();
        (parent, Endpoint::open(handoff).unwrap())
    }

    /// The parent's sender gives its pads back only when no large frame went out since the
    /// previous offer, and never a pad whose frame the worker still holds: that frame's bytes
    /// stay intact however many offers pass. The next large frame gets a fresh pad.
    #[test]
    fn idle_release_keeps_pads_in_use_and_gives_back_idle_ones() {
        let (parent, mut child) = pad_pair();
        let (sender, _receiver) = parent.split();
        let mut sender = IpcSender::new(sender);
        let one = pattern(100_000, 1);
        assert!(sender.try_send(&one).unwrap());
        let frame = child.receiver().recv().unwrap();
        assert!(frame.is_out_of_band() && !frame.is_sealed(), "in a pad");
        sender.release_idle_buffers();
        assert!(
            sender.sender.holds_pads(),
            "a large frame went out since the last offer"
        );
        for _ in 0..3 {
            sender.release_idle_buffers();
            assert!(
                sender.sender.holds_pads(),
                "idle, but the worker reads its pad"
            );
        }
        assert!(*frame == one[..], "the frame in the kept pad is intact");
        drop(frame);
        sender.release_idle_buffers();
        assert!(!sender.sender.holds_pads(), "idle and free: given back");
        // A frame written in place counts as use, like one sent.
        let two = pattern(150_000, 2);
        let mut fill = |buf: &mut [u8]| {
            buf.copy_from_slice(&two);
            Some(two.len())
        };
        assert!(sender.try_send_in_place(two.len(), &mut fill).unwrap());
        assert!(*child.receiver().recv().unwrap() == two[..], "a fresh pad");
        sender.release_idle_buffers();
        assert!(sender.sender.holds_pads(), "used since the last offer");
        sender.release_idle_buffers();
        assert!(!sender.sender.holds_pads(), "idle and free: given back");
    }

    /// The parent's receiver unmaps its copy buffer after an offer during which no pad frame
    /// was copied into it; the next pad frame is copied into a fresh one, intact.
    #[test]
    fn idle_release_gives_the_copy_buffer_back() {
        let (parent, mut child) = pad_pair();
        let (_sender, receiver) = parent.split();
        let mut receiver = IpcReceiver::new(receiver);
        let mut recv_exact = |receiver: &mut IpcReceiver, bytes: &[u8]| {
            child.sender().send(bytes).unwrap();
            let mut got = false;
            receiver
                .recv(Some(Duration::from_secs(10)), &mut |frame| {
                    assert!(frame == bytes);
                    got = true;
                })
                .unwrap();
            assert!(got);
        };
        recv_exact(&mut receiver, &pattern(200_000, 3));
        assert!(receiver.scratch.capacity() >= 200_000);
        receiver.release_idle_buffers();
        assert!(receiver.scratch.capacity() > 0, "used since the last offer");
        // Ring frames do not count as use (they never touch the copy buffer).
        recv_exact(&mut receiver, &pattern(100, 4));
        receiver.release_idle_buffers();
        assert_eq!(receiver.scratch.capacity(), 0, "idle: unmapped");
        recv_exact(&mut receiver, &pattern(300_000, 5));
        assert!(receiver.scratch.capacity() >= 300_000, "mapped afresh");
    }
}
