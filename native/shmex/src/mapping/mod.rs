//! A shared mapping of a segment: the one type of the crate that touches
//! memory through pointers. Every `unsafe` block of the crate that does is
//! in this module: the [`Mapping`] type here, and the SIGBUS handler that
//! keeps its promises ([`fault`]). (The others call C functions: across the
//! VM's table, `crate::vm` and `internal`.)
//!
//! # Invariants
//!
//! A [`Mapping`] owns `[ptr, ptr + len)`:
//!
//! 1. the range is mapped from [`Mapping::new`] until `Drop`, and nothing
//!    else unmaps or moves it (no `mremap`; a longer mapping is a new one);
//! 2. it is in the fault registry for all that time, so touching a page that
//!    the file no longer backs (another process shrank the file or punched a
//!    hole in it, or a hole cannot be filled on a full filesystem) does not
//!    kill the process: the handler puts anonymous memory over the whole
//!    range, in place, and marks the mapping [faulted](Mapping::faulted);
//! 3. every access is bounds-checked against `len` here, before any pointer
//!    is formed.
//!
//! So every address of the range stays readable and writable for the
//! mapping's whole life, whatever happens to the file; what is read after a
//! fault may be zeros and what is written may be lost, which every method
//! reports as a [`Fault`] once its copy is done.
//!
//! The mapped bytes are shared with other processes, which may change them
//! at any time: copies here go through raw pointers and never form a Rust
//! reference to mapped memory, except in the `unsafe` [`Mapping::with_bytes`]
//! and [`Mapping::with_bytes_mut`], whose callers promise that nothing
//! changes the bytes meanwhile.

mod fault;

use std::num::NonZeroUsize;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;

use nix::errno::Errno;
use nix::sys::mman::{self, MapFlags, ProtFlags};

use crate::error::{Context, Error, Result, Syscall};

/// Installs this copy's SIGBUS handler now, rather than with its first
/// mapping, and so keeps its library loaded for good: a primary whose table
/// other libraries hold must never be unloaded. Whether it is in place.
pub(crate) fn install_fault_handler() -> bool {
    fault::install()
}

/// How many times pages of our mappings were lost (and the process lived).
pub fn faults_absorbed() -> usize {
    fault::absorbed()
}

/// A shared read-write mapping of the first `len` bytes of a segment.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: NonZeroUsize,
    slot: &'static fault::Slot,
}

/// Why an access through a mapping could not be completed as asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The range lies outside the mapping, or pages of the mapping were lost
    /// while the access ran: what was read is not to be trusted, and what
    /// was written may be lost.
    Lost,
    /// A system call copying from or into the mapping failed otherwise.
    Failed(Error),
}

