//! An open POSIX shared memory segment: its file descriptor, a mapping of the
//! part touched so far, and the bookkeeping that makes touching it safe.
//! This is the OS side of the crate, and every `unsafe` block of it is here.
//!
//! Bytes are copied with `pread`/`pwrite`, which report errors, or through a
//! mapping, where touching a page raises SIGBUS, killing the whole VM, in two
//! cases: the page lies past the end of the segment, or it is a hole and tmpfs
//! has no page left to fill it with. So a mapping is only ever touched in
//! `[0, end)` with
//!
//! - `end <= len`, the segment's size as of the last [`Segment::refresh`] or
//!   our own resize, and
//! - `end <= backed`, the prefix whose pages `posix_fallocate` has reserved,
//!   so that a full `/dev/shm` is an `ENOSPC` error instead of a signal.
//!
//! What this cannot rule out: another OS process shrinking or hole-punching
//! the segment between the check and the copy.

use std::num::NonZeroUsize;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::mman::{self, MapFlags, ProtFlags};
use nix::sys::stat::Mode;
use nix::sys::uio;
use nix::unistd;

use crate::cost::Cost;
use crate::error::{Context, Error, Result, Syscall};
use crate::name::ShmName;

/// How often [`Segment::create_unique`] draws a new name after `EEXIST`.
const CREATE_ATTEMPTS: usize = 1000;

/// The most a copy through `pread`/`pwrite` holds in memory at once. Small
/// enough for malloc to recycle from its heap: a larger buffer would be fresh
/// pages from `mmap` every time, each faulted in on first touch.
const BOUNCE_CHUNK: u64 = 64 << 10;

/// After this many calls a reused segment is mapped: setting up a mapping
/// costs ~10 us and touching a page through it the first time ~1.4 us, where
/// `pread`/`pwrite` cost ~0.5 us per call and ~0.2 us per page. So a mapping
/// pays for itself only over repeated access.
const MAP_AFTER: u32 = 2;

/// An open shared memory segment.
///
/// Dropping it unmaps and closes it; the segment itself lives on until it is
/// unlinked ([`unlink`]) and no process has it open or mapped.
///
/// # Safety
///
/// Other OS processes may open the same segment by name and change it at any
/// time. Their writes are seen here, which is the point of shared memory. If
/// one of them shrinks the segment while a copy is running here, that copy
/// touches pages past its end and the process gets SIGBUS; the checks here
/// catch every shrink that happens before [`Segment::refresh`].
#[derive(Debug)]
pub struct Segment {
    fd: OwnedFd,
    len: u64,
    backed: u64,
    map: Option<Map>,
    reused: bool,
    calls: u32,
}

impl Segment {
    /// Creates the segment `name` with `len` zero bytes, readable and writable
    /// by this user only. Fails with `EEXIST` if it exists.
    pub fn create(name: &ShmName, len: u64) -> Result<Segment> {
        let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR;
        let fd = shm_open(name, flags, Mode::S_IRUSR | Mode::S_IWUSR)?;
        let mut segment = Segment::with_fd(fd);
        if let Err(error) = segment.resize(len) {
            unlink(name);
            return Err(error);
        }
        Ok(segment)
    }

    /// Creates a segment of `len` zero bytes under a fresh generated name.
    pub fn create_unique(len: u64) -> Result<(ShmName, Segment)> {
        let mut attempts = 0;
        loop {
            let name = ShmName::generate();
            match Segment::create(&name, len) {
                Err(Error::Os(Errno::EEXIST, _)) if attempts < CREATE_ATTEMPTS => attempts += 1,
                created => return created.map(|segment| (name, segment)),
            }
        }
    }

    /// Opens the existing segment `name` for reading and writing.
    pub fn open(name: &ShmName) -> Result<Segment> {
        let fd = shm_open(name, OFlag::O_RDWR, Mode::empty())?;
        let mut segment = Segment::with_fd(fd);
        segment.refresh()?;
        Ok(segment)
    }

    fn with_fd(fd: OwnedFd) -> Segment {
        Segment {
            fd,
            len: 0,
            backed: 0,
            map: None,
            reused: false,
            calls: 0,
        }
    }

