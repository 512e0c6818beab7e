//! Each NIF: decode the arguments, run the `shmex` operation, encode the
//! result.
//!
//! Malformed arguments raise `ArgumentError`; everything else comes back as
//! `{:ok, _}` or `{:error, reason}`, or, before anything was changed, as
//! `{:wait, token}` (the segment is busy with calls that came first: the
//! caller waits for `{:shmex_segment_free, token}` and calls again, and then
//! has its turn).
//!
//! Where a call runs is its own business: on a normal scheduler, work
//! estimated at more than a millisecond moves the call to a dirty CPU
//! scheduler (`Outcome::ToDirty`), with the same arguments; there, a read or
//! write, split, append or trim of many milliseconds copies about a
//! millisecond at a time (less once it has run long: see the `shmex`
//! crate's `schedule` module) and reschedules itself between steps
//! (`Outcome::Steps`), holding its turns on the segments, so that work queued meanwhile on the dirty schedulers (this
//! library's or any other's) gets its share.

use std::ffi::CString;
use std::ops::{Deref, DerefMut};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, PoisonError};

use rustler::codegen_runtime::{c_char, c_int, c_uint};
use rustler::codegen_runtime::{NifReturnable, NifReturned};
use rustler::sys::{ErlNifEnv, ErlNifTerm};
use rustler::types::atom;
use rustler::{
    Binary, Encoder, Env, NewBinary, NifMap, NifResult, OwnedBinary, ResourceArc, SchedulerFlags,
    Term,
};
use shmex::internal::{
    self, decode_size, Moved, Moving, OnScheduler, Progress, Reading, Refusal, Writing, STEP,
};
use shmex::{guarded_struct, ArgumentError, Shm, ShmexTerm};

/// Declares the operation `$name` (the function of that name here, taking
/// the NIF's arguments `$arg`) as a NIF of `Shmex.Native.Nif`: its entry
/// point on a normal scheduler, and the same call continued on a dirty CPU
/// scheduler, where the NIF moves itself when its work is too long (not a
/// function of the module: the VM runs it in the NIF's place). Both run
/// `$name`.
///
/// The NIF's C entry point is written here rather than by
/// `#[rustler::nif]`, whose wrapper allocates a vector of the arguments on
/// every call: these calls are made millions of times for a few bytes.
macro_rules! operation {
    ($name:ident($($arg:ident),+)) => {
        mod $name {
            use super::*;

            fn call<'a>(env: Env<'a>, on: Scheduler, args: &[ErlNifTerm]) -> Outcome<'a> {
                match *args {
                    // SAFETY: the VM's arguments for this call, in `env`.
                    [$($arg),+] => super::$name(env, on, $(unsafe { Term::new(env, $arg) }),+),
                    _ => Outcome::Reply(Err(rustler::Error::BadArg)),
                }
            }

            unsafe extern "C" fn normal(
                env: *mut ErlNifEnv,
                argc: c_int,
                argv: *const ErlNifTerm,
            ) -> ErlNifTerm {
                // SAFETY: the VM calls this as the NIF, with its arguments.
                unsafe { super::entry(env, argc, argv, Scheduler::Normal, call, (stringify!($name), dirty)) }
            }

            unsafe extern "C" fn dirty(
                env: *mut ErlNifEnv,
                argc: c_int,
                argv: *const ErlNifTerm,
            ) -> ErlNifTerm {
                // SAFETY: the VM calls this as the NIF continued, with its
                // arguments.
                unsafe { super::entry(env, argc, argv, Scheduler::Dirty, call, (stringify!($name), dirty)) }
            }

            rustler::codegen_runtime::inventory::submit!(rustler::Nif {
                name: concat!(stringify!($name), "\0").as_ptr() as *const c_char,
                arity: [$(stringify!($arg)),+].len() as c_uint,
                flags: rustler::SchedulerFlags::Normal as c_uint,
                raw_func: normal,
            });
        }
    };
}

