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
//! (`Outcome::Steps`), holding its turns on the segments, so that work
//! queued meanwhile on the dirty schedulers (this library's or any other's)
//! gets its share.
//!
//! Between steps, a copy may be finished by another thread: a C or Rust
//! call that waits for its turn on the copy's segment blocks its scheduler
//! thread, and such calls filling every dirty scheduler would keep the copy
//! from its next step for ever. So a copy that reschedules itself leaves its
//! state (`Steps`) with its turns, as the `shmex` crate's `Finish`: a thread
//! blocked behind them runs the rest of the copy, ends its turns and leaves
//! what the copy made (`Copying::Finished`; a panic meanwhile is the copy's
//! end, `Stop::Panicked`), which the continuation replies with when it
//! runs. The continuation steps the copy under the state's
//! mutex, having withdrawn it from finishers; a finishing thread takes the
//! copy out under the mutex (`Copying::Finishing`): each step is taken by
//! one of them. A continuation that finds the copy being finished waits a
//! step's time for it, then reschedules itself again, leaving its scheduler
//! to other work. A write's data is kept in an environment of the state's
//! own (`Data`), for whichever thread writes it.

use std::ffi::CString;
use std::ops::{Deref, DerefMut};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use rustler::codegen_runtime::{c_char, c_int, c_uint};
use rustler::codegen_runtime::{NifReturnable, NifReturned};
use rustler::env::SavedTerm;
use rustler::sys::{ErlNifEnv, ErlNifTerm};
use rustler::types::atom;
use rustler::{
    Binary, Encoder, Env, NewBinary, NifMap, NifResult, OwnedBinary, OwnedEnv, ResourceArc,
    SchedulerFlags, Term,
};
use shmex::internal::{
    self, decode_size, Finish, Holds, Moved, Moving, OnScheduler, Progress, Reading, Refusal,
    Stepped, Writing, STEP,
};
use shmex::{guarded_struct, ArgumentError, Claim, Shm, ShmexTerm};

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
/// process exits mid-copy), it ends the copy's turns on the segments.
struct Stepping(Arc<Steps>);

/// The state of a copy going on in steps, stepped by its continuation or
/// finished by a thread that waits behind it.
struct Steps {
    copying: Mutex<Copying>,
    /// Told when a thread that finished the copy left what it made.
    finished: Condvar,
}

enum Copying {
    Read(Reading<OwnedBinary>),
    Write(Writing, Data),
    /// A split, append or trim.
    Move(Box<Moving>),
    /// Taken out, and run to its end, by a thread that waits behind it.
    Finishing,
    /// Run to its end by a thread that waited behind it (or ended by an
    /// error, or a panic): what it made, for the continuation to reply with.
    Finished(Ended),
    /// Replied with.
    Gone,
}

/// What a copy made.
enum Done {
    Read(OwnedBinary),
    /// The written struct's claims.
    Write(Claim),
    Move(Moved),
}

/// Why a copy stopped short.
enum Stop {
    Failed(shmex::Error),
    Panicked,
    /// It was replied with already.
    Gone,
}

/// How a copy ended.
type Ended = Result<Done, Stop>;

/// A write's data, kept for the write in an environment of its own, so that
/// a thread that is not the caller's can finish it: a copy of the binary's
/// term, which for a reference-counted binary copies the reference alone.
struct Data {
    env: OwnedEnv,
    data: SavedTerm,
}

impl Data {
    /// Keeps the binary `data`.
    fn new(data: Term<'_>) -> Data {
        let env = OwnedEnv::new();
        let data = env.save(data);
        Data { env, data }
    }

    /// Runs `f` on the bytes.
    fn with<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        self.env
            .run(|env| match Binary::from_term(self.data.load(env)) {
                Ok(data) => f(data.as_slice()),
                // Saved as a binary: cannot happen; a write of the wrong
                // length fails.
                Err(_) => f(&[]),
            })
    }
}

