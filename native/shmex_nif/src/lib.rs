//! The NIF library behind `Shmex.Native`: entry points only, the work is done
//! by the `shmex` crate (see `calls.rs`).
//!
//! Each operation is one NIF. It starts on a normal scheduler and moves
//! itself (`enif_schedule_nif`) to a dirty CPU scheduler when its work is
//! estimated at more than a millisecond; long copies go on there in steps
//! (see `calls.rs`).

mod calls;

use calls::{Outcome, Scheduler};
use rustler::codegen_runtime::{c_char, c_int, c_uint};
use rustler::sys::{ErlNifEnv, ErlNifTerm};
use rustler::{Env, NifResult, Term};

/// Declares the operations that copy or free data: each a NIF on a normal
/// scheduler, and the same call continued on a dirty CPU scheduler, where
/// the NIF moves itself when its work is too long (not a function of the
/// module: the VM runs it in the NIF's place). Both run `calls::$name`.
///
/// The NIF's C entry point is written here rather than by
/// `#[rustler::nif]`, whose wrapper allocates a vector of the arguments on
/// every call: these calls are made millions of times for a few bytes.
macro_rules! operations {
    ($($name:ident($($arg:ident),+);)+) => {$(
        mod $name {
            use super::*;

            fn call<'a>(env: Env<'a>, on: Scheduler, args: &[ErlNifTerm]) -> Outcome<'a> {
                match *args {
                    // SAFETY: the VM's arguments for this call, in `env`.
                    [$($arg),+] => calls::$name(env, on, $(unsafe { Term::new(env, $arg) }),+),
                    _ => Outcome::Reply(Err(rustler::Error::BadArg)),
                }
            }

            unsafe extern "C" fn normal(
                env: *mut ErlNifEnv,
                argc: c_int,
                argv: *const ErlNifTerm,
            ) -> ErlNifTerm {
                // SAFETY: the VM calls this as the NIF, with its arguments.
                unsafe { calls::entry(env, argc, argv, Scheduler::Normal, call, (stringify!($name), dirty)) }
            }

            unsafe extern "C" fn dirty(
                env: *mut ErlNifEnv,
                argc: c_int,
                argv: *const ErlNifTerm,
            ) -> ErlNifTerm {
                // SAFETY: the VM calls this as the NIF continued, with its
                // arguments.
                unsafe { calls::entry(env, argc, argv, Scheduler::Dirty, call, (stringify!($name), dirty)) }
            }

            rustler::codegen_runtime::inventory::submit!(rustler::Nif {
                name: concat!(stringify!($name), "\0").as_ptr() as *const c_char,
                arity: [$(stringify!($arg)),+].len() as c_uint,
                flags: rustler::SchedulerFlags::Normal as c_uint,
                raw_func: normal,
            });
        }
    )+};
}

operations! {
    set_capacity(shm, capacity);
    read(shm, read_size);
    write(shm, data);
    split_at(shm, position);
    append(target, source);
    trim(shm, bytes);
}

#[rustler::nif]
fn allocate<'a>(env: Env<'a>, shm: Term<'a>) -> NifResult<Term<'a>> {
    calls::allocate(env, shm)
}

#[rustler::nif]
fn add_guard<'a>(env: Env<'a>, shm: Term<'a>) -> NifResult<Term<'a>> {
    calls::add_guard(env, shm)
}

#[rustler::nif]
fn ensure_not_gc<'a>(env: Env<'a>, shm: Term<'a>) -> NifResult<Term<'a>> {
    calls::ensure_not_gc(env, shm)
}

/// What the library holds, for tests and diagnostics.
#[rustler::nif]
fn stats() -> calls::Stats {
    calls::stats()
}

rustler::init!("Elixir.Shmex.Native.Nif");
