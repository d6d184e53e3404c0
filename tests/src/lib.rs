//! Tasks for the multi-process integration tests in `it/`, shared by the test binary (the
//! parent) and `test-worker` (the worker program): both link this library, so both have the
//! same task table and pass the handshake's fingerprint check.

use std::time::Duration;

pub mod shared;

/// `x * x`.
#[procpool::task]
pub fn square(x: u64) -> u64 {
    x * x
}

/// The pid of the worker running the call.
#[procpool::task]
pub fn worker_pid(tag: u64) -> u32 {
    let _ = tag;
    std::process::id()
}

/// Sleeps `millis` ms and returns the worker's pid.
#[procpool::task]
pub fn sleep_then_pid(millis: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(millis));
    std::process::id()
}

/// Sleeps `millis` ms and returns `millis`.
#[procpool::task]
pub fn nap(millis: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(millis));
    millis
}

/// Fails for odd numbers, returns the number for even ones.
#[procpool::task]
pub fn even_only(x: u64) -> Result<u64, String> {
    if x % 2 == 0 {
        Ok(x)
    } else {
        Err(format!("{x} is odd"))
    }
}

/// Creates the file `marker` (so a test knows the task has started), then sleeps `millis` ms;
/// returns the worker's pid.
#[procpool::task]
pub fn mark_then_sleep(marker: &str, millis: u64) -> u32 {
    std::fs::write(marker, b"started").expect("write the marker file");
    std::thread::sleep(Duration::from_millis(millis));
    std::process::id()
}

/// Creates the file `started`, then waits until the file `gate_file` exists (polling every
/// millisecond); returns the worker's pid. A test holds a worker busy with it for as long as
/// it likes, without any timing.
#[procpool::task]
pub fn gate(gate_file: &str, started: &str) -> u32 {
    std::fs::write(started, b"started").expect("write the marker file");
    while !std::path::Path::new(gate_file).exists() {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::process::id()
}

/// The value of environment variable `name` in the worker.
#[procpool::task]
pub fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Returns `x`, except that it aborts the worker when `x == bad`.
#[procpool::task]
pub fn abort_on(x: u64, bad: u64) -> u64 {
    if x == bad {
        std::process::abort();
    }
    x
}

/// Panics with a message naming `x`.
#[procpool::task]
pub fn panics(x: u64) -> u64 {
    panic!("task {x} panics on purpose")
}

/// `len` bytes, each `len % 251` (a result whose size the caller picks).
#[procpool::task]
pub fn bytes_of_len(len: u64) -> Vec<u8> {
    vec![(len % 251) as u8; usize::try_from(len).expect("fits usize")]
}

/// The length of `data` (arguments whose size the caller picks).
#[procpool::task]
pub fn len_of(data: Vec<u8>) -> u64 {
    data.len() as u64
}

/// An initializer: the offset every `add_offset` call adds.
#[procpool::task]
pub fn set_offset(offset: u64) -> Offset {
    Offset(offset)
}

/// An initializer that fails.
#[procpool::task]
pub fn failing_init(why: &str) -> Result<Offset, String> {
    Err(why.to_owned())
}

/// An initializer that sets `offset` while the file `flag` does not exist, and fails once it
/// does (a resource that disappeared after the pool started); each failure appends a line to
/// `{flag}.failures`, so a test can count the attempts.
#[procpool::task]
pub fn offset_unless_flag(flag: &str, offset: u64) -> Result<Offset, String> {
    if std::path::Path::new(flag).exists() {
        use std::io::Write;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(format!("{flag}.failures"))
            .map_err(|err| err.to_string())?;
        writeln!(log, "failed").map_err(|err| err.to_string())?;
        return Err(format!("{flag} exists"));
    }
    Ok(Offset(offset))
}

/// An initializer that succeeds in the first worker that runs it (it creates the file
/// `marker`) and fails in every later one (a worker that cannot start), appending a line to
/// `{marker}.failures` per failure.
#[procpool::task]
pub fn offset_first_start_only(marker: &str, offset: u64) -> Result<Offset, String> {
    use std::io::Write;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(marker)
    {
        Ok(_) => Ok(Offset(offset)),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            let mut log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(format!("{marker}.failures"))
                .map_err(|err| err.to_string())?;
            writeln!(log, "failed").map_err(|err| err.to_string())?;
            Err(format!("{marker} exists: only one worker may start"))
        }
        Err(err) => Err(err.to_string()),
    }
}

/// This worker's SIGINT state from `/proc/thread-self/status`: (ignored, blocked).
#[procpool::task]
pub fn sigint_state() -> (bool, bool) {
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap_or_default();
    let has_sigint = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .is_some_and(|mask| mask & (1 << (libc_sigint() - 1)) != 0)
    };
    (has_sigint("SigIgn:"), has_sigint("SigBlk:"))
}

/// SIGINT's number on Linux.
const fn libc_sigint() -> u32 {
    2
}

/// `x` plus the worker's offset (from the initializer), or an error without one.
#[procpool::task]
pub fn add_offset(x: u64) -> Result<u64, String> {
    let offset =
        procpool::worker_state::<Offset>().ok_or("no offset: the initializer did not run")?;
    Ok(x + offset.0)
}

/// Worker state set by [`set_offset`].
#[derive(Debug, Clone, Copy, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Offset(pub u64);

/// Touches every task so the linker keeps them all in every binary linking this library
/// (the task table is a link-time slice; an unreferenced object file could be dropped).
pub fn keep_tasks() -> usize {
    let tasks: [*const (); 16] = [
        gate::call as *const (),
        offset_unless_flag::call as *const (),
        bytes_of_len::call as *const (),
        len_of::call as *const (),
        env_var::call as *const (),
        mark_then_sleep::call as *const (),
        abort_on::call as *const (),
        nap::call as *const (),
        square::call as *const (),
        worker_pid::call as *const (),
        sleep_then_pid::call as *const (),
        even_only::call as *const (),
        panics::call as *const (),
        set_offset::call as *const (),
        failing_init::call as *const (),
        add_offset::call as *const (),
    ];
    std::hint::black_box(tasks).len() + shared::keep_tasks()
}

/// The `main` of the test worker programs (`tests/src/bin`): keeps every task of this library,
/// initialises procpool (which serves a pool when one started this process), and otherwise
/// runs `<program> attach <socket>`. Never returns; `program` names the binary in messages.
pub fn worker_main(program: &str) -> ! {
    keep_tasks();
    procpool::init();
    let args: Vec<String> = std::env::args().collect();
    if let [_, command, socket] = args.as_slice()
        && command == "attach"
    {
        match procpool::attach(socket) {
            Ok(()) => std::process::exit(0),
            Err(err) => {
                eprintln!("{program}: {err}");
                std::process::exit(1);
            }
        }
    }
    eprintln!("{program}: started by procpool test pools, or as `{program} attach <socket>`");
    std::process::exit(2);
}
