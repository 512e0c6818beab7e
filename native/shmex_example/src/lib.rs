//! An example of a NIF library built on the `shmex` crate: it reads and
//! changes the data of `%Shmex{}` structs in place, and makes new ones.
//! Loaded by the ExUnit suite as `ShmexExample.Nif`.

use rustler::{Env, NifResult, Term};
use shmex::{guarded_struct, Claim, Handle, Shm, ShmexTerm};

/// The sum of the bytes of a struct's data, read in place.
#[rustler::nif(schedule = "DirtyCpu")]
fn checksum(shm: Handle) -> NifResult<u64> {
    // SAFETY: this NIF's callers hand it segments nothing else writes to
    // while it runs (a pipeline stage owns its buffer).
    let sum = unsafe { shm.data(|data| data.iter().map(|&byte| u64::from(byte)).sum()) };
    Ok(sum?)
}

/// Reverses a struct's data in place; the struct itself is unchanged.
#[rustler::nif(schedule = "DirtyCpu")]
fn reverse(shm: Handle) -> NifResult<rustler::Atom> {
    // SAFETY: as for `checksum`.
    unsafe { shm.data_mut(|data| data.reverse()) }?;
    Ok(rustler::types::atom::ok())
}

/// Appends a byte to a struct's data; the struct with its new size and
/// capacity, its other fields (and extra keys) as they were.
#[rustler::nif(schedule = "DirtyCpu")]
fn push(shm: Handle, byte: u8) -> NifResult<Handle> {
    let mut shm = shm; // (a NIF's arguments cannot be `mut` patterns)
    let mut data = shm.read(shm.claim().size)?;
    data.push(byte);
    shm.write(&data)?;
    Ok(shm)
}

/// A new guarded segment holding `len` copies of `byte`.
#[rustler::nif(schedule = "DirtyCpu")]
fn filled(env: Env, len: u64, byte: u8) -> NifResult<Term> {
    let guard = Shm::allocate(None, Claim::full(len))?;
    let shm = Shm::of_guard(&guard, Claim::full(len));
    // SAFETY: the segment was made just now; no one else knows its name yet.
    unsafe { shm.data_mut(|data| data.fill(byte)) }?;
    Ok(guarded_struct(env, guard, Claim::full(len)))
}

/// Replaces a struct's data with as many copies of `byte`, copied in (not
/// in place); the struct updated.
#[rustler::nif(schedule = "DirtyCpu")]
fn fill(shm: Handle, byte: u8) -> NifResult<Handle> {
    let mut shm = shm;
    let len = usize::try_from(shm.claim().size).map_err(|_| rustler::Error::BadArg)?;
    shm.write(&vec![byte; len])?;
    Ok(shm)
}

/// Reads a struct's first byte with `read` from inside `data` (a call
/// nested in the turn `data` holds), `pause_ms` after `data` began: the
/// byte.
#[rustler::nif(schedule = "DirtyCpu")]
fn nested_read(shm: Handle, pause_ms: u64) -> NifResult<u8> {
    // SAFETY: as for `checksum`.
    let read = unsafe {
        shm.data(|_| {
            std::thread::sleep(std::time::Duration::from_millis(pause_ms));
            shm.read(1)
        })
    };
    Ok(read??.first().copied().unwrap_or(0))
}

/// Writes `byte` as a struct's data with `write` from inside `data`: a
/// change nested in a shared turn, which is refused.
#[rustler::nif(schedule = "DirtyCpu")]
fn nested_write(shm: Handle, byte: u8) -> NifResult<rustler::Atom> {
    // SAFETY: as for `checksum`.
    let shm = shm.shm();
    unsafe { shm.data(|_| shm.write(&[byte])) }??;
    Ok(rustler::types::atom::ok())
}

/// A guard of this library for a struct that has none (made by other code,
/// or a copy whose guard was stripped): `{:ok, struct}` with the guard in
/// it, or `{:error, :already_guarded}` if a guard in the VM holds it.
#[rustler::nif]
fn guard<'a>(env: Env<'a>, shm: Term<'a>) -> NifResult<(rustler::Atom, Term<'a>)> {
    let term = ShmexTerm::decode(shm, "shm")?;
    let guard = term.shm("shm")?.add_guard()?;
    Ok((rustler::types::atom::ok(), term.with_guard(env, guard)))
}

rustler::init!("Elixir.ShmexExample.Nif");
