//! Segments and mappings: creating, mapping, resizing and unlinking the
//! segment a C `Shmex` names.

use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::num::NonZeroUsize;
use std::ptr::{self, NonNull};
use std::sync::{Mutex, PoisonError};

use nix::errno::Errno;
use shmex::{Claim, Error, Segment, ShmName, Syscall};

use crate::types::{not_mapped, Shmex, ShmexLibResult};

/// The mappings `shmex_open_and_mmap` made and their lengths: `shmex_unmap`
/// unmaps exactly those, whatever the struct's capacity says by then.
static MAPPINGS: Mutex<BTreeMap<usize, NonZeroUsize>> = Mutex::new(BTreeMap::new());

/// The name a C string holds, or `None` for NULL.
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

/// `bytes` as a C string in memory from `malloc`, for `free` to release.
pub fn malloc_c_string(bytes: &[u8]) -> *mut c_char {
    // SAFETY: malloc has no preconditions; the result is checked for NULL.
    let copy = unsafe { nix::libc::malloc(bytes.len() + 1) }.cast::<u8>();
    if !copy.is_null() {
        // SAFETY: `copy` has room for the bytes and a NUL.
        unsafe {
            ptr::copy_nonoverlapping(bytes.as_ptr(), copy, bytes.len());
            copy.add(bytes.len()).write(0);
        }
    }
    copy.cast()
}

/// `shmex_allocate_unguarded`.
#[no_mangle]
pub unsafe extern "C" fn shmex_allocate_unguarded(payload: *mut Shmex) -> ShmexLibResult {
    crate::no_unwind(
        || {
            // SAFETY: a non-NULL payload points to a Shmex, by the header's contract.
            let Some(payload) = (unsafe { payload.as_mut() }) else {
                return ShmexLibResult::invalid();
            };
            let capacity = u64::from(payload.capacity);
            // SAFETY: the name is NULL or a C string.
            let created = match unsafe { name_at(payload.name) } {
                Some(name) => Segment::create(&name, capacity).map(drop),
                None => Segment::create_unique(capacity).and_then(|(name, _segment)| {
                    let copy = malloc_c_string(name.as_bytes());
                    if copy.is_null() {
                        shmex::unlink(&name);
                        return Err(Error::Os(Errno::ENOMEM, Syscall::ShmOpen));
                    }
                    payload.name = copy;
                    Ok(())
                }),
            };
            ShmexLibResult::of(created)
        },
        ShmexLibResult::invalid,
    )
}

/// `shmex_open_and_mmap`.
#[no_mangle]
pub unsafe extern "C" fn shmex_open_and_mmap(payload: *mut Shmex) -> ShmexLibResult {
    crate::no_unwind(
        || {
            // SAFETY: a non-NULL payload points to a Shmex.
            let (payload, name) = match unsafe { unmapped(payload) } {
                Ok(unmapped) => unmapped,
                Err(refused) => return refused,
            };
            let claim = Claim {
                size: u64::from(payload.size),
                capacity: u64::from(payload.capacity),
            };
            let mapped = Segment::open(&name).and_then(|segment| {
                claim.check(&segment)?;
                match NonZeroUsize::new(payload.capacity as usize) {
                    None => Ok(ptr::null_mut()),
                    Some(len) => {
                        let base = segment.into_mapping(claim.capacity)?;
                        lock_mappings().insert(base.as_ptr() as usize, len);
                        Ok(base.as_ptr().cast::<c_void>())
                    }
                }
            });
            match mapped {
                Ok(memory) => {
                    payload.mapped_memory = memory;
                    ShmexLibResult::Ok
                }
                Err(error) => ShmexLibResult::failed(error),
            }
        },
        ShmexLibResult::invalid,
    )
}

