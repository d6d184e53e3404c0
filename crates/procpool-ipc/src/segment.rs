//! Memfd-backed shared memory: the only module that creates memfds or maps memory.
//!
//! A [`Region`] is the shared segment of one channel: a memfd created with
//! `MFD_CLOEXEC | MFD_ALLOW_SEALING` (never a name under `/dev/shm`, so nothing can leak
//! and nobody else can open it), sized with `ftruncate`, sealed against growing and
//! shrinking (so the peer cannot make our mapping fault with `SIGBUS`), and mapped shared
//! with memmap2. [`OobWriter`] and [`OobReader`] are the out-of-band buffers of LARGE frames:
//! one memfd per frame, sealed read-only before it is handed over. [`SealedWriter`],
//! [`SealedFile`] and [`SealedMap`] are the public face of the same idea for data that
//! outlives one frame (procpool's shared objects): filled once, sealed read-only, mapped by
//! any number of processes.

// The one module allowed to create memfds and map memory (see clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;

use memmap2::{Mmap, MmapMut, MmapOptions, MmapRaw};

/// Seals a region must carry before we map it: its size can never change under us.
pub(crate) const REGION_SEALS: libc::c_int = libc::F_SEAL_GROW | libc::F_SEAL_SHRINK;
/// Seals an out-of-band payload must carry before we map it: its bytes can never change.
pub(crate) const OOB_SEALS: libc::c_int =
    libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;

/// A memfd mapped read-write and shared; both sides of a channel map the same one.
#[derive(Debug)]
pub(crate) struct Region {
    file: File,
    map: MmapRaw,
}

/// Why [`Region::open`] refused a memfd.
#[derive(Debug)]
pub(crate) enum RegionOpenError {
    /// The fd lacks `F_SEAL_GROW | F_SEAL_SHRINK` (or is not a memfd at all).
    NotSealed { seals: i32 },
    /// A syscall failed.
    Io(io::Error),
}

fn memfd(name: &std::ffi::CStr) -> io::Result<File> {
    // SAFETY: `name` is a valid NUL-terminated string; the flags are plain constants.
    let raw =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: memfd_create just returned this fd to us and nothing else owns it.
    Ok(File::from(unsafe {
        <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw)
    }))
}

fn add_seals(fd: BorrowedFd<'_>, seals: libc::c_int) -> io::Result<()> {
    // SAFETY: F_ADD_SEALS takes an int argument and touches no memory of ours.
    let res = unsafe {
        libc::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            libc::F_ADD_SEALS,
            seals,
        )
    };
    if res < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The seals currently on `fd` (`EINVAL` for an fd that is not a memfd or shmem file).
pub(crate) fn get_seals(fd: BorrowedFd<'_>) -> io::Result<libc::c_int> {
    // SAFETY: F_GET_SEALS takes no argument and touches no memory of ours.
    let res = unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&fd), libc::F_GET_SEALS) };
    if res < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(res)
    }
}

impl Region {
    /// Creates, sizes, seals and maps a fresh zero-filled region of `len` bytes.
    pub(crate) fn create(len: usize) -> io::Result<Region> {
        let file = memfd(c"procpool-region")?;
        file.set_len(len as u64)?;
        add_seals(file.as_fd(), REGION_SEALS | libc::F_SEAL_SEAL)?;
        let map = MmapOptions::new().len(len).map_raw(&file)?;
        Ok(Region { file, map })
    }

    /// Maps a region received from the creator after checking its seals.
    /// The caller still validates the header (see `channel`).
    pub(crate) fn open(fd: OwnedFd) -> Result<Region, RegionOpenError> {
        let seals = match get_seals(fd.as_fd()) {
            Ok(seals) => seals,
            Err(err) if err.raw_os_error() == Some(libc::EINVAL) => {
                return Err(RegionOpenError::NotSealed { seals: 0 });
            }
            Err(err) => return Err(RegionOpenError::Io(err)),
        };
        if seals & REGION_SEALS != REGION_SEALS {
            return Err(RegionOpenError::NotSealed { seals });
        }
        let file = File::from(fd);
        let len = file.metadata().map_err(RegionOpenError::Io)?.len();
        let len = usize::try_from(len)
            .map_err(|_| RegionOpenError::Io(io::ErrorKind::InvalidData.into()))?;
        if len == 0 {
            return Err(RegionOpenError::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                "empty region",
            )));
        }
        let map = MmapOptions::new()
            .len(len)
            .map_raw(&file)
            .map_err(RegionOpenError::Io)?;
        Ok(Region { file, map })
    }

    /// Start of the mapping. Valid for `len()` bytes as long as `self` lives; the size is
    /// sealed, so the peer cannot truncate it from under us.
    pub(crate) fn base(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// Length of the mapping in bytes.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// A new fd for the same memfd (close-on-exec), to hand to the peer.
    pub(crate) fn dup_fd(&self) -> io::Result<OwnedFd> {
        self.file.as_fd().try_clone_to_owned()
    }
}

