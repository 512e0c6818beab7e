//! Shmex 0.5.1's C API for NIFs (`include/shmex/shmex.h`): the functions
//! that deal with terms, guards and the VM, beside the shared ones of
//! `shmex_c`. Built as the archive C NIFs link, unifex's among them.

#![deny(unsafe_op_in_unsafe_fn)]
// The functions are called from C: their safety contract is the header's.
#![allow(clippy::missing_safety_doc)]

mod terms;

// The shared functions of shmex/lib.h are part of this archive too.
pub use shmex_c::segments;
