//! The functions of `shmex/lib.h`: creating, mapping, resizing and unlinking
//! the segment a C `Shmex` names, through the VM's primary copy of the crate
//! once there is one ([`crate::primary`]).

use std::collections::btree_map::{BTreeMap, Entry};
use std::ffi::{c_char, c_int, c_void};
use std::ptr;
use std::sync::{Mutex, MutexGuard, PoisonError};

use nix::errno::Errno;
use nix::libc;
use shmex::internal::{self, Creation, Identity, Mapping};
use shmex::{Claim, Error, ShmName, Syscall};

use crate::no_unwind;
use crate::primary::{call, Held};
use crate::strings::{malloc_c_string, name_at};
use crate::types::{not_mapped, Shmex, ShmexLibResult};

/// The mappings this library handed to C, by address: `shmex_unmap` lets go
/// of exactly those, whatever the struct's capacity says by then. One
/// segment's kept mapping may be handed out several times at once.
static MAPPINGS: Mutex<BTreeMap<usize, Vec<Handle>>> = Mutex::new(BTreeMap::new());

/// What keeps a mapping handed to C mapped.
enum Handle {
    /// A segment's mapping, kept by the copy of the crate that made it.
    Segment(Held),
    /// Zeroed memory, handed out when mapping failed; unmapped when dropped.
    Zeros(#[allow(dead_code)] Mapping),
}

impl Handle {
    fn faulted(&self) -> bool {
        match self {
            Handle::Segment(held) => held.faulted(),
            Handle::Zeros(_) => false,
        }
    }
}

/// `shmex_allocate_unguarded`: a segment the caller owns, which outlives
/// this process however it ends.
#[no_mangle]
pub unsafe extern "C" fn shmex_allocate_unguarded(payload: *mut Shmex) -> ShmexLibResult {
    // SAFETY: forwarded: the same contract.
    unsafe { allocate(payload, Creation::Unguarded) }.0
}

/// Creates the segment `payload` names (a fresh one for none, its name then
/// stored in `payload`) for `shmex_allocate_unguarded`, or guarded by a C
/// guard for `shmex_allocate`; the result, and the segment's name and
/// identity.
///
/// # Safety
///
/// As `shmex_allocate_unguarded`: `payload` is NULL or points to a `Shmex`
/// whose name is NULL or a C string.
pub unsafe fn allocate(
    payload: *mut Shmex,
    how: Creation,
) -> (ShmexLibResult, Option<(ShmName, Identity)>) {
    no_unwind(
        || {
            // SAFETY: a non-NULL payload points to a Shmex, by the header's contract.
            let Some(payload) = (unsafe { payload.as_mut() }) else {
                return (ShmexLibResult::invalid(), None);
            };
            // SAFETY: the name is NULL or a C string.
            let given = unsafe { name_at(payload.name) };
            let created = call::create(given.as_ref(), u64::from(payload.capacity), how).and_then(
                |(name, identity)| {
                    if given.is_none() {
                        let copy = malloc_c_string(&internal::posix(&name));
                        if copy.is_null() {
                            forget(&name, identity, how);
                            return Err(Error::Os(Errno::ENOMEM, Syscall::ShmOpen));
                        }
                        payload.name = copy;
                    }
                    Ok((name, identity))
                },
            );
            match created {
                Ok(created) => (ShmexLibResult::Ok, Some(created)),
                Err(error) => (ShmexLibResult::failed(error), None),
            }
        },
        || (ShmexLibResult::invalid(), None),
    )
}

/// Removes a segment just created that cannot be handed out after all.
pub fn forget(name: &ShmName, identity: Identity, how: Creation) {
    match how {
        Creation::Guarded => call::unlink_if(name, identity),
        Creation::Unguarded => call::unlink(name),
    }
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
            match call::map(&name, claim) {
                Ok(Some((address, held))) => {
                    payload.mapped_memory = hand_out(address, Handle::Segment(held));
                    ShmexLibResult::Ok
                }
                Ok(None) => {
                    payload.mapped_memory = ptr::null_mut();
                    ShmexLibResult::Ok
                }
                Err(error) => {
                    // Code that ignores the result (unifex's payload code
                    // does) finds zeros there, not an address that crashes it.
                    payload.mapped_memory = Mapping::anonymous(claim.capacity)
                        .map_or(not_mapped(), |zeros| {
                            hand_out(zeros.as_ptr(), Handle::Zeros(zeros))
                        });
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
            // Dropping its handle lets go of it; C must not use it any more,
            // by the header's contract.
            let handle = match lock_mappings().entry(memory as usize) {
                Entry::Occupied(mut handles) => {
                    let handle = handles.get_mut().pop();
                    if handles.get().is_empty() {
                        handles.remove();
                    }
                    handle
                }
                Entry::Vacant(_) => None,
            };
            drop(handle);
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
                .and_then(|handles| handles.last())
                .is_some_and(Handle::faulted);
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
            let resized = call::resize(&name, u64::from(capacity));
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
                    call::unlink(&name);
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
                call::unlink(&name);
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

/// Keeps the handle of the mapping at `address` in the table and gives C the
/// address.
fn hand_out(address: *mut u8, handle: Handle) -> *mut c_void {
    lock_mappings()
        .entry(address as usize)
        .or_default()
        .push(handle);
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

fn lock_mappings() -> MutexGuard<'static, BTreeMap<usize, Vec<Handle>>> {
    MAPPINGS.lock().unwrap_or_else(PoisonError::into_inner)
}
