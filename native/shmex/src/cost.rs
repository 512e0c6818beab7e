//! Roughly how long work on a segment takes, to decide whether a call fits on
//! a normal scheduler, which should not be held for more than about a
//! millisecond, or belongs on a dirty one.
//!
//! The per-byte costs were measured on the machine in README's benchmark (a
//! 2-core VM, where page faults are expensive); on faster machines the
//! estimates only err towards dirty schedulers.

use std::ops::Add;
use std::time::Duration;

/// Picoseconds per byte of each kind of work.
const MEMCPY: u64 = 50; // through a mapping whose pages are in place: ~20 GB/s
const SYSCALL_COPY: u64 = 150; // pread/pwrite of pages in place
const FIRST_TOUCH: u64 = 300; // faulting pages into a fresh mapping
const FRESH_PAGES: u64 = 400; // allocating and filling pages never written
const FREE_PAGES: u64 = 120; // giving pages back when a segment shrinks

/// An estimated duration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cost {
    picos: u64,
}

impl Cost {
    /// Copying through a mapping whose pages are in place.
    pub fn memcpy(bytes: u64) -> Cost {
        Cost::per_byte(MEMCPY, bytes)
    }

    /// Copying with `pread` or `pwrite`.
    pub fn syscall_copy(bytes: u64) -> Cost {
        Cost::per_byte(SYSCALL_COPY, bytes)
    }

    /// Touching pages for the first time through a new mapping.
    pub fn first_touch(bytes: u64) -> Cost {
        Cost::per_byte(FIRST_TOUCH, bytes)
    }

    /// Allocating and filling pages that were never written.
    pub fn fresh_pages(bytes: u64) -> Cost {
        Cost::per_byte(FRESH_PAGES, bytes)
    }

    /// Freeing pages when a segment shrinks or goes away.
    pub fn free_pages(bytes: u64) -> Cost {
        Cost::per_byte(FREE_PAGES, bytes)
    }

    fn per_byte(picos: u64, bytes: u64) -> Cost {
        Cost {
            picos: picos.saturating_mul(bytes),
        }
    }

    /// Whether work this long may run within `limit`.
    pub fn within(self, limit: Duration) -> bool {
        u128::from(self.picos) <= limit.as_nanos().saturating_mul(1000)
    }
}

impl Add for Cost {
    type Output = Cost;

    fn add(self, other: Cost) -> Cost {
        Cost {
            picos: self.picos.saturating_add(other.picos),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const MILLISECOND: Duration = Duration::from_millis(1);

    #[test]
    fn a_millisecond_holds_16_mib_of_memcpy_but_not_of_fresh_pages() {
        assert!(Cost::memcpy(16 * MIB).within(MILLISECOND));
        assert!(!Cost::memcpy(24 * MIB).within(MILLISECOND));
        assert!(Cost::fresh_pages(2 * MIB).within(MILLISECOND));
        assert!(!Cost::fresh_pages(3 * MIB).within(MILLISECOND));
    }

    #[test]
    fn costs_add_up_without_overflowing() {
        let huge = Cost::fresh_pages(u64::MAX) + Cost::memcpy(u64::MAX);
        assert!(!huge.within(Duration::from_secs(3600)));
        assert!((Cost::memcpy(MIB) + Cost::memcpy(MIB)) == Cost::memcpy(2 * MIB));
    }
}
