//! Real worker processes (the `procpool-worker` binary) started with both start methods: the
//! handshake, built-in calls, clean exits, and how each kind of worker death is observed.

mod process_support;

use std::time::Duration;

use process_support::{Driver, spawner, start, wait};
use procpool_worker::{StartMethod, WorkerExit, builtin};

const METHODS: [StartMethod; 2] = [StartMethod::Spawn, StartMethod::ForkServer];

/// Runs a fixed set of calls and renders every outcome, so two workers can be compared.
fn run_script(driver: &mut Driver) -> Vec<String> {
    let mut log = Vec::new();
    let add = driver.call::<builtin::add_one>(1, &[0, 1, 41, u64::MAX - 1]);
    log.push(format!("add_one {add:?}"));
    let echo =
        driver.call::<builtin::echo_bytes>(2, &[b"hello".to_vec(), Vec::new(), vec![7; 100_000]]);
    log.push(format!(
        "echo_bytes {:?}",
        echo.iter()
            .map(|r| r.as_ref().map(Vec::len))
            .collect::<Vec<_>>()
    ));
    let fail = driver.call::<builtin::fail>(3, &["boom".to_owned()]);
    log.push(format!("fail {fail:?}"));
    let panic = driver.call::<builtin::panic>(4, &["oops".to_owned()]);
    log.push(format!("panic {panic:?}"));
    let after = driver.call::<builtin::add_one>(5, &[1]);
    log.push(format!("after panic {after:?}"));
    log
}

#[test]
fn spawned_and_forked_workers_give_the_same_results() {
    let mut logs = Vec::new();
    for method in METHODS {
        let spawner = spawner(method);
        let (mut worker, mut driver) = start(&spawner);
        let hello = driver.handshake(3);
        assert_eq!(
            hello.pid,
            worker.pid(),
            "{method:?}: Hello names the process the handle watches"
        );
        let log = run_script(&mut driver);
        driver.shutdown();
        assert_eq!(
            wait(&mut worker),
            WorkerExit::Code(0),
            "{method:?}: clean exit after Shutdown"
        );
        logs.push(log);
    }
    // The values themselves, once.
    let log = &logs[0];
    assert_eq!(
        log[0],
        format!(
            "add_one {:?}",
            [Ok::<u64, ()>(1), Ok(2), Ok(42), Ok(u64::MAX)]
        )
    );
    assert_eq!(log[1], "echo_bytes [Ok(5), Ok(0), Ok(100000)]");
    assert!(
        log[2].contains("Failed") && log[2].contains("boom"),
        "{}",
        log[2]
    );
    assert!(
        log[3].contains("Panicked") && log[3].contains("oops"),
        "{}",
        log[3]
    );
    assert_eq!(log[4], "after panic [Ok(2)]");
    assert_eq!(
        logs[0], logs[1],
        "Spawn and ForkServer workers answer alike"
    );
}

#[test]
fn worker_exits_cleanly_when_the_parent_closes_the_channel() {
    for method in METHODS {
        let spawner = spawner(method);
        let (mut worker, mut driver) = start(&spawner);
        driver.handshake(0);
        drop(driver);
        assert_eq!(wait(&mut worker), WorkerExit::Code(0), "{method:?}");
    }
}

#[test]
fn worker_deaths_are_observed_with_their_exit_status() {
    for method in METHODS {
        let spawner = spawner(method);

        let (mut worker, mut driver) = start(&spawner);
        driver.handshake(0);
        driver.send_calls::<builtin::abort>(1, &[()]);
        assert_eq!(
            wait(&mut worker),
            WorkerExit::Signal(libc::SIGABRT),
            "{method:?}: abort()"
        );

        let (mut worker, mut driver) = start(&spawner);
        driver.handshake(0);
        driver.send_calls::<builtin::segfault>(1, &[()]);
        assert_eq!(
            wait(&mut worker),
            WorkerExit::Signal(libc::SIGSEGV),
            "{method:?}: segfault()"
        );

        let (mut worker, mut driver) = start(&spawner);
        driver.handshake(0);
        driver.send_calls::<builtin::exit>(1, &[42]);
        assert_eq!(
            wait(&mut worker),
            WorkerExit::Code(42),
            "{method:?}: exit(42)"
        );

        // SIGKILL in the middle of a task.
        let (mut worker, mut driver) = start(&spawner);
        driver.handshake(0);
        driver.send_calls::<builtin::sleep_for>(1, &[60_000]);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            worker.try_wait().expect("try_wait"),
            None,
            "{method:?}: busy in sleep_for"
        );
        worker.kill(libc::SIGKILL).expect("kill");
        assert_eq!(
            wait(&mut worker),
            WorkerExit::Signal(libc::SIGKILL),
            "{method:?}: SIGKILL"
        );
    }
}

