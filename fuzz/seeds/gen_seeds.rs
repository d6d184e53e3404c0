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

use procpool_fuzz::FuzzTable;
use procpool_ipc::{ChannelConfig, Endpoint};
use procpool_worker::protocol::{self, InitializerCall, Setup};
use procpool_worker::{
    AlignedVec, LocalRunner, RunOptions, Shareable, SharedRef, Task, builtin, run_worker,
};

/// Stands for `call_batch_runtime`'s shared-object tasks when encoding their call batches:
/// a `Shared<T>` handle is archived exactly as a `SharedRef` (the target puts its own task id
/// into the header, chosen by the record's choice byte), so any handle can be written.
#[procpool_worker::task(crate = procpool_worker)]
fn handle(r: SharedRef) -> u64 {
    r.id
}

/// As [`handle`], for `shared_table(Shared<FuzzTable>, u64)`.
#[procpool_worker::task(crate = procpool_worker)]
fn handle_and_row(r: SharedRef, row: u64) -> u64 {
    r.id ^ row
}

/// Choice bytes of `call_batch_runtime` (index into its task list, modulo 12).
const CHOICE_SHARED_SUM: u8 = 5;
const CHOICE_SHARED_TABLE: u8 = 6;
const CHOICE_SHARED_TEXT: u8 = 7;
const CHOICE_KEEP: u8 = 11;

/// One `call_batch_runtime` record: shift 0, choice, u16 length, frame.
fn record(choice: u8, frame: &[u8]) -> Vec<u8> {
    let len = u16::try_from(frame.len()).expect("seed frames are small");
    let mut out = vec![0, choice];
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(frame);
    out
}

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
    // Mailbox word 5: the largest encoded output of one item (what `max_item_size` stores).
    parent.mailbox().store(5, 64);
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
    // Outputs over the 64-byte limit: `TooLarge` failures between values.
    let blobs = [b"ok".to_vec(), vec![7; 500], b"fine".to_vec(), vec![9; 100]];
    protocol::encode_call_batch::<builtin::echo_bytes>(6, 0, &blobs, &mut out).unwrap();
    frames.push(("to-calls-too-large".to_owned(), out.to_vec()));
    parent.sender().send(&out).expect("send calls");
    recv(&mut parent, "outcomes-too-large", &mut frames);
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

