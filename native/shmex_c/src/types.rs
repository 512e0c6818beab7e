//! The C types of `shmex/lib.h`, laid out as 0.5.1 lays them out.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};

use nix::errno::Errno;
use nix::libc;
use shmex::{Error, Syscall};

/// `Shmex`: a `%Shmex{}` struct as C code holds it. Its `guard` field is an
/// `ERL_NIF_TERM` for NIFs and an `erlang_ref *` for C nodes; the functions
/// both share see it as `Shmex<()>`, the fields before it.
#[repr(C)]
pub struct Shmex<Guard = ()> {
    pub name: *mut c_char,
    pub size: c_uint,
    pub capacity: c_uint,
    pub mapped_memory: *mut c_void,
    pub guard: Guard,
}

// The layout shmex/lib.h declares, on 64-bit targets; the C side asserts
// the same numbers (test/support/c_client/api_surface.c).
#[cfg(target_pointer_width = "64")]
const _: () = {
    use std::mem::offset_of;
    assert!(offset_of!(Shmex<u64>, name) == 0);
    assert!(offset_of!(Shmex<u64>, size) == 8);
    assert!(offset_of!(Shmex<u64>, capacity) == 12);
    assert!(offset_of!(Shmex<u64>, mapped_memory) == 16);
    assert!(offset_of!(Shmex<u64>, guard) == 24);
    assert!(size_of::<Shmex<u64>>() == 32);
    assert!(size_of::<ShmexLibResult>() == size_of::<c_int>());
    assert!(ShmexLibResult::InvalidPayload as c_int == 5);
};

impl<Guard> Shmex<Guard> {
    /// The fields both flavours share.
    pub fn common(&mut self) -> &mut Shmex {
        // SAFETY: `Shmex<()>` is `#[repr(C)]` with the same fields before
        // `guard`, which is zero-sized: a prefix of `Shmex<Guard>`.
        unsafe { &mut *std::ptr::from_mut(self).cast::<Shmex>() }
    }
}

/// `ShmexLibResult`, the one table of its values and names. Only ever
/// returned to C: values coming from C are plain `c_int`s, as C may pass any.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShmexLibResult {
    Ok = 0,
    ShmOpen = 1,
    Ftruncate = 2,
    Mmap = 3,
    ShmMapped = 4,
    InvalidPayload = 5,
}

impl ShmexLibResult {
    const ALL: [ShmexLibResult; 6] = [
        ShmexLibResult::Ok,
        ShmexLibResult::ShmOpen,
        ShmexLibResult::Ftruncate,
        ShmexLibResult::Mmap,
        ShmexLibResult::ShmMapped,
        ShmexLibResult::InvalidPayload,
    ];

    /// The result C passed as an integer, if it is one.
    pub fn from_code(code: c_int) -> Option<ShmexLibResult> {
        Self::ALL
            .into_iter()
            .find(|result| *result as c_int == code)
    }

    /// Its name, as `shmex_lib_result_to_string` gives it.
    pub fn name(self) -> &'static CStr {
        match self {
            ShmexLibResult::Ok => c"ok",
            ShmexLibResult::ShmOpen => c"shm_open",
            ShmexLibResult::Ftruncate => c"ftruncate",
            ShmexLibResult::Mmap => c"mmap",
            ShmexLibResult::ShmMapped => c"shm_is_mapped",
            ShmexLibResult::InvalidPayload => c"invalid_payload",
        }
    }

    /// The error this result reports, with `errno` as the reason of an OS
    /// error; `None` for `SHMEX_RES_OK` and `SHMEX_ERROR_SHM_MAPPED`, which
    /// are no errors of a `%Shmex{}` operation.
    pub fn error(self, errno: Errno) -> Option<Error> {
        match self {
            ShmexLibResult::ShmOpen => Some(Error::Os(errno, Syscall::ShmOpen)),
            ShmexLibResult::Ftruncate => Some(Error::Os(errno, Syscall::Ftruncate)),
            ShmexLibResult::Mmap => Some(Error::Os(errno, Syscall::Mmap)),
            ShmexLibResult::InvalidPayload => Some(Error::InvalidPayload),
            ShmexLibResult::Ok | ShmexLibResult::ShmMapped => None,
        }
    }

    /// The result for `error`, with `errno` set to say why.
    pub fn failed(error: Error) -> ShmexLibResult {
        match error {
            Error::Os(errno, syscall) => {
                errno.set();
                match syscall {
                    Syscall::ShmOpen => ShmexLibResult::ShmOpen,
                    Syscall::Ftruncate => ShmexLibResult::Ftruncate,
                    Syscall::Mmap => ShmexLibResult::Mmap,
                }
            }
            _ => ShmexLibResult::invalid(),
        }
    }

    /// `SHMEX_ERROR_INVALID_PAYLOAD`, with `errno` set to `EINVAL`.
    pub fn invalid() -> ShmexLibResult {
        Errno::EINVAL.set();
        ShmexLibResult::InvalidPayload
    }

    /// The result, or `SHMEX_RES_OK`.
    pub fn of(result: shmex::Result<()>) -> ShmexLibResult {
        result.map_or_else(ShmexLibResult::failed, |()| ShmexLibResult::Ok)
    }
}

/// `MAP_FAILED`: "not mapped".
pub fn not_mapped() -> *mut c_void {
    libc::MAP_FAILED
}

/// `shmex_lib_result_to_string`.
#[no_mangle]
pub extern "C" fn shmex_lib_result_to_string(result: c_int) -> *const c_char {
    ShmexLibResult::from_code(result)
        .map_or(c"unknown", ShmexLibResult::name)
        .as_ptr()
}