/// Out-of-band payload under construction: a memfd the producer writes, then seals.
#[derive(Debug)]
pub(crate) struct OobWriter {
    file: File,
    map: Option<MmapMut>,
    len: usize,
}

impl OobWriter {
    /// A writable buffer of `len` bytes (`len > 0`) in its own memfd.
    pub(crate) fn create(len: usize) -> io::Result<OobWriter> {
        let file = memfd(c"procpool-large")?;
        file.set_len(len as u64)?;
        Ok(OobWriter {
            file,
            map: None,
            len,
        })
    }

    /// Writes `bytes` at offset 0 with `write(2)` (one copy, no page-fault storm).
    pub(crate) fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        (&self.file).write_all(bytes)
    }

    /// The buffer mapped writable, for zero-copy reservations.
    pub(crate) fn map_mut(&mut self) -> io::Result<&mut [u8]> {
        if self.map.is_none() {
            // SAFETY: the memfd is ours alone until `seal` hands it over; nobody else can
            // write it or change its size while this mapping lives.
            self.map = Some(unsafe { MmapOptions::new().len(self.len).map_mut(&self.file)? });
        }
        Ok(self.map.as_mut().map(|map| &mut map[..]).unwrap_or(&mut []))
    }

    /// The memfd, unsealed (tests play a peer that skips sealing).
    #[cfg(test)]
    pub(crate) fn into_file(self) -> File {
        self.file
    }

    /// Shrinks to `used` bytes (`0 < used <= len`), unmaps, seals read-only and returns the fd.
    pub(crate) fn seal(mut self, used: usize) -> io::Result<OwnedFd> {
        // F_SEAL_WRITE fails with EBUSY while a writable shared mapping exists.
        self.map = None;
        if used != self.len {
            self.file.set_len(used as u64)?;
        }
        add_seals(self.file.as_fd(), OOB_SEALS)?;
        Ok(OwnedFd::from(self.file))
    }
}

/// Seals a pad must carry before the consumer maps it: its size can never change, so neither
/// side's mapping can fault with `SIGBUS` (its bytes stay writable by the producer).
pub(crate) const PAD_SEALS: libc::c_int = libc::F_SEAL_GROW | libc::F_SEAL_SHRINK;

/// A producer's reusable out-of-band buffer: a memfd sealed against resizing, mapped
/// read-write and shared (populated at creation, so later frames write warm pages).
#[derive(Debug)]
pub(crate) struct PadWriter {
    file: File,
    map: MmapRaw,
}

impl PadWriter {
    /// A pad of `len > 0` bytes.
    pub(crate) fn create(len: usize) -> io::Result<PadWriter> {
        let file = memfd(c"procpool-pad")?;
        file.set_len(len as u64)?;
        add_seals(file.as_fd(), PAD_SEALS | libc::F_SEAL_SEAL)?;
        let map = MmapOptions::new().len(len).populate().map_raw(&file)?;
        Ok(PadWriter { file, map })
    }

