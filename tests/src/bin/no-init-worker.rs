//! A program that forgets `procpool::init()`: started as a pool's worker, its `main` tries to
//! build a pool of its own. The exit code tells the test what `build` said: 3 for the refusal
//! expected in a worker process, 4 for another error, 5 if a pool was (wrongly) built.

fn main() {
    procpool_tests::keep_tasks();
    let code = match procpool::Pool::builder().workers(1).build() {
        Err(err) if err.kind() == procpool::ErrorKind::InvalidConfig => 3,
        Err(_) => 4,
        Ok(_) => 5,
    };
    std::process::exit(code);
}
