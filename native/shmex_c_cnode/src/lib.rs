//! Shmex 0.5.1's C API for C nodes (`include/shmex/shmex.h` with
//! `SHMEX_CNODE`): `%Shmex{}` structs to and from the external term format
//! with `ei`, beside the shared functions of `shmex_c`. A C node links `ei`
//! itself.
//!
//! Where 0.5.1 crashed or misread, these refuse: a term that is not exactly a
//! `%Shmex{}` struct (its five keys, each once; a binary name without NUL
//! bytes or `nil`; a reference or `nil` guard; sizes that fit the C struct)
//! is an error code, and names of any length are copied whole.

#![deny(unsafe_op_in_unsafe_fn)]
// The functions are called from C: their safety contract is the header's.
#![allow(clippy::missing_safety_doc)]

mod ei;
mod terms;

// The shared functions of shmex/lib.h are part of this archive too.
pub use shmex_c::segments;
