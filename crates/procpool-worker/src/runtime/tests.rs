//! Run-loop tests over an in-memory transport (the ipc-backed tests are in `tests/runtime_*.rs`).

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use super::*;
use crate::builtin;
use crate::protocol::{FromWorker, InitializerCall, Setup};
use crate::registry::Task;
use crate::task;

impl Inbox for mpsc::Receiver<AlignedVec> {
    type Frame<'a> = AlignedVec;

    fn recv(&mut self) -> Result<AlignedVec, WorkerError> {
        mpsc::Receiver::recv(self).map_err(|_| WorkerError::Disconnected)
    }
}

impl Outbox for mpsc::Sender<AlignedVec> {
    fn send(&mut self, frame: &[u8]) -> Result<(), WorkerError> {
        let mut copy = AlignedVec::with_capacity(frame.len());
        copy.extend_from_slice(frame);
        mpsc::Sender::send(self, copy).map_err(|_| WorkerError::Disconnected)
    }
}

/// Mailbox of the worker in `yield_mid_chunk_reports_the_next_index` (its task pokes it).
static YIELD_MAILBOX: LocalMailbox = LocalMailbox::new();
const YIELD_CHUNK: u64 = 55;

#[task(crate = crate)]
fn panic_on_two(x: u64) -> u64 {
    assert_ne!(x, 2, "two is bad");
    x
}

#[task(crate = crate)]
fn yield_after_four(x: u64) -> u64 {
    if x == 4 {
        YIELD_MAILBOX.store(word::YIELD, YIELD_CHUNK + 1);
    }
    x
}

/// Mailbox of the worker in `a_half_split_runs_the_first_half_then_yields`.
static HALF_MAILBOX: LocalMailbox = LocalMailbox::new();
const HALF_CHUNK: u64 = 77;

