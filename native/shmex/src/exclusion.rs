//! Whose turn it is on a segment: calls that change a segment exclude every
//! other call on it, calls that only read it may run together.
//!
//! A call that finds the segment busy either blocks until it is free (the
//! Rust API), or parks: it leaves a wake-up to be run once the segment is
//! free, and gives up at once. NIF calls park, so that no scheduler thread
//! ever waits: the calling process waits for its wake-up message instead,
//! and tries again. Waiting writers go first: readers arriving while a
//! writer waits, wait too.
//!
//! Owns the bookkeeping only; it is kept under its segment's mutex, with
//! what else the segment's entry keeps ([`crate::registry`]).

/// What a call does to a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// Reads it; others may read meanwhile.
    Shared,
    /// Changes it; nothing else may run meanwhile.
    Exclusive,
}

/// Run once the segment a parked call wanted is free.
pub(crate) type Wake = Box<dyn FnOnce() + Send>;

/// A parked call gave up: its wake-up will run when the segment is free.
#[cfg_attr(not(feature = "nif"), allow(dead_code))] // parking is for NIF calls
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Parked;

/// The turns of the calls on one segment.
#[derive(Default)]
pub(crate) struct Turns {
    readers: u32,
    writer: bool,
    /// Writers waiting, blocked or parked: readers let them go first.
    writers_waiting: u32,
    /// Writers among the parked calls (counted until they are woken).
    writers_parked: u32,
    parked: Vec<Wake>,
    blocked: u32,
}

/// What a release leaves to do, once the segment's mutex is let go.
#[must_use]
pub(crate) struct Freed {
    /// The parked calls' wake-ups, to run.
    pub wakes: Vec<Wake>,
    /// Whether blocked calls wait: they are to be notified.
    pub blocked: bool,
}

impl Turns {
    /// Whether a call for `access` may go in now. A blocked writer counts as
    /// waiting itself; writers never wait for one another's turn here.
    pub fn admits(&self, access: Access) -> bool {
        match access {
            Access::Shared => !self.writer && self.writers_waiting == 0,
            Access::Exclusive => !self.writer && self.readers == 0,
        }
    }

    /// Gives a call its turn; it must be admitted.
    pub fn take(&mut self, access: Access) {
        match access {
            Access::Shared => self.readers += 1,
            Access::Exclusive => self.writer = true,
        }
    }

    /// Records a call that will block until admitted.
    pub fn block(&mut self, access: Access) {
        self.blocked += 1;
        self.writers_waiting += u32::from(access == Access::Exclusive);
    }

    /// Records that a blocked call was admitted.
    pub fn unblock(&mut self, access: Access) {
        self.blocked -= 1;
        self.writers_waiting -= u32::from(access == Access::Exclusive);
    }

    /// Records a call that gave up, and its wake-up.
    #[cfg_attr(not(feature = "nif"), allow(dead_code))] // parking is for NIF calls
    pub fn park(&mut self, access: Access, wake: Wake) {
        if access == Access::Exclusive {
            self.writers_waiting += 1;
            self.writers_parked += 1;
        }
        self.parked.push(wake);
    }

    /// Ends a call's turn; what is left to do if the segment is free now:
    /// every parked call tries again (the writers among them stop counting
    /// as waiting until they park again), blocked ones are notified.
    pub fn release(&mut self, access: Access) -> Option<Freed> {
        match access {
            Access::Shared => self.readers -= 1,
            Access::Exclusive => self.writer = false,
        }
        if self.writer || self.readers > 0 {
            return None;
        }
        self.writers_waiting -= self.writers_parked;
        self.writers_parked = 0;
        Some(Freed {
            wakes: std::mem::take(&mut self.parked),
            blocked: self.blocked > 0,
        })
    }
}

impl std::fmt::Debug for Turns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Turns")
            .field("readers", &self.readers)
            .field("writer", &self.writer)
            .field("parked", &self.parked.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nowhere() -> Wake {
        Box::new(|| ())
    }

    #[test]
    fn readers_share_and_writers_exclude() {
        let mut turns = Turns::default();
        for _ in 0..2 {
            assert!(turns.admits(Access::Shared));
            turns.take(Access::Shared);
        }
        assert!(!turns.admits(Access::Exclusive));
        assert!(turns.release(Access::Shared).is_none());
        assert!(turns.release(Access::Shared).is_some());
        turns.take(Access::Exclusive);
        assert!(!turns.admits(Access::Shared) && !turns.admits(Access::Exclusive));
    }

    #[test]
    fn a_waiting_writer_goes_first_and_parked_calls_are_woken_once() {
        let mut turns = Turns::default();
        turns.take(Access::Shared);
        turns.park(Access::Exclusive, nowhere());
        assert!(
            !turns.admits(Access::Shared),
            "readers let the writer go first"
        );
        turns.park(Access::Shared, nowhere());
        let freed = turns.release(Access::Shared).expect("free now");
        assert_eq!(freed.wakes.len(), 2);
        assert!(!freed.blocked);
        // Woken, the calls no longer count as waiting: they try again.
        assert!(turns.admits(Access::Shared));
        assert!(turns.admits(Access::Exclusive));
    }

    #[test]
    fn blocked_writers_count_as_waiting_until_admitted() {
        let mut turns = Turns::default();
        turns.take(Access::Shared);
        turns.block(Access::Exclusive);
        assert!(!turns.admits(Access::Shared));
        let freed = turns.release(Access::Shared).expect("free now");
        assert!(freed.blocked);
        assert!(turns.admits(Access::Exclusive));
        turns.unblock(Access::Exclusive);
        turns.take(Access::Exclusive);
        assert!(!turns.admits(Access::Shared));
    }
}
