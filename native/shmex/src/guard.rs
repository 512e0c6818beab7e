//! The guard: ties a segment's name to the BEAM's garbage collector. When the
//! last reference to it goes, the segment's name is unlinked at once, as in
//! Shmex 0.5.1, so that the name is free again as soon as its owner is gone.
//!
//! Owns the unlinking; the segment's turns and what is kept open of it are
//! its entry's ([`crate::registry`]). A guard made through the VM's primary
//! (another copy of the crate, see [`crate::vm`]) is counted there instead:
//! the primary holds a guard of its own for it, which this one ends when it
//! drops.

use std::sync::Arc;

use crate::background;
use crate::cost;
use crate::leftovers::{self, Kind};
use crate::name::ShmName;
use crate::registry::{self, Entry};
use crate::segment::Segment;
use crate::sys::{self, Identity};
use crate::vm::Vm;

/// Owns a segment's name: dropping the last guard of the segment in this
/// process unlinks it, unless the name leads to another segment by then
/// (someone else removed ours and made a new one under its name: that one
/// is theirs).
///
/// While a guard lives, calls on its segment may keep it open between them.
#[derive(Debug)]
pub struct Guard {
    name: ShmName,
    identity: Identity,
    holder: Holder,
}

/// Who counts a guard with the segment's other guards.
#[derive(Debug)]
enum Holder {
    /// This copy of the crate, in the segment's entry.
    Here(Arc<Entry>),
    /// The VM's primary, which holds a guard of its own for this one.
    Primary(Vm),
}

impl Guard {
    /// Guards `segment`, just made or opened under `name`.
    pub(crate) fn new(name: ShmName, segment: &Segment) -> Guard {
        let entry = registry::entry(&name);
        let identity = segment.identity();
        entry.count_guard(identity, true);
        entry.keep(segment.to_keep());
        // Not journalled (a full /dev/shm), the name is only not removed
        // after a crash.
        let _ = leftovers::record(&name, identity, Kind::Guarded);
        Guard {
            name,
            identity,
            holder: Holder::Here(entry),
        }
    }

    /// The guard of the segment `name`, the file `identity`, that the
    /// primary `vm` holds for this one, until it drops.
    pub(crate) fn of_primary(name: ShmName, identity: [u64; 2], vm: Vm) -> Guard {
        Guard {
            name,
            identity: Identity::from_bits(identity),
            holder: Holder::Primary(vm),
        }
    }

    /// The name of the guarded segment.
    pub fn name(&self) -> &ShmName {
        &self.name
    }

    /// The guarded segment's entry, unless the primary holds the guard.
    pub(crate) fn entry(&self) -> Option<&Arc<Entry>> {
        match &self.holder {
            Holder::Here(entry) => Some(entry),
            Holder::Primary(_) => None,
        }
    }

    /// Which file the guarded segment is.
    pub(crate) fn identity(&self) -> Identity {
        self.identity
    }
}

impl Drop for Guard {
    /// The last guard of the segment in this process unlinks it; while
    /// another one of it lives (a second guard, a C guard), the name stays.
    fn drop(&mut self) {
        let identity = self.identity;
        let entry = match &self.holder {
            Holder::Here(entry) => entry,
            Holder::Primary(vm) => return vm.unlink_if(&self.name, identity.to_bits()),
        };
        if entry.count_guard(identity, false) == 0 {
            unlink_if(&self.name, |found| found == identity, entry.keeps_open());
        }
        leftovers::clear(&self.name, identity, Kind::Guarded);
    }
}

/// Unlinks the segment `name` if it is the one `ours` recognizes: a guard
/// (ours, or a C guard) must not remove a segment that replaced its own. A
/// segment `kept_open` elsewhere frees nothing when unlinked.
///
/// Unlinking the last link of a segment nobody has open frees its pages
/// right here. When that takes long, it is held open meanwhile and let go
/// of in the background.
pub(crate) fn unlink_if(name: &ShmName, ours: impl Fn(Identity) -> bool, kept_open: bool) {
    let Ok(status) = sys::status_of_name(name) else {
        return; // gone already
    };
    if !ours(status.identity) {
        return;
    }
    let held = (!kept_open && !cost::frees_quickly(status.allocated))
        .then(|| sys::open(name).ok())
        .flatten();
    sys::unlink(name);
    if let Some(held) = held {
        background::run_or_here(Box::new(move || drop(held)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exists(name: &ShmName) -> bool {
        sys::status_of_name(name).is_ok()
    }

    #[test]
    fn dropping_the_guard_unlinks_the_segment_at_once() {
        let (name, segment) = Segment::create_unique(10).unwrap();
        let guard = Guard::new(name.clone(), &segment);
        assert!(exists(&name));
        drop(guard);
        assert!(!exists(&name));
    }

    #[test]
    fn a_guard_does_not_unlink_a_segment_that_replaced_its_own() {
        let (name, segment) = Segment::create_unique(10).unwrap();
        let guard = Guard::new(name.clone(), &segment);
        drop(segment);
        sys::unlink(&name);
        let theirs = Segment::create(&name, 5).unwrap();
        drop(guard);
        assert!(exists(&name));
        assert_eq!(
            sys::status_of_name(&name).unwrap().identity,
            theirs.identity()
        );
        sys::unlink(&name);
    }

    #[test]
    fn each_file_under_a_name_is_unlinked_by_its_own_last_guard() {
        let (name, first) = Segment::create_unique(10).unwrap();
        let old = Guard::new(name.clone(), &first);
        drop(first);
        // Another program replaces the segment; it is guarded too.
        sys::unlink(&name);
        let second = Segment::create(&name, 5).unwrap();
        let new = Guard::new(name.clone(), &second);
        let again = Guard::new(name.clone(), &second);
        drop(second);
        drop(new);
        assert!(exists(&name), "another guard of the new file holds it");
        drop(again);
        assert!(
            !exists(&name),
            "its last guard unlinks it, the old file's guard alive or not"
        );
        drop(old);
    }

    #[test]
    fn a_large_segment_is_unlinked_too() {
        let (name, segment) = Segment::create_unique(64 << 20).unwrap();
        segment.reserve(0, 64 << 20).unwrap();
        let guard = Guard::new(name.clone(), &segment);
        drop(segment);
        drop(guard);
        assert!(!exists(&name));
    }
}
