//! Cross-crate, multi-process integration tests: one binary, one module per area.
//!
//! Every test starts real worker processes (the `test-worker` binary of this package, which
//! shares the task table of `procpool_tests`) and runs under a watchdog that ends the whole
//! test process if it hangs; workers die with it (`PR_SET_PDEATHSIG`).

mod balance;
mod chaos;
mod faults;
mod handles;
mod hostile;
mod lifecycle;
mod limits;
mod liveness;
mod map;
mod parent_death;
mod payload;
mod reexports;
mod shared;
mod util;