mod atoms {
    rustler::atoms! { wait }
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

/// A NIF's C entry point.
type NifFn = unsafe extern "C" fn(*mut ErlNifEnv, i32, *const ErlNifTerm) -> ErlNifTerm;

/// How a call goes on.
pub enum Outcome<'a> {
    /// It is done: the reply, or the exception to raise.
    Reply(NifResult<Term<'a>>),
    /// Its work is too long for a normal scheduler: it moves to a dirty one
    /// and starts again there, having changed nothing.
    ToDirty,
    /// A copy goes on in steps: `step` runs next, on a dirty scheduler,
    /// with `args`.
    Steps(NifFn, Vec<Term<'a>>),
}

/// Runs `call` as a NIF called by the VM in `env` with arguments `argv`, on
/// scheduler `on`; `dirty` continues the NIF `name` on a dirty scheduler.
///
/// # Safety
///
/// `env`, `argc` and `argv` are those the VM passed to the NIF.
pub unsafe fn entry(
    env: *mut ErlNifEnv,
    argc: i32,
    argv: *const ErlNifTerm,
    on: Scheduler,
    call: for<'a> fn(Env<'a>, Scheduler, &[ErlNifTerm]) -> Outcome<'a>,
    next: (&str, NifFn),
) -> ErlNifTerm {
    let lifetime = ();
    // SAFETY: the VM's environment and arguments for this call.
    let env = unsafe { Env::new(&lifetime, env) };
    let args = unsafe { std::slice::from_raw_parts(argv, usize::try_from(argc).unwrap_or(0)) };
    let outcome = catch_unwind(AssertUnwindSafe(|| call(env, on, args)));
    // SAFETY: made in `env`.
    unsafe { finish(env, outcome, args, next) }
}

/// Runs the step `call` of a copy continued by the VM (see [`entry`]).
///
/// # Safety
///
/// As for [`entry`].
unsafe fn continued(
    env: *mut ErlNifEnv,
    argc: i32,
    argv: *const ErlNifTerm,
    call: for<'a> fn(Env<'a>, &[Term<'a>]) -> Outcome<'a>,
) -> ErlNifTerm {
    let lifetime = ();
    // SAFETY: the VM's environment and arguments for this call.
    let env = unsafe { Env::new(&lifetime, env) };
    let raw = unsafe { std::slice::from_raw_parts(argv, usize::try_from(argc).unwrap_or(0)) };
    let args: Vec<Term> = raw
        .iter()
        .map(|&term| unsafe { Term::new(env, term) })
        .collect();
    let outcome = catch_unwind(AssertUnwindSafe(|| call(env, &args)));
    // A step goes on only as a step or a reply, never to a dirty scheduler:
    // it is on one.
    unsafe { finish(env, outcome, raw, ("shmex_step", no_dirty)) }
}

/// What the VM gets from a NIF whose call came to `outcome`: a term, an
/// exception, or the function to run next in its place (`dirty`, to go on
/// with `args` on a dirty scheduler, or a copy's next step).
///
/// # Safety
///
/// `args` are the call's arguments in `env`.
unsafe fn finish<'a>(
    env: Env<'a>,
    outcome: std::thread::Result<Outcome<'a>>,
    args: &[ErlNifTerm],
    (name, dirty): (&str, NifFn),
) -> ErlNifTerm {
    let panicked = || Outcome::Reply(Err(rustler::Error::RaiseAtom("nif_panicked")));
    let returned = match outcome.unwrap_or_else(|_| panicked()) {
        Outcome::Reply(Ok(term)) => return term.as_c_arg(),
        // SAFETY: the error is turned into an exception in `env`.
        Outcome::Reply(Err(error)) => unsafe { error.into_returned(env) },
        Outcome::ToDirty => reschedule(name, dirty, args.to_vec()),
        Outcome::Steps(step, args) => {
            reschedule(name, step, args.iter().map(|arg| arg.as_c_arg()).collect())
        }
    };
    // SAFETY: made in `env`.
    unsafe { returned.apply(env) }
}

/// Runs `fun` next in the NIF `name`'s place, on a dirty CPU scheduler.
fn reschedule(name: &str, fun: NifFn, args: Vec<ErlNifTerm>) -> NifReturned {
    NifReturned::Reschedule {
        // The VM looks the name up as an atom and keeps nothing of it.
        fun_name: CString::new(name).unwrap_or_default(),
        flags: SchedulerFlags::DirtyCpu,
        fun,
        args,
    }
}

/// A step never moves to a dirty scheduler again: it is on one. Raises if
/// it ever did.
unsafe extern "C" fn no_dirty(
    env: *mut ErlNifEnv,
    _argc: i32,
    _argv: *const ErlNifTerm,
) -> ErlNifTerm {
    // SAFETY: the VM's environment for this call.
    unsafe { rustler::sys::enif_make_badarg(env) }
}

/// A copy going on in steps, between two of them: its state, held by the
/// continuation's argument. Dropped with the last reference to it (the
/// process exits mid-copy), it ends the copy's turn on the segment.
struct Stepping(Mutex<Option<Copying>>);

enum Copying {
    Read(Reading<OwnedBinary>),
    Write(Writing),
    /// A split, append or trim.
    Move(Box<Moving>),
}

#[rustler::resource_impl]
impl rustler::Resource for Stepping {}

impl Stepping {
    fn term(env: Env<'_>, copying: Copying) -> Term<'_> {
        ResourceArc::new(Stepping(Mutex::new(Some(copying)))).encode(env)
    }

    /// The copy, taken out (put back by the step if it goes on).
    fn take(term: Term<'_>) -> NifResult<Copying> {
        let stepping: ResourceArc<Stepping> = term.decode()?;
        let copying = stepping
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        copying.ok_or(rustler::Error::BadArg)
    }

    fn put_back(term: Term<'_>, copying: Copying) -> NifResult<()> {
        let stepping: ResourceArc<Stepping> = term.decode()?;
        *stepping.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(copying);
        Ok(())
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

operation!(set_capacity(shm, capacity));

pub fn set_capacity<'a>(
    env: Env<'a>,
    on: Scheduler,
    shm: Term<'a>,
    capacity: Term<'a>,
) -> Outcome<'a> {
    decoded(|| {
        let shm = ShmexTerm::decode(shm, "shm")?;
        let capacity = decode_size(capacity, "capacity")?;
        let claim = internal::set_capacity(&shm.shm("shm")?, &on.of(env), capacity);
        settle(env, claim, |claim| {
            Ok(Outcome::Reply(Ok(ok(env, shm.with_claim(env, claim)))))
        })
    })
}

operation!(read(shm, read_size));

pub fn read<'a>(env: Env<'a>, on: Scheduler, shm: Term<'a>, read_size: Term<'a>) -> Outcome<'a> {
    decoded(|| {
        let shm = ShmexTerm::decode(shm, "shm")?;
        let read_size = decode_size(read_size, "read_size")?;
        let shm = shm.shm("shm")?;
        let scheduling = on.of(env);
        match on {
            // Short: the result may be a heap binary, and is read whole.
            Scheduler::Normal => {
                let read = internal::read(&shm, &scheduling, read_size, |len| {
                    ResultBinary::new(env, len)
                });
                settle(env, read, |progress| {
                    let data = match progress {
                        Progress::Done(data) => data,
                        Progress::Going(mut reading) => {
                            while !reading.step(STEP)? {}
                            reading.into_buffer()
                        }
                    };
                    Ok(Outcome::Reply(Ok(ok(env, data.into_term(env)))))
                })
            }
            Scheduler::Dirty => {
                let read = internal::read(&shm, &scheduling, read_size, owned_binary);
                settle(env, read, |progress| {
                    Ok(match progress {
                        Progress::Done(data) => Outcome::Reply(Ok(read_reply(env, data))),
                        Progress::Going(reading) => {
                            let state = Stepping::term(env, Copying::Read(reading));
                            Outcome::Steps(read_step, vec![state])
                        }
                    })
                })
            }
        }
    })
}

