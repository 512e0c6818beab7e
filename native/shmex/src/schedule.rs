//! How an operation waits for its segment and how long it may take: the
//! Rust API blocks and takes as long as it takes ([`Blocking`]); NIF calls
//! park instead of waiting and refuse work too long for their scheduler (see
//! the hidden `internal` module).
//!
//! Owns the policy only; the lock is [`crate::exclusion`]'s.

use std::time::Duration;

use crate::cost::Cost;
use crate::error::Error;
use crate::exclusion::Access;
use crate::registry::Entry;
use crate::registry::Held;

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

/// Waits for the segment, however long; no time limit.
pub(crate) struct Blocking;

impl Scheduling for Blocking {
    type Refusal = Error;

    fn lock<'e>(&self, entry: &'e Entry, access: Access) -> Result<Held<'e>, Error> {
        Ok(entry.lock(access))
    }

    fn admit(&self, _cost: Cost, _holds: &[&Held<'_>]) -> Result<(), Error> {
        Ok(())
    }
}
