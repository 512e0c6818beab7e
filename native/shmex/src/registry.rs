//! One segment, one entry: every handle of a segment in this process (its
//! guard, copies of its struct with or without the guard, a second guard,
//! another spelling of its name) reaches the same [`Entry`], which holds the
//! segment's turns ([`crate::exclusion`]) and what is kept open of it
//! between calls, under one mutex: a call takes it once to start, and ends
//! its turn without it (one atomic operation) unless calls wait.
//!
//! The name is the truth, as in Shmex 0.5.1: a call works on the segment the
//! name leads to when the call starts. A descriptor kept open is used only
//! while the name still leads to it; once another process removed the name
//! (and perhaps gave it to a new segment), the call opens the name anew.
//! So behaviour does not depend on whether a segment was kept open.
//!
//! # Helping a copy that waits between steps
//!
//! Work that goes on in steps (a NIF that reschedules itself on a dirty
//! scheduler) keeps its turns between steps ([`Turn`]), while it waits in the
//! VM's run queue. A call that waits for its turn on its own thread (C and
//! Rust calls, [`Entry::lock`]) holds that thread meanwhile: were such calls
//! to fill every dirty scheduler, waiting behind a copy that needs one of
//! them for its next step, nothing would ever run again. So work that waits
//! between steps leaves a [`Finish`] with its turns ([`Turn::yield_to`]),
//! and takes it back when its next step starts ([`Turn::resume`]); a thread
//! blocked in [`Entry::lock`] behind such a turn takes it and runs the rest
//! of the work itself, at once (its own turn cannot come before that work
//! ends, and its thread has nothing else to do), outside the entry's mutex.
//! The work ends its turns as it ends, and the thread goes on waiting for
//! its own: the calls queued before it still go first. The entry holds the
//! [`Finish`] weakly: work dropped between steps (its process killed) ends
//! its turns as it is dropped, not when a thread next comes by.
//!
//! # Calls nested in a turn of their own thread
//!
//! A call that blocks ([`Entry::lock`]) may come from inside another call's
//! turn on the same segment, on the same thread: a Rust NIF's `Shm::data`
//! closure reading the segment again. Queued first come, first served, it
//! would wait behind any call queued meanwhile, which waits for the turn
//! this very thread holds: for ever. So each thread knows the turns it
//! holds through [`Entry::lock`] (`HELD_HERE`), and a call nested in one of
//! them does not queue: inside an exclusive turn it runs in that turn; inside
//! a shared one, a reader takes another shared turn at once, and a writer,
//! which could never be let in, is refused with `EDEADLK`. A thread that
//! holds the entry so never waits for it, and never helps work waiting
//! between steps there.
//!
//! Owns the table of entries and what each keeps; knows nothing of claims or
//! guards.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::ops::{Deref, DerefMut};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard, PoisonError, Weak};

use crate::background;
use crate::budget::Slot;
use crate::cost;
use crate::error::{Error, Result, Syscall};
use crate::exclusion::{
    Access, Entered, Freed, Holders, Ticket, Turns, Wake, LEASE_BEFORE_A_THREAD,
};
use crate::mapping::Mapping;
use crate::name::ShmName;
use crate::segment::{Open, Segment};
use crate::sys::Identity;
use nix::errno::Errno;

/// After this many calls a kept segment is mapped: setting up a mapping
/// costs ~10 us and touching a page through it the first time ~1.4 us, where
/// `pread`/`pwrite` cost ~0.5 us per call and ~0.2 us per page. So a mapping
/// pays for itself only over repeated access.
const MAP_AFTER: u32 = 2;

const SHARDS: usize = 16;

thread_local! {
    /// The turns this thread holds through [`Entry::lock`], innermost last:
    /// the entry's address, and the turn's access.
    static HELD_HERE: RefCell<Vec<(usize, Access)>> = const { RefCell::new(Vec::new()) };
}

/// How this thread holds `entry` through [`Entry::lock`], if it does:
/// exclusively if one of its turns there is exclusive.
fn held_here(entry: &Entry) -> Option<Access> {
    let address = std::ptr::from_ref(entry) as usize;
    HELD_HERE.with_borrow(|held| {
        held.iter()
            .filter(|(at, _)| *at == address)
            .map(|&(_, access)| access)
            .max_by_key(|access| *access == Access::Exclusive)
    })
}

/// Notes (`held`) or forgets a turn for `access` on `entry` this thread
/// holds through [`Entry::lock`].
fn note_held_here(entry: &Entry, access: Access, held: bool) {
    let record = (std::ptr::from_ref(entry) as usize, access);
    HELD_HERE.with_borrow_mut(|list| {
        if held {
            list.push(record);
        } else if let Some(at) = list.iter().rposition(|noted| *noted == record) {
            list.remove(at);
        }
    });
}

/// Tickets of waiting calls, unique in this copy of the crate.
fn next_ticket() -> Ticket {
    static TICKETS: AtomicU64 = AtomicU64::new(1);
    Ticket(TICKETS.fetch_add(1, Ordering::Relaxed))
}