    /// The memfd, to hand to the consumer.
    pub(crate) fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Start of the mapping, valid for [`len`](PadWriter::len) bytes while `self` lives (the
    /// size is sealed).
    pub(crate) fn ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// Size of the pad in bytes.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Frees the pad's pages now (they are punched out of the memfd, so the peer's mapping,
    /// which outlives ours until the slot is reused, holds no memory either) and unmaps it.
    /// Only for a pad the peer no longer reads: it would see zeros.
    pub(crate) fn discard(self) {
        let len = libc::off_t::try_from(self.len()).unwrap_or(libc::off_t::MAX);
        // SAFETY: fallocate on our own memfd over its own size; it changes no memory of this
        // process that any reference points to (the pad is free: no grant or frame borrows it,
        // and our mapping is dropped right after). Failure only keeps the pages until the
        // memfd is closed.
        unsafe {
            libc::fallocate(
                std::os::fd::AsRawFd::as_raw_fd(&self.file),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                0,
                len,
            );
        }
    }

    /// The memfd (tests forge pad frames with it).
    #[cfg(test)]
    pub(crate) fn file_for_test(self) -> File {
        self.file
    }
}

/// The consumer's read-only mapping of a peer's pad. The peer can still write its bytes, so
/// they are only lent out as `&[u8]` for the life of one frame (the ring's stance on plain
/// bytes, see `ring/README.md`), and a reader that keeps anything copies it out first.
#[derive(Debug)]
pub(crate) struct PadReader {
    map: MmapRaw,
}

impl PadReader {
    /// Checks the seals and the size (`0 < size <= max_len`), then maps the pad read-only.
    pub(crate) fn open(fd: OwnedFd, max_len: u64) -> Result<PadReader, OobOpenError> {
        let seals = get_seals(fd.as_fd()).map_err(|_| OobOpenError::NotSealed)?;
        if seals & PAD_SEALS != PAD_SEALS {
            return Err(OobOpenError::NotSealed);
        }
        let file = File::from(fd);
        let found = file.metadata().map_err(OobOpenError::Io)?.len();
        if found == 0 || found > max_len {
            return Err(OobOpenError::SizeMismatch {
                expected: max_len,
                found,
            });
        }
        let len = usize::try_from(found).map_err(|_| OobOpenError::SizeMismatch {
            expected: max_len,
            found,
        })?;
        let map = MmapOptions::new()
            .len(len)
            .populate()
            .map_raw_read_only(&file)
            .map_err(OobOpenError::Io)?;
        Ok(PadReader { map })
    }

    /// Start of the mapping, valid for [`len`](PadReader::len) bytes while `self` lives.
    pub(crate) fn ptr(&self) -> *const u8 {
        self.map.as_ptr()
    }

    /// Size of the pad in bytes.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

/// Smallest copy [`copy_to_new_vec`] backs with transparent huge pages.
pub const HUGE_COPY_MIN: usize = 8 << 20;

/// A new `Vec<u8>` holding a copy of `bytes`. From [`HUGE_COPY_MIN`] bytes on, the fresh
/// allocation is first advised to the kernel as huge-page memory (`MADV_HUGEPAGE`) before it
/// is written: fresh memory costs a page fault per 4 KiB page on first write (~1.5 ms per MiB
/// on the VM this was measured on, `docs/bench/payload.md`), against one per 2 MiB page with
/// transparent huge pages (half the time for a 64 MiB copy there). The advice is a hint: where
/// transparent huge pages are off, or the allocator hands back memory already in use, it
/// changes nothing, and the bytes are the same either way. The copy is split between two
/// threads from [`crate::PARALLEL_COPY_MIN`] bytes on ([`crate::copy_bytes`]).
///
/// # Examples
///
/// ```
/// let bytes = vec![7u8; 100];
/// assert_eq!(procpool_ipc::copy_to_new_vec(&bytes), bytes);
/// ```
pub fn copy_to_new_vec(bytes: &[u8]) -> Vec<u8> {
    const HUGE_PAGE: usize = 2 << 20;
    if bytes.len() < HUGE_COPY_MIN {
        return bytes.to_vec();
    }
    let mut vec = Vec::<u8>::with_capacity(bytes.len());
    let spare = vec.spare_capacity_mut();
    let start = spare.as_mut_ptr() as usize;
    let end = start + spare.len();
    let (from, to) = (start.next_multiple_of(HUGE_PAGE), end & !(HUGE_PAGE - 1));
    if to > from {
        // SAFETY: `from..to` lies inside the vector's spare capacity, which this function owns
        // exclusively and which holds nothing yet. MADV_HUGEPAGE only changes how the kernel
        // backs the range's pages; it never changes their contents or their mapping, so
        // neither the vector nor the allocator can observe it. Failure is harmless (a hint).
        unsafe {
            libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_HUGEPAGE);
        }
    }
    crate::copy::copy_to_uninit(&mut vec.spare_capacity_mut()[..bytes.len()], bytes);
    // SAFETY: the first `bytes.len()` bytes of the spare capacity (which is at least that
    // long: `with_capacity`) were all written just above.
    unsafe { vec.set_len(bytes.len()) };
    vec
}

/// A private buffer to copy frames into, reused across frames: an anonymous mapping advised
/// as huge-page memory (so growing it faults 2 MiB pages, not 4 KiB ones), page aligned (so
/// 16-byte aligned, as rkyv archives need), grown on demand and given back when a frame needed
/// more than its `keep` limit, or when its owner went idle ([`release`](CopyBuffer::release)).
///
/// # Examples
///
/// ```
/// let mut buffer = procpool_ipc::CopyBuffer::new(1 << 20);
/// assert_eq!(buffer.copy_in(b"frame")?, b"frame");
/// assert_eq!(buffer.copy_in(&[1; 3000])?, &[1; 3000][..]);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct CopyBuffer {
    map: Option<MmapMut>,
    keep: usize,
}

