//! The functions of `shmex/shmex.h` that deal with the VM: terms, guards,
//! the environment.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::ptr;

use nix::errno::Errno;
use rustler::sys::{
    enif_alloc_resource, enif_make_badarg, enif_make_resource, enif_raise_exception,
    enif_release_resource, ErlNifEnv, ErlNifResourceType, ErlNifTerm,
};
use rustler::types::atom;
use rustler::{Encoder, Env, Term};
use shmex::internal::{self, struct_term, Creation, Identity, NAME_MAX};
use shmex::{ArgumentError, Claim, Error, ShmName, ShmexTerm, Syscall};
use shmex_c::no_unwind;
use shmex_c::primary::call;
use shmex_c::segments::{allocate, forget, release_common};
use shmex_c::strings::{malloc_c_string, name_at};
use shmex_c::types::{not_mapped, ShmexLibResult};

/// `Shmex` with a NIF's guard: a term.
type Shmex = shmex_c::types::Shmex<ErlNifTerm>;

/// `ShmexGuard`: the payload of a guard resource. The name is stored without
/// its leading slashes, so that any name a segment can have fits; the
/// identity (device and inode, 0 when unknown) tells the destructor whether
/// the name still leads to the guarded segment.
#[repr(C)]
pub struct ShmexGuard {
    name: [c_char; NAME_MAX + 1],
    identity: internal::Identity,
}

