//! Hostile or broken processes attaching through `Pool::listen`: they are refused, and the pool
//! goes on serving with its own workers and with well-behaved attached ones.
//!
//! The fake worker must be a process of its own: the pool SIGKILLs a refused peer (by the pid the
//! kernel reports for the socket), so it cannot be this test process. The test re-runs its own
//! binary with `--exact hostile::role_fake_worker` and the role in [`ROLE_VAR`]; that process
//! connects with a plain `UnixStream`, takes the channel with `procpool_ipc::recv_handoff` and
//! `Endpoint::open`, and then misbehaves.

use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::{Duration, Instant};

use procpool_tests::square;

use crate::util::{
    ChildGuard, assert_gets_work, attach, builder, shutdown_and_expect_clean_exit, watchdog,
};

const ROLE_VAR: &str = "PROCPOOL_HOSTILE_ROLE";
const SOCKET_VAR: &str = "PROCPOOL_HOSTILE_SOCKET";
/// If set, the fake creates this file once it holds its channel (the pool accepted it).
const MARKER_VAR: &str = "PROCPOOL_HOSTILE_MARKER";
/// The handshake deadline the tests give their pools (the default is 30 s).
const HANDSHAKE: Duration = Duration::from_secs(3);
/// How long a refused fake may take to be gone; far above [`HANDSHAKE`], only a watchdog.
const GONE_WITHIN: Duration = Duration::from_secs(30);

