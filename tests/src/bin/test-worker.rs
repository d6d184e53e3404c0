//! The worker program of the integration tests: a pool started by a test runs this binary,
//! which knows the tasks of `procpool_tests` (libtest owns the test binary's `main`, so the
//! test binary cannot serve as its own worker).

fn main() {
    procpool_tests::keep_tasks();
    procpool::init();
    eprintln!("test-worker: this program is started by procpool test pools, not by hand");
    std::process::exit(2);
}
