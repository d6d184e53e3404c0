//! In-process tests of the channel API (both ends in this process) and of `open`'s checks.

use std::os::unix::net::UnixStream;

use super::*;
use crate::{HandoffError, recv_handoff, send_handoff};

fn pair(config: &ChannelConfig) -> (Endpoint, Endpoint) {
    let (creator, handoff) = Endpoint::create(config).expect("create");
    let opener = Endpoint::open(handoff).expect("open");
    (creator, opener)
}

fn quick() -> ChannelConfig {
    ChannelConfig::new()
        .submission_capacity(4096)
        .completion_capacity(4096)
        .spin(Duration::from_micros(5))
}

#[test]
fn frames_travel_both_ways_aligned() {
    let (mut parent, mut child) = pair(&quick());
    parent.sender().send(b"ping").expect("send");
    let frame = child.receiver().recv().expect("recv");
    assert_eq!(&*frame, b"ping");
    assert_eq!(frame.as_ptr() as usize % 16, 0);
    assert!(!frame.is_out_of_band());
    drop(frame);
    child.sender().send(b"pong").expect("send");
    assert_eq!(&*parent.receiver().recv().expect("recv"), b"pong");
}

#[test]
fn committed_frames_are_invisible_until_publish() {
    let (parent, child) = pair(&quick());
    let (mut sender, _keep) = parent.split();
    let (_keep2, mut receiver) = child.split();
    for idx in 0..3u8 {
        let mut grant = sender.reserve(10, None).expect("reserve");
        assert_eq!(grant.len(), 10);
        assert_eq!(grant.as_ptr() as usize % 16, 0);
        grant[..3].copy_from_slice(&[idx; 3]);
        grant.commit(3).expect("commit");
    }
    assert!(receiver.try_recv().expect("try").is_none());
    sender.publish();
    for idx in 0..3u8 {
        assert_eq!(
            &*receiver.try_recv().expect("try").expect("frame"),
            &[idx; 3]
        );
    }
    assert!(receiver.try_recv().expect("try").is_none());
}

#[test]
fn abandoned_grant_sends_nothing_and_overlong_commit_is_refused() {
    let (parent, child) = pair(&quick());
    let (mut sender, _keep) = parent.split();
    let (_keep2, mut receiver) = child.split();
    drop(sender.reserve(100, None).expect("reserve"));
    let grant = sender.reserve(8, None).expect("reserve");
    assert!(matches!(
        grant.commit(9),
        Err(SendError::TooLarge { len: 9, max: 8 })
    ));
    sender.send(b"only").expect("send");
    assert_eq!(&*receiver.recv().expect("recv"), b"only");
    assert!(receiver.try_recv().expect("try").is_none());
}

#[test]
fn frames_over_max_frame_are_refused() {
    let (parent, _child) = pair(&quick().max_frame(100));
    let (mut sender, _keep) = parent.split();
    assert!(matches!(
        sender.send(&[0; 101]),
        Err(SendError::TooLarge { len: 101, max: 100 })
    ));
    assert!(matches!(
        sender.reserve(101, None),
        Err(SendError::TooLarge { len: 101, max: 100 })
    ));
}

#[test]
fn large_frames_go_out_of_band_in_order() {
    let (parent, child) = pair(&quick().large_threshold(64));
    let (mut sender, _keep) = parent.split();
    let (_keep2, mut receiver) = child.split();
    let big: Vec<u8> = (0..10_000u32).map(|idx| idx as u8).collect();
    sender.send(&big).expect("send big");
    sender.send(b"small").expect("send small");
    let mut grant = sender.reserve(5000, None).expect("reserve big");
    grant.fill(9);
    grant.commit(4000).expect("commit");
    let empty = sender.reserve(65, None).expect("reserve big");
    empty.commit(0).expect("commit empty");
    sender.publish();
    let frame = receiver.recv().expect("big");
    assert!(frame.is_out_of_band());
    assert_eq!(&*frame, &big[..]);
    drop(frame);
    assert_eq!(&*receiver.recv().expect("small"), b"small");
    let frame = receiver.recv().expect("granted");
    assert!(frame.is_out_of_band());
    assert_eq!(&*frame, &[9; 4000][..]);
    drop(frame);
    assert_eq!(receiver.recv().expect("empty").len(), 0);
}

