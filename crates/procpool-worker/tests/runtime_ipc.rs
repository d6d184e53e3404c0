//! The worker runtime over a real procpool-ipc channel, parent and worker on two threads of
//! this process (the cross-process tests are `process_*.rs`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use procpool_ipc::{ChannelConfig, Endpoint, Mailbox};
use procpool_worker::protocol::{self, FromWorker, RawOutcome, Setup};
use procpool_worker::{
    AlignedVec, FailureKind, RunOptions, Task, TaskFailure, WorkerError, builtin, run_worker,
};

const WATCHDOG: Duration = Duration::from_secs(30);

/// Set by `yield_mid_chunk_reports_the_exact_next_index` to let `gate` return.
static GATE_OPEN: AtomicBool = AtomicBool::new(false);

/// Blocks on item value 2 until the gate opens (watchdog: 30 s).
#[procpool_worker::task(crate = procpool_worker)]
fn gate(x: u64) -> u64 {
    if x == 2 {
        let start = Instant::now();
        // Acquire pairs with the Release store in the test that opens the gate.
        while !GATE_OPEN.load(Ordering::Acquire) && start.elapsed() < WATCHDOG {
            thread::sleep(Duration::from_millis(1));
        }
    }
    x * 10
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
struct Table {
    factor: u64,
}

#[procpool_worker::task(crate = procpool_worker)]
fn make_table(factor: u64) -> Table {
    Table { factor }
}

#[procpool_worker::task(crate = procpool_worker)]
fn scale(x: u64) -> Option<u64> {
    procpool_worker::worker_state::<Table>().map(|table| x * table.factor)
}

#[procpool_worker::task(crate = procpool_worker)]
fn refuse_to_start(reason: &str) -> Result<Table, String> {
    Err(format!("cannot start: {reason}"))
}

/// The parent side of one in-process worker.
struct Parent {
    endpoint: Endpoint,
    mailbox: Mailbox,
    worker: Option<thread::JoinHandle<Result<(), WorkerError>>>,
    frame: AlignedVec,
}

impl Parent {
    fn start() -> Self {
        let (endpoint, handoff) = Endpoint::create(&ChannelConfig::new()).expect("channel");
        let mailbox = endpoint.mailbox();
        let worker = thread::spawn(move || {
            let endpoint = Endpoint::open(handoff).expect("opens");
            run_worker(endpoint, RunOptions::default())
        });
        Self {
            endpoint,
            mailbox,
            worker: Some(worker),
            frame: AlignedVec::new(),
        }
    }

    fn setup(&mut self, setup: &Setup) {
        protocol::encode_setup(setup, &mut self.frame).expect("encodes");
        self.send();
    }

    /// Setup without initializer, Hello, Ready.
    fn ready() -> Self {
        let mut parent = Self::start();
        parent.setup(&Setup {
            worker_index: 0,
            initializer: None,
        });
        parent.expect_hello();
        parent.expect_ready();
        parent
    }

    fn expect_hello(&mut self) {
        let frame = self.recv_frame();
        let info = protocol::check_hello(&frame, procpool_worker::fingerprint()).expect("hello");
        assert_eq!(info.pid, std::process::id());
        assert_eq!(info.task_count as usize, procpool_worker::entries().len());
    }

    fn expect_ready(&mut self) {
        let frame = self.recv_frame();
        assert!(matches!(
            protocol::parse_from_worker(&frame),
            Ok(FromWorker::Ready)
        ));
    }

    fn send(&mut self) {
        self.endpoint.sender().send(&self.frame).expect("sends");
    }

    fn call<T: Task>(&mut self, chunk_id: u64, first_index: u64, args: &[T::Args]) {
        protocol::encode_call_batch::<T>(chunk_id, first_index, args, &mut self.frame)
            .expect("encodes");
        self.send();
    }

    /// Copies the next frame out of the ring.
    fn recv_frame(&mut self) -> AlignedVec {
        let frame = self
            .endpoint
            .receiver()
            .recv_timeout(WATCHDOG)
            .expect("worker answers");
        let mut copy = AlignedVec::with_capacity(frame.len());
        copy.extend_from_slice(&frame);
        copy
    }

    /// Outcomes of `chunk_id` until `n` arrived: (index, decoded outcome).
    fn outcomes<T: Task>(
        &mut self,
        chunk_id: u64,
        n: usize,
    ) -> Vec<(u64, Result<T::Output, TaskFailure>)> {
        let mut all = Vec::new();
        while all.len() < n {
            let frame = self.recv_frame();
            let Ok(FromWorker::Outcomes(batch)) = protocol::parse_from_worker(&frame) else {
                panic!("expected outcomes");
            };
            assert_eq!(batch.chunk_id, chunk_id);
            for (index, outcome) in protocol::decode_outputs::<T>(&batch) {
                all.push((index, outcome.expect("decodes")));
            }
        }
        all
    }

    fn shutdown(mut self) -> Result<(), WorkerError> {
        protocol::encode_shutdown(&mut self.frame);
        self.send();
        self.join()
    }

    fn join(&mut self) -> Result<(), WorkerError> {
        self.worker
            .take()
            .expect("joined once")
            .join()
            .expect("worker thread does not panic")
    }
}

#[test]
fn runtime_handshake_calls_ping_and_shutdown() {
    let mut parent = Parent::ready();
    let args: Vec<u64> = (0..5000).collect();
    parent.call::<builtin::add_one>(1, 0, &args);
    let got = parent.outcomes::<builtin::add_one>(1, 5000);
    for (i, (index, outcome)) in got.into_iter().enumerate() {
        assert_eq!((index, outcome), (i as u64, Ok(i as u64 + 1)));
    }
    protocol::encode_ping(5, &mut parent.frame);
    parent.send();
    let frame = parent.recv_frame();
    assert!(matches!(
        protocol::parse_from_worker(&frame),
        Ok(FromWorker::Pong { nonce: 5 })
    ));
    assert_eq!(parent.mailbox.load(0), 0, "idle between chunks");
    parent.shutdown().expect("clean exit");
}

#[test]
fn runtime_unknown_task_fails_each_item_and_the_next_batch_works() {
    let mut parent = Parent::ready();
    protocol::encode_call_batch::<builtin::add_one>(2, 0, &[1, 2, 3], &mut parent.frame)
        .expect("encodes");
    parent.frame[16..24].copy_from_slice(&42_u64.to_le_bytes());
    parent.send();
    let frame = parent.recv_frame();
    let Ok(FromWorker::Outcomes(batch)) = protocol::parse_from_worker(&frame) else {
        panic!("expected outcomes");
    };
    assert_eq!(batch.len(), 3);
    for run in batch.runs() {
        let RawOutcome::Failure(bytes) = run.outcome else {
            panic!("expected a failure");
        };
        assert_eq!(
            protocol::decode_failure(bytes).expect("decodes").kind,
            FailureKind::UnknownTask
        );
    }
    parent.call::<builtin::add_one>(3, 0, &[9]);
    assert_eq!(parent.outcomes::<builtin::add_one>(3, 1), vec![(0, Ok(10))]);
    parent.shutdown().expect("clean exit");
}

#[test]
fn runtime_panic_is_reported_and_the_next_item_succeeds() {
    let mut parent = Parent::ready();
    parent.call::<builtin::panic>(4, 0, &["kaboom".to_owned()]);
    let got = parent.outcomes::<builtin::panic>(4, 1);
    let (0, Err(failure)) = &got[0] else {
        panic!("expected a panic: {got:?}");
    };
    assert_eq!(failure.kind, FailureKind::Panicked);
    assert_eq!(failure.message, "kaboom");
    let location = failure.location.as_deref().expect("location");
    assert!(location.contains("builtin.rs"), "{location}");
    parent.call::<builtin::add_one>(5, 0, &[1]);
    assert_eq!(parent.outcomes::<builtin::add_one>(5, 1), vec![(0, Ok(2))]);
    parent.shutdown().expect("clean exit");
}

#[test]
fn runtime_err_becomes_failed_with_its_message() {
    let mut parent = Parent::ready();
    parent.call::<builtin::fail>(6, 0, &["out of cheese".to_owned()]);
    assert_eq!(
        parent.outcomes::<builtin::fail>(6, 1),
        vec![(
            0,
            Err(TaskFailure::new(FailureKind::Failed, "out of cheese"))
        )]
    );
    parent.shutdown().expect("clean exit");
}

#[test]
fn runtime_initializer_state_is_visible_to_later_tasks() {
    let mut parent = Parent::start();
    let initializer = protocol::encode_initializer::<make_table>(&7).expect("encodes");
    parent.setup(&Setup {
        worker_index: 1,
        initializer: Some(initializer),
    });
    parent.expect_hello();
    parent.expect_ready();
    parent.call::<scale>(7, 0, &[1, 2, 3]);
    assert_eq!(
        parent.outcomes::<scale>(7, 3),
        vec![(0, Ok(Some(7))), (1, Ok(Some(14))), (2, Ok(Some(21)))]
    );
    parent.shutdown().expect("clean exit");
}

#[test]
fn runtime_initializer_failure_is_reported_as_init_failed() {
    let mut parent = Parent::start();
    let initializer =
        protocol::encode_initializer::<refuse_to_start>(&"no disk".to_owned()).expect("encodes");
    parent.setup(&Setup {
        worker_index: 2,
        initializer: Some(initializer),
    });
    parent.expect_hello();
    let frame = parent.recv_frame();
    let Ok(FromWorker::InitFailed(failure)) = protocol::parse_from_worker(&frame) else {
        panic!("expected InitFailed");
    };
    assert_eq!(
        failure,
        TaskFailure::new(FailureKind::Failed, "cannot start: no disk")
    );
    assert!(matches!(parent.join(), Err(WorkerError::InitFailed(f)) if f == failure));
}

#[test]
fn runtime_yield_mid_chunk_reports_the_exact_next_index() {
    let mut parent = Parent::ready();
    let chunk_id = 70;
    let args: Vec<u64> = (0..10).collect();
    parent.call::<gate>(chunk_id, 500, &args);
    // Wait until the worker runs item 2 (the gate), as the mailbox says.
    let start = Instant::now();
    while (parent.mailbox.load(0), parent.mailbox.load(1)) != (chunk_id + 1, 2) {
        assert!(start.elapsed() < WATCHDOG, "worker never reached item 2");
        thread::yield_now();
    }
    parent.mailbox.store(2, chunk_id + 1);
    // Release pairs with the Acquire load in `gate`; the yield request above is ordered before.
    GATE_OPEN.store(true, Ordering::Release);
    let got = parent.outcomes::<gate>(chunk_id, 3);
    assert_eq!(
        got,
        vec![(500, Ok(0)), (501, Ok(10)), (502, Ok(20))],
        "items before the yield point ran, none after"
    );
    let frame = parent.recv_frame();
    assert!(matches!(
        protocol::parse_from_worker(&frame),
        Ok(FromWorker::Yielded {
            chunk_id: 70,
            next_index: 503
        })
    ));
    assert_eq!(parent.mailbox.load(2), 0, "the worker consumed the request");
    parent.call::<builtin::add_one>(chunk_id + 1, 0, &[1]);
    assert_eq!(
        parent.outcomes::<builtin::add_one>(chunk_id + 1, 1),
        vec![(0, Ok(2))]
    );
    parent.shutdown().expect("clean exit");
}

#[test]
fn runtime_parent_gone_ends_the_worker() {
    let mut parent = Parent::ready();
    let worker = parent.worker.take().expect("running");
    drop(parent);
    assert!(matches!(
        worker.join().expect("no panic"),
        Err(WorkerError::Disconnected)
    ));
}

#[test]
fn runtime_publishes_its_cpu_and_handles_a_waiter_on_any_cpu() {
    let mut parent = Parent::ready();
    assert_eq!(parent.mailbox.load(6), 0, "no chunk yet: no CPU");
    // A waiter on every possible CPU in turn (the worker yields its core only to one on its
    // own CPU, right after publishing): every chunk still completes.
    let cpus = std::thread::available_parallelism().map_or(1, usize::from) as u64;
    for chunk in 1..=cpus + 1 {
        parent.mailbox.store(7, chunk);
        parent.call::<builtin::add_one>(chunk, 0, &[chunk]);
        assert_eq!(
            parent.outcomes::<builtin::add_one>(chunk, 1),
            vec![(0, Ok(chunk + 1))]
        );
        // Word 6 is the worker's CPU plus one (0 would mean `sched_getcpu` failed, which
        // Linux does not do).
        assert_ne!(parent.mailbox.load(6), 0, "the worker published its CPU");
    }
    parent.shutdown().expect("clean exit");
}

/// `n` bytes that differ from round to round.
fn bytes(n: usize, round: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(round))
        .collect()
}

