//! What the sibling crates need and users of the crate do not: the NIF
//! library's scheduling of calls (`shmex_nif`), and the C API's access to
//! segments and mappings (`shmex_c`). Hidden from the documentation, and not
//! part of the crate's stable API.
//!
//! Owns nothing of its own: it adapts the layers below for those two.

#[cfg(feature = "nif")]
mod nif;

use std::num::NonZeroUsize;

use crate::exclusion::Access;
use crate::leftovers::{self, Kind};
use crate::registry;
use crate::segment::Segment;
use crate::sys;
use crate::{background, budget, guard, Claim, Error, Result, ShmName};

pub use crate::mapping::Mapping;
pub use crate::name::NAME_MAX;
#[cfg(feature = "nif")]
pub use crate::term::{decode_size, struct_term};
#[cfg(feature = "nif")]
pub use nif::*;

/// What this copy of the crate holds and has seen.
#[derive(Clone, Copy, Debug)]
pub struct Stats {
    /// Segments kept open between calls.
    pub kept_open: usize,
    /// Jobs waiting for or running on the background thread.
    pub background_jobs: usize,
    /// Faults in our mappings that were absorbed (see `mapping::fault`).
    pub faults_absorbed: usize,
}

/// What this copy of the crate holds and has seen.
pub fn stats() -> Stats {
    Stats {
        kept_open: budget::kept(),
        background_jobs: background::pending(),
        faults_absorbed: crate::mapping::faults_absorbed(),
    }
}

/// Starts this copy of the crate's session, removing first what dead
/// processes left in the shared memory directory (see `leftovers`); a NIF
/// library does so when it loads, before any call.
pub fn start() {
    leftovers::start();
}

/// Which file a segment is, as C keeps it: device and inode.
pub type Identity = [u64; 2];

/// Creates the segment `name`, or a fresh one, `len` zero bytes long, with no
/// guard; its name. A fresh one that is `kept` (handed out unguarded on
/// purpose) is not removed after this process dies; one about to be guarded
/// (`shmex_allocate`) is.
pub fn create(name: Option<ShmName>, len: u64, kept: bool) -> Result<ShmName> {
    match name {
        Some(name) => Segment::create(&name, len).map(|_| name),
        None => Segment::create_unique(len).map(|(name, segment)| {
            if kept {
                leftovers::record(&name, segment.identity(), Kind::Kept);
            }
            name
        }),
    }
}

/// A mapping of the first `claim.capacity` bytes of the segment `name`, after
/// checking `claim` against it and reserving the pages; `None` for a
/// capacity of 0. For C callers, which keep a bare pointer.
pub fn map(name: &ShmName, claim: Claim) -> Result<Option<Mapping>> {
    let segment = Segment::open(name)?;
    claim.check(segment.len())?;
    let Ok(len) = usize::try_from(claim.capacity) else {
        return Err(Error::Os(nix::errno::Errno::ENOMEM, crate::Syscall::Mmap));
    };
    NonZeroUsize::new(len)
        .map(|len| segment.map_for_caller(len))
        .transpose()
}

/// Resizes the segment `name` to `len` bytes.
pub fn resize(name: &ShmName, len: u64) -> Result<()> {
    let entry = registry::entry(name);
    let held = entry.lock(Access::Exclusive);
    held.segment()?.resize(len)
}

/// Unlinks the segment `name`; a name that leads to something else than a
/// segment (a FIFO, a socket, a device, a link) is left alone.
pub fn unlink(name: &ShmName) {
    if sys::status_of_name(name).is_ok() {
        sys::unlink(name);
        leftovers::clear_kept(name);
    }
}

/// Guards the segment `name` for a C guard: which file it is now, recorded
/// as guarded by this process. `ENXIO` for a file that is not a segment, which
/// no guard may hold.
pub fn guard(name: &ShmName) -> Result<Identity> {
    let identity = sys::status_of_name(name)?.identity;
    leftovers::clear(name, identity, Kind::Kept);
    leftovers::record(name, identity, Kind::Guarded);
    Ok(identity.to_bits())
}

/// Ends a C guard of `name`: unlinks the segment if it still is `identity`
/// (a guard must not remove a segment that replaced its own), and clears its
/// record. A guard made before identities were kept (all zeros) unlinks
/// whatever segment the name leads to.
pub fn unlink_if(name: &ShmName, identity: Identity) {
    let ours = |found: sys::Identity| identity == [0, 0] || found.to_bits() == identity;
    guard::unlink_if(name, ours, false);
    unguard(name, identity);
}

/// Clears the record [`guard`] made, for a C guard that is not to be.
pub fn unguard(name: &ShmName, identity: Identity) {
    leftovers::clear(name, sys::Identity::from_bits(identity), Kind::Guarded);
}