#[test]
fn timeouts_and_try_recv() {
    let (parent, child) = pair(&quick());
    let (mut sender, _keep) = parent.split();
    let (_keep2, mut receiver) = child.split();
    assert!(matches!(
        receiver.recv_timeout(Duration::from_millis(10)),
        Err(RecvError::Timeout)
    ));
    assert!(receiver.try_recv().expect("try").is_none());
    // Fill the 4 KiB ring; the next send times out.
    let mut res = Ok(());
    for _ in 0..100 {
        res = sender.send_timeout(&[0; 1000], Duration::from_millis(10));
        if res.is_err() {
            break;
        }
    }
    assert!(matches!(res, Err(SendError::Timeout)), "{res:?}");
}

#[test]
fn dropping_the_sender_drains_then_disconnects() {
    let (parent, child) = pair(&quick());
    let (mut sender, _keep) = parent.split();
    let (_keep2, mut receiver) = child.split();
    sender.send(b"last words").expect("send");
    drop(sender);
    assert_eq!(&*receiver.recv().expect("drained first"), b"last words");
    assert!(matches!(receiver.recv(), Err(RecvError::Disconnected)));
    assert!(matches!(receiver.try_recv(), Err(RecvError::Disconnected)));
}

#[test]
fn dropping_the_receiver_fails_the_sender() {
    let (parent, child) = pair(&quick());
    let (mut sender, _keep) = parent.split();
    drop(child);
    assert!(matches!(
        sender.send(b"anyone?"),
        Err(SendError::Disconnected)
    ));
}

#[test]
fn closer_wakes_both_sides() {
    let (parent, child) = pair(&quick().spin(Duration::ZERO));
    let closer = parent.closer();
    let (_sender, mut receiver) = parent.split();
    let (mut child_sender, mut child_receiver) = child.split();
    let waiter = std::thread::spawn(move || {
        let res = child_receiver
            .recv_timeout(Duration::from_secs(60))
            .map(|frame| frame.len());
        (res, child_receiver)
    });
    std::thread::sleep(Duration::from_millis(20));
    closer.close();
    let (res, _child_receiver) = waiter.join().expect("waiter");
    assert!(matches!(res, Err(RecvError::Disconnected)), "{res:?}");
    assert!(matches!(
        receiver.recv_timeout(Duration::from_secs(60)),
        Err(RecvError::Disconnected)
    ));
    assert!(matches!(
        child_sender.send(b"x"),
        Err(SendError::Disconnected)
    ));
}

#[test]
fn handoff_travels_over_a_unix_stream() {
    let (mut parent, handoff) = Endpoint::create(&quick()).expect("create");
    let (left, right) = UnixStream::pair().expect("pair");
    send_handoff(&left, &handoff, b"hello worker").expect("send handoff");
    drop(handoff);
    let mut buf = [0u8; 64];
    let (received, len) = recv_handoff(&right, &mut buf).expect("recv handoff");
    assert_eq!(&buf[..len], b"hello worker");
    let mut child = Endpoint::open(received).expect("open");
    parent.sender().send(b"over SCM_RIGHTS").expect("send");
    assert_eq!(&*child.receiver().recv().expect("recv"), b"over SCM_RIGHTS");

    send_handoff(
        &left,
        &Endpoint::create(&quick()).expect("create").1,
        &[0; 65],
    )
    .expect("send");
    assert!(matches!(
        recv_handoff(&right, &mut buf),
        Err(HandoffError::PayloadTooLarge {
            len: 65,
            capacity: 64
        })
    ));
}

/// A region with a valid header for `quick()`, then `edit` applied to its header copy.
fn open_edited(edit: impl FnOnce(&mut RegionHeader)) -> Result<Endpoint, OpenError> {
    let layout = Layout::for_config(&quick()).expect("layout");
    let region = Region::create(layout.region_len).expect("region");
    let mut header = layout.header();
    edit(&mut header);
    // SAFETY: fresh region, page aligned, at least a header long; only we map it.
    unsafe { std::ptr::write_volatile(region.base() as *mut RegionHeader, header) };
    let (_mine, theirs) = socket_pair().expect("socketpair");
    Endpoint::open(Handoff::new(region.dup_fd().expect("dup"), theirs))
}