/// A read going on in steps: `[state]`.
unsafe extern "C" fn read_step(
    env: *mut ErlNifEnv,
    argc: i32,
    argv: *const ErlNifTerm,
) -> ErlNifTerm {
    fn step<'a>(env: Env<'a>, args: &[Term<'a>]) -> Outcome<'a> {
        go_on(env, args, read_step, |copying| {
            let Copying::Read(mut reading) = copying else {
                return Err(rustler::Error::BadArg);
            };
            Ok(match reading.step(STEP)? {
                true => Ok(read_reply(env, reading.into_buffer())),
                false => Err(Copying::Read(reading)),
            })
        })
    }
    // SAFETY: the VM calls this as the read continued, with its arguments.
    unsafe { continued(env, argc, argv, step) }
}

/// A step of a copy whose state is `args[0]`: `step` takes it and gives
/// the reply, or the state back to go on with (as `this`, with `args`).
fn go_on<'a>(
    env: Env<'a>,
    args: &[Term<'a>],
    this: NifFn,
    step: impl FnOnce(Copying) -> NifResult<Result<Term<'a>, Copying>>,
) -> Outcome<'a> {
    // Wakes the calls whose turn comes when the copy ends (dropped last).
    let _on = OnScheduler::dirty(env);
    decoded(|| {
        let state = *args.first().ok_or(rustler::Error::BadArg)?;
        Ok(match step(Stepping::take(state)?)? {
            Ok(reply) => Outcome::Reply(Ok(reply)),
            Err(copying) => {
                Stepping::put_back(state, copying)?;
                Outcome::Steps(this, args.to_vec())
            }
        })
    })
}

