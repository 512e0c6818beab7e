//! How an operation waits for its segment and how long it may take: the
//! Rust API blocks and takes as long as it takes ([`Blocking`]); NIF calls
//! park instead of waiting and refuse work too long for their scheduler (see
//! the hidden `internal` module).
//!
//! Owns the policy only; the lock is [`crate::exclusion`]'s.
//!
//! # Steps of long copies
//!
//! Where copies go in steps (NIF calls on a dirty scheduler), each step
//! is rescheduled behind the work that queued meanwhile, and the dirty
//! schedulers' queue is first in, first out: every copy gets one step per
//! round. Steps are shorter for copies that have run long
//! ([`step_budget`]), least attained service first, as a multi-level
//! feedback queue does: a copy's first 4 ms go in steps of a whole time
//! slice, the next 12 ms in half slices, the rest in quarter slices. So a
//! short copy queued behind long ones gets most of a scheduler while it is
//! young (with five old copies on two schedulers, a young one's step
//! comes after about 0.6 ms, not 2.5 ms), and a long copy alone loses only
//! the cost of rescheduling itself every quarter of a millisecond (a few
//! microseconds).
//!
//! Between its steps a copy keeps its turns. A call that waits for one of
//! them on its own thread (a C call, or a Rust one: [`Blocking`]) runs the
//! rest of the copy itself, rather than hold its thread while the copy
//! waits for a dirty scheduler (perhaps one such calls hold): see
//! [`crate::registry`].

use std::time::Duration;

use crate::cost::Cost;
use crate::error::Error;
use crate::exclusion::Access;
use crate::registry::Entry;
use crate::registry::Held;

/// How long a copy has run when its steps shrink to half a time slice,
/// and when to a quarter.
const YOUNG: Duration = Duration::from_millis(4);
const MIDDLE_AGED: Duration = Duration::from_millis(16);

/// How long the next step of a copy that has run for `worked` may take,
/// its steps being of `slice` while it is young: see the module docs.
pub(crate) fn step_budget(slice: Duration, worked: Duration) -> Duration {
    if worked < YOUNG {
        slice
    } else if worked < MIDDLE_AGED {
        slice / 2
    } else {
        slice / 4
    }
}

/// How an operation waits and how long it may take.
pub(crate) trait Scheduling {
    /// Why an operation stopped short: an error, or (on a scheduler) a
    /// reason to come back later.
    type Refusal: From<Error>;

    /// Locks `entry`'s segment for `access`.
    fn lock<'e>(&self, entry: &'e Entry, access: Access) -> Result<Held<'e>, Self::Refusal>;

    /// Whether work estimated at `cost` may start here, with the turns it
    /// `holds`. Work refused here keeps them for this call, to start
    /// elsewhere (a NIF call moving to a dirty scheduler keeps its place).
    fn admit(&self, cost: Cost, holds: &[&Held<'_>]) -> Result<(), Self::Refusal>;

    /// How long one step of a long copy may take, when long copies go in
    /// steps (and the caller continues them); `None`: copies run whole.
    fn step(&self) -> Option<Duration> {
        None
    }

    /// Gives up what this call, stopped short, has of `entry`: the turn
    /// given to it, or its place in the queue.
    fn abandon(&self, _entry: &Entry) {}

    /// Locks two different segments; in address order, so that two calls
    /// locking the same two cannot each wait for the other. A call that
    /// must wait for the first gives up what it has of the second.
    fn lock_pair<'e>(
        &self,
        first: (&'e Entry, Access),
        second: (&'e Entry, Access),
    ) -> Result<(Held<'e>, Held<'e>), Self::Refusal> {
        let in_order = std::ptr::from_ref(first.0) <= std::ptr::from_ref(second.0);
        let (low, high) = if in_order {
            (first, second)
        } else {
            (second, first)
        };
        let low_held = self
            .lock(low.0, low.1)
            .inspect_err(|_| self.abandon(high.0))?;
        let high_held = self.lock(high.0, high.1)?;
        Ok(if in_order {
            (low_held, high_held)
        } else {
            (high_held, low_held)
        })
    }
}

/// Waits for the segment, however long; no time limit. (A call nested in a
/// turn its thread holds on the segment does not wait: see
/// [`crate::registry`].)
pub(crate) struct Blocking;

impl Scheduling for Blocking {
    type Refusal = Error;

    fn lock<'e>(&self, entry: &'e Entry, access: Access) -> Result<Held<'e>, Error> {
        entry.lock(access)
    }

    fn admit(&self, _cost: Cost, _holds: &[&Held<'_>]) -> Result<(), Error> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLICE: Duration = Duration::from_millis(1);

    #[test]
    fn steps_shrink_as_a_copy_runs_long() {
        assert_eq!(step_budget(SLICE, Duration::ZERO), SLICE);
        assert_eq!(step_budget(SLICE, Duration::from_millis(3)), SLICE);
        assert_eq!(step_budget(SLICE, Duration::from_millis(4)), SLICE / 2);
        assert_eq!(step_budget(SLICE, Duration::from_millis(16)), SLICE / 4);
        assert_eq!(step_budget(SLICE, Duration::from_secs(3600)), SLICE / 4);
    }
}
