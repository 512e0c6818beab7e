//! The functions of `shmex/lib.h`: creating, mapping, resizing and unlinking
//! the segment a C `Shmex` names.

use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, c_void};
use std::ptr;
use std::sync::{Mutex, MutexGuard, PoisonError};

use nix::errno::Errno;
use nix::libc;
use shmex::internal::{self, Mapping};
use shmex::{Claim, Error, ShmName, Syscall};

use crate::no_unwind;
use crate::strings::{malloc_c_string, name_at};
use crate::types::{not_mapped, Shmex, ShmexLibResult};

/// The mappings this library handed to C, by address: `shmex_unmap` unmaps
/// exactly those, whatever the struct's capacity says by then.
static MAPPINGS: Mutex<BTreeMap<usize, Mapping>> = Mutex::new(BTreeMap::new());

/// `shmex_allocate_unguarded`: a segment the caller owns, which outlives
/// this process however it ends.
#[no_mangle]
pub unsafe extern "C" fn shmex_allocate_unguarded(payload: *mut Shmex) -> ShmexLibResult {
    // SAFETY: forwarded: the same contract.
    unsafe { allocate_unguarded(payload, true) }
}

/// `shmex_allocate_unguarded`, for a segment that is `kept` unguarded, or
/// about to be guarded (`shmex_allocate`): then it is removed if this
/// process dies before the guard is collected.
///
/// # Safety
///
/// As `shmex_allocate_unguarded`: `payload` is NULL or points to a `Shmex`
/// whose name is NULL or a C string.
pub unsafe fn allocate_unguarded(payload: *mut Shmex, kept: bool) -> ShmexLibResult {
    no_unwind(
        || {
            // SAFETY: a non-NULL payload points to a Shmex, by the header's contract.
            let Some(payload) = (unsafe { payload.as_mut() }) else {
                return ShmexLibResult::invalid();
            };
            // SAFETY: the name is NULL or a C string.
            let given = unsafe { name_at(payload.name) };
            let generated = given.is_none();
            let created = internal::create(given, u64::from(payload.capacity), kept);
            ShmexLibResult::of(created.and_then(|name| {
                if generated {
                    let copy = malloc_c_string(&name.to_posix());
                    if copy.is_null() {
                        internal::unlink(&name);
                        return Err(Error::Os(Errno::ENOMEM, Syscall::ShmOpen));
                    }
                    payload.name = copy;
                }
                Ok(())
            }))
        },
        ShmexLibResult::invalid,
    )
}

/// `shmex_open_and_mmap`.
#[no_mangle]
pub unsafe extern "C" fn shmex_open_and_mmap(payload: *mut Shmex) -> ShmexLibResult {
    no_unwind(
        || {
            // SAFETY: a non-NULL payload points to a Shmex whose name is NULL
            // or a C string.
            let (payload, name) = match unsafe { unmapped(payload) } {
                Ok(unmapped) => unmapped,
                Err(refused) => return refused,
            };
            let claim = Claim {
                size: u64::from(payload.size),
                capacity: u64::from(payload.capacity),
            };
            match internal::map(&name, claim) {
                Ok(mapping) => {
                    payload.mapped_memory = hand_out(mapping);
                    ShmexLibResult::Ok
                }
                Err(error) => {
                    // Code that ignores the result (unifex's payload code
                    // does) finds zeros there, not an address that crashes it.
                    payload.mapped_memory = Mapping::anonymous(claim.capacity)
                        .map_or(not_mapped(), |mapping| hand_out(Some(mapping)));
                    ShmexLibResult::failed(error)
                }
            }
        },
        ShmexLibResult::invalid,
    )
}

/// `shmex_unmap`.
#[no_mangle]
pub unsafe extern "C" fn shmex_unmap(payload: *mut Shmex) {
    no_unwind(
        || {
            // SAFETY: a non-NULL payload points to a Shmex.
            let Some(payload) = (unsafe { payload.as_mut() }) else {
                return;
            };
            let memory = std::mem::replace(&mut payload.mapped_memory, not_mapped());
            // Dropping it unmaps it; C must not use it any more, by the
            // header's contract.
            drop(lock_mappings().remove(&(memory as usize)));
        },
        || (),
    )
}

