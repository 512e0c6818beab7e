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
//! entry's.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;

use crate::cost::Cost;
use crate::error::{Error, Result, Syscall};
use crate::exclusion::Access;
use crate::guard::Guard;
use crate::name::ShmName;
use crate::registry::{self, Entry, Turn};
use crate::schedule::{Blocking, Scheduling};
use crate::segment::Segment;
use crate::sys::{self, Identity};

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
        let guarded_elsewhere = || self.foreign_guard && registry::entry(self.name).guards() > 0;
        if self.guard.is_some() || guarded_elsewhere() {
            return Err(Error::AlreadyGuarded);
        }
        let segment = Segment::open(self.name)?;
        Ok(Guard::new(self.name.clone(), &segment))
    }

    /// Resizes the segment to exactly `capacity` bytes; data past it is lost.
    pub fn set_capacity(&self, capacity: u64) -> Result<Claim> {
        self.set_capacity_with(&Blocking, capacity)
    }

    /// The first `len` bytes of data.
    pub fn read(&self, len: u64) -> Result<Vec<u8>> {
        let read = self.read_with(&Blocking, len, |len| {
            let mut buffer = Vec::new();
            buffer.try_reserve_exact(len).ok()?;
            buffer.resize(len, 0);
            Some(buffer)
        })?;
        match read {
            Progress::Done(buffer) => Ok(buffer),
            Progress::Going(mut reading) => {
                while !reading.step(Duration::MAX)? {}
                Ok(reading.into_buffer())
            }
        }
    }

    /// Replaces the data with `data`, growing the segment when it is too
    /// small. Whatever the claims say, the result is right.
    pub fn write(&self, data: &[u8]) -> Result<Claim> {
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
        self.split_at_with(&Blocking, position)
    }

    /// Appends `source`'s data to this struct's data; the segment becomes
    /// exactly as large as both. `source` is unchanged; it may be this
    /// struct's segment itself.
    pub fn append(&self, source: &Shm) -> Result<Claim> {
        self.append_with(&Blocking, source)
    }

    /// Drops the first `bytes` bytes of data and shrinks the segment to the
    /// rest. With `bytes == 0` this is `trim/1`: shrinking to the data.
    pub fn trim(&self, bytes: u64) -> Result<Claim> {
        self.trim_with(&Blocking, bytes)
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
    /// # Safety
    ///
    /// Shared memory is shared: other OS processes, and other libraries in
    /// this one, may write or shrink the segment at any time, which Rust does
    /// not allow for memory behind a `&[u8]`. The caller must know that
    /// nothing else changes the data while `f` runs (as a pipeline that hands
    /// a segment from one stage to the next does). Otherwise use
    /// [`read`](Self::read), which copies.
    pub unsafe fn data<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        let entry = self.entry()?;
        let held = entry.lock(Access::Shared);
        let segment = held.segment()?;
        self.claim.check(segment.len())?;
        // SAFETY: forwarded to the caller.
        unsafe { segment.with_bytes(self.claim.size, f) }
    }

    /// Runs `f` on the data (`size` bytes) in place, to change it; its pages
    /// are reserved first, so that a full `/dev/shm` is an error before `f`
    /// runs. Other calls on the segment in this OS process wait until `f`
    /// returns. See [`data`](Self::data).
    ///
    /// # Safety
    ///
    /// As for [`data`](Self::data): nothing else may read or change the data
    /// while `f` runs. Otherwise use [`write`](Self::write).
    pub unsafe fn data_mut<R>(&self, f: impl FnOnce(&mut [u8]) -> R) -> Result<R> {
        let entry = self.entry()?;
        let held = entry.lock(Access::Exclusive);
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
        let cost = Cost::copy(segment.read_route(0, len), len) + Cost::new_buffer(len);
        scheduling.admit(cost, &[&held])?;
        let mut buffer = alloc(buffer_len).ok_or_else(too_large)?;
        match scheduling.step().filter(|&step| !cost.within(step)) {
            Some(step) => {
                let mut reading = Reading {
                    copy: Stepped::new(held.keep(&entry), &segment, len),
                    buffer,
                };
                drop(segment);
                Ok(match reading.step(step)? {
                    true => Progress::Done(reading.into_buffer()),
                    false => Progress::Going(reading),
                })
            }
            None => {
                segment.read(0, &mut buffer)?;
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
        let (route, fresh) = segment.write_route(0, size);
        let cost = Cost::copy(route, size) + Cost::fresh_pages(fresh);
        scheduling.admit(cost, &[&held])?;
        if segment.len() < capacity {
            resize_reserving(&mut segment, capacity, 0, size)?;
        }
        match scheduling.step().filter(|&step| !cost.within(step)) {
            Some(step) => {
                // Room for all of it first: a full /dev/shm fails the write
                // before it changes anything.
                segment.reserve(0, size)?;
                let mut writing = Writing {
                    copy: Stepped::new(held.keep(&entry), &segment, size),
                    claim,
                };
                drop(segment);
                Ok(match writing.step(data, step)? {
                    true => Progress::Done(claim),
                    false => Progress::Going(writing),
                })
            }
            None => {
                segment.write(0, data)?;
                Ok(Progress::Done(claim))
            }
        }
    }

    pub(crate) fn split_at_with<S: Scheduling>(
        &self,
        scheduling: &S,
        position: u64,
    ) -> std::result::Result<(Claim, Guard, Claim), S::Refusal> {
        let right = self
            .claim
            .size
            .checked_sub(position)
            .ok_or(Error::InvalidPosition)?;
        let entry = self.entry()?;
        let held = scheduling.lock(&entry, Access::Shared)?;
        let segment = held.segment()?;
        self.claim.check(segment.len())?;
        let cost = Cost::copy(segment.read_route(position, right), right);
        scheduling.admit(cost + Cost::fresh_pages(right), &[&held])?;
        let (name, new) = Segment::create_unique(right)?;
        if let Err(error) = segment.copy_to(position, &new, 0, right) {
            sys::unlink(&name);
            return Err(error.into());
        }
        let left = Claim {
            size: position,
            ..self.claim
        };
        Ok((left, Guard::new(name, &new), Claim::full(right)))
    }

    pub(crate) fn append_with<S: Scheduling>(
        &self,
        scheduling: &S,
        source: &Shm,
    ) -> std::result::Result<Claim, S::Refusal> {
        let (at, len) = (self.claim.size, source.claim.size);
        let size = at.checked_add(len).ok_or(Error::InvalidPayload)?;
        let (target_entry, source_entry) = (self.entry()?, source.entry()?);
        if Arc::ptr_eq(&target_entry, &source_entry) {
            let held = scheduling.lock(&target_entry, Access::Exclusive)?;
            let mut segment = held.segment()?;
            self.claim.check(segment.len())?;
            source.claim.check(segment.len())?;
            scheduling.admit(append_cost(&segment, &segment, at, len), &[&held])?;
            let old = segment.len();
            grow_then(&mut segment, old, size, at, |segment| {
                segment.copy_within(0, at, len)
            })?;
            return Ok(Claim::full(size));
        }
        let (target_held, source_held) = scheduling.lock_pair(
            (&target_entry, Access::Exclusive),
            (&source_entry, Access::Shared),
        )?;
        let mut target = target_held.segment()?;
        let from = source_held.segment()?;
        self.claim.check(target.len())?;
        source.claim.check(from.len())?;
        scheduling.admit(
            append_cost(&from, &target, at, len),
            &[&target_held, &source_held],
        )?;
        let old = target.len();
        grow_then(&mut target, old, size, at, |target| {
            from.copy_to(0, target, at, len)
        })?;
        Ok(Claim::full(size))
    }

    pub(crate) fn trim_with<S: Scheduling>(
        &self,
        scheduling: &S,
        bytes: u64,
    ) -> std::result::Result<Claim, S::Refusal> {
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
        let (route, _) = segment.write_route(0, moved);
        scheduling.admit(
            Cost::copy(route, moved) + Cost::resize(segment.len(), size),
            &[&held],
        )?;
        if moved > 0 {
            segment.copy_within(bytes, 0, size)?;
        }
        segment.resize(size)?;
        Ok(Claim::full(size))
    }

    /// The segment's entry: through our guard if it guards this struct's
    /// segment (a struct can be forged to carry the guard of another), else
    /// from the table. A name the OS refuses fails here.
    fn entry(&self) -> Result<EntryRef<'a>> {
        self.name
            .canonical()
            .map_err(|errno| Error::Os(errno, Syscall::ShmOpen))?;
        Ok(match self.guard {
            // The struct's name is mostly its guard's own, not a copy.
            Some(guard) if std::ptr::eq(guard.name(), self.name) || guard.name() == self.name => {
                EntryRef::Guard(guard.entry())
            }
            _ => EntryRef::Table(registry::entry(self.name)),
        })
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

/// Bytes copied between two looks at the clock.
const STEP_CHUNK: usize = 1 << 20;

/// A copy of `len` bytes from the start of a segment that goes on in steps,
/// holding its turn on the segment throughout.
#[derive(Debug)]
struct Stepped {
    turn: Turn,
    identity: Identity,
    len: usize,
    done: usize,
}

impl Stepped {
    fn new(turn: Turn, segment: &Segment, len: u64) -> Stepped {
        Stepped {
            turn,
            identity: segment.identity(),
            // The copy's buffer or data exists: its length is a usize.
            len: usize::try_from(len).unwrap_or(usize::MAX),
            done: 0,
        }
    }

    /// Copies on, chunk by chunk with `copy(segment, start, end)`, for
    /// about `budget`; whether the copy is done. The segment must still be
    /// the one the copy began on, and still hold the bytes.
    fn step(
        &mut self,
        budget: Duration,
        mut copy: impl FnMut(&Segment, usize, usize) -> Result<()>,
    ) -> Result<bool> {
        let start = Instant::now();
        let segment = self.turn.segment()?;
        if segment.identity() != self.identity || segment.len() < self.len as u64 {
            return Err(Error::InvalidPayload);
        }
        while self.done < self.len {
            let end = self.len.min(self.done.saturating_add(STEP_CHUNK));
            copy(&segment, self.done, end)?;
            self.done = end;
            if start.elapsed() >= budget {
                break;
            }
        }
        Ok(self.done == self.len)
    }
}

/// A read that goes on in steps: see [`Progress`].
#[derive(Debug)]
pub struct Reading<B> {
    copy: Stepped,
    buffer: B,
}

impl<B: DerefMut<Target = [u8]>> Reading<B> {
    /// Reads on for about `budget`; whether the read is done.
    pub fn step(&mut self, budget: Duration) -> Result<bool> {
        let buffer = &mut self.buffer;
        self.copy.step(budget, |segment, start, end| {
            segment.read(start as u64, &mut buffer[start..end])
        })
    }

    /// The bytes read; the turn on the segment ends.
    pub fn into_buffer(self) -> B {
        self.buffer
    }
}

/// A write that goes on in steps: see [`Progress`].
#[derive(Debug)]
pub struct Writing {
    copy: Stepped,
    claim: Claim,
}

impl Writing {
    /// Writes on for about `budget`; whether the write is done. `data` is
    /// what the write began with.
    pub fn step(&mut self, data: &[u8], budget: Duration) -> Result<bool> {
        if data.len() != self.copy.len {
            return Err(Error::InvalidPayload);
        }
        self.copy.step(budget, |segment, start, end| {
            segment.write(start as u64, &data[start..end])
        })
    }

    /// The struct's claims once the write is done.
    pub fn claim(&self) -> Claim {
        self.claim
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

/// What appending `len` bytes of `source` at `at` in `target` costs.
fn append_cost(source: &Segment, target: &Segment, at: u64, len: u64) -> Cost {
    let (route, fresh) = target.write_route(at, len);
    let read = Cost::copy(source.read_route(0, len), len);
    read + Cost::copy(route, len) + Cost::fresh_pages(fresh) + Cost::resize(target.len(), at + len)
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
    if old < len {
        resize_reserving(segment, len, from, len)?;
    } else {
        segment.reserve(from, len)?;
    }
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

    fn allocate(data: &[u8]) -> Guard {
        let guard = Shm::allocate(None, Claim::full(data.len() as u64)).unwrap();
        Shm::of_guard(&guard, Claim::full(0)).write(data).unwrap();
        guard
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