/// The entries of the segments in use, by name.
struct Table {
    shards: [Mutex<HashMap<ShmName, Weak<Entry>>>; SHARDS],
    hasher: RandomState,
}

static TABLE: LazyLock<Table> = LazyLock::new(|| Table {
    shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
    hasher: RandomState::new(),
});

/// A segment in use in this process.
#[derive(Debug)]
pub(crate) struct Entry {
    name: ShmName,
    /// Who holds the segment (its turns' [`Holders`], shared with them): a
    /// turn ends there, without the mutex, unless calls wait.
    holders: Arc<Holders>,
    state: Mutex<State>,
    released: Condvar,
    /// How many guards hold the entry: only then is a segment kept open,
    /// for the calls to come.
    guards: AtomicUsize,
}

#[derive(Debug, Default)]
struct State {
    turns: Turns,
    kept: Option<Kept>,
    /// How many guards hold each file the name led to when it was guarded:
    /// the last guard of a file unlinks it, whatever guards the name's
    /// other files have.
    guarded: Vec<(Identity, usize)>,
    /// The work holding turns here that waits between two of its steps,
    /// for a blocked thread to finish.
    yielded: Vec<Yielded>,
}

/// Work that holds turns between its steps (see `Turn::yield_to`), run to
/// its end by a thread that waits behind one of them: see the `registry`
/// module's docs.
pub trait Finish: Send + Sync {
    /// Runs the rest of the work on the calling thread, and ends its turns;
    /// nothing if it has ended, or another thread runs it. Leaves what the
    /// work made, or its error, for whoever waits for it. Must not panic:
    /// a panic would leave nothing for whoever waits (work finished as
    /// [`Stepped`] leaves its panic).
    fn finish(&self);
}

/// Work that goes on in steps, finished as [`Finish`] in three parts: the
/// rest of the work is taken out, run to its end, and what it came to left
/// for whoever waits for it. A panic while the rest runs is the work's end
/// ([`panicked`](Self::panicked)), left as any other: whoever waits is told.
pub trait Stepped: Send + Sync {
    /// The rest of the work, taken out for the thread that finishes it.
    type Rest;
    /// What the work came to.
    type Ended;

    /// Takes the rest of the work out, for the calling thread to run:
    /// `None` if it has ended, or another thread runs it. Must not panic.
    fn take(&self) -> Option<Self::Rest>;

    /// Runs the rest of the work to its end, ending its turns.
    fn run(rest: Self::Rest) -> Self::Ended;

    /// What work whose rest panicked came to.
    fn panicked() -> Self::Ended;

    /// Leaves what the work came to for whoever waits for it. Must not
    /// panic.
    fn leave(&self, ended: Self::Ended);
}

impl<S: Stepped> Finish for S {
    fn finish(&self) {
        let Some(rest) = self.take() else {
            return;
        };
        let ended = catch_unwind(AssertUnwindSafe(|| S::run(rest)));
        self.leave(ended.unwrap_or_else(|_| S::panicked()));
    }
}

/// The work holding the turn `turn` waits between steps; `finish` runs the
/// rest of it.
struct Yielded {
    turn: Ticket,
    finish: Weak<dyn Finish>,
}

impl std::fmt::Debug for Yielded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Yielded").field(&self.turn).finish()
    }
}

/// A segment kept open between calls, with the budget slot that allows it.
#[derive(Debug)]
struct Kept {
    open: Arc<Open>,
    mapping: Option<Arc<Mapping>>,
    calls: u32,
    _slot: Slot,
}

/// What was kept open of a segment when a turn began: the open segment, its
/// mapping, whether it is busy enough to copy through the mapping.
type Snapshot = Option<(Arc<Open>, Option<Arc<Mapping>>, bool)>;

/// A call's turn on a segment, ended when dropped (unless kept as a
/// [`Turn`]); it knows what was kept open of the segment when it began.
#[derive(Debug)]
pub(crate) struct Held<'e> {
    entry: &'e Entry,
    /// `None` once the turn is kept past the call, or for a call inside
    /// an exclusive turn of its thread: it ends nothing.
    access: Option<Access>,
    /// Noted in `HELD_HERE`: taken by [`Entry::lock`], not kept.
    on_thread: bool,
    /// The process the turn is handed back to when dropped, instead of
    /// ending: the call goes on elsewhere and takes it up again.
    hand_to: Cell<Option<u64>>,
    /// What was kept when the turn began, until the call's segment takes it
    /// (`None` then).
    kept: RefCell<Option<Snapshot>>,
}

/// A turn kept past the call that took it, by work that goes on in steps
/// (a NIF that reschedules itself); ended when dropped.
#[derive(Debug)]
pub(crate) struct Turn {
    entry: Arc<Entry>,
    /// `None` for a call inside another turn of its thread: it ends nothing.
    access: Option<Access>,
    /// Which turn it is, among the entry's [`Yielded`].
    id: Ticket,
}