/// Item 2 asks for a half split of its own chunk.
#[task(crate = crate)]
fn half_yield_at_two(x: u64) -> u64 {
    if x == 2 {
        HALF_MAILBOX.store(word::YIELD, (HALF_CHUNK + 1) | protocol::YIELD_HALF);
    }
    x
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
struct Greeting {
    prefix: String,
}

#[task(crate = crate)]
fn init_greeting(prefix: &str) -> Greeting {
    Greeting {
        prefix: prefix.to_owned(),
    }
}

#[task(crate = crate)]
fn greet(name: &str) -> Option<String> {
    crate::worker_state::<Greeting>().map(|g| format!("{}{name}", g.prefix))
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
struct NeverBuilt;

#[task(crate = crate)]
fn init_refuses() -> Result<NeverBuilt, String> {
    Err("no config".to_owned())
}

/// The parent side of a worker running `run_loop` on a thread.
struct Harness {
    to_worker: Option<mpsc::Sender<AlignedVec>>,
    from_worker: mpsc::Receiver<AlignedVec>,
    worker: Option<thread::JoinHandle<Result<(), WorkerError>>>,
    frame: AlignedVec,
}

impl Harness {
    fn start(mailbox: &'static LocalMailbox, opts: RunOptions) -> Self {
        let (to_worker, mut inbox) = mpsc::channel();
        let (mut outbox, from_worker) = mpsc::channel();
        let worker = thread::spawn(move || {
            run_loop(&mut inbox, &mut outbox, MailboxWords::Local(mailbox), &opts)
        });
        Self {
            to_worker: Some(to_worker),
            from_worker,
            worker: Some(worker),
            frame: AlignedVec::new(),
        }
    }

    /// Starts a worker and completes the handshake.
    fn ready(mailbox: &'static LocalMailbox, opts: RunOptions) -> Self {
        let mut harness = Self::start(mailbox, opts);
        harness.setup(None);
        let hello = harness.recv();
        let info = protocol::check_hello(&hello, registry::fingerprint()).expect("hello");
        assert_eq!(info.pid, std::process::id());
        assert!(matches!(
            protocol::parse_from_worker(&harness.recv()),
            Ok(FromWorker::Ready)
        ));
        harness
    }

    fn setup(&mut self, initializer: Option<InitializerCall>) {
        let setup = Setup {
            worker_index: 2,
            initializer,
        };
        protocol::encode_setup(&setup, &mut self.frame).expect("encodes");
        self.send_frame();
    }

    fn send_frame(&mut self) {
        let frame = std::mem::take(&mut self.frame);
        self.to_worker
            .as_ref()
            .expect("open")
            .send(frame)
            .expect("worker alive");
    }

    fn call<T: Task>(&mut self, chunk_id: u64, first_index: u64, args: &[T::Args]) {
        protocol::encode_call_batch::<T>(chunk_id, first_index, args, &mut self.frame)
            .expect("encodes");
        self.send_frame();
    }

    fn recv(&self) -> AlignedVec {
        self.from_worker
            .recv_timeout(Duration::from_secs(30))
            .expect("worker answers (watchdog: 30 s)")
    }

    /// Receives `Outcomes` frames of `chunk_id` until `n` outcomes arrived.
    fn outcomes<T: Task>(
        &self,
        chunk_id: u64,
        n: usize,
    ) -> Vec<(u64, Result<T::Output, TaskFailure>)> {
        let mut all = Vec::new();
        while all.len() < n {
            let frame = self.recv();
            let FromWorker::Outcomes(batch) = protocol::parse_from_worker(&frame).expect("parses")
            else {
                panic!("expected outcomes");
            };
            assert_eq!(batch.chunk_id, chunk_id);
            assert_eq!(batch.task_id, T::ID);
            for (index, outcome) in protocol::decode_outputs::<T>(&batch) {
                all.push((index, outcome.expect("decodes")));
            }
        }
        all
    }

    fn shutdown(mut self) -> Result<(), WorkerError> {
        protocol::encode_shutdown(&mut self.frame);
        self.send_frame();
        self.join()
    }

    fn join(&mut self) -> Result<(), WorkerError> {
        self.to_worker.take();
        self.worker
            .take()
            .expect("joined once")
            .join()
            .expect("worker thread does not panic")
    }
}

fn local_mailbox() -> &'static LocalMailbox {
    Box::leak(Box::new(LocalMailbox::new()))
}

fn values<O>(outcomes: Vec<(u64, Result<O, TaskFailure>)>) -> Vec<(u64, O)> {
    outcomes
        .into_iter()
        .map(|(index, outcome)| (index, outcome.expect("succeeds")))
        .collect()
}

#[test]
fn handshake_then_add_one_chunk_then_shutdown() {
    let mut worker = Harness::ready(local_mailbox(), RunOptions::default());
    let args: Vec<u64> = (0..100).collect();
    worker.call::<builtin::add_one>(1, 1000, &args);
    let got = values(worker.outcomes::<builtin::add_one>(1, 100));
    let want: Vec<(u64, u64)> = (0..100).map(|i| (1000 + i, i + 1)).collect();
    assert_eq!(got, want);

    protocol::encode_ping(99, &mut worker.frame);
    worker.send_frame();
    assert!(matches!(
        protocol::parse_from_worker(&worker.recv()),
        Ok(FromWorker::Pong { nonce: 99 })
    ));
    worker.shutdown().expect("clean exit");
}

#[test]
fn unknown_task_fails_each_item_and_the_worker_goes_on() {
    let mut worker = Harness::ready(local_mailbox(), RunOptions::default());
    protocol::encode_call_batch::<builtin::add_one>(3, 0, &[1, 2, 3], &mut worker.frame)
        .expect("encodes");
    worker.frame[16..24].copy_from_slice(&0xdead_beef_u64.to_le_bytes());
    worker.send_frame();
    let frame = worker.recv();
    let Ok(FromWorker::Outcomes(batch)) = protocol::parse_from_worker(&frame) else {
        panic!("expected outcomes");
    };
    assert_eq!(
        (batch.chunk_id, batch.task_id, batch.len()),
        (3, 0xdead_beef, 3)
    );
    for run in batch.runs() {
        let protocol::RawOutcome::Failure(bytes) = run.outcome else {
            panic!("expected a failure");
        };
        let failure = protocol::decode_failure(bytes).expect("decodes");
        assert_eq!(failure.kind, FailureKind::UnknownTask);
        assert!(failure.message.contains("00000000deadbeef"));
    }
    worker.call::<builtin::add_one>(4, 0, &[41]);
    assert_eq!(
        values(worker.outcomes::<builtin::add_one>(4, 1)),
        vec![(0, 42)]
    );
    worker.shutdown().expect("clean exit");
}

#[test]
fn panic_is_reported_with_message_and_location_and_the_next_item_succeeds() {
    let mut worker = Harness::ready(local_mailbox(), RunOptions::default());
    worker.call::<panic_on_two>(5, 0, &[1, 2, 3]);
    let got = worker.outcomes::<panic_on_two>(5, 3);
    assert_eq!(got[0], (0, Ok(1)));
    assert_eq!(got[2], (2, Ok(3)));
    let (index, Err(failure)) = &got[1] else {
        panic!("item 1 should have panicked: {got:?}");
    };
    assert_eq!(*index, 1);
    assert_eq!(failure.kind, FailureKind::Panicked);
    assert!(failure.message.contains("two is bad"), "{failure:?}");
    let location = failure.location.as_deref().expect("location");
    assert!(location.contains("runtime/tests.rs"), "{location}");
    worker.shutdown().expect("clean exit");
}

#[test]
fn err_return_becomes_failed_with_its_message() {
    let mut worker = Harness::ready(local_mailbox(), RunOptions::default());
    worker.call::<builtin::fail>(6, 0, &["nope".to_owned(), "again".to_owned()]);
    let got = worker.outcomes::<builtin::fail>(6, 2);
    assert_eq!(
        got,
        vec![
            (0, Err(TaskFailure::new(FailureKind::Failed, "nope"))),
            (1, Err(TaskFailure::new(FailureKind::Failed, "again"))),
        ]
    );
    worker.shutdown().expect("clean exit");
}

#[test]
fn borrowed_arguments_reach_the_task() {
    let mut worker = Harness::ready(local_mailbox(), RunOptions::default());
    let payloads = vec![vec![], vec![1_u8, 2, 3], vec![7; 1000]];
    worker.call::<builtin::echo_bytes>(7, 0, &payloads);
    let got: Vec<Vec<u8>> = values(worker.outcomes::<builtin::echo_bytes>(7, 3))
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(got, payloads);
    worker.shutdown().expect("clean exit");
}

#[test]
fn initializer_state_is_visible_to_later_tasks() {
    let mut worker = Harness::start(local_mailbox(), RunOptions::default());
    let init = protocol::encode_initializer::<init_greeting>(&"hello, ".to_owned()).expect("ok");
    worker.setup(Some(init));
    protocol::check_hello(&worker.recv(), registry::fingerprint()).expect("hello");
    assert!(matches!(
        protocol::parse_from_worker(&worker.recv()),
        Ok(FromWorker::Ready)
    ));
    worker.call::<greet>(8, 0, &["ada".to_owned()]);
    assert_eq!(
        values(worker.outcomes::<greet>(8, 1)),
        vec![(0, Some("hello, ada".to_owned()))]
    );
    let info = crate::current_worker().expect("set by Setup");
    assert_eq!(info.pid, std::process::id());
    worker.shutdown().expect("clean exit");
}

#[test]
fn initializer_failure_is_reported_and_ends_the_worker() {
    let mut worker = Harness::start(local_mailbox(), RunOptions::default());
    let init = protocol::encode_initializer::<init_refuses>(&()).expect("ok");
    worker.setup(Some(init));
    protocol::check_hello(&worker.recv(), registry::fingerprint()).expect("hello");
    let frame = worker.recv();
    let Ok(FromWorker::InitFailed(failure)) = protocol::parse_from_worker(&frame) else {
        panic!("expected InitFailed");
    };
    assert_eq!(failure, TaskFailure::new(FailureKind::Failed, "no config"));
    assert!(matches!(worker.join(), Err(WorkerError::InitFailed(f)) if f == failure));
}

#[test]
fn unknown_initializer_is_reported() {
    let mut worker = Harness::start(local_mailbox(), RunOptions::default());
    worker.setup(Some(InitializerCall {
        task_id: 1,
        args: Vec::new(),
    }));
    protocol::check_hello(&worker.recv(), registry::fingerprint()).expect("hello");
    let Ok(FromWorker::InitFailed(failure)) = protocol::parse_from_worker(&worker.recv()) else {
        panic!("expected InitFailed");
    };
    assert_eq!(failure.kind, FailureKind::UnknownTask);
    assert!(matches!(worker.join(), Err(WorkerError::InitFailed(_))));
}

#[test]
fn yield_mid_chunk_reports_the_next_index() {
    let mailbox: &'static LocalMailbox = &YIELD_MAILBOX;
    let mut worker = Harness::ready(mailbox, RunOptions::default());
    let args: Vec<u64> = (0..10).collect();
    worker.call::<yield_after_four>(YIELD_CHUNK, 100, &args);
    let got = values(worker.outcomes::<yield_after_four>(YIELD_CHUNK, 5));
    assert_eq!(got, (0..5).map(|i| (100 + i, i)).collect::<Vec<_>>());
    assert!(matches!(
        protocol::parse_from_worker(&worker.recv()),
        Ok(FromWorker::Yielded {
            chunk_id: YIELD_CHUNK,
            next_index: 105
        })
    ));
    assert_eq!(mailbox.load(word::YIELD), 0, "the request was consumed");
    // The worker goes on with the next chunk.
    worker.call::<builtin::add_one>(YIELD_CHUNK + 1, 0, &[1]);
    assert_eq!(
        values(worker.outcomes::<builtin::add_one>(YIELD_CHUNK + 1, 1)),
        vec![(0, 2)]
    );
    worker.shutdown().expect("clean exit");
    // Word 0 is cleared after a chunk's last frame is sent; after exit the worker is idle.
    assert_eq!(mailbox.load(word::RUNNING_CHUNK), 0);
}

#[test]
fn a_half_split_runs_the_first_half_then_yields() {
    let mailbox: &'static LocalMailbox = &HALF_MAILBOX;
    let mut worker = Harness::ready(mailbox, RunOptions::default());
    let args: Vec<u64> = (0..10).collect();
    worker.call::<half_yield_at_two>(HALF_CHUNK, 100, &args);
    // Seen before item 3: 7 unstarted; 7..10 go back at once, 3..7 still run.
    let mut got = Vec::new();
    let mut yielded = Vec::new();
    while got.len() < 7 || yielded.is_empty() {
        let frame = worker.recv();
        match protocol::parse_from_worker(&frame).expect("parses") {
            FromWorker::Outcomes(batch) => {
                assert_eq!(batch.chunk_id, HALF_CHUNK);
                for (index, outcome) in protocol::decode_outputs::<half_yield_at_two>(&batch) {
                    got.push((index, outcome.expect("decodes").expect("succeeds")));
                }
            }
            FromWorker::Yielded {
                chunk_id,
                next_index,
            } => yielded.push((chunk_id, next_index)),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, (0..7).map(|i| (100 + i, i)).collect::<Vec<_>>());
    assert_eq!(yielded, vec![(HALF_CHUNK, 107)]);
    assert_eq!(mailbox.load(word::YIELD), 0, "the request was consumed");
    // A half split of the last unstarted item gives nothing back: the chunk completes.
    mailbox.store(word::YIELD, (HALF_CHUNK + 2) | protocol::YIELD_HALF);
    worker.call::<builtin::add_one>(HALF_CHUNK + 1, 0, &[1]);
    assert_eq!(
        values(worker.outcomes::<builtin::add_one>(HALF_CHUNK + 1, 1)),
        vec![(0, 2)]
    );
    assert_eq!(mailbox.load(word::YIELD), 0, "the request was dropped");
    worker.shutdown().expect("clean exit");
}

#[test]
fn a_long_chunk_streams_its_outcomes() {
    let opts = RunOptions {
        flush_interval: Duration::from_millis(1),
        ..RunOptions::default()
    };
    let mut worker = Harness::ready(local_mailbox(), opts);
    worker.call::<builtin::sleep_for>(9, 0, &[2, 2, 2]);
    // Each item sleeps at least twice the flush interval, so each is flushed on its own.
    for index in 0..3 {
        let frame = worker.recv();
        let Ok(FromWorker::Outcomes(batch)) = protocol::parse_from_worker(&frame) else {
            panic!("expected outcomes");
        };
        assert_eq!((batch.first_index, batch.len()), (index, 1));
    }
    worker.shutdown().expect("clean exit");
}

#[test]
fn bad_arguments_fail_each_item_and_the_worker_goes_on() {
    let mut worker = Harness::ready(local_mailbox(), RunOptions::default());
    protocol::encode_call_batch::<builtin::add_one>(10, 0, &[1, 2], &mut worker.frame)
        .expect("encodes");
    let len = worker.frame.len();
    for byte in &mut worker.frame[protocol::HEADER_LEN..len] {
        *byte = 0xff;
    }
    worker.send_frame();
    let got = worker.outcomes::<builtin::add_one>(10, 2);
    for (_, outcome) in got {
        assert_eq!(outcome.expect_err("fails").kind, FailureKind::BadArguments);
    }
    worker.call::<builtin::add_one>(11, 0, &[1]);
    assert_eq!(
        values(worker.outcomes::<builtin::add_one>(11, 1)),
        vec![(0, 2)]
    );
    worker.shutdown().expect("clean exit");
}

#[test]
fn an_empty_chunk_gets_an_empty_outcomes_frame() {
    let mut worker = Harness::ready(local_mailbox(), RunOptions::default());
    worker.call::<builtin::add_one>(12, 5, &[]);
    let frame = worker.recv();
    let Ok(FromWorker::Outcomes(batch)) = protocol::parse_from_worker(&frame) else {
        panic!("expected outcomes");
    };
    assert_eq!((batch.chunk_id, batch.first_index, batch.len()), (12, 5, 0));
    worker.shutdown().expect("clean exit");
}

#[test]
fn parent_gone_ends_the_worker_with_disconnected() {
    let mut worker = Harness::ready(local_mailbox(), RunOptions::default());
    assert!(matches!(worker.join(), Err(WorkerError::Disconnected)));
}

#[test]
fn a_garbage_frame_ends_the_worker_with_a_protocol_error() {
    let mut worker = Harness::ready(local_mailbox(), RunOptions::default());
    worker.frame = AlignedVec::new();
    worker.frame.extend_from_slice(&[0xab; 40]);
    worker.send_frame();
    assert!(matches!(worker.join(), Err(WorkerError::Protocol(_))));
}

#[test]
fn the_first_frame_must_be_setup() {
    let mut worker = Harness::start(local_mailbox(), RunOptions::default());
    worker.call::<builtin::add_one>(1, 0, &[1]);
    assert!(matches!(worker.join(), Err(WorkerError::NoSetup)));
}

#[test]
fn a_zero_flush_interval_sends_every_outcome_before_the_next_item() {
    let opts = RunOptions {
        flush_interval: Duration::ZERO,
        ..RunOptions::default()
    };
    let mut worker = Harness::ready(local_mailbox(), opts);
    worker.call::<builtin::add_one>(13, 0, &[1, 2, 3]);
    for index in 0..3 {
        let frame = worker.recv();
        let Ok(FromWorker::Outcomes(batch)) = protocol::parse_from_worker(&frame) else {
            panic!("expected outcomes");
        };
        assert_eq!((batch.first_index, batch.len()), (index, 1));
    }
    worker.shutdown().expect("clean exit");
}

/// Mailbox and chunk id of `scripted_chunks_match_the_model` (its task requests yields).
static SCRIPT_MAILBOX: LocalMailbox = LocalMailbox::new();
static SCRIPT_CHUNK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// `v % 7 == 3` panics, `v % 7 == 5` fails, `v >= 1000` asks to yield after itself,
/// `v >= 2000` only the later half of the unstarted items.
#[task(crate = crate)]
fn scripted(v: u64) -> Result<u64, String> {
    if v >= 1000 {
        // Relaxed: the test stores it on this same thread before running the chunk.
        let chunk = SCRIPT_CHUNK.load(std::sync::atomic::Ordering::Relaxed);
        let half = if v >= 2000 { protocol::YIELD_HALF } else { 0 };
        SCRIPT_MAILBOX.store(word::YIELD, (chunk + 1) | half);
    }
    match v % 7 {
        3 => panic!("p{v}"),
        5 => Err(format!("e{v}")),
        _ => Ok(v * 2),
    }
}

/// Per item: index and value or failure text.
type ModelOutcomes = Vec<(u64, Result<u64, String>)>;

/// What the worker must report for `values`: outcomes, and the yield points in order. A
/// request is seen before the next item, if the chunk (as shrunk by earlier half splits)
/// has one; a half split gives back the later half of the unstarted items at once.
fn model(values: &[u64], first_index: u64) -> (ModelOutcomes, Vec<u64>) {
    let mut outcomes = Vec::new();
    let mut yields = Vec::new();
    let mut end = values.len();
    let mut i = 0;
    while i < end {
        let v = values[i];
        let outcome = match v % 7 {
            3 => Err(format!("panic p{v}")),
            5 => Err(format!("failed e{v}")),
            _ => Ok(v * 2),
        };
        outcomes.push((first_index + i as u64, outcome));
        let next = i + 1;
        if v >= 2000 && next < end {
            let split = next + (end - next).div_ceil(2);
            if split < end {
                yields.push(first_index + split as u64);
                end = split;
            }
        } else if (1000..2000).contains(&v) && next < end {
            yields.push(first_index + next as u64);
            break;
        }
        i = next;
    }
    (outcomes, yields)
}

proptest::proptest! {
    #[test]
    fn scripted_chunks_match_the_model(
        values in proptest::collection::vec(
            proptest::prop_oneof![18 => 0_u64..100, 1 => 1000_u64..1100, 1 => 2000_u64..2100],
            0..40),
        first_index in 0_u64..1000,
        chunk_id in 1_u64..1_000_000,
        flush_bytes in 1_usize..300,
    ) {
        install_panic_hook();
        // Relaxed: read back by the task on this same thread.
        SCRIPT_CHUNK.store(chunk_id, std::sync::atomic::Ordering::Relaxed);
        let opts = RunOptions { flush_interval: Duration::from_secs(3600), flush_bytes, ..RunOptions::default() };
        let mut arena = Arena::new();
        let mut encoder = OutcomeEncoder::new(AlignedVec::new(), arena.acquire());
        let mut frames: Vec<AlignedVec> = Vec::new();
        let mut outbox = FnOutbox(|frame: &[u8]| {
            let mut copy = AlignedVec::new();
            copy.extend_from_slice(frame);
            frames.push(copy);
        });
        let mut calls = AlignedVec::new();
        protocol::encode_call_batch::<scripted>(chunk_id, first_index, &values, &mut calls).unwrap();
        let Ok(ToWorker::CallBatch { args, count, .. }) = protocol::parse_to_worker(&calls) else {
            panic!("call batch");
        };
        let mut run = BatchRun {
            chunk_id,
            task_id: <scripted as Task>::ID,
            first_index,
            count,
            args,
            encoder: &mut encoder,
            outbox: &mut outbox,
            mailbox: MailboxWords::Local(&SCRIPT_MAILBOX),
            item_words: MailboxWords::Local(&SCRIPT_MAILBOX).item_words(),
            opts: &opts,
            pacer: Pacer::new(),
            end_at: count,
            error: None,
        };
        run_batch::<scripted>(&mut run);
        proptest::prop_assert!(run.error.is_none());

        let (want, want_yields) = model(&values, first_index);
        let mut got = Vec::new();
        let mut got_yields: Vec<u64> = Vec::new();
        for frame in &frames {
            match protocol::parse_from_worker(frame).unwrap() {
                FromWorker::Outcomes(batch) => {
                    proptest::prop_assert!(
                        got_yields.last().is_none_or(|&given_back| batch.indices().end <= given_back),
                        "outcomes of items given back"
                    );
                    proptest::prop_assert_eq!(batch.first_index, first_index + got.len() as u64);
                    for (index, outcome) in protocol::decode_outputs::<scripted>(&batch) {
                        let outcome = outcome.unwrap().map_err(|f| match f.kind {
                            FailureKind::Panicked => format!("panic {}", f.message),
                            FailureKind::Failed => format!("failed {}", f.message),
                            other => format!("{other:?}"),
                        });
                        got.push((index, outcome));
                    }
                }
                FromWorker::Yielded { chunk_id: yielded, next_index } => {
                    proptest::prop_assert_eq!(yielded, chunk_id);
                    got_yields.push(next_index);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        proptest::prop_assert_eq!(got, want);
        proptest::prop_assert_eq!(got_yields, want_yields);
        proptest::prop_assert_eq!(SCRIPT_MAILBOX.load(word::YIELD), 0, "request consumed or dropped");
        proptest::prop_assert_eq!(SCRIPT_MAILBOX.load(word::RUNNING_CHUNK), 0);
        if values.is_empty() {
            proptest::prop_assert_eq!(frames.len(), 1, "an empty chunk is answered");
        }
    }
}

#[test]
fn zero_sized_arguments_and_outputs_roundtrip() {
    let mut worker = Harness::ready(local_mailbox(), RunOptions::default());
    worker.call::<builtin::noop>(14, 0, &[(), (), ()]);
    assert_eq!(
        values(worker.outcomes::<builtin::noop>(14, 3)),
        vec![(0, ()), (1, ()), (2, ())]
    );
    worker.call::<builtin::allocate>(15, 0, &[2 * 4096]);
    assert_eq!(
        values(worker.outcomes::<builtin::allocate>(15, 1)),
        vec![(0, 1)]
    );
    worker.shutdown().expect("clean exit");
}

/// An output whose serialization panics for 13 and fails for 14 (user `Serialize` code).
#[derive(Debug, PartialEq, Eq)]
struct Touchy(u64);

/// Serialization of a [`Touchy`] 14 fails with this.
#[derive(Debug, thiserror::Error)]
#[error("fourteen does not serialize")]
struct Fourteen;

impl rkyv::Archive for Touchy {
    type Archived = rkyv::rend::u64_le;
    type Resolver = ();

    fn resolve(&self, resolver: (), out: rkyv::Place<Self::Archived>) {
        self.0.resolve(resolver, out);
    }
}

impl<S> rkyv::Serialize<S> for Touchy
where
    S: rkyv::rancor::Fallible + ?Sized,
    S::Error: rkyv::rancor::Source,
{
    fn serialize(&self, _serializer: &mut S) -> Result<(), S::Error> {
        assert_ne!(self.0, 13, "thirteen panics in serialize");
        if self.0 == 14 {
            return Err(<S::Error as rkyv::rancor::Source>::new(Fourteen));
        }
        Ok(())
    }
}

impl<D: rkyv::rancor::Fallible + ?Sized> rkyv::Deserialize<Touchy, D> for rkyv::rend::u64_le {
    fn deserialize(&self, _deserializer: &mut D) -> Result<Touchy, D::Error> {
        Ok(Touchy(self.to_native()))
    }
}

#[task(crate = crate)]
fn touchy(x: u64) -> Touchy {
    Touchy(x)
}

#[test]
fn an_output_that_does_not_serialize_fails_alone_and_its_run_neighbours_arrive() {
    let args: Vec<u64> = (10..18).collect();
    let mut frame = AlignedVec::new();
    protocol::encode_call_batch::<touchy>(5, 0, &args, &mut frame).expect("encodes");
    let mut got = Vec::new();
    LocalRunner::new()
        .run(&frame, |out| {
            let Ok(FromWorker::Outcomes(batch)) = protocol::parse_from_worker(out) else {
                panic!("expected outcomes");
            };
            for (index, outcome) in protocol::decode_outputs::<touchy>(&batch) {
                got.push((index, outcome.expect("decodes").map_err(|f| f.kind)));
            }
        })
        .expect("runs");
    let want: Vec<(u64, Result<Touchy, FailureKind>)> = (0..8)
        .map(|i| {
            let outcome = match 10 + i {
                13 => Err(FailureKind::Panicked),
                14 => Err(FailureKind::BadOutput),
                x => Ok(Touchy(x)),
            };
            (i, outcome)
        })
        .collect();
    assert_eq!(got, want);
}

/// A stop that lands after the heartbeat thread checked its flag but before it blocked: the
/// thread must still end promptly (one wake would be lost there, and the worker's exit would
/// wait for the 60 s backstop).
#[test]
fn a_heartbeat_stopped_just_before_it_blocks_still_ends() {
    let (parent, _handoff) =
        procpool_ipc::Endpoint::create(&procpool_ipc::ChannelConfig::new()).expect("channel");
    let mailbox = parent.mailbox();
    let (in_window, entered) = mpsc::channel();
    let first = std::sync::atomic::AtomicBool::new(true);
    let heartbeat = Heartbeat::start_with(&mailbox, move || {
        if first.swap(false, Ordering::Relaxed) {
            let _ = in_window.send(());
            // Drop stores the flag and wakes while the thread sits here.
            thread::sleep(Duration::from_millis(100));
        }
    })
    .expect("heartbeat thread");
    entered
        .recv_timeout(Duration::from_secs(20))
        .expect("the heartbeat thread reached its wait");
    let (done, dropped) = mpsc::channel();
    let dropper = thread::spawn(move || {
        drop(heartbeat);
        let _ = done.send(());
    });
    assert!(
        dropped.recv_timeout(Duration::from_secs(20)).is_ok(),
        "dropping the heartbeat hung: its thread slept through the stop"
    );
    dropper.join().expect("dropper thread");
}

#[test]
fn a_worker_steps_off_after_its_patience_and_waits_longer_each_time_it_must() {
    let mut neighbour = Neighbour::new();
    let on_waiters_cpu = |neighbour: &mut Neighbour, chunks: u32| {
        (0..chunks).filter(|_| neighbour.after_chunk(3, 3)).count()
    };
    // Sixteen chunks in a row on the waiter's CPU: one step off, on the sixteenth.
    assert_eq!(on_waiters_cpu(&mut neighbour, 15), 0);
    assert!(neighbour.after_chunk(3, 3));
    // Brought back at once: now it waits 32, then 64 chunks.
    assert_eq!(on_waiters_cpu(&mut neighbour, 31), 0);
    assert!(neighbour.after_chunk(3, 3));
    assert_eq!(on_waiters_cpu(&mut neighbour, 64), 1);
    // A chunk elsewhere (or with an unknown CPU) breaks the run; as many chunks apart as the
    // patience halve it again.
    assert!(!neighbour.after_chunk(2, 3));
    assert!(!neighbour.after_chunk(0, 0));
    assert_eq!(neighbour.patience, 128);
    for _ in 0..126 {
        assert!(!neighbour.after_chunk(2, 3));
    }
    assert_eq!(neighbour.patience, 64);
    // The patience never grows past its cap.
    let chunks = Neighbour::MAX_PATIENCE * 4;
    let steps = on_waiters_cpu(&mut neighbour, chunks) as u32;
    assert!(
        steps <= chunks / Neighbour::MAX_PATIENCE + 6,
        "{steps} steps"
    );
    assert_eq!(neighbour.patience, Neighbour::MAX_PATIENCE);
}

#[test]
fn stepping_off_a_cpu_moves_the_thread_and_keeps_its_affinity() {
    use nix::sched::{CpuSet, sched_getaffinity, sched_getcpu};
    use nix::unistd::Pid;
    // A thread of its own: the test harness's threads keep their masks either way.
    thread::spawn(|| {
        let allowed = sched_getaffinity(Pid::from_raw(0)).expect("affinity");
        let cpus = (0..CpuSet::count())
            .filter(|&cpu| allowed.is_set(cpu).unwrap_or(false))
            .count();
        let here = sched_getcpu().expect("sched_getcpu");
        let landed = step_off(here);
        if cpus < 2 {
            assert_eq!(landed, None, "nowhere else to go");
            return;
        }
        let landed = landed.expect("another CPU is allowed");
        assert_ne!(landed, here);
        assert!(allowed.is_set(landed).unwrap(), "it stays inside its mask");
        let after = sched_getaffinity(Pid::from_raw(0)).expect("affinity");
        assert!(
            (0..CpuSet::count())
                .all(|cpu| after.is_set(cpu).unwrap() == allowed.is_set(cpu).unwrap()),
            "the mask is given back as it was"
        );
    })
    .join()
    .expect("the probe thread");
}
