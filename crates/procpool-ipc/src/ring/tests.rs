//! Ring tests: a conformance suite run on the heap and memfd backends, hostile-peer
//! checks, and a proptest model against a `VecDeque`.

use std::collections::VecDeque;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::segment::Region;
use crate::wire::{RING_CONTROL_SIZE, pad16};

type Make = fn(usize) -> (Producer, Consumer);

fn heap(capacity: usize) -> (Producer, Consumer) {
    heap_ring(
        capacity,
        WaitStrategy {
            spin: Duration::from_micros(20),
        },
    )
}

/// A ring in a memfd region, with the producer and the consumer on two separate
/// mappings (different addresses), as in two processes.
fn memfd(capacity: usize) -> (Producer, Consumer) {
    let region = Region::create(RING_CONTROL_SIZE + capacity).expect("region");
    let second = Region::open(region.dup_fd().expect("dup")).expect("open");
    let wait = WaitStrategy {
        spin: Duration::from_micros(20),
    };
    let end = |region: Region| {
        let region = Arc::new(region);
        // SAFETY: the region is RING_CONTROL_SIZE + capacity bytes, page aligned and
        // zero-filled (a fresh RingControl); one end of each kind is built.
        unsafe {
            let ctrl = NonNull::new_unchecked(region.base() as *mut RingControl);
            let data = NonNull::new_unchecked(region.base().add(RING_CONTROL_SIZE));
            RingRef::new(ctrl, data, capacity, region as _)
        }
    };
    (
        Producer::new(end(region), wait),
        Consumer::new(end(second), wait),
    )
}

const BACKENDS: [(&str, Make); 2] = [("heap", heap), ("memfd", memfd)];

fn no_probe() -> impl FnMut() -> bool {
    || false
}

fn send(producer: &mut Producer, bytes: &[u8]) {
    let slot = producer
        .reserve(bytes.len(), None, &mut no_probe())
        .expect("reserve");
    producer.write_frame(slot, KIND_DATA, bytes);
}

fn recv(consumer: &mut Consumer) -> Option<Vec<u8>> {
    let (item, end) = consumer.try_peek().expect("peek")?;
    let Item::Data { pos, len } = item else {
        panic!("unexpected {item:?}")
    };
    // SAFETY: pos/len come from the peek just above; released right after the copy.
    let bytes = unsafe { consumer.payload(pos, len) }.to_vec();
    assert_eq!(pos % 16, 0);
    consumer.release(end);
    Some(bytes)
}

fn for_each_backend(test: impl Fn(Make)) {
    for (name, make) in BACKENDS {
        eprintln!("backend {name}");
        test(make);
    }
}

#[test]
fn fifo_and_batched_publish() {
    for_each_backend(|make| {
        let (mut producer, mut consumer) = make(1024);
        send(&mut producer, b"one");
        send(&mut producer, b"two");
        assert_eq!(recv(&mut consumer), None, "staged frames are invisible");
        producer.publish();
        assert_eq!(recv(&mut consumer).as_deref(), Some(&b"one"[..]));
        assert_eq!(recv(&mut consumer).as_deref(), Some(&b"two"[..]));
        assert_eq!(recv(&mut consumer), None);
    });
}

#[test]
fn frame_exactly_hitting_the_end_does_not_wrap() {
    for_each_backend(|make| {
        let (mut producer, mut consumer) = make(256);
        // 3 frames of 64 + 16 = 80 bytes, then one of 256 - 240 = 16 bytes (empty payload).
        for round in 0..10u8 {
            for idx in 0..3u8 {
                send(&mut producer, &[round.wrapping_add(idx); 64]);
            }
            send(&mut producer, &[]);
            producer.publish();
            assert_eq!(producer.staged % 256, 0, "ends exactly at the wrap point");
            for idx in 0..3u8 {
                assert_eq!(recv(&mut consumer), Some(vec![round.wrapping_add(idx); 64]));
            }
            assert_eq!(recv(&mut consumer), Some(vec![]));
            consumer.publish_head();
        }
    });
}

#[test]
fn wrap_frames_are_skipped() {
    for_each_backend(|make| {
        let (mut producer, mut consumer) = make(256);
        for round in 0..50u32 {
            let len = 40 + (round as usize * 7) % 25;
            let bytes: Vec<u8> = (0..len).map(|idx| (idx as u32 + round) as u8).collect();
            send(&mut producer, &bytes);
            producer.publish();
            assert_eq!(recv(&mut consumer), Some(bytes));
        }
    });
}

