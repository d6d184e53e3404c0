//! procpool: a pool of reusable worker processes with thread-pool speed.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
