//! How many segments may stay open and mapped between calls.
//!
//! Keeping a guarded segment's descriptor and mapping saves four system calls
//! per call, but each costs a file descriptor and a memory map entry, and a
//! process has a limited number of both (`ulimit -n`, `vm.max_map_count`).
//! So only a bounded number of segments are kept; the rest are opened and
//! mapped for the duration of each call, which is slower but has no limit.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use nix::sys::resource::{getrlimit, Resource};

/// The most segments kept open at once, however many descriptors we may have.
const MAX_KEPT: usize = 4096;

/// The share of this process's descriptor limit that kept segments may use:
/// the VM needs the rest for its sockets and files.
const DESCRIPTOR_SHARE: usize = 4;

static KEPT: AtomicUsize = AtomicUsize::new(0);

/// Permission to keep one segment open; dropping it hands the permission back.
#[derive(Debug)]
pub struct Slot(());

impl Slot {
    /// A slot, or `None` while [`limit`] segments are kept already.
    pub fn acquire() -> Option<Slot> {
        KEPT.fetch_update(Ordering::AcqRel, Ordering::Acquire, |kept| {
            (kept < limit()).then_some(kept + 1)
        })
        .ok()
        .map(|_| Slot(()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        KEPT.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How many segments are kept open right now.
pub fn kept() -> usize {
    KEPT.load(Ordering::Acquire)
}

/// How many segments may be kept open at once: [`MAX_KEPT`], or a quarter of
/// the soft descriptor limit when that is lower.
pub fn limit() -> usize {
    static LIMIT: OnceLock<usize> = OnceLock::new();
    *LIMIT.get_or_init(|| {
        let descriptors = getrlimit(Resource::RLIMIT_NOFILE)
            .map(|(soft, _hard)| usize::try_from(soft).unwrap_or(usize::MAX))
            .unwrap_or(1024);
        MAX_KEPT.min(descriptors / DESCRIPTOR_SHARE)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_run_out_at_the_limit_and_come_back_when_dropped() {
        let slots: Vec<Slot> = std::iter::from_fn(Slot::acquire)
            .take(limit() + 10)
            .collect();
        assert_eq!(slots.len(), limit());
        assert!(Slot::acquire().is_none());
        drop(slots);
        assert!(Slot::acquire().is_some());
    }
}
