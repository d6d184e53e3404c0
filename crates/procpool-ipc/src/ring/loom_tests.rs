//! Loom models of the ring's index protocol on the heap backend (capacity 256, so a few
//! frames reach the wrap-around). Run with
//! `RUSTFLAGS="--cfg procpool_loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p procpool-ipc --release --lib loom`.
//!
//! The first two models use the non-blocking operations in a yield loop: they check that
//! the Release/Acquire pairs on `head` and `tail` hand frames over intact, in order,
//! across a WRAP, and that the producer never overwrites bytes the consumer has not
//! released. The last two park for real on the loom futex model in `doorbell.rs` (a
//! mutex and a condvar, no timeout): a lost wake-up would be a deadlock, which loom
//! reports, so they check the sleep-flag handshake of README "Wake-up handshake".

use super::*;

fn send_all(mut producer: Producer, frames: &[Vec<u8>]) {
    for frame in frames {
        let slot = loop {
            match producer.try_reserve(frame.len()).expect("honest consumer") {
                Some(slot) => break slot,
                None => {
                    producer.publish();
                    loom::thread::yield_now();
                }
            }
        };
        producer.write_frame(slot, KIND_DATA, frame);
        producer.publish();
    }
    producer.close();
}

fn recv_all(consumer: &mut Consumer, expected: &[Vec<u8>]) {
    for frame in expected {
        let (item, end) = loop {
            match consumer.try_peek().expect("honest producer") {
                Some(found) => break found,
                None => {
                    consumer.publish_head();
                    loom::thread::yield_now();
                }
            }
        };
        let Item::Data { pos, len } = item else {
            panic!("unexpected {item:?}")
        };
        // SAFETY: pos/len from the peek above; released right after the comparison.
        assert_eq!(unsafe { consumer.payload(pos, len) }, &frame[..]);
        consumer.release(end);
    }
    // Afterwards: nothing more, and the ring is closed.
    assert_eq!(consumer.try_peek().expect("honest producer"), None);
}

#[test]
fn loom_frames_cross_the_wrap_in_order() {
    loom::model(|| {
        let (producer, mut consumer) = heap_ring(
            256,
            WaitStrategy {
                spin: Duration::ZERO,
            },
        );
        // 96 + 16 = 112 bytes each: the third frame needs a WRAP at offset 224.
        let frames: Vec<Vec<u8>> = (0..3u8).map(|idx| vec![idx + 1; 96]).collect();
        let sent = frames.clone();
        let writer = loom::thread::spawn(move || send_all(producer, &sent));
        recv_all(&mut consumer, &frames);
        writer.join().expect("writer");
    });
}

#[test]
fn loom_full_ring_waits_for_release() {
    loom::model(|| {
        let (producer, mut consumer) = heap_ring(
            256,
            WaitStrategy {
                spin: Duration::ZERO,
            },
        );
        // Two 128-byte frames fill the ring; the third must wait for a release.
        let frames: Vec<Vec<u8>> = (0..3u8).map(|idx| vec![idx + 7; 112]).collect();
        let sent = frames.clone();
        let writer = loom::thread::spawn(move || send_all(producer, &sent));
        recv_all(&mut consumer, &frames);
        writer.join().expect("writer");
    });
}

fn no_probe() -> impl FnMut() -> bool {
    || false
}

#[test]
fn loom_parked_consumer_is_woken() {
    loom::model(|| {
        let parked = WaitStrategy {
            spin: Duration::ZERO,
        };
        let (mut producer, mut consumer) = heap_ring(256, parked);
        let writer = loom::thread::spawn(move || {
            let slot = producer.reserve(8, None, &mut no_probe()).expect("space");
            producer.write_frame(slot, KIND_DATA, b"wake up!");
            producer.publish();
            producer
        });
        // Parks (no spin) until the frame is published; a lost wake-up deadlocks.
        consumer.wait(None, &mut no_probe(), None).expect("woken");
        let (item, end) = consumer.try_peek().expect("honest").expect("frame");
        let Item::Data { pos, len } = item else {
            panic!("unexpected {item:?}")
        };
        // SAFETY: pos/len from the peek above; released right after.
        assert_eq!(unsafe { consumer.payload(pos, len) }, b"wake up!");
        consumer.release(end);
        drop(writer.join().expect("writer"));
    });
}

#[test]
fn loom_parked_producer_is_woken() {
    loom::model(|| {
        let parked = WaitStrategy {
            spin: Duration::ZERO,
        };
        let (mut producer, mut consumer) = heap_ring(256, parked);
        // Two 128-byte frames fill the ring.
        for idx in 0..2u8 {
            let slot = producer.try_reserve(112).expect("honest").expect("space");
            producer.write_frame(slot, KIND_DATA, &[idx; 112]);
        }
        producer.publish();
        let writer = loom::thread::spawn(move || {
            // Parks until the consumer publishes head; a lost wake-up deadlocks.
            let slot = producer.reserve(112, None, &mut no_probe()).expect("space");
            producer.write_frame(slot, KIND_DATA, &[2; 112]);
            producer.publish();
        });
        let (_item, end) = consumer.try_peek().expect("honest").expect("frame");
        consumer.release(end);
        // The ring is not empty, so nothing forces a publish except the producer's flag.
        // Publish as the consumer does when it runs dry.
        consumer.publish_head();
        writer.join().expect("writer");
    });
}
