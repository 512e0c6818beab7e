//! An open segment, as one call sees it: its descriptor, the mapping kept
//! for it, and for each access the choice between copying through that
//! mapping and copying with `pread`/`pwrite`.
//!
//! Owns the bookkeeping of an open segment (its size for this call, the
//! prefix whose pages are reserved, whether it is busy enough to map); the
//! copies themselves are the mapping's ([`crate::mapping`]) or the I/O
//! loops' ([`crate::io`]). Knows nothing of names, locks or claims.
//!
//! Nothing remembered here can make a copy touch a page another process
//! dropped: the size is read anew (`fstat`) at the start of every call, the
//! reserved prefix is forgotten as soon as the segment holds fewer pages than
//! it, and a mapping that lost pages is dropped. A shrink during a copy is
//! the mapping's to survive.

use std::cell::{Cell, RefCell};
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use nix::errno::Errno;

use crate::cost::{Cost, Route};
use crate::error::{Error, Result, Syscall};
use crate::io;
use crate::mapping::{Fault, Mapping};
use crate::name::ShmName;
use crate::sys::{self, Identity, Status};

/// How often [`Segment::create_unique`] draws a new name after `EEXIST`.
const CREATE_ATTEMPTS: usize = 1000;

/// Segments up to this size created [`Pages::Reserved`] have their pages
/// reserved as they are made; larger ones start sparse all the same, their
/// pages reserved when first mapped (which may be never).
const RESERVED_AT_CREATION: u64 = 1 << 20;

/// How a new segment's pages start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pages {
    /// Sparse, as `ftruncate` leaves them (Shmex 0.5.1's segments): pages
    /// are allocated as they are written.
    Sparse,
    /// Reserved at once (`fallocate`, which sizes the file in the same call),
    /// for a segment that is mapped and filled next, as C callers do; see
    /// [`RESERVED_AT_CREATION`].
    Reserved,
}

/// Sizes the new, empty segment `fd` to `len` bytes.
fn size_new(fd: BorrowedFd, len: u64, pages: Pages) -> Result<()> {
    let reserve = pages == Pages::Reserved && len > 0 && len <= RESERVED_AT_CREATION;
    // Not reserved (a full /dev/shm), it starts sparse, as it would have:
    // mapping it reserves its pages, or says ENOSPC.
    if reserve && sys::allocate(fd, len).is_ok() {
        return Ok(());
    }
    sys::resize(fd, len)
}

/// A segment's descriptor and what is known of it between calls. Shared by
/// the calls on the segment; those that change it hold it exclusively (the
/// caller's turn), those that read it may run together.
#[derive(Debug)]
pub(crate) struct Open {
    fd: OwnedFd,
    identity: Identity,
    /// `[0, backed)` has its pages reserved by us.
    backed: AtomicU64,
    /// The memory its pages took when last seen.
    allocated: AtomicU64,
}

/// An open segment for the length of one call. What keeps it open between
/// calls (its entry in the registry) asks it at the end of the call what
/// it mapped or lost ([`Segment::new_mapping`]).
#[derive(Debug)]
pub(crate) struct Segment {
    open: Arc<Open>,
    /// The mapping to copy through, when the segment is busy enough.
    mapping: RefCell<Option<Arc<Mapping>>>,
    /// Whether `mapping` changed during the call: made anew, or dropped
    /// because it lost pages.
    remapped: Cell<bool>,
    busy: bool,
    len: u64,
    /// Every page up to `len` is in memory (as of this call's start).
    no_holes: bool,
}

impl Open {
    fn new(fd: OwnedFd, identity: Identity) -> Open {
        Open {
            fd,
            identity,
            backed: AtomicU64::new(0),
            allocated: AtomicU64::new(0),
        }
    }

    /// How many bytes of memory the segment's pages took when last seen.
    pub fn allocated(&self) -> u64 {
        self.allocated.load(Ordering::Relaxed)
    }

    /// The descriptor's number: a measure of how many files the process
    /// has open (descriptors are allocated lowest first).
    pub fn descriptor_number(&self) -> i32 {
        use std::os::fd::AsRawFd;
        self.fd.as_raw_fd()
    }

    fn backed(&self) -> u64 {
        self.backed.load(Ordering::Acquire)
    }
}

impl Segment {
    /// Creates the segment `name`, `len` zero bytes long and sparse;
    /// `EEXIST` if it exists.
    pub fn create(name: &ShmName, len: u64) -> Result<Segment> {
        Segment::create_as(name, len, Pages::Sparse)
    }

