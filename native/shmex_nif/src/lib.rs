//! The NIF library behind `Shmex.Native`: entry points only, the work is done
//! by the `shmex` crate (see `calls.rs`).
//!
//! Each operation is one NIF, declared beside its code in `calls.rs` (by
//! `operation!`). It starts on a normal scheduler and moves itself
//! (`enif_schedule_nif`) to a dirty CPU scheduler when its work is
//! estimated at more than a millisecond; long copies go on there in steps.

mod calls;

use rustler::{Env, NifResult, Term};

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

/// The VM's primary copy of the crate is this library's: C libraries and
/// Rust NIFs in the VM find this table and work through it (see the
/// `shmex` crate's `vm` module).
#[no_mangle]
#[allow(non_upper_case_globals)] // the name other copies look for
pub static shmex_vm_api_v1: shmex::internal::Api = shmex::internal::TABLE;

/// Before the first call: what VMs that died left in `/dev/shm` goes.
fn load(_env: Env, _info: Term) -> bool {
    shmex::internal::start();
    true
}

rustler::init!("Elixir.Shmex.Native.Nif", load = load);
