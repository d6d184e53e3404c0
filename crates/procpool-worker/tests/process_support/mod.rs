//! Shared helpers of the `process_*` tests: the worker binary, and a tiny parent-side driver
//! speaking worker-core's protocol over a procpool-ipc channel.
#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::time::Duration;

use procpool_ipc::{ChannelConfig, Endpoint};
use procpool_worker::protocol::{self, FromWorker, HelloInfo, Setup};
use procpool_worker::{
    AlignedVec, StartMethod, Task, TaskFailure, WorkerExit, WorkerProcess, WorkerSpawner,
};

/// How long any single step may take before the test fails instead of hanging.
pub const WATCHDOG: Duration = Duration::from_secs(20);

/// The `procpool-worker` binary of this package.
pub fn worker_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_procpool-worker"))
}

/// A spawner that runs the `procpool-worker` binary.
pub fn spawner(method: StartMethod) -> WorkerSpawner {
    WorkerSpawner::new(method).program(worker_bin())
}

/// Starts one worker through `spawner` and returns its handle and the parent's driver.
/// The handle kills and reaps the worker when dropped, even if the test fails.
pub fn start(spawner: &WorkerSpawner) -> (WorkerProcess, Driver) {
    let (endpoint, handoff) =
        Endpoint::create(&ChannelConfig::default()).expect("create a channel");
    let worker = spawner.spawn(handoff).expect("spawn a worker");
    (worker, Driver::new(endpoint))
}

/// Waits for a worker with a watchdog.
pub fn wait(worker: &mut WorkerProcess) -> WorkerExit {
    worker
        .wait_timeout(WATCHDOG)
        .expect("wait")
        .unwrap_or_else(|| {
            panic!(
                "watchdog: worker {} did not exit within {WATCHDOG:?}",
                worker.pid()
            )
        })
}

/// The parent's side of one worker's channel.
pub struct Driver {
    pub endpoint: Endpoint,
    frame: AlignedVec,
}

impl Driver {
    pub fn new(endpoint: Endpoint) -> Driver {
        Driver {
            endpoint,
            frame: AlignedVec::new(),
        }
    }

    fn send_frame(&mut self) {
        self.endpoint
            .sender()
            .send(&self.frame)
            .expect("send a frame");
    }

    /// The next frame from the worker, copied (aligned) out of the ring.
    pub fn recv(&mut self) -> AlignedVec {
        let frame = self
            .endpoint
            .receiver()
            .recv_timeout(WATCHDOG)
            .expect("receive a frame");
        let mut copy = AlignedVec::new();
        copy.extend_from_slice(&frame);
        copy
    }

    /// Sends `Setup` and checks `Hello` and `Ready`.
    pub fn handshake(&mut self, worker_index: u32) -> HelloInfo {
        protocol::encode_setup(
            &Setup {
                worker_index,
                initializer: None,
            },
            &mut self.frame,
        )
        .expect("encode setup");
        self.send_frame();
        let hello = self.recv();
        let info =
            protocol::check_hello(&hello, procpool_worker::fingerprint()).expect("a valid hello");
        let ready = self.recv();
        assert!(
            matches!(protocol::parse_from_worker(&ready), Ok(FromWorker::Ready)),
            "Ready after Hello"
        );
        info
    }

    /// Sends one chunk of calls of `T` without waiting for outcomes.
    pub fn send_calls<T: Task>(&mut self, chunk_id: u64, args: &[T::Args]) {
        protocol::encode_call_batch::<T>(chunk_id, 0, args, &mut self.frame).expect("encode calls");
        self.send_frame();
    }

    /// Runs one chunk of calls of `T` and returns every item's outcome, in item order.
    pub fn call<T: Task>(
        &mut self,
        chunk_id: u64,
        args: &[T::Args],
    ) -> Vec<Result<T::Output, TaskFailure>> {
        self.send_calls::<T>(chunk_id, args);
        let mut outcomes: Vec<Option<Result<T::Output, TaskFailure>>> =
            (0..args.len()).map(|_| None).collect();
        while outcomes.iter().any(Option::is_none) {
            let frame = self.recv();
            match protocol::parse_from_worker(&frame).expect("a valid frame") {
                FromWorker::Outcomes(batch) => {
                    assert_eq!(batch.chunk_id, chunk_id, "outcomes of the chunk sent");
                    for (index, outcome) in protocol::decode_outputs::<T>(&batch) {
                        let slot = &mut outcomes[usize::try_from(index).expect("index")];
                        assert!(slot.is_none(), "one outcome per item");
                        *slot = Some(outcome.expect("a valid outcome"));
                    }
                }
                other => panic!("unexpected frame while waiting for outcomes: {other:?}"),
            }
        }
        outcomes
            .into_iter()
            .map(|outcome| outcome.expect("filled"))
            .collect()
    }

    /// Sends `Shutdown`.
    pub fn shutdown(&mut self) {
        protocol::encode_shutdown(&mut self.frame);
        self.send_frame();
    }
}
