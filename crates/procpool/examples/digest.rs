//! SHA-512 of every file under a directory, in parallel, compared with a serial run.
//!
//! Run with `cargo run --release --features progress --example digest -- /usr/share`
//! (the directory defaults to `/usr/share`; without the `progress` feature there is no bar).

use std::path::PathBuf;
use std::time::Instant;

use sha2::{Digest, Sha512};

/// The SHA-512 of one file, and its size.
#[procpool::task]
fn digest_file(path: &str) -> Result<(u64, [u8; 64]), String> {
    let bytes = std::fs::read(path).map_err(|err| format!("{path}: {err}"))?;
    Ok((bytes.len() as u64, Sha512::digest(&bytes).into()))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    procpool::init();
    let dir = std::env::args_os()
        .nth(1)
        .map_or_else(|| PathBuf::from("/usr/share"), PathBuf::from);
    let files: Vec<String> = walkdir::WalkDir::new(&dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_file())
        .filter_map(|entry| entry.path().to_str().map(str::to_owned))
        .collect();
    println!("{} files under {}", files.len(), dir.display());

    // Read everything once, so both runs below find the files in the page cache and compare
    // hashing, not cold disk reads.
    let start = Instant::now();
    let warmed: u64 = files
        .iter()
        .filter_map(|path| std::fs::read(path).ok())
        .map(|bytes| bytes.len() as u64)
        .sum();
    println!(
        "warmed the page cache: {:.1} MiB in {:.2?}",
        warmed as f64 / (1 << 20) as f64,
        start.elapsed()
    );

    let pool = procpool::Pool::new()?;
    let start = Instant::now();
    let map = pool.map_unordered(digest_file, files.clone());
    #[cfg(feature = "progress")]
    let map = map.progress();
    let (mut bytes, mut failed, mut fold) = (0u64, 0usize, [0u8; 64]);
    for (_, outcome) in map {
        match outcome {
            Ok((size, digest)) => {
                bytes += size;
                fold.iter_mut().zip(digest).for_each(|(acc, b)| *acc ^= b);
            }
            Err(_) => failed += 1,
        }
    }
    let parallel = start.elapsed();
    println!(
        "parallel ({} workers): {} files, {:.1} MiB in {:.2?} = {:.1} MiB/s ({failed} unreadable)",
        pool.workers(),
        files.len() - failed,
        bytes as f64 / (1 << 20) as f64,
        parallel,
        bytes as f64 / (1 << 20) as f64 / parallel.as_secs_f64()
    );

    let start = Instant::now();
    let mut serial_fold = [0u8; 64];
    for path in &files {
        if let Ok((_, digest)) = digest_file::call(path) {
            serial_fold
                .iter_mut()
                .zip(digest)
                .for_each(|(acc, b)| *acc ^= b);
        }
    }
    let serial = start.elapsed();
    println!(
        "serial: {serial:.2?} (speed-up {:.2}x); digests agree: {}",
        serial.as_secs_f64() / parallel.as_secs_f64(),
        serial_fold == fold
    );
    Ok(())
}
