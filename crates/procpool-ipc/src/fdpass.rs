//! Passing file descriptors with a small payload over Unix sockets (`SCM_RIGHTS`).
//!
//! Used twice: the channel's own seqpacket pair carries the memfd of every LARGE frame,
//! and [`send_handoff`] / [`recv_handoff`] give a whole channel to a process that
//! attaches later over a `UnixStream` (`procpool-worker attach`).

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use crate::channel::Handoff;
use crate::error::HandoffError;

/// Most descriptors one message carries.
const MAX_FDS: usize = 4;

/// Control-buffer of the right size and alignment for `MAX_FDS` descriptors.
#[repr(C, align(8))]
struct CmsgBuf([u8; 64]);

/// Sends `payload` (non-empty) with `fds` attached in one `sendmsg`.
pub(crate) fn send_with_fds(
    socket: BorrowedFd<'_>,
    payload: &[u8],
    fds: &[BorrowedFd<'_>],
    nonblocking: bool,
) -> io::Result<usize> {
    assert!(!payload.is_empty() && fds.len() <= MAX_FDS);
    let mut cmsg = CmsgBuf([0; 64]);
    let fd_bytes = std::mem::size_of_val(fds) as u32;
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = cmsg.0.as_mut_ptr() as *mut libc::c_void;
        // SAFETY: CMSG_SPACE is a pure size computation.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(fd_bytes) } as _;
        // SAFETY: msg_control points to 64 bytes aligned to 8, enough for a cmsghdr plus
        // MAX_FDS ints (CMSG_SPACE(16) = 32 on 64-bit Linux), so FIRSTHDR is non-null and
        // the header and its data fit in the buffer.
        unsafe {
            let header = libc::CMSG_FIRSTHDR(&msg);
            (*header).cmsg_level = libc::SOL_SOCKET;
            (*header).cmsg_type = libc::SCM_RIGHTS;
            (*header).cmsg_len = libc::CMSG_LEN(fd_bytes) as _;
            let data = libc::CMSG_DATA(header) as *mut RawFd;
            for (idx, fd) in fds.iter().enumerate() {
                data.add(idx).write_unaligned(fd.as_raw_fd());
            }
        }
    }
    let flags = libc::MSG_NOSIGNAL | if nonblocking { libc::MSG_DONTWAIT } else { 0 };
    loop {
        // SAFETY: `msg` points to live buffers (iov over `payload`, control over `cmsg`)
        // for the duration of the call; the kernel only reads them.
        let sent = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, flags) };
        if sent >= 0 {
            return Ok(sent as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Receives one message into `buf`; attached descriptors (close-on-exec) go to `fds`.
/// Returns the number of payload bytes.
pub(crate) fn recv_with_fds(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
    nonblocking: bool,
) -> io::Result<usize> {
    let mut cmsg = CmsgBuf([0; 64]);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.0.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = cmsg.0.len() as _;
    let flags = libc::MSG_CMSG_CLOEXEC | if nonblocking { libc::MSG_DONTWAIT } else { 0 };
    let received = loop {
        // SAFETY: `msg` points to live, writable buffers of the stated lengths.
        let received = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, flags) };
        if received >= 0 {
            break received as usize;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    };
    // SAFETY: the kernel filled `msg_controllen` bytes of our control buffer with
    // well-formed cmsghdrs; CMSG_FIRSTHDR/NXTHDR stay inside that length, and every
    // SCM_RIGHTS descriptor is a fresh fd the kernel installed for us, so we own it.
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(&msg);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET && (*header).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(header) as *const RawFd;
                let n_fds =
                    ((*header).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / size_of::<RawFd>();
                for idx in 0..n_fds {
                    fds.push(OwnedFd::from_raw_fd(data.add(idx).read_unaligned()));
                }
            }
            header = libc::CMSG_NXTHDR(&msg, header);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "file descriptors were truncated",
        ));
    }
    Ok(received)
}

/// Sends a channel's [`Handoff`] and a small payload over `stream` (for a process that
/// attaches later): one `sendmsg` with a 4-byte length and both fds, then the payload.
///
/// The fds are duplicated into the receiver; the caller may drop its `Handoff` after
/// this returns (and should, so that channel EOF works).
///
/// # Errors
///
/// Any socket error, e.g. `EPIPE` when the receiver went away.
pub fn send_handoff(stream: &UnixStream, handoff: &Handoff, payload: &[u8]) -> io::Result<()> {
    let len =
        u32::try_from(payload.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let header = len.to_le_bytes();
    let mut sent = send_with_fds(
        stream.as_fd(),
        &header,
        &[handoff.region_fd(), handoff.socket_fd()],
        false,
    )?;
    let mut writer = stream;
    if sent < header.len() {
        writer.write_all(&header[sent..])?;
        sent = header.len();
    }
    debug_assert_eq!(sent, header.len());
    writer.write_all(payload)
}

/// Receives what [`send_handoff`] sent: the hand-off and the payload, copied into
/// `payload_buf`; returns the payload length.
///
/// # Errors
///
/// [`HandoffError::MissingFds`] unless exactly two fds came,
/// [`HandoffError::PayloadTooLarge`] if the payload does not fit, or the socket error.
pub fn recv_handoff(
    stream: &UnixStream,
    payload_buf: &mut [u8],
) -> Result<(Handoff, usize), HandoffError> {
    let mut header = [0u8; 4];
    let mut fds = Vec::new();
    let got = recv_with_fds(stream.as_fd(), &mut header, &mut fds, false)?;
    if got == 0 {
        return Err(HandoffError::Io(io::ErrorKind::UnexpectedEof.into()));
    }
    let mut reader = stream;
    reader.read_exact(&mut header[got..])?;
    if fds.len() != 2 {
        return Err(HandoffError::MissingFds {
            received: fds.len(),
        });
    }
    let len = u32::from_le_bytes(header) as usize;
    if len > payload_buf.len() {
        return Err(HandoffError::PayloadTooLarge {
            len,
            capacity: payload_buf.len(),
        });
    }
    reader.read_exact(&mut payload_buf[..len])?;
    let socket = fds.pop().expect("two fds");
    let region = fds.pop().expect("two fds");
    Ok((Handoff::new(region, socket), len))
}
