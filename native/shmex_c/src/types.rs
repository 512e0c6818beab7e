//! The C types of `shmex/lib.h`, laid out as 0.5.1 lays them out.

use std::ffi::{c_char, c_int, c_uint, c_void};

use nix::errno::Errno;
use rustler::sys::ErlNifTerm;
use shmex::{Error, Syscall};

/// `NAME_MAX`: the longest segment name.
pub const NAME_MAX: usize = 255;

/// `Shmex`: a `%Shmex{}` struct as C code holds it.
#[repr(C)]
pub struct Shmex {
    pub name: *mut c_char,
    pub size: c_uint,
    pub capacity: c_uint,
    pub mapped_memory: *mut c_void,
    pub guard: ErlNifTerm,
}

/// `ShmexGuard`: the payload of a guard resource.
#[repr(C)]
pub struct ShmexGuard {
    pub name: [c_char; NAME_MAX + 1],
}

/// `ShmexLibResult`. Only ever returned to C: values coming from C are
/// plain `c_int`s, as C may pass any.
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
    nix::libc::MAP_FAILED
}

/// `shmex_lib_result_to_string`.
#[no_mangle]
pub extern "C" fn shmex_lib_result_to_string(result: c_int) -> *const c_char {
    let text: &'static std::ffi::CStr = match result {
        0 => c"ok",
        1 => c"shm_open",
        2 => c"ftruncate",
        3 => c"mmap",
        4 => c"shm_is_mapped",
        5 => c"invalid_payload",
        _ => c"unknown",
    };
    text.as_ptr()
}