/// `{:ok, data}` for a read into `data`.
fn read_reply(env: Env<'_>, data: OwnedBinary) -> Term<'_> {
    ok(env, data.release(env).to_term(env))
}

operation!(write(shm, data));

pub fn write<'a>(env: Env<'a>, on: Scheduler, shm: Term<'a>, data: Term<'a>) -> Outcome<'a> {
    decoded(|| {
        let shm_term = shm;
        let shm = ShmexTerm::decode(shm, "shm")?;
        let data =
            Binary::from_term(data).map_err(|_| ArgumentError::new("data must be a binary"))?;
        let written = internal::write(&shm.shm("shm")?, &on.of(env), data.as_slice());
        settle(env, written, |progress| {
            Ok(match progress {
                Progress::Done(claim) => Outcome::Reply(Ok(ok(env, shm.with_claim(env, claim)))),
                Progress::Going(writing) => {
                    let state = Stepping::term(env, Copying::Write(writing));
                    Outcome::Steps(write_step, vec![state, shm_term, data.to_term(env)])
                }
            })
        })
    })
}

/// A write going on in steps: `[state, shm, data]`.
unsafe extern "C" fn write_step(
    env: *mut ErlNifEnv,
    argc: i32,
    argv: *const ErlNifTerm,
) -> ErlNifTerm {
    fn step<'a>(env: Env<'a>, args: &[Term<'a>]) -> Outcome<'a> {
        go_on(env, args, write_step, |copying| {
            let (&[_, shm, data], Copying::Write(mut writing)) = (args, copying) else {
                return Err(rustler::Error::BadArg);
            };
            Ok(
                match writing.step(Binary::from_term(data)?.as_slice(), STEP)? {
                    true => {
                        let shm = ShmexTerm::decode(shm, "shm")?;
                        Ok(ok(env, shm.with_claim(env, writing.claim())))
                    }
                    false => Err(Copying::Write(writing)),
                },
            )
        })
    }
    // SAFETY: the VM calls this as the write continued, with its arguments.
    unsafe { continued(env, argc, argv, step) }
}

operation!(split_at(shm, position));

pub fn split_at<'a>(env: Env<'a>, on: Scheduler, shm: Term<'a>, position: Term<'a>) -> Outcome<'a> {
    decoded(|| {
        let shm_term = shm;
        let shm = ShmexTerm::decode(shm, "shm")?;
        let position = decode_size(position, "position")?;
        let parts = internal::split_at(&shm.shm("shm")?, &on.of(env), position);
        settle(env, parts, |progress| {
            Ok(moved(
                env,
                (&shm, shm_term),
                progress.map_done(Moved::Split),
            ))
        })
    })
}

operation!(append(target, source));

pub fn append<'a>(env: Env<'a>, on: Scheduler, target: Term<'a>, source: Term<'a>) -> Outcome<'a> {
    decoded(|| {
        let target_term = target;
        let target = ShmexTerm::decode(target, "target")?;
        let source = ShmexTerm::decode(source, "source")?;
        let claim = internal::append(&target.shm("target")?, &on.of(env), &source.shm("source")?);
        settle(env, claim, |progress| {
            Ok(moved(
                env,
                (&target, target_term),
                progress.map_done(Moved::Resized),
            ))
        })
    })
}

operation!(trim(shm, bytes));

