//! The worker program of the integration tests: a pool started by a test runs this binary,
//! which knows the tasks of `procpool_tests` (libtest owns the test binary's `main`, so the
//! test binary cannot serve as its own worker). `test-worker attach <socket>` attaches it to a
//! pool that listens there.

fn main() {
    procpool_tests::keep_tasks();
    procpool::init();
    let args: Vec<String> = std::env::args().collect();
    if let [_, command, socket] = args.as_slice()
        && command == "attach"
    {
        match procpool::attach(socket) {
            Ok(()) => std::process::exit(0),
            Err(err) => {
                eprintln!("test-worker: {err}");
                std::process::exit(1);
            }
        }
    }
    eprintln!("test-worker: started by procpool test pools, or as `test-worker attach <socket>`");
    std::process::exit(2);
}
