//! Whose turn it is on a segment: calls that change a segment exclude every
//! other call on it, calls that only read it may run together, and turns are
//! given first come, first served.
//!
//! A call that finds the segment free, and nobody waiting for it, goes in.
//! Otherwise it joins the queue, behind every call that was waiting before
//! it. When the segment becomes free, the turn goes to the call at the head
//! of the queue, and to the readers right behind it if that is a reader: a
//! call never waits for one that came after it, so nobody waits for more
//! than one turn of each call ahead of it.
//!
//! A call that waits either blocks until its turn is given (the Rust API),
//! or parks: it leaves a wake-up to be run once its turn is given, and gives
//! up at once. NIF calls park, so that no scheduler thread ever waits: the
//! calling process waits for its wake-up message instead, and calls again;
//! the call recognizes the turn given to its process (its `key`) and takes
//! it up. A turn given to a process that does not come back for it within
//! [`LEASE`] (it was killed meanwhile) is taken back and passed on.
//!
//! Owns the bookkeeping only; it is kept under its segment's mutex, with
//! what else the segment's entry keeps ([`crate::registry`]), except who
//! holds the segment ([`Holders`]): a call ending its turn while nobody
//! waits changes that alone, with one atomic operation and no mutex.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a turn given to a parked call waits for the call to come back.
pub(crate) const LEASE: Duration = Duration::from_secs(1);

/// How long a turn given to a process waits for it while a thread is
/// blocked behind it (a C or Rust call, which holds its scheduler as it
/// waits): a woken process may be queued on that very scheduler, and a call
/// moving to a dirty scheduler may find every dirty scheduler held by such
/// threads, so neither would come back before a longer lease ran out. A
/// process that comes back later has its call queued anew, nothing having
/// changed yet.
pub(crate) const LEASE_BEFORE_A_THREAD: Duration = Duration::from_millis(10);

/// What a call does to a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// Reads it; others may read meanwhile.
    Shared,
    /// Changes it; nothing else may run meanwhile.
    Exclusive,
}

/// Run once the turn of a parked call is given: it tells the caller.
pub(crate) type Wake = Box<dyn FnOnce() + Send>;

/// What passing turns on leaves to do once the segment's mutex is let go:
/// the wake-ups of the parked calls given their turn, to run, and whether
/// blocked threads were given theirs (they are to be notified).
#[derive(Default)]
#[must_use]
pub(crate) struct Freed {
    pub wakes: Vec<Wake>,
    pub threads: bool,
}

/// A parked call's place in the queue: its wake-up will say this ticket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ticket(pub u64);

/// Who waits: a blocked thread, or a parked call of the process `key`.
enum Waiter {
    Thread,
    Process { key: u64, wake: Wake },
}

struct Waiting {
    ticket: Ticket,
    access: Access,
    waiter: Waiter,
}

/// A turn given to a waiting call, not yet taken up.
#[derive(Debug)]
struct Given {
    ticket: Ticket,
    access: Access,
    /// The parked call's process, and when the turn was given; `None` for a
    /// blocked thread.
    process: Option<(u64, Instant)>,
}

/// Who holds a segment, in one word: how many readers, whether a writer,
/// and whether calls wait in the queue. Turns are taken only under the
/// segment's mutex; a turn ends with one atomic operation, which says
/// whether calls wait (only then is the mutex taken, to pass turns on).
#[derive(Debug, Default)]
pub(crate) struct Holders(AtomicU32);

/// The writer's bit in [`Holders`].
const WRITER: u32 = 1 << 31;
/// Set while calls wait in the queue (set and cleared under the mutex).
const WAITING: u32 = 1 << 30;
/// The readers' count in [`Holders`].
const READERS: u32 = WAITING - 1;

impl Holders {
    /// Ends a turn for `access`; whether calls wait, to be given their
    /// turns ([`Turns::pass_on_into`], under the mutex).
    pub fn leave(&self, access: Access) -> bool {
        let before = match access {
            Access::Shared => self.0.fetch_sub(1, Ordering::AcqRel),
            Access::Exclusive => self.0.fetch_and(!WRITER, Ordering::AcqRel),
        };
        before & WAITING != 0
    }

