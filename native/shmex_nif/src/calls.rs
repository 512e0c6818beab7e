//! Each NIF: decode the arguments, run the `shmex` operation, encode the result.
//!
//! Malformed arguments raise `ArgumentError`; everything else comes back as
//! `{:ok, _}` or `{:error, reason}`.

use rustler::{Binary, Env, NewBinary, NifResult, Term};
mod atoms {
    rustler::atoms! { error, kept_open, ready, pending_removal }
}

use shmex::{decode_size, guarded_struct, ok, ArgumentError, Shm, ShmexTerm};

pub fn allocate<'a>(env: Env<'a>, shm: Term<'a>) -> NifResult<Term<'a>> {
    let shm = ShmexTerm::decode(shm, "shm")?;
    let guard = Shm::allocate(shm.name.clone(), shm.claim)?;
    Ok(ok(env, guarded_struct(env, guard, shm.claim)))
}

pub fn add_guard<'a>(env: Env<'a>, shm: Term<'a>) -> NifResult<Term<'a>> {
    let shm = ShmexTerm::decode(shm, "shm")?;
    let guard = shm.shm("shm")?.add_guard()?;
    Ok(ok(env, guarded_struct(env, guard, shm.claim)))
}

pub fn ensure_not_gc<'a>(env: Env<'a>, shm: Term<'a>) -> NifResult<Term<'a>> {
    ShmexTerm::decode(shm, "shm")?.shm("shm")?;
    Ok(rustler::types::atom::ok().to_term(env))
}

pub fn set_capacity<'a>(env: Env<'a>, shm: Term<'a>, capacity: Term<'a>) -> NifResult<Term<'a>> {
    let shm = ShmexTerm::decode(shm, "shm")?;
    let capacity = decode_size(capacity, "capacity")?;
    let claim = shm.shm("shm")?.set_capacity(capacity)?;
    Ok(ok(env, shm.with_claim(env, claim)))
}

pub fn read<'a>(env: Env<'a>, shm: Term<'a>, read_size: Term<'a>) -> NifResult<Term<'a>> {
    let shm = ShmexTerm::decode(shm, "shm")?;
    let read_size = decode_size(read_size, "read_size")?;
    let data = shm
        .shm("shm")?
        .read(read_size, |len| NewBinary::new(env, len))?;
    Ok(ok(env, Term::from(data)))
}

pub fn write<'a>(env: Env<'a>, shm: Term<'a>, data: Term<'a>) -> NifResult<Term<'a>> {
    let shm = ShmexTerm::decode(shm, "shm")?;
    let data: Binary = data
        .decode()
        .map_err(|_| ArgumentError::new("data must be a binary"))?;
    let claim = shm.shm("shm")?.write(data.as_slice())?;
    Ok(ok(env, shm.with_claim(env, claim)))
}

pub fn split_at<'a>(env: Env<'a>, shm: Term<'a>, position: Term<'a>) -> NifResult<Term<'a>> {
    let shm = ShmexTerm::decode(shm, "shm")?;
    let position = decode_size(position, "position")?;
    let (left, guard, right) = shm.shm("shm")?.split_at(position)?;
    let parts = (shm.with_claim(env, left), guarded_struct(env, guard, right));
    Ok(ok(env, parts))
}

pub fn append<'a>(env: Env<'a>, target: Term<'a>, source: Term<'a>) -> NifResult<Term<'a>> {
    let target = ShmexTerm::decode(target, "target")?;
    let source = ShmexTerm::decode(source, "source")?;
    let claim = target.shm("target")?.append(&source.shm("source")?)?;
    Ok(ok(env, target.with_claim(env, claim)))
}

pub fn trim<'a>(env: Env<'a>, shm: Term<'a>, bytes: Term<'a>) -> NifResult<Term<'a>> {
    let shm = ShmexTerm::decode(shm, "shm")?;
    let bytes = decode_size(bytes, "bytes")?;
    let claim = shm.shm("shm")?.trim(bytes)?;
    Ok(ok(env, shm.with_claim(env, claim)))
}

/// `%{kept_open: n, ready: n, pending_removal: n}`: segments kept open and
/// mapped by guards, made ahead of time, and collected but not yet unlinked.
pub fn stats(env: Env) -> Term {
    let (ready, pending) = shmex::janitor::backlog();
    let pairs = [
        (atoms::kept_open(), shmex::budget::kept()),
        (atoms::ready(), ready),
        (atoms::pending_removal(), pending),
    ];
    Term::map_from_pairs(env, &pairs).unwrap_or_else(|_| atoms::error().to_term(env))
}
