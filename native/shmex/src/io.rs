//! Copying a segment's bytes with `pread`/`pwrite`: the way to touch a
//! segment without mapping it, for segments used once, and for ranges that
//! may hold holes (reading a hole this way gives zeros and allocates no page).
//!
//! Owns the I/O loops on a descriptor; knows nothing of mappings or claims.

use std::os::fd::BorrowedFd;

use nix::errno::Errno;
use nix::sys::uio;

use crate::error::{Context, Error, Result, Syscall};
use crate::sys;

/// The most a copy through `pread`/`pwrite` holds in memory at once. Small
/// enough for malloc to recycle from its heap: a larger buffer would be fresh
/// pages from `mmap` every time, each faulted in on first touch.
pub(crate) const BOUNCE_CHUNK: u64 = 64 << 10;

/// Fills `buffer` from `offset`; a segment that ends early was shrunk by
/// someone else meanwhile: `InvalidPayload`.
pub(crate) fn read_exact(fd: BorrowedFd, buffer: &mut [u8], offset: u64) -> Result<()> {
    let mut done = 0;
    while done < buffer.len() {
        let at = sys::off_t(offset + done as u64, Syscall::Mmap)?;
        match uio::pread(fd, &mut buffer[done..], at) {
            // A signal came first, as the mapping's loops retry it too.
            Err(Errno::EINTR) => {}
            read => match read.during(Syscall::Mmap)? {
                0 => return Err(Error::InvalidPayload),
                read => done += read,
            },
        }
    }
    Ok(())
}

/// Writes all of `data` at `offset`.
pub(crate) fn write_all(fd: BorrowedFd, data: &[u8], offset: u64) -> Result<()> {
    let mut done = 0;
    while done < data.len() {
        let at = sys::off_t(offset + done as u64, Syscall::Ftruncate)?;
        match uio::pwrite(fd, &data[done..], at) {
            Err(Errno::EINTR) => {}
            written => match written.during(Syscall::Ftruncate)? {
                0 => return Err(Error::Os(Errno::EIO, Syscall::Ftruncate)),
                written => done += written,
            },
        }
    }
    Ok(())
}

/// Copies `len` bytes from `from` in `source` to `to` in `target`, a chunk
/// at a time. When both are the same file the ranges may overlap: chunks go
/// front to back when moving down, back to front when moving up, so that no
/// chunk overwrites bytes still to be moved.
pub(crate) fn copy(
    source: BorrowedFd,
    from: u64,
    target: BorrowedFd,
    to: u64,
    len: u64,
) -> Result<()> {
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
        read_exact(source, bytes, from + at)?;
        write_all(target, bytes, to + at)?;
        moved += part;
    }
    Ok(())
}
