//! Scheduling decisions for procpool, as pure logic.
//!
//! This crate decides how items are grouped into chunks, which worker gets which
//! chunk, when to steal and when to split a tail, and in what order results leave.
//! It performs no I/O, starts no processes and contains no `unsafe`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
