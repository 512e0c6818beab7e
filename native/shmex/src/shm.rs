//! The operations of `Shmex.Native` on a decoded `%Shmex{}` struct.
//!
//! They do what Shmex 0.5.1 does, except that a struct's size and capacity
//! are claims, checked against the real segment before anything is touched,
//! and that every step that can fail comes before the first byte changes, so
//! that a call that fails leaves the segment as it was (unless another
//! process changes it under the call).
//!
//! Owns the operations; how they wait and how long they may take is the
//! caller's [`Scheduling`], the segment's lock and kept descriptor are its
//! entry's. In a copy of the crate that is not the VM's primary, once the
//! primary is found, each public operation goes through it instead (the
//! prefix `if let Some(vm) = vm::elsewhere()`, see [`crate::vm`]): the
//! primary runs the same operation, on its state.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use nix::errno::Errno;

use crate::cost::Cost;
use crate::error::{Error, Result, Syscall};
use crate::exclusion::Access;
use crate::guard::Guard;
use crate::name::ShmName;
use crate::registry::{self, Entry, Finish, InUse, Turn};
use crate::schedule::{self, Blocking, Scheduling};
use crate::segment::{Plan, Segment};
use crate::sys::{self, Identity};
use crate::vm::{self, Sizes};

/// What a struct says about its segment: `size` bytes of data at the start of
/// a segment of `capacity` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    /// Bytes of data.
    pub size: u64,
    /// The segment's size.
    pub capacity: u64,
}

impl Claim {
    /// `size` bytes of data filling a segment of the same size.
    pub fn full(size: u64) -> Claim {
        Claim {
            size,
            capacity: size,
        }
    }

    /// Checks the claim against a segment of `len` bytes: the data fits the
    /// capacity and the capacity fits the segment. The segment may be
    /// larger: another copy of the struct may have grown it.
    pub fn check(self, len: u64) -> Result<()> {
        if self.size <= self.capacity && self.capacity <= len {
            Ok(())
        } else {
            Err(Error::InvalidPayload)
        }
    }
}

impl From<Claim> for Sizes {
    fn from(claim: Claim) -> Sizes {
        Sizes {
            size: claim.size,
            capacity: claim.capacity,
        }
    }
}

impl From<Sizes> for Claim {
    fn from(sizes: Sizes) -> Claim {
        Claim {
            size: sizes.size,
            capacity: sizes.capacity,
        }
    }
}

/// A `%Shmex{}` struct: a segment's name, its guard if it is one of ours, and
/// its claims.
///
/// Calls on one segment through any of its structs in this OS process are
/// serialized: those that change it run alone, those that read it may run
/// together. The methods here wait for their turn.
#[derive(Clone, Copy, Debug)]
pub struct Shm<'a> {
    name: &'a ShmName,
    guard: Option<&'a Guard>,
    /// The struct's guard field holds a resource that is not our guard (a C
    /// library's guard, such as unifex's).
    foreign_guard: bool,
    claim: Claim,
}