#[test]
fn open_accepts_a_valid_header() {
    assert!(open_edited(|_| {}).is_ok());
}

#[test]
fn open_rejects_bad_magic() {
    let res = open_edited(|header| header.magic = 0x1122_3344);
    assert!(
        matches!(res, Err(OpenError::BadMagic { found: 0x1122_3344 })),
        "{res:?}"
    );
}

#[test]
fn open_rejects_other_layout_versions() {
    let res = open_edited(|header| header.layout_version = LAYOUT_VERSION + 1);
    assert!(
        matches!(res, Err(OpenError::VersionMismatch { expected: LAYOUT_VERSION, found }) if found == LAYOUT_VERSION + 1),
        "{res:?}"
    );
}

#[test]
fn open_rejects_size_and_layout_lies() {
    let res = open_edited(|header| header.region_len += 4096);
    assert!(
        matches!(res, Err(OpenError::SizeMismatch { .. })),
        "{res:?}"
    );
    let res = open_edited(|header| header.ring_capacity[1] = 3000);
    assert!(
        matches!(res, Err(OpenError::BadLayout("ring capacity"))),
        "{res:?}"
    );
    let res = open_edited(|header| header.ring_capacity[1] = 1 << 20);
    assert!(
        matches!(res, Err(OpenError::BadLayout("ring beyond the region"))),
        "{res:?}"
    );
    let res = open_edited(|header| header.ring_offset[1] = header.ring_offset[0]);
    assert!(
        matches!(res, Err(OpenError::BadLayout("ring offset"))),
        "{res:?}"
    );
    let res = open_edited(|header| header.large_threshold[0] = 1 << 40);
    assert!(
        matches!(res, Err(OpenError::BadLayout("large threshold"))),
        "{res:?}"
    );
}

#[test]
#[allow(clippy::disallowed_methods)] // a hand-made, unsealed memfd
fn open_rejects_unsealed_regions_and_wrong_sockets() {
    let file = {
        // SAFETY: valid C string; we own the returned fd.
        let raw = unsafe { libc::memfd_create(c"unsealed".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(raw >= 0);
        // SAFETY: fresh fd from memfd_create.
        std::fs::File::from(unsafe { OwnedFd::from_raw_fd(raw) })
    };
    file.set_len(1 << 16).expect("len");
    let (_mine, theirs) = socket_pair().expect("socketpair");
    let res = Endpoint::open(Handoff::new(file.into(), theirs));
    assert!(matches!(res, Err(OpenError::NotSealed { .. })), "{res:?}");

    let (_parent, handoff) = Endpoint::create(&quick()).expect("create");
    let (region, _socket) = handoff.into_fds();
    let (stream, _other) = UnixStream::pair().expect("pair");
    let res = Endpoint::open(Handoff::new(region, stream.into()));
    assert!(matches!(res, Err(OpenError::BadSocket)), "{res:?}");
}

#[test]
fn config_is_validated() {
    let res = Endpoint::create(&ChannelConfig::new().submission_capacity(1000));
    assert!(matches!(res, Err(CreateError::InvalidConfig(_))), "{res:?}");
    let res = Endpoint::create(&ChannelConfig::new().max_frame(0));
    assert!(matches!(res, Err(CreateError::InvalidConfig(_))), "{res:?}");
    let (parent, _handoff) =
        Endpoint::create(&ChannelConfig::new().completion_capacity(4096)).expect("create");
    let (sender, receiver) = parent.split();
    assert_eq!(sender.capacity(), 1 << 20);
    assert_eq!(sender.large_threshold(), 1 << 18);
    assert_eq!(receiver.capacity(), 4096);
}

#[test]
fn halves_are_send_and_closer_is_sync() {
    fn is_send<T: Send>() {}
    fn is_send_sync<T: Send + Sync + Clone>() {}
    is_send::<Sender>();
    is_send::<Receiver>();
    is_send::<Endpoint>();
    is_send_sync::<Closer>();
}

#[test]
fn a_dead_peer_is_remembered() {
    let (parent, handoff) = Endpoint::create(&quick().spin(Duration::ZERO)).expect("create");
    drop(handoff); // the peer's socket end closes: as if the peer died before opening
    let (mut sender, mut receiver) = parent.split();
    assert!(matches!(
        receiver.recv_timeout(Duration::from_secs(60)),
        Err(RecvError::Disconnected)
    ));
    // Known now: later calls fail at once instead of waiting for another probe. A zero
    // timeout would report Timeout if they waited, and a send would succeed (there is room).
    assert!(matches!(
        receiver.recv_timeout(Duration::ZERO),
        Err(RecvError::Disconnected)
    ));
    assert!(matches!(
        sender.send_timeout(b"x", Duration::ZERO),
        Err(SendError::Disconnected)
    ));
}

/// Plays a hostile sender of LARGE frames: optionally sends `fd` with sequence `fd_seq`,
/// then commits a LARGE frame with `body`, bypassing every check of `Sender`.
fn forge_large(sender: &mut Sender, body: LargeBody, fd: Option<(OwnedFd, u64)>) {
    if let Some((fd, fd_seq)) = fd {
        send_with_fds(
            sender.link.socket.as_fd(),
            &fd_seq.to_le_bytes(),
            &[fd.as_fd()],
            false,
        )
        .expect("send fd");
    }
    let slot = sender
        .producer
        .try_reserve(LARGE_BODY_SIZE)
        .expect("ring")
        .expect("space");
    // SAFETY: LargeBody is plain integers.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            (&body as *const LargeBody).cast::<u8>(),
            size_of::<LargeBody>(),
        )
    };
    sender.producer.write_frame(slot, KIND_LARGE, bytes);
    sender.producer.publish();
}

