//! The OS calls behind segments, on Linux: a segment is a file in the tmpfs
//! at `/dev/shm`, where glibc's and musl's `shm_open(3)` put them. The
//! directory is opened once and every name is resolved against it, which
//! spares each call a path walk from `/`.
//!
//! Owns the system calls on names and descriptors; knows nothing of
//! mappings, claims or guards.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::OnceLock;

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{self, AtFlags, OFlag};
use nix::sys::stat::{self, Mode};
use nix::unistd::{self, UnlinkatFlags};

use super::Status;
use crate::error::{Context, Error, Result, Syscall};
use crate::name::ShmName;

const SHM_DIR: &str = "/dev/shm";

/// The flags `shm_open(3)` adds to every open.
fn flags(extra: OFlag) -> OFlag {
    extra | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

/// Creates the segment `name`, empty, readable and writable by this user
/// only; `EEXIST` if it exists.
pub fn create(name: &ShmName) -> Result<OwnedFd> {
    let flags = flags(OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR);
    let mode = Mode::S_IRUSR | Mode::S_IWUSR;
    fcntl::openat(directory()?, canonical(name)?, flags, mode).during(Syscall::ShmOpen)
}

/// Opens the existing segment `name` for reading and writing. Something
/// else under its name must not stall or take over the caller: a FIFO opens
/// without waiting for a peer, a terminal does not become the process's.
/// (The caller refuses what is not a regular file once it is open.)
pub fn open(name: &ShmName) -> Result<OwnedFd> {
    fcntl::openat(
        directory()?,
        canonical(name)?,
        flags(OFlag::O_RDWR | OFlag::O_NONBLOCK | OFlag::O_NOCTTY),
        Mode::empty(),
    )
    .during(Syscall::ShmOpen)
}

/// What the segment `name` is now, without opening it; `ENXIO` for a file
/// that is not a segment.
pub fn status_of_name(name: &ShmName) -> Result<Status> {
    let stat = stat::fstatat(directory()?, canonical(name)?, AtFlags::AT_SYMLINK_NOFOLLOW)
        .during(Syscall::ShmOpen)?;
    Status::of(&stat)
}

/// The names in the shared memory directory, `.` and `..` aside, each
/// without a leading slash.
pub fn names() -> Result<Vec<Vec<u8>>> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let mut listing =
        Dir::openat(directory()?, ".", flags, Mode::empty()).during(Syscall::ShmOpen)?;
    let mut names = Vec::new();
    for entry in listing.iter() {
        let entry = entry.during(Syscall::ShmOpen)?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    Ok(names)
}

/// Gives the file `from` the name `to`, replacing what `to` named.
pub fn rename(from: &ShmName, to: &ShmName) -> Result<()> {
    let directory = directory()?;
    fcntl::renameat(directory, canonical(from)?, directory, canonical(to)?).during(Syscall::ShmOpen)
}

/// Removes the name; errors are ignored: it may be gone already.
pub fn unlink(name: &ShmName) {
    if let (Ok(directory), Ok(canonical)) = (directory(), canonical(name)) {
        let _ = unistd::unlinkat(directory, canonical, UnlinkatFlags::NoRemoveDir);
    }
}

/// Reserves the pages of `[offset, offset + len)`, so that touching them
/// through a mapping cannot fail: `ENOSPC` here rather than SIGBUS then.
pub fn reserve(fd: BorrowedFd, offset: u64, len: u64) -> Result<()> {
    let offset = super::off_t(offset, Syscall::Ftruncate)?;
    let len = super::off_t(len, Syscall::Ftruncate)?;
    fcntl::posix_fallocate(fd, offset, len).during(Syscall::Ftruncate)
}

/// Sizes the empty file `fd` to `len` bytes with their pages reserved, in
/// one call (`fallocate` extends a file).
pub fn allocate(fd: BorrowedFd, len: u64) -> Result<()> {
    reserve(fd, 0, len)
}

/// Whether the filesystem of `fd` has no page left.
pub fn is_full(fd: BorrowedFd) -> bool {
    nix::sys::statvfs::fstatvfs(fd).is_ok_and(|stats| stats.blocks_available() == 0)
}

/// All the memory this machine has, RAM and swap (as seen once): no buffer
/// larger than this can ever be allocated.
pub fn total_memory() -> u64 {
    static TOTAL: OnceLock<u64> = OnceLock::new();
    *TOTAL.get_or_init(|| {
        nix::sys::sysinfo::sysinfo().map_or(u64::MAX, |info| {
            info.ram_total().saturating_add(info.swap_total())
        })
    })
}

/// The shared memory directory, opened once.
fn directory() -> Result<BorrowedFd<'static>> {
    static DIRECTORY: OnceLock<std::result::Result<OwnedFd, Errno>> = OnceLock::new();
    DIRECTORY
        .get_or_init(|| {
            let flags = OFlag::O_DIRECTORY | OFlag::O_PATH | OFlag::O_CLOEXEC;
            fcntl::open(SHM_DIR, flags, Mode::empty())
        })
        .as_ref()
        .map(AsFd::as_fd)
        .map_err(|errno| Error::Os(*errno, Syscall::ShmOpen))
}

/// The name relative to the directory, or the error `shm_open` would give.
fn canonical(name: &ShmName) -> Result<&std::ffi::CStr> {
    let canonical = name
        .canonical()
        .map_err(|errno| Error::Os(errno, Syscall::ShmOpen))?;
    std::ffi::CStr::from_bytes_with_nul(canonical)
        .map_err(|_| Error::Os(Errno::EINVAL, Syscall::ShmOpen))
}
