//! The NIF library's scheduling of calls (`shmex_nif`): a call never waits
//! for a busy segment, and on a normal scheduler refuses long work.

use std::ops::DerefMut;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustler::{Encoder, LocalPid, OwnedEnv};

use crate::cost::Cost;
use crate::exclusion::{Access, Wake};
use crate::registry::{Entry, Held};
use crate::schedule::Scheduling;
use crate::{background, Claim, Error, Guard, Shm};

mod atoms {
    rustler::atoms! { shmex_segment_free }
}

/// How long a call on a normal scheduler may take.
const NORMAL_SCHEDULER: Duration = Duration::from_millis(1);

/// A NIF call: on a normal scheduler it refuses work longer than about a
/// millisecond; on either it never waits for a busy segment, it parks, and
/// the calling process waits for `{:shmex_segment_free, token}` instead.
pub struct OnScheduler {
    limit: Option<Duration>,
    caller: LocalPid,
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

impl OnScheduler {
    /// A call by `caller` on a normal scheduler.
    pub fn normal(caller: LocalPid) -> OnScheduler {
        OnScheduler {
            limit: Some(NORMAL_SCHEDULER),
            caller,
        }
    }

    /// A call by `caller` on a dirty scheduler: no time limit.
    pub fn dirty(caller: LocalPid) -> OnScheduler {
        OnScheduler {
            limit: None,
            caller,
        }
    }
}

impl Scheduling for OnScheduler {
    type Refusal = Refusal;

    fn lock<'e>(&self, entry: &'e Entry, access: Access) -> std::result::Result<Held<'e>, Refusal> {
        // Parking needs the background thread to send the wake-up.
        if !background::available() {
            return Ok(entry.lock(access));
        }
        static TOKENS: AtomicU64 = AtomicU64::new(0);
        let caller = self.caller;
        // The token is drawn only for a call that parks.
        let token = std::cell::Cell::new(0);
        let wake = || -> Wake {
            let drawn = TOKENS.fetch_add(1, Ordering::Relaxed);
            token.set(drawn);
            Box::new(move || {
                // The caller may be gone: nothing to tell then.
                let _ = OwnedEnv::new().send_and_clear(&caller, |env| {
                    (atoms::shmex_segment_free(), drawn).encode(env)
                });
            })
        };
        entry
            .lock_or_park(access, wake)
            .map_err(|_parked| Refusal::Wait(token.get()))
    }

    fn admit(&self, cost: Cost) -> std::result::Result<(), Refusal> {
        match self.limit {
            Some(limit) if !cost.within(limit) => Err(Refusal::Reschedule),
            _ => Ok(()),
        }
    }
}

/// `Shm::set_capacity` for a NIF call.
pub fn set_capacity(
    shm: &Shm,
    on: &OnScheduler,
    capacity: u64,
) -> std::result::Result<Claim, Refusal> {
    shm.set_capacity_with(on, capacity)
}

/// `Shm::read` for a NIF call, into a buffer made by `alloc` (`None` when it
/// cannot be made).
pub fn read<B: DerefMut<Target = [u8]>>(
    shm: &Shm,
    on: &OnScheduler,
    len: u64,
    alloc: impl FnOnce(usize) -> Option<B>,
) -> std::result::Result<B, Refusal> {
    shm.read_with(on, len, alloc)
}

/// `Shm::write` for a NIF call.
pub fn write(shm: &Shm, on: &OnScheduler, data: &[u8]) -> std::result::Result<Claim, Refusal> {
    shm.write_with(on, data)
}

/// `Shm::split_at` for a NIF call.
pub fn split_at(
    shm: &Shm,
    on: &OnScheduler,
    position: u64,
) -> std::result::Result<(Claim, Guard, Claim), Refusal> {
    shm.split_at_with(on, position)
}

/// `Shm::append` for a NIF call.
pub fn append(shm: &Shm, on: &OnScheduler, source: &Shm) -> std::result::Result<Claim, Refusal> {
    shm.append_with(on, source)
}

/// `Shm::trim` for a NIF call.
pub fn trim(shm: &Shm, on: &OnScheduler, bytes: u64) -> std::result::Result<Claim, Refusal> {
    shm.trim_with(on, bytes)
}