    /// The segment's size in bytes, as of the last [`refresh`](Self::refresh)
    /// or resize.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the segment is zero bytes long.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Asks the OS for the segment's size: someone else may have resized it
    /// since we last looked. Each call on a reused segment starts with this,
    /// so it also counts the calls, to tell busy segments from one-off ones.
    pub fn refresh(&mut self) -> Result<u64> {
        self.calls = self.calls.saturating_add(1);
        self.set_known_len(current_len(&self.fd)?);
        Ok(self.len)
    }

    /// Sets the segment's size (`ftruncate`): growing adds zero bytes,
    /// shrinking drops the tail.
    pub fn resize(&mut self, len: u64) -> Result<()> {
        let off = offset_of(len, Syscall::Ftruncate)?;
        unistd::ftruncate(self.fd.as_fd(), off).during(Syscall::Ftruncate)?;
        self.set_known_len(len);
        Ok(())
    }

    fn set_known_len(&mut self, len: u64) {
        self.len = len;
        self.backed = self.backed.min(len);
    }

    /// Marks the segment as one that will serve many calls, so worth mapping
    /// once it proves busy: a mapping costs a `mmap` and a page fault per page
    /// once, then nothing, where `pread`/`pwrite` cost a system call each time.
    pub fn expect_reuse(&mut self) {
        self.reused = true;
    }

    /// Checks that `[offset, offset + len)` can be read, reserving and mapping
    /// it when it will be read through the mapping, so that a caller can
    /// allocate a buffer for it knowing the read will not fail (a struct may
    /// claim terabytes it does not have).
    pub fn prepare(&mut self, offset: u64, len: u64) -> Result<()> {
        self.readable(offset, len).map(drop)
    }

    /// Fills `buffer` with the bytes at `offset`.
    pub fn read(&mut self, offset: u64, buffer: &mut [u8]) -> Result<()> {
        match self.readable(offset, buffer.len() as u64)? {
            // SAFETY: `readable` vouched for `[offset, offset + buffer.len())`
            // of the mapping; `buffer` is the caller's memory, distinct from it.
            Some(base) => unsafe {
                copy(base.add(offset as usize), buffer.as_mut_ptr(), buffer.len())
            },
            None => pread_exact(&self.fd, buffer, offset)?,
        }
        Ok(())
    }

