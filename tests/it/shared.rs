//! Shared objects (`Pool::share`, `Pool::share_slice`) and large arguments and results.

use std::collections::HashSet;

use procpool::{TaskError, WorkerExit, builtin};
use procpool_tests::shared::{
    bytes_sum, make_bytes, row_value, shared_bytes_sum, shared_f64_sum, shared_row,
    shared_table_info, table, write_into_shared,
};

use crate::util::{attach, builder, eventually, pool, shutdown_and_expect_clean_exit, watchdog};

/// Descriptors of this process that name a shared-object memfd.
fn shared_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| {
            target
                .to_string_lossy()
                .starts_with("/memfd:procpool-shared")
        })
        .count()
}

/// Mappings of shared-object memfds in process `pid`.
fn shared_mappings(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains("/memfd:procpool-shared"))
        .count()
}

#[test]
fn shared_table_is_read_in_place_by_every_worker() {
    let _watchdog = watchdog("shared_table_is_read_in_place_by_every_worker");
    // One call per worker process: each call runs in a worker started after `share`.
    let pool = builder(2).max_tasks_per_child(1).build().unwrap();
    let table = pool.share(&table(100_000)).unwrap();
    assert_eq!(table.rows.len(), 100_000, "the parent reads it too");
    let rows = [0u64, 1, 99_999, 4242, 77, 50_000];
    let mut pids = HashSet::new();
    for row in rows {
        let (value, pid) = pool.call(shared_row, (table.clone(), row)).unwrap();
        assert_eq!(value, row_value(row));
        pids.insert(pid);
    }
    assert_eq!(pids.len(), rows.len(), "each call ran in a fresh worker");
    let (len, name) = pool.call(shared_table_info, table).unwrap();
    assert_eq!((len, name.as_str()), (100_000, "table of 100000"));
}

#[test]
fn shared_table_survives_a_crash_and_reaches_the_replacement() {
    let _watchdog = watchdog("shared_table_survives_a_crash_and_reaches_the_replacement");
    for method in [
        procpool::StartMethod::Spawn,
        procpool::StartMethod::ForkServer,
    ] {
        let pool = builder(1).start_method(method).build().unwrap();
        let table = pool.share(&table(10_000)).unwrap();
        let (value, before) = pool.call(shared_row, (table.clone(), 9_999)).unwrap();
        assert_eq!(value, row_value(9_999));
        assert!(matches!(
            pool.call(builtin::abort, ()),
            Err(TaskError::WorkerDied { .. })
        ));
        let (value, after) = pool.call(shared_row, (table.clone(), 123)).unwrap();
        assert_eq!(value, row_value(123), "{method:?}");
        assert_ne!(before, after, "{method:?}: the replacement read it");
        // A map over many rows, all through the replacement.
        let all: Vec<(u64, u32)> = pool
            .map(shared_row, (0..2_000).map(|row| (table.clone(), row)))
            .collect::<Result<_, _>>()
            .unwrap();
        for (row, (value, _)) in all.iter().enumerate() {
            assert_eq!(*value, row_value(row as u64));
        }
    }
}

#[test]
fn shared_slices_of_plain_numbers() {
    let _watchdog = watchdog("shared_slices_of_plain_numbers");
    let pool = pool(2);
    let floats: Vec<f64> = (0..10_000).map(|i| f64::from(i) * 0.5).collect();
    let shared = pool.share_slice(&floats).unwrap();
    assert_eq!(&*shared, &floats[..]);
    let sum = pool.call(shared_f64_sum, shared).unwrap();
    assert_eq!(sum, floats.iter().sum::<f64>());
    let bytes: Vec<u8> = (0..100_003u32).map(|i| (i % 251) as u8).collect();
    let shared = pool.share_slice(&bytes).unwrap();
    let expected = bytes.iter().map(|&b| u64::from(b)).sum::<u64>();
    let handles: Vec<_> = (0..20)
        .map(|_| pool.submit(shared_bytes_sum, shared.clone()))
        .collect();
    for handle in handles {
        assert_eq!(handle.result().unwrap(), (bytes.len() as u64, expected));
    }
}

