//! Names as C holds them: NUL-terminated strings, in memory from `malloc`.

use std::ffi::{c_char, CStr};
use std::ptr;

use nix::libc;
use shmex::ShmName;

/// The name a C string holds, or `None` for NULL (or a name whose NUL would
/// be read as its end: impossible for a C string).
///
/// # Safety
///
/// `name` is NULL or a NUL-terminated string.
pub unsafe fn name_at(name: *const c_char) -> Option<ShmName> {
    if name.is_null() {
        return None;
    }
    // SAFETY: a non-NULL name is a C string, by the caller's contract.
    ShmName::new(unsafe { CStr::from_ptr(name) }.to_bytes())
}

/// `bytes` as a C string in memory from `malloc`, for `free` to release;
/// NULL if there is no memory.
pub fn malloc_c_string(bytes: &[u8]) -> *mut c_char {
    // SAFETY: malloc has no preconditions; the result is checked for NULL.
    let copy = unsafe { libc::malloc(bytes.len() + 1) }.cast::<u8>();
    if !copy.is_null() {
        // SAFETY: `copy` has room for the bytes and a NUL.
        unsafe {
            ptr::copy_nonoverlapping(bytes.as_ptr(), copy, bytes.len());
            copy.add(bytes.len()).write(0);
        }
    }
    copy.cast()
}
