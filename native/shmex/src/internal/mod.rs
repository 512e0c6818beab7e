//! What the sibling crates need and users of the crate do not: the NIF
//! library's scheduling of calls (`shmex_nif`), the C API's access to
//! segments and mappings (`shmex_c`), and the table of C functions the
//! primary exports to the other copies of the crate in the VM (`table`; the
//! rendezvous is `crate::vm`'s). Hidden from the documentation, and not
//! part of the crate's stable API.
//!
//! Owns nothing of its own but the guards held for other copies: it adapts
//! the layers below for those two.

mod c_guards;
#[cfg(feature = "nif")]
mod nif;
mod table;

use std::num::NonZeroUsize;
use std::sync::Arc;

use crate::exclusion::Access;
use crate::leftovers::{self, Kind};
use crate::registry;
use crate::segment::{Pages, Segment};
use crate::sys;
use crate::{background, budget, guard, Claim, Error, Guard, Result, ShmName};

pub use crate::mapping::Mapping;
pub use crate::name::{Posix, NAME_MAX};
#[cfg(feature = "nif")]
pub use crate::term::{decode_size, struct_term};
pub use crate::vm::{
    accepts, elsewhere, found, Api, Held, Made, Sizes, Vm, ABI, LOOK_AGAIN, SYMBOL, THIS_COPY,
};
#[cfg(feature = "nif")]
pub use nif::*;
pub use table::{LOCAL, TABLE};

/// `name` as `shm_open(3)` spells it, as [`ShmName::to_posix`] does, but
/// on the stack.
pub fn posix(name: &ShmName) -> Posix {
    name.posix()
}

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

/// Starts this copy of the crate: its session, removing first what dead
/// processes left in the shared memory directory (see `leftovers`), and its
/// SIGBUS handler, which keeps its library loaded for good (other libraries
/// may work through it). A NIF library does so when it loads, before any
/// call.
pub fn start() {
    leftovers::start();
    crate::mapping::install_fault_handler();
}

/// Which file a segment is, as C keeps it: device and inode.
pub type Identity = [u64; 2];

/// What becomes of a segment C creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Creation {
    /// Handed out unguarded on purpose (`shmex_allocate_unguarded`): it
    /// outlives this process, however that ends.
    Unguarded,
    /// Guarded by a C guard at once (`shmex_allocate`): see `guard`.
    Guarded,
}

/// Creates the segment `name`, or a fresh one, `len` zero bytes long, as
/// `how` says (see [`Made`]); its name and identity.
pub fn create(name: Option<ShmName>, len: u64, how: Made) -> Result<(ShmName, Identity)> {
    let pages = match how {
        Made::GuardedSparse => Pages::Sparse,
        Made::Unguarded | Made::Guarded => Pages::Reserved,
    };
    let (name, segment) = match name {
        Some(name) => Segment::create_as(&name, len, pages).map(|segment| (name, segment))?,
        None => Segment::create_unique_as(len, pages)?,
    };
    let identity = segment.identity();
    match how {
        // A name of a generated form (made by any copy of the crate, or by
        // shmex_generate_shm_name) would be taken for a leftover of its
        // copy: unless it is recorded as kept, it is not handed out.
        Made::Unguarded if name.is_generated() => {
            if !leftovers::record(&name, identity, Kind::Kept) {
                sys::unlink(&name);
                return Err(Error::Os(
                    nix::errno::Errno::ENOSPC,
                    crate::Syscall::Ftruncate,
                ));
            }
        }
        Made::Unguarded => {}
        Made::Guarded | Made::GuardedSparse => c_guards::hold(Guard::new(name.clone(), &segment)),
    }
    Ok((name, identity.to_bits()))
}

/// A mapping of at least the first `claim.capacity` bytes of the segment
/// `name`, after the checks of an Elixir call (the claim against the
/// segment's size, read anew) and with its pages reserved; `None` for a
/// capacity of 0. It is the mapping this process keeps of the segment when
/// it keeps one (a guarded segment, however guarded), so that mapping it
/// again costs no system call but `fstat`; the caller's reference keeps it
/// mapped until dropped, whatever happens to the segment meanwhile. Takes
/// the segment's turn to read it, with Elixir's calls.
pub fn map(name: &ShmName, claim: Claim) -> Result<Option<Arc<Mapping>>> {
    let entry = registry::entry(name);
    let held = entry.lock(Access::Shared)?;
    let segment = held.segment()?;
    claim.check(segment.len())?;
    let Ok(len) = usize::try_from(claim.capacity) else {
        return Err(Error::Os(nix::errno::Errno::ENOMEM, crate::Syscall::Mmap));
    };
    NonZeroUsize::new(len)
        .map(|len| segment.mapping_for_caller(len))
        .transpose()
}

/// Resizes the segment `name` to `len` bytes.
pub fn resize(name: &ShmName, len: u64) -> Result<()> {
    let entry = registry::entry(name);
    let held = entry.lock(Access::Exclusive)?;
    let resized = held.segment()?.resize(len);
    resized
}

/// Unlinks the segment `name`; a name that leads to something else than a
/// segment (a FIFO, a socket, a device, a link) is left alone.
pub fn unlink(name: &ShmName) {
    if sys::status_of_name(name).is_ok() {
        sys::unlink(name);
        leftovers::clear_kept(name);
    }
}

/// Guards the segment `name` for a C guard: a [`Guard`] of this process,
/// held until [`unlink_if`] with the identity returned ends it, so that C,
/// Rust and Elixir guards of one segment are counted together and the last
/// one unlinks it. `ENXIO` for a file that is not a segment, which no guard
/// may hold.
pub fn guard(name: &ShmName) -> Result<Identity> {
    let segment = Segment::open(name)?;
    let identity = segment.identity();
    leftovers::clear(name, identity, Kind::Kept);
    c_guards::hold(Guard::new(name.clone(), &segment));
    Ok(identity.to_bits())
}

/// Ends a C guard this copy of the crate made for `name` and `identity`
/// (before it found the VM's primary, or being it); whether it held one.
pub fn release_c_guard(name: &ShmName, identity: Identity) -> bool {
    c_guards::release(name, sys::Identity::from_bits(identity))
}

/// Ends a C guard of `name`: drops the guard `guard` made for it, which
/// unlinks the segment if no other guard of this process holds it and its
/// name still leads to it. A guard this process did not make (another copy
/// of the crate made it, before it found this one) unlinks the segment if
/// it still is `identity`; one whose identity is unknown (all zeros),
/// whatever the name leads to.
pub fn unlink_if(name: &ShmName, identity: Identity) {
    if c_guards::release(name, sys::Identity::from_bits(identity)) {
        return;
    }
    let ours = |found: sys::Identity| identity == [0, 0] || found.to_bits() == identity;
    guard::unlink_if(name, ours, false);
}