#[test]
fn memfd_and_worker_mappings_go_when_the_last_handle_drops() {
    let _watchdog = watchdog("memfd_and_worker_mappings_go_when_the_last_handle_drops");
    let pool = pool(1);
    let before = shared_fds();
    let data = pool.share_slice(&vec![7u8; 1 << 20]).unwrap();
    assert_eq!(
        shared_fds(),
        before + 1,
        "the parent holds the object's memfd"
    );
    let (len, _) = pool.call(shared_bytes_sum, data.clone()).unwrap();
    assert_eq!(len, 1 << 20);
    let worker = pool.stats().workers[0].pid;
    assert!(shared_mappings(worker) >= 1, "the worker maps it");
    // A call in flight keeps the object alive after the user's handles are gone.
    let handle = pool.submit(shared_bytes_sum, data.clone());
    drop(data);
    assert_eq!(handle.result().unwrap(), (1 << 20, 7 << 20));
    eventually("the parent closes the memfd", || shared_fds() == before);
    eventually("the worker unmaps it", || shared_mappings(worker) == 0);
    assert_eq!(
        pool.stats().workers[0].pid,
        worker,
        "same worker throughout"
    );
}

#[test]
fn writing_through_a_shared_mapping_kills_only_the_worker() {
    let _watchdog = watchdog("writing_through_a_shared_mapping_kills_only_the_worker");
    let pool = pool(1);
    let data = pool.share_slice(&[1u8, 2, 3, 4]).unwrap();
    match pool.call(write_into_shared, data.clone()) {
        Err(TaskError::WorkerDied { exit, .. }) => {
            assert_eq!(exit, WorkerExit::Signal(11), "SIGSEGV");
        }
        other => panic!("expected WorkerDied, got {other:?}"),
    }
    assert_eq!(&*data, &[1, 2, 3, 4]);
    assert_eq!(pool.call(shared_bytes_sum, data).unwrap(), (4, 10));
}

#[test]
fn a_handle_of_another_pool_is_a_clear_task_error() {
    let _watchdog = watchdog("a_handle_of_another_pool_is_a_clear_task_error");
    let owner = pool(1);
    let other = pool(1);
    let data = owner.share_slice(&[1u8, 2, 3]).unwrap();
    match other.call(shared_bytes_sum, data.clone()) {
        Err(TaskError::BadArguments(message)) => {
            assert!(message.contains("is not known to this worker"), "{message}");
        }
        other => panic!("expected BadArguments, got {other:?}"),
    }
    // The worker is fine, and so is the owner.
    assert_eq!(other.call(crate_square(), 3).unwrap(), 9);
    assert_eq!(owner.call(shared_bytes_sum, data).unwrap(), (3, 6));
}

fn crate_square() -> procpool_tests::square {
    procpool_tests::square
}

#[test]
fn attached_worker_receives_live_shared_objects() {
    let _watchdog = watchdog("attached_worker_receives_live_shared_objects");
    let dir = tempfile::tempdir().unwrap();
    let pool = pool(1);
    let table = pool.share(&table(1_000)).unwrap();
    let socket = pool.listen(dir.path().join("pool.sock")).unwrap();
    let attached = attach(&pool, env!("CARGO_BIN_EXE_test-worker"), &socket);
    let attached_pid = attached.0.id();
    eventually("the attached worker maps the table", || {
        shared_mappings(attached_pid) >= 1
    });
    let outcomes: Vec<(u64, u32)> = pool
        .map(shared_row, (0..1_000).map(|row| (table.clone(), row)))
        .collect::<Result<_, _>>()
        .unwrap();
    for (row, (value, _)) in outcomes.iter().enumerate() {
        assert_eq!(*value, row_value(row as u64));
    }
    shutdown_and_expect_clean_exit(pool, attached);
}

const GIB: u64 = 1 << 30;

#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "moves 1 GiB several times: run in release (CI does)"
)]
fn one_gib_argument_round_trip() {
    let _watchdog = watchdog("one_gib_argument_round_trip");
    let pool = pool(1);
    let data: Vec<u8> = (0..GIB).map(|i| (i % 253) as u8).collect();
    let expected = data
        .iter()
        .fold(0u64, |sum, &b| sum.wrapping_add(u64::from(b)));
    assert_eq!(pool.call(bytes_sum, data).unwrap(), (GIB, expected));
}

#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "moves 1 GiB several times: run in release (CI does)"
)]
fn one_gib_result_round_trip() {
    let _watchdog = watchdog("one_gib_result_round_trip");
    let pool = pool(1);
    let bytes = pool.call(make_bytes, (GIB, 5)).unwrap();
    assert_eq!(bytes.len() as u64, GIB);
    for (i, &b) in bytes.iter().enumerate().step_by(4093) {
        assert_eq!(b, (i as u8).wrapping_mul(31).wrapping_add(5), "byte {i}");
    }
    assert_eq!(
        bytes[bytes.len() - 1],
        ((GIB - 1) as u8).wrapping_mul(31).wrapping_add(5)
    );
}
