//! Each NIF: decode the arguments, run the `shmex` operation, encode the result.
//!
//! Malformed arguments raise `ArgumentError`; everything else comes back as
//! `{:ok, _}` or `{:error, reason}`, or, from a call on a normal scheduler
//! whose work is estimated at more than a millisecond, as `:reschedule`
//! before anything was changed: `Shmex.Native` then runs the `_dirty` twin.

use std::time::Duration;

use rustler::{Binary, Encoder, Env, NewBinary, NifResult, Term};
use shmex::{decode_size, guarded_struct, ok, ArgumentError, Claim, Error, Shm, ShmexTerm};

mod atoms {
    rustler::atoms! { error, kept_open, ready, pending_removal, reschedule }
}

/// The scheduler a NIF runs on.
#[derive(Clone, Copy)]
pub enum Scheduler {
    Normal,
    Dirty,
}

impl Scheduler {
    /// How long a call may hold this scheduler.
    fn time_limit(self) -> Option<Duration> {
        match self {
            Scheduler::Normal => Some(Duration::from_millis(1)),
            Scheduler::Dirty => None,
        }
    }
}

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

pub fn set_capacity<'a>(
    env: Env<'a>,
    on: Scheduler,
    shm: Term<'a>,
    capacity: Term<'a>,
) -> NifResult<Term<'a>> {
    resize(env, on, shm, (capacity, "capacity"), |shm, capacity| {
        shm.set_capacity(capacity)
    })
}

pub fn read<'a>(
    env: Env<'a>,
    on: Scheduler,
    shm: Term<'a>,
    read_size: Term<'a>,
) -> NifResult<Term<'a>> {
    let shm = ShmexTerm::decode(shm, "shm")?;
    let read_size = decode_size(read_size, "read_size")?;
    let data = operand(&shm, "shm", on)?.read(read_size, |len| NewBinary::new(env, len));
    reply(env, data.map(Term::from))
}

pub fn write<'a>(
    env: Env<'a>,
    on: Scheduler,
    shm: Term<'a>,
    data: Term<'a>,
) -> NifResult<Term<'a>> {
    let shm = ShmexTerm::decode(shm, "shm")?;
    let data: Binary = data
        .decode()
        .map_err(|_| ArgumentError::new("data must be a binary"))?;
    let claim = operand(&shm, "shm", on)?.write(data.as_slice());
    reply(env, claim.map(|claim| shm.with_claim(env, claim)))
}

pub fn split_at<'a>(
    env: Env<'a>,
    on: Scheduler,
    shm: Term<'a>,
    position: Term<'a>,
) -> NifResult<Term<'a>> {
    let shm = ShmexTerm::decode(shm, "shm")?;
    let position = decode_size(position, "position")?;
    let parts = operand(&shm, "shm", on)?.split_at(position);
    reply(
        env,
        parts.map(|(left, guard, right)| {
            (shm.with_claim(env, left), guarded_struct(env, guard, right)).encode(env)
        }),
    )
}

pub fn append<'a>(
    env: Env<'a>,
    on: Scheduler,
    target: Term<'a>,
    source: Term<'a>,
) -> NifResult<Term<'a>> {
    let target = ShmexTerm::decode(target, "target")?;
    let source = ShmexTerm::decode(source, "source")?;
    let claim = operand(&target, "target", on)?.append(&source.shm("source")?);
    reply(env, claim.map(|claim| target.with_claim(env, claim)))
}

pub fn trim<'a>(
    env: Env<'a>,
    on: Scheduler,
    shm: Term<'a>,
    bytes: Term<'a>,
) -> NifResult<Term<'a>> {
    resize(env, on, shm, (bytes, "bytes"), |shm, bytes| shm.trim(bytes))
}

/// A call that resizes a struct's segment by a byte count (named for its
/// `ArgumentError`) and answers with the struct's new size and capacity.
fn resize<'a>(
    env: Env<'a>,
    on: Scheduler,
    shm: Term<'a>,
    (count, argument): (Term<'a>, &str),
    operation: impl FnOnce(&Shm, u64) -> shmex::Result<Claim>,
) -> NifResult<Term<'a>> {
    let shm = ShmexTerm::decode(shm, "shm")?;
    let count = decode_size(count, argument)?;
    let claim = operation(&operand(&shm, "shm", on)?, count);
    reply(env, claim.map(|claim| shm.with_claim(env, claim)))
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

/// The struct to operate on, with the time limit of the scheduler `on`.
fn operand<'t>(
    term: &'t ShmexTerm,
    argument: &str,
    on: Scheduler,
) -> Result<Shm<'t>, ArgumentError> {
    let mut shm = term.shm(argument)?;
    shm.time_limit = on.time_limit();
    Ok(shm)
}

/// `{:ok, value}`, `{:error, reason}`, or `:reschedule`.
fn reply<'a>(env: Env<'a>, result: shmex::Result<Term<'a>>) -> NifResult<Term<'a>> {
    match result {
        Ok(value) => Ok(ok(env, value)),
        Err(Error::Reschedule) => Ok(atoms::reschedule().to_term(env)),
        Err(error) => Err(error.into()),
    }
}
