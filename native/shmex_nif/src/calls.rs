//! Each NIF: decode the arguments, run the `shmex` operation, encode the
//! result.
//!
//! Malformed arguments raise `ArgumentError`; everything else comes back as
//! `{:ok, _}` or `{:error, reason}`, or, before anything was changed, as
//! `:reschedule` (from a normal scheduler, for work estimated at more than a
//! millisecond: `Shmex.Native` then calls the `_dirty` twin) or as
//! `{:wait, token}` (the segment is busy with another call: the caller waits
//! for `{:shmex_segment_free, token}` and calls again).

use std::ops::{Deref, DerefMut};

use rustler::types::atom;
use rustler::{Binary, Encoder, Env, NewBinary, NifMap, NifResult, OwnedBinary, Term};
use shmex::internal::{self, decode_size, OnScheduler, Refusal};
use shmex::{guarded_struct, ArgumentError, Claim, Shm, ShmexTerm};

mod atoms {
    rustler::atoms! { reschedule, wait }
}

/// The scheduler a NIF runs on.
#[derive(Clone, Copy)]
pub enum Scheduler {
    Normal,
    Dirty,
}

impl Scheduler {
    fn of(self, env: Env<'_>) -> OnScheduler<'_> {
        match self {
            Scheduler::Normal => OnScheduler::normal(env),
            Scheduler::Dirty => OnScheduler::dirty(env),
        }
    }
}

/// `%{kept_open: n, background_jobs: n, faults_absorbed: n}`: segments
/// kept open between calls, jobs waiting for or running on the background
/// thread, and faults in this library's mappings that were survived.
#[derive(NifMap)]
pub struct Stats {
    kept_open: usize,
    background_jobs: usize,
    faults_absorbed: usize,
}

pub fn stats() -> Stats {
    let stats = internal::stats();
    Stats {
        kept_open: stats.kept_open,
        background_jobs: stats.background_jobs,
        faults_absorbed: stats.faults_absorbed,
    }
}

pub fn allocate<'a>(env: Env<'a>, shm: Term<'a>) -> NifResult<Term<'a>> {
    let shm = ShmexTerm::decode(shm, "shm")?;
    let guard = Shm::allocate(shm.name().cloned(), shm.claim())?;
    Ok((atom::ok(), shm.with_guard(env, guard)).encode(env))
}

pub fn add_guard<'a>(env: Env<'a>, shm: Term<'a>) -> NifResult<Term<'a>> {
    let shm = ShmexTerm::decode(shm, "shm")?;
    let guard = shm.shm("shm")?.add_guard()?;
    Ok((atom::ok(), shm.with_guard(env, guard)).encode(env))
}

pub fn ensure_not_gc<'a>(env: Env<'a>, shm: Term<'a>) -> NifResult<Term<'a>> {
    ShmexTerm::decode(shm, "shm")?.shm("shm")?;
    Ok(atom::ok().to_term(env))
}

pub fn set_capacity<'a>(
    env: Env<'a>,
    on: Scheduler,
    shm: Term<'a>,
    capacity: Term<'a>,
) -> NifResult<Term<'a>> {
    resize(env, on, shm, (capacity, "capacity"), internal::set_capacity)
}

pub fn read<'a>(
    env: Env<'a>,
    on: Scheduler,
    shm: Term<'a>,
    read_size: Term<'a>,
) -> NifResult<Term<'a>> {
    let shm = ShmexTerm::decode(shm, "shm")?;
    let read_size = decode_size(read_size, "read_size")?;
    let data = internal::read(&shm.shm("shm")?, &on.of(env), read_size, |len| {
        ResultBinary::new(env, len)
    });
    reply(env, data.map(|data| data.into_term(env)))
}

pub fn write<'a>(
    env: Env<'a>,
    on: Scheduler,
    shm: Term<'a>,
    data: Term<'a>,
) -> NifResult<Term<'a>> {
    let shm = ShmexTerm::decode(shm, "shm")?;
    let data = Binary::from_term(data).map_err(|_| ArgumentError::new("data must be a binary"))?;
    let claim = internal::write(&shm.shm("shm")?, &on.of(env), data.as_slice());
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
    let parts = internal::split_at(&shm.shm("shm")?, &on.of(env), position);
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
    let claim = internal::append(&target.shm("target")?, &on.of(env), &source.shm("source")?);
    reply(env, claim.map(|claim| target.with_claim(env, claim)))
}

pub fn trim<'a>(
    env: Env<'a>,
    on: Scheduler,
    shm: Term<'a>,
    bytes: Term<'a>,
) -> NifResult<Term<'a>> {
    resize(env, on, shm, (bytes, "bytes"), internal::trim)
}

/// A call that resizes a struct's segment by a byte count (named for its
/// `ArgumentError`) and answers with the struct's new size and capacity.
fn resize<'a>(
    env: Env<'a>,
    on: Scheduler,
    shm: Term<'a>,
    (count, argument): (Term<'a>, &str),
    operation: impl FnOnce(&Shm, &OnScheduler<'_>, u64) -> Result<Claim, Refusal>,
) -> NifResult<Term<'a>> {
    let shm = ShmexTerm::decode(shm, "shm")?;
    let count = decode_size(count, argument)?;
    let claim = operation(&shm.shm("shm")?, &on.of(env), count);
    reply(env, claim.map(|claim| shm.with_claim(env, claim)))
}

/// `{:ok, value}`, `{:error, reason}`, `:reschedule` or `{:wait, token}`.
fn reply<'a>(env: Env<'a>, result: Result<Term<'a>, Refusal>) -> NifResult<Term<'a>> {
    match result {
        Ok(value) => Ok((atom::ok(), value).encode(env)),
        Err(Refusal::Failed(error)) => Err(error.into()),
        Err(Refusal::Reschedule) => Ok(atoms::reschedule().to_term(env)),
        Err(Refusal::Wait(token)) => Ok((atoms::wait(), token).encode(env)),
    }
}

/// A read's result: a heap binary when small, else a binary allocated so
/// that failing to allocate it is an error (`ENOMEM`), not a VM abort.
enum ResultBinary<'a> {
    Small(NewBinary<'a>),
    Large(OwnedBinary),
}

/// Binaries up to this size live on the process heap.
const HEAP_BINARY: usize = 64;

impl<'a> ResultBinary<'a> {
    fn new(env: Env<'a>, len: usize) -> Option<ResultBinary<'a>> {
        if len <= HEAP_BINARY {
            return Some(ResultBinary::Small(NewBinary::new(env, len)));
        }
        // OwnedBinary::new aborts when the allocation fails; growing an
        // empty one reports it.
        let mut binary = OwnedBinary::new(0);
        binary.realloc(len).then_some(ResultBinary::Large(binary))
    }

    fn into_term(self, env: Env<'a>) -> Term<'a> {
        match self {
            ResultBinary::Small(binary) => binary.into(),
            ResultBinary::Large(binary) => binary.release(env).to_term(env),
        }
    }
}

impl Deref for ResultBinary<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            ResultBinary::Small(binary) => binary.as_slice(),
            ResultBinary::Large(binary) => binary.as_slice(),
        }
    }
}

impl DerefMut for ResultBinary<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            ResultBinary::Small(binary) => binary.as_mut_slice(),
            ResultBinary::Large(binary) => binary.as_mut_slice(),
        }
    }
}
