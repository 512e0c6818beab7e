//! The functions that deal with the VM: terms, guards, the environment.

use std::ffi::{c_char, c_int, c_uint, c_void};
use std::ptr;

use nix::errno::Errno;
use rustler::sys::{
    enif_alloc_resource, enif_make_badarg, enif_make_resource, enif_raise_exception,
    enif_release_resource, ErlNifEnv, ErlNifResourceType, ErlNifTerm,
};
use rustler::{Encoder, Env, Term};
use shmex::{atoms, struct_term, Claim, Error, ShmName, ShmexTerm, Syscall};

use crate::memory::{malloc_c_string, name_at, shmex_allocate_unguarded, shmex_unmap};
use crate::types::{not_mapped, Shmex, ShmexGuard, ShmexLibResult, NAME_MAX};

/// What `shmex_make_error_term` raises for results that are no errors.
mod raised {
    rustler::atoms! { ok_is_not_error, shm_is_mapped, unknown }
}

/// Runs `f` with the environment C passed.
///
/// # Safety
///
/// `env` is the environment of the NIF call (or process-independent
/// environment) the caller runs in.
unsafe fn with_env<R>(env: *mut ErlNifEnv, f: impl for<'a> FnOnce(Env<'a>) -> R) -> R {
    let lifetime = ();
    // SAFETY: forwarded to the caller; the `Env` lives only during `f`.
    f(unsafe { Env::new(&lifetime, env) })
}

/// `shmex_init`.
#[no_mangle]
pub unsafe extern "C" fn shmex_init(env: *mut ErlNifEnv, payload: *mut Shmex, capacity: c_uint) {
    crate::no_unwind(
        || {
            // SAFETY: a non-NULL payload points to a Shmex; `env` is the caller's.
            let Some(payload) = (unsafe { payload.as_mut() }) else {
                return;
            };
            payload.name = ptr::null_mut();
            payload.size = 0;
            payload.capacity = capacity;
            payload.mapped_memory = not_mapped();
            // SAFETY: `env` is the caller's environment.
            payload.guard = unsafe { with_env(env, |env| atoms::nil().to_term(env).as_c_arg()) };
        },
        || (),
    )
}

/// `shmex_get_from_term`.
#[no_mangle]
pub unsafe extern "C" fn shmex_get_from_term(
    env: *mut ErlNifEnv,
    record: ErlNifTerm,
    payload: *mut Shmex,
) -> c_int {
    crate::no_unwind(
        || {
            // SAFETY: a non-NULL payload points to a Shmex.
            let Some(payload) = (unsafe { payload.as_mut() }) else {
                return 0;
            };
            // SAFETY: `env` is the caller's and `record` one of its terms.
            let decoded = unsafe {
                with_env(env, |env| {
                    let shm = ShmexTerm::decode(Term::new(env, record), "shm").ok()?;
                    let size = c_uint::try_from(shm.claim.size).ok()?;
                    let capacity = c_uint::try_from(shm.claim.capacity).ok()?;
                    let name = match &shm.name {
                        Some(name) => {
                            Some(malloc_c_string(name.as_bytes())).filter(|name| !name.is_null())?
                        }
                        None => ptr::null_mut(),
                    };
                    Some((name, size, capacity, shm.guard_term().as_c_arg()))
                })
            };
            let Some((name, size, capacity, guard)) = decoded else {
                return 0;
            };
            *payload = Shmex {
                name,
                size,
                capacity,
                mapped_memory: not_mapped(),
                guard,
            };
            1
        },
        || 0,
    )
}

/// `shmex_release`.
#[no_mangle]
pub unsafe extern "C" fn shmex_release(payload: *mut Shmex) {
    crate::no_unwind(
        || {
            // SAFETY: a non-NULL payload points to a Shmex whose name, if any, came
            // from `malloc` (this library's, or the caller's by the same contract).
            unsafe {
                let Some(shmex) = payload.as_mut() else {
                    return;
                };
                nix::libc::free(shmex.name.cast::<c_void>());
                shmex.name = ptr::null_mut();
                shmex_unmap(payload);
            }
        },
        || (),
    )
}

/// `shmex_make_term`.
#[no_mangle]
pub unsafe extern "C" fn shmex_make_term(env: *mut ErlNifEnv, payload: *mut Shmex) -> ErlNifTerm {
    crate::no_unwind(
        || {
            // SAFETY: `env` is the caller's; a non-NULL payload points to a Shmex
            // whose name is NULL or a C string and whose guard is a term of `env`.
            unsafe {
                with_env(env, |env| {
                    let made = payload
                        .as_ref()
                        .ok_or(rustler::Error::BadArg)
                        .and_then(|payload| {
                            let name = match name_at(payload.name) {
                                Some(name) => {
                                    rustler::NewBinary::from_slice(env, name.as_bytes()).into()
                                }
                                None => atoms::nil().to_term(env),
                            };
                            let claim = Claim {
                                size: u64::from(payload.size),
                                capacity: u64::from(payload.capacity),
                            };
                            struct_term(env, name, Term::new(env, payload.guard), claim)
                        });
                    made.map_or_else(|_| enif_make_badarg(env.as_c_arg()), |term| term.as_c_arg())
                })
            }
        },
        || unsafe { enif_make_badarg(env) },
    )
}