impl<'a> Shm<'a> {
    /// A struct for the segment `name`, claiming `claim`; `guard` is its
    /// guard, if it holds one of ours.
    pub fn new(name: &'a ShmName, guard: Option<&'a Guard>, claim: Claim) -> Shm<'a> {
        Shm {
            name,
            guard,
            foreign_guard: false,
            claim,
        }
    }

    /// The same struct, its guard field holding a resource that is not our
    /// guard.
    #[cfg_attr(not(feature = "nif"), allow(dead_code))] // terms are the VM's
    pub(crate) fn with_foreign_guard(self) -> Shm<'a> {
        Shm {
            foreign_guard: true,
            ..self
        }
    }

    /// A struct for `guard`'s segment, claiming `claim`: to work on a segment
    /// just allocated.
    pub fn of_guard(guard: &'a Guard, claim: Claim) -> Shm<'a> {
        Shm::new(guard.name(), Some(guard), claim)
    }

    /// The segment's name.
    pub fn name(&self) -> &'a ShmName {
        self.name
    }

    /// The struct's claims.
    pub fn claim(&self) -> Claim {
        self.claim
    }

    /// Creates a segment of `claim.capacity` zero bytes, readable and
    /// writable by this OS user only, named `name` or a fresh name, and its
    /// guard. The claimed size is kept, as in 0.5.1.
    pub fn allocate(name: Option<ShmName>, claim: Claim) -> Result<Guard> {
        if claim.size > claim.capacity {
            return Err(Error::InvalidPayload);
        }
        if let Some(vm) = vm::elsewhere() {
            let (name, identity) =
                vm.create(name.as_ref(), claim.capacity, vm::Made::GuardedSparse)?;
            return Ok(Guard::of_primary(name, identity, vm));
        }
        let (name, segment) = match name {
            Some(name) => {
                let segment = Segment::create(&name, claim.capacity)?;
                (name, segment)
            }
            None => Segment::create_unique(claim.capacity)?,
        };
        Ok(Guard::new(name, &segment))
    }

    /// A guard for an existing segment that has none of ours (made by other
    /// code). Any segment will do: claims are checked when it is used.
    ///
    /// `AlreadyGuarded` when the struct holds our guard, or holds another
    /// library's resource while a guard of this process (a C or Rust
    /// library's) holds the segment: that resource is its guard. A struct
    /// whose guard was stripped gets a second guard; the segment is unlinked
    /// when the last one goes.
    pub fn add_guard(&self) -> Result<Guard> {
        if let Some(vm) = vm::elsewhere().filter(|_| self.guard.is_none()) {
            let identity = vm.add_guard(self.name, self.foreign_guard)?;
            return Ok(Guard::of_primary(self.name.clone(), identity, vm));
        }
        let guarded_elsewhere = || self.foreign_guard && registry::entry(self.name).guards() > 0;
        if self.guard.is_some() || guarded_elsewhere() {
            return Err(Error::AlreadyGuarded);
        }
        let segment = Segment::open(self.name)?;
        Ok(Guard::new(self.name.clone(), &segment))
    }

    /// Resizes the segment to exactly `capacity` bytes; data past it is lost.
    pub fn set_capacity(&self, capacity: u64) -> Result<Claim> {
        if let Some(vm) = vm::elsewhere() {
            return Ok(vm
                .set_capacity(self.name, self.claim.into(), capacity)?
                .into());
        }
        self.set_capacity_with(&Blocking, capacity)
    }

    /// The first `len` bytes of data.
    pub fn read(&self, len: u64) -> Result<Vec<u8>> {
        if let Some(vm) = vm::elsewhere() {
            return vm.read(self.name, self.claim.into(), len);
        }
        let read = self.read_with(&Blocking, len, |len| {
            let mut buffer = Vec::new();
            buffer.try_reserve_exact(len).ok()?;
            buffer.resize(len, 0);
            Some(buffer)
        })?;
        match read {
            Progress::Done(buffer) => Ok(buffer),
            Progress::Going(reading) => reading.run_out(),
        }
    }

    /// Replaces the data with `data`, growing the segment when it is too
    /// small. Whatever the claims say, the result is right.
    pub fn write(&self, data: &[u8]) -> Result<Claim> {
        if let Some(vm) = vm::elsewhere() {
            return Ok(vm.write(self.name, self.claim.into(), data)?.into());
        }
        match self.write_with(&Blocking, data)? {
            Progress::Done(claim) => Ok(claim),
            Progress::Going(mut writing) => {
                while !writing.step(data, Duration::MAX)? {}
                Ok(writing.claim())
            }
        }
    }

    /// Moves the data past `position` into a new guarded segment; this struct
    /// keeps the first `position` bytes. The claims of this struct's result,
    /// the new guard and the claims of the new segment.
    pub fn split_at(&self, position: u64) -> Result<(Claim, Guard, Claim)> {
        if let Some(vm) = vm::elsewhere() {
            let (left, (name, identity), right) =
                vm.split_at(self.name, self.claim.into(), position)?;
            return Ok((
                left.into(),
                Guard::of_primary(name, identity, vm),
                right.into(),
            ));
        }
        match self.split_at_with(&Blocking, position)? {
            Progress::Done(parts) => Ok(parts),
            Progress::Going(moving) => Option::from(moving.run_out()?).ok_or(Error::InvalidPayload),
        }
    }

    /// Appends `source`'s data to this struct's data; the segment becomes
    /// exactly as large as both. `source` is unchanged; it may be this
    /// struct's segment itself.
    pub fn append(&self, source: &Shm) -> Result<Claim> {
        if let Some(vm) = vm::elsewhere() {
            let (target, from) = (self.claim.into(), source.claim.into());
            return Ok(vm.append(self.name, target, source.name, from)?.into());
        }
        whole(self.append_with(&Blocking, source)?)
    }

    /// Drops the first `bytes` bytes of data and shrinks the segment to the
    /// rest. With `bytes == 0` this is `trim/1`: shrinking to the data.
    pub fn trim(&self, bytes: u64) -> Result<Claim> {
        if let Some(vm) = vm::elsewhere() {
            return Ok(vm.trim(self.name, self.claim.into(), bytes)?.into());
        }
        whole(self.trim_with(&Blocking, bytes)?)
    }

    /// Runs `f` on the data (`size` bytes) in place, after checking the
    /// struct against its segment: for NIFs that process the data without
    /// copying it. Other calls that change the segment in this OS process
    /// wait until `f` returns.
    ///
    /// If pages of the segment were lost while `f` ran (another OS process
    /// shrank it), the process survives and the result is an error, `f`'s
    /// result being dropped.
    ///
    /// Calls on the same segment made from inside `f` (on its thread) do
    /// not queue behind the turn `f` runs in: those that read it go in at
    /// once, whoever waits; those that change it could never have their
    /// turn and fail at once, `Error::Os(EDEADLK, Syscall::ShmOpen)`.
    ///
    /// # Safety
    ///
    /// Shared memory is shared: other OS processes, and other libraries in
    /// this one, may write or shrink the segment at any time, which Rust does
    /// not allow for memory behind a `&[u8]`. The caller must know that
    /// nothing else changes the data while `f` runs (as a pipeline that hands
    /// a segment from one stage to the next does). Otherwise use
    /// [`read`](Self::read), which copies.
    pub unsafe fn data<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        if let Some(vm) = vm::elsewhere() {
            // SAFETY: forwarded to the caller.
            return unsafe { vm.data(self.name, self.claim.into(), f) };
        }
        let entry = self.entry()?;
        let held = entry.lock(Access::Shared)?;
        let segment = held.segment()?;
        self.claim.check(segment.len())?;
        // SAFETY: forwarded to the caller.
        unsafe { segment.with_bytes(self.claim.size, f) }
    }

    /// Runs `f` on the data (`size` bytes) in place, to change it; its pages
    /// are reserved first, so that a full `/dev/shm` is an error before `f`
    /// runs. Other calls on the segment in this OS process wait until `f`
    /// returns. See [`data`](Self::data). Calls on the same segment made
    /// from inside `f` (on its thread) run in its turn, without waiting.
    ///
    /// # Safety
    ///
    /// As for [`data`](Self::data): nothing else may read or change the data
    /// while `f` runs, calls made from inside `f` included. Otherwise use
    /// [`write`](Self::write).
    pub unsafe fn data_mut<R>(&self, f: impl FnOnce(&mut [u8]) -> R) -> Result<R> {
        if let Some(vm) = vm::elsewhere() {
            // SAFETY: forwarded to the caller.
            return unsafe { vm.data_mut(self.name, self.claim.into(), f) };
        }
        let entry = self.entry()?;
        let held = entry.lock(Access::Exclusive)?;
        let segment = held.segment()?;
        self.claim.check(segment.len())?;
        // SAFETY: forwarded to the caller.
        unsafe { segment.with_bytes_mut(self.claim.size, f) }
    }

    pub(crate) fn set_capacity_with<S: Scheduling>(
        &self,
        scheduling: &S,
        capacity: u64,
    ) -> std::result::Result<Claim, S::Refusal> {
        let entry = self.entry()?;
        let held = scheduling.lock(&entry, Access::Exclusive)?;
        let mut segment = held.segment()?;
        self.claim.check(segment.len())?;
        scheduling.admit(Cost::resize(segment.len(), capacity), &[&held])?;
        segment.resize(capacity)?;
        Ok(Claim {
            size: self.claim.size.min(capacity),
            capacity,
        })
    }

    /// [`read`](Self::read), into a buffer made by `alloc(len)` once the
    /// bytes are known to be there (`None` if it cannot be made: `ENOMEM`).
    ///
    /// A read larger than all the machine's memory is `ENOMEM` rather than an
    /// attempt: a sparse segment can be far larger than memory, and a struct
    /// can claim all of it.
    pub(crate) fn read_with<S: Scheduling, B>(
        &self,
        scheduling: &S,
        len: u64,
        alloc: impl FnOnce(usize) -> Option<B>,
    ) -> std::result::Result<Progress<B, Reading<B>>, S::Refusal>
    where
        B: DerefMut<Target = [u8]>,
    {
        if len > self.claim.size {
            return Err(Error::InvalidReadSize.into());
        }
        let entry = self.entry()?;
        let held = scheduling.lock(&entry, Access::Shared)?;
        let segment = held.segment()?;
        self.claim.check(segment.len())?;
        let too_large = || Error::Os(Errno::ENOMEM, Syscall::Mmap);
        let buffer_len = usize::try_from(len)
            .ok()
            .filter(|_| len <= sys::total_memory())
            .ok_or_else(too_large)?;
        let plan = segment.plan_read(0, len);
        let cost = plan.cost() + Cost::new_buffer(len);
        scheduling.admit(cost, &[&held])?;
        let mut buffer = alloc(buffer_len).ok_or_else(too_large)?;
        match in_steps(scheduling, cost) {
            Some(step) => {
                let mut reading = Reading {
                    copy: Stepped::forward(len),
                    source: Hold::new(held.keep(&entry), &segment, plan),
                    buffer,
                };
                drop(segment);
                Ok(match reading.step(step)? {
                    true => Progress::Done(reading.into_buffer()),
                    false => Progress::Going(reading),
                })
            }
            None => {
                segment.read(&plan, 0, &mut buffer)?;
                Ok(Progress::Done(buffer))
            }
        }
    }

    pub(crate) fn write_with<S: Scheduling>(
        &self,
        scheduling: &S,
        data: &[u8],
    ) -> std::result::Result<Progress<Claim, Writing>, S::Refusal> {
        let size = data.len() as u64;
        let capacity = self.claim.capacity.max(size);
        let claim = Claim { size, capacity };
        let entry = self.entry()?;
        let held = scheduling.lock(&entry, Access::Exclusive)?;
        let mut segment = held.segment()?;
        let plan = segment.plan_write(0, size);
        let cost = plan.cost();
        scheduling.admit(cost, &[&held])?;
        if segment.len() < capacity {
            resize_reserving(&mut segment, capacity, 0, size)?;
        }
        match in_steps(scheduling, cost) {
            Some(step) => {
                // Room for all of it first: a full /dev/shm fails the write
                // before it changes anything.
                segment.reserve(0, size)?;
                let mut writing = Writing {
                    copy: Stepped::forward(size),
                    target: Hold::new(held.keep(&entry), &segment, plan),
                    claim,
                };
                drop(segment);
                Ok(match writing.step(data, step)? {
                    true => Progress::Done(claim),
                    false => Progress::Going(writing),
                })
            }
            None => {
                segment.write(&plan, 0, data)?;
                Ok(Progress::Done(claim))
            }
        }
    }

    pub(crate) fn split_at_with<S: Scheduling>(
        &self,
        scheduling: &S,
        position: u64,
    ) -> std::result::Result<Progress<Parts, Moving>, S::Refusal> {
        let right = self
            .claim
            .size
            .checked_sub(position)
            .ok_or(Error::InvalidPosition)?;
        let entry = self.entry()?;
        let held = scheduling.lock(&entry, Access::Shared)?;
        let segment = held.segment()?;
        self.claim.check(segment.len())?;
        let plans = (segment.plan_read(position, right), Plan::into_new(right));
        let cost = plans.0.cost() + plans.1.cost();
        scheduling.admit(cost, &[&held])?;
        let (name, new) = Segment::create_unique(right)?;
        let left = Claim {
            size: position,
            ..self.claim
        };
        let copy = Move::Between {
            from: position,
            to: 0,
            plans,
        };
        match in_steps(scheduling, cost) {
            Some(step) => {
                // Room for all of it first, as a whole copy reserves it.
                if let Err(error) = new.reserve(0, right) {
                    sys::unlink(&name);
                    return Err(error.into());
                }
                let moving = Moving {
                    copy: Stepped::forward(right),
                    what: copy,
                    held: Hold::new(held.keep(&entry), &segment, plans.0),
                    source: None,
                    ending: Some(Ending::Split {
                        name,
                        new,
                        claims: (left, Claim::full(right)),
                    }),
                };
                drop(segment);
                Ok(moving.go_on(step)?)
            }
            None => {
                if let Err(error) = copy.part(&segment, &new, 0, right) {
                    sys::unlink(&name);
                    return Err(error.into());
                }
                Ok(Progress::Done((
                    left,
                    Guard::new(name, &new),
                    Claim::full(right),
                )))
            }
        }
    }

    pub(crate) fn append_with<S: Scheduling>(
        &self,
        scheduling: &S,
        source: &Shm,
    ) -> std::result::Result<Progress<Claim, Moving>, S::Refusal> {
        let (at, len) = (self.claim.size, source.claim.size);
        let size = at.checked_add(len).ok_or(Error::InvalidPayload)?;
        let (target_entry, source_entry) = (self.entry()?, source.entry()?);
        if Arc::ptr_eq(&target_entry, &source_entry) {
            let held = scheduling.lock(&target_entry, Access::Exclusive)?;
            let mut segment = held.segment()?;
            self.claim.check(segment.len())?;
            source.claim.check(segment.len())?;
            let plan = segment.plan_move(0, at, len);
            scheduling.admit(plan.cost() + Cost::resize(segment.len(), size), &[&held])?;
            let copy = Move::Within {
                from: 0,
                to: at,
                plan,
            };
            let old = segment.len();
            return match in_steps(scheduling, plan.cost()) {
                Some(step) => {
                    grow(&mut segment, old, size, at)?;
                    let held = Hold::new(held.keep(&target_entry), &segment, plan);
                    let moving = Moving::within(copy, len, held, old, size);
                    drop(segment);
                    Ok(moving.go_on(step)?)
                }
                None => {
                    grow_then(&mut segment, old, size, at, |segment| {
                        copy.part(segment, segment, 0, len)
                    })?;
                    Ok(Progress::Done(Claim::full(size)))
                }
            };
        }
        let (target_held, source_held) = scheduling.lock_pair(
            (&target_entry, Access::Exclusive),
            (&source_entry, Access::Shared),
        )?;
        let mut target = target_held.segment()?;
        let from = source_held.segment()?;
        self.claim.check(target.len())?;
        source.claim.check(from.len())?;
        let plans = (from.plan_read(0, len), target.plan_write(at, len));
        let cost = plans.0.cost() + plans.1.cost();
        scheduling.admit(
            cost + Cost::resize(target.len(), size),
            &[&target_held, &source_held],
        )?;
        let copy = Move::Between {
            from: 0,
            to: at,
            plans,
        };
        let old = target.len();
        match in_steps(scheduling, cost) {
            Some(step) => {
                grow(&mut target, old, size, at)?;
                let moving = Moving {
                    copy: Stepped::forward(len),
                    what: copy,
                    held: Hold::new(target_held.keep(&target_entry), &target, plans.1),
                    source: Some(Hold::new(source_held.keep(&source_entry), &from, plans.0)),
                    ending: Some(Ending::Resize { old, size }),
                };
                drop((target, from));
                Ok(moving.go_on(step)?)
            }
            None => {
                grow_then(&mut target, old, size, at, |target| {
                    copy.part(&from, target, 0, len)
                })?;
                Ok(Progress::Done(Claim::full(size)))
            }
        }
    }

    pub(crate) fn trim_with<S: Scheduling>(
        &self,
        scheduling: &S,
        bytes: u64,
    ) -> std::result::Result<Progress<Claim, Moving>, S::Refusal> {
        let size = self
            .claim
            .size
            .checked_sub(bytes)
            .ok_or(Error::InvalidTrimSize)?;
        let entry = self.entry()?;
        let held = scheduling.lock(&entry, Access::Exclusive)?;
        let mut segment = held.segment()?;
        self.claim.check(segment.len())?;
        let moved = if bytes > 0 { size } else { 0 };
        let plan = segment.plan_move(bytes, 0, moved);
        let cost = plan.cost() + Cost::resize(segment.len(), size);
        scheduling.admit(cost, &[&held])?;
        let copy = Move::Within {
            from: bytes,
            to: 0,
            plan,
        };
        match in_steps(scheduling, plan.cost()) {
            Some(step) => {
                // Room for all of it first: a hole that cannot be filled
                // fails the trim before it moves anything.
                segment.reserve(0, moved)?;
                let old = segment.len();
                let held = Hold::new(held.keep(&entry), &segment, plan);
                let moving = Moving::within(copy, moved, held, old, size);
                drop(segment);
                Ok(moving.go_on(step)?)
            }
            None => {
                copy.part(&segment, &segment, 0, moved)?;
                segment.resize(size)?;
                Ok(Progress::Done(Claim::full(size)))
            }
        }
    }

    /// The segment's entry: through our guard if it guards this struct's
    /// segment (a struct can be forged to carry the guard of another), else
    /// from the table. A name the OS refuses fails here.
    fn entry(&self) -> Result<EntryRef<'a>> {
        self.name
            .canonical()
            .map_err(|errno| Error::Os(errno, Syscall::ShmOpen))?;
        // The struct's name is mostly its guard's own, not a copy.
        let ours = self
            .guard
            .filter(|guard| std::ptr::eq(guard.name(), self.name) || guard.name() == self.name);
        Ok(match ours.and_then(Guard::entry) {
            Some(entry) => EntryRef::Guard(entry),
            None => EntryRef::Table(registry::entry(self.name)),
        })
    }
}

