//! Large arguments and results through the channels' reusable out-of-band pads.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;

use procpool::{Pool, TaskError, builtin};
use procpool_tests::shared::{abort_holding, sleep_then_sum};
use procpool_tests::worker_pid;

use crate::util::{eventually, measuring_alone, pool, watchdog};

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

/// This process's own pads: descriptors of pad memfds (a worker's pad is closed here once
/// mapped) and read-write mappings of them (a worker's pads are mapped read-only here).
fn pads_here() -> (usize, usize) {
    let fds = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("/memfd:procpool-pad"))
        .count();
    let maps = std::fs::read_to_string("/proc/self/maps")
        .expect("/proc/self/maps")
        .lines()
        .filter(|line| line.contains("/memfd:procpool-pad"))
        .filter(|line| line.split_whitespace().nth(1) == Some("rw-s"))
        .count();
    (fds, maps)
}

/// Private anonymous mappings of this process larger than `min` bytes. With its own large
/// vectors dropped, the pool's copy buffer is the one such mapping a test process alone has
/// (an allocator arena is at most 64 MiB, and the pool's rings and pads are memfds).
fn anonymous_mappings_above(min: usize) -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .expect("/proc/self/maps")
        .lines()
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() == 5 && fields[1] == "rw-p"
        })
        .filter_map(|line| {
            let (start, end) = line.split_whitespace().next()?.split_once('-')?;
            let start = usize::from_str_radix(start, 16).ok()?;
            let end = usize::from_str_radix(end, 16).ok()?;
            Some(end - start)
        })
        .filter(|&len| len > min)
        .count()
}

/// Whether a `len`-byte echo call leaves the parent a pad (its descriptor and read-write
/// mapping) and a copy buffer (the one anonymous mapping above `len`), checking the bytes that
/// came back. The argument goes through the parent's pad and the result through its copy
/// buffer, and every vector of the call is dropped before the look. Tried up to five times: a
/// parent idle for a second between a call and the look would already have released them.
fn large_call_leaves_buffers(pool: &Pool, len: usize, seed: u8) -> bool {
    (0..5).any(|round| {
        {
            let data = pattern(len, seed.wrapping_add(round));
            let back = pool.call(builtin::echo_bytes, data.clone()).unwrap();
            assert!(back == data, "{len} bytes came back changed");
        }
        let (fds, maps) = pads_here();
        fds >= 1 && maps >= 1 && anonymous_mappings_above(len) == 1
    })
}

#[test]
fn an_idle_parent_gives_its_pads_and_copy_buffer_back() {
    let _watchdog = watchdog("an_idle_parent_gives_its_pads_and_copy_buffer_back");
    // Counts this process's descriptors and mappings, which other tests open concurrently.
    if !measuring_alone(
        "payload::an_idle_parent_gives_its_pads_and_copy_buffer_back",
        "PROCPOOL_TEST_PARENT_BUFFERS_CHILD",
    ) {
        return;
    }
    const LEN: usize = 64 << 20;
    let pool = pool(1);
    assert_eq!(pads_here(), (0, 0), "no pad before a large frame");
    assert_eq!(anonymous_mappings_above(LEN), 0, "nothing that large yet");
    assert!(
        large_call_leaves_buffers(&pool, LEN, 1),
        "the parent keeps a pad and a copy buffer after a large call"
    );
    // About a second or two without large frames, with nothing else arriving: both go.
    eventually("the idle parent released its pads and copy buffer", || {
        pads_here() == (0, 0) && anonymous_mappings_above(LEN) == 0
    });
    // The next large call gets fresh ones and every byte right.
    assert!(
        large_call_leaves_buffers(&pool, LEN, 10),
        "a new pad and copy buffer for the next large call"
    );
}

#[test]
fn a_worker_busy_with_a_long_call_keeps_its_links_buffers() {
    let _watchdog = watchdog("a_worker_busy_with_a_long_call_keeps_its_links_buffers");
    if !measuring_alone(
        "payload::a_worker_busy_with_a_long_call_keeps_its_links_buffers",
        "PROCPOOL_TEST_BUSY_BUFFERS_CHILD",
    ) {
        return;
    }
    const LEN: usize = 64 << 20;
    let pool = pool(1);
    assert!(
        large_call_leaves_buffers(&pool, LEN, 3),
        "the parent keeps a pad and a copy buffer after a large call"
    );
    // The worker then runs a call for three seconds, three of the reader's offers: a worker
    // running a chunk is not idle, so the link keeps both for the next large call (it used to
    // give them back during the call, and every slow large call faulted in fresh ones).
    pool.call(builtin::sleep_for, 3_000).unwrap();
    assert!(
        pads_here().0 >= 1,
        "the pad was given back while the worker was busy"
    );
    assert_eq!(
        anonymous_mappings_above(LEN),
        1,
        "the copy buffer was given back while the worker was busy"
    );
    // Idle at last: both go.
    eventually("the idle parent released its pads and copy buffer", || {
        pads_here() == (0, 0) && anonymous_mappings_above(LEN) == 0
    });
}

#[test]
fn a_pad_the_worker_still_reads_is_not_released() {
    let _watchdog = watchdog("a_pad_the_worker_still_reads_is_not_released");
    let pool = pool(1);
    let data = pattern(8 << 20, 7);
    let expected = (
        data.len() as u64,
        data.iter().map(|&b| u64::from(b)).sum::<u64>(),
    );
    // The worker reads the argument in the parent's pad after three seconds of holding it,
    // long enough for the parent's reader thread to offer its idle buffers back twice.
    assert_eq!(
        pool.call(sleep_then_sum, (data.clone(), 3_000)),
        Ok(expected)
    );
    assert_eq!(pool.call(sleep_then_sum, (data, 0)), Ok(expected));
}