/// `shmex_make_error_term`.
#[no_mangle]
pub unsafe extern "C" fn shmex_make_error_term(env: *mut ErlNifEnv, result: c_int) -> ErlNifTerm {
    crate::no_unwind(
        || {
            // Read first: anything below may change errno.
            let errno = Errno::last();
            let error = match result {
                1 => Ok(Error::Os(errno, Syscall::ShmOpen)),
                2 => Ok(Error::Os(errno, Syscall::Ftruncate)),
                3 => Ok(Error::Os(errno, Syscall::Mmap)),
                5 => Ok(Error::InvalidPayload),
                0 => Err(raised::ok_is_not_error()),
                4 => Err(raised::shm_is_mapped()),
                _ => Err(raised::unknown()),
            };
            // SAFETY: `env` is the caller's environment.
            unsafe {
                with_env(env, |env| match error {
                    Ok(error) => (atoms::error(), error).encode(env).as_c_arg(),
                    Err(reason) => {
                        enif_raise_exception(env.as_c_arg(), reason.to_term(env).as_c_arg())
                    }
                })
            }
        },
        || unsafe { enif_make_badarg(env) },
    )
}

/// `shmex_allocate`.
#[no_mangle]
pub unsafe extern "C" fn shmex_allocate(
    env: *mut ErlNifEnv,
    guard_type: *mut ErlNifResourceType,
    payload: *mut Shmex,
) -> ShmexLibResult {
    crate::no_unwind(
        || {
            // SAFETY: forwarded: the same contract.
            let result = unsafe { shmex_allocate_unguarded(payload) };
            if result == ShmexLibResult::Ok {
                // SAFETY: forwarded: the same contract.
                unsafe { shmex_add_guard(env, guard_type, payload) };
            }
            result
        },
        ShmexLibResult::invalid,
    )
}

/// `shmex_add_guard`: does nothing without a guard type or a name, or for a
/// name longer than any segment's (it could not be stored whole).
#[no_mangle]
pub unsafe extern "C" fn shmex_add_guard(
    env: *mut ErlNifEnv,
    guard_type: *mut ErlNifResourceType,
    payload: *mut Shmex,
) {
    crate::no_unwind(
        || {
            // SAFETY: a non-NULL payload points to a Shmex whose name is NULL or a
            // C string.
            let Some(payload) = (unsafe { payload.as_mut() }) else {
                return;
            };
            // SAFETY: as above.
            let Some(name) = (unsafe { name_at(payload.name) }) else {
                return;
            };
            if guard_type.is_null() || name.as_bytes().len() > NAME_MAX {
                return;
            }
            // SAFETY: `guard_type` is a resource type the caller registered for
            // ShmexGuard-sized payloads; the fresh resource is filled before it is
            // made into a term, and released once, leaving the term its owner.
            unsafe {
                let guard =
                    enif_alloc_resource(guard_type, size_of::<ShmexGuard>()).cast::<ShmexGuard>();
                if guard.is_null() {
                    return;
                }
                let mut stored = [0 as c_char; NAME_MAX + 1];
                for (slot, &byte) in stored.iter_mut().zip(name.as_bytes()) {
                    *slot = byte as c_char;
                }
                guard.write(ShmexGuard { name: stored });
                payload.guard = enif_make_resource(env, guard.cast::<c_void>().cast_const());
                enif_release_resource(guard.cast::<c_void>().cast_const());
            }
        },
        || (),
    )
}

/// `shmex_guard_destructor`.
#[no_mangle]
pub unsafe extern "C" fn shmex_guard_destructor(_env: *mut ErlNifEnv, resource: *mut c_void) {
    crate::no_unwind(
        || {
            // SAFETY: the VM passes the payload of a resource of a type registered
            // with this destructor, which holds a ShmexGuard.
            let Some(guard) = (unsafe { resource.cast::<ShmexGuard>().as_ref() }) else {
                return;
            };
            let len = guard
                .name
                .iter()
                .position(|&byte| byte == 0)
                .unwrap_or(guard.name.len());
            let bytes: Vec<u8> = guard.name[..len].iter().map(|&byte| byte as u8).collect();
            if let Some(name) = ShmName::new(&bytes).filter(|_| len > 0) {
                shmex::unlink(&name);
            }
        },
        || (),
    )
}