fn sealed_memfd(len: usize) -> OwnedFd {
    let mut writer = OobWriter::create(len).expect("memfd");
    writer.write_all(&vec![3; len]).expect("write");
    writer.seal(len).expect("seal")
}

fn large_error(body: LargeBody, fd: Option<(OwnedFd, u64)>) -> (RecvError, RecvError) {
    let (parent, child) = pair(&quick());
    let (mut sender, _keep) = parent.split();
    let (_keep2, mut receiver) = child.split();
    forge_large(&mut sender, body, fd);
    let first = receiver
        .recv_timeout(Duration::from_secs(60))
        .expect_err("refused");
    let second = receiver
        .recv_timeout(Duration::from_secs(60))
        .expect_err("poisoned");
    (first, second)
}

#[test]
fn hostile_large_frames_are_refused() {
    let (first, second) = large_error(LargeBody { len: 100, seq: 0 }, None);
    assert!(
        matches!(first, RecvError::Corrupt(Corruption::LargeMissingFd)),
        "{first:?}"
    );
    assert!(
        matches!(second, RecvError::Corrupt(Corruption::LargeMissingFd)),
        "{second:?}"
    );

    let (first, _) = large_error(LargeBody { len: 100, seq: 5 }, Some((sealed_memfd(100), 5)));
    assert!(
        matches!(
            first,
            RecvError::Corrupt(Corruption::LargeSequence {
                expected: 0,
                found: 5
            })
        ),
        "{first:?}"
    );

    let (first, _) = large_error(LargeBody { len: 100, seq: 0 }, Some((sealed_memfd(100), 9)));
    assert!(
        matches!(
            first,
            RecvError::Corrupt(Corruption::LargeSequence {
                expected: 0,
                found: 9
            })
        ),
        "{first:?}"
    );

    let (first, _) = large_error(LargeBody { len: 100, seq: 0 }, Some((sealed_memfd(64), 0)));
    assert!(
        matches!(
            first,
            RecvError::Corrupt(Corruption::LargeSizeMismatch {
                expected: 100,
                found: 64
            })
        ),
        "{first:?}"
    );

    let unsealed = OwnedFd::from(OobWriter::create(100).expect("memfd").into_file());
    let (first, _) = large_error(LargeBody { len: 100, seq: 0 }, Some((unsealed, 0)));
    assert!(
        matches!(first, RecvError::Corrupt(Corruption::LargeNotSealed)),
        "{first:?}"
    );

    let (first, _) = large_error(
        LargeBody {
            len: 1 << 40,
            seq: 0,
        },
        None,
    );
    assert!(
        matches!(first, RecvError::Corrupt(Corruption::LargeTooLong { .. })),
        "{first:?}"
    );
}

