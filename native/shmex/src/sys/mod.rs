//! The operating system's side of segments: opening, creating, inspecting,
//! resizing and unlinking them by name and descriptor. Every system call of
//! the crate except mapping and copying lives here, chosen per platform once.
//!
//! Owns nothing but OS calls; knows nothing of mappings, claims or guards.

use std::os::fd::{BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::libc;
use nix::sys::stat::{self, FileStat, SFlag};
use nix::unistd;

use crate::error::{Context, Error, Result, Syscall};

#[cfg_attr(
    all(target_os = "linux", not(feature = "posix-sys")),
    path = "linux.rs"
)]
#[cfg_attr(
    not(all(target_os = "linux", not(feature = "posix-sys"))),
    path = "posix.rs"
)]
mod os;

pub(crate) use os::{
    allocate, create, is_full, names, open, rename, reserve, status_of_name, total_memory, unlink,
};

/// Which file a segment is: two names or descriptors with the same identity
/// reach the same bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Identity {
    pub device: libc::dev_t,
    pub inode: libc::ino_t,
}

#[allow(clippy::unnecessary_cast)] // dev_t and ino_t are u64 on Linux only
impl Identity {
    /// The identity as two integers, for C and journals to keep.
    pub fn to_bits(self) -> [u64; 2] {
        [self.device as u64, self.inode as u64]
    }

    /// The identity [`Identity::to_bits`] gave.
    pub fn from_bits([device, inode]: [u64; 2]) -> Identity {
        Identity {
            device: device as libc::dev_t,
            inode: inode as libc::ino_t,
        }
    }
}

/// What a segment is at one moment.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Status {
    pub identity: Identity,
    /// Its size in bytes.
    pub len: u64,
    /// Whether some name still leads to it: a segment whose name was
    /// unlinked (and perhaps given to a new segment) lives on while open.
    pub linked: bool,
    /// How many bytes of memory its pages take.
    pub allocated: u64,
    /// The user that owns it.
    pub owner: u32,
}

impl Status {
    /// What `stat` says of a segment; `ENXIO` when it is not a regular file
    /// (a FIFO, a socket, a device node, a directory, a symbolic link): no
    /// segment is anything else, and nothing else is ours to size or unlink.
    fn of(stat: &FileStat) -> Result<Status> {
        if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
            return Err(Error::Os(Errno::ENXIO, Syscall::ShmOpen));
        }
        Ok(Status {
            identity: Identity {
                device: stat.st_dev,
                inode: stat.st_ino,
            },
            len: u64::try_from(stat.st_size).unwrap_or(0),
            linked: stat.st_nlink > 0,
            allocated: u64::try_from(stat.st_blocks)
                .unwrap_or(0)
                .saturating_mul(512),
            owner: stat.st_uid,
        })
    }

    /// Whether every page up to the size is in memory, so that reading it
    /// through a mapping neither allocates nor can fail for lack of room.
    pub fn has_no_holes(&self) -> bool {
        self.allocated >= self.len.div_ceil(page_size()) * page_size()
    }
}

/// What the open segment is now: a call to `fstat`; `ENXIO` for a file
/// that is not a segment.
pub(crate) fn status_of(fd: BorrowedFd) -> Result<Status> {
    Status::of(&stat::fstat(fd).during(Syscall::ShmOpen)?)
}

/// An open file locked with `flock(2)`: the lock lasts until it is dropped
/// or the process ends, however it ends; the kernel lets go of it then.
pub(crate) type Locked = Flock<OwnedFd>;

/// Locks `fd` exclusively, waiting for the lock or not; `fd` back, with the
/// error, when it is not to be had (`EWOULDBLOCK`: someone holds it).
pub(crate) fn lock(fd: OwnedFd, wait: bool) -> std::result::Result<Locked, (OwnedFd, Errno)> {
    let how = if wait {
        FlockArg::LockExclusive
    } else {
        FlockArg::LockExclusiveNonblock
    };
    Flock::lock(fd, how)
}

/// Sets the size of the segment.
pub(crate) fn resize(fd: BorrowedFd, len: u64) -> Result<()> {
    unistd::ftruncate(fd, off_t(len, Syscall::Ftruncate)?).during(Syscall::Ftruncate)
}

/// This process's effective user: the owner of what it creates.
pub(crate) fn user() -> u32 {
    unistd::geteuid().as_raw()
}

/// The size of a memory page.
pub(crate) fn page_size() -> u64 {
    static PAGE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| {
        nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .and_then(|size| u64::try_from(size).ok())
            .unwrap_or(4096)
    })
}

/// `offset` as an `off_t`, or `EFBIG` reported against `syscall`.
pub(crate) fn off_t(offset: u64, syscall: Syscall) -> Result<libc::off_t> {
    libc::off_t::try_from(offset).map_err(|_| Error::Os(Errno::EFBIG, syscall))
}
