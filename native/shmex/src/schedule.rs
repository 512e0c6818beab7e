//! How an operation waits for its segment and how long it may take: the
//! Rust API blocks and takes as long as it takes ([`Blocking`]); NIF calls
//! park instead of waiting and refuse work too long for their scheduler (see
//! the hidden `internal` module).
//!
//! Owns the policy only; the lock is [`crate::exclusion`]'s.

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

    /// Whether work estimated at `cost` may start here.
    fn admit(&self, cost: Cost) -> Result<(), Self::Refusal>;

    /// Locks two different segments; in address order, so that two calls
    /// locking the same two cannot each wait for the other.
    fn lock_pair<'e>(
        &self,
        first: (&'e Entry, Access),
        second: (&'e Entry, Access),
    ) -> Result<(Held<'e>, Held<'e>), Self::Refusal> {
        if std::ptr::from_ref(first.0) <= std::ptr::from_ref(second.0) {
            let held = self.lock(first.0, first.1)?;
            Ok((held, self.lock(second.0, second.1)?))
        } else {
            let held = self.lock(second.0, second.1)?;
            Ok((self.lock(first.0, first.1)?, held))
        }
    }
}

/// Waits for the segment, however long; no time limit.
pub(crate) struct Blocking;

impl Scheduling for Blocking {
    type Refusal = Error;

    fn lock<'e>(&self, entry: &'e Entry, access: Access) -> Result<Held<'e>, Error> {
        Ok(entry.lock(access))
    }

    fn admit(&self, _cost: Cost) -> Result<(), Error> {
        Ok(())
    }
}
