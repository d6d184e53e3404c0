//! Built-in tasks every worker carries: a few useful ones and a set for fault-injection tests.
//!
//! Parents name them like any task, e.g. `pool.submit(procpool_worker::builtin::add_one, 41)`.
//! `procpool-worker list` prints them with their ids.

use std::io::Read;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha512};

use crate::task;

/// Does nothing; for measuring round-trip overhead.
#[task(crate = crate)]
pub fn noop() {}

/// Returns `x + 1` (wrapping at `u64::MAX`).
#[task(crate = crate)]
pub fn add_one(x: u64) -> u64 {
    x.wrapping_add(1)
}

/// Busy-loops for `micros` microseconds (CPU work, not sleep); returns the loop count.
#[task(crate = crate)]
pub fn spin_for(micros: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_micros(micros);
    let mut spins = 0_u64;
    while Instant::now() < deadline {
        std::hint::spin_loop();
        spins += 1;
    }
    spins
}

/// Sleeps for `millis` milliseconds.
#[task(crate = crate)]
pub fn sleep_for(millis: u64) {
    std::thread::sleep(Duration::from_millis(millis));
}

/// Returns its argument; the bytes are read straight out of the received frame.
#[task(crate = crate)]
pub fn echo_bytes(data: &[u8]) -> Vec<u8> {
    data.to_vec()
}

/// The SHA-512 digest of the file at `path`.
#[task(crate = crate)]
pub fn sha512_file(path: &str) -> Result<[u8; 64], String> {
    let mut file = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
    let mut hasher = Sha512::new();
    let mut buffer = vec![0_u8; 64 * 1024];
    loop {
        let n = file.read(&mut buffer).map_err(|e| format!("{path}: {e}"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher.finalize().into())
}

/// Fails with `msg` (an `Err`, which the parent sees as a `Failed` task error).
#[task(crate = crate)]
pub fn fail(msg: &str) -> Result<(), String> {
    Err(msg.to_owned())
}

/// Panics with `msg`; the worker survives and reports the panic with its location.
#[task(crate = crate)]
pub fn panic(msg: &str) {
    panic!("{msg}");
}

/// Aborts the worker process (`SIGABRT`).
#[task(crate = crate)]
pub fn abort() {
    std::process::abort();
}

/// Kills the worker with `SIGSEGV`, as a segmentation fault would.
///
/// The signal is raised rather than provoked by an invalid access, which would be undefined
/// behaviour. The default disposition is restored first because the Rust runtime installs a
/// `SIGSEGV` handler (for stack-overflow reports) that returns for signals it did not expect.
#[task(crate = crate)]
pub fn segfault() {
    // SAFETY: `signal` with `SIG_DFL` and `raise` are async-signal-safe libc calls with no
    // memory-safety preconditions; restoring the default action only changes how this process
    // dies, which is the point.
    unsafe {
        libc::signal(libc::SIGSEGV, libc::SIG_DFL);
        libc::raise(libc::SIGSEGV);
    }
    std::process::abort();
}

/// Exits the worker process with `code` (without unwinding).
#[task(crate = crate)]
pub fn exit(code: i32) {
    std::process::exit(code);
}

/// Allocates `bytes` bytes, writes one byte per 4 KiB page (the page number, truncated to a
/// byte) and returns the sum of those bytes read back; the memory is freed on return.
#[task(crate = crate)]
pub fn allocate(bytes: u64) -> Result<u64, String> {
    let len = usize::try_from(bytes).map_err(|_| format!("{bytes} bytes do not fit in memory"))?;
    let mut block: Vec<u8> = Vec::new();
    block
        .try_reserve_exact(len)
        .map_err(|e| format!("cannot allocate {bytes} bytes: {e}"))?;
    block.resize(len, 0);
    const PAGE: usize = 4096;
    for (page, byte) in block.iter_mut().step_by(PAGE).enumerate() {
        *byte = page as u8;
    }
    let sum = block
        .iter()
        .step_by(PAGE)
        .map(|&b| u64::from(std::hint::black_box(b)))
        .sum();
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Task;

    #[test]
    fn builtins_are_callable_in_process() {
        assert_eq!(add_one::call(41), 42);
        assert_eq!(add_one::call(u64::MAX), 0);
        assert_eq!(echo_bytes::call(b"abc"), b"abc".to_vec());
        assert_eq!(fail::call("no"), Err("no".to_owned()));
        assert_eq!(allocate::call(3 * 4096), Ok(3));
        assert_eq!(allocate::call(0), Ok(0));
        noop::call();
        sleep_for::call(0);
        let _ = spin_for::call(1);
    }

    #[test]
    fn sha512_file_hashes_and_reports_missing_files() {
        let dir = std::env::temp_dir().join(format!("procpool-builtin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("abc.txt");
        std::fs::write(&path, b"abc").expect("write");
        let digest = sha512_file::call(path.to_str().expect("utf-8")).expect("hashes");
        assert_eq!(&digest[..4], &[0xdd, 0xaf, 0x35, 0xa1]);
        let missing = sha512_file::call(dir.join("missing").to_str().expect("utf-8"));
        assert!(missing.expect_err("missing file").contains("missing"));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn macro_maps_signatures_to_wire_types() {
        fn args_of<T: Task>(_: T) -> std::any::TypeId {
            std::any::TypeId::of::<T::Args>()
        }
        fn output_of<T: Task>(_: T) -> std::any::TypeId {
            std::any::TypeId::of::<T::Output>()
        }
        use std::any::TypeId;
        assert_eq!(args_of(noop), TypeId::of::<()>());
        assert_eq!(args_of(add_one), TypeId::of::<u64>());
        assert_eq!(args_of(echo_bytes), TypeId::of::<Vec<u8>>());
        assert_eq!(args_of(fail), TypeId::of::<String>());
        assert_eq!(output_of(sha512_file), TypeId::of::<[u8; 64]>());
        assert_eq!(output_of(fail), TypeId::of::<()>());
        assert_eq!(output_of(allocate), TypeId::of::<u64>());
        assert_eq!(
            <sha512_file as Task>::SIGNATURE,
            "fn(&str) -> Result<[u8; 64], String>"
        );
        assert_eq!(<noop as Task>::SIGNATURE, "fn()");
        assert_eq!(<add_one as Task>::NAME, "procpool_worker::builtin::add_one");
        assert_eq!(
            <add_one as Task>::ID,
            crate::registry::task_id("procpool_worker::builtin", "add_one", "fn(u64) -> u64")
        );
    }
}