/// The claims an append or trim leaves, once its copy is run to the end.
fn whole(progress: Progress<Claim, Moving>) -> Result<Claim> {
    match progress {
        Progress::Done(claim) => Ok(claim),
        Progress::Going(moving) => Option::from(moving.run_out()?).ok_or(Error::InvalidPayload),
    }
}

/// An operation's result, or the copy it began, to go on with in steps.
#[derive(Debug)]
pub enum Progress<T, S> {
    /// The operation is done.
    Done(T),
    /// The copy goes on: call its `step` until it says it is done.
    Going(S),
}

impl<T, S> Progress<T, S> {
    /// The same progress, what a done operation made mapped by `f`.
    #[cfg_attr(not(feature = "nif"), allow(dead_code))] // for NIF calls
    pub fn map_done<U>(self, f: impl FnOnce(T) -> U) -> Progress<U, S> {
        match self {
            Progress::Done(done) => Progress::Done(f(done)),
            Progress::Going(going) => Progress::Going(going),
        }
    }
}

/// Bytes copied between two looks at the clock: a small part of the
/// shortest step (see [`crate::schedule::step_budget`]), even into fresh
/// memory.
const STEP_CHUNK: u64 = 256 << 10;

/// The step of a copy estimated at `cost` on `scheduling`, if it goes in
/// steps: when steps are taken there, and it is longer than one.
fn in_steps<S: Scheduling>(scheduling: &S, cost: Cost) -> Option<Duration> {
    scheduling.step().filter(|&step| !cost.within(step))
}

