//! A worker program that never reaches procpool's entry (it never calls `procpool::init()`):
//! it prints `@@sleeper <pid>` and sleeps for 30 s, so a test can kill its pool's owner while
//! the only thing that can end it is what the spawner set up before the exec.

fn main() {
    println!("@@sleeper {}", std::process::id());
    std::thread::sleep(std::time::Duration::from_secs(30));
}