#[rustler::resource_impl]
impl rustler::Resource for Stepping {}

impl Stepping {
    /// The state of `copying`, which is to go on in steps, as a term; from
    /// now on, a thread that waits behind the copy may finish it.
    fn term(env: Env<'_>, copying: Copying) -> Term<'_> {
        let steps = Arc::new(Steps {
            copying: Mutex::new(copying),
            finished: Condvar::new(),
        });
        steps.lock().yield_to(&steps);
        ResourceArc::new(Stepping(steps)).encode(env)
    }
}

impl Steps {
    fn lock(&self) -> MutexGuard<'_, Copying> {
        // Steps catch their panics: nothing is left half done.
        self.copying.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The copy, for its continuation to step: once no thread finishes it,
    /// or `None` if one still does after about a step's time.
    fn for_step(&self) -> Option<MutexGuard<'_, Copying>> {
        let finishing = |copying: &mut Copying| matches!(copying, Copying::Finishing);
        let (copying, _) = self
            .finished
            .wait_timeout_while(self.lock(), STEP, finishing)
            .unwrap_or_else(PoisonError::into_inner);
        (!matches!(*copying, Copying::Finishing)).then_some(copying)
    }
}

/// The copy is finished as [`Stepped`] work: a panic while a thread
/// finishes it is what it came to, which its continuation replies with.
impl Stepped for Steps {
    type Rest = Copying;
    type Ended = Ended;

    /// Takes the copy out, unless it has ended or another thread runs it.
    fn take(&self) -> Option<Copying> {
        let mut copying = self.lock();
        if !copying.goes_on() {
            return None;
        }
        copying.resume();
        Some(std::mem::replace(&mut *copying, Copying::Finishing))
    }

    /// Runs the rest of the copy.
    fn run(mut copying: Copying) -> Ended {
        loop {
            if let Some(ended) = copying.step(Duration::MAX) {
                break ended;
            }
        }
    }

    fn panicked() -> Ended {
        Err(Stop::Panicked)
    }

    /// Leaves what the copy made for its continuation to reply with.
    fn leave(&self, ended: Ended) {
        *self.lock() = Copying::Finished(ended);
        self.finished.notify_all();
    }
}

impl Copying {
    /// Whether the copy is there to step.
    fn goes_on(&self) -> bool {
        matches!(
            self,
            Copying::Read(_) | Copying::Write(..) | Copying::Move(_)
        )
    }

    /// Copies on for about `step`: how the copy ended (it is then `Gone`),
    /// or `None` while it goes on. A failed step leaves the segments as
    /// one failing in the copy's own call does.
    fn step(&mut self, step: Duration) -> Option<Ended> {
        let stepped = catch_unwind(AssertUnwindSafe(|| match self {
            Copying::Read(reading) => reading.step(step),
            Copying::Write(writing, data) => data.with(|data| writing.step(data, step)),
            Copying::Move(moving) => moving.step(step),
            Copying::Finishing | Copying::Finished(_) | Copying::Gone => Ok(true),
        }));
        let ended = match stepped {
            Ok(Ok(false)) => return None,
            Ok(Ok(true)) => Ok(()),
            Ok(Err(error)) => Err(Stop::Failed(error)),
            Err(_) => Err(Stop::Panicked),
        };
        // Dropped, a copy stopped short ends its turns, and undoes what it
        // can (see `Moving`).
        let copying = std::mem::replace(self, Copying::Gone);
        Some(ended.and_then(|()| match copying {
            Copying::Read(reading) => Ok(Done::Read(reading.into_buffer())),
            Copying::Write(writing, _) => Ok(Done::Write(writing.claim())),
            Copying::Move(moving) => moving.finish().map(Done::Move).map_err(Stop::Failed),
            Copying::Finished(ended) => ended,
            // Never stepped while finishing (see `Steps::for_step`).
            Copying::Finishing | Copying::Gone => Err(Stop::Gone),
        }))
    }

