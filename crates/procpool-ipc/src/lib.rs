//! Shared-memory transport between a procpool parent and its worker processes.
//!
//! This crate owns bytes and frames: memfd-backed regions, single-producer
//! single-consumer rings of variable-length frames, the futex doorbell used to
//! park and wake, and handing file descriptors to another process.
//! It must not know about tasks, chunks, scheduling or how payloads are serialized.
#![deny(missing_docs)]