    /// Writes `data` at `offset`. The segment must already be large enough.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        match self.writable(offset, data.len() as u64)? {
            // SAFETY: `writable` vouched for `[offset, offset + data.len())`;
            // `data` is caller memory, distinct from the mapping.
            Some(base) => unsafe { copy(data.as_ptr(), base.add(offset as usize), data.len()) },
            None => pwrite_all(&self.fd, data, offset)?,
        }
        Ok(())
    }

    /// Copies `len` bytes from `from` to `to` within this segment; the two
    /// ranges may overlap.
    pub fn copy_within(&mut self, from: u64, to: u64, len: u64) -> Result<()> {
        let end = self.check(from.max(to), len)?;
        if len == 0 {
            return Ok(());
        }
        if !self.maps(end) {
            self.reserve(end)?;
            return move_by_calls(&self.fd, from, to, len);
        }
        let base = self.touchable(end)?;
        // SAFETY: both ranges lie in `[0, end)`, which `touchable` vouched for;
        // `copy` is a memmove.
        unsafe { copy(base.add(from as usize), base.add(to as usize), len as usize) };
        Ok(())
    }

    /// Copies `len` bytes at `from` in this segment to `to` in `target`.
    ///
    /// `target` must be another open segment: copies inside one segment
    /// belong in [`copy_within`](Self::copy_within).
    pub fn copy_to(&mut self, from: u64, target: &mut Segment, to: u64, len: u64) -> Result<()> {
        target.check(to, len)?;
        match self.readable(from, len)? {
            Some(base) => {
                // SAFETY: `readable` vouched for `[from, from + len)` of the
                // mapping, which stays mapped while `self` is borrowed.
                let bytes =
                    unsafe { std::slice::from_raw_parts(base.add(from as usize), len as usize) };
                target.write(to, bytes)
            }
            None => {
                let mut chunk = vec![0; len.min(BOUNCE_CHUNK) as usize];
                let mut done = 0;
                while done < len {
                    let part = &mut chunk[..(len - done).min(BOUNCE_CHUNK) as usize];
                    pread_exact(&self.fd, part, from + done)?;
                    target.write(to + done, part)?;
                    done += part.len() as u64;
                }
                Ok(())
            }
        }
    }

    /// Runs `f` on the first `len` bytes of the segment, in place, mapped and
    /// with their pages reserved.
    ///
    /// Other OS processes may change the bytes while `f` looks at them (see
    /// the type's docs); in this process nothing else can use this `Segment`
    /// meanwhile, as `f` holds it borrowed.
    pub fn with_bytes<R>(&mut self, len: u64, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        let end = self.check(0, len)?;
        if len == 0 {
            return Ok(f(&[]));
        }
        let base = self.touchable(end)?;
        // SAFETY: `touchable` vouched for `[0, len)` of the mapping, which
        // stays mapped while `self` is borrowed by this call.
        Ok(f(unsafe { std::slice::from_raw_parts(base, len as usize) }))
    }

    /// Runs `f` on the first `len` bytes of the segment, in place, to change
    /// them; see [`with_bytes`](Self::with_bytes).
    pub fn with_bytes_mut<R>(&mut self, len: u64, f: impl FnOnce(&mut [u8]) -> R) -> Result<R> {
        let end = self.check(0, len)?;
        if len == 0 {
            return Ok(f(&mut []));
        }
        let base = self.touchable(end)?;
        // SAFETY: as in `with_bytes`; `&mut self` keeps this the only slice
        // of this mapping.
        Ok(f(unsafe {
            std::slice::from_raw_parts_mut(base, len as usize)
        }))
    }

    /// Maps the first `len` bytes, reserving their pages, and hands the
    /// mapping over to the caller, who must release it with [`unmap`]; the
    /// descriptor is closed. For C callers, which keep a bare pointer.
    pub fn into_mapping(mut self, len: u64) -> Result<NonNull<u8>> {
        let end = self.check(0, len)?;
        let len = usize::try_from(end).map_err(|_| Error::Os(Errno::ENOMEM, Syscall::Mmap))?;
        let len = NonZeroUsize::new(len).ok_or(Error::Os(Errno::EINVAL, Syscall::Mmap))?;
        self.reserve(end)?;
        let map = Map::new(&self.fd, len)?;
        let ptr = map.ptr;
        std::mem::forget(map);
        Ok(ptr)
    }

    /// Roughly how long reading `[offset, offset + len)` will take.
    pub fn read_cost(&self, offset: u64, len: u64) -> Cost {
        let end = offset.saturating_add(len);
        if self.maps(end) {
            self.mapping_cost(end, len)
        } else {
            Cost::syscall_copy(len)
        }
    }

    /// Roughly how long writing `[offset, offset + len)` will take, once the
    /// segment is at least `offset + len` bytes long.
    pub fn write_cost(&self, offset: u64, len: u64) -> Cost {
        let end = offset.saturating_add(len);
        let fresh = end.saturating_sub(self.backed.max(offset));
        if fresh == 0 && self.maps(end) {
            self.mapping_cost(end, len)
        } else {
            Cost::fresh_pages(fresh) + Cost::syscall_copy(len - fresh)
        }
    }

    /// Roughly how long moving `len` bytes within `[0, end)` will take.
    pub fn move_cost(&self, end: u64, len: u64) -> Cost {
        if self.maps(end) {
            self.mapping_cost(end, len)
        } else {
            Cost::syscall_copy(len) + Cost::syscall_copy(len)
        }
    }

    /// Roughly how long resizing to `len` bytes will take: shrinking frees
    /// pages (as many as there may be), growing costs nothing until written.
    pub fn resize_cost(&self, len: u64) -> Cost {
        Cost::free_pages(self.len.saturating_sub(len))
    }

    fn mapping_cost(&self, end: u64, len: u64) -> Cost {
        let mapped = self.map.as_ref().map_or(0, |map| map.len.get() as u64);
        Cost::memcpy(len) + Cost::first_touch(end.saturating_sub(mapped))
    }

    /// Checks `[offset, offset + len)` against the segment's size; its end.
    fn check(&self, offset: u64, len: u64) -> Result<u64> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(end),
            _ => Err(Error::InvalidPayload),
        }
    }

    /// Whether to copy the bytes up to `end` through a mapping rather than
    /// with `pread`/`pwrite`: when a mapping covers them already, or the
    /// segment is reused and busy.
    fn maps(&self, end: u64) -> bool {
        let mapped = self
            .map
            .as_ref()
            .is_some_and(|map| map.len.get() as u64 >= end);
        mapped || self.reused && self.calls > MAP_AFTER
    }

    /// Where to read `[offset, offset + len)` from: the mapping's base, or
    /// `None` for `pread`, which also reads holes (as zeros) and a segment
    /// shrunk meanwhile (as a short read) without risk.
    fn readable(&mut self, offset: u64, len: u64) -> Result<Option<*const u8>> {
        let end = self.check(offset, len)?;
        if len == 0 || !self.maps(end) {
            return Ok(None);
        }
        self.touchable(end).map(|base| Some(base.cast_const()))
    }

    /// Where to write `[offset, offset + len)`: the mapping's base, or `None`
    /// for `pwrite`. Pages written for the first time are reserved, then
    /// filled by `pwrite`: the kernel fills them several times faster than
    /// page faults would.
    fn writable(&mut self, offset: u64, len: u64) -> Result<Option<*mut u8>> {
        let end = self.check(offset, len)?;
        if len == 0 {
            return Ok(None);
        }
        if end <= self.backed && self.maps(end) {
            return self.touchable(end).map(Some);
        }
        self.reserve(end)?;
        Ok(None)
    }

    /// The base of a mapping that may be touched in `[0, end)`, reserving and
    /// mapping that much (see the module docs); `end` is within the segment.
    fn touchable(&mut self, end: u64) -> Result<*mut u8> {
        let end = usize::try_from(end).map_err(|_| Error::Os(Errno::ENOMEM, Syscall::Mmap))?;
        self.reserve(end as u64)?;
        self.map_prefix(end)
    }

    /// Reserves the pages of `[0, end)`: touching them cannot fault, and
    /// writing them cannot run out of space. `end` is within the segment.
    ///
    /// Shmex data always starts at offset 0, so the reserved part is a prefix:
    /// a segment with a large capacity and little data stays sparse.
    pub fn reserve(&mut self, end: u64) -> Result<()> {
        if end > self.backed {
            reserve_pages(&self.fd, self.backed, end - self.backed)?;
            self.backed = end;
        }
        Ok(())
    }

    /// Maps at least `[0, end)`, growing the mapping we have when needed.
    fn map_prefix(&mut self, end: usize) -> Result<*mut u8> {
        let len = NonZeroUsize::new(end).ok_or(Error::InvalidPayload)?;
        match &mut self.map {
            Some(map) if map.len >= len => {}
            Some(map) => map.grow(&self.fd, len)?,
            None => self.map = Some(Map::new(&self.fd, len)?),
        }
        Ok(self
            .map
            .as_ref()
            .map_or(NonNull::dangling(), |map| map.ptr)
            .as_ptr())
    }
}

