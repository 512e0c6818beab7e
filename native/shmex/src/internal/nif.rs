//! The NIF library's scheduling of calls (`shmex_nif`): a call never waits
//! for a busy segment, and on a normal scheduler refuses long work.

use std::cell::{Cell, RefCell};
use std::hash::{Hash, Hasher};
use std::ops::DerefMut;
use std::time::{Duration, Instant};

use rustler::{Encoder, Env, LocalPid, OwnedEnv};

use crate::cost::Cost;
use crate::exclusion::{Access, Ticket, Wake};
use crate::registry::{Entry, Held};
use crate::schedule::Scheduling;
use crate::{background, Claim, Error, Shm};

pub use crate::registry::{Finish, Stepped};
pub use crate::shm::{Holds, Moved, Moving, Parts, Progress, Reading, Writing};

mod atoms {
    rustler::atoms! { shmex_segment_free }
}

/// How long a call on a normal scheduler may take.
const NORMAL_SCHEDULER: Duration = Duration::from_millis(1);

/// A process's time slice on a scheduler, as `enif_consume_timeslice`
/// counts it.
const TIME_SLICE: Duration = Duration::from_millis(1);

/// How long one step of a long copy on a dirty scheduler takes: a time
/// slice, while the copy is young (shorter once it has run long: see
/// `schedule::step_budget`).
pub const STEP: Duration = TIME_SLICE;

/// A NIF call: on a normal scheduler it refuses work longer than about a
/// millisecond, and tells the VM how much of its time slice the work it
/// accepts takes; on either it never waits for a busy segment, it parks,
/// and the calling process waits for `{:shmex_segment_free, token}` instead.
pub struct OnScheduler<'a> {
    limit: Option<Duration>,
    env: Env<'a>,
    /// When admitted work long enough to count against the time slice
    /// started: charged, as measured, when the call is done (dropped).
    charged_from: Cell<Option<Instant>>,
}

/// Why a NIF call stopped short.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// It failed: `{:error, reason}`.
    Failed(Error),
    /// It would take too long for a normal scheduler; nothing was changed.
    Reschedule,
    /// The segment is busy; `{:shmex_segment_free, token}` will be sent to
    /// the caller when it is free. Nothing was changed.
    Wait(u64),
}

impl From<Error> for Refusal {
    fn from(error: Error) -> Refusal {
        Refusal::Failed(error)
    }
}

impl<'a> OnScheduler<'a> {
    /// A call in `env` on a normal scheduler.
    pub fn normal(env: Env<'a>) -> OnScheduler<'a> {
        OnScheduler::new(env, Some(NORMAL_SCHEDULER))
    }

    /// A call in `env` on a dirty scheduler: no time limit.
    pub fn dirty(env: Env<'a>) -> OnScheduler<'a> {
        OnScheduler::new(env, None)
    }

    fn new(env: Env<'a>, limit: Option<Duration>) -> OnScheduler<'a> {
        IN_CALL.set(true);
        OnScheduler {
            limit,
            env,
            charged_from: Cell::new(None),
        }
    }
}

thread_local! {
    /// Whether a NIF call runs on this thread.
    static IN_CALL: Cell<bool> = const { Cell::new(false) };
    /// The wake-ups due while a NIF call runs on this thread: sent with the
    /// call's own environment when it ends, without a trip through the
    /// background thread.
    static OUTBOX: RefCell<Vec<(LocalPid, u64)>> = const { RefCell::new(Vec::new()) };
}

/// Tells `caller` that its turn came (ticket `ticket`): when the call ends,
/// if a NIF call runs on this thread, else from the background thread.
fn send_wake(caller: LocalPid, ticket: u64) {
    if IN_CALL.get() {
        OUTBOX.with_borrow_mut(|outbox| outbox.push((caller, ticket)));
    } else {
        background::run_or_here(Box::new(move || {
            // The caller may be gone: its turn is then taken back once its
            // lease runs out.
            let _ = OwnedEnv::new().send_and_clear(&caller, |env| {
                (atoms::shmex_segment_free(), ticket).encode(env)
            });
        }));
    }
}

impl OnScheduler<'_> {
    /// The calling process, as the key of its place in a segment's queue:
    /// a local pid is an immediate term, unique among live processes.
    fn key(&self) -> u64 {
        let pid = self.env.pid().encode(self.env).as_c_arg();
        let mut raw = RawTerm(0);
        pid.hash(&mut raw);
        raw.0
    }
}

/// Reads a term's bits out of its `Hash`, which writes them as one
/// `usize`: rustler keeps them private.
struct RawTerm(u64);

impl Hasher for RawTerm {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not how a term hashes itself; kept exact all the same.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_usize(&mut self, bits: usize) {
        self.0 = bits as u64;
    }
}

impl Scheduling for OnScheduler<'_> {
    type Refusal = Refusal;

    fn lock<'e>(&self, entry: &'e Entry, access: Access) -> std::result::Result<Held<'e>, Refusal> {
        // Parking needs the background thread to send the wake-up.
        if !background::available() {
            return Ok(entry.lock(access)?);
        }
        // The caller is looked up only if it parks.
        let env = self.env;
        let wake = move |ticket: Ticket| -> Wake {
            let caller = env.pid();
            Box::new(move || send_wake(caller, ticket.0))
        };
        entry
            .lock_or_park(access, || self.key(), wake)
            .map_err(|ticket| Refusal::Wait(ticket.0))
    }

    fn step(&self) -> Option<Duration> {
        // On a dirty scheduler, long copies go in steps of about a time
        // slice, each rescheduled behind the work that queued meanwhile.
        self.limit.is_none().then_some(STEP)
    }

    fn abandon(&self, entry: &Entry) {
        if background::available() {
            entry.abandon(self.key());
        }
    }

    fn admit(&self, cost: Cost, holds: &[&Held<'_>]) -> std::result::Result<(), Refusal> {
        let Some(limit) = self.limit else {
            return Ok(());
        };
        if !cost.within(limit) {
            // The call goes on on a dirty scheduler: its turns wait for it
            // there, as for a parked call.
            if background::available() {
                holds.iter().for_each(|held| held.hand_back_to(self.key()));
            }
            return Err(Refusal::Reschedule);
        }
        // The VM charges a NIF call next to nothing unless told: a process
        // making long calls in a loop would keep its scheduler from others.
        // Work estimated at a percent of a time slice or more is timed.
        if cost.percent_of(TIME_SLICE) > 0 {
            self.charged_from.set(Some(Instant::now()));
        }
        Ok(())
    }
}