/// `shmex_unmap`.
#[no_mangle]
pub unsafe extern "C" fn shmex_unmap(payload: *mut Shmex) {
    crate::no_unwind(
        || {
            // SAFETY: a non-NULL payload points to a Shmex.
            let Some(payload) = (unsafe { payload.as_mut() }) else {
                return;
            };
            let memory = std::mem::replace(&mut payload.mapped_memory, not_mapped());
            let ours = lock_mappings().remove(&(memory as usize));
            if let (Some(base), Some(len)) = (NonNull::new(memory.cast::<u8>()), ours) {
                // SAFETY: `base` and `len` are a mapping `shmex_open_and_mmap` made,
                // removed from the table just now so it is released once. C code
                // must not use it after unmapping, by the header's contract.
                unsafe { shmex::unmap(base, len) };
            }
        },
        || (),
    )
}

/// `shmex_set_capacity`.
#[no_mangle]
pub unsafe extern "C" fn shmex_set_capacity(
    payload: *mut Shmex,
    capacity: usize,
) -> ShmexLibResult {
    crate::no_unwind(
        || {
            // SAFETY: a non-NULL payload points to a Shmex.
            let (payload, name) = match unsafe { unmapped(payload) } {
                Ok(unmapped) => unmapped,
                Err(refused) => return refused,
            };
            let Ok(capacity) = u32::try_from(capacity) else {
                return ShmexLibResult::failed(Error::Os(Errno::EFBIG, Syscall::Ftruncate));
            };
            let resized =
                Segment::open(&name).and_then(|mut segment| segment.resize(u64::from(capacity)));
            if resized.is_ok() {
                payload.capacity = capacity;
                payload.size = payload.size.min(capacity);
            }
            ShmexLibResult::of(resized)
        },
        ShmexLibResult::invalid,
    )
}

/// `shmex_unlink`.
#[no_mangle]
pub unsafe extern "C" fn shmex_unlink(payload: *mut Shmex) -> ShmexLibResult {
    crate::no_unwind(
        || {
            // SAFETY: a non-NULL payload points to a Shmex whose name is NULL or a
            // C string.
            match unsafe { payload.as_ref() }.and_then(|payload| unsafe { name_at(payload.name) }) {
                Some(name) => {
                    shmex::unlink(&name);
                    ShmexLibResult::Ok
                }
                None => ShmexLibResult::invalid(),
            }
        },
        ShmexLibResult::invalid,
    )
}

/// `shmex_shm_unlink`.
#[no_mangle]
pub unsafe extern "C" fn shmex_shm_unlink(name: *mut c_char) {
    crate::no_unwind(
        || {
            // SAFETY: the name is NULL or a C string.
            if let Some(name) = unsafe { name_at(name) } {
                shmex::unlink(&name);
            }
        },
        || (),
    )
}

/// `shmex_generate_shm_name`.
#[no_mangle]
pub unsafe extern "C" fn shmex_generate_shm_name(name: *mut c_char, _attempt: c_int) {
    crate::no_unwind(
        || {
            if name.is_null() {
                return;
            }
            let generated = ShmName::generate();
            let bytes = generated.as_bytes();
            // SAFETY: the buffer holds SHMEX_SHM_NAME_LEN (32) bytes, by the header's
            // contract; generated names are 31 bytes.
            unsafe {
                ptr::copy_nonoverlapping(bytes.as_ptr(), name.cast::<u8>(), bytes.len());
                name.add(bytes.len()).write(0);
            }
        },
        || (),
    )
}

/// The struct and its name, if it is one that is not mapped: what mapping
/// and resizing need.
///
/// # Safety
///
/// `payload` is NULL or points to a Shmex whose name is NULL or a C string.
unsafe fn unmapped<'p>(payload: *mut Shmex) -> Result<(&'p mut Shmex, ShmName), ShmexLibResult> {
    // SAFETY: forwarded to the caller.
    let payload = unsafe { payload.as_mut() }.ok_or_else(ShmexLibResult::invalid)?;
    if payload.mapped_memory != not_mapped() {
        Errno::EBUSY.set();
        return Err(ShmexLibResult::ShmMapped);
    }
    // SAFETY: forwarded to the caller.
    let name = unsafe { name_at(payload.name) }.ok_or_else(ShmexLibResult::invalid)?;
    Ok((payload, name))
}

fn lock_mappings() -> std::sync::MutexGuard<'static, BTreeMap<usize, NonZeroUsize>> {
    MAPPINGS.lock().unwrap_or_else(PoisonError::into_inner)
}