/// Kills and reaps a child process when dropped, so a failing test leaves none behind.
/// The fake worker: not a test when run normally (the role variable is unset).
#[test]
fn role_fake_worker() {
    let Ok(role) = std::env::var(ROLE_VAR) else {
        return;
    };
    let socket = std::env::var(SOCKET_VAR).expect("the socket path");
    let stream = std::os::unix::net::UnixStream::connect(&socket).expect("connect");
    let (handoff, _) = procpool_ipc::recv_handoff(&stream, &mut []).expect("the hand-over");
    drop(stream);
    let mut endpoint = procpool_ipc::Endpoint::open(handoff).expect("open the channel");
    if let Ok(marker) = std::env::var(MARKER_VAR) {
        std::fs::write(marker, b"accepted").expect("write the marker");
    }
    match role.as_str() {
        // Takes the channel and never says Hello.
        "silent" => {}
        // Frames that are no protocol message at all, instead of a Hello.
        "garbage" => {
            for len in [1usize, 7, 32, 100, 4096] {
                let frame = vec![0xA5u8; len];
                let _ = endpoint
                    .sender()
                    .send_timeout(&frame, Duration::from_secs(1));
            }
        }
        // A Hello header (kind 0x0101) with a protocol version this pool does not speak, laid
        // out as the protocol module documents: kind u16 | version u16 | count u32 | chunk_id
        // u64 | task_id u64 | first_index u64, little endian, then the body.
        "bad_version" => {
            let mut frame = vec![0u8; 64];
            frame[0..2].copy_from_slice(&0x0101u16.to_le_bytes());
            frame[2..4].copy_from_slice(&0xBEEFu16.to_le_bytes());
            let _ = endpoint
                .sender()
                .send_timeout(&frame, Duration::from_secs(1));
        }
        // A correct handshake (Hello with this program's fingerprint, then Ready), then garbage
        // in place of the outcomes of the first call batch it is given.
        "garbage_after_handshake" => {
            handshake(&mut endpoint, procpool_worker::fingerprint());
            match endpoint.receiver().recv_timeout(Duration::from_secs(60)) {
                Ok(frame) => {
                    let bytes: &[u8] = &frame;
                    let kind = u16::from_le_bytes([bytes[0], bytes[1]]);
                    if kind != 0x0002 {
                        eprintln!("fake worker: expected a call batch, got kind {kind:#06x}");
                        std::process::exit(6);
                    }
                }
                Err(err) => {
                    eprintln!("fake worker: no call batch came: {err}");
                    std::process::exit(5);
                }
            }
            // A frame that claims to be Outcomes for a chunk but whose body is noise.
            let mut frame = header(0x0104);
            frame[4..8].copy_from_slice(&1000u32.to_le_bytes());
            frame.extend_from_slice(&[0x5Au8; 200]);
            let _ = endpoint
                .sender()
                .send_timeout(&frame, Duration::from_secs(1));
        }
        // A correct handshake, then, once it holds a call batch, a flood of well-formed (empty)
        // Outcomes frames for a chunk it was never given.
        "foreign_outcomes" => {
            handshake(&mut endpoint, procpool_worker::fingerprint());
            let chunk_id = match endpoint.receiver().recv_timeout(Duration::from_secs(60)) {
                Ok(frame) => {
                    let bytes: &[u8] = &frame;
                    u64::from_le_bytes(bytes[8..16].try_into().expect("a header"))
                }
                Err(err) => {
                    eprintln!("fake worker: no call batch came: {err}");
                    std::process::exit(5);
                }
            };
            let mut frame = header(0x0104);
            frame[8..16].copy_from_slice(&(chunk_id + 1_000_000).to_le_bytes());
            // No runs: the run count and a reserved word, both zero.
            frame.extend_from_slice(&[0u8; 8]);
            for _ in 0..10_000 {
                if endpoint
                    .sender()
                    .send_timeout(&frame, Duration::from_secs(1))
                    .is_err()
                {
                    break;
                }
            }
        }
        // A well-formed Hello (and Ready) from a program with another task table.
        "bad_fingerprint" => handshake(&mut endpoint, procpool_worker::fingerprint() ^ 1),
        // A correct handshake, then silence: it takes call batches and never answers (nor marks
        // an item as running in its mailbox).
        "mute_after_handshake" => handshake(&mut endpoint, procpool_worker::fingerprint()),
        // A correct handshake, then a flood of unsolicited Pong frames (valid messages the pool
        // accepts and ignores), ignoring any work it is given; then it leaves.
        "pong_flood" => {
            handshake(&mut endpoint, procpool_worker::fingerprint());
            for nonce in 0..200_000u64 {
                let mut frame = header(0x0106);
                frame[8..16].copy_from_slice(&nonce.to_le_bytes());
                if endpoint
                    .sender()
                    .send_timeout(&frame, Duration::from_secs(5))
                    .is_err()
                {
                    break;
                }
            }
            std::process::exit(0);
        }
        other => panic!("unknown role {other}"),
    }
    // Wait to be refused: the pool SIGKILLs this process, or closes the channel. The mute
    // worker gives up (exit 4) after 5 s: see `attached_worker_that_never_answers_...`.
    let give_up = if role == "mute_after_handshake" {
        5
    } else {
        60
    };
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(give_up) {
        match endpoint.receiver().recv_timeout(Duration::from_millis(100)) {
            Ok(_) | Err(procpool_ipc::RecvError::Timeout) => {}
            Err(procpool_ipc::RecvError::Disconnected) => std::process::exit(0),
            Err(err) => {
                eprintln!("fake worker: {err}");
                std::process::exit(3);
            }
        }
    }
    std::process::exit(4);
}

/// A 32-byte frame header of `kind` with this build's protocol version and zero fields.
fn header(kind: u16) -> Vec<u8> {
    let mut frame = vec![0u8; procpool_worker::protocol::HEADER_LEN];
    frame[0..2].copy_from_slice(&kind.to_le_bytes());
    frame[2..4].copy_from_slice(&procpool_worker::protocol::PROTOCOL_VERSION.to_le_bytes());
    frame
}

