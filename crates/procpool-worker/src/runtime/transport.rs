//! The runtime's transport: `procpool-ipc` channel ends, and local stand-ins for tests and benches.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Inbox, Outbox, WorkerError};

impl Inbox for procpool_ipc::Receiver {
    type Frame<'a> = procpool_ipc::Frame<'a>;

    fn recv(&mut self) -> Result<Self::Frame<'_>, WorkerError> {
        procpool_ipc::Receiver::recv(self).map_err(|error| match error {
            procpool_ipc::RecvError::Disconnected => WorkerError::Disconnected,
            other => WorkerError::Transport(Box::new(other)),
        })
    }

    fn recv_until(
        &mut self,
        deadline: Option<std::time::Instant>,
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<Self::Frame<'_>>, WorkerError> {
        // The ring's wait publishes head (Release store, then a SeqCst fence) before it first
        // calls `stop`, as `Inbox::recv_until` promises.
        match procpool_ipc::Receiver::recv_until(self, deadline, stop) {
            Ok(frame) => Ok(frame),
            Err(procpool_ipc::RecvError::Timeout) => Ok(None),
            Err(procpool_ipc::RecvError::Disconnected) => Err(WorkerError::Disconnected),
            Err(other) => Err(WorkerError::Transport(Box::new(other))),
        }
    }

    fn keep<'a>(frame: &mut Self::Frame<'a>) -> Option<procpool_ipc::SealedMap>
    where
        Self: 'a,
    {
        frame.take_out_of_band()
    }
}

fn send_error(error: procpool_ipc::SendError) -> WorkerError {
    match error {
        procpool_ipc::SendError::Disconnected => WorkerError::Disconnected,
        other => WorkerError::Transport(Box::new(other)),
    }
}

impl Outbox for procpool_ipc::Sender {
    fn send(&mut self, frame: &[u8]) -> Result<(), WorkerError> {
        procpool_ipc::Sender::send(self, frame).map_err(send_error)
    }

    fn send_in_place(
        &mut self,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]) -> Option<usize>,
    ) -> Result<bool, WorkerError> {
        if !self.reserve_is_warm(len) {
            return Ok(false);
        }
        let mut grant = self.reserve(len, None).map_err(send_error)?;
        let Some(used) = fill(&mut grant) else {
            // Dropped uncommitted: nothing was staged.
            return Ok(false);
        };
        grant.commit(used).map_err(send_error)?;
        self.publish();
        Ok(true)
    }

    fn holds_buffers(&self) -> bool {
        self.holds_pads()
    }

    fn release_buffers(&mut self) {
        self.release_pads();
    }
}

/// Mailbox words in this process only: used when no shared mailbox exists (tests, benches).
#[derive(Debug, Default)]
pub(crate) struct LocalMailbox {
    words: [AtomicU64; procpool_ipc::MAILBOX_WORDS],
}

impl LocalMailbox {
    /// All words zero.
    pub(crate) const fn new() -> Self {
        Self {
            words: [const { AtomicU64::new(0) }; procpool_ipc::MAILBOX_WORDS],
        }
    }
}

impl LocalMailbox {
    /// Word `i` itself.
    #[inline]
    pub(crate) fn atomic(&self, i: usize) -> &AtomicU64 {
        &self.words[i]
    }

    /// Reads word `i`.
    #[inline]
    pub(crate) fn load(&self, i: usize) -> u64 {
        // Acquire pairs with the Release in `store`, as the shared mailbox does.
        self.words[i].load(Ordering::Acquire)
    }

    /// Writes word `i`.
    #[inline]
    pub(crate) fn store(&self, i: usize, value: u64) {
        // Release pairs with the Acquire in `load`.
        self.words[i].store(value, Ordering::Release);
    }

    /// Replaces word `i` and returns what it held.
    pub(crate) fn swap(&self, i: usize, value: u64) -> u64 {
        // AcqRel, as the shared mailbox's swap.
        self.words[i].swap(value, Ordering::AcqRel)
    }

    /// Replaces word `i` if it holds `current`.
    pub(crate) fn compare_exchange(&self, i: usize, current: u64, new: u64) -> bool {
        // AcqRel: a successful exchange both observes the writer's request and publishes ours.
        self.words[i]
            .compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}
