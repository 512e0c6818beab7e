//! The operations of `Shmex.Native` on a decoded `%Shmex{}` struct.
//!
//! They do what Shmex 0.5.1 does, except that a struct's size and capacity
//! are claims, checked against the real segment before anything is touched,
//! and that every fallible step comes before the first byte is changed, so a
//! call that fails leaves the segment as it was.

use std::ops::DerefMut;
use std::time::Duration;

use nix::errno::Errno;

use crate::cost::Cost;
use crate::error::{Error, Result, Syscall};
use crate::guard::Guard;
use crate::janitor;
use crate::name::ShmName;
use crate::segment::{self, Segment};

/// What a struct says about its segment: `size` bytes of data at the start of
/// a segment of `capacity` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    pub size: u64,
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

    /// Checks the claim against `segment`: the data fits the capacity and the
    /// capacity fits the segment. The segment may be larger: another copy of
    /// the struct may have grown it.
    pub fn check(self, segment: &Segment) -> Result<()> {
        if self.size <= self.capacity && self.capacity <= segment.len() {
            Ok(())
        } else {
            Err(Error::InvalidPayload)
        }
    }
}

/// A decoded `%Shmex{}` struct.
#[derive(Debug)]
pub struct Shm<'g> {
    /// The segment's name.
    pub name: ShmName,
    /// The struct's guard, if it is one of ours (another library's guard, or
    /// none, is `None`).
    pub guard: Option<&'g Guard>,
    /// The struct's size and capacity.
    pub claim: Claim,
    /// How long a call may take, as estimated before it starts; a call that
    /// would take longer, or would first have to wait for another call on the
    /// same guard, is refused with [`Error::Reschedule`] before it changes
    /// anything. `None`: no limit, and waiting is fine (on a dirty scheduler).
    pub time_limit: Option<Duration>,
}

impl<'g> Shm<'g> {
    /// Creates a segment of `claim.capacity` zero bytes, named `name` or a
    /// fresh name, and its guard. The claimed size is kept, as in 0.5.1.
    pub fn allocate(name: Option<ShmName>, claim: Claim) -> Result<Guard> {
        if claim.size > claim.capacity {
            return Err(Error::InvalidPayload);
        }
        let (name, segment) = match name {
            Some(name) => Segment::create(&name, claim.capacity).map(|segment| (name, segment))?,
            None => janitor::create_unique(claim.capacity)?,
        };
        Ok(Guard::new(name, Some(segment)))
    }

    /// A guard for a segment that has none of ours yet (made by other code).
    pub fn add_guard(&self) -> Result<Guard> {
        if self.guard.is_some() {
            return Err(Error::AlreadyGuarded);
        }
        let segment = Segment::open(&self.name)?;
        self.claim.check(&segment)?;
        Ok(Guard::new(self.name.clone(), Some(segment)))
    }

    /// Resizes the segment to exactly `capacity` bytes; data past it is lost.
    pub fn set_capacity(&self, capacity: u64) -> Result<Claim> {
        self.with_segment(|segment| {
            self.claim.check(segment)?;
            self.admit(segment.resize_cost(capacity))?;
            segment.resize(capacity)?;
            Ok(Claim {
                size: self.claim.size.min(capacity),
                capacity,
            })
        })
    }

    /// The first `len` bytes of data, in a buffer made by `alloc(len)` once
    /// they are known to be there.
    ///
    /// A read larger than all the machine's memory is `ENOMEM` rather than an
    /// attempt: a failed allocation aborts the VM. (A sparse segment can be
    /// far larger than memory, and a struct can claim all of it.)
    pub fn read<B>(&self, len: u64, alloc: impl FnOnce(usize) -> B) -> Result<B>
    where
        B: DerefMut<Target = [u8]>,
    {
        if len > self.claim.size {
            return Err(Error::InvalidReadSize);
        }
        if len > segment::total_memory() {
            return Err(Error::Os(Errno::ENOMEM, Syscall::Mmap));
        }
        self.with_segment(|segment| {
            self.claim.check(segment)?;
            self.admit(segment.read_cost(0, len))?;
            segment.prepare(0, len)?;
            let mut buffer = alloc(len as usize);
            segment.read(0, &mut buffer)?;
            Ok(buffer)
        })
    }

