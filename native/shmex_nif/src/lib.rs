//! The NIF library behind `Shmex.Native`: entry points only, the work is done
//! by the `shmex` crate (see `calls.rs`).
//!
//! Each call that copies or frees data comes twice: on a normal scheduler,
//! where it answers `:reschedule` when its work is estimated at more than a
//! millisecond, and `_dirty`, on a dirty CPU scheduler, which `Shmex.Native`
//! calls then.

mod calls;

use calls::Scheduler;
use rustler::{Env, NifResult, Term};

/// Declares a NIF on a normal scheduler and its twin on a dirty CPU scheduler,
/// both running `calls::$name`.
macro_rules! copying_nif {
    ($name:ident, $dirty:ident, $($arg:ident),+) => {
        #[rustler::nif]
        fn $name<'a>(env: Env<'a>, $($arg: Term<'a>),+) -> NifResult<Term<'a>> {
            calls::$name(env, Scheduler::Normal, $($arg),+)
        }

        #[rustler::nif(schedule = "DirtyCpu")]
        fn $dirty<'a>(env: Env<'a>, $($arg: Term<'a>),+) -> NifResult<Term<'a>> {
            calls::$name(env, Scheduler::Dirty, $($arg),+)
        }
    };
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
fn stats(env: Env) -> Term {
    calls::stats(env)
}

copying_nif!(set_capacity, set_capacity_dirty, shm, capacity);
copying_nif!(read, read_dirty, shm, read_size);
copying_nif!(write, write_dirty, shm, data);
copying_nif!(split_at, split_at_dirty, shm, position);
copying_nif!(append, append_dirty, target, source);
copying_nif!(trim, trim_dirty, shm, bytes);

fn load(env: Env, _info: Term) -> bool {
    shmex::load(env)
}

rustler::init!("Elixir.Shmex.Native.Nif", load = load);