/// Releases what NIFs and C nodes release alike: frees the name and unmaps.
/// The guard is the caller's to release.
///
/// # Safety
///
/// The name is NULL or from `malloc`.
pub unsafe fn release_common(payload: &mut Shmex) {
    // SAFETY: forwarded to the caller.
    unsafe { libc::free(payload.name.cast::<c_void>()) };
    payload.name = ptr::null_mut();
    // SAFETY: a valid Shmex.
    unsafe { shmex_unmap(payload) };
}

/// `shmex_mapping_faulted`: whether pages of the struct's mapping were lost
/// (the segment shrank under it): since then it reads as zeros and writes to
/// it go nowhere.
#[no_mangle]
pub unsafe extern "C" fn shmex_mapping_faulted(payload: *const Shmex) -> c_int {
    no_unwind(
        || {
            // SAFETY: a non-NULL payload points to a Shmex.
            let Some(payload) = (unsafe { payload.as_ref() }) else {
                return 0;
            };
            let mappings = lock_mappings();
            let faulted = mappings
                .get(&(payload.mapped_memory as usize))
                .is_some_and(Mapping::faulted);
            c_int::from(faulted)
        },
        || 0,
    )
}

/// `shmex_set_capacity`.
#[no_mangle]
pub unsafe extern "C" fn shmex_set_capacity(
    payload: *mut Shmex,
    capacity: usize,
) -> ShmexLibResult {
    no_unwind(
        || {
            // SAFETY: a non-NULL payload points to a Shmex whose name is NULL
            // or a C string.
            let (payload, name) = match unsafe { unmapped(payload) } {
                Ok(unmapped) => unmapped,
                Err(refused) => return refused,
            };
            let Ok(capacity) = u32::try_from(capacity) else {
                return ShmexLibResult::failed(Error::Os(Errno::EFBIG, Syscall::Ftruncate));
            };
            let resized = internal::resize(&name, u64::from(capacity));
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
    no_unwind(
        || {
            // SAFETY: a non-NULL payload points to a Shmex whose name is NULL
            // or a C string.
            let name =
                unsafe { payload.as_ref() }.and_then(|payload| unsafe { name_at(payload.name) });
            match name {
                Some(name) => {
                    internal::unlink(&name);
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
    no_unwind(
        || {
            // SAFETY: the name is NULL or a C string.
            if let Some(name) = unsafe { name_at(name) } {
                internal::unlink(&name);
            }
        },
        || (),
    )
}

/// `shmex_generate_shm_name`.
#[no_mangle]
pub unsafe extern "C" fn shmex_generate_shm_name(name: *mut c_char, _attempt: c_int) {
    no_unwind(
        || {
            if name.is_null() {
                return;
            }
            let generated = ShmName::generate().to_posix();
            // SAFETY: the buffer holds SHMEX_SHM_NAME_LEN (32) bytes, by the
            // header's contract; generated names are 31 bytes.
            unsafe {
                ptr::copy_nonoverlapping(generated.as_ptr(), name.cast::<u8>(), generated.len());
                name.add(generated.len()).write(0);
            }
        },
        || (),
    )
}

/// Keeps `mapping` in the table and gives C its address; NULL for none (a
/// zero-capacity struct maps nothing).
fn hand_out(mapping: Option<Mapping>) -> *mut c_void {
    let Some(mapping) = mapping else {
        return ptr::null_mut();
    };
    let address = mapping.as_ptr();
    lock_mappings().insert(address as usize, mapping);
    address.cast()
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

fn lock_mappings() -> MutexGuard<'static, BTreeMap<usize, Mapping>> {
    MAPPINGS.lock().unwrap_or_else(PoisonError::into_inner)
}
