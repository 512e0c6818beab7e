//! The NIF library behind `Shmex.Native`: entry points only, the work is done
//! by the `shmex` crate (see `calls.rs`).

mod calls;

use calls::Scheduler;
use rustler::{Env, NifResult, Term};

/// Declares the calls that copy or free data, each twice: on a normal
/// scheduler, where it answers `:reschedule` when its work is estimated at
/// more than a millisecond, and as its `_dirty` twin on a dirty CPU
/// scheduler, which `Shmex.Native` calls then. Both run `calls::$name`.
macro_rules! scheduled_nifs {
    ($($name:ident, $dirty:ident ($($arg:ident),+);)+) => {$(
        #[rustler::nif]
        fn $name<'a>(env: Env<'a>, $($arg: Term<'a>),+) -> NifResult<Term<'a>> {
            calls::$name(env, Scheduler::Normal, $($arg),+)
        }

        #[rustler::nif(schedule = "DirtyCpu")]
        fn $dirty<'a>(env: Env<'a>, $($arg: Term<'a>),+) -> NifResult<Term<'a>> {
            calls::$name(env, Scheduler::Dirty, $($arg),+)
        }
    )+};
}

scheduled_nifs! {
    set_capacity, set_capacity_dirty(shm, capacity);
    read, read_dirty(shm, read_size);
    write, write_dirty(shm, data);
    split_at, split_at_dirty(shm, position);
    append, append_dirty(target, source);
    trim, trim_dirty(shm, bytes);
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

/// The VM's primary copy of the crate is this library's: C libraries in the
/// VM find this table and work through it (see `shmex_c::primary`).
#[no_mangle]
#[allow(non_upper_case_globals)] // the name C looks for
pub static shmex_vm_api_v1: shmex_c::primary::Api = shmex_c::primary::TABLE;

/// Before the first call: what VMs that died left in `/dev/shm` goes.
fn load(_env: Env, _info: Term) -> bool {
    shmex::internal::start();
    true
}

rustler::init!("Elixir.Shmex.Native.Nif", load = load);