/// The size of the file behind `fd`. On Linux `lseek(SEEK_END)` says it in
/// half the time `fstat` takes, which matters: this runs on every call.
#[cfg(target_os = "linux")]
fn current_len(fd: &OwnedFd) -> Result<u64> {
    let end = unistd::lseek(fd.as_fd(), 0, unistd::Whence::SeekEnd).during(Syscall::ShmOpen)?;
    Ok(u64::try_from(end).unwrap_or(0))
}

#[cfg(not(target_os = "linux"))]
fn current_len(fd: &OwnedFd) -> Result<u64> {
    let stat = nix::sys::stat::fstat(fd.as_fd()).during(Syscall::ShmOpen)?;
    Ok(u64::try_from(stat.st_size).unwrap_or(0))
}

/// `shm_open(3)`, with the name's length checked here: glibc before 2.37
/// reports a name over `NAME_MAX` bytes as `EINVAL`, like an inner slash.
fn shm_open(name: &ShmName, flags: OFlag, mode: Mode) -> Result<OwnedFd> {
    if name.is_too_long() {
        return Err(Error::Os(Errno::ENAMETOOLONG, Syscall::ShmOpen));
    }
    mman::shm_open(name.as_c_str(), flags, mode).during(Syscall::ShmOpen)
}

/// Fills `buffer` from `offset`; a segment that ends early was shrunk by
/// someone else meanwhile.
fn pread_exact(fd: &OwnedFd, buffer: &mut [u8], offset: u64) -> Result<()> {
    let mut done = 0;
    while done < buffer.len() {
        let at = offset_of(offset + done as u64, Syscall::Mmap)?;
        match uio::pread(fd.as_fd(), &mut buffer[done..], at).during(Syscall::Mmap)? {
            0 => return Err(Error::InvalidPayload),
            read => done += read,
        }
    }
    Ok(())
}

