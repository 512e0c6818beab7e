//! Which open segments may stay open between calls.
//!
//! Keeping a segment's descriptor and mapping saves system calls on every
//! call, but each costs a file descriptor and a memory map entry, and a
//! process has a limited number of both (`ulimit -n`, `vm.max_map_count`),
//! which the whole VM shares. So a segment is kept only
//!
//! - while its descriptor's number is below half the descriptor limit.
//!   Descriptors are numbered lowest first, so a high number means the
//!   process has many files open: whoever opened them (this library, another
//!   copy of it in another NIF library, the VM's own sockets and files), at
//!   least half the table stays free for them. Every copy of this crate in
//!   the process follows the same line, so together they stay below it;
//! - and while fewer than [`MAX_KEPT`] segments are kept by this copy of the
//!   crate, which bounds its mappings.
//!
//! The rest are opened for the length of each call, which is slower but has
//! no limit.
//!
//! Owns the counting; knows nothing of segments.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use nix::sys::resource::{getrlimit, Resource};

/// The most segments one copy of the crate keeps open at once.
pub(crate) const MAX_KEPT: usize = 4096;

static KEPT: AtomicUsize = AtomicUsize::new(0);

/// Permission to keep one segment open; dropping it hands it back.
#[derive(Debug)]
pub(crate) struct Slot(());

impl Slot {
    /// A slot for a segment open as descriptor number `descriptor`, or `None`
    /// if it should not be kept.
    pub fn acquire(descriptor: i32) -> Option<Slot> {
        if i64::from(descriptor) >= descriptor_line() {
            return None;
        }
        KEPT.fetch_update(Ordering::AcqRel, Ordering::Acquire, |kept| {
            (kept < MAX_KEPT).then_some(kept + 1)
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

/// How many segments this copy of the crate keeps open right now.
pub(crate) fn kept() -> usize {
    KEPT.load(Ordering::Acquire)
}

/// Descriptors numbered from here up are not kept: half the soft limit.
fn descriptor_line() -> i64 {
    static LINE: OnceLock<i64> = OnceLock::new();
    *LINE.get_or_init(|| {
        let soft = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _hard)| soft);
        i64::try_from(soft / 2).unwrap_or(i64::MAX)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn high_descriptors_are_not_kept() {
        assert!(Slot::acquire(i32::try_from(descriptor_line()).unwrap_or(i32::MAX)).is_none());
        assert!(Slot::acquire(3).is_some());
    }

    #[test]
    fn slots_run_out_at_the_limit_and_come_back_when_dropped() {
        let slots: Vec<Slot> = std::iter::from_fn(|| Slot::acquire(3))
            .take(MAX_KEPT + 10)
            .collect();
        assert!(slots.len() <= MAX_KEPT && slots.len() > MAX_KEPT - 64);
        assert!(Slot::acquire(3).is_none());
        drop(slots);
        assert!(Slot::acquire(3).is_some());
    }
}
