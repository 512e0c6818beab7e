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

use crate::cost::Route;
use crate::error::{Error, Result, Syscall};
use crate::io;
use crate::mapping::{Fault, Mapping};
use crate::name::ShmName;
use crate::sys::{self, Identity, Status};

/// How often [`Segment::create_unique`] draws a new name after `EEXIST`.
const CREATE_ATTEMPTS: usize = 1000;

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
    /// Creates the segment `name`, `len` zero bytes long; `EEXIST` if it
    /// exists. A segment that cannot be sized is unlinked again.
    pub fn create(name: &ShmName, len: u64) -> Result<Segment> {
        let fd = sys::create(name)?;
        let sized = sys::resize(fd.as_fd(), len).and_then(|()| sys::status_of(fd.as_fd()));
        match sized {
            Ok(status) => Ok(Segment::fresh(fd, status)),
            Err(error) => {
                sys::unlink(name);
                Err(error)
            }
        }
    }

    /// Creates a segment of `len` zero bytes under a fresh generated name.
    pub fn create_unique(len: u64) -> Result<(ShmName, Segment)> {
        // A generated segment is only safe from leaking once this process's
        // session exists: a sweep finds it by its tag then.
        crate::leftovers::start();
        let mut attempts = 0;
        loop {
            let name = ShmName::generate();
            match Segment::create(&name, len) {
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

    /// How reading `[offset, offset + len)` would go.
    pub fn read_route(&self, offset: u64, len: u64) -> Route {
        let end = offset.saturating_add(len);
        if !self.is_busy() || !self.readable_in_place(end) {
            Route::Calls
        } else {
            Route::Mapped {
                warm: self.has_mapping(end),
            }
        }
    }

    /// How writing `[offset, offset + len)` would go, and how many of its
    /// bytes are pages not reserved yet.
    pub fn write_route(&self, offset: u64, len: u64) -> (Route, u64) {
        let end = offset.saturating_add(len);
        let fresh = if self.no_holes && end <= self.len {
            0
        } else {
            end.saturating_sub(offset.max(self.open.backed()))
        };
        let route = if self.is_busy() && self.readable_in_place(end) {
            Route::Mapped {
                warm: self.has_mapping(end),
            }
        } else {
            Route::Calls
        };
        (route, fresh)
    }

    /// Fills `buffer` with the bytes at `offset`.
    pub fn read(&self, offset: u64, buffer: &mut [u8]) -> Result<()> {
        let end = self.check(offset, buffer.len() as u64)?;
        if buffer.is_empty() {
            return Ok(());
        }
        if self.maps(end) {
            if let Some(read) = self.in_mapping(|map| map.read(offset, &mut *buffer)) {
                return read.or_else(|fault| self.failed(fault, end));
            }
        }
        io::read_exact(self.fd(), buffer, offset)
    }

    /// Writes `data` at `offset`, which must lie within the segment.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        let end = self.check(offset, data.len() as u64)?;
        if data.is_empty() {
            return Ok(());
        }
        let mapped = self.maps(end);
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

    /// Copies `len` bytes from `from` to `to`; the ranges may overlap.
    pub fn copy_within(&self, from: u64, to: u64, len: u64) -> Result<()> {
        let end = self.check(from.max(to), len)?;
        if len == 0 {
            return Ok(());
        }
        let mapping = self.write_mapping(end);
        self.reserve(to, to + len)?;
        match mapping {
            Some(map) => map
                .copy_within(from, to, len)
                .or_else(|fault| self.failed(fault, end)),
            None => io::copy(self.fd(), from, self.fd(), to, len),
        }
    }

    /// Copies `len` bytes at `from` to `to` in `target`, another segment.
    pub fn copy_to(&self, from: u64, target: &Segment, to: u64, len: u64) -> Result<()> {
        let source_end = self.check(from, len)?;
        let target_end = target.check(to, len)?;
        if len == 0 {
            return Ok(());
        }
        let destination = target.write_mapping(target_end);
        target.reserve(to, target_end)?;
        match (self.read_mapping(source_end), destination) {
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

    /// Whether to copy `[0, end)` through the mapping (as
    /// [`Segment::read_mapping`] would give one, made now if need be), which
    /// [`Segment::in_mapping`] then reaches without sharing it.
    fn maps(&self, end: u64) -> bool {
        self.is_busy() && self.readable_in_place(end) && self.ensure_mapping(end).is_ok()
    }

    /// `copy` run on the mapping this call has, if it has one (see
    /// [`Segment::maps`]).
    fn in_mapping<R>(&self, copy: impl FnOnce(&Mapping) -> R) -> Option<R> {
        self.mapping.borrow().as_deref().map(copy)
    }

    /// The mapping to read `[0, end)` through, for a busy segment whose range
    /// has no holes.
    fn read_mapping(&self, end: u64) -> Option<Arc<Mapping>> {
        if self.is_busy() && self.readable_in_place(end) {
            self.mapping_for(end).ok()
        } else {
            None
        }
    }

    /// The mapping to write `[0, end)` through, for a busy segment whose
    /// pages there are in memory already. Pages written for the first time
    /// are filled with `pwrite`, several times faster than page faults.
    fn write_mapping(&self, end: u64) -> Option<Arc<Mapping>> {
        self.read_mapping(end)
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

/// Whether the non-empty range `[offset, end)` lies within one page.
fn within_one_page(offset: u64, end: u64) -> bool {
    offset / sys::page_size() == (end - 1) / sys::page_size()
}
