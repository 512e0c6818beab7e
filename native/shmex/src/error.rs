//! The one error type of the crate. Each variant encodes to exactly one of the
//! error reasons Shmex 0.5.1 callers already match on (see `term.rs`).
//!
//! Owns the error values; knows nothing of terms.

use nix::errno::Errno;

/// Which of Shmex 0.5.1's three error categories an OS error falls in: the
/// second half of `{:error, {posix, syscall}}`.
///
/// It names the system call 0.5.1 made for that step, not necessarily the
/// one that failed here: callers match on these three atoms, so the set
/// stays closed, and the calls this crate makes besides are reported against
/// the step they belong to. [`ShmOpen`](Syscall::ShmOpen): opening, creating
/// or inspecting the segment (`openat`, `fstat`); [`Ftruncate`](Syscall::Ftruncate):
/// sizing it or reserving or writing its pages (`posix_fallocate`, `pwrite`);
/// [`Mmap`](Syscall::Mmap): mapping it or reading its pages (`pread`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Syscall {
    ShmOpen,
    Ftruncate,
    Mmap,
}

impl Syscall {
    /// The Elixir atom's name: `shm_open`, `ftruncate` or `mmap`.
    pub fn name(self) -> &'static str {
        match self {
            Syscall::ShmOpen => "shm_open",
            Syscall::Ftruncate => "ftruncate",
            Syscall::Mmap => "mmap",
        }
    }
}

/// Everything that can go wrong with a segment or a `%Shmex{}` struct.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The OS refused: `{:error, {posix, syscall}}`.
    #[error("{}: {}", .1.name(), .0.desc())]
    Os(Errno, Syscall),
    /// The struct claims bytes the segment does not have (`size > capacity`,
    /// or a capacity beyond the segment's real size): `{:error, :invalid_payload}`.
    #[error("the struct's size or capacity does not fit the segment")]
    InvalidPayload,
    /// `read(shm, n)` with `n > shm.size`: `{:error, :invalid_read_size}`.
    #[error("read size is larger than the struct's size")]
    InvalidReadSize,
    /// `split_at(shm, pos)` with `pos > shm.size`: `{:error, :invalid_position}`.
    #[error("split position is past the struct's size")]
    InvalidPosition,
    /// `trim(shm, n)` with `n > shm.size`: `{:error, :invalid_trim_size}`.
    #[error("trim size is larger than the struct's size")]
    InvalidTrimSize,
    /// `add_guard/1` on a struct this library already guards: `{:error, :already_guarded}`.
    #[error("the segment already has a guard")]
    AlreadyGuarded,
}

impl Error {
    /// The atom naming this error (`:invalid_payload`, …), or for an OS error
    /// the lowercase errno name (`:enoent`, …) as `:file.posix()` spells it.
    pub fn reason(&self) -> String {
        match self {
            Error::Os(errno, _) => errno_name(*errno),
            Error::InvalidPayload => "invalid_payload".into(),
            Error::InvalidReadSize => "invalid_read_size".into(),
            Error::InvalidPosition => "invalid_position".into(),
            Error::InvalidTrimSize => "invalid_trim_size".into(),
            Error::AlreadyGuarded => "already_guarded".into(),
        }
    }
}

/// `ENOENT` → `"enoent"`, the way `erl_errno_id` names errno values.
fn errno_name(errno: Errno) -> String {
    match errno {
        Errno::UnknownErrno => "unknown".into(),
        known => format!("{known:?}").to_ascii_lowercase(),
    }
}

/// A `Result` whose error is this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Wraps an errno with the system call it is reported against.
pub(crate) trait Context<T> {
    fn during(self, syscall: Syscall) -> Result<T>;
}

impl<T> Context<T> for nix::Result<T> {
    fn during(self, syscall: Syscall) -> Result<T> {
        self.map_err(|errno| Error::Os(errno, syscall))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_names_are_the_lowercase_posix_names() {
        assert_eq!(
            Error::Os(Errno::ENOENT, Syscall::ShmOpen).reason(),
            "enoent"
        );
        assert_eq!(
            Error::Os(Errno::ENOSPC, Syscall::Ftruncate).reason(),
            "enospc"
        );
        assert_eq!(
            Error::Os(Errno::ENAMETOOLONG, Syscall::ShmOpen).reason(),
            "enametoolong"
        );
        assert_eq!(
            Error::Os(Errno::UnknownErrno, Syscall::Mmap).reason(),
            "unknown"
        );
    }

    #[test]
    fn os_errors_name_their_syscall() {
        let error = Error::Os(Errno::EEXIST, Syscall::ShmOpen);
        assert_eq!(error.to_string(), "shm_open: File exists");
    }
}
