//! One-way throughput between two real processes, and the out-of-band path.
//!
//! - `throughput/ipc/<size>`: the bench process writes frames of 16 B, 256 B or 64 KiB in
//!   place (`reserve` + `commit`, one `publish` per 32 frames); the peer reads each one and
//!   touches its first and last byte; one acknowledgement frame per batch ends the timing.
//! - `throughput/baseline_socketpair/<size>`: the same bytes through a Unix stream socket
//!   pair (the peer reads them in 256 KiB chunks).
//! - `large_64MiB/ipc_out_of_band`: one 64 MiB frame (one copy into a sealed memfd, passed
//!   over `SCM_RIGHTS`, mapped read-only by the peer, which reads one byte per page);
//!   `large_64MiB/baseline_memcpy`: one in-process `memcpy` of 64 MiB.
//!
//! The bench process pins itself to CPU 0 and its peer to CPU 1 (two cores, like the
//! issue's measurements); `PROCPOOL_IPC_BENCH_NO_PIN=1` turns that off.
//!
//! Run: `cargo bench -p procpool-ipc --bench throughput` (add `-- --quick` for a fast look).

mod peer;

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use procpool_ipc::{ChannelConfig, Endpoint, RecvError};

const SIZES: [usize; 3] = [16, 256, 64 * 1024];
const LARGE: usize = 64 << 20;

/// Control frame from the bench to the peer: "expect `count` frames" (16 bytes).
fn control(count: u64) -> [u8; 8] {
    count.to_le_bytes()
}

fn peer_main(role: &str) {
    match role {
        "ipc_sink" => {
            let (mut sender, mut receiver) = peer::peer_endpoint(Duration::from_micros(50));
            loop {
                let count = match receiver.recv() {
                    Ok(frame) => u64::from_le_bytes(frame[..8].try_into().expect("control")),
                    Err(RecvError::Disconnected) => return,
                    Err(err) => panic!("peer: {err}"),
                };
                let mut checksum = 0u64;
                for _ in 0..count {
                    let frame = receiver.recv().expect("frame");
                    checksum = checksum
                        .wrapping_add(u64::from(frame[0]) + u64::from(frame[frame.len() - 1]));
                }
                sender.send(&checksum.to_le_bytes()).expect("ack");
            }
        }
        "stream_sink" => {
            let mut stream = UnixStream::from(peer::inherited(3));
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let mut header = [0u8; 8];
                if stream.read_exact(&mut header).is_err() {
                    return;
                }
                let mut left = u64::from_le_bytes(header);
                while left > 0 {
                    let want = buf.len().min(left as usize);
                    let got = stream.read(&mut buf[..want]).expect("read");
                    assert!(got > 0, "eof");
                    left -= got as u64;
                }
                stream.write_all(&[1]).expect("ack");
            }
        }
        other => panic!("unknown peer role {other}"),
    }
}

fn throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("throughput");
    let (endpoint, handoff) = Endpoint::create(&ChannelConfig::new()).expect("create");
    let (region, socket) = handoff.into_fds();
    let _ipc_peer = peer::spawn("ipc_sink", vec![region, socket]);
    let (mut sender, mut receiver) = endpoint.split();
    let (mut stream, theirs) = UnixStream::pair().expect("pair");
    let _stream_peer = peer::spawn("stream_sink", vec![OwnedFd::from(theirs)]);
    for size in SIZES {
        let payload = vec![0xa5u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("ipc", size), &size, |b, &size| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                sender.send(&control(iters)).expect("control");
                for idx in 0..iters {
                    let mut grant = sender.reserve(size, None).expect("reserve");
                    grant.copy_from_slice(&payload);
                    grant.commit(size).expect("commit");
                    if idx % 32 == 31 {
                        sender.publish();
                    }
                }
                sender.publish();
                let ack = receiver.recv().expect("ack");
                assert_eq!(ack.len(), 8);
                start.elapsed()
            })
        });
        group.bench_with_input(
            BenchmarkId::new("baseline_socketpair", size),
            &size,
            |b, &size| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    stream
                        .write_all(&(iters * size as u64).to_le_bytes())
                        .expect("header");
                    for _ in 0..iters {
                        stream.write_all(&payload).expect("write");
                    }
                    let mut ack = [0u8; 1];
                    stream.read_exact(&mut ack).expect("ack");
                    start.elapsed()
                })
            },
        );
    }
    group.finish();

    let mut group = c.benchmark_group("large_64MiB");
    group
        .throughput(Throughput::Bytes(LARGE as u64))
        .sample_size(10);
    let payload: Vec<u8> = (0..LARGE).map(|idx| idx as u8).collect();
    group.bench_function("ipc_out_of_band", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            sender.send(&control(iters)).expect("control");
            for _ in 0..iters {
                sender.send(&payload).expect("send large");
            }
            let ack = receiver.recv().expect("ack");
            assert_eq!(ack.len(), 8);
            start.elapsed()
        })
    });
    let mut target = vec![0u8; LARGE];
    group.bench_function("baseline_memcpy", |b| {
        b.iter(|| {
            target.copy_from_slice(&payload);
            std::hint::black_box(&target);
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = throughput
}

fn main() {
    if let Ok(role) = std::env::var(peer::ROLE_ENV) {
        peer::pin_to(1);
        peer_main(&role);
        return;
    }
    peer::pin_to(0);
    benches();
    Criterion::default().configure_from_args().final_summary();
}
