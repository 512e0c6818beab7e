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

/// Which file a segment is, as C keeps it: device and inode.
pub type Identity = [u64; 2];

/// Creates the segment `name`, or a fresh one, `len` zero bytes long, with no
/// guard; its name.
pub fn create(name: Option<ShmName>, len: u64) -> Result<ShmName> {
    match name {
        Some(name) => Segment::create(&name, len).map(|_| name),
        None => Segment::create_unique(len).map(|(name, _)| name),
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
    let resized = held.segment()?.resize(len);
    resized
}

/// Unlinks the segment `name`.
pub fn unlink(name: &ShmName) {
    sys::unlink(name);
}

/// Which file the segment `name` is now.
pub fn identity(name: &ShmName) -> Result<Identity> {
    sys::status_of_name(name).map(|status| status.identity.to_bits())
}

/// Unlinks the segment `name` if it still is `identity` (or if `identity` is
/// unknown, all zeros): a guard must not remove a segment that replaced its
/// own.
pub fn unlink_if(name: &ShmName, identity: Identity) {
    let ours = |found: sys::Identity| identity == [0, 0] || found.to_bits() == identity;
    guard::unlink_if(name, ours, false);
}
