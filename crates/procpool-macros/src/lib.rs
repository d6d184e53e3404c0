//! The `#[task]` attribute that registers a function as a procpool task.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