/// The worker's side of the handshake, done by hand: take `Setup`, answer `Hello` (this
/// program's fingerprint: the fake runs the test binary, the pool's own program) and `Ready`.
fn handshake(endpoint: &mut procpool_ipc::Endpoint, fingerprint: u64) {
    endpoint
        .receiver()
        .recv_timeout(Duration::from_secs(10))
        .expect("Setup");
    let hello = procpool_worker::protocol::Hello {
        pid: std::process::id(),
        fingerprint,
        task_count: 0,
        task_ids: Vec::new(),
    };
    let mut frame = header(0x0101);
    frame.extend_from_slice(&rkyv::to_bytes::<rkyv::rancor::Error>(&hello).expect("encode Hello"));
    endpoint
        .sender()
        .send_timeout(&frame, Duration::from_secs(10))
        .expect("send Hello");
    endpoint
        .sender()
        .send_timeout(&header(0x0102), Duration::from_secs(10))
        .expect("send Ready");
}

/// Starts the fake worker `role` against the pool listening at `socket`.
/// Waits until the pool lists the fake worker among its workers (its handshake was
/// accepted) and returns its pid; fails the test if the fake ends first.
fn wait_attached(pool: &procpool::Pool, fake: &mut ChildGuard) -> u32 {
    let fake_pid = fake.0.id();
    while !pool.stats().workers.iter().any(|w| w.pid == fake_pid) {
        assert!(
            fake.0.try_wait().unwrap().is_none(),
            "the fake worker ended before its handshake was accepted"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    fake_pid
}

/// A pool of one own worker (built from `pool`) listening on a socket in a temporary
/// directory, with the fake worker `role` attached to it.
struct Attached {
    pool: procpool::Pool,
    fake: ChildGuard,
    fake_pid: u32,
    /// Holds the socket's directory: bind it (as `_dir`, not `..`) so it lives as long as the pool.
    _dir: tempfile::TempDir,
}

/// Builds `pool` with [`HANDSHAKE`] as its start timeout, attaches the fake `role` and waits
/// until the pool lists it among its workers.
fn attach_fake(pool: procpool::PoolBuilder, role: &str) -> Attached {
    let dir = tempfile::tempdir().unwrap();
    let pool = pool.start_timeout(HANDSHAKE).build().unwrap();
    let socket = pool.listen(dir.path().join("pool.sock")).unwrap();
    let mut fake = start_fake(role, &socket);
    let fake_pid = wait_attached(&pool, &mut fake);
    Attached {
        pool,
        fake,
        fake_pid,
        _dir: dir,
    }
}

/// Every outcome of `map(square, 0..)` is its correct value.
fn assert_squares(outcomes: Vec<Result<u64, procpool::TaskError>>) {
    for (x, outcome) in outcomes.into_iter().enumerate() {
        assert_eq!(outcome, Ok((x * x) as u64), "item {x}");
    }
}

fn start_fake(role: &str, socket: &std::path::Path) -> ChildGuard {
    ChildGuard(
        fake_command(role, socket)
            .spawn()
            .expect("start the fake worker"),
    )
}

fn fake_command(role: &str, socket: &std::path::Path) -> Command {
    let exe = std::env::current_exe().expect("the test binary");
    let mut command = Command::new(exe);
    command
        .args([
            "--exact",
            "hostile::role_fake_worker",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE_VAR, role)
        .env(SOCKET_VAR, socket);
    command
}

/// Waits until the fake has ended; it must end refused: SIGKILLed by the pool or told
/// "disconnected" (exit 0). Returns how long that took.
fn wait_refused(fake: &mut ChildGuard, role: &str) -> Duration {
    let started = Instant::now();
    loop {
        if let Some(status) = fake.0.try_wait().expect("wait for the fake") {
            assert!(
                status.signal() == Some(libc::SIGKILL) || status.code() == Some(0),
                "{role}: the fake worker was not refused but ended with {status:?}"
            );
            eprintln!("{role}: the fake worker ended with {status:?}");
            return started.elapsed();
        }
        assert!(
            started.elapsed() < GONE_WITHIN,
            "{role}: the fake worker is still attached after {GONE_WITHIN:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Attaches a real `test-worker` to `socket` and checks that it gets work next to the pool's
/// own worker, then shuts the pool down (which ends the attached worker cleanly).
fn real_worker_still_attaches(pool: procpool::Pool, socket: &std::path::Path) {
    let attached = attach(&pool, env!("CARGO_BIN_EXE_test-worker"), socket);
    assert_gets_work(&pool, attached.0.id());
    shutdown_and_expect_clean_exit(pool, attached);
}

/// One hostile peer: it is refused, the pool keeps one worker (its own) and serves, and a real
/// worker can attach afterwards. The refusal is counted in the pool's stats, with its reason
/// (which contains `reason`).
fn hostile_peer_is_refused(role: &'static str, reason: &str) {
    let dir = tempfile::tempdir().unwrap();
    let pool = builder(1).start_timeout(HANDSHAKE).build().unwrap();
    let own: Vec<u32> = pool.stats().workers.iter().map(|w| w.pid).collect();
    let socket = pool.listen(dir.path().join("pool.sock")).unwrap();
    let mut fake = start_fake(role, &socket);
    let fake_pid = fake.0.id();
    let took = wait_refused(&mut fake, role);
    eprintln!("{role}: refused after {took:?}");
    // The peer is killed just before the refusal is recorded.
    while pool.stats().attach_refusals == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let stats = pool.stats();
    assert_eq!(stats.attach_refusals, 1, "{role}");
    let why = stats.last_attach_refusal.clone().expect("a reason");
    eprintln!("{role}: {why}");
    assert!(why.contains(&fake_pid.to_string()), "{role}: {why}");
    assert!(why.contains(reason), "{role}: {why}");
    assert!(
        !stats.workers.iter().any(|w| w.pid == fake_pid),
        "{role}: the fake worker was registered"
    );
    assert_eq!(
        stats.workers.iter().map(|w| w.pid).collect::<Vec<_>>(),
        own,
        "{role}: the pool's own worker is untouched"
    );
    let got: Vec<u64> = pool
        .map(square, 0..1_000u64)
        .collect::<Result<_, _>>()
        .expect("the pool still works");
    assert!(got.iter().enumerate().all(|(x, &y)| y == (x * x) as u64));
    real_worker_still_attaches(pool, &socket);
}

#[test]
fn attached_peer_that_never_says_hello_is_refused_after_the_deadline() {
    let _watchdog = watchdog("attached_peer_that_never_says_hello_is_refused_after_the_deadline");
    hostile_peer_is_refused("silent", "did not send Hello");
}

#[test]
fn attached_peer_that_sends_garbage_instead_of_hello_is_refused() {
    let _watchdog = watchdog("attached_peer_that_sends_garbage_instead_of_hello_is_refused");
    hostile_peer_is_refused("garbage", "other than a valid Hello");
}

#[test]
fn attached_peer_with_another_task_table_fingerprint_is_refused() {
    let _watchdog = watchdog("attached_peer_with_another_task_table_fingerprint_is_refused");
    hostile_peer_is_refused("bad_fingerprint", "lacks");
}

#[test]
fn attached_peer_with_a_wrong_protocol_version_is_refused() {
    let _watchdog = watchdog("attached_peer_with_a_wrong_protocol_version_is_refused");
    hostile_peer_is_refused("bad_version", "does not match this program");
}

/// A silent peer that holds its channel but never says Hello does not delay a real worker that
/// attaches after it: handshakes run side by side, so the real worker is serving while the silent
/// one is still within its (long) handshake deadline. Shutting the pool down then cuts the silent
/// handshake short instead of waiting for its deadline.
#[test]
fn silent_attaching_peer_does_not_delay_a_real_worker() {
    let _watchdog = watchdog("silent_attaching_peer_does_not_delay_a_real_worker");
    let dir = tempfile::tempdir().unwrap();
    // Far longer than the rest of the test: were handshakes serial, the real worker could only
    // attach after the silent peer was refused at this deadline.
    let deadline = Duration::from_secs(60);
    let pool = builder(1).start_timeout(deadline).build().unwrap();
    let socket = pool.listen(dir.path().join("pool.sock")).unwrap();
    let marker = dir.path().join("silent-accepted");
    let mut silent = ChildGuard(
        fake_command("silent", &socket)
            .env(MARKER_VAR, &marker)
            .spawn()
            .expect("start the silent fake"),
    );
    crate::util::wait_marker(&marker);
    let mut real = attach(&pool, env!("CARGO_BIN_EXE_test-worker"), &socket);
    assert_gets_work(&pool, real.0.id());
    assert!(
        silent.0.try_wait().unwrap().is_none(),
        "the silent peer is still in its handshake while the real worker serves"
    );
    assert_eq!(pool.stats().attach_refusals, 0);
    let started = Instant::now();
    pool.shutdown();
    let took = started.elapsed();
    assert!(
        took < deadline / 2,
        "shutdown waited {took:?} for the silent handshake's deadline"
    );
    wait_refused(&mut silent, "silent");
    assert!(real.0.wait().unwrap().success());
}

/// A worker program whose task table is a superset of this program's (every task of the test
/// binary plus one of its own) is accepted, both as the pool's program and attached through
/// `listen`, and runs the pool's tasks; a peer whose table lacks this program's tasks is still
/// refused, naming what it lacks (`attached_peer_with_another_task_table_fingerprint_is_refused`).
#[test]
fn worker_program_with_a_superset_task_table_is_accepted() {
    let _watchdog = watchdog("worker_program_with_a_superset_task_table_is_accepted");
    let superset = env!("CARGO_BIN_EXE_superset-worker");
    let pool = builder(1)
        .program(superset)
        .start_method(procpool::StartMethod::ForkServer)
        .build()
        .expect("a superset program passes the handshake");
    let got: Vec<u64> = pool
        .map(square, 0..100u64)
        .collect::<Result<_, _>>()
        .expect("the superset program runs the pool's tasks");
    assert!(got.iter().enumerate().all(|(x, &y)| y == (x * x) as u64));
    drop(pool);

    let dir = tempfile::tempdir().unwrap();
    let pool = builder(1).start_timeout(HANDSHAKE).build().unwrap();
    let socket = pool.listen(dir.path().join("pool.sock")).unwrap();
    let attached = attach(&pool, superset, &socket);
    assert_gets_work(&pool, attached.0.id());
    assert_eq!(pool.stats().attach_refusals, 0);
    shutdown_and_expect_clean_exit(pool, attached);
}

/// A peer that passes the handshake and then answers its first call batch with garbage: the
/// pool closes its channel and drops it (counted as a death), and every item ends with its
/// correct value or, at worst, `WorkerDied` blamed on the fake. Today the fake's items are all
/// re-queued even without retries: it never marked an item as running in its mailbox, so the
/// pool treats it as a worker lost between items (charged nothing, within a bound).
fn garbage_after_handshake(retries: u32) {
    let Attached {
        pool,
        mut fake,
        fake_pid,
        _dir,
    } = attach_fake(builder(1).chunksize(4), "garbage_after_handshake");
    let outcomes: Vec<_> = pool.task(square).retries(retries).map(0..400u64).collect();
    wait_refused(&mut fake, "garbage_after_handshake");
    let mut died = 0;
    for (x, outcome) in outcomes.into_iter().enumerate() {
        match outcome {
            Ok(y) => assert_eq!(y, (x * x) as u64, "item {x}"),
            Err(procpool::TaskError::WorkerDied { pid, .. }) if retries == 0 => {
                assert_eq!(pid, fake_pid, "item {x} blamed on the wrong worker");
                died += 1;
            }
            Err(err) => panic!("item {x}: {err:?}"),
        }
    }
    eprintln!("retries {retries}: {died} items ended with WorkerDied");
    assert!(
        !pool.stats().workers.iter().any(|w| w.pid == fake_pid),
        "the garbage writer is still a worker"
    );
    assert!(
        pool.stats().deaths >= 1,
        "the violation is counted as a lost worker"
    );
    assert_eq!(pool.call(square, 12), Ok(144));
}

#[test]
fn attached_worker_writing_garbage_is_dropped_and_its_items_retried() {
    let _watchdog = watchdog("attached_worker_writing_garbage_is_dropped_and_its_items_retried");
    garbage_after_handshake(3);
}

#[test]
fn attached_worker_writing_garbage_fails_only_its_items() {
    let _watchdog = watchdog("attached_worker_writing_garbage_fails_only_its_items");
    garbage_after_handshake(0);
}

/// Whether process `pid` still exists (a zombie counts: the pool must have reaped it).
fn exists(pid: u32) -> bool {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap());
    nix::sys::signal::kill(pid, None).is_ok()
}

/// Workers that stopped reading because they spin in a busy loop, next to one that is already
/// dead (SIGKILLed just before), are all gone once `terminate` (directly, after a
/// `shutdown_timeout` that gave up, or from `Drop` during a panic) returns.
#[test]
fn terminate_ends_busy_looping_and_dead_workers_leaving_no_process() {
    let _watchdog = watchdog("terminate_ends_busy_looping_and_dead_workers_leaving_no_process");
    for end in [
        "terminate",
        "shutdown_timeout_then_terminate",
        "drop_while_panicking",
    ] {
        let mut pids = Vec::new();
        let mut busy = Vec::new();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let pool = builder(3).build().expect("the pool starts");
            // Ten minutes of spinning each: only killing ends them.
            busy = (0..3)
                .map(|_| pool.submit(procpool::builtin::spin_for, 600_000_000))
                .collect();
            for handle in &busy {
                crate::util::wait_running(handle);
            }
            let victim = pool.stats().workers[0].pid;
            crate::util::signal(victim, nix::sys::signal::Signal::SIGKILL);
            pids = pool.stats().workers.iter().map(|w| w.pid).collect();
            pids.push(victim);
            match end {
                "terminate" => pool.terminate(),
                "shutdown_timeout_then_terminate" => {
                    assert!(
                        !pool.shutdown_timeout(Duration::from_millis(50)),
                        "{end}: spinning work cannot be drained"
                    );
                    pool.terminate();
                }
                _ => panic!("test panic with a spinning pool"),
            }
        }));
        assert_eq!(caught.is_err(), end == "drop_while_panicking", "{end}");
        for pid in &pids {
            assert!(!exists(*pid), "{end}: process {pid} outlived its pool");
        }
        for handle in busy {
            match handle.result() {
                Err(procpool::TaskError::Terminated | procpool::TaskError::WorkerDied { .. }) => {}
                other => panic!("{end}: a spinning task ended with {other:?}"),
            }
        }
    }
}

/// A peer that passes the handshake, takes a call batch and then never answers.
///
/// Its mailbox never leaves `Idle`, yet it holds a chunk: the timeout watchdog does not trust
/// such a worker, so it times the first item the worker holds and kills the worker when the
/// item's timeout passes. No item had started (the mailbox says so), so none is blamed: all
/// are re-queued and the pool's own worker finishes them (regression test for a gap found
/// while writing issue 6's guarantees: the watchdog used to trust `Idle`, so the call waited
/// until the fake gave up by itself).
#[test]
fn attached_worker_that_never_answers_is_killed_at_the_timeout() {
    let _watchdog = watchdog("attached_worker_that_never_answers_is_killed_at_the_timeout");
    let Attached {
        pool,
        mut fake,
        _dir,
        ..
    } = attach_fake(builder(1).chunksize(4), "mute_after_handshake");
    let outcomes: Vec<_> = pool
        .task(square)
        .timeout(Duration::from_millis(500))
        .map(0..400u64)
        .collect();
    let status = fake.0.wait().expect("the fake ended");
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the mute worker is killed for the timeout, not left to give up by itself ({status:?})"
    );
    assert_squares(outcomes);
    assert_eq!(pool.call(square, 5), Ok(25));
}

/// A peer that passes the handshake, takes a call batch and never answers, while the call has
/// no timeout: it does not answer the pool's liveness pings either (it runs no heartbeat), so
/// the pool kills it after `liveness_timeout`, and since its mailbox shows that no item had
/// started, its items are re-queued and every item ends with its correct value.
#[test]
fn attached_worker_that_never_answers_is_killed_without_a_timeout() {
    let _watchdog = watchdog("attached_worker_that_never_answers_is_killed_without_a_timeout");
    let Attached {
        pool,
        mut fake,
        fake_pid,
        _dir,
    } = attach_fake(
        builder(1)
            .liveness_timeout(Duration::from_millis(300))
            .chunksize(4),
        "mute_after_handshake",
    );
    let outcomes: Vec<_> = pool.map(square, 0..400u64).collect();
    let status = fake.0.wait().expect("the fake ended");
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the mute worker is killed as unresponsive, not left to give up by itself ({status:?})"
    );
    assert_squares(outcomes);
    assert!(!pool.stats().workers.iter().any(|w| w.pid == fake_pid));
    assert_eq!(pool.call(square, 5), Ok(25));
}