    /// Counts a turn for `access`, given under the mutex.
    fn take(&self, access: Access) {
        match access {
            Access::Shared => self.0.fetch_add(1, Ordering::AcqRel),
            Access::Exclusive => self.0.fetch_or(WRITER, Ordering::AcqRel),
        };
    }

    /// Takes a turn for `access` if the holders allow it, else marks that
    /// a call waits: in one step, so that a turn ending meanwhile either
    /// lets this call in or sees it waiting.
    fn take_or_wait(&self, access: Access) -> bool {
        let mut now = self.0.load(Ordering::Acquire);
        loop {
            let (next, taken) = if compatible(now, access) {
                let next = match access {
                    Access::Shared => now + 1,
                    Access::Exclusive => now | WRITER,
                };
                (next, true)
            } else {
                (now | WAITING, false)
            };
            match self
                .0
                .compare_exchange_weak(now, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return taken,
                Err(changed) => now = changed,
            }
        }
    }

    /// Whether the holders let a call for `access` in.
    fn admit(&self, access: Access) -> bool {
        compatible(self.0.load(Ordering::Acquire), access)
    }

    fn set_waiting(&self, waiting: bool) {
        if waiting {
            self.0.fetch_or(WAITING, Ordering::AcqRel);
        } else {
            self.0.fetch_and(!WAITING, Ordering::AcqRel);
        }
    }
}

/// Whether holders `word` let a call for `access` in.
fn compatible(word: u32, access: Access) -> bool {
    match access {
        Access::Shared => word & WRITER == 0,
        Access::Exclusive => word & (WRITER | READERS) == 0,
    }
}

/// The turns of the calls on one segment.
#[derive(Default)]
pub(crate) struct Turns {
    holders: Arc<Holders>,
    queue: VecDeque<Waiting>,
    given: Vec<Given>,
}

/// How a call with a key may go in.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Entered {
    /// It has its turn.
    Now,
    /// It waits in the queue with this ticket.
    Queued(Ticket),
}

impl Turns {
    /// Who holds the segment: shared with the entry, so that a turn can end
    /// without the mutex ([`Holders::leave`]).
    pub fn holders(&self) -> &Arc<Holders> {
        &self.holders
    }

    /// Whether a call for `access` may go in now: nobody waits, and nobody
    /// holds the segment in a way that excludes it.
    #[cfg(test)]
    pub fn admits(&self, access: Access) -> bool {
        self.queue.is_empty() && self.holders.admit(access)
    }

    /// Takes a turn for `access` if the call may go in now: nobody waits,
    /// and nobody holds the segment in a way that excludes it. Otherwise
    /// the call is to wait in the queue ([`Turns::block`], or as
    /// [`Turns::enter`] does).
    pub fn try_take(&mut self, access: Access) -> bool {
        if !self.queue.is_empty() {
            return false;
        }
        self.holders.take_or_wait(access)
    }

    /// Gives a call its turn; it must be admitted.
    pub fn take(&mut self, access: Access) {
        self.holders.take(access);
    }

    /// A turn for the call of process `key` (which may have called before,
    /// been queued and woken): the turn given to it, else its place in the
    /// queue, else its turn now if it is admitted, else a new place at the
    /// end of the queue, with the wake-up `wake` makes.
    ///
    /// Turns given to processes that did not come for them within
    /// [`LEASE`] are passed on first; their wake-ups are left in `freed`.
    pub fn enter(
        &mut self,
        access: Access,
        key: impl Fn() -> u64,
        ticket: impl FnOnce() -> Ticket,
        wake: impl FnOnce(Ticket) -> Wake,
        freed: &mut Freed,
    ) -> Entered {
        let mut known = None;
        if !self.given.is_empty() || !self.queue.is_empty() {
            let key = *known.insert(key());
            self.take_back_stale(false, freed);
            if let Some(at) = self.given_to(key) {
                let given = self.given.swap_remove(at);
                if given.access == access {
                    return Entered::Now;
                }
                // Not the call the turn was given for (a new process under a
                // dead one's identity): the turn is passed on.
                self.release_into(given.access, freed);
            }
            if let Some(waiting) = self.queue.iter().find(|w| w.is_process(key)) {
                return Entered::Queued(waiting.ticket);
            }
        }
        if self.try_take(access) {
            return Entered::Now;
        }
        let ticket = ticket();
        self.holders.set_waiting(true);
        self.queue.push_back(Waiting {
            ticket,
            access,
            waiter: Waiter::Process {
                key: known.unwrap_or_else(key),
                wake: wake(ticket),
            },
        });
        Entered::Queued(ticket)
    }