/// The entry of the segment `name`, made if there is none.
pub(crate) fn entry(name: &ShmName) -> Arc<Entry> {
    let mut shard = TABLE.shard(name);
    if let Some(entry) = shard.get(name).and_then(Weak::upgrade) {
        return entry;
    }
    let state = State::default();
    let entry = Arc::new(Entry {
        name: name.clone(),
        holders: Arc::clone(state.turns.holders()),
        state: Mutex::new(state),
        released: Condvar::new(),
        guards: AtomicUsize::new(0),
    });
    shard.insert(name.clone(), Arc::downgrade(&entry));
    entry
}

impl Table {
    fn shard(&self, name: &ShmName) -> MutexGuard<'_, HashMap<ShmName, Weak<Entry>>> {
        let index = self.hasher.hash_one(name) as usize % SHARDS;
        // Plain map operations only: a panic cannot leave it inconsistent.
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Entry {
    /// Takes a turn for `access`, waiting here as long as it takes: after
    /// the calls that were waiting before this one. A call nested in a turn
    /// this thread holds on the entry does not wait (see the module docs):
    /// inside an exclusive turn it runs in it, inside a shared one a reader
    /// goes in at once and a writer is refused, `EDEADLK` (reported against
    /// `shm_open`, the step before any other).
    pub fn lock(&self, access: Access) -> Result<Held<'_>> {
        let mut held = match (held_here(self), access) {
            (Some(Access::Exclusive), _) => return Ok(self.begin(self.state(), None)),
            (Some(Access::Shared), Access::Exclusive) => {
                return Err(Error::Os(Errno::EDEADLK, Syscall::ShmOpen));
            }
            (Some(Access::Shared), Access::Shared) => self.take_again(),
            (None, _) => self.wait_for(access),
        };
        note_held_here(self, access, true);
        held.on_thread = true;
        Ok(held)
    }

