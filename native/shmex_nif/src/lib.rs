//! The NIF library behind `Shmex.Native`: entry points only, the work is done
//! by the `shmex` crate (see `calls.rs`).
//!
//! Each operation is one NIF. It starts on a normal scheduler and moves
//! itself (`enif_schedule_nif`) to a dirty CPU scheduler when its work is
//! estimated at more than a millisecond; long copies go on there in steps
//! (see `calls.rs`).

mod calls;

use calls::{Outcome, Run, Scheduler};
use rustler::sys::{ErlNifEnv, ErlNifTerm};
use rustler::{Env, NifResult, Term};

/// Declares the operations that copy or free data: each a NIF on a normal
/// scheduler, and the same call continued on a dirty CPU scheduler, where
/// the NIF moves itself when its work is too long (not a function of the
/// module: the VM runs it in the NIF's place). Both run `calls::$name`.
macro_rules! operations {
    ($($name:ident($($arg:ident),+);)+) => {$(
        #[rustler::nif]
        fn $name<'a>(env: Env<'a>, $($arg: Term<'a>),+) -> Run {
            fn on_dirty<'a>(env: Env<'a>, args: &[Term<'a>]) -> Outcome<'a> {
                match *args {
                    [$($arg),+] => calls::$name(env, Scheduler::Dirty, $($arg),+),
                    _ => Outcome::Reply(Err(rustler::Error::BadArg)),
                }
            }

            unsafe extern "C" fn dirty(
                env: *mut ErlNifEnv,
                argc: i32,
                argv: *const ErlNifTerm,
            ) -> ErlNifTerm {
                // SAFETY: the VM calls this as the NIF continued, with its
                // arguments.
                unsafe { calls::continued(env, argc, argv, on_dirty) }
            }

            let outcome = calls::$name(env, Scheduler::Normal, $($arg),+);
            calls::run(env, outcome, (stringify!($name), dirty), &[$($arg),+])
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