impl CopyBuffer {
    /// An empty buffer that keeps at most `keep` bytes mapped between copies.
    pub fn new(keep: usize) -> CopyBuffer {
        CopyBuffer { map: None, keep }
    }

    /// Copies `bytes` in and returns the copy (valid until the next call).
    ///
    /// # Errors
    ///
    /// The `mmap` error when the buffer has to grow.
    pub fn copy_in(&mut self, bytes: &[u8]) -> io::Result<&[u8]> {
        const HUGE_PAGE: usize = 2 << 20;
        if self.map.as_ref().is_none_or(|map| map.len() < bytes.len()) {
            self.map = None;
            let len = bytes.len().max(1).next_multiple_of(HUGE_PAGE);
            let map = MmapOptions::new().len(len).map_anon()?;
            // A hint: without transparent huge pages the buffer still works, with 4 KiB pages.
            let _ = map.advise(memmap2::Advice::HugePage);
            self.map = Some(map);
        }
        let map = self.map.as_mut().map(|map| &mut map[..bytes.len()]);
        let Some(copy) = map else {
            return Ok(&[]);
        };
        crate::copy::copy_bytes(copy, bytes);
        Ok(copy)
    }

    /// Bytes mapped now.
    pub fn capacity(&self) -> usize {
        self.map.as_ref().map_or(0, |map| map.len())
    }

    /// Unmaps the buffer if it is larger than its `keep` limit.
    pub fn trim(&mut self) {
        if self.capacity() > self.keep {
            self.map = None;
        }
    }

    /// Unmaps the buffer whatever its size (its owner went idle); the next copy maps a fresh
    /// one. Nothing can point into it: a copy borrows the buffer until it is dropped.
    pub fn release(&mut self) {
        self.map = None;
    }
}

/// A received out-of-band payload, mapped read-only.
#[derive(Debug)]
pub(crate) struct OobReader {
    map: Mmap,
}

/// Why an out-of-band fd was refused.
#[derive(Debug)]
pub(crate) enum OobOpenError {
    /// Missing `F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK`.
    NotSealed,
    /// Its size differs from the length in the LARGE frame.
    SizeMismatch { expected: u64, found: u64 },
    /// A syscall failed.
    Io(io::Error),
}

impl OobReader {
    /// Checks seals and size, then maps the payload read-only.
    pub(crate) fn open(fd: OwnedFd, expected_len: u64) -> Result<OobReader, OobOpenError> {
        let seals = get_seals(fd.as_fd()).map_err(|_| OobOpenError::NotSealed)?;
        let needed = libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK;
        if seals & needed != needed {
            return Err(OobOpenError::NotSealed);
        }
        let file = File::from(fd);
        let found = file.metadata().map_err(OobOpenError::Io)?.len();
        if found != expected_len || found == 0 {
            return Err(OobOpenError::SizeMismatch {
                expected: expected_len,
                found,
            });
        }
        let len = usize::try_from(found).map_err(|_| OobOpenError::SizeMismatch {
            expected: expected_len,
            found,
        })?;
        // SAFETY: the memfd carries F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK (checked
        // above), so no process can change its bytes or its size while we map it: the
        // `&[u8]` that `Mmap` hands out really is immutable.
        let map = unsafe { MmapOptions::new().len(len).populate().map(&file) }
            .map_err(OobOpenError::Io)?;
        Ok(OobReader { map })
    }

    /// The payload.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// The read-only mapping, to keep beyond the frame.
    pub(crate) fn into_map(self) -> SealedMap {
        SealedMap { map: self.map }
    }
}

/// A fresh memfd being filled with `write(2)` (one copy, straight into the page cache), to be
/// sealed read-only with [`seal`](SealedWriter::seal) and then shared.
///
/// The memfd is anonymous and close-on-exec: nothing is left in the file system, whatever
/// happens to the process.
///
/// # Examples
///
/// ```
/// use std::io::Write;
/// let mut writer = procpool_ipc::SealedWriter::new()?;
/// writer.write_all(b"hello")?;
/// let file = writer.seal()?;
/// assert_eq!(&*file.map()?, b"hello");
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct SealedWriter {
    file: File,
    /// Bytes appended so far (the file offset of the next `write`).
    len: u64,
}

