//! A worker program with every task of `procpool_tests` plus one of its own: its task table is
//! a superset of the test binary's, which a pool accepts (it can run every task the pool may
//! send). `superset-worker attach <socket>` attaches it to a pool that listens there.

/// A task only this program has.
#[procpool::task]
fn only_in_superset(x: u64) -> u64 {
    x + 1
}

fn main() {
    std::hint::black_box(only_in_superset::call as *const ());
    procpool_tests::worker_main("superset-worker");
}
