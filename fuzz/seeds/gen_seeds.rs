//! Writes the seed corpora for the fuzz targets into `fuzz/corpus/<target>/`.
//!
//! Run from the repository root (stable toolchain is enough):
//! `cargo run --manifest-path fuzz/Cargo.toml --bin gen_seeds`.
//!
//! Seeds are valid inputs: real protocol frames produced by the real encoders and by a real
//! worker run loop (Hello, Ready, InitFailed, Pong, Outcomes), real region headers from
//! `Endpoint::create`, and operation sequences that drive honest and hostile channel traffic.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use procpool_ipc::{ChannelConfig, Endpoint};
use procpool_worker::protocol::{self, InitializerCall, Setup};
use procpool_worker::{AlignedVec, LocalRunner, RunOptions, Task, builtin, run_worker};

fn dir(target: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    fs::create_dir_all(&dir).expect("create corpus dir");
    dir
}

fn save(target: &str, name: &str, bytes: &[u8]) {
    fs::write(dir(target).join(format!("seed-{name}")), bytes).expect("write seed");
}

/// Frames a real worker sends: runs `run_worker` on a channel in a thread and records replies.
fn worker_frames(initializer: Option<InitializerCall>) -> Vec<(String, Vec<u8>)> {
    let (mut parent, handoff) = Endpoint::create(&ChannelConfig::new()).expect("create");
    let child = Endpoint::open(handoff).expect("open");
    let worker = std::thread::spawn(move || run_worker(child, RunOptions::default()));
    let mut frames = Vec::new();
    let mut out = AlignedVec::new();
    let failing = initializer.is_some();
    protocol::encode_setup(
        &Setup {
            worker_index: 3,
            initializer,
        },
        &mut out,
    )
    .expect("setup");
    frames.push(("to-setup".to_owned(), out.to_vec()));
    parent.sender().send(&out).expect("send setup");
    let recv = |parent: &mut Endpoint, name: &str, frames: &mut Vec<(String, Vec<u8>)>| {
        let frame = parent
            .receiver()
            .recv_timeout(Duration::from_secs(10))
            .expect("worker reply");
        frames.push((name.to_owned(), frame.to_vec()));
    };
    recv(&mut parent, "hello", &mut frames);
    if failing {
        recv(&mut parent, "init-failed", &mut frames);
        drop(parent);
        let _ = worker.join();
        return frames;
    }
    recv(&mut parent, "ready", &mut frames);
    protocol::encode_ping(77, &mut out);
    frames.push(("to-ping".to_owned(), out.to_vec()));
    parent.sender().send(&out).expect("send ping");
    recv(&mut parent, "pong", &mut frames);
    protocol::encode_call_batch::<builtin::add_one>(5, 100, &[1, 2, u64::MAX], &mut out).unwrap();
    parent.sender().send(&out).expect("send calls");
    recv(&mut parent, "outcomes-add-one", &mut frames);
    protocol::encode_shutdown(&mut out);
    frames.push(("to-shutdown".to_owned(), out.to_vec()));
    parent.sender().send(&out).expect("send shutdown");
    let _ = worker.join();
    frames
}

/// Call batches for each built-in the runtime target may pick, with their choice byte.
fn call_batches() -> Vec<(String, u8, Vec<u8>)> {
    let mut all = Vec::new();
    let mut out = AlignedVec::new();
    protocol::encode_call_batch::<builtin::noop>(1, 0, &[(), ()], &mut out).unwrap();
    all.push(("noop".to_owned(), 0, out.to_vec()));
    protocol::encode_call_batch::<builtin::add_one>(2, 7, &[0, 41, u64::MAX], &mut out).unwrap();
    all.push(("add-one".to_owned(), 1, out.to_vec()));
    let blobs = [Vec::new(), b"hello".to_vec(), vec![0xab; 300]];
    protocol::encode_call_batch::<builtin::echo_bytes>(3, 0, &blobs, &mut out).unwrap();
    all.push(("echo-bytes".to_owned(), 2, out.to_vec()));
    let msgs = ["no".to_owned(), String::new()];
    protocol::encode_call_batch::<builtin::fail>(4, 0, &msgs, &mut out).unwrap();
    all.push(("fail".to_owned(), 3, out.to_vec()));
    protocol::encode_call_batch::<builtin::panic>(5, 0, &msgs, &mut out).unwrap();
    all.push(("panic".to_owned(), 4, out.to_vec()));
    protocol::encode_call_batch::<builtin::add_one>(6, 0, &[], &mut out).unwrap();
    all.push(("empty".to_owned(), 1, out.to_vec()));
    all
}