pub fn trim<'a>(env: Env<'a>, on: Scheduler, shm: Term<'a>, bytes: Term<'a>) -> Outcome<'a> {
    decoded(|| {
        let shm_term = shm;
        let shm = ShmexTerm::decode(shm, "shm")?;
        let bytes = decode_size(bytes, "bytes")?;
        let claim = internal::trim(&shm.shm("shm")?, &on.of(env), bytes);
        settle(env, claim, |progress| {
            Ok(moved(
                env,
                (&shm, shm_term),
                progress.map_done(Moved::Resized),
            ))
        })
    })
}

/// How a split, append or trim of the struct `shm` (decoded, and its
/// term) goes on: the reply once done, else its next step.
fn moved<'a>(
    env: Env<'a>,
    (shm, term): (&ShmexTerm<'a>, Term<'a>),
    progress: Progress<Moved, Moving>,
) -> Outcome<'a> {
    match progress {
        Progress::Done(moved) => Outcome::Reply(Ok(moved_reply(env, shm, moved))),
        Progress::Going(moving) => {
            let state = Stepping::term(env, Copying::Move(Box::new(moving)));
            Outcome::Steps(move_step, vec![state, term])
        }
    }
}

/// `{:ok, struct}` for an append or trim of the struct `shm`, `{:ok,
/// {left, right}}` for a split.
fn moved_reply<'a>(env: Env<'a>, shm: &ShmexTerm<'a>, moved: Moved) -> Term<'a> {
    match moved {
        Moved::Split((left, guard, right)) => {
            let parts = (shm.with_claim(env, left), guarded_struct(env, guard, right));
            ok(env, parts.encode(env))
        }
        Moved::Resized(claim) => ok(env, shm.with_claim(env, claim)),
    }
}

/// A split, append or trim going on in steps: `[state, shm]`, `shm` being
/// the struct split, appended to or trimmed.
unsafe extern "C" fn move_step(
    env: *mut ErlNifEnv,
    argc: i32,
    argv: *const ErlNifTerm,
) -> ErlNifTerm {
    fn step<'a>(env: Env<'a>, args: &[Term<'a>]) -> Outcome<'a> {
        go_on(env, args, move_step, |copying| {
            let (&[_, shm], Copying::Move(mut moving)) = (args, copying) else {
                return Err(rustler::Error::BadArg);
            };
            Ok(match moving.step(STEP)? {
                true => {
                    let shm = ShmexTerm::decode(shm, "shm")?;
                    Ok(moved_reply(env, &shm, moving.finish()?))
                }
                false => Err(Copying::Move(moving)),
            })
        })
    }
    // SAFETY: the VM calls this as the copy continued, with its arguments.
    unsafe { continued(env, argc, argv, step) }
}

/// The outcome `call` makes, or the exception its arguments raise.
fn decoded<'a>(call: impl FnOnce() -> NifResult<Outcome<'a>>) -> Outcome<'a> {
    call().unwrap_or_else(|error| Outcome::Reply(Err(error)))
}

/// Where a call goes on after its operation: `done` with what it made,
/// `{:error, reason}`, to a dirty scheduler, or `{:wait, token}`.
fn settle<'a, T>(
    env: Env<'a>,
    result: Result<T, Refusal>,
    done: impl FnOnce(T) -> Result<Outcome<'a>, shmex::Error>,
) -> NifResult<Outcome<'a>> {
    let outcome = match result {
        Ok(value) => done(value),
        Err(Refusal::Failed(error)) => Err(error),
        Err(Refusal::Reschedule) => Ok(Outcome::ToDirty),
        Err(Refusal::Wait(token)) => Ok(Outcome::Reply(Ok((atoms::wait(), token).encode(env)))),
    };
    outcome.map_err(Into::into)
}

fn ok<'a>(env: Env<'a>, value: Term<'a>) -> Term<'a> {
    (atom::ok(), value).encode(env)
}

/// A buffer for a read's result, or `None` if it cannot be had: see
/// [`ResultBinary`].
fn owned_binary(len: usize) -> Option<OwnedBinary> {
    // OwnedBinary::new aborts when the allocation fails; growing an empty
    // one reports it.
    let mut binary = OwnedBinary::new(0);
    binary.realloc(len).then_some(binary)
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
        owned_binary(len).map(ResultBinary::Large)
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
