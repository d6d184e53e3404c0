//! Large arguments and results through the channels' reusable out-of-band pads.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;

use procpool::{TaskError, builtin};
use procpool_tests::shared::abort_holding;
use procpool_tests::worker_pid;

use crate::util::{eventually, pool, watchdog};

/// `len` bytes that differ with `seed`.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 12) as u8)
        .collect()
}

/// Inodes of the pad memfds process `pid` maps.
fn pad_inodes(pid: u32) -> HashSet<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains("/memfd:procpool-pad"))
        .filter_map(|line| line.split_whitespace().nth(4)?.parse().ok())
        .collect()
}

/// This process's descriptors and mappings of the pads with these inodes.
fn held_here(inodes: &HashSet<u64>) -> (usize, usize) {
    let fds = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|entry| std::fs::metadata(entry.ok()?.path()).ok())
        .filter(|meta| inodes.contains(&meta.ino()))
        .count();
    let maps = std::fs::read_to_string("/proc/self/maps")
        .expect("/proc/self/maps")
        .lines()
        .filter(|line| line.contains("/memfd:procpool-pad"))
        .filter_map(|line| line.split_whitespace().nth(4)?.parse::<u64>().ok())
        .filter(|inode| inodes.contains(inode))
        .count();
    (fds, maps)
}

#[test]
fn consecutive_large_calls_return_exactly_their_data() {
    let _watchdog = watchdog("consecutive_large_calls_return_exactly_their_data");
    let pool = pool(1);
    // Same size (the pads are reused), then larger (they grow), then smaller again.
    let sizes = [
        600_000,
        600_000,
        600_000,
        3 << 20,
        9 << 20,
        600_001,
        2 << 20,
        300_000,
    ];
    for (seed, len) in sizes.into_iter().enumerate() {
        let data = pattern(len, seed as u8);
        let back = pool.call(builtin::echo_bytes, data.clone()).unwrap();
        assert!(back == data, "call {seed}: {len} bytes came back changed");
    }
}

#[test]
fn two_workers_do_large_calls_concurrently() {
    let _watchdog = watchdog("two_workers_do_large_calls_concurrently");
    let pool = pool(2);
    let inputs: Vec<Vec<u8>> = (0..8)
        .map(|seed| pattern(700_000 + seed * 4096, seed as u8))
        .collect();
    for _ in 0..2 {
        let handles: Vec<_> = inputs
            .iter()
            .map(|data| pool.submit(builtin::echo_bytes, data.clone()))
            .collect();
        for (handle, data) in handles.into_iter().zip(&inputs) {
            assert!(handle.result().unwrap() == *data);
        }
        let back: Vec<Vec<u8>> = pool
            .map(builtin::echo_bytes, inputs.clone())
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(back == inputs);
    }
}

#[test]
fn worker_killed_holding_a_large_frame_loses_nothing_and_leaks_no_pad() {
    let _watchdog = watchdog("worker_killed_holding_a_large_frame_loses_nothing_and_leaks_no_pad");
    let pool = pool(1);
    let pid = pool.call(worker_pid, 0).unwrap();
    let data = pattern(2 << 20, 1);
    assert!(pool.call(builtin::echo_bytes, data.clone()).unwrap() == data);
    // The worker maps the parent's pad and its own (which it gives back after a second
    // idle, see below); the parent holds its own pad (fd and mapping) and maps the worker's.
    let inodes = pad_inodes(pid);
    assert!(!inodes.is_empty(), "the worker maps the parent's pad");
    let (fds, maps) = held_here(&inodes);
    assert!(fds >= 1 && maps >= 1, "fds {fds}, maps {maps}");
    // The worker dies while it reads its argument in the parent's pad.
    match pool.call(abort_holding, pattern(3 << 20, 2)) {
        Err(TaskError::WorkerDied { .. }) => {}
        other => panic!("expected WorkerDied, got {other:?}"),
    }
    eventually("the dead worker's pads are unmapped and closed", || {
        held_here(&inodes) == (0, 0)
    });
    // The replacement starts with fresh pads and gets every byte right.
    let data = pattern(2 << 20, 3);
    assert!(pool.call(builtin::echo_bytes, data.clone()).unwrap() == data);
    assert_eq!(pool.call(abort_holding, Vec::new()).unwrap(), 0);
}

/// Mappings of pads process `pid` writes (its own pads: read-write and shared).
fn own_pads(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains("/memfd:procpool-pad"))
        .filter(|line| line.split_whitespace().nth(1) == Some("rw-s"))
        .count()
}

#[test]
fn an_idle_worker_gives_its_pads_back() {
    let _watchdog = watchdog("an_idle_worker_gives_its_pads_back");
    let pool = pool(1);
    let pid = pool.call(worker_pid, 0).unwrap();
    // A large result goes through the worker's pad (the check is repeated: a worker idle
    // for a second between the call and the look would already have released it).
    let large_call_leaves_a_pad = |seed: u8| {
        (0..20).any(|round| {
            let data = pattern(1 << 20, seed.wrapping_add(round));
            assert!(pool.call(builtin::echo_bytes, data.clone()).unwrap() == data);
            own_pads(pid) == 1
        })
    };
    assert!(
        large_call_leaves_a_pad(4),
        "the worker's result went through its pad"
    );
    // About a second without work: the worker unmaps its pad (its pages are punched out).
    eventually("the idle worker released its pad", || own_pads(pid) == 0);
    assert!(
        large_call_leaves_a_pad(40),
        "a new pad for the next large result"
    );
}