    /// Creates a sparse segment of `len` zero bytes under a fresh generated
    /// name.
    pub fn create_unique(len: u64) -> Result<(ShmName, Segment)> {
        Segment::create_unique_as(len, Pages::Sparse)
    }

    /// Creates the segment `name`, `len` zero bytes long, its pages as
    /// `pages` says; `EEXIST` if it exists. A segment that cannot be sized
    /// is unlinked again.
    pub fn create_as(name: &ShmName, len: u64, pages: Pages) -> Result<Segment> {
        let fd = sys::create(name)?;
        let sized = size_new(fd.as_fd(), len, pages).and_then(|()| sys::status_of(fd.as_fd()));
        match sized {
            Ok(status) => Ok(Segment::fresh(fd, status)),
            Err(error) => {
                sys::unlink(name);
                Err(error)
            }
        }
    }

    /// Creates a segment of `len` zero bytes under a fresh generated name,
    /// its pages as `pages` says.
    pub fn create_unique_as(len: u64, pages: Pages) -> Result<(ShmName, Segment)> {
        // A generated segment is only safe from leaking once this process's
        // session exists: a sweep finds it by its tag then.
        crate::leftovers::start();
        let mut attempts = 0;
        loop {
            let name = ShmName::generate();
            match Segment::create_as(&name, len, pages) {
                Err(Error::Os(Errno::EEXIST, _)) if attempts < CREATE_ATTEMPTS => attempts += 1,
                created => return created.map(|segment| (name, segment)),
            }
        }
    }

    /// Opens the existing segment `name`.
    pub fn open(name: &ShmName) -> Result<Segment> {
        let fd = sys::open(name)?;
        let status = sys::status_of(fd.as_fd())?;
        Ok(Segment::fresh(fd, status))
    }

    /// Starts a call on a segment kept `open`, with its `mapping`: reads its
    /// size. `Err(open)` back when its name no longer leads to it (unlinked,
    /// perhaps replaced): it is not the segment the name means any more.
    pub fn begin(
        open: Arc<Open>,
        mapping: Option<Arc<Mapping>>,
        busy: bool,
    ) -> Result<std::result::Result<Segment, Arc<Open>>> {
        let status = sys::status_of(open.fd.as_fd())?;
        if !status.linked {
            return Ok(Err(open));
        }
        Ok(Ok(Segment::with_status(open, mapping, busy, status)))
    }

    fn fresh(fd: OwnedFd, status: Status) -> Segment {
        let open = Arc::new(Open::new(fd, status.identity));
        Segment::with_status(open, None, false, status)
    }

    fn with_status(
        open: Arc<Open>,
        mapping: Option<Arc<Mapping>>,
        busy: bool,
        status: Status,
    ) -> Segment {
        if open.allocated() != status.allocated {
            open.allocated.store(status.allocated, Ordering::Relaxed);
        }
        // Pages we reserved may have been dropped by another process since:
        // then we know nothing of where they are.
        if status.allocated < open.backed() {
            open.backed.store(0, Ordering::Release);
        }
        Segment {
            no_holes: status.has_no_holes(),
            len: status.len,
            mapping: RefCell::new(mapping),
            remapped: Cell::new(false),
            busy,
            open,
        }
    }

    /// The segment's size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Which file this is.
    pub fn identity(&self) -> Identity {
        self.open.identity
    }

    /// The mapping to keep for later calls, if it changed during this one
    /// (`Some(None)`: the kept one lost pages and is to be forgotten).
    pub fn new_mapping(&self) -> Option<Option<Arc<Mapping>>> {
        self.remapped.get().then(|| self.mapping.borrow().clone())
    }

    /// What to keep of the segment for later calls.
    pub fn to_keep(&self) -> &Arc<Open> {
        &self.open
    }

    /// Sets the size: growing adds zero bytes, shrinking drops the tail.
    pub fn resize(&mut self, len: u64) -> Result<()> {
        sys::resize(self.fd(), len)?;
        // Growing adds a hole; shrinking keeps what had no holes so.
        self.no_holes = self.no_holes && len <= self.len;
        self.len = len;
        self.open.backed.fetch_min(len, Ordering::AcqRel);
        Ok(())
    }