/// How far a copy of `len` bytes that goes on in steps has come, and how
/// long it has run.
#[derive(Debug)]
struct Stepped {
    /// Bytes to copy in all.
    len: u64,
    /// Bytes copied so far.
    done: u64,
    /// Parts go from the end to the start (a move up within a segment,
    /// onto bytes still to be moved).
    backwards: bool,
    /// How long the copy's steps have taken so far.
    worked: Duration,
}

impl Stepped {
    fn forward(len: u64) -> Stepped {
        Stepped {
            len,
            done: 0,
            backwards: false,
            worked: Duration::ZERO,
        }
    }

    fn backward(len: u64) -> Stepped {
        Stepped {
            backwards: true,
            ..Stepped::forward(len)
        }
    }

    /// Copies on, chunk by chunk with `copy(start, end)` (offsets into the
    /// copy), for as long as [`schedule::step_budget`] gives a copy that
    /// has run this long, out of steps of `step`; whether the copy is done.
    fn step(
        &mut self,
        step: Duration,
        mut copy: impl FnMut(u64, u64) -> Result<()>,
    ) -> Result<bool> {
        let start = Instant::now();
        let budget = schedule::step_budget(step, self.worked);
        while self.done < self.len {
            let part = (self.len - self.done).min(STEP_CHUNK);
            let at = if self.backwards {
                self.len - self.done - part
            } else {
                self.done
            };
            copy(at, at + part)?;
            self.done += part;
            if start.elapsed() >= budget {
                break;
            }
        }
        self.worked = self.worked.saturating_add(start.elapsed());
        Ok(self.done == self.len)
    }
}

