//! Fuzz target `region_open`: [`Endpoint::open`] on a region whose header (and size and seals,
//! and the socket handed with it) come from a hostile creator.
//!
//! The opener must refuse anything inconsistent with a typed [`OpenError`] before it trusts any
//! offset, and an endpoint it accepts must then survive use: receiving from and sending into rings
//! whose control words and data are whatever the region holds.
//!
//! Input: byte 0 picks the memfd size, byte 1 the seals and the socket type; the rest is copied to
//! the start of the region (the 4096-byte header page first, then on into the rings).
#![no_main]

use std::fs::File;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use procpool_ipc::{Endpoint, Handoff, MAILBOX_WORDS, RecvError, SendError};

fn memfd(len: u64, bytes: &[u8], seals: u8) -> Option<OwnedFd> {
    // SAFETY: memfd_create with a static NUL-terminated name and valid flags.
    let fd = unsafe {
        libc::memfd_create(
            c"fuzz-region".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: a fresh fd owned by nobody else.
    let mut file = unsafe { File::from_raw_fd(fd) };
    file.set_len(len).ok()?;
    let n = bytes.len().min(len as usize);
    file.write_all(&bytes[..n]).ok()?;
    let mut flags = 0;
    if seals & 1 != 0 {
        flags |= libc::F_SEAL_GROW;
    }
    if seals & 2 != 0 {
        flags |= libc::F_SEAL_SHRINK;
    }
    if seals & 4 != 0 {
        flags |= libc::F_SEAL_SEAL;
    }
    if seals & 8 != 0 {
        flags |= libc::F_SEAL_WRITE;
    }
    // SAFETY: fcntl on a valid fd with an int argument.
    unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, flags) };
    Some(file.into())
}

fn socket_pair(kind: libc::c_int) -> Option<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is valid for two ints.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            kind | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    } != 0
    {
        return None;
    }
    // SAFETY: socketpair returned two fresh fds we now own.
    Some(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let size_sel = data[0];
    let flags = data[1];
    let body = &data[2..];
    // Sizes around the valid layouts (header page + two ring blocks of 4096 + 256..) and odd ones.
    let len: u64 = match size_sel % 8 {
        0 => 0,
        1 => 4095,
        2 => 4096,
        3 => 4096 + 2 * 8192,
        4 => 4096 + 8192 + 4096 * 3,
        5 => u64::from(size_sel) * 4096,
        6 => 1 << 20,
        _ => 4096 + 2 * (4096 + 65536),
    };
    let seals = if flags & 0x10 != 0 {
        flags & 0x0f
    } else {
        0x07
    };
    let Some(region) = memfd(len, body, seals) else {
        return;
    };
    let kind = match (flags >> 5) & 3 {
        0 | 1 => libc::SOCK_SEQPACKET,
        2 => libc::SOCK_STREAM,
        _ => libc::SOCK_DGRAM,
    };
    let Some((mine, theirs)) = socket_pair(kind) else {
        return;
    };
    let mut endpoint = match Endpoint::open(Handoff::new(region, theirs)) {
        Ok(endpoint) => endpoint,
        // Every refusal is typed; nothing more to check.
        Err(err) => {
            std::hint::black_box(err.to_string());
            return;
        }
    };
    // Accepted: the rings hold whatever the body said. Use both halves; only typed errors.
    let mailbox = endpoint.mailbox();
    for idx in 0..MAILBOX_WORDS {
        mailbox.store(idx, mailbox.load(idx).wrapping_add(1));
        // `wait` on the value the word holds (times out at once) and on another (returns at
        // once), then `wake`: futex calls on the hostile creator's words, never a hang.
        let value = mailbox.load(idx);
        mailbox.wait(idx, value, Duration::ZERO);
        mailbox.wait(idx, value ^ 1, Duration::from_secs(10));
        mailbox.wake(idx);
    }
    for round in 0..4 {
        match endpoint.receiver().try_recv() {
            Ok(Some(frame)) => {
                let sum = frame.iter().fold(0u8, |acc, &b| acc.wrapping_add(b));
                std::hint::black_box(sum);
            }
            Ok(None) => {}
            Err(RecvError::Corrupt(_) | RecvError::Disconnected | RecvError::Io(_)) => {}
            Err(err) => panic!("unexpected receive error {err:?}"),
        }
        let frame = vec![round as u8; 40 * round + 1];
        match endpoint.sender().send_timeout(&frame, Duration::ZERO) {
            Ok(()) | Err(SendError::Timeout | SendError::Corrupt(_) | SendError::Disconnected) => {}
            Err(SendError::TooLarge { .. } | SendError::Io(_)) => {}
            Err(err) => panic!("unexpected send error {err:?}"),
        }
    }
    drop(endpoint);
    drop(mine);
});