/// Shared objects (their whole sealed memfds = `Shared` frames) and call batches that use
/// them, as `call_batch_runtime` record sequences and as single `worker_messages` frames.
fn shared_seeds(frames: &mut Vec<(String, Vec<u8>)>) {
    let words = procpool_worker::share_slice(&[1u64, 2, 3, u64::MAX]).expect("share");
    let table = procpool_worker::share_value(&FuzzTable {
        rows: vec![10, 20, 30],
        name: "fuzz".to_owned(),
    })
    .expect("share");
    let text = procpool_worker::share_value(&"shared text".to_owned()).expect("share");
    let bytes = procpool_worker::share_slice(&[1u8, 2, 3]).expect("share");
    let frame_of = |file: Option<&procpool_ipc::SealedFile>| {
        file.expect("made here").map().expect("map").to_vec()
    };
    let words_frame = frame_of(words.object().file());
    let table_frame = frame_of(table.object().file());
    let text_frame = frame_of(text.object().file());
    let bytes_frame = frame_of(bytes.object().file());
    let words_ref = SharedRef {
        id: words.object().id(),
        tag: <[u64] as Shareable>::tag(),
    };
    let table_ref = SharedRef {
        id: table.object().id(),
        tag: <FuzzTable as Shareable>::tag(),
    };
    let text_ref = SharedRef {
        id: text.object().id(),
        tag: <String as Shareable>::tag(),
    };
    let bytes_ref = SharedRef {
        id: bytes.object().id(),
        tag: <[u8] as Shareable>::tag(),
    };
    let mut out = AlignedVec::new();
    let release = |id: u64| {
        let mut out = AlignedVec::new();
        protocol::encode_release(id, &mut out);
        out.to_vec()
    };
    frames.push(("to-shared-words".to_owned(), words_frame.clone()));
    frames.push(("to-shared-table".to_owned(), table_frame.clone()));
    frames.push(("to-shared-text".to_owned(), text_frame.clone()));
    frames.push(("to-release".to_owned(), release(words_ref.id)));

    // shared_sum: a live object, a handle of another type, an unknown id; then released.
    let handles = [
        words_ref,
        bytes_ref,
        SharedRef {
            id: 999,
            tag: words_ref.tag,
        },
        SharedRef {
            id: words_ref.id,
            tag: bytes_ref.tag,
        },
    ];
    protocol::encode_call_batch::<handle>(20, 0, &handles, &mut out).unwrap();
    let sum_calls = out.to_vec();
    frames.push(("to-calls-shared-handles".to_owned(), sum_calls.clone()));
    let seq = [
        record(CHOICE_KEEP, &words_frame),
        record(CHOICE_KEEP, &bytes_frame),
        record(CHOICE_SHARED_SUM, &sum_calls),
        record(CHOICE_KEEP, &release(words_ref.id)),
        record(CHOICE_SHARED_SUM, &sum_calls),
    ]
    .concat();
    save("call_batch_runtime", "shared-sum", &seq);
    // The same id shared twice: the second object (3 words) replaces the first.
    let mut second = words_frame.clone();
    second.truncate(64 + 24);
    let seq = [
        record(CHOICE_KEEP, &words_frame),
        record(CHOICE_KEEP, &second),
        record(CHOICE_SHARED_SUM, &sum_calls),
    ]
    .concat();
    save("call_batch_runtime", "shared-sum-replaced", &seq);
    // Data that is no whole number of words.
    let mut odd = words_frame.clone();
    odd.truncate(64 + 13);
    let seq = [
        record(CHOICE_KEEP, &odd),
        record(CHOICE_SHARED_SUM, &sum_calls),
    ]
    .concat();
    save("call_batch_runtime", "shared-sum-odd", &seq);
    // Calls before the object arrives.
    let seq = [
        record(CHOICE_SHARED_SUM, &sum_calls),
        record(CHOICE_KEEP, &words_frame),
    ]
    .concat();
    save("call_batch_runtime", "shared-sum-before", &seq);

    // shared_table: rows in and out of range, a handle of another type.
    let args = [
        (table_ref, 0u64),
        (table_ref, 2),
        (table_ref, 3),
        (table_ref, u64::MAX),
        (text_ref, 0),
    ];
    protocol::encode_call_batch::<handle_and_row>(21, 5, &args, &mut out).unwrap();
    let table_calls = out.to_vec();
    frames.push(("to-calls-shared-table".to_owned(), table_calls.clone()));
    let seq = [
        record(CHOICE_KEEP, &table_frame),
        record(CHOICE_SHARED_TABLE, &table_calls),
    ]
    .concat();
    save("call_batch_runtime", "shared-table", &seq);
    // A table whose bytes were damaged after the header: it must fail validation.
    let mut damaged = table_frame.clone();
    for byte in damaged.iter_mut().skip(64).step_by(7) {
        *byte ^= 0x5a;
    }
    let seq = [
        record(CHOICE_KEEP, &damaged),
        record(CHOICE_SHARED_TABLE, &table_calls),
    ]
    .concat();
    save("call_batch_runtime", "shared-table-damaged", &seq);

    // shared_text.
    protocol::encode_call_batch::<handle>(22, 0, &[text_ref, table_ref], &mut out).unwrap();
    let text_calls = out.to_vec();
    let seq = [
        record(CHOICE_KEEP, &text_frame),
        record(CHOICE_KEEP, &table_frame),
        record(CHOICE_SHARED_TEXT, &text_calls),
        record(CHOICE_KEEP, &release(text_ref.id)),
        record(CHOICE_SHARED_TEXT, &text_calls),
    ]
    .concat();
    save("call_batch_runtime", "shared-text", &seq);
    // A `Shared` frame cut inside its 64-byte header.
    let seq = [
        record(CHOICE_KEEP, &text_frame[..48]),
        record(CHOICE_SHARED_TEXT, &text_calls),
    ]
    .concat();
    save("call_batch_runtime", "shared-truncated", &seq);
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
        save("call_batch_runtime", &name, &record(choice, &frame));
    }
    let mut ping = AlignedVec::new();
    protocol::encode_ping(9, &mut ping);
    save("call_batch_runtime", "ping", &record(CHOICE_KEEP, &ping));
    shared_seeds(&mut frames);
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
    // 11 PeerReserve, 12 Publish, 13 Close, 14 PeerDies, 15 PeerSendSealed,
    // 16 ParentSendSealed, 17 Rewrite (which kept memfd, mode 0..6, u16 offset, byte).
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
        (
            // Sealed frames both ways (even lengths: the receiver keeps the mapping), then
            // every attack on the kept memfds.
            "sealed-both-ways",
            vec![
                0x0a, 15, 0, 40, 16, 0, 64, 5, 10, 15, 3, 0x10, 0x27, 5, 17, 0, 0, 1, 0, 7, 17, 0,
                1, 8, 0, 7, 17, 0, 2, 0, 0, 7, 17, 0, 3, 0x00, 0x10, 7, 17, 0, 4, 0, 0, 7, 17, 1,
                5, 0, 0, 7, 15, 0, 30, 5,
            ],
        ),
        (
            // Hostile memfds mapped read-only before sealing (seals bit 4), then attacked.
            "hostile-premapped",
            vec![
                0x0a, 4, 0x00, 0x40, 0x00, 0x1f, 3, 1, 0x40, 0x00, 0x00, 5, 17, 0, 5, 0, 0, 9, 17,
                0, 0, 0, 0, 9, 5,
            ],
        ),
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
