//! Error types, one enum per operation whose failure modes differ.

use std::io;

use crate::ring::Corruption;

/// Why [`Endpoint::create`](crate::Endpoint::create) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CreateError {
    /// The configuration cannot describe a valid region.
    #[error("invalid channel configuration: {0}")]
    InvalidConfig(&'static str),
    /// Creating, sealing or mapping the memfd, or creating the socket pair, failed.
    #[error("creating the channel failed")]
    Io(#[from] io::Error),
}

/// Why [`Endpoint::open`](crate::Endpoint::open) refused a hand-off.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The region does not start with procpool's magic number.
    #[error("region has bad magic {found:#018x}")]
    BadMagic {
        /// The first eight bytes of the region.
        found: u64,
    },
    /// The region was laid out by a different version of procpool-ipc.
    #[error("region layout version {found}, this build speaks {expected}")]
    VersionMismatch {
        /// The version this build speaks.
        expected: u32,
        /// The version in the region header.
        found: u32,
    },
    /// The size recorded in the header differs from the size of the memfd.
    #[error("region header says {expected} bytes, the memfd has {found}")]
    SizeMismatch {
        /// Size in the header.
        expected: u64,
        /// Actual size of the memfd.
        found: u64,
    },
    /// The memfd is not sealed against growing and shrinking (or is no memfd at all).
    #[error("region is not sealed against resizing (seals {seals:#x})")]
    NotSealed {
        /// The seals found.
        seals: i32,
    },
    /// Offsets, capacities or limits in the header are inconsistent.
    #[error("region header is inconsistent: {0}")]
    BadLayout(&'static str),
    /// The socket fd is not a Unix seqpacket socket.
    #[error("hand-off socket is not a Unix seqpacket socket")]
    BadSocket,
    /// A syscall failed.
    #[error("opening the channel failed")]
    Io(#[from] io::Error),
}

/// Why a send failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The channel is closed: by either side, by a [`Closer`](crate::Closer), or the
    /// peer process is gone.
    #[error("channel disconnected")]
    Disconnected,
    /// No space became free before the timeout.
    #[error("timed out waiting for space")]
    Timeout,
    /// The frame is longer than the channel's `max_frame` (or a grant's length).
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Requested length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The peer broke the ring protocol; the channel is poisoned.
    #[error("peer corrupted the channel: {0}")]
    Corrupt(Corruption),
    /// Creating or sending an out-of-band buffer failed.
    #[error("out-of-band transfer failed")]
    Io(#[from] io::Error),
}

/// Why a receive failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// The ring is drained and the peer closed it or died.
    #[error("channel disconnected")]
    Disconnected,
    /// Nothing arrived before the timeout.
    #[error("timed out waiting for a frame")]
    Timeout,
    /// The peer broke the ring protocol; the channel is poisoned and every later call
    /// returns the same error.
    #[error("peer corrupted the channel: {0}")]
    Corrupt(Corruption),
    /// Receiving or mapping an out-of-band buffer failed.
    #[error("out-of-band transfer failed")]
    Io(#[from] io::Error),
}

/// Why [`recv_handoff`](crate::recv_handoff) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandoffError {
    /// The message did not carry exactly two file descriptors.
    #[error("hand-off carried {received} file descriptors, expected 2")]
    MissingFds {
        /// How many arrived.
        received: usize,
    },
    /// The payload does not fit the caller's buffer.
    #[error("hand-off payload of {len} bytes does not fit a {capacity}-byte buffer")]
    PayloadTooLarge {
        /// Payload length announced by the sender.
        len: usize,
        /// The caller's buffer size.
        capacity: usize,
    },
    /// The stream ended or a syscall failed.
    #[error("receiving the hand-off failed")]
    Io(#[from] io::Error),
}