    /// The turns the copy holds, if it is still one.
    fn holds(&self) -> Option<Holds<'_>> {
        match self {
            Copying::Read(reading) => Some(reading.holds()),
            Copying::Write(writing, _) => Some(writing.holds()),
            Copying::Move(moving) => Some(moving.holds()),
            Copying::Finishing | Copying::Finished(_) | Copying::Gone => None,
        }
    }

    /// See `Holds::yield_to`: the state is `steps`.
    fn yield_to(&self, steps: &Arc<Steps>) {
        let finish: Weak<dyn Finish> = Arc::downgrade(steps) as Weak<Steps>;
        if let Some(holds) = self.holds() {
            holds.yield_to(&finish);
        }
    }

    /// See `Holds::resume`.
    fn resume(&self) {
        if let Some(holds) = self.holds() {
            holds.resume();
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
                        Progress::Going(reading) => reading.run_out()?,
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
        go_on(env, args, read_step, |done| match done {
            Done::Read(data) => Ok(read_reply(env, data)),
            _ => Err(rustler::Error::BadArg),
        })
    }
    // SAFETY: the VM calls this as the read continued, with its arguments.
    unsafe { continued(env, argc, argv, step) }
}

/// A step of a copy whose state is `args[0]`, continued as `this` with
/// `args` while it goes on; once it has ended (in this step, or finished by
/// another thread meanwhile), `reply` gives the reply to what it made.
fn go_on<'a>(
    env: Env<'a>,
    args: &[Term<'a>],
    this: NifFn,
    reply: impl FnOnce(Done) -> NifResult<Term<'a>>,
) -> Outcome<'a> {
    // Wakes the calls whose turn comes when the copy ends (dropped last).
    let _on = OnScheduler::dirty(env);
    decoded(|| {
        let state = args.first().ok_or(rustler::Error::BadArg)?;
        let stepping: ResourceArc<Stepping> = state.decode()?;
        let Some(mut copying) = stepping.0.for_step() else {
            // A thread finishes the copy: this scheduler may do other work
            // meanwhile.
            return Ok(Outcome::Steps(this, args.to_vec()));
        };
        // This step is ours: no thread is to finish the copy meanwhile.
        copying.resume();
        let Some(ended) = copying.step(STEP) else {
            copying.yield_to(&stepping.0);
            return Ok(Outcome::Steps(this, args.to_vec()));
        };
        drop(copying);
        Ok(Outcome::Reply(match ended {
            Ok(done) => reply(done),
            Err(Stop::Failed(error)) => Err(error.into()),
            Err(Stop::Panicked) => Err(rustler::Error::RaiseAtom("nif_panicked")),
            Err(Stop::Gone) => Err(rustler::Error::BadArg),
        }))
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
                    let state =
                        Stepping::term(env, Copying::Write(writing, Data::new(data.to_term(env))));
                    Outcome::Steps(write_step, vec![state, shm_term])
                }
            })
        })
    })
}

/// A write going on in steps: `[state, shm]`.
unsafe extern "C" fn write_step(
    env: *mut ErlNifEnv,
    argc: i32,
    argv: *const ErlNifTerm,
) -> ErlNifTerm {
    fn step<'a>(env: Env<'a>, args: &[Term<'a>]) -> Outcome<'a> {
        go_on(env, args, write_step, |done| match (args, done) {
            (&[_, shm], Done::Write(claim)) => {
                let shm = ShmexTerm::decode(shm, "shm")?;
                Ok(ok(env, shm.with_claim(env, claim)))
            }
            _ => Err(rustler::Error::BadArg),
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
        go_on(env, args, move_step, |done| match (args, done) {
            (&[_, shm], Done::Move(moved)) => {
                let shm = ShmexTerm::decode(shm, "shm")?;
                Ok(moved_reply(env, &shm, moved))
            }
            _ => Err(rustler::Error::BadArg),
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
