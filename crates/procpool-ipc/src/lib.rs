//! Shared-memory transport between a procpool parent and its worker processes.
//!
//! This crate owns bytes and frames. It must not know about tasks, chunks, scheduling
//! or how payloads are serialized.
//!
//! A *channel* connects exactly two processes. Its [`Endpoint::create`] side (the parent)
//! makes one memfd *region*, sealed so it can never change size, holding two rings: a
//! submission ring it produces into and a completion ring it consumes. The other side
//! gets a [`Handoff`] (the region's fd and one end of a Unix socket pair), by inheriting
//! it or through [`send_handoff`], and calls [`Endpoint::open`], which validates the
//! region header (magic, layout version, sizes) before trusting anything in it.
//!
//! Each ring is single-producer single-consumer and carries variable-length frames whose
//! payloads start 16-byte aligned. A [`Sender`] copies a frame in ([`Sender::send`]) or
//! lends out ring space to write in place ([`Sender::reserve`]); frames are staged and
//! then made visible in batches by one index store ([`Sender::publish`]). A [`Receiver`]
//! lends out each [`Frame`] in place and releases it on drop. Frames too large for the
//! ring travel out of band: in one of the sender's two reusable *pads* (a memfd sealed
//! against resizing, passed over the socket pair once and mapped by both sides, so later
//! frames write and read warm pages), or, when both pads still hold frames the peer reads or
//! the payload is above [`ChannelConfig::pad_limit`], in a fresh memfd sealed read-only.
//! [`Frame::is_sealed`] tells the two apart: only a sealed payload cannot change under the
//! reader.
//!
//! Blocked calls spin for a configurable while ([`WaitStrategy`]) and then park on a futex
//! in the shared region; the other side rings it only when a sleeper announced itself.
//! Closing is explicit (drop, [`Sender::close`], [`Closer`]) or observed: a process that
//! dies closes its socket end, which the survivor polls between park slices.
//!
//! Beside the rings, the region holds a [`Mailbox`]: a few atomic words either side may
//! load or store at any time, for signals that must not queue behind frames.
//!
//! The peer is never trusted: every index and length read from shared memory is checked,
//! and a violation is a [`Corruption`] error that poisons the channel, never UB, a panic
//! or a hang. The protocol is written up in `src/ring/README.md`.
#![deny(missing_docs)]
// Under loom only the ring is built, without the channel that uses most of it.
#![cfg_attr(procpool_loom, allow(dead_code, unused_imports))]

mod doorbell;
mod ring;
mod sync;
mod wire;

#[cfg(not(procpool_loom))]
mod channel;
#[cfg(not(procpool_loom))]
mod copy;
#[cfg(not(procpool_loom))]
mod error;
#[cfg(not(procpool_loom))]
mod fdpass;
#[cfg(not(procpool_loom))]
mod mailbox;
#[cfg(not(procpool_loom))]
mod segment;

#[cfg(not(procpool_loom))]
pub use crate::{
    channel::{
        ChannelConfig, Closer, DEFAULT_PAD_LIMIT, Endpoint, Frame, Grant, Handoff, IdlePads,
        Receiver, Sender,
    },
    copy::{PARALLEL_COPY_MIN, copy_bytes},
    error::{CreateError, HandoffError, OpenError, RecvError, SendError},
    fdpass::{recv_handoff, send_handoff},
    mailbox::{MAILBOX_WORDS, Mailbox},
    segment::{CopyBuffer, HUGE_COPY_MIN, SealedFile, SealedMap, SealedWriter, copy_to_new_vec},
};
pub use crate::{
    doorbell::WaitStrategy,
    ring::{Corruption, Interrupter},
};