    /// Another shared turn for a thread holding one: at once, whoever
    /// waits (they wait for this thread).
    fn take_again(&self) -> Held<'_> {
        let mut state = self.state();
        state.turns.take(Access::Shared);
        self.begin(state, Some(Access::Shared))
    }

    /// Takes a turn for `access`, waiting for it behind the calls that were
    /// waiting before this one, and helping work between steps meanwhile.
    fn wait_for(&self, access: Access) -> Held<'_> {
        let mut state = self.state();
        if state.turns.try_take(access) {
            return self.begin(state, Some(access));
        }
        let ticket = next_ticket();
        state.turns.block(access, ticket);
        while !state.turns.given_to_thread(ticket) {
            // Work holding the segment waits between steps, perhaps for a
            // scheduler this very thread (and others like it) holds: it is
            // run to its end here.
            if let Some(finish) = state.take_yielded() {
                drop(state);
                // A panic is the work's own business; this call waits on.
                let _ = catch_unwind(AssertUnwindSafe(|| finish.finish()));
                // Dropped before the entry's mutex is taken: this may be the
                // last reference to the work, which ends its turns.
                drop(finish);
                state = self.state();
                continue;
            }
            state = self
                .released
                .wait_timeout(state, LEASE_BEFORE_A_THREAD)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            let mut freed = Freed::default();
            state.turns.take_back_stale(true, &mut freed);
            if freed.threads || !freed.wakes.is_empty() {
                drop(state);
                self.pass_on(freed);
                state = self.state();
            }
        }
        self.begin(state, Some(access))
    }

    /// Takes a turn for `access` for the process `key`: the turn given to
    /// it since it parked, or a turn now if the segment is free and nobody
    /// waits. Else the call keeps (or takes) its place in the queue, with the
    /// wake-up that `wake` makes, to run (on the background thread) once its
    /// turn is given; its ticket.
    #[cfg_attr(not(feature = "nif"), allow(dead_code))] // parking is for NIF calls
    pub fn lock_or_park(
        &self,
        access: Access,
        key: impl Fn() -> u64,
        wake: impl FnOnce(Ticket) -> Wake,
    ) -> std::result::Result<Held<'_>, Ticket> {
        let mut state = self.state();
        let mut freed = Freed::default();
        match state
            .turns
            .enter(access, key, next_ticket, wake, &mut freed)
        {
            Entered::Now => {
                let held = self.begin(state, Some(access));
                self.pass_on(freed);
                Ok(held)
            }
            Entered::Queued(ticket) => {
                drop(state);
                self.pass_on(freed);
                Err(ticket)
            }
        }
    }

    /// Gives up the turn given to the process `key`, or its place in the
    /// queue: a call that waits for another segment first.
    #[cfg_attr(not(feature = "nif"), allow(dead_code))] // parking is for NIF calls
    pub fn abandon(&self, key: u64) {
        let mut freed = Freed::default();
        self.state().turns.abandon(key, &mut freed);
        self.pass_on(freed);
    }

    /// A call's turn for `access` (`None`: inside its thread's exclusive
    /// turn), taken under the mutex `state`.
    fn begin<'e>(&'e self, mut state: MutexGuard<'_, State>, access: Option<Access>) -> Held<'e> {
        if let Some(kept) = state.kept.as_mut() {
            kept.calls = kept.calls.saturating_add(1);
        }
        let kept = state.snapshot();
        Held {
            entry: self,
            access,
            on_thread: false,
            hand_to: Cell::new(None),
            kept: RefCell::new(Some(kept)),
        }
    }

    /// Counts a guard of the file `identity` holding the entry, or one
    /// letting go; how many guards hold that file then.
    pub fn count_guard(&self, identity: Identity, held: bool) -> usize {
        if held {
            self.guards.fetch_add(1, Ordering::AcqRel);
        } else {
            self.guards.fetch_sub(1, Ordering::AcqRel);
        }
        let mut state = self.state();
        let at = state.guarded.iter().position(|(file, _)| *file == identity);
        match (at, held) {
            (Some(at), true) => {
                state.guarded[at].1 += 1;
                state.guarded[at].1
            }
            (None, true) => {
                state.guarded.push((identity, 1));
                1
            }
            (Some(at), false) => {
                state.guarded[at].1 -= 1;
                let left = state.guarded[at].1;
                if left == 0 {
                    state.guarded.swap_remove(at);
                }
                left
            }
            (None, false) => 0,
        }
    }

    /// How many guards hold the entry: those of this process's guards of
    /// every kind (Elixir, Rust and C) that reach it.
    pub fn guards(&self) -> usize {
        self.guards.load(Ordering::Acquire)
    }

    /// Offers an open segment to keep for later calls: kept if a guard holds
    /// the entry, nothing is kept yet, and the budget allows.
    pub fn keep(&self, open: &Arc<Open>) {
        if self.guards.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut state = self.state();
        if state.kept.is_some() {
            return;
        }
        if let Some(slot) = Slot::acquire(open.descriptor_number()) {
            state.kept = Some(Kept {
                open: Arc::clone(open),
                mapping: None,
                calls: 0,
                _slot: slot,
            });
        }
    }

    /// Whether a segment is kept open.
    pub fn keeps_open(&self) -> bool {
        self.state().kept.is_some()
    }

    /// The segment the name leads to, for a call that began with `kept`: the
    /// one kept open if the name still leads to it, else opened now (and
    /// kept, if a guard holds the entry and the budget allows).
    fn segment(&self, kept: Snapshot) -> Result<InUse<'_>> {
        let in_use = |segment| InUse {
            entry: self,
            segment,
        };
        if let Some((open, mapping, busy)) = kept {
            match Segment::begin(open, mapping, busy)? {
                Ok(segment) => return Ok(in_use(segment)),
                Err(open) => self.forget(&open),
            }
        }
        let segment = Segment::open(&self.name)?;
        self.keep(segment.to_keep());
        Ok(in_use(segment))
    }

    /// Drops the kept segment if it is `open`: its name leads elsewhere.
    fn forget(&self, open: &Arc<Open>) {
        let mut state = self.state();
        if state.kept_as(open).is_some() {
            let stale = state.kept.take();
            drop(state);
            dispose(stale);
        }
    }

    /// Ends a turn: without the mutex unless calls wait, who are then
    /// given their turns.
    fn end(&self, access: Access) {
        if !self.holders.leave(access) {
            return;
        }
        let mut freed = Freed::default();
        self.state().turns.pass_on_into(&mut freed);
        self.pass_on(freed);
    }

    /// Ends the turn `turn`, kept past its call, with what it left to
    /// finish it.
    fn end_kept(&self, access: Option<Access>, turn: Ticket) {
        let mut freed = Freed::default();
        let mut state = self.state();
        state.forget_yielded(turn);
        if let Some(access) = access {
            state.turns.release_into(access, &mut freed);
        }
        drop(state);
        self.pass_on(freed);
    }

    /// Tells the calls given their turn: notifies blocked threads, runs the
    /// wake-ups of parked calls (each sends its message as it can).
    fn pass_on(&self, freed: Freed) {
        if freed.threads {
            self.released.notify_all();
        }
        if !freed.wakes.is_empty() {
            freed.wakes.into_iter().for_each(|wake| wake());
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Counters and a cache: a panic cannot leave them inconsistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// Takes out work waiting between steps that is still there to finish.
    fn take_yielded(&mut self) -> Option<Arc<dyn Finish>> {
        while let Some(yielded) = self.yielded.pop() {
            if let Some(finish) = yielded.finish.upgrade() {
                return Some(finish);
            }
        }
        None
    }

    fn forget_yielded(&mut self, turn: Ticket) {
        self.yielded.retain(|yielded| yielded.turn != turn);
    }

    /// What is kept now, for a call: the kept segment and mapping shared
    /// with it, and whether it is busy enough to copy through the mapping.
    fn snapshot(&self) -> Snapshot {
        self.kept.as_ref().map(|kept| {
            let busy = kept.calls > MAP_AFTER;
            (Arc::clone(&kept.open), kept.mapping.clone(), busy)
        })
    }

    /// What is kept of the segment, if it is `open` (and not another segment
    /// kept since under the same name).
    fn kept_as(&mut self, open: &Arc<Open>) -> Option<&mut Kept> {
        self.kept
            .as_mut()
            .filter(|kept| Arc::ptr_eq(&kept.open, open))
    }
}

/// A segment for the length of a call; what the call mapped anew, or found
/// to have lost pages, is kept in its entry when it is done (dropped).
#[derive(Debug)]
pub(crate) struct InUse<'e> {
    entry: &'e Entry,
    segment: Segment,
}