    /// Replaces the data with `data`, growing the segment when it is too small.
    ///
    /// The claims are not checked: whatever they say, the result is right.
    pub fn write(&self, data: &[u8]) -> Result<Claim> {
        let size = data.len() as u64;
        let capacity = self.claim.capacity.max(size);
        self.with_segment(|segment| {
            self.admit(segment.write_cost(0, size))?;
            if segment.len() < capacity {
                resize_for(segment, capacity, size)?;
            }
            segment.write(0, data)?;
            Ok(Claim { size, capacity })
        })
    }

    /// Moves the data past `position` into a new guarded segment; this struct
    /// keeps the first `position` bytes.
    pub fn split_at(&self, position: u64) -> Result<(Claim, Guard, Claim)> {
        let right = self
            .claim
            .size
            .checked_sub(position)
            .ok_or(Error::InvalidPosition)?;
        self.with_segment(|segment| {
            self.claim.check(segment)?;
            self.admit(segment.read_cost(position, right) + Cost::fresh_pages(right))?;
            segment.prepare(position, right)?;
            let guard = create_guarded(right, |new| segment.copy_to(position, new, 0, right))?;
            let left = Claim {
                size: position,
                ..self.claim
            };
            Ok((left, guard, Claim::full(right)))
        })
    }

    /// Appends `source`'s data to this struct's data; the segment becomes
    /// exactly as large as both. `source` is unchanged.
    pub fn append(&self, source: &Shm) -> Result<Claim> {
        let (at, len) = (self.claim.size, source.claim.size);
        let size = at.checked_add(len).ok_or(Error::InvalidPayload)?;
        if self.name == source.name {
            return self.with_segment(|segment| {
                self.claim.check(segment)?;
                source.claim.check(segment)?;
                let cost = segment.read_cost(0, len) + segment.write_cost(at, len);
                self.admit(segment.resize_cost(size) + cost)?;
                resize_for(segment, size, size)?;
                segment.copy_within(0, at, len)?;
                Ok(Claim::full(size))
            });
        }
        with_both(self, source, |target, from| {
            self.claim.check(target)?;
            source.claim.check(from)?;
            let cost = from.read_cost(0, len) + target.write_cost(at, len);
            self.admit(target.resize_cost(size) + cost)?;
            from.prepare(0, len)?;
            resize_for(target, size, size)?;
            from.copy_to(0, target, at, len)?;
            Ok(Claim::full(size))
        })
    }

    /// Drops the first `bytes` bytes of data and shrinks the segment to the
    /// rest. With `bytes == 0` this is `trim/1`: shrinking to the data.
    pub fn trim(&self, bytes: u64) -> Result<Claim> {
        let size = self
            .claim
            .size
            .checked_sub(bytes)
            .ok_or(Error::InvalidTrimSize)?;
        self.with_segment(|segment| {
            self.claim.check(segment)?;
            let cost = segment.move_cost(self.claim.size, size) + segment.resize_cost(size);
            self.admit(cost)?;
            if bytes > 0 {
                segment.copy_within(bytes, 0, size)?;
            }
            segment.resize(size)?;
            Ok(Claim::full(size))
        })
    }

    /// Refuses work estimated to take longer than the time limit.
    fn admit(&self, cost: Cost) -> Result<()> {
        match self.time_limit {
            Some(limit) if !cost.within(limit) => Err(Error::Reschedule),
            _ => Ok(()),
        }
    }

    /// Runs `f` on the data (`size` bytes), in place, after checking the
    /// struct against its segment. Made for NIFs that process the data
    /// without copying it; see the crate docs for an example.
    ///
    /// Another OS process may change the bytes while `f` runs.
    pub fn data<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        self.with_segment(|segment| {
            self.claim.check(segment)?;
            segment.with_bytes(self.claim.size, f)
        })
    }

    /// Runs `f` on the data (`size` bytes), in place, to change it; see
    /// [`data`](Self::data).
    pub fn data_mut<R>(&self, f: impl FnOnce(&mut [u8]) -> R) -> Result<R> {
        self.with_segment(|segment| {
            self.claim.check(segment)?;
            segment.with_bytes_mut(self.claim.size, f)
        })
    }

    /// Runs `f` on the segment: through our guard, which keeps it open and
    /// serializes calls, or opened for just this call. Under a time limit
    /// (on a normal scheduler) a guard busy with another call is not waited
    /// for: that call may be a long one, on a dirty scheduler.
    pub fn with_segment<R>(&self, f: impl FnOnce(&mut Segment) -> Result<R>) -> Result<R> {
        match self.own_guard() {
            Some(guard) if self.time_limit.is_some() => guard.try_with_segment(f),
            Some(guard) => guard.with_segment(f),
            None => f(&mut Segment::open(&self.name)?),
        }
    }

    /// Our guard, if it guards this struct's segment: a struct can be forged
    /// to carry the guard of another segment.
    fn own_guard(&self) -> Option<&'g Guard> {
        self.guard.filter(|guard| *guard.name() == self.name)
    }
}

