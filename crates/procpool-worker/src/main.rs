//! The `procpool-worker` binary: a worker started by a pool, or a tool started by a person.
fn main() {}