impl Deref for InUse<'_> {
    type Target = Segment;

    fn deref(&self) -> &Segment {
        &self.segment
    }
}

impl DerefMut for InUse<'_> {
    fn deref_mut(&mut self) -> &mut Segment {
        &mut self.segment
    }
}

impl Drop for InUse<'_> {
    fn drop(&mut self) {
        let Some(mapping) = self.segment.new_mapping() else {
            return;
        };
        let replaced = match self.entry.state().kept_as(self.segment.to_keep()) {
            Some(kept) => std::mem::replace(&mut kept.mapping, mapping),
            None => None,
        };
        // The mapping replaced goes with the last call using it; unmapping
        // is not done under the entry's mutex.
        drop(replaced);
    }
}

impl<'e> Held<'e> {
    /// The segment the name leads to, for this call: the one kept open if
    /// the name still leads to it, else opened now (and kept, if a guard
    /// holds the entry and the budget allows).
    pub fn segment(&self) -> Result<InUse<'e>> {
        // Taken by the call's first segment (a call mostly has one); a
        // second one sees what is kept now.
        let kept = self
            .kept
            .borrow_mut()
            .take()
            .unwrap_or_else(|| self.entry.state().snapshot());
        self.entry.segment(kept)
    }

    /// Hands the turn back to the process `key` when dropped: the call
    /// takes it up again elsewhere (as a parked call would).
    #[cfg_attr(not(feature = "nif"), allow(dead_code))] // for NIF calls
    pub fn hand_back_to(&self, key: u64) {
        self.hand_to.set(Some(key));
    }

    /// Keeps the turn past this call; `entry` is this turn's entry.
    #[cfg_attr(not(feature = "nif"), allow(dead_code))] // steps are for NIF calls
    /// It is no longer this thread's: another may end it.
    pub fn keep(mut self, entry: &Arc<Entry>) -> Turn {
        debug_assert!(std::ptr::eq(Arc::as_ptr(entry), self.entry));
        self.leave_thread();
        let access = self.access.take();
        Turn {
            entry: Arc::clone(entry),
            access,
            id: next_ticket(),
        }
    }
}

impl Held<'_> {
    /// Forgets the turn among those its thread holds, if it was noted.
    fn leave_thread(&mut self) {
        if let (true, Some(access)) = (self.on_thread, self.access) {
            note_held_here(self.entry, access, false);
        }
        self.on_thread = false;
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.leave_thread();
        match (self.access, self.hand_to.get()) {
            (Some(access), Some(key)) => self.entry.state().turns.give_back(access, key),
            (Some(access), None) => self.entry.end(access),
            (None, _) => {}
        }
    }
}

#[cfg_attr(not(feature = "nif"), allow(dead_code))] // steps are for NIF calls
impl Turn {
    /// The segment the name leads to now, as [`Held::segment`].
    pub fn segment(&self) -> Result<InUse<'_>> {
        let kept = self.entry.state().snapshot();
        self.entry.segment(kept)
    }

    /// The work holding this turn waits between steps: a thread that waits
    /// behind the turn (in [`Entry::lock`]) runs the rest of it with
    /// `finish`, unless the work [resumes](Self::resume) first. Threads
    /// waiting now are told at once.
    pub fn yield_to(&self, finish: Weak<dyn Finish>) {
        let mut state = self.entry.state();
        state.forget_yielded(self.id);
        state.yielded.push(Yielded {
            turn: self.id,
            finish,
        });
        let threads_wait = state.turns.threads_wait();
        drop(state);
        if threads_wait {
            self.entry.released.notify_all();
        }
    }

    /// The work holding this turn takes its next step itself: no thread
    /// is to finish it now.
    pub fn resume(&self) {
        self.entry.state().forget_yielded(self.id);
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.entry.end_kept(self.access, self.id);
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        let mut shard = TABLE.shard(&self.name);
        // A new entry may have taken the name's place since the last strong
        // reference to this one went away.
        let ours = shard
            .get(&self.name)
            .is_some_and(|entry| std::ptr::eq(entry.as_ptr(), self));
        if ours {
            shard.remove(&self.name);
        }
        drop(shard);
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        dispose(state.kept.take());
    }
}

