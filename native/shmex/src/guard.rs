//! The guard: ties a segment's life to the BEAM's garbage collector, and keeps
//! the segment open and mapped between calls while it lives.

use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};

use crate::budget::Slot;
use crate::error::{Error, Result};
use crate::janitor;
use crate::name::ShmName;
use crate::segment::Segment;
use crate::shm::{Claim, Shm};

/// Owns a segment's name: dropping the guard unlinks the segment.
///
/// A guarded segment is normally only reached through its guard, so the guard
/// keeps the segment's descriptor and mapping for the next call (as long as a
/// [`Slot`] is free), and calls on one guard are serialized by its lock.
#[derive(Debug)]
pub struct Guard {
    name: ShmName,
    kept: Mutex<Option<Kept>>,
}

/// A segment a guard keeps open, with the budget slot that allows it.
#[derive(Debug)]
pub(crate) struct Kept {
    segment: Segment,
    _slot: Slot,
}

impl Guard {
    /// Guards the segment `name`; `segment`, when given, is that segment
    /// opened already, to be kept if a slot is free.
    pub fn new(name: ShmName, segment: Option<Segment>) -> Guard {
        let kept = segment.and_then(Kept::new);
        Guard {
            name,
            kept: Mutex::new(kept),
        }
    }

    /// The name of the guarded segment.
    pub fn name(&self) -> &ShmName {
        &self.name
    }

    /// A struct for this guard's segment, claiming `claim`: to work on a
    /// segment just allocated.
    pub fn shm(&self, claim: Claim) -> Shm<'_> {
        Shm {
            name: self.name.clone(),
            guard: Some(self),
            claim,
            time_limit: None,
        }
    }

    /// Runs `f` on the segment, which the guard keeps open if it can. No other
    /// call through this guard runs meanwhile: this waits for the one running.
    pub fn with_segment<R>(&self, f: impl FnOnce(&mut Segment) -> Result<R>) -> Result<R> {
        self.run(self.lock(), f)
    }

    /// As [`with_segment`](Self::with_segment), but if another call through
    /// this guard is running, returns [`Error::Reschedule`] at once instead of
    /// waiting: a normal scheduler must not wait for a dirty one's long copy.
    pub fn try_with_segment<R>(&self, f: impl FnOnce(&mut Segment) -> Result<R>) -> Result<R> {
        match self.kept.try_lock() {
            Ok(kept) => self.run(kept, f),
            Err(TryLockError::Poisoned(poisoned)) => self.run(poisoned.into_inner(), f),
            Err(TryLockError::WouldBlock) => Err(Error::Reschedule),
        }
    }

    fn run<R>(
        &self,
        mut kept: MutexGuard<'_, Option<Kept>>,
        f: impl FnOnce(&mut Segment) -> Result<R>,
    ) -> Result<R> {
        if let Some(kept) = kept.as_mut() {
            kept.segment.refresh()?;
            return f(&mut kept.segment);
        }
        let mut segment = Segment::open(&self.name)?;
        let result = f(&mut segment);
        *kept = Kept::new(segment);
        result
    }

    fn lock(&self) -> MutexGuard<'_, Option<Kept>> {
        // The data is a cache: a panic elsewhere cannot leave it inconsistent.
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Kept {
    fn new(mut segment: Segment) -> Option<Kept> {
        let slot = Slot::acquire()?;
        segment.expect_reuse();
        Some(Kept {
            segment,
            _slot: slot,
        })
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let kept = self
            .kept
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        janitor::discard(self.name.clone(), kept);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment;
    use nix::errno::Errno;

    fn exists(name: &ShmName) -> bool {
        Segment::open(name).is_ok()
    }

    /// Whether `name` is gone within a second: the janitor unlinks it.
    fn vanishes(name: &ShmName) -> bool {
        (0..1000).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(1));
            !exists(name)
        })
    }

    #[test]
    fn dropping_the_guard_unlinks_the_segment() {
        let (name, segment) = Segment::create_unique(10).unwrap();
        let guard = Guard::new(name.clone(), Some(segment));
        assert!(exists(&name));
        drop(guard);
        assert!(vanishes(&name));
    }

    #[test]
    fn a_guard_reopens_its_segment_when_it_keeps_none() {
        let (name, mut segment) = Segment::create_unique(5).unwrap();
        segment.write(0, b"hello").unwrap();
        let guard = Guard::new(name, None);
        let mut data = [0; 5];
        guard
            .with_segment(|segment| segment.read(0, &mut data))
            .unwrap();
        assert_eq!(&data, b"hello");
    }

    #[test]
    fn a_kept_segment_sees_resizes_made_elsewhere() {
        let (name, segment) = Segment::create_unique(100).unwrap();
        let guard = Guard::new(name.clone(), Some(segment));
        Segment::open(&name).unwrap().resize(7).unwrap();
        assert_eq!(guard.with_segment(|segment| Ok(segment.len())).unwrap(), 7);
    }

    #[test]
    fn trying_a_busy_guard_asks_to_reschedule_instead_of_waiting() {
        let (name, segment) = Segment::create_unique(1).unwrap();
        let guard = Guard::new(name, Some(segment));
        let (started, finish) = (std::sync::Barrier::new(2), std::sync::Barrier::new(2));
        std::thread::scope(|scope| {
            scope.spawn(|| {
                guard.with_segment(|_| {
                    started.wait();
                    finish.wait();
                    Ok(())
                })
            });
            started.wait();
            assert_eq!(guard.try_with_segment(|_| Ok(())), Err(Error::Reschedule));
            finish.wait();
        });
        assert_eq!(guard.try_with_segment(|segment| Ok(segment.len())), Ok(1));
    }

    #[test]
    fn a_guard_of_a_vanished_segment_reports_enoent() {
        let (name, _) = Segment::create_unique(1).unwrap();
        segment::unlink(&name);
        let guard = Guard::new(name, None);
        assert_eq!(
            guard.with_segment(|_| Ok(())).unwrap_err(),
            Error::Os(Errno::ENOENT, crate::Syscall::ShmOpen)
        );
    }
}