#[test]
fn full_ring_reserve_fails_without_blocking_and_frees_after_release() {
    for_each_backend(|make| {
        let (mut producer, mut consumer) = make(256);
        let mut sent = 0;
        while let Some(slot) = producer.try_reserve(48).expect("reserve") {
            producer.write_frame(slot, KIND_DATA, &[sent as u8; 48]);
            sent += 1;
        }
        assert_eq!(sent, 4, "4 frames of 64 bytes fill 256");
        producer.publish();
        let err = producer.reserve(
            48,
            Some(Instant::now() + Duration::from_millis(5)),
            &mut no_probe(),
        );
        assert_eq!(err, Err(WaitError::Timeout));
        assert_eq!(recv(&mut consumer), Some(vec![0; 48]));
        consumer.publish_head();
        assert!(producer.try_reserve(48).expect("reserve").is_some());
    });
}

#[test]
fn threaded_stream_in_order() {
    for_each_backend(|make| {
        let (mut producer, mut consumer) = make(1024);
        let n_frames: u64 = if cfg!(debug_assertions) {
            20_000
        } else {
            200_000
        };
        let writer = std::thread::spawn(move || {
            for seq in 0..n_frames {
                let len = (seq % 37) as usize * 3;
                let mut frame = seq.to_le_bytes().to_vec();
                frame.resize(8 + len, seq as u8);
                send(&mut producer, &frame);
                if seq % 5 == 0 {
                    producer.publish();
                }
            }
            producer.close();
        });
        let mut expected = 0u64;
        loop {
            match recv(&mut consumer) {
                Some(frame) => {
                    assert_eq!(
                        u64::from_le_bytes(frame[..8].try_into().expect("8 bytes")),
                        expected
                    );
                    assert_eq!(frame.len(), 8 + (expected % 37) as usize * 3);
                    assert!(frame[8..].iter().all(|byte| *byte == expected as u8));
                    expected += 1;
                }
                None => match consumer.wait(
                    Some(Instant::now() + Duration::from_secs(30)),
                    &mut no_probe(),
                    None,
                ) {
                    Ok(()) => {}
                    Err(WaitError::Closed) => break,
                    Err(err) => panic!("wait failed: {err:?}"),
                },
            }
        }
        assert_eq!(expected, n_frames);
        writer.join().expect("writer");
    });
}

#[test]
fn parked_consumer_is_woken_and_closed_wakes_it() {
    for_each_backend(|make| {
        let (mut producer, mut consumer) = make(1024);
        consumer.set_wait(WaitStrategy {
            spin: Duration::ZERO,
        });
        let reader = std::thread::spawn(move || {
            let deadline = Some(Instant::now() + Duration::from_secs(30));
            consumer
                .wait(deadline, &mut no_probe(), None)
                .expect("woken by data");
            let first = recv(&mut consumer);
            let closed = consumer.wait(deadline, &mut no_probe(), None);
            (first, closed)
        });
        std::thread::sleep(Duration::from_millis(20));
        send(&mut producer, b"wake");
        producer.publish();
        std::thread::sleep(Duration::from_millis(20));
        producer.close();
        let (first, closed) = reader.join().expect("reader");
        assert_eq!(first.as_deref(), Some(&b"wake"[..]));
        assert_eq!(closed, Err(WaitError::Closed));
    });
}

#[test]
fn probe_reports_peer_gone() {
    for_each_backend(|make| {
        let (_producer, mut consumer) = make(256);
        consumer.set_wait(WaitStrategy {
            spin: Duration::ZERO,
        });
        let mut calls = 0;
        let res = consumer.wait(
            None,
            &mut || {
                calls += 1;
                calls == 3
            },
            None,
        );
        assert_eq!(res, Err(WaitError::PeerGone));
    });
}

#[test]
fn stop_condition_ends_a_spinning_or_parked_wait() {
    for spin in [Duration::from_secs(30), Duration::ZERO] {
        for_each_backend(|make| {
            let (_producer, mut consumer) = make(256);
            consumer.set_wait(WaitStrategy { spin });
            let interrupter = consumer.interrupter();
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let seen = Arc::clone(&stop);
            let reader = std::thread::spawn(move || {
                let deadline = Some(Instant::now() + Duration::from_secs(30));
                consumer.wait(
                    deadline,
                    &mut no_probe(),
                    Some(&|| seen.load(std::sync::atomic::Ordering::SeqCst)),
                )
            });
            std::thread::sleep(Duration::from_millis(20));
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            interrupter.interrupt();
            assert_eq!(reader.join().expect("reader"), Err(WaitError::Stopped));
        });
    }
}

#[test]
fn closed_consumer_fails_producer_wait() {
    for_each_backend(|make| {
        let (mut producer, mut consumer) = make(256);
        consumer.close();
        assert_eq!(
            producer.reserve(8, None, &mut no_probe()),
            Err(WaitError::Closed)
        );
    });
}