impl Drop for OnScheduler<'_> {
    fn drop(&mut self) {
        IN_CALL.set(false);
        if OUTBOX.with_borrow(|outbox| !outbox.is_empty()) {
            for (caller, ticket) in OUTBOX.take() {
                // The caller may be gone: its turn is then taken back once
                // its lease runs out.
                let _ = self
                    .env
                    .send(&caller, (atoms::shmex_segment_free(), ticket));
            }
        }
        if let Some(start) = self.charged_from.get() {
            let percent = start.elapsed().as_micros() * 100 / TIME_SLICE.as_micros();
            let percent = i32::try_from(percent.clamp(1, 100)).unwrap_or(100);
            rustler::schedule::consume_timeslice(self.env, percent);
        }
    }
}

/// `Shm::set_capacity` for a NIF call.
pub fn set_capacity(
    shm: &Shm,
    on: &OnScheduler<'_>,
    capacity: u64,
) -> std::result::Result<Claim, Refusal> {
    shm.set_capacity_with(on, capacity)
}

/// `Shm::read` for a NIF call, into a buffer made by `alloc` (`None` when it
/// cannot be made).
pub fn read<B: DerefMut<Target = [u8]>>(
    shm: &Shm,
    on: &OnScheduler<'_>,
    len: u64,
    alloc: impl FnOnce(usize) -> Option<B>,
) -> std::result::Result<Progress<B, Reading<B>>, Refusal> {
    shm.read_with(on, len, alloc)
}

/// `Shm::write` for a NIF call.
pub fn write(
    shm: &Shm,
    on: &OnScheduler<'_>,
    data: &[u8],
) -> std::result::Result<Progress<Claim, Writing>, Refusal> {
    shm.write_with(on, data)
}

/// `Shm::split_at` for a NIF call.
pub fn split_at(
    shm: &Shm,
    on: &OnScheduler<'_>,
    position: u64,
) -> std::result::Result<Progress<Parts, Moving>, Refusal> {
    shm.split_at_with(on, position)
}

/// `Shm::append` for a NIF call.
pub fn append(
    shm: &Shm,
    on: &OnScheduler<'_>,
    source: &Shm,
) -> std::result::Result<Progress<Claim, Moving>, Refusal> {
    shm.append_with(on, source)
}

/// `Shm::trim` for a NIF call.
pub fn trim(
    shm: &Shm,
    on: &OnScheduler<'_>,
    bytes: u64,
) -> std::result::Result<Progress<Claim, Moving>, Refusal> {
    shm.trim_with(on, bytes)
}
