//! The OS calls behind segments, with POSIX calls only: `shm_open(3)` and
//! `shm_unlink(3)` by name. Used where the shared memory directory is not
//! known (macOS, the BSDs), and on Linux with the `posix-sys` feature, which
//! tests this file.
//!
//! Owns the system calls on names and descriptors; knows nothing of
//! mappings, claims or guards.

use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::OnceLock;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::mman;
use nix::sys::stat::Mode;

use super::{status_of, Status};
use crate::error::{Context, Error, Result, Syscall};
use crate::name::ShmName;

/// Creates the segment `name`, empty, readable and writable by this user
/// only; `EEXIST` if it exists.
pub fn create(name: &ShmName) -> Result<OwnedFd> {
    let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR;
    mman::shm_open(
        posix(name)?.as_c_str(),
        flags,
        Mode::S_IRUSR | Mode::S_IWUSR,
    )
    .during(Syscall::ShmOpen)
}

/// Opens the existing segment `name` for reading and writing.
pub fn open(name: &ShmName) -> Result<OwnedFd> {
    mman::shm_open(posix(name)?.as_c_str(), OFlag::O_RDWR, Mode::empty()).during(Syscall::ShmOpen)
}

/// What the segment `name` is now: POSIX has no `stat` by name for shared
/// memory, so it is opened for a moment.
pub fn status_of_name(name: &ShmName) -> Result<Status> {
    let fd = mman::shm_open(posix(name)?.as_c_str(), OFlag::O_RDONLY, Mode::empty())
        .during(Syscall::ShmOpen)?;
    status_of(fd.as_fd())
}

/// Removes the name; errors are ignored: it may be gone already.
pub fn unlink(name: &ShmName) {
    if let Ok(name) = posix(name) {
        let _ = mman::shm_unlink(name.as_c_str());
    }
}

/// POSIX cannot list the shared memory objects there are.
pub fn names() -> Result<Vec<Vec<u8>>> {
    Err(Error::Os(Errno::ENOTSUP, Syscall::ShmOpen))
}

/// POSIX cannot rename a shared memory object.
pub fn rename(_from: &ShmName, _to: &ShmName) -> Result<()> {
    Err(Error::Os(Errno::ENOTSUP, Syscall::ShmOpen))
}

/// Reserves the pages of `[offset, offset + len)` where the OS can;
/// elsewhere shared memory is not a size-limited filesystem.
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
pub fn reserve(fd: BorrowedFd, offset: u64, len: u64) -> Result<()> {
    let offset = super::off_t(offset, Syscall::Ftruncate)?;
    let len = super::off_t(len, Syscall::Ftruncate)?;
    nix::fcntl::posix_fallocate(fd, offset, len).during(Syscall::Ftruncate)
}

#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
pub fn reserve(_fd: BorrowedFd, _offset: u64, _len: u64) -> Result<()> {
    Ok(())
}

/// Sizes the empty file `fd` to `len` bytes with their pages reserved, in
/// one call, where the OS can (`posix_fallocate` extends a file).
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
pub fn allocate(fd: BorrowedFd, len: u64) -> Result<()> {
    reserve(fd, 0, len)
}

#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
pub fn allocate(_fd: BorrowedFd, _len: u64) -> Result<()> {
    Err(Error::Os(Errno::ENOTSUP, Syscall::Ftruncate))
}

/// Whether the filesystem of `fd` has no page left.
pub fn is_full(fd: BorrowedFd) -> bool {
    nix::sys::statvfs::fstatvfs(fd).is_ok_and(|stats| stats.blocks_available() == 0)
}

/// No more than the address space: the allocation itself says the rest.
pub fn total_memory() -> u64 {
    static TOTAL: OnceLock<u64> = OnceLock::new();
    *TOTAL.get_or_init(|| u64::try_from(isize::MAX).unwrap_or(u64::MAX))
}

/// The name as `shm_open(3)` takes it, or the error it would give.
fn posix(name: &ShmName) -> Result<CString> {
    name.canonical()
        .map_err(|errno| Error::Os(errno, Syscall::ShmOpen))?;
    CString::new(name.to_posix()).map_err(|_| Error::Os(Errno::EINVAL, Syscall::ShmOpen))
}