// The layout shmex/shmex.h declares; the C side asserts the same numbers
// (test/support/c_client/api_surface.c).
const _: () = {
    assert!(std::mem::offset_of!(ShmexGuard, identity) == 256);
    assert!(size_of::<ShmexGuard>() == 272);
    assert!(size_of::<ErlNifTerm>() == size_of::<u64>());
};

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
    no_unwind(
        || {
            // SAFETY: a non-NULL payload points to a Shmex.
            let Some(payload) = (unsafe { payload.as_mut() }) else {
                return;
            };
            // SAFETY: `env` is the caller's environment.
            let nil = unsafe { with_env(env, |env| atom::nil().to_term(env).as_c_arg()) };
            *payload = Shmex {
                name: ptr::null_mut(),
                size: 0,
                capacity,
                mapped_memory: not_mapped(),
                guard: nil,
            };
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
    no_unwind(
        || {
            // SAFETY: a non-NULL payload points to a Shmex.
            let Some(payload) = (unsafe { payload.as_mut() }) else {
                return 0;
            };
            // SAFETY: `env` is the caller's and `record` one of its terms.
            let decoded = unsafe {
                with_env(env, |env| {
                    let shm = ShmexTerm::decode(Term::new(env, record), "shm").ok()?;
                    let size = c_uint::try_from(shm.claim().size).ok()?;
                    let capacity = c_uint::try_from(shm.claim().capacity).ok()?;
                    // The name as the struct spells it.
                    let name = match shm.name() {
                        Some(_) => {
                            let spelled = rustler::Binary::from_term(shm.name_term()).ok()?;
                            Some(malloc_c_string(&spelled)).filter(|copy| !copy.is_null())?
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
    no_unwind(
        || {
            // SAFETY: a non-NULL payload points to a Shmex, by the header's
            // contract.
            if let Some(shmex) = unsafe { payload.as_mut() } {
                // SAFETY: its name, if any, came from `malloc` (this
                // library's, or the caller's by the same contract).
                unsafe { release_common(shmex.common()) };
            }
        },
        || (),
    )
}

/// `shmex_make_term`.
#[no_mangle]
pub unsafe extern "C" fn shmex_make_term(env: *mut ErlNifEnv, payload: *mut Shmex) -> ErlNifTerm {
    no_unwind(
        || {
            // SAFETY: `env` is the caller's; a non-NULL payload points to a
            // Shmex whose name is NULL or a C string and whose guard is a term
            // of `env`.
            unsafe {
                with_env(env, |env| {
                    let Some(payload) = payload.as_ref() else {
                        return enif_make_badarg(env.as_c_arg());
                    };
                    let name = if payload.name.is_null() {
                        atom::nil().to_term(env)
                    } else {
                        let bytes = CStr::from_ptr(payload.name).to_bytes();
                        rustler::NewBinary::from_slice(env, bytes).into()
                    };
                    let claim = Claim {
                        size: u64::from(payload.size),
                        capacity: u64::from(payload.capacity),
                    };
                    struct_term(env, name, Term::new(env, payload.guard), claim).as_c_arg()
                })
            }
        },
        // SAFETY: `env` is the caller's.
        || unsafe { enif_make_badarg(env) },
    )
}

/// `shmex_make_error_term`.
#[no_mangle]
pub unsafe extern "C" fn shmex_make_error_term(env: *mut ErlNifEnv, result: c_int) -> ErlNifTerm {
    no_unwind(
        || {
            // Read first: anything below may change errno.
            let errno = Errno::last();
            let error = match ShmexLibResult::from_code(result) {
                Some(result) => result.error(errno).ok_or(match result {
                    ShmexLibResult::Ok => raised::ok_is_not_error(),
                    _ => raised::shm_is_mapped(),
                }),
                None => Err(raised::unknown()),
            };
            // SAFETY: `env` is the caller's environment.
            unsafe {
                with_env(env, |env| match error {
                    Ok(error) => (atom::error(), error).encode(env).as_c_arg(),
                    Err(reason) => {
                        enif_raise_exception(env.as_c_arg(), reason.to_term(env).as_c_arg())
                    }
                })
            }
        },
        // SAFETY: `env` is the caller's.
        || unsafe { enif_make_badarg(env) },
    )
}

/// `shmex_raise_bad_argument`: what `PARSE_SHMEX_ARG` returns for an
/// argument that is not a `%Shmex{}` struct: raises an `ArgumentError`
/// naming it.
#[no_mangle]
pub unsafe extern "C" fn shmex_raise_bad_argument(
    env: *mut ErlNifEnv,
    argument: *const c_char,
) -> ErlNifTerm {
    no_unwind(
        || {
            let argument = if argument.is_null() {
                "argument".into()
            } else {
                // SAFETY: a non-NULL argument is a C string (a macro's
                // stringified variable name).
                unsafe { CStr::from_ptr(argument) }.to_string_lossy()
            };
            let error = ArgumentError::new(format!("{argument} is not a %Shmex{{}} struct"));
            // SAFETY: `env` is the caller's environment.
            unsafe {
                with_env(env, |env| {
                    enif_raise_exception(env.as_c_arg(), error.encode(env).as_c_arg())
                })
            }
        },
        // SAFETY: `env` is the caller's.
        || unsafe { enif_make_badarg(env) },
    )
}

/// `shmex_allocate`: the segment is created and guarded at once (a C guard
/// counted with the VM's other guards of it); without a guard type, it is
/// created unguarded.
#[no_mangle]
pub unsafe extern "C" fn shmex_allocate(
    env: *mut ErlNifEnv,
    guard_type: *mut ErlNifResourceType,
    payload: *mut Shmex,
) -> ShmexLibResult {
    no_unwind(
        || {
            let how = if guard_type.is_null() {
                Creation::Unguarded
            } else {
                Creation::Guarded
            };
            // SAFETY: forwarded: the same contract.
            let (result, created) = unsafe { allocate(payload.cast(), how) };
            let Some((name, identity)) = created.filter(|_| how == Creation::Guarded) else {
                return result;
            };
            // SAFETY: the payload was allocated: it is a valid Shmex.
            let payload = unsafe { &mut *payload };
            // SAFETY: a resource type registered for guards, by contract.
            let attached =
                unsafe { attach_guard(env, guard_type, payload, &name, || Ok(identity)) };
            if !attached {
                forget(&name, identity, how);
                return ShmexLibResult::failed(Error::Os(Errno::ENOMEM, Syscall::ShmOpen));
            }
            result
        },
        ShmexLibResult::invalid,
    )
}

/// `shmex_add_guard`: does nothing without a guard type or a name, nor for a
/// name that leads to no segment (or to a FIFO, socket, device or link).
#[no_mangle]
pub unsafe extern "C" fn shmex_add_guard(
    env: *mut ErlNifEnv,
    guard_type: *mut ErlNifResourceType,
    payload: *mut Shmex,
) {
    no_unwind(
        || {
            // SAFETY: a non-NULL payload points to a Shmex whose name is NULL
            // or a C string.
            let Some(payload) = (unsafe { payload.as_mut() }) else {
                return;
            };
            // SAFETY: as above.
            let Some(name) = (unsafe { name_at(payload.name) }) else {
                return;
            };
            if guard_type.is_null() || internal::posix(&name).is_empty() {
                return; // a name no segment can have: nothing to guard
            }
            // SAFETY: a resource type registered for guards, by contract.
            unsafe { attach_guard(env, guard_type, payload, &name, || call::guard(&name)) };
        },
        || (),
    )
}

/// Makes `payload`'s guard a new resource of `guard_type` holding `name` and
/// the identity `guard` gives (the C guard it stands for); whether it could.
///
/// # Safety
///
/// `guard_type` is a resource type registered for guards (of this size,
/// with `shmex_guard_destructor`), `env` the caller's.
unsafe fn attach_guard(
    env: *mut ErlNifEnv,
    guard_type: *mut ErlNifResourceType,
    payload: &mut Shmex,
    name: &ShmName,
    guard: impl FnOnce() -> shmex::Result<Identity>,
) -> bool {
    let posix = internal::posix(name);
    let mut stored = [0 as c_char; NAME_MAX + 1];
    // Without the leading slash: 255 bytes at most, and a NUL.
    for (slot, &byte) in stored.iter_mut().zip(&posix[1..]) {
        *slot = byte as c_char;
    }
    // SAFETY: the caller's resource type; the fresh resource is filled
    // before it is made into a term or released (an empty name makes the
    // destructor do nothing), and released once, leaving a term its owner.
    unsafe {
        let resource =
            enif_alloc_resource(guard_type, size_of::<ShmexGuard>()).cast::<ShmexGuard>();
        if resource.is_null() {
            return false;
        }
        resource.write(ShmexGuard {
            name: [0; NAME_MAX + 1],
            identity: [0, 0],
        });
        let attached = match guard() {
            Ok(identity) => {
                resource.write(ShmexGuard {
                    name: stored,
                    identity,
                });
                payload.guard = enif_make_resource(env, resource.cast::<c_void>().cast_const());
                true
            }
            Err(_) => false,
        };
        enif_release_resource(resource.cast::<c_void>().cast_const());
        attached
    }
}

/// `shmex_guard_destructor`: unlinks the guarded segment, unless its name
/// leads to another segment by now.
#[no_mangle]
pub unsafe extern "C" fn shmex_guard_destructor(_env: *mut ErlNifEnv, resource: *mut c_void) {
    no_unwind(
        || {
            // SAFETY: the VM passes the payload of a resource of a type
            // registered with this destructor, which holds a ShmexGuard.
            let Some(guard) = (unsafe { resource.cast::<ShmexGuard>().as_ref() }) else {
                return;
            };
            let len = guard
                .name
                .iter()
                .position(|&byte| byte == 0)
                .unwrap_or(guard.name.len());
            let mut bytes = [0; NAME_MAX + 1];
            for (byte, &c) in bytes.iter_mut().zip(&guard.name[..len]) {
                *byte = c as u8;
            }
            if let Some(name) = ShmName::new(&bytes[..len]).filter(|_| len > 0) {
                call::unlink_if(&name, guard.identity);
            }
        },
        || (),
    )
}