    /// Reserves the pages of `[offset, end)`: afterwards writing there
    /// cannot fail for lack of room.
    pub fn reserve(&self, offset: u64, end: u64) -> Result<()> {
        let backed = self.open.backed();
        if end <= offset.max(backed) || self.no_holes && end <= self.len {
            return Ok(());
        }
        let start = if offset <= backed { backed } else { offset };
        sys::reserve(self.fd(), start, end - start)?;
        if offset <= backed {
            self.open.backed.fetch_max(end, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Plans reading `[offset, offset + len)` (see [`Plan`]): through the
    /// mapping when the segment is busy and has no holes there, else with
    /// `pread`, which gives a hole's zeros without allocating (a failed or
    /// large read must not commit memory).
    pub fn plan_read(&self, offset: u64, len: u64) -> Plan {
        let end = offset.saturating_add(len);
        Plan {
            start: offset,
            end,
            bytes: len,
            route: self.route(end),
            fresh: 0,
        }
    }

    /// Plans writing `[offset, offset + len)`, which may lie past the end
    /// of a segment to be grown first: through the mapping when the segment
    /// is busy and its pages there are in memory already, else with
    /// `pwrite`, which fills pages written for the first time several times
    /// faster than page faults do.
    pub fn plan_write(&self, offset: u64, len: u64) -> Plan {
        let end = offset.saturating_add(len);
        Plan {
            start: offset,
            end,
            bytes: len,
            route: self.route(end),
            fresh: self.unreserved(offset, end),
        }
    }

    /// Plans moving `len` bytes from `from` to `to` within the segment, as
    /// a write of `[to, to + len)` whose source lies in the same range of
    /// the segment.
    pub fn plan_move(&self, from: u64, to: u64, len: u64) -> Plan {
        let end = from.max(to).saturating_add(len);
        Plan {
            start: from.min(to),
            end,
            bytes: len,
            route: self.route(end),
            fresh: self.unreserved(to, to.saturating_add(len)),
        }
    }

    /// How a copy touching `[0, end)` goes: see [`Segment::plan_read`].
    fn route(&self, end: u64) -> Route {
        if self.is_busy() && self.readable_in_place(end) {
            Route::Mapped {
                warm: self.has_mapping(end),
            }
        } else {
            Route::Calls
        }
    }

    /// How many bytes of `[offset, end)` are pages not reserved yet.
    fn unreserved(&self, offset: u64, end: u64) -> u64 {
        if self.no_holes && end <= self.len {
            0
        } else {
            end.saturating_sub(offset.max(self.open.backed()))
        }
    }

    /// Fills `buffer` with the bytes at `offset`, a part of the copy
    /// `plan` planned.
    pub fn read(&self, plan: &Plan, offset: u64, buffer: &mut [u8]) -> Result<()> {
        let end = self.check_part(plan, offset, buffer.len() as u64)?;
        if buffer.is_empty() {
            return Ok(());
        }
        if self.maps(plan) {
            if let Some(read) = self.in_mapping(|map| map.read(offset, &mut *buffer)) {
                return read.or_else(|fault| self.failed(fault, end));
            }
        }
        io::read_exact(self.fd(), buffer, offset)
    }

    /// Writes `data` at `offset`, a part of the copy `plan` planned, which
    /// must lie within the segment.
    pub fn write(&self, plan: &Plan, offset: u64, data: &[u8]) -> Result<()> {
        let end = self.check_part(plan, offset, data.len() as u64)?;
        if data.is_empty() {
            return Ok(());
        }
        let mapped = self.maps(plan);
        // `pwrite` into one page gets that page or fails having changed
        // nothing: only a mapping, or several pages, need reserving first.
        if mapped || !within_one_page(offset, end) {
            self.reserve(offset, end)?;
        }
        if mapped {
            if let Some(written) = self.in_mapping(|map| map.write(offset, data)) {
                return written.or_else(|fault| self.failed(fault, end));
            }
        }
        io::write_all(self.fd(), data, offset)
    }

    /// Copies `len` bytes from `from` to `to`, a part of the move `plan`
    /// planned; the ranges may overlap.
    pub fn copy_within(&self, plan: &Plan, from: u64, to: u64, len: u64) -> Result<()> {
        self.check_part(plan, from, len)?;
        let end = self.check_part(plan, to, len)?.max(from + len);
        if len == 0 {
            return Ok(());
        }
        let mapping = self.planned_mapping(plan);
        self.reserve(to, to + len)?;
        match mapping {
            Some(map) => map
                .copy_within(from, to, len)
                .or_else(|fault| self.failed(fault, end)),
            None => io::copy(self.fd(), from, self.fd(), to, len),
        }
    }

    /// Copies `len` bytes at `from` to `to` in `target`, another segment: a
    /// part of the copy planned by `plans`, this segment's read and the
    /// target's write.
    pub fn copy_to(
        &self,
        from: u64,
        target: &Segment,
        to: u64,
        len: u64,
        plans: (&Plan, &Plan),
    ) -> Result<()> {
        let (read, write) = plans;
        let source_end = self.check_part(read, from, len)?;
        let target_end = target.check_part(write, to, len)?;
        if len == 0 {
            return Ok(());
        }
        let destination = target.planned_mapping(write);
        target.reserve(to, target_end)?;
        match (self.planned_mapping(read), destination) {
            (Some(source), Some(destination)) => source
                .copy_to(from, &destination, to, len)
                .or_else(|fault| {
                    if destination.faulted() {
                        target.failed(fault, target_end)
                    } else {
                        self.failed(fault, source_end)
                    }
                }),
            (Some(source), None) => source
                .write_out(from, len, target.fd(), to)
                .or_else(|fault| self.failed(fault, source_end)),
            (None, Some(destination)) => destination
                .read_in(self.fd(), from, to, len)
                .or_else(|fault| target.failed(fault, target_end)),
            (None, None) => io::copy(self.fd(), from, target.fd(), to, len),
        }
    }

    /// Runs `f` on the first `len` bytes, in place, through a mapping.
    ///
    /// # Safety
    ///
    /// As [`Mapping::with_bytes`].
    pub unsafe fn with_bytes<R>(&self, len: u64, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        self.check(0, len)?;
        if len == 0 {
            return Ok(f(&[]));
        }
        let map = self.mapping_for(len)?;
        // SAFETY: forwarded to the caller.
        unsafe { map.with_bytes(len, f) }.or_else(|fault| self.failed(fault, len))
    }

    /// Runs `f` on the first `len` bytes, in place, to change them; their
    /// pages are reserved first.
    ///
    /// # Safety
    ///
    /// As [`Mapping::with_bytes_mut`].
    pub unsafe fn with_bytes_mut<R>(&self, len: u64, f: impl FnOnce(&mut [u8]) -> R) -> Result<R> {
        self.check(0, len)?;
        if len == 0 {
            return Ok(f(&mut []));
        }
        self.reserve(0, len)?;
        let map = self.mapping_for(len)?;
        // SAFETY: forwarded to the caller.
        unsafe { map.with_bytes_mut(len, f) }.or_else(|fault| self.failed(fault, len))
    }

    /// A mapping of at least the first `len` bytes, their pages reserved,
    /// for a C caller to keep as a bare pointer: the kept mapping when it
    /// covers them, else a new one (kept in turn, when the segment is kept
    /// open). The caller's reference keeps it mapped however the segment is
    /// resized meanwhile.
    pub fn mapping_for_caller(&self, len: NonZeroUsize) -> Result<Arc<Mapping>> {
        let end = len.get() as u64;
        self.check(0, end)?;
        self.reserve(0, end)?;
        self.mapping_for(end)
    }

    /// `offset + len`, if `[offset, offset + len)` lies within the range
    /// `plan` planned and within the segment.
    fn check_part(&self, plan: &Plan, offset: u64, len: u64) -> Result<u64> {
        let end = self.check(offset, len)?;
        if offset < plan.start || end > plan.end {
            return Err(Error::InvalidPayload);
        }
        Ok(end)
    }

    /// `offset + len`, if that lies within the segment.
    fn check(&self, offset: u64, len: u64) -> Result<u64> {
        offset
            .checked_add(len)
            .filter(|&end| end <= self.len)
            .ok_or(Error::InvalidPayload)
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.open.fd.as_fd()
    }

    fn is_busy(&self) -> bool {
        self.busy
    }

    /// Whether reading `[0, end)` through a mapping allocates nothing: every
    /// page there is in memory. Holes are read with `pread`, which gives
    /// zeros without allocating (a failed or large read must not commit
    /// memory).
    fn readable_in_place(&self, end: u64) -> bool {
        end <= self.open.backed() || self.no_holes
    }

    /// Whether `plan` copies through a mapping (as
    /// [`Segment::planned_mapping`] would give it, made now if need be),
    /// which [`Segment::in_mapping`] then reaches without sharing it.
    fn maps(&self, plan: &Plan) -> bool {
        matches!(plan.route, Route::Mapped { .. }) && self.ensure_mapping(plan.end).is_ok()
    }

    /// `copy` run on the mapping this call has, if it has one (see
    /// [`Segment::maps`]).
    fn in_mapping<R>(&self, copy: impl FnOnce(&Mapping) -> R) -> Option<R> {
        self.mapping.borrow().as_deref().map(copy)
    }

    /// The mapping `plan` copies through, if it planned one: the kept one
    /// if it covers the plan's range, else a new one. A mapping the OS
    /// refuses (no map entry left) is the one departure from the plan: the
    /// copy goes with `pread`/`pwrite` instead, which reads and writes the
    /// same bytes.
    fn planned_mapping(&self, plan: &Plan) -> Option<Arc<Mapping>> {
        match plan.route {
            Route::Mapped { .. } => self.mapping_for(plan.end).ok(),
            Route::Calls => None,
        }
    }

    fn has_mapping(&self, end: u64) -> bool {
        self.mapping
            .borrow()
            .as_ref()
            .is_some_and(|map| map.len() >= end && !map.faulted())
    }

    fn cached_mapping(&self, end: u64) -> Option<Arc<Mapping>> {
        self.mapping
            .borrow()
            .as_ref()
            .filter(|map| map.len() >= end && !map.faulted())
            .cloned()
    }

    /// The kept mapping if it covers `[0, end)`, else a new one of the whole
    /// segment, kept instead (and reported by [`Segment::new_mapping`]).
    fn mapping_for(&self, end: u64) -> Result<Arc<Mapping>> {
        self.ensure_mapping(end)?;
        self.cached_mapping(end)
            .ok_or(Error::Os(Errno::ENOMEM, Syscall::Mmap))
    }

    /// Makes sure this call has a mapping of at least `[0, end)`: the kept
    /// one if it covers that, else a new one of the whole segment, kept
    /// instead (and reported by [`Segment::new_mapping`]).
    fn ensure_mapping(&self, end: u64) -> Result<()> {
        if self.has_mapping(end) {
            return Ok(());
        }
        let len = usize::try_from(self.len.max(end))
            .ok()
            .and_then(NonZeroUsize::new)
            .ok_or(Error::Os(Errno::ENOMEM, Syscall::Mmap))?;
        let map = Arc::new(Mapping::new(self.fd(), len)?);
        self.remapped.set(true);
        *self.mapping.borrow_mut() = Some(map);
        Ok(())
    }

    /// The error for an access to `[0, end)` through a mapping that failed.
    fn failed<T>(&self, fault: Fault, end: u64) -> Result<T> {
        match fault {
            Fault::Lost => self.lost(end),
            Fault::Failed(error) => Err(error),
        }
    }

    /// The error for an access to `[0, end)` that lost pages: the segment
    /// shrank under it, or a hole could not be filled on a full filesystem.
    /// The faulted mapping is forgotten.
    fn lost<T>(&self, end: u64) -> Result<T> {
        if self
            .mapping
            .borrow_mut()
            .take_if(|map| map.faulted())
            .is_some()
        {
            self.remapped.set(true);
        }
        let shrunk = sys::status_of(self.fd()).map_or(true, |status| status.len < end);
        if !shrunk && sys::is_full(self.fd()) {
            Err(Error::Os(Errno::ENOSPC, Syscall::Ftruncate))
        } else {
            Err(Error::InvalidPayload)
        }
    }
}

/// How one copy goes on a segment, decided once by the segment from its
/// range and direction ([`Segment::plan_read`], [`Segment::plan_write`],
/// [`Segment::plan_move`]): through its mapping or with `pread`/`pwrite`,
/// and how many of the bytes written are pages not reserved yet. The
/// operation estimates the copy's cost from the plan ([`Plan::cost`]), and
/// every part of the copy, whole or in steps, goes as planned: what was
/// estimated is what runs. The plan is made before anything changes (a
/// segment grown afterwards is copied into as planned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    /// The copy touches `[start, end)` of the segment, and no more.
    start: u64,
    end: u64,
    /// How many bytes it copies.
    bytes: u64,
    /// Through the mapping, or with `pread`/`pwrite`.
    route: Route,
    /// Bytes written that are pages not reserved yet.
    fresh: u64,
}

impl Plan {
    /// A write of `len` bytes into a segment made for the copy: with
    /// `pwrite`, every page fresh.
    pub fn into_new(len: u64) -> Plan {
        Plan {
            start: 0,
            end: len,
            bytes: len,
            route: Route::Calls,
            fresh: len,
        }
    }

    /// Where the range the copy touches ends.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// What the copy is estimated to cost.
    pub fn cost(&self) -> Cost {
        Cost::copy(self.route, self.bytes) + Cost::fresh_pages(self.fresh)
    }
}

/// Whether the non-empty range `[offset, end)` lies within one page.
fn within_one_page(offset: u64, end: u64) -> bool {
    offset / sys::page_size() == (end - 1) / sys::page_size()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::Scratch;

    /// The segment of `scratch`, busy enough to be copied through a
    /// mapping where it has no holes.
    fn busy(scratch: &Scratch) -> Segment {
        let open = Segment::open(&scratch.name).unwrap();
        Segment::begin(Arc::clone(open.to_keep()), None, true)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn a_copy_goes_as_planned_though_its_pages_were_reserved_since() {
        let scratch = Scratch::new(1 << 20);
        let segment = busy(&scratch);
        // Holes: writing them is planned with pwrite, and costed so.
        let plan = segment.plan_write(0, 1 << 20);
        assert_eq!(plan.route, Route::Calls);
        assert_eq!(plan.fresh, 1 << 20);
        assert_eq!(
            plan.cost(),
            Cost::copy(Route::Calls, 1 << 20) + Cost::fresh_pages(1 << 20)
        );
        // Reserved now, its pages could be copied through a mapping; the
        // copy still goes as planned, and so maps nothing.
        segment.reserve(0, 1 << 20).unwrap();
        assert!(matches!(
            segment.plan_write(0, 1 << 20).route,
            Route::Mapped { .. }
        ));
        segment.write(&plan, 0, &[5; 1 << 20]).unwrap();
        assert!(segment.new_mapping().is_none(), "no mapping was made");
        // The other way round: a copy planned through a mapping maps.
        let mapped = segment.plan_read(0, 1 << 20);
        assert_eq!(mapped.route, Route::Mapped { warm: false });
        let mut buffer = vec![0; 1 << 20];
        segment.read(&mapped, 0, &mut buffer).unwrap();
        assert!(buffer.iter().all(|&byte| byte == 5));
        assert!(matches!(segment.new_mapping(), Some(Some(_))));
        assert_eq!(
            segment.plan_read(0, 1 << 20).route,
            Route::Mapped { warm: true }
        );
    }

    #[test]
    fn a_copy_touches_only_what_it_planned() {
        let scratch = Scratch::new(8192);
        let segment = busy(&scratch);
        let plan = segment.plan_read(4096, 100);
        let mut buffer = [0; 100];
        assert_eq!(
            segment.read(&plan, 0, &mut buffer),
            Err(Error::InvalidPayload)
        );
        assert_eq!(segment.read(&plan, 4096, &mut buffer), Ok(()));
        assert_eq!(
            segment.read(&plan, 4097, &mut buffer),
            Err(Error::InvalidPayload)
        );
    }

    #[test]
    fn a_new_segment_is_planned_as_a_copy_into_a_new_one_is() {
        let name = ShmName::generate();
        let segment = Segment::create(&name, 3 << 20).unwrap();
        sys::unlink(&name);
        assert_eq!(segment.plan_write(0, 3 << 20), Plan::into_new(3 << 20));
    }

    fn allocated(name: &ShmName) -> u64 {
        sys::status_of_name(name).unwrap().allocated
    }

    #[test]
    fn a_small_reserved_segment_has_its_pages_as_it_is_made() {
        let (name, segment) = Segment::create_unique_as(10_000, Pages::Reserved).unwrap();
        assert_eq!(segment.len(), 10_000);
        assert!(allocated(&name) >= 10_000);
        // Nothing left to reserve: mapping it all costs no fallocate.
        assert!(segment.no_holes);
        sys::unlink(&name);
    }

    #[test]
    fn sparse_and_large_reserved_segments_start_without_pages() {
        let (sparse, segment) = Segment::create_unique(10_000).unwrap();
        assert_eq!((segment.len(), allocated(&sparse)), (10_000, 0));
        let len = RESERVED_AT_CREATION + 1;
        let (large, segment) = Segment::create_unique_as(len, Pages::Reserved).unwrap();
        assert_eq!((segment.len(), allocated(&large)), (len, 0));
        sys::unlink(&sparse);
        sys::unlink(&large);
    }
}