/// A segment a copy going on in steps works on: its turn, held throughout,
/// which file it was, and the copy's plan on it.
#[derive(Debug)]
struct Hold {
    /// The copy's turn on the segment, ended when the copy is dropped.
    turn: Turn,
    /// The file the copy began on.
    identity: Identity,
    /// How the copy goes on this segment.
    plan: Plan,
}

impl Hold {
    fn new(turn: Turn, segment: &Segment, plan: Plan) -> Hold {
        Hold {
            turn,
            identity: segment.identity(),
            plan,
        }
    }

    /// The segment, for the next step: still the file the copy began on,
    /// and still holding every byte the plan copies.
    fn segment(&self) -> Result<InUse<'_>> {
        let segment = self.turn.segment()?;
        if segment.identity() != self.identity || segment.len() < self.plan.end() {
            return Err(Error::InvalidPayload);
        }
        Ok(segment)
    }
}

/// The turns a copy going on in steps holds, on one segment or two.
#[derive(Debug)]
pub struct Holds<'a>([Option<&'a Hold>; 2]);

impl Holds<'_> {
    /// The copy waits between steps, for its caller to take the next:
    /// until [`resume`](Self::resume)d, a thread that waits behind its
    /// turns (a C or Rust call) may run the rest of it with `finish` (the
    /// same `finish` on each of its segments).
    #[cfg_attr(not(feature = "nif"), allow(dead_code))] // steps are for NIF calls
    pub fn yield_to(&self, finish: &Weak<dyn Finish>) {
        self.0
            .iter()
            .flatten()
            .for_each(|hold| hold.turn.yield_to(Weak::clone(finish)));
    }

    /// The copy's caller takes its next step: call it before the step,
    /// under whatever makes sure that the caller and a thread finishing it
    /// do not both step it.
    #[cfg_attr(not(feature = "nif"), allow(dead_code))] // steps are for NIF calls
    pub fn resume(&self) {
        self.0.iter().flatten().for_each(|hold| hold.turn.resume());
    }
}

/// A read that goes on in steps: see [`Progress`].
#[derive(Debug)]
pub struct Reading<B> {
    /// How far the read has come.
    copy: Stepped,
    /// The segment read.
    source: Hold,
    /// Where the bytes go.
    buffer: B,
}

impl<B: DerefMut<Target = [u8]>> Reading<B> {
    /// Reads on for about `step`; whether the read is done.
    pub fn step(&mut self, step: Duration) -> Result<bool> {
        let segment = self.source.segment()?;
        let (plan, buffer) = (&self.source.plan, &mut self.buffer);
        self.copy.step(step, |start, end| {
            segment.read(plan, start, &mut buffer[start as usize..end as usize])
        })
    }

    /// The bytes read; the turn on the segment ends.
    pub fn into_buffer(self) -> B {
        self.buffer
    }

    /// Reads to the end, however long it takes: the bytes read.
    pub fn run_out(mut self) -> Result<B> {
        while !self.step(Duration::MAX)? {}
        Ok(self.into_buffer())
    }

    /// The turn the read holds.
    #[cfg_attr(not(feature = "nif"), allow(dead_code))] // steps are for NIF calls
    pub fn holds(&self) -> Holds<'_> {
        Holds([Some(&self.source), None])
    }
}

/// A write that goes on in steps: see [`Progress`].
#[derive(Debug)]
pub struct Writing {
    /// How far the write has come.
    copy: Stepped,
    /// The segment written.
    target: Hold,
    /// The struct's claims once the write is done.
    claim: Claim,
}

impl Writing {
    /// Writes on for about `step`; whether the write is done. `data` is
    /// what the write began with.
    pub fn step(&mut self, data: &[u8], step: Duration) -> Result<bool> {
        if data.len() as u64 != self.copy.len {
            return Err(Error::InvalidPayload);
        }
        let segment = self.target.segment()?;
        let plan = &self.target.plan;
        self.copy.step(step, |start, end| {
            segment.write(plan, start, &data[start as usize..end as usize])
        })
    }

    /// The struct's claims once the write is done.
    pub fn claim(&self) -> Claim {
        self.claim
    }

    /// The turn the write holds.
    #[cfg_attr(not(feature = "nif"), allow(dead_code))] // steps are for NIF calls
    pub fn holds(&self) -> Holds<'_> {
        Holds([Some(&self.target), None])
    }
}

/// What a split leaves: the struct's claims, the new segment's guard and
/// its claims.
pub type Parts = (Claim, Guard, Claim);

/// What a split, append or trim copies, part by part: bytes `[start, end)`
/// of the copy are those at `from + start` and go to `to + start`.
#[derive(Clone, Copy, Debug)]
enum Move {
    /// From one segment to another, as the two plans say.
    Between {
        from: u64,
        to: u64,
        plans: (Plan, Plan),
    },
    /// Within one segment.
    Within { from: u64, to: u64, plan: Plan },
}

impl Move {
    /// Copies `[start, end)` of the copy from `source` to `target` (the
    /// same segment for a move within one).
    fn part(&self, source: &Segment, target: &Segment, start: u64, end: u64) -> Result<()> {
        match *self {
            Move::Between { from, to, plans } => {
                let plans = (&plans.0, &plans.1);
                source.copy_to(from + start, target, to + start, end - start, plans)
            }
            Move::Within { from, to, plan } => {
                source.copy_within(&plan, from + start, to + start, end - start)
            }
        }
    }