    /// Takes the place of a blocked thread in the queue.
    pub fn block(&mut self, access: Access, ticket: Ticket) {
        self.holders.set_waiting(true);
        self.queue.push_back(Waiting {
            ticket,
            access,
            waiter: Waiter::Thread,
        });
    }

    /// Turns a turn taken back into one given to the process `key`, which
    /// takes it up when it calls again (within [`LEASE`]).
    #[cfg_attr(not(feature = "nif"), allow(dead_code))] // for NIF calls
    pub fn give_back(&mut self, access: Access, key: u64) {
        self.given.push(Given {
            ticket: Ticket(0),
            access,
            process: Some((key, Instant::now())),
        });
    }

    /// Whether a blocked thread waits for a turn.
    #[cfg_attr(not(feature = "nif"), allow(dead_code))] // steps are for NIF calls
    pub fn threads_wait(&self) -> bool {
        self.queue
            .iter()
            .any(|waiting| matches!(waiting.waiter, Waiter::Thread))
    }

    /// Whether the blocked thread holding `ticket` has been given its turn
    /// (it then has it).
    pub fn given_to_thread(&mut self, ticket: Ticket) -> bool {
        match self.given.iter().position(|given| given.ticket == ticket) {
            Some(at) => {
                self.given.swap_remove(at);
                true
            }
            None => false,
        }
    }

    /// Gives up what the process `key` has of this segment: the turn given
    /// to it, or its place in the queue.
    pub fn abandon(&mut self, key: u64, freed: &mut Freed) {
        if let Some(at) = self.given_to(key) {
            let given = self.given.swap_remove(at);
            self.release_into(given.access, freed);
        }
        if let Some(at) = self.queue.iter().position(|w| w.is_process(key)) {
            self.queue.remove(at);
            self.give_turns(freed);
        }
    }

    /// Passes on the turns given to processes that did not come back for
    /// them within their lease: [`LEASE`], or [`LEASE_BEFORE_A_THREAD`] when
    /// a thread waits behind them.
    pub fn take_back_stale(&mut self, thread_waits: bool, freed: &mut Freed) {
        let lease = if thread_waits {
            LEASE_BEFORE_A_THREAD
        } else {
            LEASE
        };
        let stale = |given: &Given| given.process.is_some_and(|(_, at)| at.elapsed() >= lease);
        while let Some(at) = self.given.iter().position(stale) {
            let given = self.given.swap_remove(at);
            self.release_into(given.access, freed);
        }
    }

    /// Ends a call's turn; what the calls whose turn it now is need is left
    /// in `freed`.
    pub fn release_into(&mut self, access: Access, freed: &mut Freed) {
        self.holders.leave(access);
        self.give_turns(freed);
    }

    /// Gives the waiting calls their turns after a turn ended without the
    /// mutex ([`Holders::leave`] said calls wait).
    pub fn pass_on_into(&mut self, freed: &mut Freed) {
        self.give_turns(freed);
    }

    /// Gives the segment to the head of the queue, and the readers right
    /// behind it if it is a reader, as far as it is free for them.
    fn give_turns(&mut self, freed: &mut Freed) {
        while let Some(head) = self.queue.front() {
            if !self.holders.admit(head.access) {
                break;
            }
            let Some(waiting) = self.queue.pop_front() else {
                break;
            };
            self.take(waiting.access);
            let process = match waiting.waiter {
                Waiter::Thread => {
                    freed.threads = true;
                    None
                }
                Waiter::Process { key, wake } => {
                    freed.wakes.push(wake);
                    Some((key, Instant::now()))
                }
            };
            self.given.push(Given {
                ticket: waiting.ticket,
                access: waiting.access,
                process,
            });
            if waiting.access == Access::Exclusive {
                break;
            }
        }
        if self.queue.is_empty() {
            self.holders.set_waiting(false);
        }
    }