#[test]
fn pidfd_reports_the_death_of_a_forked_worker() {
    use nix::poll::{PollFd, PollFlags, poll};
    let spawner = spawner(StartMethod::ForkServer);
    let (mut worker, mut driver) = start(&spawner);
    driver.handshake(0);
    let mut fds = [PollFd::new(worker.pidfd(), PollFlags::POLLIN)];
    assert_eq!(
        poll(&mut fds, 0u8).expect("poll"),
        0,
        "alive: the pidfd is not readable"
    );
    driver.send_calls::<builtin::exit>(1, &[5]);
    let mut fds = [PollFd::new(worker.pidfd(), PollFlags::POLLIN)];
    assert_eq!(
        poll(&mut fds, 20_000u16).expect("poll"),
        1,
        "watchdog: the pidfd became readable"
    );
    assert_eq!(worker.wait().expect("wait"), WorkerExit::Code(5));
}

#[test]
fn fork_server_runs_many_workers_and_reaps_each() {
    let spawner = spawner(StartMethod::ForkServer);
    spawner.start().expect("start the fork server");
    let server_pid = spawner
        .fork_server()
        .expect("server")
        .expect("ForkServer")
        .pid();
    let mut workers: Vec<_> = (0..6).map(|_| start(&spawner)).collect();
    for (index, (worker, driver)) in workers.iter_mut().enumerate() {
        let hello = driver.handshake(index as u32);
        assert_eq!(hello.pid, worker.pid());
        assert_eq!(
            driver.call::<builtin::add_one>(1, &[index as u64]),
            [Ok(index as u64 + 1)]
        );
    }
    // Ends of every kind, in a scrambled order.
    let (mut w0, mut d0) = workers.remove(0);
    let (mut w1, _d1) = workers.remove(0);
    let (mut w2, mut d2) = workers.remove(0);
    d2.send_calls::<builtin::exit>(9, &[3]);
    w1.kill(libc::SIGKILL).expect("kill");
    d0.shutdown();
    assert_eq!(wait(&mut w1), WorkerExit::Signal(libc::SIGKILL));
    assert_eq!(wait(&mut w0), WorkerExit::Code(0));
    assert_eq!(wait(&mut w2), WorkerExit::Code(3));
    let pids: Vec<u32> = workers.iter().map(|(worker, _)| worker.pid()).collect();
    // Dropping the remaining handles kills and reaps them through the server.
    drop(workers);
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "forked worker {pid} was reaped"
        );
    }
    // A new worker after all that still works, through the same server.
    let (_worker, mut driver) = start(&spawner);
    driver.handshake(9);
    assert_eq!(driver.call::<builtin::add_one>(1, &[9]), [Ok(10)]);
    assert_eq!(
        spawner
            .fork_server()
            .expect("server")
            .expect("ForkServer")
            .pid(),
        server_pid,
        "the same server"
    );
}

#[test]
fn dropping_the_spawner_and_its_workers_stops_the_fork_server() {
    let spawner = spawner(StartMethod::ForkServer);
    let (worker, mut driver) = start(&spawner);
    driver.handshake(0);
    let server_pid = spawner
        .fork_server()
        .expect("server")
        .expect("ForkServer")
        .pid();
    let worker_pid = worker.pid();
    drop(spawner);
    // The worker keeps its server alive.
    assert_eq!(driver.call::<builtin::add_one>(1, &[1]), [Ok(2)]);
    assert!(std::path::Path::new(&format!("/proc/{server_pid}")).exists());
    drop(worker);
    assert!(
        !std::path::Path::new(&format!("/proc/{worker_pid}")).exists(),
        "the worker was reaped"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{server_pid}")).exists(),
        "the server was reaped"
    );
}