    /// A copy of `len` bytes of this move in steps: from the end when it
    /// moves bytes up within a segment, so that no part overwrites bytes
    /// still to be moved.
    fn stepped(&self, len: u64) -> Stepped {
        match *self {
            Move::Within { from, to, .. } if to > from => Stepped::backward(len),
            _ => Stepped::forward(len),
        }
    }
}

/// What becomes of a split, append or trim once its copy is done, or
/// stopped short.
#[derive(Debug)]
enum Ending {
    /// The new segment of a split: guarded when full, unlinked if the
    /// copy stops short. The claims of the struct split and of the new
    /// segment.
    Split {
        /// The new segment's name.
        name: ShmName,
        /// The new segment, open.
        new: Segment,
        /// The struct's claims after the split, and the new segment's.
        claims: (Claim, Claim),
    },
    /// The segment appended to or trimmed: set to `size` bytes once done;
    /// if it was grown for the copy, put back to `old` bytes if the copy
    /// stops short.
    Resize {
        /// Its size before the operation.
        old: u64,
        /// Its size after.
        size: u64,
    },
}

/// What a split, append or trim that went in steps made.
#[derive(Debug)]
pub enum Moved {
    /// A split's parts.
    Split(Parts),
    /// The struct's claims after an append or trim.
    Resized(Claim),
}

/// A split, append or trim that goes on in steps, holding its turns
/// throughout: see [`Progress`]. Its copy stopped short (by an error, or
/// dropped between steps when its caller went away) leaves the segments as
/// a failed call does: a split's new segment unlinked, a target grown for
/// an append put back to its size. A trim's move cannot be taken back: one
/// stopped short has moved part of the data down (as one that fails
/// because another process shrank its segment).
#[derive(Debug)]
pub struct Moving {
    /// How far the copy has come.
    copy: Stepped,
    /// What it copies, part by part.
    what: Move,
    /// The segment split, appended to or trimmed.
    held: Hold,
    /// The segment appended from, when another one.
    source: Option<Hold>,
    /// `None` once done.
    ending: Option<Ending>,
}

impl Moving {
    /// A move of `len` bytes within the segment `held`, which is resized
    /// from `old` bytes to `size` once the move is done.
    fn within(what: Move, len: u64, held: Hold, old: u64, size: u64) -> Moving {
        Moving {
            copy: what.stepped(len),
            what,
            held,
            source: None,
            ending: Some(Ending::Resize { old, size }),
        }
    }

    /// Copies on for about `step`; whether the copy is done.
    pub fn step(&mut self, step: Duration) -> Result<bool> {
        let held = self.held.segment()?;
        let other = self.source.as_ref().map(Hold::segment).transpose()?;
        let (source, target): (&Segment, &Segment) = match (&self.ending, &other) {
            (Some(Ending::Split { new, .. }), _) => (&held, new),
            (_, Some(source)) => (source, &held),
            (_, None) => (&held, &held),
        };
        let what = self.what;
        self.copy
            .step(step, |start, end| what.part(source, target, start, end))
    }

    /// Ends the operation once the copy is done: guards a split's new
    /// segment, sets an appended or trimmed segment's size.
    pub fn finish(mut self) -> Result<Moved> {
        if self.copy.done < self.copy.len {
            return Err(Error::InvalidPayload);
        }
        match self.ending.take() {
            Some(Ending::Split { name, new, claims }) => {
                Ok(Moved::Split((claims.0, Guard::new(name, &new), claims.1)))
            }
            Some(Ending::Resize { old, size }) => {
                if old > size {
                    self.held.segment()?.resize(size)?;
                }
                Ok(Moved::Resized(Claim::full(size)))
            }
            None => Err(Error::InvalidPayload),
        }
    }

    /// The turns the move holds: its segment's, and the source's when it
    /// copies from another segment.
    #[cfg_attr(not(feature = "nif"), allow(dead_code))] // steps are for NIF calls
    pub fn holds(&self) -> Holds<'_> {
        Holds([Some(&self.held), self.source.as_ref()])
    }

    /// Takes the first step, of about `step`, and finishes if that was
    /// all.
    fn go_on<T>(mut self, step: Duration) -> Result<Progress<T, Moving>>
    where
        Moved: Into<Option<T>>,
    {
        if !self.step(step)? {
            return Ok(Progress::Going(self));
        }
        self.finish()?
            .into()
            .map(Progress::Done)
            .ok_or(Error::InvalidPayload)
    }

    /// Copies to the end, however long it takes, and finishes.
    fn run_out(mut self) -> Result<Moved> {
        while !self.step(Duration::MAX)? {}
        self.finish()
    }
}

impl From<Moved> for Option<Parts> {
    fn from(moved: Moved) -> Option<Parts> {
        match moved {
            Moved::Split(parts) => Some(parts),
            Moved::Resized(_) => None,
        }
    }
}

impl From<Moved> for Option<Claim> {
    fn from(moved: Moved) -> Option<Claim> {
        match moved {
            Moved::Resized(claim) => Some(claim),
            Moved::Split(_) => None,
        }
    }
}

impl Drop for Moving {
    fn drop(&mut self) {
        match self.ending.take() {
            Some(Ending::Split { name, .. }) => sys::unlink(&name),
            Some(Ending::Resize { old, size }) if old < size => {
                if let Ok(mut segment) = self.held.segment() {
                    let _ = segment.resize(old);
                }
            }
            _ => {}
        }
    }
}

/// An entry borrowed from a guard, or taken from the table.
enum EntryRef<'a> {
    Guard(&'a Arc<Entry>),
    Table(Arc<Entry>),
}

impl Deref for EntryRef<'_> {
    type Target = Arc<Entry>;

    fn deref(&self) -> &Arc<Entry> {
        match self {
            EntryRef::Guard(entry) => entry,
            EntryRef::Table(entry) => entry,
        }
    }
}

/// Makes `segment` (now `old` bytes) `len` bytes long with `[from, len)`
/// reserved, runs `fill`, and only then shrinks it if `len` is less than
/// `old`: a failure at any step puts the size back as it was.
fn grow_then(
    segment: &mut Segment,
    old: u64,
    len: u64,
    from: u64,
    fill: impl FnOnce(&Segment) -> Result<()>,
) -> Result<()> {
    grow(segment, old, len, from)?;
    if let Err(error) = fill(segment) {
        if old < len {
            let _ = segment.resize(old);
        }
        return Err(error);
    }
    if old > len {
        segment.resize(len)?;
    }
    Ok(())
}