fn worker_seeds() {
    let mut frames = worker_frames(None);
    let init = protocol::encode_initializer::<builtin::fail>(&"init says no".to_owned()).unwrap();
    frames.extend(worker_frames(Some(init)));
    for (name, frame, choice) in call_batches()
        .into_iter()
        .map(|(name, choice, frame)| (format!("to-calls-{name}"), frame, choice))
    {
        frames.push((name.clone(), frame.clone()));
        // The outcomes the runner writes for it.
        let mut runner = LocalRunner::new();
        let mut outs = Vec::new();
        runner
            .run(&frame, |out| outs.push(out.to_vec()))
            .expect("run");
        for (i, out) in outs.into_iter().enumerate() {
            frames.push((format!("outcomes-{name}-{i}"), out));
        }
        let mut runtime_seed = vec![0, choice];
        runtime_seed.extend_from_slice(&frame);
        save("call_batch_runtime", &name, &runtime_seed);
    }
    let mut ping = AlignedVec::new();
    protocol::encode_ping(9, &mut ping);
    save(
        "call_batch_runtime",
        "ping",
        &[&[0u8, 7][..], &ping[..]].concat(),
    );
    for (name, frame) in frames {
        let mut seed = vec![0];
        seed.extend_from_slice(&frame);
        save("worker_messages", &name, &seed);
    }
    let _ = <builtin::add_one as Task>::ID;
}

fn region_seeds() {
    // (size selector of region_open, submission capacity, completion capacity)
    for (sel, sub, comp) in [
        (3u8, 4096usize, 4096usize),
        (4, 4096, 8192),
        (7, 65536, 65536),
    ] {
        let config = ChannelConfig::new()
            .submission_capacity(sub)
            .completion_capacity(comp);
        let (endpoint, handoff) = Endpoint::create(&config).expect("create");
        let (region, _socket) = handoff.into_fds();
        let mut bytes = Vec::new();
        fs::File::from(region)
            .take(4096 + 1024)
            .read_to_end(&mut bytes)
            .expect("read region");
        drop(endpoint);
        let mut seed = vec![sel, 0];
        seed.extend_from_slice(&bytes[..4096 + 64]);
        save("region_open", &format!("valid-{sub}-{comp}"), &seed);
        // Header only.
        let mut seed = vec![sel, 0];
        seed.extend_from_slice(&bytes[..64]);
        save("region_open", &format!("header-{sub}-{comp}"), &seed);
    }
}

fn ring_seeds() {
    // Config byte: bits 0-1 submission capacity, 2-3 completion capacity (256, 512, 4096,
    // 65536), bit 4 threshold byte follows, bits 5-6 max_frame choice.
    // Opcodes: 0 StoreWord, 1 WriteHeader, 2 WriteBytes, 3 AppendFrame, 4 SocketMessage,
    // 5 ParentTryRecv, 6 ParentRecv, 7 ParentSend, 8 ParentReserve, 9 PeerSend, 10 PeerTryRecv,
    // 11 PeerReserve, 12 Publish, 13 Close, 14 PeerDies.
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        (
            "honest-pingpong",
            vec![
                0x0a, 9, 0, 40, 5, 7, 0, 100, 10, 9, 0, 0, 6, 8, 0, 30, 4, 10, 11, 0, 20, 12, 1, 5,
            ],
        ),
        (
            // Large frames go out of band (len mode 3: u16 % 4*cap).
            "honest-large",
            vec![
                0x0a, 9, 3, 0x88, 0x13, 5, 7, 3, 0x10, 0x27, 10, 9, 2, 200, 5, 5,
            ],
        ),
        (
            // Small rings: many frames wrap around.
            "honest-wrap",
            [vec![0x00], [9, 0, 90, 5, 7, 0, 70, 10].repeat(12)].concat(),
        ),
        (
            "hostile-append",
            vec![0x0a, 3, 3, 40, 7, 5, 3, 0, 5, 3, 2, 0xff, 0xff, 0, 0, 5, 5],
        ),
        (
            "hostile-large-fd",
            vec![
                0x0a, 4, 0x00, 0x64, 0x00, 0x0f, 3, 1, 0x64, 0x00, 0x00, 5, 5,
            ],
        ),
        ("hostile-tail", vec![0x0a, 9, 0, 16, 0, 1, 0, 1, 3, 5, 6, 5]),
        (
            "hostile-head",
            vec![
                0x0a, 0, 0, 1, 6, 0, 0, 0, 0, 0, 0, 0, 1, 7, 0, 200, 7, 0, 200, 7, 0, 200,
            ],
        ),
        ("peer-dies", vec![0x0a, 9, 0, 10, 14, 5, 6, 6, 7, 0, 1]),
        ("close", vec![0x0a, 9, 0, 10, 13, 1, 5, 5, 13, 2, 7, 0, 5]),
    ];
    for (name, bytes) in seeds {
        save("ring_reader", name, &bytes);
    }
}

fn main() {
    ring_seeds();
    region_seeds();
    worker_seeds();
    for target in [
        "ring_reader",
        "region_open",
        "worker_messages",
        "call_batch_runtime",
    ] {
        let n = fs::read_dir(dir(target)).map(|d| d.count()).unwrap_or(0);
        println!("{target}: {n} files in fuzz/corpus/{target}");
    }
}
