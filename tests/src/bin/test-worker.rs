//! The worker program of the integration tests: a pool started by a test runs this binary,
//! which knows the tasks of `procpool_tests` (libtest owns the test binary's `main`, so the
//! test binary cannot serve as its own worker). `test-worker attach <socket>` attaches it to a
//! pool that listens there.

fn main() {
    procpool_tests::worker_main("test-worker");
}