impl SealedWriter {
    /// An empty memfd.
    ///
    /// # Errors
    ///
    /// The `memfd_create` error (e.g. too many open files).
    pub fn new() -> io::Result<SealedWriter> {
        Ok(SealedWriter {
            file: memfd(c"procpool-shared")?,
            len: 0,
        })
    }

    /// Bytes written so far by [`io::Write`] (writes at an offset may extend it).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Overwrites bytes at `offset` (e.g. a header whose contents are known only at the end);
    /// the file grows if needed.
    ///
    /// # Errors
    ///
    /// The `pwrite(2)` error.
    pub fn write_at(&mut self, bytes: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(bytes, offset)?;
        self.len = self.len.max(offset + bytes.len() as u64);
        Ok(())
    }

    /// Seals the memfd against writing, growing and shrinking (and against new seals).
    ///
    /// # Errors
    ///
    /// `InvalidInput` for an empty file (it could not be mapped), or the `fcntl` error.
    pub fn seal(self) -> io::Result<SealedFile> {
        if self.len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an empty memfd cannot be shared",
            ));
        }
        add_seals(self.file.as_fd(), OOB_SEALS)?;
        Ok(SealedFile {
            file: self.file,
            len: self.len,
        })
    }
}

impl io::Write for SealedWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let written = self.file.write_at(bytes, self.len)?;
        self.len += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A memfd sealed read-only (`F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL`): no
/// process can change its bytes or its size any more. Send it to a channel's peer with
/// [`Sender::send_sealed`](crate::Sender::send_sealed); map it with [`map`](SealedFile::map).
#[derive(Debug)]
pub struct SealedFile {
    file: File,
    len: u64,
}

impl SealedFile {
    /// Its size in bytes (never zero).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Always false: an empty file cannot be sealed by [`SealedWriter::seal`].
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The memfd.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Maps the whole file read-only (and shared: the pages are those of the page cache, so
    /// every process mapping it shares one copy).
    ///
    /// # Errors
    ///
    /// The `mmap` error, or `InvalidData` if the file does not fit the address space.
    pub fn map(&self) -> io::Result<SealedMap> {
        let len = usize::try_from(self.len).map_err(|_| io::ErrorKind::InvalidData)?;
        // SAFETY: the memfd carries F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK (added by
        // `SealedWriter::seal`, the only constructor), so no process can change its bytes or
        // its size while it is mapped: the `&[u8]` that `Mmap` hands out really is immutable.
        let map = unsafe { MmapOptions::new().len(len).map(&self.file)? };
        Ok(SealedMap { map })
    }
}

/// A read-only mapping of a sealed memfd ([`SealedFile::map`], or the payload of an
/// out-of-band frame kept with [`Frame::take_out_of_band`](crate::Frame::take_out_of_band)).
///
/// Its bytes cannot change while it lives: the memfd is sealed against writes and resizes,
/// and the mapping itself is read-only, so a write through it faults the writer (`SIGSEGV`).
/// The mapping starts page-aligned. `Send + Sync`; unmapped on drop.
#[derive(Debug)]
pub struct SealedMap {
    map: Mmap,
}

impl std::ops::Deref for SealedMap {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_writer_round_trip_and_seals() {
        use std::io::Write;
        let mut writer = SealedWriter::new().expect("memfd");
        writer.write_all(&[0; 8]).expect("write");
        writer.write_all(b"payload").expect("write");
        writer.write_at(b"HEADER", 0).expect("pwrite");
        assert_eq!(writer.len(), 15);
        let file = writer.seal().expect("seal");
        let seals = get_seals(file.as_fd()).expect("seals");
        assert_eq!(seals & OOB_SEALS, OOB_SEALS);
        let map = file.map().expect("map");
        assert_eq!(&map[..], b"HEADER\0\0payload");
        assert_eq!(map.as_ptr() as usize % 4096, 0, "page aligned");
        let reader = OobReader::open(file.as_fd().try_clone_to_owned().expect("dup"), 15)
            .expect("a sealed file is a valid out-of-band payload");
        assert_eq!(&reader.into_map()[..], &map[..]);
        assert!(SealedWriter::new().expect("memfd").seal().is_err(), "empty");
    }