#[test]
fn runtime_outputs_written_in_place_arrive_exactly() {
    let mut parent = Parent::ready();
    // Large outputs go into the worker's pads, written in place; more rounds than pads.
    for round in 0..5_u8 {
        let chunk = 10 + u64::from(round);
        let data = bytes((3 << 20) + usize::from(round), round);
        parent.call::<builtin::echo_bytes>(chunk, 0, std::slice::from_ref(&data));
        let got = parent.outcomes::<builtin::echo_bytes>(chunk, 1);
        assert!(got == vec![(0, Ok(data))], "round {round}");
    }
    // Plain outputs, in place into the ring, over several flushes.
    let args: Vec<u64> = (0..40_000).collect();
    parent.call::<builtin::add_one>(20, 0, &args);
    let got = parent.outcomes::<builtin::add_one>(20, args.len());
    for (i, (index, outcome)) in got.into_iter().enumerate() {
        assert_eq!((index, outcome), (i as u64, Ok(i as u64 + 1)));
    }
    // Many small buffers are too many parts to measure: the encoder's path, same outcomes.
    let small: Vec<Vec<u8>> = (0..500).map(|i| bytes(i % 7, i as u8)).collect();
    parent.call::<builtin::echo_bytes>(21, 0, &small);
    let got = parent.outcomes::<builtin::echo_bytes>(21, small.len());
    let expected: Vec<_> = small
        .into_iter()
        .enumerate()
        .map(|(i, data)| (i as u64, Ok(data)))
        .collect();
    assert!(got == expected);
    parent.shutdown().expect("clean exit");
}