#[test]
fn open_rejects_a_truncated_region() {
    let region = Region::create(1024).expect("region");
    let (_mine, theirs) = socket_pair().expect("socketpair");
    let res = Endpoint::open(Handoff::new(region.dup_fd().expect("dup"), theirs));
    assert!(
        matches!(
            res,
            Err(OpenError::SizeMismatch {
                expected: 4096,
                found: 1024
            })
        ),
        "{res:?}"
    );
}

#[test]
fn sealed_files_travel_out_of_band_and_can_be_kept() {
    use std::io::Write;
    let (mut parent, mut child) = pair(&quick());
    let mut writer = crate::SealedWriter::new().expect("memfd");
    writer.write_all(b"shared bytes").expect("write");
    let file = writer.seal().expect("seal");
    // Small or not, a sealed file always goes out of band, interleaved in order with frames.
    parent.sender().send(b"before").expect("send");
    parent
        .sender()
        .send_sealed(&file, None)
        .expect("send sealed");
    parent.sender().send(b"after").expect("send");
    assert_eq!(&*child.receiver().recv().expect("recv"), b"before");
    let kept = {
        let mut frame = child.receiver().recv().expect("recv");
        assert!(frame.is_out_of_band());
        assert_eq!(&*frame, b"shared bytes");
        let kept = frame.take_out_of_band().expect("out of band");
        assert!(frame.is_empty());
        kept
    };
    assert_eq!(&*child.receiver().recv().expect("recv"), b"after");
    assert_eq!(&kept[..], b"shared bytes");
    // The same file can be sent again (each send passes a new descriptor).
    parent
        .sender()
        .send_sealed(&file, None)
        .expect("send again");
    let mut frame = child.receiver().recv().expect("recv");
    assert_eq!(&*frame, b"shared bytes");
    assert!(frame.take_out_of_band().is_some());
    drop(frame);
    child.sender().send(b"in ring").expect("send");
    let mut frame = parent.receiver().recv().expect("recv");
    assert!(frame.take_out_of_band().is_none());
    assert_eq!(&*frame, b"in ring");
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|idx| (idx as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn pads_are_reused_and_a_sealed_memfd_is_the_fallback() {
    let (parent, child) = pair(&quick().large_threshold(64));
    let (mut sender, _keep) = parent.split();
    let (_keep2, mut receiver) = child.split();
    // Consecutive frames with different contents reuse pad 0: one fd crosses, not three.
    for seed in 0..3 {
        let big = pattern(10_000, seed);
        sender.send(&big).expect("send");
        let frame = receiver.recv().expect("recv");
        assert!(frame.is_out_of_band() && !frame.is_sealed());
        assert_eq!(&*frame, &big[..]);
        assert_eq!(frame.as_ptr() as usize % 4096, 0);
    }
    assert_eq!(sender.next_large_seq, 1, "one pad announced");
    assert!(sender.pads[1].is_none());
    // Two frames in flight use both pads; a third finds both busy and goes sealed.
    let (one, two, three) = (pattern(5000, 7), pattern(300_000, 8), pattern(6000, 9));
    sender.send(&one).expect("send");
    sender.send(&two).expect("send");
    sender.send(&three).expect("send");
    for (expect, sealed) in [(&one, false), (&two, false), (&three, true)] {
        let frame = receiver.recv().expect("recv");
        assert_eq!(frame.is_sealed(), sealed);
        assert_eq!(&*frame, &expect[..]);
    }
    // Pad 0 (1 MiB) held `one`; `two` made pad 1; `three` took a fresh memfd.
    assert_eq!(sender.next_large_seq, 3);
    // Both pads are free again and big enough: the next frames reuse them.
    let four = pattern(900_000, 10);
    sender.send(&four).expect("send");
    assert_eq!(&*receiver.recv().expect("recv"), &four[..]);
    assert_eq!(sender.next_large_seq, 3, "no new fd for a reused pad");
}

#[test]
fn pads_grow_on_demand_and_respect_the_limit() {
    let (parent, child) = pair(&quick().large_threshold(64).pad_limit(3 << 20));
    let (mut sender, _keep) = parent.split();
    let (_keep2, mut receiver) = child.split();
    for (len, seed, sealed) in [
        (100_000, 1, false),
        (2_500_000, 2, false),
        (3 << 20, 3, false),
        ((3 << 20) + 1, 4, true),
        (50_000, 5, false),
    ] {
        let big = pattern(len, seed);
        sender.send(&big).expect("send");
        let frame = receiver.recv().expect("recv");
        assert_eq!(frame.is_sealed(), sealed, "{len} bytes");
        assert_eq!(&*frame, &big[..]);
    }
    // 1 MiB pad, grown to 3 MiB (2.5 MB rounded up), reused for 3 MiB; one sealed memfd.
    assert_eq!(sender.next_large_seq, 3);
    sender.set_pad_limit(0);
    assert!(sender.pads.iter().all(Option::is_none));
    let big = pattern(1000, 6);
    sender.send(&big).expect("send");
    let frame = receiver.recv().expect("recv");
    assert!(frame.is_sealed());
    assert_eq!(&*frame, &big[..]);
}

/// A pad is rounded up to a MiB, but never past the channel's `max_frame`: the peer refuses a
/// pad larger than that as corrupt (found by the `ring_reader` fuzz target, session 4).
#[test]
fn pads_never_exceed_max_frame() {
    let max = (1 << 20) + (1 << 19);
    let (parent, child) = pair(&quick().large_threshold(64).max_frame(max as u64));
    let (mut sender, _keep) = parent.split();
    let (_keep2, mut receiver) = child.split();
    for (len, seed) in [(1_100_000, 1), (max, 2), (200_000, 3)] {
        let big = pattern(len, seed);
        sender.send(&big).expect("send");
        let frame = receiver.recv().expect("an honest pad is accepted");
        assert!(!frame.is_sealed(), "{len} bytes travel in a pad");
        assert_eq!(&*frame, &big[..]);
    }
}

#[test]
fn a_grant_in_a_pad_is_written_in_place() {
    let (parent, child) = pair(&quick().large_threshold(64));
    let (mut sender, _keep) = parent.split();
    let (_keep2, mut receiver) = child.split();
    for round in 0..2u8 {
        let mut grant = sender.reserve(5000, None).expect("reserve");
        assert_eq!(grant.len(), 5000);
        grant.fill(round + 1);
        grant.commit(4000).expect("commit");
        // An abandoned grant leaves the pad free and sends nothing.
        drop(sender.reserve(7000, None).expect("reserve"));
        sender.publish();
        let frame = receiver.recv().expect("recv");
        assert!(!frame.is_sealed());
        assert_eq!(&*frame, &[round + 1; 4000][..]);
    }
    assert!(receiver.try_recv().expect("try").is_none());
    assert_eq!(sender.next_large_seq, 1);
}

/// Plays a hostile sender of PAD frames (see `forge_large`).
fn forge_pad(sender: &mut Sender, body: PadBody, fd: Option<(OwnedFd, u64)>) {
    if let Some((fd, fd_seq)) = fd {
        send_with_fds(
            sender.link.socket.as_fd(),
            &fd_seq.to_le_bytes(),
            &[fd.as_fd()],
            false,
        )
        .expect("send fd");
    }
    let slot = sender
        .producer
        .try_reserve(LARGE_BODY_SIZE)
        .expect("ring")
        .expect("space");
    // SAFETY: PadBody is plain integers.
    let bytes = unsafe {
        std::slice::from_raw_parts((&body as *const PadBody).cast::<u8>(), size_of::<PadBody>())
    };
    sender.producer.write_frame(slot, KIND_PAD, bytes);
    sender.producer.publish();
}

fn pad_error(body: PadBody, fd: Option<(OwnedFd, u64)>) -> RecvError {
    let (parent, child) = pair(&quick());
    let (mut sender, _keep) = parent.split();
    let (_keep2, mut receiver) = child.split();
    forge_pad(&mut sender, body, fd);
    let first = receiver
        .recv_timeout(Duration::from_secs(60))
        .expect_err("refused");
    let second = receiver
        .recv_timeout(Duration::from_secs(60))
        .expect_err("poisoned");
    assert_eq!(format!("{first:?}"), format!("{second:?}"), "poisoned");
    first
}

fn pad_fd(len: usize) -> OwnedFd {
    OwnedFd::from(PadWriter::create(len).expect("pad").file_for_test())
}

#[test]
fn hostile_pad_frames_are_refused() {
    let body = |len, slot, flags| PadBody { len, slot, flags };
    let err = pad_error(body(100, 2, 0), None);
    assert!(
        matches!(
            err,
            RecvError::Corrupt(Corruption::PadBadSlot { slot: 2, .. })
        ),
        "{err:?}"
    );
    let err = pad_error(body(100, 0, 2), None);
    assert!(
        matches!(
            err,
            RecvError::Corrupt(Corruption::PadBadSlot { flags: 2, .. })
        ),
        "{err:?}"
    );
    let err = pad_error(body(100, 1, 0), None);
    assert!(
        matches!(err, RecvError::Corrupt(Corruption::PadUnknown { slot: 1 })),
        "{err:?}"
    );
    let err = pad_error(body(100, 0, PAD_NEW), None);
    assert!(
        matches!(err, RecvError::Corrupt(Corruption::LargeMissingFd)),
        "{err:?}"
    );
    let err = pad_error(body(100, 0, PAD_NEW), Some((pad_fd(4096), 3)));
    assert!(
        matches!(err, RecvError::Corrupt(Corruption::LargeSequence { .. })),
        "{err:?}"
    );
    let err = pad_error(body(5000, 0, PAD_NEW), Some((pad_fd(4096), 0)));
    assert!(
        matches!(
            err,
            RecvError::Corrupt(Corruption::PadOverrun {
                len: 5000,
                size: 4096
            })
        ),
        "{err:?}"
    );
    // A pad that could shrink under our mapping (SIGBUS) is refused.
    let unsealed = OwnedFd::from(OobWriter::create(4096).expect("memfd").into_file());
    let err = pad_error(body(100, 0, PAD_NEW), Some((unsealed, 0)));
    assert!(
        matches!(err, RecvError::Corrupt(Corruption::PadRefused)),
        "{err:?}"
    );
    let err = pad_error(body(1 << 40, 0, 0), None);
    assert!(
        matches!(err, RecvError::Corrupt(Corruption::LargeTooLong { .. })),
        "{err:?}"
    );
}

/// What a pad-using sender does, modelled: every large frame takes the first free pad big
/// enough, else the first free slot (a new pad), else a fresh sealed memfd; a pad is busy
/// from its send until the receiver drops that frame.
mod pad_model {
    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Op {
        Send { len: usize, seed: u8 },
        Recv,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0usize..6000, any::<u8>()).prop_map(|(len, seed)| Op::Send { len, seed }),
            2 => Just(Op::Recv),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn frames_arrive_exactly_and_pads_follow_the_model(ops in proptest::collection::vec(op(), 1..60)) {
            const THRESHOLD: usize = 64;
            const LIMIT: usize = 4096;
            let config = ChannelConfig::new()
                .submission_capacity(64 * 1024)
                .completion_capacity(4096)
                .large_threshold(THRESHOLD)
                .pad_limit(LIMIT);
            let (parent, child) = pair(&config);
            let (mut sender, _keep) = parent.split();
            let (_keep2, mut receiver) = child.split();
            // In flight: (bytes, expected kind: None = in ring, Some(None) = sealed,
            // Some(Some(slot)) = pad).
            let mut in_flight = std::collections::VecDeque::new();
            let mut busy = [false; PAD_SLOTS];
            let mut made = [false; PAD_SLOTS];
            for op in ops {
                match op {
                    Op::Send { len, seed } => {
                        let bytes = pattern(len, seed);
                        let kind = if len <= THRESHOLD {
                            None
                        } else if len > LIMIT {
                            Some(None)
                        } else {
                            // Every pad is LIMIT bytes (pad_size caps at the limit), so any
                            // free slot fits.
                            let slot = (0..PAD_SLOTS).find(|&slot| !busy[slot]);
                            if let Some(slot) = slot {
                                busy[slot] = true;
                                made[slot] = true;
                            }
                            Some(slot)
                        };
                        sender.send_timeout(&bytes, Duration::ZERO).expect("room");
                        in_flight.push_back((bytes, kind));
                    }
                    Op::Recv => {
                        let Some((bytes, kind)) = in_flight.pop_front() else {
                            prop_assert!(receiver.try_recv().expect("try").is_none());
                            continue;
                        };
                        let frame = receiver.try_recv().expect("try").expect("frame");
                        prop_assert_eq!(&*frame, &bytes[..]);
                        match kind {
                            None => prop_assert!(!frame.is_out_of_band()),
                            Some(None) => prop_assert!(frame.is_sealed()),
                            Some(Some(slot)) => {
                                prop_assert!(frame.is_out_of_band() && !frame.is_sealed());
                                drop(frame);
                                busy[slot] = false;
                            }
                        }
                    }
                }
            }
            for (bytes, _) in in_flight {
                prop_assert_eq!(&*receiver.try_recv().expect("try").expect("frame"), &bytes[..]);
            }
            for (pad, made) in sender.pads.iter().zip(made) {
                prop_assert_eq!(pad.is_some(), made);
            }
        }
    }
}

#[test]
fn released_pads_are_made_again_and_busy_ones_are_kept() {
    let (parent, child) = pair(&quick().large_threshold(64));
    let (mut sender, _keep) = parent.split();
    let (_keep2, mut receiver) = child.split();
    assert!(!sender.holds_pads());
    let one = pattern(5000, 1);
    sender.send(&one).expect("send");
    assert_eq!(&*receiver.recv().expect("recv"), &one[..]);
    assert!(sender.holds_pads());
    assert_eq!(sender.release_pads(), 1);
    assert!(!sender.holds_pads());
    // A new pad crosses with the next frame; the receiver replaces its mapping.
    let two = pattern(7000, 2);
    sender.send(&two).expect("send");
    let frame = receiver.recv().expect("recv");
    assert!(!frame.is_sealed());
    assert_eq!(&*frame, &two[..]);
    assert_eq!(sender.next_large_seq, 2);
    // While the receiver holds that frame its pad is not released, nor its bytes touched.
    assert_eq!(sender.release_pads(), 0);
    assert!(sender.holds_pads());
    assert_eq!(&*frame, &two[..]);
    drop(frame);
    assert_eq!(sender.release_pads(), 1);
}

#[test]
fn idle_pads_taken_out_are_no_longer_used_and_go_when_dropped() {
    let (parent, child) = pair(&quick().large_threshold(64));
    let (mut sender, _keep) = parent.split();
    let (_keep2, mut receiver) = child.split();
    let one = pattern(5000, 1);
    sender.send(&one).expect("send");
    let held = receiver.recv().expect("recv");
    // The pad the receiver still reads stays; nothing else is there to take.
    assert!(sender.take_idle_pads().is_empty());
    drop(held);
    let idle = sender.take_idle_pads();
    assert_eq!(idle.len(), 1);
    assert!(!sender.holds_pads(), "taken out at once, before the drop");
    // The next large frame gets a fresh pad while the taken one still waits for its drop.
    let two = pattern(6000, 2);
    sender.send(&two).expect("send");
    assert_eq!(&*receiver.recv().expect("recv"), &two[..]);
    drop(idle);
    let three = pattern(7000, 3);
    sender.send(&three).expect("send");
    assert_eq!(&*receiver.recv().expect("recv"), &three[..]);
}