/// Runs `f` on two different segments. Their guards are locked in address
/// order, or two calls appending `x` to `y` and `y` to `x` could deadlock.
fn with_both<R>(
    a: &Shm,
    b: &Shm,
    f: impl FnOnce(&mut Segment, &mut Segment) -> Result<R>,
) -> Result<R> {
    let address = |shm: &Shm| {
        shm.own_guard()
            .map_or(0, |guard| guard as *const Guard as usize)
    };
    if address(a) <= address(b) {
        a.with_segment(|a| b.with_segment(|b| f(a, b)))
    } else {
        b.with_segment(|b| a.with_segment(|a| f(a, b)))
    }
}

/// Resizes `segment` to `len` and reserves its first `touched` bytes, or
/// leaves its size as it was.
fn resize_for(segment: &mut Segment, len: u64, touched: u64) -> Result<()> {
    let old = segment.len();
    segment.resize(len)?;
    segment.reserve(touched).inspect_err(|_| {
        let _ = segment.resize(old);
    })
}

/// A new guarded segment of `len` bytes, filled by `fill`; unlinked again if
/// `fill` fails.
fn create_guarded(len: u64, fill: impl FnOnce(&mut Segment) -> Result<()>) -> Result<Guard> {
    let (name, mut segment) = janitor::create_unique(len)?;
    match fill(&mut segment) {
        Ok(()) => Ok(Guard::new(name, Some(segment))),
        Err(error) => {
            segment::unlink(&name);
            Err(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MILLISECOND: Option<Duration> = Some(Duration::from_millis(1));

    /// A struct for `guard`'s segment, on a normal scheduler.
    fn shm(guard: &Guard, claim: Claim) -> Shm<'_> {
        Shm {
            time_limit: MILLISECOND,
            ..guard.shm(claim)
        }
    }

    #[test]
    fn work_over_the_time_limit_is_refused_before_anything_changes() {
        let guard = Shm::allocate(None, Claim::full(3)).unwrap();
        shm(&guard, Claim::full(3)).write(b"abc").unwrap();

        let big = vec![7; 16 << 20];
        assert_eq!(
            shm(&guard, Claim::full(3)).write(&big),
            Err(Error::Reschedule)
        );
        let unchanged = shm(&guard, Claim::full(3));
        assert_eq!(unchanged.read(3, |n| vec![0; n]).unwrap(), b"abc");
        assert_eq!(unchanged.with_segment(|s| Ok(s.len())), Ok(3));

        let unlimited = Shm {
            time_limit: None,
            ..shm(&guard, Claim::full(3))
        };
        assert_eq!(unlimited.write(&big), Ok(Claim::full(16 << 20)));
    }

    #[test]
    fn copies_through_a_busy_mapping_fit_where_fresh_pages_do_not() {
        let len = 8 << 20;
        let guard = Shm::allocate(None, Claim::full(len)).unwrap();
        let data = vec![1; len as usize];
        let unlimited = Shm {
            time_limit: None,
            ..shm(&guard, Claim::full(len))
        };
        for _ in 0..4 {
            unlimited.write(&data).unwrap();
        }
        // Mapped and warm now: 8 MiB of memcpy fits in a millisecond.
        assert!(shm(&guard, Claim::full(len)).write(&data).is_ok());
        assert!(shm(&guard, Claim::full(len))
            .read(len, |n| vec![0; n])
            .is_ok());

        let fresh = Shm::allocate(
            None,
            Claim {
                size: 0,
                capacity: len,
            },
        )
        .unwrap();
        assert_eq!(
            shm(
                &fresh,
                Claim {
                    size: 0,
                    capacity: len
                }
            )
            .write(&data),
            Err(Error::Reschedule)
        );
    }
}