/// Hostile producer: writes the shared words and headers directly.
mod hostile {
    use super::*;
    use crate::wire::FrameHeader;

    fn ctrl(producer: &Producer) -> &RingControl {
        producer.ring.ctrl()
    }

    fn write_raw_header(producer: &Producer, pos: usize, len: u32, kind: u32, reserved: u64) {
        // SAFETY: test-only: pos is in bounds and 16-aligned; no other thread runs.
        unsafe {
            producer.ring.write_header(
                pos,
                FrameHeader {
                    len,
                    kind,
                    reserved,
                },
            )
        };
    }

    fn corrupt_after(setup: impl Fn(&mut Producer)) -> Corruption {
        let (mut producer, mut consumer) = memfd(256);
        setup(&mut producer);
        let err = consumer.try_peek().expect_err("must be refused");
        // Poisoning is the channel's job; the ring reports the same thing again.
        assert_eq!(consumer.try_peek().err(), Some(err));
        err
    }

    #[test]
    fn tail_beyond_capacity() {
        let err = corrupt_after(|producer| ctrl(producer).tail.store(512, Ordering::Release));
        assert!(
            matches!(err, Corruption::TailBeyondCapacity { tail: 512, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn tail_backwards() {
        let (mut producer, mut consumer) = memfd(256);
        send(&mut producer, b"x");
        producer.publish();
        assert!(consumer.has_data().expect("data"));
        ctrl(&producer).tail.store(0, Ordering::Release);
        recv(&mut consumer);
        let err = consumer.try_peek().expect_err("backwards");
        assert!(
            matches!(
                err,
                Corruption::IndexBackwards {
                    word: "tail",
                    previous: 32,
                    found: 0
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn misaligned_tail() {
        let err = corrupt_after(|producer| ctrl(producer).tail.store(17, Ordering::Release));
        assert!(
            matches!(
                err,
                Corruption::Misaligned {
                    word: "tail",
                    found: 17
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn length_beyond_tail() {
        let err = corrupt_after(|producer| {
            write_raw_header(producer, 0, 100, KIND_DATA, 0);
            ctrl(producer).tail.store(32, Ordering::Release);
        });
        assert!(
            matches!(
                err,
                Corruption::LengthOutOfBounds {
                    len: 100,
                    available: 32
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn huge_length() {
        let err = corrupt_after(|producer| {
            write_raw_header(producer, 0, u32::MAX, KIND_DATA, 0);
            ctrl(producer).tail.store(256, Ordering::Release);
        });
        assert!(matches!(err, Corruption::FrameCrossesEnd { .. }), "{err:?}");
    }

    #[test]
    fn frame_crossing_the_end() {
        let (mut producer, mut consumer) = memfd(256);
        send(&mut producer, &[1; 192 - 16]);
        producer.publish();
        assert!(recv(&mut consumer).is_some());
        consumer.publish_head();
        // At offset 192 a 100-byte frame would cross the end at 256.
        write_raw_header(&producer, 192, 100, KIND_DATA, 0);
        ctrl(&producer).tail.store(192 + 128, Ordering::Release);
        let err = consumer.try_peek().expect_err("crosses");
        assert!(
            matches!(
                err,
                Corruption::FrameCrossesEnd {
                    offset: 192,
                    len: 100,
                    capacity: 256
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn bad_kind_and_reserved() {
        let err = corrupt_after(|producer| {
            write_raw_header(producer, 0, 0, 0xdead, 0);
            ctrl(producer).tail.store(16, Ordering::Release);
        });
        assert!(
            matches!(err, Corruption::BadKind { kind: 0xdead, .. }),
            "{err:?}"
        );
        let err = corrupt_after(|producer| {
            write_raw_header(producer, 0, 0, KIND_DATA, 7);
            ctrl(producer).tail.store(16, Ordering::Release);
        });
        assert_eq!(err, Corruption::BadReserved(7));
        let err = corrupt_after(|producer| {
            write_raw_header(producer, 0, 3, KIND_LARGE, 0);
            ctrl(producer).tail.store(32, Ordering::Release);
        });
        assert!(
            matches!(
                err,
                Corruption::BadKind {
                    kind: KIND_LARGE,
                    len: 3
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn wrap_beyond_tail() {
        let err = corrupt_after(|producer| {
            write_raw_header(producer, 0, 0, KIND_WRAP, 0);
            ctrl(producer).tail.store(16, Ordering::Release);
        });
        assert!(
            matches!(
                err,
                Corruption::LengthOutOfBounds {
                    len: 256,
                    available: 16
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn hostile_consumer_head() {
        let (mut producer, _consumer) = memfd(256);
        send(&mut producer, &[0; 200]);
        producer.publish();
        ctrl(&producer).head.store(4096, Ordering::Release);
        let err = producer.try_reserve(100).expect_err("head beyond tail");
        assert!(
            matches!(err, Corruption::HeadBeyondTail { head: 4096, .. }),
            "{err:?}"
        );
    }
}

/// One step of the model test.
#[derive(Clone, Debug)]
enum Op {
    /// Reserve `len`, write, then commit `used` (clamped to len) or abandon.
    Write {
        len: usize,
        used: usize,
        commit: bool,
    },
    /// Reserve exactly the bytes left up to the end of the ring (if at least a header).
    FillToEnd,
    Publish,
    /// Peek at the next frame and hold it.
    Read,
    /// Release the held frame.
    Release,
}

fn op_strategy(max_len: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..=max_len, 0..=max_len, proptest::bool::weighted(0.9))
            .prop_map(|(len, used, commit)| Op::Write { len, used: used.min(len), commit }),
        3 => (0..=48usize).prop_map(|len| Op::Write { len, used: len, commit: true }),
        1 => Just(Op::FillToEnd),
        3 => Just(Op::Publish),
        4 => Just(Op::Read),
        4 => Just(Op::Release),
    ]
}

fn pattern(seq: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|idx| (seq as usize * 31 + idx) as u8)
        .collect()
}

fn run_model(make: Make, capacity: usize, ops: &[Op]) {
    let (mut producer, mut consumer) = make(capacity);
    let mut staged: VecDeque<Vec<u8>> = VecDeque::new();
    let mut visible: VecDeque<Vec<u8>> = VecDeque::new();
    let mut held: Option<(Vec<u8>, u64)> = None;
    let mut seq = 0u64;
    for op in ops {
        let (len, used, commit) = match *op {
            Op::Write { len, used, commit } => (len, used, commit),
            Op::FillToEnd => {
                let to_end = capacity - (producer.staged as usize & (capacity - 1));
                if to_end < 16 + 1 {
                    continue;
                }
                (to_end - 16, to_end - 16, true)
            }
            Op::Publish => {
                producer.publish();
                visible.extend(staged.drain(..));
                continue;
            }
            Op::Read => {
                if held.is_some() {
                    continue;
                }
                match consumer.try_peek().expect("honest producer") {
                    Some((Item::Data { pos, len }, end)) => {
                        assert_eq!(pos % 16, 0, "payload alignment");
                        // SAFETY: pos/len from the peek just above; released in Release.
                        let bytes = unsafe { consumer.payload(pos, len) }.to_vec();
                        let expected = visible.front().expect("model has a frame");
                        assert_eq!(&bytes, expected);
                        held = Some((bytes, end));
                    }
                    Some((item, _)) => panic!("unexpected {item:?}"),
                    None => {
                        assert!(
                            visible.is_empty(),
                            "model has {} visible frames",
                            visible.len()
                        );
                        consumer.publish_head();
                    }
                }
                continue;
            }
            Op::Release => {
                if let Some((_, end)) = held.take() {
                    consumer.release(end);
                    visible.pop_front();
                }
                continue;
            }
        };
        if len > producer.max_in_ring() {
            continue;
        }
        match producer.try_reserve(len).expect("honest consumer") {
            Some(slot) => {
                assert_eq!((slot.pos + FRAME_HEADER_SIZE) % 16, 0);
                assert!(
                    slot.pos + FRAME_HEADER_SIZE + pad16(len) <= capacity,
                    "slot inside the ring"
                );
                if commit {
                    producer.write_frame(slot, KIND_DATA, &pattern(seq, used));
                    staged.push_back(pattern(seq, used));
                    seq += 1;
                }
            }
            None => {
                // The ring may only be full while something is outstanding: frames not
                // yet consumed, or consumed but with head not yet published.
                let outstanding = producer.staged != consumer.published;
                assert!(outstanding, "reserve({len}) failed on an empty ring");
            }
        }
    }
    // Drain: everything committed arrives, in order.
    if let Some((_, end)) = held.take() {
        consumer.release(end);
        visible.pop_front();
    }
    producer.publish();
    visible.extend(staged.drain(..));
    while let Some(bytes) = recv(&mut consumer) {
        assert_eq!(Some(bytes), visible.pop_front());
    }
    assert!(visible.is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn model_heap(capacity_log in 8usize..=10, ops in proptest::collection::vec(op_strategy(300), 1..400)) {
        let capacity = 1 << capacity_log;
        run_model(heap, capacity, &ops);
    }

    #[test]
    fn model_memfd(capacity_log in 8usize..=10, ops in proptest::collection::vec(op_strategy(300), 1..400)) {
        let capacity = 1 << capacity_log;
        run_model(memfd, capacity, &ops);
    }
}