/// `memmove` within one file through `pread`/`pwrite`, a chunk at a time:
/// front to back when moving down, back to front when moving up, so that no
/// chunk overwrites bytes still to be moved.
fn move_by_calls(fd: &OwnedFd, from: u64, to: u64, len: u64) -> Result<()> {
    let mut chunk = vec![0; len.min(BOUNCE_CHUNK) as usize];
    let mut moved = 0;
    while moved < len {
        let part = (len - moved).min(BOUNCE_CHUNK);
        let at = if to <= from {
            moved
        } else {
            len - moved - part
        };
        let bytes = &mut chunk[..part as usize];
        pread_exact(fd, bytes, from + at)?;
        pwrite_all(fd, bytes, to + at)?;
        moved += part;
    }
    Ok(())
}

/// Writes all of `data` at `offset`.
fn pwrite_all(fd: &OwnedFd, data: &[u8], offset: u64) -> Result<()> {
    let mut done = 0;
    while done < data.len() {
        let at = offset_of(offset + done as u64, Syscall::Ftruncate)?;
        match uio::pwrite(fd.as_fd(), &data[done..], at).during(Syscall::Ftruncate)? {
            0 => return Err(Error::Os(Errno::EIO, Syscall::Ftruncate)),
            written => done += written,
        }
    }
    Ok(())
}

/// `offset` as an `off_t`, or `EFBIG`.
fn offset_of(offset: u64, syscall: Syscall) -> Result<i64> {
    i64::try_from(offset).map_err(|_| Error::Os(Errno::EFBIG, syscall))
}