#[test]
fn runtime_output_limit_still_holds_for_outputs_that_could_go_in_place() {
    let mut parent = Parent::start();
    // Word 5: the largest encoded output of one item (stored before `Setup`, as the pool does).
    parent.mailbox.store(5, 4096);
    parent.setup(&Setup {
        worker_index: 0,
        initializer: None,
    });
    parent.expect_hello();
    parent.expect_ready();
    let args = vec![bytes(100, 1), bytes(1 << 20, 2), bytes(200, 3)];
    parent.call::<builtin::echo_bytes>(30, 0, &args);
    let got = parent.outcomes::<builtin::echo_bytes>(30, 3);
    assert!(got[0] == (0, Ok(args[0].clone())));
    assert!(matches!(
        &got[1],
        (1, Err(failure)) if matches!(failure.kind, FailureKind::TooLarge(_))
    ));
    assert!(got[2] == (2, Ok(args[2].clone())));
    parent.shutdown().expect("clean exit");
}

#[test]
fn runtime_reports_how_long_items_kept_it_busy_without_the_wait_to_be_read() {
    let mut parent = Parent::ready();
    // Word 0 is the running chunk plus one; the worker clears it once the chunk's last frame
    // is published, so a sentinel tells when that happened.
    parent.mailbox.store(0, u64::MAX);
    let sent = Instant::now();
    parent.call::<builtin::spin_for>(1, 0, &[3_000, 3_000]);
    while parent.mailbox.load(0) != 0 {
        assert!(sent.elapsed() < WATCHDOG, "the chunk never ended");
        thread::yield_now();
    }
    let ended = sent.elapsed();
    // The frames wait to be read; the time they wait is not the worker's.
    thread::sleep(Duration::from_millis(50));
    let mut busy = Duration::ZERO;
    let mut outcomes = 0;
    while outcomes < 2 {
        let frame = parent.recv_frame();
        let Ok(FromWorker::Outcomes(batch)) = protocol::parse_from_worker(&frame) else {
            panic!("expected outcomes");
        };
        outcomes += batch.len();
        busy += batch
            .worker_busy()
            .expect("the runtime measures every frame");
    }
    let read = sent.elapsed();
    // Two items of 3 ms of spinning each (a wall-clock spin, so at least that on any machine).
    assert!(busy >= Duration::from_millis(6), "busy {busy:?}");
    // Measured inside the window from the send to the last frame's publication.
    assert!(
        busy <= ended,
        "busy {busy:?}, chunk ended {ended:?} after the send"
    );
    assert!(read >= busy + Duration::from_millis(50));
    parent.shutdown().expect("clean exit");
}
