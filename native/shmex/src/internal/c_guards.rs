//! The guards C holds: a C guard is a resource of the C library's own type
//! (`ShmexGuard`, which holds a name and an identity), so the [`Guard`] that
//! counts it with the segment's other guards is kept here, by name and
//! identity, until the C guard's destructor ends it.

use std::collections::hash_map::{Entry, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::name::ShmName;
use crate::sys::Identity;
use crate::Guard;

type Held = HashMap<(ShmName, Identity), Vec<Guard>>;

static HELD: Mutex<Option<Held>> = Mutex::new(None);

fn held() -> MutexGuard<'static, Option<Held>> {
    // Plain map operations: a panic cannot leave the map inconsistent.
    HELD.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Keeps `guard` for a C guard.
pub(super) fn hold(guard: Guard) {
    let key = (guard.name().clone(), guard.identity());
    held()
        .get_or_insert_with(HashMap::new)
        .entry(key)
        .or_default()
        .push(guard);
}

/// Takes one guard kept for `name` and `identity`, if any.
fn take(name: &ShmName, identity: Identity) -> Option<Guard> {
    let mut held = held();
    let Entry::Occupied(mut kept) = held.as_mut()?.entry((name.clone(), identity)) else {
        return None;
    };
    let guard = kept.get_mut().pop();
    if kept.get().is_empty() {
        kept.remove();
    }
    guard
}

/// Drops one guard kept for `name` and `identity` (outside the lock: it may
/// unlink the segment); whether there was one.
pub(super) fn release(name: &ShmName, identity: Identity) -> bool {
    take(name, identity).map(drop).is_some()
}
