//! A worker program with every task of `procpool_tests` plus one of its own: its task table is
//! a superset of the test binary's, which a pool accepts (it can run every task the pool may
//! send). `superset-worker attach <socket>` attaches it to a pool that listens there.

/// A task only this program has.
#[procpool::task]
fn only_in_superset(x: u64) -> u64 {
    x + 1
}

fn main() {
    procpool_tests::keep_tasks();
    std::hint::black_box(only_in_superset::call as *const ());
    procpool::init();
    let args: Vec<String> = std::env::args().collect();
    if let [_, command, socket] = args.as_slice()
        && command == "attach"
    {
        match procpool::attach(socket) {
            Ok(()) => std::process::exit(0),
            Err(err) => {
                eprintln!("superset-worker: {err}");
                std::process::exit(1);
            }
        }
    }
    eprintln!(
        "superset-worker: started by procpool test pools, or as `superset-worker attach <socket>`"
    );
    std::process::exit(2);
}