#[test]
fn a_killed_fork_server_is_replaced_on_the_next_spawn() {
    // The worker of the killed server is orphaned: have it reparented to this process rather
    // than to init, which may not reap in a container.
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) only changes where orphans are reparented.
    let res = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) };
    assert_eq!(res, 0, "PR_SET_CHILD_SUBREAPER");
    let spawner = spawner(StartMethod::ForkServer);
    let (mut orphan, mut driver) = start(&spawner);
    driver.handshake(0);
    let first = spawner.fork_server().expect("server").expect("ForkServer");
    let first_pid = first.pid();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the server");
    // Its worker dies with it (parent-death signal); nobody is left to report how.
    assert_eq!(wait(&mut orphan), WorkerExit::Unknown);
    // As a child subreaper this process inherited the orphan: reap it, and see how it died.
    let mut status = 0;
    // SAFETY: waitpid on a pid with a pointer to a local.
    let reaped = unsafe { libc::waitpid(orphan.pid() as libc::pid_t, &mut status, 0) };
    assert_eq!(
        reaped,
        orphan.pid() as libc::pid_t,
        "the orphan was reparented to the test"
    );
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
        "the orphan died by its parent-death signal (status {status:#x})"
    );
    let deadline = std::time::Instant::now() + process_support::WATCHDOG;
    while first.is_alive() {
        assert!(
            std::time::Instant::now() < deadline,
            "watchdog: the server never looked dead"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let (_worker, mut driver) = start(&spawner);
    driver.handshake(0);
    assert_eq!(driver.call::<builtin::add_one>(1, &[1]), [Ok(2)]);
    let second = spawner.fork_server().expect("server").expect("ForkServer");
    assert_ne!(second.pid(), first_pid, "a new server");
}

#[test]
fn a_program_that_is_no_worker_is_refused_by_the_fork_server_start() {
    // `/bin/true` never enters fork-server mode: it exits at once.
    let spawner = procpool_worker::WorkerSpawner::new(StartMethod::ForkServer).program("/bin/true");
    let err = spawner.start().expect_err("no fork server");
    let message = err.to_string();
    assert!(message.contains("before it was ready"), "{message}");
}

/// The "Max address space" line of /proc/<pid>/limits, e.g. `536870912 536870912`.
fn address_space_limit(pid: u32) -> String {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max address space"))
        .expect("an address-space line");
    line.split_whitespace()
        .skip(3)
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn memory_limit_makes_big_allocations_fail_in_the_worker_only() {
    const LIMIT: u64 = 512 << 20;
    for method in METHODS {
        let spawner = spawner(method).memory_limit(LIMIT);
        let (mut worker, mut driver) = start(&spawner);
        driver.handshake(0);
        assert_eq!(
            address_space_limit(worker.pid()),
            format!("{LIMIT} {LIMIT}"),
            "{method:?}"
        );
        if let Some(server) = spawner.fork_server().expect("server") {
            assert_eq!(
                address_space_limit(server.pid()),
                address_space_limit(std::process::id()),
                "the server itself keeps its parent's limit"
            );
        }
        let outcomes = driver.call::<builtin::allocate>(1, &[LIMIT * 2, 1 << 20]);
        match &outcomes[0] {
            Err(failure) => assert!(
                failure.message.contains("cannot allocate"),
                "{method:?}: {failure:?}"
            ),
            Ok(sum) => panic!("{method:?}: allocating twice the limit succeeded ({sum})"),
        }
        assert!(
            outcomes[1].is_ok(),
            "{method:?}: a small allocation still works: {:?}",
            outcomes[1]
        );
        driver.shutdown();
        assert_eq!(wait(&mut worker), WorkerExit::Code(0), "{method:?}");
    }
}

#[test]
fn a_killer_signals_the_worker_from_another_thread_while_the_handle_waits() {
    for method in METHODS {
        let spawner = spawner(method);
        let (mut worker, mut driver) = start(&spawner);
        driver.handshake(0);
        driver.send_calls::<builtin::sleep_for>(1, &[60_000]);
        let killer = worker.killer().expect("killer");
        assert_eq!(killer.pid(), worker.pid());
        let exit = std::thread::scope(|scope| {
            let waiter = scope.spawn(|| wait(&mut worker));
            std::thread::sleep(Duration::from_millis(50));
            killer.kill(libc::SIGKILL).expect("kill");
            waiter.join().expect("waiter")
        });
        assert_eq!(exit, WorkerExit::Signal(libc::SIGKILL), "{method:?}");
        killer
            .kill(libc::SIGKILL)
            .expect("signalling a reaped worker is no error");
    }
}

#[test]
fn spawning_right_after_the_fork_server_died_still_succeeds() {
    // However the death is noticed (before the request, or by the request failing to arrive),
    // the spawner starts a fresh server and serves the same channel with it.
    let spawner = spawner(StartMethod::ForkServer);
    for round in 0..3 {
        let server = spawner.fork_server().expect("server").expect("ForkServer");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(server.pid() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill the server");
        let (_worker, mut driver) = start(&spawner);
        driver.handshake(round);
        assert_eq!(
            driver.call::<builtin::add_one>(1, &[u64::from(round)]),
            [Ok(u64::from(round) + 1)]
        );
    }
}