/// Makes `segment` (now `old` bytes) at least `len` bytes long with
/// `[from, len)` reserved, or leaves its size as it was.
fn grow(segment: &mut Segment, old: u64, len: u64, from: u64) -> Result<()> {
    if old < len {
        resize_reserving(segment, len, from, len)
    } else {
        segment.reserve(from, len)
    }
}

/// Resizes `segment` to `len` and reserves `[from, to)`, or leaves its size
/// as it was.
fn resize_reserving(segment: &mut Segment, len: u64, from: u64, to: u64) -> Result<()> {
    let old = segment.len();
    segment.resize(len)?;
    segment.reserve(from, to).inspect_err(|_| {
        let _ = segment.resize(old);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Held;
    use std::cell::Cell;

    /// Copies in steps of one chunk each; remembers the cost admitted.
    #[derive(Default)]
    struct InSteps {
        admitted: Cell<Option<Cost>>,
    }

    impl Scheduling for InSteps {
        type Refusal = Error;

        fn lock<'e>(&self, entry: &'e Entry, access: Access) -> Result<Held<'e>> {
            entry.lock(access)
        }

        fn admit(&self, cost: Cost, _holds: &[&Held<'_>]) -> Result<()> {
            self.admitted.set(Some(cost));
            Ok(())
        }

        fn step(&self) -> Option<Duration> {
            Some(Duration::ZERO)
        }
    }

    const MIB: u64 = 1 << 20;

    fn pattern(len: u64) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    fn going<T: std::fmt::Debug>(progress: Progress<T, Moving>) -> Moving {
        match progress {
            Progress::Going(moving) => moving,
            Progress::Done(done) => panic!("done in one step: {done:?}"),
        }
    }

    fn size_of(guard: &Guard) -> u64 {
        sys::status_of_name(guard.name()).unwrap().len
    }

    #[test]
    fn the_cost_admitted_is_the_plan_that_is_copied() {
        let guard = Shm::allocate(None, Claim::full(4 * MIB)).unwrap();
        let shm = Shm::of_guard(&guard, Claim::full(4 * MIB));
        let scheduling = InSteps::default();
        let Progress::Going(mut writing) = shm.write_with(&scheduling, &[1; 4 << 20]).unwrap()
        else {
            panic!("4 MiB in one step of one chunk");
        };
        // Never written: pwrite, every page fresh, as the plan of a write
        // into a new segment.
        assert_eq!(
            scheduling.admitted.get(),
            Some(Plan::into_new(4 * MIB).cost())
        );
        while !writing.step(&[1; 4 << 20], Duration::ZERO).unwrap() {}
        drop(writing);
        let split = going(shm.split_at_with(&scheduling, MIB).unwrap());
        let read = split.held.plan;
        assert_eq!(
            scheduling.admitted.get(),
            Some(read.cost() + Plan::into_new(3 * MIB).cost())
        );
        let Move::Between { plans, .. } = split.what else {
            panic!("a split copies between segments");
        };
        assert_eq!(plans, (read, Plan::into_new(3 * MIB)));
    }

    #[test]
    fn a_trim_in_steps_moves_every_byte_down() {
        let data = pattern(3 * MIB + 5);
        let guard = allocate(&data);
        let shm = Shm::of_guard(&guard, Claim::full(data.len() as u64));
        let mut trim = going(shm.trim_with(&InSteps::default(), 7).unwrap());
        while !trim.step(Duration::ZERO).unwrap() {}
        let claim = Option::<Claim>::from(trim.finish().unwrap()).unwrap();
        assert_eq!(claim, Claim::full(data.len() as u64 - 7));
        assert_eq!(size_of(&guard), claim.size);
        assert_eq!(
            Shm::of_guard(&guard, claim).read(claim.size).unwrap(),
            &data[7..]
        );
    }

    #[test]
    fn an_append_onto_itself_in_steps_moves_up_from_the_end() {
        let data = pattern(3 * MIB);
        let guard = allocate(&data);
        let whole = Shm::of_guard(&guard, Claim::full(3 * MIB));
        let half = Shm::of_guard(
            &guard,
            Claim {
                size: MIB,
                capacity: 3 * MIB,
            },
        );
        let mut append = going(half.append_with(&InSteps::default(), &whole).unwrap());
        while !append.step(Duration::ZERO).unwrap() {}
        let claim = Option::<Claim>::from(append.finish().unwrap()).unwrap();
        let expected = [&data[..MIB as usize], &data[..]].concat();
        assert_eq!(
            Shm::of_guard(&guard, claim).read(4 * MIB).unwrap(),
            expected
        );
    }

    #[test]
    fn an_append_stopped_between_steps_puts_the_target_back() {
        let (target, _source, append) = started_append();
        assert_eq!(size_of(&target), 8 * MIB + 3, "grown for the copy");
        drop(append);
        assert_eq!(size_of(&target), 3);
        assert_eq!(
            Shm::of_guard(&target, Claim::full(3)).read(3).unwrap(),
            b"abc"
        );
    }

    #[test]
    fn a_split_stopped_between_steps_leaves_no_new_segment() {
        let guard = allocate(&pattern(2 * MIB));
        let shm = Shm::of_guard(&guard, Claim::full(2 * MIB));
        let split = going(shm.split_at_with(&InSteps::default(), 1).unwrap());
        let Some(Ending::Split { name, .. }) = &split.ending else {
            panic!("a split ends in a new segment");
        };
        let name = name.clone();
        assert!(sys::status_of_name(&name).is_ok());
        drop(split);
        assert!(sys::status_of_name(&name).is_err(), "unlinked");
        assert_eq!(size_of(&guard), 2 * MIB);
    }

    fn allocate(data: &[u8]) -> Guard {
        let guard = Shm::allocate(None, Claim::full(data.len() as u64)).unwrap();
        Shm::of_guard(&guard, Claim::full(0)).write(data).unwrap();
        guard
    }

    /// A move paused between steps, which a call waiting behind it
    /// finishes; what it came to.
    struct Paused {
        moving: std::sync::Mutex<Option<Moving>>,
        ended: std::sync::Mutex<Option<Result<Moved>>>,
    }

    impl Finish for Paused {
        fn finish(&self) {
            if let Some(moving) = self.moving.lock().unwrap().take() {
                *self.ended.lock().unwrap() = Some(moving.run_out());
            }
        }
    }

    fn pause(moving: Moving) -> Arc<Paused> {
        let paused = Arc::new(Paused {
            moving: std::sync::Mutex::new(Some(moving)),
            ended: std::sync::Mutex::new(None),
        });
        let finish: Weak<dyn Finish> = Arc::downgrade(&paused) as Weak<Paused>;
        let moving = paused.moving.lock().unwrap();
        moving.as_ref().unwrap().holds().yield_to(&finish);
        drop(moving);
        paused
    }

    /// An append of 8 MiB of [`pattern`] to `abc`, after its first step:
    /// the target's and source's guards, and the append.
    fn started_append() -> (Guard, Guard, Moving) {
        let target = allocate(b"abc");
        let source = allocate(&pattern(8 * MIB));
        let shm = Shm::of_guard(&target, Claim::full(3));
        let from = Shm::of_guard(&source, Claim::full(8 * MIB));
        let mut append = going(shm.append_with(&InSteps::default(), &from).unwrap());
        assert!(!append.step(Duration::ZERO).unwrap());
        (target, source, append)
    }

    /// [`started_append`], paused between its steps.
    fn paused_append() -> (Guard, Guard, Arc<Paused>) {
        let (target, source, append) = started_append();
        (target, source, pause(append))
    }

    #[test]
    fn an_append_paused_between_steps_is_finished_by_a_call_waiting_behind_it() {
        let (target, _source, paused) = paused_append();
        // The append holds the target: this read waits for it, on this
        // thread, and so runs the rest of it.
        let len = 8 * MIB + 3;
        let read = Shm::of_guard(&target, Claim::full(len)).read(len).unwrap();
        assert_eq!(read, [&b"abc"[..], &pattern(8 * MIB)].concat());
        let moved = paused.ended.lock().unwrap().take().unwrap().unwrap();
        assert_eq!(Option::<Claim>::from(moved), Some(Claim::full(len)));
    }

    #[test]
    fn an_append_failing_as_a_waiting_call_finishes_it_puts_the_target_back() {
        let (target, source, paused) = paused_append();
        // Another OS process shrinks the source meanwhile.
        let path = [&b"/dev/shm"[..], &source.name().to_posix()].concat();
        let path = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&path);
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|file| file.set_len(MIB))
            .unwrap();
        assert_eq!(
            Shm::of_guard(&target, Claim::full(3)).read(3).unwrap(),
            b"abc"
        );
        let ended = paused.ended.lock().unwrap().take().unwrap();
        assert_eq!(ended.err(), Some(Error::InvalidPayload));
        assert_eq!(size_of(&target), 3, "put back as a failed append is");
    }

    #[test]
    fn every_spelling_of_a_name_is_the_same_segment() {
        let guard = allocate(&[7; 100_000]);
        let posix = guard.name().to_posix();
        let bare = ShmName::new(&posix[1..]).unwrap();
        let target = Shm::new(guard.name(), Some(&guard), Claim::full(10));
        let source = Shm::new(&bare, None, Claim::full(100_000));
        assert_eq!(target.append(&source), Ok(Claim::full(100_010)));
        let data = Shm::new(&bare, None, Claim::full(100_010))
            .read(100_010)
            .unwrap();
        assert_eq!(data, vec![7; 100_010]);
    }

    #[test]
    fn a_failed_append_leaves_the_target_as_it_was() {
        let target = allocate(b"abc");
        let source = allocate(&[1; 100]);
        // The source claims more than it has: nothing changes.
        let forged = Shm::new(source.name(), Some(&source), Claim::full(101));
        let shm = Shm::of_guard(&target, Claim::full(3));
        assert_eq!(shm.append(&forged), Err(Error::InvalidPayload));
        assert_eq!(shm.read(3).unwrap(), b"abc");
        let real = sys::status_of_name(target.name()).unwrap().len;
        assert_eq!(real, 3);
    }

    #[test]
    fn appending_shrinks_a_larger_target_only_once_done() {
        let target = Shm::allocate(
            None,
            Claim {
                size: 0,
                capacity: 1000,
            },
        )
        .unwrap();
        let shm = Shm::of_guard(
            &target,
            Claim {
                size: 0,
                capacity: 1000,
            },
        );
        let written = shm.write(b"ab").unwrap();
        let source = allocate(b"cd");
        let shm = Shm::of_guard(&target, written);
        let appended = shm.append(&Shm::of_guard(&source, Claim::full(2)));
        assert_eq!(appended, Ok(Claim::full(4)));
        assert_eq!(
            Shm::of_guard(&target, Claim::full(4)).read(4).unwrap(),
            b"abcd"
        );
        assert_eq!(sys::status_of_name(target.name()).unwrap().len, 4);
    }

    #[test]
    fn forged_claims_are_invalid_payload_before_anything_else() {
        let guard = allocate(&[1; 16]);
        let huge = Claim::full(1 << 40);
        assert_eq!(
            Shm::of_guard(&guard, huge).read(1 << 40),
            Err(Error::InvalidPayload)
        );
    }

    #[test]
    fn a_read_larger_than_memory_is_enomem() {
        let guard = Shm::allocate(None, Claim::full(1 << 50)).unwrap();
        let shm = Shm::of_guard(&guard, Claim::full(1 << 50));
        assert_eq!(
            shm.read(1 << 50),
            Err(Error::Os(Errno::ENOMEM, Syscall::Mmap))
        );
    }

    #[test]
    fn names_the_os_refuses_fail_before_anything() {
        let name = ShmName::new(&[b'a'; 300]).unwrap();
        let shm = Shm::new(&name, None, Claim::full(0));
        let too_long = Err(Error::Os(Errno::ENAMETOOLONG, Syscall::ShmOpen));
        assert_eq!(shm.read(0).map(drop), too_long);
        assert_eq!(shm.add_guard().map(drop), too_long);
        assert_eq!(
            Shm::allocate(Some(name.clone()), Claim::full(0)).map(drop),
            too_long
        );
    }
}