/// All the memory this machine has, RAM and swap (as seen once): no buffer
/// larger than this can ever be allocated.
#[cfg(target_os = "linux")]
pub(crate) fn total_memory() -> u64 {
    static TOTAL: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TOTAL.get_or_init(|| {
        nix::sys::sysinfo::sysinfo().map_or(u64::MAX, |info| {
            info.ram_total().saturating_add(info.swap_total())
        })
    })
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn total_memory() -> u64 {
    u64::MAX
}

/// Releases a mapping made by [`Segment::into_mapping`].
///
/// # Safety
///
/// `ptr` and `len` must be exactly a mapping that `into_mapping` returned and
/// that was not released yet, and nothing may use it afterwards.
pub unsafe fn unmap(ptr: NonNull<u8>, len: NonZeroUsize) {
    drop(Map { ptr, len });
}

/// Runs `hook` when the process exits, or when this library is unloaded
/// (glibc runs a shared library's exit hooks when it is closed).
pub(crate) fn at_exit(hook: extern "C" fn()) {
    // SAFETY: `atexit` only records the pointer; `hook` is a plain function
    // of this library, which cannot be unloaded before the hook has run.
    unsafe { nix::libc::atexit(hook) };
}

/// Removes the name `name`; the segment's memory is freed once no process
/// has it open or mapped. Errors are ignored: the segment may already be gone.
pub fn unlink(name: &ShmName) {
    let _ = mman::shm_unlink(name.as_c_str());
}

#[cfg(any(target_os = "linux", target_os = "freebsd"))]
fn reserve_pages(fd: &OwnedFd, offset: u64, len: u64) -> Result<()> {
    let offset = offset_of(offset, Syscall::Ftruncate)?;
    let len = offset_of(len, Syscall::Ftruncate)?;
    nix::fcntl::posix_fallocate(fd.as_fd(), offset, len).during(Syscall::Ftruncate)
}

/// macOS has no `posix_fallocate`; its shared memory is not a size-limited
/// tmpfs either.
#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
fn reserve_pages(_fd: &OwnedFd, _offset: u64, _len: u64) -> Result<()> {
    Ok(())
}

/// A shared read-write mapping of a segment's first `len` bytes.
#[derive(Debug)]
struct Map {
    ptr: NonNull<u8>,
    len: NonZeroUsize,
}

// SAFETY: a `Map` is an address range owned by whoever owns the `Segment`;
// nothing about it is tied to the thread that made it.
unsafe impl Send for Map {}

impl Map {
    fn new(fd: &OwnedFd, len: NonZeroUsize) -> Result<Map> {
        // SAFETY: a fresh shared mapping chosen by the kernel overlaps nothing
        // of ours; `Drop` unmaps exactly this range.
        let ptr = unsafe {
            mman::mmap(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd.as_fd(),
                0,
            )
        }
        .during(Syscall::Mmap)?;
        Ok(Map {
            ptr: ptr.cast(),
            len,
        })
    }

    /// Extends the mapping to `len` bytes; it may move.
    #[cfg(target_os = "linux")]
    fn grow(&mut self, _fd: &OwnedFd, len: NonZeroUsize) -> Result<()> {
        // SAFETY: `ptr`/`len` are exactly our mapping; on success the old
        // range is gone and `self` describes the new one, on failure the old
        // one is untouched. No reference into the mapping outlives a call.
        let ptr = unsafe {
            mman::mremap(
                self.ptr.cast(),
                self.len.get(),
                len.get(),
                mman::MRemapFlags::MREMAP_MAYMOVE,
                None,
            )
        }
        .during(Syscall::Mmap)?;
        self.ptr = ptr.cast();
        self.len = len;
        Ok(())
    }

    #[cfg(not(target_os = "linux"))]
    fn grow(&mut self, fd: &OwnedFd, len: NonZeroUsize) -> Result<()> {
        *self = Map::new(fd, len)?;
        Ok(())
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the range `new`/`grow` mapped, once. It can
        // only fail for a range that is not a mapping, which would be a bug
        // here, not something to report from a destructor.
        let _ = unsafe { mman::munmap(self.ptr.cast(), self.len.get()) };
    }
}

/// `memmove` from `source` to `destination`.
///
/// # Safety
///
/// Both ranges must be valid for `len` bytes.
unsafe fn copy(source: *const u8, destination: *mut u8, len: usize) {
    // SAFETY: forwarded to the caller.
    unsafe { std::ptr::copy(source, destination, len) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::stat;

    /// A segment under a fresh name, unlinked when the test ends.
    pub(crate) struct Scratch {
        pub name: ShmName,
        pub segment: Segment,
    }

    impl Scratch {
        pub fn new(len: u64) -> Scratch {
            let (name, segment) = Segment::create_unique(len).unwrap();
            Scratch { name, segment }
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            unlink(&self.name);
        }
    }

    fn read_all(segment: &mut Segment) -> Vec<u8> {
        let mut data = vec![0; segment.len() as usize];
        segment.read(0, &mut data).unwrap();
        data
    }

    #[test]
    fn a_new_segment_is_zeroed() {
        let mut scratch = Scratch::new(100);
        assert_eq!(read_all(&mut scratch.segment), vec![0; 100]);
    }

    #[test]
    fn writes_are_seen_through_another_descriptor() {
        let mut scratch = Scratch::new(8);
        scratch.segment.write(2, b"abc").unwrap();
        let mut other = Segment::open(&scratch.name).unwrap();
        assert_eq!(read_all(&mut other), b"\0\0abc\0\0\0");
    }

    #[test]
    fn creating_an_existing_name_fails_with_eexist() {
        let scratch = Scratch::new(1);
        let error = Segment::create(&scratch.name, 1).unwrap_err();
        assert_eq!(error, Error::Os(Errno::EEXIST, Syscall::ShmOpen));
    }

    #[test]
    fn segments_are_private_to_their_user() {
        let scratch = Scratch::new(1);
        let stat = stat::fstat(scratch.segment.fd.as_fd()).unwrap();
        assert_eq!(stat.st_mode & 0o777, 0o600);
    }

    #[test]
    fn opening_a_missing_segment_fails_with_enoent() {
        let error = Segment::open(&ShmName::generate()).unwrap_err();
        assert_eq!(error, Error::Os(Errno::ENOENT, Syscall::ShmOpen));
    }

    #[test]
    fn access_past_the_end_is_refused() {
        let mut scratch = Scratch::new(4);
        assert_eq!(scratch.segment.write(2, b"abc"), Err(Error::InvalidPayload));
        assert_eq!(
            scratch.segment.prepare(u64::MAX, 2),
            Err(Error::InvalidPayload)
        );
        assert_eq!(
            scratch.segment.copy_within(0, 3, 2),
            Err(Error::InvalidPayload)
        );
    }

    #[test]
    fn zero_length_segments_need_no_mapping() {
        let mut scratch = Scratch::new(0);
        assert_eq!(read_all(&mut scratch.segment), b"");
        scratch.segment.write(0, b"").unwrap();
        assert!(scratch.segment.map.is_none());
    }

    #[test]
    fn a_shrink_by_another_descriptor_is_seen_after_refresh() {
        let mut scratch = Scratch::new(4096);
        scratch.segment.write(0, &[7; 4096]).unwrap();
        Segment::open(&scratch.name).unwrap().resize(10).unwrap();
        assert_eq!(scratch.segment.refresh().unwrap(), 10);
        assert_eq!(scratch.segment.prepare(0, 4096), Err(Error::InvalidPayload));
        assert_eq!(read_all(&mut scratch.segment), vec![7; 10]);
    }

    #[test]
    fn growing_keeps_the_data_and_remaps() {
        let mut scratch = Scratch::new(3);
        scratch.segment.write(0, b"abc").unwrap();
        scratch.segment.resize(1 << 20).unwrap();
        scratch.segment.write((1 << 20) - 3, b"xyz").unwrap();
        let data = read_all(&mut scratch.segment);
        assert_eq!(&data[..3], b"abc");
        assert_eq!(&data[(1 << 20) - 3..], b"xyz");
    }

    #[test]
    fn large_overlapping_moves_through_calls_are_memmoves() {
        let len = 2 * BOUNCE_CHUNK + 7;
        let data: Vec<u8> = (0..3 * len).map(|i| (i % 253) as u8).collect();
        for (from, to) in [(len, 10), (10, len)] {
            let mut scratch = Scratch::new(3 * len);
            scratch.segment.write(0, &data).unwrap();
            scratch.segment.copy_within(from, to, len).unwrap();
            assert!(scratch.segment.map.is_none());
            let mut expected = data.clone();
            expected.copy_within(from as usize..(from + len) as usize, to as usize);
            assert!(read_all(&mut scratch.segment) == expected, "{from} -> {to}");
        }
    }

    #[test]
    fn bytes_in_place_read_and_change_the_segment() {
        let mut scratch = Scratch::new(5);
        scratch.segment.write(0, b"hello").unwrap();
        let sum = scratch
            .segment
            .with_bytes(5, |bytes| bytes.iter().map(|&b| u32::from(b)).sum::<u32>());
        assert_eq!(sum, Ok(532));
        scratch
            .segment
            .with_bytes_mut(2, |bytes| bytes.copy_from_slice(b"HE"))
            .unwrap();
        assert_eq!(read_all(&mut scratch.segment), b"HEllo");
        assert_eq!(
            scratch.segment.with_bytes(6, |_| ()),
            Err(Error::InvalidPayload)
        );
        assert_eq!(scratch.segment.with_bytes(0, |bytes| bytes.len()), Ok(0));
    }

    #[test]
    fn a_mapping_handed_over_stays_valid_until_unmapped() {
        let scratch = Scratch::new(4096);
        let segment = Segment::open(&scratch.name).unwrap();
        let ptr = segment.into_mapping(4096).unwrap();
        // SAFETY: 4096 mapped bytes, unmapped once below.
        unsafe {
            ptr.as_ptr().write_bytes(9, 4096);
            unmap(ptr, NonZeroUsize::new(4096).unwrap());
        }
        let mut again = Segment::open(&scratch.name).unwrap();
        assert_eq!(read_all(&mut again), vec![9; 4096]);
        assert!(Segment::open(&scratch.name)
            .unwrap()
            .into_mapping(4097)
            .is_err());
    }

    #[test]
    fn copy_within_is_a_memmove() {
        let mut scratch = Scratch::new(6);
        scratch.segment.write(0, b"abcdef").unwrap();
        scratch.segment.copy_within(0, 2, 4).unwrap();
        assert_eq!(read_all(&mut scratch.segment), b"ababcd");
        scratch.segment.copy_within(2, 0, 4).unwrap();
        assert_eq!(read_all(&mut scratch.segment), b"abcdcd");
    }

    #[test]
    fn mapped_and_unmapped_access_see_the_same_bytes() {
        let mut mapped = Scratch::new(10_000);
        mapped.segment.expect_reuse();
        // Each call on a kept segment starts with a refresh.
        for call in 0..MAP_AFTER {
            mapped.segment.refresh().unwrap();
            mapped.segment.write(0, &[1; 10_000]).unwrap();
            assert!(
                mapped.segment.map.is_none(),
                "call {call}: not worth a mapping yet"
            );
        }
        mapped.segment.refresh().unwrap();
        mapped.segment.write(100, &[2; 50]).unwrap();
        assert!(mapped.segment.map.is_some(), "busy: mapped");
        let mut plain = Segment::open(&mapped.name).unwrap();
        let data = read_all(&mut plain);
        assert!(plain.map.is_none());
        assert_eq!(&data[99..101], &[1, 2]);
        assert_eq!(&data[149..151], &[2, 1]);
        plain.write(0, &[3; 4]).unwrap();
        assert_eq!(&read_all(&mut mapped.segment)[..5], &[3, 3, 3, 3, 1]);
    }

    #[test]
    fn unmapped_reads_of_holes_give_zeros_and_reserve_nothing() {
        let mut scratch = Scratch::new(1 << 20);
        assert_eq!(read_all(&mut scratch.segment), vec![0; 1 << 20]);
        let stat = stat::fstat(scratch.segment.fd.as_fd()).unwrap();
        assert_eq!(stat.st_blocks, 0);
    }

    #[test]
    fn copies_from_an_unmapped_segment_go_in_chunks() {
        let len = 3 * BOUNCE_CHUNK + 5;
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut source = Scratch::new(len);
        source.segment.write(0, &data).unwrap();
        let mut target = Scratch::new(len + 1);
        source
            .segment
            .copy_to(0, &mut target.segment, 1, len)
            .unwrap();
        assert_eq!(&read_all(&mut target.segment)[1..], &data[..]);
    }

    #[test]
    fn copy_to_moves_bytes_between_segments() {
        let mut source = Scratch::new(5);
        let mut target = Scratch::new(5);
        source.segment.write(0, b"hello").unwrap();
        source
            .segment
            .copy_to(1, &mut target.segment, 0, 4)
            .unwrap();
        assert_eq!(read_all(&mut target.segment), b"ello\0");
    }

    #[test]
    fn sizes_beyond_off_t_are_efbig() {
        let mut scratch = Scratch::new(0);
        assert_eq!(
            scratch.segment.resize(u64::MAX),
            Err(Error::Os(Errno::EFBIG, Syscall::Ftruncate))
        );
    }

    #[test]
    fn only_the_touched_prefix_takes_memory() {
        let mut scratch = Scratch::new(5 << 30);
        scratch.segment.write(0, &[1; 8192]).unwrap();
        let stat = stat::fstat(scratch.segment.fd.as_fd()).unwrap();
        assert_eq!(stat.st_size, 5 << 30);
        assert!(stat.st_blocks * 512 < 1 << 20, "{} blocks", stat.st_blocks);
    }
}