/// A peer that, while holding a chunk, floods the pool with well-formed outcome frames for a
/// chunk it was never given: the first one is a protocol violation, so the pool disconnects it
/// (counted as a death); it had not marked an item as running, so its items are re-queued and
/// every item ends with its correct value, even without retries.
#[test]
fn attached_worker_sending_outcomes_for_a_foreign_chunk_is_dropped() {
    let _watchdog = watchdog("attached_worker_sending_outcomes_for_a_foreign_chunk_is_dropped");
    let Attached {
        pool,
        mut fake,
        fake_pid,
        _dir,
    } = attach_fake(builder(1).chunksize(4), "foreign_outcomes");
    let outcomes: Vec<_> = pool.map(square, 0..400u64).collect();
    wait_refused(&mut fake, "foreign_outcomes");
    assert_squares(outcomes);
    let stats = pool.stats();
    assert!(!stats.workers.iter().any(|w| w.pid == fake_pid));
    assert!(
        stats.deaths >= 1,
        "the violation is counted as a lost worker"
    );
    assert_eq!(pool.call(square, 6), Ok(36));
}

/// A peer that floods the pool with 200,000 unsolicited (valid) Pong frames while a map runs:
/// the pool neither crashes nor hangs, and once the flooder leaves, the items it was given are
/// re-queued (it never marked one as running) and every item ends with its correct value.
#[test]
fn attached_worker_flooding_the_pool_cannot_corrupt_results() {
    let _watchdog = watchdog("attached_worker_flooding_the_pool_cannot_corrupt_results");
    let Attached {
        pool,
        mut fake,
        fake_pid,
        _dir,
    } = attach_fake(builder(1).chunksize(4), "pong_flood");
    // The flood throttles on the ring, so the pool reads it for a while after registering it
    // (attach_fake waited until it was registered).
    let outcomes: Vec<_> = pool.map(square, 0..2_000u64).collect();
    let status = fake.0.wait().expect("the flooder ended");
    assert!(
        status.code() == Some(0) || status.signal() == Some(libc::SIGKILL),
        "{status:?}"
    );
    assert_squares(outcomes);
    assert!(!pool.stats().workers.iter().any(|w| w.pid == fake_pid));
    assert_eq!(pool.call(square, 9), Ok(81));
}