    fn given_to(&self, key: u64) -> Option<usize> {
        self.given
            .iter()
            .position(|given| given.process.is_some_and(|(k, _)| k == key))
    }
}

impl Waiting {
    fn is_process(&self, key: u64) -> bool {
        matches!(self.waiter, Waiter::Process { key: k, .. } if k == key)
    }
}

impl std::fmt::Debug for Turns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Turns")
            .field("holders", &self.holders)
            .field("waiting", &self.queue.len())
            .field("given", &self.given)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    /// Enters for process `key`; its wake-up counts into `woken`.
    fn enter(turns: &mut Turns, access: Access, key: u64, woken: &Arc<AtomicU64>) -> Entered {
        let woken = Arc::clone(woken);
        let mut freed = Freed::default();
        let entered = turns.enter(
            access,
            || key,
            || Ticket(key),
            move |_| {
                Box::new(move || {
                    woken.fetch_add(1, Ordering::SeqCst);
                })
            },
            &mut freed,
        );
        freed.wakes.into_iter().for_each(|wake| wake());
        entered
    }

    fn release(turns: &mut Turns, access: Access) {
        let mut freed = Freed::default();
        turns.release_into(access, &mut freed);
        freed.wakes.into_iter().for_each(|wake| wake());
    }

    #[test]
    fn readers_share_and_writers_exclude() {
        let mut turns = Turns::default();
        for _ in 0..2 {
            assert!(turns.admits(Access::Shared));
            turns.take(Access::Shared);
        }
        assert!(!turns.admits(Access::Exclusive));
        release(&mut turns, Access::Shared);
        release(&mut turns, Access::Shared);
        turns.take(Access::Exclusive);
        assert!(!turns.admits(Access::Shared) && !turns.admits(Access::Exclusive));
    }

    #[test]
    fn turns_go_in_arrival_order_readers_together() {
        let woken = Arc::new(AtomicU64::new(0));
        let mut turns = Turns::default();
        assert_eq!(enter(&mut turns, Access::Shared, 1, &woken), Entered::Now);
        // A writer waits for the reader; readers after it wait for the writer,
        // though the segment is only being read.
        let writer = enter(&mut turns, Access::Exclusive, 2, &woken);
        assert_eq!(writer, Entered::Queued(Ticket(2)));
        assert_eq!(
            enter(&mut turns, Access::Shared, 3, &woken),
            Entered::Queued(Ticket(3))
        );
        assert_eq!(
            enter(&mut turns, Access::Shared, 4, &woken),
            Entered::Queued(Ticket(4))
        );
        // Calling again keeps one's place.
        assert_eq!(enter(&mut turns, Access::Exclusive, 2, &woken), writer);
        release(&mut turns, Access::Shared);
        assert_eq!(woken.load(Ordering::SeqCst), 1, "only the writer");
        assert_eq!(
            enter(&mut turns, Access::Shared, 3, &woken),
            Entered::Queued(Ticket(3))
        );
        assert_eq!(
            enter(&mut turns, Access::Exclusive, 2, &woken),
            Entered::Now
        );
        release(&mut turns, Access::Exclusive);
        assert_eq!(woken.load(Ordering::SeqCst), 3, "both readers at once");
        assert_eq!(enter(&mut turns, Access::Shared, 4, &woken), Entered::Now);
        assert_eq!(enter(&mut turns, Access::Shared, 3, &woken), Entered::Now);
        assert!(turns.queue.is_empty() && turns.given.is_empty());
    }

    #[test]
    fn a_turn_nobody_comes_for_is_passed_on() {
        let woken = Arc::new(AtomicU64::new(0));
        let mut turns = Turns::default();
        turns.take(Access::Exclusive);
        enter(&mut turns, Access::Exclusive, 1, &woken);
        enter(&mut turns, Access::Exclusive, 2, &woken);
        release(&mut turns, Access::Exclusive);
        // Process 1 was given the turn but is gone.
        turns.given[0].process = Some((1, Instant::now() - LEASE));
        assert_eq!(
            enter(&mut turns, Access::Exclusive, 2, &woken),
            Entered::Now
        );
        assert_eq!(woken.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_blocked_thread_waits_for_a_process_turn_only_briefly() {
        let woken = Arc::new(AtomicU64::new(0));
        let mut turns = Turns::default();
        turns.take(Access::Exclusive);
        enter(&mut turns, Access::Exclusive, 1, &woken);
        turns.block(Access::Exclusive, Ticket(99));
        release(&mut turns, Access::Exclusive);
        // Process 1 was given the turn a little while ago: within its lease,
        // but longer than a blocked thread waits.
        turns.given[0].process = Some((1, Instant::now() - LEASE_BEFORE_A_THREAD));
        let mut freed = Freed::default();
        turns.take_back_stale(false, &mut freed);
        assert!(!turns.given_to_thread(Ticket(99)));
        turns.take_back_stale(true, &mut freed);
        assert!(freed.threads);
        assert!(turns.given_to_thread(Ticket(99)));
    }

    #[test]
    fn a_call_moving_to_a_dirty_scheduler_waits_briefly_for_a_thread_too() {
        let mut turns = Turns::default();
        turns.take(Access::Exclusive);
        turns.block(Access::Exclusive, Ticket(99));
        // The call holding the segment moves: its turn is handed back, and
        // every dirty scheduler may be held by threads like this one.
        turns.give_back(Access::Exclusive, 1);
        turns.given[0].process = Some((1, Instant::now() - LEASE_BEFORE_A_THREAD));
        let mut freed = Freed::default();
        turns.take_back_stale(false, &mut freed);
        assert!(!freed.threads && turns.given.len() == 1);
        turns.take_back_stale(true, &mut freed);
        assert!(freed.threads && turns.given_to_thread(Ticket(99)));
    }

    #[test]
    fn abandoning_passes_the_turn_on() {
        let woken = Arc::new(AtomicU64::new(0));
        let mut turns = Turns::default();
        turns.take(Access::Shared);
        enter(&mut turns, Access::Exclusive, 1, &woken);
        enter(&mut turns, Access::Shared, 2, &woken);
        let mut freed = Freed::default();
        turns.abandon(1, &mut freed);
        assert_eq!(freed.wakes.len(), 1, "the reader behind it goes in");
    }

    #[test]
    fn blocked_threads_are_given_their_turn_in_order() {
        let mut turns = Turns::default();
        turns.take(Access::Shared);
        turns.block(Access::Exclusive, Ticket(1));
        turns.block(Access::Shared, Ticket(2));
        assert!(!turns.admits(Access::Shared));
        let mut freed = Freed::default();
        turns.release_into(Access::Shared, &mut freed);
        assert!(freed.threads);
        assert!(!turns.given_to_thread(Ticket(2)));
        assert!(turns.given_to_thread(Ticket(1)));
        turns.release_into(Access::Exclusive, &mut freed);
        assert!(turns.given_to_thread(Ticket(2)));
        assert!(freed.wakes.is_empty());
    }

    #[test]
    fn a_turn_ending_as_a_call_queues_either_lets_it_in_or_sees_it() {
        let mut turns = Turns::default();
        let holders = Arc::clone(turns.holders());
        assert!(turns.try_take(Access::Exclusive));
        // Without anyone waiting, a turn ends without the mutex.
        assert!(!holders.leave(Access::Exclusive));
        assert!(turns.try_take(Access::Shared));
        // A writer finds a reader: it is marked waiting in the same step.
        assert!(!turns.try_take(Access::Exclusive));
        turns.block(Access::Exclusive, Ticket(1));
        assert!(
            holders.leave(Access::Shared),
            "the reader sees the writer wait"
        );
        let mut freed = Freed::default();
        turns.pass_on_into(&mut freed);
        assert!(freed.threads && turns.given_to_thread(Ticket(1)));
        // Nobody waits any more: the writer's turn ends alone.
        assert!(!holders.leave(Access::Exclusive));
        assert!(turns.admits(Access::Exclusive));
    }

    #[test]
    fn a_call_after_the_queue_waits_though_the_holders_would_let_it_in() {
        let mut turns = Turns::default();
        turns.take(Access::Shared);
        turns.block(Access::Exclusive, Ticket(1));
        // Only a reader holds the segment, but a writer came first.
        assert!(!turns.try_take(Access::Shared));
    }
}