    #[test]
    fn copies_to_new_vecs_are_exact_at_every_size() {
        for len in [
            0,
            1,
            4095,
            HUGE_COPY_MIN - 1,
            HUGE_COPY_MIN,
            HUGE_COPY_MIN + 4097,
        ] {
            let bytes: Vec<u8> = (0..len)
                .map(|i| (i % 251) as u8 ^ (i >> 16) as u8)
                .collect();
            let copy = copy_to_new_vec(&bytes);
            assert_eq!(copy.len(), len);
            assert!(copy == bytes, "{len} bytes");
        }
    }

    #[test]
    fn a_discarded_pad_holds_no_pages() {
        use std::os::unix::fs::MetadataExt;
        let pad = PadWriter::create(1 << 20).expect("pad");
        let file = pad.file.try_clone().expect("dup");
        assert!(file.metadata().expect("stat").blocks() > 0, "populated");
        pad.discard();
        assert_eq!(file.metadata().expect("stat").blocks(), 0);
        assert_eq!(file.metadata().expect("stat").len(), 1 << 20, "size kept");
    }

    #[test]
    fn copy_buffer_copies_grows_and_trims() {
        let mut buffer = CopyBuffer::new(4 << 20);
        assert_eq!(buffer.capacity(), 0);
        assert_eq!(buffer.copy_in(b"").expect("copy"), b"");
        let copy = buffer.copy_in(b"abc").expect("copy");
        assert_eq!(copy, b"abc");
        assert_eq!(copy.as_ptr() as usize % 4096, 0, "page aligned");
        assert_eq!(buffer.capacity(), 2 << 20);
        let big: Vec<u8> = (0..(5 << 20) + 3).map(|i| (i % 249) as u8).collect();
        assert!(buffer.copy_in(&big).expect("copy") == &big[..]);
        assert_eq!(buffer.capacity(), 6 << 20);
        assert_eq!(
            buffer.copy_in(b"xyz").expect("copy"),
            b"xyz",
            "kept, reused"
        );
        assert_eq!(buffer.capacity(), 6 << 20);
        buffer.trim();
        assert_eq!(buffer.capacity(), 0, "above the keep limit");
        buffer.copy_in(&big[..1000]).expect("copy");
        buffer.trim();
        assert_eq!(buffer.capacity(), 2 << 20, "within the keep limit");
        buffer.release();
        assert_eq!(buffer.capacity(), 0, "released whatever its size");
        assert!(
            buffer.copy_in(&big).expect("copy") == &big[..],
            "mapped afresh"
        );
        assert_eq!(buffer.capacity(), 6 << 20);
    }

    #[test]
    fn region_is_sealed_and_zeroed() {
        let region = Region::create(8192).expect("create");
        assert_eq!(region.len(), 8192);
        let fd = region.dup_fd().expect("dup");
        let seals = get_seals(fd.as_fd()).expect("seals");
        assert_eq!(seals & REGION_SEALS, REGION_SEALS);
        let file = File::from(fd);
        assert!(file.set_len(16384).is_err(), "grow must be refused");
        let reopened = Region::open(region.dup_fd().expect("dup")).expect("open");
        assert_eq!(reopened.len(), 8192);
    }

    #[test]
    fn unsealed_fd_is_refused() {
        let file = memfd(c"unsealed").expect("memfd");
        file.set_len(4096).expect("len");
        match Region::open(OwnedFd::from(file)) {
            Err(RegionOpenError::NotSealed { .. }) => {}
            other => panic!("expected NotSealed, got {other:?}"),
        }
    }

    #[test]
    fn oob_round_trip_and_checks() {
        let mut writer = OobWriter::create(100).expect("create");
        writer.map_mut().expect("map")[..5].copy_from_slice(b"hello");
        let fd = writer.seal(5).expect("seal");
        let dup = fd.try_clone().expect("dup");
        let reader = OobReader::open(fd, 5).expect("open");
        assert_eq!(reader.bytes(), b"hello");
        assert!(matches!(
            OobReader::open(dup, 6),
            Err(OobOpenError::SizeMismatch {
                expected: 6,
                found: 5
            })
        ));
        let unsealed = memfd(c"unsealed").expect("memfd");
        unsealed.set_len(5).expect("len");
        assert!(matches!(
            OobReader::open(OwnedFd::from(unsealed), 5),
            Err(OobOpenError::NotSealed)
        ));
    }
}