/// Closes a kept segment: in the background when that frees many pages (its
/// name may be gone, and this the last reference to it) or unmaps a large
/// mapping; here otherwise, where it costs less than handing it over.
fn dispose(kept: Option<Kept>) {
    let Some(kept) = kept else { return };
    let mapped = kept.mapping.as_ref().map_or(0, |mapping| mapping.len());
    if cost::frees_quickly(kept.open.allocated().max(mapped)) {
        drop(kept);
    } else {
        background::run_or_here(Box::new(move || drop(kept)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The identity the tests' guards count under.
    const NO_FILE: Identity = Identity {
        device: 0,
        inode: 0,
    };
    use crate::test_support::Scratch;

    #[test]
    fn spellings_of_a_name_share_one_entry() {
        let scratch = Scratch::new(1);
        let posix = scratch.name.to_posix();
        let bare = ShmName::new(&posix[1..]).unwrap();
        let double = ShmName::new(&[b"/", &posix[..]].concat()).unwrap();
        let first = entry(&scratch.name);
        assert!(Arc::ptr_eq(&first, &entry(&bare)));
        assert!(Arc::ptr_eq(&first, &entry(&double)));
    }

    #[test]
    fn entries_go_when_unused() {
        let name = ShmName::generate();
        drop(entry(&name));
        assert!(TABLE.shard(&name).get(&name).is_none());
    }

    #[test]
    fn a_kept_segment_is_dropped_once_its_name_leads_elsewhere() {
        let scratch = Scratch::new(3);
        let held = entry(&scratch.name);
        held.count_guard(NO_FILE, true);
        let first = held
            .lock(Access::Shared)
            .unwrap()
            .segment()
            .unwrap()
            .identity();
        assert!(held.keeps_open());
        crate::sys::unlink(&scratch.name);
        let replacement = Segment::create(&scratch.name, 7).unwrap();
        let again = held.lock(Access::Shared).unwrap().segment().unwrap();
        assert_eq!(again.len(), 7);
        assert_ne!(again.identity(), first);
        assert_eq!(again.identity(), replacement.identity());
        held.count_guard(NO_FILE, false);
    }

    #[test]
    fn a_mapping_made_by_a_call_is_kept_for_the_next() {
        let scratch = Scratch::new(4096);
        let held = entry(&scratch.name);
        held.count_guard(NO_FILE, true);
        let mapped = || {
            held.state()
                .kept
                .as_ref()
                .is_some_and(|k| k.mapping.is_some())
        };
        for _ in 0..=MAP_AFTER + 1 {
            let turn = held.lock(Access::Exclusive).unwrap();
            let segment = turn.segment().unwrap();
            let plan = segment.plan_write(0, 4096);
            segment.write(&plan, 0, &[1; 4096]).unwrap();
        }
        assert!(mapped(), "busy enough to be mapped, and the mapping kept");
        // A call that finds the segment replaced under its name forgets it.
        crate::sys::unlink(&scratch.name);
        drop(Segment::create(&scratch.name, 8).unwrap());
        held.lock(Access::Shared).unwrap().segment().unwrap();
        assert!(!mapped());
        held.count_guard(NO_FILE, false);
    }

    #[test]
    fn without_a_guard_nothing_is_kept() {
        let scratch = Scratch::new(3);
        let unguarded = entry(&scratch.name);
        unguarded.lock(Access::Shared).unwrap().segment().unwrap();
        assert!(!unguarded.keeps_open());
    }

    #[test]
    fn a_parked_call_is_woken_when_the_segment_is_free() {
        let scratch = Scratch::new(1);
        let shared = entry(&scratch.name);
        let (sender, woken) = std::sync::mpsc::channel();
        let writer = shared.lock(Access::Exclusive).unwrap();
        let parked = shared.lock_or_park(
            Access::Shared,
            || 7,
            |_| Box::new(move || sender.send(()).unwrap()),
        );
        let ticket = parked.unwrap_err();
        // Another process comes later: it queues behind.
        let later = shared.lock_or_park(Access::Shared, || 8, |_| Box::new(|| ()));
        assert_ne!(later.unwrap_err(), ticket);
        drop(writer);
        woken
            .recv_timeout(std::time::Duration::from_secs(5))
            .unwrap();
        assert!(shared
            .lock_or_park(Access::Shared, || 7, |_| Box::new(|| ()))
            .is_ok());
    }

    /// Work holding a turn between steps, which a thread finishes by ending
    /// the turn; which thread did.
    struct Work {
        turn: Mutex<Option<Turn>>,
        finished_by: Mutex<Option<std::thread::ThreadId>>,
    }

    impl Work {
        fn holding(entry: &Arc<Entry>) -> Arc<Work> {
            let turn = entry.lock(Access::Exclusive).unwrap().keep(entry);
            Arc::new(Work {
                turn: Mutex::new(Some(turn)),
                finished_by: Mutex::new(None),
            })
        }

        fn yield_turn(self: &Arc<Work>) {
            let finish: Weak<dyn Finish> = Arc::downgrade(self) as Weak<Work>;
            self.turn.lock().unwrap().as_ref().unwrap().yield_to(finish);
        }
    }

    impl Finish for Work {
        fn finish(&self) {
            if let Some(turn) = self.turn.lock().unwrap().take() {
                *self.finished_by.lock().unwrap() = Some(std::thread::current().id());
                drop(turn);
            }
        }
    }

    /// Work holding a turn between steps whose rest panics as it ends the
    /// turn (a bug in a copy's end); what it came to, once left.
    struct Panicking {
        turn: Mutex<Option<Turn>>,
        ended: Mutex<Option<&'static str>>,
    }

    impl Stepped for Panicking {
        type Rest = Turn;
        type Ended = &'static str;

        fn take(&self) -> Option<Turn> {
            self.turn.lock().unwrap().take()
        }

        fn run(turn: Turn) -> &'static str {
            let _ending = turn;
            panic!("a bug in the copy's end")
        }

        fn panicked() -> &'static str {
            "panicked"
        }

        fn leave(&self, ended: &'static str) {
            *self.ended.lock().unwrap() = Some(ended);
        }
    }

    /// Takes a turn for `access` on another thread: that thread's id once
    /// it has it.
    fn lock_elsewhere(
        entry: &Arc<Entry>,
        access: Access,
    ) -> std::sync::mpsc::Receiver<std::thread::ThreadId> {
        let (sender, got) = std::sync::mpsc::channel();
        let entry = Arc::clone(entry);
        std::thread::spawn(move || {
            let _held = entry.lock(access).unwrap();
            let _ = sender.send(std::thread::current().id());
        });
        got
    }

    const LONG: std::time::Duration = std::time::Duration::from_secs(10);

    #[test]
    fn a_blocked_thread_finishes_the_work_between_steps_it_waits_behind() {
        let scratch = Scratch::new(1);
        let shared = entry(&scratch.name);
        let work = Work::holding(&shared);
        work.yield_turn();
        // Nothing else would end the turn: without help, it waits for ever.
        let helper = lock_elsewhere(&shared, Access::Shared).recv_timeout(LONG);
        assert!(helper.is_ok(), "the blocked thread had its turn");
        assert_eq!(helper.ok(), *work.finished_by.lock().unwrap());
        assert!(shared.state().yielded.is_empty());
    }

    #[test]
    fn work_whose_rest_panics_is_left_panicked_for_whoever_waits_for_it() {
        let scratch = Scratch::new(1);
        let shared = entry(&scratch.name);
        let work = Arc::new(Panicking {
            turn: Mutex::new(Some(shared.lock(Access::Exclusive).unwrap().keep(&shared))),
            ended: Mutex::new(None),
        });
        let finish: Weak<dyn Finish> = Arc::downgrade(&work) as Weak<Panicking>;
        work.turn.lock().unwrap().as_ref().unwrap().yield_to(finish);
        let helper = lock_elsewhere(&shared, Access::Shared).recv_timeout(LONG);
        assert!(helper.is_ok(), "the blocked thread had its turn");
        // Else its continuation would wait for the end for ever.
        assert_eq!(*work.ended.lock().unwrap(), Some("panicked"));
    }

    #[test]
    fn work_that_resumed_is_left_to_itself_until_it_waits_again() {
        let scratch = Scratch::new(1);
        let shared = entry(&scratch.name);
        let work = Work::holding(&shared);
        work.yield_turn();
        work.turn.lock().unwrap().as_ref().unwrap().resume();
        let got = lock_elsewhere(&shared, Access::Exclusive);
        let short = std::time::Duration::from_millis(50);
        assert!(got.recv_timeout(short).is_err(), "waits: the work steps");
        // Between steps again, with the thread waiting: it is told.
        work.yield_turn();
        let helper = got.recv_timeout(LONG).ok();
        assert!(helper.is_some(), "the blocked thread had its turn");
        assert_eq!(helper, *work.finished_by.lock().unwrap());
    }

    #[test]
    fn a_turn_ended_or_work_gone_leaves_nothing_to_finish() {
        let scratch = Scratch::new(1);
        let shared = entry(&scratch.name);
        let work = Work::holding(&shared);
        work.yield_turn();
        drop(work.turn.lock().unwrap().take());
        assert!(shared.state().yielded.is_empty());
        // Work dropped with its turn still yielded: the turn ends with it.
        let work = Work::holding(&shared);
        work.yield_turn();
        drop(work);
        assert!(shared.state().yielded.is_empty());
        let got = lock_elsewhere(&shared, Access::Exclusive).recv_timeout(LONG);
        assert!(got.is_ok());
    }

    /// Runs `f` on a thread of its own: what it returns, or `None` if it
    /// has not within `LONG` (it hangs: the test fails rather than waits).
    fn on_its_own_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (sender, got) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = sender.send(f());
        });
        got.recv_timeout(LONG).ok()
    }

    /// Waits until a blocked thread is queued on `entry`.
    fn until_a_thread_waits(entry: &Entry) {
        while !entry.state().turns.threads_wait() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    const SHORT: std::time::Duration = std::time::Duration::from_millis(50);

    #[test]
    fn a_read_nested_in_a_read_goes_in_past_a_queued_writer() {
        let scratch = Scratch::new(1);
        let shared = entry(&scratch.name);
        let outer_entry = Arc::clone(&shared);
        let nested = on_its_own_thread(move || {
            let outer = outer_entry.lock(Access::Shared).unwrap();
            let writer = lock_elsewhere(&outer_entry, Access::Exclusive);
            until_a_thread_waits(&outer_entry);
            // Queued, it would wait behind the writer, which waits for it.
            let nested = outer_entry.lock(Access::Shared).map(drop);
            let waited = writer.recv_timeout(SHORT).is_err();
            drop(outer);
            let forgotten = held_here(&outer_entry).is_none();
            (nested, waited, forgotten, writer)
        });
        let (nested, waited, forgotten, writer) = nested.expect("the nested read returned");
        assert_eq!(nested, Ok(()));
        assert!(waited, "the writer waits for both shared turns");
        assert!(forgotten, "the thread holds nothing once they end");
        assert!(writer.recv_timeout(LONG).is_ok(), "then has its turn");
    }

    #[test]
    fn calls_nested_in_a_write_run_in_its_turn() {
        let scratch = Scratch::new(1);
        let shared = entry(&scratch.name);
        let outer_entry = Arc::clone(&shared);
        let nested = on_its_own_thread(move || {
            let outer = outer_entry.lock(Access::Exclusive).unwrap();
            let reader = lock_elsewhere(&outer_entry, Access::Shared);
            until_a_thread_waits(&outer_entry);
            let read = outer_entry.lock(Access::Shared).map(drop);
            let write = outer_entry.lock(Access::Exclusive).map(|inner| {
                // Deeper still, and its segment in use.
                let deeper = outer_entry.lock(Access::Shared).map(drop);
                (deeper, inner.segment().map(|segment| segment.len()))
            });
            // The nested calls ended nothing: the reader still waits.
            let waited = reader.recv_timeout(SHORT).is_err();
            drop(outer);
            (read, write, waited, reader)
        });
        let (read, write, waited, reader) = nested.expect("the nested calls returned");
        assert_eq!(read, Ok(()));
        assert_eq!(write, Ok((Ok(()), Ok(1))));
        assert!(waited, "the writer's turn lasts until it ends");
        assert!(reader.recv_timeout(LONG).is_ok());
        let free = lock_elsewhere(&shared, Access::Exclusive).recv_timeout(LONG);
        assert!(free.is_ok(), "nothing of the turns is left");
    }

    #[test]
    fn a_write_nested_in_a_read_is_refused_not_left_waiting() {
        let scratch = Scratch::new(1);
        let shared = entry(&scratch.name);
        let outer_entry = Arc::clone(&shared);
        let refused = on_its_own_thread(move || {
            let outer = outer_entry.lock(Access::Shared).unwrap();
            let refused = outer_entry.lock(Access::Exclusive).map(drop);
            let inner = outer_entry.lock(Access::Shared).unwrap();
            let deeper = outer_entry.lock(Access::Exclusive).map(drop);
            drop((inner, outer));
            // The thread holds nothing now: a write goes in.
            let after = outer_entry.lock(Access::Exclusive).map(drop);
            (refused, deeper, after)
        });
        let deadlock = Err(Error::Os(Errno::EDEADLK, Syscall::ShmOpen));
        let (refused, deeper, after) = refused.expect("the nested write returned");
        assert_eq!(refused, deadlock);
        assert_eq!(deeper, deadlock);
        assert_eq!(after, Ok(()));
    }

    #[test]
    fn a_turn_kept_or_handed_back_is_no_longer_the_threads() {
        let scratch = Scratch::new(1);
        let shared = entry(&scratch.name);
        let turn = shared.lock(Access::Exclusive).unwrap().keep(&shared);
        assert_eq!(held_here(&shared), None);
        drop(turn);
        let held = shared.lock(Access::Shared).unwrap();
        assert_eq!(held_here(&shared), Some(Access::Shared));
        held.hand_back_to(7);
        drop(held);
        assert_eq!(held_here(&shared), None);
        // A call inside an exclusive turn, kept, ends nothing; the turn
        // handed back lapses first.
        let inside = on_its_own_thread(move || {
            let outer = shared.lock(Access::Exclusive).unwrap();
            drop(shared.lock(Access::Shared).unwrap().keep(&shared));
            let still = held_here(&shared);
            drop(outer);
            (still, held_here(&shared))
        });
        let held = Some(Access::Exclusive);
        assert_eq!(inside, Some((held, None)));
    }

    #[test]
    fn blocked_calls_wait_their_turn() {
        let scratch = Scratch::new(1);
        let shared = entry(&scratch.name);
        let inside = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..200 {
                        let _held = shared.lock(Access::Exclusive).unwrap();
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                });
            }
        });
    }

    #[test]
    fn readers_and_writers_exclude_each_other_when_turns_end_without_the_mutex() {
        let scratch = Scratch::new(1);
        let shared = entry(&scratch.name);
        // Readers count up by one, a writer by a thousand: a writer sees
        // only itself, a reader no writer.
        let inside = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|scope| {
            for thread in 0..6 {
                let (shared, inside) = (&shared, &inside);
                scope.spawn(move || {
                    for round in 0..300 {
                        if (thread + round) % 3 == 0 {
                            let _held = shared.lock(Access::Exclusive).unwrap();
                            assert_eq!(inside.fetch_add(1000, Ordering::SeqCst), 0);
                            inside.fetch_sub(1000, Ordering::SeqCst);
                        } else {
                            let _held = shared.lock(Access::Shared).unwrap();
                            assert!(inside.fetch_add(1, Ordering::SeqCst) < 1000);
                            inside.fetch_sub(1, Ordering::SeqCst);
                        }
                    }
                });
            }
        });
        assert!(shared.state().turns.admits(Access::Exclusive));
    }
}