// SAFETY: a mapping is an address range; nothing about it is tied to the
// thread that made it, and every method may run on several threads at once
// (the bytes themselves are shared memory, see the module docs).
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` only copies through raw pointers.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps the first `len` bytes of the segment open as `fd`, read-write and
    /// shared. The segment may be shorter: pages past its end are only
    /// touched by mistake, and that is survived (see the module docs).
    pub(crate) fn new(fd: BorrowedFd, len: NonZeroUsize) -> Result<Mapping> {
        if !fault::install() {
            // Without the handler a mapping could kill the process.
            return Err(Error::Os(Errno::ENOTSUP, Syscall::Mmap));
        }
        // SAFETY: a fresh shared mapping placed by the kernel overlaps no
        // memory of this process; `Drop` unmaps exactly this range.
        let ptr = unsafe {
            mman::mmap(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd,
                0,
            )
        }
        .during(Syscall::Mmap)?;
        Ok(Mapping::registered(ptr.cast(), len))
    }

    /// `len` bytes of private, zeroed memory, mapped the same way: a stand-in
    /// for C callers that use a mapping without checking that they got one.
    pub fn anonymous(len: u64) -> Result<Mapping> {
        let len = usize::try_from(len)
            .ok()
            .and_then(NonZeroUsize::new)
            .ok_or(Error::Os(Errno::EINVAL, Syscall::Mmap))?;
        // SAFETY: as in `new`: a fresh mapping placed by the kernel.
        let ptr = unsafe {
            mman::mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE,
            )
        }
        .during(Syscall::Mmap)?;
        Ok(Mapping::registered(ptr.cast(), len))
    }

    /// The mapping at `ptr`, just made, entered in the fault registry
    /// (invariant 2).
    fn registered(ptr: NonNull<u8>, len: NonZeroUsize) -> Mapping {
        let slot = fault::register(ptr.as_ptr() as usize, len.get());
        Mapping { ptr, len, slot }
    }

    /// How many bytes are mapped.
    pub(crate) fn len(&self) -> u64 {
        self.len.get() as u64
    }

    /// Where the mapping starts, for C callers, which keep a bare pointer
    /// (they must not use it after the mapping is dropped).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Whether pages of the mapping were lost: it no longer shows the file,
    /// and must be dropped.
    pub fn faulted(&self) -> bool {
        self.slot.faulted()
    }

    /// Copies the bytes at `offset` into `buffer`.
    pub(crate) fn read(&self, offset: u64, buffer: &mut [u8]) -> std::result::Result<(), Fault> {
        let source = self.range(offset, buffer.len())?;
        // SAFETY: `range` checked that the source lies in the mapping, which
        // stays mapped (invariants 1 and 2); `buffer` is ordinary memory of
        // the caller, so the two do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(source, buffer.as_mut_ptr(), buffer.len()) };
        self.settled()
    }

    /// Copies `data` to `offset`.
    pub(crate) fn write(&self, offset: u64, data: &[u8]) -> std::result::Result<(), Fault> {
        let target = self.range(offset, data.len())?;
        // SAFETY: as in `read`, with the roles swapped.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), target, data.len()) };
        self.settled()
    }

    /// Copies `len` bytes from `from` to `to`; the ranges may overlap.
    pub(crate) fn copy_within(
        &self,
        from: u64,
        to: u64,
        len: u64,
    ) -> std::result::Result<(), Fault> {
        let len = usize::try_from(len).map_err(|_| Fault::Lost)?;
        let source = self.range(from, len)?;
        let target = self.range(to, len)?;
        // SAFETY: both ranges lie in the mapping (`range`); `copy` is a
        // memmove, so they may overlap.
        unsafe { std::ptr::copy(source, target, len) };
        self.settled()
    }

    /// Copies `len` bytes at `from` to `to` in another mapping.
    pub(crate) fn copy_to(
        &self,
        from: u64,
        target: &Mapping,
        to: u64,
        len: u64,
    ) -> std::result::Result<(), Fault> {
        let len = usize::try_from(len).map_err(|_| Fault::Lost)?;
        let source = self.range(from, len)?;
        let destination = target.range(to, len)?;
        // SAFETY: each range lies in its mapping (`range`). Two mappings of
        // ours never share addresses (each owns its range, invariant 1), so
        // the ranges do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(source, destination, len) };
        self.settled().and(target.settled())
    }

    /// Writes `len` bytes at `from` to the file `fd` at `to`, with `pwrite`
    /// straight from the mapping. The kernel reports a lost page of the
    /// mapping as `EFAULT` rather than with a signal.
    pub(crate) fn write_out(
        &self,
        from: u64,
        len: u64,
        fd: BorrowedFd,
        to: u64,
    ) -> std::result::Result<(), Fault> {
        let len = usize::try_from(len).map_err(|_| Fault::Lost)?;
        let source = self.range(from, len)?;
        let mut done = 0;
        while done < len {
            let at =
                crate::sys::off_t(to + done as u64, Syscall::Ftruncate).map_err(Fault::Failed)?;
            // SAFETY: `[source + done, source + len)` lies in the mapping
            // (`range`), which stays mapped; the kernel only reads it.
            let written = unsafe {
                nix::libc::pwrite(fd.as_raw_fd(), source.add(done).cast(), len - done, at)
            };
            match Errno::result(written) {
                Ok(0) => return Err(Fault::Failed(Error::Os(Errno::EIO, Syscall::Ftruncate))),
                Ok(written) => done += written as usize,
                Err(Errno::EINTR) => {}
                Err(Errno::EFAULT) => return Err(Fault::Lost),
                Err(errno) => return Err(Fault::Failed(Error::Os(errno, Syscall::Ftruncate))),
            }
        }
        self.settled()
    }

    /// Reads `len` bytes of the file `fd` at `from` into the mapping at `to`,
    /// with `pread` straight into the mapping. A file that ends early was
    /// shrunk meanwhile: [`Error::InvalidPayload`].
    pub(crate) fn read_in(
        &self,
        fd: BorrowedFd,
        from: u64,
        to: u64,
        len: u64,
    ) -> std::result::Result<(), Fault> {
        let len = usize::try_from(len).map_err(|_| Fault::Lost)?;
        let target = self.range(to, len)?;
        let mut done = 0;
        while done < len {
            let at = crate::sys::off_t(from + done as u64, Syscall::Mmap).map_err(Fault::Failed)?;
            // SAFETY: `[target + done, target + len)` lies in the mapping
            // (`range`), which stays mapped; the kernel writes only there.
            let read = unsafe {
                nix::libc::pread(fd.as_raw_fd(), target.add(done).cast(), len - done, at)
            };
            match Errno::result(read) {
                Ok(0) => return Err(Fault::Failed(Error::InvalidPayload)),
                Ok(read) => done += read as usize,
                Err(Errno::EINTR) => {}
                Err(Errno::EFAULT) => return Err(Fault::Lost),
                Err(errno) => return Err(Fault::Failed(Error::Os(errno, Syscall::Mmap))),
            }
        }
        self.settled()
    }

    /// Runs `f` on the first `len` bytes, in place.
    ///
    /// # Safety
    ///
    /// Nothing may change or shrink these bytes while `f` runs: no other
    /// process, no other mapping of the segment, no other thread. (Should the
    /// file shrink anyway, the process survives, see the module docs, and the
    /// call reports a [`Fault`]; but `f` will have seen its bytes change.)
    pub(crate) unsafe fn with_bytes<R>(
        &self,
        len: u64,
        f: impl FnOnce(&[u8]) -> R,
    ) -> std::result::Result<R, Fault> {
        let len = usize::try_from(len).map_err(|_| Fault::Lost)?;
        let start = self.range(0, len)?;
        // SAFETY: the range lies in the mapping and stays mapped while `f`
        // runs (invariants 1 to 3); the caller promises it does not change.
        let result = f(unsafe { std::slice::from_raw_parts(start, len) });
        self.settled().map(|()| result)
    }

    /// Runs `f` on the first `len` bytes, in place, to change them.
    ///
    /// # Safety
    ///
    /// Nothing else may read or change these bytes while `f` runs, as in
    /// [`with_bytes`](Self::with_bytes).
    pub(crate) unsafe fn with_bytes_mut<R>(
        &self,
        len: u64,
        f: impl FnOnce(&mut [u8]) -> R,
    ) -> std::result::Result<R, Fault> {
        let len = usize::try_from(len).map_err(|_| Fault::Lost)?;
        let start = self.range(0, len)?;
        // SAFETY: as in `with_bytes`; the caller promises exclusive access.
        let result = f(unsafe { std::slice::from_raw_parts_mut(start, len) });
        self.settled().map(|()| result)
    }

    /// The address of `[offset, offset + len)`, if it lies in the mapping.
    fn range(&self, offset: u64, len: usize) -> std::result::Result<*mut u8, Fault> {
        let end = offset.checked_add(len as u64).ok_or(Fault::Lost)?;
        if end > self.len() {
            return Err(Fault::Lost);
        }
        // SAFETY: `offset <= end <= len`, so the result stays inside (or one
        // past the end of) the mapped range.
        Ok(unsafe { self.ptr.as_ptr().add(offset as usize) })
    }

    /// `Fault` if pages were lost, by now or during the access just made.
    fn settled(&self) -> std::result::Result<(), Fault> {
        if self.faulted() {
            Err(Fault::Lost)
        } else {
            Ok(())
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // Unregistered first: once unmapped, the addresses may be reused by
        // anyone, and a fault there is not ours to absorb.
        fault::unregister(self.slot);
        // SAFETY: unmaps exactly the range `new` mapped, once; nothing uses
        // it any more (`&mut self`). munmap only fails for a range that is
        // not a mapping, which would be a bug here, not something a
        // destructor could report.
        let _ = unsafe { mman::munmap(self.ptr.cast(), self.len.get()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys;
    use crate::test_support::Scratch;
    use std::os::fd::AsFd;

    fn mapping(scratch: &Scratch, len: usize) -> Mapping {
        Mapping::new(scratch.fd.as_fd(), NonZeroUsize::new(len).unwrap()).unwrap()
    }

    #[test]
    fn copies_are_bounds_checked() {
        let scratch = Scratch::new(4096);
        let map = mapping(&scratch, 4096);
        map.write(4090, b"abcdef").unwrap();
        let mut out = [0; 6];
        map.read(4090, &mut out).unwrap();
        assert_eq!(&out, b"abcdef");
        assert_eq!(map.write(4091, b"abcdef"), Err(Fault::Lost));
        assert_eq!(map.read(u64::MAX, &mut out), Err(Fault::Lost));
        assert_eq!(map.copy_within(0, 4095, 2), Err(Fault::Lost));
        map.copy_within(4090, 0, 6).unwrap();
        map.read(0, &mut out).unwrap();
        assert_eq!(&out, b"abcdef");
        assert!(!map.faulted());
    }

    #[test]
    fn a_file_shrunk_under_a_copy_is_a_fault_not_a_crash() {
        let scratch = Scratch::new(64 << 10);
        let map = mapping(&scratch, 64 << 10);
        map.write(0, &[7; 64 << 10]).unwrap();
        sys::resize(scratch.fd.as_fd(), 0).unwrap();
        let mut out = vec![1; 64 << 10];
        assert_eq!(map.read(0, &mut out), Err(Fault::Lost));
        assert!(map.faulted());
        // The range stays usable memory: nothing crashes on later accesses.
        assert_eq!(map.write(0, b"x"), Err(Fault::Lost));
    }

    #[test]
    fn other_mappings_are_untouched_by_a_fault() {
        let (a, b) = (Scratch::new(8192), Scratch::new(8192));
        let (map_a, map_b) = (mapping(&a, 8192), mapping(&b, 8192));
        map_b.write(0, b"kept").unwrap();
        sys::resize(a.fd.as_fd(), 0).unwrap();
        assert_eq!(map_a.copy_to(0, &map_b, 100, 10), Err(Fault::Lost));
        assert!(!map_b.faulted());
        let mut out = [0; 4];
        map_b.read(0, &mut out).unwrap();
        assert_eq!(&out, b"kept");
    }

    #[test]
    fn bytes_in_place_are_checked_after_use() {
        let scratch = Scratch::new(5);
        let map = mapping(&scratch, 5);
        map.write(0, b"hello").unwrap();
        // SAFETY: nothing else uses this scratch segment.
        let sum = unsafe { map.with_bytes(5, |bytes| bytes.iter().map(|&b| u32::from(b)).sum()) };
        assert_eq!(sum, Ok(532));
        // SAFETY: as above.
        unsafe { map.with_bytes_mut(2, |bytes| bytes.copy_from_slice(b"HE")) }.unwrap();
        // SAFETY: as above.
        assert_eq!(unsafe { map.with_bytes(6, |_| ()) }, Err(Fault::Lost));
        let mut out = [0; 5];
        map.read(0, &mut out).unwrap();
        assert_eq!(&out, b"HEllo");
    }
}
