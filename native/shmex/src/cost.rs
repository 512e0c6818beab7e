//! Roughly how long work on a segment takes, to decide whether a call fits on
//! a normal scheduler, which should not be held for more than about a
//! millisecond, or belongs on a dirty one.
//!
//! Owns the estimates only: the segment says how it would copy ([`Route`]),
//! the operation adds up the parts. The per-byte costs were measured on the
//! machine of the README's benchmark (a 2-core VM, where page faults are
//! expensive); on faster machines the estimates only err towards dirty
//! schedulers.

use std::ops::Add;
use std::time::Duration;

/// Picoseconds per byte of each kind of work.
const MEMCPY: u64 = 50; // through a mapping whose pages are in place: ~20 GB/s
const SYSCALL_COPY: u64 = 150; // pread/pwrite of pages in place
const FIRST_TOUCH: u64 = 300; // faulting pages into a fresh mapping
const FRESH_PAGES: u64 = 400; // allocating and filling pages never written
const FREE_PAGES: u64 = 120; // giving pages back when a segment shrinks
const FRESH_MEMORY: u64 = 350; // faulting in a new buffer (a result binary)

/// Setting up a mapping, whatever its size.
const MAP_SETUP_PICOS: u64 = 10_000_000;

/// Freeing pages that takes longer than this is left to the background
/// thread, off the caller's (a scheduler's, in a destructor).
const FREE_HERE: Duration = Duration::from_micros(50);

/// Buffers up to this size come from memory the allocator keeps warm; larger
/// ones are fresh pages from the OS, each faulted in on first touch.
const WARM_BUFFER: u64 = 256 << 10;

/// Whether freeing `bytes` of a segment's pages is quick enough to do on
/// the caller's thread.
pub(crate) fn frees_quickly(bytes: u64) -> bool {
    Cost::free_pages(bytes).within(FREE_HERE)
}

/// How a segment would copy a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// Through a mapping; `warm` when it exists already.
    Mapped { warm: bool },
    /// With `pread`/`pwrite`.
    Calls,
}

/// An estimated duration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Cost {
    picos: u64,
}

impl Cost {
    /// Copying `bytes` along `route`.
    pub fn copy(route: Route, bytes: u64) -> Cost {
        match route {
            Route::Mapped { warm: true } => Cost::per_byte(MEMCPY, bytes),
            Route::Mapped { warm: false } => {
                Cost::per_byte(FIRST_TOUCH, bytes) + Cost::from_picos(MAP_SETUP_PICOS)
            }
            Route::Calls => Cost::per_byte(SYSCALL_COPY, bytes),
        }
    }

    /// Allocating and filling `bytes` of pages never written.
    pub fn fresh_pages(bytes: u64) -> Cost {
        Cost::per_byte(FRESH_PAGES, bytes)
    }

    /// Resizing a segment from `from` bytes to `to`: shrinking frees pages.
    pub fn resize(from: u64, to: u64) -> Cost {
        Cost::per_byte(FREE_PAGES, from.saturating_sub(to))
    }

    /// Filling a new buffer of `bytes` (a read's result) for the first time.
    pub fn new_buffer(bytes: u64) -> Cost {
        if bytes <= WARM_BUFFER {
            Cost::default()
        } else {
            Cost::per_byte(FRESH_MEMORY, bytes)
        }
    }

    /// Freeing the pages of a segment of `bytes` that goes away.
    pub fn free_pages(bytes: u64) -> Cost {
        Cost::per_byte(FREE_PAGES, bytes)
    }

    fn per_byte(picos: u64, bytes: u64) -> Cost {
        Cost::from_picos(picos.saturating_mul(bytes))
    }

    fn from_picos(picos: u64) -> Cost {
        Cost { picos }
    }

    /// How many percent of `span` this takes, at most 100.
    #[cfg_attr(not(feature = "nif"), allow(dead_code))] // for NIF time slices
    pub fn percent_of(self, span: Duration) -> i32 {
        let span_picos = span.as_nanos().saturating_mul(1000).max(1);
        (u128::from(self.picos) * 100 / span_picos).min(100) as i32
    }

    /// Whether work this long may run within `limit`.
    pub fn within(self, limit: Duration) -> bool {
        u128::from(self.picos) <= limit.as_nanos().saturating_mul(1000)
    }
}

impl Add for Cost {
    type Output = Cost;

    fn add(self, other: Cost) -> Cost {
        Cost::from_picos(self.picos.saturating_add(other.picos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const MILLISECOND: Duration = Duration::from_millis(1);
    const WARM: Route = Route::Mapped { warm: true };

    #[test]
    fn a_millisecond_holds_16_mib_of_memcpy_but_not_of_fresh_pages() {
        assert!(Cost::copy(WARM, 16 * MIB).within(MILLISECOND));
        assert!(!Cost::copy(WARM, 24 * MIB).within(MILLISECOND));
        assert!(Cost::fresh_pages(2 * MIB).within(MILLISECOND));
        assert!(!Cost::fresh_pages(3 * MIB).within(MILLISECOND));
    }

    #[test]
    fn reading_into_a_large_new_buffer_counts_its_page_faults() {
        let read = |bytes| Cost::copy(WARM, bytes) + Cost::new_buffer(bytes);
        assert!(read(MIB).within(MILLISECOND));
        assert!(!read(16 * MIB).within(MILLISECOND));
        assert_eq!(Cost::new_buffer(64), Cost::default());
    }

    #[test]
    fn a_first_mapping_costs_its_setup_even_when_small() {
        assert!(Cost::copy(Route::Mapped { warm: false }, 0) > Cost::copy(Route::Calls, 4096));
    }

    #[test]
    fn a_cost_is_a_share_of_a_time_slice() {
        assert_eq!(Cost::copy(WARM, 64).percent_of(MILLISECOND), 0);
        assert_eq!(Cost::copy(WARM, 4 * MIB).percent_of(MILLISECOND), 20);
        assert_eq!(Cost::fresh_pages(u64::MAX).percent_of(MILLISECOND), 100);
    }

    #[test]
    fn costs_add_up_without_overflowing() {
        let huge = Cost::fresh_pages(u64::MAX) + Cost::copy(WARM, u64::MAX);
        assert!(!huge.within(Duration::from_secs(3600)));
        assert_eq!(
            Cost::copy(WARM, MIB) + Cost::copy(WARM, MIB),
            Cost::copy(WARM, 2 * MIB)
        );
        assert_eq!(Cost::resize(10, 20), Cost::default());
    }
}
